"""One scan: resolve users, discover their projects, fetch commits once per project.

Every user is its own coroutine; whatever goes wrong for one user (a GitLab error,
an unexpected exception) is captured as that user's failure and never touches the
others. The result is a new immutable :class:`~exporter.snapshot.Snapshot` built from
the previous one, so failed users keep their last good numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

import structlog

from exporter.attribution import (
    MERGE_REQUEST_STATE_ALIASES,
    ProjectSets,
    Window,
    attribute,
    count_by_state,
    distinct,
)
from exporter.authored_items import AuthoredItems, AuthoredItemStore, UserFetch
from exporter.commit_store import CommitStore, IncrementalCommits, ProjectHint
from exporter.config import Config
from exporter.discovery import DiscoveryCache
from exporter.gitlab.api import GitLabApi, Push
from exporter.gitlab.errors import GitLabError, NotFoundError, PrivateProfileError
from exporter.matching import Identity, shared_names
from exporter.periods import resolve_zone
from exporter.sharding import Shard
from exporter.snapshot import (
    ISSUE_STATES,
    MERGE_REQUEST_STATES,
    ScanSummary,
    Snapshot,
    UserState,
    UserStats,
    frozen_map,
    settings_of,
)

log = structlog.get_logger("exporter.scanner")

ProgressCallback = Callable[[int, int], None]
PROGRESS_LOG_SECONDS = 10.0
USER_START_BATCH = 64  # users whose scans start in one turn of the event loop
EVENTS_AFTER_MARGIN = timedelta(days=2)
"""How many days before the window's start (a UTC date) the push events are asked
``after``: GitLab ends that day in its own time zone, which may be behind UTC."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class UserOutcome:
    username: str
    stats: UserStats | None
    reason: str | None = None
    message: str | None = None


class Scanner:
    def __init__(
        self,
        api: GitLabApi,
        config: Config,
        *,
        clock: Callable[[], datetime] = utc_now,
        on_progress: ProgressCallback | None = None,
        shard: Shard | None = None,
    ) -> None:
        self._api = api
        self._config = config
        self._shard = shard or Shard()
        self._clock = clock
        self._on_progress = on_progress
        self._zone = resolve_zone(config.scan.timezone)
        self._host = config.gitlab.host
        #: GitLab's external host as its web_urls name it (the no-reply emails' host)
        self.external_host: str | None = None
        self._failing_groups: dict[str, str] = {}  # team -> reason, to log changes only
        self._shared_logged: set[str] = set()  # shared names already logged
        # kept between scans: commits in the window, and who users are / what they list
        self.store = CommitStore()
        self.merge_requests = AuthoredItemStore()
        self.issues = AuthoredItemStore()
        self._cpu_turn = asyncio.Semaphore(1)
        self.discovery = DiscoveryCache(
            api, timedelta(seconds=config.scan.discovery_interval_seconds)
        )
        self._ambiguous = _SharedNames(
            self.discovery, (), ready=lambda: False, logged=self._shared_logged
        )

    def reconfigure(self, config: Config) -> None:
        """Scan with ``config``'s teams, users, periods and weights from the next scan on
        (what :func:`exporter.config.reloaded` lets change while running)."""
        self._config = config

    async def scan(self, previous: Snapshot) -> Snapshot:
        started = time.time()
        now = self._clock()
        window = Window(start=now - timedelta(days=self._config.scan.lookback_days), end=now)
        teams = await self._resolve_teams(previous)
        usernames = distinct(
            [*self._config.standalone_users, *(m for members in teams.values() for m in members)]
        )
        if self._shard.sharded:
            # this shard's users only; memberships too, so team sums across shards are exact
            usernames = tuple(u for u in usernames if self._shard.owns(u))
            teams = {
                team: tuple(m for m in members if self._shard.owns(m))
                for team, members in teams.items()
            }
        log.info(
            "scan started",
            users=len(usernames),
            teams=len(teams),
            shard=f"{self._shard.index}/{self._shard.count}",
        )
        cache = IncrementalCommits(
            self._api,
            self.store,
            window=window,
            now=now,
            overlap=timedelta(seconds=self._config.scan.overlap_seconds),
            users=usernames,
            # enough projects in flight to keep every connection busy, no more
            workers=2 * self._config.gitlab.max_concurrency,
            reconcile_interval=timedelta(seconds=self._config.scan.reconcile_interval),
            count_merges=self._config.scan.count_merge_commits,
        )
        items = self._authored_items(window, now, usernames)
        self._ambiguous = _SharedNames(
            self.discovery, usernames, ready=lambda: cache.started, logged=self._shared_logged
        )
        progress = _Progress(len(usernames), self._on_progress)
        tasks: list[asyncio.Task[UserOutcome]] = []
        try:
            # users start a batch at a time: thousands starting at once would run all
            # their first steps in one turn of the event loop
            for n, name in enumerate(usernames, start=1):
                tasks.append(
                    asyncio.ensure_future(
                        self._scan_user_isolated(name, window, cache, items, progress)
                    )
                )
                if n % USER_START_BATCH == 0:
                    await asyncio.sleep(0)
            outcomes = await asyncio.gather(*tasks)
            cache.finish()
            self.discovery.retain(set(usernames))
        finally:
            for task in tasks:  # only when the scan itself was cancelled or failed
                if not task.done():
                    task.cancel()
            cache.close()
            items.close()
        finished = time.time()
        snapshot = _merge(previous, outcomes, teams, self._config, started, finished)
        read_failures = Counter(previous.project_read_failures)
        read_failures.update(cache.read_failures)
        snapshot = replace(
            snapshot,
            projects_skipped=frozen_map(cache.skipped_by_reason()),
            project_read_failures=frozen_map(read_failures),
            window_end=window.end.timestamp(),
        )
        if self._shard.sharded:
            # one shard (by the same hash on the team's name) reports each team's info
            snapshot = replace(
                snapshot, info_teams=frozenset(t for t in teams if self._shard.owns(t))
            )
        summary = snapshot.last_scan
        assert summary is not None
        log.info(
            "scan finished",
            users=summary.users_total,
            failed=summary.users_failed,
            projects=cache.projects_fetched,
            projects_unchanged=cache.projects_skipped,
            commits_kept=self.store.commit_count,
            seconds=round(summary.duration, 3),
        )
        return snapshot

    def _learn_external_host(self, host: str | None) -> None:
        """GitLab names its external host in every web_url; no-reply emails use it."""
        if host is None or host == self.external_host:
            return
        self.external_host = host
        if self._config.gitlab.commit_email_hostname is None:
            log.info(
                "no-reply commit emails matched on GitLab's external host",
                commit_email_hostname=f"users.noreply.{host}",
                gitlab_url_host=self._host,
            )

    def _authored_items(
        self, window: Window, now: datetime, usernames: Sequence[str]
    ) -> _ScanItems:
        def view(kind: str, store: AuthoredItemStore, own: UserFetch) -> AuthoredItems:
            return AuthoredItems(
                kind,
                store,
                shared=partial(self._api.authored_feed, f"/{kind}"),
                own=own,
                window=window,
                now=now,
                # re-read in full as often as projects are rediscovered
                full_interval=timedelta(seconds=self._config.scan.discovery_interval_seconds),
                overlap=timedelta(seconds=self._config.scan.overlap_seconds),
                users=usernames,
            )

        return _ScanItems(
            merge_requests=view("merge_requests", self.merge_requests, self._api.merge_requests),
            issues=view("issues", self.issues, self._api.issues),
        )

    async def _resolve_teams(self, previous: Snapshot) -> dict[str, tuple[str, ...]]:
        teams: dict[str, tuple[str, ...]] = {}
        for team in self._config.teams:
            members = list(team.members)
            if team.group:
                try:
                    members.extend(await self._api.group_members(team.group))
                except GitLabError as exc:
                    kept = previous.teams.get(team.name, ())
                    # logged when the failure starts (or changes), not on every scan
                    if self._failing_groups.get(team.name) != exc.reason:
                        log.warning(
                            "group members unavailable; keeping the last known members",
                            team=team.name,
                            group=team.group,
                            reason=exc.reason,
                            error=str(exc),
                            kept=len(kept),
                        )
                    self._failing_groups[team.name] = exc.reason
                    members.extend(kept)
                else:
                    if self._failing_groups.pop(team.name, None) is not None:
                        log.info("group members available again", team=team.name)
            teams[team.name] = distinct(members)
        return teams

    async def _scan_user_isolated(
        self,
        username: str,
        window: Window,
        cache: IncrementalCommits,
        items: _ScanItems,
        progress: _Progress,
    ) -> UserOutcome:
        try:
            stats = await self._scan_user(username, window, cache, items)
            return UserOutcome(username, stats)
        except GitLabError as exc:
            if isinstance(exc, PrivateProfileError):
                cache.arrive(username, {})  # known to list nothing the token can read
            return UserOutcome(username, None, exc.reason, str(exc))
        except Exception as exc:  # isolation: one user's bug never fails the scan
            log.exception("user scan crashed", user=username)
            return UserOutcome(username, None, "crash", f"{type(exc).__name__}: {exc}")
        finally:
            cache.arrive(username, None)  # no-op when discovery succeeded
            progress.step()

    async def _scan_user(
        self, username: str, window: Window, cache: IncrementalCommits, items: _ScanItems
    ) -> UserStats:
        found = await self.discovery.get(username, window.end)
        self._learn_external_host(found.external_host)
        detail = found.user
        try:
            listed, merge_requests, issues = await asyncio.gather(
                # `after` excludes the named day, ended in the instance's time zone (up to
                # 12 hours behind UTC): ask from two days before the window starts
                self._api.pushes(detail.id, window.start.date() - EVENTS_AFTER_MARGIN),
                # authored by the user; filtered to the window again below
                items.merge_requests.of(detail.username),
                items.issues.of(detail.username),
            )
        except NotFoundError:
            self.discovery.forget(username)  # gone since discovery: look it up again
            raise
        # the days before the window starts came with the listing: only pushes within the
        # window make a project one of the user's
        pushes = [p for p in listed if p.created_at in window]
        del listed
        # the shared lists end for every user at once: thousands of users whose lists are
        # all there take turns at this bookkeeping instead of running it in one turn of
        # the event loop
        async with self._cpu_turn:
            projects = ProjectSets(
                personal=frozenset(found.personal),
                contributed=frozenset(found.contributed),
                pushed=frozenset(p.project_id for p in pushes),
            )
            hints: dict[int, ProjectHint] = {}
            for listing in (found.personal, found.contributed):
                for pid, activity in listing.items():
                    hints[pid] = ProjectHint(activity=activity, listed_at=found.refreshed_at)
            by_project: dict[int, list[Push]] = {}
            for push in pushes:
                by_project.setdefault(push.project_id, []).append(push)
            for pid, found_pushes in by_project.items():
                hints[pid] = hints.get(pid, ProjectHint()).combine(
                    ProjectHint.of_pushes(found_pushes)
                )
            cache.arrive(username, hints)
            # the scan keeps what it needs of these; this user's copies need not wait with it
            del pushes, hints, by_project
            await asyncio.sleep(0)  # holding the turn: the next user goes in the next turn
        ids = sorted(projects.all)
        fetched = await cache.get_many(ids)  # raises when a project the user needs failed
        # each project's commits indexed by author once per change: the user looks at
        # its own commits only
        indexes = {pid: self.store.index(pid) for pid in ids}
        identity = Identity.build(
            user_id=detail.id,
            username=detail.username,
            display_name=detail.name,
            host=self.external_host or self._host,
            commit_email_hostname=self._config.gitlab.commit_email_hostname,
            public_email=detail.public_email,
            extra_emails=self._config.extra_emails.get(username.casefold(), ()),
            ambiguous_names=self._ambiguous.get() if any(fetched) else (),
        )
        stats = attribute(
            identity,
            projects,
            indexes,
            window=window,
            zone=self._zone,
            table=self._config.period_table,
        )
        return replace(
            stats,
            merge_requests=count_by_state(
                merge_requests,
                window=window,
                states=MERGE_REQUEST_STATES,
                aliases=MERGE_REQUEST_STATE_ALIASES,
            ),
            issues=count_by_state(issues, window=window, states=ISSUE_STATES),
            display_name=detail.name,
            web_url=detail.web_url,
        )


class _SharedNames:
    """One scan's names (display names and usernames) that several scanned users share:
    they identify none of them. Known once every user's discovery is done; each shared
    name is logged once per process."""

    def __init__(
        self,
        discovery: DiscoveryCache,
        usernames: Sequence[str],
        *,
        ready: Callable[[], bool],
        logged: set[str],
    ) -> None:
        self._discovery = discovery
        self._keys = {u.casefold() for u in usernames}
        self._ready = ready
        self._logged = logged
        self._names: frozenset[str] | None = None

    def get(self) -> frozenset[str]:
        if self._names is not None:
            return self._names
        entries = self._discovery.entries
        people = [
            (d.user.username, d.user.name) for k, d in entries.items() if k in self._keys
        ]
        people += [
            (u.username, u.name) for k, (u, _) in self._discovery.hidden.items() if k in self._keys
        ]
        found = shared_names(people)
        names = frozenset(found)
        if self._ready():  # complete: keep it, and say once what is not used
            self._names = names
            for name in sorted(names - self._logged):
                log.warning(
                    "a name shared by scanned users identifies none of them; "
                    "not used to match commits",
                    name=name,
                    users=list(found[name]),
                )
            self._logged.update(names)
        return names


@dataclass(frozen=True, slots=True)
class _ScanItems:
    """One scan's merge requests and issues."""

    merge_requests: AuthoredItems
    issues: AuthoredItems

    def close(self) -> None:
        self.merge_requests.close()
        self.issues.close()


class _Progress:
    """Counts finished users; logs at most every few seconds and reports to a callback."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._last_log = time.monotonic()
        if callback is not None:
            callback(0, total)

    def step(self) -> None:
        self.done += 1
        if self._callback is not None:
            self._callback(self.done, self.total)
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_SECONDS and self.done < self.total:
            self._last_log = now
            log.info("scan progress", done=self.done, total=self.total)


def _merge(
    previous: Snapshot,
    outcomes: Sequence[UserOutcome],
    teams: Mapping[str, tuple[str, ...]],
    config: Config,
    started: float,
    finished: float,
) -> Snapshot:
    """The next snapshot: new numbers for successes, last good numbers for failures."""
    users: dict[str, UserState] = {}
    failed = 0
    for outcome in outcomes:
        before = previous.users.get(outcome.username) or UserState(username=outcome.username)
        if outcome.reason is None:
            if before.last_error is not None:
                log.info("user scan recovered", user=outcome.username)
            users[outcome.username] = UserState(
                username=outcome.username,
                stats=outcome.stats,
                last_success=finished,
                failures=before.failures,
            )
            continue
        failed += 1
        if before.last_error != outcome.reason:
            log.warning(
                "user scan failed; keeping the last good values",
                user=outcome.username,
                reason=outcome.reason,
                error=outcome.message,
            )
        failures = dict(before.failures)
        failures[outcome.reason] = failures.get(outcome.reason, 0) + 1
        users[outcome.username] = UserState(
            username=outcome.username,
            stats=before.stats,
            last_success=before.last_success,
            failures=frozen_map(failures),
            last_error=outcome.reason,
            last_error_message=outcome.message,
            failing_since=before.failing_since if before.last_error is not None else finished,
        )
    total = len(outcomes)
    complete = total == 0 or failed < total
    return Snapshot(
        users=frozen_map(users),
        teams=frozen_map(teams),
        team_projects=frozen_map({t.name: t.project or "" for t in config.teams}),
        periods=config.period_table.names,
        last_scan=ScanSummary(
            started=started, finished=finished, users_total=total, users_failed=failed
        ),
        last_complete_scan_end=finished if complete else previous.last_complete_scan_end,
        scans_total=previous.scans_total + 1,
        weights=config.score_weights,
        settings=settings_of(config),
    )

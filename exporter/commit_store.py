"""Incremental commit fetching: what is kept between scans and what a scan must fetch.

Per project the store keeps only what the numbers need per commit (SHA, normalised
author name and email, authored time) of the commits in the window a **branch** reaches
(not those only GitLab's hidden refs keep), and each branch's head. Memory grows with
commits in the window, not with history.

A project costs no request in a scan unless something says it changed:

- never read before, or not read in full for ``reconcile_interval`` -> a full read: the
  branch list, then every ref's commits in the window once (``all=true``), kept where a
  walk from the branch heads along ``parent_ids`` reaches; it replaces what was kept;
- a scanned user's push event to it is newer than any push known at its last read
  (event times are compared with event times: no clock skew): each such push is read
  with one ``compare`` from its old head to its new one (every commit it brought,
  however old its committer dates);
- its ``last_activity_at`` (from the project listings) is newer than when it was last
  read, or the listing was refreshed since and shows activity within an hour before it
  (GitLab updates ``last_activity_at`` at most once an hour), or a push does not name
  both heads: the branch list, and each moved branch compared with its head as last read
  (a new branch read over the window, a deleted one means a full read);
- a project whose ``last_activity_at`` is before the window start is never read.

Tag pushes change no branch and read nothing. Merge commits are left out unless asked
for. Projects found only through push events have no ``last_activity_at``: they are
read when first seen and then whenever a scanned user pushes to them again.

One project's failure stays that project's. A repository the token may not read (403:
it sees the project, not its code), one that does not exist (404 ``Repository``) or a
project gone since it was listed is *skipped*: it has no commits for anyone and is
counted by reason (:data:`SKIP_REASONS`). Any other failed read keeps the project's last
good commits for this scan and is counted by the error's reason; only a project never
read successfully fails the users who need it.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final

import structlog

from exporter.attribution import CommitLike, Window
from exporter.author_index import EMPTY_INDEX, AuthorIndex
from exporter.gitlab.api import Branch, CommitRecord, GitLabApi, Push
from exporter.gitlab.errors import GitLabError, NotFoundError, UnauthorizedError

log = structlog.get_logger("exporter.commit_store")

PREFETCH_BATCH = 64
"""Project decisions started per event-loop turn."""

ACTIVITY_LAG = timedelta(hours=1)
"""GitLab updates a project's ``last_activity_at`` at most this often."""

SKIP_REASONS: Final = ("forbidden", "no_repository", "not_found")
"""Why a project's commits are not read: the token may not read its code (403), it
has no repository (404 ``Repository``), it is gone or hidden since it was listed (404)."""


def skip_reason(error: GitLabError) -> str | None:
    """The :data:`SKIP_REASONS` entry for a failed commit read, or ``None``: a failure."""
    if isinstance(error, UnauthorizedError) and error.status == 403:
        return "forbidden"
    if isinstance(error, NotFoundError):
        return "no_repository" if "repository" in error.detail.casefold() else "not_found"
    return None


def _norm(value: str) -> str:
    return sys.intern(value.strip().casefold())


AUTHORED: Final = 3  # index of the authored date in a stored commit

StoredCommit = CommitLike
"""One commit as kept between scans, enough to attribute and bucket it:
``(sha, author_name, author_email, authored_date)``, the names trimmed and case-folded,
the date in the commit's own offset. A plain tuple, which the garbage collector stops
tracking (see :data:`exporter.attribution.CommitLike`)."""


@dataclass(slots=True)
class ProjectState:
    fetched_at: datetime  # scan time of the last commit request
    activity: datetime | None  # last_activity_at known at that fetch
    watermark: datetime | None  # newest committer date seen, never past that scan's time
    pushed: datetime | None = None  # latest push event known at that fetch
    commits: dict[str, StoredCommit] = field(default_factory=dict)
    #: branch name -> head commit, as last read
    heads: dict[str, str] = field(default_factory=dict)
    #: scan time of the last full read of the window (every branch)
    full_at: datetime | None = None
    #: the commits as handed out, and indexed by author; rebuilt after a change
    view: tuple[StoredCommit, ...] | None = field(default=None, repr=False, compare=False)
    index: AuthorIndex | None = field(default=None, repr=False, compare=False)

    skipped: str | None = None  # one of SKIP_REASONS when the last read was refused

    def changed(self) -> None:
        self.view = None
        self.index = None


PushHead = tuple[datetime, str | None, str | None, str | None]
"""A push that changed a branch: ``(created_at, ref, commit_from, commit_to)``;
``commit_from`` is ``None`` for a new branch, ``ref`` and ``commit_to`` are ``None`` for a
bulk push and ``commit_to`` for a deletion. A plain tuple, which the garbage collector
stops tracking: a large scan holds tens of thousands of them until every project is
decided."""


@dataclass(frozen=True, slots=True)
class ProjectHint:
    """What this scan's discovery says about a project."""

    activity: datetime | None = None  # last_activity_at from a listing
    listed_at: datetime | None = None  # when that listing was fetched
    pushed_at: datetime | None = None  # latest branch push event of a scanned user
    # scanned users' pushes to its branches in the window (tag pushes change no branch)
    pushes: tuple[PushHead, ...] = ()

    def combine(self, other: ProjectHint) -> ProjectHint:
        return ProjectHint(
            activity=_latest(self.activity, other.activity),
            listed_at=_latest(self.listed_at, other.listed_at),
            pushed_at=_latest(self.pushed_at, other.pushed_at),
            pushes=self.pushes + other.pushes,
        )

    @classmethod
    def of_pushes(cls, pushes: Sequence[Push]) -> ProjectHint:
        branch = [p for p in pushes if not p.tag]
        if not branch:
            return cls()
        return cls(
            pushed_at=max(p.created_at for p in branch),
            pushes=tuple(
                (p.created_at, p.ref, p.base, None if p.removed else p.head) for p in branch
            ),
        )


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def inactive(hint: ProjectHint, window_start: datetime) -> bool:
    """Nothing can have happened inside the window."""
    pushed = hint.pushed_at is not None and hint.pushed_at >= window_start
    return hint.activity is not None and hint.activity < window_start and not pushed


def plan_fetch(
    state: ProjectState | None,
    hint: ProjectHint,
    *,
    window_start: datetime,
    overlap: timedelta,
) -> datetime | None:
    """The ``since`` to fetch the project's commits from, or ``None``: no request."""
    if inactive(hint, window_start):
        return None
    if state is None:
        return window_start
    since = window_start
    if state.watermark is not None:
        since = max(window_start, state.watermark - overlap)
    if hint.pushed_at is not None and (state.pushed is None or hint.pushed_at > state.pushed):
        return since
    if hint.activity is not None:
        if state.activity is None or hint.activity > state.activity:
            return since
        if (
            hint.listed_at is not None
            and hint.listed_at > state.fetched_at
            and hint.activity >= state.fetched_at - ACTIVITY_LAG
        ):
            return since
    return None


def reachable(records: Iterable[CommitRecord], heads: Iterable[str]) -> list[CommitRecord]:
    """The records a walk from ``heads`` along ``parent_ids`` reaches, through the
    records only."""
    by_sha = {r.sha: r for r in records}
    found: dict[str, CommitRecord] = {}
    todo = [h for h in heads if h in by_sha]
    while todo:
        sha = todo.pop()
        if sha in found:
            continue
        record = by_sha[sha]
        found[sha] = record
        todo.extend(p for p in record.parent_ids if p in by_sha and p not in found)
    return list(found.values())


class CommitStore:
    """Per project: the commits in the window and the fetch watermark."""

    def __init__(self) -> None:
        self.projects: dict[int, ProjectState] = {}

    def __len__(self) -> int:
        return len(self.projects)

    @property
    def commit_count(self) -> int:
        return sum(len(p.commits) for p in self.projects.values())

    def commits(self, project_id: int) -> Sequence[StoredCommit]:
        """The project's kept commits: the same tuple until they change."""
        state = self.projects.get(project_id)
        if state is None:
            return ()
        if state.view is None:
            state.view = tuple(state.commits.values())
        return state.view

    def index(self, project_id: int) -> AuthorIndex:
        """The project's kept commits by author key, built once per change."""
        state = self.projects.get(project_id)
        if state is None:
            return EMPTY_INDEX
        if state.index is None:
            state.index = AuthorIndex.build(self.commits(project_id))
        return state.index

    def prune(self, project_id: int, window_start: datetime) -> int:
        """Drop the project's commits authored before the window; returns how many."""
        state = self.projects.get(project_id)
        if state is None:
            return 0
        old = [sha for sha, c in state.commits.items() if c[AUTHORED] < window_start]
        for sha in old:
            del state.commits[sha]
        if old:
            state.changed()
        return len(old)

    def merge(
        self,
        project_id: int,
        records: Iterable[CommitRecord],
        *,
        fetched_at: datetime,
        activity: datetime | None,
        window_start: datetime,
        pushed: datetime | None = None,
        replace: bool = False,
        heads: Mapping[str, str] | None = None,
        count_merges: bool = False,
    ) -> int:
        """Merge fetched commits by SHA; returns how many were new.

        ``replace``: the records are the whole window (a full read): what was kept
        before goes. ``heads``: the branches' heads now known (merged into the kept ones;
        with ``replace`` they replace them). Merge commits are left out unless
        ``count_merges``. A committer date in the future never moves the watermark past
        ``fetched_at``.
        """
        state = self.projects.get(project_id)
        if state is None or replace:
            old = state
            state = ProjectState(fetched_at=fetched_at, activity=activity, watermark=None)
            if old is not None:
                state.activity, state.pushed = old.activity, old.pushed
            if replace:
                state.full_at = fetched_at
            self.projects[project_id] = state
        state.fetched_at = fetched_at
        state.activity = _latest(state.activity, activity)
        state.pushed = _latest(state.pushed, pushed)
        if heads is not None:
            state.heads.update(heads)
        state.changed()
        state.skipped = None
        added = 0
        for record in records:
            committed = min(record.committed_date or record.authored_date, fetched_at)
            if state.watermark is None or committed > state.watermark:
                state.watermark = committed
            if record.merge and not count_merges:
                continue
            if record.authored_date < window_start or record.sha in state.commits:
                continue
            state.commits[record.sha] = (
                sys.intern(record.sha),
                _norm(record.author_name),
                _norm(record.author_email),
                record.authored_date,
            )
            added += 1
        return added

    def skip(
        self,
        project_id: int,
        reason: str,
        *,
        fetched_at: datetime,
        activity: datetime | None,
        pushed: datetime | None = None,
    ) -> None:
        """The project's read was refused (``reason``): no commits, asked again when
        something says it changed (or at the next reconciliation)."""
        state = ProjectState(fetched_at=fetched_at, activity=activity, watermark=None)
        state.pushed = pushed
        state.skipped = reason
        state.full_at = fetched_at
        self.projects[project_id] = state

    def retain(self, project_ids: Iterable[int]) -> int:
        """Forget projects no scanned user works in any more; returns how many."""
        keep = set(project_ids)
        gone = [pid for pid in self.projects if pid not in keep]
        for pid in gone:
            del self.projects[pid]
        return len(gone)


class _Waiter:
    """One user's wait for its projects: a single future, resolved when the last of
    them is decided."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining


@dataclass(frozen=True, slots=True)
class _Failed:
    """A project whose decision raised: every user waiting on it fails with it."""

    error: Exception
    traceback: TracebackType | None


class IncrementalCommits:
    """One scan's view of the store: each project decided and fetched at most once.

    Every user reports its project hints with :meth:`arrive` (or arrives with none when
    its discovery failed) before any project is decided, so a push seen by one user
    makes the project fresh for all of them.

    Projects are decided by a fixed pool of ``workers`` tasks taking them in turn. A
    user waits on one future of its own, which the decision of the last of its projects
    resolves: each user wakes once, when its commits are all there. Thousands of users
    neither wake together when decisions start, nor hang callbacks (each with a copy of
    the context) on every project they share, nor leave suspended tasks per project for
    the garbage collector's full passes (pauses of the event loop) to walk.
    """

    def __init__(
        self,
        api: GitLabApi,
        store: CommitStore,
        *,
        window: Window,
        now: datetime,
        overlap: timedelta,
        users: Iterable[str],
        workers: int = 32,
        reconcile_interval: timedelta = timedelta(0),
        count_merges: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._reconcile_interval = reconcile_interval
        self._count_merges = count_merges
        self._api = api
        self._store = store
        self._window = window
        self._now = now
        self._overlap = overlap
        self._waiting = {u.casefold() for u in users}
        self._failed_discovery = False
        self._hints: dict[int, ProjectHint] = {}
        self._started = False
        self._queued: set[int] = set()
        self._decided: dict[int, Sequence[StoredCommit] | _Failed] = {}
        self._waiters: dict[int, list[_Waiter]] = {}
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._worker_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self._prefetcher: asyncio.Task[None] | None = None
        self.requests_planned = 0
        self.projects_skipped = 0
        self.full_rereads = 0
        #: failed reads of projects that kept their last good commits, by reason
        self.read_failures: Counter[str] = Counter()
        if not self._waiting:
            self._start()

    @property
    def projects_fetched(self) -> int:
        return self.requests_planned

    @property
    def started(self) -> bool:
        """Every user has arrived (its discovery done or failed)."""
        return self._started

    def arrive(self, username: str, hints: Mapping[int, ProjectHint] | None) -> None:
        """The user's discovery is done (``hints``) or failed (``None``); idempotent."""
        key = username.casefold()
        if key not in self._waiting:
            return
        self._waiting.discard(key)
        if hints is None:
            self._failed_discovery = True
        else:
            for pid, hint in hints.items():
                known = self._hints.get(pid)
                self._hints[pid] = hint if known is None else known.combine(hint)
        if not self._waiting:
            self._start()

    def _start(self) -> None:
        """Every user has arrived: decide every hinted project, and any project a user
        asked for that no hint named."""
        self._started = True
        wanted = set(self._hints) | set(self._waiters)
        self._prefetcher = asyncio.ensure_future(self._prefetch(sorted(wanted)))

    async def _prefetch(self, project_ids: Sequence[int]) -> None:
        """Queue every project's decision, a few at a time so the loop keeps turning."""
        for n, project_id in enumerate(project_ids, start=1):
            self._enqueue(project_id)
            if n % PREFETCH_BATCH == 0:
                await asyncio.sleep(0)

    def _enqueue(self, project_id: int) -> None:
        if project_id in self._queued:
            return
        self._queued.add(project_id)
        self._queue.put_nowait(project_id)
        if not self._workers:
            self._workers = [
                asyncio.ensure_future(self._work()) for _ in range(self._worker_count)
            ]

    async def _work(self) -> None:
        while True:
            project_id = await self._queue.get()
            outcome: Sequence[StoredCommit] | _Failed
            try:
                outcome = await self._resolve(project_id)
            except Exception as exc:  # the users waiting on it fail with it
                outcome = _Failed(exc, exc.__traceback__)
            self._decided[project_id] = outcome
            for waiter in self._waiters.pop(project_id, ()):
                waiter.remaining -= 1
                if waiter.remaining == 0 and not waiter.future.done():
                    waiter.future.set_result(None)
            # a project decided without a request must not keep the loop to itself
            await asyncio.sleep(0)

    async def get_many(self, project_ids: Sequence[int]) -> list[Sequence[StoredCommit]]:
        """The commits of each project, in order; a failed fetch raises its error.

        Cancelling the caller cancels only its own wait, never the shared decisions.
        """
        pending = {pid for pid in project_ids if pid not in self._decided}
        if pending:
            waiter = _Waiter(asyncio.get_running_loop().create_future(), len(pending))
            for pid in pending:
                self._waiters.setdefault(pid, []).append(waiter)
                if self._started and pid not in self._hints:
                    self._enqueue(pid)  # no hint named it: asked for after decisions started
            try:
                await waiter.future
            finally:
                if waiter.remaining:  # cancelled: stop counting for this waiter
                    for pid in pending:
                        others = self._waiters.get(pid)
                        if others is not None and waiter in others:
                            others.remove(waiter)
        results: list[Sequence[StoredCommit]] = []
        for pid in project_ids:
            outcome = self._decided[pid]
            if isinstance(outcome, _Failed):
                # as a future re-raises: the decision's own traceback, for every caller
                raise outcome.error.with_traceback(outcome.traceback)
            results.append(outcome)
        return results

    async def _resolve(self, project_id: int) -> Sequence[StoredCommit]:
        store = self._store
        window = self._window
        store.prune(project_id, window.start)
        hint = self._hints.get(project_id, ProjectHint())
        state = store.projects.get(project_id)
        since = plan_fetch(state, hint, window_start=window.start, overlap=self._overlap)
        due = state is not None and not inactive(hint, window.start) and (
            state.full_at is None or self._now - state.full_at >= self._reconcile_interval
        )
        if since is None and not due:
            self.projects_skipped += 1
            return store.commits(project_id)
        self.requests_planned += 1
        try:
            if state is None or due:
                if state is not None:
                    self.full_rereads += 1
                await self._read_full(project_id, hint)
            else:
                await self._read_changes(project_id, state, hint)
        except GitLabError as exc:
            return self._refused(project_id, state, hint, exc)
        return store.commits(project_id)

    def _keep(
        self,
        project_id: int,
        hint: ProjectHint,
        records: Iterable[CommitRecord],
        *,
        replace: bool,
        heads: Mapping[str, str] | None = None,
    ) -> None:
        self._store.merge(
            project_id,
            records,
            fetched_at=self._now,
            activity=hint.activity,
            window_start=self._window.start,
            pushed=hint.pushed_at,
            replace=replace,
            heads=heads,
            count_merges=self._count_merges,
        )

    def _refused(
        self,
        project_id: int,
        state: ProjectState | None,
        hint: ProjectHint,
        error: GitLabError,
    ) -> Sequence[StoredCommit]:
        """A failed read: skipped, last good commits kept, or (never read) raised."""
        reason = skip_reason(error)
        if reason is not None:
            if state is None or state.skipped != reason:  # logged when it starts
                log.info(
                    "project skipped", project_id=project_id, reason=reason, error=str(error)
                )
            self._store.skip(
                project_id,
                reason,
                fetched_at=self._now,
                activity=hint.activity,
                pushed=hint.pushed_at,
            )
            return ()
        if state is None:
            raise error  # never read: the users who need it fail with it
        self.read_failures[error.reason] += 1
        log.warning(
            "project read failed; keeping its last good commits",
            project_id=project_id,
            reason=error.reason,
            error=str(error),
            kept=len(state.commits),
        )
        return self._store.commits(project_id)

    def skipped_by_reason(self) -> Counter[str]:
        """This scan's projects whose read was refused, by reason."""
        projects = self._store.projects
        return Counter(
            state.skipped
            for pid in self._decided
            if (state := projects.get(pid)) is not None and state.skipped is not None
        )

    async def _read_full(
        self, project_id: int, hint: ProjectHint, branches: Sequence[Branch] | None = None
    ) -> None:
        """The window's commits reachable from a branch; what was kept before is
        replaced (commits that left every branch stop counting).

        One read of every ref's commits in the window (``all=true``: GitLab's hidden refs
        too), kept only where a walk from the branches' heads along ``parent_ids``
        reaches them: the hidden refs' own commits (amended versions, merge refs' merge
        commits) are not. The walk stops where the read does, at the window's start,
        as ``git log --since`` on each branch would.
        """
        if branches is None:
            branches = await self._api.branches(project_id)
        start = self._window.start
        records: list[CommitRecord] = []
        if any(b.committed_date >= start for b in branches):
            records = reachable(
                await self._api.project_commits(project_id, start), (b.head for b in branches)
            )
        self._keep(
            project_id, hint, records, replace=True, heads={b.name: b.head for b in branches}
        )

    async def _read_changes(
        self, project_id: int, state: ProjectState, hint: ProjectHint
    ) -> None:
        """What changed since the last read: every commit each new push brought
        (``compare`` from its old head to its new one), or, when the pushes do not say
        it all, every branch whose head moved (compared with its head as last read)."""
        known = state.pushed
        pushes = sorted(p for p in hint.pushes if known is None or p[0] > known)
        quiet = replace(hint, pushed_at=None, pushes=())
        only_pushes = (
            pushes
            and plan_fetch(state, quiet, window_start=self._window.start,
                           overlap=self._overlap) is None
            and all(ref and base and head for _, ref, base, head in pushes)
        )
        try:
            if only_pushes:
                await self._read_pushes(project_id, hint, pushes)
            else:
                await self._read_moves(project_id, state, hint)
        except NotFoundError:
            # a head GitLab no longer knows (a force-push's old head, garbage-collected):
            # the whole window instead
            self.full_rereads += 1
            await self._read_full(project_id, hint)

    async def _read_pushes(
        self, project_id: int, hint: ProjectHint, pushes: Sequence[PushHead]
    ) -> None:
        records: list[CommitRecord] = []
        heads: dict[str, str] = {}
        for _, ref, base, head in pushes:
            assert ref is not None and base is not None and head is not None
            records.extend(await self._api.compare(project_id, base, head))
            heads[ref] = head
        self._keep(project_id, hint, records, replace=False, heads=heads)

    async def _read_moves(self, project_id: int, state: ProjectState, hint: ProjectHint) -> None:
        records: list[CommitRecord] = []
        branches = await self._api.branches(project_id)
        current = {b.name: b for b in branches}
        if any(name not in current for name in state.heads):
            # a branch was deleted: its own commits may be gone with it
            self.full_rereads += 1
            await self._read_full(project_id, hint, branches)
            return
        for branch in branches:
            old = state.heads.get(branch.name)
            if old == branch.head:
                continue
            if old is not None:
                records.extend(await self._api.compare(project_id, old, branch.head))
            elif branch.committed_date >= self._window.start:
                records.extend(
                    await self._api.branch_commits(project_id, branch.name, self._window.start)
                )
        self._keep(
            project_id, hint, records, replace=False, heads={b.name: b.head for b in branches}
        )

    def finish(self) -> None:
        """After a scan: forget projects nobody works in, when every discovery succeeded."""
        if not self._failed_discovery and not self._waiting:
            self._store.retain(self._hints)

    def close(self) -> None:
        if self._prefetcher is not None and not self._prefetcher.done():
            self._prefetcher.cancel()
        for worker in self._workers:
            worker.cancel()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.cancel()
        self._waiters.clear()

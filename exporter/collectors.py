"""Prometheus collectors rendering the latest :class:`~exporter.snapshot.Snapshot`.

One small collector per metric family, each reading the current snapshot once per
scrape through ``source``. A scrape never talks to GitLab: it only renders what the
last scan produced. Everything is registered on a private registry returned by
:func:`build_registry`, never on ``prometheus_client.REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.commit_store import SKIP_REASONS
from exporter.exposition import SnapshotRegistry
from exporter.gitlab.errors import FAILURE_REASONS
from exporter.score import TeamTotals, team_members, team_totals, user_score
from exporter.snapshot import (
    ISSUE_STATES,
    MERGE_REQUEST_STATES,
    PROJECT_KINDS,
    Snapshot,
    UserState,
)

__all__ = [
    "FAILURE_REASONS",
    "PREFIX",
    "BuildInfoCollector",
    "LastScanDurationCollector",
    "LastScanSuccessCollector",
    "LastScanUsersCollector",
    "ProjectReadFailuresCollector",
    "ProjectsSkippedCollector",
    "ScanIntervalCollector",
    "ScansTotalCollector",
    "ShardInfoCollector",
    "SnapshotCollector",
    "TeamCommitsCollector",
    "TeamInfoCollector",
    "TeamMemberInfoCollector",
    "TeamPeriodCommitsCollector",
    "TeamScoreCollector",
    "UserCommitsCollector",
    "UserIssuesCollector",
    "UserLastSuccessCollector",
    "UserMergeRequestsCollector",
    "UserPeriodCommitsCollector",
    "UserProjectsCollector",
    "UserScanFailuresCollector",
    "UserScoreCollector",
    "UserUpCollector",
    "build_registry",
]

PREFIX = "gitlab_activity_"

SnapshotSource = Callable[[], Snapshot]


def _users(snapshot: Snapshot) -> list[UserState]:
    """The snapshot's users in a stable order (by username)."""
    return [snapshot.users[name] for name in sorted(snapshot.users)]


class SnapshotCollector(Collector):
    """Base: reads the snapshot once per ``collect`` call and renders one family."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return list(self.families(self._source()))

    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        raise NotImplementedError


class UserCommitsCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_commits",
            "Distinct commits (by SHA) authored by the user within the look-back window, "
            "from the user's last successful scan.",
            labels=["user"],
        )
        for user in _users(snapshot):
            if user.stats is not None:
                family.add_metric([user.username], user.stats.commits)
        yield family


class UserPeriodCommitsCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_period_commits",
            "Commits of the user within the look-back window, split by the configured "
            "local-time period of their authored date.",
            labels=["user", "period"],
        )
        for user in _users(snapshot):
            if user.stats is None:
                continue
            for period in snapshot.periods:
                family.add_metric(
                    [user.username, period], user.stats.period_commits.get(period, 0)
                )
        yield family


class UserProjectsCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_projects",
            "Projects of the user by kind: personal (own namespace), contributed "
            "(contributed to, not personal), active (at least one counted commit).",
            labels=["user", "kind"],
        )
        for user in _users(snapshot):
            if user.stats is None:
                continue
            for kind in PROJECT_KINDS:
                family.add_metric([user.username, kind], user.stats.projects.get(kind, 0))
        yield family


class UserMergeRequestsCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_merge_requests",
            "Merge requests authored by the user and created within the look-back window, "
            "by current state (a locked merge request counts as opened).",
            labels=["user", "state"],
        )
        for user in _users(snapshot):
            if user.stats is None:
                continue
            for state in MERGE_REQUEST_STATES:
                family.add_metric([user.username, state], user.stats.merge_requests.get(state, 0))
        yield family


class UserIssuesCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_issues",
            "Issues authored by the user and created within the look-back window, "
            "by current state.",
            labels=["user", "state"],
        )
        for user in _users(snapshot):
            if user.stats is None:
                continue
            for state in ISSUE_STATES:
                family.add_metric([user.username, state], user.stats.issues.get(state, 0))
        yield family


class UserScoreCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_score",
            "Leaderboard score of the user: weighted sum of commits, merged merge requests, "
            "merge requests and closed issues in the look-back window (weights: score.weights).",
            labels=["user"],
        )
        for user in _users(snapshot):
            if user.stats is not None:
                family.add_metric([user.username], user_score(user.stats, snapshot.weights))
        yield family


def _team_totals(snapshot: Snapshot) -> Iterator[tuple[str, TeamTotals]]:
    """Each team (by name) with the sums over its members that have numbers; teams
    where no member has numbers yet are left out (no numbers is not zero activity)."""
    for team in sorted(snapshot.teams):
        totals = team_totals(team_members(snapshot, team), snapshot.periods, snapshot.weights)
        if totals.members_counted:
            yield team, totals


class TeamScoreCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "team_score",
            "Sum of the scores of the team's members (those scanned by this exporter).",
            labels=["team"],
        )
        for team, totals in _team_totals(snapshot):
            family.add_metric([team], totals.score)
        yield family


class TeamCommitsCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "team_commits",
            "Sum of the commits of the team's members (those scanned by this exporter); "
            "a commit by two members counts for each.",
            labels=["team"],
        )
        for team, totals in _team_totals(snapshot):
            family.add_metric([team], totals.commits)
        yield family


class TeamPeriodCommitsCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "team_period_commits",
            "Sum of the team's members' commits by local-time period.",
            labels=["team", "period"],
        )
        for team, totals in _team_totals(snapshot):
            for period in snapshot.periods:
                family.add_metric([team, period], totals.period_commits.get(period, 0))
        yield family


class UserScanFailuresCollector(SnapshotCollector):
    """A user's series only for the reasons the user has failed with: a zero series per
    user and reason carries nothing (``gitlab_activity_user_up`` already says who is
    failing) and would be most of the body. A series so appears with its first
    failure, at 1; the alert rules count a series that appeared as an increase."""

    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = CounterMetricFamily(
            PREFIX + "user_scan_failures_total",
            "Failed scans of the user, by reason of the failure.",
            labels=["user", "reason"],
        )
        for user in _users(snapshot):
            known = [r for r in FAILURE_REASONS if user.failures.get(r, 0) > 0]
            others = sorted(
                r for r, n in user.failures.items() if r not in FAILURE_REASONS and n > 0
            )
            for reason in known + others:
                family.add_metric([user.username, reason], user.failures[reason])
        yield family


def _by_reason(known: Iterable[str], counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Every known reason (zero when absent), then any other reason found."""
    reasons = list(known) + sorted(r for r in counts if r not in known)
    return [(r, counts.get(r, 0)) for r in reasons]


class ProjectsSkippedCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "projects_skipped",
            "Projects of the scanned users whose commits the last scan could not read and "
            "counted as none: forbidden (the token sees the project, not its code), "
            "no_repository, not_found (gone since listed).",
            labels=["reason"],
        )
        if snapshot.ready:
            for reason, value in _by_reason(SKIP_REASONS, snapshot.projects_skipped):
                family.add_metric([reason], value)
        yield family


class ProjectReadFailuresCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = CounterMetricFamily(
            PREFIX + "project_read_failures_total",
            "Failed reads of a project's commits that kept its last good commits, by "
            "reason (a project never read fails the users who need it instead).",
            labels=["reason"],
        )
        for reason, value in _by_reason(FAILURE_REASONS, snapshot.project_read_failures):
            family.add_metric([reason], value)
        yield family


class UserLastSuccessCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_last_success_timestamp_seconds",
            "Unix time at which the user was last scanned completely.",
            labels=["user"],
        )
        for user in _users(snapshot):
            if user.last_success is not None:
                family.add_metric([user.username], user.last_success)
        yield family


class UserUpCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "user_up",
            "1 when the user's latest scan succeeded, 0 when it failed "
            "(the user's other gauges then show the last good values).",
            labels=["user"],
        )
        for user in _users(snapshot):
            family.add_metric([user.username], 0 if user.stale else 1)
        yield family


class TeamMemberInfoCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "team_member_info",
            "1 for each membership of a user in a team.",
            labels=["team", "user"],
        )
        for team in sorted(snapshot.teams):
            for member in sorted(set(snapshot.teams[team])):
                family.add_metric([team, member], 1)
        yield family


class TeamInfoCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "team_info",
            "1 for each team; project is the team's project name (empty when none is set). "
            "When sharded, one shard reports each team.",
            labels=["team", "project"],
        )
        for team in sorted(snapshot.teams):
            if snapshot.info_teams is None or team in snapshot.info_teams:
                family.add_metric([team, snapshot.team_projects.get(team, "")], 1)
        yield family


class LastScanSuccessCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "last_scan_success_timestamp_seconds",
            "Unix time at which the last scan that ran to completion ended "
            "(some users may have failed in it).",
        )
        if snapshot.last_complete_scan_end is not None:
            family.add_metric([], snapshot.last_complete_scan_end)
        yield family


class LastScanDurationCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "last_scan_duration_seconds",
            "Wall-clock duration of the last scan.",
        )
        if snapshot.last_scan is not None:
            family.add_metric([], snapshot.last_scan.duration)
        yield family


class LastScanUsersCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "last_scan_users",
            "Users in the last scan by outcome: scanned (successfully) or failed.",
            labels=["state"],
        )
        scan = snapshot.last_scan
        if scan is not None:
            family.add_metric(["scanned"], scan.users_total - scan.users_failed)
            family.add_metric(["failed"], scan.users_failed)
        yield family


class ScansTotalCollector(SnapshotCollector):
    def families(self, snapshot: Snapshot) -> Iterator[Metric]:
        family = CounterMetricFamily(
            PREFIX + "scans_total",
            "Scans finished since the exporter started.",
        )
        family.add_metric([], snapshot.scans_total)
        yield family


class MetricsResponsesCollector(Collector):
    """``gitlab_activity_metrics_responses_total{encoding}``: the registry's ``/metrics``
    responses so far by content coding (``gzip``, ``identity``), both always present."""

    def __init__(self, registry: SnapshotRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            PREFIX + "metrics_responses",
            "Responses to /metrics by content coding: gzip (what Prometheus asks for) or "
            "identity; the response counts itself.",
            labels=["encoding"],
        )
        for encoding in ("gzip", "identity"):
            family.add_metric([encoding], self._registry.responses.get(encoding, 0))
        return [family]


class BuildInfoCollector(Collector):
    """Constant ``gitlab_activity_build_info{version} 1``."""

    def __init__(self, version: str) -> None:
        self._version = version

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "build_info",
            "Always 1; the version label is the version of the exporter.",
            labels=["version"],
        )
        family.add_metric([self._version], 1)
        return [family]


class ScanIntervalCollector(Collector):
    """Constant ``gitlab_activity_scan_interval_seconds``: the configured scan interval,
    so alert rules can compare scan age and duration with it instead of a fixed number."""

    def __init__(self, interval_seconds: float) -> None:
        self._interval = interval_seconds

    def collect(self) -> Iterable[Metric]:
        return [
            GaugeMetricFamily(
                PREFIX + "scan_interval_seconds",
                "Configured interval between the starts of two scans.",
                value=self._interval,
            )
        ]


class ShardInfoCollector(Collector):
    """Constant ``gitlab_activity_shard_info{index,count} 1``."""

    def __init__(self, index: int, count: int) -> None:
        self._index = index
        self._count = count

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "shard_info",
            "Always 1; index and count of the share of users this instance scans "
            "(index 0, count 1 when not sharded).",
            labels=["index", "count"],
        )
        family.add_metric([str(self._index), str(self._count)], 1)
        return [family]


SNAPSHOT_COLLECTORS: tuple[type[SnapshotCollector], ...] = (
    UserCommitsCollector,
    UserPeriodCommitsCollector,
    UserProjectsCollector,
    UserMergeRequestsCollector,
    UserIssuesCollector,
    UserScoreCollector,
    UserScanFailuresCollector,
    UserLastSuccessCollector,
    UserUpCollector,
    ProjectsSkippedCollector,
    ProjectReadFailuresCollector,
    TeamMemberInfoCollector,
    TeamInfoCollector,
    TeamScoreCollector,
    TeamCommitsCollector,
    TeamPeriodCommitsCollector,
    LastScanSuccessCollector,
    LastScanDurationCollector,
    LastScanUsersCollector,
    ScansTotalCollector,
)


def build_registry(
    source: SnapshotSource,
    *,
    version: str,
    interval_seconds: float | None = None,
    shard: tuple[int, int] | None = None,
) -> SnapshotRegistry:
    """A private registry with every snapshot collector and the build info registered.

    ``source`` returns the current snapshot; it is called once per collector per scrape,
    so it must be cheap (typically returning an attribute of the service).
    ``interval_seconds`` and ``shard`` (index, count) add their constant gauges.
    The registry's :meth:`~exporter.exposition.SnapshotRegistry.render` caches the
    snapshot collectors' rendering per snapshot; collectors registered later are live.
    """
    registry = SnapshotRegistry(source)
    for collector_type in SNAPSHOT_COLLECTORS:
        registry.register_snapshot_collector(collector_type(source))
    registry.register(BuildInfoCollector(version))
    registry.register(MetricsResponsesCollector(registry))
    if interval_seconds is not None:
        registry.register(ScanIntervalCollector(interval_seconds))
    if shard is not None:
        registry.register(ShardInfoCollector(*shard))
    return registry

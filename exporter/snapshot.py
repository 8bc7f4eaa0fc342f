"""The immutable result of scans, rendered by the collectors.

A scan builds a new :class:`Snapshot` from the previous one and the service swaps
the reference in one assignment, so a scrape always sees one consistent scan.
A failed user keeps the previous :class:`UserStats`: errors never look like zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from exporter.score import DEFAULT_WEIGHTS, ScoreWeights

K = TypeVar("K")
V = TypeVar("V")

PROJECT_KINDS = ("personal", "contributed", "active")
MERGE_REQUEST_STATES = ("opened", "merged", "closed")  # GitLab's "locked" counts as opened
ISSUE_STATES = ("opened", "closed")


def frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """A read-only copy of ``items``."""
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class UserStats:
    """A user's numbers from one successful scan."""

    commits: int
    period_commits: Mapping[str, int]
    projects: Mapping[str, int]  # keys: PROJECT_KINDS
    # authored by the user and created in the window, by current state
    merge_requests: Mapping[str, int] = field(default_factory=frozen_map)  # MERGE_REQUEST_STATES
    issues: Mapping[str, int] = field(default_factory=frozen_map)  # keys: ISSUE_STATES


@dataclass(frozen=True, slots=True)
class UserState:
    """Everything known about one user across scans."""

    username: str
    stats: UserStats | None = None  # last good numbers; None until a scan succeeds
    last_success: float | None = None  # unix time of the last complete scan of the user
    failures: Mapping[str, int] = field(default_factory=frozen_map)  # reason -> count, cumulative
    last_error: str | None = None  # reason of the latest scan when it failed, else None
    last_error_message: str | None = None

    @property
    def stale(self) -> bool:
        return self.last_error is not None


@dataclass(frozen=True, slots=True)
class ScanSummary:
    started: float
    finished: float
    users_total: int
    users_failed: int

    @property
    def duration(self) -> float:
        return self.finished - self.started


@dataclass(frozen=True, slots=True)
class Snapshot:
    users: Mapping[str, UserState] = field(default_factory=frozen_map)
    teams: Mapping[str, tuple[str, ...]] = field(default_factory=frozen_map)  # team -> members
    team_projects: Mapping[str, str] = field(default_factory=frozen_map)  # team -> project name
    # teams whose gitlab_activity_team_info this instance reports; None: every team. A
    # sharded instance reports the teams its shard owns, so the series sum across shards.
    info_teams: frozenset[str] | None = None
    periods: tuple[str, ...] = ()  # every period label, "other" included when the day has gaps
    last_scan: ScanSummary | None = None
    last_complete_scan_end: float | None = None
    scans_total: int = 0
    weights: ScoreWeights = DEFAULT_WEIGHTS  # how user scores are computed from the stats
    # the last scan's projects whose commits could not be read at all, by reason
    projects_skipped: Mapping[str, int] = field(default_factory=frozen_map)
    # failed project reads that kept the last good commits, by reason, cumulative
    project_read_failures: Mapping[str, int] = field(default_factory=frozen_map)

    @property
    def ready(self) -> bool:
        return self.last_scan is not None

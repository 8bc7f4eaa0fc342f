"""Pure scoring and ranking: user and team scores, and the leaderboard order.

The score reproduces the previous tool's formula with configurable weights::

    score = commits * w.commits
          + merged merge requests * w.merged_merge_requests
          + merge requests (every state) * w.merge_requests
          + closed issues * w.closed_issues

A team's numbers are sums over its members that have numbers (a member whose scans
all failed so far adds nothing; a member whose latest scan failed adds the last good
numbers). Sums only: a replica that scans a share of the users reports its share of
each team, and adding the replicas' values gives the whole team.

Ranking is deterministic: score descending, then commits descending, then name;
members without numbers yet come last, by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # snapshot imports this module for ScoreWeights
    from exporter.snapshot import Snapshot, UserState, UserStats

__all__ = [
    "DEFAULT_WEIGHTS",
    "NO_TEAM",
    "MemberEntry",
    "ScoreWeights",
    "TeamEntry",
    "TeamTotals",
    "format_number",
    "leaderboard",
    "team_members",
    "team_totals",
    "user_score",
    "user_status",
]

NO_TEAM = ""  # the group name of users who are in no team


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Points per unit of each kind of activity (the previous tool's weights by default)."""

    commits: float = 1.0
    merged_merge_requests: float = 5.0
    merge_requests: float = 2.0  # every merge request in the window, whatever its state
    closed_issues: float = 3.0


DEFAULT_WEIGHTS = ScoreWeights()


def user_score(stats: UserStats, weights: ScoreWeights = DEFAULT_WEIGHTS) -> float:
    """The user's score from one successful scan's numbers."""
    mrs = stats.merge_requests
    return (
        weights.commits * stats.commits
        + weights.merged_merge_requests * mrs.get("merged", 0)
        + weights.merge_requests * sum(mrs.values())
        + weights.closed_issues * stats.issues.get("closed", 0)
    )


def user_status(user: UserState) -> str:
    """``ok``, the reason of the latest failure, or ``pending`` before any result."""
    if user.last_error is not None:
        return user.last_error
    return "ok" if user.stats is not None else "pending"


def format_number(value: float) -> str:
    """``12`` for whole numbers, ``12.5`` otherwise."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_by_fold: tuple[Mapping[str, UserState], dict[str, UserState]] | None = None


def _users_by_fold(users: Mapping[str, UserState]) -> dict[str, UserState]:
    """``users`` keyed by case-folded username; built once per snapshot's (immutable)
    users, not once per team: thousands of teams would make it quadratic."""
    global _by_fold
    if _by_fold is None or _by_fold[0] is not users:
        _by_fold = (users, {name.casefold(): state for name, state in users.items()})
    return _by_fold[1]


def team_members(snapshot: Snapshot, team: str) -> list[UserState]:
    """The team's members as user states, each once (usernames compare case-insensitively).

    A member the snapshot has no state for yet appears as an empty state.
    """
    by_fold = _users_by_fold(snapshot.users)
    members: dict[str, UserState] = {}
    for name in snapshot.teams.get(team, ()):
        key = name.casefold()
        if key not in members:
            members[key] = by_fold.get(key) or _empty_state(name)
    return list(members.values())


def _empty_state(name: str) -> UserState:
    from exporter.snapshot import UserState

    return UserState(username=name)


@dataclass(frozen=True, slots=True)
class TeamTotals:
    """Sums over the members that have numbers."""

    members_counted: int
    score: float
    commits: int
    period_commits: Mapping[str, int]


def team_totals(
    members: Iterable[UserState], periods: Iterable[str], weights: ScoreWeights
) -> TeamTotals:
    counted = 0
    score = 0.0
    commits = 0
    period_names = list(periods)
    by_period = dict.fromkeys(period_names, 0)
    for member in members:
        stats = member.stats
        if stats is None:
            continue
        counted += 1
        score += user_score(stats, weights)
        commits += stats.commits
        for period in period_names:
            by_period[period] += stats.period_commits.get(period, 0)
    return TeamTotals(counted, score, commits, by_period)


@dataclass(frozen=True, slots=True)
class MemberEntry:
    rank: int  # 1-based within the team
    user: UserState
    score: float | None  # None while the user has no numbers


@dataclass(frozen=True, slots=True)
class TeamEntry:
    name: str  # NO_TEAM for users in no team
    project: str
    rank: int | None  # 1-based among teams; None for the no-team group
    totals: TeamTotals
    members: tuple[MemberEntry, ...]


def _rank_members(members: Iterable[UserState], weights: ScoreWeights) -> tuple[MemberEntry, ...]:
    scored = [
        (user, user_score(user.stats, weights) if user.stats is not None else None)
        for user in members
    ]

    def key(item: tuple[UserState, float | None]) -> tuple[bool, float, int, str, str]:
        user, score = item
        commits = user.stats.commits if user.stats is not None else 0
        return (score is None, -(score or 0.0), -commits, user.username.casefold(), user.username)

    ordered = sorted(scored, key=key)
    return tuple(
        MemberEntry(rank=i, user=user, score=score)
        for i, (user, score) in enumerate(ordered, start=1)
    )


def leaderboard(snapshot: Snapshot) -> list[TeamEntry]:
    """Teams ranked by score with members ranked inside, then (when there are any)
    the users who are in no team, as a last entry named :data:`NO_TEAM`."""
    weights = snapshot.weights
    entries: list[TeamEntry] = []
    in_a_team: set[str] = set()
    for team in snapshot.teams:
        members = team_members(snapshot, team)
        in_a_team.update(m.username.casefold() for m in members)
        entries.append(
            TeamEntry(
                name=team,
                project=snapshot.team_projects.get(team, ""),
                rank=None,
                totals=team_totals(members, snapshot.periods, weights),
                members=_rank_members(members, weights),
            )
        )

    def key(entry: TeamEntry) -> tuple[bool, float, int, str, str]:
        t = entry.totals
        return (t.members_counted == 0, -t.score, -t.commits, entry.name.casefold(), entry.name)

    ranked = [
        TeamEntry(e.name, e.project, i, e.totals, e.members)
        for i, e in enumerate(sorted(entries, key=key), start=1)
    ]
    loners = [u for name, u in snapshot.users.items() if name.casefold() not in in_a_team]
    if loners:
        ranked.append(
            TeamEntry(
                name=NO_TEAM,
                project="",
                rank=None,
                totals=team_totals(loners, snapshot.periods, weights),
                members=_rank_members(loners, weights),
            )
        )
    return ranked

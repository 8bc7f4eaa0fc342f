"""Pure scoring and ranking, and counting merge requests and issues by state."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from exporter.attribution import MERGE_REQUEST_STATE_ALIASES, Window, count_by_state
from exporter.score import (
    DEFAULT_WEIGHTS,
    NO_TEAM,
    ScoreWeights,
    format_number,
    leaderboard,
    user_score,
    user_status,
)
from exporter.snapshot import (
    ISSUE_STATES,
    MERGE_REQUEST_STATES,
    Snapshot,
    UserState,
    UserStats,
    frozen_map,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
WINDOW = Window(start=NOW - timedelta(days=30), end=NOW)


@dataclass(frozen=True)
class Item:
    state: str
    created_at: datetime


def test_count_by_state_window_and_locked() -> None:
    inside = NOW - timedelta(days=1)
    items = [
        Item("opened", inside),
        Item("locked", inside),  # still open
        Item("merged", inside),
        Item("merged", WINDOW.start),  # the start is inside
        Item("closed", inside),
        Item("merged", WINDOW.start - timedelta(seconds=1)),  # before the window
        Item("opened", NOW),  # the end is outside
        Item("weird", inside),  # unknown states are not counted
    ]
    counts = count_by_state(
        items, window=WINDOW, states=MERGE_REQUEST_STATES, aliases=MERGE_REQUEST_STATE_ALIASES
    )
    assert dict(counts) == {"opened": 2, "merged": 2, "closed": 1}
    assert dict(count_by_state([], window=WINDOW, states=ISSUE_STATES)) == {
        "opened": 0,
        "closed": 0,
    }


def stats(
    commits: int, merged: int = 0, opened: int = 0, closed_mrs: int = 0, closed_issues: int = 0
) -> UserStats:
    return UserStats(
        commits=commits,
        period_commits=frozen_map({"morning": commits}),
        projects=frozen_map({}),
        merge_requests=frozen_map({"opened": opened, "merged": merged, "closed": closed_mrs}),
        issues=frozen_map({"opened": 1, "closed": closed_issues}),
    )


def test_user_score_previous_tools_formula() -> None:
    # commits*1 + merged*5 + total MRs*2 + closed issues*3 (opened issues count nothing)
    s = stats(10, merged=2, opened=1, closed_mrs=1, closed_issues=3)
    assert user_score(s) == 10 + 2 * 5 + 4 * 2 + 3 * 3
    assert user_score(s, DEFAULT_WEIGHTS) == 37
    weights = ScoreWeights(commits=0, merged_merge_requests=1, merge_requests=0, closed_issues=0.5)
    assert user_score(s, weights) == 2 + 1.5


def test_format_number() -> None:
    assert format_number(37.0) == "37"
    assert format_number(3.5) == "3.5"
    assert format_number(0) == "0"


def snapshot() -> Snapshot:
    users = {
        # ann and ben tie on score (10 + 2*5 + 2*2 = 24) and commits: by name
        "ben": UserState("ben", stats=stats(10, merged=2), last_success=1.0),
        "ann": UserState("ann", stats=stats(10, merged=2), last_success=1.0),
        # abe ties on score (6 + 10 + 8) with fewer commits: after them
        "abe": UserState("abe", stats=stats(6, merged=2, closed_mrs=2), last_success=1.0),
        # dee failed last time: last good numbers rank her
        "dee": UserState("dee", stats=stats(50), last_success=1.0, last_error="timeout"),
        # eve never had numbers: last
        "eve": UserState("eve", last_error="not_found"),
        "fay": UserState("fay", stats=stats(1), last_success=1.0),  # in no team
    }
    return Snapshot(
        users=frozen_map(users),
        teams=frozen_map(
            {
                "zeta": ("ben", "ann", "abe", "eve"),  # 24 * 3 = 72
                "alpha": ("DEE",),  # 50, spelled differently
                "omega": ("eve",),  # nobody with numbers: last
                "beta": ("ann", "abe"),  # 48: ann in two teams
            }
        ),
        team_projects=frozen_map({"zeta": "Z"}),
        periods=("morning",),
    )


def test_leaderboard_ranks_teams_and_members_deterministically() -> None:
    board = leaderboard(snapshot())
    assert [(e.rank, e.name) for e in board] == [
        (1, "zeta"), (2, "alpha"), (3, "beta"), (4, "omega"), (None, NO_TEAM)
    ]
    zeta = board[0]
    assert zeta.project == "Z" and board[1].project == ""
    assert [(m.rank, m.user.username, m.score) for m in zeta.members] == [
        (1, "ann", 24), (2, "ben", 24), (3, "abe", 24), (4, "eve", None)
    ]
    assert zeta.totals.score == 72 and zeta.totals.commits == 26
    assert zeta.totals.members_counted == 3
    assert dict(zeta.totals.period_commits) == {"morning": 26}
    assert [m.user.username for m in board[1].members] == ["dee"]
    assert board[1].totals.score == 50
    assert board[2].totals.score == 48
    assert board[3].totals.members_counted == 0
    assert [m.user.username for m in board[4].members] == ["fay"]


def test_leaderboard_follows_the_weights() -> None:
    snap = snapshot()
    weights = ScoreWeights(commits=10, merged_merge_requests=0, merge_requests=0, closed_issues=0)
    board = leaderboard(replace(snap, weights=weights))
    assert [e.name for e in board][:3] == ["alpha", "zeta", "beta"]  # 500, 260, 160
    assert [m.user.username for m in board[1].members][:3] == ["ann", "ben", "abe"]


def test_user_status() -> None:
    snap = snapshot()
    assert user_status(snap.users["ann"]) == "ok"
    assert user_status(snap.users["dee"]) == "timeout"
    assert user_status(UserState("new")) == "pending"

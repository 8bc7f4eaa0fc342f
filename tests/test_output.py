"""scan --output: json, csv, table and prometheus renderings of a snapshot."""

from __future__ import annotations

import csv
import io
import json

import pytest
from prometheus_client import generate_latest

from exporter import __version__
from exporter.collectors import build_registry
from exporter.output import render
from exporter.snapshot import ScanSummary, Snapshot, UserState, UserStats, frozen_map


def make_snapshot() -> Snapshot:
    def stats(
        commits: int, morning: int, personal: int, mrs: dict[str, int], issues: dict[str, int]
    ) -> UserStats:
        return UserStats(
            commits=commits,
            period_commits=frozen_map({"morning": morning, "afternoon": commits - morning}),
            projects=frozen_map({"personal": personal, "contributed": 1, "active": 2}),
            merge_requests=frozen_map(mrs),
            issues=frozen_map(issues),
        )

    users = {
        # 30 + 2*5 + 3*2 + 1*3 = 49
        "zed": UserState(
            "zed",
            stats=stats(30, 10, 5, {"opened": 1, "merged": 2, "closed": 0}, {"opened": 2, "closed": 1}),
            last_success=100.0,
        ),
        # 7 + 0 + 2*2 + 4*3 = 23
        "amy": UserState(
            "amy",
            stats=stats(7, 7, 1, {"opened": 0, "merged": 0, "closed": 2}, {"opened": 0, "closed": 4}),
            last_success=100.0,
        ),
        # 30: last good numbers of a user whose latest scan timed out
        "bob": UserState(
            "bob",
            stats=stats(30, 0, 2, {}, {}),
            last_success=50.0,
            failures=frozen_map({"timeout": 1}),
            last_error="timeout",
        ),
        "cat": UserState("cat", failures=frozen_map({"not_found": 1}), last_error="not_found"),
        # in no team: 3
        "dan": UserState("dan", stats=stats(3, 1, 0, {}, {}), last_success=100.0),
    }
    return Snapshot(
        users=frozen_map(users),
        teams=frozen_map({"web": ("zed", "amy"), "core": ("bob", "zed", "cat")}),
        team_projects=frozen_map({"web": "Storefront", "core": ""}),
        periods=("morning", "afternoon"),
        last_scan=ScanSummary(started=90.0, finished=100.0, users_total=5, users_failed=2),
        last_complete_scan_end=100.0,
        scans_total=3,
    )


# core: zed 49 + bob 30 (+ cat, no numbers) = 79; web: zed 49 + amy 23 = 72
EXPECTED_ROWS = [
    # team, team_rank, team_score, project, rank, user, score, commits, morning, afternoon,
    # mrs opened, merged, closed, total, issues opened, closed, status
    ["core", "1", "79", "", "1", "zed", "49", "30", "10", "20", "1", "2", "0", "3", "2", "1", "ok"],
    ["core", "1", "79", "", "2", "bob", "30", "30", "0", "30", "0", "0", "0", "0", "0", "0", "timeout"],
    ["core", "1", "79", "", "3", "cat", "", "", "", "", "", "", "", "", "", "", "not_found"],
    ["web", "2", "72", "Storefront", "1", "zed", "49", "30", "10", "20", "1", "2", "0", "3", "2", "1", "ok"],
    ["web", "2", "72", "Storefront", "2", "amy", "23", "7", "7", "0", "0", "0", "2", "2", "0", "4", "ok"],
    ["", "", "", "", "1", "dan", "3", "3", "1", "2", "0", "0", "0", "0", "0", "0", "ok"],
]
CSV_HEADER = [
    "team", "team_rank", "team_score", "project", "rank", "user", "score", "commits",
    "commits_morning", "commits_afternoon", "merge_requests_opened", "merge_requests_merged",
    "merge_requests_closed", "merge_requests_total", "issues_opened", "issues_closed", "status",
]


def test_json() -> None:
    doc = json.loads(render(make_snapshot(), "json"))
    # the leaderboard rows are the CSV rows, typed
    rows = [
        [("" if v is None else str(v)) for v in row.values()] for row in doc["leaderboard"]
    ]
    assert rows == EXPECTED_ROWS
    assert list(doc["leaderboard"][0]) == CSV_HEADER
    assert doc["leaderboard"][0]["score"] == 49 and doc["leaderboard"][2]["score"] is None
    users = {u["user"]: u for u in doc["users"]}
    assert [u["user"] for u in doc["users"]] == ["amy", "bob", "cat", "dan", "zed"]
    assert users["zed"] == {
        **users["zed"],
        "teams": ["core", "web"],
        "status": "ok",
        "score": 49,
        "commits": 30,
        "periods": {"morning": 10, "afternoon": 20},
        "projects": {"personal": 5, "contributed": 1, "active": 2},
        "merge_requests": {"opened": 1, "merged": 2, "closed": 0},
        "issues": {"opened": 2, "closed": 1},
        "last_success": 100.0,
    }
    assert users["bob"]["status"] == "timeout"
    assert users["bob"]["commits"] == 30  # last good numbers kept
    assert users["cat"]["status"] == "not_found"
    assert users["cat"]["commits"] is None and users["cat"]["score"] is None
    assert doc["teams"] == [
        {
            "team": "core", "project": "", "members": ["bob", "cat", "zed"], "score": 79,
            "commits": 60, "periods": {"morning": 10, "afternoon": 50},
        },
        {
            "team": "web", "project": "Storefront", "members": ["amy", "zed"], "score": 72,
            "commits": 37, "periods": {"morning": 17, "afternoon": 20},
        },
    ]
    scan = doc["scan"]
    assert scan["users_total"] == 5
    assert scan["users_failed"] == 2
    assert scan["users_scanned"] == 3
    assert scan["duration_seconds"] == 10.0
    assert scan["scans_total"] == 3
    assert scan["score_weights"] == {
        "commits": 1, "merged_merge_requests": 5, "merge_requests": 2, "closed_issues": 3
    }
    assert render(make_snapshot(), "json") == render(make_snapshot(), "json")


def test_csv() -> None:
    rows = list(csv.reader(io.StringIO(render(make_snapshot(), "csv"))))
    assert rows[0] == CSV_HEADER
    assert rows[1:] == EXPECTED_ROWS


def test_table() -> None:
    text = render(make_snapshot(), "table")
    blocks = text.split("\n\n")
    assert len(blocks) == 3
    core, web, loners = (block.splitlines() for block in blocks)
    assert core[0] == "#1 core: score 79, commits 60 (morning 10, afternoon 50)"
    assert web[0] == "#2 web (project: Storefront): score 72, commits 37 (morning 17, afternoon 20)"
    assert loners[0] == "In no team"
    assert core[1].split() == [
        "rank", "user", "score", "commits", "morning", "afternoon",
        "mrs", "merged/total", "issues", "closed", "status",
    ]
    assert [line.split() for line in core[3:]] == [
        ["1", "zed", "49", "30", "10", "20", "2/3", "1", "ok"],
        ["2", "bob", "30", "30", "0", "30", "0/0", "0", "timeout"],
        ["3", "cat", "-", "-", "-", "-", "-", "-", "not_found"],
    ]
    assert [line.split() for line in web[3:]] == [
        ["1", "zed", "49", "30", "10", "20", "2/3", "1", "ok"],
        ["2", "amy", "23", "7", "7", "0", "0/2", "4", "ok"],
    ]
    assert [line.split() for line in loners[3:]] == [["1", "dan", "3", "3", "1", "2", "0/0", "0", "ok"]]
    # aligned across every team: each score ends in the same column
    member_lines = core[3:] + web[3:] + loners[3:]
    ends = {line.index(" " + line.split()[2] + " ") + len(line.split()[2]) + 1 for line in member_lines}
    assert len(ends) == 1
    assert "\x1b" not in text  # plain text


def test_ranking_tie_breaks_are_deterministic() -> None:
    snap = make_snapshot()
    twin = UserState("abe", stats=snap.users["bob"].stats, last_success=100.0)  # same as bob
    snap = Snapshot(
        users=frozen_map({**snap.users, "abe": twin}),
        teams=frozen_map({**snap.teams, "core": ("bob", "zed", "cat", "abe")}),
        periods=snap.periods,
    )
    rows = list(csv.DictReader(io.StringIO(render(snap, "csv"))))
    core = [(r["rank"], r["user"]) for r in rows if r["team"] == "core"]
    assert core == [("1", "zed"), ("2", "abe"), ("3", "bob"), ("4", "cat")]


def test_prometheus_equals_metrics_endpoint() -> None:
    snap = make_snapshot()
    registry = build_registry(lambda: snap, version="4.5.6")
    assert render(snap, "prometheus", registry=registry) == generate_latest(registry).decode()
    default = render(snap, "prometheus")
    assert default == generate_latest(build_registry(lambda: snap, version=__version__)).decode()
    assert 'gitlab_activity_user_commits{user="zed"} 30.0' in default


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="yaml"):
        render(make_snapshot(), "yaml")

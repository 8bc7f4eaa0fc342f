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
    def stats(commits: int, morning: int, personal: int) -> UserStats:
        return UserStats(
            commits=commits,
            period_commits=frozen_map({"morning": morning, "afternoon": commits - morning}),
            projects=frozen_map({"personal": personal, "contributed": 1, "active": 2}),
        )

    users = {
        "zed": UserState("zed", stats=stats(30, 10, 5), last_success=100.0),
        "amy": UserState("amy", stats=stats(7, 7, 1), last_success=100.0),
        "bob": UserState(
            "bob",
            stats=stats(30, 0, 2),
            last_success=50.0,
            failures=frozen_map({"timeout": 1}),
            last_error="timeout",
        ),
        "cat": UserState("cat", failures=frozen_map({"not_found": 1}), last_error="not_found"),
    }
    return Snapshot(
        users=frozen_map(users),
        teams=frozen_map({"web": ("zed", "amy"), "core": ("bob", "zed", "cat")}),
        periods=("morning", "afternoon"),
        last_scan=ScanSummary(started=90.0, finished=100.0, users_total=4, users_failed=2),
        last_complete_scan_end=100.0,
        scans_total=3,
    )


def test_json() -> None:
    doc = json.loads(render(make_snapshot(), "json"))
    users = {u["user"]: u for u in doc["users"]}
    assert [u["user"] for u in doc["users"]] == ["amy", "bob", "cat", "zed"]
    assert users["zed"] == {
        **users["zed"],
        "teams": ["core", "web"],
        "status": "ok",
        "commits": 30,
        "periods": {"morning": 10, "afternoon": 20},
        "projects": {"personal": 5, "contributed": 1, "active": 2},
        "last_success": 100.0,
    }
    assert users["bob"]["status"] == "timeout"
    assert users["bob"]["commits"] == 30  # last good numbers kept
    assert users["cat"]["status"] == "not_found"
    assert users["cat"]["commits"] is None
    assert doc["teams"] == [
        {"team": "core", "members": ["bob", "cat", "zed"], "commits": 60},
        {"team": "web", "members": ["amy", "zed"], "commits": 37},
    ]
    scan = doc["scan"]
    assert scan["users_total"] == 4
    assert scan["users_failed"] == 2
    assert scan["users_scanned"] == 2
    assert scan["duration_seconds"] == 10.0
    assert scan["scans_total"] == 3
    assert render(make_snapshot(), "json") == render(make_snapshot(), "json")


def test_csv() -> None:
    rows = list(csv.reader(io.StringIO(render(make_snapshot(), "csv"))))
    assert rows[0] == [
        "user", "teams", "status", "commits", "morning", "afternoon",
        "personal", "contributed", "active",
    ]
    assert rows[1] == ["bob", "core", "timeout", "30", "0", "30", "2", "1", "2"]
    assert rows[2] == ["zed", "core,web", "ok", "30", "10", "20", "5", "1", "2"]
    assert rows[3] == ["amy", "web", "ok", "7", "7", "0", "1", "1", "2"]
    assert rows[4][:4] == ["cat", "core", "not_found", ""]
    assert len(rows) == 5


def test_table() -> None:
    text = render(make_snapshot(), "table")
    lines = text.splitlines()
    assert lines[0].split() == [
        "user", "teams", "status", "commits", "morning", "afternoon",
        "personal", "contributed", "active",
    ]
    body = [line.split() for line in lines[2:]]
    assert [row[0] for row in body] == ["bob", "zed", "amy", "cat"]
    assert body[1] == ["zed", "core,web", "ok", "30", "10", "20", "5", "1", "2"]
    assert body[3][:4] == ["cat", "core", "not_found", "-"]
    # aligned: every commits value ends in the same column
    ends = {line.index(row[3]) + len(row[3]) for line, row in zip(lines[2:], body, strict=True)}
    assert len(ends) == 1


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

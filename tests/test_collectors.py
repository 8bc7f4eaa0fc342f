"""The collectors render every metric family of a snapshot, with contract names."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from exporter.collectors import FAILURE_REASONS, build_registry
from exporter.score import ScoreWeights
from exporter.snapshot import (
    ISSUE_STATES,
    MERGE_REQUEST_STATES,
    PROJECT_KINDS,
    ScanSummary,
    Snapshot,
    UserState,
    UserStats,
    frozen_map,
)

PERIODS = ("morning", "afternoon", "other")


def stats(
    commits: int,
    periods: dict[str, int],
    projects: dict[str, int],
    mrs: dict[str, int] | None = None,
    issues: dict[str, int] | None = None,
) -> UserStats:
    return UserStats(
        commits=commits,
        period_commits=frozen_map(periods),
        projects=frozen_map(projects),
        merge_requests=frozen_map(mrs or {}),
        issues=frozen_map(issues or {}),
    )


def make_snapshot() -> Snapshot:
    alice = UserState(
        username="alice",
        stats=stats(
            12,
            {"morning": 7, "afternoon": 5},
            {"personal": 3, "contributed": 2, "active": 4},
            {"opened": 2, "merged": 3, "closed": 1},
            {"opened": 4, "closed": 2},
        ),
        last_success=1_700_000_000.0,
    )
    # bob succeeded once, then failed: keeps his last numbers, is down.
    bob = UserState(
        username="bob",
        stats=stats(4, {"other": 4}, {"personal": 1}, {"merged": 1}, {"opened": 1}),
        last_success=1_699_990_000.0,
        failures=frozen_map({"timeout": 2, "rate_limited": 1}),
        last_error="timeout",
        last_error_message="GET /users/:id/projects: timed out",
    )
    # carol never succeeded.
    carol = UserState(
        username="carol",
        failures=frozen_map({"not_found": 3}),
        last_error="not_found",
    )
    return Snapshot(
        users=frozen_map({"alice": alice, "bob": bob, "carol": carol}),
        # alice is in two teams, spelled differently in the second
        teams=frozen_map(
            {"backend": ("alice", "bob"), "platform": ("carol",), "web": ("Alice",)}
        ),
        team_projects=frozen_map({"backend": "Billing", "web": "Storefront ünicode"}),
        periods=PERIODS,
        last_scan=ScanSummary(
            started=1_700_000_000.0, finished=1_700_000_042.5, users_total=3, users_failed=2
        ),
        last_complete_scan_end=1_700_000_042.5,
        scans_total=7,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    snap = make_snapshot()
    return build_registry(lambda: snap, version="1.2.3")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_private_registry() -> None:
    registry = build_registry(Snapshot, version="x")
    assert registry is not REGISTRY
    assert REGISTRY.get_sample_value("gitlab_activity_build_info", {"version": "x"}) is None


def test_user_commits(registry: CollectorRegistry) -> None:
    assert value(registry, "gitlab_activity_user_commits", user="alice") == 12
    assert value(registry, "gitlab_activity_user_commits", user="bob") == 4
    assert value(registry, "gitlab_activity_user_commits", user="carol") is None


def test_period_commits_zero_filled(registry: CollectorRegistry) -> None:
    name = "gitlab_activity_user_period_commits"
    assert value(registry, name, user="alice", period="morning") == 7
    assert value(registry, name, user="alice", period="afternoon") == 5
    assert value(registry, name, user="alice", period="other") == 0
    assert value(registry, name, user="bob", period="morning") == 0
    assert value(registry, name, user="bob", period="other") == 4
    assert value(registry, name, user="carol", period="morning") is None


def test_projects_by_kind(registry: CollectorRegistry) -> None:
    name = "gitlab_activity_user_projects"
    assert [value(registry, name, user="alice", kind=k) for k in PROJECT_KINDS] == [3, 2, 4]
    assert [value(registry, name, user="bob", kind=k) for k in PROJECT_KINDS] == [1, 0, 0]
    assert value(registry, name, user="carol", kind="personal") is None


def test_failure_counters_only_for_reasons_that_occurred(
    registry: CollectorRegistry,
) -> None:
    name = "gitlab_activity_user_scan_failures_total"
    assert set(FAILURE_REASONS) == {
        "not_found", "unauthorized", "private_profile", "rate_limited", "api_error", "timeout", "crash"
    }
    failed = {
        (user, reason)
        for user in ("alice", "bob", "carol")
        for reason in FAILURE_REASONS
        if value(registry, name, user=user, reason=reason) is not None
    }
    # no zero series: alice never failed; bob and carol only for what they failed with
    assert failed == {("bob", "timeout"), ("bob", "rate_limited"), ("carol", "not_found")}
    assert value(registry, name, user="bob", reason="timeout") == 2
    assert value(registry, name, user="bob", reason="rate_limited") == 1
    assert value(registry, name, user="carol", reason="not_found") == 3
    text = generate_latest(registry).decode()
    assert "# TYPE gitlab_activity_user_scan_failures_total counter" in text
    assert " 0.0" not in "\n".join(s for s in text.splitlines() if s.startswith(name))


def test_last_success_and_up(registry: CollectorRegistry) -> None:
    ts = "gitlab_activity_user_last_success_timestamp_seconds"
    assert value(registry, ts, user="alice") == 1_700_000_000.0
    assert value(registry, ts, user="bob") == 1_699_990_000.0
    assert value(registry, ts, user="carol") is None
    assert value(registry, "gitlab_activity_user_up", user="alice") == 1
    assert value(registry, "gitlab_activity_user_up", user="bob") == 0
    assert value(registry, "gitlab_activity_user_up", user="carol") == 0


def test_team_membership(registry: CollectorRegistry) -> None:
    name = "gitlab_activity_team_member_info"
    assert value(registry, name, team="backend", user="alice") == 1
    assert value(registry, name, team="backend", user="bob") == 1
    assert value(registry, name, team="platform", user="carol") == 1
    assert value(registry, name, team="platform", user="alice") is None


def test_merge_requests_and_issues_by_state(registry: CollectorRegistry) -> None:
    mrs = "gitlab_activity_user_merge_requests"
    issues = "gitlab_activity_user_issues"
    assert MERGE_REQUEST_STATES == ("opened", "merged", "closed")
    assert ISSUE_STATES == ("opened", "closed")
    assert [value(registry, mrs, user="alice", state=s) for s in MERGE_REQUEST_STATES] == [2, 3, 1]
    assert [value(registry, mrs, user="bob", state=s) for s in MERGE_REQUEST_STATES] == [0, 1, 0]
    assert value(registry, mrs, user="carol", state="opened") is None
    assert [value(registry, issues, user="alice", state=s) for s in ISSUE_STATES] == [4, 2]
    assert [value(registry, issues, user="bob", state=s) for s in ISSUE_STATES] == [1, 0]
    assert value(registry, issues, user="carol", state="closed") is None


def test_user_score_default_weights(registry: CollectorRegistry) -> None:
    name = "gitlab_activity_user_score"
    # commits*1 + merged*5 + all merge requests*2 + closed issues*3
    assert value(registry, name, user="alice") == 12 + 3 * 5 + 6 * 2 + 2 * 3  # 45
    assert value(registry, name, user="bob") == 4 + 1 * 5 + 1 * 2 + 0  # 11: last good numbers
    assert value(registry, name, user="carol") is None  # never scanned: no score, not zero


def test_team_sums_over_members_with_numbers(registry: CollectorRegistry) -> None:
    assert value(registry, "gitlab_activity_team_score", team="backend") == 45 + 11
    assert value(registry, "gitlab_activity_team_score", team="web") == 45  # alice counts here too
    assert value(registry, "gitlab_activity_team_score", team="platform") is None
    assert value(registry, "gitlab_activity_team_commits", team="backend") == 16
    assert value(registry, "gitlab_activity_team_commits", team="web") == 12
    assert value(registry, "gitlab_activity_team_commits", team="platform") is None
    period = "gitlab_activity_team_period_commits"
    assert [value(registry, period, team="backend", period=p) for p in PERIODS] == [7, 5, 4]
    assert [value(registry, period, team="web", period=p) for p in PERIODS] == [7, 5, 0]
    assert value(registry, period, team="platform", period="morning") is None


def test_team_info_with_project(registry: CollectorRegistry) -> None:
    name = "gitlab_activity_team_info"
    assert value(registry, name, team="backend", project="Billing") == 1
    assert value(registry, name, team="web", project="Storefront ünicode") == 1
    assert value(registry, name, team="platform", project="") == 1
    assert value(registry, name, team="backend", project="") is None


def test_team_info_only_for_the_teams_this_shard_reports() -> None:
    snap = dataclasses.replace(make_snapshot(), info_teams=frozenset({"web"}))
    registry = build_registry(lambda: snap, version="v")
    name = "gitlab_activity_team_info"
    assert value(registry, name, team="web", project="Storefront ünicode") == 1
    assert value(registry, name, team="backend", project="Billing") is None
    assert value(registry, name, team="platform", project="") is None
    # the sums still cover this shard's members of every team
    assert value(registry, "gitlab_activity_team_score", team="backend") == 56


def test_score_uses_the_snapshots_weights() -> None:
    weights = ScoreWeights(commits=0.5, merged_merge_requests=0, merge_requests=1, closed_issues=10)
    snap = dataclasses.replace(make_snapshot(), weights=weights)
    registry = build_registry(lambda: snap, version="v")
    assert value(registry, "gitlab_activity_user_score", user="alice") == 6 + 0 + 6 + 20
    assert value(registry, "gitlab_activity_user_score", user="bob") == 2 + 0 + 1 + 0
    assert value(registry, "gitlab_activity_team_score", team="backend") == 32 + 3


def test_scan_families(registry: CollectorRegistry) -> None:
    assert value(registry, "gitlab_activity_last_scan_success_timestamp_seconds") == 1_700_000_042.5
    assert value(registry, "gitlab_activity_last_scan_duration_seconds") == pytest.approx(42.5)
    assert value(registry, "gitlab_activity_last_scan_users", state="scanned") == 1
    assert value(registry, "gitlab_activity_last_scan_users", state="failed") == 2
    assert value(registry, "gitlab_activity_scans_total") == 7
    assert value(registry, "gitlab_activity_build_info", version="1.2.3") == 1


def test_before_first_scan() -> None:
    snap = Snapshot(periods=PERIODS)
    registry = build_registry(lambda: snap, version="1.2.3")
    assert value(registry, "gitlab_activity_last_scan_success_timestamp_seconds") is None
    assert value(registry, "gitlab_activity_last_scan_duration_seconds") is None
    assert value(registry, "gitlab_activity_last_scan_users", state="scanned") is None
    assert value(registry, "gitlab_activity_scans_total") == 0
    assert value(registry, "gitlab_activity_build_info", version="1.2.3") == 1


def test_complete_scan_end_absent_until_first_complete_scan() -> None:
    snap = Snapshot(
        last_scan=ScanSummary(started=1.0, finished=2.0, users_total=1, users_failed=1),
        scans_total=1,
    )
    registry = build_registry(lambda: snap, version="v")
    assert value(registry, "gitlab_activity_last_scan_success_timestamp_seconds") is None
    assert value(registry, "gitlab_activity_last_scan_duration_seconds") == 1.0


def test_source_read_on_every_scrape() -> None:
    current = [Snapshot()]
    registry = build_registry(lambda: current[0], version="v")
    assert value(registry, "gitlab_activity_user_commits", user="alice") is None
    current[0] = make_snapshot()
    assert value(registry, "gitlab_activity_user_commits", user="alice") == 12


def test_text_exposition_types_and_help(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected_types = {
        "gitlab_activity_user_commits": "gauge",
        "gitlab_activity_user_period_commits": "gauge",
        "gitlab_activity_user_projects": "gauge",
        "gitlab_activity_user_scan_failures": "counter",
        "gitlab_activity_user_last_success_timestamp_seconds": "gauge",
        "gitlab_activity_user_up": "gauge",
        "gitlab_activity_projects_skipped": "gauge",
        "gitlab_activity_project_read_failures": "counter",
        "gitlab_activity_team_member_info": "gauge",
        "gitlab_activity_user_merge_requests": "gauge",
        "gitlab_activity_user_issues": "gauge",
        "gitlab_activity_user_score": "gauge",
        "gitlab_activity_team_info": "gauge",
        "gitlab_activity_team_score": "gauge",
        "gitlab_activity_team_commits": "gauge",
        "gitlab_activity_team_period_commits": "gauge",
        "gitlab_activity_last_scan_success_timestamp_seconds": "gauge",
        "gitlab_activity_last_scan_duration_seconds": "gauge",
        "gitlab_activity_last_scan_users": "gauge",
        "gitlab_activity_scans": "counter",
        "gitlab_activity_build_info": "gauge",
        "gitlab_activity_metrics_responses": "counter",
    }
    assert {name: f.type for name, f in families.items()} == expected_types
    for family in families.values():
        assert len(family.documentation) > 10, family.name
    assert text.count("# HELP ") == len(expected_types)
    assert 'gitlab_activity_user_scan_failures_total{reason="timeout",user="bob"} 2.0' in text
    assert "gitlab_activity_scans_total 7.0" in text
    assert 'gitlab_activity_user_commits{user="carol"}' not in text


def _promtool_or_skip() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required when CI is set")
        pytest.skip("promtool not installed")
    return promtool


@pytest.mark.parametrize("snap", [make_snapshot(), Snapshot()], ids=["scanned", "empty"])
def test_promtool_check_metrics(snap: Snapshot) -> None:
    promtool = _promtool_or_skip()
    text = generate_latest(build_registry(lambda: snap, version="1.2.3"))
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )
    assert result.stdout.decode() + result.stderr.decode() == ""
    assert result.returncode == 0


def test_scan_interval_and_shard_info_when_given() -> None:
    snap = make_snapshot()
    registry = build_registry(lambda: snap, version="v", interval_seconds=120.0, shard=(2, 5))
    assert value(registry, "gitlab_activity_scan_interval_seconds") == 120.0
    assert value(registry, "gitlab_activity_shard_info", index="2", count="5") == 1
    bare = build_registry(lambda: snap, version="v")
    assert value(bare, "gitlab_activity_scan_interval_seconds") is None
    assert value(bare, "gitlab_activity_shard_info", index="0", count="1") is None

"""The Grafana dashboards as files: datasource always the variable, variables from
label_values, provisioning that points at them. Their queries run against a real
Prometheus in tests/test_e2e_prometheus.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_the_two_dashboards_exist() -> None:
    uids = {load(path)["uid"] for path in DASHBOARDS}
    assert uids == {"gitlab-activity-leaderboard", "gitlab-activity-health"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_datasource_is_always_the_variable(path: Path) -> None:
    dashboard = load(path)
    assert variables(dashboard)["datasource"]["type"] == "datasource"
    assert variables(dashboard)["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    # nothing hard-wired anywhere: every datasource uid in the file is the variable
    uids = re.findall(r'"uid":\s*"([^"]*)"', path.read_text())
    assert set(uids) - {dashboard["uid"]} == {"${datasource}"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_query_variables_use_label_values_and_multi_select(path: Path) -> None:
    for variable in load(path)["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        assert re.fullmatch(r"label_values\(.+, *\w+\)", query), query
        assert variable["multi"] and variable["includeAll"], variable["name"]


def test_leaderboard_variables_and_panels() -> None:
    dashboard = load(ROOT / "grafana" / "dashboards" / "gitlab-activity-leaderboard.json")
    found = variables(dashboard)
    assert "gitlab_activity_team_member_info" in found["team"]["query"]["query"]
    assert "$team" in found["user"]["query"]["query"]
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    for needed in (
        "gitlab_activity_team_commits",
        "gitlab_activity_team_score",
        "gitlab_activity_team_period_commits",
        "gitlab_activity_team_info",
        "gitlab_activity_user_commits",
        "gitlab_activity_user_score",
        "gitlab_activity_user_merge_requests",
        "gitlab_activity_user_issues",
        "gitlab_activity_user_period_commits",
        "gitlab_activity_user_projects",
        '$team"',
        '$user"',
    ):
        assert needed in exprs, needed


def test_leaderboard_sums_team_gauges_across_shards() -> None:
    # each shard's team gauges hold only its own members: a panel must add the shards up
    dashboard = load(ROOT / "grafana" / "dashboards" / "gitlab-activity-leaderboard.json")
    team_gauge = re.compile(r"gitlab_activity_team_(score|commits|period_commits)\b")
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    using = [expr for expr in exprs if team_gauge.search(expr)]
    assert using
    for expr in using:
        assert re.search(r"sum by \(team(, period)?\) \(gitlab_activity_team_", expr), expr


def test_health_dashboard_covers_the_exporter() -> None:
    dashboard = load(ROOT / "grafana" / "dashboards" / "gitlab-activity-health.json")
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))
    for needed in (
        "gitlab_activity_last_scan_duration_seconds",
        "gitlab_activity_last_scan_success_timestamp_seconds",
        "gitlab_activity_user_scan_failures_total",
        "gitlab_activity_api_requests_total",
        "gitlab_activity_api_retries_total",
        "gitlab_activity_api_ratelimit_remaining",
        "gitlab_activity_shard_info",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert needed in exprs, needed


def test_panels_do_not_overlap() -> None:
    for path in DASHBOARDS:
        taken: set[tuple[int, int]] = set()
        for panel in load(path)["panels"]:
            pos = panel["gridPos"]
            cells = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            assert not cells & taken, f"{path.name}: {panel['title']} overlaps"
            taken |= cells


def test_provisioning_points_grafana_at_the_dashboards() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "gitlab-activity.yml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.example.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_bar_gauges_start_at_zero(path: Path) -> None:
    # without min 0 Grafana scales from the smallest value: the last bar is drawn empty
    gauges = [p for p in panels(load(path)) if p["type"] == "bargauge"]
    for panel in gauges:
        assert panel["fieldConfig"]["defaults"].get("min") == 0, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_all_is_a_regex_not_a_list_of_every_value(path: Path) -> None:
    for variable in load(path)["templating"]["list"]:
        if variable["type"] == "query":
            assert variable.get("allValue") == ".*", variable["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_table_queries_aggregate_to_the_rows_labels(path: Path) -> None:
    # Grafana's merge joins a table's queries on their labels: each query keeps only the
    # row's labels (no __name__ of a recording rule, no job/instance/pod of the scrape)
    for panel in panels(load(path)):
        if panel["type"] != "table":
            continue
        for target in panel["targets"]:
            expr = re.sub(r"^sort(_desc)?\((.*)\)$", r"\2", target["expr"].strip())
            assert re.match(r"(sum|max|min|group|count) by \([\w, ]+\) \(", expr), (panel["title"], expr)

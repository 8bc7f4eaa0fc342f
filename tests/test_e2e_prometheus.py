"""End to end against a real Prometheus server.

The GitLab simulator; the Helm chart's sharded StatefulSet with a ServiceMonitor,
rendered by real Helm, run as it would be in the cluster: one ``serve`` subprocess per
pod (3 s interval) with the pod's args and host name, scraped by the Debian
``prometheus`` binary (1 s scrape and rule evaluation) with the job and target labels
the Prometheus Operator gives each target. Then every query of every Grafana panel
returns data on this healthy install, each table panel gives one row per team or
member, the team sums equal their members', and with GitLab rejecting the token one
alert fires, not one per user or shard. Skipped without the ``prometheus`` binary, except when
``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.simulator.faults import FaultRule
from exporter.simulator.generate import generate_org
from exporter.simulator.server import RateLimits
from tests.conftest import HOST, TOKEN, config_document
from tests.kube import operator_targets, render
from tests.tools import SimulatorThread, free_port, http_get, require_program, wait_http

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "gitlab-activity.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
JOB = "gitlab-activity-exporter"
SHARDS = 2
INTERVAL_SECONDS = 3
# What Grafana would put in for a 1 s scrape interval, generously: a rate needs two samples.
GRAFANA_MACROS = {"$__rate_interval": "15s", "$__interval": "5s", "$__range": "5m"}


def fast_rules(text: str) -> str:
    """The rules file with alert windows shrunk to fit a test: every ``for:`` 2 s, every
    range and offset 20 s. Nothing else changes (the test checks the recording rules are
    equal)."""
    text = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 2s", text)
    text = re.sub(r"\boffset \d+[smhd]\b", "offset 20s", text)
    return re.sub(r"\[\d+[smhd]\]", "[20s]", text)


@dataclass
class Stack:
    sim: SimulatorThread
    prometheus: str  # base URL
    exporters: list[str]
    targets: list[dict[str, str]]  # the Operator's target labels, one per pod

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        code, body = http_get(url)
        if code != 200:  # a broken query: fail at once, not after retries
            raise RuntimeError(f"{expr}: HTTP {code} {body}")
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def series(self, selector: str) -> list[dict[str, str]]:
        start = time.time() - 300
        params = urllib.parse.urlencode({"match[]": selector, "start": str(start)})
        code, body = http_get(f"{self.prometheus}/api/v1/series?{params}")
        assert code == 200, f"{selector}: HTTP {code} {body}"
        found: list[dict[str, str]] = json.loads(body)["data"]
        return found

    def alerts(self) -> list[dict[str, Any]]:
        code, body = http_get(f"{self.prometheus}/api/v1/alerts")
        assert code == 200, body
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts


def chart_pods() -> tuple[list[str], list[dict[str, str]]]:
    """The sharded chart with a ServiceMonitor, rendered by real Helm: the container's
    args and the targets the Prometheus Operator would make of it."""
    manifests = render(
        {
            "image": {"repository": "registry.example.com/gitlab-activity-exporter"},
            "gitlab": {"existingSecret": "gitlab-token"},
            "sharding": {"enabled": True, "replicas": SHARDS},
            "serviceMonitor": {"enabled": True, "jobName": JOB},
        },
        release="gae",
    )
    (statefulset,) = [m for m in manifests if m["kind"] == "StatefulSet"]
    args = list(statefulset["spec"]["template"]["spec"]["containers"][0]["args"])
    targets = operator_targets(manifests)
    assert sorted(t["pod"] for t in targets) == [
        f"{statefulset['metadata']['name']}-{i}" for i in range(SHARDS)
    ], "one target per pod"
    return args, targets


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = require_program("prometheus")
    args, targets = chart_pods()
    tmp = tmp_path_factory.mktemp("e2e")
    org = generate_org(11, users=20, projects=60, host=HOST)
    document = config_document(org, "http://placeholder", interval_seconds=INTERVAL_SECONDS)
    document["gitlab"]["max_retries"] = 6
    document["teams"][-1]["project"] = "Billing"  # the team table's project column
    # rate-limit headers on every answer (headroom panel); far above what the test sends.
    # No faults: every panel must show data on a healthy install.
    with SimulatorThread(org, token=TOKEN, limits=RateLimits(general=(1_000_000, 60.0))) as sim:
        assert sim.server is not None
        document["gitlab"]["url"] = sim.url
        config = tmp / "config.yml"
        config.write_text(yaml.safe_dump(document))
        exporters: list[subprocess.Popen[bytes]] = []
        logs = []
        static_configs = []
        for target in targets:
            port = free_port()
            log = (tmp / f"{target['pod']}.log").open("w")
            logs.append(log)
            argv = [
                a for a in args if not a.startswith(("--config.file", "--web.listen-address"))
            ] + ["--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}"]
            # the pod's host name gives its shard (--shard.from-hostname), as in the cluster
            exporters.append(subprocess.Popen(
                [sys.executable, "-m", "exporter", *argv],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOSTNAME": target["pod"]},
            ))  # fmt: skip
            labels = {k: v for k, v in target.items() if k != "instance"}
            static_configs.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
        rules = tmp / "rules.yml"
        rules.write_text(fast_rules(RULES.read_text()))
        prometheus_config = tmp / "prometheus.yml"
        prometheus_config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    # the job and the target labels the Operator's generated config gives
                    "scrape_configs": [{"job_name": JOB, "static_configs": static_configs}],
                }
            )
        )
        prometheus_port = free_port()
        prometheus_log = (tmp / "prometheus.log").open("w")
        prometheus = subprocess.Popen(
            [prometheus_bin, f"--config.file={prometheus_config}",
             f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=prometheus_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{prometheus_port}"
            wait_http(f"{base}/-/ready", timeout=30)
            urls = [c["targets"][0] for c in static_configs]
            for url in urls:
                wait_http(f"http://{url}/-/ready", timeout=30)
            yield Stack(sim=sim, prometheus=base, exporters=[f"http://{u}" for u in urls], targets=targets)
        finally:
            for proc in (prometheus, *exporters):
                proc.terminate()
            for proc in (prometheus, *exporters):
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for log in logs:
                log.close()
            prometheus_log.close()


def eventually(check: Any, *, timeout: float = 30.0, every: float = 0.5) -> Any:
    """Retry ``check`` until it stops raising AssertionError, for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(every)


def regex_of(values: list[str]) -> str:
    """How Grafana fills a multi-value variable into a Prometheus regex: regex-escaped,
    the backslashes escaped again for the PromQL string literal."""
    return "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in values) + ")"


def fill(expr: str, variables: dict[str, str]) -> str:
    for name, value in {**GRAFANA_MACROS, **variables}.items():
        expr = expr.replace("${" + name.lstrip("$") + "}", value).replace(name, value)
    assert "$" not in expr, f"unfilled variable in {expr}"
    return expr


def resolve_variables(stack: Stack, dashboard: dict[str, Any], *, first_only: bool) -> dict[str, str]:
    """Every variable of ``dashboard`` from Prometheus, as Grafana would: ``label_values``
    queries in order, each filled with the variables before it. All values (the
    dashboards' default) or only the first one."""
    values: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        name = "$" + variable["name"]
        if variable["type"] == "datasource":
            values[name] = "prometheus"
            continue
        query = fill(variable["query"]["query"], values)
        match = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        found = sorted({s[label] for s in stack.series(selector) if label in s})
        assert found, f"variable {name}: {query} has no values"
        # "All" is the variable's allValue (.*) when it has one, as Grafana sends it
        everything = variable.get("allValue") or regex_of(found)
        values[name] = regex_of(found[:1]) if first_only else everything
    return values


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner["title"], target["expr"]))
    return out


@pytest.mark.parametrize("first_only", [False, True], ids=["all-values", "one-value"])
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_query_returns_data(stack: Stack, path: Path, first_only: bool) -> None:
    dashboard = json.loads(path.read_text())
    queries = panel_queries(dashboard)
    assert queries

    def check() -> None:
        variables = resolve_variables(stack, dashboard, first_only=first_only)
        empty = [
            f"{title}: {fill(expr, variables)}"
            for title, expr in queries
            if not stack.query(fill(expr, variables))
        ]
        assert not empty, "panels without data:\n" + "\n".join(empty)

    eventually(check, timeout=40)


# What each table panel's rows are: the labels its queries keep, one row per value.
TABLE_ROWS = {
    "Teams": {"team"},
    "Members per team": {"team", "user"},
    "Projects per user": {"user", "kind"},
    "Users by state": {"user"},
}


def test_each_table_panel_gives_one_row_per_team_or_member(stack: Stack) -> None:
    # behind the Operator every series carries namespace, pod, service, container and
    # endpoint labels: a table query that kept them would split or repeat its rows
    assert {"namespace", "pod", "service", "container", "endpoint"} <= set(stack.targets[0])
    teams = {r["metric"]["team"] for r in stack.query("gitlab_activity_team_member_info")}
    pairs = {(r["metric"]["team"], r["metric"]["user"]) for r in stack.query("gitlab_activity_team_member_info")}
    tables = [
        (path.stem, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        if panel["type"] == "table"
    ]
    assert {panel["title"] for _, panel in tables} == set(TABLE_ROWS)

    def check() -> None:
        for stem, panel in tables:
            dashboard = json.loads((ROOT / "grafana" / "dashboards" / f"{stem}.json").read_text())
            variables = resolve_variables(stack, dashboard, first_only=False)
            row = TABLE_ROWS[panel["title"]]
            for target in panel["targets"]:
                result = stack.query(fill(target["expr"], variables))
                assert result, f"{panel['title']} {target['refId']}: no data"
                keys = [tuple(sorted(r["metric"].items())) for r in result]
                # no __name__, no scrape labels: only the row's own labels (and the team's project)
                extra = {k for r in result for k in r["metric"]} - row - {"project"}
                assert not extra, f"{panel['title']} {target['refId']}: columns {extra}"
                assert len(keys) == len(set(keys)), f"{panel['title']} {target['refId']}: repeated rows"
                if row == {"team"}:
                    assert {r["metric"]["team"] for r in result} == teams, panel["title"]
                if row == {"team", "user"}:
                    assert {(r["metric"]["team"], r["metric"]["user"]) for r in result} == pairs

    eventually(check)


def test_each_pod_is_one_target_and_each_user_one_series(stack: Stack) -> None:
    up = stack.query(f'up{{job="{JOB}"}}')
    assert sorted(r["metric"]["pod"] for r in up) == sorted(t["pod"] for t in stack.targets)

    def check() -> None:
        counts = stack.query("count by (user) (gitlab_activity_user_commits)")
        assert counts and {r["value"][1] for r in counts} == {"1"}
        # both shards scan users
        assert len({r["metric"]["pod"] for r in stack.query("gitlab_activity_user_up")}) == SHARDS
        # the process's own series: memory against the pod's limit, CPU, file descriptors
        for metric in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
            found = stack.query(metric)
            assert sorted(r["metric"]["pod"] for r in found) == sorted(t["pod"] for t in stack.targets), metric
            assert all(float(r["value"][1]) > 0 for r in found), metric

    eventually(check)


def test_prometheus_scrapes_gzip_and_gets_every_sample(stack: Stack) -> None:
    # Prometheus asks for gzip; the body is the cached snapshot member and a live member:
    # the live family counting responses is in the second one, so Prometheus read both
    def check() -> None:
        for url, target in zip(stack.exporters, stack.targets, strict=True):
            pod = target["pod"]
            served = {
                r["metric"]["encoding"]: float(r["value"][1])
                for r in stack.query(f'gitlab_activity_metrics_responses_total{{pod="{pod}"}}')
            }
            assert served.get("gzip", 0) >= 3, (pod, served)  # every scrape in gzip
            code, body = http_get(f"{url}/metrics")  # uncompressed, as urllib asks
            assert code == 200
            expected = Counter(
                line.split("{")[0].split(" ")[0]
                for line in body.splitlines()
                if line.startswith(("gitlab_activity_user_", "gitlab_activity_team_"))
            )
            assert expected["gitlab_activity_user_commits"] > 0
            found = stack.query(
                f'count by (__name__) ({{pod="{pod}", __name__=~"gitlab_activity_(user|team)_.+"}})'
            )
            # every user and team series the exporter serves is in Prometheus, no more
            assert {r["metric"]["__name__"]: int(r["value"][1]) for r in found} == expected, pod
            scraped = stack.query(f'scrape_samples_scraped{{pod="{pod}"}}')
            assert scraped and float(scraped[0]["value"][1]) >= sum(expected.values())

    eventually(check)


def test_recording_rules_produce_data(stack: Stack) -> None:
    original = yaml.safe_load(RULES.read_text())
    fast = yaml.safe_load(fast_rules(RULES.read_text()))
    # the team rules (the failure rules have ranges, shrunk; they are empty while healthy)
    records = [r for g in original["groups"] for r in g["rules"] if r.get("record", "").startswith("team:")]
    assert records == [r for g in fast["groups"] for r in g["rules"] if r.get("record", "").startswith("team:")]
    assert records

    def check() -> None:
        for rule in records:
            result = stack.query(rule["record"])
            assert result, f"{rule['record']} has no data"
            assert all("team" in r["metric"] for r in result)

    eventually(check)
    # the recorded team sums equal the sums of the members' own series
    commits = {r["metric"]["team"]: float(r["value"][1]) for r in stack.query("team:gitlab_activity_commits:sum")}
    for team, total in commits.items():
        members = {r["metric"]["user"] for r in stack.query(f'gitlab_activity_team_member_info{{team="{team}"}}')}
        users = {r["metric"]["user"]: float(r["value"][1]) for r in stack.query("gitlab_activity_user_commits")}
        assert total == sum(users[m] for m in members), team


def test_team_gauges_the_leaderboard_ranks_by_equal_their_members(stack: Stack) -> None:
    # the leaderboard's team panels sum the team gauges; a member of several teams counts in each
    def check() -> None:
        for team_metric, user_metric in (
            ("gitlab_activity_team_score", "gitlab_activity_user_score"),
            ("gitlab_activity_team_commits", "gitlab_activity_user_commits"),
        ):
            teams = {r["metric"]["team"]: float(r["value"][1]) for r in stack.query(f"sum by (team) ({team_metric})")}
            users = {r["metric"]["user"]: float(r["value"][1]) for r in stack.query(user_metric)}
            members = stack.query("gitlab_activity_team_member_info")
            assert teams and {r["metric"]["team"] for r in members} == set(teams)
            for team, total in teams.items():
                assert total == sum(users[r["metric"]["user"]] for r in members if r["metric"]["team"] == team)
        projects = {r["metric"]["team"]: r["metric"].get("project", "") for r in stack.query("gitlab_activity_team_info")}
        assert projects["listed"] == "Billing"

    eventually(check)


def test_no_scan_alert_fires_while_healthy(stack: Stack) -> None:
    stack.query("up")  # the stack is up
    time.sleep(3)  # several evaluations with 2 s `for:`
    firing = {a["labels"]["alertname"] for a in stack.alerts() if a["state"] == "firing"}
    quiet = {
        "GitLabActivityExporterDown",
        "GitLabActivityScanStale",
        "GitLabActivityUserScanFailing",
        "GitLabActivityScanSlowerThanInterval",
    }
    assert not firing & quiet, firing


def test_a_rejected_token_is_one_alert_not_one_per_user(stack: Stack) -> None:
    # runs last of the stack's tests: afterwards GitLab rejects every request
    assert stack.sim.server is not None
    stack.sim.call(stack.sim.server.faults.add, FaultRule(".*", "401"))
    began = time.monotonic()

    def firing() -> list[dict[str, Any]]:
        found = [
            a for a in stack.alerts()
            if a["labels"]["alertname"] == "GitLabActivityGitLabUnusable" and a["state"] == "firing"
        ]  # fmt: skip
        assert found, "GitLabActivityGitLabUnusable not firing yet"
        return found

    alerts = eventually(firing, timeout=60)
    # one alert for the job, however many shards and users
    assert [(a["labels"]["job"], a["labels"]["reason"]) for a in alerts] == [(JOB, "token_rejected")]
    assert alerts[0]["labels"]["severity"] == "critical"
    time.sleep(3)  # several evaluations with 2 s `for:`
    others = {
        a["labels"]["alertname"] for a in stack.alerts()
        if a["state"] in ("firing", "pending") and a["labels"]["alertname"] != "GitLabActivityGitLabUnusable"
    }  # fmt: skip
    assert not others & {
        "GitLabActivityUsersFailing",
        "GitLabActivityUserScanFailing",
        "GitLabActivityScanStale",
        "GitLabActivityApiErrors",
    }, others
    print(f"alert firing {time.monotonic() - began:.1f} s after GitLab started failing")


def user_lines(metrics: str) -> list[str]:
    return sorted(line for line in metrics.splitlines() if line.startswith("gitlab_activity_user_"))


def test_a_restarted_pod_with_its_state_file_serves_its_last_numbers_and_is_ready_at_once(
    tmp_path: Path,
) -> None:
    # the chart's state volume: scan.state_file survives the pod; the new process must be
    # ready with the saved numbers before it has been able to scan anything
    org = generate_org(12, users=8, projects=20, host=HOST)
    with SimulatorThread(org, token=TOKEN) as sim:
        assert sim.server is not None
        document = config_document(org, sim.url, interval_seconds=3600)
        document["scan"]["state_file"] = str(tmp_path / "state" / "state.db")
        (tmp_path / "state").mkdir()
        config = tmp_path / "config.yml"
        config.write_text(yaml.safe_dump(document))

        def start() -> tuple[subprocess.Popen[bytes], str]:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
                 "--web.listen-address", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            return proc, f"http://127.0.0.1:{port}"

        first, url = start()
        try:
            wait_http(f"{url}/-/ready", timeout=60)
            before = user_lines(wait_http(f"{url}/metrics"))
        finally:
            first.terminate()
            first.wait(10)
        assert before and (tmp_path / "state" / "state.db").exists()
        # GitLab now answers nothing: every request waits far longer than the test
        sim.call(sim.server.faults.add, FaultRule(".*", "slow", delay=3600))
        began = time.monotonic()
        second, url = start()
        try:
            wait_http(f"{url}/-/ready", timeout=30)
            print(f"restarted exporter ready {time.monotonic() - began:.1f} s after its start")
            after = user_lines(wait_http(f"{url}/metrics"))
            assert wait_http(f"{url}/-/ready") == "OK\n"
        finally:
            second.terminate()
            second.wait(10)
        assert after == before

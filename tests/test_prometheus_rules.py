"""The Prometheus rules file: valid for promtool, its unit tests pass, every alert tested."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.tools import require_program

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "gitlab-activity.rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_program("promtool"), *args], capture_output=True, text=True, check=False, cwd=ROOT
    )


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_unit_tests() -> None:
    tested: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 5
    for rule in alerts:
        name = str(rule["alert"])
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("warning", "critical"), name
        assert isinstance(annotations, dict), name
        assert annotations["summary"] and len(str(annotations["description"])) > 80, name
        # fires in one test and stays silent in another
        assert tested.get(name) == {True, False}, f"{name}: needs firing and silent tests"


def test_scan_alerts_use_the_exported_interval_not_a_number() -> None:
    by_name = {rule.get("alert"): rule for rule in rules()}
    for name in ("GitLabActivityScanStale", "GitLabActivityScanSlowerThanInterval"):
        assert "gitlab_activity_scan_interval_seconds" in str(by_name[name]["expr"]), name


def test_recording_rules_follow_the_naming_convention() -> None:
    recorded = [str(rule["record"]) for rule in rules() if "record" in rule]
    assert "team:gitlab_activity_commits:sum" in recorded
    for name in recorded:
        level, metric, operation = name.split(":")
        assert level in ("team", "job_reason") and metric.startswith("gitlab_activity_") and operation, name


def test_many_users_failing_for_one_reason_is_one_alert_and_silences_the_rest() -> None:
    # the per-user, stale-scan and API-error alerts step back for the shared cause
    by_name = {rule.get("alert"): rule for rule in rules()}
    assert "job_reason:gitlab_activity_users_failing_widely:ratio" in str(by_name["GitLabActivityUsersFailing"]["expr"])
    for name in ("GitLabActivityUserScanFailing", "GitLabActivityScanStale", "GitLabActivityApiErrors"):
        assert "unless on (job" in str(by_name[name]["expr"]) and "failing_widely" in str(by_name[name]["expr"]), name
    cases = {case["name"] for path in RULE_TESTS for case in yaml.safe_load(path.read_text())["tests"]}
    assert "a wrong token pages once, not once per user" in cases

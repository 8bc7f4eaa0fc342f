"""The Helm chart rendered by real Helm (tests/kube.py) for every combination of values
users meet, each object validated against Kubernetes' and the Prometheus Operator's
schemas; then what those objects do: one scrape per pod, state on a volume, names within
Kubernetes' limits, a values schema that is the exporter's own configuration model."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import chart_schema
from exporter.cli import _build_parser, shard_from_args
from exporter.config import parse_config
from tests.kube import (
    CHART,
    ROOT,
    Manifest,
    RenderError,
    by_kind,
    check_manifest,
    lint,
    one,
    operator_targets,
    render,
    render_notes,
)

CI_VALUES = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
IMAGE = {"repository": "registry.example.com/tools/gitlab-activity-exporter"}
TOKEN = {"token": "glpat-example"}
# Helm allows release names of up to 53 characters
LONG_RELEASE = "gitlab-activity-exporter-for-the-platform-engineering"
assert len(LONG_RELEASE) == 53


def ci_values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CI_VALUES[name].read_text())
    return loaded


SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("gae", {"image": IMAGE, "gitlab": TOKEN}),
    **{name: ("gae", ci_values(name)) for name in CI_VALUES},
    "deployment-persistence": ("gae", {"image": IMAGE, "gitlab": TOKEN, "persistence": {"enabled": True}}),
    "long-release-sharded-operator-persistence": (
        LONG_RELEASE,
        {**ci_values("sharded-operator"), "persistence": {"enabled": True}},
    ),
    "long-release-deployment": (
        LONG_RELEASE,
        {"image": IMAGE, "gitlab": TOKEN, "persistence": {"enabled": True}, "serviceMonitor": {"enabled": True}},
    ),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[Manifest]]:
    release, values = SCENARIOS[request.param]
    return request.param, values, render(values, release=release)


def workload(manifests: list[Manifest]) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    return found


def container(manifests: list[Manifest]) -> dict[str, Any]:
    found: dict[str, Any] = workload(manifests)["spec"]["template"]["spec"]["containers"][0]
    return found


def rendered_config(manifests: list[Manifest]) -> dict[str, Any]:
    (config,) = [m for m in by_kind(manifests, "ConfigMap") if "config.yml" in m["data"]]
    loaded: dict[str, Any] = yaml.safe_load(config["data"]["config.yml"])
    return loaded


# --- every combination renders and validates ------------------------------------------------


def test_the_scenarios_cover_what_users_meet() -> None:
    assert {"sharded", "operator", "sharded-operator", "persistence"} <= set(CI_VALUES)
    kinds = {
        name: {m["kind"] for m in render(values, release=release)}
        for name, (release, values) in SCENARIOS.items()
    }
    assert {"ServiceMonitor", "PrometheusRule", "StatefulSet"} <= kinds["sharded-operator"]
    assert "PersistentVolumeClaim" in kinds["deployment-persistence"]
    assert "Deployment" in kinds["defaults"] and "Secret" in kinds["defaults"]


def test_every_object_validates_against_the_cluster_schemas(
    scenario: tuple[str, dict[str, Any], list[Manifest]],
) -> None:
    name, _, manifests = scenario
    assert manifests
    problems = [p for m in manifests for p in check_manifest(m)]
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_validation_catches_what_a_cluster_refuses() -> None:
    # the checks themselves: an unknown field, a bad ServiceMonitor field, a long name
    manifests = render(SCENARIOS["sharded-operator"][1])
    service = one(manifests, "ServiceMonitor")
    service["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any("intervall" in p for p in check_manifest(service))
    statefulset = one(manifests, "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert any("imagePullPolicyy" in p for p in check_manifest(statefulset))
    statefulset = one(manifests, "StatefulSet")
    statefulset["metadata"]["name"] = "x" * 53
    assert any("52" in p for p in check_manifest(statefulset))


@pytest.mark.parametrize("name", sorted(CI_VALUES))
def test_helm_lint_strict_finds_nothing(name: str) -> None:
    assert lint(ci_values(name)) == []


@pytest.mark.parametrize("release", ["gae", "exporter", LONG_RELEASE])
def test_names_stay_within_kubernetes_limits_for_any_release_name(release: str) -> None:
    manifests = render(SCENARIOS["long-release-sharded-operator-persistence"][1], release=release)
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    statefulset = one(manifests, "StatefulSet")
    assert len(statefulset["metadata"]["name"]) <= 52
    headless = [m for m in by_kind(manifests, "Service") if m["spec"].get("clusterIP") == "None"]
    assert [len(h["metadata"]["name"]) <= 63 for h in headless] == [True]
    assert statefulset["spec"]["serviceName"] == headless[0]["metadata"]["name"]
    for kind in ("Service", "ConfigMap", "ServiceMonitor", "PrometheusRule"):
        assert len({n for k, n in names if k == kind}) == len(by_kind(manifests, kind)), kind
    for manifest in manifests:
        assert check_manifest(manifest) == [], manifest["kind"]


# --- one scrape per pod ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["operator", "sharded-operator", "long-release-sharded-operator-persistence"])
def test_the_service_monitor_gives_each_pod_one_target(name: str) -> None:
    release, values = SCENARIOS[name]
    manifests = render(values, release=release)
    targets = operator_targets(manifests)
    replicas = workload(manifests)["spec"].get("replicas", 1)
    pods = [t["pod"] for t in targets]
    assert len(pods) == replicas and len(set(pods)) == replicas, targets
    job = values.get("serviceMonitor", {}).get("jobName", "gitlab-activity-exporter")
    assert {t["job"] for t in targets} == {job}


def test_the_alert_rules_select_the_service_monitors_job() -> None:
    manifests = render(SCENARIOS["sharded-operator"][1])
    rules = yaml.safe_dump(one(manifests, "PrometheusRule")["spec"])
    assert 'job="gitlab-activity"' in rules and 'job="gitlab-activity-exporter"' not in rules


# --- state that survives restarts -----------------------------------------------------------


def state_mount(manifests: list[Manifest]) -> str:
    state_file = rendered_config(manifests)["scan"]["state_file"]
    mounts = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    assert not mounts["state"].get("readOnly")
    assert state_file.startswith(mounts["state"]["mountPath"] + "/")
    return str(mounts["state"]["mountPath"])


def test_the_state_file_is_on_a_writable_volume_even_without_persistence() -> None:
    manifests = render(SCENARIOS["defaults"][1])
    state_mount(manifests)
    volumes = {v["name"]: v for v in workload(manifests)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}  # survives container restarts
    assert container(manifests)["securityContext"]["readOnlyRootFilesystem"] is True


def test_sharded_persistence_gives_each_pod_its_own_claim() -> None:
    manifests = render(ci_values("persistence"))
    state_mount(manifests)
    statefulset = one(manifests, "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "state" not in volumes  # the claim template is the volume
    assert not by_kind(manifests, "PersistentVolumeClaim")


def test_deployment_persistence_makes_one_claim_or_uses_an_existing_one() -> None:
    manifests = render(SCENARIOS["deployment-persistence"][1])
    state_mount(manifests)
    claim = one(manifests, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in workload(manifests)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert workload(manifests)["spec"]["strategy"]["type"] == "Recreate"  # RWO: one pod at a time
    existing = render({**SCENARIOS["defaults"][1], "persistence": {"enabled": True, "existingClaim": "mine"}})
    assert not by_kind(existing, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in workload(existing)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "mine"


def test_the_state_directory_is_the_images() -> None:
    # the image makes the directory, owned by its user, for a volume mounted there
    mount = state_mount(render(SCENARIOS["defaults"][1]))
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"install -d -o 65532 -g 65532 {mount}" in dockerfile


def test_a_state_file_set_in_the_config_is_kept() -> None:
    values = {**SCENARIOS["defaults"][1], "config": {"scan": {"state_file": "/var/lib/gitlab-activity-exporter/s.db"}}}
    assert rendered_config(render(values))["scan"]["state_file"] == "/var/lib/gitlab-activity-exporter/s.db"


def test_token_and_teams_files_come_from_extra_volumes(tmp_path: Path) -> None:
    manifests = render(ci_values("persistence"))
    spec = workload(manifests)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["token"]["secret"]["secretName"] == "gitlab-token"
    assert volumes["teams"]["configMap"]["name"] == "gitlab-teams"
    mounts = {m["mountPath"]: m["name"] for m in container(manifests)["volumeMounts"]}
    config = rendered_config(manifests)
    assert mounts[str(Path(config["gitlab"]["token_file"]).parent)] == "token"
    assert mounts[str(Path(config["teams_file"]).parent)] == "teams"
    # the token is read from the file: no GITLAB_TOKEN from a Secret (it would win) and
    # no Secret the chart would have to be given a token for
    assert "GITLAB_TOKEN" not in {e["name"] for e in container(manifests).get("env") or []}
    assert not by_kind(manifests, "Secret")


# --- the configuration and the values schema ------------------------------------------------


def test_the_values_schema_config_part_is_the_exporters_configuration_model() -> None:
    path = CHART / "values.schema.json"
    assert chart_schema.main(["--check", "--file", str(path)]) == 0, "run python -m exporter.chart_schema"


def test_the_drift_check_notices_a_changed_model(tmp_path: Path) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    del schema["definitions"]["ScanSettings"]["properties"]["state_file"]
    stale = tmp_path / "values.schema.json"
    stale.write_text(chart_schema.dumps(schema))
    assert chart_schema.main(["--check", "--file", str(stale)]) == 1


@pytest.mark.parametrize(
    "config",
    [
        {"gitlab": {"endpoint_limits": "gitlab.com"}},
        {"gitlab": {"endpoint_limits": {"/users/:id": {"requests": 300, "period_seconds": 600}}}},
        {"gitlab": {"max_response_bytes": 104857600}},
        {"score": {"weights": {"commits": 2, "closed_issues": 0.5}}},
        {"scan": {"overlap_seconds": 60, "discovery_interval_seconds": 600}},
    ],
    ids=["gitlab.com-limits", "route-limits", "max-response-bytes", "score-weights", "scan-key"],
)
def test_documented_settings_pass_the_values_schema(config: dict[str, Any]) -> None:
    manifests = render({**SCENARIOS["defaults"][1], "config": config})
    rendered = rendered_config(manifests)
    for key, value in config.items():
        for inner, setting in value.items():
            assert rendered[key][inner] == setting


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"scan": {"interval_second": 60}}}, "interval_second"),
        ({"config": {"scan": {"lookback_days": "thirty"}}}, "lookback_days"),
        ({"config": {"gitlab": {"token": "glpat-x"}}}, "token"),
        ({"config": {"gitlab": {"url": "gitlab.example.com"}}}, "url"),
        ({"config": {"teams": [{"name": "a", "member": ["x"]}]}}, "member"),
        ({"shardng": {"enabled": True}}, "shardng"),
        ({"sharding": {"replicas": 0}}, "replicas"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"serviceMonitor": {"interval": "often"}}, "interval"),
        ({"persistence": {"size": "lots"}}, "size"),
    ],
)
def test_helm_refuses_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render({**SCENARIOS["defaults"][1], **values})


def test_install_without_an_image_repository_says_how_to_get_one() -> None:
    with pytest.raises(RenderError, match=r"image\.repository.*docs/deploy\.md"):
        render({"gitlab": TOKEN})


def test_install_without_a_token_says_where_to_put_it() -> None:
    with pytest.raises(RenderError, match="gitlab.token"):
        render({"image": IMAGE})


def test_the_rendered_config_is_one_the_exporter_accepts(
    scenario: tuple[str, dict[str, Any], list[Manifest]], tmp_path: Path
) -> None:
    _, _, manifests = scenario
    document = rendered_config(manifests)
    # files the pod would mount, made here
    if document.get("teams_file"):
        (tmp_path / "teams.json").write_text(json.dumps({"teams": [{"team_name": "t", "members": [{"username": "a"}]}]}))
        document["teams_file"] = str(tmp_path / "teams.json")
    env = {"GITLAB_TOKEN": "from-the-secret"}
    if document["gitlab"].get("token_file"):
        (tmp_path / "token").write_text("from-a-file\n")
        document["gitlab"]["token_file"] = str(tmp_path / "token")
        env = {}
    config = parse_config(document, env=env)
    assert config.token in ("from-the-secret", "from-a-file")
    assert config.state_file is not None


# --- the pod ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "sharded"])
def test_container_args_are_flags_the_exporter_takes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(SCENARIOS[name][1])
    argv = container(manifests)["args"]
    assert argv[0] == "serve"
    args = _build_parser().parse_args(argv)  # exits on an unknown flag
    assert args.config_file == "/etc/gitlab-activity-exporter/config.yml"
    assert rendered_config(manifests)
    monkeypatch.setenv("HOSTNAME", f"{workload(manifests)['metadata']['name']}-2")
    shard = shard_from_args(args)
    assert (shard.index, shard.count) == ((2, 3) if name == "sharded" else (0, 1))


def test_restricted_security_and_probes_by_default() -> None:
    manifests = render(SCENARIOS["defaults"][1])
    pod = workload(manifests)["spec"]["template"]["spec"]
    box = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert box["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert box["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert box["resources"]["requests"] and box["resources"]["limits"]["memory"]
    assert pod["automountServiceAccountToken"] is False


def test_notes_name_the_job_when_there_is_no_service_monitor() -> None:
    notes = render_notes({**SCENARIOS["defaults"][1], "serviceMonitor": {"jobName": "gitlab-x"}})
    assert '"gitlab-x"' in notes


# --- the embedded files are the tested originals --------------------------------------------


def test_embedded_rules_file_is_the_original() -> None:
    original = ROOT / "deploy" / "prometheus" / "gitlab-activity.rules.yml"
    assert (CHART / "files" / "gitlab-activity.rules.yml").read_bytes() == original.read_bytes()


def test_embedded_dashboards_are_the_originals() -> None:
    originals = {p.name: p.read_bytes() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    embedded = {p.name: p.read_bytes() for p in (CHART / "files" / "dashboards").glob("*")}
    assert originals and embedded == originals


def test_rendered_rules_and_dashboards_are_those_files() -> None:
    manifests = render(SCENARIOS["operator"][1])
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "gitlab-activity.rules.yml").read_text())
    assert one(manifests, "PrometheusRule")["spec"] == rules  # the default job name: unchanged
    (dashboards,) = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboards")]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    for path in (ROOT / "grafana" / "dashboards").glob("*.json"):
        assert json.loads(dashboards["data"][path.name]) == json.loads(path.read_text())


def test_every_value_a_template_reads_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for template in sorted((CHART / "templates").glob("*")):
        for ref in re.findall(r"\.Values((?:\.\w+)+)", template.read_text()):
            node: Any = values
            for key in ref.strip(".").split("."):
                if key in ("token_file",):  # optional config keys read with a default
                    break
                assert isinstance(node, dict) and key in node, f"{template.name}: .Values{ref}"
                node = node[key]


def test_chart_version_follows_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "gitlab-activity-exporter"
    assert chart["appVersion"] == project["version"]

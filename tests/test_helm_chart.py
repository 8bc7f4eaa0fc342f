"""The Helm chart without a helm binary: values against the schema, the embedded rules
and dashboards are the tested originals, the templates refer to values and flags that
exist, the defaults are the restricted security profile."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from exporter.cli import _build_parser, shard_from_args
from exporter.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "gitlab-activity-exporter"
TEMPLATES = sorted((CHART / "templates").glob("*"))
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def merged(override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over values.yaml: maps merge, null deletes a key,
    everything else replaces."""

    def merge(base: Any, top: Any) -> Any:
        if isinstance(base, dict) and isinstance(top, dict):
            out = dict(base)
            for key, value in top.items():
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = merge(base.get(key), value)
            return out
        return copy.deepcopy(top)

    result: dict[str, Any] = merge(defaults(), override)
    return result


def errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


# --- the embedded files are the tested originals ------------------------------------------


def test_embedded_rules_file_is_the_original() -> None:
    original = ROOT / "deploy" / "prometheus" / "gitlab-activity.rules.yml"
    assert (CHART / "files" / "gitlab-activity.rules.yml").read_bytes() == original.read_bytes()


def test_embedded_dashboards_are_the_originals() -> None:
    originals = {p.name: p.read_bytes() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    embedded = {p.name: p.read_bytes() for p in (CHART / "files" / "dashboards").glob("*")}
    assert originals and embedded == originals


def test_templates_embed_those_files() -> None:
    rule = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "files/gitlab-activity.rules.yml"' in rule
    # the job selector the template rewrites is really in the rules file
    replaced = re.search(r'replace "(.+?)" ', rule)
    assert replaced is not None
    needle = replaced.group(1).replace('\\"', '"')
    assert needle in (ROOT / "deploy" / "prometheus" / "gitlab-activity.rules.yml").read_text()
    dashboards = (CHART / "templates" / "dashboards-configmap.yaml").read_text()
    assert '.Files.Glob "files/dashboards/*.json"' in dashboards
    assert "toYaml .Values.dashboards.labels" in dashboards
    assert defaults()["dashboards"]["labels"] == {"grafana_dashboard": "1"}


# --- values and schema -------------------------------------------------------------------


def test_schema_is_valid_draft7() -> None:
    jsonschema.Draft7Validator.check_schema(schema())


def test_default_values_match_the_schema() -> None:
    assert errors(defaults()) == []


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_match_the_schema(path: Path) -> None:
    assert errors(merged(yaml.safe_load(path.read_text()))) == []


def test_ci_values_cover_sharding_existing_secret_and_the_operator() -> None:
    every = [merged(yaml.safe_load(p.read_text())) for p in CI_VALUES]
    assert any(v["sharding"]["enabled"] for v in every)
    assert any(v["gitlab"]["existingSecret"] for v in every)
    assert any(v["gitlab"]["token"] for v in every)
    for feature in ("serviceMonitor", "prometheusRule", "dashboards"):
        assert any(v[feature]["enabled"] for v in every), feature


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"sharding": {"replicas": 0}}, "sharding.replicas"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "securityContext.readOnlyRootFilesystem"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext.runAsNonRoot"),
        ({"shardng": {"enabled": True}}, ""),
        ({"config": {"gitlab": {"token": "glpat-x"}}}, "config.gitlab.token"),
        ({"config": {"gitlab": {"url": "gitlab.example.com"}}}, "config.gitlab.url"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"serviceMonitor": {"interval": "often"}}, "serviceMonitor.interval"),
        ({"dashboards": {"labels": {"grafana_dashboard": None}}}, "dashboards.labels"),
    ],
)
def test_schema_rejects_bad_values(override: dict[str, Any], where: str) -> None:
    found = errors(merged(override))
    assert found and any(e.startswith(where + ":") or (not where and "shardng" in e) for e in found), found


@pytest.mark.parametrize("path", [CHART / "values.yaml", *CI_VALUES], ids=lambda p: p.name)
def test_embedded_config_is_a_valid_exporter_config(path: Path) -> None:
    values = merged(yaml.safe_load(path.read_text()) or {})
    config = parse_config(values["config"], env={"GITLAB_TOKEN": "from-the-secret"})
    assert config.token == "from-the-secret"


# --- templates ---------------------------------------------------------------------------


def test_every_value_a_template_reads_exists() -> None:
    values = defaults()
    for template in TEMPLATES:
        for ref in re.findall(r"\.Values((?:\.\w+)+)", template.read_text()):
            node: Any = values
            for key in ref.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{template.name}: .Values{ref}"
                node = node[key]


def test_template_blocks_are_balanced() -> None:
    for template in TEMPLATES:
        text = template.read_text()
        opened = len(re.findall(r"\{\{-?\s*(?:if|with|range|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, template.name


def container_args(sharded: bool) -> list[str]:
    """The container's args from the pod template, values filled in."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    block = helpers.split("args:", 1)[1].split("env:", 1)[0]
    args: list[str] = []
    skipping = False
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("{{- if .Values.sharding.enabled"):
            skipping = not sharded
        elif line.startswith("{{- end"):
            skipping = False
        elif line.startswith("- ") and not skipping:
            args.append(line[2:])
    fills = {
        "{{ .Values.service.port }}": "9842",
        "{{ .Values.logLevel }}": "info",
        "{{ .Values.logFormat }}": "json",
        "{{ .Values.sharding.replicas }}": "3",
    }
    filled = []
    for arg in args:
        for template, value in fills.items():
            arg = arg.replace(template, value)
        if "{{" not in arg:
            filled.append(arg)
    return filled


@pytest.mark.parametrize("sharded", [False, True])
def test_container_args_are_flags_the_exporter_takes(sharded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = container_args(sharded)
    assert argv[0] == "serve"
    args = _build_parser().parse_args(argv)  # exits on an unknown flag
    assert args.config_file == "/etc/gitlab-activity-exporter/config.yml"
    monkeypatch.setenv("HOSTNAME", "release-gitlab-activity-exporter-2")
    shard = shard_from_args(args)
    assert (shard.index, shard.count) == ((2, 3) if sharded else (0, 1))


def test_restricted_security_and_probes_by_default() -> None:
    values = defaults()
    pod, container = values["podSecurityContext"], values["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert values["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert values["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert values["resources"]["requests"]
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    for key in ("podSecurityContext", "securityContext", "livenessProbe", "readinessProbe", "resources"):
        assert f"toYaml .Values.{key}" in helpers, key


def test_sharding_switches_to_a_statefulset() -> None:
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    statefulset = (CHART / "templates" / "statefulset.yaml").read_text()
    assert deployment.startswith("{{- if not .Values.sharding.enabled }}")
    assert statefulset.startswith("{{- if .Values.sharding.enabled }}")
    assert "replicas: {{ .Values.sharding.replicas }}" in statefulset


def test_chart_version_follows_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "gitlab-activity-exporter"
    assert chart["appVersion"] == project["version"]

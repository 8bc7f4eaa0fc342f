"""The Helm chart rendered by real Helm, and its manifests checked as a cluster would.

``render`` runs Helm v4's client-only dry-run install (the code path of ``helm template``,
values schema included) through the ``helm-python-sdk`` library. ``check_manifest``
validates one object against Kubernetes' own schemas (``kubernetes-validate``, strict:
unknown fields are errors) or, for the Prometheus Operator's kinds, against the CRDs'
OpenAPI schemas in ``tests/schemas/prometheus-operator/``, plus the name rules the API
server and the controllers enforce. ``operator_targets`` is what the Prometheus
Operator's ServiceMonitor discovery makes of the rendered objects: one target per
(service port, pod) it selects, with the labels the Operator gives each target.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "gitlab-activity-exporter"
CRDS = Path(__file__).resolve().parent / "schemas" / "prometheus-operator"
NAMESPACE = "monitoring"
# the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
KUBE_VERSIONS = ("1.25", "1.37")

Manifest = dict[str, Any]


def require_module(name: str) -> ModuleType:
    """Import ``name``; skip when it is missing, but fail when ``CI`` is set."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"Python package {name} is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)


class RenderError(Exception):
    """Helm refused the values or a template failed; the message is Helm's."""


def render(
    values: dict[str, Any] | None = None, *, release: str = "gae", namespace: str = NAMESPACE
) -> list[Manifest]:
    """The chart's objects as ``helm install --dry-run=client`` renders them."""
    helm = require_module("helm_python")
    config = helm.Config(storage_driver="memory", namespace=namespace)
    try:
        try:
            result = config.install(
                str(CHART), release, values or {}, dry_run="client", namespace=namespace
            )
        except helm.HelmError as exc:
            raise RenderError(str(exc)) from None
    finally:
        config.close()
    return [doc for doc in yaml.safe_load_all(result["manifest"]) if doc]


def render_notes(values: dict[str, Any] | None = None, *, release: str = "gae") -> str:
    helm = require_module("helm_python")
    config = helm.Config(storage_driver="memory", namespace=NAMESPACE)
    try:
        result = config.install(str(CHART), release, values or {}, dry_run="client")
    finally:
        config.close()
    return str(result["notes"])


def lint(values: dict[str, Any]) -> list[str]:
    """``helm lint --strict`` of the chart with ``values``: its warnings and errors."""
    helm = require_module("helm_python")
    report = helm.lint(str(CHART), values, strict=True)
    found = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return found + [str(e) for e in report["errors"]]


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


# --- schemas -----------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 schema of a CRD as the API server's strict field validation reads it:
    an object that declares its properties accepts no others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator of the CRD's served schema."""
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            # metadata is the API server's ObjectMeta, checked by the name rules below
            schema["properties"]["metadata"] = {"type": "object"}
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# A StatefulSet's pods carry the label controller-revision-hash=<name>-<hash of up to
# 10 characters>: a name over 52 characters makes that label invalid and no pod is made.
STATEFULSET_NAME_MAX = 52


def _subdomain_ok(name: str) -> bool:
    return len(name) <= 253 and all(DNS_LABEL.fullmatch(p) for p in name.split("."))


def name_problems(manifest: Manifest) -> list[str]:
    """What the API server or a controller would refuse about the object's names."""
    kind, meta = manifest["kind"], manifest["metadata"]
    name = meta["name"]
    problems: list[str] = []
    if kind == "Service":
        if len(name) > 63 or not DNS_1035_LABEL.fullmatch(name):
            problems.append(f"Service name {name!r} ({len(name)}) is not a DNS-1035 label")
    elif not _subdomain_ok(name):
        problems.append(f"{kind} name {name!r} is not a DNS subdomain")
    if kind == "StatefulSet":
        if len(name) > STATEFULSET_NAME_MAX:
            problems.append(f"StatefulSet name {name!r} has {len(name)} > 52 characters")
        for claim in manifest["spec"].get("volumeClaimTemplates", []):
            replicas = manifest["spec"].get("replicas", 1)
            pvc = f"{claim['metadata']['name']}-{name}-{replicas - 1}"
            if not _subdomain_ok(pvc):
                problems.append(f"claim name {pvc!r} is not a DNS subdomain")
    labels = dict(meta.get("labels") or {})
    template = manifest.get("spec", {}).get("template", {}).get("metadata", {})
    labels.update(template.get("labels") or {})
    for key, value in labels.items():
        if len(str(value)) > 63 or not LABEL_VALUE.fullmatch(str(value)):
            problems.append(f"label {key}={value!r} is not a valid label value")
    return problems


def check_manifest(manifest: Manifest) -> list[str]:
    """Every problem a cluster would report about ``manifest`` (empty: it would apply)."""
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    problems = name_problems(manifest)
    if key[0].startswith("monitoring.coreos.com/"):
        validator = crd_validators().get(key)
        if validator is None:
            return [*problems, f"no CRD schema for {key}"]
        problems += [
            f"{key[1]} {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(manifest)
        ]
        return problems
    kubernetes_validate = require_module("kubernetes_validate")
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            problems.append(f"{key[1]} (Kubernetes {version}) {where}: {exc.message}")
    return problems


# --- what the Prometheus Operator scrapes ------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    labels: dict[str, str]
    ports: dict[str, int]  # container port name -> number
    container: str


def pods(manifests: list[Manifest]) -> list[Pod]:
    """The pods the workload objects make (a Deployment's pod gets a made-up suffix)."""
    made: list[Pod] = []
    for workload in manifests:
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = workload["spec"]
        template = spec["template"]
        container = template["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        labels = dict(template["metadata"]["labels"])
        name = workload["metadata"]["name"]
        for ordinal in range(spec.get("replicas", 1)):
            pod = f"{name}-{ordinal}" if workload["kind"] == "StatefulSet" else f"{name}-5d9c-x{ordinal}"
            made.append(Pod(pod, labels, ports, container["name"]))
    return made


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def operator_targets(manifests: list[Manifest]) -> list[dict[str, str]]:
    """The scrape targets a ServiceMonitor of ``manifests`` gives, each as the label set
    the Operator's generated scrape config attaches (namespace, service, pod, container,
    endpoint, job, instance)."""
    targets: list[dict[str, str]] = []
    made = pods(manifests)
    for monitor in by_kind(manifests, "ServiceMonitor"):
        spec = monitor["spec"]
        names = spec.get("namespaceSelector", {}).get("matchNames") or [monitor["metadata"]["namespace"]]
        for service in by_kind(manifests, "Service"):
            meta = service["metadata"]
            if meta["namespace"] not in names or not selects(spec["selector"], meta.get("labels") or {}):
                continue
            for endpoint in spec["endpoints"]:
                for port in service["spec"]["ports"]:
                    if port.get("name") != endpoint["port"]:
                        continue
                    for pod in made:
                        if not selects({"matchLabels": service["spec"]["selector"]}, pod.labels):
                            continue
                        target_port = port.get("targetPort", port["port"])
                        number = pod.ports.get(target_port, target_port)
                        labels = {
                            "namespace": meta["namespace"],
                            "service": meta["name"],
                            "pod": pod.name,
                            "container": pod.container,
                            "endpoint": endpoint["port"],
                            "instance": f"{pod.name}:{number}",
                            "job": meta["name"],
                        }
                        for relabel in endpoint.get("relabelings") or []:
                            if relabel.get("action", "replace") == "replace" and "sourceLabels" not in relabel:
                                labels[relabel["targetLabel"]] = relabel["replacement"]
                        targets.append(labels)
    return targets

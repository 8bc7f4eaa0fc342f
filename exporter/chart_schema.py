"""The Helm chart's values schema for ``config``, generated from the configuration model.

``helm/gitlab-activity-exporter/values.schema.json`` describes every chart value; its
``config`` property (the exporter's configuration file) and the ``definitions`` it
refers to come from :class:`exporter.config.FileSettings`, so ``helm install`` rejects
exactly the keys and types the exporter would reject at start. Two chart rules are added: the token
never goes into ``config`` (it comes from a Secret), and ``gitlab.url`` is an http(s) URL.

    python -m exporter.chart_schema            # rewrite the schema file's generated part
    python -m exporter.chart_schema --check    # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from exporter.config import FileSettings

CHART = Path(__file__).resolve().parent.parent / "helm" / "gitlab-activity-exporter"
SCHEMA_FILE = CHART / "values.schema.json"
CONFIG_DESCRIPTION = (
    "The exporter's configuration file (generated from its configuration model by "
    "python -m exporter.chart_schema); the token is not here: it comes from "
    "gitlab.token or gitlab.existingSecret."
)


def _without_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ``config`` property's schema, the ``definitions`` it refers to)."""
    # draft-07 "definitions", which every Helm release's schema validator resolves
    model = FileSettings.model_json_schema(ref_template="#/definitions/{model}")
    generated: dict[str, Any] = _without_titles(model)
    definitions: dict[str, Any] = generated.pop("$defs")
    gitlab = definitions["GitLabSettings"]["properties"]
    gitlab["token"] = {
        "not": {},
        "description": "Not in the chart's values: set gitlab.token or gitlab.existingSecret.",
    }
    gitlab["url"] = {**gitlab["url"], "pattern": "^https?://"}
    generated["description"] = CONFIG_DESCRIPTION
    return generated, definitions


def updated(values_schema: dict[str, Any]) -> dict[str, Any]:
    """``values_schema`` with its generated part replaced by the model's schema now."""
    config, definitions = config_schema()
    out = dict(values_schema)
    out["properties"] = {**values_schema["properties"], "config": config}
    out["definitions"] = definitions
    return out


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.chart_schema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    parser.add_argument("--file", type=Path, default=SCHEMA_FILE, help="the values.schema.json")
    args = parser.parse_args(argv)
    text = args.file.read_text(encoding="utf-8")
    wanted = dumps(updated(json.loads(text)))
    if text == wanted:
        return 0
    if args.check:
        print(
            f"{args.file}: the config schema differs from the configuration model; "
            "run python -m exporter.chart_schema",
            file=sys.stderr,
        )
        return 1
    args.file.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

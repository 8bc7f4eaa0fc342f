"""The previous tool's teams file through ``check-config``: loads as is; broken ones exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.config import load_config
from tests.test_cli import run, write_config

# As the previous tool wrote it: user_id on some members, names with spaces and accents,
# a project per team, a member in two teams, non-ASCII written as is.
PREVIOUS_TOOL_FILE = """{
  "teams": [
    {
      "team_name": "Platform Core",
      "project_name": "Billing Service",
      "members": [
        {"name": "Ana María López", "username": "ana.lopez", "user_id": 1042},
        {"name": "Jürgen Groß", "username": "jgross", "user_id": 77},
        {"name": "Priya R", "username": "priya_r"}
      ]
    },
    {
      "team_name": "Équipe Données",
      "project_name": "Data Lake ☁",
      "members": [
        {"name": "Zoë Ø", "username": "zoe-o", "user_id": 5},
        {"name": "Ana María López", "username": "ana.lopez", "user_id": 1042}
      ]
    },
    {
      "team_name": "Mobile",
      "project_name": "",
      "members": [{"name": "Sam Lee", "username": "samlee"}]
    }
  ]
}
"""


def config_with_teams_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "teams.json").write_text(text, encoding="utf-8")
    document: dict[str, Any] = {
        "gitlab": {"url": "https://gitlab.example.com", "token": "t"},
        "teams_file": "teams.json",
    }
    return write_config(tmp_path, document)


async def test_previous_tools_file_loads_unchanged(tmp_path: Path) -> None:
    path = config_with_teams_file(tmp_path, PREVIOUS_TOOL_FILE)
    code, out, err = await run("check-config", "--config.file", str(path))
    assert code == 0, err
    assert out.strip() == "config ok: 3 teams, 5 users listed"
    config = load_config(path, env={})
    assert [(t.name, t.members, t.project) for t in config.teams] == [
        ("Platform Core", ("ana.lopez", "jgross", "priya_r"), "Billing Service"),
        ("Équipe Données", ("zoe-o", "ana.lopez"), "Data Lake ☁"),
        ("Mobile", ("samlee",), ""),
    ]


def _broken(mutate: Any) -> str:
    document = json.loads(PREVIOUS_TOOL_FILE)
    mutate(document)
    return json.dumps(document, ensure_ascii=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _broken(lambda d: d["teams"][1]["members"][1].pop("username")),
            "teams_file: team 2 ('Équipe Données'), member 2: username is missing or empty",
        ),
        (
            _broken(lambda d: d["teams"][0]["members"][2].update(user_id="17")),
            "teams_file: team 1 ('Platform Core'), member 3: user_id must be an integer",
        ),
        (
            _broken(lambda d: d["teams"][2]["members"].append("samlee")),
            "teams_file: team 3 ('Mobile'), member 2: expected an object",
        ),
        (
            _broken(lambda d: d["teams"][1].update(team_name=" ")),
            "teams_file: team 2: team_name is missing or empty",
        ),
        (
            _broken(lambda d: d["teams"][0].update(project_name=7)),
            "teams_file: team 1 ('Platform Core'): project_name must be a string",
        ),
        (PREVIOUS_TOOL_FILE[:-10], "teams.json' is not valid JSON (line 2"),
    ],
    ids=["no-username", "user-id-string", "member-not-object", "blank-team", "project", "json"],
)
async def test_broken_file_exits_2_naming_team_and_member(
    tmp_path: Path, text: str, message: str
) -> None:
    path = config_with_teams_file(tmp_path, text)
    code, out, err = await run("check-config", "--config.file", str(path))
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err

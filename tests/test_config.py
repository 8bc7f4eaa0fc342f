"""Configuration: defaults, token sources, teams file, and one clear error per bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import DEFAULT_PERIODS, ConfigError, load_config, parse_config
from exporter.score import ScoreWeights


def base() -> dict[str, Any]:
    return {
        "gitlab": {"url": "https://gitlab.example.com/", "token": "file-token"},
        "teams": [{"name": "backend", "members": ["alice", "Bob"]}],
    }


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def test_defaults() -> None:
    config = parse_config(base(), env={})
    assert config.gitlab.url == "https://gitlab.example.com"
    assert config.gitlab.host == "gitlab.example.com"
    assert config.gitlab.requests_per_second == 10
    assert config.scan.interval_seconds == 300
    assert config.scan.lookback_days == 30
    assert config.scan.timezone == "UTC"
    assert config.scan.periods == DEFAULT_PERIODS
    assert config.period_table.names == ("night", "morning", "afternoon", "evening")
    assert config.static_usernames == ("alice", "Bob")


def test_score_weights_default_to_the_previous_tool_and_can_be_set() -> None:
    assert parse_config(base(), env={}).score_weights == ScoreWeights(
        commits=1, merged_merge_requests=5, merge_requests=2, closed_issues=3
    )
    doc = base()
    doc["score"] = {"weights": {"commits": 0.5, "closed_issues": 0}}
    assert parse_config(doc, env={}).score_weights == ScoreWeights(
        commits=0.5, merged_merge_requests=5, merge_requests=2, closed_issues=0
    )


def test_team_project_key() -> None:
    doc = base()
    doc["teams"][0]["project"] = "Billing"
    assert parse_config(doc, env={}).teams[0].project == "Billing"


def test_environment_token_wins_over_the_files_token() -> None:
    assert parse_config(base(), env={"GITLAB_TOKEN": "env-token"}).token == "env-token"
    assert parse_config(base(), env={}).token == "file-token"


def test_token_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-from-file\n")
    doc = base()
    doc["gitlab"] = {"url": "https://gitlab.example.com", "token_file": "token"}
    assert load_config(write(tmp_path, doc), env={}).token == "secret-from-file"


def test_fractional_pace_and_commit_zone() -> None:
    doc = base()
    doc["gitlab"]["requests_per_second"] = 0.5
    doc["scan"] = {"timezone": "commit", "periods": {"morning": "09:00-12:30"}}
    config = parse_config(doc, env={})
    assert config.gitlab.requests_per_second == 0.5
    assert config.period_table.names == ("morning", "other")


def test_users_extra_emails_and_standalone_users() -> None:
    doc = base()
    doc["users"] = [{"username": "Carol", "emails": ["carol@old.example"]}]
    config = parse_config(doc, env={})
    assert config.extra_emails == {"carol": ("carol@old.example",)}
    assert config.static_usernames == ("alice", "Bob", "Carol")


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("surprise", 1, "surprise: unknown key"),
        ("gitlab.tokn", "x", "gitlab.tokn: unknown key"),
        ("gitlab.max_concurrency", "many", "gitlab.max_concurrency: Input should be a valid integer"),
        ("gitlab.requests_per_second", 0, "gitlab.requests_per_second: Input should be greater than or equal to 0.01"),
        ("gitlab.url", "gitlab.example.com", "gitlab.url: 'gitlab.example.com' is not an http(s) URL"),
        ("gitlab.commit_email_hostname", "https://x.example", "gitlab.commit_email_hostname: 'https://x.example' is not a host name"),
        ("gitlab.commit_email_hostname", "a@b.example", "gitlab.commit_email_hostname: 'a@b.example' is not a host name"),
        ("scan.timezone", "Mars/Base", "scan.timezone: unknown time zone 'Mars/Base'"),
        ("scan.periods", {"morning": "9am-noon"}, "scan.periods: '9am-noon' is not a window"),
        ("scan.periods", {"a": "09:00-13:00", "b": "12:00-14:00"}, "scan.periods: periods 'a' and 'b' overlap"),
        ("scan.periods", {"other": "09:00-10:00"}, "reserved"),
        ("scan.lookback_days", -1, "scan.lookback_days: Input should be greater than 0"),
        ("teams", [{"name": "empty"}], "teams.0: team 'empty' needs members, a group, or both"),
        ("teams", [{"members": ["a"]}], "teams.0.name: required key is missing"),
        ("score.weights.commits", -1, "score.weights.commits: Input should be greater than or equal to 0"),
        ("score.weights.merged_merge_requests", "lots", "score.weights.merged_merge_requests: Input should be a valid number"),
        ("score.weights.issues", 1, "score.weights.issues: unknown key"),
        ("score.weighs", {}, "score.weighs: unknown key"),
        ("score.weights.closed_issues", float("inf"), "score.weights.closed_issues: Input should be a finite number"),
    ],
)
def test_bad_values_name_the_key(key: str, value: Any, message: str) -> None:
    doc = base()
    _set(doc, key, value)
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key",
    [
        "scan.interval_seconds",
        "scan.discovery_interval_seconds",
        "scan.overlap_seconds",
        "gitlab.timeout_seconds",
        "gitlab.requests_per_second",
        "score.weights.commits",
    ],
)
@pytest.mark.parametrize("number", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path: Path, key: str, number: str) -> None:
    name = key.rsplit(".", 1)[1]
    doc = base()
    _set(doc, key, 1)
    text = yaml.safe_dump(doc).replace(f"{name}: 1\n", f"{name}: {number}\n")
    assert number in text
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert str(info.value).startswith(f"{key}: ")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gitlab.requests_per_second", 1e-9, "greater than or equal to 0.01"),
        ("gitlab.timeout_seconds", 1e12, "less than or equal to 3600"),
        ("scan.interval_seconds", 1e300, "less than or equal to 604800"),
        ("scan.discovery_interval_seconds", 1e300, "less than or equal to"),
        ("scan.overlap_seconds", 1e300, "less than or equal to"),
    ],
)
def test_numbers_that_cannot_work_are_refused_naming_the_key(key: str, value: Any, message: str) -> None:
    doc = base()
    _set(doc, key, value)
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert str(info.value).startswith(key)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "content",
    ["\ufeffsecret-from-file\n", "\ufeff  secret-from-file \r\n\r\n", "\tsecret-from-file"],
    ids=["bom", "bom-crlf-spaces", "tab"],
)
def test_token_file_bom_and_whitespace_are_stripped(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_bytes(content.encode("utf-8"))
    doc = base()
    doc["gitlab"] = {"url": "https://gitlab.example.com", "token_file": "token"}
    assert load_config(write(tmp_path, doc), env={}).token == "secret-from-file"


@pytest.mark.parametrize("content", ["glpat-aaa\nglpat-bbb", "glpat-aaa glpat-bbb", "glpat-caf\u00e9", "\ufeff\n"])
def test_a_token_that_cannot_be_sent_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_bytes(content.encode("utf-8"))
    doc = base()
    doc["gitlab"] = {"url": "https://gitlab.example.com", "token_file": "token"}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, doc), env={})
    assert str(info.value).startswith("gitlab.token_file: ")
    assert not any(part in str(info.value) for part in content.split())  # never echoed


def test_missing_token() -> None:
    doc = base()
    del doc["gitlab"]["token"]
    with pytest.raises(ConfigError, match="gitlab.token: no token; set GITLAB_TOKEN"):
        parse_config(doc, env={})


def test_missing_url() -> None:
    doc = base()
    del doc["gitlab"]["url"]
    with pytest.raises(ConfigError, match=r"^gitlab.url: required key is missing$"):
        parse_config(doc, env={})


def test_nobody_to_scan() -> None:
    doc = base()
    del doc["teams"]
    with pytest.raises(ConfigError, match="nobody to scan"):
        parse_config(doc, env={})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.file: cannot read"):
        load_config(tmp_path / "missing.yml", env={})
    with pytest.raises(ConfigError, match=r"is not valid YAML \(line \d+\): expected"):
        load_config(write(tmp_path, "gitlab:\n  url: [unclosed\n"), env={})
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a list\n"), env={})


def test_token_never_in_errors(tmp_path: Path) -> None:
    doc = base()
    doc["gitlab"]["token"] = "glpat-supersecret"
    doc["gitlab"]["max_retries"] = "glpat-supersecret"
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert "glpat-supersecret" not in str(info.value)


# --- the previous tool's teams file ---------------------------------------------------

LEGACY = {
    "teams": [
        {
            "team_name": "Alpha",
            "project_name": "Billing",
            "members": [
                {"name": "Alice A", "username": "alice", "user_id": 11},
                {"name": "Bob B", "username": "bob"},
            ],
        },
        {"team_name": "Beta", "project_name": "Search", "members": [{"name": "C", "username": "carol"}]},
    ]
}


def _with_teams_file(tmp_path: Path, teams: Any) -> Path:
    (tmp_path / "teams.json").write_text(json.dumps(teams) if not isinstance(teams, str) else teams)
    doc = base()
    del doc["teams"]
    doc["teams_file"] = "teams.json"
    return write(tmp_path, doc)


def test_legacy_teams_file_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(_with_teams_file(tmp_path, LEGACY), env={})
    assert [(t.name, t.members, t.project) for t in config.teams] == [
        ("Alpha", ("alice", "bob"), "Billing"),
        ("Beta", ("carol",), "Search"),
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["teams"][1]["members"][0].pop("username"), "team 2 ('Beta'), member 1: username is missing"),
        (lambda d: d["teams"][0]["members"][1].update(user_id="x"), "team 1 ('Alpha'), member 2: user_id must be an integer"),
        (lambda d: d["teams"][0].pop("team_name"), "team 1: team_name is missing"),
        (lambda d: d["teams"][1].update(members={}), "team 2 ('Beta'): members must be a list"),
        (lambda d: d.pop("teams"), 'expected an object with a "teams" list'),
    ],
)
def test_broken_teams_file_names_team_and_member(tmp_path: Path, mutate: Any, message: str) -> None:
    document = json.loads(json.dumps(LEGACY))
    mutate(document)
    with pytest.raises(ConfigError) as info:
        load_config(_with_teams_file(tmp_path, document), env={})
    assert message in str(info.value)


def test_teams_file_not_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"teams_file: .* is not valid JSON \(line 1"):
        load_config(_with_teams_file(tmp_path, "{nope"), env={})


def test_commit_email_hostname_is_optional_and_normalised() -> None:
    assert parse_config(base(), env={}).gitlab.commit_email_hostname is None
    doc = base()
    doc["gitlab"]["commit_email_hostname"] = " Users.Noreply.GitLab.Example.com "
    config = parse_config(doc, env={})
    assert config.gitlab.commit_email_hostname == "users.noreply.gitlab.example.com"


def test_reload_takes_teams_users_periods_and_weights_and_names_the_rest() -> None:
    from exporter.config import reloaded

    running = parse_config(base(), env={})
    doc = base()
    doc["teams"].append({"name": "platform", "members": ["carol"]})
    doc["users"] = [{"username": "dave", "emails": ["d@old.example"]}]
    doc["score"] = {"weights": {"commits": 3}}
    doc["scan"] = {"periods": {"day": "08:00-20:00"}, "lookback_days": 7}
    doc["gitlab"]["url"] = "https://elsewhere.example.com"
    doc["gitlab"]["token"] = "another-token"
    merged, waiting = reloaded(running, parse_config(doc, env={}))
    assert [t.name for t in merged.teams] == ["backend", "platform"]
    assert merged.standalone_users == ("dave",)
    assert merged.extra_emails == {"dave": ("d@old.example",)}
    assert merged.score_weights.commits == 3
    assert merged.period_table.names[0] == "day" and merged.scan.periods == {"day": "08:00-20:00"}
    # what the running connection and state depend on stays until a restart
    assert merged.gitlab.url == "https://gitlab.example.com" and merged.token == "file-token"
    assert merged.scan.lookback_days == 30
    assert waiting == ("gitlab.url", "gitlab.token", "scan.lookback_days")

"""A command line that explains itself: descriptions and defaults, "did you mean",
the demo on the loopback interface, and a configuration written for the simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
import yaml

from exporter.cli import COMMANDS, DEMO_LISTEN, _build_parser, main
from exporter.simulator.generate import generate_org
from tests.test_cli import free_port, run, start, stop


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = _build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_and_option_is_described_with_its_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = subparsers()[command]
    assert sub.description and len(sub.description) > 40
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help lines re-wrapped as one
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (command, action.option_strings)
        if action.default not in (None, False):
            assert f"default: {action.default}" in text or "default: $" in text, (
                command, action.option_strings,
            )


def test_scan_output_and_simulate_options_show_their_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("scan", "simulate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: table)", "(default: 127.0.0.1:8080)", "(default: 1)",
                  "(default: 20)", "(default: 60)", "(default: 0.0)"):
        assert shown in text, shown
    assert "prometheus: exactly what /metrics would serve" in text


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["scna", "--config.file", "c.yml"], "did you mean 'scan'?"),
        (["--log.level", "debug", "chek-config"], "did you mean 'check-config'?"),
        (["dmeo"], "did you mean 'demo'?"),
    ],
)
def test_unknown_command_exits_2_naming_the_closest(
    argv: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert suggestion in err and "unknown command" in err and len(err.splitlines()) == 1


def test_no_command_is_still_serve() -> None:
    args = _build_parser().parse_args(["serve", "--config.file", "c.yml"])
    assert args.command == "serve"
    from exporter.cli import _normalise_argv

    assert _normalise_argv(["--config.file", "c.yml"])[0] == "serve"
    assert _normalise_argv(["--shard.from-hostname", "--config.file", "c.yml"])[0] == "serve"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"scan": {"lookback_day": 3}}, "scan.lookback_day: unknown key; did you mean 'lookback_days'?"),
        ({"team": []}, "team: unknown key; did you mean 'teams'?"),
        ({"teams": [{"name": "a", "member": ["x"]}]}, "teams.0.member: unknown key; did you mean 'members'?"),
        ({"score": {"weights": {"commit": 2}}}, "did you mean 'commits'?"),
    ],
)
async def test_unknown_config_key_names_the_closest(
    tmp_path: Path, document: dict[str, object], message: str
) -> None:
    full = {"gitlab": {"url": "https://gitlab.example.com", "token": "x"},
            "users": [{"username": "a"}], **document}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(full))
    code, _, err = await run("check-config", "--config.file", str(path))
    assert code == 2 and message in err, err


def test_demo_listens_on_loopback_unless_told() -> None:
    demo = _build_parser().parse_args(["demo"])
    assert demo.listen == DEMO_LISTEN == "127.0.0.1:9842"
    serve = _build_parser().parse_args(["serve", "--config.file", "c.yml"])
    assert serve.listen == "0.0.0.0:9842"  # the daemon is scraped from elsewhere
    told = _build_parser().parse_args(["demo", "--web.listen-address", ":9842"])
    assert told.listen == ":9842"


async def test_simulate_writes_a_config_that_scans_its_organisation(tmp_path: Path) -> None:
    path = tmp_path / "sim.yml"
    port = free_port()
    proc = await start("simulate", "--listen", f"127.0.0.1:{port}", "--seed", "4",
                       "--users", "12", "--projects", "30", "--write-config", str(path))
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert f"configuration written to {path}" in line
        org = generate_org(4, users=12, projects=30)
        document = yaml.safe_load(path.read_text())
        assert {t["group"] for t in document["teams"]} == {g.full_path for g in org.groups.values()}
        assert {u["username"] for u in document["users"]} == {u.username for u in org.users.values()}
        code, out, err = await run("check-config", "--config.file", str(path))
        assert code == 0, err
        code, out, err = await run("scan", "--config.file", str(path), "--output", "json")
        assert code == 0, err
        result = json.loads(out)
        assert {t["team"] for t in result["teams"]} == {t["name"] for t in document["teams"]}
        assert result["scan"]["users_failed"] == 0
    finally:
        await stop(proc)

"""What an operator does by mistake, or on purpose, to a running exporter: real processes.

A state file shared by two exporters or pointing at another file; signals at any moment."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from tests.conftest import config_document
from tests.test_cli import free_port, run, samples, start, stop, wait_for, write_config


async def test_a_second_exporter_on_one_state_file_exits_2_naming_the_holder(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    state = tmp_path / "state.db"
    config = write_config(tmp_path, config_document(org, sim.url, state_file=str(state)))
    port = free_port()
    first = await start("serve", "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")
    try:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        for _ in range(100):  # the state is written just after the scan
            if state.exists():
                break
            await asyncio.sleep(0.1)
        before = state.read_bytes()
        requests = len(sim.log)
        for command in ("scan", "serve"):
            code, _, err = await run(
                command, "--config.file", str(config),
                *(["--web.listen-address", f"127.0.0.1:{free_port()}"] if command == "serve" else []),
            )
            assert code == 2, err
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1, err
            assert "in use by another exporter" in lines[0]
            assert re.search(rf"pid {first.pid}\b", lines[0]), lines[0]
        assert len(sim.log) == requests  # the second one never asked GitLab
        assert state.read_bytes() == before
    finally:
        code, _, err = await stop(first)
    assert code == 0, err


async def test_a_state_file_pointing_at_the_config_is_refused_and_the_config_kept(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    config = tmp_path / "config.yml"
    config = write_config(tmp_path, config_document(org, sim.url, state_file=str(config)))
    before = config.read_bytes()
    code, _, err = await run("scan", "--config.file", str(config))
    assert code == 2
    assert "is not a state file of this exporter" in err and "Traceback" not in err
    assert config.read_bytes() == before
    assert len(sim.log) == 0


# --- signals ----------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.5, 0.8, 1.1, 1.4])
async def test_sigterm_during_start_up_exits_0(
    tmp_path: Path, org: Org, sim: SimulatorServer, delay: float
) -> None:
    config = write_config(tmp_path, config_document(org, sim.url))
    proc = await start("serve", "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{free_port()}")
    await asyncio.sleep(delay)  # modules loading, configuration read, or the first scan
    code, _, err = await stop(proc)
    assert code == 0, (code, err)
    assert "Traceback" not in err


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.2)


async def test_sighup_reloads_teams_users_and_weights_keeping_state_and_numbers(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    document = config_document(org, sim.url, interval_seconds=1)
    people = sorted(u.username for u in org.users.values())
    document["teams"] = [{"name": "first", "members": people[:3]}]
    document["users"] = []
    config = write_config(tmp_path, document)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = await start("serve", "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}")
    try:
        await wait_for(f"http://127.0.0.1:{port}/-/ready")
        before = await wait_for(url)
        commits = samples(before, "gitlab_activity_user_commits")
        assert {dict(k)["user"] for k in commits} == set(people[:3])
        scans_before = samples(before, "gitlab_activity_scans_total")[()]

        # a valid new configuration: another team, more users, other weights
        document["teams"].append({"name": "second", "members": people[2:5]})
        document["score"] = {"weights": {"commits": 10}}
        document["gitlab"]["max_retries"] = 3  # needs a restart: named, not applied
        config.write_text(yaml.safe_dump(document))
        proc.send_signal(signal.SIGHUP)

        async def second_team_scanned() -> bool:
            text = await wait_for(url)
            teams = {dict(k)["team"] for k in samples(text, "gitlab_activity_team_member_info")}
            users = {dict(k)["user"] for k in samples(text, "gitlab_activity_user_up")}
            return "second" in teams and set(people[:5]) <= users

        await wait_until(second_team_scanned)
        after = await wait_for(url)
        assert proc.returncode is None  # still the same process
        assert samples(after, "gitlab_activity_scans_total")[()] > scans_before  # state kept
        for key, value in commits.items():  # numbers kept (and still true)
            assert samples(after, "gitlab_activity_user_commits")[key] == value
        user = people[0]
        score = samples(after, "gitlab_activity_user_score")[(("user", user),)]
        assert score >= 10 * commits[(("user", user),)]

        # an invalid one: one error line, the running configuration kept
        config.write_text(yaml.safe_dump({**document, "surprise": 1}))
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(2)
        still = await wait_for(url)
        assert "second" in {dict(k)["team"] for k in samples(still, "gitlab_activity_team_member_info")}
        proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.5)
        assert (await wait_for(f"http://127.0.0.1:{port}/-/healthy")) == "OK\n"
    finally:
        code, _, err = await stop(proc)
    assert code == 0, err
    reloaded = [line for line in err.splitlines() if "configuration reloaded" in line]
    assert len(reloaded) == 1 and "restart_needed_for=gitlab.max_retries" in reloaded[0]
    refused = [line for line in err.splitlines() if "not reloaded" in line]
    assert len(refused) == 1 and "surprise: unknown key" in refused[0], err
    assert any("signal ignored" in line and "SIGUSR1" in line for line in err.splitlines())
    assert "Traceback" not in err


async def test_sigterm_during_a_scan_is_not_a_successful_scan(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    sim.faults.latency_ms = 300  # the scan lasts far longer than this test waits
    config = write_config(tmp_path, config_document(org, sim.url))
    proc = await start("scan", "--config.file", str(config))
    for _ in range(100):
        if len(sim.log) > 0:
            break
        await asyncio.sleep(0.1)
    code, _, _ = await stop(proc)
    assert code == -signal.SIGTERM  # killed by it: no output, not "exit 0"

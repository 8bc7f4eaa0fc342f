"""What an operator does by mistake, or on purpose, to a running exporter: real processes.

A state file shared by two exporters or pointing at another file; signals at any moment."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from tests.conftest import config_document
from tests.test_cli import free_port, run, start, stop, wait_for, write_config


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

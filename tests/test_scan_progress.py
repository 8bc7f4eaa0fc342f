"""``scan --output table``: a progress bar on a terminal, plain text without one."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from tests.conftest import config_document
from tests.test_cli import EXPORTER, run, write_config


def _read_pty_until_closed(master: int, timeout: float) -> bytes:
    """Everything written to the terminal until its last writer closes it (EIO)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


async def test_progress_bar_on_a_terminal(tmp_path: Path, org: Org, sim: SimulatorServer) -> None:
    sim.faults.latency_ms = 20  # long enough for the bar to be drawn a few times
    config = write_config(tmp_path, config_document(org, sim.url))
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    out_path = tmp_path / "stdout.txt"
    with out_path.open("wb") as out_file:
        proc = await asyncio.create_subprocess_exec(
            *EXPORTER, "scan", "--config.file", str(config), "--output", "table",
            stdout=out_file,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        os.close(slave)
        try:
            # the simulator runs on this event loop: it serves while a thread reads
            terminal = await asyncio.to_thread(_read_pty_until_closed, master, 60)
            code = await asyncio.wait_for(proc.wait(), 10)
        finally:
            os.close(master)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0, terminal.decode(errors="replace")
    shown = terminal.decode(errors="replace")
    assert "Scanning users" in shown
    assert f"{len(org.users)}/{len(org.users)}" in shown  # the bar reached the end
    table = out_path.read_text(encoding="utf-8")
    assert table.startswith("#1 ")  # stdout is only the table, the bar went to the terminal
    assert "\x1b" not in table and "Scanning users" not in table


async def test_plain_text_without_a_terminal(tmp_path: Path, org: Org, sim: SimulatorServer) -> None:
    config = write_config(tmp_path, config_document(org, sim.url))
    code, out, err = await run("scan", "--config.file", str(config), "--output", "table")
    assert code == 0, err
    assert "Scanning users" not in out + err
    assert "\x1b" not in out + err
    assert out.startswith("#1 ")

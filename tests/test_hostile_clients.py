"""Hostile network clients: what they can hold or make the exporter do is bounded, and
/metrics keeps answering the real scraper. Everything over loopback, no wall-clock
assertions beyond generous bounds that only catch hangs."""

from __future__ import annotations

import asyncio
import base64
import resource
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from exporter.snapshot import Snapshot
from exporter.web import make_app
from exporter.webconfig import MAX_CHECKS_IN_FLIGHT, BasicAuth, WebConfig
from exporter.webserver import HEADER_TIMEOUT_SECONDS
from tests.conftest import config_document
from tests.test_cli import EXPORTER, free_port, stop, wait_for, write_config

PASSWORD = "correct horse battery staple"
ATTACKER = "127.0.0.2"  # loopback, another client address than the scraper's 127.0.0.1


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def protected() -> AsyncIterator[tuple[str, BasicAuth]]:
    """The exporter's app behind basic auth with a realistic bcrypt cost (12)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12))
    snapshot = Snapshot(periods=("morning",))
    app = make_app(registry=CollectorRegistry(), source=lambda: snapshot, version="test")
    WebConfig(basic_auth_users={"prometheus": hashed}).apply(app)
    auth = app.middlewares[-1].__self__  # type: ignore[attr-defined]
    assert isinstance(auth, BasicAuth)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", auth
    finally:
        await runner.cleanup()


async def test_a_password_flood_cannot_delay_a_correct_scrape(
    protected: tuple[str, BasicAuth],
) -> None:
    url, auth = protected
    attacker = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(ATTACKER, 0), limit=0)
    )
    statuses: list[int] = []

    async def wrong(i: int) -> None:
        async with attacker.get(f"{url}/metrics", headers=basic("prometheus", f"guess-{i}")) as r:
            statuses.append(r.status)

    try:
        flood = [asyncio.create_task(wrong(i)) for i in range(200)]
        await asyncio.sleep(0.3)  # the flood is in: checks under way, the rest answered
        async with aiohttp.ClientSession() as scraper:
            # a correct password never seen before: it needs a bcrypt round of its own
            response = await asyncio.wait_for(
                scraper.get(f"{url}/metrics", headers=basic("prometheus", PASSWORD)), 20
            )
            assert response.status == 200
            response.release()
        await asyncio.wait_for(asyncio.gather(*flood), 60)
    finally:
        await attacker.close()
    assert statuses.count(200) == 0
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 150  # refused at once, no bcrypt round for them
    assert auth.bcrypt_checks <= 200 - statuses.count(429) + 1
    assert auth.peak_in_flight <= MAX_CHECKS_IN_FLIGHT


# --- slow and half-open clients against the real `serve` ---------------------------------

PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nUser-Agent: slow"  # never finished


def limit_descriptors(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


async def serve_with(
    tmp_path: Path, org: Org, sim: SimulatorServer, *args: str, descriptors: int | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    config = write_config(tmp_path, config_document(org, sim.url))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *EXPORTER, "serve", "--config.file", str(config),
        "--web.listen-address", f"127.0.0.1:{port}", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit_descriptors(descriptors) if descriptors else None,
    )
    await wait_for(f"http://127.0.0.1:{port}/-/ready")
    return proc, port


async def hold_half_open(port: int, count: int) -> list[asyncio.StreamWriter]:
    """Up to ``count`` connections from ATTACKER, each with partial request headers."""
    held: list[asyncio.StreamWriter] = []
    for _ in range(count):
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0)), 2
            )
        except (OSError, TimeoutError):
            break  # the listen backlog is full: that is all this client can hold
        writer.write(PARTIAL)
        held.append(writer)
    return held


async def scrape(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)
    ) as response:
        await response.read()
        return response.status


async def test_half_open_connections_at_the_descriptor_limit_do_not_lock_out_the_scraper(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    proc, port = await serve_with(tmp_path, org, sim, descriptors=256)
    held: list[asyncio.StreamWriter] = []
    try:
        held = await hold_half_open(port, 400)  # more than the process has descriptors
        assert len(held) > 256
        statuses = [await scrape(port) for _ in range(5)]
        assert statuses == [200] * 5
    finally:
        for writer in held:
            writer.close()
        code, _, err = await stop(proc)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    assert err.count("\n") < 20, err[-2000:]  # no line per refused accept


async def test_partial_request_headers_are_timed_out(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    proc, port = await serve_with(tmp_path, org, sim)
    try:
        readers = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ATTACKER, 0)
            )
            writer.write(PARTIAL)
            readers.append((reader, writer))
        for reader, writer in readers:
            # the server closes it: end of stream, long before any keep-alive default
            assert await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_SECONDS + 20) == b""
            writer.close()
    finally:
        code, _, err = await stop(proc)
    assert code == 0, err


async def test_out_of_descriptors_is_one_log_line_and_serving_resumes(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    # a limit above what the process can hold: accept() itself runs out
    proc, port = await serve_with(
        tmp_path, org, sim, "--web.max-connections", "100000", descriptors=128
    )
    held: list[asyncio.StreamWriter] = []
    try:
        held = await hold_half_open(port, 300)
        await asyncio.sleep(2)
        # the half-open ones are timed out, then the scraper gets in again
        status = 0
        for _ in range(60):
            try:
                status = await scrape(port)
                break
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)
        assert status == 200
    finally:
        for writer in held:
            writer.close()
        code, _, err = await stop(proc)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "file descriptors" in line]
    assert len(lines) == 1, err[-3000:]

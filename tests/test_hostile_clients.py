"""Hostile network clients: what they can hold or make the exporter do is bounded, and
/metrics keeps answering the real scraper. Everything over loopback, no wall-clock
assertions beyond generous bounds that only catch hangs."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.snapshot import Snapshot
from exporter.web import make_app
from exporter.webconfig import MAX_CHECKS_IN_FLIGHT, BasicAuth, WebConfig
from tests.test_cli import free_port

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

"""The aiohttp app: /metrics negotiation, landing page, health and readiness."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.collectors import build_registry
from exporter.snapshot import ScanSummary, Snapshot, UserState, UserStats, frozen_map
from exporter.web import make_app

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def scanned_snapshot(username: str = "alice") -> Snapshot:
    user = UserState(
        username=username,
        stats=UserStats(
            commits=9, period_commits=frozen_map({"morning": 9}), projects=frozen_map({})
        ),
        last_success=1_700_000_000.0,
    )
    return Snapshot(
        users=frozen_map({username: user}),
        periods=("morning",),
        last_scan=ScanSummary(
            started=1_700_000_000.0, finished=1_700_000_012.0, users_total=4, users_failed=1
        ),
        last_complete_scan_end=1_700_000_012.0,
        scans_total=1,
    )


class Holder:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.progress: tuple[int, int] | None = None

    def get(self) -> Snapshot:
        return self.snapshot

    def get_progress(self) -> tuple[int, int] | None:
        return self.progress


def app_for(holder: Holder, version: str = "1.2.3") -> web.Application:
    registry = build_registry(holder.get, version=version)
    return make_app(
        registry=registry, source=holder.get, version=version, progress=holder.get_progress
    )


async def test_metrics_text_by_default(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(Holder(scanned_snapshot())))
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    body = await resp.text()
    assert 'gitlab_activity_user_commits{user="alice"} 9.0' in body
    assert 'gitlab_activity_build_info{version="1.2.3"} 1.0' in body
    assert "# EOF" not in body


async def test_metrics_openmetrics(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(Holder(scanned_snapshot())))
    resp = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    body = await resp.text()
    assert body.endswith("# EOF\n")
    assert "# TYPE gitlab_activity_user_scan_failures counter" in body
    assert 'gitlab_activity_user_up{user="alice"} 1.0' in body
    # alice never failed: no zero failure series for her
    assert 'gitlab_activity_user_scan_failures_total{reason="timeout",user="alice"}' not in body


async def test_metrics_gzip(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(Holder(scanned_snapshot())))
    resp = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert resp.status == 200
    assert resp.headers["Content-Encoding"] == "gzip"
    raw = await resp.read()
    assert b"gitlab_activity_user_commits" in gzip.decompress(raw)


async def test_healthy(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(Holder(Snapshot())))
    resp = await client.get("/-/healthy")
    assert resp.status == 200
    assert (await resp.text()).strip() == "OK"


async def test_ready_after_first_scan(aiohttp_client: ClientFactory) -> None:
    holder = Holder(Snapshot())
    client = await aiohttp_client(app_for(holder))
    resp = await client.get("/-/ready")
    assert resp.status == 503
    assert (await resp.text()).strip()
    holder.snapshot = scanned_snapshot()
    resp = await client.get("/-/ready")
    assert resp.status == 200


async def test_landing_page(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(Holder(scanned_snapshot()), version="9.8.7"))
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    page = await resp.text()
    assert "gitlab-activity-exporter" in page
    assert "9.8.7" in page
    for target in ("metrics", "-/healthy", "-/ready"):
        assert f'href="{target}"' in page
    assert "2023-11-14 22:13:32 UTC" in page  # end of the last scan
    assert "12.0 s" in page
    assert "<th>Users scanned</th><td>3</td>" in page
    assert "<th>Users failed</th><td>1</td>" in page
    assert "http://" not in page and "https://" not in page  # no external assets


async def test_landing_page_first_scan_progress(aiohttp_client: ClientFactory) -> None:
    holder = Holder(Snapshot())
    client = await aiohttp_client(app_for(holder))
    page = await (await client.get("/")).text()
    assert "First scan in progress" in page
    holder.progress = (3, 10)
    page = await (await client.get("/")).text()
    assert "3/10 users done" in page


async def test_landing_page_escapes(aiohttp_client: ClientFactory) -> None:
    hostile = "<script>alert(1)</script>"
    snap = scanned_snapshot()
    failed = UserState(username=hostile, failures=frozen_map({"crash": 1}), last_error="crash")
    snap = Snapshot(
        users=frozen_map({**snap.users, hostile: failed}),
        last_scan=snap.last_scan,
        scans_total=1,
    )
    client = await aiohttp_client(app_for(Holder(snap), version="<b>v</b>"))
    page = await (await client.get("/")).text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>v</b>" not in page and "&lt;b&gt;v&lt;/b&gt;" in page


async def test_landing_page_lists_failing_users_capped(aiohttp_client: ClientFactory) -> None:
    failed = {
        f"user{i:02d}": UserState(username=f"user{i:02d}", last_error="timeout")
        for i in range(25)
    }
    snap = Snapshot(
        users=frozen_map(failed),
        last_scan=ScanSummary(started=0.0, finished=1.0, users_total=25, users_failed=25),
        scans_total=1,
    )
    client = await aiohttp_client(app_for(Holder(snap)))
    page = await (await client.get("/")).text()
    assert '<li><a href="leaderboard?user=user00">user00</a>: timeout</li>' in page  # its own view
    assert "user24" not in page
    assert "and 5 more" in page

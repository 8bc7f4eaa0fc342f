"""The /metrics body with the snapshot part cached per snapshot equals the plain
rendering of the whole registry, in every format, and follows snapshot changes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_openmetrics,
)
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from exporter import exposition
from exporter.collectors import build_registry
from exporter.exposition import SnapshotRegistry
from exporter.snapshot import Snapshot, UserState, frozen_map
from exporter.web import make_app
from tests.test_collectors import make_snapshot, stats

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
ACCEPTS = ["", "application/openmetrics-text; version=1.0.0", PROMETHEUS_ACCEPT]


def many_users(count: int, scans: int = 1) -> Snapshot:
    base = make_snapshot()
    users = {
        f"user{i:04d}": UserState(
            username=f"user{i:04d}",
            stats=stats(i, {"morning": i % 7}, {"personal": i % 3, "active": 1}),
            last_success=1_700_000_000.0 + i,
            failures=frozen_map({"timeout": i % 2}),
            last_error="timeout" if i % 5 == 0 else None,
        )
        for i in range(count)
    }
    teams = {f"team{i}": tuple(f"user{j:04d}" for j in range(i, count, 9)) for i in range(9)}
    return dataclasses.replace(
        base, users=frozen_map(users), teams=frozen_map(teams), scans_total=scans
    )


class Counter:
    """A live collector: a different value on every scrape."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterable[Metric]:
        self.calls += 1
        return [GaugeMetricFamily("test_live_calls", "Scrapes seen.", value=self.calls)]


class Holder:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def get(self) -> Snapshot:
        return self.snapshot


def registry_for(holder: Holder) -> tuple[SnapshotRegistry, Counter]:
    registry = build_registry(holder.get, version="1.2.3", interval_seconds=60.0, shard=(0, 1))
    live = Counter()
    registry.register(live)
    return registry, live


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exposition, "SAMPLES_PER_SLICE", 7)  # families span many slices


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.usefixtures("small_slices")
async def test_render_equals_the_plain_rendering(accept: str) -> None:
    holder = Holder(many_users(50))
    registry, _live = registry_for(holder)
    encoder, content_type = choose_encoder(accept)
    for _ in range(2):  # once rendered, once from the cache
        cached = await registry.render(encoder, content_type)
        plain = encoder(registry)  # the live family moves on by one with each rendering
        calls = registry_live_value(plain)
        assert registry_live_value(cached) == calls - 1
        aligned = cached.replace(
            f"test_live_calls {float(calls - 1)}".encode(),
            f"test_live_calls {float(calls)}".encode(),
        )
        assert aligned == plain


def registry_live_value(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith("test_live_calls "):
            return int(float(line.split()[1]))
    raise AssertionError("no live family")


@pytest.mark.usefixtures("small_slices")
async def test_text_equals_generate_latest_without_live_families() -> None:
    snap = many_users(40)
    registry = build_registry(lambda: snap, version="9")
    assert await registry.render(*choose_encoder("")[:1], "text") == generate_latest(registry)
    openmetrics = await registry.render(generate_openmetrics, OPENMETRICS)
    assert openmetrics == generate_openmetrics(registry)


@pytest.mark.usefixtures("small_slices")
async def test_openmetrics_has_one_eof_at_the_end_and_no_duplicate_families() -> None:
    holder = Holder(many_users(30))
    registry, _ = registry_for(holder)
    body = (await registry.render(generate_openmetrics, OPENMETRICS)).decode()
    assert body.count("# EOF") == 1
    assert body.endswith("# EOF\n")
    names = [f.name for f in text_string_to_metric_families(body)]  # strict parser
    assert len(names) == len(set(names))
    assert "test_live_calls" in names
    assert "gitlab_activity_user_commits" in names


def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[exposition.Encoder]:
    """The encoders the registry renders the snapshot part with, one per rendering."""
    renders: list[exposition.Encoder] = []
    original = SnapshotRegistry._render_snapshot_part

    async def counting(self: SnapshotRegistry, encoder: exposition.Encoder) -> bytes:
        renders.append(encoder)
        return await original(self, encoder)

    monkeypatch.setattr(SnapshotRegistry, "_render_snapshot_part", counting)
    return renders


async def test_cache_is_used_while_the_snapshot_is_the_same_and_dropped_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder = Holder(many_users(5, scans=1))
    registry, _ = registry_for(holder)
    renders = count_renders(monkeypatch)
    encoder, content_type = choose_encoder("")
    first = await registry.render(encoder, content_type)
    await registry.render(encoder, content_type)
    assert len(renders) == 1
    assert b"gitlab_activity_scans_total 1.0" in first
    holder.snapshot = many_users(5, scans=2)  # a scan swapped the snapshot
    second = await registry.render(encoder, content_type)
    assert len(renders) == 2
    assert b"gitlab_activity_scans_total 2.0" in second
    assert b"gitlab_activity_scans_total 1.0" not in second
    # another format is rendered (and cached) separately
    await registry.render(generate_openmetrics, OPENMETRICS)
    await registry.render(generate_openmetrics, OPENMETRICS)
    assert len(renders) == 3


async def test_concurrent_scrapes_share_one_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Holder(many_users(20))
    registry, _ = registry_for(holder)
    renders = count_renders(monkeypatch)
    encoder, content_type = choose_encoder("")
    bodies = await asyncio.gather(*(registry.render(encoder, content_type) for _ in range(5)))
    assert len(renders) == 1
    assert len({b.split(b"test_live_calls")[0] for b in bodies}) == 1


async def test_a_snapshot_swapped_during_rendering_is_not_served_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exposition, "SAMPLES_PER_SLICE", 3)
    holder = Holder(many_users(30, scans=1))
    registry, _ = registry_for(holder)
    encoder, content_type = choose_encoder("")
    scrape = asyncio.ensure_future(registry.render(encoder, content_type))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not scrape.done()
    holder.snapshot = many_users(30, scans=2)
    body = await scrape
    assert b"gitlab_activity_scans_total 2.0" in body


async def test_warm_renders_the_formats_scraped_before(monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Holder(many_users(5, scans=1))
    registry, _ = registry_for(holder)
    await registry.render(generate_openmetrics, OPENMETRICS)
    holder.snapshot = many_users(5, scans=2)
    await registry.warm()
    rendered = count_renders(monkeypatch)
    await registry.render(generate_openmetrics, OPENMETRICS)
    await registry.render(*choose_encoder(""))
    assert rendered == []  # both the default text and the scraped OpenMetrics were warm


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_http_metrics_equals_the_plain_rendering(
    accept: str, aiohttp_client: object
) -> None:
    snap = many_users(25)
    registry = build_registry(lambda: snap, version="1.2.3")
    app: Application = make_app(registry=registry, source=lambda: snap, version="1.2.3")
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    encoder, content_type = choose_encoder(accept)
    for encoding in ("identity", "gzip"):
        resp = await client.get(
            "/metrics", headers={"Accept": accept, "Accept-Encoding": encoding}
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"] == content_type
        if encoding == "gzip":
            assert resp.headers["Content-Encoding"] == "gzip"
        assert await resp.read() == encoder(registry)
    filtered = await client.get("/metrics?name[]=gitlab_activity_user_up")
    assert filtered.status == 200  # served by prometheus_client's own handler


class CreatedCounter:
    """A snapshot family with two sample names (``_total`` and ``_created``)."""

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("test_cut", "A counter with a created time.", labels=["k"])
        family.add_metric(["a"], 3, created=1_700_000_000.0)
        return [family]


def parsed(body: str, openmetrics: bool) -> list[tuple[str, str, str, list[object]]]:
    parse = text_string_to_metric_families if openmetrics else text_families
    return sorted(
        (f.name, f.type, f.documentation, sorted(map(repr, f.samples))) for f in parse(body)
    )


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
@pytest.mark.usefixtures("small_slices")
async def test_filtered_scrapes_serve_what_prometheus_clients_handler_serves(
    accept: str, aiohttp_client: object
) -> None:
    snap = many_users(30)
    built = build_registry(lambda: snap, version="1.2.3")
    registry = SnapshotRegistry(lambda: snap)
    reference = CollectorRegistry(auto_describe=True)  # every family findable by name
    for collector in [*built._snapshot_collectors, CreatedCounter()]:
        registry.register_snapshot_collector(collector)
        reference.register(collector)
    for collector in built._live:
        registry.register(collector)
        reference.register(collector)
    app: Application = make_app(registry=registry, source=lambda: snap, version="1.2.3")
    app.router.add_get("/reference", make_aiohttp_handler(reference))
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    selections = [
        ["gitlab_activity_user_commits"],
        ["gitlab_activity_user_commits", "gitlab_activity_team_member_info"],
        ["gitlab_activity_user_scan_failures_total", "gitlab_activity_build_info"],
        ["test_cut_total"],  # part of a family
        ["gitlab_activity_user_scan_failures"],  # a family's name, not a sample's: nothing
        ["no_such_metric"],
    ]
    openmetrics = bool(accept)
    for names in selections:
        query = "&".join(f"name[]={n}" for n in names)
        ours = await client.get(f"/metrics?{query}", headers={"Accept": accept})
        theirs = await client.get(f"/reference?{query}", headers={"Accept": accept})
        assert ours.status == theirs.status == 200
        assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]
        body = await ours.text()
        assert parsed(body, openmetrics) == parsed(await theirs.text(), openmetrics), names
    # the filter keeps every user's series, not an empty family
    every = await (await client.get("/metrics?name[]=gitlab_activity_user_commits")).text()
    assert sum(line.startswith("gitlab_activity_user_commits{") for line in every.splitlines()) == 30

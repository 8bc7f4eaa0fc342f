"""gzip on /metrics: the snapshot part is compressed once per snapshot and format into a
gzip member of its own, each scrape compresses only its live families, and the
concatenation decompresses to exactly the uncompressed body. Over HTTP."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.exposition import choose_encoder

from exporter import exposition
from exporter.collectors import build_registry
from exporter.exposition import SnapshotRegistry
from exporter.snapshot import Snapshot
from exporter.web import accepts_gzip, make_app
from tests.test_exposition import ACCEPTS, Holder, many_users, parsed

GZIP = {"Accept-Encoding": "gzip"}


async def client_for(aiohttp_client: Any, holder: Holder) -> tuple[TestClient[Any, Any], SnapshotRegistry]:
    registry = build_registry(holder.get, version="1.2.3")
    app = make_app(registry=registry, source=holder.get, version="1.2.3")
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client, registry


async def raw_get(client: TestClient[Any, Any], path: str, **headers: str) -> tuple[web.Response | Any, bytes]:
    resp = await client.get(path, headers=headers, auto_decompress=False,
                            skip_auto_headers=["Accept-Encoding"])
    assert resp.status == 200
    return resp, await resp.read()


def members(raw: bytes) -> list[bytes]:
    """The decompressed data of each gzip member of ``raw``, in order."""
    out = []
    while raw:
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(reader.decompress(raw))
        assert reader.eof, "a truncated gzip member"
        raw = reader.unused_data
    return out


def count_compressed_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every byte fed to a zlib compressor in this process (the exporter's or aiohttp's),
    one entry per ``compress`` call."""
    fed: list[int] = []
    original = zlib.compressobj

    class Counting:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._inner = original(*args, **kwargs)

        def compress(self, data: Any) -> bytes:
            fed.append(len(data))
            return self._inner.compress(data)

        def flush(self, *args: Any) -> bytes:
            return self._inner.flush(*args)

    monkeypatch.setattr(zlib, "compressobj", Counting)
    return fed


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_gzip_body_decompresses_to_the_uncompressed_body_byte_for_byte(
    accept: str, aiohttp_client: Any
) -> None:
    holder = Holder(many_users(300))
    client, registry = await client_for(aiohttp_client, holder)
    encoder, content_type = choose_encoder(accept)
    for _ in range(3):  # first compressed, then from the cache
        resp, raw = await raw_get(client, "/metrics", Accept=accept, **GZIP)
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Type"] == content_type
        body = gzip.decompress(raw)  # Python's reader: every member
        # what the registry renders as a whole, with this response counted
        assert body == encoder(registry)
        plain_resp, plain = await raw_get(client, "/metrics", Accept=accept)
        assert "Content-Encoding" not in plain_resp.headers
        # the same body uncompressed, but for the identity response counting itself
        identity = registry.responses["identity"]
        assert plain == body.replace(
            f'encoding="identity"}} {float(identity - 1)}'.encode(),
            f'encoding="identity"}} {float(identity)}'.encode(),
        )
        parts = members(raw)
        assert len(parts) == 2  # the snapshot part, then the live families
        assert parts[0] == await registry.snapshot_part(encoder, content_type)
        assert b"".join(parts) == body


async def test_the_snapshot_part_is_compressed_once_per_snapshot_and_format(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = Holder(many_users(400, scans=1))
    client, registry = await client_for(aiohttp_client, holder)
    fed = count_compressed_bytes(monkeypatch)
    _, first = await raw_get(client, "/metrics", **GZIP)
    body_size = len(gzip.decompress(first))
    snapshot_size = len(await registry.snapshot_part(*choose_encoder("")))
    assert snapshot_size > 0.9 * body_size  # nearly all of the body
    assert sum(fed) == body_size  # the first scrape compresses everything once
    fed.clear()
    live = 0
    for _ in range(10):
        _, raw = await raw_get(client, "/metrics", **GZIP)
        live += len(gzip.decompress(raw)) - snapshot_size
    # ten scrapes compressed only their live families: together less than the snapshot
    # part once
    assert sum(fed) == live
    assert sum(fed) < snapshot_size
    assert (registry.compressions, registry.compressed_bytes) == (1, snapshot_size)
    # another format: compressed once more, then cached as well
    openmetrics = "application/openmetrics-text; version=1.0.0"
    for _ in range(3):
        await raw_get(client, "/metrics", Accept=openmetrics, **GZIP)
    assert registry.compressions == 2
    # uncompressed scrapes compress nothing
    fed.clear()
    await raw_get(client, "/metrics")
    assert fed == []
    # a new snapshot: compressed again, once
    holder.snapshot = many_users(400, scans=2)
    for _ in range(3):
        _, raw = await raw_get(client, "/metrics", **GZIP)
        assert b"gitlab_activity_scans_total 2.0" in gzip.decompress(raw)
    assert registry.compressions == 3


async def test_concurrent_gzip_scrapes_share_one_compression(aiohttp_client: Any) -> None:
    holder = Holder(many_users(200))
    client, registry = await client_for(aiohttp_client, holder)
    bodies = await asyncio.gather(*(raw_get(client, "/metrics", **GZIP) for _ in range(6)))
    assert registry.compressions == 1
    assert len({members(raw)[0] for _, raw in bodies}) == 1


async def test_compressing_a_snapshot_yields_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exposition, "COMPRESS_SLICE_BYTES", 4096)
    holder = Holder(many_users(300))
    registry = build_registry(holder.get, version="1")
    encoder, key = choose_encoder("")
    size = len(await registry.snapshot_part(encoder, key))  # rendered, not compressed
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await registry.render_gzip(encoder, key)
    task.cancel()
    # the loop ran other tasks between slices, about once per slice
    assert ticks >= size // 4096 - 1


async def test_a_snapshot_swapped_during_compression_is_not_served_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exposition, "COMPRESS_SLICE_BYTES", 1024)
    holder = Holder(many_users(100, scans=1))
    registry = build_registry(holder.get, version="1")
    encoder, key = choose_encoder("")
    await registry.snapshot_part(encoder, key)
    scrape = asyncio.ensure_future(registry.render_gzip(encoder, key))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not scrape.done()
    holder.snapshot = many_users(100, scans=2)
    body = gzip.decompress(await scrape)
    assert b"gitlab_activity_scans_total 2.0" in body


async def test_warm_compresses_the_formats_scraped_with_gzip_before() -> None:
    holder = Holder(many_users(50, scans=1))
    registry = build_registry(holder.get, version="1")
    openmetrics = choose_encoder("application/openmetrics-text; version=1.0.0")
    await registry.render_gzip(*openmetrics)
    await registry.render(*choose_encoder(""))  # text, but never with gzip
    assert registry.compressions == 1
    holder.snapshot = many_users(50, scans=2)
    await registry.warm()
    assert registry.compressions == 2  # OpenMetrics again; text was never asked in gzip
    await registry.render_gzip(*openmetrics)
    assert registry.compressions == 2  # the scrape found it compressed


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("identity", False),
        ("", False),
        ("deflate", False),  # gzip or nothing, as prometheus_client serves
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("*;q=0", False),
        ("gzip;q=0.001", True),
        ("br, *;q=0.1", True),
        ("gzip;q=0, *", False),  # named refusal wins over the wildcard
    ],
)
async def test_accept_encoding_negotiation(header: str, gzipped: bool, aiohttp_client: Any) -> None:
    assert accepts_gzip(header) is gzipped
    client, registry = await client_for(aiohttp_client, Holder(many_users(5)))
    headers = {"Accept-Encoding": header} if header else {}
    resp, raw = await raw_get(client, "/metrics", **headers)
    assert resp.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
    body = gzip.decompress(raw) if gzipped else raw
    assert body.startswith(b"# HELP gitlab_activity_user_commits ")
    coding = "gzip" if gzipped else "identity"
    assert registry.responses == {coding: 1}
    assert f'gitlab_activity_metrics_responses_total{{encoding="{coding}"}} 1.0'.encode() in body


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_filtered_gzip_scrapes_serve_what_prometheus_clients_handler_serves(
    accept: str, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition, "SAMPLES_PER_SLICE", 7)
    snap: Snapshot = many_users(30)
    registry = build_registry(lambda: snap, version="1.2.3")
    reference = CollectorRegistry(auto_describe=True)
    for collector in [*registry._snapshot_collectors, *registry._live]:
        reference.register(collector)
    app = make_app(registry=registry, source=lambda: snap, version="1.2.3")
    app.router.add_get("/reference", make_aiohttp_handler(reference))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await raw_get(client, "/metrics", **GZIP)  # the whole body cached and compressed first
    openmetrics = bool(accept)
    for names in (
        ["gitlab_activity_user_commits"],
        ["gitlab_activity_user_up", "gitlab_activity_build_info"],
        ["no_such_metric"],
    ):
        query = "&".join(f"name[]={n}" for n in names)
        resp, raw = await raw_get(client, f"/metrics?{query}", Accept=accept, **GZIP)
        assert resp.headers["Content-Encoding"] == "gzip"
        ours = gzip.decompress(raw)
        _, identity = await raw_get(client, f"/metrics?{query}", Accept=accept)
        assert ours == identity
        theirs = await (await client.get(f"/reference?{query}", headers={"Accept": accept})).text()
        assert parsed(ours.decode(), openmetrics) == parsed(theirs, openmetrics), names
    _, raw = await raw_get(client, "/metrics?name[]=gitlab_activity_user_commits", **GZIP)
    lines = gzip.decompress(raw).decode().splitlines()
    assert sum(line.startswith("gitlab_activity_user_commits{") for line in lines) == 30
    assert not any(line.startswith("gitlab_activity_user_up") for line in lines)

"""The ``/metrics`` body, with the snapshot-derived part rendered once per snapshot.

The snapshot is immutable and replaced as a whole after each scan, so the families
derived from it (every user's and team's series: nearly all of the body) only change
when the snapshot object changes. :class:`SnapshotRegistry` keeps their rendering per
exposition format, keyed by the snapshot's identity, and renders only the small live
families (GitLab client self-metrics, process and task gauges, build info) per scrape.

The body is byte for byte what ``prometheus_client`` renders for the whole registry:
snapshot families first (they are registered first), then the live ones; in
OpenMetrics the single ``# EOF`` comes at the very end.

A scrape with ``name[]`` parameters gets what ``prometheus_client``'s own handler
serves for them (only the samples with those names, families without one left out),
taken from the same cache: the byte range of each cached family is kept with the set
of its sample names.

Rendering a snapshot's families is CPU work of a few hundred milliseconds for
thousands of users; :meth:`SnapshotRegistry.render` does it in slices of
:data:`SAMPLES_PER_SLICE` samples and yields to the event loop between them, so a
scrape or a warm-up after a scan never stalls the loop for long.

gzip (what Prometheus asks for by default) is cached the same way: the snapshot part is
compressed once per snapshot and format into one gzip member (RFC 1952, section 2.2:
a gzip file is a series of members), in slices of :data:`COMPRESS_SLICE_BYTES` that
yield to the event loop; a scrape compresses only its live families into a second
member and sends both. A gzip reader decompresses the concatenation to the body
:meth:`SnapshotRegistry.render` returns, byte for byte (Go's ``compress/gzip``, which
Prometheus reads scrapes with, reads every member by default, as do Python's
``gzip`` module and the ``gzip`` tool).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from exporter.snapshot import Snapshot

__all__ = [
    "COMPRESS_SLICE_BYTES",
    "DEFAULT_ENCODER",
    "GZIP_LEVEL",
    "SAMPLES_PER_SLICE",
    "Encoder",
    "SnapshotRegistry",
    "gzip_member",
]

Encoder = Callable[[Collector], bytes]
SAMPLES_PER_SLICE = 2000
COMPRESS_SLICE_BYTES = 64 * 1024  # about a millisecond of zlib at GZIP_LEVEL
GZIP_LEVEL = 6  # zlib's default, as aiohttp compresses
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
EOF = b"# EOF\n"
# samples that prometheus_client's text format moves into families of their own
_MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")


def _default_encoder() -> tuple[Encoder, str]:
    from prometheus_client.exposition import choose_encoder

    return choose_encoder("")


DEFAULT_ENCODER = _default_encoder()


class _Families:
    """A collector over fixed metric families (what an encoder renders)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self._metrics


@dataclass(frozen=True, slots=True)
class _Rendered:
    """A rendered snapshot part and, per family, (its name, its sample names, where its
    bytes start and end in ``body``)."""

    body: bytes
    families: tuple[tuple[str, frozenset[str], int, int], ...]


def _restricted(metrics: Iterable[Metric], names: Collection[str]) -> Iterator[Metric]:
    """What prometheus_client's ``RestrictedRegistry`` yields for ``names``."""
    for metric in metrics:
        restricted = metric._restricted_metric(names)  # type: ignore[no-untyped-call]
        if restricted is not None:
            yield restricted


class _Live:
    """A collector over the registry's collectors that do not read the snapshot."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in list(self._collectors):
            yield from collector.collect()


def _copy(metric: Metric, samples: list) -> Metric:  # type: ignore[type-arg]
    part = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    part.samples = samples
    return part


def gzip_member(data: bytes) -> bytes:
    """``data`` as one gzip member (no file name, modification time 0)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


async def _gzip_member_in_slices(data: bytes) -> bytes:
    """:func:`gzip_member` of ``data``, yielding to the event loop between slices."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    parts: list[bytes] = []
    view = memoryview(data)
    for start in range(0, len(data), COMPRESS_SLICE_BYTES):
        parts.append(compressor.compress(view[start : start + COMPRESS_SLICE_BYTES]))
        await asyncio.sleep(0)
    parts.append(compressor.flush())
    return b"".join(parts)


def _strip_eof(body: bytes) -> bytes:
    return body[: -len(EOF)] if body.endswith(EOF) else body


def _sliceable(metric: Metric) -> bool:
    return not any(s.name.endswith(_MOVED_SUFFIXES) for s in metric.samples)


def _render_family(metric: Metric, encoder: Encoder) -> Iterator[bytes]:
    """``metric`` rendered by ``encoder`` (without an OpenMetrics ``# EOF``), in slices
    of samples; the slices joined equal the family rendered at once."""
    samples = metric.samples
    if len(samples) <= SAMPLES_PER_SLICE or not _sliceable(metric):
        yield _strip_eof(encoder(_Families([metric])))
        return
    header = _strip_eof(encoder(_Families([_copy(metric, [])])))
    for start in range(0, len(samples), SAMPLES_PER_SLICE):
        chunk = _copy(metric, samples[start : start + SAMPLES_PER_SLICE])
        part = _strip_eof(encoder(_Families([chunk])))
        yield part if start == 0 else part[len(header) :]


class SnapshotRegistry(CollectorRegistry):
    """A registry whose snapshot collectors' rendering is cached per snapshot.

    ``collect()`` (and so ``generate_latest``) is the plain, uncached rendering of
    everything registered; :meth:`render` is the same bytes with the snapshot part
    taken from the cache.
    """

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        super().__init__(auto_describe=False)
        self._source = source
        self._snapshot_collectors: list[Collector] = []
        self._live: list[Collector] = []
        self._cached_for: Snapshot | None = None
        self._cache: dict[str, asyncio.Future[_Rendered]] = {}
        self._gzip: dict[str, asyncio.Future[bytes]] = {}  # the cache's parts, compressed
        self._encoders: dict[str, Encoder] = {}  # formats scraped so far, by content type
        self._gzipped: set[str] = set()  # formats scraped with gzip so far
        #: snapshot parts compressed so far, and their uncompressed bytes (once per
        #: snapshot and format scraped with gzip)
        self.compressions = 0
        self.compressed_bytes = 0
        #: ``/metrics`` responses served so far by content coding (counted by the handler)
        self.responses: dict[str, int] = {}

    # --- registration -------------------------------------------------------------
    def register_snapshot_collector(self, collector: Collector) -> None:
        """Register a collector whose families depend on the snapshot only; these are
        rendered before every live family, so register them first."""
        if self._live:
            raise ValueError("snapshot collectors must be registered before the others")
        super().register(collector)
        self._snapshot_collectors.append(collector)

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._live.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        if collector in self._live:
            self._live.remove(collector)
        if collector in self._snapshot_collectors:
            self._snapshot_collectors.remove(collector)
            self._forget()

    def count_response(self, encoding: str) -> None:
        """Count a ``/metrics`` response with content coding ``encoding``."""
        self.responses[encoding] = self.responses.get(encoding, 0) + 1

    # --- rendering ----------------------------------------------------------------
    def _forget(self) -> None:
        self._cached_for = None
        self._cache = {}
        self._gzip = {}

    async def _render_snapshot_part(self, encoder: Encoder) -> _Rendered:
        parts: list[bytes] = []
        families: list[tuple[str, frozenset[str], int, int]] = []
        size = 0
        for collector in list(self._snapshot_collectors):
            for metric in collector.collect():
                start = size
                for part in _render_family(metric, encoder):
                    parts.append(part)
                    size += len(part)
                    await asyncio.sleep(0)
                families.append(
                    (metric.name, frozenset(s.name for s in metric.samples), start, size)
                )
            await asyncio.sleep(0)
        return _Rendered(b"".join(parts), tuple(families))

    def _entry(self, encoder: Encoder, key: str) -> asyncio.Future[_Rendered]:
        snapshot = self._source()
        if snapshot is not self._cached_for:
            self._forget()
            self._cached_for = snapshot
        entry = self._cache.get(key)
        if entry is None:
            entry = asyncio.ensure_future(self._render_snapshot_part(encoder))
            self._cache[key] = entry
        return entry

    async def _rendered(self, encoder: Encoder, key: str) -> _Rendered:
        while True:
            snapshot = self._source()
            entry = self._entry(encoder, key)
            try:
                rendered = await asyncio.shield(entry)
            except Exception:
                if self._cache.get(key) is entry:
                    del self._cache[key]
                raise
            if self._source() is snapshot:
                return rendered
            # the snapshot changed while rendering: render the new one

    async def snapshot_part(self, encoder: Encoder, key: str) -> bytes:
        """The snapshot families of the current snapshot rendered by ``encoder`` (without
        ``# EOF``); ``key`` names the encoder (its content type). Rendered once per
        snapshot and key, concurrent callers share the one rendering."""
        return (await self._rendered(encoder, key)).body

    async def _compress_snapshot_part(self, encoder: Encoder, key: str) -> bytes:
        body = await self.snapshot_part(encoder, key)
        self.compressions += 1
        self.compressed_bytes += len(body)
        return await _gzip_member_in_slices(body)

    async def snapshot_part_gzip(self, encoder: Encoder, key: str) -> bytes:
        """:meth:`snapshot_part` as one gzip member: compressed once per snapshot and
        key (in slices), concurrent callers share the one compression."""
        while True:
            snapshot = self._source()
            self._entry(encoder, key)  # drops the cache of a replaced snapshot
            entry = self._gzip.get(key)
            if entry is None:
                entry = asyncio.ensure_future(self._compress_snapshot_part(encoder, key))
                self._gzip[key] = entry
            try:
                member = await asyncio.shield(entry)
            except Exception:
                if self._gzip.get(key) is entry:
                    del self._gzip[key]
                raise
            if self._source() is snapshot:
                return member
            # the snapshot changed while compressing: compress the new one

    async def render_gzip(
        self, encoder: Encoder, key: str, names: Collection[str] | None = None
    ) -> bytes:
        """:meth:`render` gzip-compressed: the cached snapshot member followed by a member
        of the live families (a filtered scrape, small, is compressed as a whole)."""
        self._encoders[key] = encoder
        self._gzipped.add(key)
        if names is not None:
            return gzip_member(await self.render(encoder, key, names))
        snapshot_member = await self.snapshot_part_gzip(encoder, key)
        return snapshot_member + gzip_member(encoder(_Live(self._live)))

    async def render(
        self, encoder: Encoder, key: str, names: Collection[str] | None = None
    ) -> bytes:
        """The whole exposition: cached snapshot part, then the live families.

        ``names`` (the ``name[]`` of a scrape): only the samples with these names, as
        ``prometheus_client`` restricts a registry; whole families come from the cache."""
        self._encoders[key] = encoder
        if names is None:
            snapshot_part = await self.snapshot_part(encoder, key)
            return snapshot_part + encoder(_Live(self._live))
        wanted = frozenset(names)
        rendered = await self._rendered(encoder, key)
        parts: list[bytes | str] = []  # cached bytes, or the name of a family cut apart
        for family, sample_names, start, end in rendered.families:
            if sample_names and sample_names <= wanted:
                parts.append(rendered.body[start:end])
            elif sample_names & wanted:
                parts.append(family)
        partial = {p for p in parts if isinstance(p, str)}
        cut: dict[str, bytes] = {}
        if partial:  # some of a family's samples wanted: that family rendered apart
            metrics = (m for c in list(self._snapshot_collectors) for m in c.collect())
            for metric in _restricted((m for m in metrics if m.name in partial), wanted):
                cut[metric.name] = _strip_eof(encoder(_Families([metric])))
        body = b"".join(cut.get(p, b"") if isinstance(p, str) else p for p in parts)
        return body + encoder(_Families(_restricted(_Live(self._live).collect(), wanted)))

    async def warm(self, extra: Iterable[tuple[Encoder, str]] = ()) -> None:
        """Render the current snapshot's part for the formats scraped before (and the
        plain text format, plus ``extra``), and compress it for the formats scraped with
        gzip before, so the next scrapes only render (and compress) live families."""
        wanted: dict[str, Encoder] = {DEFAULT_ENCODER[1]: DEFAULT_ENCODER[0]}
        wanted.update(self._encoders)
        for encoder, key in extra:
            wanted[key] = encoder
        for key, encoder in wanted.items():
            await self.snapshot_part(encoder, key)
            if key in self._gzipped:
                await self.snapshot_part_gzip(encoder, key)

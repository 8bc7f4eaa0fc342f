"""The HTTP face of the exporter: ``/metrics``, a landing page and health endpoints.

Handlers only read the current snapshot through ``source``; they never call GitLab
and own no resources. The service layer adds its startup/cleanup hooks to the app.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.exposition import SnapshotRegistry
from exporter.pages import (
    NAME,
    NotFound,
    PageView,
    leaderboard_parts,
    parse_sort,
    render_landing_page,
    render_leaderboard_page,
)
from exporter.score import TeamEntry, leaderboard
from exporter.snapshot import Snapshot

__all__ = [
    "NAME",
    "PageCache",
    "accepts_gzip",
    "make_app",
    "metrics_handler",
    "render_landing_page",
    "render_leaderboard_page",
]

PAGE_CACHE_SIZE = 64  # pages (views and sort orders) kept per snapshot


SLICE_SECONDS = 0.01  # rendering a page yields to the event loop this often


class PageCache:
    """Pages rendered once per snapshot: the first request for a view after a scan
    renders it (in parts, yielding to the event loop between them), later ones and
    concurrent ones get the same bytes until the snapshot changes. The ranking the
    views share is computed once per snapshot too."""

    def __init__(self, size: int = PAGE_CACHE_SIZE) -> None:
        self._size = size
        self._for: Snapshot | None = None
        self._entries: list[TeamEntry] | None = None
        self._pages: OrderedDict[Hashable, asyncio.Future[bytes]] = OrderedDict()
        self.renders = 0  # pages rendered so far

    def _switch(self, snapshot: Snapshot) -> None:
        if snapshot is not self._for:
            self._for = snapshot
            self._entries = None
            self._pages.clear()

    def entries(self, snapshot: Snapshot) -> list[TeamEntry]:
        """``leaderboard(snapshot)``, once per snapshot."""
        self._switch(snapshot)
        if self._entries is None:
            self._entries = leaderboard(snapshot)
        return self._entries

    async def page(self, snapshot: Snapshot, view: PageView) -> bytes:
        self._switch(snapshot)
        entry = self._pages.get(view)
        if entry is None:
            entry = asyncio.ensure_future(self._render(snapshot, view))
            self._pages[view] = entry
            while len(self._pages) > self._size:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(view)
        try:
            return await asyncio.shield(entry)
        except Exception:
            if self._pages.get(view) is entry:
                del self._pages[view]
            raise

    async def _render(self, snapshot: Snapshot, view: PageView) -> bytes:
        self.renders += 1
        chunks: list[str] = []
        turn = time.perf_counter()
        for part in leaderboard_parts(snapshot, view, self.entries(snapshot)):
            chunks.append(part)
            if time.perf_counter() - turn > SLICE_SECONDS:
                await asyncio.sleep(0)
                turn = time.perf_counter()
        return "".join(chunks).encode()


PAGES = web.AppKey("pages", PageCache)  # the app's page cache, for tests and warm-ups


def leaderboard_view(request: web.Request, snapshot: Snapshot) -> PageView:
    """The view a request asks for: ``?team=``, ``?user=``, ``?sort=COLUMN&order=asc|desc``."""
    query = request.query
    return PageView(
        sort=parse_sort(query.get("sort"), query.get("order"), snapshot.periods),
        team=query.get("team") or None,
        user=query.get("user") or None,
    )


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value lets the response be gzip.

    As prometheus_client's handlers decide (gzip when the header names it), except that
    a quality of 0 refuses a coding (RFC 9110, section 12.5.3): ``gzip;q=0`` is a no,
    and so is ``*;q=0`` for a gzip the header does not name; ``*`` alone is a yes."""
    named: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # a malformed weight accepts nothing
        if coding:
            named.setdefault(coding.lower(), quality)
    for coding in ("gzip", "x-gzip", "*"):
        if coding in named:
            return named[coding] > 0
    return False


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """``/metrics``: prometheus_client's handler, except that on a
    :class:`~exporter.exposition.SnapshotRegistry` the snapshot part comes from its
    per-snapshot cache (same bytes, same content negotiation by ``Accept``), and so does
    its gzip member when ``Accept-Encoding`` allows gzip (:func:`accepts_gzip`)."""
    plain = make_aiohttp_handler(registry)
    if not isinstance(registry, SnapshotRegistry):
        return plain

    async def handler(request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = request.query.getall("name[]", None)  # a filtered scrape
        headers = {hdrs.CONTENT_TYPE: content_type, hdrs.VARY: "Accept, Accept-Encoding"}
        encodings = ",".join(request.headers.getall(hdrs.ACCEPT_ENCODING, []))
        if accepts_gzip(encodings):
            registry.count_response("gzip")  # before rendering: the response counts itself
            body = await registry.render_gzip(encoder, content_type, names)
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        else:
            registry.count_response("identity")
            body = await registry.render(encoder, content_type, names)
        return web.Response(body=body, headers=headers)

    return handler


def make_app(
    *,
    registry: CollectorRegistry,
    source: Callable[[], Snapshot],
    version: str,
    progress: Callable[[], tuple[int, int] | None] | None = None,
) -> web.Application:
    """The aiohttp application serving the exporter's endpoints.

    ``/metrics`` renders the private ``registry`` (text or OpenMetrics by ``Accept``,
    gzip or identity by ``Accept-Encoding``), see :func:`metrics_handler`.
    """

    pages = PageCache()

    async def landing(request: web.Request) -> web.Response:
        page = render_landing_page(
            source(), version=version, progress=progress() if progress is not None else None
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def leaderboard_page(request: web.Request) -> web.Response:
        snapshot = source()
        view = leaderboard_view(request, snapshot)
        # unknown names are answered without rendering (nor filling the cache)
        if view.user is not None and view.user not in snapshot.users:
            raise web.HTTPNotFound(text=f"no user {view.user!r}\n")
        if view.team is not None and view.team not in snapshot.teams:
            raise web.HTTPNotFound(text=f"no team {view.team!r}\n")
        try:
            body = await pages.page(snapshot, view)
        except NotFound as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        response = web.Response(body=body, content_type="text/html", charset="utf-8")
        response.enable_compression()
        return response

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(request: web.Request) -> web.Response:
        if source().ready:
            return web.Response(text="OK\n")
        return web.Response(status=503, text="Not ready: first scan in progress\n")

    app = web.Application()
    app[PAGES] = pages
    app.router.add_get("/", landing)
    app.router.add_get("/leaderboard", leaderboard_page)
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app

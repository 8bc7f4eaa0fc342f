"""The HTTP face of the exporter: ``/metrics``, a landing page and health endpoints.

Handlers only read the current snapshot through ``source``; they never call GitLab
and own no resources. The service layer adds its startup/cleanup hooks to the app.
"""

from __future__ import annotations

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
    parse_sort,
    render_landing_page,
    render_leaderboard_page,
)
from exporter.snapshot import Snapshot

__all__ = [
    "NAME",
    "PageCache",
    "make_app",
    "metrics_handler",
    "render_landing_page",
    "render_leaderboard_page",
]

PAGE_CACHE_SIZE = 64  # pages (views and sort orders) kept per snapshot


class PageCache:
    """Pages rendered once per snapshot: the first request for a view after a scan
    renders it, later ones get the same bytes until the snapshot changes."""

    def __init__(self, size: int = PAGE_CACHE_SIZE) -> None:
        self._size = size
        self._for: Snapshot | None = None
        self._pages: OrderedDict[Hashable, bytes] = OrderedDict()
        self.renders = 0  # pages rendered so far

    def get(self, snapshot: Snapshot, key: Hashable, render: Callable[[], str]) -> bytes:
        if snapshot is not self._for:
            self._for = snapshot
            self._pages.clear()
        page = self._pages.get(key)
        if page is None:
            page = render().encode()
            self.renders += 1
            self._pages[key] = page
            while len(self._pages) > self._size:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(key)
        return page


PAGES = web.AppKey("pages", PageCache)  # the app's page cache, for tests and warm-ups


def leaderboard_view(request: web.Request, snapshot: Snapshot) -> PageView:
    """The view a request asks for: ``?team=``, ``?user=``, ``?sort=COLUMN&order=asc|desc``."""
    query = request.query
    return PageView(
        sort=parse_sort(query.get("sort"), query.get("order"), snapshot.periods),
        team=query.get("team") or None,
        user=query.get("user") or None,
    )


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """``/metrics``: prometheus_client's handler, except that on a
    :class:`~exporter.exposition.SnapshotRegistry` the snapshot part comes from its
    per-snapshot cache (same bytes, same content negotiation, gzip by aiohttp)."""
    plain = make_aiohttp_handler(registry)
    if not isinstance(registry, SnapshotRegistry):
        return plain

    async def handler(request: web.Request) -> web.StreamResponse:
        if "name[]" in request.query:  # a filtered scrape: rendered as a whole
            return await plain(request)
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        body = await registry.render(encoder, content_type)
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

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
    gzip by ``Accept-Encoding``), see :func:`metrics_handler`.
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
        try:
            body = pages.get(snapshot, view, lambda: render_leaderboard_page(snapshot, view))
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

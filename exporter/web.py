"""The HTTP face of the exporter: ``/metrics``, a landing page and health endpoints.

Handlers only read the current snapshot through ``source``; they never call GitLab
and own no resources. The service layer adds its startup/cleanup hooks to the app.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.registry import CollectorRegistry

from exporter.snapshot import Snapshot

__all__ = ["NAME", "make_app", "render_landing_page"]

NAME = "gitlab-activity-exporter"
MAX_FAILED_LISTED = 20  # the page stays small with thousands of users


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _scan_summary(snapshot: Snapshot, progress: tuple[int, int] | None) -> str:
    scan = snapshot.last_scan
    if scan is None:
        text = "First scan in progress"
        if progress is not None:
            done, total = progress
            text += f": {done}/{total} users done"
        return f"<p>{html.escape(text)}.</p>"
    scanned = scan.users_total - scan.users_failed
    rows = [
        ("Last scan ended", _when(scan.finished)),
        ("Duration", f"{scan.duration:.1f} s"),
        ("Users scanned", str(scanned)),
        ("Users failed", str(scan.users_failed)),
        ("Scans since start", str(snapshot.scans_total)),
    ]
    if snapshot.last_complete_scan_end is not None:
        rows.append(("Last complete scan ended", _when(snapshot.last_complete_scan_end)))
    if progress is not None:
        done, total = progress
        rows.append(("Scan in progress", f"{done}/{total} users done"))
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    failed = sorted(u.username for u in snapshot.users.values() if u.stale)
    if failed:
        items = "".join(
            f"<li>{html.escape(name)}: {html.escape(snapshot.users[name].last_error or '')}</li>"
            for name in failed[:MAX_FAILED_LISTED]
        )
        if len(failed) > MAX_FAILED_LISTED:
            items += f"<li>and {len(failed) - MAX_FAILED_LISTED} more</li>"
        body += f"<tr><th>Failing users</th><td><ul>{items}</ul></td></tr>"
    return f"<table>{body}</table>"


def render_landing_page(
    snapshot: Snapshot, *, version: str, progress: tuple[int, int] | None = None
) -> str:
    """A small self-contained HTML page: name, version, links and the last scan."""
    title = html.escape(NAME)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "ul{margin:0;padding-left:1.2em}</style>"
        "</head><body>"
        f"<h1>{title}</h1>"
        f"<p>Version {html.escape(version)}</p>"
        "<ul>"
        '<li><a href="metrics">Metrics</a> (<code>/metrics</code>)</li>'
        '<li><a href="-/healthy">Health</a> (<code>/-/healthy</code>)</li>'
        '<li><a href="-/ready">Readiness</a> (<code>/-/ready</code>)</li>'
        "</ul>"
        "<h2>Scan</h2>"
        f"{_scan_summary(snapshot, progress)}"
        "</body></html>\n"
    )


def make_app(
    *,
    registry: CollectorRegistry,
    source: Callable[[], Snapshot],
    version: str,
    progress: Callable[[], tuple[int, int] | None] | None = None,
) -> web.Application:
    """The aiohttp application serving the exporter's endpoints.

    ``/metrics`` is prometheus_client's own handler on the private ``registry``
    (text or OpenMetrics by ``Accept``, gzip by ``Accept-Encoding``).
    """

    async def landing(request: web.Request) -> web.Response:
        page = render_landing_page(
            source(), version=version, progress=progress() if progress is not None else None
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(request: web.Request) -> web.Response:
        if source().ready:
            return web.Response(text="OK\n")
        return web.Response(status=503, text="Not ready: first scan in progress\n")

    app = web.Application()
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app

"""The HTTP face of the exporter: ``/metrics``, a landing page and health endpoints.

Handlers only read the current snapshot through ``source``; they never call GitLab
and own no resources. The service layer adds its startup/cleanup hooks to the app.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter.exposition import SnapshotRegistry
from exporter.score import NO_TEAM, TeamEntry, format_number, leaderboard
from exporter.snapshot import Snapshot, UserState

__all__ = ["NAME", "make_app", "metrics_handler", "render_landing_page", "render_leaderboard_page"]

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
        '<li><a href="leaderboard">Leaderboard</a> (<code>/leaderboard</code>)</li>'
        '<li><a href="metrics">Metrics</a> (<code>/metrics</code>)</li>'
        '<li><a href="-/healthy">Health</a> (<code>/-/healthy</code>)</li>'
        '<li><a href="-/ready">Readiness</a> (<code>/-/ready</code>)</li>'
        "</ul>"
        "<h2>Scan</h2>"
        f"{_scan_summary(snapshot, progress)}"
        "</body></html>\n"
    )


LEADERBOARD_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#1f2328;background:#fff}"
    "h1{margin:0 0 .2em}p.meta{color:#59636e;margin:.2em 0 1.2em}"
    "section.team{margin:0 0 1.6em}"
    "h2{font-size:1.15em;margin:0 0 .4em;display:flex;gap:.6em;align-items:baseline}"
    "h2 .team-rank{color:#59636e}h2 .project{font-weight:normal;color:#59636e}"
    "h2 .team-score{margin-left:auto;font-variant-numeric:tabular-nums}"
    "table{border-collapse:collapse;width:100%;table-layout:fixed;"
    "font-variant-numeric:tabular-nums}"
    "th.rank{width:2.5em}th.user{width:12em}th.status{width:22em}"
    "td.user,td.status{overflow-wrap:anywhere}"
    "th,td{padding:.3em .6em;border-bottom:1px solid #d1d9e0;text-align:right}"
    "th{background:#f6f8fa;font-weight:600}"
    "th.user,td.user,th.status,td.status{text-align:left}"
    "tr.stale{background:#fff8c5}tr.stale td.status{color:#9a6700;font-weight:600}"
    "tr.failed{background:#ffebe9}tr.failed td.status{color:#d1242f;font-weight:600}"
    ".badge{display:inline-block;padding:0 .4em;border-radius:.6em;font-size:.85em;"
    "border:1px solid currentColor;margin-right:.4em}"
    "a{color:#0969da}"
)


def _member_status(user: UserState) -> tuple[str, str]:
    """(row class, status cell HTML): stale users show the reason of the failure."""
    if user.last_error is None:
        if user.stats is None:
            return "pending", "waiting for the first scan"
        return "ok", "ok"
    reason = html.escape(user.last_error)
    detail = html.escape(user.last_error_message or "")
    if user.stats is None:
        text = f'<span class="badge">failed</span>{reason}: no numbers yet'
        return "failed", text + (f" ({detail})" if detail else "")
    since = f", numbers from {_when(user.last_success)}" if user.last_success else ""
    text = f'<span class="badge">stale</span>last scan failed: {reason}{html.escape(since)}'
    return "stale", text + (f" ({detail})" if detail else "")


def _team_section(entry: TeamEntry, snapshot: Snapshot) -> str:
    periods = snapshot.periods
    head = (
        '<tr><th class="rank">#</th><th class="user">User</th><th>Score</th><th>Commits</th>'
        + "".join(f"<th>{html.escape(p)}</th>" for p in periods)
        + '<th>MRs merged / total</th><th>Issues closed</th><th class="status">Status</th></tr>'
    )
    rows: list[str] = []
    for member in entry.members:
        user = member.user
        stats = user.stats
        row_class, status = _member_status(user)
        if stats is None:
            numbers = '<td class="score">-</td>' + "<td>-</td>" * (1 + len(periods) + 2)
        else:
            mrs = stats.merge_requests
            numbers = (
                f'<td class="score">{format_number(member.score or 0.0)}</td>'
                f"<td>{stats.commits}</td>"
                + "".join(f"<td>{stats.period_commits.get(p, 0)}</td>" for p in periods)
                + f"<td>{mrs.get('merged', 0)} / {sum(mrs.values())}</td>"
                f"<td>{stats.issues.get('closed', 0)}</td>"
            )
        rows.append(
            f'<tr class="member {row_class}" data-user="{html.escape(user.username)}">'
            f'<td class="rank">{member.rank}</td>'
            f'<td class="user">{html.escape(user.username)}</td>'
            f'{numbers}<td class="status">{status}</td></tr>'
        )
    if entry.name == NO_TEAM:
        title = '<span class="team-name">In no team</span>'
        score = ""
    else:
        title = (
            f'<span class="team-rank">#{entry.rank}</span>'
            f'<span class="team-name">{html.escape(entry.name)}</span>'
        )
        if entry.project:
            title += f'<span class="project">{html.escape(entry.project)}</span>'
        totals = entry.totals
        score = (
            f'<span class="team-score">score {format_number(totals.score)}, '
            f"commits {totals.commits}</span>"
            if totals.members_counted
            else '<span class="team-score">no numbers yet</span>'
        )
    return (
        f'<section class="team" data-team="{html.escape(entry.name)}">'
        f"<h2>{title}{score}</h2>"
        f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def render_leaderboard_page(snapshot: Snapshot) -> str:
    """Teams ranked by score with members ranked inside, from ``snapshot``; one
    self-contained page (inline CSS, no scripts, no external assets)."""
    w = snapshot.weights
    formula = (
        f"score = commits * {format_number(w.commits)}"
        f" + merged merge requests * {format_number(w.merged_merge_requests)}"
        f" + merge requests * {format_number(w.merge_requests)}"
        f" + closed issues * {format_number(w.closed_issues)}"
    )
    scan = snapshot.last_scan
    if scan is None:
        body = "<p>The first scan is in progress; this page fills in when it ends.</p>"
        meta = [formula]
    else:
        meta = [f"Last scan ended {_when(scan.finished)}.", formula]
        sections = [_team_section(entry, snapshot) for entry in leaderboard(snapshot)]
        body = "".join(sections) or "<p>Nobody is configured to be scanned.</p>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="60">'
        f"<title>Leaderboard · {html.escape(NAME)}</title>"
        f"<style>{LEADERBOARD_CSS}</style>"
        "</head><body>"
        '<h1>Leaderboard</h1><p class="meta">'
        + "<br>".join(html.escape(line) for line in meta)
        + '<br><a href="./">Back to the exporter</a></p>'
        f"{body}"
        "</body></html>\n"
    )


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """``/metrics``: prometheus_client's handler, except that on a
    :class:`~exporter.exposition.SnapshotRegistry` the snapshot part comes from its
    per-snapshot cache (same bytes, same content negotiation, gzip by aiohttp)."""
    plain = make_aiohttp_handler(registry)
    if not isinstance(registry, SnapshotRegistry):
        return plain

    async def handler(request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = request.query.getall("name[]", None)  # a filtered scrape
        body = await registry.render(encoder, content_type, names)
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

    async def landing(request: web.Request) -> web.Response:
        page = render_landing_page(
            source(), version=version, progress=progress() if progress is not None else None
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def leaderboard_page(request: web.Request) -> web.Response:
        page = render_leaderboard_page(source())
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def ready(request: web.Request) -> web.Response:
        if source().ready:
            return web.Response(text="OK\n")
        return web.Response(status=503, text="Not ready: first scan in progress\n")

    app = web.Application()
    app.router.add_get("/", landing)
    app.router.add_get("/leaderboard", leaderboard_page)
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app

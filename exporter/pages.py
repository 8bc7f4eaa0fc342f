"""The exporter's HTML pages: the landing page and the leaderboard, from a snapshot.

Pure rendering: a snapshot (and the view asked for) in, one self-contained HTML page
out: inline CSS and inline SVG, no scripts, nothing fetched from elsewhere, so the page
works offline. The web layer caches what these return per snapshot.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from exporter.charts import bar, daily_chart, heatmap, period_class, stacked_bar
from exporter.score import NO_TEAM, MemberEntry, TeamEntry, format_number, leaderboard
from exporter.snapshot import WEEK_HOURS, Snapshot, UserState, UserStats

__all__ = [
    "MAX_TEAM_SECTIONS",
    "NAME",
    "PageView",
    "Sort",
    "leaderboard_parts",
    "parse_sort",
    "render_landing_page",
    "render_leaderboard_page",
]

NAME = "gitlab-activity-exporter"
MAX_FAILED_LISTED = 20  # the landing page stays small with thousands of users
MAX_TEAM_SECTIONS = 20  # team sections on the whole board; every team has its own view
MAX_OVERVIEW_ROWS = 500  # rows of the teams table in one order
COMMIT_ZONE = "commit"
EN_DASH = "\u2013"

# (column, heading, numeric); numeric columns sort descending first
_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("rank", "#", False),
    ("name", "Name", False),
    ("score", "Score", True),
    ("commits", "Commits", True),
    ("mrs", "MRs merged / total", True),
    ("issues", "Issues closed", True),
    ("status", "Status", False),
    ("members", "Members", True),  # teams only
)


@dataclass(frozen=True, slots=True)
class Sort:
    """How the tables are ordered: a column (``rank``, ``name``, ``score``, ``commits``,
    a period's name, ``mrs``, ``issues``, ``status``) and a direction."""

    column: str = "rank"
    descending: bool = False

    def query(self) -> dict[str, str]:
        if self == Sort():
            return {}
        return {"sort": self.column, "order": "desc" if self.descending else "asc"}


def parse_sort(column: str | None, order: str | None, periods: Sequence[str]) -> Sort:
    """The sort a query asks for; an unknown column is the default order."""
    known = {c for c, _, _ in _COLUMNS} | set(periods)
    if not column or column not in known:
        return Sort()
    numeric = column in periods or any(c == column and n for c, _, n in _COLUMNS)
    if order in ("asc", "desc"):
        return Sort(column, order == "desc")
    return Sort(column, numeric)


@dataclass(frozen=True, slots=True)
class PageView:
    """Which page: the whole board, one team (``team``) or one user (``user``)."""

    sort: Sort = Sort()
    team: str | None = None
    user: str | None = None


# --- styles ---------------------------------------------------------------------------

_PERIOD_COLOURS = (
    "#0969da", "#1a7f37", "#bf8700", "#8250df", "#cf222e", "#1b7c83", "#bc4c00", "#57606a",
)  # fmt: skip
_HEAT_COLOURS = ("#ebeff2", "#b6d7f5", "#6fb1ec", "#2f81d7", "#0b4f9c")

CSS = (
    ":root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#fff;--bg:#f6f8fa;"
    "--accent:#0969da;--bad:#d1242f;--warn:#9a6700}"
    "*{box-sizing:border-box}"
    "body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;"
    "color:var(--fg);background:var(--bg)}"
    "a{color:var(--accent)}"
    ".wrap{max-width:1400px;margin:0 auto;padding:0 clamp(.6rem,2.5vw,2rem)}"
    "header.top{background:var(--card);border-bottom:1px solid var(--line);padding:.9rem 0}"
    "header.top h1{font-size:1.45rem;margin:0}"
    ".titlebar{display:flex;flex-wrap:wrap;align-items:baseline;gap:.3rem 1.2rem}"
    ".titlebar nav{display:flex;gap:1rem;font-size:.92rem}"
    "dl.about{display:flex;flex-wrap:wrap;gap:.25rem 1.6rem;margin:.55rem 0 0;font-size:.92rem}"
    "dl.about div{display:flex;flex-wrap:wrap;gap:0 .45em;min-width:0}"
    "dl.about dt{color:var(--muted)}dl.about dd{margin:0;overflow-wrap:anywhere}"
    "p.formula{color:var(--muted);font-size:.85rem;margin:.45rem 0 0;overflow-wrap:anywhere}"
    ".chip{display:inline-flex;align-items:center;gap:.3em;margin-right:.8em;"
    "white-space:nowrap}"
    ".sw{display:inline-block;width:.8em;height:.8em;border-radius:2px}"
    "main{padding-top:1rem;padding-bottom:2rem}"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:8px;"
    "padding:.9rem clamp(.6rem,2vw,1.2rem);margin:0 0 1.1rem;min-width:0}"
    ".card h2{font-size:1.15rem;margin:0 0 .6rem;display:flex;flex-wrap:wrap;"
    "align-items:baseline;gap:.2rem .7rem}"
    ".card h2 .team-rank,.card h2 .project,.card h2 .team-score{color:var(--muted);"
    "font-weight:normal;font-size:.9rem}"
    ".card h2 .team-name{overflow-wrap:anywhere}"
    ".card h2 .open{font-size:.85rem;font-weight:normal;margin-left:auto}"
    "table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}"
    "th,td{padding:.4rem .55rem;border-bottom:1px solid var(--line);text-align:left;"
    "vertical-align:middle;overflow-wrap:break-word}"
    "th{font-size:.8rem;font-weight:600;color:var(--muted);white-space:nowrap}"
    "th a{color:inherit;text-decoration:none}th a:hover{text-decoration:underline}"
    "th[aria-sort] a{color:var(--fg)}"
    "th.num,td.num{text-align:right}td.num{white-space:nowrap}th.num{white-space:normal}"
    "td.rank,th.rank{width:2.5rem;color:var(--muted)}"
    "td.metric{min-width:7.5rem;width:18%}td.who{min-width:8rem}"
    ".metric .line{display:flex;align-items:center;gap:.5rem}"
    ".metric .value{min-width:2.5em;text-align:right;font-weight:600}"
    "svg.bar{flex:1 1 auto;min-width:3rem;height:.75rem;display:block}"
    "svg.bar .track{fill:#eef1f4}svg.bar .fill{fill:#2da44e}"
    ".split{display:flex;flex-wrap:wrap;gap:0 .6rem;font-size:.75rem;color:var(--muted);"
    "margin-top:.15rem}"
    ".split span{display:inline-flex;align-items:center;gap:.25em}"
    ".who .display{font-weight:600}.who .username{color:var(--muted);font-size:.85rem}"
    ".who .line{display:flex;flex-wrap:wrap;gap:0 .5em;align-items:baseline}"
    "td.status{min-width:10rem;font-size:.88rem}"
    ".badge{display:inline-block;padding:0 .45em;border-radius:1em;font-size:.78rem;"
    "font-weight:600;border:1px solid currentColor;margin-right:.35em}"
    "tr.stale{background:#fff8c5}tr.stale .badge,tr.stale .reason{color:var(--warn)}"
    "tr.failed{background:#ffebe9}tr.failed .badge,tr.failed .reason{color:var(--bad)}"
    ".status .detail,.status .since{display:block;color:var(--muted);font-size:.8rem;"
    "overflow-wrap:anywhere}"
    ".charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,21rem),1fr));"
    "gap:.6rem 1.5rem;margin:0 0 .8rem}"
    "figure{margin:0;min-width:0}figcaption{font-size:.8rem;color:var(--muted);"
    "margin-bottom:.2rem}"
    "svg.heatmap,svg.daily{display:block;width:100%;max-width:34rem;height:auto}"
    "svg text{font-size:9px;fill:var(--muted)}svg .y-label{text-anchor:end}"
    "svg .x-label.end{text-anchor:end}"
    "svg .axis{stroke:var(--line)}svg rect.day{fill:#2f81d7}svg rect.day.weekend{fill:#8c6cd6}"
    ".empty{color:var(--muted)}"
    "table.facts{width:auto}table.facts th{font-size:.9rem;padding-right:1.5rem}"
    "table.facts td{white-space:normal}"
    "dl.numbers{display:grid;grid-template-columns:minmax(0,max-content) minmax(0,1fr);"
    "gap:.2rem 1rem;margin:0}"
    "dl.numbers dt{color:var(--muted)}dl.numbers dd{margin:0;overflow-wrap:anywhere}"
    + "".join(f".p{i}{{fill:{c};background:{c}}}" for i, c in enumerate(_PERIOD_COLOURS))
    + ".p-other{fill:#afb8c1;background:#afb8c1}"
    + "".join(f".h{i}{{fill:{c}}}" for i, c in enumerate(_HEAT_COLOURS))
    # narrow screens: every row of the two ranking tables becomes a small card
    + "@media (max-width:960px){"
    "table.rows thead{display:none}"
    "table.rows,table.rows tbody{display:block}"
    "table.rows tr{display:grid;grid-template-columns:2rem minmax(0,1fr) minmax(0,1fr);"
    "gap:.3rem .7rem;padding:.55rem .2rem;border-bottom:1px solid var(--line)}"
    "table.rows td{display:block;border:0;padding:0;width:auto;min-width:0;"
    "text-align:left;white-space:normal}"
    "table.rows td.who,table.rows td.status,table.rows td.team{grid-column:2/-1}"
    "table.rows td.metric{grid-column:2/-1}"
    "table.rows td.rank{grid-row:1/span 6}"
    "table.rows td[data-label]:not(.who):not(.team)::before{content:attr(data-label);"
    "display:block;font-size:.72rem;color:var(--muted)}"
    "}"
)


# --- small helpers ----------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _href(view: PageView, **changes: str | None) -> str:
    """A link to the leaderboard with the current view's query changed."""
    params: dict[str, str | None] = {"team": view.team, "user": view.user}
    params.update(view.sort.query())
    params.update(changes)
    query = urlencode({k: v for k, v in params.items() if v})
    return "leaderboard?" + query if query else "leaderboard"


def _page(title: str, header: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="60">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><div class="wrap">{header}</div></header>'
        f'<main class="wrap">{body}</main></body></html>\n'
    )


# --- the pictures' data ---------------------------------------------------------------


def _sum_hours(stats: Iterable[UserStats]) -> list[int]:
    total = [0] * WEEK_HOURS
    for s in stats:
        if len(s.hours) == WEEK_HOURS:
            for i, n in enumerate(s.hours):
                total[i] += n
    return total


def _sum_days(stats: Iterable[UserStats]) -> dict[str, int]:
    total: dict[str, int] = {}
    for s in stats:
        for day, n in s.days.items():
            total[day] = total.get(day, 0) + n
    return total


def _date_range(snapshot: Snapshot, days: Mapping[str, int]) -> tuple[date, date] | None:
    """The window's local dates (UTC ones when each commit keeps its own offset), widened
    to any date that has commits."""
    settings = snapshot.settings
    known = [date.fromisoformat(d) for d in days]
    if snapshot.window_end is not None:
        zone = UTC if settings.timezone == COMMIT_ZONE else ZoneInfo(settings.timezone)
        end = datetime.fromtimestamp(snapshot.window_end, zone)
        start = end - timedelta(days=settings.lookback_days)
        known += [start.date(), (end - timedelta(microseconds=1)).date()]
    if not known:
        return None
    return min(known), max(known)


def _pictures(snapshot: Snapshot, stats: Sequence[UserStats], whose: str) -> str:
    hours = _sum_hours(stats)
    days = _sum_days(stats)
    span = _date_range(snapshot, days)
    zone = _zone_text(snapshot.settings.timezone)
    heat = heatmap(hours, caption=f"{whose}: commits by weekday and local hour")
    if span is None:
        daily = '<p class="empty">no window yet</p>'
    else:
        daily = daily_chart(days, *span, caption=f"{whose}: commits per day")
    return (
        '<div class="charts">'
        f"<figure><figcaption>When {_e(whose)} commits: weekday \u00d7 hour ({_e(zone)})"
        f"</figcaption>{heat}</figure>"
        f"<figure><figcaption>Commits per day</figcaption>{daily}</figure>"
        "</div>"
    )


# --- header -------------------------------------------------------------------------------


def _zone_text(zone: str) -> str:
    return "each commit's own UTC offset" if zone == COMMIT_ZONE else zone


def _legend(snapshot: Snapshot) -> str:
    specs = dict(snapshot.settings.periods)
    chips = []
    for name in snapshot.periods:
        spec = specs.get(name, "")
        text = f"{name} {spec.replace('-', EN_DASH)}" if spec else f"{name}: outside every period"
        chips.append(
            f'<span class="chip"><i class="sw {period_class(snapshot.periods, name)}"></i>'
            f"{_e(text)}</span>"
        )
    return "".join(chips)


def _header(snapshot: Snapshot, title: str) -> str:
    settings = snapshot.settings
    about: list[tuple[str, str]] = []
    if settings.gitlab_url:
        url = _e(settings.gitlab_url)
        about.append(("GitLab", f'<a href="{url}">{url}</a>'))
    days = format_number(settings.lookback_days)
    window = f"last {days} days"
    if snapshot.window_end is not None:
        start = snapshot.window_end - settings.lookback_days * 86400
        window += f" ({_when(start)} \u2013 {_when(snapshot.window_end)})"
    about.append(("Window", _e(window)))
    about.append(("Time zone", _e(_zone_text(settings.timezone))))
    about.append(("Periods", _legend(snapshot)))
    scan = snapshot.last_scan
    if scan is not None:
        failed = f", {scan.users_failed} failed" if scan.users_failed else ""
        about.append(("Last scan", _e(f"{_when(scan.finished)}, {scan.users_total} users{failed}")))
    w = snapshot.weights
    formula = (
        f"score = commits \u00d7 {format_number(w.commits)}"
        f" + merged merge requests \u00d7 {format_number(w.merged_merge_requests)}"
        f" + merge requests \u00d7 {format_number(w.merge_requests)}"
        f" + closed issues \u00d7 {format_number(w.closed_issues)}"
    )
    items = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in about)
    return (
        f'<div class="titlebar"><h1>{_e(title)}</h1><nav><a href="leaderboard">Leaderboard</a>'
        '<a href="./">Exporter</a><a href="metrics">Metrics</a></nav></div>'
        f'<dl class="about">{items}</dl><p class="formula">{_e(formula)}</p>'
    )


# --- sorting --------------------------------------------------------------------------

_STATUS_ORDER = {"failed": 0, "stale": 1, "pending": 2, "ok": 3}


def _stats_key(column: str, stats: UserStats | None, score: float | None) -> float:
    if stats is None:
        return float("-inf")
    if column == "score":
        return score or 0.0
    if column == "commits":
        return stats.commits
    if column == "mrs":
        return stats.merge_requests.get("merged", 0) + sum(stats.merge_requests.values()) / 1e6
    if column == "issues":
        return stats.issues.get("closed", 0)
    return stats.period_commits.get(column, 0)


def _name_key(name: str) -> str:
    """Names in alphabetical order as people read it: accents after the letter's plain
    form (É with E), case ignored."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return plain.casefold() + "\0" + name.casefold()


def _member_key(column: str, member: MemberEntry) -> tuple[float, str]:
    if column == "name":
        return (0.0, _name_key(_display(member.user)))
    if column == "status":
        return (_STATUS_ORDER[_status_class(member.user)], "")
    if column == "members":  # a team's column: members keep their rank
        return (0.0, "")
    return (_stats_key(column, member.user.stats, member.score), "")


def _sorted_members(members: Sequence[MemberEntry], sort: Sort) -> list[MemberEntry]:
    if sort.column == "rank":
        return list(reversed(members)) if sort.descending else list(members)
    return sorted(members, key=partial(_member_key, sort.column), reverse=sort.descending)


def _team_failing(entry: TeamEntry) -> int:
    return sum(1 for m in entry.members if m.user.stale)


def _team_key(column: str, team: TeamEntry) -> tuple[float, str]:
    if column == "name":
        return (0.0, _name_key(team.name))
    if column == "status":
        return (_team_failing(team), "")
    if column == "score":
        return (team.totals.score, "")
    if column == "commits":
        return (team.totals.commits, "")
    if column == "members":
        return (len(team.members), "")
    if column in ("mrs", "issues"):
        with_stats = [m for m in team.members if m.user.stats is not None]
        return (sum(_stats_key(column, m.user.stats, m.score) for m in with_stats), "")
    return (team.totals.period_commits.get(column, 0), "")


def _sorted_teams(entries: Sequence[TeamEntry], sort: Sort) -> list[TeamEntry]:
    if sort.column == "rank":
        return list(reversed(entries)) if sort.descending else list(entries)
    return sorted(entries, key=partial(_team_key, sort.column), reverse=sort.descending)


def _head(view: PageView, columns: Sequence[tuple[str, str, bool, str]]) -> str:
    """Header cells that sort by their column: (column, heading, numeric, css class)."""
    cells = []
    for column, heading, numeric, css in columns:
        current = view.sort.column == column
        descending = not view.sort.descending if current else numeric
        arrow = ""
        aria = ""
        if current:
            arrow = " ▼" if view.sort.descending else " ▲"
            aria = f' aria-sort="{"descending" if view.sort.descending else "ascending"}"'
        link = _href(view, sort=column, order="desc" if descending else "asc")
        cells.append(f'<th class="{css}"{aria}><a href="{_e(link)}">{_e(heading)}{arrow}</a></th>')
    return "<tr>" + "".join(cells) + "</tr>"


# --- cells ----------------------------------------------------------------------------------


def _metric_cell(label: str, value: float, maximum: float, css: str) -> str:
    text = format_number(value)
    return (
        f'<td class="metric {css}" data-label="{_e(label)}"><div class="line">'
        f'<span class="value">{text}</span>{bar(value, maximum, label=f"{label}: {text}")}'
        "</div></td>"
    )


def _commits_cell(periods: Sequence[str], counts: Mapping[str, int], total: int, top: int) -> str:
    parts = [(p, counts.get(p, 0)) for p in periods]
    split = "".join(
        f'<span title="{_e(p)}"><i class="sw {period_class(periods, p)}"></i>{n}</span>'
        for p, n in parts
    )
    return (
        '<td class="metric commits" data-label="Commits"><div class="line">'
        f'<span class="value">{total}</span>{stacked_bar(parts, top, periods)}</div>'
        f'<div class="split">{split}</div></td>'
    )


def _display(user: UserState) -> str:
    stats = user.stats
    return (stats.display_name if stats is not None else "") or user.username


def _status_class(user: UserState) -> str:
    if user.last_error is not None:
        return "failed" if user.stats is None else "stale"
    return "ok" if user.stats is not None else "pending"


def _status_cell(user: UserState) -> str:
    kind = _status_class(user)
    if kind == "ok":
        body = "ok"
    elif kind == "pending":
        body = "waiting for the first scan"
    else:
        reason = _e(user.last_error or "")
        body = f'<span class="badge">{kind}</span><span class="reason">{reason}</span>'
        since = []
        if user.failing_since is not None:
            since.append(f"failing since {_when(user.failing_since)}")
        if kind == "stale" and user.last_success is not None:
            since.append(f"numbers from {_when(user.last_success)}")
        elif kind == "failed":
            since.append("no numbers yet")
        body += f'<span class="since">{_e("; ".join(since))}</span>'
        if user.last_error_message:
            body += f'<span class="detail">{_e(user.last_error_message)}</span>'
    return f'<td class="status" data-label="Status">{body}</td>'


def _who_cell(user: UserState) -> str:
    display = _e(_display(user))
    stats = user.stats
    if stats is not None and stats.web_url:
        name = f'<a class="display" href="{_e(stats.web_url)}">{display}</a>'
    else:
        name = f'<span class="display">{display}</span>'
    own = _e(_href(PageView(), user=user.username))
    return (
        f'<td class="who" data-label="Member"><div class="line">{name}'
        f'<a class="username" href="{own}">@{_e(user.username)}</a></div></td>'
    )


# --- tables ---------------------------------------------------------------------------------


def _member_columns() -> list[tuple[str, str, bool, str]]:
    return [
        ("rank", "#", False, "rank"),
        ("name", "Member", False, "who"),
        ("score", "Score", True, "metric"),
        ("commits", "Commits", True, "metric"),
        ("mrs", "MRs merged / total", True, "num"),
        ("issues", "Issues closed", True, "num"),
        ("status", "Status", False, "status"),
    ]


def _members_table(entry: TeamEntry, snapshot: Snapshot, view: PageView) -> str:
    periods = snapshot.periods
    members = _sorted_members(entry.members, view.sort)
    top_score = max((m.score or 0.0 for m in members), default=0.0)
    top_commits = max((m.user.stats.commits for m in members if m.user.stats), default=0)
    rows = []
    for member in members:
        user = member.user
        stats = user.stats
        if stats is None:
            numbers = (
                '<td class="metric score" data-label="Score">-</td>'
                '<td class="metric commits" data-label="Commits">-</td>'
                '<td class="num" data-label="MRs merged / total">-</td>'
                '<td class="num" data-label="Issues closed">-</td>'
            )
        else:
            mrs = stats.merge_requests
            numbers = (
                _metric_cell("Score", member.score or 0.0, top_score, "score")
                + _commits_cell(periods, stats.period_commits, stats.commits, top_commits)
                + f'<td class="num mrs" data-label="MRs merged / total">'
                f"{mrs.get('merged', 0)} / {sum(mrs.values())}</td>"
                f'<td class="num issues" data-label="Issues closed">'
                f"{stats.issues.get('closed', 0)}</td>"
            )
        rows.append(
            f'<tr class="member {_status_class(user)}" data-user="{_e(user.username)}">'
            f'<td class="rank">{member.rank}</td>{_who_cell(user)}{numbers}'
            f"{_status_cell(user)}</tr>"
        )
    return (
        f'<table class="rows members"><thead>{_head(view, _member_columns())}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _team_title(entry: TeamEntry) -> str:
    if entry.name == NO_TEAM:
        return '<span class="team-name">In no team</span>'
    title = (
        f'<span class="team-rank">#{entry.rank}</span>'
        f'<span class="team-name">{_e(entry.name)}</span>'
    )
    if entry.project:
        title += f'<span class="project">{_e(entry.project)}</span>'
    return title


def _team_section(entry: TeamEntry, snapshot: Snapshot, view: PageView, *, link: bool) -> str:
    totals = entry.totals
    if totals.members_counted:
        summary = (
            f"score {format_number(totals.score)} · {totals.commits} commits · "
            f"{len(entry.members)} members"
        )
    else:
        summary = "no numbers yet"
    failing = _team_failing(entry)
    if failing:
        summary += f" · {failing} failing"
    opener = ""
    if link and entry.name != NO_TEAM:
        opener = f'<a class="open" href="{_e(_href(PageView(), team=entry.name))}">team view</a>'
    stats = [m.user.stats for m in entry.members if m.user.stats is not None]
    whose = "these users" if entry.name == NO_TEAM else entry.name
    return (
        f'<section class="card team" data-team="{_e(entry.name)}" '
        f'id="team-{_e(entry.rank or 0)}">'
        f'<h2>{_team_title(entry)}<span class="team-score">{_e(summary)}</span>{opener}</h2>'
        f"{_pictures(snapshot, stats, whose)}"
        f"{_members_table(entry, snapshot, view)}</section>"
    )


def _overview(teams: Sequence[TeamEntry], snapshot: Snapshot, view: PageView) -> Iterator[str]:
    """The teams table in parts, ``teams`` in the view's order; at most
    :data:`MAX_OVERVIEW_ROWS` rows (another order shows the others)."""
    if not teams:
        return
    periods = snapshot.periods
    top_score = max((t.totals.score for t in teams), default=0.0)
    top_commits = max((t.totals.commits for t in teams), default=0)
    columns = [
        ("rank", "#", False, "rank"),
        ("name", "Team", False, "team"),
        ("score", "Score", True, "metric"),
        ("commits", "Commits", True, "metric"),
    ]
    head = _head(view, columns)
    head = head[: -len("</tr>")] + f'<th class="num">{_head_link(view, "members", "Members")}</th>'
    head += f'<th class="num">{_head_link(view, "status", "Failing")}</th></tr>'
    yield (
        '<section class="card overview"><h2>Teams</h2>'
        f'<table class="rows teams"><thead>{head}</thead><tbody>'
    )
    for team in teams[:MAX_OVERVIEW_ROWS]:
        failing = _team_failing(team)
        link = _e(_href(PageView(), team=team.name))
        project = f' <span class="project">{_e(team.project)}</span>' if team.project else ""
        yield (
            f'<tr class="team-row" data-team="{_e(team.name)}">'
            f'<td class="rank">{team.rank}</td>'
            f'<td class="team" data-label="Team"><a href="{link}">{_e(team.name)}</a>'
            f"{project}</td>"
            + _metric_cell("Score", team.totals.score, top_score, "score")
            + _commits_cell(periods, team.totals.period_commits, team.totals.commits, top_commits)
            + f'<td class="num members-count" data-label="Members">{len(team.members)}</td>'
            f'<td class="num failing" data-label="Failing">{failing}</td></tr>'
        )
    more = ""
    if len(teams) > MAX_OVERVIEW_ROWS:
        more = (
            f'<p class="more">The first {MAX_OVERVIEW_ROWS} of {len(teams)} teams in this '
            "order; sort by a column (or the other way) to see others.</p>"
        )
    yield f"</tbody></table>{more}</section>"


def _head_link(view: PageView, column: str, heading: str) -> str:
    descending = not view.sort.descending if view.sort.column == column else True
    link = _href(view, sort=column, order="desc" if descending else "asc")
    return f'<a href="{_e(link)}">{_e(heading)}</a>'


# --- pages --------------------------------------------------------------------------------


def _user_page(snapshot: Snapshot, user: UserState, entries: Sequence[TeamEntry]) -> str:
    stats = user.stats
    teams = [e for e in entries if e.name != NO_TEAM and any(m.user is user for m in e.members)]
    team_links = ", ".join(
        f'<a href="{_e(_href(PageView(), team=t.name))}">{_e(t.name)}</a>' for t in teams
    )
    rows: list[tuple[str, str]] = [("Teams", team_links or "none")]
    if stats is not None:
        if stats.web_url:
            url = _e(stats.web_url)
            rows.append(("GitLab profile", f'<a href="{url}">{url}</a>'))
        member = next((m for t in entries for m in t.members if m.user is user), None)
        score = member.score if member is not None and member.score is not None else 0.0
        rows.append(("Score", format_number(score)))
        rows.append(("Commits", str(stats.commits)))
        rows += [(f"Commits, {p}", str(stats.period_commits.get(p, 0))) for p in snapshot.periods]
        mrs = stats.merge_requests
        merged = f"{mrs.get('merged', 0)} / {sum(mrs.values())}"
        rows.append(("Merge requests merged / total", merged))
        rows.append(("Issues closed", str(stats.issues.get("closed", 0))))
        rows.append(
            ("Projects", ", ".join(f"{k} {v}" for k, v in stats.projects.items()) or "none")
        )
    cell = _status_cell(user)
    status = cell[len('<td class="status" data-label="Status">') : -len("</td>")]
    rows.insert(0, ("Status", f'<div class="status">{status}</div>'))
    numbers = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    pictures = _pictures(snapshot, [stats] if stats is not None else [], _display(user))
    return (
        f'<section class="card user {_status_class(user)}" data-user="{_e(user.username)}">'
        f'<h2><span class="team-name">{_e(_display(user))}</span>'
        f'<span class="project">@{_e(user.username)}</span></h2>'
        f'{pictures}<dl class="numbers">{numbers}</dl></section>'
    )


class NotFound(LookupError):
    """The view names a team or user the snapshot does not have."""


def _split_page(title: str, header: str) -> tuple[str, str]:
    """The page around its body: (everything before the body, everything after)."""
    head, tail = _page(title, header, "\0").split("\0")
    return head, tail


def leaderboard_parts(
    snapshot: Snapshot,
    view: PageView | None = None,
    entries: Sequence[TeamEntry] | None = None,
) -> Iterator[str]:
    """The leaderboard page in parts (joined: the page), so that a caller can pause
    between them: a team overview, then each team's pictures and members; or one team's
    or one user's view. ``entries``: ``leaderboard(snapshot)``, when already computed.
    :class:`NotFound` for a team or user not in ``snapshot``."""
    view = view or PageView()
    if snapshot.last_scan is None:
        header = _header(snapshot, "Leaderboard")
        body = '<p class="card">The first scan is in progress; this page fills in when it ends.</p>'
        yield _page(f"Leaderboard \u00b7 {NAME}", header, body)
        return
    entries = leaderboard(snapshot) if entries is None else entries
    if view.user is not None:
        user = snapshot.users.get(view.user)
        if user is None:
            raise NotFound(f"no user {view.user!r}")
        header = _header(snapshot, f"{_display(user)} \u00b7 Leaderboard")
        title = f"{_display(user)} \u00b7 {NAME}"
        yield _page(title, header, _user_page(snapshot, user, entries))
        return
    if view.team is not None:
        entry = next((e for e in entries if e.name == view.team and e.name != NO_TEAM), None)
        if entry is None:
            raise NotFound(f"no team {view.team!r}")
        header = _header(snapshot, f"{entry.name} \u00b7 Leaderboard")
        body = _team_section(entry, snapshot, view, link=False)
        yield _page(f"{entry.name} \u00b7 {NAME}", header, body)
        return
    teams = _sorted_teams([e for e in entries if e.name != NO_TEAM], view.sort)
    loners = [e for e in entries if e.name == NO_TEAM]
    head, tail = _split_page(f"Leaderboard \u00b7 {NAME}", _header(snapshot, "Leaderboard"))
    yield head
    if not teams and not loners:
        yield '<p class="card">Nobody is configured to be scanned.</p>'
    yield from _overview(teams, snapshot, view)
    for entry in teams[:MAX_TEAM_SECTIONS]:
        yield _team_section(entry, snapshot, view, link=True)
    if len(teams) > MAX_TEAM_SECTIONS:
        more = len(teams) - MAX_TEAM_SECTIONS
        yield (
            f'<p class="card">{more} more team{"" if more == 1 else "s"}: open each from the '
            "overview above.</p>"
        )
    for entry in loners:
        yield _team_section(entry, snapshot, view, link=False)
    yield tail


def render_leaderboard_page(
    snapshot: Snapshot,
    view: PageView | None = None,
    entries: Sequence[TeamEntry] | None = None,
) -> str:
    """The whole leaderboard page at once; see :func:`leaderboard_parts`."""
    return "".join(leaderboard_parts(snapshot, view, entries))


# --- landing page ---------------------------------------------------------------------------


def _when_exactly(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _scan_summary(snapshot: Snapshot, progress: tuple[int, int] | None) -> str:
    scan = snapshot.last_scan
    if scan is None:
        text = "First scan in progress"
        if progress is not None:
            done, total = progress
            text += f": {done}/{total} users done"
        return f"<p>{_e(text)}.</p>"
    scanned = scan.users_total - scan.users_failed
    rows = [
        ("Last scan ended", _when_exactly(scan.finished)),
        ("Duration", f"{scan.duration:.1f} s"),
        ("Users scanned", str(scanned)),
        ("Users failed", str(scan.users_failed)),
        ("Scans since start", str(snapshot.scans_total)),
    ]
    if snapshot.last_complete_scan_end is not None:
        rows.append(("Last complete scan ended", _when_exactly(snapshot.last_complete_scan_end)))
    if progress is not None:
        done, total = progress
        rows.append(("Scan in progress", f"{done}/{total} users done"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    failed = sorted(u.username for u in snapshot.users.values() if u.stale)
    if failed:
        items = "".join(
            f'<li><a href="{_e(_href(PageView(), user=name))}">{_e(name)}</a>: '
            f"{_e(snapshot.users[name].last_error or '')}</li>"
            for name in failed[:MAX_FAILED_LISTED]
        )
        if len(failed) > MAX_FAILED_LISTED:
            items += f"<li>and {len(failed) - MAX_FAILED_LISTED} more</li>"
        body += f"<tr><th>Failing users</th><td><ul>{items}</ul></td></tr>"
    return f'<table class="facts">{body}</table>'


def render_landing_page(
    snapshot: Snapshot, *, version: str, progress: tuple[int, int] | None = None
) -> str:
    """A small self-contained HTML page: name, version, links and the last scan."""
    header = (
        f'<div class="titlebar"><h1>{_e(NAME)}</h1>'
        f'<span class="project">version {_e(version)}</span></div>'
        '<p class="formula">A Prometheus exporter of GitLab activity: commits by local time '
        "of day, projects, merge requests, issues and per-user scan failures.</p>"
    )
    links = (
        '<section class="card"><h2>Pages</h2><ul>'
        '<li><a href="leaderboard">Leaderboard</a> (<code>/leaderboard</code>): teams and '
        "people ranked, with when they work</li>"
        '<li><a href="metrics">Metrics</a> (<code>/metrics</code>): for Prometheus</li>'
        '<li><a href="-/healthy">Health</a> (<code>/-/healthy</code>)</li>'
        '<li><a href="-/ready">Readiness</a> (<code>/-/ready</code>): ready once the first '
        "scan has ended</li></ul></section>"
    )
    scan = f'<section class="card"><h2>Scan</h2>{_scan_summary(snapshot, progress)}</section>'
    return _page(NAME, header, links + scan)

"""``/leaderboard``: the server-rendered page, and what a real headless Chromium shows of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, async_playwright

from exporter import __version__, pages
from exporter import web as web_module
from exporter.collectors import build_registry
from exporter.config import parse_config
from exporter.demo import MISSING_USER, run_demo
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import FaultRule, SimulatorServer
from exporter.simulator.truth import expected_activity
from exporter.snapshot import (
    ScanSummary,
    Snapshot,
    UserState,
    UserStats,
    frozen_map,
    settings_of,
)
from exporter.web import PAGES, make_app, render_leaderboard_page
from tests.conftest import PERIODS, config_document

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
BUILD = Path(__file__).resolve().parent.parent / "build"

# the previous tool's weights, written out here independently of the exporter
WEIGHTS = {"commits": 1, "merged": 5, "merge_requests": 2, "closed_issues": 3}


def score_of(stats: UserStats) -> float:
    mrs = stats.merge_requests
    return (
        WEIGHTS["commits"] * stats.commits
        + WEIGHTS["merged"] * mrs.get("merged", 0)
        + WEIGHTS["merge_requests"] * sum(mrs.values())
        + WEIGHTS["closed_issues"] * stats.issues.get("closed", 0)
    )


# --- reading the page back ---------------------------------------------------------------


@dataclass
class ShownRow:
    rank: str = ""
    user: str = ""
    score: str = ""
    status: str = ""
    classes: list[str] = field(default_factory=list)


@dataclass
class ShownTeam:
    name: str
    heading: str = ""
    rows: list[ShownRow] = field(default_factory=list)


class LeaderboardReader(HTMLParser):
    """The team sections and their member rows of a leaderboard page, as text, in
    document order (the overview table's rows are ``overview``)."""

    def __init__(self) -> None:
        super().__init__()
        self.teams: list[ShownTeam] = []
        self.overview: list[str] = []
        self.links: list[str] = []
        self._cell: str | None = None
        self._in_h2 = False
        self._in_value = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag == "section" and "team" in classes:
            self.teams.append(ShownTeam(name=attributes.get("data-team") or ""))
        elif tag == "tr" and "team-row" in classes:
            self.overview.append(attributes.get("data-team") or "")
        elif tag == "h2" and self.teams:
            self._in_h2 = True
        elif tag == "tr" and "member" in classes:
            self.teams[-1].rows.append(
                ShownRow(user=attributes.get("data-user") or "", classes=classes)
            )
        elif tag == "td" and self.teams and self.teams[-1].rows:
            self._cell = next((c for c in ("rank", "score", "status") if c in classes), None)
        elif tag == "span" and "value" in classes:
            self._in_value = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False
        elif tag == "span":
            self._in_value = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.teams[-1].heading += data
        if self._cell == "score" and not self._in_value and data.strip() != "-":
            return  # the bar's tooltip, not the number
        if self._cell is not None:
            row = self.teams[-1].rows[-1]
            setattr(row, self._cell, getattr(row, self._cell) + data)


def read_page(page: str) -> LeaderboardReader:
    reader = LeaderboardReader()
    reader.feed(page)
    reader.close()
    return reader


def expected_ranking(snapshot: Snapshot) -> list[tuple[str, list[str]]]:
    """Teams by score (then commits, then name, case-insensitively), members likewise
    (members without numbers last); users in no team at the end."""
    users = snapshot.users

    def member_key(name: str) -> tuple[bool, float, int, str, str]:
        stats = users[name].stats
        if stats is None:
            return (True, 0.0, 0, name.casefold(), name)
        return (False, -score_of(stats), -stats.commits, name.casefold(), name)

    def team_key(team: str) -> tuple[bool, float, int, str, str]:
        with_stats = [users[m].stats for m in snapshot.teams[team] if users[m].stats]
        score = sum(score_of(s) for s in with_stats if s is not None)
        commits = sum(s.commits for s in with_stats if s is not None)
        return (not with_stats, -score, -commits, team.casefold(), team)

    ranking = [
        (team, sorted(snapshot.teams[team], key=member_key))
        for team in sorted(snapshot.teams, key=team_key)
    ]
    in_teams = {m for members in snapshot.teams.values() for m in members}
    loners = sorted((u for u in users if u not in in_teams), key=member_key)
    if loners:
        ranking.append(("", loners))
    return ranking


# --- the page as served (no browser) -------------------------------------------------------


def hand_snapshot() -> Snapshot:
    def stats(commits: int, merged: int, total: int, closed: int) -> UserStats:
        return UserStats(
            commits=commits,
            period_commits=frozen_map({"morning": commits}),
            projects=frozen_map({}),
            merge_requests=frozen_map({"opened": total - merged, "merged": merged, "closed": 0}),
            issues=frozen_map({"opened": 0, "closed": closed}),
        )

    users = {
        "ann": UserState("ann", stats=stats(4, 1, 2, 0), last_success=1.0),  # 4+5+4 = 13
        "bo": UserState("bo", stats=stats(20, 0, 0, 1), last_success=1.0),  # 23
        "cy": UserState(  # 13 from the last good scan, then failed
            "cy",
            stats=stats(13, 0, 0, 0),
            last_success=1_700_000_000.0,
            last_error="timeout",
            last_error_message="GET /users/:id/projects: timed out",
        ),
        "<b>x</b>": UserState("<b>x</b>", last_error="not_found"),
    }
    return Snapshot(
        users=frozen_map(users),
        teams=frozen_map({"Équipe A": ("ann", "cy", "<b>x</b>"), "solo": ("bo",)}),
        team_projects=frozen_map({"Équipe A": "Data Lake"}),
        periods=("morning",),
        last_scan=ScanSummary(started=0.0, finished=10.0, users_total=4, users_failed=2),
        scans_total=1,
    )


def app_for(snapshot: Snapshot) -> web.Application:
    return make_app(
        registry=build_registry(lambda: snapshot, version="1"),
        source=lambda: snapshot,
        version="1",
    )


async def test_leaderboard_page_ranks_and_marks_stale_users(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(hand_snapshot()))
    resp = await client.get("/leaderboard")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    page = await resp.text()
    shown = read_page(page)
    # Équipe A: ann 13 + cy 13 = 26 beats solo: bo 23; cy ties ann on score with more commits
    assert [(t.name, [r.user for r in t.rows]) for t in shown.teams] == [
        ("Équipe A", ["cy", "ann", "<b>x</b>"]),
        ("solo", ["bo"]),
    ]
    assert [r.rank for r in shown.teams[0].rows] == ["1", "2", "3"]
    assert [r.score for r in shown.teams[0].rows] == ["13", "13", "-"]
    assert "#1" in shown.teams[0].heading and "Data Lake" in shown.teams[0].heading
    assert "score 26" in shown.teams[0].heading and "#2" in shown.teams[1].heading
    stale = shown.teams[0].rows[0]
    assert "stale" in stale.classes
    assert "stale" in stale.status and "timeout" in stale.status and "timed out" in stale.status
    failed = shown.teams[0].rows[2]
    assert "failed" in failed.classes and "not_found" in failed.status
    assert "ok" in shown.teams[0].rows[1].classes and shown.teams[0].rows[1].status == "ok"
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    # self-contained: inline CSS, no scripts, nothing fetched from elsewhere
    assert "<style>" in page and "<script" not in page
    assert "http://" not in page and "https://" not in page and "src=" not in page


async def test_leaderboard_before_the_first_scan(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(Snapshot()))
    page = await (await client.get("/leaderboard")).text()
    assert "first scan is in progress" in page
    assert read_page(page).teams == []


async def test_landing_page_links_the_leaderboard(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(hand_snapshot()))
    text = await (await client.get("/")).text()
    landing = read_page(text)
    assert "leaderboard" in landing.links
    # styled like the leaderboard, self-contained; failing users linked to their view
    assert "<style>" in text and "<script" not in text and "leaderboard?user=cy" in landing.links


# --- what the page renders once per snapshot, sorting, views -----------------------------


async def test_the_page_is_rendered_once_per_snapshot(aiohttp_client: ClientFactory) -> None:
    current = {"snapshot": hand_snapshot()}
    app = make_app(
        registry=build_registry(lambda: current["snapshot"], version="1"),
        source=lambda: current["snapshot"],
        version="1",
    )
    client = await aiohttp_client(app)
    pages = app[PAGES]
    bodies = [await (await client.get("/leaderboard")).read() for _ in range(3)]
    assert pages.renders == 1 and bodies[0] == bodies[1] == bodies[2]
    await client.get("/leaderboard?sort=commits")
    await client.get("/leaderboard?sort=commits")
    assert pages.renders == 2  # one more view, once
    current["snapshot"] = replace(current["snapshot"], scans_total=2)
    await client.get("/leaderboard")
    assert pages.renders == 3  # a new snapshot is rendered again


async def test_sorting_by_a_column_and_unknown_views(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(hand_snapshot()))

    async def members(query: str) -> list[str]:
        page = await (await client.get(f"/leaderboard?{query}")).text()
        team = next(t for t in read_page(page).teams if t.name == "Équipe A")
        return [r.user for r in team.rows]

    assert await members("") == ["cy", "ann", "<b>x</b>"]  # by rank
    # Équipe A by commits ascending: the failed user without numbers first, then 4, 13
    assert await members("sort=commits&order=asc") == ["<b>x</b>", "ann", "cy"]
    assert await members("sort=commits") == ["cy", "ann", "<b>x</b>"]  # numbers: descending
    assert await members("sort=name") == ["<b>x</b>", "ann", "cy"]
    assert await members("sort=rank&order=desc") == ["<b>x</b>", "ann", "cy"]
    assert await members("sort=status") == ["<b>x</b>", "cy", "ann"]  # failed, stale, ok
    assert await members("sort=nonsense") == ["cy", "ann", "<b>x</b>"]
    # teams in the overview sort the same way
    page = await (await client.get("/leaderboard?sort=commits")).text()
    assert read_page(page).overview == ["solo", "Équipe A"]  # 20 commits against 4 + 13
    page = await (await client.get("/leaderboard?sort=name&order=desc")).text()
    assert read_page(page).overview == ["solo", "Équipe A"]
    page = await (await client.get("/leaderboard?sort=members&order=asc")).text()
    assert read_page(page).overview == ["solo", "Équipe A"]  # 1 member, then 3
    assert [r.user for r in read_page(page).teams[1].rows] == ["cy", "ann", "<b>x</b>"]
    # one team's and one user's views; unknown ones are 404
    page = await (await client.get("/leaderboard?team=solo")).text()
    assert [t.name for t in read_page(page).teams] == ["solo"]
    page = await (await client.get("/leaderboard?user=cy")).text()
    assert 'class="heatmap"' in page and "timeout" in page
    assert (await client.get("/leaderboard?team=nobody")).status == 404
    assert (await client.get("/leaderboard?user=nobody")).status == 404


async def test_header_names_the_gitlab_without_credentials(aiohttp_client: ClientFactory) -> None:
    document = {
        "gitlab": {"url": "https://reader:s3cret@gitlab.example.com/", "token": "glpat-x"},
        "scan": {"lookback_days": 14, "timezone": "Europe/Berlin"},
        "teams": [{"name": "t", "members": ["ann"]}],
    }
    settings = settings_of(parse_config(document, env={}))
    snapshot = replace(hand_snapshot(), settings=settings, window_end=1_764_547_200.0)
    page = await (await (await aiohttp_client(app_for(snapshot))).get("/leaderboard")).text()
    assert "s3cret" not in page and "reader" not in page
    assert 'href="https://gitlab.example.com"' in page
    assert "last 14 days (2025-11-17 00:00 UTC" in page and "Europe/Berlin" in page
    assert "morning 06:00\u201312:00" in page  # the default periods, with an en dash


def test_failed_users_show_reason_and_since_when() -> None:
    page = render_leaderboard_page(replace(hand_snapshot()))
    cy = read_page(page).teams[0].rows[0]
    assert cy.user == "cy" and "stale" in cy.classes
    assert "numbers from 2023-11-14 22:13 UTC" in cy.status
    failing = replace(
        hand_snapshot().users["<b>x</b>"], failing_since=1_700_000_000.0
    )
    users = dict(hand_snapshot().users) | {"<b>x</b>": failing}
    page = render_leaderboard_page(replace(hand_snapshot(), users=frozen_map(users)))
    x = read_page(page).teams[0].rows[2]
    assert "failed" in x.classes and "not_found" in x.status
    assert "failing since 2023-11-14 22:13 UTC" in x.status and "no numbers yet" in x.status


# --- a real browser against the exporter scanning the simulator ---------------------------

WIDTHS = (390, 1024, 1440)
ZONE = ZoneInfo("Asia/Kolkata")  # the zone of tests.conftest's configuration
GHOST = "ghost.user"  # listed, absent from GitLab: not_found

GEOMETRY = """() => {
  const boxes = (node) => {
    const range = document.createRange();
    range.selectNodeContents(node);
    return [...range.getClientRects()].filter(r => r.width > 0.5 && r.height > 0.5);
  };
  const hit = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 &&
                        a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
  const name = (el) => el.tagName.toLowerCase() + '.' + [...el.classList].join('.') +
                       ' ' + (el.textContent || '').trim().slice(0, 40);
  const problems = [];
  // no two cells of a row overlap, and no cell's content spills out of the cell
  for (const row of document.querySelectorAll('tr')) {
    const cells = [...row.children].filter(c => c.getClientRects().length);
    for (const cell of cells) {
      const own = cell.getBoundingClientRect();
      for (const box of boxes(cell)) {
        if (box.left < own.left - 1 || box.right > own.right + 1)
          problems.push('spills out: ' + name(cell));
      }
    }
    for (let i = 0; i < cells.length; i++)
      for (let j = i + 1; j < cells.length; j++)
        for (const a of boxes(cells[i])) for (const b of boxes(cells[j]))
          if (hit(a, b)) problems.push('cells overlap: ' + name(cells[i]) + ' / ' + name(cells[j]));
  }
  // labels: the pictures' texts, the header's items, the headings' parts
  const groups = [...document.querySelectorAll('svg')].map(s => [...s.querySelectorAll('text')]);
  groups.push([...document.querySelectorAll('dl.about > div')]);
  for (const h of document.querySelectorAll('h2')) groups.push([...h.children]);
  for (const group of groups)
    for (let i = 0; i < group.length; i++)
      for (let j = i + 1; j < group.length; j++) {
        const a = group[i].getBoundingClientRect(), b = group[j].getBoundingClientRect();
        if (hit(a, b)) problems.push('labels overlap: ' + name(group[i]) + ' / ' + name(group[j]));
      }
  const root = document.scrollingElement;
  if (root.scrollWidth > window.innerWidth + 1)
    problems.push('page wider than the window: ' + root.scrollWidth);
  return [...new Set(problems)];
}"""

PICTURES = """(section) => {
  const cells = {};
  for (const r of section.querySelectorAll('svg.heatmap rect.cell'))
    cells[r.dataset.weekday * 24 + Number(r.dataset.hour)] = Number(r.dataset.count);
  const days = {};
  for (const r of section.querySelectorAll('svg.daily rect.day'))
    days[r.dataset.date] = {count: Number(r.dataset.count),
                            height: r.getBoundingClientRect().height};
  const heatmap = section.querySelector('svg.heatmap').getBoundingClientRect();
  return {cells, days, heatmapWidth: heatmap.width, heatmapHeight: heatmap.height};
}"""

BARS = """(row) => {
  const bar = (svg) => {
    const track = svg.querySelector('rect.track').getBoundingClientRect();
    const segs = [...svg.querySelectorAll('rect.fill, rect.seg')].map(r => {
      const b = r.getBoundingClientRect();
      return {period: r.dataset.period || '', count: Number(r.dataset.count || 0),
              left: b.left - track.left, width: b.width};
    });
    return {value: Number(svg.dataset.value), max: Number(svg.dataset.max),
            width: track.width, segs};
  };
  const score = row.querySelector('td.score svg.bar');
  const commits = row.querySelector('td.commits svg.bar');
  return {score: score && bar(score), commits: commits && bar(commits)};
}"""


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is required when CI is set (Debian package `chromium`)")
    pytest.skip("chromium not installed")


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


def local_buckets(moments: Sequence[datetime]) -> tuple[dict[int, int], dict[str, int]]:
    """Commits by weekday * 24 + hour and by date, in Asia/Kolkata, counted here."""
    hours: dict[int, int] = {}
    days: dict[str, int] = {}
    for moment in moments:
        local = moment.astimezone(ZONE)
        key = local.weekday() * 24 + local.hour
        hours[key] = hours.get(key, 0) + 1
        days[local.date().isoformat()] = days.get(local.date().isoformat(), 0) + 1
    return hours, days


async def test_browser_shows_overview_pictures_and_failures_at_three_widths(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    chromium = chromium_or_skip()
    document = config_document(org, sim.url)
    document["teams"][-1]["members"].append(GHOST)
    config = parse_config(document, env={})
    service = ExporterService(config, clock=lambda: org.now)
    registry = build_registry(lambda: service.snapshot, version=__version__)
    service.attach_metrics(registry)
    async with service:
        first = await service.scan_once()
        # one user with commits fails on the next scan: shown stale with last good numbers
        victim = next(
            u for u, s in sorted(first.users.items()) if s.stats and s.stats.commits and u != GHOST
        )
        victim_id = next(u.id for u in org.users.values() if u.username == victim)
        sim.faults.add(FaultRule(path_pattern=rf"^/api/v4/users/{victim_id}/projects$", kind="404"))
        snapshot = await service.scan_once()
        assert snapshot.users[victim].stale and snapshot.users[GHOST].stats is None
        app = make_app(registry=registry, source=lambda: service.snapshot, version=__version__)
        async with serve(app) as base, browser(chromium) as chrome:
            shown: dict[int, Any] = {}
            for width in WIDTHS:
                page = await chrome.new_page(viewport={"width": width, "height": 900})
                await page.goto(f"{base}/leaderboard")
                problems = await page.evaluate(GEOMETRY)
                assert problems == [], (width, problems[:10])
                first_team = page.locator("section.team").first
                shown[width] = {
                    "overview": await page.eval_on_selector_all(
                        "tr.team-row", "rows => rows.map(r => r.dataset.team)"
                    ),
                    "team": await first_team.get_attribute("data-team"),
                    "pictures": await first_team.evaluate(PICTURES),
                    "team_bars": await page.locator("tr.team-row").first.evaluate(BARS),
                    "rows": [
                        (await row.get_attribute("data-user"), await row.evaluate(BARS))
                        for row in await first_team.locator("tr.member").all()
                    ],
                    "ghost": await page.locator(f'tr.member[data-user="{GHOST}"]')
                    .first.evaluate("r => [r.className, r.querySelector('td.status').innerText,"
                                    " r.getBoundingClientRect().height]"),
                    "victim": await page.locator(f'tr.member[data-user="{victim}"] td.status')
                    .first.inner_text(),
                }
                BUILD.mkdir(exist_ok=True)
                await page.screenshot(path=BUILD / f"leaderboard-{width}.png", full_page=True)
                # the user's own view: the same pictures for one person
                await page.goto(f"{base}/leaderboard?user={victim}")
                assert await page.evaluate(GEOMETRY) == [], width
                shown[width]["user_pictures"] = await page.locator("section.user").evaluate(
                    PICTURES
                )
                await page.screenshot(path=BUILD / f"leaderboard-user-{width}.png", full_page=True)
                await page.close()

    truth = expected_activity(
        org,
        usernames=[u for u in snapshot.users if u != GHOST],
        timezone="Asia/Kolkata",
        periods=PERIODS,
        lookback_days=30,
        now=org.now,
        extra_emails={u.username: u.extra_emails for u in org.users.values()},
    )
    score = {name: score_of(state.stats) for name, state in snapshot.users.items() if state.stats}
    teams = {t: [m for m in members if m in truth] for t, members in snapshot.teams.items()}
    team_score = {t: sum(score[m] for m in ms) for t, ms in teams.items()}
    ranked = sorted(teams, key=lambda t: (-team_score[t], t.casefold()))
    for width, seen in shown.items():
        # the overview first: teams ranked by score, the bars from 0 to the largest
        assert seen["overview"] == ranked, width
        top_team = ranked[0]
        bars = seen["team_bars"]
        assert bars["score"]["value"] == team_score[top_team] == bars["score"]["max"]
        assert bars["score"]["segs"][0]["left"] == pytest.approx(0, abs=0.5)
        assert bars["score"]["segs"][0]["width"] == pytest.approx(bars["score"]["width"], abs=1)
        periods_sum = {
            p: sum(truth[m].period_commits[p] for m in teams[top_team]) for p in snapshot.periods
        }
        assert {s["period"]: s["count"] for s in bars["commits"]["segs"]} == periods_sum
        # stacked: each period's segment starts where the one before it ends
        edge = 0.0
        for seg in bars["commits"]["segs"]:
            assert seg["left"] == pytest.approx(edge, abs=0.6), width
            edge += seg["width"]

        # the first team's heatmap and daily chart hold the truth's commits
        assert seen["team"] == top_team
        hours, days = local_buckets([a for m in teams[top_team] for a in truth[m].authored])
        cells = {int(k): v for k, v in seen["pictures"]["cells"].items()}
        assert len(cells) == 7 * 24 and {k: v for k, v in cells.items() if v} == hours
        drawn = seen["pictures"]["days"]
        assert {d: v["count"] for d, v in drawn.items() if v["count"]} == days
        assert len(drawn) >= 30  # every day of the window, with or without commits
        tallest = max(days.values())
        for day, bar_shown in drawn.items():
            ratio = bar_shown["height"] / max(v["height"] for v in drawn.values())
            assert ratio == pytest.approx(days.get(day, 0) / tallest, abs=0.03), day
        assert seen["pictures"]["heatmapWidth"] >= min(300, width - 80)

        # members: score bars scaled to the team's best, from 0
        members = dict(seen["rows"])
        best = max(score[m] for m in teams[top_team])
        for name in teams[top_team]:
            bar_shown = members[name]["score"]
            assert bar_shown["value"] == score[name] and bar_shown["max"] == best
            fill = bar_shown["segs"][0]
            assert fill["width"] == pytest.approx(bar_shown["width"] * score[name] / best, abs=1)

        # failures are visible as such, with their reason
        ghost_class, ghost_status, ghost_height = seen["ghost"]
        assert "failed" in ghost_class.split() and "not_found" in ghost_status
        assert "failing since" in ghost_status and ghost_height > 10
        assert "stale" in seen["victim"] and "not_found" in seen["victim"]
        assert "numbers from" in seen["victim"]

        # the user's own view
        hours, _ = local_buckets(truth[victim].authored)
        user_cells = {int(k): v for k, v in seen["user_pictures"]["cells"].items()}
        assert {k: v for k, v in user_cells.items() if v} == hours

    for width in WIDTHS:
        png = (BUILD / f"leaderboard-{width}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


class CountingUsers(dict[str, UserState]):
    """A snapshot's users that count how often they are walked through."""

    walks = 0

    def items(self) -> Any:
        CountingUsers.walks += 1
        return super().items()


def test_ranking_thousands_of_teams_walks_the_users_once_not_per_team() -> None:
    snapshot = hand_snapshot()
    many = {f"team{n}": ("ann", "bo") for n in range(300)}
    users = CountingUsers(snapshot.users)
    big = replace(snapshot, users=users, teams=frozen_map(many))
    CountingUsers.walks = 0
    page = render_leaderboard_page(big)
    assert CountingUsers.walks <= 2  # by-name lookup, users in no team; not one per team
    assert page.count('class="team-row"') == 300


def test_overview_and_sections_are_capped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "MAX_OVERVIEW_ROWS", 1)
    monkeypatch.setattr(pages, "MAX_TEAM_SECTIONS", 1)
    shown = read_page(render_leaderboard_page(hand_snapshot()))
    assert shown.overview == ["Équipe A"]
    assert [t.name for t in shown.teams] == ["Équipe A"]
    page = render_leaderboard_page(hand_snapshot())
    assert "The first 1 of 2 teams in this order" in page and "1 more team:" in page
    # every team keeps its own view
    solo = read_page(render_leaderboard_page(hand_snapshot(), pages.PageView(team="solo")))
    assert [t.name for t in solo.teams] == ["solo"]


async def test_demo_organisation_in_the_browser() -> None:
    """The demo as a new user sees it: the overview, the pictures and the failures, at
    every width; screenshots in build/ (the README's picture is made from these)."""
    chromium = chromium_or_skip()
    async with run_demo() as config:
        service = ExporterService(config)
        registry = build_registry(lambda: service.snapshot, version=__version__)
        service.attach_metrics(registry)
        async with service:
            snapshot = await service.scan_once()
            app = make_app(registry=registry, source=lambda: service.snapshot, version=__version__)
            async with serve(app) as base, browser(chromium) as chrome:
                for width in WIDTHS:
                    page = await chrome.new_page(viewport={"width": width, "height": 1400})
                    await page.goto(f"{base}/leaderboard")
                    assert await page.evaluate(GEOMETRY) == [], width
                    teams = await page.locator("tr.team-row").count()
                    assert teams == len(snapshot.teams)
                    first = page.locator("section.team").first
                    drawn = await first.evaluate(PICTURES)
                    team = await first.get_attribute("data-team")
                    assert team is not None
                    members = [snapshot.users[m].stats for m in snapshot.teams[team]]
                    assert sum(drawn["cells"].values()) == sum(s.commits for s in members if s)
                    failed = page.locator("tr.member.failed")
                    reasons = {await row.get_attribute("data-user"): await row.locator(
                        "td.status").inner_text() for row in await failed.all()}
                    assert "not_found" in reasons[MISSING_USER]
                    assert any("private_profile" in text for text in reasons.values())
                    assert await failed.first.is_visible()
                    BUILD.mkdir(exist_ok=True)
                    await page.screenshot(path=BUILD / f"demo-leaderboard-{width}.png")
                    await page.screenshot(
                        path=BUILD / f"demo-leaderboard-{width}-full.png", full_page=True
                    )
                    if width == WIDTHS[-1]:
                        # the links work from the page: sort by a column, open a person
                        await page.locator("table.teams thead a", has_text="Commits").click()
                        assert "sort=commits" in page.url
                        order = await page.eval_on_selector_all(
                            "tr.team-row", "rows => rows.map(r => r.dataset.team)"
                        )
                        commits = {
                            t: sum(s.commits for m in ms if (s := snapshot.users[m].stats))
                            for t, ms in snapshot.teams.items()
                        }
                        assert order == sorted(commits, key=lambda t: -commits[t])
                        await page.locator("a.username").first.click()
                        assert "leaderboard?user=" in page.url
                        assert await page.locator("section.user svg.heatmap").count() == 1
                    await page.close()


async def test_a_page_renders_in_slices_that_let_the_event_loop_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web_module, "SLICE_SECONDS", 0.0)  # yield after every part
    snapshot = replace(
        hand_snapshot(), teams=frozen_map({f"team{n}": ("ann", "bo") for n in range(30)})
    )
    cache = web_module.PageCache()
    turns = 0
    stop = False

    async def ticker() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    before = turns
    first, second = await asyncio.gather(
        cache.page(snapshot, pages.PageView()), cache.page(snapshot, pages.PageView())
    )
    stop = True
    await task
    assert turns - before > 30  # the loop ran between the parts (30 team sections and more)
    assert first == second and cache.renders == 1  # concurrent requests share one rendering

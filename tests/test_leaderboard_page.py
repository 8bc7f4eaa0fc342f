"""``/leaderboard``: the server-rendered page, and what a real headless Chromium shows of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter import __version__
from exporter.collectors import build_registry
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import FaultRule, SimulatorServer
from exporter.snapshot import ScanSummary, Snapshot, UserState, UserStats, frozen_map
from exporter.web import make_app
from tests.conftest import make_config

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
    """The teams and member rows of a leaderboard page, as text, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.teams: list[ShownTeam] = []
        self.links: list[str] = []
        self._cell: str | None = None
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag == "section" and "team" in classes:
            self.teams.append(ShownTeam(name=attributes.get("data-team") or ""))
        elif tag == "h2" and self.teams:
            self._in_h2 = True
        elif tag == "tr" and "member" in classes:
            self.teams[-1].rows.append(ShownRow(classes=classes))
        elif tag == "td" and self.teams and self.teams[-1].rows:
            self._cell = next((c for c in ("rank", "user", "score", "status") if c in classes), None)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.teams[-1].heading += data
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
    landing = read_page(await (await client.get("/")).text())
    assert "leaderboard" in landing.links


# --- a real browser against the exporter scanning the simulator ---------------------------


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is required when CI is set (Debian package `chromium`)")
    pytest.skip("chromium not installed")


async def run_chromium(chromium: str, profile: Path, *args: str, timeout: float = 90) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


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


async def test_browser_shows_the_snapshots_ranking(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    chromium = chromium_or_skip()
    config = make_config(org, sim.url)
    service = ExporterService(config, clock=lambda: org.now)
    registry = build_registry(lambda: service.snapshot, version=__version__)
    service.attach_metrics(registry)
    async with service:
        first = await service.scan_once()
        # one user with commits fails on the next scan: shown stale with last good numbers
        victim = next(u for u, s in sorted(first.users.items()) if s.stats and s.stats.commits)
        victim_id = next(u.id for u in org.users.values() if u.username == victim)
        sim.faults.add(FaultRule(path_pattern=rf"^/api/v4/users/{victim_id}/projects$", kind="404"))
        snapshot = await service.scan_once()
        assert snapshot.users[victim].stale and snapshot.users[victim].stats is not None
        app = make_app(
            registry=registry, source=lambda: service.snapshot, version=__version__
        )
        async with serve(app) as base:
            dom = await run_chromium(
                chromium, tmp_path / "profile", "--dump-dom", f"{base}/leaderboard"
            )
            BUILD.mkdir(exist_ok=True)
            screenshot = BUILD / "leaderboard.png"
            screenshot.unlink(missing_ok=True)
            await run_chromium(
                chromium,
                tmp_path / "profile",
                f"--screenshot={screenshot}",
                "--window-size=1280,1600",
                f"{base}/leaderboard",
            )
    shown = read_page(dom.decode())
    expected = expected_ranking(snapshot)
    assert len(expected) >= 3
    assert [(t.name, [r.user for r in t.rows]) for t in shown.teams] == expected
    for team in shown.teams:
        assert [r.rank for r in team.rows] == [str(i) for i in range(1, len(team.rows) + 1)]
        for row in team.rows:
            stats = snapshot.users[row.user].stats
            assert stats is not None
            assert float(row.score) == score_of(stats), row.user
    victim_rows = [r for t in shown.teams for r in t.rows if r.user == victim]
    assert victim_rows
    for row in victim_rows:
        assert "stale" in row.classes
        assert "stale" in row.status and "not_found" in row.status
    others = [r for t in shown.teams for r in t.rows if r.user != victim]
    assert all("stale" not in r.status for r in others)
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000

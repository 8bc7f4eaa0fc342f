"""Hostile strings from GitLab (lone surrogates, terminal escape sequences, spreadsheet
formulas, bidirectional overrides) go through every output without breaking it or
reaching a terminal or a spreadsheet raw."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from exporter import __version__
from exporter.cli import _service_registry
from exporter.config import parse_config
from exporter.logs import configure_logging
from exporter.output import render
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from exporter.snapshot import Snapshot
from exporter.state import load_state
from exporter.text import MAX_TEXT_LENGTH, spreadsheet_cell, terminal_text, valid_text
from exporter.web import make_app
from tests.conftest import TOKEN, config_document

# a formula, a lone surrogate, an OSC title change, a colour, a bidi override
HOSTILE = '=HYPERLINK("http://evil.example")\ud800\x1b]0;owned\x07\x1b[31mred\u202e'
RAW_TERMINAL = ("\x1b", "\x07", "\u202e", "\ud800")


def encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture
def hostile_org(org: Org) -> tuple[Org, str]:
    """``org`` with one member of the first configured group team renamed to HOSTILE."""
    group = sorted(org.groups.values(), key=lambda g: g.id)[0]
    victim = org.users[min(org.group_members_all(group.id))]
    old = victim.username
    victim.username = HOSTILE
    victim.name = HOSTILE
    # and a display name far beyond any real one
    other = org.users[max(org.group_members_all(group.id))]
    other.name = "N" * 100_000
    org._by_username[HOSTILE.casefold()] = org._by_username.pop(old.casefold())
    return org, old


@pytest.fixture
async def hostile_sim(hostile_org: tuple[Org, str]) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(hostile_org[0], token=TOKEN, host="127.0.0.1", port=0) as server:
        yield server


async def scan_and_serve(
    service: ExporterService, aiohttp_client: object
) -> tuple[Snapshot, TestClient, str]:
    logs = io.StringIO()
    configure_logging("info", "console", stream=logs)
    try:
        snapshot = await service.scan_once()
    finally:
        configure_logging("info", "console")
    registry = _service_registry(service)
    app = make_app(registry=registry, source=lambda: service.snapshot, version=__version__)
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    return snapshot, client, logs.getvalue()


async def assert_pages_answer(client: TestClient, needle: str) -> None:
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    body = await metrics.text()
    users = {
        s.labels.get("user")
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if "user" in s.labels
    }
    assert needle in users
    for page in ("/", "/leaderboard"):
        response = await client.get(page)
        assert response.status == 200, page
    leaderboard = await (await client.get("/leaderboard")).text()
    assert "&quot;http://evil.example&quot;" in leaderboard  # escaped, not markup


async def test_a_hostile_username_from_gitlab_goes_through_every_output(
    hostile_org: tuple[Org, str], hostile_sim: SimulatorServer, tmp_path: Path, aiohttp_client: object
) -> None:
    org, old = hostile_org
    document = config_document(org, hostile_sim.url, state_file=str(tmp_path / "state.db"))
    # the configuration still names the user as before; GitLab's group lists the new name
    document = json.loads(json.dumps(document).replace(json.dumps(HOSTILE)[1:-1], old))
    config = parse_config(document, env={})
    safe = valid_text(HOSTILE)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot, client, logs = await scan_and_serve(service, aiohttp_client)
        assert safe in snapshot.users  # a group member as GitLab names it, made valid
        names = [d.user.name for d in service.scanner.discovery.entries.values()]
        assert "N" * MAX_TEXT_LENGTH in names  # cut where it entered
        assert max(map(len, names)) <= MAX_TEXT_LENGTH
        await assert_pages_answer(client, safe)
    # the state file was written and reads back
    assert config.state_file is not None
    saved = load_state(config.state_file, config)
    assert saved is not None and safe in saved.snapshot.users
    for fmt in ("table", "json", "csv", "prometheus"):
        text = render(snapshot, fmt)
        assert encodes(text), fmt
    table = render(snapshot, "table")
    assert not any(char in table for char in RAW_TERMINAL)
    assert "\\x1b]0;owned\\x07" in table  # shown, escaped
    cells = [row["user"] for row in csv.DictReader(io.StringIO(render(snapshot, "csv")))]
    assert "'" + safe in cells
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    assert safe in {u["user"] for u in json.loads(render(snapshot, "json"))["users"]}
    # console logs named the user without letting the terminal act on it
    assert "\\x1b" in logs
    assert not any(char in logs for char in RAW_TERMINAL)


@pytest.mark.parametrize("door", ["open", "refused"])
async def test_hostile_error_text_from_gitlab_breaks_nothing(
    org: Org, tmp_path: Path, aiohttp_client: object, door: str
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        if door == "open" and request.path == "/api/v4/user":  # the token is fine
            return web.json_response({"id": 1, "username": "bot", "is_admin": True})
        return web.json_response({"message": HOSTILE}, status=403)

    gitlab = web.Application()
    gitlab.router.add_route("*", "/{tail:.*}", refuse)
    server: TestClient = await aiohttp_client(gitlab)  # type: ignore[operator]
    url = str(server.make_url("")).rstrip("/")
    config = parse_config(
        config_document(org, url, state_file=str(tmp_path / "state.db")), env={}
    )
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot, client, logs = await scan_and_serve(service, aiohttp_client)
        messages = [u.last_error_message or "" for u in snapshot.users.values()]
        if door == "open":  # each user's own failure carries GitLab's message
            assert messages and all("HYPERLINK" in m for m in messages)
        assert all(encodes(m) for m in messages)
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        for page in ("/", "/leaderboard"):
            assert (await client.get(page)).status == 200
    if door == "open":  # a refused door stops the scan before there is anything to keep
        assert config.state_file is not None and load_state(config.state_file, config) is not None
    for fmt in ("table", "json", "csv", "prometheus"):
        assert encodes(render(snapshot, fmt))
    assert not any(char in logs for char in RAW_TERMINAL)
    assert encodes(logs)


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r", "\0"])
def test_spreadsheet_cells_never_start_a_formula(start: str) -> None:
    cell = spreadsheet_cell(start + "1+2")
    assert cell == "'" + start + "1+2"
    assert spreadsheet_cell("alice") == "alice"


def test_terminal_text_escapes_what_a_terminal_acts_on() -> None:
    assert terminal_text("a\x1b[2Jb\x9bc\u202ed\nx") == "a\\x1b[2Jb\\x9bc\\u202ed\\x0ax"
    assert terminal_text("line\n\tnext\x1b", keep_newlines=True) == "line\n\tnext\\x1b"


def test_console_log_values_cannot_forge_a_line() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    try:
        structlog.get_logger("t").warning("user failed", user="eve\n2026-01-01 [error] forged")
    finally:
        configure_logging("info", "console")
    assert len(stream.getvalue().strip().splitlines()) == 1

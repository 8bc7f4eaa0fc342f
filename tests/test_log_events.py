"""Logs as an operator reads them: one line when a failure starts, one when it ends,
retries only at debug level, and the token nowhere."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import structlog

from exporter.config import parse_config
from exporter.logs import clear_secrets, configure_logging, register_secret
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import FaultRule, SimulatorServer
from tests.conftest import TOKEN, config_document


@pytest.fixture
def logs() -> Iterator[Any]:
    streams: list[io.StringIO] = []

    def start(level: str = "info") -> io.StringIO:
        stream = io.StringIO()
        configure_logging(level, "json", stream=stream)
        register_secret(TOKEN)
        streams.append(stream)
        return stream

    yield start
    clear_secrets()
    configure_logging("info", "console")
    structlog.reset_defaults()


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def named(stream: io.StringIO, event: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e for e in events(stream)
        if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
    ]


def user_id(org: Org, username: str) -> int:
    return next(u.id for u in org.users.values() if u.username == username)


async def test_a_failing_user_is_logged_when_it_starts_and_when_it_ends(
    org: Org, sim: SimulatorServer, logs: Any
) -> None:
    stream = logs("debug")
    service = ExporterService(parse_config(config_document(org, sim.url), env={}),
                              clock=lambda: org.now)
    victim = sorted(u.username for u in org.users.values())[0]
    async with service:
        await service.scan_once()
        rule = sim.faults.add(FaultRule(rf"^/api/v4/users/{user_id(org, victim)}/projects$", "503_html"))
        for _ in range(3):
            await service.scan_once()
        sim.faults.rules.remove(rule)
        for _ in range(2):
            await service.scan_once()
    failed = named(stream, "user scan failed; keeping the last good values", user=victim)
    assert len(failed) == 1  # not once per scan
    assert failed[0]["level"] == "warning" and failed[0]["reason"] == "api_error"
    recovered = named(stream, "user scan recovered", user=victim)
    assert len(recovered) == 1 and recovered[0]["level"] == "info"
    retries = named(stream, "gitlab_retry")
    assert len(retries) >= 6  # 3 scans x max_retries (2), every one at debug level
    assert {e["level"] for e in retries} == {"debug"}
    # nothing else complained
    loud = [e for e in events(stream) if e["level"] in ("warning", "error", "critical")]
    assert loud == failed


async def test_retries_that_succeed_log_nothing_above_debug(
    org: Org, sim: SimulatorServer, logs: Any
) -> None:
    stream = logs("info")
    for kind in ("503_html", "502_html", "reset", "429", "malformed_json"):
        sim.faults.add(FaultRule(r"/repository/commits$", kind, times=2))
    sim.faults.retry_after = 0
    document = config_document(org, sim.url)
    document["gitlab"]["max_retries"] = 6
    service = ExporterService(parse_config(document, env={}), clock=lambda: org.now)
    async with service:
        snapshot = await service.scan_once()
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert sum(sim.faults.injected.values()) == 10
    assert [e for e in events(stream) if e["level"] != "info"] == []
    assert named(stream, "gitlab_retry") == []  # debug only, filtered at info


async def test_a_failing_group_is_logged_once_and_its_recovery_once(
    org: Org, sim: SimulatorServer, logs: Any
) -> None:
    stream = logs("info")
    document = config_document(org, sim.url)
    document["gitlab"]["max_retries"] = 0
    group = document["teams"][0]
    service = ExporterService(parse_config(document, env={}), clock=lambda: org.now)
    async with service:
        await service.scan_once()
        rule = sim.faults.add(FaultRule(r"/members/all$", "500_html"))
        for _ in range(3):
            snapshot = await service.scan_once()
            assert snapshot.teams[group["name"]]  # last known members kept
        sim.faults.rules.remove(rule)
        await service.scan_once()
        await service.scan_once()
    unavailable = named(
        stream, "group members unavailable; keeping the last known members", team=group["name"]
    )
    assert len(unavailable) == 1
    assert len(named(stream, "group members available again", team=group["name"])) == 1


# --- the token, wherever it hides --------------------------------------------------------

ODD_TOKEN = "glpat-a/b+c=d&e f"


def test_token_redacted_in_urls_and_exception_text(logs: Any) -> None:
    stream = logs("debug")
    register_secret(ODD_TOKEN)
    log = structlog.get_logger("test")
    log.info("request", url=f"https://gitlab.example.com/api/v4/users?private_token={quote(ODD_TOKEN, safe='')}")
    log.info("form", body=f"token={quote_plus(ODD_TOKEN)}")
    log.debug("raw", header={"PRIVATE-TOKEN": ODD_TOKEN})
    try:
        raise RuntimeError(f"GET https://x/?private_token={ODD_TOKEN} failed")
    except RuntimeError:
        log.exception("boom")
    out = stream.getvalue()
    for form in (ODD_TOKEN, quote(ODD_TOKEN, safe=""), quote_plus(ODD_TOKEN), TOKEN):
        assert form not in out, form
    assert out.count("[REDACTED]") >= 4


async def test_token_absent_everywhere_in_a_debug_scan_under_faults(
    org: Org, sim: SimulatorServer, logs: Any
) -> None:
    stream = logs("debug")
    sim.faults.fault_rate = 0.2
    sim.faults.retry_after = 0
    sim.faults.random_kinds = ("500_html", "reset", "429", "malformed_json", "401", "404", "redirect")
    sim.faults.redirect_base = "http://127.0.0.2:9"
    service = ExporterService(parse_config(config_document(org, sim.url), env={}),
                              clock=lambda: org.now)
    async with service:
        snapshot = await service.scan_once()
    out = stream.getvalue()
    assert sum(sim.faults.injected.values()) > 5
    assert any(s.last_error for s in snapshot.users.values())
    for form in (TOKEN, quote(TOKEN, safe=""), TOKEN[6:]):
        assert form not in out
    for state in snapshot.users.values():
        assert TOKEN not in (state.last_error_message or "")

"""Shared fixtures: a generated organisation served by the project's GitLab simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from exporter.config import Config, parse_config
from exporter.simulator.generate import generate_org
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer

TOKEN = "glpat-test-0123456789abcdef"
HOST = "127.0.0.1"
PERIODS = {"morning": "09:00-12:30", "afternoon": "12:30-17:00"}


@pytest.fixture
def org() -> Org:
    return generate_org(11, users=20, projects=60, host=HOST)


@pytest.fixture
async def sim(org: Org) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0) as server:
        yield server


def config_document(org: Org, url: str, **scan: Any) -> dict[str, Any]:
    """Every person of ``org`` scanned: group teams, a listed team, extras for the rest."""
    groups = sorted(org.groups.values(), key=lambda g: g.id)
    people = sorted(org.users.values(), key=lambda u: u.id)
    teams: list[dict[str, Any]] = [{"name": g.path, "group": g.full_path} for g in groups[:2]]
    # a user in several teams
    teams.append({"name": "listed", "members": [u.username for u in people[:5]]})
    users = [{"username": u.username, "emails": list(u.extra_emails)} for u in people]
    return {
        "gitlab": {
            "url": url,
            "token": TOKEN,
            "requests_per_second": 1000,
            "max_concurrency": 8,
            "timeout_seconds": 5,
            "max_retries": 2,
        },
        # discovery every scan (as before discovery caching) unless a test asks otherwise;
        # the windows read in full again once a day
        "scan": {
            "lookback_days": 30,
            "timezone": "Asia/Kolkata",
            "periods": PERIODS,
            "discovery_interval_seconds": 0,
            "reconcile_interval_seconds": 86400,
            **scan,
        },
        "teams": teams,
        "users": users,
    }


def make_config(org: Org, url: str, **scan: Any) -> Config:
    return parse_config(config_document(org, url, **scan), env={})


@pytest.fixture
def captured_logs() -> Any:
    """structlog's events of the test, captured (debug and up)."""
    saved = structlog.get_config()
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(10),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture
    finally:
        structlog.configure(**saved)

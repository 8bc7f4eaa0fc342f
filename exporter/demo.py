"""The built-in demo: a generated organisation served by the GitLab simulator, and a
configuration that points the exporter at it. No GitLab needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from exporter.config import Config, parse_config
from exporter.simulator.generate import REALISTIC_REFS, Realism, generate_org
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer

DEMO_TOKEN = "demo-token"
DEMO_HOST = "127.0.0.1"
#: the simulated GitLab's external host (in its web_urls and no-reply emails), which is
#: not where it listens, as behind a proxy or an in-cluster service
DEMO_EXTERNAL_HOST = "gitlab.demo.example"
DEMO_PERIODS = {"morning": "09:00-12:30", "afternoon": "12:30-17:00"}


def demo_document(org: Org, url: str, *, interval_seconds: float = 60.0) -> dict[str, Any]:
    """A configuration document for ``org`` served at ``url``: a few group teams,
    one hand-listed team, and the extra emails the generator gave some users."""
    groups = sorted(org.groups.values(), key=lambda g: g.id)[:3]
    teams: list[dict[str, Any]] = [{"name": g.path, "group": g.full_path} for g in groups]
    people = sorted(org.users.values(), key=lambda u: u.id)
    teams.append({"name": "reviewers", "members": [u.username for u in people[:4]]})
    users = [
        {"username": u.username, "emails": list(u.extra_emails)} for u in people if u.extra_emails
    ]
    # everyone the organisation has, so the demo shows every kind of person
    listed = {u["username"] for u in users}
    users += [{"username": u.username} for u in people if u.username not in listed]
    return {
        "gitlab": {"url": url, "token": DEMO_TOKEN, "requests_per_second": 200},
        "scan": {
            "interval_seconds": interval_seconds,
            "lookback_days": 30,
            "timezone": "Asia/Kolkata",
            "periods": DEMO_PERIODS,
        },
        "teams": teams,
        "users": users,
    }


@asynccontextmanager
async def run_demo(seed: int = 7, users: int = 24, projects: int = 80) -> AsyncIterator[Config]:
    """Start the simulator on a free local port; yield a config that scans it.

    The organisation is as awkward as a real one seen by a token that is not an admin's
    (private profiles, blocked and renamed users, projects whose code it may not read):
    the demo shows those users failing and those projects skipped, as they would be.
    """
    org = generate_org(
        seed,
        users=users,
        projects=projects,
        host=DEMO_EXTERNAL_HOST,
        realism=Realism.typical(users, projects),
        refs=REALISTIC_REFS,
    )
    async with SimulatorServer(
        org, token=DEMO_TOKEN, host=DEMO_HOST, port=0, admin=False
    ) as sim:
        sim.simulator.external_url = f"https://{DEMO_EXTERNAL_HOST}"  # in its page links
        yield parse_config(demo_document(org, sim.url), env={})

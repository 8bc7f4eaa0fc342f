"""The built-in demo: a generated organisation served by the GitLab simulator, and a
configuration that points the exporter at it. No GitLab needed.

The generated people work in a dozen time zones, mostly during their own working
hours on weekdays, and write each commit in their zone's offset. The demo counts every commit in
its own offset (``timezone: commit``) with periods that cover the whole day, so the
split by period and the weekday x hour pictures show local working hours instead of
one zone's view of everybody.

The organisation is as awkward as a real one seen by a token that is not an admin's
(private profiles, blocked and renamed users, projects whose code it may not read), and
the demo lists one person the GitLab does not have: the page shows those users failing
(``private_profile``, ``not_found``) and those projects skipped, as they would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from exporter.config import Config, parse_config
from exporter.simulator.generate import REALISTIC_REFS, Realism, generate_org
from exporter.simulator.model import Org, User
from exporter.simulator.server import SimulatorServer

DEMO_TOKEN = "demo-token"
DEMO_HOST = "127.0.0.1"
#: the simulated GitLab's external host (in its web_urls and no-reply emails), which is
#: not where it listens, as behind a proxy or an in-cluster service
DEMO_EXTERNAL_HOST = "gitlab.demo.example"
DEMO_TIMEZONE = "commit"  # each commit in its author's own offset
DEMO_PERIODS = {
    "night": "22:00-08:00",
    "morning": "08:00-12:00",
    "afternoon": "12:00-17:00",
    "evening": "17:00-22:00",
}
MISSING_USER = "former.colleague"  # listed in a team, absent from the GitLab: not_found
TEAM_SIZE = 5  # members of the hand-listed team


def demo_document(org: Org, url: str, *, interval_seconds: float = 60.0) -> dict[str, Any]:
    """A configuration document for ``org`` served at ``url``: a few group teams,
    one hand-listed team (with a member the GitLab does not have), and the extra
    emails the generator gave some users."""
    groups = sorted(org.groups.values(), key=lambda g: g.id)[:3]
    teams: list[dict[str, Any]] = [{"name": g.path, "group": g.full_path} for g in groups]
    people = sorted(org.users.values(), key=lambda u: u.id)
    reviewers = [u.username for u in people[: TEAM_SIZE - 1]]
    teams.append({"name": "reviewers", "members": [*reviewers, MISSING_USER]})
    return {
        "gitlab": {"url": url, "token": DEMO_TOKEN, "requests_per_second": 200},
        "scan": {
            "interval_seconds": interval_seconds,
            "lookback_days": 30,
            "timezone": DEMO_TIMEZONE,
            "periods": DEMO_PERIODS,
        },
        "teams": teams,
        "users": _everyone(people),
    }


def _everyone(people: list[User]) -> list[dict[str, Any]]:
    """Every person of the organisation, with the extra emails the generator gave some,
    so a scan shows every kind of person."""
    return [
        {"username": u.username, **({"emails": list(u.extra_emails)} if u.extra_emails else {})}
        for u in people
    ]


def simulator_document(org: Org, url: str, token: str | None) -> dict[str, Any]:
    """A configuration that scans ``org`` served at ``url``: every group as a team,
    every user listed. ``token``: written into the file, or ``None`` to leave the
    token to ``GITLAB_TOKEN``."""
    groups = sorted(org.groups.values(), key=lambda g: g.full_path)
    gitlab: dict[str, Any] = {"url": url, "requests_per_second": 100}
    if token is not None:
        gitlab["token"] = token
    return {
        "gitlab": gitlab,
        "scan": {"interval_seconds": 60, "lookback_days": 30, "timezone": DEMO_TIMEZONE},
        "teams": [{"name": g.full_path.replace("/", "-"), "group": g.full_path} for g in groups],
        "users": _everyone(sorted(org.users.values(), key=lambda u: u.id)),
    }


def demo_org(seed: int = 7, users: int = 24, projects: int = 80) -> Org:
    """The demo's organisation: people who work weekdays, local hours, with what a real
    organisation has that a token which is not an admin's meets."""
    return generate_org(
        seed,
        users=users,
        projects=projects,
        host=DEMO_EXTERNAL_HOST,
        realism=Realism.typical(users, projects),
        working_week=True,
        refs=REALISTIC_REFS,
    )


@asynccontextmanager
async def run_demo(seed: int = 7, users: int = 24, projects: int = 80) -> AsyncIterator[Config]:
    """Start the simulator on a free local port; yield a config that scans it."""
    org = demo_org(seed, users, projects)
    async with SimulatorServer(
        org, token=DEMO_TOKEN, host=DEMO_HOST, port=0, admin=False
    ) as sim:
        sim.simulator.external_url = f"https://{DEMO_EXTERNAL_HOST}"  # in its page links
        yield parse_config(demo_document(org, sim.url), env={})

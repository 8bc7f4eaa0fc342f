"""The built-in demo: a generated organisation served by the GitLab simulator, and a
configuration that points the exporter at it. No GitLab needed.

The generated people work in a dozen time zones, mostly during their own working
hours on weekdays, and write each commit in their zone's offset. The demo counts every commit in
its own offset (``timezone: commit``) with periods that cover the whole day, so the
split by period and the weekday x hour pictures show local working hours instead of
one zone's view of everybody. Two people the demo lists fail on purpose, so the page
shows what a failure looks like: one who does not exist on the GitLab (``not_found``)
and one whose activity GitLab answers with a broken response (``api_error``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from exporter.config import Config, parse_config
from exporter.simulator.faults import FaultRule
from exporter.simulator.generate import generate_org
from exporter.simulator.model import Org, User
from exporter.simulator.server import SimulatorServer

DEMO_TOKEN = "demo-token"
DEMO_HOST = "127.0.0.1"
DEMO_TIMEZONE = "commit"  # each commit in its author's own offset
DEMO_PERIODS = {
    "night": "22:00-08:00",
    "morning": "08:00-12:00",
    "afternoon": "12:00-17:00",
    "evening": "17:00-22:00",
}
MISSING_USER = "former.colleague"  # listed in a team, absent from the GitLab: not_found
TEAM_SIZE = 5  # members of the hand-listed team


def broken_user(org: Org) -> User:
    """The demo user whose push events GitLab answers with a broken response."""
    return sorted(org.users.values(), key=lambda u: u.id)[1]


def demo_faults(org: Org) -> list[FaultRule]:
    """Faults that make :func:`broken_user` fail every scan with ``api_error``."""
    user = broken_user(org)
    return [FaultRule(rf"^/api/v4/users/{user.id}/events$", "wrong_shape_object")]


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
    """The demo's organisation: people who work weekdays, local hours."""
    return generate_org(seed, users=users, projects=projects, host=DEMO_HOST, working_week=True)


@asynccontextmanager
async def run_demo(seed: int = 7, users: int = 24, projects: int = 80) -> AsyncIterator[Config]:
    """Start the simulator on a free local port; yield a config that scans it."""
    org = demo_org(seed, users, projects)
    async with SimulatorServer(org, token=DEMO_TOKEN, host=DEMO_HOST, port=0) as sim:
        for rule in demo_faults(org):
            sim.faults.add(rule)
        yield parse_config(demo_document(org, sim.url), env={})

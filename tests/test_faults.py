"""Fault campaign: a misbehaving GitLab never crashes, hangs or lies.

Every test first runs a clean scan (so every user has good numbers), then injects a
fault into the simulator and scans again under a deadline. Affected users must show
the right failure reason and keep their last good numbers; every other user's numbers
must equal the simulator's independent truth. docs/reliability.md lists the cases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.collectors import build_registry
from exporter.config import Config, parse_config
from exporter.service import ExporterService
from exporter.simulator.model import Commit, Org
from exporter.simulator.server import FaultRule, SimulatorServer
from exporter.simulator.truth import expected_activity
from exporter.snapshot import Snapshot
from tests.conftest import config_document

DEADLINE = 30.0  # seconds a faulted scan may take at most


def build_config(org: Org, url: str, **gitlab: Any) -> Config:
    document = config_document(org, url)
    document["gitlab"].update(gitlab)
    return parse_config(document, env={})


@dataclass
class Campaign:
    org: Org
    sim: SimulatorServer
    config: Config
    service: ExporterService
    registry: CollectorRegistry
    first: Snapshot

    @property
    def users(self) -> list[str]:
        return sorted(self.first.users)

    def user_id(self, username: str) -> int:
        return next(u.id for u in self.org.users.values() if u.username == username)

    def active_user(self, index: int = 0) -> str:
        """A user with commits in the clean scan (so 'kept' values are not zero)."""
        busy = [u for u in self.users if (s := self.first.users[u].stats) and s.commits > 0]
        return busy[index]

    async def scan(self, deadline: float = DEADLINE) -> tuple[Snapshot, float]:
        began = time.monotonic()
        snapshot = await asyncio.wait_for(self.service.scan_once(), deadline)
        return snapshot, time.monotonic() - began

    def truth(self, users: list[str]) -> dict[str, tuple[int, dict[str, int], dict[str, int]]]:
        expected = expected_activity(
            self.org,
            usernames=users,
            timezone=self.config.scan.timezone,
            periods=self.config.scan.periods,
            lookback_days=self.config.scan.lookback_days,
            now=self.org.now,
            extra_emails=self.config.extra_emails,
        )
        return {u: (t.commits, t.period_commits, t.projects) for u, t in expected.items()}

    def check(
        self, second: Snapshot, reason: str, *, affected: set[str] | None = None
    ) -> set[str]:
        """The contract after a faulted scan; returns the users that failed."""
        failed = {u for u, s in second.users.items() if s.last_error is not None}
        if affected is not None:
            assert failed == affected
        assert second.last_scan is not None and second.last_scan.users_failed == len(failed)
        for user in failed:
            state, before = second.users[user], self.first.users[user]
            assert state.last_error == reason, (user, state.last_error_message)
            assert dict(state.failures) == {reason: 1}, user
            assert state.stats == before.stats and state.stats is not None, user
            assert state.last_success == before.last_success, user
            assert self.registry.get_sample_value("gitlab_activity_user_up", {"user": user}) == 0
            assert self.registry.get_sample_value(
                "gitlab_activity_user_scan_failures_total", {"user": user, "reason": reason}
            ) == 1
            assert self.registry.get_sample_value(
                "gitlab_activity_user_commits", {"user": user}
            ) == before.stats.commits  # type: ignore[union-attr]
        unaffected = [u for u in self.users if u not in failed and u in self.org_usernames()]
        truth = self.truth(unaffected)
        for user in unaffected:
            stats = second.users[user].stats
            assert stats is not None, user
            got = (stats.commits, dict(stats.period_commits), dict(stats.projects))
            assert got == truth[user], user
            assert second.users[user].last_error is None
        return failed

    def org_usernames(self) -> set[str]:
        return {u.username for u in self.org.users.values()}


@pytest.fixture
async def campaign_factory(
    org: Org, sim: SimulatorServer
) -> AsyncIterator[Callable[..., Any]]:
    services: list[ExporterService] = []

    async def make(**gitlab: Any) -> Campaign:
        config = build_config(org, sim.url, **gitlab)
        service = ExporterService(config, clock=lambda: org.now)
        registry = build_registry(lambda: service.snapshot, version=__version__)
        service.attach_metrics(registry)
        await service.start()
        services.append(service)
        first = await asyncio.wait_for(service.scan_once(), DEADLINE)
        assert first.last_scan is not None and first.last_scan.users_failed == 0
        sim.log.clear()
        return Campaign(org, sim, config, service, registry, first)

    yield make
    for service in services:
        await service.stop()


# --- one fault on one user's endpoint: that user fails alone -------------------------

USER_FAULTS = [
    # (kind, path under /api/v4/users/ID, reason)
    ("500_html", "/projects", "api_error"),
    ("502_html", "/contributed_projects", "api_error"),
    ("503_html", "/events", "api_error"),
    ("429", "/projects", "rate_limited"),
    ("429_no_retry_after", "/contributed_projects", "rate_limited"),
    ("reset", "/events", "timeout"),
    ("malformed_json", "/projects", "api_error"),
    ("wrong_shape_object", "/projects", "api_error"),  # an object where a list is due
    ("wrong_shape_object", "", "api_error"),  # a list where an object is due
    ("missing_fields", "", "api_error"),
    ("null_fields", "", "api_error"),  # null name and username
    ("naive_dates", "/projects", "api_error"),  # last_activity_at without an offset
    ("link_loop", "/events", "api_error"),
    ("404", "", "not_found"),
]


@pytest.mark.parametrize(
    ("kind", "suffix", "reason"),
    USER_FAULTS,
    ids=[f"{k}-{s.strip('/') or 'user'}" for k, s, _ in USER_FAULTS],
)
async def test_persistent_fault_on_one_user(
    campaign_factory: Callable[..., Any], kind: str, suffix: str, reason: str
) -> None:
    c: Campaign = await campaign_factory()
    victim = c.active_user()
    c.sim.faults.add(FaultRule(rf"^/api/v4/users/{c.user_id(victim)}{suffix}$", kind))
    second, seconds = await c.scan()
    assert seconds < DEADLINE
    c.check(second, reason, affected={victim})
    assert c.sim.faults.injected.get(kind, 0) >= 1


async def test_slower_than_the_timeout_is_a_timeout(campaign_factory: Callable[..., Any]) -> None:
    c: Campaign = await campaign_factory(timeout_seconds=0.3, max_retries=1)
    victim = c.active_user()
    c.sim.faults.add(FaultRule(rf"^/api/v4/users/{c.user_id(victim)}$", "slow", delay=3.0))
    second, seconds = await c.scan()
    assert seconds < 3.0  # the client gave up; it did not wait for the slow answers
    c.check(second, "timeout", affected={victim})


async def test_huge_body_is_capped_not_read(campaign_factory: Callable[..., Any]) -> None:
    c: Campaign = await campaign_factory(max_response_bytes=256 * 1024)
    c.sim.faults.huge_body_bytes = 8 * 2**20
    victim = c.active_user()
    c.sim.faults.add(FaultRule(rf"^/api/v4/users/{c.user_id(victim)}/projects$", "huge_body"))
    second, _ = await c.scan()
    c.check(second, "api_error", affected={victim})
    message = second.users[victim].last_error_message or ""
    assert "larger than 262144 bytes" in message


# --- faults on a shared project's commits: the project keeps its last good commits --


def busy_project(c: Campaign) -> int:
    """The project with the most commits in the window (several users work in it)."""
    since = c.org.now.timestamp() - c.config.scan.lookback_days * 86400
    counts = {
        pid: sum(1 for commit in commits if commit.authored_date.timestamp() >= since)
        for pid, commits in c.org.commits.items()
    }
    return max(counts, key=lambda pid: counts[pid])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("null_fields", "api_error"),  # author_name / author_email null
        ("naive_dates", "api_error"),  # authored_date without an offset
        ("missing_fields", "api_error"),
        ("link_loop", "api_error"),
        ("malformed_json", "api_error"),
    ],
)
async def test_bad_commit_pages_keep_the_projects_last_good_commits(
    campaign_factory: Callable[..., Any], kind: str, reason: str
) -> None:
    c: Campaign = await campaign_factory()
    project = busy_project(c)
    c.sim.faults.add(FaultRule(rf"^/api/v4/projects/{project}/repository/commits$", kind))
    # scans read only what changed: a new branch here, whose commits are read
    when = c.org.now - timedelta(minutes=30)
    c.org.add_commits(project, [Commit(
        sha="7" * 40, title="Topic", message="Topic", author_name="Someone",
        author_email="someone@example.com", authored_date=when, committed_date=when,
        branch="topic/new")])
    second, _ = await c.scan()
    # read before: nobody fails for it, its commits are the last good ones (unchanged)
    assert c.check(second, reason, affected=set()) == set()
    assert c.sim.faults.injected.get(kind, 0) >= 1, "the bad page was never asked for"
    assert dict(second.project_read_failures) == {reason: 1}
    assert c.registry.get_sample_value(
        "gitlab_activity_project_read_failures_total", {"reason": reason}
    ) == 1


# --- everyone at once --------------------------------------------------------------


async def test_token_revoked_mid_run(campaign_factory: Callable[..., Any]) -> None:
    c: Campaign = await campaign_factory()
    c.sim.faults.add(FaultRule(r".*", "401"))
    second, _ = await c.scan()
    # the scan stops at its first request (who is the token?): every user keeps its
    # last good values, and no failure is pinned on a user
    assert second.users == c.first.users
    assert second.last_complete_scan_end == c.first.last_complete_scan_end
    assert c.sim.log.count(status=401) == 1


async def test_429_storm_for_everyone_ends_within_the_deadline(
    campaign_factory: Callable[..., Any],
) -> None:
    c: Campaign = await campaign_factory(max_retries=1)
    c.sim.faults.add(FaultRule(r".*", "429"))  # Retry-After: 1
    second, seconds = await c.scan()
    c.check(second, "rate_limited", affected=set(c.users))
    # every request tried at most max_retries + 1 times, each after the named wait
    assert c.sim.log.count(status=429) <= 2 * (len(c.users) + len(c.config.teams))
    assert seconds >= 1.0
    assert seconds < DEADLINE


async def test_user_deleted_between_discovery_and_scan(
    campaign_factory: Callable[..., Any],
) -> None:
    c: Campaign = await campaign_factory()
    victim = c.active_user()
    # hold the victim's detail request until the user has been deleted
    rule = c.sim.faults.add(
        FaultRule(rf"^/api/v4/users/{c.user_id(victim)}$", "slow", delay=0.5, times=1)
    )
    task = asyncio.ensure_future(c.scan())
    while rule.hits == 0:  # noqa: ASYNC110 - the simulator has no event to wait on
        await asyncio.sleep(0.01)
    c.org.delete_user(victim)
    second, _ = await task
    c.check(second, "not_found", affected={victim})


# --- mixed ---------------------------------------------------------------------------


async def test_mixed_faults_at_once(campaign_factory: Callable[..., Any]) -> None:
    c: Campaign = await campaign_factory(timeout_seconds=0.5, max_retries=1)
    plan = {
        c.active_user(0): ("503_html", "/projects", "api_error"),
        c.active_user(1): ("429_no_retry_after", "/contributed_projects", "rate_limited"),
        c.active_user(2): ("slow", "", "timeout"),
        c.active_user(3): ("wrong_shape_object", "/events", "api_error"),
        c.active_user(4): ("404", "", "not_found"),
    }
    for user, (kind, suffix, _) in plan.items():
        c.sim.faults.add(FaultRule(rf"^/api/v4/users/{c.user_id(user)}{suffix}$", kind, delay=2.0))
    # and transient noise everywhere that retries absorb
    for kind in ("502_html", "reset", "malformed_json", "429"):
        c.sim.faults.add(FaultRule(r"/repository/(commits|branches)$", kind, times=1))
    # scans read only changed projects' branches: let every project have seen activity
    for project in c.org.projects.values():
        project.last_activity_at = c.org.now
    second, _ = await c.scan()
    failed = {u for u, s in second.users.items() if s.last_error is not None}
    assert failed == set(plan)
    for user, (_, _, reason) in plan.items():
        assert second.users[user].last_error == reason, user
        assert second.users[user].stats == c.first.users[user].stats
    assert c.sim.faults.injected.get("reset") == 1
    # the rest exact (reason checked per user above; check() with one reason would not fit)
    unaffected = [u for u in c.users if u not in failed]
    truth = c.truth(unaffected)
    for user in unaffected:
        stats = second.users[user].stats
        assert stats is not None
        assert (stats.commits, dict(stats.period_commits), dict(stats.projects)) == truth[user]


async def test_random_fault_rate_never_lies(campaign_factory: Callable[..., Any]) -> None:
    c: Campaign = await campaign_factory(max_retries=1, timeout_seconds=1)
    c.sim.faults.fault_rate = 0.3
    c.sim.faults.retry_after = 0
    c.sim.faults.random_kinds = ("500_html", "502_html", "503_html", "reset", "429", "malformed_json")
    snapshot = c.first
    for _ in range(3):
        snapshot, _ = await c.scan()
        allowed = {"api_error", "rate_limited", "timeout"}
        for user, state in snapshot.users.items():
            if state.last_error is not None:
                assert state.last_error in allowed, (user, state.last_error_message)
                assert state.stats == c.first.users[user].stats
        good = [u for u, s in snapshot.users.items() if s.last_error is None]
        truth = c.truth(good)
        for user in good:
            stats = snapshot.users[user].stats
            assert stats is not None
            assert (stats.commits, dict(stats.period_commits), dict(stats.projects)) == truth[user]
    assert sum(c.sim.faults.injected.values()) > 20
    c.sim.faults.clear()
    healed, _ = await c.scan()
    assert all(s.last_error is None for s in healed.users.values())


# --- the process under a storm ---------------------------------------------------------


async def test_serve_keeps_answering_metrics_during_a_fault_storm(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    from tests.test_cli import free_port, samples, start, stop, wait_for, write_config

    document = config_document(org, sim.url)
    document["gitlab"].update({"timeout_seconds": 0.5, "max_retries": 1})
    document["scan"]["interval_seconds"] = 0.5
    port = free_port()
    proc = await start(
        "serve", "--config.file", str(write_config(tmp_path, document)),
        "--web.listen-address", f"127.0.0.1:{port}",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_for(f"{base}/-/ready", timeout=30)
        sim.faults.fault_rate = 0.7
        sim.faults.slow_delay = 2.0
        sim.faults.random_kinds = (
            "500_html", "503_html", "reset", "429", "malformed_json", "slow",
            "wrong_shape_object", "null_fields", "link_loop", "401",
        )
        sim.faults.retry_after = 0
        began = time.monotonic()
        answered = 0
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - began < 4.0:
                t0 = time.monotonic()
                async with session.get(f"{base}/metrics") as response:
                    assert response.status == 200
                    text = await response.text()
                assert time.monotonic() - t0 < 1.0, "a scrape waited on GitLab"
                answered += 1
                await asyncio.sleep(0.1)
        # the storm shows: users failing, projects failing, or GitLab refused at the door
        failures = [
            sum(samples(text, family).values())
            for family in (
                "gitlab_activity_user_scan_failures_total",
                "gitlab_activity_project_read_failures_total",
                "gitlab_activity_connection_failures_total",
            )
        ]
        assert sum(failures) > 0, "the storm caused no failure at all"
        assert samples(text, "gitlab_activity_user_commits")
        assert answered >= 20
        assert proc.returncode is None, "the exporter died"
    finally:
        code, _, err = await stop(proc)
    assert code == 0, err
    assert "Traceback" not in err


# --- a nesting bomb: valid JSON that Python's parser cannot take ---------------------


@pytest.mark.parametrize("status", [200, 500])
async def test_deeply_nested_json_is_an_api_error_not_a_crash(status: int) -> None:
    from aiohttp import web
    from aiohttp.test_utils import RawTestServer

    from exporter.gitlab.client import ApiError, GitLabClient

    bomb = b"[" * 200_000 + b"]" * 200_000

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(body=bomb, status=status, content_type="application/json")

    async with RawTestServer(handler) as server, aiohttp.ClientSession() as session:
        client = GitLabClient(
            session, base_url=str(server.make_url("")), token="t0ken", max_retries=0,
            requests_per_second=1000,
        )
        with pytest.raises(ApiError):
            await client.get_json("/users", endpoint="/users")


# --- redirect safety -------------------------------------------------------------------


@pytest.mark.parametrize("target_host", ["127.0.0.2", "127.0.0.1"], ids=["other-host", "other-port"])
async def test_cross_origin_redirect_never_carries_the_token(
    campaign_factory: Callable[..., Any], org: Org, target_host: str
) -> None:
    c: Campaign = await campaign_factory()
    async with SimulatorServer(org, token=c.sim.token, host=target_host, port=0) as elsewhere:
        c.sim.faults.redirect_base = elsewhere.url
        victim = c.active_user()
        c.sim.faults.add(FaultRule(rf"^/api/v4/users/{c.user_id(victim)}/projects$", "redirect"))
        second, _ = await c.scan()
        assert c.sim.faults.injected.get("redirect", 0) >= 1
        c.check(second, "api_error", affected={victim})
        assert "another origin" in (second.users[victim].last_error_message or "")
        assert elsewhere.credentials == []  # the token never left the configured origin
        assert len(elsewhere.log) == 0
    assert c.sim.credentials and set(c.sim.credentials) == {c.sim.token}

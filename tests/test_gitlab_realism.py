"""The client against the simulator answering as a real GitLab does: rate-limit headers
only on 429s, per-route limits without headers, a per-minute ``RateLimit-Limit``, resets
nobody can believe, pagination links on GitLab's external URL, endless empty pages."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture

from exporter.config import parse_config
from exporter.gitlab.api import GitLabApi
from exporter.gitlab.client import GitLabClient
from exporter.gitlab.errors import ApiError
from exporter.gitlab.pacing import GITLAB_COM_ENDPOINT_LIMITS
from exporter.service import ExporterService
from exporter.simulator.faults import FaultRule
from exporter.simulator.generate import generate_org
from exporter.simulator.model import Org
from exporter.simulator.server import REALISTIC_HEADERS, RateLimits, SimulatorServer
from tests.conftest import HOST, TOKEN, config_document
from tests.test_incremental import assert_exact

BOUND = 30.0
"""Seconds a test waits before calling a run hung."""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client_for(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> GitLabClient:
    options: dict[str, Any] = {
        "base_url": url,
        "token": TOKEN,
        "requests_per_second": 1000.0,
        "max_concurrency": 4,
        "timeout_seconds": 5.0,
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return GitLabClient(session, **options)


def some_user_ids(org: Org, n: int) -> list[int]:
    ids = sorted(org.users)
    return [ids[i % len(ids)] for i in range(n)]


# --------------------------------------------------------------------------- pacing


async def test_one_429_with_headers_then_none_never_hangs_the_gate(
    aiohttp_raw_server: Any, session: aiohttp.ClientSession
) -> None:
    # Self-managed with throttles on: RateLimit-* on the 429 alone. After it, answers
    # without headers must not drain a budget whose next reset nobody will name.
    answers: list[int] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        if not answers:
            answers.append(429)
            return web.Response(
                status=429,
                text="Retry later\n",
                headers={
                    "RateLimit-Name": "throttle_authenticated_api",
                    "RateLimit-Limit": "3",
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(int(time.time()) + 1),
                    "Retry-After": "1",
                },
            )
        answers.append(200)
        return web.json_response({"id": 1})

    server = await aiohttp_raw_server(handler)
    client = client_for(session, str(server.make_url("")).rstrip("/"))

    async def run() -> None:
        for _ in range(8):
            await client.get_json("/users/1", endpoint="/users/:id")

    await asyncio.wait_for(run(), BOUND)
    assert answers.count(200) == 8


async def test_headers_only_on_429_scan_finishes_with_few_429s(
    org: Org, session: aiohttp.ClientSession
) -> None:
    limits = RateLimits(general=(4, 1.0), headers_on_429_only=True, per_minute_limit=True)
    async with SimulatorServer(org, token=TOKEN, host=HOST, limits=limits) as sim:
        api = GitLabApi(client_for(session, sim.url))

        async def run() -> None:
            for user_id in some_user_ids(org, 14):
                await api.get_user(user_id)

        await asyncio.wait_for(run(), BOUND)
        assert sim.log.count("/users/:id", 200) == 14
        # after the one 429 that taught the window, the gate keeps to it
        assert sim.log.count(status=429) <= 2, sim.log.by_endpoint()


async def test_per_minute_limit_header_is_not_the_window_size(
    org: Org, session: aiohttp.ClientSession
) -> None:
    # 4 requests a second is sent as RateLimit-Limit 240 (per minute); the window's size
    # is Remaining + Observed, its length follows from the two.
    limits = RateLimits(general=(4, 1.0), **REALISTIC_HEADERS)
    async with SimulatorServer(org, token=TOKEN, host=HOST, limits=limits) as sim:
        api = GitLabApi(client_for(session, sim.url))

        async def run() -> None:
            for user_id in some_user_ids(org, 20):
                await api.get_user(user_id)

        await asyncio.wait_for(run(), BOUND)
        assert sim.log.count("/users/:id", 200) == 20
        assert sim.log.count(status=429) <= 2, sim.log.by_endpoint()


async def test_far_future_reset_is_not_believed_and_logged_once(
    org: Org, session: aiohttp.ClientSession, captured_logs: LogCapture
) -> None:
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        # two answers on two routes: "the token-wide budget is spent until 50,000 years on"
        sim.faults.add(FaultRule(r"/version$", "far_reset", times=1))
        sim.faults.add(FaultRule(r"/user$", "far_reset", times=1))
        client = client_for(session, sim.url)
        api = GitLabApi(client)

        async def run() -> None:
            await client.get_json("/version", endpoint="/version")
            await client.get_json("/user", endpoint="/user")
            for user_id in some_user_ids(org, 5):
                await api.get_user(user_id)

        await asyncio.wait_for(run(), BOUND)
        assert sim.log.count("/users/:id", 200) == 5
    warnings = [e for e in captured_logs.entries if "RateLimit-Reset ignored" in e["event"]]
    assert len(warnings) == 1


async def test_per_route_429_without_headers_holds_and_paces_that_route(
    org: Org, session: aiohttp.ClientSession
) -> None:
    # GitLab's per-route limits name no limit and send Retry-After of the whole interval
    limits = RateLimits(endpoints={"/users/:id": (4, 2.0)}, **REALISTIC_HEADERS)
    async with SimulatorServer(org, token=TOKEN, host=HOST, limits=limits) as sim:
        api = GitLabApi(client_for(session, sim.url, max_concurrency=4, max_retries=1))

        async def run() -> None:
            await asyncio.gather(*(api.get_user(i) for i in some_user_ids(org, 16)))

        await asyncio.wait_for(run(), 3 * BOUND)
        assert sim.log.count("/users/:id", 200) == 16
        # the first refusal holds the route and teaches its pace: at most the requests
        # in flight then meet a 429
        assert sim.log.count("/users/:id", 429) <= 4, sim.log.by_endpoint()


def test_gitlab_com_limits_apply_by_default_on_gitlab_com(org: Org) -> None:
    doc = config_document(org, "https://gitlab.com")
    assert parse_config(doc, env={}).gitlab.rate_limits == dict(GITLAB_COM_ENDPOINT_LIMITS)
    doc["gitlab"]["endpoint_limits"] = "none"
    assert parse_config(doc, env={}).gitlab.rate_limits == {}
    elsewhere = config_document(org, "https://gitlab.example.com")
    assert parse_config(elsewhere, env={}).gitlab.rate_limits == {}


# --------------------------------------------------------------------------- pagination


def _assert_api_error(exc: BaseException, text: str) -> None:
    assert isinstance(exc, ApiError)
    assert exc.reason == "api_error"
    assert text in str(exc)


async def test_next_links_on_gitlabs_external_url_are_followed_on_the_configured_one(
    aiohttp_raw_server: Any, session: aiohttp.ClientSession, captured_logs: LogCapture
) -> None:
    org = generate_org(5, users=3, projects=3, host=HOST, history_commits=150)
    external: list[str] = []

    async def elsewhere(request: web.BaseRequest) -> web.Response:
        external.append(request.path_qs)
        return web.json_response([])

    # GitLab's external URL: another origin (a TLS proxy's, here a server of its own)
    other = await aiohttp_raw_server(elsewhere)
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.simulator.external_url = str(other.make_url("")).rstrip("/")
        client = client_for(session, sim.url)
        project = min(p for p in org.projects if org.projects[p].forked_from_project is None)
        for _ in range(2):
            commits = [
                c
                async for c in client.paginate(
                    f"/projects/{project}/repository/commits",
                    {"all": "true"},
                    endpoint="/projects/:id/repository/commits",
                )
            ]
            assert len(commits) > 100  # more than one page
        assert sim.log.count("/projects/:id/repository/commits", 200) >= 4
        assert set(sim.credentials) == {TOKEN}
    assert external == []  # nothing, and no token, went to the external origin
    notes = [e for e in captured_logs.entries if "external URL differs" in e["event"]]
    assert len(notes) == 1
    assert TOKEN not in repr(notes)


async def test_endless_empty_pages_are_stopped_with_an_api_error(
    org: Org, session: aiohttp.ClientSession
) -> None:
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.faults.add(FaultRule(r"/users/\d+/projects$", "endless_empty"))
        api = GitLabApi(client_for(session, sim.url))
        user = min(org.users)
        with pytest.raises(ApiError) as info:
            await asyncio.wait_for(api.user_projects(user), BOUND)
        _assert_api_error(info.value, "empty pages in a row")
        assert sim.log.count("/users/:id/projects") <= 4


async def test_runaway_events_listing_ends_at_gitlabs_own_cap(
    org: Org, session: aiohttp.ClientSession
) -> None:
    # events pages may be empty midway (cut before visibility filtering), but GitLab
    # never lists more than 101 pages of them
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.faults.add(FaultRule(r"/users/\d+/events$", "endless_empty"))
        api = GitLabApi(client_for(session, sim.url))
        user = min(org.users)
        with pytest.raises(ApiError) as info:
            await asyncio.wait_for(api.pushes(user, org.now.date()), BOUND)
        _assert_api_error(info.value, "longer than 101 pages")
        assert sim.log.count("/users/:id/events") == 101


# --------------------------------------------------------------------------- failures


async def test_projects_whose_reads_keep_failing_are_set_aside(org: Org) -> None:
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.faults.add(FaultRule(r"/repository/commits$", "502_html"))  # every project, always
        config = parse_config(config_document(org, sim.url), env={})
        registry = CollectorRegistry()
        service = ExporterService(config, clock=lambda: org.now)
        service.attach_metrics(registry)
        commits = "/projects/:id/repository/commits"
        async with service:
            await service.scan_once()
            first = sim.log.count(commits)
            projects = len({r.path for r in sim.log if r.endpoint == commits})
            assert first == projects * (1 + config.gitlab.max_retries)  # full retries
            assert registry.get_sample_value("gitlab_activity_projects_failing") == projects
            sim.log.clear()
            await service.scan_once()
            # one attempt per read, no retries (a project may be read more than once a scan)
            per_project = Counter(r.path for r in sim.log if r.endpoint == commits)
            assert set(per_project) == {r for r in per_project} and len(per_project) == projects
            assert max(per_project.values()) < 1 + config.gitlab.max_retries
            assert registry.get_sample_value("gitlab_activity_projects_set_aside") == projects
            sim.log.clear()
            await service.scan_once()
            assert sim.log.count(commits) == 0  # set aside: no request at all
            assert registry.get_sample_value(
                "gitlab_activity_project_reads_set_aside_total"
            ) == projects
            # once GitLab answers again and the pause is over, the reads come back
            sim.faults.clear()
            assert service.client.breaker is not None
            service.client.breaker._clock = lambda: time.monotonic() + 3600.0
            sim.log.clear()
            snapshot = await service.scan_once()
            assert sim.log.count(commits) == projects
        assert registry.get_sample_value("gitlab_activity_projects_failing") == 0
        assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0


# --------------------------------------------------------------------------- bodies


async def test_response_bytes_in_flight_are_capped_for_the_process(
    org: Org, session: aiohttp.ClientSession
) -> None:
    body = 3 * 2**20
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.faults.huge_body_bytes = body  # pages near a (lowered) body cap
        sim.faults.add(FaultRule(r"/users/\d+/projects$", "huge_body"))
        client = client_for(
            session, sim.url, max_concurrency=8, max_body_bytes=4 * 2**20,
            max_bytes_in_flight=4 * 2**20,
        )
        users = sorted(org.users)[:8]
        pages = await asyncio.wait_for(
            asyncio.gather(
                *(client.get_json(f"/users/{u}/projects", endpoint="/users/:id/projects")
                  for u in users)
            ),
            BOUND,
        )
    assert all(isinstance(p, list) and len(p) > 100 for p in pages)
    # eight bodies of 3 MiB were on their way at once; at most the cap plus one was held
    assert client.bodies.waits > 0
    assert client.bodies.peak <= 4 * 2**20 + body + 64 * 1024
    assert client.bodies.used == 0


# a large page without stalling the event loop: tests/test_bodies.py


async def test_a_scan_finishes_exact_under_throttles_answered_as_gitlab_does(org: Org) -> None:
    # a self-managed GitLab with throttles on: RateLimit-* only on the general limit's
    # 429s, per-route limits without any and a Retry-After of the whole interval
    limits = RateLimits(general=(40, 1.0), endpoints={"/users/:id": (6, 2.0)}, **REALISTIC_HEADERS)
    async with SimulatorServer(org, token=TOKEN, host=HOST, limits=limits) as sim:
        config = parse_config(config_document(org, sim.url), env={})
        async with ExporterService(config, clock=lambda: org.now) as service:
            snapshot = await asyncio.wait_for(service.scan_once(), 4 * BOUND)
    assert snapshot.last_scan is not None
    assert snapshot.last_scan.users_failed == 0, {
        u: s.last_error_message for u, s in snapshot.users.items() if s.last_error
    }
    assert_exact(snapshot, org, config)
    assert sim.log.count(status=429) < len(sim.log) / 10, sim.log.by_endpoint()

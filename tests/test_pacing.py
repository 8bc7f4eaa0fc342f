"""Endpoint-aware pacing: discovery reused between refreshes, per-endpoint limits, headers."""

from __future__ import annotations

from datetime import timedelta

from exporter.config import ConfigError, parse_config
from exporter.gitlab.pacing import GITLAB_COM_ENDPOINT_LIMITS, RateGate
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import RateLimits, SimulatorServer
from exporter.simulator.workload import add_new_work
from tests.conftest import HOST, TOKEN, config_document, make_config
from tests.test_incremental import assert_exact

USER_ENDPOINTS = ("/users", "/users/:id", "/users/:id/projects", "/users/:id/contributed_projects")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gate_keeps_starts_under_the_limit_in_any_period() -> None:
    clock = FakeClock()
    gate = RateGate({"/users/:id": (20, 10.0)}, clock=clock)
    allowed = 0
    while gate.delay("/users/:id") == 0:
        gate._windows["/users/:id"].sent.append(clock())
        allowed += 1
        clock.now += 0.01
    assert allowed == 19  # 95 % of the limit: room for timing jitter
    assert gate.delay("/users/:id/events") == 0  # other routes are not held up
    assert 9.5 < gate.delay("/users/:id") <= 10.0
    clock.now += 10.0
    assert gate.delay("/users/:id") == 0


async def test_gate_tickets_reserve_and_record_sends() -> None:
    clock = FakeClock()
    gate = RateGate({"all": (3, 60.0)}, clock=clock)  # 95 %: two starts a minute
    first = await gate.acquire("/projects/:id/repository/commits")
    second = await gate.acquire("/users")
    assert gate.delay("/users") > 0  # both places reserved
    second.close()  # abandoned before it was sent: its place is free again
    assert gate.delay("/users") == 0
    first.sent()
    first.close()
    third = await gate.acquire("/users")
    third.sent()
    third.close()
    assert gate.delay("/users") > 0  # two sends in the last minute
    clock.now += 60.0
    assert gate.delay("/users") == 0


def test_gate_holds_a_route_whose_remaining_budget_ran_out_until_its_reset() -> None:
    clock = FakeClock()
    gate = RateGate(clock=clock, wall_clock=lambda: 5000.0)
    low = {"RateLimit-Name": "user_contributed_projects_api", "RateLimit-Remaining": "0",
           "RateLimit-Reset": "5030"}
    gate.observe("/users/:id/contributed_projects", low)
    assert 30 <= gate.delay("/users/:id/contributed_projects") <= 31
    assert gate.delay("/users/:id/events") == 0
    # plenty left: nothing held
    gate.observe("/users/:id/projects", {**low, "RateLimit-Name": "user_projects_api",
                                         "RateLimit-Remaining": "250"})
    assert gate.delay("/users/:id/projects") == 0
    # the token-wide limit (its name seen on several routes) holds every route
    general = {"RateLimit-Name": "throttle_authenticated_api", "RateLimit-Remaining": "500",
               "RateLimit-Reset": "5010"}
    gate.observe("/users/:id/events", general)
    gate.observe("/projects/:id/repository/commits", {**general, "RateLimit-Remaining": "0"})
    assert gate.delay("/groups/:id/members/all") >= 10
    clock.now += 31
    assert gate.delay("/users/:id/contributed_projects") == 0


async def test_header_budget_replaces_the_configured_window_and_returns_at_reset() -> None:
    clock = FakeClock()
    gate = RateGate({"/users/:id/contributed_projects": (10, 60.0)}, clock=clock,
                    wall_clock=lambda: 5000.0 + clock.now)
    route = "/users/:id/contributed_projects"
    headers = {"RateLimit-Name": "user_contributed_projects_api", "RateLimit-Limit": "100",
               "RateLimit-Remaining": "3", "RateLimit-Reset": str(5000 + 1000 + 20)}
    gate.observe(route, headers)
    tickets = []
    for _ in range(3):  # exactly what GitLab says is left may be on its way
        assert gate.delay(route) == 0
        tickets.append(await gate.acquire(route))
    assert gate.delay(route) > 0
    for ticket in tickets:
        ticket.sent()
        gate.observe(route, {**headers, "RateLimit-Remaining": "0"})
        ticket.close()
    assert 20 <= gate.delay(route) <= 21  # spent: wait for GitLab's reset
    clock.now += 21  # GitLab's window is over: its whole allowance is back
    for _ in range(50):  # more than the configured sliding window's 9 would allow
        assert gate.delay(route) == 0
        await gate.acquire(route)


def test_endpoint_limits_config() -> None:
    doc = config_document(_dummy_org(), "http://x.example")
    doc["gitlab"]["endpoint_limits"] = "gitlab.com"
    assert parse_config(doc, env={}).gitlab.rate_limits == dict(GITLAB_COM_ENDPOINT_LIMITS)
    doc["gitlab"]["endpoint_limits"] = {"all": {"requests": 600, "period_seconds": 60}}
    assert parse_config(doc, env={}).gitlab.rate_limits == {"all": (600, 60.0)}
    doc["gitlab"]["endpoint_limits"] = {"users": {"requests": 1, "period_seconds": 1}}
    try:
        parse_config(doc, env={})
    except ConfigError as exc:
        assert "endpoint_limits" in str(exc)
    else:
        raise AssertionError("a key that is not a route was accepted")


def _dummy_org() -> Org:
    from exporter.simulator.generate import generate_org

    return generate_org(1, users=3, projects=3)


async def test_discovery_is_reused_until_its_interval_and_pushes_keep_numbers_exact(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    service = ExporterService(config, clock=lambda: org.now)
    async with service:
        await service.scan_once()
        first = sim.log.by_endpoint()
        sim.log.clear()
        changed = add_new_work(org, push=True)
        snapshot = await service.scan_once()
        steady = sim.log.by_endpoint()
        assert_exact(snapshot, org, config)
        assert all(first.get(e) for e in USER_ENDPOINTS)
        assert not any(steady.get(e) for e in USER_ENDPOINTS), steady
        # push events and changed projects' commits are read every scan
        assert steady["/users/:id/events"] == first["/users/:id/events"]
        # (a push is read through compare; a listing-driven change through commits)
        reads = sum(
            sum(steady.get(e, {}).values())
            for e in ("/projects/:id/repository/commits", "/projects/:id/repository/compare")
        )
        assert 0 < reads <= len(changed) + 2
        # once the interval has passed, discovery is refreshed
        sim.log.clear()
        org.now += timedelta(seconds=3601)
        snapshot = await service.scan_once()
        assert sim.log.by_endpoint()["/users/:id"] == first["/users/:id"]
        assert_exact(snapshot, org, config)


#: gitlab.com's shape, scaled down so a small organisation needs several windows
SCALED_LIMITS = RateLimits(
    general=(60, 2.0),
    endpoints={
        "/users/:id": (12, 4.0),
        "/users/:id/projects": (12, 2.0),
        "/users/:id/contributed_projects": (8, 2.0),
    },
)


async def test_scans_under_per_endpoint_limits_receive_no_429(org: Org) -> None:
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0, limits=SCALED_LIMITS) as sim:
        doc = config_document(org, sim.url, discovery_interval_seconds=3600)
        assert SCALED_LIMITS.general is not None
        doc["gitlab"]["endpoint_limits"] = {
            "all": {"requests": SCALED_LIMITS.general[0], "period_seconds": 2.0},
            **{
                route: {"requests": n, "period_seconds": period}
                for route, (n, period) in SCALED_LIMITS.endpoints.items()
            },
        }
        config = parse_config(doc, env={})
        service = ExporterService(config, clock=lambda: org.now)
        async with service:
            await service.scan_once()
            first = len(sim.log)
            add_new_work(org, push=True)
            snapshot = await service.scan_once()
        assert sim.log.count(status=429) == 0, sim.log.by_endpoint()
        # the limits really bind: the first scan needed several windows of each
        assert first > 2 * SCALED_LIMITS.general[0]
        assert sim.log.count("/users/:id/contributed_projects") > 2 * 8
        assert_exact(snapshot, org, config)

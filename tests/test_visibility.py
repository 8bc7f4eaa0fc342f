"""What a token that is not an admin's can see, and whose commits are whose: against the
simulator over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from exporter.output import render
from exporter.service import ExporterService
from exporter.simulator.generate import Realism, generate_org
from exporter.simulator.server import SimulatorServer
from tests.conftest import HOST, TOKEN
from tests.test_project_isolation import assert_exact, config_for


@pytest.fixture
async def guest_sim(request: pytest.FixtureRequest) -> AsyncIterator[SimulatorServer]:
    realism, admin = request.param
    org = generate_org(11, users=20, projects=60, host=HOST, realism=realism)
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0, admin=admin) as server:
        yield server


@pytest.mark.parametrize(
    "guest_sim", [(Realism(private_profiles=2, blocked_users=1), False)], indirect=True
)
async def test_a_private_profile_is_a_failure_never_a_successful_zero(
    guest_sim: SimulatorServer,
) -> None:
    org = guest_sim.org
    private = sorted(u.username for u in org.users.values() if u.private_profile)
    blocked = sorted(u.username for u in org.users.values() if u.state == "blocked")
    assert len(private) == 2 and len(blocked) == 1
    config = config_for(org, guest_sim.url, discovery_interval_seconds=3600)
    async with ExporterService(config, clock=lambda: org.now) as service:
        first = await service.scan_once()
        mark = len(guest_sim.log)
        second = await service.scan_once()
    for snapshot in (first, second):
        for name in private:
            state = snapshot.users[name]
            assert state.last_error == "private_profile" and state.stats is None, name
        assert snapshot.users[blocked[0]].last_error == "not_found"
        assert_exact(snapshot, org, config, admin=False)
    assert second.users[private[0]].failures["private_profile"] == 2
    # the hidden lists are not asked for, and the profile not again before rediscovery
    ids = {str(u.id) for u in org.users.values() if u.private_profile}
    asked = {
        r.path.split("/")[4] for r in guest_sim.log.entries
        if r.path.startswith("/api/v4/users/") and r.path.count("/") >= 5
    }
    assert not ids & asked
    later = [r for r in guest_sim.log.entries[mark:] if r.endpoint == "/users/:id"]
    assert later == []
    text = render(second, "prometheus")
    assert (
        f'gitlab_activity_user_scan_failures_total{{reason="private_profile",user="{private[0]}"}}'
        " 2.0" in text
    )
    assert f'gitlab_activity_user_up{{user="{private[0]}"}} 0.0' in text


@pytest.mark.parametrize("guest_sim", [(Realism(private_profiles=2), True)], indirect=True)
async def test_an_admin_token_sees_private_profiles(guest_sim: SimulatorServer) -> None:
    org = guest_sim.org
    config = config_for(org, guest_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert_exact(snapshot, org, config, admin=True)

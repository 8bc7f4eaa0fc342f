"""What a token that is not an admin's can see, and whose commits are whose: against the
simulator over HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from exporter.commit_store import ProjectState
from exporter.config import parse_config
from exporter.logs import configure_logging
from exporter.output import render
from exporter.service import ExporterService
from exporter.simulator.generate import Realism, generate_org
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.truth import expected_activity
from tests.conftest import HOST, TOKEN, config_document
from tests.test_project_isolation import LOOKBACK, assert_exact, config_for


@pytest.fixture(autouse=True)
def console_logs() -> Iterator[None]:
    yield
    configure_logging("info", "console")


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


@pytest.mark.parametrize("guest_sim", [(Realism(private_profiles=2), False)], indirect=True)
async def test_a_hidden_profile_lists_nothing_and_projects_nobody_needs_are_forgotten(
    guest_sim: SimulatorServer,
) -> None:
    org = guest_sim.org
    config = config_for(org, guest_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        # a hidden profile is no failed discovery: it lists nothing the token can read
        service.scanner.store.projects[424242] = ProjectState(org.now, None, None)
        snapshot = await service.scan_once()
        assert 424242 not in service.scanner.store.projects
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 2


@pytest.mark.parametrize("guest_sim", [(Realism(private_profiles=2), True)], indirect=True)
async def test_an_admin_token_sees_private_profiles(guest_sim: SimulatorServer) -> None:
    org = guest_sim.org
    config = config_for(org, guest_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert_exact(snapshot, org, config, admin=True)


EXTERNAL = "gitlab.example.com"  # GitLab's external host; the simulator listens on HOST


def noreply_commits(org: Org, hostname: str) -> list[tuple[str, str]]:
    start = org.now - timedelta(days=LOOKBACK)
    return [
        (c.author_email, c.sha)
        for commits in org.commits.values()
        for c in commits
        if c.author_email.casefold().endswith("@" + hostname) and c.authored_date >= start
    ]


@pytest.fixture
async def external_sim(request: pytest.FixtureRequest) -> AsyncIterator[SimulatorServer]:
    realism: Realism = request.param
    org = generate_org(11, users=20, projects=60, host=EXTERNAL, realism=realism)
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0) as server:
        yield server


@pytest.mark.parametrize("external_sim", [Realism()], indirect=True)
async def test_noreply_emails_on_gitlabs_external_host_are_matched(
    external_sim: SimulatorServer,
) -> None:
    org = external_sim.org
    hostname = f"users.noreply.{EXTERNAL}"
    assert noreply_commits(org, hostname)
    for commits in org.commits.values():  # only the no-reply email says whose they are
        for c in commits:
            if c.author_email.casefold().endswith("@" + hostname):
                c.author_name = "Nick Name"
    config = config_for(org, external_sim.url)
    assert config.gitlab.host != EXTERNAL
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert_exact(snapshot, org, config, admin=True)


@pytest.mark.parametrize("guest_sim", [(Realism(renamed_users=3), True)], indirect=True)
async def test_a_renamed_users_older_commits_stay_theirs(guest_sim: SimulatorServer) -> None:
    org = guest_sim.org  # no-reply emails on the host the simulator listens on
    renamed = [u for u in org.users.values() if u.previous_usernames]
    hostname = f"users.noreply.{HOST}"
    old_forms = {f"{u.id}-{u.previous_usernames[0]}@{hostname}".casefold() for u in renamed}
    assert {e.casefold() for e, _ in noreply_commits(org, hostname)} & old_forms
    config = config_for(org, guest_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert_exact(snapshot, org, config, admin=True)


@pytest.mark.parametrize("external_sim", [Realism(renamed_users=2)], indirect=True)
async def test_the_configured_commit_email_hostname_replaces_gitlabs_default(
    external_sim: SimulatorServer,
) -> None:
    org = external_sim.org
    custom = "noreply.corp.example"
    for commits in org.commits.values():  # the admin set commit_email_hostname
        for c in commits:
            c.author_email = c.author_email.replace(f"@users.noreply.{EXTERNAL}", f"@{custom}")
    assert noreply_commits(org, custom)
    document = config_document(org, external_sim.url)
    document["gitlab"]["commit_email_hostname"] = custom
    config = parse_config(document, env={})
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    truth = expected_activity(
        org, usernames=list(snapshot.users), timezone=config.scan.timezone,
        periods=config.scan.periods, lookback_days=LOOKBACK, now=org.now,
        extra_emails=config.extra_emails, commit_email_hostname=custom,
    )
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    for name, state in snapshot.users.items():
        assert state.stats is not None and state.stats.commits == truth[name].commits, name


@pytest.mark.parametrize("guest_sim", [(Realism(shared_names=1), True)], indirect=True)
async def test_a_display_name_two_users_share_identifies_neither(
    guest_sim: SimulatorServer,
) -> None:
    org = guest_sim.org
    names: dict[str, list[str]] = {}
    for u in org.users.values():
        names.setdefault(u.name, []).append(u.username)
    (shared, pair), = [(n, sorted(us)) for n, us in names.items() if len(us) > 1]
    start = org.now - timedelta(days=LOOKBACK)
    by_name_only = [
        c for commits in org.commits.values() for c in commits
        if c.author_name == shared and c.author_email.endswith("@shared-laptop.local")
        and c.authored_date >= start
    ]
    assert by_name_only  # commits only that name says whose they are
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    config = config_for(org, guest_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        snapshot = await service.scan_once()
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert_exact(snapshot, org, config, admin=True)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    said = [e for e in lines if e.get("event", "").startswith("a name shared by scanned users")]
    assert [(e["name"], e["users"]) for e in said] == [(shared.casefold(), pair)]

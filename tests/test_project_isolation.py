"""One project's failure stays that project's: against the simulator over HTTP.

A repository the token may not read (403) or that does not exist (404 ``Repository``)
is skipped and counted; a project whose reads fail otherwise keeps its last good
commits; only the users who need a project never read successfully fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from exporter.config import Config, parse_config
from exporter.output import render
from exporter.service import ExporterService
from exporter.simulator.generate import Realism, generate_org
from exporter.simulator.model import Commit, Org, User
from exporter.simulator.server import SimulatorServer
from exporter.simulator.truth import expected_activity, expected_failures
from exporter.snapshot import Snapshot
from tests.conftest import HOST, TOKEN, config_document

LOOKBACK = 30


def config_for(org: Org, url: str, **scan: object) -> Config:
    return parse_config(config_document(org, url, **scan), env={})


def project_sets(org: Org, admin: bool) -> dict[int, set[int]]:
    """user id -> the projects a scan looks in (listings and visible pushes in the window)."""
    start = org.now - timedelta(days=LOOKBACK)
    sets: dict[int, set[int]] = {}

    def visible(project_id: int) -> bool:  # push events need download_code
        project = org.projects.get(project_id)
        return admin or project is None or not project.code_forbidden

    for user in org.users.values():
        pushed = {
            e.project_id
            for e in org.events.get(user.id, [])
            if e.action == "pushed" and not e.hidden and start <= e.created_at < org.now
            and visible(e.project_id)
        }
        sets[user.id] = (
            set(org.personal_project_ids(user.id)) | set(org.contributed.get(user.id, [])) | pushed
        )
    return sets


def assert_exact(snapshot: Snapshot, org: Org, config: Config, *, admin: bool) -> None:
    users = sorted(snapshot.users)
    failures = expected_failures(
        org, usernames=users, lookback_days=LOOKBACK, now=org.now, admin=admin
    )
    truth = expected_activity(
        org, usernames=users, timezone=config.scan.timezone, periods=config.scan.periods,
        lookback_days=LOOKBACK, now=org.now, extra_emails=config.extra_emails, admin=admin,
    )
    for user in users:
        state = snapshot.users[user]
        assert state.last_error == failures.get(user), user
        if user in failures:
            continue
        assert state.stats is not None
        t = truth[user]
        got = (state.stats.commits, dict(state.stats.period_commits), dict(state.stats.projects))
        assert got == (t.commits, t.period_commits, t.projects), user


@pytest.fixture
async def guest_sim(request: pytest.FixtureRequest) -> AsyncIterator[SimulatorServer]:
    realism: Realism = request.param
    org = generate_org(11, users=20, projects=60, host=HOST, realism=realism)
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0, admin=False) as server:
        yield server


@pytest.mark.parametrize("guest_sim", [Realism(forbidden_projects=3)], indirect=True)
async def test_a_repository_the_token_may_not_read_is_skipped_and_its_users_stay_exact(
    guest_sim: SimulatorServer,
) -> None:
    org = guest_sim.org
    config = config_for(org, guest_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    start = org.now - timedelta(days=LOOKBACK)
    forbidden = {p.id for p in org.projects.values() if p.code_forbidden}
    wanted = set().union(*project_sets(org, admin=False).values())
    expected = {
        pid for pid in forbidden & wanted if org.projects[pid].last_activity_at >= start
    }
    assert expected, "the organisation should have a forbidden project someone lists"
    # each was asked once, answered 403, and nobody failed for it
    refused = [r for r in guest_sim.log.entries if r.status == 403]
    assert sorted(int(r.path.split("/")[4]) for r in refused) == sorted(expected)
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    assert_exact(snapshot, org, config, admin=False)
    assert dict(snapshot.projects_skipped) == {"forbidden": len(expected)}
    text = render(snapshot, "prometheus")
    assert f'gitlab_activity_projects_skipped{{reason="forbidden"}} {len(expected)}.0' in text
    assert 'gitlab_activity_projects_skipped{reason="no_repository"} 0.0' in text


@pytest.mark.parametrize("guest_sim", [Realism(repositoryless_projects=2)], indirect=True)
async def test_a_project_without_a_repository_is_skipped_and_counted(
    guest_sim: SimulatorServer,
) -> None:
    org = guest_sim.org
    config = config_for(org, guest_sim.url, discovery_interval_seconds=3600)
    async with ExporterService(config, clock=lambda: org.now) as service:
        first = await service.scan_once()
        mark = len(guest_sim.log)
        second = await service.scan_once()
    assert first.last_scan is not None and first.last_scan.users_failed == 0
    assert_exact(first, org, config, admin=False)
    assert dict(first.projects_skipped) == {"no_repository": 2}
    # still skipped, and not asked again while nothing says it changed
    assert dict(second.projects_skipped) == {"no_repository": 2}
    asked = [r for r in guest_sim.log.entries[mark:] if r.status == 404]
    assert asked == []


def busiest_project(org: Org) -> tuple[int, list[User]]:
    """A group project with in-window activity listed by the most users."""
    sets = project_sets(org, admin=True)
    start = org.now - timedelta(days=LOOKBACK)
    counts = {
        pid: [org.users[uid] for uid, s in sets.items() if pid in s]
        for pid, p in org.projects.items()
        if p.namespace.kind == "group" and p.last_activity_at >= start and org.commits.get(pid)
    }
    pid = max(counts, key=lambda k: (len(counts[k]), -k))
    return pid, counts[pid]


async def test_a_failing_project_keeps_its_last_good_commits(
    org: Org, sim: SimulatorServer
) -> None:
    pid, users = busiest_project(org)
    assert len(users) >= 2
    config = config_for(org, sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        first = await service.scan_once()
        assert first.last_scan is not None and first.last_scan.users_failed == 0
        # new work makes the project due, and from now on its repository answers 500
        newest = max(org.commits[pid], key=lambda c: c.committed_date)
        late = newest.committed_date + timedelta(minutes=1)
        org.add_commits(pid, [Commit(
            sha="f" * 40, title="t", message="t\n", author_name=users[0].name,
            author_email="nobody@example.invalid", authored_date=late, committed_date=late,
        )])
        org.projects[pid].broken = True
        second = await service.scan_once()
    assert second.last_scan is not None and second.last_scan.users_failed == 0
    for name, state in second.users.items():
        assert state.stats == first.users[name].stats, name  # the last good commits
    assert second.project_read_failures["api_error"] == 1
    text = render(second, "prometheus")
    assert 'gitlab_activity_project_read_failures_total{reason="api_error"} 1.0' in text


async def test_a_project_never_read_fails_only_the_users_who_need_it(
    org: Org, sim: SimulatorServer
) -> None:
    pid, users = busiest_project(org)
    org.projects[pid].broken = True
    config = config_for(org, sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    needing = {u.username for u in users}
    failed = {name for name, s in snapshot.users.items() if s.last_error is not None}
    assert failed == needing
    assert {snapshot.users[n].last_error for n in failed} == {"api_error"}
    assert_exact(snapshot, org, config, admin=True)
    assert snapshot.project_read_failures.get("api_error", 0) == 0

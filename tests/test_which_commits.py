"""Which commits count, against a simulator as awkward as GitLab (DESIGN section 6).

Branch commits only (not GitLab's hidden refs), merge commits only when asked, every
commit a push brought, what stopped being reachable stops counting, wrong clocks and
tag pushes harmless, push events read across the instance's day ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config, parse_config
from exporter.service import ExporterService
from exporter.simulator.generate import REALISTIC_REFS, RefKnobs, generate_org
from exporter.simulator.model import Commit, Event, Org, User
from exporter.simulator.server import SimulatorServer
from exporter.simulator.truth import expected_activity
from exporter.simulator.workload import add_new_work
from exporter.snapshot import Snapshot
from tests.conftest import HOST, TOKEN, config_document, make_config
from tests.test_scan_against_simulator import numbers

BRANCHES = "/projects/:id/repository/branches"
COMMITS = "/projects/:id/repository/commits"
COMPARE = "/projects/:id/repository/compare"
REPOSITORY = (BRANCHES, COMMITS, COMPARE)


def assert_exact(snapshot: Snapshot, org: Org, config: Config) -> None:
    users = sorted(snapshot.users)
    truth = expected_activity(
        org,
        usernames=users,
        timezone=config.scan.timezone,
        periods=config.scan.periods,
        lookback_days=config.scan.lookback_days,
        now=org.now,
        extra_emails=config.extra_emails,
        count_merge_commits=config.scan.count_merge_commits,
    )
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    wrong = {
        user: (numbers(snapshot, user)[0], truth[user].commits)
        for user in users
        if numbers(snapshot, user) != (truth[user].commits, truth[user].period_commits,
                                       truth[user].projects)
    }
    assert not wrong, wrong  # user: (exported commits, true commits)


def default_reconciliation(org: Org, url: str, **scan: Any) -> Config:
    """The configuration users get: the windows read in full as often as discovery."""
    doc = config_document(org, url, **scan)
    doc["scan"].pop("reconcile_interval_seconds")
    return parse_config(doc, env={})


def repository_reads(sim: SimulatorServer, mark: int, project_id: int | None = None) -> list[Any]:
    return [
        r for r in sim.log.entries[mark:]
        if r.endpoint in REPOSITORY
        and (project_id is None or r.path.split("/")[4] == str(project_id))
    ]


def someones_commit(org: Org, *, branch_only: bool = False) -> tuple[int, Commit, User]:
    """An in-window commit of a user, in a project of theirs (personal), newest first."""
    people = {ident: u for u in org.users.values() for ident in u.commit_identities}
    start = org.now - timedelta(days=30)
    for pid in sorted(org.commits):
        project = org.projects[pid]
        if project.namespace.kind != "user" or project.forked_from_project is not None:
            continue
        default = project.default_branch
        for c in org.commits[pid]:
            owner = people.get((c.author_name, c.author_email))
            if (owner is None or owner.username != project.namespace.path
                    or not start + timedelta(hours=3) < c.authored_date < org.now):
                continue
            if branch_only and c.branch == default:
                continue
            return pid, c, owner
    raise AssertionError("no such commit")


@pytest.fixture
async def real_sim() -> AsyncIterator[SimulatorServer]:
    org = generate_org(11, users=20, projects=60, host=HOST, refs=REALISTIC_REFS)
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0) as server:
        yield server


# ------------------------------------------------------------------ hidden refs
async def test_commits_only_hidden_refs_keep_do_not_count(org: Org, sim: SimulatorServer) -> None:
    """Amended versions (keep-around), squashed-away originals (merge request head) and
    the synthetic merge commit of a merge request's merge ref are listed by all=true."""
    pid, amended, _ = someones_commit(org)
    versions = []
    for n in (1, 2):  # amended twice under CI: without the fix it counts 3
        sha = f"{n:x}".rjust(40, "a")
        versions.append(Commit(
            sha=sha, title=amended.title, message=amended.message,
            author_name=amended.author_name, author_email=amended.author_email,
            authored_date=amended.authored_date,
            committed_date=amended.committed_date - timedelta(minutes=n),
            branch=f"refs/keep-around/{sha}",
        ))
    versions.append(Commit(
        sha="b" * 40, title="Merge", message="Merge", author_name=amended.author_name,
        author_email=amended.author_email, authored_date=amended.authored_date,
        committed_date=amended.committed_date, branch="refs/merge-requests/1/merge",
        parent_ids=(amended.sha, "c" * 40),
    ))
    org.commits[pid].extend(versions)
    org.reindex()
    config = make_config(org, sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
        kept = service.scanner.store.projects[pid].commits
    assert_exact(snapshot, org, config)
    assert amended.sha in kept and not {v.sha for v in versions} & set(kept)


async def test_a_regenerated_merge_ref_never_counts(real_sim: SimulatorServer) -> None:
    """Each move of the target re-creates the merge ref's merge commit under a new SHA:
    the author's count must stay the truth scan after scan."""
    org = real_sim.org
    config = make_config(org, real_sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        assert_exact(await service.scan_once(), org, config)
        for seed in (1, 2):
            add_new_work(org, share=0.3, seed=seed, push=True)
            assert_exact(await service.scan_once(), org, config)


# ------------------------------------------------------------- full read replaces
async def test_a_commit_that_leaves_every_branch_stops_counting(
    org: Org, sim: SimulatorServer
) -> None:
    config = default_reconciliation(org, sim.url)  # discovery, so reconciliation, every scan
    pid, gone, _ = someones_commit(org, branch_only=True)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        org.remove_commits(pid, [gone.sha])  # force-pushed away
        org.now += timedelta(minutes=10)
        snapshot = await service.scan_once()
        assert gone.sha not in service.scanner.store.projects[pid].commits
    assert_exact(snapshot, org, config)


async def test_a_full_read_replaces_what_the_state_file_kept(
    org: Org, sim: SimulatorServer, tmp_path: Path
) -> None:
    config = default_reconciliation(org, sim.url, state_file=str(tmp_path / "state.db"))
    pid, gone, _ = someones_commit(org, branch_only=True)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
    org.remove_commits(pid, [gone.sha])
    org.now += timedelta(minutes=10)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    async with ExporterService(config, clock=lambda: org.now) as service:
        assert gone.sha not in service.scanner.store.projects[pid].commits  # nor in the file


async def test_reconciliation_waits_for_its_interval(org: Org, sim: SimulatorServer) -> None:
    """Between reconciliations an unchanged project costs nothing; when the interval
    has passed, every active project's window is read in full once."""
    config = make_config(org, sim.url, reconcile_interval_seconds=3600)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        first = repository_reads(sim, 0)
        org.now += timedelta(minutes=30)
        mark = len(sim.log)
        await service.scan_once()
        assert repository_reads(sim, mark) == []
        org.now += timedelta(minutes=31)
        mark = len(sim.log)
        snapshot = await service.scan_once()
    again = {r.path.split("/")[4] for r in repository_reads(sim, mark)}
    assert again and again == {r.path.split("/")[4] for r in first}
    assert_exact(snapshot, org, config)


# ------------------------------------------------------------- every pushed commit
async def test_every_commit_of_a_multi_commit_push_counts(org: Org, sim: SimulatorServer) -> None:
    """Committed locally over three days, pushed at once: one event, three commits, the
    two older ones behind anything read before."""
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        mark = len(sim.log)
        changed = add_new_work(org, share=0.1, push=True, late=2)
        snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    # each push's commits came in one compare from its old head to its new one
    reads = repository_reads(sim, mark)
    assert sorted(int(r.path.split("/")[4]) for r in reads) == sorted(changed)
    assert {r.endpoint for r in reads} == {COMPARE}


# ------------------------------------------------------------------ wrong clocks
async def test_a_commit_dated_2099_does_not_hide_later_commits() -> None:
    org = generate_org(11, users=20, projects=60, host=HOST,
                       refs=RefKnobs(future_dates=True))
    future = next(pid for pid, cs in sorted(org.commits.items())
                  if any(c.committed_date.year == 2099 for c in cs))
    template = next(c for c in org.commits[future] if c.committed_date.year == 2099)
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0) as sim:
        config = make_config(org, sim.url)
        async with ExporterService(config, clock=lambda: org.now) as service:
            await service.scan_once()
            state = service.scanner.store.projects[future]
            assert state.watermark is not None and state.watermark <= org.now
            org.now += timedelta(minutes=10)
            when = org.now - timedelta(minutes=5)
            later = Commit(sha="d" * 40, title="Later", message="Later",
                           author_name=template.author_name,
                           author_email=template.author_email,
                           authored_date=when, committed_date=when,
                           branch=org.projects[future].default_branch)
            org.add_commits(future, [later])  # seen through last_activity_at only
            snapshot = await service.scan_once()
            assert later.sha in service.scanner.store.projects[future].commits
    assert_exact(snapshot, org, config)


# ------------------------------------------------------------------ merges and tags
@pytest.mark.parametrize("count_merges", [False, True], ids=["default", "count_merges"])
async def test_merge_commits_count_only_when_asked(count_merges: bool) -> None:
    org = generate_org(11, users=20, projects=60, host=HOST, refs=RefKnobs(merge_commits=True))
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0) as sim:
        config = make_config(org, sim.url, **({"count_merge_commits": True} if count_merges else {}))
        async with ExporterService(config, clock=lambda: org.now) as service:
            snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    users = sorted(snapshot.users)
    kw: dict[str, Any] = {"usernames": users, "timezone": "UTC", "periods": {"d": "00:00-24:00"},
                          "lookback_days": 30, "now": org.now,
                          "extra_emails": config.extra_emails}
    without = expected_activity(org, **kw)
    with_merges = expected_activity(org, count_merge_commits=True, **kw)
    assert any(without[u].commits != with_merges[u].commits for u in users)  # it matters


async def test_a_tag_push_reads_nothing(org: Org, sim: SimulatorServer) -> None:
    """An annotated tag's push names the tag object, not a commit, and no branch moved."""
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    pid, _, owner = someones_commit(org)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        org.now += timedelta(minutes=10)
        org.add_push(owner.id, pid, org.now - timedelta(minutes=5), "e" * 40, ref="v2.0.0",
                     commit_count=0, ref_type="tag")
        mark = len(sim.log)
        snapshot = await service.scan_once()
    assert repository_reads(sim, mark) == []
    assert_exact(snapshot, org, config)


# ------------------------------------------------------------------ push events
async def test_pushes_early_in_the_window_count_whatever_the_instances_zone() -> None:
    """``after`` ends its day in the instance's zone: seven hours behind UTC, a window
    starting at 01:00 UTC would lose its first hours of push events if asked from the
    day before."""
    now = datetime(2026, 6, 1, 1, 0, tzinfo=UTC)
    org = generate_org(11, users=20, projects=60, host=HOST, now=now,
                       refs=RefKnobs(time_zone="America/Los_Angeles"))
    pid, _, owner = someones_commit(org)
    # a project only this push brings in, with the pusher's commit
    other = next(p for p in sorted(org.projects) if p != pid
                 and p not in org.personal_project_ids(owner.id)
                 and p not in org.contributed.get(owner.id, []))
    when = now - timedelta(days=30) + timedelta(hours=4)  # 05:00 UTC, the 1st in LA
    name, email = owner.commit_identities[0]
    org.add_commits(other, [Commit(sha="9" * 40, title="Early", message="Early",
                                   author_name=name, author_email=email,
                                   authored_date=when, committed_date=when,
                                   branch=org.projects[other].default_branch)])
    org.now = now
    org.add_push(owner.id, other, when, "9" * 40, ref=org.projects[other].default_branch)
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0) as sim:
        config = make_config(org, sim.url)
        async with ExporterService(config, clock=lambda: org.now) as service:
            snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    stats = snapshot.users[owner.username].stats
    assert stats is not None and stats.projects["active"] >= 1


# ------------------------------------------------------------------ every knob on
async def test_every_knob_on_first_incremental_reconciled_and_restarted_scans_are_exact(
    real_sim: SimulatorServer, tmp_path: Path
) -> None:
    org = real_sim.org
    config = make_config(org, real_sim.url, discovery_interval_seconds=3600,
                         reconcile_interval_seconds=86400,
                         state_file=str(tmp_path / "state.db"))
    async with ExporterService(config, clock=lambda: org.now) as service:
        assert_exact(await service.scan_once(), org, config)  # first scan
        add_new_work(org, share=0.1, push=True, late=2, seed=1)
        assert_exact(await service.scan_once(), org, config)  # pushes: compare
        add_new_work(org, share=0.1, push=False, seed=2)
        org.now += timedelta(hours=1)  # discovery sees last_activity_at
        assert_exact(await service.scan_once(), org, config)  # listings: moved branches
        pid, gone, _ = someones_commit(org, branch_only=True)
        org.remove_commits(pid, [gone.sha])
        org.now += timedelta(days=1)
        assert_exact(await service.scan_once(), org, config)  # reconciliation
    add_new_work(org, share=0.1, push=True, late=1, seed=3)
    async with ExporterService(config, clock=lambda: org.now) as service:
        assert service.snapshot.ready
        assert_exact(await service.scan_once(), org, config)  # restarted from the state file


async def test_pushes_beyond_gitlabs_events_cap_still_bring_their_projects(
    org: Org, sim: SimulatorServer
) -> None:
    """GitLab stops counting events at 10,001: a busy pusher's oldest pushes in the window
    are on no page of the list; they are asked for again with ``before``."""
    pid, _, owner = someones_commit(org)
    other = next(p for p in sorted(org.projects) if p != pid
                 and p not in org.personal_project_ids(owner.id)
                 and p not in org.contributed.get(owner.id, []))
    start = org.now - timedelta(days=30)
    early = start + timedelta(hours=5)
    name, email = owner.commit_identities[0]
    org.add_commits(other, [Commit(sha="8" * 40, title="Early", message="Early",
                                   author_name=name, author_email=email,
                                   authored_date=early, committed_date=early,
                                   branch=org.projects[other].default_branch)])
    org.add_push(owner.id, other, early, "8" * 40, ref=org.projects[other].default_branch)
    busy = start + timedelta(days=1)
    step = (org.now - timedelta(days=1) - busy) / 10_200
    first_id = org.next_event_id()
    org.events[owner.id].extend(
        Event(first_id + n, owner.id, pid, busy + n * step, push_data={"commit_count": 0})
        for n in range(10_200)
    )
    org.reindex(commits=False)
    config = make_config(org, sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    asked = [r.query for r in sim.log.entries
             if r.endpoint == "/users/:id/events" and r.path.endswith(f"/{owner.id}/events")]
    assert any("before" in q for q in asked)


async def test_a_push_from_a_head_gitlab_no_longer_has_reads_the_window(
    org: Org, sim: SimulatorServer
) -> None:
    """A force-push's old head can be garbage-collected: its compare answers 404, and
    the project is read in full instead of losing what it kept."""
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        first_new = org.next_event_id()
        changed = add_new_work(org, share=0.05, push=True, seed=4)
        for event in (e for evs in org.events.values() for e in evs if e.id >= first_new):
            assert event.push_data is not None
            event.push_data["commit_from"] = "f" * 40  # gone from the repository
        mark = len(sim.log)
        snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    full = {r.path.split("/")[4] for r in repository_reads(sim, mark) if r.endpoint == BRANCHES}
    assert full == {str(pid) for pid in changed}


async def test_a_deleted_branch_takes_its_own_commits_with_it(
    org: Org, sim: SimulatorServer
) -> None:
    """Deleting an unmerged branch is a push event without a new head: the branch list
    shows it gone, and the project is read in full (no reconciliation needed)."""
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    pid, gone, owner = someones_commit(org, branch_only=True)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        own = [c.sha for c in org.commits[pid] if c.branch == gone.branch]
        org.remove_commits(pid, own)
        org.now += timedelta(minutes=10)
        org.add_event(Event(org.next_event_id(), owner.id, pid, org.now - timedelta(minutes=5),
                            push_data={"commit_count": 0, "commit_from": gone.sha,
                                       "commit_to": None, "ref": gone.branch,
                                       "ref_type": "branch", "action": "removed"}))
        snapshot = await service.scan_once()
        assert not set(own) & set(service.scanner.store.projects[pid].commits)
    assert_exact(snapshot, org, config)

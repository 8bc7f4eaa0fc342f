"""Incremental scans against the simulator: few requests after the first scan, exact numbers."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from exporter.attribution import Window
from exporter.commit_store import (
    CommitStore,
    IncrementalCommits,
    ProjectHint,
    ProjectState,
    plan_fetch,
)
from exporter.config import Config
from exporter.gitlab.api import Branch, CommitRecord, GitLabApi, Push
from exporter.service import ExporterService
from exporter.simulator.generate import generate_org
from exporter.simulator.model import Commit, Org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.workload import add_new_work
from exporter.snapshot import Snapshot
from tests.conftest import HOST, TOKEN, make_config
from tests.test_scan_against_simulator import expected_numbers, numbers, truth_for

COMMITS = "/projects/:id/repository/commits"
BRANCHES = "/projects/:id/repository/branches"
COMPARE = "/projects/:id/repository/compare"
REPOSITORY = (COMMITS, BRANCHES, COMPARE)


def commit_requests(sim: SimulatorServer, since_index: int = 0) -> list[dict[str, Any]]:
    """Query of every first-page repository request (commits, branches, compare) made
    after log entry ``since_index``, with its endpoint."""
    return [
        {"path": r.path, "endpoint": r.endpoint, **r.query}
        for r in sim.log.entries[since_index:]
        if r.endpoint in REPOSITORY and "page" not in r.query
    ]


def assert_exact(snapshot: Snapshot, org: Org, config: Config) -> None:
    users = sorted(snapshot.users)
    truth = truth_for(org, config, users)
    assert snapshot.last_scan is not None and snapshot.last_scan.users_failed == 0
    for user in users:
        assert numbers(snapshot, user) == expected_numbers(truth, user), user


async def test_second_scan_fetches_only_changed_projects_and_stays_exact(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url)  # discovery every scan: listings show the change
    service = ExporterService(config, clock=lambda: org.now)
    async with service:
        await service.scan_once()
        first_total = len(sim.log)
        first_commits = commit_requests(sim)
        changed = add_new_work(org)
        snapshot = await service.scan_once()
    second = commit_requests(sim, first_total)
    assert_exact(snapshot, org, config)
    fetched = {int(q["path"].split("/")[4]) for q in second}
    assert changed <= fetched  # every project with new work was fetched...
    assert len(fetched) <= len(changed) + 2  # ...and hardly anything else
    assert len(second) * 10 <= len(first_commits)
    # ...and only what the moved branches gained since their heads as last read, not
    # the whole window
    assert {q["endpoint"] for q in second} == {BRANCHES, COMPARE}


async def test_commits_aging_out_of_the_window_are_dropped(org: Org, sim: SimulatorServer) -> None:
    config = make_config(org, sim.url, reconcile_interval_seconds=40 * 86400)
    service = ExporterService(config, clock=lambda: org.now)
    async with service:
        await service.scan_once()
        store = service.scanner.store
        kept_before = store.commit_count
        first_total = len(sim.log)
        org.now += timedelta(days=12)
        snapshot = await service.scan_once()
    window_start = org.now - timedelta(days=config.scan.lookback_days)
    assert 0 < store.commit_count < kept_before
    assert all(
        c[3] >= window_start for p in store.projects.values() for c in p.commits.values()
    )
    assert_exact(snapshot, org, config)
    # nothing new happened: the aged-out commits were dropped without refetching
    assert len(commit_requests(sim, first_total)) * 5 <= len(commit_requests(sim)[:first_total])


async def test_restarting_the_store_fetches_everything_again(org: Org, sim: SimulatorServer) -> None:
    """Control for the tests above: without kept state every project is fetched."""
    config = make_config(org, sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
    first = len(commit_requests(sim))
    total = len(sim.log)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
    assert len(commit_requests(sim, total)) == first


# ------------------------------------------------------------------ pure planning

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
START = NOW - timedelta(days=30)
HOUR = timedelta(hours=1)


def state(**kw: Any) -> ProjectState:
    base: dict[str, Any] = {
        "fetched_at": NOW - 5 * HOUR,
        "activity": NOW - 10 * HOUR,
        "watermark": NOW - 10 * HOUR,
    }
    base.update(kw)
    return ProjectState(**base)


def test_plan_new_project_fetches_the_whole_window() -> None:
    assert plan_fetch(None, ProjectHint(activity=NOW), window_start=START, overlap=HOUR) == START


def test_plan_inactive_project_costs_nothing() -> None:
    old = ProjectHint(activity=START - HOUR, listed_at=NOW)
    assert plan_fetch(None, old, window_start=START, overlap=HOUR) is None


def test_plan_unchanged_project_costs_nothing() -> None:
    hint = ProjectHint(activity=NOW - 10 * HOUR, listed_at=NOW)
    assert plan_fetch(state(), hint, window_start=START, overlap=HOUR) is None


def test_plan_changed_activity_fetches_from_watermark_minus_overlap() -> None:
    hint = ProjectHint(activity=NOW - HOUR, listed_at=NOW)
    assert plan_fetch(state(), hint, window_start=START, overlap=HOUR) == NOW - 11 * HOUR


def test_plan_new_push_fetches_even_without_a_listing() -> None:
    known = state(activity=None, pushed=NOW - 7 * HOUR)
    hint = ProjectHint(pushed_at=NOW - HOUR)
    assert plan_fetch(known, hint, window_start=START, overlap=HOUR) is not None
    seen = ProjectHint(pushed_at=NOW - 7 * HOUR)  # the push the last fetch already saw
    assert plan_fetch(known, seen, window_start=START, overlap=HOUR) is None


def test_plan_activity_within_gitlabs_update_lag_is_rechecked_after_a_listing_refresh() -> None:
    # GitLab moves last_activity_at at most hourly: activity just before the last fetch
    # may hide later pushes, so a fresh listing makes the project fetched again
    recent = state(activity=NOW - 5.5 * HOUR)
    hint = ProjectHint(activity=NOW - 5.5 * HOUR, listed_at=NOW)
    assert plan_fetch(recent, hint, window_start=START, overlap=HOUR) is not None
    cached = ProjectHint(activity=NOW - 5.5 * HOUR, listed_at=NOW - 6 * HOUR)
    assert plan_fetch(recent, cached, window_start=START, overlap=HOUR) is None


def test_store_merges_by_sha_and_tracks_the_committer_watermark() -> None:
    store = CommitStore()
    authored = NOW - 3 * HOUR

    def rec(sha: str, committed: datetime, when: datetime = authored) -> CommitRecord:
        return CommitRecord(sha, " Alice ", "Alice@Example.com", when, committed)

    store.merge(1, [rec("a", NOW - 2 * HOUR), rec("old", NOW - 2 * HOUR, START - HOUR)],
                fetched_at=NOW, activity=None, window_start=START)
    store.merge(1, [rec("a", NOW - 2 * HOUR), rec("b", NOW - HOUR)],
                fetched_at=NOW, activity=None, window_start=START)
    project = store.projects[1]
    assert sorted(project.commits) == ["a", "b"]  # merged by SHA; out-of-window not kept
    assert project.watermark == NOW - HOUR  # the committer date, not the authored one
    _, author_name, author_email, _ = project.commits["a"]
    assert author_email == "alice@example.com"
    assert author_name == "alice"
    assert store.prune(1, authored + timedelta(seconds=1)) == 2


def test_kept_commits_are_not_tracked_by_the_garbage_collector() -> None:
    """Hundreds of thousands of kept commits must not lengthen the collector's full
    passes (each one pauses the event loop): after a collection, none is tracked."""
    store = CommitStore()
    records = [
        CommitRecord(f"{n:040x}", f"Dev {n % 7}", f"dev{n % 7}@example.com",
                     NOW - HOUR - n * timedelta(seconds=30), NOW - HOUR)
        for n in range(1000)
    ]
    store.merge(1, records, fetched_at=NOW, activity=None, window_start=START)
    gc.collect()
    kept = list(store.projects[1].commits.values())
    assert len(kept) == 1000
    assert not any(gc.is_tracked(c) for c in kept)


async def test_a_late_push_of_old_commits_is_found(org: Org, sim: SimulatorServer) -> None:
    """Commits committed days ago and pushed now to a new branch: the branch is read
    over the whole window, the other branches not at all."""
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    service = ExporterService(config, clock=lambda: org.now)
    async with service:
        await service.scan_once()
        people = {ident: u for u in org.users.values() for ident in u.commit_identities}
        pid, template = next(
            (pid, c)
            for pid, commits in sorted(org.commits.items())
            for c in commits
            if (c.author_name, c.author_email) in people
        )
        author = people[(template.author_name, template.author_email)]
        org.now += timedelta(minutes=10)
        old = org.now - timedelta(days=3)
        late = Commit(sha="f" * 40, title="Old work", message="Old work",
                      author_name=template.author_name, author_email=template.author_email,
                      authored_date=old, committed_date=old, branch="old-branch")
        org.add_commits(pid, [late])
        org.add_push(author.id, pid, org.now - timedelta(minutes=1), late.sha, ref="old-branch")
        mark = len(sim.log)
        snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    assert late.sha in service.scanner.store.projects[pid].commits
    reads = [q for q in commit_requests(sim, mark) if q["path"].split("/")[4] == str(pid)]
    assert [(q["endpoint"], q.get("ref_name")) for q in reads] == [
        (BRANCHES, None), (COMMITS, "old-branch")]


async def test_project_decisions_run_on_a_bounded_pool_of_tasks() -> None:
    """However many projects there are, a scan holds one task per user plus a fixed pool
    of project workers (not one suspended task per project)."""
    many = generate_org(4, users=6, projects=200, host=HOST)
    async with SimulatorServer(many, token=TOKEN, host=HOST, port=0) as server:
        config = make_config(many, server.url)
        workers = 2 * config.gitlab.max_concurrency
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(asyncio.all_tasks()))
                await asyncio.sleep(0)

        async with ExporterService(config, clock=lambda: many.now) as service:
            sampler = asyncio.create_task(sample())
            before = len(asyncio.all_tasks())
            snapshot = await service.scan_once()
            sampler.cancel()
        assert_exact(snapshot, many, config)
    projects = len({int(r.path.split("/")[4]) for r in server.log.entries
                    if r.endpoint == COMMITS})
    assert projects > 100  # the organisation has far more projects than the pool
    users = len(snapshot.users)
    # user scans, their three lists each, the pool, the shared lists and the prefetcher
    assert peak - before <= users * 4 + workers + 4 < projects


def test_hinted_pushes_are_not_tracked_by_the_garbage_collector() -> None:
    """A large scan holds tens of thousands of pushes in its hints until every project
    is decided: after a collection none of them is tracked, so the collector's full
    passes do not walk them."""
    pushes = [
        Push(project_id=1, created_at=NOW - n * HOUR, head=f"{n:040x}" if n % 3 else None)
        for n in range(1, 100)
    ]
    removed = Push(project_id=1, created_at=NOW, head=None, removed=True)
    hint = ProjectHint.of_pushes([*pushes, removed])
    gc.collect()  # untracks the pairs...
    gc.collect()  # ...and then the tuple holding them
    assert hint.pushes and not any(gc.is_tracked(p) for p in hint.pushes)
    assert not gc.is_tracked(hint.pushes)
    assert hint.pushed_at == NOW  # a deletion is still the latest push...
    assert len(hint.pushes) == len(pushes) + 1
    assert hint.pushes[-1][3] is None  # ...but brings no head to compare with


class GatedCommits:
    """An API stand-in whose commit reads wait until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[int] = []
        self.reading: asyncio.Queue[int] = asyncio.Queue()

    async def branches(self, project_id: int) -> list[Branch]:
        return [Branch("main", f"{project_id:040x}", NOW - HOUR)]

    async def project_commits(self, project_id: int, since: datetime) -> list[CommitRecord]:
        self.calls.append(project_id)
        self.reading.put_nowait(project_id)
        await self.gate.wait()
        authored = NOW - HOUR
        return [CommitRecord(f"{project_id:040x}", "Dev", "dev@example.com", authored, authored)]


def incremental(api: GatedCommits, users: tuple[str, ...]) -> IncrementalCommits:
    return IncrementalCommits(
        cast(GitLabApi, api), CommitStore(), window=Window(start=START, end=NOW), now=NOW,
        overlap=HOUR, users=users, workers=2,
    )


async def test_a_cancelled_user_leaves_the_shared_projects_to_the_others() -> None:
    api = GatedCommits()
    cache = incremental(api, ("alice", "bob"))
    alice = asyncio.ensure_future(cache.get_many([1, 2]))
    bob = asyncio.ensure_future(cache.get_many([2, 3]))
    cache.arrive("alice", {1: ProjectHint(), 2: ProjectHint()})
    cache.arrive("bob", {2: ProjectHint(), 3: ProjectHint()})
    for _ in range(2):  # both workers are reading
        await asyncio.wait_for(api.reading.get(), 5)
    alice.cancel()
    await asyncio.sleep(0)
    api.gate.set()
    commits = await asyncio.wait_for(bob, 5)
    cache.close()
    assert alice.cancelled()
    assert [[c[0] for c in project] for project in commits] == [[f"{2:040x}"], [f"{3:040x}"]]
    assert sorted(api.calls) == [1, 2, 3]  # each project read once, in spite of the cancel


async def test_a_project_no_hint_named_is_decided_when_asked_for() -> None:
    api = GatedCommits()
    api.gate.set()
    cache = incremental(api, ("alice",))
    cache.arrive("alice", {1: ProjectHint()})
    first = await asyncio.wait_for(cache.get_many([1]), 5)
    late = await asyncio.wait_for(cache.get_many([1, 7]), 5)
    cache.close()
    assert [len(p) for p in first] == [1]
    assert [p[0][0] for p in late] == [f"{1:040x}", f"{7:040x}"]
    assert api.calls == [1, 7]  # project 1 was not read twice

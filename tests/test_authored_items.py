"""Merge requests and issues from one shared list per scan instead of one list per user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from exporter.attribution import Window
from exporter.authored_items import AuthoredItems, AuthoredItemStore, updated_after
from exporter.config import Config, parse_config
from exporter.gitlab.api import AuthoredItem, GitLabApi, ItemRef
from exporter.gitlab.client import GitLabClient
from exporter.gitlab.errors import ApiError, PageBudgetExceeded
from exporter.service import ExporterService
from exporter.simulator.faults import FaultRule
from exporter.simulator.model import Issue, MergeRequest, Org
from exporter.simulator.server import SimulatorServer
from exporter.snapshot import Snapshot
from exporter.state import load_state
from tests.conftest import TOKEN, config_document, make_config
from tests.test_incremental import assert_exact
from tests.test_scan_against_simulator import truth_for

KINDS = {"/merge_requests", "/issues"}
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
WINDOW = Window(start=NOW - timedelta(days=30), end=NOW)


def assert_items_exact(snapshot: Snapshot, org: Org, config: Config) -> None:
    """Merge request and issue numbers of every user equal the simulator's truth."""
    assert_exact(snapshot, org, config)
    truth = truth_for(org, config, sorted(snapshot.users))
    assert any(sum(t.merge_requests.values()) for t in truth.values())
    for user, state in snapshot.users.items():
        assert state.stats is not None, user
        assert dict(state.stats.merge_requests) == truth[user].merge_requests, user
        assert dict(state.stats.issues) == truth[user].issues, user


def item_requests(sim: SimulatorServer, mark: int = 0) -> list[dict[str, Any]]:
    return [
        {"endpoint": r.endpoint, "status": r.status, **r.query}
        for r in sim.log.entries[mark:]
        if r.endpoint in KINDS
    ]


def change_items(org: Org) -> None:
    """Ten minutes of work: an open merge request merged, an open issue closed, and a new
    merge request and issue by someone with none yet."""
    org.now += timedelta(minutes=10)
    when = org.now - timedelta(minutes=5)
    window_start = org.now - timedelta(days=30)
    mr = next(m for m in org.merge_requests if m.state == "opened" and m.created_at >= window_start)
    mr.state, mr.merged_at = "merged", when
    issue = next(i for i in org.issues if i.state == "opened" and i.created_at >= window_start)
    issue.state, issue.closed_at = "closed", when
    newcomer = next(
        u for u in sorted(org.users.values(), key=lambda u: u.id)
        if not org.merge_requests_by(u.username) and not org.issues_by(u.username)
    )
    project = min(org.projects)
    org.merge_requests.append(MergeRequest(
        id=max(m.id for m in org.merge_requests) + 1, iid=9001, project_id=project,
        state="opened", created_at=when, author=newcomer.username,
    ))
    org.issues.append(Issue(
        id=max(i.id for i in org.issues) + 1, iid=9001, project_id=project,
        state="opened", created_at=when, author=newcomer.username,
    ))
    org.reindex(commits=False)


async def test_one_shared_list_per_kind_then_only_updated_items_and_exact(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    async with ExporterService(config, clock=lambda: org.now) as service:
        first = await service.scan_once()
        assert_items_exact(first, org, config)
        requests = item_requests(sim)
        # one list per kind, every author, instead of one per user (20 users here)
        assert sorted(r["endpoint"] for r in requests) == ["/issues", "/merge_requests"]
        assert all("author_username" not in r and "updated_after" not in r for r in requests)
        assert all(r["scope"] == "all" for r in requests)

        change_items(org)
        mark = len(sim.log)
        second = await service.scan_once()
    assert_items_exact(second, org, config)  # merged, closed and new items all seen
    requests = item_requests(sim, mark)
    assert sorted(r["endpoint"] for r in requests) == ["/issues", "/merge_requests"]
    for r in requests:
        assert "author_username" not in r
        since = datetime.fromisoformat(r["updated_after"])
        # from the last sync less the overlap (an hour by default), not the whole window
        assert since == org.now - timedelta(minutes=10) - timedelta(hours=1)


async def test_a_failing_shared_list_falls_back_to_each_users_own(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url)
    # the first merge request list of the scan is the shared one
    sim.faults.add(FaultRule(r"/merge_requests$", "404", times=1))
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
    assert_items_exact(snapshot, org, config)
    mrs = [r for r in item_requests(sim) if r["endpoint"] == "/merge_requests"]
    assert "author_username" not in mrs[0] and mrs[0]["status"] == 404
    own = {r["author_username"] for r in mrs[1:]}
    assert own == {u.username for u in org.users.values()}


async def test_a_failing_shared_list_is_set_aside_until_its_next_full_read(
    org: Org, sim: SimulatorServer
) -> None:
    config = make_config(org, sim.url, discovery_interval_seconds=3600)
    # the shared list (no author_username) always fails; each user's own works
    sim.faults.add(
        FaultRule(r"/merge_requests$", "502_html", query_pattern=r"^(?!.*author_username)")
    )

    def shared(mark: int) -> list[dict[str, Any]]:
        return [
            r for r in item_requests(sim, mark)
            if r["endpoint"] == "/merge_requests" and "author_username" not in r
        ]

    async with ExporterService(config, clock=lambda: org.now) as service:
        first = await service.scan_once()
        assert_items_exact(first, org, config)
        assert len(shared(0)) == 1 + config.gitlab.max_retries  # tried, with its retries
        change_items(org)
        mark = len(sim.log)
        second = await service.scan_once()
        assert shared(mark) == []  # set aside: the users' own lists serve
        assert_items_exact(second, org, config)
        # a full read is due again after the full interval: the shared list is tried again
        org.now += timedelta(seconds=3600)
        mark = len(sim.log)
        await service.scan_once()
        assert len(shared(mark)) == 1 + config.gitlab.max_retries


async def test_few_users_read_their_own_lists(org: Org, sim: SimulatorServer) -> None:
    document_users = sorted(org.users.values(), key=lambda u: u.id)[:3]
    document = config_document(org, sim.url)
    document["teams"] = []
    document["users"] = [{"username": u.username} for u in document_users]
    config = parse_config(document, env={})
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
    requests = item_requests(sim)
    assert len(requests) == 6
    assert {r["author_username"] for r in requests} == {u.username for u in document_users}


async def test_state_file_keeps_items_and_a_restart_reads_only_updates(
    org: Org, sim: SimulatorServer, tmp_path: Any
) -> None:
    config = make_config(
        org, sim.url, state_file=str(tmp_path / "state.db"), discovery_interval_seconds=3600
    )
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        kept = service.scanner.merge_requests
    assert config.state_file is not None
    saved = load_state(config.state_file, config)
    assert saved is not None
    assert saved.items["merge_requests"] == kept
    assert kept.item_count > 0

    change_items(org)
    mark = len(sim.log)
    async with ExporterService(config, clock=lambda: org.now) as restarted:
        snapshot = await restarted.scan_once()
    assert_items_exact(snapshot, org, config)
    assert all("updated_after" in r for r in item_requests(sim, mark))


async def test_page_budget_is_checked_on_the_first_page(org: Org, sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = GitLabClient(session, base_url=sim.url, token=TOKEN, requests_per_second=1000)
        api = GitLabApi(client)
        start = org.now - timedelta(days=30)
        mark = len(sim.log)
        found = await api.authored_feed("/merge_requests", created_after=start,
                                        updated_after=None, max_pages=1)
        assert len(sim.log) == mark + 1
        expected = {m.id for m in org.merge_requests if m.created_at >= start}
        assert {f.item.id for f in found} == expected
        assert {f.author for f in found} == {
            m.author for m in org.merge_requests if m.created_at >= start}
        with pytest.raises(PageBudgetExceeded) as too_long:
            await api.authored_feed("/merge_requests", created_after=start,
                                    updated_after=None, max_pages=0)
        assert too_long.value.total_pages == 1
        # commit lists never carry totals: over any budget
        pid = next(pid for pid, commits in org.commits.items() if commits)
        with pytest.raises(PageBudgetExceeded) as unknown:
            _ = [c async for c in client.paginate(
                f"/projects/{pid}/repository/commits", {"all": "true"},
                endpoint="/projects/:id/repository/commits", max_pages=50)]
        assert unknown.value.total_pages is None


# --------------------------------------------------------------- the logic alone


def ref(item_id: int, *, state: str = "opened", days_ago: float = 1) -> ItemRef:
    return ItemRef(id=item_id, project_id=1, state=state,
                   created_at=NOW - timedelta(days=days_ago))


class Calls:
    def __init__(self, shared: list[AuthoredItem] | Exception) -> None:
        self.shared_result = shared
        self.shared_calls: list[dict[str, Any]] = []
        self.own_calls: list[str] = []

    async def shared(self, **kwargs: Any) -> list[AuthoredItem]:
        self.shared_calls.append(kwargs)
        if isinstance(self.shared_result, Exception):
            raise self.shared_result
        return self.shared_result

    async def own(self, username: str, created_after: datetime) -> list[ItemRef]:
        self.own_calls.append(username)
        return [ref(100 + len(self.own_calls))]


def view(store: AuthoredItemStore, calls: Calls, users: list[str], now: datetime = NOW
         ) -> AuthoredItems:
    return AuthoredItems(
        "merge_requests", store, shared=calls.shared, own=calls.own,
        window=Window(start=now - timedelta(days=30), end=now), now=now,
        full_interval=timedelta(hours=1), overlap=timedelta(minutes=5), users=users,
    )


USERS = ["ann", "Bob", "cy", "dee"]


async def test_shared_list_is_read_once_and_split_by_author_case_insensitively() -> None:
    calls = Calls([AuthoredItem("bob", ref(1)), AuthoredItem("ANN", ref(2)),
                   AuthoredItem("stranger", ref(3))])
    store = AuthoredItemStore()
    items = view(store, calls, USERS)
    got = {u: await items.of(u) for u in USERS}
    assert got == {"ann": [ref(2)], "Bob": [ref(1)], "cy": [], "dee": []}
    assert len(calls.shared_calls) == 1 and calls.own_calls == []
    assert calls.shared_calls[0]["updated_after"] is None  # a full list the first time
    assert calls.shared_calls[0]["max_pages"] == 2  # half the users it replaces
    assert store.full_sync_at == NOW


async def test_a_too_long_shared_list_is_not_tried_again_before_the_full_interval() -> None:
    store = AuthoredItemStore()
    calls = Calls(PageBudgetExceeded(40, 2))
    items = view(store, calls, USERS)
    assert [await items.of(u) for u in USERS] == [[ref(101)], [ref(102)], [ref(103)], [ref(104)]]
    assert calls.own_calls == USERS and store.declined_at == NOW

    later = Calls([])
    items = view(store, later, USERS, now=NOW + timedelta(minutes=30))
    for user in USERS:
        await items.of(user)
    assert later.shared_calls == [] and later.own_calls == USERS

    again = Calls([])
    items = view(store, again, USERS, now=NOW + timedelta(hours=1))
    for user in USERS:
        await items.of(user)
    assert len(again.shared_calls) == 1 and again.own_calls == []


@pytest.mark.parametrize("failure", [ApiError("boom", endpoint="/merge_requests"),
                                     KeyError("a bug")])
async def test_a_failing_shared_list_means_own_lists(failure: Exception) -> None:
    calls = Calls(failure)
    items = view(AuthoredItemStore(), calls, USERS)
    for user in USERS:
        await items.of(user)
    assert len(calls.shared_calls) == 1 and calls.own_calls == USERS


def test_incremental_lists_start_at_the_oldest_sync_less_the_overlap() -> None:
    store = AuthoredItemStore(full_sync_at=NOW - timedelta(minutes=20))
    store.replace("ann", [], NOW - timedelta(minutes=10))
    store.replace("bob", [], NOW - timedelta(minutes=20))
    common: dict[str, Any] = {"now": NOW, "full_interval": timedelta(hours=1),
                              "overlap": timedelta(minutes=5)}
    assert updated_after(store, ["ann", "Bob"], **common) == NOW - timedelta(minutes=25)
    assert updated_after(store, ["ann", "cy"], **common) is None  # cy never synced
    common["full_interval"] = timedelta(minutes=20)
    assert updated_after(store, ["ann", "bob"], **common) is None  # a full list is due


def test_merge_replaces_changed_items_and_prune_drops_aged_out_ones() -> None:
    store = AuthoredItemStore()
    store.replace("ann", [ref(1), ref(2, days_ago=29)], NOW)
    store.merge("ANN", [ref(1, state="merged"), ref(3)], NOW + timedelta(minutes=5))
    assert sorted(store.items("ann"), key=lambda i: i.id) == [
        ref(1, state="merged"), ref(2, days_ago=29), ref(3)]
    assert store.users["ann"].synced_at == NOW + timedelta(minutes=5)
    store.prune(NOW - timedelta(days=28))
    assert sorted(i.id for i in store.items("ann")) == [1, 3]
    store.retain(["bob"])
    assert store.items("ann") == []

"""The simulator's repositories as GitLab's: branches, hidden refs, merges, compare, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.simulator.generate import REALISTIC_REFS, RefKnobs, generate_org
from exporter.simulator.model import Commit, Event, Namespace, Org, Project, User
from exporter.simulator.server import create_app
from exporter.simulator.truth import expected_activity
from tests.test_simulator import ClientFactory, commit

TOKEN = "sim-token"
NOW = datetime(2026, 5, 20, 12, tzinfo=UTC)
INSIDE = NOW - timedelta(days=5)


def repo_org() -> Org:
    """Project 10: main a1 <- a2 <- m (a merge), branch feat b1 off a1, and hidden refs."""
    ann = User(7, "ann", "Ann Lee", public_email="ann@acme.example")
    ns = Namespace(id=1007, name="Ann Lee", path="ann", kind="user", full_path="ann")
    a1 = commit("a1", "Ann Lee", "ann@acme.example", INSIDE)
    b1 = commit("b1", "Ann Lee", "ann@acme.example", INSIDE + timedelta(hours=1), branch="feat")
    a2 = commit("a2", "Ann Lee", "ann@acme.example", INSIDE + timedelta(hours=2))
    merge = commit("m", "Ann Lee", "ann@acme.example", INSIDE + timedelta(hours=3))
    merge.parent_ids = (a2.sha, b1.sha)
    kept = commit("k1", "Ann Lee", "ann@acme.example", INSIDE + timedelta(hours=1),
                  branch="refs/keep-around/k1")
    mr_head = commit("h1", "Ann Lee", "ann@acme.example", INSIDE, branch="refs/merge-requests/1/head")
    mr_merge = commit("g1", "Ann Lee", "ann@acme.example", INSIDE + timedelta(hours=4),
                      branch="refs/merge-requests/1/merge")
    mr_merge.parent_ids = (merge.sha, mr_head.sha)
    return Org(
        now=NOW,
        users={7: ann},
        projects={10: Project(10, "Notes", "notes", ns, web_url="https://h/ann/notes")},
        commits={10: [a1, b1, a2, merge, kept, mr_head, mr_merge]},
        events={7: []},
    )


async def get(client: Any, path: str, **params: str) -> Any:
    r = await client.get(f"/api/v4{path}", params=params)
    assert r.status == 200, await r.text()
    return await r.json()


def short(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"][:2] for row in rows]


async def test_branches_list_heads_and_ref_name_reads_a_branch(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(create_app(repo_org(), token=TOKEN),
                                  headers={"PRIVATE-TOKEN": TOKEN})
    branches = await get(client, "/projects/10/repository/branches")
    assert [(b["name"], b["commit"]["id"][:2], b["default"]) for b in branches] == [
        ("feat", "b1", False), ("main", "m0", True)]
    assert "committed_date" in branches[0]["commit"]
    # a branch's log holds the default branch's history it started from
    assert short(await get(client, "/projects/10/repository/commits", ref_name="feat")) == [
        "b1", "a1"]
    assert short(await get(client, "/projects/10/repository/commits", ref_name="main")) == [
        "m0", "a2", "a1"]
    since = (INSIDE + timedelta(minutes=30)).isoformat()
    assert short(await get(client, "/projects/10/repository/commits", ref_name="main",
                           since=since)) == ["m0", "a2"]
    r = await client.get("/api/v4/projects/10/repository/commits", params={"ref_name": "nope"})
    assert r.status == 404


async def test_all_true_lists_hidden_refs_too(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app(repo_org(), token=TOKEN),
                                  headers={"PRIVATE-TOKEN": TOKEN})
    every = set(short(await get(client, "/projects/10/repository/commits", all="true")))
    assert every == {"a1", "b1", "a2", "m0", "k1", "h1", "g1"}


async def test_compare_lists_exactly_what_head_adds(aiohttp_client: ClientFactory) -> None:
    org = repo_org()
    client = await aiohttp_client(create_app(org, token=TOKEN), headers={"PRIVATE-TOKEN": TOKEN})
    a1 = "a1".ljust(40, "0")
    body = await get(client, "/projects/10/repository/compare", **{"from": a1, "to": "main"})
    assert short(body["commits"]) == ["a2", "m0"]  # oldest first
    body = await get(client, "/projects/10/repository/compare", **{"from": "main", "to": "feat"})
    assert short(body["commits"]) == ["b1"]
    r = await client.get("/api/v4/projects/10/repository/compare",
                         params={"from": "f" * 40, "to": "main"})
    assert r.status == 404


def test_a_moving_target_regenerates_the_merge_ref_commit() -> None:
    org = repo_org()
    before = {c.sha for c in org.commits[10] if c.branch.endswith("/merge")}
    late = commit("c1", "Bob", "bob@x.example", NOW - timedelta(hours=1))
    org.add_commits(10, [late])
    after = {c.sha for c in org.commits[10] if c.branch.endswith("/merge")}
    assert len(after) == 1 and after != before
    # the new commit sits on top of the branch's history
    assert org.branches(10)["main"].sha == late.sha


def test_truth_counts_branch_commits_without_merges_unless_asked() -> None:
    org = repo_org()

    def commits(**kw: Any) -> int:
        return expected_activity(org, usernames=["ann"], timezone="UTC", periods={"day": "00:00-24:00"},
                                 lookback_days=30, now=NOW, **kw)["ann"].commits

    assert commits() == 3  # a1, b1, a2: not the merge, nothing behind a hidden ref
    assert commits(count_merge_commits=True) == 4
    org.remove_commits(10, ["b1".ljust(40, "0")])  # feat force-pushed away
    assert commits() == 2


async def test_events_after_ends_the_day_in_the_instance_zone(
    aiohttp_client: ClientFactory,
) -> None:
    org = repo_org()
    # 02:00 UTC on the 10th is still the 9th in Los Angeles
    org.events[7] = [Event(1, 7, 10, datetime(2026, 5, 10, 2, tzinfo=UTC),
                           push_data={"commit_count": 1})]
    client = await aiohttp_client(create_app(org, token=TOKEN), headers={"PRIVATE-TOKEN": TOKEN})
    assert len(await get(client, "/users/7/events", action="pushed", after="2026-05-09")) == 1
    org.time_zone = "America/Los_Angeles"
    assert await get(client, "/users/7/events", action="pushed", after="2026-05-09") == []
    assert len(await get(client, "/users/7/events", action="pushed", after="2026-05-08")) == 1


async def test_events_stop_at_gitlabs_count_cap(aiohttp_client: ClientFactory) -> None:
    org = repo_org()
    org.events_cap = 250
    org.events[7] = [Event(i, 7, 10, INSIDE + timedelta(seconds=i), push_data={"commit_count": 1})
                     for i in range(1, 401)]
    org.reindex()
    client = await aiohttp_client(create_app(org, token=TOKEN), headers={"PRIVATE-TOKEN": TOKEN})
    # the page holding the 250th is full, and the last one
    r = await client.get("/api/v4/users/7/events", params={"per_page": "100", "page": "3"})
    assert len(await r.json()) == 100
    assert r.headers["X-Next-Page"] == "" and 'rel="next"' not in r.headers["Link"]


def test_realistic_refs_add_every_kind_and_leave_the_rest_alone() -> None:
    plain = generate_org(3, users=20, projects=60)
    real = generate_org(3, users=20, projects=60, now=plain.now, refs=REALISTIC_REFS)
    assert real.time_zone == "America/Los_Angeles"
    commits = [c for cs in real.commits.values() for c in cs]
    assert any(c.branch.startswith("refs/keep-around/") for c in commits)
    assert any(c.branch.endswith("/head") for c in commits)
    assert any(c.branch.endswith("/merge") and c.is_merge for c in commits)
    assert any(c.is_merge and not c.hidden for c in commits)
    assert any(c.committed_date.year == 2099 for c in commits)
    tags = [e for evs in real.events.values() for e in evs
            if e.push_data and e.push_data.get("ref_type") == "tag"]
    assert tags
    # the knobs only add: every plain commit is still there, with the same content
    plain_shas = {c.sha for cs in plain.commits.values() for c in cs}
    assert plain_shas <= {c.sha for c in commits}
    assert plain.users.keys() == real.users.keys()
    assert generate_org(3, users=20, projects=60, now=plain.now,
                        refs=RefKnobs()).time_zone == "UTC"


def test_a_new_commit_is_on_top_of_its_branch() -> None:
    org = repo_org()
    old = commit("o1", "Ann Lee", "ann@acme.example", INSIDE - timedelta(days=2))
    org.add_commits(10, [Commit(**{**_fields(old), "branch": "feat"})])
    assert org.branches(10)["feat"].sha == old.sha  # pushed late: still the head


def _fields(c: Commit) -> dict[str, Any]:
    return {name: getattr(c, name) for name in Commit.__slots__}  # type: ignore[attr-defined]


async def test_parent_ids_follow_each_refs_history(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app(repo_org(), token=TOKEN),
                                  headers={"PRIVATE-TOKEN": TOKEN})
    rows = await get(client, "/projects/10/repository/commits", all="true")
    parents = {row["id"][:2]: [p[:2] for p in row["parent_ids"]] for row in rows}
    assert parents == {
        "a1": [], "b1": ["a1"], "a2": ["a1"], "m0": ["a2", "b1"],  # a merge keeps both
        "k1": ["a1"], "h1": ["a1"], "g1": ["m0", "h1"],
    }

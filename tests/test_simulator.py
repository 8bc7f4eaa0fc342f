"""The GitLab simulator: HTTP behaviour, faults, rate limits, generator and ground truth."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from exporter.simulator.faults import FaultRule
from exporter.simulator.generate import generate_org
from exporter.simulator.model import (
    DEVELOPER,
    MAINTAINER,
    Commit,
    Event,
    Group,
    Issue,
    MergeRequest,
    Namespace,
    Org,
    Project,
    User,
)
from exporter.simulator.server import (
    GITLAB_COM_LIMITS,
    SIMULATOR_KEY,
    GitLabSimulator,
    RateLimits,
    SimulatorServer,
    create_app,
)
from exporter.simulator.truth import ExpectedUser, expected_activity

TOKEN = "glpat-simulator-test"
NOW = datetime(2024, 11, 20, 12, 0, tzinfo=UTC)  # window start 2024-10-21: spans a DST change
HOST = "gitlab.example.com"
MORNING = {"morning": "09:00-12:30", "afternoon": "12:30-17:00"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


# --------------------------------------------------------------------------- a tiny org
def tz(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


def commit(
    sha: str,
    name: str,
    email: str,
    authored: datetime,
    committed: datetime | None = None,
    *,
    millis: bool = False,
    branch: str = "main",
) -> Commit:
    return Commit(
        sha=sha.ljust(40, "0"),
        title=f"commit {sha}",
        message=f"commit {sha}\n",
        author_name=name,
        author_email=email,
        authored_date=authored,
        committed_date=committed or authored,
        millis=millis,
        branch=branch,
    )


def user_ns(u: User) -> Namespace:
    return Namespace(
        id=1000 + u.id, name=u.name, path=u.username, kind="user", full_path=u.username
    )


def tiny_org() -> Org:
    """Every attribution rule once; ann's counted commits are a1..a9 (a4 needs extras)."""
    ann = User(7, "ann", "Ann Lee", public_email="ann.lee@acme.example")
    anna = User(8, "anna", "Anna Berg")
    bob = User(9, "bob", "Bob Stone")
    parent = Group(50, "Acme", "acme", "acme", members={9: MAINTAINER})
    team = Group(51, "API", "api-team", "acme/api-team", parent_id=50, members={7: DEVELOPER})
    gns = Namespace(id=50, name="Acme", path="acme", kind="group", full_path="acme")
    projects = [
        Project(100, "Ann Notes", "notes", user_ns(ann)),
        Project(101, "Api", "api", user_ns(ann), forked_from_project=200),
        Project(200, "Api", "api", gns),
        Project(300, "Push Only", "push-only", gns),
        Project(301, "Old Push", "old-push", gns),
        Project(302, "Bob Personal", "bob-stuff", user_ns(bob)),
    ]
    inside = NOW - timedelta(days=5)
    before = NOW - timedelta(days=40)
    shared = [
        commit("a1", "Someone", "ANN.LEE@acme.example", inside),  # public email, other case
        commit("a2", "x", f"7-ann@users.noreply.{HOST}", inside + timedelta(hours=1)),
    ]
    upstream = [
        *shared,
        commit("a3", "x", f"ann@users.noreply.{HOST}", inside + timedelta(hours=2), millis=True),
        commit("a4", "x", "ann@oldco.example", inside + timedelta(hours=3)),  # extra email
        commit("a5", "  ann lee ", "ann@laptop.local", inside + timedelta(hours=4)),  # name
        commit("a6", "ANN", "ann@devbox.local", inside + timedelta(hours=5), branch="feat"),
        commit("n1", "Anna Berg", "anna@acme.example", inside + timedelta(hours=6)),  # anna
        commit("n2", "Ann Smith", "ann.smith@partner.example", inside),  # substring trap
        commit("n3", "Ann Lee", "ann.lee@acme.example", before, inside),  # rebased into window
        commit("n4", "Ann Lee", "ann.lee@acme.example", before),  # too old
        commit("n5", "Ann (home)", "ann@mail.acme.example", inside),  # private email
        commit("n6", "Ann Lee", "ann.lee@acme.example", NOW + timedelta(hours=1)),  # future
    ]
    org = Org(
        now=NOW,
        host=HOST,
        users={u.id: u for u in (ann, anna, bob)},
        groups={parent.id: parent, team.id: team},
        projects={p.id: p for p in projects},
        commits={
            100: [commit("a7", "Ann Lee", "nobody@x.example", inside)],
            101: [*shared, commit("a8", "ann", "whatever@x.example", inside)],
            200: upstream,
            300: [commit("a9", "Ann Lee", "laptop@x.example", inside)],
            301: [commit("n7", "Ann Lee", "laptop@x.example", inside)],
            302: [commit("b1", "Bob Stone", "bob@x.example", inside)],
        },
        events={
            7: [
                Event(1, 7, 300, inside, push_data={"commit_count": 1}),
                Event(2, 7, 301, before, push_data={"commit_count": 1}),
                Event(3, 7, 302, inside, action="commented", action_name="commented on"),
                Event(4, 7, 999, inside, push_data={"commit_count": 1}, hidden=True),
                Event(5, 7, 300, inside - timedelta(days=1), push_data={"commit_count": 2}),
            ]
        },
        contributed={7: [100, 200], 8: [200], 9: [200]},
        merge_requests=[
            MergeRequest(1, 1, 200, "opened", inside, "ann"),
            MergeRequest(2, 2, 200, "merged", inside, "ann", merged_at=inside),
            MergeRequest(3, 3, 200, "locked", inside, "ann"),
            MergeRequest(4, 4, 200, "closed", inside, "ann", closed_at=inside),
            MergeRequest(5, 5, 200, "merged", before, "ann"),  # before the window
            MergeRequest(6, 6, 200, "opened", inside, "bob", assignee="ann"),  # assigned only
        ],
        issues=[
            Issue(1, 1, 200, "opened", inside, "ann"),
            Issue(2, 2, 200, "closed", inside, "ann", closed_at=inside),
            Issue(3, 3, 200, "closed", before, "ann"),
            Issue(4, 4, 200, "opened", inside, "bob", assignee="ann"),
        ],
    )
    ann.extra_emails = ["ann@oldco.example"]
    return org


def truth(
    org: Org,
    *,
    timezone: str = "UTC",
    periods: dict[str, str] | None = None,
    usernames: tuple[str, ...] = ("ann", "anna", "bob"),
    extra_emails: dict[str, list[str]] | None = None,
) -> dict[str, ExpectedUser]:
    return expected_activity(
        org,
        usernames=usernames,
        timezone=timezone,
        periods=periods if periods is not None else MORNING,
        lookback_days=30,
        now=NOW,
        extra_emails=extra_emails or {},
    )


# --------------------------------------------------------------------------- truth
def test_truth_attribution_rules() -> None:
    org = tiny_org()
    with_extras = truth(org, extra_emails={"ANN": ["ann@oldco.example"]})["ann"]
    without = truth(org)["ann"]
    # a1..a9: public email in another case, both no-reply forms, configured email, name with
    # spaces, username in capitals, personal project, fork-only commit, push-only project
    assert with_extras.commits == 9
    assert without.commits == 8  # the old-company email is unknown without configuration
    assert with_extras.projects == {"personal": 2, "contributed": 1, "active": 4}


def test_truth_no_substring_and_names_are_exact() -> None:
    t = truth(tiny_org())
    assert t["anna"].commits == 1  # only n1; "ann" does not leak into "anna" or back
    assert t["bob"].commits == 1  # b1 in his personal project; "Bob" <b@x> elsewhere: none
    assert t["bob"].projects == {"personal": 1, "contributed": 1, "active": 1}


def test_truth_fork_shares_count_once_and_both_projects_active() -> None:
    org = tiny_org()
    base = truth(org)["ann"]
    # drop the fork-only commit: the fork still holds a1 and a2, which count once
    org.commits[101] = [c for c in org.commits[101] if not c.sha.startswith("a8")]
    t = truth(org)["ann"]
    assert t.commits == base.commits - 1
    assert t.projects["active"] == 4  # 100, 101 (shared SHAs), 200, 300


def test_truth_window_uses_authored_date_and_push_events_in_window() -> None:
    org = tiny_org()
    t = truth(org)["ann"]
    shas = {c.sha[:2] for pid in (100, 101, 200, 300) for c in org.commits[pid]}
    assert {"n3", "n4", "n6"} <= shas  # present but excluded: rebased, old, future
    assert t.commits == 8
    # the push to 301 is before the window: its commit n7 does not count
    org.events[7].append(Event(6, 7, 301, NOW - timedelta(days=1), push_data={}))
    assert truth(org)["ann"].commits == 9
    # a hidden (invisible) push event does not bring its project in
    org.events[7].append(Event(7, 7, 302, NOW - timedelta(days=1), hidden=True))
    assert truth(org)["ann"].commits == 9


def test_truth_unknown_and_deleted_users_absent() -> None:
    org = tiny_org()
    org.delete_user("anna")
    t = truth(org, usernames=("ann", "anna", "ghost"))
    assert set(t) == {"ann"}


def test_truth_merge_requests_and_issues() -> None:
    t = truth(tiny_org())
    assert t["ann"].merge_requests == {"opened": 2, "merged": 1, "closed": 1}
    assert t["ann"].issues == {"opened": 1, "closed": 1}
    assert t["bob"].merge_requests == {"opened": 1, "merged": 0, "closed": 0}


def one_user_org(*authored: datetime) -> Org:
    u = User(7, "ann", "Ann Lee")
    p = Project(100, "N", "n", user_ns(u))
    commits = [commit(f"c{i}", "ann", "x@x", d) for i, d in enumerate(authored)]
    return Org(now=NOW, host=HOST, users={7: u}, projects={100: p}, commits={100: commits})


def test_truth_dst_zone_bucketing() -> None:
    # 13:30Z is 09:30 EDT before 3 Nov 2024 and 08:30 EST after it
    org = one_user_org(
        datetime(2024, 11, 1, 13, 30, tzinfo=UTC), datetime(2024, 11, 5, 13, 30, tzinfo=UTC)
    )
    t = truth(org, timezone="America/New_York")["ann"]
    assert t.period_commits == {"morning": 1, "afternoon": 0, "other": 1}


def test_truth_commit_offset_mode_and_half_open_boundaries() -> None:
    org = one_user_org(
        datetime(2024, 11, 5, 9, 30, tzinfo=tz(330)),  # 04:00Z
        datetime(2024, 11, 6, 12, 30, tzinfo=tz(-420)),  # boundary: afternoon, not morning
        datetime(2024, 11, 7, 17, 0, tzinfo=tz(345)),  # end is exclusive
    )
    assert truth(org, timezone="commit")["ann"].period_commits == {
        "morning": 1,
        "afternoon": 1,
        "other": 1,
    }
    assert truth(org, timezone="UTC")["ann"].period_commits == {
        "morning": 1,  # 11:15Z
        "afternoon": 0,
        "other": 2,  # 04:00Z, 19:30Z
    }


def test_truth_wrap_around_and_full_day_has_no_other() -> None:
    org = one_user_org(
        datetime(2024, 11, 5, 23, 30, tzinfo=UTC),
        datetime(2024, 11, 6, 2, 0, tzinfo=UTC),
        datetime(2024, 11, 6, 22, 0, tzinfo=UTC),
        datetime(2024, 11, 7, 12, 0, tzinfo=UTC),
    )
    t = truth(org, periods={"day": "06:00-22:00", "night": "22:00-06:00"})["ann"]
    assert t.period_commits == {"day": 1, "night": 3}
    t = truth(org, periods={"late": "22:00-24:00"})["ann"]
    assert t.period_commits == {"late": 2, "other": 2}


# --------------------------------------------------------------------------- generator
def digest(org: Org) -> list[Any]:
    return [
        sorted((u.id, u.username, u.name, u.public_email) for u in org.users.values()),
        sorted((p.id, p.path_with_namespace) for p in org.projects.values()),
        sorted(
            (pid, c.sha, c.authored_date.isoformat()) for pid, cs in org.commits.items() for c in cs
        ),
        sorted((e.id, e.project_id, e.created_at) for es in org.events.values() for e in es),
        sorted((m.id, m.state) for m in org.merge_requests),
    ]


def test_generator_is_deterministic_per_seed() -> None:
    a = generate_org(5, now=NOW)
    assert digest(a) == digest(generate_org(5, now=NOW))
    assert digest(a) != digest(generate_org(6, now=NOW))


def test_generator_guarantees() -> None:
    org = generate_org(1, users=30, projects=90, now=NOW)
    start = NOW - timedelta(days=30)
    margin = timedelta(hours=2)

    def clear(d: datetime) -> bool:
        return abs(d - start) >= margin and abs(d - NOW) >= margin

    commits = [c for cs in org.commits.values() for c in cs]
    assert all(clear(c.authored_date) for c in commits)
    assert all(clear(m.created_at) for m in org.merge_requests)
    assert all(clear(i.created_at) for i in org.issues)
    assert all(clear(e.created_at) for es in org.events.values() for e in es)
    offsets = {c.authored_date.utcoffset() for c in commits}
    assert {timedelta(hours=5, minutes=30), timedelta(hours=-7), timedelta(0)} <= offsets
    assert {c.millis for c in commits} == {True, False}
    assert any(c.authored_date < start <= c.committed_date for c in commits)
    assert len({c.branch for c in commits}) > 2
    forks = [p for p in org.projects.values() if p.forked_from_project]
    assert forks and any(
        {c.sha for c in org.commits[f.id]}
        & {c.sha for c in org.commits[f.forked_from_project or 0]}
        for f in forks
    )
    assert any(g.parent_id for g in org.groups.values())
    assert org.extra_emails and len(org.extra_emails) < len(org.users)
    # every in-window commit of a user is in a project of that user's set
    t = expected_activity(
        org,
        usernames=[u.username for u in org.users.values()],
        timezone="UTC",
        periods=MORNING,
        lookback_days=30,
        now=NOW,
        extra_emails=org.extra_emails,
    )
    for u in org.users.values():
        if u.bot:
            continue  # a bot user contributes nowhere: its set is empty
        own = {e.casefold() for e in u.extra_emails}
        if u.public_email:
            own.add(u.public_email.casefold())
        own |= {
            f"{u.id}-{u.username}@users.noreply.{HOST}".casefold(),
            f"{u.username}@users.noreply.{HOST}".casefold(),
        }
        names = {u.name.casefold(), u.username.casefold()}
        shas = {
            c.sha
            for cs in org.commits.values()
            for c in cs
            if start <= c.authored_date < NOW
            and (c.author_email.casefold() in own or c.author_name.strip().casefold() in names)
        }
        assert t[u.username].commits == len(shas), u.username
    # shared projects, push-only and contributed-only discovery exist
    assert sum(x.projects["active"] for x in t.values()) > len(t)
    # some projects are reachable only through push events, some only as contributed
    push_only = contributed_only = 0
    for u in org.users.values():
        contributed = set(org.contributed.get(u.id, []))
        pushed = {
            e.project_id
            for e in org.events.get(u.id, [])
            if e.action == "pushed" and start <= e.created_at < NOW
        }
        personal = set(org.personal_project_ids(u.id))
        push_only += len(pushed - contributed - personal)
        contributed_only += len(contributed - pushed - personal)
    assert push_only > 5 and contributed_only > 5


def test_generator_scales() -> None:
    # how long generation takes is the benchmark's to report, not a test's
    org = generate_org(2, users=300, projects=1500, now=NOW)
    assert len(org.users) >= 300 and len(org.projects) >= 1500
    per_project = [len(cs) for cs in org.commits.values()]
    assert 5 <= sum(per_project) / len(per_project) <= 60


# --------------------------------------------------------------------------- HTTP
@pytest.fixture
def org() -> Org:
    return tiny_org()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def make(
    aiohttp_client: ClientFactory, org: Org, **kwargs: Any
) -> tuple[TestClient[Any, Any], GitLabSimulator]:
    app = create_app(org, token=TOKEN, **kwargs)
    client = await aiohttp_client(app, headers={"PRIVATE-TOKEN": TOKEN})
    return client, app[SIMULATOR_KEY]


async def test_auth_headers_and_401(aiohttp_client: ClientFactory, org: Org) -> None:
    app = create_app(org, token=TOKEN)
    client = await aiohttp_client(app)
    sim = app[SIMULATOR_KEY]
    r = await client.get("/api/v4/users/7", headers={"PRIVATE-TOKEN": TOKEN})
    assert r.status == 200 and (await r.json())["username"] == "ann"
    r = await client.get("/api/v4/users/7", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200
    for headers in ({"PRIVATE-TOKEN": "wrong"}, {}, {"Authorization": "Bearer nope"}):
        r = await client.get("/api/v4/users/7", headers=headers)
        assert r.status == 401
        assert await r.json() == {"message": "401 Unauthorized"}
    assert sim.credentials == [TOKEN, TOKEN, "wrong", "nope"]


async def test_user_lookup_and_details(aiohttp_client: ClientFactory, org: Org) -> None:
    client, _ = await make(aiohttp_client, org)
    r = await client.get("/api/v4/users", params={"username": "ANN"})
    assert [u["username"] for u in await r.json()] == ["ann"]
    assert set((await r.json())[0]) >= {"id", "username", "name", "state", "avatar_url", "web_url"}
    r = await client.get("/api/v4/users", params={"username": "an"})
    assert await r.json() == []
    detail = await (await client.get("/api/v4/users/7")).json()
    assert detail["public_email"] == "ann.lee@acme.example" and detail["bot"] is False
    assert "created_at" in detail


async def test_offset_pagination_headers(aiohttp_client: ClientFactory, org: Org) -> None:
    for pid in range(400, 405):
        org.projects[pid] = Project(pid, f"P{pid}", f"p{pid}", org.projects[302].namespace)
    org.reindex()
    client, _ = await make(aiohttp_client, org)
    r = await client.get("/api/v4/users/9/projects", params={"per_page": "2", "page": "2"})
    h = r.headers
    assert (h["X-Page"], h["X-Per-Page"], h["X-Next-Page"], h["X-Prev-Page"]) == (
        "2",
        "2",
        "3",
        "1",
    )
    assert (h["X-Total"], h["X-Total-Pages"]) == ("6", "3")
    links = {
        part.split("; ")[1]: part.split("; ")[0].strip("<> ") for part in h["Link"].split(", ")
    }
    assert set(links) == {'rel="prev"', 'rel="next"', 'rel="first"', 'rel="last"'}
    base = f"http://{client.server.host}:{client.server.port}/api/v4/users/9/projects?"
    assert links['rel="next"'].startswith(base) and "page=3" in links['rel="next"']
    assert "page=3" in links['rel="last"'] and "per_page=2" in links['rel="last"']
    r = await client.get("/api/v4/users/9/projects", params={"per_page": "2", "page": "3"})
    assert r.headers["X-Next-Page"] == "" and 'rel="next"' not in r.headers["Link"]
    assert len(await r.json()) == 2
    r = await client.get("/api/v4/users/9/projects", params={"per_page": "2"})
    assert r.headers["X-Prev-Page"] == "" and 'rel="prev"' not in r.headers["Link"]
    r = await client.get("/api/v4/users/9/projects")
    assert r.headers["X-Per-Page"] == "20"
    r = await client.get("/api/v4/users/9/projects", params={"per_page": "500"})
    assert r.headers["X-Per-Page"] == "100" and len(await r.json()) == 6


async def test_commits_pages_full_then_empty_and_no_totals(
    aiohttp_client: ClientFactory, org: Org
) -> None:
    client, _ = await make(aiohttp_client, org)
    # project 101 holds exactly 3 commits
    shas: list[str] = []
    for page, size, nxt in ((1, 2, "2"), (2, 1, "")):
        r = await client.get(
            "/api/v4/projects/101/repository/commits",
            params={"all": "true", "per_page": "2", "page": str(page)},
        )
        assert r.headers["X-Next-Page"] == nxt
        assert "X-Total" not in r.headers and "X-Total-Pages" not in r.headers
        assert 'rel="last"' not in r.headers["Link"]
        body = await r.json()
        assert len(body) == size
        shas += [c["id"] for c in body]
        dates = [c["committed_date"] for c in body]
        assert dates == sorted(dates)  # with all=true each page is oldest-first
    assert len(set(shas)) == 3
    # while pages go newest to oldest: a2 (the newest) ends page 1
    assert shas[1].startswith("a2")
    for page, size, nxt in ((1, 3, "2"), (2, 0, "")):
        r = await client.get(
            "/api/v4/projects/101/repository/commits",
            params={"all": "true", "per_page": "3", "page": str(page)},
        )
        assert len(await r.json()) == size and r.headers["X-Next-Page"] == nxt


async def test_commits_since_until_on_committer_date(
    aiohttp_client: ClientFactory, org: Org
) -> None:
    client, _ = await make(aiohttp_client, org)
    since = (NOW - timedelta(days=30)).astimezone(tz(330)).isoformat()  # offset form
    r = await client.get(
        "/api/v4/projects/200/repository/commits",
        params={"all": "true", "since": since, "per_page": "100"},
    )
    got = {c["id"][:2] for c in await r.json()}
    assert "n3" in got  # authored before the window, committed inside it
    assert "n4" not in got  # committed before `since`
    until = (NOW - timedelta(days=5, hours=-2, minutes=-30)).isoformat().replace("+00:00", "Z")
    r = await client.get(
        "/api/v4/projects/200/repository/commits",
        params={"all": "true", "since": since, "until": until, "per_page": "100"},
    )
    got = {c["id"][:2] for c in await r.json()}
    assert {"a1", "a2", "a3", "n3"} <= got and not got & {"a4", "a5", "a6", "n4", "n6"}
    r = await client.get("/api/v4/projects/200/repository/commits", params={"since": "bogus"})
    assert r.status == 400


async def test_commit_rendering_and_branches(aiohttp_client: ClientFactory, org: Org) -> None:
    client, _ = await make(aiohttp_client, org)
    r = await client.get("/api/v4/projects/200/repository/commits", params={"all": "true"})
    by_sha = {c["id"][:2]: c for c in await r.json()}
    assert by_sha["a3"]["authored_date"] == "2024-11-15T14:00:00.000+00:00"  # milliseconds
    assert by_sha["a1"]["committed_date"] == "2024-11-15T12:00:00+00:00"
    assert by_sha["a1"]["short_id"] == by_sha["a1"]["id"][:8]
    assert "a6" in by_sha  # on another branch
    r = await client.get("/api/v4/projects/200/repository/commits")
    assert "a6" not in {c["id"][:2] for c in await r.json()}  # default branch only


async def test_events_short_page_with_next_and_date_filters(
    aiohttp_client: ClientFactory, org: Org
) -> None:
    client, _ = await make(aiohttp_client, org)
    params = {"action": "pushed", "per_page": "2"}
    r = await client.get("/api/v4/users/7/events", params=params)
    page1 = await r.json()
    # newest first: events 1 and 4 (hidden) fill page 1, so it is short but not the end
    assert [e["id"] for e in page1] == [1]
    assert r.headers["X-Next-Page"] == "2" and 'rel="next"' in r.headers["Link"]
    r = await client.get("/api/v4/users/7/events", params={**params, "page": "2"})
    assert [e["id"] for e in await r.json()] == [5, 2]
    assert page1[0]["push_data"] == {"commit_count": 1}
    # `after` excludes the whole named day
    day_of_5 = (NOW - timedelta(days=6)).date().isoformat()
    r = await client.get("/api/v4/users/7/events", params={"action": "pushed", "after": day_of_5})
    assert [e["id"] for e in await r.json()] == [1]
    day_of_1 = (NOW - timedelta(days=5)).date().isoformat()
    r = await client.get("/api/v4/users/7/events", params={"before": day_of_1})
    assert [e["id"] for e in await r.json()] == [5, 2]


async def test_not_found_bodies(aiohttp_client: ClientFactory, org: Org) -> None:
    client, _ = await make(aiohttp_client, org)
    cases = {
        "/api/v4/users/12345": {"message": "404 User Not Found"},
        "/api/v4/users/12345/projects": {"message": "404 User Not Found"},
        "/api/v4/projects/999": {"message": "404 Project Not Found"},
        "/api/v4/projects/acme%2Fnope/repository/commits": {"message": "404 Project Not Found"},
        "/api/v4/groups/nope/members/all": {"message": "404 Group Not Found"},
        "/api/v4/nonsense": {"error": "404 Not Found"},
        "/elsewhere": {"error": "404 Not Found"},
    }
    for path, body in cases.items():
        r = await client.get(path)
        assert (r.status, await r.json()) == (404, body), path
    r = await client.get("/api/v4/projects/acme%2Fapi")
    assert (await r.json())["id"] == 200
    org.delete_user("ann")
    for path in ("/api/v4/users/7", "/api/v4/users/7/events", "/api/v4/users/7/projects"):
        r = await client.get(path)
        assert (r.status, await r.json()) == (404, {"message": "404 User Not Found"}), path
    r = await client.get("/api/v4/users", params={"username": "ann"})
    assert await r.json() == []


async def test_groups_members_all_and_projects(aiohttp_client: ClientFactory, org: Org) -> None:
    client, _ = await make(aiohttp_client, org)
    r = await client.get("/api/v4/groups/acme%2Fapi-team/members/all")
    assert {(m["username"], m["access_level"]) for m in await r.json()} == {
        ("ann", DEVELOPER),
        ("bob", MAINTAINER),  # inherited from the parent group
    }
    r = await client.get("/api/v4/groups/51/members")
    assert [m["username"] for m in await r.json()] == ["ann"]
    r = await client.get("/api/v4/groups/acme/projects")
    assert sorted(p["id"] for p in await r.json()) == [200, 300, 301]


async def test_project_shape(aiohttp_client: ClientFactory, org: Org) -> None:
    client, _ = await make(aiohttp_client, org)
    fork = await (await client.get("/api/v4/projects/101")).json()
    assert fork["forked_from_project"]["id"] == 200
    assert fork["namespace"] == fork["namespace"] | {"kind": "user", "path": "ann", "id": 1007}
    assert fork["path_with_namespace"] == "ann/api"
    up = await (await client.get("/api/v4/projects/200")).json()
    assert "forked_from_project" not in up and up["namespace"]["kind"] == "group"
    assert up["last_activity_at"].endswith("Z")
    r = await client.get("/api/v4/users/7/contributed_projects")
    assert sorted(p["id"] for p in await r.json()) == [100, 200]


async def test_merge_requests_and_issues_need_scope_all(
    aiohttp_client: ClientFactory, org: Org
) -> None:
    client, _ = await make(aiohttp_client, org)
    r = await client.get("/api/v4/merge_requests", params={"author_username": "ann"})
    assert await r.json() == []  # default scope: the token owner's
    after = (NOW - timedelta(days=30)).isoformat()
    params = {"scope": "all", "author_username": "ann", "created_after": after}
    r = await client.get("/api/v4/merge_requests", params=params)
    mrs = await r.json()
    assert sorted(m["id"] for m in mrs) == [1, 2, 3, 4]
    assert all(m["author"]["username"] == "ann" for m in mrs)
    r = await client.get("/api/v4/merge_requests", params={**params, "state": "merged"})
    assert [m["id"] for m in await r.json()] == [2]
    r = await client.get("/api/v4/issues", params=params)
    assert sorted(i["id"] for i in await r.json()) == [1, 2]
    r = await client.get("/api/v4/issues", params={"scope": "all", "assignee_username": "ann"})
    assert [i["id"] for i in await r.json()] == [4]


async def test_added_commits_are_served(aiohttp_client: ClientFactory, org: Org) -> None:
    client, _ = await make(aiohttp_client, org)
    org.add_commits(302, [commit("b2", "Bob", "b@x", NOW - timedelta(hours=3))])
    r = await client.get("/api/v4/projects/302/repository/commits", params={"all": "true"})
    assert {c["id"][:2] for c in await r.json()} == {"b1", "b2"}


# --------------------------------------------------------------------------- rate limits
async def test_endpoint_rate_limit_headers_and_429(aiohttp_client: ClientFactory, org: Org) -> None:
    clock = FakeClock(1_000_000_010.0)
    limits = RateLimits(general=(100, 60.0), endpoints={"/users/:id": (2, 600.0)})
    client, _ = await make(aiohttp_client, org, limits=limits, clock=clock)
    reset = str(1_000_000_200)  # windows aligned to multiples of 600 s
    for observed in (1, 2):
        r = await client.get("/api/v4/users/7")
        assert r.status == 200
        assert r.headers["RateLimit-Name"] == "users_get_by_id"
        assert r.headers["RateLimit-Limit"] == "2"
        assert r.headers["RateLimit-Observed"] == str(observed)
        assert r.headers["RateLimit-Remaining"] == str(2 - observed)
        assert r.headers["RateLimit-Reset"] == reset
    r = await client.get("/api/v4/users/7")
    assert r.status == 429 and "Retry-After" not in r.headers
    assert await r.json() == {
        "message": {"error": "This endpoint has been requested too many times. Try again later."}
    }
    assert r.headers["RateLimit-Reset"] == reset and r.headers["RateLimit-Remaining"] == "0"
    r = await client.get("/api/v4/users/7/projects")  # other endpoints are unaffected
    assert r.status == 200 and r.headers["RateLimit-Name"] == "throttle_authenticated_api"
    clock.now = 1_000_000_200.0  # next window
    r = await client.get("/api/v4/users/7")
    assert r.status == 200 and r.headers["RateLimit-Observed"] == "1"


async def test_general_rate_limit_429(aiohttp_client: ClientFactory, org: Org) -> None:
    clock = FakeClock(1_000_000_030.0)
    client, _ = await make(aiohttp_client, org, limits=RateLimits(general=(3, 60.0)), clock=clock)
    for _ in range(3):
        assert (await client.get("/api/v4/projects/200")).status == 200
    r = await client.get("/api/v4/projects/200")
    assert r.status == 429
    assert r.headers["Content-Type"].startswith("text/plain")
    assert await r.text() == "Retry later\n"
    assert r.headers["Retry-After"] == "50"  # windows aligned to whole minutes
    assert r.headers["RateLimit-ResetTime"] == "Sun, 09 Sep 2001 01:48:00 GMT"
    assert r.headers["RateLimit-Reset"] == "1000000080"
    assert r.headers["RateLimit-Name"] == "throttle_authenticated_api"
    clock.now += 50
    assert (await client.get("/api/v4/projects/200")).status == 200


def test_gitlab_com_preset() -> None:
    assert GITLAB_COM_LIMITS.general == (2000, 60.0)
    assert GITLAB_COM_LIMITS.endpoints["/users/:id"] == (300, 600.0)
    assert GITLAB_COM_LIMITS.endpoints["/users/:id/contributed_projects"] == (100, 60.0)


# --------------------------------------------------------------------------- faults
async def test_html_and_status_faults(aiohttp_client: ClientFactory, org: Org) -> None:
    client, sim = await make(aiohttp_client, org)
    for kind, status in (("500_html", 500), ("502_html", 502), ("503_html", 503)):
        sim.faults.add(FaultRule(r"^/api/v4/projects/200$", kind, times=1))
        r = await client.get("/api/v4/projects/200")
        assert r.status == status and r.headers["Content-Type"].startswith("text/html")
        assert "<html>" in await r.text()
    sim.faults.add(FaultRule(r"/projects/200$", "429", times=1))
    r = await client.get("/api/v4/projects/200")
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    sim.faults.add(FaultRule(r"/projects/200$", "429_no_retry_after", times=1))
    r = await client.get("/api/v4/projects/200")
    assert r.status == 429 and "Retry-After" not in r.headers
    sim.faults.add(FaultRule(r"/projects/200$", "401", times=1))
    assert (await client.get("/api/v4/projects/200")).status == 401
    sim.faults.add(FaultRule(r"/projects/200$", "404", times=1))
    assert (await client.get("/api/v4/projects/200")).status == 404
    r = await client.get("/api/v4/projects/200")  # rules with times=1 are used up
    assert r.status == 200
    assert sim.log.count("/projects/:id", 200) == 1
    assert sim.faults.injected["502_html"] == 1


async def test_reset_and_malformed_json(aiohttp_client: ClientFactory, org: Org) -> None:
    client, sim = await make(aiohttp_client, org)
    sim.faults.add(FaultRule(r"/users/7/projects$", "reset", times=1))
    with pytest.raises(aiohttp.ClientError):
        r = await client.get("/api/v4/users/7/projects")
        await r.read()
    sim.faults.add(FaultRule(r"/users/7/projects$", "malformed_json", times=1))
    r = await client.get("/api/v4/users/7/projects")
    assert r.status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(await r.text())
    r = await client.get("/api/v4/users/7/projects")
    assert len(await r.json()) == 2
    assert sim.log.by_endpoint()["/users/:id/projects"] == {0: 1, 200: 2}


async def test_slow_latency_and_redirect(aiohttp_client: ClientFactory, org: Org) -> None:
    client, sim = await make(aiohttp_client, org)
    sim.faults.add(FaultRule(r"/users/7$", "slow", times=1, delay=0.3))
    started = time.perf_counter()
    assert (await client.get("/api/v4/users/7")).status == 200
    assert time.perf_counter() - started >= 0.28
    sim.faults.latency_ms = 200
    started = time.perf_counter()
    await client.get("/api/v4/users/8")
    assert time.perf_counter() - started >= 0.18
    sim.faults.clear()
    sim.faults.redirect_base = "http://other.example:8080"
    sim.faults.add(FaultRule(r"/users/8$", "redirect", times=1))
    r = await client.get("/api/v4/users/8?x=1", allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"] == "http://other.example:8080/api/v4/users/8?x=1"


async def test_redirect_to_other_simulator_shows_leaked_tokens(org: Org) -> None:
    async with (
        SimulatorServer(org, token="other") as other,
        SimulatorServer(org, token=TOKEN) as sim,
    ):
        sim.faults.redirect_base = other.url
        sim.faults.add(FaultRule(r"/users/7$", "redirect"))
        async with aiohttp.ClientSession() as session:
            r = await session.get(f"{sim.url}/api/v4/users/7", headers={"PRIVATE-TOKEN": TOKEN})
            assert r.status == 401  # the header followed the redirect to the other host
        assert other.credentials == [TOKEN] and sim.credentials == [TOKEN]
        assert other.log.count("/users/:id", 401) == 1


async def test_random_fault_rate(aiohttp_client: ClientFactory, org: Org) -> None:
    client, sim = await make(aiohttp_client, org)
    sim.faults.fault_rate = 1.0
    sim.faults.random_kinds = ("503_html",)
    statuses = [(await client.get("/api/v4/users/7")).status for _ in range(5)]
    assert statuses == [503] * 5
    sim.faults.fault_rate = 0.0
    assert (await client.get("/api/v4/users/7")).status == 200


async def test_request_log(aiohttp_client: ClientFactory, org: Org) -> None:
    client, sim = await make(aiohttp_client, org)
    await client.get("/api/v4/users/7")
    await client.get("/api/v4/users/8")
    await client.get("/api/v4/projects/200/repository/commits", params={"all": "true"})
    await client.get("/api/v4/projects/404404")
    await client.get("/api/v4/users/7", headers={"PRIVATE-TOKEN": "bad"})
    log = sim.log
    assert log.count() == 5
    assert log.count("/users/:id") == 3
    assert log.count(status=401) == 1 and log.count(status=404) == 1
    assert log.by_endpoint() == {
        "/users/:id": {200: 2, 401: 1},
        "/projects/:id/repository/commits": {200: 1},
        "/projects/:id": {404: 1},
    }
    entry = log.entries[2]
    assert entry.path == "/api/v4/projects/200/repository/commits"
    assert entry.query == {"all": "true"} and entry.credential == TOKEN
    assert log.entries[4].credential == "bad"
    log.clear()
    assert log.count() == 0


async def test_simulator_server_runner(org: Org) -> None:
    async with SimulatorServer(org, token=TOKEN) as sim:
        assert sim.url.startswith("http://127.0.0.1:") and not sim.url.endswith("/api/v4")
        async with (
            aiohttp.ClientSession(headers={"PRIVATE-TOKEN": TOKEN}) as session,
            session.get(f"{sim.url}/api/v4/users", params={"username": "bob"}) as r,
        ):
            assert [u["id"] for u in await r.json()] == [9]
        assert sim.log.count("/users") == 1 and sim.org is org


async def test_concurrent_requests_are_served(aiohttp_client: ClientFactory) -> None:
    big = generate_org(3, users=40, projects=120, now=NOW)
    client, sim = await make(aiohttp_client, big)
    pids = sorted(big.projects)[:30]
    responses = await asyncio.gather(
        *(client.get(f"/api/v4/projects/{pid}/repository/commits?all=true") for pid in pids)
    )
    assert [r.status for r in responses] == [200] * len(pids)
    assert sim.log.count("/projects/:id/repository/commits", 200) == len(pids)


async def test_keyset_pagination_and_offset_cap(aiohttp_client: ClientFactory, org: Org) -> None:
    for pid in range(400, 405):
        org.projects[pid] = Project(pid, f"P{pid}", f"p{pid}", org.projects[302].namespace)
    org.reindex()
    client, _ = await make(aiohttp_client, org)
    params = {"pagination": "keyset", "order_by": "id", "sort": "asc", "per_page": "4"}
    r = await client.get("/api/v4/users/9/projects", params=params)
    assert [p["id"] for p in await r.json()] == [302, 400, 401, 402]
    assert "X-Total" not in r.headers and "X-Next-Page" not in r.headers
    (next_link,) = (part for part in r.headers["Link"].split(", ") if 'rel="next"' in part)
    assert "id_after=402" in next_link
    r = await client.get(URL(next_link.split(";")[0].strip("<>")).path_qs)
    assert [p["id"] for p in await r.json()] == [403, 404]
    assert "Link" not in r.headers
    r = await client.get("/api/v4/users/9/projects", params={"per_page": "100", "page": "501"})
    assert r.status == 405


async def test_commit_author_filter_is_a_case_sensitive_pattern(
    aiohttp_client: ClientFactory, org: Org
) -> None:
    client, _ = await make(aiohttp_client, org)
    path = "/api/v4/projects/200/repository/commits"
    r = await client.get(path, params={"all": "true", "author": "Ann"})
    got = {c["id"][:2] for c in await r.json()}
    # "Anna Berg", "Ann Smith", "Ann Lee" (three), "Ann (home)": not "ann", "ANN", "Someone"
    assert got == {"n1", "n2", "n3", "n4", "n5", "n6"}
    r = await client.get(path, params={"all": "true", "author": "ann@"})
    assert {c["id"][:2] for c in await r.json()} == {"a2", "a3", "a4", "a5", "a6", "n5"}


async def test_serve_simulator_runs_until_cancelled(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from exporter.simulator.server import serve_simulator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = asyncio.create_task(
        serve_simulator(
            "127.0.0.1", port, seed=1, users=5, projects=10, latency_ms=0, fault_rate=0, token="t"
        )
    )
    url = f"http://127.0.0.1:{port}/api/v4/version"
    async with aiohttp.ClientSession(headers={"PRIVATE-TOKEN": "t"}) as session:
        for _ in range(100):
            try:
                async with session.get(url) as r:
                    assert r.status == 200
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("simulator did not start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}" in out and "token: t" in out


def test_history_commits_deepen_old_history_and_leave_the_truth_alone() -> None:
    now = datetime(2026, 5, 4, 12, tzinfo=UTC)
    plain = generate_org(3, users=12, projects=30, now=now)
    deep = generate_org(3, users=12, projects=30, now=now, history_commits=50)

    def truth(org: Any) -> dict[str, ExpectedUser]:
        return expected_activity(
            org, usernames=[u.username for u in org.users.values()], timezone="UTC",
            periods={"day": "00:00-24:00"}, lookback_days=30, now=now,
            extra_emails=org.extra_emails,
        )

    assert truth(deep) == truth(plain)
    window_start = now - timedelta(days=30)
    deepened = 0
    for pid, commits in plain.commits.items():
        added = {c.sha: c for c in deep.commits[pid]}.keys() - {c.sha for c in commits}
        if plain.projects[pid].forked_from_project is not None or not commits:
            assert not added
            continue
        deepened += 1
        assert len(added) == 50
        authors = {(c.author_name, c.author_email) for c in commits}
        for c in deep.commits[pid]:
            if c.sha in added:
                assert c.committed_date < window_start and (c.author_name, c.author_email) in authors
    assert deepened > 10

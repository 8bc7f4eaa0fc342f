"""GitLabApi: requests it sends and the shapes it accepts, against a real HTTP server."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from yarl import URL

from exporter.gitlab.api import (
    CommitRecord,
    GitLabApi,
    ItemRef,
    ProjectRef,
    UserDetail,
    UserRef,
    format_gitlab_datetime,
)
from exporter.gitlab.client import ApiError, GitLabClient, NotFoundError

Routes = dict[str, Any]  # raw path -> JSON body, or a list of pages
ServerFactory = Callable[..., Awaitable[RawTestServer]]


class FakeGitLab:
    """Serves fixed JSON by raw (still percent-encoded) path; lists of pages via Link."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes
        self.requests: list[URL] = []
        self.server: RawTestServer | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests.append(request.rel_url)
        route = self.routes.get(request.rel_url.raw_path)
        if route is None:
            return _json({"error": "404 Not Found"}, 404)
        if isinstance(route, Pages):
            page = int(request.query.get("page", "1"))
            headers = {}
            if page < len(route.pages):
                nxt = request.url.update_query(page=str(page + 1))
                headers["Link"] = f'<{nxt}>; rel="next"'
            return _json(route.pages[page - 1], 200, headers)
        if isinstance(route, Status):
            return _json(route.body, route.status)
        return _json(route)


@dataclasses.dataclass
class Pages:
    pages: list[list[Any]]


@dataclasses.dataclass
class Status:
    status: int
    body: Any


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def serve(
    aiohttp_raw_server: ServerFactory, session: aiohttp.ClientSession
) -> Callable[[Routes], Awaitable[tuple[GitLabApi, FakeGitLab]]]:
    async def start(routes: Routes) -> tuple[GitLabApi, FakeGitLab]:
        fake = FakeGitLab(routes)
        fake.server = await aiohttp_raw_server(fake.handle)
        client = GitLabClient(
            session,
            base_url=str(fake.server.make_url("")).rstrip("/"),
            token="t0ken",
            requests_per_second=1000.0,
            max_retries=1,
            backoff_base=0.001,
            rng=random.Random(0),
        )
        return GitLabApi(client), fake

    return start


Serve = Callable[[Routes], Awaitable[tuple[GitLabApi, FakeGitLab]]]


def project(pid: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": pid,
        "name": f"p{pid}",
        "path_with_namespace": f"alice/p{pid}",
        "namespace": {"id": 3, "name": "alice", "path": "alice", "kind": "user",
                      "full_path": "alice"},
        "default_branch": "main",
        "visibility": "private",
        "last_activity_at": "2024-05-02T10:43:19.667Z",
        "web_url": f"https://gitlab.example.com/alice/p{pid}",
    }
    body.update(overrides)
    return body


def commit(sha: str, authored: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sha,
        "short_id": sha[:8],
        "title": "change",
        "message": "change\n",
        "author_name": "Alice",
        "author_email": "alice@example.com",
        "authored_date": authored,
        "committer_name": "Alice",
        "committer_email": "alice@example.com",
        "committed_date": authored,
        "parent_ids": [],
    }
    body.update(overrides)
    return body


# --------------------------------------------------------------------------- users


async def test_find_user_exact_case_insensitive(serve: Serve) -> None:
    api, fake = await serve({
        "/api/v4/users": [
            {"id": 2, "username": "alice2", "name": "Other", "state": "active"},
            {"id": 1, "username": "Alice", "name": "Alice A", "state": "active",
             "avatar_url": "x", "web_url": "y"},
        ]
    })
    assert await api.find_user("alice") == UserRef(1, "Alice", "Alice A", "active", "y")
    assert fake.requests[0].query["username"] == "alice"


async def test_find_user_absent_is_none(serve: Serve) -> None:
    api, _ = await serve({"/api/v4/users": []})
    assert await api.find_user("nobody") is None


async def test_find_user_not_a_substring_match(serve: Serve) -> None:
    api, _ = await serve({
        "/api/v4/users": [{"id": 2, "username": "alice2", "name": "A", "state": "active"}]
    })
    assert await api.find_user("alice") is None


async def test_get_user_empty_public_email_is_none(serve: Serve) -> None:
    api, _ = await serve({
        "/api/v4/users/1": {"id": 1, "username": "alice", "name": "Alice", "state": "active",
                            "public_email": "", "bot": False, "created_at": CREATED},
        "/api/v4/users/2": {"id": 2, "username": "bob", "name": "Bob", "state": "blocked",
                            "public_email": "bob@example.com", "created_at": CREATED},
        "/api/v4/users/3": {"id": 3, "username": "carol", "name": "Carol", "state": "active",
                            "created_at": CREATED},
    })
    assert await api.get_user(1) == UserDetail(1, "alice", "Alice", "active", None)
    assert await api.get_user(2) == UserDetail(2, "bob", "Bob", "blocked", "bob@example.com")
    assert (await api.get_user(3)).public_email is None


CREATED = "2021-03-04T05:06:07.000Z"


async def test_get_user_without_profile_fields_is_a_hidden_profile(serve: Serve) -> None:
    # a private profile seen by a token that is not an admin's: the basic fields only
    # (older releases drop only created_at)
    api, _ = await serve({
        "/api/v4/users/4": {"id": 4, "username": "dora", "name": "Dora", "state": "active",
                            "locked": False, "avatar_url": None,
                            "web_url": "https://gitlab.example.com/dora"},
        "/api/v4/users/5": {"id": 5, "username": "ed", "name": "Ed", "state": "active",
                            "public_email": "", "bio": ""},
        "/api/v4/users/6": {"id": 6, "username": "fay", "name": "Fay", "state": "active",
                            "public_email": "", "created_at": CREATED},
    })
    assert (await api.get_user(4)).profile_hidden
    assert (await api.get_user(5)).profile_hidden
    assert not (await api.get_user(6)).profile_hidden


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "name": "Alice", "state": "active"},  # id missing
        {"id": None, "username": "alice", "name": "Alice", "state": "active"},
        {"id": "1", "username": "alice", "name": "Alice", "state": "active"},
        {"id": True, "username": "alice", "name": "Alice", "state": "active"},
        {"id": 1, "username": "alice", "name": None, "state": "active"},
        {"id": 1, "username": "alice", "name": "Alice", "state": "active", "public_email": 5},
        ["not", "an", "object"],
    ],
)
async def test_get_user_bad_shape_is_api_error(serve: Serve, body: Any) -> None:
    api, _ = await serve({"/api/v4/users/1": body})
    with pytest.raises(ApiError) as info:
        await api.get_user(1)
    assert info.value.reason == "api_error"
    assert info.value.endpoint == "/users/:id"


async def test_get_user_not_found_passes_through(serve: Serve) -> None:
    api, _ = await serve({"/api/v4/users/9": Status(404, {"message": "404 User Not Found"})})
    with pytest.raises(NotFoundError, match="404 User Not Found"):
        await api.get_user(9)


# --------------------------------------------------------------------------- projects


async def test_user_projects_paginated_and_trimmed(serve: Serve) -> None:
    fork = project(
        12,
        path_with_namespace="alice/fork",
        forked_from_project={"id": 99, "path_with_namespace": "team/upstream"},
        last_activity_at=None,
    )
    api, fake = await serve({"/api/v4/users/5/projects": Pages([[project(11)], [fork]])})
    projects = await api.user_projects(5)
    assert projects == [
        ProjectRef(11, "alice/p11", "user", "alice",
                   datetime(2024, 5, 2, 10, 43, 19, 667000, tzinfo=UTC), None),
        ProjectRef(12, "alice/fork", "user", "alice", None, 99),
    ]
    assert [r.query["per_page"] for r in fake.requests] == ["100", "100"]


async def test_contributed_projects_group_namespace_full_path(serve: Serve) -> None:
    group_project = project(
        20,
        path_with_namespace="acme/platform/api",
        namespace={"id": 7, "name": "platform", "path": "platform", "kind": "group",
                   "full_path": "acme/platform"},
    )
    api, fake = await serve({"/api/v4/users/5/contributed_projects": [group_project]})
    (ref,) = await api.contributed_projects(5)
    assert (ref.namespace_kind, ref.namespace_path) == ("group", "acme/platform")
    assert fake.requests[0].path == "/api/v4/users/5/contributed_projects"


@pytest.mark.parametrize(
    "bad",
    [
        "just a string",
        project(1, namespace=None),
        project(1, namespace={"kind": "user"}),  # neither full_path nor path
        project(1, path_with_namespace=None),
        project(1, last_activity_at="yesterday"),
        project(1, forked_from_project={"path": "x"}),
    ],
)
async def test_project_list_bad_item_is_api_error(serve: Serve, bad: Any) -> None:
    api, _ = await serve({"/api/v4/users/5/projects": [project(2), bad]})
    with pytest.raises(ApiError, match="unexpected response shape") as info:
        await api.user_projects(5)
    assert info.value.endpoint == "/users/:id/projects"


# --------------------------------------------------------------------------- events


async def test_pushed_project_ids(serve: Serve) -> None:
    def push(pid: int) -> dict[str, Any]:
        return {"project_id": pid, "action_name": "pushed to", "author_username": "alice",
                "created_at": "2024-05-03T08:00:00.000Z",
                "push_data": {"commit_count": 1, "ref": "main", "ref_type": "branch"}}

    api, fake = await serve({
        "/api/v4/users/5/events": Pages([[push(1), push(2)], [], [push(2), push(3)]])
    })
    assert await api.pushed_project_ids(5, date(2024, 4, 30)) == {1, 2, 3}
    first = fake.requests[0].query
    assert (first["action"], first["after"], first["per_page"]) == ("pushed", "2024-04-30", "100")
    assert len(fake.requests) == 3  # an empty page in the middle does not end the list


async def test_pushed_event_without_project_is_api_error(serve: Serve) -> None:
    api, _ = await serve({"/api/v4/users/5/events": [{"project_id": None}]})
    with pytest.raises(ApiError):
        await api.pushed_project_ids(5, date(2024, 4, 30))


# --------------------------------------------------------------------------- commits


async def test_project_commits_dates_with_and_without_milliseconds(serve: Serve) -> None:
    api, fake = await serve({
        "/api/v4/projects/7/repository/commits": Pages([
            [commit("a" * 40, "2016-09-20T09:26:24.000-07:00"),
             commit("b" * 40, "2012-09-20T09:06:12+03:00")],
            [],
        ])
    })
    since = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    commits = await api.project_commits(7, since)
    assert commits == [
        CommitRecord("a" * 40, "Alice", "alice@example.com",
                     datetime(2016, 9, 20, 9, 26, 24, tzinfo=timezone(timedelta(hours=-7)))),
        CommitRecord("b" * 40, "Alice", "alice@example.com",
                     datetime(2012, 9, 20, 9, 6, 12, tzinfo=timezone(timedelta(hours=3)))),
    ]
    assert commits[0].authored_date.utcoffset() == timedelta(hours=-7)  # own offset kept
    query = fake.requests[0].query
    assert query["all"] == "true"
    assert query["since"] == "2024-05-01T06:30:00Z"
    assert query["per_page"] == "100"
    assert fake.requests[0].raw_query_string.count("since=2024-05-01T06:30:00Z") == 1


@pytest.mark.parametrize(
    "bad",
    [
        commit("c" * 40, "2016-09-20 09:26:24"),
        commit("c" * 40, "2016-09-20T09:26:24"),  # no offset
        commit("c" * 40, "2016-09-20T09:26:24Z", author_email=None),
        {"id": "c" * 40},
    ],
)
async def test_project_commits_bad_shape(serve: Serve, bad: Any) -> None:
    api, _ = await serve({"/api/v4/projects/7/repository/commits": [bad]})
    with pytest.raises(ApiError) as info:
        await api.project_commits(7, datetime(2024, 5, 1, tzinfo=UTC))
    assert info.value.endpoint == "/projects/:id/repository/commits"


async def test_project_commits_refuses_naive_since(serve: Serve) -> None:
    api, fake = await serve({})
    with pytest.raises(ValueError):
        await api.project_commits(7, datetime(2024, 5, 1))
    assert fake.requests == []


def test_format_gitlab_datetime() -> None:
    value = datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=timezone(timedelta(hours=-2)))
    assert format_gitlab_datetime(value) == "2024-01-02T05:04:05Z"


# --------------------------------------------------------------------------- groups


async def test_group_members_path_is_encoded_on_the_wire(serve: Serve) -> None:
    members = [
        {"id": 1, "username": "alice", "name": "A", "state": "active", "access_level": 30},
        {"id": 2, "username": "bob", "name": "B", "state": "active", "access_level": 40},
    ]
    api, fake = await serve({
        "/api/v4/groups/acme%2Fplatform%2Fcore/members/all": Pages([members[:1], members[1:]])
    })
    assert await api.group_members("acme/platform/core") == ["alice", "bob"]
    assert [r.raw_path for r in fake.requests] == [
        "/api/v4/groups/acme%2Fplatform%2Fcore/members/all",
        "/api/v4/groups/acme%2Fplatform%2Fcore/members/all",  # the Link next kept it too
    ]


async def test_group_members_unknown_group(serve: Serve) -> None:
    api, _ = await serve({})
    with pytest.raises(NotFoundError):
        await api.group_members("acme/none")


# --------------------------------------------------------------------------- MRs, issues


async def test_merge_requests_and_issues(serve: Serve) -> None:
    mr = {"id": 100, "iid": 1, "project_id": 7, "state": "merged",
          "created_at": "2024-05-02T10:00:00.000Z", "merged_at": "2024-05-03T10:00:00.000Z",
          "author": {"username": "alice"}}
    issue = {"id": 200, "iid": 4, "project_id": 8, "state": "closed",
             "created_at": "2024-05-04T10:00:00Z", "closed_at": None,
             "author": {"username": "alice"}}
    api, fake = await serve({"/api/v4/merge_requests": [mr], "/api/v4/issues": [issue]})
    after = datetime(2024, 5, 1, tzinfo=UTC)
    assert await api.merge_requests("alice", after) == [
        ItemRef(100, 7, "merged", datetime(2024, 5, 2, 10, tzinfo=UTC))
    ]
    assert await api.issues("alice", after) == [
        ItemRef(200, 8, "closed", datetime(2024, 5, 4, 10, tzinfo=UTC))
    ]
    for request in fake.requests:
        assert request.query["scope"] == "all"
        assert request.query["author_username"] == "alice"
        assert request.query["created_after"] == "2024-05-01T00:00:00Z"


async def test_merge_request_missing_state_is_api_error(serve: Serve) -> None:
    api, _ = await serve({"/api/v4/merge_requests": [
        {"id": 1, "project_id": 7, "created_at": "2024-05-02T10:00:00Z"}
    ]})
    with pytest.raises(ApiError, match="'state'"):
        await api.merge_requests("alice", datetime(2024, 5, 1, tzinfo=UTC))


def test_records_are_frozen_and_slotted() -> None:
    ref = UserRef(1, "a", "A", "active")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.id = 2  # type: ignore[misc]
    for cls in (UserRef, UserDetail, ProjectRef, CommitRecord, ItemRef):
        assert "__slots__" in vars(cls)

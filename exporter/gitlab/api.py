"""Typed calls for the GitLab endpoints the scanner uses.

Every response is checked for the fields we keep: a missing field, a wrong type or a
``null`` where a value is required raises :class:`~exporter.gitlab.errors.ApiError`
(reason ``api_error``), never ``KeyError``/``TypeError``. Every string kept is made
valid Unicode of bounded length here, where it enters (:func:`exporter.text.valid_text`):
a lone surrogate from a broken GitLab cannot break a page, a file or a log line later.
Only the fields listed on the dataclasses are kept, so large scans hold little memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from exporter.gitlab.client import GitLabClient
from exporter.gitlab.errors import ApiError
from exporter.periods import parse_gitlab_datetime
from exporter.text import valid_text

__all__ = [
    "Branch",
    "CommitRecord",
    "GitLabApi",
    "ItemRef",
    "ProjectRef",
    "Push",
    "UserDetail",
    "UserRef",
    "format_gitlab_datetime",
]


@dataclass(frozen=True, slots=True)
class UserRef:
    id: int
    username: str
    name: str
    state: str
    #: the profile's address, on GitLab's external host (which may differ from the
    #: configured URL's)
    web_url: str | None = None


@dataclass(frozen=True, slots=True)
class UserDetail:
    id: int
    username: str
    name: str
    state: str
    public_email: str | None
    web_url: str = ""  # the profile page
    #: GitLab left out the profile fields (a private profile, or a blocked or unconfirmed
    #: user, seen by a token that is not an admin's): the user's lists are hidden too
    profile_hidden: bool = False


@dataclass(frozen=True, slots=True)
class ProjectRef:
    id: int
    path_with_namespace: str
    namespace_kind: str
    namespace_path: str
    last_activity_at: datetime | None
    forked_from_id: int | None


@dataclass(frozen=True, slots=True)
class CommitRecord:
    sha: str
    author_name: str
    author_email: str
    authored_date: datetime
    # what ``since`` filters on; not part of a commit's identity
    committed_date: datetime | None = field(default=None, compare=False)
    parent_ids: tuple[str, ...] = field(default=(), compare=False)

    @property
    def merge(self) -> bool:
        """Two or more parents."""
        return len(self.parent_ids) >= 2


@dataclass(frozen=True, slots=True)
class Branch:
    """A branch and its head commit."""

    name: str
    head: str
    committed_date: datetime


@dataclass(frozen=True, slots=True)
class Push:
    """A push event: when, and the newest commit it brought (``None``: bulk or deletion)."""

    project_id: int
    created_at: datetime
    head: str | None
    removed: bool = False
    #: a tag push: ``head`` is the tag (an annotated tag's object), not a commit
    tag: bool = False
    ref: str | None = None
    #: the ref's head before the push (``None``: a new ref, or a bulk push)
    base: str | None = None


@dataclass(frozen=True, slots=True)
class ItemRef:
    """A merge request or an issue."""

    id: int
    project_id: int
    state: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuthoredItem:
    """A merge request or an issue, with its author's username."""

    author: str
    item: ItemRef


_CONVERT_TURN = 500
"""Items of a long list in one answer converted per turn of the event loop."""

EVENTS_PAGE_CAP = 101
"""GitLab counts at most 10,001 events: ``rel="next"`` ends after page 101 at 100 a page."""


def format_gitlab_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (``2024-05-01T08:00:00Z``); naive datetimes are refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Shape:
    """Field readers that turn a bad shape into an ApiError naming the endpoint and field."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def fail(self, what: str) -> ApiError:
        return ApiError(f"unexpected response shape: {what}", endpoint=self.endpoint)

    def obj(self, value: Any, what: str = "item") -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} is {type(value).__name__}, expected an object")
        return value

    def req_list(self, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"body is {type(value).__name__}, expected a list")
        return value

    def req_int(self, obj: Mapping[str, Any], key: str) -> int:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"field {key!r} is {_kind(value)}, expected an integer")
        return value

    def opt_int(self, obj: Mapping[str, Any], key: str) -> int | None:
        return None if obj.get(key) is None else self.req_int(obj, key)

    def req_str(self, obj: Mapping[str, Any], key: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str):
            raise self.fail(f"field {key!r} is {_kind(value)}, expected a string")
        return valid_text(value)

    def opt_str(self, obj: Mapping[str, Any], key: str) -> str | None:
        return None if obj.get(key) is None else self.req_str(obj, key)

    def req_datetime(self, obj: Mapping[str, Any], key: str) -> datetime:
        text = self.req_str(obj, key)
        try:
            return parse_gitlab_datetime(text)
        except ValueError:
            raise self.fail(f"field {key!r} is not a timestamp with an offset") from None

    def opt_datetime(self, obj: Mapping[str, Any], key: str) -> datetime | None:
        return None if obj.get(key) is None else self.req_datetime(obj, key)


def _kind(value: Any) -> str:
    return "missing or null" if value is None else type(value).__name__


def _id(value: int, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int")
    return str(value)


class GitLabApi:
    """The endpoints the scanner needs, returning small validated records."""

    def __init__(self, client: GitLabClient) -> None:
        self._client = client

    async def find_user(self, username: str) -> UserRef | None:
        """The user whose username equals ``username`` (case-insensitively), or ``None``."""
        endpoint = "/users"
        shape = _Shape(endpoint)
        body = await self._client.get_json("/users", {"username": username}, endpoint=endpoint)
        wanted = username.strip().casefold()
        for raw in shape.req_list(body):
            user = self._user_ref(shape, raw)
            if user.username.casefold() == wanted:
                return user
        return None

    async def get_user(self, user_id: int) -> UserDetail:
        endpoint = "/users/:id"
        shape = _Shape(endpoint)
        body = await self._client.get_json(f"/users/{_id(user_id, 'user_id')}", endpoint=endpoint)
        obj = shape.obj(body, "body")
        public_email = shape.opt_str(obj, "public_email")
        return UserDetail(
            id=shape.req_int(obj, "id"),
            username=shape.req_str(obj, "username"),
            name=shape.req_str(obj, "name"),
            state=shape.req_str(obj, "state"),
            public_email=public_email.strip() or None if public_email is not None else None,
            web_url=shape.opt_str(obj, "web_url") or "",
            # every profile GitLab shows carries created_at (whatever else it hides)
            profile_hidden="created_at" not in obj,
        )

    async def user_projects(self, user_id: int) -> list[ProjectRef]:
        """Projects in the user's personal namespace."""
        return await self._projects(
            f"/users/{_id(user_id, 'user_id')}/projects", "/users/:id/projects"
        )

    async def contributed_projects(self, user_id: int) -> list[ProjectRef]:
        """Projects with the user's contributions in the last year."""
        return await self._projects(
            f"/users/{_id(user_id, 'user_id')}/contributed_projects",
            "/users/:id/contributed_projects",
        )

    async def pushed_project_ids(self, user_id: int, after: date) -> set[int]:
        """Ids of projects the user pushed to after the day ``after`` (that day excluded)."""
        endpoint = "/users/:id/events"
        shape = _Shape(endpoint)
        params = {"action": "pushed", "after": after.isoformat()}
        ids: set[int] = set()
        async for raw in self._client.paginate(
            f"/users/{_id(user_id, 'user_id')}/events", params, endpoint=endpoint
        ):
            ids.add(shape.req_int(shape.obj(raw, "event"), "project_id"))
        return ids

    async def pushes(self, user_id: int, after: date) -> list[Push]:
        """The user's push events after the day ``after`` (that day excluded).

        GitLab counts events only up to :data:`EVENTS_PAGE_CAP` pages (newest first): when
        a list reaches it, the older events are asked for again with ``before``, from two
        days after the oldest one seen (the day ends in the instance's time zone), until
        a list ends before the cap.
        """
        endpoint = "/users/:id/events"
        shape = _Shape(endpoint)
        pushes: dict[int, Push] = {}
        before: date | None = None
        pages: list[None] = []
        while True:
            params = {"action": "pushed", "after": after.isoformat()}
            if before is not None:
                params["before"] = before.isoformat()
            pages.clear()
            oldest: datetime | None = None
            async for raw in self._client.paginate(
                f"/users/{_id(user_id, 'user_id')}/events",
                params,
                endpoint=endpoint,
                on_page=lambda: pages.append(None),
            ):
                obj = shape.obj(raw, "event")
                data = obj.get("push_data")
                data = shape.obj(data, "field 'push_data'") if data is not None else {}
                push = Push(
                    project_id=shape.req_int(obj, "project_id"),
                    created_at=shape.req_datetime(obj, "created_at"),
                    head=shape.opt_str(data, "commit_to"),
                    removed=data.get("action") == "removed",
                    tag=data.get("ref_type") == "tag",
                    ref=shape.opt_str(data, "ref"),
                    base=shape.opt_str(data, "commit_from"),
                )
                pushes[shape.req_int(obj, "id")] = push
                oldest = push.created_at if oldest is None else min(oldest, push.created_at)
            if len(pages) < EVENTS_PAGE_CAP or oldest is None:
                break
            earlier = oldest.astimezone(UTC).date() + timedelta(days=2)
            if before is not None and earlier >= before:
                raise ApiError(
                    f"more than {EVENTS_PAGE_CAP} pages of push events within two days",
                    endpoint=endpoint,
                )
            before = earlier
        return list(pushes.values())

    async def project_commits(self, project_id: int, since: datetime) -> list[CommitRecord]:
        """Commits of every ref (``all=true``: GitLab's hidden refs too) whose committer
        date is at or after ``since``."""
        return await self._commits(
            project_id, {"all": "true", "since": format_gitlab_datetime(since)}
        )

    async def branch_commits(
        self, project_id: int, branch: str, since: datetime
    ) -> list[CommitRecord]:
        """Commits reachable from ``branch`` whose committer date is at or after ``since``."""
        return await self._commits(
            project_id, {"ref_name": branch, "since": format_gitlab_datetime(since)}
        )

    async def branches(self, project_id: int) -> list[Branch]:
        """The project's branches with their head commits."""
        endpoint = "/projects/:id/repository/branches"
        shape = _Shape(endpoint)
        branches: list[Branch] = []
        async for raw in self._client.paginate(
            f"/projects/{_id(project_id, 'project_id')}/repository/branches", endpoint=endpoint
        ):
            obj = shape.obj(raw, "branch")
            head = shape.obj(obj.get("commit"), "field 'commit'")
            branches.append(
                Branch(
                    name=shape.req_str(obj, "name"),
                    head=shape.req_str(head, "id"),
                    committed_date=shape.req_datetime(head, "committed_date"),
                )
            )
        return branches

    async def compare(self, project_id: int, base: str, head: str) -> list[CommitRecord]:
        """The commits ``head`` has that ``base`` (or their merge base) has not."""
        endpoint = "/projects/:id/repository/compare"
        shape = _Shape(endpoint)
        body = await self._client.get_json(
            f"/projects/{_id(project_id, 'project_id')}/repository/compare",
            {"from": base, "to": head},
            endpoint=endpoint,
        )
        obj = shape.obj(body, "body")
        raw = shape.req_list(obj.get("commits"))
        commits: list[CommitRecord] = []
        for index in range(len(raw)):
            item, raw[index] = raw[index], None  # freed as it goes, not all at once
            commits.append(_commit_record(shape, item))
            if index % _CONVERT_TURN == _CONVERT_TURN - 1:
                await asyncio.sleep(0)  # a long list takes turns with the rest
        return commits

    async def _commits(self, project_id: int, params: Mapping[str, str]) -> list[CommitRecord]:
        endpoint = "/projects/:id/repository/commits"
        shape = _Shape(endpoint)
        commits: list[CommitRecord] = []
        async for raw in self._client.paginate(
            f"/projects/{_id(project_id, 'project_id')}/repository/commits",
            params,
            endpoint=endpoint,
        ):
            commits.append(_commit_record(shape, raw))
        return commits

    async def group_members(self, full_path: str) -> list[str]:
        """Usernames of direct and inherited members of the group at ``full_path``."""
        endpoint = "/groups/:id/members/all"
        shape = _Shape(endpoint)
        group = quote(full_path.strip().strip("/"), safe="")
        usernames: list[str] = []
        async for raw in self._client.paginate(
            f"/groups/{group}/members/all", endpoint=endpoint
        ):
            usernames.append(shape.req_str(shape.obj(raw, "member"), "username"))
        return usernames

    async def merge_requests(self, username: str, created_after: datetime) -> list[ItemRef]:
        """Merge requests authored by ``username`` created after ``created_after``."""
        return await self._items("/merge_requests", username, created_after)

    async def issues(self, username: str, created_after: datetime) -> list[ItemRef]:
        """Issues authored by ``username`` created after ``created_after``."""
        return await self._items("/issues", username, created_after)

    async def authored_feed(
        self,
        path: str,
        *,
        created_after: datetime,
        updated_after: datetime | None,
        max_pages: int,
    ) -> list[AuthoredItem]:
        """Every merge request (``path`` ``/merge_requests``) or issue (``/issues``) the
        token can see created after ``created_after`` (and, if given, updated after
        ``updated_after``), whoever wrote it.

        Raises :class:`~exporter.gitlab.errors.PageBudgetExceeded` after the first page
        when the list has more than ``max_pages`` pages.
        """
        endpoint = path
        shape = _Shape(endpoint)
        params = {"scope": "all", "created_after": format_gitlab_datetime(created_after)}
        if updated_after is not None:
            params["updated_after"] = format_gitlab_datetime(updated_after)
        items: list[AuthoredItem] = []
        async for raw in self._client.paginate(
            path, params, endpoint=endpoint, max_pages=max_pages
        ):
            obj = shape.obj(raw)
            author = shape.obj(obj.get("author"), "field 'author'")
            items.append(
                AuthoredItem(author=shape.req_str(author, "username"), item=_item_ref(shape, obj))
            )
        return items

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _user_ref(shape: _Shape, raw: Any) -> UserRef:
        obj = shape.obj(raw, "user")
        return UserRef(
            id=shape.req_int(obj, "id"),
            username=shape.req_str(obj, "username"),
            name=shape.req_str(obj, "name"),
            state=shape.req_str(obj, "state"),
            web_url=obj.get("web_url") if isinstance(obj.get("web_url"), str) else None,
        )

    async def _projects(self, path: str, endpoint: str) -> list[ProjectRef]:
        shape = _Shape(endpoint)
        projects: list[ProjectRef] = []
        async for raw in self._client.paginate(path, endpoint=endpoint):
            obj = shape.obj(raw, "project")
            namespace = shape.obj(obj.get("namespace"), "field 'namespace'")
            full_path = shape.opt_str(namespace, "full_path")
            fork = obj.get("forked_from_project")
            projects.append(
                ProjectRef(
                    id=shape.req_int(obj, "id"),
                    path_with_namespace=shape.req_str(obj, "path_with_namespace"),
                    namespace_kind=shape.req_str(namespace, "kind"),
                    namespace_path=(
                        full_path if full_path is not None else shape.req_str(namespace, "path")
                    ),
                    last_activity_at=shape.opt_datetime(obj, "last_activity_at"),
                    forked_from_id=(
                        None
                        if fork is None
                        else shape.req_int(shape.obj(fork, "field 'forked_from_project'"), "id")
                    ),
                )
            )
        return projects

    async def _items(self, path: str, username: str, created_after: datetime) -> list[ItemRef]:
        endpoint = path
        shape = _Shape(endpoint)
        params = {
            "scope": "all",
            "author_username": username,
            "created_after": format_gitlab_datetime(created_after),
        }
        items: list[ItemRef] = []
        async for raw in self._client.paginate(path, params, endpoint=endpoint):
            items.append(_item_ref(shape, shape.obj(raw)))
        return items


def _commit_record(shape: _Shape, raw: Any) -> CommitRecord:
    obj = shape.obj(raw, "commit")
    parents = obj.get("parent_ids")
    if parents is None:
        parents = []
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise shape.fail("field 'parent_ids' is not a list of SHAs")
    return CommitRecord(
        sha=shape.req_str(obj, "id"),
        author_name=shape.req_str(obj, "author_name"),
        author_email=shape.req_str(obj, "author_email"),
        authored_date=shape.req_datetime(obj, "authored_date"),
        committed_date=shape.opt_datetime(obj, "committed_date"),
        parent_ids=tuple(parents),
    )


def _item_ref(shape: _Shape, obj: Mapping[str, Any]) -> ItemRef:
    return ItemRef(
        id=shape.req_int(obj, "id"),
        project_id=shape.req_int(obj, "project_id"),
        state=shape.req_str(obj, "state"),
        created_at=shape.req_datetime(obj, "created_at"),
    )

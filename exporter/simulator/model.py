"""The simulated organisation: plain dataclasses plus the indexes the server needs.

Everything GitLab would serve lives here. The generator fills it, the server renders it,
and the ground truth reads it. Mutation helpers keep the indexes consistent; code that
changes the containers directly must call :meth:`Org.reindex` afterwards.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

NamespaceKind = Literal["user", "group"]
MergeRequestState = Literal["opened", "closed", "locked", "merged"]
IssueState = Literal["opened", "closed"]

#: GitLab access levels.
GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50


@dataclass(slots=True)
class User:
    id: int
    username: str
    name: str
    state: str = "active"
    public_email: str = ""
    private_email: str = ""
    #: ``(author_name, author_email)`` pairs this person commits with (generator input).
    commit_identities: list[tuple[str, str]] = field(default_factory=list)
    #: Emails GitLab does not know (an old company address): passed to the exporter
    #: as the configured ``users[].emails``.
    extra_emails: list[str] = field(default_factory=list)
    bot: bool = False
    created_at: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    #: profile set to private: a non-admin token sees only the basic fields on
    #: ``/users/:id`` and ``[]`` for the user's events, projects and contributed projects
    private_profile: bool = False
    #: usernames the user had before being renamed (oldest first); their no-reply
    #: commit emails keep the old name
    previous_usernames: list[str] = field(default_factory=list)

    @property
    def profile_hidden(self) -> bool:
        """A non-admin token cannot read this user's profile and activity lists."""
        return self.private_profile or self.state != "active"


@dataclass(slots=True)
class Group:
    id: int
    name: str
    path: str
    full_path: str
    parent_id: int | None = None
    #: direct members: user id -> access level
    members: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Namespace:
    id: int
    name: str
    path: str
    kind: NamespaceKind
    full_path: str


@dataclass(slots=True)
class Project:
    id: int
    name: str
    path: str
    namespace: Namespace
    default_branch: str = "main"
    visibility: str = "internal"
    last_activity_at: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    created_at: datetime = datetime(2020, 1, 1, tzinfo=UTC)
    archived: bool = False
    empty_repo: bool = False
    forked_from_project: int | None = None
    web_url: str = ""
    #: the token sees the project but not its code (a Guest on a private project, SAML
    #: SSO or IP restrictions): a non-admin token gets 403 on the repository and does not
    #: see push events to it
    code_forbidden: bool = False
    #: no repository at all (disabled or never created): ``404 Repository Not Found``
    no_repository: bool = False
    #: the repository always fails (a broken Gitaly shard): 500 on every commit read
    broken: bool = False

    @property
    def path_with_namespace(self) -> str:
        return f"{self.namespace.full_path}/{self.path}"

    @property
    def name_with_namespace(self) -> str:
        return f"{self.namespace.name} / {self.name}"


@dataclass(slots=True)
class Commit:
    sha: str
    title: str
    message: str
    author_name: str
    author_email: str
    authored_date: datetime  # aware, in the author's own offset
    committed_date: datetime  # aware, in the committer's own offset
    committer_name: str = ""
    committer_email: str = ""
    millis: bool = False  # render dates with milliseconds
    #: the branch the commit was made on, or a hidden ref (``refs/keep-around/...``,
    #: ``refs/merge-requests/IID/head`` or ``.../merge``) that alone keeps it
    branch: str = "main"
    parent_ids: tuple[str, ...] = ()
    #: position in its branch's history after the generated commits (``add_commits``);
    #: within one ``seq`` the history follows the committer dates
    seq: int = 0

    @property
    def short_id(self) -> str:
        return self.sha[:8]

    @property
    def hidden(self) -> bool:
        """Reachable only from one of GitLab's hidden refs, not from any branch."""
        return self.branch.startswith(HIDDEN_REF_PREFIX)

    @property
    def is_merge(self) -> bool:
        return len(self.parent_ids) >= 2

    @property
    def history_key(self) -> tuple[int, float, str]:
        return (self.seq, self.committed_date.timestamp(), self.sha)


HIDDEN_REF_PREFIX = "refs/"
MERGE_REF = "refs/merge-requests/{iid}/merge"


@dataclass(slots=True)
class Event:
    """A user's contribution event; ``action`` as GitLab's ``action=`` filter names it."""

    id: int
    user_id: int
    project_id: int
    created_at: datetime
    action: str = "pushed"  # pushed | created | commented | merged | closed ...
    action_name: str = "pushed to"
    push_data: dict[str, Any] | None = None
    #: not visible to the token (e.g. a private project): cut from a page after paging
    hidden: bool = False


def _latest(first: datetime, *others: datetime | None) -> datetime:
    return max((first, *(d for d in others if d is not None)))


@dataclass(slots=True)
class MergeRequest:
    id: int
    iid: int
    project_id: int
    state: MergeRequestState
    created_at: datetime
    author: str  # username
    assignee: str | None = None
    merged_at: datetime | None = None
    closed_at: datetime | None = None
    title: str = ""
    #: last change; ``None``: the latest of created, merged and closed
    updated_at: datetime | None = None

    @property
    def last_update(self) -> datetime:
        return self.updated_at or _latest(self.created_at, self.merged_at, self.closed_at)


@dataclass(slots=True)
class Issue:
    id: int
    iid: int
    project_id: int
    state: IssueState
    created_at: datetime
    author: str  # username
    assignee: str | None = None
    closed_at: datetime | None = None
    title: str = ""
    #: last change; ``None``: the latest of created and closed
    updated_at: datetime | None = None

    @property
    def last_update(self) -> datetime:
        return self.updated_at or _latest(self.created_at, self.closed_at)


@dataclass
class Org:
    """A whole simulated GitLab instance."""

    now: datetime
    host: str = "gitlab.example.com"
    users: dict[int, User] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    projects: dict[int, Project] = field(default_factory=dict)
    #: project id -> commits (any order; kept sorted newest committed first by reindex)
    commits: dict[int, list[Commit]] = field(default_factory=dict)
    #: user id -> events (kept sorted newest first by reindex)
    events: dict[int, list[Event]] = field(default_factory=dict)
    #: user id -> project ids GitLab lists in /users/:id/contributed_projects
    contributed: dict[int, list[int]] = field(default_factory=dict)
    merge_requests: list[MergeRequest] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    #: ``gitlab.time_zone``: the day ends of the events' ``after``/``before`` are taken in it
    time_zone: str = "UTC"
    #: GitLab counts at most this many events: ``rel="next"`` ends there
    events_cap: int = 10_001

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("Org.now must be an aware datetime")
        self.reindex()

    # ----------------------------------------------------------------- indexes
    def reindex(self, *, commits: bool = True) -> None:
        """Rebuild every lookup index; call after changing the containers directly.

        ``commits=False`` keeps the commit order and indexes (the costly part).
        """
        self._by_username: dict[str, User] = {u.username.casefold(): u for u in self.users.values()}
        self._project_by_path: dict[str, Project] = {
            p.path_with_namespace.casefold(): p for p in self.projects.values()
        }
        self._group_by_path: dict[str, Group] = {
            g.full_path.casefold(): g for g in self.groups.values()
        }
        self._personal: dict[int, list[int]] = {}
        self._group_projects: dict[int, list[int]] = {}
        for p in sorted(self.projects.values(), key=lambda p: p.id):
            ns = p.namespace
            if ns.kind == "user":
                owner = self._by_username.get(ns.path.casefold())
                if owner is not None:
                    self._personal.setdefault(owner.id, []).append(p.id)
            else:
                self._group_projects.setdefault(ns.id, []).append(p.id)
        if commits or not hasattr(self, "_commit_keys"):
            self._commit_keys: dict[int, list[float]] = {}
            self._default_branch_commits: dict[int, list[Commit]] = {}
            for pid in list(self.commits):
                self._sort_commits(pid)
        for evs in self.events.values():
            evs.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        self._mrs_by_author: dict[str, list[MergeRequest]] = {}
        for mr in self.merge_requests:
            self._mrs_by_author.setdefault(mr.author.casefold(), []).append(mr)
        self._issues_by_author: dict[str, list[Issue]] = {}
        for issue in self.issues:
            self._issues_by_author.setdefault(issue.author.casefold(), []).append(issue)

    def _sort_commits(self, project_id: int) -> None:
        commits = self.commits[project_id]
        # negated timestamps ascending = newest first; ties by SHA for a stable order
        keyed = sorted((-c.committed_date.timestamp(), c.sha, i) for i, c in enumerate(commits))
        commits[:] = [commits[i] for _, _, i in keyed]
        self._commit_keys[project_id] = [k for k, _, _ in keyed]
        default = self.projects[project_id].default_branch if project_id in self.projects else ""
        self._default_branch_commits[project_id] = [c for c in commits if c.branch == default]

    # ----------------------------------------------------------------- lookups
    def user_by_username(self, username: str) -> User | None:
        return self._by_username.get(username.casefold())

    def project_by_path(self, full_path: str) -> Project | None:
        return self._project_by_path.get(full_path.casefold())

    def group_by_path(self, full_path: str) -> Group | None:
        return self._group_by_path.get(full_path.casefold())

    def personal_project_ids(self, user_id: int) -> list[int]:
        return self._personal.get(user_id, [])

    def group_project_ids(self, group_id: int) -> list[int]:
        return self._group_projects.get(group_id, [])

    def group_ancestry(self, group_id: int) -> list[Group]:
        """The group and its ancestors, nearest first."""
        chain: list[Group] = []
        current: int | None = group_id
        while current is not None and current in self.groups and len(chain) < 32:
            g = self.groups[current]
            chain.append(g)
            current = g.parent_id
        return chain

    def group_members_all(self, group_id: int) -> dict[int, int]:
        """Direct and inherited members: user id -> highest access level."""
        members: dict[int, int] = {}
        for g in self.group_ancestry(group_id):
            for uid, level in g.members.items():
                if uid in self.users:
                    members[uid] = max(level, members.get(uid, 0))
        return members

    def commits_between(
        self,
        project_id: int,
        since: datetime | None,
        until: datetime | None,
        *,
        all_branches: bool = True,
    ) -> list[Commit]:
        """Commits whose *committed* date lies in [since, until], newest first."""
        if not all_branches:
            default = self._default_branch_commits.get(project_id, [])
            return [
                c
                for c in default
                if (since is None or c.committed_date >= since)
                and (until is None or c.committed_date <= until)
            ]
        commits = self.commits.get(project_id, [])
        keys = self._commit_keys.get(project_id, [])
        lo = 0 if until is None else bisect.bisect_left(keys, -until.timestamp())
        hi = len(commits) if since is None else bisect.bisect_right(keys, -since.timestamp())
        return commits[lo:hi]

    # ---------------------------------------------------------------- branches
    def _own_histories(self, project_id: int) -> dict[str, list[Commit]]:
        """Per ref (branch or hidden ref): the commits made on it, oldest first.

        Computed from the commit list each time: tests change it directly."""
        refs: dict[str, list[Commit]] = {}
        for c in self.commits.get(project_id, []):
            refs.setdefault(c.branch, []).append(c)
        for own in refs.values():
            own.sort(key=lambda c: c.history_key)
        return refs

    def branches(self, project_id: int) -> dict[str, Commit]:
        """Branch name -> head commit (hidden refs are not branches)."""
        return {
            name: own[-1]
            for name, own in sorted(self._own_histories(project_id).items())
            if own and not name.startswith(HIDDEN_REF_PREFIX)
        }

    def _history(self, project_id: int, ref: str, upto: Commit | None = None) -> list[Commit]:
        """Commits reachable from ``ref`` (or from its commit ``upto``), oldest first.

        A branch other than the default one (and a hidden ref) starts from the default
        branch's history just before its own first commit.
        """
        own_refs = self._own_histories(project_id)
        own = own_refs.get(ref, [])
        if upto is not None:
            own = [c for c in own if c.history_key <= upto.history_key]
        project = self.projects.get(project_id)
        default = project.default_branch if project is not None else "main"
        if ref == default or not own:
            return list(own)
        base = own[0].history_key
        trunk = [c for c in own_refs.get(default, []) if c.history_key < base]
        return trunk + own

    def parents(self, project_id: int) -> dict[str, tuple[str, ...]]:
        """Each commit's ``parent_ids`` as its history has them: the commit before it on
        its ref (for a branch's first commit, the default branch's commit it started
        from); a merge commit keeps its other parents."""
        out: dict[str, tuple[str, ...]] = {}
        for ref in self._own_histories(project_id):
            history = self._history(project_id, ref)
            for before, c in zip([None, *history], history, strict=False):
                if before is None:
                    out.setdefault(c.sha, c.parent_ids if c.is_merge else ())
                else:
                    others = c.parent_ids[1:] if c.is_merge else ()
                    out.setdefault(c.sha, (before.sha, *others))
        return out

    def branch_log(self, project_id: int, ref: str) -> list[Commit]:
        """``git log REF``: newest first (by history, not by date)."""
        return list(reversed(self._history(project_id, ref)))

    def resolve(self, project_id: int, ref: str) -> Commit | None:
        """A branch name or a commit SHA (a full one, or a prefix of 7+)."""
        head = self.branches(project_id).get(ref)
        if head is not None:
            return head
        if len(ref) >= 7:
            for c in self.commits.get(project_id, []):
                if c.sha.startswith(ref):
                    return c
        return None

    def reachable(self, project_id: int, commit: Commit) -> list[Commit]:
        """The commit and its ancestors, oldest first."""
        return self._history(project_id, commit.branch, upto=commit)

    def compare(self, project_id: int, base: Commit, head: Commit) -> list[Commit]:
        """``git log base..head``: reachable from ``head``, not from ``base``; oldest first."""
        known = {c.sha for c in self.reachable(project_id, base)}
        return [c for c in self.reachable(project_id, head) if c.sha not in known]

    def branch_commits(self, project_id: int) -> list[Commit]:
        """Every commit reachable from a branch (what DESIGN section 6 counts)."""
        seen: dict[str, Commit] = {}
        for name in self.branches(project_id):
            for c in self._history(project_id, name):
                seen.setdefault(c.sha, c)
        return list(seen.values())

    def merge_requests_by(self, username: str) -> list[MergeRequest]:
        return self._mrs_by_author.get(username.casefold(), [])

    def issues_by(self, username: str) -> list[Issue]:
        return self._issues_by_author.get(username.casefold(), [])

    @property
    def extra_emails(self) -> dict[str, list[str]]:
        """username -> emails unknown to GitLab (the configured ``users[].emails``)."""
        return {u.username: list(u.extra_emails) for u in self.users.values() if u.extra_emails}

    # --------------------------------------------------------------- mutations
    def delete_user(self, username: str) -> User:
        """Delete a user as GitLab does: every user endpoint answers 404 from now on.

        Their events, contributed list, group memberships, merge requests and issues go
        with them; commits stay in the repositories, and their personal projects stay
        (so other users' numbers do not change).
        """
        user = self.user_by_username(username)
        if user is None:
            raise KeyError(username)
        del self.users[user.id]
        self.events.pop(user.id, None)
        self.contributed.pop(user.id, None)
        for g in self.groups.values():
            g.members.pop(user.id, None)
        key = user.username.casefold()
        self.merge_requests = [m for m in self.merge_requests if m.author.casefold() != key]
        self.issues = [i for i in self.issues if i.author.casefold() != key]
        self.reindex(commits=False)
        return user

    def add_commits(self, project_id: int, commits: Iterable[Commit]) -> None:
        """Add commits to a project (e.g. new work between two scans)."""
        if project_id not in self.projects:
            raise KeyError(project_id)
        bucket = self.commits.setdefault(project_id, [])
        added = list(commits)
        default = self.projects[project_id].default_branch
        later = 1 + max((c.seq for c in bucket), default=0)
        for c in added:
            c.seq = max(c.seq, later)  # on top of the branch's history so far
        bucket.extend(added)
        if any(c.branch == default for c in added):
            self._regenerate_merge_refs(project_id, max(c.committed_date for c in added))
        self._sort_commits(project_id)
        if bucket:
            # last_activity_at is when something happened, never a wrong clock's future
            newest = min(self.now, max(c.committed_date for c in bucket)).astimezone(UTC)
            project = self.projects[project_id]
            project.last_activity_at = max(project.last_activity_at, newest)
            project.empty_repo = False

    def remove_commits(self, project_id: int, shas: Iterable[str]) -> None:
        """Drop commits from the project's history (a force-push, a deleted branch)."""
        gone = set(shas)
        kept = [c for c in self.commits.get(project_id, []) if c.sha not in gone]
        self.commits[project_id] = kept
        self._sort_commits(project_id)

    def _regenerate_merge_refs(self, project_id: int, when: datetime) -> None:
        """The target branch moved: GitLab re-creates every merge ref's synthetic merge commit."""
        for c in self.commits.get(project_id, []):
            if c.branch.startswith("refs/merge-requests/") and c.branch.endswith("/merge"):
                c.sha = hashlib.sha1(c.sha.encode()).hexdigest()
                c.committed_date = max(c.committed_date, when)

    def add_event(self, event: Event) -> None:
        """Add an event (e.g. a push between two scans)."""
        evs = self.events.setdefault(event.user_id, [])
        evs.append(event)
        evs.sort(key=lambda e: (e.created_at, e.id), reverse=True)

    def add_push(
        self,
        user_id: int,
        project_id: int,
        created_at: datetime,
        head: str,
        ref: str = "main",
        *,
        commit_from: str | None = None,
        commit_count: int = 1,
        ref_type: str = "branch",
    ) -> Event:
        """Add the user's push to a ref of the project: ``commit_count`` commits from
        ``commit_from`` (the old head; ``None``: a new ref) up to ``head`` (for an annotated
        tag, the tag object)."""
        event = Event(
            id=self.next_event_id(),
            user_id=user_id,
            project_id=project_id,
            created_at=created_at,
            push_data={"commit_count": commit_count, "commit_from": commit_from,
                       "commit_to": head, "ref": ref, "ref_type": ref_type,
                       "action": "pushed"},
        )
        self.add_event(event)
        return event

    def next_event_id(self) -> int:
        return 1 + max((e.id for evs in self.events.values() for e in evs), default=0)

"""Deterministic generator of a GitLab organisation full of the awkward cases.

``generate_org(seed)`` always builds the same organisation for the same arguments: it
uses one ``random.Random(seed)`` and never the global generator.

What every generated organisation guarantees (``now`` and ``lookback_days`` as given):

* every ``authored_date`` and every merge request / issue ``created_at`` and every push
  event ``created_at`` is at least two hours away from the window start
  (``now - lookback_days``) and from ``now``, so a scan that runs a little later sees the
  same truth;
* every project a user contributes in-window commits to is in that user's project set
  (personal, ``contributed_projects``, or an in-window push event), so each of a user's
  in-window SHAs is found by the exporter (a fork also carries its upstream's history:
  other contributors find those SHAs through the upstream); some projects are reachable
  only through push events, some only through ``contributed_projects``; the GitLab bot
  user (``renovate-bot``, orgs of 8+ users) has matching commits but no projects;
* all the identity cases of DESIGN section 6: public email (sometimes in another letter
  case), both no-reply forms, configured-only emails (``User.extra_emails``), author
  names equal to the display name or username in another case or with spaces, an
  identity that must *not* match (private email under a nickname), substring traps
  (``ann``/``anna``, an external ``ann.smith@...``), bots and externals;
* forks sharing SHAs with their upstream, commits on several branches, many UTC offsets,
  dates with and without milliseconds, rebased commits (committed after authored, some
  authored before the window but committed inside it), commits older than the window;
* groups with direct and inherited (subgroup) members, merge requests and issues in and
  before the window, some assigned to a user who did not author them;
* users with hidden (not visible) push events, and a few users with more than a page of
  push events in the window.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

from exporter.simulator.model import (
    DEVELOPER,
    GUEST,
    MAINTAINER,
    OWNER,
    REPORTER,
    Commit,
    Event,
    Group,
    Issue,
    IssueState,
    MergeRequest,
    MergeRequestState,
    Namespace,
    Org,
    Project,
    User,
)

#: UTC offsets (minutes) commits are written in.
OFFSETS = (-420, -210, 0, 60, 330, 540, 345, -300, -480, 120, 600, -180)
_TZ = {m: timezone(timedelta(minutes=m)) for m in OFFSETS}

_FIRST = (
    "Alice", "Bruno", "Carla", "Deepak", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kavya", "Liam", "Maya", "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Sanjay", "Tara",
    "Uma", "Victor", "Wen", "Xavier", "Yara", "Zoltan", "Priya", "Marek", "Chloe", "Arjun",
    "Sofia", "Lukas", "Mei", "Omar", "Leila", "Tomas", "Nadia", "Ravi", "Emma", "Kenji",
)  # fmt: skip
_LAST = (
    "Novak", "Silva", "Iyer", "Kowalski", "Haddad", "Tanaka", "Muller", "Rossi", "Garcia",
    "Okafor", "Larsen", "Petrov", "Sato", "Nguyen", "Khan", "Dubois", "Costa", "Fischer",
    "Reddy", "Jensen", "Moreau", "Varga", "Lindqvist", "Mensah", "Horvat", "Bauer", "Sharma",
    "Ito", "Keller", "Ortiz",
)  # fmt: skip
_GROUP_WORDS = (
    "platform", "backend", "frontend", "data", "infra", "mobile", "security", "payments",
    "search", "ml", "billing", "identity", "growth", "core", "tools", "docs",
)  # fmt: skip
_PROJECT_WORDS = (
    "api", "web", "worker", "gateway", "sdk", "cli", "ui", "etl", "scheduler", "auth",
    "ledger", "indexer", "proxy", "charts", "terraform", "agent", "bot", "notebooks",
)  # fmt: skip
_VERBS = ("Fix", "Add", "Refactor", "Update", "Remove", "Improve", "Document", "Test", "Bump")
_NOUNS = (
    "pagination", "login flow", "retry logic", "README", "CI pipeline", "cache", "metrics",
    "timeouts", "error handling", "migrations", "dependencies", "logging", "config parser",
)  # fmt: skip
_BRANCHES = ("feature/search", "fix/timeouts", "release/1.x", "wip/refactor", "develop")

#: Commit authors who are not GitLab users of the organisation (or never scanned).
EXTERNAL_AUTHORS: tuple[tuple[str, str], ...] = (
    ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"),
    ("Renovate Bot", "bot@renovateapp.com"),
    ("Ann Smith", "ann.smith@partner.example"),  # substring trap for "ann"
    ("Jordan Kim", "jordan@contractor.example"),
    ("Annabelle Ng", "annabelle.ng@agency.example"),  # substring trap for "ann"/"anna"
    ("root", "root@localhost"),
)

_SPECIAL_USERS: tuple[tuple[str, str], ...] = (
    ("ann", "Ann Lee"),
    ("anna", "Anna Berg"),
    ("JDoe", "John Doe"),
)


class _Clock:
    """Time ranges of one generation run, as integer Unix seconds."""

    def __init__(self, now: datetime, lookback_days: float) -> None:
        self.now = int(now.timestamp())
        self.start = int((now - timedelta(days=lookback_days)).timestamp())
        margin = 2 * 3600
        self.in_lo = self.start + margin
        self.in_hi = self.now - margin
        if self.in_hi - self.in_lo < 3600:
            raise ValueError("lookback_days too small: the window must exceed 5 hours")
        self.old_lo = self.start - 120 * 86400
        self.old_hi = self.start - margin


_T = TypeVar("_T")


def _ch(rng: random.Random, seq: Sequence[_T]) -> _T:
    """``rng.choice`` without its overhead (same distribution, deterministic per seed)."""
    return seq[int(rng.random() * len(seq))]


def _ri(rng: random.Random, a: int, b: int) -> int:
    """``rng.randint`` without its overhead."""
    return a + int(rng.random() * (b - a + 1))


def _dt(ts: int, offset: int) -> datetime:
    return datetime.fromtimestamp(ts, _TZ.get(offset) or timezone(timedelta(minutes=offset)))


def _weekday_of(ts: int, local_day: int, lo: int, hi: int) -> int:
    """``ts``, on a local Saturday or Sunday (``local_day``: the local midnight, as if
    UTC), moved to the nearest weekday (Saturday to Friday, Sunday to Monday), else to
    the other one, within ``[lo, hi]``."""
    weekday = (local_day // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    if weekday < 5:
        return ts
    shifts = (-1, 2) if weekday == 5 else (1, -2)
    for shift in shifts:
        moved = ts + shift * 86400
        if lo <= moved <= hi:
            return moved
    return ts


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _personal_namespace(owner: User) -> Namespace:
    return Namespace(
        id=100000 + owner.id,
        name=owner.name,
        path=owner.username,
        kind="user",
        full_path=owner.username,
    )


class _Gen:
    def __init__(
        self,
        seed: int,
        n_users: int,
        n_projects: int,
        now: datetime,
        lookback_days: float,
        host: str,
        working_week: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.working_week = working_week
        self.n_users = max(1, n_users)
        self.n_projects = max(1, n_projects)
        self.now = now
        self.clock = _Clock(now, lookback_days)
        self.host = host
        self.users: dict[int, User] = {}
        self.user_list: list[User] = []
        self.home_offset: dict[int, int] = {}
        self.traveller: set[int] = set()
        self.ident_weights: dict[int, list[int]] = {}
        self.inactive: set[int] = set()
        self.groups: dict[int, Group] = {}
        self.projects: dict[int, Project] = {}
        self.commits: dict[int, list[Commit]] = {}
        self.contributors: dict[int, list[int]] = {}
        self.events: list[Event] = []
        self.contributed: dict[int, list[int]] = {}
        self.mrs: list[MergeRequest] = []
        self.issues: list[Issue] = []

    # ------------------------------------------------------------------ users
    def make_users(self) -> None:
        rng = self.rng
        used_names: set[str] = set()
        used_logins: set[str] = set()
        used_emails: set[str] = set()
        next_id = 2
        for i in range(self.n_users):
            if i < len(_SPECIAL_USERS):
                username, name = _SPECIAL_USERS[i]
                first, last = name.split(" ")
            else:
                first, last = _ch(rng, _FIRST), _ch(rng, _LAST)
                name = f"{first} {last}"
                while name.casefold() in used_names:
                    name = f"{first} {chr(65 + rng.randrange(26))}. {last}"
                    if name.casefold() in used_names:
                        name = f"{first} {last} {rng.randrange(2, 999)}"
                style = rng.randrange(5)
                base = (
                    f"{first}.{last}",
                    f"{first[0]}{last}",
                    f"{first}{last[0]}",
                    f"{first}_{last}",
                    f"{first}{last}",
                )[style].lower()
                if rng.random() < 0.1:
                    base = base.capitalize()
                username = base
                k = 2
                while username.casefold() in used_logins:
                    username = f"{base}{k}"
                    k += 1
            used_names.add(name.casefold())
            used_logins.add(username.casefold())
            uid = next_id
            next_id += _ri(rng, 1, 7)
            login = username.lower()
            private = f"{login}@mail.acme.example"
            public = ""
            if i < 2 or rng.random() < 0.5:
                public = f"{first}.{last}@acme.example".lower()
                if public in used_emails:
                    public = f"{login}@acme.example"
                used_emails.add(public)
            extra: list[str] = []
            if i == 0 or rng.random() < 0.3:
                extra = [f"{login}@oldco.example"]
            user = User(
                id=uid,
                username=username,
                name=name,
                public_email=public,
                private_email=private,
                extra_emails=extra,
                created_at=_utc(self.clock.old_lo - rng.randrange(86400 * 900)),
            )
            self.build_identities(user, first, i)
            self.users[uid] = user
            self.user_list.append(user)
            self.home_offset[uid] = _ch(rng, OFFSETS)
            if rng.random() < 0.15:
                self.traveller.add(uid)
            if i >= len(_SPECIAL_USERS) and rng.random() < 0.05:
                self.inactive.add(uid)
        if self.n_users >= 8:
            # a GitLab bot user
            bot = User(
                id=next_id,
                username="renovate-bot",
                name="Renovate Bot",
                private_email="renovate-bot@mail.acme.example",
                bot=True,
                commit_identities=[("Renovate Bot", "bot@renovateapp.com")],
            )
            self.users[bot.id] = bot
            self.inactive.add(bot.id)

    def build_identities(self, user: User, first: str, index: int) -> None:
        rng = self.rng
        login = user.username
        idents: list[tuple[str, str]] = []
        weights: list[int] = []

        def add(name: str, email: str, weight: int) -> None:
            idents.append((name, email))
            weights.append(weight)

        if user.public_email:
            add(user.name, user.public_email, 4)
            # same address, other letter case
            add(user.name, user.public_email.title(), 1)
        add(_ch(rng, (user.name, login)), f"{user.id}-{login}@users.noreply.{self.host}", 2)
        add(user.name, f"{login}@users.noreply.{self.host}", 1)
        for email in user.extra_emails:
            # a name that matches nothing: only the configured email finds these
            add(f"{first} (old laptop)", email, 2)
        laptop = f"{login.lower()}@{_ch(rng, ('laptop', 'workstation', 'devbox'))}.local"
        name_variant = _ch(
            rng,
            (
                user.name.upper(),
                user.name.lower(),
                f"  {user.name} ",
                login.upper(),
                f" {login.lower()}",
            ),
        )
        if index == 0:
            name_variant = f"  {user.name.lower()} "
        add(name_variant, laptop, 2)
        if index == 2 or rng.random() < 0.1:
            # private email under a nickname: GitLab knows it, the exporter must not count it
            add(f"{first} (home)", user.private_email, 1)
        user.commit_identities = idents
        cum = []
        total = 0
        for w in weights:
            total += w
            cum.append(total)
        self.ident_weights[user.id] = cum

    # ----------------------------------------------------------------- groups
    def make_groups(self, n_group_projects: int) -> tuple[list[Group], dict[int, list[int]]]:
        rng = self.rng
        n_top = max(1, n_group_projects // 12)
        n_sub = n_top // 2 if n_group_projects >= 10 else 0
        next_id = 50
        tops: list[Group] = []
        for i in range(n_top):
            word = _GROUP_WORDS[i % len(_GROUP_WORDS)]
            path = word if i < len(_GROUP_WORDS) else f"{word}-{i // len(_GROUP_WORDS)}"
            g = Group(id=next_id, name=path.replace("-", " ").title(), path=path, full_path=path)
            next_id += _ri(rng, 1, 4)
            tops.append(g)
        active = [u for u in self.user_list if u.id not in self.inactive]
        everyone = list(self.user_list)
        levels = (GUEST, REPORTER, DEVELOPER, DEVELOPER, DEVELOPER, MAINTAINER, OWNER)
        # every user in one group (round robin), some in a second
        order = everyone[:]
        rng.shuffle(order)
        for i, u in enumerate(order):
            tops[i % n_top].members[u.id] = _ch(rng, levels)
            if rng.random() < 0.5 and n_top > 1:
                _ch(rng, tops).members.setdefault(u.id, _ch(rng, levels))
        subs: list[Group] = []
        for j in range(n_sub):
            parent = tops[j % n_top]
            word = _PROJECT_WORDS[j % len(_PROJECT_WORDS)]
            path = f"{word}-team"
            g = Group(
                id=next_id,
                name=f"{word.title()} Team",
                path=path,
                full_path=f"{parent.full_path}/{path}",
                parent_id=parent.id,
            )
            next_id += _ri(rng, 1, 4)
            for u in rng.sample(active or everyone, min(len(active or everyone), 3)):
                g.members[u.id] = _ch(rng, levels)
            subs.append(g)
        all_groups = tops + subs
        for g in all_groups:
            self.groups[g.id] = g
        effective: dict[int, list[int]] = {}
        for g in all_groups:
            members = dict(g.members)
            if g.parent_id is not None:
                for uid in self.groups[g.parent_id].members:
                    members.setdefault(uid, DEVELOPER)
            effective[g.id] = sorted(uid for uid in members if uid not in self.inactive)
        return all_groups, effective

    # --------------------------------------------------------------- projects
    def make_projects(self) -> None:
        rng = self.rng
        n = self.n_projects
        n_personal = max(1, round(n * 0.3)) if n > 1 else 1
        n_group = n - n_personal
        n_forks = n_group // 20
        n_group -= n_forks
        groups, effective = self.make_groups(max(n_group, 1)) if n_group > 0 else ([], {})
        next_id = 1000
        used_paths: set[str] = set()
        active_users = [u for u in self.user_list if u.id not in self.inactive] or self.user_list

        def new_project(ns: Namespace) -> Project:
            nonlocal next_id
            base = f"{_ch(rng, _PROJECT_WORDS)}-{_ch(rng, _PROJECT_WORDS)}"
            path = base
            k = 2
            while f"{ns.full_path}/{path}".casefold() in used_paths:
                path = f"{base}-{k}"
                k += 1
            used_paths.add(f"{ns.full_path}/{path}".casefold())
            p = Project(
                id=next_id,
                name=path.replace("-", " ").title(),
                path=path,
                namespace=ns,
                default_branch="main" if rng.random() < 0.8 else "master",
                visibility=_ch(rng, ("private", "internal", "internal", "public")),
                created_at=_utc(self.clock.old_lo - rng.randrange(86400 * 400)),
                archived=rng.random() < 0.03,
                web_url="",
            )
            p.web_url = f"https://{self.host}/{p.path_with_namespace}"
            next_id += _ri(rng, 1, 3)
            self.projects[p.id] = p
            return p

        # personal projects: round robin over users first, so most users own one
        owners = self.user_list[:]
        rng.shuffle(owners)
        for i in range(n_personal):
            owner = owners[i] if i < len(owners) else _ch(rng, self.user_list)
            p = new_project(_personal_namespace(owner))
            contributors = [owner.id] if owner.id not in self.inactive else []
            if rng.random() < 0.2:
                other = _ch(rng, active_users)
                if other.id not in contributors:
                    contributors.append(other.id)
            self.contributors[p.id] = contributors

        upstreams: list[Project] = []
        for i in range(n_group):
            g = groups[i % len(groups)] if i < len(groups) else _ch(rng, groups)
            ns = Namespace(id=g.id, name=g.name, path=g.path, kind="group", full_path=g.full_path)
            p = new_project(ns)
            pool = effective.get(g.id) or [u.id for u in active_users]
            k = min(len(pool), _ch(rng, (1, 2, 2, 3, 3, 4, 5)))
            self.contributors[p.id] = rng.sample(pool, k)
            upstreams.append(p)

        # commits for every non-fork project
        for p in list(self.projects.values()):
            self.make_commits(p)

        # forks: personal copies sharing SHAs with the upstream
        candidates = [p for p in upstreams if self.contributors[p.id] and self.commits[p.id]]
        for _ in range(n_forks):
            if not candidates:
                break
            up = _ch(rng, candidates)
            owner = self.users[_ch(rng, self.contributors[up.id])]
            fork = new_project(_personal_namespace(owner))
            fork.forked_from_project = up.id
            fork.default_branch = up.default_branch
            fork_point = _ri(rng, self.clock.in_lo, self.clock.in_hi)
            shared = [c for c in self.commits[up.id] if c.committed_date.timestamp() < fork_point]
            self.contributors[fork.id] = [owner.id]
            self.make_commits(fork, count_in=_ri(rng, 0, 5), count_old=0, after=fork_point)
            self.commits[fork.id].extend(shared)

        for p in self.projects.values():
            commits = self.commits.get(p.id, [])
            p.empty_repo = not commits
            if commits:
                newest = max(int(c.committed_date.timestamp()) for c in commits)
                p.last_activity_at = _utc(newest)
            else:
                p.last_activity_at = p.created_at

    def pick_time(self, lo: int, hi: int, offset: int) -> int:
        rng = self.rng
        ts = _ri(rng, lo, hi)
        if rng.random() < 0.7:
            # mostly working hours, local time
            local = ts + offset * 60
            day = local - local % 86400
            cand = day + _ri(rng, 8 * 3600, 19 * 3600) - offset * 60
            if self.working_week:
                cand = _weekday_of(cand, day, lo, hi)
            if lo <= cand <= hi:
                ts = cand
        return ts

    def make_commits(
        self,
        p: Project,
        *,
        count_in: int | None = None,
        count_old: int | None = None,
        after: int | None = None,
    ) -> None:
        rng = self.rng
        clock = self.clock
        contributors = self.contributors.get(p.id, [])
        commits = self.commits.setdefault(p.id, [])
        if count_in is None:
            count_in = 0 if rng.random() < 0.03 else _ri(rng, 5, 40)
            count_old = _ri(rng, 0, 8)
        if count_in == 0 and not count_old:
            return
        in_lo = clock.in_lo if after is None else max(clock.in_lo, after)
        if not contributors:
            # nobody works here any more: only old history
            count_old = (count_old or 0) + count_in
            count_in = 0
        parent: tuple[str, ...] = ()
        branch_default = p.default_branch
        plan: list[int] = [0] * count_in + [1] * (count_old or 0)
        if contributors and rng.random() < 0.3:
            plan += [2] * _ri(rng, 1, 2)  # authored before the window, rebased into it
        for kind in plan:
            r = rng.random()
            if contributors and r < 0.9:
                uid = contributors[0] if rng.random() < 0.4 else _ch(rng, contributors)
                user = self.users[uid]
                idents = user.commit_identities
                cum = self.ident_weights[uid]
                name, email = idents[bisect.bisect(cum, rng.random() * cum[-1])]
                offset = _ch(rng, OFFSETS) if uid in self.traveller else self.home_offset[uid]
            else:
                name, email = _ch(rng, EXTERNAL_AUTHORS)
                offset = _ch(rng, OFFSETS)
            if kind == 0:
                authored_ts = self.pick_time(in_lo, clock.in_hi, offset)
            elif kind == 1:
                authored_ts = self.pick_time(clock.old_lo, clock.old_hi, offset)
            else:
                authored_ts = _ri(rng, clock.start - 15 * 86400, clock.old_hi)
            committed_ts = authored_ts
            committer_offset = offset
            if kind == 2:
                committed_ts = _ri(rng, in_lo, clock.in_hi)
            elif rng.random() < 0.15:
                limit = clock.in_hi if kind == 0 else clock.old_hi
                committed_ts = min(limit, authored_ts + _ri(rng, 600, 5 * 86400))
                committed_ts = max(committed_ts, authored_ts)
                committer_offset = _ch(rng, OFFSETS)
            authored = _dt(authored_ts, offset)
            committed = (
                authored
                if committed_ts == authored_ts and committer_offset == offset
                else _dt(committed_ts, committer_offset)
            )
            title = f"{_ch(rng, _VERBS)} {_ch(rng, _NOUNS)}"
            sha = f"{rng.getrandbits(160):040x}"
            commits.append(
                Commit(
                    sha=sha,
                    title=title,
                    message=f"{title}\n",
                    author_name=name,
                    author_email=email,
                    authored_date=authored,
                    committed_date=committed,
                    committer_name=name,
                    committer_email=email,
                    millis=rng.random() < 0.5,
                    branch=branch_default if rng.random() < 0.75 else _ch(rng, _BRANCHES),
                    parent_ids=parent,
                )
            )
            parent = (sha,)

    # ------------------------------------------- discovery, events, MRs, issues
    def make_activity(self) -> None:
        rng = self.rng
        clock = self.clock
        user_projects: dict[int, list[int]] = {}
        for pid, uids in self.contributors.items():
            for uid in uids:
                user_projects.setdefault(uid, []).append(pid)
        push: dict[int, list[int]] = {}
        old_push: dict[int, list[int]] = {}
        all_pids = sorted(self.projects)
        for u in self.user_list:
            uid = u.id
            contributed: list[int] = []
            pushes: list[int] = []
            olds: list[int] = []
            for pid in sorted(user_projects.get(uid, [])):
                p = self.projects[pid]
                if p.namespace.kind == "user" and p.namespace.path == u.username:
                    # personal: GitLab often lists these as contributed as well
                    if rng.random() < 0.3:
                        contributed.append(pid)
                    if rng.random() < 0.3:
                        pushes.append(pid)
                    continue
                r = rng.random()
                if r < 0.45:
                    contributed.append(pid)
                    pushes.append(pid)
                elif r < 0.7:
                    contributed.append(pid)  # only through contributed_projects
                    if rng.random() < 0.5:
                        olds.append(pid)
                else:
                    pushes.append(pid)  # only through push events
            # contributions without in-window commits (comments, reviews)
            for _ in range(_ri(rng, 0, 2)):
                pid = _ch(rng, all_pids)
                if pid not in contributed:
                    contributed.append(pid)
            self.contributed[uid] = contributed
            push[uid] = pushes
            old_push[uid] = olds

        busy = {u.id for u in self.user_list if u.id not in self.inactive and rng.random() < 0.03}
        if self.user_list and self.user_list[0].id not in self.inactive:
            busy.add(self.user_list[0].id)
        hidden_pid = 9_000_000
        for u in self.user_list:
            uid = u.id
            for pid in push[uid]:
                for _ in range(_ri(rng, 1, 3)):
                    self.events.append(self.push_event(u, pid, clock.in_lo, clock.in_hi))
            for pid in old_push[uid]:
                self.events.append(self.push_event(u, pid, clock.old_lo, clock.old_hi))
            targets = push[uid] + self.contributed[uid]
            if uid in busy and push[uid]:
                # more than a page of pushes, only where pushes already discover a project
                for _ in range(_ri(rng, 110, 180)):
                    pid = _ch(rng, push[uid])
                    self.events.append(self.push_event(u, pid, clock.in_lo, clock.in_hi))
            # events the token cannot see (private projects elsewhere)
            n_hidden = _ri(rng, 0, 3) + (6 if uid in busy else 0)
            for _ in range(n_hidden):
                hidden_pid += _ri(rng, 1, 5)
                ev = self.push_event(u, hidden_pid, clock.in_lo, clock.in_hi)
                ev.hidden = True
                self.events.append(ev)
            # other kinds of event
            for _ in range(_ri(rng, 0, 4)):
                if not targets:
                    break
                action, action_name = _ch(
                    rng,
                    (("commented", "commented on"), ("created", "opened"), ("merged", "accepted")),
                )
                ts = _ri(rng, clock.in_lo, clock.in_hi)
                self.events.append(
                    Event(
                        id=0,
                        user_id=uid,
                        project_id=_ch(rng, targets),
                        created_at=_utc(ts),
                        action=action,
                        action_name=action_name,
                    )
                )
        self.events.sort(key=lambda e: (e.created_at, e.user_id, e.project_id))
        for i, ev in enumerate(self.events, start=1):
            ev.id = 10_000 + i

        # merge requests and issues
        iids: dict[int, int] = {}
        active = [u for u in self.user_list if u.id not in self.inactive]
        mr_states: tuple[MergeRequestState, ...] = (
            "opened",
            "merged",
            "merged",
            "closed",
            "locked",
        )
        issue_states: tuple[IssueState, ...] = ("opened", "closed")
        mr_id = 5000
        issue_id = 7000
        for u in self.user_list:
            if u.id in self.inactive:
                continue
            places = user_projects.get(u.id) or all_pids
            for _ in range(_ri(rng, 0, 6)):
                pid = _ch(rng, places)
                iids[pid] = iids.get(pid, 0) + 1
                mr_id += _ri(rng, 1, 3)
                state = _ch(rng, mr_states)
                created, ended = self.item_times()
                assignee = _ch(rng, active).username if active and rng.random() < 0.5 else None
                self.mrs.append(
                    MergeRequest(
                        id=mr_id,
                        iid=iids[pid],
                        project_id=pid,
                        state=state,
                        created_at=created,
                        author=u.username,
                        assignee=assignee,
                        merged_at=ended if state == "merged" else None,
                        closed_at=ended if state == "closed" else None,
                        title=f"{_ch(rng, _VERBS)} {_ch(rng, _NOUNS)}",
                    )
                )
            for _ in range(_ri(rng, 0, 5)):
                pid = _ch(rng, places)
                iids[-pid] = iids.get(-pid, 0) + 1
                issue_id += _ri(rng, 1, 3)
                istate = _ch(rng, issue_states)
                created, ended = self.item_times()
                assignee = _ch(rng, active).username if active and rng.random() < 0.4 else None
                self.issues.append(
                    Issue(
                        id=issue_id,
                        iid=iids[-pid],
                        project_id=pid,
                        state=istate,
                        created_at=created,
                        author=u.username,
                        assignee=assignee,
                        closed_at=ended if istate == "closed" else None,
                        title=f"{_ch(rng, _NOUNS).capitalize()} is broken",
                    )
                )
            if rng.random() < 0.15:
                # by an outsider, assigned to this user: must not count for them
                pid = _ch(rng, places)
                iids[pid] = iids.get(pid, 0) + 1
                mr_id += 1
                created, _ = self.item_times(inside=True)
                self.mrs.append(
                    MergeRequest(
                        id=mr_id,
                        iid=iids[pid],
                        project_id=pid,
                        state="opened",
                        created_at=created,
                        author="ext.contractor",
                        assignee=u.username,
                        title="External contribution",
                    )
                )

    def item_times(self, *, inside: bool | None = None) -> tuple[datetime, datetime]:
        rng = self.rng
        clock = self.clock
        if inside is None:
            inside = rng.random() < 0.7
        if inside:
            created = _ri(rng, clock.in_lo, clock.in_hi)
        else:
            created = _ri(rng, clock.old_lo, clock.old_hi)
        ended = min(clock.now - 600, created + _ri(rng, 600, 10 * 86400))
        return _utc(created), _utc(ended)

    def push_event(self, u: User, pid: int, lo: int, hi: int) -> Event:
        rng = self.rng
        bulk = rng.random() < 0.05
        branch = _ch(rng, ("main", *_BRANCHES))
        return Event(
            id=0,
            user_id=u.id,
            project_id=pid,
            created_at=_utc(_ri(rng, lo, hi)),
            action="pushed",
            action_name="pushed to",
            push_data={
                "commit_count": 0 if bulk else _ri(rng, 1, 5),
                "action": "pushed",
                "ref_type": "branch",
                "commit_from": None if bulk else f"{rng.getrandbits(160):040x}",
                "commit_to": None if bulk else f"{rng.getrandbits(160):040x}",
                "ref": None if bulk else branch,
                "commit_title": None if bulk else f"{_ch(rng, _VERBS)} {_ch(rng, _NOUNS)}",
                "ref_count": _ri(rng, 4, 9) if bulk else None,
            },
        )

    def build(self) -> Org:
        self.make_users()
        self.make_projects()
        self.make_activity()
        events: dict[int, list[Event]] = {}
        for ev in self.events:
            events.setdefault(ev.user_id, []).append(ev)
        return Org(
            now=self.now,
            host=self.host,
            users=self.users,
            groups=self.groups,
            projects=self.projects,
            commits=self.commits,
            events=events,
            contributed=self.contributed,
            merge_requests=self.mrs,
            issues=self.issues,
        )


def generate_org(
    seed: int,
    *,
    working_week: bool = False,  # working-hours commits on local weekdays only
    users: int = 20,
    projects: int = 60,
    now: datetime | None = None,
    lookback_days: float = 30,
    host: str = "gitlab.example.com",
    history_commits: int = 0,
    realism: Realism | None = None,
    refs: RefKnobs | None = None,
) -> Org:
    """Build a deterministic organisation for ``seed`` (see the module docstring).

    ``host`` is GitLab's *external* host: the one in every ``web_url`` and in the
    no-reply commit emails, which may differ from where the simulator listens.
    ``realism``: the awkward parts of real organisations (see :class:`Realism`); the
    organisation is otherwise the same, the changes drawn from a generator of their own.

    ``history_commits``: every project that is not a fork gets this many more commits on
    its default branch, authored and committed in the two years before the window by
    the project's own authors, as long-lived repositories have (the organisation is
    otherwise the same: these come from a random generator of their own).

    ``refs``: which of GitLab's repository awkwardnesses to add (:class:`RefKnobs`; none
    by default, :data:`REALISTIC_REFS` for all of them). They come from a random
    generator of their own too: the rest of the organisation stays the same.
    """
    if now is None:
        now = datetime.now(UTC).replace(microsecond=0)
    elif now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if history_commits < 0:
        raise ValueError("history_commits must not be negative")
    org = _Gen(
        seed, users, projects, now.astimezone(UTC), lookback_days, host, working_week
    ).build()
    if history_commits:
        _add_history(org, seed, history_commits, now - timedelta(days=lookback_days))
        org.reindex()
    if realism is not None:
        _apply_realism(org, seed, realism, now - timedelta(days=lookback_days))
        org.reindex()
    if refs is not None:
        _add_refs(org, seed, refs, _Clock(now.astimezone(UTC), lookback_days))
        org.reindex()
    return org


@dataclass(frozen=True)
class RefKnobs:
    """Repository behaviour of a real GitLab, each one a knob (all off by default).

    - ``hidden_refs``: commits only GitLab's hidden refs keep, which ``all=true`` lists:
      amended versions under ``refs/keep-around/*`` (one commit amended twice under CI
      leaves two), squashed-away originals under ``refs/merge-requests/IID/head`` and
      the synthetic merge commit of ``refs/merge-requests/IID/merge``, authored by the
      merge request's author and re-created whenever the target branch moves.
    - ``merge_commits``: merge commits (two parents) on the default branch, authored by
      the project's people.
    - ``future_dates``: a commit whose committer clock was wrong (committed in 2099).
    - ``tag_pushes``: annotated tag pushes (``ref_type: tag``, ``commit_to`` a tag
      object, no commits) among the users' push events.
    - ``time_zone``: the instance's ``gitlab.time_zone`` (the events' ``after`` day ends).
    """

    hidden_refs: bool = False
    merge_commits: bool = False
    future_dates: bool = False
    tag_pushes: bool = False
    time_zone: str = "UTC"


#: Every knob on, as the benchmark and the demo use (an instance west of UTC).
REALISTIC_REFS = RefKnobs(
    hidden_refs=True,
    merge_commits=True,
    future_dates=True,
    tag_pushes=True,
    time_zone="America/Los_Angeles",
)

FUTURE = datetime(2099, 1, 1, 9, 30, tzinfo=UTC)


def _variant(rng: random.Random, c: Commit, *, branch: str, **change: object) -> Commit:
    """Another commit like ``c`` (a new SHA) on ``branch``."""
    fields: dict[str, object] = {
        "sha": f"{rng.getrandbits(160):040x}",
        "title": c.title,
        "message": c.message,
        "author_name": c.author_name,
        "author_email": c.author_email,
        "authored_date": c.authored_date,
        "committed_date": c.committed_date,
        "committer_name": c.committer_name,
        "committer_email": c.committer_email,
        "millis": c.millis,
        "branch": branch,
        "parent_ids": c.parent_ids,
    }
    fields.update(change)
    return Commit(**fields)  # type: ignore[arg-type]


def _add_refs(org: Org, seed: int, knobs: RefKnobs, clock: _Clock) -> None:
    rng = random.Random(f"refs-{seed}")
    org.time_zone = knobs.time_zone
    iid = 10_000
    future_done = False
    for pid in sorted(org.commits):
        project = org.projects.get(pid)
        if project is None or project.forked_from_project is not None:
            continue
        default = project.default_branch
        inside = sorted(
            (c for c in org.commits[pid]
             if clock.in_lo <= c.authored_date.timestamp() <= clock.in_hi and not c.hidden),
            key=lambda c: c.history_key,
        )
        if not inside:
            continue
        added: list[Commit] = []
        if knobs.hidden_refs and rng.random() < 0.4:
            amended = _ch(rng, inside)
            # amended twice under CI: the two earlier versions stay behind keep-around refs
            for n in (1, 2):
                earlier = amended.committed_date - timedelta(minutes=10 * (3 - n))
                version = _variant(rng, amended, branch="",
                                   committed_date=max(earlier, amended.authored_date))
                version.branch = f"refs/keep-around/{version.sha}"
                added.append(version)
            iid += 1
            squashed = _ch(rng, inside)
            added.append(_variant(rng, squashed, branch=f"refs/merge-requests/{iid}/head",
                                  title=f"WIP {squashed.title}"))
            author = _ch(rng, inside)
            head = max(org.commits[pid], key=lambda c: c.committed_date)
            added.append(_variant(
                rng, author, branch=f"refs/merge-requests/{iid}/merge",
                title=f"Merge branch 'topic-{iid}' into '{default}'",
                committed_date=max(author.committed_date, head.committed_date),
                parent_ids=(head.sha, squashed.sha),
            ))
        trunk = [c for c in inside if c.branch == default]
        if knobs.merge_commits and trunk and rng.random() < 0.4:
            for _ in range(_ri(rng, 1, 2)):
                base = _ch(rng, trunk)
                side = _ch(rng, inside)
                later = base.committed_date + timedelta(minutes=1)
                added.append(_variant(rng, base, branch=default,
                                      title=f"Merge branch '{side.branch}' into '{default}'",
                                      committed_date=later,
                                      authored_date=base.authored_date + timedelta(minutes=1),
                                      parent_ids=(base.sha, side.sha)))
        if knobs.future_dates and trunk and (not future_done or rng.random() < 0.03):
            future_done = True
            wrong = _ch(rng, trunk)
            added.append(_variant(rng, wrong, branch=default, title=f"{wrong.title} (bad clock)",
                                  committed_date=FUTURE.astimezone(wrong.committed_date.tzinfo)))
        org.commits[pid].extend(added)
    if knobs.tag_pushes:
        for uid in sorted(org.events):
            pushes = [e for e in org.events[uid] if e.action == "pushed" and not e.hidden]
            if not pushes or rng.random() >= 0.3:
                continue
            like = _ch(rng, pushes)
            org.add_push(
                uid, like.project_id, like.created_at + timedelta(minutes=1),
                f"{rng.getrandbits(160):040x}", ref=f"v1.{_ri(rng, 0, 40)}.0",
                commit_count=0, ref_type="tag",
            )


def _add_history(org: Org, seed: int, per_project: int, window_start: datetime) -> None:
    rng = random.Random(f"history-{seed}")
    latest = int(window_start.timestamp()) - 2 * 86400  # two days clear of the window
    earliest = latest - 730 * 86400
    for pid in sorted(org.commits):
        project = org.projects.get(pid)
        commits = org.commits[pid]
        if project is None or project.forked_from_project is not None or not commits:
            continue
        authors = sorted({(c.author_name, c.author_email) for c in commits})
        for _ in range(per_project):
            name, email = _ch(rng, authors)
            when = _dt(_ri(rng, earliest, latest), _ch(rng, OFFSETS))
            title = f"{_ch(rng, _VERBS)} {_ch(rng, _NOUNS)}"
            commits.append(
                Commit(
                    sha=f"{rng.getrandbits(160):040x}",
                    title=title,
                    message=f"{title}\n",
                    author_name=name,
                    author_email=email,
                    authored_date=when,
                    committed_date=when,
                    committer_name=name,
                    committer_email=email,
                    branch=project.default_branch,
                )
            )


@dataclass(frozen=True)
class Realism:
    """How many of each awkward thing of real organisations to add (all none by default).

    What a non-admin token meets (gitlab-api.md): private profiles and blocked users,
    projects whose code it may not read (403), projects without a repository (404
    ``Repository``); and what every instance has: renamed users, whose older commits
    carry the old name in their no-reply email, and people sharing a display name.
    ``broken_projects`` always answer 500 on their commits.
    """

    private_profiles: int = 0
    blocked_users: int = 0
    renamed_users: int = 0
    shared_names: int = 0  # pairs of users with the same display name
    forbidden_projects: int = 0
    repositoryless_projects: int = 0
    broken_projects: int = 0

    @classmethod
    def typical(cls, users: int, projects: int) -> Realism:
        """Proportions as a real organisation scanned with a non-admin token has them."""
        if users < 8:
            return cls()
        return cls(
            private_profiles=max(1, users // 25),
            blocked_users=max(1, users // 60),
            renamed_users=max(1, users // 30),
            shared_names=max(1, users // 100),
            forbidden_projects=max(1, projects // 40),
            repositoryless_projects=max(1, projects // 60),
        )


def _apply_realism(org: Org, seed: int, realism: Realism, window_start: datetime) -> None:
    rng = random.Random(f"realism-{seed}")
    # the first users are the matching traps (ann, anna, JDoe) and the bot is special
    people = [u for u in sorted(org.users.values(), key=lambda u: u.id) if not u.bot][3:]
    rng.shuffle(people)

    def take(n: int) -> list[User]:
        chosen = people[:n]
        del people[:n]
        return chosen

    for user in take(realism.private_profiles):
        user.private_profile = True
    for user in take(realism.blocked_users):
        user.state = "blocked"
    for user in take(realism.renamed_users):
        given = user.name.split(" ")[0]
        _rename(org, user, f"{user.username}-{_ri(rng, 2, 99)}", f"{given} {_ch(rng, _LAST)}-Lee")
    in_lo = int(window_start.timestamp()) + 3 * 3600
    in_hi = int(org.now.timestamp()) - 3 * 3600
    for _ in range(realism.shared_names):
        pair = take(2)
        if len(pair) < 2:
            break
        first, second = pair
        second.name = first.name
        # commits under that name alone (an unconfigured laptop): nobody's for certain
        places = sorted(
            set(org.personal_project_ids(first.id)) | set(org.contributed.get(first.id, []))
        )
        for pid in places[:2]:
            when = _dt(_ri(rng, in_lo, in_hi), _ch(rng, OFFSETS))
            sha = f"{rng.getrandbits(160):040x}"
            org.commits.setdefault(pid, []).append(
                Commit(
                    sha=sha, title="Fix typo", message="Fix typo\n", author_name=first.name,
                    author_email=f"{first.username.lower()}@shared-laptop.local",
                    authored_date=when, committed_date=when, committer_name=first.name,
                    committer_email=f"{first.username.lower()}@shared-laptop.local",
                    branch=org.projects[pid].default_branch,
                )
            )
            org.projects[pid].empty_repo = False
    with_commits = [
        p for p in sorted(org.projects.values(), key=lambda p: p.id)
        if p.namespace.kind == "group" and org.commits.get(p.id)
    ]
    rng.shuffle(with_commits)
    for project in with_commits[: realism.forbidden_projects]:
        project.code_forbidden = True
        project.visibility = "private"
    del with_commits[: realism.forbidden_projects]
    active = [p for p in with_commits if p.last_activity_at >= window_start]
    for project in active[: realism.broken_projects]:
        project.broken = True
    _add_repositoryless(org, rng, realism.repositoryless_projects, in_lo, in_hi)


def _rename(org: Org, user: User, new: str, display_name: str) -> None:
    """Rename as GitLab does (a new username, here a new display name as well): the
    personal namespace moves, authored items follow, and commits keep the names and
    emails they were written with."""
    old = user.username
    user.previous_usernames.append(old)
    user.username = new
    user.name = display_name
    for project in org.projects.values():
        ns = project.namespace
        if ns.kind == "user" and ns.path.casefold() == old.casefold():
            ns.path = ns.full_path = new
            project.web_url = f"https://{org.host}/{project.path_with_namespace}"
    items: list[MergeRequest | Issue] = [*org.merge_requests, *org.issues]
    for item in items:
        if item.author == old:
            item.author = new
        if item.assignee == old:
            item.assignee = new


def _add_repositoryless(org: Org, rng: random.Random, n: int, in_lo: int, in_hi: int) -> None:
    """Projects with issues and comments but no repository, in users' contributed lists."""
    groups = sorted(org.groups.values(), key=lambda g: g.id)
    users = sorted(org.users, key=int)
    if not groups or not users:
        return
    next_id = max(org.projects, default=1000) + 1
    for i in range(n):
        g = groups[i % len(groups)]
        ns = Namespace(id=g.id, name=g.name, path=g.path, kind="group", full_path=g.full_path)
        project = Project(
            id=next_id + i, name=f"Handbook {i + 1}", path=f"handbook-{i + 1}", namespace=ns,
            last_activity_at=_utc(_ri(rng, in_lo, in_hi)), empty_repo=True, no_repository=True,
        )
        project.web_url = f"https://{org.host}/{project.path_with_namespace}"
        org.projects[project.id] = project
        for uid in rng.sample(users, min(len(users), 3)):
            org.contributed.setdefault(uid, []).append(project.id)

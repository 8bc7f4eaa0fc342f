"""Ground truth: what the exporter must report for an organisation.

Written independently of the exporter's scanner, matching and period code (it imports
nothing from the exporter outside this package) so that the two can check each other.
Rules: DESIGN section 6.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from exporter.simulator.model import Commit, Org, User

_EMPTY: Mapping[str, Iterable[str]] = {}


@dataclass(frozen=True)
class ExpectedUser:
    commits: int  # distinct SHAs authored by the user in [now-lookback, now)
    period_commits: dict[str, int]  # every configured period, plus "other" for gaps
    projects: dict[str, int]  # "personal", "contributed", "active"
    merge_requests: dict[str, int]  # "opened", "merged", "closed" ("locked" is "opened")
    issues: dict[str, int]  # "opened", "closed"
    authored: tuple[datetime, ...] = ()  # authored_date of each of the counted commits


def _minutes(text: str) -> int:
    hh, mm = text.strip().split(":")
    h, m = int(hh), int(mm)
    if not (0 <= m < 60 and (0 <= h < 24 or (h == 24 and m == 0))):
        raise ValueError(f"bad time of day: {text!r}")
    return h * 60 + m


def _parse_periods(periods: Mapping[str, str]) -> list[tuple[str, int, int]]:
    out = []
    for name, spec in periods.items():
        start_s, end_s = spec.split("-")
        out.append((name, _minutes(start_s), _minutes(end_s)))
    return out


def _covers_whole_day(parsed: list[tuple[str, int, int]]) -> bool:
    covered = [False] * 1440
    for _, start, end in parsed:
        for m in range(1440):
            if _in_period(m, start, end):
                covered[m] = True
    return all(covered)


def _in_period(minute: int, start: int, end: int) -> bool:
    if start < end:
        return start <= minute < end
    if start > end:  # wraps past midnight
        return minute >= start or minute < end
    return False  # empty period


def _period_of(local: datetime, parsed: list[tuple[str, int, int]]) -> str:
    # seconds matter only at a boundary minute, and boundaries are whole minutes
    minute = local.hour * 60 + local.minute
    for name, start, end in parsed:
        if _in_period(minute, start, end):
            return name
    return "other"


def _names(user: User) -> set[str]:
    return {n.strip().casefold() for n in (user.username, user.name) if n.strip()}


def _identity(
    user: User, hostname: str, extra: Iterable[str], shared: set[str]
) -> tuple[set[str], re.Pattern[str], set[str]]:
    """Known emails, the no-reply pattern (GitLab matches it by the ID alone), and the
    names that identify the user (those no other scanned user has)."""
    emails = {e.strip().casefold() for e in extra if e.strip()}
    if user.public_email.strip():
        emails.add(user.public_email.strip().casefold())
    emails.add(f"{user.username}@{hostname}".casefold())
    noreply = re.compile(rf"{user.id}-[^@]+@{re.escape(hostname.casefold())}")
    return emails, noreply, _names(user) - shared


def _visible(user: User, admin: bool) -> bool:
    """A non-admin token finds no blocked (or otherwise inactive) user by username."""
    return admin or user.state == "active"


def _scanned(org: Org, usernames: Iterable[str], admin: bool) -> list[User]:
    found = [org.user_by_username(name) for name in usernames]
    unique = {u.id: u for u in found if u is not None and _visible(u, admin)}
    return list(unique.values())


def _shared_names(users: Iterable[User]) -> set[str]:
    counts = Counter(name for u in users for name in _names(u))
    return {name for name, n in counts.items() if n > 1}


def _pushed(org: Org, user: User, start: datetime, now: datetime, admin: bool) -> set[int]:
    """Projects of the user's visible push events in the window (push events need
    ``download_code``: a non-admin token does not see pushes to code it may not read)."""
    out: set[int] = set()
    for e in org.events.get(user.id, []):
        if e.action != "pushed" or e.hidden or not (start <= e.created_at < now):
            continue
        project = org.projects.get(e.project_id)
        if not admin and project is not None and project.code_forbidden:
            continue
        out.add(e.project_id)
    return out


def _readable(org: Org, pid: int, admin: bool) -> bool:
    project = org.projects.get(pid)
    if project is None:
        return True
    return not project.no_repository and (admin or not project.code_forbidden)


def expected_failures(
    org: Org,
    *,
    usernames: Iterable[str],
    lookback_days: float,
    now: datetime,
    admin: bool = True,
) -> dict[str, str]:
    """The users whose scan must fail, with the reason (DESIGN section 6).

    Not found (absent, or blocked and the token not an admin's); ``private_profile``
    (the token cannot see the user's activity); ``api_error`` for a user one of whose
    projects with activity in the window can never be read.
    """
    start = now - timedelta(days=lookback_days)
    failures: dict[str, str] = {}
    for name in usernames:
        user = org.user_by_username(name)
        if user is None or not _visible(user, admin):
            failures[name] = "not_found"
            continue
        if not admin and user.profile_hidden:
            failures[name] = "private_profile"
            continue
        places = (
            set(org.personal_project_ids(user.id))
            | set(org.contributed.get(user.id, []))
        )
        pushed = _pushed(org, user, start, now, admin)
        for pid in places | pushed:
            project = org.projects.get(pid)
            if project is None or not project.broken or not _readable(org, pid, admin):
                continue
            if pid in pushed or project.last_activity_at >= start:
                failures[name] = "api_error"
                break
    return failures


def expected_activity(
    org: Org,
    *,
    usernames: Iterable[str],
    timezone: str,
    periods: Mapping[str, str],
    lookback_days: float,
    now: datetime,
    extra_emails: Mapping[str, Iterable[str]] = _EMPTY,
    host: str | None = None,
    admin: bool = True,
    commit_email_hostname: str | None = None,
    count_merge_commits: bool = False,
) -> dict[str, ExpectedUser]:
    """Expected numbers per username present in ``org`` (absent names are left out).

    ``host`` (GitLab's external host) defaults to ``org.host``; the no-reply hostname
    is ``commit_email_hostname``, by default ``users.noreply.`` and that host.
    ``extra_emails`` is keyed by username (case-insensitive), as the configuration's
    ``users[].emails``. ``admin``: the token is an administrator's; otherwise projects
    whose code it may not read count nothing (users whose scan must fail are listed
    by :func:`expected_failures`). Commits count when a branch reaches them (not only a
    hidden ref), merge commits only with ``count_merge_commits``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be aware")
    hostname = commit_email_hostname or f"users.noreply.{host or org.host}"
    usernames = list(usernames)
    shared = _shared_names(_scanned(org, usernames, admin))
    start = now - timedelta(days=lookback_days)
    parsed = _parse_periods(periods)
    names_out = [name for name, _, _ in parsed]
    if "other" not in names_out and not _covers_whole_day(parsed):
        names_out.append("other")
    zone = None if timezone == "commit" else ZoneInfo(timezone)
    extras = {k.casefold(): list(v) for k, v in extra_emails.items()}

    personal_by_owner: dict[str, set[int]] = {}
    for p in org.projects.values():
        if p.namespace.kind == "user":
            personal_by_owner.setdefault(p.namespace.path.casefold(), set()).add(p.id)
    mrs_by_author: dict[str, list[str]] = {}
    for mr in org.merge_requests:
        if start <= mr.created_at < now:
            mrs_by_author.setdefault(mr.author.casefold(), []).append(mr.state)
    issues_by_author: dict[str, list[str]] = {}
    for issue in org.issues:
        if start <= issue.created_at < now:
            issues_by_author.setdefault(issue.author.casefold(), []).append(issue.state)

    reachable: dict[int, list[Commit]] = {}
    result: dict[str, ExpectedUser] = {}
    for username in usernames:
        user = org.user_by_username(username)
        if user is None:
            continue
        emails, noreply, names = _identity(
            user, hostname, extras.get(user.username.casefold(), []), shared
        )

        key = user.username.casefold()
        personal = personal_by_owner.get(key, set())
        contributed = set(org.contributed.get(user.id, []))
        pushed = _pushed(org, user, start, now, admin)
        project_set = personal | contributed | pushed

        shas: dict[str, datetime] = {}
        active: set[int] = set()
        for pid in project_set:
            if not _readable(org, pid, admin):
                continue
            for c in reachable.setdefault(pid, org.branch_commits(pid)):
                if not (start <= c.authored_date < now):
                    continue
                if len(c.parent_ids) >= 2 and not count_merge_commits:
                    continue
                email = c.author_email.strip().casefold()
                if (
                    email in emails
                    or noreply.fullmatch(email)
                    or c.author_name.strip().casefold() in names
                ):
                    shas[c.sha] = c.authored_date
                    active.add(pid)

        period_counts = dict.fromkeys(names_out, 0)
        for authored in shas.values():
            local = authored if zone is None else authored.astimezone(zone)
            period_counts[_period_of(local, parsed)] += 1

        mrs = {"opened": 0, "merged": 0, "closed": 0}
        for state in mrs_by_author.get(key, []):
            mrs["opened" if state in ("opened", "locked") else state] += 1
        issues = {"opened": 0, "closed": 0}
        for state in issues_by_author.get(key, []):
            issues[state] += 1

        result[user.username] = ExpectedUser(
            commits=len(shas),
            period_commits=period_counts,
            projects={
                "personal": len(personal),
                "contributed": len(contributed - personal),
                "active": len(active),
            },
            merge_requests=mrs,
            issues=issues,
            authored=tuple(sorted(shas.values())),
        )
    return result

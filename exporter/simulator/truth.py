"""Ground truth: what the exporter must report for an organisation.

Written independently of the exporter's scanner, matching and period code (it imports
nothing from the exporter outside this package) so that the two can check each other.
Rules: DESIGN section 6.
"""

from __future__ import annotations

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


def _identity(user: User, host: str, extra: Iterable[str]) -> tuple[set[str], set[str]]:
    emails = {e.strip().casefold() for e in extra if e.strip()}
    if user.public_email.strip():
        emails.add(user.public_email.strip().casefold())
    emails.add(f"{user.id}-{user.username}@users.noreply.{host}".casefold())
    emails.add(f"{user.username}@users.noreply.{host}".casefold())
    names = {user.username.strip().casefold()}
    if user.name.strip():
        names.add(user.name.strip().casefold())
    return emails, names


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
    count_merge_commits: bool = False,
) -> dict[str, ExpectedUser]:
    """Expected numbers per username present in ``org`` (absent names are left out).

    ``host`` defaults to ``org.host``; ``extra_emails`` is keyed by username
    (case-insensitive), as the configuration's ``users[].emails``. Commits count when a
    branch reaches them (not only a hidden ref), merge commits only with
    ``count_merge_commits``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be aware")
    noreply_host = host or org.host
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
        emails, names = _identity(user, noreply_host, extras.get(user.username.casefold(), []))

        key = user.username.casefold()
        personal = personal_by_owner.get(key, set())
        contributed = set(org.contributed.get(user.id, []))
        pushed = {
            e.project_id
            for e in org.events.get(user.id, [])
            if e.action == "pushed" and not e.hidden and start <= e.created_at < now
        }
        project_set = personal | contributed | pushed

        shas: dict[str, datetime] = {}
        active: set[int] = set()
        for pid in project_set:
            for c in reachable.setdefault(pid, org.branch_commits(pid)):
                if not (start <= c.authored_date < now):
                    continue
                if len(c.parent_ids) >= 2 and not count_merge_commits:
                    continue
                if (
                    c.author_email.strip().casefold() in emails
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
        )
    return result

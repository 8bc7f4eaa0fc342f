"""Render one scan's snapshot for ``scan --output table|json|csv|prometheus``."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.collectors import build_registry
from exporter.snapshot import PROJECT_KINDS, Snapshot, UserState

__all__ = ["FORMATS", "render"]

FORMATS = ("table", "json", "csv", "prometheus")


def _teams_by_user(snapshot: Snapshot) -> dict[str, list[str]]:
    teams: dict[str, list[str]] = {}
    for team in sorted(snapshot.teams):
        for member in snapshot.teams[team]:
            names = teams.setdefault(member, [])
            if team not in names:
                names.append(team)
    return teams


def _status(user: UserState) -> str:
    return user.last_error if user.last_error is not None else "ok"


def _ranked(snapshot: Snapshot) -> list[UserState]:
    """Users by commits descending (users without numbers last), then by name."""

    def key(user: UserState) -> tuple[int, str]:
        commits = user.stats.commits if user.stats is not None else -1
        return (-commits, user.username)

    return sorted(snapshot.users.values(), key=key)


def _columns(snapshot: Snapshot) -> list[str]:
    return ["user", "teams", "status", "commits", *snapshot.periods, *PROJECT_KINDS]


def _row(snapshot: Snapshot, user: UserState, teams: dict[str, list[str]]) -> list[str]:
    row = [user.username, ",".join(teams.get(user.username, [])), _status(user)]
    stats = user.stats
    if stats is None:
        return row + [""] * (1 + len(snapshot.periods) + len(PROJECT_KINDS))
    row.append(str(stats.commits))
    row += [str(stats.period_commits.get(p, 0)) for p in snapshot.periods]
    row += [str(stats.projects.get(k, 0)) for k in PROJECT_KINDS]
    return row


def _json(snapshot: Snapshot) -> str:
    teams = _teams_by_user(snapshot)
    users: list[dict[str, Any]] = []
    for name in sorted(snapshot.users):
        user = snapshot.users[name]
        stats = user.stats
        users.append(
            {
                "user": name,
                "teams": teams.get(name, []),
                "status": _status(user),
                "error": user.last_error_message,
                "commits": stats.commits if stats is not None else None,
                "periods": (
                    {p: stats.period_commits.get(p, 0) for p in snapshot.periods}
                    if stats is not None
                    else {}
                ),
                "projects": (
                    {k: stats.projects.get(k, 0) for k in PROJECT_KINDS}
                    if stats is not None
                    else {}
                ),
                "last_success": user.last_success,
                "failures": {r: user.failures[r] for r in sorted(user.failures)},
            }
        )
    team_docs: list[dict[str, Any]] = []
    for team in sorted(snapshot.teams):
        members = sorted(set(snapshot.teams[team]))
        commits = 0
        for member in members:
            state = snapshot.users.get(member)
            if state is not None and state.stats is not None:
                commits += state.stats.commits
        team_docs.append({"team": team, "members": members, "commits": commits})
    scan = snapshot.last_scan
    scan_doc: dict[str, Any] = {
        "started": scan.started if scan else None,
        "finished": scan.finished if scan else None,
        "duration_seconds": scan.duration if scan else None,
        "users_total": scan.users_total if scan else 0,
        "users_scanned": scan.users_total - scan.users_failed if scan else 0,
        "users_failed": scan.users_failed if scan else 0,
        "last_complete_scan_end": snapshot.last_complete_scan_end,
        "scans_total": snapshot.scans_total,
        "periods": list(snapshot.periods),
    }
    document = {"users": users, "teams": team_docs, "scan": scan_doc}
    return json.dumps(document, indent=2) + "\n"


def _csv(snapshot: Snapshot) -> str:
    teams = _teams_by_user(snapshot)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_columns(snapshot))
    for user in _ranked(snapshot):
        writer.writerow(_row(snapshot, user, teams))
    return buffer.getvalue()


def _table(snapshot: Snapshot) -> str:
    teams = _teams_by_user(snapshot)
    header = _columns(snapshot)
    rows = [
        [cell if cell != "" else "-" for cell in _row(snapshot, user, teams)]
        for user in _ranked(snapshot)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = [i >= 3 for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out) + "\n"


def render(snapshot: Snapshot, fmt: str, *, registry: CollectorRegistry | None = None) -> str:
    """``snapshot`` as text in ``fmt`` (one of :data:`FORMATS`).

    ``prometheus`` is exactly the text exposition ``/metrics`` serves; pass the
    service's ``registry`` to include every collector registered on it, otherwise
    a registry with the snapshot collectors is built for ``snapshot``.
    """
    if fmt == "prometheus":
        if registry is None:
            registry = build_registry(lambda: snapshot, version=__version__)
        return generate_latest(registry).decode()
    if fmt == "json":
        return _json(snapshot)
    if fmt == "csv":
        return _csv(snapshot)
    if fmt == "table":
        return _table(snapshot)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")

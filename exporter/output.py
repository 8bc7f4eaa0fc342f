"""Render one scan's snapshot for ``scan --output table|json|csv|prometheus``.

Names come from GitLab and the configuration: CSV cells are neutralised for
spreadsheets (:func:`~exporter.text.spreadsheet_cell`), the table's text is escaped for
the terminal (:func:`~exporter.text.terminal_text`); JSON escapes by itself.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.collectors import build_registry
from exporter.score import (
    NO_TEAM,
    TeamEntry,
    format_number,
    leaderboard,
    team_members,
    team_totals,
    user_score,
    user_status,
)
from exporter.snapshot import ISSUE_STATES, MERGE_REQUEST_STATES, PROJECT_KINDS, Snapshot
from exporter.text import spreadsheet_cell, terminal_text

__all__ = ["FORMATS", "leaderboard_rows", "render"]

FORMATS = ("table", "json", "csv", "prometheus")


def _teams_by_user(snapshot: Snapshot) -> dict[str, list[str]]:
    teams: dict[str, list[str]] = {}
    for team in sorted(snapshot.teams):
        for member in team_members(snapshot, team):
            names = teams.setdefault(member.username, [])
            if team not in names:
                names.append(team)
    return teams


def _number(value: float | None) -> int | float | None:
    """Whole numbers as ``int`` (``45``, not ``45.0``) for JSON."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def leaderboard_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    """One row per team membership, teams ranked by score and members ranked inside,
    then the users in no team (``team`` empty). The rows of ``--output csv`` and of
    the ``leaderboard`` list of ``--output json``; ``None`` where a user has no numbers."""
    rows: list[dict[str, Any]] = []
    for entry in leaderboard(snapshot):
        totals = entry.totals
        counted = totals.members_counted > 0 and entry.name != NO_TEAM
        for member in entry.members:
            stats = member.user.stats
            row: dict[str, Any] = {
                "team": entry.name,
                "team_rank": entry.rank,
                "team_score": _number(totals.score) if counted else None,
                "project": entry.project,
                "rank": member.rank,
                "user": member.user.username,
                "score": _number(member.score),
                "commits": stats.commits if stats is not None else None,
            }
            for period in snapshot.periods:
                row[f"commits_{period}"] = (
                    stats.period_commits.get(period, 0) if stats is not None else None
                )
            for state in MERGE_REQUEST_STATES:
                row[f"merge_requests_{state}"] = (
                    stats.merge_requests.get(state, 0) if stats is not None else None
                )
            row["merge_requests_total"] = (
                sum(stats.merge_requests.values()) if stats is not None else None
            )
            for state in ISSUE_STATES:
                row[f"issues_{state}"] = stats.issues.get(state, 0) if stats is not None else None
            row["status"] = user_status(member.user)
            rows.append(row)
    return rows


def _json(snapshot: Snapshot) -> str:
    teams = _teams_by_user(snapshot)
    weights = snapshot.weights
    users: list[dict[str, Any]] = []
    for name in sorted(snapshot.users):
        user = snapshot.users[name]
        stats = user.stats
        users.append(
            {
                "user": name,
                "teams": teams.get(name, []),
                "status": user_status(user),
                "error": user.last_error_message,
                "score": _number(user_score(stats, weights)) if stats is not None else None,
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
                "merge_requests": (
                    {s: stats.merge_requests.get(s, 0) for s in MERGE_REQUEST_STATES}
                    if stats is not None
                    else {}
                ),
                "issues": (
                    {s: stats.issues.get(s, 0) for s in ISSUE_STATES} if stats is not None else {}
                ),
                "last_success": user.last_success,
                "failures": {r: user.failures[r] for r in sorted(user.failures)},
            }
        )
    team_docs: list[dict[str, Any]] = []
    for team in sorted(snapshot.teams):
        members = team_members(snapshot, team)
        totals = team_totals(members, snapshot.periods, weights)
        team_docs.append(
            {
                "team": team,
                "project": snapshot.team_projects.get(team, ""),
                "members": sorted(m.username for m in members),
                "score": _number(totals.score),
                "commits": totals.commits,
                "periods": dict(totals.period_commits),
            }
        )
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
        "score_weights": {
            "commits": weights.commits,
            "merged_merge_requests": weights.merged_merge_requests,
            "merge_requests": weights.merge_requests,
            "closed_issues": weights.closed_issues,
        },
    }
    document = {
        "leaderboard": leaderboard_rows(snapshot),
        "users": users,
        "teams": team_docs,
        "scan": scan_doc,
    }
    return json.dumps(document, indent=2) + "\n"


def _csv(snapshot: Snapshot) -> str:
    rows = leaderboard_rows(snapshot)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_csv_columns(snapshot), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # names: never a formula in a spreadsheet
        return spreadsheet_cell(value)
    return str(value)


def _csv_columns(snapshot: Snapshot) -> list[str]:
    return [
        "team", "team_rank", "team_score", "project", "rank", "user", "score", "commits",
        *(f"commits_{p}" for p in snapshot.periods),
        *(f"merge_requests_{s}" for s in MERGE_REQUEST_STATES),
        "merge_requests_total",
        *(f"issues_{s}" for s in ISSUE_STATES),
        "status",
    ]  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def _table(snapshot: Snapshot) -> str:
    """Teams ranked by score, members ranked inside; then the users in no team."""
    header = [
        "rank", "user", "score", "commits", *snapshot.periods,
        "mrs merged/total", "issues closed", "status",
    ]  # fmt: skip
    numeric = [True, False, True, True, *(True for _ in snapshot.periods), True, True, False]
    board = leaderboard(snapshot)
    blocks: list[tuple[str, list[list[str]]]] = []
    for entry in board:
        rows: list[list[str]] = []
        for member in entry.members:
            stats = member.user.stats
            if stats is None:
                numbers = ["-"] * (2 + len(snapshot.periods) + 2)
            else:
                numbers = [
                    _cell(member.score),
                    str(stats.commits),
                    *(str(stats.period_commits.get(p, 0)) for p in snapshot.periods),
                    f"{stats.merge_requests.get('merged', 0)}/{sum(stats.merge_requests.values())}",
                    str(stats.issues.get("closed", 0)),
                ]
            status = user_status(member.user)
            username = terminal_text(member.user.username)
            rows.append([str(member.rank), username, *numbers, terminal_text(status)])
        blocks.append((terminal_text(_team_title(entry, snapshot)), rows))
    every_row = [header] + [row for _, rows in blocks for row in rows]
    widths = [max(len(r[i]) for r in every_row) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return ("  " + "  ".join(parts)).rstrip()

    out: list[str] = []
    for title, rows in blocks:
        if out:
            out.append("")
        out += [title, line(header), line(["-" * w for w in widths])]
        out += [line(row) for row in rows]
    if not out:
        out.append("nobody scanned")
    return "\n".join(out) + "\n"


def _team_title(entry: TeamEntry, snapshot: Snapshot) -> str:
    if entry.name == NO_TEAM:
        return "In no team"
    title = f"#{entry.rank} {entry.name}"
    if entry.project:
        title += f" (project: {entry.project})"
    totals = entry.totals
    if totals.members_counted == 0:
        return title + ": no numbers yet"
    periods = ", ".join(f"{p} {totals.period_commits.get(p, 0)}" for p in snapshot.periods)
    return (
        f"{title}: score {format_number(totals.score)}, commits {totals.commits} ({periods})"
    )


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

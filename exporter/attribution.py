"""Pure aggregation: one user's numbers from the commits of the user's projects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Protocol

from exporter.author_index import AuthorIndex
from exporter.author_index import CommitLike as CommitLike
from exporter.matching import Identity
from exporter.periods import PeriodTable, local_time
from exporter.snapshot import WEEK_HOURS, UserStats, frozen_map


class ItemLike(Protocol):
    """A merge request or an issue."""

    @property
    def state(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Window:
    """The look-back window, half-open: ``start <= authored < end``."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class ProjectSets:
    """Project ids a user is looked for in, by how they were found."""

    personal: frozenset[int]
    contributed: frozenset[int]  # as GitLab lists them; may overlap personal
    pushed: frozenset[int]

    @property
    def all(self) -> frozenset[int]:
        return self.personal | self.contributed | self.pushed


def attribute(
    identity: Identity,
    projects: ProjectSets,
    indexes: Mapping[int, AuthorIndex],
    *,
    window: Window,
    zone: tzinfo | None,
    table: PeriodTable,
) -> UserStats:
    """Count the user's distinct commits (by SHA) in the window, per period and per project kind.

    Each project's commits come indexed by author (:class:`AuthorIndex`): only the
    user's own are looked at. A SHA found in several projects (forks) counts once; every
    project it was found in counts as active. The same commits are counted by local
    weekday and hour and by local date, local as for the periods.
    """
    seen: set[str] = set()
    periods: dict[str, int] = dict.fromkeys(table.names, 0)
    hours = [0] * WEEK_HOURS
    days: dict[str, int] = {}
    keys = identity.author_keys()
    active = 0
    for project_id in sorted(projects.all):
        index = indexes.get(project_id)
        if index is None:
            continue
        found_here = False
        for sha, author_name, author_email, authored in index.lookup(keys):
            if authored not in window or not identity.matches(author_name, author_email):
                continue
            found_here = True
            if sha in seen:
                continue
            seen.add(sha)
            local = local_time(authored, zone)
            periods[table.period_of_minute(local.hour * 60 + local.minute)] += 1
            hours[local.weekday() * 24 + local.hour] += 1
            day = local.date().isoformat()
            days[day] = days.get(day, 0) + 1
        active += found_here
    return UserStats(
        commits=len(seen),
        period_commits=frozen_map(periods),
        projects=frozen_map(
            {
                "personal": len(projects.personal),
                "contributed": len(projects.contributed - projects.personal),
                "active": active,
            }
        ),
        hours=tuple(hours),
        days=frozen_map(dict(sorted(days.items()))),
    )


MERGE_REQUEST_STATE_ALIASES: Mapping[str, str] = {"locked": "opened"}


def count_by_state(
    items: Iterable[ItemLike],
    *,
    window: Window,
    states: Sequence[str],
    aliases: Mapping[str, str] | None = None,
) -> Mapping[str, int]:
    """Items created in the window, counted by current state (every state in ``states``
    present, zero-filled). ``aliases`` folds other states into those (GitLab's ``locked``
    merge request is still open); items in any other state are not counted."""
    counts = dict.fromkeys(states, 0)
    folded = aliases or {}
    for item in items:
        if item.created_at not in window:
            continue
        state = folded.get(item.state, item.state)
        if state in counts:
            counts[state] += 1
    return frozen_map(counts)


def distinct(values: Iterable[str]) -> tuple[str, ...]:
    """Case-insensitively distinct values, first spelling kept, order kept."""
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.casefold(), value)
    return tuple(seen.values())

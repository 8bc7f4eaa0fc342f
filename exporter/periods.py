"""Pure time logic: GitLab timestamps, local-time periods and bucketing.

A period is a half-open local wall-clock window ``[start, end)``; ``end`` may be
``24:00`` and a period whose start is after its end wraps past midnight. Times of
day not covered by any configured period fall into :data:`OTHER_PERIOD`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

OTHER_PERIOD = "other"
COMMIT_ZONE = "commit"
MINUTES_PER_DAY = 24 * 60

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$"
)
_PERIOD = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_PERIOD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def parse_gitlab_datetime(value: str) -> datetime:
    """Parse a GitLab timestamp into an aware datetime that keeps its own offset.

    Accepts ``2016-09-20T09:26:24.000-07:00``, ``2012-09-20T09:06:12+03:00`` and
    ``2023-01-05T10:43:19.667Z``. A timestamp without an offset is rejected: its
    meaning would be a guess.
    """
    match = _TIMESTAMP.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a GitLab timestamp with an offset: {value!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset == "Z":
        offset = "+00:00"
    elif ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    text = f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micro:06d}{offset}"
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True)
class Period:
    """A named local-time window, in minutes after midnight, half-open."""

    name: str
    start: int
    end: int

    def contains(self, minute_of_day: int) -> bool:
        if self.start < self.end:
            return self.start <= minute_of_day < self.end
        # wraps past midnight, e.g. 22:00-02:00
        return minute_of_day >= self.start or minute_of_day < self.end


def _parse_clock(hours: str, minutes: str, *, allow_24: bool) -> int:
    h, m = int(hours), int(minutes)
    if m >= 60 or h > 24 or (h == 24 and (m != 0 or not allow_24)):
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return h * 60 + m


def parse_period(name: str, spec: str) -> Period:
    """Parse ``"HH:MM-HH:MM"`` into a :class:`Period`; raise ``ValueError`` with the reason."""
    if not _PERIOD_NAME.match(name):
        raise ValueError(
            f"period name {name!r} must be lower-case letters, digits and underscores"
        )
    if name == OTHER_PERIOD:
        raise ValueError(f"period name {OTHER_PERIOD!r} is reserved for uncovered times")
    match = _PERIOD.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"{spec!r} is not a window of the form HH:MM-HH:MM")
    start = _parse_clock(match.group(1), match.group(2), allow_24=False)
    end = _parse_clock(match.group(3), match.group(4), allow_24=True)
    if start == end % MINUTES_PER_DAY and end != MINUTES_PER_DAY:
        raise ValueError(f"{spec!r} is empty: start equals end")
    return Period(name=name, start=start, end=end)


@dataclass(frozen=True, slots=True)
class PeriodTable:
    """All configured periods, checked for overlaps, with a minute-of-day lookup."""

    periods: tuple[Period, ...]
    lookup: tuple[str, ...]  # 1440 entries: minute of day -> period name

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a commit can be counted under, ``other`` last when the day has gaps."""
        names = tuple(p.name for p in self.periods)
        return (*names, OTHER_PERIOD) if self.has_gaps else names

    @property
    def has_gaps(self) -> bool:
        return OTHER_PERIOD in self.lookup

    def period_of_minute(self, minute_of_day: int) -> str:
        return self.lookup[minute_of_day]


def build_period_table(specs: Mapping[str, str]) -> PeriodTable:
    """Parse every period; overlapping periods are an error (a commit has one period)."""
    periods = tuple(parse_period(name, spec) for name, spec in specs.items())
    lookup: list[str] = [OTHER_PERIOD] * MINUTES_PER_DAY
    for period in periods:
        for minute in range(MINUTES_PER_DAY):
            if period.contains(minute):
                if lookup[minute] != OTHER_PERIOD:
                    clock = f"{minute // 60:02d}:{minute % 60:02d}"
                    raise ValueError(
                        f"periods {lookup[minute]!r} and {period.name!r} overlap at {clock}"
                    )
                lookup[minute] = period.name
    return PeriodTable(periods=periods, lookup=tuple(lookup))


def resolve_zone(name: str) -> tzinfo | None:
    """``None`` for ``commit`` (each commit's own offset), else the IANA zone."""
    if name == COMMIT_ZONE:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def local_time(moment: datetime, zone: tzinfo | None) -> datetime:
    """An aware ``moment`` in ``zone``, or in its own offset when ``None``."""
    return moment if zone is None else moment.astimezone(zone)


def period_of(moment: datetime, zone: tzinfo | None, table: PeriodTable) -> str:
    """The period of an aware ``moment`` in ``zone`` (or in its own offset when ``None``)."""
    local = local_time(moment, zone)
    return table.period_of_minute(local.hour * 60 + local.minute)

"""Pure SVG pictures for the leaderboard page: bars, stacked bars, a weekday x hour
heatmap and commits per day. Inline SVG strings, no scripts, styled by the page's CSS.

Every mark carries its value in ``data-*`` attributes and a ``<title>`` (the browser's
tooltip), so what a picture shows can be read back exactly.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

from exporter.snapshot import WEEK_HOURS

__all__ = ["WEEKDAYS", "bar", "daily_chart", "heatmap", "period_class", "stacked_bar"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
PERIOD_CLASSES = 8  # p0 .. p7 in the page's CSS; "other" has its own
HEAT_LEVELS = 4  # h1 .. h4 in the page's CSS; h0 is no commit

# heatmap geometry, in SVG user units
_CELL = 14
_GAP = 2
_LEFT = 30  # room for weekday labels
_TOP = 14  # room for hour labels
# daily chart geometry
_DAILY_WIDTH = 360
_DAILY_HEIGHT = 80
_DAILY_LEFT = 26
_DAILY_BOTTOM = 16
_DATE_LABELS = 5


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def period_class(periods: Sequence[str], name: str) -> str:
    """The CSS class colouring ``name``: ``p-other`` for ``other``, else by position."""
    if name == "other":
        return "p-other"
    return f"p{periods.index(name) % PERIOD_CLASSES}"


def bar(value: float, maximum: float, *, label: str) -> str:
    """A horizontal bar from 0: ``value`` as a share of ``maximum`` (the table's largest)."""
    width = 100.0 * value / maximum if maximum > 0 else 0.0
    title = html.escape(label)
    return (
        f'<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" '
        f'aria-label="{title}" data-value="{_num(value)}" data-max="{_num(maximum)}">'
        f'<rect class="track" width="100" height="10"/>'
        f'<rect class="fill" width="{_num(width)}" height="10"><title>{title}</title></rect>'
        "</svg>"
    )


def stacked_bar(parts: Sequence[tuple[str, int]], maximum: int, periods: Sequence[str]) -> str:
    """One bar from 0 made of ``(period, commits)`` segments in order, scaled so that
    ``maximum`` commits fill the width."""
    total = sum(count for _, count in parts)
    x = 0.0
    rects: list[str] = []
    for name, count in parts:
        width = 100.0 * count / maximum if maximum > 0 else 0.0
        label = html.escape(f"{name}: {count}")
        rects.append(
            f'<rect class="seg {period_class(periods, name)}" x="{_num(x)}" '
            f'width="{_num(width)}" height="10" data-period="{html.escape(name)}" '
            f'data-count="{count}"><title>{label}</title></rect>'
        )
        x += width
    summary = html.escape(", ".join(f"{name} {count}" for name, count in parts))
    return (
        f'<svg class="bar stacked" viewBox="0 0 100 10" preserveAspectRatio="none" '
        f'role="img" aria-label="{summary}" data-value="{total}" data-max="{maximum}">'
        f'<rect class="track" width="100" height="10"/>{"".join(rects)}</svg>'
    )


def _heat_level(count: int, maximum: int) -> int:
    if count <= 0 or maximum <= 0:
        return 0
    return max(1, min(HEAT_LEVELS, -(-count * HEAT_LEVELS // maximum)))


def heatmap(hours: Sequence[int], *, caption: str) -> str:
    """Commits by local weekday (rows, Monday first) and hour (columns, 0-23)."""
    counts = list(hours) if len(hours) == WEEK_HOURS else [0] * WEEK_HOURS
    top = max(counts)
    step = _CELL + _GAP
    width = _LEFT + 24 * step
    height = _TOP + 7 * step
    parts = [
        f'<svg class="heatmap" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(caption)}" data-total="{sum(counts)}" data-max="{top}">'
    ]
    for hour in range(0, 24, 3):
        parts.append(
            f'<text class="hour-label" x="{_LEFT + hour * step}" y="{_TOP - 4}">{hour:02d}</text>'
        )
    for day, name in enumerate(WEEKDAYS):
        y = _TOP + day * step
        parts.append(f'<text class="day-label" x="0" y="{y + _CELL - 3}">{name}</text>')
        for hour in range(24):
            count = counts[day * 24 + hour]
            title = f"{name} {hour:02d}:00-{hour + 1:02d}:00: {count} commit" + (
                "" if count == 1 else "s"
            )
            parts.append(
                f'<rect class="cell h{_heat_level(count, top)}" x="{_LEFT + hour * step}" '
                f'y="{y}" width="{_CELL}" height="{_CELL}" rx="2" data-weekday="{day}" '
                f'data-hour="{hour}" data-count="{count}"><title>{title}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def daily_chart(days: Mapping[str, int], first: date, last: date, *, caption: str) -> str:
    """Commits per local date from ``first`` to ``last`` (inclusive), one bar per day."""
    dates = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    counts = [days.get(d.isoformat(), 0) for d in dates]
    top = max(counts, default=0)
    plot = _DAILY_WIDTH - _DAILY_LEFT
    slot = plot / max(1, len(dates))
    gap = min(2.0, slot / 4)
    height = _DAILY_HEIGHT
    parts = [
        f'<svg class="daily" viewBox="0 0 {_DAILY_WIDTH} {height + _DAILY_BOTTOM}" '
        f'role="img" aria-label="{html.escape(caption)}" data-total="{sum(counts)}" '
        f'data-max="{top}">',
        f'<line class="axis" x1="{_DAILY_LEFT}" y1="{height}" x2="{_DAILY_WIDTH}" y2="{height}"/>',
        f'<text class="y-label" x="{_DAILY_LEFT - 4}" y="10">{top}</text>',
        f'<text class="y-label" x="{_DAILY_LEFT - 4}" y="{height}">0</text>',
    ]
    for n, (day, count) in enumerate(zip(dates, counts, strict=True)):
        bar_height = (height - 4) * count / top if top else 0.0
        x = _DAILY_LEFT + n * slot
        title = f"{WEEKDAYS[day.weekday()]} {day.isoformat()}: {count} commit" + (
            "" if count == 1 else "s"
        )
        weekend = " weekend" if day.weekday() >= 5 else ""
        parts.append(
            f'<rect class="day{weekend}" x="{_num(x + gap / 2)}" '
            f'y="{_num(height - bar_height)}" width="{_num(slot - gap)}" '
            f'height="{_num(bar_height)}" data-date="{day.isoformat()}" '
            f'data-count="{count}"><title>{title}</title></rect>'
        )
    every = max(1, -(-len(dates) // _DATE_LABELS))
    for n in range(0, len(dates), every):
        x = _DAILY_LEFT + n * slot
        parts.append(
            f'<text class="x-label" x="{_num(x)}" y="{height + _DAILY_BOTTOM - 3}">'
            f"{dates[n].strftime('%b %d')}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)

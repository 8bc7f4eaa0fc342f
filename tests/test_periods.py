"""Period parsing and bucketing: half-open windows, zones with daylight saving, commit mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from exporter.periods import (
    OTHER_PERIOD,
    build_period_table,
    parse_gitlab_datetime,
    parse_period,
    period_of,
    resolve_zone,
)

OFFICE = build_period_table({"morning": "09:00-12:30", "afternoon": "12:30-17:00"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-09-20T09:26:24.000-07:00", datetime(2016, 9, 20, 16, 26, 24, tzinfo=UTC)),
        ("2012-09-20T09:06:12+03:00", datetime(2012, 9, 20, 6, 6, 12, tzinfo=UTC)),
        ("2023-01-05T10:43:19.667Z", datetime(2023, 1, 5, 10, 43, 19, 667000, tzinfo=UTC)),
        ("2023-01-05T10:43:19+0530", datetime(2023, 1, 5, 5, 13, 19, tzinfo=UTC)),
    ],
)
def test_gitlab_timestamps_with_and_without_milliseconds(text: str, expected: datetime) -> None:
    assert parse_gitlab_datetime(text) == expected


def test_timestamp_keeps_its_own_offset() -> None:
    parsed = parse_gitlab_datetime("2016-09-20T09:26:24.000-07:00")
    assert parsed.utcoffset() == timedelta(hours=-7)
    assert (parsed.hour, parsed.minute) == (9, 26)


@pytest.mark.parametrize("text", ["2016-09-20T09:26:24", "2016-09-20", "yesterday", ""])
def test_timestamp_without_offset_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gitlab_datetime(text)


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        ("08:59", OTHER_PERIOD),
        ("09:00", "morning"),  # start is inside
        ("12:29", "morning"),
        ("12:30", "afternoon"),  # end of morning is outside it: half-open
        ("16:59", "afternoon"),
        ("17:00", OTHER_PERIOD),
        ("00:00", OTHER_PERIOD),
    ],
)
def test_half_open_boundaries(clock: str, expected: str) -> None:
    hour, minute = map(int, clock.split(":"))
    moment = datetime(2024, 3, 1, hour, minute, 30, tzinfo=UTC)
    assert period_of(moment, ZoneInfo("UTC"), OFFICE) == expected


def test_gaps_add_other_and_full_day_does_not() -> None:
    assert OFFICE.names == ("morning", "afternoon", OTHER_PERIOD)
    whole = build_period_table({"day": "06:00-18:00", "night": "18:00-06:00"})
    assert whole.names == ("day", "night")
    assert period_of(datetime(2024, 1, 1, 2, 0, tzinfo=UTC), None, whole) == "night"
    assert period_of(datetime(2024, 1, 1, 23, 59, tzinfo=UTC), None, whole) == "night"


def test_end_of_day_is_24_00() -> None:
    table = build_period_table({"late": "18:00-24:00"})
    assert period_of(datetime(2024, 1, 1, 23, 59, 59, tzinfo=UTC), None, table) == "late"
    assert period_of(datetime(2024, 1, 1, 0, 0, tzinfo=UTC), None, table) == OTHER_PERIOD


def test_zone_with_daylight_saving() -> None:
    """The same UTC time of day lands in different local periods in summer and winter."""
    new_york = ZoneInfo("America/New_York")
    summer = datetime(2024, 7, 1, 16, 45, tzinfo=UTC)  # 12:45 EDT (UTC-4)
    winter = datetime(2024, 1, 15, 16, 45, tzinfo=UTC)  # 11:45 EST (UTC-5)
    assert period_of(summer, new_york, OFFICE) == "afternoon"
    assert period_of(winter, new_york, OFFICE) == "morning"
    # the spring-forward day: 06:45 UTC on 2024-03-10 is 01:45 EST; 07:45 UTC is 03:45 EDT
    table = build_period_table({"two": "02:00-03:00"})
    assert period_of(datetime(2024, 3, 10, 6, 45, tzinfo=UTC), new_york, table) == OTHER_PERIOD
    assert period_of(datetime(2024, 3, 10, 7, 45, tzinfo=UTC), new_york, table) == OTHER_PERIOD
    assert period_of(datetime(2024, 3, 11, 6, 30, tzinfo=UTC), new_york, table) == "two"


def test_commit_mode_uses_each_commits_own_offset() -> None:
    # the same instant, authored in Kolkata and in Los Angeles
    kolkata = parse_gitlab_datetime("2024-05-01T10:00:00.000+05:30")
    la = kolkata.astimezone(timezone(timedelta(hours=-7)))
    assert kolkata == la
    assert period_of(kolkata, resolve_zone("commit"), OFFICE) == "morning"
    assert period_of(la, resolve_zone("commit"), OFFICE) == OTHER_PERIOD  # 21:30 the day before
    # whereas a fixed zone puts both in the same period
    zone = resolve_zone("Asia/Kolkata")
    assert period_of(kolkata, zone, OFFICE) == period_of(la, zone, OFFICE) == "morning"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("9-12", "HH:MM-HH:MM"),
        ("25:00-26:00", "not a time of day"),
        ("09:60-10:00", "not a time of day"),
        ("09:00-09:00", "empty"),
        ("24:00-02:00", "not a time of day"),
    ],
)
def test_bad_period_specs(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_period("p", spec)


@pytest.mark.parametrize("name", ["Morning", "other", "has space", "9am"])
def test_bad_period_names(name: str) -> None:
    with pytest.raises(ValueError, match="period name"):
        parse_period(name, "09:00-10:00")


def test_overlapping_periods_are_an_error() -> None:
    with pytest.raises(ValueError, match="overlap at 12:00"):
        build_period_table({"a": "09:00-12:30", "b": "12:00-17:00"})
    with pytest.raises(ValueError, match="overlap"):
        build_period_table({"night": "22:00-02:00", "early": "01:00-03:00"})


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        resolve_zone("Mars/Olympus_Mons")

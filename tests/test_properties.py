"""Property tests (hypothesis): pure logic against naive references, the config loader
against random documents."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, load_config, parse_config
from exporter.matching import Identity
from exporter.periods import (
    OTHER_PERIOD,
    build_period_table,
    parse_gitlab_datetime,
    period_of,
    resolve_zone,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = sorted(zoneinfo.available_timezones()) or ["UTC"]

# --- periods ---------------------------------------------------------------------------


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def period_specs(draw: st.DrawFn) -> dict[str, str]:
    """Non-overlapping windows: cut the day at 2-6 points, name some of the pieces."""
    cuts = sorted(draw(st.sets(st.integers(0, 1439), min_size=2, max_size=6)))
    pieces = [(cuts[i], cuts[(i + 1) % len(cuts)]) for i in range(len(cuts))]
    specs: dict[str, str] = {}
    for index, (start, end) in enumerate(pieces):
        if draw(st.booleans()) or (index == len(pieces) - 1 and not specs):
            end_text = "24:00" if end == 0 else _clock(end)
            specs[f"p{index}"] = f"{_clock(start)}-{end_text}"
    return specs


def naive_period(local_hhmm: str, specs: dict[str, str]) -> str:
    """The reference: compare zero-padded "HH:MM" strings, the way a person reads them."""
    for name, spec in specs.items():
        start, end = spec.split("-")
        if start < end:  # "24:00" sorts after every time of day
            if start <= local_hhmm < end:
                return name
        elif local_hhmm >= start or local_hhmm < end:
            return name
    return OTHER_PERIOD


moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1),
).flatmap(
    lambda naive: st.integers(-14 * 60, 14 * 60).map(
        lambda minutes: naive.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    )
)


@FAST
@given(moment=moments, zone=st.sampled_from(["commit", *ZONES]), specs=period_specs())
def test_period_bucketing_matches_a_naive_reference(
    moment: datetime, zone: str, specs: dict[str, str]
) -> None:
    table = build_period_table(specs)
    local = moment if zone == "commit" else moment.astimezone(zoneinfo.ZoneInfo(zone))
    expected = naive_period(local.strftime("%H:%M"), specs)
    assert period_of(moment, resolve_zone(zone), table) == expected
    assert expected in table.names


@FAST
@given(moment=moments, millis=st.booleans(), zulu=st.booleans())
def test_gitlab_timestamps_round_trip(moment: datetime, millis: bool, zulu: bool) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000 if millis else 0)
    if zulu:
        moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="milliseconds" if millis else "seconds")
    if zulu:
        text = text.replace("+00:00", "Z")
    parsed = parse_gitlab_datetime(text)
    assert parsed == moment
    assert parsed.utcoffset() == moment.utcoffset()  # the commit's own offset is kept


@FAST
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2050, 1, 1)))
def test_timestamps_without_offset_are_refused(naive: datetime) -> None:
    with pytest.raises(ValueError):
        parse_gitlab_datetime(naive.isoformat())


# --- author matching ---------------------------------------------------------------------

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-ßİ",
                min_size=1, max_size=12)
names = st.text(alphabet="abcdeABCDE ßİÉé", min_size=0, max_size=12)


def _vary(draw: st.DrawFn, text: str) -> str:
    """Same text as a person would still call equal: other case, padding."""
    text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\n"]))


@st.composite
def author_cases(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    user = {
        "user_id": draw(st.integers(1, 10**6)),
        "username": draw(words),
        "display_name": draw(names),
        "host": draw(st.sampled_from(["gitlab.com", "gitlab.example.com", "127.0.0.1"])),
        "public_email": draw(st.one_of(st.none(), st.just(""), words.map(lambda w: w + "@mail.example"))),
        "extra_emails": draw(st.lists(words.map(lambda w: w + "@old.example"), max_size=3)),
    }
    noreply = [
        f"{user['user_id']}-{user['username']}@users.noreply.{user['host']}",
        f"{user['username']}@users.noreply.{user['host']}",
    ]
    known = [*noreply, *user["extra_emails"], *([user["public_email"]] if user["public_email"] else [])]
    near = st.sampled_from(known).flatmap(  # substrings and superstrings of a known email
        lambda e: st.sampled_from([e[1:], e[:-1], "x" + e, e + "x", e.split("@")[0]])
    )
    email = draw(st.one_of(st.sampled_from(known).map(lambda e: _vary(draw, e)), near, words))
    name = draw(st.one_of(
        st.sampled_from([user["username"], user["display_name"]]).map(lambda n: _vary(draw, n)),
        st.sampled_from([user["username"], user["display_name"]]).map(lambda n: n + "x"),
        names,
    ))
    return user, name, email


def naive_match(user: dict[str, Any], author_name: str, author_email: str) -> bool:
    def same(a: str, b: str) -> bool:
        return a.strip().casefold() == b.strip().casefold()

    emails = [
        f"{user['user_id']}-{user['username']}@users.noreply.{user['host']}",
        f"{user['username']}@users.noreply.{user['host']}",
        *user["extra_emails"],
    ]
    if user["public_email"] and user["public_email"].strip():
        emails.append(user["public_email"])
    if any(same(author_email, e) for e in emails):
        return True
    people = [n for n in (user["display_name"], user["username"]) if n.strip()]
    return any(same(author_name, n) for n in people)


@FAST
@given(author_cases())
def test_author_matching_matches_a_naive_reference(case: tuple[dict[str, Any], str, str]) -> None:
    user, name, email = case
    identity = Identity.build(**user)
    assert identity.matches(name, email) == naive_match(user, name, email)


@FAST
@given(author_cases(), st.sampled_from(["x", "-dev", ".old"]))
def test_no_substring_matches(case: tuple[dict[str, Any], str, str], extra: str) -> None:
    user, _, _ = case
    identity = Identity.build(**user)
    email = f"{user['username']}@users.noreply.{user['host']}"
    longer = email + extra  # a superstring of a known email is someone else
    assume(not naive_match(user, "", longer))
    assert not identity.matches("", longer)
    assert identity.matches("", email.upper())


# --- the config loader never raises anything but ConfigError --------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from([
        "https://gitlab.example.com", "http://", "ftp://x", "https://g.example/?q=1", "UTC",
        "Asia/Kolkata", "commit", "Europe", "Etc", "../x", "a" * 300, "09:00-12:30",
        "22:00-02:00", "24:00-01:00", "00:00-24:00", "9:0-10:00", "token.txt", "missing.txt",
        ".", "", "teams.json", "glpat-abc", "0.5", "-1", "1e400", "\x00",
    ]),
)
KEYS = [
    "gitlab", "url", "token", "token_file", "requests_per_second", "max_concurrency",
    "timeout_seconds", "max_retries", "max_response_bytes", "tls_verify", "scan",
    "interval_seconds", "lookback_days", "timezone", "periods", "morning", "night", "other",
    "Bad Name", "teams", "name", "members", "group", "project", "teams_file", "users",
    "username", "emails", "team_name", "typo",
]
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), scalars), inner, max_size=5),
    ),
    max_leaves=25,
)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """Mostly near-valid documents (so validation goes deep), sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    gitlab = {"url": "https://gitlab.example.com", "token": "glpat-abc"}
    gitlab.update(draw(st.dictionaries(st.sampled_from(KEYS[1:10]), values, max_size=3)))
    document: dict[Any, Any] = {
        "gitlab": gitlab,
        "teams": [{"name": "a", "members": ["x"]}],
    }
    document.update(draw(st.dictionaries(st.sampled_from(
        ["scan", "teams", "users", "teams_file", "typo"]), values, max_size=3)))
    if draw(st.booleans()):
        document["scan"] = draw(st.dictionaries(st.sampled_from(KEYS[11:19]), values, max_size=4))
    return document


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("config")
    (directory / "token.txt").write_text("glpat-from-file\n")
    (directory / "teams.json").write_text('{"teams": [{"team_name": "t", "members": [{"name": "A", "username": "a"}]}]}')
    return directory


@FAST
@given(document=documents())
def test_config_documents_give_a_config_or_a_config_error(base: Path, document: Any) -> None:
    try:
        config = parse_config(document, env={}, base=base)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message  # one line
        assert "Traceback" not in message
    else:
        assert isinstance(config, Config)
        assert config.token


@FAST
@given(text=st.one_of(st.text(max_size=200), values.map(lambda v: yaml.safe_dump(v))))
def test_config_files_give_a_config_or_a_config_error(base: Path, text: str) -> None:
    path = base / "config.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path, env={})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(config, Config)

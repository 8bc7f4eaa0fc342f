"""Logging: formats, level filtering and redaction of registered secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from exporter.logs import clear_secrets, configure_logging, redact, register_secret

SECRET = "glpat-s3cr3t-T0KEN"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()
    structlog.reset_defaults()


def configured(fmt: str = "console", level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level=level, fmt=fmt, stream=stream)
    register_secret(SECRET)
    return stream


def test_secret_in_event_and_kwargs() -> None:
    stream = configured()
    log = structlog.get_logger("test")
    log.info(f"using token {SECRET}", header=f"PRIVATE-TOKEN: {SECRET}", nested={"k": [SECRET]})
    out = stream.getvalue()
    assert SECRET not in out
    assert out.count("[REDACTED]") == 3
    assert "using token [REDACTED]" in out


class Opaque:
    def __repr__(self) -> str:
        return f"Opaque({SECRET})"


def test_secret_in_repr_of_other_values() -> None:
    stream = configured()
    structlog.get_logger().info("event", obj=Opaque(), count=3)
    out = stream.getvalue()
    assert SECRET not in out
    assert "Opaque([REDACTED])" in out
    assert "count=3" in out


def test_secret_in_exception_traceback() -> None:
    stream = configured()
    log = structlog.get_logger()
    try:
        raise RuntimeError(f"request failed with {SECRET}")
    except RuntimeError:
        log.exception("scan crashed")
    try:
        raise RuntimeError(f"again {SECRET}")
    except RuntimeError as exc:
        log.error("scan crashed", exc_info=exc)
    out = stream.getvalue()
    assert "Traceback" in out
    assert "RuntimeError: request failed with [REDACTED]" in out
    assert "RuntimeError: again [REDACTED]" in out
    assert SECRET not in out


def test_json_format_redacts() -> None:
    stream = configured(fmt="json")
    log = structlog.get_logger()
    log.warning(f"token {SECRET}", token=SECRET, attempts=2)
    try:
        raise ValueError(SECRET)
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert SECRET not in stream.getvalue()
    first, second = lines
    assert first["event"] == "token [REDACTED]"
    assert first["token"] == "[REDACTED]"
    assert first["attempts"] == 2
    assert first["level"] == "warning"
    assert "T" in first["timestamp"]
    assert "ValueError: [REDACTED]" in second["exception"]


def test_stdlib_records_redacted() -> None:
    stream = configured()
    logging.getLogger("aiohttp.client").warning("header %s", SECRET)
    out = stream.getvalue()
    assert "header [REDACTED]" in out
    assert SECRET not in out


def test_level_filtering() -> None:
    stream = configured(level="warning")
    log = structlog.get_logger()
    log.debug("debug-line")
    log.info("info-line")
    log.warning("warning-line")
    log.error("error-line")
    out = stream.getvalue()
    assert "debug-line" not in out and "info-line" not in out
    assert "warning-line" in out and "error-line" in out

    stream = configured(level="debug")
    structlog.get_logger().debug("debug-line")
    assert "debug-line" in stream.getvalue()


def test_reconfigure_switches_stream_and_format() -> None:
    log = structlog.get_logger()  # bound before configuration, as modules do
    first = configured(fmt="json")
    log.info("one")
    second = configured(fmt="console")
    log.info("two")
    assert json.loads(first.getvalue())["event"] == "one"
    assert "two" in second.getvalue() and "two" not in first.getvalue()
    # exactly one stdlib handler of ours after several configurations
    logging.getLogger("x").warning("stdlib-once")
    assert second.getvalue().count("stdlib-once") == 1


def test_short_and_empty_secrets_ignored() -> None:
    register_secret("")
    register_secret("abc")
    assert redact("abc def") == "abc def"
    register_secret("abcd")
    assert redact("abcd def") == "[REDACTED] def"


def test_overlapping_secrets() -> None:
    register_secret("token")
    register_secret("token-extended")
    assert redact("x token-extended y token") == "x [REDACTED] y [REDACTED]"


def test_bad_level_and_format() -> None:
    with pytest.raises(ValueError):
        configure_logging(level="loud", stream=io.StringIO())
    with pytest.raises(ValueError):
        configure_logging(fmt="xml", stream=io.StringIO())

"""Logging setup: structlog to stderr, JSON or console, with secret redaction.

Every registered secret (the GitLab token, typically) is replaced by ``[REDACTED]``
in every string of every event — the message, values, reprs of other values and
rendered exception tracebacks — before the event is rendered. Records of the
standard :mod:`logging` module (aiohttp, asyncio) go through the same chain.

On the console every string is escaped for the terminal (ESC and OSC sequences from a
GitLab name show as ``\x1b``, a newline in a value cannot forge a second line); JSON
lines escape control characters by themselves.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from exporter.text import terminal_text

__all__ = [
    "FORMATS",
    "LEVELS",
    "REDACTED",
    "clear_secrets",
    "configure_logging",
    "redact",
    "redact_processor",
    "register_secret",
]

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4
FORMATS = ("console", "json")
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another goes first
_handler: logging.Handler | None = None


def register_secret(value: str) -> None:
    """Redact ``value`` from every later log line (ignored when shorter than 4 chars)."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    # also as it appears inside URLs (percent-encoded, or form-encoded)
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | forms, key=len, reverse=True))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secrets
    with _lock:
        _secrets = ()


def _redact_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _redact_text(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {
            _redact_value(k, secrets): _redact_value(v, secrets) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [_redact_value(v, secrets) for v in value]
        return items if isinstance(value, list) else type(value)(items)
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        redacted = _redact_text(text, secrets)
        return value if redacted == text else redacted
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return value
    redacted = _redact_text(text, secrets)
    return value if redacted == text else redacted


def redact(value: Any) -> Any:
    """``value`` with every registered secret replaced by ``[REDACTED]``.

    Strings are redacted; containers are copied with their items redacted; any other
    value whose repr contains a secret is replaced by its redacted repr.
    """
    secrets = _secrets
    if not secrets:
        return value
    return _redact_value(value, secrets)


def redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor applying :func:`redact` to every key and value."""
    secrets = _secrets
    if not secrets:
        return event_dict
    return {key: _redact_value(value, secrets) for key, value in event_dict.items()}


_MULTILINE_KEYS = frozenset({"exception", "stack"})  # rendered tracebacks keep their lines


def terminal_processor(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """structlog processor escaping, in every string value, what a terminal acts on."""
    return {
        key: (
            terminal_text(value, keep_newlines=key in _MULTILINE_KEYS)
            if isinstance(value, str)
            else value
        )
        for key, value in event_dict.items()
    }


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")


def configure_logging(
    level: str = "info", fmt: str = "console", stream: TextIO | None = None
) -> None:
    """Configure structlog (and the stdlib root logger) to write to ``stream``.

    ``stream`` defaults to the current ``sys.stderr``. Safe to call more than once:
    each call replaces the previous configuration.
    """
    global _handler
    try:
        numeric_level = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}"
        ) from None
    renderer = _renderer(fmt)
    out = stream if stream is not None else sys.stderr

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        # Exceptions become text here, so the redaction below covers tracebacks too.
        structlog.processors.format_exc_info,
        redact_processor,
        *([terminal_processor] if fmt == "console" else []),
        renderer,
    ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

    # Standard-library records (aiohttp, asyncio) through the same chain.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    with _lock:
        if _handler is not None:
            root.removeHandler(_handler)
        root.addHandler(handler)
        _handler = handler
    root.setLevel(numeric_level)

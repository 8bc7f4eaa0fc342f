"""Text from elsewhere (GitLab, above all) made safe: once where it enters, then for
each place it goes.

- :func:`valid_text`: at the API layer, every string GitLab sends becomes valid Unicode
  (a lone surrogate, which no encoder writes, becomes U+FFFD) of bounded length.
- :func:`terminal_text`: for a terminal (``scan --output table``, console logs), control
  characters (ESC and OSC sequences, C1 controls, DEL) and bidirectional overrides are
  shown as escapes (``\\x1b``) instead of being acted on.
- :func:`spreadsheet_cell`: for CSV, OWASP's rule against formula injection: a cell
  starting with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or NUL gets a
  leading single quote, so a spreadsheet shows it as text instead of running it.

HTML escaping stays with :func:`html.escape`, label escaping with prometheus_client.
"""

from __future__ import annotations

import re

__all__ = ["MAX_TEXT_LENGTH", "spreadsheet_cell", "terminal_text", "valid_text"]

MAX_TEXT_LENGTH = 1024
"""GitLab's own names and emails stop at 255 characters; a commit's author name has no
limit in git. Longer strings are cut here: nothing we show or match needs more."""

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls, DEL, C1 controls, bidirectional embeddings, overrides and isolates
_TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_LINE_UNSAFE_KEEP_NEWLINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0")


def valid_text(value: str, limit: int = MAX_TEXT_LENGTH) -> str:
    """``value`` as valid Unicode (lone surrogates replaced by U+FFFD), at most ``limit``
    characters."""
    if len(value) > limit:
        value = value[:limit]
    if value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(value: str, *, keep_newlines: bool = False) -> str:
    """``value`` with every character a terminal would act on written as an escape;
    ``keep_newlines`` keeps line feeds and tabs (a rendered traceback)."""
    pattern = _LINE_UNSAFE_KEEP_NEWLINES if keep_newlines else _TERMINAL_UNSAFE
    return pattern.sub(_escape, value)


def spreadsheet_cell(value: str) -> str:
    """``value`` neutralised for a spreadsheet (OWASP's CSV injection rule)."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value

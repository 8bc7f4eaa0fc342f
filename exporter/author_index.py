"""A project's commits by normalised author key, so a user looks up only its own.

Built once per change of a project's kept commits (the store hands out the same tuple
while nothing changed); a user's counting then costs in proportion to the user's own
commits, not to every commit of every project the user works in.

Keys: ``("email", e)`` and ``("name", n)``, trimmed and case-folded as
:mod:`exporter.matching` compares them, and ``("numbered", "ID@domain")`` for emails of
the form ``ID-anything@domain`` (GitLab's no-reply emails, which it matches by ID).
An :class:`~exporter.matching.Identity` names the keys to look up
(:meth:`~exporter.matching.Identity.author_keys`); every commit found is checked with
:meth:`~exporter.matching.Identity.matches` as well, so the index only narrows the search.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

CommitLike = tuple[str, str, str, datetime]
"""A commit as counted: ``(sha, author_name, author_email, authored_date)``.

A plain tuple on purpose: the garbage collector stops tracking tuples of strings and
datetimes, so the hundreds of thousands of commits kept between scans add nothing to its
full collections, which would otherwise pause the event loop for hundreds of
milliseconds on large organisations.
"""

AuthorKey = tuple[str, str]


def _norm(value: str) -> str:
    return value.strip().casefold()


def numbered_key(email: str) -> str | None:
    """``ID@domain`` for a normalised ``ID-anything@domain`` email, else ``None``."""
    local, at, domain = email.rpartition("@")
    if not at or not domain:
        return None
    digits, dash, rest = local.partition("-")
    if not dash or not rest or not digits.isascii() or not digits.isdigit():
        return None
    return f"{int(digits)}@{domain}"


def commit_keys(author_name: str, author_email: str) -> Iterator[AuthorKey]:
    email = _norm(author_email)
    yield ("email", email)
    yield ("name", _norm(author_name))
    numbered = numbered_key(email)
    if numbered is not None:
        yield ("numbered", numbered)


@dataclass(frozen=True, slots=True)
class AuthorIndex:
    """Commits (``(sha, author_name, author_email, authored_date)``) by author key."""

    by_key: dict[AuthorKey, tuple[CommitLike, ...]]
    size: int

    @classmethod
    def build(cls, commits: Sequence[CommitLike]) -> AuthorIndex:
        positions: dict[AuthorKey, list[int]] = {}
        for n, (_, author_name, author_email, _) in enumerate(commits):
            for key in commit_keys(author_name, author_email):
                positions.setdefault(key, []).append(n)
        return cls(
            by_key={key: tuple(commits[n] for n in ns) for key, ns in positions.items()},
            size=len(commits),
        )

    def lookup(self, keys: Iterable[AuthorKey]) -> list[CommitLike]:
        """The commits under any of ``keys``, each once."""
        found: dict[str, CommitLike] = {}
        for key in keys:
            for commit in self.by_key.get(key, ()):
                found.setdefault(commit[0], commit)
        return list(found.values())


EMPTY_INDEX = AuthorIndex(by_key={}, size=0)

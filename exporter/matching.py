"""Pure author matching: is a commit's author one of our users?

DESIGN §6: a commit belongs to a user when its ``author_email`` (case-insensitive)
is one of the user's known emails, or its ``author_name`` equals the user's display
name or username after trimming, case-insensitively. Never a substring match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def _norm(value: str) -> str:
    return value.strip().casefold()


def noreply_emails(user_id: int, username: str, host: str) -> tuple[str, str]:
    """GitLab's commit emails for users who keep their address private."""
    domain = f"users.noreply.{host}"
    return (f"{user_id}-{username}@{domain}", f"{username}@{domain}")


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything that identifies one user as a commit author, normalised."""

    username: str
    emails: frozenset[str]
    names: frozenset[str]

    @classmethod
    def build(
        cls,
        *,
        user_id: int,
        username: str,
        display_name: str,
        host: str,
        public_email: str | None = None,
        extra_emails: Iterable[str] = (),
    ) -> Identity:
        emails = {_norm(e) for e in (*extra_emails, *noreply_emails(user_id, username, host))}
        if public_email and public_email.strip():
            emails.add(_norm(public_email))
        names = {_norm(n) for n in (display_name, username) if n and n.strip()}
        return cls(username=username, emails=frozenset(emails), names=frozenset(names))

    def author_keys(self) -> tuple[tuple[str, str], ...]:
        """The :mod:`exporter.author_index` keys this user's commits are found under."""
        return (*(("email", e) for e in sorted(self.emails)),
                *(("name", n) for n in sorted(self.names)))

    def matches(self, author_name: str, author_email: str) -> bool:
        return _norm(author_email) in self.emails or _norm(author_name) in self.names

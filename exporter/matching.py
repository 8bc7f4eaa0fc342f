"""Pure author matching: is a commit's author one of our users?

DESIGN §6: a commit belongs to a user when its ``author_email`` (case-insensitive)
is one of the user's known emails, or its ``author_name`` equals the user's display
name or username after trimming, case-insensitively. Never a substring match.

GitLab's no-reply emails (``ID-USERNAME@HOSTNAME``) are recognised, as GitLab itself
does, by the numeric ID alone: a renamed user's older commits carry the old username.
``HOSTNAME`` is the instance's ``commit_email_hostname``, by default ``users.noreply.``
followed by GitLab's *external* host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def _norm(value: str) -> str:
    return value.strip().casefold()


def default_commit_email_hostname(host: str) -> str:
    """GitLab's default no-reply hostname for an instance whose external host is ``host``."""
    return f"users.noreply.{_norm(host)}"


def noreply_emails(user_id: int, username: str, host: str) -> tuple[str, str]:
    """GitLab's commit emails for users who keep their address private."""
    domain = default_commit_email_hostname(host)
    return (f"{user_id}-{username}@{domain}", f"{username}@{domain}")


def noreply_id(email: str, hostname: str) -> int | None:
    """The user ID of a no-reply ``ID-anything@HOSTNAME`` email (normalised), else ``None``."""
    local, at, domain = email.rpartition("@")
    if not at or domain != hostname:
        return None
    digits, dash, rest = local.partition("-")
    if not dash or not rest or not digits.isdigit() or not digits.isascii():
        return None
    return int(digits)


def shared_names(people: Iterable[tuple[str, str]]) -> Mapping[str, tuple[str, ...]]:
    """Names (normalised) that identify more than one of ``people`` (``(username,
    display_name)`` pairs), each with the usernames sharing it, sorted."""
    owners: dict[str, set[str]] = {}
    for username, display_name in people:
        for name in {_norm(username), _norm(display_name)} - {""}:
            owners.setdefault(name, set()).add(username)
    return {name: tuple(sorted(users)) for name, users in owners.items() if len(users) > 1}


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything that identifies one user as a commit author, normalised."""

    username: str
    emails: frozenset[str]
    names: frozenset[str]
    user_id: int | None = None  # matched in ``ID-anything@noreply_hostname``
    noreply_hostname: str = ""

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
        commit_email_hostname: str | None = None,
        ambiguous_names: Iterable[str] = (),
    ) -> Identity:
        """``host`` is GitLab's external host; ``commit_email_hostname`` (when set)
        replaces the no-reply hostname derived from it. ``ambiguous_names`` (normalised)
        identify nobody: names that several scanned users share."""
        hostname = _norm(commit_email_hostname or default_commit_email_hostname(host))
        emails = {_norm(e) for e in extra_emails}
        emails.add(_norm(f"{username}@{hostname}"))
        if public_email and public_email.strip():
            emails.add(_norm(public_email))
        emails.discard("")
        names = {_norm(n) for n in (display_name, username) if n and n.strip()}
        names -= set(ambiguous_names)
        return cls(
            username=username,
            emails=frozenset(emails),
            names=frozenset(names),
            user_id=user_id,
            noreply_hostname=hostname,
        )

    def author_keys(self) -> tuple[tuple[str, str], ...]:
        """The :mod:`exporter.author_index` keys this user's commits are found under:
        its emails, its names, and its no-reply ID on the no-reply hostname."""
        numbered = (
            (("numbered", f"{self.user_id}@{self.noreply_hostname}"),)
            if self.user_id is not None and self.noreply_hostname
            else ()
        )
        return (*(("email", e) for e in sorted(self.emails)),
                *(("name", n) for n in sorted(self.names)), *numbered)

    def matches(self, author_name: str, author_email: str) -> bool:
        email = _norm(author_email)
        if email in self.emails or _norm(author_name) in self.names:
            return True
        return self.user_id is not None and noreply_id(email, self.noreply_hostname) == self.user_id

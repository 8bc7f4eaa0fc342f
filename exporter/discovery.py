"""Who a user is and which projects they have: refreshed on its own, longer interval.

The user endpoints (``/users?username=``, ``/users/:id``, ``/users/:id/projects``,
``/users/:id/contributed_projects``) are GitLab's slow, tightly limited ones, and their
answers change rarely. A user's discovery is fetched on the first scan and again once
``scan.discovery_interval_seconds`` have passed; in between it is reused. Push events and
commits, the cheap endpoints, are read every scan.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from exporter.gitlab.api import GitLabApi, ProjectRef, UserDetail
from exporter.gitlab.errors import NotFoundError, PrivateProfileError


@dataclass(frozen=True, slots=True)
class Discovery:
    """One user's identity and listed projects (id -> ``last_activity_at``)."""

    user: UserDetail
    personal: Mapping[int, datetime | None]
    contributed: Mapping[int, datetime | None]
    refreshed_at: datetime
    #: GitLab's external host, from the user's ``web_url`` (``None``: not told); kept
    #: by the scanner for every user, not part of the discovery's identity
    external_host: str | None = field(default=None, compare=False)


def _activity(projects: list[ProjectRef]) -> dict[int, datetime | None]:
    return {p.id: p.last_activity_at for p in projects}


class DiscoveryCache:
    """Per user (case-insensitive username): the last discovery, reused until it is due."""

    def __init__(self, api: GitLabApi, interval: timedelta) -> None:
        self._api = api
        self.interval = interval
        self.entries: dict[str, Discovery] = {}
        #: users whose activity the token cannot see, with when that was found
        self.hidden: dict[str, tuple[UserDetail, datetime]] = {}
        self.refreshed = 0  # users whose discovery was fetched, for logs and tests

    def due(self, username: str, now: datetime) -> bool:
        key = username.casefold()
        entry = self.entries.get(key)
        hidden = self.hidden.get(key)
        refreshed_at = entry.refreshed_at if entry is not None else None
        if hidden is not None:
            refreshed_at = hidden[1]
        return refreshed_at is None or now - refreshed_at >= self.interval

    def forget(self, username: str) -> None:
        self.entries.pop(username.casefold(), None)
        self.hidden.pop(username.casefold(), None)

    async def get(self, username: str, now: datetime) -> Discovery:
        """The user's discovery, from GitLab when due; a failed refresh raises."""
        key = username.casefold()
        if not self.due(username, now):
            if key in self.hidden:
                raise _private(self.hidden[key][0])
            return self.entries[key]
        ref = await self._api.find_user(username)
        if ref is None:
            self.forget(username)
            raise NotFoundError(f"user {username!r} not found", endpoint="/users", status=404)
        detail = await self._api.get_user(ref.id)
        if detail.profile_hidden:
            # its lists would be [] with 200: not asked, and never taken for no activity
            self.forget(username)
            self.hidden[key] = (detail, now)
            self.refreshed += 1
            raise _private(detail)
        self.hidden.pop(key, None)
        personal, contributed = await asyncio.gather(
            self._api.user_projects(ref.id),
            self._api.contributed_projects(ref.id),
        )
        entry = Discovery(
            user=detail,
            personal=_activity(personal),
            contributed=_activity(contributed),
            refreshed_at=now,
            external_host=_host(ref.web_url),
        )
        self.entries[key] = entry
        self.refreshed += 1
        return entry

    def retain(self, usernames: set[str]) -> None:
        """Forget users no longer scanned."""
        keep = {u.casefold() for u in usernames}
        for key in [k for k in self.entries if k not in keep]:
            del self.entries[key]
        for key in [k for k in self.hidden if k not in keep]:
            del self.hidden[key]


def _host(url: str | None) -> str | None:
    try:
        return urlsplit(url).hostname or None if url else None
    except ValueError:
        return None


def _private(user: UserDetail) -> PrivateProfileError:
    return PrivateProfileError(
        f"the token cannot see {user.username!r}'s activity (private profile, or the user "
        "is blocked): GitLab hides their events and projects",
        endpoint="/users/:id",
    )

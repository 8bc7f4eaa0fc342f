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
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporter.gitlab.api import GitLabApi, ProjectRef, UserDetail
from exporter.gitlab.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class Discovery:
    """One user's identity and listed projects (id -> ``last_activity_at``)."""

    user: UserDetail
    personal: Mapping[int, datetime | None]
    contributed: Mapping[int, datetime | None]
    refreshed_at: datetime


def _activity(projects: list[ProjectRef]) -> dict[int, datetime | None]:
    return {p.id: p.last_activity_at for p in projects}


class DiscoveryCache:
    """Per user (case-insensitive username): the last discovery, reused until it is due."""

    def __init__(self, api: GitLabApi, interval: timedelta) -> None:
        self._api = api
        self.interval = interval
        self.entries: dict[str, Discovery] = {}
        self.refreshed = 0  # users whose discovery was fetched, for logs and tests

    def due(self, username: str, now: datetime) -> bool:
        entry = self.entries.get(username.casefold())
        return entry is None or now - entry.refreshed_at >= self.interval

    def forget(self, username: str) -> None:
        self.entries.pop(username.casefold(), None)

    async def get(self, username: str, now: datetime) -> Discovery:
        """The user's discovery, from GitLab when due; a failed refresh raises."""
        key = username.casefold()
        if not self.due(username, now):
            return self.entries[key]
        ref = await self._api.find_user(username)
        if ref is None:
            self.forget(username)
            raise NotFoundError(f"user {username!r} not found", endpoint="/users", status=404)
        detail = await self._api.get_user(ref.id)
        personal, contributed = await asyncio.gather(
            self._api.user_projects(ref.id),
            self._api.contributed_projects(ref.id),
        )
        entry = Discovery(
            user=detail,
            personal=_activity(personal),
            contributed=_activity(contributed),
            refreshed_at=now,
        )
        self.entries[key] = entry
        self.refreshed += 1
        return entry

    def retain(self, usernames: set[str]) -> None:
        """Forget users no longer scanned."""
        keep = {u.casefold() for u in usernames}
        for key in [k for k in self.entries if k not in keep]:
            del self.entries[key]

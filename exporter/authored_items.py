"""Merge requests and issues written by the scanned users, kept between scans.

Asking GitLab for each user's own list costs one request per user and kind on every
scan. Instead, per kind and scan, one instance-wide list (``scope=all``, every author)
brings every user up to date at once:

- a **full** sync reads every item created in the window: on the first scan, when a
  user is new, and every ``full_interval`` (which also forgets items GitLab no longer
  shows, such as deleted ones or ones moved out of sight);
- otherwise an **incremental** sync reads only the items updated since the last sync
  (less an overlap for clock skew) and merges them by id: a new item is added, an item
  whose state changed is replaced.

The shared list is only read when it is short: when GitLab says it has more pages than
half the users it would replace (a large shared instance such as gitlab.com), or when it
fails, each user's own list is read instead, exactly as before, so a failure costs only
the users it touches. After a list too long to read, or one that failed (after its
retries), the next attempt waits ``full_interval``: until a full read is due again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from exporter.attribution import Window
from exporter.gitlab.api import AuthoredItem, ItemRef
from exporter.gitlab.errors import GitLabError, PageBudgetExceeded

log = structlog.get_logger("exporter.authored_items")

MIN_USERS_FOR_SHARED_LIST = 4  # below this, the users' own lists cost no more

FeedFetch = Callable[..., Awaitable[list[AuthoredItem]]]
UserFetch = Callable[[str, datetime], Awaitable[list[ItemRef]]]


@dataclass(slots=True)
class UserItems:
    """One user's items created in the window, and when they were last brought up to date."""

    items: dict[int, ItemRef]
    synced_at: datetime


@dataclass(slots=True)
class AuthoredItemStore:
    """One kind's items (merge requests or issues) per user, kept between scans."""

    users: dict[str, UserItems] = field(default_factory=dict)  # by casefolded username
    full_sync_at: datetime | None = None  # the last full shared list read
    # the last shared list found too long to read, or failing: set aside until then
    # plus the full interval
    declined_at: datetime | None = None

    def replace(self, username: str, items: Iterable[ItemRef], synced_at: datetime) -> None:
        self.users[username.casefold()] = UserItems({i.id: i for i in items}, synced_at)

    def merge(self, username: str, items: Iterable[ItemRef], synced_at: datetime) -> None:
        kept = self.users.get(username.casefold())
        if kept is None:
            self.replace(username, items, synced_at)
            return
        for item in items:
            kept.items[item.id] = item
        kept.synced_at = synced_at

    def items(self, username: str) -> list[ItemRef]:
        kept = self.users.get(username.casefold())
        return [] if kept is None else list(kept.items.values())

    def prune(self, window_start: datetime) -> None:
        """Forget items created before the window: they never count again."""
        for kept in self.users.values():
            old = [i for i, item in kept.items.items() if item.created_at < window_start]
            for item_id in old:
                del kept.items[item_id]

    def retain(self, usernames: Iterable[str]) -> None:
        keep = {u.casefold() for u in usernames}
        for key in [k for k in self.users if k not in keep]:
            del self.users[key]

    @property
    def item_count(self) -> int:
        return sum(len(k.items) for k in self.users.values())


def updated_after(
    store: AuthoredItemStore,
    usernames: Sequence[str],
    *,
    now: datetime,
    full_interval: timedelta,
    overlap: timedelta,
) -> datetime | None:
    """Where an incremental shared list may start, or ``None`` when a full one is due
    (never read, due by ``full_interval``, or a user never brought up to date)."""
    if store.full_sync_at is None or now - store.full_sync_at >= full_interval:
        return None
    synced: list[datetime] = []
    for name in usernames:
        kept = store.users.get(name.casefold())
        if kept is None:
            return None
        synced.append(kept.synced_at)
    return min(synced, default=now) - overlap


class AuthoredItems:
    """One scan's view of one kind: each user's items, from the shared list when it was
    read, else from the user's own list."""

    def __init__(
        self,
        kind: str,
        store: AuthoredItemStore,
        *,
        shared: FeedFetch,
        own: UserFetch,
        window: Window,
        now: datetime,
        full_interval: timedelta,
        overlap: timedelta,
        users: Sequence[str],
    ) -> None:
        self.kind = kind
        self._store = store
        self._shared = shared
        self._own = own
        self._window = window
        self._now = now
        self._full_interval = full_interval
        self._overlap = overlap
        self._users = users
        self._task: asyncio.Task[bool] | None = None
        store.retain(users)
        store.prune(window.start)

    async def of(self, username: str) -> list[ItemRef]:
        """The user's items created in the window (possibly older ones too: callers
        filter by the window)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._read_shared())
        if await asyncio.shield(self._task):
            return self._store.items(username)
        items = await self._own(username, self._window.start)
        self._store.replace(username, items, self._now)
        return items

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _worth_trying(self) -> bool:
        if len(self._users) < MIN_USERS_FOR_SHARED_LIST:
            return False
        declined = self._store.declined_at
        return declined is None or self._now - declined >= self._full_interval

    async def _read_shared(self) -> bool:
        """Bring every user up to date from one shared list; ``False``: not read."""
        if not self._worth_trying():
            return False
        store = self._store
        since = updated_after(
            store,
            self._users,
            now=self._now,
            full_interval=self._full_interval,
            overlap=self._overlap,
        )
        try:
            found = await self._shared(
                created_after=self._window.start,
                updated_after=since,
                max_pages=max(1, len(self._users) // 2),
            )
        except PageBudgetExceeded as exc:
            store.declined_at = self._now
            log.info(
                "shared list too long; reading each user's own",
                kind=self.kind,
                pages=exc.total_pages,
                users=len(self._users),
            )
            return False
        except GitLabError as exc:
            # set aside until a full read is next due: the users' own lists serve meanwhile
            store.declined_at = self._now
            log.warning(
                "shared list failed; reading each user's own until its next full read",
                kind=self.kind,
                reason=exc.reason,
                error=str(exc),
            )
            return False
        except Exception:  # a bug here must not fail every user: their own lists still work
            store.declined_at = self._now
            log.exception("shared list crashed; reading each user's own", kind=self.kind)
            return False
        by_author: dict[str, list[ItemRef]] = {}
        for entry in found:
            by_author.setdefault(entry.author.casefold(), []).append(entry.item)
        for name in self._users:
            items = by_author.get(name.casefold(), [])
            if since is None:
                store.replace(name, items, self._now)
            else:
                store.merge(name, items, self._now)
        if since is None:
            store.full_sync_at = self._now
        store.declined_at = None
        return True

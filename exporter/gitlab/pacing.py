"""Per-endpoint pacing under GitLab's rate limits, and slowing down before a 429.

GitLab counts requests per token in fixed windows aligned to multiples of the period:
a token-wide limit (gitlab.com: 2,000 a minute) and tighter ones on some routes
(``/users/:id`` 300 per 10 minutes, ``/users/:id/contributed_projects`` 100 a minute...).
:class:`RateGate` keeps, per configured limit, the send times of the last period and
lets a request start only while fewer than the limit (less a safety margin) were sent
in any period-long stretch: then no aligned window can see more, whatever the clock
offset between us and GitLab. Requests of other endpoints are not held up meanwhile.

Independently of configuration, the gate reads ``RateLimit-Name``, ``RateLimit-Remaining``
and ``RateLimit-Reset`` from every response: when the remaining budget of a limit is
about to run out it holds the requests under that limit until its reset.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping

ALL = "all"
"""Key of the token-wide limit in ``gitlab.endpoint_limits``."""

#: gitlab.com's published limits: (requests, period in seconds).
GITLAB_COM_ENDPOINT_LIMITS: Mapping[str, tuple[int, float]] = {
    ALL: (2000, 60.0),
    "/users/:id": (300, 600.0),
    "/users/:id/projects": (300, 60.0),
    "/users/:id/contributed_projects": (100, 60.0),
    "/projects/:id": (400, 60.0),
    "/groups/:id/projects": (600, 60.0),
}

SAFETY = 0.95
"""Share of each configured limit the gate uses; the rest absorbs timing jitter."""
HEADER_MARGIN = 0.5
"""Seconds added to a ``RateLimit-Reset`` before requests under that limit go again."""
_POLL = 0.05


class _Window:
    """A sliding log of send times: at most ``limit`` starts in any ``period`` seconds."""

    __slots__ = ("limit", "period", "reserved", "sent")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = max(1, math.floor(limit * SAFETY))
        self.period = period
        self.sent: deque[float] = deque()
        self.reserved = 0

    def delay(self, now: float) -> float:
        sent = self.sent
        while sent and sent[0] <= now - self.period:
            sent.popleft()
        excess = len(sent) + self.reserved - self.limit  # starts too many for one more
        if excess < 0:
            return 0.0
        if excess < len(sent):
            # room once the start at index `excess` has left the log
            return max(_POLL, sent[excess] + self.period - now)
        return _POLL  # reservations alone fill it: wait for them to be sent


class Ticket:
    """Permission for one request: call :meth:`sent` when it goes out, :meth:`close` after."""

    __slots__ = ("_endpoint", "_gate", "_open", "_windows")

    def __init__(self, gate: RateGate, endpoint: str, windows: list[_Window]) -> None:
        self._gate = gate
        self._endpoint = endpoint
        self._windows = windows
        self._open = True  # reservation not yet consumed

    def sent(self) -> None:
        now = self._gate.clock()
        for window in self._windows:
            if self._open:
                window.reserved -= 1
            window.sent.append(now)
        self._open = False

    def close(self) -> None:
        if self._open:
            for window in self._windows:
                window.reserved -= 1
            self._open = False
        self._gate._in_flight[self._endpoint] -= 1


class RateGate:
    """Holds requests back per endpoint: configured limits, then GitLab's own headers."""

    def __init__(
        self,
        limits: Mapping[str, tuple[int, float]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._wall = wall_clock
        limits = dict(limits or {})
        general = limits.pop(ALL, None)
        self._general = _Window(*general) if general is not None else None
        self._windows = {endpoint: _Window(*value) for endpoint, value in limits.items()}
        self._in_flight: dict[str, int] = {}
        self._names: dict[str, set[str]] = {}  # RateLimit-Name -> endpoints it was seen on
        self._blocked: dict[str, float] = {}  # RateLimit-Name -> clock() when it resets
        self.waits = 0  # times a request was held back, for logs and tests

    def _windows_for(self, endpoint: str) -> list[_Window]:
        windows = [self._general] if self._general is not None else []
        specific = self._windows.get(endpoint)
        if specific is not None:
            windows.append(specific)
        return windows

    def delay(self, endpoint: str) -> float:
        """Seconds until a request to ``endpoint`` may start (0: now)."""
        now = self.clock()
        wait = 0.0
        for window in self._windows_for(endpoint):
            wait = max(wait, window.delay(now))
        for name, until in self._blocked.items():
            if until > now:
                seen = self._names.get(name, set())
                if endpoint in seen or len(seen) > 1:  # on several routes: token-wide
                    wait = max(wait, until - now)
        return wait

    async def acquire(self, endpoint: str) -> Ticket:
        """Wait until a request to ``endpoint`` may start, and reserve its place."""
        while True:
            wait = self.delay(endpoint)
            if wait <= 0:
                break
            self.waits += 1
            await asyncio.sleep(wait)
        windows = self._windows_for(endpoint)
        for window in windows:
            window.reserved += 1
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        return Ticket(self, endpoint, windows)

    def observe(self, endpoint: str, headers: Mapping[str, str]) -> None:
        """Learn from a response's ``RateLimit-*`` headers; hold back before a 429."""
        name = headers.get("RateLimit-Name") or "unnamed"
        remaining = _number(headers.get("RateLimit-Remaining"))
        reset = _number(headers.get("RateLimit-Reset"))
        if remaining is None or reset is None:
            return
        routes = self._names.setdefault(name, set())
        routes.add(endpoint)
        if len(routes) > 1:  # a token-wide limit: every request in flight counts
            in_flight = sum(self._in_flight.values())
        else:
            in_flight = self._in_flight.get(endpoint, 0)
        if remaining <= max(1, in_flight):
            until = self.clock() + max(0.0, reset - self._wall()) + HEADER_MARGIN
            self._blocked[name] = max(self._blocked.get(name, 0.0), until)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None

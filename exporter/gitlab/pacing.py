"""Per-endpoint pacing under GitLab's rate limits, and slowing down before a 429.

GitLab counts requests per token in fixed windows aligned to multiples of the period:
a token-wide limit (gitlab.com: 2,000 a minute) and tighter ones on some routes
(``/users/:id`` 300 per 10 minutes, ``/users/:id/contributed_projects`` 100 a minute...).
:class:`RateGate` keeps, per configured limit, the send times of the last period and
lets a request start only while fewer than the limit (less a safety margin) were sent
in any period-long stretch: then no aligned window can see more, whatever the clock
offset between us and GitLab. Requests of other endpoints are not held up meanwhile.

Independently of configuration, the gate reads ``RateLimit-Name``, ``RateLimit-Remaining``
and ``RateLimit-Reset`` from every response: once GitLab describes a limit, its remaining
budget, less the requests still on their way, decides, and when it is spent the
requests under that limit wait for its reset instead of meeting a 429.
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
RECHECK = 0.5
"""Longest sleep before a held request looks at the limits again."""


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


class _Budget:
    """What GitLab last said is left of one limit in its current window."""

    __slots__ = ("limit", "remaining", "reset")

    def __init__(self, remaining: float, reset: float, limit: float | None) -> None:
        self.remaining = remaining
        self.reset = reset  # clock() time the window ends; inf when not yet known
        self.limit = limit


class RateGate:
    """Holds requests back per endpoint: configured limits, then GitLab's own headers.

    Once GitLab's ``RateLimit-*`` headers describe a limit, they govern it instead of the
    configured sliding window: requests go while the remaining budget, less requests in
    flight, lasts, and the full budget returns at ``RateLimit-Reset``.
    """

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
        self._budgets: dict[str, _Budget] = {}  # RateLimit-Name -> what is left
        self.waits = 0  # times a request was held back, for logs and tests

    def _names_for(self, endpoint: str) -> list[str]:
        """Limits known from headers that apply: the route's own, and token-wide ones."""
        return [
            name
            for name, routes in self._names.items()
            if endpoint in routes or len(routes) > 1  # seen on several routes: token-wide
        ]

    def _windows_for(self, endpoint: str) -> list[_Window]:
        names = self._names_for(endpoint)
        windows = []
        if self._general is not None and not any(len(self._names[n]) > 1 for n in names):
            windows.append(self._general)
        specific = self._windows.get(endpoint)
        if specific is not None and not any(len(self._names[n]) == 1 for n in names):
            windows.append(specific)
        return windows

    def _budget(self, name: str, now: float) -> _Budget:
        budget = self._budgets[name]
        if budget.reset <= now:  # the window is over: its full allowance is back
            budget.remaining = budget.limit if budget.limit is not None else math.inf
            budget.reset = math.inf  # until an answer names the new window's end
        return budget

    def delay(self, endpoint: str) -> float:
        """Seconds until a request to ``endpoint`` may start (0: now)."""
        now = self.clock()
        wait = 0.0
        for window in self._windows_for(endpoint):
            wait = max(wait, window.delay(now))
        for name in self._names_for(endpoint):
            budget = self._budget(name, now)
            # requests on their way may not be in GitLab's count yet: keep room for them
            if len(self._names[name]) > 1:
                unseen = sum(self._in_flight.values())
            else:
                unseen = self._in_flight.get(endpoint, 0)
            if budget.remaining - unseen < 1:
                wait = max(wait, budget.reset - now if budget.reset < math.inf else _POLL)
        return wait

    async def acquire(self, endpoint: str) -> Ticket:
        """Wait until a request to ``endpoint`` may start, and reserve its place."""
        while True:
            wait = self.delay(endpoint)
            if wait <= 0:
                break
            self.waits += 1
            # look again soon: an answer meanwhile may tell that the limit resets earlier
            await asyncio.sleep(min(wait, RECHECK))
        windows = self._windows_for(endpoint)
        for window in windows:
            window.reserved += 1
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        return Ticket(self, endpoint, windows)

    def observe(self, endpoint: str, headers: Mapping[str, str]) -> None:
        """Learn a limit's budget from a response's ``RateLimit-*`` headers."""
        name = headers.get("RateLimit-Name") or "unnamed"
        remaining = header_number(headers.get("RateLimit-Remaining"))
        reset = header_number(headers.get("RateLimit-Reset"))
        reported = remaining is not None and reset is not None
        now = self.clock()
        for other in self._names_for(endpoint):
            # GitLab counted this request under limits the answer does not report on
            # (a route's own limit is shown instead of the token-wide one): count it here
            if not reported or other != name:
                self._budget(other, now).remaining -= 1
        if remaining is None or reset is None:
            return
        self._names.setdefault(name, set()).add(endpoint)
        ends = now + max(0.0, reset - self._wall()) + HEADER_MARGIN
        limit = header_number(headers.get("RateLimit-Limit"))
        budget = self._budgets.get(name)
        if budget is None:
            self._budgets[name] = _Budget(remaining, ends, limit)
            return
        self._budget(name, now)
        if limit is not None:
            budget.limit = limit
        if ends <= now:
            return  # an answer from a window that is already over
        if budget.reset == math.inf or ends > budget.reset + HEADER_MARGIN:
            budget.reset = ends  # a new window
            budget.remaining = remaining
        else:  # answers arrive out of order: the lowest count is the latest
            budget.remaining = min(budget.remaining, remaining)


def header_number(value: str | None) -> float | None:
    """A finite number from a header value, else ``None``."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None

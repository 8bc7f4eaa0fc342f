"""Per-endpoint pacing under GitLab's rate limits, and slowing down before a 429.

GitLab counts requests per token in fixed windows aligned to multiples of the period:
a token-wide limit (gitlab.com: 2,000 a minute) and tighter ones on some routes
(``/users/:id`` 300 per 10 minutes, ``/users/:id/contributed_projects`` 100 a minute...).
:class:`RateGate` keeps, per configured limit, the send times of the last period and
lets a request start only while fewer than the limit (less a safety margin) were sent
in any period-long stretch: then no aligned window can see more, whatever the clock
offset between us and GitLab. Requests of other endpoints are not held up meanwhile.

Independently of configuration, the gate reads ``RateLimit-Name``, ``RateLimit-Remaining``
and ``RateLimit-Reset`` from every response that carries them: once GitLab describes a
limit, its remaining budget, less the requests still on their way, decides, and when it
is spent the requests under that limit wait for its reset instead of meeting a 429.

No wait is without a bound. GitLab sends these headers on every answer only where it is
asked to (gitlab.com); self-managed instances send them on the 429 alone. So a window
whose end no later answer confirms is assumed to be followed by another of the same
length: learnt from ``Remaining + Observed`` against the per-minute ``RateLimit-Limit``,
from two successive resets, else the configured limit's period, else a minute. A reset
further ahead than any GitLab window (:data:`MAX_RESET_AHEAD`: clock skew, a proxy
sending milliseconds) is not believed, and logged once. A 429 without ``RateLimit-*``
(GitLab's per-route limits send none) holds only its route, for its ``Retry-After``
(the whole interval on current releases) or else the route's configured period.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("exporter.gitlab.pacing")

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
MAX_RESET_AHEAD = 3600.0 + 60.0
"""A reset further ahead than this is not believed: GitLab's longest window (the
self-managed default period of its throttles) is an hour."""
DEFAULT_WINDOW = 60.0
"""Window length assumed when nothing better is known: ``RateLimit-Limit`` is per minute."""
_ANSWER_LOG = 4096
"""Answer times kept per route, to learn a limit GitLab does not name."""
GENERAL_PREFIX = "throttle_"
"""GitLab's general (Rack::Attack) throttles are named ``throttle_*``: token-wide."""


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

    __slots__ = ("confirmed", "hint", "limit", "period", "remaining", "reset", "size")

    def __init__(self, remaining: float, reset: float, limit: float | None) -> None:
        self.remaining = remaining
        self.reset = reset  # clock() time the window ends
        self.limit = limit  # RateLimit-Limit: a per-minute figure, whatever the period
        self.size: float | None = None  # requests in one whole window, when known
        self.period: float | None = None  # window length, when learnt
        self.confirmed = True  # ``reset`` was named by GitLab, not assumed
        self.hint: float | None = None  # a 429's Retry-After: at most one window long

    def roll(self, now: float, fallback: float) -> None:
        """The window is over and no answer named the next one's end: assume the next
        is as long as this one (or ``fallback``) and starts with the whole allowance."""
        period = self.period or self.hint or fallback
        behind = now - self.reset
        self.reset += period * max(1, math.ceil(behind / period))
        self.confirmed = False
        if self.size is not None:
            self.remaining = self.size
        elif self.limit is not None:
            self.remaining = max(1.0, self.limit * period / 60.0)
        else:
            self.remaining = math.inf


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
        self._held: dict[str, float] = {}  # endpoint -> clock() time a route 429 ends
        self._accepted: dict[str, deque[float]] = {}  # endpoint -> recent answer times
        self._learnt: set[str] = set()  # routes whose window was learnt from a 429
        self._disbelieved = False  # an unbelievable reset was logged
        self.waits = 0  # times a request was held back, for logs and tests

    def _token_wide(self, name: str) -> bool:
        return name.startswith(GENERAL_PREFIX) or len(self._names[name]) > 1

    def _names_for(self, endpoint: str) -> list[str]:
        """Limits known from headers that apply: the route's own, and token-wide ones."""
        return [
            name
            for name, routes in self._names.items()
            if endpoint in routes or self._token_wide(name)
        ]

    def _windows_for(self, endpoint: str) -> list[_Window]:
        names = self._names_for(endpoint)
        windows = []
        if self._general is not None and not any(self._token_wide(n) for n in names):
            windows.append(self._general)
        specific = self._windows.get(endpoint)
        if specific is not None and not any(not self._token_wide(n) for n in names):
            windows.append(specific)
        return windows

    def _fallback_period(self, name: str) -> float:
        """The configured period of the limit ``name`` stands for, else a minute."""
        if self._token_wide(name):
            window = self._general
        else:
            window = next(
                (self._windows[e] for e in self._names[name] if e in self._windows), None
            )
        return window.period if window is not None else DEFAULT_WINDOW

    def _budget(self, name: str, now: float) -> _Budget:
        budget = self._budgets[name]
        if budget.reset <= now:  # the window is over: its full allowance is back
            budget.roll(now, self._fallback_period(name))
        return budget

    def delay(self, endpoint: str) -> float:
        """Seconds until a request to ``endpoint`` may start (0: now); never unbounded."""
        now = self.clock()
        wait = 0.0
        for window in self._windows_for(endpoint):
            wait = max(wait, window.delay(now))
        for name in self._names_for(endpoint):
            budget = self._budget(name, now)
            # requests on their way may not be in GitLab's count yet: keep room for them
            if self._token_wide(name):
                unseen = sum(self._in_flight.values())
            else:
                unseen = self._in_flight.get(endpoint, 0)
            if budget.remaining - unseen < 1:
                wait = max(wait, budget.reset - now)
        held = self._held.get(endpoint)
        if held is not None:
            if held > now:
                wait = max(wait, held - now)
            else:
                del self._held[endpoint]
        return min(wait, MAX_RESET_AHEAD)

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

    def held(self, endpoint: str) -> bool:
        """Whether a per-route 429 holds ``endpoint`` now."""
        held = self._held.get(endpoint)
        return held is not None and held > self.clock()

    def accepted(self, endpoint: str) -> None:
        """GitLab answered a request to ``endpoint`` with something other than a 429."""
        answers = self._accepted.get(endpoint)
        if answers is None:
            answers = self._accepted[endpoint] = deque(maxlen=_ANSWER_LOG)
        answers.append(self.clock())

    def hold(self, endpoint: str, seconds: float, *, learn: bool = True) -> None:
        """A 429 that named no limit (GitLab's per-route limits send none): hold that
        route for ``seconds`` (its ``Retry-After``, the whole interval on current
        releases).

        With ``learn`` (the answer is GitLab's per-route limit message), unless a limit
        is configured for the route, one is learnt: what GitLab accepted on it over that
        period before refusing, kept to from then on.
        """
        configured = self._windows.get(endpoint)
        seconds = min(max(1.0, seconds), MAX_RESET_AHEAD)
        now = self.clock()
        until = now + seconds
        self._held[endpoint] = max(until, self._held.get(endpoint, until))
        if learn and (configured is None or endpoint in self._learnt):
            recent = [t for t in self._accepted.get(endpoint, ()) if t > now - seconds]
            learnt = _Window(max(1, len(recent)), seconds)
            learnt.sent.extend(recent)
            known = self._windows.get(endpoint)
            if known is None or learnt.limit < known.limit or learnt.period > known.period:
                self._windows[endpoint] = learnt
                self._learnt.add(endpoint)
                log.info(
                    "GitLab limits this route without naming the limit; pacing it",
                    endpoint=endpoint,
                    requests=learnt.limit,
                    period_seconds=round(seconds, 1),
                )

    def _believable(self, reset: float, now_wall: float) -> bool:
        if reset - now_wall <= MAX_RESET_AHEAD:
            return True
        if not self._disbelieved:
            self._disbelieved = True
            log.warning(
                "RateLimit-Reset ignored: further ahead than any GitLab window "
                "(clock skew, or a proxy sending milliseconds?)",
                seconds_ahead=round(reset - now_wall),
                limit=MAX_RESET_AHEAD,
            )
        return False

    def observe(self, endpoint: str, headers: Mapping[str, str]) -> None:
        """Learn a limit's budget from a response's ``RateLimit-*`` headers."""
        name = headers.get("RateLimit-Name") or "unnamed"
        remaining = header_number(headers.get("RateLimit-Remaining"))
        reset = header_number(headers.get("RateLimit-Reset"))
        wall = self._wall()
        if reset is not None and not self._believable(reset, wall):
            reset = None
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
        ends = now + max(0.0, reset - wall) + HEADER_MARGIN
        limit = header_number(headers.get("RateLimit-Limit"))
        observed = header_number(headers.get("RateLimit-Observed"))
        budget = self._budgets.get(name)
        if budget is None:
            budget = self._budgets[name] = _Budget(remaining, ends, limit)
        else:
            self._budget(name, now)
            if limit is not None:
                budget.limit = limit
            if ends <= now:
                return  # an answer from a window that is already over
            if not budget.confirmed and abs(ends - budget.reset) <= HEADER_MARGIN:
                budget.confirmed = True  # the assumed window is GitLab's
            if ends > budget.reset + HEADER_MARGIN:  # a new window
                step = ends - budget.reset
                if budget.period is None and budget.confirmed and step <= MAX_RESET_AHEAD:
                    budget.period = step  # two named windows' ends apart: learnt
                budget.reset = ends
                budget.confirmed = True
                budget.remaining = remaining
            else:  # answers arrive out of order: the lowest count is the latest
                budget.remaining = min(budget.remaining, remaining)
        retry_after = header_number(headers.get("Retry-After"))
        if retry_after is not None and 1.0 <= retry_after <= MAX_RESET_AHEAD:
            budget.hint = max(budget.hint or 0.0, retry_after)
        if observed is not None:
            # Remaining counts in the real period; on a 429 Observed is over the limit
            size = remaining + observed if remaining > 0 else max(1.0, observed - 1)
            if budget.size is None or remaining > 0:
                budget.size = size
            if budget.limit:
                # RateLimit-Limit is ceil(size * 60 / period): the period follows
                budget.period = min(
                    MAX_RESET_AHEAD, max(1.0, budget.size * 60.0 / budget.limit)
                )


def header_number(value: str | None) -> float | None:
    """A finite number from a header value, else ``None``."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None

"""Fault injection and the request log of the GitLab simulator.

Both are plain mutable objects: tests change them between scans
(``sim.faults.add(FaultRule(...))``, ``sim.faults.latency_ms = 50``, ``sim.log.clear()``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: Every fault kind the simulator can inject.
FAULT_KINDS: tuple[str, ...] = (
    "500_html",  # 500 with an HTML body (text/html)
    "502_html",  # 502 from a proxy, HTML body
    "503_html",  # 503 from a proxy, HTML body
    "reset",  # headers and part of the body, then the connection is closed
    "malformed_json",  # 200 with the real body cut short
    "slow",  # sleep ``delay`` seconds, then answer normally
    "429",  # 429 with Retry-After
    "429_no_retry_after",  # per-endpoint style 429: JSON body, no Retry-After
    "401",  # token rejected
    "404",  # not found
    "redirect",  # 302 to ``Faults.redirect_base`` + the same path and query
    "wrong_shape_object",  # 200 with a JSON object where a list was due (a list for an object)
    "missing_fields",  # 200 with the identifying fields (ids, names, emails, dates) removed
    "null_fields",  # 200 with names, usernames and emails set to null
    "naive_dates",  # 200 with every timestamp stripped of its UTC offset
    "link_loop",  # 200 whose ``Link: rel="next"`` points back at the same page
    "huge_body",  # 200 streaming ``Faults.huge_body_bytes`` of JSON, no Content-Length
    # the real answer, saying the token-wide limit is spent until a reset years ahead
    # (a clock far off, or a proxy sending milliseconds)
    "far_reset",
    "endless_empty",  # 200 ``[]`` whose ``Link: rel="next"`` always names a new page
)

#: Kinds drawn for random faults (``fault_rate``): what a well-behaved client survives.
DEFAULT_RANDOM_KINDS: tuple[str, ...] = ("500_html", "502_html", "503_html", "reset", "429")


@dataclass
class FaultRule:
    """Inject ``kind`` into requests whose path matches ``path_pattern`` (a regex).

    The pattern is searched in the request path, decoded and raw (e.g.
    ``r"^/api/v4/users/7/projects$"``). ``times=None`` applies it forever, otherwise to
    the next ``times`` matching requests. ``delay`` is the sleep of the ``slow`` kind.
    """

    path_pattern: str
    kind: str
    times: int | None = None
    delay: float = 0.0
    hits: int = 0
    #: when set, only requests whose query string (raw) this regex is found in
    query_pattern: str | None = None
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        self._regex = re.compile(self.path_pattern)

    def matches(self, path: str, raw_path: str, query: str = "") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.query_pattern is not None and not re.search(self.query_pattern, query):
            return False
        return bool(self._regex.search(path) or self._regex.search(raw_path))


@dataclass
class Faults:
    """Runtime fault knobs of one simulator."""

    latency_ms: float = 0.0
    fault_rate: float = 0.0
    random_kinds: tuple[str, ...] = DEFAULT_RANDOM_KINDS
    #: where the ``redirect`` kind points (another base URL, e.g. another simulator)
    redirect_base: str = "http://127.0.0.1:9"
    #: Retry-After seconds of the ``429`` kind
    retry_after: int = 1
    #: when set, the HTML 5xx kinds carry this ``Retry-After`` (a proxy in maintenance)
    retry_after_5xx: int | None = None
    #: sleep of a random ``slow`` fault
    slow_delay: float = 1.0
    #: size of the ``huge_body`` kind's body
    huge_body_bytes: int = 64 * 2**20
    #: the ``huge_body`` kind keeps the real answer (a non-empty list: its items, headers
    #: and pagination) and pads each item with a ``padding`` list of text lines up to
    #: ``huge_body_bytes``, as items with very long texts make a page near the cap; else
    #: the body is a list of small padding objects only
    huge_body_real_items: bool = False
    #: at most this much padding per item (GitLab sends at most 100 items a page: a page
    #: near the 50 MiB cap is a full page of items of about 500 KiB)
    huge_body_item_bytes: int = 512 * 2**10
    #: bytes of each padded body served (``huge_body_real_items``)
    huge_body_sizes: list[int] = field(default_factory=list)
    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    #: how many faults of each kind were injected
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Back to a healthy server: no rules, no random faults, no added latency."""
        self.rules.clear()
        self.fault_rate = 0.0
        self.latency_ms = 0.0

    def pick(self, path: str, raw_path: str, query: str = "") -> FaultRule | None:
        """The fault for this request, if any (targeted rules first, then random)."""
        for rule in self.rules:
            if rule.matches(path, raw_path, query):
                rule.hits += 1
                self._count(rule.kind)
                return rule
        if self.fault_rate > 0 and self.random_kinds and self._rng.random() < self.fault_rate:
            kind = self._rng.choice(self.random_kinds)
            self._count(kind)
            return FaultRule(".*", kind, times=1, delay=self.slow_delay, hits=1)
        return None

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1


@dataclass(frozen=True)
class RequestRecord:
    method: str
    endpoint: str  # route template, e.g. "/projects/:id/repository/commits"; "unknown" if none
    path: str
    query: Mapping[str, str]
    status: int  # 0 when the connection was reset mid-response
    credential: str | None
    fault: str | None = None


class RequestLog:
    """Every request the simulator received, in order."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    @property
    def entries(self) -> list[RequestRecord]:
        """The same as ``records``."""
        return self.records

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        return sum(
            1
            for r in self.records
            if (endpoint is None or r.endpoint == endpoint)
            and (status is None or r.status == status)
        )

    def by_endpoint(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for r in self.records:
            statuses = out.setdefault(r.endpoint, {})
            statuses[r.status] = statuses.get(r.status, 0) + 1
        return out

    def clear(self) -> None:
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.records)

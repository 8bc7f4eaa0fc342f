"""The GitLab HTTP client: pacing, a concurrency cap, retries, pagination, self-metrics.

One :class:`GitLabClient` wraps the process' shared :class:`aiohttp.ClientSession`.

- Request starts are spaced evenly across all coroutines (``requests_per_second``),
  and at most ``max_concurrency`` requests are in flight. Waiting before a retry does
  not hold a concurrency slot.
- 429, 5xx from proxies, connection errors, timeouts and unparseable 2xx bodies are
  retried with capped, jittered exponential backoff, or after the time GitLab names in
  ``Retry-After`` / ``RateLimit-Reset``. When retries run out a typed
  :class:`~exporter.gitlab.errors.GitLabError` is raised.
- Redirects are followed only within the configured origin; the token never leaves it.
- Lists are read with ``per_page=100`` following ``Link: rel="next"`` to the end.
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from yarl import URL

from exporter.gitlab.bodies import ByteBudget, JsonReader, Lease
from exporter.gitlab.breaker import ProjectBreaker
from exporter.gitlab.errors import (
    FAILURE_REASONS,
    ApiError,
    GitLabError,
    NotFoundError,
    PageBudgetExceeded,
    RateLimitedError,
    RequestTimeoutError,
    UnauthorizedError,
)
from exporter.gitlab.pacing import MAX_RESET_AHEAD, RateGate, Ticket, header_number

__all__ = [
    "FAILURE_REASONS",
    "ApiError",
    "ClientMetrics",
    "GitLabClient",
    "GitLabError",
    "NotFoundError",
    "ProbeAnswer",
    "RateLimitedError",
    "RequestTimeoutError",
    "UnauthorizedError",
    "retry_delay",
]

log = structlog.get_logger("exporter.gitlab")

API_PREFIX = "/api/v4"
PER_PAGE = "100"
MAX_REDIRECTS = 5
PAGE_BUDGET = 2000
"""Pages one listing may have (200,000 items): beyond, it is a runaway, not data."""
EVENTS_PAGE_BUDGET = 101
"""GitLab caps an events listing at 10,001 items: 101 pages of 100."""
MAX_EMPTY_PAGES = 3
"""Empty pages in a row that still name a next page, before a listing is stopped."""
BREAKER_ENDPOINTS = ("/projects/:id/repository/commits", "/projects/:id/repository/compare")
"""Reads watched by the project breaker: a project's history. The branch list is not
one of them: its answer says nothing about whether the history can be read."""
MAX_HEADER_WAIT = 15 * 60.0
"""Longest wait taken from ``Retry-After`` / ``RateLimit-Reset``, in seconds."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, *range(520, 531)})
_ERROR_BODY_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_DETAIL_CHARS = 160
_ROUTE_LIMIT_TEXT = b"requested too many times"
"""In the body of GitLab's per-route (application) limit 429s."""

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# --------------------------------------------------------------------------- metrics


class _RateLimitCollector(Collector):
    """Exports the last ``RateLimit-Remaining`` / ``RateLimit-Limit`` seen, once seen."""

    def __init__(self) -> None:
        self.remaining: float | None = None
        self.limit: float | None = None

    def _families(self, with_samples: bool) -> list[Metric]:
        out: list[Metric] = []
        for name, doc, value in (
            (
                "gitlab_activity_api_ratelimit_remaining",
                "RateLimit-Remaining of the last GitLab response that carried it.",
                self.remaining,
            ),
            (
                "gitlab_activity_api_ratelimit_limit",
                "RateLimit-Limit of the last GitLab response that carried it.",
                self.limit,
            ),
        ):
            if not with_samples:
                out.append(GaugeMetricFamily(name, doc))
            elif value is not None:
                out.append(GaugeMetricFamily(name, doc, value=value))
        return out

    def describe(self) -> Iterable[Metric]:
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_samples=True)


class ClientMetrics:
    """The client's own metrics, registered on the given (private) registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gitlab_activity_api_requests",
            "GitLab API requests sent, by endpoint and HTTP status "
            "('error' for connection errors, 'timeout' for timeouts).",
            ["endpoint", "code"],
            registry=registry,
        )
        self.retries = Counter(
            "gitlab_activity_api_retries",
            "GitLab API requests retried, by endpoint and reason.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "gitlab_activity_api_request_duration_seconds",
            "Time from sending a GitLab API request to having read its body.",
            ["endpoint"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.connection_up = Gauge(
            "gitlab_activity_connection_up",
            "0 when the last scan stopped at its first request (who is the token?) because "
            "GitLab cannot be used (see the connection failures' reason), else 1.",
            registry=registry,
        )
        self.connection_failures = Counter(
            "gitlab_activity_connection_failures",
            "Scans stopped before they began because GitLab could not be used, by cause.",
            ["reason"],
            registry=registry,
        )
        self._ratelimit = _RateLimitCollector()
        registry.register(self._ratelimit)

    def observe_ratelimit(self, headers: Mapping[str, str]) -> None:
        remaining = header_number(headers.get("RateLimit-Remaining"))
        if remaining is not None:
            self._ratelimit.remaining = remaining
        limit = header_number(headers.get("RateLimit-Limit"))
        if limit is not None:
            self._ratelimit.limit = limit


# --------------------------------------------------------------------------- delays


def _header_wait(
    status: int, headers: Mapping[str, str], now: float
) -> float | None:
    """Seconds GitLab asked us to wait, from ``Retry-After`` or (on 429) ``RateLimit-Reset``."""
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        text = retry_after.strip()
        seconds = header_number(text)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - now)
    if status == 429:
        reset = header_number(headers.get("RateLimit-Reset"))
        if reset is not None and reset - now <= MAX_RESET_AHEAD:  # else not believed
            return max(0.0, reset - now)
    return None


def retry_delay(
    attempt: int,
    *,
    status: int | None,
    headers: Mapping[str, str] | None,
    base: float,
    cap: float,
    rng: random.Random,
    now: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    A wait named by GitLab (``Retry-After`` in seconds or as an HTTP date; on a 429
    without it, ``RateLimit-Reset`` in Unix seconds) is honoured, plus a small jitter so
    clients do not all return at the same instant, and capped at 15 minutes. Otherwise
    exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.
    """
    if status is not None and headers is not None:
        wait = _header_wait(status, headers, time.time() if now is None else now)
        if wait is not None:
            jitter = rng.uniform(0.0, min(5.0, 0.05 + 0.1 * wait))
            return min(MAX_HEADER_WAIT, wait + jitter)
    ceiling = min(cap, base * (2.0 ** min(attempt, 62)))
    return rng.uniform(0.0, max(0.0, ceiling))


# --------------------------------------------------------------------------- pacing


class _Pacer:
    """Spaces request starts ``1 / rate`` seconds apart across every coroutine."""

    def __init__(self, requests_per_second: float) -> None:
        self._interval = 1.0 / requests_per_second
        self._lock = asyncio.Lock()
        self._next_slot = 0.0

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            now = loop.time()  # monotonic
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


# --------------------------------------------------------------------------- helpers


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def _page_key(url: URL) -> tuple[tuple[str, str, int | None], str, tuple[tuple[str, str], ...]]:
    return (_origin(url), url.path, tuple(sorted(url.query.items())))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _describe_body(body: bytes, content_type: str) -> str:
    """A short cause from an error body: GitLab's ``message``/``error``, never a page."""
    stripped = body.lstrip()
    if not stripped:
        return "empty body"
    if "html" in content_type.lower() or stripped[:1] == b"<":
        return "HTML body"
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        first = stripped.decode("utf-8", "replace").splitlines()[0] if stripped else ""
        return _short(first) if first.isprintable() else "unreadable body"
    return _short(_json_message(data)) or "JSON body without a message"


async def _hand_out(items: list[Any], per_turn: int) -> AsyncIterator[Any]:
    """A large page's items, ``per_turn`` at a time between turns of the event loop, each
    let go of as it is handed out: what its reader turns them into, and freeing them, is
    spread over the turns too."""
    for index in range(len(items)):
        item, items[index] = items[index], None
        yield item
        del item
        if index % per_turn == per_turn - 1:
            gc.collect(0)  # automatic passes are held off while the page is alive
            await asyncio.sleep(0)


def _json_message(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("message", "error", "error_description"):
            if key in data and data[key] not in (None, "", {}, []):
                return _json_message(data[key])
        parts = [f"{k}: {_json_message(v)}" for k, v in list(data.items())[:3]]
        return "; ".join(parts)
    if isinstance(data, list):
        return "; ".join(_json_message(v) for v in data[:3])
    return str(data)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    content_type: str
    next_url: URL | None
    lease: Lease | None = None  # the body's bytes in the process' budget, until parsed
    reader: JsonReader | None = None  # a 2xx body, parsed as it arrived


@dataclass(frozen=True, slots=True)
class _Page:
    data: Any
    next_url: URL | None
    total_pages: int | None  # GitLab's X-Total-Pages, when it sent one
    #: a large list's items to hand out per turn of the event loop (``None``: all at once)
    per_turn: int | None = None
    reader: JsonReader | None = None  # close once the page's items are handed out


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """One answer to :meth:`GitLabClient.probe_get`, as it came."""

    status: int
    content_type: str
    body: bytes
    location: str | None


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, status: int | None, final: GitLabError,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.final = final
        self.headers = headers


# --------------------------------------------------------------------------- client


class GitLabClient:
    """Paced, bounded, retrying access to GitLab's REST API v4 over a shared session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: str,
        requests_per_second: float = 10.0,
        max_concurrency: int = 16,
        timeout_seconds: float = 30.0,
        max_retries: int = 6,
        metrics: ClientMetrics | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        max_body_bytes: int = 50 * 2**20,
        max_bytes_in_flight: int = 64 * 2**20,
        rng: random.Random | None = None,
        gate: RateGate | None = None,
        breaker: ProjectBreaker | None = None,
    ) -> None:
        if not requests_per_second > 0:
            raise ValueError("requests_per_second must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if not timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        base = URL(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        self._session = session
        root = str(base.with_query(None).with_fragment(None))
        if root.endswith(API_PREFIX):  # tolerate a base URL given with the API prefix
            root = root[: -len(API_PREFIX)]
        self._api_root = root + API_PREFIX
        self._api_path = URL(self._api_root).raw_path
        self._external_logged = False
        self._origin = _origin(base)
        self._token = token
        self._pacer = _Pacer(requests_per_second)
        # per-endpoint limits and RateLimit-* headers; waiting here holds no slot
        self.gate = gate if gate is not None else RateGate()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        #: sets aside projects whose repository reads keep failing
        self.breaker = breaker
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_retries = max_retries
        self._metrics = metrics
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_body_bytes = max_body_bytes
        #: response bytes being read or parsed, for the whole process
        self.bodies = ByteBudget(max_bytes_in_flight)
        self._rng = rng if rng is not None else random.Random()
        self.request_count = 0
        """Requests sent (every attempt and redirect hop), for tests and benchmarks."""

    # -- public ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The configured GitLab URL, without ``/api/v4``."""
        return self._api_root[: -len(API_PREFIX)]

    async def probe_get(self, path: str, *, within: float) -> ProbeAnswer:
        """One GET of ``/api/v4`` + ``path``: no retries, no redirects followed, and
        aiohttp's own exceptions left as they are, for :mod:`exporter.gitlab.door` to
        name the cause."""
        await self._pacer.wait()
        self.request_count += 1
        code = "error"
        try:
            async with self._session.get(
                self._url(path, None),
                headers={"PRIVATE-TOKEN": self._token, "Accept": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=within),
                raise_for_status=False,
            ) as resp:
                code = str(resp.status)
                body = await self._read_body(resp, _ERROR_BODY_BYTES, path, strict=False)
                return ProbeAnswer(
                    resp.status,
                    resp.headers.get("Content-Type", ""),
                    body,
                    resp.headers.get("Location"),
                )
        except TimeoutError:
            code = "timeout"
            raise
        finally:
            if self._metrics is not None:
                self._metrics.requests.labels(path, code).inc()

    async def get_json(
        self, path: str, params: Mapping[str, str] | None = None, *, endpoint: str
    ) -> Any:
        """GET ``/api/v4`` + ``path`` (already percent-encoded) and return the parsed JSON."""
        with self._watched(path, endpoint) as retries:
            page = await self._fetch(self._url(path, params), endpoint, retries)
        if page.reader is not None:
            page.reader.close()
        return page.data

    @contextmanager
    def _watched(self, path: str, endpoint: str) -> Iterator[int | None]:
        """The project breaker around one read: the retries it allows (``None``: the
        client's own), and the read's outcome told to it."""
        project = self._project(path, endpoint)
        if project is None:
            yield None
            return
        try:
            yield self._breaker_retries(project, endpoint)
        except (ApiError, RequestTimeoutError):
            self._failed(project)
            raise
        self._succeeded(project)

    async def paginate(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        endpoint: str,
        max_pages: int | None = None,
        page_budget: int | None = None,
        on_page: Callable[[], None] | None = None,
    ) -> AsyncIterator[Any]:
        """Yield the items of every page, following ``Link: rel="next"`` to the end.

        ``max_pages``: after the first page, raise :class:`PageBudgetExceeded` (before
        yielding anything) when GitLab's ``X-Total-Pages`` is above it or absent (GitLab
        leaves it out for collections over 10,000 items). ``on_page`` is called once per
        page read.

        A next link's path and query are put on the configured base URL (GitLab builds
        its links from its external URL, which can differ); the token only ever goes
        there. A listing longer than ``page_budget`` pages (default: GitLab's own events
        cap for events, else :data:`PAGE_BUDGET`), or :data:`MAX_EMPTY_PAGES` empty pages
        in a row that still name a next one, ends with an :class:`ApiError`.
        """
        query = dict(params or {})
        query["per_page"] = PER_PAGE
        url: URL | None = self._url(path, query)
        if page_budget is None:
            page_budget = EVENTS_PAGE_BUDGET if endpoint.endswith("/events") else PAGE_BUDGET
        with self._watched(path, endpoint) as retries:
            async for item in self._pages(url, endpoint, max_pages, page_budget, retries, on_page):
                yield item

    async def _pages(
        self,
        url: URL | None,
        endpoint: str,
        max_pages: int | None,
        page_budget: int,
        retries: int | None,
        on_page: Callable[[], None] | None = None,
    ) -> AsyncIterator[Any]:
        empty_ends = not endpoint.endswith("/events")  # events pages may be empty midway
        seen: set[tuple[tuple[str, str, int | None], str, tuple[tuple[str, str], ...]]] = set()
        empty_run = 0
        while url is not None:
            key = _page_key(url)
            if key in seen:
                raise ApiError("pagination loop: next page was already read", endpoint=endpoint)
            if len(seen) >= page_budget:
                raise ApiError(
                    f"listing longer than {page_budget} pages; stopped", endpoint=endpoint
                )
            seen.add(key)
            page = await self._fetch(url, endpoint, retries)
            data, next_url = page.data, page.next_url
            if max_pages is not None and len(seen) == 1 and (
                page.total_pages is None or page.total_pages > max_pages
            ):
                raise PageBudgetExceeded(page.total_pages, max_pages)
            if not isinstance(data, list):
                raise ApiError(
                    f"expected a JSON list, got {type(data).__name__}", endpoint=endpoint
                )
            if next_url is not None:
                next_url = self._on_base(next_url, endpoint)
                empty_run = empty_run + 1 if not data else 0
                if empty_ends and empty_run >= MAX_EMPTY_PAGES:
                    raise ApiError(
                        f"{empty_run} empty pages in a row, each naming another; stopped",
                        endpoint=endpoint,
                    )
            if on_page is not None:
                on_page()
            try:
                if page.per_turn is None:
                    for item in data:
                        yield item
                else:
                    async for item in _hand_out(data, page.per_turn):
                        yield item
            finally:
                if page.reader is not None:
                    page.reader.close()
            url = next_url

    def _on_base(self, link: URL, endpoint: str) -> URL:
        """A next link's path and query on the configured base URL (python-gitlab's
        ``keep_base_url``): GitLab writes links on its external URL."""
        if _origin(link) == self._origin and link.raw_path.startswith(self._api_path):
            return link
        raw = link.raw_path
        at = raw.find(API_PREFIX + "/")
        if at < 0:
            raise ApiError("next page link is not a GitLab API URL; refused", endpoint=endpoint)
        moved = URL(self._api_root + raw[at + len(API_PREFIX) :], encoded=True)
        if link.raw_query_string:
            moved = URL(f"{moved}?{link.raw_query_string}", encoded=True)
        if not self._external_logged:
            self._external_logged = True
            log.warning(
                "GitLab's external URL differs from gitlab.url; following its page links "
                "on gitlab.url",
                external=str(link.origin()) if link.absolute else "relative link",
                configured=str(URL(self._api_root).origin()),
            )
        return moved

    # -- internals ------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, str] | None) -> URL:
        if not path.startswith("/"):
            path = "/" + path
        url = URL(self._api_root + path, encoded=True)
        if params:
            url = url.with_query(dict(params))
        return url

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "[REDACTED]") if self._token else text

    def _project(self, path: str, endpoint: str) -> int | None:
        """The project a repository read is of, when a breaker watches such reads."""
        if self.breaker is None or not endpoint.startswith(BREAKER_ENDPOINTS):
            return None
        parts = path.split("/")  # "", "projects", ID, "repository", ...
        return int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None

    def _breaker_retries(self, project: int, endpoint: str) -> int | None:
        assert self.breaker is not None
        return self.breaker.retries(project, endpoint)

    def _failed(self, project: int) -> None:
        assert self.breaker is not None
        self.breaker.failed(project)

    def _succeeded(self, project: int) -> None:
        assert self.breaker is not None
        self.breaker.succeeded(project)

    async def _fetch(self, url: URL, endpoint: str, retries: int | None = None) -> _Page:
        attempt = 0
        limit = self._max_retries if retries is None else min(retries, self._max_retries)
        while True:
            try:
                return await self._attempt(url, endpoint)
            except _Retry as retry:
                if attempt >= limit:
                    raise retry.final from None
                wait = retry_delay(
                    attempt,
                    status=retry.status,
                    headers=retry.headers,
                    base=self._backoff_base,
                    cap=self._backoff_cap,
                    rng=self._rng,
                )
                if self._metrics is not None:
                    self._metrics.retries.labels(endpoint, retry.reason).inc()
                log.debug(
                    "gitlab_retry",
                    endpoint=endpoint,
                    status=retry.status,
                    reason=retry.reason,
                    attempt=attempt + 1,
                    wait=round(wait, 3),
                )
                attempt += 1
                await asyncio.sleep(wait)  # no concurrency slot held here

    async def _attempt(self, url: URL, endpoint: str) -> _Page:
        response: _Response | None = None
        while response is None:
            ticket = await self.gate.acquire(endpoint)
            try:
                async with self._semaphore:
                    # a route held meanwhile (a 429 while this waited for a slot): wait again
                    if not self.gate.held(endpoint):
                        response = await self._follow(url, endpoint, ticket)
            finally:
                ticket.close()
        try:
            return await self._page(response, endpoint)
        except BaseException:
            if response.reader is not None:
                response.reader.close()
            raise
        finally:
            if response.lease is not None:
                response.lease.release()

    async def _page(self, response: _Response, endpoint: str) -> _Page:
        status = response.status
        if status != 429:
            self.gate.accepted(endpoint)
        if 200 <= status < 300:
            reader = response.reader
            try:
                data = reader.finish() if reader is not None else json.loads(response.body)
            except (ValueError, UnicodeDecodeError, RecursionError):  # nesting bomb too
                raise _Retry(
                    "invalid_body",
                    status,
                    ApiError("response body is not valid JSON", endpoint=endpoint, status=status),
                ) from None
            total = header_number(response.headers.get("X-Total-Pages"))
            return _Page(
                data,
                response.next_url,
                None if total is None else int(total),
                per_turn=None if reader is None else reader.items_per_turn,
                reader=reader,
            )
        detail = self._redact(_describe_body(response.body, response.content_type))
        if status == 404:
            raise NotFoundError(detail, endpoint=endpoint, status=status)
        if status in (401, 403):
            raise UnauthorizedError(detail, endpoint=endpoint, status=status)
        if status == 429:
            wait = _header_wait(status, response.headers, time.time())
            if wait is not None and response.headers.get("RateLimit-Remaining") is None:
                # a per-route limit: GitLab names no limit, only how long to wait
                self.gate.hold(endpoint, wait, learn=_ROUTE_LIMIT_TEXT in response.body)
            raise _Retry(
                "rate_limited",
                status,
                RateLimitedError(detail, endpoint=endpoint, status=status),
                response.headers,
            )
        if status in RETRY_STATUSES:
            raise _Retry(
                "server_error",
                status,
                ApiError(detail, endpoint=endpoint, status=status),
                response.headers,
            )
        if status in REDIRECT_STATUSES:
            detail = "redirect without a usable Location"
        raise ApiError(detail, endpoint=endpoint, status=status)

    async def _follow(self, url: URL, endpoint: str, ticket: Ticket | None = None) -> _Response:
        """Send the request, following same-origin redirects (holding one concurrency slot)."""
        for _hop in range(MAX_REDIRECTS + 1):
            response = await self._send(url, endpoint, ticket)
            if response.status not in REDIRECT_STATUSES:
                return response
            location = response.headers.get("Location")
            if not location:
                return response
            try:
                target = url.join(URL(location))
            except ValueError:
                raise ApiError(
                    "redirect to an invalid URL", endpoint=endpoint, status=response.status
                ) from None
            if _origin(target) != self._origin:
                raise ApiError(
                    f"redirect to another origin ({target.host or 'unknown host'}) refused",
                    endpoint=endpoint,
                    status=response.status,
                )
            url = target
        raise ApiError(
            f"more than {MAX_REDIRECTS} redirects", endpoint=endpoint, status=response.status
        )

    async def _send(self, url: URL, endpoint: str, ticket: Ticket | None = None) -> _Response:
        await self._pacer.wait()
        if ticket is not None:
            ticket.sent()
        self.request_count += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        code: str | None = "error"
        try:
            async with self._session.get(
                url,
                headers={"PRIVATE-TOKEN": self._token, "Accept": "application/json"},
                allow_redirects=False,
                timeout=self._timeout,
                raise_for_status=False,
            ) as resp:
                code = str(resp.status)
                if self._metrics is not None:
                    self._metrics.observe_ratelimit(resp.headers)
                self.gate.observe(endpoint, resp.headers)
                ok = 200 <= resp.status < 300
                limit = self._max_body_bytes if ok else _ERROR_BODY_BYTES
                lease = self.bodies.lease() if ok else None
                reader = JsonReader() if ok else None
                try:
                    body = await self._read_body(
                        resp, limit, endpoint, strict=ok, lease=lease, reader=reader
                    )
                except BaseException:
                    if lease is not None:
                        lease.release()
                    if reader is not None:
                        reader.close()
                    raise
                next_link = resp.links.get("next") if ok else None
                next_url = next_link.get("url") if next_link is not None else None
                return _Response(
                    status=resp.status,
                    headers=resp.headers,
                    body=body,
                    content_type=resp.headers.get("Content-Type", ""),
                    next_url=next_url if isinstance(next_url, URL) else None,
                    lease=lease,
                    reader=reader,
                )
        except asyncio.CancelledError:
            code = None  # abandoned by the caller, not an answer from GitLab
            raise
        except TimeoutError:
            code = "timeout"
            raise _Retry(
                "timeout",
                None,
                RequestTimeoutError(
                    f"no complete answer within {self._timeout.total:g}s", endpoint=endpoint
                ),
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            code = "error"
            raise _Retry(
                "connection",
                None,
                RequestTimeoutError(
                    f"connection failed ({type(exc).__name__})", endpoint=endpoint
                ),
            ) from None
        except aiohttp.ClientError as exc:
            code = "error"
            raise ApiError(
                f"request failed ({type(exc).__name__})", endpoint=endpoint
            ) from None
        finally:
            if self._metrics is not None and code is not None:
                self._metrics.requests.labels(endpoint, code).inc()
                self._metrics.duration.labels(endpoint).observe(loop.time() - started)

    async def _read_body(
        self,
        resp: aiohttp.ClientResponse,
        limit: int,
        endpoint: str,
        *,
        strict: bool,
        lease: Lease | None = None,
        reader: JsonReader | None = None,
    ) -> bytes:
        """Read at most ``limit`` bytes; over it, fail (``strict``) or truncate. With a
        ``lease``, each chunk waits for room in the process' byte budget. With a
        ``reader``, each chunk goes to it as it arrives (and nothing is returned)."""
        too_large = ApiError(
            f"response body larger than {limit} bytes", endpoint=endpoint, status=resp.status
        )
        length = resp.content_length
        if strict and length is not None and length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            if lease is not None:
                await lease.take(len(chunk))
            size += len(chunk)
            if size > limit:
                if strict:
                    raise too_large
                chunks.append(chunk[: len(chunk) - (size - limit)])
                break
            if reader is not None:
                await reader.feed(chunk)  # parsed as it arrives; a large list in slices
            else:
                chunks.append(chunk)
        return b"".join(chunks)

"""A GitLab REST API v4 that serves a simulated organisation, awkward parts included.

Pagination, errors, rate limits and dates follow GitLab's behaviour (the team's
``gitlab-api.md``). Faults and latency can be injected at runtime, and every request is
recorded, so tests and benchmarks can check what a client did.

Usage::

    async with SimulatorServer(org, token="t") as sim:
        ...  # point a client at sim.url (without /api/v4)
        sim.faults.add(FaultRule(r"/repository/commits$", "502_html", times=1))
        assert sim.log.count("/users/:id") == 3
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from aiohttp import web
from yarl import URL

from exporter.simulator.faults import (
    DEFAULT_RANDOM_KINDS,
    FAULT_KINDS,
    FaultRule,
    Faults,
    RequestLog,
    RequestRecord,
)
from exporter.simulator.model import Commit, Event, Group, Issue, MergeRequest, Org, Project, User

__all__ = [
    "DEFAULT_RANDOM_KINDS",
    "FAULT_KINDS",
    "GITLAB_COM_LIMITS",
    "SIMULATOR_KEY",
    "FaultRule",
    "Faults",
    "GitLabSimulator",
    "RateLimiter",
    "RateLimits",
    "RequestLog",
    "RequestRecord",
    "SimulatorServer",
    "create_app",
    "serve_simulator",
]

API = "/api/v4"
T = TypeVar("T")
Clock = Callable[[], float]


# --------------------------------------------------------------------------- rate limits
@dataclass(frozen=True)
class RateLimits:
    """Throttles: ``general`` for every API request of a token, ``endpoints`` per route.

    Values are ``(requests, period_seconds)``; windows are aligned to multiples of the
    period (as GitLab's Rack::Attack does). ``endpoint_retry_after`` makes per-endpoint
    429s carry ``Retry-After`` (gitlab.com's often do not).

    Realism knobs (GitLab as it is, rather than as convenient):

    - ``headers_on_429_only``: ``RateLimit-*`` only on the 429 (self-managed instances
      with throttles on, older releases), not on every answer;
    - ``endpoint_headers=False``: per-route limits send no ``RateLimit-*`` at all;
    - ``endpoint_retry_after_interval``: a per-route 429's ``Retry-After`` is the whole
      interval (600 for ``/users/:id``), as current releases send it;
    - ``per_minute_limit``: ``RateLimit-Limit`` normalised to a per-minute figure,
      ``ceil(limit * 60 / period)``, as GitLab sends it.
    """

    general: tuple[int, float] | None = None
    endpoints: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    endpoint_retry_after: bool = False
    headers_on_429_only: bool = False
    endpoint_headers: bool = True
    endpoint_retry_after_interval: bool = False
    per_minute_limit: bool = False


#: a self-managed GitLab's throttles as they answer: headers only on the 429, per-route
#: limits without any, ``Retry-After`` of the whole interval, a per-minute Limit
REALISTIC_HEADERS = {
    "headers_on_429_only": True,
    "endpoint_headers": False,
    "endpoint_retry_after_interval": True,
    "per_minute_limit": True,
}


#: gitlab.com's published limits, answered as gitlab.com does: RateLimit-* on every
#: answer for the general limit, none for the per-route limits (whose 429s carry a
#: Retry-After of the whole interval)
GITLAB_COM_LIMITS = RateLimits(
    general=(2000, 60.0),
    endpoints={
        "/users/:id": (300, 600.0),
        "/users/:id/projects": (300, 60.0),
        "/users/:id/contributed_projects": (100, 60.0),
        "/projects/:id": (400, 60.0),
        "/groups/:id/projects": (600, 60.0),
    },
    endpoint_headers=False,
    endpoint_retry_after_interval=True,
    per_minute_limit=True,
)

GENERAL_LIMIT_NAME = "throttle_authenticated_api"
_ENDPOINT_LIMIT_NAMES = {
    "/users/:id": "users_get_by_id",
    "/users/:id/projects": "user_projects_api",
    "/users/:id/contributed_projects": "user_contributed_projects_api",
    "/projects/:id": "projects_api",
    "/groups/:id/projects": "group_projects_api",
}


def _limit_name(endpoint: str) -> str:
    known = _ENDPOINT_LIMIT_NAMES.get(endpoint)
    if known:
        return known
    return re.sub(r"[^a-z0-9]+", "_", endpoint.lower()).strip("_") + "_api"


@dataclass(frozen=True)
class _Verdict:
    name: str
    limit: int
    observed: int
    reset: float  # unix seconds
    general: bool
    period: float = 60.0
    per_minute: bool = False

    @property
    def exceeded(self) -> bool:
        return self.observed > self.limit

    def headers(self) -> dict[str, str]:
        shown = math.ceil(self.limit * 60 / self.period) if self.per_minute else self.limit
        return {
            "RateLimit-Name": self.name,
            "RateLimit-Limit": str(shown),
            "RateLimit-Observed": str(self.observed),
            "RateLimit-Remaining": str(max(0, self.limit - self.observed)),
            "RateLimit-Reset": str(int(self.reset)),
        }


class RateLimiter:
    """Counts requests per token in aligned windows; ``clock`` is injectable."""

    def __init__(self, config: RateLimits | None = None, clock: Clock = time.time) -> None:
        self.config = config or RateLimits()
        self.clock = clock
        self._counters: dict[tuple[str, str], tuple[float, int]] = {}

    def reset(self) -> None:
        self._counters.clear()

    def _observe(self, name: str, key: str, limit: int, period: float, now: float) -> _Verdict:
        window = math.floor(now / period) * period
        start, count = self._counters.get((name, key), (window, 0))
        if start != window:
            count = 0
        count += 1
        self._counters[(name, key)] = (window, count)
        return _Verdict(
            name,
            limit,
            count,
            window + period,
            name == GENERAL_LIMIT_NAME,
            period,
            self.config.per_minute_limit,
        )

    def check(self, key: str, endpoint: str) -> tuple[_Verdict | None, _Verdict | None]:
        """Count one request; returns (verdict to report in headers, exceeded verdict)."""
        now = self.clock()
        verdicts: list[_Verdict] = []
        if self.config.general is not None:
            limit, period = self.config.general
            verdicts.append(self._observe(GENERAL_LIMIT_NAME, key, limit, period, now))
        specific = self.config.endpoints.get(endpoint)
        if specific is not None:
            limit, period = specific
            verdicts.append(self._observe(_limit_name(endpoint), key, limit, period, now))
        exceeded = next((v for v in verdicts if v.exceeded), None)
        config = self.config
        # without endpoint_headers, per-route limits name themselves nowhere
        named = verdicts if config.endpoint_headers else [v for v in verdicts if v.general]
        if config.headers_on_429_only:
            shown = exceeded if exceeded is not None and exceeded in named else None
        else:
            shown = (exceeded if exceeded in named else None) or (named[-1] if named else None)
        return shown, exceeded


# --------------------------------------------------------------------------- rendering
def _iso_utc(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _commit_date(dt: datetime, millis: bool) -> str:
    return dt.isoformat(timespec="milliseconds" if millis else "seconds")


class _HTTPError(Exception):
    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _not_found(what: str) -> _HTTPError:
    return _HTTPError(404, {"message": f"404 {what} Not Found"})


def _bad_param(name: str) -> _HTTPError:
    return _HTTPError(400, {"error": f"{name} is invalid"})


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


_HTML = {
    500: ("500 Internal Server Error", "We're sorry, but something went wrong."),
    502: ("502 Bad Gateway", "Whoops, GitLab is taking too much time to respond."),
    503: ("503 Service Unavailable", "GitLab is not responding."),
}


def _html_error(status: int) -> web.Response:
    title, text = _HTML[status]
    body = (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{status}</h1>\n<p>{text}</p>\n"
        "</body>\n</html>\n"
    )
    return web.Response(text=body, status=status, content_type="text/html")


def _parse_time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad_param(name) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _parse_date(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        raise _bad_param(name) from None


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad_param(name) from None


def _truthy(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- bad shapes
_IDENTIFYING = frozenset(
    {"id", "username", "name", "author_name", "author_email", "authored_date",
     "project_id", "namespace", "path_with_namespace", "state"}
)
_NULLABLE = frozenset({"name", "username", "author_name", "author_email", "path_with_namespace"})
_NAIVE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:Z|[+-]\d{2}:?\d{2})$")


def _map_objects(data: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    if isinstance(data, list):
        return [_map_objects(item, change) for item in data]
    if isinstance(data, dict):
        return change({k: _map_objects(v, change) for k, v in data.items()})
    return data


def _wrong_shape(data: Any) -> Any:
    if isinstance(data, list):
        return {"items": data, "message": "not the list you asked for"}
    return [data]


def _missing_fields(data: Any) -> Any:
    return _map_objects(data, lambda o: {k: v for k, v in o.items() if k not in _IDENTIFYING})


def _null_fields(data: Any) -> Any:
    return _map_objects(data, lambda o: {k: None if k in _NULLABLE else v for k, v in o.items()})


def _naive_dates(data: Any) -> Any:
    def strip(o: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in o.items():
            match = _NAIVE.match(value) if isinstance(value, str) else None
            out[key] = match.group(1) if match else value
        return out

    return _map_objects(data, strip)


_BODY_FAULTS: dict[str, Callable[[Any], Any]] = {
    "wrong_shape_object": _wrong_shape,
    "missing_fields": _missing_fields,
    "null_fields": _null_fields,
    "naive_dates": _naive_dates,
}


# --------------------------------------------------------------------------- the app
Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]

SIMULATOR_KEY: web.AppKey[GitLabSimulator] = web.AppKey("gitlab_simulator")


class GitLabSimulator:
    """The simulator's state and request handling; ``.app`` is the aiohttp application."""

    def __init__(
        self,
        org: Org,
        *,
        token: str = "sim-token",
        limits: RateLimits | RateLimiter | None = None,
        faults: Faults | None = None,
        log: RequestLog | None = None,
        clock: Clock | None = None,
        token_owner: str = "sim-admin",
        admin: bool = True,
    ) -> None:
        self.org = org
        self.token = token
        self.token_owner = token_owner
        #: the token is an administrator's; a non-admin token does not see private
        #: profiles, blocked users, or the code of projects it may only look at
        self.admin = admin
        if isinstance(limits, RateLimiter):
            self.limits = limits
            if clock is not None:
                self.limits.clock = clock
        else:
            self.limits = RateLimiter(limits, clock or time.time)
        self.faults = faults or Faults()
        self.log = log or RequestLog()
        #: GitLab's ``external_url`` (e.g. ``https://gitlab.example.com``): pagination
        #: links are built from it, as GitLab does, not from the URL a request used
        self.external_url: str | None = None
        #: every credential value received, in order
        self.credentials: list[str] = []
        self._routes: list[tuple[re.Pattern[str], str, Handler]] = [
            (re.compile(pattern), template, handler)
            for pattern, template, handler in (
                (r"^/version$", "/version", self._version),
                (r"^/user$", "/user", self._current_user),
                (r"^/users$", "/users", self._users),
                (r"^/users/([^/]+)$", "/users/:id", self._user),
                (r"^/users/([^/]+)/projects$", "/users/:id/projects", self._user_projects),
                (
                    r"^/users/([^/]+)/contributed_projects$",
                    "/users/:id/contributed_projects",
                    self._contributed,
                ),
                (r"^/users/([^/]+)/events$", "/users/:id/events", self._events),
                (r"^/projects/([^/]+)$", "/projects/:id", self._project),
                (
                    r"^/projects/([^/]+)/repository/commits$",
                    "/projects/:id/repository/commits",
                    self._commits,
                ),
                (
                    r"^/projects/([^/]+)/repository/branches$",
                    "/projects/:id/repository/branches",
                    self._branches,
                ),
                (
                    r"^/projects/([^/]+)/repository/compare$",
                    "/projects/:id/repository/compare",
                    self._compare,
                ),
                (r"^/groups/([^/]+)$", "/groups/:id", self._group),
                (r"^/groups/([^/]+)/members/all$", "/groups/:id/members/all", self._members_all),
                (r"^/groups/([^/]+)/members$", "/groups/:id/members", self._members),
                (r"^/groups/([^/]+)/projects$", "/groups/:id/projects", self._group_projects),
                (r"^/merge_requests$", "/merge_requests", self._merge_requests),
                (r"^/issues$", "/issues", self._issues),
            )
        ]
        self.app = web.Application()
        self.app[SIMULATOR_KEY] = self
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # ------------------------------------------------------------------ dispatch
    def _route(self, raw_path: str) -> tuple[str, Handler, list[str]] | None:
        if not raw_path.startswith(API + "/"):
            return None
        sub = raw_path[len(API) :]
        for regex, template, handler in self._routes:
            m = regex.match(sub)
            if m:
                return template, handler, [unquote(g) for g in m.groups()]
        return None

    @staticmethod
    def _credential(request: web.Request) -> str | None:
        token = request.headers.get("PRIVATE-TOKEN")
        if token is not None:
            return token
        auth = request.headers.get("Authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            return value.strip() if scheme.lower() == "bearer" else auth
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        credential = self._credential(request)
        if credential is not None:
            self.credentials.append(credential)
        routed = self._route(raw_path)
        endpoint = routed[0] if routed else "unknown"
        status = 0
        fault_kind: str | None = None
        try:
            if self.faults.latency_ms > 0:
                await asyncio.sleep(self.faults.latency_ms / 1000)
            rule = self.faults.pick(request.path, raw_path, request.query_string)
            fault_kind = rule.kind if rule else None
            response = await self._respond(request, routed, credential, rule)
            status = 0 if fault_kind == "reset" else response.status
            return response
        finally:
            self.log.add(
                RequestRecord(
                    method=request.method,
                    endpoint=endpoint,
                    path=raw_path,
                    query=dict(request.query),
                    status=status,
                    credential=credential,
                    fault=fault_kind,
                )
            )

    async def _respond(
        self,
        request: web.Request,
        routed: tuple[str, Handler, list[str]] | None,
        credential: str | None,
        rule: FaultRule | None,
    ) -> web.StreamResponse:
        kind = rule.kind if rule else None
        if rule is not None and kind == "slow":
            await asyncio.sleep(rule.delay)
        early = self._early_fault(request, kind)
        if early is not None:
            return early
        if routed is None:
            return _json({"error": "404 Not Found"}, 404)
        if credential != self.token:
            return _json({"message": "401 Unauthorized"}, 401)
        if request.method not in ("GET", "HEAD"):
            return _json({"error": "405 Method Not Allowed"}, 405)
        endpoint, handler, groups = routed
        shown, exceeded = self.limits.check(credential, endpoint)
        headers = shown.headers() if shown else {}
        if exceeded is not None:
            return self._throttled(exceeded, headers)
        try:
            response = await handler(request, {str(i): g for i, g in enumerate(groups)})
        except _HTTPError as err:
            response = _json(err.body, err.status)
        response.headers.update(headers)
        if kind == "malformed_json" and isinstance(response, web.Response) and response.body:
            body = bytes(response.body)  # type: ignore[arg-type]
            response.body = body[: max(1, len(body) // 2)]
        elif kind == "reset":
            return await self._reset(request, response)
        elif kind == "huge_body" and 200 <= response.status < 300:
            return await self._huge(request, response)
        elif kind in _BODY_FAULTS and isinstance(response, web.Response) and response.body:
            data = json.loads(bytes(response.body))  # type: ignore[arg-type]
            response.body = json.dumps(_BODY_FAULTS[kind](data)).encode()
        if kind == "far_reset":
            response.headers.update(
                {
                    "RateLimit-Name": GENERAL_LIMIT_NAME,
                    "RateLimit-Limit": "2000",
                    "RateLimit-Observed": "2000",
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(int(self.limits.clock() * 1000)),  # milliseconds
                }
            )
        if kind == "endless_empty" and 200 <= response.status < 300:
            page = _int_param(request, "page", 1)
            query = {**request.query, "page": str(page + 1)}
            response = _json([], headers={
                "Link": f'<{self._external(request.url.with_query(query))}>; rel="next"',
                "X-Page": str(page),
                "X-Next-Page": str(page + 1),
            })
        if kind == "link_loop" and 200 <= response.status < 300:
            # the next page is this very page: a client that follows it never ends
            link = f'<{self._external(request.url)}>; rel="next"'
            response.headers["Link"] = link
            response.headers["X-Next-Page"] = response.headers.get("X-Page", "1")
        return response

    async def _huge(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        """A JSON list of ``faults.huge_body_bytes`` bytes, streamed without a length."""
        if self.faults.huge_body_real_items:
            padded = await self._padded(request, response)
            if padded is not None:
                return padded
        stream = web.StreamResponse(status=response.status)
        stream.content_type = "application/json"
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        # many small items, shaped as commits no scanned user authored (a shape check
        # of another route's items fails on them)
        sha = "0" * 40
        item = json.dumps({
            "id": sha, "short_id": sha[:8], "title": "padding", "message": "x" * 600,
            "author_name": "padding", "author_email": "padding@example.invalid",
            "authored_date": "2000-01-01T00:00:00.000Z",
            "committed_date": "2000-01-01T00:00:00.000Z", "parent_ids": [],
        }).encode() + b","
        size = self.faults.huge_body_bytes
        try:
            await stream.write(b"[")
            sent = 1
            block = item * 64
            while sent + len(block) < size:
                await stream.write(block)
                sent += len(block)
            while sent < size:
                await stream.write(item)
                sent += len(item)
            await stream.write(item[:-1] + b"]")
            await stream.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading, as it should
        return stream

    async def _padded(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse | None:
        """The real answer (a non-empty list) with each item padded by lines of text to
        ``faults.huge_body_bytes`` in all, streamed without a length, headers kept."""
        if not isinstance(response, web.Response) or not response.body:
            return None
        items = json.loads(bytes(response.body))  # type: ignore[arg-type]
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return None
        line = '"' + "padding text " * 19 + '"'  # about 250 bytes, as a long message's lines
        per_item = min(self.faults.huge_body_bytes // len(items),
                       self.faults.huge_body_item_bytes)
        padding = ('"padding":[' + ",".join([line] * max(1, per_item // (len(line) + 1)))
                   + "]}").encode()
        stream = web.StreamResponse(status=response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "content-type", "content-encoding"):
                stream.headers.add(name, value)
        stream.content_type = "application/json"
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        sent = 0
        try:
            for index, item in enumerate(items):
                head = json.dumps(item).encode()
                await stream.write((b"[" if index == 0 else b",") + head[:-1]
                                   + (b"," if item else b""))
                if index == 0:  # one character outside the BMP, as in an emoji
                    await stream.write('"note":"shipped \U0001F680",'.encode())
                for at in range(0, len(padding), 2**20):
                    await stream.write(padding[at : at + 2**20])
                sent += len(head) + len(padding) + 1
            await stream.write(b"]")
            self.faults.huge_body_sizes.append(sent + 1)
            await stream.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading
        return stream

    def _early_fault(self, request: web.Request, kind: str | None) -> web.StreamResponse | None:
        if kind in ("500_html", "502_html", "503_html"):
            response = _html_error(int(kind[:3]))
            if self.faults.retry_after_5xx is not None:
                response.headers["Retry-After"] = str(self.faults.retry_after_5xx)
            return response
        if kind == "429":
            return web.Response(
                text="Retry later\n",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": str(self.faults.retry_after)},
            )
        if kind == "429_no_retry_after":
            return _json(
                {
                    "message": {
                        "error": "This endpoint has been requested too many times. Try again later."
                    }
                },
                429,
            )
        if kind == "401":
            return _json({"message": "401 Unauthorized"}, 401)
        if kind == "404":
            return _json({"message": "404 Not Found"}, 404)
        if kind == "redirect":
            location = self.faults.redirect_base.rstrip("/") + request.raw_path
            return web.Response(status=302, headers={"Location": location})
        return None

    def _throttled(self, verdict: _Verdict, headers: dict[str, str]) -> web.Response:
        now = self.limits.clock()
        retry_after = str(max(1, math.ceil(verdict.reset - now)))
        if verdict.general:
            headers["Retry-After"] = retry_after
            headers["RateLimit-ResetTime"] = formatdate(verdict.reset, usegmt=True)
            return web.Response(
                text="Retry later\n", status=429, content_type="text/plain", headers=headers
            )
        config = self.limits.config
        if config.endpoint_retry_after_interval:
            headers["Retry-After"] = str(math.ceil(verdict.period))
        elif config.endpoint_retry_after:
            headers["Retry-After"] = retry_after
            if config.endpoint_headers:
                headers["RateLimit-ResetTime"] = formatdate(verdict.reset, usegmt=True)
        return _json(
            {
                "message": {
                    "error": "This endpoint has been requested too many times. Try again later."
                }
            },
            429,
            headers,
        )

    @staticmethod
    async def _reset(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        body = b""
        if isinstance(response, web.Response) and response.body:
            body = bytes(response.body)  # type: ignore[arg-type]
        if len(body) < 16:
            body = body + b" " * (16 - len(body))
        stream = web.StreamResponse(status=response.status, headers=response.headers)
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        transport = request.transport
        if transport is not None:
            transport.close()
        return stream

    # ------------------------------------------------------------------ pagination
    def _external(self, url: URL) -> str:
        """``url`` as GitLab would write it: on its external URL's scheme, host and port."""
        if self.external_url is None:
            return str(url)
        external = URL(self.external_url)
        root = external.path.rstrip("/")
        moved = url.with_scheme(external.scheme).with_host(external.host or "")
        moved = moved.with_port(external.port if external.explicit_port else None)
        return str(moved.with_path(root + url.path, encoded=False).with_query(url.query))

    def _page(
        self,
        request: web.Request,
        items: Sequence[T],
        *,
        totals: bool = True,
        commits: bool = False,
        max_offset: int | None = None,
    ) -> tuple[list[T], dict[str, str]]:
        page = _int_param(request, "page", 1)
        per_page = _int_param(request, "per_page", 20)
        if page < 1:
            page = 1
        if per_page < 1:
            per_page = 20
        per_page = min(per_page, 100)
        offset = (page - 1) * per_page
        if max_offset is not None and offset >= max_offset:
            raise _HTTPError(
                405,
                {
                    "error": f"Offset pagination has a maximum allowed offset of {max_offset} "
                    "for requests that return objects of type Project. Remaining records can "
                    "be retrieved using keyset pagination."
                },
            )
        chunk = list(items[offset : offset + per_page])
        total = len(items)
        total_pages = max(1, math.ceil(total / per_page))
        if commits:
            has_next = len(chunk) == per_page
            show_totals = False
        else:
            has_next = page < total_pages
            show_totals = totals and total <= 10_000
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": str(page + 1) if has_next else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        if show_totals:
            headers["X-Total"] = str(total)
            headers["X-Total-Pages"] = str(total_pages)

        def link(n: int) -> str:
            query = dict(request.query)
            query["page"] = str(n)
            query["per_page"] = str(per_page)
            return self._external(request.url.with_query(query))

        links = []
        if page > 1:
            links.append(f'<{link(page - 1)}>; rel="prev"')
        if has_next:
            links.append(f'<{link(page + 1)}>; rel="next"')
        links.append(f'<{link(1)}>; rel="first"')
        if show_totals:
            links.append(f'<{link(total_pages)}>; rel="last"')
        headers["Link"] = ", ".join(links)
        return chunk, headers

    def _list(
        self,
        request: web.Request,
        items: Sequence[T],
        render: Callable[[T], Any],
        **kwargs: Any,
    ) -> web.Response:
        if request.query.get("pagination") == "keyset" and kwargs.get("max_offset"):
            chunk, headers = self._keyset_page(request, items)
        else:
            chunk, headers = self._page(request, items, **kwargs)
        return _json([render(x) for x in chunk], headers=headers)

    def _keyset_page(
        self, request: web.Request, items: Sequence[T]
    ) -> tuple[list[T], dict[str, str]]:
        """``pagination=keyset&order_by=id&sort=asc|desc``: only ``Link rel="next"``."""
        if request.query.get("order_by", "id") != "id":
            raise _HTTPError(
                405, {"error": "Keyset pagination is not yet available for this type of request"}
            )
        sort = request.query.get("sort", "desc")
        if sort not in ("asc", "desc"):
            raise _bad_param("sort")
        per_page = _int_param(request, "per_page", 20)
        per_page = 20 if per_page < 1 else min(per_page, 100)
        after = _int_param(request, "id_after", 0) if "id_after" in request.query else None
        before = _int_param(request, "id_before", 0) if "id_before" in request.query else None

        def ident(item: T) -> int:
            value: int = getattr(item, "id")  # noqa: B009
            return value

        ordered = sorted(items, key=ident, reverse=sort == "desc")
        selected = [
            x
            for x in ordered
            if (after is None or ident(x) > after) and (before is None or ident(x) < before)
        ]
        chunk = selected[:per_page]
        headers = {"X-Per-Page": str(per_page)}
        if len(selected) > per_page:
            query = {k: v for k, v in request.query.items() if k not in ("id_after", "id_before")}
            query["per_page"] = str(per_page)
            query["id_after" if sort == "asc" else "id_before"] = str(ident(chunk[-1]))
            headers["Link"] = f'<{self._external(request.url.with_query(query))}>; rel="next"'
        return chunk, headers

    # ------------------------------------------------------------------ lookups
    def _hidden(self, user: User) -> bool:
        """The token cannot read the user's profile or activity (private or inactive)."""
        return not self.admin and user.profile_hidden

    def _event_visible(self, event: Event) -> bool:
        """Push events need ``download_code`` on the project."""
        if self.admin or event.action != "pushed":
            return True
        project = self.org.projects.get(event.project_id)
        return project is None or not project.code_forbidden

    def _find_user(self, ident: str) -> User:
        org = self.org
        user = org.users.get(int(ident)) if ident.isdigit() else org.user_by_username(ident)
        if user is None:
            raise _not_found("User")
        return user

    def _find_project(self, ident: str) -> Project:
        org = self.org
        project = org.projects.get(int(ident)) if ident.isdigit() else org.project_by_path(ident)
        if project is None:
            raise _not_found("Project")
        return project

    def _find_group(self, ident: str) -> Group:
        org = self.org
        group = org.groups.get(int(ident)) if ident.isdigit() else org.group_by_path(ident)
        if group is None:
            raise _not_found("Group")
        return group

    # ------------------------------------------------------------------ renderers
    def _user_basic(self, u: User) -> dict[str, Any]:
        return {
            "id": u.id,
            "username": u.username,
            "name": u.name,
            "state": u.state,
            "locked": False,
            "avatar_url": f"https://secure.gravatar.com/avatar/{u.id:x}?s=80&d=identicon",
            "web_url": f"https://{self.org.host}/{u.username}",
        }

    def _user_full(self, u: User) -> dict[str, Any]:
        data = self._user_basic(u)
        data.update(
            {
                "created_at": _iso_utc(u.created_at),
                "bio": "",
                "location": "",
                "public_email": u.public_email,
                "skype": "",
                "linkedin": "",
                "twitter": "",
                "website_url": "",
                "organization": "",
                "job_title": "",
                "pronouns": None,
                "bot": u.bot,
                "work_information": None,
                "local_time": None,
            }
        )
        return data

    def _project_json(self, p: Project) -> dict[str, Any]:
        ns = p.namespace
        ns_owner = self.org.user_by_username(ns.path) if ns.kind == "user" else None
        data: dict[str, Any] = {
            "id": p.id,
            "description": None,
            "name": p.name,
            "name_with_namespace": p.name_with_namespace,
            "path": p.path,
            "path_with_namespace": p.path_with_namespace,
            "created_at": _iso_utc(p.created_at),
            "default_branch": None if p.empty_repo else p.default_branch,
            "tag_list": [],
            "topics": [],
            "ssh_url_to_repo": f"git@{self.org.host}:{p.path_with_namespace}.git",
            "http_url_to_repo": f"https://{self.org.host}/{p.path_with_namespace}.git",
            "web_url": p.web_url or f"https://{self.org.host}/{p.path_with_namespace}",
            "readme_url": None,
            "forks_count": 0,
            "avatar_url": None,
            "star_count": 0,
            "last_activity_at": _iso_utc(p.last_activity_at),
            "namespace": {
                "id": ns.id,
                "name": ns.name,
                "path": ns.path,
                "kind": ns.kind,
                "full_path": ns.full_path,
                "parent_id": None,
                "avatar_url": None,
                "web_url": f"https://{self.org.host}/"
                + (ns.full_path if ns.kind == "user" else f"groups/{ns.full_path}"),
            },
            "visibility": p.visibility,
            "archived": p.archived,
            "empty_repo": p.empty_repo,
        }
        if ns_owner is not None:
            data["owner"] = self._user_basic(ns_owner)
        if p.forked_from_project is not None:
            up = self.org.projects.get(p.forked_from_project)
            if up is not None:
                data["forked_from_project"] = {
                    "id": up.id,
                    "name": up.name,
                    "name_with_namespace": up.name_with_namespace,
                    "path": up.path,
                    "path_with_namespace": up.path_with_namespace,
                    "web_url": up.web_url,
                }
        return data

    def _commit_json(
        self, c: Commit, project: Project, parents: dict[str, tuple[str, ...]] | None = None
    ) -> dict[str, Any]:
        committed = _commit_date(c.committed_date, c.millis)
        if parents is None:
            parents = self.org.parents(project.id)
        return {
            "id": c.sha,
            "short_id": c.short_id,
            "created_at": committed,
            "parent_ids": list(parents.get(c.sha, c.parent_ids)),
            "title": c.title,
            "message": c.message,
            "author_name": c.author_name,
            "author_email": c.author_email,
            "authored_date": _commit_date(c.authored_date, c.millis),
            "committer_name": c.committer_name or c.author_name,
            "committer_email": c.committer_email or c.author_email,
            "committed_date": committed,
            "trailers": {},
            "extended_trailers": {},
            "web_url": f"{project.web_url}/-/commit/{c.sha}",
        }

    def _event_json(self, e: Event) -> dict[str, Any]:
        user = self.org.users.get(e.user_id)
        author = self._user_basic(user) if user else None
        data: dict[str, Any] = {
            "id": e.id,
            "project_id": e.project_id,
            "action_name": e.action_name,
            "target_id": None,
            "target_iid": None,
            "target_type": None,
            "author_id": e.user_id,
            "target_title": None,
            "created_at": _iso_utc(e.created_at),
            "author": author,
            "imported": False,
            "imported_from": "none",
            "author_username": user.username if user else None,
        }
        if e.push_data is not None:
            data["push_data"] = e.push_data
        return data

    def _person(self, username: str | None) -> dict[str, Any] | None:
        if username is None:
            return None
        user = self.org.user_by_username(username)
        if user is not None:
            return self._user_basic(user)
        return {"id": 0, "username": username, "name": username, "state": "active"}

    def _mr_json(self, mr: MergeRequest) -> dict[str, Any]:
        project = self.org.projects.get(mr.project_id)
        return {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project_id,
            "title": mr.title,
            "state": mr.state,
            "created_at": _iso_utc(mr.created_at),
            "updated_at": _iso_utc(mr.last_update),
            "merged_at": _iso_utc(mr.merged_at),
            "closed_at": _iso_utc(mr.closed_at),
            "author": self._person(mr.author),
            "assignee": self._person(mr.assignee),
            "assignees": [self._person(mr.assignee)] if mr.assignee else [],
            "web_url": f"{project.web_url if project else ''}/-/merge_requests/{mr.iid}",
        }

    def _issue_json(self, issue: Issue) -> dict[str, Any]:
        project = self.org.projects.get(issue.project_id)
        return {
            "id": issue.id,
            "iid": issue.iid,
            "project_id": issue.project_id,
            "title": issue.title,
            "state": issue.state,
            "created_at": _iso_utc(issue.created_at),
            "updated_at": _iso_utc(issue.last_update),
            "closed_at": _iso_utc(issue.closed_at),
            "author": self._person(issue.author),
            "assignee": self._person(issue.assignee),
            "assignees": [self._person(issue.assignee)] if issue.assignee else [],
            "web_url": f"{project.web_url if project else ''}/-/issues/{issue.iid}",
        }

    def _group_json(self, g: Group) -> dict[str, Any]:
        return {
            "id": g.id,
            "name": g.name,
            "path": g.path,
            "full_name": g.name,
            "full_path": g.full_path,
            "parent_id": g.parent_id,
            "visibility": "internal",
            "web_url": f"https://{self.org.host}/groups/{g.full_path}",
        }

    # ------------------------------------------------------------------ handlers
    async def _version(self, request: web.Request, p: dict[str, str]) -> web.Response:
        return _json({"version": "17.5.0-ee", "revision": "simulated", "enterprise": True})

    async def _current_user(self, request: web.Request, p: dict[str, str]) -> web.Response:
        return _json(
            {
                "id": 1,
                "username": self.token_owner,
                "name": "Simulator Administrator" if self.admin else "Simulator User",
                "state": "active",
                "is_admin": self.admin,
            }
        )

    async def _users(self, request: web.Request, p: dict[str, str]) -> web.Response:
        username = request.query.get("username")
        if username is not None:
            user = self.org.user_by_username(username)
            # for a non-admin token blocked, banned and other inactive users are left out
            visible = user is not None and (self.admin or user.state == "active")
            found = [user] if user is not None and visible else []
            return self._list(request, found, self._user_basic)
        users = sorted(self.org.users.values(), key=lambda u: u.id, reverse=True)
        return self._list(request, users, self._user_basic, max_offset=50_000)

    async def _user(self, request: web.Request, p: dict[str, str]) -> web.Response:
        if not p["0"].isdigit():
            raise _not_found("User")
        user = self._find_user(p["0"])
        if self._hidden(user):
            return _json(self._user_basic(user))  # no profile fields
        return _json(self._user_full(user))

    async def _user_projects(self, request: web.Request, p: dict[str, str]) -> web.Response:
        user = self._find_user(p["0"])
        if self._hidden(user):
            return self._list(request, [], self._project_json)  # 200 and [], not an error
        ids = sorted(self.org.personal_project_ids(user.id), reverse=True)
        projects = [self.org.projects[i] for i in ids if i in self.org.projects]
        return self._list(request, projects, self._project_json, max_offset=50_000)

    async def _contributed(self, request: web.Request, p: dict[str, str]) -> web.Response:
        user = self._find_user(p["0"])
        if self._hidden(user):
            return self._list(request, [], self._project_json)
        ids = sorted(set(self.org.contributed.get(user.id, [])), reverse=True)
        projects = [self.org.projects[i] for i in ids if i in self.org.projects]
        return self._list(request, projects, self._project_json)

    async def _events(self, request: web.Request, p: dict[str, str]) -> web.Response:
        user = self._find_user(p["0"])
        action = request.query.get("action")
        target_type = request.query.get("target_type")
        after = _parse_date(request, "after")
        before = _parse_date(request, "before")
        events: Sequence[Event] = [] if self._hidden(user) else self.org.events.get(user.id, [])
        if action or target_type or after or before:
            # the named days end in the instance's time zone, not in UTC
            zone = ZoneInfo(self.org.time_zone)
            events = [
                e
                for e in events
                if (not action or e.action == action)
                and (after is None or e.created_at.astimezone(zone).date() > after)
                and (before is None or e.created_at.astimezone(zone).date() < before)
                and (not target_type or target_type.lower() in ("", "push"))
            ]
        if request.query.get("sort") == "asc":
            events = list(reversed(events))
        # GitLab counts events up to a cap: rel="next" stops at the page that holds it
        per_page = min(max(1, _int_param(request, "per_page", 20)), 100)
        events = events[: math.ceil(self.org.events_cap / per_page) * per_page]
        # pages are cut before visibility filtering: a short page may have a next page
        chunk, headers = self._page(request, events)
        return _json(
            [self._event_json(e) for e in chunk if not e.hidden and self._event_visible(e)],
            headers=headers,
        )

    async def _project(self, request: web.Request, p: dict[str, str]) -> web.Response:
        return _json(self._project_json(self._find_project(p["0"])))

    def _repository_refusal(self, project: Project) -> web.Response | None:
        """The repository's answer when its code cannot be read (a 500 to return; 403 and
        404 ``Repository`` raised), for every repository route."""
        if project.code_forbidden and not self.admin:
            raise _HTTPError(403, {"message": "403 Forbidden"})
        if project.no_repository:
            raise _not_found("Repository")
        if project.broken:
            return _html_error(500)
        return None

    async def _commits(self, request: web.Request, p: dict[str, str]) -> web.Response:
        project = self._find_project(p["0"])
        refused = self._repository_refusal(project)
        if refused is not None:
            return refused
        since = _parse_time(request, "since")
        until = _parse_time(request, "until")
        all_refs = _truthy(request, "all")
        ref = request.query.get("ref_name")
        if all_refs or not ref:
            # all=true is git log --all: GitLab's hidden refs included
            commits = self.org.commits_between(project.id, since, until, all_branches=all_refs)
        else:
            # git log REF: the branch's own commits and the history it started from
            tip = self.org.resolve(project.id, ref)
            if tip is None:
                raise _not_found("Revision")
            commits = [
                c
                for c in reversed(self.org.reachable(project.id, tip))
                if (since is None or c.committed_date >= since)
                and (until is None or c.committed_date <= until)
            ]
        author = request.query.get("author")
        if author:
            # like git log --author: a case-sensitive pattern over "Name <email>"
            try:
                pattern = re.compile(author)
            except re.error:
                raise _bad_param("author") from None
            commits = [c for c in commits if pattern.search(f"{c.author_name} <{c.author_email}>")]
        chunk, headers = self._page(request, commits, commits=True)
        if all_refs:
            chunk.reverse()  # with all=true each page is oldest-first
        parents = self.org.parents(project.id)
        return _json([self._commit_json(c, project, parents) for c in chunk], headers=headers)

    async def _branches(self, request: web.Request, p: dict[str, str]) -> web.Response:
        project = self._find_project(p["0"])
        refused = self._repository_refusal(project)
        if refused is not None:
            return refused
        heads = self.org.branches(project.id)
        search = request.query.get("search", "").casefold()
        rows = [(name, head) for name, head in heads.items() if search in name.casefold()]
        parents = self.org.parents(project.id)

        def render(row: tuple[str, Commit]) -> dict[str, Any]:
            name, head = row
            return {
                "name": name,
                "commit": self._commit_json(head, project, parents),
                "merged": False,
                "protected": name == project.default_branch,
                "developers_can_push": False,
                "developers_can_merge": False,
                "can_push": True,
                "default": name == project.default_branch,
                "web_url": f"{project.web_url}/-/tree/{name}",
            }

        return self._list(request, rows, render)

    async def _compare(self, request: web.Request, p: dict[str, str]) -> web.Response:
        """``from...to``: the commits ``to`` has that the merge base with ``from`` lacks."""
        project = self._find_project(p["0"])
        refused = self._repository_refusal(project)
        if refused is not None:
            return refused
        ends = []
        for name in ("from", "to"):
            raw = request.query.get(name)
            if not raw:
                raise _HTTPError(400, {"error": f"{name} is missing"})
            found = self.org.resolve(project.id, raw)
            if found is None:
                raise _not_found("Ref")
            ends.append(found)
        base, head = ends
        commits = self.org.compare(project.id, base, head)
        parents = self.org.parents(project.id)
        return _json(
            {
                "commit": self._commit_json(commits[-1], project, parents) if commits else None,
                "commits": [self._commit_json(c, project, parents) for c in commits],
                "diffs": [],
                "compare_timeout": False,
                "compare_same_ref": base.sha == head.sha,
                "web_url": f"{project.web_url}/-/compare/{base.short_id}...{head.short_id}",
            }
        )

    async def _group(self, request: web.Request, p: dict[str, str]) -> web.Response:
        return _json(self._group_json(self._find_group(p["0"])))

    def _member_list(self, request: web.Request, members: dict[int, int]) -> web.Response:
        rows = [(self.org.users[uid], level) for uid, level in sorted(members.items())]

        def render(row: tuple[User, int]) -> dict[str, Any]:
            data = self._user_basic(row[0])
            data["access_level"] = row[1]
            data["expires_at"] = None
            return data

        return self._list(request, rows, render)

    async def _members_all(self, request: web.Request, p: dict[str, str]) -> web.Response:
        group = self._find_group(p["0"])
        return self._member_list(request, self.org.group_members_all(group.id))

    async def _members(self, request: web.Request, p: dict[str, str]) -> web.Response:
        group = self._find_group(p["0"])
        direct = {uid: lvl for uid, lvl in group.members.items() if uid in self.org.users}
        return self._member_list(request, direct)

    async def _group_projects(self, request: web.Request, p: dict[str, str]) -> web.Response:
        group = self._find_group(p["0"])
        group_ids = {group.id}
        if _truthy(request, "include_subgroups"):
            for g in self.org.groups.values():
                if any(a.id == group.id for a in self.org.group_ancestry(g.id)):
                    group_ids.add(g.id)
        ids = sorted(
            (pid for gid in group_ids for pid in self.org.group_project_ids(gid)), reverse=True
        )
        projects = [self.org.projects[i] for i in ids if i in self.org.projects]
        return self._list(request, projects, self._project_json, max_offset=50_000)

    def _filter_items(
        self,
        request: web.Request,
        by_author: Callable[[str], Sequence[T]],
        everything: Sequence[T],
        allowed_states: tuple[str, ...],
    ) -> list[T]:
        scope = request.query.get("scope", "created_by_me")
        if scope not in ("all", "created_by_me", "assigned_to_me"):
            raise _bad_param("scope")
        state = request.query.get("state", "all")
        if state not in (*allowed_states, "all"):
            raise _bad_param("state")
        author = request.query.get("author_username")
        assignee = request.query.get("assignee_username")
        created_after = _parse_time(request, "created_after")
        created_before = _parse_time(request, "created_before")
        updated_after = _parse_time(request, "updated_after")
        items: Sequence[T] = by_author(author) if author else everything
        out: list[T] = []
        owner = self.token_owner.casefold()
        for item in items:
            item_author: str = getattr(item, "author")  # noqa: B009
            item_assignee: str | None = getattr(item, "assignee")  # noqa: B009
            if scope == "created_by_me" and item_author.casefold() != owner:
                continue
            if scope == "assigned_to_me" and (item_assignee or "").casefold() != owner:
                continue
            if assignee and (item_assignee or "").casefold() != assignee.casefold():
                continue
            created: datetime = getattr(item, "created_at")  # noqa: B009
            if created_after is not None and created < created_after:
                continue
            if created_before is not None and created > created_before:
                continue
            updated: datetime = getattr(item, "last_update")  # noqa: B009
            if updated_after is not None and updated < updated_after:
                continue
            if state != "all" and getattr(item, "state") != state:  # noqa: B009
                continue
            out.append(item)
        out.sort(key=lambda i: (getattr(i, "created_at"), getattr(i, "id")), reverse=True)  # noqa: B009
        return out

    async def _merge_requests(self, request: web.Request, p: dict[str, str]) -> web.Response:
        items = self._filter_items(
            request,
            self.org.merge_requests_by,
            self.org.merge_requests,
            ("opened", "closed", "locked", "merged"),
        )
        return self._list(request, items, self._mr_json)

    async def _issues(self, request: web.Request, p: dict[str, str]) -> web.Response:
        items = self._filter_items(
            request, self.org.issues_by, self.org.issues, ("opened", "closed")
        )
        return self._list(request, items, self._issue_json)


def create_app(
    org: Org,
    *,
    token: str = "sim-token",
    limits: RateLimits | RateLimiter | None = None,
    faults: Faults | None = None,
    clock: Clock | None = None,
    admin: bool = True,
) -> web.Application:
    """The aiohttp application (for ``aiohttp_client``); its state is ``app[SIMULATOR_KEY]``."""
    return GitLabSimulator(
        org, token=token, limits=limits, faults=faults, clock=clock, admin=admin
    ).app


# --------------------------------------------------------------------------- runner
class SimulatorServer:
    """Runs a :class:`GitLabSimulator` on a TCP port (``port=0``: a free one)."""

    def __init__(
        self,
        org: Org,
        *,
        token: str = "sim-token",
        limits: RateLimits | RateLimiter | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        clock: Clock | None = None,
        admin: bool = True,
    ) -> None:
        self.simulator = GitLabSimulator(
            org, token=token, limits=limits, faults=faults, clock=clock, admin=admin
        )
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def org(self) -> Org:
        return self.simulator.org

    @property
    def token(self) -> str:
        return self.simulator.token

    @property
    def log(self) -> RequestLog:
        return self.simulator.log

    @property
    def faults(self) -> Faults:
        return self.simulator.faults

    @property
    def limits(self) -> RateLimiter:
        return self.simulator.limits

    @property
    def credentials(self) -> list[str]:
        return self.simulator.credentials

    @property
    def url(self) -> str:
        """Base URL without ``/api/v4``, e.g. ``http://127.0.0.1:40123``."""
        if self._runner is None:
            raise RuntimeError("simulator not started")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self.simulator.app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_simulator(
    host: str,
    port: int,
    *,
    seed: int,
    users: int,
    projects: int,
    latency_ms: float,
    fault_rate: float,
    token: str,
    on_started: Callable[[Org, str], None] | None = None,
) -> None:
    """Generate an organisation and serve it until cancelled (the ``simulate`` command).
    ``on_started`` gets the organisation and the simulator's URL once it listens."""
    from exporter.simulator.generate import generate_org

    org = generate_org(seed, users=users, projects=projects)
    faults = Faults(latency_ms=latency_ms, fault_rate=fault_rate, seed=seed)
    async with SimulatorServer(org, token=token, host=host, port=port, faults=faults) as sim:
        if on_started is not None:
            on_started(org, sim.url)
        sample = ", ".join(sorted(u.username for u in org.users.values())[:5])
        print(
            f"GitLab simulator listening on {sim.url} (API at {sim.url}{API})\n"
            f"  token: {token}\n"
            f"  organisation: seed {seed}, {len(org.users)} users, {len(org.projects)} projects, "
            f"{len(org.groups)} groups; e.g. {sample}",
            flush=True,
        )
        await asyncio.Event().wait()

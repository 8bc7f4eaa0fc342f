"""GitLabClient against real HTTP servers with small purpose-built handlers."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from prometheus_client import CollectorRegistry
from structlog.testing import LogCapture

from exporter.gitlab.client import (
    FAILURE_REASONS,
    MAX_HEADER_WAIT,
    ApiError,
    ClientMetrics,
    GitLabClient,
    GitLabError,
    NotFoundError,
    RateLimitedError,
    RequestTimeoutError,
    UnauthorizedError,
    retry_delay,
)

TOKEN = "glpat-SECRET-token-123"
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ServerFactory = Callable[..., Awaitable[RawTestServer]]


@dataclass
class Seen:
    path_qs: str
    raw_path: str
    token: str | None
    started: float


@dataclass
class FakeGitLab:
    """A raw HTTP server that records every request and delegates to ``handler``."""

    server: RawTestServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def url(self, path_qs: str) -> str:
        return self.base + path_qs


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def gitlab(aiohttp_raw_server: ServerFactory) -> Callable[[Handler], Awaitable[FakeGitLab]]:
    async def start(handler: Handler) -> FakeGitLab:
        fake: FakeGitLab

        async def recording(request: web.BaseRequest) -> web.StreamResponse:
            fake.seen.append(
                Seen(
                    path_qs=request.path_qs,
                    raw_path=request.raw_path,
                    token=request.headers.get("PRIVATE-TOKEN"),
                    started=time.monotonic(),
                )
            )
            return await handler(request)

        server = await aiohttp_raw_server(recording)
        fake = FakeGitLab(server)
        return fake

    return start


def make_client(
    session: aiohttp.ClientSession, fake: FakeGitLab, **kwargs: Any
) -> GitLabClient:
    options: dict[str, Any] = {
        "base_url": fake.base,
        "token": TOKEN,
        "requests_per_second": 1000.0,
        "max_concurrency": 8,
        "timeout_seconds": 5.0,
        "max_retries": 3,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return GitLabClient(session, **options)


def json_response(data: Any, status: int = 200, /, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


def html_502() -> web.Response:
    page = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 2000 + "</body>"
    return web.Response(status=502, text=page, content_type="text/html")


async def reset_midway(request: web.BaseRequest) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b'[{"id": 1}, ')
    assert request.transport is not None
    request.transport.close()
    return response


class Sequence:
    """A handler answering with each of ``responses`` in turn, then the last one forever."""

    def __init__(self, *responses: Handler | Callable[[], web.StreamResponse]) -> None:
        self.responses = list(responses)
        self.calls = 0

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        step = self.responses[min(self.calls, len(self.responses) - 1)]
        self.calls += 1
        result = step(request) if _takes_request(step) else step()  # type: ignore[call-arg]
        if asyncio.iscoroutine(result):
            return await result  # type: ignore[no-any-return]
        return result  # type: ignore[return-value]


def _takes_request(step: Any) -> bool:
    return bool(getattr(step, "__code__", None) and step.__code__.co_argcount == 1)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --------------------------------------------------------------------------- pagination


async def test_pagination_follows_link_without_totals_to_empty_last_page(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    per_page_seen: list[str | None] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        per_page_seen.append(request.query.get("per_page"))
        page = int(request.query.get("page", "1"))
        if page == 3:  # a full page advertised a next page that turns out empty
            return json_response([])
        nxt = request.url.update_query(page=str(page + 1))
        items = [{"n": (page - 1) * 100 + i} for i in range(100)]
        return json_response(items, Link=f'<{nxt}>; rel="next"')

    fake = await gitlab(handler)
    client = make_client(session, fake)
    items = [
        item
        async for item in client.paginate(
            "/projects/7/repository/commits", {"all": "true", "per_page": "20"},
            endpoint="/projects/:id/repository/commits",
        )
    ]
    assert [i["n"] for i in items] == list(range(200))
    assert per_page_seen == ["100", "100", "100"]
    assert all("all=true" in s.path_qs for s in fake.seen)
    assert client.request_count == 3


async def test_link_header_with_several_relations_is_parsed(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.query.get("page") == "2":
            first = request.url.update_query(page="1")
            return json_response(["b"], Link=f'<{first}>; rel="first", <{first}>; rel="prev"')
        nxt = request.url.update_query(page="2")
        link = (
            f'<{request.url}>; rel="first", <{nxt}>; rel="next", '
            f'<{nxt}>; rel="last"'
        )
        return json_response(["a"], Link=link)

    fake = await gitlab(handler)
    client = make_client(session, fake)
    assert [i async for i in client.paginate("/users", endpoint="/users")] == ["a", "b"]


async def test_pagination_loop_is_an_api_error(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        page = request.query.get("page", "1")
        target = "2" if page == "1" else "1"
        nxt = request.url.update_query(page=target)
        return json_response([page], Link=f'<{nxt}>; rel="next"')

    fake = await gitlab(handler)
    client = make_client(session, fake)
    with pytest.raises(ApiError, match="pagination loop") as info:
        _ = [i async for i in client.paginate("/users/1/events", endpoint="/users/:id/events")]
    assert info.value.reason == "api_error"
    assert len(fake.seen) == 3  # page 1, page 2, page 1 again is the loop


async def test_next_link_on_another_origin_is_followed_on_the_configured_one(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    # GitLab writes links on its external URL: their path and query go to our origin
    async def other_handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response(["stolen"])

    other = await gitlab(other_handler)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if "page=2" in request.path_qs:
            return json_response(["b"])
        return json_response(["a"], Link=f'<{other.url("/api/v4/users?page=2")}>; rel="next"')

    fake = await gitlab(handler)
    client = make_client(session, fake)
    assert [i async for i in client.paginate("/users", endpoint="/users")] == ["a", "b"]
    assert other.seen == []
    assert fake.seen[1].path_qs == "/api/v4/users?page=2"
    assert fake.seen[1].token == TOKEN


async def test_next_link_outside_the_api_is_refused(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response(["a"], Link='<https://elsewhere.example/login?page=2>; rel="next"')

    fake = await gitlab(handler)
    client = make_client(session, fake)
    with pytest.raises(ApiError, match="not a GitLab API URL"):
        _ = [i async for i in client.paginate("/users", endpoint="/users")]
    assert len(fake.seen) == 1


async def test_page_that_is_not_a_list_is_an_api_error(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response({"message": "surprise"})

    fake = await gitlab(handler)
    client = make_client(session, fake)
    with pytest.raises(ApiError, match="expected a JSON list"):
        _ = [i async for i in client.paginate("/users", endpoint="/users")]


# --------------------------------------------------------------------------- retries


async def test_429_retry_after_is_honoured(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    handler = Sequence(
        lambda: web.Response(status=429, text="Retry later\n", headers={"Retry-After": "1"}),
        lambda: json_response({"ok": True}),
    )
    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, metrics=ClientMetrics(registry))
    assert await client.get_json("/users/1", endpoint="/users/:id") == {"ok": True}
    assert len(fake.seen) == 2
    assert fake.seen[1].started - fake.seen[0].started >= 0.95  # backoff alone is ~1 ms
    assert sample(registry, "gitlab_activity_api_retries_total",
                  endpoint="/users/:id", reason="rate_limited") == 1.0


async def test_429_without_retry_after_waits_for_ratelimit_reset(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    def limited() -> web.Response:
        return json_response(
            {"message": {"error": "This endpoint has been requested too many times."}},
            429,
            **{
                "RateLimit-Limit": "300",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": f"{time.time() + 0.3:.3f}",
            },
        )

    handler = Sequence(
        limited,
        lambda: json_response([], **{"RateLimit-Limit": "300", "RateLimit-Remaining": "299"}),
    )
    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, metrics=ClientMetrics(registry))
    assert sample(registry, "gitlab_activity_api_ratelimit_remaining") is None
    assert await client.get_json("/users/1/projects", endpoint="/users/:id/projects") == []
    assert fake.seen[1].started - fake.seen[0].started >= 0.25
    assert sample(registry, "gitlab_activity_api_ratelimit_remaining") == 299.0
    assert sample(registry, "gitlab_activity_api_ratelimit_limit") == 300.0


async def test_html_5xx_then_success(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    handler = Sequence(html_502, html_502, lambda: json_response([1]))
    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, metrics=ClientMetrics(registry))
    assert await client.get_json("/issues", endpoint="/issues") == [1]
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/issues", code="502") == 2.0
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/issues", code="200") == 1.0
    assert sample(registry, "gitlab_activity_api_retries_total",
                  endpoint="/issues", reason="server_error") == 2.0
    assert sample(registry, "gitlab_activity_api_request_duration_seconds_count",
                  endpoint="/issues") == 3.0


async def _close_without_answer(request: web.BaseRequest) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@pytest.mark.parametrize("failure", [reset_midway, _close_without_answer])
async def test_connection_reset_then_success(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]],
    session: aiohttp.ClientSession,
    failure: Handler,
) -> None:
    # aiohttp may itself resend an idempotent request once when the server hangs up
    # before answering, so fail often enough that the client's own retry is needed
    handler = Sequence(failure, failure, failure, lambda: json_response([{"id": 1}]))
    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, metrics=ClientMetrics(registry))
    assert await client.get_json("/users", endpoint="/users") == [{"id": 1}]
    retries = sample(registry, "gitlab_activity_api_retries_total",
                     endpoint="/users", reason="connection")
    assert retries is not None and retries >= 1.0
    assert len(fake.seen) == 4
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/users", code="200") == 1.0


async def test_malformed_json_is_retried(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    handler = Sequence(
        lambda: web.Response(text='[{"id": 1', content_type="application/json"),
        lambda: json_response([{"id": 1}]),
    )
    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, metrics=ClientMetrics(registry))
    assert await client.get_json("/users", endpoint="/users") == [{"id": 1}]
    assert sample(registry, "gitlab_activity_api_retries_total",
                  endpoint="/users", reason="invalid_body") == 1.0


def _always_429() -> web.Response:
    return web.Response(status=429, text="Retry later\n", headers={"Retry-After": "0"})


def _always_503() -> web.Response:
    return web.Response(status=503, text="<html>down</html>", content_type="text/html")


def _always_bad_json() -> web.Response:
    return web.Response(text="{not json", content_type="application/json")


@pytest.mark.parametrize(
    ("respond", "error", "reason", "status", "text"),
    [
        (_always_429, RateLimitedError, "rate_limited", 429, "HTTP 429 (Retry later)"),
        (_always_503, ApiError, "api_error", 503, "HTTP 503 (HTML body)"),
        (html_502, ApiError, "api_error", 502, "HTTP 502 (HTML body)"),
        (_always_bad_json, ApiError, "api_error", 200, "not valid JSON"),
        (reset_midway, RequestTimeoutError, "timeout", None, "connection failed"),
    ],
)
async def test_retries_run_out_into_typed_error(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]],
    session: aiohttp.ClientSession,
    respond: Any,
    error: type[GitLabError],
    reason: str,
    status: int | None,
    text: str,
) -> None:
    fake = await gitlab(Sequence(respond))
    client = make_client(session, fake, max_retries=2)
    with pytest.raises(error) as info:
        await client.get_json("/users/5/projects", endpoint="/users/:id/projects")
    exc = info.value
    assert exc.reason == reason and reason in FAILURE_REASONS
    assert exc.status == status
    assert exc.endpoint == "/users/:id/projects"
    assert text in str(exc)
    assert "\n" not in str(exc) and "<html" not in str(exc)
    assert client.request_count == 3
    assert len(fake.seen) == 3


def slow_handler(release: asyncio.Event) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """A handler that answers only once ``release`` is set (or after 2 s)."""

    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 2.0)
        return json_response([])

    return slow


async def test_timeouts_retried_then_typed_error(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    fake = await gitlab(slow_handler(release))
    registry = CollectorRegistry()
    client = make_client(
        session, fake, timeout_seconds=0.05, max_retries=1, metrics=ClientMetrics(registry)
    )
    try:
        with pytest.raises(RequestTimeoutError) as info:
            await client.get_json("/users/1", endpoint="/users/:id")
    finally:
        release.set()
    assert info.value.reason == "timeout"
    assert info.value.status is None
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/users/:id", code="timeout") == 2.0
    assert sample(registry, "gitlab_activity_api_retries_total",
                  endpoint="/users/:id", reason="timeout") == 1.0


async def test_timeout_then_success(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    fake = await gitlab(Sequence(slow_handler(release), lambda: json_response(["ok"])))
    client = make_client(session, fake, timeout_seconds=0.1)
    try:
        assert await client.get_json("/users", endpoint="/users") == ["ok"]
    finally:
        release.set()
    assert client.request_count == 2


@pytest.mark.parametrize(
    ("status", "body", "error", "reason", "text"),
    [
        (404, {"message": "404 Project Not Found"}, NotFoundError, "not_found",
         "HTTP 404 (404 Project Not Found)"),
        (404, {"error": "404 Not Found"}, NotFoundError, "not_found", "HTTP 404 (404 Not Found)"),
        (401, {"message": "401 Unauthorized"}, UnauthorizedError, "unauthorized",
         "HTTP 401 (401 Unauthorized)"),
        (403, {"message": "403 Forbidden"}, UnauthorizedError, "unauthorized",
         "HTTP 403 (403 Forbidden)"),
        (400, {"message": {"since": ["is invalid"]}}, ApiError, "api_error",
         "since: is invalid"),
        (405, {"message": "405 Method Not Allowed"}, ApiError, "api_error", "HTTP 405"),
    ],
)
async def test_client_errors_are_not_retried(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]],
    session: aiohttp.ClientSession,
    status: int,
    body: Any,
    error: type[GitLabError],
    reason: str,
    text: str,
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response(body, status)

    fake = await gitlab(handler)
    client = make_client(session, fake)
    with pytest.raises(error) as info:
        await client.get_json("/projects/9", endpoint="/projects/:id")
    assert info.value.reason == reason
    assert info.value.status == status
    assert text in str(info.value)
    assert client.request_count == 1


# --------------------------------------------------------------------------- body size


async def test_body_over_cap_by_content_length(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response(["x" * 1000])

    fake = await gitlab(handler)
    client = make_client(session, fake, max_body_bytes=100)
    with pytest.raises(ApiError, match="larger than 100 bytes"):
        await client.get_json("/users", endpoint="/users")
    assert client.request_count == 1


async def test_body_over_cap_when_chunked(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"[")
        for _ in range(20):
            await response.write(b'"' + b"x" * 100 + b'",')
        await response.write(b"1]")
        await response.write_eof()
        return response

    fake = await gitlab(handler)
    client = make_client(session, fake, max_body_bytes=500)
    with pytest.raises(ApiError, match="larger than 500 bytes"):
        await client.get_json("/users", endpoint="/users")
    assert client.request_count == 1
    # the same body under a larger cap is fine
    roomy = make_client(session, fake, max_body_bytes=10_000)
    assert len(await roomy.get_json("/users", endpoint="/users")) == 21


# --------------------------------------------------------------------------- redirects


async def test_same_origin_redirect_is_followed_with_token(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.raw_path == "/api/v4/projects/old%2Fname":
            return web.Response(status=301, headers={"Location": "/api/v4/projects/42"})
        if request.path == "/api/v4/projects/42":
            return json_response({"id": 42})
        return json_response({"message": "404 Not Found"}, 404)

    fake = await gitlab(handler)
    client = make_client(session, fake)
    assert await client.get_json("/projects/old%2Fname", endpoint="/projects/:id") == {"id": 42}
    assert [s.token for s in fake.seen] == [TOKEN, TOKEN]
    assert client.request_count == 2


async def test_cross_host_redirect_is_refused_and_sends_nothing_there(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def thief(request: web.BaseRequest) -> web.StreamResponse:
        return json_response({"stolen": True})

    other = await gitlab(thief)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": other.url("/api/v4/users/1")})

    fake = await gitlab(handler)
    client = make_client(session, fake)
    with pytest.raises(ApiError, match="another origin") as info:
        await client.get_json("/users/1", endpoint="/users/:id")
    assert info.value.status == 302
    assert other.seen == []
    assert client.request_count == 1


async def test_redirect_chain_is_bounded(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        n = int(request.query.get("n", "0"))
        return web.Response(status=307, headers={"Location": f"/api/v4/x?n={n + 1}"})

    fake = await gitlab(handler)
    client = make_client(session, fake)
    with pytest.raises(ApiError, match="redirects"):
        await client.get_json("/x", endpoint="/x")
    assert client.request_count == 6


# --------------------------------------------------------------------------- secrecy


async def test_token_never_in_errors_or_logs(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]],
    session: aiohttp.ClientSession,
    captured_logs: LogCapture,
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        token = request.headers.get("PRIVATE-TOKEN", "")
        return json_response({"message": f"token {token} is not allowed here"}, 503)

    fake = await gitlab(handler)
    client = make_client(session, fake, max_retries=2)
    with pytest.raises(ApiError) as info:
        await client.get_json("/users/1", endpoint="/users/:id")
    assert fake.seen[0].token == TOKEN  # the token was sent, as a header
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)
    retries = [e for e in captured_logs.entries if e["event"] == "gitlab_retry"]
    assert len(retries) == 2
    assert retries[0]["endpoint"] == "/users/:id"
    assert retries[0]["status"] == 503
    assert "wait" in retries[0]
    assert TOKEN not in repr(captured_logs.entries)


def test_token_is_not_a_session_default() -> None:
    # the client never mutates the shared session; the header goes on each request
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            GitLabClient(s, base_url="https://gitlab.example.com", token=TOKEN)
            assert "PRIVATE-TOKEN" not in s.headers

    asyncio.run(run())


# --------------------------------------------------------------------------- pacing, concurrency


async def test_request_starts_are_paced_across_coroutines(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response([])

    fake = await gitlab(handler)
    client = make_client(session, fake, requests_per_second=20.0)
    began = time.monotonic()
    await asyncio.gather(
        *(client.get_json(f"/users/{i}", endpoint="/users/:id") for i in range(5))
    )
    starts = sorted(s.started for s in fake.seen)
    assert len(starts) == 5
    # The fifth request may not start before four intervals (4 x 50 ms) have passed.
    # A lower bound from before the first send: a loaded machine only delays arrivals,
    # so this cannot flake, while an unpaced client answers all five within a few ms.
    assert starts[-1] - began >= 0.195


async def test_concurrency_cap_is_never_exceeded(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    in_flight = 0
    peak = 0

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.03)
            return json_response([])
        finally:
            in_flight -= 1

    fake = await gitlab(handler)
    client = make_client(session, fake, max_concurrency=3)
    await asyncio.gather(*(client.get_json(f"/p/{i}", endpoint="/p") for i in range(12)))
    assert peak == 3
    assert len(fake.seen) == 12


class _Ceiling(random.Random):
    """Always the top of the jitter range, so backoff waits are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_retry_wait_does_not_hold_a_concurrency_slot(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    failed_once = False

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal failed_once
        if request.path.endswith("/a") and not failed_once:
            failed_once = True
            return web.Response(status=503, text="busy")
        return json_response([request.path])

    fake = await gitlab(handler)
    client = make_client(
        session, fake, max_concurrency=1, backoff_base=0.3, backoff_cap=1.0, rng=_Ceiling()
    )

    async def later_b() -> Any:
        await asyncio.sleep(0.05)  # a's first attempt has finished; a is backing off
        return await client.get_json("/b", endpoint="/b")

    await asyncio.gather(client.get_json("/a", endpoint="/a"), later_b())
    assert [s.path_qs for s in fake.seen] == ["/api/v4/a", "/api/v4/b", "/api/v4/a"]


# --------------------------------------------------------------------------- metrics


async def test_metrics_on_private_registry_by_endpoint_and_code(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/api/v4/users/404"):
            return json_response({"message": "404 User Not Found"}, 404)
        return json_response({"id": 1})

    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, metrics=ClientMetrics(registry))
    await client.get_json("/users/1", endpoint="/users/:id")
    await client.get_json("/users/2", endpoint="/users/:id")
    with pytest.raises(NotFoundError):
        await client.get_json("/users/404", endpoint="/users/:id")
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/users/:id", code="200") == 2.0
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/users/:id", code="404") == 1.0
    # absent until GitLab sends RateLimit headers
    assert sample(registry, "gitlab_activity_api_ratelimit_remaining") is None
    # a second registry gets its own metrics: nothing lands on the global one
    ClientMetrics(CollectorRegistry())


# --------------------------------------------------------------------------- delays


def test_retry_delay_honours_retry_after_seconds_with_small_jitter_and_cap() -> None:
    rng = random.Random(7)
    for _ in range(50):
        wait = retry_delay(0, status=429, headers={"Retry-After": "120"},
                           base=0.5, cap=60.0, rng=rng, now=1000.0)
        assert 120.0 <= wait <= 125.0
    huge = retry_delay(0, status=429, headers={"Retry-After": "86400"},
                       base=0.5, cap=60.0, rng=rng, now=1000.0)
    assert huge == MAX_HEADER_WAIT == 900.0


def test_retry_delay_honours_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    wait = retry_delay(0, status=503, headers={"Retry-After": header},
                       base=0.5, cap=60.0, rng=random.Random(1), now=now)
    assert 30.0 <= wait <= 35.0


def test_retry_delay_uses_ratelimit_reset_only_on_429() -> None:
    now = 1_700_000_000.0
    headers = {"RateLimit-Reset": str(int(now) + 240)}
    wait = retry_delay(0, status=429, headers=headers, base=0.5, cap=60.0,
                       rng=random.Random(1), now=now)
    assert 240.0 <= wait <= 245.0
    backoff = retry_delay(0, status=503, headers=headers, base=0.5, cap=60.0,
                          rng=random.Random(1), now=now)
    assert 0.0 <= backoff <= 0.5
    past = retry_delay(0, status=429, headers={"RateLimit-Reset": str(int(now) - 5)},
                       base=0.5, cap=60.0, rng=random.Random(1), now=now)
    assert 0.0 <= past <= 0.05


def test_retry_delay_exponential_full_jitter_capped() -> None:
    rng = random.Random(3)
    for attempt in range(8):
        values = [retry_delay(attempt, status=None, headers=None, base=0.5, cap=60.0, rng=rng)
                  for _ in range(200)]
        ceiling = min(60.0, 0.5 * 2**attempt)
        assert all(0.0 <= v <= ceiling for v in values)
        assert max(values) > ceiling * 0.8  # full jitter spans the range
        assert min(values) < ceiling * 0.2
    assert retry_delay(500, status=None, headers=None, base=0.5, cap=60.0,
                       rng=_Ceiling()) == 60.0
    unparseable = retry_delay(2, status=429, headers={"Retry-After": "soon"}, base=0.5,
                              cap=60.0, rng=_Ceiling())
    assert unparseable == 2.0


def test_errors_are_one_line_and_picklable() -> None:
    import pickle

    err = ApiError("bad\nthing", endpoint="/users", status=500)
    assert str(err) == "GitLab /users: HTTP 500 (bad thing)"
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, ApiError) and str(copy) == str(err) and copy.reason == "api_error"
    assert str(RequestTimeoutError("slow", endpoint="/x")) == "GitLab /x: slow"


def test_invalid_settings_are_refused() -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(ValueError):
                GitLabClient(s, base_url="https://g.example", token=TOKEN, requests_per_second=0)
            with pytest.raises(ValueError):
                GitLabClient(s, base_url="https://g.example", token=TOKEN, max_concurrency=0)
            with pytest.raises(ValueError):
                GitLabClient(s, base_url="gitlab.example", token=TOKEN)
            fractional = GitLabClient(s, base_url="https://g.example", token=TOKEN,
                                      requests_per_second=0.5)
            assert fractional.request_count == 0

    asyncio.run(run())


async def test_cancelled_request_frees_its_slot_and_is_not_counted(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]], session: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.endswith("/slow"):
            arrived.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 2.0)
        return json_response([])

    fake = await gitlab(handler)
    registry = CollectorRegistry()
    client = make_client(session, fake, max_concurrency=1, metrics=ClientMetrics(registry))
    task = asyncio.create_task(client.get_json("/slow", endpoint="/slow"))
    await asyncio.wait_for(arrived.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        assert await asyncio.wait_for(client.get_json("/fast", endpoint="/fast"), 1.0) == []
    finally:
        release.set()
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/slow", code="error") is None
    assert sample(registry, "gitlab_activity_api_requests_total",
                  endpoint="/fast", code="200") == 1.0


@pytest.mark.parametrize("suffix", ["", "/", "/api/v4", "/api/v4/"])
async def test_base_url_forms(
    gitlab: Callable[[Handler], Awaitable[FakeGitLab]],
    session: aiohttp.ClientSession,
    suffix: str,
) -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return json_response([request.path])

    fake = await gitlab(handler)
    client = make_client(session, fake, base_url=fake.base + suffix)
    assert await client.get_json("/users/1", endpoint="/users/:id") == ["/api/v4/users/1"]

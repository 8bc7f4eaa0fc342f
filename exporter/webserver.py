"""The listening side of ``serve``: what one client can hold is bounded.

- **Header read timeout.** A connection must deliver a complete request within
  :data:`HEADER_TIMEOUT_SECONDS` of connecting, or of its previous response; otherwise it
  is closed (aiohttp's keep-alive timer does exactly this: it fires while the handler is
  still waiting for a request, partial headers included). Go's servers use the same
  value for idle keep-alive connections when no other is set.
- **Connection limit.** At most ``max_connections`` connections (default: from the
  process's file-descriptor limit, leaving room for GitLab connections, the state file
  and logs). A new connection beyond it makes room by closing the oldest connection that
  has no request in progress (an idle or half-open one); when every one is busy, the new
  one is closed at once. So a client holding many half-open connections cannot lock the
  scraper out: its oldest ones go first.
- **Out of descriptors anyway** (something else took them): asyncio reports each failed
  ``accept()`` with a traceback, thousands a second; :func:`quiet_accept_errors` turns
  them into one error line a minute that says how many were left out. (asyncio also
  schedules a retry per failed attempt; those that come due after the listener closed at
  shutdown fail on its closed socket and are dropped, not reported.)
"""

from __future__ import annotations

import asyncio
import errno
import resource
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "HEADER_TIMEOUT_SECONDS",
    "ConnectionGuard",
    "GuardedSite",
    "default_max_connections",
    "quiet_accept_errors",
]

log = structlog.get_logger("exporter.webserver")

HEADER_TIMEOUT_SECONDS = 10.0
MIN_CONNECTIONS = 16
MAX_DEFAULT_CONNECTIONS = 10_000
RESERVED_DESCRIPTORS = 64
"""At least this many descriptors (and a quarter of the limit) stay for everything but
incoming connections: GitLab connections, the state file, logs, the event loop."""
ACCEPT_ERROR_LOG_INTERVAL = 60.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def default_max_connections(descriptor_limit: int | None = None) -> int:
    """Incoming connections allowed with ``descriptor_limit`` open files (default: this
    process's soft ``RLIMIT_NOFILE``)."""
    if descriptor_limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        descriptor_limit = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    spare = descriptor_limit - max(RESERVED_DESCRIPTORS, descriptor_limit // 4)
    return max(MIN_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, spare))


class _Refused(asyncio.Protocol):
    """A connection over the limit with nothing to evict: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _busy(handler: RequestHandler) -> bool:
    # aiohttp sets this while a request is being handled (web_protocol._handle_request)
    return bool(getattr(handler, "_request_in_progress", False))


class ConnectionGuard:
    """A protocol factory in front of aiohttp's ``web.Server`` enforcing the limit."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self._server = server
        self.max_connections = max_connections
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        open_now = list(self._server.connections)  # oldest first
        closing = [h for h in open_now if getattr(h, "_force_close", False)]
        if len(open_now) - len(closing) >= self.max_connections:
            idle = next((h for h in open_now if h not in closing and not _busy(h)), None)
            if idle is None:
                self.refused += 1
                return _Refused()
            self.evicted += 1
            idle.force_close()
        return self._server()


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through a :class:`ConnectionGuard`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.max_connections = max_connections
        self.guard: ConnectionGuard | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self.guard = ConnectionGuard(server, self.max_connections)
        self._server = await asyncio.get_running_loop().create_server(
            self.guard,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def quiet_accept_errors(
    loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.monotonic
) -> None:
    """Report ``accept()`` failing for lack of descriptors as one error line a minute
    (with how many were left out) instead of a traceback per attempt."""
    previous = loop.get_exception_handler()
    last_logged = -ACCEPT_ERROR_LOG_INTERVAL
    left_out = 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last_logged, left_out
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
            now = clock()
            if now - last_logged < ACCEPT_ERROR_LOG_INTERVAL:
                left_out += 1
                return
            log.error(
                "cannot accept connections: out of file descriptors; retrying",
                error=exc.strerror or str(exc),
                repeats_not_logged=left_out,
            )
            last_logged, left_out = now, 0
            return
        callback = getattr(context.get("handle"), "_callback", None)
        if getattr(callback, "__name__", "") == "_start_serving" and isinstance(
            exc, ValueError | OSError
        ):
            return  # a retry of accept() due after the listener closed
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

"""Helpers for tests that run real programs: promtool, prometheus, the exporter."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Any

import pytest

from exporter.simulator.model import Org
from exporter.simulator.server import RateLimits, SimulatorServer


def require_program(name: str) -> str:
    """The path of ``name``; skip when it is missing, but fail when ``CI`` is set."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package 'prometheus')"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run this test")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def wait_http(url: str, *, status: int = 200, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, body = http_get(url)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout} s (last {code})")
        time.sleep(0.1)


class SimulatorThread:
    """The GitLab simulator on its own event loop in a background thread, for tests
    whose own code is synchronous (driving subprocesses). ``call`` runs a function on
    the simulator's loop, e.g. ``sim.call(sim.server.faults.add, FaultRule(...))``."""

    def __init__(self, org: Org, *, token: str, limits: RateLimits | None = None) -> None:
        self._org = org
        self._token = token
        self._limits = limits
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._error: BaseException | None = None
        self.server: SimulatorServer | None = None

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with SimulatorServer(
            self._org, token=self._token, limits=self._limits, host="127.0.0.1", port=0
        ) as server:
            self.server = server
            self._ready.set()
            await self._stop.wait()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def call(self, function: Any, *args: Any) -> None:
        self._loop.call_soon_threadsafe(function, *args)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or self.server is None:
            raise RuntimeError(f"simulator did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

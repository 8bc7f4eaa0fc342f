"""The one place that owns every resource's life: HTTP session, scan loop, current snapshot.

``ExporterService`` opens the process's single ``aiohttp.ClientSession`` when it starts
and closes it when it stops. The scan loop runs in the background on its own schedule,
never overlaps itself, and swaps the snapshot atomically; scrapes only read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from types import TracebackType

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.config import Config, reloaded
from exporter.exposition import SnapshotRegistry
from exporter.gitlab.api import GitLabApi
from exporter.gitlab.client import ClientMetrics, GitLabClient
from exporter.gitlab.door import ConnectionProblem, ServerInfo, client_ssl, probe
from exporter.gitlab.pacing import RateGate
from exporter.scanner import ProgressCallback, Scanner, utc_now
from exporter.sharding import Shard
from exporter.snapshot import Snapshot
from exporter.state import StateLock, claim_state_file, load_state, save_state

log = structlog.get_logger("exporter.service")

USER_AGENT = f"gitlab-activity-exporter/{__version__}"
PROBE_SECONDS = 5.0
"""Longest wait for the first answer of a scan: a door mistake is named within it."""


class ExporterService:
    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = utc_now,
        shard: Shard | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config
        self.shard = shard or Shard()
        self._on_progress = on_progress  # also told (users done, users total) during scans
        self._registry = registry
        self._warm = False
        self._clock = clock
        self._snapshot = Snapshot(periods=config.period_table.names, weights=config.score_weights)
        self._progress: tuple[int, int] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._scanner: Scanner | None = None
        self._client: GitLabClient | None = None
        self._metrics: ClientMetrics | None = None
        #: what the last scan's first request said: who the token is, or why not
        self.server: ServerInfo | None = None
        self.connection_problem: ConnectionProblem | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._state_lock: StateLock | None = None
        self._scanning = False
        self._pending: Config | None = None  # a reloaded configuration for the next scan
        self.first_scan_done = asyncio.Event()

    def attach_metrics(self, registry: CollectorRegistry, *, warm: bool = False) -> None:
        """Register the GitLab client's self-metrics on ``registry`` when the service starts.

        ``warm``: ``registry`` renders this service's snapshot (a
        :class:`~exporter.exposition.SnapshotRegistry` reading :attr:`snapshot`); render
        each new snapshot's families right after the scan, not in the next scrape.
        """
        self._registry = registry
        self._warm = warm and isinstance(registry, SnapshotRegistry)

    # --- what the web layer reads -------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def progress(self) -> tuple[int, int] | None:
        """(users done, users total) while a scan runs, else ``None``."""
        return self._progress

    @property
    def client(self) -> GitLabClient:
        if self._client is None:
            raise RuntimeError("service not started")
        return self._client

    @property
    def scanner(self) -> Scanner:
        if self._scanner is None:
            raise RuntimeError("service not started")
        return self._scanner

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        if self.config.state_file is not None:
            # someone else's file, or another exporter's: StateFileError, before anything
            self._state_lock = await asyncio.to_thread(claim_state_file, self.config.state_file)
        gitlab = self.config.gitlab
        # tls_verify false skips certificate checks (self-signed GitLab); default verifies,
        # trusting gitlab.ca_file besides the system's CAs
        connector = aiohttp.TCPConnector(
            limit=gitlab.max_concurrency, ssl=client_ssl(gitlab.tls_verify, self.config.ca_file)
        )
        # trust_env: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment are honoured
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=True
        )
        metrics = ClientMetrics(self._registry) if self._registry is not None else None
        self._metrics = metrics
        self._client = GitLabClient(
            self._session,
            base_url=gitlab.url,
            token=self.config.token,
            requests_per_second=gitlab.requests_per_second,
            max_concurrency=gitlab.max_concurrency,
            timeout_seconds=gitlab.timeout_seconds,
            max_retries=gitlab.max_retries,
            max_body_bytes=gitlab.max_response_bytes,
            metrics=metrics,
            gate=RateGate(gitlab.rate_limits),
        )
        self._scanner = Scanner(
            GitLabApi(self._client),
            self.config,
            clock=self._clock,
            on_progress=self._set_progress,
            shard=self.shard,
        )
        if self.config.state_file is not None:
            saved = await asyncio.to_thread(
                load_state, self.config.state_file, self.config, self._shard_key
            )
            if saved is not None:  # serve the last numbers at once, resume incrementally
                self._scanner.store = saved.store
                self._scanner.discovery.entries = saved.discoveries
                self._scanner.discovery.hidden = saved.hidden
                self._scanner.merge_requests = saved.items.get(
                    "merge_requests", self._scanner.merge_requests
                )
                self._scanner.issues = saved.items.get("issues", self._scanner.issues)
                self._scanner.external_host = saved.external_host
                self._snapshot = saved.snapshot

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._state_lock is not None:
            self._state_lock.release()
            self._state_lock = None

    async def __aenter__(self) -> ExporterService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def lifespan(self, _app: object) -> AsyncIterator[None]:
        """For ``web.Application.cleanup_ctx``: start, run the loop, stop."""
        await self.start()
        self.start_loop()
        try:
            yield
        finally:
            await self.stop()

    # --- scanning -----------------------------------------------------------------
    def _set_progress(self, done: int, total: int) -> None:
        self._progress = (done, total)
        if self._on_progress is not None:
            self._on_progress(done, total)

    async def check_connection(self, *, report: bool = True) -> ConnectionProblem | None:
        """Ask GitLab who the token is: ``None`` when it answered, else the problem,
        counted. A door mistake is kept in :attr:`connection_problem` (with ``report``
        logged in one line when it starts or changes); a passing one only logged."""
        gitlab = self.config.gitlab
        try:
            server = await probe(
                self.client,
                within=min(PROBE_SECONDS, gitlab.timeout_seconds),
                version=self.server is None,
            )
        except ConnectionProblem as problem:
            if self._metrics is not None:
                self._metrics.connection_failures.labels(problem.reason).inc()
            if problem.passing:
                # busy or slow: the scan goes on, its requests retrying as always
                log.warning(f"GitLab's first answer: {problem}", reason=problem.reason)
                return problem
            if self._metrics is not None:
                self._metrics.connection_up.set(0)
            if report and (
                self.connection_problem is None or str(self.connection_problem) != str(problem)
            ):
                log.error(f"GitLab cannot be used: {problem}", reason=problem.reason)
            self.connection_problem = problem
            return problem
        if self._metrics is not None:
            self._metrics.connection_up.set(1)
        if report and (self.server is None or self.connection_problem is not None):
            log.info(
                "GitLab answered",
                url=gitlab.url,
                version=server.version or (self.server.version if self.server else None),
                token_user=server.username,
                admin=server.is_admin,
            )
        if server.version is None and self.server is not None:
            server = replace(server, version=self.server.version)
        self.server = server
        self.connection_problem = None
        return None

    def reload(self, new: Config) -> tuple[str, ...]:
        """Take ``new``'s teams, users, periods and weights, keeping the running state
        and numbers; applied now between scans, else when the running scan ends. The keys
        that changed but wait for a restart are returned."""
        merged, waiting = reloaded(self.config, new)
        if self._scanning:
            self._pending = merged
        else:
            self._apply(merged)
        return waiting

    def _apply(self, config: Config) -> None:
        self.config = config
        if self._scanner is not None:
            self._scanner.reconfigure(config)
        if self._snapshot.weights != config.score_weights:  # the scores show it at once
            self._snapshot = dataclasses.replace(self._snapshot, weights=config.score_weights)

    async def scan_once(self) -> Snapshot:
        if self._scanner is None:
            raise RuntimeError("service not started")
        problem = await self.check_connection()
        if problem is not None and not problem.passing:
            # a door mistake: nothing per user could be learnt; the numbers stay as they were
            return self._snapshot
        self._scanning = True
        try:
            self._snapshot = await self._scanner.scan(self._snapshot)
        finally:
            self._progress = None
            self._scanning = False
            if self._pending is not None:
                self._apply(self._pending)
                self._pending = None
        self.first_scan_done.set()
        if self._warm and isinstance(self._registry, SnapshotRegistry):
            # render the new snapshot's metrics now, in slices, not in the next scrape
            await self._registry.warm()
        await self._save_state()
        return self._snapshot

    @property
    def _shard_key(self) -> str:
        return f"{self.shard.index}/{self.shard.count}"

    async def _save_state(self) -> None:
        path = self.config.state_file
        if path is None or self._scanner is None:
            return
        try:
            # sqlite3 blocks: write in a worker thread while the loop keeps serving;
            # the scan loop waits for it, so nothing mutates the state meanwhile
            await asyncio.to_thread(
                save_state,
                path,
                config=self.config,
                store=self._scanner.store,
                discovery=self._scanner.discovery,
                snapshot=self._snapshot,
                items={
                    "merge_requests": self._scanner.merge_requests,
                    "issues": self._scanner.issues,
                },
                shard=self._shard_key,
                external_host=self._scanner.external_host,
            )
        except (OSError, sqlite3.Error) as exc:
            log.warning("state file not written", path=str(path), error=str(exc))

    def start_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run_loop(), name="scan-loop")

    async def _run_loop(self) -> None:
        interval = self.config.scan.interval_seconds
        while True:
            began = time.monotonic()
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop outlives any one scan's bug
                log.exception("scan failed unexpectedly; next attempt at the next interval")
            elapsed = time.monotonic() - began
            if elapsed > interval:
                log.warning(
                    "scan took longer than the interval",
                    seconds=round(elapsed, 1),
                    interval=interval,
                )
            await asyncio.sleep(max(0.0, interval - elapsed))

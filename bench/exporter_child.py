"""The exporter under benchmark, in its own process (so its peak RSS is its own).

Reads commands on stdin, one per line, and answers each with one JSON line on stdout:
``scan ISO-TIME`` runs one scan with the clock at that time; ``quit`` exits.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest
from prometheus_client.exposition import choose_encoder
from rss import peak_rss_mb  # bench/ is on the path: this file runs as a script

from exporter import __version__
from exporter.collectors import build_registry
from exporter.config import load_config
from exporter.logs import configure_logging
from exporter.service import ExporterService


class StallMeter:
    """A ticker task: the largest lateness of a 10 ms sleep while it runs."""

    def __init__(self, tick: float = 0.01) -> None:
        self.tick = tick
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            self.worst = max(self.worst, loop.time() - before - self.tick)

    def __enter__(self) -> StallMeter:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


class GcMeter:
    """The longest pause of the garbage collector (any generation) while it runs, and
    how many full (generation 2) collections ran."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.full = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.worst = max(self.worst, time.perf_counter() - self._started)
        if info.get("generation") == 2:
            self.full += 1

    def __enter__(self) -> GcMeter:
        self.worst, self.full = 0.0, 0
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


async def main(config_path: str) -> None:
    configure_logging("warning", "console", stream=sys.stderr)
    config = load_config(config_path)
    now = datetime.now().astimezone()
    service = ExporterService(config, clock=lambda: now)
    registry = build_registry(lambda: service.snapshot, version=__version__)
    service.attach_metrics(registry, warm=True)
    gc.freeze()  # as `serve` does once started: start-up objects leave the collector's passes
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with service:
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            command, _, argument = line.partition(" ")
            if command != "scan":
                raise SystemExit(f"unknown command {command!r}")
            now = datetime.fromisoformat(argument)
            with StallMeter() as stall, GcMeter() as collector:
                started = time.perf_counter()
                snapshot = await service.scan_once()
                wall = time.perf_counter() - started
            # what a scrape of /metrics costs (the snapshot part was rendered after the
            # scan, in slices), and what rendering the whole registry at once costs
            render_started = time.perf_counter()
            body = await registry.render(*choose_encoder(""))
            render = time.perf_counter() - render_started
            cold_started = time.perf_counter()
            cold = generate_latest(registry)
            cold_render = time.perf_counter() - cold_started
            assert body == cold, "the cached rendering differs from the plain one"
            result = {
                "wall_seconds": wall,
                "max_stall_ms": stall.worst * 1000,
                "max_gc_pause_ms": collector.worst * 1000,
                "full_gc_collections": collector.full,
                "render_ms": render * 1000,
                "uncached_render_ms": cold_render * 1000,
                "metrics_bytes": len(body),
                "peak_rss_mb": peak_rss_mb(),
                "users_failed": snapshot.last_scan.users_failed if snapshot.last_scan else None,
                "commits": {
                    name: state.stats.commits
                    for name, state in snapshot.users.items()
                    if state.stats is not None
                },
                "client_requests": service.client.request_count,
            }
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

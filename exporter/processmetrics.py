"""The process's own metrics: prometheus_client's process, platform and garbage
collector collectors (``process_resident_memory_bytes`` against the pod's memory limit,
``process_cpu_seconds_total``, ``process_open_fds``, ``python_gc_*``, ``python_info``),
and the asyncio task count they do not have."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["AsyncioTasksCollector", "register_process_collectors"]


def register_process_collectors(registry: CollectorRegistry) -> None:
    """Register every process self-metric collector on the private ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(AsyncioTasksCollector())

ASYNCIO_TASKS = "gitlab_activity_process_asyncio_tasks"


class AsyncioTasksCollector(Collector):
    """``gitlab_activity_process_asyncio_tasks``: tasks alive on the serving event loop.

    Collected on the event loop (the aiohttp ``/metrics`` handler runs there); outside a
    running loop the family is left out rather than guessed.
    """

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(ASYNCIO_TASKS, "asyncio tasks alive in the exporter.")]

    def collect(self) -> Iterable[Metric]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return []
        return [
            GaugeMetricFamily(
                ASYNCIO_TASKS,
                "asyncio tasks alive in the exporter.",
                value=len(asyncio.all_tasks(loop)),
            )
        ]

"""Process self-metrics that prometheus_client's process collector does not have."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["AsyncioTasksCollector"]

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

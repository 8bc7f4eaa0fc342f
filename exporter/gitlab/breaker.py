"""A circuit breaker per project: a project whose reads keep failing stops costing retries.

A read of a project's repository that fails after the client's full retries (5xx,
timeouts, unusable bodies: not a 404 or 403, which say something about the project)
opens its breaker. The next read is a single attempt without retries; while it keeps
failing, the project is set aside for a time that doubles with each failure
(:data:`SET_ASIDE_BASE` up to :data:`SET_ASIDE_CAP`): its reads fail at once with
:class:`ProjectSetAside` (an ``api_error``), without a request. The first success closes
the breaker. Pure bookkeeping; the clock is injectable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.gitlab.errors import ApiError

SET_ASIDE_BASE = 300.0
"""Seconds a project is set aside after its second failure in a row."""
SET_ASIDE_CAP = 6 * 3600.0
"""Longest a failing project is set aside before it is tried again."""


class ProjectSetAside(ApiError):
    """The project's reads keep failing: set aside for now, no request made."""


@dataclass(slots=True)
class _State:
    failures: int  # reads failed in a row
    retry_at: float  # clock() time before which reads are set aside


class ProjectBreaker(Collector):
    """Per project id: closed (full retries), trial (one attempt) or open (set aside)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[int, _State] = {}
        self.set_aside_total = 0  # reads refused without a request

    def retries(self, project_id: int, endpoint: str) -> int | None:
        """Retries a read of the project may take: ``None`` the client's usual, ``0`` a
        single attempt; raises :class:`ProjectSetAside` while it is set aside."""
        state = self._states.get(project_id)
        if state is None:
            return None
        wait = state.retry_at - self._clock()
        if wait > 0:
            self.set_aside_total += 1
            raise ProjectSetAside(
                f"project {project_id} set aside after {state.failures} failed reads in a "
                f"row; tried again in {wait:.0f}s",
                endpoint=endpoint,
            )
        return 0

    def failed(self, project_id: int) -> None:
        state = self._states.get(project_id)
        failures = 1 if state is None else state.failures + 1
        pause = 0.0 if failures < 2 else min(SET_ASIDE_CAP, SET_ASIDE_BASE * 2 ** (failures - 2))
        self._states[project_id] = _State(failures, self._clock() + pause)

    def succeeded(self, project_id: int) -> None:
        self._states.pop(project_id, None)

    @property
    def failing(self) -> int:
        """Projects whose last read failed."""
        return len(self._states)

    def set_aside(self) -> int:
        """Projects set aside now."""
        now = self._clock()
        return sum(1 for s in self._states.values() if s.retry_at > now)

    def describe(self) -> Iterable[Metric]:
        return self._families(False)

    def collect(self) -> Iterable[Metric]:
        return self._families(True)

    def _families(self, with_samples: bool) -> list[Metric]:
        failing = GaugeMetricFamily(
            "gitlab_activity_projects_failing",
            "Projects whose last repository read failed after its retries (their next "
            "read is one attempt).",
        )
        aside = GaugeMetricFamily(
            "gitlab_activity_projects_set_aside",
            "Projects whose reads failed twice or more in a row, set aside (no request) "
            "for a time that doubles with each failure.",
        )
        refused = CounterMetricFamily(
            "gitlab_activity_project_reads_set_aside",
            "Project reads refused without a request because the project was set aside.",
        )
        if with_samples:
            failing.add_metric([], self.failing)
            aside.add_metric([], self.set_aside())
            refused.add_metric([], self.set_aside_total)
        return [failing, aside, refused]

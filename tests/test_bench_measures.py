"""What the benchmark measures: its physical bound and a child process's peak memory."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import bound_seconds  # noqa: E402  (bench/ is a directory of scripts)

CONTRIBUTED = "/users/:id/contributed_projects"  # gitlab.com: 100 a minute


def test_an_endpoint_bound_waits_for_the_aligned_window_that_admits_the_last_request() -> None:
    need = Counter({CONTRIBUTED: 201})
    minute = 60 * 29_000_000  # a whole minute, in Unix seconds
    # 201 requests at 100 per aligned minute: the last goes in the third window, which
    # opens two minute boundaries after the start, however far into its minute that is
    late = bound_seconds(need, 0.05, started=minute + 45)
    early = bound_seconds(need, 0.05, started=minute + 5)
    assert late["endpoint"] == 120 - 45
    assert early["endpoint"] == 120 - 5
    # the rate-only figure: the 101 requests beyond one window's allowance at 100/min
    assert late["endpoint_fluid"] == early["endpoint_fluid"] == 101 * 60 / 100
    assert late["bound"] == late["endpoint"]  # 201 x 50 ms / 16 is far less


def test_a_limit_met_in_the_first_window_costs_no_time() -> None:
    bounds = bound_seconds(Counter({CONTRIBUTED: 100}), 0.05, started=60 * 29_000_000 + 59)
    assert bounds["endpoint"] == 0
    assert bounds["bound"] == bounds["latency"] == 100 * 0.05 / 16


def test_without_limits_only_latency_bounds() -> None:
    bounds = bound_seconds(Counter({CONTRIBUTED: 10_000}), 0.05, limits=False)
    assert bounds["bound"] == bounds["latency"] == 10_000 * 0.05 / 16
    assert bounds["endpoint"] == bounds["rate"] == 0


def test_a_child_reports_its_own_peak_memory_not_its_parents() -> None:
    """``ru_maxrss`` survives exec on Linux: a small child started by a large parent
    would report the parent's peak. The benchmark's children must report their own."""
    ballast = bytearray(b"x") * (300 * 1024 * 1024)  # every page touched: 300 MB resident
    script = "import sys; sys.path.insert(0, sys.argv[1]); from rss import peak_rss_mb; " \
             "print(peak_rss_mb())"
    done = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "bench")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    child = float(done.stdout)
    assert len(ballast) == 300 * 1024 * 1024
    assert 1 < child < 150  # an interpreter's own peak, far below the parent's 300 MB

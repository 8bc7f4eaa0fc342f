"""Short soak (the CI variant of bench/soak.py): scans under faults leak nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import soak

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


async def test_short_soak_stays_flat() -> None:
    result = await soak.run_soak(
        scans=30, interval=0.4, fault_rate=0.03, sample_every=0.2, time_limit=90,
        users=12, projects=36,
        # every kind but "slow", whose timeouts would only make the test longer
        kinds=tuple(k for k in soak.FAULT_KINDS if k != "slow"),
    )
    figures = {k: v for k, v in result.items() if k not in ("samples", "stderr")}
    assert result["scans"] >= 30, figures
    assert sum(result["injected"].values()) > 20, figures
    assert result["tasks_max"] > result["tasks_min_baseline"] >= 1, figures  # the gauge is live
    problems = soak.verdict(result, rss_growth_mib=24)
    assert problems == [], (problems, figures, result["stderr"][-2000:])

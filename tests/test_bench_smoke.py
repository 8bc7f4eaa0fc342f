"""The benchmark runs end to end on a micro scenario (exporter only, no latency)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_micro_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scenarios", "micro",
         "--no-baseline", "--latency-ms", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["results"][0]
    assert result["first"]["equals_truth"] and result["steady"]["equals_truth"]
    assert result["first"]["requests_429"] == result["steady"]["requests_429"] == 0
    assert result["steady"]["requests"] < result["first"]["requests"]
    # no request beyond the fewest the answer needs, by the benchmark's own count
    assert result["first"]["requests"] == result["first"]["needed_requests"]
    assert result["steady"]["requests"] == result["steady"]["needed_requests"]
    assert "micro" in done.stdout

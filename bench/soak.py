"""Soak: hundreds of scans against a faulty GitLab simulator while /metrics is scraped.

Runs the real ``serve`` command as a child process against an in-process GitLab
simulator that injects random faults, scrapes ``/metrics`` continuously, and samples
the child's resident memory (``/proc/PID/status`` VmRSS), open file descriptors
(``/proc/PID/fd``) and asyncio task count (the ``gitlab_activity_process_asyncio_tasks``
gauge) over time. Prints a table and a verdict, and writes every sample as JSON.

    python bench/soak.py --scans 300 --interval 0.3 --fault-rate 0.1 --json soak.json

Linux only (reads /proc). Every request goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exporter.simulator.generate import generate_org  # noqa: E402
from exporter.simulator.server import (  # noqa: E402
    REALISTIC_HEADERS,
    RateLimits,
    SimulatorServer,
)

#: throttles as a self-managed GitLab answers them (headers only on the 429, per-route
#: limits without any, Retry-After of the whole interval, a per-minute Limit), tight
#: enough to bind now and then
SOAK_LIMITS = RateLimits(
    general=(40, 1.0), endpoints={"/users/:id": (8, 2.0)}, **REALISTIC_HEADERS
)

TOKEN = "soak-token-0123456789"
TASKS_GAUGE = "gitlab_activity_process_asyncio_tasks"
FAULT_KINDS = (
    "500_html", "502_html", "503_html", "reset", "429", "malformed_json", "slow",
    "wrong_shape_object", "link_loop",
)

MAX_CONCURRENCY = 8  # the exporter's connection pool (and concurrency cap) in the soak


@dataclass
class Sample:
    seconds: float
    scans: int
    rss_kib: int
    fds: int
    tasks: int
    scrape_ms: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _gauges(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = sample.value
    return out


async def run_soak(
    *,
    scans: int,
    interval: float = 0.3,
    fault_rate: float = 0.1,
    users: int = 20,
    projects: int = 60,
    seed: int = 3,
    scrape_every: float = 0.1,
    sample_every: float = 1.0,
    time_limit: float = 3600.0,
    kinds: tuple[str, ...] = FAULT_KINDS,
    log: Any = None,
    limits: RateLimits | None = SOAK_LIMITS,
) -> dict[str, Any]:
    """Run the soak; returns a summary with every sample."""
    org = generate_org(seed, users=users, projects=projects, host="127.0.0.1")
    async with SimulatorServer(
        org, token=TOKEN, host="127.0.0.1", port=0, limits=limits
    ) as sim:
        sim.faults.fault_rate = fault_rate
        sim.faults.random_kinds = kinds
        sim.faults.slow_delay = 1.5  # slower than the exporter's timeout below
        sim.faults.retry_after = 0
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config.yml"
            people = sorted(org.users.values(), key=lambda u: u.id)
            groups = sorted(org.groups.values(), key=lambda g: g.id)[:2]
            config.write_text(yaml.safe_dump({
                "gitlab": {
                    "url": sim.url, "token": TOKEN, "requests_per_second": 1000,
                    "max_concurrency": MAX_CONCURRENCY, "timeout_seconds": 1, "max_retries": 2,
                },
                "scan": {"interval_seconds": interval, "lookback_days": 30},
                "teams": [{"name": g.path, "group": g.full_path} for g in groups]
                + [{"name": "listed", "members": [u.username for u in people]}],
            }))
            port = _free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "exporter", "serve", "--config.file", str(config),
                "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error",
                cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            samples: list[Sample] = []
            scrapes = failed_scrapes = 0
            began = time.monotonic()
            try:
                async with aiohttp.ClientSession() as session:
                    url = f"http://127.0.0.1:{port}/metrics"
                    next_sample = 0.0
                    done = 0
                    while done < scans:
                        if time.monotonic() - began > time_limit:
                            raise TimeoutError(f"only {done} of {scans} scans in {time_limit} s")
                        if proc.returncode is not None:
                            raise RuntimeError(f"exporter exited with {proc.returncode}")
                        t0 = time.monotonic()
                        try:
                            async with session.get(url) as response:
                                text = await response.text()
                                ok = response.status == 200
                        except aiohttp.ClientError:
                            ok = False
                        scrape_ms = (time.monotonic() - t0) * 1000
                        if not ok:
                            if not samples:  # still starting
                                await asyncio.sleep(0.1)
                                continue
                            failed_scrapes += 1
                        else:
                            scrapes += 1
                            gauges = _gauges(text)
                            done = int(gauges.get("gitlab_activity_scans_total", 0))
                            now = time.monotonic() - began
                            if now >= next_sample:
                                next_sample = now + sample_every
                                samples.append(Sample(
                                    seconds=round(now, 2), scans=done,
                                    rss_kib=_rss_kib(proc.pid), fds=_fds(proc.pid),
                                    tasks=int(gauges.get(TASKS_GAUGE, -1)),
                                    scrape_ms=round(scrape_ms, 2),
                                ))
                                if log is not None:
                                    print(_row(samples[-1]), file=log, flush=True)
                        await asyncio.sleep(scrape_every)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 15)
    elapsed = time.monotonic() - began
    return _summary(samples, scans=done, elapsed=elapsed, scrapes=scrapes,
                    failed_scrapes=failed_scrapes, exit_code=proc.returncode,
                    stderr=err.decode(errors="replace"), injected=dict(sim.faults.injected),
                    requests=len(sim.log), requests_throttled=sim.log.count(status=429)
                    - sim.faults.injected.get("429", 0))


def _window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    n = len(samples)
    return samples[int(n * start): max(int(n * start) + 1, int(n * end))]


def _summary(samples: list[Sample], **extra: Any) -> dict[str, Any]:
    if len(samples) < 4:
        raise RuntimeError("too few samples")
    # baseline: after warm-up (imports, first scans, pools filled); end: the last 30 %
    base, end = _window(samples, 0.1, 0.3), _window(samples, 0.7, 1.0)
    summary = {
        "rss_kib_baseline": statistics.median(s.rss_kib for s in base),
        "rss_kib_end": statistics.median(s.rss_kib for s in end),
        "rss_kib_max": max(s.rss_kib for s in samples),
        "fds_min_baseline": min(s.fds for s in base),
        "fds_min_end": min(s.fds for s in end),
        "fds_max": max(s.fds for s in samples),
        "tasks_min_baseline": min(s.tasks for s in base),
        "tasks_min_end": min(s.tasks for s in end),
        "tasks_max": max(s.tasks for s in samples),
        "scrape_ms_max": max(s.scrape_ms for s in samples),
        "scrape_ms_median": statistics.median(s.scrape_ms for s in samples),
    }
    summary["rss_growth_kib"] = summary["rss_kib_end"] - summary["rss_kib_baseline"]
    return {**extra, **summary, "samples": [asdict(s) for s in samples]}


def _row(s: Sample) -> str:
    return (f"{s.seconds:8.1f} {s.scans:6d} {s.rss_kib / 1024:8.1f} {s.fds:5d} "
            f"{s.tasks:6d} {s.scrape_ms:9.2f}")


HEADER = f"{'seconds':>8} {'scans':>6} {'RSS MiB':>8} {'fds':>5} {'tasks':>6} {'scrape ms':>9}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.3, help="scan.interval_seconds")
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--no-limits", action="store_true",
                        help="no rate limits (default: a self-managed GitLab's throttles, "
                        "answered as GitLab does)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--projects", type=int, default=60)
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, default=None, help="write the samples here")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    result = asyncio.run(run_soak(
        scans=args.scans, interval=args.interval, fault_rate=args.fault_rate,
        users=args.users, projects=args.projects, sample_every=args.sample_every,
        log=sys.stdout, limits=None if args.no_limits else SOAK_LIMITS,
    ))
    keys = [k for k in result if k not in ("samples", "stderr")]
    print()
    for key in keys:
        print(f"{key:>22}: {result[key]}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    problems = verdict(result)
    print("verdict:", "flat" if not problems else "NOT FLAT: " + "; ".join(problems))
    return 0 if not problems else 1


def verdict(
    result: dict[str, Any],
    *,
    rss_growth_mib: float = 32.0,
    slack: int = 2,
    fd_slack: int = MAX_CONCURRENCY,
) -> list[str]:
    """What is not flat: fds and tasks back to their idle floor, bounded RSS growth.

    Idle keep-alive connections stay open between scans, up to the connection pool's
    size (``fd_slack``); a leak grows past it, scan after scan.
    """
    problems = []
    if result["fds_min_end"] > result["fds_min_baseline"] + fd_slack:
        problems.append(f"fds {result['fds_min_baseline']} -> {result['fds_min_end']}")
    if result["tasks_min_end"] > result["tasks_min_baseline"] + slack:
        problems.append(f"tasks {result['tasks_min_baseline']} -> {result['tasks_min_end']}")
    if result["rss_growth_kib"] > rss_growth_mib * 1024:
        problems.append(f"RSS grew {result['rss_growth_kib'] / 1024:.1f} MiB")
    if result["exit_code"] != 0:
        problems.append(f"exit code {result['exit_code']}")
    if result["failed_scrapes"]:
        problems.append(f"{result['failed_scrapes']} scrapes failed")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())

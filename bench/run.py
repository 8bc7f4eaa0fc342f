"""Benchmark: the exporter against the previous tool's approach, on the GitLab simulator.

    python bench/run.py --scenarios small,medium

Per scenario (a generated organisation, seeded) the simulator adds 50 ms to every request
and enforces gitlab.com's published rate limits. The organisation is as awkward as a real
one (``Realism.typical``: private profiles, blocked and renamed users, shared names,
projects whose code the token may not read or without a repository, GitLab's external
host unlike the one it listens on) and the token is not an admin's; ``--plain`` turns
that off. The exporter runs in a child process:
a first scan, then a steady-state scan after 5 % of the projects received new commits
(pushed by their authors). Then the baseline (``bench/baseline_threads.py``) computes the
same numbers from the same simulator. Both are checked against each other and against the
simulator's independent truth. Prints a table; writes JSON to ``build/bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.gitlab.pacing import ALL, GITLAB_COM_ENDPOINT_LIMITS  # noqa: E402
from exporter.simulator.faults import FaultRule  # noqa: E402
from exporter.simulator.generate import REALISTIC_REFS, Realism, generate_org  # noqa: E402
from exporter.simulator.model import Org  # noqa: E402
from exporter.simulator.server import GITLAB_COM_LIMITS, SimulatorServer  # noqa: E402
from exporter.simulator.truth import expected_activity, expected_failures  # noqa: E402
from exporter.simulator.workload import add_new_work  # noqa: E402

SCENARIOS: dict[str, tuple[int, int]] = {
    "micro": (5, 12),
    "small": (20, 60),
    "medium": (200, 1000),
    "large": (2000, 10000),
}
TOKEN = "glpat-bench-0123456789abcdef"
HOST = "127.0.0.1"
EXTERNAL_HOST = "gitlab.bench.example"  # in GitLab's web_urls and no-reply emails
LOOKBACK_DAYS = 30
CONCURRENCY = 16
COMMITS = "/projects/:id/repository/commits"
HUGE_PAGE_BYTES = 48 * 2**20  # near the exporter's default body cap of 50 MiB
BRANCHES = "/projects/:id/repository/branches"
COMPARE = "/projects/:id/repository/compare"


def _pages(n: int) -> int:
    return max(1, math.ceil(n / 100))


def needed_requests(
    org: Org, *, discovery: bool, changed: set[int] | None, admin: bool = True
) -> Counter[str]:
    """The fewest requests the answer needs, by endpoint.

    Every scan: who the token is (``/user``).
    First scan (``discovery``): per user the lookup, details, both project listings and
    push events (asked from two days before the window, as the instance's time zone may
    end days up to 12 hours after UTC; only pushes within the window bring projects in);
    the pages of every merge request and issue created in the window (one shared list
    each); per project in any user's set with activity in the window, its branch pages
    and, when a branch's head is in the window, the pages of every ref's commits in the
    window (the exporter keeps those a branch reaches). Steady state: per user push
    events, one shared list of updated merge requests and one of issues, and one compare
    per changed project (its push's old head to its new one).
    """
    need: Counter[str] = Counter()
    # the front door: every scan first asks who the token is
    need["/user"] += 1
    start = org.now - timedelta(days=LOOKBACK_DAYS)
    zone = ZoneInfo(org.time_zone)
    refused = {  # one request each, whatever the size of their history
        pid for pid, p in org.projects.items()
        if p.no_repository or (p.code_forbidden and not admin)
    }
    for kind, items in (("/merge_requests", org.merge_requests), ("/issues", org.issues)):
        in_window = sum(1 for i in items if i.created_at >= start)
        need[kind] += _pages(in_window) if changed is None else 1
    after = start.date() - timedelta(days=2)
    projects: set[int] = set()
    seen_pushes: set[tuple[int, str]] = set()  # (project, head) of pushes the token sees
    for user in org.users.values():
        if not admin and user.state != "active":
            need["/users"] += 1  # not found, asked again every scan
            continue
        if not admin and user.profile_hidden:
            if discovery:  # nothing more is asked until it is rediscovered
                need["/users"] += 1
                need["/users/:id"] += 1
            continue
        pushes = [
            e for e in org.events.get(user.id, [])
            if e.action == "pushed" and e.created_at.astimezone(zone).date() > after
        ][: org.events_cap]
        need["/users/:id/events"] += _pages(len(pushes))
        personal = set(org.personal_project_ids(user.id))
        contributed = set(org.contributed.get(user.id, []))
        if discovery:
            need["/users"] += 1
            need["/users/:id"] += 1
            need["/users/:id/projects"] += _pages(len(personal))
            need["/users/:id/contributed_projects"] += _pages(len(contributed))
        within = {e.project_id for e in pushes if start <= e.created_at < org.now
                  and (admin or e.project_id not in refused)}  # pushes need the code
        projects |= personal | contributed | within
        seen_pushes |= {(e.project_id, e.push_data["commit_to"]) for e in pushes
                        if e.push_data and e.push_data.get("commit_to")}
    if changed is not None:
        # a change is seen through a push the token sees (the listings are not due),
        # and read with one compare from the push's old head to its new one
        newest = {pid: org.branches(pid)[org.projects[pid].default_branch].sha
                  for pid in changed}
        seen = {pid for pid in changed if (pid, newest[pid]) in seen_pushes}
        need[COMPARE] += len((seen & projects) - (set() if admin else refused))
        return need
    for pid in projects:
        project = org.projects.get(pid)
        if project is None or project.last_activity_at < start:
            continue
        if pid in refused:
            need[BRANCHES] += 1
            continue
        heads = org.branches(pid)
        need[BRANCHES] += _pages(len(heads))
        if any(head.committed_date >= start for head in heads.values()):
            need[COMMITS] += _pages(len(org.commits_between(pid, start, None)))
    return need


def bound_seconds(
    need: Counter[str], latency: float, *, limits: bool = True, started: float | None = None
) -> dict[str, float]:
    """Physical bounds: latency over concurrency, and the rate limits.

    ``rate``: the token-wide limit; ``endpoint``: per limited route. For a limit, the
    requests beyond one window's allowance, at the limit's rate (a first window's worth
    may go at once). GitLab's windows are aligned to multiples of their period, so with
    ``started`` (the Unix time the scan started) the limits' bounds are exact instead:
    the time until the window that admits a limit's last needed request opens.
    ``*_fluid`` keep the rate-only figures; ``bound`` is the largest bound.
    """
    total = sum(need.values())
    latency_bound = total * latency / CONCURRENCY
    if not limits:
        return {"latency": latency_bound, "rate": 0.0, "endpoint": 0.0, "bound": latency_bound}

    def fluid(n: int, limit: int, period: float) -> float:
        return max(0, n - limit) * period / limit

    def aligned(n: int, limit: int, period: float) -> float:
        if started is None or n <= limit:
            return fluid(n, limit, period)
        windows = math.ceil(n / limit)  # the last needed request goes in the last one
        opens = (math.floor(started / period) + windows - 1) * period
        return opens - started

    general_n, general_p = GITLAB_COM_ENDPOINT_LIMITS[ALL]
    rate = aligned(total, general_n, general_p)
    endpoint = endpoint_fluid = 0.0
    for route, (limit, period) in GITLAB_COM_ENDPOINT_LIMITS.items():
        if route != ALL and need.get(route, 0) > limit:
            endpoint = max(endpoint, aligned(need[route], limit, period))
            endpoint_fluid = max(endpoint_fluid, fluid(need[route], limit, period))
    return {
        "latency": latency_bound,
        "rate": rate,
        "rate_fluid": fluid(total, general_n, general_p),
        "endpoint": endpoint,
        "endpoint_fluid": endpoint_fluid,
        "bound": max(latency_bound, rate, endpoint),
    }


def write_config(org: Org, url: str, directory: Path, *, limits: bool = True) -> Path:
    people = sorted(org.users.values(), key=lambda u: u.id)
    document = {
        "gitlab": {
            "url": url,
            "token": TOKEN,
            "requests_per_second": 200,  # the gitlab.com limits below do the pacing
            "max_concurrency": CONCURRENCY,
            "timeout_seconds": 60,
            "max_retries": 6,
            **({"endpoint_limits": "gitlab.com"} if limits else {}),
        },
        "scan": {
            "lookback_days": LOOKBACK_DAYS,
            "timezone": "UTC",
            "discovery_interval_seconds": 3600,
        },
        "users": [{"username": u.username, "emails": list(u.extra_emails)} for u in people],
    }
    path = directory / "config.yml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def truth_commits(org: Org, *, admin: bool = True) -> dict[str, int]:
    """Commits of every user whose scan can succeed (``admin``: the token's)."""
    usernames = [u.username for u in org.users.values()]
    truth = expected_activity(
        org,
        usernames=usernames,
        timezone="UTC",
        periods={"day": "00:00-24:00"},
        lookback_days=LOOKBACK_DAYS,
        now=org.now,
        extra_emails=org.extra_emails,
        admin=admin,
    )
    failing = expected_failures(
        org, usernames=usernames, lookback_days=LOOKBACK_DAYS, now=org.now, admin=admin
    )
    return {name: t.commits for name, t in truth.items() if name not in failing}


class Child:
    """The exporter process: one JSON line per ``scan`` command."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, config: Path) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "exporter_child.py"), str(config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def scan(self, org: Org) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"scan {org.now.isoformat()}\n".encode())
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the exporter process ended")
        result: dict[str, Any] = json.loads(line)
        return result

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"quit\n")
        await self.process.stdin.drain()
        await self.process.wait()


def count(sim: SimulatorServer, mark: int) -> tuple[int, int]:
    records = sim.log.entries[mark:]
    return len(records), sum(1 for r in records if r.status == 429)


async def run_scenario(
    name: str, *, seed: int, latency_ms: int, baseline: bool, workdir: Path,
    baseline_since: bool = False,
    limits: bool = True,
    history_commits: int = 0,
    plain: bool = False,
    huge_pages: int = 0,
) -> dict[str, Any]:
    users, projects = SCENARIOS[name]
    org = generate_org(seed, users=users, projects=projects,
                       host=HOST if plain else EXTERNAL_HOST,
                       history_commits=history_commits,
                       realism=None if plain else Realism.typical(users, projects),
                       refs=None if plain else REALISTIC_REFS)
    latency = latency_ms / 1000
    result: dict[str, Any] = {"scenario": name, "users": users, "projects": projects,
                              "gitlab_com_limits": limits, "history_commits": history_commits,
                              "realistic": not plain}
    async with SimulatorServer(org, token=TOKEN, limits=GITLAB_COM_LIMITS if limits else None,
                               host=HOST, port=0, admin=plain) as sim:
        sim.faults.latency_ms = latency_ms
        if not plain:
            sim.simulator.external_url = f"https://{EXTERNAL_HOST}"  # in its page links
        if huge_pages:
            # the first N list pages of commits and push events padded towards the 50 MiB
            # cap: the real items, each with lines of text (the numbers stay exact)
            sim.faults.huge_body_bytes = HUGE_PAGE_BYTES
            sim.faults.huge_body_item_bytes = 2 * 2**20
            sim.faults.huge_body_real_items = True
            for index in range(huge_pages):
                route = (r"/repository/commits$", r"/users/\d+/events$")[index % 2]
                sim.faults.add(FaultRule(route, "huge_body", times=1))
        child = await Child.start(write_config(org, sim.url, workdir, limits=limits))
        try:
            for phase in ("first", "steady"):
                changed: set[int] | None = None
                if phase == "steady":
                    # committed over three days, pushed at once
                    changed = add_new_work(org, share=0.05, push=True, seed=seed, late=2)
                need = needed_requests(org, discovery=phase == "first", changed=changed,
                                       admin=plain)
                mark = len(sim.log)
                started = time.time()
                measured = await child.scan(org)
                requests, throttled = count(sim, mark)
                truth = truth_commits(org, admin=plain)
                bounds = bound_seconds(need, latency, limits=limits, started=started)
                result[phase] = {
                    "requests": requests,
                    "requests_429": throttled,
                    "needed_requests": sum(need.values()),
                    **{k: v for k, v in measured.items() if k != "commits"},
                    "bound_seconds": bounds,
                    # no ratio to a bound of nothing (no latency, no limits)
                    "ratio_to_bound": (measured["wall_seconds"] / bounds["bound"]
                                       if bounds["bound"] > 0 else None),
                    "equals_truth": measured["commits"] == truth,
                }
                result[f"{phase}_commits"] = measured["commits"]
        finally:
            await child.stop()
        if baseline:
            sim.limits.reset()
            users_file = workdir / "users.json"
            users_file.write_text(json.dumps({u.username: list(u.extra_emails)
                                              for u in org.users.values()}))
            mark = len(sim.log)
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "bench" / "baseline_threads.py"),
                "--url", sim.url, "--token", TOKEN, "--users", str(users_file),
                "--now", org.now.isoformat(), "--lookback-days", str(LOOKBACK_DAYS),
                "--host", org.host, *(["--since"] if baseline_since else []),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await process.communicate()
            wall = time.perf_counter() - started
            requests, throttled = count(sim, mark)
            measured = json.loads(out)
            result["baseline"] = {
                "requests": requests,
                "requests_429": throttled,
                "wall_seconds": measured["wall_seconds"],
                "process_seconds": wall,
                "peak_rss_mb": measured["peak_rss_mb"],
                "failed_users": len(measured["failed"]),
                "agrees_with_exporter": measured["commits"] == result["steady_commits"],
                "equals_truth": measured["commits"] == truth_commits(org, admin=plain),
            }
    if huge_pages:
        result["huge_pages_mib"] = [round(n / 2**20, 1) for n in sim.faults.huge_body_sizes]
    result.pop("first_commits")
    result.pop("steady_commits")
    return result


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'scenario':<8} {'run':<9} {'requests':>8} {'429s':>5} {'wall s':>8} "
            f"{'bound s':>8} {'ratio':>6} {'RSS MB':>7} {'render ms':>9} {'metrics KB':>10} "
            f"{'stall ms':>8} {'gc ms':>6} {'exact':>5}")
    lines = [head, "-" * len(head)]
    for r in results:
        for phase in ("first", "steady"):
            p = r[phase]
            lines.append(
                f"{r['scenario']:<8} {phase:<9} {p['requests']:>8} {p['requests_429']:>5} "
                f"{p['wall_seconds']:>8.2f} {p['bound_seconds']['bound']:>8.2f} "
                f"{_ratio(p['ratio_to_bound']):>6} {p['peak_rss_mb']:>7.1f} {p['render_ms']:>9.2f} "
                f"{p['metrics_bytes'] / 1024:>10.1f} {p['max_stall_ms']:>8.1f} "
                f"{p['max_gc_pause_ms']:>6.1f} {'yes' if p['equals_truth'] else 'NO':>5}"
            )
        b = r.get("baseline")
        if b:
            lines.append(
                f"{r['scenario']:<8} {'baseline':<9} {b['requests']:>8} {b['requests_429']:>5} "
                f"{b['wall_seconds']:>8.2f} {'':>8} {'':>6} {b['peak_rss_mb']:>7.1f} "
                f"{'':>9} {'':>10} {'':>8} {'':>6} {'yes' if b['equals_truth'] else 'NO':>5}"
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"running {name}...", file=sys.stderr, flush=True)
            results.append(await run_scenario(
                name, seed=args.seed, latency_ms=args.latency_ms,
                baseline=not args.no_baseline, workdir=Path(tmp),
                baseline_since=args.baseline_since, limits=not args.no_limits,
                history_commits=args.history_commits, plain=args.plain,
                huge_pages=args.huge_pages,
            ))
    print(table(results))
    for r in results:
        if "huge_pages_mib" in r:
            print(f"{r['scenario']}: padded pages served (MiB): {r['huge_pages_mib']}")
    return report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    ok = True
    for r in results:
        checks = [r["first"]["equals_truth"], r["steady"]["equals_truth"]]
        if "baseline" in r and not r.get("realistic"):
            # on a realistic organisation the previous tool's approach is wrong by design
            # (private profiles read as zero, renamed users' no-reply commits lost)
            checks.append(r["baseline"]["agrees_with_exporter"])
        if "baseline" in r:
            b = r["baseline"]["requests"]
            print(f"{r['scenario']}: first scan requests {r['first']['requests'] / b:.1%} of the "
                  f"baseline's; steady state {r['steady']['requests'] / r['first']['requests']:.1%}"
                  f" of the first scan; exporter and baseline agree: "
                  f"{r['baseline']['agrees_with_exporter']}")
        ok = ok and all(checks)
    output = Path(args.json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"seed": args.seed, "latency_ms": args.latency_ms,
                                  "results": results}, indent=2))
    print(f"wrote {output}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="small,medium,large",
                        help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-limits", action="store_true",
                        help="no rate limits in the simulator (e.g. to measure `large` quickly)")
    parser.add_argument("--baseline-since", action="store_true",
                        help="let the baseline ask only for the window's commits")
    parser.add_argument("--history-commits", type=int, default=0, metavar="N",
                        help="give every project that is not a fork N more commits from "
                             "the two years before the window (long-lived repositories)")
    parser.add_argument("--plain", action="store_true",
                        help="no realism knobs: every profile and repository visible, one host")
    parser.add_argument("--huge-pages", type=int, default=0, metavar="N",
                        help="pad the first N pages of commits and push events towards "
                             "the body cap (48 MiB; the numbers stay exact)")
    parser.add_argument("--json", default=str(ROOT / "build" / "bench.json"))
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()

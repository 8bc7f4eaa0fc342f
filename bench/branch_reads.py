"""What reading "commits reachable from branches" costs, by method, on the GitLab simulator.

    python bench/branch_reads.py --scenario medium

Every project of the scenario (every knob of the simulator on: hidden refs, merge
commits, wrong clocks) is read over the 30-day window by each method, over HTTP; the
requests are counted from the simulator's log and each project's commits (authored in
the window, merge commits left out) are checked against the simulator's own branch
reachability. No latency, no rate limits: only the number of requests matters here.

Methods:

- ``all_refs``: ``all=true&since=`` alone (every ref, GitLab's hidden ones included);
- ``branch_logs``: the branch list, then ``ref_name=BRANCH&since=`` for each branch whose
  head was committed in the window;
- ``every_branch_log``: the same without skipping branches with older heads;
- ``compare``: the branch list, the default branch's log, and one ``compare`` from the
  default branch to each other branch whose head is in the window;
- ``walk`` (the exporter's): the branch list, then ``all=true&since=`` once, kept where a
  walk from the branches' heads along ``parent_ids`` reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.commit_store import reachable  # noqa: E402
from exporter.gitlab.api import CommitRecord, GitLabApi  # noqa: E402
from exporter.gitlab.client import GitLabClient  # noqa: E402
from exporter.simulator.generate import REALISTIC_REFS, generate_org  # noqa: E402
from exporter.simulator.model import Org  # noqa: E402
from exporter.simulator.server import SimulatorServer  # noqa: E402

SCENARIOS = {"micro": (5, 12), "small": (20, 60), "medium": (200, 1000), "large": (2000, 10000)}
TOKEN = "glpat-bench-0123456789abcdef"
LOOKBACK_DAYS = 30

Reader = Callable[[GitLabApi, int, datetime], Awaitable[list[CommitRecord]]]


async def all_refs(api: GitLabApi, pid: int, start: datetime) -> list[CommitRecord]:
    return await api.project_commits(pid, start)


async def branch_logs(api: GitLabApi, pid: int, start: datetime) -> list[CommitRecord]:
    out: list[CommitRecord] = []
    for branch in await api.branches(pid):
        if branch.committed_date >= start:
            out.extend(await api.branch_commits(pid, branch.name, start))
    return out


async def every_branch_log(api: GitLabApi, pid: int, start: datetime) -> list[CommitRecord]:
    out: list[CommitRecord] = []
    for branch in await api.branches(pid):
        out.extend(await api.branch_commits(pid, branch.name, start))
    return out


def compare_reader(org: Org) -> Reader:
    async def read(api: GitLabApi, pid: int, start: datetime) -> list[CommitRecord]:
        default = org.projects[pid].default_branch
        branches = await api.branches(pid)
        out: list[CommitRecord] = []
        if any(b.name == default for b in branches):
            out.extend(await api.branch_commits(pid, default, start))
        for branch in branches:
            if branch.name != default and branch.committed_date >= start:
                out.extend(await api.compare(pid, default, branch.name))
        return out

    return read


async def walk(api: GitLabApi, pid: int, start: datetime) -> list[CommitRecord]:
    branches = await api.branches(pid)
    if not any(b.committed_date >= start for b in branches):
        return []
    return reachable(await api.project_commits(pid, start), (b.head for b in branches))


async def measure(name: str, seed: int) -> dict[str, dict[str, int]]:
    users, projects = SCENARIOS[name]
    org = generate_org(seed, users=users, projects=projects, host="127.0.0.1",
                       refs=REALISTIC_REFS)
    start = org.now - timedelta(days=LOOKBACK_DAYS)
    active = sorted(pid for pid, p in org.projects.items() if p.last_activity_at >= start)
    truth = {
        pid: {c.sha for c in org.branch_commits(pid)
              if start <= c.authored_date < org.now and not c.is_merge}
        for pid in active
    }
    methods: dict[str, Reader] = {
        "all_refs": all_refs,
        "branch_logs": branch_logs,
        "every_branch_log": every_branch_log,
        "compare": compare_reader(org),
        "walk": walk,
    }
    results: dict[str, dict[str, int]] = {}
    async with SimulatorServer(org, token=TOKEN, host="127.0.0.1", port=0) as sim, \
            aiohttp.ClientSession() as session:
        client = GitLabClient(session, base_url=sim.url, token=TOKEN,
                              requests_per_second=10_000, max_concurrency=16)
        api = GitLabApi(client)
        for method, read in methods.items():
            mark = len(sim.log)
            found = await asyncio.gather(*(read(api, pid, start) for pid in active))
            wrong = sum(
                1 for pid, records in zip(active, found, strict=True)
                if {r.sha for r in records
                    if start <= r.authored_date < org.now and not r.merge} != truth[pid]
            )
            results[method] = {"requests": len(sim.log) - mark, "projects": len(active),
                               "projects_wrong": wrong}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="medium", choices=sorted(SCENARIOS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = asyncio.run(measure(args.scenario, args.seed))
    print(f"{'method':<18} {'requests':>9} {'projects':>9} {'wrong':>6}")
    for method, r in results.items():
        print(f"{method:<18} {r['requests']:>9} {r['projects']:>9} {r['projects_wrong']:>6}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

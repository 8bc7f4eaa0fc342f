"""Workload between two scans: new commits (and the pushes that bring them) in some projects."""

from __future__ import annotations

import random
from datetime import timedelta

from exporter.simulator.model import Commit, Org


def add_new_work(
    org: Org,
    *,
    share: float = 0.05,
    seed: int = 5,
    push: bool = False,
    minutes: int = 10,
    late: int = 0,
) -> set[int]:
    """Advance the clock; give ``share`` of the projects with commits a new commit each.

    The commit's author is a user who committed to that project before, so it counts.
    With ``push`` the author also gets the push event GitLab records. ``late``: the
    author committed that many more commits locally on the days before (one a day) and
    pushes them all at once: one event, its ``commit_count``, ``commit_from`` (the old
    head) and ``commit_to`` as GitLab records them.
    """
    rng = random.Random(seed)
    people = {ident: u for u in org.users.values() for ident in u.commit_identities}
    before = org.now
    org.now = before + timedelta(minutes=minutes)
    candidates = sorted(
        pid
        for pid, commits in org.commits.items()
        if any((c.author_name, c.author_email) in people for c in commits)
    )
    chosen = set(rng.sample(candidates, max(1, round(share * len(org.projects)))))
    for n, pid in enumerate(sorted(chosen)):
        template = max(
            (c for c in org.commits[pid] if (c.author_name, c.author_email) in people),
            key=lambda c: c.committed_date,
        )
        when = before + timedelta(minutes=rng.randint(1, minutes - 1))
        branch = org.projects[pid].default_branch
        old_head = org.branches(pid).get(branch)
        work: list[Commit] = []
        for days in range(late, -1, -1):
            at = when - timedelta(days=days)
            work.append(
                Commit(
                    sha=f"{rng.getrandbits(160):040x}",
                    title=f"New work {n}" + (f" ({days} days old)" if days else ""),
                    message=f"New work {n}",
                    author_name=template.author_name,
                    author_email=template.author_email,
                    authored_date=at,
                    committed_date=at,
                    branch=branch,
                    seq=len(work) + 1 + max((c.seq for c in org.commits[pid]), default=0),
                )
            )
        org.add_commits(pid, work)
        if push:
            author = people[(template.author_name, template.author_email)]
            org.add_push(
                author.id, pid, when, work[-1].sha, ref=branch,
                commit_from=old_head.sha if old_head is not None else None,
                commit_count=len(work),
            )
    return chosen

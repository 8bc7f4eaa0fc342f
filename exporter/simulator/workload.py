"""Workload between two scans: new commits (and the pushes that bring them) in some projects."""

from __future__ import annotations

import random
from datetime import timedelta

from exporter.simulator.model import Commit, Org


def add_new_work(
    org: Org, *, share: float = 0.05, seed: int = 5, push: bool = False, minutes: int = 10
) -> set[int]:
    """Advance the clock; give ``share`` of the projects with commits a new commit each.

    The commit's author is a user who committed to that project before, so it counts.
    With ``push`` the author also gets the push event GitLab records.
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
        sha = f"{rng.getrandbits(160):040x}"
        org.add_commits(
            pid,
            [
                Commit(
                    sha=sha,
                    title=f"New work {n}",
                    message=f"New work {n}",
                    author_name=template.author_name,
                    author_email=template.author_email,
                    authored_date=when,
                    committed_date=when,
                )
            ],
        )
        if push:
            author = people[(template.author_name, template.author_email)]
            org.add_push(author.id, pid, when, sha)
    return chosen

"""An organisation as awkward as a real one, scanned with a token that is not an admin's:
every knob of the generator on at once (what a non-admin token meets, GitLab's hidden
refs, merge commits, wrong clocks, tag pushes, an instance west of UTC, an external host),
and the exported numbers equal the generator's truth exactly: on the first scan, after
pushes of commits made days before, after work noticed through the listings, after a
commit left every branch and a reconciliation read it, and after a restart from the state
file."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from exporter.config import parse_config
from exporter.service import ExporterService
from exporter.simulator.generate import REALISTIC_REFS, Realism, generate_org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.truth import expected_failures
from exporter.simulator.workload import add_new_work
from tests.conftest import HOST, TOKEN, config_document
from tests.test_project_isolation import LOOKBACK, assert_exact
from tests.test_which_commits import someones_commit

EXTERNAL = "gitlab.example.com"  # GitLab's external host; the simulator listens on HOST


async def test_every_knob_on_first_incremental_and_restarted_scans_equal_the_truth(
    tmp_path: Path,
) -> None:
    realism = dataclasses.replace(Realism.typical(40, 120), broken_projects=1)
    org = generate_org(
        5, users=40, projects=120, host=EXTERNAL, realism=realism, refs=REALISTIC_REFS
    )
    users = sorted(u.username for u in org.users.values())
    # every kind of awkwardness is there and matters to someone
    failures = expected_failures(
        org, usernames=users, lookback_days=LOOKBACK, now=org.now, admin=False
    )
    assert set(failures.values()) == {"private_profile", "not_found", "api_error"}
    assert any(u.previous_usernames for u in org.users.values())
    assert any(p.code_forbidden for p in org.projects.values())
    assert any(p.no_repository for p in org.projects.values())
    commits = [c for listed in org.commits.values() for c in listed]
    assert any(c.branch.startswith("refs/keep-around/") for c in commits)
    assert any(c.branch.endswith("/merge") for c in commits)
    assert any(len(c.parent_ids) > 1 and not c.branch.startswith("refs/") for c in commits)
    assert any(c.committed_date.year == 2099 for c in commits)
    assert org.time_zone != "UTC"
    document = config_document(
        org, "", discovery_interval_seconds=3600, state_file=str(tmp_path / "state.db")
    )
    async with SimulatorServer(org, token=TOKEN, host=HOST, port=0, admin=False) as sim:
        document["gitlab"]["url"] = sim.url
        sim.simulator.external_url = f"https://{EXTERNAL}"  # in its page links too
        config = parse_config(document, env={})
        assert config.gitlab.host != EXTERNAL
        async with ExporterService(config, clock=lambda: org.now) as service:
            first = await service.scan_once()
            assert_exact(first, org, config, admin=False)
            assert first.projects_skipped["forbidden"] >= 1
            assert first.projects_skipped["no_repository"] >= 1
            # pushes that bring commits made days before: read through compare
            add_new_work(org, share=0.05, push=True, late=2, seed=1)
            assert_exact(await service.scan_once(), org, config, admin=False)
            # work nobody scanned pushed: seen through the listings' last_activity_at
            add_new_work(org, share=0.05, push=False, seed=2)
            org.now += timedelta(hours=1)
            assert_exact(await service.scan_once(), org, config, admin=False)
            # a commit leaves every branch (a force-push); the window is read again in full
            # once a day, and the commit stops counting
            pid, gone, _ = someones_commit(org, branch_only=True)
            org.remove_commits(pid, [gone.sha])
            org.now += timedelta(days=1)
            assert_exact(await service.scan_once(), org, config, admin=False)
        add_new_work(org, share=0.05, push=True, late=1, seed=3)
        mark = len(sim.log)
        async with ExporterService(config, clock=lambda: org.now) as restarted:
            snapshot = await restarted.scan_once()
        # discoveries came from the state file, GitLab's external host and the hidden
        # profiles with them: only users GitLab did not find were looked up again
        looked_up = {r.query["username"] for r in sim.log.entries[mark:] if r.endpoint == "/users"}
        assert looked_up == {u for u, r in failures.items() if r == "not_found"}
        assert_exact(snapshot, org, config, admin=False)
        assert dict(snapshot.projects_skipped) == dict(first.projects_skipped)

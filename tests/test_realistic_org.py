"""An organisation as awkward as a real one, scanned with a token that is not an admin's:
the exported numbers equal the generator's truth exactly, on the first scan, after
incremental scans and after a restart from the state file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from exporter.config import parse_config
from exporter.service import ExporterService
from exporter.simulator.generate import Realism, generate_org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.truth import expected_failures
from exporter.simulator.workload import add_new_work
from tests.conftest import HOST, TOKEN, config_document
from tests.test_project_isolation import LOOKBACK, assert_exact

EXTERNAL = "gitlab.example.com"  # GitLab's external host; the simulator listens on HOST


async def test_every_knob_on_first_incremental_and_restarted_scans_equal_the_truth(
    tmp_path: Path,
) -> None:
    realism = dataclasses.replace(Realism.typical(40, 120), broken_projects=1)
    org = generate_org(5, users=40, projects=120, host=EXTERNAL, realism=realism)
    users = sorted(u.username for u in org.users.values())
    # every kind of awkwardness is there and matters to someone
    failures = expected_failures(
        org, usernames=users, lookback_days=LOOKBACK, now=org.now, admin=False
    )
    assert set(failures.values()) == {"private_profile", "not_found", "api_error"}
    assert any(u.previous_usernames for u in org.users.values())
    assert any(p.code_forbidden for p in org.projects.values())
    assert any(p.no_repository for p in org.projects.values())
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
            for seed in (1, 2):
                add_new_work(org, share=0.05, push=True, seed=seed)
                assert_exact(await service.scan_once(), org, config, admin=False)
        add_new_work(org, share=0.05, push=True, seed=3)
        mark = len(sim.log)
        async with ExporterService(config, clock=lambda: org.now) as restarted:
            snapshot = await restarted.scan_once()
        # discoveries came from the state file, GitLab's external host and the hidden
        # profiles with them: only users GitLab did not find were looked up again
        looked_up = {r.query["username"] for r in sim.log.entries[mark:] if r.endpoint == "/users"}
        assert looked_up == {u for u, r in failures.items() if r == "not_found"}
        assert_exact(snapshot, org, config, admin=False)
        assert dict(snapshot.projects_skipped) == dict(first.projects_skipped)

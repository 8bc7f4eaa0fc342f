"""State that survives restarts: round trip, corrupt and foreign files, restart costs."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter.commit_store import CommitStore
from exporter.config import Config
from exporter.discovery import DiscoveryCache
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.workload import add_new_work
from exporter.snapshot import Snapshot
from exporter.state import load_state, save_state
from tests.conftest import make_config
from tests.test_incremental import assert_exact


def state_config(org: Org, sim: SimulatorServer, tmp_path: Path, **scan: Any) -> Config:
    return make_config(
        org,
        sim.url,
        state_file=str(tmp_path / "state.db"),
        discovery_interval_seconds=3600,
        **scan,
    )


def user_numbers(snapshot: Snapshot) -> dict[str, Any]:
    return {name: state.stats for name, state in snapshot.users.items()}


async def test_round_trip_keeps_store_discoveries_and_snapshot(
    org: Org, sim: SimulatorServer, tmp_path: Path
) -> None:
    config = state_config(org, sim, tmp_path)
    assert config.state_file is not None
    async with ExporterService(config, clock=lambda: org.now) as service:
        snapshot = await service.scan_once()
        scanner = service.scanner
    saved = load_state(config.state_file, config)
    assert saved is not None
    assert saved.snapshot == snapshot
    assert saved.discoveries == scanner.discovery.entries
    assert saved.store.projects == scanner.store.projects
    assert saved.store.commit_count > 100


async def test_restart_serves_last_numbers_at_once_and_costs_no_more_than_steady_state(
    org: Org, sim: SimulatorServer, tmp_path: Path
) -> None:
    config = state_config(org, sim, tmp_path)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        add_new_work(org, push=True, seed=1)
        mark = len(sim.log)
        before_restart = await service.scan_once()
        steady = len(sim.log) - mark
    add_new_work(org, push=True, seed=2)
    mark = len(sim.log)
    restarted = ExporterService(config, clock=lambda: org.now)
    async with restarted:
        # the last numbers are there before any request was made
        assert len(sim.log) == mark
        assert restarted.snapshot.ready
        assert user_numbers(restarted.snapshot) == user_numbers(before_restart)
        snapshot = await restarted.scan_once()
    assert len(sim.log) - mark <= steady
    assert_exact(snapshot, org, config)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign_version", "other_settings"])
async def test_unusable_state_file_means_one_log_line_and_a_full_scan(
    org: Org, sim: SimulatorServer, tmp_path: Path, damage: str
) -> None:
    config = state_config(org, sim, tmp_path)
    assert config.state_file is not None
    path = config.state_file
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
    full = len(sim.log)
    if damage == "garbage":
        path.write_bytes(b"not a database at all\n" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "foreign_version":
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    else:
        config = state_config(org, sim, tmp_path, lookback_days=20)
        # a shorter window has fewer active branches: a full scan of its own to compare
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        sim.log.clear()
        async with ExporterService(
            state_config(org, sim, fresh, lookback_days=20), clock=lambda: org.now
        ) as service:
            await service.scan_once()
        full = len(sim.log)
    sim.log.clear()
    with capture_logs() as logs:
        async with ExporterService(config, clock=lambda: org.now) as service:
            assert not service.snapshot.ready  # nothing was served from the bad file
            snapshot = await service.scan_once()
    ignored = [e for e in logs if e["event"].startswith("state file ignored")]
    assert len(ignored) == 1, logs
    assert len(sim.log) == full  # a full scan
    assert_exact(snapshot, org, config)
    assert load_state(path, config) is not None  # and a good file replaced the bad one


async def test_missing_state_file_is_a_full_scan_and_unwritable_one_a_warning(
    org: Org, sim: SimulatorServer, tmp_path: Path
) -> None:
    config = make_config(org, sim.url, state_file=str(tmp_path / "no-such-dir" / "state.db"))
    with capture_logs() as logs:
        async with ExporterService(config, clock=lambda: org.now) as service:
            snapshot = await service.scan_once()
    assert_exact(snapshot, org, config)
    events = [e["event"] for e in logs]
    assert "no state file yet; the first scan is a full scan" in events
    assert "state file not written" in events


def test_a_crash_mid_write_leaves_the_previous_state(tmp_path: Path, org: Org) -> None:
    """The file is replaced by a rename: a failing write never touches the old one."""
    config = make_config(org, "http://gitlab.example.com", state_file=str(tmp_path / "s.db"))
    assert config.state_file is not None
    store = CommitStore()
    discovery = DiscoveryCache(None, interval=timedelta(0))  # type: ignore[arg-type]
    save_state(config.state_file, config=config, store=store, discovery=discovery,
               snapshot=Snapshot(scans_total=7))

    class Boom(Exception):
        pass

    class Exploding(CommitStore):
        @property  # type: ignore[misc]
        def projects(self) -> Any:
            raise Boom

        @projects.setter
        def projects(self, value: Any) -> None:
            pass

    with pytest.raises(Boom):
        save_state(config.state_file, config=config, store=Exploding(), discovery=discovery,
                   snapshot=Snapshot(scans_total=8))
    saved = load_state(config.state_file, config)
    assert saved is not None and saved.snapshot.scans_total == 7

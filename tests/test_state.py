"""State that survives restarts: round trip, corrupt and foreign files, restart costs."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter.authored_items import AuthoredItemStore, UserItems
from exporter.commit_store import CommitStore, ProjectState
from exporter.config import Config, parse_config
from exporter.discovery import Discovery, DiscoveryCache
from exporter.gitlab.api import ItemRef, UserDetail
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.workload import add_new_work
from exporter.snapshot import Snapshot
from exporter.state import StateFileError, load_state, save_state
from tests.conftest import config_document, make_config
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
    # a new process asks GitLab's version once, before its first scan
    versions = sum(1 for r in sim.log.records[mark:] if r.endpoint == "/version")
    assert versions <= 1
    assert len(sim.log) - mark - versions <= steady
    assert_exact(snapshot, org, config)


@pytest.mark.parametrize("damage", ["truncated", "foreign_version", "other_settings"])
async def test_unusable_state_file_means_one_log_line_and_a_full_scan(
    org: Org, sim: SimulatorServer, tmp_path: Path, damage: str
) -> None:
    config = state_config(org, sim, tmp_path)
    assert config.state_file is not None
    path = config.state_file
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
    full = len(sim.log)
    if damage == "truncated":
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


def _foreign(kind: str, path: Path) -> None:
    if kind == "text":
        path.write_text("my notes, not a state file\n" * 50)
    elif kind == "config":
        path.write_text("gitlab:\n  url: https://gitlab.example.com\n")
    elif kind == "other_sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE invoices (id INTEGER, amount REAL)")
            conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
        conn.close()
    elif kind == "other_application_id":
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA application_id = 1234")
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.close()
    else:
        path.mkdir()


@pytest.mark.parametrize(
    "kind", ["text", "config", "other_sqlite", "other_application_id", "directory"]
)
async def test_a_file_that_is_not_ours_is_refused_and_left_untouched(
    org: Org, sim: SimulatorServer, tmp_path: Path, kind: str
) -> None:
    config = state_config(org, sim, tmp_path)
    assert config.state_file is not None
    _foreign(kind, config.state_file)
    before = config.state_file.read_bytes() if config.state_file.is_file() else None
    service = ExporterService(config, clock=lambda: org.now)
    with pytest.raises(StateFileError) as info:
        await service.start()
    assert str(config.state_file) in str(info.value)
    assert "\n" not in str(info.value)
    assert len(sim.log) == 0  # refused before GitLab was asked anything
    after = config.state_file.read_bytes() if config.state_file.is_file() else None
    assert after == before


def test_concurrent_writers_never_share_a_temporary_file(tmp_path: Path, org: Org) -> None:
    config = make_config(org, "http://gitlab.example.com", state_file=str(tmp_path / "s.db"))
    path = config.state_file
    assert path is not None
    discovery = DiscoveryCache(None, interval=timedelta(0))  # type: ignore[arg-type]
    store = CommitStore()
    for pid in range(200):
        store.projects[pid] = ProjectState(datetime(2026, 1, 1, tzinfo=UTC), None, None)
    save_state(path, config=config, store=store, discovery=discovery, snapshot=Snapshot())
    errors: list[BaseException] = []
    unusable = 0

    def write(n: int) -> None:
        try:
            for i in range(25):
                save_state(path, config=config, store=store, discovery=discovery,
                           snapshot=Snapshot(scans_total=n * 100 + i))
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers):
        reads += 1
        if load_state(path, config) is None:
            unusable += 1
    for w in writers:
        w.join()
    assert errors == []
    assert unusable == 0, f"{unusable} of {reads} reads unusable"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_file_is_private_holds_no_credentials_and_any_id(tmp_path: Path, org: Org) -> None:
    document = config_document(org, "https://exporter:hunter2-password@gitlab.example.com")
    document["scan"]["state_file"] = str(tmp_path / "s.db")
    config = parse_config(document, env={})
    path = config.state_file
    assert path is not None
    huge = 2**63 + 7  # GitLab's ids are bigints; JSON carries any integer
    when = datetime(2026, 1, 1, tzinfo=UTC)
    store = CommitStore()
    store.projects[huge] = ProjectState(when, when, when)
    store.projects[huge].commits["abc"] = ("abc", "A", "a@example.com", when)
    discovery = DiscoveryCache(None, interval=timedelta(0))  # type: ignore[arg-type]
    discovery.entries["alice"] = Discovery(
        user=UserDetail(id=2**64, username="alice", name="A", state="active", public_email=None),
        personal={huge: when}, contributed={}, refreshed_at=when,
    )
    items = AuthoredItemStore()
    items.users["alice"] = UserItems({2**70: ItemRef(2**70, huge, "merged", when)}, when)
    save_state(path, config=config, store=store, discovery=discovery, snapshot=Snapshot(),
               items={"merge_requests": items})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"hunter2" not in path.read_bytes()
    saved = load_state(path, config)
    assert saved is not None
    assert saved.store.projects[huge].commits["abc"][0] == "abc"
    assert saved.discoveries["alice"].user.id == 2**64
    assert saved.discoveries["alice"].personal == {huge: when}
    assert saved.items["merge_requests"].users["alice"].items[2**70].project_id == huge

"""A project's commits indexed by author key: a user finds its own and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

from exporter.author_index import AuthorIndex, numbered_key
from exporter.matching import Identity
from exporter.service import ExporterService
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from exporter.simulator.workload import add_new_work
from tests.conftest import make_config

WHEN = datetime(2024, 6, 10, 10, tzinfo=UTC)
ME = Identity.build(user_id=7, username="dev", display_name="Dev One", host="gl.example",
                    public_email="dev@acme.example")


def test_a_user_finds_only_commits_under_its_own_keys() -> None:
    others = [(f"{n:040x}", f"Other {n}", f"other{n}@example.com", WHEN) for n in range(5000)]
    mine = [
        ("a" * 40, "Someone", "  DEV@acme.example ", WHEN),  # email, other case and spaces
        ("b" * 40, " dev one", "laptop@local", WHEN),  # display name
        ("c" * 40, "x", "7-dev@users.noreply.gl.example", WHEN),  # no-reply
    ]
    index = AuthorIndex.build([*others[:2500], *mine, *others[2500:]])
    found = index.lookup(ME.author_keys())
    assert sorted(c[0] for c in found) == ["a" * 40, "b" * 40, "c" * 40]
    assert index.size == 5003


def test_a_commit_under_several_keys_is_found_once() -> None:
    index = AuthorIndex.build([("a" * 40, "Dev One", "dev@acme.example", WHEN)])
    assert len(index.lookup(ME.author_keys())) == 1


def test_numbered_keys_name_gitlabs_no_reply_ids() -> None:
    assert numbered_key("42-old-name@users.noreply.gl.example") == "42@users.noreply.gl.example"
    assert numbered_key("042-x@h") == "42@h"
    assert numbered_key("dev@h") is None
    assert numbered_key("42@h") is None
    assert numbered_key("42-@h") is None
    assert numbered_key("x-42@h") is None
    index = AuthorIndex.build([("a" * 40, "x", "42-old-name@users.noreply.gl.example", WHEN)])
    assert index.lookup([("numbered", "42@users.noreply.gl.example")])


async def test_a_projects_index_is_built_once_per_change(org: Org, sim: SimulatorServer) -> None:
    config = make_config(org, sim.url)
    async with ExporterService(config, clock=lambda: org.now) as service:
        await service.scan_once()
        store = service.scanner.store
        before = {pid: state.index for pid, state in store.projects.items()}
        assert all(index is not None for index in before.values())
        changed = add_new_work(org)
        await service.scan_once()
        after = {pid: state.index for pid, state in store.projects.items()}
    rebuilt = {pid for pid in before if after[pid] is not before[pid]}
    assert rebuilt == changed  # only where commits changed

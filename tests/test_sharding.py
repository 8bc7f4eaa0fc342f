"""Sharding: a stable split of the users; shards partition them exactly, and every
per-user and per-team series summed across shards equals one unsharded instance."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from exporter.sharding import Shard, ordinal_from_hostname, shard_of
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from tests.conftest import config_document
from tests.test_cli import run, write_config

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


# --- the pure split ------------------------------------------------------------------


def test_shard_of_is_the_documented_hash() -> None:
    for name in ("alice", "Bob", "quinn.rossi", "x"):
        digest = hashlib.sha256(name.lower().encode()).digest()
        assert shard_of(name, 7) == int.from_bytes(digest[:8], "big") % 7
    # pinned: a change of the hash would move users between running shards
    assert [shard_of(n, 3) for n in ("alice", "bob", "carol", "dave")] == [2, 2, 2, 1]
    assert shard_of("alice", 1000) == 207


def test_shard_of_ignores_case_and_spreads_evenly() -> None:
    assert shard_of("Alice", 5) == shard_of("ALICE", 5) == shard_of("alice", 5)
    counts = Counter(shard_of(f"user{i}", 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_one_shard_owns_everyone_and_shards_partition() -> None:
    names = [f"user{i}" for i in range(200)]
    assert all(Shard().owns(n) for n in names)
    owners = [[i for i in range(3) if Shard(i, 3).owns(n)] for n in names]
    assert all(len(o) == 1 for o in owners)


@pytest.mark.parametrize(
    ("hostname", "ordinal"),
    [("gitlab-activity-exporter-3", 3), ("x-0", 0), ("exporter-12", 12), (" name-3\n", 3)],
)
def test_ordinal_from_hostname(hostname: str, ordinal: int) -> None:
    assert ordinal_from_hostname(hostname) == ordinal


@pytest.mark.parametrize("hostname", ["exporter", "exporter-", "exporter-3a", "node7", ""])
def test_ordinal_from_hostname_rejects_other_names(hostname: str) -> None:
    with pytest.raises(ValueError, match="StatefulSet"):
        ordinal_from_hostname(hostname)


@pytest.mark.parametrize(("index", "count"), [(3, 3), (-1, 2), (0, 0)])
def test_invalid_shard(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        Shard(index, count)


# --- the command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "hostname", "message"),
    [
        (["--shard.from-hostname", "--shard.count", "3"], "worker", "does not end in -<ordinal>"),
        (["--shard.from-hostname", "--shard.count", "3"], "exporter-3", "outside 0..2"),
        (["--shard.index", "3", "--shard.count", "3"], "x-0", "outside 0..2"),
        (["--shard.index", "1"], "x-0", "outside 0..0"),
        (["--shard.count", "0"], "x-0", "--shard.count must be at least 1"),
        (["--shard.index", "0", "--shard.from-hostname", "--shard.count", "2"], "x-0", "not both"),
    ],
)
async def test_bad_shard_flags_exit_2(
    tmp_path: Path, org: Org, flags: list[str], hostname: str, message: str
) -> None:
    config = write_config(tmp_path, config_document(org, "https://gitlab.example.com"))
    code, _, err = await run("scan", "--config.file", str(config), *flags, env={"HOSTNAME": hostname})
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err


async def test_serve_checks_shard_flags_too(tmp_path: Path, org: Org) -> None:
    config = write_config(tmp_path, config_document(org, "https://gitlab.example.com"))
    flags = ["--shard.from-hostname", "--shard.count", "3"]
    code, _, err = await run("serve", "--config.file", str(config), *flags, env={"HOSTNAME": "worker"})
    message = "does not end in -<ordinal>"
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err


# --- shards against one GitLab ---------------------------------------------------------


def parse(text: str) -> dict[SeriesKey, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[SeriesKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def users_of(series: dict[SeriesKey, float]) -> set[str]:
    return {dict(labels)["user"] for name, labels in series if name == "gitlab_activity_user_up"}


async def test_three_shards_partition_users_and_sum_to_one_instance(
    tmp_path: Path, org: Org, sim: SimulatorServer
) -> None:
    config = write_config(tmp_path, config_document(org, sim.url))
    base = ["scan", "--config.file", str(config), "--output", "prometheus"]
    results = await asyncio.gather(
        run(*base),
        run(*base, "--shard.index", "0", "--shard.count", "3"),
        run(*base, "--shard.index", "1", "--shard.count", "3"),
        # a StatefulSet pod: the index from the host name
        run(*base, "--shard.from-hostname", "--shard.count", "3", env={"HOSTNAME": "gae-2"}),
    )
    for code, _, err in results:
        assert code == 0, err
    whole, *shards = (parse(out) for _, out, _ in results)

    # every shard says which it is
    assert whole[("gitlab_activity_shard_info", (("count", "1"), ("index", "0")))] == 1
    for index, series in enumerate(shards):
        assert series[("gitlab_activity_shard_info", (("count", "3"), ("index", str(index))))] == 1

    # the shards partition the users exactly, by the documented hash
    everyone = users_of(whole)
    assert len(everyone) == len(org.users)
    parts = [users_of(series) for series in shards]
    assert sum(len(p) for p in parts) == len(everyone)
    assert set().union(*parts) == everyone
    for index, part in enumerate(parts):
        assert part, f"shard {index} got no users"
        assert part == {u for u in everyone if shard_of(u, 3) == index}

    # every per-user and per-team series, summed across shards, equals the one instance
    def summable(name: str) -> bool:
        return name.startswith(("gitlab_activity_user_", "gitlab_activity_team_")) and not name.endswith(
            "_timestamp_seconds"
        )

    summed: Counter[SeriesKey] = Counter()
    for series in shards:
        for key, value in series.items():
            if summable(key[0]):
                summed[key] += value
    expected = {key: value for key, value in whole.items() if summable(key[0])}
    assert dict(summed) == expected
    # timestamps cannot be summed, but each user's is exported by exactly one shard
    stamps = [k for s in shards for k in s if k[0] == "gitlab_activity_user_last_success_timestamp_seconds"]
    assert sorted(stamps) == sorted(k for k in whole if k[0] == "gitlab_activity_user_last_success_timestamp_seconds")
    # a team's membership is split, never duplicated: a user in several teams stays exact
    members = [k for s in shards for k in s if k[0] == "gitlab_activity_team_member_info"]
    assert len(members) == len(set(members))
    teams_per_user = Counter(dict(labels)["user"] for _, labels in members)
    assert max(teams_per_user.values()) > 1, "the configuration should put a user in several teams"
    # scans counted per shard add up too
    for state in ("scanned", "failed"):
        key = ("gitlab_activity_last_scan_users", (("state", state),))
        assert sum(s[key] for s in shards) == whole[key]

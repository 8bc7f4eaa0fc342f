"""Sharding: several replicas each scan a disjoint share of the users.

A user belongs to shard ``int(sha256(username.lower())[:8]) % count``: stable across
restarts, processes and machines, and the same on every replica without any
coordination (as kube-state-metrics shards objects). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_ORDINAL = re.compile(r"-(\d+)$")


def shard_of(username: str, count: int) -> int:
    """The shard (0 .. count-1) of ``username``; case-insensitive."""
    if count < 1:
        raise ValueError("shard count must be at least 1")
    digest = hashlib.sha256(username.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def ordinal_from_hostname(hostname: str) -> int:
    """The trailing ordinal of a StatefulSet pod name: ``exporter-3`` -> 3."""
    match = _ORDINAL.search(hostname.strip())
    if match is None:
        raise ValueError(
            f"hostname {hostname!r} does not end in -<ordinal> like a StatefulSet pod "
            "(e.g. gitlab-activity-exporter-2)"
        )
    return int(match.group(1))


@dataclass(frozen=True, slots=True)
class Shard:
    """This instance's share of the users: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index {self.index} is outside 0..{self.count - 1} (count {self.count})"
            )

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def owns(self, username: str) -> bool:
        return self.count == 1 or shard_of(username, self.count) == self.index

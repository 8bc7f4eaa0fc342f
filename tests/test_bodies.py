"""Large response bodies: parsed as they arrive, handed out in turns, never held whole."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.gitlab import bodies
from exporter.gitlab.api import GitLabApi, _commit_record, _Shape
from exporter.gitlab.bodies import JsonReader
from exporter.simulator.faults import FaultRule
from exporter.simulator.model import Org
from exporter.simulator.server import SimulatorServer
from tests.conftest import HOST, TOKEN
from tests.test_gitlab_realism import BOUND, client_for


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Turns:
    """Counts the event loop's turns while it runs (a task that only yields)."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    async def __aenter__(self) -> Turns:
        self._task = asyncio.ensure_future(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


# -------------------------------------------------------------- the parser, as json


def _read(body: bytes, cuts: list[int]) -> Any:
    async def run() -> Any:
        reader = JsonReader()
        at = 0
        for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
            await reader.feed(body[at:cut])
            at = cut
        try:
            return reader.finish()
        finally:
            reader.close()

    return asyncio.run(run())


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # set once, kept
@given(items=st.lists(_VALUES, max_size=12), cuts=st.lists(st.integers(0, 10**6), max_size=8),
       spaced=st.booleans())
def test_a_list_read_in_any_chunks_is_what_json_reads(
    items: list[Any], cuts: list[int], spaced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bodies, "SLICE_BYTES", 8)  # every list here is "large"
    body = json.dumps(items, indent=1 if spaced else None, ensure_ascii=False).encode()
    assert _read(body, cuts) == json.loads(body)


@pytest.mark.parametrize("body", [
    b"[1, 2", b"[1, 2,]", b"[1 2]", b"[1] [2]", b"[1], ", b'["a\xff"]', b"[" * 50000,
    b'[{"a": 1}, {"a": }]', b"[1, 2] x", b"[12", b'["x", tru]',
])
def test_a_broken_list_is_refused_as_json_refuses_it(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bodies, "SLICE_BYTES", 2)
    with pytest.raises((ValueError, RecursionError)):
        json.loads(body)
    for cuts in ([], [1], [3, 5], list(range(len(body)))[:64]):
        with pytest.raises((ValueError, RecursionError)):
            _read(body, cuts)


# -------------------------------------------------------------- through the client


async def test_a_large_page_is_handed_out_a_slice_per_turn(
    org: Org, session: aiohttp.ClientSession
) -> None:
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.faults.huge_body_bytes = 8 * 2**20
        sim.faults.add(FaultRule(r"/users/\d+/projects$", "huge_body"))
        client = client_for(session, sim.url)
        runs: list[int] = []  # items handed out between two turns of the loop
        async with Turns() as turns:
            last = -1
            async for _item in client.paginate(
                f"/users/{min(org.users)}/projects", endpoint="/users/:id/projects"
            ):
                if turns.count != last:
                    runs.append(0)
                    last = turns.count
                runs[-1] += 1
    total = sum(runs)
    assert total > 8000
    # a slice is about 256 KiB of items of about 900 bytes: a few hundred, not the page
    per_slice = bodies.SLICE_BYTES // 800
    assert max(runs) <= per_slice, (max(runs), per_slice, total)


async def test_a_near_cap_page_never_holds_its_body_or_its_text(
    org: Org, session: aiohttp.ClientSession
) -> None:
    project = max(org.projects, key=lambda p: len(org.commits_between(p, org.now.replace(
        year=org.now.year - 5), None)))
    size = 24 * 2**20
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        client = client_for(session, sim.url, max_body_bytes=32 * 2**20)
        path = f"/projects/{project}/repository/commits"
        plain = [c["id"] async for c in client.paginate(path, endpoint=COMMITS)]
        sim.faults.huge_body_bytes = size
        sim.faults.huge_body_item_bytes = size
        sim.faults.huge_body_real_items = True
        sim.faults.add(FaultRule(r"/repository/commits$", "huge_body"))
        tracemalloc.start()
        try:
            padded = [c async for c in client.paginate(path, endpoint=COMMITS)]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # the real answer, every page of it, each item padded (one with an emoji, which
    # makes a Python string of the whole text four bytes a character)
    assert [c["id"] for c in padded] == plain and len(plain) > 10
    assert sum(len(c["padding"]) for c in padded) * 250 > size * 0.9
    assert any("\U0001F680" in c.get("note", "") for c in padded)
    # what is held is the parsed items (a little more than the body: one object per
    # line), not also the body (1x) and its text (4x)
    assert peak < 2.2 * size, peak / size


COMMITS = "/projects/:id/repository/commits"


async def test_a_large_page_of_commits_never_stalls_the_loop_as_one_go_would(
    org: Org, session: aiohttp.ClientSession
) -> None:
    project = min(org.projects)
    async with SimulatorServer(org, token=TOKEN, host=HOST) as sim:
        sim.faults.huge_body_bytes = 24 * 2**20
        sim.faults.add(FaultRule(r"/repository/commits$", "huge_body", times=1))
        client = client_for(session, sim.url, max_body_bytes=32 * 2**20)
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.ensure_future(ticker())
        try:
            commits = await asyncio.wait_for(
                GitLabApi(client).project_commits(project, datetime(1999, 1, 1, tzinfo=UTC)),
                BOUND,
            )
        finally:
            done.set()
            await ticking
        # the same page, parsed, converted and let go of in one go, on this machine now
        sim.faults.add(FaultRule(r"/repository/commits$", "huge_body", times=1))
        async with session.get(
            f"{sim.url}/api/v4/projects/{project}/repository/commits",
            headers={"PRIVATE-TOKEN": TOKEN},
        ) as response:
            body = await response.read()
    assert len(commits) > 20000
    began = time.perf_counter()
    shape = _Shape(COMMITS)
    records = [_commit_record(shape, item) for item in json.loads(body)]
    del records
    in_one_go = time.perf_counter() - began
    # each turn does a slice of the work (about 1/100 of it here): well under a third
    assert max(gaps) < in_one_go / 3, (max(gaps), in_one_go)

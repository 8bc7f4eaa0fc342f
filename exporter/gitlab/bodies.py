"""Response bodies within bounds: bytes in flight for the whole process, and large bodies
parsed a slice at a time.

:class:`ByteBudget` caps the bytes of response bodies being read and parsed at once,
across every request of the process: a reader waits for room before taking more, except
the oldest reader, which always proceeds (so readers never wait on each other in a
circle, and memory stays under the cap plus one body).

:func:`parse_json` parses a body of up to :data:`SLICE_BYTES` at once; a larger JSON
list is parsed element by element, returning to the event loop after each slice of
about :data:`SLICE_BYTES`. The garbage collector's automatic passes are held off
meanwhile and its young generations collected a slice at a time instead: an automatic
pass over the objects of a large page in the making is itself a long stall.
"""

from __future__ import annotations

import asyncio
import codecs
import gc
import json
import re
from collections import deque
from typing import Any

SLICE_BYTES = 256 * 1024
"""Bytes parsed per turn of the event loop."""

_YOUNG_PASSES = 8
"""Slices between passes over the garbage collector's middle generation."""
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class Lease:
    """Bytes one response holds in a :class:`ByteBudget`; release when done."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    async def take(self, size: int) -> None:
        await self._budget._take(self, size)

    def release(self) -> None:
        self._budget._release(self)


class ByteBudget:
    """At most ``capacity`` bytes of bodies in flight, process-wide (plus one body)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.used = 0
        self.peak = 0  # most bytes held at once, for metrics and tests
        self.waits = 0  # times a reader waited for room
        self._leases: deque[Lease] = deque()
        self._waiters: list[asyncio.Future[None]] = []

    def lease(self) -> Lease:
        lease = Lease(self)
        self._leases.append(lease)
        return lease

    async def _take(self, lease: Lease, size: int) -> None:
        while self.used + size > self.capacity and self._leases and self._leases[0] is not lease:
            self.waits += 1
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        lease.held += size
        self.used += size
        self.peak = max(self.peak, self.used)

    def _release(self, lease: Lease) -> None:
        try:
            self._leases.remove(lease)
        except ValueError:
            return  # released already
        self.used -= lease.held
        lease.held = 0
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


async def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; a large list without stalling the event loop.

    Raises :class:`ValueError` (or :class:`UnicodeDecodeError`, :class:`RecursionError`)
    as :func:`json.loads` does.
    """
    if len(body) <= SLICE_BYTES:
        return json.loads(body)
    text = await _decode(body)
    start = _skip(text, 0)
    if not text.startswith("[", start):
        return json.loads(text)
    hold = _GcHold()
    try:
        return await _parse_list(text, start + 1)
    finally:
        hold.release()


async def _decode(body: bytes) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    step = SLICE_BYTES
    for offset in range(0, len(body), step):
        last = offset + step >= len(body)
        parts.append(decoder.decode(body[offset : offset + step], final=last))
        await asyncio.sleep(0)
    return "".join(parts)


async def _parse_list(text: str, at: int) -> list[Any]:
    items: list[Any] = []
    decode = _DECODER.raw_decode
    at = _skip(text, at)
    if text.startswith("]", at):
        _end(text, at + 1)
        return items
    mark = at
    slices = 0
    while True:
        item, at = decode(text, at)
        items.append(item)
        at = _skip(text, at)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
        elif text.startswith("]", at):
            _end(text, at + 1)
            return items
        else:
            raise ValueError(f"expected ',' or ']' at {at}")
        if at - mark >= SLICE_BYTES:
            mark = at
            slices += 1
            # the young generations' passes, a slice's objects at a time (the automatic
            # ones are held off: they would walk the whole page in one go)
            gc.collect(1 if slices % _YOUNG_PASSES == 0 else 0)
            await asyncio.sleep(0)  # the rest of the process gets its turn


def _skip(text: str, at: int) -> int:
    """The index after any whitespace at ``at``."""
    found = _SPACE.match(text, at)
    assert found is not None  # the pattern matches the empty string
    return found.end()


def _end(text: str, at: int) -> None:
    if _skip(text, at) != len(text):
        raise ValueError("extra data after the JSON value")


class _GcHold:
    """Holds the garbage collector's automatic passes off while any large parse runs."""

    active = 0
    was_enabled = False

    def __init__(self) -> None:
        if _GcHold.active == 0:
            _GcHold.was_enabled = gc.isenabled()
            gc.disable()
        _GcHold.active += 1
        self._open = True

    def release(self) -> None:
        if not self._open:
            return
        self._open = False
        _GcHold.active -= 1
        if _GcHold.active == 0 and _GcHold.was_enabled:
            gc.enable()

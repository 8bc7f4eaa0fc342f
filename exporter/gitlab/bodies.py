"""Response bodies within bounds: bytes in flight for the whole process, and large bodies
parsed as they arrive, a slice at a time.

:class:`ByteBudget` caps the bytes of response bodies being read and parsed at once,
across every request of the process: a reader waits for room before taking more, except
the oldest reader, which always proceeds (so readers never wait on each other in a
circle, and memory stays under the cap plus one body).

:class:`JsonReader` is fed a body's chunks as they arrive. A body of up to
:data:`SLICE_BYTES` is parsed at once at the end. A larger JSON list is parsed element
by element while it arrives, returning to the event loop after each slice of about
:data:`SLICE_BYTES`: neither the whole body nor its text is ever held, only a window of
text around the element being parsed (a body's text can take four times its bytes: one
character outside the Basic Multilingual Plane widens every character of a Python
string). The garbage collector's automatic passes are held off while a large list is
alive (read, then handed out item by item, see :meth:`JsonReader.items`) and its
youngest generation collected a slice at a time instead: an automatic pass over the
objects of a large page is itself a long stall, and the page's objects, which hold no
cycles, are freed by reference counting as they are handed out.
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


class JsonReader:
    """One response body's JSON value, parsed from its chunks as they arrive.

    Feed every chunk with :meth:`feed`, then take the value with :meth:`finish` (raises
    :class:`ValueError`, :class:`UnicodeDecodeError` or :class:`RecursionError` as
    :func:`json.loads` does). A large list holds the garbage collector's automatic passes
    off until :meth:`close` (idempotent; :meth:`items` closes when done).
    """

    def __init__(self) -> None:
        self.size = 0  # bytes fed
        self._head: list[bytes] = []  # bytes kept until the body is known to be large
        self._streaming = False
        self._buffered = False  # large, but not a list: parsed in one go at the end
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = ""  # decoded text not yet parsed (part of one element at most)
        self._more: list[str] = []  # decoded since the last parse
        self._more_len = 0
        self._wanted = 0  # text to gather before trying a cut element again
        self._state = _FIRST
        self._items: list[Any] = []
        self._since_turn = 0
        self._hold: _GcHold | None = None
        self._count = 0
        #: what made the body unusable, told by :meth:`finish` (the rest is not parsed)
        self._error: ValueError | RecursionError | None = None

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self._streaming:
            self._head.append(chunk)
            if self._buffered or self.size <= SLICE_BYTES:
                return
            data = b"".join(self._head)
            at = len(data) - len(data.lstrip(b" \t\r\n"))
            if not data.startswith(b"[", at):
                self._buffered = True
                self._head = [data]
                return
            self._head = []
            self._streaming = True
            self._hold = _GcHold()
            chunk = data[at + 1 :]
        if self._error is None:
            try:
                self._push(self._decoder.decode(chunk), final=False)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError too
                self._fail(exc)
        self._since_turn += len(chunk)
        if self._since_turn >= SLICE_BYTES:
            self._since_turn = 0
            # the youngest generation's pass, a slice's objects at a time (the automatic
            # passes are held off: they would walk the whole page); survivors wait in the
            # middle generation, where the page's objects die as they are handed out
            gc.collect(0)
            await asyncio.sleep(0)  # the rest of the process gets its turn

    def finish(self) -> Any:
        """The body's JSON value."""
        if not self._streaming:
            data, self._head = b"".join(self._head), []
            return json.loads(data)
        if self._error is None:
            self._push(self._decoder.decode(b"", final=True), final=True)
        if self._error is not None:
            raise self._error
        if self._state != _DONE:
            raise ValueError("unterminated JSON list")
        items, self._items = self._items, []
        self._count = len(items)
        return items

    @property
    def items_per_turn(self) -> int | None:
        """For a large list, once finished: how many of its items make about
        :data:`SLICE_BYTES` (``None``: a body parsed in one go)."""
        if not self._streaming or not self._count:
            return None
        return max(1, self._count * SLICE_BYTES // self.size)

    def close(self) -> None:
        """Let the garbage collector's automatic passes run again (once nothing else
        holds them off)."""
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def _fail(self, error: ValueError | RecursionError) -> None:
        self._error = error
        self._text, self._items = "", []
        self._more.clear()

    def _push(self, text: str, *, final: bool) -> None:
        self._more.append(text)
        self._more_len += len(text)
        if not final and self._more_len < self._wanted:
            return  # a cut element is tried again once the text has doubled
        text = self._text + "".join(self._more)
        self._more.clear()
        self._more_len = 0
        at = self._parse(text, final)
        self._text = text[at:]
        # an element cut at the end of the text: try again with twice as much, so a
        # large element costs a few parses of itself, not one per chunk
        self._wanted = len(self._text) if self._state != _NEXT else 0

    def _parse(self, text: str, final: bool) -> int:
        """Parse the complete elements in ``text``; the index where parsing stopped."""
        at = 0
        decode = _DECODER.raw_decode
        items = self._items
        end_of_text = len(text)
        while True:
            at = _skip(text, at)
            if at == end_of_text:
                return at
            if self._state == _DONE:
                raise ValueError("extra data after the JSON value")
            if self._state == _NEXT:
                if text.startswith(",", at):
                    self._state = _ITEM
                    at += 1
                elif text.startswith("]", at):
                    self._state = _DONE
                    at += 1
                else:
                    raise ValueError(f"expected ',' or ']' at {at}")
                continue
            if self._state == _FIRST and text.startswith("]", at):
                self._state = _DONE
                at += 1
                continue
            try:
                item, end = decode(text, at)
            except json.JSONDecodeError:
                if final:
                    raise
                return at  # cut by the end of the text so far (or wrong: told at the end)
            if end == end_of_text and not final:
                return at  # a number may go on in the next chunk
            items.append(item)
            self._state = _NEXT
            at = end


_FIRST, _ITEM, _NEXT, _DONE = range(4)


def _skip(text: str, at: int) -> int:
    """The index after any whitespace at ``at``."""
    found = _SPACE.match(text, at)
    assert found is not None  # the pattern matches the empty string
    return found.end()


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

"""Which waiting synthesis runs next: the one whose audio is needed soonest.

Piper runs ``parallel`` syntheses at once for every call together. First come, first served
let a reply's first piece (its caller hears silence until it is ready) wait behind other
calls' later pieces, whose audio is only needed once the audio already sent for them has
played, seconds later. :class:`DeadlineGate` starts waiting jobs earliest deadline first;
:class:`Playout` tells a call's service when its next piece is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineGate:
    """Runs at most ``slots`` jobs at once in ``executor``; waiting jobs start in order of
    their deadline (a ``time.monotonic()`` time), ties in order of arrival.

    A slot is held until the job's thread has finished, even when the caller stopped waiting
    (barge-in): a thread cannot be interrupted, and it still uses a core.
    """

    def __init__(self, executor: Executor, slots: int) -> None:
        self._executor = executor
        self._free = slots
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot (for tests and diagnostics)."""
        return sum(1 for *_, f in self._waiting if not f.done())

    async def run(self, deadline: float, fn: Callable[..., T], *args: Any,
                  on_start: Callable[[], None] | None = None) -> T:
        """``fn(*args)`` in the executor once a slot is free and no earlier deadline waits;
        ``on_start()`` is called (on the event loop) when it has its slot."""
        loop = asyncio.get_running_loop()
        await self._acquire(deadline, loop)
        try:
            if on_start is not None:
                on_start()
            job = self._executor.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        job.add_done_callback(lambda _: _call_soon(loop, self._release))
        return await asyncio.wrap_future(job)

    async def _acquire(self, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        if self._free > 0:  # (a slot is only ever free while nobody waits: see _release)
            self._free -= 1
            return
        granted: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiting, (deadline, next(self._arrivals), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot came just as the caller gave up: pass it on
            raise

    def _release(self) -> None:
        while self._waiting:
            *_, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the thread ran
        loop.call_soon_threadsafe(fn)


class Playout:
    """When the audio a call's service has sent for the current reply will have played."""

    def __init__(self) -> None:
        self._context: str | None = None
        self._until = 0.0

    def sent(self, context_id: str, seconds: float, now: float | None = None) -> None:
        """``seconds`` more audio of reply ``context_id`` went to the caller."""
        now = time.monotonic() if now is None else now
        if context_id != self._context:
            self._context, self._until = context_id, now
        self._until = max(self._until, now) + seconds

    def needed_at(self, context_id: str, now: float | None = None) -> float:
        """When the next audio of ``context_id`` is needed: now, unless audio of the same
        reply is still playing."""
        now = time.monotonic() if now is None else now
        return max(now, self._until) if context_id == self._context else now

    def reset(self) -> None:
        """The caller interrupted: nothing sent before is still playing."""
        self._context = None

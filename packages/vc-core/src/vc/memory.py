"""Give freed heap memory back to the operating system after calls end (glibc ``malloc_trim``).

Calls churn native memory (audio buffers, pipecat's per-call VAD thread, codec and resampler
state). glibc keeps what is freed in its arenas (one per thread that allocates, up to 8 per
core), so a ``vc serve`` process's RSS climbs with calls and stays up after they end, though
nothing leaks (issue 12, ``bench/soak.py``). ``malloc_trim(0)`` hands the free pages of every
arena back. :class:`HeapTrimmer` runs it in a worker thread (never on the event loop) after
calls end, at most once every ``[server] memory_trim_interval`` seconds (0: never). Where the C
library is not glibc (musl, macOS) there is nothing to call and it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("vc.memory")

#: A trim waits at least this long after a call ends: the call's objects are freed by then.
SETTLE_SECONDS = 1.0

Trim = Callable[[], object]


def glibc_malloc_trim() -> Trim | None:
    """``malloc_trim(0)`` of the running glibc, or None where the C library is another."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        fn = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, ValueError):  # no confstr name, no symbol, no libc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)  # ctypes releases the GIL for the call


def rss_mib() -> float | None:
    """This process's resident set size in MiB (None where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class HeapTrimmer:
    """Trims the heap after calls end, at most once every ``interval`` seconds.

    :meth:`call_ended` (on the event loop) asks for a trim; it runs ``settle`` seconds later at
    the earliest and ``interval`` seconds after the previous one at the earliest, so a trim
    always follows the last call's end and a busy server trims every ``interval`` seconds.
    """

    def __init__(self, interval: float, *, trim: Trim | None = None, settle: float = SETTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.settle = settle
        self.clock = clock
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._wanted = False
        self._last = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self.trims = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 0 and self._trim is not None

    def call_ended(self) -> None:
        """A call has ended: trim soon (never raises)."""
        if not self.enabled:
            return
        self._wanted = True
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError as e:  # no running loop: nothing to schedule it on
                log.debug("heap trim not scheduled: %s", e)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _delay(self) -> float:
        return max(self.settle, self._last + self.interval - self.clock())

    async def _run(self) -> None:
        while self._wanted:
            await asyncio.sleep(self._delay())
            self._wanted = False
            await self.trim_now()

    async def trim_now(self) -> None:
        """One trim in a worker thread, logged with RSS before and after (never raises)."""
        if self._trim is None:
            return
        self._last = self.clock()
        try:
            await asyncio.to_thread(self._timed_trim)
        except Exception as e:
            log.warning("malloc_trim failed: %s", e)

    def _timed_trim(self) -> None:
        assert self._trim is not None
        before, t0 = rss_mib(), time.perf_counter()
        self._trim()
        took, after = time.perf_counter() - t0, rss_mib()
        self.trims += 1
        log.debug("malloc_trim: RSS %s -> %s MiB in %.1f ms", _mib(before), _mib(after), took * 1000)


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"

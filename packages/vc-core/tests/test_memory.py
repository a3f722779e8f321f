"""vc.memory: freed heap handed back to the OS after calls end, rate-limited, never in the way."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from vc import memory
from vc.engine import Engine
from vc.memory import HeapTrimmer, glibc_malloc_trim, rss_mib
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call


class CountingTrim:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> int:
        self.calls += 1
        if self.fail:
            raise OSError("trim went wrong")
        return 1


async def settled(trimmer: HeapTrimmer) -> None:
    """Until the trimmer has nothing left to do."""
    while trimmer._task is not None and not trimmer._task.done():
        await asyncio.sleep(0.01)


async def test_a_call_end_is_followed_by_one_trim() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(5.0, trim=trim, settle=0.01)
    trimmer.call_ended()
    await asyncio.wait_for(settled(trimmer), 2)
    assert trim.calls == 1 == trimmer.trims


async def test_trims_are_at_most_one_per_interval() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(0.3, trim=trim, settle=0.01)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < 1.0:  # a call ending every 10 ms for a second
        trimmer.call_ended()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(settled(trimmer), 2)
    # one at once, then one per 0.3 s, and one after the last call: never more
    assert 3 <= trim.calls <= 5, trim.calls


async def test_calls_ending_after_a_trim_get_one_of_their_own_after_the_interval() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(0.2, trim=trim, settle=0.01)
    trimmer.call_ended()
    await asyncio.wait_for(settled(trimmer), 2)
    trimmer.call_ended()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(settled(trimmer), 2)
    assert trim.calls == 2
    assert loop.time() - t0 >= 0.15  # it waited for the interval


async def test_zero_interval_disables_it() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(0, trim=trim, settle=0.0)
    trimmer.call_ended()
    await asyncio.sleep(0.05)
    assert not trimmer.enabled and trimmer._task is None and trim.calls == 0


async def test_no_op_where_the_c_library_is_not_glibc(monkeypatch) -> None:
    def not_glibc(name: str) -> str:
        raise ValueError("unrecognized configuration name")  # musl, macOS

    monkeypatch.setattr(memory.os, "confstr", not_glibc)
    assert glibc_malloc_trim() is None
    trimmer = HeapTrimmer(1.0, settle=0.0)
    assert not trimmer.enabled
    trimmer.call_ended()
    await trimmer.trim_now()
    assert trimmer._task is None and trimmer.trims == 0


async def test_a_failing_trim_never_raises_into_the_caller(caplog) -> None:
    trimmer = HeapTrimmer(0.05, trim=CountingTrim(fail=True), settle=0.0)
    with caplog.at_level(logging.WARNING, logger="vc.memory"):
        trimmer.call_ended()
        await asyncio.wait_for(settled(trimmer), 2)
        await trimmer.trim_now()
    assert trimmer._task is not None and trimmer._task.exception() is None
    assert "malloc_trim failed: trim went wrong" in caplog.text


def test_call_ended_outside_an_event_loop_does_nothing() -> None:
    trimmer = HeapTrimmer(1.0, trim=CountingTrim())
    trimmer.call_ended()
    assert trimmer._task is None


async def test_close_cancels_a_pending_trim() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(1.0, trim=trim, settle=1.0)
    trimmer.call_ended()
    trimmer.close()
    await asyncio.sleep(0.05)
    assert trimmer._task is not None and trimmer._task.cancelled() and trim.calls == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux")
async def test_the_real_trim_runs_and_logs_rss_before_and_after(caplog) -> None:
    if glibc_malloc_trim() is None:
        pytest.skip("not glibc")
    assert rss_mib() is not None and rss_mib() > 0  # type: ignore[operator]
    trimmer = HeapTrimmer(1.0)
    with caplog.at_level(logging.DEBUG, logger="vc.memory"):
        await trimmer.trim_now()
    assert trimmer.trims == 1
    assert "malloc_trim: RSS " in caplog.text and " MiB in " in caplog.text


async def test_the_engine_trims_after_a_call_ends() -> None:
    reg = fake_registry()
    ini = FAKE_STACK + "[server]\nmemory_trim_interval = 30\n"
    engine = Engine(config_from_ini(ini, reg), reg)
    trim = CountingTrim()
    engine.heap_trimmer = HeapTrimmer(engine.config.server.memory_trim_interval, trim=trim,
                                      settle=0.01)
    await engine.start()
    try:
        for n in (1, 2):
            conn = LoopbackConnection()
            task = await run_loopback_call(engine, conn)
            await asyncio.sleep(0.1)
            assert trim.calls == (0 if n == 1 else 1)  # not while the call is up
            conn.caller_hangs_up()
            await asyncio.wait_for(task, 10)
            await conn.stop()
            await asyncio.sleep(0.1)
        # one trim after the first call; the second ended within the 30 s interval: pending
        assert trim.calls == 1
        pending = engine.heap_trimmer._task
        assert pending is not None and not pending.done()
    finally:
        await engine.stop()
    await asyncio.sleep(0)
    assert pending.cancelled() and trim.calls == 1

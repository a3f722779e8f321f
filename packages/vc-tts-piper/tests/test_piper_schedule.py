"""Syntheses start in the order their audio is needed (vc_tts_piper.schedule)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from piper_helpers import profile, provider_context
from vc_tts_piper.local import PiperProvider, PiperSettings
from vc_tts_piper.schedule import DeadlineGate, Playout


class Jobs:
    """Jobs that record the order they ran in; ``hold`` keeps the first one running."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.hold = threading.Event()
        self.started = threading.Event()

    def blocker(self) -> str:
        self.started.set()
        self.hold.wait(10)
        return "blocker"

    def job(self, name: str) -> str:
        self.ran.append(name)
        return name

    async def occupy(self, gate: DeadlineGate) -> asyncio.Task[str]:
        """The blocker, running in one of ``gate``'s slots until ``hold`` is set."""
        task = asyncio.create_task(gate.run(0.0, self.blocker))
        await asyncio.to_thread(self.started.wait, 10)
        return task


async def queued(gate: DeadlineGate, count: int) -> None:
    while gate.waiting < count:
        await asyncio.sleep(0.001)


async def test_waiting_jobs_start_earliest_deadline_first() -> None:
    jobs = Jobs()
    with ThreadPoolExecutor(1) as pool:
        gate = DeadlineGate(pool, 1)
        running = await jobs.occupy(gate)
        tasks = []
        for name, deadline in (("later", 30.0), ("first piece", 10.0), ("next", 20.0),
                               ("also first", 10.0)):
            tasks.append(asyncio.create_task(gate.run(deadline, jobs.job, name)))
            await queued(gate, len(tasks))
        jobs.hold.set()
        assert await running == "blocker"
        assert await asyncio.gather(*tasks) == ["later", "first piece", "next", "also first"]
    # earliest deadline first, ties in order of arrival
    assert jobs.ran == ["first piece", "also first", "next", "later"]


async def test_a_free_slot_is_used_at_once_whatever_the_deadline() -> None:
    jobs = Jobs()
    with ThreadPoolExecutor(2) as pool:
        gate = DeadlineGate(pool, 2)
        a = await jobs.occupy(gate)
        assert await gate.run(1e9, jobs.job, "far off") == "far off"  # the second slot
        jobs.hold.set()
        await a


async def test_a_cancelled_waiter_gives_up_its_place_and_no_slot_is_lost() -> None:
    jobs = Jobs()
    with ThreadPoolExecutor(1) as pool:
        gate = DeadlineGate(pool, 1)
        running = await jobs.occupy(gate)
        gone = asyncio.create_task(gate.run(1.0, jobs.job, "barged in"))
        await queued(gate, 1)
        kept = asyncio.create_task(gate.run(2.0, jobs.job, "kept"))
        await queued(gate, 2)
        gone.cancel()
        jobs.hold.set()
        await running
        assert await kept == "kept"
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert jobs.ran == ["kept"]
        for i in range(3):  # the one slot is free again, every time
            assert await gate.run(0.0, jobs.job, f"after {i}") == f"after {i}"


async def test_a_slot_is_held_until_the_thread_finishes_even_if_nobody_waits() -> None:
    jobs = Jobs()
    with ThreadPoolExecutor(2) as pool:
        gate = DeadlineGate(pool, 1)
        abandoned = await jobs.occupy(gate)
        abandoned.cancel()  # barge-in: the caller stops waiting, the thread runs on
        nxt = asyncio.create_task(gate.run(0.0, jobs.job, "next"))
        await queued(gate, 1)
        await asyncio.sleep(0.05)
        assert jobs.ran == []  # still the blocker's slot
        jobs.hold.set()
        assert await nxt == "next"


async def test_a_failing_job_frees_its_slot() -> None:
    def fail() -> None:
        raise ValueError("bad piece")

    with ThreadPoolExecutor(1) as pool:
        gate = DeadlineGate(pool, 1)
        with pytest.raises(ValueError, match="bad piece"):
            await gate.run(0.0, fail)
        assert await gate.run(0.0, str, 5) == "5"


def test_playout_needs_a_reply_s_next_piece_when_its_audio_has_played() -> None:
    p = Playout()
    assert p.needed_at("reply-1", now=100.0) == 100.0  # nothing sent: now
    p.sent("reply-1", 1.5, now=100.0)
    p.sent("reply-1", 0.5, now=100.2)
    assert p.needed_at("reply-1", now=100.4) == pytest.approx(102.0)
    assert p.needed_at("reply-1", now=103.0) == 103.0  # played out: now
    assert p.needed_at("reply-2", now=100.4) == 100.4  # another reply's first piece: now
    p.reset()  # the caller interrupted: what was sent is not playing any more
    assert p.needed_at("reply-1", now=100.4) == 100.4


async def test_a_first_piece_overtakes_a_later_piece_on_the_real_voice() -> None:
    context = provider_context(profile())
    observed: list[tuple[str, float, dict[str, str]]] = []
    context.observe = lambda name, value, labels: observed.append((name, value, labels))
    provider = PiperProvider(PiperSettings(parallel=1), context)
    await provider.start()
    observed.clear()  # the warm-up synthesis
    try:
        voice = provider.voice_for(profile())
        done: list[str] = []

        async def say(name: str, text: str, needed_at: float | None) -> Any:
            pcm = await provider.synthesize_piece(voice, text, needed_at)
            done.append(name)
            return pcm

        busy = asyncio.create_task(say("busy", "The train leaves from the main station in "
                                               "ten minutes, so please hurry.", None))
        await asyncio.sleep(0.01)
        later = asyncio.create_task(say("later piece", "Your package will arrive on Friday.",
                                        time.monotonic() + 3.0))
        await asyncio.sleep(0.01)
        first = asyncio.create_task(say("first piece", "Hello there.", None))
        pcms = await asyncio.gather(busy, later, first)
        assert all(len(p) > 4000 for p in pcms)
        assert done == ["busy", "first piece", "later piece"]
        # Waits of pieces needed at once are published: the busy one's none, the first piece's
        # while "busy" ran; the later piece is not counted (its audio was not needed yet).
        assert [n for n, _, labels in observed] == ["tts_queue_seconds"] * 2
        assert all(labels == {"stage": "tts_queue"} for *_, labels in observed)
        assert observed[0][1] < observed[1][1]
    finally:
        await provider.stop()

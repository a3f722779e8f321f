"""vc.call.PlayoutPacer: the absolute 20 ms clock transports send their audio on (fake clock)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vc.call import PlayoutBuffer, PlayoutPacer

FRAME = bytes(320)  # 20 ms at 8 kHz


def frame(n: int) -> bytes:
    return bytes([n]) * 320


class FakeClock:
    """Time moves only when the pacer sleeps: by the delay asked for, plus ``oversleep``."""

    def __init__(self, oversleep: float = 0.0) -> None:
        self.now = 100.0
        self.oversleep = oversleep
        self.stalls: dict[int, float] = {}  # sleep number -> extra seconds lost in it
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps += 1
        self.now += delay + self.oversleep + self.stalls.pop(self.sleeps, 0.0)
        await asyncio.sleep(0)


class Wire:
    """What the transport sent, with the fake time of each send; stops the pacer after ``n``."""

    def __init__(self, clock: FakeClock, n: int) -> None:
        self.clock = clock
        self.n = n
        self.sent: list[tuple[float, bytes | None]] = []
        self.marks: list[tuple[float, str, int]] = []  # (time, name, frames sent before it)
        self.pacer: PlayoutPacer | None = None

    def send(self, item: bytes | None) -> None:
        self.sent.append((self.clock(), item))
        if len(self.sent) >= self.n and self.pacer is not None:
            self.pacer.stop()

    def mark(self, name: str) -> None:
        self.marks.append((self.clock(), name, len(self.sent)))


async def run(playout: PlayoutBuffer, clock: FakeClock, n: int, **kw: Any) -> Wire:
    wire = Wire(clock, n)
    wire.pacer = PlayoutPacer(playout, wire.send, wire.mark, clock=clock, sleep=clock.sleep, **kw)
    await asyncio.wait_for(wire.pacer.run(), 5)
    return wire


def queue(playout: PlayoutBuffer, *items: bytes | str) -> None:
    for item in items:
        if isinstance(item, str):
            playout.mark(item)
        else:
            playout._items.append(item)  # past write()'s back-pressure: a test queues freely
            playout._frames += 1


async def test_one_frame_per_tick_on_the_absolute_clock_then_silence() -> None:
    clock = FakeClock()
    playout = PlayoutBuffer(8000)
    queue(playout, frame(1), frame(2), frame(3))
    wire = await run(playout, clock, 5)
    assert [item for _, item in wire.sent] == [frame(1), frame(2), frame(3), None, None]
    assert [round(t - 100.0, 6) for t, _ in wire.sent] == [0.02, 0.04, 0.06, 0.08, 0.1]


async def test_oversleeping_never_accumulates() -> None:
    # Every sleep wakes 3 ms late: tick n still goes out at start + n * 20 ms + 3 ms.
    clock = FakeClock(oversleep=0.003)
    wire = await run(PlayoutBuffer(8000), clock, 500)
    assert wire.sent[-1][0] - 100.0 == pytest.approx(500 * 0.02 + 0.003, abs=1e-6)
    assert all(abs(t - 100.0 - (i + 1) * 0.02) <= 0.003 + 1e-9 for i, (t, _) in enumerate(wire.sent))


async def test_a_short_stall_is_caught_up_back_to_back() -> None:
    clock = FakeClock()
    clock.stalls[3] = 0.065  # the third sleep comes back 65 ms late: 3 ticks overdue
    playout = PlayoutBuffer(8000)
    queue(playout, *(frame(i) for i in range(10)))
    wire = await run(playout, clock, 10)
    times = [round(t - 100.0, 6) for t, _ in wire.sent]
    assert times[:2] == [0.02, 0.04]
    assert times[2:6] == [0.125] * 4  # ticks 3..6 were due by then: sent at once
    assert times[6:] == [0.14, 0.16, 0.18, 0.2]  # and back on the original grid
    assert [item for _, item in wire.sent] == [frame(i) for i in range(10)]  # nothing lost
    assert wire.pacer is not None and wire.pacer.skipped_ticks == 0


async def test_a_long_stall_skips_ahead_and_says_so() -> None:
    clock = FakeClock()
    clock.stalls[2] = 0.5  # half a second lost: 25 ticks
    skips: list[tuple[int, float]] = []
    wire = await run(PlayoutBuffer(8000), clock, 4, max_burst=5,
                     on_skip=lambda n, late: skips.append((n, late)))
    # Tick 2 ran at 0.54 s, when tick 3 was 0.48 s (24 ticks) overdue: those are skipped.
    assert len(skips) == 1 and skips[0][0] == 24 and skips[0][1] == pytest.approx(0.48)
    times = [round(t - 100.0, 6) for t, _ in wire.sent]
    # No burst of 25 frames: the tick due now, then the grid from there on.
    assert times == [0.02, 0.54, 0.54, 0.56]
    assert wire.pacer is not None and wire.pacer.skipped_ticks == 24


async def test_marks_are_reported_when_the_audio_before_them_was_sent() -> None:
    clock = FakeClock()
    playout = PlayoutBuffer(8000)
    queue(playout, frame(1), "a", frame(2), frame(3), "b", "c")
    wire = await run(playout, clock, 4)
    # "a" at the tick after frame 1 (before frame 2 goes), "b" and "c" once frame 3 was sent.
    assert [(name, before) for _, name, before in wire.marks] == [("a", 1), ("b", 3), ("c", 3)]
    assert [item for _, item in wire.sent] == [frame(1), frame(2), frame(3), None]


async def test_held_playout_sends_silence_and_release_plays_on() -> None:
    clock = FakeClock()
    playout = PlayoutBuffer(8000)
    queue(playout, frame(1), frame(2))
    wire = Wire(clock, 4)
    sent: list[bytes | None] = []

    def send(item: bytes | None) -> None:
        sent.append(item)
        if len(sent) == 1:
            playout.hold()
        if len(sent) == 3:
            playout.release()
        wire.send(item)

    wire.pacer = PlayoutPacer(playout, send, clock=clock, sleep=clock.sleep)
    await asyncio.wait_for(wire.pacer.run(), 5)
    assert sent == [frame(1), None, None, frame(2)]


async def test_async_callbacks_and_a_failing_tick_do_not_stop_the_clock() -> None:
    clock = FakeClock()
    playout = PlayoutBuffer(8000)
    queue(playout, frame(1), "m", frame(2), frame(3))
    got: list[object] = []
    pacer: PlayoutPacer

    async def send(item: bytes | None) -> None:
        got.append(item)
        if item == frame(2):
            raise ConnectionError("the socket hiccuped")
        if len(got) == 4:
            pacer.stop()

    async def on_mark(name: str) -> None:
        got.append(name)

    pacer = PlayoutPacer(playout, send, on_mark, clock=clock, sleep=clock.sleep)
    await asyncio.wait_for(pacer.run(), 5)
    assert got == [frame(1), "m", frame(2), frame(3)]
    assert pacer.ticks == 3


async def test_a_new_frame_length_counts_from_the_last_tick() -> None:
    clock = FakeClock()
    wire = Wire(clock, 6)
    pacer = PlayoutPacer(PlayoutBuffer(8000), lambda item: None, clock=clock, sleep=clock.sleep)

    def send(item: bytes | None) -> None:
        wire.send(item)
        if len(wire.sent) == 3:
            pacer.frame_ms = 30  # a re-INVITE with ptime 30
        if len(wire.sent) == 6:
            pacer.stop()

    pacer._send = send
    await asyncio.wait_for(pacer.run(), 5)
    times = [round(t - 100.0, 6) for t, _ in wire.sent]
    assert times == [0.02, 0.04, 0.06, 0.09, 0.12, 0.15]


async def test_stop_ends_run_in_real_time_too() -> None:
    playout = PlayoutBuffer(8000)
    sent: list[bytes | None] = []
    pacer = PlayoutPacer(playout, sent.append)
    task = asyncio.create_task(pacer.run())
    await asyncio.sleep(0.2)
    pacer.stop()
    await asyncio.wait_for(task, 1)
    assert not pacer.running
    assert 3 <= len(sent) <= 15  # ~10 ticks in 0.2 s; loose: the machine may be busy

"""The playout buffer between core and a transport: back-pressure, marks, clear, hold/release."""

from __future__ import annotations

import asyncio

from vc.call import Mark, PlayoutBuffer


def frame(n: int) -> bytes:
    return bytes([n]) * 320  # 20 ms at 8 kHz


async def test_frames_and_marks_come_out_in_order() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=200)
    await buf.write(frame(1) + frame(2))
    buf.mark("a")
    assert [buf.read(), buf.read(), buf.read(), buf.read()] == [frame(1), frame(2), Mark("a"), None]
    assert buf.frames_played == 2


async def test_write_waits_while_the_transport_is_behind() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=40)
    writer = asyncio.create_task(buf.write(b"".join(frame(i) for i in range(5))))
    await asyncio.sleep(0.01)
    assert not writer.done() and buf.queued_frames == 2
    for _ in range(3):
        buf.read()
        await asyncio.sleep(0)
    await asyncio.wait_for(writer, 1)
    assert buf.queued_frames == 2


async def test_a_partial_frame_is_padded_at_a_mark() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=200)
    await buf.write(frame(7)[:100])
    buf.mark("end")
    assert buf.read() == frame(7)[:100] + bytes(220)
    assert buf.read() == Mark("end")


async def test_hold_stops_reading_and_release_plays_on_from_the_same_frame() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=200)
    await buf.write(frame(1) + frame(2))
    assert buf.read() == frame(1)
    assert buf.hold() == [] and buf.held
    assert buf.read() is None
    buf.release()
    assert buf.read() == frame(2)


async def test_hold_puts_back_what_the_caller_has_not_heard_marks_included() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=200)
    await buf.write(frame(1) + frame(2))
    buf.mark("m1")
    await buf.write(frame(3) + frame(4))
    got = [buf.read() for _ in range(5)]
    assert got == [frame(1), frame(2), Mark("m1"), frame(3), frame(4)]
    # The transport's last 60 ms (three frames) never reached the caller.
    assert buf.hold(rewind_ms=60) == [Mark("m1")]
    assert buf.frames_played == 1 and buf.queued_frames == 3
    buf.release()
    rest = [buf.read() for _ in range(5)]
    assert rest == [frame(2), Mark("m1"), frame(3), frame(4), None]


async def test_hold_cannot_put_back_more_than_was_read() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=200)
    await buf.write(frame(1))
    buf.read()
    buf.hold(rewind_ms=1000)
    buf.release()
    assert buf.read() == frame(1) and buf.read() is None


async def test_clear_drops_held_audio_and_releases_the_hold() -> None:
    buf = PlayoutBuffer(8000, max_ahead_ms=200)
    await buf.write(frame(1) + frame(2))
    buf.mark("m")
    assert buf.read() == frame(1)
    buf.hold()
    assert buf.clear() == [Mark("m")]
    assert not buf.held and buf.is_idle()
    # What was read before the clear cannot come back.
    buf.hold(rewind_ms=100)
    buf.release()
    assert buf.read() is None
    await buf.write(frame(9))
    assert buf.read() == frame(9)

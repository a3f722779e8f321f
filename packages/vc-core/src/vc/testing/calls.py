"""Drive real calls through a real pipeline in tests, without a telephony transport.

:class:`LoopbackConnection` is a CallConnection whose far end is the test: a "microphone"
task sends caller audio every 20 ms (silence unless the test speaks, exactly like a phone),
and a "speaker" task drains the bot's playout buffer on an absolute 20 ms clock, recording
every frame with its time. :func:`speech` makes real spoken audio with espeak-ng.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections import deque
from typing import Any

from vc.audio import resample, rms
from vc.call import CallConnection, CallInfo, Mark


def speech(text: str, sample_rate: int = 8000, voice: str = "en-us", wpm: int = 165) -> bytes:
    """``text`` spoken by espeak-ng, as PCM16 mono at ``sample_rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(wpm), "--stdout", text],
                         check=True, capture_output=True).stdout
    # espeak-ng writes a 44-byte RIFF header at 22050 Hz, mono, 16-bit.
    rate = int.from_bytes(wav[24:28], "little")
    data = wav.find(b"data")
    pcm = wav[data + 8 :] if data >= 0 else wav[44:]
    return resample(pcm[: len(pcm) // 2 * 2], rate, sample_rate)


class LoopbackConnection(CallConnection):
    """A call whose caller is the test."""

    max_ahead_ms = 60

    def __init__(self, info: CallInfo | None = None, sample_rate: int = 8000,
                 mark_delay: float = 0.0) -> None:
        self.sample_rate = sample_rate
        super().__init__(info or CallInfo(call_id=f"test-{uuid.uuid4().hex[:8]}", transport="loopback",
                                          from_="+15550001111", to="+15550002222"))
        self.mark_delay = mark_delay
        self.frame_bytes = sample_rate // 50 * 2
        self.bot_frames: list[tuple[float, bytes]] = []  # (time, pcm) of non-silent bot audio
        self.bot_audio = bytearray()
        self.caller_audio = bytearray()
        self.marks: list[tuple[float, str]] = []
        self.clears: list[float] = []
        self.pauses: list[float] = []  # when core paused the bot (the caller may be talking)
        self.hangups: list[float] = []
        self.transfers: list[str] = []
        self.dtmf_sent: list[str] = []
        self._pending: deque[bytes] = deque()
        self._tasks: list[asyncio.Task[Any]] = []
        self.speech_started: list[float] = []
        self.speech_ended: list[float] = []

    # -- CallConnection -----------------------------------------------------------------

    async def clear(self) -> None:
        self.clears.append(time.monotonic())

    async def pause(self) -> None:
        self.pauses.append(time.monotonic())
        await super().pause()

    async def hangup(self) -> None:
        self.hangups.append(time.monotonic())

    async def transfer(self, target: str) -> None:
        self.transfers.append(target)

    async def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    # -- the caller's side ----------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._microphone()), asyncio.create_task(self._speaker())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def say(self, pcm: bytes) -> float:
        """Queue caller speech; returns when (monotonic) it will have finished playing."""
        fb = self.frame_bytes
        pcm = pcm + bytes(-len(pcm) % fb)
        backlog = len(self._pending) * 0.02
        for i in range(0, len(pcm), fb):
            self._pending.append(pcm[i : i + fb])
        start = time.monotonic() + backlog
        self.speech_started.append(start)
        self.speech_ended.append(start + len(pcm) / 2 / self.sample_rate)
        return self.speech_ended[-1]

    def press(self, digit: str) -> None:
        assert self.events is not None
        self.events.dtmf(digit)

    def caller_hangs_up(self) -> None:
        assert self.events is not None
        self.events.hangup("caller hung up")

    async def _microphone(self) -> None:
        silence = bytes(self.frame_bytes)
        start = time.monotonic()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            frame = self._pending.popleft() if self._pending else silence
            self.caller_audio += frame
            if self.events is not None:
                self.events.audio(frame)

    async def _speaker(self) -> None:
        start = time.monotonic()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            item = self.playout.read()
            while isinstance(item, Mark):
                self.marks.append((time.monotonic(), item.name))
                self._ack(item.name)
                item = self.playout.read()
            if item is None:
                self.bot_audio += bytes(self.frame_bytes)
                continue
            self.bot_audio += item
            if rms(item) > 0.001:
                self.bot_frames.append((time.monotonic(), item))

    def _ack(self, name: str) -> None:
        if self.events is None:
            return
        if self.mark_delay:
            asyncio.get_running_loop().call_later(self.mark_delay, self.events.mark_played, name)
        else:
            self.events.mark_played(name)

    # -- waiting ---------------------------------------------------------------------------

    def bot_audio_after(self, t: float) -> list[tuple[float, bytes]]:
        return [(ts, f) for ts, f in self.bot_frames if ts >= t]

    async def wait_for_bot_audio(self, after: float, timeout: float = 30.0) -> float:
        """Time of the first bot audio frame heard after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames = self.bot_audio_after(after)
            if frames:
                return frames[0][0]
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no bot audio within {timeout}s")

    async def wait_for_hangup(self, timeout: float = 30.0) -> bool:
        """Wait until the bot hangs up; False if it did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.hangups and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return bool(self.hangups)

    async def wait_for_bot_silence(self, quiet: float = 0.6, timeout: float = 30.0) -> float:
        """Wait until the bot has been silent for ``quiet`` seconds; returns its last audio time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.bot_frames[-1][0] if self.bot_frames else 0.0
            if time.monotonic() - last >= quiet and self.playout.is_idle():
                return last
            await asyncio.sleep(0.02)
        raise TimeoutError(f"bot still speaking after {timeout}s")


async def run_loopback_call(engine: Any, connection: LoopbackConnection) -> asyncio.Task[str]:
    """Start a call on ``engine`` with ``connection`` and the caller's audio clock."""
    task = asyncio.create_task(engine.run_call(connection))
    while connection.events is None and not task.done():
        await asyncio.sleep(0.001)
    connection.start()
    return task

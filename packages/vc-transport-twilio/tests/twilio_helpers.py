"""Helpers of the vc-transport-twilio tests: recording observer, speech, vc + simulated Twilio."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import numpy as np
from vc_transport_twilio.simulator import SimulatedCall, TwilioCloud
from vc_transport_twilio.testing import RunningVC, serve_vc

from vc.call import CallInfo
from vc.hookspecs import hookimpl
from vc.providers import Observer
from vc.testing import FAKE_STACK, fake_registry
from vc.testing.calls import speech

#: The fake stack answering through Twilio. The fake STT "hears" its script, one line per
#: utterance (real speech is needed: Silero VAD decides what an utterance is).
BASE_INI = (
    FAKE_STACK.replace("transports =", "transports = twilio") + "[server]\ndrain_timeout = 2\n"
)
QUESTION_TRANSCRIPT = "tell me a long story about the sea and the ships that sail upon it"
MS_PER_CHAR = 40


def ini(script: str = QUESTION_TRANSCRIPT, ms_per_char: int = MS_PER_CHAR, extra: str = "") -> str:
    return (
        BASE_INI
        + f"""
[stt.fake]
script = {script}
[tts.fake]
ms_per_char = {ms_per_char}
{extra}
"""
    )


def answer_text(transcript: str) -> str:
    """What the fake LLM answers to ``transcript``."""
    return f"You said: {transcript.strip().rstrip('.')}."


class Recorder(Observer):
    """Every observer callback, with its time, for all calls of every server in the session."""

    name = "test-recorder"
    events: ClassVar[list[tuple[float, str, str, dict[str, Any]]]] = []

    def call_started(self, info: CallInfo, profile: str) -> None:
        self.events.append(
            (time.monotonic(), info.call_id, "call_started", {"profile": profile, **info.as_dict()})
        )

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        self.events.append((time.monotonic(), info.call_id, "call_ended", {"outcome": outcome}))

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), info.call_id, name, dict(data)))

    @classmethod
    def of(cls, call_id: str, name: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [(t, d) for t, c, n, d in cls.events if c == call_id and (name is None or n == name)]


class _RecorderPlugin:
    @hookimpl
    def register_observers(self, register: Any) -> None:
        register(Recorder)


def registry() -> Any:
    return fake_registry(extra=[("test-recorder", _RecorderPlugin())])


@functools.lru_cache(maxsize=32)
def say_audio(text: str) -> bytes:
    """``text`` spoken by espeak-ng, PCM16 8 kHz, with a little silence after it."""
    return speech(text, 8000) + bytes(1600)


@contextlib.asynccontextmanager
async def twilio_vc(ini_text: str, **twilio: Any) -> AsyncIterator[tuple[TwilioCloud, RunningVC]]:
    async with (
        TwilioCloud("http://127.0.0.1:1") as cloud,
        serve_vc(ini_text, cloud, registry(), **twilio) as vc,
    ):
        yield cloud, vc


async def after_greeting(call: SimulatedCall) -> None:
    """Wait for the greeting to be heard completely (its mark echoed)."""
    await call.wait_for(
        lambda: [n for _, n in call.echoed if n.startswith("greeting")], what="greeting mark echo"
    )


def dominant_frequency(pcm: bytes, rate: int = 8000) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])

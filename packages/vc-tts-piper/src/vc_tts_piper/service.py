"""What both Piper services share: clause streaming, text preparation, per-request resampling.

Text reaches ``run_tts`` already prepared (:meth:`ClauseStreamingTTSService.prepare_text`,
installed as a pipecat text transform): normalised for the call's language and stripped of
what the voice cannot say.

Each ``run_tts`` request gets its own streaming resampler (:class:`vc.audio.StreamResampler`):
its filter state runs across the request's chunks (no clicks at chunk boundaries) and is
flushed at the end of the request, so no request's tail is lost and none leaks into the next
one, interrupted or not.

Each request's audio starts at its first sound: Piper voices open every utterance with 20-65 ms
of near-silence, which the caller waited through before the first word of every reply
(:func:`sound_onset`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import numpy as np
from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from vc.audio import StreamResampler
from vc.pipecat_adapter import use_clause_aggregator
from vc.turns import late_breaks, phrase_breaks
from vc_tts_piper.normalize import normalize
from vc_tts_piper.prefetch import FirstPiece

#: A sample louder than this (-54 dBFS) is sound; quieter ones at the start are dropped.
ONSET_PEAK = 64
#: What is kept before the first sound (its soft beginning).
ONSET_MARGIN_S = 0.01
#: The most leading silence dropped: a longer one is meant (and the voice is not Piper's usual).
MAX_TRIM_S = 0.2


def sound_onset(pcm: bytes, rate: int) -> int | None:
    """Byte offset ``ONSET_MARGIN_S`` before the first sound in PCM16 ``pcm``; None if silent."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > ONSET_PEAK)
    if not len(loud):
        return None
    return 2 * max(0, int(loud[0]) - int(ONSET_MARGIN_S * rate))


def without_leading_silence(pcm: bytes, rate: int) -> bytes:
    """A whole clip (the greeting) from its first sound (dropping at most ``MAX_TRIM_S``)."""
    start = sound_onset(pcm, rate) or 0
    return pcm[min(start, 2 * int(MAX_TRIM_S * rate)):]


async def from_first_sound(chunks: AsyncIterator[bytes], rate: int) -> AsyncIterator[bytes]:
    """``chunks`` without the silence before their first sound (at most ``MAX_TRIM_S``)."""
    budget = 2 * int(MAX_TRIM_S * rate)
    async for chunk in chunks:
        if budget > 0:
            start = sound_onset(chunk, rate)
            cut = min(len(chunk) if start is None else start, budget)
            budget = 0 if start is not None else budget - cut
            chunk = chunk[cut:]
        if chunk:
            yield chunk


class ClauseStreamingTTSService(TTSService):
    """A TTSService that speaks clause by clause and normalises text for its language."""

    def __init__(
        self,
        *,
        voice: str,
        language: str,
        model: str | None = None,
        min_clause_words: int = 4,
        first_piece_words: int = 0,
        first_piece_late_words: int = 0,
        normalize_text: bool = True,
        speakable: Callable[[str], str] | None = None,
        prefetch: bool = False,
        observe: Callable[[str, float, dict[str, str]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=model, voice=voice, language=language),
            # Text is prepared as a pipecat transform: text with nothing to say (emoji only)
            # never opens an audio context, and the LLM context keeps the original text.
            text_transforms=[("*", self._transform)],
            # A call must outlive a Piper outage: failed requests are reported (ErrorFrame)
            # but never write the service off for the rest of the call.
            max_consecutive_zero_audio_contexts=0,
            **kwargs,
        )
        self._language = language
        self._normalize_text = normalize_text
        self._speakable = speakable
        #: The aggregator cutting this service's text (a fresh copy cuts a held reply alike).
        self.clauses = use_clause_aggregator(
            self, min_clause_words, first_piece_words, phrase_breaks(language),
            late_words=first_piece_late_words, late_breaks=late_breaks(language))
        self._observe = observe
        #: The held reply's first piece, made while the turn is waited out (``prefetch``).
        self.held = FirstPiece(self.clauses.fresh, self.held_piece, self.synthesize_held,
                               self._held_waited)
        self._prefetch = prefetch
        #: What was actually sent to the synthesiser, request by request (diagnostics, tests).
        self.spoken: list[str] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._prefetch:
            await self.held.observe(frame)
        await super().process_frame(frame, direction)

    def held_piece(self, text: str) -> str | None:
        """The first request ``run_tts`` will get for the aggregated ``text`` (None: nothing
        to say). Services that synthesise it in smaller pieces return the first of them."""
        text = self.prepare_text(text.lstrip("\n"))
        return text if self.sayable(text) else None

    async def synthesize_held(self, piece: str, needed_at: float) -> bytes:
        """The audio of ``piece`` (a held reply's first), at the synthesiser's rate."""
        raise NotImplementedError  # services constructed with prefetch=True implement it

    def _held_waited(self, seconds: float) -> None:
        """Publish how long a released reply's first request waited for its held piece
        (stage ``tts_held_wait``: 0 when it was ready; longer when it was still being made)."""
        if self._observe is not None:
            self._observe("tts_held_wait_seconds", seconds, {"stage": "tts_held_wait"})

    async def _transform(self, text: str, text_type: str) -> str:
        return self.prepare_text(text)

    def prepare_text(self, text: str) -> str:
        """The text to synthesise: normalised for the call's language, speakable by the voice."""
        if self._normalize_text:
            text = normalize(text, self._language)
        if self._speakable is not None:
            text = self._speakable(text)
        return text.strip()

    @staticmethod
    def sayable(text: str) -> bool:
        return any(c.isalnum() for c in text)

    async def stream_pcm(
        self, pcm: AsyncIterator[bytes], in_rate: int, context_id: str
    ) -> AsyncGenerator[Frame, None]:
        """PCM16 chunks at ``in_rate`` -> audio frames at the call's rate."""
        resampler = StreamResampler(in_rate, self.sample_rate)

        async def resampled() -> AsyncIterator[bytes]:
            carry = b""
            async for chunk in pcm:
                chunk = carry + chunk
                carry = chunk[len(chunk) & ~1 :]
                out = resampler.process(chunk[: len(chunk) & ~1])
                if out:
                    yield out
            tail = resampler.process(b"", last=True)
            if tail:
                yield tail

        async for audio in from_first_sound(resampled(), self.sample_rate):
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)

"""What both Piper services share: clause streaming, text preparation, per-request resampling.

Text reaches ``run_tts`` already prepared (:meth:`ClauseStreamingTTSService.prepare_text`,
installed as a pipecat text transform): normalised for the call's language and stripped of
what the voice cannot say.

Each ``run_tts`` request gets its own streaming soxr resampler (:class:`vc.audio.StreamResampler`):
its filter state runs across the request's chunks (no clicks at chunk boundaries) and is
flushed at the end of the request, so no request's tail is lost and none leaks into the next
one, interrupted or not.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from vc.audio import StreamResampler
from vc.pipecat_adapter import use_clause_aggregator
from vc.turns import late_breaks, phrase_breaks
from vc_tts_piper.normalize import normalize


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
        use_clause_aggregator(self, min_clause_words, first_piece_words, phrase_breaks(language),
                              late_words=first_piece_late_words,
                              late_breaks=late_breaks(language))
        #: What was actually sent to the synthesiser, request by request (diagnostics, tests).
        self.spoken: list[str] = []

    def can_generate_metrics(self) -> bool:
        return True

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

        async for audio in resampled():
            await self.stop_ttfb_metrics()
            yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)

"""The one place vc and its plugins use pipecat (1.14) beyond its public API.

Everything else - core and every plugin - uses pipecat's public classes, methods, frames and
events only (``tests/test_code_hygiene.py`` fails on a pipecat underscore name anywhere else).
Each function below names what it touches and why no public API does it, and
``tests/test_pipecat_adapter.py`` pins the behaviour vc relies on, so a pipecat release that
changes it fails there, not in a call.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import AsyncIterator
from typing import Any

from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.turns.speculation_gate import GatedFrame, SpeculationGate, SpeculationState
from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from vc.turns import HeldReplyFrame

# -- STT --------------------------------------------------------------------------------------


def stt_user_id(service: STTService) -> str:
    """The user id of the turn being transcribed, which a ``TranscriptionFrame`` carries.

    pipecat's STT service takes it from the VAD frames into ``_user_id``; it has no getter.
    """
    return service._user_id


# -- LLM --------------------------------------------------------------------------------------


def segment_so_far(service: SegmentedSTTService) -> bytes:
    """The audio a segmented STT has buffered for the segment being spoken (pipecat has no
    accessor for ``_audio_buffer``): what it will transcribe if the segment ended now, less
    its trailing silence."""
    return bytes(service._audio_buffer)


async def push_llm_text(service: LLMService, text: str) -> None:
    """Push ``text`` as the LLM's output, the way pipecat's own LLM services do
    (``_push_llm_text``: time-to-first-token metrics, turn-completion filtering)."""
    await service._push_llm_text(text)


class AnnouncingGate(SpeculationGate):
    """pipecat's speculation gate that also tells what it holds: each frame of a speculative
    reply it holds back is announced downstream at once as a :class:`vc.turns.HeldReplyFrame`
    (a system frame, which passes the gate), so a TTS can prepare the reply's first audio
    while the caller's turn is still being waited out."""

    def process(self, frame: Frame, direction: FrameDirection) -> list[GatedFrame]:
        emitted = super().process(frame, direction)
        held = (direction == FrameDirection.DOWNSTREAM
                and self.state == SpeculationState.HOLDING
                and all(f is not frame for f, _ in emitted))
        announced = held_reply_frame(frame) if held else None
        if announced is not None:
            emitted.append((announced, FrameDirection.DOWNSTREAM))
        return emitted


def held_reply_frame(frame: Frame) -> HeldReplyFrame | None:
    """What a held LLM frame tells a TTS: the start, words or end of the held reply."""
    if getattr(frame, "skip_tts", None):
        return None
    if isinstance(frame, LLMFullResponseStartFrame):
        return HeldReplyFrame(start=True)
    if isinstance(frame, LLMTextFrame):
        return HeldReplyFrame(text=frame.text)
    if isinstance(frame, LLMFullResponseEndFrame):
        return HeldReplyFrame(end=True)
    return None


def announce_held_replies(service: LLMService) -> None:
    """Make ``service`` announce the speculative reply it holds (:class:`AnnouncingGate`).
    pipecat's LLM service builds its gate, ``_speculation_gate``, itself and has no hook to
    see what it holds; called before the pipeline starts, while nothing is held."""
    service._speculation_gate = AnnouncingGate(name=str(service._speculation_gate))


# -- input transport ------------------------------------------------------------------------


def queue_input_audio(transport: BaseInputTransport, frame: InputAudioRawFrame) -> bool:
    """Queue caller audio from synchronous code (a transport's datagram callback).

    The public ``push_audio_frame`` is a coroutine: a task per 20 ms frame for every call.
    This does what it does, without the await: nothing is queued before the transport has
    started or while it is paused (False then).
    """
    if transport._audio_task is None or transport._paused:
        return False
    transport._audio_in_queue.put_nowait(frame)
    return True


# -- VAD --------------------------------------------------------------------------------------

_silero_lock = threading.Lock()
_silero: SileroOnnxModel | None = None


def shared_silero_model() -> SileroOnnxModel:
    """A Silero model with its own recurrent state on the process's one ONNX Runtime session.

    ``SileroVADAnalyzer()`` loads a session (~10 MiB) per analyzer; one per call churned that
    much native memory per call. ONNX Runtime allows concurrent ``run`` on one session and the
    model keeps its state in Python attributes, so a shallow copy with fresh state is a model
    of its own.
    """
    global _silero
    with _silero_lock:
        if _silero is None:  # pipecat finds and loads its bundled model file
            _silero = SileroVADAnalyzer()._model
        model = copy.copy(_silero)
    model.reset_states()
    return model


def init_silero_analyzer(
    analyzer: SileroVADAnalyzer, *, sample_rate: int | None, params: VADParams | None
) -> None:
    """``SileroVADAnalyzer.__init__`` on the shared session instead of a new one."""
    VADAnalyzer.__init__(analyzer, sample_rate=sample_rate, params=params)
    analyzer._model = shared_silero_model()
    analyzer._windows_since_reset = 0
    analyzer._low_confidence_windows = 0


# -- TTS --------------------------------------------------------------------------------------


def use_clause_aggregator(service: TTSService, min_words: int, first_words: int = 0,
                          first_breaks: frozenset[str] = frozenset(), *, late_words: int = 0,
                          late_breaks: frozenset[str] = frozenset()) -> ClauseAggregator:
    """Make ``service`` cut its text into clauses (:class:`ClauseAggregator`), keeping its
    aggregation mode and language; returns the aggregator. pipecat's TTS service takes no
    aggregator argument since 1.x (only ``text_aggregation_mode``); its aggregator is
    ``_text_aggregator``."""
    service._text_aggregator = aggregator = ClauseAggregator(
        aggregation_type=service._text_aggregation_mode,
        language=service._text_aggregator.language,
        min_words=min_words,
        first_words=first_words,
        first_breaks=first_breaks,
        late_words=late_words,
        late_breaks=late_breaks,
    )
    return aggregator


CLAUSE_PUNCTUATION = ",;:—"


def count_words(text: str) -> int:
    """Words as a listener counts them: "10:30'da" and "1,000" are one word each."""
    return sum(1 for token in text.split() if any(c.isalnum() for c in token))


class ClauseAggregator(SimpleTextAggregator):
    """pipecat's sentence aggregation (abbreviations and decimals included) plus a break at
    ``,`` ``;`` ``:`` ``—`` (and a spaced ``-``/``–``) once the pending clause has ``min_words``
    words, so speech starts after the first clause rather than the first sentence. A comma
    between digits (``1,000``) never splits: a break needs whitespace after the punctuation.

    It extends pipecat's ``SimpleTextAggregator`` from the inside (its pending ``_text``, its
    sentence lookahead): pipecat has no public hook for another break rule.
    """

    def __init__(self, *, min_words: int = 4, max_words: int = 40, first_words: int = 0,
                 first_breaks: frozenset[str] = frozenset(), late_words: int = 0,
                 late_breaks: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_words = min_words
        self.max_words = max_words
        #: A reply's first piece also ends before a word of ``first_breaks`` ("and", "to",
        #: "because") once it has ``first_words`` words: its first audio comes sooner.
        self.first_words = first_words
        self.first_breaks = first_breaks
        #: ... and before a word of ``late_breaks`` ("to", "of", "the") once it has
        #: ``late_words`` words: a long first sentence with no phrase break is not waited for.
        self.late_words = late_words
        self.late_breaks = late_breaks
        self._first = True

    def fresh(self) -> ClauseAggregator:
        """A new aggregator with the same settings and nothing pending: it cuts the same
        text into the same pieces."""
        return ClauseAggregator(
            aggregation_type=self.aggregation_type, language=self.language,
            min_words=self.min_words, max_words=self.max_words, first_words=self.first_words,
            first_breaks=self.first_breaks, late_words=self.late_words,
            late_breaks=self.late_breaks)

    async def flush(self) -> Aggregation | None:
        self._first = True
        return await super().flush()

    async def reset(self) -> None:
        self._first = True
        await super().reset()

    async def handle_interruption(self) -> None:
        self._first = True
        await super().handle_interruption()

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self._aggregation_type == TextType.TOKEN:
            async for a in super().aggregate(text):
                yield a
            return
        for char in text:
            self._text += char
            sentence = await self._check_sentence_with_lookahead(char)
            if sentence is not None:
                self._first = False
                yield sentence
                continue
            clause = self._check_clause(char) or self._check_first_piece(char)
            if clause is not None:
                self._first = False
                yield clause

    def _check_first_piece(self, char: str) -> Aggregation | None:
        if not (self._first and char.isspace()) or self._sentence_pending():
            return None
        words = self._text.split()
        if not words or not self._cuts_before(words[-1].lower(), len(words) - 1):
            return None
        cut = self._text.rstrip().rfind(words[-1])
        piece, self._text = self._text[:cut], self._text[cut:]
        return Aggregation(text=piece.strip(), type=TextType.SENTENCE)

    def _cuts_before(self, word: str, words_before: int) -> bool:
        """Whether the first piece ends before ``word``, ``words_before`` words into it."""
        if self.first_words and words_before >= self.first_words and word in self.first_breaks:
            return True
        return bool(self.late_words) and words_before >= self.late_words and word in self.late_breaks

    def _sentence_pending(self) -> bool:
        # A sentence-ending candidate waits for its lookahead; don't cut under it.
        return self._lookahead_state.name != "IDLE"

    def _check_clause(self, char: str) -> Aggregation | None:
        if len(self._text) < 2:
            return None
        text = self._text
        # ";" is a sentence candidate to pipecat, which rarely accepts it; it is a clause to us.
        semicolon = char.isspace() and text[-2] == ";"
        if self._sentence_pending() and not semicolon:
            return None
        cut = 0
        if char.isspace() and text[-2] in CLAUSE_PUNCTUATION:
            cut = len(text) - 1
        elif text[-2] == "—" and not char.isdigit():
            cut = len(text) - 1
        elif char.isspace() and (text.endswith(" - ") or text.endswith(" – ")):
            cut = len(text) - 1
        elif char.isspace() and count_words(text) >= self.max_words:
            cut = len(text) - 1
        if not cut:
            return None
        clause = text[:cut]
        if count_words(clause) < self.min_words:
            return None
        self._text = text[cut:]
        self._lookahead_state = type(self._lookahead_state).IDLE
        return Aggregation(text=clause.strip(), type=TextType.SENTENCE)

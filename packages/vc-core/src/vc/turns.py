"""When the caller's turn ends: sooner when the words sound finished, later when they do not.

With a fixed silence (``[vad] stop_secs``, 0.7 s) every turn waits the same, and only then is
the utterance transcribed. :class:`AdaptiveTurnEnd` lets the VAD close a *segment* after a
short silence (``[turn] segment_secs``, 0.2 s), so the transcript is being made while the
silence is still being waited out, and then ends the turn after

* ``complete_secs`` of silence (the old ``stop_secs``) when the words so far sound finished, or
* ``incomplete_secs`` when the last word expects more ("... a table for", "... and", "my"):
  a caller pausing mid-sentence is not answered.

Speech that resumes before then continues the same turn: the next segment's transcript is
added to it. The check is on words, per language (:data:`CONTINUATIONS`), so it works the same
on any voice; it does not catch a pause after words that could end a sentence ("I want to
change my flight ... to Tuesday"), which waits ``complete_secs`` as before. An STT may also
say that it wrote the last word for the silence after the speech (Whisper finishing a sentence
cut at a pause: "... a table for it."; :func:`last_word_guessed`): that turn waits
``incomplete_secs`` too.

The words of the latest segment must be in before the turn ends on them: an STT slower than the
silence (Whisper base on Turkish takes over a second a segment on 2 cores) would otherwise end
the turn on the segments before it, and its last words would start a turn of their own. While
the latest speech is being transcribed the turn waits for it, at most the STT's own p99 time to
a transcript (``ttfs_p99_latency``, which pipecat's ``STTMetadataFrame`` announces), so speech
that the STT finds empty still ends the turn.

With ``speculate``, the reply is started as soon as a transcript arrives, while the silence is
still being waited out (pipecat's speculative inference: the LLM answers a provisional copy of
the context, and its :class:`~pipecat.turns.speculation_gate.SpeculationGate` holds the reply
until the turn ends). When the turn ends on the same words the held reply is released, so the
model's prompt and first words were done during the wait; when the caller goes on, the reply
is withdrawn and never heard (its CPU is the price).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    STTMetadataFrame,
    SystemFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_start import BaseUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

from vc.phrases import fold, primary


@dataclass
class SpeechPausedFrame(SystemFrame):
    """Core's VAD: the caller's speech paused (``[turn] early_transcript_secs`` of silence)
    inside a segment. The audio so far is the whole segment if no :class:`SpeechResumedFrame`
    comes before pipecat's ``VADUserStoppedSpeakingFrame``: a segmented STT may transcribe it
    now."""


@dataclass
class SpeechResumedFrame(SystemFrame):
    """Core's VAD: speech again after a :class:`SpeechPausedFrame`, in the same segment."""


@dataclass
class HeldReplyFrame(SystemFrame):
    """Core: words of a reply the LLM service holds back (a speculative reply, started
    before the caller's turn ended), so a TTS may prepare their audio meanwhile.

    ``start`` opens a new held reply (forget any earlier one), ``text`` is its next words as
    the model wrote them, ``end`` says it is complete. The reply itself follows, as ordinary
    LLM text, once the turn ends on the words it answers (``UserStoppedSpeakingFrame``); it
    is dropped unheard on ``EagerEndOfTurnCancelFrame`` or ``InterruptionFrame``."""

    text: str = ""
    start: bool = False
    end: bool = False


#: Words after which a sentence is not over, per primary language: conjunctions,
#: prepositions, articles, possessives, auxiliaries, fillers.
CONTINUATIONS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        and or but so because if that which who whose than then also plus as
        when while until unless although whether
        the a an to for of in on at with from about into by like
        my your our their his her its this these those some any
        is are was were am be been can could would should will shall may might must
        do does did have has had i we you he she they it's i'm not very
        um uh er erm hmm
    """.split()),
    "tr": frozenset("""
        ve veya ya ama fakat ancak çünkü ile için gibi kadar göre diye eğer yani hem ne
        bir bu şu o benim senin bizim sizin onların da de ki ile
        ee ıı şey hani
    """.split()),
}


#: Words a reply's first spoken piece may be cut before (vc.pipecat_adapter.ClauseAggregator's
#: ``first_breaks``): they open a new phrase, so the cut sounds like a breath, not a stumble.
PHRASE_BREAKS: dict[str, frozenset[str]] = {
    "en": frozenset("and but or so because which who when while if then for with by".split()),
    "tr": frozenset("ve ama fakat ancak çünkü veya ki yani".split()),
}


def phrase_breaks(language: str) -> frozenset[str]:
    """The words a reply's first piece in ``language`` may be cut before."""
    return PHRASE_BREAKS.get(primary(language), frozenset())


#: Words a *long* first piece may also be cut before (``late_breaks``): prepositions,
#: articles, "to", "that". The cut is audible as a short pause inside the phrase, a price paid
#: only where the first sentence has gone on for ``late_words`` words without a phrase break
#: (its audio would otherwise wait for all of it). None for Turkish: its postpositions and
#: suffixes close a phrase rather than open one.
LATE_BREAKS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        to of in on at from about into onto over under after before until since during
        than that the a an as like
    """.split()),
}


def late_breaks(language: str) -> frozenset[str]:
    """The words a long first piece in ``language`` may be cut before."""
    return LATE_BREAKS.get(primary(language), frozenset())


#: What a listener says while the bot talks without taking the turn, per primary language.
BACKCHANNELS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        mm hmm mhm mmhmm mm-hmm uh-huh uh huh uhhuh yeah yes yep yup okay ok right sure
        alright oh ah aha i see got it
    """.split()),
    "tr": frozenset("""
        hı hıhı hı-hı evet tamam peki anladım aa ha öyle mi he hee
    """.split()),
}


#: A hum, however it is spelled ("mmm", "hmm", "mhm", "mmhmm"): a listener sound in any language.
HUM = re.compile(r"[hm]*m[hm]*")


def is_backchannel(text: str, language: str) -> bool:
    """Whether ``text`` says nothing that takes the turn: only listener words ("mm-hmm",
    "yeah", "okay", a hum), sounds Whisper writes in brackets ("(coughs)"), or nothing at all.

    Hyphenated sounds count as their parts, as they would written with a space: "mm-mm" and
    "uh-uh" are listener sounds like "mm mm". They can mean "no", but only their pitch tells
    them from "mm-hmm" and "uh-huh", and an STT writes one for the other (tiny.en wrote
    espeak-ng's "Mm-hmm" as "Mm-mm" and "Uh-huh" as "Uh-uh"); a caller who disagrees goes on
    to say more, and that interrupts."""
    words = BACKCHANNELS.get(primary(language), frozenset())
    spoken = re.sub(r"[\(\[\*][^)\]\*]*[\)\]\*]", " ", text).replace("-", " ")
    said = [w for w in (fold(t, language).strip(".,!?;:…\"'") for t in spoken.split()) if w]
    return all(w in words or HUM.fullmatch(w) for w in said)


def continuation_words(language: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The words after which a turn in ``language`` is not over (``extra`` added)."""
    words = CONTINUATIONS.get(primary(language), frozenset())
    return words | {fold(w, language) for w in extra}


def sounds_unfinished(text: str, language: str, words: frozenset[str]) -> bool:
    """Whether ``text`` ends mid-sentence: on a comma, or on a word that expects more."""
    text = text.strip()
    if not text:
        return False
    if text[-1] in ",;:-–—…" or text.endswith(".."):
        return True
    # Whisper ends fragments with a full stop too ("... a table for."): the word decides.
    last = fold(text.split()[-1], language).strip("\"'().?!")
    return last in words


def last_word_guessed(frame: TranscriptionFrame) -> bool:
    """Whether the STT says it wrote the transcript's last word for the silence after the
    speech, not for speech: its ``result`` has a true ``last_word_guessed`` attribute.

    A model that finishes sentences cut at a pause ("... a table for" written as "... a table
    for it.") makes a caller who paused sound finished; an STT that can tell (vc-stt-faster-whisper
    aligns its words to the audio) marks those transcripts, and the turn waits as for words that
    expect more."""
    return getattr(frame.result, "last_word_guessed", False) is True


class AdaptiveTurnEnd(BaseUserTurnStopStrategy):
    """Ends the turn ``complete_secs`` or ``incomplete_secs`` after the speech (see module)."""

    def __init__(
        self,
        *,
        complete_secs: float,
        incomplete_secs: float,
        unfinished: Callable[[str], bool],
        speculate: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.speculate = speculate
        self.complete_secs = complete_secs
        self.incomplete_secs = max(incomplete_secs, complete_secs)
        self._unfinished = unfinished
        self._clock = clock
        self._text = ""
        self._speaking = False
        self._silent_since: float | None = None
        self._timer: asyncio.Task[None] | None = None
        #: The VAD hears something that may be speech (before it confirms a start).
        self._held = False
        #: The reply started on the words so far, held until the turn ends (``speculate``).
        self._speculation: UserTurnSpeculation | None = None
        #: The words are all the caller said: no speech since the last transcript.
        self._heard_all = False
        #: The latest transcript's last word was written for the silence (last_word_guessed).
        self._guessed = False
        #: The STT's p99 seconds from the end of speech to its transcript (STTMetadataFrame).
        self._stt_wait = 0.0
        #: The caller's latest speech has stopped and its transcript has not come yet.
        self._awaiting = False
        #: Turns whose end was put off because the words sounded unfinished (for tests, logs).
        self.deferred = 0
        #: Replies started before the turn ended, and those of them the turn's end kept.
        self.speculations = 0
        self.kept = 0

    async def handle_user_turn_started(self) -> None:
        await self._reset()

    async def handle_user_turn_stopped(self) -> None:
        await self._reset()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._cancel()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, STTMetadataFrame):
            self._stt_wait = frame.ttfs_p99_latency
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking, self._held, self._silent_since = True, False, None
            self._heard_all = False
            await self._cancel()
            await self._withdraw()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            self._silent_since = self._clock() - frame.stop_secs
            self._awaiting = self._stt_wait > 0
            await self._schedule()
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            # The LLM withdrew the reply itself (it wanted a tool: tools do not wait for the
            # turn's end); the turn's end asks again.
            self._speculation = None
        elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._text = f"{self._text} {frame.text.strip()}".strip()
            self._heard_all = True
            self._awaiting = False
            self._guessed = last_word_guessed(frame)
            if not self._speaking and self._silent_since is None:
                self._silent_since = self._clock()  # a transcript without speech: DTMF
            await self._schedule()
        return ProcessFrameResult.CONTINUE

    async def hold(self) -> None:
        """The caller may be talking again (a few voiced windows, before the VAD's
        ``start_secs`` confirms it): do not end the turn while that is decided."""
        self._held = True
        await self._cancel()

    async def release(self) -> None:
        """It was not speech (a click, a breath): the turn may end as it would have."""
        self._held = False
        await self._schedule()

    def wait_for(self, text: str) -> float:
        """Silence that ends a turn whose words so far are ``text`` (and whose latest
        transcript's last word was guessed or not)."""
        unfinished = self._guessed or self._unfinished(text)
        return self.incomplete_secs if unfinished else self.complete_secs

    async def _schedule(self) -> None:
        if self._speaking or self._held or not self._text or self._silent_since is None:
            return
        await self._cancel()
        wait = self.wait_for(self._text)
        if wait > self.complete_secs:
            self.deferred += 1
        if self._awaiting:  # not before the latest speech's words, or the STT's p99 time
            wait = max(wait, self._stt_wait)
        remaining = self._silent_since + wait - self._clock()
        if remaining <= 0:
            await self._end()
            return
        self._timer = self.task_manager.create_task(self._end_after(remaining),
                                                    f"{self}::end_after")
        await self._speculate()

    async def _end_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._timer = None
        await self._end()

    async def _end(self) -> None:
        """End the turn: with the reply already started on these words, or a new one."""
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.text == self._text:
            self.kept += 1
            await self.trigger_user_turn_finalized(confirms_speculation=True)
            return
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()
        await self.trigger_user_turn_stopped()

    async def _speculate(self) -> None:
        """Start the reply to the words so far, unless it is already started on them or
        speech since has not been transcribed yet."""
        if not self.speculate or not self._heard_all or self._awaiting or (
                self._speculation and self._speculation.text == self._text):
            return
        await self._withdraw()
        self._speculation = UserTurnSpeculation(text=self._text)
        self.speculations += 1
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _withdraw(self) -> None:
        """The caller went on: the reply started early is dropped (never heard)."""
        if self._speculation is not None:
            self._speculation = None
            await self.trigger_user_turn_speculation_cancelled()

    async def _cancel(self) -> None:
        if self._timer is not None:
            timer, self._timer = self._timer, None
            await self.task_manager.cancel_task(timer)

    async def _reset(self) -> None:
        self._text = ""
        self._held = self._heard_all = self._guessed = self._awaiting = False
        self._silent_since = None
        await self._cancel()
        await self._withdraw()


class ListeningTurnStart(BaseUserTurnStartStrategy):
    """The caller's turn starts at their speech, except over the bot: there it starts (and
    interrupts the bot) only once they say something that is not a backchannel, or keep
    talking for ``long_secs``. The bot is paused meanwhile (``pause_on_speech``); ``dismissed``
    is told when the sound turned out not to be a turn, so the bot plays on where it stopped.
    """

    def __init__(
        self,
        *,
        backchannel: Callable[[str], bool],
        dismissed: Callable[[], Awaitable[None]],
        long_secs: float = 0.8,
        verdict_secs: float = 0.6,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._backchannel = backchannel
        self._dismissed = dismissed
        self.long_secs = long_secs
        #: After the speech ends, how long its words may take before it counts as no words.
        self.verdict_secs = verdict_secs
        self.bot_speaking = False
        #: Speech over the bot whose verdict is not in yet.
        self.pending = False
        self._timer: asyncio.Task[None] | None = None

    async def handle_user_turn_started(self) -> None:
        await self._settle()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._settle()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            return await self._speech_started()
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self.pending:
            # The words decide now; a sound the STT finds no words in never sends any.
            await self._start_timer(self._no_words(), "no_words")
        elif isinstance(frame, TranscriptionFrame):
            return await self._transcript(frame.text)
        return ProcessFrameResult.CONTINUE

    async def _speech_started(self) -> ProcessFrameResult:
        if not self.bot_speaking:
            await self.trigger_user_turn_started()
            return ProcessFrameResult.STOP
        self.pending = True
        await self._start_timer(self._long_speech(), "long_speech")
        return ProcessFrameResult.CONTINUE

    async def _start_timer(self, coro: Coroutine[None, None, None], name: str) -> None:
        await self._cancel_timer()
        self._timer = self.task_manager.create_task(coro, f"{self}::{name}")

    async def _long_speech(self) -> None:
        await asyncio.sleep(self.long_secs)
        self._timer = None
        if self.pending:
            await self.trigger_user_turn_started()

    async def _no_words(self) -> None:
        await asyncio.sleep(self.verdict_secs)
        self._timer = None
        if self.pending:
            self.pending = False
            await self._dismissed()

    async def _transcript(self, text: str) -> ProcessFrameResult:
        if not self.pending and not self.bot_speaking:
            await self.trigger_user_turn_started()  # a transcript with no speech: DTMF
            return ProcessFrameResult.STOP
        if self._backchannel(text):
            await self._settle()
            await self.trigger_reset_aggregation()
            await self._dismissed()
            return ProcessFrameResult.CONTINUE
        await self.trigger_user_turn_started()
        return ProcessFrameResult.STOP

    async def _settle(self) -> None:
        self.pending = False
        await self._cancel_timer()

    async def _cancel_timer(self) -> None:
        if self._timer is not None:
            timer, self._timer = self._timer, None
            await self.task_manager.cancel_task(timer)

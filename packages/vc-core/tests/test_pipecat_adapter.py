"""What vc relies on in pipecat's internals, pinned (vc.pipecat_adapter).

Each test drives real pipecat objects in a real pipeline where it can, so a pipecat release that
renames or changes what the adapter touches fails here, not in a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserAudioRawFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.utils.time import time_now_iso8601

from vc.llm import StreamingLLMService
from vc.pipecat_adapter import (
    AnnouncingGate,
    ClauseAggregator,
    announce_held_replies,
    init_silero_analyzer,
    push_llm_text,
    queue_input_audio,
    segment_so_far,
    shared_silero_model,
    stt_user_id,
    use_clause_aggregator,
)
from vc.testing.calls import speech
from vc.testing.services import Recorder, ServiceHarness
from vc.turns import HeldReplyFrame

RATE = 16000


def of(recorder: Recorder, cls: type) -> list:
    return [f for _, f in recorder.frames if isinstance(f, cls)]


def chunk(n: int = 320) -> bytes:
    return np.zeros(n, dtype="<i2").tobytes()


class EchoUserSTT(STTService):
    """A transcript per audio chunk, carrying the user id the adapter reads."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        yield TranscriptionFrame("heard", stt_user_id(self), time_now_iso8601())


async def test_stt_user_id_is_the_user_of_the_audio_being_transcribed() -> None:
    async with ServiceHarness(EchoUserSTT(), RATE) as h:
        await h.task.queue_frame(UserAudioRawFrame(audio=chunk(), sample_rate=RATE, num_channels=1,
                                                   user_id="caller-7"))
        await h.task.queue_frame(InputAudioRawFrame(audio=chunk(), sample_rate=RATE, num_channels=1))
        await h.wait_for(lambda: len(of(h.down, TranscriptionFrame)) >= 2, 10)
        assert [f.user_id for f in of(h.down, TranscriptionFrame)][:2] == ["caller-7", ""]


class SegmentSTT(SegmentedSTTService):
    """Remembers each segment it is asked to transcribe (raw PCM)."""

    def __init__(self) -> None:
        super().__init__(trailing_silence_secs=0.0)
        self.segments: list[bytes] = []

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        self.segments.append(audio)
        yield TranscriptionFrame("heard", "", time_now_iso8601())


async def test_segment_so_far_is_what_the_segment_would_be_if_it_ended_now() -> None:
    stt = SegmentSTT()
    before, during, after = (np.full(1600, v, dtype="<i2").tobytes() for v in (1, 2, 3))
    async with ServiceHarness(stt, RATE) as h:
        await h.task.queue_frame(InputAudioRawFrame(before, RATE, 1))  # before the VAD's start
        await h.task.queue_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        await h.task.queue_frame(InputAudioRawFrame(during, RATE, 1))
        await h.wait_for(lambda: segment_so_far(stt).endswith(during), 10)
        so_far = segment_so_far(stt)
        await h.task.queue_frame(InputAudioRawFrame(after, RATE, 1))
        await h.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await h.wait_for(lambda: stt.segments, 10)
    # pipecat keeps audio from before the VAD's start in the segment (the VAD lags the speech)
    assert so_far == before + during
    assert stt.segments == [so_far + after]


class QuietLLM(StreamingLLMService):
    async def stream(self, messages, tools):  # never asked here
        if False:
            yield ""


async def test_push_llm_text_sends_the_text_downstream_as_the_llms_output() -> None:
    async with ServiceHarness(QuietLLM(), RATE) as h:
        await push_llm_text(h.service, "Hello there.")
        await h.wait_for(lambda: of(h.down, LLMTextFrame), 10)
        assert [f.text for f in of(h.down, LLMTextFrame)] == ["Hello there."]


class ReadyInput(BaseInputTransport):
    """An input transport that is ready once started (as vc.media's)."""

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)


async def test_queue_input_audio_waits_for_the_started_transport_then_delivers() -> None:
    transport = ReadyInput(TransportParams(audio_in_enabled=True,
                                                   audio_in_sample_rate=RATE))
    frame = InputAudioRawFrame(audio=chunk(), sample_rate=RATE, num_channels=1)
    assert queue_input_audio(transport, frame) is False  # not started: nothing queued
    async with ServiceHarness(transport, RATE) as h:
        assert queue_input_audio(transport, frame) is True
        await h.wait_for(lambda: of(h.down, InputAudioRawFrame), 10)


def windows(pcm: bytes, size: int = 512) -> list[bytes]:
    return [pcm[i : i + size * 2] for i in range(0, len(pcm) - size * 2 + 1, size * 2)]


def test_shared_silero_models_share_one_session_and_keep_their_own_state() -> None:
    a, b = shared_silero_model(), shared_silero_model()
    assert a is not b and a.session is b.session
    audio = windows(speech("Hello, how are you today?", RATE))
    as_float = [np.frombuffer(w, dtype="<i2").astype(np.float32) / 32768 for w in audio]
    first = [float(np.ravel(a(x, RATE))[0]) for x in as_float]
    fresh = [float(np.ravel(b(x, RATE))[0]) for x in as_float]  # b's state was untouched by a's run
    assert fresh == pytest.approx(first, abs=1e-5) and max(first) > 0.5


def test_an_analyzer_on_the_shared_session_decides_as_pipecats_own() -> None:
    class Shared(SileroVADAnalyzer):
        def __init__(self) -> None:
            init_silero_analyzer(self, sample_rate=RATE, params=None)

    ours, stock = Shared(), SileroVADAnalyzer(sample_rate=RATE)
    for analyzer in (ours, stock):
        analyzer.set_sample_rate(RATE)
    audio = windows(speech("Wait, stop please. I have a question.", RATE))
    assert [float(np.ravel(ours.voice_confidence(w))[0]) for w in audio] == pytest.approx(
        [float(np.ravel(stock.voice_confidence(w))[0]) for w in audio], abs=1e-5)


class RecordingTTS(TTSService):
    def __init__(self) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True, sample_rate=RATE)
        self.requests: list[str] = []

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        self.requests.append(text)
        yield TTSAudioRawFrame(chunk(), RATE, 1, context_id=context_id)


async def test_a_tts_service_with_the_clause_aggregator_speaks_clause_by_clause() -> None:
    tts = RecordingTTS()
    use_clause_aggregator(tts, min_words=3)
    async with ServiceHarness(tts, RATE) as h:
        await h.task.queue_frame(LLMFullResponseStartFrame())
        for token in ["Well, ", "I think ", "that we should, ", "if you agree, ", "go now. ", "Bye."]:
            await h.task.queue_frame(LLMTextFrame(token))
        await h.task.queue_frame(LLMFullResponseEndFrame())
        await h.wait_for(lambda: any("Bye" in r for r in tts.requests), 10)
        await asyncio.sleep(0.1)
    assert [r.strip() for r in tts.requests] == [
        "Well, I think that we should,", "if you agree,", "go now.", "Bye."]


async def aggregate(agg: ClauseAggregator, tokens: list[str]) -> list[str]:
    out = [a.text for t in tokens async for a in agg.aggregate(t)]
    last = await agg.flush()
    return out + ([last.text] if last else [])


async def test_a_replys_first_piece_ends_before_a_break_word_once_it_is_long_enough() -> None:
    agg = ClauseAggregator(min_words=4, first_words=5, first_breaks=frozenset({"is", "and"}))
    tokens = ["The best way ", "to make a cup ", "of tea is ", "by boiling water ", "and adding ",
              "the leaves. ", "It is ", "quick and ", "easy."]
    assert await aggregate(agg, tokens) == [
        "The best way to make a cup of tea",  # cut before "is": the first piece only
        "is by boiling water and adding the leaves.", "It is quick and easy."]
    # The next reply starts a first piece again; a short one is not cut.
    assert await aggregate(agg, ["Paris is ", "the capital."]) == ["Paris is the capital."]
    assert await aggregate(agg, ["One two three four five six and ", "seven."]) == [
        "One two three four five six", "and seven."]


async def test_a_long_first_piece_with_no_phrase_break_is_cut_before_a_late_break() -> None:
    agg = ClauseAggregator(min_words=4, first_words=5, first_breaks=frozenset({"and"}),
                           late_words=7, late_breaks=frozenset({"to", "the"}))
    tokens = ["The store is ", "open from 9 AM ", "to 5 PM ", "and closes ", "early on ", "Sunday."]
    assert await aggregate(agg, tokens) == [
        "The store is open from 9 AM",  # 7 words: cut before "to"
        "to 5 PM and closes early on Sunday."]  # later pieces end at punctuation only
    # Under late_words a late break does not cut; a phrase break still does after first_words.
    assert await aggregate(agg, ["Go to the ", "shop and ", "buy bread ", "and milk."]) == [
        "Go to the shop and buy bread", "and milk."]
    assert await aggregate(agg, ["Yes. ", "It opens ", "at nine in the morning ", "to the public."]) == [
        "Yes.", "It opens at nine in the morning to the public."]  # not the reply's first piece


async def test_without_first_words_the_first_piece_is_the_first_clause() -> None:
    agg = ClauseAggregator(min_words=4, first_breaks=frozenset({"is"}))
    assert await aggregate(agg, ["The best way to make tea is ", "to boil water."]) == [
        "The best way to make tea is to boil water."]


async def test_the_clause_aggregator_in_token_mode_passes_tokens_through() -> None:
    from pipecat.utils.text.base_text_aggregator import TextType

    agg = ClauseAggregator(aggregation_type=TextType.TOKEN)
    out = [a.text async for a in agg.aggregate("Well, hello")]
    assert "".join(out) == "Well, hello"


async def test_a_fresh_clause_aggregator_cuts_the_same_text_alike() -> None:
    agg = ClauseAggregator(min_words=4, first_words=5, first_breaks=frozenset({"and"}),
                           late_words=7, late_breaks=frozenset({"to"}))
    tokens = ["Sure, I can ", "check that ", "and call ", "you back, ", "it takes ", "a moment."]
    expected = await aggregate(agg, tokens)
    assert expected[0] == "Sure, I can check that"
    assert [a async for a in agg.aggregate("Text still pending")] == []
    assert await aggregate(agg.fresh(), tokens) == expected
    assert agg.fresh().language == agg.language and agg.fresh().first_breaks == agg.first_breaks


# -- the speculation gate -----------------------------------------------------------------------


def through_gate(gate, *frames: Frame) -> list[Frame]:
    out = []
    for frame in frames:
        out += [f for f, _ in gate.process(frame, FrameDirection.DOWNSTREAM)]
    return out


def held_parts(frames: list[Frame]) -> list[tuple[str, bool, bool]]:
    return [(f.text, f.start, f.end) for f in frames if isinstance(f, HeldReplyFrame)]


async def test_the_llm_services_gate_announces_what_it_holds_and_releases_it_whole() -> None:
    llm = QuietLLM()
    announce_held_replies(llm)
    gate = llm._speculation_gate
    assert isinstance(gate, AnnouncingGate)
    gate.begin_speculation(True)  # what pipecat does for LLMContextFrame(speculation=True)
    reply = [LLMFullResponseStartFrame(), LLMTextFrame("Four"), LLMTextFrame("."),
             LLMFullResponseEndFrame()]
    out = through_gate(gate, *reply)
    # Held: only the announcements come out, at once, in order.
    assert held_parts(out) == [("", True, False), ("Four", False, False), (".", False, False),
                               ("", False, True)]
    assert all(isinstance(f, HeldReplyFrame) for f in out)
    # The turn ends: the reply itself, unchanged, and no announcement more.
    released = through_gate(gate, UserStoppedSpeakingFrame())
    assert released[1:] == reply and not held_parts(released)
    # A reply to a turn that has ended is not held, so not announced.
    gate.begin_speculation(False)
    assert through_gate(gate, *reply) == reply


async def test_a_withdrawn_reply_was_announced_and_is_dropped() -> None:
    llm = QuietLLM()
    announce_held_replies(llm)
    gate = llm._speculation_gate
    gate.begin_speculation(True)
    out = through_gate(gate, LLMFullResponseStartFrame(), LLMTextFrame("You said"))
    assert held_parts(out) == [("", True, False), ("You said", False, False)]
    cancel = EagerEndOfTurnCancelFrame()
    assert through_gate(gate, cancel, LLMTextFrame(": more"), LLMFullResponseEndFrame()) == [cancel]


async def test_text_the_tts_skips_is_not_announced() -> None:
    llm = QuietLLM()
    announce_held_replies(llm)
    gate = llm._speculation_gate
    gate.begin_speculation(True)
    text = LLMTextFrame("not spoken")
    text.skip_tts = True
    assert held_parts(through_gate(gate, LLMFullResponseStartFrame(), text)) == [("", True, False)]

"""Early transcripts: when core's VAD says the caller's speech paused, the segment so far is
transcribed at once; the segment's end uses that transcript if no speech came after the pause
(real tiny.en, real Piper speech; the VAD's frames are queued as core's VAD pushes them)."""

from __future__ import annotations

from typing import Any

import pytest
from fw_helpers import ENGLISH, Harness, call_context, piper, wer
from pipecat.frames.frames import (
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from vc_stt_faster_whisper.service import TRAILING_SILENCE_S

from vc.turns import SpeechPausedFrame, SpeechResumedFrame

RATE = 16000


@pytest.fixture
def transcriptions(tiny, monkeypatch) -> list[float]:
    """The length in seconds of every clip the shared model is asked to transcribe."""
    asked: list[float] = []
    transcribe = tiny.transcriber.transcribe

    async def counted(pcm: bytes, language: Any) -> Any:
        asked.append(len(pcm) / 2 / RATE)
        return await transcribe(pcm, language)

    monkeypatch.setattr(tiny.transcriber, "transcribe", counted)
    return asked


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


async def test_a_segment_ending_after_its_pause_uses_the_transcript_begun_there(
        tiny, transcriptions) -> None:
    sentence = ENGLISH[3]
    speech = piper(sentence)
    service = tiny.create_service(call_context())
    async with Harness(service) as h:
        await h.task.queue_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        await h.audio(speech)
        await h.task.queue_frame(SpeechPausedFrame())
        await h.audio(silence(0.1))  # the rest of the segment's silence
        await h.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        (text,) = await h.transcript()
        await h.end()
    assert wer([sentence], [text]) <= 0.3, text
    assert (service.early_used, service.early_dropped) == (1, 0)
    # One transcription, of the speech as it was at the pause (not 0.1 s longer).
    assert transcriptions == [pytest.approx(len(speech) / 2 / RATE + TRAILING_SILENCE_S)]
    assert h.frames(TranscriptionFrame)[0].result.audio_seconds == pytest.approx(transcriptions[0])
    assert not h.errors


async def test_speech_after_the_pause_drops_the_early_transcript(tiny, transcriptions) -> None:
    first, second = "I would like to book a table", "for two people tonight."
    service = tiny.create_service(call_context())
    async with Harness(service) as h:
        await h.task.queue_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        await h.audio(piper(first))
        await h.task.queue_frame(SpeechPausedFrame())
        await h.audio(silence(0.05))
        await h.task.queue_frame(SpeechResumedFrame())
        await h.audio(piper(second))
        await h.task.queue_frame(SpeechPausedFrame())
        await h.audio(silence(0.1))
        await h.task.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        (text,) = await h.transcript()
        await h.end()
    # The whole sentence, from the transcript begun at the second pause.
    assert wer([f"{first} {second}"], [text]) <= 0.3, text
    assert (service.early_used, service.early_dropped) == (1, 1)
    assert len(transcriptions) == 2 and transcriptions[1] > transcriptions[0] + 1.0


async def test_without_pause_frames_the_segment_is_transcribed_at_its_end(
        tiny, transcriptions) -> None:
    speech = piper(ENGLISH[6])
    service = tiny.create_service(call_context())
    async with Harness(service) as h:
        await h.utterance(speech + silence(0.2))
        await h.transcript()
        await h.end()
    assert (service.early_used, service.early_dropped) == (0, 0)
    assert transcriptions == [pytest.approx((len(speech) / 2 / RATE) + 0.2 + TRAILING_SILENCE_S)]

"""The short encoder window: when it is used, that it transcribes like the full window, and that
a transcript looping on itself is decoded again on the full window."""

from __future__ import annotations

import pytest
from fw_helpers import ENGLISH, piper, telephone, wer
from test_fw_accuracy import transcribe_set
from vc_stt_faster_whisper.models import resolve_model
from vc_stt_faster_whisper.settings import FasterWhisperSettings
from vc_stt_faster_whisper.transcriber import Transcriber, Transcript, repeats_itself


@pytest.mark.parametrize(("text", "loops"), [
    ("What is the capital of France? What is the capital of", True),
    ("How do I make a good cup of tea? How do I", True),
    ("What is the capital of France?", False),
    ("No, no, no.", False),  # shorter than the head: a real answer, not a loop
    ("Yes yes yes yes", True),
    ("I said the capital, the capital of France", False),
])
def test_a_transcript_that_repeats_its_beginning_is_a_loop(text: str, loops: bool) -> None:
    assert repeats_itself(text) is loops


def transcriber(**settings) -> Transcriber:
    return Transcriber(resolve_model("tiny.en"), FasterWhisperSettings(**settings))


@pytest.mark.parametrize(("settings", "seconds", "language", "expected"), [
    ({}, 3.0, "en", True),
    ({}, 19.0, "en", True),
    ({}, 21.0, "en", False),  # with 10 s of silence it would not fit Whisper's 30 s window
    ({"window_padding": 0}, 3.0, "en", False),
    ({"beam_size": 5}, 3.0, "en", False),
    ({"temperature_fallback": True}, 3.0, "en", False),
    ({"hotwords": "Istanbul"}, 3.0, "en", False),
])
def test_when_the_short_window_is_used(settings, seconds, language, expected) -> None:
    assert transcriber(**settings).windowed(seconds, language) is expected


def test_a_multilingual_model_detecting_the_language_uses_the_full_window() -> None:
    t = transcriber()
    t.multilingual = True
    assert not t.windowed(3.0, None)
    assert t.windowed(3.0, "tr")


def test_a_looping_short_window_falls_back_to_the_full_window(monkeypatch) -> None:
    t = transcriber()
    t.load()
    try:
        looping = Transcript(text="Hello there my friend. Hello there my", language="en",
                             audio_seconds=2.0, seconds=0.0, queued=0.0, no_speech_prob=0.0,
                             avg_logprob=0.0)
        monkeypatch.setattr(t, "_run_windowed", lambda samples, language: looping)
        got = t.transcribe_sync(telephone(piper("What is the capital of France?")), "en")
    finally:
        t.close()
    assert wer(["What is the capital of France?"], [got.text]) == 0


async def test_short_and_full_window_transcribe_alike(started) -> None:
    chosen = list(ENGLISH[:6])
    clips = [telephone(piper(s)) for s in chosen]
    short, _ = await transcribe_set(await started(), clips)
    full, _ = await transcribe_set(await started(window_padding=0), clips)
    assert wer(chosen, short) <= wer(chosen, full) + 0.05
    assert wer(chosen, short) <= 0.1

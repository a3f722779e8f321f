"""A real call through the real pipeline (Silero VAD, pipecat aggregators) with fake AI providers.

The caller is a LoopbackConnection: it sends real espeak-ng speech every 20 ms like a phone,
and plays the bot's audio on a 20 ms clock, recording what it heard and when.
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from vc.engine import Engine
from vc.session import CallSession
from vc.testing import FAKE_STACK
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech


def last_sound(pcm: bytes, rate: int) -> float:
    """Seconds from the start of ``pcm`` to the end of its last sound (espeak trails silence)."""
    loud = np.flatnonzero(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)) > 500)
    return (int(loud[-1]) + 1) / rate


def stack(script: list[str], extra: str = "") -> str:
    return FAKE_STACK + f"\n[stt.fake]\nscript = {', '.join(script)}\n" + extra



async def start_call(engine: Engine, **kw) -> tuple[LoopbackConnection, asyncio.Task[str]]:
    conn = LoopbackConnection(**kw)
    task = await run_loopback_call(engine, conn)
    return conn, task


async def finish(conn: LoopbackConnection, task: asyncio.Task[str]) -> str:
    if not task.done():
        conn.caller_hangs_up()
    outcome = await asyncio.wait_for(task, 10)
    await conn.stop()
    return outcome


async def test_greeting_plays_at_once_and_question_is_answered(make_engine) -> None:
    engine = await make_engine(stack(["what are your opening hours"]))
    conn, task = await start_call(engine)
    t0 = conn.speech_started[0] if conn.speech_started else None
    assert t0 is None
    greeting_at = await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("what are your opening hours", 8000))
    answered_at = await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    messages = session.context.get_messages()
    assert messages[0] == {"role": "assistant", "content": "Hello! How can I help you today?"}
    assert messages[1] == {"role": "user", "content": "what are your opening hours"}
    assert messages[2]["role"] == "assistant"
    assert messages[2]["content"] == "You said: what are your opening hours."
    assert answered_at > end
    assert greeting_at > 0
    # A mark follows the greeting and the answer, and both were reported as played.
    names = [n for _, n in conn.marks]
    assert names[0].startswith("greeting") and any(n.startswith("utt") for n in names)
    # The turn's stage latencies reached the metrics.
    stages = session.monitor.turns[0]
    assert set(stages) >= {"voice_to_voice", "vad_stop", "stt", "llm_first_token", "tts_first_audio"}
    assert await finish(conn, task) == "completed"


async def test_barge_in_stops_bot_audio_and_context_keeps_only_what_was_heard(make_engine) -> None:
    # The fake LLM answers "everything" with four sentences; the caller interrupts the second.
    question = "tell me everything"
    engine = await make_engine(stack([question, "stop"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("tell me everything", 8000))
    reply_at = await conn.wait_for_bot_audio(end, timeout=15)
    # "You said: tell me everything." is 30 characters = 0.9 s of fake speech; interrupt after.
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, reply_at + 1.2 - loop.time()))
    stop = speech("stop stop stop", 8000)
    stop_ends = conn.say(stop)
    interrupted_at = conn.speech_started[-1]
    voice_ends = interrupted_at + last_sound(stop, 8000)
    for _ in range(300):
        if conn.clears:
            break
        await asyncio.sleep(0.01)
    clears = [t for t in conn.clears if t >= interrupted_at]
    assert clears, "no clear was sent to the transport on barge-in"
    clear_at = clears[0]
    await asyncio.sleep(1.0)
    # Bot audio stops when the caller starts (paused at the onset, cleared once the words make
    # it a turn, which may be as late as the turn's end): nothing is heard from the transport
    # lead after that until the caller has stopped talking; the answer comes after.
    silenced_at = min(t for t in conn.pauses + clears if t >= interrupted_at)
    late = [t for t, _ in conn.bot_frames if silenced_at + 0.1 < t < voice_ends]
    assert not late, f"bot audio continued {late[-1] - silenced_at:.3f}s after it was silenced"
    await conn.wait_for_bot_audio(stop_ends, timeout=15)  # the answer to the interruption
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    assert session.barge_ins >= 1
    # The barge-in's latency (speech onset as vc heard it -> bot audio paused or cleared) is
    # measured: within the span from the caller's first sample to the transport's clear.
    sample = engine.metrics.registry.get_sample_value
    assert sample("vc_stage_latency_seconds_count", {"stage": "barge_in"}) == session.barge_ins
    latency = sample("vc_stage_latency_seconds_sum", {"stage": "barge_in"})
    assert 0 < latency <= clear_at - interrupted_at + 0.05, (latency, clear_at - interrupted_at)
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    full = "You said: tell me everything. Here is more. And there is even more to say about it. That is all."
    interrupted = said[1]
    assert interrupted.startswith("You said: tell me everything."), said
    assert interrupted != full, "the context claims the caller heard the whole interrupted reply"
    assert said[-1] == "You said: stop."
    await finish(conn, task)


async def test_no_clear_when_bot_is_silent(make_engine) -> None:
    engine = await make_engine(stack(["hello"], "\n[profile.default]\ngreeting =\n"))
    conn, task = await start_call(engine)
    await asyncio.sleep(0.3)
    end = conn.say(speech("hello", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    assert conn.clears == []
    await finish(conn, task)


async def test_end_call_hangs_up_after_goodbye_was_heard(make_engine) -> None:
    engine = await make_engine(stack(["goodbye"]))
    conn, task = await start_call(engine, mark_delay=0.3)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("goodbye", 8000))
    outcome = await asyncio.wait_for(task, 20)
    assert outcome == "completed"
    assert conn.hangups, "the bot never hung up"
    goodbye_audio = conn.bot_audio_after(end)
    assert goodbye_audio, "no goodbye was spoken"
    final_marks = [t for t, n in conn.marks if n.startswith("final")]
    assert final_marks and conn.hangups[0] >= final_marks[0] + 0.3 - 0.02
    assert conn.hangups[0] >= goodbye_audio[-1][0]
    await conn.stop()


async def test_dtmf_reaches_the_conversation(make_engine) -> None:
    engine = await make_engine(stack(["unused"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_silence()
    for d in "42#":
        conn.press(d)
    t = asyncio.get_running_loop().time()
    await conn.wait_for_bot_audio(t, timeout=10)
    session = engine.sessions[conn.info.call_id]
    users = [m["content"] for m in session.context.get_messages() if m["role"] == "user"]
    assert any("42" in u for u in users), users
    await finish(conn, task)


async def test_caller_hangup_cancels_the_call(make_engine) -> None:
    engine = await make_engine(stack(["hello"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_audio(0, timeout=5)
    conn.caller_hangs_up()
    outcome = await asyncio.wait_for(task, 5)
    assert outcome in ("completed", "cancelled")
    assert engine.sessions == {}
    assert conn.hangups == []  # the caller hung up; the bot must not hang up again
    await conn.stop()


async def test_a_failing_call_does_not_affect_another(make_engine) -> None:
    engine = await make_engine(stack(["what time is it"]))
    good, good_task = await start_call(engine)

    class Broken(LoopbackConnection):
        async def clear(self) -> None:
            raise RuntimeError("transport exploded")

    bad = Broken()
    bad_task = asyncio.create_task(engine.run_call(bad))
    while bad.events is None:
        await asyncio.sleep(0.01)
    bad.start()
    # Break the bad call's pipeline from inside: its TTS service raises on every request.
    bad.say(speech("interrupt", 8000))
    await good.wait_for_bot_silence()
    end = good.say(speech("what time is it", 8000))
    await good.wait_for_bot_audio(end, timeout=15)
    bad.caller_hangs_up()
    await asyncio.wait_for(bad_task, 10)
    await bad.stop()
    assert not good_task.done()
    assert await finish(good, good_task) == "completed"


async def test_llm_failure_is_apologised_for_and_next_turn_works(make_engine) -> None:
    engine = await make_engine(stack(["please fail now", "are you back"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("please fail now", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("are you back", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert any("Sorry" in s for s in said), said
    assert said[-1] == "You said: are you back."
    # The model was shown neither the apology nor the words it answered (vc.llm).
    request = engine.providers["llm"]["fake"].services[-1].requests[-1]
    assert [(m["role"], m["content"]) for m in request if m["role"] != "system"] == [
        ("assistant", "Hello! How can I help you today?"), ("user", "are you back")]
    await finish(conn, task)


async def test_the_model_does_not_see_the_apology_after_its_own_half_answer(make_engine) -> None:
    """The model fails after half an answer: the caller hears both and the context keeps both,
    but the next request shows the model only its half answer (a small model shown the apology
    after its own words ends its next answers with the apology too: vc.llm)."""
    engine = await make_engine(stack(["please fail halfway", "are you back"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_silence()
    for words in ("please fail halfway", "are you back"):
        end = conn.say(speech(words, 8000))
        await conn.wait_for_bot_audio(end, timeout=15)
        await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    heard = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert heard[1].startswith("Here is half an answer.") and "Sorry" in heard[1], heard
    request = engine.providers["llm"]["fake"].services[-1].requests[-1]
    shown = [m["content"] for m in request if m["role"] == "assistant"]
    assert shown[1] == "Here is half an answer.", shown
    assert [m["content"] for m in request if m["role"] == "user"] == [
        "please fail halfway", "are you back"]
    assert heard[2] == "You said: are you back."
    await finish(conn, task)


async def test_many_concurrent_calls_are_isolated(make_engine) -> None:
    engine = await make_engine(stack(["one", "two"]))
    calls = [await start_call(engine) for _ in range(4)]
    await asyncio.sleep(1.5)
    assert len(engine.sessions) == 4
    for conn, _ in calls:
        assert conn.bot_frames, "every call hears its greeting"
    for conn, task in calls:
        assert await finish(conn, task) in ("completed", "cancelled")
    assert engine.sessions == {}


async def test_max_duration_says_goodbye_and_hangs_up(make_engine) -> None:
    engine = await make_engine(stack(["hello"], "\n[profile.default]\nmax_duration = 2\ngreeting =\n"))
    conn, task = await start_call(engine)
    outcome = await asyncio.wait_for(task, 20)
    assert outcome == "completed"
    assert conn.hangups and conn.bot_frames, "the goodbye was spoken, then the bot hung up"
    assert conn.hangups[0] >= conn.bot_frames[-1][0]
    await conn.stop()


async def test_a_turkish_call_says_its_time_limit_goodbye_in_turkish(make_engine, monkeypatch) -> None:
    """Issue 14: the max-duration goodbye is the profile's phrase, in its language."""
    engine = await make_engine(
        stack(["merhaba"], "\n[profile.default]\nlanguage = tr\nmax_duration = 1\ngreeting =\n")
    )
    said: list[str] = []
    original = CallSession.say

    async def say(self: CallSession, text: str) -> None:
        said.append(text)
        await original(self, text)

    monkeypatch.setattr(CallSession, "say", say)
    conn, task = await start_call(engine)
    assert await asyncio.wait_for(task, 20) == "completed"
    await conn.stop()
    assert said == ["Bu görüşme için ayrılan süre doldu. Hoşça kalın!"]


async def test_dtmf_reaches_the_model_with_the_profiles_phrasing(make_engine) -> None:
    engine = await make_engine(stack([], "\n[profile.default]\nlanguage = tr\ngreeting =\n"))
    conn, task = await start_call(engine)
    session = engine.sessions[conn.info.call_id]
    while session.context is None:
        await asyncio.sleep(0.01)
    for digit in "42#":
        conn.press(digit)

    def user_messages() -> str:
        messages = session.context.get_messages() if session.context else []
        return " ".join(str(m.get("content")) for m in messages if m.get("role") == "user")

    deadline = asyncio.get_running_loop().time() + 10
    while "42#" not in user_messages():
        assert asyncio.get_running_loop().time() < deadline, user_messages()
        await asyncio.sleep(0.05)
    assert "Arayan şu tuşlara bastı: 42#" in user_messages()
    await finish(conn, task)


async def answer_playing(engine: Engine, question: str, seconds: float
                         ) -> tuple[LoopbackConnection, asyncio.Task[str], float]:
    """A call whose caller asks ``question`` after the greeting; returns ``seconds`` into the
    answer, with the time the answer started."""
    conn, task = await start_call(engine)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech(question, 8000))
    reply_at = await conn.wait_for_bot_audio(end, timeout=15)
    await asyncio.sleep(max(0.0, reply_at + seconds - asyncio.get_running_loop().time()))
    return conn, task, reply_at


def leading_silence(pcm: bytes, rate: int) -> float:
    """Seconds before the first 10 ms of ``pcm`` that is not silence."""
    step = rate // 100 * 2
    for i in range(0, len(pcm), step):
        x = np.frombuffer(pcm[i : i + step], dtype="<i2").astype(np.float32)
        if len(x) and float(np.sqrt(np.mean(x * x))) > 300:
            return i / 2 / rate
    return len(pcm) / 2 / rate


async def test_a_short_sound_pauses_the_bot_at_once_and_it_plays_on_without_losing_audio(
    make_engine,
) -> None:
    # "uh" is five voiced VAD windows: enough to pause the bot (two), too short for a turn
    # (start_secs 0.3). The caller must hear the whole answer, with a gap where the sound was.
    question = "tell me everything"
    engine = await make_engine(stack([question], "\n[vad]\nstart_secs = 0.3\n[tts.fake]\nms_per_char = 30\n"))
    conn, task, reply_at = await answer_playing(engine, question, 1.0)
    noise = speech("uh", 8000)
    conn.say(noise)
    onset = conn.speech_started[-1] + leading_silence(noise, 8000)
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    assert session.pauses == 1 and session.barge_ins == 0
    assert conn.clears == []  # nothing was dropped
    # The bot fell silent soon after the sound began, for a while, then played on.
    heard = [t for t, _ in conn.bot_audio_after(reply_at)]
    gaps = [(a, b) for a, b in itertools.pairwise(heard) if b - a > 0.1]
    assert len(gaps) == 1, gaps
    paused_at, resumed_at = gaps[0]
    # ... sooner than any turn could have been confirmed (start_secs 0.3).
    assert onset <= paused_at + 0.02 and paused_at - onset < 0.3, (paused_at - onset)
    assert resumed_at - paused_at > 0.2
    # Every frame of the answer was heard: 93 characters (four sentences) at 30 ms each.
    expected = len("You said: tell me everything.Here is more.And there is even more to say about it."
                   "That is all.") * 0.03
    assert abs(len(heard) * 0.02 - expected) <= 0.1, (len(heard) * 0.02, expected)
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert said[-1].endswith("That is all.")
    assert [m["content"] for m in session.context.get_messages() if m["role"] == "user"] == [question]
    await finish(conn, task)


async def test_no_pause_when_interruptions_are_off(make_engine) -> None:
    question = "tell me everything"
    engine = await make_engine(stack([question, "stop"], "\n[interruption]\nenabled = false\n"))
    conn, task, reply_at = await answer_playing(engine, question, 0.8)
    conn.say(speech("stop stop stop", 8000))
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    assert session.pauses == 0 and session.barge_ins == 0 and conn.clears == []
    # The answer (longer than 1.6 s) went on without a break while the caller spoke.
    heard = [t for t, _ in conn.bot_audio_after(reply_at) if t < reply_at + 1.6]
    assert all(b - a < 0.1 for a, b in itertools.pairwise(heard))
    await finish(conn, task)


@pytest.mark.parametrize("first_audio_delay", [0.0, 0.25])
async def test_whole_goodbye_is_played_before_the_bot_hangs_up(make_engine, first_audio_delay) -> None:
    # A transport that reports marks as soon as it reads them (RTP does) and a TTS that takes
    # a moment to start: the hang-up must still wait for every frame of the goodbye.
    engine = await make_engine(stack(
        ["goodbye"], f"\n[tts.fake]\nfirst_audio_delay = {first_audio_delay}\n"
    ))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("goodbye", 8000))
    outcome = await asyncio.wait_for(task, 20)
    assert outcome == "completed"
    assert conn.hangups, "the bot never hung up"
    await asyncio.sleep(1.5)  # anything still queued would play now
    goodbye = conn.bot_audio_after(end)
    late = [t for t, _ in goodbye if t > conn.hangups[0]]
    # "Goodbye, have a nice day." at 30 ms per character: 0.75 s of tone.
    assert len(goodbye) * 0.02 >= 0.6, "the goodbye was not spoken"
    assert late == [], f"{len(late) * 0.02:.2f}s of the goodbye played after the hang-up"
    await conn.stop()


async def test_max_duration_goodbye_is_played_before_the_hang_up(make_engine) -> None:
    engine = await make_engine(stack(
        ["hello"],
        "\n[profile.default]\nmax_duration = 1\ngreeting =\n[tts.fake]\nfirst_audio_delay = 0.25\n",
    ))
    conn, task = await start_call(engine)
    assert await asyncio.wait_for(task, 20) == "completed"
    assert conn.hangups, "the bot never hung up"
    await asyncio.sleep(1.5)  # anything still queued would play now
    late = [t for t, _ in conn.bot_frames if t > conn.hangups[0]]
    assert len(conn.bot_frames) * 0.02 >= 0.5, "the goodbye was not spoken"
    assert late == [], f"{len(late) * 0.02:.2f}s of the goodbye played after the hang-up"
    await conn.stop()


async def test_a_tts_that_never_finishes_cannot_keep_the_call_open(make_engine, monkeypatch, caplog) -> None:
    from vc import session as session_module
    from vc.media import SpeechWrittenFrame

    # The marker that follows the goodbye through the TTS never comes out (a stuck TTS).
    monkeypatch.setattr(session_module, "AFTER_SPEECH_TIMEOUT", 1.5)
    monkeypatch.setattr(session_module, "SpeechWrittenFrame", lambda written: SpeechWrittenFrame())
    engine = await make_engine(stack(["goodbye"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("goodbye", 8000))
    assert await asyncio.wait_for(task, 20) == "completed"
    assert conn.hangups, "the bot never hung up"
    assert conn.hangups[0] - end < 1.5 + 3.0  # the turn (VAD, STT, LLM) plus the bound
    assert any("not synthesised within" in r.getMessage() for r in caplog.records)
    await conn.stop()


async def test_the_model_sees_its_earlier_replies_as_it_wrote_them(make_engine) -> None:
    """pipecat's context keeps a reply as the TTS spoke it, its pieces joined with single
    spaces; the next request shows the model the reply as generated (vc.llm), so a prompt
    cache that matches the conversation token by token (llama.cpp, Ollama) still matches."""
    engine = await make_engine(stack(["answer in paragraphs please", "thanks"]))
    conn, task = await start_call(engine)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    for words in ("answer in paragraphs please", "thanks"):
        end = conn.say(speech(words, 8000))
        await conn.wait_for_bot_audio(end, timeout=15)
        await conn.wait_for_bot_silence()
    generated = ("You said: answer in paragraphs please.\n\nHere is a second paragraph.\n\n"
                 "  And a third one.")
    session = engine.sessions[conn.info.call_id]
    kept = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert kept[1] != generated and kept[1].split() == generated.split(), kept
    llm = engine.providers["llm"]["fake"]
    second = llm.services[-1].requests[-1]
    assert [m["content"] for m in second if m["role"] == "assistant"][1] == generated
    assert [m["content"] for m in second if m["role"] == "user"] == [
        "answer in paragraphs please", "thanks"]
    await finish(conn, task)

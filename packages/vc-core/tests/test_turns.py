"""The adaptive end of turn (vc.turns): a caller pausing mid-sentence is not answered, a
finished sentence is answered after the usual silence, and ``[turn] end = silence`` keeps the
fixed silence."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from vc.testing import FAKE_STACK
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech
from vc.turns import CONTINUATIONS, continuation_words, is_backchannel, sounds_unfinished

EN = CONTINUATIONS["en"]
TR = CONTINUATIONS["tr"]


@pytest.mark.parametrize(("text", "unfinished"), [
    ("I would like to book a table for", True),
    ("I would like to book a table for.", True),  # Whisper's full stop after a fragment
    ("My address is twelve Baker Street and", True),
    ("I need to change my", True),
    ("So,", True),
    ("um", True),
    ("What is the capital of France?", False),
    ("Book a table for two.", False),
    ("I need to change my flight", False),  # could end a sentence: waits complete_secs
    ("The problem started when", True),
    ("I was charged twice while", True),
    ("", False),
])
def test_english_words_that_expect_more(text: str, unfinished: bool) -> None:
    assert sounds_unfinished(text, "en", EN) is unfinished


@pytest.mark.parametrize(("text", "unfinished"), [
    ("Bu akşam iki kişilik bir masa ve", True),
    ("ÇÜNKÜ", True),  # Turkish casing: Ü, and no dotted-I surprises
    ("Siparişim İÇİN", True),
    ("Siparişim dün gelmedi.", False),
    ("Merhaba", False),
])
def test_turkish_words_that_expect_more(text: str, unfinished: bool) -> None:
    assert sounds_unfinished(text, "tr-TR", TR) is unfinished


def test_operators_add_words_and_other_languages_have_none() -> None:
    words = continuation_words("en", ["Basically"])
    assert "basically" in words and "and" in words
    assert continuation_words("fi") == frozenset()
    assert not sounds_unfinished("mutta", "fi", continuation_words("fi"))


def turn_stack(script: list[str], extra: str = "") -> str:
    return FAKE_STACK + "[turn]\nend = adaptive\n" + f"\n[stt.fake]\nscript = {', '.join(script)}\n" + extra


async def caller_pauses_mid_sentence(
    make_engine, config: str, engines: list | None = None,
) -> tuple[list[str], list[str]]:
    """The caller says "... a table for", pauses, says "two people"; returns what the LLM was
    asked and what the bot answered. The pause is 0.6 s: 0.2 s of silence between the clips
    and the silence espeak leaves at their ends. Words that sound finished end the turn after
    0.4 s here (``[vad] stop_secs``, longer by default) unless ``config`` says otherwise."""
    engine = await make_engine("[vad]\nstop_secs = 0.4\n" + config)
    if engines is not None:
        engines.append(engine)
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    silence = bytes(int(0.2 * 8000) * 2)
    end = conn.say(speech("I would like a table for", 8000) + silence + speech("two people", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence(quiet=1.5)
    session = engine.sessions[conn.info.call_id]
    messages = session.context.get_messages()
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()
    asked = [m["content"] for m in messages if m["role"] == "user"]
    said = [m["content"] for m in messages if m["role"] == "assistant"][1:]  # after the greeting
    return asked, said


async def test_a_pause_after_an_unfinished_phrase_is_not_answered(make_engine) -> None:
    asked, said = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table for", "two people"]))
    assert asked == ["I would like a table for two people"]
    assert said == ["You said: I would like a table for two people."]


async def test_a_reply_started_during_a_pause_is_dropped_unheard(make_engine) -> None:
    """The reply to "... a table for" is started while the pause is waited out (speculation)
    and withdrawn when the caller goes on: nothing of it is heard or kept in the context."""
    engines: list = []
    asked, said = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table for", "two people"],
                                "\n[llm.fake]\nfirst_token_delay = 1.0\n"), engines)
    assert asked == ["I would like a table for two people"]
    assert said == ["You said: I would like a table for two people."]
    llm = engines[0].providers["llm"]["fake"].services[-1]
    early = [r[-1]["content"] for r in llm.requests]
    assert early == ["I would like a table for", "I would like a table for two people"]
    assert llm.cancelled == 1  # the first reply was stopped, not finished and thrown away


async def test_a_reply_wanting_a_tool_waits_for_the_turns_end(make_engine) -> None:
    """Tools act at once (end_call hangs up), so a reply started early that calls one is
    withdrawn by pipecat; the turn's end asks again, and only then is the call ended."""
    engine = await make_engine(turn_stack(["goodbye"]))
    conn = LoopbackConnection(mark_delay=0.3)
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    end = conn.say(speech("goodbye", 8000))
    assert await asyncio.wait_for(task, 20) == "completed"
    await conn.stop()
    assert conn.bot_audio_after(end), "no goodbye was spoken"
    llm = engine.providers["llm"]["fake"].services[-1]
    assert [r[-1]["content"] for r in llm.requests] == ["goodbye", "goodbye"]
    assert session.turn_end is not None
    assert (session.turn_end.speculations, session.turn_end.kept) == (1, 0)


async def test_without_speculation_the_model_is_asked_once_the_turn_ends(make_engine) -> None:
    """The control: ``speculate = false`` asks the model only for the whole sentence."""
    engines: list = []
    _, said = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table for", "two people"],
                                "\n[turn]\nspeculate = false\n"), engines)
    assert said == ["You said: I would like a table for two people."]
    llm = engines[0].providers["llm"]["fake"].services[-1]
    assert [r[-1]["content"] for r in llm.requests] == ["I would like a table for two people"]
    assert engines[0].providers["tts"]["fake"].services[-1].held == []  # nothing was held


async def test_a_last_word_the_stt_wrote_for_the_pause_does_not_end_the_turn(make_engine) -> None:
    """Whisper finishes a sentence cut at a pause ("... a table for it."): words that sound
    finished, but the STT says their last word came after the speech stopped."""
    script = ["I would like a table for it.", "two people"]
    asked, said = await caller_pauses_mid_sentence(
        make_engine, turn_stack(script, f"guessed = {script[0]}\n"))
    assert asked == ["I would like a table for it. two people"]
    assert said == ["You said: I would like a table for it. two people."]


async def test_the_same_words_not_guessed_end_the_turn_at_the_pause(make_engine) -> None:
    """The control: the same transcripts without the STT's word."""
    asked, _ = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table for it.", "two people"]))
    assert asked == ["I would like a table for it.", "two people"]


async def test_by_default_a_pause_after_finished_sounding_words_is_not_answered(
        make_engine) -> None:
    """The default ``[vad] stop_secs`` outlasts the 0.6 s pause of the control above."""
    asked, _ = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table for it.", "two people"],
                                "\n[vad]\nstop_secs =\n"))
    assert asked == ["I would like a table for it. two people"]


async def test_with_the_fixed_silence_the_same_pause_is_answered_too_soon(make_engine) -> None:
    """The control: what the adaptive end of turn changes."""
    asked, said = await caller_pauses_mid_sentence(
        make_engine,
        turn_stack(["I would like a table for", "two people"], "\n[turn]\nend = silence\n"))
    assert asked == ["I would like a table for", "two people"]
    assert said[-1] == "You said: two people."


async def test_a_slow_stt_is_waited_for_before_the_turn_ends(make_engine) -> None:
    """Each segment takes the STT 0.9 s (Whisper base on Turkish takes longer): "two people" is
    still being transcribed when 0.4 s of silence have passed after it. The turn waits for it
    (at most the STT's announced p99, 1.8 s here) instead of ending on the words before."""
    asked, said = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table.", "two people"], "delay = 0.9\n"))
    assert asked == ["I would like a table. two people"]
    assert said == ["You said: I would like a table. two people."]


async def test_speech_the_stt_finds_empty_still_ends_the_turn(make_engine) -> None:
    """The second segment's transcript is empty: the turn ends on the words before it once the
    STT's p99 time (0.6 s) has passed, and they are answered."""
    asked, said = await caller_pauses_mid_sentence(
        make_engine, turn_stack(["I would like a table.", "stt-empty"], "delay = 0.3\n"))
    assert asked == ["I would like a table."]
    assert said == ["You said: I would like a table."]


async def test_a_finished_sentence_ends_the_turn_after_the_usual_silence(make_engine) -> None:
    engine = await make_engine(turn_stack(["What time is it?"]))
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("what time is it", 8000))
    await conn.wait_for_bot_audio(end - 0.5, timeout=15)
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    assert session.turn_end is not None and session.turn_end.deferred == 0
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert said[-1] == "You said: What time is it?."
    # The reply was started before the silence was over, kept, and not asked for again.
    assert (session.turn_end.speculations, session.turn_end.kept) == (1, 1)
    assert len(engine.providers["llm"]["fake"].services[-1].requests) == 1
    # While it was held, the TTS was told its words (to prepare their audio), once each.
    held = engine.providers["tts"]["fake"].services[-1].held
    assert held[0].start and held[-1].end
    assert "".join(f.text for f in held) == "You said: What time is it?."
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()


@pytest.mark.parametrize(("text", "backchannel"), [
    ("Mm-hmm.", True), ("Uh-huh", True), ("Yeah, okay.", True), ("(coughs)", True), ("", True),
    ("*cough*", True), ("Wait, stop please.", False), ("Yeah, but what about Friday?", False),
    ("No.", False), ("Mm-mm.", True), ("Uh-uh", True), ("Mm-mm, that's wrong.", False),
    ("X-ray", False), ("mmm", True), ("Hmmm.", True), ("Mhm", True), ("Mmhmm, right.", True),
    ("Ham", False), ("Mom", False),
])
def test_listener_words_do_not_take_the_turn(text: str, backchannel: bool) -> None:
    assert is_backchannel(text, "en") is backchannel


def test_turkish_listener_words() -> None:
    assert is_backchannel("Hı hı.", "tr") and is_backchannel("EVET, tamam", "tr")
    assert not is_backchannel("Bir dakika lütfen", "tr")


LONG = "please tell me a long story about the dragons and knights of the old castle by the sea"


async def talk_over_the_answer(make_engine, over: str | bytes, script_reply: str, extra: str = "",
                               question: str = LONG):
    """The bot answers at length; 0.8 s into its answer the caller says ``over`` (text, or
    8 kHz audio; the fake STT hears ``script_reply``). Returns the session and the bot's audio
    after the question."""
    engine = await make_engine(turn_stack([question, script_reply], extra))
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("tell me a story", 8000))
    answer_at = await conn.wait_for_bot_audio(end - 0.5, timeout=15)
    await asyncio.sleep(max(0.0, answer_at + 0.8 - time.monotonic()))
    conn.say(speech(over, 8000) if isinstance(over, str) else over)
    await conn.wait_for_bot_silence(quiet=1.5, timeout=30)
    session = engine.sessions[conn.info.call_id]
    frames = [f for t, f in conn.bot_frames if t >= answer_at]
    messages = session.context.get_messages()
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()
    return session, b"".join(frames), messages


async def test_a_backchannel_over_the_bot_pauses_it_and_it_plays_on(make_engine) -> None:
    session, heard, messages = await talk_over_the_answer(make_engine, "mm hmm", "Mm-hmm.")
    answer = f"You said: {LONG}."
    assert session.barge_ins == 0
    assert [m["content"] for m in messages if m["role"] == "user"] == [LONG]
    assert [m["content"] for m in messages if m["role"] == "assistant"][-1] == answer
    # Nothing of the answer was lost: the caller heard all of it (30 ms of tone per character).
    assert len(heard) / 2 / 8000 == pytest.approx(len(answer) * 0.03, abs=0.1)


async def test_a_backchannel_while_the_reply_is_still_written_is_no_turn(make_engine) -> None:
    """The model is still writing the answer (four sentences, 0.15 s a word) when "mm-hmm" is
    transcribed: its next words answer the question, not the backchannel, so no turn is
    reported for it."""
    question = "tell me everything about the dragons"
    session, _, messages = await talk_over_the_answer(
        make_engine, "mm hmm", "Mm-hmm.", "\n[llm.fake]\ntoken_delay = 0.15\n", question)
    assert session.barge_ins == 0
    assert [m["content"] for m in messages if m["role"] == "user"] == [question]
    assert len(session.monitor.turns) == 1  # the question's; none for "Mm-hmm."


def cough_8k(seconds: float = 0.25) -> bytes:
    """A burst of low-passed noise that rises fast and decays: loud, and no speech."""
    n = int(8000 * seconds)
    noise = np.convolve(np.random.default_rng(1).standard_normal(n), np.ones(4) / 4, "same")
    envelope = np.minimum(np.arange(n) / 80, 1.0) * np.exp(-np.arange(n) / (n / 3))
    return (noise * envelope / np.abs(noise).max() * 0.5 * 32767).astype("<i2").tobytes()


async def test_a_cough_over_the_bot_pauses_it_at_once_and_it_plays_on(make_engine) -> None:
    session, heard, messages = await talk_over_the_answer(make_engine, cough_8k(), "")
    answer = f"You said: {LONG}."
    # The sudden sound paused the bot (pause_on_level_db) before any VAD verdict; it was no
    # speech, so the bot played on and nothing of the answer was lost.
    assert session.pauses == 1 and session.barge_ins == 0
    assert [m["content"] for m in messages if m["role"] == "user"] == [LONG]
    assert len(heard) / 2 / 8000 == pytest.approx(len(answer) * 0.03, abs=0.1)


async def test_words_over_the_bot_interrupt_it(make_engine) -> None:
    # "hold on please" has no pause inside that a VAD could cut at ("wait stop please" has a
    # 130-220 ms stop before "stop", depending on where the VAD windows fall).
    session, _, messages = await talk_over_the_answer(
        make_engine, "hold on please", "Hold on please.")
    assert session.barge_ins == 1
    assert [m["content"] for m in messages if m["role"] == "user"][-1] == "Hold on please.", messages

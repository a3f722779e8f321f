"""Calls through the real server: questions and answers, marks, barge-in, DTMF, transfers, load.

vc runs as ``vc serve`` builds it (``vc.server.App`` under uvicorn on 127.0.0.1) with the
fake AI stack; :class:`TwilioCloud` phones it exactly as Twilio does.
"""

from __future__ import annotations

import asyncio
import itertools

import attrs
import numpy as np
import pytest
import pytest_asyncio
from twilio_helpers import (
    MS_PER_CHAR,
    QUESTION_TRANSCRIPT,
    Recorder,
    after_greeting,
    answer_text,
    dominant_frequency,
    ini,
    say_audio,
    twilio_vc,
)
from vc_transport_twilio.connection import TwilioCall

from vc.builtins import transfer_call
from vc.call import CallControlError
from vc.profiles import Profile
from vc.providers import ToolCall

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = "what is the weather like today"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env():
    async with twilio_vc(ini()) as pair:
        yield pair


def session_of(vc, call):
    return vc.engine.sessions[call.call_sid]


async def test_question_gets_an_answer(env):
    cloud, _ = env
    call = await cloud.place_call()
    assert "<Connect" in call.twiml and "wss://vc.example.com/twilio/stream" in call.twiml
    await after_greeting(call)
    spoken_until = call.say(say_audio(QUESTION))

    # The answer arrives, then its mark, which is echoed once the answer has played.
    await call.wait_for_bot_speech(after=spoken_until - 0.3)
    mark_at, mark = await call.wait_for(
        lambda: next(((t, n) for t, n in call.marks if n.startswith("utt")), None),
        what="utterance mark",
    )
    await call.wait_for(lambda: any(n == mark for _, n in call.echoed), what="mark echo")
    heard = await call.wait_for(
        lambda: [(t, d) for t, d in Recorder.of(call.call_sid, "mark_played") if d["name"] == mark],
        what="mark_played of the answer's mark in core",
    )

    answer = [(t, p) for t, p in call.speech_frames(after=spoken_until - 0.3) if t <= mark_at]
    expected = len(answer_text(QUESTION_TRANSCRIPT)) * MS_PER_CHAR / 1000
    seconds = len(answer) * 0.02
    assert abs(seconds - expected) <= 0.1 * expected + 0.04, (seconds, expected)
    # It is the fake TTS's 440 Hz tone, intact through µ-law both ways.
    assert abs(dominant_frequency(b"".join(p for _, p in answer)) - 440) < 10
    # Paced at real time: never faster than the audio lasts (minus the send-ahead lead).
    span = answer[-1][0] - answer[0][0]
    assert span >= seconds - 0.1 - 0.06, (span, seconds)
    # The mark came after all of the utterance's audio, and core heard it only after the echo.
    echo_at = next(t for t, n in call.echoed if n == mark)
    assert echo_at >= answer[-1][0]
    assert any(d["name"] == mark and t >= echo_at for t, d in heard)
    # Core transcribed what the caller said (the fake STT's script) in this call.
    transcripts = [d["text"] for _, d in Recorder.of(call.call_sid, "transcript")]
    assert transcripts[:1] == [QUESTION_TRANSCRIPT]
    assert not call.protocol_errors
    await call.hangup()
    await call.wait_closed()


async def test_barge_in_clears_twilio_and_stops_bot_audio(env):
    cloud, vc = env
    call = await cloud.place_call()
    await after_greeting(call)
    spoken_until = call.say(say_audio(QUESTION))
    started = await call.wait_for_bot_speech(after=spoken_until - 0.3)
    expected = len(answer_text(QUESTION_TRANSCRIPT)) * MS_PER_CHAR / 1000  # ~2.8 s of answer
    await asyncio.sleep(0.6)
    call.say(say_audio("stop right there please"))
    interrupt_starts = call.speech_started[-1]

    await call.wait_for(lambda: call.clears, within=20, what="clear")
    cleared_at = call.clears[0]
    assert cleared_at > interrupt_starts
    # The answer was cut short.
    answer = call.speech_frames(after=started - 0.001)
    before_clear = [f for f in answer if f[0] <= cleared_at]
    assert len(before_clear) * 0.02 < expected - 0.5

    # No stale audio after the clear: nothing may arrive until the interruption itself has
    # become the caller's next turn (only then can a new reply exist).
    def next_turn():
        return [t for t, _ in Recorder.of(call.call_sid, "transcript") if t > cleared_at]

    new_turn = (await call.wait_for(next_turn, what="the interruption's turn"))[0]
    assert [t for t, _ in call.media if cleared_at < t <= new_turn] == []
    assert [t for t, _ in call.played if cleared_at < t <= new_turn] == []
    # Core counts as heard only marks whose audio really played (not those a clear dropped).
    played_marks = {d["name"] for _, d in Recorder.of(call.call_sid, "mark_played")}
    assert played_marks.isdisjoint(call.cleared_marks)
    assert played_marks <= {n for _, n in call.echoed}
    assert Recorder.of(call.call_sid, "barge_in")
    conn = session_of(vc, call).connection
    assert isinstance(conn, TwilioCall) and conn.stats.clears_sent == 1
    assert not call.protocol_errors
    await call.hangup()
    await call.wait_closed()


async def test_a_short_sound_pauses_the_answer_and_the_caller_still_hears_all_of_it():
    # "uh" pauses the bot at once (Twilio's buffered audio is cleared and kept by vc) but is
    # too short to be a turn (start_secs 0.3): the answer then plays on from where it stopped.
    async with twilio_vc(ini(extra="[vad]\nstart_secs = 0.3\n")) as (cloud, vc):
        call = await cloud.place_call()
        await after_greeting(call)
        spoken_until = call.say(say_audio(QUESTION))
        started = await call.wait_for_bot_speech(after=spoken_until - 0.3)
        await asyncio.sleep(0.8)
        call.say(say_audio("uh"))
        noise_queued = call.speech_started[-1]
        mark = await call.wait_for(
            lambda: next((n for _, n in call.echoed if n.startswith("utt")), None),
            what="the answer's mark echo",
        )
        played = [(t, p) for t, p in call.played if t >= started - 0.001 and rms_of(p) > 100]
        expected = len(answer_text(QUESTION_TRANSCRIPT)) * MS_PER_CHAR / 1000
        assert abs(len(played) * 0.02 - expected) <= 0.06, (len(played) * 0.02, expected)
        # The caller heard a gap where the sound was: Twilio's buffer was cleared.
        assert call.clears and call.clears[0] > noise_queued
        gaps = [(a, b) for (a, _), (b, _) in itertools.pairwise(played) if b - a > 0.1]
        assert len(gaps) == 1 and gaps[0][0] <= call.clears[0] + 0.03 <= gaps[0][1]
        # Only the real echo counts: core heard the mark after the last frame of the answer.
        heard = await call.wait_for(
            lambda: [t for t, d in Recorder.of(call.call_sid, "mark_played") if d["name"] == mark],
            what="mark_played",
        )
        assert heard[0] >= played[-1][0]
        conn = session_of(vc, call).connection
        assert isinstance(conn, TwilioCall) and conn.stats.pauses == 1
        assert not Recorder.of(call.call_sid, "barge_in")
        assert [d["text"] for _, d in Recorder.of(call.call_sid, "transcript")] == [
            QUESTION_TRANSCRIPT
        ]
        assert not call.protocol_errors
        await call.hangup()
        await call.wait_closed()


def rms_of(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


async def test_dtmf_reaches_the_conversation(env):
    cloud, vc = env
    call = await cloud.place_call()
    await after_greeting(call)
    session = session_of(vc, call)
    for digit in "42#":
        await call.press(digit)
    await call.wait_for(lambda: len(Recorder.of(call.call_sid, "dtmf")) == 3, what="dtmf events")
    assert [d["digit"] for _, d in Recorder.of(call.call_sid, "dtmf")] == ["4", "2", "#"]
    # Keys alone make a caller turn: the model receives them and the bot replies.
    pressed_at = Recorder.of(call.call_sid, "dtmf")[-1][0]

    def user_messages() -> list[str]:
        messages = session.context.get_messages() if session.context else []
        return [str(m.get("content")) for m in messages if m.get("role") == "user"]

    said = await call.wait_for(user_messages, what="a user message in the LLM context")
    assert "pressed keys: 42#" in " ".join(said)
    await call.wait_for_bot_speech(after=pressed_at)  # and the bot replies
    await call.hangup()
    await call.wait_closed()


async def test_transfer_after_the_announcement_through_rest(env):
    cloud, vc = env
    call = await cloud.place_call()
    await after_greeting(call)
    session = session_of(vc, call)
    # The model may only name a destination the profile allows (issue 12 bug 8).
    profile = Profile(
        session.profile.name,
        attrs.evolve(session.profile.settings, transfer_allowed=["+15557654321"]),
    )
    result = await transfer_call(
        ToolCall(
            arguments={"target": "+1 (555) 765-4321"},
            connection=session.connection,
            info=session.info,
            profile=profile,
            after_speech=session.after_speech,
            say=session.say,
            end=session.end,
        )
    )
    assert "transferring" in result["status"]
    await call.wait_closed()
    assert call.ended_by == "rest-redirect"
    assert call.dialed == "+15557654321"
    update = next(r for r in cloud.rest.requests if r.call_sid == call.call_sid)
    assert update.path.endswith(f"/Accounts/{cloud.account_sid}/Calls/{call.call_sid}.json")
    assert (
        set(update.form) == {"Twiml"}
        and "<Dial><Number>+15557654321</Number>" in update.form["Twiml"]
    )
    # "Transferring your call now." was heard before the transfer happened.
    final = [t for t, n in call.echoed if n.startswith("final")]
    assert final and update.at >= final[-1]
    assert len(call.played) == len(call.media)
    ended = await call.wait_for(lambda: Recorder.of(call.call_sid, "call_ended"), what="call end")
    assert ended


async def test_transfer_falls_back_to_the_connect_action(env):
    cloud, vc = env
    call = await cloud.place_call()
    await after_greeting(call)
    conn = session_of(vc, call).connection
    cloud.rest.fail_with = 500
    try:
        await conn.transfer("sip:agent@example.com")
        await call.wait_closed()
        await call.wait_for(lambda: call.action_twiml, what="Connect action request")
    finally:
        cloud.rest.fail_with = None
    assert call.ended_by == "server"
    assert "<Dial><Sip>sip:agent@example.com</Sip></Dial>" in call.action_twiml
    assert call.dialed == "sip:agent@example.com"


async def test_transfer_to_garbage_is_refused_and_the_call_goes_on(env):
    cloud, vc = env
    call = await cloud.place_call()
    await after_greeting(call)
    conn = session_of(vc, call).connection
    with pytest.raises(CallControlError, match="cannot transfer"):
        await conn.transfer("<Hangup/>")
    spoken_until = call.say(say_audio(QUESTION))
    await call.wait_for_bot_speech(after=spoken_until - 0.3)
    await call.hangup()
    await call.wait_closed()


async def test_caller_hangup_and_dropped_socket_end_the_call(env):
    cloud, vc = env
    for how in ("hangup", "drop"):
        call = await cloud.place_call()
        await call.wait_for(lambda c=call: c.call_sid in vc.engine.sessions, what="session")
        await (call.hangup() if how == "hangup" else call.drop())
        await call.wait_for(
            lambda c=call: c.call_sid not in vc.engine.sessions, what=f"session gone after {how}"
        )
        assert not [r for r in cloud.rest.requests if r.call_sid == call.call_sid]
        await call.wait_for(
            lambda c=call: c.call_sid not in vc.transport.streams, what="stream handler gone"
        )


async def test_refuses_calls_while_not_accepting(env):
    cloud, vc = env
    vc.engine.accepting = False
    try:
        call = await cloud.place_call()
    finally:
        vc.engine.accepting = True
    assert call.webhook_status == 200 and call.rejected
    assert '<Reject reason="busy"' in call.twiml
    assert not Recorder.of(call.call_sid)


async def test_many_concurrent_calls_are_isolated(env):
    cloud, _ = env
    calls = await asyncio.gather(*(cloud.place_call(from_=f"+1555000{i:04d}") for i in range(6)))
    assert len({c.call_sid for c in calls}) == 6
    await asyncio.gather(*(after_greeting(c) for c in calls))
    # One more call misbehaves in the middle of it all.
    bad = await cloud.place_call()
    ends = []
    for c in calls:
        ends.append(c.say(say_audio(QUESTION)))
        await asyncio.sleep(0.1)
    await bad.send_raw("{this is not json")
    await bad.wait_closed()
    assert bad.close_code == 1007
    for c, end in zip(calls, ends, strict=True):
        await c.wait_for_bot_speech(after=end - 0.3, within=60)
        await c.wait_for(
            lambda c=c: [n for _, n in c.echoed if n.startswith("utt")],
            within=60,
            what="answer mark echo",
        )
    for c in calls:
        assert not c.protocol_errors
        assert [d["text"] for _, d in Recorder.of(c.call_sid, "transcript")] == [
            QUESTION_TRANSCRIPT
        ]
        started = Recorder.of(c.call_sid, "call_started")
        assert started[0][1]["from"] == c.from_
    await asyncio.gather(*(c.hangup() for c in calls))
    await asyncio.gather(*(c.wait_closed() for c in calls))

"""Issue 12: hostile input on the Twilio transport is refused cleanly, and cannot flood the log.

* ``"[" * 1000`` made ``json.loads`` raise RecursionError past every ``except ValueError``:
  an exception in the ASGI application, the call ended without a reason;
* a stream token with non-ASCII digits (``²``) or characters made the token check raise
  ValueError/TypeError instead of refusing the stream;
* every echo of a mark the call never sent logged a WARNING (5,000 lines in 0.02 s).

A bystander call stays up through the whole module and must still be answered at the end.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio_helpers import Recorder, after_greeting, ini, say_audio, twilio_vc
from vc_transport_twilio.connection import StreamControl, TwilioCall
from vc_transport_twilio.security import StreamTokens
from vc_transport_twilio.simulator import parse_twiml

from vc.call import CallInfo

#: nox -s fuzz raises every property's budget to VC_FUZZ_EXAMPLES (5000).
FUZZ_EXAMPLES = int(os.environ.get("VC_FUZZ_EXAMPLES", "0"))

#: The async tests share the module's event loop (and so its server and bystander call).
in_module_loop = pytest.mark.asyncio(loop_scope="module")

LOGGER = "vc.transport.twilio"
NESTED = "[" * 1000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env():
    async with twilio_vc(ini(), api_token="s3cret-token") as (cloud, vc):
        bystander = await cloud.place_call(from_="+15559990001")
        await after_greeting(bystander)
        yield cloud, vc, bystander


@pytest.fixture
def records(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def logged(caplog, text: str, logger: str = LOGGER) -> bool:
    return any(text in r.getMessage() for r in caplog.records if r.name == logger)


def no_unhandled_errors(caplog) -> bool:
    """Nothing escaped a handler: no ASGI exception, no 'stream receive failed'."""
    return not [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and ("Exception in ASGI" in r.getMessage() or "receive failed" in r.getMessage())
    ]


async def _webhook(cloud):
    call = cloud.new_call()
    status, call.twiml = await call.fetch_twiml(cloud.voice_url(), call.webhook_params())
    assert status == 200
    stream = parse_twiml(call.twiml).find("Connect").find("Stream")
    call.stream_url = stream.get("url")
    call.parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return call


# -- nested JSON -------------------------------------------------------------------------------


@in_module_loop
async def test_nested_json_before_start_closes_that_stream_cleanly(env, records):
    cloud, vc, _ = env
    for text in (NESTED, '{"event": ' + NESTED):
        call = await _webhook(cloud)
        call.ws = await call.open_socket()
        await call.ws.send_str(text)
        msg = await call.ws.receive(timeout=30)
        assert msg.type.name in ("CLOSE", "CLOSED", "CLOSING")
        assert call.ws.close_code == 1007
        assert call.call_sid not in vc.engine.sessions and not Recorder.of(call.call_sid)
    assert logged(records, "nested too deeply")
    assert no_unhandled_errors(records)


@in_module_loop
async def test_nested_json_during_a_call_ends_only_that_call_cleanly(env, records):
    cloud, vc, bystander = env
    call = await cloud.place_call()
    await call.wait_for(lambda: call.call_sid in vc.engine.sessions, what="session")
    await call.send_raw(NESTED)
    await call.wait_closed()
    assert call.close_code == 1007
    await call.wait_for(lambda: call.call_sid not in vc.engine.sessions, what="call end")
    assert logged(records, "nested too deeply")
    assert no_unhandled_errors(records)
    ended = Recorder.of(call.call_sid, "call_ended")
    assert ended and ended[0][1]["outcome"] != "error"
    assert bystander.call_sid in vc.engine.sessions and bystander.closed_at is None


@in_module_loop
async def test_nested_json_body_of_the_outbound_api_gets_400(env, records):
    cloud, vc, _ = env
    headers = {"Authorization": "Bearer s3cret-token", "Content-Type": "application/json"}
    async with cloud.session.post(vc.url + "/twilio/calls", data=NESTED, headers=headers) as r:
        assert r.status == 400
    assert no_unhandled_errors(records)


# -- stream tokens -----------------------------------------------------------------------------

BAD_TOKENS = ["².a.b", "1².a.b", "١٢٣.a.b", "1.é.x", "1.a.é", "9" * 40 + ".a.b", "1.a.b\x00"]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_non_ascii_stream_tokens_are_refused_not_raised(token: str) -> None:
    tokens = StreamTokens(b"k" * 32, ttl=60)
    problem = tokens.check(token, "CA1")
    assert problem in ("missing or malformed stream token", "stream token does not match this call")


#: Token-shaped text: "<digits>.<nonce>.<mac>" with any Unicode digits and characters.
token_like = st.builds(
    lambda a, b, c: f"{a}.{b}.{c}",
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=5)
    | st.integers(0, 2**64).map(str),
    st.text(max_size=12),
    st.text(max_size=12),
)


@given(st.text(max_size=60) | token_like, st.text(max_size=40))
@settings(max_examples=max(200, FUZZ_EXAMPLES), deadline=None)
def test_stream_token_check_never_raises(token: str, call_sid: str) -> None:
    result = StreamTokens(b"k" * 32, ttl=60).check(token, call_sid)
    assert result is None or isinstance(result, str)


@in_module_loop
async def test_stream_with_a_non_ascii_token_is_closed_with_1008(env, records):
    cloud, vc, _ = env
    for token in ("².x.y", "1.é.x"):
        call = await _webhook(cloud)
        await call.connect_stream(parameters={**call.parameters, "vc_token": token})
        await call.wait_closed()
        assert call.close_code == 1008
        assert call.call_sid not in vc.engine.sessions and not Recorder.of(call.call_sid)
    assert logged(records, "missing or malformed stream token")
    assert no_unhandled_errors(records)


# -- unknown marks -------------------------------------------------------------------------------


def _bare_call() -> TwilioCall:
    async def send_text(text: str) -> None: ...

    async def end_stream(reason: str) -> None: ...

    control = StreamControl(rest=None, end_stream=end_stream, set_action=lambda doc: None)
    return TwilioCall(CallInfo("CA1", "twilio"), "MZ1", send_text, control)


def test_unknown_mark_warnings_are_rate_limited(caplog) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    call = _bare_call()
    now = [0.0]
    call.unknown_marks._clock = lambda: now[0]
    for i in range(5000):
        call.mark_echoed(f"nope-{i}")
    lines = [r.getMessage() for r in caplog.records if "never sent" in r.getMessage()]
    assert len(lines) == 5 and call.unknown_marks.suppressed == 4995
    now[0] = 11.0  # the next interval: the next line carries the count
    call.mark_echoed("late")
    last = [r.getMessage() for r in caplog.records if "never sent" in r.getMessage()][-1]
    assert "'late'" in last and "(4995 more like this suppressed)" in last


@in_module_loop
async def test_unknown_mark_flood_through_the_server_logs_a_handful(env, records):
    cloud, vc, _ = env
    call = await cloud.place_call()
    await after_greeting(call)
    records.clear()
    started = time.monotonic()
    for i in range(5000):
        await call.send_raw(
            json.dumps({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": f"x{i}"}})
        )
    # The call is still up and answers; the flood left at most one burst of warnings.
    spoken_until = call.say(say_audio("are you still there"))
    await call.wait_for_bot_speech(after=spoken_until - 0.3)
    assert call.closed_at is None and call.call_sid in vc.engine.sessions
    warnings = [r for r in records.records if "never sent" in r.getMessage()]
    assert 1 <= len(warnings) <= 10, (len(warnings), time.monotonic() - started)
    await call.hangup()
    await call.wait_closed()
    await call.wait_for(lambda: call.call_sid not in vc.engine.sessions, what="call end")
    # The count is logged as the stream's handler ends, a few steps after the session does.
    await call.wait_for(lambda: logged(records, f"stream {call.stream_sid} ended"),
                        what="stream end")
    assert logged(records, "more warnings about unknown marks suppressed")


@in_module_loop
async def test_bystander_was_never_disturbed(env):
    _, _, bystander = env
    spoken_until = bystander.say(say_audio("are you still there"))
    await bystander.wait_for_bot_speech(after=spoken_until - 0.3)
    assert not bystander.protocol_errors and bystander.closed_at is None
    await bystander.hangup()
    await bystander.wait_closed()

"""Who may start calls, and what a misbehaving stream can do (close itself, nothing else).

A bystander call stays up through the whole module and must still be answered at the end.
"""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest
import pytest_asyncio
from twilio_helpers import Recorder, after_greeting, ini, say_audio, twilio_vc
from vc_transport_twilio.fake_rest import new_sid
from vc_transport_twilio.security import SignatureChecker

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOGGER = "vc.transport.twilio"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env():
    async with twilio_vc(ini()) as (cloud, vc):
        bystander = await cloud.place_call(from_="+15559990000")
        await after_greeting(bystander)
        yield cloud, vc, bystander


@pytest.fixture
def warnings_log(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return caplog


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records if r.name == LOGGER)


def nothing_started(vc, call_sid: str) -> bool:
    return call_sid not in vc.engine.sessions and not Recorder.of(call_sid)


# -- the voice webhook -------------------------------------------------------------------------


async def test_webhook_without_signature_is_refused(env, warnings_log):
    cloud, vc, _ = env
    call = cloud.new_call()
    status, body = await cloud.post_signed(cloud.voice_url(), call.webhook_params(), signature="")
    assert status == 403 and "Stream" not in body
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "missing X-Twilio-Signature")


async def test_webhook_with_a_wrong_signature_is_refused(env, warnings_log):
    cloud, vc, _ = env
    call = cloud.new_call()
    params = call.webhook_params()
    forged = SignatureChecker("not-the-auth-token").sign(cloud.voice_url(), params)
    status, _ = await cloud.post_signed(cloud.voice_url(), params, signature=forged)
    assert status == 403
    # A real signature over other parameters (the caller ID was changed) is wrong too.
    signature = cloud.sign(cloud.voice_url(), params)
    tampered = {**params, "From": "+15550000000"}
    status, _ = await cloud.post_signed(cloud.voice_url(), tampered, signature=signature)
    assert status == 403
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "invalid X-Twilio-Signature")


async def test_valid_signature_for_another_url_is_refused(env, warnings_log):
    cloud, vc, _ = env
    call = cloud.new_call()
    params = call.webhook_params()
    for other in (
        "https://attacker.example.com/twilio/voice",
        "https://vc.example.com/twilio/voice?profile=admin",
        "https://vc.example.com/other/path",
    ):
        status, _ = await cloud.post_signed(
            cloud.voice_url(), params, signature=cloud.sign(other, params)
        )
        assert status == 403, other
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "invalid X-Twilio-Signature")


async def test_replayed_webhook_is_refused(env, warnings_log):
    cloud, _, _ = env
    call = cloud.new_call()
    params = call.webhook_params()
    signature = cloud.sign(cloud.voice_url(), params)
    first, body = await cloud.post_signed(cloud.voice_url(), params, signature=signature)
    assert first == 200 and "<Stream" in body
    again, body = await cloud.post_signed(cloud.voice_url(), params, signature=signature)
    assert again == 403 and "Stream" not in body
    assert logged(warnings_log, "replayed request")


async def test_webhook_body_must_be_a_form(env, warnings_log):
    cloud, _, _ = env
    url = cloud.local(cloud.voice_url())
    async with cloud.session.post(
        url, data=json.dumps({"CallSid": "CA1"}), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 415
    assert logged(warnings_log, "not application/x-www-form-urlencoded")


# -- the WebSocket upgrade -----------------------------------------------------------------------


async def _webhook(cloud):
    call = cloud.new_call()
    status, call.twiml = await call.fetch_twiml(cloud.voice_url(), call.webhook_params())
    assert status == 200
    from vc_transport_twilio.simulator import parse_twiml

    stream = parse_twiml(call.twiml).find("Connect").find("Stream")
    call.stream_url = stream.get("url")
    call.parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return call


async def test_stream_upgrade_without_or_with_wrong_signature_gets_403(env, warnings_log):
    cloud, vc, _ = env
    call = await _webhook(cloud)
    with pytest.raises(aiohttp.WSServerHandshakeError) as unsigned:
        await call.open_socket(sign=False)
    assert unsigned.value.status == 403
    forged = SignatureChecker("not-the-auth-token").sign(call.stream_url, {})
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await call.open_socket(signature=forged)
    assert wrong.value.status == 403
    # Signed for the https:// URL instead of the wss:// one Twilio connects to.
    https = call.stream_url.replace("wss://", "https://")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await call.open_socket(signature=cloud.sign(https, {}))
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "missing X-Twilio-Signature")
    assert logged(warnings_log, "invalid X-Twilio-Signature")


async def _rejected_stream(call, vc, **start):
    await call.connect_stream(**start)
    await call.wait_closed()
    assert nothing_started(vc, call.call_sid)
    return call.close_code


async def test_stream_without_the_per_call_token_is_closed(env, warnings_log):
    cloud, vc, _ = env
    call = await _webhook(cloud)
    params = {k: v for k, v in call.parameters.items() if k != "vc_token"}
    assert await _rejected_stream(call, vc, parameters=params) == 1008
    assert logged(warnings_log, "missing or malformed stream token")


async def test_token_of_another_call_is_refused(env, warnings_log):
    cloud, vc, _ = env
    issued = await _webhook(cloud)
    thief = cloud.new_call()
    thief.stream_url = issued.stream_url
    assert await _rejected_stream(thief, vc, parameters=issued.parameters) == 1008
    assert logged(warnings_log, "does not match this call")


async def test_replayed_stream_is_refused(env, warnings_log):
    cloud, vc, _ = env
    call = await _webhook(cloud)
    await call.connect_stream()
    await call.wait_for(lambda: call.call_sid in vc.engine.sessions, what="session")
    await call.hangup()
    await call.wait_closed()
    await call.wait_for(lambda: call.call_sid not in vc.engine.sessions, what="session end")
    replay = cloud.new_call()
    replay.call_sid, replay.stream_url = call.call_sid, call.stream_url
    await replay.connect_stream(parameters=call.parameters)
    await replay.wait_closed()
    assert replay.close_code == 1008
    assert len(Recorder.of(call.call_sid, "call_started")) == 1
    assert logged(warnings_log, "already used")


# -- malformed streams ---------------------------------------------------------------------------


async def _raw_stream(cloud):
    call = await _webhook(cloud)
    call.ws = await call.open_socket()
    return call


async def _start_message(call, media_format=None):
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": call.stream_sid,
            "start": {
                "accountSid": call.cloud.account_sid,
                "streamSid": call.stream_sid,
                "callSid": call.call_sid,
                "tracks": ["inbound"],
                "customParameters": call.parameters,
                "mediaFormat": media_format
                or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


async def _closed_with(call) -> int | None:
    msg = await call.ws.receive(timeout=30)
    assert msg.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSING,
    )
    return call.ws.close_code


async def test_media_before_start_closes_the_stream(env, warnings_log):
    cloud, vc, _ = env
    call = await _raw_stream(cloud)
    await call.ws.send_str(
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    )
    await call.ws.send_str(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "1",
                "streamSid": call.stream_sid,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "/w=="},
            }
        )
    )
    assert await _closed_with(call) == 1008
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "'media' message before start")


@pytest.mark.parametrize(
    "media_format",
    [
        {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    ],
)
async def test_wrong_media_format_closes_the_stream(env, warnings_log, media_format):
    cloud, vc, _ = env
    call = await _raw_stream(cloud)
    await call.ws.send_str(await _start_message(call, media_format))
    assert await _closed_with(call) == 1003
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "unsupported mediaFormat")


async def test_garbage_before_start_closes_the_stream(env, warnings_log):
    cloud, vc, _ = env
    for garbage, code, reason in (
        ("{oops", 1007, "malformed JSON"),
        ("[1, 2, 3]", 1007, "not a Twilio stream event"),
        (b"\x00\x01binary", 1003, "binary frame"),
    ):
        call = await _raw_stream(cloud)
        if isinstance(garbage, bytes):
            await call.ws.send_bytes(garbage)
        else:
            await call.ws.send_str(garbage)
        assert await _closed_with(call) == code
        assert nothing_started(vc, call.call_sid)
        assert logged(warnings_log, reason)


async def test_garbage_during_a_call_ends_only_that_call(env, warnings_log):
    cloud, vc, bystander = env
    for garbage, code, reason in (
        ("not json at all", 1007, "malformed JSON"),
        (
            json.dumps({"event": "media", "streamSid": "x", "media": {"payload": "%%%"}}),
            1007,
            "not base64",
        ),
        (
            json.dumps({"event": "dtmf", "streamSid": "x", "dtmf": {"digit": "<script>"}}),
            1007,
            "invalid digit",
        ),
    ):
        call = await cloud.place_call()
        await call.wait_for(lambda c=call: c.call_sid in vc.engine.sessions, what="session")
        await call.send_raw(garbage)
        await call.wait_closed()
        assert call.close_code == code
        await call.wait_for(lambda c=call: c.call_sid not in vc.engine.sessions, what="call end")
        assert logged(warnings_log, reason)
    assert bystander.call_sid in vc.engine.sessions and bystander.closed_at is None


async def test_oversized_frames_close_only_that_stream(env, warnings_log):
    cloud, vc, bystander = env
    # 100 KB: over max_message_bytes (64 KiB), under the server's WebSocket limit.
    big = await cloud.place_call()
    await big.wait_for(lambda: big.call_sid in vc.engine.sessions, what="session")
    await big.send_raw(json.dumps({"event": "media", "pad": "x" * 100_000}))
    await big.wait_closed()
    assert big.close_code == 1009
    assert logged(warnings_log, "exceeds max_message_bytes")
    # 10 MB: refused by the WebSocket layer itself (1 MiB limit, as vc serve configures it).
    huge = await cloud.place_call()
    await huge.wait_for(lambda: huge.call_sid in vc.engine.sessions, what="session")
    await huge.send_raw("x" * (10 * 1024 * 1024))
    await huge.wait_closed()
    assert huge.close_code == 1009
    await huge.wait_for(lambda: huge.call_sid not in vc.engine.sessions, what="call end")
    assert logged(warnings_log, "exceeded the server's size limit")
    assert bystander.call_sid in vc.engine.sessions and bystander.closed_at is None


async def test_stream_for_another_account_is_refused(env, warnings_log):
    cloud, vc, _ = env
    call = await _raw_stream(cloud)
    start = json.loads(await _start_message(call))
    start["start"]["accountSid"] = new_sid("AC")
    await call.ws.send_str(json.dumps(start))
    assert await _closed_with(call) == 1008
    assert nothing_started(vc, call.call_sid)
    assert logged(warnings_log, "another account")


async def test_bystander_was_never_disturbed(env):
    _, _, bystander = env
    spoken_until = bystander.say(say_audio("are you still there"))
    await bystander.wait_for_bot_speech(after=spoken_until - 0.3)
    assert not bystander.protocol_errors and bystander.closed_at is None
    assert len(Recorder.of(bystander.call_sid, "call_started")) == 1
    await bystander.hangup()
    await bystander.wait_closed()

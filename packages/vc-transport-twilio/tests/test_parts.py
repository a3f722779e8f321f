"""The parts on their own: TwiML, stream tokens, settings, the REST client, the sender clock."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import tempfile
import time

import pytest
from vc_transport_twilio import twiml
from vc_transport_twilio.connection import StreamControl, TwilioCall
from vc_transport_twilio.fake_rest import FakeTwilioREST, new_sid
from vc_transport_twilio.rest import TwilioREST
from vc_transport_twilio.security import ExpiringSet, StreamTokens
from vc_transport_twilio.settings import TwilioSettings
from vc_transport_twilio.simulator import SimulatedCall, TwilioCloud
from vc_transport_twilio.transport import TwilioTransport

from vc.audio import ulaw_to_pcm
from vc.call import CallControlError, CallEvents, CallInfo
from vc.providers import ProviderContext, ProviderError, TransportProvider
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.contracts import RecordingHost, TransportContract

# -- TwiML -------------------------------------------------------------------------------------


def test_connect_stream_escapes_parameters():
    doc = twiml.connect_stream("wss://h/s", "https://h/a", {"from": "+1", "x": 'a"&<b>'})
    assert '<Connect action="https://h/a" method="POST"><Stream url="wss://h/s">' in doc
    assert '<Parameter name="x" value="a&quot;&amp;&lt;b&gt;" />' in doc


@pytest.mark.parametrize(
    ("target", "inner"),
    [
        ("+1 (555) 123-4567", "<Number>+15551234567</Number>"),
        ("sip:agent@example.com;transport=tls", "<Sip>sip:agent@example.com;transport=tls</Sip>"),
        ("client:alice", "<Client>alice</Client>"),
    ],
)
def test_dial_targets(target, inner):
    assert f"<Dial>{inner}</Dial>" in twiml.dial(target)


@pytest.mark.parametrize("target", ["", "hello", "<Hangup/>", "sip:", "+1<2>", "tel:+1"])
def test_dial_refuses_garbage(target):
    with pytest.raises(CallControlError, match="cannot transfer"):
        twiml.dial(target)


def test_reject_and_hangup():
    assert '<Reject reason="busy" />' in twiml.reject()
    assert twiml.hangup("Bye & thanks").endswith("<Say>Bye &amp; thanks</Say><Hangup /></Response>")


def test_busy_message_is_the_profiles_in_its_language():
    """Issue 14: at capacity a caller hears the busy message of the call's profile, in its
    language (<Say language>); the transport's busy_message, where set, replaces it."""
    cfg = config_from_ini(
        FAKE_STACK + "[profile.tr]\nlanguage = tr\nmatch.to = +90*\n", fake_registry()
    )
    context = ProviderContext(cfg.profiles, logging.getLogger("t"))
    transport = TwilioTransport(TwilioSettings(), context)
    turkish = transport.busy_reply(CallInfo(call_id="CA1", transport="twilio", to="+902125550000"))
    assert (
        '<Say language="tr-TR">Şu anda tüm hatlarımız dolu. Lütfen daha sonra tekrar arayın.</Say>'
        "<Hangup />" in turkish
    )
    english = transport.busy_reply(CallInfo(call_id="CA2", transport="twilio", to="+15550000"))
    assert "<Say>Sorry, all our lines are busy. Please call again later.</Say><Hangup />" in english
    own = TwilioTransport(TwilioSettings(busy_message="Full."), context)
    assert "<Say>Full.</Say>" in own.busy_reply(CallInfo(call_id="CA3", transport="twilio",
                                                         to="+902125550000"))
    assert twiml.say_language("tr") == "tr-TR" and twiml.say_language("tr-tr") == "tr-TR"
    assert twiml.say_language("en-gb") == "en-GB" and twiml.say_language("en") == ""


# -- stream tokens ------------------------------------------------------------------------------


def test_stream_tokens_are_bound_single_use_and_expiring():
    tokens = StreamTokens(b"k" * 32, ttl=60)
    token = tokens.issue("CA1")
    assert tokens.check(token, "CA2") == "stream token does not match this call"
    assert tokens.check(token, "CA1") is None
    assert "already used" in tokens.check(token, "CA1")
    old = tokens.issue("CA1", now=time.time() - 120)
    assert tokens.check(old, "CA1") == "stream token expired"
    other_key = StreamTokens(b"x" * 32, ttl=60)
    assert other_key.check(tokens.issue("CA3"), "CA3") == "stream token does not match this call"
    for bad in ("", "abc", "1.2", "x.y.z", "1.2.3.4"):
        assert tokens.check(bad, "CA1") == "missing or malformed stream token"
    # Same key on two instances (behind a load balancer): a token from one works on the other.
    assert StreamTokens(b"k" * 32, ttl=60).check(tokens.issue("CA4"), "CA4") is None


def test_expiring_set_is_bounded():
    seen = ExpiringSet(limit=100)
    for i in range(1000):
        assert seen.add(str(i), 60)
    assert len(seen) <= 101
    assert "999" in seen and not seen.add("999", 60)


# -- settings ---------------------------------------------------------------------------------


def _resolve(section: str):
    from vc.config import read, resolve

    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write(FAKE_STACK.replace("transports =", "transports = twilio") + section)
    try:
        return resolve(read(f.name, {}), fake_registry(), {})
    finally:
        os.unlink(f.name)


def test_settings_are_validated_with_clear_errors():
    _, errors = _resolve("[transport.twilio]\npublic_url = vc.example.com\nvoice_path = voice\n")
    assert len(errors) == 1 and "public_url must be an http(s) URL" in str(errors[0])
    _, errors = _resolve("[transport.twilio]\nvoice_path = voice\n")
    assert len(errors) == 1 and "voice_path must be a URL path" in str(errors[0])
    _, errors = _resolve("[transport.twilio]\nsend_ahead_ms = lots\n")
    assert "[transport.twilio] send_ahead_ms" in str(errors[0]) and "integer" in str(errors[0])


def test_settings_from_environment():
    registry = fake_registry()
    cfg = config_from_ini(
        "[vc]\ntransports = twilio\n[stt]\nprovider = fake\n[llm]\nprovider = "
        "fake\n[tts]\nprovider = fake\n",
        registry,
        env={
            "VC_TRANSPORT_TWILIO__PUBLIC_URL": "https://a.example.com/vc",
            "VC_TRANSPORT_TWILIO__AUTH_TOKEN": "t0k",
        },
    )
    s = cfg.transports["twilio"].settings
    assert s.public("/twilio/voice") == "https://a.example.com/vc/twilio/voice"
    assert s.stream_url() == "wss://a.example.com/vc/twilio/stream"
    assert s.auth_token == "t0k"


async def test_start_requires_public_url_and_auth_token():
    transport = TwilioTransport(TwilioSettings(), ProviderContext([], logging.getLogger("t")))
    with pytest.raises(ProviderError, match="public_url and auth_token must be set"):
        await transport.start(RecordingHost())


class SimulatedCaller:
    """The caller's end of a call from the Twilio stand-in, as TransportContract drives it."""

    def __init__(self, cloud: TwilioCloud, call: SimulatedCall) -> None:
        self.cloud = cloud
        self.call = call

    def send_audio(self, pcm: bytes) -> None:
        self.call.say(pcm)

    def received_audio(self) -> bytes:
        return b"".join(pcm for _, pcm in self.call.played)

    async def hangup(self) -> None:
        await self.call.hangup()

    async def close(self) -> None:
        await self.cloud.stop()


class TestTwilioTransportContract(TransportContract):
    provider = TwilioTransport

    def make_settings(self) -> TwilioSettings:
        return TwilioSettings(public_url="https://vc.example.com", auth_token="secret")

    async def connect_caller(self, transport: TransportProvider, http_url: str) -> SimulatedCaller:
        cloud = TwilioCloud(http_url, public_url="https://vc.example.com", auth_token="secret")
        await cloud.start()
        try:
            call = await cloud.place_call()
        except BaseException:
            await cloud.stop()
            raise
        return SimulatedCaller(cloud, call)


# -- the REST client against the local Twilio REST stand-in ----------------------------------------


@pytest.fixture
async def rest_api():
    account, token = new_sid("AC"), "auth-token"
    fake = FakeTwilioREST(account, (account, token))
    await fake.start()
    yield fake, TwilioSettings(account_sid=account, auth_token=token, api_base_url=fake.url)
    await fake.stop()


async def test_rest_hangup_redirect_create_and_already_ended(rest_api):
    fake, settings = rest_api
    rest = TwilioREST(settings)
    try:
        sid = new_sid("CA")
        fake.calls[sid] = "in-progress"
        await rest.redirect(sid, twiml.dial("+15551234567"))
        assert await rest.hangup(sid) is True
        assert await rest.hangup(sid) is False  # completed: Twilio answers 21220
        assert await rest.hangup(new_sid("CA")) is False  # unknown: 404 / 20404
        with pytest.raises(CallControlError, match="already ended"):
            await rest.redirect(sid, twiml.hangup())
        created = await rest.create_call("+15550001", "+15550002", "https://vc.example.com/v")
        assert created.startswith("CA")
    finally:
        await rest.close()
    forms = [r.form for r in fake.requests]
    assert forms[0] == {"Twiml": twiml.dial("+15551234567")}
    assert forms[1] == {"Status": "completed"}
    assert forms[-1] == {
        "To": "+15550001",
        "From": "+15550002",
        "Url": "https://vc.example.com/v",
        "Method": "POST",
    }
    assert all(
        r.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        for r in fake.requests
    )


async def test_rest_api_key_credentials_and_failures(rest_api):
    fake, settings = rest_api
    sid = new_sid("CA")
    fake.calls[sid] = "in-progress"
    fake.credentials = ("SKkey", "key-secret")
    wrong = TwilioREST(settings)  # still uses the auth token
    keyed = TwilioREST(
        TwilioSettings(
            account_sid=settings.account_sid,
            api_key="SKkey",
            api_secret="key-secret",
            api_base_url=fake.url,
        )
    )
    try:
        with pytest.raises(CallControlError, match="Authenticate"):
            await wrong.hangup(sid)
        assert await keyed.hangup(sid) is True
        fake.fail_with = 500
        with pytest.raises(CallControlError, match="refused to hang up"):
            await keyed.hangup(sid)
    finally:
        await wrong.close()
        await keyed.close()
    unreachable = TwilioREST(
        TwilioSettings(
            account_sid="AC1", auth_token="t", api_base_url="http://127.0.0.1:9", rest_timeout=5
        )
    )
    try:
        with pytest.raises(CallControlError, match="failed"):
            await unreachable.hangup("CA1")
    finally:
        await unreachable.close()
    with pytest.raises(CallControlError, match="credentials are not configured"):
        await TwilioREST(TwilioSettings()).hangup("CA1")


# -- the sender clock ---------------------------------------------------------------------


class _Events(CallEvents):
    def __init__(self) -> None:
        self.played: list[str] = []

    def audio(self, pcm: bytes) -> None: ...
    def dtmf(self, digit: str) -> None: ...
    def hangup(self, reason: str = "") -> None: ...

    def mark_played(self, name: str) -> None:
        self.played.append(name)


def _call(send_ahead_ms: int = 0):
    sent: list[tuple[float, dict]] = []

    async def send_text(text: str) -> None:
        sent.append((time.monotonic(), json.loads(text)))

    async def end_stream(reason: str) -> None: ...

    control = StreamControl(rest=None, end_stream=end_stream, set_action=lambda doc: None)
    call = TwilioCall(
        CallInfo("CA1", "twilio"), "MZ1", send_text, control, send_ahead_ms=send_ahead_ms
    )
    events = _Events()
    call.attach(events)
    return call, sent, events


async def test_sender_paces_in_real_time_with_marks_in_order():
    call, sent, events = _call(send_ahead_ms=60)
    sender = asyncio.create_task(call.run_sender())
    tone = (b"\x10\x20" * 160) * 50  # one second of audio
    writer = asyncio.create_task(call.playout.write(tone))
    await writer
    call.playout.mark("utt-1")
    await asyncio.sleep(1.3)
    call.closed = True
    await sender
    media = [(t, m) for t, m in sent if m["event"] == "media"]
    assert len(media) == 50
    assert all(m["streamSid"] == "MZ1" for _, m in sent)
    assert len(base64.b64decode(media[0][1]["media"]["payload"])) == 160
    assert ulaw_to_pcm(base64.b64decode(media[0][1]["media"]["payload"]))[:2] != b"\x00\x00"
    # Never faster than real time, ahead by at most send_ahead_ms (plus one tick).
    first = media[0][0]
    for n, (t, _) in enumerate(media):
        assert t >= first + n * 0.02 - 0.06 - 0.021
    assert sent[-1][1] == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "utt-1"}}
    assert call.stats.late_ticks == 0 or call.stats.late_ticks < 5
    call.mark_echoed("utt-1")
    assert events.played == ["utt-1"]


async def test_clear_drops_outstanding_marks_and_stale_audio():
    call, sent, events = _call(send_ahead_ms=200)
    sender = asyncio.create_task(call.run_sender())
    await call.playout.write(bytes(320 * 2))
    call.playout.mark("utt-1")
    await asyncio.sleep(0.1)
    assert any(m["event"] == "mark" for _, m in sent)
    await call.clear()
    # Audio the pipeline still pushes right after the clear is stale: never sent.
    await call.playout.write(bytes(320 * 4))
    await asyncio.sleep(0.1)
    call.closed = True
    await sender
    kinds = [m["event"] for _, m in sent]
    assert kinds.count("clear") == 1
    assert "media" not in kinds[kinds.index("clear") :]
    assert call.stats.dropped_after_clear == 4
    call.mark_echoed("utt-1")  # Twilio echoes marks a clear dropped: not heard
    assert events.played == []

"""B2B mode against an OpenSIPS stand-in speaking mi_datagram/event_datagram JSON-RPC, with a
real RTP phone on the media path."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from opensips_kit import (
    VC,
    OpenSIPSStandIn,
    RtpPhone,
    free_udp_port,
    header,
    header_names,
)
from vc_transport_opensips.b2b import content_type_line
from vc_transport_opensips.sdp import parse_offer

from vc.testing import until
from vc.testing.calls import speech

HEADERS = (
    "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds\r\n"
    'From: "Alice" <sip:+15550001111@example.com>;tag=1928301774\r\n'
    "To: <sip:+15550002222@example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.5>\r\n"
)


def b2b_settings(mi_port: int, extra: str = "") -> str:
    return (
        f"mode = b2b\nmi_ip = 127.0.0.1\nmi_port = {mi_port}\nmi_timeout = 0.5\n"
        f"subscription_retry = 0.3\n{extra}"
    )


@pytest.fixture
async def phone():
    p = await RtpPhone().start()
    yield p
    await p.close()


def new_event(key: str, phone: RtpPhone, extra_params: str = "", body: str | None = None) -> dict:
    return {
        "key": key,
        "event_type": "NEW",
        "method": "INVITE",
        "body": phone.sdp() if body is None else body,
        "headers": HEADERS,
        "extra_params": extra_params,
    }


async def test_subscribes_and_answers_a_call_over_rtp(phone: RtpPhone) -> None:
    standin = await OpenSIPSStandIn().start()
    try:
        async with VC(
            transport=b2b_settings(standin.port),
            script="what time is it",
            extra="[profile.sales]\ngreeting = Sales here.\n",
        ) as vc:
            assert vc.transport.ready()
            (sub,) = standin.calls("event_subscribe")[:1]
            # Positional params exactly as OpenSIPS's event_subscribe takes them.
            assert sub["jsonrpc"] == "2.0" and isinstance(sub["id"], str)
            name, sock, expire = sub["params"]
            assert name == "E_UA_SESSION" and sock == f"udp:127.0.0.1:{vc.transport.event_port}"
            assert isinstance(expire, int) and expire > 0
            key = "B2B.267.105.1737119835.749594385"
            standin.event(new_event(key, phone, extra_params='{"profile": "sales"}'))
            reply = await until(lambda: standin.calls("ua_session_reply"), what="SDP answer")
            p = reply[0]["params"]
            assert p["key"] == key and p["method"] == "INVITE"
            assert p["code"] == 200 and isinstance(p["code"], int)
            # No content_type: OpenSIPS takes it as a whole header line and adds
            # "Content-Type: application/sdp" itself only when it is absent.
            assert isinstance(p["reason"], str) and "content_type" not in p
            (ok,) = standin.on_wire("SIP/2.0 200 OK")
            assert header(ok, "Content-Type") == "application/sdp"
            assert header(ok, "Contact") == "<sip:127.0.0.1:5060>"
            assert header_names(ok) == [
                "Via", "To", "From", "Call-ID", "CSeq", "Content-Type", "Contact", "Server",
                "Content-Length",
            ]  # fmt: skip
            answer = parse_offer(p["body"])
            assert answer.formats == [0, 101] and answer.address == "127.0.0.1"
            phone.connect((answer.address, answer.port))
            # extra_params selected the profile; headers filled in the caller.
            await until(lambda: vc.recorder.started, what="call start")
            info, profile = vc.recorder.started[0]
            assert profile == "sales" and info.params["profile"] == "sales"
            assert info.from_ == "+15550001111" and info.to == "+15550002222"
            assert info.params["sip_call_id"] == "a84b4c76e66710@pc33.example.com"
            standin.event({"key": key, "event_type": "UPDATED", "method": "ACK"})
            await until(lambda: phone.loud(), what="greeting audio")
            await asyncio.sleep(phone.say(speech("What time is it now, please?")))
            t_asked = time.monotonic()
            await until(lambda: phone.loud(after=t_asked + 0.2), within=30, what="reply audio")
            # Hold with a re-INVITE, answered through ua_session_reply.
            standin.event(
                {
                    "key": key,
                    "event_type": "UPDATED",
                    "method": "INVITE",
                    "body": phone.sdp(extra="a=sendonly"),
                    "headers": HEADERS,
                }
            )
            re = await until(
                lambda: standin.calls("ua_session_reply")[1:], what="re-INVITE answer"
            )
            assert parse_offer(re[0]["params"]["body"]).direction == "recvonly"
            # BYE from the caller: TERMINATED stops the call at once and frees the port.
            port = answer.port
            standin.event({"key": key, "event_type": "TERMINATED", "method": "BYE"})
            await until(lambda: vc.recorder.ended, what="call end")
            await until(lambda: port not in vc.transport.media.pool.in_use, what="port release")
            assert not standin.calls("ua_session_terminate"), "vc must not terminate a dead session"
            # No stray replies: one 200 to the INVITE and one to the re-INVITE, nothing to ACK.
            assert len(standin.calls("ua_session_reply")) == 2
        # Shutdown unsubscribes with expire 0.
        assert standin.calls("event_subscribe")[-1]["params"][2] == 0
    finally:
        standin.close()


async def test_opensips_starting_after_vc_and_subscription_refresh(phone: RtpPhone) -> None:
    mi_port = free_udp_port()
    settings = b2b_settings(mi_port, "subscription_expire = 3\nprobe_interval = 0")
    async with VC(transport=settings) as vc:
        assert not vc.transport.ready(), "ready before OpenSIPS answered"
        await asyncio.sleep(1.0)
        assert not vc.transport.ready()
        standin = await OpenSIPSStandIn(mi_port).start()
        try:
            await until(vc.transport.ready, within=10, what="subscription after OpenSIPS start")
            assert standin.subscribed()
            # Renewed before it expires (expire 3 s -> refreshed every 1.5 s).
            await asyncio.sleep(4.0)
            assert standin.subscribed() and len(standin.calls("event_subscribe")) >= 3
            assert not standin.calls("uptime"), "probe_interval = 0: no probes"
            # OpenSIPS restarts and forgets us: without probes the next refresh subscribes again.
            standin.restart()
            await until(standin.subscribed, within=5, what="re-subscription after restart")
            # OpenSIPS goes away: readiness drops once the subscription has expired.
            standin.answer = lambda req: None
            await until(lambda: not vc.transport.ready(), within=8, what="readiness to drop")
        finally:
            standin.close()


async def test_restart_and_outage_noticed_by_the_uptime_probe(
    phone: RtpPhone, caplog: pytest.LogCaptureFixture
) -> None:
    """A restarted OpenSIPS is subscribed to again within a probe (not a 30 s refresh), the
    calls it lost are ended, and an unreachable one makes vc not ready at once."""
    caplog.set_level("INFO", logger="vc.transport.opensips.b2b")
    standin = await OpenSIPSStandIn().start()
    settings = b2b_settings(standin.port, "probe_interval = 0.2\nsubscription_refresh = 30")
    try:
        async with VC(transport=settings) as vc:
            b2b = vc.transport.b2b
            await until(lambda: standin.calls("uptime"), what="first probe")
            assert b2b.up_since == standin.handle({"method": "uptime"})["Up since"]
            key = standin.invite(phone.sdp())
            await until(lambda: standin.on_wire("SIP/2.0 200"), what="answer")
            await until(lambda: vc.recorder.started, what="call start")
            subs = len(standin.calls("event_subscribe"))
            caplog.clear()
            t0 = time.monotonic()
            standin.restart()  # forgets the subscription and the call's entity
            await until(lambda: standin.subscribed(), within=3, what="re-subscription")
            took = time.monotonic() - t0
            assert took < 1.5, f"restart noticed after {took:.2f}s"
            assert len(standin.calls("event_subscribe")) == subs + 1
            assert b2b.restarts == 1 and vc.transport.ready()
            await until(lambda: any("restored" in r.message for r in caplog.records),
                        what="restored log line")  # fmt: skip
            # The call whose entity is gone ends (ua_session_list: 404), nothing to terminate.
            lookups = standin.calls("ua_session_list")
            assert lookups and lookups[0]["params"] == {"key": key}
            await until(lambda: vc.recorder.ended, what="lost call to end")
            await until(lambda: not vc.transport.media.pool.in_use, what="port release")
            assert not standin.calls("ua_session_terminate")
            # OpenSIPS stops answering: not ready within two probes, ready again once back.
            answer = standin.answer
            standin.answer = lambda req: None
            t0 = time.monotonic()
            await until(lambda: not vc.transport.ready(), within=5, what="not ready")
            took = time.monotonic() - t0
            assert took < 2.0, f"outage noticed after {took:.2f}s"
            standin.answer = answer
            await until(vc.transport.ready, within=5, what="ready again")
            assert b2b.restarts == 1, "same OpenSIPS run: no restart"
    finally:
        standin.close()


async def test_cancel_before_the_answer_gets_487(phone: RtpPhone) -> None:
    """OpenSIPS 3.6 answers the CANCEL itself (200 canceling) but leaves the INVITE pending
    and the entity alive: vc sends 487 and releases the entity."""
    standin = await OpenSIPSStandIn().start()
    try:
        async with VC(transport=b2b_settings(standin.port, "answer_delay = 2")) as vc:
            key = standin.invite(phone.sdp())
            await until(lambda: standin.on_wire("SIP/2.0 180 Ringing"), what="180")
            standin.cancel(key)
            await until(lambda: standin.on_wire("SIP/2.0 487"), what="487")
            await until(lambda: key not in standin.entities, what="entity released")
            await asyncio.sleep(2.5)  # past answer_delay: no 200 after all
            statuses = [m.split("\r\n")[0] for m in standin.wire]
            assert statuses == [
                "SIP/2.0 100 Giving it a try",
                "SIP/2.0 180 Ringing",
                "SIP/2.0 200 canceling",
                "SIP/2.0 487 Request Terminated",
            ], statuses
            assert not vc.recorder.started
            assert not vc.transport.media.streams and not vc.transport.b2b.sessions
            (term,) = standin.calls("ua_session_terminate")
            assert term["params"] == {"key": key}
    finally:
        standin.close()


def test_content_type_is_a_header_line() -> None:
    assert content_type_line("application/sdp") is None  # OpenSIPS's own default
    assert content_type_line("") is None
    assert content_type_line("message/sipfrag") == "Content-Type: message/sipfrag\r\n"
    assert content_type_line("Content-Type: text/plain") == "Content-Type: text/plain\r\n"


async def test_rejections_unknown_keys_and_bot_hangup(phone: RtpPhone) -> None:
    standin = await OpenSIPSStandIn().start()
    try:
        async with VC(
            transport=b2b_settings(standin.port, "codecs = PCMA"), script="goodbye"
        ) as vc:
            # In-dialog request for a key vc does not know: 481.
            standin.event(
                {
                    "key": "B2B.1.1.1.1",
                    "event_type": "UPDATED",
                    "method": "INVITE",
                    "body": phone.sdp(),
                }
            )
            r = await until(lambda: standin.calls("ua_session_reply"), what="481")
            assert r[0]["params"]["code"] == 481 and r[0]["params"]["method"] == "INVITE"
            # No SDP: 415. No common codec (PCMU only offered, PCMA configured): 488.
            standin.event(new_event("B2B.2.2.2.2", phone, body=""))
            standin.event(new_event("B2B.3.3.3.3", phone, body=phone.sdp("0")))
            await until(lambda: len(standin.calls("ua_session_reply")) >= 3, what="rejections")
            codes = {
                c["params"]["key"]: c["params"]["code"] for c in standin.calls("ua_session_reply")
            }
            assert codes["B2B.2.2.2.2"] == 415 and codes["B2B.3.3.3.3"] == 488
            # OpenSIPS keeps a rejected entity forever: vc releases it (no BYE goes out).
            await until(lambda: not standin.entities, what="rejected entities released")
            assert not standin.on_wire("BYE ")
            # Garbage on the event socket is dropped; the next call works.
            assert standin.transport is not None and standin.subscriber is not None
            standin.transport.sendto(b"\x00garbage{", standin.subscriber)
            standin.transport.sendto(
                json.dumps({"method": "E_UA_SESSION"}).encode(), standin.subscriber
            )
            # A call where the caller says goodbye: the bot hangs up with ua_session_terminate.
            key = "B2B.4.4.4.4"
            phone.codec, phone.pt = "PCMA", 8
            standin.event(new_event(key, phone))
            ok = await until(
                lambda: [c for c in standin.calls("ua_session_reply") if c["params"]["key"] == key],
                what="answer",
            )
            assert ok[0]["params"]["code"] == 200
            answer = parse_offer(ok[0]["params"]["body"])
            assert answer.formats == [8, 101]
            phone.connect((answer.address, answer.port))
            await until(lambda: phone.loud(), what="greeting")
            await asyncio.sleep(phone.say(speech("Okay, goodbye!")))
            term = await until(
                lambda: [
                    c for c in standin.calls("ua_session_terminate") if c["params"]["key"] == key
                ],
                within=40,
                what="ua_session_terminate",
            )
            assert term[0]["params"] == {"key": key}
            assert standin.on_wire("BYE ")  # an answered call: OpenSIPS sends BYE
            await until(lambda: not vc.transport.media.pool.in_use, what="port release")
            # A transfer goes out as ua_session_update REFER and returns once OpenSIPS reports
            # the caller's 202 (ANSWERED).
            key = "B2B.5.5.5.5"
            standin.event(new_event(key, phone))
            await until(lambda: vc.session(), what="second call")
            transfer = asyncio.create_task(vc.session().connection.transfer("sip:agent@example.com"))
            (upd,) = await until(lambda: standin.calls("ua_session_update"), what="REFER")
            assert not transfer.done()
            standin.event(
                {"key": key, "event_type": "ANSWERED", "method": "REFER", "status": 202, "reason": "Accepted"}
            )
            await asyncio.wait_for(transfer, 2)
            assert standin.on_wire("REFER sip:alice@")
            assert upd["params"]["key"] == key and upd["params"]["method"] == "REFER"
            assert upd["params"]["body"] == ""
            assert upd["params"]["extra_headers"].startswith(
                "Refer-To: <sip:agent@example.com>\r\n"
            )
            assert "Referred-By: " in upd["params"]["extra_headers"]
            standin.event({"key": key, "event_type": "TERMINATED", "method": "CANCEL"})
            await until(lambda: not vc.transport.media.pool.in_use, what="port release")
    finally:
        standin.close()


async def test_failed_setups_give_their_rtp_port_back(
    phone: RtpPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 bug 4: ``extra_params`` of ``"[" * 1000`` raised RecursionError after the RTP
    port was bound and the port was never released; once the pool was gone every valid call
    got 503. Bad extra_params is now parsed before a port is taken, and any failure of the
    session setup after that releases the port."""
    from vc_transport_opensips import b2b
    from vc_transport_opensips.ports import PortPool

    standin = await OpenSIPSStandIn().start()
    try:
        async with VC(transport=b2b_settings(standin.port), script="what time is it") as vc:
            media = vc.transport.media
            base = free_udp_port() & ~1
            media.pool = pool = PortPool("127.0.0.1", base, base + 2)  # two ports
            assert pool.size == 2

            def replies(key: str) -> list[dict]:
                return [c for c in standin.calls("ua_session_reply") if c["params"]["key"] == key]

            # The reproducer: more nested-bracket events than the pool has ports. Each is a
            # call like any other (the text is passed on as 'extra_params'), none leaks.
            for i in range(pool.size + 3):
                key = f"B2B.9.{i}.1.1"
                standin.event(new_event(key, phone, extra_params="[" * 1000))
                (r,) = await until(lambda k=key: replies(k), what=f"reply {i}")
                assert r["params"]["code"] == 200, r
                standin.bye(key)
                await until(lambda: not pool.in_use, what="port release")
            assert pool.free == pool.size

            # Any failure between binding the port and the call owning it gives the port back.
            def broken(*a: object, **k: object) -> None:
                raise RecursionError("maximum recursion depth exceeded")

            monkeypatch.setattr(b2b, "SipCall", broken)
            for i in range(pool.size + 3):
                key = f"B2B.8.{i}.1.1"
                standin.event(new_event(key, phone, extra_params='{"a": 1}'))
                (r,) = await until(lambda k=key: replies(k), what=f"reply {i}")
                assert r["params"]["code"] == 500, r
                await until(lambda: not pool.in_use, what="port release")
            assert pool.free == pool.size and not media.streams
            monkeypatch.undo()

            # A valid call is answered afterwards.
            key = "B2B.7.7.7.7"
            standin.event(new_event(key, phone, extra_params='{"profile": "default"}'))
            (r,) = await until(lambda: replies(key), what="valid call answer")
            assert r["params"]["code"] == 200
            standin.bye(key)
            await until(lambda: not pool.in_use, what="port release")
            assert pool.free == pool.size
    finally:
        standin.close()

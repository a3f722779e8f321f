"""Proxy mode SIP behaviour: retransmissions, CANCEL, BYE in both directions, re-INVITE,
REFER, DTMF, barge-in, rejections and port exhaustion."""

from __future__ import annotations

import asyncio
import secrets
import time
from itertools import pairwise

from opensips_kit import (
    LOCAL,
    VC,
    RtpPhone,
    SipCaller,
    answer_media,
    place_call,
)
from vc_transport_opensips.sdp import parse_offer

from vc.testing import until
from vc.testing.calls import speech


async def test_retransmitted_invite_is_absorbed_and_200_repeats_until_ack(
    phone: RtpPhone, caller: SipCaller
) -> None:
    async with VC() as vc:
        invite = caller.invite(vc.sip_addr, phone.sdp())
        caller.send(invite, vc.sip_addr)
        caller.send(invite, vc.sip_addr)  # a retransmission before any answer
        await caller.expect("INVITE", 200)
        # No ACK yet: the 200 OK is retransmitted (T1 = 0.5 s, then 1 s...).
        await until(
            lambda: len(caller.responses("INVITE", 200)) >= 3,
            within=10,
            what="200 OK retransmissions",
        )
        caller.send(invite, vc.sip_addr)  # retransmitted INVITE after the answer: same 200
        oks = caller.responses("INVITE", 200)
        assert len({ok.to_tag for ok in oks}) == 1
        caller.learn_dialog(oks[0])
        caller.send(caller.ack(vc.sip_addr), vc.sip_addr)
        await asyncio.sleep(2.5)
        settled = len(caller.responses("INVITE", 200))
        await asyncio.sleep(2.5)
        assert len(caller.responses("INVITE", 200)) == settled, "200 OK still repeated after ACK"
        assert len(vc.recorder.started) == 1, "a retransmitted INVITE started a second call"
        # A retransmitted BYE gets the same 200 again and does not disturb anything.
        bye = caller.in_dialog("BYE", vc.sip_addr)
        caller.send(bye, vc.sip_addr)
        await caller.expect("BYE", 200)
        caller.send(bye, vc.sip_addr)
        await until(lambda: len(caller.responses("BYE", 200)) == 2, what="second 200 to BYE")
        await until(lambda: vc.recorder.ended, what="call end")


async def test_cancel_before_answer(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC(transport="answer_delay = 2") as vc:
        caller.send(caller.invite(vc.sip_addr, phone.sdp()), vc.sip_addr)
        await caller.expect("INVITE", 180)
        caller.send(caller.cancel(vc.sip_addr), vc.sip_addr)
        await caller.expect("CANCEL", 200)
        terminated = await caller.expect("INVITE", 487)
        assert terminated.to_tag
        caller.send(
            caller.in_dialog("ACK", vc.sip_addr, cseq=1, branch=caller.invite_branch).replace(
                f"tag={terminated.to_tag}".encode(), f"tag={terminated.to_tag}".encode()
            ),
            vc.sip_addr,
        )
        await asyncio.sleep(2.5)
        assert not caller.responses("INVITE", 200), "the call was answered after CANCEL"
        assert not vc.recorder.started
        assert not vc.transport.media.pool.in_use and not vc.transport.media.streams


async def test_caller_hangs_up_mid_reply(phone: RtpPhone, caller: SipCaller) -> None:
    # A long reply (the tone TTS speaks 60 ms per character) that the caller cuts short.
    async with VC(script="tell me a long story about the sea", ms_per_char=60) as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting")
        await asyncio.sleep(phone.say(speech("Tell me a long story about the sea.")))
        t_asked = time.monotonic() + 0.3
        t_reply = await until(lambda: phone.loud(after=t_asked), within=30, what="reply audio")
        assert t_reply
        session = vc.session()
        stream = session.connection.stream
        port = stream.local_port
        caller.send(caller.in_dialog("BYE", vc.sip_addr), vc.sip_addr)
        t_bye = time.monotonic()
        await caller.expect("BYE", 200)
        await until(lambda: vc.recorder.ended, what="pipeline end")
        assert vc.recorder.ended[0][1] in ("cancelled", "completed")
        assert session._task.has_finished()
        await until(lambda: stream.closed.is_set(), what="RTP socket closed")
        assert port not in vc.transport.media.pool.in_use
        assert not vc.app.engine.sessions
        await asyncio.sleep(0.5)
        assert not [t for t, _ in phone.received if t > t_bye + 0.3], "RTP kept flowing after BYE"


async def test_bot_hangs_up_after_goodbye(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC(script="goodbye") as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting")
        await asyncio.sleep(phone.say(speech("Okay, goodbye!")))
        t_bye, bye = (
            await until(lambda: caller.requests("BYE"), within=40, what="BYE from vc")
        )[0]
        # The goodbye was heard before the BYE: sound arrived after the caller spoke, and
        # none after the BYE.
        loud = phone.loud()
        assert loud and max(loud) <= t_bye
        assert bye.get("CSeq").endswith("BYE") and bye.to_tag == caller.from_tag
        assert bye.from_tag == caller.to_tag
        # Routed through the Record-Route set we gave it.
        assert bye.get_all("Route") == [f"<sip:127.0.0.1:{caller.port};lr;ftag={caller.from_tag}>"]
        await until(lambda: vc.recorder.ended, what="call end")
        await until(lambda: not vc.transport.media.pool.in_use, what="port release")


async def test_dtmf_reaches_the_conversation(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC() as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting")
        for d in "12#":
            phone.press(d)
        digits = await until(
            lambda: len(vc.recorder.named("dtmf")) >= 3 and vc.recorder.named("dtmf"),
            what="three DTMF events",
        )
        assert [d["digit"] for d in digits] == ["1", "2", "#"]  # each event once
        # Each key reached core once, in order (core turns them into InputDTMFFrames).
        await asyncio.sleep(1.0)
        assert [d["digit"] for d in vc.recorder.named("dtmf")] == ["1", "2", "#"]
        assert vc.session().connection.stream.dtmf_digits == ["1", "2", "#"]


async def test_barge_in_stops_bot_audio(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC(script="tell me a long story about the sea, interrupting", ms_per_char=80) as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting")
        await asyncio.sleep(phone.say(speech("Tell me a long story about the sea.")))
        t_asked = time.monotonic() + 0.3
        t_reply = await until(lambda: phone.loud(after=t_asked), within=30, what="reply audio")
        assert t_reply
        await asyncio.sleep(0.5)
        t_speak = time.monotonic()
        dur = phone.say(speech("Stop, stop, wait a moment please."))
        await until(lambda: vc.recorder.named("barge_in"), within=20, what="barge-in")
        # After the interruption the bot's reply audio stops (its next reply may follow).
        await asyncio.sleep(dur)
        loud = phone.loud(after=t_speak)
        gaps = [b - a for a, b in pairwise(loud)]
        assert loud and (max(gaps, default=0) > 0.2 or loud[-1] < t_speak + dur), (
            "bot audio never stopped after the caller spoke"
        )


async def test_hold_and_resume_with_reinvite(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC() as vc:
        await place_call(vc, phone, caller)
        await until(lambda: len(phone.received) > 10, what="RTP")
        caller.send(
            caller.in_dialog("INVITE", vc.sip_addr, body=phone.sdp(extra="a=sendonly")), vc.sip_addr
        )
        ok = await until(
            lambda: [r for r in caller.responses("INVITE", 200) if r.get("CSeq").startswith("2 ")],
            what="200 to re-INVITE",
        )
        held = parse_offer(ok[0].body.decode())
        assert held.direction == "recvonly"
        caller.send(caller.in_dialog("ACK", vc.sip_addr, cseq=2), vc.sip_addr)
        await asyncio.sleep(0.3)
        n = len(phone.received)
        await asyncio.sleep(1.0)
        assert len(phone.received) - n <= 1, "vc kept sending RTP to a held caller"
        caller.send(caller.in_dialog("INVITE", vc.sip_addr, body=phone.sdp()), vc.sip_addr)
        ok = await until(
            lambda: [r for r in caller.responses("INVITE", 200) if r.get("CSeq").startswith("3 ")],
            what="200 to resume",
        )
        resumed = parse_offer(ok[0].body.decode())
        assert resumed.direction == "sendrecv" and resumed.port == held.port
        caller.send(caller.in_dialog("ACK", vc.sip_addr, cseq=3), vc.sip_addr)
        n = len(phone.received)
        await until(lambda: len(phone.received) > n + 20, what="RTP after resume")


async def test_transfer_sends_refer(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC() as vc:
        await place_call(vc, phone, caller)
        session = await until(vc.session, what="session")
        await session.connection.transfer("+15559990000")
        ((_, refer),) = caller.requests("REFER")
        assert refer.get("Refer-To") == "<sip:+15559990000@127.0.0.1>"
        assert refer.get("Referred-By").startswith("<sip:vc@127.0.0.1:")
        assert refer.get_all("Route") == [
            f"<sip:127.0.0.1:{caller.port};lr;ftag={caller.from_tag}>"
        ]
        # The transferee reports success: vc ends its leg with BYE.
        caller.send(
            caller.in_dialog(
                "NOTIFY",
                vc.sip_addr,
                body="SIP/2.0 200 OK\r\n",
                content_type="message/sipfrag",
                headers="Event: refer\r\n",
            ),
            vc.sip_addr,
        )
        await caller.expect("NOTIFY", 200)
        await until(lambda: caller.requests("BYE"), what="BYE after the transfer")
        await until(lambda: vc.recorder.ended, what="call end")


async def test_options_rejections_and_unknown_dialogs(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC(transport="codecs = PCMA") as vc:
        target = vc.sip_addr
        caller.send(caller.in_dialog("OPTIONS", target), target)
        ok = await caller.expect("OPTIONS", 200)
        assert "INVITE" in ok.get("Allow")
        caller.send(caller.in_dialog("REGISTER", target), target)
        await caller.expect("REGISTER", 405)
        caller.to_tag = "nosuchtag"
        caller.send(caller.in_dialog("BYE", target), target)
        await caller.expect("BYE", 481)
        # Nothing vc can speak (PCMU only, vc configured for PCMA): 488.
        caller.send(caller.invite(target, phone.sdp("0")), target)
        await caller.expect("INVITE", 488)
        # No SDP: 415 with Accept.
        c2 = await SipCaller().start()
        c2.send(c2.invite(target, ""), target)
        r = await c2.expect("INVITE", 415)
        assert r.get("Accept") == "application/sdp"
        # Garbage SDP: 488.
        c3 = await SipCaller().start()
        c3.send(c3.invite(target, "v=0\r\nm=audio x RTP/AVP\r\n"), target)
        await c3.expect("INVITE", 488)
        # A broken request whose headers can still be read: 400.
        c4 = await SipCaller().start()
        broken = c4.invite(target, phone.sdp()).replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
        c4.send(broken, target)
        await until(
            lambda: [r for r in c4.raw if r.startswith(b"SIP/2.0 400 ")], what="400 Bad Request"
        )
        for c in (c2, c3, c4):
            await c.close()
        assert not vc.recorder.started and not vc.transport.media.pool.in_use


async def test_port_exhaustion_rejects_cleanly(phone: RtpPhone) -> None:
    base = 20000 + 2 * secrets.randbelow(4000)
    async with VC(transport=f"rtp_min_port = {base}\nrtp_max_port = {base + 2}") as vc:
        pool = vc.transport.media.pool
        callers = [await SipCaller().start() for _ in range(3)]
        phones = [phone] + [await RtpPhone().start() for _ in range(2)]
        answered = []
        for c, p in zip(callers, phones, strict=True):
            c.send(c.invite(vc.sip_addr, p.sdp()), vc.sip_addr)
            r = await until(
                lambda c=c: [x for x in c.responses("INVITE") if x.status >= 200],
                what="final response",
            )
            answered.append(r[0].status)
        # At most two even ports exist in the range; the call beyond them gets 503.
        assert answered.count(200) <= 2 and answered[-1] == 503, answered
        assert all(p in (base, base + 2) for p in pool.in_use)
        for c, status in zip(callers, answered, strict=True):
            if status == 200:
                ok = c.responses("INVITE", 200)[0]
                c.learn_dialog(ok)
                c.send(c.ack(vc.sip_addr), vc.sip_addr)
                c.send(c.in_dialog("BYE", vc.sip_addr), vc.sip_addr)
        await until(lambda: not pool.in_use, what="ports back in the pool")
        # A freed port is used again.
        c = await SipCaller().start()
        c.send(c.invite(vc.sip_addr, phones[2].sdp()), vc.sip_addr)
        ok = await c.expect("INVITE", 200)
        assert answer_media(ok)[0][1] in (base, base + 2)
        for x in (*callers, c):
            await x.close()
        for p in phones[1:]:
            await p.close()


def test_local_is_loopback() -> None:
    assert LOCAL == "127.0.0.1"


async def test_failed_setups_give_their_rtp_port_back(
    phone: RtpPhone, caller: SipCaller, monkeypatch
) -> None:
    """Issue 12 bug 4, proxy mode: a failure between binding the call's RTP port and the call
    owning it releases the port (it leaked for good before, until the pool was gone)."""
    from vc_transport_opensips import sipua
    from vc_transport_opensips.ports import PortPool

    async with VC() as vc:
        media = vc.transport.media
        media.pool = pool = PortPool("127.0.0.1", 0, 0)  # ephemeral: in_use tracks the calls
        tried: list[int] = []

        def broken(*a: object, **k: object) -> None:
            tried.append(1)
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(sipua, "SipCall", broken)
        for i in range(3):
            c = await SipCaller().start()
            try:
                c.send(c.invite(vc.sip_addr, phone.sdp()), vc.sip_addr)
                await until(lambda n=i: len(tried) > n, what=f"setup {i}")
                await until(lambda: not pool.in_use and not media.streams, what="port release")
            finally:
                await c.close()
        monkeypatch.undo()
        ok = await place_call(vc, phone, caller)
        assert ok.status == 200
        assert len(pool.in_use) == 1

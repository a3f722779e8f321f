"""Single hostile datagrams (issue 12): none may kill the listener or strand a transaction.

* a Via whose rport/port is not a port (70000) once made ``sendto`` raise OverflowError, which
  asyncio answers by closing the SIP socket: nothing was answered afterwards;
* SDP with numbers ``int()`` refuses or ``float()`` takes too well (``²``, ``inf``) escaped
  the SDP parser: a new INVITE got 500, a re-INVITE/UPDATE no answer at all and a
  transaction without timers.
"""

from __future__ import annotations

import logging
import secrets

import httpx
import pytest
from opensips_kit import LOCAL, VC, RtpPhone, SipCaller, place_call
from vc_transport_opensips import sipua

from vc.testing import until

REPRODUCER = (
    "OPTIONS sip:vc@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1;rport=70000\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\n"
    "To: <sip:vc@127.0.0.1>\r\n"
    "Call-ID: issue12-1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)

#: Each breaks one number of a valid offer in a way the SDP parser once let escape.
BAD_SDP = {
    "ptime inf": ("a=ptime:20", "a=ptime:inf"),
    "superscript media port": ("m=audio {port} ", "m=audio ² "),
    "superscript payload type": (" RTP/AVP 0 8 101", " RTP/AVP ¹ 8 101"),
    "superscript rtpmap type": ("a=rtpmap:0 PCMU", "a=rtpmap:² PCMU"),
}


def bad_sdp(phone: RtpPhone, which: str) -> str:
    old, new = BAD_SDP[which]
    text = phone.sdp()
    old = old.format(port=phone.port)
    assert old in text
    return text.replace(old, new)


def options(caller: SipCaller, via: str) -> bytes:
    return (
        f"OPTIONS sip:vc@{LOCAL} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        f"From: <sip:a@{LOCAL}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:vc@{LOCAL}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_unusable_via_port_does_not_kill_the_listener(caller: SipCaller) -> None:
    async with VC() as vc:
        ua = vc.transport.ua
        caller.send(REPRODUCER, vc.sip_addr)
        for via in (
            f"SIP/2.0/UDP {LOCAL}:70000;branch=z9hG4bK2",
            f"SIP/2.0/UDP {LOCAL}:{caller.port};branch=z9hG4bK3;rport=0",
            f"SIP/2.0/UDP {LOCAL}:{caller.port};branch=z9hG4bK4;rport=٣",
        ):
            caller.send(options(caller, via), vc.sip_addr)
        # Each is refused, with a 400 to the address it came from where the Via can be read...
        await until(
            lambda: len([r for r in caller.raw if r.startswith(b"SIP/2.0 400 ")]) == 3,
            what="three 400s",
        )
        assert any(b"not a port" in r for r in caller.raw)
        # ...and the socket is the same one, still answering.
        assert ua.alive() and not ua.transport.is_closing() and ua.reopened == 0
        caller.send(caller.in_dialog("OPTIONS", vc.sip_addr), vc.sip_addr)
        await caller.expect("OPTIONS", 200)


async def test_send_refuses_what_sendto_would_choke_on(caller: SipCaller, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="vc.transport.opensips.sip")
    async with VC() as vc:
        ua = vc.transport.ua
        for addr in (
            (LOCAL, 70000),
            (LOCAL, 0),
            (LOCAL, -1),
            ("127.0.0.1\x00", 5060),
            ("not an address", 5060),
            (LOCAL, "5060"),
            None,
        ):
            ua.send(b"OPTIONS", addr)  # type: ignore[arg-type]
        assert ua.drops["unusable destination"] == 7
        assert "dropped SIP datagram to 127.0.0.1:70000" in caplog.text
        assert ua.alive() and not ua.transport.is_closing()
        caller.send(caller.in_dialog("OPTIONS", vc.sip_addr), vc.sip_addr)
        await caller.expect("OPTIONS", 200)


async def test_closed_socket_fails_healthz_until_it_is_reopened(
    caller: SipCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sipua, "REOPEN_DELAYS", (0.0, 0.05))
    async with VC() as vc:
        ua = vc.transport.ua
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=vc.app.http), base_url="http://vc")
        assert (await http.get("/healthz")).status_code == 200
        real_bind = ua._bind

        async def refused(port: int):
            raise OSError(98, "Address already in use")

        monkeypatch.setattr(ua, "_bind", refused)
        ua.transport.close()  # the socket dies under the transport (as asyncio did on sendto)
        await until(lambda: not ua.alive(), what="transport reported dead")
        dead = await http.get("/healthz")
        assert dead.status_code == 503
        assert dead.json()["dead"] == ["transport.opensips"]
        assert (await http.get("/readyz")).status_code == 503
        # The port comes free again: the listener is reopened on the same port.
        monkeypatch.setattr(ua, "_bind", real_bind)
        await until(ua.alive, what="socket reopened")
        assert ua.reopened == 1 and ua.transport.get_extra_info("sockname")[1] == ua.port
        assert (await http.get("/healthz")).status_code == 200
        caller.send(caller.in_dialog("OPTIONS", vc.sip_addr), vc.sip_addr)
        await caller.expect("OPTIONS", 200)
        await http.aclose()
    assert ua.alive()  # stopped on purpose is not dead


@pytest.mark.parametrize("which", sorted(BAD_SDP))
async def test_bad_sdp_in_a_new_invite_gets_488(
    which: str, phone: RtpPhone, caller: SipCaller
) -> None:
    async with VC() as vc:
        caller.send(caller.invite(vc.sip_addr, bad_sdp(phone, which)), vc.sip_addr)
        refused = await caller.expect("INVITE", 488)
        assert refused.get("Warning").startswith('399 vc "malformed')
        assert not caller.responses("INVITE", 500)
        assert not vc.recorder.started and not vc.transport.media.pool.in_use


async def test_bad_sdp_in_reinvite_and_update_gets_488_and_no_stuck_transactions(
    phone: RtpPhone, caller: SipCaller
) -> None:
    async with VC() as vc:
        ua = vc.transport.ua
        await place_call(vc, phone, caller)
        await until(lambda: len(phone.received) > 5, what="RTP")
        sent = 0
        for i in range(100):
            which = sorted(BAD_SDP)[i % len(BAD_SDP)]
            method = "UPDATE" if i % 2 else "INVITE"
            branch = "z9hG4bK" + secrets.token_hex(8)
            caller.send(
                caller.in_dialog(method, vc.sip_addr, body=bad_sdp(phone, which), branch=branch),
                vc.sip_addr,
            )
            sent += 1
            if method == "INVITE":  # the 488 is ACKed, as a phone would
                await until(
                    lambda: [r for r in caller.responses("INVITE", 488)
                             if r.get("CSeq").startswith(f"{caller.cseq} ")],
                    what="488 to the re-INVITE",
                )
                caller.send(
                    caller.in_dialog("ACK", vc.sip_addr, cseq=caller.cseq, branch=branch),
                    vc.sip_addr,
                )
        await until(
            lambda: len(caller.responses("INVITE", 488)) + len(caller.responses("UPDATE", 488))
            >= sent,
            what="a 488 for every bad offer",
        )
        assert not [r for r in caller.responses() if r.status == 500]
        # Every transaction left has its final response and a timer that will remove it.
        assert ua.server_txns
        assert all(t.final_status and t._timer is not None for t in ua.server_txns.values())
        # The call went on: a valid re-INVITE is still answered and the media flows.
        caller.send(caller.in_dialog("INVITE", vc.sip_addr, body=phone.sdp()), vc.sip_addr)
        await until(
            lambda: [r for r in caller.responses("INVITE", 200)
                     if r.get("CSeq").startswith(f"{caller.cseq} ")],
            what="200 to a valid re-INVITE",
        )
        caller.send(caller.in_dialog("ACK", vc.sip_addr, cseq=caller.cseq), vc.sip_addr)
        n = len(phone.received)
        await until(lambda: len(phone.received) > n + 5, what="RTP after the bad offers")
        assert len(vc.recorder.started) == 1 and not vc.recorder.ended


async def test_a_failing_handler_still_answers_500(
    caller: SipCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with VC() as vc:
        ua = vc.transport.ua

        def broken(*args: object) -> None:
            raise RuntimeError("handler bug")

        monkeypatch.setattr(ua, "_in_dialog", broken)
        caller.to_tag = "sometag"
        caller.send(caller.in_dialog("INFO", vc.sip_addr), vc.sip_addr)
        await caller.expect("INFO", 500)
        assert all(t.final_status for t in ua.server_txns.values())

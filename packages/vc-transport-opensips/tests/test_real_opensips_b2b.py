"""B2B mode against the REAL OpenSIPS 3.6.8 (not the stand-in): deploy/opensips/opensips-b2b.cfg
run as its own process, vc's transport subscribed to it, real SIP callers (SIPp, pjsua2).

OpenSIPS is built once per machine from ``../shared/peers`` (``build-opensips.sh``, cached);
the tests skip, saying why, only when that build is impossible (no compiler, no source).
The last test pins the stand-in (opensips_kit.OpenSIPSStandIn) to what the real server puts on
the wire for the same MI commands, so the fast stand-in tests keep meaning something.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import secrets
import shutil
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensips_kit import (
    LOCAL,
    VC,
    OpenSIPSStandIn,
    header,
    header_names,
    wait_for,
)
from real_opensips import DEPLOY, RealOpenSIPS, common_subs, sipp_messages, substitute
from test_pjsua import tone_seconds, write_wav
from test_sipp import run_sipp
from vc_transport_opensips.mi import MIError

from vc.audio import pcm_to_ulaw
from vc.testing.calls import speech

B2B_CFG = DEPLOY / "opensips-b2b.cfg"

pytestmark = [
    pytest.mark.real_opensips,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) is not installed"),
]
if importlib.util.find_spec("pytest_timeout") is not None:
    # The first test of a machine builds OpenSIPS (about 75 s on 2 cores) in its setup.
    pytestmark.append(pytest.mark.timeout(900))


# -- the real OpenSIPS ----------------------------------------------------------------------


def adapt_cfg(text: str, modules: Path, sip_port: int, mi_port: int) -> str:
    """The shipped script with test addresses: 127.0.0.1 and free ports, this build's mpath."""
    mi = [(r'"socket_name", "udp:0\.0\.0\.0:8080"', f'"socket_name", "udp:{LOCAL}:{mi_port}"')]
    return substitute(text, B2B_CFG.name, common_subs(modules, sip_port) + mi)


@pytest.fixture
async def opensips(opensips_prefix: Path, tmp_path: Path) -> Any:
    workdir = tmp_path / "opensips"
    workdir.mkdir()
    server = RealOpenSIPS(opensips_prefix, workdir, B2B_CFG, adapt_cfg)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def vc_settings(server: RealOpenSIPS, extra: str = "", defaults: bool = False) -> str:
    """B2B mode against ``server``; quick MI timings unless ``defaults`` (production values)."""
    quick = "mi_timeout = 0.5\nsubscription_retry = 0.3\nprobe_interval = 0.5\n"
    return f"mode = b2b\nmi_ip = {LOCAL}\nmi_port = {server.mi_port}\n{'' if defaults else quick}{extra}"


async def assert_no_leftovers(server: RealOpenSIPS) -> None:
    """Every B2B entity is gone and the caller's requests all reached a valid URI."""
    assert await server.call("ua_session_list") == [], "a B2B entity was left behind in OpenSIPS"
    log = server.log()
    assert "bad uri" not in log, log[-3000:]


# -- calls ----------------------------------------------------------------------------------


async def test_sipp_call_answered_acked_and_hung_up(opensips: RealOpenSIPS, tmp_path: Path) -> None:
    """INVITE -> 200 OK with Content-Type: application/sdp and a Contact -> ACK to that Contact
    (vc sees it) -> the caller's RTP reaches vc (it hears the question) -> BYE ends the call."""
    pcm = bytes(8000) + speech("What time is it now, please?") + bytes(16000)
    audio = tmp_path / "question.pcmu"
    audio.write_bytes(pcm_to_ulaw(pcm))
    async with VC(transport=vc_settings(opensips), script="what time is it") as vc:
        assert vc.transport.ready()
        b2b = vc.transport.b2b
        sipp = asyncio.create_task(
            run_sipp(
                "uac_b2b.xml",
                opensips.sip_addr,
                {"audio": str(audio), "hold_ms": "6000"},
                tmp_path,
                timeout=30,
            )
        )
        await wait_for(
            lambda: any(s.confirmed for s in b2b.sessions.values()) or sipp.done(),
            timeout=15,
            what="the caller's ACK to reach vc",
        )
        assert not sipp.done(), (await sipp)[1]
        rc, out = await sipp
        assert rc == 0, out + opensips.log()[-3000:]
        (ok,) = {
            m
            for m in sipp_messages(tmp_path)
            if m.startswith("SIP/2.0 200 OK") and "INVITE" in header(m, "CSeq")
        }
        assert header(ok, "Content-Type") == "application/sdp"
        assert header(ok, "Contact") == f"<sip:{LOCAL}:{opensips.sip_port}>"
        assert "application/sdpContact" not in ok
        # The header set test_b2b.py expects from the stand-in's 200 OK.
        assert header_names(ok) == [
            "Via", "To", "From", "Call-ID", "CSeq", "Content-Type", "Contact", "Server",
            "Content-Length",
        ]  # fmt: skip
        await wait_for(lambda: vc.recorder.ended, what="the BYE to end the call")
        info, profile = vc.recorder.started[0]
        assert info.from_ == "+15550001111" and profile == "default"
        assert info.params["profile"] == "default", "extra_params of ua_session_server_init"
        # vc heard the caller: the RTP SIPp streamed reached vc's socket and the STT.
        assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
        await wait_for(lambda: not vc.transport.media.pool.in_use, what="RTP port release")
        assert not b2b.sessions
    await assert_no_leftovers(opensips)


@pytest.mark.skipif(
    importlib.util.find_spec("pjsua2") is None,
    reason="pjsua2-python is not installed (it is the caller that records what it hears)",
)
async def test_pjsua_hears_vc_and_vc_hears_pjsua(opensips: RealOpenSIPS, tmp_path: Path) -> None:
    """RTP both ways through a real softphone: pjsua2 records vc's greeting and answer, vc
    transcribes pjsua2's question; pjsua2 hangs up with BYE."""
    rate = 8000
    question = speech("What time is it now, please?")
    lead = 3.0
    play = tmp_path / "question.wav"
    write_wav(play, bytes(int(lead * rate) * 2) + question + bytes(rate * 2))
    record = tmp_path / "heard.wav"
    async with VC(
        transport=vc_settings(opensips),
        script="what time is it",
        greeting="Hello there, how can I help you?",
    ) as vc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).parent / "pjsua_caller.py"),
            f"sip:ai@{LOCAL}:{opensips.sip_port}",
            str(play),
            str(record),
            "11",
            "PCMU",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[-3000:]
        assert "CONFIRMED" in text, text[-3000:]  # the ACK went to the 200's Contact
        await wait_for(lambda: vc.recorder.ended, what="pjsua2's BYE to end the call")
        assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
    with wave.open(str(record)) as w:
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        windows = tone_seconds(heard, w.getframerate())
    asked_until = lead + len(question) / 2 / rate
    assert any(t < lead for t in windows), f"pjsua2 did not hear the greeting: {windows}"
    assert any(t > asked_until for t in windows), f"pjsua2 did not hear the answer: {windows}"
    await assert_no_leftovers(opensips)


async def test_sipp_cancel_before_the_answer_gets_487(opensips: RealOpenSIPS, tmp_path: Path) -> None:
    """vc rings (180 through ua_session_reply), the caller cancels: OpenSIPS answers the CANCEL,
    vc sends 487 for the INVITE and releases the entity; the caller's ACK is absorbed."""
    async with VC(transport=vc_settings(opensips, "answer_delay = 3")) as vc:
        rc, out = await run_sipp("uac_cancel.xml", opensips.sip_addr, {}, tmp_path, timeout=20)
        assert rc == 0, out + opensips.log()[-3000:]
        got = [m.split("\r\n")[0] for m in sipp_messages(tmp_path)]
        assert "SIP/2.0 487 Request Terminated" in got, got
        await wait_for(lambda: not vc.transport.media.streams, what="media released")
        await asyncio.sleep(3.5)  # past answer_delay: vc must not answer the cancelled call
        assert not vc.recorder.started and not vc.transport.b2b.sessions
        await assert_no_leftovers(opensips)


async def test_restart_mid_run(
    opensips: RealOpenSIPS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the default settings: OpenSIPS down -> vc not ready within seconds; back (a new
    run: new start time) -> subscribed again, logged; a quick stop+start likewise; the next
    call is answered."""
    caplog.set_level("INFO", logger="vc.transport.opensips.b2b")
    audio = tmp_path / "silence.pcmu"
    audio.write_bytes(pcm_to_ulaw(bytes(16000)))
    async with VC(transport=vc_settings(opensips, defaults=True)) as vc:
        b2b = vc.transport.b2b
        s = b2b.settings
        assert (s.probe_interval, s.mi_timeout, s.subscription_retry) == (1.0, 2.0, 1.0)
        assert vc.transport.ready()
        await asyncio.sleep(1.1)  # "Up since" counts seconds: let this run be a second old
        await opensips.stop()
        t0 = time.monotonic()
        await wait_for(lambda: not vc.transport.ready(), timeout=5, what="readiness to drop")
        down_noticed = time.monotonic() - t0
        await asyncio.sleep(1.0)
        assert not vc.transport.ready(), "ready while OpenSIPS is down"
        assert vc.app.checks()["transport.opensips"] is False  # what /readyz reports
        assert "OpenSIPS was unreachable" in vc.transport.not_ready_reason()
        await opensips.start()
        t0 = time.monotonic()
        await wait_for(vc.transport.ready, timeout=5, what="re-subscription")
        back = time.monotonic() - t0
        assert b2b.restarts == 1
        await asyncio.sleep(1.1)
        # A quick restart: stop and start at once.
        await opensips.stop()
        await opensips.start()
        t0 = time.monotonic()
        await wait_for(lambda: b2b.restarts == 2 and vc.transport.ready(), timeout=5, what="quick restart")
        quick = time.monotonic() - t0
        subs = await opensips.call("subscribers_list")
        sockets = [s["socket"] for e in subs["Events"] for s in e["Subscribers"]]
        assert f"udp:{LOCAL}:{vc.transport.event_port}" in sockets
        restored = [r.message for r in caplog.records if "restored" in r.message]
        assert len(restored) == 2, restored
        t0 = time.monotonic()
        rc, out = await run_sipp(
            "uac_b2b.xml", opensips.sip_addr, {"audio": str(audio), "hold_ms": "500"}, tmp_path, timeout=20
        )
        assert rc == 0, out + opensips.log()[-3000:]
        call_took = time.monotonic() - t0
        print(
            f"\nOpenSIPS down noticed after {down_noticed:.2f}s; re-subscribed {back:.2f}s after "
            f"it was up again; quick restart re-subscribed {quick:.2f}s after it was up; "
            f"next call (INVITE..BYE) {call_took:.2f}s"
        )
        # Defaults: two unanswered probes (1 s apart, 1 s each: 3 s at most); then a subscription
        # attempt every second (1 s timeout + 1 s pause: 2 s at most). A loaded CI gets slack.
        assert down_noticed < 4.5 and back < 3.5 and quick < 3.5
    await assert_no_leftovers(opensips)


# -- the stand-in, pinned to the real server ------------------------------------------------


class Caller(asyncio.DatagramProtocol):
    """A raw SIP caller that keeps every byte it receives (a wire tap)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.received: list[str] = []
        self.branch = "z9hG4bK" + secrets.token_hex(6)
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)

    async def start(self) -> Caller:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(LOCAL, 0))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data.decode(errors="replace"))

    def headers(self, method: str, to_tag: str = "", cseq: int = 1, branch: str = "") -> str:
        return (
            f"Via: SIP/2.0/UDP {LOCAL}:{self.port};branch={branch or self.branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@{LOCAL}>;tag={self.tag}\r\n"
            f"To: <sip:ai@{LOCAL}>" + (f";tag={to_tag}" if to_tag else "") + "\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:alice@{LOCAL}:{self.port}>\r\n"
        )

    def send(
        self,
        to: tuple[str, int],
        method: str,
        body: str = "",
        to_tag: str = "",
        cseq: int = 1,
        new_branch: bool = False,
    ) -> None:
        """INVITE, its CANCEL and the ACK of a non-2xx share the INVITE's branch."""
        assert self.transport is not None
        branch = "z9hG4bK" + secrets.token_hex(6) if new_branch else self.branch
        ct = "Content-Type: application/sdp\r\n" if body else ""
        msg = (
            f"{method} sip:ai@{to[0]}:{to[1]} SIP/2.0\r\n"
            f"{self.headers(method, to_tag, cseq, branch)}{ct}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.transport.sendto(msg.encode(), to)

    def unique(self) -> list[str]:
        """Received messages without retransmissions, in order."""
        seen, out = set(), []
        for m in self.received:
            first = (m.split("\r\n")[0], header(m, "CSeq"))
            if first not in seen:
                seen.add(first)
                out.append(m)
        return out


class Events(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.port = 0

    async def start(self) -> Events:
        t, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(LOCAL, 0))
        self.port = t.get_extra_info("sockname")[1]
        self.transport = t
        return self

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.events.append(json.loads(data)["params"])

    def of(self, etype: str, method: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == etype and e["method"] == method]


SDP = f"v=0\r\no=- 1 1 IN IP4 {LOCAL}\r\ns=-\r\nc=IN IP4 {LOCAL}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


async def _real_flows(server: RealOpenSIPS) -> dict[str, Any]:
    """Play vc's part by hand over MI against the real server; return what the caller got."""
    ev = await Events().start()
    out: dict[str, Any] = {}
    try:
        assert await server.call("event_subscribe", ["E_UA_SESSION", f"udp:{LOCAL}:{ev.port}", 60]) == "OK"
        for name, content_type in (("answer", None), ("bare content_type", "application/sdp")):
            caller = await Caller().start()
            caller.send(server.sip_addr, "INVITE", SDP)
            new = await wait_for(
                lambda c=caller: [e for e in ev.of("NEW", "INVITE") if c.call_id in e["headers"]], what="NEW"
            )
            key = new[0]["key"]
            params = {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": SDP}
            if content_type:
                params["content_type"] = content_type
            assert await server.call("ua_session_reply", params) == "OK"
            await wait_for(lambda c=caller: any(m.startswith("SIP/2.0 200") for m in c.received), what="200")
            # ACK and BYE straight to OpenSIPS (the bare content_type left no Contact to use).
            caller.send(server.sip_addr, "ACK", to_tag=key, new_branch=True)
            # The BYE after OpenSIPS has taken the ACK (a BYE overtaking it in another worker
            # is answered without Contact).
            await wait_for(lambda k=key: [e for e in ev.of("UPDATED", "ACK") if e["key"] == k], what="ACK")
            caller.send(server.sip_addr, "BYE", to_tag=key, cseq=2, new_branch=True)
            await wait_for(
                lambda c=caller: any("BYE" in header(m, "CSeq") for m in c.received), what="BYE 200"
            )
            await asyncio.sleep(0.1)
            out[name] = (caller.unique(), new[0], params)
            caller.transport.close()
        caller = await Caller().start()
        caller.send(server.sip_addr, "INVITE", SDP)
        new = await wait_for(
            lambda: [e for e in ev.of("NEW", "INVITE") if caller.call_id in e["headers"]], what="NEW"
        )
        key = new[0]["key"]
        ring = {"key": key, "method": "INVITE", "code": 180, "reason": "Ringing"}
        assert await server.call("ua_session_reply", ring) == "OK"
        await wait_for(lambda: any(" 180 " in m for m in caller.received), what="180")
        caller.send(server.sip_addr, "CANCEL")
        cancel = await wait_for(lambda: ev.of("TERMINATED", "CANCEL"), what="TERMINATED CANCEL")
        assert cancel[0]["key"] == key
        # What vc does on TERMINATED/CANCEL before the answer:
        assert (
            await server.call(
                "ua_session_reply",
                {"key": key, "method": "INVITE", "code": 487, "reason": "Request Terminated"},
            )
            == "OK"
        )
        assert await server.call("ua_session_terminate", {"key": key}) == "OK"
        await wait_for(lambda: any(" 487 " in m for m in caller.received), what="487")
        caller.send(server.sip_addr, "ACK", to_tag=key)
        await asyncio.sleep(0.2)
        out["cancel"] = (caller.unique(), new[0], cancel[0])
        out["left"] = await server.call("ua_session_list")
        caller.transport.close()
    finally:
        with contextlib.suppress(MIError):
            await server.call("event_subscribe", ["E_UA_SESSION", f"udp:{LOCAL}:{ev.port}", 0])
        ev.transport.close()
    return out


def _shape(messages: list[str]) -> list[tuple[str, list[str]]]:
    return [(m.split("\r\n")[0].split(" sip:")[0], header_names(m)) for m in messages]


async def test_standin_puts_on_the_wire_what_real_opensips_does(opensips: RealOpenSIPS) -> None:
    """The same MI commands give the same SIP messages (status, header names and order) from
    the stand-in as from OpenSIPS 3.6.8: the 200 OK without content_type, with a bare one
    (the defect), and CANCEL -> 200 canceling -> vc's 487; and events of the same shape."""
    real = await _real_flows(opensips)
    standin = await OpenSIPSStandIn().start()
    ev = await Events().start()
    try:
        standin.handle(
            {"method": "event_subscribe", "params": ["E_UA_SESSION", f"udp:{LOCAL}:{ev.port}", 60]}
        )
        for name in ("answer", "bare content_type"):
            wire, new, params = real[name]
            caller = Caller()
            caller.port = 5062
            standin.wire.clear()
            key = standin.invite(SDP, headers=caller.headers("INVITE") + "Content-Type: application/sdp\r\n")
            assert standin.handle({"method": "ua_session_reply", "params": dict(params, key=key)}) == "OK"
            standin.event({"key": key, "event_type": "UPDATED", "method": "ACK"})
            standin.bye(key)
            # Same messages with the same header names in the same order.
            assert _shape(standin.wire) == _shape(wire), (name, standin.wire, wire)
            ok_real = next(m for m in wire if m.startswith("SIP/2.0 200"))
            ok_standin = next(m for m in standin.wire if m.startswith("SIP/2.0 200"))
            assert header(ok_standin, "Content-Type") == header(ok_real, "Content-Type")
            if name == "answer":
                assert header(ok_real, "Contact") == f"<sip:{LOCAL}:{opensips.sip_port}>"
                assert header(ok_real, "Content-Type") == "application/sdp"
            else:  # the defect vc had: the bare value swallows the Contact header's name
                assert "application/sdpContact" in header_names(ok_real)
                assert not header(ok_real, "Contact") and not header(ok_real, "Content-Type")
        wire, new, cancel = real["cancel"]
        standin.wire.clear()
        caller = Caller()
        caller.port = 5062
        key = standin.invite(SDP, headers=caller.headers("INVITE") + "Content-Type: application/sdp\r\n")
        standin.handle(
            {
                "method": "ua_session_reply",
                "params": {"key": key, "method": "INVITE", "code": 180, "reason": "Ringing"},
            }
        )
        standin.cancel(key)
        await wait_for(lambda: ev.of("TERMINATED", "CANCEL"), what="stand-in TERMINATED CANCEL")
        standin.handle(
            {
                "method": "ua_session_reply",
                "params": {"key": key, "method": "INVITE", "code": 487, "reason": "Request Terminated"},
            }
        )
        standin.handle({"method": "ua_session_terminate", "params": {"key": key}})
        assert _shape(standin.wire) == _shape(wire), (standin.wire, wire)
        assert [m.split("\r\n")[0] for m in wire] == [
            "SIP/2.0 100 Giving it a try",
            "SIP/2.0 180 Ringing",
            "SIP/2.0 200 canceling",
            "SIP/2.0 487 Request Terminated",
        ]
        assert real["left"] == [] and not standin.entities
        # The events carry the same parameters, of the same JSON types.
        got_new = await wait_for(lambda: ev.of("NEW", "INVITE"), what="stand-in NEW")
        for real_event, standin_event in ((new, got_new[-1]), (cancel, ev.of("TERMINATED", "CANCEL")[0])):
            assert {k: type(v) for k, v in real_event.items()} == {
                k: type(v) for k, v in standin_event.items()
            }
    finally:
        ev.transport.close()
        standin.close()

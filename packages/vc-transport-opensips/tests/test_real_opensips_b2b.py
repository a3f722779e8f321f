"""B2B mode against the REAL OpenSIPS 3.6.8 (not the stand-in): deploy/opensips/opensips-b2b.cfg
run as its own process, vc's transport subscribed to it, real SIP callers (SIPp, pjsua2) and a
scripted caller (``RoutedCaller`` of real_opensips) for the flows SIPp cannot check (bot BYE,
hold/resume audio, REFER). OpenSIPS is the caller's only peer: every request goes to its
Contact, every request vc makes OpenSIPS send comes from it; media flows directly.

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
    RtpPhone,
    answer_media,
    header,
    header_names,
)
from real_opensips import (
    DEPLOY,
    RealOpenSIPS,
    RoutedCaller,
    common_subs,
    sipp_messages,
    substitute,
)
from test_pjsua import tone_seconds, write_wav
from test_sipp import run_sipp
from vc_transport_opensips import sipmsg
from vc_transport_opensips.b2b import refer_params
from vc_transport_opensips.mi import MIError
from vc_transport_opensips.sdp import parse_offer
from vc_transport_opensips.sipmsg import Request, Response

from vc.audio import pcm_to_ulaw
from vc.call import CallControlError
from vc.testing import until
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


def assert_clean_log(server: RealOpenSIPS) -> None:
    """OpenSIPS had nothing to complain about (a request for a deleted entity, a reply it could
    not send, a malformed header would all log an ERROR)."""
    errors = [line for line in server.log().splitlines() if "ERROR:" in line or "CRITICAL:" in line]
    assert not errors, "\n".join(errors[-20:])


async def b2b_call(opensips: RealOpenSIPS, caller: RoutedCaller, phone: RtpPhone) -> Response:
    """INVITE -> 200 from OpenSIPS (its Contact, no Record-Route: a B2BUA, not a proxy) -> ACK
    to that Contact; RTP starts to the answer's address (vc's)."""
    to = opensips.sip_addr
    caller.send(caller.invite(to, phone.sdp()), to)
    ok = await caller.expect("INVITE", 200)
    caller.learn_dialog(ok)
    assert caller.contact == f"sip:{LOCAL}:{opensips.sip_port}" and caller.route == [], ok.headers
    caller.send(caller.ack(to), to)
    addr, _ = answer_media(ok)
    phone.connect(addr)
    return ok


def from_opensips(opensips: RealOpenSIPS, caller: RoutedCaller, request: Request) -> bool:
    """A request reached the caller from OpenSIPS (its Via alone: vc is not on the SIP path),
    in the caller's dialog, sent to the caller's Contact."""
    vias = request.get_all("Via")
    return (
        len(vias) == 1
        and f"{LOCAL}:{opensips.sip_port};" in vias[0]
        and request.uri == f"sip:caller@{LOCAL}:{caller.port}"
        and request.call_id == caller.call_id
        and request.to_tag == caller.from_tag
        and request.from_tag == caller.to_tag
    )


def reinvite_ok(caller: RoutedCaller, cseq: int) -> list[Response]:
    return [r for r in caller.responses("INVITE", 200) if r.cseq[0] == cseq]


def confirmed(vc: VC) -> bool:
    return any(s.confirmed for s in vc.transport.b2b.sessions.values())


async def all_released(vc: VC, opensips: RealOpenSIPS) -> None:
    """No call, B2B session, RTP stream or port left in vc; no entity left in OpenSIPS."""
    await until(
        lambda: not vc.transport.media.pool.in_use and not vc.transport.media.streams,
        what="RTP ports released",
    )
    await until(lambda: not vc.transport.b2b.sessions, what="B2B sessions forgotten")
    assert not vc.app.engine.sessions
    await assert_no_leftovers(opensips)


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
        await until(
            lambda: any(s.confirmed for s in b2b.sessions.values()) or sipp.done(),
            within=15,
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
        await until(lambda: vc.recorder.ended, what="the BYE to end the call")
        info, profile = vc.recorder.started[0]
        assert info.from_ == "+15550001111" and profile == "default"
        assert info.params["profile"] == "default", "extra_params of ua_session_server_init"
        # vc heard the caller: the RTP SIPp streamed reached vc's socket and the STT.
        assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
        await until(lambda: not vc.transport.media.pool.in_use, what="RTP port release")
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
        await until(lambda: vc.recorder.ended, what="pjsua2's BYE to end the call")
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
        await until(lambda: not vc.transport.media.streams, what="media released")
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
        await until(lambda: not vc.transport.ready(), within=5, what="readiness to drop")
        down_noticed = time.monotonic() - t0
        await asyncio.sleep(1.0)
        assert not vc.transport.ready(), "ready while OpenSIPS is down"
        assert vc.app.checks()["transport.opensips"] is False  # what /readyz reports
        assert "OpenSIPS was unreachable" in vc.transport.not_ready_reason()
        await opensips.start()
        t0 = time.monotonic()
        await until(vc.transport.ready, within=5, what="re-subscription")
        back = time.monotonic() - t0
        assert b2b.restarts == 1
        await asyncio.sleep(1.1)
        # A quick restart: stop and start at once.
        await opensips.stop()
        await opensips.start()
        t0 = time.monotonic()
        await until(lambda: b2b.restarts == 2 and vc.transport.ready(), within=5, what="quick restart")
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


async def test_bot_hangs_up_with_bye_through_opensips(opensips: RealOpenSIPS, phone: RtpPhone) -> None:
    """The caller says goodbye, the fake LLM calls end_call: vc's ua_session_terminate makes
    OpenSIPS send BYE in the caller's dialog after the goodbye was heard; the caller's 200 ends
    OpenSIPS's transaction (no retransmission) and nothing is left on either side."""
    caller = await RoutedCaller().start()
    try:
        async with VC(transport=vc_settings(opensips), script="goodbye") as vc:
            await b2b_call(opensips, caller, phone)
            await until(lambda: phone.loud(), what="greeting")
            await asyncio.sleep(phone.say(speech("Okay, goodbye!")))
            byes = await until(lambda: caller.requests("BYE"), within=30, what="BYE from OpenSIPS")
            t_bye, bye = byes[0]
            assert from_opensips(opensips, caller, bye), bye.headers
            assert bye.cseq[1] == "BYE" and not bye.body
            loud = phone.loud()
            assert loud and max(loud) <= t_bye, "BYE before the goodbye was heard"
            await until(lambda: vc.recorder.ended, what="call end")
            assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
            # The caller answered 200 (RoutedCaller does): OpenSIPS took it, else its tm would
            # retransmit the BYE after T1 (0.5 s).
            await asyncio.sleep(1.0)
            assert len(caller.requests("BYE")) == 1, "OpenSIPS retransmitted the BYE"
            await all_released(vc, opensips)
    finally:
        await caller.close()
    assert_clean_log(opensips)


async def test_hold_and_resume_through_opensips(opensips: RealOpenSIPS, phone: RtpPhone) -> None:
    """re-INVITEs through OpenSIPS: sendonly (hold) -> vc answers recvonly and stops sending;
    inactive -> inactive, still silent; sendrecv (resume) -> sendrecv on the same port, vc sends
    again and the caller hears the bot answer its question. Each answer is vc's SDP (its RTP
    port, a new o= version) in a 200 from OpenSIPS."""
    caller = await RoutedCaller().start()
    try:
        async with VC(transport=vc_settings(opensips), script="what time is it") as vc:
            to = opensips.sip_addr
            ok = await b2b_call(opensips, caller, phone)
            first = parse_offer(ok.body.decode())
            versions = [int(ok.body.decode().split("o=")[1].split()[2])]
            await until(lambda: confirmed(vc), what="ACK")
            await until(lambda: len(phone.received) > 10, what="RTP from vc")

            async def reinvite(direction: str) -> Any:
                caller.send(caller.in_dialog("INVITE", to, body=phone.sdp(extra=f"a={direction}")), to)
                cseq = caller.cseq
                (ok, *_) = await until(lambda: reinvite_ok(caller, cseq), what=f"200 to {direction}")
                assert ok.get("Contact") == f"<sip:{LOCAL}:{opensips.sip_port}>"
                assert ok.to_tag == caller.to_tag
                caller.send(caller.in_dialog("ACK", to, cseq=cseq), to)
                body = ok.body.decode()
                versions.append(int(body.split("o=")[1].split()[2]))
                answer = parse_offer(body)
                assert (answer.address, answer.port, answer.formats[0]) == (
                    first.address,
                    first.port,
                    first.formats[0],
                ), body
                return answer

            def silent_for(seconds: float) -> Any:
                async def check() -> None:
                    await asyncio.sleep(0.3)  # packets already on their way
                    n = len(phone.received)
                    await asyncio.sleep(seconds)
                    assert len(phone.received) - n <= 1, "vc kept sending RTP to a held caller"

                return check()

            assert (await reinvite("sendonly")).direction == "recvonly"
            await silent_for(1.0)
            phone.sending = False
            assert (await reinvite("inactive")).direction == "inactive"
            await silent_for(0.7)
            phone.sending = True
            assert (await reinvite("sendrecv")).direction == "sendrecv"
            assert versions == sorted(set(versions)), f"o= version not increased: {versions}"
            n = len(phone.received)
            await until(lambda: len(phone.received) > n + 20, what="RTP after resume")
            t_resumed = time.monotonic()
            await asyncio.sleep(phone.say(speech("What time is it now, please?")))
            await until(lambda: phone.loud(after=t_resumed), within=20, what="the answer after resume")
            assert len(vc.recorder.started) == 1 and not vc.recorder.ended
            caller.send(caller.in_dialog("BYE", to), to)
            await caller.expect("BYE", 200)
            await until(lambda: vc.recorder.ended, what="call end")
            await all_released(vc, opensips)
    finally:
        await caller.close()
    assert_clean_log(opensips)


async def test_transfer_sends_refer_through_opensips(opensips: RealOpenSIPS, phone: RtpPhone) -> None:
    """transfer_call in B2B mode: ua_session_update makes OpenSIPS send REFER in the caller's
    dialog with vc's Refer-To/Referred-By intact. A declined REFER (603, reported REJECTED)
    makes the transfer fail; an accepted one (202, reported ANSWERED) returns; the caller's
    NOTIFY (sipfrag 200) is answered 200 and vc ends its leg: OpenSIPS sends BYE."""
    caller = await RoutedCaller().start()
    try:
        async with VC(transport=vc_settings(opensips)) as vc:
            to = opensips.sip_addr
            await b2b_call(opensips, caller, phone)
            await until(lambda: confirmed(vc), what="ACK")
            session = await until(vc.session, what="session")
            caller.auto_answer = False  # this caller declines the first REFER
            declined = asyncio.create_task(session.connection.transfer("+15559990000"))
            ((_, refer),) = await until(lambda: caller.requests("REFER"), what="REFER")
            caller.send(sipmsg.response(refer, 603, "Declined"), to)
            with pytest.raises(CallControlError, match="603"):
                await asyncio.wait_for(declined, 5)
            caller.auto_answer = True
            await session.connection.transfer("+15559990000")  # returns once the 202 is reported
            refers = [r for _, r in caller.requests("REFER")]
            assert len({r.cseq for r in refers}) == 2, "the accepted REFER is the second one"
            refer = refers[-1]
            assert from_opensips(opensips, caller, refer), refer.headers
            assert refer.get("Refer-To") == f"<sip:+15559990000@{LOCAL}>"
            assert refer.get("Referred-By") == f"<sip:ai@{LOCAL}>"  # the number the caller dialled
            # OpenSIPS 3.6.8 copies extra_headers only with a body: vc sends an empty one, and
            # OpenSIPS labels it application/sdp. Every header arrives whole (no garbage).
            assert not refer.body and refer.get("Content-Length") == "0"
            assert [k for k, _ in refer.headers] == [
                "Via", "To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length",
                "User-Agent", "Content-Type", "Refer-To", "Referred-By", "Contact",
            ]  # fmt: skip
            assert not vc.recorder.ended
            caller.send(
                caller.in_dialog(
                    "NOTIFY",
                    to,
                    body="SIP/2.0 200 OK\r\n",
                    content_type="message/sipfrag",
                    headers="Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n",
                ),
                to,
            )
            await caller.expect("NOTIFY", 200)
            ((_, bye),) = await until(lambda: caller.requests("BYE"), what="BYE after the transfer")
            assert from_opensips(opensips, caller, bye), bye.headers
            await until(lambda: vc.recorder.ended, what="call end")
            await all_released(vc, opensips)
    finally:
        await caller.close()
    assert_clean_log(opensips)


async def test_two_concurrent_sipp_calls(opensips: RealOpenSIPS, tmp_path: Path) -> None:
    """Two SIPp callers at once: two B2B entities, two RTP ports, both callers heard, both
    hung up by the callers; afterwards nothing is left in vc or OpenSIPS."""
    pcm = bytes(8000) + speech("What time is it now, please?") + bytes(16000)
    audio = tmp_path / "question.pcmu"
    audio.write_bytes(pcm_to_ulaw(pcm))
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    async with VC(transport=vc_settings(opensips), script="what time is it") as vc:
        keys = {"audio": str(audio), "hold_ms": "4500"}
        both = asyncio.ensure_future(
            asyncio.gather(*(run_sipp("uac_b2b.xml", opensips.sip_addr, keys, d, 30) for d in dirs))
        )
        await until(lambda: len(vc.app.engine.sessions) == 2 or both.done(), within=15, what="two calls")
        assert len(vc.app.engine.sessions) == 2 and len(vc.transport.b2b.sessions) == 2
        assert len(await opensips.call("ua_session_list")) == 2
        for rc, out in await both:
            assert rc == 0, out + opensips.log()[-3000:]
        answers = []
        for d in dirs:
            (ok,) = {
                m
                for m in sipp_messages(d)
                if m.startswith("SIP/2.0 200 OK") and "INVITE" in header(m, "CSeq")
            }
            answers.append(parse_offer(ok.split("\r\n\r\n", 1)[1]).port)
        assert len(set(answers)) == 2, f"both calls answered with one RTP port: {answers}"
        await until(lambda: len(vc.recorder.ended) == 2, what="both calls to end")
        assert len({info.call_id for info, _ in vc.recorder.started}) == 2
        heard = {cid for cid, name, _ in vc.recorder.events if name in ("transcript", "turn")}
        assert len(heard) == 2, vc.recorder.events
        await all_released(vc, opensips)
    assert_clean_log(opensips)


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
        content_type: str = "application/sdp",
        extra: str = "",
    ) -> None:
        """INVITE, its CANCEL and the ACK of a non-2xx share the INVITE's branch."""
        assert self.transport is not None
        branch = "z9hG4bK" + secrets.token_hex(6) if new_branch else self.branch
        ct = f"Content-Type: {content_type}\r\n" if body else ""
        msg = (
            f"{method} sip:ai@{to[0]}:{to[1]} SIP/2.0\r\n"
            f"{self.headers(method, to_tag, cseq, branch)}{extra}{ct}"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.transport.sendto(msg.encode(), to)

    def answer(self, request: str, code: int, to: tuple[str, int]) -> None:
        """The caller's response to a request OpenSIPS sent it (REFER, BYE)."""
        assert self.transport is not None
        parsed = sipmsg.parse(request.encode())
        assert isinstance(parsed, Request), request
        self.transport.sendto(sipmsg.response(parsed, code), to)

    def requests(self, method: str) -> list[str]:
        return [m for m in self.received if m.startswith(f"{method} ")]

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
TRANSFER = ("sip:+15559990000@127.0.0.1", "<sip:ai@127.0.0.1>")
SIPFRAG = "SIP/2.0 200 OK\r\n"
NOTIFY_HEADERS = "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n"


async def _real_dialog(server: RealOpenSIPS, ev: Events) -> tuple[list[str], dict[str, Any]]:
    """An answered call driven over MI as vc drives it: re-INVITE (hold) answered, REFER sent
    with vc's parameters (the caller accepts, 202), the caller's NOTIFY answered,
    ua_session_terminate (OpenSIPS's BYE, answered 200). Returns the wire and the events."""
    caller = await Caller().start()
    to = server.sip_addr
    try:
        caller.send(to, "INVITE", SDP)
        new = await until(
            lambda: [e for e in ev.of("NEW", "INVITE") if caller.call_id in e["headers"]], what="NEW"
        )
        key = new[0]["key"]

        def mine(etype: str, method: str) -> list[dict[str, Any]]:
            return [e for e in ev.of(etype, method) if e["key"] == key]

        ok = {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": SDP}
        assert await server.call("ua_session_reply", ok) == "OK"
        await until(lambda: any(m.startswith("SIP/2.0 200") for m in caller.received), what="200")
        caller.send(to, "ACK", to_tag=key, new_branch=True)
        await until(lambda: mine("UPDATED", "ACK"), what="ACK")
        caller.send(to, "INVITE", SDP + "a=sendonly\r\n", to_tag=key, cseq=2, new_branch=True)
        reinvite = await until(lambda: mine("UPDATED", "INVITE"), what="UPDATED INVITE")
        assert await server.call("ua_session_reply", dict(ok, body=SDP + "a=recvonly\r\n")) == "OK"
        await until(lambda: any(" 200 " in m and "2 INVITE" in m for m in caller.received), what="200")
        caller.send(to, "ACK", to_tag=key, cseq=2, new_branch=True)
        await until(lambda: len(mine("UPDATED", "ACK")) == 2, what="second ACK")
        assert await server.call("ua_session_update", refer_params(key, *TRANSFER)) == "OK"
        refer = await until(lambda: caller.requests("REFER"), what="REFER")
        caller.answer(refer[0], 202, to)
        answered = await until(lambda: mine("ANSWERED", "REFER"), what="ANSWERED REFER")
        caller.send(
            to, "NOTIFY", SIPFRAG, to_tag=key, cseq=3, new_branch=True,
            content_type="message/sipfrag", extra=NOTIFY_HEADERS,
        )  # fmt: skip
        notify = await until(lambda: mine("UPDATED", "NOTIFY"), what="UPDATED NOTIFY")
        reply = {"key": key, "method": "NOTIFY", "code": 200, "reason": "OK"}
        assert await server.call("ua_session_reply", reply) == "OK"
        await until(lambda: any("3 NOTIFY" in m for m in caller.received), what="200 NOTIFY")
        assert await server.call("ua_session_terminate", {"key": key}) == "OK"
        bye = await until(lambda: caller.requests("BYE"), what="BYE")
        caller.answer(bye[0], 200, to)
        await asyncio.sleep(0.6)  # a BYE whose 200 got lost would be sent again by now
        events = {"reinvite": reinvite[0], "answered": answered[0], "notify": notify[0]}
        return caller.unique(), events
    finally:
        assert caller.transport is not None
        caller.transport.close()


async def _real_flows(server: RealOpenSIPS) -> dict[str, Any]:
    """Play vc's part by hand over MI against the real server; return what the caller got."""
    ev = await Events().start()
    out: dict[str, Any] = {}
    try:
        assert await server.call("event_subscribe", ["E_UA_SESSION", f"udp:{LOCAL}:{ev.port}", 60]) == "OK"
        for name, content_type in (("answer", None), ("bare content_type", "application/sdp")):
            caller = await Caller().start()
            caller.send(server.sip_addr, "INVITE", SDP)
            new = await until(
                lambda c=caller: [e for e in ev.of("NEW", "INVITE") if c.call_id in e["headers"]], what="NEW"
            )
            key = new[0]["key"]
            params = {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": SDP}
            if content_type:
                params["content_type"] = content_type
            assert await server.call("ua_session_reply", params) == "OK"
            await until(lambda c=caller: any(m.startswith("SIP/2.0 200") for m in c.received), what="200")
            # ACK and BYE straight to OpenSIPS (the bare content_type left no Contact to use).
            caller.send(server.sip_addr, "ACK", to_tag=key, new_branch=True)
            # The BYE after OpenSIPS has taken the ACK (a BYE overtaking it in another worker
            # is answered without Contact).
            await until(lambda k=key: [e for e in ev.of("UPDATED", "ACK") if e["key"] == k], what="ACK")
            caller.send(server.sip_addr, "BYE", to_tag=key, cseq=2, new_branch=True)
            await until(
                lambda c=caller: any("BYE" in header(m, "CSeq") for m in c.received), what="BYE 200"
            )
            await asyncio.sleep(0.1)
            out[name] = (caller.unique(), new[0], params)
            caller.transport.close()
        caller = await Caller().start()
        caller.send(server.sip_addr, "INVITE", SDP)
        new = await until(
            lambda: [e for e in ev.of("NEW", "INVITE") if caller.call_id in e["headers"]], what="NEW"
        )
        key = new[0]["key"]
        ring = {"key": key, "method": "INVITE", "code": 180, "reason": "Ringing"}
        assert await server.call("ua_session_reply", ring) == "OK"
        await until(lambda: any(" 180 " in m for m in caller.received), what="180")
        caller.send(server.sip_addr, "CANCEL")
        cancel = await until(lambda: ev.of("TERMINATED", "CANCEL"), what="TERMINATED CANCEL")
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
        await until(lambda: any(" 487 " in m for m in caller.received), what="487")
        caller.send(server.sip_addr, "ACK", to_tag=key)
        await asyncio.sleep(0.2)
        out["cancel"] = (caller.unique(), new[0], cancel[0])
        caller.transport.close()
        out["dialog"] = await _real_dialog(server, ev)
        out["left"] = await server.call("ua_session_list")
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
    (the defect), CANCEL -> 200 canceling -> vc's 487, and in an answered call a re-INVITE
    (100 and vc's 200), vc's REFER, the 200 to the caller's NOTIFY and the BYE of
    ua_session_terminate; and events of the same shape."""
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
        await until(lambda: ev.of("TERMINATED", "CANCEL"), what="stand-in TERMINATED CANCEL")
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
        # An answered call: hold, transfer, NOTIFY, bot hang-up.
        wire, real_events = real["dialog"]
        standin.wire.clear()
        caller = Caller()
        caller.port = 5062
        key = standin.invite(SDP, headers=caller.headers("INVITE") + "Content-Type: application/sdp\r\n")
        ok = {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": SDP}
        assert standin.handle({"method": "ua_session_reply", "params": ok}) == "OK"
        standin.event({"key": key, "event_type": "UPDATED", "method": "ACK"})
        reinvite = caller.headers("INVITE", key, 2) + "Content-Type: application/sdp\r\n"
        standin.event(
            {"key": key, "event_type": "UPDATED", "method": "INVITE", "body": SDP, "headers": reinvite}
        )
        reply = dict(ok, body=SDP + "a=recvonly\r\n")
        assert standin.handle({"method": "ua_session_reply", "params": reply}) == "OK"
        standin.event({"key": key, "event_type": "UPDATED", "method": "ACK"})
        assert standin.handle({"method": "ua_session_update", "params": refer_params(key, *TRANSFER)}) == "OK"
        answered = {"key": key, "event_type": "ANSWERED", "method": "REFER", "status": 202}
        standin.event(dict(answered, reason="Accepted", headers=real_events["answered"]["headers"]))
        notify = caller.headers("NOTIFY", key, 3) + NOTIFY_HEADERS
        standin.event(
            {"key": key, "event_type": "UPDATED", "method": "NOTIFY", "body": SIPFRAG, "headers": notify}
        )
        reply = {"key": key, "method": "NOTIFY", "code": 200, "reason": "OK"}
        assert standin.handle({"method": "ua_session_reply", "params": reply}) == "OK"
        assert standin.handle({"method": "ua_session_terminate", "params": {"key": key}}) == "OK"
        assert _shape(standin.wire) == _shape(wire), (standin.wire, wire)
        assert [m.split("\r\n")[0].split(" sip:")[0] for m in wire] == [
            "SIP/2.0 100 Giving it a try",
            "SIP/2.0 200 OK",
            "SIP/2.0 100 Giving it a try",
            "SIP/2.0 200 OK",
            "REFER",
            "SIP/2.0 200 OK",
            "BYE",
        ]
        real_refer = next(m for m in wire if m.startswith("REFER "))
        standin_refer = next(m for m in standin.wire if m.startswith("REFER "))
        for name in ("Refer-To", "Referred-By", "Content-Type", "Content-Length"):
            assert header(standin_refer, name) == header(real_refer, name), name
        assert header(real_refer, "Refer-To") == f"<{TRANSFER[0]}>"
        assert not standin.entities
        await until(lambda: ev.of("UPDATED", "NOTIFY"), what="stand-in UPDATED NOTIFY")
        standin_events = {
            "reinvite": ev.of("UPDATED", "INVITE")[-1],
            "answered": ev.of("ANSWERED", "REFER")[-1],
            "notify": ev.of("UPDATED", "NOTIFY")[-1],
        }
        for name, real_event in real_events.items():
            assert {k: type(v) for k, v in real_event.items()} == {
                k: type(v) for k, v in standin_events[name].items()
            }, name
        # The events carry the same parameters, of the same JSON types.
        got_new = await until(lambda: ev.of("NEW", "INVITE"), what="stand-in NEW")
        for real_event, standin_event in ((new, got_new[-1]), (cancel, ev.of("TERMINATED", "CANCEL")[0])):
            assert {k: type(v) for k, v in real_event.items()} == {
                k: type(v) for k, v in standin_event.items()
            }
    finally:
        ev.transport.close()
        standin.close()

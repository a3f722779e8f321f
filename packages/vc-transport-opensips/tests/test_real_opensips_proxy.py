"""Proxy mode against the REAL OpenSIPS 3.6.8 (not a stand-in): deploy/opensips/opensips-proxy.cfg
(a temporary copy on 127.0.0.1, free ports, its ``$du`` pointing at vc) run as its own process,
vc's SIP user agent behind it, and callers in front of it: SIPp, pjsua2, and a scripted caller
(``RoutedCaller``) for the flows SIPp cannot check (hold/resume audio, bot BYE, REFER).

Every in-dialog request goes to OpenSIPS and is loose-routed by it (Record-Route honoured both
ways); media flows directly between caller and vc, as in the deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import shutil
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensips_kit import LOCAL, VC, RtpPhone, answer_media, header
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
from vc_transport_opensips.sdp import parse_offer
from vc_transport_opensips.sipmsg import Response

from vc.audio import pcm_to_ulaw
from vc.testing import until
from vc.testing.calls import speech

PROXY_CFG = DEPLOY / "opensips-proxy.cfg"

pytestmark = [
    pytest.mark.real_opensips,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) is not installed"),
]
if importlib.util.find_spec("pytest_timeout") is not None:
    # The first test of a machine builds OpenSIPS (about 75 s on 2 cores) in its setup.
    pytestmark.append(pytest.mark.timeout(900))


def adapt_for(vc_port: int) -> Callable[[str, Path, int, int], str]:
    """The shipped proxy script on 127.0.0.1 and a free port, relaying to vc's SIP port."""

    def adapt(text: str, modules: Path, sip_port: int, mi_port: int) -> str:
        du = (r'\$du = "sip:127\.0\.0\.1:8089";', f'$du = "sip:{LOCAL}:{vc_port}";')
        return substitute(text, PROXY_CFG.name, [*common_subs(modules, sip_port), du])

    return adapt


Setup = Callable[..., contextlib.AbstractAsyncContextManager[tuple[VC, RealOpenSIPS]]]


@pytest.fixture
def proxy(opensips_prefix: Path, tmp_path: Path) -> Setup:
    """``async with proxy(**VC kwargs) as (vc, opensips)``: vc first (any free SIP port), then
    OpenSIPS relaying to it; its log is shown when the test fails, and an ERROR it logged fails
    the test."""

    @contextlib.asynccontextmanager
    async def run(**vc_kwargs: Any) -> AsyncIterator[tuple[VC, RealOpenSIPS]]:
        async with VC(**vc_kwargs) as vc:
            workdir = tmp_path / "opensips"
            workdir.mkdir(exist_ok=True)
            server = RealOpenSIPS(
                opensips_prefix, workdir, PROXY_CFG, adapt_for(vc.transport.sip_port), mi=False
            )
            await server.start()
            try:
                yield vc, server
            except BaseException:
                print(server.log()[-4000:])
                raise
            finally:
                await server.close()
            # The script ran clean: nothing the real server had to complain about.
            errors = [line for line in server.log().splitlines() if "ERROR:" in line or "CRITICAL:" in line]
            assert not errors, "\n".join(errors[-20:])

    return run


async def routed_call(opensips: RealOpenSIPS, caller: RoutedCaller, phone: RtpPhone) -> Response:
    """INVITE -> 200 (Record-Route of OpenSIPS) -> ACK through OpenSIPS; RTP starts."""
    to = opensips.sip_addr
    caller.send(caller.invite(to, phone.sdp()), to)
    ok = await caller.expect("INVITE", 200)
    caller.learn_dialog(ok)
    assert len(caller.route) == 1 and record_route(opensips, caller.from_tag, caller.route[0]), caller.route
    caller.send(caller.ack(to), to)
    addr, _ = answer_media(ok)
    phone.connect(addr)
    return ok


def record_route(opensips: RealOpenSIPS, ftag: str, value: str) -> bool:
    """OpenSIPS's Record-Route: loose routing, the From-tag (``append_fromtag``) and the
    dialog module's ``did`` (``create_dialog``)."""
    pattern = rf"<sip:{re.escape(LOCAL)}:{opensips.sip_port};lr;ftag={re.escape(ftag)};did=[^;>]+>"
    return re.fullmatch(pattern, value) is not None


def via_opensips(opensips: RealOpenSIPS, request: Any) -> bool:
    """A request vc sent reached the caller through OpenSIPS (its Via on top, vc's below)."""
    vias = request.get_all("Via")
    return f"{LOCAL}:{opensips.sip_port}" in vias[0] and len(vias) == 2


def confirmed(vc: VC) -> bool:
    return any(d.confirmed for d in vc.transport.ua.dialogs.values())


# -- calls ----------------------------------------------------------------------------------


async def test_sipp_call_record_routed_acked_and_hung_up(proxy: Setup, tmp_path: Path) -> None:
    """INVITE relayed with X-AI-Processing -> 200 OK carrying OpenSIPS's Record-Route and vc's
    Contact -> ACK and BYE loose-routed by OpenSIPS to vc -> the caller's RTP reaches vc."""
    pcm = bytes(8000) + speech("What time is it now, please?") + bytes(16000)
    audio = tmp_path / "question.pcmu"
    audio.write_bytes(pcm_to_ulaw(pcm))
    async with proxy(script="what time is it") as (vc, opensips):
        sipp = asyncio.create_task(
            run_sipp(
                "uac_proxy.xml", opensips.sip_addr, {"audio": str(audio), "hold_ms": "5000"}, tmp_path, 30
            )
        )
        await until(lambda: confirmed(vc) or sipp.done(), within=15, what="the ACK to reach vc")
        assert not sipp.done(), (await sipp)[1]
        rc, out = await sipp
        assert rc == 0, out
        oks = [
            m
            for m in sipp_messages(tmp_path)
            if m.startswith("SIP/2.0 200") and "INVITE" in header(m, "CSeq")
        ]
        assert len(oks) == 1, "vc retransmitted its 200 OK: the ACK did not reach it in time"
        ok = oks[0]
        assert record_route(opensips, header(ok, "From").split("tag=")[1], header(ok, "Record-Route"))
        assert header(ok, "Contact") == f"<sip:vc@{LOCAL}:{vc.transport.sip_port}>"
        await until(lambda: vc.recorder.ended, what="the BYE to end the call")
        info, _ = vc.recorder.started[0]
        assert info.from_ == "+15550001111"
        assert info.params["ai-processing"] == "enabled", info.params  # added by the script
        assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
        await until(lambda: not vc.transport.media.pool.in_use, what="RTP port release")
        await until(lambda: not vc.transport.ua.dialogs, within=5, what="dialog forgotten")


@pytest.mark.skipif(
    importlib.util.find_spec("pjsua2") is None,
    reason="pjsua2-python is not installed (it is the caller that records what it hears)",
)
async def test_pjsua_hears_vc_and_vc_hears_pjsua(proxy: Setup, tmp_path: Path) -> None:
    """A real softphone through OpenSIPS: pjsua2 records vc's greeting and answer (440 Hz fake
    voice, found by frequency: not silence), vc transcribes its question; pjsua2 hangs up."""
    rate = 8000
    question = speech("What time is it now, please?")
    lead = 3.0
    play = tmp_path / "question.wav"
    write_wav(play, bytes(int(lead * rate) * 2) + question + bytes(rate * 2))
    record = tmp_path / "heard.wav"
    async with proxy(script="what time is it", greeting="Hello there, how can I help you?") as (vc, opensips):
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
        assert "CONFIRMED" in text, text[-3000:]
        await until(lambda: vc.recorder.ended, what="pjsua2's BYE to end the call")
        assert vc.recorder.named("transcript") or vc.recorder.named("turn"), vc.recorder.events
    with wave.open(str(record)) as w:
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        windows = tone_seconds(heard, w.getframerate())
    asked_until = lead + len(question) / 2 / rate
    assert any(t < lead for t in windows), f"pjsua2 did not hear the greeting: {windows}"
    assert any(t > asked_until for t in windows), f"pjsua2 did not hear the answer: {windows}"


async def test_bot_hangs_up_with_bye_through_opensips(proxy: Setup) -> None:
    """The caller says goodbye, the fake LLM calls end_call: vc's BYE (Route: OpenSIPS) reaches
    the caller through OpenSIPS after the goodbye was heard, and OpenSIPS relays the 200 back."""
    phone, caller = await RtpPhone().start(), await RoutedCaller().start()
    try:
        async with proxy(script="goodbye") as (vc, opensips):
            await routed_call(opensips, caller, phone)
            await until(lambda: phone.loud(), what="greeting")
            await asyncio.sleep(phone.say(speech("Okay, goodbye!")))
            t_bye, bye = (await until(lambda: caller.requests("BYE"), within=30, what="BYE from vc"))[0]
            assert via_opensips(opensips, bye), bye.get_all("Via")
            assert bye.uri == f"sip:caller@{LOCAL}:{caller.port}"
            assert bye.to_tag == caller.from_tag and bye.from_tag == caller.to_tag
            loud = phone.loud()
            assert loud and max(loud) <= t_bye
            await until(lambda: vc.recorder.ended, what="call end")
            # vc got the 200 relayed by OpenSIPS (else it would still be retransmitting the BYE).
            await until(lambda: not vc.transport.ua.client_txns, within=5, what="BYE transaction done")
            # The dialog is forgotten once its media is closed too (just after the 200).
            await until(lambda: not vc.transport.ua.dialogs, within=5, what="dialog forgotten")
    finally:
        await phone.close()
        await caller.close()


async def test_sipp_cancel_before_the_answer_gets_487(proxy: Setup, tmp_path: Path) -> None:
    """vc rings (180), the caller cancels: OpenSIPS answers the CANCEL and relays it to vc, vc's
    487 reaches the caller, the caller's ACK is absorbed by OpenSIPS; no call starts."""
    async with proxy(transport="answer_delay = 3") as (vc, opensips):
        rc, out = await run_sipp("uac_cancel.xml", opensips.sip_addr, {}, tmp_path, timeout=20)
        assert rc == 0, out
        got = [m.split("\r\n")[0] for m in sipp_messages(tmp_path)]
        assert "SIP/2.0 180 Ringing" in got and "SIP/2.0 487 Request Terminated" in got, got
        await until(lambda: not vc.transport.media.streams, what="media released")
        await asyncio.sleep(3.0)  # past answer_delay: vc must not answer the cancelled call
        assert not vc.recorder.started and not vc.transport.ua.dialogs


async def test_hold_and_resume_through_opensips(proxy: Setup) -> None:
    """re-INVITE sendonly (hold): vc answers recvonly and stops sending; re-INVITE sendrecv
    (resume): vc sends again and the caller hears the bot answer its question."""
    phone, caller = await RtpPhone().start(), await RoutedCaller().start()
    try:
        async with proxy(script="what time is it") as (vc, opensips):
            to = opensips.sip_addr
            await routed_call(opensips, caller, phone)
            await until(lambda: len(phone.received) > 10, what="RTP")
            caller.send(caller.in_dialog("INVITE", to, body=phone.sdp(extra="a=sendonly")), to)
            ok = await until(
                lambda: [r for r in caller.responses("INVITE", 200) if r.get("CSeq").startswith("2 ")],
                what="200 to the hold re-INVITE",
            )
            held = parse_offer(ok[0].body.decode())
            assert held.direction == "recvonly"
            caller.send(caller.in_dialog("ACK", to, cseq=2), to)
            await asyncio.sleep(0.3)
            n = len(phone.received)
            await asyncio.sleep(1.0)
            assert len(phone.received) - n <= 1, "vc kept sending RTP to a held caller"
            caller.send(caller.in_dialog("INVITE", to, body=phone.sdp()), to)
            ok = await until(
                lambda: [r for r in caller.responses("INVITE", 200) if r.get("CSeq").startswith("3 ")],
                what="200 to the resume re-INVITE",
            )
            resumed = parse_offer(ok[0].body.decode())
            assert resumed.direction == "sendrecv" and resumed.port == held.port
            caller.send(caller.in_dialog("ACK", to, cseq=3), to)
            n = len(phone.received)
            await until(lambda: len(phone.received) > n + 20, what="RTP after resume")
            t_resumed = time.monotonic()
            await asyncio.sleep(phone.say(speech("What time is it now, please?")))
            await until(lambda: phone.loud(after=t_resumed), within=20, what="the answer after resume")
            assert confirmed(vc) and len(vc.recorder.started) == 1
            caller.send(caller.in_dialog("BYE", to), to)
            await caller.expect("BYE", 200)
            await until(lambda: vc.recorder.ended, what="call end")
    finally:
        await phone.close()
        await caller.close()


async def test_transfer_sends_refer_through_opensips(proxy: Setup) -> None:
    """transfer_call in proxy mode: vc sends REFER in the dialog (Route: OpenSIPS), the caller
    gets it from OpenSIPS and accepts (202), reports success with NOTIFY (loose-routed to vc),
    and vc ends its leg with BYE, again through OpenSIPS."""
    phone, caller = await RtpPhone().start(), await RoutedCaller().start()
    try:
        async with proxy() as (vc, opensips):
            to = opensips.sip_addr
            await routed_call(opensips, caller, phone)
            session = await until(vc.session, what="session")
            await session.connection.transfer("+15559990000")  # returns once the 202 is back
            ((_, refer),) = caller.requests("REFER")
            assert via_opensips(opensips, refer), refer.get_all("Via")
            assert refer.get("Refer-To") == f"<sip:+15559990000@{LOCAL}>"
            assert refer.get("Referred-By") == f"<sip:vc@{LOCAL}:{vc.transport.sip_port}>"
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
            (_, bye), *_ = await until(lambda: caller.requests("BYE"), what="BYE after the transfer")
            assert via_opensips(opensips, bye)
            await until(lambda: vc.recorder.ended, what="call end")
    finally:
        await phone.close()
        await caller.close()


async def test_two_concurrent_sipp_calls(proxy: Setup, tmp_path: Path) -> None:
    """Two SIPp callers at once through OpenSIPS: two calls, both heard, both ended."""
    pcm = bytes(8000) + speech("What time is it now, please?") + bytes(16000)
    audio = tmp_path / "question.pcmu"
    audio.write_bytes(pcm_to_ulaw(pcm))
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    async with proxy(script="what time is it") as (vc, opensips):
        keys = {"audio": str(audio), "hold_ms": "5000"}
        runs = asyncio.gather(*(run_sipp("uac_proxy.xml", opensips.sip_addr, keys, d, 30) for d in dirs))
        both = asyncio.ensure_future(runs)
        await until(lambda: len(vc.app.engine.sessions) == 2 or both.done(), within=15, what="two calls")
        assert len(vc.app.engine.sessions) == 2
        for rc, out in await both:
            assert rc == 0, out
        await until(lambda: len(vc.recorder.ended) == 2, what="both calls to end")
        assert len({info.call_id for info, _ in vc.recorder.started}) == 2
        heard = {cid for cid, name, _ in vc.recorder.events if name in ("transcript", "turn")}
        assert len(heard) == 2, vc.recorder.events
        await until(lambda: not vc.transport.media.pool.in_use, what="RTP ports released")


async def test_opensips_restarted_mid_run(proxy: Setup, tmp_path: Path) -> None:
    """OpenSIPS restarted (same script, same port) while a call is up: the call's BYE is still
    loose-routed to vc by the new process (the Route header is all it needs), and the next
    call is answered at once."""
    audio = tmp_path / "silence.pcmu"
    audio.write_bytes(pcm_to_ulaw(bytes(16000)))
    phone, caller = await RtpPhone().start(), await RoutedCaller().start()
    try:
        async with proxy() as (vc, opensips):
            to = opensips.sip_addr
            await routed_call(opensips, caller, phone)
            await until(lambda: confirmed(vc), what="ACK")
            t0 = time.monotonic()
            await opensips.stop()
            await opensips.start()
            up = time.monotonic() - t0
            assert opensips.runs == 2 and opensips.proc.returncode is None
            caller.send(caller.in_dialog("BYE", to), to)
            await caller.expect("BYE", 200, timeout=5)
            await until(lambda: vc.recorder.ended, within=5, what="the old call to end")
            t1 = time.monotonic()
            rc, out = await run_sipp(
                "uac_proxy.xml", to, {"audio": str(audio), "hold_ms": "300"}, tmp_path, timeout=20
            )
            assert rc == 0, out
            oks = [
                m
                for m in sipp_messages(tmp_path)
                if m.startswith("SIP/2.0 200") and "INVITE" in header(m, "CSeq")
            ]
            took = time.monotonic() - t1
            print(f"\nOpenSIPS restart took {up:.2f}s; next call (INVITE..BYE, 0.3 s held) {took:.2f}s")
            assert oks and len(vc.recorder.started) == 2 and took < 5
            await until(lambda: len(vc.recorder.ended) == 2, what="the new call to end")
    finally:
        await phone.close()
        await caller.close()

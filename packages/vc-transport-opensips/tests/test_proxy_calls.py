"""Proxy mode end to end: a scripted SIP caller and a real RTP phone call vc on 127.0.0.1.

vc runs with the fake AI providers (scripted STT, echoing LLM, tone TTS) and the real Silero
VAD, so the caller's audio must be real speech (espeak-ng) for a turn to happen.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest
from opensips_kit import (
    VC,
    RtpPhone,
    SipCaller,
    answer_media,
    place_call,
)
from vc_transport_opensips.sdp import parse_offer

from vc.testing import until
from vc.testing.calls import speech


async def test_answer_headers_and_sdp(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC() as vc:
        sent = caller.invite(vc.sip_addr, phone.sdp("8 0 101"))
        caller.send(sent, vc.sip_addr)
        trying = await caller.expect("INVITE", 100)
        ok = await caller.expect("INVITE", 200)
        # Responses copy Via (both, in order), From, Call-ID, CSeq, Record-Route; To gets a tag.
        vias = [line for line in sent.decode().split("\r\n") if line.startswith("Via:")]
        assert [f"Via: {v}" for v in ok.get_all("Via")] == vias
        assert [f"Via: {v}" for v in trying.get_all("Via")] == vias
        assert ok.get("From").endswith(f"tag={caller.from_tag}")
        assert ok.call_id == caller.call_id and ok.get("CSeq") == "1 INVITE"
        assert ok.get_all("Record-Route") == [
            f"<sip:127.0.0.1:{caller.port};lr;ftag={caller.from_tag}>"
        ]
        assert ok.to_tag and not trying.to_tag
        contact = ok.get("Contact")
        assert "0.0.0.0" not in contact and f":{vc.transport.sip_port}" in contact
        # SDP answer: our codec priority (PCMU first) among what was offered, DTMF kept.
        (ip, port), text = answer_media(ok)
        answer = parse_offer(text)
        assert ip == "127.0.0.1" and port > 0
        assert answer.formats == [0, 101]
        assert answer.rtpmap[101] == ("TELEPHONE-EVENT", 8000)
        assert answer.direction == "sendrecv" and answer.ptime == 20
        caller.learn_dialog(ok)
        caller.send(caller.ack(vc.sip_addr), vc.sip_addr)
        phone.connect((ip, port))
        await until(lambda: vc.recorder.started, what="call start")
        info, _ = vc.recorder.started[0]
        assert info.from_ == "+15550001111" and info.to == "bot" and info.transport == "opensips"
        assert info.params.get("ai-processing") == "enabled"
        caller.send(caller.in_dialog("BYE", vc.sip_addr), vc.sip_addr)
        await caller.expect("BYE", 200)
        await until(lambda: vc.recorder.ended, what="call end")
        await until(lambda: not vc.transport.media.pool.in_use, what="port release")


async def test_conversation_over_rtp(phone: RtpPhone, caller: SipCaller) -> None:
    async with VC(script="what time is it") as vc:
        await place_call(vc, phone, caller)
        # The greeting arrives as sound; RTP flows continuously (silence fill) before it.
        await until(lambda: phone.loud(), what="greeting audio")
        t_question = asyncio.get_running_loop().time()
        dur = phone.say(speech("What time is it now, please?"))
        await asyncio.sleep(dur)
        await until(
            lambda: vc.recorder.named("transcript") or vc.recorder.named("turn"),
            what="a transcribed turn",
        )
        # The fake LLM echoes "You said: what time is it." and the tone TTS speaks it.
        reply = await until(
            lambda: phone.loud(after=t_question + dur + 0.05),
            within=30,
            what="the bot's reply audio",
        )
        assert reply
        packets = [p for _, p in phone.audio_packets()]
        assert len(packets) > 50
        # RFC 3550 stream properties: one SSRC, sequence +1 each packet, timestamp +160.
        assert len({p.ssrc for p in packets}) == 1
        for a, b in pairwise(packets):
            assert (b.sequence - a.sequence) & 0xFFFF == 1
            assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == 160
        # Marker bit on each talk spurt's first packet, never on silence fill.
        from opensips_kit import rms

        markers = [i for i, p in enumerate(packets) if p.marker]
        assert markers, "no talk spurt was marked"
        for i in markers:
            assert rms(phone.decode(packets[i].payload)) > 100
            assert i == 0 or rms(phone.decode(packets[i - 1].payload)) < 50
        caller.send(caller.in_dialog("BYE", vc.sip_addr), vc.sip_addr)
        await caller.expect("BYE", 200)
        await until(lambda: vc.recorder.ended, what="call end")
        assert vc.recorder.ended[0][1] in ("completed", "cancelled")


async def test_the_whole_goodbye_is_sent_before_the_bye(phone: RtpPhone, caller: SipCaller) -> None:
    # RTP reports a mark as soon as the audio before it was sent, and the TTS takes a moment
    # to start: end_call must still wait until the goodbye's text was synthesised and sent.
    async with VC(script="goodbye", extra="[tts.fake]\nfirst_audio_delay = 0.25\n") as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting audio")
        await asyncio.sleep(0.5)
        t_goodbye = asyncio.get_running_loop().time()
        dur = phone.say(speech("Goodbye!"))
        (bye_at, _), *_ = await until(lambda: caller.requests("BYE"), within=30, what="BYE")
        await asyncio.sleep(1.0)  # a goodbye still queued would arrive now
        goodbye = phone.loud(after=t_goodbye + dur)
        # "Goodbye, have a nice day." at 30 ms per character: 0.75 s of tone.
        assert len(goodbye) * 0.02 >= 0.6, f"only {len(goodbye) * 0.02:.2f}s of the goodbye was sent"
        assert goodbye[-1] <= bye_at
        await until(lambda: vc.recorder.ended, what="call end")


async def test_packet_loss_is_measured_per_call(phone: RtpPhone, caller: SipCaller) -> None:
    """The caller's network loses every 10th packet for a while: the call's end reports
    exactly those as lost and concealed (RFC 3550 A.3), in the media_quality event and in
    the vc_rtp_* metrics."""
    async with VC() as vc:
        await place_call(vc, phone, caller)
        await until(lambda: phone.loud(), what="greeting audio")
        # Loss counts from the first packet vc receives (RFC 3550 A.3): the network starts
        # losing only once vc hears the phone (the greeting can be heard before that).
        await until(lambda: any(s.packets_in for s in vc.transport.media.streams),
                    what="vc receiving the phone's audio")
        phone.lose_every = 10
        await until(lambda: len(phone.lost) >= 5, what="five lost packets")
        phone.lose_every = 0
        sent_after = phone.seq
        await until(lambda: phone.seq >= sent_after + 10, what="ten packets after the loss")
        caller.send(caller.in_dialog("BYE", vc.sip_addr), vc.sip_addr)
        await caller.expect("BYE", 200)
        await until(lambda: vc.recorder.named("media_quality"), what="media quality event")
        [quality] = vc.recorder.named("media_quality")
        lost = len(phone.lost)
        assert quality["lost"] == lost and quality["late"] == 0 and quality["duplicate"] == 0
        assert quality["expected"] == quality["received"] + lost
        assert quality["concealed_seconds"] == pytest.approx(lost * 0.02)
        assert quality["loss_ratio"] == round(lost / quality["expected"], 6)
        assert 0 <= quality["jitter_seconds"] <= quality["max_jitter_seconds"]
        metric = vc.app.engine.metrics.registry.get_sample_value
        labels = {"transport": "opensips"}
        assert metric("vc_rtp_packets_total", {**labels, "outcome": "lost"}) == lost
        assert metric("vc_rtp_packets_total", {**labels, "outcome": "received"}) == (
            quality["received"])
        assert metric("vc_rtp_loss_ratio_count", labels) == 1
        assert metric("vc_rtp_concealed_seconds_total", labels) == pytest.approx(lost * 0.02)

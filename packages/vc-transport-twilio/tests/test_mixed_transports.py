"""IV1/IV2: a Twilio call and an OpenSIPS (SIP/RTP) call at once, in one vc process.

Both transports run in the same ``App`` on one engine and one pipeline design: the Twilio
call at 8 kHz µ-law over a Media Stream, the SIP call over RTP. Drives the SIP side with the
opensips package's own test kit (a scripted SIP caller and an RTP phone); skipped when that
package is not installed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from twilio_helpers import Recorder, after_greeting, ini, say_audio, twilio_vc

from vc.testing import until

pytest.importorskip("vc_transport_opensips")
KIT = Path(__file__).resolve().parents[2] / "vc-transport-opensips" / "tests"
if not (KIT / "opensips_kit.py").exists():
    pytest.skip("the opensips test kit is not in this checkout", allow_module_level=True)
sys.path.insert(0, str(KIT))
from opensips_kit import RtpPhone, SipCaller, place_call  # noqa: E402

OPENSIPS = """
[transport.opensips]
sip_ip = 127.0.0.1
sip_port = 0
rtp_bind_ip = 127.0.0.1
rtp_min_port = 0
event_ip = 127.0.0.1
event_port = 0
"""


class _SipTarget:
    def __init__(self, vc) -> None:
        self.sip_addr = ("127.0.0.1", vc.app.transports["opensips"].sip_port)


async def test_twilio_and_opensips_calls_in_one_process():
    text = ini(extra=OPENSIPS).replace("transports = twilio", "transports = twilio, opensips")
    async with twilio_vc(text) as (cloud, vc):
        phone = await RtpPhone().start()
        caller = await SipCaller().start()
        try:
            twilio_call = await cloud.place_call()
            await place_call(_SipTarget(vc), phone, caller, formats="0 101")
            await after_greeting(twilio_call)
            await until(lambda: phone.loud(), what="greeting over RTP")
            sessions = {s.info.transport: s for s in vc.engine.sessions.values()}
            assert set(sessions) == {"twilio", "opensips"}
            assert sessions["twilio"].connection.sample_rate == 8000
            sip_rate = sessions["opensips"].connection.sample_rate

            asked = twilio_call.say(say_audio("what is the weather like today"))
            sip_asked = time.monotonic() + phone.say(say_audio("what is the weather like today"))
            await twilio_call.wait_for_bot_speech(after=asked - 0.3)
            await until(
                lambda: phone.loud(after=sip_asked - 0.3), within=30, what="reply over RTP"
            )
            for session in sessions.values():
                transcripts = Recorder.of(session.info.call_id, "transcript")
                assert len(transcripts) == 1, session.info.transport
            assert sip_rate in (8000, 16000)
        finally:
            await phone.close()
            await caller.close()

"""A simulated Twilio call through vc's real app with the trace middleware in front of it.

Google's front ends add ``X-Cloud-Trace-Context`` to the webhook and to the Media Stream's
WebSocket upgrade. With ``TraceContextMiddleware`` on vc's HTTP app (what the requested core
hook would install), every line of the call carries the trace of its stream request.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest
from gcp_helpers import parse_lines
from vc_gcp.observer import CloudLoggingObserver
from vc_gcp.trace import TraceContextMiddleware

pytest.importorskip("vc_transport_twilio", reason="the Twilio transport carries this call")

from vc_transport_twilio.simulator import SimulatedCall, TwilioCloud
from vc_transport_twilio.testing import serve_vc

from vc.testing import fake_registry
from vc.testing.calls import speech

WEBHOOK_TRACE = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
STREAM_TRACE = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

INI = """
[vc]
observers = event-log, gcp-logging
[stt]
provider = fake
[stt.fake]
script = what are your opening hours
[turn]
end = silence
[llm]
provider = fake
[tts]
provider = fake
[observer.gcp-logging]
mode = always
project = vc-trace-test
metadata_lookup = false
"""


class BehindGoogleFrontEnd(SimulatedCall):
    """Twilio's requests as they reach vc through Google's load balancer (trace headers added)."""

    async def fetch_twiml(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        return await self.cloud.post_signed(
            url, params, headers={"X-Cloud-Trace-Context": f"{WEBHOOK_TRACE}/11;o=1"})

    async def open_socket(self, url: str | None = None, signature: str | None = None,
                          sign: bool = True) -> Any:
        url = url or self.stream_url
        headers = {"User-Agent": "Twilio.TmeWs/1.0", "X-Twilio-Signature": self.cloud.sign(url, {}),
                   "X-Cloud-Trace-Context": f"{STREAM_TRACE}/22;o=1"}
        return await self.cloud.session.ws_connect(self.cloud.local(url), headers=headers, max_msg_size=0)


async def test_every_line_of_a_twilio_call_carries_its_trace() -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.INFO)
    reg = fake_registry(env={"VC_LOAD_PLUGINS": "vc-gcp,vc-transport-twilio"})
    buf = io.StringIO()
    try:
        async with TwilioCloud("http://127.0.0.1:1") as cloud, serve_vc(INI, cloud, reg) as vc:
            vc.app.http.add_middleware(TraceContextMiddleware)  # before the first request
            (obs,) = [o for o in vc.engine.observers if isinstance(o, CloudLoggingObserver)]
            obs.install(buf)
            call = BehindGoogleFrontEnd(cloud, "CA" + "1" * 32, "+15550001111", "+15550002222", "inbound")
            cloud.calls[call.call_sid] = call
            cloud.rest.calls[call.call_sid] = "in-progress"
            await call.answer(cloud.voice_url())
            assert call.webhook_status == 200
            await call.wait_for_bot_speech(within=30)
            await call.wait_for_bot_silence()
            end = call.say(speech("what are your opening hours", 8000))
            await call.wait_for_bot_speech(after=end, within=30)
            await call.wait_for_bot_silence()
            await call.hangup()
            await call.wait_closed()
            for _ in range(500):  # until vc has finished the call on its side
                if not vc.engine.sessions:
                    break
                await asyncio.sleep(0.02)
            obs.uninstall()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [e for e in parse_lines(buf.getvalue())
             if e.get("logging.googleapis.com/labels", {}).get("call_id") == call.call_sid]
    webhook = [e for e in lines if e["message"].endswith("connecting a stream")]
    assert len(webhook) == 1
    assert webhook[0]["logging.googleapis.com/trace"] == f"projects/vc-trace-test/traces/{WEBHOOK_TRACE}"
    assert webhook[0]["logging.googleapis.com/spanId"] == f"{11:016x}"
    rest = [e for e in lines if e is not webhook[0] and "Connect action" not in e["message"]]
    assert {"call started", "transcript", "call ended"} <= {e["message"] for e in rest}
    for e in rest:
        assert e["logging.googleapis.com/trace"] == f"projects/vc-trace-test/traces/{STREAM_TRACE}", e
        assert e["logging.googleapis.com/spanId"] == f"{22:016x}"
        assert e["logging.googleapis.com/labels"]["transport"] == "twilio"

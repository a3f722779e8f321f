"""The caller's side of one phone call, through either real transport.

* Twilio: :class:`vc_transport_twilio.simulator.TwilioCloud` phones vc exactly as Twilio does
  (signed webhook, TwiML, signed Media Stream, 20 ms µ-law frames, marks echoed once played,
  ``clear`` honoured) and plays the bot's audio in real time.
* OpenSIPS (proxy mode): the SIP caller and RTP phone of
  ``packages/vc-transport-opensips/tests/opensips_kit.py``: INVITE/200/ACK, PCMU both ways on a
  20 ms clock, BYE to hang up.

Both give the test the same view: ``say`` caller speech (PCM16 8 kHz), ``heard`` bot audio
with its arrival times, ``hang_up``.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

from vc.audio import rms

ROOT = Path(__file__).resolve().parents[2]
OPENSIPS_TESTS = ROOT / "packages" / "vc-transport-opensips" / "tests"
LOUD = 0.01  # RMS (0..1) above which a 20 ms frame counts as bot speech, not silence


class Line:
    """One call as the caller hears and speaks it."""

    transport = ""

    def say(self, pcm: bytes) -> float:
        """Speak PCM16 8 kHz audio after what is queued; returns when it will have been sent."""
        raise NotImplementedError

    def heard(self, after: float = 0.0) -> list[tuple[float, bytes]]:
        """Bot audio frames (arrival time, PCM16 8 kHz) the caller heard after ``after``."""
        raise NotImplementedError

    def loud(self, after: float = 0.0) -> list[float]:
        return [t for t, pcm in self.heard(after) if rms(pcm) > LOUD]

    def audio(self, after: float = 0.0, until: float = float("inf")) -> bytes:
        return b"".join(pcm for t, pcm in self.heard(after) if t <= until)

    async def hang_up(self) -> None:
        raise NotImplementedError

    def problems(self) -> list[str]:
        """Protocol violations the caller's side noticed."""
        return []


# -- Twilio --------------------------------------------------------------------------------


class TwilioLine(Line):
    transport = "twilio"

    def __init__(self, call: Any) -> None:
        self.call = call

    def say(self, pcm: bytes) -> float:
        return float(self.call.say(pcm))

    def heard(self, after: float = 0.0) -> list[tuple[float, bytes]]:
        return [(t, pcm) for t, pcm in self.call.played if t >= after]

    def clears(self) -> list[float]:
        return list(self.call.clears)

    def sent_after(self, t: float) -> list[float]:
        """Arrival times of media messages vc sent after ``t`` (played or not)."""
        return [ts for ts, _ in self.call.media if ts > t]

    async def hang_up(self) -> None:
        await self.call.hangup()
        await self.call.wait_closed(within=30)

    def problems(self) -> list[str]:
        return list(self.call.protocol_errors)


class TwilioSide:
    """Twilio's cloud, pointed at vc once vc listens."""

    transport = "twilio"

    async def __aenter__(self) -> TwilioSide:
        from vc_transport_twilio.simulator import TwilioCloud

        self.cloud = TwilioCloud("http://127.0.0.1:1")
        await self.cloud.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cloud.stop()

    def ini(self) -> str:
        from vc_transport_twilio.testing import twilio_section

        return "[vc]\ntransports = twilio\n" + twilio_section(self.cloud)

    def attach(self, app: Any, url: str) -> None:
        self.cloud.local_url = url

    async def call(self) -> TwilioLine:
        call = await self.cloud.place_call()
        assert call.webhook_status == 200 and call.ws is not None, (
            f"the voice webhook answered {call.webhook_status}: {call.twiml!r}"
        )
        return TwilioLine(call)


# -- OpenSIPS proxy mode ---------------------------------------------------------------------


def opensips_kit() -> Any:
    if str(OPENSIPS_TESTS) not in sys.path:
        sys.path.insert(0, str(OPENSIPS_TESTS))
    import opensips_kit

    return opensips_kit


class RtpLine(Line):
    transport = "opensips"

    def __init__(self, phone: Any, caller: Any, sip_addr: tuple[str, int]) -> None:
        self.phone = phone
        self.caller = caller
        self.sip_addr = sip_addr

    def say(self, pcm: bytes) -> float:
        self.phone.say(pcm)
        return time.monotonic() + len(self.phone._queue) * 0.02

    def heard(self, after: float = 0.0) -> list[tuple[float, bytes]]:
        return [(t, self.phone.decode(p.payload)) for t, p in self.phone.audio_packets() if t >= after]

    async def hang_up(self) -> None:
        self.caller.send(self.caller.in_dialog("BYE", self.sip_addr), self.sip_addr)
        await self.caller.expect("BYE", 200, timeout=30)

    def problems(self) -> list[str]:
        return [f"{len(self.phone.sources)} RTP sources"] if len(self.phone.sources) > 1 else []


class SipSide:
    """A SIP caller with an RTP phone, calling vc's SIP UAS directly (as OpenSIPS relays it)."""

    transport = "opensips"

    async def __aenter__(self) -> SipSide:
        kit = opensips_kit()
        self.phone = await kit.RtpPhone().start()
        self.caller = await kit.SipCaller().start()
        self.sip_addr = ("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.phone.close()
        await self.caller.close()

    def ini(self) -> str:
        return (
            "[vc]\ntransports = opensips\n[transport.opensips]\nmode = proxy\n"
            "sip_ip = 127.0.0.1\nsip_port = 0\nrtp_bind_ip = 127.0.0.1\nrtp_ip = 127.0.0.1\n"
            "rtp_min_port = 0\n"
        )

    def attach(self, app: Any, url: str) -> None:
        self.sip_addr = ("127.0.0.1", app.transports["opensips"].sip_port)

    async def call(self) -> RtpLine:
        kit = opensips_kit()
        await kit.place_call(types.SimpleNamespace(sip_addr=self.sip_addr), self.phone, self.caller,
                             formats="0 101")
        return RtpLine(self.phone, self.caller, self.sip_addr)


SIDES = {"twilio": TwilioSide, "opensips": SipSide}

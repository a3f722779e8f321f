"""vc's transport contract, for proxy mode (B2B mode: test_real_opensips_contract.py)."""

from __future__ import annotations

from opensips_kit import LOCAL, RtpPhone, SipCaller, answer_media
from vc_transport_opensips.settings import OpenSIPSSettings
from vc_transport_opensips.transport import OpenSIPSTransport

from vc.providers import TransportProvider
from vc.testing.contracts import TransportContract


class PhoneCaller:
    """A SIP phone with its RTP endpoint, as TransportContract drives it."""

    def __init__(self, sip: SipCaller, phone: RtpPhone, target: tuple[str, int]) -> None:
        self.sip = sip
        self.phone = phone
        self.target = target
        self._heard = bytearray()
        self._decoded = 0

    def send_audio(self, pcm: bytes) -> None:
        self.phone.say(pcm)

    def received_audio(self) -> bytes:
        packets = self.phone.audio_packets()
        for _, packet in packets[self._decoded :]:
            self._heard += self.phone.decode(packet.payload)
        self._decoded = len(packets)
        return bytes(self._heard)

    async def hangup(self) -> None:
        self.sip.send(self.sip.in_dialog("BYE", self.target), self.target)
        await self.sip.expect("BYE", 200)

    async def close(self) -> None:
        await self.phone.close()
        await self.sip.close()


class TestOpenSIPSProxyContract(TransportContract):
    provider = OpenSIPSTransport

    def make_settings(self) -> OpenSIPSSettings:
        return OpenSIPSSettings(
            sip_ip="127.0.0.1", sip_port=0, rtp_bind_ip="127.0.0.1", rtp_min_port=0
        )

    async def connect_caller(self, transport: TransportProvider, http_url: str) -> PhoneCaller:
        assert isinstance(transport, OpenSIPSTransport)
        sip, phone = await SipCaller().start(), await RtpPhone().start()
        caller = PhoneCaller(sip, phone, (LOCAL, transport.sip_port))
        try:
            sip.send(sip.invite(caller.target, phone.sdp()), caller.target)
            ok = await sip.expect("INVITE", 200)
            sip.learn_dialog(ok)
            sip.send(sip.ack(caller.target), caller.target)
            phone.connect(answer_media(ok)[0])
        except BaseException:
            await caller.close()
            raise
        return caller

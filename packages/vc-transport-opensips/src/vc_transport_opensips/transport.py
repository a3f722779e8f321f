"""The ``opensips`` transport provider: proxy mode (SIP UAS) or B2B mode (events + MI)."""

from __future__ import annotations

from typing import Any

from vc.providers import CallHost, ProviderError, TransportProvider
from vc_transport_opensips.b2b import B2BController
from vc_transport_opensips.session import MediaManager
from vc_transport_opensips.settings import OpenSIPSSettings
from vc_transport_opensips.sipua import SipUserAgent


class OpenSIPSTransport(TransportProvider):
    name = "opensips"
    Settings = OpenSIPSSettings
    description = (
        "SIP calls through OpenSIPS: proxy mode (own SIP UAS) or B2B mode "
        "(E_UA_SESSION + MI), G.711 RTP"
    )

    def __init__(self, settings: OpenSIPSSettings | None, context: Any) -> None:
        super().__init__(settings or OpenSIPSSettings(), context)
        self.media: MediaManager | None = None
        self.ua: SipUserAgent | None = None
        self.b2b: B2BController | None = None

    async def start(self, host: CallHost) -> None:
        await super().start(host)
        s: OpenSIPSSettings = self.settings
        if s.rtp_min_port and s.rtp_max_port < s.rtp_min_port:
            raise ProviderError(
                f"[transport.opensips] rtp_max_port {s.rtp_max_port} is below "
                f"rtp_min_port {s.rtp_min_port}"
            )
        self.media = MediaManager(s)
        try:
            if s.mode == "proxy":
                self.ua = SipUserAgent(s, self.media, host)
                await self.ua.start()
            else:
                if s.mi_transport.strip().lower() not in ("datagram", "udp"):
                    raise ProviderError(
                        f"[transport.opensips] mi_transport = {s.mi_transport!r}: B2B mode "
                        "speaks MI over mi_datagram only (set mi_transport = datagram)"
                    )
                self.b2b = B2BController(s, self.media, host)
                await self.b2b.start()
        except OSError as e:
            where = (
                f"{s.sip_ip}:{s.sip_port}" if s.mode == "proxy" else f"{s.event_ip}:{s.event_port}"
            )
            raise ProviderError(f"cannot listen on {where}/udp: {e.strerror or e}") from e

    def ready(self) -> bool:
        if self.ua is not None:
            return self.ua.transport is not None and not self.ua.transport.is_closing()
        if self.b2b is not None:
            return self.b2b.ready()
        return False

    def not_ready_reason(self) -> str:
        if self.b2b is not None:
            return self.b2b.not_ready_reason()
        return super().not_ready_reason()

    def alive(self) -> bool:
        """Proxy mode: False while the SIP socket is closed and not yet reopened."""
        if self.ua is not None:
            return self.ua.alive()
        return True

    async def stop(self) -> None:
        if self.ua is not None:
            await self.ua.stop()
        if self.b2b is not None:
            await self.b2b.stop()
        if self.media is not None:
            for stream in list(self.media.streams):
                await self.media.close(stream)

    # -- introspection (tests, metrics) -------------------------------------------------------

    @property
    def sip_port(self) -> int:
        return self.ua.port if self.ua else 0

    @property
    def event_port(self) -> int:
        return self.b2b.event_port if self.b2b else 0

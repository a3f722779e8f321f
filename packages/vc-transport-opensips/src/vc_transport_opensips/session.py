"""What both modes share per call: media setup from an SDP offer, and starting the call in core."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from vc.call import CallInfo
from vc.providers import CallHost
from vc_transport_opensips.addresses import AddressError, advertise, configured_rtp_ip
from vc_transport_opensips.call import SipCall
from vc_transport_opensips.media import RtpStream
from vc_transport_opensips.ports import PortPool, PortsExhausted
from vc_transport_opensips.sdp import Negotiated, SdpError, SdpSession, negotiate, parse_offer
from vc_transport_opensips.settings import OpenSIPSSettings


class CallRefused(Exception):
    """Core would not take the call (starting, draining, at capacity)."""


class SetupRefused(Exception):
    """A step of answering an offer failed: ``reason`` says which (one of the constants below),
    ``detail`` why. Each mode answers it its own way (a SIP response, an MI reply)."""

    CORE = "core"  # core would not take the call now (starting, draining, at capacity)
    NO_OFFER = "no-offer"  # no SDP offer
    NOT_SDP = "not-sdp"  # a body that is not application/sdp
    BAD_OFFER = "bad-offer"  # an SDP offer that does not parse
    NO_CODEC = "no-codec"  # no codec in common
    NO_PORT = "no-port"  # every RTP port is taken
    NO_ADDRESS = "no-address"  # no address to advertise for RTP

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MediaManager:
    """Opens and releases the RTP socket of each call."""

    def __init__(self, settings: OpenSIPSSettings) -> None:
        self.settings = settings
        self.pool = PortPool(settings.rtp_bind_ip, settings.rtp_min_port, settings.rtp_max_port)
        self.streams: set[RtpStream] = set()

    async def open(
        self, neg: Negotiated, log: logging.LoggerAdapter[Any]
    ) -> tuple[RtpStream, SdpSession]:
        """Bind a socket for ``neg``; raises PortsExhausted or AddressError."""
        s = self.settings
        ip = advertise(configured_rtp_ip(s.rtp_ip), s.rtp_bind_ip, neg.remote_address, "RTP")
        _, stream, port = await self.pool.open(
            lambda: RtpStream(
                neg, log, jitter_min_ms=s.jitter_min_ms, jitter_max_ms=s.jitter_max_ms
            )
        )
        self.streams.add(stream)
        return stream, SdpSession(ip, port)

    async def close(self, stream: RtpStream) -> None:
        if stream not in self.streams:
            return
        self.streams.discard(stream)
        await stream.close()
        self.pool.release(stream.local_port)


async def start_call(host: CallHost, conn: SipCall) -> asyncio.Task[str]:
    """Hand the call to core; raises CallRefused when core refuses it straight away."""
    refused = host.admit(conn.info)
    if refused:
        raise CallRefused(refused)
    task = asyncio.create_task(host.run_call(conn), name=f"call-{conn.info.call_id}")
    await asyncio.sleep(0)  # core checks capacity before its first await
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise CallRefused(str(task.exception()))
    return task


async def open_media(
    host: CallHost, info: CallInfo, offer: str, settings: OpenSIPSSettings, media: MediaManager,
    log: logging.LoggerAdapter[Any], content_type: str | None = None,
) -> tuple[Negotiated, RtpStream, SdpSession]:
    """Both modes' answer to an INVITE up to the media: admission, then offer -> negotiate ->
    an RTP socket. ``offer`` is the SDP body (empty: none); ``content_type`` the body's type
    where the signalling says it (SIP; None: not checked). Raises :class:`SetupRefused` (and
    holds nothing then); on success the caller owns the stream (``media.close`` it on failure).
    """
    refused = host.admit(info)
    if refused:
        log.info("core refuses the call: %s", refused)
        raise SetupRefused(SetupRefused.CORE, refused)
    if not offer:
        raise SetupRefused(SetupRefused.NO_OFFER)
    if content_type is not None and content_type != "application/sdp":
        raise SetupRefused(SetupRefused.NOT_SDP, content_type)
    try:
        parsed = parse_offer(offer)
    except SdpError as e:
        raise SetupRefused(SetupRefused.BAD_OFFER, str(e)) from None
    neg = negotiate(parsed, settings.codecs, settings.ptime)
    if neg is None:
        raise SetupRefused(SetupRefused.NO_CODEC, ", ".join(settings.codecs))
    try:
        stream, sdp = await media.open(neg, log)
    except PortsExhausted as e:
        log.error("%s", e)
        raise SetupRefused(SetupRefused.NO_PORT, str(e)) from None
    except AddressError as e:
        log.error("%s", e)
        raise SetupRefused(SetupRefused.NO_ADDRESS, str(e)) from None
    return neg, stream, sdp

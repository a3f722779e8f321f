"""What both modes share per call: media setup from an SDP offer, and starting the call in core."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from vc.providers import CallHost
from vc_transport_opensips.addresses import advertise, configured_rtp_ip
from vc_transport_opensips.call import SipCall
from vc_transport_opensips.media import RtpStream
from vc_transport_opensips.ports import PortPool
from vc_transport_opensips.sdp import Negotiated, SdpSession
from vc_transport_opensips.settings import OpenSIPSSettings


class CallRefused(Exception):
    """Core would not take the call (starting, draining, at capacity)."""


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

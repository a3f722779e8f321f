"""One call's RTP stream: a UDP socket, the inbound path and the outbound clock.

Inbound: RFC 3550 parsing, payload-type filter, symmetric-RTP latching (to the first source
that sends a valid packet; re-latched only when that source fell silent), the jitter buffer,
RFC 4733 telephone-events (each event reported once), G.711 decoding, silence fill while the
caller's phone sends nothing (so the VAD still sees the end of a turn).

Outbound: one task per call on an absolute clock (``start + n * ptime``, no drift: core's
:class:`vc.call.PlayoutPacer`) reads the call's playout buffer each tick: audio is encoded and
sent, a mark is reported at once (the audio before it has been sent in real time), and
silence is sent when nothing is queued; after a stall the clock skips ahead and the RTP
timestamps with it. Each tick also polls the inbound jitter buffer.
Sequence numbers wrap at 2^16 and timestamps at 2^32; the first packet of each talk spurt
carries the marker bit; SSRC, first sequence number and first timestamp are random.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from vc.audio import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from vc.call import Mark, MediaQuality, PlayoutBuffer, PlayoutPacer
from vc_transport_opensips import rtp
from vc_transport_opensips.jitter import Frame, JitterBuffer
from vc_transport_opensips.quality import ReceptionStats
from vc_transport_opensips.sdp import Negotiated

DECODERS: dict[str, Callable[[bytes], bytes]] = {"PCMU": ulaw_to_pcm, "PCMA": alaw_to_pcm}
ENCODERS: dict[str, Callable[[bytes], bytes]] = {"PCMU": pcm_to_ulaw, "PCMA": pcm_to_alaw}
#: Re-latch to a new source only after the latched one was silent this long.
RELATCH_AFTER = 1.0
#: Deliver silence once the caller's RTP paused for this many frames.
SILENCE_FILL_AFTER = 3
#: Beyond this many late frames the outbound clock skips ahead instead of bursting.
MAX_BURST = 5
DROP_LOG_EVERY = 5.0


class RtpStream(asyncio.DatagramProtocol):
    """The RTP endpoint of one call. Create it through :class:`~.ports.PortPool`."""

    def __init__(
        self,
        neg: Negotiated,
        log: logging.LoggerAdapter[Any] | logging.Logger,
        *,
        jitter_min_ms: int = 20,
        jitter_max_ms: int = 200,
    ) -> None:
        self.log = log
        self.neg = neg
        self.transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.jitter = JitterBuffer(
            jitter_min_ms / 1000, jitter_max_ms / 1000, neg.samples_per_frame
        )
        self.reception = ReceptionStats(neg.clock_rate)
        self.on_audio: Callable[[bytes], None] = lambda pcm: None
        self.on_dtmf: Callable[[str], None] = lambda digit: None
        self.latched: tuple[str, int] | None = None
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.packets_in = 0
        self.packets_out = 0
        self.dtmf_digits: list[str] = []
        self.drops: dict[str, int] = {}
        self.closed = asyncio.Event()
        self.last_packet_at = 0.0
        self._talking = False
        self._remote_ssrc: int | None = None
        self._ext = rtp.SequenceExtender()
        self._dtmf_seen: deque[tuple[int, int]] = deque(maxlen=32)
        self._drop_logged: dict[str, float] = {}
        self._last_delivery = 0.0
        self._receiving = False
        self._task: asyncio.Task[None] | None = None
        #: The outbound clock, once :meth:`start` ran.
        self.pacer: PlayoutPacer | None = None
        self._silence = ENCODERS[neg.codec](bytes(2 * neg.samples_per_frame))

    # -- socket ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.local_port = transport.get_extra_info("sockname")[1]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the far end is not listening (yet).
        self.log.debug("RTP socket error: %s", exc)

    @property
    def remote(self) -> tuple[str, int]:
        return self.latched or (self.neg.remote_address, self.neg.remote_port)

    def update(self, neg: Negotiated) -> None:
        """Apply a new offer/answer (re-INVITE: hold, resume, new address)."""
        moved = (neg.remote_address, neg.remote_port) != (
            self.neg.remote_address,
            self.neg.remote_port,
        )
        self.neg = neg
        if self.pacer is not None:
            self.pacer.frame_ms = neg.ptime
        if moved and neg.remote_port:
            self.latched = None  # the far end moved: latch again to whatever it sends from
        self._talking = False

    # -- inbound ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._receive(data, addr)
        except Exception as e:  # a bad packet must never hurt the call
            self._drop("error", addr, f"{type(e).__name__}: {e}")

    def _receive(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if rtp.looks_like_rtcp(data):
            return
        try:
            pkt = rtp.parse(data)
        except rtp.RtpError as e:
            self._drop("malformed", addr, str(e))
            return
        dtmf = pkt.payload_type == self.neg.dtmf_payload_type
        if pkt.payload_type != self.neg.payload_type and not dtmf:
            self._drop("payload type", addr, f"payload type {pkt.payload_type}")
            return
        if self.latched != addr:
            if self.latched is not None and now - self.last_packet_at < RELATCH_AFTER:
                self._drop("source", addr, "not the latched source")
                return
            self.log.info("RTP latched to %s:%d", addr[0], addr[1])
            self.latched = addr
        self.last_packet_at = now
        self.packets_in += 1
        if pkt.ssrc != self._remote_ssrc:
            if self._remote_ssrc is not None:
                self.log.info("caller RTP changed SSRC %08x -> %08x", self._remote_ssrc, pkt.ssrc)
            self._remote_ssrc = pkt.ssrc
            self.jitter.reset()
            self._ext.reset()
            self.reception.new_source()
        seq = self._ext.extend(pkt.sequence)
        self.reception.packet(seq, None if dtmf else pkt.timestamp, now)
        if dtmf:
            self._telephone_event(pkt)
            self._deliver(self.jitter.push(seq, pkt.timestamp, b"", now))
        else:
            self._deliver(self.jitter.push(seq, pkt.timestamp, pkt.payload, now))

    def quality(self) -> MediaQuality:
        """The caller's packets so far: loss, lateness, concealment and jitter."""
        return self.reception.quality(self.jitter.stats)

    def _telephone_event(self, pkt: rtp.RtpPacket) -> None:
        try:
            event = rtp.parse_dtmf(pkt.payload)
        except rtp.RtpError as e:
            self._drop("malformed", self.remote, str(e))
            return
        key = (pkt.ssrc, pkt.timestamp)
        if key in self._dtmf_seen:
            return  # continuation or end (sent three times) of an event already reported
        self._dtmf_seen.append(key)
        digit = event.digit
        if digit is None:
            self.log.debug("ignoring telephone-event %d", event.event)
            return
        self.log.info("DTMF %s", digit)
        self.dtmf_digits.append(digit)
        self.on_dtmf(digit)

    def _deliver(self, frames: list[Frame]) -> None:
        decode = DECODERS[self.neg.codec]
        for f in frames:
            if f.gap:
                self.on_audio(bytes(2 * min(f.gap, self.neg.clock_rate)))
            elif f.payload:
                self.on_audio(decode(f.payload))
            else:
                continue
            self._last_delivery = time.monotonic()
            self._receiving = True

    def _drop(self, reason: str, addr: tuple[str, int], detail: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -DROP_LOG_EVERY) >= DROP_LOG_EVERY:
            self._drop_logged[reason] = now
            self.log.warning(
                "dropped RTP from %s:%d (%s: %s); %d dropped so far for this reason",
                addr[0],
                addr[1],
                reason,
                detail,
                self.drops[reason],
            )

    # -- the clock ---------------------------------------------------------------------------

    def start(self, playout: PlayoutBuffer, on_mark: Callable[[str], None]) -> None:
        if self._task is None:
            self.pacer = PlayoutPacer(
                playout,
                self._tick,
                on_mark,
                frame_ms=self.neg.ptime,
                max_burst=MAX_BURST,
                on_skip=self._skipped,
                log=self.log,
                clock=asyncio.get_running_loop().time,
            )
            self._task = asyncio.create_task(self.pacer.run(), name="rtp-clock")

    def _skipped(self, ticks: int, late: float) -> None:
        self.log.warning(
            "RTP clock %.0f ms late (event loop stalled): skipping ahead", late * 1000
        )
        self.timestamp = (self.timestamp + ticks * self.neg.samples_per_frame) & 0xFFFFFFFF
        self._talking = False

    def _tick(self, item: bytes | None) -> None:
        """One tick of the clock (marks were reported already): send, then poll the inbound."""
        try:
            self._send_frame(item)
        finally:
            self._receive_tick(self.neg.ptime / 1000)

    def _send_tick(self, playout: PlayoutBuffer, on_mark: Callable[[str], None]) -> None:
        """One outbound tick without the clock: report the marks reached, send a frame."""
        item = playout.read()
        while isinstance(item, Mark):
            on_mark(item.name)
            item = playout.read()
        self._send_frame(item)

    def _send_frame(self, item: bytes | None) -> None:
        if item is None:
            payload, marker = self._silence, False
            self._talking = False
        else:
            payload = ENCODERS[self.neg.codec](item)
            marker = not self._talking
            self._talking = True
        if self.neg.sending and self.neg.remote_port and self.transport is not None:
            self.transport.sendto(
                rtp.build(
                    self.neg.payload_type,
                    self.sequence,
                    self.timestamp,
                    self.ssrc,
                    payload,
                    marker=marker,
                ),
                self.remote,
            )
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.packets_out += 1
        self.timestamp = (self.timestamp + self.neg.samples_per_frame) & 0xFFFFFFFF

    def _receive_tick(self, period: float) -> None:
        now = time.monotonic()
        self._deliver(self.jitter.poll(now))
        if (
            self._receiving
            and not self.jitter.held
            and now - self._last_delivery >= SILENCE_FILL_AFTER * period
        ):
            # The caller's phone stopped sending (silence suppression, hold): keep the
            # pipeline's audio clock going so the end of a turn is still detected.
            self.on_audio(bytes(2 * self.neg.samples_per_frame))

    def talk_spurt_reset(self) -> None:
        """Barge-in: the next audio starts a new talk spurt (marker bit)."""
        self._talking = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.transport is not None:
            self.transport.close()

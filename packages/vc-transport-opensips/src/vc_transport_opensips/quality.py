"""Receiver statistics of a call's inbound RTP, as RFC 3550 defines them.

Loss (appendix A.3): the packets expected are the span of extended sequence numbers seen,
first to highest; those not received are lost. Interarrival jitter (section 6.4.1): for each
packet, ``D`` is how much more (or less) time passed between its arrival and the previous
packet's than between their RTP timestamps; the jitter estimate moves 1/16 of the way towards
``|D|`` each packet. A new source (SSRC change, or a sequence jump a jitter buffer resyncs on)
starts a new span and a new transit baseline; the totals carry over.
"""

from __future__ import annotations

from vc.call import MediaQuality
from vc_transport_opensips.jitter import MAX_GAP, JitterStats


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class ReceptionStats:
    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.received = 0
        #: Interarrival jitter, in timestamp units (as RFC 3550 keeps it).
        self.jitter = 0.0
        self.max_jitter = 0.0
        self._expected_before = 0  # packets the earlier sources' spans held
        self._first: int | None = None
        self._highest = 0
        # arrival time and RTP timestamp of the last timed packet (no tuple per packet)
        self._last_arrival: float | None = None
        self._last_ts = 0

    @property
    def expected(self) -> int:
        span = self._highest - self._first + 1 if self._first is not None else 0
        return self._expected_before + span

    def new_source(self) -> None:
        self._expected_before = self.expected
        self._first = None
        self._last_arrival = None

    def packet(self, seq: int, timestamp: int | None, arrival: float) -> None:
        """One packet: ``seq`` extended past 16 bits, ``arrival`` in seconds; ``timestamp``
        None for packets whose timestamps do not advance with time (RFC 4733 events)."""
        if self._first is not None and abs(seq - self._highest) > MAX_GAP:
            self.new_source()
        if self._first is None:
            self._first = self._highest = seq
        self._highest = max(self._highest, seq)
        self.received += 1
        if timestamp is None:
            return
        if self._last_arrival is not None:
            elapsed = (arrival - self._last_arrival) * self.clock_rate
            d = abs(elapsed - _signed32(timestamp - self._last_ts))
            self.jitter += (d - self.jitter) / 16
            self.max_jitter = max(self.max_jitter, self.jitter)
        self._last_arrival, self._last_ts = arrival, timestamp

    def quality(self, buffer: JitterStats) -> MediaQuality:
        """What the caller's audio went through: these counts and the jitter buffer's."""
        arrived = self.received - buffer.duplicate
        return MediaQuality(
            expected=self.expected,
            received=self.received,
            lost=max(0, self.expected - arrived),
            late=buffer.late,
            duplicate=buffer.duplicate,
            concealed_seconds=buffer.concealed_samples / self.clock_rate,
            jitter_seconds=self.jitter / self.clock_rate,
            max_jitter_seconds=self.max_jitter / self.clock_rate,
        )

"""A small adaptive jitter buffer for caller audio.

The consumer is a speech pipeline, not a loudspeaker, so nothing here delays audio that
arrives in order: in-order packets pass straight through. When a packet is missing the
buffer holds what came after it for up to ``wait`` seconds; if the packet turns up it is
slotted back in order, otherwise the gap is concealed and the stream moves on. Packets that
arrive after their slot was concealed are dropped as late, and each late packet lengthens
``wait`` (up to ``max_wait``); ``wait`` shrinks back slowly while the network behaves.
"""

from __future__ import annotations

import attrs

#: A jump this large (packets) is a new stream, not a gap to conceal.
MAX_GAP = 250
#: Most packets held while waiting for a missing one.
MAX_HELD = 64


@attrs.frozen(slots=True)
class Frame:
    """Audio to deliver: ``payload`` for a packet, or ``gap`` samples to conceal."""

    payload: bytes = b""
    gap: int = 0


@attrs.define
class JitterStats:
    received: int = 0
    delivered: int = 0
    late: int = 0
    duplicate: int = 0
    reordered: int = 0
    concealed_packets: int = 0
    concealed_samples: int = 0
    resyncs: int = 0


class JitterBuffer:
    def __init__(
        self, min_wait: float = 0.02, max_wait: float = 0.2, samples_per_frame: int = 160
    ) -> None:
        self.min_wait = min_wait
        self.max_wait = max(max_wait, min_wait)
        self.wait = min_wait
        self.samples_per_frame = samples_per_frame
        self.stats = JitterStats()
        self._held: dict[int, tuple[int, bytes]] = {}
        self._next: int | None = None
        self._next_ts: int | None = None
        self._gap_since: float | None = None
        self._last_poll: float | None = None

    @property
    def held(self) -> int:
        return len(self._held)

    def reset(self) -> None:
        """A new source (SSRC change): forget the old stream."""
        self._held.clear()
        self._next = None
        self._next_ts = None
        self._gap_since = None

    def push(self, seq: int, timestamp: int, payload: bytes, now: float) -> list[Frame]:
        """Add a packet (``seq`` extended past 16 bits); returns what can be delivered now."""
        self.stats.received += 1
        if self._next is None:
            self._next = seq
        if seq < self._next:
            if seq >= self._next - MAX_GAP:
                self.stats.late += 1
                self.wait = min(self.max_wait, self.wait + 0.02)
                return []
            return self._resync(seq, timestamp, payload, now)
        if seq in self._held:
            self.stats.duplicate += 1
            return []
        if seq - self._next > MAX_GAP:
            return self._resync(seq, timestamp, payload, now)
        if seq != self._next:
            self.stats.reordered += 1 if self._held else 0
        self._held[seq] = (timestamp, payload)
        out = self._drain(now)
        if len(self._held) > MAX_HELD:
            out += self._conceal(now)
        return out

    def poll(self, now: float) -> list[Frame]:
        """Conceal a gap that waited long enough; call every few milliseconds."""
        if self._last_poll is not None and self._gap_since is None:
            # Calm network: let the wait shrink back towards the minimum (by 1 ms/s).
            self.wait = max(self.min_wait, self.wait - 0.001 * (now - self._last_poll))
        self._last_poll = now
        if self._held and self._gap_since is not None and now - self._gap_since >= self.wait:
            return self._conceal(now)
        return []

    def _resync(self, seq: int, timestamp: int, payload: bytes, now: float) -> list[Frame]:
        self.stats.resyncs += 1
        out = [Frame(payload=p) for _, (_, p) in sorted(self._held.items())]
        self.stats.delivered += len(out)
        self._held.clear()
        self._next, self._next_ts, self._gap_since = seq, None, None
        self._held[seq] = (timestamp, payload)
        return out + self._drain(now)

    def _drain(self, now: float) -> list[Frame]:
        out: list[Frame] = []
        while self._next in self._held:
            ts, payload = self._held.pop(self._next)
            out.append(Frame(payload=payload))
            self._next += 1
            self._next_ts = (ts + max(len(payload), 1)) & 0xFFFFFFFF
        self.stats.delivered += len(out)
        if not self._held:
            self._gap_since = None
        elif self._gap_since is None or out:
            self._gap_since = now
        return out

    def _conceal(self, now: float) -> list[Frame]:
        assert self._next is not None
        first = min(self._held)
        missing = first - self._next
        samples = missing * self.samples_per_frame
        if self._next_ts is not None:
            diff = (self._held[first][0] - self._next_ts) & 0xFFFFFFFF
            if 0 < diff <= missing * self.samples_per_frame * 4:
                samples = diff
        self.stats.concealed_packets += missing
        self.stats.concealed_samples += samples
        self._next = first
        self._gap_since = None
        return [Frame(gap=samples), *self._drain(now)]

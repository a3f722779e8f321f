"""RTP packets (RFC 3550) and telephone-events (RFC 4733): parsing and building.

Parsing handles CSRC lists, header extensions and padding, and rejects anything malformed
with :class:`RtpError` (callers drop the packet and log it).
"""

from __future__ import annotations

import struct

import attrs

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")
DTMF_EVENTS = "0123456789*#ABCD"


class RtpError(ValueError):
    """Not a valid RTP packet."""


@attrs.frozen(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined id, data)

    def encode(self) -> bytes:
        return build(
            self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
            self.payload,
            marker=self.marker,
            csrc=self.csrc,
            extension=self.extension,
        )


def looks_like_rtcp(data: bytes) -> bool:
    """RTCP packet types 200-204 sit where RTP has marker + payload type (RFC 5761)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raises RtpError."""
    if len(data) < HEADER.size:
        raise RtpError(f"too short for an RTP header ({len(data)} bytes)")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    end = len(data)
    if b0 & 0x20:  # padding: the last byte counts the padding bytes, itself included
        pad = data[-1]
        if pad == 0 or pad > end - HEADER.size:
            raise RtpError(f"bad padding length {pad}")
        end -= pad
    pos = HEADER.size
    cc = b0 & 0x0F
    if pos + 4 * cc > end:
        raise RtpError("CSRC list runs past the packet")
    csrc = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
    pos += 4 * cc
    extension = None
    if b0 & 0x10:
        if pos + 4 > end:
            raise RtpError("extension header runs past the packet")
        profile, words = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + 4 * words > end:
            raise RtpError("extension runs past the packet")
        extension = (profile, bytes(data[pos : pos + 4 * words]))
        pos += 4 * words
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[pos:end]),
        marker=bool(b1 & 0x80),
        csrc=tuple(csrc),
        extension=extension,
    )


def build(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrc: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """One RTP packet; sequence and timestamp are taken modulo 2^16 / 2^32."""
    if len(csrc) > 15:
        raise ValueError("at most 15 CSRCs")
    b0 = (RTP_VERSION << 6) | len(csrc)
    if extension is not None:
        b0 |= 0x10
    if padding:
        b0 |= 0x20
    b1 = (0x80 if marker else 0) | (payload_type & 0x7F)
    out = bytearray(
        HEADER.pack(b0, b1, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    )
    for c in csrc:
        out += struct.pack("!I", c)
    if extension is not None:
        profile, data = extension
        if len(data) % 4:
            raise ValueError("extension data must be a multiple of 4 bytes")
        out += struct.pack("!HH", profile, len(data) // 4) + data
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return bytes(out)


@attrs.frozen(slots=True)
class DtmfEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


def parse_dtmf(payload: bytes) -> DtmfEvent:
    """An RFC 4733 telephone-event payload (the first 4 bytes; redundant blocks ignored)."""
    if len(payload) < 4:
        raise RtpError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return DtmfEvent(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def build_dtmf(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


class SequenceExtender:
    """Extends 16-bit sequence numbers to a monotonic count across wraps (RFC 3550 A.1)."""

    def __init__(self) -> None:
        self.highest: int | None = None

    def extend(self, seq: int) -> int:
        if self.highest is None:
            self.highest = seq
            return seq
        base = self.highest & ~0xFFFF
        candidates = (base - 0x10000 + seq, base + seq, base + 0x10000 + seq)
        ext = min(candidates, key=lambda c: abs(c - self.highest))  # type: ignore[operator]
        if ext > self.highest:
            self.highest = ext
        return ext

    def reset(self) -> None:
        self.highest = None

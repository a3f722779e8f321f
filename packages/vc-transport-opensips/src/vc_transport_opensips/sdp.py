"""SDP offer parsing and answer building (RFC 4566 / RFC 3264), for one audio stream.

Only what a G.711 voice bot needs: the first audio m-line, its connection address (media-level
``c=`` or the session-level one), rtpmap/fmtp, ptime and direction. Static payload types 0
(PCMU) and 8 (PCMA) are recognised without rtpmap.

:func:`parse_offer` raises :class:`SdpError` and nothing else for any input it cannot use:
numbers must be plain ASCII digits within range (media port 0-65535, where 0 means the far
end takes no audio; payload types 0-127; clock rates 1-1000000), the connection address an IP
literal without a zone. A ``ptime`` outside 10-60 ms is ignored (the configured default
applies); one that is not a number is an error.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TypedDict

import attrs

#: Codecs this transport encodes: name -> (static payload type, clock rate).
CODECS: dict[str, tuple[int, int]] = {"PCMU": (0, 8000), "PCMA": (8, 8000)}
STATIC_PT = {pt: (name, rate) for name, (pt, rate) in CODECS.items()}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP = 16384
#: a=ptime values honoured (ms); others are ignored.
PTIME_RANGE = (10, 60)


class SdpError(ValueError):
    """The SDP could not be understood."""


@attrs.define
class MediaOffer:
    """What the far end offers for its audio stream."""

    address: str
    port: int
    formats: list[int]
    rtpmap: dict[int, tuple[str, int]]  # pt -> (encoding name upper-case, clock rate)
    fmtp: dict[int, str]
    ptime: int | None
    direction: str

    def on_hold(self) -> bool:
        """The far end does not want to receive audio (sendonly/inactive or c=0.0.0.0)."""
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::")


@attrs.define
class Negotiated:
    """The result of offer/answer for one call."""

    codec: str
    payload_type: int
    clock_rate: int
    ptime: int
    dtmf_payload_type: int | None
    remote_address: str
    remote_port: int
    #: Our direction in the answer.
    direction: str = "sendrecv"

    @property
    def samples_per_frame(self) -> int:
        return self.clock_rate * self.ptime // 1000

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")


class _Media(TypedDict):
    """One m= section while it is parsed."""

    kind: str
    port: str
    proto: str
    fmts: list[str]
    addr: str | None
    rtpmap: dict[int, tuple[str, int]]
    fmtp: dict[int, str]
    ptime: int | None
    dir: str | None


def parse_offer(text: str) -> MediaOffer:
    """Parse the first audio stream of an SDP body."""
    if len(text) > MAX_SDP:
        raise SdpError("SDP body too large")
    session_addr: str | None = None
    session_dir = "sendrecv"
    media: _Media | None = None
    seen_v = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            if value != "0":
                raise SdpError(f"unsupported SDP version {value[:10]!r}")
            seen_v = True
        elif kind == "m":
            if media is not None and media["kind"] == "audio":
                break  # only the first audio stream is used
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"malformed m= line {value[:40]!r}")
            media = {
                "kind": parts[0],
                "port": parts[1],
                "proto": parts[2],
                "fmts": parts[3:],
                "addr": None,
                "rtpmap": {},
                "fmtp": {},
                "ptime": None,
                "dir": None,
            }
        elif kind == "c":
            addr = _connection_address(value)
            if media is None:
                session_addr = addr
            elif media["kind"] == "audio":
                media["addr"] = addr
        elif kind == "a":
            name, _, arg = value.partition(":")
            if media is None:
                if name in DIRECTIONS:
                    session_dir = name
                continue
            if media["kind"] != "audio":
                continue
            if name in DIRECTIONS:
                media["dir"] = name
            elif name == "rtpmap":
                pt, enc = _pt_and_rest(arg)
                bits = enc.split("/")
                rate = _number(bits[1], 1, 1_000_000, "rtpmap clock rate") if len(bits) > 1 else 8000
                media["rtpmap"][pt] = (bits[0].upper(), rate)
            elif name == "fmtp":
                pt, rest = _pt_and_rest(arg)
                media["fmtp"][pt] = rest
            elif name == "ptime":
                media["ptime"] = _ptime_attribute(arg)
    if not seen_v:
        raise SdpError("not an SDP body (no v=0)")
    if media is None or media["kind"] != "audio":
        raise SdpError("no audio stream offered")
    port = _number(media["port"].split("/")[0], 0, 65535, "media port")
    if "RTP/" not in media["proto"].upper():
        raise SdpError(f"unsupported media transport {media['proto'][:40]!r}")
    formats = [_number(f, 0, 127, "payload type") for f in media["fmts"]]
    address = media["addr"] or session_addr
    if address is None:
        raise SdpError("no connection address (c=)")
    return MediaOffer(
        address=address,
        port=port,
        formats=formats,
        rtpmap=dict(media["rtpmap"]),
        fmtp=dict(media["fmtp"]),
        ptime=media["ptime"],
        direction=media["dir"] or session_dir,
    )


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line {value[:40]!r}")
    addr = parts[2].split("/")[0]
    try:
        if "%" in addr:  # ipaddress accepts IPv6 zones ("fe80::1%eth0"): not in SDP
            raise ValueError(addr)
        ipaddress.ip_address(addr)
    except ValueError:
        raise SdpError(f"connection address is not an IP address: {addr[:40]!r}") from None
    return addr


def _number(text: str, low: int, high: int, what: str) -> int:
    """A plain ASCII decimal number in [low, high]; SdpError otherwise.

    ``str.isdigit`` and ``int`` accept other Unicode digits ('²' is a digit that int() refuses,
    '٣' one it takes), hence the explicit ASCII check.
    """
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not low <= int(text) <= high:
        raise SdpError(f"malformed {what} {text[:20]!r} (expected {low}-{high})")
    return int(text)


def _ptime_attribute(arg: str) -> int | None:
    """a=ptime: a plain ASCII number (fraction allowed); None (ignored) outside 10-60 ms."""
    text = arg.strip()
    whole, dot, frac = text.partition(".")
    if not (
        whole.isascii() and whole.isdigit() and len(whole) <= 6
        and (not dot or (frac.isascii() and frac.isdigit()))
    ):
        raise SdpError(f"malformed ptime {text[:20]!r}")
    value = int(whole)
    return value if PTIME_RANGE[0] <= value <= PTIME_RANGE[1] else None


def _pt_and_rest(arg: str) -> tuple[int, str]:
    pt, _, rest = arg.strip().partition(" ")
    return _number(pt, 0, 127, "payload type"), rest.strip()


def encoding_of(offer: MediaOffer, pt: int) -> tuple[str, int] | None:
    if pt in offer.rtpmap:
        return offer.rtpmap[pt]
    return STATIC_PT.get(pt)


def negotiate(offer: MediaOffer, codecs: list[str], default_ptime: int = 20) -> Negotiated | None:
    """Pick the first of ``codecs`` (our priority) that the offer contains; None if none does."""
    for name in (c.upper() for c in codecs):
        for pt in offer.formats:
            enc = encoding_of(offer, pt)
            if enc is not None and enc[0] == name and enc[1] == CODECS[name][1]:
                return Negotiated(
                    codec=name,
                    payload_type=pt,
                    clock_rate=enc[1],
                    ptime=_ptime(offer.ptime, default_ptime),
                    dtmf_payload_type=_dtmf_pt(offer, enc[1]),
                    remote_address=offer.address,
                    remote_port=offer.port,
                    direction=answer_direction(offer.direction),
                )
    return None


def _ptime(offered: int | None, default: int) -> int:
    value = offered or default
    value = min(max(value, 10), 60)
    return value - value % 10


def _dtmf_pt(offer: MediaOffer, rate: int) -> int | None:
    for pt in offer.formats:
        enc = offer.rtpmap.get(pt)
        if enc and enc[0] == "TELEPHONE-EVENT" and enc[1] == rate:
            return pt
    return None


def answer_direction(offered: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}.get(
        offered, "sendrecv"
    )


@attrs.define
class SdpSession:
    """Our side of one call's SDP: the origin line stays, its version grows with each answer."""

    address: str
    port: int
    session_id: int = attrs.field(factory=lambda: int(time.time() * 1000) & 0x7FFFFFFF)
    version: int = 0

    def answer(self, neg: Negotiated) -> str:
        self.version += 1
        fam = "IP6" if ":" in self.address else "IP4"
        pts = [neg.payload_type]
        lines = [
            "v=0",
            f"o=vc {self.session_id} {self.version} IN {fam} {self.address}",
            "s=vc",
            f"c=IN {fam} {self.address}",
            "t=0 0",
        ]
        if neg.dtmf_payload_type is not None:
            pts.append(neg.dtmf_payload_type)
        lines.append(f"m=audio {self.port} RTP/AVP {' '.join(str(p) for p in pts)}")
        lines.append(f"a=rtpmap:{neg.payload_type} {neg.codec}/{neg.clock_rate}")
        if neg.dtmf_payload_type is not None:
            lines.append(f"a=rtpmap:{neg.dtmf_payload_type} telephone-event/{neg.clock_rate}")
            lines.append(f"a=fmtp:{neg.dtmf_payload_type} 0-15")
        lines.append(f"a=ptime:{neg.ptime}")
        lines.append(f"a={neg.direction}")
        return "\r\n".join(lines) + "\r\n"

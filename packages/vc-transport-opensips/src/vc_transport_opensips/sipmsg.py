"""SIP messages over UDP: strict parsing and response building (RFC 3261 §7, §8.2.6, §20).

Framing (end of headers, line folding, Content-Length, size limits) is done here; the
grammar of the start line and of the headers the UAS relies on (Via, From/To, CSeq, URIs) is
checked by the ``sipmessage`` library. Header values are kept exactly as received so that
responses copy Via, From, To, Call-ID, CSeq and Record-Route byte for byte.

:func:`parse` raises :class:`SipParseError` and nothing else, for any datagram; when the
broken message is a request whose routing headers could still be read, ``error.response`` is
the ``400 Bad Request`` to send. Ports the UAS would send to (the top Via's sent-by port and
``rport`` value, an INVITE's Contact) must be within 1-65535.
"""

from __future__ import annotations

import re

import attrs
import sipmessage

MAX_MESSAGE = 65535
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
}
CANONICAL = {
    n.lower(): n
    for n in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Record-Route",
        "Route",
        "Max-Forwards",
        "Content-Type",
        "Content-Length",
        "Require",
        "Supported",
        "Allow",
        "Event",
        "Refer-To",
        "Referred-By",
        "Subject",
        "Content-Encoding",
        "Allow-Events",
        "Session-Expires",
        "User-Agent",
        "Server",
        "Accept",
        "Reason",
        "Warning",
        "Unsupported",
        "Retry-After",
    )
}
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


class SipParseError(ValueError):
    """A datagram that is not a usable SIP message."""

    def __init__(self, message: str, response: bytes | None = None) -> None:
        super().__init__(message)
        self.response = response


@attrs.define
class Message:
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str, default: str = "") -> str:
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        c = sipmessage.CSeq.parse(self.get("CSeq"))
        return c.sequence, c.method.upper()

    @property
    def from_tag(self) -> str:
        return _tag(self.get("From"))

    @property
    def to_tag(self) -> str:
        return _tag(self.get("To"))

    @property
    def top_via(self) -> sipmessage.Via:
        return sipmessage.Via.parse_many(self.get("Via"))[0]

    @property
    def branch(self) -> str:
        return self.top_via.parameters.get("branch") or ""

    @property
    def content_type(self) -> str:
        return self.get("Content-Type").split(";")[0].strip().lower()


@attrs.define
class Request(Message):
    method: str = ""
    uri: str = ""

    @property
    def contact_uri(self) -> str:
        value = self.get("Contact")
        if not value:
            return ""
        return str(sipmessage.Address.parse_many(value)[0].uri)


@attrs.define
class Response(Message):
    status: int = 0
    reason: str = ""


def _tag(value: str) -> str:
    if not value:
        return ""
    return sipmessage.Address.parse(value).parameters.get("tag") or ""


def _split(data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Start line, unfolded (name, value) pairs and body; raises SipParseError."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError(f"message too large ({len(data)} bytes)")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("no blank line after the headers")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    body = data[end + 4 :]
    lines = head.split("\r\n")
    start = lines[0]
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if any(c in line for c in "\r\n\x00"):
            raise SipParseError("stray CR, LF or NUL in a header")
        if line[:1] in (" ", "\t"):
            if not pairs:
                raise SipParseError("continuation line before the first header")
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.match(name):
            raise SipParseError(f"malformed header line {line[:40]!r}")
        low = name.lower()
        name = COMPACT.get(low) or CANONICAL.get(low) or name
        pairs.append((name, value.strip()))
    return start, pairs, body


def parse(data: bytes) -> Request | Response | None:
    """Parse one datagram. None for keep-alives (blank lines); SipParseError if broken."""
    if not data.strip(b"\r\n \t\x00"):
        return None
    data = data.lstrip(b"\r\n")
    start, pairs, body = _split(data)
    try:
        return _build(start, pairs, body)
    except SipParseError as e:
        e.response = bad_request(start, pairs, str(e))
        raise
    except (ValueError, IndexError, KeyError, TypeError) as e:  # sipmessage grammar errors
        raise SipParseError(str(e) or type(e).__name__, bad_request(start, pairs, str(e))) from None


def _build(start: str, pairs: list[tuple[str, str]], body: bytes) -> Request | Response:
    bits = start.split(" ", 2)
    if len(bits) < 3:
        raise SipParseError(f"malformed start line {start[:60]!r}")
    length = next((v for k, v in pairs if k == "Content-Length"), None)
    if length is not None:
        if not length.isdigit():
            raise SipParseError(f"bad Content-Length {length[:20]!r}")
        n = int(length)
        if n > len(body):
            raise SipParseError(f"Content-Length {n} but only {len(body)} body bytes")
        body = body[:n]
    msg: Request | Response
    if bits[0] == "SIP/2.0":
        if not (bits[1].isdigit() and len(bits[1]) == 3 and 100 <= int(bits[1]) <= 699):
            raise SipParseError(f"bad status code {bits[1][:10]!r}")
        msg = Response(headers=pairs, body=body, status=int(bits[1]), reason=bits[2])
    elif bits[2] == "SIP/2.0":
        if not _TOKEN.match(bits[0]):
            raise SipParseError(f"bad method {bits[0][:20]!r}")
        sipmessage.URI.parse(bits[1])  # the Request-URI must be a valid SIP/SIPS/TEL URI
        msg = Request(headers=pairs, body=body, method=bits[0].upper(), uri=bits[1])
    else:
        raise SipParseError(f"not a SIP/2.0 message: {start[:60]!r}")
    for name in REQUIRED:
        if not msg.get(name):
            raise SipParseError(f"missing {name} header")
    # Check the grammar of everything the UAS relies on.
    via = msg.top_via
    _, method = msg.cseq
    _tag(msg.get("From"))
    _tag(msg.get("To"))
    check_port(via.port, "Via sent-by port")
    rport = via.parameters.get("rport")
    if rport:  # a bare ";rport" asks for the source port; a value must be a real port
        check_port(rport, "Via rport")
    if isinstance(msg, Request):
        if method != msg.method and msg.method not in ("ACK", "CANCEL"):
            raise SipParseError(f"CSeq method {method} does not match {msg.method}")
        if msg.method == "INVITE" and msg.get("Contact"):
            contact = sipmessage.Address.parse_many(msg.get("Contact"))[0].uri
            check_port(contact.port, "Contact port")
    return msg


def check_port(value: int | str | None, what: str) -> None:
    """SipParseError unless ``value`` is None (absent) or a port 1-65535 (ASCII digits)."""
    if value is None:
        return
    text = str(value)
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535):
        raise SipParseError(f"{what} {text[:12]!r} is not a port (1-65535)")


def bad_request(start: str, pairs: list[tuple[str, str]], why: str) -> bytes | None:
    """A 400 for a broken request whose routing headers can still be copied, else None."""
    bits = start.split(" ")
    if len(bits) != 3 or bits[2] != "SIP/2.0" or bits[0].upper() == "ACK":
        return None
    found = {k: v for k, v in reversed(pairs)}
    if not all(found.get(n) for n in REQUIRED):
        return None
    try:
        sipmessage.Via.parse_many(found["Via"])
    except ValueError:
        return None
    reason = re.sub(r"[^ -~]", "?", why)[:80]
    lines = [f"SIP/2.0 400 Bad Request ({reason})" if reason else "SIP/2.0 400 Bad Request"]
    lines += [f"Via: {v}" for k, v in pairs if k == "Via"]
    lines += [f"{n}: {found[n]}" for n in ("From", "To", "Call-ID", "CSeq")]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(
    req: Request,
    status: int,
    reason: str = "",
    *,
    to_tag: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str = "",
    record_route: bool = False,
) -> bytes:
    """A response to ``req`` with Via/From/To/Call-ID/CSeq copied (RFC 3261 §8.2.6.2)."""
    out = [f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}"]
    out += [f"Via: {v}" for v in req.get_all("Via")]
    if record_route:
        out += [f"Record-Route: {v}" for v in req.get_all("Record-Route")]
    out.append(f"From: {req.get('From')}")
    to = req.get("To")
    if to_tag and not req.to_tag and status != 100:
        to = f"{to};tag={to_tag}"
    out.append(f"To: {to}")
    out.append(f"Call-ID: {req.call_id}")
    out.append(f"CSeq: {req.get('CSeq')}")
    out += [f"{k}: {v}" for k, v in headers or []]
    if body:
        out.append(f"Content-Type: {content_type or 'application/sdp'}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


def request(
    method: str,
    uri: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    content_type: str = "",
) -> bytes:
    out = [f"{method} {uri} SIP/2.0"] + [f"{k}: {v}" for k, v in headers]
    if body:
        out.append(f"Content-Type: {content_type or 'application/sdp'}")
    out.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


def uri_of(value: str) -> sipmessage.URI:
    """The URI of a name-addr / addr-spec header value (Contact, Route, Refer-To...)."""
    return sipmessage.Address.parse(value).uri

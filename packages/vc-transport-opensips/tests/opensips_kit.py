"""Test-side telephony: a scripted SIP caller, a real RTP phone, an OpenSIPS stand-in, and a
running vc (App with fake AI providers) with the opensips transport. Everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from vc_transport_opensips import rtp, sipmsg
from vc_transport_opensips.sipmsg import Request, Response

from vc.audio import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from vc.call import CallInfo
from vc.providers import Observer
from vc.server import App
from vc.testing import config_from_ini, fake_registry, until

LOCAL = "127.0.0.1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def rms(pcm: bytes) -> float:
    if not pcm:
        return 0.0
    a = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(a * a)))


# -- vc under test --------------------------------------------------------------------------


class Recorder(Observer):
    """Collects what core reports about calls."""

    name = "test-recorder"

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[CallInfo, str]] = []
        self.ended: list[tuple[CallInfo, str]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def call_started(self, info: CallInfo, profile: str) -> None:
        self.started.append((info, profile))

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        self.ended.append((info, outcome))

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        self.events.append((info.call_id, name, data))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [d for _, n, d in self.events if n == name]


BASE_INI = """
[vc]
transports = opensips
observers =
[server]
drain_timeout = 1
[stt]
provider = fake
script = {script}
[llm]
provider = fake
[tts]
provider = fake
ms_per_char = {ms_per_char}
[profile.default]
greeting = {greeting}
[transport.opensips]
sip_ip = 127.0.0.1
sip_port = 0
rtp_bind_ip = 127.0.0.1
rtp_min_port = 0
event_ip = 127.0.0.1
event_port = 0
{transport}
"""


class VC:
    """A running vc: App (engine + opensips transport) with fake STT/LLM/TTS."""

    def __init__(
        self,
        transport: str = "",
        script: str = "what time is it",
        ms_per_char: int = 30,
        greeting: str = "Hi.",
        extra: str = "",
    ) -> None:
        ini = (
            BASE_INI.format(
                script=script, ms_per_char=ms_per_char, greeting=greeting, transport=transport
            )
            + extra
        )
        registry = fake_registry()
        self.config = config_from_ini(ini, registry)
        self.app = App(self.config, registry)
        self.recorder = Recorder()

    async def __aenter__(self) -> VC:
        await self.app.start()
        self.app.engine.observers.append(self.recorder)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.app.stop()

    @property
    def transport(self) -> Any:
        return self.app.transports["opensips"]

    @property
    def sip_addr(self) -> tuple[str, int]:
        return (LOCAL, self.transport.sip_port)

    def session(self) -> Any:
        sessions = list(self.app.engine.sessions.values())
        return sessions[0] if sessions else None


# -- RTP phone -----------------------------------------------------------------------------


class RtpPhone(asyncio.DatagramProtocol):
    """A caller's RTP endpoint: sends 20 ms packets on a clock (speech or silence, like a
    phone), sends RFC 4733 digits, records every packet it receives."""

    def __init__(self, codec: str = "PCMU", pt: int = 0, dtmf_pt: int = 101) -> None:
        self.codec, self.pt, self.dtmf_pt = codec, pt, dtmf_pt
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.remote: tuple[str, int] | None = None
        self.received: list[tuple[float, rtp.RtpPacket]] = []
        self.sources: set[tuple[str, int]] = set()
        self._queue: list[bytes] = []
        self._dtmf: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.ssrc = secrets.randbits(32)
        self.sending = True
        #: A lossy network: every ``lose_every``-th audio packet is not sent (0: none lost).
        self.lose_every = 0
        self.lost: list[int] = []  # sequence numbers of the packets "the network" lost

    async def start(self) -> RtpPhone:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(LOCAL, 0))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.add(addr)
        with contextlib.suppress(rtp.RtpError):
            self.received.append((time.monotonic(), rtp.parse(data)))

    def sdp(self, formats: str = "0 8 101", extra: str = "") -> str:
        lines = [
            "v=0",
            f"o=caller 1 1 IN IP4 {LOCAL}",
            "s=-",
            f"c=IN IP4 {LOCAL}",
            "t=0 0",
            f"m=audio {self.port} RTP/AVP {formats}",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
        ]
        if extra:
            lines.append(extra)
        return "\r\n".join(lines) + "\r\n"

    def connect(self, addr: tuple[str, int]) -> None:
        self.remote = addr
        if self._task is None:
            self._task = asyncio.create_task(self._clock())

    def encode(self, pcm: bytes) -> bytes:
        return pcm_to_ulaw(pcm) if self.codec == "PCMU" else pcm_to_alaw(pcm)

    def decode(self, payload: bytes) -> bytes:
        return ulaw_to_pcm(payload) if self.codec == "PCMU" else alaw_to_pcm(payload)

    def say(self, pcm: bytes) -> float:
        """Queue speech; returns its duration in seconds."""
        pcm = pcm + bytes(-len(pcm) % 320)
        self._queue += [pcm[i : i + 320] for i in range(0, len(pcm), 320)]
        return len(pcm) / 16000

    def press(self, digit: str, packets: int = 5) -> None:
        event = rtp.DTMF_EVENTS.index(digit)
        for i in range(packets):
            self._dtmf.append(rtp.build_dtmf(event, False, 160 * (i + 1)))
        for _ in range(3):
            self._dtmf.append(rtp.build_dtmf(event, True, 160 * (packets + 1)))
        self._dtmf.append(b"")  # gap between digits

    async def _clock(self) -> None:
        start = time.monotonic()
        n = 0
        silence = bytes(320)
        dtmf_ts: int | None = None
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            if not self.sending or self.remote is None or self.transport is None:
                self.ts += 160
                continue
            if self._dtmf:
                payload = self._dtmf.pop(0)
                if payload:
                    if dtmf_ts is None:
                        dtmf_ts = self.ts
                    self.transport.sendto(
                        rtp.build(self.dtmf_pt, self.seq, dtmf_ts, self.ssrc, payload), self.remote
                    )
                    self.seq += 1
                    if payload[1] & 0x80 and (
                        not self._dtmf or not self._dtmf[0] or not self._dtmf[0][1] & 0x80
                    ):
                        dtmf_ts = None
                self.ts += 160
                continue
            frame = self._queue.pop(0) if self._queue else silence
            if self.lose_every and self.seq % self.lose_every == 0:
                self.lost.append(self.seq)
            else:
                self.transport.sendto(
                    rtp.build(self.pt, self.seq, self.ts, self.ssrc, self.encode(frame)),
                    self.remote,
                )
            self.seq += 1
            self.ts += 160

    def audio_packets(self) -> list[tuple[float, rtp.RtpPacket]]:
        return [(t, p) for t, p in self.received if p.payload_type == self.pt]

    def loud(self, after: float = 0.0, threshold: float = 500.0) -> list[float]:
        """Arrival times of received packets that carry sound (not silence)."""
        return [
            t
            for t, p in self.audio_packets()
            if t >= after and rms(self.decode(p.payload)) > threshold
        ]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()


# -- scripted SIP caller -------------------------------------------------------------------


class SipCaller(asyncio.DatagramProtocol):
    """A scripted SIP UAC that records everything it receives (and answers BYE/NOTIFY)."""

    def __init__(self, auto_answer: bool = True) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.messages: list[tuple[float, Request | Response, bytes]] = []
        self.raw: list[bytes] = []
        self.auto_answer = auto_answer
        self.call_id = secrets.token_hex(8) + "@test"
        self.from_tag = secrets.token_hex(4)
        self.to_tag = ""
        self.cseq = 1
        self.invite_branch = ""
        self.route: list[str] = []
        self.contact = ""

    async def start(self) -> SipCaller:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(LOCAL, 0))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        try:
            msg = sipmsg.parse(data)
        except sipmsg.SipParseError:
            return
        if msg is None:
            return
        self.messages.append((time.monotonic(), msg, data))
        if (
            isinstance(msg, Request)
            and self.auto_answer
            and msg.method in ("BYE", "NOTIFY", "INFO")
        ):
            self.transport.sendto(sipmsg.response(msg, 200), addr)  # type: ignore[union-attr]
        if isinstance(msg, Request) and self.auto_answer and msg.method == "REFER":
            self.transport.sendto(sipmsg.response(msg, 202), addr)  # type: ignore[union-attr]

    def send(self, data: bytes | str, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data.encode() if isinstance(data, str) else data, addr)

    def via(self, branch: str) -> str:
        return f"SIP/2.0/UDP {LOCAL}:{self.port};branch={branch};rport"

    def invite(
        self,
        target: tuple[str, int],
        sdp: str = "",
        *,
        branch: str = "",
        headers: str = "",
        to_tag: str = "",
        cseq: int | None = None,
        content_type: str = "application/sdp",
    ) -> bytes:
        self.invite_branch = branch or "z9hG4bK" + secrets.token_hex(8)
        body = sdp.encode()
        to = f"<sip:bot@{target[0]}>" + (f";tag={to_tag}" if to_tag else "")
        msg = (
            f"INVITE sip:bot@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL}:{self.port};branch=z9hG4bKproxy{self.invite_branch[7:]}\r\n"
            f"Via: {self.via(self.invite_branch)}\r\n"
            f"Record-Route: <sip:{LOCAL}:{self.port};lr;ftag={self.from_tag}>\r\n"
            f"Max-Forwards: 69\r\n"
            f'From: "Caller" <sip:+15550001111@{LOCAL}>;tag={self.from_tag}\r\n'
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq or self.cseq} INVITE\r\n"
            f"Contact: <sip:caller@{LOCAL}:{self.port}>\r\n"
            f"X-AI-Processing: enabled\r\n"
            f"{headers}"
            + (f"Content-Type: {content_type}\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        return msg

    def in_dialog(
        self,
        method: str,
        target: tuple[str, int],
        *,
        body: str = "",
        content_type: str = "application/sdp",
        cseq: int | None = None,
        branch: str = "",
        headers: str = "",
    ) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        data = body.encode()
        return (
            f"{method} {self.contact or f'sip:bot@{target[0]}:{target[1]}'} SIP/2.0\r\n"
            f"Via: {self.via(branch)}\r\n"
            + "".join(f"Route: {r}\r\n" for r in self.route)
            + f"Max-Forwards: 70\r\n"
            f'From: "Caller" <sip:+15550001111@{LOCAL}>;tag={self.from_tag}\r\n'
            f"To: <sip:bot@{target[0]}>" + (f";tag={self.to_tag}" if self.to_tag else "") + "\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method if method != 'ACK' else 'ACK'}\r\n"
            f"Contact: <sip:caller@{LOCAL}:{self.port}>\r\n"
            f"{headers}"
            + (f"Content-Type: {content_type}\r\n" if data else "")
            + f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    def ack(self, target: tuple[str, int], cseq: int = 1) -> bytes:
        return self.in_dialog("ACK", target, cseq=cseq)

    def cancel(self, target: tuple[str, int]) -> bytes:
        return (
            f"CANCEL sip:bot@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCAL}:{self.port};branch=z9hG4bKproxy{self.invite_branch[7:]}\r\n"
            f"Via: {self.via(self.invite_branch)}\r\n"
            f"Max-Forwards: 70\r\n"
            f'From: "Caller" <sip:+15550001111@{LOCAL}>;tag={self.from_tag}\r\n'
            f"To: <sip:bot@{target[0]}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: 1 CANCEL\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()

    def responses(self, method: str | None = None, status: int | None = None) -> list[Response]:
        out = []
        for _, m, _ in self.messages:
            if (
                isinstance(m, Response)
                and (method is None or m.cseq[1] == method)
                and (status is None or m.status == status)
            ):
                out.append(m)
        return out

    def requests(self, method: str) -> list[tuple[float, Request]]:
        return [
            (t, m) for t, m, _ in self.messages if isinstance(m, Request) and m.method == method
        ]

    async def expect(self, method: str, status: int, timeout: float = 20.0) -> Response:
        resps = await until(
            lambda: self.responses(method, status), timeout, f"{status} to {method}"
        )
        return resps[0]

    def learn_dialog(self, ok: Response) -> None:
        self.to_tag = ok.to_tag
        self.contact = sipmsg.Request.contact_uri.fget(ok)  # type: ignore[attr-defined]
        self.route = list(reversed(ok.get_all("Record-Route")))

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def answer_media(ok: Response) -> tuple[tuple[str, int], str]:
    """(RTP address, SDP text) of a 200 OK."""
    from vc_transport_opensips.sdp import parse_offer

    text = ok.body.decode()
    offer = parse_offer(text)
    return (offer.address, offer.port), text


async def place_call(
    vc: VC, phone: RtpPhone, caller: SipCaller, formats: str = "0 8 101", headers: str = ""
) -> Response:
    """INVITE -> 200 -> ACK; the phone starts sending RTP to the answer's address."""
    caller.send(caller.invite(vc.sip_addr, phone.sdp(formats), headers=headers), vc.sip_addr)
    ok = await caller.expect("INVITE", 200)
    caller.learn_dialog(ok)
    caller.send(caller.ack(vc.sip_addr), vc.sip_addr)
    addr, _ = answer_media(ok)
    phone.connect(addr)
    return ok


# -- OpenSIPS stand-in (B2B mode) -----------------------------------------------------------

STANDIN_SERVER = "OpenSIPS (3.6.8 (x86_64/linux))"
STANDIN_SIP = (LOCAL, 5060)  # where the stand-in "listens" for SIP: its Contact


def ua_build_hdrs(body: str | None, content_type: str | None, extra_headers: str | None) -> str:
    """What OpenSIPS 3.6 puts between CSeq and Contact of a ``ua_session_reply`` answer
    (``ua_api.c``, ``ua_build_hdrs``): ``content_type`` is a complete header line copied
    verbatim (a bare ``application/sdp`` runs into the Contact that follows), the default
    ``Content-Type: application/sdp\r\n`` only when there is a body and no ``content_type``;
    without a body the extra headers are *not copied* - the buffer stays uninitialised (seen on
    the wire as NUL bytes)."""
    if body is None:
        return "\x00" * len(extra_headers or "")
    ct = "Content-Type: application/sdp\r\n" if content_type is None else content_type
    return ct + (extra_headers or "")


def header_names(message: str) -> list[str]:
    """Header names of one SIP message, in order (``application/sdpContact`` included)."""
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [line.split(":", 1)[0].strip("\x00").strip() for line in head if ":" in line]


def header(message: str, name: str) -> str:
    """The first value of header ``name`` in a SIP message (start line first)."""
    return header_in(message.split("\r\n\r\n", 1)[0].split("\r\n", 1)[-1], name)


def header_in(headers: str, name: str) -> str:
    """The first value of header ``name`` in a block of header lines."""
    for line in headers.split("\r\n"):
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name.lower():
            return v.strip()
    return ""


class Entity:
    """One B2B server entity (``ua_session_server_init``) as the stand-in keeps it."""

    def __init__(self, key: str, headers: str) -> None:
        self.key = key
        self.headers = headers  # the INVITE's headers, as the NEW event carries them
        self.state = "new"  # new | early | confirmed | established | terminated
        self.invite_final = 0
        self.pending: set[str] = {"INVITE"}  # requests waiting for ua_session_reply
        self.requests: dict[str, str] = {}  # headers of the pending in-dialog requests
        self.cseq = 1  # of the requests OpenSIPS sends in this dialog

    def get(self, name: str) -> str:
        return header_in(self.headers, name)


class OpenSIPSStandIn(asyncio.DatagramProtocol):
    """mi_datagram + event_datagram + b2b_entities as OpenSIPS 3.6.8 behaves (pinned against
    the real server by test_real_opensips_b2b.py): JSON-RPC MI requests in, replies out;
    E_UA_SESSION notifications sent to the subscribed socket; every SIP message the real server
    would put on the wire towards the caller is rendered into ``wire``.

    Behaviour copied from the real server: ``ua_session_reply`` renders Via, To (tag = key),
    From, Call-ID, CSeq, ``ua_build_hdrs``, Contact, Server, Content-Length; a CANCEL is
    answered ``200 canceling`` and reported as TERMINATED/CANCEL, but the INVITE gets no final
    response until ``ua_session_reply`` sends one, and the entity stays until
    ``ua_session_terminate`` (which sends no BYE for a terminated entity); a BYE is answered 200
    and deletes the entity; a re-INVITE gets ``100 Giving it a try`` in the dialog, its final
    answer from ``ua_session_reply``; ``ua_session_update`` and ``ua_session_terminate`` render
    the REFER and BYE OpenSIPS sends; ``uptime`` tells the start time; ``restart()`` forgets
    everything.
    """

    def __init__(self, port: int = 0) -> None:
        self.want_port = port
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.subscriber: tuple[str, int] | None = None
        self.expires_at = 0.0
        self.answer: Callable[[dict[str, Any]], Any] = self.handle
        self.entities: dict[str, Entity] = {}
        self.wire: list[str] = []
        self._index = 0
        self.started = time.time()

    async def start(self) -> OpenSIPSStandIn:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(LOCAL, self.want_port))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        req = json.loads(data)
        self.requests.append(req)
        result = self.answer(req)
        if result is None:
            return  # no reply (simulates loss)
        reply = {"jsonrpc": "2.0", "id": req["id"]}
        if isinstance(result, dict) and "error" in result:
            reply["error"] = result["error"]
        else:
            reply["result"] = result
        assert self.transport is not None
        self.transport.sendto(json.dumps(reply).encode(), addr)

    # -- the server's side -------------------------------------------------------------------

    def restart(self) -> None:
        """OpenSIPS restarted: subscriptions and B2B entities are gone, new start time."""
        self.subscriber = None
        self.entities.clear()
        self.started = max(time.time(), self.started + 1.0)

    def handle(self, req: dict[str, Any]) -> Any:
        """The MI command's result, or {"error": {...}} as OpenSIPS 3.6.8 answers it."""
        method, params = req["method"], req.get("params")
        p = params if isinstance(params, dict) else {}
        if method == "event_subscribe":
            name, sock, expire = params
            assert name == "E_UA_SESSION"
            proto, ip, port = sock.split(":")
            assert proto == "udp"
            if expire == 0:
                self.subscriber = None
            else:
                self.subscriber = (ip, int(port))
                self.expires_at = time.monotonic() + expire
            return "OK"
        if method == "uptime":
            now = time.time()
            return {
                "Now": time.ctime(now),
                "Up since": time.ctime(self.started),
                "Up time": f"{int(now - self.started)} [sec]",
            }
        if method == "ua_session_reply":
            return self._reply(p)
        if method == "ua_session_terminate":
            e = self.entities.get(p.get("key", ""))
            if e is None or e.state in ("new", "early"):
                # OpenSIPS sends no BYE for an unanswered server entity and keeps it.
                return {"error": {"code": 500, "message": "Failed to terminate session"}}
            if e.state != "terminated":
                self.wire.append(self._request(e, "BYE"))
            del self.entities[e.key]
            return "OK"
        if method == "ua_session_update":
            e = self.entities.get(p.get("key", ""))
            if e is None or e.state == "terminated":
                return {"error": {"code": 500, "message": "Failed to send request"}}
            self.wire.append(
                self._request(
                    e, p["method"], p.get("body"), p.get("extra_headers"), p.get("content_type")
                )
            )
            return "OK"
        if method == "ua_session_list":
            if "key" in p:
                e = self.entities.get(p["key"])
                if e is None:
                    return {"error": {"code": 404, "message": "Entity not found"}}
                return [{"to_tag": e.key, "state": e.state, "callid": e.get("Call-ID")}]
            return [{"to_tag": e.key, "state": e.state} for e in self.entities.values()]
        return "OK"

    def _reply(self, p: dict[str, Any]) -> Any:
        e = self.entities.get(p.get("key", ""))
        method = str(p.get("method", "")).upper()
        fail = {"error": {"code": 500, "message": "Failed to send reply"}}
        if e is None:
            return fail
        code = int(p["code"])
        if method == "INVITE" and "INVITE" not in e.pending and e.invite_final:
            return "OK" if code == e.invite_final else fail  # a retransmission, or refused
        if method not in e.pending:
            return fail
        body = p.get("body")
        request = e.requests.get(method) or e.headers
        cseq = (header_in(request, "CSeq").split() or ["1"])[0]
        text = (
            f"SIP/2.0 {code} {p.get('reason', '')}\r\n"
            f"Via: {header_in(request, 'Via') or e.get('Via')}\r\n"
            f"To: {e.get('To')};tag={e.key}\r\n"
            f"From: {e.get('From')}\r\n"
            f"Call-ID: {e.get('Call-ID')}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            + ua_build_hdrs(body, p.get("content_type"), p.get("extra_headers"))
            + f"Contact: <sip:{STANDIN_SIP[0]}:{STANDIN_SIP[1]}>\r\n"
            f"Server: {STANDIN_SERVER}\r\n"
            f"Content-Length: {len((body or '').encode())}\r\n\r\n"
            f"{body or ''}"
        )
        self.wire.append(text)
        if code >= 200:
            e.pending.discard(method)
            e.requests.pop(method, None)
        if method == "INVITE" and e.state not in ("confirmed", "established"):
            if code < 200:
                e.state = "early"
            elif code < 300:
                e.state, e.invite_final = "confirmed", code
            else:
                e.state, e.invite_final = "terminated", code
        return "OK"

    def _request(
        self,
        e: Entity,
        method: str,
        body: str | None = None,
        extra: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A request b2b_entities sends in the dialog (BYE, REFER...), header order as 3.6.8."""
        e.cseq += 1
        return (
            f"{method} {e.get('Contact').strip('<>')} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {STANDIN_SIP[0]}:{STANDIN_SIP[1]};branch=z9hG4bK{e.cseq}da2.0\r\n"
            f"To: {e.get('From')}\r\nFrom: {e.get('To')};tag={e.key}\r\n"
            f"CSeq: {e.cseq} {method}\r\nCall-ID: {e.get('Call-ID')}\r\nMax-Forwards: 70\r\n"
            f"Content-Length: {len((body or '').encode())}\r\nUser-Agent: {STANDIN_SERVER}\r\n"
            + ua_build_hdrs(body, content_type, extra)
            + f"Contact: <sip:{STANDIN_SIP[0]}:{STANDIN_SIP[1]}>\r\n\r\n"
            f"{body or ''}"
        )

    # -- the caller's side (what a SIP phone would make OpenSIPS do) -------------------------

    def invite(
        self, sdp: str, headers: str = "", extra_params: str = "", key: str = ""
    ) -> str:
        """An initial INVITE handed to ``ua_session_server_init(key, "arbh", extra)``:
        ``100 Giving it a try`` on the wire, NEW to the subscriber; returns the key."""
        self._index += 1
        key = key or f"B2B.{secrets.randbelow(512)}.{self._index}.{int(time.time())}.{secrets.randbits(31)}"
        if not headers:
            headers = (
                f"Via: SIP/2.0/UDP {LOCAL}:5062;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
                f'From: "Alice" <sip:+15550001111@{LOCAL}>;tag={secrets.token_hex(4)}\r\n'
                f"To: <sip:+15550002222@{LOCAL}>\r\n"
                f"Call-ID: {secrets.token_hex(8)}@{LOCAL}\r\n"
                "CSeq: 1 INVITE\r\n"
                f"Contact: <sip:alice@{LOCAL}:5062>\r\n"
            )
        self.event(
            {
                "key": key,
                "event_type": "NEW",
                "method": "INVITE",
                "body": sdp,
                "headers": headers,
                "extra_params": extra_params,
            }
        )
        return key

    def cancel(self, key: str) -> None:
        """The caller's CANCEL: ``200 canceling`` at once, TERMINATED/CANCEL to vc; the INVITE
        waits for vc's final reply."""
        self.event({"key": key, "event_type": "TERMINATED", "method": "CANCEL"})

    def bye(self, key: str) -> None:
        self.event({"key": key, "event_type": "TERMINATED", "method": "BYE"})

    def subscribed(self) -> bool:
        return self.subscriber is not None and time.monotonic() < self.expires_at

    def event(self, params: dict[str, Any]) -> bytes:
        """Send one E_UA_SESSION notification (as bytes, exactly); returns what was sent.
        The entity follows the event as the real server's would."""
        assert self.subscribed(), "no live subscription"
        # As 3.6.8 sends them: "reason" is null for requests, "extra_params" null but on NEW.
        full: dict[str, Any] = {
            "key": "",
            "event_type": "",
            "entity_type": "UAS",
            "status": 0,
            "reason": None,
            "method": "",
            "body": "",
            "headers": "",
            "extra_params": "" if params.get("event_type") == "NEW" else None,
        }
        full.update(params)
        key, etype, method = full["key"], full["event_type"], full["method"]
        e = self.entities.get(key)
        if etype == "NEW" and e is None:
            e = self.entities[key] = Entity(key, full["headers"] or "")
            if e.get("Via"):
                self.wire.append(self._provisional(e))
        elif e is not None and etype == "TERMINATED":
            cseq = e.get("CSeq").split()[0] if method == "CANCEL" else str(e.cseq + 1)
            if not full["headers"]:
                full["headers"] = e.headers.replace(e.get("CSeq"), f"{cseq} {method}")
            if method == "CANCEL":
                tag = f"c056-{secrets.token_hex(16)}"
                self.wire.append(self._simple(e, 200, "canceling", method, cseq, tag))
            else:
                self.wire.append(self._simple(e, 200, "OK", method, cseq, e.key, contact=True))
            if method == "CANCEL":
                e.state = "terminated"  # the INVITE transaction stays open
            else:
                del self.entities[key]
        elif e is not None and etype == "UPDATED":
            if method == "ACK":
                e.state = "established"
            else:
                e.pending.add(method)
                if full["headers"]:
                    e.requests[method] = full["headers"]
                if method == "INVITE":  # a re-INVITE: tm's 100, in the dialog
                    self.wire.append(self._provisional(e, full["headers"]))
        data = json.dumps({"jsonrpc": "2.0", "method": "E_UA_SESSION", "params": full}).encode()
        assert self.transport is not None and self.subscriber is not None
        self.transport.sendto(data, self.subscriber)
        return data

    def _provisional(self, e: Entity, request: str = "") -> str:
        """tm's 100 to the initial INVITE (no To-tag) or to a re-INVITE (``request``: its
        headers; the To-tag is the key)."""
        if not request:
            return self._simple(e, 100, "Giving it a try", "INVITE", e.get("CSeq").split()[0], "")
        cseq = header_in(request, "CSeq").split()[0]
        via = header_in(request, "Via")
        return self._simple(e, 100, "Giving it a try", "INVITE", cseq, e.key, via=via)

    def _simple(
        self,
        e: Entity,
        code: int,
        reason: str,
        method: str,
        cseq: str,
        tag: str,
        contact: bool = False,
        via: str = "",
    ) -> str:
        """A reply OpenSIPS sends on its own: tm's 100 and ``200 canceling`` (tm's own To-tag,
        no Contact), b2b_entities' 200 to BYE (To-tag = key, Contact)."""
        to = e.get("To") + (f";tag={tag}" if tag else "")
        return (
            f"SIP/2.0 {code} {reason}\r\nVia: {via or e.get('Via')}\r\nTo: {to}\r\n"
            f"From: {e.get('From')}\r\nCall-ID: {e.get('Call-ID')}\r\nCSeq: {cseq} {method}\r\n"
            + (f"Contact: <sip:{STANDIN_SIP[0]}:{STANDIN_SIP[1]}>\r\n" if contact else "")
            + f"Server: {STANDIN_SERVER}\r\nContent-Length: 0\r\n\r\n"
        )

    def on_wire(self, first_line: str) -> list[str]:
        """Messages the stand-in put on the wire whose first line starts with ``first_line``."""
        return [m for m in self.wire if m.startswith(first_line)]

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

"""Proxy mode: vc's own SIP user agent server (UDP), for OpenSIPS to relay INVITEs to.

One call per Call-ID. INVITE -> 100 Trying -> 200 OK with the SDP answer, retransmitted
until the ACK (§13.3.1.4; no ACK within 32 s ends the call); retransmitted requests are
answered from their transaction; BYE -> 200 and the call stops at once; CANCEL -> 200 and
487 for the INVITE; OPTIONS -> 200; re-INVITE/UPDATE renegotiate (hold/resume, new address);
NOTIFY/INFO in a dialog -> 200 (INFO dtmf-relay digits reach the call). The bot hangs up with
BYE and transfers with REFER, both routed through the dialog's route set (Record-Route).

No datagram can take the listener down: parse errors are dropped (400 when answerable), every
request that starts a server transaction gets a final response (500 if its handler fails),
and :meth:`SipUserAgent.send` refuses a destination that is not an IP literal and port
1-65535 instead of handing it to asyncio (which closes the socket on such errors). If the
socket closes anyway, it is reopened on the same port; :meth:`SipUserAgent.alive` is False
until then (``/healthz`` fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
import uuid
from typing import Any

import sipmessage

from vc.call import CallControlError, CallInfo
from vc.providers import CallHost
from vc_transport_opensips import sipmsg
from vc_transport_opensips.addresses import advertise, configured_rtp_ip
from vc_transport_opensips.call import Signalling, SipCall
from vc_transport_opensips.sdp import Negotiated, SdpError, SdpSession, negotiate, parse_offer
from vc_transport_opensips.session import (
    CallRefused,
    MediaManager,
    SetupRefused,
    open_media,
    start_call,
)
from vc_transport_opensips.settings import OpenSIPSSettings
from vc_transport_opensips.sipmsg import Request, Response
from vc_transport_opensips.transactions import (
    T1,
    T2,
    TIMER_H,
    ClientTransaction,
    ServerTransaction,
    new_branch,
    server_key,
)

log = logging.getLogger("vc.transport.opensips.sip")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, NOTIFY, REFER"
NOT_ALLOWED = {"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "PRACK"}
SUPPORTED: set[str] = set()
DROP_LOG_EVERY = 5.0
#: Seconds between attempts to reopen a SIP socket that closed under us (the last repeats).
REOPEN_DELAYS = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)


def sendable(addr: Any) -> bool:
    """Whether ``addr`` is an (IP literal, port 1-65535) pair that sendto cannot choke on."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return False
    host, port = addr[0], addr[1]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return False
    try:
        ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return False
    return True


def _user(value: str) -> str:
    try:
        uri = sipmsg.uri_of(value)
    except ValueError:
        return ""
    return uri.user or uri.host


def _params(req: Request) -> dict[str, str]:
    """X- headers become call parameters (``X-Profile: sales`` -> ``{"profile": "sales"}``)."""
    out: dict[str, str] = {}
    for k, v in req.headers:
        if k.lower().startswith("x-") and len(k) > 2:
            out.setdefault(k[2:].lower(), v)
    return out


class Dialog(Signalling):
    """One call: its dialog state, its INVITE transaction and its media."""

    def __init__(self, ua: SipUserAgent, invite: Request, txn: ServerTransaction) -> None:
        self.ua = ua
        self.invite = invite
        self.txn = txn
        self.call_id = invite.call_id
        self.local_tag = secrets.token_hex(6)
        self.remote_tag = invite.from_tag
        self.remote_cseq = invite.cseq[0]
        self.local_cseq = 0
        self.remote_target = invite.contact_uri or invite.uri
        self.route_set = list(invite.get_all("Record-Route"))
        self.local_party = f"{invite.get('To')};tag={self.local_tag}"
        self.remote_party = invite.get("From")
        self.log = logging.LoggerAdapter(log, {"call_id": self.call_id})
        self.neg: Negotiated | None = None
        self.sdp: SdpSession | None = None
        self.conn: SipCall | None = None
        self.task: asyncio.Task[str] | None = None
        self.confirmed = False
        self.terminated = False
        self.byed = False
        self._ack_wait: dict[int, asyncio.Event] = {}
        self._pending_invite = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- helpers --------------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def answer_2xx(self, req: Request, txn: ServerTransaction, body: bytes) -> None:
        """Send a 2xx to an INVITE and retransmit it until the ACK (RFC 3261 §13.3.1.4)."""
        data = sipmsg.response(
            req,
            200,
            to_tag=self.local_tag,
            body=body,
            record_route=True,
            headers=self.ua.contact_headers(),
        )
        txn.respond(data, 200)
        acked = self._ack_wait.setdefault(req.cseq[0], asyncio.Event())
        self.spawn(self._retransmit_2xx(data, txn.addr, acked, req.cseq[0]))

    async def _retransmit_2xx(
        self, data: bytes, addr: tuple[str, int], acked: asyncio.Event, cseq: int
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMER_H
        interval = T1
        while not acked.is_set() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acked.wait(), min(interval, deadline - loop.time()))
            if not acked.is_set() and not self.terminated:
                self.ua.send(data, addr)
            interval = min(interval * 2, T2)
        self._pending_invite = False
        if not acked.is_set() and not self.terminated:
            self.log.warning("no ACK for the 200 OK within %.0fs: ending the call", TIMER_H)
            self.end_remote("no ACK received")
            await self.send_bye()

    def ack(self, req: Request) -> None:
        ev = self._ack_wait.get(req.cseq[0])
        if ev is not None:
            ev.set()
        self.confirmed = True

    def end_remote(self, reason: str) -> None:
        self.terminated = True
        if self.conn is not None:
            self.conn.remote_hangup(reason)

    # -- Signalling (bot side) --------------------------------------------------------------

    async def hangup(self) -> None:
        await self.send_bye()

    async def send_bye(self) -> None:
        if self.byed:
            return
        self.byed = True
        self.terminated = True
        resp = await self.ua.send_in_dialog(self, "BYE")
        if resp is None:
            self.log.warning("BYE got no answer")
        else:
            self.log.info("BYE answered %d %s", resp.status, resp.reason)

    async def transfer(self, target: str) -> None:
        uri = self.ua.transfer_uri(target, self.invite)
        resp = await self.ua.send_in_dialog(
            self,
            "REFER",
            [
                ("Refer-To", f"<{uri}>"),
                ("Referred-By", f"<{self.ua.contact_uri()}>"),
            ],
            limit=10.0,
        )
        if resp is None:
            raise CallControlError("REFER got no answer")
        if resp.status >= 300:
            raise CallControlError(f"REFER refused: {resp.status} {resp.reason}")
        self.log.info("transfer to %s accepted (%d)", uri, resp.status)


class SipProtocol(asyncio.DatagramProtocol):
    def __init__(self, ua: SipUserAgent) -> None:
        self.ua = ua
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.ua.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.ua.listener_lost(self.transport, exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)


class SipUserAgent:
    def __init__(self, settings: OpenSIPSSettings, media: MediaManager, host: CallHost) -> None:
        self.settings = settings
        self.media = media
        self.host = host
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.server_txns: dict[tuple[str, ...], ServerTransaction] = {}
        self.client_txns: dict[str, ClientTransaction] = {}
        self.dialogs: dict[str, Dialog] = {}  # by Call-ID
        self.drops: dict[str, int] = {}
        self._drop_logged: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        self._reopening: asyncio.Task[None] | None = None
        #: How many times the socket was reopened after closing under us.
        self.reopened = 0

    # -- socket ----------------------------------------------------------------------------

    async def _bind(self, port: int) -> asyncio.BaseTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: SipProtocol(self), local_addr=(self.settings.sip_ip, port)
        )
        return transport

    async def start(self) -> None:
        transport = await self._bind(self.settings.sip_port)
        self.port = transport.get_extra_info("sockname")[1]
        self._started = True
        log.info("SIP UAS listening on %s:%d/udp", self.settings.sip_ip, self.port)

    def alive(self) -> bool:
        """False while the listening socket is closed although nobody stopped us."""
        if not self._started or self._stopping:
            return True
        return self.transport is not None and not self.transport.is_closing()

    def listener_lost(self, transport: asyncio.BaseTransport | None, exc: Exception | None) -> None:
        """The socket closed: unless we are stopping, reopen it on the same port."""
        if self._stopping or transport is not self.transport:
            return
        log.error(
            "SIP socket %s:%d/udp closed unexpectedly (%s): reopening it",
            self.settings.sip_ip,
            self.port,
            f"{type(exc).__name__}: {exc}" if exc else "closed",
        )
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.ensure_future(self._reopen())

    async def _reopen(self) -> None:
        attempt = 0
        while not self._stopping:
            await asyncio.sleep(REOPEN_DELAYS[min(attempt, len(REOPEN_DELAYS) - 1)])
            attempt += 1
            if self._stopping:
                return
            try:
                await self._bind(self.port)
            except OSError as e:
                if attempt <= 3 or attempt % 10 == 0:
                    log.error(
                        "cannot reopen the SIP socket %s:%d/udp (attempt %d): %s",
                        self.settings.sip_ip,
                        self.port,
                        attempt,
                        e,
                    )
                continue
            self.reopened += 1
            log.warning(
                "SIP socket %s:%d/udp reopened (attempt %d)",
                self.settings.sip_ip,
                self.port,
                attempt,
            )
            return

    async def stop(self) -> None:
        self._stopping = True
        if self._reopening is not None:
            self._reopening.cancel()
        for d in list(self.dialogs.values()):
            if not d.terminated:
                d.end_remote("transport stopping")
        for t in list(self._tasks):
            t.cancel()
        for txn in self.server_txns.values():
            txn.close()
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram; a destination sendto would choke on is dropped with a log line.

        asyncio closes a datagram transport on any sendto error that is not an OSError (port
        70000 raises OverflowError): such an address must never reach it.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not sendable(addr):
            self._drop("unusable destination", _printable(addr), "not sent", "to")
            return
        try:
            transport.sendto(data, addr)
        except Exception as e:  # sendto's own argument checks (closed, wrong type...)
            self._drop("send failed", addr, f"{type(e).__name__}: {e}", "to")

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("SIP handler failed", exc_info=t.exception())

    def _drop(self, reason: str, addr: tuple[Any, Any], detail: str, way: str = "from") -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -DROP_LOG_EVERY) >= DROP_LOG_EVERY:
            self._drop_logged[reason] = now
            log.warning(
                "dropped SIP datagram %s %s:%s (%s: %s); %d dropped so far",
                way,
                addr[0],
                addr[1],
                reason,
                detail[:120],
                self.drops[reason],
            )

    # -- addresses -------------------------------------------------------------------------

    def advertised(self, peer: str = "") -> tuple[str, int]:
        s = self.settings
        explicit = s.sip_advertised_ip or configured_rtp_ip(s.rtp_ip)
        ip = advertise(
            explicit, s.sip_ip, peer or "127.0.0.1", "[transport.opensips] sip_advertised_ip"
        )
        return ip, s.sip_advertised_port or self.port

    def contact_uri(self, peer: str = "") -> str:
        ip, port = self.advertised(peer or self._peer)
        host = f"[{ip}]" if ":" in ip else ip
        return f"sip:vc@{host}:{port}"

    _peer = ""

    def contact_headers(self) -> list[tuple[str, str]]:
        return [
            ("Contact", f"<{self.contact_uri()}>"),
            ("Allow", ALLOW),
            ("Server", self.settings.user_agent),
        ]

    @staticmethod
    def transfer_uri(target: str, invite: Request) -> str:
        t = target.strip()
        if t.startswith(("sip:", "sips:", "tel:")):
            return t
        host = sipmessage.URI.parse(invite.uri).host
        return f"sip:{t}@{host}"

    @staticmethod
    def response_address(req: Request, addr: tuple[str, int]) -> tuple[str, int]:
        """Where responses go (RFC 3261 §18.2.2 with RFC 3581 rport)."""
        via = req.top_via
        if "rport" in via.parameters:
            rport = via.parameters.get("rport") or ""
            port = int(rport) if rport.isascii() and rport.isdigit() and len(rport) <= 5 else 0
            return (addr[0], port if 1 <= port <= 65535 else addr[1])
        port = via.port or 5060
        return (addr[0], port if 1 <= port <= 65535 else addr[1])

    # -- receiving -------------------------------------------------------------------------

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = sipmsg.parse(data)
        except sipmsg.SipParseError as e:
            if e.response is not None:
                self.send(e.response, addr)
                self._drop("malformed request (400 sent)", addr, str(e))
            else:
                self._drop("malformed", addr, str(e))
            return
        except Exception as e:  # never let one datagram take the UA down
            self._drop("parser error", addr, f"{type(e).__name__}: {e}")
            return
        if msg is None:
            return
        try:
            if isinstance(msg, Response):
                self._response(msg)
            else:
                self._request(msg, addr)
        except Exception as e:
            log.exception("SIP request handling failed: %s", e)

    def _response(self, resp: Response) -> None:
        txn = self.client_txns.get(resp.branch)
        if txn is None:
            log.debug("response %d to no transaction of ours (stray or late)", resp.status)
            return
        txn.received(resp)

    def _request(self, req: Request, addr: tuple[str, int]) -> None:
        self._peer = addr[0]
        dest = self.response_address(req, addr)
        key = server_key(req)
        if req.method == "ACK":
            self._ack(req, key)
            return
        existing = self.server_txns.get(key)
        if existing is not None:
            existing.retransmission()  # a retransmitted request: answer it again
            return
        if req.method == "CANCEL":
            self._cancel(req, dest)
            return
        txn = ServerTransaction(req, dest, self.send, self._txn_done)
        self.server_txns[key] = txn
        try:
            self._dispatch(req, txn)
        except Exception:
            # Whatever failed, the transaction gets its final response (and so its timers):
            # never a request left unanswered with its transaction stuck in the table.
            log.exception("%s handling failed: answering 500", req.method)
            if not txn.final_status:
                with contextlib.suppress(Exception):
                    self._reply(txn, 500, to_tag=req.to_tag)
            if not txn.final_status:
                self.server_txns.pop(key, None)
            dialog = self.dialogs.get(req.call_id)
            if dialog is not None and dialog.txn is txn and dialog.task is None:
                dialog.terminated = True  # an INVITE that failed before its call started
                self.dialogs.pop(req.call_id, None)

    def _dispatch(self, req: Request, txn: ServerTransaction) -> None:
        required = [r.strip() for v in req.get_all("Require") for r in v.split(",") if r.strip()]
        unsupported = [r for r in required if r not in SUPPORTED]
        if unsupported and req.method not in ("ACK", "CANCEL"):
            txn.respond(
                sipmsg.response(
                    req,
                    420,
                    to_tag=secrets.token_hex(4),
                    headers=[("Unsupported", ", ".join(unsupported))],
                ),
                420,
            )
            return
        if req.to_tag:
            self._in_dialog(req, txn)
        elif req.method == "INVITE":
            self._new_invite(req, txn)
        elif req.method == "OPTIONS":
            self._reply(txn, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")])
        elif req.method in ("BYE", "NOTIFY", "INFO", "UPDATE"):
            self._reply(txn, 481)
        elif req.method in NOT_ALLOWED:
            self._reply(txn, 405, headers=[("Allow", ALLOW)])
        else:
            self._reply(txn, 501, headers=[("Allow", ALLOW)])

    def _txn_done(self, txn: ServerTransaction) -> None:
        if self.server_txns.get(txn.key) is txn:
            del self.server_txns[txn.key]

    def _reply(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str = "",
        *,
        to_tag: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        tag = to_tag or (secrets.token_hex(4) if status >= 200 else "")
        txn.respond(
            sipmsg.response(txn.request, status, reason, to_tag=tag, headers=headers, body=body),
            status,
        )

    def _ack(self, req: Request, key: tuple[str, ...]) -> None:
        dialog = self.dialogs.get(req.call_id)
        if dialog is not None and req.to_tag == dialog.local_tag:
            dialog.ack(req)
        txn = self.server_txns.get(key)
        if txn is not None:
            txn.ack()  # ACK of a non-2xx final response: stop its retransmission

    def _cancel(self, req: Request, dest: tuple[str, int]) -> None:
        invite_txn = self.server_txns.get(server_key(req, "INVITE"))
        if invite_txn is None or not invite_txn.is_invite:
            self.send(sipmsg.response(req, 481, to_tag=secrets.token_hex(4)), dest)
            return
        self.send(sipmsg.response(req, 200, to_tag=secrets.token_hex(4)), dest)
        if invite_txn.final_status:
            return  # already answered: CANCEL has no effect (RFC 3261 §9.2)
        invite_txn.cancelled = True
        dialog = self.dialogs.get(req.call_id)
        tag = dialog.local_tag if dialog else secrets.token_hex(4)
        self._reply(invite_txn, 487, to_tag=tag)
        if dialog is not None:
            dialog.log.info("caller cancelled before the answer")
            dialog.end_remote("caller cancelled")

    # -- INVITE ----------------------------------------------------------------------------

    def _new_invite(self, req: Request, txn: ServerTransaction) -> None:
        other = self.dialogs.get(req.call_id)
        if other is not None:
            if other.remote_tag == req.from_tag and other.invite.cseq == req.cseq:
                other.txn.retransmission()  # same INVITE through another branch: absorb it
                self.server_txns.pop(txn.key, None)
            else:
                self._reply(txn, 482)
            return
        if not req.get("Contact"):
            self._reply(txn, 400, "Missing Contact header")
            return
        dialog = Dialog(self, req, txn)
        self.dialogs[req.call_id] = dialog
        txn.respond(sipmsg.response(req, 100), 100)
        self.spawn(self._setup_call(dialog, req, txn))

    async def _setup_call(self, dialog: Dialog, req: Request, txn: ServerTransaction) -> None:
        try:
            await self._setup(dialog, req, txn)
        except Exception:
            dialog.log.exception("call setup failed")
            if not txn.final_status:
                self._reply(txn, 500, to_tag=dialog.local_tag)
            await self._finish(dialog)

    def _reject(
        self,
        dialog: Dialog,
        txn: ServerTransaction,
        status: int,
        reason: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        dialog.log.info(
            "rejecting the call: %d %s", status, reason or sipmsg.REASONS.get(status, "")
        )
        self._reply(txn, status, reason, to_tag=dialog.local_tag, headers=headers)
        dialog.terminated = True
        self.dialogs.pop(dialog.call_id, None)

    def _refusal(self, e: SetupRefused) -> tuple[int, str, list[tuple[str, str]]]:
        """The SIP answer (status, reason phrase, headers) to a call set-up refusal."""
        accept_sdp = [("Accept", "application/sdp")]
        codecs = ", ".join(self.settings.codecs)
        return {
            SetupRefused.CORE: (503, "", [("Retry-After", "5"), ("Warning", f'399 vc "{e.detail}"')]),
            SetupRefused.NO_OFFER: (415, "SDP offer required", accept_sdp),
            SetupRefused.NOT_SDP: (415, "", accept_sdp),
            SetupRefused.BAD_OFFER: (488, "", [("Warning", f'399 vc "{e.detail}"')]),
            SetupRefused.NO_CODEC: (488, "", [("Warning", f'305 vc "no common codec; vc speaks {codecs}"')]),
            SetupRefused.NO_PORT: (503, "No RTP port available", [("Retry-After", "5")]),
            SetupRefused.NO_ADDRESS: (500, "No media address configured", []),
        }[e.reason]

    async def _setup(self, dialog: Dialog, req: Request, txn: ServerTransaction) -> None:
        info = CallInfo(
            call_id=req.call_id,
            transport="opensips",
            from_=_user(req.get("From")),
            to=_user(req.get("To")),
            user=_user(f"<{req.uri}>"),
            params=_params(req),
        )
        offer = req.body.decode("utf-8", "replace") if req.body else ""
        try:
            neg, stream, sdp = await open_media(self.host, info, offer, self.settings, self.media,
                                                dialog.log, req.content_type)
        except SetupRefused as e:
            self._reject(dialog, txn, *self._refusal(e))
            return
        try:
            dialog.neg, dialog.sdp = neg, sdp
            if self.settings.answer_delay > 0:
                txn.respond(
                    sipmsg.response(
                        req,
                        180,
                        to_tag=dialog.local_tag,
                        record_route=True,
                        headers=self.contact_headers(),
                    ),
                    180,
                )
                await asyncio.sleep(self.settings.answer_delay)
            conn = SipCall(info, stream, dialog, dialog.log)
            dialog.conn = conn
        finally:
            # Until the call owns the stream (and _finish closes it), a failure (or this task
            # being cancelled) must give the RTP port back here, or the port leaks for good.
            if dialog.conn is None:
                await self.media.close(stream)
        if txn.cancelled or dialog.terminated:
            dialog.log.info("call cancelled before the answer: media released")
            await self._finish(dialog)
            return
        try:
            dialog.task = await start_call(self.host, conn)
        except CallRefused as e:
            self._reject(
                dialog, txn, 503, headers=[("Retry-After", "5"), ("Warning", f'399 vc "{e}"')]
            )
            await self._finish(dialog)
            return
        dialog.task.add_done_callback(lambda _: self.spawn(self._finish(dialog)))
        if txn.cancelled:
            return
        dialog.log.info(
            "answering %s with %s/%d ptime %d (media %s:%d, ours %s:%d)",
            info.from_ or "caller",
            neg.codec,
            neg.clock_rate,
            neg.ptime,
            neg.remote_address,
            neg.remote_port,
            sdp.address,
            sdp.port,
        )
        dialog.answer_2xx(req, txn, sdp.answer(neg).encode())

    async def _finish(self, dialog: Dialog) -> None:
        """The call is over in core: release its media and forget the dialog."""
        if dialog.conn is not None and not dialog.conn.ended:
            dialog.conn.ended = True
            if not dialog.terminated and dialog.txn.final_status == 200:
                await dialog.send_bye()
        if dialog.conn is not None:
            await self.media.close(dialog.conn.stream)
        dialog.terminated = True
        if self.dialogs.get(dialog.call_id) is dialog:
            del self.dialogs[dialog.call_id]

    # -- in-dialog requests ------------------------------------------------------------------

    def _in_dialog(self, req: Request, txn: ServerTransaction) -> None:
        dialog = self.dialogs.get(req.call_id)
        if (
            dialog is None
            or dialog.local_tag != req.to_tag
            or dialog.remote_tag != req.from_tag
            or (dialog.terminated and req.method != "BYE")
        ):
            self._reply(txn, 481, to_tag=req.to_tag)
            return
        cseq = req.cseq[0]
        if cseq <= dialog.remote_cseq and req.method != "BYE":
            self._reply(txn, 500, "CSeq out of order", to_tag=dialog.local_tag)
            return
        dialog.remote_cseq = max(dialog.remote_cseq, cseq)
        tag = dialog.local_tag
        if req.method == "BYE":
            self._reply(txn, 200, to_tag=tag)
            dialog.byed = True
            dialog.end_remote("caller hung up")
        elif req.method in ("INVITE", "UPDATE"):
            self._reoffer(dialog, req, txn)
        elif req.method == "OPTIONS":
            self._reply(
                txn, 200, to_tag=tag, headers=[("Allow", ALLOW), ("Accept", "application/sdp")]
            )
        elif req.method == "NOTIFY":
            self._reply(txn, 200, to_tag=tag)
            self._notify(dialog, req)
        elif req.method == "INFO":
            self._reply(txn, 200, to_tag=tag)
            self._info(dialog, req)
        elif req.method in NOT_ALLOWED:
            self._reply(txn, 405, to_tag=tag, headers=[("Allow", ALLOW)])
        else:
            self._reply(txn, 501, to_tag=tag, headers=[("Allow", ALLOW)])

    def _reoffer(self, dialog: Dialog, req: Request, txn: ServerTransaction) -> None:
        tag = dialog.local_tag
        if dialog.neg is None or dialog.sdp is None or dialog.conn is None:
            self._reply(txn, 491, to_tag=tag)
            return
        if req.method == "INVITE" and dialog._pending_invite:
            self._reply(txn, 491, to_tag=tag, headers=[("Retry-After", "1")])
            return
        neg = dialog.neg
        if req.body:
            try:
                offer = parse_offer(req.body.decode("utf-8", "replace"))
            except SdpError as e:
                self._reply(txn, 488, to_tag=tag, headers=[("Warning", f'399 vc "{e}"')])
                return
            new = negotiate(offer, self.settings.codecs, self.settings.ptime)
            if new is None:
                self._reply(txn, 488, to_tag=tag)
                return
            new.ptime = neg.ptime  # the playout frame size is fixed for the call
            dialog.conn.stream.update(new)
            dialog.neg = neg = new
            dialog.log.info(
                "media renegotiated: %s, %s, remote %s:%d",
                neg.codec,
                neg.direction,
                neg.remote_address,
                neg.remote_port,
            )
        body = dialog.sdp.answer(neg).encode()
        if req.method == "INVITE":
            dialog._pending_invite = True
            dialog.answer_2xx(req, txn, body)
        else:
            txn.respond(
                sipmsg.response(req, 200, to_tag=tag, body=body, headers=self.contact_headers()),
                200,
            )

    def _notify(self, dialog: Dialog, req: Request) -> None:
        frag = req.body.decode("utf-8", "replace").strip().split("\r\n")[0]
        dialog.log.info("transfer progress: %s", frag or "(empty NOTIFY)")
        bits = frag.split(" ")
        if len(bits) >= 2 and bits[1].isdigit() and 200 <= int(bits[1]) < 300 and not dialog.byed:
            dialog.log.info("transfer completed: hanging up our leg")
            dialog.end_remote("transferred")
            dialog.spawn(dialog.send_bye())

    def _info(self, dialog: Dialog, req: Request) -> None:
        if req.content_type != "application/dtmf-relay" or dialog.conn is None:
            return
        for line in req.body.decode("utf-8", "replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal" and value.strip():
                digit = value.strip()[0].upper()
                if digit in "0123456789*#ABCD":
                    dialog.conn._dtmf(digit)

    # -- requests we send --------------------------------------------------------------------

    async def send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        headers: list[tuple[str, str]] | None = None,
        limit: float | None = None,
    ) -> Response | None:
        dialog.local_cseq += 1
        branch = new_branch()
        ip, port = self.advertised(self._peer)
        host = f"[{ip}]" if ":" in ip else ip
        target = dialog.remote_target
        hdrs = [("Via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport"), ("Max-Forwards", "70")]
        hdrs += [("Route", r) for r in dialog.route_set]
        hdrs += [
            ("From", dialog.local_party),
            ("To", dialog.remote_party),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.local_cseq} {method}"),
            ("Contact", f"<{self.contact_uri()}>"),
            ("User-Agent", self.settings.user_agent),
        ]
        hdrs += headers or []
        data = sipmsg.request(method, target, hdrs)
        try:
            addr = await self._next_hop(dialog)
        except (OSError, ValueError) as e:
            dialog.log.error("cannot send %s: next hop unresolvable: %s", method, e)
            return None
        txn = ClientTransaction(branch, data, addr, self.send)
        self.client_txns[branch] = txn
        try:
            if limit is None:
                return await txn.run()
            return await asyncio.wait_for(txn.run(), limit)
        except TimeoutError:
            return None
        finally:
            self.client_txns.pop(branch, None)

    async def _next_hop(self, dialog: Dialog) -> tuple[str, int]:
        uri = (
            sipmsg.uri_of(dialog.route_set[0].split(",")[0])
            if dialog.route_set
            else sipmessage.URI.parse(dialog.remote_target)
        )
        port = uri.port or 5060
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        host = uri.host.strip("[]")
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=2)  # SOCK_DGRAM
        sockaddr = infos[0][4]  # an IPv4/IPv6 address: (host, port, ...)
        return str(sockaddr[0]), int(sockaddr[1])


def _printable(addr: Any) -> tuple[str, str]:
    """An address of any shape, for a log line."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0])[:60], str(addr[1])[:12]
    return repr(addr)[:60], "?"


def new_call_id() -> str:
    return uuid.uuid4().hex

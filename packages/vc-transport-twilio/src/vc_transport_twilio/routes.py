"""HTTP routes: the voice webhook, the Media Streams WebSocket, the Connect action, outbound calls.

Every request from Twilio is checked against ``X-Twilio-Signature`` computed over the
*configured* public URL (the app runs behind load balancers and cannot trust the URL it
sees). Refused requests get 403 and start nothing; each refusal is logged with its reason.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response, WebSocket
from fastapi.responses import JSONResponse

from vc import jsonsafe
from vc.call import CallControlError, CallInfo
from vc_transport_twilio import twiml
from vc_transport_twilio.outbound import place_call
from vc_transport_twilio.stream import RESERVED, StreamHandler
from vc_transport_twilio.transport import REPLAY_WINDOW_S

if TYPE_CHECKING:
    from vc_transport_twilio.transport import TwilioTransport

log = logging.getLogger("vc.transport.twilio")

#: Largest webhook body read (Twilio's are about 1 KiB).
MAX_BODY = 64 * 1024
POLICY_VIOLATION = 1008


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _xml(document: str) -> Response:
    return Response(content=document, media_type="application/xml")


def _peer(request: Request | WebSocket) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"


async def _read_form(request: Request) -> dict[str, str]:
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        raise _Rejected(415, "webhook body is not application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _Rejected(413, f"webhook body larger than {MAX_BODY} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise _Rejected(400, "webhook body is not UTF-8") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise _Rejected(400, f"parameter {key!r} appears twice")
        params[key] = value
    return params


def build_router(transport: TwilioTransport) -> APIRouter:
    """The transport's routes: the voice webhook, the Connect action, outbound calls, the stream."""
    return TwilioRoutes(transport).router()


def _stream_params(request: Request) -> dict[str, str]:
    """The webhook URL's own query parameters (``?profile=sales``), Twilio's reserved ones left out."""
    return {k: v for k, v in parse_qsl(request.url.query) if k not in RESERVED}


def _bearer_token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


class TwilioRoutes:
    """The handlers of one transport's routes, each a method that can be read and tested alone."""

    def __init__(self, transport: TwilioTransport) -> None:
        self.transport = transport
        self.s = transport.settings

    def router(self) -> APIRouter:
        s = self.s
        router = APIRouter()
        router.add_api_route(s.voice_path, self.voice, methods=["POST"], include_in_schema=False)
        router.add_api_route(s.action_path, self.connect_action, methods=["POST"],
                             include_in_schema=False)
        router.add_api_route(s.calls_path, self.create_call, methods=["POST"],
                             include_in_schema=False)
        router.add_api_websocket_route(s.stream_path, self.stream)
        return router

    # -- checks shared by the webhooks ---------------------------------------------------------

    def base_url(self, request: Request) -> str:
        """Where Twilio reaches vc: ``public_url``, else what the (forwarded) request says."""
        if self.s.public_url:
            return self.s.base()
        proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "localhost")
        return f"{proto}://{host}"

    def check_signature(self, request: Request, path: str, params: dict[str, str]) -> None:
        """Raise :class:`_Rejected` unless the request is Twilio's: signed over the configured
        public URL, never seen before, and from where remote requests are allowed."""
        transport = self.transport
        local = transport.refuse_remote(request.client.host if request.client else None,
                                        request.headers)
        if local:
            raise _Rejected(403, local)
        if not transport.validating:
            return
        if transport.signatures is None:
            raise _Rejected(503, "auth_token is not configured")
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise _Rejected(403, "missing X-Twilio-Signature")
        url = self.s.public(path, request.url.query)
        if not transport.signatures.valid(url, params, signature):
            raise _Rejected(
                403, f"invalid X-Twilio-Signature for {url} (check public_url and auth_token)"
            )
        if not transport.seen_signatures.add(signature, REPLAY_WINDOW_S):
            raise _Rejected(403, "replayed request (this signature was already used)")

    async def twilio_request(self, request: Request, path: str) -> dict[str, str]:
        params = await _read_form(request)
        self.check_signature(request, path, params)
        return params

    @staticmethod
    def refused(request: Request, e: _Rejected) -> Response:
        log.warning("%s %s from %s refused (%d): %s", request.method, request.url.path,
                    _peer(request), e.status, e.reason)
        return Response(status_code=e.status)

    # -- the voice webhook ---------------------------------------------------------------------

    async def voice(self, request: Request) -> Response:
        """A call: TwiML connecting a Media Stream (or a busy answer when not taking calls)."""
        try:
            params = await self.twilio_request(request, self.s.voice_path)
        except _Rejected as e:
            return self.refused(request, e)
        call_sid = params.get("CallSid", "")
        if not call_sid:
            return self.refused(request, _Rejected(400, "no CallSid"))
        host = self.transport.host
        # Not taking calls at all: the caller gets a busy signal before any stream opens.
        # Capacity is the stream's to check (host.admit): that caller hears the busy message.
        if not self.transport.ready() or host is None or not host.accepting:
            return self.busy(request, params)
        return self.connect(request, params)

    def busy(self, request: Request, params: dict[str, str]) -> Response:
        call_sid = params.get("CallSid", "")
        direction = params.get("Direction", "inbound")
        log.warning("refusing call: not accepting calls (starting or shutting down)",
                    extra={"call_id": call_sid})
        if direction == "inbound":
            return _xml(twiml.reject("busy"))
        return _xml(self.transport.busy_reply(CallInfo(
            call_id=call_sid, transport="twilio", from_=params.get("From", ""),
            to=params.get("To", ""), direction=direction, params=_stream_params(request),
        )))

    def connect(self, request: Request, params: dict[str, str]) -> Response:
        call_sid = params.get("CallSid", "")
        direction = params.get("Direction", "inbound")
        stream_params = _stream_params(request)
        stream_params["from"] = params.get("From", "")
        stream_params["to"] = params.get("To", "")
        stream_params["direction"] = direction
        stream_params["vc_token"] = self.transport.tokens.issue(call_sid)
        base = self.base_url(request)
        log.info("call from %s to %s (%s): connecting a stream", params.get("From", "?"),
                 params.get("To", "?"), direction, extra={"call_id": call_sid})
        return _xml(twiml.connect_stream(self.s.stream_url(base), base + self.s.action_path,
                                         stream_params))

    # -- the Connect action --------------------------------------------------------------------

    async def connect_action(self, request: Request) -> Response:
        """The stream ended: the pending instruction (a transfer), else hang up."""
        try:
            params = await self.twilio_request(request, self.s.action_path)
        except _Rejected as e:
            return self.refused(request, e)
        call_sid = params.get("CallSid", "")
        document = self.transport.actions.pop(call_sid)
        log.info("stream ended: answering the Connect action with %s",
                 "the pending instruction" if document else "a hang-up",
                 extra={"call_id": call_sid})
        return _xml(document or twiml.hangup())

    # -- outbound calls ------------------------------------------------------------------------

    async def create_call(self, request: Request) -> Response:
        """``POST {"to": ..., "from": ..., "profile": ...}`` with the bearer ``api_token``."""
        s = self.s
        if not s.api_token:
            return JSONResponse(
                {"error": "outbound calls are disabled: set [transport.twilio] api_token"},
                status_code=404,
            )
        token = _bearer_token(request)
        if not token or not hmac.compare_digest(token.encode(), s.api_token.encode()):
            log.warning("POST %s from %s refused (401): bad or missing bearer token",
                        request.url.path, _peer(request))
            return JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        data = await self._call_request(request)
        if data is None:
            return JSONResponse(
                {"error": 'expected a JSON object {"to": "+15551234567", '
                          '"from": "...", "profile": "..."}'},
                status_code=400,
            )
        if self.transport.rest is None:
            return JSONResponse({"error": "no Twilio REST credentials configured"}, status_code=503)
        try:
            sid = await place_call(self.transport.rest, s, data["to"],
                                   str(data.get("from") or ""), str(data.get("profile") or ""))
        except CallControlError as e:
            log.warning("outbound call to %s failed: %s", data["to"][:40], e)
            return JSONResponse({"error": str(e)}, status_code=502)
        log.info("outbound call %s to %s placed", sid, data["to"], extra={"call_id": sid})
        return JSONResponse({"call_sid": sid}, status_code=201)

    @staticmethod
    async def _call_request(request: Request) -> dict[str, Any] | None:
        """The outbound call's JSON body, if it is an object with a string ``to``."""
        body = await request.body()
        try:
            data: Any = jsonsafe.loads(body) if len(body) <= MAX_BODY else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("to"), str):
            return None
        return data

    # -- the Media Stream ----------------------------------------------------------------------

    async def stream(self, ws: WebSocket) -> None:
        """A Media Stream: refused before ``accept`` (HTTP 403) unless it is Twilio's."""
        reason = self.stream_refusal(ws)
        if reason:
            log.warning("stream upgrade from %s refused%s", _peer(ws), reason)
            await ws.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await ws.accept()
        await StreamHandler(self.transport, ws).run()

    def stream_refusal(self, ws: WebSocket) -> str:
        """Why a stream upgrade is refused (the end of the log line), or empty to take it."""
        transport = self.transport
        local = transport.refuse_remote(ws.client.host if ws.client else None, ws.headers)
        if local:
            return f" (403): {local}"
        if transport.validating:
            signature = ws.headers.get("x-twilio-signature")
            url = self.s.stream_url() + (f"?{ws.url.query}" if ws.url.query else "")
            checker = transport.signatures
            if not signature or checker is None or not checker.valid(url, {}, signature):
                return f" (403): {'missing' if not signature else 'invalid'} X-Twilio-Signature for {url}"
        if not transport.ready():
            return ": transport not started"
        return ""

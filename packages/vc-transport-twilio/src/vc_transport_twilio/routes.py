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
    s = transport.settings
    router = APIRouter()

    def base_url(request: Request) -> str:
        if s.public_url:
            return s.base()
        proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "localhost")
        return f"{proto}://{host}"

    def check_signature(request: Request, path: str, params: dict[str, str]) -> None:
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
        url = s.public(path, request.url.query)
        if not transport.signatures.valid(url, params, signature):
            raise _Rejected(
                403, f"invalid X-Twilio-Signature for {url} (check public_url and auth_token)"
            )
        if not transport.seen_signatures.add(signature, REPLAY_WINDOW_S):
            raise _Rejected(403, "replayed request (this signature was already used)")

    async def twilio_request(request: Request, path: str) -> dict[str, str]:
        params = await _read_form(request)
        check_signature(request, path, params)
        return params

    def refused(request: Request, e: _Rejected) -> Response:
        log.warning(
            "%s %s from %s refused (%d): %s",
            request.method,
            request.url.path,
            _peer(request),
            e.status,
            e.reason,
        )
        return Response(status_code=e.status)

    @router.post(s.voice_path, include_in_schema=False)
    async def voice(request: Request) -> Response:
        try:
            params = await twilio_request(request, s.voice_path)
        except _Rejected as e:
            return refused(request, e)
        call_sid = params.get("CallSid", "")
        extra = {"call_id": call_sid}
        if not call_sid:
            return refused(request, _Rejected(400, "no CallSid"))
        direction = params.get("Direction", "inbound")
        host = transport.host
        # Not taking calls at all: the caller gets a busy signal before any stream opens.
        # Capacity is the stream's to check (host.admit): that caller hears the busy message.
        if not transport.ready() or host is None or not host.accepting:
            log.warning(
                "refusing call: not accepting calls (starting or shutting down)", extra=extra
            )
            if direction == "inbound":
                return _xml(twiml.reject("busy"))
            return _xml(transport.busy_reply(CallInfo(
                call_id=call_sid, transport="twilio", from_=params.get("From", ""),
                to=params.get("To", ""), direction=direction,
                params={k: v for k, v in parse_qsl(request.url.query) if k not in RESERVED},
            )))
        stream_params = {k: v for k, v in parse_qsl(request.url.query) if k not in RESERVED}
        stream_params["from"] = params.get("From", "")
        stream_params["to"] = params.get("To", "")
        stream_params["direction"] = direction
        stream_params["vc_token"] = transport.tokens.issue(call_sid)
        base = base_url(request)
        log.info(
            "call from %s to %s (%s): connecting a stream",
            params.get("From", "?"),
            params.get("To", "?"),
            direction,
            extra=extra,
        )
        return _xml(twiml.connect_stream(s.stream_url(base), base + s.action_path, stream_params))

    @router.post(s.action_path, include_in_schema=False)
    async def connect_action(request: Request) -> Response:
        try:
            params = await twilio_request(request, s.action_path)
        except _Rejected as e:
            return refused(request, e)
        call_sid = params.get("CallSid", "")
        document = transport.actions.pop(call_sid)
        log.info(
            "stream ended: answering the Connect action with %s",
            "the pending instruction" if document else "a hang-up",
            extra={"call_id": call_sid},
        )
        return _xml(document or twiml.hangup())

    @router.post(s.calls_path, include_in_schema=False)
    async def create_call(request: Request) -> Response:
        if not s.api_token:
            return JSONResponse(
                {"error": "outbound calls are disabled: set [transport.twilio] api_token"},
                status_code=404,
            )
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or not hmac.compare_digest(token.encode(), s.api_token.encode()):
            log.warning(
                "POST %s from %s refused (401): bad or missing bearer token",
                request.url.path,
                _peer(request),
            )
            return JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        body = await request.body()
        try:
            data: Any = jsonsafe.loads(body) if len(body) <= MAX_BODY else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("to"), str):
            return JSONResponse(
                {
                    "error": 'expected a JSON object {"to": "+15551234567", '
                    '"from": "...", "profile": "..."}'
                },
                status_code=400,
            )
        if transport.rest is None:
            return JSONResponse({"error": "no Twilio REST credentials configured"}, status_code=503)
        try:
            sid = await place_call(
                transport.rest,
                s,
                data["to"],
                str(data.get("from") or ""),
                str(data.get("profile") or ""),
            )
        except CallControlError as e:
            log.warning("outbound call to %s failed: %s", data["to"][:40], e)
            return JSONResponse({"error": str(e)}, status_code=502)
        log.info("outbound call %s to %s placed", sid, data["to"], extra={"call_id": sid})
        return JSONResponse({"call_sid": sid}, status_code=201)

    @router.websocket(s.stream_path)
    async def stream(ws: WebSocket) -> None:
        local = transport.refuse_remote(ws.client.host if ws.client else None, ws.headers)
        if local:
            log.warning("stream upgrade from %s refused (403): %s", _peer(ws), local)
            await ws.close(code=POLICY_VIOLATION)
            return
        if transport.validating:
            signature = ws.headers.get("x-twilio-signature")
            url = s.stream_url() + (f"?{ws.url.query}" if ws.url.query else "")
            checker = transport.signatures
            if not signature or checker is None or not checker.valid(url, {}, signature):
                reason = "missing" if not signature else "invalid"
                log.warning(
                    "stream upgrade from %s refused (403): %s X-Twilio-Signature for %s",
                    _peer(ws),
                    reason,
                    url,
                )
                await ws.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
                return
        if not transport.ready():
            log.warning("stream upgrade from %s refused: transport not started", _peer(ws))
            await ws.close(code=POLICY_VIOLATION)
            return
        await ws.accept()
        await StreamHandler(transport, ws).run()

    return router

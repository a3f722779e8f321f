"""The Media Streams WebSocket: one handler per stream, from upgrade to close.

Order of checks: the upgrade's ``X-Twilio-Signature`` (403 before accepting, see
:mod:`vc_transport_twilio.transport`), then ``connected``/``start`` within ``start_timeout``;
``start`` must carry µ-law 8 kHz mono and a valid single-use stream token for its CallSid.
Only then is a call started. Anything malformed, oversized or out of order closes that stream
(and only that stream) with a log line saying why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from vc import jsonsafe
from vc.audio import ulaw_to_pcm
from vc.call import CallInfo
from vc.providers import ProviderError
from vc_transport_twilio.connection import StreamControl, TwilioCall

if TYPE_CHECKING:
    from vc_transport_twilio.transport import TwilioTransport

log = logging.getLogger("vc.transport.twilio")

#: Seconds a call's pipeline gets to stop by itself after the caller hung up before it is cancelled.
HANGUP_GRACE_S = 3.0
#: Largest µ-law payload accepted in one media message (Twilio sends 160 bytes = 20 ms).
MAX_PAYLOAD = 1600
DTMF_DIGITS = set("0123456789*#ABCD")
#: Parameters the transport itself puts in the TwiML (not passed through as call params).
RESERVED = ("vc_token", "from", "to", "direction")

# WebSocket close codes (RFC 6455).
NORMAL, POLICY, UNSUPPORTED, BAD_DATA, TOO_BIG, TRY_LATER = 1000, 1008, 1003, 1007, 1009, 1013


class StreamRejected(Exception):
    """The stream broke the protocol; it is closed with ``code``."""

    def __init__(self, reason: str, code: int = POLICY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class _Closed(Exception):
    """The peer closed the socket."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _text(value: Any, what: str, limit: int = 128) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise StreamRejected(f"start message has no valid {what}")
    return value


class StreamHandler:
    """Runs one Media Stream."""

    def __init__(self, transport: TwilioTransport, ws: WebSocket) -> None:
        self.transport = transport
        self.settings = transport.settings
        self.ws = ws
        client = ws.client
        self.peer = f"{client.host}:{client.port}" if client else "?"
        self.log: logging.LoggerAdapter[Any] = logging.LoggerAdapter(log, {})
        self.call: TwilioCall | None = None
        self._socket_closed = False

    # -- reading -------------------------------------------------------------------------------

    async def _next(self) -> dict[str, Any]:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            self._socket_closed = True
            raise _Closed(int(message.get("code") or NORMAL))
        text = message.get("text")
        if text is None:
            raise StreamRejected("binary frame received (Twilio sends JSON text)", UNSUPPORTED)
        if len(text) > self.settings.max_message_bytes:
            raise StreamRejected(
                f"message of {len(text)} bytes exceeds max_message_bytes "
                f"({self.settings.max_message_bytes})",
                TOO_BIG,
            )
        try:
            data = jsonsafe.loads(text)  # ValueError only, also for "[" * 1000
        except ValueError as e:
            raise StreamRejected(f"malformed JSON message ({e})"[:120], BAD_DATA) from None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise StreamRejected("message is not a Twilio stream event", BAD_DATA)
        return data

    async def _await_start(self) -> dict[str, Any]:
        async with asyncio.timeout(self.settings.start_timeout):
            while True:
                data = await self._next()
                event = data["event"]
                if event == "connected":
                    continue
                if event == "start":
                    return data
                raise StreamRejected(f"{event!r} message before start")

    # -- the start message ---------------------------------------------------------------------

    def _parse_start(self, data: dict[str, Any]) -> tuple[str, CallInfo]:
        start = data.get("start")
        if not isinstance(start, dict):
            raise StreamRejected("start message without a start object", BAD_DATA)
        stream_sid = _text(data.get("streamSid") or start.get("streamSid"), "streamSid")
        call_sid = _text(start.get("callSid"), "callSid")
        self.log = logging.LoggerAdapter(log, {"call_id": call_sid})
        fmt = start.get("mediaFormat")
        if not isinstance(fmt, dict):
            raise StreamRejected("start message has no mediaFormat", BAD_DATA)
        encoding, rate, channels = fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")
        if encoding != "audio/x-mulaw" or str(rate) != "8000" or str(channels) != "1":
            raise StreamRejected(
                f"unsupported mediaFormat encoding={encoding!r} sampleRate={rate!r} "
                f"channels={channels!r}: only audio/x-mulaw, 8000 Hz, mono is supported",
                UNSUPPORTED,
            )
        account = start.get("accountSid")
        if self.settings.account_sid and account != self.settings.account_sid:
            raise StreamRejected(f"stream belongs to another account ({str(account)[:40]!r})")
        raw = start.get("customParameters") or {}
        if not isinstance(raw, dict) or len(raw) > 64:
            raise StreamRejected("customParameters is not a small object", BAD_DATA)
        params = {str(k)[:64]: str(v)[:512] for k, v in raw.items()}
        token = params.pop("vc_token", "")
        if self.transport.validating:
            problem = self.transport.tokens.check(token, call_sid)
            if problem:
                raise StreamRejected(problem)
        info = CallInfo(
            call_id=call_sid,
            transport="twilio",
            from_=params.pop("from", ""),
            to=params.pop("to", ""),
            direction=params.pop("direction", "inbound") or "inbound",
            params={**params, "stream_sid": stream_sid},
        )
        return stream_sid, info

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            stream_sid, info = self._parse_start(await self._await_start())
        except StreamRejected as e:
            self.log.warning("stream from %s rejected: %s", self.peer, e.reason)
            await self._close(e.code)
            return
        except TimeoutError:
            self.log.warning(
                "stream from %s rejected: no start message within %.0fs",
                self.peer,
                self.settings.start_timeout,
            )
            await self._close(POLICY)
            return
        except _Closed as e:
            self.log.info(
                "stream from %s closed before it started (code %d)%s",
                self.peer,
                e.code,
                ": a message exceeded the server's size limit" if e.code == TOO_BIG else "",
            )
            return
        streams = self.transport.streams
        if info.call_id in streams:
            self.log.warning("stream from %s rejected: call already has a stream", self.peer)
            await self._close(POLICY)
            return
        streams[info.call_id] = self
        try:
            await self._run_call(stream_sid, info)
        finally:
            streams.pop(info.call_id, None)

    async def _run_call(self, stream_sid: str, info: CallInfo) -> None:
        transport = self.transport
        control = StreamControl(
            rest=transport.rest,
            end_stream=self.end_stream,
            set_action=lambda doc: transport.actions.set(info.call_id, doc),
        )
        call = self.call = TwilioCall(
            info,
            stream_sid,
            self.ws.send_text,
            control,
            send_ahead_ms=self.settings.send_ahead_ms,
            log=self.log,
        )
        host = transport.host
        refused = "not accepting calls (starting or shutting down)" if host is None else (
            host.admit(info)
        )
        if refused:
            self.log.warning("stream refused: %s", refused)
            transport.actions.set(info.call_id, transport.busy_reply(info))
            await self._close(TRY_LATER)
            return
        self.log.info(
            "stream %s started (from %s to %s)", stream_sid, info.from_ or "?", info.to or "?"
        )
        call_task = asyncio.create_task(self._call(call), name=f"twilio-call-{info.call_id}")
        sender = asyncio.create_task(call.run_sender(), name=f"twilio-send-{info.call_id}")
        receiver = asyncio.create_task(self._receive(call), name=f"twilio-recv-{info.call_id}")
        try:
            await asyncio.wait({call_task, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done():
                reason = self._end_reason(receiver)
                call.closed = True
                if call.events is not None:
                    call.events.hangup(reason)
                try:
                    async with asyncio.timeout(HANGUP_GRACE_S):
                        await asyncio.shield(call_task)
                except TimeoutError:
                    self.log.warning(
                        "pipeline still running %.0fs after hang-up: cancelled", HANGUP_GRACE_S
                    )
                    call_task.cancel()
            else:
                receiver.cancel()
        finally:
            call.closed = True
            for task in (sender, receiver, call_task):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sender, receiver, call_task, return_exceptions=True)
            await self._close(self._close_code)
        call.unknown_marks.flush(self.log, logging.WARNING, "warnings about unknown marks")
        self.log.info(
            "stream %s ended: %s (sent %d media, %d marks, %d clears; received %d media)",
            stream_sid,
            call.ending or self._reason,
            call.stats.media_sent,
            call.stats.marks_sent,
            call.stats.clears_sent,
            call.stats.media_received,
        )

    _reason = "call ended"
    _close_code = NORMAL

    def _end_reason(self, receiver: asyncio.Task[str]) -> str:
        call = self.call
        assert call is not None
        error = receiver.exception()
        if isinstance(error, StreamRejected):
            self.log.warning("closing stream: %s", error.reason)
            self._reason = f"stream error: {error.reason}"
            self._close_code = error.code
        elif isinstance(error, _Closed):
            if error.code == TOO_BIG:
                self.log.warning("stream closed: a message exceeded the server's size limit")
                self._reason = "stream error: message too big"
            else:
                self._reason = call.ending or "caller hung up (stream closed)"
        elif error is not None:
            self.log.error("stream receive failed: %r", error)
            self._reason = f"stream error: {error!r}"
        else:
            self._reason = call.ending or receiver.result()
        return self._reason

    async def _call(self, call: TwilioCall) -> str:
        host = self.transport.host
        assert host is not None
        try:
            return await host.run_call(call)
        except ProviderError as e:
            self.log.warning("call refused: %s", e)
            self.transport.actions.set(call.info.call_id, self.transport.busy_reply(call.info))
            return "refused"
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("call failed")
            return "error"

    async def _receive(self, call: TwilioCall) -> str:
        while True:
            data = await self._next()
            event = data["event"]
            if event == "media":
                self._on_media(call, data)
            elif event == "mark":
                mark = data.get("mark")
                name = mark.get("name") if isinstance(mark, dict) else None
                if not isinstance(name, str):
                    raise StreamRejected("mark message without a name", BAD_DATA)
                call.mark_echoed(name)
            elif event == "dtmf":
                dtmf = data.get("dtmf")
                digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
                if not isinstance(digit, str) or digit not in DTMF_DIGITS:
                    raise StreamRejected(
                        f"dtmf message with an invalid digit {digit!r}"[:120], BAD_DATA
                    )
                self.log.info("caller pressed %s", digit)
                if call.events is not None:
                    call.events.dtmf(digit)
            elif event == "stop":
                return call.ending or "caller hung up"
            elif event in ("start", "connected"):
                raise StreamRejected(f"unexpected second {event!r} message")
            else:
                self.log.debug("ignoring unknown stream event %r", event[:40])

    def _on_media(self, call: TwilioCall, data: dict[str, Any]) -> None:
        media = data.get("media")
        if not isinstance(media, dict):
            media = {}
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise StreamRejected("media message without a payload", BAD_DATA)
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return  # only the caller's audio is wanted
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise StreamRejected("media payload is not base64", BAD_DATA) from None
        if len(raw) > MAX_PAYLOAD:
            raise StreamRejected(
                f"media payload of {len(raw)} bytes (at most {MAX_PAYLOAD})", TOO_BIG
            )
        call.stats.media_received += 1
        if raw and call.events is not None:
            call.events.audio(ulaw_to_pcm(raw))

    # -- closing ---------------------------------------------------------------------------------

    async def end_stream(self, reason: str) -> None:
        """Close the stream from our side; Twilio then fetches the ``<Connect action>`` URL."""
        self.log.info("ending the stream: %s", reason)
        if self.call is not None:
            self.call.closed = True
        await self._close(NORMAL)

    async def _close(self, code: int) -> None:
        if self._socket_closed:
            return
        self._socket_closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code)

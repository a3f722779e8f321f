"""A WebSocket phone: a softphone (a browser page, a test, any program) calls vc over a WebSocket.

The worked transport of docs/plugin-guide.md ("Transports"). A caller opens
``ws://<vc>/ws-phone/call?from=alice&to=support`` and the call is answered: binary messages carry
PCM16 mono 8 kHz audio both ways (vc sends one 20 ms frame a message, in real time), a text
message ``{"dtmf": "5"}`` is a key press, and closing the socket hangs up, from either side.
Like a phone, the caller sends audio all the time, silence included: vc hears the end of a turn
in it.
Query parameters other than ``from``, ``to`` and ``token`` reach profile matching
(``?profile=sales``). Tested with ``vc.testing.contracts.TransportContract``
(``test_contract.py`` beside this file).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import attrs
from fastapi import APIRouter, WebSocket

from vc.call import CallConnection, CallEvents, CallInfo, PlayoutPacer
from vc.hookspecs import hookimpl
from vc.jsonsafe import JsonError, loads_object
from vc.providers import ProviderContext, ProviderError, TransportProvider
from vc.settings import setting


@attrs.define
class WsPhoneSettings:
    token: str = setting("", secret=True, help="callers must pass ?token=<this>; empty: anyone may call")


class WsCall(CallConnection):
    """One call on one WebSocket: the caller's audio in, the bot's paced out."""

    sample_rate = 8000

    def __init__(self, info: CallInfo, ws: WebSocket) -> None:
        super().__init__(info)
        self.ws = ws
        self.pacer = PlayoutPacer(self.playout, self._send, self._reached)
        self._clock: asyncio.Task[None] | None = None
        self.closed = False

    def attach(self, events: CallEvents) -> None:
        super().attach(events)
        self._clock = asyncio.create_task(self.pacer.run())

    async def _send(self, pcm: bytes | None) -> None:
        if pcm is not None and not self.closed:  # nothing to say: send nothing
            await self.ws.send_bytes(pcm)

    def _reached(self, name: str) -> None:
        if self.events is not None:  # sent in real time, nothing buffered after us: heard
            self.events.mark_played(name)

    async def clear(self) -> None:
        """Nothing is buffered beyond ``playout``, which core has already emptied."""

    async def hangup(self) -> None:
        await self.close()
        with contextlib.suppress(Exception):  # the caller may have gone already
            await self.ws.close()

    async def close(self) -> None:
        self.closed = True
        self.pacer.stop()
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock


class WsPhone(TransportProvider):
    name = "ws-phone"
    Settings = WsPhoneSettings
    description = "WebSocket softphone: PCM16 8 kHz both ways at /ws-phone/call"

    def __init__(self, settings: WsPhoneSettings, context: ProviderContext) -> None:
        super().__init__(settings, context)
        self.calls: set[WsCall] = set()

    def routes(self) -> APIRouter:
        router = APIRouter(prefix=f"/{self.name}")
        router.add_api_websocket_route("/call", self.answer)
        return router

    async def stop(self) -> None:  # at shutdown, after the calls were drained
        for call in list(self.calls):
            await call.hangup()
        await super().stop()

    async def answer(self, ws: WebSocket) -> None:
        """One caller: admit, answer, then carry its audio until either side hangs up."""
        query = ws.query_params
        info = CallInfo(
            call_id=f"ws-{uuid.uuid4().hex[:12]}", transport=self.name,
            from_=query.get("from", ""), to=query.get("to", ""),
            params={k: v for k, v in query.items() if k not in ("from", "to", "token")},
        )
        if self.settings.token and query.get("token") != self.settings.token:
            await ws.close(code=1008, reason="wrong token")
            return
        host = self.host
        refused = "not started" if host is None else host.admit(info)
        if host is None or refused is not None:
            await ws.close(code=1013, reason=str(refused)[:100])  # 1013: try again later
            return
        await ws.accept()
        call = WsCall(info, ws)
        self.calls.add(call)
        conversation = asyncio.create_task(host.run_call(call))
        try:
            await self._carry(ws, call, conversation)
        finally:
            self.calls.discard(call)
            await call.close()
            if call.events is not None and not conversation.done():
                call.events.hangup("caller hung up")
            with contextlib.suppress(ProviderError):  # refused after all: the socket is closed
                await conversation

    @staticmethod
    async def _carry(ws: WebSocket, call: WsCall, conversation: asyncio.Task[str]) -> None:
        while not conversation.done():
            try:
                message = await ws.receive()
            except RuntimeError:  # closed by the bot's hangup
                return
            if message["type"] == "websocket.disconnect":
                return
            if call.events is None:  # not attached yet: the greeting is still being set up
                continue
            if message.get("bytes"):
                call.events.audio(message["bytes"])
            elif message.get("text"):
                with contextlib.suppress(JsonError):
                    digit = loads_object(message["text"]).get("dtmf")
                    if isinstance(digit, str) and len(digit) == 1:
                        call.events.dtmf(digit)


@hookimpl
def register_transports(register):
    register(WsPhone)

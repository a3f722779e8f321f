"""A stand-in for the existing Piper WebSocket service, replaying both of its dialects.

It speaks protocols.md §5 exactly; the audio is real speech (espeak-ng) at the requested
rate, sent in odd-sized chunks, optionally paced like a service that streams in real time.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from vc.testing.calls import speech

Dialect = Literal["status", "type", "bare"]


class DialectServer:
    def __init__(self, dialect: Dialect, *, voices: tuple[str, ...] = ("tr_TR-dfki-medium",),
                 chunk: int = 4095, pace: float = 0.0, greet: bool = True) -> None:
        self.dialect = dialect
        self.voices = voices
        self.chunk = chunk
        self.pace = pace  # seconds of sleep per chunk
        self.greet = greet  # the "type" dialect may say {"type": "connected"} on connect
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.aborted = 0  # answers cut short because the client went away
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> DialectServer:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/tts"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _msg(self, kind: str, text: str = "") -> str | None:
        table = {
            "status": {"start": {"status": "started"}, "end": {"status": "completed"},
                       "error": {"error": text}},
            "type": {"start": {"type": "audio_start"}, "end": {"type": "audio_end"},
                     "error": {"type": "error", "message": text}},
            "bare": {"start": None, "end": {"type": "end"}, "error": {"error": text}},
        }[self.dialect][kind]
        return None if table is None else json.dumps(table)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            if self.dialect == "type" and self.greet:
                await ws.send(json.dumps({"type": "connected"}))
            async for raw in ws:
                req = json.loads(raw)
                self.requests.append(req)
                if req.get("voice") not in self.voices:
                    await ws.send(self._msg("error", f"voice {req.get('voice')} not found"))
                    continue
                start = self._msg("start")
                if start:
                    await ws.send(start)
                pcm = await asyncio.to_thread(speech, req["text"], int(req["sample_rate"]))
                for i in range(0, len(pcm), self.chunk):
                    await ws.send(pcm[i : i + self.chunk])
                    if self.pace:
                        await asyncio.sleep(self.pace)
                await ws.send(self._msg("end"))
        except ConnectionClosed:
            self.aborted += 1

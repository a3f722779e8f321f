"""A Vosk server for tests: the upstream vosk-server WebSocket protocol, backed by the real
``vosk`` library and a real model.

It behaves as upstream ``asr_server.py`` does: a text message containing ``config`` sets the
sample rate (no answer); every other message is decoded and answered with exactly one message;
the text ``{"eof" : 1}`` (exactly) returns the final result and closes; any other text is fed
to the recognizer as audio, which fails and drops the connection, as upstream does. Tests can
drop every connection and stop listening (a crash or a restart), then start again on the same
port, and read what each connection received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import vosk
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


@attrs.define
class Received:
    """What one client connection sent."""

    texts: list[str] = attrs.field(factory=list)
    audio_bytes: int = 0
    frames: int = 0
    responses: int = 0
    closed: bool = False
    #: Every message in order: text messages as str, binary ones as their length.
    order: list[str | int] = attrs.field(factory=list)


class VoskTestServer:
    def __init__(self, model: Any, sample_rate: float = 16000.0, knows_reset: bool = True) -> None:
        self.model = model
        #: Servers before 2022 had no ``{"reset" : 1}``: the text went to the recognizer.
        self.knows_reset = knows_reset
        self.sample_rate = sample_rate
        self.port = 0
        self.connections: list[Received] = []
        self._server: Server | None = None
        self._closing: list[asyncio.Future[None]] = []
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="vosk-test-server")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (on the previous port when restarting)."""
        self._server = await serve(self._handle, "127.0.0.1", self.port, compression=None,
                                   max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, crash: bool = False, wait: bool = True) -> None:
        """Stop listening and end every connection: cleanly, or by dropping TCP (``crash``).

        ``wait=False`` returns once the port is free, while closing handshakes go on (a
        restarted server does not wait for its predecessor's connections either)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=not crash)
        if crash:
            for ws in list(server.connections):
                ws.transport.abort()
        if wait:
            await server.wait_closed()
        else:
            self._closing.append(asyncio.ensure_future(self._exit_soon(server)))

    async def _exit_soon(self, server: Server) -> None:
        """Like a process that exits: half a second for closing handshakes, then gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), 0.5)
        for ws in list(server.connections):
            ws.transport.abort()
        await server.wait_closed()

    def close(self) -> None:
        for f in self._closing:
            f.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _process(self, rec: Any, message: str | bytes) -> tuple[str, bool]:
        # exactly upstream's process_chunk
        if message == '{"eof" : 1}':
            return rec.FinalResult(), True
        if message == '{"reset" : 1}' and self.knows_reset:
            return rec.FinalResult(), False
        if rec.AcceptWaveform(message):
            return rec.Result(), False
        return rec.PartialResult(), False

    async def _handle(self, ws: ServerConnection) -> None:
        log = Received()
        self.connections.append(log)
        loop = asyncio.get_running_loop()
        rec = None
        rate = self.sample_rate
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    log.texts.append(message)
                    log.order.append(message)
                else:
                    log.frames += 1
                    log.audio_bytes += len(message)
                    log.order.append(len(message))
                if isinstance(message, str) and "config" in message:
                    config = json.loads(message)["config"]
                    if "sample_rate" in config:
                        rate = float(config["sample_rate"])
                    continue
                if rec is None:
                    rec = vosk.KaldiRecognizer(self.model, rate)
                    rec.SetWords(True)
                response, stop = await loop.run_in_executor(self._pool, self._process, rec, message)
                await ws.send(response)
                log.responses += 1
                if stop:
                    break
        except ConnectionClosed:
            pass
        finally:
            log.closed = True
            with contextlib.suppress(Exception):
                await ws.close()

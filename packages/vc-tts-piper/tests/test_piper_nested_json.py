"""Issue 12: deeply nested JSON (``"[" * 1000``) on the Piper WebSocket protocol, both ends.

``json.loads`` raises RecursionError for it, past the handlers' ``except ValueError``: the
shipped server's connection handler died, and a client reading such a control message raised
an unexpected exception mid-sentence. Now the server answers a ``bad request`` error and keeps
the connection; the client ignores the message like any other it does not understand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from piper_helpers import profile, provider_context
from vc_tts_piper import protocol
from vc_tts_piper.server import PiperWebSocketServer
from vc_tts_piper.ws_client import PiperWebSocketProvider, PiperWebSocketSettings
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

NESTED = "[" * 1000
PCM = bytes(range(256)) * 40


def test_classify_ignores_nested_json() -> None:
    assert protocol.classify(NESTED) == ("other", NESTED)
    assert protocol.classify('{"type": ' + NESTED)[0] == "other"


async def test_shipped_server_answers_nested_json_with_an_error() -> None:
    server = PiperWebSocketServer.load([], [])
    port = await server.start("127.0.0.1", 0)
    try:
        async with connect(f"ws://127.0.0.1:{port}/tts") as ws:
            for bad in (NESTED, NESTED.encode(), '{"text": ' + NESTED):
                await ws.send(bad)
                kind, detail = protocol.classify(await asyncio.wait_for(ws.recv(), 30))
                assert kind == "error" and "bad request" in detail and "nested" in detail
            # the connection still serves
            await ws.send(protocol.request("Hi.", "en_US-joe-medium", 16000))
            got: list[Any] = []
            while not (got and isinstance(got[-1], str) and protocol.classify(got[-1])[0] == "end"):
                got.append(await asyncio.wait_for(ws.recv(), 60))
            assert protocol.classify(got[0])[0] == "start"
            assert sum(len(m) for m in got if isinstance(m, bytes)) > 1000
    finally:
        await server.stop()


class NestingPiper:
    """A Piper service that sends nested JSON around every answer's real messages."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> NestingPiper:
        self.server = await serve(self.handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/tts"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, ws: ServerConnection) -> None:
        try:
            async for _ in ws:
                await ws.send(NESTED)
                await ws.send(json.dumps(protocol.STARTED))
                await ws.send(NESTED)
                await ws.send(PCM)
                await ws.send('{"status": ' + NESTED)
                await ws.send(json.dumps(protocol.COMPLETED))
        except ConnectionClosed:
            pass


@pytest.fixture
async def nesting() -> AsyncIterator[NestingPiper]:
    async with NestingPiper() as server:
        yield server


async def test_client_ignores_nested_json_and_keeps_the_audio(nesting: NestingPiper) -> None:
    p = PiperWebSocketProvider(
        PiperWebSocketSettings(url=nesting.url, voice="en_US-joe-medium"), provider_context()
    )
    await p.start()
    try:
        for _ in range(2):  # the connection survives for the next sentence too
            clip = await p.synthesize("Hello.", profile())
            assert clip.pcm == PCM
    finally:
        await p.stop()

"""Issue 12: deeply nested JSON (``"[" * 1000``) is a protocol error on both ends.

``json.loads`` raises RecursionError for it, which the handlers' ``except ValueError`` let
through: the server's connection handler died, the client's reply loop raised an unexpected
exception. Now the server answers ``{"error": ..}`` and keeps the connection; the client
apologises for the turn, and the next turn is answered.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from vc_llm_llama_ws import protocol
from vc_llm_llama_ws.client import LlamaWSProvider, LlamaWSSettings
from vc_llm_llama_ws.server import LlamaWSServer
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from vc.llm import DEFAULT_APOLOGY
from vc.testing.services import call_context, drive, provider_context, replies, turn, user

NESTED = "[" * 1000


@pytest.mark.parametrize("raw", [NESTED, '{"messages": ' + NESTED, NESTED.encode()])
def test_nested_json_is_a_protocol_error(raw: str | bytes) -> None:
    with pytest.raises(protocol.ProtocolError, match="not JSON"):
        protocol.parse_request(raw)
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_reply(raw)


def test_nested_tool_call_from_the_model_is_ignored() -> None:
    from vc_llm_llama_ws.generation import parse_tool_call

    assert parse_tool_call('{"name": "end_call", "arguments": ' + NESTED + "}") is None
    call = parse_tool_call('{"name": "end_call", "arguments": "' + NESTED + '"}')
    assert call is not None and call.name == "end_call" and call.arguments == {}


async def test_server_answers_nested_json_with_an_error_and_keeps_the_connection(
    llama_server: tuple[LlamaWSServer, str],
) -> None:
    _, url = llama_server
    async with connect(url) as ws:
        await ws.send(NESTED)
        assert "nested too deeply" in json.loads(await ws.recv())["error"]
        await ws.send(
            json.dumps(
                {"messages": [{"role": "user", "content": "Hi"}], "stream": False, "max_tokens": 4}
            )
        )
        assert "chunk" in json.loads(await ws.recv())
        assert json.loads(await ws.recv()) == {"done": True}


class NestingServer:
    """Answers the first request with ``"[" * 1000``, later ones properly."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: Server | None = None

    async def __aenter__(self) -> NestingServer:
        self.server = await serve(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"

    async def handle(self, ws: ServerConnection) -> None:
        try:
            async for _ in ws:
                self.requests += 1
                if self.requests == 1:
                    await ws.send(NESTED)
                    continue
                await ws.send(protocol.chunk(f"answer {self.requests}"))
                await ws.send(protocol.done())
        except ConnectionClosed:
            pass


@pytest.fixture
async def nesting() -> AsyncIterator[NestingServer]:
    async with NestingServer() as server:
        yield server


async def test_client_apologises_for_a_nested_reply_and_answers_the_next_turn(
    nesting: NestingServer, caplog: pytest.LogCaptureFixture
) -> None:
    provider = LlamaWSProvider(LlamaWSSettings(url=nesting.url), provider_context())
    await provider.start()
    try:
        service = provider.create_service(call_context())
        first = replies(await drive(service, turn(user("hello"))))
        second = replies(await drive(service, turn(user("hello again"))))
    finally:
        await provider.stop()
    assert first == [DEFAULT_APOLOGY]
    assert second == ["answer 2"]
    # handled as a protocol error, not as an unexpected exception escaping the client
    assert "RecursionError" not in caplog.text

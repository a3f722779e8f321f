"""Issue 12: deeply nested JSON (``"[" * 1000``) from a vosk server is ignored by the client.

``json.loads`` raises RecursionError for it, past ``except ValueError``: the client's receive
task died and the call heard nothing more. Now such a message is ignored like any other that is
neither a partial nor a result, and the transcripts still arrive.
"""

from __future__ import annotations

from typing import Any

from vc_stt_vosk.protocol import parse_message
from vosk_helpers import HELLO, Harness, call_context, korean
from vosk_test_server import VoskTestServer
from websockets.asyncio.server import ServerConnection

NESTED = "[" * 1000
SILENCE = 16000 * 2 * 5 // 2


def test_nested_json_is_not_a_message() -> None:
    assert parse_message(NESTED) is None
    assert parse_message(NESTED.encode()) is None
    assert parse_message('{"partial": ' + NESTED) is None


class NestingVoskServer(VoskTestServer):
    """Sends ``"[" * 1000`` before every real answer."""

    async def _handle(self, ws: ServerConnection) -> None:
        send = ws.send

        async def nesting_send(message: Any, *args: Any, **kwargs: Any) -> None:
            await send(NESTED)
            await send(message, *args, **kwargs)

        ws.send = nesting_send  # type: ignore[method-assign]
        await super()._handle(ws)


async def test_client_ignores_nested_json_and_still_transcribes(started, ko_model: Any) -> None:
    server = NestingVoskServer(ko_model)
    await server.start()
    try:
        p = await started("ws", url=server.url, pool_size=1)
        async with Harness(p.create_service(call_context())) as h:
            await h.utterance(korean(HELLO[0]), pace=0.005)
            await h.audio(bytes(SILENCE), pace=0.005)
            await h.transcript(1, within=30)
            await h.end()
    finally:
        await server.stop(wait=False)
        server.close()
    assert HELLO[1] in h.transcripts[0] and not h.errors
    assert server.connections[0].responses >= 2

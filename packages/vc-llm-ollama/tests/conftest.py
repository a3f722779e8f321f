"""The Ollama API stand-in (real SmolLM2 behind it) on 127.0.0.1:<free port>, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from ollama_server import FakeOllama, llama, release_llama


@pytest.fixture(scope="session", autouse=True)
def _model_loaded_once() -> Iterator[None]:
    llama()
    yield
    release_llama()


@pytest.fixture
async def fake_ollama() -> AsyncIterator[FakeOllama]:
    server = await FakeOllama().start()
    yield server
    await server.stop()

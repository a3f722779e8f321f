from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fw_helpers import Observed, make_provider
from vc_stt_faster_whisper.provider import FasterWhisperSTT

from vc.profiles import Profile


@pytest.fixture(scope="session")
def tiny() -> Iterator[FasterWhisperSTT]:
    """tiny.en, started once for the session (its threads serve any event loop)."""
    observed = Observed()
    provider = make_provider(observed=observed)
    provider.observed = observed  # type: ignore[attr-defined]
    asyncio.run(provider.start())
    yield provider
    asyncio.run(provider.stop())


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """``await started(**settings)`` -> a started provider, stopped after the test."""
    providers: list[FasterWhisperSTT] = []

    async def start(profiles: list[Profile] | None = None, **settings: Any) -> FasterWhisperSTT:
        p = make_provider(profiles, **settings)
        await p.start()
        providers.append(p)
        return p

    yield start
    for p in providers:
        await p.stop()

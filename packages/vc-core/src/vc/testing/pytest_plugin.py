"""pytest plugin shipped with vc-core (entry point ``pytest11: vc``): fixtures for plugin tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from vc.plugins import Registry


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: model-heavy test (run by `nox -s slow`)")
    config.addinivalue_line("markers", "e2e: a real call through a real transport and AI stack")


@pytest.fixture
def vc_fake_registry() -> Registry:
    """Installed plugins plus vc's fake providers (named ``fake``)."""
    from vc.testing import fake_registry

    return fake_registry()


@pytest.fixture
async def vc_engine_factory() -> AsyncIterator[Callable[..., object]]:
    """``await factory(ini_text, registry=None)`` -> a started vc Engine, stopped after the test."""
    from vc.engine import Engine
    from vc.testing import config_from_ini, fake_registry

    engines: list[Engine] = []

    async def factory(ini: str, registry: Registry | None = None) -> Engine:
        reg = registry or fake_registry()
        engine = Engine(config_from_ini(ini, reg), reg)
        await engine.start()
        await engine.apologies_rendered()  # a test of a failed turn expects the apology
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.stop()


@pytest.fixture
def vc_speech() -> Callable[..., bytes]:
    """``vc_speech(text, rate=8000, voice="en-us")`` -> PCM16 speech from espeak-ng."""
    from vc.testing.calls import speech

    return speech

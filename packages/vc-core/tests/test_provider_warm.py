"""Provider.warm(): called once per provider, in the background, after vc is ready; a warm-up
that fails is logged and costs nothing else; one still running when vc stops is cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from vc.engine import Engine
from vc.testing import FAKE_STACK, until
from vc.testing.fakes import FakeLLM, FakeSTT, FakeTTS


async def test_each_provider_is_warmed_once_after_vc_is_ready(
    make_engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, bool]] = []
    engines: list[Engine] = []

    def recording(kind: str):
        async def warm(self) -> None:
            seen.append((kind, engines[0].ready() if engines else False))
        return warm

    for cls, kind in ((FakeSTT, "stt"), (FakeLLM, "llm"), (FakeTTS, "tts")):
        monkeypatch.setattr(cls, "warm", recording(kind))
    original_start = Engine.start

    async def start(self: Engine) -> None:
        engines.append(self)
        await original_start(self)

    monkeypatch.setattr(Engine, "start", start)
    await make_engine(FAKE_STACK)
    await until(lambda: len(seen) == 3)
    await asyncio.sleep(0.05)  # and no second time
    assert sorted(seen) == [("llm", True), ("stt", True), ("tts", True)]


async def test_a_failing_warm_up_is_logged_and_vc_stays_ready(
    make_engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    warmed: list[str] = []

    async def broken(self) -> None:
        raise RuntimeError("no buffers today")

    async def fine(self) -> None:
        warmed.append("tts")

    monkeypatch.setattr(FakeSTT, "warm", broken)
    monkeypatch.setattr(FakeTTS, "warm", fine)
    with caplog.at_level(logging.WARNING, logger="vc.engine"):
        engine = await make_engine(FAKE_STACK)
        await until(lambda: warmed == ["tts"] and "failed to warm up" in caplog.text)
    assert "stt provider fake failed to warm up: RuntimeError: no buffers today" in caplog.text
    assert engine.ready() and engine.not_ready() == {}


async def test_a_warm_up_still_running_is_cancelled_when_vc_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vc.testing import config_from_ini, fake_registry

    began, cancelled = asyncio.Event(), asyncio.Event()

    async def endless(self) -> None:
        began.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(FakeLLM, "warm", endless)
    reg = fake_registry()
    engine = Engine(config_from_ini(FAKE_STACK, reg), reg)
    await engine.start()
    await asyncio.wait_for(began.wait(), 5)
    await engine.stop()
    await asyncio.wait_for(cancelled.wait(), 5)

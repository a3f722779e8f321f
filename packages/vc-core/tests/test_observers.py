"""Observers: the on/off rule, start/stop isolated by the engine, the event catalogue, the contract."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
import pytest

from vc import events
from vc.call import CallInfo
from vc.config import observer_enabled
from vc.engine import Engine
from vc.hookspecs import hookimpl
from vc.providers import Observer
from vc.settings import setting
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.contracts import SAMPLE_EVENTS, ObserverContract


@attrs.define
class LevelSettings:
    level: int = setting(1, help="a level")


class Quiet(Observer):
    name = "quiet"
    Settings = LevelSettings
    started = 0
    stopped = 0

    async def start(self) -> None:
        type(self).started += 1

    async def stop(self) -> None:
        type(self).stopped += 1


class FailsToStart(Observer):
    name = "fails-to-start"

    async def start(self) -> None:
        raise OSError("cannot open the sink")


class FailsToStop(Observer):
    name = "fails-to-stop"

    async def stop(self) -> None:
        raise OSError("cannot flush")


class Plugin:
    @hookimpl
    def register_observers(self, register: Any) -> None:
        for cls in (Quiet, FailsToStart, FailsToStop):
            register(cls)


def registry():
    return fake_registry(env={"VC_LOAD_PLUGINS": ""}, extra=[("observers", Plugin())])


def enabled(ini: str, env: dict[str, str] | None = None) -> set[str]:
    return set(config_from_ini(FAKE_STACK + ini, registry(), env).observers)


def test_every_installed_observer_runs_by_default() -> None:
    assert enabled("") == {"event-log", "quiet", "fails-to-start", "fails-to-stop"}


def test_the_list_names_the_observers_that_run() -> None:
    assert enabled("[vc]\nobservers = quiet\n") == {"quiet"}
    assert enabled("[vc]\nobservers =\n") == set()


def test_enabled_in_the_observers_section_beats_the_list() -> None:
    assert enabled("[observer.quiet]\nenabled = false\n") == {
        "event-log", "fails-to-start", "fails-to-stop"}
    assert enabled("[vc]\nobservers = event-log\n[observer.quiet]\nenabled = yes\nlevel = 3\n") == {
        "event-log", "quiet"}
    assert enabled("", {"VC_OBSERVER_EVENT_LOG__ENABLED": "off"}) == {
        "quiet", "fails-to-start", "fails-to-stop"}
    cfg = config_from_ini(FAKE_STACK + "[observer.quiet]\nenabled = true\nlevel = 3\n", registry())
    assert cfg.observers["quiet"] == LevelSettings(level=3)  # 'enabled' is not the observer's


def test_a_bad_enabled_value_names_section_and_key() -> None:
    with pytest.raises(AssertionError, match=r"\[observer.quiet\] enabled = 'maybe'.*boolean"):
        enabled("[observer.quiet]\nenabled = maybe\n")
    with pytest.raises(ValueError):
        observer_enabled("x", ["*"], {"enabled": ("sometimes", "file")})


async def test_the_engine_starts_and_stops_observers_and_isolates_failures(caplog) -> None:
    Quiet.started = Quiet.stopped = 0
    reg = registry()
    engine = Engine(config_from_ini(FAKE_STACK, reg), reg)
    with caplog.at_level(logging.WARNING, logger="vc.engine"):
        await engine.start()
        names = [type(o).name for o in engine.observers]
        assert "fails-to-start" not in names and {"quiet", "fails-to-stop", "event-log"} <= set(names)
        assert Quiet.started == 1
        await engine.stop()
        await engine.stop()  # a second stop stops nothing twice
    assert Quiet.stopped == 1
    assert "observer fails-to-start failed to start, left out: OSError: cannot open the sink" in caplog.text
    assert "observer fails-to-stop failed to stop cleanly: OSError: cannot flush" in caplog.text
    assert engine.metrics.observer_errors.labels("fails-to-start")._value.get() == 1
    assert engine.metrics.observer_errors.labels("fails-to-stop")._value.get() == 1


async def test_a_hanging_start_is_given_up_on(monkeypatch) -> None:
    class Hangs(Observer):
        name = "hangs"

        async def start(self) -> None:
            await asyncio.sleep(3600)

    class P:
        @hookimpl
        def register_observers(self, register: Any) -> None:
            register(Hangs)

    monkeypatch.setattr("vc.engine.OBSERVER_TIMEOUT", 0.1)
    reg = fake_registry(env={"VC_LOAD_PLUGINS": ""}, extra=[("hangs", P())])
    engine = Engine(config_from_ini(FAKE_STACK, reg), reg)
    await engine.start()
    try:
        assert [type(o).name for o in engine.observers] == ["event-log"]
    finally:
        await engine.stop()


def test_a_slow_observer_method_is_reported(caplog) -> None:
    class Slow(Observer):
        name = "slow"

        def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
            time.sleep(0.15)

    reg = registry()
    engine = Engine(config_from_ini(FAKE_STACK, reg), reg)
    engine.observers = [Slow()]
    with caplog.at_level(logging.WARNING, logger="vc.engine"):
        engine.event(CallInfo(call_id="c", transport="t"), events.DTMF, {"digit": "1"})
    assert "observer slow.event took" in caplog.text


def test_the_catalogue_documents_every_event() -> None:
    assert set(events.CATALOGUE) == {
        events.TRANSCRIPT, events.TURN, events.BARGE_IN, events.BOT_PAUSED, events.BOT_RESUMED,
        events.MARK_PLAYED, events.DTMF, events.TOOL_CALL, events.MEDIA_QUALITY,
    }
    for name, keys in events.CATALOGUE.items():
        assert set(keys) <= set(SAMPLE_EVENTS[name])
    from vc.call import MediaQuality

    assert set(MediaQuality().as_event()) == set(events.CATALOGUE[events.MEDIA_QUALITY])
    assert set(events.OPTIONAL_KEYS) <= set(events.CATALOGUE)


def test_core_emits_only_catalogue_names() -> None:
    """Every name core passes to Engine.event is a vc.events constant, never a literal."""
    import re
    from pathlib import Path

    import vc

    src = Path(vc.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        calls = re.findall(r"(?:engine\.event\([^,]+,|self\._event\()\s*([^,]+),", text)
        assert not [c for c in calls if c.lstrip().startswith(("'", '"'))], f"{path.name}: {calls}"
        if path.name in ("session.py", "monitor.py"):
            assert any(c.startswith("events.") for c in calls), path.name


# -- the contract catches what it must ---------------------------------------------------------


class RaisesOnEvents(Observer):
    name = "raises"

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        if name == events.BOT_PAUSED:
            raise KeyError("paused")


class BlocksOnEvents(Observer):
    name = "blocks"

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        time.sleep(0.08)  # a synchronous HTTP post, say


class AsyncEvents(Observer):
    name = "async-events"

    async def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:  # type: ignore[override]
        await asyncio.sleep(0)


class _Contract(ObserverContract):
    check_entry_point = False


async def test_the_contract_fails_an_observer_that_raises() -> None:
    suite = type("S", (_Contract,), {"observer": RaisesOnEvents})()
    with pytest.raises(AssertionError, match="the observer raised"):
        await suite.test_hears_every_event_of_a_real_call_without_slowing_it()


async def test_the_contract_fails_an_observer_that_blocks_the_call() -> None:
    suite = type("S", (_Contract,), {"observer": BlocksOnEvents})()
    with pytest.raises(AssertionError, match="held up the call"):
        await suite.test_hears_every_event_of_a_real_call_without_slowing_it()


def test_the_contract_fails_coroutine_event_methods() -> None:
    suite = type("S", (_Contract,), {"observer": AsyncEvents})()
    with pytest.raises(AssertionError, match="must be a plain method"):
        suite.test_metadata()

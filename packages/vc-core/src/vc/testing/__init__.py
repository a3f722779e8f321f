"""Test helpers for vc and its plugins: contract suites, fakes, and real calls in tests.

* :mod:`vc.testing.contracts` - subclass ``STTContract``/``LLMContract``/``TTSContract``/
  ``TransportContract``/``ObserverContract`` in your plugin's tests to prove it honours vc's
  contract.
* :mod:`vc.testing.calls` - :class:`LoopbackConnection` and :func:`speech` to drive a call.
* :mod:`vc.testing.fakes` - instant providers (``VC_PLUGIN_MODULES=vc.testing.fakes`` or ``fake_registry()``).
* :func:`until` - wait for something a call does (the one polling helper of vc's tests).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from vc.config import Config, load
from vc.plugins import Registry, load_plugins

T = TypeVar("T")


async def until(check: Callable[[], T], within: float = 20.0, what: str = "condition",
                *, interval: float = 0.01) -> T:
    """Poll ``check()`` until it returns something truthy, and return that; AssertionError
    ``no <what> within <within>s`` if it has not by then. For what a test waits on in a call
    (audio heard, an event seen, a port released), where there is nothing to await."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {what} within {within:g}s")
        await asyncio.sleep(interval)


def fake_registry(env: Mapping[str, str] | None = None, **kwargs) -> Registry:
    """Plugins as installed, plus the fake providers."""
    env = dict(os.environ if env is None else env)
    env["VC_PLUGIN_MODULES"] = "vc.testing.fakes"
    return load_plugins(env=env, **kwargs)


def config_from_ini(text: str, registry: Registry, env: Mapping[str, str] | None = None) -> Config:
    """Resolve an INI text; raises AssertionError listing every error."""
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False, encoding="utf-8") as f:
        f.write(text)
    try:
        cfg, errors = load(f.name, registry, env or {})
    finally:
        os.unlink(f.name)
    assert not errors, "\n".join(str(e) for e in errors)
    assert cfg is not None
    return cfg


FAKE_STACK = """
[vc]
transports =
[stt]
provider = fake
[llm]
provider = fake
[tts]
provider = fake
[turn]
# The fake STT hears one script line per utterance it is given, so the turn ends at the
# first silence (the adaptive turn would hand it each piece of a sentence separately).
end = silence
"""

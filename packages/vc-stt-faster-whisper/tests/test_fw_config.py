"""`vc config check` and `vc serve` judge a profile's language by the Whisper model configured:
tiny.en is English-only, base is multilingual (issue 13)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from vc import config as vcconfig
from vc.engine import Engine, EngineStartError
from vc.testing import fake_registry

STACK = """
[vc]
transports =
[stt]
provider = faster-whisper
model = {model}
[llm]
provider = fake
[tts]
provider = fake
[profile.default]
language = {language}
"""


def check(model: str, language: str) -> list[str]:
    """What `vc config check` reports for this stack (it calls vc.config.load)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vc.ini"
        path.write_text(STACK.format(model=model, language=language), encoding="utf-8")
        cfg, errors = vcconfig.load(str(path), fake_registry(), {})
    assert (cfg is None) == bool(errors)
    return [str(e) for e in errors]


def test_config_check_refuses_turkish_with_the_english_only_tiny_model() -> None:
    errors = check("tiny.en", "tr")
    assert len(errors) == 1, errors
    assert "[profile.default] language = 'tr'" in errors[0]
    assert "'faster-whisper' does not support this language (supports: en)" in errors[0]


def test_config_check_accepts_turkish_with_the_multilingual_base_model() -> None:
    assert check("base", "tr") == []
    assert check("tiny.en", "en-US") == []


async def test_serve_refuses_it_with_the_same_verdict_before_loading_a_model() -> None:
    reg = fake_registry()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vc.ini"
        path.write_text(STACK.format(model="tiny.en", language="en"), encoding="utf-8")
        cfg, errors = vcconfig.load(str(path), reg, {})
    assert cfg is not None and not errors
    # A configuration the check never saw (built in code, or changed after the check): the
    # engine asks the same instance the same question before it starts anything.
    cfg.profiles[0].settings.language = "tr"
    engine = Engine(cfg, reg)
    with pytest.raises(EngineStartError) as raised:
        await engine.start()
    assert str(raised.value) == check("tiny.en", "tr")[0]
    assert engine.providers.get("stt", {}) == {}  # refused before the model was loaded

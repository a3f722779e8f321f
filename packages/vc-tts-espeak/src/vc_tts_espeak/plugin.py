"""vc plugin entry point for vc-tts-espeak (hook implementations)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

from vc.doctor import Check
from vc.hookspecs import hookimpl
from vc_tts_espeak.engine import INSTALL_HINT
from vc_tts_espeak.provider import EspeakTTS


@hookimpl
def register_tts(register):
    register(EspeakTTS)


def check_espeak(config: Any) -> Iterator[Check]:
    """``vc doctor``: the espeak-ng program (a failure only when the configuration uses it)."""
    uses_me = config is not None and EspeakTTS.name in config.providers.get("tts", {})
    program = "espeak-ng"
    if uses_me:
        settings = getattr(config.providers["tts"][EspeakTTS.name], "settings", None)
        program = getattr(settings, "binary", "") or program
    found = shutil.which(program)
    if found is None:
        make = Check.fail if uses_me else Check.warn
        yield make("espeak-ng", f"the espeak-ng program is not installed ({program!r})",
                   INSTALL_HINT)
    else:
        yield Check.ok("espeak-ng", found)


@hookimpl
def register_checks(register):
    register(check_espeak)

"""``vc models`` entries for Piper voices: what is installed, and how to get the rest."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from vc.providers import ModelCatalog, ModelInfo, ProviderError
from vc_tts_piper.voice_parts import SplitError, prepare_parts
from vc_tts_piper.voices import (
    KNOWN_VOICES,
    LoadedVoice,
    VoiceFile,
    installed_voices,
    resolve,
    verify_voice,
)

log = logging.getLogger("vc.tts.piper")


def _detail(voice: VoiceFile) -> str:
    try:
        config = json.loads(voice.config.read_text(encoding="utf-8"))
        rate = config["audio"]["sample_rate"]
        lang = config.get("language", {}).get("code") or config["espeak"]["voice"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{voice.source}; config unreadable"
    return f"{rate} Hz, {lang}, {voice.source}"


def _keep_gain(voice: VoiceFile) -> None:
    """Load the voice once, so that its gain is measured now and kept for the first start
    (:mod:`vc_tts_piper.voice_cache`); without piper-tts (a WebSocket-only install) there is
    nothing to keep."""
    try:
        LoadedVoice(voice, threads=1)
    except ProviderError as e:
        log.warning("Piper voice %s: its gain is measured at the first start instead: %s",
                    voice.name, e)


class PiperVoiceCatalog(ModelCatalog):
    """Installed Piper voices (voice packages) and the voices we know how to get."""

    name = "piper"

    def __init__(self, dirs: list[Path] | None = None) -> None:
        self.dirs = dirs or []

    def list(self) -> list[ModelInfo]:
        voices = installed_voices(self.dirs)
        rows = [ModelInfo(name=v.name, kind="tts", installed=True, location=str(v.model),
                          detail=_detail(v)) for v in voices.values()]
        rows += [ModelInfo(name=name, kind="tts", installed=False, install_hint=hint)
                 for name, hint in KNOWN_VOICES.items() if name not in voices]
        return sorted(rows, key=lambda m: (not m.installed, m.name))

    def _voice(self, model: str) -> VoiceFile:
        voices = installed_voices(self.dirs)
        name = model.removeprefix(f"{self.name}:")
        if name not in voices:
            hint = KNOWN_VOICES.get(name, "put NAME.onnx and NAME.onnx.json in a voices_dir")
            raise ProviderError(f"Piper voice {name!r} is not installed: {hint}")
        return voices[name]

    def prepare(self, model: str, progress: Callable[[int, int], None]) -> Path | str:
        """Check an installed voice (pinned files re-hashed; any voice: size and config) and
        cut it into the parts that let a piece's first audio come first
        (:mod:`vc_tts_piper.voice_parts`; a voice that cannot be cut is still usable)."""
        voice = self._voice(model)
        progress(0, 1)
        verify_voice(voice, force=True, progress=progress)
        if voice.model.stat().st_size < 1_000_000:
            raise ProviderError(f"{voice.model} is too small to be a Piper voice (damaged?)")
        try:
            json.loads(voice.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ProviderError(f"Piper voice config {voice.config} is unreadable: {e}") from e
        try:
            prepare_parts(voice.model)
        except (SplitError, OSError) as e:  # (an unwritable cache directory, say)
            log.warning("Piper voice %s will be decoded whole: %s", voice.name, e)
        _keep_gain(voice)
        progress(1, 1)
        return voice.model

    def verify(self, model: str) -> None:
        """Raise ProviderError unless the voice (a name or an ``.onnx`` path) is there and, when
        vc pins its files (a voice package it knows), they are the pinned ones (cheap when the
        verification cache vouches for them)."""
        resolve(model.removeprefix(f"{self.name}:"), self.dirs)

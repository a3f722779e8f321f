"""The embedded LLM's supervised child process, with the real SmolLM2 model in a real child."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from vc_llm_llama_ws.embedded import LlamaCppProvider, LlamaCppSettings
from vc_llm_llama_ws.generation import Generation, Sampling
from vc_llm_llama_ws.models import SMOLLM2, resolve_model
from vc_llm_llama_ws.supervisor import ModelSpec, WorkerDied, WorkerProcess, describe_exit

from vc.providers import ProviderError
from vc.testing.services import Observed, provider_context

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed ([embedded] extra)")

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a long story about the sea."},
]


def spec(path: Path | str | None = None) -> ModelSpec:
    return ModelSpec(SMOLLM2, str(path or resolve_model(SMOLLM2)), 2048, 1, 0, "")


async def reply(worker: WorkerProcess, max_tokens: int = 8, stats: Generation | None = None) -> str:
    pieces = worker.stream(SMOLLM2, QUESTION, Sampling(max_tokens=max_tokens, seed=1), (),
                           stats or Generation(), 30.0)
    return "".join([p async for p in pieces])


@pytest.fixture
async def worker():
    deaths: list[str] = []
    w = WorkerProcess([spec()], {SMOLLM2: ["You are a helpful assistant."]},
                      on_death=deaths.append)
    w.deaths = deaths  # type: ignore[attr-defined]
    await w.start()
    yield w
    await w.close()


async def test_generation_in_the_child_streams_and_reports_its_numbers(worker) -> None:
    stats = Generation()
    text = await reply(worker, 8, stats)
    assert text.strip()
    assert stats.completion_tokens == 8 and stats.prompt_tokens > 0
    assert stats.cached_tokens > 0, "the warmed system prompt should be in the KV cache"
    assert worker.pid != os.getpid()


async def test_a_crash_mid_reply_fails_that_reply_and_the_child_comes_back(worker) -> None:
    first_pid = worker.pid
    pieces = worker.stream(SMOLLM2, QUESTION, Sampling(max_tokens=400), (), Generation(), 30.0)
    got = [await pieces.__anext__()]
    os.kill(first_pid, signal.SIGSEGV)
    with pytest.raises(WorkerDied, match="SIGSEGV"):
        async for piece in pieces:
            got.append(piece)
    assert worker.deaths == ["SIGSEGV"] and worker.restarts == 1
    # asked while the child restarts: waits for it instead of failing
    assert (await reply(worker)).strip()
    assert worker.ready and worker.pid != first_pid


async def test_closing_a_reply_cancels_it_in_the_child(worker) -> None:
    stats = Generation()
    pieces = worker.stream(SMOLLM2, QUESTION, Sampling(max_tokens=400), (), stats, 30.0)
    await pieces.__anext__()
    await pieces.aclose()
    assert stats.cancelled and stats.completion_tokens == 1
    # the child stopped generating: the next reply is not queued behind 400 tokens
    after = Generation()
    assert (await reply(worker, 4, after)).strip()
    assert after.queued < 2.0, after


async def test_a_model_that_cannot_load_is_a_clear_provider_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    w = WorkerProcess([spec(bad)], {})
    with pytest.raises(ProviderError, match=r"could not start.*could not load"):
        await w.start()
    await w.close()


async def test_a_system_prompt_that_cannot_be_warmed_leaves_the_child_serving() -> None:
    """Prompts are warmed after the child says ready; one that fails (here: longer than the
    context) is logged in the child and the first request is still answered."""
    too_long = "Remember this. " * 1000  # ~3000 tokens, n_ctx is 2048
    w = WorkerProcess([spec()], {SMOLLM2: [too_long]})
    await w.start()
    try:
        assert w.ready
        assert (await reply(w)).strip()
        for _ in range(250):  # its stderr is read beside the replies
            if any("warming smollm2 failed" in line for line in w._stderr):
                break
            await asyncio.sleep(0.02)
        assert any("warming smollm2 failed" in line for line in w._stderr), w._stderr
    finally:
        await w.close()


async def test_close_ends_the_child(worker) -> None:
    proc = worker.proc
    await worker.close()
    assert proc.returncode == 0


def test_exit_descriptions() -> None:
    assert describe_exit(-11) == "SIGSEGV"
    assert describe_exit(-9) == "SIGKILL"
    assert describe_exit(3) == "exit 3"
    assert describe_exit(None) == "running"


async def test_provider_is_not_ready_while_its_child_restarts_and_counts_the_death() -> None:
    observed = Observed()
    provider = LlamaCppProvider(LlamaCppSettings(), provider_context(observed=observed))
    await provider.start()
    try:
        assert provider.ready() and provider.worker is not None
        os.kill(provider.worker.pid, signal.SIGKILL)
        for _ in range(200):
            if not provider.ready():
                break
            await asyncio.sleep(0.01)
        assert not provider.ready()
        await provider.worker.wait_ready(60)
        assert provider.ready()
        assert ("provider_restarts", 1.0, {"provider": "llama-cpp", "reason": "SIGKILL"}) in (
            observed.values)
    finally:
        await provider.stop()
    assert provider.worker is None


async def test_thread_isolation_keeps_the_model_in_process() -> None:
    provider = LlamaCppProvider(LlamaCppSettings(isolation="thread"), provider_context())
    await provider.start()
    try:
        assert provider.worker is None and provider.ready()
    finally:
        await provider.stop()


def child_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
@pytest.mark.parametrize("wait", ["sleep", "spin"])
async def test_the_child_threads_sleep_when_idle_and_then_prompts_use_every_core(
    wait: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setattr("vc_llm_llama_ws.embedded.default_threads", lambda: 6)
    settings = LlamaCppSettings(thread_wait=wait, n_threads=1)  # type: ignore[arg-type]
    provider = LlamaCppProvider(settings, provider_context())
    await provider.start()
    try:
        assert provider.worker is not None and provider.worker.pid is not None
        env = child_environment(provider.worker.pid)
        (model,) = provider.worker.spec["models"]
        if wait == "sleep":
            assert env.get("OMP_WAIT_POLICY") == "passive"
            assert env.get("GOMP_SPINCOUNT") == "0"  # sleep at once unless spin_count says
            assert (model["n_threads"], model["n_threads_batch"]) == (1, 6)
        else:
            assert "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env
            assert (model["n_threads"], model["n_threads_batch"]) == (1, 1)
        assert "PATH" in env  # vc's own environment is passed on
    finally:
        await provider.stop()


def test_the_spin_before_the_threads_sleep_is_a_setting_and_zero_sleeps_at_once() -> None:
    from vc_llm_llama_ws.embedded import worker_env

    assert worker_env(LlamaCppSettings(spin_count=0)) == {
        "OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "0"}
    assert worker_env(LlamaCppSettings(spin_count=2500))["GOMP_SPINCOUNT"] == "2500"
    assert worker_env(LlamaCppSettings(thread_wait="spin", spin_count=2500)) == {}


def test_prompt_threads_set_by_hand_win_and_thread_isolation_keeps_n_threads() -> None:
    from vc_llm_llama_ws.embedded import prompt_threads

    assert prompt_threads(LlamaCppSettings(n_threads_batch=3)) == 3
    assert prompt_threads(LlamaCppSettings(isolation="thread", n_threads=1)) == 1

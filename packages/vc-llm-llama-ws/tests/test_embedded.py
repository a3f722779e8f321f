"""The embedded llama-cpp provider: contract, per-call settings, barge-in, a real call's hang-up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipecat.frames.frames import InterruptionFrame
from pipecat.tests.utils import SleepFrame
from vc_llm_llama_ws.embedded import LlamaCppProvider, LlamaCppSettings
from vc_llm_llama_ws.models import LlamaCppModels, smollm2_path

from vc.providers import ProviderError
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech
from vc.testing.contracts import LLMContract
from vc.testing.services import assistant, call_context, drive, profile, provider_context, replies, turn, user


class TestLlamaCppContract(LLMContract):
    provider = LlamaCppProvider

    def make_settings(self) -> LlamaCppSettings:
        return LlamaCppSettings(seed=1)


async def test_profile_overrides_and_model_per_profile() -> None:
    path = str(smollm2_path())
    default = profile()
    custom = profile(temperature=0.0, max_tokens=12, llm="llama-cpp", llm_model=path)
    provider = LlamaCppProvider(
        LlamaCppSettings(temperature=0.7), provider_context(default, custom)
    )
    await provider.start()
    try:
        assert set(provider.models) == {"smollm2", path}  # both loaded at start, not per call
        plain = provider.create_service(call_context(default))
        tuned = provider.create_service(call_context(custom))
        assert (plain.temperature, plain.max_tokens) == (0.7, 80)
        assert (tuned.temperature, tuned.max_tokens) == (0.0, 12)
        assert tuned._model is provider.models[path] and plain._model is provider.default
        frames = await drive(tuned, turn(user("Tell me a long story about a dragon.")))
        assert replies(frames)[0].strip()
        assert tuned.generations[0].completion_tokens <= 12
        # the system prompt was warmed at start: the first call found it in the KV cache
        assert tuned.generations[0].cached_tokens > 20
    finally:
        await provider.stop()


async def test_barge_in_stops_generation_and_next_turn_is_clean() -> None:
    provider = LlamaCppProvider(LlamaCppSettings(max_tokens=300, seed=4), provider_context())
    await provider.start()
    try:
        service = provider.create_service(call_context())
        frames = await drive(
            service,
            turn(user("Tell me a very long story about the sea.")),
            SleepFrame(0.3),
            InterruptionFrame(),
            turn(
                user("Tell me a very long story about the sea."),
                assistant("Once"),
                user("Stop. Hi."),
            ),
        )
    finally:
        await provider.stop()
    first, second = service.generations
    assert first.cancelled and first.completion_tokens < 300
    assert not second.cancelled and second.completion_tokens > 0
    assert [r for r in replies(frames) if r][-1].strip()


async def test_failure_is_apologised_and_next_turn_recovers() -> None:
    provider = LlamaCppProvider(
        LlamaCppSettings(n_ctx=256, apology="Sorry, say again?"), provider_context()
    )
    await provider.start()
    try:
        service = provider.create_service(call_context())
        too_long = user("word " * 400)  # does not fit the 256-token context
        frames = await drive(service, turn(too_long), turn(user("Hi")))
    finally:
        await provider.stop()
    first, second = replies(frames)
    assert first == "Sorry, say again?"
    assert second.strip() and second != first


async def test_missing_model_says_what_to_install() -> None:
    provider = LlamaCppProvider(
        LlamaCppSettings(model="/nonexistent/model.gguf"), provider_context()
    )
    with pytest.raises(ProviderError, match="pip install"):
        await provider.start()
    native = LlamaCppProvider(LlamaCppSettings(tool_calls="native"), provider_context())
    with pytest.raises(ProviderError, match="has no tools"):
        await native.start()
    await native.stop()


def test_catalog_lists_packaged_models() -> None:
    rows = {m.name: m for m in LlamaCppModels().list()}
    assert rows["smollm2"].installed and rows["smollm2"].location.endswith(".gguf")
    assert "qwen2.5-0.5b" in rows and rows["qwen2.5-0.5b"].install_hint


async def test_callers_goodbye_ends_a_real_call(vc_engine_factory) -> None:
    """VAD -> (scripted) STT -> llama-cpp -> TTS over a loopback call; end_call hangs up."""
    engine = await vc_engine_factory(
        "[vc]\ntransports =\n"
        "[stt]\nprovider = fake\nscript = Thank you that is all. Goodbye!\n[turn]\nend = silence\n"
        "[llm]\nprovider = llama-cpp\nseed = 1\n"
        "[tts]\nprovider = fake\nms_per_char = 10\n"
    )
    events: list[tuple[str, dict]] = []
    original = engine.event

    def record(info, name, data):
        events.append((name, data))
        original(info, name, data)

    engine.event = record
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    try:
        await conn.wait_for_bot_silence(timeout=60)  # the greeting
        conn.say(speech("thank you, that is all, goodbye"))
        await conn.wait_for_hangup(90)  # up to 90 s on a busy machine
        assert conn.hangups, "end_call did not hang up"
        outcome = await asyncio.wait_for(task, 30)
    finally:
        await conn.stop()
        if not task.done():
            task.cancel()
    assert outcome == "completed"
    assert ("tool_call", {"name": "end_call", "arguments": {}}) in events
    assert not engine.sessions  # the call is gone from the engine


async def test_a_calls_prompt_may_use_every_core_only_while_no_other_call_is_up() -> None:
    provider = LlamaCppProvider(LlamaCppSettings(isolation="thread", max_tokens=4),
                                provider_context())
    await provider.start()
    try:
        model = provider.default
        assert model is not None
        seen: list[bool] = []
        real = model.stream

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs["alone"])
            return real(*args, **kwargs)

        model.stream = spy  # type: ignore[method-assign]
        first = provider.create_service(call_context())
        await drive(first, turn(user("Hi")))  # the call's pipeline ends: its service is down
        assert provider.calls_up() == 0
        second = provider.create_service(call_context())
        third = provider.create_service(call_context())
        assert provider.calls_up() == 2
        await drive(second, turn(user("Hi")))
        await drive(third, turn(user("Hi")))
        assert seen == [True, False, True]
    finally:
        await provider.stop()

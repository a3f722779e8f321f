"""Whole calls through vc's engine with faster-whisper listening (fake LLM and TTS)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fw_helpers import ENGLISH, piper, wer

from vc.audio import resample
from vc.engine import Engine
from vc.testing import config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call

INI = """
[vc]
transports =
[stt]
provider = faster-whisper
[llm]
provider = fake
[tts]
provider = fake
[tts.fake]
ms_per_char = {ms_per_char}
[profile.default]
greeting =
"""


async def start_engine(ms_per_char: float = 30.0) -> Engine:
    reg = fake_registry()
    engine = Engine(config_from_ini(INI.format(ms_per_char=ms_per_char), reg), reg)
    await engine.start()
    return engine


async def wait_until(cond, within: float) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def created_services(engine: Engine) -> list[Any]:
    """The per-call STT services the provider creates from now on."""
    provider = engine.provider("stt")
    create = provider.create_service
    services: list[Any] = []

    def recorded(call: Any) -> Any:
        services.append(create(call))
        return services[-1]

    provider.create_service = recorded  # type: ignore[method-assign]
    return services


def said(engine: Engine, conn: LoopbackConnection) -> list[str]:
    session = engine.sessions[conn.info.call_id]
    return [m["content"] for m in session.context.get_messages() if m["role"] == "user"]


async def test_a_call_is_heard_and_answered() -> None:
    engine = await start_engine()
    assert engine.provider("stt").ready()
    services = created_services(engine)
    conn = LoopbackConnection()  # 8 kHz, as a phone line
    task = await run_loopback_call(engine, conn)
    try:
        sentence = ENGLISH[1]
        end = conn.say(resample(piper(sentence), 16000, 8000))
        await conn.wait_for_bot_audio(end, timeout=60)
        heard = said(engine, conn)
        assert heard and wer([sentence], [heard[0]]) <= 0.1, heard
        session = engine.sessions[conn.info.call_id]
        await conn.wait_for_bot_silence(timeout=60)
        turn = session.monitor.turns[0]
        assert 0 < turn["stt"] < 10 and turn["voice_to_voice"] > turn["stt"]
        count = engine.metrics.registry.get_sample_value(
            "vc_stage_latency_seconds_count", {"stage": "stt_transcription"})
        assert count == 1  # the provider's per-utterance time reached /metrics
        # Core's VAD told the STT when the speech paused: the transcript was begun then.
        assert services[0].early_used == len(services[0].transcripts) == 1
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()
        await engine.stop()


async def test_caller_interrupts_the_bot() -> None:
    engine = await start_engine(ms_per_char=120.0)  # long replies: time to interrupt
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    try:
        end = conn.say(resample(piper(ENGLISH[0]), 16000, 8000))
        await conn.wait_for_bot_audio(end, timeout=60)
        await asyncio.sleep(0.5)
        conn.say(resample(piper(ENGLISH[3]), 16000, 8000))  # while the bot is talking
        await wait_until(lambda: len(said(engine, conn)) >= 2, 60)
        assert conn.clears, "the bot's speech was not cleared when the caller spoke"
        heard = said(engine, conn)
        # The interruption itself was transcribed. Its first word is sometimes misheard when the
        # machine is busy ("Place transfer meets at ...", 1 run in 4 at load 2 since the test
        # was written): the segment's start moves with the VAD's timing. Issue 17's work.
        assert len(heard) >= 2 and wer([ENGLISH[3]], [heard[-1]]) <= 0.45, heard
        assert {"transfer", "billing", "department"} <= set(heard[-1].lower().strip(".").split()), heard
        assert engine.sessions[conn.info.call_id].barge_ins >= 1
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()
        await engine.stop()

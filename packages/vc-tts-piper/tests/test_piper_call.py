"""Whole calls through vc's engine with Piper speaking (fake STT and LLM, loopback caller)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from piper_helpers import profile, wer
from vc_tts_piper.server import PiperWebSocketServer

from vc.engine import Engine
from vc.testing import config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech

GREETING = "Thank you for calling, how can I help you today?"
QUESTION = "please call me back tomorrow morning"


def ini(tts: str, script: list[str]) -> str:
    return f"""
[vc]
transports =
[stt]
provider = fake
[stt.fake]
script = {", ".join(script)}
[llm]
provider = fake
[tts]
{tts}
[turn]
end = silence
[profile.default]
language = en
greeting = {GREETING}
"""


async def _call(engine: Engine, transcribe) -> None:
    assert engine.greetings["default"].duration > 1.5  # rendered once, at startup
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    try:
        await conn.wait_for_bot_audio(0, timeout=30)
        await conn.wait_for_bot_silence(timeout=60)
        heard = transcribe(bytes(conn.bot_audio), 8000)
        assert wer(GREETING, heard) <= 0.15, heard
        before = len(conn.bot_audio)
        end = conn.say(speech(QUESTION, 8000))
        await conn.wait_for_bot_audio(end, timeout=60)
        await conn.wait_for_bot_silence(timeout=60)
        answer = transcribe(bytes(conn.bot_audio[before:]), 8000)
        assert wer(f"You said: {QUESTION}.", answer) <= 0.2, answer
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()


async def test_call_with_local_piper(transcribe) -> None:
    reg = fake_registry()
    engine = Engine(config_from_ini(ini("provider = piper", [QUESTION]), reg), reg)
    await engine.start()
    try:
        await _call(engine, transcribe)
    finally:
        await engine.stop()


async def test_the_answer_is_synthesised_while_the_turn_is_waited_out(transcribe) -> None:
    """With the adaptive end of turn the reply is started, and held, before the caller's turn
    has ended; Piper makes its first piece meanwhile, and that is what the caller hears."""
    reg = fake_registry()
    cfg = config_from_ini(ini("provider = piper", [QUESTION]).replace(
        "end = silence", "end = adaptive\nspeculate = true"), reg)
    engine = Engine(cfg, reg)
    await engine.start()
    provider = engine.provider("tts")
    create = provider.create_service
    services: list[Any] = []
    provider.create_service = lambda call: services.append(create(call)) or services[-1]
    try:
        await _call(engine, transcribe)
        assert len(services) == 1
        assert services[0].held.started == services[0].held.used == 1
    finally:
        await engine.stop()


async def test_call_with_the_piper_websocket_service(piper, transcribe) -> None:
    voice = piper.voice_for(profile())
    server = PiperWebSocketServer({voice.name: voice}, voice.name)
    port = await server.start("127.0.0.1", 0)
    tts = f"url = ws://127.0.0.1:{port}/tts\nvoice = {voice.name}\nsample_rate = 16000"
    reg = fake_registry()
    cfg = config_from_ini(ini(tts, [QUESTION]), reg)
    assert cfg.default_providers["tts"] == "piper-websocket"  # a legacy-style [tts] url
    engine = Engine(cfg, reg)
    await engine.start()
    try:
        await _call(engine, transcribe)
    finally:
        await engine.stop()
        await server.stop()


async def test_caller_interrupts_piper(transcribe) -> None:
    long_question = ("tell me everything about your company and all of its many products and "
                     "services in great detail please")
    reg = fake_registry()
    engine = Engine(config_from_ini(ini("provider = piper", [long_question, "stop"]), reg), reg)
    await engine.start()
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    try:
        await conn.wait_for_bot_audio(0, timeout=30)
        await conn.wait_for_bot_silence(timeout=60)
        end = conn.say(speech("tell me everything about your company", 8000))
        await conn.wait_for_bot_audio(end, timeout=60)
        await asyncio.sleep(1.0)
        conn.say(speech("stop stop stop", 8000))
        interrupted_at = conn.speech_started[-1]
        await conn.wait_for_bot_silence(quiet=2.0, timeout=60)
        clears = [t for t in conn.clears if t >= interrupted_at]
        assert clears, "no clear on barge-in"
        clear_at = clears[0]
        # The bot falls silent at the first sign of speech (pause) and stays silent until the
        # interruption is confirmed by its words (clear): the interrupted reply does not go on.
        silenced_at = min(t for t in conn.pauses + clears if t >= interrupted_at)
        late = [t for t, _ in conn.bot_frames if silenced_at + 0.1 < t <= clear_at]
        assert not late, f"bot audio went on {late[-1] - silenced_at:.2f}s after it paused"
        # What is heard after the clear is the answer to the interruption, not the rest.
        after = b"".join(f for t, f in conn.bot_frames if t > clear_at)
        assert wer("You said: stop.", transcribe(after, 8000)) <= 0.34
        session = engine.sessions[conn.info.call_id]
        said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
        # Only what was heard is kept: not the whole interrupted reply.
        assert f"You said: {long_question}." not in said
        level = np.abs(np.frombuffer(bytes(conn.bot_audio), dtype="<i2")).max()
        assert level > 1000  # real speech was played before the interruption
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()
        await engine.stop()


async def test_piper_service_killed_mid_call_costs_one_turn_an_apology(transcribe) -> None:
    """The Piper WebSocket service (its console script) is killed mid-call: the caller hears the
    apology pre-rendered at startup, at once (a refused connection fails fast), and the next turn
    is spoken again once the service is back; both are counted in /metrics."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prometheus_client import generate_latest

    from vc.llm import DEFAULT_APOLOGY

    def launch(port: int) -> tuple[subprocess.Popen[str], int]:
        exe = os.path.join(os.path.dirname(sys.executable), "vc-piper-ws-server")
        proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on ws://" in line, f"server did not start: {line!r}"
        return proc, int(line.rsplit(":", 1)[1].split("/", 1)[0])

    proc, port = launch(0)
    tts = f"url = ws://127.0.0.1:{port}/tts\nvoice = en_US-joe-medium\nsample_rate = 16000"
    reg = fake_registry()
    cfg = config_from_ini(ini(tts, [QUESTION, "hello again"]), reg)
    engine = Engine(cfg, reg)
    await engine.start()
    await engine.apologies_rendered()
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    try:
        profile_ = conn.profile or engine.config.profiles[-1]
        clip = engine.apology_audio(profile_, 8000)
        assert clip, "no apology was pre-rendered"
        await conn.wait_for_bot_audio(0, timeout=30)
        await conn.wait_for_bot_silence(timeout=60)
        proc.send_signal(signal.SIGKILL)  # the service dies mid-call
        proc.wait(10)
        before = len(conn.bot_audio)
        end = conn.say(speech(QUESTION, 8000))
        apology_at = await conn.wait_for_bot_audio(end, timeout=30)
        await conn.wait_for_bot_silence(timeout=60)
        heard = bytes(conn.bot_audio[before:])
        whole_frames = clip[: len(clip) // 320 * 320]  # the last frame is zero-padded
        assert whole_frames in heard, "the caller did not hear the pre-rendered clip"
        assert wer(DEFAULT_APOLOGY, transcribe(heard, 8000)) <= 0.2
        # Fail fast: no connect_timeout (5 s) of silence before the apology.
        assert apology_at - end < 3.0, f"apology came {apology_at - end:.1f}s after the turn"
        proc, _ = launch(port)  # the service comes back on the same address
        deadline = time.monotonic() + 30
        while not engine.provider("tts").ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        before = len(conn.bot_audio)
        second = conn.say(speech("hello again", 8000))
        await conn.wait_for_bot_audio(second, timeout=60)
        await conn.wait_for_bot_silence(timeout=60)
        answer = transcribe(bytes(conn.bot_audio[before:]), 8000)
        assert wer("You said: hello again.", answer) <= 0.2, answer
        metrics = generate_latest(engine.metrics.registry).decode()
        assert 'vc_provider_failures_total{kind="tts",provider="piper-websocket"} 1.0' in metrics
        assert 'vc_apologies_total{kind="tts"} 1.0' in metrics
    finally:
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 30)
        await conn.stop()
        await engine.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

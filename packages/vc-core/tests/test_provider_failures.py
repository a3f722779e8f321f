"""The same fault, the same answer: a provider failing mid-turn (STT, LLM, TTS) costs the caller
that turn, never the call. The caller hears the profile's apology, pre-rendered at startup like
the greeting (so it plays even when the TTS is what failed); the next turn works; the failure
is counted in /metrics; every log line about it names the call."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from loguru import logger
from prometheus_client import generate_latest

from vc.engine import Engine
from vc.llm import DEFAULT_APOLOGY
from vc.logs import route_loguru
from vc.testing import FAKE_STACK
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech


def stack(script: list[str], extra: str = "") -> str:
    return FAKE_STACK + f"\n[stt.fake]\nscript = {', '.join(script)}\n" + extra



def heard(conn: LoopbackConnection, start: float, end: float | None = None) -> bytes:
    return b"".join(f for t, f in conn.bot_frames if t >= start and (end is None or t < end))


def metric(engine: Engine, name: str) -> str:
    text = generate_latest(engine.metrics.registry).decode()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def answered_call(engine: Engine) -> tuple[LoopbackConnection, asyncio.Task[str]]:
    """A loopback call whose greeting has been heard to its end."""
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    return conn, task


async def ask(conn: LoopbackConnection, words: str) -> tuple[float, float]:
    """Say ``words``; returns when the speech started and when the bot's reply (or apology)
    was first heard, after waiting for it to end. From the speech's start: an apology may
    begin inside the clip's trailing silence."""
    pcm = speech(words, 8000)
    started = conn.say(pcm) - len(pcm) / 2 / 8000
    answered = await conn.wait_for_bot_audio(started, timeout=15)
    await conn.wait_for_bot_silence()
    return started, answered


async def hang_up(conn: LoopbackConnection, task: asyncio.Task[str]) -> None:
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()


async def test_apology_is_pre_rendered_per_profile(make_engine) -> None:
    engine = await make_engine(stack(["x"], "\n[profile.other]\nmatch.to = +2*\n"))
    assert set(engine.apologies) == {p.name for p in engine.config.profiles}
    profile = engine.config.profiles[0]
    assert engine.apology_text(profile) == DEFAULT_APOLOGY
    clip = engine.apologies[profile.name]
    assert clip.duration == pytest.approx(len(DEFAULT_APOLOGY) * 0.03, abs=0.01)
    assert engine.apology_audio(profile, 8000)


async def test_a_turkish_profiles_apology_is_turkish(make_engine) -> None:
    """Issue 14: the apology comes from the profile's phrases, in its language."""
    turkish = "Özür dilerim, bir sorun oluştu. Lütfen tekrar eder misiniz?"
    engine = await make_engine(
        stack(["x"], "\n[profile.tr]\nlanguage = tr\nmatch.to = +90*\n")
    )
    by_name = {p.name: p for p in engine.config.profiles}
    assert engine.apology_text(by_name["tr"]) == turkish
    assert engine.apology_text(by_name["default"]) == DEFAULT_APOLOGY
    clip = engine.apologies["tr"]
    assert clip.duration == pytest.approx(len(turkish) * 0.03, abs=0.01)


@pytest.mark.parametrize("failing", ["tts-raise please", "stt-raise"])
async def test_failed_turn_plays_the_pre_rendered_apology_and_the_next_turn_works(
    make_engine, failing: str
) -> None:
    engine = await make_engine(stack([failing, "hello again"]))
    conn, task = await answered_call(engine)
    _, apology_at = await ask(conn, "tell me the opening hours")
    second = conn.say(speech("hello again", 8000))
    apology = heard(conn, apology_at, second)
    clip = engine.apology_audio(conn.profile, conn.sample_rate)
    # What the caller heard is the pre-rendered clip (to the last, zero-padded 20 ms frame).
    assert len(apology) >= len(clip) - 320 and abs(len(apology) - len(clip)) <= 640
    n = min(len(apology), len(clip)) - 320
    assert apology[:n] == clip[:n]
    # The next turn works.
    await conn.wait_for_bot_audio(second, timeout=15)
    await conn.wait_for_bot_silence()
    session = engine.sessions[conn.info.call_id]
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert said[-1] == "You said: hello again."
    assert session.apologies == 1
    kind = "tts" if failing.startswith("tts") else "stt"
    # The context holds what the caller heard: the apology where the unspoken reply was (vc.heard).
    failed_turn = [DEFAULT_APOLOGY] if kind == "tts" else []
    assert said[1:] == [*failed_turn, "You said: hello again."], said
    # The model, answering the next turn, saw neither the unspoken reply nor the apology, nor
    # the words they answered (vc.llm): the caller was asked to say them again.
    asked = engine.providers["llm"]["fake"].services[-1].requests[-1]
    assert [(m["role"], m["content"]) for m in asked if m["role"] != "system"] == [
        ("assistant", "Hello! How can I help you today?"), ("user", "hello again")]
    assert f'vc_provider_failures_total{{kind="{kind}",provider="fake"}} 1.0' in metric(
        engine, "vc_provider_failures_total")
    assert f'vc_apologies_total{{kind="{kind}"}} 1.0' in metric(engine, "vc_apologies_total")
    await hang_up(conn, task)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    route_loguru("info")  # pipecat's loguru lines go to stdlib logging, as in vc serve
    handler = _Records()
    pipecat_log = logging.getLogger("pipecat")
    pipecat_log.addHandler(handler)
    yield handler.records
    pipecat_log.removeHandler(handler)
    logger.remove()
    logger.add(sys.stderr)


async def test_llm_failure_log_lines_carry_the_call_id(make_engine, records) -> None:
    engine = await make_engine(stack(["please fail now", "hello again"]))
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("please fail now", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)  # the LLM's spoken apology
    await conn.wait_for_bot_silence()
    errors = [r for r in records if "apologising" in r.getMessage()]
    assert errors, [r.getMessage() for r in records]
    assert all(getattr(r, "call_id", None) == conn.info.call_id for r in errors)
    # pipecat's own lines for the call (warnings and up) name it too.
    assert all(getattr(r, "call_id", None) == conn.info.call_id for r in records
               if r.created >= 0 and r.levelno >= logging.WARNING), [
        (r.getMessage(), getattr(r, "call_id", None)) for r in records]
    assert 'vc_provider_failures_total{kind="llm",provider="fake"} 1.0' in metric(
        engine, "vc_provider_failures_total")
    assert 'vc_apologies_total{kind="llm"} 1.0' in metric(engine, "vc_apologies_total")
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()


async def test_no_apology_over_a_caller_who_barged_in(make_engine) -> None:
    """A TTS turn the caller talked over is reported by pipecat as failed ("no audio"): the
    caller is speaking, so the turn is not apologised for; an apology already playing stops."""
    engine = await make_engine(stack(["x"]))
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)
    quiet = await conn.wait_for_bot_silence() + 0.001
    session = engine.sessions[conn.info.call_id]

    session._on_barge_in(True)
    session._provider_failed("tts", "TTS completed with no audio")
    await asyncio.sleep(0.5)
    assert session.apologies == 0 and not conn.bot_audio_after(quiet)
    assert 'kind="tts"' not in metric(engine, "vc_provider_failures_total")

    session._interrupted_at = -1e9  # long after that barge-in: a real failure
    session._provider_failed("tts", "service gone")
    started = await conn.wait_for_bot_audio(quiet, timeout=5)
    session.connection.playout.clear()  # the caller talks over the apology (as media.py does)
    session._on_barge_in(True)
    await asyncio.sleep(1.0)
    clip = engine.apology_audio(conn.profile, conn.sample_rate)
    assert session.apologies == 1
    assert len(heard(conn, started)) < len(clip) / 2
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()


async def test_a_reply_the_tts_could_not_speak_is_replaced_by_the_apology(make_engine) -> None:
    """A reply the TTS reports as failed (a voice given text it cannot speak) reaches the
    context through pipecat's aggregator all the same; the caller heard the apology, and the
    context says so - left there, the unheard reply is what a small model copies next turn."""
    engine = await make_engine(stack(["tts-fail please", "hello again"]))
    conn, task = await answered_call(engine)
    await ask(conn, "tell me the opening hours")
    await ask(conn, "hello again")
    session = engine.sessions[conn.info.call_id]
    messages = [(m["role"], m["content"]) for m in session.context.get_messages()]
    assert messages[1:] == [("user", "tts-fail please"), ("assistant", DEFAULT_APOLOGY),
                            ("user", "hello again"), ("assistant", "You said: hello again.")]
    assert session.apologies == 1
    await hang_up(conn, task)

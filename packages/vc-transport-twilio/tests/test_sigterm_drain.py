"""Issue 12 bug 2: SIGTERM cut live Twilio calls.

vc turned off uvicorn's ``install_signal_handlers``, which uvicorn 0.55 no longer calls (it
captures SIGTERM itself with ``signal.signal``): SIGTERM went to uvicorn, which closed the HTTP
server and every Media Stream within 0.22 s. Now, against a real ``vc serve`` process: SIGTERM
turns ``/readyz`` 503 at once and refuses new calls, a live call keeps its stream (and its
conversation) until the caller hangs up, a call still up at ``[server] drain_timeout`` hears
the goodbye before vc hangs up, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from vc_transport_twilio.simulator import TwilioCloud
from vc_transport_twilio.testing import twilio_section

from vc.testing import FAKE_STACK
from vc.testing.calls import speech

DRAIN = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_sigterm_drains_twilio_calls_then_exits(tmp_path: Path) -> None:
    cloud = TwilioCloud("http://127.0.0.1:1")
    await cloud.start()
    ini = tmp_path / "vc.ini"
    ini.write_text(
        FAKE_STACK
        + f"[server]\ndrain_timeout = {DRAIN}\n"
        + "[vc]\ntransports = twilio\nlog_format = json\n"
        + "[tts]\nms_per_char = 20\n"
        + "[profile.default]\ngreeting = Hi.\ngoodbye = Goodbye now!\n"
        + twilio_section(cloud)
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cloud.local_url = url
    log = (tmp_path / "vc.log").open("w+")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from vc.cli import main; main()", "serve", "-c", str(ini),
        "--port", str(port),
        env={**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes", "VC_LOAD_PLUGINS": "vc-transport-twilio"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                log.seek(0)
                raise AssertionError("vc did not get ready: " + log.read()[-3000:])

            a = await cloud.place_call()  # hangs up on its own during the drain
            b = await cloud.place_call()  # still up at drain_timeout
            for call in (a, b):
                assert call.ws is not None, call.twiml
                await call.wait_for_bot_speech(within=10)  # the greeting
            await a.wait_for_bot_silence(quiet=0.3, within=10)

            # The caller of A is talking when SIGTERM comes.
            spoken = a.say(speech("What time is it?"))
            await asyncio.sleep(0.3)
            t_sig = time.monotonic()
            proc.send_signal(signal.SIGTERM)

            # Not ready at once.
            while True:
                r = await client.get("/readyz")
                if r.status_code == 503:
                    break
                assert time.monotonic() - t_sig < 1.0, "readyz still 200 1 s after SIGTERM"
                await asyncio.sleep(0.02)
            assert r.json()["checks"]["draining"] is False
            # A new call is refused.
            c = await cloud.place_call()
            assert c.ws is None and c.rejected, (c.webhook_status, c.twiml)

            # Live calls keep their streams; A's conversation goes on (the bot answers).
            await asyncio.sleep(max(0.5, spoken - time.monotonic()))
            assert a.closed_at is None and b.closed_at is None, "a stream was cut by SIGTERM"
            await a.wait_for_bot_speech(after=spoken, within=DRAIN)
            assert a.closed_at is None and b.closed_at is None
            assert proc.returncode is None
            await a.hangup()
            await a.wait_closed(within=5)

            # B is still up at drain_timeout: it hears the goodbye, then vc hangs up.
            await b.wait_closed(within=DRAIN + 15)
            assert b.closed_at is not None and b.closed_at >= t_sig + DRAIN - 0.1
            assert b.ended_by == "rest-hangup", b.ended_by
            goodbye = b.speech_frames(after=t_sig + DRAIN - 0.1)
            assert goodbye, "no goodbye at drain_timeout"
            heard = len(goodbye) * 0.02
            assert heard >= 0.2, heard  # "Goodbye now!" at 20 ms per character

        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await cloud.stop()
    log.seek(0)
    records = [json.loads(line) for line in log if line.startswith("{")]
    messages = [r["message"] for r in records]
    assert "SIGTERM received" in messages
    assert any(m.startswith("shutting down") for m in messages)

"""`vc serve`: health, readiness through startup and drain, metrics, SIGTERM, structured logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from vc import logs
from vc.server import App, HTTPServer
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call

INI = FAKE_STACK + "[server]\ndrain_timeout = 1.5\n"


async def test_health_readiness_metrics_and_drain() -> None:
    reg = fake_registry()
    app = App(config_from_ini(INI, reg), reg)
    http = HTTPServer(app, "127.0.0.1", 0)
    await http.start()
    async with httpx.AsyncClient(base_url=http.url) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        before = await client.get("/readyz")
        assert before.status_code == 503 and before.json()["checks"]["engine"] is False
        await app.start()
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.json()

        conn = LoopbackConnection()
        task = await run_loopback_call(app.engine, conn)
        await conn.wait_for_bot_audio(0, timeout=5)
        metrics = (await client.get("/metrics")).text
        assert 'vc_active_calls{transport="loopback"} 1.0' in metrics

        stopping = asyncio.create_task(app.stop())
        await asyncio.sleep(0.2)
        draining = await client.get("/readyz")
        assert draining.status_code == 503 and draining.json()["checks"]["draining"] is False
        assert app.engine.admit(conn.info) is not None  # no new calls while draining
        await asyncio.wait_for(stopping, 10)  # the active call was hung up after drain_timeout
        assert task.done()
        metrics = (await client.get("/metrics")).text
        assert 'vc_calls_total{outcome="completed",transport="loopback"} 1.0' in metrics
        assert "# TYPE vc_stage_latency_seconds histogram" in metrics
    await conn.stop()
    await http.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vc_serve_process_answers_and_stops_on_sigterm(tmp_path) -> None:
    ini = tmp_path / "vc.ini"
    ini.write_text(INI + "[vc]\ntransports =\nlog_format = json\n")
    port = free_port()
    env = {**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vc.cli import main; main()", "serve", "-c", str(ini),
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    messages = [r["message"] for r in lines]
    assert any(m.startswith("ready in") for m in messages)
    assert any(m.startswith("shutting down") for m in messages)
    assert all({"severity", "message", "time", "logger"} <= set(r) for r in lines)


def test_startup_failure_is_reported_and_exits_nonzero(tmp_path) -> None:
    ini = tmp_path / "vc.ini"
    ini.write_text("[vc]\ntransports =\n[stt]\nprovider = nope\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from vc.cli import main; main()", "serve", "-c", str(ini)],
        env={**os.environ, "VC_PLUGIN_MODULES": "vc.testing.fakes"}, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "[stt] provider = 'nope'" in proc.stderr and "is not installed" in proc.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_every_line_of_a_call_carries_its_call_id(fmt) -> None:
    stream = io.StringIO()
    logs.setup("info", fmt, stream=stream)
    try:
        reg = fake_registry()
        app = App(config_from_ini(INI + "[stt.fake]\nscript = hi\n", reg), reg)
        await app.start()
        conn = LoopbackConnection()
        task = await run_loopback_call(app.engine, conn)
        await conn.wait_for_bot_audio(0, timeout=5)
        conn.caller_hangs_up()
        await asyncio.wait_for(task, 10)
        await conn.stop()
        await app.stop()
    finally:
        logging.getLogger().handlers.clear()
    out = stream.getvalue().splitlines()
    call_lines = [line for line in out
                  if "vc.events" in line and ("call started" in line or "call ended" in line)]
    assert len(call_lines) == 2
    for line in call_lines:
        if fmt == "json":
            assert json.loads(line)["call_id"] == conn.info.call_id
        else:
            assert f"[{conn.info.call_id}]" in line


async def test_an_engine_begun_before_vc_listens_is_stopped_when_it_cannot_listen() -> None:
    """`vc serve` starts the engine (models loading) before the HTTP server's modules are
    imported; when the port then turns out taken, that engine is stopped, not left running."""
    from vc.engine import Engine
    from vc.server import serve

    reg = fake_registry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = config_from_ini(FAKE_STACK + f"[server]\nport = {taken.getsockname()[1]}\n", reg)
        engine = Engine(cfg, reg)
        starting = asyncio.ensure_future(engine.start())
        stopped: list[bool] = []
        real_stop = engine.stop

        async def stop() -> None:
            stopped.append(True)
            await real_stop()

        engine.stop = stop  # type: ignore[method-assign]
        assert await serve(cfg, reg, engine=engine, engine_start=starting) == 1
    assert starting.done() and stopped == [True]
    assert engine.providers == {} and not engine.accepting

"""Local development mode: no Twilio credentials at all and vc bound to loopback.

That is what ``vc serve`` runs with no configuration file (the embedded default stack) and
what ``vc demo`` calls into: signature checks are off, said loudly at startup, and only
unproxied requests from this machine are served. Anywhere else, missing credentials stay an
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys

import aiohttp
import pytest
from twilio_helpers import after_greeting, ini, registry, twilio_vc
from vc_transport_twilio.transport import is_loopback

from vc.providers import ProviderError
from vc.server import App
from vc.testing import config_from_ini

LOGGER = "vc.transport.twilio"
NO_CREDENTIALS = {"public_url": "", "auth_token": "", "account_sid": "", "api_base_url": None}


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
     ("vc.example.com", False), ("", False)],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


async def test_no_credentials_on_loopback_serves_local_calls_unsigned(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with twilio_vc(ini(), **NO_CREDENTIALS) as (cloud, vc):
        assert logged(caplog, "LOCAL DEVELOPMENT MODE")
        assert logged(caplog, "NOT checked")
        assert vc.transport.local_only and not vc.transport.validating
        call = cloud.new_call()
        # No signature at all: accepted, the TwiML points at this server's own address.
        status, twiml = await cloud.post_signed(
            vc.url + "/twilio/voice", call.webhook_params(), signature=""
        )
        assert status == 200 and "ws://127.0.0.1:" in twiml
        await call.answer(vc.url + "/twilio/voice")
        await after_greeting(call)
        assert call.speech_frames()
        await call.hangup()
        await call.wait_closed()


async def test_local_mode_refuses_what_came_through_a_proxy_or_tunnel(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with twilio_vc(ini(), **NO_CREDENTIALS) as (cloud, vc):
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "CF-Connecting-IP"):
            call = cloud.new_call()
            status, body = await cloud.post_signed(
                vc.url + "/twilio/voice", call.webhook_params(),
                headers={header: "203.0.113.7" if header != "Forwarded" else "for=203.0.113.7"},
            )
            assert status == 403 and "Stream" not in body, header
            assert call.call_sid not in vc.engine.sessions
        assert logged(caplog, "proxy or tunnel")
        # The stream endpoint too: refused before the WebSocket is accepted.
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await cloud.session.ws_connect(
                vc.url.replace("http", "ws") + "/twilio/stream",
                headers={"X-Forwarded-For": "203.0.113.7"},
            )
        assert e.value.status == 403
        assert not vc.transport.streams


@pytest.mark.parametrize(
    ("server_host", "twilio", "missing"),
    [
        ("0.0.0.0", {}, "public_url and auth_token"),
        ("::", {}, "public_url and auth_token"),
        # Partly configured for real Twilio: an error on loopback too, never silently unsigned.
        ("127.0.0.1", {"public_url": "https://vc.example.com"}, "auth_token"),
        ("127.0.0.1", {"auth_token": "0123456789abcdef"}, "public_url"),
    ],
)
async def test_missing_credentials_stay_an_error_elsewhere(server_host, twilio, missing):
    section = "\n".join(f"{k} = {v}" for k, v in twilio.items())
    text = ini() + f"\n[server]\nhost = {server_host}\n[transport.twilio]\n{section}\n"
    text = text.replace("[server]\ndrain_timeout = 2\n", "")
    reg = registry()
    app = App(config_from_ini(text, reg), reg)
    try:
        with pytest.raises(ProviderError, match=f"{missing} must be set"):
            await app.start()
        assert not app.transports["twilio"].ready()
    finally:
        await app.stop()


async def _vc_serve(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """Start ``vc serve --port 0``; returns the process and its URL once it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vc.cli", "serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        if not line:
            raise AssertionError("vc serve exited before listening")
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            return proc, m.group(1)


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VC_", "OAVC_"))}
    # The fake AI stack stands in for the default models (the real one: test_demo.py).
    env.update(VC_PLUGIN_MODULES="vc.testing.fakes", VC_STT__PROVIDER="fake", VC_LLM__PROVIDER="fake",
               VC_TTS__PROVIDER="fake", **extra)
    return env


async def test_vc_serve_without_configuration_answers_a_local_call():
    proc, url = await _vc_serve(_env())
    out: list[str] = []
    drain = asyncio.create_task(_drain(proc.stdout, out))
    try:
        from vc_transport_twilio.simulator import TwilioCloud

        async with TwilioCloud(url, public_url=url) as cloud:
            for _ in range(600):
                async with cloud.session.get(url + "/readyz") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.1)
            assert r.status == 200
            call = await cloud.place_call()
            await after_greeting(call)
            await call.hangup()
            await call.wait_closed()
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        drain.cancel()
    text = "".join(out)
    assert "LOCAL DEVELOPMENT MODE" in text, text[-3000:]


async def test_vc_serve_on_all_interfaces_without_credentials_fails():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vc.cli", "serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=_env(VC_SERVER__HOST="0.0.0.0"),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 1
    assert b"public_url and auth_token must be set" in out, out.decode()[-3000:]

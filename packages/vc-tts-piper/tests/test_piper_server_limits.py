"""Issue 12 bug 7, Piper half: the shipped vc-piper-ws-server refuses non-finite or
out-of-range numbers and over-long text with an error message (the connection stays open),
bounds each request's synthesis time, and can require a shared token. Each test carries the
issue's reproducer, against the real server (the default voice) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from piper_helpers import profile, provider_context
from vc_tts_piper import protocol
from vc_tts_piper.server import MAX_TEXT, PiperWebSocketServer, _parser
from vc_tts_piper.ws_client import PiperWebSocketProvider, PiperWebSocketSettings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from vc.settings import build

VOICE = "en_US-joe-medium"


@asynccontextmanager
async def serving(piper: Any, **kw: Any) -> AsyncIterator[tuple[PiperWebSocketServer, str]]:
    loaded = piper.voice_for(profile())
    server = PiperWebSocketServer({loaded.name: loaded}, loaded.name, **kw)
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, f"ws://127.0.0.1:{port}/tts"
    finally:
        await server.stop()


async def ask(ws: ClientConnection, message: str) -> list[Any]:
    await ws.send(message)
    out: list[Any] = []
    while True:
        m = await asyncio.wait_for(ws.recv(), 60)
        out.append(m)
        if isinstance(m, str) and protocol.classify(m)[0] in ("end", "error"):
            return out


def error_of(answer: list[Any]) -> str:
    kind, detail = protocol.classify(answer[-1])
    assert kind == "error", answer
    return detail


OK = protocol.request("Hello.", VOICE, 16000)


async def test_non_finite_sample_rate_is_an_error_reply_not_a_1011(piper) -> None:
    # reproducer: {"sample_rate": Infinity} closed the connection (int(inf) raised)
    async with serving(piper) as (_, url), connect(url) as ws:
        for number in ("Infinity", "-Infinity", "NaN", "1e400", "22050.5", "true", '"fast"',
                       "100", "96000"):
            raw = '{"text": "hi", "voice": "' + VOICE + '", "sample_rate": ' + number + "}"
            assert "is not a whole number between 8000 and 48000" in error_of(await ask(ws, raw))
        answer = await ask(ws, OK)  # the connection stays open and still works
        assert protocol.classify(answer[-1])[0] == "end"


async def test_a_20000_character_request_is_refused_at_once(piper) -> None:
    # reproducer: one 20,000-character request was synthesised for 84 s
    async with serving(piper) as (server, url), connect(url) as ws:
        t0 = time.monotonic()
        problem = error_of(await ask(ws, protocol.request("Hello there. " * 1540, VOICE, 16000)))
        assert time.monotonic() - t0 < 2
        assert f"longer than {MAX_TEXT} characters (20020)" in problem
        assert server.requests == 0
        assert protocol.classify((await ask(ws, OK))[-1])[0] == "end"


async def test_synthesis_time_limit_bounds_one_request(piper) -> None:
    async with serving(piper, time_limit=0.2) as (_, url), connect(url) as ws:
        text = "This sentence is spoken again and again until the limit. " * 30  # ~1700 chars
        t0 = time.monotonic()
        answer = await ask(ws, protocol.request(text, VOICE, 16000))
        took = time.monotonic() - t0
        assert "synthesis time limit of 0.2s reached" in error_of(answer)
        assert protocol.classify(answer[0])[0] == "start"
        assert took < 5, took  # a piece or two, not the ~30 s the whole text takes
        assert protocol.classify((await ask(ws, OK))[-1])[0] == "end"  # one piece: within it


async def test_shared_token_is_required_when_configured(piper,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(piper, token="pip3r-token") as (_, url):
        for headers, where in (({}, url), ({"Authorization": "Bearer nope"}, url),
                               ({}, url + "?token=nope")):
            with pytest.raises(InvalidStatus) as e:
                async with connect(where, additional_headers=headers):
                    pass
            assert e.value.response.status_code == 401
        async with connect(url, additional_headers={"Authorization": "Bearer pip3r-token"}) as ws:
            assert protocol.classify((await ask(ws, OK))[-1])[0] == "end"
        async with connect(url + "?token=pip3r-token") as ws:
            assert protocol.classify((await ask(ws, OK))[-1])[0] == "end"
        health = url.replace("ws://", "http://").replace("/tts", "/health")
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(health, timeout=30).read())
        assert json.loads(body)["status"] == "ok"  # probes need no token
        # vc's client sends it: the provider's token setting, here a $env: secret
        monkeypatch.setenv("PIPER_TEST_TOKEN", "pip3r-token")
        settings, errors = build(
            PiperWebSocketSettings,
            {"url": (url, "t"), "voice": (VOICE, "t"), "token": ("$env:PIPER_TEST_TOKEN", "t")},
            "tts.piper-websocket")
        assert not errors and settings.token == "pip3r-token"
        provider = PiperWebSocketProvider(settings, provider_context())
        await provider.start()
        try:
            assert provider.ready()
        finally:
            await provider.stop()
        bad = PiperWebSocketProvider(PiperWebSocketSettings(url=url, voice=VOICE,
                                                            connect_timeout=0.5),
                                     provider_context())
        await bad.start()
        try:
            await asyncio.sleep(0.5)
            assert not bad.ready()  # without the token it never gets in
        finally:
            await bad.stop()


def test_listens_on_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "TOKEN", "MAX_TEXT", "TIME_LIMIT"):
        monkeypatch.delenv(f"VC_PIPER_WS_{name}", raising=False)
    args = _parser().parse_args([])
    assert (args.host, args.token, args.max_text) == ("127.0.0.1", "", MAX_TEXT)
    monkeypatch.setenv("VC_PIPER_WS_HOST", "0.0.0.0")
    monkeypatch.setenv("VC_PIPER_WS_TOKEN", "from-env")
    args = _parser().parse_args([])
    assert (args.host, args.token) == ("0.0.0.0", "from-env")

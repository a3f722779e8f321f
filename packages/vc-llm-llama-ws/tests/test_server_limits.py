"""Issue 12 bug 7, llama-ws half: the shipped server no longer trusts numbers or listens
everywhere. Each test carries the issue's reproducer, against the real server (SmolLM2) on
127.0.0.1 and an ephemeral port."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from vc_llm_llama_ws.client import LlamaWSProvider, LlamaWSSettings
from vc_llm_llama_ws.generation import LlamaModel
from vc_llm_llama_ws.server import Limits, LlamaWSServer, parse_args
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from vc.settings import build
from vc.testing.services import call_context, drive, provider_context, replies, turn, user


@pytest.fixture
def url(llama_server: tuple[LlamaWSServer, str]) -> str:
    return llama_server[1]


async def ask(ws: ClientConnection, message: str) -> list[dict[str, Any]]:
    """Send one request; the replies up to the final one (done or error)."""
    await ws.send(message)
    out = []
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
        out.append(reply)
        if reply.get("done") or reply.get("error"):
            return out


OK = json.dumps({"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 3})


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e400"])
@pytest.mark.parametrize("key", ["max_tokens", "temperature", "top_p", "seed"])
async def test_non_finite_numbers_are_an_error_reply_not_a_1011(url: str, key: str,
                                                                number: str) -> None:
    # reproducer: {"max_tokens": Infinity} closed the connection with 1011 (int(inf) raised)
    async with connect(url) as ws:
        raw = '{"messages": [{"role": "user", "content": "hi"}], "' + key + '": ' + number + "}"
        (answer,) = await ask(ws, raw)
        assert f"{key} must be a finite number" in answer["error"], answer
        assert (await ask(ws, OK))[-1] == {"done": True}  # the connection stays open


async def test_a_400_message_history_is_refused_at_once(
    llama_server: tuple[LlamaWSServer, str],
) -> None:
    # reproducer: a 400-message history held the single model for 24 s
    server, url = llama_server
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
               for i in range(400)]
    before = server.requests
    async with connect(url) as ws:
        t0 = time.monotonic()
        (answer,) = await ask(ws, json.dumps({"messages": history}))
        assert time.monotonic() - t0 < 2
        assert "too many messages: 400" in answer["error"] and "at most 100" in answer["error"]
        big = [{"role": "user", "content": "x" * 40_000}]
        (answer,) = await ask(ws, json.dumps({"messages": big}))
        assert "too long: 40000 characters" in answer["error"]
        (answer,) = await ask(ws, json.dumps({"messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 1 << 20}))
        assert "max_tokens must be between 1 and 1024" in answer["error"]
        assert (await ask(ws, OK))[-1] == {"done": True}
    assert server.requests == before + 1  # none of the refused ones reached the model


@asynccontextmanager
async def serving(handler: LlamaWSServer) -> AsyncIterator[str]:
    ws = await handler.serve("127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{next(iter(ws.sockets)).getsockname()[1]}"
    finally:
        ws.close()
        await ws.wait_closed()


async def test_generation_time_limit_stops_a_long_reply(smollm2: LlamaModel) -> None:
    handler = LlamaWSServer([smollm2], limits=Limits(time_limit=0.001))
    async with serving(handler) as url, connect(url) as ws:
        t0 = time.monotonic()
        long = json.dumps({"messages": [{"role": "user", "content": "Count from 1 to 500."}],
                           "max_tokens": 1000, "temperature": 0})
        answer = await ask(ws, long)
        assert "generation time limit of 0.001s reached" in answer[-1]["error"], answer
        assert time.monotonic() - t0 < 10
        assert handler.recent[-1].finish_reason == "time_limit"
        assert handler.recent[-1].completion_tokens <= 2
        answer = await ask(ws, long)  # the connection is still usable
        assert "time limit" in answer[-1]["error"]


async def test_shared_token_is_required_when_configured(smollm2: LlamaModel,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    handler = LlamaWSServer([smollm2], token="s3cret-token")
    async with serving(handler) as url:
        for headers, where in (({}, url), ({"Authorization": "Bearer wrong"}, url),
                               ({}, url + "/?token=wrong"), ({"Authorization": "Basic s3cret-token"}, url)):
            with pytest.raises(InvalidStatus) as e:
                async with connect(where, additional_headers=headers):
                    pass
            assert e.value.response.status_code == 401
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret-token"}) as ws:
            assert (await ask(ws, OK))[-1] == {"done": True}
        async with connect(url + "/?token=s3cret-token") as ws:
            assert (await ask(ws, OK))[-1] == {"done": True}
        health = url.replace("ws://", "http://") + "/health"  # probes need no token
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(health, timeout=30).read())
        assert json.loads(body)["status"] == "ok"
        # vc's client sends it: the provider's token setting, here a $env: secret
        monkeypatch.setenv("LLAMA_WS_TEST_TOKEN", "s3cret-token")
        settings, errors = build(LlamaWSSettings, {"url": (url, "test"),
                                                   "token": ("$env:LLAMA_WS_TEST_TOKEN", "test")},
                                 "llm.llama-ws")
        assert not errors and settings.token == "s3cret-token"
        provider = LlamaWSProvider(settings, provider_context())
        await provider.start()
        try:
            assert provider.ready()
            (text,) = replies(await drive(provider.create_service(call_context()),
                                          turn(user("Say hello."))))
            assert text.strip()
        finally:
            await provider.stop()


def test_listens_on_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    # reproducer: vc-llama-ws-server listened on 0.0.0.0 by default with no authentication
    for name in ("HOST", "TOKEN"):
        monkeypatch.delenv(f"VC_LLAMA_WS_{name}", raising=False)
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.token == ""
    assert parse_args(["--host", "0.0.0.0", "--token", "t"]).host == "0.0.0.0"
    monkeypatch.setenv("VC_LLAMA_WS_HOST", "0.0.0.0")
    monkeypatch.setenv("VC_LLAMA_WS_TOKEN", "from-env")
    args = parse_args([])
    assert (args.host, args.token) == ("0.0.0.0", "from-env")
    with pytest.raises(SystemExit):
        parse_args(["--time-limit", "inf"])

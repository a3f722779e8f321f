"""The llama-ws client against a stand-in replaying the old service's exact messages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from pipecat.frames.frames import InterruptionFrame
from pipecat.tests.utils import SleepFrame
from replay_server import ReplayServer
from vc_llm_llama_ws.client import LlamaWSProvider, LlamaWSSettings
from vc_llm_llama_ws.generation import LlamaModel
from vc_llm_llama_ws.server import LlamaWSServer

from vc.config import load
from vc.llm import DEFAULT_APOLOGY
from vc.testing import fake_registry
from vc.testing.services import assistant, call_context, drive, provider_context, replies, turn, user


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    server = await ReplayServer().start()
    yield server
    await server.stop()


async def started(url: str, **kw) -> LlamaWSProvider:
    provider = LlamaWSProvider(LlamaWSSettings(url=url, **kw), provider_context())
    await provider.start()
    return provider


async def test_request_shape_and_rag_context(replay: ReplayServer) -> None:
    provider = await started(replay.url)
    try:
        service = provider.create_service(call_context())
        frames = await drive(service, turn(assistant("Hello!"), user("Hi there")))
    finally:
        await provider.stop()
    assert replies(frames) == ["r1c0 r1c1 r1c2 "]
    assert service.rag_contexts == ["context for request 1"]
    (request,) = replay.requests
    assert request == {
        "messages": [
            {"role": "system", "content": call_context().profile.system_prompt},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Hi there"},
        ],
        "temperature": 0.2,
        "max_tokens": 80,
        "stream": True,
        "use_rag": True,
    }


async def test_legacy_prompt_form(replay: ReplayServer) -> None:
    provider = await started(replay.url, legacy_prompt=True, use_rag=False, top_p=0.9)
    try:
        service = provider.create_service(call_context())
        frames = await drive(service, turn(user("first"), assistant("ok"), user("Merhaba")))
    finally:
        await provider.stop()
    assert replies(frames) == ["r1c0 r1c1 r1c2 "]
    (request,) = replay.requests
    assert request["prompt"] == "Merhaba" and request["system_prompt"]
    assert "messages" not in request and request["top_p"] == 0.9


async def test_barge_in_drains_the_old_reply(replay: ReplayServer) -> None:
    provider = await started(replay.url, pool_size=1)
    try:
        service = provider.create_service(call_context())
        frames = await drive(
            service,
            turn(user("tell me something long")),
            SleepFrame(0.4),  # a few chunks arrive...
            InterruptionFrame(),  # ...then the caller barges in
            turn(user("tell me something long"), assistant("r1c0"), user("second question")),
            SleepFrame(0.1),
        )
        # the abandoned reply is drained in the background and its connection reused later
        await asyncio.sleep(2.5)
    finally:
        await provider.stop()
    texts = [r for r in replies(frames) if r]
    first, second = texts[0], texts[-1]
    assert first.startswith("r1c0 ") and len(first.split()) < 40  # cut off
    assert second == "r2c0 r2c1 r2c2 "  # nothing of request 1 leaked into turn 2
    assert len(replay.requests) == 2
    # turn 2 did not wait for the drain: it went out on another (pooled) connection
    assert replay.request_connections[0] != replay.request_connections[1]


async def test_barge_in_then_reuse_of_the_same_connection(replay: ReplayServer) -> None:
    provider = await started(replay.url, pool_size=1)
    try:
        service = provider.create_service(call_context())
        frames = await drive(
            service,
            turn(user("long one")),
            SleepFrame(0.3),
            InterruptionFrame(),
            SleepFrame(2.5),  # long enough for the drain to finish: the connection is reused
            turn(user("long one"), assistant("r1c0"), user("short")),
        )
    finally:
        await provider.stop()
    texts = [r for r in replies(frames) if r]
    assert texts[-1] == "r2c0 r2c1 r2c2 "
    # the drained connection carried the next request
    assert replay.request_connections[0] == replay.request_connections[1]


async def test_server_death_mid_stream_apologises_and_recovers(replay: ReplayServer) -> None:
    provider = await started(replay.url)
    try:
        service = provider.create_service(call_context())
        frames = await drive(
            service,
            turn(user("please die")),
            turn(user("please die"), assistant("r1c0 r1c1"), user("hello again")),
        )
    finally:
        await provider.stop()
    first, second = replies(frames)
    # half an answer was spoken: the caller also hears why it stopped
    assert first == "r1c0 r1c1  " + DEFAULT_APOLOGY
    assert second == "r2c0 r2c1 r2c2 "  # a new connection served the next turn


async def test_error_reply_and_refused_connection_are_apologised(replay: ReplayServer) -> None:
    provider = await started(replay.url)
    try:
        service = provider.create_service(call_context())
        frames = await drive(service, turn(user("error please")))
        assert replies(frames) == [DEFAULT_APOLOGY]
    finally:
        await provider.stop()
    # a service that is not there: not ready, apology, no hang
    url = replay.url
    await replay.stop()
    provider = await started(url, timeout=2.0)
    try:
        assert not provider.ready()
        service = provider.create_service(call_context())
        frames = await drive(service, turn(user("hello")))
        assert replies(frames) == [DEFAULT_APOLOGY]
        # the service comes up: the next turn is answered
        port = int(url.rsplit(":", 1)[1])
        back = await ReplayServer().start(port)
        try:
            frames = await drive(service, turn(user("hello")))
            assert replies(frames) == ["r1c0 r1c1 r1c2 "]
        finally:
            await back.stop()
    finally:
        await provider.stop()


def free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(condition, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not ready in time"
        await asyncio.sleep(0.05)


async def test_service_started_after_vc_makes_it_ready(smollm2: LlamaModel) -> None:
    """Start order does not matter: start() returns with the port closed, not ready; the real
    vc-llama-ws-server comes up on that port and the retry loop gets through."""
    port = free_port()
    provider = await started(f"ws://127.0.0.1:{port}", timeout=2.0)
    server = None
    try:
        assert not provider.ready()
        assert f"cannot connect to the Llama WebSocket service at ws://127.0.0.1:{port}" in (
            provider.not_ready_reason())
        await asyncio.sleep(0.7)  # a retry or two fail meanwhile
        assert not provider.ready()
        server = await LlamaWSServer([smollm2]).serve("127.0.0.1", port)
        await wait_until(provider.ready, 12)  # backoff 0.5 s doubling, capped at 10 s
        assert provider.not_ready_reason() == ""
        await wait_until(lambda: provider.pool.idle == 2, 5)  # the spare connection follows
        service = provider.create_service(call_context())
        (reply,) = replies(await drive(service, turn(user("Say hello."))))
        assert reply.strip() and reply != DEFAULT_APOLOGY
    finally:
        await provider.stop()
        if server is not None:
            server.close()
            await server.wait_closed()


async def test_slow_first_token_times_out_with_apology(replay: ReplayServer) -> None:
    replay.slow_seconds = 4.0
    provider = await started(replay.url, timeout=1.0)
    try:
        service = provider.create_service(call_context())
        frames = await drive(
            service,
            turn(user("be slow")),
            turn(user("be slow"), assistant(DEFAULT_APOLOGY), user("now quick")),
            SleepFrame(0.2),
        )
    finally:
        await provider.stop()
    first, second = replies(frames)
    assert first == DEFAULT_APOLOGY
    # the late reply to request 1 was drained, not heard in turn 2
    assert second == "r2c0 r2c1 r2c2 "


def test_legacy_ini_selects_and_configures_llama_ws(tmp_path) -> None:
    ini = tmp_path / "old.ini"
    ini.write_text(
        "[llm]\nurl = ws://llm-turkish-server:8765\nmodel = llama3.2:3b-instruct-turkish\n"
        "temperature = 0.3\nmax_tokens = 60\ntop_p = 0.9\ntimeout = 15\nstream = true\n"
        "[stt]\nprovider = fake\n[tts]\nprovider = fake\n"  # other plugins are not under test
    )
    cfg, errors = load(str(ini), fake_registry(env={}), {})
    assert not errors, [str(e) for e in errors]
    assert cfg.default_providers["llm"] == "llama-ws"
    s = cfg.providers["llm"]["llama-ws"].settings
    assert (s.url, s.model, s.temperature, s.max_tokens, s.top_p, s.timeout, s.stream) == (
        "ws://llm-turkish-server:8765",
        "llama3.2:3b-instruct-turkish",
        0.3,
        60,
        0.9,
        15.0,
        True,
    )

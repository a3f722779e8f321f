"""Start order does not matter: a provider whose service is down at startup does not stop vc;
``/readyz`` names it until the background retries get through (vc.reconnect)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httpx
import pytest

from vc.hookspecs import hookimpl
from vc.llm import DEFAULT_APOLOGY, LLMProviderError
from vc.plugins import load_plugins
from vc.providers import CallContext, ProviderError
from vc.reconnect import RemoteProvider, RemoteService, ServiceUnavailable, backoff
from vc.server import App, HTTPServer
from vc.testing import FAKE_STACK, config_from_ini, until
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech
from vc.testing.fakes import FakeLLM, FakeLLMService, FakeTTS

LOG = logging.getLogger("test.reconnect")


class Service:
    """A stand-in remote service: up or down, and how often it was probed."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0
        self.misconfigured = False

    async def probe(self) -> None:
        self.probes += 1
        if self.misconfigured:
            raise ProviderError("the service has no model 'x'")
        if not self.up:
            raise ServiceUnavailable("cannot connect to ws://service.test:1 (Connection refused)")


def test_backoff_doubles_from_half_a_second_to_ten() -> None:
    delays = backoff()
    assert [next(delays) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


async def test_remote_service_retries_until_reached_and_after_it_is_lost() -> None:
    service = Service()
    remote = RemoteService("stt test", service.probe, LOG, initial=0.02, maximum=0.05)
    await remote.start()  # returns although the service is down
    assert not remote.ready and "Connection refused" in remote.reason
    await asyncio.sleep(0.2)
    assert not remote.ready and service.probes >= 3  # retried in the background
    service.up = True
    await until(lambda: remote.ready)
    assert remote.reason == ""
    probes = service.probes
    await asyncio.sleep(0.1)
    assert service.probes == probes  # no probing while ready
    service.up = False
    remote.lost("the connection was refused")  # a call found it gone
    assert not remote.ready and remote.reason == "the connection was refused"
    service.up = True
    await until(lambda: remote.ready)
    await remote.stop()


async def test_a_reachable_but_misconfigured_service_still_stops_the_start() -> None:
    service = Service()
    service.up = service.misconfigured = True
    remote = RemoteService("llm test", service.probe, LOG)
    with pytest.raises(ProviderError, match="no model 'x'"):
        await remote.start()
    await remote.stop()


# -- through vc.server.App ------------------------------------------------------------------------

SERVICE = Service()


class FlakyLLMService(FakeLLMService):
    def __init__(self, provider: FlakyLLM, call: CallContext) -> None:
        super().__init__(provider.settings, system_prompt=call.profile.system_prompt)
        self._provider = provider

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        if not SERVICE.up:
            self._provider.remote.lost("cannot connect to ws://service.test:1")
            raise LLMProviderError("cannot connect to ws://service.test:1")
        async for part in super().stream(messages, tools):
            yield part


class FlakyLLM(RemoteProvider, FakeLLM):
    """A remote LLM whose service is the module's SERVICE."""

    name = "flaky"
    retry_initial: ClassVar[float] = 0.05
    retry_max: ClassVar[float] = 0.2

    async def probe(self) -> None:
        await SERVICE.probe()

    def create_service(self, call: CallContext) -> FlakyLLMService:
        return FlakyLLMService(self, call)


class FlakyTTS(RemoteProvider, FakeTTS):
    """A remote TTS whose service is the module's SERVICE."""

    name = "flaky"
    retry_initial: ClassVar[float] = 0.05
    retry_max: ClassVar[float] = 0.2

    async def probe(self) -> None:
        await SERVICE.probe()


class Plugin:
    @hookimpl
    def register_llm(self, register):
        register(FlakyLLM)

    @hookimpl
    def register_tts(self, register):
        register(FlakyTTS)


@pytest.fixture
async def served():
    """``await served(ini)`` -> (app, HTTP client) with SERVICE down; everything stopped after."""
    SERVICE.up, SERVICE.probes, SERVICE.misconfigured = False, 0, False
    running: list[tuple[App, HTTPServer, httpx.AsyncClient]] = []

    async def serve(ini: str) -> tuple[App, httpx.AsyncClient]:
        reg = load_plugins(env={"VC_PLUGIN_MODULES": "vc.testing.fakes"}, eps=[], extra=[("flaky", Plugin())])
        app = App(config_from_ini(FAKE_STACK + ini, reg), reg)
        http = HTTPServer(app, "127.0.0.1", 0)
        await http.start()
        client = httpx.AsyncClient(base_url=http.url)
        running.append((app, http, client))
        return app, client

    yield serve
    for app, http, client in running:
        await client.aclose()
        await app.stop()
        await http.stop()


async def test_readyz_names_the_unreachable_provider_until_its_service_answers(served) -> None:
    app, client = await served("[llm]\nprovider = flaky\n[server]\ndrain_timeout = 1\n")
    await app.start()  # the LLM's service is down: vc starts anyway
    r = await client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["llm.flaky"] is False and body["checks"]["engine"] is True
    assert body["checks"]["stt.fake"] is True and body["checks"]["tts.fake"] is True
    assert body["not_ready"] == {
        "llm.flaky": "cannot connect to ws://service.test:1 (Connection refused)"
    }
    # A call arriving meanwhile is taken: it hears the greeting, then the apology for its turn.
    conn = LoopbackConnection()
    task = await run_loopback_call(app.engine, conn)
    await conn.wait_for_bot_audio(0, timeout=10)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("hello there", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence()
    session = app.engine.sessions[conn.info.call_id]
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert said[-1] == DEFAULT_APOLOGY
    # The service comes up: a retry gets through, /readyz turns 200, the next turn is answered.
    SERVICE.up = True
    await until(app.engine.ready)
    r = await client.get("/readyz")
    assert r.status_code == 200 and "not_ready" not in r.json() and r.json()["checks"]["llm.flaky"]
    end = conn.say(speech("are you back", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence()
    said = [m["content"] for m in session.context.get_messages() if m["role"] == "assistant"]
    assert said[-1].startswith("You said:"), said
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()


async def test_a_tts_that_is_down_refuses_calls_and_greets_once_it_is_up(served) -> None:
    app, client = await served("[tts]\nprovider = flaky\n")
    await app.start()
    body = (await client.get("/readyz")).json()
    assert body["not_ready"] == {
        "tts.flaky": "cannot connect to ws://service.test:1 (Connection refused)",
        "greeting.default": "waiting for tts flaky",
    }
    # Nothing could be said to a caller, not even an apology: the call is refused cleanly.
    conn = LoopbackConnection()
    with pytest.raises(ProviderError, match="tts provider 'flaky' is not ready"):
        await app.engine.run_call(conn)
    assert app.engine.sessions == {}
    SERVICE.up = True
    await until(app.engine.ready)  # the greeting is rendered as soon as the TTS is up
    assert "default" in app.engine.greetings
    assert (await client.get("/readyz")).status_code == 200
    task = await run_loopback_call(app.engine, conn)
    await conn.wait_for_bot_audio(0, timeout=5)  # the pre-rendered greeting
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()

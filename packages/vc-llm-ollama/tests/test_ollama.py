"""vc-llm-ollama with the official ollama client against the Ollama-API stand-in."""

from __future__ import annotations

import asyncio
import re

import pytest
from ollama_server import FakeOllama
from pipecat.frames.frames import InterruptionFrame
from pipecat.tests.utils import SleepFrame
from vc_llm_ollama.models import OllamaModels
from vc_llm_ollama.provider import OllamaProvider, OllamaSettings

from vc.llm import DEFAULT_APOLOGY
from vc.providers import ProviderError
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech
from vc.testing.contracts import LLMContract
from vc.testing.services import assistant, call_context, drive, profile, provider_context, replies, turn, user

END_CALL = {
    "type": "function",
    "function": {
        "name": "end_call",
        "description": "End the call.",
        "parameters": {"type": "object", "properties": {}},
    },
}


async def started(server: FakeOllama, *profiles, **kw) -> OllamaProvider:
    kw.setdefault("model", "smollm2")
    provider = OllamaProvider(OllamaSettings(host=server.host, **kw), provider_context(*profiles))
    await provider.start()
    return provider


def chats(server: FakeOllama) -> list[dict]:
    return [body for kind, body in server.requests if kind == "chat"]


async def test_start_verifies_and_warms_the_model(fake_ollama: FakeOllama) -> None:
    provider = await started(fake_ollama, keep_alive="45m")
    try:
        assert provider.ready()
        (warm,) = chats(fake_ollama)
        assert warm["keep_alive"] == "45m" and warm["options"] == {"num_predict": 1}
        assert warm["messages"][0] == {"role": "system", "content": profile().system_prompt}
    finally:
        await provider.stop()


async def test_missing_model_is_a_clear_error_or_pulled(fake_ollama: FakeOllama) -> None:
    with pytest.raises(ProviderError, match=r"vc models prepare ollama:smollm2-copy"):
        await started(fake_ollama, model="smollm2-copy")
    provider = await started(fake_ollama, model="smollm2-copy", missing_model="pull")
    try:
        assert provider.ready()
        assert (
            "pull",
            {"model": "smollm2-copy", "insecure": False, "stream": True},
        ) in fake_ollama.requests
    finally:
        await provider.stop()
    with pytest.raises(ProviderError, match="does not exist"):
        await started(fake_ollama, model="no-such-model", missing_model="pull")


async def test_server_started_after_vc_makes_it_ready() -> None:
    """Start order does not matter: with nothing listening, start() returns, not ready (and
    says why), a turn is apologised for; the server comes up on that port, the retry loop checks
    and warms the model, and the next turn is answered."""
    server = await FakeOllama().start()
    await server.stop()  # nothing listens on that port any more
    provider = await started(server)
    back = None
    try:
        assert not provider.ready()
        assert re.fullmatch(r"cannot connect to Ollama at http://127\.0\.0\.1:\d+ .*",
                            provider.not_ready_reason())
        service = provider.create_service(call_context())
        (apology,) = replies(await drive(service, turn(user("Hi"))))
        assert apology == DEFAULT_APOLOGY
        back = await FakeOllama().start(server.port)
        deadline = asyncio.get_running_loop().time() + 12  # backoff 0.5 s doubling to 10 s
        while not provider.ready():
            assert asyncio.get_running_loop().time() < deadline, provider.not_ready_reason()
            await asyncio.sleep(0.05)
        assert provider.models == ["smollm2"] and chats(back)  # checked and warmed
        (answer,) = replies(await drive(service, turn(user("Hi"))))
        assert answer.strip() and answer != DEFAULT_APOLOGY
    finally:
        await provider.stop()
        if back is not None:
            await back.stop()


async def test_a_server_that_goes_away_turns_not_ready_until_it_is_back(
    fake_ollama: FakeOllama,
) -> None:
    provider = await started(fake_ollama)
    port = fake_ollama.port
    back = None
    try:
        assert provider.ready()
        await fake_ollama.stop()
        service = provider.create_service(call_context())
        (apology,) = replies(await drive(service, turn(user("Hi"))))
        assert apology == DEFAULT_APOLOGY and not provider.ready()  # /readyz would say so
        back = await FakeOllama().start(port)
        deadline = asyncio.get_running_loop().time() + 12
        while not provider.ready():
            assert asyncio.get_running_loop().time() < deadline, provider.not_ready_reason()
            await asyncio.sleep(0.05)
    finally:
        await provider.stop()
        if back is not None:
            await back.stop()


async def test_streams_with_history_options_and_per_profile_model(fake_ollama: FakeOllama) -> None:
    fake_ollama.installed.add("smollm2-copy:latest")
    special = profile(llm="ollama", llm_model="smollm2-copy", temperature=0.0, max_tokens=30)
    provider = await started(
        fake_ollama, profile(), special, top_p=0.9, num_ctx=1024, seed=3, stop=["\n\n"]
    )
    try:
        service = provider.create_service(call_context(special))
        first = [assistant("Hello! How can I help you today?"), user("Hi, my name is Alice.")]
        (answer,) = replies(await drive(service, turn(*first)))
        second = [*first, assistant(answer), user("What is my name?")]
        (answer2,) = replies(await drive(service, turn(*second)))
        (control,) = replies(await drive(service, turn(user("What is my name?"))))
    finally:
        await provider.stop()
    calls = chats(fake_ollama)[-3:]
    assert {c["model"] for c in calls} == {"smollm2-copy"}
    assert calls[0]["options"] == {
        "temperature": 0.0,
        "num_predict": 30,
        "top_p": 0.9,
        "num_ctx": 1024,
        "seed": 3,
        "stop": ["\n\n"],
    }
    assert calls[0]["stream"] is True and calls[0]["keep_alive"] == "30m"
    sent = calls[1]["messages"]
    assert sent[0]["role"] == "system"
    assert [m["content"] for m in sent[1:]] == [m["content"] for m in second]
    # greedy decoding: the first turn changed the second answer
    assert answer.strip() and answer2.strip() and answer2 != control
    assert service.stats[0]["eval_count"] > 0 and service.stats[0]["done_reason"] == "stop"


async def test_tool_call_reaches_the_service(fake_ollama: FakeOllama) -> None:
    fake_ollama.tool_call_word = "goodbye"
    provider = await started(fake_ollama)
    try:
        service = provider.create_service(call_context())
        got = [item async for item in service.stream([user("ok goodbye")], [END_CALL])]
    finally:
        await provider.stop()
    assert got[0] == "Goodbye!"
    assert [(c.name, c.arguments) for c in got[1:]] == [("end_call", {})]
    assert chats(fake_ollama)[-1]["tools"][0]["function"]["name"] == "end_call"


async def test_barge_in_closes_the_stream_and_server_stops(fake_ollama: FakeOllama) -> None:
    provider = await started(fake_ollama, num_predict=400, seed=5)
    try:
        service = provider.create_service(call_context())
        frames = await drive(
            service,
            turn(user("Tell me a very long story about the sea and the ships.")),
            SleepFrame(0.4),
            InterruptionFrame(),
            turn(user("Tell me a story."), assistant("Once"), user("Stop. Hello.")),
        )
        for _ in range(100):  # the server notices the closed stream at its next write
            if fake_ollama.disconnects:
                break
            await asyncio.sleep(0.05)
    finally:
        await provider.stop()
    assert fake_ollama.disconnects == 1  # generation stopped server-side
    texts = [r for r in replies(frames) if r]
    assert texts[-1].strip() and service.stats[-1]["done_reason"] == "stop"


async def test_server_death_mid_stream_then_recovery(fake_ollama: FakeOllama) -> None:
    fake_ollama.die_after = 2
    provider = await started(fake_ollama, seed=1)
    try:
        service = provider.create_service(call_context())
        (first,) = replies(await drive(service, turn(user("Tell me about the weather today."))))
        fake_ollama.die_after = None
        (second,) = replies(await drive(service, turn(user("Hello?"))))
    finally:
        await provider.stop()
    # half an answer was spoken, then the apology says why it stopped
    assert first.endswith(" " + DEFAULT_APOLOGY) and first != " " + DEFAULT_APOLOGY
    assert second.strip() and DEFAULT_APOLOGY not in second


async def test_slow_first_token_and_server_gone_are_apologised(fake_ollama: FakeOllama) -> None:
    provider = await started(fake_ollama, first_token_timeout=1.0, apology="One moment, sorry.")
    try:
        service = provider.create_service(call_context())
        fake_ollama.first_token_delay = 3.0
        (slow,) = replies(await drive(service, turn(user("Hi"))))
        fake_ollama.first_token_delay = 0.0
        port = fake_ollama.port
        await fake_ollama.stop()
        (gone,) = replies(await drive(service, turn(user("Hi"))))
        back = await FakeOllama().start(port)
        try:
            (again,) = replies(await drive(service, turn(user("Hi"))))
        finally:
            await back.stop()
    finally:
        await provider.stop()
    assert slow == "One moment, sorry." and gone == "One moment, sorry."
    assert again.strip() and again != "One moment, sorry."


async def test_model_catalog_list_show_pull(fake_ollama: FakeOllama) -> None:
    catalog = OllamaModels(fake_ollama.host)
    rows = await asyncio.to_thread(catalog.list)
    assert [r.name for r in rows] == ["ollama:smollm2:latest"] and "Q4_1" in rows[0].detail
    shown = await asyncio.to_thread(catalog.show, "ollama:smollm2")
    assert shown["details"]["family"] == "llama"
    with pytest.raises(ProviderError, match="not on the Ollama server"):
        await asyncio.to_thread(catalog.show, "ollama:absent")
    progress: list[tuple[int, int]] = []
    where = await asyncio.to_thread(
        catalog.prepare, "ollama:smollm2-copy", lambda d, t: progress.append((d, t))
    )
    assert "smollm2-copy" in where and "smollm2-copy:latest" in fake_ollama.installed
    fractions = [d / t for d, t in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 5


async def test_models_pull_command(fake_ollama: FakeOllama) -> None:
    import click
    from click.testing import CliRunner
    from vc_llm_ollama.plugin import register_commands

    @click.group()
    def cli() -> None: ...

    @cli.group("models")
    def models() -> None: ...

    register_commands(cli=cli)
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, cli, ["models", "pull", "ollama:smollm2-copy", "--host", fake_ollama.host]
    )
    assert result.exit_code == 0, result.output
    assert "ready on" in result.output
    result = await asyncio.to_thread(
        runner.invoke, cli, ["models", "show", "ollama:smollm2", "--host", fake_ollama.host]
    )
    assert result.exit_code == 0 and '"family": "llama"' in result.output


def test_models_pull_and_show_report_provider_errors_in_one_line() -> None:
    import socket

    import click
    from click.testing import CliRunner
    from vc_llm_ollama.plugin import register_commands

    @click.group()
    def cli() -> None: ...

    @cli.group("models")
    def models() -> None: ...

    register_commands(cli=cli)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{s.getsockname()[1]}"
    for command in ("pull", "show"):
        result = CliRunner().invoke(cli, ["models", command, "ollama:smollm2", "--host", host])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        assert result.stderr == (
            f"ollama:smollm2: {'pulling ' + repr('smollm2') + ': ' if command == 'pull' else ''}"
            f"cannot connect to Ollama at {host} (is `ollama serve` running there?)\n"
        )


async def test_model_asks_to_end_a_real_call(vc_engine_factory, fake_ollama: FakeOllama) -> None:
    """VAD -> (scripted) STT -> ollama (scripted tool call) -> TTS; end_call hangs up."""
    fake_ollama.tool_call_word = "goodbye"
    engine = await vc_engine_factory(
        "[vc]\ntransports =\n"
        "[stt]\nprovider = fake\nscript = ok goodbye then\n[turn]\nend = silence\n"
        f"[llm]\nprovider = ollama\nhost = {fake_ollama.host}\nmodel = smollm2\n"
        "[tts]\nprovider = fake\nms_per_char = 10\n"
    )
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    try:
        await conn.wait_for_bot_silence(timeout=60)
        conn.say(speech("ok goodbye then"))
        await conn.wait_for_hangup(60)
        assert conn.hangups, "end_call did not hang up"
        outcome = await asyncio.wait_for(task, 30)
    finally:
        await conn.stop()
        if not task.done():
            task.cancel()
    assert outcome == "completed"
    assert any(c.get("tools") for c in chats(fake_ollama))


class TestOllamaContract(LLMContract):
    provider = OllamaProvider

    @pytest.fixture(autouse=True)
    def _server(self, fake_ollama: FakeOllama) -> None:
        self.host = fake_ollama.host

    def make_settings(self) -> OllamaSettings:
        return OllamaSettings(host=self.host, model="smollm2")


async def test_model_removed_from_server_is_apologised_then_recovers(
    fake_ollama: FakeOllama,
) -> None:
    provider = await started(fake_ollama)
    try:
        service = provider.create_service(call_context())
        fake_ollama.installed.discard("smollm2:latest")  # someone ran `ollama rm`
        with pytest.raises(Exception, match=r"not on the Ollama server .* ollama:smollm2"):
            _ = [x async for x in service.stream([user("Hi")], [])]
        (apology,) = replies(await drive(service, turn(user("Hi"))))
        fake_ollama.installed.add("smollm2:latest")  # pulled again
        (answer,) = replies(await drive(service, turn(user("Hi"))))
    finally:
        await provider.stop()
    assert apology == DEFAULT_APOLOGY
    assert answer.strip() and answer != DEFAULT_APOLOGY


async def test_a_turkish_call_hears_the_turkish_apology() -> None:
    """Issue 14: the apology is the profile's phrase, in its language; an apology the
    operator set on the provider wins over the catalogue, the profile's own key over both."""
    turkish = "Özür dilerim, bir sorun oluştu. Lütfen tekrar eder misiniz?"
    assert profile("tr").apology == turkish
    server = await FakeOllama().start()
    await server.stop()  # nothing answers: the turn is apologised for
    provider = await started(server)
    try:
        service = provider.create_service(call_context("tr"))
        (apology,) = replies(await drive(service, turn(user("Merhaba"))))
    finally:
        await provider.stop()
    assert apology == turkish

    reg = fake_registry()
    base = FAKE_STACK.replace("[llm]\nprovider = fake", "[llm]\nprovider = ollama")
    cfg = config_from_ini(base + "[profile.default]\nlanguage = tr\n", reg)
    assert cfg.profiles[-1].apology == turkish
    cfg = config_from_ini(
        base + "[llm.ollama]\napology = Bir dakika lütfen.\n[profile.default]\nlanguage = tr\n"
        "[profile.own]\nlanguage = tr\nmatch.to = +90*\napology = Kusura bakmayın.\n", reg
    )
    by_name = {p.name: p for p in cfg.profiles}
    assert by_name["default"].apology == "Bir dakika lütfen."
    assert by_name["own"].apology == "Kusura bakmayın."

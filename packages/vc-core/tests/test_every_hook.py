"""Each hook of vc.hookspecs, implemented by a plugin and seen to take effect."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import attrs
from click.testing import CliRunner

from vc import cli
from vc.call import CallInfo
from vc.engine import Engine
from vc.hookspecs import hookimpl
from vc.providers import ModelCatalog, ModelInfo, Observer, Tool, ToolCall, TransportProvider
from vc.server import App
from vc.settings import setting
from vc.testing import FAKE_STACK, config_from_ini, fake_registry
from vc.testing.calls import LoopbackConnection, run_loopback_call, speech
from vc.testing.fakes import FakeLLM, FakeSTT, FakeTTS


class Seen(Observer):
    name = "seen"
    log: ClassVar[list[tuple[str, Any]]] = []

    def call_started(self, info: CallInfo, profile: str) -> None:
        self.log.append(("started", profile))

    def call_ended(self, info: CallInfo, outcome: str, duration: float) -> None:
        self.log.append(("ended", outcome))

    def latency(self, info: CallInfo, stage: str, seconds: float) -> None:
        self.log.append(("latency", stage))

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        self.log.append((name, data))


class Exploding(Observer):
    name = "exploding"

    def event(self, info: CallInfo, name: str, data: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")


async def lookup_order(call: ToolCall) -> dict[str, Any]:
    return {"order": call.arguments["order"], "status": "shipped"}


@attrs.define
class PagerSettings:
    port: int = setting(0, help="port")


class Pager(TransportProvider):
    """A transport that takes no calls: enough to see the hook and the lifecycle."""

    name = "pager"
    Settings = PagerSettings
    description = "test transport"
    started: ClassVar[int] = 0

    async def start(self, host: Any) -> None:
        await super().start(host)
        Pager.started += 1


class MyStt(FakeSTT):
    name = "my-stt"


class MyLlm(FakeLLM):
    name = "my-llm"


class MyTts(FakeTTS):
    name = "my-tts"


class Catalog(ModelCatalog):
    name = "mine"
    prepared: ClassVar[list[str]] = []

    def list(self) -> list[ModelInfo]:
        return [ModelInfo("mine-small", "stt", True, "/models/small"),
                ModelInfo("mine-large", "stt", False, install_hint="pip install mine-large")]

    def prepare(self, model: str, progress) -> str:
        progress(50, 100)
        progress(100, 100)
        self.prepared.append(model)
        return f"/models/{model}"


class EveryHook:
    @hookimpl
    def register_transports(self, register):
        register(Pager)

    @hookimpl
    def register_stt(self, register):
        register(MyStt)

    @hookimpl
    def register_llm(self, register):
        register(MyLlm)

    @hookimpl
    def register_tts(self, register):
        register(MyTts)

    @hookimpl
    def register_observers(self, register):
        register(Seen)
        register(Exploding)

    @hookimpl
    def register_tools(self, register):
        register(Tool("lookup_order", "Look up an order", lookup_order,
                      {"order": {"type": "string"}}, ("order",)))

    @hookimpl
    def register_models(self, register):
        register(Catalog())

    @hookimpl
    def register_commands(self, cli):
        @cli.command("hello")
        def hello() -> None:
            """Say hello (added by a plugin)."""
            print("hello from a plugin")


INI = """
[vc]
transports = pager
[stt]
provider = my-stt
[llm]
provider = my-llm
[tts]
provider = my-tts
[stt.my-stt]
script = please use the lookup_order tool
[turn]
end = silence
[profile.default]
tools = end_call, lookup_order
"""


def registry():
    return fake_registry(extra=[("every-hook", EveryHook())])


async def test_providers_observers_and_tools_take_part_in_a_call() -> None:
    reg = registry()
    app = App(config_from_ini(INI, reg), reg)
    await app.start()
    assert Pager.started == 1 and app.checks()["transport.pager"]
    engine: Engine = app.engine
    conn = LoopbackConnection()
    task = await run_loopback_call(engine, conn)
    await conn.wait_for_bot_silence()
    end = conn.say(speech("where is my order", 8000))
    await conn.wait_for_bot_audio(end, timeout=15)
    await conn.wait_for_bot_silence()
    messages = engine.sessions[conn.info.call_id].context.get_messages()
    assert messages[-1]["role"] == "assistant"
    assert "shipped" in messages[-1]["content"]  # the LLM answered from the plugin tool's result
    conn.caller_hangs_up()
    await asyncio.wait_for(task, 10)
    await conn.stop()
    await app.stop()
    kinds = [k for k, _ in Seen.log]
    assert kinds[0] == "started" and ("ended", "completed") in Seen.log
    assert ("tool_call", {"name": "lookup_order", "arguments": {"order": "42"}}) in Seen.log
    assert "latency" in kinds and "transcript" in kinds
    # The exploding observer was counted, not allowed to break the call.
    errors = engine.metrics.observer_errors.labels("exploding")._value.get()
    assert errors > 0


def test_model_catalogues_feed_vc_models(monkeypatch) -> None:
    monkeypatch.setattr("vc.plugins._loaded", registry())
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli.cli, ["models", "list", "--json"]).stdout)
    mine = {m["name"]: m["installed"] for m in listed if m["name"].startswith("mine-")}
    assert mine == {"mine-small": True, "mine-large": False}
    out = runner.invoke(cli.cli, ["models", "prepare", "mine-large"])
    assert out.exit_code == 0 and "mine-large: ready at /models/mine-large" in out.output
    assert Catalog.prepared == ["mine-large"]
    missing = runner.invoke(cli.cli, ["models", "prepare", "nope"])
    assert missing.exit_code == 1 and "unknown model 'nope'" in missing.output


def test_plugins_add_commands(monkeypatch) -> None:
    reg = registry()
    monkeypatch.setattr("vc.plugins._loaded", reg)
    cli.add_plugin_commands(reg)
    try:
        out = CliRunner().invoke(cli.cli, ["hello"])
        assert out.exit_code == 0 and out.output == "hello from a plugin\n"
    finally:
        cli.cli.commands.pop("hello", None)


def test_a_plugin_failing_to_add_commands_does_not_break_the_cli(monkeypatch, capsys) -> None:
    class Bad:
        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("nope")

    reg = fake_registry(extra=[("bad-commands", Bad())])
    cli.add_plugin_commands(reg)
    assert "plugin bad-commands failed to add commands: nope" in capsys.readouterr().err


def test_fake_stack_constant_is_valid() -> None:
    assert "provider = fake" in FAKE_STACK
    assert Path(cli.__file__).exists()

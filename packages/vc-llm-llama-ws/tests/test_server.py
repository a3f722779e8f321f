"""The llama-ws client against the shipped vc-llama-ws-server, answering from real SmolLM2."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from vc_llm_llama_ws.client import LlamaWSProvider, LlamaWSSettings
from vc_llm_llama_ws.generation import LlamaModel
from vc_llm_llama_ws.server import Knowledge, LlamaWSServer, parse_args
from websockets.asyncio.client import connect

from vc.testing.contracts import LLMContract
from vc.testing.services import assistant, call_context, drive, profile, provider_context, replies, turn, user


@pytest.fixture
def url(llama_server: tuple[LlamaWSServer, str]) -> str:
    return llama_server[1]


async def started(url: str, **kw) -> LlamaWSProvider:
    provider = LlamaWSProvider(LlamaWSSettings(url=url, **kw), provider_context())
    await provider.start()
    return provider


async def test_streams_reply_over_a_pooled_connection(url: str) -> None:
    provider = await started(url)
    try:
        assert provider.ready() and provider.pool.idle == 2  # opened before any call
        service = provider.create_service(call_context())
        frames = await drive(service, turn(user("Say hello.")))
        (text,) = replies(frames)
        assert text.strip()
        assert service.ttft and service.requests[0].stream
    finally:
        await provider.stop()


async def test_history_reaches_the_model_and_shapes_turn_two(
    llama_server: tuple[LlamaWSServer, str],
) -> None:
    server, url = llama_server
    provider = await started(url)
    try:
        service = provider.create_service(call_context(profile(temperature=0.0)))
        first = [user("Hi, my name is Alice.")]
        frames = await drive(service, turn(*first))
        (answer,) = replies(frames)
        second = [*first, assistant(answer), user("What is my name?")]
        frames = await drive(service, turn(*second))
        (answer2,) = replies(frames)
        cached = server.recent[-1].cached_tokens
        # control: the same question without the first turn
        (control,) = replies(await drive(service, turn(user("What is my name?"))))
    finally:
        await provider.stop()
    sent = service.requests[1].messages
    assert sent[0]["role"] == "system"  # the profile's system prompt, then the whole history
    assert [m["content"] for m in sent[1:]] == [m["content"] for m in second]
    assert cached > len(service.requests[0].messages)  # turn 1 was reused from the KV cache
    # greedy decoding is deterministic: the history changed the answer (SmolLM2-135M is too
    # weak to be relied on to repeat the name; the slow Qwen test checks that)
    assert answer2.strip() and answer2 != control


async def test_legacy_prompt_form_and_errors_on_the_raw_socket(url: str) -> None:
    async with connect(url) as ws:
        await ws.send(json.dumps({"prompt": "Say yes.", "system_prompt": "Answer with one word."}))
        chunks, done = [], False
        while not done:
            msg = json.loads(await ws.recv())
            chunks += [msg["chunk"]] if "chunk" in msg else []
            done = bool(msg.get("done"))
        assert "".join(chunks).strip()
        # bad input: a clear error, and the connection keeps working
        await ws.send("{not json")
        assert "not JSON" in json.loads(await ws.recv())["error"]
        await ws.send(
            json.dumps(
                {"messages": [{"role": "user", "content": "Hi"}], "stream": False, "max_tokens": 8}
            )
        )
        whole = json.loads(await ws.recv())
        assert whole["chunk"].strip()
        assert json.loads(await ws.recv()) == {"done": True}


async def test_client_leaving_mid_reply_stops_generation(
    llama_server: tuple[LlamaWSServer, str],
) -> None:
    server, url = llama_server
    async with connect(url) as ws:
        await ws.send(json.dumps({"messages": [{"role": "user", "content": "Tell a long story."}],
                                  "max_tokens": 400, "temperature": 0.8}))
        for _ in range(3):
            assert "chunk" in json.loads(await ws.recv())
        stats = server.recent[-1]
    for _ in range(200):  # the server notices at its next send
        if stats.seconds:
            break
        await asyncio.sleep(0.05)
    assert stats.cancelled and stats.completion_tokens < 400


async def test_rag_context_only_when_configured(smollm2: LlamaModel, tmp_path: Path) -> None:
    facts = tmp_path / "facts.txt"
    facts.write_text("The shop opens at nine in the morning.\n\nParking is free behind the shop.\n")
    server = LlamaWSServer([smollm2], knowledge=Knowledge.from_file(facts, top_k=1))
    bare = LlamaWSServer([smollm2])
    ws_rag, ws_bare = await server.serve("127.0.0.1", 0), await bare.serve("127.0.0.1", 0)
    try:
        for ws, expect in ((ws_rag, True), (ws_bare, False)):
            port = next(iter(ws.sockets)).getsockname()[1]
            provider = await started(f"ws://127.0.0.1:{port}", use_rag=True)
            try:
                service = provider.create_service(call_context())
                await drive(service, turn(user("When does the shop open?")))
            finally:
                await provider.stop()
            assert bool(service.rag_contexts) is expect
            if expect:
                assert service.rag_contexts == ["The shop opens at nine in the morning."]
    finally:
        for ws in (ws_rag, ws_bare):
            ws.close()
            await ws.wait_closed()


async def test_health_endpoint(url: str) -> None:
    health = url.replace("ws://", "http://") + "/health"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(health, timeout=30).read())
    info = json.loads(body)
    assert info["status"] == "ok" and info["model"] == "smollm2"


def test_server_options_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VC_LLAMA_WS_PORT", "9001")
    monkeypatch.setenv("VC_LLAMA_WS_MODEL", "qwen2.5-0.5b")
    args = parse_args([])
    assert args.port == 9001 and args.model == ["qwen2.5-0.5b"]
    assert parse_args(["--model", "smollm2", "--port", "0"]).model == ["smollm2"]


class TestLlamaWSContract(LLMContract):
    provider = LlamaWSProvider

    @pytest.fixture(autouse=True)
    def _server(self, llama_server: tuple[LlamaWSServer, str]) -> None:
        self.url = llama_server[1]

    def make_settings(self) -> LlamaWSSettings:
        return LlamaWSSettings(url=self.url)


async def test_console_script_serves_and_stops(tmp_path: Path) -> None:
    """`vc-llama-ws-server` as a process: listens, answers, reports health, exits on SIGTERM."""
    import os
    import shutil
    import signal
    import sys

    exe = shutil.which("vc-llama-ws-server") or os.path.join(
        os.path.dirname(sys.executable), "vc-llama-ws-server"
    )
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-tokens",
        "12",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        line = ""
        while "vc-llama-ws-server listening on" not in line:
            raw = await asyncio.wait_for(proc.stdout.readline(), 120)
            assert raw, "server exited before listening"
            line = raw.decode()
        url = line.split("listening on ")[1].strip()
        provider = await started(url)
        try:
            service = provider.create_service(call_context())
            (text,) = replies(await drive(service, turn(user("Hello!"))))
        finally:
            await provider.stop()
        assert text.strip()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_console_script_reports_a_missing_model() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "vc_llm_llama_ws.server", "--model", "/nowhere/x.gguf"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "neither a packaged model" in result.stderr and "Traceback" not in result.stderr

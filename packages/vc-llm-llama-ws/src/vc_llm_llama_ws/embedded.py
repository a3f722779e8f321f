"""``llama-cpp``: the embedded LLM - llama.cpp in vc's own process, vc's default LLM."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import attrs

from vc.llm import StreamingLLMService, ToolCallRequest
from vc.providers import CallContext, LLMProvider, ProviderError
from vc.settings import setting
from vc_llm_llama_ws.common import (
    apology_setting,
    first_token_timeout_setting,
    service_kwargs,
    token_timeout_setting,
)
from vc_llm_llama_ws.farewell import DEFAULT_FAREWELLS, FarewellDetector
from vc_llm_llama_ws.generation import (
    Generation,
    LlamaModel,
    Sampling,
    ToolCallParser,
    ToolCallText,
    default_threads,
    require_llama_cpp,
)
from vc_llm_llama_ws.models import DEFAULT_MODEL, canonical, resolve_model
from vc_llm_llama_ws.supervisor import ModelSpec, RemoteModel, WorkerProcess

ToolMode = Literal["farewell", "native", "off"]
Isolation = Literal["process", "thread"]
ThreadWait = Literal["sleep", "spin"]


def embedded_threads() -> int:
    """llama.cpp threads of the embedded model: half the usable cores, at least one.

    The model shares the process's CPU with the STT, the TTS and the calls' VADs, and
    llama.cpp's threads spin while they wait for each other at every layer: with a thread per
    core, each token waits for whichever thread the OS gave to Piper or Whisper. Measured on
    2 shared cores (bench/, 12 turns each, interleaved): voice to voice p50/p95 5.1 s / 14.2 s
    with 2 threads, 1.9 s / 2.8 s with 1.
    """
    return max(1, default_threads() // 2)


@attrs.define
class LlamaCppSettings:
    model: str = setting(
        DEFAULT_MODEL, help="packaged model name (smollm2, qwen2.5-0.5b) or a GGUF path"
    )
    n_ctx: int = setting(2048, min=128, max=1 << 20, help="context window in tokens (prompt + reply)")
    n_threads: int = setting(
        0, min=0, max=1024,
        help="CPU threads for llama.cpp (0: half the cores this process may use, at least "
        "one: the model shares them with the STT, the TTS and every call's VAD)",
    )
    n_threads_batch: int = setting(
        0, min=0, max=1024,
        help="CPU threads evaluating a turn's prompt while its call is the only one (0: every "
        "core this process may use where thread_wait = sleep, isolation = process and "
        "parallel > 1, else n_threads); other batches use n_threads",
    )
    thread_wait: ThreadWait = setting(
        "sleep",
        help="how llama.cpp's idle threads wait between steps (isolation = process): sleep "
        "(OMP_WAIT_POLICY=passive in the child, after spin_count checks) leaves the core to the "
        "STT and the TTS; spin keeps OpenMP's own default (spin a while, then sleep)",
    )
    spin_count: int = setting(
        0, min=0, max=1 << 40,
        help="thread_wait = sleep: how often an idle llama.cpp thread checks for work before it "
        "sleeps (libgomp's GOMP_SPINCOUNT in the child; about 100,000 a millisecond). The "
        "threads of a prompt meet at every step of every layer: a short spin (10000) saves a "
        "sleep and a wake-up at each (a 13-token prompt on 2 cores: ~60 ms instead of ~110) and "
        "still leaves the core idle between replies; not the default yet, because the faster "
        "reply then beats more callers who pause mid-sentence (bench/README.md). 0: sleep at once",
    )
    parallel: int = setting(
        8, min=1, max=64,
        help="conversations the model answers at once: parallel llama.cpp sequences decoded in "
        "one batch, each call's history kept in the cache between its turns (1: one reply at "
        "a time, in order of arrival, one shared cache). Keep it at or above the simultaneous "
        "calls: each call beyond it evicts another's history, which is then evaluated again "
        "(the KV cache holds parallel x n_ctx tokens: ~23 KB each for SmolLM2, ~28 KB for "
        "Qwen2.5-1.5B)",
    )
    temperature: float = setting(
        0.2, min=0, max=5,
        help="sampling temperature (a profile's temperature wins)",
    )
    max_tokens: int = setting(
        80, min=1, max=8192, help="cap on a reply's length in tokens (a profile's max_tokens wins)"
    )
    top_p: float = setting(0.95, min=0, max=1, help="nucleus sampling probability")
    repeat_penalty: float = setting(
        1.1, min=0, max=10,
        help="penalty for repeating recent tokens (1.0: none)",
    )
    stop: list[str] = setting(factory=list, help="extra stop strings (comma separated)")
    seed: int | None = setting(
        None, min=-(1 << 31), max=(1 << 32) - 1,
        help="sampling seed for reproducible replies (empty: random)",
    )
    chat_format: str = setting(
        "",
        help="llama-cpp-python chat format (chatml, llama-3, ...); empty: the GGUF's own template",
    )
    tool_calls: ToolMode = setting(
        "farewell",
        help="farewell: end the call after the reply when the caller says goodbye; "
        "native: the model's <tool_call> output (needs a tool-capable model); off: no tools",
    )
    farewells: list[str] = setting(
        factory=lambda: list(DEFAULT_FAREWELLS),
        help="phrases that count as a goodbye (farewell mode)",
    )
    farewell_confirm: bool = setting(
        False, help="farewell mode: hang up only if the model's reply says goodbye too"
    )
    warm: bool = setting(
        True, help="evaluate the profiles' system prompts and greetings at startup (hot KV cache); "
        "isolation = process: after the child reports ready, before it reads the first request"
    )
    isolation: Isolation = setting(
        "process",
        help="process: run llama.cpp in a supervised child process, restarted if it dies (a "
        "native crash costs the turns in flight an apology, not every call); thread: in vc's "
        "own process (no extra process; a crash ends vc)",
    )
    first_token_timeout: float = first_token_timeout_setting(20.0)
    token_timeout: float = token_timeout_setting(10.0)
    apology: str = apology_setting()


def prompt_threads(s: LlamaCppSettings) -> int:
    """Threads evaluating a prompt while its call is the only one up (vc_llm_llama_ws.batched
    uses n_threads for everything else): every usable core where idle threads sleep.

    On 2 Intel cores (bench/README.md, 2026-12-06) this took the first token from ~300 to
    ~210 ms; with spinning threads, or with every batch on both cores while other calls' STT
    and TTS ran, turns stalled.
    """
    if s.n_threads_batch:
        return s.n_threads_batch
    if s.isolation == "process" and s.thread_wait == "sleep" and s.parallel > 1:
        return default_threads()
    return s.n_threads or embedded_threads()


def worker_env(s: LlamaCppSettings) -> dict[str, str]:
    """The child's OpenMP settings: libgomp reads them once, when llama.cpp loads.

    ``sleep``: idle threads sleep (passive), after ``spin_count`` checks for work; libgomp's
    own count wins over the passive policy's 0. Other OpenMP runtimes ignore the count.
    """
    if s.thread_wait != "sleep":
        return {}
    return {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": str(s.spin_count)}


class LlamaCppService(StreamingLLMService):
    """One call's LLM: generations on the shared in-process model."""

    def __init__(
        self, provider: LlamaCppProvider, model: LlamaModel | RemoteModel, call: CallContext
    ) -> None:
        s = provider.settings
        super().__init__(**service_kwargs(s, call), model=model.name, top_p=s.top_p, seed=s.seed)
        self._provider = provider
        self._model = model
        self._call = call
        self._tool_mode: ToolMode = provider.tool_mode
        self._farewell = FarewellDetector(s.farewells, str(call.profile.language or ""))
        self._confirm = s.farewell_confirm
        #: one entry per reply (token counts, cache hits, timings), read by tests and benches
        self.generations: list[Generation] = []

    def _sampling(self) -> Sampling:
        s = self._provider.settings
        return Sampling(
            temperature=self.temperature if self.temperature is not None else s.temperature,
            top_p=s.top_p,
            max_tokens=self.max_tokens if self.max_tokens is not None else s.max_tokens,
            stop=tuple(s.stop),
            seed=s.seed,
            repeat_penalty=s.repeat_penalty,
        )

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        stats = Generation()
        self.generations.append(stats)
        native = self._tool_mode == "native" and bool(tools)
        parser = ToolCallParser() if native else None
        reply: list[str] = []
        pieces = self._model.stream(
            messages, self._sampling(), tools=tools if native else (), stats=stats,
            conversation=self._call.call_id, alone=self._provider.calls_up() <= 1,
        )
        try:
            async for piece in pieces:
                if parser is None:
                    reply.append(piece)
                    yield piece
                    continue
                for item in parser.feed(piece):
                    yield _item(item)
            if parser is not None:
                for item in parser.finish():
                    yield _item(item)
            elif (
                self._tool_mode == "farewell"
                and any(t.get("function", {}).get("name") == "end_call" for t in tools)
                and self._farewell.ends_call(messages, "".join(reply), self._confirm)
            ):
                yield ToolCallRequest("end_call", {})
        finally:
            await pieces.aclose()
            self._provider.record(stats, self._call)

    async def cleanup(self) -> None:
        await super().cleanup()
        self._provider.call_ended(self)


def _item(item: str | ToolCallText) -> str | ToolCallRequest:
    if isinstance(item, ToolCallText):
        return ToolCallRequest(item.name, item.arguments)
    return item


class LlamaCppProvider(LLMProvider):
    """llama.cpp in-process from a GGUF file; no server needed."""

    name = "llama-cpp"
    Settings = LlamaCppSettings
    description = "embedded llama.cpp LLM (GGUF in-process; default SmolLM2-135M)"
    supports_tools = True

    def __init__(self, settings: LlamaCppSettings, context: Any) -> None:
        super().__init__(settings, context)
        self.models: dict[str, LlamaModel | RemoteModel] = {}
        self.default: LlamaModel | RemoteModel | None = None
        self.worker: WorkerProcess | None = None
        #: the calls' services until their pipelines end (weak: a call that never ran goes too)
        self._services: weakref.WeakSet[LlamaCppService] = weakref.WeakSet()
        self.tool_mode: ToolMode = settings.tool_calls
        self.supports_tools = settings.tool_calls != "off"

    async def start(self) -> None:
        try:
            require_llama_cpp()
        except RuntimeError as e:
            raise ProviderError(str(e)) from None
        s = self.settings
        specs = await self._resolve()
        warm = self._warm_prompts(specs) if s.warm else {}
        if s.isolation == "process":
            self.worker = WorkerProcess(specs, warm, on_death=self._worker_died,
                                        env=worker_env(s))
            await self.worker.start()
            wait = s.first_token_timeout
            self.models = {m.key: RemoteModel(self.worker, m.key, wait) for m in specs}
        else:
            await self._load_in_process(specs, warm)
        self.default = self.models[canonical(s.model)]
        if self.tool_mode == "native" and not self.default.template_supports_tools:
            raise ProviderError(
                f"tool_calls = native, but the chat template of {s.model!r} has no "
                "tools; use tool_calls = farewell or a tool-capable GGUF"
            )

    async def _resolve(self) -> list[ModelSpec]:
        """The GGUF files to load: the provider's model and the profiles' own."""
        s = self.settings
        wanted: dict[str, bool] = {canonical(s.model): True}
        for p in self.context.profiles:
            if p.llm_model and p.llm in ("", self.name):
                wanted.setdefault(canonical(p.llm_model), p.llm == self.name)
        specs = []
        for key, required in wanted.items():
            try:
                path = await asyncio.to_thread(resolve_model, key, progress=self._progress(key))
            except ProviderError as e:
                if required:
                    raise
                self.log.warning(
                    "profile model %r cannot be used (%s); calls of that profile use %r",
                    key,
                    e,
                    s.model,
                )
                continue
            specs.append(ModelSpec(key, str(path), s.n_ctx, s.n_threads or embedded_threads(),
                                   prompt_threads(s), s.chat_format, s.parallel))
        return specs

    def _warm_prompts(self, specs: list[ModelSpec]) -> dict[str, list[list[str]]]:
        """How each model's calls open ([system prompt, greeting] per profile) to evaluate at
        startup, the default profile's last (its prefix is the one left in the KV cache)."""
        out = {}
        for spec in specs:
            openings = [
                (p.system_prompt, p.greeting or "")
                for p in self.context.profiles
                if canonical(p.llm_model or self.settings.model) == spec.key and p.system_prompt
            ]
            openings.sort(key=lambda opening: opening[0] == self._default_prompt())
            out[spec.key] = [list(o) for o in dict.fromkeys(openings)]
        return out

    async def _load_in_process(self, specs: list[ModelSpec],
                               warm: dict[str, list[list[str]]]) -> None:
        for spec in specs:
            model = LlamaModel(
                Path(spec.path),
                name=spec.key,
                n_ctx=spec.n_ctx,
                n_threads=spec.n_threads,
                n_threads_batch=spec.n_threads_batch,
                chat_format=spec.chat_format,
                parallel=spec.parallel,
            )
            try:
                await model.load()
            except RuntimeError as e:
                raise ProviderError(str(e)) from None
            self.models[spec.key] = model
            if spec.key in warm:
                seconds = await model.warm(warm[spec.key])
                self.log.info("model %s warmed in %.2fs (%d call openings)",
                              spec.key, seconds, len(warm[spec.key]))

    def _worker_died(self, reason: str) -> None:
        self.context.observe("provider_restarts", 1.0, {"provider": self.name, "reason": reason})

    def _progress(self, key: str) -> Any:
        shown = [-1]

        def report(done: int, total: int) -> None:
            quarter = done * 4 // max(total, 1)
            if quarter != shown[0]:
                shown[0] = quarter
                self.log.info("preparing model %s: %d%%", key, quarter * 25)

        return report

    def _default_prompt(self) -> str:
        for p in self.context.profiles:
            if p.name == "default":
                return str(p.system_prompt)
        return ""

    async def stop(self) -> None:
        for model in self.models.values():
            await model.close()
        if self.worker is not None:
            await self.worker.close()
            self.worker = None
        self.models.clear()
        self.default = None

    def ready(self) -> bool:
        return self.default is not None and self.default.loaded

    def model_for(self, call: CallContext) -> LlamaModel | RemoteModel:
        if self.default is None:
            raise ProviderError("llama-cpp provider is not started")
        wanted = call.profile.llm_model
        return self.models.get(canonical(wanted), self.default) if wanted else self.default

    def create_service(self, call: CallContext) -> LlamaCppService:
        service = LlamaCppService(self, self.model_for(call), call)
        self._services.add(service)
        return service

    def call_ended(self, service: LlamaCppService) -> None:
        self._services.discard(service)

    def calls_up(self) -> int:
        """Calls whose LLM service is up: with one, its prompts may use every core."""
        return len(self._services)

    def record(self, stats: Generation, call: CallContext) -> None:
        """Log and publish one reply's numbers (tokens/s, cache reuse, queue wait)."""
        self.context.observe("llm_queue_seconds", stats.queued, {"stage": "llm_queue"})
        call.log.debug(
            "llm reply: %d prompt tokens (%d cached), %d tokens, first after %.3fs, %.1f tokens/s, "
            "queued %.3fs%s",
            stats.prompt_tokens,
            stats.cached_tokens,
            stats.completion_tokens,
            stats.prompt_seconds,
            stats.tokens_per_second,
            stats.queued,
            " (interrupted)" if stats.cancelled else "",
        )

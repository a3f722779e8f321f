"""llama.cpp in-process: one loaded GGUF model, generations streamed token by token.

Shared by the embedded ``llama-cpp`` provider and the ``vc-llama-ws-server``.

* One :class:`LlamaModel` per GGUF file, loaded once. With ``parallel`` > 1 several
  conversations are generated at once by :mod:`vc_llm_llama_ws.batched`; with 1, llama.cpp's
  context (not thread-safe) serves one generation at a time on the model's worker thread, in
  FIFO order. The wait is measured in :attr:`Generation.queued` either way.
* Tokens travel to the event loop through an asyncio queue as they are sampled; closing or
  cancelling the consuming generator sets a flag the worker checks after every token, so an
  interrupted reply stops within one token and frees the model for the next request.
* The KV cache is kept between requests: llama-cpp-python's ``generate`` re-evaluates only the
  tokens after the longest prefix shared with what the context already holds. Every call's
  prompt starts with its system prompt, so that prefix (and, within one call, the whole earlier
  conversation) is not evaluated again. :meth:`LlamaModel.warm` evaluates the system prompts
  at startup so even the first call finds them cached.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib.util
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import attrs

from vc import jsonsafe
from vc.cpu import usable_cores
from vc.providers import retrieve_failure
from vc_llm_llama_ws.batched import BatchedDecoder, Request, common_prefix, partial_suffix

log = logging.getLogger("vc.llm.llama_cpp")

#: llama-cpp-python is the [embedded] extra: the llama-ws client runs without it.
INSTALL_EMBEDDED = "pip install 'vc-llm-llama-ws[embedded]'"


def require_llama_cpp() -> None:
    """Raise RuntimeError, saying how to install it, unless llama-cpp-python is installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError(f"llama-cpp-python is not installed: {INSTALL_EMBEDDED}")


TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"


@attrs.frozen
class Sampling:
    """Per-request sampling parameters."""

    temperature: float = 0.2
    top_p: float = 0.95
    max_tokens: int = 80
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repeat_penalty: float = 1.1
    #: seconds a generation may run once it has the model (prompt + reply); None: no limit.
    #: Past it the generation stops within a token and finish_reason is "time_limit".
    time_limit: float | None = None


@attrs.define
class Generation:
    """What one request produced (filled in as it runs)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found already evaluated in the KV cache
    completion_tokens: int = 0
    queued: float = 0.0  # seconds waiting for the model (another request was generating)
    prompt_seconds: float = 0.0  # request start -> first token (prompt evaluation)
    seconds: float = 0.0  # whole generation
    cancelled: bool = False
    finish_reason: str = ""
    dropped_messages: int = 0  # oldest turns left out so the conversation fits n_ctx

    @property
    def tokens_per_second(self) -> float:
        gen = self.seconds - self.prompt_seconds
        return (self.completion_tokens - 1) / gen if self.completion_tokens > 1 and gen > 0 else 0.0


@attrs.frozen
class ToolCallText:
    """A tool call the model wrote as ``<tool_call>{"name":..,"arguments":..}</tool_call>``."""

    name: str
    arguments: dict[str, Any]


def default_threads() -> int:
    """The cores this process may use, a container's CPU limit included (vc.cpu)."""
    return usable_cores()


class LlamaModel:
    """One GGUF model loaded by llama.cpp, serving ``parallel`` generations at a time."""

    def __init__(
        self,
        path: Path,
        *,
        name: str = "",
        n_ctx: int = 2048,
        n_threads: int = 0,
        chat_format: str = "",
        n_batch: int = 256,
        n_threads_batch: int = 0,
        parallel: int = 1,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        #: Threads evaluating prompts (default: as many as generate).
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_batch = n_batch
        self.chat_format = chat_format
        #: Conversations generated at once (:mod:`vc_llm_llama_ws.batched`); 1: one at a time.
        self.parallel = parallel
        self.load_seconds = 0.0
        self.generations = 0
        self._llm: Any = None
        self._decoder: BatchedDecoder | None = None
        self._formatter: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"llama-{self.name}"
        )
        self._busy = 0  # requests queued or running (read on the event loop thread only)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def template_supports_tools(self) -> bool:
        """Whether the chat template renders a tool list (Qwen2.5 does, SmolLM2 does not)."""
        template = self._template()
        return bool(template) and "tools" in template and not self.chat_format

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        if self._llm is not None:
            return
        require_llama_cpp()
        from llama_cpp import Llama

        t0 = time.monotonic()
        batched = self.parallel > 1
        try:
            self._llm = Llama(
                model_path=str(self.path),
                # Batched, the Llama object only tokenises: its own context stays small.
                n_ctx=min(self.n_ctx, 256) if batched else self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch,
                n_batch=self.n_batch,
                verbose=False,
            )
            if batched:
                self._decoder = BatchedDecoder(
                    self._llm, n_seq=self.parallel, n_ctx=self.n_ctx, n_batch=self.n_batch,
                    n_threads=self.n_threads, n_threads_batch=self.n_threads_batch,
                    name=self.name)
        except (ValueError, RuntimeError, OSError) as e:
            raise RuntimeError(f"llama.cpp could not load {self.path}: {e}") from e
        self._formatter = self._make_formatter()
        if self._decoder is not None:
            self._decoder.next_turn = self.next_turn_tokens()
        self.load_seconds = time.monotonic() - t0
        log.info(
            "loaded %s (%s) in %.2fs, n_ctx=%d, threads=%d (prompts: %d), parallel=%d",
            self.name,
            self.path.name,
            self.load_seconds,
            self.n_ctx,
            self.n_threads,
            self.n_threads_batch,
            self.parallel,
        )

    def _template(self) -> str:
        return str(self._llm.metadata.get("tokenizer.chat_template", "")) if self._llm else ""

    def _make_formatter(self) -> Any:
        from llama_cpp import llama_chat_format as fmt

        if self.chat_format:
            fn = getattr(
                fmt, "format_" + self.chat_format.replace("-", "_").replace(".", "_"), None
            )
            if fn is None:
                raise RuntimeError(
                    f"unknown chat_format {self.chat_format!r} (llama-cpp-python "
                    "formats: chatml, llama-2, llama-3, mistral-instruct, ...)"
                )
            return fn
        template = self._template()
        if not template:
            return fmt.format_chatml
        llm = self._llm
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "ignore")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "ignore")
        return fmt.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[llm.token_eos()]
        )

    async def close(self) -> None:
        def free() -> None:
            if self._decoder is not None:
                self._decoder.close()
                self._decoder = None
            if self._llm is not None:
                with contextlib.suppress(Exception):
                    self._llm.close()
                self._llm = None

        with contextlib.suppress(RuntimeError):
            await asyncio.get_running_loop().run_in_executor(self._executor, free)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- prompts --------------------------------------------------------------------------

    def render(
        self, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]] = ()
    ) -> tuple[str, list[str]]:
        """The prompt text for a chat and the stop strings its template implies."""
        msgs = normalise_messages(messages, keep_tools=bool(tools))
        kwargs: dict[str, Any] = {"messages": msgs}
        if tools:
            kwargs["tools"] = list(tools)
        result = self._formatter(**kwargs)
        stop = result.stop
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        return result.prompt, stops

    def next_turn_tokens(self) -> list[int]:
        """What the template writes between a reply and the caller's next words (ChatML:
        ``<|im_end|>\n<|im_start|>user\n``); [] if it cannot be told."""
        try:
            prompt, _ = self.render([{"role": "user", "content": "A"},
                                     {"role": "assistant", "content": "REPLY"},
                                     {"role": "user", "content": "NEXT"}])
        except Exception:  # a template that cannot render this: no prefill
            return []
        start, end = prompt.find("REPLY"), prompt.find("NEXT")
        if start < 0 or end <= start:
            return []
        between = prompt[start + len("REPLY"):end].encode("utf-8")
        return list(self._llm.tokenize(between, add_bos=False, special=True))

    def tokenize(self, prompt: str) -> list[int]:
        # Chat templates write the BOS token themselves where the model wants one.
        text = prompt.encode("utf-8")
        bos = self._llm.detokenize([self._llm.token_bos()], special=True)
        return self._llm.tokenize(text, add_bos=not (bos and text.startswith(bos)), special=True)

    # -- generation -----------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Requests queued or running now."""
        return self._busy

    async def warm(self, openings: Sequence[str | Sequence[str]]) -> float:
        """Evaluate how calls open: each a system prompt, or a ``[system prompt, greeting]``
        pair (every call's first prompt then finds its greeting cached too, not only the
        system prompt). The last one stays cached; returns the seconds spent.

        On ``n_threads`` (not alone): at a start the other models load and warm meanwhile,
        and threads that spin at every layer would take their cores (bench/README.md)."""
        t0 = time.monotonic()
        for opening in openings:
            prompt, greeting = (opening, "") if isinstance(opening, str) else (*opening, "")[:2]
            messages = [{"role": "system", "content": prompt}]
            if greeting:
                messages.append({"role": "assistant", "content": greeting})
            messages.append({"role": "user", "content": "Hello."})
            async for _ in self.stream(messages, Sampling(max_tokens=1, temperature=0.0),
                                       alone=False):
                pass
        return time.monotonic() - t0

    async def stream(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: Sequence[dict[str, Any]] = (),
        stats: Generation | None = None,
        conversation: str = "",
        alone: bool = True,
    ) -> AsyncGenerator[str, None]:
        """Stream the reply's text pieces. Closing the iterator stops generation within a token.

        ``conversation`` (the call) lets a batched model keep each call's turns cached;
        ``alone`` (no other call is up) lets it evaluate the prompt on ``n_threads_batch``."""
        if self._llm is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        stats = stats if stats is not None else Generation()
        submitted = time.monotonic()

        def emit(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            started = time.monotonic()
            stats.queued = started - submitted
            if stop.is_set():
                stats.cancelled = True
                emit("end", None)
                return
            try:
                self._generate(messages, tools, sampling, stats, stop, emit, started)
            except Exception as e:  # reported to the consumer, never lost in the thread
                emit("error", e)
            else:
                emit("end", None)

        self._busy += 1
        future = None
        if self._decoder is not None:
            prepare = functools.partial(self._prepare, messages, tools, sampling, stats)
            self._decoder.submit(
                Request(prepare, sampling, stats, stop, emit, submitted, conversation, alone))
        else:
            future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            stop.set()
            self._busy -= 1
            if future is not None and not future.done():
                future.add_done_callback(retrieve_failure)

    def _fit(
        self, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]], reply_tokens: int
    ) -> tuple[list[int], list[str], int]:
        """The prompt's tokens, leaving room for the reply: the oldest turns after the system
        prompt are dropped while the conversation does not fit ``n_ctx``."""
        budget = self.n_ctx - min(reply_tokens, self.n_ctx // 4) - 8
        msgs = list(messages)
        head = 1 if msgs and msgs[0].get("role") in ("system", "developer") else 0
        dropped = 0
        while True:
            prompt, stops = self.render(msgs, tools)
            tokens = self.tokenize(prompt)
            if len(tokens) <= budget:
                return tokens, stops, dropped
            if len(msgs) - head <= 1:  # only the newest message is left: it alone is too long
                raise ValueError(f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}")
            del msgs[head]
            dropped += 1

    def _prepare(
        self,
        messages: list[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        sampling: Sampling,
        stats: Generation,
    ) -> tuple[list[int], list[str], int]:
        """The prompt's tokens, the stop strings and the reply's token limit."""
        tokens, template_stops, dropped = self._fit(messages, tools, sampling.max_tokens)
        stats.dropped_messages = dropped
        stats.prompt_tokens = len(tokens)
        self.generations += 1
        max_tokens = max(1, min(sampling.max_tokens, self.n_ctx - len(tokens) - 1))
        return tokens, [*template_stops, *sampling.stop], max_tokens

    def _generate(
        self,
        messages: list[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        sampling: Sampling,
        stats: Generation,
        stop: threading.Event,
        emit: Any,
        started: float,
    ) -> None:
        llm = self._llm
        tokens, stops, max_tokens = self._prepare(messages, tools, sampling, stats)
        stats.cached_tokens = common_prefix(llm._input_ids[: llm.n_tokens], tokens)
        stream = llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            repeat_penalty=sampling.repeat_penalty,
            stop=stops or None,
            seed=sampling.seed,
            stream=True,
        )
        try:
            for chunk in stream:
                if stop.is_set():
                    stats.cancelled = True
                    stats.finish_reason = "cancelled"
                    break
                if sampling.time_limit is not None and time.monotonic() - started > sampling.time_limit:
                    stats.finish_reason = "time_limit"
                    break
                choice = chunk["choices"][0]
                text = choice.get("text") or ""
                if text:
                    if not stats.completion_tokens:
                        stats.prompt_seconds = time.monotonic() - started
                    stats.completion_tokens += 1
                    emit("text", text)
                if choice.get("finish_reason"):
                    stats.finish_reason = choice["finish_reason"]
        finally:
            stream.close()
            stats.seconds = time.monotonic() - started


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def normalise_messages(messages: list[dict[str, Any]], keep_tools: bool) -> list[dict[str, Any]]:
    """Plain ``{"role", "content": str}`` messages a chat template can render.

    Templates concatenate ``content`` as a string, so ``None`` and content-part lists become
    text. Without tool support, tool results and tool-call-only assistant turns are dropped
    (the model could not have asked for them) and a system message not in first place is
    merged into the first one.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role", "user")
        if role == "developer":
            role = "system"
        msg: dict[str, Any] = {"role": role, "content": _text(m.get("content"))}
        if keep_tools:
            if m.get("tool_calls"):
                msg["tool_calls"] = [_tool_call_for_template(c) for c in m["tool_calls"]]
        elif role == "tool" or (role == "assistant" and not msg["content"]):
            continue
        if role == "system" and out and not keep_tools:
            if out[0]["role"] == "system":
                out[0]["content"] += "\n" + msg["content"]
                continue
            out.insert(0, msg)
            continue
        out.append(msg)
    return out


def _tool_call_for_template(call: dict[str, Any]) -> dict[str, Any]:
    fn = dict(call.get("function", call))
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = jsonsafe.loads(args) if args.strip() else {}
        except ValueError:
            args = {"raw": args}
    return {"type": "function", "function": {"name": fn.get("name", ""), "arguments": args}}


class ToolCallParser:
    """Splits streamed text into speech and ``<tool_call>...</tool_call>`` blocks.

    Text that might be the start of a ``<tool_call>`` tag is held back until it is known not
    to be one, so markup never reaches the TTS.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._in_call = False

    def feed(self, text: str) -> list[str | ToolCallText]:
        self._buf += text
        out: list[str | ToolCallText] = []
        while True:
            if self._in_call:
                end = self._buf.find(TOOL_CLOSE)
                if end < 0:
                    return out
                body, self._buf = self._buf[:end], self._buf[end + len(TOOL_CLOSE) :]
                self._in_call = False
                call = parse_tool_call(body)
                if call is not None:
                    out.append(call)
                continue
            start = self._buf.find(TOOL_OPEN)
            if start >= 0:
                if start:
                    out.append(self._buf[:start])
                self._buf = self._buf[start + len(TOOL_OPEN) :]
                self._in_call = True
                continue
            keep = partial_suffix(self._buf, TOOL_OPEN)
            if len(self._buf) > keep:
                out.append(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
            return out

    def finish(self) -> list[str | ToolCallText]:
        """Flush at the end of the stream (an unterminated call is parsed if it is whole JSON)."""
        buf, self._buf = self._buf, ""
        if self._in_call:
            self._in_call = False
            call = parse_tool_call(buf)
            return [call] if call is not None else []
        return [buf] if buf else []


_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def parse_tool_call(body: str) -> ToolCallText | None:
    m = _JSON_OBJECT.search(body)
    if not m:
        log.warning("ignoring a malformed tool call from the model: %r", body[:200])
        return None
    try:
        data = jsonsafe.loads(m.group(0))
    except ValueError:
        log.warning("ignoring a tool call that is not JSON: %r", body[:200])
        return None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        log.warning("ignoring a tool call without a name: %r", body[:200])
        return None
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = jsonsafe.loads(args) if args.strip() else {}
        except ValueError:
            args = {}
    return ToolCallText(name, args if isinstance(args, dict) else {})

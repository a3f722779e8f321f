"""The embedded LLM's supervised child process, seen from vc (the parent).

:class:`WorkerProcess` starts ``python -m vc_llm_llama_ws.worker`` (see that module for the
protocol), waits until its models are loaded and warm, and multiplexes generations over its
pipes. When the child dies - a native crash (SIGSEGV, SIGILL), the kernel's OOM killer,
anything - every generation in flight fails with :class:`WorkerDied` (the caller hears the
LLM apology), the death is logged with its signal and counted (``provider_restarts``), and a
new child is started with backoff; generations asked for meanwhile wait for it.
:class:`RemoteModel` gives the provider the same ``stream`` interface as an in-process
:class:`~vc_llm_llama_ws.generation.LlamaModel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import attrs

from vc.providers import ProviderError
from vc_llm_llama_ws.generation import Generation, Sampling

log = logging.getLogger("vc.llm.llama_cpp")

#: Seconds between restarts after consecutive deaths (the last one repeats).
BACKOFF = (0.2, 1.0, 2.0, 5.0, 10.0)
STDERR_TAIL = 20


class WorkerDied(ProviderError):
    """The LLM child process died while (or before) answering."""


def describe_exit(status: int | None) -> str:
    """``SIGSEGV`` for a signal death, ``exit 3`` for an exit status."""
    if status is None:
        return "running"
    if status < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-status).name
        return f"signal {-status}"
    return f"exit {status}"


@attrs.define
class ModelSpec:
    key: str
    path: str
    n_ctx: int
    n_threads: int
    n_threads_batch: int
    chat_format: str
    parallel: int = 1


class WorkerProcess:
    """One supervised child running the provider's models."""

    def __init__(
        self,
        models: Sequence[ModelSpec],
        warm: Mapping[str, Sequence[str | Sequence[str]]],
        *,
        on_death: Callable[[str], None] = lambda reason: None,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = {"models": [attrs.asdict(m) for m in models], "warm": warm}
        #: variables set for the child on top of vc's own environment (OMP_WAIT_POLICY)
        self.env = dict(env or {})
        self.on_death = on_death
        self.python = python
        self.tools: dict[str, bool] = {}
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._pending: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._stderr: list[str] = []
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        """Start the child and wait until its models are loaded; ProviderError if it cannot."""
        await self._spawn()

    async def _spawn(self) -> None:
        self._stderr = []
        proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "vc_llm_llama_ws.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
            env={**os.environ, **self.env},
        )
        self.proc = proc
        self._spawn_task(self._read_stderr(proc))
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(self.spec).encode() + b"\n")
        first = await proc.stdout.readline()
        try:
            hello = json.loads(first) if first else {}
        except ValueError:
            hello = {}
        if "ready" not in hello:
            status = await proc.wait()
            why = hello.get("fatal") or f"it ended ({describe_exit(status)})"
            raise ProviderError(f"the LLM worker process could not start: {why}{self._tail()}")
        self.tools = {k: bool(v.get("tools")) for k, v in hello["ready"].items()}
        log.info("LLM worker pid %d ready: %s", proc.pid, ", ".join(
            f"{k} in {s:.2f}s" for k, s in hello.get("seconds", {}).items()))
        self._ready.set()
        self._spawn_task(self._read_replies(proc))

    def _tail(self) -> str:
        lines = [line for line in self._stderr if line.strip()][-5:]
        return ("; last output: " + " | ".join(lines)) if lines else ""

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr = [*self._stderr[-STDERR_TAIL:], text]
            log.debug("worker %d: %s", proc.pid, text)

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                message = json.loads(line)
                queue = self._pending.get(int(message["id"]))
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable line from the LLM worker: %.200r", line)
                continue
            if queue is not None:
                queue.put_nowait(message)
        status = await proc.wait()
        if proc is self.proc and not self._closing:
            await self._died(describe_exit(status))

    async def _died(self, reason: str) -> None:
        self._ready.clear()
        self.restarts += 1
        log.error("the LLM worker (pid %s) died: %s; %d generation(s) in flight get the "
                  "apology; restarting%s", self.pid, reason, len(self._pending), self._tail())
        self.on_death(reason)
        for queue in self._pending.values():
            queue.put_nowait({"died": reason})
        for attempt in itertools.count():
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            if self._closing:
                return
            try:
                await self._spawn()
                log.info("the LLM worker is back (pid %s) after %s", self.pid, reason)
                return
            except (ProviderError, OSError) as e:
                log.error("restarting the LLM worker failed (attempt %d): %s", attempt + 1, e)

    async def wait_ready(self, timeout: float) -> None:
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                raise WorkerDied("the LLM worker is restarting") from None

    async def stream(
        self,
        key: str,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: Sequence[dict[str, Any]],
        stats: Generation,
        wait: float,
        conversation: str = "",
        alone: bool = True,
    ) -> AsyncGenerator[str, None]:
        """One generation in the child; closing the iterator cancels it there."""
        submitted = time.monotonic()
        await self.wait_ready(wait)
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        rid = next(self._ids)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[rid] = queue
        request = {"id": rid, "op": "stream", "model": key, "messages": messages,
                   "sampling": attrs.asdict(sampling), "tools": list(tools),
                   "conversation": conversation, "alone": alone}
        ended = False
        pieces = 0
        try:
            proc.stdin.write(json.dumps(request, ensure_ascii=False).encode() + b"\n")
            while True:
                message = await queue.get()
                if "text" in message:
                    pieces += 1
                    yield message["text"]
                elif "end" in message:
                    ended = True
                    _fill(stats, message["end"], time.monotonic() - submitted)
                    return
                elif "died" in message:
                    ended = True
                    raise WorkerDied(f"the LLM worker process died ({message['died']})")
                else:
                    ended = True
                    raise ProviderError(str(message.get("error", "unknown worker error")))
        finally:
            self._pending.pop(rid, None)
            if not ended:  # closed by the consumer (barge-in): the child stops within a token
                stats.cancelled, stats.completion_tokens = True, pieces
            if not ended and proc is self.proc and proc.returncode is None:
                with contextlib.suppress(OSError, RuntimeError):
                    proc.stdin.write(json.dumps({"id": rid, "op": "cancel"}).encode() + b"\n")

    async def close(self) -> None:
        self._closing = True
        self._ready.clear()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _fill(stats: Generation, fields: dict[str, Any], seconds: float) -> None:
    for name, value in fields.items():
        if hasattr(stats, name):
            setattr(stats, name, value)
    # the child measured from its own start; waiting for the worker is queueing too
    stats.queued = max(stats.queued, seconds - stats.seconds)


class RemoteModel:
    """A model in the worker, with :class:`LlamaModel`'s ``stream`` interface."""

    def __init__(self, worker: WorkerProcess, key: str, wait: float) -> None:
        self.worker = worker
        self.name = key
        self.wait = wait

    @property
    def loaded(self) -> bool:
        return self.worker.ready

    @property
    def template_supports_tools(self) -> bool:
        return self.worker.tools.get(self.name, False)

    def stream(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: Sequence[dict[str, Any]] = (),
        stats: Generation | None = None,
        conversation: str = "",
        alone: bool = True,
    ) -> AsyncGenerator[str, None]:
        return self.worker.stream(
            self.name, messages, sampling, tools, stats or Generation(), self.wait, conversation,
            alone,
        )

    async def close(self) -> None:
        """The worker is closed by its provider."""

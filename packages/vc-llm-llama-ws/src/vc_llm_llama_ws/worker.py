"""The embedded LLM's child process: ``python -m vc_llm_llama_ws.worker``.

llama.cpp is native code: a bad build, a bad model file or a bug can crash the process running
it. The ``llama-cpp`` provider therefore runs its models here, in a child that
:mod:`vc_llm_llama_ws.supervisor` starts, watches and restarts, so a crash costs the turns in
flight an apology instead of costing vc every call.

Protocol: JSON, one object per line. The parent writes the spec first, then requests, on the
child's stdin; the child answers on its stdout (C code printing to stdout is sent to stderr
instead, so it cannot corrupt the stream)::

    spec    {"models": [{"key", "path", "n_ctx", "n_threads", "n_threads_batch",
                         "chat_format", "parallel"}],
             "warm": {key: [[system prompt, greeting], ...]}}
    ready   {"ready": {key: {"tools": bool}}, "seconds": {key: load seconds}}
            or {"fatal": "why"} and exit status 1; then the call openings in "warm" are
            evaluated before the first request is read
    stream  {"id": n, "op": "stream", "model": key, "messages": [...], "sampling": {...},
             "tools": [...], "conversation": "call id", "alone": bool (no other call is up)}
            -> {"id": n, "text": ".."} ... then {"id": n, "end": {Generation fields}}
               or {"id": n, "error": "why"}
    cancel  {"id": n, "op": "cancel"}   stop generation n within a token (it still ends)

End of stdin ends the child.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import IO, Any

import attrs

from vc_llm_llama_ws.generation import Generation, LlamaModel, Sampling

log = logging.getLogger("vc.llm.worker")


class Worker:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.models: dict[str, LlamaModel] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")
        self.out.flush()

    async def load(self, spec: dict[str, Any]) -> None:
        seconds: dict[str, float] = {}
        for m in spec["models"]:
            model = LlamaModel(
                Path(m["path"]),
                name=m["key"],
                n_ctx=m["n_ctx"],
                n_threads=m["n_threads"],
                n_threads_batch=m["n_threads_batch"],
                chat_format=m["chat_format"],
                parallel=m.get("parallel", 1),
            )
            await model.load()
            seconds[m["key"]] = model.load_seconds
            self.models[m["key"]] = model
        ready = {k: {"tools": m.template_supports_tools} for k, m in self.models.items()}
        self.send({"ready": ready, "seconds": seconds})

    async def warm(self, spec: dict[str, Any]) -> None:
        """Evaluate the call openings after ``ready``: vc does not wait for it, and requests
        are read only afterwards, so the first finds its prompt cached. A failure is logged."""
        for key, model in self.models.items():
            try:
                took = await model.warm(spec.get("warm", {}).get(key, []))
            except Exception as e:
                log.error("warming %s failed: %s: %s", key, type(e).__name__, e)
                continue
            log.info("%s warm: call openings evaluated in %.2fs", key, took)

    def handle(self, request: dict[str, Any]) -> None:
        rid = int(request["id"])
        if request.get("op") == "cancel":
            task = self.tasks.get(rid)
            if task is not None:
                task.cancel()
            return
        task = asyncio.get_running_loop().create_task(self.generate(rid, request))
        self.tasks[rid] = task
        task.add_done_callback(lambda _t: self.tasks.pop(rid, None))

    async def generate(self, rid: int, request: dict[str, Any]) -> None:
        stats = Generation()
        try:
            model = self.models[request["model"]]
            sampling = Sampling(**{**request["sampling"], "stop": tuple(request["sampling"]["stop"])})
            pieces = model.stream(request["messages"], sampling, request.get("tools") or (), stats,
                                  str(request.get("conversation") or ""),
                                  bool(request.get("alone", True)))
            try:
                async for text in pieces:
                    self.send({"id": rid, "text": text})
            finally:
                await pieces.aclose()
        except asyncio.CancelledError:
            stats.cancelled = True
        except Exception as e:
            self.send({"id": rid, "error": f"{type(e).__name__}: {e}"})
            return
        self.send({"id": rid, "end": attrs.asdict(stats)})


async def serve(spec_line: bytes, lines: asyncio.StreamReader, out: IO[bytes]) -> int:
    worker = Worker(out)
    try:
        spec = json.loads(spec_line)
        await worker.load(spec)
    except Exception as e:
        worker.send({"fatal": f"{type(e).__name__}: {e}"})
        return 1
    await worker.warm(spec)
    while line := await lines.readline():
        try:
            worker.handle(json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            log.error("bad request from the parent: %s", e)
    for task in list(worker.tasks.values()):
        task.cancel()
    return 0


async def _main(out: IO[bytes]) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = await reader.readline()
    if not spec:
        return 0
    return await serve(spec, reader, out)


def main() -> None:
    # The protocol gets a private copy of stdout; fd 1 becomes stderr for anything else.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(
        level=os.environ.get("VC_LLM_WORKER_LOG", "INFO"),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    sys.exit(asyncio.run(_main(out)))


if __name__ == "__main__":
    main()

"""The embedded LLM alone: first token and tokens/s, in vc's process or in its child process,
for whichever llama.cpp build is installed.

    python bench/llm_runtime.py --label portable            # both isolations, interleaved
    PYTHONPATH=/tmp/native python bench/llm_runtime.py --label native --model qwen2.5-0.5b

Each turn is a new caller's first question (the system prompt warm in the KV cache, the question
not), as on a call; the twelve reference questions, ``--rounds`` times, the isolations taking
turns so drift in the machine's load hits both alike. Greedy decoding (temperature 0, fixed
seed), so both sides generate the same tokens. Writes ``--out`` (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from utterances import QUESTIONS
from vc_llm_llama_ws import native
from vc_llm_llama_ws.embedded import embedded_threads
from vc_llm_llama_ws.generation import Generation, LlamaModel, Sampling
from vc_llm_llama_ws.models import SMOLLM2, resolve_model
from vc_llm_llama_ws.supervisor import ModelSpec, WorkerProcess

from vc.profiles import DEFAULT_SYSTEM_PROMPT

SAMPLING = Sampling(temperature=0.0, max_tokens=48, seed=7)


async def turn(model: Any, question: str) -> dict[str, float]:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": question}]
    stats = Generation()
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    async for _ in model.stream(messages, SAMPLING, (), stats):
        tokens += 1
        if tokens == 1:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    rate = (tokens - 1) / (total - first) if tokens > 1 and total > first else 0.0
    return {"first_token": first, "tokens_per_second": rate, "tokens": tokens}


class InProcess:
    def __init__(self, path: Path) -> None:
        self.model = LlamaModel(path, name=SMOLLM2, n_threads=embedded_threads())

    async def start(self) -> None:
        await self.model.load()
        await self.model.warm([DEFAULT_SYSTEM_PROMPT])

    def stream(self, *args: Any) -> Any:
        return self.model.stream(*args)

    async def close(self) -> None:
        await self.model.close()


class Child:
    def __init__(self, path: Path) -> None:
        spec = ModelSpec(SMOLLM2, str(path), 2048, embedded_threads(), 0, "")
        self.worker = WorkerProcess([spec], {SMOLLM2: [DEFAULT_SYSTEM_PROMPT]})

    async def start(self) -> None:
        await self.worker.start()

    def stream(self, messages: Any, sampling: Any, tools: Any, stats: Any) -> Any:
        return self.worker.stream(SMOLLM2, messages, sampling, tools, stats, 30.0)

    async def close(self) -> None:
        await self.worker.close()


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    ft = sorted(r["first_token"] for r in rows)
    return {
        "turns": len(rows),
        "first_token_p50_ms": round(statistics.median(ft) * 1000, 1),
        "first_token_p95_ms": round(ft[int(0.95 * (len(ft) - 1))] * 1000, 1),
        "tokens_per_second_p50": round(statistics.median(r["tokens_per_second"] for r in rows), 1),
    }


async def main(args: argparse.Namespace) -> None:
    path = resolve_model(args.model)
    kinds = {"thread": InProcess, "process": Child}
    chosen = [args.isolation] if args.isolation != "both" else ["thread", "process"]
    runners = {k: kinds[k](path) for k in chosen}
    for r in runners.values():
        await r.start()
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in runners}
    load = [os.getloadavg()]
    for _ in range(args.rounds):
        for q in QUESTIONS:
            for k, r in runners.items():
                rows[k].append(await turn(r, q))
    load.append(os.getloadavg())
    for r in runners.values():
        await r.close()
    report = native.report()
    result = {
        "label": args.label,
        "model": args.model,
        "build": sorted(report.uses),
        "portable": report.portable,
        "threads": embedded_threads(),
        "loadavg_before_after": [[round(x, 2) for x in la] for la in load],
        "results": {k: summary(v) for k, v in rows.items()},
    }
    if "thread" in rows and "process" in rows:
        result["process_minus_thread_first_token_p50_ms"] = round(
            result["results"]["process"]["first_token_p50_ms"]
            - result["results"]["thread"]["first_token_p50_ms"], 1)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--label", default="installed")
    p.add_argument("--isolation", choices=["thread", "process", "both"], default="both")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="")
    p.add_argument("--model", default=SMOLLM2, help="packaged model name or GGUF path")
    asyncio.run(main(p.parse_args()))

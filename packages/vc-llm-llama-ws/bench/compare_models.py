"""SmolLM2-135M vs Qwen2.5-Coder-0.5B in the embedded engine: load, TTFT, tokens/s, answers.

    python packages/vc-llm-llama-ws/bench/compare_models.py [--threads 2] [--json out.json]

Measures, per model: load time; time to first token for a cold first question (empty KV
cache), for a new caller after the system prompt was warmed, and for a follow-up turn of the
same call; generation speed; the queue wait when two calls ask at the same moment; and prints
the answers to a few phone-style questions (greedy decoding) to judge quality by eye.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from vc_llm_llama_ws.generation import Generation, LlamaModel, Sampling
from vc_llm_llama_ws.models import QWEN, SMOLLM2, resolve_model

from vc.profiles import DEFAULT_GREETING, DEFAULT_SYSTEM_PROMPT

QUESTIONS = [
    "Hi, what are your opening hours?",
    "I'd like to book a table for two tomorrow at seven.",
    "What is the capital of France?",
    "My parcel has not arrived yet. What should I do?",
    "How much is two plus three?",
    "Hi, my name is Alice. Can you spell my name?",
    "Thanks, that's all. Goodbye!",
]


def chat(question: str, history: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "assistant", "content": DEFAULT_GREETING},
        *(history or []),
        {"role": "user", "content": question},
    ]


async def ask(
    model: LlamaModel,
    messages: list[dict[str, str]],
    max_tokens: int = 60,
) -> tuple[str, Generation, float]:
    stats = Generation()
    t0 = time.monotonic()
    first = 0.0
    text = ""
    async for piece in model.stream(
        messages, Sampling(temperature=0.0, max_tokens=max_tokens), stats=stats
    ):
        first = first or time.monotonic() - t0
        text += piece
    return text, stats, first


async def bench(name: str, threads: int) -> dict[str, object]:
    path = resolve_model(name)
    model = LlamaModel(path, name=name, n_ctx=2048, n_threads=threads)
    t0 = time.monotonic()
    await model.load()
    load = time.monotonic() - t0
    _, cold, cold_ttft = await ask(model, chat(QUESTIONS[0]))
    await model.warm([DEFAULT_SYSTEM_PROMPT])
    answers, ttfts, speeds = [], [], []
    for q in QUESTIONS:
        await model.warm([DEFAULT_SYSTEM_PROMPT])  # a new caller: only the system prompt cached
        text, stats, ttft = await ask(model, chat(q))
        answers.append((q, text.strip()))
        ttfts.append(ttft)
        if stats.tokens_per_second:
            speeds.append(stats.tokens_per_second)
    # turn 2 of the same call: the whole first turn is in the KV cache
    first_q = QUESTIONS[5]
    a1, _, _ = await ask(model, chat(first_q))
    a2, turn2, turn2_ttft = await ask(
        model,
        chat(
            "What is my name?",
            [{"role": "user", "content": first_q}, {"role": "assistant", "content": a1}],
        ),
    )
    # two calls at the same moment share the model: one waits for the other
    s1, s2 = Generation(), Generation()

    async def one(q: str, s: Generation) -> None:
        async for _ in model.stream(chat(q), Sampling(temperature=0.0, max_tokens=40), stats=s):
            pass

    await asyncio.gather(one(QUESTIONS[1], s1), one(QUESTIONS[3], s2))
    await model.close()
    return {
        "model": name,
        "file": path.name,
        "size_mb": round(path.stat().st_size / 1e6),
        "threads": threads,
        "load_s": round(load, 2),
        "ttft_cold_s": round(cold_ttft, 3),
        "cold_prompt_tokens": cold.prompt_tokens,
        "ttft_warm_median_s": round(statistics.median(ttfts), 3),
        "ttft_turn2_s": round(turn2_ttft, 3),
        "turn2_cached_tokens": turn2.cached_tokens,
        "turn2_prompt_tokens": turn2.prompt_tokens,
        "tokens_per_s_median": round(statistics.median(speeds), 1) if speeds else 0.0,
        "concurrent_queue_wait_s": round(max(s1.queued, s2.queued), 3),
        "answers": answers,
        "name_recall": a2.strip(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=f"{SMOLLM2},{QWEN}")
    p.add_argument("--json", default="")
    args = p.parse_args()
    results = [asyncio.run(bench(m.strip(), args.threads)) for m in args.models.split(",")]
    keys = [
        "size_mb",
        "load_s",
        "ttft_cold_s",
        "ttft_warm_median_s",
        "ttft_turn2_s",
        "turn2_cached_tokens",
        "tokens_per_s_median",
        "concurrent_queue_wait_s",
    ]
    print("| metric | " + " | ".join(str(r["model"]) for r in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r[k]) for r in results) + " |")
    for r in results:
        print(f"\n## {r['model']}")
        for q, a in r["answers"]:
            print(f"- {q}\n  -> {a}")
        print(f"- (turn 2) What is my name?\n  -> {r['name_recall']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

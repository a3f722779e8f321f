"""The embedded LLM's KV cache on this machine: what a token costs with more cells before it,
and four conversations answering at once with one cache pool against a stream each.

    python bench/kv_cache.py              # both measurements (about a minute on 2 cores)

SmolLM2 (the default model), one thread, greedy: both layouts give the same replies token for
token, so the rounds compare the same work. Prints the figures; bench/README.md has the runs.
"""

from __future__ import annotations

import asyncio
import os
import time

# As vc's LLM process runs llama.cpp (idle OpenMP threads sleep), set before it is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

FILL = " ".join(f"The order number {i} shipped on day {i % 28 + 1}." for i in range(60))


def ms_per_token(before: list[int]) -> dict[int, float]:
    """One sequence: milliseconds per generated token after ``n`` tokens of context."""
    from llama_cpp import Llama
    from vc_llm_llama_ws.models import SMOLLM2, resolve_model

    llm = Llama(model_path=str(resolve_model(SMOLLM2)), n_ctx=8192, n_threads=1,
                n_threads_batch=2, verbose=False)
    out = {}
    for n in before:
        llm.reset()
        tokens = llm.tokenize(b"hello " * n)[:n]
        llm.eval(tokens)
        t0 = time.perf_counter()
        for i in range(32):
            llm.eval([tokens[i % len(tokens)]])
        out[n] = round((time.perf_counter() - t0) / 32 * 1000, 1)
    return out


async def four_conversations(unified: bool, rounds: int = 6) -> list[float]:
    """Seconds per round of four conversations (~830 tokens of history each) answering at once."""
    import vc_llm_llama_ws.batched as batched
    from vc_llm_llama_ws.generation import Generation, LlamaModel, Sampling
    from vc_llm_llama_ws.models import SMOLLM2, resolve_model

    from vc.profiles import DEFAULT_SYSTEM_PROMPT

    batched.UNIFIED_CACHE = unified
    model = LlamaModel(resolve_model(SMOLLM2), name="kv", n_ctx=2048, parallel=8, n_threads=1)
    model._load()
    sampling = Sampling(max_tokens=40, temperature=0.0, stop=())

    async def ask(call: int, question: str) -> None:
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                    {"role": "user", "content": f"Call {call}. {FILL}"},
                    {"role": "assistant", "content": "Noted."},
                    {"role": "user", "content": question}]
        async for _ in model.stream(messages, sampling, stats=Generation(),
                                    conversation=f"call-{call}"):
            pass

    try:
        for call in range(4):
            await ask(call, "Say ok.")
        took = []
        for r in range(rounds):
            t0 = time.perf_counter()
            await asyncio.gather(*(ask(c, f"What is {r + c} plus one?") for c in range(4)))
            took.append(round(time.perf_counter() - t0, 2))
        return took
    finally:
        await model.close()


def main() -> None:
    print("ms per token after n tokens:", ms_per_token([100, 1000, 2000, 4000, 7000]))
    for unified in (True, False, True, False):
        rounds = asyncio.run(four_conversations(unified))
        print("one pool " if unified else "a stream each", "seconds per round:", rounds)


if __name__ == "__main__":
    main()

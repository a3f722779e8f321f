"""Parallel sequences (vc_llm_llama_ws.batched) on the real SmolLM2: several conversations
answered at once, each keeping its own history in the KV cache, replies as the sequential path
computes them. Order of events is asserted, never speed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from vc_llm_llama_ws.generation import Generation, LlamaModel, Sampling
from vc_llm_llama_ws.models import SMOLLM2, resolve_model

from vc.profiles import DEFAULT_SYSTEM_PROMPT

SYSTEM = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
GREEDY = Sampling(max_tokens=24, temperature=0.0)
LONG = Sampling(max_tokens=150, temperature=0.0, stop=())
COUNT = [SYSTEM, {"role": "user", "content": "Count from 1 to 100, separated by commas."}]


@pytest.fixture(scope="module")
def batched() -> Iterator[LlamaModel]:
    """SmolLM2 with two sequences (so a third request must wait) and a small context each."""
    model = LlamaModel(resolve_model(SMOLLM2), name="batched", n_ctx=1024, parallel=2)
    model._load()
    yield model
    asyncio.run(model.close())


def ask(question: str, *history: str) -> list[dict[str, str]]:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": text}
             for i, text in enumerate([*history, question])]
    return [SYSTEM, *turns]


async def collect(model: LlamaModel, messages, sampling: Sampling = GREEDY,
                  stats: Generation | None = None, conversation: str = "") -> str:
    return "".join([p async for p in model.stream(messages, sampling, stats=stats,
                                                  conversation=conversation)])


@pytest.mark.parametrize("question", [
    "What is the capital of France?",
    "Türkiye'nin başkenti neresidir? Kısaca söyle.",  # multi-byte letters split over tokens
])
async def test_a_reply_is_the_one_the_sequential_path_gives(
        smollm2: LlamaModel, batched: LlamaModel, question: str) -> None:
    expected = await collect(smollm2, ask(question))
    stats = Generation()
    assert await collect(batched, ask(question), stats=stats) == expected
    assert stats.finish_reason in ("stop", "length") and stats.completion_tokens > 1
    assert "\ufffd" not in expected


async def test_a_second_caller_is_answered_while_the_first_reply_runs(batched: LlamaModel) -> None:
    first = batched.stream(COUNT, LONG)
    received = 0
    async for _ in first:
        received += 1
        if received == 3:
            break
    second = asyncio.ensure_future(collect(batched, ask("What do bees make?")))
    after_second = 0
    async for _ in first:  # the first reply goes on
        after_second += second.done()
    assert await second
    # one at a time, the second answer would have waited for the whole first reply
    assert after_second > 0, "the second caller waited for the whole first reply"


async def test_each_call_keeps_its_history_cached(batched: LlamaModel) -> None:
    await batched.warm([DEFAULT_SYSTEM_PROMPT])
    greeting = "Hello! How can I help you today?"
    first = {call: Generation() for call in "ab"}
    replies = {}
    for call, question in (("a", "Tell me about your opening hours."),
                           ("b", "Which cities do you deliver to?")):
        # both calls begin alike (system prompt, greeting): only the call id tells them apart
        replies[call] = await collect(batched, [SYSTEM, {"role": "assistant", "content": greeting},
                                                {"role": "user", "content": question}],
                                      stats=first[call], conversation=call)
    assert first["b"].cached_tokens > 30  # the system prompt was shared, not evaluated again
    for call, question in (("a", "Tell me about your opening hours."),
                           ("b", "Which cities do you deliver to?")):
        second = Generation()
        await collect(batched, [SYSTEM, {"role": "assistant", "content": greeting},
                                {"role": "user", "content": question},
                                {"role": "assistant", "content": replies[call]},
                                {"role": "user", "content": "And on Sunday?"}],
                      stats=second, conversation=call)
        # the other call's turn did not evict this one's: only the new tail was evaluated
        assert second.cached_tokens >= first[call].prompt_tokens, call


def opening_tokens(model: LlamaModel, greeting: str) -> int:
    """Tokens of a call's first prompt before the caller's words: system prompt, greeting,
    and the template's user header."""
    prompt, _ = model.render([SYSTEM, {"role": "assistant", "content": greeting},
                              {"role": "user", "content": "QUESTION"}])
    return len(model.tokenize(prompt[: prompt.index("QUESTION")]))


async def test_a_calls_first_prompt_finds_its_greeting_warm() -> None:
    """warm([system prompt, greeting]) evaluates how every call opens, so a call's first
    question is all that is left to evaluate; a greeting that was not warmed is evaluated."""
    def first_turn(greeting: str, question: str) -> list[dict[str, str]]:
        return [SYSTEM, {"role": "assistant", "content": greeting},
                {"role": "user", "content": question}]

    model = LlamaModel(resolve_model(SMOLLM2), name="fresh", n_ctx=1024, parallel=2)
    model._load()
    try:
        warm, cold = "Good evening, this is the bakery.", "Good morning, this is the flower shop."
        await model.warm([[DEFAULT_SYSTEM_PROMPT, warm]])
        stats = Generation()
        await collect(model, first_turn(warm, "Do you have bread?"), stats=stats, conversation="y")
        assert stats.cached_tokens >= opening_tokens(model, warm) - 1
        stats = Generation()
        await collect(model, first_turn(cold, "Do you have roses?"), stats=stats, conversation="z")
        assert stats.cached_tokens < opening_tokens(model, cold) - 5
    finally:
        await model.close()


def test_what_follows_a_reply_is_read_from_the_template(batched: LlamaModel) -> None:
    between = batched._llm.detokenize(batched.next_turn_tokens(), special=True)
    assert between == b"<|im_end|>\n<|im_start|>user\n"


async def test_a_calls_next_prompt_finds_the_template_after_the_reply_cached(
        batched: LlamaModel) -> None:
    """While the caller listens to a reply, its slot evaluates what the template writes after
    it: the next turn evaluates only the caller's words and the assistant header."""
    history = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
    first = Generation()
    reply = await collect(batched, history, stats=first, conversation="prefill")
    assert first.finish_reason == "stop"
    decoder = batched._decoder
    for _ in range(200):
        if not decoder._prefilling():
            break
        await asyncio.sleep(0.01)
    history += [{"role": "assistant", "content": reply}]
    prompt, _ = batched.render([*history, {"role": "user", "content": "QUESTION"}])
    before_words = len(batched.tokenize(prompt[: prompt.index("QUESTION")]))
    second = Generation()
    await collect(batched, [*history, {"role": "user", "content": "And of Spain?"}],
                  stats=second, conversation="prefill")
    assert second.cached_tokens >= before_words - 1


async def test_a_one_off_request_does_not_evict_a_call(batched: LlamaModel) -> None:
    chat = ask("What is the capital of Italy?")
    first = Generation()
    reply = await collect(batched, chat, stats=first, conversation="call")
    await collect(batched, ask("Say hello."))  # no conversation: the least recently used slot
    again = Generation()
    await collect(batched, [*chat, {"role": "assistant", "content": reply},
                            {"role": "user", "content": "And of Spain?"}],
                  stats=again, conversation="call")
    assert again.cached_tokens >= first.prompt_tokens


async def test_a_conversation_beyond_the_sequences_evicts_one_and_says_so(caplog) -> None:
    """Three calls on two sequences: the third takes the least recently used call's sequence;
    that call's next turn evaluates its history again. Counted and logged (once a minute per
    model: a fresh one here)."""
    caplog.set_level(logging.WARNING, logger="vc.llm.llama_cpp")
    batched = LlamaModel(resolve_model(SMOLLM2), name="evictions", n_ctx=512, parallel=2)
    batched._load()
    try:
        await three_calls_on_two_sequences(batched, caplog)
    finally:
        await batched.close()


async def three_calls_on_two_sequences(batched: LlamaModel, caplog) -> None:
    decoder = batched._decoder
    first, replies = {}, {}
    for call, question in (("evict-a", "What is rain?"), ("evict-b", "What is wind?")):
        first[call] = Generation()
        replies[call] = await collect(batched, ask(question), stats=first[call], conversation=call)
    before = decoder.evictions
    await collect(batched, ask("What is snow?"), conversation="evict-c")
    assert decoder.evictions == before + 1
    said = [r.getMessage() for r in caplog.records if "more conversations" in r.getMessage()]
    assert said and "evict-a" in said[-1] and "(parallel)" in said[-1], said
    again = Generation()
    await collect(batched, ask("And hail?", "What is rain?", replies["evict-a"]), stats=again,
                  conversation="evict-a")
    # Its first question and reply are evaluated again (only the shared system prompt is not).
    assert again.cached_tokens < first["evict-a"].prompt_tokens
    assert decoder.evictions == before + 2  # it took evict-b's sequence in turn


async def test_requests_beyond_the_sequences_wait_in_order(batched: LlamaModel) -> None:
    running, most = 0, 0

    async def one(question: str, stats: Generation) -> str:
        nonlocal running, most
        text = ""
        async for piece in batched.stream(ask(question), Sampling(max_tokens=16, temperature=0.0),
                                          stats=stats):
            if not text:
                running += 1
                most = max(most, running)
            text += piece
        running -= 1
        return text

    stats = [Generation() for _ in range(3)]
    texts = await asyncio.gather(*(one(q, s) for q, s in zip(
        ["What is rain?", "What is snow?", "What is wind?"], stats, strict=True)))
    assert all(texts)
    assert most <= 2  # two sequences: never more than two replies at once
    assert max(s.queued for s in stats) > 0  # the third waited for a free sequence


async def test_closing_the_stream_frees_the_sequence(batched: LlamaModel) -> None:
    stats, received = Generation(), 0
    stream = batched.stream(COUNT, LONG, stats=stats)
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    after = await asyncio.gather(*(collect(batched, ask(q)) for q in ("Hi!", "Hello?")))
    assert all(after)  # both sequences serve again
    assert stats.cancelled and stats.finish_reason == "cancelled"
    assert stats.completion_tokens <= received + 1


async def test_a_stop_string_ends_the_reply_before_it(batched: LlamaModel) -> None:
    messages = ask("Describe a sunny day at the beach in two sentences.")
    full = await collect(batched, messages, Sampling(max_tokens=40, temperature=0.0))
    words = full.split()
    assert len(words) > 4
    stop = words[len(words) // 2]
    stats = Generation()
    cut = await collect(batched, messages,
                        Sampling(max_tokens=40, temperature=0.0, stop=(stop,)), stats)
    assert cut == full[: full.index(stop)]
    assert stats.finish_reason == "stop"


async def test_a_prompt_too_long_fails_alone(batched: LlamaModel) -> None:
    huge = ask("word " * 3000)
    good = asyncio.ensure_future(collect(batched, ask("What is the sun?")))
    with pytest.raises(ValueError, match="does not fit"):
        await collect(batched, huge)
    assert await good


async def test_the_time_limit_ends_a_reply(batched: LlamaModel) -> None:
    stats = Generation()
    await collect(batched, COUNT, Sampling(max_tokens=150, temperature=0.0, time_limit=0.0), stats)
    assert stats.finish_reason == "time_limit"


async def test_closing_the_model_ends_replies_in_flight(smollm2: LlamaModel) -> None:
    model = LlamaModel(smollm2.path, name="closing", n_ctx=512, parallel=2)
    await model.load()
    stats = Generation()
    stream: AsyncIterator[str] = model.stream(COUNT, LONG, stats=stats)
    assert await anext(stream)
    await model.close()
    rest = [p async for p in stream]  # the stream ends instead of hanging
    assert stats.finish_reason == "cancelled" and len(rest) < 150


async def test_warming_at_a_start_stays_on_n_threads() -> None:
    """At a start the other models load meanwhile: the warm-up's prompts do not take every
    core (threads spinning at each layer slowed an idle start by ~0.7 s, bench/README.md)."""
    model = LlamaModel(resolve_model(SMOLLM2), name="warm-threads", n_ctx=512, parallel=2,
                       n_threads=1, n_threads_batch=2)
    model._load()
    steps = record_threads(model)
    try:
        await model.warm([["You are a helpful assistant on the phone.", "Hello, how can I help?"]])
        assert any(tokens > 1 for _, tokens, _ in steps), steps
        assert {n for _, _, n in steps} == {1}, steps
    finally:
        await model.close()


def record_threads(model: LlamaModel) -> list[tuple[int, int, int]]:
    """The batch threads each of ``model``'s decoder steps used: (sequences fed, tokens fed,
    batch threads), appended as the steps run."""
    decoder = model._decoder
    assert decoder is not None
    steps: list[tuple[int, int, int]] = []
    real = decoder._threads_for

    def spy(fed):  # type: ignore[no-untyped-def]
        n = real(fed)
        steps.append((len(fed), sum(len(tokens) for _, tokens, _ in fed), n))
        return n

    decoder._threads_for = spy  # type: ignore[method-assign]
    return steps


async def test_a_prompt_uses_the_batch_threads_only_while_its_call_is_alone() -> None:
    """n_threads_batch for a lone prompt of the only call up; n_threads for a prompt while
    other calls are up and for batches of several sequences (the context really switches)."""
    from llama_cpp import llama_cpp as C

    model = LlamaModel(resolve_model(SMOLLM2), name="threads", n_ctx=512, parallel=2,
                       n_threads=1, n_threads_batch=2)
    model._load()
    decoder = model._decoder
    assert decoder is not None
    steps = record_threads(model)
    try:
        async def reply(question: str, alone: bool, sampling: Sampling = GREEDY) -> str:
            pieces = model.stream(ask(question), sampling, conversation=question, alone=alone)
            return "".join([p async for p in pieces])

        await reply("What is the capital of France?", alone=True)
        assert any(seqs == 1 and tokens > 1 and n == 2 for seqs, tokens, n in steps), steps
        steps.clear()
        await reply("What is the capital of Italy?", alone=False)
        prompt = [n for seqs, tokens, n in steps if tokens > 1]
        assert prompt and set(prompt) == {1}, steps
        assert C.llama_n_threads_batch(decoder._ctx) == 1
        steps.clear()
        await asyncio.gather(reply("Count to twenty.", True, LONG), reply("Name ten fruits.", True, LONG))
        assert any(seqs == 2 for seqs, _, _ in steps)
        assert all(n == 1 for seqs, _, n in steps if seqs == 2), steps
    finally:
        await model.close()

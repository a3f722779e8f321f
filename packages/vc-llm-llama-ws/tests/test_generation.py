"""llama.cpp generation: streaming, cancellation, the KV-cache prefix, serialisation, tools."""

from __future__ import annotations

import asyncio

from vc_llm_llama_ws.farewell import FarewellDetector
from vc_llm_llama_ws.generation import (
    Generation,
    LlamaModel,
    Sampling,
    ToolCallParser,
    ToolCallText,
    normalise_messages,
)

from vc.profiles import DEFAULT_SYSTEM_PROMPT

CHAT = [
    {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "What can you do for me?"},
]


async def _collect(
    model: LlamaModel, messages, sampling: Sampling, stats: Generation | None = None
):
    return "".join([p async for p in model.stream(messages, sampling, stats=stats)])


async def test_streams_tokens_and_counts_them(smollm2: LlamaModel) -> None:
    stats = Generation()
    pieces = [p async for p in smollm2.stream(CHAT, Sampling(max_tokens=24, seed=3), stats=stats)]
    assert "".join(pieces).strip()
    assert len(pieces) == stats.completion_tokens > 1
    assert stats.prompt_tokens > 20 and stats.finish_reason in ("stop", "length")
    assert stats.tokens_per_second > 0


async def test_closing_the_stream_stops_generation_within_a_token(smollm2: LlamaModel) -> None:
    stats = Generation()
    stream = smollm2.stream(CHAT, Sampling(max_tokens=200, seed=1, stop=()), stats=stats)
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    # the model is free again: the next request runs and completes
    after = Generation()
    text = await _collect(smollm2, CHAT, Sampling(max_tokens=8, seed=1), after)
    assert text
    assert stats.cancelled and stats.finish_reason == "cancelled"
    # the worker saw the flag after at most one more token than the consumer read
    assert stats.completion_tokens <= received + 1


async def test_system_prompt_prefix_stays_cached_between_turns(smollm2: LlamaModel) -> None:
    await smollm2.warm([DEFAULT_SYSTEM_PROMPT])
    first = Generation()
    reply = await _collect(smollm2, CHAT, Sampling(max_tokens=20, seed=2), first)
    # the system prompt's tokens: what two different chats with this system prompt share
    a = smollm2.tokenize(smollm2.render([CHAT[0], {"role": "user", "content": "x"}])[0])
    b = smollm2.tokenize(smollm2.render([CHAT[0], {"role": "assistant", "content": "y"}])[0])
    system_tokens = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert system_tokens > 30
    assert first.cached_tokens >= system_tokens  # warmed at startup
    second = Generation()
    turn2 = [*CHAT, {"role": "assistant", "content": reply}, {"role": "user", "content": "Thanks."}]
    await _collect(smollm2, turn2, Sampling(max_tokens=8, seed=2), second)
    # the whole first turn was reused, only the new tail was evaluated
    assert second.cached_tokens >= first.prompt_tokens - 1
    assert second.prompt_tokens > first.prompt_tokens


async def test_concurrent_requests_are_serialised_and_unharmed(smollm2: LlamaModel) -> None:
    other = [*CHAT[:2], {"role": "user", "content": "Tell me about the weather."}]
    sampling = Sampling(max_tokens=16, seed=7, temperature=0.0)
    alone_a = await _collect(smollm2, CHAT, sampling)
    alone_b = await _collect(smollm2, other, sampling)
    sa, sb = Generation(), Generation()
    both = await asyncio.gather(
        _collect(smollm2, CHAT, sampling, sa), _collect(smollm2, other, sampling, sb)
    )
    assert list(both) == [alone_a, alone_b]
    # one of the two waited for the other (one context, one generation at a time)
    assert max(sa.queued, sb.queued) > 0


def test_tool_call_parser_keeps_markup_out_of_speech() -> None:
    parser = ToolCallParser()
    stream = [
        "Goodbye",
        "! <tool",
        '_call>\n{"name": "end_call", ',
        '"arguments": {}}\n</tool_',
        "call>",
    ]
    out = [item for piece in stream for item in parser.feed(piece)] + parser.finish()
    speech = "".join(x for x in out if isinstance(x, str))
    assert speech == "Goodbye! "
    assert [x for x in out if isinstance(x, ToolCallText)] == [ToolCallText("end_call", {})]


def test_tool_call_parser_passes_plain_text_and_rejects_junk() -> None:
    parser = ToolCallParser()
    out = parser.feed("a < b and <tool_call>not json</tool_call> done") + parser.finish()
    assert "".join(x for x in out if isinstance(x, str)) == "a < b and  done"
    assert not [x for x in out if isinstance(x, ToolCallText)]
    unterminated = ToolCallParser()
    out = unterminated.feed(
        '<tool_call>{"name": "transfer_call", "arguments": "{\\"target\\": \\"100\\"}"}'
    )
    assert unterminated.finish() == [ToolCallText("transfer_call", {"target": "100"})] and out == []


def test_messages_normalised_for_templates() -> None:
    msgs = [
        {"role": "assistant", "content": "Hi"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "bye"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "function": {"name": "end_call", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "ok", "tool_call_id": "1"},
    ]
    plain = normalise_messages(msgs, keep_tools=False)
    assert plain == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "bye"},
    ]
    with_tools = normalise_messages(msgs, keep_tools=True)
    assert with_tools[3]["tool_calls"][0]["function"] == {"name": "end_call", "arguments": {}}
    assert with_tools[4]["role"] == "tool"


def test_farewell_is_the_callers_goodbye() -> None:
    f = FarewellDetector()
    bye = [{"role": "user", "content": "Thanks, that's all. Good-bye!"}]
    assert f.ends_call(bye, "Is there anything else?")
    assert f.ends_call(bye, "Goodbye, have a nice day.", confirm=True)
    assert not f.ends_call(bye, "Is there anything else?", confirm=True)
    assert not f.ends_call([{"role": "user", "content": "What time is it?"}], "Bye!")
    assert not f.says_goodbye("maybe")  # 'bye' only as a word
    assert f.says_goodbye("Hoşça kal!")


def test_farewell_matches_with_turkish_casing() -> None:
    """Issue 14: keywords are matched with the call language's casing (vc.phrases.fold)."""
    f = FarewellDetector(language="tr")
    assert f.says_goodbye("Tamam, HOŞÇA KALIN!") and f.says_goodbye("Görüşmek üzere.")
    assert FarewellDetector(["iyi geceler"], "tr").says_goodbye("İYİ GECELER")
    assert FarewellDetector(["allahaısmarladık"], "tr").says_goodbye("ALLAHAISMARLADIK")
    # the dotted capital İ is a plain i whatever the language; I is dotless only in Turkish
    assert FarewellDetector(["iyi geceler"], "en").says_goodbye("İYİ GECELER")
    assert not FarewellDetector(["allahaısmarladık"], "en").says_goodbye("ALLAHAISMARLADIK")
    assert FarewellDetector(language="tr").says_goodbye("BYE BYE")


async def test_long_conversation_drops_oldest_turns_to_fit(smollm2: LlamaModel) -> None:
    small = LlamaModel(smollm2.path, name="small-ctx", n_ctx=512)
    await small.load()
    try:
        history = [CHAT[0]]
        for i in range(30):
            history += [
                {"role": "user", "content": f"Question {i}: what is the weather like?"},
                {"role": "assistant", "content": f"Answer {i}: it is sunny and warm."},
            ]
        history.append({"role": "user", "content": "And tomorrow?"})
        stats = Generation()
        text = await _collect(small, history, Sampling(max_tokens=20, seed=1), stats)
    finally:
        await small.close()
    assert text.strip()
    assert stats.dropped_messages > 10 and stats.prompt_tokens <= 512 - 20

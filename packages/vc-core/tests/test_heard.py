"""vc.heard: an apology replaces, in the call's LLM context, the reply whose speech failed."""

from __future__ import annotations

from typing import Any

from pipecat.processors.aggregators.llm_context import LLMContext

from vc.heard import UnheardReply, replace_last_reply

APOLOGY = "Sorry, I can't answer right now. Please try again."
TOOL_CALL = {"role": "assistant", "tool_calls": [
    {"id": "1", "type": "function", "function": {"name": "transfer", "arguments": "{}"}}]}
TOOL_RESULT = {"role": "tool", "tool_call_id": "1", "content": "ok"}


def context(*messages: dict[str, Any]) -> LLMContext:
    return LLMContext(messages=[{"role": "assistant", "content": "Hello!"}, *messages])  # type: ignore[list-item]


def contents(ctx: LLMContext) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in ctx.get_messages()]  # type: ignore[index,union-attr]


def test_the_turns_reply_becomes_the_apology() -> None:
    ctx = context({"role": "user", "content": "란 리 고"}, {"role": "assistant", "content": "란 리 고"})
    assert replace_last_reply(ctx, APOLOGY)
    assert contents(ctx) == [("assistant", "Hello!"), ("user", "란 리 고"), ("assistant", APOLOGY)]


def test_no_reply_yet_leaves_earlier_turns_alone() -> None:
    ctx = context({"role": "user", "content": "one"}, {"role": "assistant", "content": "first"},
                  {"role": "user", "content": "two"})
    before = contents(ctx)
    assert not replace_last_reply(ctx, APOLOGY)
    assert contents(ctx) == before


def test_a_tool_call_is_kept_and_the_text_after_it_replaced() -> None:
    ctx = context({"role": "user", "content": "agent please"}, TOOL_CALL, TOOL_RESULT,
                  {"role": "assistant", "content": "Transferring you now."})
    assert replace_last_reply(ctx, APOLOGY)
    messages = ctx.get_messages()
    assert messages[2] == TOOL_CALL and messages[3] == TOOL_RESULT
    assert messages[4] == {"role": "assistant", "content": APOLOGY}


def test_a_turn_with_only_a_tool_call_has_nothing_to_replace() -> None:
    ctx = context({"role": "user", "content": "agent please"}, TOOL_CALL, TOOL_RESULT)
    assert not replace_last_reply(ctx, APOLOGY)
    assert ctx.get_messages()[2] == TOOL_CALL


def test_a_failure_before_the_commit_replaces_the_reply_when_it_arrives() -> None:
    ctx = context({"role": "user", "content": "question"})
    unheard = UnheardReply(ctx)
    unheard.answer_started()
    unheard.failed(APOLOGY)  # pipecat reports "no audio" before the aggregator commits
    ctx.add_message({"role": "assistant", "content": "an unspeakable reply"})
    unheard.committed()
    assert contents(ctx)[-1] == ("assistant", APOLOGY)
    ctx.add_message({"role": "user", "content": "again"})
    ctx.add_message({"role": "assistant", "content": "a spoken reply"})
    unheard.committed()  # nothing pending: the next turn's reply stays
    assert contents(ctx)[-1] == ("assistant", "a spoken reply")


def test_a_reply_that_never_arrives_is_recorded_as_the_apology() -> None:
    """A TTS that raised before speaking: no reply is committed; the apology the caller heard
    goes where it would have been once the next answer starts, not onto the next turn's reply."""
    ctx = context({"role": "user", "content": "question"})
    unheard = UnheardReply(ctx)
    unheard.answer_started()
    unheard.failed(APOLOGY)
    ctx.add_message({"role": "user", "content": "next question"})
    unheard.answer_started()
    ctx.add_message({"role": "assistant", "content": "the next answer"})
    unheard.committed()
    assert contents(ctx) == [("assistant", "Hello!"), ("user", "question"), ("assistant", APOLOGY),
                             ("user", "next question"), ("assistant", "the next answer")]

"""vc's chat adapter sends what pipecat's OpenAI adapter sends, without importing openai."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import AdapterType, ToolsSchema
from pipecat.adapters.llm.services.open_ai_adapter import OpenAILLMAdapter
from pipecat.processors.aggregators.llm_context import LLMContext, LLMSpecificMessage

from vc.chat_adapter import ChatAdapter
from vc.llm import StreamingLLMService

HANG_UP = FunctionSchema(
    name="end_call",
    description="End the call after saying goodbye.",
    properties={"reason": {"type": "string", "description": "why"}},
    required=["reason"],
)


def conversation(tools: Any = None) -> LLMContext:
    messages: list[Any] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hello, are you open today?"},
        {"role": "assistant", "content": "Yes, until five."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "end_call", "arguments": '{"reason": "done"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks."}]},
        LLMSpecificMessage(llm="openai", message={"role": "user", "content": "for OpenAI"}),
        LLMSpecificMessage(llm="anthropic", message={"role": "user", "content": "not sent"}),
    ]
    return LLMContext(messages=messages, tools=tools) if tools else LLMContext(messages=messages)


@pytest.mark.parametrize("tools", [
    None,
    ToolsSchema(standard_tools=[HANG_UP]),
    ToolsSchema(standard_tools=[HANG_UP], custom_tools={AdapterType.OPENAI: [
        {"type": "function", "function": {"name": "raw", "parameters": {}}}]}),
])
@pytest.mark.parametrize("system", ["You answer the phone for a bakery.", None])
@pytest.mark.parametrize("developer_to_user", [True, False])
async def test_the_same_messages_and_tools_as_pipecats_openai_adapter(
    tools: Any, system: str | None, developer_to_user: bool,
) -> None:
    ours = await ChatAdapter().get_llm_invocation_params(
        conversation(tools), system_instruction=system,
        convert_developer_to_user=developer_to_user)
    theirs = await OpenAILLMAdapter().get_llm_invocation_params(
        conversation(tools), system_instruction=system,
        convert_developer_to_user=developer_to_user)
    assert ours["messages"] == theirs["messages"]
    assert ours["tools"] == (theirs["tools"] if isinstance(theirs["tools"], list) else [])
    assert {"role": "user", "content": "not sent"} not in ours["messages"]


def plain(messages: list[Any]) -> list[dict[str, Any]]:
    return [dict(m.message if isinstance(m, LLMSpecificMessage) else m) for m in messages]


async def test_the_context_is_not_changed() -> None:
    context = conversation()
    before = plain(context.get_messages())
    params = await ChatAdapter().get_llm_invocation_params(context, system_instruction="S")
    assert params["messages"][1]["role"] == "user"  # the developer message, sent as the user's
    assert plain(context.get_messages()) == before


def test_logged_messages_are_pipecats_as_plain_dicts() -> None:
    context = conversation()
    assert ChatAdapter().get_messages_for_logging(context) == \
        plain(OpenAILLMAdapter().get_messages_for_logging(context))


def test_vc_services_use_it() -> None:
    assert StreamingLLMService.adapter_class is ChatAdapter


def test_a_call_pipeline_does_not_import_the_openai_sdk() -> None:
    """The SDK is pipecat's OpenAI adapter's dependency only; vc's start path leaves it out."""
    code = (
        "import sys\n"
        "from vc.testing.fakes import FakeLLMService, FakeLLMSettings\n"
        "FakeLLMService(FakeLLMSettings())\n"
        "import vc.session\n"
        "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('openai.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]

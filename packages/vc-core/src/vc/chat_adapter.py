"""OpenAI-style chat messages for vc's LLM services, without the openai package.

A pipecat LLM service turns its ``LLMContext`` into the messages it sends through an adapter
(``LLMService.adapter_class``, public API). The default is pipecat's OpenAI adapter, which
imports the openai SDK for its types alone: 0.44 CPU-s and 12 MB on vc's start path, to
return the very dicts the context already holds. vc's services speak that format to every
model (``StreamingLLMService.stream`` takes OpenAI-style messages and function tools), so
this adapter returns the same messages and tools with nothing to import.

A phone call's context holds text only: file and image parts are passed on unchanged, not
inlined (no vc provider sends files).
"""

from __future__ import annotations

from typing import Any, TypedDict

from pipecat.adapters.llm.base_llm_adapter import BaseLLMAdapter
from pipecat.adapters.llm.schemas.tools_schema import AdapterType, ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext, LLMSpecificMessage


class ChatParams(TypedDict):
    """What a vc LLM service sends: OpenAI-style messages and function tools."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]


class ChatAdapter(BaseLLMAdapter[ChatParams]):
    """The context's messages as OpenAI-style chat messages, its tools as function tools."""

    @property
    def id_for_llm_specific_messages(self) -> str:
        return "openai"  # messages pipecat or an app made for OpenAI-compatible services

    async def get_llm_invocation_params(
        self,
        context: LLMContext,
        *,
        system_instruction: str | None = None,
        convert_developer_to_user: bool = True,
        **_: Any,
    ) -> ChatParams:
        """The messages (the system instruction first, where given) and tools to send."""
        messages = [
            _chat_message(m, convert_developer_to_user) for m in self.get_messages(context)
        ]
        if system_instruction:
            messages.insert(0, {"role": "system", "content": system_instruction})
        tools = self.from_standard_tools(context.tools)
        return {"messages": messages, "tools": list(tools) if isinstance(tools, list) else []}

    def to_provider_tools_format(self, tools_schema: ToolsSchema) -> list[dict[str, Any]]:
        functions = [
            {"type": "function", "function": f.to_default_dict()}
            for f in tools_schema.standard_tools
        ]
        custom = (tools_schema.custom_tools or {}).get(AdapterType.OPENAI, [])
        return functions + list(custom)

    def get_messages_for_logging(self, context: LLMContext) -> list[dict[str, Any]]:
        return [_chat_message(m, False) for m in self.get_messages(context, truncate_large_values=True)]


def _chat_message(message: Any, developer_to_user: bool) -> dict[str, Any]:
    """A copy of one context message (the context's own dicts are never changed)."""
    out = dict(message.message if isinstance(message, LLMSpecificMessage) else message)
    if developer_to_user and out.get("role") == "developer":
        out["role"] = "user"
    return out

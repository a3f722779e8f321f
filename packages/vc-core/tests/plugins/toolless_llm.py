"""An LLM plugin whose instances support tools only when configured to (as ollama's
``tools = false`` or llama-cpp's ``tool_calls = off``), and whose model calls ``end_call``
when the caller says goodbye, offered or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs

from vc.hookspecs import hookimpl
from vc.llm import StreamingLLMService, ToolCallRequest
from vc.providers import CallContext, LLMProvider
from vc.settings import setting


@attrs.define
class ToollessSettings:
    tools: bool = setting(False, help="whether the model is offered tools")


class PushyService(StreamingLLMService):
    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        yield "Goodbye."
        yield ToolCallRequest("end_call", {})


class ToollessLLM(LLMProvider):
    name = "toolless"
    Settings = ToollessSettings
    supports_tools = True

    def __init__(self, settings: ToollessSettings, context: Any) -> None:
        super().__init__(settings, context)
        self.supports_tools = settings.tools

    def create_service(self, call: CallContext) -> PushyService:
        return PushyService()


@hookimpl
def register_llm(register):
    register(ToollessLLM)

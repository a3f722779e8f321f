"""An LLM provider that answers from a keyword table: a menu line, a hotline, a test double.

The worked LLM provider of docs/plugin-guide.md ("A provider"). The per-call service is a
``vc.llm.StreamingLLMService``: ``stream(messages, tools)`` yields the reply word by word, and
core turns that into pipecat frames, times it and speaks an apology if it fails. Tested with
``vc.testing.contracts.LLMContract`` (``test_contract.py`` beside this file).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import attrs

from vc.hookspecs import hookimpl
from vc.llm import StreamingLLMService, ToolCallRequest
from vc.providers import CallContext, LLMProvider
from vc.settings import setting


@attrs.define
class KeywordSettings:
    answers: str = setting(
        "hours: We are open from nine to five, Monday to Friday; "
        "price: A visit costs twenty euros; hello: Hello! Ask me about our hours or our prices.",
        help="'keyword: answer' pairs separated by ';' (the first keyword the caller says wins)",
    )
    fallback: str = setting("Sorry, I can tell you about our hours or our prices.",
                            help="the answer when no keyword matches")
    word_delay: float = setting(0.02, min=0, max=1, help="seconds between streamed words")

    def table(self) -> list[tuple[str, str]]:
        pairs = [item.partition(":") for item in self.answers.split(";")]
        return [(k.strip().lower(), v.strip()) for k, sep, v in pairs if sep and k.strip()]


class KeywordService(StreamingLLMService):
    def __init__(self, settings: KeywordSettings, **kwargs: Any) -> None:
        super().__init__(model="keywords", **kwargs)
        self.table = settings.table()
        self.fallback = settings.fallback
        self.word_delay = settings.word_delay

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        heard = next((str(m.get("content", "")) for m in reversed(messages) if m["role"] == "user"), "")
        said = heard.lower()
        reply = next((answer for key, answer in self.table if key in said), self.fallback)
        for i, word in enumerate(reply.split()):
            if i:
                await asyncio.sleep(self.word_delay)
            yield (" " if i else "") + word


class KeywordLLM(LLMProvider):
    name = "keywords"
    Settings = KeywordSettings
    description = "answers from a keyword table (no model)"

    def create_service(self, call: CallContext) -> KeywordService:
        return KeywordService(self.settings, system_prompt=call.profile.system_prompt)


@hookimpl
def register_llm(register):
    register(KeywordLLM)

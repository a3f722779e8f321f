"""A pipecat LLM service base where a provider overrides one method: ``stream``.

pipecat has no provider-neutral streaming base (its LLM services each re-implement the
frame protocol), so core provides one. ``StreamingLLMService`` turns what ``stream`` yields
into pipecat's frames, measures time to first token, enforces timeouts, runs tool calls
through pipecat's function-calling machinery, and apologises out loud when the provider
fails, so a call never hangs waiting for a token. On barge-in pipecat cancels the task
running ``stream``; the generator's ``finally`` is where a provider tells its server.

Each request shows the model its earlier replies as it wrote them. pipecat's context keeps a
reply as the TTS spoke it, its pieces joined again with single spaces ("Sure.\n\nPour ..."
becomes "Sure. Pour ..."); a local model's prompt cache (llama.cpp, Ollama) matches the
conversation token by token, so from that reply on every later turn was evaluated again (36 of
a reply's 50 tokens, 0.5 s on 2 cores). A reply that differs from what was generated only in
its whitespace goes back as generated; one cut short by a barge-in stays as it was heard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallFromLLM, LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.types import is_given

from vc.chat_adapter import ChatAdapter
from vc.phrases import ENGLISH
from vc.pipecat_adapter import push_llm_text

#: The English apology; a call hears its profile's (vc.phrases), see apology_for.
DEFAULT_APOLOGY = ENGLISH["apology"]

_log = logging.getLogger("vc.llm")


def apology_for(profile: Any, provider_apology: str) -> str:
    """What a call's LLM says when the model fails: the profile's apology (its own key, or
    resolved from the provider's ``apology`` or the phrases of its language), else the
    provider's."""
    own = getattr(profile, "apology", "")
    return own if isinstance(own, str) and own.strip() else provider_apology or DEFAULT_APOLOGY


@attrs.frozen
class ToolCallRequest:
    """The model asks to call a tool."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


class LLMProviderError(Exception):
    """The model server failed; the message is logged, the caller hears the apology."""


class StreamingLLMService(LLMService):
    """Subclass and implement :meth:`stream`."""

    adapter_class = ChatAdapter  # OpenAI-style messages without importing the openai SDK

    def __init__(
        self,
        *,
        system_prompt: str = "",
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        first_token_timeout: float = 10.0,
        token_timeout: float = 10.0,
        apology: str = DEFAULT_APOLOGY,
        **kwargs: Any,
    ) -> None:
        settings = LLMSettings(
            system_instruction=system_prompt or None, model=model, temperature=temperature,
            max_tokens=max_tokens, top_p=top_p, seed=seed,
        )
        # pipecat logs an error for every field left NOT_GIVEN: None means "unused".
        for f in dataclasses.fields(settings):
            if f.name != "extra" and not is_given(getattr(settings, f.name)):
                setattr(settings, f.name, None)
        super().__init__(settings=settings, **kwargs)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.first_token_timeout = first_token_timeout
        self.token_timeout = token_timeout
        self.apology = apology
        #: The call this service answers (set by the call's session): on its log lines.
        self.call_id: str | None = None
        #: Called with the reason each time the model fails a turn (the session counts it).
        self.on_failure: Callable[[str], None] | None = None
        #: seconds from request to first token, for each response (read by tests and benches)
        self.ttft: list[float] = []
        #: this call's replies as generated, by their text with whitespace squashed
        self._generated: dict[str, str] = {}

    def can_generate_metrics(self) -> bool:
        return True

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AsyncIterator[str | ToolCallRequest]:
        """Yield text deltas and tool calls for an OpenAI-style ``messages`` list."""
        raise NotImplementedError
        yield ""  # pragma: no cover

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._respond(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def _messages(self, context: LLMContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        settings = self.settings
        assert isinstance(settings, LLMSettings)  # what __init__ gave pipecat
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context,
            system_instruction=settings.system_instruction or None,
            convert_developer_to_user=True,
        )
        tools = params.get("tools")
        shown = self._without_apologies(params["messages"])
        messages = [self._as_generated(m) for m in shown]
        return messages, list(tools) if isinstance(tools, list) else []

    def _without_apologies(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` without the apologies vc said when a turn failed.

        The context keeps what the caller heard, the apology included (alone, or after half an
        answer the failure cut off). Shown its own apology, a small model answers the next
        question with the apology again (SmolLM2-135M, after a garbled question: 2 of 40;
        after half an answer: 13 of 20; with the apology left out: 0 of 40 and 0 of 20). A
        half answer stays, without the apology; a reply that was only the apology goes with
        the caller's words it answered (the caller was asked to say them again), so the turns
        still alternate as chat templates may require.
        """
        shown: list[dict[str, Any]] = []
        for message in messages:
            before = self._before_apology(message)
            if before is None:
                shown.append(message)
            elif before:
                shown.append({**message, "content": before})
            else:
                while shown and shown[-1].get("role") == "user":
                    shown.pop()
        return shown

    def _before_apology(self, message: dict[str, Any]) -> str | None:
        """What a text reply that ends with the apology said before it ("" if nothing); None
        for any other message."""
        apology = _squash(self.apology)
        content = message.get("content")
        if (not apology or message.get("role") != "assistant" or message.get("tool_calls")
                or not isinstance(content, str)):
            return None
        text = _squash(content)
        return text[: -len(apology)].rstrip() if text.endswith(apology) else None

    def _as_generated(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` with the text the model generated, where the context holds it respaced."""
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, str):
            return message
        generated = self._generated.get(_squash(content))
        return {**message, "content": generated} if generated and generated != content else message

    async def _respond(self, context: LLMContext) -> None:
        messages, tools = await self._messages(context)
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        calls: list[ToolCallRequest] = []
        reply: list[str] = []
        spoke = False
        started = time.monotonic()
        gen = self.stream(messages, tools).__aiter__()
        try:
            first = True
            while True:
                timeout = self.first_token_timeout if first else self.token_timeout
                try:
                    item = await asyncio.wait_for(gen.__anext__(), timeout)
                except StopAsyncIteration:
                    break
                if first:
                    first = False
                    self.ttft.append(time.monotonic() - started)
                    await self.stop_ttfb_metrics()
                if isinstance(item, ToolCallRequest):
                    calls.append(item)
                elif item:
                    spoke = True
                    reply.append(item)
                    await push_llm_text(self, item)
        except TimeoutError:
            what = "first token" if not spoke and not calls else "next token"
            await self._model_failed(f"no {what} from the model within the timeout", spoke)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._model_failed(f"model request failed: {type(e).__name__}: {e}", spoke)
        finally:
            await _close(gen)
        self._remember("".join(reply))
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())
        calls = self._offered_calls(calls, tools)
        if calls:
            await self.run_function_calls(
                [
                    FunctionCallFromLLM(
                        context=context,
                        tool_call_id=c.id or f"call_{i}_{int(time.time() * 1000)}",
                        function_name=c.name,
                        arguments=c.arguments,
                    )
                    for i, c in enumerate(calls)
                ]
            )

    def _remember(self, reply: str) -> None:
        if reply.strip():
            self._generated[_squash(reply)] = reply

    def _offered_calls(
        self, calls: list[ToolCallRequest], tools: list[dict[str, Any]]
    ) -> list[ToolCallRequest]:
        """The tool calls of ``calls`` that name a tool the model was offered; the others are
        dropped with a warning (the model, or the plugin, made them up: nothing runs them)."""
        offered = {str((t.get("function") or t).get("name", "")) for t in tools if isinstance(t, dict)}
        kept = [c for c in calls if c.name in offered]
        for c in calls:
            if c.name not in offered:
                _log.warning(
                    "%s: the model called tool %r, which it was not offered (offered: %s); "
                    "ignored", self, c.name, ", ".join(sorted(offered)) or "none",
                    extra={"call_id": self.call_id} if self.call_id else None,
                )
        return kept

    async def _model_failed(self, reason: str, spoke: bool) -> None:
        log = logger.bind(call_id=self.call_id) if self.call_id else logger
        log.error(f"{self}: {reason}; apologising")
        if self.on_failure is not None:
            try:
                self.on_failure(reason)
            except Exception as e:  # counting must not cost the caller the apology
                log.warning(f"{self}: failure callback failed: {e}")
        await self._apologise(spoke)

    async def _apologise(self, spoke: bool) -> None:
        """The caller hears the apology, also after half an answer the failure cut off."""
        await push_llm_text(self, (" " if spoke else "") + self.apology)


def _squash(text: str) -> str:
    """``text`` with every run of whitespace one space, and none at either end."""
    return " ".join(text.split())


async def _close(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception as e:  # a provider's cleanup must not break the call
            logger.debug(f"error closing LLM stream: {e}")


def tools_schema(tools: list[Any]) -> ToolsSchema:
    """pipecat ToolsSchema for vc Tools."""
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema

    return ToolsSchema(
        standard_tools=[
            FunctionSchema(
                name=t.name,
                description=t.description,
                properties=t.parameters,
                required=list(t.required),
            )
            for t in tools
        ]
    )

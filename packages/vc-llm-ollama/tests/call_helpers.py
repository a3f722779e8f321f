"""Driving one LLM service through a real pipecat pipeline, as a call would."""

from __future__ import annotations

import logging
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test

from vc.call import CallInfo
from vc.profiles import Profile, ProfileSettings
from vc.providers import CallContext, ProviderContext


def profile(**kwargs: Any) -> Profile:
    return Profile(
        "default", ProfileSettings(greeting="Hello! How can I help you today?", **kwargs)
    )


def provider_context(*profiles: Profile) -> ProviderContext:
    return ProviderContext(profiles=list(profiles) or [profile()], log=logging.getLogger("vc.test"))


def call_context(prof: Profile | None = None) -> CallContext:
    return CallContext(
        info=CallInfo(call_id="t-call", transport="test"),
        profile=prof or profile(),
        input_sample_rate=16000,
        output_sample_rate=8000,
        log=logging.LoggerAdapter(logging.getLogger("vc.test"), {}),
    )


def turn(*messages: dict[str, Any], tools: Any = None) -> LLMContextFrame:
    if tools is None:
        return LLMContextFrame(LLMContext(messages=list(messages)))
    return LLMContextFrame(LLMContext(messages=list(messages), tools=tools))


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def drive(service: Any, *frames: Frame, start_timeout: float = 30.0) -> list[Frame]:
    down, _ = await run_test(service, frames_to_send=list(frames), start_timeout=start_timeout)
    return list(down)


def replies(frames: list[Frame]) -> list[str]:
    """The text of each response, split at LLMFullResponseEndFrame (interruptions end one too)."""
    out, current = [], []
    for f in frames:
        if isinstance(f, LLMTextFrame):
            current.append(f.text)
        elif isinstance(f, (LLMFullResponseEndFrame, InterruptionFrame)):
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return out


__all__ = ["InterruptionFrame", "SleepFrame"]

"""Settings and helpers the llama-ws and llama-cpp providers share."""

from __future__ import annotations

from typing import Any

from vc.llm import DEFAULT_APOLOGY, apology_for
from vc.providers import CallContext
from vc.settings import setting


def first_token_timeout_setting(default: float = 10.0) -> Any:
    return setting(default, min=0.1, max=600, help="seconds to wait for the first token before apologising")


def token_timeout_setting(default: float = 10.0) -> Any:
    return setting(default, min=0.1, max=600, help="seconds to wait for each further token before giving up")


def apology_setting() -> Any:
    return setting(DEFAULT_APOLOGY, help="said to the caller when the model fails or times out")


def per_call(settings: Any, call: CallContext) -> tuple[float, int]:
    """Temperature and max_tokens for a call: the profile's values override the provider's."""
    profile = call.profile
    temperature = profile.temperature if profile.temperature is not None else settings.temperature
    max_tokens = profile.max_tokens if profile.max_tokens is not None else settings.max_tokens
    return float(temperature), int(max_tokens)


def service_kwargs(settings: Any, call: CallContext) -> dict[str, Any]:
    temperature, max_tokens = per_call(settings, call)
    return {
        "system_prompt": call.profile.system_prompt,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "first_token_timeout": settings.first_token_timeout,
        "token_timeout": settings.token_timeout,
        "apology": apology_for(call.profile, settings.apology),
    }


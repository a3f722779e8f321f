"""What a configured provider can do, asked of the instance that will serve the calls.

A provider's ``languages``, ``sample_rate`` and ``supports_tools`` are declared on its class,
but an instance may narrow them from its settings in ``__init__`` (an English-only Whisper
model, a Vosk model's language, tools turned off). ``vc config check`` (through
:func:`vc.config.resolve`) and ``vc serve`` (:meth:`vc.engine.Engine.start`) both build the
instance with :func:`create_provider` and judge it with :func:`capability_errors`, so they
reach the same verdict. Building an instance must stay cheap: models load in ``start()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from vc.profiles import Profile
from vc.providers import Provider, ProviderContext
from vc.settings import ConfigError

#: The rates Silero VAD accepts; the VAD runs at the STT's input rate.
VAD_RATES = (8000, 16000)


def served_profiles(kind: str, name: str, profiles: Sequence[Profile], default: str) -> list[Profile]:
    """The profiles that use provider ``name`` of ``kind`` (naming it, or by default)."""
    return [p for p in profiles if (getattr(p.settings, kind) or default) == name]


def create_provider(
    cls: type[Provider],
    kind: str,
    name: str,
    settings: Any,
    profiles: Sequence[Profile],
    default: str,
    observe: Callable[[str, float, dict[str, str]], None] | None = None,
) -> Provider:
    """The provider instance core runs for ``[kind] name``, with the profiles it serves."""
    extra: dict[str, Any] = {} if observe is None else {"observe": observe}
    context = ProviderContext(
        profiles=served_profiles(kind, name, profiles, default),
        log=logging.getLogger(f"vc.{kind}.{name}"),
        **extra,
    )
    return cls(settings, context)


def capability_errors(kind: str, name: str, provider: Provider) -> list[ConfigError]:
    """Why ``provider`` (an instance, as configured) cannot serve the profiles it was given."""
    errors: list[ConfigError] = []
    for p in provider.context.profiles:
        language = p.settings.language
        if not provider.supports_language(language):
            errors.append(
                ConfigError(
                    f"profile.{p.name}", "language", language,
                    f"{kind} provider {name!r} does not support this language "
                    f"(supports: {', '.join(provider.languages)})",
                )
            )
    rate = getattr(provider, "sample_rate", None)
    if kind == "stt" and isinstance(rate, int) and rate not in VAD_RATES:
        errors.append(
            ConfigError(
                f"stt.{name}", "sample_rate", str(rate),
                f"the STT takes {rate} Hz, but the VAD (Silero) runs at the STT's rate and "
                "accepts only 8000 or 16000 Hz",
            )
        )
    return errors


def tools_unavailable(provider: Any, profile: Profile) -> list[str]:
    """The tools ``profile`` lists that ``provider`` (an LLM instance) cannot be offered
    because it does not support tools: core then passes ``tools=[]`` and the model can
    neither hang up nor transfer."""
    if getattr(provider, "supports_tools", False):
        return []
    return list(profile.settings.tools)


def capability_warnings(kind: str, name: str, provider: Provider) -> list[str]:
    """What ``provider`` as configured will quietly not do for the profiles it serves."""
    warnings = []
    if kind == "llm":
        for p in provider.context.profiles:
            lost = tools_unavailable(provider, p)
            if lost:
                warnings.append(
                    f"profile {p.name!r} lists tools ({', '.join(lost)}) but llm provider "
                    f"{name!r} as configured does not support tools: the model cannot call them "
                    "(use an LLM with tools, or set tools = (empty) in the profile)"
                )
    return warnings


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
from vc.textnorm import primary

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


def voice_language_warnings(name: str, provider: Provider) -> list[str]:
    """Profiles whose TTS voice speaks another language than the profile's.

    A TTS provider tells the language of the voice it would use for a profile through an
    optional ``voice_language(profile) -> str`` method ("" when it cannot tell without loading
    the voice). A profile whose language the provider does not support at all is already an
    error (:func:`capability_errors`), so it is not warned about again.
    """
    voice_language = getattr(provider, "voice_language", None)
    if not callable(voice_language):
        return []
    warnings = []
    for p in provider.context.profiles:
        language = p.settings.language
        if not provider.supports_language(language):
            continue
        try:
            spoken = str(voice_language(p) or "")
        except Exception:  # a voice that cannot be inspected now fails at startup instead
            continue
        if spoken and primary(spoken) != primary(language):
            warnings.append(
                f"profile {p.name!r} has language = {language} but tts provider {name!r} "
                f"speaks it with {voice_description(provider, p)} (language {spoken}): callers "
                f"will hear {language} text read with {spoken} pronunciation (set a "
                f"{primary(language)} voice in [tts] or the profile's voice)"
            )
    return warnings


def voice_description(provider: Provider, profile: Profile) -> str:
    describe = getattr(provider, "voice_name", None)
    return f"voice {describe(profile)!r}" if callable(describe) else "its configured voice"


def capability_warnings(kind: str, name: str, provider: Provider) -> list[str]:
    """What ``provider`` as configured will quietly not do for the profiles it serves."""
    warnings = []
    if kind == "tts":
        warnings += voice_language_warnings(name, provider)
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


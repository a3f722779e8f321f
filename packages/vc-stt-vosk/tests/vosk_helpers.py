"""Test material for vc-stt-vosk: Korean speech, a service harness, provider factories."""

from __future__ import annotations

import functools
import re

from vc.profiles import Profile
from vc.providers import CallContext, ProviderContext
from vc.testing import services
from vc.testing.calls import speech
from vc.testing.services import Observed
from vc.testing.services import ServiceHarness as Harness

__all__ = ["Harness", "Observed"]

#: Korean phrases espeak-ng says well enough for the small Korean Vosk model, with a word
#: the transcript must contain. (espeak-ng's Korean is hard to understand: most sentences come
#: back as other words, so content checks use these; see docs/stt.md for measured rates.)
HELLO = ("여보세요", "여보세요")
PROBLEM = ("문제가 있습니다", "있습")


@functools.lru_cache(maxsize=32)
def korean(text: str, rate: int = 16000, wpm: int = 165) -> bytes:
    """espeak-ng Korean, with 0.2 s of silence before and 0.6 s after (an utterance)."""
    return bytes(rate // 5 * 2) + speech(text, rate, "ko", wpm) + bytes(rate * 6 // 10 * 2)


def hangul(text: str) -> bool:
    return bool(re.search(r"[\uac00-\ud7a3]", text))


def profile(language: str = "ko", name: str = "default", stt: str = "") -> Profile:
    return services.profile(language, name, stt=stt)


def provider_context(profiles: list[Profile] | None = None,
                     observed: Observed | None = None) -> ProviderContext:
    return services.provider_context(*(profiles or [profile()]), observed=observed,
                                     log="vc.stt.vosk")


def call_context(language: str = "ko", rate: int = 16000) -> CallContext:
    return services.call_context(language, rate)

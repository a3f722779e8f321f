"""Ending the call for models that cannot call tools: the caller's goodbye.

SmolLM2-135M and Qwen2.5-Coder-0.5B do not emit tool calls (measured: none of the goodbye
test phrases produced one, even with the tool list in the prompt). In ``farewell`` mode the
embedded provider asks for ``end_call`` after its reply when the caller's last words contain a
farewell phrase (a word match: "bye" but not "maybe"). With ``farewell_confirm`` the model's
reply must say goodbye too - safer against a stray "bye", but SmolLM2 answers only about half
of the goodbyes with one (Qwen2.5-0.5B nearly all), so it is off by default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from vc.phrases import fold

DEFAULT_FAREWELLS = (
    "goodbye",
    "good bye",
    "bye",
    "bye bye",
    "farewell",
    "hoşça kal",
    "hoşça kalın",
    "güle güle",
    "görüşürüz",
    "görüşmek üzere",
)


def _pattern(phrases: Sequence[str], language: str) -> re.Pattern[str]:
    words = sorted((fold(p.strip(), language) for p in phrases if p.strip()), key=len, reverse=True)
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"[\s-]*") for w in words) or r"(?!x)x"
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


class FarewellDetector:
    """Farewell phrases matched as words, case-insensitively in the call's ``language`` (Turkish
    casing for tr: "HOŞÇA KALIN" is "hoşça kalın")."""

    def __init__(self, phrases: Sequence[str] = DEFAULT_FAREWELLS, language: str = "") -> None:
        self._language = language
        self._re = _pattern(phrases, language)

    def says_goodbye(self, text: str) -> bool:
        return bool(self._re.search(fold(text.replace("\u2019", "'"), self._language)))

    def ends_call(
        self, messages: Sequence[dict[str, Any]], reply: str, confirm: bool = False
    ) -> bool:
        """Whether the caller's last message says goodbye (and, if ``confirm``, the reply too)."""
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last_user is None:
            return False
        content = last_user.get("content")
        user_text = content if isinstance(content, str) else str(content or "")
        return self.says_goodbye(user_text) and (not confirm or self.says_goodbye(reply))

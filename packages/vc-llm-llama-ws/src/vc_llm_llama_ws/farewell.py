"""Ending the call for models that cannot call tools: the model's own goodbye.

SmolLM2-135M and Qwen2.5-Coder-0.5B do not emit tool calls (measured: none of the goodbye
test phrases produced one, even with the tool list in the prompt), but both reliably answer a
caller's goodbye with a goodbye, as vc's default system prompt asks. In ``farewell`` mode the
embedded provider asks for ``end_call`` when the caller's last words *and* the model's reply
both contain a farewell phrase. Requiring both keeps a stray "bye" in either from hanging up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

DEFAULT_FAREWELLS = (
    "goodbye",
    "good bye",
    "bye",
    "farewell",
    "hang up",
    "that's all",
    "that is all",
    "hoşça kal",
    "güle güle",
    "görüşürüz",
    "iyi günler",
)


def _pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    words = sorted((p.strip().lower() for p in phrases if p.strip()), key=len, reverse=True)
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"[\s-]*") for w in words) or r"(?!x)x"
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class FarewellDetector:
    def __init__(self, phrases: Sequence[str] = DEFAULT_FAREWELLS) -> None:
        self._re = _pattern(phrases)

    def says_goodbye(self, text: str) -> bool:
        return bool(self._re.search(text.replace("\u2019", "'")))

    def ends_call(self, messages: Sequence[dict[str, Any]], reply: str) -> bool:
        """Whether the caller's last message and the model's reply both say goodbye."""
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last_user is None:
            return False
        content = last_user.get("content")
        user_text = content if isinstance(content, str) else str(content or "")
        return self.says_goodbye(user_text) and self.says_goodbye(reply)

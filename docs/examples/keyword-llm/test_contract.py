"""keywords against vc's LLM contract, and its own behaviour."""

from __future__ import annotations

import pytest
from keyword_llm import KeywordLLM, KeywordSettings
from pipecat.frames.frames import LLMTextFrame

from vc.testing.contracts import LLMContract


class TestKeywordLLM(LLMContract):
    provider = KeywordLLM
    question = "What are your opening hours?"

    def make_settings(self) -> KeywordSettings:
        return KeywordSettings(word_delay=0.0)

    @pytest.mark.asyncio
    async def test_answers_from_the_table(self) -> None:
        frames = await self._ask([{"role": "user", "content": "how much is the price?"}])
        text = "".join(f.text for f in frames if isinstance(f, LLMTextFrame))
        assert text == "A visit costs twenty euros"
        frames = await self._ask([{"role": "user", "content": "when are you open? what are the hours"}])
        text = "".join(f.text for f in frames if isinstance(f, LLMTextFrame))
        assert text == "We are open from nine to five, Monday to Friday"
        frames = await self._ask([{"role": "user", "content": "do you sell bicycles?"}])
        assert "hours or our prices" in "".join(f.text for f in frames if isinstance(f, LLMTextFrame))

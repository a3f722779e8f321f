"""Cutting streamed text into clauses, so speech starts after the first clause, not the sentence.

:class:`ClauseAggregator` replaces pipecat's sentence aggregator in our TTS services. It emits
at sentence ends (pipecat's own sentence detection, abbreviations and decimals included) and
also at ``,`` ``;`` ``:`` ``—`` (and a spaced ``-``/``–``) once the pending clause has enough
words; a comma between digits (``1,000``) never splits because a break needs whitespace after
the punctuation.

:func:`split_for_synthesis` cuts a text into short pieces for the synthesiser, so a cancelled
request stops within one short piece instead of finishing a long sentence nobody hears.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

CLAUSE_PUNCTUATION = ",;:—"


def count_words(text: str) -> int:
    """Words as a listener counts them: "10:30'da" and "1,000" are one word each."""
    return sum(1 for token in text.split() if any(c.isalnum() for c in token))


class ClauseAggregator(SimpleTextAggregator):
    """Sentence aggregation plus clause breaks for long enough clauses."""

    def __init__(self, *, min_words: int = 4, max_words: int = 40, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_words = min_words
        self.max_words = max_words

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self._aggregation_type == TextType.TOKEN:
            async for a in super().aggregate(text):
                yield a
            return
        for char in text:
            self._text += char
            sentence = await self._check_sentence_with_lookahead(char)
            if sentence is not None:
                yield sentence
                continue
            clause = self._check_clause(char)
            if clause is not None:
                yield clause

    def _sentence_pending(self) -> bool:
        # A sentence-ending candidate waits for its lookahead; don't cut under it.
        return self._lookahead_state.name != "IDLE"

    def _check_clause(self, char: str) -> Aggregation | None:
        if len(self._text) < 2:
            return None
        text = self._text
        # ";" is a sentence candidate to pipecat, which rarely accepts it; it is a clause to us.
        semicolon = char.isspace() and text[-2] == ";"
        if self._sentence_pending() and not semicolon:
            return None
        cut = 0
        if char.isspace() and text[-2] in CLAUSE_PUNCTUATION:
            cut = len(text) - 1
        elif text[-2] == "—" and not char.isdigit():
            cut = len(text) - 1
        elif char.isspace() and (text.endswith(" - ") or text.endswith(" – ")):
            cut = len(text) - 1
        elif char.isspace() and count_words(text) >= self.max_words:
            cut = len(text) - 1
        if not cut:
            return None
        clause = text[:cut]
        if count_words(clause) < self.min_words:
            return None
        self._text = text[cut:]
        self._lookahead_state = type(self._lookahead_state).IDLE
        return Aggregation(text=clause.strip(), type=TextType.SENTENCE)


_SENTENCE_END = re.compile(r"(?<=[.!?…;])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:—])\s+")


def _cap_chars(piece: str, max_chars: int) -> list[str]:
    """Cut a piece longer than ``max_chars`` at spaces (or anywhere, for one endless word)."""
    out = []
    while len(piece) > max_chars:
        cut = piece.rfind(" ", 0, max_chars)
        cut = cut if cut > 0 else max_chars
        out.append(piece[:cut])
        piece = piece[cut:].lstrip()
    return [*out, piece]


def split_for_synthesis(text: str, max_words: int = 16, max_chars: int = 160) -> list[str]:
    """Short pieces of ``text``: sentences, then clauses, then groups of ``max_words`` words;
    no piece longer than ``max_chars`` characters."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        if count_words(sentence) <= max_words:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            if current and count_words(current) + count_words(clause) > max_words:
                pieces.append(current)
                current = ""
            current = f"{current} {clause}".strip()
            while count_words(current) > max_words:
                words = current.split(" ")
                head, current = " ".join(words[:max_words]), " ".join(words[max_words:])
                pieces.append(head)
        if current:
            pieces.append(current)
    capped = [c for p in pieces for c in _cap_chars(p.strip(), max_chars)]
    return [p for p in capped if p]

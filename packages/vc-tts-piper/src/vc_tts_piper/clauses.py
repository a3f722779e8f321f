"""Cutting streamed text into clauses, so speech starts after the first clause, not the sentence.

:class:`ClauseAggregator` (it lives in :mod:`vc.pipecat_adapter`, as it extends pipecat's
aggregator from the inside) replaces pipecat's sentence aggregator in our TTS services: it emits
at sentence ends and also at clause punctuation once the pending clause has enough words.

:func:`split_for_synthesis` cuts a text into short pieces for the synthesiser, so a cancelled
request stops within one short piece instead of finishing a long sentence nobody hears.
"""

from __future__ import annotations

import re

from vc.pipecat_adapter import CLAUSE_PUNCTUATION, ClauseAggregator, count_words

__all__ = ["CLAUSE_PUNCTUATION", "ClauseAggregator", "count_words", "split_for_synthesis"]

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

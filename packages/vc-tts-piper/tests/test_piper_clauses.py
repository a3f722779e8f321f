"""The clause aggregator and the synthesis splitter."""

from __future__ import annotations

import os

from hypothesis import example, given, settings
from hypothesis import strategies as st
from piper_helpers import tokens
from vc_tts_piper.clauses import ClauseAggregator, count_words, split_for_synthesis

#: nox -s fuzz raises every property's budget to VC_FUZZ_EXAMPLES (5000).
FUZZ_EXAMPLES = int(os.environ.get("VC_FUZZ_EXAMPLES", "0"))


async def aggregate(chunks: list[str], **kwargs) -> list[str]:
    agg = ClauseAggregator(**kwargs)
    out = []
    for chunk in chunks:
        out += [a.text async for a in agg.aggregate(chunk)]
    rest = await agg.flush()
    return out + ([rest.text] if rest and rest.text else [])


REPLY = ("Sure, I can help with that. Our office opens at 9:30, and we have 1,000 parking "
         "spaces, which is plenty. Dr. Smith will see you at 3.30 today; bring your bank card — "
         "and your insurance details!")


async def test_clauses_as_the_llm_streams() -> None:
    assert await aggregate(tokens(REPLY)) == [
        "Sure, I can help with that.",
        "Our office opens at 9:30,",
        "and we have 1,000 parking spaces,",
        "which is plenty.",
        "Dr. Smith will see you at 3.30 today;",
        "bring your bank card —",
        "and your insurance details!",
    ]


async def test_chunking_does_not_change_the_result() -> None:
    by_token = await aggregate(tokens(REPLY))
    assert await aggregate([REPLY]) == by_token
    assert await aggregate(list(REPLY)) == by_token


async def test_first_clause_comes_before_the_sentence_ends() -> None:
    agg = ClauseAggregator()
    out = []
    for tok in tokens("Well, let me check your order for you, it will only take a moment"):
        out += [a.text async for a in agg.aggregate(tok)]
        if out:
            break
    assert out == ["Well, let me check your order for you,"]
    assert agg.text.text == "it"  # the rest waits for more text


async def test_short_clauses_and_numbers_do_not_split() -> None:
    assert await aggregate(tokens("Yes, sure, ok.")) == ["Yes, sure, ok."]
    text = "It costs 1,250,000 dollars and 3,5 euros in total, really."
    assert await aggregate(tokens(text)) == [
        "It costs 1,250,000 dollars and 3,5 euros in total,", "really."]
    assert await aggregate(tokens("Meet at 10:30 in the lobby.")) == ["Meet at 10:30 in the lobby."]


async def test_min_words_is_configurable() -> None:
    assert await aggregate(tokens("Yes, sure, ok."), min_words=1) == ["Yes,", "sure,", "ok."]


async def test_long_text_without_punctuation_is_cut() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    out = await aggregate(tokens(text), max_words=40)
    assert [count_words(c) for c in out] == [40, 40, 20]


async def test_interruption_drops_the_pending_clause() -> None:
    agg = ClauseAggregator()
    _ = [a async for a in agg.aggregate("Let me think about")]
    await agg.handle_interruption()
    assert await agg.flush() is None


async def test_turkish_sentences() -> None:
    text = "Merhaba, size nasıl yardımcı olabilirim? Toplantı 10:30'da, yani yarım saat sonra."
    assert await aggregate(tokens(text), language="tr") == [
        "Merhaba, size nasıl yardımcı olabilirim?", "Toplantı 10:30'da, yani yarım saat sonra."]


def test_split_for_synthesis() -> None:
    text = ("Short one. This sentence is much longer than the limit allows, so it is cut at its "
            "clauses, and then into groups of words when a clause alone is still far too long.")
    pieces = split_for_synthesis(text, max_words=8)
    assert pieces[0] == "Short one."
    assert all(count_words(p) <= 8 for p in pieces)
    assert " ".join(pieces) == text
    assert split_for_synthesis("x" * 1000, max_chars=160) == ["x" * 160] * 6 + ["x" * 40]
    assert split_for_synthesis("  ") == []


# same examples on every CI run
@settings(max_examples=max(200, FUZZ_EXAMPLES), deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from(list("abc ,.;:!?—-1")), max_size=300))
@example("1" * 31)  # one word longer than a piece (found by hypothesis in CI)
def test_split_loses_no_words(text: str) -> None:
    pieces = split_for_synthesis(text, max_words=5, max_chars=30)
    if all(len(w) <= 30 for w in text.split()):
        assert " ".join(pieces).split() == text.split()
    else:  # a word longer than a piece is cut inside (see the "x" * 1000 case): no character lost
        assert "".join(" ".join(pieces).split()) == "".join(text.split())
    assert all(len(p) <= 30 for p in pieces)

"""vc.textnorm, the normaliser every TTS plugin applies before synthesis.

English and Turkish rules, Turkish casing, and what must never happen.
"""

from __future__ import annotations

import os
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vc.textnorm import cardinal, lower, normalize, ordinal, upper, year_en

#: nox -s fuzz raises every property's budget to VC_FUZZ_EXAMPLES (5000).
FUZZ_EXAMPLES = int(os.environ.get("VC_FUZZ_EXAMPLES", "0"))

EN = [
    ("It costs $5.99.", "It costs five dollars and ninety-nine cents."),
    ("$1 or $0.50 or $1,000", "one dollar or fifty cents or one thousand dollars"),
    ("$2.5 million", "two point five million dollars"),
    ("£1 and €20", "one pound and twenty euros"),
    ("We open at 9:05 am and close at 10:00.",
     "We open at nine oh five a m and close at ten o'clock."),
    ("Meet me at 15:30", "Meet me at fifteen thirty"),
    ("Call at 5pm", "Call at five p m"),
    ("1,000 people and 1,250,000 dollars", "one thousand people and one million two hundred fifty "
     "thousand dollars"),
    ("pi is 3.14", "pi is three point one four"),
    ("50% off", "fifty percent off"),
    ("the 1st, 2nd, 3rd and 22nd", "the first, second, third and twenty-second"),
    ("in 1990 and in 2024", "in nineteen ninety and in twenty twenty-four"),
    ("It was -5 outside", "It was minus five outside"),
    ("5-10 minutes", "five to ten minutes"),
    ("Call 555-123-4567.", "Call five five five, one two three, four five six seven."),
    ("The date is 2024-05-01.", "The date is May first, twenty twenty-four."),
    ("It is 72°F", "It is seventy-two degrees Fahrenheit"),
    ("ticket #3", "ticket number three"),
    ("**Bold** and *italic* and `code`", "Bold and italic and code"),
    ("See [the docs](https://example.com/docs).", "See the docs."),
    ("Visit https://www.example.com/path?x=1.", "Visit example dot com."),
    ("Mail john.doe@example.org!", "Mail john dot doe at example dot org!"),
    ("Great job 👍🏽🎉 thanks", "Great job thanks"),
    ("- apples\n- pears\n## Next\nDone", "apples. pears. Next. Done"),
    ("Tom & Jerry", "Tom and Jerry"),
    ("e.g. Dr. Smith", "for example Doctor Smith"),
    ("THIS IS VERY IMPORTANT for NASA", "this is very important for NASA"),
]

TR = [
    ("Fiyatı 5,99 TL.", "Fiyatı beş lira doksan dokuz kuruş."),
    ("₺50 ve $100 ve €20,50", "elli lira ve yüz dolar ve yirmi avro elli sent"),
    ("1.250.000 TL", "bir milyon iki yüz elli bin lira"),
    ("Saat 10:30'da buluşalım.", "Saat on otuzda buluşalım."),
    ("Toplantı 09:00'da", "Toplantı dokuzda"),
    ("%50 indirim", "yüzde elli indirim"),
    ("%50'si geldi", "yüzde ellisi geldi"),
    ("1.000 kişi", "bin kişi"),
    ("3,25 metre ve 3.5 kilo", "üç virgül yirmi beş metre ve üç virgül beş kilo"),
    ("3. kat", "üçüncü kat"),
    ("2024'te 1'inci oldu", "iki bin yirmi dörtte birinci oldu"),
    ("5-10 dakika", "beş on dakika"),
    ("Tarih 01.05.2024", "Tarih bir mayıs iki bin yirmi dört"),
    ("Sıcaklık -5 derece", "Sıcaklık eksi beş derece"),
    ("Hava 25°C", "Hava yirmi beş derece santigrat"),
    ("örn. Dr. Ahmet vb.", "örneğin Doktor Ahmet ve benzeri"),
    ("İSTANBUL IŞIK ÇOK GÜZEL", "istanbul ışık çok güzel"),
    ("Telefon 0532 123 45 67.", "Telefon sıfır beş üç iki, bir iki üç, dört beş, altı yedi."),
    ("bilgi@ornek.com.tr", "bilgi et ornek nokta com nokta tr"),
]


@pytest.mark.parametrize(("text", "spoken"), EN)
def test_english(text: str, spoken: str) -> None:
    assert normalize(text, "en") == spoken


@pytest.mark.parametrize(("text", "spoken"), TR)
def test_turkish(text: str, spoken: str) -> None:
    assert normalize(text, "tr") == spoken


def test_region_tags_select_the_rules() -> None:
    assert normalize("5,5 TL", "tr-TR") == "beş lira elli kuruş"
    assert normalize("$5", "en-US") == "five dollars"


def test_other_languages_keep_digits_for_the_voice() -> None:
    # No German number rules here: espeak-ng reads German digits itself.
    assert normalize("Das kostet 5 Euro 😀 **heute**", "de") == "Das kostet 5 Euro heute"


def test_turkish_casing() -> None:
    assert lower("İSTANBUL IŞIK", "tr") == "istanbul ışık"
    assert upper("istanbul ışık", "tr") == "İSTANBUL IŞIK"
    # What str.lower() would have done, and English keeps doing.
    assert "İSTANBUL".lower() != "istanbul"
    assert lower("IRIS", "en") == "iris"


def test_nothing_to_say() -> None:
    for text in ("", "   ", "😀😀🎉", "**", "```\ncode\n```", "| --- |"):
        assert normalize(text, "en") == ""
        assert normalize(text, "tr") == ""


def test_numbers() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(1_000_001) == "one million one"
    assert cardinal(999_999_999_999_999) .startswith("nine hundred ninety-nine trillion")
    assert cardinal(10**16) == "one " + " ".join(["zero"] * 16)  # digit by digit
    assert cardinal(1000, "tr") == "bin"
    assert cardinal(1_001_000, "tr") == "bir milyon bin"
    assert cardinal(21_000, "tr") == "yirmi bir bin"
    assert cardinal(100, "tr") == "yüz"
    assert cardinal(-3, "tr") == "eksi üç"
    assert ordinal(12) == "twelfth" and ordinal(40) == "fortieth"
    assert ordinal(101) == "one hundred first"
    assert ordinal(4, "tr") == "dördüncü" and ordinal(60, "tr") == "altmışıncı"
    assert year_en(2005) == "two thousand five" and year_en(1905) == "nineteen oh five"


_MARKUP = set("*_`~#|<>[]{}^\\/@=+")


@settings(max_examples=max(300, FUZZ_EXAMPLES), deadline=None)
@given(st.text(max_size=200), st.sampled_from(["en", "tr", "de"]))
def test_never_fails_and_leaves_no_markup(text: str, lang: str) -> None:
    out = normalize(text, lang)
    assert not _MARKUP & set(out), out
    assert not [c for c in out if unicodedata.category(c) in ("So", "Cc", "Co", "Cs", "Cn")], out
    assert out == "" or any(c.isalnum() for c in out)


@settings(max_examples=max(200, FUZZ_EXAMPLES), deadline=None)
@given(st.integers(min_value=0, max_value=10**15 - 1), st.sampled_from(["en", "tr"]))
def test_integers_are_spelled_out(n: int, lang: str) -> None:
    out = normalize(f"we have {n} items", lang)
    assert not re.search(r"\d", out)
    assert cardinal(n, lang) in out

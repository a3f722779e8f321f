"""Numbers as words, in English and Turkish (cardinals, ordinals, digit strings, years)."""

from __future__ import annotations

_EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
            "seventeen", "eighteen", "nineteen"]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_EN_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_EN_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
               "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}

_TR_ONES = ["sıfır", "bir", "iki", "üç", "dört", "beş", "altı", "yedi", "sekiz", "dokuz"]
_TR_TENS = ["", "on", "yirmi", "otuz", "kırk", "elli", "altmış", "yetmiş", "seksen", "doksan"]
_TR_SCALES = [(10**12, "trilyon"), (10**9, "milyar"), (10**6, "milyon"), (1000, "bin")]
#: Ordinal forms of the word a Turkish number ends with (vowel harmony is in the table).
_TR_ORDINAL = {
    "sıfır": "sıfırıncı", "bir": "birinci", "iki": "ikinci", "üç": "üçüncü", "dört": "dördüncü",
    "beş": "beşinci", "altı": "altıncı", "yedi": "yedinci", "sekiz": "sekizinci",
    "dokuz": "dokuzuncu", "on": "onuncu", "yirmi": "yirminci", "otuz": "otuzuncu",
    "kırk": "kırkıncı", "elli": "ellinci", "altmış": "altmışıncı", "yetmiş": "yetmişinci",
    "seksen": "sekseninci", "doksan": "doksanıncı", "yüz": "yüzüncü", "bin": "bininci",
    "milyon": "milyonuncu", "milyar": "milyarıncı", "trilyon": "trilyonuncu",
}

#: Beyond this a number is read digit by digit.
MAX_CARDINAL = 10**15 - 1


def _en_below_1000(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        tens, ones = divmod(n, 10)
        words.append(_EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else ""))
    elif n or not words:
        words.append(_EN_ONES[n])
    return words


def _en_cardinal(n: int) -> str:
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _EN_SCALES:
        if n >= value:
            words += [*_en_below_1000(n // value), name]
            n %= value
    if n:
        words += _en_below_1000(n)
    return " ".join(words)


def _tr_below_1000(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += ([] if hundreds == 1 else [_TR_ONES[hundreds]]) + ["yüz"]
    tens, ones = divmod(rest, 10)
    if tens:
        words.append(_TR_TENS[tens])
    if ones:
        words.append(_TR_ONES[ones])
    return words


def _tr_cardinal(n: int) -> str:
    if n == 0:
        return "sıfır"
    words: list[str] = []
    for value, name in _TR_SCALES:
        if n >= value:
            count = n // value
            # "bin", not "bir bin"; but "bir milyon".
            words += ([] if (value == 1000 and count == 1) else _tr_below_1000(count)) + [name]
            n %= value
    if n:
        words += _tr_below_1000(n)
    return " ".join(words)


def cardinal(n: int, lang: str = "en") -> str:
    """``n`` in words (``-`` gives minus/eksi); huge numbers are read digit by digit."""
    tr = lang == "tr"
    if n < 0:
        return ("eksi " if tr else "minus ") + cardinal(-n, lang)
    if n > MAX_CARDINAL:
        return digits(str(n), lang)
    return _tr_cardinal(n) if tr else _en_cardinal(n)


def ordinal(n: int, lang: str = "en") -> str:
    """``n`` as an ordinal: 21 -> twenty-first / yirmi birinci."""
    words = cardinal(n, lang).split(" ")
    last = words[-1]
    if lang == "tr":
        words[-1] = _TR_ORDINAL.get(last, last)
        return " ".join(words)
    head, _, tail = last.rpartition("-")
    if tail in _EN_ORDINAL:
        tail = _EN_ORDINAL[tail]
    elif tail.endswith("y"):
        tail = tail[:-1] + "ieth"
    else:
        tail += "th"
    words[-1] = f"{head}-{tail}" if head else tail
    return " ".join(words)


def digits(s: str, lang: str = "en") -> str:
    """Each digit of ``s`` read on its own ("0" is "oh" nowhere: zero / sıfır)."""
    table = _TR_ONES if lang == "tr" else _EN_ONES
    return " ".join(table[int(c)] for c in s if c.isdigit())


def year_en(n: int) -> str:
    """An English year: 1990 -> nineteen ninety, 2005 -> two thousand five,
    2024 -> twenty twenty-four."""
    if 2000 <= n <= 2009 or n % 1000 == 0 or not 1100 <= n <= 2099:
        return _en_cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{_en_cardinal(high)} hundred"
    if low < 10:
        return f"{_en_cardinal(high)} oh {_en_cardinal(low)}"
    return f"{_en_cardinal(high)} {_en_cardinal(low)}"

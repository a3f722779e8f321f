"""Text normalisation before speech synthesis: what LLMs write, turned into what a voice should say.

Shared by every TTS plugin (vc-tts-piper, vc-tts-espeak): it knows languages, not voices.

:func:`normalize` removes markdown and emoji, reads URLs and e-mail addresses, and spells out
numbers, currency, percentages, times, dates and ordinals. English (``en``) and Turkish
(``tr``) have full rules; any other language gets the language-neutral ones (markdown,
emoji, URLs, whitespace) and leaves digits to the voice's own phonemizer.

Turkish needs its own casing: ``"I".lower()`` is ``"ı"`` and ``"İ".lower()`` is ``"i"`` in
Turkish, which ``str.lower()`` gets wrong (:func:`lower`, :func:`upper`).

Numbers as words, in English and Turkish: :func:`cardinal`, :func:`ordinal`, :func:`digits`
(digit by digit) and :func:`year_en` (English years, "nineteen ninety").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["MAX_CARDINAL", "cardinal", "digits", "lower", "normalize", "ordinal", "primary",
           "upper", "year_en"]

# -- numbers as words ----------------------------------------------------------------------

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


# -- normalisation ---------------------------------------------------------------------------

Match = re.Match[str]

_DOTTED = ("tr", "az")


def primary(language: str) -> str:
    """``"tr-TR"`` -> ``"tr"``."""
    return (language or "en").replace("_", "-").split("-")[0].lower()


def lower(text: str, language: str = "en") -> str:
    """Lower-case with the language's rules (Turkish/Azerbaijani dotted and dotless i)."""
    if primary(language) in _DOTTED:
        text = text.replace("I", "ı").replace("İ", "i")
    return text.lower()


def upper(text: str, language: str = "en") -> str:
    """Upper-case with the language's rules (Turkish/Azerbaijani dotted and dotless i)."""
    if primary(language) in _DOTTED:
        text = text.replace("i", "İ").replace("ı", "I")
    return text.upper()


# -- language tables ---------------------------------------------------------------------

_WORDS = {
    "en": {"at": "at", "dot": "dot", "percent": "percent", "point": "point", "and": "and",
           "plus": "plus", "equals": "equals", "degrees": "degrees", "number": "number",
           "to": "to", "oclock": "o'clock", "oh": "oh"},
    "tr": {"at": "et", "dot": "nokta", "percent": "yüzde", "point": "virgül", "and": "ve",
           "plus": "artı", "equals": "eşittir", "degrees": "derece", "number": "numara",
           "to": "", "oclock": "", "oh": "sıfır"},
}

#: symbol -> (en singular, en plural, en minor singular, en minor plural, tr major, tr minor)
_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents", "dolar", "sent"),
    "€": ("euro", "euros", "cent", "cents", "avro", "sent"),
    "£": ("pound", "pounds", "penny", "pence", "sterlin", "peni"),
    "₺": ("lira", "lira", "kurus", "kurus", "lira", "kuruş"),
    "¥": ("yen", "yen", "sen", "sen", "yen", "sen"),
}
_CODES = {"usd": "$", "eur": "€", "gbp": "£", "tl": "₺", "try": "₺", "jpy": "¥",
          "dolar": "$", "dollars": "$", "euro": "€", "euros": "€", "avro": "€", "lira": "₺"}
_SCALES = {"k": 1000, "thousand": 1000, "bin": 1000, "m": 10**6, "million": 10**6,
           "milyon": 10**6, "bn": 10**9, "billion": 10**9, "milyar": 10**9}

_ABBREVIATIONS = {
    "en": {"e.g.": "for example", "i.e.": "that is", "etc.": "etcetera", "Dr.": "Doctor",
           "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "vs.": "versus", "approx.": "about"},
    "tr": {"vb.": "ve benzeri", "vs.": "vesaire", "Dr.": "Doktor", "Prof.": "Profesör",
           "Sn.": "Sayın", "örn.": "örneğin", "yy.": "yüzyıl", "Av.": "Avukat"},
}

_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "tr": ["ocak", "şubat", "mart", "nisan", "mayıs", "haziran", "temmuz", "ağustos", "eylül",
           "ekim", "kasım", "aralık"],
}

# -- language-neutral rules --------------------------------------------------------------

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.S)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.M)
_QUOTE = re.compile(r"^\s{0,3}>\s?", re.M)
_BULLET = re.compile(r"^\s*[-*+•]\s+", re.M)
_RULE = re.compile(r"^\s*([-*_]\s*){3,}$", re.M)
_EMPHASIS = [
    re.compile(r"\*\*(.+?)\*\*", re.S),
    re.compile(r"__(.+?)__", re.S),
    re.compile(r"~~(.+?)~~", re.S),
    re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"),
    re.compile(r"(?<![\w])_(?!\s)(.+?)(?<!\s)_(?![\w])"),
]
_LINE_END = re.compile(r"([^\s.,;:!?])[ \t]*\n+")
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_URL = re.compile(
    r"\b(?:https?://|www\.)[^\s<>()\"']+|"
    r"\b(?:[a-z0-9-]+\.)+(?:com|org|net|io|ai|dev|gov|edu|info|app|co|uk|de|tr|eu)\b(?:/[^\s<>()\"']*)?",
    re.I,
)
_TRAILING_PUNCT = ".,;:!?)]}'\""
_KEEP_SYMBOLS = {"°", "%"}
_DROP_CHARS = {"\u200d", "\u20e3", "\ufe0e", "\ufe0f"}
_SPACES = re.compile(r"[ \t\u00a0]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?])")
_REPEATED_PUNCT = re.compile(r"([,;:])(\s*[,;:])+")


def _strip_markdown(text: str) -> str:
    text = _CODE_BLOCK.sub(" ", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    for pattern in _EMPHASIS:
        text = pattern.sub(r"\1", text)
    text = text.replace("|", ", ")
    # A line that ends without punctuation (a heading, a list item) still gets its pause.
    return _LINE_END.sub(r"\1. ", text).replace("\n", " ")


def _spell_host(host: str, words: dict[str, str]) -> str:
    host = re.sub(r"^www\.", "", host, flags=re.I)
    return f" {words['dot']} ".join(p for p in host.split(".") if p)


def _read_url(m: Match, words: dict[str, str]) -> str:
    url = m.group(0)
    trail = ""
    while url and url[-1] in _TRAILING_PUNCT:
        trail = url[-1] + trail
        url = url[:-1]
    host = re.sub(r"^https?://", "", url, flags=re.I).split("/")[0].split("?")[0].split(":")[0]
    return _spell_host(host, words) + trail


def _read_email(m: Match, words: dict[str, str]) -> str:
    user = m.group(1).replace(".", f" {words['dot']} ")
    return f"{user} {words['at']} {_spell_host(m.group(2), words)}"


def _strip_emoji(text: str) -> str:
    out = []
    for ch in text:
        if ch in _DROP_CHARS:
            continue
        if ch in _KEEP_SYMBOLS:
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat in ("So", "Cs", "Co", "Cn") or (cat == "Sk" and ord(ch) > 0xFF):
            out.append(" ")
        elif cat == "Cc" and ch not in "\n\t":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


# -- number rules --------------------------------------------------------------------------

class _Numbers:
    """The number-reading rules of one language (``en`` or ``tr``)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.w = _WORDS[lang]
        tr = lang == "tr"
        # Thousands and decimal separators: 1,234.5 in English, 1.234,5 in Turkish.
        self.group, self.decimal = (".", ",") if tr else (",", ".")
        g, d = re.escape(self.group), re.escape(self.decimal)
        self.num = rf"\d{{1,3}}(?:{g}\d{{3}})+(?:{d}\d+)?|\d+(?:{d}\d+)?"
        if tr:  # LLMs writing Turkish also use "3.5"; read it as a decimal too
            self.num = rf"\d{{1,3}}(?:{g}\d{{3}})+(?:{d}\d+)?|\d+\.\d+(?!\.\d)|\d+(?:{d}\d+)?"
        self.suffix = r"(?:['’]([a-zçğıöşü]+))?" if tr else ""

    # number strings ------------------------------------------------------------------
    def split(self, s: str) -> tuple[int, str]:
        """'1.234,5' -> (1234, '5')."""
        if self.lang == "tr" and "," not in s and re.fullmatch(r"\d+\.\d+", s) and \
                not re.fullmatch(r"\d{1,3}(\.\d{3})+", s):
            whole, frac = s.split(".")
            return int(whole), frac
        whole, _, frac = s.partition(self.decimal)
        return int(whole.replace(self.group, "")), frac

    def number(self, s: str) -> str:
        whole, frac = self.split(s)
        words = cardinal(whole, self.lang)
        if frac:
            if self.lang == "tr" and len(frac) <= 3 and not frac.startswith("0"):
                words += f" {self.w['point']} {cardinal(int(frac), 'tr')}"
            else:
                words += f" {self.w['point']} {digits(frac, self.lang)}"
        return words

    # rules ---------------------------------------------------------------------------
    def rules(self) -> list[tuple[re.Pattern[str], Callable[[Match], str]]]:
        n, sfx, tr = self.num, self.suffix, self.lang == "tr"
        scale = r"(?:\s?(k|m|bn|thousand|million|billion|bin|milyon|milyar)\b)?"
        codes = "|".join(sorted(_CODES, key=len, reverse=True))
        out: list[tuple[re.Pattern[str], Callable[[Match], str]]] = [
            (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), self._iso_date),
            (re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b"), self._local_date),
            (re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?"
                        r"(?:\s?([ap])\.?\s?m\b\.?)?" + sfx, re.I), self._time),
            (re.compile(r"\b(\d{1,2})\s?([ap])\.?m\b\.?", re.I),
             lambda m: f"{cardinal(int(m.group(1)), self.lang)} {m.group(2).lower()} m"),
            (re.compile(r"(?<![\w.,])(\+\d{1,3}[ -]?)?(\(?\d{2,4}\)?(?:[ -]\d{2,4}){2,})(?![\d])"),
             self._phone),
            (re.compile(rf"([$€£₺¥])\s?(-?)({n}){scale}" + sfx, re.I), self._currency_prefix),
            (re.compile(rf"(-?)({n}){scale}\s?([$€£₺¥]|\b(?:{codes})\b)" + sfx, re.I),
             self._currency_suffix),
            (re.compile(rf"%\s?({n})" + sfx), self._percent),
            (re.compile(rf"({n})\s?%" + sfx), self._percent),
            (re.compile(r"(\d)\s?°\s?([CF])\b"), self._degrees),
            (re.compile(r"#(\d)"), lambda m: f"{self.w['number']} {m.group(1)}"),
        ]
        if tr:
            out += [
                (re.compile(r"\b(\d+)['’]?(?:inci|ıncı|uncu|üncü|nci|ncı|ncu|ncü)\b"),
                 lambda m: ordinal(int(m.group(1)), "tr")),
                (re.compile(r"\b(\d+)\.(?=\s+[a-zçğıöşü])"),
                 lambda m: ordinal(int(m.group(1)), "tr")),
                (re.compile(rf"(?<![\w.,])({n})\s?[-–]\s?({n})(?![\w])"),
                 lambda m: f"{self.number(m.group(1))} {self.number(m.group(2))}"),
            ]
        else:
            out += [
                (re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.I), lambda m: ordinal(int(m.group(1)))),
                (re.compile(r"\b(in|since|by|from|until|of|year|before|after|during|"
                            r"January|February|March|April|May|June|July|August|September|"
                            r"October|November|December),?\s(1[1-9]\d\d|20\d\d)\b(?![.,]\d)"),
                 lambda m: m.group(0)[: -4] + year_en(int(m.group(2)))),
                (re.compile(rf"(?<![\w.,])({n})\s?[-–]\s?({n})(?![\w])"),
                 lambda m: f"{self.number(m.group(1))} to {self.number(m.group(2))}"),
            ]
        out += [
            (re.compile(rf"(?<![\w.])-({n})" + sfx),
             lambda m: ("eksi " if tr else "minus ") + self.number(m.group(1)) + self._sfx(m, 2)),
            (re.compile(rf"({n})" + sfx), lambda m: self.number(m.group(1)) + self._sfx(m, 2)),
        ]
        return out

    @staticmethod
    def _sfx(m: Match, group: int) -> str:
        try:
            return m.group(group) or ""
        except IndexError:
            return ""

    def _iso_date(self, m: Match) -> str:
        return self._date(int(m.group(1)), int(m.group(2)), int(m.group(3))) or m.group(0)

    def _local_date(self, m: Match) -> str:
        a, b, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
        day, month = (a, b) if self.lang == "tr" else (b, a)  # US order in English
        return self._date(year, month, day) or m.group(0)

    def _date(self, year: int, month: int, day: int) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return ""
        name = _MONTHS[self.lang][month - 1]
        if self.lang == "tr":
            return f"{cardinal(day, 'tr')} {name} {cardinal(year, 'tr')}"
        return f"{name} {ordinal(day)}, {year_en(year)}"

    def _time(self, m: Match) -> str:
        h, mins, ampm = int(m.group(1)), int(m.group(2)), m.group(3)
        lang = self.lang
        if lang == "tr":
            words = cardinal(h, "tr") + (f" {cardinal(mins, 'tr')}" if mins else "")
            return words + self._sfx(m, 4)
        if mins == 0:
            words = cardinal(h) + ("" if ampm else f" {self.w['oclock']}")
        elif mins < 10:
            words = f"{cardinal(h)} oh {cardinal(mins)}"
        else:
            words = f"{cardinal(h)} {cardinal(mins)}"
        if ampm:
            words += f" {ampm.lower()} m"
        return words

    def _phone(self, m: Match) -> str:
        raw = m.group(0)
        looks_like_phone = raw.startswith(("+", "0", "(")) or "-" in raw
        if sum(c.isdigit() for c in raw) < 7 or not looks_like_phone:
            return raw
        groups = re.findall(r"\+?\d+", raw)
        spoken = []
        for g in groups:
            head = (self.w["plus"] + " ") if g.startswith("+") else ""
            spoken.append(head + digits(g, self.lang))
        return ", ".join(spoken)

    def _money(self, symbol: str, sign: str, amount: str, scale: str | None, suffix: str) -> str:
        names = _CURRENCY[symbol]
        tr = self.lang == "tr"
        minus = ("eksi " if tr else "minus ") if sign else ""
        if scale:
            unit = names[4] if tr else names[1]
            return f"{minus}{self.number(amount)} {scale.lower()} {unit}{suffix}"
        whole, frac = self.split(amount)
        cents = int((frac + "00")[:2]) if frac else 0
        parts = []
        if tr:
            if whole or not cents:
                parts.append(f"{cardinal(whole, 'tr')} {names[4]}")
            if cents:
                parts.append(f"{cardinal(cents, 'tr')} {names[5]}")
            return minus + " ".join(parts) + suffix
        if whole or not cents:
            parts.append(f"{cardinal(whole)} {names[0] if whole == 1 else names[1]}")
        if cents:
            parts.append(f"{cardinal(cents)} {names[2] if cents == 1 else names[3]}")
        return minus + f" {self.w['and']} ".join(parts) + suffix

    def _currency_prefix(self, m: Match) -> str:
        return self._money(m.group(1), m.group(2), m.group(3), m.group(4), self._sfx(m, 5))

    def _currency_suffix(self, m: Match) -> str:
        unit = m.group(4)
        symbol = unit if unit in _CURRENCY else _CODES[lower(unit, self.lang)]
        return self._money(symbol, m.group(1), m.group(2), m.group(3), self._sfx(m, 5))

    def _percent(self, m: Match) -> str:
        if self.lang == "tr":
            return f"{self.w['percent']} {self.number(m.group(1))}{self._sfx(m, 2)}"
        return f"{self.number(m.group(1))} {self.w['percent']}"

    def _degrees(self, m: Match) -> str:
        tr = self.lang == "tr"
        unit = {"C": "santigrat" if tr else "Celsius", "F": "fahrenhayt" if tr else "Fahrenheit"}[
            m.group(2)]
        return f"{m.group(1)} {self.w['degrees']} {unit}"


_NUMBERS = {lang: _Numbers(lang) for lang in _WORDS}
_RULES = {lang: nums.rules() for lang, nums in _NUMBERS.items()}
_WORD = re.compile(r"[^\W\d_]+")


def _calm_shouting(text: str, lang: str) -> str:
    """Lower-case shouted text, which a voice would spell letter by letter.

    A run of three or more capitalised words, or one such word of five letters or more, is
    lowered; short acronyms on their own (NASA, THY) stay as they are.
    """
    words = list(_WORD.finditer(text))
    runs: list[list[Match]] = []
    for m in words:
        if not (m.group(0).isupper() and (len(m.group(0)) > 1 or m.group(0) in "IAİ")):
            runs.append([])
            continue
        gap = text[runs[-1][-1].end() : m.start()] if runs and runs[-1] else ""
        if runs and runs[-1] and gap.strip(" ,") == "":
            runs[-1].append(m)
        else:
            runs.append([m])
    spans = [m for run in runs for m in run if len(run) >= 3 or len(m.group(0)) >= 5]
    for m in reversed(spans):
        text = text[: m.start()] + lower(m.group(0), lang) + text[m.end() :]
    return text


def _symbols(text: str, words: dict[str, str]) -> str:
    text = text.replace("&", f" {words['and']} ").replace(" = ", f" {words['equals']} ")
    text = re.sub(r"(?<=\w)\s?\+\s?(?=\w)", f" {words['plus']} ", text)
    text = re.sub(r"°", f" {words['degrees']} ", text)
    text = text.replace("…", "...").replace("’", "'").replace("‘", "'")
    text = text.replace("“", '"').replace("”", '"').replace("«", '"').replace("»", '"')
    return re.sub(r"[*_`~^\\{}\[\]<>#|/@=+]", " ", text)


def normalize(text: str, language: str = "en") -> str:
    """What a voice should say for ``text`` written by an LLM, in ``language``."""
    lang = primary(language)
    text = unicodedata.normalize("NFC", text)
    text = _strip_markdown(text)
    text = _strip_emoji(text)
    words = _WORDS.get(lang, _WORDS["en"])
    text = _EMAIL.sub(lambda m: _read_email(m, words), text)
    text = _URL.sub(lambda m: _read_url(m, words), text)
    for abbr, full in _ABBREVIATIONS.get(lang, {}).items():
        text = re.sub(rf"(?<!\w){re.escape(abbr)}", full, text)
    for pattern, repl in _RULES.get(lang, []):
        text = pattern.sub(repl, text)
    text = _symbols(text, words)
    # Shouted words would be spelled out letter by letter; acronyms (short) stay.
    text = _calm_shouting(text, lang)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    # Trailing punctuation stays: a clause that ends in a comma is spoken as unfinished.
    text = text.strip().lstrip(",;:").strip()
    return text if any(c.isalnum() for c in text) else ""

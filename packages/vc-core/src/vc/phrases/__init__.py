"""What the bot says by itself, per language: one catalogue keyed by the profile's language.

English and Turkish ship here as ``en.toml`` and ``tr.toml``; another language is added with a
``<language>.toml`` file in ``[vc] phrases_dir`` (which may also override the shipped ones), and
a profile may name its own file (``phrases = path``). Which text a profile ends up with, first
found wins:

1. the profile's own key (``greeting = ...``),
2. the profile's ``phrases`` file,
3. ``<phrases_dir>/<language>.toml``,
4. the shipped file of the language,
5. English.

Keyword matching (DTMF words, goodbye detection, rules) compares :func:`fold`-ed text, which
knows Turkish casing (``I`` -> ``ı``, ``İ`` -> ``i``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

#: Phrase keys, each also a ``[profile.<name>]`` key, with what it is for.
KEYS: dict[str, str] = {
    "system_prompt": "the LLM's system prompt",
    "greeting": "spoken as soon as the call is answered (empty: none)",
    "goodbye": "said before the bot hangs up when the LLM asks (and when the server shuts down)",
    "apology": "said when a provider fails a turn",
    "transfer_message": "said before the call is transferred",
    "busy_message": "said when a call cannot be served (capacity, shutting down)",
    "max_duration_goodbye": "said when the call reaches the profile's max_duration",
    "dtmf_prefix": "put before the keys the caller pressed, in the LLM's input",
}

#: Languages whose casing maps I to dotless ı and İ to i.
TURKIC = frozenset({"tr", "az"})

FALLBACK = "en"


class PhrasesError(ValueError):
    """A phrases file that cannot be used; the message names the file (and the key)."""


def primary(language: str) -> str:
    """The primary language subtag, lower case: ``tr-TR`` -> ``tr``."""
    return language.strip().replace("_", "-").split("-")[0].lower()


def fold(text: str, language: str = "") -> str:
    """``text`` in lower case for keyword matching, with Turkish (and Azerbaijani) casing
    where ``language`` is one: ``İSTANBUL`` -> ``istanbul``, ``IRMAK`` -> ``ırmak``. In every
    language ``İ`` becomes a plain ``i`` (``str.lower`` would add a combining dot)."""
    if primary(language) in TURKIC:
        text = text.replace("I", "ı")
    return text.replace("İ", "i").lower()


def shipped() -> list[str]:
    """Languages with a catalogue in vc-core."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def parse(text: str, where: str) -> dict[str, str]:
    """A phrases file's contents: known keys with string values, else PhrasesError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PhrasesError(f"{where}: not valid TOML: {e}") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise PhrasesError(
                f"{where}: unknown phrase key {key!r} (known: {', '.join(KEYS)})"
            )
        if not isinstance(value, str):
            raise PhrasesError(f"{where}: phrase {key!r} must be a string")
        out[key] = value
    return out


def read_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The phrases of a user file (``[vc] phrases_dir`` entry or a profile's ``phrases``)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PhrasesError(f"{p}: cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PhrasesError(f"{p}: not UTF-8 text") from None
    return parse(text, str(p))


def builtin(language: str) -> dict[str, str] | None:
    """The shipped phrases of ``language`` (None if vc-core has none)."""
    lang = primary(language)
    if not lang.isalnum():
        return None
    res = resources.files(__name__).joinpath(f"{lang}.toml")
    if not res.is_file():
        return None
    return parse(res.read_text(encoding="utf-8"), f"vc/phrases/{lang}.toml")


def directory_files(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """``language -> file`` of a phrases directory (``<language>.toml``)."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise PhrasesError(f"{d}: not a directory")
    return {primary(p.stem): p for p in sorted(d.glob("*.toml"))}


def layers(
    language: str, directory: str | os.PathLike[str] | None = None
) -> list[tuple[str, dict[str, str]]]:
    """Where ``language``'s phrases come from, lowest priority first, as (where, phrases):
    English, the shipped file of the language, ``directory``'s file of the language."""
    lang = primary(language)
    out = [(f"vc/phrases/{FALLBACK}.toml", builtin(FALLBACK) or {})]
    own = builtin(lang) if lang != FALLBACK else None
    if own is not None:
        out.append((f"vc/phrases/{lang}.toml", own))
    if directory:
        files = directory_files(directory)
        if lang in files:
            out.append((str(files[lang]), read_file(files[lang])))
    return out


def catalogue(
    language: str, directory: str | os.PathLike[str] | None = None
) -> tuple[dict[str, str], bool]:
    """Every phrase for ``language`` (see :func:`layers`). Also whether the language had
    phrases of its own (False: English)."""
    found = layers(language, directory)
    phrases: dict[str, str] = {}
    for _, texts in found:
        phrases.update(texts)
    return phrases, len(found) > 1 or primary(language) == FALLBACK


def resolve(
    language: str,
    overrides: Mapping[str, str],
    directory: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, str], bool]:
    """A profile's phrases: its ``overrides`` (its own keys over its ``phrases`` file) over the
    catalogue of its language. Also whether the language had phrases (False: English)."""
    phrases, found = catalogue(language, directory)
    phrases.update({k: v for k, v in overrides.items() if k in KEYS})
    return phrases, found


def sources(language: str, directory: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``key -> file`` each catalogue phrase of ``language`` comes from (``vc config show``)."""
    out: dict[str, str] = {}
    for where, texts in layers(language, directory):
        out.update(dict.fromkeys(texts, where))
    return out


#: English, as the profile defaults and vc.llm.DEFAULT_APOLOGY read it.
ENGLISH: dict[str, str] = builtin(FALLBACK) or {}

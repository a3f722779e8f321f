"""Languages Whisper knows, as the codes its tokenizer uses (ISO 639-1 where one exists)."""

from __future__ import annotations

#: Every language a multilingual Whisper model transcribes (large-v3 added ``yue``).
WHISPER_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)  # fmt: skip

#: BCP-47 primary tags whose Whisper code differs.
_ALIASES = {"iw": "he", "jv": "jw", "nb": "no", "fil": "tl"}


def whisper_language(language: str) -> str:
    """The Whisper code for a BCP-47 tag (``tr-TR`` -> ``tr``); raises ValueError if unknown."""
    primary = language.strip().split("-")[0].split("_")[0].lower()
    primary = _ALIASES.get(primary, primary)
    if primary not in WHISPER_LANGUAGES:
        raise ValueError(f"Whisper does not know the language {language!r}")
    return primary

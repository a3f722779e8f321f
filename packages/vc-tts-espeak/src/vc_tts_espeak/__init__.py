"""espeak-ng text-to-speech for vc: local, many languages (Turkish included), ~10 ms first audio."""

__version__ = "0.1.0"

from vc_tts_espeak.provider import EspeakSettings, EspeakTTS

__all__ = ["EspeakSettings", "EspeakTTS", "__version__"]

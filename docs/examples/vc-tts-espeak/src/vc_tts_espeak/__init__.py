"""espeak-ng text-to-speech for vc."""

from vc_tts_espeak.provider import EspeakTTS

__all__ = ["EspeakTTS"]

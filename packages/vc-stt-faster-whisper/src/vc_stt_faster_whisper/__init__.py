"""faster-whisper (CTranslate2 Whisper) speech-to-text."""

__version__ = "0.2.0"

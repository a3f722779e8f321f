"""Vosk speech-to-text: local KaldiRecognizer and the Vosk WebSocket service."""

__version__ = "0.1.0"

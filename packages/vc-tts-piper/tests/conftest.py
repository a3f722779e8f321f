"""Fixtures for vc-tts-piper's tests (helpers live in piper_helpers.py)."""

from piper_helpers import piper, transcribe, whisper  # noqa: F401 - fixtures

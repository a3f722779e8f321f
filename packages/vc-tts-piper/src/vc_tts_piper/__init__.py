"""Piper text-to-speech: local voices, the Piper WebSocket service, and a compatible server."""

__version__ = "0.3.0"

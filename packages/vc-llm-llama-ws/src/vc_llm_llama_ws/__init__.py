"""Llama WebSocket service client, a compatible server, and the embedded llama.cpp LLM."""

__version__ = "0.1.0"

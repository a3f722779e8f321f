"""Ollama LLM provider (official ollama client, streaming chat, tools)."""

__version__ = "0.1.0"

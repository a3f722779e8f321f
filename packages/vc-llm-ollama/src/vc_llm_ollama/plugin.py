"""vc plugin entry point for vc-llm-ollama (hook implementations)."""

from __future__ import annotations

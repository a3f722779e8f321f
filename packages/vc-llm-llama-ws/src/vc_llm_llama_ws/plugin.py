"""vc plugin entry point for vc-llm-llama-ws (hook implementations)."""

from __future__ import annotations

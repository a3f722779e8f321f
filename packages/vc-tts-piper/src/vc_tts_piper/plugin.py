"""vc plugin entry point for vc-tts-piper (hook implementations)."""

from __future__ import annotations

"""vc plugin entry point for vc-stt-faster-whisper (hook implementations)."""

from __future__ import annotations

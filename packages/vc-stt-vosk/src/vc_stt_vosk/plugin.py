"""vc plugin entry point for vc-stt-vosk (hook implementations)."""

from __future__ import annotations

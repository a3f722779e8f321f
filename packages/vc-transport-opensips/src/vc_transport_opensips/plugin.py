"""vc plugin entry point for vc-transport-opensips (hook implementations)."""

from __future__ import annotations

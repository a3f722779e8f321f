"""vc plugin entry point for vc-gcp (hook implementations)."""

from __future__ import annotations

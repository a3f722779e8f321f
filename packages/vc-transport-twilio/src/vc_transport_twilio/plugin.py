"""vc plugin entry point for vc-transport-twilio (hook implementations)."""

from __future__ import annotations

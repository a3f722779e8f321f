"""vc plugin entry point for vc-tts-piper (hook implementations)."""

from __future__ import annotations

from vc.hookspecs import hookimpl
from vc_tts_piper.catalog import PiperVoiceCatalog
from vc_tts_piper.local import PiperProvider
from vc_tts_piper.ws_client import PiperWebSocketProvider


@hookimpl
def register_tts(register):
    register(PiperProvider)
    register(PiperWebSocketProvider)


@hookimpl
def register_models(register):
    register(PiperVoiceCatalog())

"""vc plugin entry point for vc-stt-vosk (hook implementations)."""

from __future__ import annotations

from vc.hookspecs import hookimpl


@hookimpl
def register_stt(register):
    from vc_stt_vosk.local import VoskLocalSTT
    from vc_stt_vosk.websocket import VoskWebSocketSTT

    register(VoskLocalSTT)
    register(VoskWebSocketSTT)


@hookimpl
def register_models(register):
    from vc_stt_vosk.models import VoskModels

    register(VoskModels())

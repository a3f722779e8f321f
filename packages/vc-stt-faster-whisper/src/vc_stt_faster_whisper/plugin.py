"""vc plugin entry point for vc-stt-faster-whisper (hook implementations)."""

from __future__ import annotations

from vc.hookspecs import hookimpl


@hookimpl
def register_stt(register):
    from vc_stt_faster_whisper.provider import FasterWhisperSTT

    register(FasterWhisperSTT)


@hookimpl
def register_models(register):
    from vc_stt_faster_whisper.models import WhisperModels

    register(WhisperModels())

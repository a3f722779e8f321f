"""The entry point: one hook, registering one provider class."""

from vc.hookspecs import hookimpl
from vc_tts_espeak.provider import EspeakTTS


@hookimpl
def register_tts(register):
    register(EspeakTTS)

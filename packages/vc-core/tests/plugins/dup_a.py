from vc.hookspecs import hookimpl
from vc.providers import TTSProvider


class SameA(TTSProvider):
    name = "same-name"
    description = "first"


@hookimpl
def register_tts(register):
    register(SameA)

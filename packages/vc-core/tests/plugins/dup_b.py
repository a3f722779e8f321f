from vc.hookspecs import hookimpl
from vc.providers import TTSProvider


class SameB(TTSProvider):
    name = "same-name"
    description = "second"


@hookimpl
def register_tts(register):
    register(SameB)

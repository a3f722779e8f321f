"""A well-behaved plugin: one STT provider with a settings schema."""

import attrs

from vc.hookspecs import hookimpl
from vc.providers import STTProvider
from vc.settings import setting


@attrs.define
class GoodSettings:
    model: str = setting("small", help="model name")
    beam_size: int = setting(1, help="beam width")


class GoodSTT(STTProvider):
    name = "good-stt"
    Settings = GoodSettings
    languages = ("en", "tr")
    description = "a test STT"


@hookimpl
def register_stt(register):
    register(GoodSTT)

"""An index plugin (like vc-stack): install hints and a default stack, with made-up names."""

from vc.hookspecs import hookimpl
from vc.providers import KnownProvider


@hookimpl
def register_known_providers(register):
    register(KnownProvider("transport", "pigeon", "vc-transport-pigeon", default=True))
    register(KnownProvider("stt", "ear", "vc-stt-ear", default=True))
    register(KnownProvider("stt", "ear-websocket", "vc-stt-ear"))
    register(KnownProvider("llm", "brain", "'vc-llm-brain[embedded]'", default=True))
    register(KnownProvider("llm", "ollama", "vc-llm-ollama"))
    register(KnownProvider("tts", "mouth", "'vc-tts-mouth[local]'", default=True))
    register(KnownProvider("observer", "diary", "vc-diary"))

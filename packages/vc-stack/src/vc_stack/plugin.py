"""vc plugin entry point for vc-stack: which distribution provides each first-party provider
(``vc config check`` and ``vc doctor`` say what to ``pip install`` for one that is configured but
not installed) and which providers run when the configuration names none.

vc-core names no provider: adding, renaming or re-packaging a first-party plugin edits this table,
never core. Another distribution may declare its own entries the same way (the first plugin
loaded that declares a provider or a kind's default wins).
"""

from __future__ import annotations

from vc.hookspecs import hookimpl
from vc.providers import KnownProvider

#: (kind, provider name, what to pip install, in the default stack)
INDEX: tuple[tuple[str, str, str, bool], ...] = (
    ("transport", "twilio", "vc-transport-twilio", True),
    ("transport", "opensips", "vc-transport-opensips", False),
    ("stt", "faster-whisper", "vc-stt-faster-whisper", True),
    ("stt", "vosk", "vc-stt-vosk", False),
    ("stt", "vosk-websocket", "vc-stt-vosk", False),
    ("llm", "llama-cpp", "'vc-llm-llama-ws[embedded]'", True),
    ("llm", "llama-ws", "vc-llm-llama-ws", False),
    ("llm", "ollama", "vc-llm-ollama", False),
    ("tts", "piper", "'vc-tts-piper[local]'", True),
    ("tts", "piper-websocket", "vc-tts-piper", False),
    ("tts", "espeak", "vc-tts-espeak", False),
    ("observer", "gcp-logging", "vc-gcp", False),
)

KNOWN = tuple(KnownProvider(kind, name, install, default) for kind, name, install, default in INDEX)


@hookimpl
def register_known_providers(register):
    for known in KNOWN:
        register(known)

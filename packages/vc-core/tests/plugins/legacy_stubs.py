"""Stand-ins with the settings keys of the providers the old INI selects (for vc-core's own tests).

The real plugins (vc-stt-vosk, vc-llm-llama-ws, vc-tts-piper, vc-transport-opensips) are tested
with the same file in their own packages and in the repository's tests.
"""

import attrs

from vc.hookspecs import hookimpl
from vc.providers import LLMProvider, STTProvider, TransportProvider, TTSProvider
from vc.settings import setting


@attrs.define
class VoskWS:
    url: str = setting(help="service URL")
    sample_rate: int = setting(16000, help="rate sent to the service")
    model: str = setting("", help="informational")
    send_eof: bool = setting(True, help="send eof at call end")
    channels: int = setting(1, help="channels")


@attrs.define
class LlamaWS:
    url: str = setting(help="service URL")
    model: str = setting("", help="model")
    temperature: float = setting(0.2, help="temperature")
    max_tokens: int = setting(80, help="max tokens")
    top_p: float | None = setting(None, help="top p")
    timeout: float = setting(30.0, help="timeout")
    stream: bool = setting(True, help="stream")


@attrs.define
class PiperWS:
    url: str = setting(help="service URL")
    voice: str = setting("tr_TR-dfki-medium", help="voice")
    sample_rate: int = setting(22050, help="rate")


@attrs.define
class OpenSIPS:
    mode: str = setting("b2b", help="mode")
    sip_ip: str = setting("0.0.0.0", help="SIP address")
    sip_port: int = setting(8089, help="SIP port")
    event_ip: str = setting("127.0.0.1", help="event address")
    event_port: int = setting(8090, help="event port")
    mi_ip: str = setting("127.0.0.1", help="MI address")
    mi_port: int = setting(8080, help="MI port")
    mi_transport: str = setting("udp", help="MI transport")
    rtp_min_port: int = setting(35000, help="RTP range start")
    rtp_max_port: int = setting(35100, help="RTP range end")
    rtp_bind_ip: str = setting("0.0.0.0", help="RTP bind address")
    rtp_ip: str = setting("", help="advertised RTP address")


def _cls(base, name, settings):
    return type(name.title().replace("-", ""), (base,), {"name": name, "Settings": settings,
                                                          "description": "stub"})


@hookimpl
def register_stt(register):
    register(_cls(STTProvider, "vosk-websocket", VoskWS))


@hookimpl
def register_llm(register):
    register(_cls(LLMProvider, "llama-ws", LlamaWS))


@hookimpl
def register_tts(register):
    register(_cls(TTSProvider, "piper-websocket", PiperWS))


@hookimpl
def register_transports(register):
    register(_cls(TransportProvider, "opensips", OpenSIPS))

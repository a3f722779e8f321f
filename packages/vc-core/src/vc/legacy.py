"""The existing OpenSIPS AI Voice Connector INI, translated into vc's sections.

The old file keeps working unchanged and means what it meant there:
``[stt] url`` is the Vosk WebSocket service, ``[llm] url`` the Llama WebSocket service,
``[tts] url`` the Piper WebSocket service, ``[engine]`` + ``[rtp]`` the OpenSIPS transport
(proxy mode: OpenSIPS relays INVITEs to ``sip_ip:sip_port``). Its ``[VAD]`` and
``[interruption]`` keys, which the old engine ignored, take effect.
"""

from __future__ import annotations

Sections = dict[str, dict[str, tuple[str, str]]]

#: Sections only the old file has; any of them marks a file as legacy.
LEGACY_ONLY = {"engine", "opensips", "rtp", "general", "logging"}

#: [kind] url without a provider key selects these providers.
URL_PROVIDERS = {"stt": "vosk-websocket", "llm": "llama-ws", "tts": "piper-websocket"}

#: old section -> (new section, {old key: new key}); unmapped keys keep their names.
RENAMES: dict[str, tuple[str, dict[str, str]]] = {
    "engine": ("transport.opensips", {}),
    "opensips": (
        "transport.opensips",
        {"ip": "mi_ip", "port": "mi_port", "mi_transport": "mi_transport"},
    ),
    "rtp": (
        "transport.opensips",
        {"min_port": "rtp_min_port", "max_port": "rtp_max_port", "bind_ip": "rtp_bind_ip", "ip": "rtp_ip"},
    ),
    "vad": ("vad", {}),
    "interruption": ("interruption", {}),
    "general": ("vc", {"loglevel": "log_level", "level": "log_level"}),
    "logging": ("vc", {"loglevel": "log_level", "level": "log_level"}),
}

#: The old deployment's greeting; vc/phrases/tr.toml has the same.
LEGACY_GREETING_TR = "Merhaba, size nasıl yardımcı olabilirim?"


def is_legacy(sections: Sections) -> bool:
    names = {s.lower() for s in sections}
    if names & LEGACY_ONLY:
        return True
    return any(
        "url" in sections.get(kind, {}) and "provider" not in sections.get(kind, {})
        for kind in URL_PROVIDERS
    )


def translate(sections: Sections) -> Sections:
    """Map the old sections onto vc's; sources are annotated with the old location."""
    out: Sections = {}

    def put(section: str, key: str, raw: str, source: str) -> None:
        out.setdefault(section, {})[key] = (raw, source)

    # [RTP] is the old fallback spelling of [rtp]; [rtp] wins where both are present.
    ordered = sorted(sections, key=lambda s: (s.lower(), s != s.lower()), reverse=True)
    for name in ordered:
        values = sections[name]
        low = name.lower()
        if low in URL_PROVIDERS and "url" in values and "provider" not in values:
            put(low, "provider", URL_PROVIDERS[low], f"legacy [{name}] url")
            for k, (raw, src) in values.items():
                put(low, k, raw, f"{src} (legacy [{name}] {k})")
        elif low in RENAMES:
            target, renames = RENAMES[low]
            for k, (raw, src) in values.items():
                put(target, renames.get(k, k), raw, f"{src} (legacy [{name}] {k})")
        else:
            for k, v in values.items():
                out.setdefault(name, {})[k] = v

    if {s.lower() for s in sections} & {"engine", "opensips", "rtp"}:
        t = out.setdefault("transport.opensips", {})
        t.setdefault("mode", ("proxy", "legacy [engine]"))
        vc = out.setdefault("vc", {})
        vc.setdefault("transports", ("opensips", "legacy [engine]"))
    # The old system was a Turkish deployment: Turkish is its language, and with it every phrase
    # the bot says by itself (greeting, system prompt, goodbye, apology...) comes from the
    # Turkish catalogue (vc/phrases/tr.toml) unless the file sets a profile key.
    prof = out.setdefault("profile.default", {})
    prof.setdefault("language", ("tr", "legacy default"))
    return out

"""vc-core's public API (docs/api.md): every name plugins may rely on is still there.

A failure here means a public name disappeared or was renamed. That breaks plugins: either put
it back (keep the old name as an alias) or make it a deliberate breaking change - bump
vc-core's version (packages/vc-core/src/vc/__init__.py: the minor while 0.x, the major from
1.0) and update docs/api.md (its "Changes" list). A name added to the public API is added
here and to docs/api.md in the same change (a minor version).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import vc

API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"

PUBLIC: dict[str, tuple[str, ...]] = {
    "vc": ("__version__",),
    "vc.hookspecs": (
        "hookimpl", "register_transports", "register_stt", "register_llm", "register_tts",
        "register_observers", "register_tools", "register_models", "register_checks",
        "register_known_providers", "register_commands",
    ),
    "vc.providers": (
        "Provider", "STTProvider", "LLMProvider", "TTSProvider", "TransportProvider", "CallHost",
        "Observer", "ProviderError", "ProviderContext", "CallContext", "AudioClip", "Tool",
        "ToolCall", "ModelCatalog", "ModelInfo", "KnownProvider", "package_dir", "cache_dir",
        "retrieve_failure",
    ),
    "vc.call": (
        "CallInfo", "CallConnection", "CallEvents", "PlayoutBuffer", "PlayoutPacer", "Mark",
        "CallControlError", "MediaQuality",
    ),
    "vc.events": (
        "TRANSCRIPT", "TURN", "BARGE_IN", "BOT_PAUSED", "BOT_RESUMED", "MARK_PLAYED", "DTMF",
        "TOOL_CALL", "MEDIA_QUALITY", "CALL_STARTED", "CALL_ENDED", "CATALOGUE", "OPTIONAL_KEYS",
        "LATENCY_STAGES",
    ),
    "vc.settings": ("setting", "ConfigError", "describe", "FieldInfo", "convert", "resolve_reference"),
    "vc.llm": ("StreamingLLMService", "ToolCallRequest", "LLMProviderError"),
    "vc.audio": (
        "resample", "StreamResampler", "rms", "ulaw_to_pcm", "pcm_to_ulaw", "alaw_to_pcm",
        "pcm_to_alaw", "ULAW_SILENCE", "ALAW_SILENCE",
    ),
    "vc.jsonsafe": ("loads", "loads_object", "JsonError"),
    "vc.logs": ("LogThrottle",),
    "vc.reconnect": (
        "RemoteProvider", "RemoteService", "ServiceUnavailable", "backoff", "RETRY_INITIAL",
        "RETRY_MAX",
    ),
    "vc.pipecat_adapter": (
        "stt_user_id", "push_llm_text", "use_clause_aggregator", "queue_input_audio",
        "shared_silero_model", "segment_so_far",
    ),
    "vc.turns": (
        "phrase_breaks", "late_breaks", "SpeechPausedFrame", "SpeechResumedFrame", "HeldReplyFrame",
        "last_word_guessed",
    ),
    "vc.textnorm": ("normalize", "cardinal", "ordinal", "digits", "year_en", "primary", "lower", "upper"),
    "vc.profiles": ("Profile", "ProfileSettings"),
    "vc.config": ("Config",),
    "vc.plugins": ("registry", "Registry", "PluginRecord", "load_plugins"),
    "vc.doctor": ("Check",),
    "vc.verify": ("verify_file", "verify_tree", "sha256_file"),
    "vc.testing": ("fake_registry", "config_from_ini", "FAKE_STACK", "until"),
    "vc.testing.contracts": (
        "ProviderContract", "STTContract", "LLMContract", "TTSContract", "TransportContract",
        "ObserverContract", "RecordingHost", "ContractCaller", "SAMPLE_EVENTS",
    ),
    "vc.testing.calls": ("LoopbackConnection", "run_loopback_call", "speech"),
    "vc.testing.fakes": (
        "FakeSTT", "FakeLLM", "FakeTTS", "FakeSTTSettings", "FakeLLMSettings", "FakeTTSSettings",
        "tone",
    ),
    "vc.testing.services": (
        "ServiceHarness", "Recorder", "Observed", "drive", "replies", "turn", "user", "assistant",
        "profile", "provider_context", "call_context",
    ),
    "vc.testing.pytest_plugin": ("vc_fake_registry", "vc_engine_factory", "vc_speech"),
}

#: Members of public classes that subclasses override or call.
MEMBERS: dict[str, tuple[str, ...]] = {
    "vc.providers.Provider": (
        "kind", "name", "Settings", "languages", "description", "start", "stop", "ready",
        "not_ready_reason", "supports_language",
    ),
    "vc.providers.STTProvider": ("create_service", "sample_rate"),
    "vc.providers.LLMProvider": ("create_service", "supports_tools"),
    "vc.providers.TTSProvider": ("create_service", "synthesize"),
    "vc.providers.TransportProvider": ("routes", "start", "alive", "host"),
    "vc.providers.CallHost": ("admit", "select_profile", "run_call", "accepting", "listen_host"),
    "vc.providers.Observer": (
        "name", "Settings", "description", "start", "stop", "call_started", "call_ended",
        "latency", "event",
    ),
    "vc.providers.ModelCatalog": ("name", "list", "prepare", "verify"),
    "vc.call.CallConnection": (
        "sample_rate", "attach", "playout", "events", "clear", "hangup", "transfer", "send_dtmf",
        "pause", "resume", "media_quality",
    ),
    "vc.call.CallEvents": ("audio", "dtmf", "mark_played", "hangup"),
    "vc.call.PlayoutPacer": (
        "run", "stop", "tick", "frame_ms", "running", "ticks", "late_ticks", "skipped_ticks",
    ),
    "vc.testing.contracts.TransportContract": (
        "provider", "make_settings", "connect_caller", "max_clear_seconds", "loopback_script",
    ),
    "vc.testing.contracts.ContractCaller": ("send_audio", "received_audio", "hangup", "close"),
    "vc.llm.StreamingLLMService": ("stream",),
    "vc.reconnect.RemoteProvider": ("probe", "remote", "start", "stop"),
    "vc.doctor.Check": ("ok", "warn", "fail"),
    "vc.logs.LogThrottle": ("log", "flush"),
    "vc.testing.calls.LoopbackConnection": (
        "say", "press", "caller_hangs_up", "wait_for_bot_audio", "wait_for_bot_silence",
        "wait_for_hangup", "stop",
    ),
}

HINT = ("is public (docs/api.md): put it back, or bump vc-core's version (major/minor) and "
        "update docs/api.md and this list")


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_still_there(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if not hasattr(mod, n)]
    assert not missing, f"{module}: {', '.join(missing)} {HINT}"


@pytest.mark.parametrize("cls", sorted(MEMBERS))
def test_public_members_are_still_there(cls: str) -> None:
    module, _, name = cls.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    # attributes an instance gets in __init__: annotated on the class, or assigned to self
    annotated = {k for c in obj.__mro__ for k in getattr(c, "__annotations__", {})}
    source = "".join(inspect.getsource(c) for c in obj.__mro__ if c.__module__.startswith("vc"))
    missing = [m for m in MEMBERS[cls] if not hasattr(obj, m) and m not in annotated
               and not re.search(rf"\bself\.{m}\s*(:[^=]+)?=", source)]
    assert not missing, f"{cls}: {', '.join(missing)} {HINT}"


def test_the_api_reference_lists_every_public_name() -> None:
    doc = API_DOC.read_text()
    for module, names in PUBLIC.items():
        assert f"`{module}`" in doc, f"docs/api.md does not describe {module}"
        for name in names:
            assert re.search(rf"\b{re.escape(name)}\b", doc), f"docs/api.md does not name {module}.{name}"


def test_the_version_is_the_one_the_api_reference_documents() -> None:
    assert f"vc-core {vc.__version__}" in API_DOC.read_text(), (
        "docs/api.md names the vc-core version its API is; update it with the version"
    )

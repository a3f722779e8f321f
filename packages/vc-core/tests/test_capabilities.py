"""What the configured provider instance can do decides what `vc config check` and a call say
(issue 13): tools a profile relies on but the LLM cannot be offered, tool calls nobody offered."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint
from pathlib import Path

from pipecat.frames.frames import FunctionCallsStartedFrame

from vc.capabilities import capability_errors, capability_warnings
from vc.config import load
from vc.engine import Engine
from vc.plugins import load_plugins
from vc.profiles import Profile, ProfileSettings
from vc.providers import ProviderContext, TTSProvider
from vc.session import CallSession
from vc.testing.calls import LoopbackConnection
from vc.testing.services import drive, replies, turn, user


def registry():
    eps = [EntryPoint(name="toolless_llm", value="toolless_llm", group="vc")]
    return load_plugins(env={"VC_PLUGIN_MODULES": "vc.testing.fakes"}, eps=eps)


def stack(llm: str = "", profile: str = "") -> str:
    return ("[vc]\ntransports =\n[stt]\nprovider = fake\n[tts]\nprovider = fake\n"
            f"[llm]\nprovider = toolless\n{llm}\n[profile.default]\n{profile}\n")


def check(tmp_path: Path, text: str):
    path = tmp_path / "vc.ini"
    path.write_text(text)
    cfg, errors = load(str(path), registry(), {})
    assert not errors, errors
    assert cfg is not None
    return cfg


def test_config_check_warns_when_a_profile_lists_tools_the_llm_cannot_be_offered(tmp_path) -> None:
    (warning,) = [w for w in check(tmp_path, stack()).warnings if "tools" in w]
    assert "profile 'default' lists tools (end_call, transfer_call)" in warning
    assert "llm provider 'toolless' as configured does not support tools" in warning
    # The instance supports tools as configured, or the profile asks for none: no warning.
    assert not [w for w in check(tmp_path, stack("tools = true")).warnings if "tools" in w]
    assert not [w for w in check(tmp_path, stack(profile="tools =")).warnings if "tools" in w]


async def test_each_call_logs_that_its_tools_are_not_offered(tmp_path, caplog) -> None:
    engine = Engine(check(tmp_path, stack()), registry())
    await engine.start()
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vc.call"):
            session = CallSession(engine, LoopbackConnection())
            session.build()
        (record,) = [r for r in caplog.records if "not offered" in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert record.getMessage() == (
            "tools end_call, transfer_call not offered: llm provider 'toolless' does not "
            "support tools"
        )
        assert session.context is not None and not session.context.tools
    finally:
        await engine.stop()


async def test_a_tool_call_nobody_offered_is_a_warning_not_a_crash(caplog) -> None:
    from toolless_llm import PushyService

    service = PushyService()
    service.call_id = "call-7"
    with caplog.at_level(logging.WARNING, logger="vc.llm"):
        frames = await drive(service, turn(user("bye")))
    (record,) = [r for r in caplog.records if r.name == "vc.llm"]
    assert "called tool 'end_call', which it was not offered (offered: none); ignored" in (
        record.getMessage()
    )
    assert getattr(record, "call_id", None) == "call-7"
    assert replies(frames) == ["Goodbye."]  # the turn ends normally...
    assert not [f for f in frames if isinstance(f, FunctionCallsStartedFrame)]  # ...nothing runs


class _VoicedTTS(TTSProvider):
    """A TTS that tells each profile's voice language (Turkish unless the profile names one)."""

    name = "voiced"

    def voice_name(self, profile: Profile) -> str:
        return profile.voice or "tr_TR-dfki-medium"

    def voice_language(self, profile: Profile) -> str:
        return self.voice_name(profile).split("_")[0]


def _voiced(*profiles: Profile, languages: tuple[str, ...] = ("*",)) -> _VoicedTTS:
    tts = _VoicedTTS(None, ProviderContext(profiles=list(profiles),
                                           log=logging.getLogger("vc.tts.voiced")))
    tts.languages = languages
    return tts


def test_config_check_warns_when_the_tts_voice_speaks_another_language() -> None:
    tr = Profile("tr", ProfileSettings(language="tr-TR"))
    en = Profile("en", ProfileSettings(language="en"))
    en_voiced = Profile("en2", ProfileSettings(language="en", voice="en_US-joe-medium"))
    (warning,) = capability_warnings("tts", "voiced", _voiced(tr, en, en_voiced))
    assert "profile 'en' has language = en but tts provider 'voiced' speaks it with voice " \
           "'tr_TR-dfki-medium' (language tr)" in warning
    # A language the provider does not speak at all is an error, not also a warning.
    only_tr = _voiced(en, languages=("tr",))
    assert capability_warnings("tts", "voiced", only_tr) == []
    assert capability_errors("tts", "voiced", only_tr)
    # Voices that cannot tell their language, and non-TTS kinds, are not judged.
    assert capability_warnings("stt", "voiced", _voiced(en)) == []
    assert capability_warnings("tts", "fake", _ToolessTTS(
        None, ProviderContext(profiles=[en], log=logging.getLogger("t")))) == []


class _ToolessTTS(TTSProvider):
    name = "plain"

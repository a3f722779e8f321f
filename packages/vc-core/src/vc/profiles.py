"""Per-call profiles: what the bot says and how, chosen per call by stable rules.

``[profile.<name>]`` sections, evaluated in file order; the first whose ``match.*`` rules
all match the call wins, and ``default`` (built in if not configured) catches the rest.
A transport parameter ``profile`` (Twilio ``<Parameter>``, OpenSIPS ``extra_params``) naming
an existing profile selects it directly.
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING

import attrs

from vc.phrases import ENGLISH
from vc.settings import setting

if TYPE_CHECKING:
    from vc.call import CallInfo

# English defaults; config.resolve replaces what a profile does not set with its language's
# phrases (vc.phrases: the one catalogue of what the bot says by itself).
DEFAULT_SYSTEM_PROMPT = ENGLISH["system_prompt"]
DEFAULT_GREETING = ENGLISH["greeting"]


@attrs.define
class ProfileSettings:
    """Keys of a ``[profile.<name>]`` section."""

    system_prompt: str = setting(DEFAULT_SYSTEM_PROMPT, help="the LLM's system prompt")
    greeting: str = setting(
        DEFAULT_GREETING, help="spoken as soon as the call is answered (empty: none)"
    )
    language: str = setting("en", help="conversation language (BCP-47, e.g. en, tr)")
    voice: str = setting("", help="TTS voice for this profile (provider-specific; empty: default)")
    llm_model: str = setting("", help="LLM model for this profile (provider-specific; empty: default)")
    temperature: float | None = setting(None, help="LLM sampling temperature (empty: provider default)")
    max_tokens: int | None = setting(None, help="cap on the LLM's reply length in tokens")
    stt: str = setting("", help="STT provider for this profile (empty: [stt] provider)")
    llm: str = setting("", help="LLM provider for this profile (empty: [llm] provider)")
    tts: str = setting("", help="TTS provider for this profile (empty: [tts] provider)")
    vad_stop_secs: float | None = setting(None, help="silence that ends the caller's turn")
    vad_start_secs: float | None = setting(None, help="speech that starts the caller's turn")
    vad_confidence: float | None = setting(None, help="Silero VAD confidence threshold")
    interruptions: bool | None = setting(None, help="let the caller interrupt the bot")
    min_words: int | None = setting(None, help="words needed to interrupt the bot (0: any speech)")
    tools: list[str] = setting(
        factory=lambda: ["end_call", "transfer_call"], help="tools the LLM may call"
    )
    transfer_target: str = setting("", help="where transfer_call sends the caller by default")
    transfer_allowed: list[str] = setting(
        factory=list,
        help="targets transfer_call may send the caller to when the LLM names one (exact, or "
        "globs like +1555*; empty: only transfer_target)",
    )
    goodbye: str = setting(
        ENGLISH["goodbye"],
        help="said before the bot hangs up when the LLM asks or the server shuts down (empty: none)",
    )
    apology: str = setting(
        "", help="said when a provider fails a turn (empty: the LLM provider's apology if set, "
        "else the phrases of the profile's language)"
    )
    transfer_message: str = setting(
        ENGLISH["transfer_message"], help="said before transfer_call transfers the caller (empty: none)"
    )
    busy_message: str = setting(
        ENGLISH["busy_message"], help="said when a call of this profile cannot be served (capacity, "
        "shutting down; where the transport can say something)"
    )
    max_duration_goodbye: str = setting(
        ENGLISH["max_duration_goodbye"], help="said when the call reaches max_duration (empty: none)"
    )
    dtmf_prefix: str = setting(
        ENGLISH["dtmf_prefix"], help="put before the keys the caller pressed, in the LLM's input"
    )
    phrases: str = setting(
        "", help="TOML file of this profile's phrases (keys as in vc/phrases/en.toml); the "
        "profile's own keys win over it, it wins over the language's catalogue"
    )
    max_duration: float = setting(
        0.0, help="seconds after which the bot says max_duration_goodbye and hangs up (0: no limit)"
    )
    match_to: list[str] = setting(
        factory=list, help="glob(s) on the called number / SIP user", aliases=("match.to",)
    )
    match_from: list[str] = setting(factory=list, help="glob(s) on the caller", aliases=("match.from",))
    match_transport: list[str] = setting(
        factory=list, help="transport name(s)", aliases=("match.transport",)
    )


@attrs.define
class Profile:
    """A resolved profile."""

    name: str
    settings: ProfileSettings = attrs.field(factory=ProfileSettings)
    match_params: dict[str, list[str]] = attrs.field(factory=dict)
    #: phrase key -> where its text came from, for those the profile does not set itself
    #: (its phrases file, a vc/phrases catalogue...): what ``vc config show`` names
    phrase_sources: dict[str, str] = attrs.field(factory=dict)

    def __getattr__(self, item: str):
        # Profile.language, Profile.greeting... read through to the settings.
        if item.startswith("__"):
            raise AttributeError(item)
        return getattr(self.settings, item)

    def matches(self, info: CallInfo) -> bool:
        s = self.settings
        rules = [
            (s.match_to, [info.to, info.user]),
            (s.match_from, [info.from_]),
            (s.match_transport, [info.transport]),
        ]
        rules += [(globs, [info.params.get(k, "")]) for k, globs in self.match_params.items()]
        if not any(globs for globs, _ in rules):
            return False
        return all(
            any(fnmatch.fnmatchcase(v, g) for g in globs for v in values if v)
            for globs, values in rules
            if globs
        )


def transfer_allowed(profile: Profile | ProfileSettings, target: str) -> bool:
    """Whether the profile lets transfer_call send the caller to ``target``: its own
    ``transfer_target``, or an entry (exact or glob) of ``transfer_allowed``."""
    s = profile.settings if isinstance(profile, Profile) else profile
    target = _dialable(target)
    if not target:
        return False
    if target == _dialable(s.transfer_target):
        return True
    allowed = [_dialable(a) for a in s.transfer_allowed]
    return any(target == a or fnmatch.fnmatchcase(target, a) for a in allowed if a)


def _dialable(value: str) -> str:
    """A phone number without its punctuation (``+1 (555) 765-4321`` -> ``+15557654321``),
    as the transports dial it; anything else (SIP URIs) stripped of surrounding blanks only."""
    value = value.strip()
    if _PHONE.fullmatch(value):
        return re.sub(r"[\s().-]", "", value)
    return value


_PHONE = re.compile(r"\+?[\d\s().*?-]+")


def select_profile(profiles: list[Profile], info: CallInfo) -> Profile:
    """The profile for a call: explicit ``profile`` parameter, else first match, else default."""
    by_name = {p.name: p for p in profiles}
    wanted = info.params.get("profile")
    if wanted and wanted in by_name:
        return by_name[wanted]
    for p in profiles:
        if p.name != "default" and p.matches(info):
            return p
    return by_name.get("default") or Profile("default")

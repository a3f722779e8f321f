"""Configuration: one INI file, overridden by environment variables, validated against schemas.

Layout (see docs/configuration.md)::

    [vc]               transports = twilio, opensips     ; several at once
    [server]           host, port, drain_timeout, max_calls, memory_trim_interval
    [vad]              confidence, start_secs, stop_secs, min_volume
    [interruption]     enabled, min_words
    [stt]              provider = faster-whisper          ; + that provider's keys (shorthand)
    [stt.faster-whisper]  model = tiny.en                ; settings of one provider
    [llm] / [llm.<provider>], [tts] / [tts.<provider>]
    [transport.<name>] settings of an enabled transport
    [observer.<name>]  settings of an observer
    [profile.<name>]   per-call profiles (vc.profiles)

Every key can be overridden by ``VC_<SECTION>__<KEY>``: section and key upper-cased with every
run of other characters turned into ``_`` (``[stt.faster-whisper] beam_size`` ->
``VC_STT_FASTER_WHISPER__BEAM_SIZE``). The file is ``-c FILE``, else ``$VC_CONFIG_FILE``,
else the old system's ``$OAVC_CONFIG_FILE``; with none, built-in defaults run the embedded
default stack.
"""

from __future__ import annotations

import configparser
import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from vc import legacy, phrases
from vc.capabilities import capability_errors, capability_warnings, create_provider
from vc.plugins import Registry
from vc.profiles import Profile, ProfileSettings
from vc.providers import Provider
from vc.settings import ConfigError, build, convert, describe, setting, show_value

log = logging.getLogger("vc.config")

Sections = dict[str, dict[str, tuple[str, str]]]
KINDS = ("stt", "llm", "tts")

# What runs when the configuration names no provider (the default stack) is not core's to say:
# installed plugins declare it (register_known_providers; Registry.default_provider).


@attrs.define
class VCSettings:
    transports: list[str] = setting(
        factory=list, help="transports to run, comma separated (unset: the default stack's, as "
        "the installed plugins declare it)"
    )
    observers: list[str] = setting(
        factory=lambda: ["*"],
        help="observers to run, by name ('*': all installed); [observer.<name>] enabled "
        "overrides it for one observer",
    )
    log_level: str = setting("info", help="debug, info, warning, error")
    log_format: Literal["text", "json"] = setting("text", help="text for people, json for log collectors")
    phrases_dir: str = setting(
        "", help="directory of <language>.toml phrase files: more languages, or other texts for "
        "the shipped ones (en, tr); see vc.phrases"
    )


@attrs.define
class ServerSettings:
    host: str = setting("127.0.0.1", help="HTTP listen address (0.0.0.0 in containers)")
    port: int = setting(
        8080, min=0, max=65535, help="HTTP port (Cloud Run: $PORT is used when set)"
    )
    drain_timeout: float = setting(
        30.0, min=0, max=86400,
        help="seconds SIGTERM waits for active calls to end before stopping",
    )
    max_calls: int = setting(
        0, min=0, max=100000, help="refuse calls beyond this many at once (0: no limit)"
    )
    memory_trim_interval: float = setting(
        10.0, min=0, max=86400,
        help="after calls end, hand freed memory back to the OS (glibc malloc_trim) at most "
        "every this many seconds (0: never; no effect off glibc)",
    )


#: Silence that ends a turn whose words sound finished, unless configured. Whisper writes a
#: sentence cut at a pause as a finished one ("I need to change my flight."), so a shorter wait
#: answers callers who pause mid-sentence: 0.4 s answered 2 of 18 such sentences (pauses of
#: 300-600 ms), 0.7 s none, for ~0.1 s on the median turn (bench/README.md, thirteenth session).
DEFAULT_STOP_SECS = 0.7


@attrs.define
class VADSettings:
    confidence: float = setting(0.7, min=0, max=1, help="Silero speech probability threshold (0..1)")
    start_secs: float = setting(0.15, min=0, max=10, help="speech needed before the caller's turn starts")
    stop_secs: float | None = setting(
        None, min=0, max=10,
        help="silence that ends the caller's turn (default 0.7: a caller's pause of up to ~0.6 s "
        "inside a sentence is not answered; legacy min_silence_ms)",
    )
    min_volume: float = setting(0.5, min=0, max=1, help="minimum normalised volume counted as speech (0..1)")
    min_silence_ms: int | None = setting(
        None, min=0, max=10000, help="legacy: silence in ms that ends a turn"
    )
    min_speech_ms: int | None = setting(
        None, min=0, max=10000, help="legacy: speech in ms that starts a turn"
    )

    def effective_stop_secs(self) -> float:
        if self.stop_secs is not None:
            return self.stop_secs
        if self.min_silence_ms is not None:
            return self.min_silence_ms / 1000
        return DEFAULT_STOP_SECS

    def effective_start_secs(self) -> float:
        if self.min_speech_ms is not None and self.start_secs == 0.15:
            return self.min_speech_ms / 1000
        return self.start_secs


@attrs.define
class TurnSettings:
    end: Literal["adaptive", "silence"] = setting(
        "adaptive",
        help="adaptive: the turn ends [vad] stop_secs after the speech when the words sound "
        "finished and incomplete_secs after it when they do not, and each segment is "
        "transcribed while the silence is waited out; silence: always [vad] stop_secs, "
        "transcribed after it (vc.turns)",
    )
    segment_secs: float = setting(
        0.2, min=0.05, max=10,
        help="adaptive: silence after which the speech so far is transcribed",
    )
    incomplete_secs: float = setting(
        1.0, min=0, max=10,
        help="adaptive: silence that ends a turn whose last word expects more (\"a table for\", "
        "\"and\", a comma)",
    )
    continuation_words: str = setting(
        "", help="adaptive: more words after which a turn is not over, space separated",
    )
    early_transcript_secs: float = setting(
        0.1, min=0, max=10,
        help="silence after which the STT starts transcribing the speech so far, before the "
        "segment ends; used if the silence lasts, wasted CPU if the caller goes on (segmented "
        "STTs; 0: off)",
    )
    speculate: bool = setting(
        True,
        help="adaptive: start the reply as soon as the caller's words are transcribed, while "
        "the turn's silence is still waited out; it is held until the turn ends and dropped "
        "unheard if the caller goes on (vc.turns)",
    )


@attrs.define
class InterruptionSettings:
    enabled: bool = setting(True, help="let the caller interrupt the bot (barge-in)")
    min_words: int = setting(0, min=0, max=100, help="words the caller must say to interrupt (0: any speech)")
    min_words_strategy: str = setting(
        "", help="legacy: true/false or a number of words; sets min_words"
    )
    pause_on_speech: bool = setting(
        True,
        help="silence the bot as soon as the caller seems to start talking (before the turn is "
        "confirmed) and play on from the same point if it was only a noise",
    )
    pause_after_ms: int = setting(
        30, min=0, max=10000, help="voiced audio that pauses the bot (pause_on_speech; 32 ms VAD "
        "windows: 30 is one window)"
    )
    pause_on_level_db: float = setting(
        25.0, min=0, max=100,
        help="pause_on_speech: a sound this many dB above the line's noise floor pauses the bot "
        "too, before the VAD hears speech in it (a word starting with s or f: ~100 ms sooner); "
        "0: the VAD alone. A call loses it after 3 such sounds in a row that were not speech",
    )
    backchannels: bool = setting(
        True,
        help="speech over the bot interrupts it only once it says more than listener words "
        "(mm-hmm, yeah, okay; a cough says none) or goes on for long_speech_secs; until then "
        "the bot is paused, and plays on where it stopped if it was not a turn (vc.turns)",
    )
    long_speech_secs: float = setting(
        0.8, min=0, max=10, help="backchannels: speech over the bot this long interrupts it "
        "before its words are known",
    )
    volume_threshold: float | None = setting(
        None, min=0, max=32768, help="legacy: minimum caller volume to interrupt (0..1, or 16-bit RMS if > 1)"
    )
    volume_duration_ms: int | None = setting(
        None, min=0, max=10000, help="legacy: how long the caller must speak to interrupt, in ms"
    )

    def effective_min_words(self) -> int:
        v = self.min_words_strategy.strip().lower()
        if v.isdigit():
            return int(v)
        if v in ("true", "yes", "on", "1"):
            return max(self.min_words, 2)
        return self.min_words


CORE_SECTIONS: dict[str, type] = {
    "vc": VCSettings,
    "server": ServerSettings,
    "vad": VADSettings,
    "turn": TurnSettings,
    "interruption": InterruptionSettings,
}


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides ``[section] key``."""

    def norm(s: str) -> str:
        return re.sub(r"[^A-Z0-9]+", "_", s.upper()).strip("_")

    return f"VC_{norm(section)}__{norm(key)}"


@attrs.define
class ProviderChoice:
    kind: str
    name: str
    settings: Any


@attrs.define
class Config:
    """The validated configuration."""

    vc: VCSettings
    server: ServerSettings
    vad: VADSettings
    interruption: InterruptionSettings
    providers: dict[str, dict[str, ProviderChoice]]  # kind -> name -> choice (incl. profile picks)
    default_providers: dict[str, str]  # kind -> provider name from [kind] provider
    transports: dict[str, ProviderChoice]
    observers: dict[str, Any]
    profiles: list[Profile]
    source: RawConfig
    warnings: list[str] = attrs.field(factory=list)
    turn: TurnSettings = attrs.field(factory=TurnSettings)


@attrs.define
class RawConfig:
    """Sections as read, with where each value came from."""

    sections: Sections = attrs.field(factory=dict)
    path: str | None = None
    legacy: bool = False
    errors: list[ConfigError] = attrs.field(factory=list)
    #: the file's section names as it spells them (``VAD``), in file order
    written: list[str] = attrs.field(factory=list)

    def get(self, section: str) -> dict[str, tuple[str, str]]:
        return self.sections.get(section, {})


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> str | None:
    if explicit:
        return os.fspath(explicit)
    return env.get("VC_CONFIG_FILE") or env.get("OAVC_CONFIG_FILE") or None


def read(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> RawConfig:
    """Read the INI file (legacy files are translated); environment overrides come later."""
    env = os.environ if env is None else env
    path = config_path(path, env)
    raw = RawConfig(path=path)
    if path is None:
        return raw
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raw.errors.append(ConfigError("", "", path, "configuration file not found"))
        return raw
    except (configparser.Error, UnicodeDecodeError, OSError) as e:
        raw.errors.append(ConfigError("", "", path, f"cannot parse INI file: {e}".replace("\n", " ")))
        return raw
    sections: Sections = {}
    raw.written = parser.sections()
    for name in parser.sections():
        sections[name] = {
            k.strip().lower(): (v, f"{path} [{name}]") for k, v in parser.items(name, raw=True)
        }
    if legacy.is_legacy(sections):
        raw.legacy = True
        sections = legacy.translate(sections)
    raw.sections = {_section_key(n): v for n, v in sections.items()}
    return raw


def _section_key(name: str) -> str:
    """Section names are matched case-insensitively except for profile names."""
    head, sep, tail = name.partition(".")
    if head.lower() == "profile" and sep:
        return f"profile.{tail}"
    return name.lower()


def _apply_env(raw: RawConfig, known: dict[str, list[str]], env: Mapping[str, str]) -> None:
    for section, keys in known.items():
        for key in keys:
            name = env_name(section, key)
            if name in env:
                raw.sections.setdefault(section, {})[key] = (env[name], f"env {name}")


def _unknown_env(
    known: dict[str, list[str]], env: Mapping[str, str]
) -> tuple[list[ConfigError], list[str]]:
    """``VC_<SECTION>__<KEY>`` variables that override nothing: a known section with an unknown
    key is an error like an INI typo (with the closest name); an unknown section, a warning
    (its plugin may not be installed in this image). Values are never echoed (secrets)."""
    profile_keys = _known_keys(ProfileSettings)
    errors: list[ConfigError] = []
    warnings: list[str] = []
    for name in sorted(env):
        if not name.startswith("VC_") or "__" not in name:
            continue
        head = name.split("__", 1)[0]
        sections = [s for s in known if env_name(s, "x").split("__", 1)[0] == head]
        if not sections and head.startswith("VC_PROFILE_"):
            sections = ["profile." + head[len("VC_PROFILE_"):].lower()]
            known = {**known, sections[0]: profile_keys}
        if not sections:
            warnings.append(f"environment variable {name} names no configuration section: ignored")
            continue
        valid = [env_name(s, k) for s in sections for k in known[s]]
        if name in valid:
            continue
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        key = name.split("__", 1)[1].lower()
        errors.append(ConfigError(sections[0], key, None, f"unknown key{hint}", f"env {name}"))
    return errors, warnings


def _known_keys(cls: type | None) -> list[str]:
    return [f.name for f in describe(cls)] if cls is not None else []


def installed_names(kind: str, registry: Registry) -> str:
    table = registry.observers if kind == "observer" else registry.providers.get(kind, {})
    return ", ".join(sorted(table)) or "none"


def missing_provider_message(kind: str, name: str, registry: Registry) -> str:
    dist = registry.install_hint(kind, name)
    hint = f"pip install {dist}" if dist else "install the plugin that provides it"
    return (f"{kind} provider {name!r} is not installed ({hint}); installed {kind} providers: "
            f"{installed_names(kind, registry)}")


def no_default_message(kind: str, registry: Registry) -> str:
    where = "[vc] transports" if kind == "transport" else f"[{kind}] provider"
    return (f"no {kind} provider is configured and no installed plugin declares a default one "
            f"(set {where}); installed {kind} providers: {installed_names(kind, registry)}")


def resolve(
    raw: RawConfig, registry: Registry, env: Mapping[str, str] | None = None
) -> tuple[Config | None, list[ConfigError]]:
    """Validate everything against core's and the plugins' schemas; all errors at once.

    The steps, in order (each one's errors follow the previous one's): the environment's
    overrides, core's sections, the profiles, the STT/LLM/TTS providers, the phrases, the
    transports, the observers, and sections nobody knows about.
    """
    env = os.environ if env is None else env
    if raw.errors:  # the file itself could not be read: nothing else is meaningful
        return None, list(raw.errors)
    errors = [ConfigError("plugins", "", None, c) for c in registry.conflicts]
    warnings: list[str] = []

    known = _known_sections(raw, registry)
    _apply_env(raw, known, env)
    errors += _check_env(raw, known, env, warnings)
    if raw.legacy:
        _ignore_what_vc_does_not_use(raw, registry, known, warnings)

    core, errs = _core_sections(raw)
    errors += errs
    profiles, errs = _profiles(raw)
    errors += errs
    providers, defaults, errs = _providers(raw, registry, profiles, warnings)
    errors += errs
    # What the bot says by itself, in each profile's language (vc.phrases).
    errors += _apply_phrases(core["vc"], profiles, raw, providers, defaults, warnings)
    transports, errs = _transports(raw, registry, core["vc"])
    errors += errs
    observers, errs = _observers(raw, registry, core["vc"].observers)
    errors += errs
    errors += _missing_observers(registry, core["vc"].observers)
    errors += _unknown_sections(raw, known, warnings)

    if errors:
        return None, errors
    return (
        Config(
            vc=core["vc"], server=core["server"], vad=core["vad"],
            interruption=core["interruption"], turn=core["turn"], providers=providers,
            default_providers=defaults,
            transports=transports, observers=observers, profiles=profiles, source=raw,
            warnings=warnings,
        ),
        [],
    )


def _known_sections(raw: RawConfig, registry: Registry) -> dict[str, list[str]]:
    """Every section a key may be set in (from the file or the environment) and its keys:
    core's, each installed provider's, transport's and observer's, and the profiles'."""
    known: dict[str, list[str]] = {s: _known_keys(c) for s, c in CORE_SECTIONS.items()}
    for kind in KINDS:
        known[kind] = ["provider"]  # plus every provider's keys: [stt] shorthand (VC_STT__MODEL)
        for name, reg in registry.providers[kind].items():
            known[f"{kind}.{name}"] = _known_keys(reg.cls.Settings)
            known[kind] += [k for k in known[f"{kind}.{name}"] if k not in known[kind]]
    for name, reg in registry.providers["transport"].items():
        known[f"transport.{name}"] = _known_keys(reg.cls.Settings)
    for name, (cls, _) in registry.observers.items():
        known[f"observer.{name}"] = ["enabled", *_known_keys(cls.Settings)]
    for section in list(raw.sections):
        if section.startswith("profile."):
            known[section] = _known_keys(ProfileSettings)
    known.setdefault("profile.default", _known_keys(ProfileSettings))
    return known


def _check_env(raw: RawConfig, known: dict[str, list[str]], env: Mapping[str, str],
               warnings: list[str]) -> list[ConfigError]:
    """``VC_*`` variables that override nothing: errors (warnings for the old INI, as for its
    file: what vc does not know is a warning there)."""
    env_errors, env_warnings = _unknown_env(known, env)
    warnings += env_warnings
    if raw.legacy:
        warnings += [str(e) for e in env_errors]
        return []
    return env_errors


def _core_sections(raw: RawConfig) -> tuple[dict[str, Any], list[ConfigError]]:
    """Core's own sections built (their defaults where one does not build)."""
    core: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for section, cls in CORE_SECTIONS.items():
        obj, errs = build(cls, raw.get(section), section)
        errors += errs
        core[section] = obj if obj is not None else cls()
    return core, errors


def _profiles(raw: RawConfig) -> tuple[list[Profile], list[ConfigError]]:
    """The profiles, in file order; ``default`` last if the file has none."""
    profiles: list[Profile] = []
    errors: list[ConfigError] = []
    for section, values in raw.sections.items():
        if not section.startswith("profile."):
            continue
        name = section.split(".", 1)[1]
        params = {
            k[len("match.param.") :]: [g.strip() for g in v.split(",") if g.strip()]
            for k, (v, _) in values.items()
            if k.startswith("match.param.")
        }
        plain = {k: v for k, v in values.items() if not k.startswith("match.param.")}
        obj, errs = build(ProfileSettings, plain, section)
        errors += errs
        profiles.append(Profile(name, obj or ProfileSettings(), params))
    if not any(p.name == "default" for p in profiles):
        obj, _ = build(ProfileSettings, raw.get("profile.default"), "profile.default")
        profiles.append(Profile("default", obj or ProfileSettings()))
    return profiles, errors


def _providers(
    raw: RawConfig, registry: Registry, profiles: list[Profile], warnings: list[str]
) -> tuple[dict[str, dict[str, ProviderChoice]], dict[str, str], list[ConfigError]]:
    """Each kind's provider (``[stt] provider``, else the default stack's) and every one a
    profile picks, with its settings: (providers by kind and name, the chosen one by kind)."""
    defaults: dict[str, str] = {}
    providers: dict[str, dict[str, ProviderChoice]] = {k: {} for k in KINDS}
    errors: list[ConfigError] = []
    for kind in KINDS:
        chosen = _chosen_provider(raw, registry, kind, errors)
        defaults[kind] = chosen
        for name, where in _wanted_providers(kind, chosen, profiles).items():
            choice = _provider_choice(raw, registry, kind, name, where, chosen, profiles,
                                      errors, warnings)
            if choice is not None:
                providers[kind][name] = choice
    return providers, defaults, errors


def _chosen_provider(raw: RawConfig, registry: Registry, kind: str,
                     errors: list[ConfigError]) -> str:
    """``[<kind>] provider``, else the default stack's (empty, with an error, if none)."""
    default = registry.default_provider(kind) or ""
    chosen = raw.get(kind).get("provider", (default, "default"))[0].strip()
    if not chosen:
        errors.append(ConfigError(kind, "provider", None, no_default_message(kind, registry)))
    return chosen


def _wanted_providers(kind: str, chosen: str, profiles: list[Profile]) -> dict[str, str]:
    """Provider name -> where it is asked for: the kind's section, then the profiles' picks."""
    wanted = {chosen: kind} if chosen else {}
    for p in profiles:
        pick = getattr(p.settings, kind)
        if pick:
            wanted.setdefault(pick, f"profile.{p.name}")
    return wanted


def _provider_choice(
    raw: RawConfig, registry: Registry, kind: str, name: str, where: str, chosen: str,
    profiles: list[Profile], errors: list[ConfigError], warnings: list[str],
) -> ProviderChoice | None:
    """One provider's settings, judged as ``vc serve`` judges them (None: not installed)."""
    kind_section = raw.get(kind)
    found = registry.providers[kind].get(name)
    if found is None:
        src = kind_section.get("provider", ("", "default"))[1] if where == kind else where
        errors.append(ConfigError(where, kind if where != kind else "provider", name,
                                  missing_provider_message(kind, name, registry), src))
        return None
    values = dict(raw.get(f"{kind}.{name}"))
    if name == chosen:  # [stt] shorthand keys belong to the selected provider
        for k, v in kind_section.items():
            if k != "provider":
                values.setdefault(k, v)
    settings, errs = _provider_settings(found.cls.Settings, values, f"{kind}.{name}")
    errors += errs
    if not errs:  # judged as vc serve judges it: by the instance it would run
        # (The old engine had no tools: a legacy file is not told it lacks them.)
        errors += _check_capabilities(found.cls, kind, name, settings, profiles, chosen,
                                      [] if raw.legacy else warnings)
    return ProviderChoice(kind, name, settings)


def _transports(raw: RawConfig, registry: Registry, vc_settings: VCSettings
                ) -> tuple[dict[str, ProviderChoice], list[ConfigError]]:
    """``[vc] transports`` (unset: the default stack's), each with its settings."""
    errors: list[ConfigError] = []
    if "transports" not in raw.get("vc"):
        vc_settings.transports = registry.default_transports()
        if not vc_settings.transports:
            errors.append(ConfigError("vc", "transports", None,
                                      no_default_message("transport", registry)))
    transports: dict[str, ProviderChoice] = {}
    for name in vc_settings.transports:
        transport = registry.providers["transport"].get(name)
        if transport is None:
            errors.append(ConfigError("vc", "transports", name,
                                      missing_provider_message("transport", name, registry)))
            continue
        settings, errs = _provider_settings(transport.cls.Settings, raw.get(f"transport.{name}"),
                                            f"transport.{name}")
        errors += errs
        transports[name] = ProviderChoice("transport", name, settings)
    return transports, errors


def _missing_observers(registry: Registry, listed: list[str]) -> list[ConfigError]:
    """``[vc] observers`` names that no installed plugin provides."""
    return [ConfigError("vc", "observers", name, missing_provider_message("observer", name, registry))
            for name in listed if name != "*" and name not in registry.observers]


def _unknown_sections(raw: RawConfig, known: dict[str, list[str]],
                      warnings: list[str]) -> list[ConfigError]:
    """Sections nobody knows about are probably typos (a provider's: it may not be installed)."""
    errors: list[ConfigError] = []
    for section in raw.sections:
        head, _, tail = section.partition(".")
        if section in known or head == "profile":
            continue
        if head in (*KINDS, "transport", "observer") and tail:
            warnings.append(f"[{section}] is ignored: no installed {head} provider is named {tail!r}")
        else:
            errors.append(ConfigError(section, "", None, "unknown section"))
    return errors


def _apply_phrases(
    vc_settings: VCSettings, profiles: list[Profile], raw: RawConfig,
    providers: dict[str, dict[str, ProviderChoice]], defaults: dict[str, str], warnings: list[str],
) -> list[ConfigError]:
    """Fill in each profile's phrases: its own keys, else its ``phrases`` file, else (for the
    apology) its LLM provider's ``apology`` where set, else its language's catalogue."""
    errors: list[ConfigError] = []
    directory = _beside(raw, vc_settings.phrases_dir.strip())
    if directory:
        source = raw.get("vc").get("phrases_dir", ("", ""))[1]
        try:
            for path in phrases.directory_files(directory).values():
                phrases.read_file(path)
        except phrases.PhrasesError as e:
            errors.append(ConfigError("vc", "phrases_dir", directory, str(e), source))
            directory = ""
    shipped = ", ".join(phrases.shipped())
    for p in profiles:
        section = f"profile.{p.name}"
        values = raw.get(section)
        own: dict[str, str] = {}
        file = _beside(raw, p.settings.phrases.strip())
        if file:
            try:
                own = phrases.read_file(file)
            except phrases.PhrasesError as e:
                errors.append(ConfigError(section, "phrases", file, str(e),
                                          values.get("phrases", ("", ""))[1]))
                continue
        where = dict.fromkeys(own, file)
        own.update({k: getattr(p.settings, k) for k in phrases.KEYS if k in values})
        if "apology" not in own:
            name = p.settings.llm or defaults["llm"]
            llm = providers["llm"].get(name)
            text = getattr(llm.settings if llm else None, "apology", None)
            if isinstance(text, str) and text.strip() and text != phrases.ENGLISH["apology"]:
                own["apology"] = text  # [llm.<name>] apology, set on purpose
                where["apology"] = f"[llm.{name}] apology"
        try:
            resolved, found = phrases.resolve(p.settings.language, own, directory or None)
            catalogued = phrases.sources(p.settings.language, directory or None)
        except phrases.PhrasesError as e:
            errors.append(ConfigError("vc", "phrases_dir", directory, str(e)))
            continue
        p.phrase_sources = {k: where.get(k) or catalogued.get(k, "")
                            for k in phrases.KEYS if k not in values}
        if not found and not set(phrases.KEYS) <= set(own):
            lang = phrases.primary(p.settings.language)
            warnings.append(
                f"[{section}] language = {p.settings.language}: no phrases for {lang!r} "
                f"(shipped: {shipped}; add {lang}.toml to [vc] phrases_dir or set the profile's "
                "phrases file): what the bot says by itself falls back to English"
            )
        for key, text in resolved.items():
            setattr(p.settings, key, text)
    return errors


def _beside(raw: RawConfig, path: str) -> str:
    """A relative path from the INI file means one next to it."""
    if not path or not raw.path or os.path.isabs(os.path.expanduser(path)):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(raw.path)), path)


def _ignore_what_vc_does_not_use(raw: RawConfig, registry: Registry,
                                 known: dict[str, list[str]], warnings: list[str]) -> None:
    """A file in the old format is read as the old engine read it: what vc does not use (dead
    sections such as ``[openai]``, unknown keys in any section) is dropped with a warning that
    names it, never its value (dead sections hold API keys), instead of being an error.

    Values of the keys vc does use are still validated. A vc-native file stays strict.
    """
    schemas: dict[str, type | None] = {**CORE_SECTIONS}
    for kind in KINDS:
        for name, reg in registry.providers[kind].items():
            schemas[f"{kind}.{name}"] = reg.cls.Settings
    for name, reg in registry.providers["transport"].items():
        schemas[f"transport.{name}"] = reg.cls.Settings
    for name, (cls, _) in registry.observers.items():
        schemas[f"observer.{name}"] = cls.Settings
    ignored: list[tuple[str, str]] = []  # (section as written, message)
    for section, values in list(raw.sections.items()):
        head, _, tail = section.partition(".")
        if section in schemas:
            raw.sections[section] = _legacy_known(schemas[section], values, section, ignored)
        elif section in KINDS:  # [stt] shorthand: the selected provider's schema
            selected = registry.providers[section].get(values.get("provider", ("", ""))[0])
            if selected is not None:
                rest = {k: v for k, v in values.items() if k != "provider"}
                keep = _legacy_known(selected.cls.Settings, rest, section, ignored)
                raw.sections[section] = {**keep, "provider": values["provider"]}
        elif head == "profile" and tail:
            params = {k: v for k, v in values.items() if k.startswith("match.param.")}
            plain = {k: v for k, v in values.items() if k not in params}
            raw.sections[section] = {**_legacy_known(ProfileSettings, plain, section, ignored),
                                     **params}
        elif section not in known and not (head in (*KINDS, "transport", "observer") and tail):
            del raw.sections[section]
            written = next((n for n in raw.written if _section_key(n) == section), section)
            keys = f" ({', '.join(values)})" if values else ""
            ignored.append((written, f"[{written}]{keys} from the old configuration is not used "
                                     "by vc; ignored"))
    # In the file's order, whichever vc section the old one was translated into.
    order = {name: i for i, name in enumerate(raw.written)}
    ignored.sort(key=lambda item: order.get(item[0], len(order)))
    warnings += [message for _, message in ignored]


def _legacy_known(cls: type | None, values: dict[str, tuple[str, str]], section: str,
                  ignored: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Keys of the old INI that vc does not use are ignored, as the old engine ignored them."""
    known = set()
    for f in describe(cls) if cls is not None else []:
        known |= {f.name, *f.aliases}
    out = {}
    for k, v in values.items():
        if k in known:
            out[k] = v
            continue
        # Name the key where the file has it: [engine] workers, not [transport.opensips] workers.
        old = re.search(r"\(legacy \[([^\]]+)\] [^)]*\)$", v[1])
        where = old.group(1) if old else section
        ignored.append((where, f"[{where}] {k} from the old configuration is not used by vc; "
                               "ignored"))
    return out


def _check_capabilities(cls: type[Provider], kind: str, name: str, settings: Any,
                        profiles: list[Profile], default: str,
                        warnings: list[str]) -> list[ConfigError]:
    """Errors (and ``warnings``) about what the provider instance ``vc serve`` would run can do."""
    try:
        instance = create_provider(cls, kind, name, settings, profiles, default)
    except Exception as e:  # vc serve reports it when it builds the provider
        log.debug("%s provider %s could not be built to check it: %s", kind, name, e)
        return []
    warnings += capability_warnings(kind, name, instance)
    return capability_errors(kind, name, instance)


def observer_enabled(name: str, listed: list[str], values: Mapping[str, tuple[str, str]]) -> bool:
    """The on/off rule: ``[observer.<name>] enabled`` when given, else whether ``[vc] observers``
    names the observer or ``*`` (the default: every installed observer). Raises ValueError."""
    value = values.get("enabled", ("", ""))[0].strip()
    if value:
        return bool(convert(value, bool))
    return "*" in listed or name in listed


def _observers(raw: RawConfig, registry: Registry, listed: list[str]
               ) -> tuple[dict[str, Any], list[ConfigError]]:
    """The settings of each observer that is on (see :func:`observer_enabled`), by name."""
    observers: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name, (cls, _) in registry.observers.items():
        section = f"observer.{name}"
        values = dict(raw.get(section))
        try:
            on = observer_enabled(name, listed, values)
        except ValueError as e:
            value, source = values["enabled"]
            errors.append(ConfigError(section, "enabled", value, str(e), source))
            continue
        values.pop("enabled", None)
        if on:
            settings, errs = _provider_settings(cls.Settings, values, section)
            errors += errs
            observers[name] = settings
    return observers, errors


def _provider_settings(cls: type | None, values: dict[str, tuple[str, str]], section: str):
    if cls is None:
        errs = [ConfigError(section, k, v, "this provider has no settings", s)
                for k, (v, s) in values.items()]
        return None, errs
    return build(cls, values, section)


def load(
    path: str | os.PathLike[str] | None, registry: Registry, env: Mapping[str, str] | None = None
) -> tuple[Config | None, list[ConfigError]]:
    """Read and resolve in one go."""
    return resolve(read(path, env), registry, env)


def effective(config: Config) -> list[tuple[str, str, str, str]]:
    """(section, key, shown value, source) rows for ``vc config show``; secrets redacted."""
    raw = config.source
    rows: list[tuple[str, str, str, str]] = []

    def add(section: str, obj: Any, cls: type | None) -> None:
        if cls is None or obj is None:
            return
        given = raw.get(section)
        for f in describe(cls):
            value = getattr(obj, f.name)
            src = "default"
            for key in (f.name, *f.aliases):
                if key in given:
                    src = given[key][1]
                    break
            rows.append((section, f.name, show_value(f.name, value, f.secret), src))

    for section, cls in CORE_SECTIONS.items():
        add(section, getattr(config, section), cls)
    for kind in KINDS:
        rows.append((kind, "provider", config.default_providers[kind],
                     raw.get(kind).get("provider", ("", "default"))[1]))
        for name, choice in config.providers[kind].items():
            values = raw.get(f"{kind}.{name}")
            if name == config.default_providers[kind]:
                values = {**{k: v for k, v in raw.get(kind).items() if k != "provider"}, **values}
            saved = raw.sections.get(f"{kind}.{name}")
            raw.sections[f"{kind}.{name}"] = values
            add(f"{kind}.{name}", choice.settings, type(choice.settings) if choice.settings else None)
            if saved is None:
                raw.sections.pop(f"{kind}.{name}")
            else:
                raw.sections[f"{kind}.{name}"] = saved
    for name, choice in config.transports.items():
        add(f"transport.{name}", choice.settings, type(choice.settings) if choice.settings else None)
    for name, settings in config.observers.items():
        add(f"observer.{name}", settings, type(settings) if settings is not None else None)
    for p in config.profiles:
        first = len(rows)
        add(f"profile.{p.name}", p.settings, ProfileSettings)
        rows[first:] = [(s, k, v, p.phrase_sources.get(k) or src if src == "default" else src)
                        for s, k, v, src in rows[first:]]
    return rows


def example_path() -> Path:
    return Path(__file__).parent / "example.ini"


def reference(registry: Registry) -> str:
    """Markdown reference of every section and key that core and the installed plugins know."""
    from vc.settings import FieldInfo

    def table(section: str, fields: list[FieldInfo]) -> list[str]:
        rows = [f"### [{section}]", "", "| key | type | default | environment | meaning |",
                "|---|---|---|---|---|"]
        for f in fields:
            if f.default is None or f.default == "":
                default = "" if not f.required else "(required)"
            elif isinstance(f.default, (list, tuple)):
                default = ", ".join(map(str, f.default))
            else:
                default = str(f.default)
            if f.secret and default:
                default = "(secret)"
            default = default if len(default) <= 40 else default[:37] + "..."
            env = env_name(section.replace("<name>", "NAME"), f.name)
            kind = f.type_name.replace(" | ", " or ")
            if f.allowed:
                kind += f" ({f.allowed})"
            rows.append(f"| `{f.name}` | {kind} | {default} | `{env}` | {f.help} |")
        return [*rows, ""]

    out: list[str] = []
    for section, cls in CORE_SECTIONS.items():
        out += table(section, describe(cls))
    out += table("profile.<name>", describe(ProfileSettings))
    for kind in (*KINDS, "transport"):
        for name, reg in sorted(registry.providers[kind].items()):
            if reg.cls.Settings is not None:
                out += table(f"{kind}.{name}", describe(reg.cls.Settings))
    for name, (cls, _) in sorted(registry.observers.items()):
        if cls.Settings is not None:
            out += table(f"observer.{name}", describe(cls.Settings))
    return "\n".join(out)

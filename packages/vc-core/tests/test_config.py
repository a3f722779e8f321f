"""Configuration: INI + environment, validation messages, the old system's INI, show/check."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vc import cli
from vc.config import env_name, load, read, resolve
from vc.plugins import load_plugins

if sys.version_info >= (3, 12):
    from importlib.metadata import EntryPoint
else:
    from importlib_metadata import EntryPoint

DATA = Path(__file__).parent / "data"
FAKES = "[stt]\nprovider = fake\n[llm]\nprovider = fake\n[tts]\nprovider = fake\n"


def registry(*modules: str, fakes: bool = True):
    eps = [EntryPoint(name=m, value=m, group="vc") for m in modules]
    env = {"VC_PLUGIN_MODULES": "vc.testing.fakes"} if fakes else {}
    return load_plugins(env=env, eps=eps)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vc.ini"
    p.write_text(text)
    return p


def messages(errors) -> list[str]:
    return [str(e) for e in errors]


def test_env_names_are_predictable() -> None:
    assert env_name("stt.faster-whisper", "beam_size") == "VC_STT_FASTER_WHISPER__BEAM_SIZE"
    assert env_name("transport.twilio", "auth_token") == "VC_TRANSPORT_TWILIO__AUTH_TOKEN"
    assert env_name("profile.sales", "match.to") == "VC_PROFILE_SALES__MATCH_TO"
    assert env_name("vc", "transports") == "VC_VC__TRANSPORTS"


def test_missing_provider_says_which_distribution_to_install() -> None:
    """Core names no provider: the default stack and the install hints come from a plugin
    (vc-stack in a real install; tests/plugins/known_stack.py here)."""
    reg = registry("known_stack", fakes=False)
    cfg, errors = load(None, reg, {})
    assert cfg is None
    assert messages(errors) == [
        "[stt] provider = 'ear' (from default): stt provider 'ear' is not "
        "installed (pip install vc-stt-ear); installed stt providers: none",
        "[llm] provider = 'brain' (from default): llm provider 'brain' is not installed "
        "(pip install 'vc-llm-brain[embedded]'); installed llm providers: none",
        "[tts] provider = 'mouth' (from default): tts provider 'mouth' is not installed "
        "(pip install 'vc-tts-mouth[local]'); installed tts providers: none",
        "[vc] transports = 'pigeon': transport provider 'pigeon' is not installed "
        "(pip install vc-transport-pigeon); installed transport providers: none",
    ]
    _, errors = load(None, reg, {"VC_STT__PROVIDER": "ear-websocket", "VC_VC__OBSERVERS": "diary"})
    assert "stt provider 'ear-websocket' is not installed (pip install vc-stt-ear)" in str(errors)
    assert "observer provider 'diary' is not installed (pip install vc-diary)" in str(errors)


def test_without_a_declared_default_stack_the_only_installed_provider_runs() -> None:
    """``pip install vc-core vc-transport-twilio vc-llm-ollama``: one provider of a kind
    installed and no plugin declaring a default, that one is used; with two, or none, the
    configuration must name one."""
    cfg, errors = load(None, registry("legacy_stubs", fakes=False), {"VC_LLAMA_WS__URL": "x"})
    assert not [e for e in errors if e.key in ("provider", "transports")], messages(errors)
    cfg, errors = load(None, registry("legacy_stubs"), {})
    assert cfg is None
    installed = {"stt": "fake, vosk-websocket", "llm": "fake, llama-ws",
                 "tts": "fake, piper-websocket"}
    assert messages(errors) == [
        f"[{kind}] provider: no {kind} provider is configured and no installed plugin declares "
        f"a default one (set [{kind}] provider); installed {kind} providers: {installed[kind]}"
        for kind in ("stt", "llm", "tts")
    ]
    _, errors = load(None, registry(), {})  # the fakes: one of each, and no transport
    assert messages(errors) == [
        "[vc] transports: no transport provider is configured and no installed plugin "
        "declares a default one (set [vc] transports); installed transport providers: none"]
    _, errors = load(None, registry("known_stack", fakes=False),
                     {"VC_STT__PROVIDER": "nope", "VC_VC__TRANSPORTS": ""})
    assert "stt provider 'nope' is not installed (install the plugin that provides it)" in str(errors)
    assert "transport" not in str(errors)  # named (none), so no default is looked for


def test_every_error_is_reported_at_once(tmp_path) -> None:
    ini = write(tmp_path, FAKES + """
[vc]
transports =
log_format = xml
[server]
port = eighty
[vad]
confidence = high
[stt.fake]
delay = soon
colour = blue
[profile.sales]
max_tokens = many
[nonsense]
a = 1
""")
    cfg, errors = load(ini, registry(), {})
    assert cfg is None
    src = f"from {ini}"
    assert messages(errors) == [
        f"[vc] log_format = 'xml' ({src} [vc]): expected one of 'text', 'json'",
        f"[server] port = 'eighty' ({src} [server]): expected an integer",
        f"[vad] confidence = 'high' ({src} [vad]): expected a number",
        f"[profile.sales] max_tokens = 'many' ({src} [profile.sales]): expected an integer or empty",
        f"[stt.fake] delay = 'soon' ({src} [stt.fake]): expected a number",
        f"[stt.fake] colour = 'blue' ({src} [stt.fake]): unknown key; known keys: script, delay, guessed",
        "[nonsense]: unknown section",
    ]


def test_unparseable_and_missing_files(tmp_path) -> None:
    bad = write(tmp_path, "this is not an ini file\n")
    _, errors = load(bad, registry(), {})
    assert len(errors) == 1 and "cannot parse INI file" in str(errors[0])
    _, errors = load(tmp_path / "nope.ini", registry(), {})
    assert str(errors[0]).endswith("configuration file not found")


def test_environment_overrides_file_and_reaches_every_schema(tmp_path) -> None:
    ini = write(tmp_path, FAKES + "[vc]\ntransports =\n[stt.fake]\ndelay = 0.5\n[server]\nport = 9000\n")
    env = {
        "VC_STT_FAKE__DELAY": "0.25",
        "VC_SERVER__PORT": "9100",
        "VC_PROFILE_DEFAULT__GREETING": "Merhaba",
        "VC_TTS_FAKE__MS_PER_CHAR": "10",
    }
    cfg, errors = load(ini, registry(), env)
    assert not errors
    assert cfg.providers["stt"]["fake"].settings.delay == 0.25
    assert cfg.server.port == 9100
    assert cfg.providers["tts"]["fake"].settings.ms_per_char == 10
    assert cfg.profiles[-1].greeting == "Merhaba"


def test_config_file_from_environment_variables(tmp_path) -> None:
    ini = write(tmp_path, FAKES + "[vc]\ntransports =\n[server]\nport = 9123\n")
    for var in ("VC_CONFIG_FILE", "OAVC_CONFIG_FILE"):
        cfg, errors = load(None, registry(), {var: str(ini)})
        assert not errors and cfg.server.port == 9123


def test_secret_references(tmp_path, monkeypatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("MY_DELAY", "0.75")
    ini = write(tmp_path, FAKES + f"[vc]\ntransports =\n[stt.fake]\ndelay = $env:MY_DELAY\n"
                                  f"[profile.default]\ngreeting = $file:{secret}\n")
    cfg, errors = load(ini, registry(), {})
    assert not errors
    assert cfg.providers["stt"]["fake"].settings.delay == 0.75
    assert cfg.profiles[0].greeting == "s3cret"


def test_provider_shorthand_keys_in_the_kind_section(tmp_path) -> None:
    ini = write(tmp_path, "[vc]\ntransports =\n[stt]\nprovider = fake\ndelay = 0.1\n"
                          "[llm]\nprovider = fake\n[tts]\nprovider = fake\n")
    cfg, errors = load(ini, registry(), {})
    assert not errors
    assert cfg.providers["stt"]["fake"].settings.delay == 0.1


def test_profiles_may_choose_other_providers_which_are_then_validated(tmp_path) -> None:
    ini = write(tmp_path, FAKES + "[vc]\ntransports =\n[profile.tr]\nlanguage = tr\nstt = good-stt\n"
                                  "[stt.good-stt]\nbeam_size = 5\n")
    cfg, errors = load(ini, registry("good_plugin"), {})
    assert not errors, messages(errors)
    assert set(cfg.providers["stt"]) == {"fake", "good-stt"}
    assert cfg.providers["stt"]["good-stt"].settings.beam_size == 5


def test_language_a_provider_does_not_support_is_a_config_error(tmp_path) -> None:
    ini = write(tmp_path, FAKES + "[vc]\ntransports =\n[profile.de]\nlanguage = de\nstt = good-stt\n")
    _, errors = load(ini, registry("good_plugin"), {})
    assert messages(errors) == [
        "[profile.de] language = 'de': stt provider 'good-stt' does not support this language "
        "(supports: en, tr)"
    ]


def test_the_existing_systems_ini_loads_unchanged_and_means_what_it_meant() -> None:
    reg = registry("legacy_stubs", fakes=False)
    raw = read(DATA / "legacy.ini", {})
    assert raw.legacy
    cfg, errors = resolve(raw, reg, {})
    assert not errors, messages(errors)
    assert cfg.default_providers == {"stt": "vosk-websocket", "llm": "llama-ws", "tts": "piper-websocket"}
    assert cfg.providers["stt"]["vosk-websocket"].settings.url == "ws://vosk-server:2700"
    assert cfg.providers["llm"]["llama-ws"].settings.max_tokens == 80
    assert cfg.providers["llm"]["llama-ws"].settings.model == "llama3.2:3b-instruct-turkish"
    assert cfg.providers["tts"]["piper-websocket"].settings.voice == "tr_TR-dfki-medium"
    sip = cfg.transports["opensips"].settings
    assert (sip.mode, sip.sip_port, sip.event_port) == ("proxy", 8089, 8090)
    assert (sip.rtp_min_port, sip.rtp_max_port, sip.rtp_ip) == (35000, 35100, "203.0.113.10")
    assert (sip.mi_ip, sip.mi_port, sip.mi_transport) == ("127.0.0.1", 8080, "udp")
    assert cfg.vc.log_level == "INFO"
    # The VAD and interruption keys the old engine ignored now take effect.
    assert cfg.vad.confidence == 0.6 and cfg.vad.effective_stop_secs() == 0.5
    assert cfg.interruption.effective_min_words() == 2
    profile = cfg.profiles[0]
    assert (profile.language, profile.greeting) == ("tr", "Merhaba, size nasıl yardımcı olabilirim?")


def test_keys_the_old_engine_ignored_are_ignored_with_a_warning(tmp_path) -> None:
    text = (DATA / "legacy.ini").read_text().replace("[engine]\n", "[engine]\nworkers = 4\n")
    cfg, errors = load(write(tmp_path, text), registry("legacy_stubs", fakes=False), {})
    assert not errors
    # named where the file has it, not where vc moved the section ([transport.opensips])
    assert cfg.warnings == ["[engine] workers from the old configuration is not used by vc; ignored"]


#: What `vc config check` says about the operators' real file (tests/data/legacy-operator.ini):
#: every section and key the old engine ignored, named, in file order; never a value.
OPERATOR_WARNINGS = [
    "[general] instance_name from the old configuration is not used by vc; ignored",
    "[logging] file from the old configuration is not used by vc; ignored",
    "[engine] workers from the old configuration is not used by vc; ignored",
    "[rtp] jitter_buffer_ms from the old configuration is not used by vc; ignored",
    "[ai] (flavor, disable) from the old configuration is not used by vc; ignored",
    "[deepgram] (key, model, language, speech_model, smart_format) from the old configuration "
    "is not used by vc; ignored",
    "[openai] (key, model, voice, instructions, welcome_message, disable) from the old "
    "configuration is not used by vc; ignored",
    "[audio] (sample_rate, codec, frame_ms, agc) from the old configuration is not used by vc; "
    "ignored",
    "[pipeline] (stt, llm, tts, barge_in) from the old configuration is not used by vc; ignored",
    "[stt] language from the old configuration is not used by vc; ignored",
    "[stt] api_key from the old configuration is not used by vc; ignored",
    "[llm] history_turns from the old configuration is not used by vc; ignored",
    "[tts] length_scale from the old configuration is not used by vc; ignored",
    "[interruption] cooldown_ms from the old configuration is not used by vc; ignored",
    "[VAD] model from the old configuration is not used by vc; ignored",
]
#: Values of the operator file that must never be printed (API keys, a token).
OPERATOR_SECRETS = ("dg_live_8c1f2e3d4c5b6a7988001122aabbccdd",
                    "sk-proj-Zq8v3Xr2Lm9Nw4Ty7Ub1Kc6Hd0Fe5GjR2s", "vosk-7f3a9c1e55d24b0f")


def test_the_operators_real_file_loads_with_a_warning_for_each_dead_section_and_key() -> None:
    raw = read(DATA / "legacy-operator.ini", {})
    assert raw.legacy
    cfg, errors = resolve(raw, registry("legacy_stubs", fakes=False), {})
    assert not errors, messages(errors)
    assert cfg.warnings == OPERATOR_WARNINGS
    assert not any(secret in w for w in cfg.warnings for secret in OPERATOR_SECRETS)
    # what the old engine read still means what it meant
    assert cfg.default_providers == {"stt": "vosk-websocket", "llm": "llama-ws", "tts": "piper-websocket"}
    assert cfg.providers["llm"]["llama-ws"].settings.timeout == 30.0
    sip = cfg.transports["opensips"].settings
    assert (sip.mode, sip.sip_port, sip.mi_ip, sip.rtp_ip) == ("proxy", 8089, "10.20.0.10",
                                                               "203.0.113.10")
    assert cfg.vad.confidence == 0.6 and cfg.interruption.effective_min_words() == 2
    # the dead sections are gone, not carried along
    assert not {"ai", "deepgram", "openai", "audio", "pipeline"} & set(raw.sections)


def test_config_check_and_show_on_the_operators_file(monkeypatch) -> None:
    monkeypatch.setattr("vc.plugins._loaded", registry("legacy_stubs", fakes=False))
    runner = CliRunner()
    path = str(DATA / "legacy-operator.ini")
    ok = runner.invoke(cli.cli, ["config", "check", path])
    assert ok.exit_code == 0, ok.output
    assert ok.stderr.splitlines() == [f"warning: {w}" for w in OPERATOR_WARNINGS]
    assert ok.stdout.splitlines()[0] == f"{path} (existing OpenSIPS AI Voice Connector format): OK"
    shown = runner.invoke(cli.cli, ["config", "show", "-c", path])
    assert shown.exit_code == 0, shown.output
    assert "rtp_ip = 203.0.113.10" in shown.stdout
    as_json = runner.invoke(cli.cli, ["config", "show", "--json", "-c", path])
    assert as_json.exit_code == 0, as_json.output
    for out in (ok.output, shown.output, as_json.output):
        assert not any(secret in out for secret in OPERATOR_SECRETS)
        assert "deepgram" not in out.replace("[deepgram] (", "")  # only named in its warning


def test_a_vc_native_file_stays_strict(tmp_path) -> None:
    ini = write(tmp_path, FAKES + "[vc]\ntransports =\n[openai]\nkey = sk-x\n[vad]\nmodel = silero\n")
    _, errors = load(ini, registry(), {})
    assert messages(errors) == [
        f"[vad] model = 'silero' (from {ini} [vad]): unknown key; known keys: confidence, "
        "start_secs, stop_secs, min_volume, min_silence_ms, min_speech_ms",
        "[openai]: unknown section",
    ]


def test_a_bad_value_of_a_key_vc_uses_is_still_an_error_in_an_old_file(tmp_path) -> None:
    text = (DATA / "legacy-operator.ini").read_text().replace("sip_port = 8089", "sip_port = x")
    _, errors = load(write(tmp_path, text), registry("legacy_stubs", fakes=False), {})
    assert [e.key for e in errors] == ["sip_port"] and "expected an integer" in str(errors[0])


def test_config_check_and_show_cli(tmp_path, monkeypatch) -> None:
    reg = registry("legacy_stubs", fakes=False)
    monkeypatch.setattr("vc.plugins._loaded", reg)
    runner = CliRunner()
    ok = runner.invoke(cli.cli, ["config", "check", str(DATA / "legacy.ini")])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines() == [
        f"{DATA / 'legacy.ini'} (existing OpenSIPS AI Voice Connector format): OK",
        "  transports: opensips",
        "  stt: vosk-websocket",
        "  llm: llama-ws",
        "  tts: piper-websocket",
        "  profiles: default",
    ]
    shown = runner.invoke(cli.cli, ["config", "show", "-c", str(DATA / "legacy.ini")],
                          env={"VC_TRANSPORT_OPENSIPS__SIP_PORT": "5070"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    port = next(line for line in lines if line.startswith("sip_port"))
    assert "5070" in port and "env VC_TRANSPORT_OPENSIPS__SIP_PORT" in port
    url = next(line for line in lines if line.startswith("url = ws://vosk"))
    assert "legacy [stt] url" in url

    bad = runner.invoke(cli.cli, ["config", "check", str(write(tmp_path, "[server]\nport = x\n"))])
    assert bad.exit_code == 1
    assert "[server] port = 'x'" in bad.output and "expected an integer" in bad.output


def test_secrets_are_redacted_in_config_show(tmp_path, monkeypatch) -> None:
    import attrs

    from vc.hookspecs import hookimpl
    from vc.providers import TransportProvider
    from vc.settings import setting

    @attrs.define
    class S:
        auth_token: str = setting("", help="token")
        max_tokens: int = setting(80, help="not a secret")

    class T(TransportProvider):
        name = "secretive"
        Settings = S
        description = "test"

    class P:
        @hookimpl
        def register_transports(self, register):
            register(T)

    reg = load_plugins(env={"VC_PLUGIN_MODULES": "vc.testing.fakes"}, eps=[], extra=[("secretive", P())])
    monkeypatch.setattr("vc.plugins._loaded", reg)
    ini = write(tmp_path, FAKES + "[vc]\ntransports = secretive\n[transport.secretive]\n"
                                  "auth_token = hunter2\nmax_tokens = 12\n")
    out = CliRunner().invoke(cli.cli, ["config", "show", "-c", str(ini)]).output
    assert "hunter2" not in out
    assert "auth_token = <redacted>" in out and "max_tokens = 12" in out


@pytest.mark.parametrize("bad", ["[vc]\ntransports = carrier-pigeon\n"])
def test_unknown_transport(tmp_path, bad) -> None:
    _, errors = load(write(tmp_path, FAKES + bad), registry(), {})
    assert messages(errors) == [
        "[vc] transports = 'carrier-pigeon': transport provider 'carrier-pigeon' is not installed "
        "(install the plugin that provides it); installed transport providers: none"
    ]


def test_shorthand_keys_of_the_kind_section_can_come_from_the_environment(tmp_path) -> None:
    ini = write(tmp_path, FAKES + "[vc]\ntransports =\n")
    cfg, errors = load(ini, registry(), {"VC_STT__DELAY": "0.3"})
    assert not errors
    assert cfg.providers["stt"]["fake"].settings.delay == 0.3


def test_a_misspelt_environment_variable_is_reported_like_an_ini_typo(tmp_path) -> None:
    ini = write(tmp_path, "[vc]\ntransports =\n[stt]\nprovider = fake\n[llm]\nprovider = fake\n"
                          "[tts]\nprovider = fake\n")
    env = {"VC_SERVER__PROT": "9000", "VC_PROFILE_DEFAULT__GRETING": "hi",
           "VC_STT_FAKE__SCRIPT": "hello", "VC_SERVER__PORT": "8081",  # these two are right
           "VC_SERVRE__PORT": "1", "VC_FUZZ_EXAMPLES": "5"}  # no such section; not a key
    cfg, errors = load(ini, registry(), env)
    assert cfg is None
    assert messages(errors) == [
        "[profile.default] greting (from env VC_PROFILE_DEFAULT__GRETING): unknown key "
        "(did you mean VC_PROFILE_DEFAULT__GREETING?)",
        "[server] prot (from env VC_SERVER__PROT): unknown key (did you mean VC_SERVER__PORT?)",
    ]
    del env["VC_SERVER__PROT"], env["VC_PROFILE_DEFAULT__GRETING"]
    cfg, errors = load(ini, registry(), env)
    assert not errors and cfg is not None and cfg.server.port == 8081
    assert cfg.warnings == [
        "environment variable VC_SERVRE__PORT names no configuration section: ignored"]

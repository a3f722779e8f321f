"""Issue 14: every phrase the bot says by itself comes from one catalogue keyed by the profile's
language (vc.phrases), overridable per profile; Turkish casing in keyword matching."""

from __future__ import annotations

import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from vc import cli, phrases
from vc.config import effective, load, read, resolve
from vc.llm import DEFAULT_APOLOGY
from vc.plugins import load_plugins
from vc.profiles import DEFAULT_GREETING, DEFAULT_SYSTEM_PROMPT, Profile, ProfileSettings
from vc.testing import FAKE_STACK, config_from_ini, fake_registry

if sys.version_info >= (3, 12):
    from importlib.metadata import EntryPoint
else:
    from importlib_metadata import EntryPoint

DATA = Path(__file__).parent / "data"

TR = {
    "greeting": "Merhaba, size nasıl yardımcı olabilirim?",
    "goodbye": "Hoşça kalın!",
    "apology": "Özür dilerim, bir sorun oluştu. Lütfen tekrar eder misiniz?",
    "transfer_message": "Çağrınızı aktarıyorum.",
    "busy_message": "Şu anda tüm hatlarımız dolu. Lütfen daha sonra tekrar arayın.",
}


def shipped_file(language: str) -> dict[str, str]:
    text = resources.files("vc.phrases").joinpath(f"{language}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def profile(cfg, name: str = "default") -> Profile:
    return next(p for p in cfg.profiles if p.name == name)


def test_english_and_turkish_are_shipped_complete() -> None:
    assert {"en", "tr"} <= set(phrases.shipped())
    for language in ("en", "tr"):
        assert set(shipped_file(language)) == set(phrases.KEYS), language
    tr = phrases.builtin("tr-TR")
    assert tr is not None and {k: tr[k] for k in TR} == TR
    assert "Türkçe" in tr["system_prompt"] and "kısa" in tr["system_prompt"]
    assert phrases.builtin("xx") is None and phrases.builtin("../en") is None


def test_english_catalogue_is_what_a_bare_profile_says() -> None:
    en = phrases.ENGLISH
    s = ProfileSettings()
    assert (en["system_prompt"], en["greeting"]) == (DEFAULT_SYSTEM_PROMPT, DEFAULT_GREETING)
    assert en["apology"] == DEFAULT_APOLOGY
    for key in ("system_prompt", "greeting", "goodbye", "transfer_message", "busy_message",
                "max_duration_goodbye", "dtmf_prefix"):
        assert getattr(s, key) == en[key]
    assert en["goodbye"] == "Goodbye!" and en["transfer_message"] == "Transferring your call now."


def test_a_turkish_profile_gets_every_turkish_phrase() -> None:
    cfg = config_from_ini(FAKE_STACK + "[profile.default]\nlanguage = tr\n", fake_registry())
    p = profile(cfg)
    tr = shipped_file("tr")
    for key in phrases.KEYS:
        assert getattr(p, key) == tr[key], key
    assert not cfg.warnings


def test_the_profiles_own_keys_win_over_its_file_which_wins_over_the_catalogue(tmp_path) -> None:
    own = tmp_path / "acme.toml"
    own.write_text('greeting = "ACME, merhaba!"\ngoodbye = "ACME: hoşça kalın."\n', encoding="utf-8")
    ini = FAKE_STACK + (
        f"[profile.default]\nlanguage = tr\nphrases = {own}\ngoodbye = Görüşmek üzere!\n"
        "system_prompt = Sadece Türkçe konuş.\n"
    )
    p = profile(config_from_ini(ini, fake_registry()))
    assert p.greeting == "ACME, merhaba!"  # the profile's file
    assert p.goodbye == "Görüşmek üzere!"  # the profile's key beats its file
    assert p.system_prompt == "Sadece Türkçe konuş."
    assert p.transfer_message == TR["transfer_message"]  # the rest: the catalogue
    # An explicitly empty greeting still means none.
    p = profile(config_from_ini(FAKE_STACK + "[profile.default]\nlanguage = tr\ngreeting =\n",
                                fake_registry()))
    assert p.greeting == "" and p.goodbye == TR["goodbye"]


def test_config_show_names_where_each_phrase_came_from(tmp_path) -> None:
    own = tmp_path / "acme.toml"
    own.write_text('greeting = "ACME!"\n', encoding="utf-8")
    ini = tmp_path / "vc.ini"
    ini.write_text(FAKE_STACK + f"[profile.default]\nlanguage = tr\nphrases = {own}\ngoodbye = Bay\n")
    cfg, errors = load(ini, fake_registry(), {})
    assert not errors
    rows = {(s, k): (v, src) for s, k, v, src in effective(cfg)}
    assert rows[("profile.default", "greeting")] == ("ACME!", str(own))
    assert rows[("profile.default", "goodbye")] == ("Bay", f"{ini} [profile.default]")
    assert rows[("profile.default", "apology")] == (TR["apology"], "vc/phrases/tr.toml")


def test_a_language_added_by_a_file_in_phrases_dir(tmp_path) -> None:
    (tmp_path / "de.toml").write_text(
        'greeting = "Hallo! Wie kann ich helfen?"\ngoodbye = "Auf Wiederhören!"\n', encoding="utf-8"
    )
    # the directory may also change a shipped language
    (tmp_path / "tr.toml").write_text('goodbye = "İyi günler!"\n', encoding="utf-8")
    ini = FAKE_STACK + (
        f"[vc]\nphrases_dir = {tmp_path}\n[profile.de]\nlanguage = de\nmatch.to = +49*\n"
        "[profile.default]\nlanguage = tr\n"
    )
    cfg = config_from_ini(ini, fake_registry())
    de, tr = profile(cfg, "de"), profile(cfg)
    assert (de.greeting, de.goodbye) == ("Hallo! Wie kann ich helfen?", "Auf Wiederhören!")
    assert de.apology == DEFAULT_APOLOGY  # keys the file lacks: English
    assert tr.goodbye == "İyi günler!" and tr.greeting == TR["greeting"]
    assert not cfg.warnings


def test_relative_paths_are_next_to_the_ini_file(tmp_path) -> None:
    (tmp_path / "phrases").mkdir()
    (tmp_path / "phrases" / "de.toml").write_text('greeting = "Hallo!"\n', encoding="utf-8")
    ini = tmp_path / "vc.ini"
    ini.write_text(FAKE_STACK + "[vc]\nphrases_dir = phrases\n[profile.default]\nlanguage = de\n")
    cfg, errors = load(ini, fake_registry(), {})
    assert not errors and profile(cfg).greeting == "Hallo!"


def test_unknown_language_warns_and_falls_back_to_english(tmp_path) -> None:
    cfg = config_from_ini(FAKE_STACK + "[profile.default]\nlanguage = de\n", fake_registry())
    assert profile(cfg).greeting == DEFAULT_GREETING
    assert len(cfg.warnings) == 1
    w = cfg.warnings[0]
    assert "[profile.default]" in w and "'de'" in w and "English" in w and "phrases_dir" in w


def test_unknown_keys_are_errors_naming_file_and_key(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('greeting = "Hi"\ngreetings = "typo"\n', encoding="utf-8")
    reg = fake_registry()
    ini = tmp_path / "vc.ini"
    ini.write_text(FAKE_STACK + f"[profile.default]\nphrases = {bad}\n")
    _, errors = load(ini, reg, {})
    [e] = errors
    assert (e.section, e.key) == ("profile.default", "phrases")
    assert str(bad) in e.expected and "'greetings'" in e.expected

    d = tmp_path / "dir"
    d.mkdir()
    (d / "de.toml").write_text('apologie = "x"\n', encoding="utf-8")
    ini.write_text(FAKE_STACK + f"[vc]\nphrases_dir = {d}\n")
    _, errors = load(ini, reg, {})
    [e] = errors
    assert (e.section, e.key) == ("vc", "phrases_dir")
    assert str(d / "de.toml") in e.expected and "'apologie'" in e.expected

    (d / "de.toml").write_text("greeting = 3\n", encoding="utf-8")
    _, errors = load(ini, reg, {})
    assert "must be a string" in str(errors[0])
    ini.write_text(FAKE_STACK + f"[profile.default]\nphrases = {tmp_path / 'missing.toml'}\n")
    _, errors = load(ini, reg, {})
    assert "cannot be read" in str(errors[0])


def test_config_check_reports_phrase_problems(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("vc.plugins._loaded", fake_registry())
    runner = CliRunner()
    ini = tmp_path / "vc.ini"
    ini.write_text(FAKE_STACK + "[profile.default]\nlanguage = de\n")
    ok = runner.invoke(cli.cli, ["config", "check", str(ini)])
    assert ok.exit_code == 0, ok.output
    assert "warning: [profile.default] language = de: no phrases for 'de'" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text('goodby = "x"\n', encoding="utf-8")
    ini.write_text(FAKE_STACK + f"[profile.default]\nphrases = {bad}\n")
    failed = runner.invoke(cli.cli, ["config", "check", str(ini)])
    assert failed.exit_code == 1
    assert str(bad) in failed.output and "'goodby'" in failed.output


def test_llm_providers_apology_where_set_beats_the_catalogue_not_the_profile() -> None:
    reg = fake_registry()
    # The fake LLM has no apology setting: the catalogue's.
    cfg = config_from_ini(FAKE_STACK + "[profile.default]\nlanguage = tr\n", reg)
    assert profile(cfg).apology == TR["apology"]
    cfg = config_from_ini(
        FAKE_STACK + "[profile.default]\nlanguage = tr\napology = Bir saniye lütfen.\n", reg
    )
    assert profile(cfg).apology == "Bir saniye lütfen."


def test_the_old_systems_ini_gets_the_full_turkish_set() -> None:
    reg = load_plugins(env={}, eps=[EntryPoint(name="legacy_stubs", value="legacy_stubs", group="vc")])
    cfg, errors = resolve(read(DATA / "legacy.ini", {}), reg, {})
    assert not errors, [str(e) for e in errors]
    p = profile(cfg)
    assert p.language == "tr"
    tr = shipped_file("tr")
    for key in phrases.KEYS:
        assert getattr(p, key) == tr[key], key
    for key, text in TR.items():
        assert getattr(p, key) == text


@pytest.mark.parametrize(
    ("text", "language", "folded"),
    [
        ("İSTANBUL", "tr", "istanbul"),
        ("IRMAK", "tr", "ırmak"),
        ("IRMAK", "tr-TR", "ırmak"),
        ("HOŞÇA KALIN", "tr", "hoşça kalın"),
        ("Iğdır", "az", "ığdır"),
        ("IRMAK", "en", "irmak"),
        ("İSTANBUL", "en", "istanbul"),  # not "i̇stanbul" with a combining dot
        ("Goodbye", "", "goodbye"),
    ],
)
def test_fold_knows_turkish_casing(text: str, language: str, folded: str) -> None:
    assert phrases.fold(text, language) == folded

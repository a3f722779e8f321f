"""Plugin discovery: isolation of broken plugins, strict mode, selection, duplicates, listing."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from vc import cli
from vc.hookspecs import hookimpl
from vc.plugins import PluginLoadError, load_plugins
from vc.providers import TTSProvider

if sys.version_info >= (3, 12):
    from importlib.metadata import EntryPoint
else:
    from importlib_metadata import EntryPoint


def ep(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=module, group="vc")


def record(registry, name):
    return next(p for p in registry.plugins if p.name == name)


def test_good_plugin_is_registered_with_its_schema_and_languages() -> None:
    reg = load_plugins(env={}, eps=[ep("good", "good_plugin")])
    from good_plugin import GoodSTT

    assert reg.provider("stt", "good-stt") is GoodSTT
    rec = record(reg, "good")
    assert rec.status == "ok"
    assert rec.provides == [("stt", "good-stt")]
    assert rec.languages == {"good-stt": ["en", "tr"]}
    assert rec.hooks == ["register_stt"]


def test_plugin_raising_on_import_is_reported_and_skipped() -> None:
    reg = load_plugins(env={}, eps=[ep("broken", "broken_import"), ep("good", "good_plugin")])
    broken = record(reg, "broken")
    assert broken.status == "error"
    assert broken.error == "import failed: RuntimeError: this plugin is broken on import"
    assert reg.provider("stt", "good-stt") is not None  # the others still load


def test_strict_mode_makes_a_broken_plugin_fatal() -> None:
    with pytest.raises(PluginLoadError) as e:
        load_plugins(env={"VC_STRICT_PLUGINS": "1"}, eps=[ep("broken", "broken_import")])
    assert str(e.value) == (
        "plugin 'broken' from broken_import failed to load: "
        "import failed: RuntimeError: this plugin is broken on import"
    )


def test_misspelt_hook_fails_loudly() -> None:
    reg = load_plugins(env={}, eps=[ep("typo", "misspelt_hook")])
    rec = record(reg, "typo")
    assert rec.status == "error"
    assert "register_sst" in rec.error and "unknown hook" in rec.error
    with pytest.raises(PluginLoadError):
        load_plugins(env={"VC_STRICT_PLUGINS": "1"}, eps=[ep("typo", "misspelt_hook")])


def test_hookimpl_with_a_wrong_argument_name_fails_loudly() -> None:
    reg = load_plugins(env={}, eps=[ep("wrongarg", "wrong_argument")])
    rec = record(reg, "wrongarg")
    assert rec.status == "error"
    assert "PluginValidationError" in rec.error and "registrar" in rec.error


def test_registering_something_that_is_not_a_provider_is_an_error() -> None:
    reg = load_plugins(env={}, eps=[ep("wt", "wrong_type")])
    rec = record(reg, "wt")
    assert rec.status == "error"
    expected = "register_stt raised TypeError: register_stt expects a subclass of STTProvider"
    assert rec.error.startswith(expected)


def test_a_hook_failing_half_way_leaves_nothing_registered() -> None:
    reg = load_plugins(env={}, eps=[ep("half", "raising_hook")])
    assert record(reg, "half").status == "error"
    assert reg.provider("llm", "half-registered") is None


def test_duplicate_provider_names_are_a_clear_error_naming_both() -> None:
    reg = load_plugins(env={}, eps=[ep("a", "dup_a"), ep("b", "dup_b")])
    assert reg.conflicts == [
        "tts provider 'same-name' is registered twice: by dup_a ? (dup_a.SameA) and by dup_b ? "
        "(dup_b.SameB); uninstall one of them"
    ]
    assert record(reg, "b").status == "error"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, {"good", "broken"}), ("", set()), ("good_plugin", {"good"}), ("good-plugin, other", {"good"})],
)
def test_vc_load_plugins_selects_distributions(value, expected) -> None:
    env = {} if value is None else {"VC_LOAD_PLUGINS": value}
    reg = load_plugins(env=env, eps=[ep("good", "good_plugin"), ep("broken", "broken_import")])
    assert {p.name for p in reg.plugins} - {"vc"} == expected


def test_core_is_always_loaded() -> None:
    reg = load_plugins(env={"VC_LOAD_PLUGINS": ""}, eps=[])
    assert [p.distribution for p in reg.plugins] == ["vc-core"]
    assert set(reg.tools) == {"end_call", "transfer_call"}
    assert set(reg.observers) == {"event-log"}


def test_list_plugins_table_and_json(monkeypatch) -> None:
    reg = load_plugins(env={}, eps=[ep("good", "good_plugin"), ep("broken", "broken_import")])
    monkeypatch.setattr("vc.plugins._loaded", reg)
    runner = CliRunner()
    table = runner.invoke(cli.cli, ["list-plugins"]).output.splitlines()
    assert table[0].split() == ["DISTRIBUTION", "VERSION", "KINDS", "PROVIDERS", "LANGUAGES", "STATUS"]
    good = next(line for line in table if line.startswith("good_plugin"))
    assert "stt:good-stt" in good and "en,tr" in good and good.rstrip().endswith("ok")
    broken = next(line for line in table if line.startswith("broken_import"))
    assert "error: import failed: RuntimeError: this plugin is broken on import" in broken

    data = json.loads(runner.invoke(cli.cli, ["list-plugins", "--json"]).output)
    assert set(data) == {"plugins", "conflicts"}
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["good"] == {
        "name": "good",
        "distribution": "good_plugin",
        "version": "?",
        "status": "ok",
        "error": "",
        "kinds": ["stt"],
        "providers": [{"kind": "stt", "name": "good-stt"}],
        "languages": {"good-stt": ["en", "tr"]},
        "hooks": ["register_stt"],
    }
    assert by_name["broken"]["status"] == "error"


def test_version_flag() -> None:
    from vc import __version__

    out = CliRunner().invoke(cli.cli, ["--version"]).output
    assert out.strip() == f"vc {__version__}"


def test_installed_plugins_all_load_cleanly() -> None:
    """Whatever is installed in this environment (our own plugins) loads without errors."""
    reg = load_plugins(env={})
    assert not reg.errors(), [(p.name, p.error) for p in reg.errors()]
    assert not reg.conflicts


class _Named(TTSProvider):
    name = "clash"


class _Tryfirst(TTSProvider):
    name = "clash"


def test_hooks_go_through_pluggy_so_another_plugins_wrapper_sees_each_registration() -> None:
    """A policy plugin can wrap every plugin's register_* call (pluggy's new-style wrapper)."""
    seen: list[str] = []

    class Policy:
        @hookimpl(wrapper=True)
        def register_tts(self, register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    class Voice:
        @hookimpl
        def register_tts(self, register):
            seen.append("voice")
            register(_Named)

    reg = load_plugins(env={"VC_LOAD_PLUGINS": ""}, eps=[],
                       extra=[("policy", Policy()), ("voice", Voice())])
    assert seen == ["before", "voice", "after"]
    assert reg.provider("tts", "clash") is _Named
    assert record(reg, "policy").hooks == ["register_tts"]


def test_a_tryfirst_plugin_registers_first_and_wins_a_name_clash() -> None:
    class Early:
        @hookimpl(tryfirst=True)
        def register_tts(self, register):
            register(_Tryfirst)

    class Plain:
        @hookimpl
        def register_tts(self, register):
            register(_Named)

    reg = load_plugins(env={"VC_LOAD_PLUGINS": ""}, eps=[],
                       extra=[("plain", Plain()), ("early", Early())])
    assert reg.provider("tts", "clash") is _Tryfirst
    assert record(reg, "plain").status == "error"
    assert "registered twice" in reg.conflicts[0]


def test_plugin_commands_are_added_through_pluggy_and_a_failing_one_is_isolated() -> None:
    import click

    added: list[str] = []

    class Broken:
        @hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    class Good:
        @hookimpl
        def register_commands(self, cli):
            added.append(cli.name)

    reg = load_plugins(env={"VC_LOAD_PLUGINS": ""}, eps=[],
                       extra=[("broken", Broken()), ("good", Good())])
    cli.add_plugin_commands(reg, click.Group("probe"))
    assert added == ["probe"]

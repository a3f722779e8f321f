"""The index names every first-party provider, with the distribution that provides it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from vc_stack.plugin import KNOWN

from vc.plugins import load_plugins, normalize

PACKAGES = Path(__file__).resolve().parents[2]
FIRST_PARTY = {p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists()}


def distribution(install: str) -> str:
    return normalize(re.split(r"[\[ ]", install.strip("'\""))[0])


def test_every_entry_names_a_first_party_distribution() -> None:
    assert {distribution(k.install) for k in KNOWN} <= FIRST_PARTY
    keys = [(k.kind, k.name) for k in KNOWN]
    assert len(keys) == len(set(keys)), "a provider is listed twice"


def test_the_default_stack_is_one_provider_per_kind_and_a_transport() -> None:
    defaults = [k for k in KNOWN if k.default]
    kinds = [k.kind for k in defaults if k.kind != "transport"]
    assert sorted(kinds) == ["llm", "stt", "tts"]
    assert any(k.kind == "transport" for k in defaults)


def test_every_installed_first_party_provider_is_indexed_with_its_distribution() -> None:
    registry = load_plugins(env={})
    index = {(k.kind, k.name): distribution(k.install) for k in KNOWN}
    found = [(kind, name, normalize(p.distribution)) for p in registry.plugins
             if normalize(p.distribution) in FIRST_PARTY - {"vc-core"}
             for kind, name in p.provides if kind != "tool"]
    if not found:
        pytest.skip("no first-party provider plugin is installed")
    missing = [f"{kind} {name} ({dist})" for kind, name, dist in found if index.get((kind, name)) != dist]
    assert not missing, "add to vc_stack.plugin.INDEX: " + ", ".join(missing)


def test_the_registry_answers_from_the_index() -> None:
    registry = load_plugins(env={"VC_LOAD_PLUGINS": "vc-stack"})
    assert registry.install_hint("stt", "vosk") == "vc-stt-vosk"
    assert registry.install_hint("stt", "no-such") is None
    assert registry.default_provider("tts") == "piper"
    assert registry.default_transports() == ["twilio"]

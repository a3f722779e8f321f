"""Meta-tests keeping the plugin API honest: every hook documented with its exact signature,
and every hook exercised by at least one test somewhere in the repository."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from vc import hookspecs

ROOT = Path(__file__).resolve().parents[3]
HOOKS = [
    (name, fn)
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "vc_spec")
]


def test_there_are_hooks_with_one_line_docstrings() -> None:
    assert {n for n, _ in HOOKS} == {
        "register_transports", "register_stt", "register_llm", "register_tts",
        "register_observers", "register_tools", "register_models", "register_checks",
        "register_known_providers", "register_commands",
    }
    for name, fn in HOOKS:
        doc = inspect.getdoc(fn) or ""
        assert doc and "\n" not in doc, f"{name} needs a one-line docstring"


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[n for n, _ in HOOKS])
def test_hook_is_documented_with_its_exact_signature(name, fn) -> None:
    guide = (ROOT / "docs" / "plugin-guide.md").read_text()
    signature = f"`{name}({', '.join(inspect.signature(fn).parameters)})`"
    assert signature in guide, f"docs/plugin-guide.md must document {signature}"


@pytest.mark.parametrize(("name", "fn"), HOOKS, ids=[n for n, _ in HOOKS])
def test_hook_is_covered_by_a_test(name, fn) -> None:
    """Some test implements the hook and checks its effect (see test_every_hook.py)."""
    me = Path(__file__).resolve()
    pattern = re.compile(rf"def {name}\(")
    tests = [
        p for p in ROOT.glob("packages/*/tests/**/*.py")
        if p.resolve() != me and pattern.search(p.read_text(errors="replace"))
    ]
    assert tests, f"no test implements {name}"

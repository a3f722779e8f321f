"""Rules every package's runtime code keeps (issue 13): it never imports test tooling.

Runtime code is every module under ``packages/*/src`` except the modules that *are* test or
demo tooling (listed here, so adding one is a visible decision): production code must work in
an image that installs no test extras, and a test helper changed for a test must never change
what a call does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(ROOT.glob("packages/*/src/**/*.py"))
TOOLING = {
    "vc/testing",  # vc-core's test kit: fakes, contract suites, loopback calls, pytest plugin
    "vc_transport_twilio/testing.py",  # the Twilio simulator's test harness
    "vc_transport_twilio/conversation.py",  # the demo's scripted caller
}
FORBIDDEN = ("vc.testing", "pytest", "hypothesis")


def is_tooling(path: Path) -> bool:
    rel = "/".join(path.relative_to(ROOT).parts[3:])  # below packages/<distribution>/src/
    return any(rel == t or rel.startswith(t + "/") for t in TOOLING)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_sources_are_found() -> None:
    assert len(SOURCES) > 100
    assert sum(is_tooling(p) for p in SOURCES) >= len(TOOLING)


@pytest.mark.parametrize("path", [p for p in SOURCES if not is_tooling(p)],
                         ids=lambda p: p.relative_to(ROOT / "packages").as_posix())
def test_runtime_code_imports_no_test_tooling(path: Path) -> None:
    bad = sorted(n for n in imported(path)
                 if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, f"{path.relative_to(ROOT)} imports test tooling: {bad}"

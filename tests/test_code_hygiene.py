"""Rules every package's runtime code keeps (issue 13): it never imports test tooling, touches
pipecat's internals only through one adapter, and core names no provider.

Runtime code is every module under ``packages/*/src`` except the modules that *are* test or
demo tooling (listed here, so adding one is a visible decision): production code must work in
an image that installs no test extras, and a test helper changed for a test must never change
what a call does.
"""

from __future__ import annotations

import ast
import re
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


# -- pipecat's private names stay in one adapter (issue 13) -------------------------------------

ADAPTER = ROOT / "packages/vc-core/src/vc/pipecat_adapter.py"


def _underscore_names(paths: list[Path], *, defined_only: bool) -> set[str]:
    """``_name`` attributes and methods: defined (assigned/def) or, if not ``defined_only``, read."""
    names: set[str] = set()
    for path in paths:
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = node.name
            elif isinstance(node, ast.Attribute) and (
                    not defined_only or isinstance(node.ctx, ast.Store)):
                name = node.attr
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                names.add(name)
    return names


def test_pipecat_private_names_are_used_only_in_the_adapter() -> None:
    """An attribute read whose name is private to pipecat (defined in pipecat's sources, never
    by vc itself) is pipecat's internals: only ``vc.pipecat_adapter`` may touch those."""
    pipecat = pytest.importorskip("pipecat")
    pipecat_private = _underscore_names(sorted(Path(pipecat.__file__).parent.rglob("*.py")),
                                        defined_only=True)
    ours = [p for p in SOURCES if p != ADAPTER]
    own = _underscore_names(ours, defined_only=True) | {"_replace", "_asdict", "_fields"}
    suspects = pipecat_private - own
    found = []
    for path in ours:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in suspects:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert len(pipecat_private) > 1000  # pipecat's sources were read
    assert not found, "pipecat internals outside vc.pipecat_adapter:\n" + "\n".join(found)


# -- core names no provider (issue 13) ----------------------------------------------------------

CORE = ROOT / "packages/vc-core/src/vc"
#: The old INI's translation may name the old system's providers: it is a compatibility table.
COMPATIBILITY = {CORE / "legacy.py"}
#: The old system's product name (naming its INI format), not the opensips transport.
OLD_SYSTEM = "OpenSIPS AI Voice Connector"


def first_party_names() -> set[str]:
    """Every first-party distribution and provider name: the distributions under packages/ and
    the names vc-stack's index declares (read from its source, so nothing needs installing)."""
    dists = {p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists()}
    names = {d for d in dists if d != "vc-core"}
    names |= {d.split("-", 2)[2] for d in names if d.count("-") >= 2}  # vc-stt-vosk -> vosk
    index = ROOT / "packages/vc-stack/src/vc_stack/plugin.py"
    for node in ast.walk(ast.parse(index.read_text())):
        if isinstance(node, ast.Tuple) and len(node.elts) == 4 and all(
                isinstance(e, ast.Constant) for e in node.elts):
            names.add(node.elts[1].value)
    return names


def code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are data, not documentation (docstrings left out)."""
    tree = ast.parse(path.read_text(), str(path))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs]


def test_core_source_names_no_provider() -> None:
    """Adding, renaming or re-packaging a first-party plugin never edits vc-core: which
    distribution provides a provider and the default stack are data plugins contribute
    (``register_known_providers``; vc-stack for vc's own). Prose (docstrings, comments) may use
    them as examples; code may not."""
    names = first_party_names()
    assert {"twilio", "opensips", "faster-whisper", "llama-cpp", "piper", "vc-stt-vosk"} <= names
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(names))) + r")(?![\w-])",
                         re.IGNORECASE)
    found = []
    for path in sorted(CORE.rglob("*.py")):
        if path in COMPATIBILITY:
            continue
        for line, text in code_strings(path):
            found += [f"{path.relative_to(ROOT)}:{line} {m.group(0)!r} in {text[:60]!r}"
                      for m in pattern.finditer(text.replace(OLD_SYSTEM, ""))]
    # The scan does see names where they are: the compatibility table is full of them.
    assert any(pattern.search(t) for p in COMPATIBILITY for _, t in code_strings(p))
    assert not found, "vc-core names providers (move them to a plugin's data):\n" + "\n".join(found)

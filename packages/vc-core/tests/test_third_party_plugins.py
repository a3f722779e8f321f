"""Third-party plugins, written outside vc's tree, built, installed and run against their contracts.

The plugin guide's worked examples (docs/examples/): a transport (ws-phone, a WebSocket
softphone), an LLM provider (keywords, a keyword table) and an observer (jsonl, JSON lines in
a file). Each is copied into a temporary directory - a separate project with its own
pyproject.toml and ``vc`` entry point, nothing shared with this repository but vc-core - built
into a wheel, installed into a new virtual environment, and its own contract tests
(``vc.testing.contracts``) run there with pytest, from that directory: the transport places a
real call through vc's engine with audio both ways. What passes here is what the guide shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples"
#: example directory -> (distribution, module, kind, provider name)
PLUGINS = {
    "ws-phone": ("vc-transport-ws-phone", "ws_phone", "transport", "ws-phone"),
    "keyword-llm": ("vc-llm-keywords", "keyword_llm", "llm", "keywords"),
    "jsonl-observer": ("vc-observer-jsonl", "jsonl_observer", "observer", "jsonl"),
}


def run(*cmd: object, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(the venv, each plugin's project directory), all outside the repository."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required (apt-get install espeak-ng; scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("third-party-plugins")
    assert not tmp.resolve().is_relative_to(ROOT)
    projects = {}
    for name in PLUGINS:
        projects[name] = tmp / name
        shutil.copytree(EXAMPLES / name, projects[name],
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp / "dist", *projects.values())
    wheels = sorted((tmp / "dist").glob("*.whl"))
    assert len(wheels) == len(PLUGINS), wheels
    env = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    # The new environment sees this one's packages (vc-core, pipecat, pytest...) as a site dir.
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "parent-env.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    )
    run(sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "--no-deps",
        "--no-index", "-q", *wheels)
    return env, projects


def test_the_plugins_are_installed_and_listed(outside) -> None:
    env, _ = outside
    out = run(env / "bin" / "python", "-c", "from vc.cli import main; main()",
              "list-plugins", "--json", env={**os.environ, "VC_STRICT_PLUGINS": "1"}).stdout
    listed = {p["distribution"]: p for p in json.loads(out)["plugins"]}
    for dist, module, kind, name in PLUGINS.values():
        assert listed[dist]["status"] == "ok", listed[dist]
        assert {"kind": kind, "name": name} in listed[dist]["providers"]
        # what runs is the wheel installed there, not a copy in this repository
        where = run(env / "bin" / "python", "-c", f"import {module}; print({module}.__file__)")
        assert Path(where.stdout.strip()).is_relative_to(env)


@pytest.mark.parametrize("example", sorted(PLUGINS))
def test_each_plugin_passes_its_contract_suite(outside, example: str) -> None:
    env, projects = outside
    proc = subprocess.run(
        [str(env / "bin" / "python"), "-m", "pytest", "test_contract.py", "-q", "-rs",
         "-p", "no:cacheprovider", "-p", "no:randomly"],
        capture_output=True, text=True, cwd=projects[example], timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith(("VC_", "PYTEST_"))},
    )
    out = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, out
    assert " passed" in proc.stdout and "skipped" not in proc.stdout and "failed" not in proc.stdout, out


def _python_blocks(markdown: str) -> list[str]:
    parts = markdown.split("```python\n")[1:]
    return [p[: p.index("```")] for p in parts]


@pytest.mark.parametrize(("example", "start"), [
    ("ws-phone/ws_phone.py", "class WsCall(CallConnection):"),
    ("ws-phone/ws_phone.py", "    async def answer(self, ws: WebSocket)"),
    ("ws-phone/test_contract.py", "class TestWsPhone(TransportContract):"),
    ("keyword-llm/keyword_llm.py", "class KeywordService(StreamingLLMService):"),
])
def test_the_guide_shows_the_tested_code(example: str, start: str) -> None:
    """The guide's listings of these examples are the tested files, word for word."""
    blocks = [b for b in _python_blocks((ROOT / "docs" / "plugin-guide.md").read_text())
              if b.startswith(start)]
    assert blocks, f"docs/plugin-guide.md has no listing starting {start!r}"
    assert blocks[0] in (EXAMPLES / example).read_text(), f"docs/plugin-guide.md's {start!r} is stale"

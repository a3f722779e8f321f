"""The plugin author guide's worked example, built and installed like a third party would.

packages/vc-tts-espeak (the guide's worked example since it became a first-party distribution)
is a separate project (own pyproject, `vc` entry point). It is built into a wheel, installed with
pip into a new virtual environment, listed by `vc list-plugins` there, and its contract tests
(vc.testing.contracts.TTSContract) run in that environment against the installed wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "packages" / "vc-tts-espeak"


def run(*cmd: object, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required (apt-get install espeak-ng; scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("third-party")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", tmp / "dist", EXAMPLE)
    [wheel] = (tmp / "dist").glob("vc_tts_espeak-*.whl")
    env = tmp / "venv"
    run(sys.executable, "-m", "venv", env)
    # The new environment sees this one's packages (vc-core, pipecat...) as a site dir.
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "parent-env.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    )
    run(env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    return env


def test_third_party_plugin_is_listed(venv: Path) -> None:
    out = run(venv / "bin" / "python", "-c", "from vc.cli import main; main()",
              "list-plugins", "--json").stdout
    plugins = {p["distribution"]: p for p in json.loads(out)["plugins"]}
    espeak = plugins["vc-tts-espeak"]
    assert espeak["status"] == "ok"
    assert espeak["version"] == "0.1.0"
    assert espeak["providers"] == [{"kind": "tts", "name": "espeak"}]
    assert "tr" in espeak["languages"]["espeak"]
    # ...and what runs there is the wheel installed there, not the development checkout this
    # environment may also have (the new environment sees this one's packages too).
    where = run(venv / "bin" / "python", "-c",
                "import vc_tts_espeak; print(vc_tts_espeak.__file__)").stdout.strip()
    assert Path(where).is_relative_to(venv), where


def test_third_party_plugin_passes_its_contract_tests(venv: Path) -> None:
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", str(EXAMPLE / "tests" / "test_contract.py"), "-q",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=EXAMPLE,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # 7 contract checks for each of the two test classes (English and Turkish).
    assert "14 passed" in proc.stdout, proc.stdout[-2000:]

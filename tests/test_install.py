"""The install paths: one locked dependency set, one portable llama.cpp build, used everywhere.

* ``requirements/constraints.txt`` is current for ``requirements/app.in`` and the packages'
  metadata (``scripts/lock.sh --check`` re-resolves against PyPI, keeping every pin that still
  fits: any difference means a dependency was added, removed or re-floored without re-locking);
* the environment these tests run in was installed from it (every locked package that is
  installed has exactly the locked version);
* every install path (setup, nox, the Dockerfile, docker-compose) goes through the lock and
  ``scripts/llama-cpp.sh``, and the build script never lets pip reuse a cached build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "constraints.txt"


def pins() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def uv() -> str | None:
    here = Path(sys.executable).parent / "uv"
    return str(here) if here.exists() else shutil.which("uv")


@pytest.mark.timeout(300)
def test_lock_is_current() -> None:
    tool = uv()
    if tool is None:
        pytest.skip("uv is not installed (pip install uv)")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lock.sh"), "--check"],
        cwd=ROOT, env={**os.environ, "UV": tool}, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_this_environment_was_installed_from_the_lock() -> None:
    wrong = []
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # the lock covers every extra; an environment installs a subset
        if installed != version:
            wrong.append(f"{name} {installed} (locked {version})")
    assert not wrong, "installed outside the lock: " + ", ".join(wrong)


def test_lock_pins_the_llama_cpp_version_the_build_script_builds() -> None:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "llama-cpp.sh"), "version"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == pins()["llama-cpp-python"]


def test_build_flags_are_portable_and_pip_cannot_substitute_a_cached_build() -> None:
    flags = subprocess.run(["bash", str(ROOT / "scripts" / "llama-cpp.sh"), "flags"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "-DGGML_NATIVE=OFF" in flags
    for off in ("AVX512", "AMX_TILE", "AMX_INT8", "AMX_BF16", "CPU_ALL_VARIANTS"):
        assert f"-DGGML_{off}=OFF" in flags, off
    script = (ROOT / "scripts" / "llama-cpp.sh").read_text()
    assert "--no-cache-dir" in script and "--no-binary llama-cpp-python" in script


def test_every_install_path_uses_the_lock_and_the_build_script() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "requirements/constraints.txt" in setup and "scripts/llama-cpp.sh install" in setup
    nox = (ROOT / "noxfile.py").read_text()
    assert "constraints.txt" in nox and "llama-cpp.sh" in nox
    calls = re.findall(r"session\.install\((.*)", nox)
    assert calls and all('"-c", LOCK' in c for c in calls), calls
    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    installs = [line for line in docker.splitlines() if re.search(r"\bpip install\b", line)
                and "--upgrade pip" not in line]
    assert installs and all("constraints.txt" in line for line in installs), installs
    assert "scripts/llama-cpp.sh install" in docker and "CMAKE_ARGS" not in docker


def test_compose_services_build_from_the_dockerfile() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.dev.yml").read_text())
    targets = set(re.findall(r"^FROM \S+ AS (\S+)", (ROOT / "deploy" / "Dockerfile").read_text(),
                             re.M))
    ours = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert {"vc", "llm-turkish-server", "piper-tts-server"} <= set(ours)
    for name, svc in ours.items():
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert svc["build"]["target"] in targets, (name, svc["build"]["target"])
        assert "pip install" not in str(svc.get("command", "")), name

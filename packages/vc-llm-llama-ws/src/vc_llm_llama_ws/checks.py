"""``vc doctor`` check of the embedded LLM: can this machine run the installed llama.cpp build?

The build is inspected in a child process (:mod:`vc_llm_llama_ws.native`): loading a library
built for instructions this CPU lacks could kill the process with SIGILL, and ``vc doctor``
must report that rather than die of it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from vc.doctor import Check
from vc.providers import package_dir
from vc_llm_llama_ws.native import PORTABLE, NativeReport

NAME = "llama.cpp build"
REBUILD = "rebuild it with scripts/llama-cpp.sh (portable x86-64-v3 build)"
_PROBE = (
    "import json; from vc_llm_llama_ws.native import report; r = report(); "
    "print(json.dumps({'library': r.library, 'uses': sorted(r.uses), 'cpu': sorted(r.cpu), "
    "'amx_usable': r.amx_usable}))"
)


class ProbeError(Exception):
    """The child process inspecting llama.cpp failed."""


def configured(config: Any) -> bool:
    """Whether the configuration runs the embedded LLM (``llama-cpp``)."""
    providers = getattr(config, "providers", None) or {}
    return "llama-cpp" in providers.get("llm", {})


def installed() -> bool:
    """Whether llama-cpp-python is installed (found without importing it)."""
    return package_dir("llama_cpp") is not None


def probe(timeout: float = 60.0) -> NativeReport:
    """:func:`vc_llm_llama_ws.native.report`, computed in a child process."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"loading llama.cpp did not finish in {timeout:.0f} s") from None
    if done.returncode < 0:
        sig = -done.returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        what = " (illegal instruction)" if sig == signal.SIGILL else ""
        raise ProbeError(f"loading llama.cpp killed the process with {name}{what}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeError(f"inspecting llama.cpp failed: {last}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return NativeReport(library=data["library"], uses=frozenset(data["uses"]),
                        cpu=frozenset(data["cpu"]), amx_usable=bool(data["amx_usable"]))


def build_check(report: NativeReport, used: bool = True) -> Check:
    """What ``vc doctor`` says about one build on this machine.

    A build this machine cannot run fails when the configuration uses it, and is a warning
    when llama.cpp is only installed.
    """
    missing = report.missing
    if missing:
        detail = (f"this llama.cpp build uses {', '.join(missing)} which this CPU/OS does not "
                  f"enable ({report.library or 'llama_cpp'})")
        if not used:
            return Check.warn(NAME, detail + "; the configuration does not use it", REBUILD)
        return Check.fail(NAME, detail, REBUILD)
    if not report.portable:
        extra = sorted(report.uses - PORTABLE)
        return Check.warn(
            NAME, f"{report.summary()}: built for one CPU (uses {', '.join(extra)})",
            "do not copy this environment or image to another machine; " + REBUILD,
        )
    return Check.ok(NAME, report.summary())


def check_llama_build(config: Any) -> Iterable[Check]:
    """The installed llama.cpp build runs on this CPU (when llama-cpp is configured or installed)."""
    used = configured(config)
    if not installed():
        if used:
            yield Check.fail(NAME, "the llm provider llama-cpp needs llama-cpp-python, which is not "
                             "installed", "scripts/llama-cpp.sh install $(which python)")
        return
    try:
        report = probe()
    except ProbeError as e:
        if used:
            yield Check.fail(NAME, str(e), REBUILD)
        else:
            yield Check.warn(NAME, f"{e}; the configuration does not use it", REBUILD)
        return
    yield build_check(report, used)

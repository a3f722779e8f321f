#!/usr/bin/env bash
# Set up (scripts/setup.sh test) and run the test suite: every package's tests and the
# repository's end-to-end tests, without the model-heavy `slow` ones (run those with `nox -s slow`).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test || exit 1
VENV="${VC_VENV:-.venv}"
passed=0; failed=0; status=0
dirs=$(ls -d packages/*/tests tests 2>/dev/null)
for d in $dirs; do
  [ -d "$d" ] || continue
  printf '\n\033[1m==> pytest %s\033[0m\n' "$d"
  out=$(mktemp)
  "$VENV/bin/python" -m pytest "$d" -m "not slow" -q -p no:cacheprovider --timeout 900 "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$out" | tail -1)
  p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+'); passed=$((passed + ${p:-0}))
  f=$(echo "$line" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s+=$1} END {print s+0}'); failed=$((failed + ${f:-0}))
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=1; [ "${f:-0}" -eq 0 ] && failed=$((failed + 1)); fi
  rm -f "$out"
done
echo
echo "$passed passed, $failed failed"
exit $status

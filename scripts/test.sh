#!/usr/bin/env bash
# Installs, builds (warnings are errors) and runs every test: unit, fuzz-corpus replay and
# integration against real peers; then all of it again under ASan+UBSan.
# Ends with "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }
passed=0; failed=0
run_suite() {  # $1 build dir, rest: meson test args
  local dir="$1"; shift
  local log="$dir/meson-logs/testlog.txt"
  meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$dir/test-run.out" | grep -E '^ *[0-9]+/[0-9]+ ' || true
  local ok fail
  ok=$(grep -E '^Ok:' "$dir/test-run.out" | awk '{print $2}'); fail=$(grep -E '^(Fail|Timeout|Unexpected Pass):' "$dir/test-run.out" | awk '{s+=$2} END {print s+0}')
  passed=$((passed + ${ok:-0})); failed=$((failed + ${fail:-0}))
  [ -n "$ok" ] || failed=$((failed + 1))
}
if bash scripts/build.sh build-ci -Dwerror=true -Dbuildtype=debugoptimized; then
  run_suite build-ci
else
  echo "build failed"; failed=$((failed + 1))
fi
# The sanitizer pass: the same build and every suite again under ASan+UBSan. Unit and fuzz
# replays check leaks too; whole processes under load (integration) abort on any ASan/UBSan
# error, which fails their test, but are not leak-checked (a process killed mid-test is not a leak).
if [ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
     -Doptimization=1 -Ddebug=true >/dev/null; then
  if ninja -C build-asan >/dev/null; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      run_suite build-asan --no-rebuild --suite unit --suite fuzz
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      run_suite build-asan --no-rebuild --suite integration
  else
    echo "asan build failed"; failed=$((failed + 1))
  fi
else
  echo "asan setup failed"; failed=$((failed + 1))
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.cpp) for a set number of executions or a set
# time, one target at a time, each on a writable copy of its seed corpus outside the repo.
# Prints executions, exec/s and final corpus size per target; exits non-zero if any target
# crashed, leaked or timed out (the reproducer is left in the work directory).
#
#   scripts/fuzz.sh                      every target, -runs=10000000
#   scripts/fuzz.sh -t 60                every target, 60 s each
#   scripts/fuzz.sh -r 200000 socks5 keys
#   env: FUZZ_BUILD (build dir, default build-fuzz; a build set up with -Dfuzz_sanitizers=undefined
#   runs slow targets faster), FUZZ_MAX_LEN (default 4096), FUZZ_WORK (corpora, logs, crashes; default
#   /tmp/alknet-fuzz). Targets run one after another so exec/s figures are comparable.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=10000000; secs=0
while getopts "r:t:h" o; do
  case $o in
    r) runs=$OPTARG ;;
    t) secs=$OPTARG; runs=0 ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
build=${FUZZ_BUILD:-build-fuzz}
work=${FUZZ_WORK:-/tmp/alknet-fuzz}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.cpp; do t=${f#tests/fuzz/fuzz_}; targets+=("${t%.cpp}"); done
fi

if [ ! -f "$build/build.ninja" ]; then
  CXX=${CXX:-clang++-14} CC=${CC:-clang-14} meson setup "$build" -Dfuzz=true >/dev/null || { echo "fuzz: meson setup failed"; exit 1; }
fi
ninja -C "$build" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}") >/dev/null || { echo "fuzz: build failed"; exit 1; }

mkdir -p "$work"
bad=0
printf '%-16s %12s %10s %8s %8s  %s\n' target execs exec/s seconds corpus result
for t in "${targets[@]}"; do
  corpus="$work/corpus-$t"; art="$work/artifacts-$t/"; log="$work/$t.log"
  mkdir -p "$corpus" "$art"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  limit=(-runs="$runs"); [ "$secs" -gt 0 ] && limit=(-max_total_time="$secs")
  start=$(date +%s)
  "$build/tests/fuzz/fuzz_$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len="${FUZZ_MAX_LEN:-4096}" -print_final_stats=1 \
      -artifact_prefix="$art" "$corpus" >"$log" 2>&1
  rc=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
  result=clean
  if [ $rc -ne 0 ]; then result="FAILED rc=$rc (see $log, $art)"; bad=1; fi
  printf '%-16s %12s %10s %8s %8s  %s\n' "$t" "${execs:-?}" "${eps:-?}" "$elapsed" "$(ls "$corpus" | wc -l)" "$result"
done
exit $bad

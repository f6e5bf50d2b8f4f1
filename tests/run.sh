#!/usr/bin/env bash
# The whole walcast test suite, from a fresh Debian 12 machine: installs what is missing, builds,
# runs the unit and integration tests (real PostgreSQL, real Redis), runs them again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and fuzzes the decoders, the Realtime filter parser and
# the Realtime protocol briefly.
#
#   bash tests/run.sh            everything (what CI runs)
#   bash tests/run.sh --quick    release build, unit tests only
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
JOBS=$(nproc)

bash deploy/install-deps.sh

step() { printf '\n==== %s\n' "$*"; }
failures=()

step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"

if [ $QUICK = 1 ]; then
  ctest --test-dir build -L unit --output-on-failure
  exit $?
fi

# What failed, in a few lines per test, printed again at the very end: a CI log is often shown
# by its head and tail only, and a failing test's own output sits in the middle.
digest=()
failure_digest() { # build dir
  local log=$1/Testing/Temporary/LastTest.log name
  [ -f "$1/Testing/Temporary/LastTestsFailed.log" ] || return 0
  while IFS=: read -r _ name; do
    digest+=("$1: $name")
    while IFS= read -r line; do digest+=("    $line"); done < <(awk -v t="$name" '
      /^[0-9]+\/[0-9]+ Testing: / { on = ($3 == t) }
      on && /not ok|FAILED|LINE|ERROR|Sanitizer|runtime error|failed:|Timeout|timed out/' "$log" | head -12)
  done <"$1/Testing/Temporary/LastTestsFailed.log"
}

step "tests (release build)"
ctest --test-dir build --output-on-failure --timeout 900 || { failures+=("release tests"); failure_digest build; }

step "sanitizer build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWALCAST_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS"
step "tests (sanitizer build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  CRASH_ROWS=10000 ctest --test-dir build-asan --output-on-failure --timeout 1200 ||
  { failures+=("sanitizer tests"); failure_digest build-asan; }

step "fuzz smoke (libFuzzer, ${WALCAST_FUZZ_SECONDS:-60}s per target)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DWALCAST_FUZZ=ON -DWALCAST_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzz_pgoutput fuzz_wal2json fuzz_rt_filter fuzz_rt_proto
for target in pgoutput wal2json rt_filter rt_proto; do
  corpus=$(mktemp -d)
  cp -r tests/fuzz/corpus/$target/. "$corpus"/
  if build-fuzz/fuzz_$target -max_total_time="${WALCAST_FUZZ_SECONDS:-60}" -print_final_stats=1 \
       -artifact_prefix=build-fuzz/ "$corpus" >build-fuzz/fuzz_$target.log 2>&1; then
    echo "fuzz_$target: $(grep -E 'stat::number_of_executed_units' build-fuzz/fuzz_$target.log | awk '{print $2}') executions, no findings"
  else
    tail -40 build-fuzz/fuzz_$target.log
    failures+=("fuzz_$target")
  fi
  rm -rf "$corpus"
done

stages=7 # release tests, sanitizer tests, four fuzz targets, build
passed=$((stages - ${#failures[@]}))
if [ ${#failures[@]} -gt 0 ]; then
  step "FAILED: ${failures[*]}"
  [ ${#digest[@]} -eq 0 ] || printf '%s\n' "${digest[@]}"
  echo "stages: $passed passed, ${#failures[@]} failed"
  exit 1
fi
step "all test stages passed"
echo "stages: $passed passed, 0 failed"

# Shared helpers for integration tests (sourced). Each test runs inside tests/harness/harness.sh,
# so PG*, WALCAST_REDIS_URL and WALCAST_HARNESS_DIR are set; WALCAST_BIN is the binary under test.
set -euo pipefail

WALCAST=${WALCAST_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/walcast}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WALCAST_HARNESS_DIR:?run inside tests/harness/harness.sh}/work
mkdir -p "$WORK"
PASSED=0
FAILED=0
BG_PIDS=()

wc_cleanup_bg() {
  local p
  for p in "${BG_PIDS[@]:-}"; do
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
  done
}
trap wc_cleanup_bg EXIT

sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# check NAME EXPECTED ACTUAL
check() {
  if [ "$2" == "$3" ]; then
    PASSED=$((PASSED + 1)); echo "ok - $1"
  else
    FAILED=$((FAILED + 1)); echo "not ok - $1: expected [$2], got [$3]"
  fi
}

# check_true NAME COMMAND...
check_true() {
  local name=$1; shift
  if "$@"; then PASSED=$((PASSED + 1)); echo "ok - $name"
  else FAILED=$((FAILED + 1)); echo "not ok - $name"; fi
}

current_lsn() { sql -c "SELECT pg_current_wal_insert_lsn()"; }

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

summary() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

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
# readyz_code PORT: the status code of walcast's /readyz on 127.0.0.1:PORT (000: no answer in 5 s)
readyz_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/readyz" || true; }
readyz_is() { [ "$(readyz_code "$1")" = "$2" ]; }

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

# walcast's send() calls, traced with strace: `sends_trace PID FILE` starts tracing (back once
# attached), `sends_untrace` stops it, `sends_count FILE HEAD` counts the calls on every connection
# that had a send starting with HEAD, as strace escapes it ('HTTP/1.1 200', '\201' for a WebSocket
# text frame). lws cuts sends to a protocol's tx_packet_size, which these checks guard.
sends_trace() {
  strace -f -qq -e trace=sendto -p "$1" -o "$2" & SENDS_ST=$!
  sleep 1 # attached
}
sends_untrace() { sleep 0.5; kill -INT "$SENDS_ST"; wait "$SENDS_ST" 2>/dev/null || true; }
sends_count() {
  python3 - "$1" "$2" <<'PY'
import re, sys
calls = re.findall(r'sendto\((\d+), "((?:[^"\\]|\\.){0,40})', open(sys.argv[1]).read())
fds = {fd for fd, head in calls if head.startswith(sys.argv[2])}
print(sum(1 for fd, _ in calls if fd in fds))
PY
}

# slot_active SLOT: a walsender streams SLOT now.
slot_active() { [ "$(sql -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1' AND active")" = 1 ]; }

# seed_init: SEED from WALCAST_SEED (else random), printed for a replay, and RANDOM seeded with it.
seed_init() {
  SEED=${WALCAST_SEED:-$RANDOM}
  echo "# seed $SEED (replay with WALCAST_SEED=$SEED)"
  RANDOM=$SEED
}

# jwt_hs256 PAYLOAD [SECRET]: a token signed HS256 with SECRET ($WALCAST_AUTH_JWT_SECRET by default).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwt_hs256() {
  local h p s
  h=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  p=$(printf '%s' "$1" | b64url)
  s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "${2:-$WALCAST_AUTH_JWT_SECRET}" -binary | b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

# kill_while_running LOAD VAR RESTART_FN [MAX_KILLS] [MIN_TENTHS] [MAX_TENTHS]: while process LOAD
# runs, kills (SIGKILL) the process whose pid is in variable VAR at random moments (MIN_TENTHS to
# MAX_TENTHS of a second apart; default 0-9) and calls RESTART_FN, which starts it again and sets
# VAR. Stops after MAX_KILLS kills (default: none). Leaves the number of kills in KILLS.
kill_while_running() {
  local load=$1 var=$2 restart=$3 max=${4:-0} lo=${5:-0} hi=${6:-9} t
  KILLS=0
  while kill -0 "$load" 2>/dev/null && { [ "$max" -eq 0 ] || [ $KILLS -lt "$max" ]; }; do
    t=$((lo + RANDOM % (hi - lo + 1)))
    sleep "$((t / 10)).$((t % 10))"
    kill -9 "${!var}" 2>/dev/null || true
    wait "${!var}" 2>/dev/null || true
    KILLS=$((KILLS + 1))
    "$restart"
  done
}

# load_batches ROWS STMT_FN: commits ROWS rows as transactions of random size (mostly 1, often
# 2-51, sometimes 500-1999), one after another, paced so that disruptions land mid-stream.
# STMT_FN FIRST LAST BATCH prints the SQL of one transaction for rows FIRST..LAST. A transaction
# is retried while the server is restarting; a duplicate key means its commit landed before the
# connection broke. Uses $RANDOM: seed it for a replayable run.
load_batches() {
  local rows=$1 stmt_fn=$2 id=0 batch=0 n stmt out
  while [ $id -lt "$rows" ]; do
    batch=$((batch + 1))
    case $((RANDOM % 10)) in
      0) n=$((500 + RANDOM % 1500)) ;;
      1|2|3) n=$((2 + RANDOM % 50)) ;;
      *) n=1 ;;
    esac
    [ $((id + n)) -gt "$rows" ] && n=$((rows - id))
    stmt=$("$stmt_fn" $((id + 1)) $((id + n)) "$batch")
    until out=$(psql -X -q -v ON_ERROR_STOP=1 -c "$stmt" 2>&1); do
      case "$out" in *"duplicate key"*) break ;; esac
      sleep 0.2
    done
    id=$((id + n))
    sleep 0.02
  done
}

# check_sequence NAME GOT WANT: the files hold the same lines in the same order; says which
# lines are duplicated, missing or extra.
check_sequence() {
  local dups
  dups=$(sort "$2" | uniq -d | head -3 | paste -sd' ')
  check "$1: nothing twice" "" "$dups"
  check "$1: exactly what SQL holds, in commit order ($(wc -l <"$3") lines)" "" "$(diff "$2" "$3" | head -5)"
}

# run_instance NAME PORT: `walcast run` with $WORK/walcast.conf and deploy/policy.ini, its HTTP
# listener on 127.0.0.1:PORT, in the background; its stderr in $WORK/NAME.err. Sets RUNP.
run_instance() {
  "$WALCAST" -c "$WORK/walcast.conf" run --policy "$ROOT/deploy/policy.ini" --set "http.listen=127.0.0.1:$2" \
    >/dev/null 2>>"$WORK/$1.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}

# node_part NAME FILE: runs the node script FILE (tests/realtime-js), its output in $WORK/NAME.out
# and printed; its "ok - " and "not ok - " lines count as this script's checks, and so does an
# exit status other than 0 without a "not ok" line.
node_part() {
  local rc=0
  node "$2" >"$WORK/$1.out" 2>"$WORK/$1.err" || rc=$?
  node_counted "$1" "$2" "$rc"
}
# node_counted NAME FILE RC: the same for a node script that ran already (in the background, its
# output in $WORK/NAME.out and .err) and exited with RC.
node_counted() {
  local rc=$3 p f
  cat "$WORK/$1.out"
  p=$(grep -c '^ok - ' "$WORK/$1.out" || true)
  f=$(grep -c '^not ok - ' "$WORK/$1.out" || true)
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    FAILED=$((FAILED + 1)); echo "not ok - $(basename "$2") exited $rc"; tail -20 "$WORK/$1.err"
  fi
}

# rt_js_install DIR: the pinned node packages of tests/realtime-js (its package-lock.json) in
# DIR/node_modules, installed with `npm ci` when missing; fails with a "not ok" line.
rt_js_install() {
  command -v node >/dev/null || { echo "not ok - node missing (Debian's nodejs, deploy/install-deps.sh)"; return 1; }
  command -v npm >/dev/null || { echo "not ok - npm missing (Debian's npm, deploy/install-deps.sh)"; return 1; }
  if [ ! -f "$1/node_modules/@supabase/realtime-js/package.json" ] || [ ! -f "$1/node_modules/ws/package.json" ]; then
    echo "# installing the pinned node packages (npm ci)"
    # one installer at a time: another checkout's test may be installing into the same tree
    (flock 9; [ -f "$1/node_modules/ws/package.json" ] || (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)) \
      9>"$1/.npm-install.lock" || { echo "not ok - npm ci in $1 failed"; return 1; }
  fi
}

summary() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

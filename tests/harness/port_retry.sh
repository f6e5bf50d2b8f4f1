#!/usr/bin/env bash
# The harness starts its servers even when the port it picked is taken before the server binds it
# (parallel harnesses race for free ports): a port held by another listener is given to it as
# its first choice (WALCAST_HARNESS_FIRST_PORT), and PostgreSQL and Redis must both come up on
# another port, saying so, and serve.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$(mktemp -d "${TMPDIR:-/tmp}/port-retry.XXXXXX")
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(600)' >"$DIR/port" &
holder=$!
trap 'kill $holder 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do [ -s "$DIR/port" ] && break; sleep 0.1; done
taken=$(cat "$DIR/port")
fail=0
check() { if [ "$2" == "$3" ]; then echo "ok - $1"; else echo "not ok - $1: expected [$2], got [$3]"; fail=1; fi; }

rc=0
WALCAST_HARNESS_FIRST_PORT=$taken "$HERE/harness.sh" run --no-migrate -- bash -c '
  echo "pg $PGPORT"; echo "redis ${WALCAST_REDIS_URL##*:}"
  echo "sql $(psql -XAtc "SELECT 1")"; echo "ping $(redis-cli -u "$WALCAST_REDIS_URL" ping)"' \
  >"$DIR/out" 2>"$DIR/err" || rc=$?
check "harness run succeeds" 0 "$rc"
pg=$(awk '/^pg / {print $2}' "$DIR/out")
redis=$(awk '/^redis / {print $2}' "$DIR/out" | sed 's,/.*,,')
check "PostgreSQL moved off the taken port" yes "$([ -n "$pg" ] && [ "$pg" != "$taken" ] && echo yes || echo "no ($pg)")"
check "Redis moved off the taken port" yes "$([ -n "$redis" ] && [ "$redis" != "$taken" ] && echo yes || echo "no ($redis)")"
check "PostgreSQL serves" "sql 1" "$(grep '^sql' "$DIR/out")"
check "Redis serves" "ping PONG" "$(grep '^ping' "$DIR/out")"
check "both retries said so" 2 "$(grep -c "port $taken was taken" "$DIR/err")"
[ $fail = 0 ] || sed 's/^/# /' "$DIR/err"
exit $fail

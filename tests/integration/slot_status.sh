#!/usr/bin/env bash
# The slot metrics of /metrics (src/stream/slot_status.c) against a real PostgreSQL: the poller's
# walcast_slot_wal_status, walcast_slot_safe_wal_size_bytes and walcast_slot_retained_wal_bytes
# equal what pg_replication_slots says (the oracle), with and without max_slot_wal_keep_size; a
# missing slot and an unreachable server leave the gauges out and count errors; promtool accepts
# the output. Runs the poller through `test_http slot` (tests/unit/test_http.c), built beside
# walcast.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

POLLER="$(dirname "$WALCAST")/test_http"
PROMTOOL=$(command -v promtool || echo /usr/bin/promtool)
[ -x "$POLLER" ] || { echo "not ok - $POLLER not built"; exit 1; }

sql -c "SELECT pg_create_logical_replication_slot('ss_slot', 'pgoutput')" >/dev/null
sql -c "CREATE TABLE ss_t (id int PRIMARY KEY, v text)"
# Retain some WAL behind the slot (nobody consumes it).
sql -c "INSERT INTO ss_t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g"

metric() { # metric FILE NAME_WITH_LABELS: its value, or "absent"
  local v
  v=$(awk -v n="$2" '$1 == n { print $2 }' "$1")
  echo "${v:-absent}"
}

# Unlimited max_slot_wal_keep_size (the default): reserved, safe_wal_size NULL → absent.
"$POLLER" slot "" ss_slot 2 >"$WORK/m1.txt"
check "poller finishes its polls" "0" "$?"
check "wal_status as pg_replication_slots says" \
  "$(sql -c "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'ss_slot'")" \
  "$(awk '/^walcast_slot_wal_status\{/ && $2 == 1 { sub(/.*status="/, "", $1); sub(/".*/, "", $1); print $1 }' "$WORK/m1.txt")"
check "exactly one wal_status is 1, the others 0" "1 3" \
  "$(grep -c '^walcast_slot_wal_status{.*} 1$' "$WORK/m1.txt") $(grep -c '^walcast_slot_wal_status{.*} 0$' "$WORK/m1.txt")"
check "safe_wal_size unlimited: left out" "absent" "$(metric "$WORK/m1.txt" walcast_slot_safe_wal_size_bytes)"
want=$(sql -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn) FROM pg_replication_slots WHERE slot_name = 'ss_slot'")
got=$(metric "$WORK/m1.txt" walcast_slot_retained_wal_bytes)
check_true "retained WAL ($got) is what the server says ($want), give or take the WAL written since" \
  awk -v g="$got" -v w="$want" 'BEGIN { exit !(g > 1000000 && g <= w && w - g < 1000000) }'
check "no errors" "0" "$(metric "$WORK/m1.txt" walcast_slot_status_errors_total)"
"$PROMTOOL" check metrics <"$WORK/m1.txt" >"$WORK/promtool1.txt" 2>&1
check "promtool check metrics accepts the output" "0" "$?"

# A bounded max_slot_wal_keep_size: safe_wal_size is a number, equal to the server's.
sql -c "ALTER SYSTEM SET max_slot_wal_keep_size = '64MB'" -c "SELECT pg_reload_conf()" >/dev/null
wait_for 10 bash -c "[ -n \"\$(psql -XAtc \"SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = 'ss_slot'\")\" ]"
"$POLLER" slot "" ss_slot 2 >"$WORK/m2.txt"
want=$(sql -c "SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = 'ss_slot'")
got=$(metric "$WORK/m2.txt" walcast_slot_safe_wal_size_bytes)
check_true "safe_wal_size ($got) is what the server says ($want)" \
  awk -v g="$got" -v w="$want" 'BEGIN { exit !(g != "absent" && g > 0 && (g - w) * (g - w) < 1e12) }'
sql -c "ALTER SYSTEM RESET max_slot_wal_keep_size" -c "SELECT pg_reload_conf()" >/dev/null

# A slot that does not exist: the gauges are left out, no error counted (the query worked).
"$POLLER" slot "" no_such_slot 0 >"$WORK/m3.txt"
check "missing slot: wal_status left out" "0" "$(grep -c '^walcast_slot_wal_status' "$WORK/m3.txt" || true)"
check "missing slot: retained left out" "absent" "$(metric "$WORK/m3.txt" walcast_slot_retained_wal_bytes)"

# An unreachable server: errors counted, gauges left out, the poller keeps trying.
"$POLLER" slot "host=127.0.0.1 port=1 connect_timeout=2" ss_slot 0 >"$WORK/m4.txt"
errs=$(metric "$WORK/m4.txt" walcast_slot_status_errors_total)
check_true "unreachable server: errors counted ($errs)" [ "$errs" != absent ] && [ "$errs" -ge 2 ]
check "unreachable server: wal_status left out" "0" "$(grep -c '^walcast_slot_wal_status' "$WORK/m4.txt" || true)"

sql -c "SELECT pg_drop_replication_slot('ss_slot')" >/dev/null
summary

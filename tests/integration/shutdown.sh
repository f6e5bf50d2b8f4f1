#!/usr/bin/env bash
# Stopping is bounded: SIGTERM or a reached limit ends walcast promptly, with the final status
# update acknowledged by the server when it answers, and within the 5 s bound when it does not
# (here the walsender is frozen with SIGSTOP, like a cut network).
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

sql -c "CREATE TABLE sd_t (id int PRIMARY KEY)" -c "CREATE PUBLICATION sd_pub FOR TABLE sd_t" >/dev/null
walsender() { sql -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1' AND active"; }
ms() { date +%s%3N; }

# SIGTERM with a server that answers: prompt, and the final feedback acknowledged.
"$WALCAST" tail -S sd_ok --publication sd_pub >/dev/null 2>"$WORK/ok.err" &
pid=$!; BG_PIDS+=("$pid")
wait_for 20 bash -c "[ -n \"\$(psql -XAtc \"SELECT 1 FROM pg_replication_slots WHERE slot_name = 'sd_ok' AND active\")\" ]"
t0=$(ms); kill -TERM "$pid"; wait "$pid" && rc=0 || rc=$?; t1=$(ms)
check "SIGTERM: exit 0" 0 "$rc"
check_true "SIGTERM: within 2 s ($((t1 - t0)) ms)" [ $((t1 - t0)) -lt 2000 ]
check "SIGTERM: final status update acknowledged" 1 "$(grep -c source.stopped "$WORK/ok.err")"

# SIGTERM while the walsender is frozen: still exits, within the bound.
"$WALCAST" tail -S sd_frozen --publication sd_pub >/dev/null 2>"$WORK/frozen.err" &
pid=$!; BG_PIDS+=("$pid")
wait_for 20 bash -c "[ -n \"\$(psql -XAtc \"SELECT 1 FROM pg_replication_slots WHERE slot_name = 'sd_frozen' AND active\")\" ]"
ws=$(walsender sd_frozen)
kill -STOP "$ws"
t0=$(ms); kill -TERM "$pid"
for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
t1=$(ms)
if kill -0 "$pid" 2>/dev/null; then rc=hung; kill -9 "$pid"; wait "$pid" || true; else wait "$pid" && rc=0 || rc=$?; fi
kill -CONT "$ws"
check "frozen server: walcast exits (status 0)" 0 "$rc"
check_true "frozen server: within the 5 s bound ($((t1 - t0)) ms)" [ $((t1 - t0)) -lt 7000 ]
check "frozen server: says the final update was not acknowledged" 1 "$(grep -c source.stop_unconfirmed "$WORK/frozen.err")"

# A limit reached at the start of a large transaction: the stop does not wait for the rest to
# be delivered. The wall time is mostly PostgreSQL's decoding of the transaction before it sends
# the first row, and moves with the machine's load (a fixed 3 s bound failed under the sanitizer
# build at 3.1 s), so it is judged against the same stop after a one-row transaction: at most
# 5 s more. (walcast still reads what the walsender sends until it honours CopyDone: ~600 ms of
# CPU here for the other 199,999 rows, against 30 ms for the one-row stop.)
sql -c "SELECT pg_create_logical_replication_slot('sd_one', 'pgoutput')" >/dev/null
sql -c "INSERT INTO sd_t VALUES (0)"
sql -c "SELECT pg_create_logical_replication_slot('sd_big', 'pgoutput')" >/dev/null
sql -c "INSERT INTO sd_t SELECT generate_series(1, 200000)"
t0=$(ms)
timeout 30 "$WALCAST" tail -S sd_one --publication sd_pub -n 1 >/dev/null 2>"$WORK/one.err"
rc=$?; t1=$(ms); one=$((t1 - t0))
check "-n 1 in a one-row transaction: exit 0" 0 "$rc"
t0=$(ms)
timeout 30 "$WALCAST" tail -S sd_big --publication sd_pub -n 1 >/dev/null 2>"$WORK/big.err"
rc=$?; t1=$(ms); big=$((t1 - t0))
check "-n 1 in a 200,000-row transaction: exit 0" 0 "$rc"
check_true "-n 1 in a 200,000-row transaction: $big ms, at most 5 s more than after a one-row one ($one ms)" \
  [ "$big" -le $((one + 5000)) ]
sed 's/^/# /' "$WORK/big.err" | grep -v INFO || true

summary

#!/usr/bin/env bash
# `walcast run` with a durable sink (and so a checkpoint store) on a database whose published
# tables are quiet while others are busy: the slot's confirmed_flush_lsn must follow the server
# between transactions (as `walcast tail` does), or an idle daemon pins every byte of WAL the
# application writes elsewhere — and walcast_replication_lag_bytes reports it as lag.
source "$(dirname "$0")/lib.sh"
POLICY=$ROOT/deploy/policy.ini
port=$((20000 + RANDOM % 12000)) # below the ephemeral ports (32768-)
cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = idle_run
status_interval = 1s
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:$port
[sink.all]
type = jsonl
path = $WORK/all.jsonl
CONF
"$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>"$WORK/run.err" &
RUNP=$!; BG_PIDS+=("$RUNP")
check_true "walcast run streams" wait_for 60 bash -c "curl -fs http://127.0.0.1:$port/readyz >/dev/null"

o=$(sql -c "INSERT INTO orgs (name) VALUES ('idle') RETURNING id")
check_true "the published insert reaches the file" wait_for 30 bash -c "grep -q '$o' '$WORK/all.jsonl'"
sql -c "CREATE TABLE idle_unpublished (id int, pad text)" >/dev/null
# WAL the slot need not keep: writes to a table outside the publication
sql -c "INSERT INTO idle_unpublished SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g" >/dev/null
target=$(sql -c "SELECT pg_current_wal_lsn()")
moved() { [ "$(sql -c "SELECT confirmed_flush_lsn >= '$target' FROM pg_replication_slots WHERE slot_name = 'idle_run'")" = t ]; }
check_true "the idle slot's confirmed_flush_lsn reaches the server's position" wait_for 40 moved
lag=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '$1 == "walcast_replication_lag_bytes" {print $2}')
check_true "walcast_replication_lag_bytes is small once idle (got ${lag:-none})" test "${lag%.*}" -lt 1000000
# idle means asleep: a quiet stream must not wake the loop thread more than its timers need
# (status updates each second here, the server's keepalives). A rest between reads that re-arms
# itself while nothing arrives woke it ~700 times a second.
sleep 2
wakeups() { awk '$1 == "voluntary_ctxt_switches:" {print $2}' "/proc/$RUNP/task/$RUNP/status"; }
w0=$(wakeups); sleep 3; w1=$(wakeups)
check_true "an idle daemon's loop thread sleeps: $((w1 - w0)) wakeups in 3 s (bound 150)" test $((w1 - w0)) -lt 150
kill -TERM "$RUNP"; wait "$RUNP" && rc=0 || rc=$?
check "SIGTERM: exit 0" 0 "$rc"
summary

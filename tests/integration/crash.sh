#!/usr/bin/env bash
# Exactly once across kill -9: while a load generator commits transactions of 1 to 2000 rows,
# `walcast tail --output` is killed with SIGKILL at random moments and restarted, and PostgreSQL
# itself is restarted once. At the end the file must hold every committed row exactly once, in
# commit order, for both decoders.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"
seed_init
ROWS=${CRASH_ROWS:-30000}

sql <<'SQL'
CREATE TABLE crash_t (id bigint PRIMARY KEY, batch int NOT NULL, payload text);
CREATE PUBLICATION crash_pub FOR TABLE crash_t;
SQL
sql -c "SELECT pg_create_logical_replication_slot('crash_p', 'pgoutput')" \
    -c "SELECT pg_create_logical_replication_slot('crash_w', 'wal2json')" >/dev/null

# The load: transactions of random size (lib.sh load_batches).
crash_stmt() { echo "INSERT INTO crash_t SELECT g, $3, md5(g::text) FROM generate_series($1, $2) g"; }
load() { load_batches "$ROWS" crash_stmt; }
load &
LOAD=$!
BG_PIDS+=("$LOAD")

run_tail() { # plugin slot
  "$WALCAST" tail -P "$1" -S "$2" --publication crash_pub -t crash_t -o "$WORK/$2.jsonl" >/dev/null 2>>"$WORK/$2.err" &
  echo $!
}

kills=0
restarted=no
while kill -0 "$LOAD" 2>/dev/null; do
  p=$(run_tail pgoutput crash_p); w=$(run_tail wal2json crash_w)
  BG_PIDS+=("$p" "$w")
  sleep "0.$((RANDOM % 10))" # sometimes before the first checkpoint
  if [ "$restarted" = no ] && [ $kills -ge 2 ]; then
    harness_pg_restart immediate # a crash of the server too, with the tails connected
    restarted=yes
    sleep 0.5
  fi
  kill -9 "$p" "$w" 2>/dev/null || true
  wait "$p" "$w" 2>/dev/null || true
  kills=$((kills + 1))
done
wait "$LOAD"
# The harness runs PostgreSQL with synchronous_commit off, so the immediate restart may lose the
# last commits: what counts is what the table holds.
sql -c "SELECT id FROM crash_t ORDER BY id" >"$WORK/committed.ids"
committed=$(wc -l <"$WORK/committed.ids")
check_true "load committed most rows ($committed of $ROWS)" [ "$committed" -gt $((ROWS * 8 / 10)) ]
check_true "tails were killed mid-stream several times ($kills)" [ $kills -ge 3 ]

end=$(current_lsn)
for slot in crash_p crash_w; do
  plugin=pgoutput; [ $slot = crash_w ] && plugin=wal2json
  timeout 300 "$WALCAST" tail -P $plugin -S $slot --publication crash_pub -t crash_t -o "$WORK/$slot.jsonl" \
    --until-lsn "$end" 2>>"$WORK/$slot.err"
  check "$plugin: final run exits 0" 0 $?
  jq -r '.new.id' "$WORK/$slot.jsonl" >"$WORK/$slot.ids"
  check_sequence "$plugin" "$WORK/$slot.ids" "$WORK/committed.ids"
done
summary

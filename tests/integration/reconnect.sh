#!/usr/bin/env bash
# Exactly once across reconnects under load: while a load generator commits transactions of 1 to
# 2000 rows, the walsenders of running `walcast tail --output` processes are terminated
# (pg_terminate_backend) again and again, PostgreSQL is restarted in immediate mode once, and then
# the walsenders are terminated in the middle of streaming one very large transaction; the tails
# are never restarted by the test: they reconnect by themselves. Last, they are stopped with
# SIGTERM while another large transaction streams, and each FILE must end at its checkpoint.
#
# Three tails: plain (pgoutput and wal2json) over rc_t, and `--as` a viewer over events.
# Oracle: every committed row exactly once, in commit order, compared with SQL over the table;
# for --as, with what walcast.events_masked shows that user (a privacy rule hides a third of the
# events from a viewer, and viewers see phone numbers masked).
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"
seed_init
ROWS=${RECONNECT_ROWS:-20000}
BIG=${RECONNECT_BIG_ROWS:-150000}

org=$(sql -c "INSERT INTO orgs (name) VALUES ('reconnect org') RETURNING id")
viewer=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles VALUES ('$org', '$viewer', 'viewer')" >/dev/null
secret=$(sql -c "INSERT INTO contacts (org_id, name, phone) VALUES ('$org', 'secret', '+15550000001') RETURNING id")
sql -c "INSERT INTO privacy_rules (org_id, contact_id, min_role) VALUES ('$org', '$secret', 'member')" >/dev/null
sql <<'SQL'
CREATE TABLE rc_t (id bigint PRIMARY KEY, batch int NOT NULL, payload text);
CREATE PUBLICATION rc_pub FOR TABLE rc_t;
SQL
sql -c "SELECT pg_create_logical_replication_slot('rc_p', 'pgoutput')" \
    -c "SELECT pg_create_logical_replication_slot('rc_w', 'wal2json')" \
    -c "SELECT pg_create_logical_replication_slot('rc_as', 'pgoutput')" >/dev/null

# One transaction: rows FIRST..LAST of rc_t and as many events (duration_s = the row number, so
# commit order is duration_s order; every third event is the rule-protected contact's).
rc_stmt() {
  echo "WITH t AS (INSERT INTO rc_t SELECT g, $3, md5(g::text) FROM generate_series($1, $2) g)
        INSERT INTO events (org_id, contact_id, kind, direction, status, duration_s, from_number, to_number)
        SELECT '$org', CASE WHEN g % 3 = 0 THEN '$secret'::uuid END, 'call', 'inbound', 'new', g,
               '+1555' || lpad(g::text, 7, '0'), '+15551112222'
        FROM generate_series($1, $2) g"
}

declare -A ARGS=(
  [rc_p]="-P pgoutput -S rc_p --publication rc_pub -t rc_t"
  [rc_w]="-P wal2json -S rc_w -t rc_t"
  [rc_as]="-P pgoutput -S rc_as --as $viewer --policy $ROOT/deploy/policy.ini -t events"
)
NAMES=(rc_p rc_w rc_as)
declare -A PID
for n in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  "$WALCAST" tail ${ARGS[$n]} -o "$WORK/$n.jsonl" >/dev/null 2>"$WORK/$n.err" &
  PID[$n]=$!; BG_PIDS+=("${PID[$n]}")
done
all_active() {
  [ "$(psql -XAtc "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('rc_p', 'rc_w', 'rc_as') AND active")" = 3 ]
}
terminate() {
  psql -XAtc "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
              WHERE slot_name IN ('rc_p', 'rc_w', 'rc_as') AND active_pid IS NOT NULL" 2>/dev/null || echo 0
}
check_true "the three tails stream" wait_for 30 all_active

load_batches "$ROWS" rc_stmt &
LOAD=$!
BG_PIDS+=("$LOAD")
terms=0
killed=0
restarted=no
while kill -0 "$LOAD" 2>/dev/null; do
  sleep "0.$((RANDOM % 10))"
  k=$(terminate); killed=$((killed + k)); terms=$((terms + 1))
  if [ "$restarted" = no ] && [ $terms -ge 4 ]; then
    harness_pg_restart immediate # the server crashes with the tails connected
    restarted=yes
  fi
done
wait "$LOAD"
check_true "walsenders were terminated under load ($killed in $terms rounds)" [ $killed -ge 6 ]
check "PostgreSQL was restarted in immediate mode" yes "$restarted"

# Large transactions. First the walsenders are terminated while one streams (the plain pgoutput
# tail has written part of it): that part is cut from the file and the transaction comes again
# after the reconnect. The rest of it may already sit in the tail's socket buffers, in which case
# the tail completes it before noticing: then once more, up to three tries.
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
big_id=$ROWS
big_txn() { sql -c "$(rc_stmt $((big_id + 1)) $((big_id + BIG)) 0)"; big_id=$((big_id + BIG)); }
mid_big() { local n; n=$(lines "$WORK/rc_p.jsonl"); [ "$n" -ge $((before + 2000)) ] && [ "$n" -lt $((before + BIG)) ]; }
caught_up() { [ "$(lines "$WORK/rc_p.jsonl")" -ge "$(sql -c "SELECT count(*) FROM rc_t")" ]; }
cuts() { grep -c 'tail.abandoned' "$WORK/rc_p.err" || true; }
cut=no
for try in 1 2 3; do
  before=$(lines "$WORK/rc_p.jsonl")
  c0=$(cuts)
  big_txn
  wait_for 120 mid_big || continue
  k=$(terminate)
  settled() { [ "$(cuts)" -gt "$c0" ] || caught_up; }
  wait_for 120 settled || true
  if [ "$k" -ge 1 ] && [ "$(cuts)" -gt "$c0" ]; then cut=yes; break; fi
  echo "# try $try: the tail had the whole transaction before the connection dropped; again"
done
check "walsenders terminated mid-transaction: the partial transaction cut from the file" yes "$cut"
check_true "the tails reconnect" wait_for 60 all_active
check_true "the plain tail catches up" wait_for 300 caught_up

# Then SIGTERM while another large transaction streams: every FILE ends at its checkpoint.
before=$(lines "$WORK/rc_p.jsonl")
big_txn
check_true "another large transaction is being written" wait_for 120 mid_big
for n in "${NAMES[@]}"; do
  kill -TERM "${PID[$n]}" 2>/dev/null || true
done
for n in "${NAMES[@]}"; do
  wait "${PID[$n]}" && rc=0 || rc=$?
  check "$n: SIGTERM under load: exit 0" 0 "$rc"
  check "$n: FILE ends at its checkpoint" "$(sed -n 's/^offset=//p' "$WORK/$n.jsonl.pos")" "$(stat -c %s "$WORK/$n.jsonl")"
done
check_true "rc_p was stopped mid-transaction and cut back" grep -q 'tail.trimmed' "$WORK/rc_p.err"

# Finish: each tail restarted once to read up to the end, then compared with SQL.
end=$(current_lsn)
for n in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  timeout 600 "$WALCAST" tail ${ARGS[$n]} -o "$WORK/$n.jsonl" --until-lsn "$end" 2>>"$WORK/$n.err" && rc=0 || rc=$?
  check "$n: final run exits 0" 0 "$rc"
done
# The harness runs PostgreSQL with synchronous_commit off: the immediate restart may have lost
# the last commits. What counts is what the table holds.
sql -c "SELECT id FROM rc_t ORDER BY id" >"$WORK/committed.ids"
check_true "the load committed most rows ($(wc -l <"$WORK/committed.ids") of $big_id)" \
  [ "$(wc -l <"$WORK/committed.ids")" -gt $((ROWS * 8 / 10 + big_id - ROWS)) ]
for n in rc_p rc_w; do
  jq -r '.new.id' "$WORK/$n.jsonl" >"$WORK/$n.ids"
  check_sequence "$n" "$WORK/$n.ids" "$WORK/committed.ids"
done
sql -c "SET ROLE authenticated" \
    -c "SET request.jwt.claims = '{\"sub\":\"$viewer\",\"role\":\"authenticated\"}'" \
    -c "SELECT duration_s || ' ' || coalesce(from_number, 'null') FROM walcast.events_masked ORDER BY duration_s" \
    >"$WORK/viewer.want"
jq -r 'select(.action == "insert") | "\(.new.duration_s) \(.new.from_number // "null")"' "$WORK/rc_as.jsonl" >"$WORK/viewer.got"
seen=$(wc -l <"$WORK/viewer.want")
check_true "the viewer sees some events, not all ($seen)" test "$seen" -gt 0 -a "$seen" -lt "$(wc -l <"$WORK/committed.ids")"
check_sequence "rc_as (--as viewer)" "$WORK/viewer.got" "$WORK/viewer.want"
check "rc_as: only inserts of events" "insert events" "$(jq -r '"\(.action) \(.table)"' "$WORK/rc_as.jsonl" | sort -u | paste -sd'|')"
summary

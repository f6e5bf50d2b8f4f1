#!/usr/bin/env bash
# What walcast leaves behind in the database it reads: slots and publications.
#  - An ad-hoc tail (no --slot) uses a temporary slot and leaves nothing behind; `walcast status`
#    warns about inactive slots that retain WAL.
#  - --output needs a durable slot; a temporary slot lost with its connection ends the run with
#    one clear error instead of a silent jump over the changes of the gap.
#  - A missing publication is an error that says how to create it; walcast never creates one
#    FOR ALL TABLES (which makes every table without a replica identity refuse UPDATE/DELETE).
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

sql <<'SQL'
CREATE TABLE sl_t (id int PRIMARY KEY, v text);
CREATE PUBLICATION sl_pub FOR TABLE sl_t;
SQL
slots() { sql -c "SELECT coalesce(string_agg(slot_name || ':' || temporary, ',' ORDER BY slot_name), '') FROM pg_replication_slots"; }

# An ad-hoc tail: a temporary slot while it runs, nothing afterwards.
"$WALCAST" tail --publication sl_pub -n 1 >"$WORK/adhoc.out" 2>"$WORK/adhoc.err" &
pid=$!; BG_PIDS+=("$pid")
wait_for 20 bash -c "[ -n \"\$(psql -XAtc 'SELECT 1 FROM pg_replication_slots WHERE active')\" ]"
check "ad-hoc tail: its slot is temporary" "walcast_tail_$pid:true" "$(slots)"
sql -c "INSERT INTO sl_t VALUES (1, 'one')"
wait "$pid" && rc=0 || rc=$?
check "ad-hoc tail: prints the change and exits 0" "0 1" "$rc $(jq -r .new.id "$WORK/adhoc.out")"
wait_for 10 bash -c "[ -z \"\$(psql -XAtc 'SELECT 1 FROM pg_replication_slots')\" ]" || true
check "ad-hoc tail: no slot left behind" "" "$(slots)"

# --output needs a durable slot.
rc=0; timeout 10 "$WALCAST" tail --publication sl_pub -o "$WORK/o.jsonl" >/dev/null 2>"$WORK/o.err" || rc=$?
check "--output without --slot: refused (exit 2)" 2 "$rc"
check "--output without --slot: says --slot is needed" 1 "$(grep -c -- '--slot' "$WORK/o.err")"
rc=0; timeout 10 "$WALCAST" tail -S sl_o --temporary --publication sl_pub -o "$WORK/o.jsonl" >/dev/null 2>"$WORK/o2.err" || rc=$?
check "--output with --temporary: refused (exit 2)" 2 "$rc"
check "--output refused: no slot created, no output file" ":absent" "$(slots):$([ -e "$WORK/o.jsonl" ] && echo present || echo absent)"

# A temporary slot lost with its connection: one clear error, exit 1, within seconds.
"$WALCAST" tail -S sl_temp --temporary --publication sl_pub >"$WORK/temp.out" 2>"$WORK/temp.err" &
pid=$!; BG_PIDS+=("$pid")
wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT active FROM pg_replication_slots WHERE slot_name = 'sl_temp'\")\" = t ]"
sql -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'sl_temp'" >/dev/null
sql -c "INSERT INTO sl_t VALUES (2, 'committed while the slot was gone')"
rc=0; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then rc=running; kill "$pid"; wait "$pid" || true; else wait "$pid" || rc=$?; fi
check "temporary slot lost: the run ends with exit 1" 1 "$rc"
check "temporary slot lost: one clear error" 1 "$(grep -c 'ERROR.*temporary slot.*sl_temp' "$WORK/temp.err")"

# walcast status warns about inactive slots that retain WAL.
sql -c "SELECT pg_create_logical_replication_slot('sl_forgotten', 'pgoutput')" >/dev/null
sql -c "INSERT INTO sl_t SELECT g, md5(g::text) FROM generate_series(100, 5000) g"
rc=0; "$WALCAST" status -S sl_forgotten >"$WORK/status.out" 2>"$WORK/status.err" || rc=$?
retained=$(sql -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'sl_forgotten'")
check "status warns about the inactive slot, with the WAL it retains" 1 \
  "$(grep -c "WARN.*slot=sl_forgotten.*retains" "$WORK/status.err")"
sed 's/^/# /' "$WORK/status.err"
sql -c "SELECT pg_drop_replication_slot('sl_forgotten')" >/dev/null

# A missing publication: an error that says how to create it; nothing created, and an
# application table without a replica identity still accepts UPDATE and DELETE.
sql -c "CREATE TABLE sl_app (v text)" -c "INSERT INTO sl_app VALUES ('a'), ('b')"
rc=0; timeout 20 "$WALCAST" tail -S sl_nopub --publication sl_missing -n 1 >/dev/null 2>"$WORK/pub.err" || rc=$?
check "missing publication: exit 1" 1 "$rc"
check "missing publication: says how to create it" 1 "$(grep -c 'ERROR.*sl_missing.*CREATE PUBLICATION' "$WORK/pub.err")"
check "missing publication: none created" 0 "$(sql -c "SELECT count(*) FROM pg_publication WHERE pubname = 'sl_missing' OR puballtables")"
out=$(psql -X -q -At -c "UPDATE sl_app SET v = 'c' WHERE v = 'a'" -c "DELETE FROM sl_app WHERE v = 'b'" 2>&1) || true
check "the application can still UPDATE and DELETE a table without replica identity" "" "$out"
sed 's/^/# /' "$WORK/pub.err"

# --create-publication: created for exactly the tables the policy file governs.
end=$(current_lsn)
rc=0; timeout 20 "$WALCAST" tail -S sl_cp --publication sl_created --create-publication --policy "$ROOT/deploy/policy.ini" \
  --until-lsn "$end" >/dev/null 2>"$WORK/cp.err" || rc=$?
check "--create-publication: exit 0" 0 "$rc"
want=$(sed -n 's/^\[table \([^]]*\)\].*$/\1/p' "$ROOT/deploy/policy.ini" | LC_ALL=C sort | paste -sd,)
check "--create-publication: for the policy's tables, not all" "f $want" \
  "$(sql -c "SELECT p.puballtables, (SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY (schemaname || '.' || tablename) COLLATE \"C\") FROM pg_publication_tables t WHERE t.pubname = p.pubname) FROM pg_publication p WHERE pubname = 'sl_created'" | tr '|' ' ')"

summary

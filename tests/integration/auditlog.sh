#!/usr/bin/env bash
# The audit writer (src/pipeline/auditlog.c) and walcast's sync_health rows against a real
# PostgreSQL. The oracle is PostgreSQL: row counts and RLS as each user.
#
#  1. grants: walcast_replicator may INSERT into audit_log and sync_health and nothing more;
#     the application's roles are unchanged.
#  2. a burst lands exactly once, in batch_size batches, in recording order, values intact
#     (quotes and SQL in the detail stay data); invalid records and an unknown org are counted.
#  3. the loop never blocks: while another session holds audit_log locked for 3 s (the writer's
#     INSERT waits on the server), a 5 ms timer of the writer's loop stays on time.
#  4. PostgreSQL stopped for a while, then back: nothing lost within the queue bound, every row
#     once; past the bound, drops are counted and written + dropped = recorded. A batch committed
#     whose answer was lost with the connection is not written again.
#  5. `walcast run` with [audit] enabled: sync_health rows appear at the interval for every org,
#     reach an admin's jsonl sink exactly as RLS lets that admin read them and never a viewer's;
#     a burst of audit rows streams back to the admin without walcast writing a single row
#     because of them (nothing loops).
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"
DRIVER="$(dirname "$WALCAST")/auditlog_test"
POLICY=$ROOT/deploy/policy.ini
REPL=${WALCAST_REPL_CONNINFO:?}
[ -x "$DRIVER" ] || { echo "not ok - $DRIVER not built"; exit 1; }

kv() { sed -n "s/^$2=//p" "$1"; }       # kv FILE KEY: the driver's counter
rows() { sql -c "SELECT count(*) FROM audit_log WHERE action = '$1'"; }
dupes() { sql -c "SELECT count(*) - count(DISTINCT target_id) FROM audit_log WHERE action = '$1'"; }
pg_stop() { as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -m fast -w stop >/dev/null; }
pg_start() { as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -w start -l "$WALCAST_HARNESS_DIR/pg.log" >/dev/null; }

o1=$(sql -c "INSERT INTO orgs (name) VALUES ('audit one') RETURNING id")
o2=$(sql -c "INSERT INTO orgs (name) VALUES ('audit two') RETURNING id")
o3=$(sql -c "INSERT INTO orgs (name) VALUES ('audit three') RETURNING id")

# ---- 1. grants -----------------------------------------------------------------------------
priv() { sql -c "SELECT has_table_privilege('$1', 'public.$2', '$3')"; }
check "walcast_replicator may insert into audit_log" t "$(priv walcast_replicator audit_log INSERT)"
check "walcast_replicator may insert into sync_health" t "$(priv walcast_replicator sync_health INSERT)"
check "walcast_replicator may not update or delete audit_log" "f f" \
  "$(priv walcast_replicator audit_log UPDATE) $(priv walcast_replicator audit_log DELETE)"
check "walcast_replicator may not insert into events" f "$(priv walcast_replicator events INSERT)"
check "authenticated still may not write audit_log or sync_health" "f f" \
  "$(priv authenticated audit_log INSERT) $(priv authenticated sync_health INSERT)"
out=$(psql -X -q -At "$REPL" -c "INSERT INTO sync_health (org_id, source, status) VALUES ('$o1', 'app', 'ok')" 2>&1 || true)
check_true "walcast_replicator cannot write sync_health rows of another source ($out)" \
  grep -q "row-level security" <<<"$out"

# ---- 2. a burst, exactly once, in batches ----------------------------------------------------
rc=0
"$DRIVER" --conninfo "$REPL" --org "$o1" --n 5000 --batch 500 --flush 50 --action test.burst --invalid \
  --orphan 11111111-1111-4111-8111-111111111111 >"$WORK/burst.txt" 2>"$WORK/burst.err" || rc=$?
check "burst: the driver accounted for every record" 0 $rc
check "burst: 5000 rows in audit_log" 5000 "$(rows test.burst)"
check "burst: none twice" 0 "$(dupes test.burst)"
check "burst: written as the writer says" 5000 "$(kv "$WORK/burst.txt" written)"
check "burst: 11 INSERTs of at most 500 records (5001 queued)" 11 "$(kv "$WORK/burst.txt" batches)"
check "burst: the unknown org's record skipped and counted" 1 "$(kv "$WORK/burst.txt" dropped_no_org)"
check "burst: two invalid records refused and counted" 2 "$(kv "$WORK/burst.txt" dropped_invalid)"
check "burst: ids follow the recording order" 0 "$(sql -c "SELECT count(*) FROM (SELECT target_id::int t,
  lag(target_id::int) OVER (ORDER BY id) p FROM audit_log WHERE action = 'test.burst') s WHERE t <> p + 1")"
check "burst: values intact, quotes and SQL stay data" \
  "$o1|00000000-0000-4000-8000-000000000001|events|it's \"quoted\"'); DROP TABLE public.orgs; --|4999" \
  "$(sql -c "SELECT org_id, actor_id, target_table, detail->>'note', detail->>'i' FROM audit_log
             WHERE action = 'test.burst' AND target_id = '4999'")"

# the drain at shutdown writes what is queued at once, without waiting out the flush interval
rc=0
"$DRIVER" --conninfo "$REPL" --org "$o1" --n 10 --flush 600000 --timeout 0 --action test.drain \
  >"$WORK/drain.txt" 2>"$WORK/drain.err" || rc=$?
check "drain: every queued record written at shutdown, nothing left" "0 10 0" \
  "$rc $(rows test.drain) $(kv "$WORK/drain.txt" remaining)"

# a full batch goes at once, and what is left after it goes right behind it, not a flush
# interval (here 10 minutes) later
rc=0
"$DRIVER" --conninfo "$REPL" --org "$o1" --n 700 --batch 500 --flush 600000 --timeout 120 --action test.rest \
  >"$WORK/rest.txt" 2>"$WORK/rest.err" || rc=$?
check "rest: 700 rows in two INSERTs" "0 700 2" "$rc $(rows test.rest) $(kv "$WORK/rest.txt" batches)"
check_true "rest: the 200 after the full batch did not wait for the flush interval ($(kv "$WORK/rest.txt" elapsed_ms) ms)" \
  [ "$(kv "$WORK/rest.txt" elapsed_ms)" -lt 60000 ]

# ---- 3. the loop never blocks ------------------------------------------------------------------
"$DRIVER" --conninfo "$REPL" --org "$o1" --n 1000 --every 3 --batch 100 --flush 50 --action test.lock \
  >"$WORK/lock.txt" 2>"$WORK/lock.err" &
DRV=$!
BG_PIDS+=("$DRV")
wait_for 60 bash -c "[ \$(psql -XAtc \"SELECT count(*) FROM audit_log WHERE action = 'test.lock'\") -gt 0 ]"
sql -c "BEGIN; LOCK TABLE public.audit_log IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;" >/dev/null &
LOCKER=$!
waiting() { [ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walcast-audit' AND wait_event_type = 'Lock'")" -ge 1 ]; }
check_true "lock: the writer's INSERT waits on the locked table" wait_for 10 waiting
wait "$LOCKER"
rc=0; wait "$DRV" || rc=$?
check "lock: the driver accounted for every record" 0 $rc
check "lock: 1000 rows, none twice" "1000 0" "$(rows test.lock) $(dupes test.lock)"
late=$(kv "$WORK/lock.txt" max_late_ms)
check_true "lock: the loop's 5 ms timer was never more than 500 ms late (max $late ms) while the INSERT waited 3 s" \
  [ "$late" -lt 500 ]

# ---- 4. PostgreSQL away, then back ----------------------------------------------------------------
outage() { # outage ACTION QUEUE: records 3000 (one per 2 ms) while the server is stopped for a while
  "$DRIVER" --conninfo "$REPL" --org "$o2" --n 3000 --every 2 --batch 200 --flush 50 --queue "$2" \
    --timeout 120 --action "$1" >"$WORK/$1.txt" 2>"$WORK/$1.err" &
  DRV=$!
  BG_PIDS+=("$DRV")
  wait_for 60 bash -c "[ \$(psql -XAtc \"SELECT count(*) FROM audit_log WHERE action = '$1'\") -ge 200 ]"
  pg_stop
  sleep 3 # the server stays away while the driver keeps recording
  pg_start
  rc=0; wait "$DRV" || rc=$?
}
outage test.outage 100000
check "outage within the bound: the driver accounted for every record" 0 $rc
check "outage within the bound: 3000 rows, none twice" "3000 0" "$(rows test.outage) $(dupes test.outage)"
check "outage within the bound: nothing dropped" 0 "$(kv "$WORK/test.outage.txt" dropped_full)"
check_true "outage within the bound: the lost connection was counted ($(kv "$WORK/test.outage.txt" errors))" \
  [ "$(kv "$WORK/test.outage.txt" errors)" -ge 1 ]
outage test.bound 300
written=$(kv "$WORK/test.bound.txt" written)
dropped=$(kv "$WORK/test.bound.txt" dropped_full)
check "outage past the bound: the driver accounted for every record" 0 $rc
check_true "outage past the bound: drops counted ($dropped)" [ "$dropped" -gt 0 ]
check "outage past the bound: written + dropped = recorded" 3000 $((written + dropped))
check "outage past the bound: the rows are what was written, none twice" "$written 0" \
  "$(rows test.bound) $(dupes test.bound)"
check_true "outage past the bound: one log line per burst of drops" \
  [ "$(grep -c audit.dropping "$WORK/test.bound.err")" -le 2 ]

# The answer lost, the batch committed: the server commits a batch, then the connection dies
# before the answer reaches the writer. Made deterministic with synchronous replication to a
# standby that does not exist, for walcast_replicator's sessions only: its commit is written
# locally and waits (SyncRep); terminating that backend then ends the connection with the batch
# committed. The writer must find it there and not write it again.
sql -c "ALTER SYSTEM SET synchronous_commit = 'local'" -c "ALTER SYSTEM SET synchronous_standby_names = 'nobody'" \
  -c "SELECT pg_reload_conf()" >/dev/null
sql -c "ALTER ROLE walcast_replicator SET synchronous_commit = 'on'" >/dev/null
"$DRIVER" --conninfo "$REPL" --org "$o2" --n 10 --batch 500 --flush 20 --timeout 60 --action test.doubt \
  >"$WORK/doubt.txt" 2>"$WORK/doubt.err" &
DRV=$!
BG_PIDS+=("$DRV")
syncrep() { [ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walcast-audit' AND wait_event = 'SyncRep'")" = 1 ]; }
check_true "in doubt: the batch's commit waits for the (absent) standby" wait_for 30 syncrep
sql -c "ALTER ROLE walcast_replicator RESET synchronous_commit" >/dev/null
sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'walcast-audit'" >/dev/null
rc=0; wait "$DRV" || rc=$?
sql -c "ALTER SYSTEM RESET synchronous_commit" -c "ALTER SYSTEM RESET synchronous_standby_names" \
  -c "SELECT pg_reload_conf()" >/dev/null
check "in doubt: the driver accounted for every record" 0 $rc
check "in doubt: the committed batch is there once, not written again" "10 0" "$(rows test.doubt) $(dupes test.doubt)"
check_true "in doubt: the writer asked and found it committed" grep -q "it was committed, not written again" "$WORK/doubt.err"

# ---- 5. walcast run: sync_health and no loop ------------------------------------------------------
admin=$(sql -c "SELECT gen_random_uuid()")
viewer=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1', '$admin', 'admin'), ('$o2', '$admin', 'owner'),
        ('$o1', '$viewer', 'viewer')" >/dev/null
port=$(free_port)
cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = al_run
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:$port
[audit]
enabled = true
conninfo = $REPL
flush_interval = 100ms
sync_health_interval = 1s
[sink.admin]
type = jsonl
path = $WORK/admin.jsonl
as = $admin
tables = sync_health,audit_log
[sink.viewer]
type = jsonl
path = $WORK/viewer.jsonl
as = $viewer
tables = sync_health,audit_log
CONF
"$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>"$WORK/run.err" &
RUNP=$!
BG_PIDS+=("$RUNP")
check_true "run: sync_health ticks appear" wait_for 60 bash -c "[ \$(psql -XAtc \"SELECT count(DISTINCT checked_at) FROM sync_health WHERE org_id = '$o1'\") -ge 4 ]"
orgs=$(sql -c "SELECT count(*) FROM orgs")
check "run: every tick writes one row per org" "" \
  "$(sql -c "SELECT checked_at FROM sync_health GROUP BY checked_at HAVING count(*) <> $orgs")"
check "run: every row says source walcast, a status word, a lag >= 0" "" \
  "$(sql -c "SELECT id FROM sync_health WHERE source <> 'walcast' OR status NOT IN ('ok', 'lagging', 'paused')
             OR lag_s IS NULL OR lag_s < 0")"
check "run: streaming and caught up, the last tick says ok" ok \
  "$(sql -c "SELECT status FROM sync_health WHERE org_id = '$o1' ORDER BY id DESC LIMIT 1")"
# a tick that waited for the connection goes late and the next one on time: single gaps may be
# shorter than the interval, the mean may not
check "run: no two ticks less than 0.5 s or more than 10 s apart" "" "$(sql -c "SELECT d FROM (SELECT
  extract(epoch FROM checked_at - lag(checked_at) OVER (ORDER BY checked_at)) d
  FROM (SELECT DISTINCT checked_at FROM sync_health) t) s WHERE d < 0.5 OR d > 10")"
check "run: ticks 1 s apart on average (0.9-3 s)" t "$(sql -c "SELECT extract(epoch FROM max(checked_at) - min(checked_at))
  / (count(DISTINCT checked_at) - 1) BETWEEN 0.9 AND 3 FROM sync_health")"

# a burst of audit rows (standing for the sinks' joins and leaves) streams back to the admin
"$DRIVER" --conninfo "$REPL" --org "$o1" --n 300 --batch 50 --flush 20 --action test.loop >"$WORK/loop.txt" 2>&1 ||
  echo "# the driver failed: $(cat "$WORK/loop.txt")"
check "run: 300 audit rows written" 300 "$(rows test.loop)"
as_user() { sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}'; $2"; }
streamed() { [ "$(jq -r 'select(.table == "audit_log" and .new.action == "test.loop") | .new.id' "$WORK/admin.jsonl" 2>/dev/null | wc -l)" -ge 300 ]; }
check_true "run: the admin's sink received the 300 audit rows" wait_for 60 streamed
scrape() { curl -sf "http://127.0.0.1:$port/metrics" >"$WORK/metrics"; }
wait_for 10 scrape || true
check "run: walcast itself wrote no audit row because of them (walcast_audit_records_written_total)" 0 \
  "$(awk '$1 == "walcast_audit_records_written_total" { print $2 }' "$WORK/metrics")"
check_true "run: /metrics counts sync_health rows" \
  awk '$1 == "walcast_sync_health_rows_total" && $2 > 0 { ok = 1 } END { exit !ok }' "$WORK/metrics"
PROMTOOL=$(command -v promtool || echo /usr/bin/promtool)
if [ -x "$PROMTOOL" ]; then
  check "run: promtool check metrics accepts /metrics with the audit families" 0 \
    "$("$PROMTOOL" check metrics <"$WORK/metrics" >"$WORK/promtool.txt" 2>&1; echo $?)"
fi
kill -TERM "$RUNP"
rc=0; wait "$RUNP" || rc=$?
check "run: SIGTERM drains, exit 0" 0 $rc
check "run: audit rows are exactly the driver's, nothing more (nothing loops)" 300 \
  "$(sql -c "SELECT count(*) FROM audit_log WHERE action NOT IN ('test.burst', 'test.drain', 'test.rest', 'test.doubt', 'test.lock', 'test.outage', 'test.bound')")"

# the oracle: RLS as the admin and as the viewer
jq -r 'select(.table == "sync_health" and .action == "insert") | .new.id' "$WORK/admin.jsonl" | sort -n >"$WORK/admin.ids"
max=$(tail -1 "$WORK/admin.ids")
check_true "run: the admin's sink got sync_health rows ($(wc -l <"$WORK/admin.ids"))" [ -s "$WORK/admin.ids" ]
as_user "$admin" "SELECT id FROM sync_health WHERE id <= ${max:-0} ORDER BY id" >"$WORK/admin.rls"
check "run: admin's sync_health rows are exactly what RLS lets the admin read" "" \
  "$(diff "$WORK/admin.rls" "$WORK/admin.ids" | head -5)"
check "run: RLS shows the admin no sync_health row of an org outside theirs" 0 \
  "$(as_user "$admin" "SELECT count(*) FROM sync_health WHERE org_id = '$o3'")"
check "run: RLS shows the viewer no sync_health row" 0 "$(as_user "$viewer" "SELECT count(*) FROM sync_health")"
check "run: the viewer's sink has no sync_health or audit_log row" 0 \
  "$(jq -r 'select(.table == "sync_health" or .table == "audit_log") | .table' "$WORK/viewer.jsonl" 2>/dev/null | wc -l)"
jq -r 'select(.table == "audit_log" and .new.action == "test.loop") | .new.id' "$WORK/admin.jsonl" | sort -n >"$WORK/loop.ids"
check "run: admin's audit rows are exactly what RLS lets the admin read" "" \
  "$(diff <(as_user "$admin" "SELECT id FROM audit_log WHERE action = 'test.loop' ORDER BY id") "$WORK/loop.ids" | head -5)"
summary

#!/usr/bin/env bash
# The redis_stream sink inside `walcast run`: each committed change exactly once in the stream, in
# commit order, checked against PostgreSQL.
#
# A mixed load on every platform table — orgs (some with TOASTed names, some deleted with their
# rows cascading), memberships added, changed and removed, contacts, privacy rules, events with
# encrypted-column bytes, audit_log and sync_health rows — while walcast is SIGKILLed at random
# moments and restarted, then Redis is shut down and started again from its AOF under load. At the
# end, read back with XRANGE (tests/integration/redis_stream_check.py):
#   - every transaction is framed B ... C, its entries' ids are <commit_lsn>-0, -1, ...; no xid
#     twice; transactions in increasing commit LSN;
#   - per transaction, the row changes per table and action equal PostgreSQL's own tally
#     (AFTER ROW triggers into an UNLOGGED table, which logical decoding never sees);
#   - the tables rebuilt by applying the stream's changes in order equal the tables, row for row,
#     every column as PostgreSQL prints it (the encrypted body as the bytes stored, not decrypted).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini
KEY=wc:changes
TABLES="orgs org_roles contacts privacy_rules events audit_log sync_health"

tally_setup # PostgreSQL's tally of row changes per transaction (redis_lib.sh)

cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = edge
[pipeline]
state_dir = $WORK/state
drain_timeout = 10s
[sink.stream]
type = redis_stream
url = $REDIS_URL
key = $KEY
window = 0
command_timeout = 2s
reconnect_max = 1s
CONF
start_run() {
  "$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>>"$WORK/run.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}

# One transaction of the load: a random mix over every table, drawn by PostgreSQL itself.
mixed_sql() {
  local i=$1 extra=""
  case $((i % 7)) in
    0) extra="INSERT INTO orgs (name) VALUES ('org $i');
       INSERT INTO org_roles (org_id, user_id, role)
         SELECT id, gen_random_uuid(), (ARRAY['owner', 'admin', 'analyst', 'member', 'viewer'])[1 + (random() * 4)::int]
         FROM orgs ORDER BY random() LIMIT 3;
       INSERT INTO contacts (org_id, name, phone) SELECT id, 'c $i', '+1555' || (random() * 1e7)::int FROM orgs ORDER BY random() LIMIT 2;" ;;
    1) extra="UPDATE org_roles SET role = (ARRAY['owner', 'admin', 'analyst', 'member', 'viewer'])[1 + (random() * 4)::int]
         WHERE (org_id, user_id) IN (SELECT org_id, user_id FROM org_roles ORDER BY random() LIMIT 2);
       DELETE FROM org_roles WHERE (org_id, user_id) IN (SELECT org_id, user_id FROM org_roles ORDER BY random() LIMIT 1);" ;;
    2) extra="INSERT INTO privacy_rules (org_id, contact_id, min_role)
         SELECT org_id, id, (ARRAY['admin', 'analyst', 'member'])[1 + (random() * 2)::int] FROM contacts ORDER BY random() LIMIT 1
         ON CONFLICT (contact_id) DO UPDATE SET min_role = excluded.min_role;
       DELETE FROM privacy_rules WHERE id IN (SELECT id FROM privacy_rules ORDER BY random() LIMIT (random() < 0.3)::int);" ;;
    3) extra="UPDATE orgs SET name = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 150))
         WHERE id IN (SELECT id FROM orgs ORDER BY random() LIMIT 1);
       INSERT INTO audit_log (org_id, actor_id, action, target_table, detail)
         SELECT id, gen_random_uuid(), 'test', 'orgs', jsonb_build_object('i', $i, 'note', 'é \"q\"') FROM orgs ORDER BY random() LIMIT 1;" ;;
    4) extra="UPDATE contacts SET phone = NULL WHERE id IN (SELECT id FROM contacts ORDER BY random() LIMIT 1);
       INSERT INTO sync_health (org_id, source, status, lag_s)
         SELECT id, 'crm', 'ok', round((random() * 100)::numeric, 3) FROM orgs ORDER BY random() LIMIT 1;" ;;
    5) if [ $((i % 35)) = 5 ]; then
         extra="DELETE FROM orgs WHERE id IN (SELECT id FROM orgs ORDER BY random() LIMIT 1 OFFSET 4);"
       fi ;;
  esac
  cat <<SQL
BEGIN;
INSERT INTO events (org_id, contact_id, user_id, kind, direction, status, duration_s, from_number, body)
  SELECT c.org_id, CASE WHEN random() < 0.2 THEN NULL ELSE c.id END, gen_random_uuid(), 'call', 'inbound', 'completed',
         CASE WHEN random() < 0.5 THEN (random() * 600)::int END, '+1555' || (random() * 1e7)::int,
         CASE WHEN random() < 0.5 THEN decode(md5(random()::text), 'hex') END
  FROM (SELECT * FROM contacts ORDER BY random() LIMIT $((1 + i % 4))) c;
UPDATE events SET status = 'missed', duration_s = 0 WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT 1);
DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT $((i % 2)));
$extra
COMMIT;
SQL
}
mixed_load() {
  local i
  for i in $(seq "$1" "$2"); do
    mixed_sql "$i" | psql -X -q -At -v ON_ERROR_STOP=1 >>"$WORK/load.out" 2>>"$WORK/load.err" || true
    sleep 0.03
  done
}

# ---- the run ------------------------------------------------------------------------------------
start_run
wait_for 60 slot_active edge || { echo "not ok - walcast run did not start"; cat "$WORK/run.err"; exit 1; }
sql -c "INSERT INTO orgs (name) SELECT 'seed ' || g FROM generate_series(1, 6) g" >/dev/null
sql -c "INSERT INTO contacts (org_id, name) SELECT o.id, 'c' || g FROM orgs o, generate_series(1, 4) g" >/dev/null

# 1. SIGKILL at random moments under load
mixed_load 1 150 &
LOAD=$!
BG_PIDS+=("$LOAD")
kill_while_running "$LOAD" RUNP start_run 8 5 30
wait "$LOAD" || true
check_true "walcast run was killed mid-stream several times ($KILLS)" [ $KILLS -ge 3 ]

# 2. Redis shut down (AOF kept) under load, then started again
rcli CONFIG SET appendonly yes >/dev/null
wait_for 30 bash -c "redis-cli -p $RPORT INFO persistence | tr -d '\r' | grep -qx 'aof_rewrite_in_progress:0' &&
  redis-cli -p $RPORT INFO persistence | tr -d '\r' | grep -qx 'aof_rewrite_scheduled:0'"
mixed_load 151 190 &
LOAD=$!
BG_PIDS+=("$LOAD")
sleep 1
rcli SHUTDOWN >/dev/null 2>&1 || true
wait_for 30 bash -c "! redis-cli -p $RPORT PING >/dev/null 2>&1"
sleep 2
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly yes --daemonize no \
  --dir "$WALCAST_HARNESS_DIR" --logfile "$WALCAST_HARNESS_DIR/redis2.log" &
BG_PIDS+=("$!")
wait_for 30 bash -c "redis-cli -p $RPORT PING 2>/dev/null | grep -q PONG"
wait "$LOAD" || true

# ---- the comparison -----------------------------------------------------------------------------
tally_counts >"$WORK/sql.counts"
: >"$WORK/sql.rows.raw"
for t in $TABLES; do
  cols=$(sql -c "SELECT string_agg(format('%L, %I::text', attname, attname), ', ' ORDER BY attnum)
                 FROM pg_attribute WHERE attrelid = 'public.$t'::regclass AND attnum > 0 AND NOT attisdropped")
  sql -c "SELECT '$t' || E'\t' || json_build_object($cols)::text FROM public.$t" >>"$WORK/sql.rows.raw"
done
python3 "$ROOT/tests/integration/redis_stream_check.py" --normalize "$WORK/sql.rows.raw" >"$WORK/sql.rows"
stream_caught_up() {
  stream_counts "$KEY" >"$WORK/stream.counts" && cmp -s "$WORK/sql.counts" "$WORK/stream.counts" &&
    cmp -s "$WORK/sql.rows" "$WORK/rows"
}
wait_for 120 stream_caught_up || echo "# the stream did not reach what SQL holds within 120 s"
echo "# stream: $(cat "$WORK/summary")"
check "load: every transaction committed" "" "$(grep -v '^$' "$WORK/load.err" | head -3)"
check_true "the tally is not empty ($(wc -l <"$WORK/sql.counts") table/action/transaction lines)" \
  [ "$(wc -l <"$WORK/sql.counts")" -gt 300 ]
for t in $TABLES; do
  check_true "the load changed $t" grep -q " $t " "$WORK/sql.counts"
done
check "framing, ids from commit LSNs, no transaction twice, keys consistent" "" "$(head -5 "$WORK/problems")"
check "per transaction, row changes per table and action equal PostgreSQL's tally" "" \
  "$(diff "$WORK/sql.counts" "$WORK/stream.counts" | head -6)"
check "the tables rebuilt from the stream equal the tables" "" "$(diff "$WORK/sql.rows" "$WORK/rows" | head -6)"
check_true "TOASTed org names went through unchanged-TOAST updates" \
  grep -qE '^orgs	.*"name": "[0-9a-f]{3000,}' "$WORK/rows"
check_true "encrypted-column bytes are carried as stored" grep -qE '"body": "\\\\x[0-9a-f]{32}"' "$WORK/rows"
check "per-table action counts are not all inserts" 1 "$(grep -c ' events UPDATE ' "$WORK/sql.counts" | awk '{print ($1 > 0)}')"

# the sink's position: a restart resumes where the stream ends, nothing written twice
kill -TERM "$RUNP"
rc=0; wait "$RUNP" || rc=$?
check "walcast run: SIGTERM drains, exit 0" 0 $rc
before=$(rcli XLEN "$KEY")
start_run
wait_for 60 slot_active edge || echo "# walcast run did not restart"
grep -q 'redis_stream.start' "$WORK/run.err"
sql -c "INSERT INTO orgs (name) VALUES ('after restart')" >/dev/null
wait_for 30 bash -c "[ \$(redis-cli -p $RPORT XLEN $KEY) -ge $((before + 3)) ]"
check "after a clean restart, one more transaction adds exactly its 3 entries" $((before + 3)) "$(rcli XLEN "$KEY")"
check "no fatal error" "" "$(grep -E 'redis_stream.failed|pipeline.sink_failed' "$WORK/run.err" | head -2)"
for id in redis.down redis.reset redis.connect_failed redis.up redis_stream.start redis_stream.replayed redis_stream.round_failed; do
  echo "# $id: $(grep -c "$id" "$WORK/run.err" || true)"
done
kill -TERM "$RUNP"; wait "$RUNP" || true
summary

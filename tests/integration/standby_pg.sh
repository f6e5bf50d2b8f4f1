#!/usr/bin/env bash
# A standby on "another host": two `walcast run` on one slot with DIFFERENT pipeline.state_dir
# and pipeline.checkpoint_store = postgres, a redis aggregates sink (durable, its position in
# Redis), a mixed load on events with policy-table changes (memberships joining, changing role,
# leaving; privacy rules set, changed, removed) in the same stream. The active one is SIGKILLed
# mid-stream; the other takes over within 10 s, from the checkpoint the first one wrote in
# PostgreSQL. Oracles: SQL. Afterwards every Redis aggregate equals an SQL recount over
# public.events (redis_lib.sh), and the policy state the checkpoint tables hold as of their
# confirmed position (base, then the log in order, computed in SQL) equals public.org_roles and
# public.privacy_rules.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini
SLOT=sbpg
ms() { date +%s%3N; }
walsender() { sql -c "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '$SLOT'"; }

pg_store_setup "$SLOT" "$REDIS_URL"
# start_run NAME PORT: one "host": its own state_dir, its stderr in $WORK/NAME.err; sets RUNP
start_run() {
  "$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" --set "http.listen=127.0.0.1:$2" \
    --set "pipeline.state_dir=$WORK/host-$1" >/dev/null 2>>"$WORK/$1.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}
PA=$(kernel_free_port); PB=$(kernel_free_port)
while [ "$PB" = "$PA" ]; do PB=$(kernel_free_port); done

start_run a "$PA"; A=$RUNP
wait_for 60 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PA/readyz)\" = 200 ]" ||
  { echo "not ok - the first instance did not become ready"; cat "$WORK/a.err"; exit 1; }
start_run b "$PB"; B=$RUNP
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PB/readyz)\" = 503 ]" ||
  { echo "not ok - the standby does not answer /readyz"; cat "$WORK/b.err"; exit 1; }
check "the checkpoint tables are in walcast's schema, the slot's row taken" 1 \
  "$(sql -c "SELECT count(*) FROM walcast.checkpoint_slots WHERE slot = '$SLOT'")"

# policy changes: members join, change role, leave; privacy rules set, changed, removed
policy_load() {
  local i
  for i in $(seq 1 "$1"); do
    psql -X -q -At -v ON_ERROR_STOP=1 >>"$WORK/policy.out" 2>>"$WORK/policy.err" <<SQL || true
BEGIN;
INSERT INTO org_roles (org_id, user_id, role)
  SELECT id, gen_random_uuid(), (ARRAY['viewer', 'member', 'analyst', 'admin'])[1 + (random() * 3)::int]
  FROM orgs ORDER BY random() LIMIT 1;
UPDATE org_roles SET role = (ARRAY['viewer', 'member', 'analyst', 'admin', 'owner'])[1 + (random() * 4)::int]
  WHERE (org_id, user_id) IN (SELECT org_id, user_id FROM org_roles ORDER BY random() LIMIT 2);
DELETE FROM org_roles WHERE (org_id, user_id) IN (SELECT org_id, user_id FROM org_roles ORDER BY random() LIMIT $((i % 2)));
INSERT INTO privacy_rules (org_id, contact_id, min_role)
  SELECT org_id, id, (ARRAY['member', 'analyst', 'admin'])[1 + (random() * 2)::int] FROM contacts ORDER BY random() LIMIT 1
  ON CONFLICT (contact_id) DO UPDATE SET min_role = excluded.min_role;
DELETE FROM privacy_rules WHERE id IN (SELECT id FROM privacy_rules ORDER BY random() LIMIT $((i % 3 == 0)));
COMMIT;
SQL
    sleep 0.05
  done
}
load 80 &
LOAD=$!
policy_load 50 &
PLOAD=$!
BG_PIDS+=("$LOAD" "$PLOAD")
sleep 2.$((RANDOM % 10))
WA=$(walsender)
check_true "A streams (walsender $WA), B waits" [ "$WA" != 0 ] && [ "$(readyz_code "$PB")" = 503 ]
t0=$(ms)
kill -9 "$A"; wait "$A" 2>/dev/null || true
KILL_LSN=$(current_lsn)
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PB/readyz)\" = 200 ]" || true
t1=$(ms)
echo "# takeover after kill -9: $((t1 - t0)) ms (bar: 10000)"
check_true "B took over within 10 s ($((t1 - t0)) ms)" [ $((t1 - t0)) -le 10000 ]
check "B: one takeover line, naming the postgres store" 1 \
  "$(grep -c 'run.takeover.*checkpoint_store=postgres' "$WORK/b.err" || true)"
check "B loaded the policy state from the checkpoint A wrote (not from the database)" "1 0" \
  "$(grep -c 'pipeline.state_loaded.*from the checkpoint' "$WORK/b.err" || true) $(grep -c 'state_loaded.*from \(the slot\|the current\)' "$WORK/b.err" || true)"
wait "$LOAD" || true
wait "$PLOAD" || true
check "load: every transaction committed" "" "$(grep -v 'erased\|^$' "$WORK/load.err" | head -3)"
check "policy load: every transaction committed" "" "$(head -3 "$WORK/policy.err")"

# ---- the comparison --------------------------------------------------------------------------
aggregates_check "in Redis" 120 200

# The policy state in the checkpoint tables as of their confirmed position: the base's rows,
# then each logged row in (lsn, n) order, the last one per key winning (a delete removes it).
ckpt_state() {
  sql -c "
WITH pos AS (SELECT lsn FROM walcast.checkpoint_positions WHERE slot = '$SLOT' AND name = 'pipeline'),
r AS (
  SELECT tbl, false AS deleted, v0, v1, v2, '0/0'::pg_lsn AS lsn, n FROM walcast.checkpoint_base WHERE slot = '$SLOT'
  UNION ALL
  SELECT tbl, deleted, v0, v1, v2, lsn, n FROM walcast.checkpoint_log
    WHERE slot = '$SLOT' AND lsn <= (SELECT lsn FROM pos)),
last AS (
  SELECT DISTINCT ON (tbl, v0, CASE WHEN tbl = 1 THEN v1 END) * FROM r
  ORDER BY tbl, v0, CASE WHEN tbl = 1 THEN v1 END, lsn DESC, n DESC)
SELECT CASE WHEN tbl = 1 THEN 'm ' || v0 || ' ' || v1 || ' ' || v2
            ELSE 'r ' || v0 || ' ' || coalesce(v1, '-') || ' ' || coalesce(v2, '-') END
FROM last WHERE NOT deleted" | LC_ALL=C sort
}
sql_state() {
  sql -c "SELECT 'm ' || org_id || ' ' || user_id || ' ' || role FROM org_roles
    UNION ALL SELECT 'r ' || id || ' ' || contact_id || ' ' || min_role FROM privacy_rules" | LC_ALL=C sort
}
state_same() { ckpt_state >"$WORK/ckpt.state"; sql_state >"$WORK/sql.state"; cmp -s "$WORK/ckpt.state" "$WORK/sql.state"; }
wait_for 60 state_same || echo "# the checkpoint's state did not reach the tables' within 60 s"
check_true "the checkpoint's policy state is not empty ($(wc -l <"$WORK/ckpt.state") rows)" \
  [ "$(wc -l <"$WORK/ckpt.state")" -gt 60 ]
check "the checkpoint's policy state as of its confirmed position equals org_roles and privacy_rules" "" \
  "$(diff "$WORK/sql.state" "$WORK/ckpt.state" | head -6)"
check "B logged policy rows past A's kill ($KILL_LSN) in the same tables" 1 \
  "$(sql -c "SELECT (count(*) > 0)::int FROM walcast.checkpoint_log WHERE slot = '$SLOT' AND lsn > '$KILL_LSN'")"
kill -TERM "$B"
rc=0; wait "$B" || rc=$?
check "B: SIGTERM drains, exit 0" 0 "$rc"
check "B: no error lines" 0 "$(grep -c -e ' ERROR ' -e '"level":"error"' "$WORK/b.err" || true)"
check "nothing but walcast's own schema holds checkpoint tables" "walcast" \
  "$(sql -c "SELECT string_agg(DISTINCT nspname, ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE relname LIKE 'checkpoint%'")"
summary

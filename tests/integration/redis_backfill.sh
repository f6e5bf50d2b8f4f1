#!/usr/bin/env bash
# `walcast backfill` for the redis sink: aggregates rebuilt from a snapshot, handed over to
# `walcast run` at exactly the snapshot's LSN, checked against SQL.
#
# 1. A first install: events exist before walcast ever ran. backfill (the slot does not exist:
#    it creates it, with the snapshot) runs while a mixed load goes on, then walcast run takes
#    over; every aggregate in Redis must equal SQL's — nothing the load did while the snapshot
#    was read is missed or counted twice.
# 2. A rebuild: walcast run stopped, the aggregates damaged (a counter changed, a key deleted, a
#    stray key added), backfill again under load (the slot exists: a temporary slot exports the
#    snapshot), walcast run again: equal to SQL again, the stray key gone.
# 3. backfill refuses while walcast run holds the slot.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini

sql -c "INSERT INTO orgs (name) SELECT 'bf ' || g FROM generate_series(1, 3) g" >/dev/null
sql -c "INSERT INTO contacts (org_id, name) SELECT o.id, 'c' || g FROM orgs o, generate_series(1, 8) g" >/dev/null
# history before walcast: 3000 events over the last 5 days
sql -c "INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
  SELECT c.org_id, CASE WHEN random() < 0.1 THEN NULL ELSE c.id END, k, 'inbound',
         CASE WHEN k = 'call' THEN 'missed' ELSE 'sent' END, now() - random() * interval '5 days',
         CASE WHEN k = 'call' THEN (random() * 300)::int END
  FROM generate_series(1, 3000) g,
       LATERAL (SELECT CASE WHEN random() < 0.5 THEN 'call' ELSE 'sms' END AS k, g AS gg) x,
       LATERAL (SELECT * FROM contacts WHERE x.gg > 0 ORDER BY random() LIMIT 1) c" >/dev/null

cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = bf
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:0
[sink.agg]
type = redis
url = $REDIS_URL
CONF
start_run() {
  "$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>>"$WORK/run.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
  wait_for 60 slot_active bf || { echo "not ok - walcast run did not start"; cat "$WORK/run.err"; exit 1; }
}
stop_run() {
  kill -TERM "$RUNP"
  local rc=0
  wait "$RUNP" || rc=$?
  check "walcast run: SIGTERM drains, exit 0" 0 $rc
}
backfill_under_load() {
  load 60 &
  LOAD=$!
  BG_PIDS+=("$LOAD")
  sleep 0.$((RANDOM % 10))
  local rc=0
  "$WALCAST" -c "$WORK/walcast.conf" backfill >"$WORK/backfill.out" 2>"$WORK/backfill.err" || rc=$?
  check "backfill ($1): exit 0" 0 $rc
  [ $rc = 0 ] || cat "$WORK/backfill.err"
  check_true "backfill ($1): ran while the load was still writing" kill -0 "$LOAD"
  start_run
  wait "$LOAD" || true
  HOUR_CUTOFF=$(sql -c "SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '46 hours', 'YYYYMMDDHH24')")
  wait_for 120 same_as_sql || echo "# Redis did not reach what SQL holds within 120 s"
  check_true "backfill ($1): the oracle is not empty ($(wc -l <"$WORK/sql.dump") lines)" [ "$(wc -l <"$WORK/sql.dump")" -gt 200 ]
  check "backfill ($1), then walcast run: every aggregate equals SQL's" "" \
    "$(diff "$WORK/sql.dump" "$WORK/redis.dump" | head -8)"
}

# 1. first install
check "no slot before the backfill" 0 "$(sql -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bf'")"
backfill_under_load "first install"
check_true "backfill created walcast run's slot" grep -q "created for walcast run" "$WORK/backfill.err"

# 3. refused while walcast run holds the slot
rc=0
"$WALCAST" -c "$WORK/walcast.conf" backfill >/dev/null 2>"$WORK/refused.err" || rc=$?
check "backfill while walcast run streams: refused" 1 $rc
check_true "backfill says why" grep -q "is in use: stop walcast run first" "$WORK/refused.err"

# 2. rebuild after damage
stop_run
org=$(sql -c "SELECT id FROM orgs ORDER BY id LIMIT 1")
day=$(rcli --raw KEYS "wc:{$org}:day:????????" | head -1)
rcli HINCRBY "$day" calls 1000 >/dev/null
rcli DEL "$(rcli --raw KEYS "wc:{$org}:contact:*" | grep -v times | head -1)" >/dev/null
rcli HSET "wc:{$org}:day:19990101" calls 5 >/dev/null
HOUR_CUTOFF=$(sql -c "SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '46 hours', 'YYYYMMDDHH24')")
damaged=yes
if same_as_sql; then damaged=no; fi
check "the damage shows in the comparison" yes $damaged
backfill_under_load "rebuild"
check_true "backfill used a temporary slot" grep -q "(temporary)" "$WORK/backfill.err"
check "the stray key is gone" 0 "$(rcli EXISTS "wc:{$org}:day:19990101")"
check "no temporary slot left" 0 "$(sql -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walcast_backfill%'")"
stop_run
summary

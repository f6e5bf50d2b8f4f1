#!/usr/bin/env bash
# The redis aggregates sink inside `walcast run`, exactly once, checked against SQL.
#
# A mixed load on events — inserts, updates that change status and duration or move an event to
# another day, contact or org, deletes, and contact erasures (every event of a contact deleted,
# then the contact) — while walcast is SIGKILLed at random moments (at most 8 times) and
# restarted, then Redis is frozen (SIGSTOP: slow, past command_timeout) and later shut down and
# started again from its AOF (down; walcast is also killed and restarted while Redis is away),
# all under load. At the end every aggregate key in Redis is
# compared with the same aggregates computed by SQL over the tables (the oracle), line for line:
# per org per day and per hour counters, per day contact volumes, per contact totals, last event
# time and event times. /readyz must say unready while Redis is down.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini
HTTP_PORT=$(kernel_free_port)

agg_setup agg "$REDIS_URL" "command_timeout = 2s" "reconnect_max = 1s"
start_run() {
  "$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>>"$WORK/run.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}

# ---- the run ---------------------------------------------------------------------------------
start_run
wait_for 60 slot_active agg || { echo "not ok - walcast run did not start"; cat "$WORK/run.err"; exit 1; }

# 1. SIGKILL at random moments under load
load 150 &
LOAD=$!
BG_PIDS+=("$LOAD")
kill_while_running "$LOAD" RUNP start_run 8 0 19
wait "$LOAD" || true
check_true "walcast run was killed mid-stream several times ($KILLS)" [ $KILLS -ge 3 ]

# 2. Redis frozen past command_timeout (slow), under load
load 40 &
LOAD=$!
BG_PIDS+=("$LOAD")
sleep 1
REDIS_PID=$(rcli INFO server | tr -d '\r' | sed -n 's/^process_id://p')
kill -STOP "$REDIS_PID"
sleep 4
readyz() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz"; }
frozen_code=$(readyz)
kill -CONT "$REDIS_PID"
check "/readyz: 503 while Redis does not answer" 503 "$frozen_code"
wait "$LOAD" || true

# 3. Redis down (shut down, AOF kept) under load, walcast restarted meanwhile, then Redis back
rcli CONFIG SET appendonly yes >/dev/null
wait_for 30 bash -c "redis-cli -p $RPORT INFO persistence | tr -d '\r' | grep -qx 'aof_rewrite_in_progress:0' &&
  redis-cli -p $RPORT INFO persistence | tr -d '\r' | grep -qx 'aof_rewrite_scheduled:0'"
load 40 &
LOAD=$!
BG_PIDS+=("$LOAD")
sleep 1
rcli SHUTDOWN >/dev/null 2>&1 || true
wait_for 30 bash -c "! redis-cli -p $RPORT PING >/dev/null 2>&1"
sleep 3
down_code=$(readyz)
check "/readyz: 503 while Redis is down" 503 "$down_code"
# walcast killed and started again while Redis is down: it must start, hold what it reads,
# stay unready, and catch up once Redis is back
kill -9 "$RUNP" 2>/dev/null || true
wait "$RUNP" 2>/dev/null || true
start_run
wait_for 60 slot_active agg || echo "# walcast run did not stream while Redis was down"
sleep 2
check_true "walcast run starts while Redis is down" kill -0 "$RUNP"
check "/readyz: 503 after a start without Redis" 503 "$(readyz)"
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly yes --daemonize no \
  --dir "$WALCAST_HARNESS_DIR" --logfile "$WALCAST_HARNESS_DIR/redis2.log" &
BG_PIDS+=("$!")
wait_for 30 bash -c "redis-cli -p $RPORT PING 2>/dev/null | grep -q PONG"
wait "$LOAD" || true
wait_for 60 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$HTTP_PORT/readyz)\" = 200 ]"
check "/readyz: 200 again once Redis is back" 200 "$(readyz)"

# ---- the comparison --------------------------------------------------------------------------
HOUR_CUTOFF=$(sql -c "SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '46 hours', 'YYYYMMDDHH24')")
wait_for 120 same_as_sql || echo "# Redis did not reach what SQL holds within 120 s"
check "load: every transaction committed" "" "$(grep -v 'erased\|^$' "$WORK/load.err" | head -3)"
check_true "the load erased contacts ($(grep -c erased "$WORK/load.out" || true))" grep -q erased "$WORK/load.out"
check_true "the oracle is not empty ($(wc -l <"$WORK/sql.dump") lines)" [ "$(wc -l <"$WORK/sql.dump")" -gt 200 ]
check "every aggregate in Redis equals SQL's" "" "$(diff "$WORK/sql.dump" "$WORK/redis.dump" | head -8)"
erased=$(sed -n 's/^erased //p' "$WORK/load.out" | paste -sd'|')
check "an erased contact leaves no trace in Redis" 0 \
  "$(rcli --raw EVAL "$REDIS_DUMP_LUA" 0 'wc:{*' | grep -cE "${erased:-none}" || true)"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics"
check "/metrics: connected to Redis" 1 "$(sed -n 's/^walcast_redis_connected{sink="agg"} //p' "$WORK/metrics")"
check_true "/metrics: rounds counted" grep -qE '^walcast_redis_round_trips_total\{sink="agg"\} [1-9]' "$WORK/metrics"
check_true "/metrics: round latency observed" grep -qE '^walcast_redis_round_latency_seconds_count\{sink="agg"\} [1-9]' "$WORK/metrics"
check "per-org watermarks exist" 3 "$(rcli --raw KEYS 'wc:{*}:wm' | wc -l)"
kill -TERM "$RUNP"
rc=0; wait "$RUNP" || rc=$?
check "walcast run: SIGTERM drains, exit 0" 0 $rc
for id in redis.down redis.reset redis.connect_failed redis.up redis.start_unreachable redis.watermarks pipeline.paused; do
  echo "# $id: $(grep -c "$id" "$WORK/run.err" || true)"
done
check "no straddle or fatal error" "" "$(grep -E 'STRADDLE|redis.failed' "$WORK/run.err" | head -2)"
summary

#!/usr/bin/env bash
# The redis aggregates sink and the change stream for edges (redis_stream sink) on a
# Sentinel-managed primary (redis+sentinel://, wait_replicas = 1) through a real failover under
# load: the harness's Redis is the primary, a replica and a
# sentinel are started here. Mid-load the replica is stopped (SIGSTOP) so that it falls behind,
# the primary is SIGKILLed, the replica resumes, and the sentinel promotes it: it lacks the last
# rounds the dead primary acknowledged. walcast must not have confirmed those (it waits for the
# replica: WAIT), so it sends them again to the new primary, which it finds through the sentinel,
# and confirms nothing more until the new primary has a replica again (the old one, restarted).
# At the end every aggregate on the new primary equals the same aggregates computed by SQL, and
# the stream holds each transaction's row changes exactly as PostgreSQL's own tally counts them
# (the oracles): nothing lost, nothing counted or streamed twice.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini
HTTP_PORT=$(kernel_free_port)
R2=$(kernel_free_port)
SPORT=$(kernel_free_port)

# the replica and the sentinel (quorum 1; the primary is down after 1 s without an answer)
mkdir -p "$WORK/r2" "$WORK/s"
redis-server --port "$R2" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/r2" \
  --replicaof 127.0.0.1 "$RPORT" --logfile "$WORK/r2.log" &
REPLICA=$!; BG_PIDS+=("$REPLICA")
cat >"$WORK/s/sentinel.conf" <<CONF
port $SPORT
bind 127.0.0.1
dir $WORK/s
sentinel monitor wc 127.0.0.1 $RPORT 1
sentinel down-after-milliseconds wc 1000
sentinel failover-timeout wc 5000
CONF
redis-server "$WORK/s/sentinel.conf" --sentinel --logfile "$WORK/sentinel.log" &
BG_PIDS+=("$!")
wait_for 30 bash -c "redis-cli -p $SPORT SENTINEL REPLICAS wc 2>/dev/null | grep -qx '127.0.0.1'" ||
  { echo "not ok - the sentinel does not know the replica"; exit 1; }

agg_setup sent "redis+sentinel://127.0.0.1:$SPORT/wc" "wait_replicas = 1" "wait_timeout = 200ms" \
  "command_timeout = 3s" "reconnect_max = 500ms"
KEY=wc:changes
printf '[sink.stream]\ntype = redis_stream\nurl = %s\nkey = %s\nwindow = 0\n%s\n' \
  "redis+sentinel://127.0.0.1:$SPORT/wc" "$KEY" \
  "wait_replicas = 1
wait_timeout = 200ms
command_timeout = 3s
reconnect_max = 500ms" >>"$WORK/walcast.conf"
tally_setup # PostgreSQL's tally of row changes per transaction (redis_lib.sh)
"$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>>"$WORK/run.err" &
RUNP=$!; BG_PIDS+=("$RUNP")
wait_for 60 slot_active sent || { echo "not ok - walcast run did not start"; cat "$WORK/run.err"; exit 1; }

load 120 &
LOAD=$!; BG_PIDS+=("$LOAD")
sleep 2
# the replica falls behind, then the primary dies with rounds only it had acknowledged
kill -STOP "$REPLICA"
sleep 1.5
PRIMARY=$(rcli INFO server | tr -d '\r' | sed -n 's/^process_id://p')
behind=$(grep -c redis.replicas_behind "$WORK/run.err" || true)
kill -9 "$PRIMARY"
kill -CONT "$REPLICA"
T0=$(date +%s%3N)
wait_for 60 bash -c "[ \"\$(redis-cli -p $R2 ROLE 2>/dev/null | head -1)\" = master ]" ||
  { echo "not ok - the sentinel did not promote the replica"; tail -20 "$WORK/sentinel.log"; }
echo "# the replica is the primary $(( $(date +%s%3N) - T0 )) ms after the kill"
check_true "walcast waited for the stopped replica (redis.replicas_behind: $behind)" [ "$behind" -ge 1 ]
# the new primary has no replica yet: walcast sends it rounds but confirms none until one is
# there — the old primary, started again as its replica (as Sentinel would make it)
OLDPORT=$RPORT
RPORT=$R2 # rcli, redis_dump: the new primary
sleep 2
check "/readyz: 503 while the new primary has no replica" 503 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz")"
mkdir -p "$WORK/r1"
redis-server --port "$OLDPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/r1" \
  --replicaof 127.0.0.1 "$R2" --logfile "$WORK/r1.log" &
BG_PIDS+=("$!")
wait "$LOAD" || true
wait_for 60 bash -c "grep -q 'redis.up .*redis=127.0.0.1:$R2 .*master of wc' '$WORK/run.err'" || true
check_true "walcast found the new primary through the sentinel" grep -q "redis.up .*redis=127.0.0.1:$R2 .*master of wc" "$WORK/run.err"

check "load: every transaction committed" "" "$(grep -v 'erased\|^$' "$WORK/load.err" | head -3)"
aggregates_check "on the new primary" 120 100
stream_check "$KEY" 60
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$HTTP_PORT/readyz)\" = 200 ]" || true
check "/readyz: 200 once the new primary has a replica" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz")"
kill -TERM "$RUNP"
rc=0; wait "$RUNP" || rc=$?
check "walcast run: SIGTERM drains, exit 0" 0 $rc
for id in redis.replicas_behind redis.replicas_caught_up redis.down redis.connect_failed redis.not_master redis.up; do
  echo "# $id: $(grep -c "$id" "$WORK/run.err" || true)"
done
check "no straddle or fatal error" "" "$(grep -E 'STRADDLE|redis.failed' "$WORK/run.err" | head -2)"
summary

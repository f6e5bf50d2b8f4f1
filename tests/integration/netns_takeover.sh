#!/usr/bin/env bash
# Hosts cut off, for real: PostgreSQL and Redis in one network namespace, two `walcast run` in
# two others (tests/netns/lib.sh), pipeline.checkpoint_store = postgres and a redis aggregates
# sink, under a mixed load. (a) kill -9 of the active instance: the other takes over; the killed
# one is started again (as a supervisor would) and waits as a standby. (b) the new active host is
# cut off (its bridge port down: packets lost, no RST): the standby takes over within 10 s,
# the cut-off instance stops by itself while still cut off (its store session gone), and once
# its link is back a restarted instance only waits. Oracles: SQL — every Redis aggregate equals
# an SQL recount over public.events (redis_lib.sh), the slot's walsender and the store's lock
# as PostgreSQL shows them. Exit 77 when `ip netns add` is not permitted.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../netns/lib.sh"

# the harness (PostgreSQL, Redis, this script's second half) in the servers' namespace
if [ "${1:-}" != --inner ]; then netns_test "$HERE/netns_takeover.sh" -- h1 h2; fi

source "$HERE/lib.sh"
source "$HERE/redis_lib.sh"
seed_init
SLOT=nstk
ms() { date +%s%3N; }
readyz() { # HOST: /readyz's status code as seen on that host
  ip netns exec "$(netns_name "$1")" curl -s -o /dev/null --max-time 2 -w '%{http_code}' \
    http://127.0.0.1:8080/readyz || true
}
ready_is() { [ "$(readyz "$1")" = "$2" ]; }
walsender() { sql -c "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '$SLOT'"; }

pg_store_setup "$SLOT" "redis://$NETNS_DB_ADDR:$RPORT/0"
# start_host HOST: `walcast run` on HOST (its own state_dir, /readyz on its 127.0.0.1:8080),
# PostgreSQL reached across the bridge; stderr appended to $WORK/HOST.err; sets RUNP
start_host() {
  PGHOST=$NETNS_DB_ADDR netns_exec "$1" "$WALCAST" -c "$WORK/walcast.conf" run --policy "$ROOT/deploy/policy.ini" \
    --set http.listen=127.0.0.1:8080 --set "pipeline.state_dir=$WORK/state-$1" >/dev/null 2>>"$WORK/$1.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}

start_host h1; A=$RUNP
wait_for 60 ready_is h1 200 || { echo "not ok - h1 did not become ready"; cat "$WORK/h1.err"; exit 1; }
start_host h2; B=$RUNP
wait_for 30 ready_is h2 503 || { echo "not ok - h2 does not wait as a standby"; cat "$WORK/h2.err"; exit 1; }
check "h1 streams from across the bridge (its walsender's client is 10.77.0.11)" "10.77.0.11" \
  "$(sql -c "SELECT host(client_addr) FROM pg_stat_replication WHERE pid = $(walsender)")"

load 160 &
LOAD=$!
BG_PIDS+=("$LOAD")

# (a) kill -9 of the active instance
sleep 2.$((RANDOM % 10))
t0=$(ms)
kill -9 "$A"; wait "$A" 2>/dev/null || true
wait_for 30 ready_is h2 200 || true
TA=$(( $(ms) - t0 ))
echo "# takeover after kill -9 of h1: $TA ms (bar: 10000)"
check_true "h2 took over within 10 s of the kill ($TA ms)" [ "$TA" -le 10000 ]
start_host h1; A=$RUNP # as a supervisor would
wait_for 30 ready_is h1 503 || true
check "h1, started again, waits as a standby" 503 "$(readyz h1)"

# (b) the active host cut off: no RST, no FIN, its sessions simply go silent
sleep 2.$((RANDOM % 10))
WB=$(walsender)
check "h2's walsender streams the slot" "10.77.0.12" \
  "$(sql -c "SELECT host(client_addr) FROM pg_stat_replication WHERE pid = $WB")"
t0=$(ms)
netns_cut h2
wait_for 30 ready_is h1 200 || true
TB=$(( $(ms) - t0 ))
echo "# takeover after h2 was cut off: $TB ms (bar: 10000)"
check_true "h1 took over within 10 s of the cut ($TB ms)" [ "$TB" -le 10000 ]
[ "$TB" -le 10000 ] ||
  { echo "# cut at $(date -u -d "@$((t0 / 1000))" +%T).$((t0 % 1000))"
    grep -h -E ' (run|checkpoint|source|pipeline|redis)\.' "$WORK/h1.err" | tail -12 | sed 's/^/# h1: /'
    grep -h -E ' (run|checkpoint|source|pipeline)\.' "$WORK/h2.err" | tail -4 | sed 's/^/# h2: /'; }
# h2's walsender ends by its own TCP user timeout (set by walcast on its socket) or, when it is
# still there once the store's lock is free, by h1 (run.walsender_ended); either way it is gone
check "h2's walsender is gone" 0 "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $WB")"
echo "# h2's walsender ended: $(grep -q "run.walsender_ended.*pid=$WB" "$WORK/h1.err" && echo "by h1" ||
  echo "by its TCP user timeout")"
check_true "the slot is h1's now (a walsender from 10.77.0.11)" \
  [ "$(sql -c "SELECT host(client_addr) FROM pg_stat_replication WHERE pid = $(walsender)")" = 10.77.0.11 ]
# the cut-off instance finds its store gone and stops, still cut off: nothing it holds goes out later
rc=0
wait_for 30 bash -c "! kill -0 $B 2>/dev/null" || true
kill -0 "$B" 2>/dev/null && rc=running || wait "$B" || rc=$?
check "h2 stopped by itself while cut off, exit 1" 1 "$rc"
check "h2 said why (run.store_lost)" 1 "$(grep -c 'run.store_lost' "$WORK/h2.err" || true)"
netns_heal h2
start_host h2; B=$RUNP # its link back, started again: only a standby
wait_for 30 ready_is h2 503 || tail -5 "$WORK/h2.err" | sed 's/^/# h2: /'
check "h2, back on the network, waits as a standby" 503 "$(readyz h2)"

wait "$LOAD" || true
check "load: every transaction committed" "" "$(grep -v 'erased\|^$' "$WORK/load.err" | head -3)"
aggregates_check "in Redis" 60 200
check "h2 is still a standby; one walcast streams the slot" "503 1" \
  "$(readyz h2) $(sql -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'walcast'")"
check "no batch straddled a watermark (no two writers)" 0 "$(cat "$WORK"/h*.err | grep -c STRADDLE || true)"
kill -TERM "$B"
rc=0; wait "$B" || rc=$?
check "h2 (a standby): SIGTERM, exit 0" 0 "$rc"
kill -TERM "$A"
rc=0; wait "$A" || rc=$?
check "h1: SIGTERM drains, exit 0" 0 "$rc"

# another consumer on the slot (pg_recvlogical, in the servers' namespace): the store's lock is
# free, but a standby never ends a walsender that is not walcast's
pg_recvlogical -d "$PGDATABASE" --slot "$SLOT" --start -o proto_version=1 -o publication_names=walcast \
  -f /dev/null 2>"$WORK/recvlogical.err" &
RL=$!
BG_PIDS+=("$RL")
wait_for 30 bash -c "[ \"\$(psql -X -At -c \"SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$SLOT'\")\" != '' ]" || true
WR=$(walsender)
start_host h2; B=$RUNP
wait_for 30 grep -q "run.standby.*not walcast's (application_name=pg_recvlogical" "$WORK/h2.err" ||
  { echo "# h2.err:"; tail -3 "$WORK/h2.err"; }
sleep 2.5 # two more polls, each finding the lock free
check "h2 waits beside another consumer and leaves its walsender alone" "503 $WR" "$(readyz h2) $(walsender)"
kill "$RL"; wait "$RL" 2>/dev/null || true
wait_for 30 ready_is h2 200 || true
check "h2 takes over once that consumer has gone" 200 "$(readyz h2)"
kill -TERM "$B"
rc=0; wait "$B" || rc=$?
check "h2: SIGTERM drains, exit 0" 0 "$rc"
echo "# figures: kill9_ms=$TA cut_ms=$TB"
summary

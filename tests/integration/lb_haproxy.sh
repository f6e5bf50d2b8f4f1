#!/usr/bin/env bash
# HAProxy in front of two `walcast run` on one slot (issue 12, "a load balancer in front"): the
# shipped deploy/haproxy/walcast.cfg, run as it is with this test's loopback ports, checks each
# instance's /readyz, so only the active one (not the standby, whose /readyz is 503) gets
# connections. The unmodified @supabase/realtime-js connects through HAProxy
# (tests/realtime-js/lb.test.mjs); PostgreSQL's RLS and masking views are the oracle:
#   - each user's client receives exactly the rows RLS shows that user, another org's user none;
#   - every WebSocket lands on the active instance (walcast_realtime_connections on both);
#   - kill -9 of the active instance under a write load: the standby takes over, HAProxy marks it
#     up and the old one down, the clients reconnect and rejoin by themselves through HAProxy with
#     their last walcast_position; each gets the walcast_resume answer and what it received, plus
#     a refetch as that user when the answer is the gap, equals the oracle, nothing twice; the
#     time from the kill to the first change received through HAProxy is printed.
source "$(dirname "$0")/lib.sh"
trap 'echo "# lb_haproxy.sh: line $LINENO failed: $BASH_COMMAND"' ERR
seed_init

JS=$ROOT/tests/realtime-js
CFG=$ROOT/deploy/haproxy/walcast.cfg
command -v haproxy >/dev/null || { echo "not ok - haproxy missing (Debian's haproxy, deploy/install-deps.sh)"; exit 1; }
rt_js_install "$JS" || exit 1

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(port); PB=$(port); PL=$(port); PS=$(port)
export WALCAST_AUTH_JWT_SECRET="lb-test-secret-with-enough-length-for-hs256-0123456789abcdef"
SLOT=lb_run
cat >"$WORK/walcast.conf" <<CONF
; both instances: one slot, one state directory (the second waits as a standby)
[replication]
slot = $SLOT
[pipeline]
state_dir = $WORK/state
; the feed, resumable (docs/protocol.md, "Resume"); no durable sink
[sink.live]
type = realtime
replay_bytes = 16MB
replay_seconds = 600
CONF
run_instance a "$PA"; A=$RUNP
wait_for 60 readyz_is "$PA" 200 || { echo "not ok - the first instance did not become ready"; cat "$WORK/a.err"; exit 1; }
run_instance b "$PB"; B=$RUNP
wait_for 60 readyz_is "$PB" 503 || { echo "not ok - the standby does not answer /readyz 503"; cat "$WORK/b.err"; exit 1; }

# HAProxy in the foreground (-db), the shipped file unchanged, logging to stderr as this user
WALCAST_LB_BIND=127.0.0.1:$PL WALCAST_LB_SERVER1=127.0.0.1:$PA WALCAST_LB_SERVER2=127.0.0.1:$PB \
  WALCAST_LB_STATS=127.0.0.1:$PS WALCAST_LB_LOG=stderr WALCAST_LB_USER=$(id -un) WALCAST_LB_GROUP=$(id -gn) \
  haproxy -db -f "$CFG" >"$WORK/haproxy.out" 2>"$WORK/haproxy.err" &
HAP=$!
BG_PIDS+=("$HAP")
# server_status NAME: walcast1/walcast2's status in HAProxy's CSV (UP, DOWN, ...)
server_status() {
  curl -s --max-time 5 "http://127.0.0.1:$PS/;csv" | awk -F, -v s="$1" '$1 == "walcast" && $2 == s { print $18 }'
}
lb_states() { echo "$(server_status walcast1) $(server_status walcast2)"; }
lb_is() { [ "$(lb_states)" = "$1" ]; }
wait_for 30 lb_is "UP DOWN" || true
check "HAProxy: the active instance UP, the standby DOWN (its /readyz is 503)" "UP DOWN" "$(lb_states)"
check "through HAProxy: /readyz answers the active instance's 200" 200 "$(readyz_code "$PL")"

export WALCAST_RT_HTTP=http://127.0.0.1:$PL WALCAST_LB_HTTP_A=http://127.0.0.1:$PA \
  WALCAST_LB_HTTP_B=http://127.0.0.1:$PB WALCAST_LB_STATS=http://127.0.0.1:$PS WALCAST_LB_PID_A=$A WALCAST_LB_SLOT=$SLOT \
  WALCAST_BIN=$WALCAST
node_part lb "$JS/lb.test.mjs"

kill -9 "$A" 2>/dev/null || true # the test killed it, unless it failed before that
wait "$A" 2>/dev/null || true
# B streams from A's last checkpoint (pipeline.starting resume=) or the slot's confirmed position,
# whichever is later; its replay buffer starts there
echo "# B took over: $(grep -o 'pipeline.starting.*' "$WORK/b.err" | tail -1); $(grep -o 'source.streaming.*' "$WORK/b.err" | tail -1)"
check "B: one takeover line" 1 "$(grep -c run.takeover "$WORK/b.err" || true)"
check "B: /readyz 200, HAProxy: walcast1 DOWN, walcast2 UP" "200 DOWN UP" "$(readyz_code "$PB") $(lb_states)"
check "B: no error lines" 0 "$(grep -c ' ERROR ' "$WORK/b.err" || true)"
check_true "HAProxy still running" kill -0 "$HAP"
kill -TERM "$B"
rc=0; wait "$B" || rc=$?
check "B: SIGTERM drains, exit 0" 0 "$rc"
kill -TERM "$HAP"
wait "$HAP" 2>/dev/null || true
echo "# HAProxy's log of the servers' state:"
grep -E 'is (UP|DOWN)' "$WORK/haproxy.err" | sed 's/^/#   /' || true
summary

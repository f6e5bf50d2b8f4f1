#!/usr/bin/env bash
# HAProxy in front of stateless edges, edges added and removed under load (issue 12). The shipped
# deploy/haproxy/walcast-edges.cfg, run as it is with this test's loopback ports and admin
# socket, and deploy/haproxy/walcast-lb-edge, the runtime API helper, as an operator runs them.
# One active `walcast run` publishes the stream (redis_stream sink, postgres checkpoint store, as
# edge.sh); edges A and B (the file's edge1, edge2) serve realtime-js users of three orgs and
# several roles through HAProxy (tests/realtime-js/lb_edges.test.mjs), under a write load:
#   - edge C, the file's edge3 (DOWN while not running), is started: HAProxy's checks bring it in
#     once its /readyz is 200; edge D, in no file, is added with `walcast-lb-edge add` (in
#     rotation only once a check passed); new clients land on each (walcast_realtime_connections);
#   - edge A is removed gracefully (`walcast-lb-edge remove edge1`, then SIGTERM: it drains, and
#     HAProxy deletes the server once its connections are gone), edge B is killed with kill -9;
#     their clients reconnect through the same HAProxy URL and rejoin with their last
#     walcast_position. The clients of a quiet org, whose positions were committed before C and
#     D started, land on C or D when B dies: they must be resumed there (step 4 of docs/edges.md:
#     a starting edge fills its replay buffer from the Redis stream's window);
#   - every client: exactly the rows PostgreSQL's RLS / masking view shows its user, nothing
#     missed, nothing twice; resumes and gaps are counted, and the times from each edge's end to
#     its clients' resume answers printed.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
source "$(dirname "$0")/edge_lib.sh"
trap 'echo "# lb_edges.sh: line $LINENO failed: $BASH_COMMAND"' ERR
seed_init

JS=$ROOT/tests/realtime-js
CFG=$ROOT/deploy/haproxy/walcast-edges.cfg
LBEDGE=$ROOT/deploy/haproxy/walcast-lb-edge
command -v haproxy >/dev/null || { echo "not ok - haproxy missing (Debian's haproxy, deploy/install-deps.sh)"; exit 1; }
command -v socat >/dev/null || { echo "not ok - socat missing (Debian's socat, deploy/install-deps.sh)"; exit 1; }
rt_js_install "$JS" || exit 1
export WALCAST_AUTH_JWT_SECRET="lb-edges-test-secret-with-enough-length-for-hs256-0123456789abcdef"
SLOT=lbedge_run
KEY=wc:lbedge
edge_confs "$SLOT" "$KEY"
PACT=$(kernel_free_port); PA=$(kernel_free_port); PB=$(kernel_free_port); PC=$(kernel_free_port)
PD=$(kernel_free_port); PL=$(kernel_free_port); PS=$(kernel_free_port)
SOCK=$WORK/haproxy.sock

edge_start active active.conf "$PACT"; ACT=$RUNP
wait_for 60 readyz_is "$PACT" 200 || { echo "not ok - the active instance did not become ready"; cat "$WORK/active.err"; exit 1; }
# an edge starts from the active instance's checkpoint: wait for the first one
sql -c "INSERT INTO orgs (name) VALUES ('lb edges warm-up')" >/dev/null
checkpointed() { [ "$(sql -c "SELECT count(*) FROM walcast.checkpoint_positions WHERE slot = '$SLOT' AND name = 'pipeline'")" = 1 ]; }
wait_for 60 checkpointed || { echo "not ok - the active instance did not checkpoint"; exit 1; }
edge_start edgeA edge.conf "$PA"; EA=$RUNP
edge_start edgeB edge.conf "$PB"; EB=$RUNP
wait_for 60 readyz_is "$PA" 200 || { echo "not ok - edge A did not become ready"; cat "$WORK/edgeA.err"; exit 1; }
wait_for 60 readyz_is "$PB" 200 || { echo "not ok - edge B did not become ready"; cat "$WORK/edgeB.err"; exit 1; }

# HAProxy in the foreground (-db), the shipped file unchanged, logging to stderr as this user;
# edge3 is C's address, C not started yet
export WALCAST_LB_SOCKET=$SOCK
WALCAST_LB_BIND=127.0.0.1:$PL WALCAST_LB_EDGE1=127.0.0.1:$PA WALCAST_LB_EDGE2=127.0.0.1:$PB \
  WALCAST_LB_EDGE3=127.0.0.1:$PC WALCAST_LB_STATS=127.0.0.1:$PS WALCAST_LB_LOG=stderr \
  WALCAST_LB_USER=$(id -un) WALCAST_LB_GROUP=$(id -gn) \
  haproxy -db -f "$CFG" >"$WORK/haproxy.out" 2>"$WORK/haproxy.err" &
HAP=$!
BG_PIDS+=("$HAP")
lb_states() { "$LBEDGE" list 2>/dev/null | awk '{ printf "%s%s=%s", (NR > 1 ? " " : ""), $1, $3 }'; }
lb_is() { [ "$(lb_states)" = "$1" ]; }
wait_for 30 lb_is "edge1=UP edge2=UP edge3=DOWN" || true
check "HAProxy: edges A and B UP, edge3 (C, not started) DOWN" "edge1=UP edge2=UP edge3=DOWN" "$(lb_states)"
# a runtime server inherits no default-server: walcast-lb-edge must give it the file's options
check "walcast-lb-edge adds servers with the file's default-server options" \
  "$(awk '$1 == "default-server" { $1 = ""; print substr($0, 2) }' "$CFG")" \
  "$(sed -n 's/^OPTS=\${WALCAST_LB_SERVER_OPTS:-\(.*\)}$/\1/p' "$LBEDGE")"

export WALCAST_RT_HTTP=http://127.0.0.1:$PL WALCAST_LB_STATS=http://127.0.0.1:$PS \
  WALCAST_LBE_HTTP_A=http://127.0.0.1:$PA WALCAST_LBE_HTTP_B=http://127.0.0.1:$PB \
  WALCAST_LBE_HTTP_C=http://127.0.0.1:$PC WALCAST_LBE_HTTP_D=http://127.0.0.1:$PD \
  WALCAST_LBE_PID_A=$EA WALCAST_LBE_PID_B=$EB WALCAST_LBEDGE=$LBEDGE WALCAST_BIN=$WALCAST \
  WALCAST_LBE_EDGE_ARGS="-c $WORK/edge.conf run --policy $ROOT/deploy/policy.ini" WALCAST_LBE_WORK=$WORK
# the test starts edges C and D itself (their pids in $WORK/edgeC.pid, edgeD.pid, their stderr in
# edgeC.err, edgeD.err) and stops them at its end
node_part lb_edges "$JS/lb_edges.test.mjs"
for e in C D; do
  [ -f "$WORK/edge$e.pid" ] && BG_PIDS+=("$(cat "$WORK/edge$e.pid")")
done

kill -TERM "$EA" 2>/dev/null || true # the test sent it, unless it failed before that
rc=0; wait "$EA" 2>/dev/null || rc=$?
check "edge A: SIGTERM drains, exit 0" 0 "$rc"
kill -9 "$EB" 2>/dev/null || true # the test killed it, unless it failed before that
wait "$EB" 2>/dev/null || true
for n in edgeC edgeD active; do
  check "$n: no error lines" 0 "$(grep -c ' ERROR ' "$WORK/$n.err" || true)"
done
check_true "HAProxy still running" kill -0 "$HAP"
kill -TERM "$ACT"
rc=0; wait "$ACT" || rc=$?
check "the active instance: SIGTERM drains, exit 0" 0 "$rc"
kill -TERM "$HAP"
wait "$HAP" 2>/dev/null || true
# (stderr has each line twice: HAProxy's own format and the syslog one)
echo "# HAProxy's log of the edges' state:"
grep -E '^\[(WARNING|NOTICE)\].*edge[0-9]' "$WORK/haproxy.err" | sed 's/^/#   /' || true
# HAProxy's own account of edge4 (walcast-lb-edge add): out of maintenance into drain, out of
# drain only after a check passed — never "UP/READY (leaving forced maintenance)", which would
# have sent it connections before any check
E4=$(grep -E '^\[(WARNING|NOTICE)\].*walcast_edges/edge4 ' "$WORK/haproxy.err" | awk '
  /leaving forced maintenance/ && !m { m = NR; s = ($0 ~ /UP\/DRAIN/) ? "drain" : "ready" }
  /Layer7 check passed/ && !p { p = NR }
  /leaving forced drain/ && !d { d = NR }
  END { print s, (p && d && p < d) ? "checked-first" : "unchecked" }')
check "HAProxy's log: edge4 left maintenance for drain, and drain only after a check passed" "drain checked-first" "$E4"
summary

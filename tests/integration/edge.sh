#!/usr/bin/env bash
# Stateless edges (issue 12; docs/edges.md): one active `walcast run` holds the slot and publishes
# the change stream through the redis_stream sink, its policy-state checkpoint in PostgreSQL
# (pipeline.checkpoint_store = postgres); two edges ([edge] enabled) read that stream and serve
# realtime-js clients. Oracles: PostgreSQL (its slots, locks and checkpoint tables; RLS and the
# masking views as each user, tests/realtime-js/edge.test.mjs).
#   - an edge with a durable sink is refused (exit 2, a clear message);
#   - the edges hold no slot, no advisory lock, write nothing to the checkpoint tables; /readyz
#     200 once caught up; walcast_role{role="edge"} 1; walcast_edge_* figures;
#   - users of three orgs and several roles on both edges, under phases of events with membership
#     and privacy-rule changes between them: each client receives exactly what RLS shows its user,
#     events.body decrypted by the edges (their own keys) where the view shows it;
#   - kill -9 of one edge under load: its clients reconnect to the other edge and resume, nothing
#     missed, nothing twice (edge.test.mjs);
#   - then kill -9 of the other one, and a third edge started after that (edge C, by
#     edge.test.mjs): every client resumes on it exactly — its replay buffer was filled from the
#     stream's window at its start (edge.replay_from_stream), so it reaches back to positions
#     committed before it started. Edge A starts in the window too; edge B at the confirmed
#     position (replay_from_stream = false), so that what it knows before the stream is the
#     checkpoint's state only.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
source "$(dirname "$0")/edge_lib.sh"
trap 'echo "# edge.sh: line $LINENO failed: $BASH_COMMAND"' ERR
seed_init

JS=$ROOT/tests/realtime-js
rt_js_install "$JS" || exit 1
export WALCAST_AUTH_JWT_SECRET="edge-test-secret-with-enough-length-for-hs256-0123456789abcdef"
SLOT=edge_run
KEY=wc:edge
metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
edge_confs "$SLOT" "$KEY"
PACT=$(kernel_free_port); PA=$(kernel_free_port); PB=$(kernel_free_port); PC=$(kernel_free_port)

# ---- refused configurations --------------------------------------------------------------------
cp "$WORK/edge.conf" "$WORK/bad.conf"
printf '[sink.file]\ntype = jsonl\npath = %s\n' "$WORK/bad.jsonl" >>"$WORK/bad.conf"
rc=0; "$WALCAST" -c "$WORK/bad.conf" run --policy "$ROOT/deploy/policy.ini" 2>"$WORK/bad.err" >/dev/null || rc=$?
check "an edge with a durable sink (jsonl): exit 2" 2 "$rc"
check_true "... saying only live sinks run on an edge" grep -q "sink file (type jsonl) is durable: an edge" "$WORK/bad.err"
rc=0; "$WALCAST" -c "$WORK/edge.conf" run --policy "$ROOT/deploy/policy.ini" --set http.listen=127.0.0.1:0 \
  2>"$WORK/early.err" >/dev/null || rc=$?
check "an edge before the active instance ever checkpointed: exit 1" 1 "$rc"
check_true "... saying the shared checkpoint holds no state yet" grep -q "holds no state for slot '$SLOT' yet" "$WORK/early.err"

# ---- the active instance, then two edges -------------------------------------------------------
edge_start active active.conf "$PACT"; ACT=$RUNP
wait_for 60 readyz_is "$PACT" 200 || { echo "not ok - the active instance did not become ready"; cat "$WORK/active.err"; exit 1; }
# the orgs, memberships and a privacy rule of edge.test.mjs, before the edges start: they know
# them from the shared checkpoint only (their stream starts at its position)
declare -A ID
edge_users_setup "$SLOT" edge adminX:X:admin memberX:X:member viewerX:X:viewer memberY:Y:member memberZ:Z:member \
  newbie rulePub
AFTER=$EDGE_AFTER
export EDGE_TEST_IDS=$EDGE_IDS
GEN=$(sql -c "SELECT generation FROM walcast.checkpoint_slots WHERE slot = '$SLOT'")
CKPT_ROWS=$(sql -c "SELECT (SELECT count(*) FROM walcast.checkpoint_log) + (SELECT count(*) FROM walcast.checkpoint_base)")
# the edges decrypt events.body with their own keys (the active instance, started without any,
# publishes the ciphertext); edge.test.mjs encrypts with the same file
install -m 600 "$ROOT/tests/fixtures/keys/test.keys" "$WORK/keys"
export WALCAST_KEYS_FILE=$WORK/keys
edge_start edgeA edge.conf "$PA"; EA=$RUNP
edge_start edgeB edge.conf "$PB" --set edge.replay_from_stream=false; EB=$RUNP
wait_for 60 readyz_is "$PA" 200 || { echo "not ok - edge A did not become ready"; cat "$WORK/edgeA.err"; exit 1; }
wait_for 60 readyz_is "$PB" 200 || { echo "not ok - edge B did not become ready"; cat "$WORK/edgeB.err"; exit 1; }
check "edges: /readyz 200 once caught up" "200 200" "$(readyz_code "$PA") $(readyz_code "$PB")"
check "edges: walcast_role{role=\"edge\"} 1" "1 1" "$(metric "$PA" 'walcast_role{role="edge"}') $(metric "$PB" 'walcast_role{role="edge"}')"
check "edges: walcast_edge_caught_up 1" "1 1" "$(metric "$PA" walcast_edge_caught_up) $(metric "$PB" walcast_edge_caught_up)"
check "the active instance: walcast_role{role=\"active\"} 1" 1 "$(metric "$PACT" 'walcast_role{role="active"}')"
check "one slot, held by the active instance's walsender only" "1 1" \
  "$(sql -c "SELECT count(*), count(*) FILTER (WHERE active) FROM pg_replication_slots" | tr '|' ' ')"
check "one advisory lock on the checkpoint store (the active instance's)" 1 \
  "$(sql -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")"
check "the edges took no generation of the checkpoint's slot row" "$GEN" \
  "$(sql -c "SELECT generation FROM walcast.checkpoint_slots WHERE slot = '$SLOT'")"
check_true "edges: the policy state from the shared checkpoint, the stream from its position" \
  grep -q "run.edge.*read from the shared checkpoint" "$WORK/edgeA.err"
# the state as of P: the memberships and the rule above, which are not in the stream after P
LOADED=$(grep -o 'policy state loaded from the checkpoint as of [^ ]* ([0-9]* rows)' "$WORK/edgeB.err" | grep -o '[0-9]* rows' | cut -d' ' -f1)
check_true "edge B: the policy state loaded from the checkpoint holds the test's rows (${LOADED:-none} rows >= 6)" [ "${LOADED:-0}" -ge 6 ]
RESUME=$(grep -o 'edge.start .* resume=[0-9A-F/]*' "$WORK/edgeB.err" | head -1 | sed 's/.*resume=//')
check "edge B: the stream read from past those rows' commits (resume=${RESUME:-?} >= $AFTER)" t \
  "$(sql -c "SELECT '${RESUME:-0/0}'::pg_lsn >= '$AFTER'::pg_lsn")"
check_true "edges: the relation cache seeded from the catalog" grep -q "edge.relations.*seeded" "$WORK/edgeB.err"

check_true "edge A: started in the stream's window, before the confirmed position" \
  grep -q "run.edge.*the replay buffer reaches back to there" "$WORK/edgeA.err"

# edge C is started by edge.test.mjs once A and B are dead: this command line, its pid in a file
printf '%s\n' "$WALCAST" -c "$WORK/edge.conf" run --policy "$ROOT/deploy/policy.ini" \
  --set "http.listen=127.0.0.1:$PC" --set "pipeline.state_dir=$WORK/edgeC-state" >"$WORK/edgeC.argv"
edge_c_cleanup() { [ -s "$WORK/edgeC.pid" ] && kill -9 "$(cat "$WORK/edgeC.pid")" 2>/dev/null; wc_cleanup_bg; }
trap edge_c_cleanup EXIT
export WALCAST_RT_HTTP=http://127.0.0.1:$PA EDGE_TEST_HTTP_A=http://127.0.0.1:$PA \
  EDGE_TEST_HTTP_B=http://127.0.0.1:$PB EDGE_TEST_HTTP_C=http://127.0.0.1:$PC EDGE_TEST_PID_A=$EA \
  EDGE_TEST_PID_B=$EB EDGE_TEST_C_ARGV=$WORK/edgeC.argv EDGE_TEST_C_PID=$WORK/edgeC.pid \
  EDGE_TEST_C_ERR=$WORK/edgeC.err
node_part edge "$JS/edge.test.mjs"

for p in "$EA" "$EB"; do # the test killed them, unless it failed before that
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
done
EC=$(cat "$WORK/edgeC.pid" 2>/dev/null || echo 0)
ENTRIES=$(metric "$PC" walcast_edge_entries_read_total)
check_true "edge C: walcast_edge_entries_read_total > 0 ($ENTRIES)" [ "${ENTRIES:-0}" -gt 0 ]
check "edge C: walcast_edge_stream_lag_bytes 0 at rest" 0 "$(wait_for 10 bash -c "[ \"\$(curl -s http://127.0.0.1:$PC/metrics | awk '\$1 == \"walcast_edge_stream_lag_bytes\" { print \$2 }')\" = 0 ]" && echo 0)"
check "the edges wrote nothing to the checkpoint tables (generation unchanged)" "$GEN" \
  "$(sql -c "SELECT generation FROM walcast.checkpoint_slots WHERE slot = '$SLOT'")"
check "edges B and C: no error lines" "0 0" "$(grep -c ' ERROR ' "$WORK/edgeB.err" || true) $(grep -c ' ERROR ' "$WORK/edgeC.err" || true)"
check "the active instance: no error lines" 0 "$(grep -c ' ERROR ' "$WORK/active.err" || true)"
echo "# checkpoint rows before the edges: $CKPT_ROWS; edge C read $ENTRIES entries"
kill -TERM "$EC" 2>/dev/null || true
wait_for 20 grep -q "run.stopped" "$WORK/edgeC.err" || true
check_true "edge C: SIGTERM drains, exit 0 (run.stopped exit=0)" grep -q "run.stopped.*exit=0" "$WORK/edgeC.err"
kill -TERM "$ACT"
rc=0; wait "$ACT" || rc=$?
check "the active instance: SIGTERM drains, exit 0" 0 "$rc"
summary

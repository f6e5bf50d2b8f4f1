#!/usr/bin/env bash
# `walcast run` against a real PostgreSQL, with two jsonl sinks (everything, and one member's
# view through the policy), PostgreSQL as the oracle:
#
#  1. under a load of events in transactions of 1 to 2000 rows, the daemon is killed with
#     SIGKILL at random moments and restarted, the walsender is terminated mid-stream once and
#     PostgreSQL restarted once: the bypass feed holds every committed event exactly once, in
#     commit order; the member's feed exactly the events RLS shows that member;
#  2. the policy state across kill -9: the member is removed from the org and the daemon is
#     killed right after; events inserted after the removal never reach the member after the
#     restart (the restarted daemon judges with the state of its resume point, not today's and
#     not an older one), while the bypass feed gets them;
#  3. SIGTERM under load: exit 0, nothing lost or repeated when the next run completes the feed;
#  4. SIGHUP with a broken file keeps running (config.reload_refused), with a good one reloads.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"
trap 'echo "# run.sh: line $LINENO failed: $BASH_COMMAND"' ERR
seed_init
ROWS=${RUN_ROWS:-8000}
POLICY=$ROOT/deploy/policy.ini
CONF=$WORK/run.conf

as_user() {
  sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}'; $2"
}
org=$(sql -c "INSERT INTO orgs (name) VALUES ('run') RETURNING id")
u=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$org', '$u', 'viewer')"

write_conf() { # extra line for [pipeline]
  cat >"$CONF" <<EOF
[replication]
slot = run_slot
[pipeline]
state_dir = $WORK/state
drain_timeout = 10s
$1
[http]
listen = 127.0.0.1:0
[sink.all]
type = jsonl
path = $WORK/all.jsonl
tables = events
[sink.member]
type = jsonl
path = $WORK/member.jsonl
as = $u
tables = events
EOF
}
write_conf ""

# events numbered by duration_s: commit order is numeric order (the load is serial). Mixed: each
# batch also updates the previous batch's last event and adds or removes other members of the
# org (policy rows that go through the checkpoint).
ev_stmt() {
  echo "INSERT INTO events (org_id, kind, direction, status, duration_s, from_number)
        SELECT '$org', 'call', 'inbound', 'b$3', g, '+3361234' || g FROM generate_series($1, $2) g;
        UPDATE events SET status = 'u$3' WHERE org_id = '$org' AND duration_s = $1 - 1;
        INSERT INTO org_roles (org_id, user_id, role) VALUES ('$org', gen_random_uuid(), 'member');
        DELETE FROM org_roles WHERE org_id = '$org' AND user_id <> '$u' AND $3 % 3 = 0
          AND user_id = (SELECT user_id FROM org_roles WHERE org_id = '$org' AND user_id <> '$u' ORDER BY user_id LIMIT 1)"
}
PID=
start_run() { # the daemon's pid in PID (a child of this shell: wait works)
  "$WALCAST" -c "$CONF" run --policy "$POLICY" >/dev/null 2>>"$WORK/run.err" &
  PID=$!
  BG_PIDS+=("$PID")
}
kill9() { kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
slot_past() { [ "$(sql -c "SELECT coalesce(confirmed_flush_lsn >= '$1', false) FROM pg_replication_slots WHERE slot_name = 'run_slot'")" = t ]; }
ids() { jq -r 'select(.action == "insert") | .new.duration_s' "$1"; }
updates() { jq -r 'select(.action == "update") | .new.duration_s' "$1"; }

# ---- 1. kill -9, walsender terminated, PostgreSQL restarted -------------------------------------
start_run; p=$PID
wait_for 30 slot_active run_slot || { echo "walcast run did not start:"; cat "$WORK/run.err"; exit 1; }
kill9 "$p"

load_batches "$ROWS" ev_stmt &
LOAD=$!
BG_PIDS+=("$LOAD")
kills=0 terminated=no restarted=no
# Until the load is done and every fault has been injected at least once: on a fast machine the
# load can end before the fourth restart, and the faults then land while walcast drains it.
while kill -0 "$LOAD" 2>/dev/null || [ $kills -lt 4 ] || [ $restarted = no ]; do
  start_run; p=$PID
  sleep "0.$((RANDOM % 10))"
  sleep 0.3
  if [ $terminated = no ] && [ $kills -ge 1 ]; then
    sql -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'run_slot' AND active" >/dev/null || true
    terminated=yes
    sleep 0.5
  elif [ $restarted = no ] && [ $kills -ge 3 ]; then
    harness_pg_restart immediate
    restarted=yes
    sleep 0.5
  fi
  kill9 "$p"
  kills=$((kills + 1))
done
wait "$LOAD"
echo "# killed $kills times, walsender terminated: $terminated, PostgreSQL restarted: $restarted"

RC=0
finish() { # runs until the slot is past the current WAL position, then SIGTERM; exit code in RC
  local end p
  end=$(current_lsn)
  sql -c "SELECT pg_logical_emit_message(false, 'run-test', 'end')" >/dev/null
  start_run; p=$PID
  # streaming first: a SIGTERM before walcast has set up its signal handling ends it by default
  # (exit 143) — the slot may already be past END when nothing was written since the last run
  wait_for 60 slot_active run_slot || echo "# walcast run did not start streaming"
  wait_for 120 slot_past "$end" || echo "# the slot did not reach $end"
  kill -TERM "$p" 2>/dev/null || true
  RC=0
  wait "$p" || RC=$?
}
finish
check "final run drains and exits 0" 0 "$RC"
sql -c "SELECT duration_s FROM events ORDER BY duration_s" >"$WORK/all.want"
ids "$WORK/all.jsonl" >"$WORK/all.got"
check_sequence "bypass feed" "$WORK/all.got" "$WORK/all.want"
sql -c "SELECT duration_s FROM events WHERE status LIKE 'u%' ORDER BY duration_s" >"$WORK/upd.want"
updates "$WORK/all.jsonl" >"$WORK/upd.got"
check_sequence "bypass feed, updates" "$WORK/upd.got" "$WORK/upd.want"
check_true "members came and went during the load ($(sql -c "SELECT count(*) FROM org_roles WHERE org_id = '$org'") now)" \
  [ "$(sql -c "SELECT count(*) FROM org_roles WHERE org_id = '$org'")" -gt 2 ]
as_user "$u" "SELECT duration_s FROM events ORDER BY duration_s" >"$WORK/member.want"
ids "$WORK/member.jsonl" >"$WORK/member.got"
check_true "the member sees the org's events ($(wc -l <"$WORK/member.want"))" [ "$(wc -l <"$WORK/member.want")" -gt 0 ]
check_sequence "member feed" "$WORK/member.got" "$WORK/member.want"
[ $FAILED -eq 0 ] || { echo "# run.err:"; tail -40 "$WORK/run.err" | sed 's/^/# /'; summary; }

# ---- 2. a member removed just before the kill never sees a change after it ----------------------
start_run; p=$PID
wait_for 30 slot_active run_slot
n0=$((ROWS + 1))
sql -c "$(ev_stmt $n0 $((n0 + 9)) 100001)"
sql -c "DELETE FROM org_roles WHERE org_id = '$org' AND user_id = '$u'"
kill9 "$p"
sql -c "$(ev_stmt $((n0 + 10)) $((n0 + 29)) 100002)" # also updates event n0 + 9
check "after the removal, RLS shows the member nothing" "0" \
  "$(as_user "$u" "SELECT count(*) FROM events WHERE duration_s > $((n0 + 9))")"
finish
check "removal run exits 0" 0 "$RC"
check "events inserted after the removal never reach the member" "" \
  "$(jq -r "select(.new.duration_s > $((n0 + 9))) | .new.duration_s" "$WORK/member.jsonl" | head -3 | paste -sd,)"
check "nor does the update made after it of an event the member saw" "" \
  "$(jq -r "select(.action == \"update\" and .new.duration_s == $((n0 + 9))) | .new.status" "$WORK/member.jsonl")"
check "the ones inserted before it do, once" "10" \
  "$(jq -r "select(.new.duration_s >= $n0) | .new.duration_s" "$WORK/member.jsonl" | sort -u | wc -l)"
sql -c "SELECT duration_s FROM events ORDER BY duration_s" >"$WORK/all.want"
ids "$WORK/all.jsonl" >"$WORK/all.got"
check_sequence "bypass feed after the removal" "$WORK/all.got" "$WORK/all.want"

# ---- 3. SIGTERM under load ------------------------------------------------------------------------
n1=$((n0 + 30))
ev_big() { ev_stmt $((n1 + $1 - 1)) $((n1 + $2 - 1)) "$3"; }
load_batches 3000 ev_big &
LOAD=$!
BG_PIDS+=("$LOAD")
start_run; p=$PID
wait_for 30 slot_active run_slot
sleep 1
t0=$SECONDS
kill -TERM "$p"
rc=0; wait "$p" || rc=$?
check "SIGTERM under load: exit 0" 0 "$rc"
check_true "SIGTERM: drained within the drain timeout ($((SECONDS - t0)) s)" [ $((SECONDS - t0)) -le 15 ]
wait "$LOAD"
finish
check "after SIGTERM: final run exits 0" 0 "$RC"
sql -c "SELECT duration_s FROM events ORDER BY duration_s" >"$WORK/all.want"
ids "$WORK/all.jsonl" >"$WORK/all.got"
check_sequence "bypass feed after SIGTERM" "$WORK/all.got" "$WORK/all.want"

# ---- 4. SIGHUP ------------------------------------------------------------------------------------
start_run; p=$PID
wait_for 30 slot_active run_slot
echo "this is [not a config" >>"$CONF"
kill -HUP "$p"
wait_for 10 grep -q config.reload_refused "$WORK/run.err"
check_true "a broken file is refused, walcast keeps running" kill -0 "$p"
write_conf "max_pending = 32MB"
kill -HUP "$p"
wait_for 10 grep -q "config.reloaded.*pipeline.max_pending" "$WORK/run.err"
check_true "a good file is reloaded" grep -q "config.reloaded.*pipeline.max_pending" "$WORK/run.err"
kill -TERM "$p"
rc=0; wait "$p" || rc=$?
check "stop after reload: exit 0" 0 "$rc"
[ $FAILED -eq 0 ] || { echo "# run.err:"; tail -40 "$WORK/run.err" | sed 's/^/# /'; }
summary

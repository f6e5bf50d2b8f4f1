#!/usr/bin/env bash
# SIGTERM while `walcast run` is still starting up is a clean stop, not a kill: at each point of
# startup the daemon exits 0 within the drain timeout, and leaves no temporary slot pinning WAL.
# The points, each made to last by PostgreSQL itself:
#
#  A. right after walcast has taken over SIGTERM (config, policy, keys, state directory);
#  B. while it connects for the replica-identity check, the postmaster frozen (SIGSTOP): a
#     connection that never answers, like a cut network;
#  C. while CREATE_REPLICATION_SLOT waits for a transaction that was open before it (a temporary
#     and a durable slot: afterwards no slot of walcast's is left, the creation was abandoned);
#  D. while the policy state is loaded from a new slot's exported snapshot (200,000 memberships):
#     the drain lets the load finish, so the next start resumes from the checkpoint instead of
#     judging by today's memberships (pipeline.state_current).
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"
trap 'echo "# startup_signal.sh: line $LINENO failed: $BASH_COMMAND"' ERR
POLICY=$ROOT/deploy/policy.ini
DRAIN_S=10

write_conf() { # SLOT TEMPORARY(true|false)
  cat >"$WORK/$1.conf" <<EOF
[replication]
slot = $1
temporary_slot = $2
[pipeline]
state_dir = $WORK/state-$1
drain_timeout = ${DRAIN_S}s
[http]
listen = 127.0.0.1:0
[sink.all]
type = jsonl
path = $WORK/$1.jsonl
tables = events
EOF
}
PID=
start_run() { # SLOT: the daemon's pid in PID, its log in $WORK/SLOT.err
  "$WALCAST" -c "$WORK/$1.conf" run --policy "$POLICY" >/dev/null 2>>"$WORK/$1.err" &
  PID=$!
  BG_PIDS+=("$PID")
}
# walcast has taken SIGTERM over: blocked (startup) or caught (its handler installed)
term_taken() {
  local blk cgt
  blk=$(awk '/^SigBlk:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  cgt=$(awk '/^SigCgt:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$blk" ] && [ $(((0x$blk | 0x$cgt) & 0x4000)) -ne 0 ]
}
# stop_within NAME PID: SIGTERM, then exit 0 within the drain timeout (plus slack for a busy host)
stop_within() {
  local name=$1 pid=$2 t0 rc
  t0=$SECONDS
  kill -TERM "$pid"
  for _ in $(seq 1 $(((DRAIN_S + 5) * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then rc=hung; kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  else rc=0; wait "$pid" || rc=$?; fi
  check "$name: SIGTERM exits 0" 0 "$rc"
  check_true "$name: within the drain timeout ($((SECONDS - t0)) s)" [ $((SECONDS - t0)) -le $((DRAIN_S + 2)) ]
}
slots_of() { sql -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1'"; }
temp_slots() { sql -c "SELECT count(*) FROM pg_replication_slots WHERE temporary"; }
no_temp_slot() { [ "$(temp_slots)" = 0 ]; }
waiting_walsender() {
  [ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'
                AND application_name = 'walcast' AND wait_event_type = 'Lock'")" -ge 1 ]
}

# ---- A. right after walcast took SIGTERM over, and a little later --------------------------------
write_conf st_a false
for delay in 0 0.05 0.2; do
  start_run st_a
  wait_for 10 term_taken "$PID" || true
  sleep "$delay"
  stop_within "A (+${delay}s)" "$PID"
done
check "A: no temporary slot" 0 "$(temp_slots)"

# ---- B. the postmaster frozen: the first connection never answers --------------------------------
write_conf st_b false
pm=$(head -1 "$WALCAST_PGDATA/postmaster.pid")
kill -STOP "$pm"
start_run st_b; p=$PID
sleep 1.5
stop_within "B (connecting, server silent)" "$p"
kill -CONT "$pm"
wait_for 30 sql -c "SELECT 1" >/dev/null
check "B: no slot made" 0 "$(slots_of st_b)"

# ---- C. CREATE_REPLICATION_SLOT waits for an open transaction (temporary, then durable slot) --
for temp in true false; do
  write_conf st_c_$temp $temp
  psql -X -q -c "BEGIN" -c "SELECT txid_current()" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
  holder=$!
  BG_PIDS+=("$holder")
  wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%' AND state = 'active'\")\" = 1 ]"
  start_run st_c_$temp; p=$PID
  if wait_for 30 waiting_walsender; then
    stop_within "C temporary=$temp (slot creation waiting)" "$p"
  else
    check "C temporary=$temp: walcast's walsender waits for the open transaction" waiting yes
    kill -9 "$p"; wait "$p" 2>/dev/null || true
  fi
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'" >/dev/null
  check_true "C temporary=$temp: no temporary slot left pinning WAL" wait_for 20 no_temp_slot
  sleep 1 # the walsender would complete the creation now, were it still there
  check "C temporary=$temp: the slot was never made" 0 "$(slots_of st_c_$temp)"
done

# ---- D. the policy state being loaded from the new slot's snapshot -------------------------------
org=$(sql -c "INSERT INTO orgs (name) VALUES ('startup') RETURNING id")
sql -c "INSERT INTO org_roles (org_id, user_id, role) SELECT '$org', gen_random_uuid(), 'member' FROM generate_series(1, 200000)"
write_conf st_d false
start_run st_d; p=$PID
wait_for 60 grep -qs source.slot_created "$WORK/st_d.err" || echo "# D: no slot_created line"
stop_within "D (loading the policy state)" "$p"
if grep -n 'pipeline.draining\|pipeline.state_loaded' "$WORK/st_d.err" | head -1 | grep -q draining; then
  echo "# D: SIGTERM landed during the state load"
else
  echo "# D: the state load was over before SIGTERM landed (the point was missed on this run)"
fi
check "D: nothing failed" "" "$(grep -o 'ERROR [a-z_.]*' "$WORK/st_d.err" | head -3 | paste -sd,)"
# the next start resumes with the state stored for the slot, not today's memberships
start_run st_d; p=$PID
wait_for 60 bash -c "[ \"\$(psql -XAtc \"SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'st_d' AND active\")\" = 1 ]" ||
  echo "# D: the restart did not stream"
stop_within "D restart" "$p"
check "D: the restart resumes from the checkpoint's state" 0 "$(grep -c pipeline.state_current "$WORK/st_d.err" || true)"
sql -c "SELECT pg_drop_replication_slot('st_d')" >/dev/null

[ $FAILED -eq 0 ] || for f in "$WORK"/st_*.err; do echo "# $f:"; tail -15 "$f" | sed 's/^/# /'; done
summary

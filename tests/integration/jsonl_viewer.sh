#!/usr/bin/env bash
# One user's feed through the pipeline and the jsonl sink (tests/integration/jsonl_run.c with a
# policy: as `walcast run` with [sink.NAME] type = jsonl, as = USER), killed with SIGKILL at
# random moments while memberships change under load, against `walcast tail --as` on the same
# WAL (the path rls_equivalence.sh and txn_privacy.sh prove against PostgreSQL's RLS): the two
# files must be byte for byte the same. That holds only if the sink writes every transaction
# exactly once across the kills AND the restarted pipeline judges with exactly the policy state
# of its resume point (from the checkpoint store in FILE.state/, never today's memberships).
source "$(dirname "$0")/lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini
RUN=$(dirname "$WALCAST")/jsonl_run
[ -x "$RUN" ] || { echo "not ok - $RUN is not built"; exit 1; }

o1=$(sql -c "INSERT INTO orgs (name) VALUES ('jsonl viewer one') RETURNING id")
o2=$(sql -c "INSERT INTO orgs (name) VALUES ('jsonl viewer two') RETURNING id")
u=$(sql -c "SELECT gen_random_uuid()")
other=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1', '$u', 'viewer'), ('$o2', '$other', 'owner')" >/dev/null

"$WALCAST" tail --as "$u" --policy "$POLICY" -S jv_tail -o "$WORK/tail.jsonl" >/dev/null 2>>"$WORK/tail.err" &
TAILP=$!
BG_PIDS+=("$TAILP")
# JSONL_FLUSH_BYTES=1: every transaction is made durable inside its commit, the sink reporting
# progress there (as past flush_bytes): the checkpoint sync that follows must already hold the
# transaction's policy rows, or a kill before the next sync restarts with the state before it.
start_pipe() { # [UNTIL]
  JSONL_FLUSH_BYTES=1 JSONL_AS=$u JSONL_POLICY=$POLICY "$RUN" pgoutput jv_pipe walcast "$WORK/pipe.jsonl" "" ${1:-} \
    >/dev/null 2>>"$WORK/pipe.err" &
  PIPE=$!
  BG_PIDS+=("$PIPE")
}
start_pipe
wait_for 30 slot_active jv_tail && wait_for 30 slot_active jv_pipe ||
  { echo "not ok - the feeds did not start"; cat "$WORK/tail.err" "$WORK/pipe.err"; exit 1; }

# The load: events of both orgs, updates and deletes of earlier ones, and U's membership in o1
# changing (promoted, demoted in the same transaction as events, removed, added back).
load() {
  local i role
  for i in $(seq 1 40); do
    role=""
    case $i in
      8) role="UPDATE org_roles SET role = 'member' WHERE org_id = '$o1' AND user_id = '$u';" ;;
      16) role="UPDATE org_roles SET role = 'viewer' WHERE org_id = '$o1' AND user_id = '$u';" ;;
      24) role="DELETE FROM org_roles WHERE org_id = '$o1' AND user_id = '$u';" ;;
      32) role="INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1', '$u', 'admin');" ;;
    esac
    sql -c "BEGIN;
      INSERT INTO events (org_id, kind, direction, status, from_number, to_number)
        SELECT '$o1', 'call', 'inbound', 'b$i-' || g, '+1555000' || g, '+1666000' || g FROM generate_series(1, 30) g;
      $role
      INSERT INTO events (org_id, kind, direction, status, from_number)
        SELECT '$o2', 'sms', 'outbound', 'b$i-' || g, '+1777000' || g FROM generate_series(1, 10) g;
      UPDATE events SET status = status || '!' WHERE status LIKE 'b$((i - 1))-1%';
      DELETE FROM events WHERE status LIKE 'b$((i - 2))-2%';
      COMMIT;" >/dev/null
    sleep 0.05
  done
}
load &
LOAD=$!
BG_PIDS+=("$LOAD")
wait_for 60 test -s "$WORK/pipe.jsonl" || echo "# the pipeline wrote nothing yet"
kill_while_running "$LOAD" PIPE start_pipe
wait "$LOAD"
end=$(current_lsn)
kill -TERM "$PIPE" "$TAILP" 2>/dev/null || true
wait "$PIPE" "$TAILP" 2>/dev/null || true
rc=0; timeout 300 "$WALCAST" tail --as "$u" --policy "$POLICY" -S jv_tail -o "$WORK/tail.jsonl" --until-lsn "$end" \
  >/dev/null 2>>"$WORK/tail.err" || rc=$?
check "tail --as: final run exits 0" 0 $rc
rc=0; start_pipe "$end"; wait "$PIPE" || rc=$?
check "pipeline: final run exits 0" 0 $rc

check_true "the pipeline was killed mid-stream several times ($KILLS)" [ $KILLS -ge 3 ]
check_true "the restarted pipeline took its policy state from the checkpoint store" \
  grep -q 'state_loaded policy state loaded from the checkpoint' "$WORK/pipe.err"
check "the pipeline never judged with today's memberships" 0 "$(grep -c state_current "$WORK/pipe.err" || true)"
n=$(wc -l <"$WORK/tail.jsonl")
check_true "the feed has lines of o1 ($n)" [ "$n" -gt 100 ]
check "nothing of o2 in the feed" 0 "$(grep -c "$o2" "$WORK/tail.jsonl" || true)"
check "pipeline + jsonl sink == tail --as, byte for byte" "" "$(cmp "$WORK/pipe.jsonl" "$WORK/tail.jsonl" 2>&1)"
check "the state directory is private" 700 "$(stat -c %a "$WORK/pipe.jsonl.state")"
check "FILE is private" 600 "$(stat -c %a "$WORK/pipe.jsonl")"
summary

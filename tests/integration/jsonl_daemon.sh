#!/usr/bin/env bash
# `walcast run` with two jsonl sinks in one pipeline — [sink.audit] (every events row, unmasked)
# and [sink.alice] (as = U: what U may see) — SIGKILLed at random moments under a load that
# changes U's membership, restarted each time. The two sinks' positions differ, the pipeline
# resumes at the lower one, so each sink is offered transactions it already holds and must skip
# them. Oracles: audit's inserted ids minus its deleted ids are exactly the rows SQL holds, no line
# twice; alice's file is byte for byte what `walcast tail --as U` (uninterrupted, on its own slot)
# wrote for the same WAL. SIGTERM drains: exit 0, both files end at their checkpoints.
source "$(dirname "$0")/lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini

o1=$(sql -c "INSERT INTO orgs (name) VALUES ('daemon one') RETURNING id")
o2=$(sql -c "INSERT INTO orgs (name) VALUES ('daemon two') RETURNING id")
u=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1', '$u', 'viewer')" >/dev/null

cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = jd_run
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:$((20000 + RANDOM % 12000))
[sink.audit]
type = jsonl
path = $WORK/audit.jsonl
tables = events
[sink.alice]
type = jsonl
path = $WORK/alice.jsonl
as = $u
CONF
start_run() {
  "$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>>"$WORK/run.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}
"$WALCAST" tail --as "$u" --policy "$POLICY" -S jd_tail -o "$WORK/tail.jsonl" >/dev/null 2>>"$WORK/tail.err" &
TAILP=$!
BG_PIDS+=("$TAILP")
start_run
wait_for 30 slot_active jd_tail && wait_for 30 slot_active jd_run ||
  { echo "not ok - the feeds did not start"; cat "$WORK/tail.err" "$WORK/run.err"; exit 1; }

load() {
  local i role
  for i in $(seq 1 40); do
    role=""
    case $i in
      8) role="UPDATE org_roles SET role = 'member' WHERE org_id = '$o1' AND user_id = '$u';" ;;
      16) role="DELETE FROM org_roles WHERE org_id = '$o1' AND user_id = '$u';" ;;
      24) role="INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1', '$u', 'admin');" ;;
    esac
    sql -c "BEGIN;
      INSERT INTO events (org_id, kind, direction, status, from_number, to_number)
        SELECT '$o1', 'call', 'inbound', 'd$i-' || g, '+1555000' || g, '+1666000' || g FROM generate_series(1, 30) g;
      $role
      INSERT INTO events (org_id, kind, direction, status)
        SELECT '$o2', 'sms', 'outbound', 'd$i-' || g FROM generate_series(1, 10) g;
      UPDATE events SET status = status || '!' WHERE status LIKE 'd$((i - 1))-1%';
      DELETE FROM events WHERE status LIKE 'd$((i - 2))-2%';
      COMMIT;" >/dev/null
    sleep 0.05
  done
}
load &
LOAD=$!
BG_PIDS+=("$LOAD")
wait_for 60 test -s "$WORK/alice.jsonl" || echo "# nothing written yet"
kill_while_running "$LOAD" RUNP start_run
wait "$LOAD"
end=$(current_lsn)

# audit: inserted minus deleted ids = what SQL holds
sql -c "SELECT id FROM events WHERE org_id IN ('$o1', '$o2') ORDER BY id" >"$WORK/sql.ids"
audit_ids() {
  jq -r 'select(.action == "insert") | .new.id' "$WORK/audit.jsonl" | sort >"$WORK/ins.ids"
  jq -r 'select(.action == "delete") | .old.id' "$WORK/audit.jsonl" | sort >"$WORK/del.ids"
  comm -23 "$WORK/ins.ids" "$WORK/del.ids" >"$WORK/audit.ids"
  cmp -s "$WORK/audit.ids" "$WORK/sql.ids"
}
wait_for 120 audit_ids || echo "# audit did not catch up"
kill -TERM "$RUNP"
rc=0; wait "$RUNP" || rc=$?
check "walcast run: SIGTERM drains, exit 0" 0 $rc
kill -TERM "$TAILP" 2>/dev/null || true
wait "$TAILP" 2>/dev/null || true
rc=0; timeout 300 "$WALCAST" tail --as "$u" --policy "$POLICY" -S jd_tail -o "$WORK/tail.jsonl" --until-lsn "$end" \
  >/dev/null 2>>"$WORK/tail.err" || rc=$?
check "tail --as: final run exits 0" 0 $rc

check_true "walcast run was killed mid-stream several times ($KILLS)" [ $KILLS -ge 3 ]
check "audit: no line twice" "" "$(sort "$WORK/audit.jsonl" | uniq -d | head -2)"
audit_ids
check "audit: inserted minus deleted ids are what SQL holds ($(wc -l <"$WORK/sql.ids") rows)" "" \
  "$(diff "$WORK/audit.ids" "$WORK/sql.ids" | head -5)"
check "audit: only events" "events" "$(jq -r .table "$WORK/audit.jsonl" | sort -u | paste -sd,)"
check "alice == tail --as, byte for byte ($(wc -l <"$WORK/tail.jsonl") lines)" "" \
  "$(cmp "$WORK/alice.jsonl" "$WORK/tail.jsonl" 2>&1)"
check "nothing of o2 reaches alice" 0 "$(grep -c "$o2" "$WORK/alice.jsonl" || true)"
for f in audit alice; do
  check "$f: FILE ends at its checkpoint" "$(sed -n 's/^offset=//p' "$WORK/$f.jsonl.pos")" "$(stat -c %s "$WORK/$f.jsonl")"
  check "$f: FILE is private" 600 "$(stat -c %a "$WORK/$f.jsonl")"
done
summary

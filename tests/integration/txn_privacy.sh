#!/usr/bin/env bash
# Privacy judged per transaction (DESIGN.md, "equivalent to RLS"), against a real PostgreSQL and
# `walcast tail --as`, with PostgreSQL itself as the oracle (the masking views queried as each
# user just before and just after the transaction):
#
#  1. a transaction that adds U to an org together with many events is cut off mid-stream
#     (pg_terminate_backend of the walsender) and sent again: after U's membership is deleted,
#     U must not receive a new event of that org (the cut-off copy must leave no trace); the
#     same when tail loads today's state on an existing slot and then receives the older insert;
#  2. an event inserted and its handler's membership removed in one transaction, in both orders,
#     never reaches the handler; deleting an org (its roles cascade first) still sends the deletes
#     of its rows to the members who saw them; a roster re-inserted after a TRUNCATE in one
#     transaction is judged against the committed roster;
#  3. an UPDATE that hands a roster seat from C to B (new to the org) gives B the new row but
#     never C's old row; a member who saw C's row gets it.
source "$(dirname "$0")/lib.sh"
trap 'echo "# txn_privacy.sh: line $LINENO failed: $BASH_COMMAND"' ERR
POLICY=$ROOT/deploy/policy.ini
EVENTS=${TXN_PRIVACY_EVENTS:-300000}
export WALCAST_PRIVACY_TXN_MEMORY=${WALCAST_PRIVACY_TXN_MEMORY:-4MB} # spill early: progress is visible

uuid() { sql -c "SELECT gen_random_uuid()"; }
# as_user USER SQL: runs SQL as USER through RLS (authenticated + request.jwt.claims).
as_user() {
  sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}'; $2"
}
slot_past() { [ "$(sql -c "SELECT confirmed_flush_lsn >= '$2' FROM pg_replication_slots WHERE slot_name = '$1'")" = t ]; }
state_saved() { grep -q '^state=1' "$1.pos" 2>/dev/null; }

# start_tail NAME USER: `tail --as USER` on a new durable slot NAME writing $WORK/NAME.jsonl.
declare -A TAIL_PID
start_tail() {
  "$WALCAST" tail --as "$2" --policy "$POLICY" -S "$1" -o "$WORK/$1.jsonl" >/dev/null 2>>"$WORK/$1.err" &
  TAIL_PID[$1]=$!
  BG_PIDS+=($!)
  wait_for 30 slot_active "$1" && wait_for 30 state_saved "$WORK/$1.jsonl" ||
    { echo "tail $1 did not start:"; cat "$WORK/$1.err"; exit 1; }
}
# finish_tail NAME LSN: waits until the slot has confirmed LSN, then stops the tail.
finish_tail() {
  wait_for 180 slot_past "$1" "$2" || echo "# tail $1 did not reach $2"
  kill -TERM "${TAIL_PID[$1]}" 2>/dev/null || true
  wait "${TAIL_PID[$1]}" 2>/dev/null || true
}
# lines NAME TABLE ACTION: the ids (id, or org:user for org_roles) of that feed's lines.
lines() {
  local f=$WORK/$1.jsonl key='(.new // .old) | (.id // (.org_id + ":" + .user_id))'
  jq -r --arg t "$2" --arg a "$3" "select(.table == \$t and .action == \$a) | $key" "$f" | sort | paste -sd, -
}

# ---- 1. a cut-off transaction leaves no trace ---------------------------------------------------
o1=$(sql -c "INSERT INTO orgs (name) VALUES ('replayed') RETURNING id")
u=$(uuid)
start_tail txp_replay "$u"
# The tail's progress on the big transaction: bytes of its output file plus any spill file it
# holds open (walcast keeps a transaction until its commit, spilling past privacy.txn_memory).
progress() {
  local pid=${TAIL_PID[txp_replay]} n f
  n=$(stat -c %s "$WORK/txp_replay.jsonl")
  for f in /proc/"$pid"/fd/*; do
    case "$(readlink "$f" 2>/dev/null)" in *deleted*|*walcast*txn*) n=$((n + $(stat -L -c %s "$f" 2>/dev/null || echo 0))) ;; esac
  done
  echo "$n"
}
base=$(progress)
sql <<SQL
BEGIN;
INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1', '$u', 'viewer');
INSERT INTO events (org_id, kind, direction, status)
  SELECT '$o1', 'call', 'inbound', 'bulk ' || g FROM generate_series(1, $EVENTS) g;
COMMIT;
SQL
midstream() { [ "$(progress)" -gt $((base + 2000000)) ]; }
if wait_for 120 midstream; then
  sql -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'txp_replay'" >/dev/null
fi
wait_for 60 grep -q tail.abandoned "$WORK/txp_replay.err"
check "1: the walsender was terminated mid-transaction" 1 "$(grep -c tail.abandoned "$WORK/txp_replay.err" || true)"
sql -c "DELETE FROM org_roles WHERE org_id = '$o1' AND user_id = '$u'" >/dev/null
last=$(sql -c "INSERT INTO events (org_id, kind, direction, status) VALUES ('$o1', 'sms', 'outbound', 'after removal') RETURNING id")
end=$(current_lsn)
finish_tail txp_replay "$end"
check "1: oracle: the removed member cannot see the new event" 0 "$(as_user "$u" "SELECT count(*) FROM walcast.events_masked WHERE id = '$last'")"
check "1: the removed member does not receive the new event" 0 "$(grep -c "$last" "$WORK/txp_replay.jsonl" || true)"
check "1: the big transaction delivered completely, each row once" "$EVENTS $EVENTS" \
  "$(jq -r 'select(.table == "events" and .action == "insert" and (.new.status | startswith("bulk"))) | .new.id' \
     "$WORK/txp_replay.jsonl" | awk '{n++; u[$0]} END {print n, length(u)}')"
check "1: its own removal reached the member" "$o1:$u" "$(lines txp_replay org_roles delete)"

# ---- 1b. an existing slot: today's state, then older changes replayed ------------------------------
# The membership is inserted after the slot was made, so tail loads a state that already holds
# it and then receives the insert again: one delete must still remove it.
o1b=$(sql -c "INSERT INTO orgs (name) VALUES ('existing slot') RETURNING id")
u2=$(uuid)
sql -c "SELECT pg_create_logical_replication_slot('txp_existing', 'pgoutput')" >/dev/null
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$o1b', '$u2', 'viewer')" >/dev/null
"$WALCAST" tail --as "$u2" --policy "$POLICY" -S txp_existing >"$WORK/txp_existing.jsonl" 2>"$WORK/txp_existing.err" &
TAIL_PID[txp_existing]=$!
BG_PIDS+=($!)
wait_for 30 slot_active txp_existing || true
sql -c "DELETE FROM org_roles WHERE org_id = '$o1b' AND user_id = '$u2'" >/dev/null
last2=$(sql -c "INSERT INTO events (org_id, kind, direction, status) VALUES ('$o1b', 'sms', 'inbound', 'after removal') RETURNING id")
finish_tail txp_existing "$(current_lsn)"
check "1b: the state was loaded from today's database" 1 "$(grep -c tail.state_current "$WORK/txp_existing.err" || true)"
check "1b: the removed member does not receive the new event" 0 "$(grep -c "$last2" "$WORK/txp_existing.jsonl" || true)"
check "1b: the replayed insert and the delete reached the member" "insert delete" \
  "$(jq -r 'select(.table == "org_roles") | .action' "$WORK/txp_existing.jsonl" | paste -sd' ' -)"

# ---- 2 and 3: focused transactions, one feed per viewer --------------------------------------------
o2=$(sql -c "INSERT INTO orgs (name) VALUES ('per transaction') RETURNING id")
o3=$(sql -c "INSERT INTO orgs (name) VALUES ('doomed') RETURNING id")
h1=$(uuid); h2=$(uuid); m=$(uuid); x=$(uuid); b=$(uuid); c=$(uuid); d=$(uuid)
sql >/dev/null <<SQL
INSERT INTO org_roles (org_id, user_id, role) VALUES
  ('$o2', '$h1', 'viewer'), ('$o2', '$h2', 'viewer'), ('$o2', '$m', 'member'), ('$o2', '$x', 'analyst'),
  ('$o2', '$c', 'member'), ('$o2', '$d', 'admin'),
  ('$o3', '$m', 'member'), ('$o3', '$d', 'owner');
INSERT INTO contacts (org_id, name, phone) SELECT '$o3', 'c' || g, '+1555000000' || g FROM generate_series(1, 3) g;
INSERT INTO events (org_id, kind, direction, status) SELECT '$o3', 'call', 'inbound', 'old ' || g FROM generate_series(1, 4) g;
SQL
for v in h1 h2 m x b c d; do start_tail "txp_$v" "${!v}"; done

# 2a: the handler's event and the handler's removal in one transaction, both orders
e1=$(uuid); e2=$(uuid)
sql >/dev/null <<SQL
BEGIN;
INSERT INTO events (id, org_id, user_id, kind, direction, status) VALUES ('$e1', '$o2', '$h1', 'call', 'inbound', 'handled');
DELETE FROM org_roles WHERE org_id = '$o2' AND user_id = '$h1';
COMMIT;
BEGIN;
DELETE FROM org_roles WHERE org_id = '$o2' AND user_id = '$h2';
INSERT INTO events (id, org_id, user_id, kind, direction, status) VALUES ('$e2', '$o2', '$h2', 'call', 'inbound', 'handled');
COMMIT;
SQL
# 2b: an org deleted; snapshot what each member sees of it just before
before_m_events=$(as_user "$m" "SELECT coalesce(string_agg(id::text, ',' ORDER BY id::text), '') FROM walcast.events_masked WHERE org_id = '$o3'")
before_m_contacts=$(as_user "$m" "SELECT coalesce(string_agg(id::text, ',' ORDER BY id::text), '') FROM walcast.contacts_masked WHERE org_id = '$o3'")
before_d_roster=$(as_user "$d" "SELECT coalesce(string_agg(org_id || ':' || user_id, ',' ORDER BY org_id || ':' || user_id), '') FROM walcast.org_roles_masked WHERE org_id = '$o3'")
sql -c "DELETE FROM orgs WHERE id = '$o3'" >/dev/null
# 3: a roster seat handed from c to b (b new to the org)
before_b_c=$(as_user "$b" "SELECT count(*) FROM walcast.org_roles_masked WHERE org_id = '$o2' AND user_id = '$c'")
before_d_c=$(as_user "$d" "SELECT count(*) FROM walcast.org_roles_masked WHERE org_id = '$o2' AND user_id = '$c'")
sql -c "UPDATE org_roles SET user_id = '$b' WHERE org_id = '$o2' AND user_id = '$c'" >/dev/null
# 2c: the roster truncated and re-inserted in one transaction (x comes back last)
roster=$(sql -c "SELECT string_agg(format('(%L, %L, %L)', org_id, user_id, role), ', ' ORDER BY user_id = '$x', user_id) FROM org_roles")
sql >/dev/null <<SQL
BEGIN;
TRUNCATE org_roles;
INSERT INTO org_roles (org_id, user_id, role) VALUES $roster;
COMMIT;
SQL
after_x_roster=$(as_user "$x" "SELECT coalesce(string_agg(org_id || ':' || user_id, ',' ORDER BY org_id || ':' || user_id), '') FROM walcast.org_roles_masked")
end=$(current_lsn)
for v in h1 h2 m x b c d; do finish_tail "txp_$v" "$end"; done

check "2a: h1, removed first, does not receive h2's removal" "$o2:$h1" "$(lines txp_h1 org_roles delete)"
check "2a: h2 receives h1's removal (it saw that row before)" 2 "$(lines txp_h2 org_roles delete | tr ',' '\n' | grep -c .)"
for v in h1 h2; do
  ev=e${v#h}
  check "2a: oracle: $v cannot see the event handled after/before removal" 0 \
    "$(as_user "${!v}" "SELECT count(*) FROM walcast.events_masked WHERE id = '${!ev}'")"
  check "2a: $v does not receive that event" 0 "$(grep -c "${!ev}" "$WORK/txp_$v.jsonl" || true)"
  check "2a: $v receives the delete of their own roster row" 1 "$(lines "txp_$v" org_roles delete | tr ',' '\n' | grep -c "^$o2:${!v}$")"
done
check "2a: a member of the org receives both events" "$(printf '%s\n' "$e1" "$e2" | sort | paste -sd, -)" "$(lines txp_m events insert)"
check "2b: oracle: m saw events of the doomed org" 4 "$(tr ',' '\n' <<<"$before_m_events" | grep -c .)"
check "2b: m receives the delete of every event it saw" "$before_m_events" "$(lines txp_m events delete)"
check "2b: m receives the delete of every contact it saw" "$before_m_contacts" "$(lines txp_m contacts delete)"
check "2b: d receives the delete of every roster row it saw" "$before_d_roster" \
  "$(jq -r 'select(.table == "org_roles" and .action == "delete") | .old | .org_id + ":" + .user_id' "$WORK/txp_d.jsonl" | grep "^$o3" | sort | paste -sd, -)"
check "2b: m receives the delete of the org" "$o3" "$(lines txp_m orgs delete)"
check "2c: x receives every re-inserted row it sees after the transaction" "$after_x_roster" \
  "$(jq -r 'select(.table == "org_roles" and .action == "insert") | .new | .org_id + ":" + .user_id' "$WORK/txp_x.jsonl" | sort | paste -sd, -)"
check "3: oracle: b could not see c's roster row before" "0" "$before_b_c"
check "3: oracle: d could see c's roster row before" "1" "$before_d_c"
upd='select(.table == "org_roles" and .action == "update")'
check "3: b receives the new roster row" "$b" "$(jq -r "$upd | .new.user_id" "$WORK/txp_b.jsonl")"
check "3: b never receives c's old row" "" "$(jq -r "$upd | .old // empty | tostring" "$WORK/txp_b.jsonl")"
check "3: d receives c's old row" "$c" "$(jq -r "$upd | .old.user_id" "$WORK/txp_d.jsonl")"
check "3: c (no longer a member) receives nothing of the update" "" "$(jq -r "$upd | .new.user_id" "$WORK/txp_c.jsonl")"
check "no feed reported an error" "" "$(grep -l 'ERROR\|privacy_failed' "$WORK"/txp_*.err | head -3)"
summary

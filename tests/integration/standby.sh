#!/usr/bin/env bash
# Two `walcast run` on one slot and one state_dir: PostgreSQL lets one walsender stream the slot,
# so one instance is active and the other waits as a standby, holding neither the state_dir lock
# nor the jsonl file (/proc/PID/fd), saying so on /readyz and walcast_role, with one log line.
# The active one is SIGKILLed mid-stream: the standby takes over within 10 s and the jsonl file
# holds every committed row exactly once, in commit order (oracle: SQL). A SIGTERMed standby exits
# 0 and leaves the active one streaming (its walsender pid in pg_replication_slots unchanged).
source "$(dirname "$0")/lib.sh"
seed_init
POLICY=$ROOT/deploy/policy.ini
SLOT=sb_run
ms() { date +%s%3N; }
walsender() { sql -c "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '$SLOT'"; }
port() { echo $((20000 + RANDOM % 12000)); } # below the ephemeral ports (32768-)
readyz() { curl -s "http://127.0.0.1:$1/readyz" || true; }
role() { curl -s "http://127.0.0.1:$1/metrics" | sed -n "s/^walcast_role{role=\"$2\"} //p"; }
holds() { ls -l "/proc/$1/fd" 2>/dev/null | grep -c -e "-> $WORK/state/lock\$" -e "-> $WORK/out.jsonl\$" || true; }

org=$(sql -c "INSERT INTO orgs (name) VALUES ('standby') RETURNING id")
cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = $SLOT
[pipeline]
state_dir = $WORK/state
[sink.out]
type = jsonl
path = $WORK/out.jsonl
tables = events
CONF
PA=$(port); PB=$(port); PC=$(port)
while [ "$PB" = "$PA" ]; do PB=$(port); done
while [ "$PC" = "$PA" ] || [ "$PC" = "$PB" ]; do PC=$(port); done

run_instance a "$PA"; A=$RUNP
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PA/readyz)\" = 200 ]" ||
  { echo "not ok - the first instance did not become ready"; cat "$WORK/a.err"; exit 1; }
run_instance b "$PB"; B=$RUNP
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PB/readyz)\" = 503 ]" ||
  { echo "not ok - the standby does not answer /readyz"; cat "$WORK/b.err"; exit 1; }
WA=$(walsender)
check "A: /readyz 200" 200 "$(readyz_code "$PA")"
check "A: walcast_role active 1, standby 0" "1 0" "$(role "$PA" active) $(role "$PA" standby)"
check "B: /readyz 503 standby" standby "$(readyz "$PB" | jq -r .status)"
check_true "B: /readyz says the slot is active for A's walsender ($WA)" \
  grep -q "active for pid $WA" <<<"$(readyz "$PB" | jq -r '.reasons[0]')"
check "B: walcast_role active 0, standby 1" "0 1" "$(role "$PB" active) $(role "$PB" standby)"
check "B holds neither the state_dir lock nor the jsonl file" 0 "$(holds "$B")"
check "A holds both" 2 "$(holds "$A")"
check "one walsender streams the slot" 1 "$(sql -c "SELECT count(*) FROM pg_stat_replication WHERE pid = $WA")"

# the stream: numbered transactions of 1 to 20 rows, one after another
load() {
  local i
  for i in $(seq 1 150); do
    sql -c "INSERT INTO events (org_id, kind, direction, status)
      SELECT '$org', 'sms', 'outbound', format('sb-%s-%s', lpad('$i', 5, '0'), lpad(g::text, 3, '0'))
      FROM generate_series(1, $((1 + RANDOM % 20))) g" >/dev/null
    sleep 0.02
  done
}
load &
LOAD=$!
BG_PIDS+=("$LOAD")
sleep 1.$((RANDOM % 10))
check "B: still a standby after $(wc -l <"$WORK/out.jsonl") lines streamed by A, with one log line" \
  "standby 1" "$(readyz "$PB" | jq -r .status) $(grep -c run.standby "$WORK/b.err")"
check "B: nothing logged as a standby but that line" "" "$(sed '0,/run.standby/d' "$WORK/b.err" | head -3)"
t0=$(ms)
kill -9 "$A"; wait "$A" 2>/dev/null || true
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PB/readyz)\" = 200 ]" || true
t1=$(ms)
echo "# takeover after kill -9: $((t1 - t0)) ms (bar: 10000)"
check_true "B took over within 10 s ($((t1 - t0)) ms)" [ $((t1 - t0)) -le 10000 ]
check "B: walcast_role active 1, standby 0" "1 0" "$(role "$PB" active) $(role "$PB" standby)"
check "B: one takeover line" 1 "$(grep -c run.takeover "$WORK/b.err")"
check_true "the slot is streamed by another walsender" [ "$(walsender)" != "$WA" ] && [ "$(walsender)" != 0 ]
check "B holds the lock and the jsonl file now" 2 "$(holds "$B")"
check "B: no error lines" 0 "$(grep -c ' ERROR ' "$WORK/b.err" || true)"
wait "$LOAD"

# A third instance waits; SIGTERM ends it cleanly, and B streams on.
run_instance c "$PC"; C=$RUNP
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PC/readyz)\" = 503 ]" || true
check "C: standby" standby "$(readyz "$PC" | jq -r .status)"
WB=$(walsender)
kill -TERM "$C"
rc=0; wait "$C" || rc=$?
check "C: SIGTERM as a standby: exit 0" 0 "$rc"
check "B: still streaming with the same walsender" "$WB 200" "$(walsender) $(readyz_code "$PB")"
# standby_poll = 0: no standby, a busy state_dir is refused as before
rc=0; timeout 60 "$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" --set "http.listen=127.0.0.1:$PC" \
  --set replication.standby_poll=0 >/dev/null 2>"$WORK/d.err" || rc=$?
check "standby_poll = 0: refused, exit 1, 'in use by another process'" "1 1" \
  "$rc $(grep -c 'in use by another process' "$WORK/d.err")"
sql -c "INSERT INTO events (org_id, kind, direction, status) VALUES ('$org', 'sms', 'outbound', 'sb-99999-001')" >/dev/null

sql -c "SELECT status FROM events WHERE org_id = '$org' ORDER BY status" >"$WORK/sql.lines"
got() { jq -r 'select(.action == "insert") | .new.status' "$WORK/out.jsonl" >"$WORK/got.lines"; cmp -s "$WORK/got.lines" "$WORK/sql.lines"; }
wait_for 60 got || echo "# the jsonl file did not catch up"
check_sequence "jsonl across the takeover" "$WORK/got.lines" "$WORK/sql.lines"
kill -TERM "$B"
rc=0; wait "$B" || rc=$?
check "B: SIGTERM drains, exit 0" 0 "$rc"
check "out.jsonl ends at its checkpoint" "$(sed -n 's/^offset=//p' "$WORK/out.jsonl.pos")" "$(stat -c %s "$WORK/out.jsonl")"
summary

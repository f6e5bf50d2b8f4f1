#!/usr/bin/env bash
# A live feed across reconnects: every transaction once, judged as of its commit.
#
# When the walsender goes away, walcast reconnects from its confirmed position; PostgreSQL then
# sends again the transactions after it that walcast had already delivered — many of them when a
# durable sink holds the confirm back (here a redis sink whose Redis is frozen). Live sinks must
# not get them a second time, and above all not judged again with the policy state that has
# moved on since.
#
# `walcast run` with an nng sink and a redis sink; the example subscriber reads one org's viewer
# topic. While the workload runs, Redis is stopped (SIGSTOP). The
# workload repeats three transactions: a privacy rule (admin) on a new contact; an event of that
# contact (a viewer may not see it: RLS as of its commit) and a public event; the rule removed
# (a viewer may see the contact's events from then on). Meanwhile the walsender is terminated at
# random moments. Oracle: PostgreSQL — the public events RLS shows a viewer, each exactly once;
# the private ones never (judged again after the rule's removal, they would be visible).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
seed_init
ROUNDS=${REPLAY_ROUNDS:-150}

SUBSCRIBER=$(dirname "$WALCAST")/nng_subscriber
[ -x "$SUBSCRIBER" ] || { echo "not ok - $SUBSCRIBER not built"; exit 1; }
P=$(kernel_free_port)
HTTP=$(kernel_free_port)
cat >"$WORK/replay.conf" <<CONF
[replication]
slot = replay_live
[pipeline]
state_dir = $WORK/replay-state
[http]
listen = 127.0.0.1:$HTTP
[sink.live]
type = nng
listen = tcp://127.0.0.1:$P
[sink.agg]
type = redis
url = $REDIS_URL
command_timeout = 2s
reconnect_max = 1s
CONF
REDIS_PID=$(rcli info server | tr -d '\r' | sed -n 's/^process_id://p')
org=$(sql -c "INSERT INTO orgs (name) VALUES ('replay') RETURNING id")
viewer=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$org', '$viewer', 'viewer')" >/dev/null
"$WALCAST" -c "$WORK/replay.conf" run --policy "$ROOT/deploy/policy.ini" >"$WORK/run.out" 2>"$WORK/run.err" &
RUN=$!; BG_PIDS+=($RUN)
ready() { curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null; }
wait_for 60 ready || { echo "not ok - walcast run did not become ready"; cat "$WORK/run.err"; exit 1; }
prefix="walcast/v1/org/$org/role/viewer/public.events/"
"$SUBSCRIBER" --timeout 20 "tcp://127.0.0.1:$P" "$prefix" >"$WORK/sub.out" 2>"$WORK/sub.err" &
SUB=$!; BG_PIDS+=($SUB)
connected() { curl -s "http://127.0.0.1:$HTTP/metrics" | grep -q '^walcast_connections{sink="live"} 1$'; }
check_true "the subscriber is connected" wait_for 20 connected

as_viewer() {
  sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$viewer\",\"role\":\"authenticated\"}'; $1"
}
workload() {
  local i
  for i in $(seq 1 "$ROUNDS"); do
    psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL || return 1
BEGIN;
INSERT INTO contacts (id, org_id, name) VALUES (md5('c$i')::uuid, '$org', 'private $i');
INSERT INTO privacy_rules (id, org_id, contact_id, min_role) VALUES (md5('r$i')::uuid, '$org', md5('c$i')::uuid, 'admin');
COMMIT;
INSERT INTO events (org_id, contact_id, kind, direction, status)
  VALUES ('$org', md5('c$i')::uuid, 'call', 'inbound', 'private $i'), ('$org', NULL, 'call', 'inbound', 'public $i');
DELETE FROM privacy_rules WHERE id = md5('r$i')::uuid;
SQL
    if [ "$i" = 1 ]; then
      # what RLS showed a viewer while the rule was there (the rule of round 1 is gone now:
      # round 0's, made the same way, stays)
      sql -c "INSERT INTO contacts (id, org_id, name) VALUES (md5('c0')::uuid, '$org', 'private 0')" \
          -c "INSERT INTO privacy_rules (id, org_id, contact_id, min_role) VALUES (md5('r0')::uuid, '$org', md5('c0')::uuid, 'admin')" \
          -c "INSERT INTO events (org_id, contact_id, kind, direction, status) VALUES ('$org', md5('c0')::uuid, 'call', 'inbound', 'held 0')" >/dev/null
      as_viewer "SELECT count(*) FROM events WHERE org_id = '$org' AND status = 'held 0'" >"$WORK/hidden.count"
    fi
  done
}
terminate() {
  psql -XAtc "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
              WHERE slot_name = 'replay_live' AND active_pid IS NOT NULL" 2>/dev/null || echo 0
}
kill -STOP "$REDIS_PID"
workload &
LOAD=$!; BG_PIDS+=($LOAD)
killed=0
while kill -0 "$LOAD" 2>/dev/null; do
  sleep "0.$((RANDOM % 5))"
  killed=$((killed + $(terminate)))
done
wait "$LOAD" && rc=0 || rc=$?
confirmed_while_frozen=$(sql -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'replay_live'")
kill -CONT "$REDIS_PID"
check "the workload committed" 0 "$rc"
check_true "the frozen redis sink held the confirm back ($confirmed_while_frozen)" \
  [ "$(sql -c "SELECT '$confirmed_while_frozen'::pg_lsn < pg_current_wal_lsn() - 10000")" = t ]
check_true "walsenders were terminated under load ($killed times)" [ "$killed" -ge 5 ]
end=$(current_lsn)
caught_up() {
  [ "$(psql -XAtc "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'replay_live'")" = t ]
}
check_true "walcast caught up" wait_for 120 caught_up
wait "$SUB" || true

cut -d' ' -f4- "$WORK/sub.out" | jq -r '.new.status' >"$WORK/got.status"
check "RLS: with its rule in place, a private event is hidden from a viewer" 0 "$(cat "$WORK/hidden.count")"
check "RLS: once the rules are gone, a viewer sees every private event (judged again now, they would be delivered)" \
  "$ROUNDS" "$(as_viewer "SELECT count(*) FROM events WHERE org_id = '$org' AND status LIKE 'private %'")"
check "the viewer topic carried no private event" "" "$(grep '^private' "$WORK/got.status" | head -3 | paste -sd,)"
check "no event twice on the viewer topic" "" "$(sort "$WORK/got.status" | uniq -d | head -3 | paste -sd,)"
as_viewer "SELECT status FROM events WHERE org_id = '$org' AND status LIKE 'public %' ORDER BY status COLLATE \"C\"" >"$WORK/want.status"
check "every public event RLS shows a viewer reached the topic" "" \
  "$(comm -23 "$WORK/want.status" <(LC_ALL=C sort -u "$WORK/got.status") | head -3 | paste -sd,)"
check "sequence numbers without a gap" "" "$(grep '^gap' "$WORK/sub.err" || true)"
kill -TERM $RUN 2>/dev/null || true
wait $RUN 2>/dev/null || true
summary

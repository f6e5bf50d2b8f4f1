#!/usr/bin/env bash
# The HTTP listener of `walcast run` against the harness PostgreSQL: /healthz, /readyz (ready
# while streaming; 503 "not streaming" while the walsender is gone), /metrics (promtool check
# metrics on the live output; walcast_changes_total equal to what SQL counts; the lag gauges
# present and moving after writes; the slot gauges equal to pg_replication_slots), 404 and 405.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

PROMTOOL=$(command -v promtool || echo /usr/bin/promtool)
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"

sql <<'SQL'
CREATE TABLE ht (id int PRIMARY KEY, v text);
CREATE PUBLICATION ht_pub FOR TABLE ht;
SQL

cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = ht_slot
publication = ht_pub
reconnect_min = 5s
reconnect_max = 5s
status_interval = 1s

[pipeline]
state_dir = $WORK/state

[http]
listen = 127.0.0.1:$PORT
slot_status_interval = 1s

[sink.out]
type = jsonl
path = $WORK/out.jsonl
CONF

"$WALCAST" -c "$WORK/walcast.conf" run >"$WORK/run.out" 2>"$WORK/run.err" &
pid=$!; BG_PIDS+=("$pid")

code() { curl -s -o "$WORK/body" -w '%{http_code}' "$@" || true; }
metric() { # metric NAME_WITH_LABELS: its value in the last scrape, or "absent"
  local v; v=$(awk -v n="$1" '$1 == n { print $2 }' "$WORK/metrics"); echo "${v:-absent}"
}
scrape() { curl -sf "$URL/metrics" >"$WORK/metrics"; }

wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $URL/healthz)\" = 200 ]" || {
  echo "not ok - walcast run did not serve /healthz"; cat "$WORK/run.err"; exit 1; }
check "/healthz: 200 ok" "200 ok" "$(code "$URL/healthz") $(cat "$WORK/body")"
# Each answer leaves walcast in one send, written from the request's own callback (headers and
# body together, no writable round trip): three /healthz and three /readyz on one keep-alive
# connection, walcast's sendto calls counted by strace (six; twelve when headers and body part).
sends_trace "$pid" "$WORK/sends.txt"
curl -s -o /dev/null "$URL/healthz" "$URL/healthz" "$URL/healthz" "$URL/readyz" "$URL/readyz" "$URL/readyz"
sends_untrace
check "six short answers on one connection: six sends" 6 "$(sends_count "$WORK/sends.txt" 'HTTP/1.1 ')"
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $URL/readyz)\" = 200 ]"
check "/readyz: 200 once streaming" "200 ready" "$(code "$URL/readyz") $(jq -r .status "$WORK/body")"

# Writes: changes counted as SQL counts them; lag gauges present.
sql -c "INSERT INTO ht SELECT g, 'v' FROM generate_series(1, 500) g"
sql -c "UPDATE ht SET v = 'w' WHERE id <= 100"
sql -c "DELETE FROM ht WHERE id <= 10"
want_ins=500 want_upd=100 want_del=10
wait_for 30 bash -c "curl -sf $URL/metrics | grep -q 'walcast_changes_total{table=\"public.ht\",action=\"delete\"} $want_del\$'"
scrape
check "changes by table and action: insert" "$want_ins" "$(metric 'walcast_changes_total{table="public.ht",action="insert"}')"
check "changes by table and action: update" "$want_upd" "$(metric 'walcast_changes_total{table="public.ht",action="update"}')"
check "changes by table and action: delete" "$want_del" "$(metric 'walcast_changes_total{table="public.ht",action="delete"}')"
check "rows in the table afterwards (the oracle)" "490" "$(sql -c 'SELECT count(*) FROM ht')"
lag1=$(metric walcast_replication_lag_seconds)
check_true "replication lag in seconds present ($lag1)" [ "$lag1" != absent ]
check_true "replication lag in bytes present ($(metric walcast_replication_lag_bytes))" \
  [ "$(metric walcast_replication_lag_bytes)" != absent ]
check "streaming gauge" "1" "$(metric walcast_streaming)"
"$PROMTOOL" check metrics <"$WORK/metrics" >"$WORK/promtool.out" 2>&1
check "promtool check metrics accepts the live output" "0 " "$? $(cat "$WORK/promtool.out")"

# The lag in seconds moves: a later commit makes it restart from near 0, an idle second grows it.
sleep 2; scrape; lag_idle=$(metric walcast_replication_lag_seconds)
check_true "idle: lag in seconds grows ($lag1 -> $lag_idle)" awk -v a="$lag1" -v b="$lag_idle" 'BEGIN { exit !(b > a) }'
sql -c "INSERT INTO ht VALUES (1000, 'late')"
wait_for 30 bash -c "curl -sf $URL/metrics | grep -q 'walcast_changes_total{table=\"public.ht\",action=\"insert\"} 501\$'"
scrape; lag_new=$(metric walcast_replication_lag_seconds)
check_true "after a write: lag in seconds back under 2 s ($lag_new)" awk -v b="$lag_new" 'BEGIN { exit !(b < 2) }'

# The slot gauges agree with pg_replication_slots.
wait_for 10 bash -c "curl -sf $URL/metrics | grep -q '^walcast_slot_wal_status{status=\"reserved\"} 1'"
scrape
check "slot wal_status as the server says" \
  "$(sql -c "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'ht_slot'")" \
  "$(awk '/^walcast_slot_wal_status\{/ && $2 == 1 { sub(/.*status="/, "", $1); sub(/".*/, "", $1); print $1 }' "$WORK/metrics")"

# 404, 405.
check "unknown path: 404 JSON" "404 not found" "$(code "$URL/nope") $(jq -r .error "$WORK/body")"
check "POST: 405" "405" "$(code -X POST -d x "$URL/metrics")"

# The walsender is terminated: /readyz says not streaming until walcast is back.
sql -c "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'ht_slot'" >/dev/null
wait_for 5 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $URL/readyz)\" = 503 ]"
check "/readyz while reconnecting: 503 not streaming" "503 not streaming" \
  "$(code "$URL/readyz") $(jq -r '.reasons | join(",")' "$WORK/body")"
check "/healthz while reconnecting: still 200" "200" "$(code "$URL/healthz")"
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $URL/readyz)\" = 200 ]"
check "/readyz after the reconnect: 200" "200" "$(code "$URL/readyz")"

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
check "SIGTERM: exits 0" "0" "$rc"
check_true "nothing listens afterwards" bash -c "! curl -s -o /dev/null $URL/healthz"
summary

#!/usr/bin/env bash
# The stats API (plugins/sinks/redis_api.c, docs/api.md) of `walcast run` with a redis sink,
# against a real PostgreSQL and Redis, the oracle being PostgreSQL itself:
#  - per-day figures (calls/SMS by direction and status, missed, durations) equal SQL over events;
#  - per-hour sparklines equal SQL;
#  - top contacts for an analyst equal what the analyst may read through RLS (SET ROLE
#    authenticated with the analyst's claims): a contact whose privacy rule is admin is absent,
#    present for an admin; a viewer is refused per-contact figures (403);
#  - no/bad/expired token 401, an anon token 403, another org's figures 404;
#  - every request lands in audit_log (action stats.read);
#  - the answers kept in memory are exact: after more writes, once Redis holds them and the
#    sink's round is accepted, days, hours and contacts equal SQL again; a demotion, a revoked
#    membership and a new privacy rule (which change no aggregate, so the answers stay in
#    memory) are honoured on the very next request;
#  - Redis shut down: 503 at once, nothing served from memory.
# The curl commands are those of docs/api.md.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/redis_lib.sh"
POLICY=$ROOT/deploy/policy.ini
HTTP_PORT=$(kernel_free_port)
REPL=${WALCAST_REPL_CONNINFO:?}
export WALCAST_AUTH_JWT_SECRET="stats-api-secret-with-enough-length-for-hs256-$$"
jwt() { jwt_hs256 "$@"; }
exp=$(($(date +%s) + 3600))
jqq() { jq -e "$@" >/dev/null; }
user_jwt() { jwt "{\"sub\":\"$1\",\"role\":\"authenticated\",\"aud\":\"authenticated\",\"exp\":$exp}"; }

# ---- data: two orgs, users of each rank in A, an outsider in B, a private contact in A ---------
A=$(sql -c "INSERT INTO orgs (name) VALUES ('stats a') RETURNING id")
B=$(sql -c "INSERT INTO orgs (name) VALUES ('stats b') RETURNING id")
read -r VIEWER ANALYST ADMIN OUTSIDER < <(sql -c "SELECT string_agg(gen_random_uuid()::text, ' ') FROM generate_series(1, 4)")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$A', '$VIEWER', 'viewer'), ('$A', '$ANALYST', 'analyst'),
        ('$A', '$ADMIN', 'admin'), ('$B', '$OUTSIDER', 'owner')" >/dev/null
sql -c "INSERT INTO contacts (org_id, name) SELECT o, 'c' || g FROM unnest(ARRAY['$A', '$B']::uuid[]) o, generate_series(1, 6) g" >/dev/null
PRIVATE=$(sql -c "INSERT INTO contacts (org_id, name) VALUES ('$A', 'private') RETURNING id")
sql -c "INSERT INTO privacy_rules (org_id, contact_id, min_role) VALUES ('$A', '$PRIVATE', 'admin')" >/dev/null

cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = stats
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:$HTTP_PORT
[auth]
jwt_audience = authenticated
jwt_leeway = 1s
[audit]
enabled = true
conninfo = $REPL
flush_interval = 100ms
[sink.agg]
type = redis
url = $REDIS_URL
CONF
"$WALCAST" -c "$WORK/walcast.conf" run --policy "$POLICY" >/dev/null 2>"$WORK/run.err" &
RUNP=$!
BG_PIDS+=("$RUNP")
wait_for 60 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$HTTP_PORT/readyz)\" = 200 ]" ||
  { echo "not ok - walcast run did not become ready"; cat "$WORK/run.err"; exit 1; }

# a load over the last three days: inserts, status and duration updates, deletes; the private
# contact the busiest of today
for i in $(seq 1 20); do
  sql -c "BEGIN;
INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
  SELECT c.org_id, CASE WHEN random() < 0.1 THEN NULL ELSE c.id END, k.kind, k.dir,
         CASE WHEN k.kind = 'call' THEN (ARRAY['completed', 'missed', 'voicemail'])[1 + (random() * 2)::int]
              ELSE (ARRAY['sent', 'delivered', 'failed'])[1 + (random() * 2)::int] END,
         CASE WHEN random() < 0.5 THEN now() - random() * interval '3 days'
              ELSE greatest(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', now() - random() * interval '1 day') END,
         CASE WHEN k.kind = 'call' AND random() < 0.8 THEN (random() * 600)::int END
  FROM contacts c, LATERAL (SELECT CASE WHEN random() < 0.6 THEN 'call' ELSE 'sms' END AS kind,
                                   CASE WHEN random() < 0.5 THEN 'inbound' ELSE 'outbound' END AS dir, c.id AS cid) k
  WHERE random() < 0.7;
UPDATE events SET status = 'missed', duration_s = 0 WHERE id IN (SELECT id FROM events WHERE kind = 'call' ORDER BY random() LIMIT 2);
DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT 2);
COMMIT;" >/dev/null
done
sql -c "INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
  SELECT '$A', '$PRIVATE', 'call', 'inbound', 'completed', date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
         + (now() - (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')) * random(), 60
  FROM generate_series(1, 40)" >/dev/null
HOUR_CUTOFF=$(sql -c "SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '46 hours', 'YYYYMMDDHH24')")
wait_for 120 same_as_sql || echo "# Redis did not reach what SQL holds within 120 s"
check "the aggregates caught up with the load" "" "$(diff "$WORK/sql.dump" "$WORK/redis.dump" | head -4)"

# ---- requests ----------------------------------------------------------------------------------
BASE=http://127.0.0.1:$HTTP_PORT/api/v1/stats
TODAY=$(date -u +%F)
FROM=$(date -u -d '3 days ago' +%F)
api() { # TOKEN PATH -> body in $WORK/body, status printed
  curl -s -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $1" "$BASE$2"
}
requests=0
TOK_VIEWER=$(user_jwt "$VIEWER"); TOK_ANALYST=$(user_jwt "$ANALYST"); TOK_ADMIN=$(user_jwt "$ADMIN")
TOK_OUTSIDER=$(user_jwt "$OUTSIDER")

# per-day figures, as the docs' example: every field of every day equal to SQL
days_vs_sql() { # the last response ($WORK/body) against SQL: the diff, empty when equal
  jq -r '.days[] | .day as $d | (["calls", "sms", "missed", "call_duration_s", "calls_timed"][] as $f | "\($d) \($f) \(.[$f])"),
  (.by_kind_direction_status | to_entries[] | "\($d) \(.key) \(.value)")' "$WORK/body" | LC_ALL=C sort >"$WORK/api.days"
  sql -c "WITH d AS (SELECT to_char(g, 'YYYY-MM-DD') AS day FROM generate_series('$FROM'::date, '$TODAY'::date, '1 day') g),
e AS (SELECT to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, * FROM events WHERE org_id = '$A')
SELECT d.day || ' ' || f || ' ' || v FROM d, LATERAL (VALUES
  ('calls', (SELECT count(*) FROM e WHERE e.day = d.day AND kind = 'call')),
  ('sms', (SELECT count(*) FROM e WHERE e.day = d.day AND kind = 'sms')),
  ('missed', (SELECT count(*) FROM e WHERE e.day = d.day AND kind = 'call' AND status = 'missed')),
  ('call_duration_s', (SELECT coalesce(sum(duration_s), 0) FROM e WHERE e.day = d.day AND kind = 'call')),
  ('calls_timed', (SELECT count(duration_s) FROM e WHERE e.day = d.day AND kind = 'call'))) x(f, v)
UNION ALL
SELECT day || ' ' || kind || ':' || direction || ':' || status || ' ' || count(*) FROM e
  WHERE day BETWEEN '$FROM' AND '$TODAY' GROUP BY day, kind, direction, status" | LC_ALL=C sort >"$WORK/sql.days"
  diff "$WORK/sql.days" "$WORK/api.days" | head -6
}
check "days: 200 for a viewer of the org" 200 "$(api "$TOK_VIEWER" "/orgs/$A/days?from=$FROM&to=$TODAY")"; requests=$((requests + 1))
check "days: every figure equals SQL" "" "$(days_vs_sql)"
check_true "days: the figures are not all zero" grep -q ' calls [1-9]' "$WORK/api.days"
check "days: the range total of calls equals SQL" \
  "$(sql -c "SELECT count(*) FROM events WHERE org_id = '$A' AND kind = 'call' AND (started_at AT TIME ZONE 'UTC')::date BETWEEN '$FROM' AND '$TODAY'")" \
  "$(jq .total.calls "$WORK/body")"
check_true "days: the average call duration is total / timed calls" \
  jqq '(.total.avg_call_duration_s - .total.call_duration_s / .total.calls_timed) | fabs < 1e-9' "$WORK/body"

# sparklines: 48 hours, each equal to SQL
hours_vs_sql() { # the last response against SQL: the diff, empty when equal
  jq -r '.hours[] | "\(.hour) \(.calls) \(.sms)"' "$WORK/body" >"$WORK/api.hours"
  local first; first=$(head -1 "$WORK/api.hours" | cut -d' ' -f1)
  sql -c "SELECT to_char(h, 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"') || ' ' ||
  (SELECT count(*) FROM events WHERE org_id = '$A' AND kind = 'call' AND date_trunc('hour', started_at AT TIME ZONE 'UTC') = h) || ' ' ||
  (SELECT count(*) FROM events WHERE org_id = '$A' AND kind = 'sms' AND date_trunc('hour', started_at AT TIME ZONE 'UTC') = h)
  FROM generate_series('${first%Z}'::timestamp, '${first%Z}'::timestamp + interval '47 hours', '1 hour') h" >"$WORK/sql.hours"
  diff "$WORK/sql.hours" "$WORK/api.hours" | head -4
}
check "hours: 200" 200 "$(api "$TOK_VIEWER" "/orgs/$A/hours?hours=48")"; requests=$((requests + 1))
check "hours: 48 of them" 48 "$(jq '.hours | length' "$WORK/body")"
check "hours: calls and SMS per hour equal SQL" "" "$(hours_vs_sql)"
# an answer goes out in one send (the API writes it whole), not in lws' default 4 KiB pieces:
# walcast's sendto calls for one hours answer (here from the cache), counted by strace
size=$(wc -c <"$WORK/body")
sends_trace "$RUNP" "$WORK/sends.txt"
api "$TOK_VIEWER" "/orgs/$A/hours?hours=48" >/dev/null; requests=$((requests + 1))
sends_untrace
sends=$(sends_count "$WORK/sends.txt" 'HTTP/1.1 200')
check "hours: the $size-byte answer in one send" 1 "$sends"

# top contacts: what the caller may read through RLS is the oracle
rls_top() { # USER
  sql -c "SET ROLE authenticated; SET request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}';
    SELECT contact_id || ' ' || count(*) FROM events WHERE org_id = '$A' AND contact_id IS NOT NULL
      AND (started_at AT TIME ZONE 'UTC')::date = '$TODAY' GROUP BY contact_id" | LC_ALL=C sort
}
check "contacts: 200 for an analyst" 200 "$(api "$TOK_ANALYST" "/orgs/$A/contacts?day=$TODAY&limit=100")"; requests=$((requests + 1))
jq -r '.contacts[] | "\(.contact) \(.events)"' "$WORK/body" | LC_ALL=C sort >"$WORK/api.analyst"
rls_top "$ANALYST" >"$WORK/sql.analyst"
check "contacts: the analyst's list equals what RLS lets the analyst count" "" "$(diff "$WORK/sql.analyst" "$WORK/api.analyst" | head -4)"
check "contacts: the private contact (rule: admin) is absent for the analyst" 0 "$(grep -c "$PRIVATE" "$WORK/api.analyst" || true)"
check "contacts: ordered by volume" "$(jq -c '[.contacts[].events] | sort | reverse' "$WORK/body")" "$(jq -c '[.contacts[].events]' "$WORK/body")"
check "contacts: 200 for an admin" 200 "$(api "$TOK_ADMIN" "/orgs/$A/contacts?day=$TODAY&limit=3")"; requests=$((requests + 1))
check "contacts: the admin sees the private contact first (busiest)" "$PRIVATE" "$(jq -r '.contacts[0].contact' "$WORK/body")"
n_admin=$(rls_top "$ADMIN" | wc -l)
check "contacts: limit is honoured (3 of $n_admin)" "$((n_admin < 3 ? n_admin : 3))" "$(jq '.contacts | length' "$WORK/body")"
check "contacts: the admin's top equals RLS as the admin" "$(rls_top "$ADMIN" | grep "$PRIVATE")" "$(jq -r '.contacts[0] | "\(.contact) \(.events)"' "$WORK/body")"
check "contacts: 403 for a viewer" 403 "$(api "$TOK_VIEWER" "/orgs/$A/contacts?day=$TODAY")"; requests=$((requests + 1))
check_true "contacts: the refusal is JSON with an error" jqq .error "$WORK/body"

# keep-alive: several requests on one connection, a refusal among them
check "keep-alive: three requests on one connection" "200 403 200 connections=1" "$(curl -s -w '%{http_code} %{num_connects}\n' \
  -H "Authorization: Bearer $TOK_VIEWER" "$BASE/orgs/$A/hours?hours=3" -o /dev/null \
  "$BASE/orgs/$A/contacts" -o /dev/null "$BASE/orgs/$A/days" -o /dev/null | awk '{ c += $2; s = s (s ? " " : "") $1 } END { print s " connections=" c }')"
requests=$((requests + 3))

# refusals
check "no token: 401" 401 "$(curl -s -o "$WORK/body" -w '%{http_code}' "$BASE/orgs/$A/days")"; requests=$((requests + 1))
check_true "401 body is JSON" jqq .error "$WORK/body"
check "bad signature: 401" 401 "$(api "$(jwt "{\"sub\":\"$ADMIN\",\"role\":\"authenticated\",\"exp\":$exp}" wrong-secret-wrong-secret-wrong-secret)" "/orgs/$A/days")"; requests=$((requests + 1))
check "expired token: 401" 401 "$(api "$(jwt "{\"sub\":\"$ADMIN\",\"role\":\"authenticated\",\"aud\":\"authenticated\",\"exp\":$(($(date +%s) - 600))}")" "/orgs/$A/days")"; requests=$((requests + 1))
# a token accepted (and remembered) is refused once its exp (+ the 1 s leeway) has passed
short_exp=$(($(date +%s) + 4))
SHORT=$(jwt "{\"sub\":\"$ADMIN\",\"role\":\"authenticated\",\"aud\":\"authenticated\",\"exp\":$short_exp}")
check "a short-lived token: 200, twice" "200 200" "$(api "$SHORT" "/orgs/$A/days") $(api "$SHORT" "/orgs/$A/days")"
wait_for 10 bash -c "[ \$(date +%s) -ge $((short_exp + 1)) ]"
check "the same token once expired: 401 (not taken from memory)" 401 "$(api "$SHORT" "/orgs/$A/days")"
requests=$((requests + 3))
check "anon token: 403" 403 "$(api "$(jwt "{\"role\":\"anon\",\"exp\":$exp}")" "/orgs/$A/days")"; requests=$((requests + 1))
check "another org's figures: 404" 404 "$(api "$TOK_OUTSIDER" "/orgs/$A/days")"; requests=$((requests + 1))
check "the outsider's own org: 200" 200 "$(api "$TOK_OUTSIDER" "/orgs/$B/days")"
check "service_role sees any org" 200 "$(api "$(jwt "{\"role\":\"service_role\",\"exp\":$exp}")" "/orgs/$A/days?from=$TODAY")"; requests=$((requests + 1))
check "bad day: 400" 400 "$(api "$TOK_VIEWER" "/orgs/$A/days?from=yesterday")"; requests=$((requests + 1))
check "range over 366 days: 400" 400 "$(api "$TOK_VIEWER" "/orgs/$A/days?from=2020-01-01&to=$TODAY")"; requests=$((requests + 1))
check "unknown path: 404" 404 "$(api "$TOK_VIEWER" "/orgs/$A/weeks")"; requests=$((requests + 1))

# ---- the cache: exact after the sink's rounds; visibility judged per request ---------------------
# The API keeps answers in memory until the redis sink's round that changes their org is
# accepted. The oracle stays SQL: after a write, once Redis holds it and the round is accepted
# (the global watermark, set after the acceptance, reaches the org's), the next answer is SQL's.
metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v n="$1" 'index($1, n "{") == 1 { print $2 }'; }
round_accepted() { # ORG: the round holding the org's last transaction was accepted
  local o g
  o=$(rcli --raw GET "wc:{$1}:wm" | tr a-f A-F); g=$(rcli --raw GET wc:wm | tr a-f A-F)
  [ -n "$o" ] && [ -n "$g" ] && [[ ! "$g" < "$o" ]]
}
caught_up() { wait_for 120 same_as_sql && wait_for 30 round_accepted "$A"; }
DAYS="/orgs/$A/days?from=$FROM&to=$TODAY"
hits0=$(metric walcast_stats_api_cache_hits_total | cut -d. -f1)
TOP="/orgs/$A/contacts?day=$TODAY&limit=100"
for _ in 1 2; do
  api "$TOK_ADMIN" "$DAYS" >/dev/null; api "$TOK_ADMIN" "/orgs/$A/hours?hours=48" >/dev/null; api "$TOK_ADMIN" "$TOP" >/dev/null
  requests=$((requests + 3))
done
hits=$(metric walcast_stats_api_cache_hits_total | cut -d. -f1)
check_true "cache: the second reads were answered from memory ($((hits - hits0)) hits)" test "$hits" -ge $((hits0 + 3))
# more writes in org A: inserts today, an update that moves an event to another contact, a delete
sql -c "BEGIN;
INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
  SELECT '$A', c.id, 'call', 'outbound', 'completed', now() - interval '1 minute', 30
  FROM contacts c, generate_series(1, 5) WHERE c.org_id = '$A' AND c.id <> '$PRIVATE';
UPDATE events SET contact_id = (SELECT id FROM contacts WHERE org_id = '$A' AND id <> '$PRIVATE' ORDER BY id LIMIT 1)
  WHERE id = (SELECT id FROM events WHERE org_id = '$A' AND contact_id IS NOT NULL ORDER BY id DESC LIMIT 1);
DELETE FROM events WHERE id = (SELECT id FROM events WHERE org_id = '$A' AND kind = 'sms' ORDER BY id LIMIT 1);
COMMIT;" >/dev/null
caught_up || echo "# the round of org A's writes was not accepted within the time"
check "cache: days after the round: 200" 200 "$(api "$TOK_ADMIN" "$DAYS")"; requests=$((requests + 1))
check "cache: days after the round equal SQL (the new events counted)" "" "$(days_vs_sql)"
check "cache: hours after the round: 200" 200 "$(api "$TOK_ADMIN" "/orgs/$A/hours?hours=48")"; requests=$((requests + 1))
check "cache: hours after the round equal SQL" "" "$(hours_vs_sql)"
check "cache: contacts after the round: 200" 200 "$(api "$TOK_ADMIN" "$TOP")"; requests=$((requests + 1))
check "cache: the admin's top after the round equals RLS as the admin" "$(rls_top "$ADMIN")" \
  "$(jq -r '.contacts[] | "\(.contact) \(.events)"' "$WORK/body" | LC_ALL=C sort)"
check_true "cache: the round's org was dropped from memory" test "$(metric walcast_stats_api_cache_invalidations_total | cut -d. -f1)" -ge 3

# Visibility changes that touch no aggregate of org A (so its answers stay in memory): the
# analyst demoted to viewer, the viewer's membership revoked, a privacy rule hiding the admin's
# busiest visible contact. A later write in org B, once in Redis, shows walcast has passed them.
check "cache: days for the viewer before the revocation: 200" 200 "$(api "$TOK_VIEWER" "$DAYS")"; requests=$((requests + 1))
api "$TOK_ADMIN" "$TOP" >/dev/null; requests=$((requests + 1))
HIDE=$(jq -r --arg p "$PRIVATE" '[.contacts[] | select(.contact != $p)][0].contact' "$WORK/body")
sql -c "BEGIN;
UPDATE org_roles SET role = 'viewer' WHERE org_id = '$A' AND user_id = '$ANALYST';
DELETE FROM org_roles WHERE org_id = '$A' AND user_id = '$VIEWER';
INSERT INTO privacy_rules (org_id, contact_id, min_role) VALUES ('$A', '$HIDE', 'owner');
COMMIT;" >/dev/null
sql -c "INSERT INTO events (org_id, contact_id, kind, direction, status, started_at)
  SELECT '$B', id, 'sms', 'inbound', 'delivered', now() FROM contacts WHERE org_id = '$B' LIMIT 1" >/dev/null
wait_for 120 same_as_sql || echo "# org B's write did not reach Redis within the time"
hits=$(metric walcast_stats_api_cache_hits_total)
check "cache: the demoted analyst is refused contacts at once: 403" 403 "$(api "$TOK_ANALYST" "$TOP")"; requests=$((requests + 1))
check "cache: the revoked viewer is refused days at once: 404" 404 "$(api "$TOK_VIEWER" "$DAYS")"; requests=$((requests + 1))
check "cache: contacts for the admin: 200" 200 "$(api "$TOK_ADMIN" "$TOP")"; requests=$((requests + 1))
check "cache: the newly hidden contact is absent for the admin" 0 "$(grep -c "$HIDE" "$WORK/body" || true)"
check "cache: the admin's top equals RLS as the admin under the new rule" "$(rls_top "$ADMIN")" \
  "$(jq -r '.contacts[] | "\(.contact) \(.events)"' "$WORK/body" | LC_ALL=C sort)"
check "cache: and it came from memory (filtered per request)" "$((${hits%.*} + 1))" "$(metric walcast_stats_api_cache_hits_total | cut -d. -f1)"

# every request naming org A is audited: identical reads within one flush of the audit writer
# (100 ms here) share a row that counts them (detail.count, absent for 1). A burst of 20
# identical reads on one connection shows it.
T0=$(sql -c "SELECT now()")
curl -s -H "Authorization: Bearer $TOK_ADMIN" $(for _ in $(seq 1 20); do printf -- '-o /dev/null %s ' "$BASE/orgs/$A/hours?hours=7"; done)
requests=$((requests + 20))
burst="FROM audit_log WHERE action = 'stats.read' AND actor_id = '$ADMIN' AND created_at >= '$T0'
  AND detail->>'path' = '/api/v1/stats/orgs/$A/hours' AND (detail->>'status')::int = 200"
counted="SELECT coalesce(sum(coalesce((detail->>'count')::int, 1)), 0) FROM audit_log WHERE action = 'stats.read' AND org_id = '$A'"
wait_for 30 bash -c "[ \$(psql -XAtc \"$counted\") -ge $requests ]"
check "audit: every stats.read request on org A counted once" "$requests" "$(sql -c "$counted")"
burst_rows=$(sql -c "SELECT count(*) $burst")
check_true "audit: the burst of 20 identical reads took fewer rows ($burst_rows)" test "$burst_rows" -lt 20
check "audit: and its rows count all 20" 20 "$(sql -c "SELECT sum(coalesce((detail->>'count')::int, 1)) $burst")"
check "audit: the analyst's read names the analyst and the path" 1 \
  "$(sql -c "SELECT count(*) FROM audit_log WHERE action = 'stats.read' AND actor_id = '$ANALYST'
             AND detail->>'path' LIKE '/api/v1/stats/orgs/$A/contacts%' AND (detail->>'status')::int = 200")"
check "audit: the outsider's refused read is recorded" 1 \
  "$(sql -c "SELECT count(*) FROM audit_log WHERE action = 'stats.read' AND actor_id = '$OUTSIDER' AND org_id = '$A'
             AND (detail->>'status')::int = 404")"

# Redis gone: 503 with a JSON error, at once (nothing waits for a connection that is down)
rcli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait_for 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$HTTP_PORT/readyz)\" = 503 ]"
check "Redis down: 503, nothing served from memory" 503 "$(api "$TOK_ADMIN" "$DAYS")"
check_true "Redis down: the 503 says why" grep -q Redis "$WORK/body"

kill -TERM "$RUNP"
rc=0; wait "$RUNP" || rc=$?
check "walcast run: SIGTERM exits 0" 0 $rc
summary

#!/usr/bin/env bash
# The realtime sink's own smoke test, with a standard-library client (rt_client.py), so that it
# runs without npm: refused handshakes (401 without a key, 404 on another path, 403 on a bad
# token, 400 on an unknown vsn); heartbeat; a join with two bindings answered with their ids
# in request order, then "Subscribed to PostgreSQL"; an INSERT committed right after the
# system message reaches a member as PostgreSQL's RLS shows it and never a user of another org;
# a refused join (bad filter, expired token) in the server's words; both serializers; audit_log rows
# of joins, refused joins and leaves; wss:// with the listener's certificate.
# tests/realtime-js/ drives the same sink with the unmodified @supabase/realtime-js.
source "$(dirname "$0")/lib.sh"
trap 'echo "# rt_smoke.sh: line $LINENO failed: $BASH_COMMAND"' ERR
CLIENT="python3 $(dirname "$0")/rt_client.py"
export WALCAST_AUTH_JWT_SECRET="test-secret-with-enough-length-for-hs256-0123456789"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
jwt() { # PAYLOAD: an HS256 token
  local h p s
  h=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  p=$(printf '%s' "$1" | b64url)
  s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "$WALCAST_AUTH_JWT_SECRET" -binary | b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
exp=$(( $(date +%s) + 600 ))

org=$(sql -c "INSERT INTO orgs (name) VALUES ('rt') RETURNING id")
other=$(sql -c "INSERT INTO orgs (name) VALUES ('rt other') RETURNING id")
member=$(sql -c "SELECT gen_random_uuid()")
stranger=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles VALUES ('$org', '$member', 'member'), ('$other', '$stranger', 'member')" >/dev/null
anon=$(jwt "{\"role\":\"anon\",\"exp\":$exp}")
tok_member=$(jwt "{\"sub\":\"$member\",\"role\":\"authenticated\",\"exp\":$exp}")
tok_stranger=$(jwt "{\"sub\":\"$stranger\",\"role\":\"authenticated\",\"exp\":$exp}")
tok_expired=$(jwt "{\"sub\":\"$member\",\"role\":\"authenticated\",\"exp\":$(( $(date +%s) - 100 ))}")

# a column of a type outside PostgreSQL's built-in ones (an enum): its name comes from pgoutput's Type message
sql -c "CREATE TYPE rt_mood AS ENUM ('calm', 'busy'); ALTER TABLE events ADD COLUMN rt_mood rt_mood" >/dev/null
HTTP=$(port)
cat >"$WORK/rt.conf" <<CONF
[replication]
slot = rt_smoke
[pipeline]
state_dir = $WORK/rt-state
[http]
listen = 127.0.0.1:$HTTP
[audit]
enabled = true
flush_interval = 100ms
[sink.live]
type = realtime
CONF
"$WALCAST" -c "$WORK/rt.conf" run >"$WORK/rt.log" 2>&1 &
WPID=$!; BG_PIDS+=($WPID)
streaming() { curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null; }
wait_for 60 streaming || { echo "not ok - walcast did not become ready"; cat "$WORK/rt.log"; exit 1; }

# ---- handshakes ---------------------------------------------------------------------------------
out=$($CLIENT "$HTTP" "/realtime/v1/websocket?vsn=2.0.0" || true)
check "no key: 401 with a JSON error" 'HTTP 401 {"error":' "${out:0:18}"
out=$($CLIENT "$HTTP" "/elsewhere?apikey=$anon" || true)
check "another path: 404" "HTTP 404" "${out:0:8}"
out=$($CLIENT "$HTTP" "/socket/websocket?apikey=not.a.token" || true)
check "a malformed token as key: 403" "HTTP 403" "${out:0:8}"
out=$($CLIENT "$HTTP" "/socket/websocket?apikey=$anon&vsn=3.0.0" || true)
check "unknown vsn: 400" "HTTP 400" "${out:0:8}"

# ---- heartbeat, join, system, a change --------------------------------------------------------------
pre=$(sql -c "INSERT INTO events (org_id, kind, direction, status) VALUES ('$org', 'call', 'inbound', 'before the join') RETURNING id")
lsn_pre=$(current_lsn)
caught_up() { [ "$(curl -sf "http://127.0.0.1:$HTTP/metrics" | awk '$1 == "walcast_transactions_total" {print $2}')" -ge 1 ]; }
wait_for 20 caught_up || true
join2() { # TOKEN: a vsn 2.0.0 join of two bindings on events of the org
  printf '["1","1","realtime:room","phx_join",{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":false},"postgres_changes":[{"event":"INSERT","schema":"public","table":"events","filter":"org_id=eq.%s"},{"event":"*","schema":"public","table":"events"}],"private":false},"access_token":"%s"}]' "$org" "$1"
}
insert_event() { # ORG [STATUS]
  sql -c "INSERT INTO events (org_id, kind, direction, status, from_number, to_number) VALUES ('$1', 'call', 'inbound', '${2:-new}', '+15559876543', '+15551112222') RETURNING id"
}
: >"$WORK/m.out"; : >"$WORK/s.out"
$CLIENT "$HTTP" "/realtime/v1/websocket?apikey=$anon&vsn=2.0.0" \
  'send:[null,"1","phoenix","heartbeat",{}]' 'expect:phx_reply' \
  "send:$(join2 "$tok_member")" 'expect:Subscribed to PostgreSQL' 'expect:"status":"rt-own-2"' >"$WORK/m.out" &
M=$!
$CLIENT "$HTTP" "/socket/websocket?vsn=1.0.0" --header "x-api-key: $anon" \
  "send:{\"topic\":\"realtime:room\",\"event\":\"phx_join\",\"payload\":{\"config\":{\"postgres_changes\":[{\"event\":\"*\",\"schema\":\"public\"}]},\"access_token\":\"$tok_stranger\"},\"ref\":\"1\",\"join_ref\":\"1\"}" \
  'expect:Subscribed to PostgreSQL' 'expect:"status":"rt-other-2"' >"$WORK/s.out" &
S=$!
wait_for 20 grep -q "Subscribed to PostgreSQL" "$WORK/m.out" || { cat "$WORK/m.out" "$WORK/rt.log"; exit 1; }
wait_for 20 grep -q 'Subscribed to PostgreSQL' "$WORK/s.out"
# the shared live-sink series (docs/metrics.md), labelled with the sink's name, beside walcast_realtime_*
series() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v s="$1" '$1 == s {print $2}'; }
check "metrics: walcast_connections{sink=\"live\"} counts the two clients" 2 "$(series 'walcast_connections{sink="live"}')"
check "metrics: walcast_sink_drops_total{sink=\"live\"} is there, at 0" 0 "$(series 'walcast_sink_drops_total{sink="live"}')"
# walcast's sends while the four changes go out are traced: each write of frames must be one send
# (lws cuts sends to the protocol's receive buffer, 256 bytes, unless told otherwise)
sends_trace "$WPID" "$WORK/sends.txt"
# in stream order: a change wrongly delivered would arrive before the last one each client waits for
ev2=$(insert_event "$other" rt-other-1)
ev=$(insert_event "$org" rt-own-1)
ev2b=$(insert_event "$other" rt-other-2)
evb=$(insert_event "$org" rt-own-2)
wait $M || true
wait $S || true
sends_untrace
sends=$(sends_count "$WORK/sends.txt" '\201') # the connections that got a text frame (byte 0x81)
check_true "the four changes left walcast in at most four sends (got $sends)" test "$sends" -ge 1 -a "$sends" -le 4
check "heartbeat: phx_reply ok" 1 "$(grep -c '^frame \[null,"1","phoenix","phx_reply",{"status":"ok","response":{}}\]' "$WORK/m.out" || true)"
reply=$(grep 'phx_join\|phx_reply' "$WORK/m.out" | grep '"realtime:room"' | head -1 | sed 's/^frame //')
check "join reply: ok" ok "$(echo "$reply" | jq -r '.[4].status')"
check "join reply: bindings in request order" 'INSERT,*' "$(echo "$reply" | jq -r '[.[4].response.postgres_changes[].event] | join(",")')"
check "join reply: integer ids" 'number,number' "$(echo "$reply" | jq -r '[.[4].response.postgres_changes[].id | type] | join(",")')"
change=$(grep '"postgres_changes",{"ids"' "$WORK/m.out" | head -1 | sed 's/^frame //')
check "member: the insert arrives with both binding ids" 2 "$(echo "$change" | jq '.[4].ids | length')"
check "member: the row's id" "$ev" "$(echo "$change" | jq -r '.[4].data.record.id')"
check "member: type INSERT, no old_record key" 'INSERT false' "$(echo "$change" | jq -r '"\(.[4].data.type) \(.[4].data | has("old_record"))"')"
check "member: columns carry type names" uuid "$(echo "$change" | jq -r '.[4].data.columns[] | select(.name == "id") | .type')"
check "member: an enum column carries the enum's name, as pg_type has it" \
  "$(sql -c "SELECT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = 'events'::regclass AND a.attname = 'rt_mood'")" \
  "$(echo "$change" | jq -r '.[4].data.columns[] | select(.name == "rt_mood") | .type')"
check "member: refs null" 'null null' "$(echo "$change" | jq -r '"\(.[0]) \(.[1])"')"
as_user() { sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}'; $2"; }
check "oracle: RLS shows the member the event" 1 "$(as_user "$member" "select count(*) from events where id = '$ev'")"
check "oracle: RLS hides it from the stranger" 0 "$(as_user "$stranger" "select count(*) from events where id = '$ev'")"
check "member: nothing committed (and streamed) before the join" 0 "$(grep -c "$pre" "$WORK/m.out" || true)"
check "member: only its org's events" "$ev $evb" "$(grep '"postgres_changes",{"ids"' "$WORK/m.out" | sed 's/^frame //' | jq -r '.[4].data.record.id' | paste -sd' ')"
check "stranger (vsn 1.0.0): only its own org's events" "$ev2 $ev2b" \
  "$(grep '"event":"postgres_changes"' "$WORK/s.out" | sed 's/^frame //' | jq -r '.payload.data.record.id' | paste -sd' ')"
check "vsn 1.0.0: the join reply is an object" ok "$(grep '"phx_reply"' "$WORK/s.out" | head -1 | sed 's/^frame //' | jq -r '.payload.status')"

# ---- a join larger than the receive buffer (it arrives in pieces) ---------------------------------
many=$(for i in $(seq 1 40); do printf '{"event":"*","schema":"public","table":"t%02d"},' "$i"; done)
bigjoin='["1","1","realtime:big","phx_join",{"config":{"postgres_changes":['"${many%,}"']},"access_token":"'$tok_member'"}]'
out=$($CLIENT "$HTTP" "/socket/websocket?apikey=$anon&vsn=2.0.0" "send:$bigjoin" 'expect:phx_reply' || true)
check "a ${#bigjoin}-byte join: 40 bindings answered" 40 \
  "$(echo "$out" | grep phx_reply | sed 's/^frame //' | jq '.[4].response.postgres_changes | length')"

# ---- refused joins ------------------------------------------------------------------------------
out=$($CLIENT "$HTTP" "/socket/websocket?apikey=$anon&vsn=2.0.0" "send:$(join2 "$tok_expired")" 'expect:phx_reply' || true)
check "expired token: the server's reason" "InvalidJWTToken: Token has expired" \
  "$(echo "$out" | grep phx_reply | sed 's/^frame //' | jq -r '.[4].response.reason' | cut -c1-34)"
bad='["1","1","realtime:bad","phx_join",{"config":{"postgres_changes":[{"event":"*","schema":"public","table":"events","filter":"org_id=zz.1"}]},"access_token":"'$tok_member'"}]'
out=$($CLIENT "$HTTP" "/socket/websocket?apikey=$anon&vsn=2.0.0" "send:$bad" 'expect:phx_reply' || true)
check "bad filter: refused" error "$(echo "$out" | grep phx_reply | sed 's/^frame //' | jq -r '.[4].status')"
out=$($CLIENT "$HTTP" "/socket/websocket?apikey=$anon&vsn=2.0.0" 'send:{not json' 'send:[null,"2","realtime:x","phx_leave",{}]' 'expect:unmatched topic' || true)
check "garbage then a leave of an unjoined topic: an error, still served" 1 "$(echo "$out" | grep -c 'unmatched topic')"
check "walcast still running" 0 "$(kill -0 $WPID; echo $?)"
metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m"[{]" {print $2}'; }
frames=$(metric walcast_realtime_frames_sent_total); writes=$(metric walcast_realtime_writes_total)
batched() { [ "${writes:-0}" -gt 0 ] && [ "$writes" -lt "${frames:-0}" ]; }
check_true "metrics: frames queued together share a write ($frames frames, $writes writes)" batched
check "metrics: handshakes refused" 4 "$(metric walcast_realtime_refused_total)"
no_conns() { [ "$(series 'walcast_connections{sink="live"}')" = 0 ]; }
wait_for 20 no_conns || true
check "metrics: walcast_connections{sink=\"live\"} back to 0 once the clients are gone" 0 "$(series 'walcast_connections{sink="live"}')"

# ---- audit_log: joins, refused joins and leaves of the org's members -----------------------------
audited() { # ACTION: rows of the member's channel realtime:room in the org
  sql -c "select count(*) from audit_log where org_id = '$org' and actor_id = '$member' and action = '$1' and detail->>'topic' = 'realtime:room'"
}
has_rows() { [ "$(audited "$1")" -ge "$2" ]; }
wait_for 20 has_rows realtime.join 1 || true
check "audit: the member's join" 1 "$(audited realtime.join)"
check "audit: its table and topic" "events realtime:room" \
  "$(sql -c "select target_table || ' ' || (detail->>'topic') from audit_log where org_id = '$org' and action = 'realtime.join' and detail->>'topic' = 'realtime:room'")"
wait_for 20 has_rows realtime.leave 1 || true
check "audit: the member's leave (connection closed)" 1 "$(audited realtime.leave)"
wait_for 20 has_rows realtime.join_refused 1 || true
check "audit: the member's refused join (bad filter) with its reason" 1 \
  "$(sql -c "select count(*) from audit_log where org_id = '$org' and action = 'realtime.join_refused' and detail->>'reason' like 'Unable to subscribe%'")"
check "audit: nothing for the other org from the member" 0 "$(sql -c "select count(*) from audit_log where org_id = '$other' and actor_id = '$member'")"
kill -TERM $WPID
wait $WPID && rc=0 || rc=$?
check "walcast drains and exits 0 (no sanitizer report)" 0 "$rc"
[ "$rc" = 0 ] || grep -A30 -m1 "Sanitizer" "$WORK/rt.log" || true
# ---- wss: the listener's own certificate ----------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout "$WORK/key.pem" \
  -out "$WORK/cert.pem" 2>/dev/null
HTTPS=$(port)
cat >"$WORK/rt-tls.conf" <<CONF
[replication]
slot = rt_smoke_tls
[pipeline]
state_dir = $WORK/rt-tls-state
[http]
listen = 127.0.0.1:$HTTPS
tls_cert = $WORK/cert.pem
tls_key = $WORK/key.pem
static_dir = $WORK/static
[sink.live]
type = realtime
[sink.agg]
type = redis
url = $WALCAST_REDIS_URL
CONF
mkdir -p "$WORK/static"
head -c 100000 /dev/urandom | base64 >"$WORK/static/big.js" # ~133 KB: many HTTP/2 DATA frames
"$WALCAST" -c "$WORK/rt-tls.conf" run >"$WORK/rt-tls.log" 2>&1 &
TPID=$!; BG_PIDS+=($TPID)
tls_ready() { curl -skf "https://127.0.0.1:$HTTPS/readyz" >/dev/null; }
wait_for 60 tls_ready || cat "$WORK/rt-tls.log"
check_true "https: /readyz answers (HTTP/2, curl's choice over TLS as a browser's)" tls_ready
# HTTP/2 and HTTP/1.1 over TLS: a response's headers and body are written apart on HTTP/2 (HEADERS
# and DATA frames of at most 16 KB), together on HTTP/1.1 (one send)
for v in 2 1.1; do
  got=$(curl -sk --http"$v" -o "$WORK/big.out" -w '%{http_code} %{http_version}' "https://127.0.0.1:$HTTPS/big.js" || true)
  check "https, HTTP/$v: a 133 KB static file arrives whole" "200 $v $(sha256sum <"$WORK/static/big.js")" \
    "$got $(sha256sum <"$WORK/big.out")"
  got=$(curl -sk --http"$v" -o "$WORK/hours.json" -w '%{http_code} %{http_version}' \
    -H "Authorization: Bearer $tok_member" "https://127.0.0.1:$HTTPS/api/v1/stats/orgs/$org/hours?hours=48" || true)
  check "https, HTTP/$v: the stats API answers a member with 48 hours" "200 $v 48" "$got $(jq '.hours | length' "$WORK/hours.json" 2>/dev/null)"
  got=$(curl -sk --http"$v" -o "$WORK/e.json" -w '%{http_code} %{http_version}' "https://127.0.0.1:$HTTPS/api/v1/stats/orgs/$org/days" || true)
  check "https, HTTP/$v: the stats API refuses no token with a JSON error" "401 $v no bearer token" \
    "$got $(jq -r '.error' "$WORK/e.json" 2>/dev/null | cut -d: -f1)"
done
# a year of days (over 16 KB) answered from the API's cache, filled by a first read: over HTTP/2
# the HEADERS frame goes first and the body, copied out of the cache, in DATA frames after it;
# over HTTP/1.1 in one send, straight from the cache's bytes
year="https://127.0.0.1:$HTTPS/api/v1/stats/orgs/$org/days?from=$(date -u -d '365 days ago' +%F)"
hits() { curl -sk "https://127.0.0.1:$HTTPS/metrics" | awk '$1 ~ /^walcast_stats_api_cache_hits_total/ { n += $2 } END { print n + 0 }'; }
curl -sk --http1.1 -o "$WORK/year.fill.json" -H "Authorization: Bearer $tok_member" "$year" || true
check "https: a year of days from the stats API: 366 days, over 16 KB" "366 over16k" \
  "$(jq '.days | length' "$WORK/year.fill.json" 2>/dev/null) $([ "$(stat -c %s "$WORK/year.fill.json")" -gt 16384 ] && echo over16k)"
hits0=$(hits)
for v in 2 1.1; do
  got=$(curl -sk --http"$v" -o "$WORK/year.$v.json" -w '%{http_code} %{http_version}' -H "Authorization: Bearer $tok_member" "$year" || true)
  check "https, HTTP/$v: the same year from the cache, the same bytes" "200 $v" "$got$(cmp "$WORK/year.$v.json" "$WORK/year.fill.json" 2>&1)"
done
check "https: both were cache hits" 2 "$(($(hits) - hits0))"
: >"$WORK/t.out"
$CLIENT "$HTTPS" "/realtime/v1/websocket?apikey=$anon&vsn=2.0.0" --tls \
  "send:$(join2 "$tok_member")" 'expect:Subscribed to PostgreSQL' 'expect:"postgres_changes",{"ids"' >"$WORK/t.out" &
T=$!
wait_for 20 grep -q 'Subscribed to PostgreSQL' "$WORK/t.out" || true
ev3=$(insert_event "$org")
wait $T && rc=0 || rc=$?
check "wss: the member's insert arrives over TLS" "$ev3" \
  "$(grep '"postgres_changes",{"ids"' "$WORK/t.out" | sed 's/^frame //' | jq -r '.[4].data.record.id' | head -1)"
out=$($CLIENT "$HTTPS" "/realtime/v1/websocket" --tls || true)
check "wss: no key is still 401" "HTTP 401" "${out:0:8}"
kill -TERM $TPID; wait $TPID || true
summary

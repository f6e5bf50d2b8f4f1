#!/usr/bin/env bash
# The nng sink's consumers as separate processes (docs/nng.md):
#   1. the C example docs/examples/nng_subscriber.c against nngcat publishing crafted messages:
#      prefix filtering, per-topic gap detection, the summary line;
#   2. `walcast run` with an nng sink: nngcat and the example subscribed to one org's viewer
#      topic receive exactly the events a viewer of that org may read (counted by PostgreSQL's
#      RLS as a viewer), masked exactly as walcast.events_masked shows that viewer, with
#      consecutive sequence numbers; events of a private contact (rule: admin) that a viewer
#      handles reach that viewer's own user topic only, as RLS shows them to the handler, and
#      never the viewer role's topic.
# The sink's coalesce key comes from NNG_COALESCE (on, the default, or off: CMake runs the test
# with each): with it on, the 200-row transaction (one read of the stream) reaches nngcat in
# fewer messages than payloads, several payloads per message; with it off, one per message.
# Either way the subscribers' checks are the same, payload by payload.
# The TLS listener with required client certificates is tested by tests/unit/test_nng_sink.c.
source "$(dirname "$0")/lib.sh"
trap 'echo "# nng.sh: line $LINENO failed: $BASH_COMMAND"' ERR

SUBSCRIBER=$(dirname "$WALCAST")/nng_subscriber
command -v nngcat >/dev/null || { echo "not ok - nngcat missing (Debian's nng-utils, deploy/install-deps.sh)"; exit 1; }
[ -x "$SUBSCRIBER" ] || { echo "not ok - $SUBSCRIBER not built"; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- 1. the example subscriber against nngcat -------------------------------------------------
P=$(port)
"$SUBSCRIBER" --count 3 --timeout 20 "tcp://127.0.0.1:$P" t/ >"$WORK/nng1.out" 2>"$WORK/nng1.err" &
SUB=$!; BG_PIDS+=($SUB)
publish() { timeout 10 nngcat --pub --listen "tcp://127.0.0.1:$P" --delay 2 --count 1 --data "$1" >/dev/null 2>&1 || true; }
publish 't/a/ 1 0/1 {"n":1}'
publish 'u/x/ 1 0/1 {"other":1}'    # another prefix: filtered out by the subscriber
publish 't/a/ 4 0/2 {"n":4}'         # 2 and 3 lost
publish 't/b/ 7 0/3 {"n":7}'         # first message of t/b/: no gap
wait $SUB && rc=0 || rc=$?
check "example: exits 0 after --count" 0 "$rc"
check "example: prints the messages of its prefix, in order" \
  't/a/ 1 0/1 {"n":1}|t/a/ 4 0/2 {"n":4}|t/b/ 7 0/3 {"n":7}' "$(paste -sd'|' "$WORK/nng1.out")"
check "example: reports the gap" "gap topic=t/a/ lost=2 before seq=4" "$(grep '^gap' "$WORK/nng1.err")"
check "example: summary" "messages=3 topics=2 lost=2 restarts=0" "$(grep '^messages=' "$WORK/nng1.err")"

# ---- 2. walcast run with an nng sink ------------------------------------------------------------
if ! "$WALCAST" run --help >/dev/null 2>&1; then
  echo "# walcast run is not in this build: part 2 skipped"
  summary
  exit
fi
P=$(port)
HTTP=$(port)
cat >"$WORK/nng.conf" <<CONF
[replication]
slot = nng_it
[pipeline]
state_dir = $WORK/nng-state
[http]
listen = 127.0.0.1:$HTTP
[sink.live]
type = nng
listen = tcp://127.0.0.1:$P
; 200 rows x (bypass + every rank + users named) in one burst: room for all of it
sendbuf = 8192
coalesce = ${NNG_COALESCE:-on}
CONF
as_user() {
  sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}'; $2"
}
org=$(sql -c "INSERT INTO orgs (name) VALUES ('nng') RETURNING id")
viewer=$(sql -c "SELECT gen_random_uuid()")   # a viewer who handles the private contact's events
viewer2=$(sql -c "SELECT gen_random_uuid()")  # a viewer who handles nothing
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$org', '$viewer', 'viewer'), ('$org', '$viewer2', 'viewer')" >/dev/null
"$WALCAST" -c "$WORK/nng.conf" run --policy "$ROOT/deploy/policy.ini" >"$WORK/run.out" 2>"$WORK/run.err" &
RUN=$!; BG_PIDS+=($RUN)
ready() { curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null; }
wait_for 60 ready || { echo "not ok - walcast run did not become ready"; cat "$WORK/run.err"; exit 1; }
prefix="walcast/v1/org/$org/role/viewer/public.events/"
nngcat --sub --dial "tcp://127.0.0.1:$P" --subscribe "$prefix" --quoted --recv-timeout 15 >"$WORK/nngcat.out" 2>&1 &
CAT=$!; BG_PIDS+=($CAT)
"$SUBSCRIBER" --timeout 15 "tcp://127.0.0.1:$P" "$prefix" >"$WORK/nng2.out" 2>"$WORK/nng2.err" &
SUB=$!; BG_PIDS+=($SUB)
"$SUBSCRIBER" --timeout 15 "tcp://127.0.0.1:$P" "walcast/v1/org/$org/" >"$WORK/nng3.out" 2>"$WORK/nng3.err" &
SUB3=$!; BG_PIDS+=($SUB3)
sleep 2
# the shared sink series (sink_env.live_metrics): nng's pipe notifications count the subscribers
live_metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1{sink=\"live\"}" '$1 == m {print $2}'; }
three_connected() { [ "$(live_metric walcast_connections)" = 3 ]; }
check_true "/metrics: walcast_connections{sink=\"live\"} counts the three subscribers" wait_for 20 three_connected
check "/metrics: walcast_sink_drops_total{sink=\"live\"} is there, nothing dropped yet" 0 \
  "$(live_metric walcast_sink_drops_total)"
sql <<SQL >/dev/null
INSERT INTO events (org_id, kind, direction, status, from_number)
  SELECT '$org', 'call', 'inbound', 'nng ' || g, '+3361234' || lpad(g::text, 4, '0') FROM generate_series(1, 200) g;
WITH c AS (INSERT INTO contacts (org_id, name) VALUES ('$org', 'private') RETURNING id),
     r AS (INSERT INTO privacy_rules (org_id, contact_id, min_role) SELECT '$org', id, 'admin' FROM c)
INSERT INTO events (org_id, contact_id, user_id, kind, direction, status, from_number)
  SELECT '$org', c.id, '$viewer', 'sms', 'outbound', 'nng private ' || g, '+3369876' || lpad(g::text, 4, '0')
  FROM c, generate_series(1, 20) g;
SQL
wait $CAT || true
wait $SUB || true
wait $SUB3 || true
want=$(as_user "$viewer2" "SELECT count(*) FROM events WHERE org_id = '$org' AND status LIKE 'nng %'")
check "RLS: a viewer who handles nothing sees the 200 public events only" 200 "$want"
# nngcat --quoted prints one line per message, quoted and escaped: split each into its records
# ("TOPIC SEQ LSN PAYLOAD", the topic once per message, then one record per line). nngcat's SUB
# queue is nng's default (128 messages) and drops its oldest when nngcat falls behind the burst:
# what it got is what it got, but never out of order, and the last payload (kept by drop-oldest)
# says how many there were
python3 - "$WORK/nngcat.out" "$WORK/nngcat.records" "$WORK/nngcat.counts" <<'PY'
import ast, sys
msgs = recs = most = 0
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        if not line.startswith('"'):
            continue
        body = ast.literal_eval("b" + line.strip()).decode()
        topic, rest = body.split(" ", 1)
        lines = rest.split("\n")
        msgs += 1; recs += len(lines); most = max(most, len(lines))
        for r in lines:
            out.write(topic + " " + r + "\n")
open(sys.argv[3], "w").write(f"{msgs} {recs} {most}\n")
PY
read -r cat_msgs cat_recs cat_most <"$WORK/nngcat.counts"
awk '{print $2}' "$WORK/nngcat.records" >"$WORK/nngcat.seq"
check "nngcat: sequence numbers increasing" "" "$(sort -n -c "$WORK/nngcat.seq" 2>&1 | head -1; sort -n "$WORK/nngcat.seq" | uniq -d | head -1)"
check "nngcat: the last sequence number is the number of events RLS shows a viewer" "$want" "$(tail -n 1 "$WORK/nngcat.seq")"
if [ "${NNG_COALESCE:-on}" = on ]; then
  check_true "coalesce on: nngcat got several payloads per message ($cat_recs payloads in $cat_msgs messages, up to $cat_most in one)" \
    test "$cat_most" -gt 1 -a "$cat_msgs" -lt "$cat_recs"
else
  check "coalesce off: nngcat got one payload per message" "$cat_msgs" "$cat_recs"
fi
check "nngcat: the payloads it got are the viewer topic's, each well-formed" "$cat_recs" \
  "$(grep -c "^$prefix [0-9]* [0-9A-F]*/[0-9A-F]* {.*}$" "$WORK/nngcat.records" || true)"
check "example: same count" "$want" "$(grep -c "^$prefix " "$WORK/nng2.out" || true)"
check "example: sequence numbers 1..n, no gap" "1 $want" \
  "$(awk '{print $2}' "$WORK/nng2.out" | sort -n | sed -n '1p;$p' | paste -sd' ')"
check "example: no loss reported" "" "$(grep '^gap' "$WORK/nng2.err" || true)"
check "example: sequence numbers in order of receipt, 1, 2, ... n" "$(seq -s ' ' 1 "$want")" \
  "$(awk '{print $2}' "$WORK/nng2.out" | paste -sd' ')"
# the payloads, row by row, against the masking view as that viewer (PostgreSQL is the oracle)
want_rows=$(as_user "$viewer2" "SELECT string_agg(id::text || '=' || coalesce(from_number, 'NULL'), ',' ORDER BY id::text COLLATE \"C\") FROM walcast.events_masked WHERE org_id = '$org' AND status LIKE 'nng %'")
got_rows=$(cut -d' ' -f4- "$WORK/nng2.out" | jq -r '.new.id + "=" + (.new.from_number // "NULL")' | LC_ALL=C sort | paste -sd, -)
check "example: payloads masked exactly as walcast.events_masked shows a viewer" "$want_rows" "$got_rows"
check "the viewer's masking really masks (last four digits)" 200 "$(tr ',' '\n' <<<"$want_rows" | grep -c '=\*\*\*\*\*\*\*\*[0-9]\{4\}$' || true)"
# the handler's own topic: the private contact's events, as RLS and the masking view show them
# to the handler; none of them on the viewer role's topic
utopic="walcast/v1/org/$org/user/$viewer/public.events/"
want_own=$(as_user "$viewer" "SELECT string_agg(id::text || '=' || coalesce(from_number, 'NULL'), ',' ORDER BY id::text COLLATE \"C\") FROM walcast.events_masked WHERE org_id = '$org' AND status LIKE 'nng private %'")
check "RLS: the handler sees the 20 private events" 20 "$(tr ',' '\n' <<<"$want_own" | grep -c . || true)"
got_own=$(grep "^$utopic " "$WORK/nng3.out" | cut -d' ' -f4- | jq -r '.new.id + "=" + (.new.from_number // "NULL")' | LC_ALL=C sort | paste -sd, -)
check "user topic: the private events exactly as the handler sees them" "$want_own" "$got_own"
check "viewer role topic: no private event" 0 "$(grep "^walcast/v1/org/$org/role/viewer/" "$WORK/nng3.out" | grep -c 'nng private' || true)"
check "the whole-org prefix also got the viewer topic's 200" 200 "$(grep -c "^$prefix " "$WORK/nng3.out" || true)"
check "no user topic for the viewer who handles nothing" 0 "$(grep -c "/user/$viewer2/" "$WORK/nng3.out" || true)"
check "whole-org subscriber: no loss reported" "" "$(grep '^gap' "$WORK/nng3.err" || true)"
kill -TERM $RUN 2>/dev/null || true
wait $RUN 2>/dev/null || true

summary

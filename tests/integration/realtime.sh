#!/usr/bin/env bash
# The realtime sink with real clients (issue 9, "Tests with real clients"): `walcast run` with a
# [sink.NAME] of type realtime on the daemon's HTTP listener, fed by the harness's PostgreSQL with
# the platform schema, driven by the unmodified @supabase/realtime-js 2.119.0 (transport `ws`)
# and by raw `ws` clients. Each tests/realtime-js/*.test.mjs is one part (its header says what it
# proves; PostgreSQL's RLS and masking views are the oracle everywhere):
#   views.test.mjs       every role and service_role, both serializers, every table, filters:
#                        exactly the events, shapes and values the masking views give each user,
#                        demotion and removal mid-stream included; other orgs get nothing
#   subscribed.test.mjs  50 clients write right after SUBSCRIBED: every change committed after a
#                        client's SUBSCRIBED reaches it
#   auth.test.mjs        refused handshakes (401/403 + JSON), token refresh (access_token),
#                        expiry mid-stream (system error + phx_close), refused joins
#   hostile.test.mjs     bad JSON, unknown events, oversized frames, join floods, a killed client,
#                        a slow client: clear errors for that client, the others keep receiving,
#                        the daemon stays up with bounded memory
#   view.test.mjs        the walcast_view = "stay_true" extension: a row an UPDATE hides comes as a
#                        DELETE on opted-in channels only, a demotion as a walcast_view system message
#   audit.test.mjs       (a daemon of its own, [audit] enabled) joins, refused joins and leaves
#                        become audit_log rows per org; they come back through the WAL to the
#                        org's admin exactly as PostgreSQL shows them; nothing loops
#   limits.test.mjs      (a daemon of its own, small limits) 429 "Too many connected users",
#                        too many channels, a message over max_message_bytes
# RT_TESTS="views auth" runs only those parts. Cases of features walcast does not have yet are
# marked pending in the files and run only with WALCAST_RT_PENDING=1. WALCAST_RT_SLOW=N scales
# every timeout. The node packages (tests/realtime-js/package-lock.json) are installed with
# `npm ci` into tests/realtime-js/node_modules when missing.
source "$(dirname "$0")/lib.sh"
trap 'echo "# realtime.sh: line $LINENO failed: $BASH_COMMAND"' ERR

JS=$ROOT/tests/realtime-js
rt_js_install "$JS" || exit 1
check "realtime-js is the pinned 2.119.0" 2.119.0 "$(node -p "require('$JS/node_modules/@supabase/realtime-js/package.json').version")"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(port)
export WALCAST_AUTH_JWT_SECRET="realtime-test-secret-with-enough-length-for-hs256-0123456789"
# expiry mid-stream is tested with short-lived tokens: no clock-skew allowance on exp
export WALCAST_AUTH_JWT_LEEWAY=0s
install -m 600 "$ROOT/tests/fixtures/keys/test.keys" "$WORK/keys"
export WALCAST_KEYS_FILE=$WORK/keys
# start_walcast NAME [SECTIONS]: `walcast run` with the realtime sink [sink.live] on a free port
# (HTTP), its own slot and state, SECTIONS appended to the configuration; RUN is its pid.
ready() { curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null; }
ready_or_gone() { ready || ! kill -0 $RUN 2>/dev/null; }
start_walcast() {
  HTTP=$(port)
  cat >"$WORK/$1.conf" <<CONF
[replication]
slot = $1
[pipeline]
state_dir = $WORK/$1-state
[http]
listen = 127.0.0.1:$HTTP
[sink.live]
type = realtime
${WALCAST_RT_SINK_EXTRA:-}
${2:-}
CONF
  # WALCAST_RT_POLICY: another policy for walcast than the one the database's views were made
  # from (a mutation check: the oracle must then catch the difference)
  "$WALCAST" -c "$WORK/$1.conf" run --policy "${WALCAST_RT_POLICY:-$ROOT/deploy/policy.ini}" >"$WORK/$1.out" 2>"$WORK/$1.err" &
  RUN=$!; BG_PIDS+=($RUN)
  export WALCAST_RT_HTTP="http://127.0.0.1:$HTTP" WALCAST_PID=$RUN
}
# stop_walcast NAME: SIGTERM; it must exit 0 and have logged no crash
stop_walcast() {
  check "$1: walcast logged no crash or assertion" "" "$(grep -Ei 'assert|segfault|AddressSanitizer|runtime error' "$WORK/$1.err" | head -3)"
  kill -TERM $RUN 2>/dev/null || true
  local rc=0; wait $RUN 2>/dev/null || rc=$?
  check "$1: walcast run exits 0 on SIGTERM" 0 "$rc"
}
# run_part PART: one tests/realtime-js/PART.test.mjs against the running daemon
run_part() {
  echo "# ==== $1.test.mjs"
  node_part "$1" "$JS/$1.test.mjs"
  check_true "$1: walcast run still running" kill -0 $RUN
}

start_walcast realtime_it
if ! wait_for 90 ready_or_gone || ! ready; then
  if ! kill -0 $RUN 2>/dev/null && grep -qi "realtime" "$WORK/realtime_it.err"; then
    # the sink type does not exist in this build (walcast refuses the configuration)
    echo "# the realtime sink is not in this build: skipped ($(grep -i realtime "$WORK/realtime_it.err" | head -1))"
    summary
    exit
  fi
  echo "not ok - walcast run did not become ready"; cat "$WORK/realtime_it.err"; exit 1
fi
# a WebSocket upgrade without a key: the sink refuses it (401); without the sink nobody serves the path
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
  -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "http://127.0.0.1:$HTTP/realtime/v1/websocket" || true)
if [ "$code" = 404 ]; then
  echo "# /realtime/v1/websocket answers 404: the realtime sink is not in this build: skipped"
  summary
  exit
fi

export WALCAST_BIN=$WALCAST
# a sanitizer build keeps freed memory in quarantine: its RSS says nothing about what walcast holds
# (ldd's whole output first: under pipefail, grep -q ending the pipe early makes it fail)
case "$(ldd "$WALCAST" 2>/dev/null || true)" in *libasan*) export WALCAST_RT_SANITIZED=1 ;; esac
PARTS=${RT_TESTS:-views subscribed auth hostile view audit limits resume}
for part in $PARTS; do
  case $part in audit|limits|resume) continue ;; esac
  run_part "$part"
  kill -0 $RUN 2>/dev/null || { tail -30 "$WORK/realtime_it.err"; break; }
done
stop_walcast realtime_it

# part_on_own_daemon PART SECTIONS: PART against a daemon of its own, configured with SECTIONS
part_on_own_daemon() {
  [[ " $PARTS " == *" $1 "* ]] || return 0
  start_walcast "realtime_$1" "$2"
  if wait_for 90 ready; then
    run_part "$1"
  else
    echo "not ok - walcast run for $1 did not become ready"; cat "$WORK/realtime_$1.err"; FAILED=$((FAILED + 1))
  fi
  stop_walcast "realtime_$1"
}
# audit: its audit rows would be changes the other parts do not expect
part_on_own_daemon audit "$(printf '[audit]\nenabled = true\nflush_interval = 100ms\nsync_health_interval = 0\n')"
# limits: small ones, in the sink's section (the lines follow `type = realtime`)
part_on_own_daemon limits "$(printf 'max_connections = 20\nmax_channels = 3\nmax_message_bytes = 4096\n')"
# resume: a replay buffer (the sink's section)
part_on_own_daemon resume "$(printf 'replay_bytes = 16MB\nreplay_seconds = 600\n')"
summary

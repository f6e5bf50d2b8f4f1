#!/usr/bin/env bash
# The realtime sink's memory per idle connection (issue 9: at most 4 KB): walcast's VmRSS with
# none, N/2 and N WebSocket clients (bench/rt_load.c, vsn 2.0.0), each its own member's HS256
# token, joined to one channel with a filtered postgres_changes binding, subscribed and idle.
# The bound is judged on the second half's growth / (N/2): the marginal cost of a connection,
# free of one-off growth (tables sized on first use). rt_load signals ready only once every
# client was answered "Subscribed to PostgreSQL".
#   WALCAST_RT_IDLE_CLIENTS (default 2000), WALCAST_RT_IDLE_MAX_BYTES (default 4096).
source "$(dirname "$0")/lib.sh"
trap 'echo "# rt_idle_rss.sh: line $LINENO failed: $BASH_COMMAND"' ERR
LOAD=${WALCAST_RT_LOAD_BIN:-$(dirname "$WALCAST")/rt_load}
N=${WALCAST_RT_IDLE_CLIENTS:-2000}
MAX=${WALCAST_RT_IDLE_MAX_BYTES:-4096}
ORGS=20
export WALCAST_AUTH_JWT_SECRET="test-secret-with-enough-length-for-hs256-0123456789"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $(( N + 200 )) ] || { echo "not ok - ulimit -n $(ulimit -n) is below $N connections"; exit 1; }

sql <<SQL >/dev/null
INSERT INTO orgs (name) SELECT 'idle-' || g FROM generate_series(1, $ORGS) g;
INSERT INTO org_roles (org_id, user_id, role)
  SELECT o.id, gen_random_uuid(), 'member'
  FROM generate_series(0, $N - 1) g
  JOIN (SELECT id, row_number() OVER (ORDER BY name) - 1 AS k FROM orgs WHERE name LIKE 'idle-%') o
    ON o.k = g % $ORGS;
SQL
exp=$(( $(date +%s) + 3600 ))
sql -F ' ' -c "SELECT r.org_id, r.user_id FROM org_roles r JOIN orgs o ON o.id = r.org_id WHERE o.name LIKE 'idle-%'" |
  python3 -c '
import base64, hashlib, hmac, json, os, sys
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = os.environ["WALCAST_AUTH_JWT_SECRET"].encode()
head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
for line in sys.stdin:
    org, user = line.split()
    body = enc(json.dumps({"sub": user, "role": "authenticated", "exp": int(sys.argv[1])}).encode())
    sig = enc(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    print(org, f"{head}.{body}.{sig}")
' "$exp" >"$WORK/tokens"
check "one token per member" "$N" "$(wc -l <"$WORK/tokens")"
head -n $(( N / 2 )) "$WORK/tokens" >"$WORK/tokens.1"
tail -n +$(( N / 2 + 1 )) "$WORK/tokens" >"$WORK/tokens.2"

HTTP=$(port)
cat >"$WORK/rt.conf" <<CONF
[replication]
slot = rt_idle
[pipeline]
state_dir = $WORK/rt-state
[http]
listen = 127.0.0.1:$HTTP
[sink.live]
type = realtime
max_connections = $(( N + 100 ))
CONF
"$WALCAST" -c "$WORK/rt.conf" run >"$WORK/rt.log" 2>&1 &
WPID=$!; BG_PIDS+=($WPID)
streaming() { curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null; }
wait_for 60 streaming || { echo "not ok - walcast did not become ready"; cat "$WORK/rt.log"; exit 1; }
channels() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk '$1 ~ /^walcast_realtime_channels($|[{])/ {n += $2} END {print n}'; }

half() { # K: connects tokens.K, waits until every client is SUBSCRIBED
  rm -f "$WORK/ready.$1"
  "$LOAD" --port "$HTTP" --tokens "$WORK/tokens.$1" --ready "$WORK/ready.$1" --idle 600 --timeout 600 \
    >"$WORK/load.$1" 2>"$WORK/load.$1.err" &
  LP=$!; BG_PIDS+=($LP)
  ready() { [ -f "$WORK/ready.$1" ] || ! kill -0 $LP 2>/dev/null; }
  wait_for 120 ready "$1" || true
  [ -f "$WORK/ready.$1" ] || { echo "not ok - clients of half $1 not subscribed"; cat "$WORK/load.$1.err"; exit 1; }
}
settled() { # RSS unchanged over a second (the loop has handled every join)
  local a b; a=$(rss_kb $WPID); sleep 1; b=$(rss_kb $WPID); [ "$a" = "$b" ]
}
wait_for 20 settled || true
RSS0=$(rss_kb $WPID)
half 1; wait_for 20 settled || true; RSS1=$(rss_kb $WPID)
check "half 1: every channel joined" "$(( N / 2 ))" "$(channels)"
half 2; wait_for 20 settled || true; RSS2=$(rss_kb $WPID)
check "half 2: every channel joined" "$(( N / 2 * 2 ))" "$(channels)"
per=$(( (RSS2 - RSS1) * 1024 / (N / 2) ))
echo "# RSS ${RSS0} -> ${RSS1} -> ${RSS2} KB at 0, $(( N / 2 )), $(( N / 2 * 2 )) connections: ${per} B per idle connection (from none: $(( (RSS2 - RSS0) * 1024 / N )) B)"
if ldd "$WALCAST" 2>/dev/null | grep -q libasan; then
  # AddressSanitizer's redzones and quarantine multiply every allocation: the bound is the
  # release build's (the connections above were still served and joined)
  echo "# sanitizer build: the memory bound is checked in the release build only"
else
  check_true "idle connection costs at most $MAX B (${per} B)" [ "$per" -le "$MAX" ]
fi
summary

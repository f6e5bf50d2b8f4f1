#!/usr/bin/env bash
# walcast's demo on a fresh Debian 12 machine: installs what is missing, builds walcast, starts a
# private PostgreSQL 15 and Redis (tests/harness/harness.sh), applies the platform schema, seeds
# demo orgs and users, runs `walcast run` with a Supabase Realtime sink and a Redis aggregates
# sink, runs the traffic generator, and serves the live dashboard at http://127.0.0.1:PORT/:
# two users' feeds of one org side by side (masks applied per user), each with live charts of the
# stats API read as that user, and walcast's health. The generator leaves the roles of the users
# the page shows by default (owner, viewer) alone (traffic.sh --keep-roles).
#
#   bash deploy/demo.sh                          run until Ctrl-C (stops everything it started)
#   WALCAST_DEMO_SECONDS=60 bash deploy/demo.sh  run 60 s, then clean up
#   WALCAST_DEMO_PORT=8088 (default)  the page's port;  WALCAST_DEMO_RATE=20  events per second (0: no generator)
#   WALCAST_DEMO_READY=FILE  (tests) written with the page's URL once it is served
#   WALCAST_DEMO_POLICY=FILE (tests) walcast's policy instead of deploy/policy.ini (a mutation
#                            check: the browser test must then fail against the database's views)
#
# The page (deploy/demo/web: index.html, app.js) is bundled with @supabase/realtime-js by
# esbuild (pinned in deploy/demo/web/package-lock.json, installed with `npm ci`) into the
# harness's scratch directory at start; the bundle is never committed. DEMO ONLY: the page gets
# its users' tokens from users.json, minted with the demo's public secret (deploy/demo/tokens.mjs);
# the listener is bound to 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" != "--inside" ]; then
  [ "${WALCAST_DEMO_SKIP_INSTALL:-0}" = 1 ] || bash deploy/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)" --target walcast >/dev/null
  exec tests/harness/harness.sh run -- bash "$0" --inside
fi

# Inside the harness: PG* and WALCAST_REDIS_URL point at the private servers.
SECONDS_TO_RUN=${WALCAST_DEMO_SECONDS:-0}
PORT=${WALCAST_DEMO_PORT:-8088}
RATE=${WALCAST_DEMO_RATE:-20}
export WALCAST_BIN=${WALCAST_BIN:-$ROOT/build/walcast}  # traffic.sh encrypts bodies with it
D=$WALCAST_HARNESS_DIR
WEB=$ROOT/deploy/demo/web
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Demo keys and JWT secret (public test values: never use them for real data).
install -m 600 "$ROOT/tests/fixtures/keys/test.keys" "$D/keys"
export WALCAST_KEYS_FILE="$D/keys"
export WALCAST_AUTH_JWT_SECRET="walcast-demo-secret-public-never-use-for-real-data-0123456789"
echo "walcast demo: PostgreSQL on 127.0.0.1:$PGPORT, Redis at $WALCAST_REDIS_URL" >&2

echo "walcast demo: building the page (esbuild, @supabase/realtime-js from npm) ..." >&2
if [ ! -x "$WEB/node_modules/.bin/esbuild" ] || [ ! -f "$WEB/node_modules/@supabase/realtime-js/package.json" ]; then
  (flock 9; cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error) 9>"$WEB/.npm-install.lock"
fi
mkdir -p "$D/web"
"$WEB/node_modules/.bin/esbuild" "$WEB/app.js" --bundle --format=iife --target=es2020 \
  --log-level=warning --outfile="$D/web/app.js"
cp "$WEB/index.html" "$D/web/index.html"

echo "walcast demo: seeding orgs, users and contacts ..." >&2
bash deploy/demo/traffic.sh --print-users --orgs 3 --seed 42 >"$D/users.txt"
node deploy/demo/tokens.mjs --defaults owner,viewer <"$D/users.txt" >"$D/web/users.json"
# the page's default users keep their roles: the generator's role changes pick among the others
KEEP_ROLES=$(node -e 'const c = JSON.parse(require("fs").readFileSync(0, "utf8"));
  console.log(c.users.filter((u) => u.steady).map((u) => u.uid).join(","))' <"$D/web/users.json")

cat >"$D/walcast.conf" <<CONF
[replication]
slot = walcast_demo
[pipeline]
state_dir = $D/state
[http]
listen = 127.0.0.1:$PORT
static_dir = $D/web
slot_status_interval = 5s
[sink.dashboards]
type = realtime
[sink.stats]
type = redis
url = $WALCAST_REDIS_URL
table = public.events
CONF
"$WALCAST_BIN" -c "$D/walcast.conf" run --policy "${WALCAST_DEMO_POLICY:-$ROOT/deploy/policy.ini}" 2>"$D/walcast.log" &
PIDS+=($!)
WALCAST_PID=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  kill -0 "$WALCAST_PID" 2>/dev/null || { echo "walcast demo: walcast run exited:" >&2; tail -20 "$D/walcast.log" >&2; exit 1; }
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "walcast demo: walcast not ready after 120 s" >&2; tail -20 "$D/walcast.log" >&2; exit 1; }

if [ "$RATE" -gt 0 ]; then
  bash deploy/demo/traffic.sh --orgs 3 --events 10000000 --rate "$RATE" --seed 42 --keep-roles "$KEEP_ROLES" 2>"$D/traffic.log" &
  PIDS+=($!)
  echo "walcast demo: generating traffic ($RATE events/s)" >&2
fi
URL="http://127.0.0.1:$PORT/"
echo "walcast demo: walcast's log: $D/walcast.log" >&2
echo "walcast demo: open $URL  (?left=owner&right=viewer picks the users; Ctrl-C stops everything)"
[ -z "${WALCAST_DEMO_READY:-}" ] || echo "$URL" >"$WALCAST_DEMO_READY"
if [ "$SECONDS_TO_RUN" -gt 0 ]; then
  sleep "$SECONDS_TO_RUN"
  echo "walcast demo: done ($SECONDS_TO_RUN s)." >&2
else
  wait "$WALCAST_PID"
fi

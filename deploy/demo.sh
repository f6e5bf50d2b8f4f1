#!/usr/bin/env bash
# walcast's demo on a fresh Debian 12 machine: installs what is missing, builds walcast, starts a
# private PostgreSQL 15 and Redis (tests/harness/harness.sh), applies the platform schema, runs the
# traffic generator and shows the live change feed from `walcast tail`.
#
#   bash deploy/demo.sh                 run for WALCAST_DEMO_SECONDS (default 30), then clean up
#   WALCAST_DEMO_SECONDS=0 bash deploy/demo.sh   run until Ctrl-C
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" != "--inside" ]; then
  bash deploy/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)" --target walcast >/dev/null
  exec tests/harness/harness.sh run -- bash "$0" --inside
fi

# Inside the harness: PG* and WALCAST_REDIS_URL point at the private servers.
SECONDS_TO_RUN=${WALCAST_DEMO_SECONDS:-30}
export WALCAST_BIN="$ROOT/build/walcast"
# Demo keys (the public test keys: never use them for real data).
install -m 600 "$ROOT/tests/fixtures/keys/test.keys" "$WALCAST_HARNESS_DIR/keys"
export WALCAST_KEYS_FILE="$WALCAST_HARNESS_DIR/keys"
echo "walcast demo: PostgreSQL on 127.0.0.1:$PGPORT, Redis at $WALCAST_REDIS_URL" >&2
echo "walcast demo: seeding orgs, users and contacts ..." >&2
bash deploy/demo/traffic.sh --print-users --orgs 3 --seed 42 >"$WALCAST_HARNESS_DIR/users.txt"
org=$(awk 'NR == 1 {print $1}' "$WALCAST_HARNESS_DIR/users.txt")
owner=$(awk -v o="$org" '$1 == o && $3 == "owner" {print $2; exit}' "$WALCAST_HARNESS_DIR/users.txt")
viewer=$(awk -v o="$org" '$1 == o && $3 == "viewer" {print $2; exit}' "$WALCAST_HARNESS_DIR/users.txt")

# Two live feeds of the same org, as two users see them: the owner sees full phone numbers and
# decrypted message bodies; the viewer sees masked numbers, no bodies, and nothing a privacy
# rule keeps from viewers. Each feed is `walcast tail --as USER` (a temporary slot whose snapshot
# gives the starting memberships and rules). Drop the jq stage to see the full JSON lines.
feed() { # label uid
  "$WALCAST_BIN" tail --as "$2" -t events -t org_roles -a insert,update,delete \
    > >(jq --unbuffered -r --arg who "$1" '[$who, .action, .table,
          ((.new // .old) | (.kind // .role // ""), (.status // ""),
           (if .from_number then "from " + .from_number else "" end),
           (if has("body") then "body: " + (.body // "null") else "" end))] | @tsv') \
    2> >(grep -v " INFO " >&2) &
}
feed "owner " "$owner"
OWNER_FEED=$!
feed "viewer" "$viewer"
VIEWER_FEED=$!
trap 'kill $OWNER_FEED $VIEWER_FEED $TRAFFIC 2>/dev/null || true' EXIT
sleep 1
echo "walcast demo: generating traffic (20 events/s); the owner's and the viewer's feeds of org ${org:0:8} follow" >&2
bash deploy/demo/traffic.sh --orgs 3 --events 100000 --rate 20 --seed 42 2>/dev/null &
TRAFFIC=$!
if [ "$SECONDS_TO_RUN" -gt 0 ]; then
  sleep "$SECONDS_TO_RUN"
  kill -TERM $TRAFFIC 2>/dev/null || true
  sleep 1
  kill -TERM $OWNER_FEED $VIEWER_FEED 2>/dev/null || true
  wait $OWNER_FEED $VIEWER_FEED 2>/dev/null || true
  echo "walcast demo: done ($SECONDS_TO_RUN s)." >&2
else
  wait $OWNER_FEED
fi

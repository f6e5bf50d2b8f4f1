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
WALCAST="$ROOT/build/walcast"
echo "walcast demo: PostgreSQL on 127.0.0.1:$PGPORT, Redis at $WALCAST_REDIS_URL" >&2
echo "walcast demo: seeding orgs, users and contacts ..." >&2
bash deploy/demo/traffic.sh --print-users --orgs 3 --seed 42 >"$WALCAST_HARNESS_DIR/users.txt"

# The feed: walcast tail on the platform publication, as the replication role would run it.
# Each change is shown compactly; drop the jq stage to see the full JSON lines.
"$WALCAST" tail -S demo -P pgoutput --publication walcast -d "$WALCAST_REPL_CONNINFO" \
  -t events -t org_roles -t privacy_rules -a insert,update,delete \
  > >(jq --unbuffered -r '[.commit_lsn, (.commit_time | .[11:23]), .action, .table,
        ((.new // .old) | (.kind // .role // .min_role // ""), (.status // ""),
         ("org " + (.org_id | .[0:8])))] | @tsv') &
TAIL=$!
trap 'kill $TAIL $TRAFFIC 2>/dev/null || true' EXIT
sleep 1
echo "walcast demo: generating traffic (20 events/s); live changes follow" >&2
bash deploy/demo/traffic.sh --orgs 3 --events 100000 --rate 20 --seed 42 2>/dev/null &
TRAFFIC=$!
if [ "$SECONDS_TO_RUN" -gt 0 ]; then
  sleep "$SECONDS_TO_RUN"
  kill -TERM $TRAFFIC 2>/dev/null || true
  sleep 1
  kill -TERM $TAIL 2>/dev/null || true
  wait $TAIL 2>/dev/null || true
  echo "walcast demo: done ($SECONDS_TO_RUN s). Status of the slot:" >&2
  "$WALCAST" status -S demo
else
  wait $TAIL
fi

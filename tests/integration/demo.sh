#!/usr/bin/env bash
# The demo dashboard (issue 11, "The demo"): deploy/demo.sh's inside part (walcast run with the
# realtime and redis sinks, the page served by [http] static_dir) without its traffic generator,
# then tests/demo/dashboard.test.mjs in Debian's Chromium through playwright-core: an analyst and
# a viewer side by side against PostgreSQL's masking views as those users, and the charts of the
# stats API against SQL while and after the traffic generator writes. Screenshots land in
# BUILD/test-output/demo/. traffic.sh --keep-roles on an org of its own: the role changes never
# touch the kept users. Then SIGTERM to the demo: it must stop everything it started.
source "$(dirname "$0")/lib.sh"
trap 'echo "# demo.sh: line $LINENO failed: $BASH_COMMAND"' ERR

CHROMIUM=${WALCAST_CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "not ok - $CHROMIUM missing (Debian's chromium, deploy/install-deps.sh)"; exit 1; }
command -v npm >/dev/null || { echo "not ok - npm missing (deploy/install-deps.sh)"; exit 1; }
T=$ROOT/tests/demo
if [ ! -f "$T/node_modules/playwright-core/package.json" ]; then
  (flock 9; [ -f "$T/node_modules/playwright-core/package.json" ] || (cd "$T" && npm ci --no-audit --no-fund --loglevel=error)) \
    9>"$T/.npm-install.lock" || { echo "not ok - npm ci in $T failed"; exit 1; }
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SHOTS=$(dirname "$WALCAST")/test-output/demo
rm -rf "$SHOTS"; mkdir -p "$SHOTS"

WALCAST_DEMO_RATE=0 WALCAST_DEMO_PORT=$PORT WALCAST_DEMO_READY=$WORK/url WALCAST_BIN=$WALCAST \
  setsid bash "$ROOT/deploy/demo.sh" --inside >"$WORK/demo.out" 2>&1 &
DEMO=$!; BG_PIDS+=("$DEMO")
for _ in $(seq 1 900); do
  [ -s "$WORK/url" ] && break
  kill -0 $DEMO 2>/dev/null || break
  sleep 0.2
done
check "the demo prints the page's address" "http://127.0.0.1:$PORT/" "$(cat "$WORK/url" 2>/dev/null)"
grep -q "open http://127.0.0.1:$PORT/" "$WORK/demo.out" || { echo "# demo output:"; sed 's/^/#   /' "$WORK/demo.out"; }
check "the page is served" 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")"
check "the bundle is served as JavaScript" "text/javascript; charset=utf-8" \
  "$(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$PORT/app.js")"
check "no traversal out of the page's directory" 404 \
  "$(curl -s --path-as-is -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/../walcast.conf")"

export WALCAST_DEMO_URL="http://127.0.0.1:$PORT/" WALCAST_DEMO_SHOTS=$SHOTS WALCAST_BIN=$WALCAST \
  WALCAST_DEMO_USERS=$WALCAST_HARNESS_DIR/web/users.json WALCAST_KEYS_FILE=$WALCAST_HARNESS_DIR/keys
set +e
node "$T/dashboard.test.mjs" | tee "$WORK/browser.out"
set -e
P=$(grep -c '^ok - ' "$WORK/browser.out" || true); F=$(grep -c '^not ok - ' "$WORK/browser.out" || true)
PASSED=$((PASSED + P)); FAILED=$((FAILED + F))
check "screenshots saved" 5 "$(ls "$SHOTS"/*.png 2>/dev/null | wc -l)"
echo "# screenshots: $SHOTS"

# traffic.sh --keep-roles: an org of its own (seed 7, 5 users: owner, admin, analyst, member,
# viewer), ~30 role changes as fast as psql goes, no bodies. Kept: the analyst and the viewer;
# the role changes (audit_log role.*) must all go to the admin and the member, both of them.
TRAFFIC=(env -u WALCAST_KEYS_FILE -u WALCAST_KEYS WALCAST_BIN= bash "$ROOT/deploy/demo/traffic.sh" --orgs 1 --users 5 --seed 7)
"${TRAFFIC[@]}" --print-users >"$WORK/users7.txt"
ORG7=$(awk 'NR == 1 { print $1 }' "$WORK/users7.txt")
uid7() { awk -v r="$1" '$3 == r { print $2; exit }' "$WORK/users7.txt"; }
KEEP7="$(uid7 analyst),$(uid7 viewer)"
"${TRAFFIC[@]}" --events 800 --rate 0 --keep-roles "$KEEP7" 2>"$WORK/traffic7.log" || { echo "# traffic.sh:"; tail -5 "$WORK/traffic7.log"; }
role_changes() { sql -c "SELECT count(*) FROM audit_log WHERE org_id = '$ORG7' AND action LIKE 'role.%' AND target_id = '$1'"; }
check "--keep-roles: no role change for the kept analyst and viewer" "0 0" "$(role_changes "$(uid7 analyst)") $(role_changes "$(uid7 viewer)")"
check_true "--keep-roles: the admin and the member are changed instead" \
  test "$(role_changes "$(uid7 admin)")" -gt 0 -a "$(role_changes "$(uid7 member)")" -gt 0
check "--keep-roles: the kept users hold their seeded roles" "analyst viewer" \
  "$(sql -c "SELECT string_agg(role, ' ' ORDER BY role) FROM org_roles WHERE org_id = '$ORG7' AND user_id IN ('$(uid7 analyst)', '$(uid7 viewer)')")"
rc=0; "${TRAFFIC[@]}" --events 1 --keep-roles 00000000-0000-4000-8000-000000000000 2>"$WORK/traffic7.err" || rc=$?
check_true "--keep-roles: an id that is not a seeded user is refused" \
  test "$rc" -ne 0 -a "$(grep -c 'not a user of the seeded orgs' "$WORK/traffic7.err")" -eq 1

# Ctrl-C / SIGTERM: the demo stops walcast (and the generator) and leaves nothing behind
kill -TERM $DEMO
rc=0; wait $DEMO || rc=$?
check "the demo exits on SIGTERM" 143 "$rc"
check "no process of the demo's session left" "" "$(pgrep -s $DEMO 2>/dev/null | tr '\n' ' ')"
check "walcast logged no crash, sanitizer report or assertion" "" \
  "$(grep -Ei 'assert|segfault|AddressSanitizer|LeakSanitizer|runtime error' "$WALCAST_HARNESS_DIR/walcast.log" | head -3)"
check "walcast stopped cleanly (run.stopped exit=0)" 1 "$(grep -c 'run.stopped exit=0' "$WALCAST_HARNESS_DIR/walcast.log" || true)"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

#!/usr/bin/env bash
# The stats API (docs/api.md) under load: p50/p99 latency and requests/s of each path with `wrk`
# at 100 concurrent clients (issue 10, "Benchmark": bar p99 <= 5 ms).
#
#   bash bench/stats_bench.sh [--rows M] [--seconds S] [--clients C] [--runs N] [--pin]
#                             [--out FILE | --no-doc]
#
# Inside one throwaway PostgreSQL + Redis (tests/harness/harness.sh), with deploy/policy.ini:
# 10 orgs of 100 contacts, M events over the last 7 days, counted by `walcast run` with one
# redis sink; then, for each path, `wrk -t2 -cC -dS --latency` with an analyst's bearer token
# (HS256, verified on every request, audit rows written through [audit]):
#   days      /orgs/ORG/days?from=(6 days ago)&to=(today)   7 HGETALLs on a cache miss
#   hours     /orgs/ORG/hours?hours=48                      48 HGETALLs on a cache miss
#   contacts  /orgs/ORG/contacts?limit=10                   one ZREVRANGE on a miss, privacy-filtered
# and, as the reference measured in the same run, the listener's own /healthz (no token, no
# audit, no Redis: the floor of this HTTP stack on this machine); all again at 10 clients
# (latency when the cores are not saturated). The API keeps answers in memory until the sink's
# next round for the org (docs/api.md, "Caching"), and no events are written during the runs:
# these are the hit path's figures, the cache's hits and misses are reported with them.
# wrk runs on the same 2-core machine as walcast, PostgreSQL and Redis: by default they all share
# both cores (wrk with two threads). --pin gives walcast a core of its own (taskset): walcast on
# CPU 0; wrk with one thread, PostgreSQL, Redis and this script on CPU 1 (set before they start,
# so every backend inherits it). Nothing else on the machine is pinned away from CPU 0: other
# work there still shows in the figures (the load average is reported with them).
# --runs N: every path N times (all paths in turn, then again), reported as medians with each
# run's p99.
# Environment: WALCAST_BIN (measure that binary), WALCAST_BENCH_PERF=PREFIX (records `perf record
# -g` of walcast during each wrk run into PREFIX.PATH.CLIENTS.RUN); with --pin,
# WALCAST_BENCH_WALCAST_CPU, WALCAST_BENCH_WRK_CPU and WALCAST_BENCH_SERVERS_CPU (0, 1, 1) move
# the three.
#
# Prints a Markdown report and writes it into docs/benchmarks.md between
# <!-- bench:stats:begin --> and <!-- bench:stats:end --> (with --pin: bench:stats-pin, placed
# after it), only on a committed tree (bench/lib.sh).
# Defaults: --rows 100000 --seconds 10 --clients 100 --runs 1, not pinned. A measurement, not a
# test.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROWS=100000
SECS=10
CLIENTS=100
RUNS=1
PIN=0
OUT=$ROOT/docs/benchmarks.md
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --no-doc) OUT=; shift ;;
    --inner) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "stats_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in ROWS SECS CLIENTS RUNS; do
  case ${!v} in ''|*[!0-9]*|0) echo "stats_bench.sh: $v must be a positive integer" >&2; exit 2 ;; esac
done
command -v wrk >/dev/null || { echo "stats_bench.sh: wrk is not installed (deploy/install-deps.sh)" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

if [ -z "${WALCAST_BENCH_INNER:-}" ]; then
  if [ -z "${WALCAST_BIN:-}" ]; then WALCAST_BIN=$(bench_build "$ROOT" walcast); fi
  if [ -n "$OUT" ]; then OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT"); fi
  export WALCAST_BIN WALCAST_BENCH_INNER=1 WALCAST_BENCH_OUT=$OUT
  unset WALCAST_CONFIG
  export WALCAST_BENCH_PIN=$PIN
  servers=()
  # --pin: PostgreSQL, Redis and this script (so wrk too) on SERVERS_CPU, set before they start
  if [ "$PIN" = 1 ]; then servers=(taskset -c "${WALCAST_BENCH_SERVERS_CPU:-1}"); fi
  exec "${servers[@]}" bash "$ROOT/tests/harness/harness.sh" run -- bash "${BASH_SOURCE[0]}" --rows "$ROWS" --seconds "$SECS" \
    --clients "$CLIENTS" --runs "$RUNS" --inner
fi

# ---- Inner half: inside the harness ------------------------------------------------------------
OUT=${WALCAST_BENCH_OUT:-}
bench_git_state "$ROOT" src plugins
WORK=$WALCAST_HARNESS_DIR/work
mkdir -p "$WORK"
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
HTTP_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RPORT=$(echo "$WALCAST_REDIS_URL" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#')
export WALCAST_AUTH_JWT_SECRET="stats-bench-secret-with-enough-length-for-hs256"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
h=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)

sql -c "INSERT INTO orgs (name) SELECT 'bench ' || g FROM generate_series(1, 10) g" >/dev/null
sql -c "INSERT INTO contacts (org_id, name) SELECT o.id, 'c' || g FROM orgs o, generate_series(1, 100) g" >/dev/null
ORG=$(sql -c "SELECT id FROM orgs ORDER BY name LIMIT 1")
ANALYST=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles (org_id, user_id, role) VALUES ('$ORG', '$ANALYST', 'analyst')" >/dev/null
sql -c "INSERT INTO privacy_rules (org_id, contact_id, min_role) SELECT org_id, id, 'admin' FROM contacts
        WHERE org_id = '$ORG' ORDER BY id LIMIT 10" >/dev/null

cat >"$WORK/wc.conf" <<CONF
[replication]
slot = wc
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:$HTTP_PORT
[auth]
jwt_audience = authenticated
[audit]
enabled = true
conninfo = $WALCAST_REPL_CONNINFO
[sink.agg]
type = redis
url = $WALCAST_REDIS_URL
CONF
PIN=${WALCAST_BENCH_PIN:-0}
WALCAST_CPU=${WALCAST_BENCH_WALCAST_CPU:-0}
WRK_CPU=${WALCAST_BENCH_WRK_CPU:-1}
walcast_pin=() wrk_pin=() WRK_THREADS=2
if [ "$PIN" = 1 ]; then walcast_pin=(taskset -c "$WALCAST_CPU"); wrk_pin=(taskset -c "$WRK_CPU"); WRK_THREADS=1; fi
"${walcast_pin[@]}" "$WALCAST_BIN" -c "$WORK/wc.conf" run --policy "$ROOT/deploy/policy.ini" >/dev/null 2>"$WORK/wc.err" &
WCP=$!
trap 'kill -TERM $WCP 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz")" = 200 ] && break
  sleep 0.1
done

echo "# loading $ROWS events over 7 days" >&2
sql -c "INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
  SELECT c.org_id, c.id, k, CASE WHEN random() < 0.5 THEN 'inbound' ELSE 'outbound' END,
         CASE WHEN k = 'call' THEN (ARRAY['completed', 'missed', 'voicemail'])[1 + (random() * 2)::int]
              ELSE (ARRAY['sent', 'delivered', 'failed'])[1 + (random() * 2)::int] END,
         now() - random() * interval '7 days', CASE WHEN k = 'call' THEN (random() * 600)::int END
  FROM generate_series(1, $ROWS) g,
       LATERAL (SELECT id, org_id FROM contacts OFFSET (g % 1000) LIMIT 1) c,
       LATERAL (SELECT CASE WHEN g % 5 < 3 THEN 'call' ELSE 'sms' END AS k) kk" >/dev/null
sql -c "SELECT pg_logical_emit_message(true, 'bench', 'end')" >/dev/null
end_hex=$(sql -c "SELECT lpad(upper(to_hex((pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint)), 16, '0')")
for _ in $(seq 1 3000); do
  wm=$(redis-cli -p "$RPORT" --raw GET wc:wm | tr 'a-f' 'A-F')
  [ -n "$wm" ] && [[ ! "$wm" < "$end_hex" ]] && break
  sleep 0.1
done
NEVENTS=$(sql -c "SELECT count(*) FROM events")

TOKEN="$h.$(printf '{"sub":"%s","role":"authenticated","aud":"authenticated","exp":%s}' "$ANALYST" $(($(date +%s) + 3600)) | b64url)"
TOKEN="$TOKEN.$(printf '%s' "$TOKEN" | openssl dgst -sha256 -hmac "$WALCAST_AUTH_JWT_SECRET" -binary | b64url)"
BASE=http://127.0.0.1:$HTTP_PORT/api/v1/stats/orgs/$ORG
FROM=$(date -u -d '6 days ago' +%F)
TODAY=$(date -u +%F)
declare -A PATHS=([days]="/days?from=$FROM&to=$TODAY" [hours]="/hours?hours=48" [contacts]="/contacts?limit=10")
url() { if [ "$1" = healthz ]; then echo "http://127.0.0.1:$HTTP_PORT/healthz"; else echo "$BASE${PATHS[$1]}"; fi; }
cache() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v n="walcast_stats_api_cache_$1_total" 'index($1, n "{") == 1 { printf "%.0f", $2 }'; }
for p in days hours contacts; do
  code=$(curl -s -o "$WORK/$p.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE${PATHS[$p]}")
  [ "$code" = 200 ] || { echo "stats_bench.sh: $p answered $code: $(cat "$WORK/$p.json")" >&2; exit 1; }
done

# wrk's --latency distribution: "50%  1.23ms"; normalised to ms
ms() { awk -v q="$1" '$1 == q { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) sub(/ms$/, "", v);
  else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }' "$2"; }
# walcast's CPU time (user + system, clock ticks) so far: per request, the cost that does not
# depend on how much of the cores the other processes take
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$WCP/stat"; }
# median FORMAT NUMBER...: the median (the mean of the middle two for an even count); "–" for none
median() { local fmt=$1; shift; printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk -v f="$fmt" '{ v[NR] = $1 } END {
  if (NR == 0) print "–"; else printf f, NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A P50 P99 RPS ERRS CPU P99S
# at the clients asked for, and at 10 (the same paths when the cores are not saturated)
LEVELS="$CLIENTS"
[ "$CLIENTS" = 10 ] || LEVELS="$CLIENTS 10"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq 1 "$RUNS"); do
  for c in $LEVELS; do
    for p in healthz days hours contacts; do
      k=$p.$c.$run f=$WORK/wrk.$k
      t0=$(cpu_ticks) perf=
      if [ -n "${WALCAST_BENCH_PERF:-}" ]; then # a CPU profile of walcast while it answers
        perf record -q -F 499 -g -p "$WCP" -o "$WALCAST_BENCH_PERF.$p.$c.$run" 2>/dev/null & perf=$!
      fi
      "${wrk_pin[@]}" wrk -t"$WRK_THREADS" -c"$c" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" "$(url "$p")" >"$f" 2>&1
      t1=$(cpu_ticks)
      if [ -n "$perf" ]; then kill -INT $perf; wait $perf || true; fi
      n=$(awk '/ requests in / { print $1 }' "$f")
      CPU[$k]=$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "–" }')
      P50[$k]=$(ms 50% "$f")
      P99[$k]=$(ms 99% "$f")
      RPS[$k]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$f")
      e=$(awk '/Non-2xx or 3xx responses:/ {print $NF} /Socket errors:/ {print}' "$f" | paste -sd' ')
      [ -z "$e" ] || ERRS[$p.$c]="${ERRS[$p.$c]:+${ERRS[$p.$c]}; }$e"
      echo "# run $run, $p, $c clients: p50 ${P50[$k]} ms, p99 ${P99[$k]} ms, ${RPS[$k]} req/s, walcast ${CPU[$k]} µs CPU/request $e (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    done
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# the medians over the runs, and every run's p99 (in run order)
for c in $LEVELS; do
  for p in healthz days hours contacts; do
    for m in P50 P99 RPS CPU; do
      declare -n arr=$m
      fmt=%.0f
      case $m in P50|P99) fmt=%.2f ;; esac
      vals=()
      for run in $(seq 1 "$RUNS"); do vals+=("${arr[$p.$c.$run]}"); done
      arr[$p.$c]=$(median "$fmt" "${vals[@]}")
      [ "$m" != P99 ] || P99S[$p.$c]=$(printf '%s\n' "${vals[@]}" | paste -sd'/' | sed 's#/#, #g')
      unset -n arr
    done
  done
done
AUDITED=$(sql -c "SELECT count(*) FROM audit_log WHERE action = 'stats.read'")
HITS=$(cache hits)
MISSES=$(cache misses)

report() {
  local setup wrkcmd="wrk -t$WRK_THREADS -c$CLIENTS -d${SECS}s --latency" how=""
  if [ "$PIN" = 1 ]; then
    setup="pinned (\`--pin\`, taskset): walcast on CPU $WALCAST_CPU, the only process of the benchmark there; wrk (one thread), PostgreSQL and Redis on CPU $WRK_CPU"
    how=" --pin"
  else
    setup="not pinned: wrk (two threads), walcast, PostgreSQL and Redis share the cores"
  fi
  [ "$RUNS" = 1 ] || how="$how --runs $RUNS"
  echo "Measured on $(date -u +%Y-%m-%d) at commit $BENCH_GIT${BENCH_DIRTY:+ ($BENCH_DIRTY)}, $(getconf _NPROCESSORS_ONLN) cores shared with other work, $setup; load average $LOAD_BEFORE before, $LOAD_AFTER after; $NEVENTS events in 10 orgs, \`bash bench/stats_bench.sh --rows $ROWS --seconds $SECS --clients $CLIENTS$how\`: \`$wrkcmd\`, an analyst's token (verified per request), every request audited ($AUDITED \`stats.read\` rows written); the API's cache answered $HITS requests and sent $MISSES to Redis. Reference: \`/healthz\` under the same wrk in the same run (no token, no audit, no Redis). walcast CPU per request: walcast's user + system time during the run (audit writes and decoding the audit rows back from the WAL included) over the requests wrk completed.$( [ "$RUNS" = 1 ] || echo " Each path ran $RUNS times (the paths in turn, then again): the figures are the medians of the runs, and the p99 of every run is listed.")"
  echo
  local runs_h="" runs_s=""
  if [ "$RUNS" -gt 1 ]; then runs_h=" p99 of each run |" runs_s="---|"; fi
  echo "| path | Redis reads on a miss | clients | p50 | p99 |$runs_h requests/s | requests/s vs /healthz | walcast CPU per request | errors | bar |"
  echo "|---|---|---|---|---|$runs_s---|---|---|---|---|"
  local c p
  declare -A what=([healthz]="/healthz (reference)" [days]="days (7 days)" [hours]="hours (48)" [contacts]="contacts (top 10)")
  declare -A reads=([healthz]="–" [days]="7 HGETALL" [hours]="48 HGETALL" [contacts]="1 ZREVRANGE")
  for c in $LEVELS; do
    for p in healthz days hours contacts; do
      local ratio bar="p99 ≤ 5 ms at 100"
      ratio=$(awk -v a="${RPS[$p.$c]}" -v b="${RPS[healthz.$c]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }')
      [ "$p" = healthz ] && bar="–"
      local each=""
      [ "$RUNS" = 1 ] || each=" ${P99S[$p.$c]} |"
      echo "| ${what[$p]} | ${reads[$p]} | $c | ${P50[$p.$c]} ms | ${P99[$p.$c]} ms |$each ${RPS[$p.$c]} | $ratio | ${CPU[$p.$c]} µs | ${ERRS[$p.$c]:-0} | $bar |"
    done
  done
}
report | tee "$WORK/report.md"
# the unpinned and the pinned figures each have their own section of the page
SECTION=stats
[ "$PIN" = 1 ] && SECTION=stats-pin
if [ -n "$OUT" ] && bench_may_publish stats_bench; then
  python3 - "$OUT" "$WORK/report.md" "$SECTION" <<'PY'
import sys
doc, rep, name = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
text = open(doc).read()
b, e = f'<!-- bench:{name}:begin -->', f'<!-- bench:{name}:end -->'
block = b + '\n' + rep + e
if b in text:
    text = text[:text.index(b)] + block + text[text.index(e) + len(e):]
elif name != 'stats' and '<!-- bench:stats:end -->' in text:
    at = text.index('<!-- bench:stats:end -->') + len('<!-- bench:stats:end -->')
    text = text[:at] + '\n\n' + block + text[at:]
else:
    text += '\n## Stats API\n\n`bench/stats_bench.sh`: the stats API (docs/api.md) under `wrk` at 100 concurrent clients, each path in turn (issue 10).\n\n' + block + '\n'
open(doc, 'w').write(text)
PY
fi

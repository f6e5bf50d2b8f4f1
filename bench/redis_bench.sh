#!/usr/bin/env bash
# The redis aggregates sink end to end: rows/s from the WAL into Redis against pg_recvlogical's
# bare decode rate on the same WAL, Redis round trips per 1,000 changes, and commit → aggregate
# in Redis latency (issue 10, "Benchmark"); and the rate at which walcast publishes the change
# stream that edges read (the redis_stream sink; issue 12, "Capacity").
#
#   bash bench/redis_bench.sh [--rows M] [--batch B] [--repeat R] [--rate N] [--seconds S]
#                             [--out FILE | --no-doc]
#
# Inside one throwaway PostgreSQL + Redis (tests/harness/harness.sh), with deploy/policy.ini:
#   1. Throughput: 10 orgs of 100 contacts; two slots are created, then M events are inserted
#      in transactions of B rows (kinds, directions, statuses, days, durations and contacts
#      drawn at random; 10 % without a contact) and a marker transaction ends the WAL. R rounds,
#      each of three slots created before the load, each slot drained once, timed:
#      pg_recvlogical (pgoutput, the options walcast asks for) to the end LSN (the bare decode
#      rate); `walcast run` with one jsonl sink (events only, bypass) until its checkpoint reaches
#      the end LSN (the pipeline without the aggregates); `walcast run` with one redis sink (Redis
#      flushed first) until the sink's global watermark (PREFIX:wm) reaches the end LSN. Medians
#      over the rounds; the ratio is taken per round (same minute, same load) and its median shown.
#      Round trips per 1,000 changes from the last round's /metrics
#      (walcast_redis_round_trips_total / walcast_sink_deliveries_total). A fourth drain per round:
#      `walcast run` with one redis_stream sink (Redis flushed first) until the stream's last entry
#      is the marker's commit; Redis memory per entry from the last round (MEMORY USAGE over XLEN,
#      after the sink's trim to its default window).
#   2. Latency: walcast run live, a writer committing single-row events at --rate rows/s for
#      --seconds s (paced in plpgsql, synchronous_commit on); walcast's histogram
#      walcast_redis_round_latency_seconds (commit of a round's first transaction → Redis has
#      accepted the round: an upper bound of commit → visible) gives p50/p99 as bucket bounds.
#
# Environment: WALCAST_BIN (measure that binary), WALCAST_BENCH_PERF=PREFIX (`perf record` walcast
# during round 1's drains into PREFIX.jl and PREFIX.rd; WALCAST_BENCH_PERF_ARGS, default "-F 499 -g",
# e.g. "-F 199 --call-graph dwarf").
#
# Prints a Markdown report and writes it into docs/benchmarks.md between
# <!-- bench:redis:begin --> and <!-- bench:redis:end --> (only on a committed tree, bench/lib.sh).
# Defaults: --rows 1000000 --batch 10 --repeat 3 --rate 1000 --seconds 20. A measurement, not a test: exits
# 0 whether or not the bars are met.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROWS=1000000
BATCH=10
REPEAT=3
RATE=1000
SECONDS_LAT=20
OUT=$ROOT/docs/benchmarks.md
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --seconds) SECONDS_LAT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-doc) OUT=; shift ;;
    --inner) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "redis_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in ROWS BATCH REPEAT RATE SECONDS_LAT; do
  case ${!v} in ''|*[!0-9]*|0) echo "redis_bench.sh: $v must be a positive integer" >&2; exit 2 ;; esac
done
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

if [ -z "${WALCAST_BENCH_INNER:-}" ]; then
  if [ -z "${WALCAST_BIN:-}" ]; then WALCAST_BIN=$(bench_build "$ROOT" walcast); fi
  if [ -n "$OUT" ]; then OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT"); fi
  export WALCAST_BIN WALCAST_BENCH_INNER=1 WALCAST_BENCH_OUT=$OUT
  unset WALCAST_CONFIG
  exec bash "$ROOT/tests/harness/harness.sh" run -- bash "${BASH_SOURCE[0]}" --rows "$ROWS" --batch "$BATCH" \
    --repeat "$REPEAT" --rate "$RATE" --seconds "$SECONDS_LAT" --inner
fi

# ---- Inner half: inside the harness ------------------------------------------------------------
OUT=${WALCAST_BENCH_OUT:-}
bench_git_state "$ROOT" src plugins
WORK=$WALCAST_HARNESS_DIR/bench
mkdir -p "$WORK"
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
RPORT=$(echo "$WALCAST_REDIS_URL" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#')
RECV=$WALCAST_PG_BIN/pg_recvlogical
HTTP_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
now() { date +%s.%N; }

sql -c "INSERT INTO orgs (name) SELECT 'bench ' || g FROM generate_series(1, 10) g" >/dev/null
sql -c "INSERT INTO contacts (org_id, name) SELECT o.id, 'c' || g FROM orgs o, generate_series(1, 100) g" >/dev/null
sql -c "CREATE TABLE bench_contacts AS SELECT row_number() OVER () AS n, id, org_id FROM contacts" >/dev/null
NCONTACTS=$(sql -c "SELECT count(*) FROM bench_contacts")
for r in $(seq 1 "$REPEAT"); do
  sql -c "select 1 from pg_create_logical_replication_slot('ref$r', 'pgoutput')" \
      -c "select 1 from pg_create_logical_replication_slot('jl$r', 'pgoutput')" \
      -c "select 1 from pg_create_logical_replication_slot('rd$r', 'pgoutput')" \
      -c "select 1 from pg_create_logical_replication_slot('st$r', 'pgoutput')" >/dev/null
done

echo "# loading $ROWS events in transactions of $BATCH rows" >&2
t0=$(now)
sql <<SQL >/dev/null
DO \$\$
DECLARE
  i int := 0;
BEGIN
  WHILE i < $ROWS LOOP
    INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
    SELECT c.org_id, CASE WHEN r.x < 0.1 THEN NULL ELSE c.id END, r.kind,
           CASE WHEN random() < 0.5 THEN 'inbound' ELSE 'outbound' END,
           CASE WHEN r.kind = 'call' THEN (ARRAY['completed', 'missed', 'voicemail'])[1 + (random() * 2)::int]
                ELSE (ARRAY['sent', 'delivered', 'received', 'failed'])[1 + (random() * 3)::int] END,
           now() - random() * interval '7 days',
           CASE WHEN r.kind = 'call' THEN (random() * 600)::int END
    FROM generate_series(1, least($BATCH, $ROWS - i)) g,
         LATERAL (SELECT random() AS x, CASE WHEN random() < 0.6 THEN 'call' ELSE 'sms' END AS kind,
                         1 + (random() * ($NCONTACTS - 1))::int + g * 0 AS n) r
         JOIN bench_contacts c ON c.n = r.n;
    COMMIT;
    i := i + $BATCH;
  END LOOP;
END
\$\$;
SQL
t1=$(now)
sql -c "SELECT pg_logical_emit_message(true, 'bench', 'end')" >/dev/null
END_LSN=$(sql -c "SELECT pg_current_wal_flush_lsn()")
NEVENTS=$(sql -c "SELECT count(*) FROM events")
echo "# loaded $NEVENTS events in $(echo "$t1 - $t0" | bc -l | cut -c1-6) s; end $END_LSN" >&2

# 1. Each round (--repeat): the bare decode rate, the pipeline alone (jsonl), the redis sink; one
# slot each, all created before the load, so every drain reads the same WAL.
recv_drain() { # slot: pg_recvlogical to END_LSN
  "$RECV" -d "$PGDATABASE" -S "$1" --start -E "$END_LSN" --no-loop -F 0 -o proto_version=1 \
    -o publication_names=walcast -o messages=true -f /dev/null 2>"$WORK/recv.err"
}
lsn_hex() { local hi=${1%/*} lo=${1#*/}; printf '%08X%08X' "0x$hi" "0x$lo"; }
end_hex=$(lsn_hex "$END_LSN")
PERF_PID=
perf_start() { # a CPU profile of walcast (WALCAST_BENCH_PERF=PREFIX, first round only)
  if [ -n "${WALCAST_BENCH_PERF:-}" ] && [ "$2" = 1 ]; then
    # shellcheck disable=SC2086
    perf record -q ${WALCAST_BENCH_PERF_ARGS:--F 499 -g} -p "$1" -o "$WALCAST_BENCH_PERF.$3" 2>/dev/null &
    PERF_PID=$!
  fi
}
perf_stop() { if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=; fi; }
wc_conf() { # round kind: a walcast config on slot KINDROUND (jl: jsonl, rd: redis, st: redis_stream)
  cat <<CONF
[replication]
slot = $2$1
create_slot = false
[pipeline]
state_dir = $WORK/state.$2$1
[http]
listen = 127.0.0.1:$HTTP_PORT
CONF
  case $2 in
    jl) printf '[sink.out]\ntype = jsonl\npath = %s\ntables = events\n' "$WORK/out.jsonl" ;;
    rd) printf '[sink.agg]\ntype = redis\nurl = %s\n' "$WALCAST_REDIS_URL" ;;
    st) printf '[sink.stream]\ntype = redis_stream\nurl = %s\n' "$WALCAST_REDIS_URL" ;;
  esac
}
# the marker's transaction is the last one: a position >= the flush LSN taken right after it
jsonl_done() { local l; l=$(sed -n 's/^lsn=//p' "$WORK/out.jsonl.pos" 2>/dev/null) && [ -n "$l" ] && [[ ! "$(lsn_hex "$l")" < "$end_hex" ]]; }
redis_done() { local wm; wm=$(redis-cli -p "$RPORT" --raw GET wc:wm) && [ -n "$wm" ] && [[ ! "$wm" < "$end_hex" ]]; }
stream_done() { # the stream's last entry is a C whose nextlsn is at or past END_LSN
  local next
  next=$(redis-cli -p "$RPORT" --raw XREVRANGE walcast:changes + - COUNT 1 |
         sed -n 's/^{"action":"C".*"nextlsn":"\([0-9A-F]*\/[0-9A-F]*\)".*/\1/p')
  [ -n "$next" ] && [[ ! "$(lsn_hex "$next")" < "$end_hex" ]]
}
wc_drain() { # round kind(jl|rd|st): walcast run until done; sets DRAIN_S; leaves walcast running as WCP
  wc_conf "$1" "$2" >"$WORK/wc.$2$1.conf"
  local t0 t1 done_fn
  case $2 in jl) done_fn=jsonl_done ;; rd) done_fn=redis_done ;; st) done_fn=stream_done ;; esac
  local r0 ws
  r0=$(proc_cpu "$REDIS_PID")
  t0=$(now)
  "$WALCAST_BIN" -c "$WORK/wc.$2$1.conf" run --policy "$ROOT/deploy/policy.ini" >/dev/null 2>"$WORK/wc.$2$1.err" &
  WCP=$!
  perf_start "$WCP" "$1" "$2"
  until $done_fn; do
    kill -0 "$WCP" 2>/dev/null || { echo "redis_bench.sh: walcast exited" >&2; cat "$WORK/wc.$2$1.err" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(now)
  perf_stop
  DRAIN_S=$(echo "$t1 - $t0" | bc -l)
  # CPU seconds of the drain: walcast, its walsender (the decoding), redis-server
  ws=$(sql -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$2$1'")
  CPU_WC=$(proc_cpu "$WCP"); CPU_WS=$(proc_cpu "$ws")
  CPU_RS=$(echo "$(proc_cpu "$REDIS_PID") - $r0" | bc -l)
}
TCK=$(getconf CLK_TCK)
proc_cpu() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
REDIS_PID=$(redis-cli -p "$RPORT" INFO server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
REF=() JL=() WC=() ST=() RATIO=() JRATIO=() SRATIO=() C_JL=() C_WC=() C_WS=() C_RS=() C_ST=() C_STRS=()
for r in $(seq 1 "$REPEAT"); do
  t0=$(now); recv_drain "ref$r"; t1=$(now)
  REF+=("$(echo "$t1 - $t0" | bc -l)")
  wc_drain "$r" jl; kill -TERM "$WCP"; wait "$WCP" || true
  rm -f "$WORK/out.jsonl" "$WORK/out.jsonl.pos"
  JL+=("$DRAIN_S"); C_JL+=("$CPU_WC")
  redis-cli -p "$RPORT" FLUSHALL >/dev/null
  wc_drain "$r" st
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.st"
  kill -TERM "$WCP"; wait "$WCP" || true
  ST+=("$DRAIN_S"); C_ST+=("$CPU_WC"); C_STRS+=("$CPU_RS")
  SRATIO+=("$(echo "${REF[-1]} / $DRAIN_S" | bc -l)")
  ST_LEN=$(redis-cli -p "$RPORT" XLEN walcast:changes)
  ST_MEM=$(redis-cli -p "$RPORT" MEMORY USAGE walcast:changes SAMPLES 0)
  redis-cli -p "$RPORT" FLUSHALL >/dev/null
  wc_drain "$r" rd
  WC+=("$DRAIN_S"); C_WC+=("$CPU_WC"); C_WS+=("$CPU_WS"); C_RS+=("$CPU_RS")
  RATIO+=("$(echo "${REF[-1]} / $DRAIN_S" | bc -l)")
  JRATIO+=("$(echo "${REF[-1]} / ${JL[-1]}" | bc -l)")
  echo "# round $r: pg_recvlogical ${REF[-1]} s, walcast jsonl ${JL[-1]} s, walcast redis_stream ${ST[-1]} s, walcast redis $DRAIN_S s" >&2
  if [ "$r" -lt "$REPEAT" ]; then kill -TERM "$WCP"; wait "$WCP" || true; fi
done
REF_S=$(median "${REF[@]}"); JL_S=$(median "${JL[@]}"); WC_S=$(median "${WC[@]}"); ST_S=$(median "${ST[@]}")
PAUSES=$(cat "$WORK"/wc.rd*.err | grep -c pipeline.paused || true)
# the last round's walcast (redis) stays up for the counts and the latency step
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.1"
metric() { sed -n "s/^$1{sink=\"${3:-agg}\"} //p" "$2" | head -1; }
TRIPS=$(metric walcast_redis_round_trips_total "$WORK/metrics.1")
SCRIPTS=$(metric walcast_redis_scripts_total "$WORK/metrics.1")
DELIV=$(metric walcast_sink_deliveries_total "$WORK/metrics.1")
ST_ROUNDS=$(metric walcast_redis_stream_rounds_total "$WORK/metrics.st" stream)
ST_ENTRIES=$(metric walcast_redis_stream_entries_total "$WORK/metrics.st" stream)
# the oracle: SQL's count of events = the sum of every org's per-day calls + sms
REDIS_TOTAL=$(redis-cli -p "$RPORT" --raw EVAL "local n = 0
for _, k in ipairs(redis.call('KEYS', 'wc:{*}:day:????????')) do
  n = n + tonumber(redis.call('HGET', k, 'calls') or 0) + tonumber(redis.call('HGET', k, 'sms') or 0)
end
return n" 0)

# 2. latency under a paced writer
sleep 1
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.2a"
PGOPTIONS="-c synchronous_commit=on" sql <<SQL >/dev/null
DO \$\$
DECLARE
  t0 timestamptz := clock_timestamp();
  i int := 0;
  k int;
  c record;
BEGIN
  WHILE i < $RATE * $SECONDS_LAT LOOP
    k := 1 + (random() * ($NCONTACTS - 1))::int;
    SELECT id, org_id INTO c FROM bench_contacts WHERE n = k;
    INSERT INTO events (org_id, contact_id, kind, direction, status, duration_s)
      VALUES (c.org_id, c.id, 'call', 'inbound', 'completed', 60);
    COMMIT;
    i := i + 1;
    PERFORM pg_sleep(greatest(0, extract(epoch FROM (t0 + i * interval '1 second' / $RATE - clock_timestamp()))));
  END LOOP;
END
\$\$;
SQL
sleep 1
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.2b"
kill -TERM "$WCP"; wait "$WCP" || true

# p50/p99 from the histogram's bucket deltas: the upper bound of the bucket holding the quantile
quantiles() {
  python3 - "$WORK/metrics.2a" "$WORK/metrics.2b" <<'PY'
import re, sys
def read(p):
    b = {}
    for line in open(p):
        m = re.match(r'walcast_redis_round_latency_seconds_bucket\{sink="agg",le="([^"]+)"\} (\d+)', line)
        if m: b[m.group(1)] = int(m.group(2))
    return b
a, z = read(sys.argv[1]), read(sys.argv[2])
les = sorted(z, key=lambda s: float('inf') if s == '+Inf' else float(s))
n = z['+Inf'] - a.get('+Inf', 0)
out = []
for q in (0.5, 0.99):
    for le in les:
        if z[le] - a.get(le, 0) >= q * n:
            out.append('≤%sms' % ('∞' if le == '+Inf' else ('%g' % (float(le) * 1000)))); break
print(n, out[0], out[1])
PY
}
read -r LAT_N P50 P99 <<<"$(quantiles)"

ratio=$(median "${RATIO[@]}")
jratio=$(median "${JRATIO[@]}")
sratio=$(median "${SRATIO[@]}")
each() { local out= v; for v in "$@"; do out+="${out:+, }$(printf "$FMT" "$v")"; done; echo "$out"; }
report() {
  echo "Measured on $(date -u +%Y-%m-%d) at commit $BENCH_GIT${BENCH_DIRTY:+ ($BENCH_DIRTY)}, $(nproc) cores shared with other work (load average $(cut -d' ' -f1-3 /proc/loadavg) at the end); PostgreSQL 15, Redis 7.0 on loopback, \`bash bench/redis_bench.sh --rows $ROWS --batch $BATCH --repeat $REPEAT --rate $RATE --seconds $SECONDS_LAT\`. Medians over $REPEAT round(s) (each round: the four drains one after the other)."
  echo
  echo "| measure | value | bar |"
  echo "|---|---|---|"
  printf '| events (transactions of %s rows), SQL count / Redis calls+sms | %s / %s | equal |\n' "$BATCH" "$NEVENTS" "$REDIS_TOTAL"
  FMT='%.1f'
  printf '| pg_recvlogical, bare decode | %.0f rows/s (%.1f s; rounds: %s s) | |\n' "$(echo "$NEVENTS / $REF_S" | bc -l)" "$REF_S" "$(each "${REF[@]}")"
  printf '| walcast run → jsonl file (the pipeline alone: events only, bypass) | %.0f rows/s (%.1f s; rounds: %s s) | |\n' "$(echo "$NEVENTS / $JL_S" | bc -l)" "$JL_S" "$(each "${JL[@]}")"
  printf '| walcast run → aggregates in Redis | %.0f rows/s (%.1f s; rounds: %s s; start-up included) | |\n' "$(echo "$NEVENTS / $WC_S" | bc -l)" "$WC_S" "$(each "${WC[@]}")"
  FMT='%.2f'
  printf '| ratio walcast jsonl / bare decode, per round | %.2f (%s) | |\n' "$jratio" "$(each "${JRATIO[@]}")"
  printf '| **ratio walcast redis / bare decode**, per round | **%.2f** (%s) | ≥ 0.9 |\n' "$ratio" "$(each "${RATIO[@]}")"
  printf '| walcast run → change stream in Redis (redis_stream: every change, for edges) | %.0f changes/s (%.1f s; rounds: %s s) | |\n' "$(echo "$NEVENTS / $ST_S" | bc -l)" "$ST_S" "$(each "${ST[@]}")"
  printf '| ratio walcast redis_stream / bare decode, per round | %.2f (%s) | |\n' "$sratio" "$(each "${SRATIO[@]}")"
  printf '| CPU per change publishing the stream, median (walcast / redis-server) | %.1f / %.1f µs | |\n' \
    "$(echo "$(median "${C_ST[@]}") * 1000000 / $NEVENTS" | bc -l)" "$(echo "$(median "${C_STRS[@]}") * 1000000 / $NEVENTS" | bc -l)"
  printf '| stream entries per round (last round: %s entries in %s rounds, one script each) | %.0f | |\n' "$ST_ENTRIES" "$ST_ROUNDS" "$(echo "$ST_ENTRIES / $ST_ROUNDS" | bc -l)"
  printf '| Redis memory per stream entry (last round: %s entries kept by the default window) | %.0f bytes | |\n' "$ST_LEN" "$(echo "$ST_MEM / $ST_LEN" | bc -l)"
  printf '| CPU per event, median (walsender decoding for walcast / walcast jsonl / walcast redis / redis-server) | %.1f / %.1f / %.1f / %.1f µs | |\n' \
    "$(echo "$(median "${C_WS[@]}") * 1000000 / $NEVENTS" | bc -l)" "$(echo "$(median "${C_JL[@]}") * 1000000 / $NEVENTS" | bc -l)" \
    "$(echo "$(median "${C_WC[@]}") * 1000000 / $NEVENTS" | bc -l)" "$(echo "$(median "${C_RS[@]}") * 1000000 / $NEVENTS" | bc -l)"
  printf '| times walcast (redis) paused reading for pipeline.max_pending, all rounds | %s | |\n' "$PAUSES"
  printf '| Redis round trips per 1,000 changes | %.2f (%s rounds, %s org scripts, %s changes) | |\n' \
    "$(echo "$TRIPS * 1000 / $DELIV" | bc -l)" "$TRIPS" "$SCRIPTS" "$DELIV"
  printf '| commit → accepted in Redis, p50 / p99 (%s rounds at %s rows/s) | %s / %s | p99 ≤ 100 ms |\n' \
    "$LAT_N" "$RATE" "$P50" "$P99"
}
report | tee "$WORK/report.md"
if [ -n "$OUT" ] && bench_may_publish redis_bench; then
  python3 - "$OUT" "$WORK/report.md" <<'PY'
import sys
doc, rep = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
b, e = '<!-- bench:redis:begin -->', '<!-- bench:redis:end -->'
block = b + '\n' + rep + e
if b in text:
    text = text[:text.index(b)] + block + text[text.index(e) + len(e):]
else:
    text += '\n## Aggregates in Redis (redis sink)\n\n`bench/redis_bench.sh`: walcast run with the redis sink vs pg_recvlogical on the same WAL, round trips, and commit → Redis latency (issue 10).\n\n' + block + '\n'
open(doc, 'w').write(text)
PY
fi

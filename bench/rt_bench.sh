#!/usr/bin/env bash
# The realtime sink's benchmark (issue 9, "Benchmark"): many protocol-speaking clients
# (bench/rt_load.c) against `walcast run` with a realtime sink, beside a raw-socket baseline
# (bench/rt_baseline.c), in one throwaway PostgreSQL (tests/harness/harness.sh).
#
#   bash bench/rt_bench.sh [--lat-clients 1000] [--lat-orgs 50] [--rate 1000] [--seconds 15]
#                          [--clients 10000] [--orgs 100] [--rows 5000] [--out FILE | --no-doc]
#
#   (a) Latency: --lat-clients clients spread over --lat-orgs orgs, each subscribed to its org's
#       events; a writer commits single-row events at --rate changes/s for --seconds s (paced in
#       plpgsql) with synchronous_commit ON (the harness's default is off, which holds a commit
#       back from logical decoding for up to wal_writer_delay, 200 ms). Latency = rt_load's clock
#       at receipt - the row's started_at, set with clock_timestamp() just before the commit.
#   (b) Throughput: --clients clients over --orgs orgs; walcast is stopped (SIGSTOP) while --rows
#       rows are committed (single-row transactions, then 10-row transactions of one org), then
#       continued: rt_load counts postgres_changes frames from the first to the last; delivered
#       messages/s = frames / that span. Beside it rt_baseline writes frames of the mean size
#       rt_load saw to as many loopback connections, one frame per write (single-row) and ten
#       frames per write (10-row: walcast writes a connection's frames of one transaction at once).
#   (c) RSS per idle connection, measured first: walcast's VmRSS with none, --clients/2 and
#       --clients clients subscribed and idle for 3 s; the second half's growth per connection
#       (the marginal cost) and the growth from none.
#
# Prints a Markdown report and writes it into docs/benchmarks.md between
# <!-- bench:rt:begin --> and <!-- bench:rt:end --> (only from a committed tree, bench/lib.sh).
# Environment: WALCAST_BIN (measure that binary), WALCAST_BENCH_PERF=PREFIX (records `perf record
# -g` of walcast during each throughput step into PREFIX.b1 and PREFIX.b10).
# A measurement, not a test: exits 0 whether or not the bars are met.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LAT_CLIENTS=1000 LAT_ORGS=50 RATE=1000 SECS=15 CLIENTS=10000 ORGS=100 ROWS=5000
OUT=$ROOT/docs/benchmarks.md
ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --lat-clients) LAT_CLIENTS=$2; shift 2 ;;
    --lat-orgs) LAT_ORGS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --orgs) ORGS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-doc) OUT=; shift ;;
    --inner) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "rt_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in LAT_CLIENTS LAT_ORGS RATE SECS CLIENTS ORGS ROWS; do
  case ${!v} in ''|*[!0-9]*|0) echo "rt_bench.sh: $v must be a positive integer" >&2; exit 2 ;; esac
done
[ "$LAT_ORGS" -le "$ORGS" ] || { echo "rt_bench.sh: --lat-orgs must not exceed --orgs" >&2; exit 2; }

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

# ---- Outer half: build, then run the inner half inside the harness ---------------------------
if [ -z "${WALCAST_BENCH_INNER:-}" ]; then
  LOAD_BIN=$(bench_build "$ROOT" rt_load)
  BASE_BIN=$(bench_build "$ROOT" rt_baseline)
  if [ -z "${WALCAST_BIN:-}" ]; then WALCAST_BIN=$(bench_build "$ROOT" walcast); fi
  if [ -n "$OUT" ]; then OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT"); fi
  export WALCAST_BIN LOAD_BIN BASE_BIN WALCAST_BENCH_INNER=1 WALCAST_BENCH_OUT=$OUT
  export WALCAST_BENCH_ARGS="${ARGS[*]}"
  unset WALCAST_CONFIG
  ulimit -n "$(ulimit -Hn)"
  exec bash "$ROOT/tests/harness/harness.sh" run --no-redis -- \
    bash "${BASH_SOURCE[0]}" --lat-clients "$LAT_CLIENTS" --lat-orgs "$LAT_ORGS" --rate "$RATE" \
    --seconds "$SECS" --clients "$CLIENTS" --orgs "$ORGS" --rows "$ROWS" --inner
fi

# ---- Inner half: PG* point at the harness's PostgreSQL ----------------------------------------
OUT=${WALCAST_BENCH_OUT:-}
WORK=${WALCAST_HARNESS_DIR:-$(mktemp -d)}/rt-bench
mkdir -p "$WORK"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
export WALCAST_AUTH_JWT_SECRET="bench-secret-with-enough-length-for-hs256-0123456789abcdef"

# ---- Schema: orgs, members, tokens, the load procedure (bench/lib.sh) -------------------------
rt_bench_setup "$ORGS" "$CLIENTS"
# (a): the first LAT_CLIENTS/LAT_ORGS members of each of the first LAT_ORGS orgs
rt_bench_tokens_first "$LAT_CLIENTS" "$LAT_ORGS" "$WORK/tokens.lat"
log "$(wc -l <"$WORK/tokens.all") members over $ORGS orgs; latency set: $(wc -l <"$WORK/tokens.lat") over $LAT_ORGS orgs"

HTTP=$(port)
cat >"$WORK/rt.conf" <<CONF
[replication]
slot = rt_bench
[pipeline]
state_dir = $WORK/state
[http]
listen = 127.0.0.1:$HTTP
slot_status_interval = 0
[sink.live]
type = realtime
max_connections = $(( CLIENTS + 100 ))
CONF
"$WALCAST_BIN" -c "$WORK/rt.conf" run --policy "$ROOT/deploy/policy.ini" >/dev/null 2>"$WORK/walcast.err" &
RUN=$!
trap 'kill -CONT $RUN 2>/dev/null; kill -TERM $RUN 2>/dev/null; wait $RUN 2>/dev/null || true' EXIT
bench_wait_ready "$HTTP" "$WORK/walcast.err"

j0=$(cpu_jiffies); sleep 3; j1=$(cpu_jiffies)
IDLE_BUSY=$(busy_pct "$j0" "$j1"); LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: ${IDLE_BUSY}% busy before the run, load average $LOAD_BEFORE"

# ---- (c) idle connections, first: later steps leave the allocator's heap grown -----------------
rt_idle_rss c "$HTTP" $RUN "$CLIENTS"
log "(c) walcast RSS $RSS0 -> $RSSH -> $RSS1 KB at 0, $(( CLIENTS / 2 )), $(( CLIENTS / 2 * 2 )) idle connections"
sleep 2

# ---- (a) latency ------------------------------------------------------------------------------
LAT_ROWS=$(( RATE * SECS ))
LAT_EXPECT=$(( LAT_ROWS * $(wc -l <"$WORK/tokens.lat") / LAT_ORGS ))
rt_load_start a "$HTTP" "$WORK/tokens.lat" --expect "$LAT_EXPECT" --idle 15 --timeout 120 --latency "$WORK/latency.us"
log "(a) $(cat "$WORK/load.a.err"); $LAT_ROWS single-row transactions at $RATE/s, synchronous_commit on"
w0=$(proc_cpu_s $RUN); j0=$(cpu_jiffies); t0=$(date +%s.%N)
PGOPTIONS="-c synchronous_commit=on" sql -c "call bench.load(1, $LAT_ROWS, 1, $LAT_ORGS, $RATE)"
A_WALL=$(echo "$(date +%s.%N) - $t0" | bc -l); A_LOAD=$(loadavg)
wait $LP || log "(a) rt_load: $(tail -3 "$WORK/load.a.err")"
j1=$(cpu_jiffies); A_BUSY=$(busy_pct "$j0" "$j1"); A_WCPU=$(echo "$(proc_cpu_s $RUN) - $w0" | bc)
log "(a) $(cat "$WORK/load.a"); load took $(printf '%.1f' "$A_WALL") s; walcast CPU $A_WCPU s"

# ---- (b) throughput ---------------------------------------------------------------------------
sleep 2
B1_EXPECT=$(( ROWS * CLIENTS / ORGS ))
NTX10=$(( ROWS / 10 ))
B10_EXPECT=$(( NTX10 * 10 * CLIENTS / ORGS ))
# one rt_load per measurement: the 10,000 connections are made once per run of rt_load
declare -A BUSY LOAD WCPU SW WSCPU FPW # per throughput step (b1, b10)
throughput() { # NAME NTX NROWS EXPECT
  rt_load_start "$1" "$HTTP" "$WORK/tokens.all" --expect "$4" --idle 20 --timeout 150
  log "($1) $(cat "$WORK/load.$1.err")"
  local f0 n0 # before the stop: a stopped walcast would answer only after the whole backlog
  f0=$(rt_counter "$HTTP" walcast_realtime_frames_sent_total); n0=$(rt_counter "$HTTP" walcast_realtime_writes_total)
  kill -STOP $RUN
  sql -c "call bench.load(1000001, $2, $3, $ORGS, 0)"
  local w0 j0 j1
  local perf=
  if [ -n "${WALCAST_BENCH_PERF:-}" ]; then # a CPU profile of walcast while it delivers
    perf record -q -F 499 -g -p $RUN -o "$WALCAST_BENCH_PERF.$1" 2>/dev/null & perf=$!
    sleep 0.5
  fi
  local ws ws0 s0 s1
  ws=$(sql -c "select pid from pg_stat_replication where application_name <> 'psql' limit 1")
  w0=$(proc_cpu_s $RUN); j0=$(cpu_jiffies); s0=$(ctxsw $RUN); ws0=$(proc_cpu_s "$ws")
  kill -CONT $RUN
  wait $LP || log "($1) rt_load: $(tail -3 "$WORK/load.$1.err")"
  FPW[$1]=$(python3 -c "print(f'{($(rt_counter "$HTTP" walcast_realtime_frames_sent_total) - $f0) / max($(rt_counter "$HTTP" walcast_realtime_writes_total) - $n0, 1):.1f}')")
  s1=$(ctxsw $RUN)
  SW[$1]=$(( s1 - s0 )); WSCPU[$1]=$(echo "$(proc_cpu_s "$ws") - $ws0" | bc)
  if [ -n "$perf" ]; then kill -INT $perf; wait $perf || true; fi
  j1=$(cpu_jiffies)
  BUSY[$1]=$(busy_pct "$j0" "$j1"); LOAD[$1]=$(loadavg); WCPU[$1]=$(echo "$(proc_cpu_s $RUN) - $w0" | bc)
  log "($1) $(cat "$WORK/load.$1"); walcast CPU ${WCPU[$1]} s, ${FPW[$1]} frames per write"
  sleep 2
}
throughput b1 "$ROWS" 1 "$B1_EXPECT"
throughput b10 "$NTX10" 10 "$B10_EXPECT"

FRAME=$(sed -n 's/.* mean_frame=\([0-9]*\).*/\1/p' "$WORK/load.b1")
FRAME=$(( ${FRAME:-700} + 4 )) # + the WebSocket header
for k in 1 2 10; do
  "$BASE_BIN" --conns "$CLIENTS" --size "$FRAME" --per-write $k --seconds 5 >"$WORK/base.$k"
  log "baseline: $(cat "$WORK/base.$k") (load $(loadavg))"
done

# ---- Report -----------------------------------------------------------------------------------
KEEP=${TMPDIR:-/tmp}/walcast-rt-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$KEEP" && cp "$WORK"/load.* "$WORK"/base.* "$WORK/latency.us" "$KEEP/" && log "raw results kept in $KEEP"
bench_git_state "$ROOT" src plugins CMakeLists.txt bench/rt_bench.sh bench/rt_load.c bench/rt_baseline.c
GIT_REV=$BENCH_GIT${BENCH_DIRTY:+ + $BENCH_DIRTY}
kv() { bench_kv "$WORK/$1" "$2"; }
ok() { if python3 -c "import sys; sys.exit(0 if $1 else 1)"; then echo "**met**"; else echo "**not met**"; fi; }
B1=$(kv load.b1 rate); B10=$(kv load.b10 rate); BASE1=$(kv base.1 rate); BASE2=$(kv base.2 rate); BASE10=$(kv base.10 rate)
R1=$(python3 -c "print(f'{$B1 / $BASE1:.2f}')"); R10=$(python3 -c "print(f'{$B10 / $BASE10:.2f}')")
R10_1=$(python3 -c "print(f'{$B10 / $BASE1:.2f}')")
# per CPU-second: on a shared, oversubscribed machine neither walcast nor the baseline's writer
# gets a whole core; messages per CPU-second of the process doing the writing compares the work.
cpu_rate() { python3 -c "print(f'{$1 / max($2, 0.001):.0f}')"; }
B1C=$(cpu_rate "$(kv load.b1 frames)" "${WCPU[b1]}"); B10C=$(cpu_rate "$(kv load.b10 frames)" "${WCPU[b10]}")
BASE1C=$(cpu_rate "$BASE1" "$(kv base.1 writer_cpu_pct) / 100"); BASE10C=$(cpu_rate "$BASE10" "$(kv base.10 writer_cpu_pct) / 100")
RC1=$(python3 -c "print(f'{$B1C / $BASE1C:.2f}')"); RC10=$(python3 -c "print(f'{$B10C / $BASE10C:.2f}')")
PER_CONN=$(python3 -c "print(f'{($RSS1 - $RSS0) / ($CLIENTS // 2 * 2):.1f}')")
PER_CONN2=$(python3 -c "print(f'{($RSS1 - $RSSH) / ($CLIENTS // 2):.1f}')")
{
  echo "<!-- bench:rt:begin -->"
  echo "<!-- Generated by bench/rt_bench.sh on $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand. -->"
  echo
  echo "### Latest run"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bash bench/rt_bench.sh ${WALCAST_BENCH_ARGS:-}\`"
  echo "- Machine: $(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr); PostgreSQL $(sql -c 'show server_version') (harness: fsync off)"
  echo "- walcast: git $GIT_REV, RelWithDebInfo; \`walcast run --policy deploy/policy.ini\` with one realtime sink (defaults but \`max_connections\`), pgoutput. Clients: bench/rt_load.c, vsn 2.0.0, one channel each with \`postgres_changes\` \`{event: *, schema: public, table: events, filter: org_id=eq.ORG}\` and its member's own HS256 token."
  echo "- **Shared machine** (other builds and tests ran beside it): ${IDLE_BUSY}% of both CPUs busy in the 3 s before the run, load average $LOAD_BEFORE. Per step below: the share of both CPUs busy (this run's processes included) and the 1-minute load average at its end."
  echo
  echo "| measure | result | bar | machine busy / load |"
  echo "|---|---:|---|---:|"
  echo "| (a) commit → client latency, $(kv load.a clients) clients over $LAT_ORGS orgs, $RATE single-row changes/s for $SECS s, synchronous_commit **on**: p50 / p90 / p99 / max | $(kv load.a p50_ms) / $(kv load.a p90_ms) / $(kv load.a p99_ms) / $(kv load.a max_ms) ms ($(kv load.a lat_n) messages) | p99 ≤ 10 ms: $(ok "$(kv load.a p99_ms) <= 10") | $A_BUSY % / $A_LOAD |"
  echo "| (b) delivered messages/s, $CLIENTS clients over $ORGS orgs, single-row transactions ($ROWS) | $B1 (baseline, one write per frame: $BASE1) — **ratio $R1** | ≥ 0.8: $(ok "$R1 >= 0.8") | ${BUSY[b1]} % / ${LOAD[b1]} |"
  echo "| (b) same, 10-row transactions ($NTX10) | $B10 (baseline, one write per frame: $BASE1) — **ratio $R10_1** (to ten frames per write, $BASE10: $R10) | ≥ 0.8: $(ok "$R10_1 >= 0.8") | ${BUSY[b10]} % / ${LOAD[b10]} |"
  echo "| (b) per CPU-second of the writing process: walcast vs the baseline's writer, single-row / 10-row | $B1C vs $BASE1C — **ratio $RC1** / $B10C vs $BASE10C — **ratio $RC10** | (the work, free of the machine's load) | |"
  echo "| (c) RSS per idle connection (subscribed, one channel): the second half's growth / from the start | **$PER_CONN2 KB** / $PER_CONN KB (0, $(( CLIENTS / 2 )), $(( CLIENTS / 2 * 2 )) connections: ${RSS0} → ${RSSH} → ${RSS1} KB) | ≤ 4 KB: $(ok "$PER_CONN2 <= 4") | |"
  echo
  echo "Details: latency is rt_load's clock at receipt − the row's \`started_at\` (\`clock_timestamp()\` just before COMMIT, microseconds; the same machine's clock); from \`commit_timestamp\` (milliseconds) p50 / p99 = $(kv load.a commit_ts_p50_ms) / $(kv load.a commit_ts_p99_ms) ms. walcast's CPU: $A_WCPU s over the $(printf '%.0f' "$A_WALL") s of (a); ${WCPU[b1]} s and ${WCPU[b10]} s for (b). (b): walcast is stopped (SIGSTOP) while the rows are committed and continued with the backlog in the slot, so the rate is walcast's, not PostgreSQL's; frames counted $(kv load.b1 frames) / $(kv load.b10 frames) of $B1_EXPECT / $B10_EXPECT expected, over $(kv load.b1 span_s) / $(kv load.b10 span_s) s, mean frame $(kv load.b1 mean_frame) B. The baseline (bench/rt_baseline.c) writes frames of $FRAME bytes (the mean + the WebSocket header) round-robin to $CLIENTS loopback TCP connections for 5 s while a second process drains them; two frames per write: $BASE2/s."
  echo "Where the time goes in (b): walcast's CPU time over the delivery span was $(python3 -c "print(f'{100 * ${WCPU[b1]} / max($(kv load.b1 span_s), 0.001):.0f}')") % / $(python3 -c "print(f'{100 * ${WCPU[b10]} / max($(kv load.b10 span_s), 0.001):.0f}')") % of one core (the rest of the span it was runnable behind other work, or waiting); its voluntary context switches (waits in its event loop) ${SW[b1]} / ${SW[b10]} for $ROWS / $NTX10 transactions; the walsender's CPU ${WSCPU[b1]} / ${WSCPU[b10]} s; frames per socket write (walcast_realtime_frames_sent_total / walcast_realtime_writes_total over the step) ${FPW[b1]} / ${FPW[b10]}."
  GEN_MAX=$(printf '%s\n' "$(kv load.a recv_cpu_pct)" "$(kv load.b1 recv_cpu_pct)" "$(kv load.b10 recv_cpu_pct)" | sort -n | tail -1)
  if [ "${GEN_MAX:-0}" -ge 80 ]; then GEN_VERDICT="**near a full core: the load generator limits this run** (on two cores it competes with walcast; the rate measures the pair)"; else GEN_VERDICT="the load generator is not the bottleneck"; fi
  echo "Load generator: rt_load's own CPU while receiving was $(kv load.a recv_cpu_pct) % of one core in (a), $(kv load.b1 recv_cpu_pct) % in (b) single-row, $(kv load.b10 recv_cpu_pct) % in (b) 10-row (one core = 100 %): $GEN_VERDICT."
  echo "<!-- bench:rt:end -->"
} >"$WORK/section.md"
cat "$WORK/section.md"

if [ -n "$OUT" ] && bench_may_publish rt_bench.sh; then
  bench_replace_section "$OUT" "$WORK/section.md" rt
  log "wrote $OUT"
fi

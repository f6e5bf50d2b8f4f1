#!/usr/bin/env bash
# Figures per stateless edge (issue 12, "Capacity"; docs/edges.md): one active `walcast run` (the
# slot, a redis_stream sink, its checkpoint in PostgreSQL, and a realtime sink: the reference) and
# one edge (`[edge] enabled`, a realtime sink) reading the stream, in one throwaway PostgreSQL +
# Redis (tests/harness/harness.sh). Clients: bench/rt_load.c, the same users on both. Everything
# is measured in the same run, so that the edge's figures are read against the direct ones.
#
#   bash bench/edge_bench.sh [--lat-clients 200] [--lat-orgs 20] [--rate 500] [--seconds 10]
#                            [--clients 2000] [--orgs 100] [--rows 3000] [--rounds 5]
#                            [--read-count N] [--out FILE | --no-doc]
#
# --read-count N sets the edge's edge.read_count (entries per read of the stream; walcast's
# default otherwise).
#
#   (c) RSS per idle connection, first: the edge's VmRSS with none, --clients/2 and --clients
#       clients subscribed and idle for 3 s (rt_bench's method), then the active instance's.
#   (a) Latency: --lat-clients clients over --lat-orgs orgs on the edge AND the same users on the
#       active instance's realtime sink at once; a writer commits single-row events at --rate/s
#       for --seconds s with synchronous_commit on. Latency = rt_load's clock at receipt - the
#       row's started_at (clock_timestamp() just before the commit). Edge - direct = the Redis hop.
#   (b) Delivered messages/s, --rounds times each, alternately: direct — the active instance (and
#       the edge, so it takes no CPU) stopped (SIGSTOP) while --rows single-row transactions are
#       committed, then the active instance continued, its clients counting frames from the first
#       to the last; edge — the edge stopped while the rows are committed and published to the
#       stream (until the stream holds a marker transaction committed after them), then continued,
#       its clients counting the same way. --clients clients over --orgs orgs on each.
#   (d) An edge added: a second edge started beside the first, with the stream as (b) left it, and
#       stopped again once ready, --rounds times each way, alternately: with its replay buffer
#       filled from the stream's window at start (edge.replay_from_stream, replay_bytes 256MB:
#       docs/edges.md, "Step 4") and, the reference, started at the confirmed position
#       (replay_from_stream = false). Time from the start to /readyz 200 (polled every 50 ms),
#       entries read, RSS once ready.
#
# Prints a Markdown report and writes it into docs/benchmarks.md between
# <!-- bench:edge:begin --> and <!-- bench:edge:end --> (only from a committed tree, bench/lib.sh).
# Environment: WALCAST_BIN (measure that binary), WALCAST_BENCH_PERF=PREFIX (records `perf record
# -g` of the delivering process during each throughput step into PREFIX.bdN and PREFIX.beN).
# A measurement, not a test: exits 0 whatever the figures.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LAT_CLIENTS=200 LAT_ORGS=20 RATE=500 SECS=10 CLIENTS=2000 ORGS=100 ROWS=3000 ROUNDS=5 READ_COUNT=
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
    --rounds) ROUNDS=$2; shift 2 ;;
    --read-count) READ_COUNT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-doc) OUT=; shift ;;
    --inner) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "edge_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in LAT_CLIENTS LAT_ORGS RATE SECS CLIENTS ORGS ROWS ROUNDS; do
  case ${!v} in ''|*[!0-9]*|0) echo "edge_bench.sh: $v must be a positive integer" >&2; exit 2 ;; esac
done
case $READ_COUNT in *[!0-9]*) echo "edge_bench.sh: --read-count must be a positive integer" >&2; exit 2 ;; esac
[ "$LAT_ORGS" -le "$ORGS" ] || { echo "edge_bench.sh: --lat-orgs must not exceed --orgs" >&2; exit 2; }

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

# ---- Outer half: build, then run the inner half inside the harness (PostgreSQL + Redis) -------
if [ -z "${WALCAST_BENCH_INNER:-}" ]; then
  LOAD_BIN=$(bench_build "$ROOT" rt_load)
  if [ -z "${WALCAST_BIN:-}" ]; then WALCAST_BIN=$(bench_build "$ROOT" walcast); fi
  if [ -n "$OUT" ]; then OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT"); fi
  export WALCAST_BIN LOAD_BIN WALCAST_BENCH_INNER=1 WALCAST_BENCH_OUT=$OUT
  export WALCAST_BENCH_ARGS="${ARGS[*]}"
  unset WALCAST_CONFIG
  ulimit -n "$(ulimit -Hn)"
  exec bash "$ROOT/tests/harness/harness.sh" run -- \
    bash "${BASH_SOURCE[0]}" --lat-clients "$LAT_CLIENTS" --lat-orgs "$LAT_ORGS" --rate "$RATE" \
    --seconds "$SECS" --clients "$CLIENTS" --orgs "$ORGS" --rows "$ROWS" --rounds "$ROUNDS" ${READ_COUNT:+--read-count "$READ_COUNT"} --inner
fi

# ---- Inner half: PG* and WALCAST_REDIS_URL point at the harness's servers ---------------------
OUT=${WALCAST_BENCH_OUT:-}
WORK=${WALCAST_HARNESS_DIR:-$(mktemp -d)}/edge-bench
mkdir -p "$WORK"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
export WALCAST_AUTH_JWT_SECRET="bench-secret-with-enough-length-for-hs256-0123456789abcdef"
SLOT=edge_bench KEY=walcast:bench

rt_bench_setup "$ORGS" "$CLIENTS"
rt_bench_tokens_first "$LAT_CLIENTS" "$LAT_ORGS" "$WORK/tokens.lat"
log "$(wc -l <"$WORK/tokens.all") members over $ORGS orgs; latency set: $(wc -l <"$WORK/tokens.lat") over $LAT_ORGS orgs"

PACT=$(port); PEDGE=$(port)
LIVE="[sink.live]
type = realtime
max_connections = $(( CLIENTS + 100 ))"
cat >"$WORK/active.conf" <<CONF
[replication]
slot = $SLOT
[pipeline]
checkpoint_store = postgres
state_dir = $WORK/active-state
[http]
listen = 127.0.0.1:$PACT
slot_status_interval = 0
[sink.stream]
type = redis_stream
url = $WALCAST_REDIS_URL
key = $KEY
$LIVE
CONF
cat >"$WORK/edge.conf" <<CONF
[replication]
slot = $SLOT
[pipeline]
checkpoint_store = postgres
state_dir = $WORK/edge-state
[http]
listen = 127.0.0.1:$PEDGE
[edge]
enabled = true
stream_url = $WALCAST_REDIS_URL
stream_key = $KEY
${READ_COUNT:+read_count = $READ_COUNT}
$LIVE
CONF
"$WALCAST_BIN" -c "$WORK/active.conf" run --policy "$ROOT/deploy/policy.ini" >/dev/null 2>"$WORK/active.err" &
ACT=$!
EDGE=
trap 'for p in $ACT $EDGE; do kill -CONT $p 2>/dev/null; kill -TERM $p 2>/dev/null; wait $p 2>/dev/null || true; done' EXIT
bench_wait_ready "$PACT" "$WORK/active.err"
# an edge starts from the shared checkpoint: wait until the active instance wrote one past a
# transaction committed now
AFTER=$(sql -c "select pg_current_wal_insert_lsn()")
sql -c "insert into public.orgs (name) values ('edge-bench warm-up')"
for _ in $(seq 1 300); do
  [ "$(sql -c "select count(*) from walcast.checkpoint_positions where slot = '$SLOT' and name = 'pipeline' and lsn >= '$AFTER'")" = 1 ] && break
  sleep 0.2
done
"$WALCAST_BIN" -c "$WORK/edge.conf" run --policy "$ROOT/deploy/policy.ini" >/dev/null 2>"$WORK/edge.err" &
EDGE=$!
bench_wait_ready "$PEDGE" "$WORK/edge.err"

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# edge_caught_up: the edge read the stream to its end (checked twice, 0.3 s apart, so that a value
# from before it polled the stream again does not count)
edge_caught_up() {
  local i
  for i in 1 2; do
    [ "$(metric "$PEDGE" walcast_edge_stream_lag_bytes)" = 0 ] && [ "$(metric "$PEDGE" walcast_edge_caught_up)" = 1 ] || return 1
    [ $i = 2 ] || sleep 0.3
  done
}
wait_edge() { for _ in $(seq 1 600); do edge_caught_up && return 0; sleep 0.2; done; log "the edge did not catch up"; return 1; }

j0=$(cpu_jiffies); sleep 3; j1=$(cpu_jiffies)
IDLE_BUSY=$(busy_pct "$j0" "$j1"); LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: ${IDLE_BUSY}% busy before the run, load average $LOAD_BEFORE"

# ---- (c) idle connections, first: later steps leave the allocator's heap grown -----------------
rt_idle_rss ce "$PEDGE" $EDGE "$CLIENTS"; E_RSS=("$RSS0" "$RSSH" "$RSS1")
log "(c) edge RSS ${E_RSS[*]} KB at 0, $(( CLIENTS / 2 )), $(( CLIENTS / 2 * 2 )) idle connections"
rt_idle_rss ca "$PACT" $ACT "$CLIENTS"; A_RSS=("$RSS0" "$RSSH" "$RSS1")
log "(c) active RSS ${A_RSS[*]} KB at 0, $(( CLIENTS / 2 )), $(( CLIENTS / 2 * 2 )) idle connections"
sleep 2

# ---- (a) latency: the same users on the edge and on the active instance, one writer ------------
LAT_ROWS=$(( RATE * SECS ))
LAT_EXPECT=$(( LAT_ROWS * $(wc -l <"$WORK/tokens.lat") / LAT_ORGS ))
rt_load_start ae "$PEDGE" "$WORK/tokens.lat" --expect "$LAT_EXPECT" --idle 15 --timeout 120 --latency "$WORK/latency.edge.us"; LPE=$LP
rt_load_start ad "$PACT" "$WORK/tokens.lat" --expect "$LAT_EXPECT" --idle 15 --timeout 120 --latency "$WORK/latency.direct.us"; LPD=$LP
log "(a) $LAT_ROWS single-row transactions at $RATE/s, synchronous_commit on"
we0=$(proc_cpu_s $EDGE); wa0=$(proc_cpu_s $ACT); j0=$(cpu_jiffies)
PGOPTIONS="-c synchronous_commit=on" sql -c "call bench.load(1, $LAT_ROWS, 1, $LAT_ORGS, $RATE)"
A_LOAD=$(loadavg)
wait $LPE || log "(a) rt_load on the edge: $(tail -3 "$WORK/load.ae.err")"
wait $LPD || log "(a) rt_load on the active instance: $(tail -3 "$WORK/load.ad.err")"
j1=$(cpu_jiffies); A_BUSY=$(busy_pct "$j0" "$j1")
A_ECPU=$(printf "%.2f" "$(echo "$(proc_cpu_s $EDGE) - $we0" | bc)"); A_ACPU=$(printf "%.2f" "$(echo "$(proc_cpu_s $ACT) - $wa0" | bc)")
log "(a) edge: $(cat "$WORK/load.ae")"
log "(a) direct: $(cat "$WORK/load.ad")"

# ---- (b) delivered messages/s, alternately direct and through the edge ------------------------
B_EXPECT=$(( ROWS * CLIENTS / ORGS ))
NEXT=1000001 # the next bench.load transaction number
declare -A BUSY LOAD CPU FPW
# frames per socket write of PORT's realtime sink over a step: counters read before the stop
# (a stopped walcast answers only after the backlog) and after the clients' count
writes_before() { F0=$(rt_counter "$1" walcast_realtime_frames_sent_total); W0=$(rt_counter "$1" walcast_realtime_writes_total); }
writes_after() { # NAME PORT
  FPW[$1]=$(py "print(f'{($(rt_counter "$2" walcast_realtime_frames_sent_total) - $F0) / max($(rt_counter "$2" walcast_realtime_writes_total) - $W0, 1):.1f}')")
  log "($1) ${FPW[$1]} frames per socket write"
}
# stream_has_tx XID: the stream's last entries hold transaction XID's commit
# (grep -c reads it all: grep -q would leave redis-cli to a SIGPIPE, which pipefail counts as failure)
stream_has_tx() { redis-cli -u "$WALCAST_REDIS_URL" xrevrange "$KEY" + - count 20 | grep -c "\"action\":\"C\",\"xid\":$1[,}]" >/dev/null; }
commit_rows() { sql -c "call bench.load($NEXT, $ROWS, 1, $ORGS, 0)"; NEXT=$(( NEXT + ROWS )); }
py() { python3 -c "$1"; }
measure() { # NAME PID: continues PID and waits for the clients' count; CPU of PID, busy, load
  local j0 c0
  local perf=
  if [ -n "${WALCAST_BENCH_PERF:-}" ]; then # a CPU profile of the process while it delivers
    perf record -q -F 499 -g -p "$2" -o "$WALCAST_BENCH_PERF.$1" 2>/dev/null & perf=$!
    sleep 0.5
  fi
  j0=$(cpu_jiffies); c0=$(proc_cpu_s "$2")
  kill -CONT "$2"
  wait $LP || log "($1) rt_load: $(tail -3 "$WORK/load.$1.err")"
  if [ -n "$perf" ]; then kill -INT $perf; wait $perf || true; fi
  BUSY[$1]=$(busy_pct "$j0" "$(cpu_jiffies)"); LOAD[$1]=$(loadavg); CPU[$1]=$(printf "%.2f" "$(echo "$(proc_cpu_s "$2") - $c0" | bc)")
  log "($1) $(cat "$WORK/load.$1"); CPU ${CPU[$1]} s"
}
direct() { # NAME
  rt_load_start "$1" "$PACT" "$WORK/tokens.all" --expect "$B_EXPECT" --idle 20 --timeout 150
  writes_before "$PACT"
  kill -STOP $EDGE $ACT
  commit_rows
  measure "$1" $ACT
  writes_after "$1" "$PACT"
  kill -CONT $EDGE; wait_edge; sleep 1
}
edge() { # NAME
  rt_load_start "$1" "$PEDGE" "$WORK/tokens.all" --expect "$B_EXPECT" --idle 20 --timeout 150
  writes_before "$PEDGE"
  kill -STOP $EDGE
  commit_rows
  local xid
  xid=$(sql -c "insert into public.orgs (name) values ('edge-bench marker $1') returning (pg_current_xact_id()::text::bigint % 4294967296)")
  for _ in $(seq 1 1500); do stream_has_tx "$xid" && break; sleep 0.2; done
  stream_has_tx "$xid" || log "($1) the marker transaction $xid is not in the stream"
  measure "$1" $EDGE
  writes_after "$1" "$PEDGE"
  wait_edge; sleep 1
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $(( r % 2 )) = 1 ]; then direct "bd$r"; edge "be$r"; else edge "be$r"; direct "bd$r"; fi
done

# ---- (d) an edge added: its start with the stream's window read, and without ----------------
PNEW=$(port)
sed -e "s/^listen = .*/listen = 127.0.0.1:$PNEW/" -e "s|^state_dir = .*|state_dir = $WORK/new-state|" \
  "$WORK/edge.conf" >"$WORK/new.conf"
printf 'replay_bytes = 256MB\n' >>"$WORK/new.conf" # the [sink.live] section is the file's last
STREAM_LEN=$(redis-cli -u "$WALCAST_REDIS_URL" xlen "$KEY")
WT=() WN=() WR=() PT=() PN=() PR=() # (d) per round: ms to ready, entries read, RSS MB; W window, P position
added() { # NAME true|false
  local t0 pid ms n mb
  t0=$(date +%s%N)
  "$WALCAST_BIN" -c "$WORK/new.conf" run --policy "$ROOT/deploy/policy.ini" --set "edge.replay_from_stream=$2" \
    >/dev/null 2>"$WORK/$1.err" &
  pid=$!
  until curl -sf "http://127.0.0.1:$PNEW/readyz" >/dev/null; do kill -0 $pid || break; sleep 0.05; done
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  n=$(metric "$PNEW" walcast_edge_entries_read_total); mb=$(( $(rss_kb $pid) / 1024 ))
  kill -TERM $pid; wait $pid || true
  if [ "$2" = true ]; then WT+=("$ms"); WN+=("$n"); WR+=("$mb"); else PT+=("$ms"); PN+=("$n"); PR+=("$mb"); fi
  log "($1) replay_from_stream=$2: ready after $ms ms, $n entries read, RSS $mb MB"
}
for r in $(seq 1 "$ROUNDS"); do added "dw$r" true; added "dp$r" false; done

# ---- Report -----------------------------------------------------------------------------------
KEEP=${TMPDIR:-/tmp}/walcast-edge-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$KEEP" && cp "$WORK"/load.* "$WORK"/latency.*.us "$KEEP/" && log "raw results kept in $KEEP"
bench_git_state "$ROOT" src plugins CMakeLists.txt bench/edge_bench.sh bench/lib.sh bench/rt_load.c
GIT_REV=$BENCH_GIT${BENCH_DIRTY:+ + $BENCH_DIRTY}
kv() { bench_kv "$WORK/$1" "$2"; }
med() { py "import statistics, sys; print(f'{statistics.median([$(IFS=,; echo "$*")]):.0f}')"; }
E50=$(kv load.ae p50_ms) E99=$(kv load.ae p99_ms) D50=$(kv load.ad p50_ms) D99=$(kv load.ad p99_ms)
BD=() BE=() BR=() BCD=() BCE=() CD=() CE=() FD=() FE=() PD=() PE=()
for r in $(seq 1 "$ROUNDS"); do
  BD+=("$(kv "load.bd$r" rate)"); BE+=("$(kv "load.be$r" rate)"); CD+=("${CPU[bd$r]}"); CE+=("${CPU[be$r]}"); PD+=("${FPW[bd$r]}"); PE+=("${FPW[be$r]}")
  FD+=("$(kv "load.bd$r" frames)"); FE+=("$(kv "load.be$r" frames)")
  BR+=("$(py "print(f'{${BE[-1]} / max(${BD[-1]}, 1):.2f}')")")
  BCD+=("$(py "print(f'{$(kv "load.bd$r" frames) / max(${CPU[bd$r]}, 0.001):.0f}')")")
  BCE+=("$(py "print(f'{$(kv "load.be$r" frames) / max(${CPU[be$r]}, 0.001):.0f}')")")
done
MBD=$(med "${BD[@]}") MBE=$(med "${BE[@]}")
MBR=$(py "import statistics; print(f'{statistics.median([$(IFS=,; echo "${BR[*]}")]):.2f}')")
MBCD=$(med "${BCD[@]}") MBCE=$(med "${BCE[@]}")
per_conn() { py "print(f'{($3 - $2) / ($CLIENTS // 2):.1f}')"; }
E_PC=$(per_conn "${E_RSS[@]}") A_PC=$(per_conn "${A_RSS[@]}")
each() { local IFS=/; echo "$*"; }
steps() { local s= r; for r in $(seq 1 "$ROUNDS"); do s+="${s:+, }${BUSY[$1$r]} % / ${LOAD[$1$r]}"; done; echo "$s"; }
{
  echo "<!-- bench:edge:begin -->"
  echo "<!-- Generated by bench/edge_bench.sh on $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand. -->"
  echo
  echo "### Latest run"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bash bench/edge_bench.sh ${WALCAST_BENCH_ARGS:-}\`"
  echo "- Machine: $(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr); PostgreSQL $(sql -c 'show server_version') (harness: fsync off), $(redis-server --version | awk '{print $1, $3}' | sed 's/v=//') on loopback (no persistence)"
  echo "- walcast: git $GIT_REV, RelWithDebInfo, \`--policy deploy/policy.ini\`. The active instance: \`checkpoint_store = postgres\`, a \`redis_stream\` sink (defaults) and a realtime sink (the direct reference); one edge (\`[edge] enabled\`${READ_COUNT:+, **\`read_count = $READ_COUNT\`**}) with the same realtime sink (defaults but \`max_connections\`). All on this one machine: PostgreSQL, Redis, both walcast processes and the clients (bench/rt_load.c, vsn 2.0.0, one \`postgres_changes\` channel filtered to its org, its member's own token)."
  echo "- **Shared machine** (other builds and tests ran beside it): ${IDLE_BUSY}% of both CPUs busy in the 3 s before the run, load average $LOAD_BEFORE. Per step: the share of both CPUs busy (this run's processes included) / the 1-minute load average at its end."
  echo
  echo "| measure | through the edge | direct (active instance) | edge vs direct | machine busy / load |"
  echo "|---|---:|---:|---:|---:|"
  echo "| (a) commit → client latency p50 / p99 (max), $(kv load.ae clients) clients on each over $LAT_ORGS orgs, $RATE single-row changes/s for $SECS s, synchronous_commit on, both at once | $E50 / $E99 ($(kv load.ae max_ms)) ms | $D50 / $D99 ($(kv load.ad max_ms)) ms | **+$(py "print(f'{$E50 - $D50:.2f}')") / +$(py "print(f'{$E99 - $D99:.2f}')") ms** (×$(py "print(f'{$E50 / max($D50, 0.001):.2f}')") / ×$(py "print(f'{$E99 / max($D99, 0.001):.2f}')")) | $A_BUSY % / $A_LOAD |"
  echo "| (b) delivered messages/s, $CLIENTS clients over $ORGS orgs, $ROWS single-row transactions, median of $ROUNDS (each round) | **$MBE** ($(each "${BE[@]}")) | **$MBD** ($(each "${BD[@]}")) | **ratio $MBR** ($(each "${BR[@]}")) | edge $(steps be); direct $(steps bd) |"
  echo "| (b) the same per CPU-second of the delivering process (edge / active instance), median | $MBCE ($(each "${BCE[@]}")) | $MBCD ($(each "${BCD[@]}")) | $(py "print(f'{$MBCE / max($MBCD, 1):.2f}')") | |"
  echo "| (c) RSS per idle connection (subscribed, one channel): the second half's growth (0, $(( CLIENTS / 2 )), $(( CLIENTS / 2 * 2 )) connections) | **$E_PC KB** (${E_RSS[0]} → ${E_RSS[1]} → ${E_RSS[2]} KB) | $A_PC KB (${A_RSS[0]} → ${A_RSS[1]} → ${A_RSS[2]} KB) | | |"
  echo "| (d) an edge added beside it, the stream holding $STREAM_LEN entries: start → /readyz 200, median of $ROUNDS (each round); entries read; RSS once ready | **$(med "${WT[@]}") ms** ($(each "${WT[@]}")), its replay buffer filled from the stream's window: $(med "${WN[@]}") entries, $(med "${WR[@]}") MB | $(med "${PT[@]}") ms ($(each "${PT[@]}")), started at the confirmed position (\`replay_from_stream = false\`): $(med "${PN[@]}") entries, $(med "${PR[@]}") MB | ×$(py "print(f'{$(med "${WT[@]}") / max($(med "${PT[@]}"), 1):.1f}')") | |"
  echo
  echo "Details: latency is rt_load's clock at receipt − the row's \`started_at\` (\`clock_timestamp()\` just before COMMIT; one machine, one clock), $(kv load.ae lat_n) / $(kv load.ad lat_n) samples (edge / direct); the edge's CPU over (a) $A_ECPU s, the active instance's $A_ACPU s (it also publishes the stream). (b): the edge is stopped (SIGSTOP) while the rows are committed and published to the stream, so its rate is reading the backlog from Redis, judging and delivering it; for the direct step the active instance is stopped with the backlog in the slot (and the edge stopped too, so that it takes no CPU meanwhile); frames counted per round edge $(each "${FE[@]}") / direct $(each "${FD[@]}") of $B_EXPECT expected, mean frame $(kv load.be1 mean_frame) B; CPU of the delivering process per round edge $(each "${CE[@]}") s, direct $(each "${CD[@]}") s; frames per socket write (walcast_realtime_frames_sent_total / walcast_realtime_writes_total over the step) edge $(each "${PE[@]}"), direct $(each "${PD[@]}"). Load generator: rt_load's own CPU while receiving $(kv load.be1 recv_cpu_pct) % (edge, round 1) / $(kv load.bd1 recv_cpu_pct) % (direct, round 1) of one core."
  echo "<!-- bench:edge:end -->"
} >"$WORK/section.md"
cat "$WORK/section.md"

if [ -n "$OUT" ] && bench_may_publish edge_bench.sh; then
  bench_replace_section "$OUT" "$WORK/section.md" edge
  log "wrote $OUT"
fi

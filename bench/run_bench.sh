#!/usr/bin/env bash
# `walcast run` with the nng sink vs pg_recvlogical on the same WAL, and commit → nng receipt
# latency (issue 8, "Benchmark").
#
#   bash bench/run_bench.sh [--rows M] [--subs "10 1000 100000"] [--rounds R] [--rate N]
#                           [--seconds S] [--topics LIST] [--coalesce "off on"]
#                           [--out FILE | --no-doc]
#
# Inside one throwaway PostgreSQL (tests/harness/harness.sh), with deploy/policy.ini:
#   1. Throughput, for each subscriber count N: 100 orgs and N members (org_roles rows, the
#      policy state walcast run holds) spread over them, ranks cycled; every slot of that N is
#      created, then M single-row event transactions are loaded (80 % name a member as the
#      handling user, so they also go to that user's topic) and a marker transaction
#      (pg_logical_emit_message) ends the WAL. Each slot is drained once, alternating which tool
#      goes first, timed with /usr/bin/time -v: pg_recvlogical (pgoutput, the options walcast
#      asks for) to the end LSN; `walcast run` with one nng sink (sendbuf 8192), once per
#      --coalesce mode (the sink's coalesce key; each mode its own slot of the same WAL), until
#      bench/run_bench_sub.c, subscribed to the bypass topic of public.events and the marker
#      topic, receives the marker (then walcast gets SIGTERM). Rows/s, CPU per row, peak RSS,
#      medians over R rounds (peak RSS: the maximum).
#   2. Latency, once per --coalesce mode: walcast run with the last N's members, a writer
#      committing single-row events at
#      --rate changes/s for --seconds s (paced in plpgsql); the subscriber compares each
#      message's commit_time (PostgreSQL's commit timestamp) with its own clock at receipt. The
#      writer runs with synchronous_commit on (the harness's default is off, which delays
#      logical decoding by up to wal_writer_delay).
#
# Prints a Markdown report and writes it into docs/benchmarks.md between
# <!-- bench:run:begin --> and <!-- bench:run:end --> (only on a committed tree, bench/lib.sh).
# Options: --rows M (default 100000), --subs LIST (default "10 1000 100000"), --rounds R
# (default 3), --rate N (default 1000), --seconds S (default 20), --topics LIST (the nng sink's
# topics key, default: the sink's own, every family), --coalesce LIST (the sink's coalesce key,
# each value measured in the same run; default "off on"), --out FILE, --no-doc.
# Environment: WALCAST_BIN, WALCAST_BENCH_BUILD_DIR. A measurement, not a test: exits 0 whether
# or not the bars are met.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROWS=100000
SUBS="10 1000 100000"
ROUNDS=3
RATE=1000
SECONDS_LAT=20
TOPICS=
COALESCE="off on"
OUT=$ROOT/docs/benchmarks.md
ARGS=("$@")

while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --subs) SUBS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --seconds) SECONDS_LAT=$2; shift 2 ;;
    --topics) TOPICS=$2; shift 2 ;;
    --coalesce) COALESCE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-doc) OUT=; shift ;;
    --inner) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "run_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in ROWS ROUNDS RATE SECONDS_LAT; do
  case ${!v} in ''|*[!0-9]*|0) echo "run_bench.sh: $v must be a positive integer" >&2; exit 2 ;; esac
done
for n in $SUBS; do
  case $n in ''|*[!0-9]*|0) echo "run_bench.sh: --subs takes positive integers" >&2; exit 2 ;; esac
done
[ -n "$COALESCE" ] || { echo "run_bench.sh: --coalesce takes on, off or both" >&2; exit 2; }
for c in $COALESCE; do
  case $c in on|off) ;; *) echo "run_bench.sh: --coalesce takes on, off or both" >&2; exit 2 ;; esac
done

# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

# ---- Outer half: build, then run the inner half inside the harness ---------------------------
if [ -z "${WALCAST_BENCH_INNER:-}" ]; then
  command -v /usr/bin/time >/dev/null || { echo "run_bench.sh: /usr/bin/time is missing" >&2; exit 1; }
  SUB_BIN=$(bench_build "$ROOT" run_bench_sub)
  if [ -z "${WALCAST_BIN:-}" ]; then WALCAST_BIN=$(bench_build "$ROOT" walcast); fi
  if [ -n "$OUT" ]; then OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT"); fi
  export WALCAST_BIN SUB_BIN WALCAST_BENCH_INNER=1 WALCAST_BENCH_OUT=$OUT WALCAST_BENCH_TOPICS=$TOPICS
  export WALCAST_BENCH_COALESCE=$COALESCE
  export WALCAST_BENCH_ARGS="${ARGS[*]}"
  unset WALCAST_CONFIG
  exec bash "$ROOT/tests/harness/harness.sh" run --no-redis -- \
    bash "${BASH_SOURCE[0]}" --rows "$ROWS" --subs "$SUBS" --rounds "$ROUNDS" --rate "$RATE" \
    --seconds "$SECONDS_LAT" --inner
fi

# ---- Inner half: PG* point at the harness's PostgreSQL ----------------------------------------
OUT=${WALCAST_BENCH_OUT:-}
TOPICS=${WALCAST_BENCH_TOPICS:-}
COALESCE=${WALCAST_BENCH_COALESCE:-off on}
PG_BIN=${WALCAST_PG_BIN:-/usr/lib/postgresql/15/bin}
RECV=$PG_BIN/pg_recvlogical
WORK=${WALCAST_HARNESS_DIR:-$(mktemp -d)}/run-bench
mkdir -p "$WORK"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_jiffies() { awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; t = b + $5 + $6; print b, t; exit}' /proc/stat; }
busy_pct() { local b0 t0 b1 t1; read -r b0 t0 <<<"$1"; read -r b1 t1 <<<"$2"; echo $(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) )); }
wait_slots_idle() {
  local _
  for _ in $(seq 1 100); do
    [ "$(sql -c "select count(*) from pg_replication_slots where active")" = 0 ] && { sleep 0.1; return 0; }
    sleep 0.2
  done
  log "WARNING: a replication slot stayed active"
}

# walcast run's configuration: one nng sink, a fresh state directory per run.
write_conf() { # file slot nngport httpport create_slot coalesce
  cat >"$1" <<CONF
[replication]
slot = $2
plugin = pgoutput
publication = walcast
create_slot = $5
[pipeline]
state_dir = $WORK/state-$2
[http]
listen = 127.0.0.1:$4
slot_status_interval = 0
[sink.live]
type = nng
listen = tcp://127.0.0.1:$3
sendbuf = 8192
coalesce = $6
CONF
  if [ -n "$TOPICS" ]; then echo "topics = $TOPICS" >>"$1"; fi
}

# Appends "subs tool round wall_s cpu_s maxrss_kb rc busy_pct messages startup_s stream_s
# stream_cpu_s nng_messages" to $RESULTS (the last four: walcast only, start to the first
# message, first message to marker, walcast's CPU time meanwhile, and the nng messages the
# payloads came in).
record() { # subs tool round wall tf rc busy messages [startup stream stream_cpu nng_messages]
  local rss user sys
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$5")
  user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$5")
  sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$5")
  printf '%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(echo "${user:-0} + ${sys:-0}" | bc)" \
    "${rss:-0}" "$6" "$7" "$8" "${9:-}" "${10:-}" "${11:-}" "${12:-}" >>"$RESULTS"
  log "  N=$1 $2 round $3: $(printf '%.2f' "$4") s, cpu $(echo "${user:-0} + ${sys:-0}" | bc) s, rss $((${rss:-0} / 1024)) MB, machine busy $7 %, rc $6${8:+, messages $8}"
}

drain_ref() { # subs round slot end
  local tf=$WORK/time.ref.$1.$2 rc=0 t0 t1 j0 j1
  wait_slots_idle
  j0=$(cpu_jiffies); t0=$(date +%s.%N)
  /usr/bin/time -v -o "$tf" "$RECV" -d "$PGDATABASE" -S "$3" --start -E "$4" --no-loop -F 0 \
    -o proto_version=1 -o publication_names=walcast -o messages=true -f /dev/null \
    2>"$WORK/stderr.ref.$1.$2" || rc=$?
  t1=$(date +%s.%N); j1=$(cpu_jiffies)
  record "$1" pg_recvlogical "$2" "$(echo "$t1 - $t0" | bc -l)" "$tf" "$rc" "$(busy_pct "$j0" "$j1")" ""
}

# Samples the CPU time (user + system, clock ticks) of process $1 every 50 ms into $2 as
# "UNIX_MICROSECONDS TICKS" lines until it exits: walcast's CPU at the subscriber's first message
# and at the marker, without its start-up and shutdown.
cpu_sampler() { # pid file
  local f
  while read -r -a f 2>/dev/null </proc/"$1"/stat; do
    echo "$(date +%s%6N) $((f[13] + f[14]))"
    sleep 0.05
  done >"$2"
}

drain_wc() { # subs round slot coalesce
  local tf=$WORK/time.wc.$1.$2.$4 rc=0 t0 t1 j0 j1 np hp sub run wpid sampler="" k=$1.$2.$4
  np=$(port); hp=$(port)
  write_conf "$WORK/wc.$k.conf" "$3" "$np" "$hp" false "$4"
  wait_slots_idle
  "$SUB_BIN" --timeout 300 "tcp://127.0.0.1:$np" walcast/v1/all/public.events/ walcast/v1/all/_message/ \
    >"$WORK/sub.$k" 2>"$WORK/sub.$k.err" &
  sub=$!
  j0=$(cpu_jiffies); t0=$(date +%s.%N)
  /usr/bin/time -v -o "$tf" "$WALCAST_BIN" -c "$WORK/wc.$k.conf" run --policy "$ROOT/deploy/policy.ini" \
    >/dev/null 2>"$WORK/stderr.wc.$k" &
  run=$!
  for _ in $(seq 1 100); do wpid=$(pgrep -P "$run" || true); [ -n "$wpid" ] && break; sleep 0.02; done
  if [ -n "$wpid" ]; then cpu_sampler "$wpid" "$WORK/cpu.wc.$k" & sampler=$!; fi
  wait "$sub" || rc=$?
  t1=$(date +%s.%N); j1=$(cpu_jiffies)
  # every topic's messages and payloads (the subscriber counts only the bypass topic's)
  curl -s "http://127.0.0.1:$hp/metrics" | awk -v k="$k" '/^walcast_nng_(messages|payloads)_total/ {v[$1] = $2}
    END {for (m in v) printf "%s %s %s\n", k, m, v[m]}' >>"$WORK/nng_totals" || true
  # $run is /usr/bin/time, which does not forward signals: stop walcast itself.
  kill -TERM "$wpid" 2>/dev/null || true
  wait "$run" || true
  [ -z "$sampler" ] || wait "$sampler" 2>/dev/null || true
  [ "$rc" = 0 ] || { log "  walcast run: the subscriber saw no marker"; tail -5 "$WORK/stderr.wc.$k" >&2; }
  local first last startup="" stream="" scpu=""
  first=$(sed -n 's/.*first_us=\([0-9]*\).*/\1/p' "$WORK/sub.$k")
  last=$(sed -n 's/.*marker_us=\([0-9]*\).*/\1/p' "$WORK/sub.$k")
  if [ "${first:-0}" -gt 0 ] && [ "${last:-0}" -gt 0 ]; then
    startup=$(echo "$first / 1000000 - $t0" | bc -l); stream=$(echo "($last - $first) / 1000000" | bc -l)
    # CPU from the last sample before the first message to the first sample after the marker,
    # or the last one (walcast's exit) when none came after it: an upper bound
    [ -s "$WORK/cpu.wc.$k" ] && scpu=$(awk -v a="$first" -v b="$last" -v hz="$(getconf CLK_TCK)" '
      $1 <= a {c0 = $2} $1 >= b && c1 == "" {c1 = $2} {cl = $2} END {if (c1 == "") c1 = cl; if (c0 != "" && c1 != "") printf "%.3f", (c1 - c0) / hz}' \
      "$WORK/cpu.wc.$k")
  fi
  record "$1" "walcast/$4" "$2" "$(echo "$t1 - $t0" | bc -l)" "$tf" "$rc" "$(busy_pct "$j0" "$j1")" \
    "$(sed -n 's/.*[^_]messages=\([0-9]*\).*/\1/p' "$WORK/sub.$k")" "$startup" "$stream" "$scpu" \
    "$(sed -n 's/.*nng_messages=\([0-9]*\).*/\1/p' "$WORK/sub.$k")"
}

# ---- Schema: 100 orgs, the load procedures ------------------------------------------------------
sql <<'SQL'
insert into public.orgs (name) select 'bench-org-' || g from generate_series(1, 100) g;
create schema bench;
-- M single-row transactions: the handling user is a member of the row's org 80 % of the time.
create procedure bench.load(first bigint, n bigint, pace_per_s int) language plpgsql as $$
declare
  orgs uuid[];
  m_org uuid[];
  m_user uuid[];
  nm int;
  org uuid;
  usr uuid;
  t0 timestamptz := clock_timestamp();
  late float8;
begin
  select array_agg(id order by name) into orgs from public.orgs where name like 'bench-org-%';
  select array_agg(org_id order by user_id), array_agg(user_id order by user_id) into m_org, m_user from public.org_roles;
  nm := coalesce(array_length(m_user, 1), 0);
  for i in first .. first + n - 1 loop
    if nm > 0 and i % 5 <> 0 then
      org := m_org[1 + (i % nm)::int]; usr := m_user[1 + (i % nm)::int];
    else
      org := orgs[1 + (i % 100)::int]; usr := null;
    end if;
    insert into public.events (org_id, user_id, kind, direction, status, duration_s, from_number, to_number)
      values (org, usr, case when i % 5 < 3 then 'call' else 'sms' end,
              case when i % 2 = 0 then 'inbound' else 'outbound' end, 'completed', (i % 1800)::int,
              '+1555' || lpad((i % 10000000)::text, 7, '0'), '+1666' || lpad((i % 9999991)::text, 7, '0'));
    commit;
    if pace_per_s > 0 then
      late := extract(epoch from (t0 + (i - first + 1) * (interval '1 second' / pace_per_s)) - clock_timestamp());
      if late > 0 then perform pg_sleep(late); end if;
    end if;
  end loop;
end
$$;
SQL

j0=$(cpu_jiffies); sleep 3; j1=$(cpu_jiffies)
IDLE_BUSY=$(busy_pct "$j0" "$j1")
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
OTHERS=$(top -b -n 2 -d 1 -w 200 2>/dev/null |
  awk '/^top -/ {n++} n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 5 {printf "%s%s %s%%", sep, $12, $9; sep = ", "}' | head -c 300 || true)
log "machine: ${IDLE_BUSY}% busy before the run, load average $LOADAVG${OTHERS:+ ($OTHERS)}"

# ---- 1. Throughput ------------------------------------------------------------------------------
declare -A LOADS
for n in $SUBS; do
  sql -c "truncate public.events" -c "delete from public.org_roles" >/dev/null
  sql -c "insert into public.org_roles (org_id, user_id, role)
          select o.id, gen_random_uuid(), (array['viewer','member','analyst','admin','owner'])[1 + (g / 100) % 5]
          from generate_series(0, $n - 1) g
          join (select id, row_number() over (order by name) - 1 as k from public.orgs where name like 'bench-org-%') o
            on o.k = g % 100" >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    sql -c "select 1 from pg_create_logical_replication_slot('ref_${n}_$r', 'pgoutput')" >/dev/null
    for c in $COALESCE; do
      sql -c "select 1 from pg_create_logical_replication_slot('wc_${n}_${r}_$c', 'pgoutput')" >/dev/null
    done
  done
  log "N=$n: $(sql -c 'select count(*) from public.org_roles') members; loading $ROWS single-row transactions (2 sessions)"
  t0=$(date +%s.%N)
  half=$(( (ROWS + 1) / 2 ))
  sql -c "call bench.load(1, $half, 0)" & p1=$!
  sql -c "call bench.load($((half + 1)), $((ROWS - half)), 0)" & p2=$!
  wait $p1; wait $p2
  END=$(sql -c 'select pg_current_wal_insert_lsn()')
  sql -c "select 1 from pg_logical_emit_message(true, 'walcast-bench', 'end')" >/dev/null
  LOADS[$n]="$(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc -l)") s"
  sql -c checkpoint
  log "N=$n: loaded $(sql -c 'select count(*) from public.events') rows in ${LOADS[$n]}; end $END"
  # odd rounds: pg_recvlogical, then the modes in order; even rounds: the other way round
  for r in $(seq 1 "$ROUNDS"); do
    modes=$COALESCE
    [ $((r % 2)) = 1 ] || modes=$(tr ' ' '\n' <<<"$COALESCE" | tac | paste -sd' ')
    [ $((r % 2)) = 0 ] || drain_ref "$n" "$r" "ref_${n}_$r" "$END"
    for c in $modes; do drain_wc "$n" "$r" "wc_${n}_${r}_$c" "$c"; done
    [ $((r % 2)) = 1 ] || drain_ref "$n" "$r" "ref_${n}_$r" "$END"
  done
  wait_slots_idle
  sql -c "select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots where slot_name like '%\_${n}\_%'" >/dev/null
done

# ---- 2. Latency at a paced rate, once per coalesce mode ----------------------------------------
LAT_N=${SUBS##* }
LAT_ROWS=$(( RATE * SECONDS_LAT ))
LAT_INFO=$WORK/latency.tsv
: >"$LAT_INFO"
for c in $COALESCE; do
  np=$(port); hp=$(port)
  write_conf "$WORK/lat.$c.conf" "lat_$c" "$np" "$hp" true "$c"
  "$WALCAST_BIN" -c "$WORK/lat.$c.conf" run --policy "$ROOT/deploy/policy.ini" >/dev/null 2>"$WORK/stderr.lat.$c" &
  RUN=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$hp/readyz" >/dev/null && break; sleep 0.2; done
  "$SUB_BIN" --timeout 60 --latency "$WORK/latency.$c.us" "tcp://127.0.0.1:$np" walcast/v1/all/public.events/ \
    walcast/v1/all/_message/ >"$WORK/sub.lat.$c" 2>"$WORK/sub.lat.$c.err" &
  SUB=$!
  sleep 1
  log "latency (coalesce $c): $LAT_ROWS single-row transactions at $RATE/s, N=$LAT_N members"
  j0=$(cpu_jiffies); t0=$(date +%s.%N)
  # synchronous_commit on (PostgreSQL's default; the harness turns it off): a walsender sends only
  # flushed WAL, and with it off a commit waits for the WAL writer (wal_writer_delay, 200 ms).
  PGOPTIONS="-c synchronous_commit=on" sql -c "call bench.load(10000001, $LAT_ROWS, $RATE)"
  LAT_WALL=$(echo "$(date +%s.%N) - $t0" | bc -l)
  sql -c "select 1 from pg_logical_emit_message(true, 'walcast-bench', 'end')" >/dev/null
  wait "$SUB" || log "latency: the subscriber saw no marker"
  j1=$(cpu_jiffies)
  kill -TERM "$RUN" 2>/dev/null || true
  wait "$RUN" || true
  printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$WORK/latency.$c.us" "$(cat "$WORK/sub.lat.$c")" "$(busy_pct "$j0" "$j1")" \
    "$LAT_WALL" >>"$LAT_INFO"
  log "latency (coalesce $c): $(cat "$WORK/sub.lat.$c"); paced load took $(printf '%.1f' "$LAT_WALL") s"
done

# ---- Report -----------------------------------------------------------------------------------
KEEP=${TMPDIR:-/tmp}/walcast-run-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$KEEP" && cp "$RESULTS" "$LAT_INFO" "$WORK/nng_totals" "$WORK"/latency.*.us "$WORK"/sub.lat.* "$KEEP/" && log "raw results kept in $KEEP"
bench_git_state "$ROOT" src plugins CMakeLists.txt bench/run_bench.sh bench/run_bench_sub.c
GIT_REV=$BENCH_GIT${BENCH_DIRTY:+ + $BENCH_DIRTY}
LOAD_TXT=""
for n in $SUBS; do LOAD_TXT+="N=$n: ${LOADS[$n]}; "; done
python3 - "$RESULTS" "$LAT_INFO" "$ROWS" "$RATE" "$SECONDS_LAT" "$LAT_N" >"$WORK/report.md" <<'PY'
import statistics, sys
from collections import defaultdict
res, latinfo, rows, rate, secs, lat_n = sys.argv[1:7]
rows = int(rows)
R = defaultdict(list)
for line in open(res):
    n, tool, rnd, wall, cpu, rss, rc, busy, msgs, startup, stream, scpu, nmsgs = line.rstrip("\n").split("\t")
    R[(int(n), tool)].append(dict(wall=float(wall), cpu=float(cpu), rss=int(rss), rc=int(rc), busy=int(busy),
                                  msgs=int(msgs) if msgs else None, nmsgs=int(nmsgs) if nmsgs else None,
                                  startup=float(startup) if startup else None,
                                  stream=float(stream) if stream else None,
                                  scpu=float(scpu) if scpu else None))
med = statistics.median
ok = lambda b: "**met**" if b else "**not met**"
subs = sorted({k[0] for k in R})
tools = sorted({k[1] for k in R if k[1] != "pg_recvlogical"})
mode = lambda t: t.split("/", 1)[1]
out = ["#### 1. Throughput: " + f"{rows:,} single-row transactions, 100 orgs\n",
       "| subscribers (members) | coalesce | pg_recvlogical rows/s | walcast run rows/s | ratio (bar ≥ 0.95) | CPU µs/row: pg_recvlogical / walcast (×; bar ≤ 1.3) | peak RSS: pg_recvlogical / walcast | machine busy during drains | payloads / nng messages received (bypass topic), per round |",
       "|---:|---|---:|---:|---|---:|---:|---:|---:|"]
for n in subs:
    ref = R[(n, "pg_recvlogical")]
    for t in tools:
        wc = R[(n, t)]
        rr, wr = med([rows / v["wall"] for v in ref]), med([rows / v["wall"] for v in wc])
        ratio = med([(rows / b["wall"]) / (rows / a["wall"]) for a, b in zip(ref, wc)])
        rc_, wc_ = med([v["cpu"] for v in ref]) / rows * 1e6, med([v["cpu"] for v in wc]) / rows * 1e6
        busy = med([v["busy"] for v in ref + wc])
        msgs = ", ".join(f"{v['msgs']}/{v['nmsgs']}" for v in wc)
        failed = [v for v in ref + wc if v["rc"] != 0]
        note = " ⚠ failed drains: %d" % len(failed) if failed else ""
        x = wc_ / rc_ if rc_ > 0 else float('nan')
        out.append(f"| {n:,}{note} | {mode(t)} | {rr/1000:,.1f}k | {wr/1000:,.1f}k | {ratio:.3f} {ok(ratio >= 0.95)} | {rc_:.1f} / {wc_:.1f} ({x:.2f}× {ok(x <= 1.3)}) | {max(v['rss'] for v in ref)/1024:.1f} / {max(v['rss'] for v in wc)/1024:.1f} MB | {busy:.0f} % | {msgs} |")
if "walcast/on" in tools and "walcast/off" in tools:
    out.append("\nCoalesce on against off, the same WAL in the same rounds (medians of the per-round ratios; CPU: whole drain, and streaming only):\n")
    out.append("| subscribers (members) | rows/s on / off | CPU per row on / off | streaming CPU per row on / off | nng messages on / off (bypass topic) |")
    out.append("|---:|---:|---:|---:|---:|")
    for n in subs:
        on, off = R[(n, "walcast/on")], R[(n, "walcast/off")]
        rs = med([b["wall"] and a["wall"] / b["wall"] for a, b in zip(off, on)])
        cs = med([b["cpu"] / a["cpu"] for a, b in zip(off, on) if a["cpu"] > 0])
        ss = [b["scpu"] / a["scpu"] for a, b in zip(off, on) if a["scpu"] and b["scpu"]]
        ms = [b["nmsgs"] / a["nmsgs"] for a, b in zip(off, on) if a["nmsgs"] and b["nmsgs"]]
        out.append(f"| {n:,} | {rs:.2f} | {cs:.2f} | {med(ss):.2f} | {med(ms):.3f} |" if ss and ms else f"| {n:,} | {rs:.2f} | {cs:.2f} | – | – |")
out.append("\nThe same drains without walcast's start-up (connecting, the policy-state load of every member, the slot): walcast from the subscriber's first message to the marker.\n")
out.append("| subscribers (members) | coalesce | walcast start-up s | walcast streaming rows/s | streaming ratio vs pg_recvlogical | streaming CPU µs/row: pg_recvlogical / walcast (×) |")
out.append("|---:|---|---:|---:|---:|---:|")
for n in subs:
    ref = R[(n, "pg_recvlogical")]
    for t in tools:
        wc = R[(n, t)]
        pairs = [(a, b) for a, b in zip(ref, wc) if b["stream"]]
        if not pairs:
            out.append(f"| {n:,} | {mode(t)} | – | – | – | – |")
            continue
        su = med([b["startup"] for _, b in pairs])
        sr = med([rows / b["stream"] for _, b in pairs])
        sratio = med([(rows / b["stream"]) / (rows / a["wall"]) for a, b in pairs])
        rc_ = med([v["cpu"] for v in ref]) / rows * 1e6
        sc = [b["scpu"] for _, b in pairs if b["scpu"] is not None]
        scpu = f"{rc_:.1f} / {med(sc) / rows * 1e6:.1f} ({med(sc) / rows * 1e6 / rc_:.2f}×)" if sc and rc_ > 0 else "–"
        out.append(f"| {n:,} | {mode(t)} | {su:.2f} | {sr/1000:,.1f}k | {sratio:.3f} | {scpu} |")
out.append("\n<details><summary>every drain</summary>\n")
out.append("| subscribers | tool | round | wall s | CPU s | peak RSS | machine busy | exit | start-up s / streaming s (CPU s) |")
out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for (n, tool), vs in sorted(R.items()):
    for i, v in enumerate(vs, 1):
        st = f"{v['startup']:.2f} / {v['stream']:.2f}" + (f" ({v['scpu']:.2f})" if v["scpu"] is not None else "") if v["stream"] else "–"
        name = tool if tool == "pg_recvlogical" else f"walcast, coalesce {mode(tool)}"
        out.append(f"| {n:,} | {name} | {i} | {v['wall']:.2f} | {v['cpu']:.2f} | {v['rss']/1024:.1f} MB | {v['busy']} % | {v['rc']} | {st} |")
out.append("\n</details>\n")
out.append(f"#### 2. Latency: commit → nng receipt at {int(rate):,} changes/s for {secs} s ({int(lat_n):,} members)\n")
out.append("| coalesce | messages | p50 | p90 | p99 | max | bar p99 ≤ 5 ms | achieved rate | machine busy |")
out.append("|---|---:|---:|---:|---:|---:|---|---:|---:|")
subs_lines = []
for line in open(latinfo):
    c, latf, sub, busy, wall = line.rstrip("\n").split("\t")
    lat = sorted(int(x) for x in open(latf) if x.strip())
    subs_lines.append(f"coalesce {c}: `{sub}`")
    if not lat:
        out.append(f"| {c} | 0 | – | – | – | – | no sample | – | {busy} % |")
        continue
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
    out.append(f"| {c} | {len(lat):,} | {q(0.5):.2f} ms | {q(0.9):.2f} ms | {q(0.99):.2f} ms | {lat[-1]/1000:.2f} ms | {ok(q(0.99) <= 5)} | {len(lat)/float(wall):,.0f}/s | {busy} % |")
out.append("\nSubscriber: " + "; ".join(subs_lines) + ". Latency = the subscriber's clock at receipt − the payload's `commit_time` (PostgreSQL's commit timestamp, taken just before the commit record is written), same machine.")
print("\n".join(out))
PY

{
  echo "<!-- bench:run:begin -->"
  echo "<!-- Generated by bench/run_bench.sh on $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand. -->"
  echo
  echo "### Latest run"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bash bench/run_bench.sh ${WALCAST_BENCH_ARGS:-}\`"
  echo "- Machine: $(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr); PostgreSQL $(sql -c 'show server_version') (harness: fsync off, synchronous_commit off)"
  echo "- walcast: git $GIT_REV, RelWithDebInfo; \`walcast run --policy deploy/policy.ini\` with one nng sink (\`sendbuf = 8192\`${TOPICS:+, \`topics = $TOPICS\`}, \`coalesce\` = each of: $COALESCE), pgoutput"
  echo "- **Shared machine**: ${IDLE_BUSY}% of all CPUs busy with other work in the 3 s before the run, load average $LOADAVG${OTHERS:+ (top: $OTHERS)}. \"Machine busy\" below is the share of all CPUs busy during each drain, the drain's own processes included. Absolute figures are skewed by that load; the ratios less so (each round's drains run back to back, pg_recvlogical first in odd rounds and last in even ones, the coalesce modes in opposite orders)."
  echo "- Loads (2 sessions, COMMIT after every insert): ${LOAD_TXT% }"
  echo "- pg_recvlogical: \`pg_recvlogical -S SLOT --start -E END --no-loop -F 0 -o proto_version=1 -o publication_names=walcast -o messages=true -f /dev/null\`; walcast: start of \`walcast run\` to the subscriber's receipt of the marker message committed right after END (the walcast process then gets SIGTERM; its CPU time and peak RSS come from \`/usr/bin/time -v\` and include startup, the initial policy-state load and shutdown). Medians of the rounds; the ratio is the median of per-round ratios; peak RSS is the maximum."
  echo
  cat "$WORK/report.md"
  echo "<!-- bench:run:end -->"
} >"$WORK/section.md"
cat "$WORK/section.md"

if [ -n "$OUT" ] && bench_may_publish run_bench.sh; then
  if [ -f "$OUT" ] && grep -q '<!-- bench:run:begin -->' "$OUT"; then
    python3 - "$OUT" "$WORK/section.md" <<'PY'
import sys
path, sec = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
doc = open(path).read()
b, e = "<!-- bench:run:begin -->", "<!-- bench:run:end -->"
i, j = doc.index(b), doc.index(e) + len(e)
open(path, "w").write(doc[:i] + sec + doc[j:])
PY
  else
    { echo; echo "## walcast run with the nng sink vs pg_recvlogical, and nng latency"; echo
      echo "Produced by \`bash bench/run_bench.sh\` (bench/README.md). The section between the \`bench:run\` markers is rewritten by every run."
      echo; cat "$WORK/section.md"; } >>"$OUT"
  fi
  log "wrote $OUT"
fi

#!/usr/bin/env bash
# Replication throughput benchmark: walcast tail vs pg_recvlogical, pgoutput and wal2json.
#
#   bash bench/replication.sh [--rows N] [--big-rows N] [--rounds R] [--out FILE | --no-doc]
#
# Inside one throwaway PostgreSQL (tests/harness/harness.sh):
#   A. N single-row transactions into public.events (the platform table, 13 columns);
#   B. ONE transaction inserting --big-rows rows (default: N) into public.events.
# For each scenario, every slot is created before the load, so all of them decode the same WAL.
# Each slot is then drained once to the end LSN of the load, timed with /usr/bin/time -v (wall
# time, CPU time, peak RSS): pg_recvlogical (the reference, with the same plugin options walcast
# requests) and `walcast tail` (JSON lines to /dev/null), alternating which goes first, for
# --rounds rounds. One extra slot per plugin is drained by pg_recvlogical into `wc -c` (bytes of
# plugin output) and one by walcast into `wc -l` (one line per row, checked), untimed.
#
# Prints a Markdown report on stdout and writes it into docs/benchmarks.md between the markers
# <!-- bench:results:begin --> and <!-- bench:results:end --> (the rest of that file is kept).
# This is a measurement, not a test: it exits 0 whether or not the bars are met.
#
# Options: --rows N (default 1000000), --big-rows N (default: --rows), --rounds R (default 3),
# --loaders K (sessions loading scenario A, default 2), --out FILE (default docs/benchmarks.md),
# --no-doc. Environment: WALCAST_BIN (default: build it in build-bench/),
# WALCAST_BENCH_BUILD_DIR, WALCAST_BENCH_QUIET_WAIT (seconds a drain may wait for other load on
# the machine to drop under 15 %, default 30). See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

ROWS=1000000
BIG_ROWS=
ROUNDS=3
LOADERS=2
OUT=$ROOT/docs/benchmarks.md

usage() {
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --rows=*) ROWS=${1#*=}; shift ;;
    --big-rows) BIG_ROWS=$2; shift 2 ;;
    --big-rows=*) BIG_ROWS=${1#*=}; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rounds=*) ROUNDS=${1#*=}; shift ;;
    --loaders) LOADERS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-doc) OUT=; shift ;;
    --inner) shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "replication.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
BIG_ROWS=${BIG_ROWS:-$ROWS}
for v in ROWS BIG_ROWS ROUNDS LOADERS; do
  case ${!v} in ''|*[!0-9]*) echo "replication.sh: $v must be a positive integer" >&2; exit 2 ;; esac
  [ "${!v}" -gt 0 ] || { echo "replication.sh: $v must be positive" >&2; exit 2; }
done

# ---------------------------------------------------------------------------------------------
# Outer half: build walcast, then run the inner half inside the harness.
# ---------------------------------------------------------------------------------------------
if [ -z "${WALCAST_BENCH_INNER:-}" ]; then
  command -v /usr/bin/time >/dev/null || { echo "replication.sh: /usr/bin/time is missing (deploy/install-deps.sh)" >&2; exit 1; }
  if [ -z "${WALCAST_BIN:-}" ]; then
    BUILD=${WALCAST_BENCH_BUILD_DIR:-$ROOT/build-bench}
    echo "replication.sh: building walcast (RelWithDebInfo) in $BUILD" >&2
    # gcc 12 at -O2 can report -Wmaybe-uninitialized false positives, which the project's
    # -Werror turns into build failures; a measurement should not depend on them.
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALCAST_TESTS=OFF \
      -DCMAKE_C_FLAGS=-Wno-error=maybe-uninitialized >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target walcast >"$BUILD/bench-build.log" 2>&1 ||
      { tail -20 "$BUILD/bench-build.log" >&2; exit 1; }
    WALCAST_BIN=$BUILD/walcast
  fi
  [ -x "$WALCAST_BIN" ] || { echo "replication.sh: no walcast binary at $WALCAST_BIN" >&2; exit 1; }
  WALCAST_BIN=$(cd "$(dirname "$WALCAST_BIN")" && pwd)/$(basename "$WALCAST_BIN")
  if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
  fi
  export WALCAST_BIN WALCAST_BENCH_INNER=1 WALCAST_BENCH_OUT=$OUT
  unset WALCAST_CONFIG
  exec bash "$ROOT/tests/harness/harness.sh" run --no-redis -- \
    bash "${BASH_SOURCE[0]}" --rows "$ROWS" --big-rows "$BIG_ROWS" --rounds "$ROUNDS" \
    --loaders "$LOADERS" --inner
fi

# ---------------------------------------------------------------------------------------------
# Inner half: PG* point at the harness's PostgreSQL (superuser postgres).
# ---------------------------------------------------------------------------------------------
OUT=${WALCAST_BENCH_OUT:-}
PG_BIN=${WALCAST_PG_BIN:-/usr/lib/postgresql/15/bin}
RECV=$PG_BIN/pg_recvlogical
WORK=${WALCAST_HARNESS_DIR:-$(mktemp -d)}/bench
mkdir -p "$WORK"
RESULTS=$WORK/results.tsv   # see measure()
NPROC=$(nproc)
: >"$RESULTS"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# The options walcast asks each plugin for (plugins/decoders/pgoutput.c, plugins/decoders/wal2json.c
# w2j_options); the reference pg_recvlogical run passes the same ones.
# shellcheck disable=SC2034 # used through the nameref in ref_cmd
REF_OPTS_pgoutput=(-o proto_version=1 -o publication_names=walcast -o messages=true)
# shellcheck disable=SC2034
REF_OPTS_wal2json=(-o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1
                   -o include-type-oids=1 -o include-types=0 -o include-transaction=1 -o include-pk=1)

ref_cmd() { # plugin slot endlsn
  local -n opts=REF_OPTS_$1
  REPLY_CMD=("$RECV" -d "$PGDATABASE" -S "$2" --start -E "$3" --no-loop -F 0 "${opts[@]}" -f /dev/null)
}
wc_cmd() { # plugin slot endlsn
  REPLY_CMD=("$WALCAST_BIN" tail -P "$1" -S "$2" --no-create-slot --until-lsn "$3")
  [ "$1" = pgoutput ] && REPLY_CMD+=(--publication walcast)
  return 0
}

# "busy total" jiffies (1/100 s) over all CPUs, from /proc/stat.
cpu_jiffies() {
  awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; t = b + $5 + $6; print b, t; exit}' /proc/stat
}
# Percentage of the whole machine (all CPUs) busy between two cpu_jiffies samples.
busy_pct() { # "b0 t0" "b1 t1"
  local b0 t0 b1 t1
  read -r b0 t0 <<<"$1"; read -r b1 t1 <<<"$2"
  echo $(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) ))
}
# CPU ticks used so far by the PostgreSQL server: every live backend plus the postmaster's
# reaped children (cutime/cstime), so a walsender that has exited is still counted.
server_ticks() {
  local pm
  pm=$(head -1 "$WALCAST_PGDATA/postmaster.pid")
  { echo "$pm"; pgrep -P "$pm" || true; } | while read -r pid; do
    [ -r "/proc/$pid/stat" ] && sed 's/^.*) //' "/proc/$pid/stat"   # fields from 3 on
  done | awk 'NR == 1 {t += $14 + $15} {t += $12 + $13} END {print t + 0}'
}
# Waits until no slot is active (the last drain's walsender has exited and been reaped).
wait_slots_idle() {
  local _
  for _ in $(seq 1 100); do
    if [ "$(sql -c "select count(*) from pg_replication_slots where active")" = 0 ] &&
       [ "$(sql -c "select count(*) from pg_stat_replication")" = 0 ]; then
      sleep 0.1 # and for the postmaster to reap it
      return 0
    fi
    sleep 0.2
  done
  log "WARNING: a replication slot stayed active"
}
# Samples the machine for a second; while other processes keep it busy, waits (up to
# QUIET_WAIT seconds). Prints the last sample's busy percentage.
QUIET_WAIT=${WALCAST_BENCH_QUIET_WAIT:-30}
wait_quiet() {
  local waited=0 j0 j1 pct
  while :; do
    j0=$(cpu_jiffies); sleep 1; j1=$(cpu_jiffies)
    pct=$(busy_pct "$j0" "$j1")
    if [ "$pct" -lt 15 ] || [ "$waited" -ge "$QUIET_WAIT" ]; then break; fi
    [ "$waited" = 0 ] && log "  machine ${pct}% busy with other work: waiting up to ${QUIET_WAIT}s"
    sleep 1; waited=$((waited + 2))
  done
  echo "$pct"
}

# Runs one timed drain; appends a row to $RESULTS:
#   scenario plugin tool round wall_s user_s sys_s maxrss_kb rc server_cpu_s other_before_pct other_during_pct
measure() { # scenario plugin tool round CMD...
  local scen=$1 plugin=$2 tool=$3 round=$4; shift 4
  local tf=$WORK/time.$scen.$plugin.$tool.$round rc=0 t0 t1 j0 j1 s0 s1 before
  wait_slots_idle
  before=$(wait_quiet)
  j0=$(cpu_jiffies); s0=$(server_ticks)
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$tf" "$@" >/dev/null 2>"$WORK/stderr.$scen.$plugin.$tool.$round" || rc=$?
  t1=$(date +%s.%N); j1=$(cpu_jiffies)
  wait_slots_idle # the walsender's last CPU time counts once it has been reaped
  s1=$(server_ticks)
  local rss user sys wall server other
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tf")
  sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tf")
  wall=$(echo "$t1 - $t0" | bc -l)
  server=$(echo "($s1 - $s0) / $(getconf CLK_TCK)" | bc -l)
  # Everything else that ran meanwhile, as a share of all CPUs over the drain's wall time.
  other=$(echo "b = ($(cut -d' ' -f1 <<<"$j1") - $(cut -d' ' -f1 <<<"$j0")) / 100 - $server - ${user:-0} - ${sys:-0};
                if (b < 0) b = 0; scale = 0; (b * 100 / ($wall * $NPROC)) / 1" | bc -l)
  printf '%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n' "$scen" "$plugin" "$tool" "$round" "$wall" \
    "${user:-0}" "${sys:-0}" "${rss:-0}" "$rc" "$server" "$before" "$other" >>"$RESULTS"
  log "  $scen $plugin $tool round $round: $(printf '%.2f' "$wall") s, rss $((${rss:-0} / 1024)) MB," \
      "cpu $(echo "${user:-0} + ${sys:-0}" | bc) s, server cpu $(printf '%.2f' "$server") s, other load ${before}% / ${other}%, rc $rc"
  if [ "$rc" != 0 ]; then
    log "  (exit $rc) stderr:"; tail -5 "$WORK/stderr.$scen.$plugin.$tool.$round" >&2 || true
  fi
}

create_slots() { # scenario-prefix
  local p r
  local names=()
  for p in pgoutput wal2json; do
    for r in $(seq 1 "$ROUNDS"); do names+=("$1ref_${p}_$r:$p" "$1wc_${p}_$r:$p"); done
    names+=("$1size_${p}:$p" "$1chk_${p}:$p")
  done
  local n
  for n in "${names[@]}"; do
    sql -c "select 1 from pg_create_logical_replication_slot('${n%%:*}', '${n#*:}')" >/dev/null
  done
  log "created ${#names[@]} slots (prefix '$1')"
}

drop_slots() { # prefix
  # A walsender can outlive its client for a moment; a slot cannot be dropped while active.
  local _
  for _ in $(seq 1 100); do
    [ "$(sql -c "select count(*) from pg_replication_slots where slot_name like '$1%' and active")" = 0 ] && break
    sleep 0.2
  done
  sql -c "select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots where slot_name like '$1%' and not active" >/dev/null ||
    log "WARNING: could not drop the slots '$1*'"
}

drain_all() { # scenario prefix endlsn rows
  local scen=$1 pre=$2 end=$3 rows=$4 r p
  for r in $(seq 1 "$ROUNDS"); do
    for p in pgoutput wal2json; do
      # Alternate which tool drains first: by round, and between the two plugins of a round.
      local first=ref second=wc pi=0
      [ "$p" = wal2json ] && pi=1
      if [ $(( (r + pi) % 2 )) -eq 0 ]; then first=wc second=ref; fi
      local tool
      for tool in $first $second; do
        "${tool}_cmd" "$p" "${pre}${tool}_${p}_$r" "$end"
        local name; [ "$tool" = ref ] && name=pg_recvlogical || name=walcast
        measure "$scen" "$p" "$name" "$r" "${REPLY_CMD[@]}"
      done
    done
  done
  # Untimed: bytes of plugin output (pg_recvlogical writes each payload plus a newline), and
  # walcast's line count (one JSON line per change; must equal the row count).
  for p in pgoutput wal2json; do
    ref_cmd "$p" "${pre}size_$p" "$end"; REPLY_CMD[${#REPLY_CMD[@]}-1]=-
    local bytes
    bytes=$("${REPLY_CMD[@]}" 2>"$WORK/stderr.$scen.$p.size" | wc -c)
    echo "$scen $p bytes $bytes" >>"$WORK/extra"
    wc_cmd "$p" "${pre}chk_$p" "$end"
    local lines
    lines=$("${REPLY_CMD[@]}" 2>"$WORK/stderr.$scen.$p.chk" | wc -l)
    echo "$scen $p lines $lines" >>"$WORK/extra"
    # The marker's line is printed only when walcast did not stop at the last row's commit.
    if [ "$lines" != "$rows" ] && [ "$lines" != $((rows + 1)) ]; then
      log "WARNING: walcast printed $lines lines for $rows rows ($scen, $p)"
    fi
    log "  $scen $p: $bytes bytes of plugin output; walcast printed $lines lines"
  done
}

# The end position of a load, followed by a marker transaction (a transactional logical
# message, which both plugins decode: walcast and pg_recvlogical ask for messages). Whatever
# else PostgreSQL writes after the last loaded row (a RUNNING_XACTS record, autovacuum), both
# tools then stop at a transaction boundary: pg_recvlogical when it receives the marker's BEGIN
# (its LSN is past END), walcast at the marker's COMMIT (its end LSN is past END). Without it,
# an END that falls between transactions is reached only through a keepalive.
end_marker() {
  local end
  end=$(sql -c 'select pg_current_wal_insert_lsn()')
  sql -c "select 1 from pg_logical_emit_message(true, 'walcast-bench', 'end')" >/dev/null
  echo "$end"
}

# ---------------------------------------------------------------------------------------------
log "rows=$ROWS big-rows=$BIG_ROWS rounds=$ROUNDS walcast=$WALCAST_BIN"
NEED_SLOTS=$(( 4 * ROUNDS + 4 ))
if [ "$NEED_SLOTS" -gt "$(sql -c 'show max_replication_slots')" ]; then
  # shellcheck source=../tests/harness/harness.sh
  . "$ROOT/tests/harness/harness.sh"
  sql -c "alter system set max_replication_slots = $(( NEED_SLOTS + 4 ))"
  sql -c "alter system set max_wal_senders = $(( NEED_SLOTS + 4 ))"
  harness_pg_restart fast
fi

# Seed: one org, 200 contacts, the load procedure. Rows look like the platform's: a call (60%,
# with a duration) or an SMS (40%, with a ~100-byte AES-GCM-sized ciphertext body), a known
# contact 90% of the time, a handling user 80%, E.164 numbers, a start time in the last 30 days.
sql <<'SQL'
insert into public.orgs (name) values ('bench-org');
insert into public.contacts (org_id, name, phone)
  select o.id, 'Contact ' || g, '+1555' || lpad(g::text, 7, '0')
  from public.orgs o, generate_series(1, 200) g where o.name = 'bench-org';
create schema bench;
create table bench.users as select gen_random_uuid() as id from generate_series(1, 20);

create function bench.event_row(i bigint, org uuid, contacts uuid[], users uuid[])
  returns public.events language plpgsql volatile as $$
declare
  e public.events;
  a float8 := random();
  b float8 := random();
  age float8 := random();
begin
  e.org_id := org;
  e.kind := case when random() < 0.6 then 'call' else 'sms' end;
  if random() < 0.9 then e.contact_id := contacts[1 + (i % array_length(contacts, 1))::int]; end if;
  if random() < 0.8 then e.user_id := users[1 + (i % array_length(users, 1))::int]; end if;
  e.direction := case when random() < 0.5 then 'inbound' else 'outbound' end;
  e.started_at := now() - age * interval '30 days';
  e.from_number := '+1' || lpad((a * 1e10)::bigint::text, 10, '0');
  e.to_number := '+1' || lpad((b * 1e10)::bigint::text, 10, '0');
  if e.kind = 'call' then
    e.status := (array['completed', 'missed', 'voicemail', 'busy'])[1 + (i % 4)::int];
    e.duration_s := (age * 1800)::int;
  else
    e.status := (array['delivered', 'sent', 'failed'])[1 + (i % 3)::int];
    e.body := sha256(int8send(i)) || sha256(int8send(-i)) || sha256(float8send(a)) ||
              substring(sha256(float8send(b)) from 1 for 4);
  end if;
  return e;
end
$$;

-- One transaction per row: a COMMIT after each insert.
create procedure bench.load(first bigint, n bigint) language plpgsql as $$
declare
  org uuid;
  cs uuid[];
  us uuid[];
  e public.events;
begin
  select id into org from public.orgs where name = 'bench-org';
  select array_agg(id order by name) into cs from public.contacts where org_id = org;
  select array_agg(id) into us from bench.users;
  for i in first .. first + n - 1 loop
    e := bench.event_row(i, org, cs, us);
    insert into public.events (org_id, contact_id, user_id, kind, direction, status, started_at,
                               duration_s, from_number, to_number, body)
      values (e.org_id, e.contact_id, e.user_id, e.kind, e.direction, e.status, e.started_at,
              e.duration_s, e.from_number, e.to_number, e.body);
    commit;
  end loop;
end
$$;
checkpoint;
SQL

# Other load on the machine skews every number: sample it before starting.
j0=$(cpu_jiffies); sleep 3; j1=$(cpu_jiffies)
IDLE_BUSY=$(busy_pct "$j0" "$j1")
OTHERS=$(top -b -n 2 -d 1 -w 200 2>/dev/null |
  awk '/^top -/ {n++} n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 5 {printf "%s%s %s%%", sep, $12, $9; sep = ", "}' | head -c 300 || true)
if [ "$IDLE_BUSY" -ge 10 ]; then
  log "WARNING: the machine is already ${IDLE_BUSY}% busy before the benchmark${OTHERS:+: $OTHERS}; results will be skewed"
fi

PG_VERSION=$(sql -c 'show server_version')
W2J_VERSION=$(dpkg-query -W -f '${Version}' postgresql-15-wal2json 2>/dev/null || echo unknown)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo)
WALCAST_VERSION=$("$WALCAST_BIN" --version 2>&1 | head -1)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
bench_git_state "$ROOT" src plugins CMakeLists.txt bench/replication.sh
GIT_REV=$BENCH_GIT${BENCH_DIRTY:+ + $BENCH_DIRTY}

# ---- Scenario A: N single-row transactions ---------------------------------------------------
create_slots a_
log "A: loading $ROWS single-row transactions ($LOADERS sessions)"
START_A=$(sql -c 'select pg_current_wal_insert_lsn()')
t0=$(date +%s.%N)
per=$(( (ROWS + LOADERS - 1) / LOADERS ))
pids=()
for s in $(seq 0 $(( LOADERS - 1 ))); do
  first=$(( s * per + 1 )); n=$per
  [ $(( first + n - 1 )) -gt "$ROWS" ] && n=$(( ROWS - first + 1 ))
  [ "$n" -gt 0 ] || continue
  sql -c "call bench.load($first, $n)" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
LOAD_A=$(echo "$(date +%s.%N) - $t0" | bc -l)
END_A=$(end_marker)
WAL_A=$(sql -c "select pg_wal_lsn_diff('$END_A', '$START_A')::bigint")
COUNT_A=$(sql -c 'select count(*) from public.events')
log "A: loaded $COUNT_A rows in $(printf '%.1f' "$LOAD_A") s; WAL $START_A..$END_A ($((WAL_A / 1048576)) MB)"
sql -c checkpoint
drain_all A a_ "$END_A" "$ROWS"
drop_slots a_

# ---- Scenario B: one transaction of BIG_ROWS rows --------------------------------------------
create_slots b_
log "B: loading $BIG_ROWS rows in one transaction"
START_B=$(sql -c 'select pg_current_wal_insert_lsn()')
t0=$(date +%s.%N)
sql <<SQL
insert into public.events (org_id, contact_id, user_id, kind, direction, status, started_at,
                           duration_s, from_number, to_number, body)
select e.org_id, e.contact_id, e.user_id, e.kind, e.direction, e.status, e.started_at,
       e.duration_s, e.from_number, e.to_number, e.body
from (select id as org from public.orgs where name = 'bench-org') o,
     (select array_agg(id order by name) as cs from public.contacts) c,
     (select array_agg(id) as us from bench.users) u,
     generate_series(1, $BIG_ROWS) g,
     lateral bench.event_row(g, o.org, c.cs, u.us) e;
SQL
LOAD_B=$(echo "$(date +%s.%N) - $t0" | bc -l)
END_B=$(end_marker)
WAL_B=$(sql -c "select pg_wal_lsn_diff('$END_B', '$START_B')::bigint")
log "B: loaded in $(printf '%.1f' "$LOAD_B") s; WAL $START_B..$END_B ($((WAL_B / 1048576)) MB)"
sql -c checkpoint
drain_all B b_ "$END_B" "$BIG_ROWS"
drop_slots b_

# ---- Report ----------------------------------------------------------------------------------
KEEP=${TMPDIR:-/tmp}/walcast-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$KEEP" && cp "$RESULTS" "$WORK/extra" "$KEEP/" && log "raw results kept in $KEEP"
REPORT=$WORK/report.md
python3 - "$RESULTS" "$WORK/extra" "$ROWS" "$BIG_ROWS" "$ROUNDS" >"$REPORT" <<'PY'
import statistics, sys
from collections import defaultdict

results, extra, rows, big_rows, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
R = defaultdict(dict)  # (scen, plugin, tool) -> round -> dict
for line in open(results):
    scen, plugin, tool, rnd, wall, user, sys_, rss, rc, server, before, during = line.rstrip("\n").split("\t")
    R[(scen, plugin, tool)][int(rnd)] = dict(wall=float(wall), cpu=float(user) + float(sys_),
                                             rss=int(rss), rc=int(rc), server=float(server),
                                             before=int(before), during=int(during))
X = {}
for line in open(extra):
    scen, plugin, key, val = line.split()
    X[(scen, plugin, key)] = int(val)

NOISY = 15  # % of all CPUs used by other processes during a drain

def med(v): return statistics.median(v) if v else float("nan")
def fmt_rate(v): return f"{v/1000:,.1f}k"
def mb(kb): return f"{kb/1024:.1f} MB"
def ok(b): return "**met**" if b else "**not met**"

out = []
nrows = {"A": rows, "B": big_rows}
for scen, title in (("A", f"A. {rows:,} single-row transactions"),
                    ("B", f"B. one transaction of {big_rows:,} rows")):
    n = nrows[scen]
    out.append(f"#### {title}\n")
    out.append("| plugin | pg_recvlogical rows/s | walcast rows/s | walcast / pg_recvlogical | bar ≥ 0.95 | same, unskewed rounds only | pg_recvlogical peak RSS | walcast peak RSS | bar < 64 MB | CPU s: pg_recvlogical / walcast / server | plugin output |")
    out.append("|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|")
    noisy = total = 0
    for p in ("pgoutput", "wal2json"):
        ref, wc = R[(scen, p, "pg_recvlogical")], R[(scen, p, "walcast")]
        failed = [f"{t} round {r}" for t, d in (("pg_recvlogical", ref), ("walcast", wc)) for r, v in d.items() if v["rc"] != 0]
        rr = med([n / v["wall"] for v in ref.values()])
        wr = med([n / v["wall"] for v in wc.values()])
        ratios = [ (n / wc[r]["wall"]) / (n / ref[r]["wall"]) for r in ref if r in wc ]
        ratio = med(ratios)
        clean = [ (n / wc[r]["wall"]) / (n / ref[r]["wall"]) for r in ref
                  if r in wc and ref[r]["during"] < NOISY and wc[r]["during"] < NOISY ]
        clean_txt = f"{med(clean):.3f} ({len(clean)})" if clean else "–"
        rrss, wrss = max(v["rss"] for v in ref.values()), max(v["rss"] for v in wc.values())
        rcpu = med([v["cpu"] for v in ref.values()])
        wcpu = med([v["cpu"] for v in wc.values()])
        scpu = med([v["server"] for v in list(ref.values()) + list(wc.values())])
        for v in list(ref.values()) + list(wc.values()):
            total += 1
            noisy += v["during"] >= NOISY
        lines = X.get((scen, p, "lines"))
        by = X.get((scen, p, "bytes"), 0)
        size = f"{by/1e6:,.0f} MB ({by/max(n,1):,.0f} B/row)"
        note = "" if not failed else " ⚠ failed: " + ", ".join(failed)
        if lines is not None and lines not in (n, n + 1):
            note += f" ⚠ walcast printed {lines:,} lines for {n:,} rows"
        out.append(f"| {p}{note} | {fmt_rate(rr)} | {fmt_rate(wr)} | {ratio:.3f} | {ok(ratio >= 0.95)} | {clean_txt} | {mb(rrss)} | {mb(wrss)} | {ok(wrss < 64*1024)} | {rcpu:.1f} / {wcpu:.1f} / {scpu:.1f} | {size} |")
    out.append("")
    if noisy:
        out.append(f"⚠ {noisy} of {total} drains ran while other processes kept at least {NOISY} % of the machine busy (marked ⚠ below): those figures are skewed.\n")
    out.append("<details><summary>every run</summary>\n")
    out.append("| plugin | tool | round | wall s | rows/s | CPU s (user+sys) | server CPU s | peak RSS | other load before / during | exit |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in ("pgoutput", "wal2json"):
        for t in ("pg_recvlogical", "walcast"):
            for r, v in sorted(R[(scen, p, t)].items()):
                flag = " ⚠" if v["during"] >= NOISY else ""
                out.append(f"| {p} | {t} | {r} | {v['wall']:.2f} | {n/v['wall']:,.0f} | {v['cpu']:.2f} | {v['server']:.2f} | {mb(v['rss'])} | {v['before']} % / {v['during']} %{flag} | {v['rc']} |")
    out.append("\n</details>\n")
print("\n".join(out))
PY

{
  echo "<!-- bench:results:begin -->"
  echo "<!-- Generated by bench/replication.sh on $(date -u '+%Y-%m-%d %H:%M UTC'); do not edit by hand. -->"
  echo
  echo "### Latest run"
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bash bench/replication.sh --rows $ROWS --big-rows $BIG_ROWS --rounds $ROUNDS\`"
  echo "- Machine: $NPROC × $CPU_MODEL, $MEM RAM, $(uname -sr)"
  echo "- PostgreSQL $PG_VERSION (harness settings: fsync off, synchronous_commit off, logical_decoding_work_mem 64MB), wal2json $W2J_VERSION"
  echo "- walcast: $WALCAST_VERSION, git $GIT_REV, RelWithDebInfo"
  echo "- Load A: $ROWS rows in $(printf '%.0f' "$LOAD_A") s by $LOADERS sessions (COMMIT after every insert), $((WAL_A / 1048576)) MB of WAL; load B: $BIG_ROWS rows in one INSERT … SELECT, $((WAL_B / 1048576)) MB of WAL"
  echo "- Other load on the machine: ${IDLE_BUSY}% of all CPUs busy in the 3 s before the run${OTHERS:+ (top: $OTHERS)}. Each drain waits (up to ${QUIET_WAIT} s) for other processes to leave the machine under 15 % busy; \"other load\" is that share of all CPUs in the second before the drain and during it (machine busy time minus the client's and the server's CPU time)."
  echo "- CPU s: user + system time of the client (\`time\`) and of the PostgreSQL server during the drain (the walsender decoding WAL and running the output plugin, plus background processes), medians."
  echo "- Rows/s = rows ÷ wall time of one drain (connect to exit at the end LSN); medians over $ROUNDS rounds. The ratio is the median of the per-round ratios (a round's two drains run back to back); \"unskewed rounds only\" is the same over the rounds where neither drain ran beside 15 % or more of other load (their number in parentheses). Peak RSS is the maximum over rounds (\`/usr/bin/time -v\`)."
  echo
  echo "Commands timed (END = \`pg_current_wal_insert_lsn()\` after the load):"
  echo
  echo '```sh'
  ref_cmd pgoutput ref_pgoutput_1 END; echo "${REPLY_CMD[*]}" | sed "s|$PG_BIN/||"
  wc_cmd pgoutput wc_pgoutput_1 END; echo "${REPLY_CMD[*]} > /dev/null" | sed "s|$WALCAST_BIN|walcast|"
  ref_cmd wal2json ref_wal2json_1 END; echo "${REPLY_CMD[*]}" | sed "s|$PG_BIN/||"
  wc_cmd wal2json wc_wal2json_1 END; echo "${REPLY_CMD[*]} > /dev/null" | sed "s|$WALCAST_BIN|walcast|"
  echo '```'
  echo
  cat "$REPORT"
  echo "<!-- bench:results:end -->"
} >"$WORK/section.md"

cat "$WORK/section.md"

if [ -n "$OUT" ] && bench_may_publish replication.sh; then
  if [ -f "$OUT" ] && grep -q '<!-- bench:results:begin -->' "$OUT" && grep -q '<!-- bench:results:end -->' "$OUT"; then
    python3 - "$OUT" "$WORK/section.md" <<'PY'
import sys, re
path, sec = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
doc = open(path).read()
b, e = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
i, j = doc.index(b), doc.index(e) + len(e)
open(path, "w").write(doc[:i] + sec + doc[j:])
PY
  else
    {
      echo "# Benchmarks"
      echo
      echo "## Replication throughput: walcast tail vs pg_recvlogical"
      echo
      echo "Produced by \`bash bench/replication.sh\` (how it works and how to read it: bench/README.md)."
      echo "The section between the \`bench:results\` markers is rewritten by every run; the findings after"
      echo "it are written by hand and kept."
      echo
      cat "$WORK/section.md"
    } >"$OUT"
  fi
  log "wrote $OUT"
fi

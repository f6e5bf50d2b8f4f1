# Shared by the benchmark scripts (sourced, not run).
#
# bench_git_state ROOT PATH...: sets BENCH_GIT to the short commit id the measured code comes
# from, and BENCH_DIRTY to a non-empty description when any of PATHs (what the benchmark
# measures) differs from that commit. A benchmark measured on a dirty tree is printed but never
# replaces the published tables in docs/benchmarks.md: published figures always name a commit
# that anyone can check out and measure again.
bench_git_state() {
  local root=$1; shift
  BENCH_GIT=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  BENCH_DIRTY=
  if [ "$BENCH_GIT" = unknown ]; then
    BENCH_DIRTY="not a git checkout"
  elif [ -n "$(git -C "$root" status --porcelain -- "$@" 2>/dev/null | head -1)" ]; then
    BENCH_DIRTY="uncommitted changes in $*"
  fi
}

# bench_may_publish NAME: 0 when the results may replace the published section; otherwise says
# why on stderr and returns 1.
bench_may_publish() {
  if [ -n "$BENCH_DIRTY" ]; then
    echo "$1: measured on $BENCH_GIT with $BENCH_DIRTY: printed above, docs/benchmarks.md left as it is (commit first to publish)" >&2
    return 1
  fi
  return 0
}

# bench_build ROOT TARGET: builds a benchmark program (CMake option WALCAST_BENCH, optimized) in
# $WALCAST_BENCH_BUILD_DIR (default ROOT/build-bench) against the same library walcast links,
# and prints the path of the binary. The build log is kept beside it.
bench_build() {
  local root=$1 target=$2
  local dir=${WALCAST_BENCH_BUILD_DIR:-$root/build-bench}
  mkdir -p "$dir"
  if ! { cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALCAST_TESTS=OFF -DWALCAST_BENCH=ON &&
         cmake --build "$dir" -j"$(nproc)" --target "$target"; } >"$dir/bench-build-$target.log" 2>&1; then
    echo "bench: building $target failed; see $dir/bench-build-$target.log" >&2
    return 1
  fi
  echo "$dir/$target"
}

# bench_replace_section FILE SECTION_FILE NAME: puts SECTION_FILE (which starts with
# <!-- bench:NAME:begin --> and ends with <!-- bench:NAME:end -->) in place of that section of
# FILE, or appends it when FILE has none yet.
bench_replace_section() {
  if [ -f "$1" ] && grep -q "<!-- bench:$3:begin -->" "$1"; then
    python3 - "$1" "$2" "$3" <<'PY'
import sys
path, sec, name = sys.argv[1], open(sys.argv[2]).read().rstrip("\n"), sys.argv[3]
doc = open(path).read()
b, e = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
i, j = doc.index(b), doc.index(e) + len(e)
open(path, "w").write(doc[:i] + sec + doc[j:])
PY
  else
    { echo; cat "$2"; } >>"$1"
  fi
}

# ---- Realtime benchmarks (rt_bench.sh, edge_bench.sh): run inside the harness -----------------
# They expect sql() (psql on the harness's database), log(), $WORK (scratch), $LOAD_BIN
# (bench/rt_load.c) and WALCAST_AUTH_JWT_SECRET.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_jiffies() { awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; t = b + $5 + $6; print b, t; exit}' /proc/stat; }
busy_pct() { local b0 t0 b1 t1; read -r b0 t0 <<<"$1"; read -r b1 t1 <<<"$2"; echo $(( (b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1) )); }
proc_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
ctxsw() { awk '/^voluntary_ctxt_switches:/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# rt_bench_setup ORGS MEMBERS: ORGS orgs named bench-org-NNNN, MEMBERS members spread over them
# (round-robin, roles cycling), and bench.load(first, ntx, nrows, norgs, pace_per_s): ntx
# transactions of nrows events each, transaction i in org i % norgs, started_at = the clock just
# before its commit (the latency's origin), paced at pace_per_s transactions/s when > 0. Writes
# "ORG TOKEN" per member (an HS256 token of its own) to $WORK/tokens.all, ordered by org.
rt_bench_setup() {
  local orgs=$1 members=$2
  sql <<SQL
insert into public.orgs (name) select 'bench-org-' || lpad(g::text, 4, '0') from generate_series(0, $orgs - 1) g;
insert into public.org_roles (org_id, user_id, role)
  select o.id, gen_random_uuid(), (array['viewer','member','analyst','admin','owner'])[1 + (g / $orgs) % 5]
  from generate_series(0, $members - 1) g
  join (select id, row_number() over (order by name) - 1 as k from public.orgs where name like 'bench-org-%') o
    on o.k = g % $orgs;
create schema bench;
create procedure bench.load(first bigint, ntx bigint, nrows int, norgs int, pace_per_s int) language plpgsql as \$\$
declare
  orgs uuid[];
  t0 timestamptz := clock_timestamp();
  late float8;
begin
  select array_agg(id order by name) into orgs from public.orgs where name like 'bench-org-%';
  for i in first .. first + ntx - 1 loop
    insert into public.events (org_id, kind, direction, status, duration_s, from_number, to_number, started_at)
      select orgs[1 + (i % norgs)::int], 'call', 'inbound', 'completed', (i % 1800)::int,
             '+1555' || lpad((i % 10000000)::text, 7, '0'), '+1666' || lpad((i % 9999991)::text, 7, '0'),
             clock_timestamp()
      from generate_series(1, nrows);
    commit;
    if pace_per_s > 0 then
      late := extract(epoch from (t0 + (i - first + 1) * (interval '1 second' / pace_per_s)) - clock_timestamp());
      if late > 0 then perform pg_sleep(late); end if;
    end if;
  end loop;
end
\$\$;
SQL
  sql -F ' ' -c "select r.org_id, r.user_id from public.org_roles r join public.orgs o on o.id = r.org_id where o.name like 'bench-org-%' order by o.name, r.user_id" |
  python3 -c '
import base64, hashlib, hmac, json, os, sys, time
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = os.environ["WALCAST_AUTH_JWT_SECRET"].encode()
exp = int(time.time()) + 3600
head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
for line in sys.stdin:
    org, user = line.split()
    body = enc(json.dumps({"sub": user, "role": "authenticated", "exp": exp}).encode())
    sig = enc(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    print(org, f"{head}.{body}.{sig}")
' >"$WORK/tokens.all"
}

# rt_bench_tokens_first NCLIENTS NORGS FILE: the first NCLIENTS/NORGS members of each of the
# first NORGS orgs of $WORK/tokens.all, into FILE.
rt_bench_tokens_first() {
  awk -v per=$(( $1 / $2 )) -v orgs="$2" '$1 != prev {k++; n = 0; prev = $1} k <= orgs && n++ < per' \
    "$WORK/tokens.all" >"$3"
}

# rt_load_start NAME PORT TOKENS [RT_LOAD_ARGS...]: rt_load in the background against PORT, its
# report in $WORK/load.NAME (stderr: load.NAME.err); returns once every client is subscribed
# (exits the benchmark when that fails). Sets LP to its pid.
rt_load_start() {
  local name=$1 port=$2 tokens=$3; shift 3
  rm -f "$WORK/ready.$name"
  "$LOAD_BIN" --port "$port" --tokens "$tokens" --ready "$WORK/ready.$name" "$@" \
    >"$WORK/load.$name" 2>"$WORK/load.$name.err" &
  LP=$!
  for _ in $(seq 1 900); do [ -f "$WORK/ready.$name" ] || ! kill -0 $LP 2>/dev/null && break; sleep 0.2; done
  [ -f "$WORK/ready.$name" ] || { cat "$WORK/load.$name.err" >&2; exit 1; }
}

# rt_idle_rss NAME PORT PID CLIENTS: VmRSS of PID with none, CLIENTS/2 and CLIENTS/2*2 clients
# subscribed (two rt_load processes) and idle for 3 s each; sets RSS0, RSSH, RSS1 (KB). The second
# half's growth is the marginal cost of a connection, free of one-off growth.
rt_idle_rss() {
  local name=$1 port=$2 pid=$3 half=$(( $4 / 2 )) lp1
  RSS0=$(rss_kb "$pid")
  rt_load_start "$name.1" "$port" "$WORK/tokens.all" --clients "$half" --idle 120 --timeout 120; lp1=$LP
  sleep 3; RSSH=$(rss_kb "$pid")
  rt_load_start "$name.2" "$port" "$WORK/tokens.all" --clients "$half" --idle 120 --timeout 120
  sleep 3; RSS1=$(rss_kb "$pid")
  kill -TERM "$lp1" "$LP"; wait "$lp1" 2>/dev/null || true; wait "$LP" 2>/dev/null || true
}

# rt_counter PORT NAME: a counter of walcast's /metrics, summed over its label sets.
rt_counter() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { t += $2 } END { printf "%.0f", t }'; }

# bench_kv FILE KEY: the value of KEY in a line of key=value pairs (rt_load's report).
bench_kv() { sed -n "s/\(^\|.* \)$2=\([^ ]*\).*/\2/p" "$1"; }

# bench_wait_ready PORT ERRFILE: waits up to 60 s for walcast's /readyz on PORT; on a timeout
# prints ERRFILE's tail and exits the benchmark.
bench_wait_ready() {
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.2; done
  tail -20 "$2" >&2; exit 1
}

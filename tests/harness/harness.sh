#!/usr/bin/env bash
# The one harness for tests, the demo and benchmarks: starts a throwaway PostgreSQL 15 (logical
# WAL, wal2json allowed) and a throwaway redis-server on free loopback ports in a temporary
# directory, applies the platform migrations, runs a command with the connection environment set,
# and always tears everything down — on success, failure, Ctrl-C or SIGTERM.
#
#   harness.sh run [--no-migrate] [--no-redis] [--redis-cluster] -- CMD [ARGS...]
#
# WALCAST_HARNESS_LISTEN=ADDR: both servers listen on ADDR too, PostgreSQL trusting its /24
# (tests/netns: the servers in one network namespace, walcast in others).
# CMD sees: PGHOST PGPORT PGUSER PGDATABASE (a superuser session), WALCAST_REDIS_URL,
# WALCAST_HARNESS_CLUSTER_URL and WALCAST_HARNESS_CLUSTER_PORTS (with --redis-cluster: a Redis Cluster
# of 3 masters with a replica each, cluster-node-timeout 2000 ms; the URL names one node; also
# when WALCAST_HARNESS_REDIS_CLUSTER=1),
# WALCAST_HARNESS_DIR (scratch space, removed afterwards), WALCAST_PGDATA, WALCAST_PG_BIN and
# WALCAST_REPL_CONNINFO (the least-privilege replication role from the migrations).
# Run as root, the servers run as the `postgres` system user, which PostgreSQL requires. A port
# taken by someone else between the harness's choice and the server's bind (parallel harnesses)
# is detected in the server's log and the server started again on another port.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PG_BIN=${WALCAST_PG_BIN:-$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v postgres)")}

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 20000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  echo "harness: no free port" >&2; return 1
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

HARNESS_DIR=
PG_STARTED=0
REDIS_PID=
CLUSTER_PIDS=()

harness_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$PG_STARTED" = 1 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$HARNESS_DIR/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  local p
  for p in "${CLUSTER_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${CLUSTER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$HARNESS_DIR" ] && [ -z "${WALCAST_KEEP_HARNESS:-}" ]; then rm -rf "$HARNESS_DIR"; fi
  exit "$rc"
}

# harness_init_pg: a new cluster in $HARNESS_DIR/pg (pg_start_on starts it).
harness_init_pg() {
  mkdir -p "$HARNESS_DIR/pg" "$HARNESS_DIR/sock"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$HARNESS_DIR"; fi
  chmod 755 "$HARNESS_DIR"
  as_pg "$PG_BIN/initdb" -D "$HARNESS_DIR/pg" -U postgres -A trust --no-sync -E UTF8 >"$HARNESS_DIR/initdb.log" 2>&1 ||
    { cat "$HARNESS_DIR/initdb.log" >&2; return 1; }
  cat >>"$HARNESS_DIR/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1${WALCAST_HARNESS_LISTEN:+,$WALCAST_HARNESS_LISTEN}'
unix_socket_directories = '$HARNESS_DIR/sock'
wal_level = logical
max_wal_senders = 40
max_replication_slots = 40
max_connections = 150
fsync = ${WALCAST_PG_FSYNC:-off}
synchronous_commit = ${WALCAST_PG_SYNC_COMMIT:-off}
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
wal_sender_timeout = 60s
logical_decoding_work_mem = 64MB
CONF
  # Debian's newer PostgreSQL 15 builds accept only the output plugins listed here.
  if as_pg "$PG_BIN/postgres" --describe-config 2>/dev/null | grep -c "^output_plugin_libraries" >/dev/null; then
    echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'" >>"$HARNESS_DIR/pg/postgresql.conf"
  fi
  printf 'host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\nlocal replication all trust\n' \
    >>"$HARNESS_DIR/pg/pg_hba.conf"
  if [ -n "${WALCAST_HARNESS_LISTEN:-}" ]; then # its /24: the other network namespaces (tests/netns)
    printf 'host all all %s/24 trust\nhost replication all %s/24 trust\n' "$WALCAST_HARNESS_LISTEN" \
      "$WALCAST_HARNESS_LISTEN" >>"$HARNESS_DIR/pg/pg_hba.conf"
  fi
}

# pg_start_on PORT: starts the initialised cluster on PORT (the last `port =` line wins). 0, 1 on
# a failure, 3 when the port was taken meanwhile (another harness bound it since free_port).
pg_start_on() {
  local seen
  echo "port = $1" >>"$HARNESS_DIR/pg/postgresql.conf"
  seen=$(cat "$HARNESS_DIR/pg.log" 2>/dev/null | wc -l)
  if as_pg "$PG_BIN/pg_ctl" -D "$HARNESS_DIR/pg" -l "$HARNESS_DIR/pg.log" -w -t 60 start >/dev/null; then
    PG_STARTED=1; return 0
  fi
  if tail -n +$((seen + 1)) "$HARNESS_DIR/pg.log" | grep -q "Address already in use"; then return 3; fi
  cat "$HARNESS_DIR/pg.log" >&2; return 1
}

# harness_start_redis PORT: 0, 1 on a failure, 3 when the port was taken meanwhile.
harness_start_redis() {
  local port=$1
  : >"$HARNESS_DIR/redis.log"
  redis-server --port "$port" --bind 127.0.0.1 ${WALCAST_HARNESS_LISTEN:+$WALCAST_HARNESS_LISTEN --protected-mode no} --save '' --appendonly no --daemonize no \
    --dir "$HARNESS_DIR" --logfile "$HARNESS_DIR/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 1 600); do
    # alive and answering PING: a port that only accepts may be someone else's server
    kill -0 "$REDIS_PID" 2>/dev/null || break
    if [ "$(timeout 2 redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && kill -0 "$REDIS_PID" 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=
  if grep -q "Address already in use" "$HARNESS_DIR/redis.log"; then return 3; fi
  echo "harness: redis-server did not start" >&2; cat "$HARNESS_DIR/redis.log" >&2; return 1
}

# harness_start_cluster_node PORT: one node of the test cluster (its bus on PORT + 10000), in
# $HARNESS_DIR/cluster/PORT. 0, 1 on a failure, 3 when PORT or its bus port was taken.
harness_start_cluster_node() {
  local port=$1 dir=$HARNESS_DIR/cluster/$1 pid
  [ "$port" -lt 55000 ] || return 3
  if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then return 3; fi
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 --save '' --appendonly no \
    --daemonize no --dir "$dir" --logfile "$dir/redis.log" &
  pid=$!
  for _ in $(seq 1 100); do
    if [ "$(timeout 2 redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && kill -0 "$pid" 2>/dev/null; then
      CLUSTER_PIDS+=("$pid"); return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if grep -q "Address already in use" "$dir/redis.log"; then rm -rf "$dir"; return 3; fi
  echo "harness: cluster node $port did not start" >&2; cat "$dir/redis.log" >&2; return 1
}

# harness_start_redis_cluster: six nodes joined as 3 masters with a replica each; waits until
# every node says cluster_state:ok and knows all six. Sets WALCAST_HARNESS_CLUSTER_PORTS and
# WALCAST_HARNESS_CLUSTER_URL.
harness_start_redis_cluster() {
  local ports=() cport addrs=() p
  for _ in 1 2 3 4 5 6; do
    start_on_free_port cport harness_start_cluster_node || return 1
    ports+=("$cport"); addrs+=("127.0.0.1:$cport")
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$HARNESS_DIR/cluster/create.log" 2>&1 ||
    { echo "harness: redis-cli --cluster create failed" >&2; cat "$HARNESS_DIR/cluster/create.log" >&2; return 1; }
  for _ in $(seq 1 300); do
    local ok=1
    for p in "${ports[@]}"; do
      redis-cli -p "$p" CLUSTER INFO 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || ok=0
      [ "$(redis-cli -p "$p" CLUSTER NODES 2>/dev/null | grep -c connected)" = 6 ] || ok=0
    done
    if [ "$ok" = 1 ]; then
      export WALCAST_HARNESS_CLUSTER_PORTS="${ports[*]}" WALCAST_HARNESS_CLUSTER_URL="redis://127.0.0.1:${ports[0]}/0"
      return 0
    fi
    sleep 0.1
  done
  echo "harness: the Redis Cluster did not reach cluster_state:ok" >&2; return 1
}

# start_on_free_port VAR FN: FN PORT on a free port, again on another one (at most 10 tries) when
# the port was taken between free_port and the server's bind (parallel harnesses); the port in VAR.
# WALCAST_HARNESS_FIRST_PORT is tried first, unchecked (tests of this retry).
start_on_free_port() {
  local var=$1 fn=$2 port rc try
  for try in $(seq 1 10); do
    if [ "$try" = 1 ] && [ -n "${WALCAST_HARNESS_FIRST_PORT:-}" ]; then port=$WALCAST_HARNESS_FIRST_PORT
    else port=$(free_port); fi
    rc=0; "$fn" "$port" || rc=$?
    if [ "$rc" = 0 ]; then printf -v "$var" '%s' "$port"; return 0; fi
    [ "$rc" = 3 ] || return 1
    echo "harness: port $port was taken before $fn could bind it; trying another" >&2
  done
  echo "harness: $fn: no port could be bound in 10 tries" >&2; return 1
}

harness_migrate() {
  local f
  for f in "$ROOT"/deploy/migrations/*.sql; do
    psql -q -v ON_ERROR_STOP=1 -X -f "$f" >/dev/null ||
      { echo "harness: migration $(basename "$f") failed" >&2; return 1; }
  done
}

cmd_run() {
  local migrate=1 redis=1 cluster=${WALCAST_HARNESS_REDIS_CLUSTER:-0}
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-migrate) migrate=0; shift ;;
      --no-redis) redis=0; shift ;;
      --redis-cluster) cluster=1; shift ;;
      --) shift; break ;;
      *) echo "harness: unknown option $1" >&2; return 2 ;;
    esac
  done
  [ $# -gt 0 ] || { echo "usage: harness.sh run [--no-migrate] [--no-redis] [--redis-cluster] -- CMD [ARGS...]" >&2; return 2; }

  trap harness_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  HARNESS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/walcast-harness.XXXXXX")
  local pgport redisport
  harness_init_pg
  start_on_free_port pgport pg_start_on || exit 1
  export PGHOST=127.0.0.1 PGPORT=$pgport PGUSER=postgres PGDATABASE=postgres
  export WALCAST_HARNESS_DIR=$HARNESS_DIR WALCAST_PGDATA=$HARNESS_DIR/pg WALCAST_PG_BIN=$PG_BIN
  export WALCAST_REPL_CONNINFO="host=127.0.0.1 port=$pgport user=walcast_replicator dbname=postgres"
  if [ "$redis" = 1 ]; then
    start_on_free_port redisport harness_start_redis || exit 1
    export WALCAST_REDIS_URL="redis://127.0.0.1:$redisport/0"
  fi
  if [ "$cluster" = 1 ]; then harness_start_redis_cluster || exit 1; fi
  if [ "$migrate" = 1 ]; then harness_migrate; fi
  # Run the command in the foreground of this shell so its exit status is ours; cleanup follows.
  "$@"
}

# Helpers for commands run inside the harness (sourced by tests that need them).
harness_pg_restart() {
  as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -m "${1:-fast}" -w restart -l "$WALCAST_HARNESS_DIR/pg.log" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    run) shift; cmd_run "$@" ;;
    *) echo "usage: harness.sh run [--no-migrate] [--no-redis] [--redis-cluster] -- CMD [ARGS...]" >&2; exit 2 ;;
  esac
fi

# Several hosts on one machine (sourced): network namespaces from iproute2, so that what crosses
# the network between walcast and its servers really does, and a host can be cut off.
#
#   netns_up HOST...     a "db" namespace (the servers' host: a bridge br0, 10.77.0.1/24) and
#                        one namespace per HOST, each joined to the bridge by a veth pair (its
#                        eth0: 10.77.0.11, .12, ... in the order given); loopback up everywhere
#   netns_exec NAME CMD  CMD in the namespace of NAME ("db" or a HOST), in place of the shell
#                        that calls it: use it with `&` ($! is then CMD's own pid) or in $(...)
#   netns_cut HOST       cuts HOST off: its port on the bridge goes down, every packet to or
#                        from it is lost silently (no RST, no ICMP): a pulled cable
#   netns_heal HOST      joins it again
#   netns_run NAME CMD   CMD in NAME's namespace, waited for (a SIGTERM to the script reaches
#                        it: netns_down ends it first, so it cleans up after itself); its status
#   netns_down           ends netns_run's command (SIGTERM, 10 s), kills what still runs in the
#                        namespaces (by pid) and deletes them, with their veths; netns_up sets it
#                        as the EXIT trap, so it runs on failure too
#   netns_test SCRIPT [HARNESS_OPTION...] -- HOST...
#                        the outer half of a test script: exits 77 (CTest's skip) with a message
#                        where `ip netns add` is not permitted; else netns_up HOST..., then the
#                        harness (its servers listening on the bridge's address too) in the "db"
#                        namespace runs `SCRIPT --inner`; exits with its status
#
# Names are unique per run (wc<pid>-<random>-NAME: parallel runs do not collide); the addresses
# may repeat, since each run has its own namespaces. A run killed with SIGKILL cannot clean up:
# netns_up deletes the namespaces of such runs (named so, their pid gone). Needs root.
NETNS_PREFIX=${NETNS_PREFIX:-wc$$-$RANDOM}
NETNS_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NETNS_DB_ADDR=10.77.0.1
NETNS_CREATED=()

netns_name() { echo "$NETNS_PREFIX-$1"; }

# netns_permitted: `ip netns add` works here (a probe namespace, deleted at once).
netns_permitted() {
  local probe="$NETNS_PREFIX-probe"
  ip netns add "$probe" 2>/dev/null || return 1
  ip netns del "$probe"
}

netns_add() {
  local ns
  ns=$(netns_name "$1")
  ip netns add "$ns"
  NETNS_CREATED+=("$ns")
  ip -n "$ns" link set lo up
}

# netns_stale_down: the namespaces of earlier runs whose process is gone (SIGKILLed runs).
netns_stale_down() {
  local ns pid p
  for ns in $(ip netns list | awk '{ print $1 }' | grep -E '^wc[0-9]+-[0-9]+-[a-z0-9]+$' || true); do
    pid=${ns#wc}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null && continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

netns_up() {
  local db h i=11
  netns_stale_down
  trap netns_down EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  db=$(netns_name db)
  netns_add db
  ip -n "$db" link add br0 type bridge
  ip -n "$db" addr add "$NETNS_DB_ADDR/24" dev br0
  ip -n "$db" link set br0 up
  for h in "$@"; do
    netns_add "$h"
    # created in place: no name ever exists in the root namespace
    ip link add eth0 netns "$(netns_name "$h")" type veth peer name "v-$h" netns "$db"
    ip -n "$db" link set "v-$h" master br0 up
    ip -n "$(netns_name "$h")" addr add "10.77.0.$i/24" dev eth0
    ip -n "$(netns_name "$h")" link set eth0 up
    i=$((i + 1))
  done
}

netns_addr() { # HOST: its address (the order netns_up was given)
  ip -n "$(netns_name "$1")" -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }'
}

netns_exec() {
  local ns
  ns=$(netns_name "$1"); shift
  exec ip netns exec "$ns" "$@"
}

netns_cut() { ip -n "$(netns_name db)" link set "v-$1" down; }
netns_heal() { ip -n "$(netns_name db)" link set "v-$1" up; }

NETNS_RUN_PID=
netns_run() {
  local ns rc=0
  ns=$(netns_name "$1"); shift
  ip netns exec "$ns" "$@" &
  NETNS_RUN_PID=$!
  wait "$NETNS_RUN_PID" || rc=$?
  NETNS_RUN_PID=
  return "$rc"
}

netns_down() {
  local rc=$? ns p
  trap - EXIT INT TERM
  if [ -n "$NETNS_RUN_PID" ] && kill -TERM "$NETNS_RUN_PID" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$NETNS_RUN_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  for ns in "${NETNS_CREATED[@]:-}"; do
    [ -n "$ns" ] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  done
  for ns in "${NETNS_CREATED[@]:-}"; do
    [ -n "$ns" ] || continue
    for _ in $(seq 1 50); do # a killed process may still hold it for a moment
      [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null || echo "netns: cannot delete $ns" >&2
  done
  NETNS_CREATED=()
  exit "$rc"
}

netns_test() {
  local script=$1 opts=() rc=0
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  if ! netns_permitted; then
    echo "# skip: 'ip netns add' is not permitted here (needs root and iproute2)"
    exit 77
  fi
  netns_up "$@"
  export NETNS_PREFIX
  netns_run db env WALCAST_HARNESS_LISTEN="$NETNS_DB_ADDR" \
    "$NETNS_LIB_DIR/../harness/harness.sh" run "${opts[@]}" -- "$script" --inner || rc=$?
  exit "$rc" # netns_down (the EXIT trap) deletes the namespaces either way
}

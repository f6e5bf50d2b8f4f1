# Helpers of the stateless-edge integration tests (edge.sh, lb_edges.sh; sourced after lib.sh and
# redis_lib.sh): the configurations of the active instance and of an edge, and starting one.

# edge_confs SLOT KEY: $WORK/active.conf, the active instance on SLOT publishing the stream KEY
# (redis_stream sink) with its checkpoint in PostgreSQL, and $WORK/edge.conf, an edge reading
# KEY with a resumable realtime sink (docs/edges.md)
edge_confs() {
  cat >"$WORK/active.conf" <<CONF
[replication]
slot = $1
[pipeline]
checkpoint_store = postgres
[sink.stream]
type = redis_stream
url = $REDIS_URL
key = $2
CONF
  cat >"$WORK/edge.conf" <<CONF
[replication]
slot = $1
[pipeline]
checkpoint_store = postgres
[edge]
enabled = true
stream_url = $REDIS_URL
stream_key = $2
[sink.live]
type = realtime
replay_bytes = 16MB
replay_seconds = 600
CONF
}

# edge_start NAME CONF PORT [--set K=V...]: `walcast run -c $WORK/CONF` in the background,
# listening on PORT, its state in $WORK/NAME-state and its stderr in $WORK/NAME.err; sets RUNP
edge_start() {
  "$WALCAST" -c "$WORK/$2" run --policy "$ROOT/deploy/policy.ini" --set "http.listen=127.0.0.1:$3" \
    --set "pipeline.state_dir=$WORK/$1-state" "${@:4}" >/dev/null 2>>"$WORK/$1.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}

readyz_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/readyz" || true; }
readyz_is() { [ "$(readyz_code "$1")" = "$2" ]; }

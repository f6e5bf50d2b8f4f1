# Helpers of the stateless-edge integration tests (edge.sh, lb_edges.sh, netns_edges.sh; sourced
# after lib.sh and redis_lib.sh): the configurations of the active instance and of an edge,
# starting one, and the users of the realtime-js parts (tests/realtime-js/edge.test.mjs,
# netns_edges.test.mjs).

# edge_conf FILE SLOT URL KEY: the configuration of an edge that reads the stream KEY on URL
# (redis:// or redis+sentinel://), its policy state from the checkpoint (in PostgreSQL) of the
# active instance on SLOT, and serves a realtime sink whose replay buffer reaches 10 minutes back.
edge_conf() {
  cat >"$1" <<CONF
[replication]
slot = $2
[pipeline]
checkpoint_store = postgres
[edge]
enabled = true
stream_url = $3
stream_key = $4
[sink.live]
type = realtime
replay_bytes = 16MB
replay_seconds = 600
CONF
}

# edge_confs SLOT KEY: $WORK/active.conf, the active instance on SLOT publishing the stream KEY
# (redis_stream sink) on $REDIS_URL with its checkpoint in PostgreSQL, and $WORK/edge.conf, an
# edge reading KEY (edge_conf)
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
  edge_conf "$WORK/edge.conf" "$1" "$REDIS_URL" "$2"
}

# edge_start NAME CONF PORT [--set K=V...]: `walcast run -c $WORK/CONF` in the background,
# listening on PORT, its state in $WORK/NAME-state and its stderr in $WORK/NAME.err; sets RUNP
edge_start() {
  "$WALCAST" -c "$WORK/$2" run --policy "$ROOT/deploy/policy.ini" --set "http.listen=127.0.0.1:$3" \
    --set "pipeline.state_dir=$WORK/$1-state" "${@:4}" >/dev/null 2>>"$WORK/$1.err" &
  RUNP=$!
  BG_PIDS+=("$RUNP")
}


# edge_users_setup SLOT TAG MEMBER...: fresh ids in ID (the caller declares it: declare -A ID) for
# three orgs X, Y, Z (named "TAG x", ...), four contacts (CXpub and CXpriv in X, a privacy rule
# letting only admins see CXpriv; CY in Y, CZ in Z) and each MEMBER, given as USER:ORG:ROLE (a
# membership) or NAME (an id only); EDGE_IDS: ID as a JSON object; EDGE_AFTER: an LSN past them.
# Returns once the active instance on SLOT confirmed a position past them, so that an edge
# started now knows them from the shared checkpoint only (its stream starts there).
edge_users_setup() {
  local slot=$1 tag=$2 m k u o r roles=""
  shift 2
  for k in X Y Z CXpub CXpriv CY CZ; do ID[$k]=$(cat /proc/sys/kernel/random/uuid); done
  for m in "$@"; do
    ID[${m%%:*}]=$(cat /proc/sys/kernel/random/uuid)
    [[ $m == *:*:* ]] || continue
    IFS=: read -r u o r <<<"$m"
    roles+="${roles:+, }('${ID[$o]}', '${ID[$u]}', '$r')"
  done
  sql >/dev/null <<SQL
INSERT INTO orgs (id, name) VALUES ('${ID[X]}', '$tag x'), ('${ID[Y]}', '$tag y'), ('${ID[Z]}', '$tag z');
INSERT INTO org_roles (org_id, user_id, role) VALUES $roles;
INSERT INTO contacts (id, org_id, name, phone) VALUES ('${ID[CXpub]}', '${ID[X]}', 'Public', '+15550001234'),
  ('${ID[CXpriv]}', '${ID[X]}', 'Private', '+15550009876'), ('${ID[CY]}', '${ID[Y]}', 'Other', '+15550005555'),
  ('${ID[CZ]}', '${ID[Z]}', 'Quiet', '+15550007777');
INSERT INTO privacy_rules (org_id, contact_id, min_role) VALUES ('${ID[X]}', '${ID[CXpriv]}', 'admin');
SQL
  EDGE_AFTER=$(current_lsn)
  # a transaction after them: once it is confirmed, the position is past them
  sql -c "INSERT INTO orgs (name) VALUES ('$tag warm-up')" >/dev/null
  wait_for 60 edge_confirmed_past "$slot" "$EDGE_AFTER" ||
    { echo "not ok - the active instance did not checkpoint past $EDGE_AFTER"; exit 1; }
  EDGE_IDS=$(for k in "${!ID[@]}"; do printf '"%s":"%s"\n' "$k" "${ID[$k]}"; done | paste -sd, | sed 's/^/{/; s/$/}/')
}
edge_confirmed_past() { # SLOT LSN
  [ "$(sql -c "SELECT count(*) FROM walcast.checkpoint_positions WHERE slot = '$1' AND name = 'pipeline' AND lsn >= '$2'")" = 1 ]
}

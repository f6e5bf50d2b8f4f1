#!/usr/bin/env bash
# The deployment artefacts of deploy/, checked with the tools this machine has (no systemd as
# PID 1, no container engine):
# - deploy/systemd/walcast.service: `systemd-analyze verify` (with the real binary's path), the
#   offline security score, and the hardening directives the manual promises;
# - deploy/prometheus/walcast.rules.yml: `promtool check rules`, `promtool test rules` with
#   walcast.rules.test.yml, and every metric it names is one walcast registers;
# - deploy/docker/: compose.yml parses and names files that exist; the Dockerfile's build stage
#   has the -dev packages of deploy/install-deps.sh, its runtime stage exists in Debian 12 and
#   covers every library the binary links, and the final stage runs as a non-root user;
# - deploy/postgresql.conf.sample through deploy/docker/postgresql.conf: a new server starts with
#   exactly that layout, initdb-walcast.sh applies the migrations and sets the replicator's
#   password (scram, as in the container), pgoutput and wal2json slots can be made, and walcast
#   with deploy/walcast.conf and compose.yml's environment streams a row SQL wrote into the
#   feed, answers the compose healthcheck, and drains on SIGTERM.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

D=$ROOT/deploy

# --- systemd ---------------------------------------------------------------------------------
unit=$WORK/systemd/walcast.service
mkdir -p "$WORK/systemd"
sed "s#^ExecStart=/usr/local/bin/walcast #ExecStart=$WALCAST #" "$D/systemd/walcast.service" >"$unit"
check "unit: ExecStart substituted" "1" "$(grep -c "^ExecStart=$WALCAST " "$unit")"
out=$(systemd-analyze verify "$unit" 2>&1) && rc=0 || rc=$?
check "unit: systemd-analyze verify is silent and succeeds" "0:" "$rc:$out"
# The check is real: a missing binary is reported.
mkdir -p "$WORK/systemd/bad"
sed "s#^ExecStart=[^ ]*#ExecStart=$WORK/no-such-walcast#" "$unit" >"$WORK/systemd/bad/walcast.service"
check_true "unit: verify refuses a missing binary" \
  bash -c "! systemd-analyze verify '$WORK/systemd/bad/walcast.service' >/dev/null 2>&1"
# Exposure 0 (locked down) .. 10 (unprotected); --threshold is in tenths.
out=$(systemd-analyze security --offline=yes --threshold=20 "$unit" 2>&1) && rc=0 || rc=$?
check "unit: offline security exposure at most 2.0 ($(echo "$out" | grep -o 'exposure level[^:]*: [0-9.]*' | grep -o '[0-9.]*$'))" 0 "$rc"
for d in User=walcast ProtectSystem=strict ReadWritePaths=/var/lib/walcast NoNewPrivileges=yes \
  PrivateTmp=yes ProtectHome=yes "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" \
  SystemCallFilter=@system-service MemoryDenyWriteExecute=yes LockPersonality=yes \
  CapabilityBoundingSet= Restart=on-failure KillSignal=SIGTERM 'ExecReload=/bin/kill -HUP $MAINPID'; do
  check "unit: $d" 1 "$(grep -cxF "$d" "$D/systemd/walcast.service")"
done
# TimeoutStopSec covers the drain: pipeline.drain_timeout + audit.drain_timeout + 5 s final status.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$D/systemd/walcast.service")
drain=$(sed -n 's/^; drain_timeout = \([0-9]*\)s$/\1/p' "$D/walcast.conf" | paste -sd+ | bc)
check_true "unit: TimeoutStopSec ($stop s) > drain timeouts + 5 s ($drain + 5 s)" test "$stop" -gt $((drain + 5))

# --- Prometheus rules ------------------------------------------------------------------------
out=$(promtool check rules "$D/prometheus/walcast.rules.yml" 2>&1) && rc=0 || rc=$?
check "rules: promtool check rules" "0" "$rc"
out=$(cd "$D/prometheus" && promtool test rules walcast.rules.test.yml 2>&1) && rc=0 || rc=$?
[ "$rc" = 0 ] || echo "$out"
check "rules: promtool test rules" "0" "$rc"
unknown=
for m in $(grep -v '^ *#' "$D/prometheus/walcast.rules.yml" | grep -oE 'walcast_[a-z_]+' | sort -u); do
  grep -q "| \`$m\` |" "$ROOT/docs/metrics.md" && grep -rqF "\"$m\"" "$ROOT/src" "$ROOT/plugins" ||
    unknown="$unknown $m"
done
check "rules: every metric named is documented and registered" "" "$unknown"
for a in WalcastLagBytes WalcastLagSeconds WalcastSlotAtRisk WalcastSlotSafeWalSizeLow WalcastNotReady \
  WalcastPaused WalcastSinkUnhealthy WalcastDecodeErrors WalcastPolicyErrors; do
  check "rules: $a has a unit test" 1 "$(grep -c "alertname: $a\$" "$D/prometheus/walcast.rules.test.yml" | sed 's/^[1-9][0-9]*$/1/')"
done

# --- Dockerfile and compose ------------------------------------------------------------------
compose=$D/docker/compose.yml
out=$(python3 - "$compose" <<'PY' 2>&1
import os, sys, yaml
path = sys.argv[1]
base = os.path.dirname(path)
doc = yaml.safe_load(open(path))
errs = []
svcs = doc.get("services", {})
if sorted(svcs) != ["postgres", "redis", "walcast"]:
    errs.append("services: %s" % sorted(svcs))
for name, s in svcs.items():
    b = s.get("build")
    if b:
        f = os.path.join(base, b["context"], b.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(f):
            errs.append("%s: no %s" % (name, f))
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.join(base, src)):
                errs.append("%s: volume source %s missing" % (name, src))
        elif src not in (doc.get("volumes") or {}):
            errs.append("%s: volume %s not declared" % (name, src))
if svcs["walcast"].get("user") in ("root", "0"):
    errs.append("walcast runs as root")
print("\n".join(errs))
PY
)
check "compose: parses, three services, every file and volume it names exists" "" "$out"

df=$D/docker/Dockerfile
stage() { awk -v s="$1" '/^FROM /{cur=($NF==s)} cur' "$df"; }
pkgs() { stage "$1" | sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
  grep -vxE 'apt-get|install|rm|rf|&&' | sort -u; }
check "Dockerfile: both stages on Debian 12" "2" "$(grep -cE '^FROM debian:12(-slim)?( |$)' "$df")"
want_dev=$(sed -n '/^PKGS=(/,/^)/p' "$D/install-deps.sh" | tr ' ' '\n' | grep -E '^lib.*-dev$' |
  grep -v '^libclang-rt' | sort -u)
check "Dockerfile: build stage has install-deps.sh's -dev packages" "" "$(comm -23 <(echo "$want_dev") <(pkgs build) | paste -sd' ')"
check "Dockerfile: runtime stage has no -dev package or compiler" "" "$(pkgs runtime | grep -E -- '-dev$|^build-essential$|^cmake$' | paste -sd' ')"
# libc and libm come with every image; sanitizer runtimes only with a WALCAST_SANITIZE build.
needed=$(readelf -d "$WALCAST" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | grep -vE '^(libc|libm|libasan|libubsan|libgcc_s)\.so' |
  while read -r lib; do dpkg -S "*/$lib" 2>/dev/null | head -1 | cut -d: -f1; done | sort -u)
check_true "Dockerfile: NEEDED libraries resolved to packages ($(echo $needed))" test -n "$needed"
check "Dockerfile: runtime stage installs the package of every NEEDED library" "" \
  "$(comm -23 <(echo "$needed") <(pkgs runtime) | paste -sd' ')"
missing=
for p in $(pkgs build) $(pkgs runtime); do
  apt-cache show "$p" >/dev/null 2>&1 || missing="$missing $p"
done
check "Dockerfile: every package exists in this Debian 12's archive" "" "$missing"
check "Dockerfile: the final stage runs as walcast" "USER walcast:walcast" "$(stage runtime | grep '^USER')"
nocopy=
for src in $(grep -E '^COPY ' "$df" | grep -v -- '--from' | awk '{for (i=2;i<NF;i++) print $i}'); do
  [ -e "$ROOT/$src" ] || nocopy="$nocopy $src"
done
check "Dockerfile: every COPY source exists" "" "$nocopy"

# --- PostgreSQL with the container's configuration -------------------------------------------
# The layout of the container: postgresql.conf includes walcast.conf (the sample) beside it.
pg=$WORK/pgdocker
mkdir -p "$pg/etc" "$pg/sock"
cp "$D/docker/postgresql.conf" "$pg/etc/postgresql.conf"
cp "$D/postgresql.conf.sample" "$pg/etc/walcast.conf"
# As the sample says: uncomment output_plugin_libraries where this build has the setting.
if as_pg "$WALCAST_PG_BIN/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then
  sed -i 's/^#output_plugin_libraries/output_plugin_libraries/' "$pg/etc/walcast.conf"
fi
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$pg"
as_pg "$WALCAST_PG_BIN/initdb" -D "$pg/data" -U postgres -A trust --no-sync -E UTF8 >"$WORK/initdb2.log" 2>&1
# As the image does: passwords (scram) over TCP, trust on the local socket for the init script.
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' | as_pg tee "$pg/data/pg_hba.conf" >/dev/null
# pg2_start_on PORT: 0, 1 on a failure, 3 when another harness took the port meanwhile (then
# start_on_free_port tries another one).
pg2_start_on() {
  local seen
  seen=$(cat "$pg/log" 2>/dev/null | wc -l)
  as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$pg/data" -l "$pg/log" -w -t 120 -o \
    "-c config_file=$pg/etc/postgresql.conf -c hba_file=$pg/data/pg_hba.conf -c listen_addresses=127.0.0.1 -c port=$1 -c unix_socket_directories=$pg/sock -c fsync=off" \
    start >/dev/null && return 0
  if tail -n +$((seen + 1)) "$pg/log" | grep -q "Address already in use"; then return 3; fi
  cat "$pg/log" >&2; return 1
}
PG2=
started=0
start_on_free_port PG2 pg2_start_on && started=1
stop_pg2() { as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$pg/data" -m immediate -w stop >/dev/null 2>&1 || true; }
trap 'wc_cleanup_bg; stop_pg2' EXIT
check "postgres: starts with deploy/docker/postgresql.conf + the sample" 1 "$started"
sql2() { psql -X -q -v ON_ERROR_STOP=1 -At -h "$pg/sock" -p "$PG2" -U postgres -d postgres "$@"; }
check "postgres: the sample's settings are all applied" "" \
  "$(sql2 -c "SELECT name || ': ' || coalesce(error, 'not applied') FROM pg_file_settings WHERE sourcefile LIKE '%/walcast.conf' AND (error IS NOT NULL OR NOT applied)")"
check "postgres: wal_level, max_slot_wal_keep_size from the sample" "logical|50GB" \
  "$(sql2 -c "SELECT current_setting('wal_level') || '|' || current_setting('max_slot_wal_keep_size')")"

pw="pw-$RANDOM'\"\\x$RANDOM"
out=$(POSTGRES_USER=postgres POSTGRES_DB=postgres WALCAST_MIGRATIONS="$D/migrations" WALCAST_DB_PASSWORD="$pw" \
  PGHOST="$pg/sock" PGPORT=$PG2 bash "$D/docker/initdb-walcast.sh" 2>&1) && rc=0 || rc=$?
[ "$rc" = 0 ] || echo "$out"
check "initdb-walcast.sh: migrations applied, password set" 0 "$rc"
check "initdb-walcast.sh: every migration applied" "$(ls "$D"/migrations/*.sql | wc -l)" "$(echo "$out" | grep -c '^initdb-walcast: applying')"
check "initdb-walcast.sh: the publication exists" "walcast" "$(sql2 -c "SELECT pubname FROM pg_publication")"
check "postgres: walcast_replicator logs in over TCP with its password" "walcast_replicator" \
  "$(PGPASSWORD=$pw psql -X -At -h 127.0.0.1 -p "$PG2" -U walcast_replicator -d postgres -c 'SELECT current_user' 2>&1)"
check_true "postgres: a wrong password is refused" \
  bash -c "! PGPASSWORD=wrong psql -X -At -h 127.0.0.1 -p $PG2 -U walcast_replicator -d postgres -c 'SELECT 1' >/dev/null 2>&1"
check "postgres: a wal2json slot can be created and decodes" "t" \
  "$(PGPASSWORD=$pw psql -X -q -At -h 127.0.0.1 -p "$PG2" -U walcast_replicator -d postgres -v ON_ERROR_STOP=1 -c \
     "SELECT 1 FROM pg_create_logical_replication_slot('deploy_w2j', 'wal2json')" -c "SELECT 'x'" >/dev/null &&
     sql2 -c "INSERT INTO orgs (name) VALUES ('w2j probe')" &&
     sql2 -c "SELECT bool_or(data LIKE '%w2j probe%') FROM pg_logical_slot_get_changes('deploy_w2j', NULL, NULL)" 2>&1)"
sql2 -c "SELECT pg_drop_replication_slot('deploy_w2j')" >/dev/null

# --- walcast with deploy/walcast.conf and compose.yml's environment ---------------------------
# Every WALCAST_* of the walcast service, with ${VAR} filled in and the container's host names
# and ports replaced by this server's.
mapfile -t cenv < <(WALCAST_DB_PASSWORD="$pw" python3 - "$compose" <<'PY'
import os, re, sys, yaml
env = yaml.safe_load(open(sys.argv[1]))["services"]["walcast"]["environment"]
for k, v in env.items():
    # ${VAR}, ${VAR:-default}, ${VAR:?message}: as compose fills them in
    v = re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}",
               lambda m: os.environ.get(m.group(1)) or (m.group(3) if m.group(2) == "-" else ""), str(v))
    print("%s=%s" % (k, v))
PY
)
check "compose: walcast's environment has the conninfo, password, Redis and listen addresses" 6 "${#cenv[@]}"
mkdir -p "$WORK/var"
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP/readyz")" = 200 ]; }
ready_or_gone() { ready || ! kill -0 "$WPID" 2>/dev/null; }
# start_walcast: on two free ports (another harness may take one before walcast binds it:
# then walcast exits and it is started again on others, at most 5 times).
start_walcast() {
  local try envs
  for try in 1 2 3 4 5; do
    HTTP=$(free_port); NNG=$(free_port)
    envs=("${cenv[@]//host=postgres port=5432/host=127.0.0.1 port=$PG2}")
    envs=("${envs[@]//redis:\/\/redis:6379\/0/$WALCAST_REDIS_URL}")
    envs=("${envs[@]//\*:8080/127.0.0.1:$HTTP}")
    envs=("${envs[@]//tcp:\/\/0.0.0.0:7450/tcp://127.0.0.1:$NNG}")
    (cd "$WORK/var" && exec env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE "${envs[@]}" \
      WALCAST_SINK_FEED_PATH="$WORK/var/feed.jsonl" WALCAST_AUTH_JWT_SECRET=deploy-test-secret-0123456789abcdef \
      "$WALCAST" --config "$D/walcast.conf" run --policy "$D/policy.ini" 2>"$WORK/walcast.log") &
    WPID=$!
    BG_PIDS+=("$WPID")
    wait_for 120 ready_or_gone || return 1
    ready && return 0
    wait "$WPID" || true
    grep -qE 'Address in use|Address already in use|binding' "$WORK/walcast.log" || return 1
    echo "walcast: a port was taken; trying others"
  done
  return 1
}
start_walcast && rc=0 || rc=$?
[ "$rc" = 0 ] || tail -20 "$WORK/walcast.log"
check "walcast: ready with deploy/walcast.conf and the compose environment" 0 "$rc"
sql2 -c "INSERT INTO orgs (name) SELECT 'deploy ' || g FROM generate_series(1, 25) g"
want=$(sql2 -c "SELECT count(*) FROM orgs WHERE name LIKE 'deploy %'")
fed() { [ "$(grep -c '"deploy [0-9]*"' "$WORK/var/feed.jsonl" 2>/dev/null)" = "$want" ]; }
wait_for 60 fed || true
check "walcast: the feed holds every row SQL counts" "$want" "$(grep -c '"deploy [0-9]*"' "$WORK/var/feed.jsonl" 2>/dev/null)"
# The compose healthcheck, as written there, against this walcast's port.
hc=$(python3 -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["services"]["walcast"]["healthcheck"]["test"][3])' "$compose")
check "compose: the walcast healthcheck passes" 0 "$(timeout 10 bash -c "${hc//8080/$HTTP}" && echo 0 || echo 1)"
check "compose: the healthcheck fails when nothing listens" 1 "$(timeout 10 bash -c "${hc//8080/$(free_port)}" 2>/dev/null && echo 0 || echo 1)"
kill -TERM "$WPID" 2>/dev/null || true
rc=0; wait "$WPID" || rc=$?
check "walcast: SIGTERM drains, exit 0" 0 "$rc"

summary

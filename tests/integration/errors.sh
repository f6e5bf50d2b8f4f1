#!/usr/bin/env bash
# Permanent problems end walcast with one clear error (exit 1), not a loop of retries; a bad
# configuration is refused with file, line and reason; a server that is down is waited for.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

# expect_fail NAME PATTERN COMMAND...: exits 1 within 30 s, stderr matches PATTERN, few lines.
expect_fail() {
  local name=$1 pattern=$2; shift 2
  local rc=0
  timeout 30 "$@" >"$WORK/out" 2>"$WORK/err" </dev/null || rc=$?
  check "$name: exit status" 1 "$rc"
  if grep -qE "$pattern" "$WORK/err"; then check "$name: says why" yes yes
  else check "$name: says why" "/$pattern/" "$(cat "$WORK/err")"; fi
  check_true "$name: one clear error, not noise ($(wc -l <"$WORK/err") lines)" [ "$(wc -l <"$WORK/err")" -le 8 ]
}

# Configuration.
printf '[replication]\nslot = ok\nslott = typo\n' >"$WORK/bad.conf"
expect_fail_config() {
  local rc=0
  timeout 20 "$WALCAST" -c "$1" tail >"$WORK/out" 2>"$WORK/err" || rc=$?
  check "config $2: exit status" 2 "$rc"
  check "config $2: names file, line and reason" 1 "$(grep -cE "$3" "$WORK/err")"
}
expect_fail_config "$WORK/bad.conf" "unknown key" "bad.conf:3: unknown key 'slott' in section \[replication\]"
printf '[replication]\nstatus_interval = soon\n' >"$WORK/bad2.conf"
expect_fail_config "$WORK/bad2.conf" "bad duration" "bad2.conf:2: .*not a duration"
printf 'slot = x\n' >"$WORK/bad3.conf"
expect_fail_config "$WORK/bad3.conf" "no section" "bad3.conf:1: .*outside any \[section\]"
expect_fail_config "$WORK/missing.conf" "missing file" "missing.conf: cannot open"
rc=0; WALCAST_REPLICATION_CREATE_SLOT=maybe "$WALCAST" tail 2>"$WORK/err" || rc=$?
check "bad environment variable refused" 2 "$rc"
check "names the variable" 1 "$(grep -c WALCAST_REPLICATION_CREATE_SLOT "$WORK/err")"
rc=0; "$WALCAST" tail --until-lsn nope 2>/dev/null || rc=$?
check "bad --until-lsn refused" 2 "$rc"
mkdir -p "$WORK/confdir"
expect_fail_config "$WORK/confdir" "is a directory" "confdir: is a directory"
# A misspelt key in a variable is refused like one in the file; variables that are not
# WALCAST_<SECTION>_<KEY> of a known section (WALCAST_KEYS, the harness's) are not config keys.
rc=0; WALCAST_REPLICATION_SLOTT=typo timeout 20 "$WALCAST" tail 2>"$WORK/err" || rc=$?
check "unknown WALCAST_ variable refused" 2 "$rc"
check "names the variable" 1 "$(grep -c 'WALCAST_REPLICATION_SLOTT: not a configuration key' "$WORK/err")"
# refused NAME ARGS...: exit 2 before connecting, with a reason naming the option.
refused() {
  local name=$1 rc=0; shift
  timeout 20 "$WALCAST" "$@" >"$WORK/out" 2>"$WORK/err" </dev/null || rc=$?
  check "$name: refused" 2 "$rc"
  check "$name: says why" 1 "$(grep -cE -- '--(action|table):' "$WORK/err")"
}
refused "empty --action" tail -a ''
refused "empty element in --action" tail -a 'insert,,delete'
refused "empty --table" tail -t ''
refused "table without a name" tail -t 'public.'

# Each verb's --help is that verb's, on stdout, exit 0; the global help lists the verbs.
for verb in tail status policy encrypt; do
  rc=0; "$WALCAST" "$verb" --help >"$WORK/help" 2>&1 || rc=$?
  check "$verb --help: exit 0" 0 "$rc"
  check "$verb --help: that verb's usage" 1 "$(head -1 "$WORK/help" | grep -cE "^usage: walcast .*$verb")"
done
check "tail --help names tail's options" 1 "$(grep -c -- '--max-changes' <("$WALCAST" tail --help))"
check "status --help is not tail's" 0 "$(grep -c -- '--max-changes' <("$WALCAST" status --help))"
check "--help alone: the verbs" 1 "$("$WALCAST" --help | grep -c '^verbs:')"
rc=0; "$WALCAST" nosuchverb --help >/dev/null 2>&1 || rc=$?
check "unknown verb --help refused" 2 "$rc"

# status prints valid JSON whatever the slot name.
rc=0; "$WALCAST" status -S 'a"b\c' >"$WORK/status" 2>&1 || rc=$?
check "status of a missing slot: exit 1" 1 "$rc"
check "status with quotes in the slot name: valid JSON" 'a"b\c false' "$(jq -r '"\(.slot) \(.exists)"' "$WORK/status")"

# Slot missing and not creatable.
expect_fail "missing slot" "does not exist and create_slot is off" "$WALCAST" tail -S nosuch --no-create-slot

# Slot bound to another plugin.
sql -c "SELECT pg_create_logical_replication_slot('err_other', 'test_decoding')" >/dev/null
expect_fail "wrong plugin" "uses plugin 'test_decoding'" "$WALCAST" tail -S err_other

# Missing privileges: a role without REPLICATION.
sql -c "CREATE ROLE err_norepl LOGIN"
expect_fail "no replication privilege" "must be superuser or replication role" \
  "$WALCAST" tail -d "host=$PGHOST port=$PGPORT user=err_norepl dbname=postgres"

# Replication role without the right to create a publication (--create-publication): a clear hint.
sql -c "CREATE ROLE err_repl LOGIN REPLICATION"
expect_fail "cannot create publication" "permission denied|must be superuser" \
  "$WALCAST" tail -S err_pub --publication err_pub_missing --create-publication --policy "$ROOT/deploy/policy.ini" \
  -d "host=$PGHOST port=$PGPORT user=err_repl dbname=postgres"

# Errors that retrying cannot heal: within seconds, exit 1, exactly one error line, no retries.
# expect_one_error NAME PATTERN COMMAND...
expect_one_error() {
  local name=$1 pattern=$2; shift 2
  local rc=0 start=$SECONDS
  timeout 15 "$@" >"$WORK/out" 2>"$WORK/err" </dev/null || rc=$?
  check "$name: exit status 1 within seconds ($((SECONDS - start)) s)" 1 "$rc"
  check "$name: exactly one error line, no retries" "1 0" \
    "$(grep -cE '^[^ ]+ ERROR ' "$WORK/err") $(grep -c source.disconnected "$WORK/err")"
  if grep -qE "ERROR.*($pattern)" "$WORK/err"; then check "$name: says why" yes yes
  else check "$name: says why" "/$pattern/" "$(cat "$WORK/err")"; fi
}
expect_one_error "invalid connection option" 'invalid connection option "foo"' "$WALCAST" tail -d "foo=bar"
expect_one_error "invalid URI" 'matching "\]"' "$WALCAST" tail -d "postgresql://[bad"
expect_one_error "invalid port" 'invalid integer value' "$WALCAST" tail -d "host=$PGHOST port=notaport"
# A role that needs a password, and none given.
sql -c "CREATE ROLE err_pw LOGIN REPLICATION PASSWORD 'secret'" >/dev/null
hba=$(sql -c "SHOW hba_file")
as_pg sed -i "1i host all err_pw 127.0.0.1/32 scram-sha-256\nhost replication err_pw 127.0.0.1/32 scram-sha-256" "$hba"
sql -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
PGPASSWORD='' PGPASSFILE="$WORK/no-such-pgpass" expect_one_error "missing password" "no password supplied" \
  "$WALCAST" tail -d "host=$PGHOST port=$PGPORT user=err_pw dbname=postgres"
# A publication created after the slot: pgoutput reads publications as of each change, so the
# changes before it can never be decoded through it.
sql -c "CREATE TABLE err_late_pub_t (id int PRIMARY KEY)" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('err_pubtime', 'pgoutput')" >/dev/null
sql -c "INSERT INTO err_late_pub_t VALUES (1)" -c "CREATE PUBLICATION err_pubtime_pub FOR TABLE err_late_pub_t" >/dev/null
expect_one_error "publication missing at decode time" "err_pubtime_pub" \
  "$WALCAST" tail -S err_pubtime --publication err_pubtime_pub
# A publication dropped while walcast streams from it.
sql -c "CREATE PUBLICATION err_dropped_pub FOR TABLE err_late_pub_t" >/dev/null
"$WALCAST" tail -S err_dropped --publication err_dropped_pub >/dev/null 2>"$WORK/dropped.err" &
dropped=$!; BG_PIDS+=("$dropped")
wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT active FROM pg_replication_slots WHERE slot_name = 'err_dropped'\")\" = t ]"
sql -c "DROP PUBLICATION err_dropped_pub" -c "INSERT INTO err_late_pub_t VALUES (2)" >/dev/null
rc=0; for _ in $(seq 1 50); do kill -0 "$dropped" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$dropped" 2>/dev/null; then rc=running; kill "$dropped"; wait "$dropped" || true; else wait "$dropped" || rc=$?; fi
check "publication dropped while streaming: exit 1 within 10 s" 1 "$rc"
check "publication dropped while streaming: exactly one error line, no retries" "1 0" \
  "$(grep -cE '^[^ ]+ ERROR .*err_dropped_pub' "$WORK/dropped.err") $(grep -c source.disconnected "$WORK/dropped.err")"

# Output plugin not allowed (Debian's output_plugin_libraries).
if [ -n "$(psql -XAtc "SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries'")" ]; then
  sql -c "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput'" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 0.5
  expect_fail "plugin not allowed" "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'" \
    "$WALCAST" tail -P wal2json -S err_w2j
  sql -c "ALTER SYSTEM RESET output_plugin_libraries" -c "SELECT pg_reload_conf()" >/dev/null
else
  echo "# skip: this PostgreSQL build has no output_plugin_libraries"
fi

# Slot active for another process.
"$WALCAST" tail -S err_busy >/dev/null 2>&1 &
busy=$!; BG_PIDS+=("$busy")
wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT active FROM pg_replication_slots WHERE slot_name = 'err_busy'\")\" = t ]"
expect_fail "slot in use" "active for another process" "$WALCAST" tail -S err_busy
kill "$busy"; wait "$busy" || true

# Invalidated slot (wal_status = lost).
sql -c "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'" -c "SELECT pg_reload_conf()" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('err_lost', 'pgoutput')" >/dev/null
sql -c "CREATE TABLE err_churn (v text)"
for _ in 1 2 3 4 5 6; do
  sql -c "INSERT INTO err_churn SELECT repeat('x', 1000) FROM generate_series(1, 3000)" -c "SELECT pg_switch_wal()" -c "CHECKPOINT" >/dev/null
done
check "slot got invalidated" lost "$(sql -c "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'err_lost'")"
expect_fail "invalidated slot" "invalidated \(wal_status = lost\)" "$WALCAST" tail -S err_lost
check "invalidated slot: says what to do today (drop and recreate; what is lost), no verb that does not exist" "1 0" \
  "$(grep -c "pg_drop_replication_slot('err_lost').*never delivered" "$WORK/err") $(grep -c backfill "$WORK/err")"
rc=0; "$WALCAST" status -S err_lost >"$WORK/status" 2>&1 || rc=$?
check "status of a lost slot: exit 1" 1 "$rc"
check "status of a lost slot: restart_lsn null, not healthy" "lost null false" \
  "$(jq -r '"\(.wal_status) \(.restart_lsn) \(.healthy)"' "$WORK/status")"
sql -c "ALTER SYSTEM RESET max_slot_wal_keep_size" -c "SELECT pg_reload_conf()" >/dev/null

# PostgreSQL down at start: walcast waits (retrying quietly) and streams once it is up.
sql -c "CREATE TABLE err_late (id int primary key)" -c "CREATE PUBLICATION err_late_pub FOR TABLE err_late" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('err_late', 'pgoutput')" >/dev/null
as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -m fast -w stop >/dev/null
"$WALCAST" tail -S err_late --publication err_late_pub -n 1 >"$WORK/late.out" 2>"$WORK/late.err" &
late=$!; BG_PIDS+=("$late")
sleep 3
check_true "still waiting while the server is down" kill -0 "$late"
as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -l "$WALCAST_HARNESS_DIR/pg.log" -w start >/dev/null
sql -c "INSERT INTO err_late VALUES (7)"
wait "$late" && rc=0 || rc=$?
check "streams once the server is up" "0 7" "$rc $(jq -r .new.id "$WORK/late.out")"
check_true "retries are logged once per problem, not per attempt ($(grep -c source.disconnected "$WORK/late.err"))" \
  [ "$(grep -c source.disconnected "$WORK/late.err")" -le 2 ]

# The server's notices go through the log format, never raw on stderr: client_min_messages=log
# makes the walsender send "LOG:  starting logical decoding for slot ...".
sql -c "SELECT pg_create_logical_replication_slot('err_notice', 'pgoutput')" >/dev/null
sql -c "INSERT INTO err_late VALUES (8)"
PGOPTIONS='-c client_min_messages=log' timeout 30 "$WALCAST" tail -S err_notice --publication err_late_pub -n 1 >"$WORK/notice.out" 2>"$WORK/notice.err" || true
check "notice run printed the row" 8 "$(jq -r .new.id "$WORK/notice.out")"
check_true "the server's LOG lines are logged as pg.notice" grep -q 'INFO pg.notice conn=replication severity=LOG: starting logical decoding' "$WORK/notice.err"
check "every stderr line is a log record" "" "$(grep -vE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z (DEBUG|INFO|WARN|ERROR) [a-z_0-9]+\.[a-z_0-9.]+ ' "$WORK/notice.err" | head -3)"

# wal2json drops UPDATE and DELETE of a table without replica identity (and warns per change):
# walcast says it once per table.
sql -c "CREATE TABLE err_nopk (a int, b text)" -c "SELECT pg_create_logical_replication_slot('err_nopk', 'wal2json')" >/dev/null
sql -c "INSERT INTO err_nopk SELECT g, 'x' FROM generate_series(1, 5) g" -c "UPDATE err_nopk SET b = 'y'" \
    -c "DELETE FROM err_nopk WHERE a < 3" -c "UPDATE err_nopk SET b = 'z'"
end=$(current_lsn)
timeout 30 "$WALCAST" tail -P wal2json -S err_nopk -t err_nopk --until-lsn "$end" >"$WORK/nopk.out" 2>"$WORK/nopk.err"
check "no identity: the inserts stream" 5 "$(jq -r 'select(.action == "insert") | .new.a' "$WORK/nopk.out" | wc -l)"
check "no identity: said once for the table" 1 "$(grep -c 'WARN wal2json.no_replica_identity table="public"."err_nopk"' "$WORK/nopk.err")"
check "no identity: not once per change" 1 "$(grep -cE 'no tuple identifier|no_replica_identity' "$WORK/nopk.err")"

# --as a user who is a member of no org: the feed is empty, and walcast says why, once. The keys
# given in WALCAST_KEYS do not stay in the process's environment.
key=$(grep -m1 -E '^[0-9]+ [0-9a-f]{64}' "$ROOT/tests/fixtures/keys/test.keys" | cut -d' ' -f2)
WALCAST_KEYS="1:$key:primary" "$WALCAST" tail --as 00000000-0000-4000-8000-00000000dead \
  --policy "$ROOT/deploy/policy.ini" >"$WORK/nomember.out" 2>"$WORK/nomember.err" &
nm=$!; BG_PIDS+=("$nm")
check_true "--as a non-member: warned" wait_for 30 grep -q 'WARN tail.viewer_no_membership user=00000000-0000-4000-8000-00000000dead' "$WORK/nomember.err"
check "--as a non-member: warned once" 1 "$(grep -c viewer_no_membership "$WORK/nomember.err")"
check "WALCAST_KEYS is not in the environment once read" 0 "$(tr '\0' '\n' </proc/$nm/environ | grep -c "$key" || true)"
kill "$nm"; wait "$nm" || true

summary

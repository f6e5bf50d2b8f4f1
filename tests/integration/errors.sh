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
  "$WALCAST" -c "$1" tail >"$WORK/out" 2>"$WORK/err" || rc=$?
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

summary

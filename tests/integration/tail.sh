#!/usr/bin/env bash
# walcast tail against a real PostgreSQL: slot and publication creation, output, filters,
# limits, idle slots not pinning WAL, the heartbeat, and reconnecting across a server restart;
# --output: a clean stop (SIGTERM, -n) leaves FILE exactly at its checkpoint, FILE and FILE.pos
# are private (0600). Every check compares the exact sequence of lines (no duplicates pass)
# or counts against SQL.
source "$(dirname "$0")/lib.sh"

sql <<'SQL'
CREATE TABLE tail_a (id int PRIMARY KEY, v text, n numeric, ok boolean);
CREATE TABLE tail_b (id int PRIMARY KEY, v text);
CREATE TABLE tail_unpublished (id int);
CREATE PUBLICATION tail_pub FOR TABLE tail_a, tail_b;
SQL

# The slots do not exist: tail creates them (and says so), then streams from there.
declare -A PIDS
for plugin in pgoutput wal2json; do
  slot="tail_$plugin"
  "$WALCAST" tail -P "$plugin" -S "$slot" --publication tail_pub -n 1 >"$WORK/first.$plugin" 2>"$WORK/first.$plugin.err" &
  PIDS[$plugin]=$!; BG_PIDS+=("${PIDS[$plugin]}")
  check_true "$plugin: slot created" wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active\")\" = 1 ]"
done
sql -c "INSERT INTO tail_a VALUES (1, 'one', 1.50, true)"
for plugin in pgoutput wal2json; do
  wait "${PIDS[$plugin]}" && rc=0 || rc=$?
  check "$plugin: exits 0 after --max-changes" 0 "$rc"
  check "$plugin: exactly the first change" '{"action":"insert","table":"tail_a","new":{"id":1,"v":"one","n":"1.50","ok":true}}' \
    "$(jq -c '{action, table, new}' "$WORK/first.$plugin")"
  check "$plugin: numeric travels as its exact text, a string" 1 "$(grep -c '"n":"1.50",' "$WORK/first.$plugin")"
  grep -q 'source.slot_created' "$WORK/first.$plugin.err" && created=yes || created=no
  check "$plugin: logs slot creation" yes "$created"
done

# Changes of several kinds, then read them back with filters and an LSN limit.
sql <<'SQL'
INSERT INTO tail_a VALUES (2, 'two', NULL, false);
INSERT INTO tail_b VALUES (1, 'b-one');
UPDATE tail_a SET v = 'two!' WHERE id = 2;
DELETE FROM tail_a WHERE id = 1;
INSERT INTO tail_unpublished VALUES (1);
SQL
end=$(current_lsn)
for plugin in pgoutput wal2json; do
  slot="tail_$plugin"
  out="$WORK/all.$plugin"
  timeout 60 "$WALCAST" tail -P "$plugin" -S "$slot" --publication tail_pub -t tail_a -t tail_b --until-lsn "$end" >"$out" 2>"$WORK/all.$plugin.err"
  check "$plugin: --until-lsn stops" 0 $?
  # Exactly these four changes, in commit order: the first run stopped after its one change and
  # the commit that followed, so the insert of 1 was confirmed and is not repeated.
  check "$plugin: exactly the changes since the clean stop, in commit order" \
    "insert tail_a 2 null|insert tail_b 1 null|update tail_a 2 null|delete tail_a null 1" \
    "$(jq -r '[.action, .table, (.new.id | tostring), (.old.id | tostring)] | join(" ")' "$out" | paste -sd'|')"
  check "$plugin: delete carries the key" '{"id":1}' "$(jq -c 'select(.action == "delete") | .old' "$out")"
  check "$plugin: lines carry LSN and commit time" true "$(jq -s 'all(.[]; (.lsn | test("^[0-9A-F]+/[0-9A-F]+$")) and (.commit_time | test("Z$")))' "$out")"
done

# Filters: by table and by action (slot re-read from scratch with a new slot).
sql -c "SELECT pg_create_logical_replication_slot('tail_filter', 'pgoutput')" >/dev/null
sql <<'SQL'
INSERT INTO tail_a VALUES (10, 'ten', 10, true);
INSERT INTO tail_b VALUES (10, 'b-ten');
UPDATE tail_b SET v = 'b-ten!' WHERE id = 10;
DELETE FROM tail_a WHERE id = 10;
SQL
end=$(current_lsn)
"$WALCAST" tail -S tail_filter --publication tail_pub --until-lsn "$end" -t tail_b >"$WORK/f1"
check "--table keeps only that table" "insert tail_b 10|update tail_b 10" "$(jq -r '[.action, .table, .new.id] | join(" ")' "$WORK/f1" | paste -sd'|')"
sql -c "SELECT pg_drop_replication_slot('tail_filter')" -c "SELECT pg_create_logical_replication_slot('tail_filter', 'pgoutput')" >/dev/null
sql -c "INSERT INTO tail_a VALUES (11, 'x', 1, true)" -c "DELETE FROM tail_a WHERE id = 11" -c "INSERT INTO tail_b VALUES (11, 'y')"
end=$(current_lsn)
"$WALCAST" tail -S tail_filter --publication tail_pub --until-lsn "$end" -a delete,insert -t public.tail_a >"$WORK/f2"
check "--action and schema.table together" "insert 11|delete 11" "$(jq -r '[.action, (.new // .old).id] | join(" ")' "$WORK/f2" | paste -sd'|')"

# An idle slot must not pin WAL: with nothing published happening, the keepalive position is
# confirmed, so confirmed_flush_lsn passes WAL written by unpublished tables.
"$WALCAST" tail -S tail_pgoutput --publication tail_pub >"$WORK/idle.out" 2>"$WORK/idle.err" &
pid=$!; BG_PIDS+=("$pid")
wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT active FROM pg_replication_slots WHERE slot_name = 'tail_pgoutput'\")\" = t ]"
sql -c "INSERT INTO tail_unpublished SELECT generate_series(1, 1000)"
mark=$(current_lsn)
sql -c "SELECT pg_switch_wal()" >/dev/null
advanced() {
  [ "$(psql -XAtc "SELECT confirmed_flush_lsn >= '$mark' FROM pg_replication_slots WHERE slot_name = 'tail_pgoutput'")" = t ]
}
check_true "idle slot confirms past unpublished WAL" wait_for 30 advanced
check "nothing printed for unpublished changes" 0 "$(grep -c tail_unpublished "$WORK/idle.out" || true)"

# Reconnect: restart PostgreSQL under a running tail; it comes back and continues.
source "$ROOT/tests/harness/harness.sh"
harness_pg_restart fast
sql -c "INSERT INTO tail_a VALUES (20, 'after restart', 20, true)"
got_after_restart() { grep -q '"after restart"' "$WORK/idle.out"; }
check_true "streams again after a PostgreSQL restart" wait_for 60 got_after_restart
grep -q 'source.disconnected' "$WORK/idle.err" && logged=yes || logged=no
check "logs the disconnection" yes "$logged"
kill -TERM "$pid"; wait "$pid" && rc=0 || rc=$?
check "SIGTERM stops cleanly" 0 "$rc"
check "the row after the restart, once" 1 "$(grep -c '"after restart"' "$WORK/idle.out")"

# Heartbeat: a logical message every interval keeps the slot moving; it is never printed.
WALCAST_REPLICATION_HEARTBEAT_INTERVAL=300ms "$WALCAST" tail -S tail_wal2json -P wal2json >"$WORK/hb.out" 2>"$WORK/hb.err" &
pid=$!; BG_PIDS+=("$pid")
hb_seen() { [ "$(psql -XAtc "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walcast-heartbeat'")" -ge 1 ]; }
check_true "heartbeat connection is used" wait_for 20 hb_seen
mark=$(current_lsn)
hb_moved() { [ "$(psql -XAtc "SELECT confirmed_flush_lsn > '$mark' FROM pg_replication_slots WHERE slot_name = 'tail_wal2json'")" = t ]; }
check_true "heartbeat moves the slot" wait_for 30 hb_moved
kill -TERM "$pid"; wait "$pid" || true
check "heartbeat messages are not printed" 0 "$(grep -c heartbeat "$WORK/hb.out" || true)"

# Counts against SQL: three transactions of 700 rows, each row exactly once, in commit order.
sql -c "SELECT pg_drop_replication_slot('tail_filter')" -c "SELECT pg_create_logical_replication_slot('tail_filter', 'wal2json')" >/dev/null
for b in 0 1 2; do sql -c "INSERT INTO tail_b SELECT g, 'bulk' FROM generate_series($((1000 + b * 700)), $((1699 + b * 700))) g"; done
end=$(current_lsn)
"$WALCAST" tail -P wal2json -S tail_filter -t tail_b -a insert --until-lsn "$end" >"$WORK/f3"
sql -c "SELECT id FROM tail_b WHERE v = 'bulk' ORDER BY id" >"$WORK/f3.want"
check "bulk: $(wc -l <"$WORK/f3.want") rows in SQL, the same ids printed once each in order" "" \
  "$(jq -r .new.id "$WORK/f3" | diff - "$WORK/f3.want" | head -5)"

# --output and a clean stop in the middle of a large transaction: FILE ends at its checkpoint
# (the offset in FILE.pos), so a reader never sees lines that the next start cuts; the next run
# writes the transaction whole, once.
pos_offset() { sed -n 's/^offset=//p' "$1.pos"; }
sql -c "SELECT pg_create_logical_replication_slot('tail_stop', 'pgoutput')" >/dev/null
sql -c "INSERT INTO tail_b SELECT g, 'large' FROM generate_series(100000, 399999) g"
end=$(current_lsn)
out="$WORK/stop.jsonl"
"$WALCAST" tail -S tail_stop --publication tail_pub -t tail_b -o "$out" 2>"$WORK/stop.err" &
pid=$!; BG_PIDS+=("$pid")
check_true "the large transaction is being written" wait_for 60 bash -c "[ -f '$out' ] && [ \$(wc -l <'$out') -ge 2000 ]"
kill -TERM "$pid"; wait "$pid" && rc=0 || rc=$?
check "SIGTERM mid-transaction: exit 0" 0 "$rc"
check "SIGTERM mid-transaction: FILE ends at its checkpoint" "$(pos_offset "$out")" "$(stat -c %s "$out")"
lines=$(wc -l <"$out")
check_true "SIGTERM mid-transaction: only complete transactions in FILE ($lines lines)" \
  test "$lines" -eq 0 -o "$lines" -eq 300000
check "FILE is private" 600 "$(stat -c %a "$out")"
check "FILE.pos is private" 600 "$(stat -c %a "$out.pos")"
timeout 300 "$WALCAST" tail -S tail_stop --publication tail_pub -t tail_b -o "$out" --until-lsn "$end" 2>>"$WORK/stop.err"
sql -c "SELECT id FROM tail_b WHERE v = 'large' ORDER BY id" >"$WORK/stop.want"
check "after the restart: the transaction once, whole, in order" "" \
  "$(jq -r .new.id "$out" | diff - "$WORK/stop.want" | head -5)"

# -n reached in the middle of a transaction: the transaction is not kept (FILE ends at its
# checkpoint) and the next run writes it whole.
sql -c "SELECT pg_create_logical_replication_slot('tail_limit', 'pgoutput')" >/dev/null
sql -c "INSERT INTO tail_b SELECT g, 'limit' FROM generate_series(500000, 500099) g"
end=$(current_lsn)
out="$WORK/limit.jsonl"
"$WALCAST" tail -S tail_limit --publication tail_pub -t tail_b -o "$out" -n 5 2>"$WORK/limit.err" && rc=0 || rc=$?
check "-n mid-transaction: exit 0" 0 "$rc"
check "-n mid-transaction: FILE ends at its checkpoint" "$(pos_offset "$out")" "$(stat -c %s "$out")"
check "-n mid-transaction: the cut transaction is not kept" 0 "$(wc -l <"$out")"
"$WALCAST" tail -S tail_limit --publication tail_pub -t tail_b -o "$out" --until-lsn "$end" 2>>"$WORK/limit.err"
check "-n then a restart: the 100 rows once, in order" "$(seq 500000 500099 | paste -sd,)" "$(jq -r .new.id "$out" | paste -sd,)"

# Checkpoint order, seen in the system calls: FILE fdatasync'ed, FILE.pos.tmp fsync'ed and
# renamed over FILE.pos, then the directory fsync'ed, and only then a standby status update
# ('r', the confirmation) sent to the server.
sql -c "SELECT pg_create_logical_replication_slot('tail_strace', 'pgoutput')" >/dev/null
for i in 1 2 3; do sql -c "INSERT INTO tail_b SELECT g, 'strace' FROM generate_series($((600000 + i * 10)), $((600004 + i * 10))) g"; done
end=$(current_lsn)
# (LeakSanitizer cannot run under ptrace: leaks are checked by the other runs.)
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -o "$WORK/strace.log" \
  -e trace=openat,rename,renameat,renameat2,fsync,fdatasync,sendto "$WALCAST" tail -S tail_strace --publication tail_pub -t tail_b -o "$WORK/strace.jsonl" --until-lsn "$end" 2>/dev/null
check "strace run: the 15 rows" 15 "$(wc -l <"$WORK/strace.jsonl")"
check "checkpoint order: data synced, FILE.pos synced and renamed, directory synced, then confirmed" "ok" \
  "$(python3 - "$WORK/strace.log" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
problems, checkpoints = [], 0
data_synced = False
pending = None  # after a rename of FILE.pos: waiting for the directory's fsync
dirfd = None
tmpfd = None
tmp_synced = False
for n, l in enumerate(lines, 1):
    if l.startswith("fdatasync("):
        data_synced = True
    m = re.match(r'openat\(.*\.pos\.tmp", .*\) = (\d+)', l)
    if m:
        tmpfd, tmp_synced = m.group(1), False
    if tmpfd and l.startswith("fsync(%s)" % tmpfd):
        tmp_synced = True
    if re.match(r'rename\(".*\.pos\.tmp", ".*\.pos"\) = 0', l):
        if not tmp_synced:
            problems.append("line %d: FILE.pos.tmp renamed before its fsync" % n)
        pending, dirfd, tmpfd = n, None, None
        checkpoints += 1
        continue
    m = re.match(r'openat\(.*O_DIRECTORY.*\) = (\d+)', l)
    if pending and m:
        dirfd = m.group(1)
    if pending and dirfd and l.startswith("fsync(%s)" % dirfd):
        pending = None
    if l.startswith("sendto(") and '"d\\0\\0\\0&r' in l:
        if pending:
            problems.append("line %d: confirmed before the directory fsync after the rename on line %d" % (n, pending))
if checkpoints < 2:
    problems.append("only %d checkpoints seen" % checkpoints)
if not data_synced:
    problems.append("FILE never fdatasync'ed")
print("; ".join(problems) if problems else "ok")
PY
)"

summary

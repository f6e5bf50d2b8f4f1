#!/usr/bin/env bash
# Positions and checkpoints: what walcast confirms and resumes from never skips a committed
# transaction, and a checkpoint the server cannot have produced stops the run.
#  - A non-transactional logical message that is the last WAL record before a COMMIT: the
#    message is sent before that transaction (it is decoded when its record is read, the
#    transaction at its commit), so confirming the message must not pass the commit.
#  - The same under kill -9 in the middle of a 100,000-row transaction that ends that way.
#  - A checkpoint (FILE.pos) ahead of the server's WAL (a restored backup) is refused.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"

sql <<'SQL'
CREATE TABLE pos_t (id int PRIMARY KEY);
CREATE TABLE pos_big (id int PRIMARY KEY);
CREATE PUBLICATION pos_pub FOR TABLE pos_t, pos_big;
SQL
for plugin in pgoutput wal2json; do
  for mode in file stdout; do
    sql -c "SELECT pg_create_logical_replication_slot('pos_${plugin}_$mode', '$plugin')" >/dev/null
  done
  sql -c "SELECT pg_create_logical_replication_slot('pos_${plugin}_big', '$plugin')" >/dev/null
done

# The message is the last record before the COMMIT of the transaction inserting 100.
sql <<'SQL'
BEGIN;
INSERT INTO pos_t VALUES (100);
SELECT pg_logical_emit_message(false, 'k', 'x');
COMMIT;
INSERT INTO pos_t VALUES (101);
SQL
end=$(current_lsn) # LSN
for plugin in pgoutput wal2json; do
  # --output: the first run prints the message only, the second everything after it.
  f="$WORK/pos_$plugin.jsonl"
  timeout 30 "$WALCAST" tail -P $plugin -S "pos_${plugin}_file" --publication pos_pub -o "$f" -n 1 2>>"$WORK/pos.err"
  check "$plugin --output: first run prints the message" message "$(jq -r .action "$f")"
  timeout 30 "$WALCAST" tail -P $plugin -S "pos_${plugin}_file" --publication pos_pub -o "$f" --until-lsn "$end" 2>>"$WORK/pos.err"
  check "$plugin --output: the transaction after the message is kept" "message 100 101" \
    "$(jq -r 'if .action == "message" then "message" else .new.id end' "$f" | tr '\n' ' ' | sed 's/ $//')"
  # stdout: the slot itself is confirmed.
  o="$WORK/pos_$plugin.out"
  timeout 30 "$WALCAST" tail -P $plugin -S "pos_${plugin}_stdout" --publication pos_pub -n 1 >"$o" 2>>"$WORK/pos.err"
  timeout 30 "$WALCAST" tail -P $plugin -S "pos_${plugin}_stdout" --publication pos_pub --until-lsn "$end" >>"$o" 2>>"$WORK/pos.err"
  check "$plugin stdout: the transaction after the message is kept" "message 100 101" \
    "$(jq -r 'if .action == "message" then "message" else .new.id end' "$o" | tr '\n' ' ' | sed 's/ $//')"
done

# kill -9 in the middle of a 100,000-row transaction (the issue saw it with 50,000) that ends
# with a message. The message is sent first, so the tails checkpoint it while the transaction's
# rows are still arriving: each tail is killed as soon as its checkpoint (FILE.pos) moves, or
# once about a thousand of the transaction's rows are in FILE when the checkpoint moves later
# (the position of a message is written at the sink's next flush: on a fast machine that can
# be after the whole transaction) — before the transaction is complete either way.
declare -A TP
for plugin in pgoutput wal2json; do
  "$WALCAST" tail -P $plugin -S "pos_${plugin}_big" --publication pos_pub -o "$WORK/big_$plugin.jsonl" \
    2>>"$WORK/pos.err" &
  TP[$plugin]=$!; BG_PIDS+=("${TP[$plugin]}")
done
wait_for 20 bash -c "[ \"\$(psql -XAtc \"SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pos_%_big' AND active\")\" = 2 ]"
sleep 0.3
declare -A POS0 SIZE0
for plugin in pgoutput wal2json; do
  POS0[$plugin]=$(cat "$WORK/big_$plugin.jsonl.pos"); SIZE0[$plugin]=$(stat -c %s "$WORK/big_$plugin.jsonl")
done
sql <<'SQL' &
BEGIN;
INSERT INTO pos_big SELECT generate_series(1, 100000);
SELECT pg_logical_emit_message(false, 'k', 'big');
COMMIT;
SQL
txn=$!
declare -A KILLED=([none]=1)
for _ in $(seq 1 4000); do
  for plugin in pgoutput wal2json; do
    if [ -z "${KILLED[$plugin]:-}" ] && { [ "$(cat "$WORK/big_$plugin.jsonl.pos")" != "${POS0[$plugin]}" ] ||
        [ "$(stat -c %s "$WORK/big_$plugin.jsonl")" -gt $((SIZE0[$plugin] + 100000)) ]; }; then
      kill -9 "${TP[$plugin]}"; KILLED[$plugin]=1
    fi
  done
  [ "${#KILLED[@]}" = 3 ] && break
  sleep 0.002
done
wait "$txn"
end=$(current_lsn)
for plugin in pgoutput wal2json; do
  f="$WORK/big_$plugin.jsonl"
  kill -9 "${TP[$plugin]}" 2>/dev/null || true
  wait "${TP[$plugin]}" 2>/dev/null || true
  at_kill=$(grep -c '"table":"pos_big"' "$f" || true) # the last line may be cut
  check_true "$plugin: killed in the middle of the transaction ($at_kill rows written)" [ "$at_kill" -lt 100000 ]
  timeout 120 "$WALCAST" tail -P $plugin -S "pos_${plugin}_big" --publication pos_pub -o "$f" \
    --until-lsn "$end" 2>>"$WORK/pos.err"
  jq -r 'select(.table == "pos_big") | .new.id' "$f" >"$f.ids"
  check "$plugin: all 100,000 rows, once, after kill -9 and restart" "100000 100000" \
    "$(sort -un "$f.ids" | wc -l) $(wc -l <"$f.ids")"
done

# A checkpoint ahead of the server: the cluster is restored from a (cold) backup taken before
# the changes the checkpoint covers. The server's WAL now ends before FILE.pos: walcast must stop
# with one clear error naming both positions, and must not move the slot past the server's WAL.
sql -c "CREATE TABLE pos_r (id int PRIMARY KEY)" -c "CREATE PUBLICATION pos_rpub FOR TABLE pos_r" \
    -c "SELECT pg_create_logical_replication_slot('pos_restore', 'pgoutput')" >/dev/null
as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -m fast -w stop >/dev/null
as_pg cp -a "$WALCAST_PGDATA" "$WALCAST_HARNESS_DIR/backup"
as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -l "$WALCAST_HARNESS_DIR/pg.log" -w start >/dev/null
sql -c "INSERT INTO pos_r SELECT generate_series(1, 20000)"
end=$(current_lsn)
f="$WORK/restore.jsonl"
timeout 60 "$WALCAST" tail -S pos_restore --publication pos_rpub -o "$f" --until-lsn "$end" 2>>"$WORK/pos.err"
check "before the restore: all rows" 20000 "$(wc -l <"$f")"
ahead=$(sed -n 's/^lsn=//p' "$f.pos")
as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -m fast -w stop >/dev/null
as_pg rm -rf "$WALCAST_PGDATA"
as_pg mv "$WALCAST_HARNESS_DIR/backup" "$WALCAST_PGDATA"
as_pg "$WALCAST_PG_BIN/pg_ctl" -D "$WALCAST_PGDATA" -l "$WALCAST_HARNESS_DIR/pg.log" -w start >/dev/null
server=$(sql -c "SELECT pg_current_wal_flush_lsn()")
check "the server's WAL ends before the checkpoint ($server < $ahead)" t "$(sql -c "SELECT '$server'::pg_lsn < '$ahead'::pg_lsn")"
rc=0; timeout 20 "$WALCAST" tail -S pos_restore --publication pos_rpub -o "$f" >/dev/null 2>"$WORK/restore.err" || rc=$?
check "checkpoint ahead of the server: exit status 1" 1 "$rc"
check "one error line, naming both positions" 1 "$(grep -c "ERROR.*$ahead.*$server\|ERROR.*$server.*$ahead" "$WORK/restore.err")"
check "... and nothing else at error level" 1 "$(grep -c ERROR "$WORK/restore.err")"
check "the slot was not moved past the server's WAL" t \
  "$(sql -c "SELECT confirmed_flush_lsn <= pg_current_wal_flush_lsn() FROM pg_replication_slots WHERE slot_name = 'pos_restore'")"
cat "$WORK/restore.err" | sed 's/^/# /'

summary

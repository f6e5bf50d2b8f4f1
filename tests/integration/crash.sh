#!/usr/bin/env bash
# Exactly once across kill -9: while a load generator commits transactions of 1 to 2000 rows,
# `walcast tail --output` is killed with SIGKILL at random moments and restarted, and PostgreSQL
# itself is restarted once. At the end the file must hold every committed row exactly once, in
# commit order, for both decoders.
source "$(dirname "$0")/lib.sh"
source "$ROOT/tests/harness/harness.sh"
SEED=${WALCAST_SEED:-$RANDOM}
echo "# seed $SEED (replay with WALCAST_SEED=$SEED)"
RANDOM=$SEED
ROWS=${CRASH_ROWS:-30000}

sql <<'SQL'
CREATE TABLE crash_t (id bigint PRIMARY KEY, batch int NOT NULL, payload text);
CREATE PUBLICATION crash_pub FOR TABLE crash_t;
SQL
sql -c "SELECT pg_create_logical_replication_slot('crash_p', 'pgoutput')" \
    -c "SELECT pg_create_logical_replication_slot('crash_w', 'wal2json')" >/dev/null

# The load: transactions of random size, committed one after another through one psql.
load() {
  local id=0 batch=0 n
  while [ $id -lt "$ROWS" ]; do
    batch=$((batch + 1))
    case $((RANDOM % 10)) in
      0) n=$((500 + RANDOM % 1500)) ;;
      1|2|3) n=$((2 + RANDOM % 50)) ;;
      *) n=1 ;;
    esac
    [ $((id + n)) -gt "$ROWS" ] && n=$((ROWS - id))
    echo "INSERT INTO crash_t SELECT g, $batch, md5(g::text) FROM generate_series($((id + 1)), $((id + n))) g;"
    id=$((id + n))
    [ $((batch % 20)) -eq 0 ] && echo "SELECT pg_sleep(0.01);"
  done
}
load | psql -X -q -v ON_ERROR_STOP=1 >/dev/null &
LOAD=$!
BG_PIDS+=("$LOAD")

run_tail() { # plugin slot
  "$WALCAST" tail -P "$1" -S "$2" --publication crash_pub -t crash_t -o "$WORK/$2.jsonl" 2>>"$WORK/$2.err" &
  echo $!
}

kills=0
restarted=no
while kill -0 "$LOAD" 2>/dev/null; do
  p=$(run_tail pgoutput crash_p); w=$(run_tail wal2json crash_w)
  BG_PIDS+=("$p" "$w")
  sleep "0.$((3 + RANDOM % 7))"
  if [ "$restarted" = no ] && [ $kills -ge 2 ]; then
    harness_pg_restart immediate # a crash of the server too, with the tails connected
    restarted=yes
    sleep 0.5
  fi
  kill -9 "$p" "$w" 2>/dev/null || true
  wait "$p" "$w" 2>/dev/null || true
  kills=$((kills + 1))
done
wait "$LOAD"
check "load committed" "$ROWS" "$(sql -c 'SELECT count(*) FROM crash_t')"
check_true "tails were killed mid-stream several times ($kills)" [ $kills -ge 3 ]

end=$(current_lsn)
for slot in crash_p crash_w; do
  plugin=pgoutput; [ $slot = crash_w ] && plugin=wal2json
  timeout 300 "$WALCAST" tail -P $plugin -S $slot --publication crash_pub -t crash_t -o "$WORK/$slot.jsonl" \
    --until-lsn "$end" 2>>"$WORK/$slot.err"
  check "$plugin: final run exits 0" 0 $?
  jq -r '.new.id' "$WORK/$slot.jsonl" >"$WORK/$slot.ids"
  check "$plugin: every committed row exactly once" "$ROWS $ROWS 1 $ROWS" \
    "$(awk '{c[$1]++; n++} END {u=0; for (k in c) {u++}; min=1e18; max=0; for (k in c) {if (k+0<min) min=k+0; if (k+0>max) max=k+0}; printf "%d %d %d %d", n, u, min, max}' "$WORK/$slot.ids")"
  check "$plugin: in commit order" "" "$(sort -n -c "$WORK/$slot.ids" 2>&1 | head -1)"
done
summary

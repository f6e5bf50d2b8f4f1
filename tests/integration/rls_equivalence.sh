#!/usr/bin/env bash
# Proof of equivalence: for a seeded random workload (memberships, demotions, removals, privacy
# rules, event inserts/updates/deletes that move rows in and out of view), what `walcast tail --as`
# delivers to every user equals what PostgreSQL shows that user through RLS and the masking views,
# value for value (masks and decryption included). A failure prints its seed.
source "$(dirname "$0")/lib.sh"
HERE=$ROOT/tests/integration/equivalence
SEED=${WALCAST_SEED:-$((RANDOM % 1000))}
STEPS=${WALCAST_EQUIVALENCE_STEPS:-2500}
echo "# seed $SEED, $STEPS steps (replay with WALCAST_SEED=$SEED)"

sql -f "$HERE/workload.sql" >/dev/null
sql -v seed="0.$SEED" -f "$HERE/seed.sql" >/dev/null

# Event bodies: encrypted by walcast itself, bound to the event id; every 10th is unreadable
# (written with a key walcast does not have).
install -m 600 "$ROOT/tests/fixtures/keys/test.keys" "$WORK/keys"
printf '9 %s primary\n' "$(printf 'other key %s' "$SEED" | sha256sum | cut -c1-64)" >"$WORK/otherkeys"
chmod 600 "$WORK/otherkeys"
export WALCAST_KEYS_FILE=$WORK/keys
for g in $(seq 1 $((STEPS / 2 + 50))); do
  id=$(printf '%s' "body$SEED.$g" | md5sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
  printf '%s\t%s\tcall note %s: "quoted", ünïcode\n' "$id" "$id" "$g"
done >"$WORK/bodies.txt"
cut -f2- "$WORK/bodies.txt" | "$WALCAST" encrypt >"$WORK/good.hex"
cut -f2- "$WORK/bodies.txt" | WALCAST_KEYS_FILE=$WORK/otherkeys "$WALCAST" encrypt >"$WORK/bad.hex"
paste "$WORK/bodies.txt" "$WORK/good.hex" "$WORK/bad.hex" |
  awk -F'\t' '{bad = (NR % 10 == 0); printf "%s\t%s\t%s\t%s\n", $1, (bad ? $5 : $4), $3, (bad ? "t" : "f")}' |
  sed 's/\\x/\\\\x/' >"$WORK/bodies.tsv" # COPY text format: a literal backslash is doubled
sql -c "\\copy difftest.bodies (id, body, plain, bad) from '$WORK/bodies.tsv'"

# One tail per viewer, each on its own temporary slot whose snapshot gives the starting state.
mkdir -p "$WORK/out"
viewers=$(sql -c "SELECT uid FROM difftest.viewers ORDER BY uid")
for v in $viewers; do
  "$WALCAST" tail --as "$v" --policy "$ROOT/deploy/policy.ini" >"$WORK/out/$v.jsonl" 2>"$WORK/out/$v.err" &
  BG_PIDS+=($!)
done
# One more feed for one viewer on a durable slot, killed with SIGKILL again and again while the
# workload runs: its policy state travels with its checkpoints, so it must end up identical to
# that viewer's uninterrupted feed.
durable_viewer=$(sql -c "SELECT user_id FROM public.org_roles GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1")
durable_tail() {
  "$WALCAST" tail --as "$durable_viewer" -S equiv_durable -o "$WORK/durable.jsonl" \
    --policy "$ROOT/deploy/policy.ini" >/dev/null 2>>"$WORK/durable.err" &
  DURABLE=$!
}
durable_tail
state_checkpointed() { grep -q '^state=1' "$WORK/durable.jsonl.pos" 2>/dev/null; }
check_true "durable feed checkpointed its starting policy state" wait_for 30 state_checkpointed
n=$(echo "$viewers" | wc -l)
all_streaming() { [ "$(psql -XAtc "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walcast_tail_%' AND active")" -eq "$n" ]; }
check_true "$n viewers streaming" wait_for 60 all_streaming

sql -c "CALL difftest.run(0.$SEED, $STEPS)" &
WORKLOAD=$!
kills=0
while kill -0 "$WORKLOAD" 2>/dev/null; do
  sleep "0.$((2 + RANDOM % 8))"
  kill -9 "$DURABLE" 2>/dev/null || true
  wait "$DURABLE" 2>/dev/null || true
  kills=$((kills + 1))
  durable_tail
done
wait "$WORKLOAD"
end=$(current_lsn)
caught_up() {
  [ "$(psql -XAtc "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walcast_tail_%' AND confirmed_flush_lsn >= '$end'")" -eq "$n" ]
}
sql -c "SELECT pg_switch_wal()" >/dev/null
check_true "every viewer caught up" wait_for 300 caught_up
kill -9 "$DURABLE" 2>/dev/null || true
for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
timeout 120 "$WALCAST" tail --as "$durable_viewer" -S equiv_durable -o "$WORK/durable.jsonl" \
  --policy "$ROOT/deploy/policy.ini" --until-lsn "$end" 2>>"$WORK/durable.err"
check "durable feed: final run exits 0" 0 $?
check_true "durable feed was killed mid-workload ($kills times)" [ "$kills" -ge 2 ]
check "durable feed, killed $kills times, equals the uninterrupted one" "" \
  "$(diff "$WORK/out/$durable_viewer.jsonl" "$WORK/durable.jsonl" | head -5)"
check "durable feed never fell back to today's memberships" 0 "$(grep -c tail.state_current "$WORK/durable.err" || true)"
check "no viewer reported an error" "" "$(grep -l ERROR "$WORK"/out/*.err | head -3)"

sql -F $'\t' -c "SELECT step, xid, tbl, action, viewer, coalesce(expected::text, '') FROM difftest.oracle ORDER BY step, viewer" >"$WORK/oracle.tsv"
check "steps recorded" "$STEPS" "$(cut -f1 "$WORK/oracle.tsv" | sort -u | wc -l | awk -v s="$STEPS" '{print ($1 > s * 0.9) ? s : $1}')"
if python3 "$HERE/compare.py" "$WORK/oracle.tsv" "$WORK/out" "$SEED"; then
  check "walcast delivers exactly what RLS shows, to every viewer" ok ok
else
  check "walcast delivers exactly what RLS shows, to every viewer" ok "differences (see above; seed $SEED)"
fi
summary

#!/usr/bin/env bash
# The two decoders must turn the same WAL into identical normalized records. The fixed workload
# (tests/fixtures/workload*.sql: every action, common types, TOAST, NULLs, ALTER TABLE, messages)
# and a seeded random workload are read through a pgoutput slot and a wal2json slot by
# `walcast tail --with-types`; the outputs must be byte-identical.
source "$(dirname "$0")/lib.sh"
SEED=${WALCAST_SEED:-$RANDOM}
echo "# seed $SEED (replay with WALCAST_SEED=$SEED)"

sql -f "$ROOT/tests/fixtures/workload.sql" >/dev/null 2>&1
sql -c "SELECT pg_create_logical_replication_slot('diff_p', 'pgoutput')" \
    -c "SELECT pg_create_logical_replication_slot('diff_w', 'wal2json')" >/dev/null
sql -f "$ROOT/tests/fixtures/workload_changes.sql" >/dev/null

# A random workload over the same tables: many small transactions with random values of every type.
sql -c "SELECT setseed(($SEED % 1000) / 1000.0)" -c "
DO \$\$
DECLARE step int; k bigint;
BEGIN
  FOR step IN 1..400 LOOP
    k := 1000 + (random() * 300)::int;
    IF random() < 0.6 THEN
      INSERT INTO difftypes (id, small, i, n, f4, f8, ok, t, j, js, arr, tarr, ts, d, by, u, big, extra)
      VALUES (k, (random() * 1000)::int, (random() * 1e6)::int - 500000,
              round((random() * 1e6)::numeric, (random() * 6)::int),
              CASE WHEN random() < 0.2 THEN NULL ELSE (random() * 100)::real END,
              random() * 1e10 - 5e9, random() < 0.5,
              CASE WHEN random() < 0.1 THEN NULL ELSE md5(random()::text) || E'\n\"' END,
              jsonb_build_object('k', step, 'nested', jsonb_build_array(random() < 0.5, NULL, 'x')),
              json_build_object('i', step), ARRAY[step, step + 1], ARRAY['a' || step, NULL],
              now() - (random() * interval '1000 days'), current_date - step,
              decode(md5(step::text), 'hex'), md5(k::text)::uuid,
              CASE WHEN random() < 0.1 THEN (SELECT string_agg(md5((g + step)::text), '') FROM generate_series(1, 300) g) END,
              CASE WHEN random() < 0.5 THEN step END)
      ON CONFLICT (id) DO UPDATE SET t = EXCLUDED.t, n = EXCLUDED.n, ok = NOT difftypes.ok;
    ELSIF random() < 0.7 THEN
      UPDATE difftypes SET i = difftypes.i + 1, t = 'u' || step WHERE id = k;
    ELSE
      DELETE FROM difftypes WHERE id = k;
    END IF;
    COMMIT;
  END LOOP;
END \$\$;" >/dev/null
end=$(current_lsn)

timeout 120 "$WALCAST" tail -P pgoutput -S diff_p --publication walcast_diff --with-types --until-lsn "$end" \
  >"$WORK/p.jsonl" 2>"$WORK/p.err"
check "pgoutput tail exits 0" 0 $?
timeout 120 "$WALCAST" tail -P wal2json -S diff_w --with-types --until-lsn "$end" \
  >"$WORK/w.jsonl" 2>"$WORK/w.err"
check "wal2json tail exits 0" 0 $?

lines=$(wc -l <"$WORK/p.jsonl")
check_true "the workload produced changes ($lines)" [ "$lines" -gt 300 ]
check "identical normalized records" "" "$(diff "$WORK/p.jsonl" "$WORK/w.jsonl" | head -20)"
grep -v '"action":"message"' "$WORK/p.jsonl" >"$WORK/p.rows"
check "TOAST values filled or marked, never invented" 0 \
  "$(jq -c 'select(.new != null) | .new | to_entries[] | select(.value == "")' "$WORK/p.rows" | grep -c unchanged || true)"
check "ALTER TABLE followed (extra column appears)" true \
  "$(jq -s 'any(.[]; .new.extra == 99)' "$WORK/p.rows")"
check "messages decoded" 2 "$(grep -c '"action":"message"' "$WORK/p.jsonl")"
summary

#!/usr/bin/env bash
# Proof of equivalence with PostgreSQL's row-level security, per transaction (DESIGN.md, "What
# 'equivalent to RLS' means, testably"). What it proves, for one seeded random run:
#
#   For every transaction T of the workload and every subscriber U, `walcast tail` delivers to U
#   an INSERT or an UPDATE's new row exactly when the masking view walcast.<table>_masked, queried
#   as U (set role authenticated + request.jwt.claims), shows that row version after T's commit,
#   with exactly the values the view shows (masks and decryption included); a DELETE exactly when
#   the view showed U the row just before T, with those values (on the columns the table's replica
#   identity carries: the WAL has no others); an UPDATE's old row only to those who saw it before
#   T (it may be left out; an unchanged primary key alone may go to anyone). An old row that T
#   itself created (inserted then deleted, updated twice) is judged as of T's commit, like its
#   creation: U gets its INSERT and its DELETE, or neither. Nothing else reaches U.
#
# The workload (equivalence/workload.sql): transactions of one to four operations mixing policy
# changes (members added, removed, promoted, demoted, seats handed over to users new to the org,
# privacy rules added, changed, removed) and data changes (inserts, updates and deletes on all
# seven governed tables, orgs deleted with everything in them, orgs created) in either order,
# parts of them in savepoints that are rolled back or released; then hand-written transactions
# (equivalence/cases.sql) that change rows twice, use SQL savepoints, re-insert a roster and delete
# an org. The oracle is the database itself: every change is logged by a trigger; after each
# commit the views are queried as every subscriber for the new row versions, and, inside a
# subtransaction that undoes T and is then rolled back, for the old ones (workload.sql explains
# why that reconstruction is exact, and what is asserted for row versions no commit ever held).
#
# Subscribers: all 19 users by id (tail --as), and tokens (tail --jwt): an authenticated token,
# service_role (every row, unmasked), anon and a role the database does not know (both with a
# member's sub: PostgreSQL lets them read nothing here, so they must receive nothing). One more
# feed for one user runs on a durable slot and is killed with SIGKILL again and again; it must end
# up identical to that user's uninterrupted feed.
#
# A failure prints the seed (replay: WALCAST_SEED=N) and the differences in transaction order,
# each with the viewer, step, xid, LSN, expected and delivered values. WALCAST_EQUIVALENCE_STEPS
# sets the number of random transactions (default 1000; 300 in a sanitizer build).
# WALCAST_EQUIVALENCE_MODE=legacy runs what this test was before transactions were its unit: one
# operation per transaction, the old kinds of operations, users by id only, no hand-written cases.
source "$(dirname "$0")/lib.sh"
HERE=$ROOT/tests/integration/equivalence
SEED=${WALCAST_SEED:-$((RANDOM % 1000))}
default_steps=1000
if ldd "$WALCAST" 2>/dev/null | grep -q libasan; then default_steps=300; fi
STEPS=${WALCAST_EQUIVALENCE_STEPS:-$default_steps}
LEGACY=false
[ "${WALCAST_EQUIVALENCE_MODE:-}" = legacy ] && LEGACY=true
echo "# seed $SEED, $STEPS transactions$($LEGACY && echo ', legacy mode') (replay with WALCAST_SEED=$SEED)"

sql -f "$HERE/workload.sql" >/dev/null
sql -v seed="0.$SEED" -f "$HERE/seed.sql" >/dev/null
if $LEGACY; then sql -c "DELETE FROM difftest.viewers WHERE name <> uid::text OR role <> 'authenticated'"; fi

# Event bodies: encrypted by walcast itself, bound to the event id; every 10th is unreadable
# (written with a key walcast does not have).
install -m 600 "$ROOT/tests/fixtures/keys/test.keys" "$WORK/keys"
printf '9 %s primary\n' "$(printf 'other key %s' "$SEED" | sha256sum | cut -c1-64)" >"$WORK/otherkeys"
chmod 600 "$WORK/otherkeys"
export WALCAST_KEYS_FILE=$WORK/keys
for g in $(seq 1 $((STEPS + 150))); do
  id=$(printf '%s' "body$SEED.$g" | md5sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
  printf '%s\t%s\tcall note %s: "quoted", ünïcode\n' "$id" "$id" "$g"
done >"$WORK/bodies.txt"
cut -f2- "$WORK/bodies.txt" | "$WALCAST" encrypt >"$WORK/good.hex"
cut -f2- "$WORK/bodies.txt" | WALCAST_KEYS_FILE=$WORK/otherkeys "$WALCAST" encrypt >"$WORK/bad.hex"
paste "$WORK/bodies.txt" "$WORK/good.hex" "$WORK/bad.hex" |
  awk -F'\t' '{bad = (NR % 10 == 0); printf "%s\t%s\t%s\t%s\n", $1, (bad ? $5 : $4), $3, (bad ? "t" : "f")}' |
  sed 's/\\x/\\\\x/' >"$WORK/bodies.tsv" # COPY text format: a literal backslash is doubled
sql -c "\\copy difftest.bodies (id, body, plain, bad) from '$WORK/bodies.tsv'"

# Tokens for the --jwt subscribers (HS256, auth.jwt_secret).
export WALCAST_AUTH_JWT_SECRET="equivalence-secret-with-enough-length-for-hs256-$SEED"
jwt() { jwt_hs256 "$@"; }
exp=$(($(date +%s) + 7200))

# One tail per subscriber, each on its own temporary slot whose snapshot gives the starting state.
mkdir -p "$WORK/out"
declare -A TAIL_PID
while IFS='|' read -r name uid role; do
  if [ "$role" = authenticated ] && [ "$name" = "$uid" ]; then
    who=(--as "$uid")
  elif [ -n "$uid" ]; then
    who=(--jwt "$(jwt "{\"sub\":\"$uid\",\"role\":\"$role\",\"aud\":\"authenticated\",\"exp\":$exp}")")
  else
    who=(--jwt "$(jwt "{\"role\":\"$role\",\"aud\":\"authenticated\",\"exp\":$exp}")")
  fi
  "$WALCAST" tail "${who[@]}" --policy "$ROOT/deploy/policy.ini" >"$WORK/out/$name.jsonl" 2>"$WORK/out/$name.err" &
  BG_PIDS+=($!)
  TAIL_PID[$name]=$!
done < <(sql -F '|' -c "SELECT name, coalesce(uid::text, ''), role FROM difftest.viewers ORDER BY name")
# anon and roles the database does not know: walcast may refuse them at start (saying why)
# instead of streaming nothing; every other subscriber must stream.
denied=$(sql -c "SELECT name FROM difftest.viewers WHERE role NOT IN ('authenticated', 'service_role') ORDER BY name")
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
alive_tails() {
  local name k=0
  for name in "${!TAIL_PID[@]}"; do kill -0 "${TAIL_PID[$name]}" 2>/dev/null && k=$((k + 1)); done
  echo "$k"
}
active_slots() { psql -XAtc "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walcast_tail_%' AND active"; }
all_streaming() { [ "$(active_slots)" -eq "$(alive_tails)" ] && [ "$(active_slots)" -ge "$((${#TAIL_PID[@]} - $(echo "$denied" | wc -l)))" ]; }
check_true "${#TAIL_PID[@]} subscribers streaming" wait_for 90 all_streaming
n=$(alive_tails)

started=$SECONDS
sql -c "CALL difftest.run(0.$SEED, $STEPS, $LEGACY)" &
WORKLOAD=$!
kill_while_running "$WORKLOAD" DURABLE durable_tail 0 2 9
wait "$WORKLOAD"
CASES=13
if $LEGACY; then CASES=0; else sql -v seed="$SEED" -f "$HERE/cases.sql" >/dev/null; fi
echo "# workload and cases: $((SECONDS - started)) s"
end=$(current_lsn)
caught_up() {
  [ "$(psql -XAtc "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'walcast_tail_%' AND confirmed_flush_lsn >= '$end'")" -ge "$n" ]
}
sql -c "SELECT pg_switch_wal()" >/dev/null
check_true "every subscriber caught up" wait_for 300 caught_up
kill -9 "$DURABLE" 2>/dev/null || true
for name in $denied; do
  if ! kill -0 "${TAIL_PID[$name]}" 2>/dev/null; then
    check "$name: refused at start, saying so" 1 "$(grep -ci 'role' "$WORK/out/$name.err" | awk '{print ($1 > 0)}')"
  fi
done
for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
rc=0
timeout 120 "$WALCAST" tail --as "$durable_viewer" -S equiv_durable -o "$WORK/durable.jsonl" \
  --policy "$ROOT/deploy/policy.ini" --until-lsn "$end" 2>>"$WORK/durable.err" || rc=$?
check "durable feed: final run exits 0" 0 "$rc"
check_true "durable feed was killed mid-workload ($KILLS times)" [ "$KILLS" -ge 2 ]
check "durable feed, killed $KILLS times, equals the uninterrupted one" "" \
  "$(diff "$WORK/out/$durable_viewer.jsonl" "$WORK/durable.jsonl" | head -5)"
check "durable feed never fell back to today's memberships" 0 "$(grep -c tail.state_current "$WORK/durable.err" || true)"
check "no subscriber reported an error" "" "$(grep -l ERROR "$WORK"/out/*.err | head -3)"

check "every transaction judged" "$((STEPS + CASES))" "$(sql -c "SELECT count(*) FROM difftest.steps")"
check "the oracle's copy of the policy agrees with the views on every committed row version" "" \
  "$(sql -c "SELECT step, tbl, pk, viewer, view_row, copy_row FROM difftest.mismatch LIMIT 3")"
# What the run covered: every governed table inserted, updated and deleted, and the kinds of
# transactions this test exists for.
sql -c "SELECT tbl || ' ' || action || ': ' || count(*) FROM difftest.changes GROUP BY tbl, action ORDER BY tbl, action" | paste -sd, | sed 's/^/# changes: /'
$LEGACY || check "every governed table had inserts, updates and deletes" "" \
  "$(sql -c "SELECT string_agg(t || ' ' || a, ', ') FROM unnest(array['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events', 'audit_log', 'sync_health']) t, unnest(array['insert', 'update', 'delete']) a
             WHERE NOT EXISTS (SELECT 1 FROM difftest.changes c WHERE c.tbl = t AND c.action = a)")"
for kind in 'seat handover' 'org delete' 'rolled back' 'released' 'member removed' 'rule'; do
  $LEGACY || check "random transactions with '$kind'" 1 "$(sql -c "SELECT (count(*) > 0)::int FROM difftest.steps WHERE step <= $STEPS AND label LIKE '%$kind%'")"
done
echo "# multi-statement transactions mixing policy and data changes: $(sql -c "SELECT count(*) FROM difftest.steps s WHERE step <= $STEPS
  AND EXISTS (SELECT 1 FROM difftest.changes c WHERE c.xid = s.xid AND c.tbl IN ('org_roles', 'privacy_rules'))
  AND EXISTS (SELECT 1 FROM difftest.changes c WHERE c.xid = s.xid AND c.tbl NOT IN ('org_roles', 'privacy_rules'))")"

sql -F $'\t' -c "SELECT step, xid, seq, tbl, action, pk, viewer, coalesce(expected::text, ''), coalesce(expected_alt::text, ''),
                        coalesce(old_expected::text, ''), coalesce(old_alt::text, '')
                   FROM difftest.oracle ORDER BY step, seq, viewer" >"$WORK/oracle.tsv"
sql -F $'\t' -c "SELECT step, coalesce(xid::text, ''), coalesce(label, ''), lsn FROM difftest.steps ORDER BY step" >"$WORK/steps.tsv"
# The columns each table's replica identity carries: a DELETE's old row has only these.
sql -F $'\t' -c "SELECT c.relname, CASE c.relreplident WHEN 'f' THEN '*' ELSE coalesce((
                   SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                    WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))), '') END
                   FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'" >"$WORK/identity.tsv"
if python3 "$HERE/compare.py" "$WORK" "$SEED"; then
  check "walcast delivers exactly what RLS shows, per transaction, to every subscriber" ok ok
else
  check "walcast delivers exactly what RLS shows, per transaction, to every subscriber" ok "differences (see above; seed $SEED)"
fi
summary

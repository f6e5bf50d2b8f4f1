#!/usr/bin/env bash
# Replica identities and the schema's guards (deploy/migrations/20261202000100_replica_identity.sql):
#  - every governed table's replica identity carries what its rules need, so the DELETE of an
#    audit_log or sync_health row reaches the admins of its org who saw it (oracle: the masking
#    view as that admin just before the delete) and nobody else;
#  - `walcast tail --as` refuses to start when a governed table's identity falls short, and names
#    the table, the missing column and the ALTER TABLE that fixes it; an identity USING INDEX
#    that carries the needed columns is accepted;
#  - sync_health.lag_s refuses NaN and ±Infinity (wal2json would deliver them as null).
#
#   tests/harness/harness.sh run -- tests/integration/replident.sh
source "$(dirname "$0")/lib.sh"
POLICY="$ROOT/deploy/policy.ini"

# as USER SQL: SQL as an authenticated user (the masking views are security_invoker).
as() {
  sql -c "set role authenticated; set request.jwt.claims = '{\"sub\":\"$1\",\"role\":\"authenticated\"}'; $2"
}

# --- catalog -----------------------------------------------------------------------------------
check "replica identities after the migrations" \
  "audit_log:f,contacts:f,events:f,org_roles:f,orgs:d,privacy_rules:f,sync_health:f" \
  "$(sql -c "select string_agg(relname || ':' || relreplident::text, ',' order by relname) from pg_class
             where relnamespace = 'public'::regnamespace and relkind = 'r'")"

# --- deletes of audit_log and sync_health reach the admins who saw the rows -----------------------
org=$(sql -c "INSERT INTO orgs (name) VALUES ('replident org') RETURNING id")
other=$(sql -c "INSERT INTO orgs (name) VALUES ('other org') RETURNING id")
admin=$(sql -c "SELECT gen_random_uuid()")
member=$(sql -c "SELECT gen_random_uuid()")
outsider=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles VALUES ('$org', '$admin', 'admin'), ('$org', '$member', 'member'),
        ('$other', '$outsider', 'admin')" >/dev/null
audit=$(sql -c "INSERT INTO audit_log (org_id, action) VALUES ('$org', 'replident-test') RETURNING id")
health=$(sql -c "INSERT INTO sync_health (org_id, source, status, lag_s) VALUES ('$org', 'crm', 'ok', 1.5) RETURNING id")
for s in ri_admin ri_member ri_outsider; do
  sql -c "SELECT pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null
done
# The oracle, just before the deletes: who sees the rows through the masking views.
seen_audit_admin=$(as "$admin" "select count(*) from walcast.audit_log_masked where id = $audit")
seen_health_admin=$(as "$admin" "select count(*) from walcast.sync_health_masked where id = $health")
seen_audit_member=$(as "$member" "select count(*) from walcast.audit_log_masked where id = $audit")
seen_audit_outsider=$(as "$outsider" "select count(*) from walcast.audit_log_masked where id = $audit")
check "oracle: the admin sees both rows" "1 1" "$seen_audit_admin $seen_health_admin"
check "oracle: a member and an admin of another org do not" "0 0" "$seen_audit_member $seen_audit_outsider"
sql -c "DELETE FROM audit_log WHERE id = $audit" >/dev/null
sql -c "DELETE FROM sync_health WHERE id = $health" >/dev/null
end=$(current_lsn)

deletes() { # slot user: "table:id" of every delete the user receives (the output kept in $WORK/$1.jsonl)
  "$WALCAST" tail -S "$1" --as "$2" --policy "$POLICY" --until-lsn "$end" >"$WORK/$1.jsonl" 2>"$WORK/replident.err"
  jq -r 'select(.action == "delete") | .table + ":" + (.old.id | tostring)' "$WORK/$1.jsonl" | sort | paste -sd' ' -
}
check "admin receives both deletes" "audit_log:$audit sync_health:$health" "$(deletes ri_admin "$admin")"
check "the deletes carry the org" "$org $org" \
  "$(jq -r 'select(.action == "delete") | .old.org_id' "$WORK/ri_admin.jsonl" | paste -sd' ' -)"
check "a member receives neither" "" "$(deletes ri_member "$member")"
check "an admin of another org receives neither" "" "$(deletes ri_outsider "$outsider")"

# --- the startup check -----------------------------------------------------------------------------
sql -c "SELECT pg_create_logical_replication_slot('ri_check', 'pgoutput')" >/dev/null
end=$(current_lsn)
start() { # runs tail --as admin; prints its exit code
  local rc=0
  timeout 60 "$WALCAST" tail -S ri_check --as "$admin" --policy "$POLICY" --until-lsn "$end" \
    >/dev/null 2>"$WORK/replident.err" || rc=$?
  echo "$rc"
}
check "starts with the migrated identities" 0 "$(start)"
sql -c "ALTER TABLE public.audit_log REPLICA IDENTITY DEFAULT" >/dev/null
sql -c "ALTER TABLE public.events REPLICA IDENTITY NOTHING" >/dev/null
check "refuses to start when audit_log's identity is its primary key" 1 "$(start)"
err=$(cat "$WORK/replident.err")
check "names audit_log, the missing column and the fix" 1 \
  "$(grep -c 'replident.insufficient table public.audit_log: .*does not carry org_id.*ALTER TABLE public.audit_log REPLICA IDENTITY FULL' <<<"$err")"
check "names events and all its rule columns" 1 \
  "$(grep -c 'table public.events: replica identity NOTHING does not carry id, org_id, contact_id, user_id' <<<"$err")"
check "does not name the tables that are fine" 0 "$(grep -c 'public.contacts\|public.orgs' <<<"$err")"
sql -c "ALTER TABLE public.events REPLICA IDENTITY FULL" >/dev/null
sql -c "CREATE UNIQUE INDEX audit_log_id_org_id_key ON public.audit_log (id, org_id)" >/dev/null
sql -c "ALTER TABLE public.audit_log REPLICA IDENTITY USING INDEX audit_log_id_org_id_key" >/dev/null
check "starts with audit_log USING INDEX (id, org_id)" 0 "$(start)"
sql -c "DROP INDEX public.audit_log_id_org_id_key" >/dev/null
check "refuses once that index is dropped" 1 "$(start)"
sql -c "ALTER TABLE public.audit_log REPLICA IDENTITY FULL" >/dev/null
check "starts again with FULL" 0 "$(start)"

# --- sync_health.lag_s is finite or NULL ---------------------------------------------------------
lag() { # value: "ok" when the insert succeeds, else the constraint it violated
  psql -X -q -At -c "INSERT INTO sync_health (org_id, source, status, lag_s) VALUES ('$org', 'x', 'ok', $1)" \
    >/dev/null 2>"$WORK/lag.err" && echo ok || grep -o 'sync_health_lag_s_finite' "$WORK/lag.err" | head -1
}
check "lag_s NaN refused" sync_health_lag_s_finite "$(lag "'NaN'")"
check "lag_s Infinity refused" sync_health_lag_s_finite "$(lag "'Infinity'")"
check "lag_s -Infinity refused" sync_health_lag_s_finite "$(lag "'-Infinity'")"
check "lag_s finite accepted" ok "$(lag 0.25)"
check "lag_s NULL (unknown) accepted" ok "$(lag NULL)"
check "an update to NaN refused" 1 "$(psql -X -q -At -c "UPDATE sync_health SET lag_s = 'NaN' WHERE org_id = '$org'" \
  >/dev/null 2>&1 && echo 0 || echo 1)"
summary

#!/usr/bin/env bash
# Integration test of the platform's row-level security policies (deploy/migrations): seeds a
# small fixed dataset as the superuser, then reads and writes as each kind of user (set role
# authenticated + request.jwt.claims), as service_role, anon and walcast_replicator, and asserts
# exactly which rows each one sees. These policies are the oracle walcast's own filter is tested
# against, so they are pinned down here row by row.
#
#   tests/harness/harness.sh run --no-redis -- tests/integration/rls.sh
#
# Needs the harness environment (PG* variables of a superuser session, migrations applied).
# Prints one line per failed check and ends with "N passed, M failed"; exits 1 on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

PASSED=0
FAILED=0

# check NAME EXPECTED ACTUAL
check() {
  if [ "$2" == "$3" ]; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    printf 'FAIL %s\n  expected: [%s]\n  actual:   [%s]\n' "$1" "$2" "$3"
  fi
}

# The fixed dataset uses uuids whose last three hex digits are their label (0a0, 1a3, ea5...),
# so that queries can return short, readable labels.
id() { printf '00000000-0000-4000-8000-000000000%s' "$1"; }

sql() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# claims_sql USER: the session preamble for USER ("-" = no claims setting at all, "" = empty).
claims_sql() {
  case "$1" in
    -) echo "set role authenticated;" ;;
    '') echo "set role authenticated; set request.jwt.claims = '';" ;;
    *) echo "set role authenticated; set request.jwt.claims = '{\"sub\":\"$(id "$1")\",\"role\":\"authenticated\"}';" ;;
  esac
}

# Label expression per table: what identifies a row in the expected lists.
label_of() {
  case "$1" in
    org_roles) echo "right(org_id::text, 3) || ':' || right(user_id::text, 3)" ;;
    audit_log) echo "action" ;;
    sync_health) echo "source" ;;
    *) echo "right(id::text, 3)" ;;
  esac
}

# seen PREAMBLE TABLE: the sorted, comma-separated labels of the rows of TABLE visible after PREAMBLE.
seen() {
  local lbl
  lbl=$(label_of "$2")
  sql -c "$1 select coalesce(string_agg($lbl, ',' order by $lbl), '') from public.$2;"
}

# as USER TABLE: rows of TABLE that USER (a label, "-" or "") sees.
as() { seen "$(claims_sql "$1")" "$2"; }

# try PREAMBLE DML: runs DML after PREAMBLE in a transaction that is rolled back; prints the
# command tag ("INSERT 0 1", "DELETE 0"), or "denied" (privilege), "rls" (policy check) or the
# error message.
try() {
  local out rc=0
  out=$(printf 'begin;\n%s\n%s;\nrollback;\n' "$1" "$2" | psql -X -v ON_ERROR_STOP=1 -At 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    grep -E '^(INSERT|UPDATE|DELETE) ' <<<"$out" | tail -n 1
  elif grep -q 'permission denied' <<<"$out"; then
    echo denied
  elif grep -q 'row-level security' <<<"$out"; then
    echo rls
  else
    grep -m1 'ERROR' <<<"$out" || echo "failed: $out"
  fi
}
try_as() { try "$(claims_sql "$1")" "$2"; }

# --- migrations apply a second time without error (Supabase-style reruns) ----------------------
rerun=ok
for f in "$ROOT"/deploy/migrations/*.sql; do
  psql -X -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null 2>"${WALCAST_HARNESS_DIR:-/tmp}/rls-rerun.log" ||
    { rerun="$(basename "$f"): $(cat "${WALCAST_HARNESS_DIR:-/tmp}/rls-rerun.log")"; break; }
done
check "migrations re-apply cleanly" ok "$rerun"

# --- catalog: what walcast relies on ------------------------------------------------------------
check "publication walcast has the seven tables" \
  "audit_log,contacts,events,org_roles,orgs,privacy_rules,sync_health" \
  "$(sql -c "select string_agg(tablename, ',' order by tablename) from pg_publication_tables where pubname = 'walcast'")"
check "replica identity FULL on every table but orgs (its key is its org column)" \
  "audit_log:f,contacts:f,events:f,org_roles:f,orgs:d,privacy_rules:f,sync_health:f" \
  "$(sql -c "select string_agg(relname || ':' || relreplident::text, ',' order by relname) from pg_class
             where relnamespace = 'public'::regnamespace and relkind = 'r'")"
check "RLS enabled and forced on every table" "7:7" \
  "$(sql -c "select count(*) filter (where relrowsecurity) || ':' || count(*) filter (where relforcerowsecurity)
             from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'")"
check "anon has no privilege on any platform table" "0" \
  "$(sql -c "select count(*) from pg_class c, unnest(array['SELECT','INSERT','UPDATE','DELETE']) p
             where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
               and has_table_privilege('anon', c.oid, p)")"
check "walcast_replicator: login replication, not superuser, no bypassrls" "t|t|f|f" \
  "$(sql -c "select rolcanlogin, rolreplication, rolsuper, rolbypassrls from pg_roles where rolname = 'walcast_replicator'")"
check "service_role bypasses RLS" "t" \
  "$(sql -c "select rolbypassrls from pg_roles where rolname = 'service_role'")"
check "auth.uid() is NULL without claims, with empty claims, and without sub" "t|t|t" \
  "$(sql -c "select auth.uid() is null;" -c "set request.jwt.claims = ''; select auth.uid() is null;" \
         -c "set request.jwt.claims = '{\"role\":\"anon\"}'; select auth.uid() is null" | paste -sd'|')"
check "auth.uid() and auth.jwt() read request.jwt.claims" "$(id 1a1)|authenticated" \
  "$(sql -c "set request.jwt.claims = '{\"sub\":\"$(id 1a1)\",\"role\":\"authenticated\"}';
             select auth.uid() || '|' || (auth.jwt() ->> 'role')")"

# --- the fixed dataset --------------------------------------------------------------------------
# Org A (0a0): owner 1a1, admin 1a2, analyst 1a3, member 1a4, viewer 1a5.
# Org B (0b0): owner 1b1, and 1a3 as a viewer. User 1f0 belongs to no org.
# Contacts: ca1 no rule, ca2 viewer rule, ca3 analyst rule, ca4 admin rule, ca5 owner rule (A);
#           cb1 no rule, cb2 member rule (B).
# Events (A): ea1 no contact; ea2 ca1; ea3 ca2; ea4 ca3; ea5 ca4 handled by viewer 1a5;
#             ea6 ca5 handled by member 1a4; ea7 ca5 handled by 1b1 (not a member of A);
#             ea8 ca3 handled by 1f0 (member of nothing).
# Events (B): eb1 cb1 handled by 1b1; eb2 cb2.
sql >/dev/null <<SQL
begin;
insert into public.orgs (id, name) values ('$(id 0a0)', 'Org A'), ('$(id 0b0)', 'Org B');
insert into public.org_roles (org_id, user_id, role) values
  ('$(id 0a0)', '$(id 1a1)', 'owner'), ('$(id 0a0)', '$(id 1a2)', 'admin'),
  ('$(id 0a0)', '$(id 1a3)', 'analyst'), ('$(id 0a0)', '$(id 1a4)', 'member'),
  ('$(id 0a0)', '$(id 1a5)', 'viewer'),
  ('$(id 0b0)', '$(id 1b1)', 'owner'), ('$(id 0b0)', '$(id 1a3)', 'viewer');
insert into public.contacts (id, org_id, name, phone) values
  ('$(id ca1)', '$(id 0a0)', 'Ada',   '+15550000001'), ('$(id ca2)', '$(id 0a0)', 'Bob',  '+15550000002'),
  ('$(id ca3)', '$(id 0a0)', 'Cy',    '+15550000003'), ('$(id ca4)', '$(id 0a0)', 'Dee',  '+15550000004'),
  ('$(id ca5)', '$(id 0a0)', 'Eve',   '+15550000005'), ('$(id cb1)', '$(id 0b0)', 'Finn', '+15550000006'),
  ('$(id cb2)', '$(id 0b0)', 'Gus',   '+15550000007');
insert into public.privacy_rules (id, org_id, contact_id, min_role) values
  ('$(id da2)', '$(id 0a0)', '$(id ca2)', 'viewer'), ('$(id da3)', '$(id 0a0)', '$(id ca3)', 'analyst'),
  ('$(id da4)', '$(id 0a0)', '$(id ca4)', 'admin'),  ('$(id da5)', '$(id 0a0)', '$(id ca5)', 'owner'),
  ('$(id db2)', '$(id 0b0)', '$(id cb2)', 'member');
insert into public.events (id, org_id, contact_id, user_id, kind, direction, status, duration_s, from_number, to_number) values
  ('$(id ea1)', '$(id 0a0)', null,        null,        'call', 'inbound',  'missed',    0,    '+15559990001', '+15551110001'),
  ('$(id ea2)', '$(id 0a0)', '$(id ca1)', null,        'sms',  'inbound',  'received',  null, '+15550000001', '+15551110001'),
  ('$(id ea3)', '$(id 0a0)', '$(id ca2)', null,        'call', 'outbound', 'completed', 61,   '+15551110001', '+15550000002'),
  ('$(id ea4)', '$(id 0a0)', '$(id ca3)', null,        'call', 'inbound',  'completed', 12,   '+15550000003', '+15551110001'),
  ('$(id ea5)', '$(id 0a0)', '$(id ca4)', '$(id 1a5)', 'sms',  'outbound', 'delivered', null, '+15551110001', '+15550000004'),
  ('$(id ea6)', '$(id 0a0)', '$(id ca5)', '$(id 1a4)', 'call', 'inbound',  'completed', 300,  '+15550000005', '+15551110001'),
  ('$(id ea7)', '$(id 0a0)', '$(id ca5)', '$(id 1b1)', 'sms',  'inbound',  'received',  null, '+15550000005', '+15551110001'),
  ('$(id ea8)', '$(id 0a0)', '$(id ca3)', '$(id 1f0)', 'call', 'outbound', 'failed',    0,    '+15551110001', '+15550000003'),
  ('$(id eb1)', '$(id 0b0)', '$(id cb1)', '$(id 1b1)', 'call', 'inbound',  'completed', 45,   '+15550000006', '+15552220001'),
  ('$(id eb2)', '$(id 0b0)', '$(id cb2)', null,        'sms',  'outbound', 'sent',      null, '+15552220001', '+15550000007');
insert into public.audit_log (org_id, actor_id, action, target_table, target_id) values
  ('$(id 0a0)', '$(id 1a1)', 'a-1', 'org_roles', '$(id 1a5)'),
  ('$(id 0a0)', '$(id 1a2)', 'a-2', 'privacy_rules', '$(id da4)'),
  ('$(id 0b0)', '$(id 1b1)', 'b-1', 'contacts', '$(id cb2)');
insert into public.sync_health (org_id, source, status, lag_s) values
  ('$(id 0a0)', 'src-a', 'ok', 0.5), ('$(id 0b0)', 'src-b', 'degraded', 42);
commit;
SQL

ALL_EVENTS="ea1,ea2,ea3,ea4,ea5,ea6,ea7,ea8,eb1,eb2"

# --- events -------------------------------------------------------------------------------------
check "events: owner sees every event of A"                  "ea1,ea2,ea3,ea4,ea5,ea6,ea7,ea8" "$(as 1a1 events)"
check "events: admin misses owner-only ea6, ea7"             "ea1,ea2,ea3,ea4,ea5,ea8"         "$(as 1a2 events)"
check "events: analyst (viewer in B) misses admin+, B member+" "ea1,ea2,ea3,ea4,ea8,eb1"       "$(as 1a3 events)"
check "events: member sees no-rule, viewer rule, and handled ea6" "ea1,ea2,ea3,ea6"             "$(as 1a4 events)"
check "events: viewer sees no-rule, viewer rule, and handled ea5" "ea1,ea2,ea3,ea5"             "$(as 1a5 events)"
check "events: handler ea7 outside A sees only B's events"   "eb1,eb2"                         "$(as 1b1 events)"
check "events: non-member (handler of ea8) sees nothing"      ""                                "$(as 1f0 events)"
check "events: no claims setting sees nothing"                ""                                "$(as - events)"
check "events: empty claims sees nothing"                     ""                                "$(as '' events)"

# --- contacts -----------------------------------------------------------------------------------
check "contacts: owner"    "ca1,ca2,ca3,ca4,ca5" "$(as 1a1 contacts)"
check "contacts: admin"    "ca1,ca2,ca3,ca4"     "$(as 1a2 contacts)"
check "contacts: analyst"  "ca1,ca2,ca3,cb1"     "$(as 1a3 contacts)"
check "contacts: member"   "ca1,ca2"             "$(as 1a4 contacts)"
check "contacts: viewer"   "ca1,ca2"             "$(as 1a5 contacts)"
check "contacts: owner B"  "cb1,cb2"             "$(as 1b1 contacts)"
check "contacts: nobody"   ""                    "$(as 1f0 contacts)"

# --- admin-only tables --------------------------------------------------------------------------
for t in privacy_rules audit_log sync_health; do
  case "$t" in
    privacy_rules) a="da2,da3,da4,da5"; b="db2" ;;
    audit_log) a="a-1,a-2"; b="b-1" ;;
    sync_health) a="src-a"; b="src-b" ;;
  esac
  check "$t: owner"   "$a" "$(as 1a1 "$t")"
  check "$t: admin"   "$a" "$(as 1a2 "$t")"
  check "$t: analyst (viewer in B)" "" "$(as 1a3 "$t")"
  check "$t: member"  ""   "$(as 1a4 "$t")"
  check "$t: viewer"  ""   "$(as 1a5 "$t")"
  check "$t: owner B" "$b" "$(as 1b1 "$t")"
  check "$t: nobody"  ""   "$(as 1f0 "$t")"
done

# --- roster and orgs ----------------------------------------------------------------------------
ROSTER_A="0a0:1a1,0a0:1a2,0a0:1a3,0a0:1a4,0a0:1a5"
ROSTER_B="0b0:1a3,0b0:1b1"
check "org_roles: viewer sees the whole roster of A"  "$ROSTER_A"           "$(as 1a5 org_roles)"
check "org_roles: owner sees the whole roster of A"   "$ROSTER_A"           "$(as 1a1 org_roles)"
check "org_roles: member of A and B sees both"        "$ROSTER_A,$ROSTER_B" "$(as 1a3 org_roles)"
check "org_roles: owner B sees only B"                "$ROSTER_B"           "$(as 1b1 org_roles)"
check "org_roles: nobody sees nothing"                ""                    "$(as 1f0 org_roles)"
check "orgs: viewer of A"     "0a0"     "$(as 1a5 orgs)"
check "orgs: member of A, B"  "0a0,0b0" "$(as 1a3 orgs)"
check "orgs: nobody"          ""        "$(as 1f0 orgs)"

# --- role changes take effect at once, in the same session --------------------------------------
# One session as 1a3: read, change the role as the superuser, read again. Rolled back at the end.
as_1a3="set role authenticated; set request.jwt.claims = '{\"sub\":\"$(id 1a3)\"}';"
events_q="select coalesce(string_agg(right(id::text, 3), ',' order by right(id::text, 3)), '') from public.events;"
mapfile -t steps < <(sql <<SQL
begin;
$as_1a3 $events_q
reset role; update public.org_roles set role = 'viewer' where org_id = '$(id 0a0)' and user_id = '$(id 1a3)';
$as_1a3 $events_q
reset role; update public.org_roles set role = 'owner' where org_id = '$(id 0a0)' and user_id = '$(id 1a3)';
$as_1a3 $events_q
reset role; delete from public.org_roles where org_id = '$(id 0a0)' and user_id = '$(id 1a3)';
$as_1a3 $events_q
$as_1a3 select coalesce(string_agg(right(id::text, 3), ',' order by right(id::text, 3)), '') from public.contacts;
rollback;
SQL
)
check "role change: before, as analyst"        "ea1,ea2,ea3,ea4,ea8,eb1"                     "${steps[0]-}"
check "role change: demoted to viewer"         "ea1,ea2,ea3,eb1"                             "${steps[1]-}"
check "role change: promoted to owner"         "ea1,ea2,ea3,ea4,ea5,ea6,ea7,ea8,eb1"         "${steps[2]-}"
check "role change: removed from A"            "eb1"                                         "${steps[3]-}"
check "role change: removed from A, contacts"  "cb1"                                         "${steps[4]-}"

# A handling user outside the org sees the event the moment they join, even as a viewer.
mapfile -t steps < <(sql <<SQL
begin;
insert into public.org_roles (org_id, user_id, role) values ('$(id 0a0)', '$(id 1b1)', 'viewer');
set role authenticated; set request.jwt.claims = '{"sub":"$(id 1b1)"}'; $events_q
rollback;
SQL
)
check "handling user joins A as viewer: sees handled owner-only ea7" "ea1,ea2,ea3,ea7,eb1,eb2" "${steps[0]-}"

# A privacy rule change applies at once: lifting ca5's owner rule shows ea6, ea7 to the admin.
check "privacy rule lifted: admin sees ea6, ea7" "ea1,ea2,ea3,ea4,ea5,ea6,ea7,ea8" \
  "$(sql <<SQL
begin;
update public.privacy_rules set min_role = 'admin' where contact_id = '$(id ca5)';
$(claims_sql 1a2) $events_q
rollback;
SQL
)"

# --- service_role, anon, walcast_replicator -----------------------------------------------------
check "service_role sees every event"    "$ALL_EVENTS"                              "$(seen 'set role service_role;' events)"
check "service_role sees every contact"  "ca1,ca2,ca3,ca4,ca5,cb1,cb2"              "$(seen 'set role service_role;' contacts)"
check "service_role sees every audit row" "a-1,a-2,b-1"                             "$(seen 'set role service_role;' audit_log)"
check "service_role may insert audit rows" "INSERT 0 1" \
  "$(try 'set role service_role;' "insert into public.audit_log (org_id, action) values ('$(id 0a0)', 'x')")"
check "anon cannot read events"  "denied" "$(try 'set role anon;' 'select 1 from public.events')"
check "anon cannot read orgs"    "denied" "$(try 'set role anon;' 'select 1 from public.orgs')"

repl() { PGUSER=walcast_replicator "$@"; }
check "walcast_replicator sees every event"         "$ALL_EVENTS"       "$(repl seen '' events)"
check "walcast_replicator sees every org_roles row" "$ROSTER_A,$ROSTER_B" "$(repl seen '' org_roles)"
check "walcast_replicator sees every privacy rule"  "da2,da3,da4,da5,db2" "$(repl seen '' privacy_rules)"
check "walcast_replicator cannot insert events" "denied" \
  "$(repl try '' "insert into public.events (org_id, kind, direction, status) values ('$(id 0a0)', 'call', 'inbound', 'x')")"
check "walcast_replicator cannot update org_roles" "denied" \
  "$(repl try '' "update public.org_roles set role = 'owner'")"
check "walcast_replicator cannot delete privacy_rules" "denied" "$(repl try '' 'delete from public.privacy_rules')"

# --- write policies -----------------------------------------------------------------------------
new_event="insert into public.events (org_id, kind, direction, status) values"
check "member inserts an event in A"      "INSERT 0 1" "$(try_as 1a4 "$new_event ('$(id 0a0)', 'sms', 'outbound', 'sent')")"
check "viewer cannot insert an event"     "rls"        "$(try_as 1a5 "$new_event ('$(id 0a0)', 'sms', 'outbound', 'sent')")"
check "member of A cannot insert into B"  "rls"        "$(try_as 1a4 "$new_event ('$(id 0b0)', 'sms', 'outbound', 'sent')")"
check "nobody cannot insert an event"     "rls"        "$(try_as 1f0 "$new_event ('$(id 0a0)', 'sms', 'outbound', 'sent')")"
check "member cannot delete events"       "DELETE 0"   "$(try_as 1a4 'delete from public.events')"
check "admin deletes the events it sees"  "DELETE 6"   "$(try_as 1a2 'delete from public.events')"
check "admin inserts a contact"           "INSERT 0 1" "$(try_as 1a2 "insert into public.contacts (org_id, name) values ('$(id 0a0)', 'New')")"
check "member cannot insert a contact"    "rls"        "$(try_as 1a4 "insert into public.contacts (org_id, name) values ('$(id 0a0)', 'New')")"
check "admin adds a member"               "INSERT 0 1" "$(try_as 1a2 "insert into public.org_roles values ('$(id 0a0)', '$(id 1f0)', 'member')")"
check "admin cannot add an owner"         "rls"        "$(try_as 1a2 "insert into public.org_roles values ('$(id 0a0)', '$(id 1f0)', 'owner')")"
check "admin cannot promote self to owner" "rls" \
  "$(try_as 1a2 "update public.org_roles set role = 'owner' where user_id = '$(id 1a2)'")"
check "admin cannot remove the owner"     "DELETE 0" \
  "$(try_as 1a2 "delete from public.org_roles where user_id = '$(id 1a1)'")"
check "owner demotes the admin"           "UPDATE 1" \
  "$(try_as 1a1 "update public.org_roles set role = 'viewer' where user_id = '$(id 1a2)'")"
check "member cannot change roles"        "UPDATE 0" \
  "$(try_as 1a4 "update public.org_roles set role = 'owner' where user_id = '$(id 1a4)'")"
check "admin cannot lift an owner-only rule" "DELETE 0" \
  "$(try_as 1a2 "delete from public.privacy_rules where contact_id = '$(id ca5)'")"
check "owner lifts an owner-only rule"    "DELETE 1" \
  "$(try_as 1a1 "delete from public.privacy_rules where contact_id = '$(id ca5)'")"
check "admin cannot create an owner-only rule" "rls" \
  "$(try_as 1a2 "insert into public.privacy_rules (org_id, contact_id, min_role) values ('$(id 0a0)', '$(id ca1)', 'owner')")"
check "admin cannot write audit_log"      "denied" \
  "$(try_as 1a2 "insert into public.audit_log (org_id, action) values ('$(id 0a0)', 'x')")"
check "owner renames the org"             "UPDATE 1" "$(try_as 1a1 "update public.orgs set name = 'A2'")"
check "admin cannot rename the org"       "UPDATE 0" "$(try_as 1a2 "update public.orgs set name = 'A2'")"
check "owner cannot change an org id"     "denied" \
  "$(try_as 1a1 "update public.orgs set id = gen_random_uuid()")"

# --- referential rules the policies rely on -----------------------------------------------------
check "a privacy rule must be in its contact's org" "fk" \
  "$(try '' "insert into public.privacy_rules (org_id, contact_id, min_role) values ('$(id 0b0)', '$(id ca1)', 'viewer')" |
     sed 's/.*violates foreign key constraint.*/fk/')"
check "an event's contact must be in the event's org" "fk" \
  "$(try '' "update public.events set contact_id = '$(id ca1)' where id = '$(id eb2)'" |
     sed 's/.*violates foreign key constraint.*/fk/')"
check "a contact with events cannot be deleted" "fk" \
  "$(try '' "delete from public.contacts where id = '$(id ca1)'" | sed 's/.*violates foreign key constraint.*/fk/')"
check "deleting an org removes all of it" "0" \
  "$(sql <<SQL
begin;
delete from public.orgs where id = '$(id 0a0)';
select (select count(*) from public.events where org_id = '$(id 0a0)')
     + (select count(*) from public.contacts where org_id = '$(id 0a0)')
     + (select count(*) from public.org_roles where org_id = '$(id 0a0)');
rollback;
SQL
)"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

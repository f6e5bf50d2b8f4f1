#!/usr/bin/env bash
# walcast tail --jwt: a token signed with auth.jwt_secret selects the viewer; a bad, expired or
# foreign-algorithm token is refused with one clear error; service_role sees through the policy.
source "$(dirname "$0")/lib.sh"
export WALCAST_AUTH_JWT_SECRET="test-secret-with-enough-length-for-hs256-0123456789"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# jwt SECRET PAYLOAD [ALG]: an HS256 token (or an unsigned one for ALG=none)
jwt() {
  local alg=${3:-HS256} h p s
  h=$(printf '{"alg":"%s","typ":"JWT"}' "$alg" | b64url)
  p=$(printf '%s' "$2" | b64url)
  if [ "$alg" = none ]; then printf '%s.%s.' "$h" "$p"; return; fi
  s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "$1" -binary | b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}
exp=$(( $(date +%s) + 600 ))

org=$(sql -c "INSERT INTO orgs (name) VALUES ('jwt org') RETURNING id")
member=$(sql -c "SELECT gen_random_uuid()")
viewer=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles VALUES ('$org', '$member', 'member'), ('$org', '$viewer', 'viewer')" >/dev/null
contact=$(sql -c "INSERT INTO contacts (org_id, name, phone) VALUES ('$org', 'c', '+15550001234') RETURNING id")
sql -c "INSERT INTO privacy_rules (org_id, contact_id, min_role) VALUES ('$org', '$contact', 'member')" >/dev/null
# Existing slots: the policy state is read from the database when each tail starts, which is
# exact here because nothing changes memberships or rules after the slots were made.
sql -c "SELECT pg_create_logical_replication_slot('jwt_m', 'pgoutput'), pg_create_logical_replication_slot('jwt_v', 'pgoutput'), pg_create_logical_replication_slot('jwt_s', 'pgoutput')" >/dev/null
sql -c "UPDATE contacts SET phone = '+15550004321' WHERE id = '$contact'" >/dev/null
sql -c "INSERT INTO audit_log (org_id, action) VALUES ('$org', 'test')" >/dev/null
sql -c "INSERT INTO events (org_id, kind, direction, status, from_number, to_number) VALUES ('$org', 'call', 'inbound', 'new', '+15559876543', '+15551112222')" >/dev/null
end=$(current_lsn)

run() { # slot token
  "$WALCAST" tail -S "$1" --jwt "$2" --until-lsn "$end" 2>"$WORK/jwt.err"
}
out=$(run jwt_m "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"sub\":\"$member\",\"role\":\"authenticated\",\"exp\":$exp}")")
check "member token: sees the event with full numbers" "+15559876543" "$(echo "$out" | jq -r 'select(.table == "events") | .new.from_number')"
check "member token: sees the rule-protected contact" 1 "$(echo "$out" | jq -c 'select(.table == "contacts")' | grep -c '"phone"' || true)"
check "member token: no admin-only table" 0 "$(echo "$out" | jq -c 'select(.table == "audit_log")' | grep -c . || true)"
out=$(run jwt_v "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"sub\":\"$viewer\",\"role\":\"authenticated\",\"exp\":$exp}")")
check "viewer token: phone masked" "********6543" "$(echo "$out" | jq -r 'select(.table == "events") | .new.from_number')"
check "viewer token: the rule hides the contact" 0 "$(echo "$out" | jq -c 'select(.table == "contacts")' | grep -c . || true)"
out=$(run jwt_s "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"role\":\"service_role\",\"exp\":$exp}")")
check "service_role token: sees admin-only rows" 1 "$(echo "$out" | jq -r 'select(.table == "audit_log") | .action' | grep -c insert || true)"

refused() { # name pattern token
  local rc=0
  "$WALCAST" tail -S jwt_m --jwt "$3" --until-lsn "$end" >/dev/null 2>"$WORK/jwt.err" || rc=$?
  check "$1: refused" 1 "$rc"
  check "$1: says why" 1 "$(grep -c "$2" "$WORK/jwt.err")"
}
refused "expired token" "expired" "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"sub\":\"$member\",\"exp\":$(( $(date +%s) - 5 ))}")"
refused "wrong secret" "signature" "$(jwt "another-secret-of-enough-length-0123456789abcdef" "{\"sub\":\"$member\",\"exp\":$exp}")"
refused "unsigned token" "signature\|malformed\|HS256" "$(jwt x "{\"sub\":\"$member\",\"role\":\"service_role\"}" none)"
refused "sub is not a user id" "not a user id" "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"sub\":\"alice\",\"exp\":$exp}")"
summary

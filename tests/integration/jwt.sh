#!/usr/bin/env bash
# walcast tail --jwt: a token signed with auth.jwt_secret, or with an RS256/ES256 key of the JWKS
# file (auth.jwks_file), selects the viewer; every refused token says exactly why (the reasons of
# docs/policies.md, "Tokens"); service_role sees through the policy; a token role the policy does
# not name as members (anon, or any other) sees nothing, as PostgreSQL grants it nothing.
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

# Asymmetric keys, as Supabase's signing keys: an RSA and an EC P-256 key pair and their JWKS.
hex2bin() { local h; h=$(tr -d ' \n:'); printf "$(printf '%s' "$h" | sed 's/../\\x&/g')"; }
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem" 2>/dev/null
openssl pkey -in "$WORK/rsa.pem" -pubout -out "$WORK/rsa.pub.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/ec.pem" 2>/dev/null
rsa_n=$(openssl rsa -in "$WORK/rsa.pem" -noout -modulus | cut -d= -f2 | hex2bin | b64url)
ec_xy=$(openssl pkey -in "$WORK/ec.pem" -pubout -outform DER | tail -c 64 | od -An -tx1 | tr -d ' \n')
ec_x=$(printf '%s' "${ec_xy:0:64}" | hex2bin | b64url)
ec_y=$(printf '%s' "${ec_xy:64:64}" | hex2bin | b64url)
cat >"$WORK/jwks.json" <<JWKS
{"keys": [
  {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": "$rsa_n", "e": "AQAB"},
  {"kty": "EC", "kid": "ec-1", "alg": "ES256", "crv": "P-256", "x": "$ec_x", "y": "$ec_y", "key_ops": ["verify"]}
]}
JWKS
export WALCAST_AUTH_JWKS_FILE="$WORK/jwks.json"
# jwt_key ALG KID PAYLOAD: a token signed with the private key of kid (RS256: rsa.pem, ES256:
# ec.pem, whose DER signature becomes the JWS r||s)
jwt_key() {
  local h p s
  h=$(printf '{"alg":"%s","typ":"JWT","kid":"%s"}' "$1" "$2" | b64url)
  p=$(printf '%s' "$3" | b64url)
  if [ "$1" = RS256 ]; then
    s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$WORK/rsa.pem" -binary | b64url)
  else
    s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$WORK/ec.pem" -binary |
      openssl asn1parse -inform DER | awk -F: '/INTEGER/ {v=$NF; sub(/^0+/, "", v); while (length(v) < 64) v = "0" v; printf "%s", v}' |
      hex2bin | b64url)
  fi
  printf '%s.%s.%s' "$h" "$p" "$s"
}

org=$(sql -c "INSERT INTO orgs (name) VALUES ('jwt org') RETURNING id")
member=$(sql -c "SELECT gen_random_uuid()")
viewer=$(sql -c "SELECT gen_random_uuid()")
sql -c "INSERT INTO org_roles VALUES ('$org', '$member', 'member'), ('$org', '$viewer', 'viewer')" >/dev/null
contact=$(sql -c "INSERT INTO contacts (org_id, name, phone) VALUES ('$org', 'c', '+15550001234') RETURNING id")
sql -c "INSERT INTO privacy_rules (org_id, contact_id, min_role) VALUES ('$org', '$contact', 'member')" >/dev/null
# Existing slots: the policy state is read from the database when each tail starts, which is
# exact here because nothing changes memberships or rules after the slots were made.
sql -c "SELECT pg_create_logical_replication_slot('jwt_m', 'pgoutput'), pg_create_logical_replication_slot('jwt_v', 'pgoutput'), pg_create_logical_replication_slot('jwt_s', 'pgoutput')" >/dev/null
sql -c "SELECT pg_create_logical_replication_slot('jwt_a', 'pgoutput'), pg_create_logical_replication_slot('jwt_x', 'pgoutput'), pg_create_logical_replication_slot('jwt_r', 'pgoutput'), pg_create_logical_replication_slot('jwt_e', 'pgoutput')" >/dev/null
sql -c "UPDATE contacts SET phone = '+15550004321' WHERE id = '$contact'" >/dev/null
sql -c "INSERT INTO audit_log (org_id, action) VALUES ('$org', 'test')" >/dev/null
sql -c "INSERT INTO events (org_id, kind, direction, status, from_number, to_number) VALUES ('$org', 'call', 'inbound', 'new', '+15559876543', '+15551112222')" >/dev/null
end=$(current_lsn)

run() { # slot token
  local rc=0
  "$WALCAST" tail -S "$1" --jwt "$2" --until-lsn "$end" 2>"$WORK/jwt.err" || rc=$?
  echo "$rc" >"$WORK/jwt.rc"
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

# Token roles. The oracle is PostgreSQL: anon holds no privilege on any platform table, and a
# role the database does not know cannot read anything; walcast must print nothing for either,
# even with a member's sub, and say once why.
check "oracle: anon may not read any platform table" 0 "$(sql -c "SELECT count(*) FROM unnest(ARRAY['orgs','org_roles','contacts','privacy_rules','events','audit_log','sync_health']) t WHERE has_table_privilege('anon', 'public.' || t, 'SELECT')")"
check "oracle: there is no database role 'analytics_bot'" 0 "$(sql -c "SELECT count(*) FROM pg_roles WHERE rolname = 'analytics_bot'")"
out=$(run jwt_a "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"sub\":\"$member\",\"role\":\"anon\",\"exp\":$exp}")")
check "anon token with a member's sub: sees nothing" 0 "$(printf '%s' "$out" | grep -c . || true)"
check "anon token: the tail ran to the end" 0 "$(cat "$WORK/jwt.rc")"
check "anon token: said once in the log" 1 "$(grep -c 'tail.role_denied.*role=anon' "$WORK/jwt.err" || true)"
out=$(run jwt_x "$(jwt "$WALCAST_AUTH_JWT_SECRET" "{\"sub\":\"$member\",\"role\":\"analytics_bot\",\"exp\":$exp}")")
check "a role the policy does not name: sees nothing" 0 "$(printf '%s' "$out" | grep -c . || true)"
check "a role the policy does not name: the tail ran to the end" 0 "$(cat "$WORK/jwt.rc")"

# Asymmetric keys from the JWKS file, selected by kid.
out=$(run jwt_r "$(jwt_key RS256 rsa-1 "{\"sub\":\"$member\",\"role\":\"authenticated\",\"aud\":\"authenticated\",\"exp\":$exp}")")
check "RS256 member token: sees the event with full numbers" "+15559876543" "$(echo "$out" | jq -r 'select(.table == "events") | .new.from_number')"
out=$(run jwt_e "$(jwt_key ES256 ec-1 "{\"sub\":\"$viewer\",\"role\":\"authenticated\",\"aud\":[\"authenticated\"],\"exp\":$exp.5}")")
check "ES256 viewer token (aud array, decimal exp): phone masked" "********6543" "$(echo "$out" | jq -r 'select(.table == "events") | .new.from_number')"

refused() { # name reason token [SECONDS]: refused with exit status 1 and exactly this reason
  local rc=0 got     # (SECONDS: a pattern for the number in the reason, which the clock moves)
  "$WALCAST" tail -S jwt_m --jwt "$3" --until-lsn "$end" >/dev/null 2>"$WORK/jwt.err" || rc=$?
  got=$(cat "$WORK/jwt.err")
  local pat="walcast: --jwt: ${2/120/${4:-120}}"  # unquoted below: a pattern, not a string
  # shellcheck disable=SC2053
  [ -n "${4:-}" ] && [[ $got == $pat ]] && got="walcast: --jwt: $2"
  check "$1: refused" 1 "$rc"
  check "$1: says why" "walcast: --jwt: $2" "$got"
}
S=$WALCAST_AUTH_JWT_SECRET
refused "expired token" "Token has expired 120 seconds ago" "$(jwt "$S" "{\"sub\":\"$member\",\"exp\":$(( $(date +%s) - 120 ))}")" "1[2-9][0-9]"
refused "wrong secret" "Token signature does not verify" "$(jwt "another-secret-of-enough-length-0123456789abcdef" "{\"sub\":\"$member\",\"exp\":$exp}")"
refused "unsigned token" "Token algorithm none is not accepted" "$(jwt x "{\"sub\":\"$member\",\"role\":\"service_role\"}" none)"
refused "sub is not a user id" "the sub claim is not a user id (uuid)" "$(jwt "$S" "{\"sub\":\"alice\",\"exp\":$exp}")"
refused "wrong audience" "Token audience does not include 'authenticated'" "$(jwt "$S" "{\"sub\":\"$member\",\"aud\":\"admin-api\",\"exp\":$exp}")"
refused "no exp" "Token has no exp claim" "$(jwt "$S" "{\"sub\":\"$member\",\"role\":\"authenticated\"}")"
refused "exp as a string" "Token exp claim is not a NumericDate (a JSON number)" "$(jwt "$S" "{\"sub\":\"$member\",\"exp\":\"$exp\"}")"
refused "unknown kid" "Token key id (kid) 'rsa-2' is not in the key set" "$(jwt_key RS256 rsa-2 "{\"sub\":\"$member\",\"exp\":$exp}")"
# key confusion: an HS256 token "signed" with the RSA public key as its secret, naming the RSA key
h=$(printf '{"alg":"HS256","typ":"JWT","kid":"rsa-1"}' | b64url)
p=$(printf '{"sub":"%s","role":"service_role","exp":%s}' "$member" "$exp" | b64url)
sig=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "$(cat "$WORK/rsa.pub.pem")" -binary | b64url)
refused "HS256 token against the RSA key" "Token algorithm HS256 does not match its key's (RS256)" "$h.$p.$sig"
refused "RS256 token without kid against the secret" "Token algorithm RS256 does not match its key's (HS256)" "$(jwt_key RS256 rsa-1 "{\"sub\":\"$member\",\"exp\":$exp}" | sed 's/^[^.]*/'"$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)"'/')"
summary

#!/usr/bin/env bash
# initdb-walcast.sh — first-start script of compose.yml's PostgreSQL (run once, on an empty data
# volume, by the image's entrypoint from /docker-entrypoint-initdb.d): applies walcast's
# migrations (roles, platform tables, RLS, the publication `walcast`, the role
# walcast_replicator) in order, then gives walcast_replicator the password WALCAST_DB_PASSWORD.
# Reads POSTGRES_USER, POSTGRES_DB (the image's variables), WALCAST_MIGRATIONS (default
# /walcast/migrations) and WALCAST_DB_PASSWORD.
set -euo pipefail
: "${WALCAST_DB_PASSWORD:?WALCAST_DB_PASSWORD must be set}"
dir=${WALCAST_MIGRATIONS:-/walcast/migrations}
psql_db() { psql -v ON_ERROR_STOP=1 -X -q --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" "$@"; }
for f in "$dir"/*.sql; do
  echo "initdb-walcast: applying $(basename "$f")"
  psql_db -f "$f"
done
# The password travels as a psql variable, quoted by psql (:'pw'), never pasted into SQL text.
psql_db -v pw="$WALCAST_DB_PASSWORD" <<'SQL'
ALTER ROLE walcast_replicator PASSWORD :'pw';
SQL

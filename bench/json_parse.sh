#!/usr/bin/env bash
# Micro-benchmark: wal2json lines parsed by jansson (json_loadb, a generic DOM) versus walcast's
# scanner and full wal2json decoder (bench/json_parse.c). The input is real: ROWS single-row
# inserts into an events-like table (7 columns, about 700 bytes per wal2json line), drained by
# pg_recvlogical from a fresh wal2json slot with walcast's options, on a throwaway server started
# by the harness. The drain itself is timed too: that is the rate the server emits at.
#
#   bench/json_parse.sh [ROWS [RUNS]]     defaults: 200000 rows, 7 runs per parser
#
# The generated lines are kept in $WALCAST_BENCH_DATA (default /tmp/walcast-bench-wal2json-ROWS.txt)
# and reused by later runs; delete the file to regenerate. Needs libjansson-dev.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# The options walcast passes in START_REPLICATION (plugins/decoders/wal2json.c), as pg_recvlogical -o.
W2J_OPTS=(-o format-version=2 -o include-xids=1 -o include-timestamp=1 -o include-lsn=1
          -o include-type-oids=1 -o include-types=0 -o include-transaction=1 -o include-pk=1)

generate() {
  local rows=$1 out=$2 script
  export PGOPTIONS="-c synchronous_commit=off"
  psql -q -X -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE TABLE bench_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  org_id uuid NOT NULL,
  contact_id uuid NOT NULL,
  kind text NOT NULL,
  phone text NOT NULL,
  body text,               -- AES-256-GCM ciphertext, base64
  created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_create_logical_replication_slot('bench', 'wal2json');
SQL
  script=$(mktemp)
  cat >"$script" <<'SQL'
\set n random(1, 1000000000)
INSERT INTO bench_events (org_id, contact_id, kind, phone, body)
VALUES (gen_random_uuid(), gen_random_uuid(), CASE WHEN :n % 3 = 0 THEN 'sms' ELSE 'call' END,
        '+1555' || lpad((:n % 10000000)::text, 7, '0'),
        translate(encode(sha512(:n::text::bytea) || sha256((:n + 1)::text::bytea), 'base64'),
                  E'\n', ''));
SQL
  echo "bench: $rows single-row insert transactions..." >&2
  "$WALCAST_PG_BIN/pgbench" -n -c 1 -t "$rows" -f "$script" >/dev/null
  rm -f "$script"
  local end t0 t1
  # The end: a non-transactional message written after the last commit (pg_current_wal_lsn()
  # would miss commits not yet written with synchronous_commit=off).
  end=$(psql -X -A -t -c "SELECT pg_logical_emit_message(false, 'bench', 'end')")
  t0=$(date +%s.%N)
  pg_recvlogical -d "$PGDATABASE" --slot bench --start --endpos="$end" "${W2J_OPTS[@]}" -f "$out.tmp"
  t1=$(date +%s.%N)
  mv "$out.tmp" "$out"
  awk -v t0="$t0" -v t1="$t1" -v rows="$rows" -v bytes="$(wc -c <"$out")" 'BEGIN {
    printf "bench: pg_recvlogical drained %d rows (%.1f MB) in %.2f s: %.0f rows/s, %.1f MB/s\n",
      rows, bytes / 1e6, t1 - t0, rows / (t1 - t0), bytes / 1e6 / (t1 - t0) }' >&2
}

if [ "${1:-}" = "--generate" ]; then
  generate "$2" "$3"
  exit 0
fi

ROWS=${1:-200000}
RUNS=${2:-7}
DATA=${WALCAST_BENCH_DATA:-${TMPDIR:-/tmp}/walcast-bench-wal2json-$ROWS.txt}
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
BIN=$(bench_build "$ROOT" json_parse)

if [ ! -s "$DATA" ]; then
  "$ROOT/tests/harness/harness.sh" run --no-migrate --no-redis -- "$HERE/json_parse.sh" --generate "$ROWS" "$DATA"
fi
"$BIN" "$DATA" "$RUNS"

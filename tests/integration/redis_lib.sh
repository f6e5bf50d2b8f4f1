# Helpers of the redis sink's integration tests (sourced after lib.sh): a random mixed load on
# events, and the oracle — every aggregate the sink keeps, computed by SQL over the tables —
# with the same aggregates dumped from Redis, both as sorted "key member value" lines.
REDIS_URL=${WALCAST_REDIS_URL:?the harness starts Redis}
RHOST=$(echo "$REDIS_URL" | sed -E 's#redis://([^:/]+):.*#\1#')
RPORT=$(echo "$REDIS_URL" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#')
rcli() { redis-cli -h "$RHOST" -p "$RPORT" "$@"; }
# A loopback port free now, picked by the kernel (not a random guess that may be taken).
kernel_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# agg_setup SLOT URL [LINE...]: three orgs of eight contacts, and $WORK/walcast.conf for `walcast
# run` on SLOT with one redis sink (agg) on URL and the HTTP listener on $HTTP_PORT; each LINE
# ("key = value") is one more line of the sink's section.
agg_setup() {
  local slot=$1 url=$2 line
  shift 2
  sql -c "INSERT INTO orgs (name) SELECT 'agg ' || g FROM generate_series(1, 3) g" >/dev/null
  sql -c "INSERT INTO contacts (org_id, name) SELECT o.id, 'c' || g FROM orgs o, generate_series(1, 8) g" >/dev/null
  printf '[replication]\nslot = %s\n[pipeline]\nstate_dir = %s\ndrain_timeout = 10s\n[http]\nlisten = 127.0.0.1:%s\n' \
    "$slot" "$WORK/state" "$HTTP_PORT" >"$WORK/walcast.conf"
  printf '[sink.agg]\ntype = redis\nurl = %s\n' "$url" >>"$WORK/walcast.conf"
  for line in "$@"; do echo "$line" >>"$WORK/walcast.conf"; done
}

# tally_setup: PostgreSQL's own tally of row changes per transaction on every platform table
# (AFTER ROW triggers into an UNLOGGED table, which logical decoding never sees): the oracle of
# the change stream (redis_stream sink). tally_counts: "xid table action count" lines, sorted.
# stream_counts KEY: the same lines read from the stream on $RPORT (redis_stream_check.py, which
# also writes $WORK/problems, $WORK/rows and $WORK/summary), sorted.
tally_setup() {
  sql >/dev/null <<'SQL'
CREATE UNLOGGED TABLE tally (xid bigint, tbl text, action text);
CREATE FUNCTION tally_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tally VALUES (txid_current() % 4294967296, TG_TABLE_NAME, TG_OP);
  RETURN NULL;
END $$;
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY array['orgs', 'org_roles', 'contacts', 'privacy_rules', 'events', 'audit_log', 'sync_health'] LOOP
    EXECUTE format('CREATE TRIGGER tally AFTER INSERT OR UPDATE OR DELETE ON public.%I
                    FOR EACH ROW EXECUTE FUNCTION tally_row()', t);
  END LOOP;
END $$;
SQL
}
tally_counts() {
  sql -c "SELECT xid || ' ' || tbl || ' ' || action || ' ' || count(*) FROM tally GROUP BY xid, tbl, action" |
    LC_ALL=C sort
}
stream_counts() {
  python3 "$ROOT/tests/integration/redis_stream_check.py" "$RHOST:$RPORT" "$1" "$WORK" && LC_ALL=C sort "$WORK/counts"
}

# pg_store_setup SLOT URL: three orgs of eight contacts and twenty members each, and
# $WORK/walcast.conf for `walcast run` on SLOT with pipeline.checkpoint_store = postgres and one
# redis sink (agg) on URL: the configuration of a standby on another host (docs/operations.md).
pg_store_setup() {
  sql -c "INSERT INTO orgs (name) SELECT 'sbpg ' || g FROM generate_series(1, 3) g" >/dev/null
  sql -c "INSERT INTO contacts (org_id, name) SELECT o.id, 'c' || g FROM orgs o, generate_series(1, 8) g" >/dev/null
  sql -c "INSERT INTO org_roles (org_id, user_id, role) SELECT o.id, gen_random_uuid(), 'member'
    FROM orgs o, generate_series(1, 20) g" >/dev/null
  cat >"$WORK/walcast.conf" <<CONF
[replication]
slot = $1
[pipeline]
checkpoint_store = postgres
drain_timeout = 10s
[sink.agg]
type = redis
url = $2
command_timeout = 2s
reconnect_max = 1s
CONF
}

# One transaction of the load: a random mix, drawn by PostgreSQL itself, over the relations
# named by LOAD_ORGS, LOAD_CONTACTS and LOAD_EVENTS (default the tables themselves; a test whose
# other rows the load must not touch names views of its own rows there).
LOAD_ORGS=${LOAD_ORGS:-orgs} LOAD_CONTACTS=${LOAD_CONTACTS:-contacts} LOAD_EVENTS=${LOAD_EVENTS:-events}
txn_sql() {
  local i=$1 extra="" o=$LOAD_ORGS c=$LOAD_CONTACTS e=$LOAD_EVENTS
  case $((i % 9)) in
    3) extra="UPDATE events SET started_at = started_at - interval '1 day' * (1 + (random() * 2)::int)
         WHERE id IN (SELECT id FROM $e ORDER BY random() LIMIT 3);" ;;
    5) extra="UPDATE events e SET org_id = c.org_id, contact_id = c.id
         FROM (SELECT id, org_id FROM $c ORDER BY random() LIMIT 1) c
         WHERE e.id IN (SELECT id FROM $e ORDER BY random() LIMIT 2);" ;;
    7) extra="UPDATE events e SET contact_id = NULL WHERE e.id IN (SELECT id FROM $e ORDER BY random() LIMIT 1);
       UPDATE events e SET contact_id = (SELECT c.id FROM contacts c WHERE c.org_id = e.org_id ORDER BY random() LIMIT 1)
         WHERE e.id IN (SELECT id FROM $e WHERE contact_id IS NULL ORDER BY random() LIMIT 2);" ;;
  esac
  if [ $((i % 13)) = 6 ]; then
    # a GDPR erasure: the contact's events, its privacy rule and the contact, in one transaction
    extra="$extra
      CREATE TEMP TABLE victim ON COMMIT DROP AS SELECT id FROM $c ORDER BY random() LIMIT 1;
      DELETE FROM events WHERE contact_id IN (SELECT id FROM victim);
      DELETE FROM privacy_rules WHERE contact_id IN (SELECT id FROM victim);
      DELETE FROM contacts WHERE id IN (SELECT id FROM victim) RETURNING 'erased ' || id;
      INSERT INTO contacts (org_id, name) SELECT id, 'new' FROM $o ORDER BY random() LIMIT 1;"
  fi
  cat <<SQL
BEGIN;
INSERT INTO events (org_id, contact_id, kind, direction, status, started_at, duration_s)
  SELECT c.org_id, CASE WHEN random() < 0.15 THEN NULL ELSE c.id END, k.kind, k.dir,
         CASE WHEN k.kind = 'call' THEN (ARRAY['completed', 'missed', 'voicemail', 'in_progress'])[1 + (random() * 3)::int]
              ELSE (ARRAY['sent', 'delivered', 'received', 'failed'])[1 + (random() * 3)::int] END,
         now() - random() * interval '4 days',
         CASE WHEN k.kind = 'call' AND random() < 0.8 THEN (random() * 600)::int END
  FROM (SELECT * FROM $c ORDER BY random() LIMIT $((1 + i % 5))) c,
       LATERAL (SELECT CASE WHEN random() < 0.6 THEN 'call' ELSE 'sms' END AS kind,
                       CASE WHEN random() < 0.5 THEN 'inbound' ELSE 'outbound' END AS dir) k;
UPDATE events SET status = 'missed', duration_s = 0 WHERE id IN (SELECT id FROM $e WHERE kind = 'call' ORDER BY random() LIMIT 1);
UPDATE events SET duration_s = (random() * 900)::int WHERE id IN (SELECT id FROM $e WHERE kind = 'call' ORDER BY random() LIMIT 2);
DELETE FROM events WHERE id IN (SELECT id FROM $e ORDER BY random() LIMIT $((i % 3)));
$extra
COMMIT;
SQL
}

load() {
  local i
  for i in $(seq 1 "$1"); do
    txn_sql "$i" | psql -X -q -At -v ON_ERROR_STOP=1 >>"$WORK/load.out" 2>>"$WORK/load.err" || true
    sleep 0.05
  done
}

# ---- the oracle (HOUR_CUTOFF: YYYYMMDDHH; hours before it are not compared) -------------------
HOUR_CUTOFF=${HOUR_CUTOFF:-}
sql_dump() {
  sql -c "
WITH e AS (SELECT org_id, contact_id, kind, direction, status, duration_s, started_at,
                  started_at AT TIME ZONE 'UTC' AS t FROM events),
periods AS (
  SELECT 'day:' || to_char(t, 'YYYYMMDD') AS p, e.* FROM e
  UNION ALL
  SELECT 'hour:' || to_char(t, 'YYYYMMDDHH24'), e.* FROM e WHERE to_char(t, 'YYYYMMDDHH24') >= '$HOUR_CUTOFF'),
counters AS (
  SELECT 'wc:{' || org_id || '}:' || p AS k, f, v FROM periods,
    LATERAL (VALUES (CASE kind WHEN 'call' THEN 'calls' WHEN 'sms' THEN 'sms' ELSE 'other' END, 1),
                    (kind || ':' || direction || ':' || status, 1),
                    ('missed', CASE WHEN kind = 'call' AND status = 'missed' THEN 1 ELSE 0 END),
                    ('call_duration_s', CASE WHEN kind = 'call' THEN coalesce(duration_s, 0) ELSE 0 END),
                    ('calls_timed', CASE WHEN kind = 'call' AND duration_s IS NOT NULL THEN 1 ELSE 0 END)) x(f, v)
  UNION ALL
  SELECT 'wc:{' || org_id || '}:day:' || to_char(t, 'YYYYMMDD') || ':contacts', contact_id::text, 1
    FROM e WHERE contact_id IS NOT NULL
  UNION ALL
  SELECT 'wc:{' || org_id || '}:contact:' || contact_id, f, v FROM e,
    LATERAL (VALUES ('events', 1),
                    (CASE kind WHEN 'call' THEN 'calls' WHEN 'sms' THEN 'sms' ELSE 'other' END, 1),
                    ('call_duration_s', CASE WHEN kind = 'call' THEN coalesce(duration_s, 0) ELSE 0 END)) x(f, v)
    WHERE contact_id IS NOT NULL
  UNION ALL
  SELECT 'wc:{' || org_id || '}:contact:' || contact_id || ':times',
         ((extract(epoch FROM started_at) * 1000000)::bigint)::text, 1 FROM e WHERE contact_id IS NOT NULL
  UNION ALL
  SELECT 'wc:{' || org_id || '}:contact:' || contact_id, 'last_event_us',
         max((extract(epoch FROM started_at) * 1000000)::bigint) FROM e WHERE contact_id IS NOT NULL
    GROUP BY org_id, contact_id)
SELECT k || ' ' || f || ' ' || sum(v) FROM counters GROUP BY k, f HAVING sum(v) <> 0" | LC_ALL=C sort
}
REDIS_DUMP_LUA="local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  local t = redis.call('TYPE', k).ok
  if t == 'hash' or t == 'zset' then
    local a = t == 'hash' and redis.call('HGETALL', k) or redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
    for i = 1, #a, 2 do out[#out + 1] = k .. ' ' .. a[i] .. ' ' .. a[i + 1] end
  end
end
return out"
redis_dump() {
  rcli --raw EVAL "$REDIS_DUMP_LUA" 0 'wc:{*' |
    awk -v cut="$HOUR_CUTOFF" '{ if (match($1, /:hour:[0-9]+$/) && substr($1, RSTART + 6) < cut) next; print }' |
    LC_ALL=C sort
}
same_as_sql() {
  sql_dump >"$WORK/sql.dump" && redis_dump >"$WORK/redis.dump" && cmp -s "$WORK/sql.dump" "$WORK/redis.dump"
}
# aggregates_check WHERE SECONDS MIN: waits up to SECONDS for Redis to hold what SQL holds (the
# hours of the last 46 compared), then checks that the oracle has more than MIN lines and that
# every aggregate WHERE ("in Redis", "on the new primary") equals SQL's recount.
aggregates_check() {
  HOUR_CUTOFF=$(sql -c "SELECT to_char(date_trunc('hour', now() AT TIME ZONE 'UTC') - interval '46 hours', 'YYYYMMDDHH24')")
  wait_for "$2" same_as_sql || echo "# Redis did not reach what SQL holds within $2 s"
  check_true "the oracle is not empty ($(wc -l <"$WORK/sql.dump") lines)" [ "$(wc -l <"$WORK/sql.dump")" -gt "$3" ]
  check "every aggregate $1 equals SQL's recount over public.events" "" \
    "$(diff "$WORK/sql.dump" "$WORK/redis.dump" | head -8)"
}

stream_same_as_sql() {
  tally_counts >"$WORK/sql.counts" && stream_counts "$1" >"$WORK/stream.counts" &&
    cmp -s "$WORK/sql.counts" "$WORK/stream.counts"
}
# stream_check KEY SECONDS: waits up to SECONDS for the stream KEY to hold PostgreSQL's tally
# (tally_setup), then checks its framing and that, per transaction, its row changes per table and
# action equal the tally: nothing lost, nothing twice. Rows written before the slot existed are
# not in the stream: their later updates and deletes find no row there, which is all that
# "not present" says (not a fault here).
stream_check() {
  wait_for "$2" stream_same_as_sql "$1" || echo "# the stream did not reach what SQL holds within $2 s"
  echo "# stream: $(cat "$WORK/summary")"
  check "the stream: framing, ids from commit LSNs, no transaction twice, no key inserted twice" "" \
    "$(grep -v ' not present$' "$WORK/problems" | head -5)"
  check "the stream: per transaction, row changes per table and action equal PostgreSQL's tally" "" \
    "$(diff "$WORK/sql.counts" "$WORK/stream.counts" | head -6)"
}


#!/usr/bin/env bash
# A stalled durable sink, end to end: `walcast run` writes a jsonl sink on a small tmpfs that a
# load fills. While the disk is full the daemon keeps running: /readyz says not ready and why,
# /metrics shows the stream paused and the sink's pending bytes, walcast's memory stays under its
# bound (pipeline.max_pending plus one transaction and the daemon's own), and the slot's
# confirmed_flush_lsn never passes what the file durably holds (PostgreSQL's LSNs of the load's
# batches are the oracle). Then space comes back: the file ends up holding exactly the rows SQL
# holds, in commit order, none twice, none missing.
source "$(dirname "$0")/lib.sh"
trap 'echo "# stall.sh: line $LINENO failed: $BASH_COMMAND"' ERR
POLICY=$ROOT/deploy/policy.ini
DISK=$WORK/disk
BATCHES=${STALL_BATCHES:-60}
ROWS=${STALL_ROWS:-600}      # rows per batch, ~1.7 kB of JSON each: ~60 MB in all, on a 4 MB disk
MAX_PENDING_MB=2
RSS_GROWTH_MB=24             # the bound: 2 MB pending + a 1 MB transaction + the daemon's buffers

mkdir -p "$DISK"
mount -t tmpfs -o size=4m walcast-stall "$DISK"
unmount() { wc_cleanup_bg; umount "$DISK" 2>/dev/null || umount -l "$DISK" 2>/dev/null || true; }
trap unmount EXIT

org=$(sql -c "INSERT INTO orgs (name) VALUES ('stall') RETURNING id")
cat >"$WORK/stall.conf" <<EOF
[replication]
slot = stall_slot
[pipeline]
state_dir = $WORK/state
max_pending = ${MAX_PENDING_MB}MB
drain_timeout = 10s
[http]
listen = 127.0.0.1:0
[sink.file]
type = jsonl
path = $DISK/out.jsonl
tables = events
flush_bytes = 256kB
EOF
"$WALCAST" -c "$WORK/stall.conf" run --policy "$POLICY" >/dev/null 2>"$WORK/run.err" &
PID=$!
BG_PIDS+=("$PID")
wait_for 60 slot_active stall_slot || { echo "not ok - walcast run did not start"; cat "$WORK/run.err"; exit 1; }
PORT=$(sed -n 's/.*http.listen address=127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/run.err" | head -1)
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }
base=$(rss_kb)
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
readyz() { curl -s -o "$WORK/readyz" -w '%{http_code}' "http://127.0.0.1:$PORT/readyz"; }
ready() { [ "$(readyz)" = 200 ]; }
# the slot is active a moment before the pipeline reports streaming: wait for it, not one look
check_true "ready before the load" wait_for 30 ready

# the load: batch b holds events b*ROWS+1 .. (b+1)*ROWS; its LSN is taken right after its commit
: >"$WORK/batch_lsn"
for b in $(seq 0 $((BATCHES - 1))); do
  sql -c "INSERT INTO events (org_id, kind, direction, status, duration_s)
          SELECT '$org', 'call', 'inbound', 'b$b-' || repeat('x', 1500), g
          FROM generate_series($((b * ROWS + 1)), $(((b + 1) * ROWS))) g" >/dev/null
  echo "$b $(current_lsn)" >>"$WORK/batch_lsn"
done
END=$(current_lsn)

stalled() { grep -q jsonl.write_stalled "$WORK/run.err"; }
paused() { [ "$(metric walcast_paused)" = 1 ]; }
check_true "the full disk stalls the sink (jsonl.write_stalled)" wait_for 120 stalled
check_true "the stream pauses (walcast_paused 1)" wait_for 60 paused
check "/readyz: not ready" 503 "$(readyz)"
check_true "/readyz says which sink ($(cat "$WORK/readyz"))" grep -q "sink file unhealthy" "$WORK/readyz"
pending=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '$1 == "walcast_sink_pending_bytes{sink=\"file\"}" {print $2}')
check_true "/metrics: the sink's pending bytes ($pending) are past half of max_pending" \
  [ "${pending:-0}" -gt $((MAX_PENDING_MB * 1024 * 1024 / 2)) ]

# held for a while (several retries): memory bounded, nothing confirmed past the file
peak=$base
for _ in $(seq 1 25); do
  kill -0 "$PID" || break
  r=$(rss_kb); [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.2
done
check_true "walcast keeps running while the disk is full" kill -0 "$PID"
check_true "RSS grew by $(((peak - base) / 1024)) MB (< $RSS_GROWTH_MB MB) while ~$((BATCHES * ROWS * 17 / 10000)) MB waited in the WAL" \
  [ $((peak - base)) -lt $((RSS_GROWTH_MB * 1024)) ]
confirmed=$(sql -c "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'stall_slot'")
pos_off=$(sed -n 's/^offset=//p' "$DISK/out.jsonl.pos")
durable_rows=$(head -c "$pos_off" "$DISK/out.jsonl" | wc -l)
# every batch whose LSN the slot confirmed is wholly in the file's durable part
owed=0
while read -r b lsn; do
  [ "$(sql -c "SELECT '$lsn'::pg_lsn <= '$confirmed'::pg_lsn")" = t ] && owed=$(((b + 1) * ROWS))
done <"$WORK/batch_lsn"
check_true "confirmed_flush_lsn $confirmed covers $owed rows; the file durably holds $durable_rows" \
  [ "$durable_rows" -ge "$owed" ]
check_true "the slot is held back: not at the end of the load" \
  [ "$(sql -c "SELECT '$confirmed'::pg_lsn < '$END'::pg_lsn")" = t ]

# space comes back: everything is written, confirmed, exactly once
mount -o remount,size=512m "$DISK"
slot_past() { [ "$(sql -c "SELECT confirmed_flush_lsn >= '$END' FROM pg_replication_slots WHERE slot_name = 'stall_slot'")" = t ]; }
check_true "with space back, the slot reaches the end of the load" wait_for 180 slot_past
check_true "jsonl.write_resumed logged" grep -q jsonl.write_resumed "$WORK/run.err"
check_true "/readyz: ready again" wait_for 30 ready
check "not paused any more" 0 "$(metric walcast_paused)"
kill -TERM "$PID"
rc=0; wait "$PID" || rc=$?
check "SIGTERM: exit 0" 0 "$rc"
sql -c "SELECT duration_s FROM events WHERE org_id = '$org' ORDER BY duration_s" >"$WORK/want"
jq -r 'select(.action == "insert") | .new.duration_s' "$DISK/out.jsonl" >"$WORK/got"
check_sequence "the file after the stall" "$WORK/got" "$WORK/want"
[ $FAILED -eq 0 ] || { echo "# run.err:"; grep -v 'INFO source\.\(paused\|resumed\)' "$WORK/run.err" | tail -30 | sed 's/^/# /'; }
summary

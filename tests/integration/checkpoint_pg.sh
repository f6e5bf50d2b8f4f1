#!/usr/bin/env bash
# The PostgreSQL checkpoint store (src/pipeline/checkpoint_pg.h) against the harness's server:
# test_checkpoint's cases that are not about files (the same cases the dir store passes, so the
# two cannot drift), then what only this store has (checkpoint_pg_test: the advisory lock, one
# transaction per sync, reconnect, a store lost to another instance, its schema).
source "$(dirname "$0")/lib.sh"
BUILD=$(dirname "$WALCAST")
export TMPDIR=$WORK
rc=0
WALCAST_TEST_CHECKPOINT_PG="" "$BUILD/test_checkpoint" || rc=$?
check "test_checkpoint's cases against the PostgreSQL store" 0 "$rc"
rc=0
"$BUILD/checkpoint_pg_test" || rc=$?
check "checkpoint_pg_test" 0 "$rc"
check "walcast's own schema only: nothing else created in public" \
  "" "$(sql -c "SELECT string_agg(relname, ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE relname LIKE 'checkpoint%' AND nspname NOT IN ('walcast', 'wc_other')")"
summary

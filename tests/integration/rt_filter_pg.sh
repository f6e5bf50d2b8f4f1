#!/usr/bin/env bash
# Realtime filters (plugins/sinks/rt_filter.c) against PostgreSQL itself: rt_filter_pg (a C
# driver, tests/integration/rt_filter_pg.c) generates (value, operator, constant) triples for
# every supported type and compares rt_filter_match with the same typed comparison evaluated by
# the harness's PostgreSQL. A few seeds, a few thousand triples each; any disagreement fails.
set -euo pipefail
BIN=${WALCAST_BIN:?}
DRIVER=$(dirname "$BIN")/rt_filter_pg
status=0
for seed in 1 20261202 424242 ${RT_FILTER_PG_SEED:-}; do
  "$DRIVER" "${RT_FILTER_PG_TRIPLES:-2500}" "$seed" || status=1
done
exit $status

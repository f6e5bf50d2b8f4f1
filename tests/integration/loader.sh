#!/usr/bin/env bash
# The asynchronous policy-state load (src/policy/policy_loader.c) against the harness's
# PostgreSQL: tests/integration/policy_loader_test.c does the work (50k memberships loaded from
# an exported snapshot while a writer changes rows; the loop keeps turning; clear errors).
set -euo pipefail
BIN=${WALCAST_BIN:?}
TEST=$(dirname "$BIN")/policy_loader_test
exec "$TEST"

/*
 * checkpoint_pg_test — what only the PostgreSQL checkpoint store has (checkpoint_pg.h), against
 * the harness's PostgreSQL, with SQL as the oracle: the advisory lock (-EBUSY, naming the holder's
 * pid); a sync is one transaction (every row it wrote has the same xmin) and a sync with nothing
 * to say writes nothing (the slot row's xmin unchanged); a lost connection fails the op that met
 * it and the next op reconnects, takes the lock again and writes what was buffered exactly once;
 * a store whose lock another instance took meanwhile refuses every op and writes nothing; its own
 * schema by name, created on first use, and a bad schema name refused; an ordinary connection
 * even when the conninfo asks for replication. The store's semantics
 * shared with the dir store are test_checkpoint's cases (run with WALCAST_TEST_CHECKPOINT_PG).
 * Run by checkpoint_pg.sh (PG* set by the harness).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint_pg.h"
#include "policy_state.h"

static PGconn *db;

/* The first value of the first row of sql (a static buffer), "" when none. */
static const char *sql1(const char *fmt, ...)
{
	static char out[256];
	char q[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	PGresult *r = PQexec(db, q);
	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
		fail_msg("%s: %s", q, PQresultErrorMessage(r));
	snprintf(out, sizeof(out), "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return out;
}

static checkpoint_store *open_store(const char *schema, const char *slot)
{
	checkpoint_store *st = NULL;
	char err[CHECKPOINT_ERROR_MAX] = "";
	int rc = checkpoint_pg_create("", schema, slot, &st, err);
	if (rc != 0)
		fail_msg("open %s: %s", slot, err);
	return st;
}

static void member(checkpoint_store *st, uint64_t lsn, const char *user, const char *role)
{
	const char *v[3] = {"0a000000-0000-4000-8000-000000000001", user, role};
	checkpoint_row row = {.table = POLICY_STATE_MEMBERSHIP, .values = v, .deleted = role == NULL};
	char err[CHECKPOINT_ERROR_MAX];
	assert_int_equal(st->ops->append(st->impl, lsn, &row, 1, err), 0);
}

static int sync_at(checkpoint_store *st, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX])
{
	return st->ops->sync(st->impl, lsn, err);
}

/* Ends the backend of the store's connection (the one holding the advisory lock of slot). */
static void kill_backend(const char *slot)
{
	assert_string_equal(sql1("SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' "
	                         "AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = "
	                         "hashtextextended('walcast.%s', 0)", slot), "t");
	for (int i = 0; i < 100; i++) { /* the lock goes when the backend has exited */
		if (strcmp(sql1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
		                "((classid::bigint << 32) | objid::bigint) = hashtextextended('walcast.%s', 0)", slot), "0") == 0)
			return;
		usleep(50 * 1000);
	}
	fail_msg("the backend of %s did not go", slot);
}

static void test_lock(void **state)
{
	(void)state;
	checkpoint_store *a = open_store(NULL, "lock_a"), *b = NULL, *c = NULL;
	char err[CHECKPOINT_ERROR_MAX];
	assert_int_equal(checkpoint_pg_create("", NULL, "lock_a", &b, err), -EBUSY);
	char pid[32];
	snprintf(pid, sizeof(pid), "pid %s", sql1("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
	                                          "AND ((classid::bigint << 32) | objid::bigint) = "
	                                          "hashtextextended('walcast.lock_a', 0)"));
	assert_non_null(strstr(err, "in use by another instance"));
	assert_non_null(strstr(err, pid));
	c = open_store(NULL, "lock_c"); /* another slot: its own lock */
	checkpoint_store_destroy(a);
	b = open_store(NULL, "lock_a"); /* the lock went with a's session */
	checkpoint_store_destroy(b);
	checkpoint_store_destroy(c);
}

static void test_sync_is_one_transaction(void **state)
{
	(void)state;
	checkpoint_store *st = open_store(NULL, "txn");
	char err[CHECKPOINT_ERROR_MAX];
	member(st, 0x100, "u1", "member");
	member(st, 0x200, "u2", "admin");
	assert_int_equal(st->ops->position_put(st->impl, "confirmed", 0x200), 0);
	assert_int_equal(sync_at(st, 0x200, err), 0);
	assert_string_equal(sql1("SELECT count(DISTINCT xmin::text) FROM (SELECT xmin FROM walcast.checkpoint_log WHERE "
	                         "slot = 'txn' UNION ALL SELECT xmin FROM walcast.checkpoint_positions WHERE slot = 'txn' "
	                         "UNION ALL SELECT xmin FROM walcast.checkpoint_slots WHERE slot = 'txn') x"), "1");
	assert_string_equal(sql1("SELECT count(*) || ' ' || max(lsn) FROM walcast.checkpoint_log WHERE slot = 'txn'"),
	                    "2 0/200");
	assert_string_equal(sql1("SELECT known_at FROM walcast.checkpoint_slots WHERE slot = 'txn'"), "0/200");
	char xmin[64];
	snprintf(xmin, sizeof(xmin), "%s", sql1("SELECT xmin FROM walcast.checkpoint_slots WHERE slot = 'txn'"));
	/* nothing to say: nothing written */
	assert_int_equal(sync_at(st, 0x300, err), 0);
	assert_string_equal(sql1("SELECT xmin FROM walcast.checkpoint_slots WHERE slot = 'txn'"), xmin);
	/* a position: the known-at LSN goes with it */
	assert_int_equal(st->ops->position_put(st->impl, "confirmed", 0x400), 0);
	assert_int_equal(sync_at(st, 0x400, err), 0);
	assert_string_equal(sql1("SELECT known_at || ' ' || (xmin::text <> '%s') FROM walcast.checkpoint_slots WHERE "
	                         "slot = 'txn'", xmin), "0/400 true");
	assert_string_equal(sql1("SELECT lsn FROM walcast.checkpoint_positions WHERE slot = 'txn' AND name = 'confirmed'"),
	                    "0/400");
	/* a replay from 0x200: the logged 0x200 goes in the same transaction as its replacement */
	member(st, 0x200, "u3", "viewer");
	assert_int_equal(sync_at(st, 0x200, err), 0);
	assert_string_equal(sql1("SELECT string_agg(lsn || '=' || v1, ',' ORDER BY lsn) FROM walcast.checkpoint_log "
	                         "WHERE slot = 'txn'"), "0/100=u1,0/200=u3");
	checkpoint_store_destroy(st);
}

static void test_reconnect(void **state)
{
	(void)state;
	checkpoint_store *st = open_store(NULL, "recon");
	char err[CHECKPOINT_ERROR_MAX] = "";
	member(st, 0x100, "u1", "member");
	assert_int_equal(sync_at(st, 0x100, err), 0);
	kill_backend("recon");
	member(st, 0x200, "u2", "member");
	assert_int_equal(st->ops->position_put(st->impl, "confirmed", 0x200), 0);
	/* the op that meets the lost connection fails, clearly */
	assert_int_equal(sync_at(st, 0x200, err), -EIO);
	assert_non_null(strstr(err, "connection to PostgreSQL lost"));
	assert_string_equal(sql1("SELECT count(*) FROM walcast.checkpoint_log WHERE slot = 'recon'"), "1");
	/* the next one reconnects, takes the lock and writes what was buffered */
	assert_int_equal(sync_at(st, 0x200, err), 0);
	assert_string_equal(sql1("SELECT count(*) FROM walcast.checkpoint_log WHERE slot = 'recon'"), "2");
	assert_string_equal(sql1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
	                         "((classid::bigint << 32) | objid::bigint) = hashtextextended('walcast.recon', 0)"),
	                    "1");
	/* and goes on: every LSN once */
	member(st, 0x300, "u3", "member");
	assert_int_equal(sync_at(st, 0x300, err), 0);
	assert_string_equal(sql1("SELECT count(*) || ' ' || count(DISTINCT lsn) FROM walcast.checkpoint_log WHERE "
	                         "slot = 'recon'"), "3 3");
	checkpoint_store_destroy(st);
}

static void test_lost_to_another(void **state)
{
	(void)state;
	char err[CHECKPOINT_ERROR_MAX] = "";
	/* (1) another instance took the store while this one was away, and is gone again */
	checkpoint_store *a = open_store(NULL, "lost"), *b = NULL;
	member(a, 0x100, "u1", "member");
	assert_int_equal(sync_at(a, 0x100, err), 0);
	kill_backend("lost");
	b = open_store(NULL, "lost");
	checkpoint_store_destroy(b);
	member(a, 0x200, "u2", "member");
	assert_int_equal(sync_at(a, 0x200, err), -EIO); /* meets the lost connection */
	assert_int_equal(sync_at(a, 0x200, err), -ENOLCK);
	assert_non_null(strstr(err, "lost the checkpoint store to another instance"));
	assert_int_equal(sync_at(a, 0x200, err), -ENOLCK); /* for good */
	uint64_t lsn;
	assert_int_equal(a->ops->load(a->impl, 0x200, NULL, NULL, &lsn, err), -ENOLCK);
	assert_string_equal(sql1("SELECT count(*) FROM walcast.checkpoint_log WHERE slot = 'lost'"), "1");
	checkpoint_store_destroy(a);
	/* (2) ... and still holds it */
	a = open_store(NULL, "lost2");
	kill_backend("lost2");
	b = open_store(NULL, "lost2");
	member(a, 0x100, "u1", "member");
	assert_int_equal(sync_at(a, 0x100, err), -EIO);
	assert_int_equal(sync_at(a, 0x100, err), -ENOLCK);
	assert_non_null(strstr(err, "lost the checkpoint store to another instance"));
	assert_string_equal(sql1("SELECT count(*) FROM walcast.checkpoint_log WHERE slot = 'lost2'"), "0");
	checkpoint_store_destroy(a);
	checkpoint_store_destroy(b);
}

static void test_schema(void **state)
{
	(void)state;
	checkpoint_store *st = NULL;
	char err[CHECKPOINT_ERROR_MAX];
	assert_int_equal(checkpoint_pg_create("", "Bad-Name", "s", &st, err), -EINVAL);
	assert_non_null(strstr(err, "schema name"));
	assert_string_equal(sql1("SELECT count(*) FROM pg_namespace WHERE nspname = 'wc_other'"), "0");
	st = open_store("wc_other", "s");
	member(st, 0x100, "u1", "member");
	assert_int_equal(sync_at(st, 0x100, err), 0);
	assert_string_equal(sql1("SELECT count(*) FROM wc_other.checkpoint_log WHERE slot = 's'"), "1");
	checkpoint_store_destroy(st);
	st = open_store("wc_other", "s"); /* the second time: the tables are there */
	checkpoint_store_destroy(st);
}

/* Its own ordinary connection, even when the conninfo asks for a replication one. */
static void test_not_replication(void **state)
{
	(void)state;
	checkpoint_store *st = NULL;
	char err[CHECKPOINT_ERROR_MAX];
	int rc = checkpoint_pg_create("replication=database", NULL, "norepl", &st, err);
	if (rc != 0)
		fail_msg("open: %s", err);
	assert_string_equal(sql1("SELECT string_agg(backend_type, ',') FROM pg_stat_activity WHERE application_name = "
	                         "'walcast-checkpoint'"), "client backend");
	checkpoint_store_destroy(st);
}

int main(void)
{
	db = PQconnectdb("");
	if (PQstatus(db) != CONNECTION_OK) {
		fprintf(stderr, "connect: %s", PQerrorMessage(db));
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lock),
		cmocka_unit_test(test_sync_is_one_transaction),
		cmocka_unit_test(test_reconnect),
		cmocka_unit_test(test_lost_to_another),
		cmocka_unit_test(test_schema),
		cmocka_unit_test(test_not_replication),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	PQfinish(db);
	return rc;
}

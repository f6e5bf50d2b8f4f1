/*
 * replident — does each governed table's replica identity carry what its rules need? The
 * column-set logic (replident_needed, replident_table_check) is pure; replident_check reads the
 * catalog, one parameterized query per governed table.
 */
#include "replident.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Marks the column arguments of a rule program (PRIVACY and EQ_UID read columns). */
static void mark_program(const policy_insn *prog, size_t n, size_t ncols, bool *need)
{
	for (size_t k = 0; k < n; k++) {
		if ((prog[k].op == POLICY_OP_PRIVACY || prog[k].op == POLICY_OP_EQ_UID) && prog[k].arg < ncols)
			need[prog[k].arg] = true;
	}
}

void replident_needed(const policy_table *t, bool *need)
{
	size_t ncols = policy_table_ncols(t);
	memset(need, 0, ncols * sizeof(*need));
	size_t org = policy_table_org(t);
	if (org < ncols)
		need[org] = true;
	size_t len = 0;
	const policy_insn *read = policy_table_read(t, &len);
	if (read != NULL)
		mark_program(read, len, ncols, need);
	for (size_t i = 0; i < ncols; i++) {
		const policy_column_rule *r = policy_table_rule(t, i);
		if (r == NULL)
			continue;
		if (r->cond != NULL)
			mark_program(r->cond, r->cond_len, ncols, need);
		if (r->kind == POLICY_RULE_ENCRYPTED && r->context >= 0 && (size_t)r->context < ncols)
			need[r->context] = true;
	}
}

static const char *kind_name(char kind)
{
	switch (kind) {
	case 'd': return "DEFAULT (primary key)";
	case 'i': return "USING INDEX";
	case 'f': return "FULL";
	case 'n': return "NOTHING";
	default: return "unknown";
	}
}

/* True when column name is among ident[0..nident). */
static bool carried(const char *name, const char *const *ident, size_t nident)
{
	for (size_t j = 0; j < nident; j++)
		if (strcmp(ident[j], name) == 0)
			return true;
	return false;
}

int replident_table_check(const policy_table *t, char kind, const char *const *ident, size_t nident,
                          buf *report)
{
	if (kind == 'f')
		return 0;
	size_t ncols = policy_table_ncols(t);
	bool *need = calloc(ncols ? ncols : 1, sizeof(*need));
	if (need == NULL)
		return -ENOMEM;
	replident_needed(t, need);
	/* 'n' carries nothing; 'd' / 'i' carry their index's columns (none if it is gone). */
	if (kind != 'd' && kind != 'i')
		nident = 0;
	size_t missing = 0;
	for (size_t i = 0; i < ncols; i++) {
		need[i] = need[i] && !carried(policy_table_column(t, i), ident, nident);
		missing += need[i];
	}
	int rc = 0;
	if (missing == 0)
		goto cleanup;
	rc = buf_printf(report, "table %s.%s: replica identity %s", policy_table_schema(t),
	                policy_table_name(t), kind_name(kind));
	for (size_t j = 0; j < nident && rc == 0; j++)
		rc = buf_printf(report, "%s%s", j == 0 ? " (" : ", ", ident[j]);
	if (rc == 0)
		rc = buf_printf(report, "%s does not carry", nident > 0 ? ")" : "");
	for (size_t i = 0, k = 0; i < ncols && rc == 0; i++)
		if (need[i])
			rc = buf_printf(report, "%s%s", k++ == 0 ? " " : ", ", policy_table_column(t, i));
	if (rc == 0)
		rc = buf_printf(report, ", which its policy needs to judge deletes; fix: ALTER TABLE %s.%s "
		                "REPLICA IDENTITY FULL;\n", policy_table_schema(t), policy_table_name(t));
	if (rc == 0)
		rc = 1;
cleanup:
	free(need);
	return rc;
}

/* One row per identity column (attname NULL when the identity has no index). No rows: the
 * table does not exist. */
static const char CATALOG_SQL[] =
	"SELECT c.relreplident::text, a.attname::text"
	"  FROM pg_catalog.pg_class c"
	"  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	"  LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid"
	"   AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))"
	"  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)"
	"   AND a.attnum > 0 AND NOT a.attisdropped"
	" WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')"
	" ORDER BY a.attnum";

/* Waits until conn's socket is ready for events, asking stop(arg) (when given) every 100 ms: 0,
 * -ECANCELED when it said stop, or a negative errno. */
static int wait_socket(PGconn *conn, short events, replident_stop_fn stop, void *arg)
{
	for (;;) {
		if (stop != NULL && stop(arg))
			return -ECANCELED;
		struct pollfd pfd = {.fd = PQsocket(conn), .events = events};
		if (pfd.fd < 0)
			return -EBADF;
		int n = poll(&pfd, 1, 100);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* PQexecParams that keeps asking stop while the server works: the result (caller clears; NULL
 * on a lost connection, *rc -ECANCELED when stopped). */
static PGresult *exec_until(PGconn *conn, const char *const *params, replident_stop_fn stop, void *arg, int *rc)
{
	*rc = 0;
	if (!PQsendQueryParams(conn, CATALOG_SQL, 2, NULL, params, NULL, NULL, 0))
		return NULL;
	while (PQisBusy(conn)) {
		if ((*rc = wait_socket(conn, POLLIN, stop, arg)) < 0 || !PQconsumeInput(conn))
			return NULL;
	}
	PGresult *res = PQgetResult(conn);
	for (PGresult *more; (more = PQgetResult(conn)) != NULL;)
		PQclear(more);
	return res;
}

static int check_until(const policy *p, PGconn *conn, buf *report, replident_stop_fn stop, void *arg)
{
	PGresult *res = NULL;
	const char **ident = NULL;
	int rc = 0, short_tables = 0;
	for (size_t k = 0; k < policy_table_count(p); k++) {
		const policy_table *t = policy_table_at(p, k);
		const char *params[2] = {policy_table_schema(t), policy_table_name(t)};
		PQclear(res);
		res = exec_until(conn, params, stop, arg, &rc);
		if (rc == -ECANCELED)
			goto cleanup;
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			buf_clear(report);
			rc = buf_printf(report, "reading the replica identity of %s.%s: %s", params[0], params[1],
			                PQerrorMessage(conn));
			rc = rc < 0 ? rc : -EIO;
			goto cleanup;
		}
		int n = PQntuples(res);
		if (n == 0)
			continue; /* not in this database */
		free(ident);
		ident = calloc((size_t)n, sizeof(*ident));
		if (ident == NULL) {
			rc = -ENOMEM;
			goto cleanup;
		}
		size_t nident = 0;
		for (int r = 0; r < n; r++) {
			if (!PQgetisnull(res, r, 1))
				ident[nident++] = PQgetvalue(res, r, 1);
		}
		rc = replident_table_check(t, PQgetvalue(res, 0, 0)[0], ident, nident, report);
		if (rc < 0)
			goto cleanup;
		short_tables += rc;
		rc = 0;
	}
	if (short_tables > 0)
		rc = -EPROTO;
cleanup:
	free(ident);
	PQclear(res);
	return rc;
}

int replident_check(const policy *p, PGconn *conn, buf *report)
{
	return check_until(p, conn, report, NULL, NULL);
}

/* Connects, asking stop while the server does not answer: 0 (*out connected), -ECANCELED, or
 * -EIO with *out holding the failed connection (for its message) or NULL. */
static int connect_until(const char *conninfo, replident_stop_fn stop, void *arg, PGconn **out)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {conninfo, "walcast-replident", NULL};
	if (stop == NULL) {
		*out = PQconnectdbParams(keys, vals, 1); /* blocking, honours connect_timeout */
		return PQstatus(*out) == CONNECTION_OK ? 0 : -EIO;
	}
	PGconn *conn = *out = PQconnectStartParams(keys, vals, 1);
	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
		return -EIO;
	for (PostgresPollingStatusType st = PGRES_POLLING_WRITING; st != PGRES_POLLING_OK; st = PQconnectPoll(conn)) {
		if (st == PGRES_POLLING_FAILED)
			return -EIO;
		int rc = wait_socket(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, stop, arg);
		if (rc < 0)
			return rc == -ECANCELED ? rc : -EIO;
	}
	return 0;
}

int replident_check_conninfo(const policy *p, const char *conninfo)
{
	return replident_check_conninfo_until(p, conninfo, NULL, NULL);
}

int replident_check_conninfo_until(const policy *p, const char *conninfo, replident_stop_fn stop, void *arg)
{
	buf report;
	buf_init(&report);
	PGconn *conn = NULL;
	int rc = connect_until(conninfo, stop, arg, &conn);
	if (rc == -ECANCELED)
		goto cleanup;
	if (rc < 0) {
		log_error("replident.check_failed", "cannot connect to check replica identities: %s",
		          PQerrorMessage(conn));
		goto cleanup;
	}
	rc = check_until(p, conn, &report, stop, arg);
	if (rc == -ECANCELED) {
		goto cleanup;
	} else if (rc == -EPROTO) {
		/* One log line per table that falls short. */
		char *line = report.data;
		while (line != NULL && *line != '\0') {
			char *end = strchr(line, '\n');
			if (end != NULL)
				*end = '\0';
			log_error("replident.insufficient", "%s", line);
			line = end != NULL ? end + 1 : NULL;
		}
	} else if (rc < 0) {
		log_error("replident.check_failed", "%s", rc == -ENOMEM ? "out of memory" : report.data);
	}
cleanup:
	PQfinish(conn);
	buf_fini(&report);
	return rc;
}

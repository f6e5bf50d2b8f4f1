/*
 * main — walcast's command line: parses the verb and its flags, loads the configuration
 * (file, environment, flags) and hands over to the module that does the work.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "change.h"
#include "config.h"
#include "decoder.h"
#include "keyring.h"
#include "log.h"
#include "lsn.h"
#include "policy_sql.h"
#include "redis_backfill.h"
#include "token.h"
#include "run.h"
#include "sink.h"
#include "tail.h"

#define MAX_TABLES 64

/* The options every verb that reads the database takes; %s is the list of decoders. */
static const char common_options[] =
	"common options:\n"
	"  -c, --config FILE     configuration file (key = value under [sections])\n"
	"  -d, --conninfo STR    libpq connection string (default: PG* environment)\n"
	"  -S, --slot NAME       replication slot (default walcast; tail without --slot uses\n"
	"                        a temporary slot of its own, gone when it exits)\n"
	"  -P, --plugin NAME     output plugin: %s (default pgoutput)\n"
	"      --publication N   publication for pgoutput (default walcast)\n"
	"      --no-create-slot  fail instead of creating a missing slot\n"
	"      --temporary       use a temporary slot (gone when walcast exits)\n"
	"  -v, --verbose         debug logging (log.level=debug)\n"
	"      --set S.KEY=VALUE set any configuration key, e.g. --set log.format=json,\n"
	"                        --set sink.audit.path=/x; repeatable, the last one wins\n";

static const char tail_options_help[] =
	"tail options:\n"
	"  -t, --table T         only this table (name or schema.name); repeatable\n"
	"  -a, --action LIST     only these actions: insert,update,delete,truncate,message\n"
	"      --until-lsn LSN   stop once the stream has passed LSN (X/Y)\n"
	"  -n, --max-changes N   stop after printing N changes\n"
	"  -o, --output FILE     append to FILE, exactly once across restarts (FILE.pos\n"
	"                        holds the checkpoint; read FILE up to its offset); needs --slot\n"
	"      --with-types      add each relation's column names and type OIDs\n"
	"      --as USER_ID      print only what this user may see, masks applied\n"
	"      --jwt TOKEN       the same for the user of a JWT (auth.jwt_secret or\n"
	"                        auth.jwks_file verifies it)\n"
	"      --policy FILE     the policy file (default deploy/policy.ini)\n"
	"      --create-publication  create a missing publication (pgoutput) for the\n"
	"                        tables of the policy file; without it, it is an error\n";

static const char env_help[] =
	"Every configuration key can also be set as WALCAST_<SECTION>_<KEY>, e.g.\n"
	"WALCAST_REPLICATION_SLOT=walcast, or WALCAST_SINK_<NAME>_<KEY> for a [sink.NAME]\n"
	"section. Flags win over the environment, the environment over the file.\n"
	"See docs/configuration.md.\n";

static void usage(FILE *f)
{
	char names[128];
	fprintf(f,
	        "walcast %s — PostgreSQL WAL to live, privacy-filtered feeds\n"
	        "\n"
	        "usage: walcast [--config FILE] VERB [OPTIONS]\n"
	        "       walcast VERB --help    (the options of one verb)\n"
	        "\n"
	        "verbs:\n"
	        "  run      the daemon: the slot's changes to the sinks of [sink.NAME] sections\n"
	        "  tail     print the changes of a replication slot as JSON lines\n"
	        "  status   show the slot, its lag and health\n"
	        "  backfill rebuild a redis sink's aggregates from a snapshot (walcast run stopped)\n"
	        "  policy sql  print the RLS policies and masking views generated from the policy\n"
	        "           file (--policy FILE, default deploy/policy.ini)\n"
	        "  encrypt  encrypt stdin lines for a bytea column: [CONTEXT<TAB>]TEXT -> \\x...\n"
	        "\n",
	        WALCAST_VERSION);
	fprintf(f, common_options, decoder_names(names, sizeof(names)));
	fprintf(f, "\n%s\n  --version, --help\n\n%s", tail_options_help, env_help);
}

/* `walcast VERB --help`: that verb's usage and options. 0, or -ENOENT for an unknown verb. */
static int verb_usage(FILE *f, const char *verb)
{
	char names[128], sinks[128];
	decoder_names(names, sizeof(names));
	if (strcmp(verb, "run") == 0) {
		fprintf(f, "usage: walcast -c FILE run [--policy FILE] [--set S.KEY=VALUE]...\n"
		           "\n"
		           "The daemon: streams the slot through the policy to every sink configured in a\n"
		           "[sink.NAME] section (types: %s), serves /healthz, /readyz and /metrics on\n"
		           "http.listen, keeps the policy state's checkpoint in pipeline.state_dir. The slot\n"
		           "is confirmed up to what every durable sink holds. SIGHUP reloads the file (a bad\n"
		           "one is refused and the running configuration kept); SIGTERM or SIGINT drains:\n"
		           "stops reading, flushes the durable sinks, confirms, exits 0 (1 when they could\n"
		           "not flush within pipeline.drain_timeout). See docs/operations.md.\n\n"
		           "options:\n"
		           "      --policy FILE     the policy file (default deploy/policy.ini)\n\n",
		        sink_names(sinks, sizeof(sinks)));
		fprintf(f, common_options, names);
		fprintf(f, "\n%s", env_help);
	} else if (strcmp(verb, "tail") == 0) {
		fprintf(f, "usage: walcast [--config FILE] tail [OPTIONS]\n"
		           "\n"
		           "Print the changes of a replication slot as JSON lines (one object per change;\n"
		           "see docs/decoders.md). To stdout: at least once. With --output FILE: exactly once\n"
		           "across restarts. With --as/--jwt: only what that user may see.\n\n");
		fprintf(f, "%s\n", tail_options_help);
		fprintf(f, common_options, names);
		fprintf(f, "\n%s", env_help);
	} else if (strcmp(verb, "backfill") == 0) {
		fprintf(f, "usage: walcast -c FILE backfill [--sink NAME] [--set S.KEY=VALUE]...\n"
		           "\n"
		           "Rebuild the aggregates of the redis sink NAME (the only one when not given) from a\n"
		           "consistent snapshot of its table, then hand over to walcast run at exactly the\n"
		           "snapshot's LSN. Stop walcast run first. A progress line on a terminal. See\n"
		           "docs/aggregates.md, \"Backfill\".\n\n");
		fprintf(f, common_options, names);
		fprintf(f, "\n%s", env_help);
	} else if (strcmp(verb, "status") == 0) {
		fprintf(f, "usage: walcast [--config FILE] status [-S SLOT] [-d CONNINFO]\n"
		           "\n"
		           "Print one JSON object about the slot: plugin, active, confirmed_flush_lsn,\n"
		           "restart_lsn, wal_status, lag_bytes, retained_bytes, healthy. Exit status 0 when\n"
		           "the slot is healthy, 1 when it is missing or lost.\n\n");
		fprintf(f, common_options, names);
		fprintf(f, "\n%s", env_help);
	} else if (strcmp(verb, "policy") == 0) {
		fprintf(f, "usage: walcast policy sql [--policy FILE]\n"
		           "\n"
		           "Print the RLS policies and masking views generated from the policy file, exactly\n"
		           "as deploy/migrations carries them.\n"
		           "\n"
		           "options:\n"
		           "      --policy FILE     the policy file (default deploy/policy.ini)\n");
	} else if (strcmp(verb, "encrypt") == 0) {
		fprintf(f, "usage: walcast [--config FILE] encrypt < LINES\n"
		           "\n"
		           "Encrypt each stdin line \"[CONTEXT<TAB>]TEXT\" for a bytea column: one line of\n"
		           "\\x... hex per input line, with the primary key of the keyring (keys.file, or\n"
		           "WALCAST_KEYS; see docs/encryption.md).\n"
		           "\n"
		           "options:\n"
		           "  -c, --config FILE     configuration file (keys.file)\n");
	} else {
		return -ENOENT;
	}
	return 0;
}

enum {
	OPT_PUBLICATION = 1000,
	OPT_NO_CREATE,
	OPT_TEMPORARY,
	OPT_UNTIL,
	OPT_WITH_TYPES,
	OPT_VERSION,
	OPT_HELP,
	OPT_POLICY,
	OPT_AS,
	OPT_JWT,
	OPT_CREATE_PUBLICATION,
	OPT_SET,
	OPT_SINK,
};

/* Warns (stderr, log format) about every inactive slot that retains WAL: PostgreSQL keeps that WAL
 * until the slot is read or dropped, and a forgotten one fills the disk. Blocking. */
static void status_warn_inactive(PGconn *conn)
{
	PGresult *res = PQexec(conn, "SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
	                             "coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots "
	                             "WHERE NOT active AND restart_lsn IS NOT NULL ORDER BY 2 DESC, 1");
	for (int i = 0; PQresultStatus(res) == PGRES_TUPLES_OK && i < PQntuples(res); i++)
		log_warn("status.inactive_slot", "slot=%s retains %s bytes of WAL (wal_status=%s) and nothing is "
		         "reading it: PostgreSQL keeps that WAL until the slot is used or dropped; if nothing will "
		         "use it again: SELECT pg_drop_replication_slot('%s')", PQgetvalue(res, i, 0),
		         PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 0));
	PQclear(res);
}

/* `walcast status`: one short blocking query on an ordinary connection (a CLI, not the loop). */
static int status_run(const config *cfg)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {cfg->conninfo, "walcast-status", NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	int code = 1;
	PGresult *res = NULL;
	if (conn != NULL)
		PQsetNoticeProcessor(conn, log_pg_notice, "status");
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "walcast status: cannot connect: %s", PQerrorMessage(conn));
		goto cleanup;
	}
	status_warn_inactive(conn);
	const char *params[] = {cfg->slot};
	res = PQexecParams(conn,
	                   "SELECT slot_name, plugin, active, active_pid, confirmed_flush_lsn, restart_lsn, "
	                   "wal_status, pg_current_wal_lsn(), "
	                   "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
	                   "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
	                   "FROM pg_replication_slots WHERE slot_name = $1",
	                   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "walcast status: %s", PQerrorMessage(conn));
		goto cleanup;
	}
	buf out;
	buf_init(&out);
	int rc = buf_puts(&out, "{\"slot\":");
	if (rc == 0)
		rc = buf_json_string(&out, cfg->slot, strlen(cfg->slot));
	bool lost = false;
	if (PQntuples(res) == 0) {
		if (rc == 0)
			rc = buf_puts(&out, ",\"exists\":false,\"healthy\":false}\n");
	} else {
		/* Text columns as JSON strings (escaped), numbers as numbers, SQL NULL as null: a lost
		 * slot has no restart_lsn, a physical one no plugin. */
		static const struct {
			const char *name;
			int col;
			char kind; /* 's' string, 'n' number, 'b' boolean */
		} fields[] = {
			{"plugin", 1, 's'}, {"active", 2, 'b'}, {"active_pid", 3, 'n'},
			{"confirmed_flush_lsn", 4, 's'}, {"restart_lsn", 5, 's'}, {"wal_status", 6, 's'},
			{"current_wal_lsn", 7, 's'}, {"lag_bytes", 8, 'n'}, {"retained_bytes", 9, 'n'},
		};
		lost = !PQgetisnull(res, 0, 6) && strcmp(PQgetvalue(res, 0, 6), "lost") == 0;
		if (rc == 0)
			rc = buf_puts(&out, ",\"exists\":true");
		for (size_t i = 0; rc == 0 && i < sizeof(fields) / sizeof(fields[0]); i++) {
			const char *v = PQgetvalue(res, 0, fields[i].col);
			rc = buf_printf(&out, ",\"%s\":", fields[i].name);
			if (rc != 0)
				break;
			if (PQgetisnull(res, 0, fields[i].col))
				rc = buf_puts(&out, "null");
			else if (fields[i].kind == 's')
				rc = buf_json_string(&out, v, strlen(v));
			else if (fields[i].kind == 'b')
				rc = buf_puts(&out, v[0] == 't' ? "true" : "false");
			else
				rc = buf_puts(&out, v);
		}
		if (rc == 0)
			rc = buf_printf(&out, ",\"healthy\":%s}\n", lost ? "false" : "true");
		code = lost ? 1 : 0;
	}
	if (rc != 0 || fwrite(out.data, 1, out.len, stdout) != out.len) {
		fprintf(stderr, "walcast status: cannot write the output\n");
		code = 1;
	}
	buf_fini(&out);
cleanup:
	PQclear(res);
	PQfinish(conn);
	return code;
}

/* `walcast policy sql`: the SQL for the policy file, exactly as deploy/migrations carries it. */
static int policy_sql_run(const char *path)
{
	buf out;
	char err[POLICY_ERROR_MAX];
	int code = 1;
	buf_init(&out);
	if (policy_sql_generate_file(path, &out, err) < 0) {
		fprintf(stderr, "walcast: %s\n", err);
		goto cleanup;
	}
	if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
		fprintf(stderr, "walcast policy sql: cannot write the output: %s\n", strerror(errno));
		goto cleanup;
	}
	code = 0;
cleanup:
	buf_fini(&out);
	return code;
}

/* `walcast encrypt`: each stdin line "[CONTEXT<TAB>]PLAINTEXT" becomes one line of bytea hex
 * ("\x...") in the stored format of src/policy/keyring.h, for writers, the demo and tests. */
static int encrypt_run(const config *cfg)
{
	keyring *k = NULL;
	char err[KEYRING_ERROR_MAX];
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	buf out;
	int code = 1;
	buf_init(&out);
	int rc = cfg->keys_file[0] ? keyring_load_file(cfg->keys_file, &k, err)
	                           : keyring_load_env("WALCAST_KEYS", &k, err);
	if (rc < 0) {
		fprintf(stderr, "walcast encrypt: %s\n", rc == -ENOENT && !cfg->keys_file[0]
		        ? "no keys: set keys.file (WALCAST_KEYS_FILE) or WALCAST_KEYS" : err);
		goto cleanup;
	}
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		char *tab = memchr(line, '\t', (size_t)n);
		const char *ctx = tab ? line : "";
		size_t ctx_len = tab ? (size_t)(tab - line) : 0;
		const char *plain = tab ? tab + 1 : line;
		size_t plain_len = tab ? (size_t)n - ctx_len - 1 : (size_t)n;
		buf_clear(&out);
		if (keyring_encrypt_hex(k, 0, plain, plain_len, ctx, ctx_len, &out) < 0 || buf_putc(&out, '\n') < 0) {
			fprintf(stderr, "walcast encrypt: encryption failed\n");
			goto cleanup;
		}
		fwrite(out.data, 1, out.len, stdout);
		fflush(stdout);
	}
	code = 0;
cleanup:
	free(line);
	buf_fini(&out);
	keyring_destroy(k);
	return code;
}

static int actions_parse(const char *list, unsigned *out)
{
	size_t n = strlen(list);
	if (n == 0 || list[0] == ',' || list[n - 1] == ',' || strstr(list, ",,") != NULL) {
		fprintf(stderr, "walcast: --action: '%s' has an empty action (insert, update, delete, truncate, "
		        "message, separated by commas)\n", list);
		return -EINVAL;
	}
	char *copy = strdup(list);
	if (copy == NULL)
		return -ENOMEM;
	unsigned mask = 0;
	int rc = 0;
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		change_action a;
		if (change_action_parse(tok, &a) < 0) {
			fprintf(stderr, "walcast: unknown action '%s' (insert, update, delete, truncate, message)\n", tok);
			rc = -EINVAL;
			break;
		}
		mask |= 1u << a;
	}
	free(copy);
	if (rc == 0)
		*out = mask;
	return rc;
}

/* --table: "name" or "schema.name", neither part empty. 0 or -EINVAL (said on stderr). */
static int table_name_check(const char *t)
{
	const char *dot = strchr(t, '.');
	if (t[0] == '\0' || t[0] == '.' || (dot != NULL && dot[1] == '\0')) {
		fprintf(stderr, "walcast: --table: '%s' is not a table name (name or schema.name)\n", t);
		return -EINVAL;
	}
	return 0;
}

/* A flag that sets a configuration key; applied after the file and the environment, in the
 * order given. --set carries "section.key=value" in assignment instead. */
typedef struct flag_setting {
	const char *section;
	const char *key;
	const char *value;
	const char *assignment;
} flag_setting;

/* glibc's allocator hands blocks of 128 kB and more back to the kernel when they are freed, and
 * lowers its heap when 128 kB lie free at its top; hiredis allocates a whole command (a redis or
 * redis_stream round: up to round_bytes, its output buffer twice that) and frees it once written,
 * so every round touched fresh pages again: ~1 page fault per stream entry, 35-45 % of walcast's
 * CPU publishing the change stream on a virtual machine (bench/redis_bench.sh). Blocks up to 8 MB
 * come from the heap and up to 32 MB of it may stay free; MALLOC_MMAP_THRESHOLD_ or
 * MALLOC_TRIM_THRESHOLD_ in the environment choose otherwise. */
static void allocator_setup(void)
{
#ifdef __GLIBC__
	if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL && getenv("MALLOC_TRIM_THRESHOLD_") == NULL) {
		mallopt(M_MMAP_THRESHOLD, 8 << 20);
		mallopt(M_TRIM_THRESHOLD, 32 << 20);
	}
#endif
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"conninfo", required_argument, NULL, 'd'},
		{"slot", required_argument, NULL, 'S'},
		{"plugin", required_argument, NULL, 'P'},
		{"publication", required_argument, NULL, OPT_PUBLICATION},
		{"no-create-slot", no_argument, NULL, OPT_NO_CREATE},
		{"temporary", no_argument, NULL, OPT_TEMPORARY},
		{"verbose", no_argument, NULL, 'v'},
		{"table", required_argument, NULL, 't'},
		{"action", required_argument, NULL, 'a'},
		{"until-lsn", required_argument, NULL, OPT_UNTIL},
		{"max-changes", required_argument, NULL, 'n'},
		{"output", required_argument, NULL, 'o'},
		{"with-types", no_argument, NULL, OPT_WITH_TYPES},
		{"version", no_argument, NULL, OPT_VERSION},
		{"help", no_argument, NULL, 'h'},
		{"policy", required_argument, NULL, OPT_POLICY},
		{"as", required_argument, NULL, OPT_AS},
		{"jwt", required_argument, NULL, OPT_JWT},
		{"create-publication", no_argument, NULL, OPT_CREATE_PUBLICATION},
		{"set", required_argument, NULL, OPT_SET},
		{"sink", required_argument, NULL, OPT_SINK},
		{NULL, 0, NULL, 0},
	};
	config cfg;
	tail_options topt = {0};
	const char *tables[MAX_TABLES];
	flag_setting flags[64];
	size_t ntables = 0;
	int nflags = 0;
	const char *config_path = getenv("WALCAST_CONFIG");
	const char *policy_path = "deploy/policy.ini";
	const char *as_user = NULL;
	const char *jwt = NULL;
	bool slot_given = false;
	const char *backfill_sink = NULL;
	char viewer_uid[POLICY_UUID_TEXT_LEN + 1];
	char temp_slot[64];
	char viewer_role[TOKEN_ROLE_MAX];
	bool help = false;
	int code = 2;
	char err[CONFIG_ERROR_MAX];

	allocator_setup();
	run_signals_hold(true); /* until `run` has its handlers (run.h) */
	if (config_init(&cfg) < 0) {
		fprintf(stderr, "walcast: out of memory\n");
		return 1;
	}
	int c;
	while ((c = getopt_long(argc, argv, "c:d:S:P:vt:a:n:o:h", options, NULL)) != -1) {
		flag_setting f = {NULL, NULL, optarg, NULL};
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'd': f.section = "postgres", f.key = "conninfo"; break;
		case 'S': f.section = "replication", f.key = "slot", slot_given = true; break;
		case 'P': f.section = "replication", f.key = "plugin"; break;
		case OPT_PUBLICATION: f.section = "replication", f.key = "publication"; break;
		case OPT_NO_CREATE: f.section = "replication", f.key = "create_slot", f.value = "false"; break;
		case OPT_TEMPORARY: f.section = "replication", f.key = "temporary_slot", f.value = "true"; break;
		case 'v': f.section = "log", f.key = "level", f.value = "debug"; break;
		case OPT_SET: f.section = "", f.assignment = optarg; break;
		case OPT_SINK: backfill_sink = optarg; break;
		case 't':
			if (table_name_check(optarg) < 0)
				goto cleanup;
			if (ntables == MAX_TABLES) {
				fprintf(stderr, "walcast: at most %d --table options\n", MAX_TABLES);
				goto cleanup;
			}
			tables[ntables++] = optarg;
			break;
		case 'a':
			if (actions_parse(optarg, &topt.actions) < 0)
				goto cleanup;
			break;
		case OPT_UNTIL:
			if (lsn_parse(optarg, strlen(optarg), &topt.until_lsn) < 0) {
				fprintf(stderr, "walcast: --until-lsn: '%s' is not an LSN (X/Y)\n", optarg);
				goto cleanup;
			}
			break;
		case 'n': {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || n == 0 || optarg[0] == '-') {
				fprintf(stderr, "walcast: --max-changes: '%s' is not a positive number\n", optarg);
				goto cleanup;
			}
			topt.max_changes = n;
			break;
		}
		case 'o': topt.output_path = optarg; break;
		case OPT_WITH_TYPES: topt.with_types = true; break;
		case OPT_POLICY: policy_path = optarg; break;
		case OPT_AS: as_user = optarg; break;
		case OPT_JWT: jwt = optarg; break;
		case OPT_CREATE_PUBLICATION: topt.create_publication = true; break;
		case OPT_VERSION:
			printf("walcast %s\n", WALCAST_VERSION);
			code = 0;
			goto cleanup;
		case 'h':
			help = true; /* after the loop: the verb, if one is given, says which help */
			break;
		default:
			fprintf(stderr, "Try 'walcast --help'.\n");
			goto cleanup;
		}
		if (f.section != NULL) {
			if (nflags == (int)(sizeof(flags) / sizeof(flags[0]))) {
				fprintf(stderr, "walcast: too many options\n");
				goto cleanup;
			}
			flags[nflags++] = f;
		}
	}
	if (help) {
		if (optind >= argc) {
			usage(stdout);
			code = 0;
		} else if (verb_usage(stdout, argv[optind]) == 0) {
			code = 0;
		} else {
			fprintf(stderr, "walcast: unknown verb '%s'\n", argv[optind]);
			usage(stderr);
		}
		goto cleanup;
	}
	if (optind < argc && strcmp(argv[optind], "policy") == 0) {
		if (optind + 2 != argc || strcmp(argv[optind + 1], "sql") != 0) {
			fprintf(stderr, "walcast: usage: walcast policy sql [--policy FILE]\n");
			goto cleanup;
		}
		code = policy_sql_run(policy_path);
		goto cleanup;
	}
	if (optind != argc - 1) {
		fprintf(stderr, optind >= argc ? "walcast: no verb given\n" : "walcast: one verb expected\n");
		usage(stderr);
		goto cleanup;
	}
	const char *verb = argv[optind];
	if (strcmp(verb, "run") != 0)
		run_signals_hold(false);

	/* Configuration: defaults < file < environment < flags. */
	if (config_path != NULL && config_load_file(&cfg, config_path, err) < 0) {
		fprintf(stderr, "walcast: %s\n", err);
		goto cleanup;
	}
	if (config_load_env(&cfg, err) < 0) {
		fprintf(stderr, "walcast: %s\n", err);
		goto cleanup;
	}
	for (int i = 0; i < nflags; i++) {
		if (flags[i].assignment != NULL) {
			if (config_set_override(&cfg, flags[i].assignment, err) < 0) {
				fprintf(stderr, "walcast: %s\n", err);
				goto cleanup;
			}
		} else if (config_override(&cfg, flags[i].section, flags[i].key, flags[i].value, err) < 0) {
			fprintf(stderr, "walcast: --%s: %s\n", flags[i].key, err);
			goto cleanup;
		}
	}
	/* [sink.NAME] sections: each needs a type (the verb that runs sinks checks the rest). */
	if (config_check_sections(&cfg, NULL, NULL, err) < 0) {
		fprintf(stderr, "walcast: %s\n", err);
		goto cleanup;
	}
	if (log_configure(cfg.log_level, cfg.log_format) < 0) {
		fprintf(stderr, "walcast: log.level '%s' or log.format '%s' is not valid\n", cfg.log_level,
		        cfg.log_format);
		goto cleanup;
	}
	if (decoder_ops_find(cfg.plugin) == NULL) {
		char names[128];
		fprintf(stderr, "walcast: replication.plugin: unknown plugin '%s' (known: %s)\n", cfg.plugin,
		        decoder_names(names, sizeof(names)));
		goto cleanup;
	}

	if (strcmp(verb, "run") == 0) {
		if (config_path == NULL) {
			fprintf(stderr, "walcast: run needs a configuration file: walcast -c FILE run\n");
			goto cleanup;
		}
		run_options ropt = {.policy_path = policy_path};
		code = run_main(&cfg, &ropt);
	} else if (strcmp(verb, "tail") == 0) {
		topt.tables = tables;
		topt.ntables = ntables;
		topt.policy_path = policy_path;
		if (as_user != NULL && jwt != NULL) {
			fprintf(stderr, "walcast: give --as or --jwt, not both\n");
			goto cleanup;
		}
		if (as_user != NULL) {
			if (policy_uuid_canonical(as_user, strlen(as_user), viewer_uid) < 0) {
				fprintf(stderr, "walcast: --as: '%s' is not a user id (uuid)\n", as_user);
				goto cleanup;
			}
			topt.viewer_uid = viewer_uid;
		} else if (jwt != NULL) {
			token_claims claims;
			char terr[TOKEN_ERROR_MAX];
			token_keys *tkeys = NULL;
			token_rules rules = {cfg.jwt_audience, cfg.jwt_require_exp,
			                     (double)cfg.jwt_leeway_ms / 1000.0};
			if (token_keys_load(cfg.jwt_secret, cfg.jwks_file, &tkeys, terr) < 0) {
				fprintf(stderr, "walcast: %s\n", terr);
				goto cleanup;
			}
			int trc = token_verify(tkeys, &rules, jwt, (int64_t)time(NULL), &claims, terr);
			token_keys_destroy(tkeys);
			if (trc < 0) {
				fprintf(stderr, "walcast: --jwt: %s\n", terr);
				code = 1;
				goto cleanup;
			}
			if (claims.sub[0] != '\0') {
				if (policy_uuid_canonical(claims.sub, strlen(claims.sub), viewer_uid) < 0) {
					fprintf(stderr, "walcast: --jwt: the sub claim is not a user id (uuid)\n");
					code = 1;
					goto cleanup;
				}
				topt.viewer_uid = viewer_uid;
			}
			snprintf(viewer_role, sizeof(viewer_role), "%s", claims.role);
			topt.viewer_role = viewer_role;
		}
		if (as_user != NULL || jwt != NULL) {
			topt.viewer = true;
			topt.policy_path = policy_path;
		}
		if (topt.output_path != NULL && (!slot_given || cfg.temporary_slot)) {
			/* Exactly once across restarts needs a slot that outlives the run. */
			fprintf(stderr, "walcast: --output needs a durable slot: give --slot NAME (created on first "
			        "use and kept, so the next run resumes exactly where this one stopped)%s\n",
			        cfg.temporary_slot ? ", without --temporary" : "");
			goto cleanup;
		}
		if (!slot_given) {
			/* An ad-hoc tail: a private temporary slot, dropped with the connection, so nothing is
			 * left pinning WAL; with a viewer its snapshot also makes the policy state exact. */
			snprintf(temp_slot, sizeof(temp_slot), "walcast_tail_%ld", (long)getpid());
			if (config_set(&cfg, "replication", "slot", temp_slot, err) < 0 ||
			    config_set(&cfg, "replication", "temporary_slot", "true", err) < 0) {
				fprintf(stderr, "walcast: %s\n", err);
				goto cleanup;
			}
		}
		code = tail_run(&cfg, &topt);
	} else if (strcmp(verb, "backfill") == 0) {
		if (config_path == NULL) {
			fprintf(stderr, "walcast: backfill needs the configuration of walcast run: walcast -c FILE backfill\n");
			goto cleanup;
		}
		redis_backfill_options bopt = {.sink = backfill_sink, .chunk_rows = 10000, .progress = isatty(STDERR_FILENO)};
		code = redis_backfill_main(&cfg, &bopt);
	} else if (strcmp(verb, "status") == 0) {
		code = status_run(&cfg);
	} else if (strcmp(verb, "encrypt") == 0) {
		code = encrypt_run(&cfg);
	} else {
		fprintf(stderr, "walcast: unknown verb '%s'\n", verb);
		usage(stderr);
	}
cleanup:
	config_fini(&cfg);
	return code;
}

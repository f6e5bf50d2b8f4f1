/*
 * jsonl_run — a small front end for tests/integration/jsonl_sink.sh: one pipeline (no policy
 * stage) with one jsonl sink, the way `walcast run` with a [sink.NAME] type = jsonl section and
 * `walcast tail --output` will drive it. SIGTERM/SIGINT drain; with UNTIL_LSN, it drains once
 * the stream has passed that position.
 *
 *   jsonl_run PLUGIN SLOT PUBLICATION FILE [TABLES [UNTIL_LSN]]
 *
 * The connection comes from the PG* environment variables. With JSONL_POLICY=FILE the pipeline
 * has a policy stage (keys from WALCAST_KEYS) and its checkpoint store in FILE.state/ (the rule
 * of docs/sinks.md), and the sink writes what JSONL_AS (a user id) may see. Exit status: 0 after
 * a clean drain, 1 on failure, 2 on bad arguments. JSONL_FLUSH_BYTES=N sets the sink's
 * flush_bytes (1: every transaction made durable inside its commit).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "config.h"
#include "jsonl.h"
#include "keyring.h"
#include "log.h"
#include "loop.h"
#include "lsn.h"
#include "pipeline.h"
#include "source.h"

typedef struct run {
	loop *l;
	pipeline *pl;
	uint64_t until;
	bool draining;
	int code;
} run;

static void stopped_cb(void *arg, int code)
{
	run *r = arg;
	r->code = code;
	loop_stop(r->l);
}

static void signal_cb(loop *l, int signo, void *arg)
{
	run *r = arg;
	if (!r->draining) {
		r->draining = true;
		pipeline_drain(r->pl);
	}
}

static void until_cb(loop *l, int id, void *arg)
{
	run *r = arg;
	pipeline_status st;
	pipeline_get_status(r->pl, &st);
	if (r->draining)
		return;
	if (st.last_commit_end >= r->until || st.server_wal_end >= r->until) {
		r->draining = true;
		pipeline_drain(r->pl);
		return;
	}
	if (loop_timer_add(l, 20, until_cb, r) < 0)
		r->code = 1;
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 7) {
		fprintf(stderr, "usage: jsonl_run PLUGIN SLOT PUBLICATION FILE [TABLES [UNTIL_LSN]]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	run r = {.code = 1};
	config cfg;
	char err[PIPELINE_ERROR_MAX > CONFIG_ERROR_MAX ? PIPELINE_ERROR_MAX : CONFIG_ERROR_MAX];
	if (config_init(&cfg) < 0)
		return 1;
	if (config_set(&cfg, "replication", "plugin", argv[1], err) < 0 ||
	    config_set(&cfg, "replication", "slot", argv[2], err) < 0 ||
	    config_set(&cfg, "replication", "publication", argv[3], err) < 0) {
		fprintf(stderr, "jsonl_run: %s\n", err);
		config_fini(&cfg);
		return 2;
	}
	if (argc == 7 && lsn_parse(argv[6], strlen(argv[6]), &r.until) < 0) {
		fprintf(stderr, "jsonl_run: '%s' is not an LSN\n", argv[6]);
		config_fini(&cfg);
		return 2;
	}
	jsonl_conf jc;
	jsonl_conf_defaults(&jc, argv[4]);
	if (argc >= 6)
		jc.tables = argv[5];
	if (getenv("JSONL_FLUSH_BYTES") != NULL)
		jc.flush_bytes = atoll(getenv("JSONL_FLUSH_BYTES"));
	policy *pol = NULL;
	keyring *keys = NULL;
	checkpoint_store *store = NULL;
	const char *policy_path = getenv("JSONL_POLICY");
	if (policy_path != NULL) {
		char perr[POLICY_ERROR_MAX], kerr[KEYRING_ERROR_MAX], cerr[CHECKPOINT_ERROR_MAX], dir[4096];
		if (policy_load_file(policy_path, &pol, perr) < 0) {
			fprintf(stderr, "jsonl_run: %s\n", perr);
			goto cleanup;
		}
		int krc = keyring_load_env("WALCAST_KEYS", &keys, kerr);
		if (krc < 0 && krc != -ENOENT) {
			fprintf(stderr, "jsonl_run: %s\n", kerr);
			goto cleanup;
		}
		snprintf(dir, sizeof(dir), "%s.state", argv[4]);
		if (checkpoint_dir_create(dir, &store, cerr) < 0) {
			fprintf(stderr, "jsonl_run: %s\n", cerr);
			goto cleanup;
		}
		jc.as = getenv("JSONL_AS") ? getenv("JSONL_AS") : "";
	}
	r.l = loop_create();
	if (r.l == NULL)
		goto cleanup;
	pipeline_params p = {.loop = r.l, .cfg = &cfg, .source = &replication_source_ops, .pol = pol, .keys = keys,
	                     .store = store, .stopped_cb = stopped_cb, .arg = &r};
	if (pipeline_create(&p, &r.pl, err) < 0 || pipeline_add_sink(r.pl, sink_ops_find("jsonl"), "out", &jc, err) < 0) {
		fprintf(stderr, "jsonl_run: %s\n", err);
		goto cleanup;
	}
	if (loop_signal(r.l, SIGTERM, signal_cb, &r) < 0 || loop_signal(r.l, SIGINT, signal_cb, &r) < 0)
		goto cleanup;
	if (r.until != 0 && loop_timer_add(r.l, 20, until_cb, &r) < 0)
		goto cleanup;
	if (pipeline_start(r.pl, err) < 0) {
		fprintf(stderr, "jsonl_run: %s\n", err);
		goto cleanup;
	}
	if (loop_run(r.l) < 0)
		r.code = 1;
cleanup:
	pipeline_destroy(r.pl);
	loop_destroy(r.l);
	checkpoint_store_destroy(store);
	keyring_destroy(keys);
	policy_destroy(pol);
	config_fini(&cfg);
	return r.code;
}

/*
 * tail — `walcast tail`: a thin front end on the pipeline (see tail.h). Its options become one
 * pipeline (src/pipeline/pipeline.h) with one jsonl sink (plugins/sinks/jsonl.h): --output FILE
 * or stdout is the sink's path, --as/--jwt its one user, -t/-a its filters, -n/--until-lsn its
 * limits. Everything else — the slot, the policy state (snapshot, checkpoint or today's
 * database), the judging, the checkpoint order, reconnects, the drain on SIGTERM — is the
 * pipeline's and the sink's, shared with `walcast run`.
 *
 * What only tail does: it reads the token's role as the policy grants it, refuses replica
 * identities the policy cannot judge, keeps a viewer's policy-state checkpoint beside FILE
 * (FILE.state/), creates the publication on --create-publication, and logs the tail.* lines
 * its users know (tail.state_current, tail.viewer_no_membership, tail.abandoned).
 */
#include "tail.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "jsonl.h"
#include "keyring.h"
#include "log.h"
#include "loop.h"
#include "pipeline.h"
#include "policy.h"
#include "policy_state.h"
#include "replident.h"
#include "source.h"
#include "uuid.h"

#define TAIL_ACTIONS_MAX 64
#define TAIL_TABLES_MAX 4096

typedef struct tail {
	const tail_options *opt;
	loop *loop;
	pipeline *pl;
	const policy *pol;
	bool to_file;
	bool state_saved;  /* the viewer's policy state is in FILE.state/ (FILE.pos says so) */
	bool ending;       /* a limit was reached or the reader went away: finishing */
	bool reader_gone;  /* stdout's reader went away: a normal end for a pipe */
	bool stopping;     /* a signal arrived: draining */
	int finish_timer;
	int exit_code;
} tail;

static int org_found_cb(void *arg, const policy_state_uuid *org, int rank)
{
	(void)arg, (void)org, (void)rank;
	return 1; /* one is enough */
}

/* Once the policy state is loaded: a viewer who is a member of no org sees (almost) nothing,
 * which looks like a broken feed. Said once, at start. */
static void viewer_membership_check(const tail *t)
{
	const char *uid = t->opt->viewer_uid;
	if (!t->opt->viewer || uid == NULL)
		return;
	policy_state_uuid u;
	if (uuid_parse(uid, strlen(uid), u.b) < 0)
		return;
	if (policy_state_user_orgs(pipeline_policy_state(t->pl), &u, org_found_cb, NULL) == 0)
		log_warn("tail.viewer_no_membership", "user=%s: is a member of no org (no org_roles row): the "
		         "feed shows only what such a user may see, which is nothing of the org tables, until "
		         "a membership is added", uid);
}

static void stopped_cb(void *arg, int code)
{
	tail *t = arg;
	/* the reader of stdout went away: the pipeline stops with the sink failed, a normal end */
	t->exit_code = t->reader_gone ? 0 : code;
	loop_stop(t->loop);
}

static void finish_timer_cb(loop *l, int id, void *arg)
{
	tail *t = arg;
	(void)l, (void)id;
	t->finish_timer = 0;
	pipeline_finish(t->pl);
}

/* The end of the run, decided inside a pipeline or sink callback: finished from the loop. */
static void finish_soon(tail *t)
{
	if (t->ending || t->stopping)
		return;
	t->ending = true;
	int id = loop_timer_add(t->loop, 0, finish_timer_cb, t);
	if (id < 0) {
		log_error("tail.loop", "cannot schedule the end: %s", strerror(-id));
		t->exit_code = 1;
		loop_stop(t->loop);
		return;
	}
	t->finish_timer = id;
}

/* jsonl_conf.end_cb: -n or --until-lsn reached, or stdout's reader went away. */
static void end_cb(void *arg, int why)
{
	tail *t = arg;
	if (why == JSONL_END_READER_GONE)
		t->reader_gone = true;
	finish_soon(t);
}

static void event_cb(void *arg, pipeline_event ev, uint64_t lsn)
{
	tail *t = arg;
	switch (ev) {
	case PIPELINE_STATE_CURRENT:
		log_warn("tail.state_current", "the slot already existed: policy state is loaded from the current "
		         "database, so changes replayed from before now are judged by today's memberships");
		/* fall through */
	case PIPELINE_STATE_CHECKPOINT:
	case PIPELINE_STATE_SNAPSHOT:
		t->state_saved = t->to_file; /* in FILE.state/ from now on: FILE.pos says so */
		viewer_membership_check(t);
		break;
	case PIPELINE_ABANDONED:
		/* With a viewer the sink is offered committed transactions only: nothing of this one
		 * reached FILE (without one, the sink cut its lines back and said so itself). */
		if (t->opt->viewer)
			log_info("tail.abandoned", "output=%s: a transaction cut off by a lost connection left "
			         "nothing in the output (it will be resent)", t->to_file ? t->opt->output_path : "stdout");
		break;
	case PIPELINE_IDLE:
		if (t->opt->until_lsn != 0 && lsn >= t->opt->until_lsn)
			finish_soon(t);
		break;
	}
}

static void signal_cb(loop *l, int signo, void *arg)
{
	tail *t = arg;
	if (t->stopping) {
		log_warn("tail.signal", "signal=%d again: exiting now; what was not confirmed is sent again", signo);
		t->exit_code = 1;
		loop_stop(l);
		return;
	}
	t->stopping = true;
	log_info("tail.signal", "signal=%d: stopping", signo);
	if (t->finish_timer > 0) {
		loop_timer_cancel(l, t->finish_timer);
		t->finish_timer = 0;
	}
	if (t->ending)
		pipeline_finish(t->pl); /* a limit was reached: nothing after it is waited for */
	else
		pipeline_drain(t->pl);
}

/* --create-publication: a missing publication is created for the tables the policy file
 * governs (its [table ...] sections), never FOR ALL TABLES. */
static int publication_from_policy(tail *t)
{
	char err[POLICY_ERROR_MAX];
	policy *own = NULL;
	const policy *p = t->pol;
	const char **schemas = NULL, **names = NULL;
	int rc = 0;
	if (p == NULL) {
		rc = policy_load_file(t->opt->policy_path, &own, err);
		if (rc < 0) {
			log_error("tail.policy", "%s", err);
			goto cleanup;
		}
		p = own;
	}
	size_t n = policy_table_count(p);
	if (n == 0) {
		log_error("tail.policy", "%s: --create-publication: the policy governs no table", t->opt->policy_path);
		rc = -EINVAL;
		goto cleanup;
	}
	schemas = calloc(n, sizeof(*schemas));
	names = calloc(n, sizeof(*names));
	if (schemas == NULL || names == NULL) {
		rc = -ENOMEM;
		goto cleanup;
	}
	for (size_t i = 0; i < n; i++) {
		schemas[i] = policy_table_schema(policy_table_at(p, i));
		names[i] = policy_table_name(policy_table_at(p, i));
	}
	rc = pipeline_publication_tables(t->pl, schemas, names, n);
cleanup:
	free(schemas);
	free(names);
	policy_destroy(own);
	return rc;
}

/* The sink's filters as its keys take them: tables and actions comma-separated. */
static int filters_text(const tail_options *opt, char tables[TAIL_TABLES_MAX], char actions[TAIL_ACTIONS_MAX])
{
	size_t used = 0;
	tables[0] = actions[0] = '\0';
	for (size_t i = 0; i < opt->ntables; i++) {
		int n = snprintf(tables + used, TAIL_TABLES_MAX - used, "%s%s", i ? "," : "", opt->tables[i]);
		if (n < 0 || (size_t)n >= TAIL_TABLES_MAX - used) {
			log_error("tail.config", "--table: too many tables (%zu)", opt->ntables);
			return -E2BIG;
		}
		used += (size_t)n;
	}
	used = 0;
	for (int a = CHANGE_INSERT; a <= CHANGE_MESSAGE; a++) {
		if (!(opt->actions & (1u << a)))
			continue;
		int n = snprintf(actions + used, TAIL_ACTIONS_MAX - used, "%s%s", used ? "," : "",
		                 change_action_name((change_action)a));
		if (n < 0 || (size_t)n >= TAIL_ACTIONS_MAX - used)
			return -E2BIG;
		used += (size_t)n;
	}
	return 0;
}

/* With a viewer: the policy, the keyring, the replica-identity check. 0 or a negative errno
 * (logged). */
static int viewer_setup(tail *t, const config *cfg, policy **pol, keyring **keys)
{
	const tail_options *opt = t->opt;
	char err[POLICY_ERROR_MAX];
	int rc = policy_load_file(opt->policy_path, pol, err);
	if (rc < 0) {
		log_error("tail.policy", "%s", err);
		return rc;
	}
	t->pol = *pol;
	char kerr[KEYRING_ERROR_MAX];
	rc = cfg->keys_file[0] ? keyring_load_file(cfg->keys_file, keys, kerr) : keyring_load_env("WALCAST_KEYS", keys, kerr);
	if (rc < 0 && !(rc == -ENOENT && !cfg->keys_file[0])) {
		log_error("tail.keys", "%s", kerr);
		return rc;
	}
	/* A DELETE is judged from the old row's replica identity: refuse to start when a governed
	 * table's identity lacks a column its rules read (src/policy/replident.h). A bypass role
	 * judges nothing. */
	const char *role = opt->viewer_role;
	bool bypass = role != NULL && policy_role_kind(*pol, role, strlen(role)) == POLICY_ROLE_BYPASS;
	if (!bypass && (rc = replident_check_conninfo(*pol, cfg->conninfo)) < 0)
		return rc;
	return 0;
}

int tail_run(const config *cfg, const tail_options *opt)
{
	tail t = {.opt = opt, .exit_code = 1, .to_file = opt->output_path != NULL};
	policy *pol = NULL;
	keyring *keys = NULL;
	checkpoint_store *store = NULL;
	char err[PIPELINE_ERROR_MAX > CHECKPOINT_ERROR_MAX ? PIPELINE_ERROR_MAX : CHECKPOINT_ERROR_MAX];
	char tables[TAIL_TABLES_MAX], actions[TAIL_ACTIONS_MAX];
	char *state_dir = NULL;
	signal(SIGPIPE, SIG_IGN);

	if (filters_text(opt, tables, actions) < 0)
		goto cleanup;
	if (opt->viewer && viewer_setup(&t, cfg, &pol, &keys) < 0)
		goto cleanup;
	if (opt->viewer && t.to_file) {
		/* The viewer's policy state lives beside the file it judges (docs/sinks.md). */
		size_t n = strlen(opt->output_path) + sizeof(".state");
		if ((state_dir = malloc(n)) == NULL)
			goto cleanup;
		snprintf(state_dir, n, "%s.state", opt->output_path);
		if (checkpoint_dir_create(state_dir, &store, err) < 0) {
			log_error("tail.state_dir", "%s: %s", state_dir, err);
			goto cleanup;
		}
	}
	if ((t.loop = loop_create()) == NULL)
		goto cleanup;
	pipeline_params pp = {
		.loop = t.loop, .cfg = cfg, .source = &replication_source_ops, .pol = pol, .keys = keys, .store = store,
		.stopped_cb = stopped_cb, .event_cb = event_cb, .arg = &t,
	};
	if (pipeline_create(&pp, &t.pl, err) < 0) {
		log_error("tail.config", "%s", err);
		goto cleanup;
	}
	jsonl_conf jc;
	jsonl_conf_defaults(&jc, t.to_file ? opt->output_path : "-");
	if (opt->viewer) {
		jc.as = (char *)(opt->viewer_uid != NULL ? opt->viewer_uid : "");
		/* A token without a role claim is no role the policy names: it sees nothing, as
		 * PostgreSQL would grant it nothing (the sink's empty role would mean a member). */
		jc.role = (char *)(opt->viewer_role == NULL ? "" : opt->viewer_role[0] ? opt->viewer_role : "(none)");
	}
	jc.with_types = opt->with_types;
	jc.tables = tables;
	jc.actions = actions;
	jc.max_changes = opt->max_changes;
	jc.until_lsn = opt->until_lsn;
	jc.end_cb = end_cb;
	jc.end_arg = &t;
	jc.log_name = "tail";
	jc.state_note = store != NULL ? &t.state_saved : NULL;
	if (pipeline_add_sink(t.pl, &jsonl_sink_ops, "tail", &jc, err) < 0) {
		log_error("tail.output_open", "%s", err);
		goto cleanup;
	}
	if (opt->create_publication && publication_from_policy(&t) < 0)
		goto cleanup;
	if (loop_signal(t.loop, SIGINT, signal_cb, &t) < 0 || loop_signal(t.loop, SIGTERM, signal_cb, &t) < 0)
		goto cleanup;
	if (pipeline_start(t.pl, err) < 0) {
		log_error("tail.start", "%s", err);
		goto cleanup;
	}
	int rc = loop_run(t.loop);
	if (rc < 0) {
		log_error("tail.loop", "event loop failed: %s", strerror(-rc));
		t.exit_code = 1;
	}
cleanup:
	if (t.finish_timer > 0)
		loop_timer_cancel(t.loop, t.finish_timer);
	pipeline_destroy(t.pl); /* the sink leaves FILE ending at its checkpoint */
	checkpoint_store_destroy(store);
	free(state_dir);
	keyring_destroy(keys);
	policy_destroy(pol);
	loop_destroy(t.loop);
	return t.exit_code;
}

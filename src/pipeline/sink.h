/*
 * sink — the contract every output of the pipeline implements (plugins/sinks/): jsonl, nng,
 * realtime (WebSocket), and later Redis. A sink is one file in plugins/sinks/ that defines a
 * sink_ops and one line in src/pipeline/sink.c's registry, like the decoders.
 *
 * What a sink is offered. The pipeline judges every change once (privacy + audience: the same
 * decision `walcast tail --as` makes) and offers each sink the committed transactions in commit
 * order:
 *
 *   begin(txn)
 *   deliver(sub, delivery)...   once per (change, audience that sees it, subscriber of this
 *                               sink in that audience), changes in stream order
 *   commit(txn)
 *
 * and a non-transactional logical message as deliver() calls outside begin/commit (its
 * change->txn is NULL). Without a policy (nothing to judge) the same calls come as the
 * transaction streams, and abort() instead of commit() when it is cut off. A sink receives changes only through the subscribers it registered
 * (sink_env.subscribe): one per user or bypass feed (jsonl), one per connection (WebSocket), or
 * one wildcard subscriber that is offered every audience of every row (nng topics).
 *
 * Ownership. The delivery and the change it carries are valid during the callback only, except
 * what the sink takes a reference to: the payload (audience_payload_ref) and the relation
 * (relation_ref). Nothing else may be kept.
 *
 * Durable and live. A durable sink (jsonl, redis) reports through position() the end LSN of the
 * last transaction it has durably taken; the pipeline confirms to PostgreSQL the lowest position
 * of all durable sinks, never more, and on start resumes streaming at the lowest of them (a sink
 * skips transactions at or before its own position). A durable sink that cannot keep up (Redis
 * down) keeps what it owes within its own bound and reports it in pending_bytes(); past the
 * pipeline's bound (pipeline.max_pending) the stream pauses: nothing is dropped, memory does not
 * grow without bound. A live sink (nng, WebSocket) takes what it can when it is offered and
 * never holds the slot back: its position is ignored and it drops (and counts) what a slow
 * consumer cannot take.
 *
 * Every callback runs on the loop thread and must not block. A callback returning a negative
 * errno stops the pipeline with that sink named as the cause (a fatal sink error); transient
 * trouble (a peer away) is the sink's own business, reported through healthy().
 */
#ifndef WALCAST_SINK_H
#define WALCAST_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audience.h"
#include "change.h"
#include "config.h"
#include "loop.h"
#include "metrics.h"

#define SINK_ERROR_MAX 512

typedef enum sink_kind {
	SINK_LIVE = 1,
	SINK_DURABLE = 2,
} sink_kind;

/* What the pipeline gives a sink instance at creation. Everything is borrowed and outlives the
 * instance. */
typedef struct sink_env {
	const char *name;          /* the instance's name: its config section is [sink.NAME] */
	loop *loop;
	metrics_registry *metrics; /* register the sink's own metrics here (label sink=NAME) */
	const policy *pol;         /* the pipeline's policy (a viewer's token role: policy_role_kind);
	                            * NULL without a policy stage (every subscriber is then bypass) */
	/* Registers a subscriber of this sink in the pipeline's audience: uid (uuid text) or NULL,
	 * bypass, or wildcard (offered every audience of every row: one delivery per audience, the
	 * subscriber repeated). sub_arg comes back in deliver(). 0 and *out, or a negative errno. */
	int (*subscribe)(void *env_arg, void *sub_arg, const char *uid, bool bypass, bool wildcard,
	                 audience_sub **out);
	void (*unsubscribe)(void *env_arg, audience_sub *s);
	/* A durable sink calls this when its position() moved (the pipeline may confirm more). */
	void (*progress)(void *env_arg);
	/* True once the pipeline streams with its policy state loaded: a subscriber registered now
	 * is offered every transaction committed after this moment (the realtime sink holds a join
	 * until then). Does not block. */
	bool (*live)(void *env_arg);
	/* The policy state as of the last commit (whose orgs a user is in: policy_state_user_orgs),
	 * NULL without a policy stage. Valid until the next callback returns. */
	const struct policy_state *(*state)(void *env_arg);
	void *env_arg;
	const config *cfg;          /* the daemon's configuration ([auth]: token keys and rules) */
	struct http_listener *http; /* the daemon's listener, not started yet (a WebSocket sink adds
	                             * its protocol to it); NULL when none is configured */
	/* The audit writer (auditlog.h), NULL when auditing is off: auditlog_record() for joins,
	 * refused joins, leaves and requests — never for a delivered change (nothing may loop). */
	struct auditlog *audit;
	/* A live sink's series of the shared families, labelled sink=NAME the same way for every
	 * sink (docs/metrics.md): walcast_sink_drops_total, which the sink bumps (metrics_counter_inc,
	 * loop thread) for each delivery it drops, and walcast_connections, read at scrape time on the
	 * loop thread through connections(arg) (a sink whose connections come and go on other
	 * threads reads an atomic there). Pass drops NULL or connections NULL to leave one out. Call
	 * from create, once. 0 and *drops (owned by the pipeline, valid until the sink is destroyed;
	 * NULL when there is no metrics registry: check before bumping), or a negative errno (the
	 * sink may go on without). NULL when the front end has no metrics. */
	int (*live_metrics)(void *env_arg, metrics_counter **drops, metrics_read_cb connections, void *arg);
	/* Membership changes of the committed policy state (the one state() returns): cb(arg, org,
	 * user, old_rank, new_rank) on the loop thread, at the commit that made the change, once the
	 * state reflects it (policy_state_change_cb: it may read the state, not change it). Call from
	 * create, once; the pipeline removes it when the sink is destroyed. 0, -ENOENT without a
	 * policy stage, or -ENOSPC (too many watchers). NULL when the front end has none. */
	int (*member_watch)(void *env_arg, policy_state_change_cb cb, void *arg);
	/* Privacy-rule changes of the committed policy state: cb(arg) on the loop thread once per
	 * rule row a commit adds, changes or removes, during that commit (before the sink's
	 * commit()). Call from create, once. 0, -ENOENT without a policy stage, or -EBUSY when set
	 * already. NULL when the front end has none. */
	int (*rule_watch)(void *env_arg, void (*cb)(void *arg), void *arg);
} sink_env;

typedef struct sink_ops {
	const char *name;      /* "jsonl", "nng": the value of `type` in a [sink.NAME] section */
	sink_kind kind;
	/* The sink's configuration keys (section name ignored: the pipeline applies them to the
	 * instance's section) and the size of the struct their offsets point into. */
	const config_key *keys;
	size_t nkeys;
	size_t conf_size;

	/* Creates an instance from its parsed configuration (conf: conf_size bytes, strings owned by
	 * the config). 0 and *out, or a negative errno with err. May block briefly (open a file,
	 * bind a socket) — it runs before the loop starts or on a reload. */
	int (*create)(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX]);
	/* Releases everything (after drain when stopping cleanly). Safe on NULL. */
	void (*destroy)(void *impl);

	/* The resume position of a durable sink: the end LSN of the last transaction it has durably
	 * taken (0: none). Read once before streaming starts and after every progress(). Live sinks:
	 * NULL. */
	uint64_t (*position)(void *impl);

	int (*begin)(void *impl, const change_txn *txn);
	/* One delivery for one of the sink's subscribers (sub_arg as given to subscribe). */
	int (*deliver)(void *impl, void *sub_arg, const audience_delivery *d);
	int (*commit)(void *impl, const change_txn *txn);

	/* A transaction was cut off before its commit: what was delivered of it since begin is to
	 * be forgotten; it comes again from its beginning. Happens only in a pipeline without a
	 * policy, which offers changes as they arrive (pipeline.h); with a policy the sinks are
	 * offered committed transactions only. May be NULL. */
	void (*abort)(void *impl);

	/* Bytes held that are not yet durable (durable sinks; NULL = 0). */
	size_t (*pending_bytes)(void *impl);
	/* false while the sink cannot do its job (Redis unreachable, file not writable): /readyz and
	 * the metrics say so. NULL = always healthy. */
	bool (*healthy)(void *impl);
	/* Make everything taken so far durable as soon as possible (SIGTERM drain, or the pipeline's
	 * periodic flush); completion is reported through progress(). NULL for live sinks. */
	int (*flush)(void *impl);
	/* Everything the pipeline read from the stream in one go has been offered (one read of the
	 * replication socket): a sink that groups what it was offered (nng's coalesced messages)
	 * sends it now, so grouping adds no latency. May be NULL. */
	void (*batch_end)(void *impl);
} sink_ops;

/* ---- a sink instance's own metric families -------------------------------------------- */

#define SINK_METRICS_MAX 16

/* The families one sink instance registered in the pipeline's registry, each with the label
 * sink=NAME, removed together when the instance goes. Zero it, then sink_metrics_add. */
typedef struct sink_metrics {
	metrics_family *fams[SINK_METRICS_MAX];
	size_t n;
} sink_metrics;

/* Registers family desc (its labels become {"sink"}) with this instance's series: read at
 * scrape time through cb(arg) when cb is set, else a histogram (*hist) or a counter (*counter)
 * as desc->kind says. A family another instance of the same sink type registered already
 * cannot be shared through metrics.h: this instance goes without it, logs `log_id` (e.g.
 * "nng.metrics") saying so, and gets 0 with *counter / *hist NULL. Without a registry
 * (env->metrics NULL): 0, nothing registered. 0, -ENOSPC past SINK_METRICS_MAX families, or a
 * negative errno (nothing of this family left registered). */
__attribute__((warn_unused_result)) int sink_metrics_add(sink_metrics *m, const sink_env *env,
                                                         const char *log_id, const metrics_desc *desc,
                                                         metrics_counter **counter,
                                                         metrics_histogram **hist,
                                                         metrics_read_cb cb, void *arg);

/* Removes every family m registered (env as given to sink_metrics_add). Safe when empty. */
void sink_metrics_remove(sink_metrics *m, const sink_env *env);

/* The registered sink type named name, or NULL. */
const sink_ops *sink_ops_find(const char *name);

/* Writes the space-separated names of the registered sink types into out and returns out. */
const char *sink_names(char *out, size_t n);

#endif

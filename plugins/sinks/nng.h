/*
 * nng — the live pub/sub sink for trusted backend consumers (docs/nng.md). One nng pub socket
 * (libnng 1.5.2) listening on every configured URL (tcp://, tls+tcp:// when tls_cert and
 * tls_key are set, ipc://); one wildcard subscriber in the pipeline's audience, so every
 * audience of every row becomes one message on its own topic (the families the topics key
 * names; with "all" alone the sink is a bypass subscriber and nothing else is judged). With
 * coalesce on, the payloads one topic gets from one read of the stream share one message, one
 * record per line (sent when the pipeline calls batch_end; 64 KB at most):
 *
 *   <topic_prefix><audience>/<schema>.<table>/ SP <record> ( LF <record> )*
 *   record:   <seq> SP <lsn> SP <payload JSON, one line>
 *
 *   audience: all                              the bypass audience (every row, unmasked)
 *             org/<org-uuid>/role/<role>       members of the row's org with that role
 *             org/<org-uuid>/user/<user-uuid>  the member named by a uid column of the row
 *   table:    schema.table, each part percent-encoded outside [A-Za-z0-9_$-]; _message for a
 *             logical message (pg_logical_emit_message)
 *
 * seq counts the payloads of that topic since the sink started (1, 2, ...): nng's pub drops the
 * oldest queued message of a slow subscriber without telling anyone, so a consumer detects loss
 * by a gap, and a restart by a 1. lsn is the commit LSN of the transaction (the change's own
 * LSN for a non-transactional message). The payload is the audience's view as judged by the
 * pipeline, sent as is.
 *
 * Subscriptions are filtering at the subscriber, not access control: every peer that connects
 * receives every topic's bytes. Bind to loopback or a private network, or require client
 * certificates (tls_ca).
 *
 * Not thread-safe: the loop thread owns an instance (nng's own threads only touch the
 * connection count, atomically). Nothing blocks after create.
 */
#ifndef WALCAST_SINK_NNG_H
#define WALCAST_SINK_NNG_H

#include <stddef.h>
#include <stdint.h>

#include "audience.h"
#include "buf.h"
#include "sink.h"

/* The sink type "nng" (registered in src/pipeline/sink.c). */
extern const sink_ops nng_sink_ops;

/* Parsed configuration of one [sink.NAME] section of type nng (nng_sink_ops.keys). */
typedef struct nng_sink_conf {
	char *listen;        /* URLs separated by commas or spaces */
	char *tls_cert;      /* PEM certificate (chain) file; with tls_key enables tls+tcp:// */
	char *tls_key;       /* PEM private key file */
	char *tls_ca;        /* PEM CA file: clients must present a certificate it signed */
	int64_t sendbuf;     /* messages queued per subscriber connection before the oldest drops */
	char *topic_prefix;  /* prepended to every topic */
	char *topics;        /* the audience families published: "all", "role", "user" (commas or
	                      * spaces between); NULL = all three */
	bool coalesce;       /* one message per topic and read of the stream (see above) */
} nng_sink_conf;

#define NNG_SINK_DEFAULT_PREFIX "walcast/v1/"

/* Appends the topic of delivery d (its audience and d->view's relation) to out, after prefix,
 * ending with '/'. 0, -EINVAL when d names no audience (neither bypass nor an org with a role),
 * or -ENOMEM (out truncated back). Does not block. */
__attribute__((warn_unused_result)) int nng_sink_topic(buf *out, const char *prefix,
                                                       const audience_delivery *d);

/* Counters of an instance, for tests (the metrics say the same). */
typedef struct nng_sink_stats {
	uint64_t messages;   /* handed to nng */
	uint64_t payloads;   /* deliveries in them (= messages without coalesce) */
	uint64_t bytes;      /* their sizes */
	uint64_t dropped;    /* messages refused by nng (would block, or out of memory) */
	uint64_t skipped;    /* deliveries that named no audience (not sent) */
	size_t topics;       /* distinct topics seen */
	int connections;     /* subscriber connections open now */
} nng_sink_stats;

/* Fills *out from instance impl (as created by nng_sink_ops.create). */
void nng_sink_get_stats(void *impl, nng_sink_stats *out);

/* The next sequence number topic would get (1 for a topic not seen yet): for tests. */
uint64_t nng_sink_next_seq(void *impl, const char *topic, size_t len);

#endif

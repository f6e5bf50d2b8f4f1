/*
 * nng — the live pub/sub sink (nng.h, docs/nng.md): one pub socket, one wildcard subscriber,
 * one payload per (change, audience) on a topic naming the audience and the table, with a
 * per-topic sequence number so that a consumer sees what nng dropped.
 *
 * The topic -> next sequence map is the core's hash_index over a dense array of slots (keys
 * copied once, never removed), hashed with hash_bytes.
 *
 * Coalescing (coalesce = on). nng's pub socket costs a sendmsg and a task hand-off per message
 * and subscriber connection, whatever the message's size. So the payloads a topic gets within
 * one read of the stream are queued on its slot (a chain of entries holding a reference to
 * each payload and its "seq lsn " head) and sent as one message when the pipeline says the
 * read was offered (batch_end): no timer, so no latency is added. A topic's message is sent
 * earlier when it would pass COALESCE_MAX_BYTES, and everything when the queue passes
 * COALESCE_QUEUE_BYTES. Ordering: within a topic, always in order. For one change, its role
 * (and all) payloads are published before its user payloads, as without coalescing: a batch
 * sends the non-user topics first, and a user topic sent early sends every non-user topic
 * before it (a change's role payloads are queued before its user payloads).
 */
#include "nng.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/supplemental/tls/tls.h>

#include "hash.h"
#include "hex.h"
#include "log.h"
#include "lsn.h"

/* ---- topic -> sequence ---------------------------------------------------------------- */

#define PEND_END UINT32_MAX

typedef struct seq_slot {
	char *key;
	size_t len;
	uint64_t next; /* the sequence number of the topic's next message */
	bool user;     /* an org/<org>/user/<user>/ topic (sent after the others: see the top) */
	/* the payloads queued for this topic (coalesce): a chain of nng_sink.pend entries */
	uint32_t pend_head, pend_tail, pend_n;
	size_t pend_bytes; /* what they add to the message: per payload a separator and its record */
} seq_slot;

/* Topic -> its slot: the slots in a dense array (never removed), indexed by the core's
 * hash_index (hash.h). A zeroed map is empty. */
typedef struct seq_map {
	hash_index ix;
	seq_slot *slots;
	size_t cap;
	size_t n;
	uint64_t seed;
} seq_map;

/* Topics are chosen by the database's contents (org and user ids, table names), so the table
 * is keyed by a random value per sink (see hash_words). */
static uint32_t topic_hash(const seq_map *m, const char *s, size_t n)
{
	return (uint32_t)hash_bytes(m->seed, s, n);
}

static long seq_index(const seq_map *m, const char *key, size_t len, uint32_t h)
{
	if (m->n == 0)
		return -1;
	hash_probe p = hash_index_probe(&m->ix, h);
	for (uint32_t id; hash_probe_next(&m->ix, &p, &id);)
		if (m->slots[id].len == len && memcmp(m->slots[id].key, key, len) == 0)
			return (long)id;
	return -1;
}

/* The slot of key, created (next = 1) when missing. NULL when out of memory. The pointer is
 * good until the next seq_get. */
static seq_slot *seq_get(seq_map *m, const char *key, size_t len)
{
	uint32_t h = topic_hash(m, key, len);
	long i = seq_index(m, key, len, h);
	if (i >= 0)
		return &m->slots[i];
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		seq_slot *slots = realloc(m->slots, cap * sizeof(*slots));
		if (slots == NULL)
			return NULL;
		m->slots = slots;
		m->cap = cap;
	}
	if (hash_index_reserve(&m->ix, 1) < 0)
		return NULL;
	seq_slot *s = &m->slots[m->n];
	s->key = malloc(len + 1);
	if (s->key == NULL)
		return NULL;
	memcpy(s->key, key, len);
	s->key[len] = '\0';
	s->len = len;
	s->next = 1;
	s->user = false;
	s->pend_head = s->pend_tail = PEND_END;
	s->pend_n = 0;
	s->pend_bytes = 0;
	hash_index_insert(&m->ix, h, (uint32_t)m->n);
	m->n++;
	return s;
}

static const seq_slot *seq_find(const seq_map *m, const char *key, size_t len)
{
	long i = seq_index(m, key, len, topic_hash(m, key, len));
	return i >= 0 ? &m->slots[i] : NULL;
}

static void seq_fini(seq_map *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->slots[i].key);
	free(m->slots);
	hash_index_fini(&m->ix);
	*m = (seq_map){0};
}

/* ---- topics --------------------------------------------------------------------------- */

/* The bytes a topic name carries as they are: [A-Za-z0-9_$-] (NUL is not: it ends a name). */
static const bool name_plain[256] = {
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1,
	['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
	['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1,
	['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
	['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['_'] = 1,
	['$'] = 1, ['-'] = 1,
};

/* Appends s percent-encoded outside [A-Za-z0-9_$-] ('.', '/', ' ' and the rest are escaped,
 * so a topic splits unambiguously and never contains a space). Runs of plain bytes (all of a
 * uuid, a role, most table names) are appended at once: this is on every message. */
static int put_name(buf *b, const char *s)
{
	for (;;) {
		size_t n = 0;
		while (name_plain[(unsigned char)s[n]])
			n++;
		int rc = n > 0 ? buf_append(b, s, n) : 0;
		if (rc < 0 || s[n] == '\0')
			return rc;
		unsigned char c = (unsigned char)s[n];
		char esc[3] = {'%', hex_upper[c >> 4], hex_upper[c & 15]};
		if ((rc = buf_append(b, esc, sizeof(esc))) < 0)
			return rc;
		s += n + 1;
	}
}

int nng_sink_topic(buf *out, const char *prefix, const audience_delivery *d)
{
	size_t mark = out->len;
	int rc;
	if (!d->bypass && (d->org == NULL || (d->individual ? d->uid == NULL : d->role == NULL)))
		return -EINVAL;
	if ((rc = buf_puts(out, prefix)) < 0)
		goto out;
	if (d->bypass) {
		rc = buf_puts(out, "all/");
	} else {
		const char *kind = d->individual ? "/user/" : "/role/";
		const char *who = d->individual ? d->uid : d->role;
		if ((rc = buf_puts(out, "org/")) == 0 && (rc = put_name(out, d->org)) == 0 &&
		    (rc = buf_puts(out, kind)) == 0 && (rc = put_name(out, who)) == 0)
			rc = buf_putc(out, '/');
	}
	if (rc < 0)
		goto out;
	const relation *rel = d->view != NULL ? d->view->rel : NULL;
	if (rel == NULL)
		rc = buf_puts(out, "_message/");
	else if ((rc = put_name(out, rel->schema)) == 0 && (rc = buf_putc(out, '.')) == 0 &&
	         (rc = put_name(out, rel->name)) == 0)
		rc = buf_putc(out, '/');
out:
	if (rc < 0) {
		out->len = mark;
		if (out->cap)
			out->data[mark] = '\0';
	}
	return rc;
}

/* ---- the sink ------------------------------------------------------------------------- */

enum { FAM_ALL = 1u << 0, FAM_ROLE = 1u << 1, FAM_USER = 1u << 2 };

/* Parses the topics key ("all, role, user" or a part of it) into FAM_* bits. 0 or -EINVAL
 * (err says why). */
static int families_parse(const char *text, unsigned *out, char err[SINK_ERROR_MAX])
{
	static const struct { const char *name; unsigned bit; } names[] = {
		{"all", FAM_ALL}, {"role", FAM_ROLE}, {"user", FAM_USER}};
	unsigned f = 0;
	const char *p = text ? text : "all, role, user";
	while (*p != '\0') {
		size_t n = strcspn(p, ", \t");
		if (n > 0) {
			size_t i = 0;
			while (i < sizeof(names) / sizeof(names[0]) &&
			       !(strlen(names[i].name) == n && strncmp(names[i].name, p, n) == 0))
				i++;
			if (i == sizeof(names) / sizeof(names[0])) {
				snprintf(err, SINK_ERROR_MAX, "topics: unknown audience family \"%.*s\" (all, role, user)",
				         (int)(n > 64 ? 64 : n), p);
				return -EINVAL;
			}
			f |= names[i].bit;
		}
		p += n;
		p += strspn(p, ", \t");
	}
	if (f == 0) {
		snprintf(err, SINK_ERROR_MAX, "topics: name at least one of all, role, user");
		return -EINVAL;
	}
	*out = f;
	return 0;
}

/* One queued payload of a topic (coalesce). */
typedef struct pend_entry {
	audience_payload *payload; /* a reference; NULL: the payload is "null" */
	uint32_t next;             /* the topic's next entry, PEND_END at the end */
	uint8_t hlen;
	char head[43];             /* "<seq> <lsn> " */
} pend_entry;

/* Slot indices, in the order their topics got their first queued payload. */
typedef struct slot_list {
	uint32_t *v;
	size_t n, cap;
} slot_list;

enum {
	COALESCE_MAX_BYTES = 64 * 1024,    /* one message: a topic's queue is sent before passing it */
	COALESCE_QUEUE_BYTES = 1024 * 1024 /* every topic's queue together: all sent past it */
};

typedef struct nng_sink {
	char name[128];
	nng_socket sock;
	bool open;
	nng_listener *listeners;
	size_t nlisteners;
	nng_tls_config *tls;
	const sink_env *env;
	audience_sub *sub;
	char *prefix;
	unsigned families;       /* FAM_* published */
	seq_map seqs;
	buf msg;                 /* scratch: the message being built */
	nng_aio *aio;            /* reused for every send (nng_sendmsg allocates one per call) */
	bool coalesce;           /* one message per topic and batch (see the top) */
	pend_entry *pend;        /* the queued payloads of every topic, since the last full send */
	size_t npend, pend_cap;
	size_t pend_bytes;       /* their bytes */
	slot_list dirty[2];      /* topics with a queue: [0] all and role, [1] user */
	nng_sink_stats st;
	atomic_int connections;  /* updated by nng's pipe callbacks (its own threads) */
	metrics_counter *m_messages, *m_bytes, *m_dropped, *m_payloads;
	metrics_counter *m_sink_drops; /* walcast_sink_drops_total{sink} (sink_env.live_metrics) */
	sink_metrics metrics; /* the families registered by this instance, removed with it */
} nng_sink;

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	nng_sink *s = arg;
	(void)p;
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&s->connections, 1);
	else if (ev == NNG_PIPE_EV_REM_POST)
		atomic_fetch_sub(&s->connections, 1);
}

static int read_topics(void *arg, double *v)
{
	*v = (double)((nng_sink *)arg)->seqs.n;
	return 0;
}

static int read_connections(void *arg, double *v)
{
	*v = (double)atomic_load(&((nng_sink *)arg)->connections);
	return 0;
}

/* Registers one family with this sink's child. A family registered already (a second nng
 * sink in the same registry) cannot be looked up through metrics.h: that instance goes
 * without the metric and says so. */
static int metric(nng_sink *s, metrics_kind kind, const char *name, const char *help,
                  metrics_counter **counter, metrics_read_cb cb)
{
	metrics_desc d = {.kind = kind, .name = name, .help = help};
	return sink_metrics_add(&s->metrics, s->env, "nng.metrics", &d, counter, NULL, cb, s);
}

static int read_file(const char *path, char **out, char err[SINK_ERROR_MAX], const char *what)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		int e = errno;
		snprintf(err, SINK_ERROR_MAX, "%s %s: %s", what, path, strerror(e));
		return -e;
	}
	buf b;
	buf_init(&b);
	char chunk[4096];
	size_t n;
	int rc = 0;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if ((rc = buf_append(&b, chunk, n)) < 0)
			break;
	if (rc == 0 && ferror(f)) {
		rc = -EIO;
		snprintf(err, SINK_ERROR_MAX, "%s %s: read error", what, path);
	}
	fclose(f);
	if (rc == 0 && b.len == 0) {
		rc = -EINVAL;
		snprintf(err, SINK_ERROR_MAX, "%s %s: empty file", what, path);
	}
	if (rc < 0) {
		buf_fini(&b);
		return rc;
	}
	*out = b.data;
	return 0;
}

static int nng_errno(int nrv)
{
	switch (nrv) {
	case NNG_ENOMEM: return -ENOMEM;
	case NNG_EADDRINUSE: return -EADDRINUSE;
	case NNG_EADDRINVAL: return -EINVAL;
	case NNG_ENOTSUP: return -ENOTSUP;
	case NNG_EPERM: return -EPERM;
	case NNG_EAGAIN: return -EAGAIN;
	case NNG_ECRYPTO: return -EINVAL;
	default: return -EIO;
	}
}

static int tls_setup(nng_sink *s, const nng_sink_conf *c, char err[SINK_ERROR_MAX])
{
	char *cert = NULL, *key = NULL, *ca = NULL;
	int rc, nrv;
	if ((rc = read_file(c->tls_cert, &cert, err, "tls_cert")) < 0 ||
	    (rc = read_file(c->tls_key, &key, err, "tls_key")) < 0 ||
	    (c->tls_ca && c->tls_ca[0] && (rc = read_file(c->tls_ca, &ca, err, "tls_ca")) < 0))
		goto out;
	if ((nrv = nng_tls_config_alloc(&s->tls, NNG_TLS_MODE_SERVER)) != 0) {
		snprintf(err, SINK_ERROR_MAX, "TLS configuration: %s", nng_strerror(nrv));
		rc = nng_errno(nrv);
		goto out;
	}
	if ((nrv = nng_tls_config_own_cert(s->tls, cert, key, NULL)) != 0) {
		snprintf(err, SINK_ERROR_MAX, "tls_cert %s with tls_key %s: %s", c->tls_cert, c->tls_key,
		         nng_strerror(nrv));
		rc = nng_errno(nrv);
		goto out;
	}
	if (ca != NULL) {
		if ((nrv = nng_tls_config_ca_chain(s->tls, ca, NULL)) != 0 ||
		    (nrv = nng_tls_config_auth_mode(s->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
			snprintf(err, SINK_ERROR_MAX, "tls_ca %s: %s", c->tls_ca, nng_strerror(nrv));
			rc = nng_errno(nrv);
			goto out;
		}
	}
	rc = 0;
out:
	free(cert);
	if (key != NULL)
		memset(key, 0, strlen(key));
	free(key);
	free(ca);
	return rc;
}

static int add_listener(nng_sink *s, const char *url, char err[SINK_ERROR_MAX])
{
	bool tls = strncmp(url, "tls+", 4) == 0;
	if (tls && s->tls == NULL) {
		snprintf(err, SINK_ERROR_MAX, "listen %s: a tls+ URL needs tls_cert and tls_key", url);
		return -EINVAL;
	}
	nng_listener l;
	int nrv = nng_listener_create(&l, s->sock, url);
	if (nrv == 0 && tls)
		nrv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, s->tls);
	if (nrv == 0)
		nrv = nng_listener_start(l, 0);
	if (nrv != 0) {
		snprintf(err, SINK_ERROR_MAX, "listen %s: %s", url, nng_strerror(nrv));
		return nng_errno(nrv);
	}
	s->listeners[s->nlisteners++] = l;
	log_info("nng.listen", "sink=%s url=%s: listening%s", s->name, url,
	         tls ? (s->tls ? " (TLS)" : "") : "");
	return 0;
}

static void send_all(nng_sink *s);

static void nng_sink_destroy(void *impl)
{
	nng_sink *s = impl;
	if (s == NULL)
		return;
	if (s->sub != NULL && s->env->unsubscribe != NULL)
		s->env->unsubscribe(s->env->env_arg, s->sub);
	if (s->aio != NULL)
		send_all(s); /* what is queued goes out (and its payload references go) */
	if (s->open)
		nng_close(s->sock); /* closes listeners and pipes; waits for pipe callbacks */
	if (s->aio != NULL)
		nng_aio_free(s->aio);
	if (s->tls != NULL)
		nng_tls_config_free(s->tls);
	/* the callback children read s: the families go with it (a new instance registers them
	 * again, e.g. after a reload) */
	sink_metrics_remove(&s->metrics, s->env);
	free(s->listeners);
	free(s->prefix);
	seq_fini(&s->seqs);
	buf_fini(&s->msg);
	free(s->pend);
	free(s->dirty[0].v);
	free(s->dirty[1].v);
	free(s);
}

static int nng_sink_create(const sink_env *env, const void *conf, void **out, char err[SINK_ERROR_MAX])
{
	const nng_sink_conf *c = conf;
	int rc, nrv;
	char *urls = NULL;
	nng_sink *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->env = env;
	snprintf(s->name, sizeof(s->name), "%s", env->name ? env->name : "nng");
	atomic_init(&s->connections, 0);
	buf_init(&s->msg);
	if (getrandom(&s->seqs.seed, sizeof(s->seqs.seed), GRND_NONBLOCK) != (ssize_t)sizeof(s->seqs.seed))
		s->seqs.seed = (uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ULL; /* no entropy yet */
	s->prefix = strdup(c->topic_prefix ? c->topic_prefix : NNG_SINK_DEFAULT_PREFIX);
	urls = strdup(c->listen ? c->listen : "");
	if (s->prefix == NULL || urls == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = families_parse(c->topics, &s->families, err)) < 0)
		goto fail;
	s->coalesce = c->coalesce;
	if (strchr(s->prefix, ' ') != NULL) {
		snprintf(err, SINK_ERROR_MAX, "topic_prefix \"%s\": no spaces (a space ends the topic)",
		         s->prefix);
		rc = -EINVAL;
		goto fail;
	}
	bool want_tls = (c->tls_cert && c->tls_cert[0]) || (c->tls_key && c->tls_key[0]);
	if (want_tls && !(c->tls_cert && c->tls_cert[0] && c->tls_key && c->tls_key[0])) {
		snprintf(err, SINK_ERROR_MAX, "tls_cert and tls_key go together");
		rc = -EINVAL;
		goto fail;
	}
	if (!want_tls && c->tls_ca && c->tls_ca[0]) {
		snprintf(err, SINK_ERROR_MAX, "tls_ca needs tls_cert and tls_key");
		rc = -EINVAL;
		goto fail;
	}
	if ((nrv = nng_pub0_open(&s->sock)) != 0) {
		snprintf(err, SINK_ERROR_MAX, "pub socket: %s", nng_strerror(nrv));
		rc = nng_errno(nrv);
		goto fail;
	}
	s->open = true;
	if ((nrv = nng_aio_alloc(&s->aio, NULL, NULL)) != 0) {
		snprintf(err, SINK_ERROR_MAX, "send aio: %s", nng_strerror(nrv));
		rc = nng_errno(nrv);
		goto fail;
	}
	if ((nrv = nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, (int)c->sendbuf)) != 0) {
		snprintf(err, SINK_ERROR_MAX, "sendbuf %lld: %s", (long long)c->sendbuf, nng_strerror(nrv));
		rc = nng_errno(nrv);
		goto fail;
	}
	if ((nrv = nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, s)) != 0 ||
	    (nrv = nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, pipe_cb, s)) != 0) {
		snprintf(err, SINK_ERROR_MAX, "pipe notifications: %s", nng_strerror(nrv));
		rc = nng_errno(nrv);
		goto fail;
	}
	if (want_tls && (rc = tls_setup(s, c, err)) < 0)
		goto fail;
	size_t n = 1;
	for (const char *p = urls; *p; p++)
		n += *p == ',' || *p == ' ';
	s->listeners = calloc(n, sizeof(*s->listeners));
	if (s->listeners == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	char *save = NULL;
	for (char *u = strtok_r(urls, ", \t", &save); u != NULL; u = strtok_r(NULL, ", \t", &save))
		if ((rc = add_listener(s, u, err)) < 0)
			goto fail;
	if (s->nlisteners == 0) {
		snprintf(err, SINK_ERROR_MAX, "listen: no URL (e.g. tcp://127.0.0.1:7450)");
		rc = -EINVAL;
		goto fail;
	}
	if (env->metrics != NULL &&
	    ((rc = metric(s, METRICS_COUNTER, "walcast_nng_messages_total",
	                  "Messages handed to the nng pub socket (each goes to every subscriber)",
	                  &s->m_messages, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_nng_payloads_total",
	                  "Payloads (one change for one audience) in the messages handed to the nng pub "
	                  "socket; more than the messages with coalesce on", &s->m_payloads, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_nng_sent_bytes_total",
	                  "Bytes of the messages handed to the nng pub socket", &s->m_bytes, NULL)) < 0 ||
	     (rc = metric(s, METRICS_COUNTER, "walcast_nng_dropped_messages_total",
	                  "Messages the nng pub socket refused (it would block, or out of memory)",
	                  &s->m_dropped, NULL)) < 0 ||
	     (rc = metric(s, METRICS_GAUGE_I, "walcast_nng_topics",
	                  "Distinct topics published since the sink started", NULL, read_topics)) < 0 ||
	     (rc = metric(s, METRICS_GAUGE_I, "walcast_nng_connections",
	                  "Subscriber connections open on the nng pub socket", NULL, read_connections)) < 0)) {
		snprintf(err, SINK_ERROR_MAX, "metrics: %s", strerror(-rc));
		goto fail;
	}
	/* the shared series (every live sink's drops and connections, one family each) */
	if (env->live_metrics != NULL && env->live_metrics(env->env_arg, &s->m_sink_drops, read_connections, s) < 0)
		log_warn("nng.metrics", "sink=%s: walcast_sink_drops_total and walcast_connections left out", s->name);
	/* the all topic alone: a bypass subscriber, so that no other audience is even judged */
	bool bypass_only = s->families == FAM_ALL;
	if (env->subscribe != NULL &&
	    (rc = env->subscribe(env->env_arg, s, NULL, bypass_only, !bypass_only, &s->sub)) < 0) {
		snprintf(err, SINK_ERROR_MAX, "wildcard subscriber: %s", strerror(-rc));
		goto fail;
	}
	free(urls);
	*out = s;
	return 0;
fail:
	if (err[0] == '\0')
		snprintf(err, SINK_ERROR_MAX, "%s", strerror(-rc));
	free(urls);
	nng_sink_destroy(s);
	return rc;
}

static int nng_sink_begin(void *impl, const change_txn *txn)
{
	(void)impl;
	(void)txn;
	return 0;
}

static int nng_sink_commit(void *impl, const change_txn *txn)
{
	(void)impl;
	(void)txn;
	return 0;
}

/* A delivery or a message lost: n payloads in `messages` messages. */
static void count_drop(nng_sink *s, uint64_t messages, uint64_t n)
{
	s->st.dropped += messages;
	if (s->m_dropped)
		metrics_counter_add(s->m_dropped, messages);
	if (s->m_sink_drops)
		metrics_counter_add(s->m_sink_drops, n);
}

/* Hands m (len bytes, n payloads) to the pub socket: it goes to every subscriber connection
 * (nng counts references), or is counted as dropped. */
static void send_msg(nng_sink *s, nng_msg *m, size_t len, uint32_t n)
{
	/* nng_send_aio on the sink's own aio: pub0 completes a send at once, in this thread (no
	 * callback to dispatch), so the aio is free again when nng_aio_wait returns. A zero timeout
	 * keeps the send non-blocking, as a live sink must be. */
	nng_aio_set_timeout(s->aio, NNG_DURATION_ZERO);
	nng_aio_set_msg(s->aio, m);
	nng_send_aio(s->sock, s->aio);
	nng_aio_wait(s->aio);
	int failed = nng_aio_result(s->aio);
	nng_aio_set_msg(s->aio, NULL);
	if (failed != 0) {
		nng_msg_free(m); /* not taken on failure */
		count_drop(s, 1, n);
		return;
	}
	s->st.messages++;
	s->st.payloads += n;
	s->st.bytes += len;
	if (s->m_messages)
		metrics_counter_inc(s->m_messages);
	if (s->m_payloads)
		metrics_counter_add(s->m_payloads, n);
	if (s->m_bytes)
		metrics_counter_add(s->m_bytes, len);
}

/* Sends the queue of slot id as one message: "<topic> <rec>\n<rec>..." with each record
 * "<seq> <lsn> <payload>", and empties it. */
static void topic_send(nng_sink *s, uint32_t id)
{
	seq_slot *sl = &s->seqs.slots[id];
	uint32_t n = sl->pend_n;
	if (n == 0)
		return;
	size_t len = sl->len + sl->pend_bytes;
	/* one allocation of the exact size: every subscriber's pipe shares it (nng counts refs) */
	nng_msg *m = NULL;
	char *p = nng_msg_alloc(&m, len) == 0 ? nng_msg_body(m) : NULL;
	if (p != NULL) {
		memcpy(p, sl->key, sl->len);
		p += sl->len;
	}
	char sep = ' ';
	for (uint32_t e = sl->pend_head; e != PEND_END; e = s->pend[e].next) {
		pend_entry *pe = &s->pend[e];
		if (p != NULL) {
			size_t plen = 4;
			const char *payload = pe->payload ? audience_payload_data(pe->payload, &plen) : "null";
			*p++ = sep;
			memcpy(p, pe->head, pe->hlen);
			memcpy(p + pe->hlen, payload, plen);
			p += pe->hlen + plen;
			sep = '\n';
		}
		audience_payload_unref(pe->payload);
		pe->payload = NULL;
	}
	sl->pend_head = sl->pend_tail = PEND_END;
	sl->pend_n = 0;
	sl->pend_bytes = 0;
	if (p == NULL)
		count_drop(s, 1, n);
	else
		send_msg(s, m, len, n);
}

/* Sends every queued topic of family list fam (0: all and role, 1: user), in the order they
 * were first queued. */
static void family_send(nng_sink *s, int fam)
{
	slot_list *l = &s->dirty[fam];
	for (size_t i = 0; i < l->n; i++)
		topic_send(s, l->v[i]);
	l->n = 0;
}

/* Sends everything queued: the all and role topics, then the user topics (see the top). */
static void send_all(nng_sink *s)
{
	family_send(s, 0);
	family_send(s, 1);
	s->npend = 0;
	s->pend_bytes = 0;
}

static void nng_sink_batch_end(void *impl)
{
	send_all(impl);
}

/* Writes "<seq> <lsn> " into head (43 bytes) and returns its length: by hand, this is on every
 * payload. */
static size_t head_format(char *head, uint64_t seq, uint64_t lsn)
{
	char digits[20];
	size_t nd = 0, hl = 0;
	do
		digits[nd++] = (char)('0' + seq % 10);
	while ((seq /= 10) != 0);
	while (nd > 0)
		head[hl++] = digits[--nd];
	head[hl++] = ' ';
	lsn_format(lsn, head + hl);
	hl += strlen(head + hl);
	head[hl++] = ' ';
	return hl;
}

/* v (n elements of size bytes used, room for *cap) with room for one more: v itself, or v
 * moved to twice the room (from 64; *cap updated), or NULL when out of memory (v unchanged). */
static void *room_for_one(void *v, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return v;
	size_t c = *cap ? *cap * 2 : 64;
	void *p = c < PEND_END ? realloc(v, c * size) : NULL;
	if (p != NULL)
		*cap = c;
	return p;
}

/* Queues payload d on slot id (its topic), with the topic's next sequence number: sent at once
 * without coalesce, else at the batch's end or at a bound. A payload that cannot be queued is
 * dropped with its number (the subscriber sees the gap). */
static void queue_payload(nng_sink *s, uint32_t id, const audience_delivery *d)
{
	seq_slot *sl = &s->seqs.slots[id];
	const change *v = d->view;
	uint64_t lsn = v == NULL ? 0 : v->txn != NULL ? v->txn->commit_lsn : v->lsn;
	pend_entry e = {.payload = d->payload, .next = PEND_END};
	e.hlen = (uint8_t)head_format(e.head, sl->next++, lsn);
	size_t plen = 4;
	if (e.payload != NULL)
		(void)audience_payload_data(e.payload, &plen);
	size_t rec = 1 + e.hlen + plen;
	if (sl->pend_n > 0 && sl->len + sl->pend_bytes + rec > COALESCE_MAX_BYTES) {
		if (sl->user)
			family_send(s, 0); /* the role payloads of the changes queued here go first */
		topic_send(s, id);
	}
	slot_list *l = &s->dirty[sl->user];
	pend_entry *pend = room_for_one(s->pend, &s->pend_cap, s->npend, sizeof(*pend));
	if (pend != NULL)
		s->pend = pend;
	bool list = s->coalesce && sl->pend_n == 0; /* the topic's first queued payload */
	uint32_t *listed = pend != NULL && list ? room_for_one(l->v, &l->cap, l->n, sizeof(*listed)) : NULL;
	if (listed != NULL)
		l->v = listed;
	if (pend == NULL || (list && listed == NULL)) {
		count_drop(s, 0, 1);
		return;
	}
	if (e.payload != NULL)
		audience_payload_ref(e.payload);
	uint32_t at = (uint32_t)s->npend++;
	s->pend[at] = e;
	if (sl->pend_n == 0) {
		sl->pend_head = at;
		if (list)
			l->v[l->n++] = id;
	} else {
		s->pend[sl->pend_tail].next = at;
	}
	sl->pend_tail = at;
	sl->pend_n++;
	sl->pend_bytes += rec;
	s->pend_bytes += rec;
	if (!s->coalesce) {
		topic_send(s, id);
		s->npend = 0;
		s->pend_bytes = 0;
	} else if (s->pend_bytes > COALESCE_QUEUE_BYTES) {
		send_all(s);
	}
}

static int nng_sink_deliver(void *impl, void *sub_arg, const audience_delivery *d)
{
	nng_sink *s = impl;
	(void)sub_arg;
	if (!(s->families & (d->bypass ? FAM_ALL : d->individual ? FAM_USER : FAM_ROLE)))
		return 0; /* a family this instance does not publish (topics) */
	buf *b = &s->msg;
	buf_clear(b);
	int rc = nng_sink_topic(b, s->prefix, d);
	if (rc == -EINVAL) {
		if (s->st.skipped++ == 0)
			log_warn("nng.deliver", "sink=%s: a delivery names no audience (rank %d): not sent",
			         s->name, d->rank);
		return 0;
	}
	seq_slot *slot = rc < 0 ? NULL : seq_get(&s->seqs, b->data, b->len);
	if (slot == NULL) {
		count_drop(s, 0, 1); /* a live sink drops what it cannot take */
		return 0;
	}
	slot->user = !d->bypass && d->individual;
	queue_payload(s, (uint32_t)(slot - s->seqs.slots), d);
	return 0;
}

void nng_sink_get_stats(void *impl, nng_sink_stats *out)
{
	nng_sink *s = impl;
	*out = s->st;
	out->topics = s->seqs.n;
	out->connections = atomic_load(&s->connections);
}

uint64_t nng_sink_next_seq(void *impl, const char *topic, size_t len)
{
	const seq_slot *sl = seq_find(&((nng_sink *)impl)->seqs, topic, len);
	return sl ? sl->next : 1;
}

#define KEY(n, t, f, def, lo, hi, h) \
	{"sink", n, t, offsetof(nng_sink_conf, f), def, lo, hi, false, h}
static const config_key nng_keys[] = {
	KEY("listen", CONFIG_STRING, listen, "tcp://127.0.0.1:7450", 0, 0,
	    "URLs to listen on, separated by commas: tcp://HOST:PORT, tls+tcp://HOST:PORT (needs "
	    "tls_cert and tls_key), ipc:///PATH. Every peer that connects receives every topic."),
	KEY("tls_cert", CONFIG_STRING, tls_cert, "", 0, 0,
	    "PEM certificate (chain) of the tls+tcp:// listeners; empty = no TLS"),
	KEY("tls_key", CONFIG_STRING, tls_key, "", 0, 0, "PEM private key of tls_cert"),
	KEY("tls_ca", CONFIG_STRING, tls_ca, "", 0, 0,
	    "PEM CA certificates: a TLS client must present a certificate one of them signed; "
	    "empty = any client may connect"),
	KEY("sendbuf", CONFIG_INT, sendbuf, "1024", 1, 8192,
	    "messages queued per subscriber connection; when full the oldest is dropped (the "
	    "subscriber sees a sequence gap)"),
	KEY("topic_prefix", CONFIG_STRING, topic_prefix, NNG_SINK_DEFAULT_PREFIX, 0, 0,
	    "prepended to every topic (no spaces)"),
	KEY("coalesce", CONFIG_BOOL, coalesce, "on", 0, 1,
	    "on: the payloads a topic gets from one read of the stream go out as one message (the "
	    "topic once, then one line per payload: docs/nng.md); off: one message per payload"),
	KEY("topics", CONFIG_STRING, topics, "all, role, user", 0, 0,
	    "the audience families published: all (every row unmasked), role (per org and rank), "
	    "user (per org and named user); every message costs a send per subscriber connection"),
};
#undef KEY

const sink_ops nng_sink_ops = {
	.name = "nng",
	.kind = SINK_LIVE,
	.keys = nng_keys,
	.nkeys = sizeof(nng_keys) / sizeof(nng_keys[0]),
	.conf_size = sizeof(nng_sink_conf),
	.create = nng_sink_create,
	.destroy = nng_sink_destroy,
	.position = NULL,
	.begin = nng_sink_begin,
	.deliver = nng_sink_deliver,
	.commit = nng_sink_commit,
	.batch_end = nng_sink_batch_end,
};

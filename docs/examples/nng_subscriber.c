/*
 * nng_subscriber — an example consumer of walcast's nng sink (docs/nng.md): subscribes to one
 * topic prefix, checks the per-topic sequence numbers for gaps (messages nng dropped because
 * this subscriber was too slow) and prints every payload.
 *
 *   nng_subscriber [--count N] [--timeout SECONDS] [--recvbuf N]
 *                  [--ca FILE [--cert FILE --key FILE]] URL PREFIX
 *
 * --recvbuf: messages this process may have received but not yet read (default 8192, nng's
 * maximum); beyond that nng drops the oldest, as the publisher's queue does.
 *
 *   nng_subscriber tcp://127.0.0.1:7450 walcast/v1/org/3f6c.../role/viewer/
 *
 * Output (stdout): one line per payload, "TOPIC SEQ LSN PAYLOAD". Gaps and restarts go to
 * stderr ("gap topic=... lost=N"); at the end (after N payloads, or a receive timeout) a
 * summary "messages=... topics=... lost=... restarts=..." on stderr (messages: payloads). Exit
 * 0, or 1 on an error.
 *
 * A message is "<topic> <record>", or with the sink's coalesce on (its default) several
 * records of one topic: "<topic> <record>\n<record>\n...<record>" (no newline at the end). A
 * record is "<seq> <lsn> <payload JSON>" (the JSON is one line): the topic never contains a
 * space; seq counts that topic's payloads from 1 since the publisher started (so a 1 after a
 * higher number is a publisher restart, and what happened during it is unknown); lsn is the
 * commit LSN. Build: cc nng_subscriber.c -lnng. Define NNG_SUBSCRIBER_NO_MAIN to reuse the
 * parsing and gap tracking (walcast's unit test does).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/supplemental/tls/tls.h>

/* One record of a message split into its parts (pointers into the message). */
typedef struct nngsub_msg {
	const char *topic;
	size_t topic_len;
	uint64_t seq;
	const char *lsn;
	size_t lsn_len;
	const char *payload;
	size_t payload_len;
	const char *rest; /* the records after this one (after its newline), NULL: none */
	const char *end;  /* the end of the message */
} nngsub_msg;

/* Splits the record at data (up to a newline or end) into m's seq, lsn, payload and rest. 0,
 * or -EINVAL for a malformed record. */
static int nngsub_record(const char *data, const char *end, nngsub_msg *m)
{
	const char *nl = memchr(data, '\n', (size_t)(end - data));
	const char *rest = nl != NULL ? nl + 1 : NULL;
	if (nl != NULL)
		end = nl;
	const char *p = data;
	uint64_t seq = 0;
	if (p == end || *p < '0' || *p > '9')
		return -EINVAL;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		if (seq > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		seq = seq * 10 + (uint64_t)(*p - '0');
	}
	if (p == end || *p != ' ' || seq == 0)
		return -EINVAL;
	const char *lsn = ++p;
	const char *sp3 = memchr(lsn, ' ', (size_t)(end - lsn));
	if (sp3 == NULL || sp3 == lsn)
		return -EINVAL;
	m->seq = seq;
	m->lsn = lsn;
	m->lsn_len = (size_t)(sp3 - lsn);
	m->payload = sp3 + 1;
	m->payload_len = (size_t)(end - sp3 - 1);
	m->rest = rest;
	return 0;
}

/* Splits a message into its topic and first record (the others: nngsub_next). 0, or -EINVAL
 * for a malformed message. */
static int nngsub_parse(const char *data, size_t len, nngsub_msg *m)
{
	const char *sp1 = memchr(data, ' ', len);
	if (sp1 == NULL || sp1 == data)
		return -EINVAL;
	*m = (nngsub_msg){.topic = data, .topic_len = (size_t)(sp1 - data), .end = data + len};
	return nngsub_record(sp1 + 1, m->end, m);
}

/* Moves m to the next record of its message: 1, 0 when m was the last, -EINVAL when the next
 * is malformed. */
static int nngsub_next(nngsub_msg *m)
{
	if (m->rest == NULL)
		return 0;
	int rc = nngsub_record(m->rest, m->end, m);
	return rc < 0 ? rc : 1;
}

/* The last sequence number seen per topic: a tiny open-addressing table. */
typedef struct nngsub_topic {
	char *name; /* NULL: empty slot */
	size_t len;
	uint64_t last;
} nngsub_topic;

typedef struct nngsub_tracker {
	nngsub_topic *slots;
	size_t cap, n;
	uint64_t lost, restarts, messages;
} nngsub_tracker;

/* What one message says about its topic's stream. */
typedef struct nngsub_check {
	uint64_t lost;   /* messages missing before this one (a gap) */
	bool restart;    /* seq went back to 1: the publisher restarted */
	bool first;      /* the first message of this topic seen here */
	bool stale;      /* seq at or below the last one (and not a restart): a duplicate */
} nngsub_check;

static size_t nngsub_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
	return (size_t)(h ^ (h >> 31));
}

static nngsub_topic *nngsub_slot(nngsub_topic *slots, size_t cap, const char *t, size_t n)
{
	for (size_t i = nngsub_hash(t, n) & (cap - 1);; i = (i + 1) & (cap - 1))
		if (slots[i].name == NULL || (slots[i].len == n && memcmp(slots[i].name, t, n) == 0))
			return &slots[i];
}

/* Records message m in tr. 0 and *out, or -ENOMEM. */
static int nngsub_track(nngsub_tracker *tr, const nngsub_msg *m, nngsub_check *out)
{
	*out = (nngsub_check){0};
	if ((tr->n + 1) * 4 > tr->cap * 3) {
		size_t cap = tr->cap ? tr->cap * 2 : 64;
		nngsub_topic *slots = calloc(cap, sizeof(*slots));
		if (slots == NULL)
			return -ENOMEM;
		for (size_t i = 0; i < tr->cap; i++)
			if (tr->slots[i].name != NULL)
				*nngsub_slot(slots, cap, tr->slots[i].name, tr->slots[i].len) = tr->slots[i];
		free(tr->slots);
		tr->slots = slots;
		tr->cap = cap;
	}
	nngsub_topic *t = nngsub_slot(tr->slots, tr->cap, m->topic, m->topic_len);
	tr->messages++;
	if (t->name == NULL) {
		if ((t->name = malloc(m->topic_len)) == NULL)
			return -ENOMEM;
		memcpy(t->name, m->topic, m->topic_len);
		t->len = m->topic_len;
		tr->n++;
		out->first = true;
		/* joined mid-stream: what came before is not a loss of ours */
	} else if (m->seq == 1) {
		out->restart = true;
		tr->restarts++;
	} else if (m->seq <= t->last) {
		out->stale = true;
		return 0;
	} else if (m->seq > t->last + 1) {
		out->lost = m->seq - t->last - 1;
		tr->lost += out->lost;
	}
	t->last = m->seq;
	return 0;
}

static void nngsub_tracker_fini(nngsub_tracker *tr)
{
	for (size_t i = 0; i < tr->cap; i++)
		free(tr->slots[i].name);
	free(tr->slots);
	*tr = (nngsub_tracker){0};
}

#ifndef NNG_SUBSCRIBER_NO_MAIN

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	char *s = NULL;
	size_t n = 0, cap = 0, r;
	char chunk[4096];
	while ((r = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (n + r + 1 > cap) {
			cap = (n + r + 1) * 2;
			char *s2 = realloc(s, cap);
			if (s2 == NULL) {
				free(s);
				fclose(f);
				return NULL;
			}
			s = s2;
		}
		memcpy(s + n, chunk, r);
		n += r;
	}
	fclose(f);
	if (s != NULL)
		s[n] = '\0';
	return s;
}

static int usage(void)
{
	fprintf(stderr, "usage: nng_subscriber [--count N] [--timeout SECONDS] [--recvbuf N] "
	                "[--ca FILE [--cert FILE --key FILE]] URL PREFIX\n");
	return 1;
}

int main(int argc, char **argv)
{
	long count = 0, timeout = 0;
	int recvbuf = 8192;
	const char *ca = NULL, *cert = NULL, *key = NULL;
	int i = 1;
	for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (strcmp(argv[i], "--count") == 0)
			count = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--recvbuf") == 0)
			recvbuf = (int)strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--timeout") == 0)
			timeout = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--ca") == 0)
			ca = argv[i + 1];
		else if (strcmp(argv[i], "--cert") == 0)
			cert = argv[i + 1];
		else if (strcmp(argv[i], "--key") == 0)
			key = argv[i + 1];
		else
			return usage();
	}
	if (argc - i != 2)
		return usage();
	const char *url = argv[i], *prefix = argv[i + 1];

	nng_socket sock;
	nng_dialer d;
	nng_tls_config *tls = NULL;
	int rv;
	if ((rv = nng_sub0_open(&sock)) != 0) {
		fprintf(stderr, "nng_sub0_open: %s\n", nng_strerror(rv));
		return 1;
	}
	/* the filter: only messages whose bytes start with prefix are kept (by this process) */
	if ((rv = nng_socket_set(sock, NNG_OPT_SUB_SUBSCRIBE, prefix, strlen(prefix))) != 0 ||
	    /* the SUB side has a queue of its own (128 messages by default in nng 1.5) that drops
	     * its oldest message when this process reads too slowly: make it as large as it goes */
	    (rv = nng_socket_set_int(sock, NNG_OPT_RECVBUF, recvbuf)) != 0 ||
	    (timeout > 0 && (rv = nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, (nng_duration)(timeout * 1000))) != 0) ||
	    (rv = nng_dialer_create(&d, sock, url)) != 0) {
		fprintf(stderr, "%s: %s\n", url, nng_strerror(rv));
		return 1;
	}
	if (ca != NULL) {
		char *ca_pem = slurp(ca), *cert_pem = cert ? slurp(cert) : NULL, *key_pem = key ? slurp(key) : NULL;
		if (ca_pem == NULL || (cert != NULL && (cert_pem == NULL || key_pem == NULL))) {
			fprintf(stderr, "cannot read the TLS files\n");
			return 1;
		}
		if ((rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT)) != 0 ||
		    (rv = nng_tls_config_ca_chain(tls, ca_pem, NULL)) != 0 ||
		    (cert_pem != NULL && (rv = nng_tls_config_own_cert(tls, cert_pem, key_pem, NULL)) != 0) ||
		    (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls)) != 0) {
			fprintf(stderr, "TLS: %s\n", nng_strerror(rv));
			return 1;
		}
		free(ca_pem);
		free(cert_pem);
		free(key_pem);
	}
	/* NNG_FLAG_NONBLOCK: start dialing in the background and keep retrying (the publisher may
	 * not be up yet); a refused TLS handshake shows as no messages */
	if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
		fprintf(stderr, "%s: %s\n", url, nng_strerror(rv));
		return 1;
	}

	nngsub_tracker tr = {0};
	int status = 0;
	while (count == 0 || (long)tr.messages < count) {
		nng_msg *msg;
		if ((rv = nng_recvmsg(sock, &msg, 0)) != 0) {
			if (rv != NNG_ETIMEDOUT) {
				fprintf(stderr, "recv: %s\n", nng_strerror(rv));
				status = 1;
			}
			break;
		}
		nngsub_msg m;
		nngsub_check c;
		const char *data = nng_msg_body(msg);
		size_t len = nng_msg_len(msg);
		int more = nngsub_parse(data, len, &m) == 0 ? 1 : -EINVAL;
		/* every record of the message (one, or several with coalesce on) */
		for (; more == 1 && status == 0; more = nngsub_next(&m)) {
			if (nngsub_track(&tr, &m, &c) < 0) {
				fprintf(stderr, "out of memory\n");
				status = 1;
				break;
			}
			if (c.lost > 0)
				fprintf(stderr, "gap topic=%.*s lost=%" PRIu64 " before seq=%" PRIu64 "\n",
				        (int)m.topic_len, m.topic, c.lost, m.seq);
			if (c.restart)
				fprintf(stderr, "restart topic=%.*s\n", (int)m.topic_len, m.topic);
			printf("%.*s %" PRIu64 " %.*s %.*s\n", (int)m.topic_len, m.topic, m.seq, (int)m.lsn_len,
			       m.lsn, (int)m.payload_len, m.payload);
		}
		if (more < 0)
			fprintf(stderr, "malformed message (%zu bytes)\n", len);
		fflush(stdout);
		nng_msg_free(msg);
		if (status != 0)
			break;
	}
	fprintf(stderr, "messages=%" PRIu64 " topics=%zu lost=%" PRIu64 " restarts=%" PRIu64 "\n",
	        tr.messages, tr.n, tr.lost, tr.restarts);
	nngsub_tracker_fini(&tr);
	nng_close(sock);
	if (tls != NULL)
		nng_tls_config_free(tls);
	return status;
}

#endif

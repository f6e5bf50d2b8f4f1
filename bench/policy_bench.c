/*
 * policy_bench — the policy engine's figures for issue 3 ("Benchmark"), on one core:
 *
 *   (a) simple decisions per second: policy_row_visible on events rows, with the viewer's rank
 *       known and the contact's privacy rule looked up in the mirrored state (25,000 rules);
 *       also with the viewer's rank looked up per decision (policy_state_rank_uuid);
 *   (b) per-change cost of audience_publish (judging, masking, decryption, serialization once per
 *       audience; no socket I/O) with 10, 1,000 and 100,000 subscribers spread over 100 orgs,
 *       the change's org always having the same 10 subscribers, and the ratio 100k / 10;
 *   (c) the naive per-subscriber path at the same sizes, for reference: every subscriber judged
 *       on its own (privacy_view_as, the transform of `walcast tail --as`) and every visible view
 *       serialized for it.
 *
 * Usage: policy_bench [RUNS]   (default 7; medians are reported). Prints "key value" lines.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audience.h"
#include "buf.h"
#include "change.h"
#include "keyring.h"
#include "policy.h"
#include "policy_state.h"
#include "privacy.h"

#define N_ORGS 100
#define ORG_SUBS 10      /* subscribers in the change's org, at every size */
#define N_CONTACTS 50000 /* half of them with a privacy rule */
#define N_ROWS 1024      /* distinct event rows, cycled */

static const char *const ROLES[] = {"viewer", "member", "analyst", "admin", "owner"};

static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "role", .type_oid = 25, .typmod = -1},
	{.name = "created_at", .type_oid = 1184, .typmod = -1},
};
static const relation roles_rel = {.oid = 1, .schema = "public", .name = "org_roles", .ncols = 4,
                                   .cols = roles_cols, .replident = 'f', .version = 1};

enum { E_ID, E_ORG, E_CONTACT, E_USER, E_KIND, E_DIR, E_STATUS, E_STARTED, E_DUR, E_FROM, E_TO, E_BODY,
       E_CREATED, E_NCOLS };
static rel_column events_cols[] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "contact_id", .type_oid = 2950, .typmod = -1},
	{.name = "user_id", .type_oid = 2950, .typmod = -1},
	{.name = "kind", .type_oid = 25, .typmod = -1},
	{.name = "direction", .type_oid = 25, .typmod = -1},
	{.name = "status", .type_oid = 25, .typmod = -1},
	{.name = "started_at", .type_oid = 1184, .typmod = -1},
	{.name = "duration_s", .type_oid = 23, .typmod = -1},
	{.name = "from_number", .type_oid = 25, .typmod = -1},
	{.name = "to_number", .type_oid = 25, .typmod = -1},
	{.name = "body", .type_oid = 17, .typmod = -1},
	{.name = "created_at", .type_oid = 1184, .typmod = -1},
};
static const relation events_rel = {.oid = 2, .schema = "public", .name = "events", .ncols = E_NCOLS,
                                    .cols = events_cols, .replident = 'f', .version = 1};

typedef struct erow {
	char cell[E_NCOLS][320];
	change_value v[E_NCOLS];
	policy_state_uuid org;
	policy_state_uuid user;
} erow;

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void uuid_of(char out[37], unsigned kind, unsigned n)
{
	snprintf(out, 37, "%02x000000-0000-4000-8000-%012x", kind, n);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "policy_bench: %s: %d (%s)\n", what, rc, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static void apply_member(privacy *pv, unsigned org, unsigned user, const char *role)
{
	char o[37], u[37];
	uuid_of(o, 0x0a, org);
	uuid_of(u, 0x0b, user);
	change_value t[4] = {
		{VALUE_TEXT, 36, o}, {VALUE_TEXT, 36, u}, {VALUE_TEXT, (uint32_t)strlen(role), role},
		{VALUE_TEXT, 22, "2026-11-22 09:00:00+00"},
	};
	change c = {.action = CHANGE_INSERT, .rel = &roles_rel, .new_tuple = t};
	change out;
	privacy_viewer none = {NULL, false};
	int rc = privacy_step(pv, &c, &none, &out);
	if (rc < 0)
		die("membership", rc);
}

/* The world for one size: memberships of nsubs users (ORG_SUBS in org 0, the rest spread over
 * orgs 1..99), 25,000 privacy rules, and the subscribers. */
typedef struct world {
	privacy *pv;
	audience *aud;
	int nsubs;
	char (*uids)[37];
	audience_sub **subs;
} world;

static void load_rules(policy_state *ps)
{
	for (unsigned i = 0; i < N_CONTACTS / 2; i++) {
		char id[37], contact[37];
		uuid_of(id, 0x0e, i);
		uuid_of(contact, 0x0c, i * 2);
		const char *vals[3] = {id, contact, ROLES[1 + i % 4]};
		int rc = policy_state_load_row(ps, POLICY_STATE_RULES, vals);
		if (rc < 0)
			die("rules", rc);
	}
}

static void world_init(world *w, const policy *pol, keyring *keys, int nsubs)
{
	char err[PRIVACY_ERROR_MAX];
	int rc = privacy_create(pol, keys, &w->pv, err);
	if (rc < 0)
		die(err, rc);
	rc = audience_create(w->pv, 0, &w->aud);
	if (rc < 0)
		die("audience", rc);
	load_rules(privacy_state(w->pv));
	w->nsubs = nsubs;
	w->uids = calloc((size_t)nsubs, sizeof(*w->uids));
	w->subs = calloc((size_t)nsubs, sizeof(*w->subs));
	/* org 0: ranks 1,1,2,2,2,3,3,4,4,5 */
	static const int org0_ranks[ORG_SUBS] = {1, 1, 2, 2, 2, 3, 3, 4, 4, 5};
	for (int i = 0; i < nsubs; i++) {
		unsigned org = i < ORG_SUBS ? 0 : 1 + (unsigned)(i - ORG_SUBS) % (N_ORGS - 1);
		int r = i < ORG_SUBS ? org0_ranks[i] : 1 + (int)(rng() % 5);
		apply_member(w->pv, org, (unsigned)i, ROLES[r - 1]);
		uuid_of(w->uids[i], 0x0b, (unsigned)i);
		rc = audience_subscribe(w->aud, &w->subs[i], w->uids[i], false, &w->subs[i]);
		if (rc < 0)
			die("subscribe", rc);
	}
}

static void world_fini(world *w)
{
	audience_destroy(w->aud);
	privacy_destroy(w->pv);
	free(w->uids);
	free(w->subs);
}

/* N_ROWS event rows of org 0: calls and SMS (encrypted ~100-byte body bound to the id), a known
 * contact 90 % of the time, the handling user one of org 0's subscribers half of the time. */
static erow *make_rows(keyring *keys, unsigned org, int org_users_from)
{
	erow *rows = calloc(N_ROWS, sizeof(*rows));
	buf b;
	buf_init(&b);
	for (int i = 0; i < N_ROWS; i++) {
		erow *r = &rows[i];
		bool sms = rng() % 5 < 2;
		uuid_of(r->cell[E_ID], 0x0d, (unsigned)i);
		uuid_of(r->cell[E_ORG], 0x0a, org);
		if (rng() % 10 != 0)
			uuid_of(r->cell[E_CONTACT], 0x0c, (unsigned)(rng() % N_CONTACTS));
		if (rng() % 2)
			uuid_of(r->cell[E_USER], 0x0b, (unsigned)(org_users_from + (int)(rng() % ORG_SUBS)));
		else
			uuid_of(r->cell[E_USER], 0x0b, 900000 + (unsigned)i); /* a user not subscribed */
		strcpy(r->cell[E_KIND], sms ? "sms" : "call");
		strcpy(r->cell[E_DIR], rng() % 2 ? "inbound" : "outbound");
		strcpy(r->cell[E_STATUS], "completed");
		strcpy(r->cell[E_STARTED], "2026-11-22 10:00:00.123456+00");
		snprintf(r->cell[E_DUR], 320, "%u", (unsigned)(rng() % 600));
		snprintf(r->cell[E_FROM], 320, "+1555%07u", (unsigned)(rng() % 10000000));
		snprintf(r->cell[E_TO], 320, "+1555%07u", (unsigned)(rng() % 10000000));
		if (sms) {
			char plain[101];
			memset(plain, 'x', 100);
			plain[100] = '\0';
			buf_clear(&b);
			int rc = keyring_encrypt_hex(keys, 0, plain, 100, r->cell[E_ID], 36, &b);
			if (rc < 0 || b.len >= 320)
				die("encrypt", rc);
			memcpy(r->cell[E_BODY], b.data, b.len + 1);
		}
		strcpy(r->cell[E_CREATED], "2026-11-22 10:00:01.654321+00");
		for (int k = 0; k < E_NCOLS; k++) {
			bool null = r->cell[k][0] == '\0' || (k == E_DUR && sms);
			r->v[k] = null ? (change_value){VALUE_NULL, 0, NULL}
			               : (change_value){VALUE_TEXT, (uint32_t)strlen(r->cell[k]), r->cell[k]};
		}
		if (policy_state_uuid_parse(r->cell[E_ORG], 36, &r->org) < 0 ||
		    policy_state_uuid_parse(r->cell[E_USER], 36, &r->user) < 0)
			die("uuid", -EINVAL);
	}
	buf_fini(&b);
	return rows;
}

/* ---- (a) decisions --------------------------------------------------------------------------- */

static int subject_rank_cb(void *arg, const char *s, size_t len)
{
	return policy_state_subject_rank(arg, s, len);
}

static void bench_decisions(const policy *pol, keyring *keys, int runs)
{
	world w;
	world_init(&w, pol, keys, 1000);
	policy_state *ps = privacy_state(w.pv);
	const policy_bound *b;
	if (privacy_bind(w.pv, &events_rel, &b) < 0 || b == NULL)
		die("bind", -EINVAL);
	/* rows spread over the orgs; per row a viewer who is a member of the row's org (users
	 * 0..9 are in org 0, user i >= 10 in org 1 + (i - 10) % 99), with their rank */
	erow *rows = make_rows(keys, 0, 0);
	policy_viewer v[N_ROWS];
	policy_state_uuid vu[N_ROWS];
	for (int i = 0; i < N_ROWS; i++) {
		int u = (int)(rng() % 1000);
		unsigned org = u < ORG_SUBS ? 0 : 1 + (unsigned)(u - ORG_SUBS) % (N_ORGS - 1);
		uuid_of(rows[i].cell[E_ORG], 0x0a, org);
		if (policy_state_uuid_parse(rows[i].cell[E_ORG], 36, &rows[i].org) < 0 ||
		    policy_state_uuid_parse(w.uids[u], 36, &vu[i]) < 0)
			die("uuid", -EINVAL);
		int rank = policy_state_rank_uuid(ps, &rows[i].org, &vu[i]);
		if (rank < 1)
			die("viewer not a member", -EINVAL);
		v[i] = (policy_viewer){.rank = rank, .uid = w.uids[u], .uid_len = 36,
		                       .subject_rank = subject_rank_cb, .subject_arg = ps};
	}
	const long n = 20 * 1000 * 1000;
	double known[32], lookup[32];
	long visible = 0;
	for (int r = 0; r < runs; r++) {
		double t0 = now();
		for (long i = 0; i < n; i++) {
			bool vis;
			const int k = (int)(i & (N_ROWS - 1));
			if (policy_row_visible(b, rows[k].v, &v[k], &vis) == 0)
				visible += vis;
		}
		known[r] = (double)n / (now() - t0);
		t0 = now();
		for (long i = 0; i < n / 2; i++) {
			bool vis;
			const int k = (int)(i & (N_ROWS - 1));
			policy_viewer pv = v[k];
			pv.rank = policy_state_rank_uuid(ps, &rows[k].org, &vu[k]);
			if (policy_row_visible(b, rows[k].v, &pv, &vis) == 0)
				visible += vis;
		}
		lookup[r] = (double)(n / 2) / (now() - t0);
	}
	printf("decisions_per_s %.0f\n", median(known, runs));
	printf("decisions_with_rank_lookup_per_s %.0f\n", median(lookup, runs));
	printf("decisions_checksum %ld\n", visible);
	long nvis = 0;
	for (int k = 0; k < N_ROWS; k++) {
		bool vis = false;
		nvis += policy_row_visible(b, rows[k].v, &v[k], &vis) == 0 && vis;
	}
	printf("decisions_visible_share %.2f\n", (double)nvis / N_ROWS);
	free(rows);
	world_fini(&w);
}

/* ---- (b) audiences and (c) naive ------------------------------------------------------------ */

typedef struct sink {
	uint64_t audiences, subs, bytes;
} sink;

static int sink_cb(void *arg, const audience_delivery *d)
{
	sink *s = arg;
	size_t len;
	(void)audience_payload_data(d->payload, &len);
	s->audiences++;
	s->subs += d->nsubs;
	s->bytes += len;
	return 0;
}

typedef struct naive_ctx {
	world *w;
	buf out;
	uint64_t delivered, bytes;
} naive_ctx;

static int naive_cb(void *arg, const change *c)
{
	naive_ctx *x = arg;
	for (int i = 0; i < x->w->nsubs; i++) {
		privacy_viewer v = {x->w->uids[i], false};
		change view;
		int rc = privacy_view_as(x->w->pv, c, &v, &view);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		buf_clear(&x->out);
		if (change_json_write(&x->out, &view, 0) < 0)
			return -ENOMEM;
		x->delivered++;
		x->bytes += x->out.len;
	}
	return 0;
}

static void bench_changes(const policy *pol, keyring *keys, int nsubs, int runs, double *ns_aud, double *ns_naive)
{
	world w;
	world_init(&w, pol, keys, nsubs);
	erow *rows = make_rows(keys, 0, 0);
	change_txn txn = {.xid = 1, .commit_lsn = 0x1000};
	change c = {.action = CHANGE_INSERT, .txn = &txn, .rel = &events_rel};
	sink s = {0};
	const int n = 40000;
	double t[32];
	for (int i = 0; i < 2000; i++) { /* warm up: pools, arena, caches */
		c.new_tuple = rows[i & (N_ROWS - 1)].v;
		if (audience_publish(w.aud, &c, sink_cb, &s) < 0)
			die(audience_error(w.aud), -EINVAL);
	}
	for (int r = 0; r < runs; r++) {
		double t0 = now();
		for (int i = 0; i < n; i++) {
			c.new_tuple = rows[i & (N_ROWS - 1)].v;
			c.lsn = (uint64_t)i;
			int rc = audience_publish(w.aud, &c, sink_cb, &s);
			if (rc < 0)
				die(audience_error(w.aud), rc);
		}
		t[r] = (now() - t0) * 1e9 / n;
	}
	*ns_aud = median(t, runs);
	audience_stats st;
	audience_get_stats(w.aud, &st);
	printf("audience_%d_ns_per_change %.0f\n", nsubs, *ns_aud);
	printf("audience_%d_evaluations_per_change %.2f\n", nsubs, (double)st.evaluations / (double)st.changes);
	printf("audience_%d_audiences_per_change %.2f\n", nsubs, (double)st.audiences / (double)st.changes);
	printf("audience_%d_subscribers_per_change %.2f\n", nsubs, (double)st.deliveries / (double)st.changes);
	printf("audience_%d_payload_bytes %.0f\n", nsubs, (double)s.bytes / (double)s.audiences);

	/* naive: fewer changes as the work grows with the subscribers */
	naive_ctx x = {.w = &w};
	buf_init(&x.out);
	int nn = nsubs >= 100000 ? 100 : nsubs >= 1000 ? 4000 : 40000;
	for (int r = 0; r < runs; r++) {
		double t0 = now();
		for (int i = 0; i < nn; i++) {
			c.new_tuple = rows[i & (N_ROWS - 1)].v;
			int rc = privacy_judge(w.pv, &c, naive_cb, &x);
			if (rc < 0)
				die(privacy_error(w.pv), rc);
		}
		t[r] = (now() - t0) * 1e9 / nn;
	}
	*ns_naive = median(t, runs);
	printf("naive_%d_ns_per_change %.0f\n", nsubs, *ns_naive);
	printf("naive_%d_deliveries_per_change %.2f\n", nsubs, (double)x.delivered / ((double)nn * runs));
	buf_fini(&x.out);
	free(rows);
	world_fini(&w);
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 7;
	if (runs < 1 || runs > 31)
		runs = 7;
	const char *src = getenv("WALCAST_SOURCE_DIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/deploy/policy.ini", src ? src : ".");
	policy *pol = NULL;
	char err[POLICY_ERROR_MAX];
	int rc = policy_load_file(path, &pol, err);
	if (rc < 0)
		die(err, rc);
	setenv("WALCAST_BENCH_KEYS", "7:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1);
	keyring *keys = NULL;
	char kerr[KEYRING_ERROR_MAX];
	if ((rc = keyring_load_env("WALCAST_BENCH_KEYS", &keys, kerr)) < 0)
		die(kerr, rc);
	printf("runs %d\n", runs);
	bench_decisions(pol, keys, runs);
	const int sizes[] = {10, 1000, 100000};
	double aud[3], naive[3];
	for (int i = 0; i < 3; i++)
		bench_changes(pol, keys, sizes[i], runs, &aud[i], &naive[i]);
	printf("audience_ratio_100000_over_10 %.2f\n", aud[2] / aud[0]);
	printf("naive_ratio_100000_over_10 %.1f\n", naive[2] / naive[0]);
	keyring_destroy(keys);
	policy_destroy(pol);
	return 0;
}

/*
 * test_audience — unit tests for audience grouping (src/policy/audience.h): for randomized
 * memberships, privacy rules, rows (events with encrypted bodies and masked phones, a table whose
 * rule uses `not (column = uid)`, an ungoverned table, messages, truncates) and subscribers coming
 * and going, every change must reach exactly the (subscriber, serialized payload) pairs that a
 * brute-force evaluation gives — one privacy stage per subscriber, privacy_step as `walcast tail
 * --as` runs it — with the number of evaluations bounded by the ranks present in the row's org,
 * the users named by its uid columns and the bypass audience; the org index followed through
 * promotions, demotions, removals, re-adds and truncates; payloads outliving their audience.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audience.h"
#include "buf.h"
#include "change.h"
#include "keyring.h"
#include "policy.h"
#include "policy_state.h"
#include "privacy.h"

/* ---- the policy and the relations ------------------------------------------------------------ */

static const char POLICY[] =
	"[roles]\n"
	"ranks = viewer, member, analyst, admin, owner\n"
	"bypass = service_role\n"
	"[membership]\n"
	"table = public.org_roles\n"
	"org = org_id\n"
	"user = user_id\n"
	"role = role\n"
	"[privacy]\n"
	"table = public.privacy_rules\n"
	"subject = contact_id\n"
	"min_role = min_role\n"
	"[table public.org_roles]\n"
	"columns = org_id, user_id, role, created_at\n"
	"org = org_id\n"
	"read = viewer\n"
	"[table public.privacy_rules]\n"
	"columns = id, org_id, contact_id, min_role, created_at\n"
	"org = org_id\n"
	"read = admin\n"
	"[table public.events]\n"
	"columns = id, org_id, contact_id, user_id, kind, direction, status, started_at, duration_s,\n"
	"          from_number, to_number, body, created_at\n"
	"org = org_id\n"
	"read = viewer and (user_id = uid or privacy(contact_id))\n"
	"mask from_number = last4 unless member\n"
	"mask to_number = last4 unless member\n"
	"encrypted body = analyst or user_id = uid\n"
	"encrypted_context body = id\n"
	/* NOT over `column = uid`: a viewer without a uid would be judged differently from a
	 * user who simply is not the assignee. Grouping must get this right. */
	"[table public.tasks]\n"
	"columns = id, org_id, assignee, reviewer, secret\n"
	"org = org_id\n"
	"read = member and not (assignee = uid) or reviewer = uid or owner\n"
	"mask secret = null unless reviewer = uid or (analyst and not (assignee = uid))\n";

#define UUID_T 2950
#define TEXT_T 25
#define INT_T 23
#define TS_T 1184
#define BYTEA_T 17

static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "role", .type_oid = TEXT_T, .typmod = -1},
	{.name = "created_at", .type_oid = TS_T, .typmod = -1},
};
/* Not const: the transaction buffer takes references (relation_ref counts in the relation). */
static relation roles_rel = {.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 4,
                                   .cols = roles_cols, .replident = 'f', .version = 1};

static rel_column rules_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "contact_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "min_role", .type_oid = TEXT_T, .typmod = -1},
	{.name = "created_at", .type_oid = TS_T, .typmod = -1},
};
static relation rules_rel = {.oid = 16410, .schema = "public", .name = "privacy_rules", .ncols = 5,
                                   .cols = rules_cols, .replident = 'f', .version = 1};

enum { E_ID, E_ORG, E_CONTACT, E_USER, E_KIND, E_DIR, E_STATUS, E_STARTED, E_DUR, E_FROM, E_TO, E_BODY,
       E_CREATED, E_NCOLS };
static rel_column events_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "contact_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "user_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "kind", .type_oid = TEXT_T, .typmod = -1},
	{.name = "direction", .type_oid = TEXT_T, .typmod = -1},
	{.name = "status", .type_oid = TEXT_T, .typmod = -1},
	{.name = "started_at", .type_oid = TS_T, .typmod = -1},
	{.name = "duration_s", .type_oid = INT_T, .typmod = -1},
	{.name = "from_number", .type_oid = TEXT_T, .typmod = -1},
	{.name = "to_number", .type_oid = TEXT_T, .typmod = -1},
	{.name = "body", .type_oid = BYTEA_T, .typmod = -1},
	{.name = "created_at", .type_oid = TS_T, .typmod = -1},
};
static relation events_rel = {.oid = 16420, .schema = "public", .name = "events", .ncols = E_NCOLS,
                                    .cols = events_cols, .replident = 'f', .version = 1};

enum { T_ID, T_ORG, T_ASSIGNEE, T_REVIEWER, T_SECRET, T_NCOLS };
static rel_column tasks_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "assignee", .type_oid = UUID_T, .typmod = -1},
	{.name = "reviewer", .type_oid = UUID_T, .typmod = -1},
	{.name = "secret", .type_oid = TEXT_T, .typmod = -1},
};
static relation tasks_rel = {.oid = 16430, .schema = "public", .name = "tasks", .ncols = T_NCOLS,
                                   .cols = tasks_cols, .replident = 'f', .version = 1};

static rel_column misc_cols[] = {
	{.name = "id", .type_oid = INT_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
};
static relation misc_rel = {.oid = 16440, .schema = "public", .name = "misc", .ncols = 2,
                                  .cols = misc_cols, .replident = 'f', .version = 1};

static const char *const ROLES[] = {"viewer", "member", "analyst", "admin", "owner"};
#define NRANKS 5

/* ---- rows -------------------------------------------------------------------------------------- */

#define MAXCOLS 16
#define CELL 160

/* A row as the test keeps it: text cells, NULL for SQL NULL. */
typedef struct trow {
	int ncols;
	bool null[MAXCOLS];
	char cell[MAXCOLS][CELL];
} trow;

typedef struct tuple {
	change_value v[MAXCOLS];
} tuple;

static change_value *to_tuple(tuple *t, const trow *r)
{
	for (int i = 0; i < r->ncols; i++) {
		if (r->null[i])
			t->v[i] = (change_value){VALUE_NULL, 0, NULL};
		else
			t->v[i] = (change_value){VALUE_TEXT, (uint32_t)strlen(r->cell[i]), r->cell[i]};
	}
	return t->v;
}

static void set(trow *r, int i, const char *s)
{
	r->null[i] = s == NULL;
	if (s != NULL)
		snprintf(r->cell[i], CELL, "%s", s);
}

static void uuid_of(char out[37], unsigned kind, unsigned n)
{
	snprintf(out, 37, "%02x000000-0000-4000-8000-%012x", kind, n);
}

enum { K_ORG = 0x0a, K_USER = 0x0b, K_CONTACT = 0x0c, K_EVENT = 0x0d, K_RULE = 0x0e, K_TASK = 0x0f };

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static unsigned rnd(uint64_t *s, unsigned n)
{
	return (unsigned)(rng_next(s) % n);
}

/* ---- the fixture ------------------------------------------------------------------------------- */

#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

typedef struct fixture {
	policy *pol;
	keyring *keys;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	char err[POLICY_ERROR_MAX];
	char kerr[KEYRING_ERROR_MAX];
	if (f == NULL || policy_load_string(POLICY, "test.ini", &f->pol, err) != 0) {
		fprintf(stderr, "policy: %s\n", err);
		return -1;
	}
	setenv("WALCAST_TEST_AUDIENCE_KEYS", "7:" KEY_HEX ":primary", 1);
	if (keyring_load_env("WALCAST_TEST_AUDIENCE_KEYS", &f->keys, kerr) != 0) {
		fprintf(stderr, "keys: %s\n", kerr);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	keyring_destroy(f->keys);
	policy_destroy(f->pol);
	free(f);
	return 0;
}

static privacy *new_privacy(fixture *f)
{
	privacy *pv = NULL;
	char err[PRIVACY_ERROR_MAX];
	assert_int_equal(privacy_create(f->pol, f->keys, &pv, err), 0);
	return pv;
}

/* What one publish delivered, per subscriber slot. */
#define MAX_SLOTS 48
typedef struct collected {
	char *payload[MAX_SLOTS];
	int count[MAX_SLOTS];
	int audiences;
	bool keep; /* take a reference to every payload (kept[]) */
	audience_payload *kept[256];
	int nkept;
	int slot_base; /* subscriber opaque pointers are &slot_ids[i] */
} collected;

static int slot_ids[MAX_SLOTS];

static int collect_cb(void *arg, const audience_delivery *d)
{
	collected *c = arg;
	size_t len;
	const char *data = audience_payload_data(d->payload, &len);
	buf check;
	buf_init(&check);
	/* the payload is exactly the serialized view */
	assert_int_equal(change_json_write(&check, d->view, 0), 0);
	assert_int_equal(check.len, len);
	assert_memory_equal(check.data, data, len);
	buf_fini(&check);
	assert_true(d->nsubs > 0);
	for (size_t i = 0; i < d->nsubs; i++) {
		int slot = *(const int *)d->subs[i];
		assert_true(slot >= 0 && slot < MAX_SLOTS);
		c->count[slot]++;
		/* every payload of the call, in order, one per line */
		size_t have = c->payload[slot] ? strlen(c->payload[slot]) : 0;
		char *p = realloc(c->payload[slot], have + len + 2);
		assert_non_null(p);
		memcpy(p + have, data, len);
		p[have + len] = '\n';
		p[have + len + 1] = '\0';
		c->payload[slot] = p;
	}
	c->audiences++;
	if (c->keep && c->nkept < 256)
		c->kept[c->nkept++] = audience_payload_ref(d->payload);
	return 0;
}

static void collected_reset(collected *c)
{
	for (int i = 0; i < MAX_SLOTS; i++) {
		free(c->payload[i]);
		c->payload[i] = NULL;
		c->count[i] = 0;
	}
	c->audiences = 0;
}

/* ---- the randomized equivalence ------------------------------------------------------------------ */

#define N_ORGS 4
#define N_USERS 10
#define N_CONTACTS 6
#define MAX_MROWS 40
#define MAX_RULES 8
#define MAX_EVENTS 30
#define MAX_TASKS 20

typedef struct slot {
	char uid[37];
	bool has_uid;
	bool bypass;
	privacy *pv;    /* the brute-force stage of this subscriber */
	audience_sub *sub; /* NULL while not subscribed */
	buf want;       /* transactions: what the brute-force stage delivered at the commit */
} slot;

typedef struct world {
	fixture *f;
	uint64_t seed;
	trow mrows[MAX_MROWS];
	int nm;
	trow rules[MAX_RULES];
	int nr;
	trow events[MAX_EVENTS];
	int ne;
	trow tasks[MAX_TASKS];
	int nt;
	unsigned next_id;
	slot slots[MAX_SLOTS];
	int nslots;
	privacy *apv;
	audience *aud;
	collected col;
	int txn_len;     /* 0: every change published on its own; else changes held in the open txn */
	bool txns;       /* group changes into transactions of 1 to 8 changes */
	uint64_t checked_deliveries, checked_changes, moved_rows, named_changes, checked_txns;
} world;

static const char *random_user(world *w, char out[37])
{
	uuid_of(out, K_USER, rnd(&w->seed, N_USERS));
	return out;
}

static const char *random_org(world *w, char out[37])
{
	uuid_of(out, K_ORG, rnd(&w->seed, N_ORGS));
	return out;
}

static void make_event(world *w, trow *r, const char *id)
{
	char b[37];
	r->ncols = E_NCOLS;
	set(r, E_ID, id);
	set(r, E_ORG, random_org(w, b));
	unsigned ck = rnd(&w->seed, N_CONTACTS + 1);
	if (ck == N_CONTACTS) {
		set(r, E_CONTACT, NULL);
	} else {
		uuid_of(b, K_CONTACT, ck);
		set(r, E_CONTACT, b);
	}
	set(r, E_USER, rnd(&w->seed, 5) == 0 ? NULL : random_user(w, b));
	bool sms = rnd(&w->seed, 2);
	set(r, E_KIND, sms ? "sms" : "call");
	set(r, E_DIR, rnd(&w->seed, 2) ? "inbound" : "outbound");
	set(r, E_STATUS, "completed");
	set(r, E_STARTED, "2026-11-22 10:00:00+00");
	set(r, E_DUR, sms ? NULL : "42");
	set(r, E_FROM, rnd(&w->seed, 6) == 0 ? NULL : "+33612345678");
	set(r, E_TO, "+1 (555) 010-9999");
	if (!sms || rnd(&w->seed, 8) == 0) {
		set(r, E_BODY, NULL);
	} else if (rnd(&w->seed, 10) == 0) {
		set(r, E_BODY, "\\xdeadbeef"); /* not a stored value: invalid_ciphertext for those who may read */
	} else {
		buf out;
		buf_init(&out);
		char plain[64];
		snprintf(plain, sizeof(plain), "message %u", rnd(&w->seed, 1000));
		assert_int_equal(keyring_encrypt_hex(w->f->keys, 0, plain, strlen(plain), id, strlen(id), &out), 0);
		assert_true(out.len < CELL);
		set(r, E_BODY, out.data);
		buf_fini(&out);
	}
	set(r, E_CREATED, "2026-11-22 10:00:01+00");
}

static void make_task(world *w, trow *r, const char *id)
{
	char b[37];
	r->ncols = T_NCOLS;
	set(r, T_ID, id);
	set(r, T_ORG, random_org(w, b));
	set(r, T_ASSIGNEE, rnd(&w->seed, 4) == 0 ? NULL : random_user(w, b));
	set(r, T_REVIEWER, rnd(&w->seed, 3) == 0 ? NULL : random_user(w, b));
	set(r, T_SECRET, rnd(&w->seed, 5) == 0 ? NULL : "the secret");
}

/* The ranks of the org's subscribed (slot) members, before or after the change. */
static void org_ranks(world *w, const change_value *org, bool present[NRANKS + 1])
{
	if (org == NULL || org->kind != VALUE_TEXT)
		return;
	policy_state *ps = privacy_state(w->apv);
	for (int i = 0; i < w->nslots; i++) {
		slot *s = &w->slots[i];
		if (s->sub == NULL || s->bypass || !s->has_uid)
			continue;
		int r = policy_state_rank(ps, org->data, org->len, s->uid, 36);
		if (r > 0)
			present[r] = true;
	}
}

/* Subscribed users (distinct, with a slot subscribed) named by the tuple's uid columns. */
static int named_users(world *w, const change *c, char named[8][37], int n)
{
	const int *ucols;
	const policy_bound *b = NULL;
	assert_int_equal(privacy_bind(w->apv, c->rel, &b), 0);
	if (b == NULL)
		return n;
	size_t nu = policy_bound_uid_columns(b, &ucols);
	const change_value *tuples[2] = {c->action == CHANGE_DELETE ? c->old_tuple : c->new_tuple,
	                                 c->action == CHANGE_DELETE ? NULL : c->old_tuple};
	for (int t = 0; t < 2; t++) {
		if (tuples[t] == NULL)
			continue;
		for (size_t k = 0; k < nu; k++) {
			const change_value *v = &tuples[t][ucols[k]];
			if (v->kind != VALUE_TEXT)
				continue;
			bool subscribed = false, dup = false;
			for (int i = 0; i < w->nslots; i++)
				subscribed |= w->slots[i].sub != NULL && !w->slots[i].bypass && w->slots[i].has_uid &&
				              strncmp(w->slots[i].uid, v->data, 36) == 0;
			for (int j = 0; j < n; j++)
				dup |= strncmp(named[j], v->data, 36) == 0;
			if (subscribed && !dup && n < 8)
				snprintf(named[n++], 37, "%.36s", v->data);
		}
	}
	return n;
}

/* Publishes c through the audience and through every slot's own privacy stage; compares. */
static void step(world *w, const change *c)
{
	/* the bound on evaluations, from the state before and after */
	bool present[NRANKS + 1] = {false};
	const change_value *row = c->action == CHANGE_DELETE ? c->old_tuple : c->new_tuple;
	bool governed_row = c->rel != NULL && c->action != CHANGE_TRUNCATE && c->action != CHANGE_MESSAGE &&
	                    c->rel != &misc_rel && row != NULL;
	int org_col = c->rel == &events_rel ? E_ORG : c->rel == &tasks_rel ? T_ORG : c->rel == &rules_rel ? 1 : 0;
	bool moved = false;
	if (governed_row && c->action == CHANGE_UPDATE && c->old_tuple != NULL) {
		const change_value *a = &c->new_tuple[org_col], *b = &c->old_tuple[org_col];
		moved = !(a->kind == VALUE_TEXT && b->kind == VALUE_TEXT && a->len == b->len &&
		          memcmp(a->data, b->data, a->len) == 0);
		/* a change of the policy itself: old ranks (before it) may differ from the new ones */
		moved |= c->rel == &roles_rel || c->rel == &rules_rel;
	}
	if (governed_row)
		org_ranks(w, &row[org_col], present);
	char named[8][37];
	int nnamed = governed_row ? named_users(w, c, named, 0) : 0;
	bool any_bypass = false;
	for (int i = 0; i < w->nslots; i++)
		any_bypass |= w->slots[i].sub != NULL && w->slots[i].bypass;

	collected_reset(&w->col);
	int rc = audience_publish(w->aud, c, collect_cb, &w->col);
	if (rc < 0)
		fail_msg("audience_publish: %d %s", rc, audience_error(w->aud));
	assert_int_equal(rc, w->col.audiences);
	if (governed_row)
		org_ranks(w, &row[org_col], present);
	int nranks_present = 0;
	for (int r = 1; r <= NRANKS; r++)
		nranks_present += present[r];
	audience_stats st;
	audience_get_stats(w->aud, &st);
	assert_int_equal(st.failed, 0);
	uint64_t bound = (uint64_t)(nranks_present * (moved ? NRANKS + 1 : 1) + nnamed + any_bypass);
	if (st.last_evaluations > bound)
		fail_msg("change %lu: %lu evaluations, bound %lu (ranks %d, named %d, bypass %d, moved %d)",
		         (unsigned long)w->checked_changes, (unsigned long)st.last_evaluations, (unsigned long)bound,
		         nranks_present, nnamed, any_bypass, moved);
	if (!any_bypass && nranks_present == 0)
		assert_int_equal(st.last_evaluations, 0); /* nobody subscribed in the org: no work */
	w->moved_rows += moved;
	w->named_changes += nnamed > 0;

	buf line;
	buf_init(&line);
	for (int i = 0; i < w->nslots; i++) {
		slot *s = &w->slots[i];
		privacy_viewer v = {s->has_uid ? s->uid : NULL, s->bypass};
		change out;
		int seen = privacy_step(s->pv, c, &v, &out);
		if (seen < 0)
			fail_msg("privacy_step: %s", privacy_error(s->pv));
		if (s->sub == NULL) {
			assert_int_equal(w->col.count[i], 0);
			continue;
		}
		if (!seen) {
			if (w->col.count[i] != 0)
				fail_msg("change %lu: slot %d (uid %s, bypass %d) got %s but may not see it",
				         (unsigned long)w->checked_changes, i, s->uid, s->bypass, w->col.payload[i]);
			continue;
		}
		buf_clear(&line);
		assert_int_equal(change_json_write(&line, &out, 0), 0);
		assert_int_equal(buf_putc(&line, '\n'), 0);
		if (w->col.count[i] != 1)
			fail_msg("change %lu: slot %d (uid %s) got %d deliveries, wanted 1: %s",
			         (unsigned long)w->checked_changes, i, s->uid, w->col.count[i], line.data);
		if (strcmp(w->col.payload[i], line.data) != 0)
			fail_msg("change %lu: slot %d (uid %s)\n got  %s\n want %s", (unsigned long)w->checked_changes, i,
			         s->uid, w->col.payload[i], line.data);
		w->checked_deliveries++;
	}
	buf_fini(&line);
	w->checked_changes++;
}

/* The brute-force judging callback of one slot's own stage: its view, appended to want. */
static int want_cb(void *arg, const change *c)
{
	slot *s = arg;
	privacy_viewer v = {s->has_uid ? s->uid : NULL, s->bypass};
	change out;
	int rc = privacy_view_as(s->pv, c, &v, &out);
	if (rc <= 0)
		return rc;
	assert_int_equal(change_json_write(&s->want, &out, 0), 0);
	assert_int_equal(buf_putc(&s->want, '\n'), 0);
	return 0;
}

static const change_txn TXN = {.xid = 900, .commit_lsn = 0x2000000, .end_lsn = 0x2000010, .commit_time = 0};

/* Commits the open transaction through the audience and through every slot's own stage, and
 * compares what each subscribed slot got, payload by payload, in order. */
static void txn_commit(world *w)
{
	if (w->txn_len == 0)
		return;
	collected_reset(&w->col);
	int rc = audience_commit(w->aud, &TXN, collect_cb, &w->col);
	if (rc < 0)
		fail_msg("audience_commit: %d %s", rc, audience_error(w->aud));
	assert_int_equal(rc, w->col.audiences);
	for (int i = 0; i < w->nslots; i++) {
		slot *s = &w->slots[i];
		buf_clear(&s->want);
		if (privacy_commit(s->pv, &TXN, want_cb, s) < 0)
			fail_msg("privacy_commit: %s", privacy_error(s->pv));
		const char *got = w->col.payload[i] ? w->col.payload[i] : "";
		const char *want = s->sub != NULL && s->want.len > 0 ? s->want.data : "";
		if (strcmp(got, want) != 0)
			fail_msg("transaction %lu (%d changes): slot %d (uid %s, bypass %d)\n got  %s\n want %s",
			         (unsigned long)w->checked_txns, w->txn_len, i, s->uid, s->bypass, got, want);
		if (s->sub != NULL)
			w->checked_deliveries += (uint64_t)w->col.count[i];
	}
	audience_stats st;
	audience_get_stats(w->aud, &st);
	assert_int_equal(st.failed, 0);
	w->checked_txns++;
	w->txn_len = 0;
}

/* Holds c in the open transaction (begun when none is). */
static void txn_change(world *w, const change *c)
{
	if (w->txn_len == 0) {
		assert_int_equal(audience_begin(w->aud, &TXN), 0);
		for (int i = 0; i < w->nslots; i++)
			assert_int_equal(privacy_begin(w->slots[i].pv, &TXN), 0);
	}
	collected_reset(&w->col);
	assert_int_equal(audience_change(w->aud, c, collect_cb, &w->col), 0);
	assert_int_equal(w->col.audiences, 0); /* nothing before the commit */
	for (int i = 0; i < w->nslots; i++)
		assert_int_equal(privacy_change(w->slots[i].pv, c, want_cb, &w->slots[i]), 0);
	w->txn_len++;
	w->checked_changes++;
	if (rnd(&w->seed, 4) == 0 || w->txn_len == 8)
		txn_commit(w);
}

static void emit(world *w, change_action a, const relation *rel, const trow *n, const trow *o)
{
	tuple nt, ot;
	change c = {.action = a, .lsn = 0x1000000 + w->checked_changes, .txn = &TXN, .rel = rel,
	            .new_tuple = n ? to_tuple(&nt, n) : NULL, .old_tuple = o ? to_tuple(&ot, o) : NULL};
	if (w->txns)
		txn_change(w, &c);
	else
		step(w, &c);
}

static void emit_message(world *w)
{
	change c = {.action = CHANGE_MESSAGE, .lsn = 0x1000000 + w->checked_changes, .transactional = false,
	            .prefix = "walcast", .content = "hello", .content_len = 5};
	if (w->txns)
		txn_commit(w); /* a non-transactional message comes between transactions */
	step(w, &c);
}

/* The index must list exactly the (org, subscribed user) pairs with rank >= 1. */
static void check_index(world *w)
{
	policy_state *ps = privacy_state(w->apv);
	size_t links = 0, users = 0;
	bool org_used[N_ORGS] = {false};
	for (unsigned u = 0; u < N_USERS; u++) {
		char ut[37];
		uuid_of(ut, K_USER, u);
		bool subscribed = false;
		for (int i = 0; i < w->nslots; i++)
			subscribed |= w->slots[i].sub != NULL && !w->slots[i].bypass && w->slots[i].has_uid &&
			              strcmp(w->slots[i].uid, ut) == 0;
		if (!subscribed)
			continue;
		users++;
		for (unsigned o = 0; o < N_ORGS; o++) {
			char ot[37];
			uuid_of(ot, K_ORG, o);
			if (policy_state_rank(ps, ot, 36, ut, 36) > 0) {
				links++;
				org_used[o] = true;
			}
		}
	}
	/* the uid of a user with no membership at all (slot users beyond N_USERS) */
	for (int i = 0; i < w->nslots; i++) {
		slot *s = &w->slots[i];
		if (s->sub == NULL || s->bypass || !s->has_uid)
			continue;
		unsigned k;
		if (sscanf(s->uid + 24, "%x", &k) == 1 && k >= N_USERS) {
			bool first = true;
			for (int j = 0; j < i; j++)
				first &= !(w->slots[j].sub != NULL && !w->slots[j].bypass && w->slots[j].has_uid &&
				           strcmp(w->slots[j].uid, s->uid) == 0);
			users += first;
		}
	}
	size_t orgs = 0;
	for (int o = 0; o < N_ORGS; o++)
		orgs += org_used[o];
	audience_stats st;
	audience_get_stats(w->aud, &st);
	assert_int_equal(st.links, links);
	assert_int_equal(st.orgs, orgs);
	assert_int_equal(st.users, users);
}

static void random_change(world *w)
{
	char b[37], id[37];
	unsigned op = rnd(&w->seed, 100);
	if (op < 18) { /* memberships: insert, re-rank, remove */
		trow r = {.ncols = 4};
		set(&r, 0, random_org(w, b));
		set(&r, 1, random_user(w, b));
		unsigned role = rnd(&w->seed, NRANKS + 1);
		set(&r, 2, role == NRANKS ? "stranger" : ROLES[role]);
		set(&r, 3, "2026-11-22 09:00:00+00");
		unsigned kind = rnd(&w->seed, 3);
		if ((kind == 0 || w->nm == 0) && w->nm < MAX_MROWS) {
			w->mrows[w->nm++] = r;
			emit(w, CHANGE_INSERT, &roles_rel, &r, NULL);
		} else if (kind == 1 && w->nm > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->nm);
			trow n = w->mrows[i];
			set(&n, 2, r.cell[2]); /* promotion or demotion */
			if (rnd(&w->seed, 4) == 0)
				set(&n, 0, r.cell[0]); /* moved to another org */
			trow o = w->mrows[i];
			w->mrows[i] = n;
			emit(w, CHANGE_UPDATE, &roles_rel, &n, &o);
		} else if (w->nm > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->nm);
			trow o = w->mrows[i];
			w->mrows[i] = w->mrows[--w->nm];
			emit(w, CHANGE_DELETE, &roles_rel, NULL, &o);
		}
	} else if (op < 24) { /* privacy rules */
		if (w->nr < MAX_RULES && (w->nr == 0 || rnd(&w->seed, 2))) {
			trow r = {.ncols = 5};
			uuid_of(id, K_RULE, w->next_id++);
			set(&r, 0, id);
			set(&r, 1, random_org(w, b));
			uuid_of(b, K_CONTACT, rnd(&w->seed, N_CONTACTS));
			set(&r, 2, b);
			set(&r, 3, ROLES[rnd(&w->seed, NRANKS)]);
			set(&r, 4, "2026-11-22 09:00:00+00");
			w->rules[w->nr++] = r;
			emit(w, CHANGE_INSERT, &rules_rel, &r, NULL);
		} else if (w->nr > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->nr);
			trow o = w->rules[i];
			w->rules[i] = w->rules[--w->nr];
			emit(w, CHANGE_DELETE, &rules_rel, NULL, &o);
		}
	} else if (op < 70) { /* events */
		unsigned kind = rnd(&w->seed, 4);
		if ((kind <= 1 || w->ne == 0) && w->ne < MAX_EVENTS) {
			trow r;
			uuid_of(id, K_EVENT, w->next_id++);
			make_event(w, &r, id);
			w->events[w->ne++] = r;
			emit(w, CHANGE_INSERT, &events_rel, &r, NULL);
		} else if (kind == 2 && w->ne > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->ne);
			trow o = w->events[i], n;
			make_event(w, &n, o.cell[E_ID]);
			if (rnd(&w->seed, 3) != 0)
				set(&n, E_ORG, o.cell[E_ORG]); /* mostly the same org */
			w->events[i] = n;
			emit(w, CHANGE_UPDATE, &events_rel, &n, rnd(&w->seed, 6) == 0 ? NULL : &o);
		} else if (w->ne > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->ne);
			trow o = w->events[i];
			w->events[i] = w->events[--w->ne];
			emit(w, CHANGE_DELETE, &events_rel, NULL, &o);
		}
	} else if (op < 88) { /* tasks */
		unsigned kind = rnd(&w->seed, 3);
		if ((kind == 0 || w->nt == 0) && w->nt < MAX_TASKS) {
			trow r;
			uuid_of(id, K_TASK, w->next_id++);
			make_task(w, &r, id);
			w->tasks[w->nt++] = r;
			emit(w, CHANGE_INSERT, &tasks_rel, &r, NULL);
		} else if (kind == 1 && w->nt > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->nt);
			trow o = w->tasks[i], n;
			make_task(w, &n, o.cell[T_ID]);
			if (rnd(&w->seed, 2))
				set(&n, T_ORG, o.cell[T_ORG]);
			w->tasks[i] = n;
			emit(w, CHANGE_UPDATE, &tasks_rel, &n, &o);
		} else if (w->nt > 0) {
			int i = (int)rnd(&w->seed, (unsigned)w->nt);
			trow o = w->tasks[i];
			w->tasks[i] = w->tasks[--w->nt];
			emit(w, CHANGE_DELETE, &tasks_rel, NULL, &o);
		}
	} else if (op < 91) { /* an ungoverned table */
		trow r = {.ncols = 2};
		set(&r, 0, "1");
		set(&r, 1, random_org(w, b));
		emit(w, CHANGE_INSERT, &misc_rel, &r, NULL);
	} else if (op < 93) {
		emit_message(w);
	} else if (op < 94) { /* truncates: of events (bypass only), rarely of the roster */
		if (rnd(&w->seed, 8) == 0) {
			w->nm = 0;
			emit(w, CHANGE_TRUNCATE, &roles_rel, NULL, NULL);
		} else {
			w->ne = 0;
			emit(w, CHANGE_TRUNCATE, &events_rel, NULL, NULL);
		}
	} else { /* subscribers come and go (between transactions) */
		txn_commit(w);
		int i = (int)rnd(&w->seed, (unsigned)w->nslots);
		slot *s = &w->slots[i];
		if (s->sub != NULL) {
			audience_unsubscribe(w->aud, s->sub);
			s->sub = NULL;
		} else {
			assert_int_equal(audience_subscribe(w->aud, &slot_ids[i], s->has_uid ? s->uid : NULL, s->bypass,
			                                    &s->sub),
			                 0);
		}
	}
	if (w->txn_len == 0)
		check_index(w);
}

static void run_world(fixture *f, uint64_t seed, int nchanges, bool txns)
{
	world *w = calloc(1, sizeof(*w));
	assert_non_null(w);
	w->f = f;
	w->seed = seed;
	w->txns = txns;
	w->apv = new_privacy(f);
	assert_int_equal(audience_create(w->apv, 0, &w->aud), 0);
	/* slots: users 0..N_USERS-1 with one to three connections, two bypass, one without a uid,
	 * one user who is a member nowhere */
	w->nslots = 0;
	for (unsigned u = 0; u < N_USERS; u++) {
		int conns = 1 + (int)rnd(&w->seed, 3);
		for (int k = 0; k < conns; k++) {
			slot *s = &w->slots[w->nslots++];
			uuid_of(s->uid, K_USER, u);
			s->has_uid = true;
		}
	}
	for (int k = 0; k < 2; k++) {
		slot *s = &w->slots[w->nslots++];
		s->bypass = true;
		if (k == 1) {
			uuid_of(s->uid, K_USER, 0); /* a bypass connection of a user: bypass wins */
			s->has_uid = true;
		}
	}
	w->nslots++; /* no uid, no bypass: sees nothing */
	slot *stranger = &w->slots[w->nslots++];
	uuid_of(stranger->uid, K_USER, N_USERS + 5);
	stranger->has_uid = true;
	assert_true(w->nslots <= MAX_SLOTS);
	for (int i = 0; i < w->nslots; i++) {
		w->slots[i].pv = new_privacy(f);
		buf_init(&w->slots[i].want);
		if (rnd(&w->seed, 4) != 0)
			assert_int_equal(audience_subscribe(w->aud, &slot_ids[i], w->slots[i].has_uid ? w->slots[i].uid : NULL,
			                                    w->slots[i].bypass, &w->slots[i].sub),
			                 0);
	}
	for (int i = 0; i < nchanges; i++)
		random_change(w);
	txn_commit(w);
	/* the index rebuilt from scratch is the one maintained incrementally */
	audience_stats before, after;
	audience_get_stats(w->aud, &before);
	assert_int_equal(audience_rebuild(w->aud), 0);
	audience_get_stats(w->aud, &after);
	assert_int_equal(before.links, after.links);
	assert_int_equal(before.orgs, after.orgs);
	assert_true(w->checked_deliveries > 100);
	if (txns) {
		assert_true(w->checked_txns > 200);
	} else {
		assert_true(w->moved_rows > 0);
		assert_true(w->named_changes > 0);
	}
	print_message("seed %lx%s: %lu changes, %lu transactions, %lu deliveries compared, %lu evaluations, "
	              "%lu audiences\n",
	              (unsigned long)seed, txns ? " (transactions)" : "", (unsigned long)w->checked_changes,
	              (unsigned long)w->checked_txns, (unsigned long)w->checked_deliveries,
	              (unsigned long)after.evaluations, (unsigned long)after.audiences);
	collected_reset(&w->col);
	for (int i = 0; i < w->nslots; i++) {
		privacy_destroy(w->slots[i].pv);
		buf_fini(&w->slots[i].want);
	}
	audience_destroy(w->aud);
	privacy_destroy(w->apv);
	free(w);
}

static void test_randomized_equivalence(void **state)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		slot_ids[i] = i;
	const uint64_t seeds[] = {0x9E3779B97F4A7C15ULL, 0x1234567ULL, 0xC0FFEEULL, 0xBADC0DEULL};
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
		run_world(*state, seeds[i], 1500, false);
}

/* The same, with the changes grouped into transactions of 1 to 8 changes that mix policy and
 * data changes: each transaction's deliveries, in order, equal those of the brute-force stages
 * judging that transaction (new rows by the state as of its commit, old rows by the state just
 * before it). */
static void test_randomized_transactions(void **state)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		slot_ids[i] = i;
	const uint64_t seeds[] = {0x9E3779B97F4A7C15ULL, 0xFEEDFACEULL, 0xC0FFEEULL};
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
		run_world(*state, seeds[i], 1500, true);
}

/* ---- deterministic cases ------------------------------------------------------------------------- */

typedef struct det {
	fixture *f;
	privacy *pv;
	audience *aud;
	collected col;
	unsigned lsn;
} det;

static void det_init(det *d, fixture *f)
{
	memset(d, 0, sizeof(*d));
	for (int i = 0; i < MAX_SLOTS; i++)
		slot_ids[i] = i;
	d->f = f;
	d->pv = new_privacy(f);
	assert_int_equal(audience_create(d->pv, 0, &d->aud), 0);
}

static void det_fini(det *d)
{
	collected_reset(&d->col);
	audience_destroy(d->aud);
	privacy_destroy(d->pv);
}

static int det_publish(det *d, change_action a, const relation *rel, const trow *n, const trow *o)
{
	tuple nt, ot;
	change c = {.action = a, .lsn = ++d->lsn, .rel = rel, .new_tuple = n ? to_tuple(&nt, n) : NULL,
	            .old_tuple = o ? to_tuple(&ot, o) : NULL};
	collected_reset(&d->col);
	int rc = audience_publish(d->aud, &c, collect_cb, &d->col);
	assert_true(rc >= 0);
	return rc;
}

static trow mrow(unsigned org, unsigned user, const char *role)
{
	trow r = {.ncols = 4};
	char b[37];
	uuid_of(b, K_ORG, org);
	set(&r, 0, b);
	uuid_of(b, K_USER, user);
	set(&r, 1, b);
	set(&r, 2, role);
	set(&r, 3, "2026-11-22 09:00:00+00");
	return r;
}

static trow erow(unsigned org, int user, const char *id)
{
	trow r = {.ncols = E_NCOLS};
	char b[37];
	for (int i = 0; i < E_NCOLS; i++)
		set(&r, i, NULL);
	set(&r, E_ID, id);
	uuid_of(b, K_ORG, org);
	set(&r, E_ORG, b);
	if (user >= 0) {
		uuid_of(b, K_USER, (unsigned)user);
		set(&r, E_USER, b);
	}
	set(&r, E_KIND, "call");
	set(&r, E_FROM, "+33612345678");
	return r;
}

static uint64_t last_evals(det *d)
{
	audience_stats st;
	audience_get_stats(d->aud, &st);
	return st.last_evaluations;
}

static audience_sub *sub(det *d, int idx, int user)
{
	audience_sub *s = NULL;
	char b[37];
	uuid_of(b, K_USER, (unsigned)user);
	assert_int_equal(audience_subscribe(d->aud, &slot_ids[idx], b, false, &s), 0);
	return s;
}

/* Promotions, demotions, removals, re-adds, subscribe and unsubscribe, with the audiences and
 * the number of evaluations checked change by change. */
static void test_index_maintenance(void **state)
{
	det d;
	det_init(&d, *state);
	const char *ev = "0d000000-0000-4000-8000-000000000001";
	trow e = erow(1, -1, ev);
	/* nobody subscribed: no work */
	assert_int_equal(det_publish(&d, CHANGE_INSERT, &events_rel, &e, NULL), 0);
	assert_int_equal(last_evals(&d), 0);

	trow m1 = mrow(1, 1, "viewer"), m2 = mrow(1, 2, "viewer"), m3 = mrow(1, 3, "analyst"), m4 = mrow(2, 4, "owner");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m2, NULL);
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m4, NULL);
	audience_sub *s1 = sub(&d, 1, 1), *s1b = sub(&d, 2, 1), *s2 = sub(&d, 3, 2), *s3 = sub(&d, 4, 3);
	audience_sub *s4 = sub(&d, 5, 4);
	(void)s1b;
	audience_stats st;
	audience_get_stats(d.aud, &st);
	assert_int_equal(st.subscribers, 5);
	assert_int_equal(st.users, 4);
	assert_int_equal(st.links, 3); /* users 1, 2 in org 1, user 4 in org 2; user 3 a member nowhere yet */
	assert_int_equal(st.orgs, 2);

	/* one audience for the three connections of two viewers: one evaluation */
	assert_int_equal(det_publish(&d, CHANGE_INSERT, &events_rel, &e, NULL), 1);
	assert_int_equal(last_evals(&d), 1);
	assert_int_equal(d.col.count[1] + d.col.count[2] + d.col.count[3], 3);
	assert_int_equal(d.col.count[4] + d.col.count[5], 0);
	assert_non_null(strstr(d.col.payload[1], "\"from_number\":\"********5678\""));

	/* user 3 joins org 1 as analyst: a second audience (the body decrypted, phones in clear) */
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m3, NULL);
	assert_int_equal(d.col.count[4], 1); /* the roster row itself, to every member of org 1 */
	assert_int_equal(d.col.count[1], 1);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 2);
	assert_int_equal(last_evals(&d), 2);
	assert_non_null(strstr(d.col.payload[4], "\"from_number\":\"+33612345678\""));

	/* the handling user (user 2) is judged on their own: three audiences, three evaluations */
	trow eh = erow(1, 2, ev);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &eh, NULL), 3);
	assert_int_equal(last_evals(&d), 3);
	assert_int_equal(d.col.count[3], 1);

	/* demotion of user 3 to viewer: back to one rank audience (+ none named) */
	trow m3v = mrow(1, 3, "viewer");
	det_publish(&d, CHANGE_UPDATE, &roles_rel, &m3v, &m3);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 1);
	assert_int_equal(d.col.count[4], 1);
	assert_non_null(strstr(d.col.payload[4], "\"from_number\":\"********5678\""));

	/* removal of user 1: their two connections get nothing; the delete of the roster row is
	 * judged before it applies, so they still see their own removal */
	det_publish(&d, CHANGE_DELETE, &roles_rel, NULL, &m1);
	assert_int_equal(d.col.count[1] + d.col.count[2], 2);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 1);
	assert_int_equal(d.col.count[1] + d.col.count[2], 0);
	assert_int_equal(d.col.count[3] + d.col.count[4], 2);
	audience_get_stats(d.aud, &st);
	assert_int_equal(st.links, 3);

	/* re-add as owner */
	trow m1o = mrow(1, 1, "owner");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m1o, NULL);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 2);
	assert_int_equal(d.col.count[1] + d.col.count[2], 2);

	/* unsubscribe one of user 1's connections: the other still receives */
	audience_unsubscribe(d.aud, s1);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 2);
	assert_int_equal(d.col.count[1], 0);
	assert_int_equal(d.col.count[2], 1);
	/* unsubscribe user 4, the only subscriber of org 2: org 2 leaves the index */
	audience_unsubscribe(d.aud, s4);
	audience_get_stats(d.aud, &st);
	assert_int_equal(st.orgs, 1);
	trow e2 = erow(2, -1, "0d000000-0000-4000-8000-000000000002");
	assert_int_equal(det_publish(&d, CHANGE_INSERT, &events_rel, &e2, NULL), 0);
	assert_int_equal(last_evals(&d), 0);
	/* a truncate of the roster removes everyone */
	det_publish(&d, CHANGE_TRUNCATE, &roles_rel, NULL, NULL);
	audience_get_stats(d.aud, &st);
	assert_int_equal(st.links, 0);
	assert_int_equal(st.orgs, 0);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 0);
	assert_int_equal(last_evals(&d), 0);
	/* bypass sees everything, unmasked, in one audience */
	audience_sub *b1 = NULL, *b2 = NULL;
	assert_int_equal(audience_subscribe(d.aud, &slot_ids[10], NULL, true, &b1), 0);
	assert_int_equal(audience_subscribe(d.aud, &slot_ids[11], "0B000000-0000-4000-8000-000000000001", true, &b2),
	                 0);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 1);
	assert_int_equal(last_evals(&d), 1);
	assert_int_equal(d.col.count[10] + d.col.count[11], 2);
	assert_non_null(strstr(d.col.payload[10], "\"from_number\":\"+33612345678\""));
	/* bad uids are refused */
	audience_sub *bad = NULL;
	assert_int_equal(audience_subscribe(d.aud, &slot_ids[12], "not-a-uuid", false, &bad), -EINVAL);
	assert_null(bad);
	(void)s2, (void)s3;
	det_fini(&d);
}

static void det_change(det *d, change_action a, const relation *rel, const trow *n, const trow *o)
{
	static const change_txn txn = {.xid = 901, .commit_lsn = 0x3000000, .end_lsn = 0x3000010};
	tuple nt, ot;
	change c = {.action = a, .lsn = ++d->lsn, .txn = &txn, .rel = rel, .new_tuple = n ? to_tuple(&nt, n) : NULL,
	            .old_tuple = o ? to_tuple(&ot, o) : NULL};
	assert_int_equal(audience_change(d->aud, &c, collect_cb, &d->col), 0);
}

static int det_commit(det *d)
{
	static const change_txn txn = {.xid = 901, .commit_lsn = 0x3000000, .end_lsn = 0x3000010};
	collected_reset(&d->col);
	int rc = audience_commit(d->aud, &txn, collect_cb, &d->col);
	assert_true(rc >= 0);
	return rc;
}

/* A transaction cut off leaves nothing; one that removes a member and deletes rows of the org
 * still sends those deletes to the member (the BEFORE index); an event inserted with its
 * handler's removal never reaches the handler (the AFTER index). */
static void test_transactions(void **state)
{
	det d;
	det_init(&d, *state);
	static const change_txn txn = {.xid = 901, .commit_lsn = 0x3000000, .end_lsn = 0x3000010};
	trow m1 = mrow(1, 1, "viewer"), m2 = mrow(1, 2, "member");
	trow e = erow(1, 1, "0d000000-0000-4000-8000-000000000001");
	trow e2 = erow(1, 1, "0d000000-0000-4000-8000-000000000002");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m2, NULL);
	sub(&d, 1, 1);
	sub(&d, 2, 2);
	/* cut off: user 1 is not made a member, nothing is delivered */
	assert_int_equal(audience_begin(d.aud, &txn), 0);
	det_change(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	det_change(&d, CHANGE_INSERT, &events_rel, &e, NULL);
	assert_int_equal(d.col.audiences, 0);
	audience_abort(d.aud);
	audience_stats st;
	audience_get_stats(d.aud, &st);
	assert_int_equal(st.links, 1);
	assert_int_equal(policy_state_rank(privacy_state(d.pv), mrow(1, 1, "x").cell[0], 36, m1.cell[1], 36), 0);
	/* sent again, committed: user 1 gets the roster row and the event they handle */
	assert_int_equal(audience_begin(d.aud, &txn), 0);
	det_change(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	det_change(&d, CHANGE_INSERT, &events_rel, &e, NULL);
	assert_true(det_commit(&d) >= 2);
	assert_int_equal(d.col.count[1], 2);
	assert_int_equal(d.col.count[2], 2);
	/* user 1 removed and the event deleted in one transaction: the delete still reaches them */
	assert_int_equal(audience_begin(d.aud, &txn), 0);
	det_change(&d, CHANGE_DELETE, &roles_rel, NULL, &m1);
	det_change(&d, CHANGE_DELETE, &events_rel, NULL, &e);
	det_commit(&d);
	assert_int_equal(d.col.count[1], 2);
	assert_non_null(strstr(d.col.payload[1], "\"action\":\"delete\",\"schema\":\"public\",\"table\":\"events\""));
	assert_int_equal(d.col.count[2], 2);
	/* back as a viewer, an event they handle and their removal in one transaction: nothing */
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	assert_int_equal(audience_begin(d.aud, &txn), 0);
	det_change(&d, CHANGE_INSERT, &events_rel, &e2, NULL);
	det_change(&d, CHANGE_DELETE, &roles_rel, NULL, &m1);
	det_commit(&d);
	assert_int_equal(d.col.count[1], 1); /* only the delete of their own roster row */
	assert_non_null(strstr(d.col.payload[1], "\"table\":\"org_roles\""));
	assert_int_equal(d.col.count[2], 2);
	audience_get_stats(d.aud, &st);
	assert_int_equal(st.links, 1);
	det_fini(&d);
}

static int count_of(const char *s, const char *needle)
{
	int n = 0;
	for (const char *p = s ? strstr(s, needle) : NULL; p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Row versions created inside the transaction (issue 6): an old version that an earlier change
 * of the same transaction created is judged with the state as of the commit, like its creation,
 * so a subscriber receives both its INSERT and its DELETE, or neither; an UPDATE's old row that
 * the transaction created goes to whoever received it. Through the rank audiences (unnamed
 * members) and the individual ones (users named by user_id). */
static void test_versions_created_in_transaction(void **state)
{
	det d;
	det_init(&d, *state);
	trow m1 = mrow(1, 1, "viewer"), m2 = mrow(1, 2, "member"), m3 = mrow(1, 3, "viewer");
	trow e = erow(1, -1, "0d000000-0000-4000-8000-000000000001");
	trow e2 = erow(1, 1, "0d000000-0000-4000-8000-000000000002");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m2, NULL);
	sub(&d, 1, 1);
	sub(&d, 2, 2);
	sub(&d, 3, 3);
	/* user 1 joins; an event inserted and deleted: user 1 gets both */
	assert_int_equal(audience_begin(d.aud, &TXN), 0);
	det_change(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	det_change(&d, CHANGE_INSERT, &events_rel, &e, NULL);
	det_change(&d, CHANGE_DELETE, &events_rel, NULL, &e);
	det_commit(&d);
	assert_int_equal(d.col.count[1], 3);
	assert_int_equal(count_of(d.col.payload[1], "\"action\":\"delete\""), 1);
	assert_int_equal(d.col.count[2], 3);
	assert_int_equal(d.col.count[3], 0);
	/* user 1 removed; an event they handle inserted and deleted around it: neither */
	assert_int_equal(audience_begin(d.aud, &TXN), 0);
	det_change(&d, CHANGE_INSERT, &events_rel, &e2, NULL);
	det_change(&d, CHANGE_DELETE, &roles_rel, NULL, &m1);
	det_change(&d, CHANGE_DELETE, &events_rel, NULL, &e2);
	det_commit(&d);
	assert_int_equal(d.col.count[1], 1); /* the delete of their own roster row only */
	assert_non_null(strstr(d.col.payload[1], "\"table\":\"org_roles\""));
	assert_int_equal(d.col.count[2], 3);
	/* user 3 joins; an event inserted and updated twice: user 3 gets both old rows (the
	 * versions this transaction created and delivered to them) */
	trow e3 = erow(1, -1, "0d000000-0000-4000-8000-000000000003"), e3b = e3, e3c = e3;
	set(&e3b, E_STATUS, "answered");
	set(&e3c, E_STATUS, "called back");
	assert_int_equal(audience_begin(d.aud, &TXN), 0);
	det_change(&d, CHANGE_INSERT, &events_rel, &e3, NULL);
	det_change(&d, CHANGE_INSERT, &roles_rel, &m3, NULL);
	det_change(&d, CHANGE_UPDATE, &events_rel, &e3b, &e3);
	det_change(&d, CHANGE_UPDATE, &events_rel, &e3c, &e3b);
	det_commit(&d);
	assert_int_equal(d.col.count[3], 4);
	assert_int_equal(count_of(d.col.payload[3], "\"old\":"), 2);
	/* an old row that existed before the transaction keeps BEFORE: user 3 removed, the event
	 * updated: user 3 sees nothing of it (the new row is hidden as of the commit) */
	assert_int_equal(audience_begin(d.aud, &TXN), 0);
	det_change(&d, CHANGE_DELETE, &roles_rel, NULL, &m3);
	det_change(&d, CHANGE_UPDATE, &events_rel, &e3, &e3c);
	det_change(&d, CHANGE_DELETE, &events_rel, NULL, &e3);
	det_commit(&d);
	assert_int_equal(d.col.count[3], 1); /* their own roster row */
	assert_int_equal(d.col.count[2], 3);
	/* both deletes, and the update with the old row user 2 saw before the transaction */
	assert_int_equal(count_of(d.col.payload[2], "\"old\":"), 3);
	det_fini(&d);
}

/* Payloads kept by a sink outlive the publish and the audience. */
static void test_payload_lifetime(void **state)
{
	det d;
	det_init(&d, *state);
	trow m = mrow(1, 1, "owner");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m, NULL);
	sub(&d, 1, 1);
	d.col.keep = true;
	trow e = erow(1, -1, "0d000000-0000-4000-8000-000000000001");
	assert_int_equal(det_publish(&d, CHANGE_INSERT, &events_rel, &e, NULL), 1);
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 1);
	assert_int_equal(d.col.nkept, 2);
	assert_true(d.col.kept[0] != d.col.kept[1]); /* the first is still referenced: not reused */
	size_t len;
	const char *p = audience_payload_data(d.col.kept[0], &len);
	assert_non_null(strstr(p, "\"action\":\"insert\""));
	audience_payload_unref(d.col.kept[1]);
	/* the released payload is reused by the next publish */
	assert_int_equal(det_publish(&d, CHANGE_UPDATE, &events_rel, &e, NULL), 1);
	assert_true(d.col.kept[2] == d.col.kept[1]);
	audience_payload_unref(d.col.kept[2]);
	det_fini(&d);
	/* after the audience is gone, the kept payload is intact and freed by its last unref */
	p = audience_payload_data(d.col.kept[0], &len);
	assert_non_null(strstr(p, "\"action\":\"insert\""));
	audience_payload_unref(d.col.kept[0]);
}

/* What a wildcard subscriber (slot 0) was offered by one publish. */
typedef struct wild_seen {
	int n;
	int rank[32];
	bool individual[32], bypass[32], shared[32];
	char uid[32][37];
	char org[32][37];
	char *payload[32];
	const audience_payload *ptr[32]; /* the payload objects (identity, not to be dereferenced) */
	char *member_payload[MAX_SLOTS]; /* what other slots got (one delivery each here) */
} wild_seen;

static int wild_cb(void *arg, const audience_delivery *d)
{
	wild_seen *w = arg;
	size_t len;
	const char *data = audience_payload_data(d->payload, &len);
	bool wild = false;
	for (size_t i = 0; i < d->nsubs; i++) {
		int sl = *(const int *)d->subs[i];
		if (sl == 0) {
			wild = true;
			continue;
		}
		assert_null(w->member_payload[sl]); /* one delivery per member and change */
		w->member_payload[sl] = strndup(data, len);
	}
	if (!wild)
		return 0;
	assert_true(w->n < 32);
	int k = w->n++;
	w->rank[k] = d->rank;
	w->individual[k] = d->individual;
	w->bypass[k] = d->bypass;
	w->shared[k] = d->nsubs > 1;
	snprintf(w->uid[k], 37, "%s", d->uid ? d->uid : "");
	snprintf(w->org[k], 37, "%s", d->org ? d->org : "");
	w->payload[k] = strndup(data, len);
	w->ptr[k] = d->payload;
	if (d->individual)
		assert_non_null(d->uid);
	if (!d->bypass)
		assert_non_null(d->org);
	return 0;
}

static void wild_free(wild_seen *w)
{
	for (int i = 0; i < w->n; i++)
		free(w->payload[i]);
	for (int i = 0; i < MAX_SLOTS; i++)
		free(w->member_payload[i]);
	memset(w, 0, sizeof(*w));
}

static void wild_publish(det *d, const trow *ev, wild_seen *w)
{
	tuple nt;
	/* one LSN for every publish of the event: the payloads are compared across publishes */
	change c = {.action = CHANGE_INSERT, .lsn = 1000, .rel = &events_rel, .new_tuple = to_tuple(&nt, ev)};
	assert_true(audience_publish(d->aud, &c, wild_cb, w) >= 0);
}

/* A wildcard subscriber is offered every audience of a row — bypass, each rank of the row's org,
 * each member a uid column names — whether or not a member is subscribed, each exactly as a
 * subscribed member of that audience sees it, and shares the members' delivery when they are
 * judged alike. */
static void test_wildcard(void **state)
{
	det d;
	det_init(&d, *state);
	audience_sub *w = NULL;
	assert_int_equal(audience_subscribe_wildcard(d.aud, &slot_ids[0], &w), 0);
	/* user 1 viewer and user 3 member of org 1; user 2 is no member */
	trow m1 = mrow(1, 1, "viewer"), m3 = mrow(1, 3, "member");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m3, NULL);
	char eid[37], org1[37], u1[37];
	uuid_of(eid, K_EVENT, 1);
	uuid_of(org1, K_ORG, 1);
	uuid_of(u1, K_USER, 1);
	trow ev = erow(1, 1, eid); /* handled by user 1 */

	/* no member subscribed: bypass, ranks 5..1 (each sees the row: user_id = uid is false for
	 * them, and no privacy rule), and user 1 on their own */
	wild_seen a = {0};
	wild_publish(&d, &ev, &a);
	int ranks_seen = 0, indiv = -1, byp = 0;
	for (int i = 0; i < a.n; i++) {
		if (a.bypass[i])
			byp++;
		else if (a.individual[i]) {
			assert_string_equal(a.uid[i], u1);
			assert_int_equal(a.rank[i], 1);
			indiv = i;
		} else
			ranks_seen |= 1 << a.rank[i];
		if (!a.bypass[i])
			assert_string_equal(a.org[i], org1);
		assert_false(a.shared[i]);
	}
	assert_int_equal(byp, 1);
	assert_true(indiv >= 0);
	assert_int_equal(ranks_seen, 0x3e); /* ranks 1..5, each on its own */
	/* rank 1 (viewer) sees from_number masked, rank 2 (member) does not: distinct payloads */
	int r1 = -1, r2 = -1;
	for (int i = 0; i < a.n; i++) {
		if (!a.bypass[i] && !a.individual[i] && a.rank[i] == 1)
			r1 = i;
		if (!a.bypass[i] && !a.individual[i] && a.rank[i] == 2)
			r2 = i;
	}
	assert_true(r1 >= 0 && r2 >= 0);
	assert_string_not_equal(a.payload[r1], a.payload[r2]);

	/* members subscribed: user 3 (member, unnamed) and user 1 (named). The same audiences reach
	 * the wildcard, the rank-2 one in user 3's delivery; members see what the wildcard saw. */
	audience_sub *s3 = sub(&d, 3, 3), *s1 = sub(&d, 1, 1);
	wild_seen b = {0};
	wild_publish(&d, &ev, &b);
	assert_int_equal(b.n, a.n);
	for (int i = 0; i < b.n; i++) {
		bool found = false;
		for (int j = 0; j < a.n && !found; j++)
			found = a.rank[j] == b.rank[i] && a.individual[j] == b.individual[i] &&
			        a.bypass[j] == b.bypass[i] && strcmp(a.payload[j], b.payload[i]) == 0;
		assert_true(found);
		if (!b.bypass[i] && !b.individual[i] && b.rank[i] == 2)
			assert_true(b.shared[i]); /* one judgement for user 3 and the wildcard */
	}
	assert_non_null(b.member_payload[3]);
	assert_string_equal(b.member_payload[3], a.payload[r2]);
	assert_non_null(b.member_payload[1]);
	assert_string_equal(b.member_payload[1], a.payload[indiv]);

	/* a row of an org nobody subscribed is a member of still reaches the wildcard */
	char eid2[37];
	uuid_of(eid2, K_EVENT, 2);
	trow ev2 = erow(2, -1, eid2);
	wild_seen c = {0};
	wild_publish(&d, &ev2, &c);
	assert_true(c.n >= 2); /* bypass and at least one rank */

	audience_unsubscribe(d.aud, w);
	wild_seen e = {0};
	wild_publish(&d, &ev2, &e);
	assert_int_equal(e.n, 0);
	wild_free(&a);
	wild_free(&b);
	wild_free(&c);
	wild_free(&e);
	audience_unsubscribe(d.aud, s3);
	audience_unsubscribe(d.aud, s1);
	det_fini(&d);
}

/* Audiences of one change whose views carry the same values share one payload, serialized
 * once; audiences that see the row differently never share. */
/* left_view (audience_sub_set_left_view): an UPDATE that hides a row from a user who saw its
 * old version reaches that user's opted-in subscribers as a DELETE of the old row, flagged, and
 * nobody else (other subscribers of the same user, other users, wildcards) gets anything new. */
typedef struct left_seen {
	int flagged[MAX_SLOTS];
	char *last[MAX_SLOTS];
} left_seen;

static int left_cb(void *arg, const audience_delivery *d)
{
	left_seen *w = arg;
	size_t len;
	const char *data = audience_payload_data(d->payload, &len);
	for (size_t i = 0; i < d->nsubs; i++) {
		int sl = *(const int *)d->subs[i];
		if (d->left_view) {
			w->flagged[sl]++;
			assert_int_equal(d->view->action, CHANGE_DELETE);
		}
		free(w->last[sl]);
		w->last[sl] = strndup(data, len);
	}
	return 0;
}

static void left_reset(left_seen *w)
{
	for (int i = 0; i < MAX_SLOTS; i++) {
		free(w->last[i]);
		w->last[i] = NULL;
		w->flagged[i] = 0;
	}
}

static void left_publish(det *d, const trow *n, const trow *o, left_seen *w)
{
	tuple nt, ot;
	change c = {.action = CHANGE_UPDATE, .lsn = ++d->lsn, .rel = &events_rel, .new_tuple = to_tuple(&nt, n),
	            .old_tuple = to_tuple(&ot, o)};
	left_reset(w);
	assert_true(audience_publish(d->aud, &c, left_cb, w) >= 0);
}

static void test_left_view(void **state)
{
	det d;
	det_init(&d, *state);
	left_seen w = {0};
	trow m1 = mrow(1, 1, "viewer"), m2 = mrow(1, 2, "viewer"), m3 = mrow(1, 3, "viewer"), m12 = mrow(2, 1, "viewer");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m2, NULL);
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m3, NULL);
	/* contact 1 is private to admins of org 1 */
	trow r = {.ncols = 5};
	char b[37];
	uuid_of(b, K_RULE, 1);
	set(&r, 0, b);
	uuid_of(b, K_ORG, 1);
	set(&r, 1, b);
	uuid_of(b, K_CONTACT, 1);
	set(&r, 2, b);
	set(&r, 3, "admin");
	set(&r, 4, "2026-11-22 09:00:00+00");
	det_publish(&d, CHANGE_INSERT, &rules_rel, &r, NULL);
	audience_sub *s1 = sub(&d, 1, 1);
	sub(&d, 2, 1); /* user 1 again, not opted in */
	audience_sub *s3 = sub(&d, 3, 2);
	sub(&d, 4, 3);
	audience_sub_set_left_view(s1, true);
	audience_sub_set_left_view(s3, true);
	audience_sub *wild = NULL;
	assert_int_equal(audience_subscribe_wildcard(d.aud, &slot_ids[5], &wild), 0);

	/* an event of the private contact handled by user 1, reassigned to user 2: user 1 saw it
	 * (handler) and may no longer; user 2 now sees it; user 3 never did */
	trow e1 = erow(1, 1, "0d000000-0000-4000-8000-000000000001");
	uuid_of(b, K_CONTACT, 1);
	set(&e1, E_CONTACT, b);
	trow e2 = e1;
	uuid_of(b, K_USER, 2);
	set(&e2, E_USER, b);
	left_publish(&d, &e2, &e1, &w);
	assert_int_equal(w.flagged[1], 1);
	assert_non_null(w.last[1]);
	assert_non_null(strstr(w.last[1], "\"action\":\"delete\""));
	assert_non_null(strstr(w.last[1], "0d000000-0000-4000-8000-000000000001"));
	assert_null(w.last[2]); /* not opted in: nothing, as before */
	assert_null(w.last[4]);
	assert_int_equal(w.flagged[3], 0); /* user 2 gets the update itself */
	assert_non_null(w.last[3]);
	assert_non_null(strstr(w.last[3], "\"action\":\"update\""));
	assert_int_equal(w.flagged[5], 0);

	/* an update that changes nothing of the view: no left_view delivery */
	left_publish(&d, &e2, &e2, &w);
	for (int i = 0; i < MAX_SLOTS; i++)
		assert_int_equal(w.flagged[i], 0);

	/* opted out again: nothing */
	audience_sub_set_left_view(s1, false);
	left_publish(&d, &e2, &e1, &w);
	assert_null(w.last[1]);
	audience_sub_set_left_view(s1, true);

	/* moved to org 2, where user 1 is a member and user 2 is not: user 2 (handler, saw it in
	 * org 1) gets the DELETE; user 1 saw neither version (the contact is private to admins):
	 * nothing */
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m12, NULL);
	trow e3 = e2;
	uuid_of(b, K_ORG, 2);
	set(&e3, E_ORG, b);
	left_publish(&d, &e3, &e2, &w);
	assert_int_equal(w.flagged[3], 1);
	assert_non_null(strstr(w.last[3], "\"action\":\"delete\""));
	assert_int_equal(w.flagged[1], 0);
	assert_null(w.last[1]);

	/* unsubscribing an opted-in subscriber keeps the counts right (no delivery to it) */
	audience_unsubscribe(d.aud, s3);
	left_publish(&d, &e3, &e2, &w);
	assert_int_equal(w.flagged[3], 0);
	left_reset(&w);
	det_fini(&d);
}

static void test_shared_payloads(void **state)
{
	det d;
	det_init(&d, *state);
	audience_sub *w = NULL;
	assert_int_equal(audience_subscribe_wildcard(d.aud, &slot_ids[0], &w), 0);
	trow m1 = mrow(1, 1, "viewer");
	det_publish(&d, CHANGE_INSERT, &roles_rel, &m1, NULL);
	char eid[37];
	uuid_of(eid, K_EVENT, 1);
	trow ev = erow(1, 1, eid); /* no body: ranks member..owner and the bypass see it alike */
	audience_stats st0, st1;
	audience_get_stats(d.aud, &st0);
	wild_seen a = {0};
	wild_publish(&d, &ev, &a);
	audience_get_stats(d.aud, &st1);
	int distinct = 0, byp = -1, r2 = -1, r1 = -1;
	for (int i = 0; i < a.n; i++) {
		bool first = true;
		for (int j = 0; j < i; j++) {
			bool same_bytes = strcmp(a.payload[i], a.payload[j]) == 0;
			assert_int_equal(same_bytes, a.ptr[i] == a.ptr[j]);
			first = first && !same_bytes;
		}
		distinct += first;
		if (a.bypass[i])
			byp = i;
		else if (!a.individual[i] && a.rank[i] == 2)
			r2 = i;
		else if (!a.individual[i] && a.rank[i] == 1)
			r1 = i;
	}
	assert_true(byp >= 0 && r2 >= 0 && r1 >= 0);
	assert_int_equal(a.n, 7); /* bypass, ranks 5..1, user 1 */
	assert_ptr_equal(a.ptr[byp], a.ptr[r2]);     /* nothing masked for either */
	assert_ptr_not_equal(a.ptr[r1], a.ptr[r2]);  /* the viewer's numbers are masked */
	assert_int_equal(st1.serialized - st0.serialized, (uint64_t)distinct);
	assert_true(distinct < a.n);
	assert_int_equal(st1.audiences - st0.audiences, (uint64_t)a.n);
	wild_free(&a);
	audience_unsubscribe(d.aud, w);
	det_fini(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_index_maintenance, setup, teardown),
		cmocka_unit_test_setup_teardown(test_payload_lifetime, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wildcard, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_payloads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_left_view, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_versions_created_in_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_randomized_equivalence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_randomized_transactions, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

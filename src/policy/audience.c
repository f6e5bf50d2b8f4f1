/*
 * audience — subscribers grouped into audiences (see audience.h).
 *
 * Design. Subscribed users are kept in a hash map (uuid -> auser), each with its list of
 * subscriber handles. Two indexes, one per policy state of the privacy stage (PRIVACY_BEFORE,
 * PRIVACY_AFTER), each follow their state's change callback: per subscribed user a list of
 * links, one per org the user is a member of (rank >= 1), and orgs with at least one subscribed
 * member in a map (uuid -> aorg), each with one list of links per rank. A new row version of
 * org O looks O up once in the AFTER index, an old one (a DELETE) in the index of
 * privacy_old_state (BEFORE, or AFTER for a version the transaction created), then
 * walks the rank lists: the work is proportional to O's subscribers, never to the others.
 * Between transactions both indexes are equal. Links are created at subscribe time
 * (policy_state_user_orgs) and moved by the change callbacks; if a callback cannot allocate,
 * its index is marked stale and rebuilt from its state before the next change is judged.
 *
 * Per change, the uid columns of the row (and of the old row of an UPDATE) name at most a few
 * subscribed users: they are stamped with the change's serial number, judged on their own, and
 * skipped by their rank's audience. Payloads come from a pool (a free list) and are returned to
 * it by the last unref, so a steady stream allocates nothing. Payloads are serialized through
 * a change_json_cache: the escaped table and column names are formatted once per relation
 * and the transaction's header once per transaction, not once per audience.
 */
#include "audience.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "buf.h"
#include "policy.h"
#include "policy_state.h"
#include "hash.h"
#include "uuid.h"

/* ---- payloads --------------------------------------------------------------------------- */

typedef struct payload_pool {
	size_t refs; /* 1 while the audience lives, + 1 per payload allocated */
	bool dead;   /* the audience is gone: the last unref frees */
	audience_payload *free;
} payload_pool;

struct audience_payload {
	payload_pool *pool;
	uint32_t refs;
	buf b;
	audience_payload *next_free;
};

static void pool_release(payload_pool *pool)
{
	if (--pool->refs == 0)
		free(pool);
}

static void payload_free(audience_payload *p)
{
	payload_pool *pool = p->pool;
	buf_fini(&p->b);
	free(p);
	pool_release(pool);
}

const char *audience_payload_data(const audience_payload *p, size_t *len)
{
	*len = p->b.len;
	return p->b.data ? p->b.data : "";
}

audience_payload *audience_payload_ref(audience_payload *p)
{
	p->refs++;
	return p;
}

void audience_payload_unref(audience_payload *p)
{
	if (p == NULL || --p->refs > 0)
		return;
	payload_pool *pool = p->pool;
	if (pool->dead) {
		payload_free(p);
		return;
	}
	buf_clear(&p->b);
	p->next_free = pool->free;
	pool->free = p;
}

/* A payload with one reference, empty. NULL when out of memory. */
static audience_payload *payload_get(payload_pool *pool)
{
	audience_payload *p = pool->free;
	if (p != NULL) {
		pool->free = p->next_free;
	} else {
		p = calloc(1, sizeof(*p));
		if (p == NULL)
			return NULL;
		p->pool = pool;
		buf_init(&p->b);
		pool->refs++;
	}
	p->refs = 1;
	p->next_free = NULL;
	return p;
}

/* ---- the index -------------------------------------------------------------------------- */

typedef struct auser auser;
typedef struct aorg aorg;

typedef struct alink {
	auser *user;
	aorg *org;
	int rank;
	struct alink *prev, *next;   /* the org's list for rank */
	struct alink *uprev, *unext; /* the user's list of links */
} alink;

struct auser {
	policy_state_uuid key; /* first: the map compares it */
	char uid[POLICY_STATE_UUID_TEXT];
	audience_sub *subs;
	size_t nsubs;
	alink *links[2]; /* per index: the user's links */
	uint64_t named;  /* serial of the change whose uid columns name this user */
	size_t nleft;    /* subscribers that opted into left_view deliveries */
	int old_rank;    /* scratch: rank in the old row's org (row moved to another org) */
};

struct aorg {
	policy_state_uuid key;
	alink **heads;  /* [nranks + 1] */
	size_t nlinks;
};

struct audience_sub {
	void *opaque;
	auser *user; /* NULL: bypass or no uid */
	bool bypass;
	bool wildcard;
	bool left_view; /* audience_sub_set_left_view */
	audience_sub *prev, *next;
};

/* A map from a 16-byte key (at offset 0 of each value) to the value (hash.h's hash_ptrs). */
typedef hash_ptrs pmap;

/* The org index of one policy state. */
typedef struct aindex {
	audience *a;
	int w;               /* PRIVACY_BEFORE or PRIVACY_AFTER */
	policy_state *state; /* the state it follows */
	pmap orgs;
	size_t nlinks;
	bool stale; /* a membership change was not followed (out of memory): rebuild first */
	bool cb_added;
} aindex;

/* Distinct payloads of one change remembered for reuse (the bypass audience, one per rank, a
 * few named users: 8 covers deploy/policy.ini's events; past it, payloads are serialized). */
#define AUDIENCE_SEEN_MAX 8

struct audience {
	privacy *pv;
	unsigned json_flags;
	int nranks;
	uint64_t seed;
	pmap users;
	aindex ix[2];
	audience_sub *bypass_subs, *idle_subs; /* idle: no uid and no bypass: they see nothing */
	audience_sub *wild_subs;               /* offered every audience of every row */
	size_t nbypass, nwild, nsubs;
	payload_pool *pool;
	change_json_cache *jc; /* escaped names per relation, the header per transaction */
	/* the payloads serialized for the change being published, with their views (valid until
	 * the change is done: its views live in the privacy arena until then) */
	change seen_view[AUDIENCE_SEEN_MAX];
	audience_payload *seen[AUDIENCE_SEEN_MAX];
	size_t nseen;
	/* per change */
	uint64_t serial;
	void **out;     /* subscribers of the audience being delivered; capacity >= nsubs */
	size_t out_cap;
	auser **named;  /* users named by the row's uid columns */
	size_t nnamed, named_cap;
	audience_deliver_cb cb;
	void *cb_arg;
	int delivered;
	bool left;      /* the delivery being made is a left_view one */
	const change *source; /* the change being published, as the stream carried it */
	audience_stats st;
	char err[AUDIENCE_ERROR_MAX];
};

static inline uint32_t key_hash(const audience *a, const void *k)
{
	return (uint32_t)hash_words(a->seed, k, sizeof(policy_state_uuid));
}

static void *pmap_find(const audience *a, const pmap *m, const policy_state_uuid *k)
{
	uint32_t h = key_hash(a, k);
	hash_probe p = hash_index_probe(&m->ix, h);
	for (uint32_t id; hash_probe_next(&m->ix, &p, &id);)
		if (memcmp(m->items[id], k, sizeof(*k)) == 0)
			return m->items[id];
	return NULL;
}

static void pmap_insert(const audience *a, pmap *m, void *v)
{
	(void)hash_ptrs_add(m, key_hash(a, v), v);
}

static void pmap_remove(const audience *a, pmap *m, const void *v)
{
	uint32_t h = key_hash(a, v);
	hash_probe p = hash_index_probe(&m->ix, h);
	uint32_t id;
	bool found = false;
	while (!found && hash_probe_next(&m->ix, &p, &id))
		found = m->items[id] == v;
	if (found)
		(void)hash_ptrs_remove(m, h, id, key_hash(a, m->items[m->n - 1]));
}

static void org_free(aorg *o)
{
	if (o != NULL)
		free(o->heads);
	free(o);
}

/* Removes link l from its org's and user's lists of index ix and frees it; drops the org when
 * empty. */
static void link_remove(aindex *ix, alink *l)
{
	aorg *o = l->org;
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		o->heads[l->rank] = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	if (l->uprev != NULL)
		l->uprev->unext = l->unext;
	else
		l->user->links[ix->w] = l->unext;
	if (l->unext != NULL)
		l->unext->uprev = l->uprev;
	free(l);
	ix->nlinks--;
	if (--o->nlinks == 0) {
		pmap_remove(ix->a, &ix->orgs, o);
		org_free(o);
	}
}

static void link_push(aorg *o, alink *l)
{
	l->prev = NULL;
	l->next = o->heads[l->rank];
	if (l->next != NULL)
		l->next->prev = l;
	o->heads[l->rank] = l;
}

/* Indexes user u under org with rank (>= 1) in ix. 0 or -ENOMEM (nothing changed). */
static int link_add(aindex *ix, auser *u, const policy_state_uuid *org, int rank)
{
	audience *a = ix->a;
	aorg *o = pmap_find(a, &ix->orgs, org);
	bool new_org = o == NULL;
	alink *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	if (new_org) {
		o = calloc(1, sizeof(*o));
		if (o != NULL)
			o->heads = calloc((size_t)a->nranks + 1, sizeof(alink *));
		if (o == NULL || o->heads == NULL || hash_ptrs_reserve(&ix->orgs) < 0) {
			org_free(o);
			free(l);
			return -ENOMEM;
		}
		o->key = *org;
		pmap_insert(a, &ix->orgs, o);
	}
	*l = (alink){.user = u, .org = o, .rank = rank};
	link_push(o, l);
	l->unext = u->links[ix->w];
	if (u->links[ix->w] != NULL)
		u->links[ix->w]->uprev = l;
	u->links[ix->w] = l;
	o->nlinks++;
	ix->nlinks++;
	return 0;
}

static void user_unindex(aindex *ix, auser *u)
{
	while (u->links[ix->w] != NULL)
		link_remove(ix, u->links[ix->w]);
}

typedef struct index_ctx {
	aindex *ix;
	auser *u;
	int rc;
} index_ctx;

static int index_org_cb(void *arg, const policy_state_uuid *org, int rank)
{
	index_ctx *x = arg;
	x->rc = link_add(x->ix, x->u, org, rank);
	return x->rc;
}

/* Links u under every org ix's state says it is a member of. 0 or -ENOMEM (u unindexed). */
static int user_index(aindex *ix, auser *u)
{
	index_ctx x = {ix, u, 0};
	(void)policy_state_user_orgs(ix->state, &u->key, index_org_cb, &x);
	if (x.rc < 0)
		user_unindex(ix, u);
	return x.rc;
}

/* A state's change callback: follow one member's rank in one org in that state's index. */
static void member_change_cb(void *arg, const policy_state_uuid *org, const policy_state_uuid *user,
                             int old_rank, int new_rank)
{
	aindex *ix = arg;
	audience *a = ix->a;
	auser *u = pmap_find(a, &a->users, user);
	if (u == NULL || ix->stale)
		return; /* not subscribed (or the whole index will be rebuilt anyway) */
	alink *l = u->links[ix->w];
	while (l != NULL && memcmp(&l->org->key, org, sizeof(*org)) != 0)
		l = l->unext;
	if (new_rank < 1) {
		if (l != NULL)
			link_remove(ix, l);
		return;
	}
	if (l == NULL) {
		if (link_add(ix, u, org, new_rank) < 0)
			ix->stale = true;
		return;
	}
	if (l->rank == new_rank)
		return;
	aorg *o = l->org;
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		o->heads[l->rank] = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	l->rank = new_rank;
	link_push(o, l);
	(void)old_rank;
}

static int index_rebuild(aindex *ix)
{
	audience *a = ix->a;
	for (size_t i = 0; i < a->users.n; i++)
		user_unindex(ix, a->users.items[i]);
	for (size_t i = 0; i < a->users.n; i++) {
		int rc = user_index(ix, a->users.items[i]);
		if (rc < 0) {
			snprintf(a->err, sizeof(a->err), "rebuilding the audience index: out of memory");
			ix->stale = true;
			return rc;
		}
	}
	ix->stale = false;
	return 0;
}

int audience_rebuild(audience *a)
{
	int rc = index_rebuild(&a->ix[PRIVACY_BEFORE]);
	return rc < 0 ? rc : index_rebuild(&a->ix[PRIVACY_AFTER]);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int audience_create(privacy *pv, unsigned json_flags, audience **out)
{
	audience *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->pv = pv;
	a->json_flags = json_flags;
	a->nranks = policy_state_nranks(privacy_state(pv));
	if (getrandom(&a->seed, sizeof(a->seed), GRND_NONBLOCK) != (ssize_t)sizeof(a->seed))
		a->seed = (uint64_t)(uintptr_t)a * 0x9E3779B97F4A7C15ULL;
	a->pool = calloc(1, sizeof(*a->pool));
	a->jc = change_json_cache_create();
	if (a->pool == NULL || a->jc == NULL || hash_ptrs_init(&a->users) < 0)
		goto nomem;
	a->pool->refs = 1;
	for (int w = 0; w < 2; w++) {
		aindex *ix = &a->ix[w];
		*ix = (aindex){.a = a, .w = w, .state = privacy_state_at(pv, (privacy_when)w)};
		if (hash_ptrs_init(&ix->orgs) < 0)
			goto nomem;
		int rc = policy_state_add_change_cb(ix->state, member_change_cb, ix);
		if (rc < 0) {
			audience_destroy(a);
			return rc;
		}
		ix->cb_added = true;
	}
	*out = a;
	return 0;
nomem:
	audience_destroy(a);
	return -ENOMEM;
}

static void subs_free(audience_sub *s)
{
	while (s != NULL) {
		audience_sub *next = s->next;
		free(s);
		s = next;
	}
}

void audience_destroy(audience *a)
{
	if (a == NULL)
		return;
	for (int w = 0; w < 2; w++)
		if (a->ix[w].cb_added)
			policy_state_remove_change_cb(a->ix[w].state, member_change_cb, &a->ix[w]);
	for (size_t i = 0; i < a->users.n; i++) {
		auser *u = a->users.items[i];
		for (int w = 0; w < 2; w++)
			user_unindex(&a->ix[w], u);
		subs_free(u->subs);
		free(u);
	}
	subs_free(a->bypass_subs);
	subs_free(a->idle_subs);
	subs_free(a->wild_subs);
	hash_ptrs_fini(&a->users);
	hash_ptrs_fini(&a->ix[0].orgs);
	hash_ptrs_fini(&a->ix[1].orgs);
	change_json_cache_destroy(a->jc);
	if (a->pool != NULL) {
		payload_pool *pool = a->pool;
		audience_payload *p = pool->free;
		pool->free = NULL;
		pool->dead = true;
		while (p != NULL) {
			audience_payload *next = p->next_free;
			payload_free(p);
			p = next;
		}
		pool_release(pool);
	}
	free(a->out);
	free(a->named);
	free(a);
}

const char *audience_error(const audience *a)
{
	return a->err;
}

void audience_get_stats(const audience *a, audience_stats *out)
{
	*out = a->st;
	out->subscribers = a->nsubs;
	out->users = a->users.n;
	out->bypass = a->nbypass;
	out->orgs = a->ix[PRIVACY_AFTER].orgs.n;
	out->links = a->ix[PRIVACY_AFTER].nlinks;
}

/* ---- subscribers ---------------------------------------------------------------------------- */

static void sub_push(audience_sub **head, audience_sub *s)
{
	s->prev = NULL;
	s->next = *head;
	if (s->next != NULL)
		s->next->prev = s;
	*head = s;
}

static void sub_unlink(audience_sub **head, audience_sub *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		*head = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
}

int audience_subscribe(audience *a, void *opaque, const char *uid, bool bypass, audience_sub **out)
{
	policy_state_uuid key;
	auser *u = NULL;
	bool new_user = false;
	int rc = 0;
	if (!bypass && uid != NULL && uuid_parse(uid, strlen(uid), key.b) < 0) {
		snprintf(a->err, sizeof(a->err), "subscriber: user id is not a uuid");
		return -EINVAL;
	}
	audience_sub *s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto nomem;
	if (a->out_cap < a->nsubs + 1) {
		size_t cap = a->out_cap ? a->out_cap * 2 : 16;
		void **v = realloc(a->out, cap * sizeof(void *));
		if (v == NULL)
			goto nomem;
		a->out = v;
		a->out_cap = cap;
	}
	*s = (audience_sub){.opaque = opaque, .bypass = bypass};
	if (bypass) {
		sub_push(&a->bypass_subs, s);
		a->nbypass++;
	} else if (uid == NULL) {
		sub_push(&a->idle_subs, s);
	} else {
		u = pmap_find(a, &a->users, &key);
		if (u == NULL) {
			if (hash_ptrs_reserve(&a->users) < 0)
				goto nomem;
			u = calloc(1, sizeof(*u));
			if (u == NULL)
				goto nomem;
			new_user = true;
			u->key = key;
			uuid_format(key.b, u->uid);
			if ((rc = user_index(&a->ix[PRIVACY_BEFORE], u)) < 0)
				goto nomem;
			if ((rc = user_index(&a->ix[PRIVACY_AFTER], u)) < 0) {
				user_unindex(&a->ix[PRIVACY_BEFORE], u);
				goto nomem;
			}
			pmap_insert(a, &a->users, u);
		}
		s->user = u;
		sub_push(&u->subs, s);
		u->nsubs++;
	}
	a->nsubs++;
	*out = s;
	return 0;
nomem:
	if (new_user)
		free(u);
	free(s);
	snprintf(a->err, sizeof(a->err), "subscriber: out of memory");
	return -ENOMEM;
}

int audience_subscribe_wildcard(audience *a, void *opaque, audience_sub **out)
{
	audience_sub *s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto nomem;
	if (a->out_cap < a->nsubs + 1) {
		size_t cap = a->out_cap ? a->out_cap * 2 : 16;
		void **v = realloc(a->out, cap * sizeof(void *));
		if (v == NULL)
			goto nomem;
		a->out = v;
		a->out_cap = cap;
	}
	*s = (audience_sub){.opaque = opaque, .wildcard = true};
	sub_push(&a->wild_subs, s);
	a->nwild++;
	a->nsubs++;
	*out = s;
	return 0;
nomem:
	free(s);
	snprintf(a->err, sizeof(a->err), "subscriber: out of memory");
	return -ENOMEM;
}

void audience_unsubscribe(audience *a, audience_sub *s)
{
	if (s == NULL)
		return;
	if (s->wildcard) {
		sub_unlink(&a->wild_subs, s);
		a->nwild--;
	} else if (s->bypass) {
		sub_unlink(&a->bypass_subs, s);
		a->nbypass--;
	} else if (s->user == NULL) {
		sub_unlink(&a->idle_subs, s);
	} else {
		auser *u = s->user;
		sub_unlink(&u->subs, s);
		if (s->left_view)
			u->nleft--;
		if (--u->nsubs == 0) {
			user_unindex(&a->ix[PRIVACY_BEFORE], u);
			user_unindex(&a->ix[PRIVACY_AFTER], u);
			pmap_remove(a, &a->users, u);
			free(u);
		}
	}
	a->nsubs--;
	free(s);
}

void audience_sub_set_left_view(audience_sub *s, bool on)
{
	if (s == NULL || s->user == NULL || s->left_view == on)
		return;
	s->left_view = on;
	if (on)
		s->user->nleft++;
	else
		s->user->nleft--;
}

/* ---- publishing ----------------------------------------------------------------------------- */

/* Do two views of one change carry the same values? (Then they serialize the same.) */
static bool tuple_same(const change_value *x, const change_value *y, int ncols)
{
	if (x == y)
		return true;
	if (x == NULL || y == NULL)
		return false;
	for (int i = 0; i < ncols; i++) {
		if (x[i].kind != y[i].kind)
			return false;
		if (x[i].kind == VALUE_TEXT &&
		    (x[i].len != y[i].len || (x[i].data != y[i].data && memcmp(x[i].data, y[i].data, x[i].len) != 0)))
			return false;
	}
	return true;
}

static bool errors_same(const char *const *x, const char *const *y, int ncols)
{
	if (x == y)
		return true;
	if (x == NULL || y == NULL)
		return false;
	for (int i = 0; i < ncols; i++)
		if (x[i] != y[i] && (x[i] == NULL || y[i] == NULL || strcmp(x[i], y[i]) != 0))
			return false;
	return true;
}

/* Two views of the same change (privacy_view copies everything but the tuples and the errors
 * from it) that change_json_write renders byte for byte the same. */
static bool view_same(const change *x, const change *y)
{
	if (x->action != y->action || x->rel != y->rel || x->lsn != y->lsn || x->txn != y->txn)
		return false;
	int ncols = x->rel != NULL ? x->rel->ncols : 0;
	return tuple_same(x->new_tuple, y->new_tuple, ncols) && tuple_same(x->old_tuple, y->old_tuple, ncols) &&
	       errors_same(x->row_errors, y->row_errors, ncols);
}

/* Drops the payloads remembered for the change just published. */
static void seen_release(audience *a)
{
	for (size_t i = 0; i < a->nseen; i++)
		audience_payload_unref(a->seen[i]);
	a->nseen = 0;
}

/* The payload of view: one serialized earlier for the same change when its view carries the
 * same values (ranks that see a row alike share it), else a new one. One reference for the
 * caller. NULL when out of memory. */
static audience_payload *payload_for(audience *a, const change *view, int *rc)
{
	*rc = 0;
	for (size_t i = 0; i < a->nseen; i++)
		if (view_same(&a->seen_view[i], view))
			return audience_payload_ref(a->seen[i]);
	audience_payload *p = payload_get(a->pool);
	if (p == NULL) {
		*rc = -ENOMEM;
		return NULL;
	}
	if ((*rc = change_json_write_cached(a->jc, &p->b, view, a->json_flags)) < 0) {
		audience_payload_unref(p);
		return NULL;
	}
	a->st.serialized++;
	if (a->nseen < AUDIENCE_SEEN_MAX) {
		a->seen_view[a->nseen] = *view;
		a->seen[a->nseen++] = audience_payload_ref(p);
	}
	return p;
}

/* Hands view's payload (serialized once per distinct view of the change) to the callback with
 * the n subscribers gathered in a->out. */
static int deliver(audience *a, const change *view, size_t n, int rank, bool bypass, bool individual,
                   const char *org, const char *uid)
{
	if (n == 0)
		return 0;
	int rc;
	audience_payload *p = payload_for(a, view, &rc);
	if (p == NULL)
		return rc;
	audience_delivery d = {
		.view = view, .source = a->source, .payload = p, .subs = a->out, .nsubs = n,
		.rank = rank, .bypass = bypass, .individual = individual, .org = bypass ? NULL : org,
		.role = bypass ? NULL : policy_state_rank_name(privacy_state(a->pv), rank),
		.uid = individual ? uid : NULL,
		.left_view = a->left,
	};
	rc = a->cb(a->cb_arg, &d);
	audience_payload_unref(p);
	if (rc < 0)
		return rc;
	a->delivered++;
	a->st.audiences++;
	a->st.deliveries += n;
	return 0;
}

/* Judges c for one audience. 1 visible (*view set), 0 hidden or skipped, or a fatal error. */
static int evaluate(audience *a, const change *c, const policy_bound *b, const policy_viewer *vnew,
                    const policy_viewer *vold, change *view)
{
	a->st.evaluations++;
	a->st.last_evaluations++;
	int rc = privacy_view(a->pv, c, b, vnew, vold, view);
	if (rc >= 0)
		return rc;
	if (rc == -ENOMEM)
		return rc;
	a->st.failed++;
	snprintf(a->err, sizeof(a->err), "%s", privacy_error(a->pv));
	return 0; /* this audience only: the others are served */
}

static size_t gather_wild(audience *a, size_t n)
{
	for (const audience_sub *s = a->wild_subs; s != NULL; s = s->next)
		a->out[n++] = s->opaque;
	return n;
}

static size_t gather_subs(audience *a, size_t n, const auser *u)
{
	for (const audience_sub *s = u->subs; s != NULL; s = s->next)
		a->out[n++] = s->opaque;
	return n;
}

/* u's subscribers that opted into left_view deliveries. */
static size_t gather_left(audience *a, size_t n, const auser *u)
{
	for (const audience_sub *s = u->subs; s != NULL && u->nleft > 0; s = s->next)
		if (s->left_view)
			a->out[n++] = s->opaque;
	return n;
}

/* Marks the subscribed user named by the uuid text of v (if any) for this change. */
static int name_user(audience *a, const change_value *v)
{
	policy_state_uuid k;
	if (v->kind != VALUE_TEXT || uuid_parse(v->data, v->len, k.b) < 0)
		return 0;
	auser *u = pmap_find(a, &a->users, &k);
	if (u == NULL || u->named == a->serial)
		return 0;
	if (a->nnamed == a->named_cap) {
		size_t cap = a->named_cap ? a->named_cap * 2 : 8;
		auser **v2 = realloc(a->named, cap * sizeof(*v2));
		if (v2 == NULL)
			return -ENOMEM;
		a->named = v2;
		a->named_cap = cap;
	}
	u->named = a->serial;
	a->named[a->nnamed++] = u;
	return 0;
}

typedef struct row_ctx {
	const change *c;
	const policy_bound *b;
	const change_value *row;
	const change_value *old;     /* the UPDATE's old tuple, or NULL */
	const change_value *old_org; /* its org value */
	bool split;                  /* old ranks may differ from the new ones: the old row is in
	                              * another org (or none readable), or the transaction changed
	                              * the policy state */
	int w;                       /* the row's state: PRIVACY_AFTER, or wold (DELETE) */
	int wold;                    /* the old row's state: privacy_old_state */
	const change_value *org;     /* the row's org value */
	char old_text[POLICY_STATE_UUID_TEXT]; /* the old row's org in canonical text ("" none) */
	char org_text[POLICY_STATE_UUID_TEXT]; /* ... in canonical text */
} row_ctx;

/* The member's rank in the old row's org in the old row's state (split rows only). */
static int old_rank_of(audience *a, const row_ctx *x, const auser *u)
{
	if (x->old_org->kind != VALUE_TEXT)
		return 0;
	return policy_state_rank(privacy_state_at(a->pv, (privacy_when)x->wold), x->old_org->data, x->old_org->len, u->uid,
	                         POLICY_STATE_UUID_TEXT - 1);
}

/* An UPDATE whose new row the n subscribers gathered in a->out (left_view ones) may not see:
 * when vo (their viewer of the old row) saw the old row, the old row as a DELETE, delivered
 * with left_view set. 0 or a fatal error. */
static int left_deliver(audience *a, const row_ctx *x, const policy_viewer *vo, size_t n, int rank,
                        bool individual, const char *uid)
{
	if (n == 0 || x->old == NULL)
		return 0;
	change del = *x->c;
	del.action = CHANGE_DELETE;
	del.new_tuple = NULL;
	del.old_tuple = (change_value *)x->old;
	del.row_errors = NULL;
	change view;
	int rc = evaluate(a, &del, x->b, vo, NULL, &view);
	if (rc <= 0)
		return rc;
	a->left = true;
	rc = deliver(a, &view, n, rank, false, individual, x->old_text, uid);
	a->left = false;
	return rc;
}

/* The audiences of a row of org o (in the index of x->w): per rank (and old rank when split),
 * the unnamed members, judged once through a representative; then each named member on their
 * own. */
static int org_audiences(audience *a, const row_ctx *x, aorg *o)
{
	bool present[POLICY_RANKS_MAX + 1];
	for (int r = a->nranks; r >= 1; r--) {
		alink *head = o->heads[r];
		if (head == NULL)
			continue;
		int nsets = 1;
		if (x->split) {
			memset(present, 0, sizeof(present));
			nsets = 0;
			for (alink *l = head; l != NULL; l = l->next) {
				if (l->user->named == a->serial)
					continue;
				l->user->old_rank = old_rank_of(a, x, l->user);
				if (!present[l->user->old_rank])
					nsets++;
				present[l->user->old_rank] = true;
			}
		}
		for (int ro = 0; nsets > 0 && ro <= a->nranks; ro++) {
			if (x->split && !present[ro])
				continue;
			nsets--;
			/* the representative: the first unnamed member of this set */
			alink *rep = head;
			while (rep != NULL && (rep->user->named == a->serial || (x->split && rep->user->old_rank != ro)))
				rep = rep->next;
			if (rep == NULL)
				break;
			policy_viewer vn, vo;
			privacy_viewer_init(a->pv, &vn, (privacy_when)x->w, r, rep->user->uid, POLICY_STATE_UUID_TEXT - 1,
			                    false);
			privacy_viewer_init(a->pv, &vo, (privacy_when)x->wold, x->split ? ro : r, rep->user->uid,
			                    POLICY_STATE_UUID_TEXT - 1, false);
			change view;
			int rc = evaluate(a, x->c, x->b, &vn, x->old ? &vo : NULL, &view);
			if (rc == 0 && x->old != NULL) {
				/* hidden now: the left_view subscribers who saw the old row get its DELETE */
				size_t n = 0;
				for (alink *l = rep; l != NULL; l = l->next)
					if (l->user->named != a->serial && (!x->split || l->user->old_rank == ro))
						n = gather_left(a, n, l->user);
				rc = left_deliver(a, x, &vo, n, x->split ? ro : r, false, NULL);
				if (rc < 0)
					return rc;
				rc = 0;
			}
			if (rc <= 0) {
				if (rc < 0)
					return rc;
				if (!x->split)
					break;
				continue;
			}
			size_t n = 0;
			for (alink *l = rep; l != NULL; l = l->next)
				if (l->user->named != a->serial && (!x->split || l->user->old_rank == ro))
					n = gather_subs(a, n, l->user);
			if (!x->split && a->nwild > 0)
				n = gather_wild(a, n); /* the same judgement as the wildcards' own for rank r */
			rc = deliver(a, &view, n, r, false, false, x->org_text, NULL);
			if (rc < 0)
				return rc;
			if (!x->split)
				break;
		}
	}
	/* the users named by the row: each on their own */
	for (size_t i = 0; i < a->nnamed; i++) {
		auser *u = a->named[i];
		const alink *l = u->links[x->w];
		while (l != NULL && l->org != o)
			l = l->unext;
		if (l == NULL)
			continue; /* not a member of the row's org: sees nothing */
		int ro = x->split ? old_rank_of(a, x, u) : l->rank;
		policy_viewer vn, vo;
		privacy_viewer_init(a->pv, &vn, (privacy_when)x->w, l->rank, u->uid, POLICY_STATE_UUID_TEXT - 1, false);
		privacy_viewer_init(a->pv, &vo, (privacy_when)x->wold, ro, u->uid, POLICY_STATE_UUID_TEXT - 1, false);
		change view;
		int rc = evaluate(a, x->c, x->b, &vn, x->old ? &vo : NULL, &view);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			if (u->nleft > 0 && (rc = left_deliver(a, x, &vo, gather_left(a, 0, u), ro, true, u->uid)) < 0)
				return rc;
			continue;
		}
		rc = deliver(a, &view, gather_subs(a, 0, u), l->rank, false, true, x->org_text, u->uid);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* An UPDATE that moved a row to another org: the left_view subscribers of the old org's
 * members who are not members of the new one (org_audiences serves those who are), each judged
 * on their own with their rank in the old org, get the old row as a DELETE if they saw it. */
static int left_old_org(audience *a, const row_ctx *x, const aorg *o)
{
	policy_state_uuid okey;
	if (x->old_org->kind != VALUE_TEXT || uuid_parse(x->old_org->data, x->old_org->len, okey.b) < 0)
		return 0;
	const aorg *oo = pmap_find(a, &a->ix[x->wold].orgs, &okey);
	for (int r = a->nranks; oo != NULL && r >= 1; r--) {
		for (const alink *l = oo->heads[r]; l != NULL; l = l->next) {
			auser *u = l->user;
			if (u->nleft == 0)
				continue;
			const alink *m = u->links[x->w];
			while (m != NULL && m->org != o)
				m = m->unext;
			if (m != NULL && o != NULL)
				continue; /* a member of the new org: judged there */
			policy_viewer vo;
			privacy_viewer_init(a->pv, &vo, (privacy_when)x->wold, r, u->uid, POLICY_STATE_UUID_TEXT - 1, false);
			int rc = left_deliver(a, x, &vo, gather_left(a, 0, u), r, true, u->uid);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* A uuid no user has: the representative of a rank audience that has no subscribed member. */
static const char nil_uid[POLICY_STATE_UUID_TEXT] = "00000000-0000-0000-0000-000000000000";

/* Does value v of a uid column equal one of vals[0..n) (uuid text, as bytes)? */
static bool uid_seen(const change_value *v, const change_value *const *vals, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (vals[i]->kind == VALUE_TEXT && vals[i]->len == v->len && memcmp(vals[i]->data, v->data, v->len) == 0)
			return true;
	return false;
}

/* The wildcard subscribers' audiences of a row of org x->org, whether or not a member is
 * subscribed: per rank, the members the row's uid columns do not name (judged through a uid no
 * one has); then each user a uid column names who is a member of the org, on their own. A rank
 * audience that has subscribed members and no split was already delivered with the wildcards
 * in it (org_audiences). When split (the row moved, or the transaction changed the policy), the
 * old tuple is offered only where the named user saw it; the rank audiences get no old tuple:
 * a rank in the new org says nothing about the old one. */
static int wild_audiences(audience *a, const row_ctx *x, const aorg *o)
{
	int rc;
	for (int r = a->nranks; r >= 1; r--) {
		if (!x->split && o != NULL && o->heads[r] != NULL) {
			bool served = false; /* the members' audience of rank r carried the wildcards */
			for (const alink *l = o->heads[r]; l != NULL && !served; l = l->next)
				served = l->user->named != a->serial;
			if (served)
				continue;
		}
		policy_viewer vn, vo;
		privacy_viewer_init(a->pv, &vn, (privacy_when)x->w, r, nil_uid, POLICY_STATE_UUID_TEXT - 1, false);
		privacy_viewer_init(a->pv, &vo, (privacy_when)x->wold, x->split ? 0 : r, nil_uid,
		                    POLICY_STATE_UUID_TEXT - 1, false);
		change view;
		rc = evaluate(a, x->c, x->b, &vn, x->old ? &vo : NULL, &view);
		if (rc < 0)
			return rc;
		if (rc > 0 && (rc = deliver(a, &view, gather_wild(a, 0), r, false, false, x->org_text, NULL)) < 0)
			return rc;
	}
	const int *ucols;
	size_t nucols = policy_bound_uid_columns(x->b, &ucols);
	const change_value *seen[2 * 64];
	size_t nseen = 0;
	for (size_t k = 0; k < 2 * nucols; k++) {
		const change_value *tuple = k < nucols ? x->row : x->old;
		if (tuple == NULL)
			continue;
		const change_value *v = &tuple[ucols[k % nucols]];
		policy_state_uuid key;
		if (v->kind != VALUE_TEXT || uuid_parse(v->data, v->len, key.b) < 0 ||
		    uid_seen(v, seen, nseen))
			continue;
		if (nseen < sizeof(seen) / sizeof(seen[0]))
			seen[nseen++] = v;
		char uid[POLICY_STATE_UUID_TEXT];
		uuid_format(key.b, uid);
		int rank = policy_state_rank(privacy_state_at(a->pv, (privacy_when)x->w), x->org->data, x->org->len, uid,
		                             POLICY_STATE_UUID_TEXT - 1);
		if (rank < 1)
			continue; /* not a member of the row's org: sees nothing */
		int ro = rank;
		if (x->split)
			ro = x->old_org->kind != VALUE_TEXT
			         ? 0
			         : policy_state_rank(privacy_state_at(a->pv, (privacy_when)x->wold), x->old_org->data,
			                             x->old_org->len, uid, POLICY_STATE_UUID_TEXT - 1);
		policy_viewer vn, vo;
		privacy_viewer_init(a->pv, &vn, (privacy_when)x->w, rank, uid, POLICY_STATE_UUID_TEXT - 1, false);
		privacy_viewer_init(a->pv, &vo, (privacy_when)x->wold, ro, uid, POLICY_STATE_UUID_TEXT - 1, false);
		change view;
		rc = evaluate(a, x->c, x->b, &vn, x->old ? &vo : NULL, &view);
		if (rc < 0)
			return rc;
		if (rc > 0 && (rc = deliver(a, &view, gather_wild(a, 0), rank, false, true, x->org_text, uid)) < 0)
			return rc;
	}
	return 0;
}

/* The stage's judging callback: every audience of c, new row versions judged with the state as
 * of the commit (the AFTER index), old ones with the state before the transaction (BEFORE), or
 * as of the commit when the transaction created them (privacy_old_state). */
static int publish_one(audience *a, const change *c)
{
	int rc;
	for (int w = 0; w < 2; w++)
		if (a->ix[w].stale && (rc = index_rebuild(&a->ix[w])) < 0)
			return rc;
	a->serial++;
	a->nnamed = 0;
	a->st.changes++;
	const policy_bound *b = NULL;
	if (c->action != CHANGE_MESSAGE && c->action != CHANGE_TRUNCATE && c->rel != NULL) {
		rc = privacy_bind(a->pv, c->rel, &b);
		if (rc < 0) {
			snprintf(a->err, sizeof(a->err), "%s", privacy_error(a->pv));
			return rc;
		}
	}
	/* the bypass audience (wildcard subscribers are in it too) */
	if (a->nbypass + a->nwild > 0) {
		policy_viewer v;
		privacy_viewer_init(a->pv, &v, PRIVACY_AFTER, 0, NULL, 0, true);
		change view;
		rc = evaluate(a, c, b, &v, &v, &view);
		if (rc < 0)
			return rc;
		if (rc > 0) {
			size_t n = 0;
			for (const audience_sub *s = a->bypass_subs; s != NULL; s = s->next)
				a->out[n++] = s->opaque;
			n = gather_wild(a, n);
			if ((rc = deliver(a, &view, n, 0, true, false, NULL, NULL)) < 0)
				return rc;
		}
	}
	if (b == NULL)
		return 0; /* no row, or a table the policy does not govern: bypass only */
	bool del = c->action == CHANGE_DELETE;
	privacy_when wold = privacy_old_state(a->pv);
	row_ctx x = {.c = c, .b = b, .w = del ? wold : PRIVACY_AFTER, .wold = wold};
	x.row = del ? c->old_tuple : c->new_tuple;
	if (x.row == NULL)
		return 0;
	int org_col = policy_bound_org_column(b);
	const change_value *org = &x.row[org_col];
	policy_state_uuid okey;
	if (org->kind != VALUE_TEXT || uuid_parse(org->data, org->len, okey.b) < 0)
		return 0; /* a row of no org (or none a member can have): members see nothing */
	aorg *o = pmap_find(a, &a->ix[x.w].orgs, &okey);
	bool moved = false;
	if (!del && c->old_tuple != NULL) {
		const change_value *oorg = &c->old_tuple[org_col];
		moved = !(oorg->kind == VALUE_TEXT && oorg->len == org->len && memcmp(oorg->data, org->data, org->len) == 0);
	}
	if (o == NULL && a->nwild == 0 && !moved)
		return 0; /* no subscriber is a member of the row's org: no work at all */
	x.org = org;
	uuid_format(okey.b, x.org_text);
	if (!del && c->old_tuple != NULL) {
		x.old = c->old_tuple;
		x.old_org = &x.old[org_col];
		policy_state_uuid ookey;
		if (x.old_org->kind == VALUE_TEXT && uuid_parse(x.old_org->data, x.old_org->len, ookey.b) == 0)
			uuid_format(ookey.b, x.old_text);
		/* same org and same state: the old ranks are the new ones */
		x.split = moved || (privacy_pending(a->pv) && wold != PRIVACY_AFTER);
	}
	const int *ucols;
	size_t nucols = policy_bound_uid_columns(b, &ucols);
	for (size_t i = 0; i < nucols; i++) {
		if ((rc = name_user(a, &x.row[ucols[i]])) < 0 || (x.old && (rc = name_user(a, &x.old[ucols[i]])) < 0))
			return rc;
	}
	if (o != NULL && (rc = org_audiences(a, &x, o)) < 0)
		return rc;
	if (moved && (rc = left_old_org(a, &x, o)) < 0)
		return rc;
	return a->nwild > 0 ? wild_audiences(a, &x, o) : 0;
}

static int publish_cb(void *arg, const change *c)
{
	audience *a = arg;
	a->source = c;
	int rc = publish_one(a, c);
	a->source = NULL;
	seen_release(a); /* the views go with the change (the privacy arena is reset) */
	return rc;
}

/* Prepares a call into the stage that may deliver through cb. */
static void call_begin(audience *a, audience_deliver_cb cb, void *arg)
{
	a->cb = cb;
	a->cb_arg = arg;
	a->delivered = 0;
	a->err[0] = '\0';
	a->st.last_evaluations = 0;
}

/* Ends it: the number of audiences delivered, or rc's error (with a message). */
static int call_end(audience *a, int rc)
{
	a->cb = NULL;
	a->cb_arg = NULL;
	if (rc < 0) {
		if (a->err[0] == '\0')
			snprintf(a->err, sizeof(a->err), "%s", privacy_error(a->pv));
		return rc;
	}
	return a->delivered;
}

int audience_begin(audience *a, const change_txn *txn)
{
	call_begin(a, NULL, NULL);
	int rc = call_end(a, privacy_begin(a->pv, txn));
	return rc < 0 ? rc : 0;
}

int audience_change(audience *a, const change *c, audience_deliver_cb cb, void *arg)
{
	call_begin(a, cb, arg);
	return call_end(a, privacy_change(a->pv, c, publish_cb, a));
}

int audience_commit(audience *a, const change_txn *txn, audience_deliver_cb cb, void *arg)
{
	call_begin(a, cb, arg);
	return call_end(a, privacy_commit(a->pv, txn, publish_cb, a));
}

void audience_abort(audience *a)
{
	privacy_abort(a->pv);
}

int audience_publish(audience *a, const change *c, audience_deliver_cb cb, void *arg)
{
	call_begin(a, cb, arg);
	return call_end(a, privacy_judge(a->pv, c, publish_cb, a));
}

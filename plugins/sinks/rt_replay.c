/*
 * rt_replay — the realtime sink's replay buffer (rt_replay.h).
 *
 * Transactions form a doubly linked list, oldest first; each holds a growing array of items and
 * one of membership changes. The floor is the position up to which the buffer can no longer
 * replay (the last change of the newest transaction dropped, or just before the first one it
 * ever held): a resume from before it gets the gap. A resume walks the transactions after the
 * position from the newest back, tracking the user's rank per org they are in now or were
 * recorded in (undoing each transaction's membership changes), marks the items the user would
 * have got, then calls back forward in order.
 */
#include "rt_replay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct rr_item {
	rt_replay_item it;
	void *payload;
	size_t bytes;
	char *strings; /* schema \0 table \0 pk \0 */
	bool chosen;   /* scratch of rt_replay_since */
} rr_item;

typedef struct rr_rank {
	uint8_t org[16];
	uint8_t user[16];
	int old_rank;
	int new_rank;
} rr_rank;

typedef struct rr_txn {
	struct rr_txn *prev, *next;
	uint64_t commit_lsn;
	int64_t time_s;
	rr_item *items;
	size_t n, cap;
	rr_rank *ranks;
	size_t nranks, rcap;
	size_t bytes;
} rr_txn;

struct rt_replay {
	size_t max_bytes;
	int64_t max_age_s;
	rt_replay_free_cb free_cb;
	rr_txn *head, *tail; /* oldest, newest */
	rr_txn *open;        /* == tail while a transaction is open */
	size_t bytes;
	size_t ntxns;
	bool have_floor;
	uint64_t floor_commit, floor_lsn;
	uint64_t newest;     /* the highest commit LSN begun */
};

static int pos_cmp(uint64_t c1, uint64_t l1, uint64_t c2, uint64_t l2)
{
	if (c1 != c2)
		return c1 < c2 ? -1 : 1;
	return l1 < l2 ? -1 : l1 > l2 ? 1 : 0;
}

int rt_replay_create(size_t max_bytes, int64_t max_age_s, rt_replay_free_cb free_cb, rt_replay **out)
{
	*out = NULL;
	if (max_age_s < 0)
		return -EINVAL;
	rt_replay *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->max_bytes = max_bytes;
	r->max_age_s = max_age_s;
	r->free_cb = free_cb;
	*out = r;
	return 0;
}

static void item_fini(rt_replay *r, rr_item *i)
{
	if (r->free_cb != NULL && i->payload != NULL)
		r->free_cb(i->payload);
	i->payload = NULL;
	free(i->strings);
	i->strings = NULL;
}

/* Removes the oldest transaction; the floor moves to its end. */
static void drop_oldest(rt_replay *r)
{
	rr_txn *t = r->head;
	if (t == NULL)
		return;
	r->head = t->next;
	if (r->head != NULL)
		r->head->prev = NULL;
	else
		r->tail = NULL;
	if (r->open == t)
		r->open = NULL;
	r->have_floor = true;
	r->floor_commit = t->commit_lsn;
	r->floor_lsn = UINT64_MAX;
	for (size_t k = 0; k < t->n; k++)
		item_fini(r, &t->items[k]);
	r->bytes -= t->bytes;
	r->ntxns--;
	free(t->items);
	free(t->ranks);
	free(t);
}

void rt_replay_destroy(rt_replay *r)
{
	if (r == NULL)
		return;
	while (r->head != NULL)
		drop_oldest(r);
	free(r);
}

/* Out of memory: nothing before the open transaction (nor it) can be replayed any more. */
static void mark_gap(rt_replay *r)
{
	uint64_t c = r->open != NULL ? r->open->commit_lsn : r->floor_commit;
	while (r->head != NULL)
		drop_oldest(r);
	r->have_floor = true;
	r->floor_commit = c;
	r->floor_lsn = UINT64_MAX;
}

void rt_replay_reset(rt_replay *r)
{
	r->open = NULL;
	while (r->head != NULL)
		drop_oldest(r);
	r->have_floor = true;
	r->floor_commit = r->newest;
	r->floor_lsn = UINT64_MAX;
}

int rt_replay_begin(rt_replay *r, uint64_t commit_lsn, int64_t now_s)
{
	if (r->have_floor && commit_lsn <= r->newest) {
		rt_replay_reset(r);
		return -EALREADY;
	}
	r->newest = commit_lsn;
	if (!r->have_floor) {
		r->have_floor = true;
		r->floor_commit = commit_lsn;
		r->floor_lsn = 0;
	}
	rr_txn *t = calloc(1, sizeof(*t));
	if (t == NULL) {
		r->open = NULL;
		while (r->head != NULL)
			drop_oldest(r);
		r->floor_commit = commit_lsn;
		r->floor_lsn = UINT64_MAX;
		return -ENOMEM;
	}
	t->commit_lsn = commit_lsn;
	t->time_s = now_s;
	t->bytes = sizeof(*t);
	t->prev = r->tail;
	if (r->tail != NULL)
		r->tail->next = t;
	else
		r->head = t;
	r->tail = t;
	r->open = t;
	r->bytes += t->bytes;
	r->ntxns++;
	return 0;
}

int rt_replay_add(rt_replay *r, const rt_replay_item *it, void *payload, size_t bytes)
{
	rr_txn *t = r->open;
	if (t == NULL)
		return -EINVAL;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		rr_item *n = realloc(t->items, cap * sizeof(*n));
		if (n == NULL)
			goto nomem;
		t->items = n;
		t->bytes += (cap - t->cap) * sizeof(*n);
		r->bytes += (cap - t->cap) * sizeof(*n);
		t->cap = cap;
	}
	const char *schema = it->schema ? it->schema : "";
	const char *table = it->table ? it->table : "";
	const char *pk = it->pk ? it->pk : "";
	size_t ls = strlen(schema) + 1, lt = strlen(table) + 1, lp = strlen(pk) + 1;
	char *s = malloc(ls + lt + lp);
	if (s == NULL)
		goto nomem;
	memcpy(s, schema, ls);
	memcpy(s + ls, table, lt);
	memcpy(s + ls + lt, pk, lp);
	rr_item *i = &t->items[t->n++];
	i->it = *it;
	i->it.schema = s;
	i->it.table = s + ls;
	i->it.pk = s + ls + lt;
	i->strings = s;
	i->payload = payload;
	i->bytes = bytes + ls + lt + lp;
	i->chosen = false;
	t->bytes += i->bytes;
	r->bytes += i->bytes;
	return 0;
nomem:
	mark_gap(r);
	return -ENOMEM;
}

int rt_replay_rank_change(rt_replay *r, const uint8_t org[16], const uint8_t user[16], int old_rank,
                          int new_rank)
{
	rr_txn *t = r->open;
	if (t == NULL)
		return -EINVAL;
	if (t->nranks == t->rcap) {
		size_t cap = t->rcap ? t->rcap * 2 : 4;
		rr_rank *n = realloc(t->ranks, cap * sizeof(*n));
		if (n == NULL) {
			mark_gap(r);
			return -ENOMEM;
		}
		t->ranks = n;
		t->bytes += (cap - t->rcap) * sizeof(*n);
		r->bytes += (cap - t->rcap) * sizeof(*n);
		t->rcap = cap;
	}
	rr_rank *k = &t->ranks[t->nranks++];
	memcpy(k->org, org, 16);
	memcpy(k->user, user, 16);
	k->old_rank = old_rank;
	k->new_rank = new_rank;
	return 0;
}

void rt_replay_expire(rt_replay *r, int64_t now_s)
{
	while (r->head != NULL && r->head != r->open && r->head->time_s + r->max_age_s < now_s)
		drop_oldest(r);
}

void rt_replay_commit(rt_replay *r, int64_t now_s)
{
	r->open = NULL;
	while (r->head != NULL && r->bytes > r->max_bytes)
		drop_oldest(r);
	rt_replay_expire(r, now_s);
}

size_t rt_replay_erase(rt_replay *r, const char *schema, const char *table, const char *pk)
{
	size_t dropped = 0;
	for (rr_txn *t = r->head; t != NULL; t = t->next) {
		size_t w = 0;
		for (size_t k = 0; k < t->n; k++) {
			rr_item *i = &t->items[k];
			if (strcmp(i->it.pk, pk) == 0 && strcmp(i->it.table, table) == 0 &&
			    strcmp(i->it.schema, schema) == 0) {
				t->bytes -= i->bytes;
				r->bytes -= i->bytes;
				item_fini(r, i);
				dropped++;
				continue;
			}
			t->items[w++] = *i;
		}
		t->n = w;
	}
	return dropped;
}

/* The user's rank per org while walking back: the orgs met so far. */
typedef struct rr_seen {
	uint8_t org[16];
	int rank;
} rr_seen;

typedef struct rr_ranks {
	rr_seen *v;
	size_t n, cap;
	const rt_replay_who *who;
} rr_ranks;

static rr_seen *rank_slot(rr_ranks *k, const uint8_t org[16])
{
	for (size_t i = 0; i < k->n; i++)
		if (memcmp(k->v[i].org, org, 16) == 0)
			return &k->v[i];
	if (k->n == k->cap) {
		size_t cap = k->cap ? k->cap * 2 : 8;
		rr_seen *n = realloc(k->v, cap * sizeof(*n));
		if (n == NULL)
			return NULL;
		k->v = n;
		k->cap = cap;
	}
	rr_seen *s = &k->v[k->n++];
	memcpy(s->org, org, 16);
	s->rank = k->who->rank_now ? k->who->rank_now(k->who->arg, org) : 0;
	return s;
}

/* Marks the items of t the viewer gets, with the ranks as of t's commit in k. */
static int choose(rr_txn *t, rr_ranks *k)
{
	const rt_replay_who *who = k->who;
	for (size_t a = 0; a < t->n;) {
		size_t b = a;
		while (b < t->n && t->items[b].it.lsn == t->items[a].it.lsn)
			b++;
		rr_item *pick = NULL;
		for (size_t i = a; i < b; i++) {
			rr_item *x = &t->items[i];
			x->chosen = false;
			if (who->bypass) {
				if (x->it.kind == RT_REPLAY_BYPASS)
					pick = x;
				continue;
			}
			if (x->it.kind == RT_REPLAY_INDIVIDUAL && memcmp(x->it.uid, who->uid, 16) == 0)
				pick = x;
		}
		if (!who->bypass && pick == NULL) {
			for (size_t i = a; i < b && pick == NULL; i++) {
				rr_item *x = &t->items[i];
				if (x->it.kind != RT_REPLAY_RANK)
					continue;
				rr_seen *s = rank_slot(k, x->it.org);
				if (s == NULL)
					return -ENOMEM;
				if (s->rank > 0 && s->rank == x->it.rank)
					pick = x;
			}
		}
		if (pick != NULL)
			pick->chosen = true;
		a = b;
	}
	/* undo t's membership changes of this user: the ranks as of the commit before t */
	for (size_t j = t->nranks; j-- > 0;) {
		const rr_rank *c = &t->ranks[j];
		if (who->bypass || memcmp(c->user, who->uid, 16) != 0)
			continue;
		rr_seen *s = rank_slot(k, c->org);
		if (s == NULL)
			return -ENOMEM;
		s->rank = c->old_rank;
	}
	return 0;
}

int rt_replay_since(rt_replay *r, uint64_t commit_lsn, uint64_t lsn, const rt_replay_who *who, rt_replay_cb cb,
                    void *arg)
{
	if (!r->have_floor || pos_cmp(commit_lsn, lsn, r->floor_commit, r->floor_lsn) < 0)
		return -ERANGE;
	uint64_t newest = r->tail != NULL ? r->tail->commit_lsn : r->floor_commit;
	if (commit_lsn > newest)
		return -ERANGE;
	/* the first transaction with something after the position */
	rr_txn *first = r->tail;
	while (first != NULL && first->prev != NULL && first->prev->commit_lsn >= commit_lsn)
		first = first->prev;
	if (first != NULL && first->commit_lsn < commit_lsn)
		first = NULL;
	rr_ranks k = {NULL, 0, 0, who};
	int rc = 0;
	for (rr_txn *t = r->tail; t != NULL && first != NULL; t = t->prev) {
		if ((rc = choose(t, &k)) < 0)
			goto out;
		if (t == first)
			break;
	}
	int calls = 0;
	for (rr_txn *t = first; t != NULL; t = t->next) {
		for (size_t i = 0; i < t->n; i++) {
			rr_item *x = &t->items[i];
			if (!x->chosen || pos_cmp(t->commit_lsn, x->it.lsn, commit_lsn, lsn) <= 0)
				continue;
			if ((rc = cb(arg, t->commit_lsn, &x->it, x->payload)) < 0)
				goto out;
			calls++;
		}
	}
	rc = calls;
out:
	free(k.v);
	return rc;
}

size_t rt_replay_bytes(const rt_replay *r)
{
	return r->bytes;
}

size_t rt_replay_txns(const rt_replay *r)
{
	return r->ntxns;
}

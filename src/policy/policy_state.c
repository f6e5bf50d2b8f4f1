/*
 * policy_state — the mirror of org_roles and privacy_rules (see policy_state.h).
 *
 * Design. Four tables, each a dense array of entries (a "slab") plus an open-addressing hash
 * index over it:
 *
 *   members   (org, user) -> rank (one row per key, as the table's primary key); linked into
 *             its org's list for its rank
 *   orgs      org -> list head and member count per rank
 *   users     user -> list of their member entries (one per org), for policy_state_user_orgs
 *   rules     rule id -> (subject, rank)
 *   subjects  subject -> rank multiset (the rules on it, by id)
 *
 * The index is the core's hash_index (hash.h): the low 32 bits of the key's hash as a tag and
 * the entry's slab index, linear probing at load <= 1/2, no tombstones. Removing an
 * entry moves the slab's last entry into its place and repoints that entry's index slot and
 * list links, so slabs stay dense and memory follows the row count. Hashes are keyed by a
 * per-state random seed, so chosen uuids cannot lengthen the probes.
 *
 * A subject's rank multiset keeps (max rank, rule count) and, only once a subject has a second
 * rule, a count per rank: the common one-rule subject costs no extra allocation, and removing
 * one of several rules finds the next maximum exactly as SQL's max() over the others would.
 *
 * Every mutating call parses and validates the whole change first, then reserves room for one
 * more entry in every table it may grow (and one spare per-rank array of each kind), so the
 * mutation itself cannot fail: an error leaves the mirror exactly as it was.
 */
#include "policy_state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "hash.h"
#include "uuid.h"

#define MEMBER_KEY (2 * UUID_BYTES) /* org bytes, then user bytes */
#define NCOLS 3
/* Slab indexes are stored + 1 in 32 bits and the index keeps load <= 1/2 of 2^32 slots. */
#define SLAB_MAX ((size_t)1 << 31)

enum { T_MEMBERSHIP = 0, T_RULES = 1 };
enum { C_ORG = 0, C_USER = 1, C_ROLE = 2 };       /* membership columns */
enum { C_ID = 0, C_SUBJECT = 1, C_MIN_ROLE = 2 }; /* rules columns */

typedef struct rankset {
	int32_t rank;     /* max over the rows */
	uint32_t nrows;
	uint32_t *counts; /* NULL while the key never had two rows; else rows per rank 0..nranks */
} rankset;

typedef struct member {
	uint8_t key[MEMBER_KEY];
	int32_t rank;        /* the row's role rank (0: a role not in the rank table) */
	uint32_t prev, next; /* the org's list for rank: slab index + 1, 0 = none */
	uint32_t uprev, unext; /* the user's list of member entries: slab index + 1, 0 = none */
} member;

/* A user with at least one member entry: the head of their list of entries (one per org). */
typedef struct user_ent {
	uint8_t key[UUID_BYTES];
	uint32_t head; /* member slab index + 1 */
} user_ent;

typedef struct org {
	uint8_t key[UUID_BYTES];
	uint32_t nkeys;  /* member entries in its lists, rank 0 included */
	uint32_t *heads; /* [nranks + 1] list heads (index + 1), then [nranks + 1] counts */
} org;

typedef struct rule {
	uint8_t key[UUID_BYTES]; /* the rule row's id */
	uint8_t subject[UUID_BYTES];
	int32_t rank;
	bool has_subject; /* false: contact_id NULL, a rule that applies to nothing */
} rule;

typedef struct subject {
	uint8_t key[UUID_BYTES];
	rankset rs;
} subject;

typedef struct table_def {
	char *schema;
	char *name;
	char *cols[NCOLS];
	/* binding: valid while rel, id, oid and ncols match and the names are still there */
	const relation *rel;
	uint64_t id;
	uint32_t oid;
	int ncols;
	int idx[NCOLS];
} table_def;

/* One parsed membership row. rank -1 (old rows only): the role was not in the old tuple (it
 * does not matter: a row is removed by its key). null_key: org or user is NULL, a row that
 * matches nothing. */
typedef struct member_row {
	bool present;
	bool null_key;
	int rank;
	uint8_t key[MEMBER_KEY];
} member_row;

typedef struct rule_row {
	bool present;
	bool has_subject;
	int rank;
	uint8_t id[UUID_BYTES];
	uint8_t subject[UUID_BYTES];
} rule_row;

struct policy_state {
	int nranks;
	char **rank_names;
	size_t *rank_lens;
	uint64_t seed;
	table_def tables[2];

	member *members;
	size_t nmembers, cap_members;
	hash_index member_ix;
	org *orgs;
	size_t norgs, cap_orgs;
	hash_index org_ix;
	user_ent *users;
	size_t nusers, cap_users;
	hash_index user_ix;
	rule *rules;
	size_t nrules, cap_rules;
	hash_index rule_ix;
	subject *subjects;
	size_t nsubjects, cap_subjects;
	hash_index subject_ix;

	uint32_t *spare_counts; /* zeroed, ready for a rank multiset's second row */
	uint32_t *spare_lists;  /* zeroed, ready for a new org */
	size_t aux_bytes;       /* per-rank arrays held (in entries and spares) */
	size_t fixed_bytes;     /* the state, names */

	size_t ranked;      /* member entries with rank >= 1 */
	uint64_t missing_rows;
	uint64_t replaced_rules;
	uint64_t replaced_members;

	struct {
		policy_state_change_cb cb;
		void *arg;
	} cbs[POLICY_STATE_CALLBACKS_MAX];
	int ncbs;
	policy_state_journal_cb journal; /* rows taken from changes (policy_state_set_journal) */
	void *journal_arg;
	bool journaling; /* inside policy_state_apply: row changes go to the journal */
	char err[POLICY_STATE_ERROR_MAX];
};

static void journal_member(const policy_state *ps, const uint8_t key[MEMBER_KEY], int rank, bool deleted);
static void journal_rule(const policy_state *ps, const uint8_t id[UUID_BYTES], const rule_row *r);

/* ---- errors --------------------------------------------------------------------------- */

static int fail(policy_state *ps, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(policy_state *ps, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ps->err, sizeof(ps->err), fmt, ap);
	va_end(ap);
	return rc;
}

static void create_error(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void create_error(char *err, const char *fmt, ...)
{
	if (err == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, POLICY_STATE_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* A value from outside, fit for an error message: at most 40 bytes, anything but printable
 * ASCII (and quotes, backslashes) shown as '?'. */
#define SHOW_MAX 48
static const char *show(char out[SHOW_MAX], const char *s, size_t len)
{
	size_t n = len < 40 ? len : 40, o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		out[o++] = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
	}
	if (n < len) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

/* ---- uuids ---------------------------------------------------------------------------- */

int policy_state_uuid_parse(const char *s, size_t len, policy_state_uuid *out)
{
	if (out == NULL)
		return -EINVAL;
	return uuid_parse(s, len, out->b);
}

void policy_state_uuid_format(const policy_state_uuid *u, char out[POLICY_STATE_UUID_TEXT])
{
	uuid_format(u->b, out);
}

/* ---- hashing and the index (hash.h) -------------------------------------------------------- */

static inline uint32_t key_hash(uint64_t seed, const uint8_t *k, size_t n)
{
	return (uint32_t)hash_words(seed, k, n);
}

/* The slab index of the entry whose key (at offset 0 of each stride-sized entry) equals key, or
 * -1. Inlined with constant stride and klen, the key compare is a few word compares. */
static inline long hx_find(const hash_index *hx, const void *slab, size_t stride, const uint8_t *key,
                           size_t klen, uint32_t h)
{
	hash_probe p = hash_index_probe(hx, h);
	for (uint32_t idx; hash_probe_next(hx, &p, &idx);)
		if (memcmp((const uint8_t *)slab + (size_t)idx * stride, key, klen) == 0)
			return (long)idx;
	return -1;
}

/* Ensures room for one more element in a slab. 0 or -ENOMEM (unchanged). */
static int slab_reserve(void **v, size_t *cap, size_t n, size_t elsize)
{
	if (n < *cap)
		return 0;
	if (n + 1 >= SLAB_MAX)
		return -ENOMEM;
	size_t ncap = *cap ? *cap * 2 : 16;
	void *p = realloc(*v, ncap * elsize);
	if (p == NULL)
		return -ENOMEM;
	*v = p;
	*cap = ncap;
	return 0;
}

/* ---- per-rank arrays and rank multisets --------------------------------------------------- */

static size_t counts_bytes(const policy_state *ps) { return (size_t)(ps->nranks + 1) * sizeof(uint32_t); }
static size_t lists_bytes(const policy_state *ps) { return 2 * counts_bytes(ps); }

/* Ensures a spare counts array (and a spare org lists array when lists). 0 or -ENOMEM. */
static int spares_reserve(policy_state *ps, bool lists)
{
	if (ps->spare_counts == NULL) {
		ps->spare_counts = calloc(1, counts_bytes(ps));
		if (ps->spare_counts == NULL)
			return -ENOMEM;
		ps->aux_bytes += counts_bytes(ps);
	}
	if (lists && ps->spare_lists == NULL) {
		ps->spare_lists = calloc(1, lists_bytes(ps));
		if (ps->spare_lists == NULL)
			return -ENOMEM;
		ps->aux_bytes += lists_bytes(ps);
	}
	return 0;
}

static void counts_release(policy_state *ps, uint32_t *counts)
{
	if (counts == NULL)
		return;
	if (ps->spare_counts == NULL) {
		memset(counts, 0, counts_bytes(ps));
		ps->spare_counts = counts;
		return;
	}
	free(counts);
	ps->aux_bytes -= counts_bytes(ps);
}

static void lists_release(policy_state *ps, uint32_t *lists)
{
	if (lists == NULL)
		return;
	if (ps->spare_lists == NULL) {
		memset(lists, 0, lists_bytes(ps));
		ps->spare_lists = lists;
		return;
	}
	free(lists);
	ps->aux_bytes -= lists_bytes(ps);
}

/* Adds a row of rank r to a set that has at least one row; may take the spare counts array. */
static void rankset_add(policy_state *ps, rankset *rs, int r)
{
	if (rs->counts == NULL) {
		/* second row: start counting (the one row so far has the set's rank) */
		rs->counts = ps->spare_counts;
		ps->spare_counts = NULL;
		rs->counts[rs->rank] = 1;
	}
	rs->counts[r]++;
	rs->nrows++;
	if (r > rs->rank)
		rs->rank = r;
}

/* Removes one row of rank r. false when there is no such row. When nrows drops to 0 the caller
 * deletes the entry (and releases counts). */
static bool rankset_remove(rankset *rs, int r)
{
	if (rs->counts == NULL) {
		if (rs->nrows != 1 || rs->rank != r)
			return false;
		rs->nrows = 0;
		rs->rank = 0;
		return true;
	}
	if (rs->counts[r] == 0)
		return false;
	rs->counts[r]--;
	rs->nrows--;
	if (r == rs->rank) {
		int k = r;
		while (k > 0 && rs->counts[k] == 0)
			k--;
		rs->rank = k;
	}
	return true;
}

/* ---- orgs and members --------------------------------------------------------------------- */

static inline long org_find(const policy_state *ps, const uint8_t key[UUID_BYTES])
{
	return hx_find(&ps->org_ix, ps->orgs, sizeof(org), key, UUID_BYTES,
	               key_hash(ps->seed, key, UUID_BYTES));
}

static inline long member_find(const policy_state *ps, const uint8_t key[MEMBER_KEY])
{
	return hx_find(&ps->member_ix, ps->members, sizeof(member), key, MEMBER_KEY,
	               key_hash(ps->seed, key, MEMBER_KEY));
}

static inline long user_find(const policy_state *ps, const uint8_t key[UUID_BYTES])
{
	return hx_find(&ps->user_ix, ps->users, sizeof(user_ent), key, UUID_BYTES,
	               key_hash(ps->seed, key, UUID_BYTES));
}

static inline int member_rank(const policy_state *ps, const uint8_t key[MEMBER_KEY])
{
	long i = member_find(ps, key);
	return i < 0 ? 0 : ps->members[i].rank;
}

/* Room for one more member and one more org, and the spares. 0 or -ENOMEM. */
static int members_reserve(policy_state *ps)
{
	void *p = ps->members;
	int rc = slab_reserve(&p, &ps->cap_members, ps->nmembers, sizeof(member));
	ps->members = p;
	if (rc == 0)
		rc = hash_index_reserve(&ps->member_ix, 1);
	if (rc == 0) {
		p = ps->orgs;
		rc = slab_reserve(&p, &ps->cap_orgs, ps->norgs, sizeof(org));
		ps->orgs = p;
	}
	if (rc == 0)
		rc = hash_index_reserve(&ps->org_ix, 1);
	if (rc == 0) {
		p = ps->users;
		rc = slab_reserve(&p, &ps->cap_users, ps->nusers, sizeof(user_ent));
		ps->users = p;
	}
	if (rc == 0)
		rc = hash_index_reserve(&ps->user_ix, 1);
	if (rc == 0)
		rc = spares_reserve(ps, true);
	return rc;
}

static uint32_t *org_counts(const policy_state *ps, const org *o) { return o->heads + ps->nranks + 1; }

/* The org's index, adding it (with the spare lists) when new. Room reserved. */
static size_t org_get(policy_state *ps, const uint8_t key[UUID_BYTES])
{
	long oi = org_find(ps, key);
	if (oi >= 0)
		return (size_t)oi;
	size_t i = ps->norgs++;
	org *o = &ps->orgs[i];
	memcpy(o->key, key, UUID_BYTES);
	o->nkeys = 0;
	o->heads = ps->spare_lists;
	ps->spare_lists = NULL;
	hash_index_insert(&ps->org_ix, key_hash(ps->seed, key, UUID_BYTES), i);
	return i;
}

static void org_delete(policy_state *ps, size_t oi)
{
	org *o = &ps->orgs[oi];
	lists_release(ps, o->heads);
	hash_index_remove(&ps->org_ix, key_hash(ps->seed, o->key, UUID_BYTES), oi);
	size_t last = --ps->norgs;
	if (oi != last) {
		ps->orgs[oi] = ps->orgs[last];
		hash_index_repoint(&ps->org_ix, key_hash(ps->seed, ps->orgs[oi].key, UUID_BYTES), last, oi);
	}
}

/* Links member entry i into its user's list, adding the user when new. Room reserved. */
static void user_link(policy_state *ps, size_t i)
{
	member *m = &ps->members[i];
	const uint8_t *ukey = m->key + UUID_BYTES;
	long ui = user_find(ps, ukey);
	if (ui < 0) {
		ui = (long)ps->nusers++;
		memcpy(ps->users[ui].key, ukey, UUID_BYTES);
		ps->users[ui].head = 0;
		hash_index_insert(&ps->user_ix, key_hash(ps->seed, ukey, UUID_BYTES), (size_t)ui);
	}
	user_ent *u = &ps->users[ui];
	m->uprev = 0;
	m->unext = u->head;
	if (m->unext != 0)
		ps->members[m->unext - 1].uprev = (uint32_t)(i + 1);
	u->head = (uint32_t)(i + 1);
}

/* Unlinks member entry i from its user's list; removes the user when that was their last. */
static void user_unlink(policy_state *ps, size_t i)
{
	member *m = &ps->members[i];
	const uint8_t *ukey = m->key + UUID_BYTES;
	long ui = user_find(ps, ukey);
	if (m->uprev != 0)
		ps->members[m->uprev - 1].unext = m->unext;
	else if (ui >= 0)
		ps->users[ui].head = m->unext;
	if (m->unext != 0)
		ps->members[m->unext - 1].uprev = m->uprev;
	m->uprev = m->unext = 0;
	if (ui < 0 || ps->users[ui].head != 0)
		return;
	hash_index_remove(&ps->user_ix, key_hash(ps->seed, ukey, UUID_BYTES), (size_t)ui);
	size_t last = --ps->nusers;
	if ((size_t)ui != last) {
		ps->users[ui] = ps->users[last];
		hash_index_repoint(&ps->user_ix, key_hash(ps->seed, ps->users[ui].key, UUID_BYTES), last, (size_t)ui);
	}
}

static void list_push(policy_state *ps, org *o, size_t i, int r)
{
	member *m = &ps->members[i];
	m->prev = 0;
	m->next = o->heads[r];
	if (m->next != 0)
		ps->members[m->next - 1].prev = (uint32_t)(i + 1);
	o->heads[r] = (uint32_t)(i + 1);
	org_counts(ps, o)[r]++;
	if (r >= 1)
		ps->ranked++;
}

static void list_unlink(policy_state *ps, org *o, size_t i, int r)
{
	member *m = &ps->members[i];
	if (m->prev != 0)
		ps->members[m->prev - 1].next = m->next;
	else
		o->heads[r] = m->next;
	if (m->next != 0)
		ps->members[m->next - 1].prev = m->prev;
	m->prev = m->next = 0;
	org_counts(ps, o)[r]--;
	if (r >= 1)
		ps->ranked--;
}

/* Sets the row of key to rank r: adds it, or replaces the row with that key (an insert of a
 * key the mirror holds, e.g. replayed: the table has one row per key). Room reserved
 * (members_reserve). */
static void member_set(policy_state *ps, const uint8_t key[MEMBER_KEY], int r, bool count_replaced)
{
	long found = member_find(ps, key);
	if (found < 0) {
		size_t oi = org_get(ps, key);
		size_t i = ps->nmembers++;
		member *m = &ps->members[i];
		memcpy(m->key, key, MEMBER_KEY);
		m->rank = r;
		hash_index_insert(&ps->member_ix, key_hash(ps->seed, key, MEMBER_KEY), i);
		ps->orgs[oi].nkeys++;
		list_push(ps, &ps->orgs[oi], i, r);
		user_link(ps, i);
		return;
	}
	if (count_replaced)
		ps->replaced_members++;
	member *m = &ps->members[found];
	if (m->rank == r)
		return;
	long oi = org_find(ps, key);
	if (oi < 0)
		return; /* cannot happen: every member entry is in its org's list */
	list_unlink(ps, &ps->orgs[oi], (size_t)found, m->rank);
	m->rank = r;
	list_push(ps, &ps->orgs[oi], (size_t)found, r);
}

/* Removes member entry i from its list, the index and the slab; removes its org when that was
 * the org's last entry. */
static void member_delete(policy_state *ps, size_t i)
{
	member *m = &ps->members[i];
	long oi = org_find(ps, m->key);
	if (oi >= 0) {
		list_unlink(ps, &ps->orgs[oi], i, m->rank);
		ps->orgs[oi].nkeys--;
	}
	user_unlink(ps, i);
	hash_index_remove(&ps->member_ix, key_hash(ps->seed, m->key, MEMBER_KEY), i);
	size_t last = --ps->nmembers;
	if (i != last) {
		ps->members[i] = ps->members[last];
		member *mv = &ps->members[i];
		hash_index_repoint(&ps->member_ix, key_hash(ps->seed, mv->key, MEMBER_KEY), last, i);
		if (mv->prev != 0) {
			ps->members[mv->prev - 1].next = (uint32_t)(i + 1);
		} else {
			long mo = org_find(ps, mv->key);
			if (mo >= 0)
				ps->orgs[mo].heads[mv->rank] = (uint32_t)(i + 1);
		}
		if (mv->next != 0)
			ps->members[mv->next - 1].prev = (uint32_t)(i + 1);
		if (mv->uprev != 0) {
			ps->members[mv->uprev - 1].unext = (uint32_t)(i + 1);
		} else {
			long mu = user_find(ps, mv->key + UUID_BYTES);
			if (mu >= 0)
				ps->users[mu].head = (uint32_t)(i + 1);
		}
		if (mv->unext != 0)
			ps->members[mv->unext - 1].uprev = (uint32_t)(i + 1);
	}
	if (oi >= 0 && ps->orgs[oi].nkeys == 0)
		org_delete(ps, (size_t)oi);
}

/* Removes the row of key, whatever its role. false when the mirror holds no such row. */
static bool member_remove(policy_state *ps, const uint8_t key[MEMBER_KEY])
{
	long found = member_find(ps, key);
	if (found < 0)
		return false;
	member_delete(ps, (size_t)found);
	return true;
}

static void notify_all(const policy_state *ps, const policy_state_uuid *o, const policy_state_uuid *u,
                       int before, int after)
{
	for (int k = 0; k < ps->ncbs; k++)
		ps->cbs[k].cb(ps->cbs[k].arg, o, u, before, after);
}

static void notify(const policy_state *ps, const uint8_t key[MEMBER_KEY], int before)
{
	if (ps->ncbs == 0)
		return;
	int after = member_rank(ps, key);
	if (after == before)
		return;
	policy_state_uuid o, u;
	memcpy(o.b, key, UUID_BYTES);
	memcpy(u.b, key + UUID_BYTES, UUID_BYTES);
	notify_all(ps, &o, &u, before, after);
}

/* Empties the membership mirror, then reports each member that had rank >= 1 as removed. */
static void members_clear(policy_state *ps)
{
	size_t n = ps->nmembers, norgs = ps->norgs;
	hash_index_clear(&ps->member_ix);
	hash_index_clear(&ps->org_ix);
	hash_index_clear(&ps->user_ix);
	ps->nmembers = 0;
	ps->norgs = 0;
	ps->nusers = 0;
	ps->ranked = 0;
	/* The entries are still in the slab (past its new end) until released below. */
	for (size_t i = 0; i < n && ps->ncbs > 0; i++) {
		const member *m = &ps->members[i];
		if (m->rank < 1)
			continue;
		policy_state_uuid o, u;
		memcpy(o.b, m->key, UUID_BYTES);
		memcpy(u.b, m->key + UUID_BYTES, UUID_BYTES);
		notify_all(ps, &o, &u, m->rank, 0);
	}
	for (size_t i = 0; i < norgs; i++) {
		lists_release(ps, ps->orgs[i].heads);
		ps->orgs[i].heads = NULL;
	}
}

/* Removes the old row's key (when present) and sets the new one's, then reports rank changes
 * once per key. 0 or -ENOMEM (nothing changed). */
static int member_change(policy_state *ps, const member_row *old_row, const member_row *nr)
{
	int rc = members_reserve(ps);
	if (rc != 0)
		return fail(ps, rc, "%s.%s: out of memory", ps->tables[T_MEMBERSHIP].schema,
		            ps->tables[T_MEMBERSHIP].name);
	bool o = old_row->present && !old_row->null_key;
	bool n = nr->present && !nr->null_key;
	bool same = o && n && memcmp(old_row->key, nr->key, MEMBER_KEY) == 0;
	int before_o = o ? member_rank(ps, old_row->key) : 0;
	int before_n = n && !same ? member_rank(ps, nr->key) : 0;
	if (o && !same && !member_remove(ps, old_row->key))
		ps->missing_rows++;
	if (same && member_find(ps, nr->key) < 0)
		ps->missing_rows++; /* an update of a row the mirror did not hold: it holds it now */
	if (n)
		member_set(ps, nr->key, nr->rank, !o);
	if (o && !same)
		journal_member(ps, old_row->key, 0, true);
	if (n)
		journal_member(ps, nr->key, nr->rank, false);
	if (o)
		notify(ps, old_row->key, before_o);
	if (n && !same)
		notify(ps, nr->key, before_n);
	return 0;
}

/* ---- rules and subjects ----------------------------------------------------------------- */

static inline long rule_find(const policy_state *ps, const uint8_t id[UUID_BYTES])
{
	return hx_find(&ps->rule_ix, ps->rules, sizeof(rule), id, UUID_BYTES,
	               key_hash(ps->seed, id, UUID_BYTES));
}

static inline long subject_find(const policy_state *ps, const uint8_t key[UUID_BYTES])
{
	return hx_find(&ps->subject_ix, ps->subjects, sizeof(subject), key, UUID_BYTES,
	               key_hash(ps->seed, key, UUID_BYTES));
}

static int rules_reserve(policy_state *ps)
{
	void *p = ps->rules;
	int rc = slab_reserve(&p, &ps->cap_rules, ps->nrules, sizeof(rule));
	ps->rules = p;
	if (rc == 0)
		rc = hash_index_reserve(&ps->rule_ix, 1);
	if (rc == 0) {
		p = ps->subjects;
		rc = slab_reserve(&p, &ps->cap_subjects, ps->nsubjects, sizeof(subject));
		ps->subjects = p;
	}
	if (rc == 0)
		rc = hash_index_reserve(&ps->subject_ix, 1);
	if (rc == 0)
		rc = spares_reserve(ps, false);
	return rc;
}

static void subject_add_row(policy_state *ps, const uint8_t key[UUID_BYTES], int r)
{
	long found = subject_find(ps, key);
	if (found >= 0) {
		rankset_add(ps, &ps->subjects[found].rs, r);
		return;
	}
	size_t i = ps->nsubjects++;
	memcpy(ps->subjects[i].key, key, UUID_BYTES);
	ps->subjects[i].rs = (rankset){.rank = r, .nrows = 1, .counts = NULL};
	hash_index_insert(&ps->subject_ix, key_hash(ps->seed, key, UUID_BYTES), i);
}

static void subject_remove_row(policy_state *ps, const uint8_t key[UUID_BYTES], int r)
{
	long found = subject_find(ps, key);
	if (found < 0 || !rankset_remove(&ps->subjects[found].rs, r))
		return; /* cannot happen: the subject aggregate follows the rules exactly */
	subject *s = &ps->subjects[found];
	if (s->rs.nrows != 0)
		return;
	size_t i = (size_t)found;
	counts_release(ps, s->rs.counts);
	hash_index_remove(&ps->subject_ix, key_hash(ps->seed, s->key, UUID_BYTES), i);
	size_t last = --ps->nsubjects;
	if (i != last) {
		ps->subjects[i] = ps->subjects[last];
		hash_index_repoint(&ps->subject_ix, key_hash(ps->seed, ps->subjects[i].key, UUID_BYTES), last, i);
	}
}

/* Removes the rule with this id; false when there is none. */
static bool rule_remove(policy_state *ps, const uint8_t id[UUID_BYTES])
{
	long found = rule_find(ps, id);
	if (found < 0)
		return false;
	size_t i = (size_t)found;
	rule *ru = &ps->rules[i];
	if (ru->has_subject)
		subject_remove_row(ps, ru->subject, ru->rank);
	hash_index_remove(&ps->rule_ix, key_hash(ps->seed, ru->key, UUID_BYTES), i);
	size_t last = --ps->nrules;
	if (i != last) {
		ps->rules[i] = ps->rules[last];
		hash_index_repoint(&ps->rule_ix, key_hash(ps->seed, ps->rules[i].key, UUID_BYTES), last, i);
	}
	return true;
}

/* Adds a rule, replacing one with the same id. Room reserved (rules_reserve). */
static void rule_add(policy_state *ps, const rule_row *r)
{
	if (rule_remove(ps, r->id))
		ps->replaced_rules++;
	size_t i = ps->nrules++;
	rule *ru = &ps->rules[i];
	memset(ru, 0, sizeof(*ru));
	memcpy(ru->key, r->id, UUID_BYTES);
	ru->has_subject = r->has_subject;
	if (r->has_subject)
		memcpy(ru->subject, r->subject, UUID_BYTES);
	ru->rank = r->rank;
	hash_index_insert(&ps->rule_ix, key_hash(ps->seed, r->id, UUID_BYTES), i);
	if (r->has_subject)
		subject_add_row(ps, r->subject, r->rank);
}

static void rules_clear(policy_state *ps)
{
	for (size_t i = 0; i < ps->nsubjects; i++) {
		counts_release(ps, ps->subjects[i].rs.counts);
		ps->subjects[i].rs.counts = NULL;
	}
	hash_index_clear(&ps->rule_ix);
	hash_index_clear(&ps->subject_ix);
	ps->nrules = 0;
	ps->nsubjects = 0;
}

/* Removes the rule old_id (when has_old) and adds nr (when present). 0 or -ENOMEM. */
static int rule_change(policy_state *ps, bool has_old, const uint8_t old_id[UUID_BYTES], const rule_row *nr)
{
	int rc = rules_reserve(ps);
	if (rc != 0)
		return fail(ps, rc, "%s.%s: out of memory", ps->tables[T_RULES].schema, ps->tables[T_RULES].name);
	if (has_old && !rule_remove(ps, old_id))
		ps->missing_rows++;
	if (nr->present)
		rule_add(ps, nr);
	if (has_old && (!nr->present || memcmp(old_id, nr->id, UUID_BYTES) != 0))
		journal_rule(ps, old_id, NULL);
	if (nr->present)
		journal_rule(ps, nr->id, nr);
	return 0;
}

/* ---- rows from changes and snapshots ---------------------------------------------------- */

int policy_state_role_rank(const policy_state *ps, const char *role, size_t len)
{
	if (role == NULL)
		return 0;
	for (int i = 0; i < ps->nranks; i++)
		if (ps->rank_lens[i] == len && memcmp(ps->rank_names[i], role, len) == 0)
			return i + 1;
	return 0;
}

static bool has_value(const change_value *v) { return v->kind == VALUE_TEXT || v->kind == VALUE_NULL; }

/* The bound cells of tuple t; an unchanged (TOASTed) value is taken from old when it has it. */
static void gather(const table_def *td, const change_value *t, const change_value *old, change_value out[NCOLS])
{
	for (int k = 0; k < NCOLS; k++) {
		out[k] = t[td->idx[k]];
		if (out[k].kind == VALUE_UNCHANGED && old != NULL && old[td->idx[k]].kind == VALUE_TEXT)
			out[k] = old[td->idx[k]];
	}
}

/* A uuid cell: 0 with out filled (or *is_null), -EINVAL when absent or not a uuid. */
static int parse_uuid_cell(policy_state *ps, const char *what, const char *which, const char *col,
                           const change_value *v, uint8_t out[UUID_BYTES], bool *is_null)
{
	char shown[SHOW_MAX];
	*is_null = false;
	if (v->kind == VALUE_NULL) {
		*is_null = true;
		return 0;
	}
	if (v->kind != VALUE_TEXT || v->data == NULL)
		return fail(ps, -EINVAL, "%s: %s: column \"%s\" is missing", what, which, col);
	if (uuid_parse(v->data, v->len, out) < 0)
		return fail(ps, -EINVAL, "%s: %s: column \"%s\" is not a uuid: \"%s\"", what, which, col,
		            show(shown, v->data, v->len));
	return 0;
}

/* A role cell: its rank (NULL -> 0); absent -> -1 when optional, else -EINVAL. */
static int parse_rank_cell(policy_state *ps, const char *what, const char *which, const char *col,
                           const change_value *v, bool optional, int *rank)
{
	if (v->kind == VALUE_NULL) {
		*rank = 0;
		return 0;
	}
	if (v->kind == VALUE_TEXT && v->data != NULL) {
		*rank = policy_state_role_rank(ps, v->data, v->len);
		return 0;
	}
	if (optional) {
		*rank = -1;
		return 0;
	}
	return fail(ps, -EINVAL, "%s: %s: column \"%s\" is missing", what, which, col);
}

static int parse_member_row(policy_state *ps, const char *what, const char *which, const table_def *td,
                            const change_value cells[NCOLS], bool role_optional, member_row *out)
{
	member_row r = {.present = true};
	bool onull, unull;
	int rc = parse_uuid_cell(ps, what, which, td->cols[C_ORG], &cells[C_ORG], r.key, &onull);
	if (rc == 0)
		rc = parse_uuid_cell(ps, what, which, td->cols[C_USER], &cells[C_USER], r.key + UUID_BYTES, &unull);
	if (rc == 0)
		rc = parse_rank_cell(ps, what, which, td->cols[C_ROLE], &cells[C_ROLE], role_optional, &r.rank);
	if (rc != 0)
		return rc;
	r.null_key = onull || unull;
	*out = r;
	return 0;
}

static int parse_rule_row(policy_state *ps, const char *what, const char *which, const table_def *td,
                          const change_value cells[NCOLS], rule_row *out)
{
	rule_row r = {.present = true};
	bool id_null, subject_null;
	int rc = parse_uuid_cell(ps, what, which, td->cols[C_ID], &cells[C_ID], r.id, &id_null);
	if (rc == 0 && id_null)
		rc = fail(ps, -EINVAL, "%s: %s: column \"%s\" is NULL", what, which, td->cols[C_ID]);
	if (rc == 0)
		rc = parse_uuid_cell(ps, what, which, td->cols[C_SUBJECT], &cells[C_SUBJECT], r.subject, &subject_null);
	if (rc == 0)
		rc = parse_rank_cell(ps, what, which, td->cols[C_MIN_ROLE], &cells[C_MIN_ROLE], false, &r.rank);
	if (rc != 0)
		return rc;
	r.has_subject = !subject_null;
	*out = r;
	return 0;
}

static int apply_membership(policy_state *ps, const table_def *td, const change *c, const char *what)
{
	change_value nc[NCOLS], oc[NCOLS];
	member_row nr = {0}, old_row = {0};
	int rc;
	if (c->action == CHANGE_INSERT || c->action == CHANGE_UPDATE) {
		if (c->new_tuple == NULL)
			return fail(ps, -EINVAL, "%s: the change has no new tuple", what);
		gather(td, c->new_tuple, c->old_tuple, nc);
		rc = parse_member_row(ps, what, "new row", td, nc, false, &nr);
		if (rc != 0)
			return rc;
		if (c->action == CHANGE_UPDATE && c->old_tuple == NULL) {
			/* the key did not change (no old tuple): the row with that key is replaced */
			old_row = nr;
			old_row.rank = -1;
		} else if (c->action == CHANGE_UPDATE) {
			gather(td, c->old_tuple, NULL, oc);
			/* an old tuple of key columns only: what it lacks is what the new row says */
			if (!has_value(&oc[C_ORG]))
				oc[C_ORG] = nc[C_ORG];
			if (!has_value(&oc[C_USER]))
				oc[C_USER] = nc[C_USER];
			rc = parse_member_row(ps, what, "old row", td, oc, true, &old_row);
		}
	} else {
		if (c->old_tuple == NULL)
			return fail(ps, -EINVAL, "%s: the change has no old tuple (the table needs REPLICA IDENTITY FULL)",
			            what);
		gather(td, c->old_tuple, NULL, oc);
		rc = parse_member_row(ps, what, "old row", td, oc, true, &old_row);
	}
	if (rc != 0)
		return rc;
	return member_change(ps, &old_row, &nr);
}

static int apply_rules(policy_state *ps, const table_def *td, const change *c, const char *what)
{
	change_value nc[NCOLS], oc[NCOLS];
	rule_row nr = {0};
	uint8_t old_id[UUID_BYTES];
	bool has_old = false, id_null = false;
	int rc = 0;
	if (c->action == CHANGE_INSERT || c->action == CHANGE_UPDATE) {
		if (c->new_tuple == NULL)
			return fail(ps, -EINVAL, "%s: the change has no new tuple", what);
		gather(td, c->new_tuple, c->old_tuple, nc);
		rc = parse_rule_row(ps, what, "new row", td, nc, &nr);
		if (rc != 0)
			return rc;
		if (c->action == CHANGE_UPDATE) {
			has_old = true;
			memcpy(old_id, nr.id, UUID_BYTES);
			if (c->old_tuple != NULL) {
				gather(td, c->old_tuple, NULL, oc);
				if (has_value(&oc[C_ID]))
					rc = parse_uuid_cell(ps, what, "old row", td->cols[C_ID], &oc[C_ID], old_id, &id_null);
			}
		}
	} else {
		if (c->old_tuple == NULL)
			return fail(ps, -EINVAL, "%s: the change has no old tuple (the table needs REPLICA IDENTITY FULL)",
			            what);
		gather(td, c->old_tuple, NULL, oc);
		has_old = true;
		rc = parse_uuid_cell(ps, what, "old row", td->cols[C_ID], &oc[C_ID], old_id, &id_null);
	}
	if (rc == 0 && id_null)
		rc = fail(ps, -EINVAL, "%s: old row: column \"%s\" is NULL", what, td->cols[C_ID]);
	if (rc != 0)
		return rc;
	return rule_change(ps, has_old, old_id, &nr);
}

/* Binds the table's columns in rel (cached per relation id). 0 or -EINVAL. */
static int table_bind(policy_state *ps, table_def *td, const relation *rel, const char *what)
{
	if (td->rel == rel && td->id == rel->id && td->oid == rel->oid && td->ncols == rel->ncols) {
		bool ok = true;
		for (int k = 0; k < NCOLS && ok; k++)
			ok = rel->cols[td->idx[k]].name != NULL && strcmp(rel->cols[td->idx[k]].name, td->cols[k]) == 0;
		if (ok)
			return 0;
	}
	td->rel = NULL;
	int idx[NCOLS];
	for (int k = 0; k < NCOLS; k++) {
		idx[k] = relation_column_index(rel, td->cols[k], strlen(td->cols[k]));
		if (idx[k] < 0)
			return fail(ps, -EINVAL, "%s: column \"%s\" is not in the relation (version %u)", what,
			            td->cols[k], (unsigned)rel->version);
	}
	memcpy(td->idx, idx, sizeof(idx));
	td->rel = rel;
	td->id = rel->id;
	td->oid = rel->oid;
	td->ncols = rel->ncols;
	return 0;
}

static int table_match(const policy_state *ps, const relation *rel)
{
	const char *schema = rel->schema ? rel->schema : "", *name = rel->name ? rel->name : "";
	for (int t = 0; t < 2; t++)
		if (strcmp(name, ps->tables[t].name) == 0 && strcmp(schema, ps->tables[t].schema) == 0)
			return t;
	return -1;
}

bool policy_state_governs(const policy_state *ps, const relation *rel)
{
	return rel != NULL && table_match(ps, rel) >= 0;
}

int policy_state_apply(policy_state *ps, const change *c)
{
	if (ps == NULL || c == NULL)
		return -EINVAL;
	if (c->rel == NULL)
		return 0;
	int t = table_match(ps, c->rel);
	if (t < 0)
		return 0;
	table_def *td = &ps->tables[t];
	if (c->action == CHANGE_TRUNCATE) {
		ps->journaling = ps->journal != NULL;
		for (size_t i = 0; ps->journaling && t == T_MEMBERSHIP && i < ps->nmembers; i++)
			journal_member(ps, ps->members[i].key, 0, true);
		for (size_t i = 0; ps->journaling && t == T_RULES && i < ps->nrules; i++)
			journal_rule(ps, ps->rules[i].key, NULL);
		ps->journaling = false;
		if (t == T_MEMBERSHIP)
			members_clear(ps);
		else
			rules_clear(ps);
		return 0;
	}
	if (c->action != CHANGE_INSERT && c->action != CHANGE_UPDATE && c->action != CHANGE_DELETE)
		return 0;
	char what[160];
	snprintf(what, sizeof(what), "%s.%s: %s", td->schema, td->name, change_action_name(c->action));
	int rc = table_bind(ps, td, c->rel, what);
	if (rc != 0)
		return rc;
	ps->journaling = ps->journal != NULL;
	rc = t == T_MEMBERSHIP ? apply_membership(ps, td, c, what) : apply_rules(ps, td, c, what);
	ps->journaling = false;
	return rc;
}

void policy_state_set_journal(policy_state *ps, policy_state_journal_cb cb, void *arg)
{
	ps->journal = cb;
	ps->journal_arg = cb != NULL ? arg : NULL;
}

int policy_state_load_row(policy_state *ps, int table, const char *const *values)
{
	if (ps == NULL)
		return -EINVAL;
	if (table != POLICY_STATE_MEMBERSHIP && table != POLICY_STATE_RULES)
		return fail(ps, -EINVAL, "load_row: unknown table %d", table);
	if (values == NULL)
		return fail(ps, -EINVAL, "load_row: no values");
	change_value cells[NCOLS];
	for (int k = 0; k < NCOLS; k++) {
		if (values[k] == NULL)
			cells[k] = (change_value){.kind = VALUE_NULL};
		else
			cells[k] = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)strlen(values[k]), .data = values[k]};
	}
	const table_def *td = &ps->tables[table == POLICY_STATE_MEMBERSHIP ? T_MEMBERSHIP : T_RULES];
	char what[160];
	snprintf(what, sizeof(what), "%s.%s: load", td->schema, td->name);
	int rc;
	if (table == POLICY_STATE_MEMBERSHIP) {
		member_row nr, none = {0};
		rc = parse_member_row(ps, what, "row", td, cells, false, &nr);
		if (rc == 0)
			rc = member_change(ps, &none, &nr);
	} else {
		rule_row nr;
		rc = parse_rule_row(ps, what, "row", td, cells, &nr);
		if (rc == 0)
			rc = rule_change(ps, false, NULL, &nr);
	}
	return rc;
}

int policy_state_remove_row(policy_state *ps, int table, const char *const *values)
{
	if (ps == NULL)
		return -EINVAL;
	if (table != POLICY_STATE_MEMBERSHIP && table != POLICY_STATE_RULES)
		return fail(ps, -EINVAL, "remove_row: unknown table %d", table);
	if (values == NULL || values[0] == NULL || (table == POLICY_STATE_MEMBERSHIP && values[1] == NULL))
		return fail(ps, -EINVAL, "remove_row: a key value is missing");
	const table_def *td = &ps->tables[table == POLICY_STATE_MEMBERSHIP ? T_MEMBERSHIP : T_RULES];
	char what[160];
	bool is_null;
	snprintf(what, sizeof(what), "%s.%s: remove", td->schema, td->name);
	change_value cells[2];
	for (int k = 0; k < 2; k++)
		cells[k] = (change_value){.kind = VALUE_TEXT, .len = values[k] ? (uint32_t)strlen(values[k]) : 0,
		                          .data = values[k]};
	if (table == POLICY_STATE_MEMBERSHIP) {
		member_row old_row = {.present = true, .rank = -1}, none = {0};
		int rc = parse_uuid_cell(ps, what, "key", td->cols[C_ORG], &cells[0], old_row.key, &is_null);
		if (rc == 0)
			rc = parse_uuid_cell(ps, what, "key", td->cols[C_USER], &cells[1], old_row.key + UUID_BYTES, &is_null);
		return rc != 0 ? rc : member_change(ps, &old_row, &none);
	}
	uint8_t id[UUID_BYTES];
	rule_row none = {0};
	int rc = parse_uuid_cell(ps, what, "key", td->cols[C_ID], &cells[0], id, &is_null);
	return rc != 0 ? rc : rule_change(ps, true, id, &none);
}

const char *policy_state_error(const policy_state *ps)
{
	return ps != NULL ? ps->err : "no policy state";
}

/* ---- lookups ------------------------------------------------------------------------------ */

int policy_state_rank_uuid(const policy_state *ps, const policy_state_uuid *org_id,
                           const policy_state_uuid *user)
{
	uint8_t key[MEMBER_KEY];
	memcpy(key, org_id->b, UUID_BYTES);
	memcpy(key + UUID_BYTES, user->b, UUID_BYTES);
	return member_rank(ps, key);
}

int policy_state_rank(const policy_state *ps, const char *org_text, size_t org_len, const char *user,
                      size_t user_len)
{
	uint8_t key[MEMBER_KEY];
	if (uuid_parse(org_text, org_len, key) < 0 || uuid_parse(user, user_len, key + UUID_BYTES) < 0)
		return 0;
	return member_rank(ps, key);
}

int policy_state_subject_rank_uuid(const policy_state *ps, const policy_state_uuid *subj)
{
	long i = subject_find(ps, subj->b);
	return i < 0 ? 0 : ps->subjects[i].rs.rank;
}

int policy_state_subject_rank(const policy_state *ps, const char *subj, size_t len)
{
	uint8_t key[UUID_BYTES];
	if (subj == NULL)
		return 0;
	if (uuid_parse(subj, len, key) < 0)
		return POLICY_STATE_RANK_UNREADABLE;
	long i = subject_find(ps, key);
	return i < 0 ? 0 : ps->subjects[i].rs.rank;
}

int policy_state_nranks(const policy_state *ps) { return ps->nranks; }

const char *policy_state_rank_name(const policy_state *ps, int rank)
{
	return rank >= 1 && rank <= ps->nranks ? ps->rank_names[rank - 1] : NULL;
}

int policy_state_members_uuid(const policy_state *ps, const policy_state_uuid *org_id, int min_rank,
                              policy_state_member_cb cb, void *arg)
{
	long oi = org_find(ps, org_id->b);
	if (oi < 0)
		return 0;
	const org *o = &ps->orgs[oi];
	if (min_rank < 1)
		min_rank = 1;
	int calls = 0;
	for (int r = ps->nranks; r >= min_rank; r--) {
		for (uint32_t j = o->heads[r]; j != 0; j = ps->members[j - 1].next) {
			policy_state_uuid u;
			memcpy(u.b, ps->members[j - 1].key + UUID_BYTES, UUID_BYTES);
			calls++;
			if (cb != NULL && cb(arg, &u, r) != 0)
				return calls;
		}
	}
	return calls;
}

int policy_state_members(const policy_state *ps, const char *org_text, size_t org_len, int min_rank,
                         policy_state_member_cb cb, void *arg)
{
	policy_state_uuid o;
	if (uuid_parse(org_text, org_len, o.b) < 0)
		return -EINVAL;
	return policy_state_members_uuid(ps, &o, min_rank, cb, arg);
}

int policy_state_user_orgs(const policy_state *ps, const policy_state_uuid *user_id,
                           policy_state_org_cb cb, void *arg)
{
	long ui = user_find(ps, user_id->b);
	if (ui < 0)
		return 0;
	int calls = 0;
	for (uint32_t j = ps->users[ui].head; j != 0; j = ps->members[j - 1].unext) {
		const member *m = &ps->members[j - 1];
		if (m->rank < 1)
			continue;
		policy_state_uuid o;
		memcpy(o.b, m->key, UUID_BYTES);
		calls++;
		if (cb != NULL && cb(arg, &o, m->rank) != 0)
			return calls;
	}
	return calls;
}

size_t policy_state_member_count(const policy_state *ps, const policy_state_uuid *org_id, int rank)
{
	if (rank < 0 || rank > ps->nranks)
		return 0;
	long oi = org_find(ps, org_id->b);
	if (oi < 0)
		return 0;
	const uint32_t *counts = org_counts(ps, &ps->orgs[oi]);
	if (rank > 0)
		return counts[rank];
	size_t n = 0;
	for (int r = 1; r <= ps->nranks; r++)
		n += counts[r];
	return n;
}

int policy_state_add_change_cb(policy_state *ps, policy_state_change_cb cb, void *arg)
{
	if (cb == NULL)
		return -EINVAL;
	if (ps->ncbs == POLICY_STATE_CALLBACKS_MAX)
		return -ENOSPC;
	ps->cbs[ps->ncbs].cb = cb;
	ps->cbs[ps->ncbs].arg = arg;
	ps->ncbs++;
	return 0;
}

void policy_state_remove_change_cb(policy_state *ps, policy_state_change_cb cb, void *arg)
{
	for (int k = 0; k < ps->ncbs; k++) {
		if (ps->cbs[k].cb == cb && ps->cbs[k].arg == arg) {
			memmove(&ps->cbs[k], &ps->cbs[k + 1], (size_t)(ps->ncbs - k - 1) * sizeof(ps->cbs[0]));
			ps->ncbs--;
			return;
		}
	}
}

/* ---- accounting ----------------------------------------------------------------------------- */

void policy_state_get_stats(const policy_state *ps, policy_state_stats *out)
{
	*out = (policy_state_stats){
		.members = ps->ranked,
		.member_keys = ps->nmembers,
		.member_rows = ps->nmembers,
		.replaced_members = ps->replaced_members,
		.orgs = ps->norgs,
		.rules = ps->nrules,
		.subjects = ps->nsubjects,
		.missing_rows = ps->missing_rows,
		.replaced_rules = ps->replaced_rules,
	};
}

size_t policy_state_footprint(const policy_state *ps)
{
	if (ps == NULL)
		return 0;
	return ps->fixed_bytes + ps->aux_bytes + ps->cap_members * sizeof(member) + ps->cap_orgs * sizeof(org) + ps->cap_users * sizeof(user_ent) +
	       ps->cap_rules * sizeof(rule) + ps->cap_subjects * sizeof(subject) +
	       (ps->member_ix.mask + 1 + ps->org_ix.mask + 1 + ps->user_ix.mask + 1 + ps->rule_ix.mask + 1 + ps->subject_ix.mask + 1) *
	               sizeof(uint64_t);
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

void policy_state_clear(policy_state *ps)
{
	if (ps == NULL)
		return;
	members_clear(ps);
	rules_clear(ps);
}

static void table_fini(table_def *td)
{
	free(td->schema);
	free(td->name);
	for (int k = 0; k < NCOLS; k++)
		free(td->cols[k]);
}

/* Splits "schema.table" (or "table": schema public) and copies the column names. */
static int table_init(table_def *td, const char *qualified, const char *const cols[NCOLS], char *err, size_t *bytes)
{
	const char *dot = strchr(qualified, '.');
	const char *name = dot ? dot + 1 : qualified;
	if (*qualified == '\0' || (dot != NULL && (dot == qualified || *name == '\0' || strchr(name, '.') != NULL))) {
		create_error(err, "table \"%s\": expected \"schema.table\" or \"table\"", qualified);
		return -EINVAL;
	}
	td->schema = dot ? strndup(qualified, (size_t)(dot - qualified)) : strdup("public");
	td->name = strdup(name);
	if (td->schema == NULL || td->name == NULL)
		goto nomem;
	*bytes += strlen(td->schema) + strlen(td->name) + 2;
	for (int k = 0; k < NCOLS; k++) {
		if (cols[k][0] == '\0') {
			create_error(err, "table \"%s\": empty column name", qualified);
			return -EINVAL;
		}
		td->cols[k] = strdup(cols[k]);
		if (td->cols[k] == NULL)
			goto nomem;
		*bytes += strlen(cols[k]) + 1;
	}
	return 0;
nomem:
	create_error(err, "out of memory");
	return -ENOMEM;
}

int policy_state_create(const char *const *rank_names, int nranks, const char *membership_table,
                        const char *rules_table, const policy_state_columns *cols,
                        char err[POLICY_STATE_ERROR_MAX], policy_state **out)
{
	policy_state *ps = NULL;
	int rc = -EINVAL;
	if (out == NULL) {
		create_error(err, "no place for the result");
		goto cleanup;
	}
	if (rank_names == NULL || nranks < 1 || nranks > POLICY_STATE_RANKS_MAX) {
		create_error(err, "rank table: %d names (1 to %d expected)", nranks, POLICY_STATE_RANKS_MAX);
		goto cleanup;
	}
	for (int i = 0; i < nranks; i++) {
		if (rank_names[i] == NULL || rank_names[i][0] == '\0') {
			create_error(err, "rank table: name %d is empty", i + 1);
			goto cleanup;
		}
		for (int j = 0; j < i; j++) {
			if (strcmp(rank_names[i], rank_names[j]) == 0) {
				create_error(err, "rank table: \"%s\" appears twice", rank_names[i]);
				goto cleanup;
			}
		}
	}
	policy_state_columns c = {0};
	if (cols != NULL)
		c = *cols;
	const char *mcols[NCOLS] = {c.org ? c.org : "org_id", c.user ? c.user : "user_id", c.role ? c.role : "role"};
	const char *rcols[NCOLS] = {c.rule_id ? c.rule_id : "id", c.subject ? c.subject : "contact_id",
	                            c.min_role ? c.min_role : "min_role"};

	rc = -ENOMEM;
	ps = calloc(1, sizeof(*ps));
	if (ps == NULL)
		goto nomem;
	ps->fixed_bytes = sizeof(*ps);
	ps->nranks = nranks;
	ps->rank_names = calloc((size_t)nranks, sizeof(*ps->rank_names));
	ps->rank_lens = calloc((size_t)nranks, sizeof(*ps->rank_lens));
	if (ps->rank_names == NULL || ps->rank_lens == NULL)
		goto nomem;
	ps->fixed_bytes += (size_t)nranks * (sizeof(*ps->rank_names) + sizeof(*ps->rank_lens));
	for (int i = 0; i < nranks; i++) {
		ps->rank_names[i] = strdup(rank_names[i]);
		if (ps->rank_names[i] == NULL)
			goto nomem;
		ps->rank_lens[i] = strlen(rank_names[i]);
		ps->fixed_bytes += ps->rank_lens[i] + 1;
	}
	rc = table_init(&ps->tables[T_MEMBERSHIP], membership_table ? membership_table : "public.org_roles", mcols,
	                err, &ps->fixed_bytes);
	if (rc == 0)
		rc = table_init(&ps->tables[T_RULES], rules_table ? rules_table : "public.privacy_rules", rcols, err,
		                &ps->fixed_bytes);
	if (rc != 0)
		goto cleanup;
	if (strcmp(ps->tables[0].schema, ps->tables[1].schema) == 0 &&
	    strcmp(ps->tables[0].name, ps->tables[1].name) == 0) {
		rc = -EINVAL;
		create_error(err, "the membership and rules tables are the same table");
		goto cleanup;
	}
	rc = -ENOMEM;
	if (hash_index_init(&ps->member_ix) != 0 || hash_index_init(&ps->org_ix) != 0 || hash_index_init(&ps->user_ix) != 0 ||
	    hash_index_init(&ps->rule_ix) != 0 ||
	    hash_index_init(&ps->subject_ix) != 0)
		goto nomem;
	if (getrandom(&ps->seed, sizeof(ps->seed), GRND_NONBLOCK) != (ssize_t)sizeof(ps->seed))
		ps->seed = (uint64_t)(uintptr_t)ps * 0x9E3779B97F4A7C15ULL; /* still per state */
	*out = ps;
	return 0;
nomem:
	create_error(err, "out of memory");
cleanup:
	policy_state_destroy(ps);
	return rc;
}

void policy_state_destroy(policy_state *ps)
{
	if (ps == NULL)
		return;
	for (size_t i = 0; i < ps->norgs; i++)
		free(ps->orgs[i].heads);
	for (size_t i = 0; i < ps->nsubjects; i++)
		free(ps->subjects[i].rs.counts);
	free(ps->members);
	free(ps->orgs);
	free(ps->users);
	free(ps->rules);
	free(ps->subjects);
	hash_index_fini(&ps->member_ix);
	hash_index_fini(&ps->org_ix);
	hash_index_fini(&ps->user_ix);
	hash_index_fini(&ps->rule_ix);
	hash_index_fini(&ps->subject_ix);
	free(ps->spare_counts);
	free(ps->spare_lists);
	if (ps->rank_names != NULL)
		for (int i = 0; i < ps->nranks; i++)
			free(ps->rank_names[i]);
	free(ps->rank_names);
	free(ps->rank_lens);
	table_fini(&ps->tables[0]);
	table_fini(&ps->tables[1]);
	free(ps);
}

/* ---- checkpoint ------------------------------------------------------------------------ */

static const char *dump_role(const policy_state *ps, int rank)
{
	return rank >= 1 && rank <= ps->nranks ? ps->rank_names[rank - 1] : "";
}

/* The journal's rows, in the form policy_state_dump gives them (a delete: the key, NULL for the
 * rest). Only while policy_state_apply runs. */
static void journal_member(const policy_state *ps, const uint8_t key[MEMBER_KEY], int rank, bool deleted)
{
	if (!ps->journaling)
		return;
	char a[POLICY_STATE_UUID_TEXT], b[POLICY_STATE_UUID_TEXT];
	policy_state_uuid org_id, user_id;
	memcpy(org_id.b, key, UUID_BYTES);
	memcpy(user_id.b, key + UUID_BYTES, UUID_BYTES);
	policy_state_uuid_format(&org_id, a);
	policy_state_uuid_format(&user_id, b);
	const char *v[3] = {a, b, deleted ? NULL : dump_role(ps, rank)};
	ps->journal(ps->journal_arg, POLICY_STATE_MEMBERSHIP, v, deleted);
}

/* r NULL: the rule id is deleted. */
static void journal_rule(const policy_state *ps, const uint8_t id[UUID_BYTES], const rule_row *r)
{
	if (!ps->journaling)
		return;
	char a[POLICY_STATE_UUID_TEXT], b[POLICY_STATE_UUID_TEXT];
	policy_state_uuid u;
	memcpy(u.b, id, UUID_BYTES);
	policy_state_uuid_format(&u, a);
	const char *v[3] = {a, NULL, NULL};
	if (r != NULL) {
		memcpy(u.b, r->subject, UUID_BYTES);
		policy_state_uuid_format(&u, b);
		v[1] = r->has_subject ? b : NULL;
		v[2] = dump_role(ps, r->rank);
	}
	ps->journal(ps->journal_arg, POLICY_STATE_RULES, v, r == NULL);
}

int policy_state_dump(const policy_state *ps,
                      int (*row_cb)(void *arg, int table, const char *const *values), void *arg)
{
	char a[POLICY_STATE_UUID_TEXT], b[POLICY_STATE_UUID_TEXT];
	for (size_t i = 0; i < ps->nmembers; i++) {
		const member *m = &ps->members[i];
		policy_state_uuid org_id, user_id;
		memcpy(org_id.b, m->key, UUID_BYTES);
		memcpy(user_id.b, m->key + UUID_BYTES, UUID_BYTES);
		policy_state_uuid_format(&org_id, a);
		policy_state_uuid_format(&user_id, b);
		const char *v[3] = {a, b, dump_role(ps, m->rank)};
		int rc = row_cb(arg, POLICY_STATE_MEMBERSHIP, v);
		if (rc != 0)
			return rc;
	}
	for (size_t i = 0; i < ps->nrules; i++) {
		const rule *ru = &ps->rules[i];
		policy_state_uuid id, subj;
		memcpy(id.b, ru->key, UUID_BYTES);
		memcpy(subj.b, ru->subject, UUID_BYTES);
		policy_state_uuid_format(&id, a);
		policy_state_uuid_format(&subj, b);
		const char *v[3] = {a, ru->has_subject ? b : NULL, dump_role(ps, ru->rank)};
		int rc = row_cb(arg, POLICY_STATE_RULES, v);
		if (rc != 0)
			return rc;
	}
	return 0;
}

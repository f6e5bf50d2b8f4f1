/*
 * privacy — the policy stage: two mirrored policy states + compiled policy + keys + the buffer
 * of the transaction in progress, and the per-viewer transform (judge, mask, decrypt, error
 * markers, omit) that both `walcast tail --as` (one viewer) and audience.c (one explicit viewer
 * per audience) use. Output values live in an arena reset at every judged change, so the stage
 * allocates nothing per change once warm.
 *
 * Design. state[PRIVACY_BEFORE] is the policy state as of the last commit; state[PRIVACY_AFTER]
 * equals it between transactions. A transaction's changes are only buffered (txnbuf) until its
 * commit, which replays the buffer up to three times: (1) only when the transaction changed a
 * policy table: its policy changes are applied to AFTER; (2) every change is judged, new row
 * versions with AFTER and old ones with BEFORE; (3) again only for policy transactions: the
 * policy changes are applied to BEFORE, so the two are equal again. Nothing is applied before the
 * commit, so a transaction cut off (privacy_abort) leaves no trace at all; a commit that fails
 * half-way copies the consistent state over the other one (resync), so it leaves none either.
 */
#include "privacy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "buf.h"
#include "log.h"
#include "lsn.h"
#include "policy_state.h"
#include "txnbuf.h"
#include "txnrows.h"

/* Undecryptable values are logged at most once per key id per interval (docs/encryption.md);
 * the lines in between are counted and the count goes into the next line of that key id. */
#define UNDECRYPTABLE_SLOTS 16
#define UNDECRYPTABLE_INTERVAL_MS 60000

typedef struct undecryptable_slot {
	bool used;
	uint32_t key_id;     /* 0: the value names no key (too short, not hex, another version) */
	int64_t last_ms;     /* monotonic time of the last line written for this key id */
	uint64_t suppressed; /* values not logged since then */
} undecryptable_slot;

struct privacy {
	const policy *pol;
	keyring *keys;
	policy_state *state[2]; /* [PRIVACY_BEFORE], [PRIVACY_AFTER] */
	policy_cache *cache;
	txnbuf *tb;
	bool in_txn;      /* between privacy_begin and privacy_commit/privacy_abort */
	bool txn_policy;  /* the transaction in progress changes a policy table */
	bool pending;     /* AFTER may differ from BEFORE (inside a commit of such a transaction) */
	bool broken;      /* a failed commit could not restore the states: refuse to go on */
	txnrows *created; /* while judging a policy transaction: the row versions it created so far */
	privacy_when old_when; /* the state that judges the old row of the change being judged */
	uint32_t xid;
	arena *mem;
	buf scratch;
	policy_action *actions;
	int actions_cap;
	undecryptable_slot undecryptable[UNDECRYPTABLE_SLOTS];
	char err[PRIVACY_ERROR_MAX];
};

static int subject_rank_cb(void *arg, const char *subject, size_t len)
{
	return policy_state_subject_rank(arg, subject, len);
}

int privacy_create(const policy *p, keyring *k, privacy **out, char err[PRIVACY_ERROR_MAX])
{
	const char *names[POLICY_RANKS_MAX];
	char membership[256], rules[256];
	char serr[POLICY_STATE_ERROR_MAX];
	int rc = -ENOMEM;
	privacy *pv = calloc(1, sizeof(*pv));
	if (pv == NULL)
		goto fail;
	pv->pol = p;
	pv->keys = k;
	buf_init(&pv->scratch);
	int nranks = policy_rank_count(p);
	for (int i = 0; i < nranks; i++)
		names[i] = policy_rank_name(p, i + 1);
	const policy_membership *m = policy_membership_source(p);
	const policy_privacy *r = policy_privacy_source(p);
	snprintf(membership, sizeof(membership), "%s.%s", m->schema, m->table);
	if (r != NULL)
		snprintf(rules, sizeof(rules), "%s.%s", r->schema, r->table);
	policy_state_columns cols = {
		.org = m->org, .user = m->user, .role = m->role,
		.subject = r ? r->subject : NULL, .min_role = r ? r->min_role : NULL,
	};
	for (int w = 0; w < 2; w++) {
		rc = policy_state_create(names, nranks, membership, r ? rules : NULL, &cols, serr, &pv->state[w]);
		if (rc < 0) {
			snprintf(err, PRIVACY_ERROR_MAX, "policy state: %s", serr);
			goto fail;
		}
	}
	rc = txnbuf_create(PRIVACY_TXN_MEMORY_DEFAULT, NULL, &pv->tb);
	if (rc < 0)
		goto fail;
	rc = txnrows_create(&pv->created);
	if (rc < 0)
		goto fail;
	rc = policy_cache_create(p, &pv->cache);
	if (rc < 0)
		goto fail;
	pv->mem = arena_create(64 * 1024);
	if (pv->mem == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = pv;
	return 0;
fail:
	if (rc == -ENOMEM)
		snprintf(err, PRIVACY_ERROR_MAX, "out of memory");
	privacy_destroy(pv);
	return rc;
}

void privacy_destroy(privacy *pv)
{
	if (pv == NULL)
		return;
	policy_cache_destroy(pv->cache);
	txnbuf_destroy(pv->tb);
	txnrows_destroy(pv->created);
	policy_state_destroy(pv->state[PRIVACY_BEFORE]);
	policy_state_destroy(pv->state[PRIVACY_AFTER]);
	arena_destroy(pv->mem);
	buf_fini(&pv->scratch);
	free(pv->actions);
	free(pv);
}

const char *privacy_error(const privacy *pv)
{
	return pv->err;
}

int privacy_set_txn_buffer(privacy *pv, size_t mem_limit, const char *spill_dir)
{
	txnbuf *tb = NULL;
	if (pv->in_txn) {
		snprintf(pv->err, sizeof(pv->err), "the transaction buffer cannot change inside a transaction");
		return -EBUSY;
	}
	int rc = txnbuf_create(mem_limit, spill_dir, &tb);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "transaction buffer (%zu bytes, spill directory %s): %s", mem_limit,
		         spill_dir ? spill_dir : "default", strerror(-rc));
		return rc;
	}
	txnbuf_destroy(pv->tb);
	pv->tb = tb;
	return 0;
}

static int load_row_cb(void *arg, int table, const char *const *values)
{
	return policy_state_load_row(arg, table, values);
}

/* Makes state[to] an exact copy of state[from] (a failed commit, a failed load). 0, or the
 * load's error: the stage is then broken (both states cleared) and refuses to go on. */
static int states_resync(privacy *pv, int from, int to)
{
	policy_state_clear(pv->state[to]);
	int rc = policy_state_dump(pv->state[from], load_row_cb, pv->state[to]);
	pv->pending = false;
	if (rc < 0) {
		policy_state_clear(pv->state[from]);
		policy_state_clear(pv->state[to]);
		pv->broken = true;
		snprintf(pv->err, sizeof(pv->err), "the policy state could not be restored: %s",
		         policy_state_error(pv->state[to]));
	}
	return rc;
}

void privacy_clear(privacy *pv)
{
	privacy_abort(pv);
	policy_state_clear(pv->state[PRIVACY_BEFORE]);
	policy_state_clear(pv->state[PRIVACY_AFTER]);
	pv->broken = false;
}

int privacy_load_row(privacy *pv, int table, const char *const *values)
{
	int rc = policy_state_load_row(pv->state[PRIVACY_BEFORE], table, values);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "%s", policy_state_error(pv->state[PRIVACY_BEFORE]));
		return rc;
	}
	rc = policy_state_load_row(pv->state[PRIVACY_AFTER], table, values);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "%s", policy_state_error(pv->state[PRIVACY_AFTER]));
		(void)states_resync(pv, PRIVACY_BEFORE, PRIVACY_AFTER);
	}
	return rc;
}

int privacy_remove_row(privacy *pv, int table, const char *const *values)
{
	int rc = policy_state_remove_row(pv->state[PRIVACY_BEFORE], table, values);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "%s", policy_state_error(pv->state[PRIVACY_BEFORE]));
		return rc;
	}
	rc = policy_state_remove_row(pv->state[PRIVACY_AFTER], table, values);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "%s", policy_state_error(pv->state[PRIVACY_AFTER]));
		(void)states_resync(pv, PRIVACY_BEFORE, PRIVACY_AFTER);
	}
	return rc;
}

/* Runs one load query and feeds its rows (3 text columns) to the state. */
static int load_table(privacy *pv, PGconn *conn, int table, const char *sql, char err[PRIVACY_ERROR_MAX])
{
	PGresult *res = PQexec(conn, sql);
	int rc = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		snprintf(err, PRIVACY_ERROR_MAX, "loading policy state: %s", PQerrorMessage(conn));
		rc = -EIO;
		goto cleanup;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		const char *v[3];
		for (int j = 0; j < 3; j++)
			v[j] = PQgetisnull(res, i, j) ? NULL : PQgetvalue(res, i, j);
		rc = privacy_load_row(pv, table, v);
		if (rc < 0) {
			snprintf(err, PRIVACY_ERROR_MAX, "loading policy state: %s", pv->err);
			goto cleanup;
		}
	}
cleanup:
	PQclear(res);
	return rc;
}

int privacy_load_query(const policy *p, PGconn *conn, int table, char **sql)
{
	const policy_membership *m = policy_membership_source(p);
	const policy_privacy *r = policy_privacy_source(p);
	if (table == POLICY_STATE_RULES && r == NULL)
		return -ENOENT;
	if (table != POLICY_STATE_MEMBERSHIP && table != POLICY_STATE_RULES)
		return -EINVAL;
	bool mem = table == POLICY_STATE_MEMBERSHIP;
	/* membership: org, user, role; rules: id, subject, min_role */
	const char *names[5] = {mem ? m->org : "id", mem ? m->user : r->subject, mem ? m->role : r->min_role,
	                        mem ? m->schema : r->schema, mem ? m->table : r->table};
	char *q[5] = {0};
	int rc = 0;
	for (int i = 0; i < 5 && rc == 0; i++)
		if ((q[i] = PQescapeIdentifier(conn, names[i], strlen(names[i]))) == NULL)
			rc = -ENOMEM;
	*sql = NULL;
	if (rc == 0 && asprintf(sql, "SELECT %s::text, %s::text, %s::text FROM %s.%s", q[0], q[1], q[2], q[3],
	                        q[4]) < 0) {
		*sql = NULL;
		rc = -ENOMEM;
	}
	for (int i = 0; i < 5; i++)
		PQfreemem(q[i]);
	return rc;
}

int privacy_load(privacy *pv, PGconn *conn, char err[PRIVACY_ERROR_MAX])
{
	privacy_clear(pv);
	for (int table = POLICY_STATE_MEMBERSHIP; table <= POLICY_STATE_RULES; table++) {
		char *sql = NULL;
		int rc = privacy_load_query(pv->pol, conn, table, &sql);
		if (rc == -ENOENT)
			break; /* no rules table */
		if (rc == 0)
			rc = load_table(pv, conn, table, sql, err);
		else
			snprintf(err, PRIVACY_ERROR_MAX, "loading policy state: out of memory");
		free(sql);
		if (rc < 0)
			return rc;
	}
	return 0;
}

policy_state *privacy_state(privacy *pv)
{
	return pv->state[PRIVACY_BEFORE];
}

policy_state *privacy_state_at(privacy *pv, privacy_when when)
{
	return pv->state[when == PRIVACY_AFTER ? PRIVACY_AFTER : PRIVACY_BEFORE];
}

bool privacy_pending(const privacy *pv)
{
	return pv->pending;
}

privacy_when privacy_old_state(const privacy *pv)
{
	return pv->old_when;
}

void privacy_viewer_init(privacy *pv, policy_viewer *out, privacy_when when, int rank, const char *uid,
                         size_t uid_len, bool bypass)
{
	*out = (policy_viewer){
		.rank = uid != NULL ? rank : 0,
		.uid = uid,
		.uid_len = uid != NULL ? uid_len : 0,
		.bypass = bypass,
		.subject_rank = subject_rank_cb,
		.subject_arg = privacy_state_at(pv, when),
	};
}

/* The explicit viewer for v and the row tuple: v's rank in the org the tuple names, in the
 * state of when. */
static policy_viewer viewer_for(privacy *pv, const policy_bound *b, const change_value *tuple,
                                const privacy_viewer *v, privacy_when when)
{
	policy_viewer pvw;
	size_t uid_len = v->uid ? strlen(v->uid) : 0;
	int rank = 0;
	const change_value *org = &tuple[policy_bound_org_column(b)];
	if (v->uid != NULL && org->kind == VALUE_TEXT)
		rank = policy_state_rank(privacy_state_at(pv, when), org->data, org->len, v->uid, uid_len);
	privacy_viewer_init(pv, &pvw, when, rank, v->uid, uid_len, v->bypass);
	return pvw;
}

/* Visible? -ENODATA (the decision needs a column the WAL did not carry) counts as hidden. */
static int judge(privacy *pv, const policy_bound *b, const change_value *tuple,
                 const policy_viewer *v, bool *visible)
{
	int rc = policy_row_visible(b, tuple, v, visible);
	if (rc == -ENODATA) {
		*visible = false;
		return 0;
	}
	if (rc < 0)
		snprintf(pv->err, sizeof(pv->err), "judging a row: %s", strerror(-rc));
	return rc;
}

static const char *arena_copy(privacy *pv, const char *s, size_t len)
{
	return arena_strndup(pv->mem, s, len);
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Logs that column col of c's row could not be decrypted (marker says why): the table, column,
 * key id and LSN, never the value. At most one line per key id per UNDECRYPTABLE_INTERVAL_MS;
 * the values in between are counted into the next line. When more key ids fail than there are
 * slots, the slot reported longest ago is reused (its pending count is dropped). */
static void undecryptable_log(privacy *pv, const change *c, int col, const change_value *v,
                              const char *marker)
{
	uint16_t id16 = 0;
	uint32_t key_id = keyring_value_key_id_hex(v->data, v->len, &id16) == 0 ? id16 : 0;
	int64_t now = monotonic_ms();
	undecryptable_slot *s = NULL, *oldest = &pv->undecryptable[0];
	for (size_t i = 0; i < UNDECRYPTABLE_SLOTS && s == NULL; i++) {
		undecryptable_slot *u = &pv->undecryptable[i];
		if (u->used && u->key_id == key_id)
			s = u;
		else if (!u->used || (oldest->used && u->last_ms < oldest->last_ms))
			oldest = u;
	}
	if (s != NULL && now - s->last_ms < UNDECRYPTABLE_INTERVAL_MS) {
		s->suppressed++;
		return;
	}
	uint64_t suppressed = s != NULL ? s->suppressed : 0;
	if (s == NULL)
		s = oldest;
	*s = (undecryptable_slot){.used = true, .key_id = key_id, .last_ms = now};
	char lsn[LSN_TEXT_MAX], key[16] = "none";
	if (key_id != 0)
		snprintf(key, sizeof(key), "%u", (unsigned)key_id);
	log_warn("privacy.undecryptable",
	         "table=%s.%s column=%s key_id=%s lsn=%s: value not decrypted (%s); %llu more with this "
	         "key id not logged in the last %d s",
	         c->rel->schema, c->rel->name, c->rel->cols[col].name, key, lsn_format(c->lsn, lsn), marker,
	         (unsigned long long)suppressed, UNDECRYPTABLE_INTERVAL_MS / 1000);
}

/* Writes the viewer's version of the visible tuple in (a row of c) into out[] (and error
 * markers into errs[]). A column the viewer may not read is NULL whatever the WAL carried,
 * unchanged TOAST included (the masking view shows NULL there); an encrypted column whose
 * context column the row does not carry is NULL with the marker "missing_context" rather than
 * decrypted with the wrong (empty) context. */
static int transform(privacy *pv, const change *c, const policy_bound *b, const change_value *in,
                     int ncols, const policy_viewer *v, change_value *out, const char **errs,
                     bool *any_error)
{
	if (pv->actions_cap < ncols) {
		policy_action *a = realloc(pv->actions, (size_t)ncols * sizeof(*a));
		if (a == NULL)
			return -ENOMEM;
		pv->actions = a;
		pv->actions_cap = ncols;
	}
	int rc = policy_row_columns(b, in, v, pv->actions);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "column rules: %s", strerror(-rc));
		return rc;
	}
	for (int i = 0; i < ncols; i++) {
		out[i] = in[i];
		if (errs != NULL)
			errs[i] = NULL;
		if (in[i].kind != VALUE_TEXT) {
			if (pv->actions[i] == POLICY_OMIT)
				out[i].kind = VALUE_ABSENT;
			else if (pv->actions[i] == POLICY_NULL && in[i].kind == VALUE_UNCHANGED)
				out[i] = (change_value){VALUE_NULL, 0, NULL};
			continue;
		}
		switch (pv->actions[i]) {
		case POLICY_KEEP:
			break;
		case POLICY_OMIT:
			out[i] = (change_value){VALUE_ABSENT, 0, NULL};
			break;
		case POLICY_NULL:
			out[i] = (change_value){VALUE_NULL, 0, NULL};
			break;
		case POLICY_MASK_LAST4:
			buf_clear(&pv->scratch);
			if (policy_mask_last4(&pv->scratch, in[i].data, in[i].len) < 0)
				return -ENOMEM;
			out[i].data = arena_copy(pv, pv->scratch.data, pv->scratch.len);
			out[i].len = (uint32_t)pv->scratch.len;
			if (out[i].data == NULL)
				return -ENOMEM;
			break;
		case POLICY_DECRYPT: {
			int ctx = policy_bound_context_column(b, i);
			const char *cdata = "";
			size_t clen = 0;
			const char *marker = NULL;
			if (ctx >= 0 && in[ctx].kind == VALUE_TEXT)
				cdata = in[ctx].data, clen = in[ctx].len;
			else if (ctx >= 0 && in[ctx].kind != VALUE_NULL)
				marker = "missing_context"; /* absent or unchanged: never guess it */
			int drc = 0;
			char *plain = NULL;
			size_t plen = 0;
			if (marker == NULL && pv->keys == NULL)
				marker = "no_keys";
			if (marker == NULL) {
				/* Decrypted straight into the arena: the plaintext is copied nowhere. */
				size_t cap = in[i].len / 2;
				plain = arena_alloc(pv->mem, cap + 1);
				drc = plain == NULL ? -ENOMEM
				                    : keyring_decrypt_hex_into(pv->keys, in[i].data, in[i].len, cdata,
				                                               clen, plain, cap, &plen);
				if (drc < 0) {
					marker = keyring_error_marker(drc);
					undecryptable_log(pv, c, i, &in[i], marker);
				}
			}
			if (marker != NULL) {
				out[i] = (change_value){VALUE_NULL, 0, NULL};
				if (errs != NULL)
					errs[i] = marker;
				*any_error = true;
				break;
			}
			plain[plen] = '\0';
			out[i].data = plain;
			out[i].len = (uint32_t)plen;
			break;
		}
		}
	}
	return 0;
}

int privacy_bind(privacy *pv, const relation *rel, const policy_bound **out)
{
	char err[POLICY_ERROR_MAX];
	int rc = policy_cache_get(pv->cache, rel, out, err);
	if (rc < 0)
		snprintf(pv->err, sizeof(pv->err), "%s", err);
	return rc;
}

int privacy_view(privacy *pv, const change *c, const policy_bound *b, const policy_viewer *vnew,
                 const policy_viewer *vold, change *out)
{
	*out = *c;
	out->row_errors = NULL;
	if (c->action == CHANGE_MESSAGE || c->action == CHANGE_TRUNCATE || c->rel == NULL || b == NULL)
		return vnew->bypass ? 1 : 0; /* no row to judge, or a table the policy does not govern */
	int ncols = c->rel->ncols;
	const change_value *row = c->action == CHANGE_DELETE ? c->old_tuple : c->new_tuple;
	if (row == NULL)
		return 0;
	bool visible = false;
	int rc = judge(pv, b, row, vnew, &visible);
	if (rc < 0 || !visible)
		return rc < 0 ? rc : 0;
	change_value *nv = arena_alloc(pv->mem, (size_t)ncols * sizeof(change_value));
	const char **errs = arena_alloc(pv->mem, (size_t)ncols * sizeof(char *));
	if (nv == NULL || errs == NULL)
		return -ENOMEM;
	bool any_error = false;
	rc = transform(pv, c, b, row, ncols, vnew, nv, errs, &any_error);
	if (rc < 0)
		return rc;
	if (c->action == CHANGE_DELETE) {
		out->old_tuple = nv;
		out->row_errors = any_error ? errs : NULL;
		return 1;
	}
	out->new_tuple = nv;
	out->row_errors = any_error ? errs : NULL;
	out->old_tuple = NULL;
	if (c->old_tuple != NULL && vold != NULL) {
		/* The old row only when it, too, is visible to the viewer. */
		bool old_visible = false;
		if (judge(pv, b, c->old_tuple, vold, &old_visible) == 0 && old_visible) {
			change_value *ov = arena_alloc(pv->mem, (size_t)ncols * sizeof(change_value));
			bool ignored = false;
			if (ov == NULL)
				return -ENOMEM;
			rc = transform(pv, c, b, c->old_tuple, ncols, vold, ov, NULL, &ignored);
			if (rc < 0)
				return rc;
			out->old_tuple = ov; /* an undecryptable old value is simply null */
		}
	}
	return 1;
}

int privacy_view_as(privacy *pv, const change *c, const privacy_viewer *v, change *out)
{
	const policy_bound *b = NULL;
	if (c->action != CHANGE_MESSAGE && c->action != CHANGE_TRUNCATE && c->rel != NULL) {
		int rc = privacy_bind(pv, c->rel, &b);
		if (rc < 0)
			return rc;
	}
	if (b == NULL) {
		policy_viewer pvw;
		privacy_viewer_init(pv, &pvw, PRIVACY_BEFORE, 0, v->uid, v->uid ? strlen(v->uid) : 0, v->bypass);
		return privacy_view(pv, c, NULL, &pvw, NULL, out);
	}
	bool del = c->action == CHANGE_DELETE;
	const change_value *row = del ? c->old_tuple : c->new_tuple;
	if (row == NULL)
		return 0;
	/* new row versions by the state as of the commit, old ones by the state just before (or as
	 * of the commit for an old version this transaction created: privacy_old_state) */
	policy_viewer vnew = viewer_for(pv, b, row, v, del ? pv->old_when : PRIVACY_AFTER), vold;
	bool has_old = !del && c->old_tuple != NULL;
	if (has_old)
		vold = viewer_for(pv, b, c->old_tuple, v, pv->old_when);
	return privacy_view(pv, c, b, &vnew, has_old ? &vold : NULL, out);
}

/* Is c a change of a policy table that policy_state_apply mirrors? */
static bool policy_change(const privacy *pv, const change *c)
{
	return c->rel != NULL && c->action != CHANGE_MESSAGE &&
	       policy_state_governs(pv->state[PRIVACY_BEFORE], c->rel);
}

static int apply_to(privacy *pv, int w, const change *c)
{
	int rc = policy_state_apply(pv->state[w], c);
	if (rc < 0)
		snprintf(pv->err, sizeof(pv->err), "%s", policy_state_error(pv->state[w]));
	return rc;
}

static int refuse_broken(privacy *pv)
{
	snprintf(pv->err, sizeof(pv->err), "the policy state was lost after an earlier failure; reload it");
	return -EIO;
}

int privacy_judge(privacy *pv, const change *c, privacy_judge_cb cb, void *arg)
{
	arena_reset(pv->mem);
	pv->err[0] = '\0';
	if (pv->broken)
		return refuse_broken(pv);
	bool gov = policy_change(pv, c);
	int rc;
	if (gov) {
		if ((rc = apply_to(pv, PRIVACY_AFTER, c)) < 0)
			return rc; /* the state is unchanged on error */
		pv->pending = true;
	}
	int seen = cb(arg, c);
	pv->pending = false;
	if (!gov)
		return seen;
	if (seen < 0) {
		(void)states_resync(pv, PRIVACY_BEFORE, PRIVACY_AFTER);
		return seen;
	}
	if ((rc = apply_to(pv, PRIVACY_BEFORE, c)) < 0) {
		(void)states_resync(pv, PRIVACY_AFTER, PRIVACY_BEFORE);
		return rc;
	}
	return seen;
}

int privacy_begin(privacy *pv, const change_txn *txn)
{
	pv->err[0] = '\0';
	if (pv->broken)
		return refuse_broken(pv);
	txnbuf_reset(pv->tb); /* a transaction begun again without its commit was cut off */
	pv->in_txn = true;
	pv->txn_policy = false;
	pv->xid = txn != NULL ? txn->xid : 0;
	return 0;
}

int privacy_change(privacy *pv, const change *c, privacy_judge_cb cb, void *arg)
{
	if (c->txn == NULL)
		return privacy_judge(pv, c, cb, arg); /* a non-transactional message: at once */
	pv->err[0] = '\0';
	if (!pv->in_txn) {
		snprintf(pv->err, sizeof(pv->err), "a change of xid %u outside a transaction", (unsigned)c->txn->xid);
		return -EINVAL;
	}
	int rc = txnbuf_append(pv->tb, c);
	if (rc < 0) {
		snprintf(pv->err, sizeof(pv->err), "xid=%u: holding the transaction: %s", (unsigned)pv->xid,
		         rc == -EIO ? "cannot write the spill file" : strerror(-rc));
		return rc;
	}
	pv->txn_policy |= policy_change(pv, c);
	return 0;
}

typedef struct replay_ctx {
	privacy *pv;
	int w;
	privacy_judge_cb cb;
	void *arg;
	bool cb_failed; /* the error is the callback's own */
} replay_ctx;

static int replay_apply_cb(void *arg, const change *c)
{
	replay_ctx *x = arg;
	return policy_change(x->pv, c) ? apply_to(x->pv, x->w, c) : 0;
}

/* A row of a governed table (one whose judgement depends on the policy state)? */
static bool governed_row(privacy *pv, const change *c)
{
	const policy_bound *b = NULL;
	return c->rel != NULL && (c->action == CHANGE_INSERT || c->action == CHANGE_UPDATE ||
	                          c->action == CHANGE_DELETE) &&
	       privacy_bind(pv, c->rel, &b) == 0 && b != NULL;
}

static int replay_judge_cb(void *arg, const change *c)
{
	replay_ctx *x = arg;
	privacy *pv = x->pv;
	arena_reset(pv->mem);
	/* In a transaction that changed policy tables the two states may differ: an old row version
	 * that an earlier change of it created is judged as of the commit, like its creation. */
	bool track = pv->pending && governed_row(pv, c);
	pv->old_when = track && c->old_tuple != NULL && txnrows_has(pv->created, c->rel, c->old_tuple)
	                       ? PRIVACY_AFTER
	                       : PRIVACY_BEFORE;
	int rc = x->cb(x->arg, c);
	pv->old_when = PRIVACY_BEFORE;
	x->cb_failed = rc < 0;
	if (rc < 0)
		return rc;
	if (track && c->new_tuple != NULL && (rc = txnrows_add(pv->created, c->rel, c->new_tuple)) < 0) {
		snprintf(pv->err, sizeof(pv->err), "xid=%u: recording the row versions of the transaction: out of memory",
		         (unsigned)pv->xid);
		return rc;
	}
	return 0;
}

static int replay_failed(privacy *pv, const replay_ctx *x, int rc)
{
	if (rc == -EIO && !x->cb_failed && pv->err[0] == '\0')
		snprintf(pv->err, sizeof(pv->err), "xid=%u: cannot read the spill file back", (unsigned)pv->xid);
	return rc;
}

int privacy_commit(privacy *pv, const change_txn *txn, privacy_judge_cb cb, void *arg)
{
	pv->err[0] = '\0';
	if (pv->broken)
		return refuse_broken(pv);
	if (!pv->in_txn) {
		snprintf(pv->err, sizeof(pv->err), "a commit without a transaction");
		return -EINVAL;
	}
	replay_ctx x = {pv, PRIVACY_AFTER, cb, arg, false};
	int rc = 0;
	if (pv->txn_policy) {
		rc = replay_failed(pv, &x, txnbuf_replay(pv->tb, txn, replay_apply_cb, &x));
		pv->pending = true;
	}
	if (rc == 0)
		rc = replay_failed(pv, &x, txnbuf_replay(pv->tb, txn, replay_judge_cb, &x));
	pv->pending = false;
	if (rc < 0) {
		if (pv->txn_policy)
			(void)states_resync(pv, PRIVACY_BEFORE, PRIVACY_AFTER);
	} else if (pv->txn_policy) {
		x.w = PRIVACY_BEFORE;
		rc = replay_failed(pv, &x, txnbuf_replay(pv->tb, txn, replay_apply_cb, &x));
		if (rc < 0)
			(void)states_resync(pv, PRIVACY_AFTER, PRIVACY_BEFORE);
	}
	txnbuf_reset(pv->tb);
	txnrows_reset(pv->created);
	pv->in_txn = false;
	pv->txn_policy = false;
	return rc;
}

void privacy_abort(privacy *pv)
{
	txnbuf_reset(pv->tb);
	pv->in_txn = false;
	pv->txn_policy = false;
}

void privacy_set_journal(privacy *pv, policy_state_journal_cb cb, void *arg)
{
	policy_state_set_journal(pv->state[PRIVACY_BEFORE], cb, arg);
}

void privacy_get_txn_stats(const privacy *pv, txnbuf_stats *out)
{
	txnbuf_get_stats(pv->tb, out);
}

/* privacy_step's judge: one viewer. */
typedef struct step_ctx {
	privacy *pv;
	const privacy_viewer *v;
	change *out;
} step_ctx;

static int step_cb(void *arg, const change *c)
{
	step_ctx *s = arg;
	return privacy_view_as(s->pv, c, s->v, s->out);
}

int privacy_step(privacy *pv, const change *c, const privacy_viewer *v, change *out)
{
	step_ctx s = {pv, v, out};
	return privacy_judge(pv, c, step_cb, &s);
}

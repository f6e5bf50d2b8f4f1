/*
 * test_policy_state — unit tests for the policy-state mirror (src/policy/policy_state.h): membership
 * and privacy-rule rows applied from hand-made change records (insert, update, delete,
 * truncate), ranks visible exactly from the change that made them, one row per (org, user) as
 * the table's primary key has it (a replayed insert replaces, one delete removes), the max over
 * several rules of a subject, unknown roles, malformed changes refused with the state
 * unchanged, unrelated tables ignored, rebinding after ALTER TABLE, snapshot loading, per-org
 * enumeration and change callbacks, per-user org lists, a randomized comparison against a
 * naive model of the table and the SQL functions, 100k members across 100 orgs, and the lookup
 * rate.
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
#include <time.h>

#include "change.h"
#include "policy_state.h"
#include "relcache.h"

/* ---- fixtures --------------------------------------------------------------------------- */

static const char *const ROLES[] = {"viewer", "member", "analyst", "admin", "owner"};
enum { VIEWER = 1, MEMBER, ANALYST, ADMIN, OWNER };

static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "role", .type_oid = 25, .typmod = -1},
	{.name = "created_at", .type_oid = 1184, .typmod = -1},
};
static const relation roles_rel = {
	.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 4, .cols = roles_cols,
	.replident = 'f', .version = 1,
};

static rel_column rules_cols[] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "contact_id", .type_oid = 2950, .typmod = -1},
	{.name = "min_role", .type_oid = 25, .typmod = -1},
	{.name = "created_at", .type_oid = 1184, .typmod = -1},
};
static const relation rules_rel = {
	.oid = 16410, .schema = "public", .name = "privacy_rules", .ncols = 5, .cols = rules_cols,
	.replident = 'f', .version = 1,
};

/* events has org_id, user_id and contact_id too: it must still be ignored. */
static rel_column events_cols[] = {
	{.name = "id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "user_id", .type_oid = 2950, .typmod = -1},
	{.name = "role", .type_oid = 25, .typmod = -1},
	{.name = "contact_id", .type_oid = 2950, .typmod = -1},
	{.name = "min_role", .type_oid = 25, .typmod = -1},
};
static const relation events_rel = {
	.oid = 16420, .schema = "public", .name = "events", .ncols = 6, .cols = events_cols,
	.replident = 'f', .version = 1,
};

#define O1 "11111111-1111-4111-8111-111111111111"
#define O2 "22222222-2222-4222-8222-222222222222"
#define U1 "aaaaaaaa-0000-4000-8000-000000000001"
#define U2 "aaaaaaaa-0000-4000-8000-000000000002"
#define U3 "aaaaaaaa-0000-4000-8000-000000000003"
#define C1 "cccccccc-0000-4000-8000-000000000001"
#define C2 "cccccccc-0000-4000-8000-000000000002"
#define C3 "cccccccc-0000-4000-8000-000000000003"
#define R1 "eeeeeeee-0000-4000-8000-000000000001"
#define R2 "eeeeeeee-0000-4000-8000-000000000002"
#define R3 "eeeeeeee-0000-4000-8000-000000000003"

/* A value a tuple does not carry (as opposed to NULL). */
static const char absent_marker[] = "<absent>";
#define ABSENT absent_marker

typedef struct row {
	change_value v[8];
} row;

static void set_cell(row *t, const relation *rel, const char *col, const char *val)
{
	int i = relation_column_index(rel, col, strlen(col));
	assert_true(i >= 0);
	if (val == ABSENT)
		t->v[i] = (change_value){.kind = VALUE_ABSENT};
	else if (val == NULL)
		t->v[i] = (change_value){.kind = VALUE_NULL};
	else
		t->v[i] = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)strlen(val), .data = val};
}

/* Every other column carries a plausible text value. */
static change_value *tuple3(row *t, const relation *rel, const char *c1, const char *v1, const char *c2,
                            const char *v2, const char *c3, const char *v3)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < rel->ncols && i < 8; i++)
		t->v[i] = (change_value){.kind = VALUE_TEXT, .len = 22, .data = "2026-11-22 10:00:00+00"};
	set_cell(t, rel, c1, v1);
	set_cell(t, rel, c2, v2);
	set_cell(t, rel, c3, v3);
	return t->v;
}

static change_value *mrow(row *t, const char *org, const char *user, const char *role)
{
	return tuple3(t, &roles_rel, "org_id", org, "user_id", user, "role", role);
}

static change_value *rrow(row *t, const char *id, const char *contact, const char *min_role)
{
	return tuple3(t, &rules_rel, "id", id, "contact_id", contact, "min_role", min_role);
}

static int apply(policy_state *ps, change_action a, const relation *rel, change_value *newt, change_value *oldt)
{
	change_txn txn = {.xid = 750, .commit_lsn = 0x16B37A0};
	change c = {.action = a, .lsn = 0x16B3748, .txn = &txn, .rel = rel, .new_tuple = newt, .old_tuple = oldt};
	return policy_state_apply(ps, &c);
}

static void m_insert(policy_state *ps, const char *org, const char *user, const char *role)
{
	row n;
	assert_int_equal(apply(ps, CHANGE_INSERT, &roles_rel, mrow(&n, org, user, role), NULL), 0);
}

static void m_update(policy_state *ps, const char *oorg, const char *ouser, const char *orole, const char *norg,
                     const char *nuser, const char *nrole)
{
	row n, o;
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, mrow(&n, norg, nuser, nrole), mrow(&o, oorg, ouser, orole)),
	                 0);
}

static void m_delete(policy_state *ps, const char *org, const char *user, const char *role)
{
	row o;
	assert_int_equal(apply(ps, CHANGE_DELETE, &roles_rel, NULL, mrow(&o, org, user, role)), 0);
}

static void r_insert(policy_state *ps, const char *id, const char *contact, const char *min_role)
{
	row n;
	assert_int_equal(apply(ps, CHANGE_INSERT, &rules_rel, rrow(&n, id, contact, min_role), NULL), 0);
}

static void r_update(policy_state *ps, const char *oid, const char *ocontact, const char *omin, const char *nid,
                     const char *ncontact, const char *nmin)
{
	row n, o;
	assert_int_equal(apply(ps, CHANGE_UPDATE, &rules_rel, rrow(&n, nid, ncontact, nmin), rrow(&o, oid, ocontact, omin)),
	                 0);
}

static void r_delete(policy_state *ps, const char *id, const char *contact, const char *min_role)
{
	row o;
	assert_int_equal(apply(ps, CHANGE_DELETE, &rules_rel, NULL, rrow(&o, id, contact, min_role)), 0);
}

static int rank(const policy_state *ps, const char *org, const char *user)
{
	return policy_state_rank(ps, org, strlen(org), user, strlen(user));
}

static int srank(const policy_state *ps, const char *subject)
{
	return policy_state_subject_rank(ps, subject, subject ? strlen(subject) : 0);
}

static policy_state_uuid U(const char *text)
{
	policy_state_uuid u;
	assert_int_equal(policy_state_uuid_parse(text, strlen(text), &u), 0);
	return u;
}

/* Recorded change callbacks. */
#define MAX_EVENTS 256
typedef struct event {
	policy_state_uuid org, user;
	int old_rank, new_rank;
} event;
typedef struct recorder {
	event ev[MAX_EVENTS];
	size_t n;
	size_t total;
	const policy_state *ps; /* when set: the state must already show new_rank */
	bool state_current;
} recorder;

static void record_cb(void *arg, const policy_state_uuid *org, const policy_state_uuid *user, int old_rank,
                      int new_rank)
{
	recorder *r = arg;
	if (r->ps != NULL && policy_state_rank_uuid(r->ps, org, user) != new_rank)
		r->state_current = false;
	if (r->n < MAX_EVENTS)
		r->ev[r->n++] = (event){*org, *user, old_rank, new_rank};
	r->total++;
}

static void assert_event(const recorder *r, size_t i, const char *org, const char *user, int old_rank, int new_rank)
{
	assert_true(i < r->n);
	policy_state_uuid o = U(org), u = U(user);
	assert_memory_equal(r->ev[i].org.b, o.b, 16);
	assert_memory_equal(r->ev[i].user.b, u.b, 16);
	assert_int_equal(r->ev[i].old_rank, old_rank);
	assert_int_equal(r->ev[i].new_rank, new_rank);
}

static int setup(void **state)
{
	policy_state *ps = NULL;
	if (policy_state_create(ROLES, 5, "public.org_roles", "privacy_rules", NULL, NULL, &ps) != 0)
		return -1;
	*state = ps;
	return 0;
}

static int teardown(void **state)
{
	policy_state_destroy(*state);
	return 0;
}

/* ---- creation, roles, uuids ---------------------------------------------------------------- */

static void test_create_errors(void **state)
{
	policy_state *ps = (policy_state *)0x1;
	char err[POLICY_STATE_ERROR_MAX];
	const char *const dup[] = {"viewer", "admin", "viewer"};
	const char *const empty[] = {"viewer", ""};
	const char *const withnull[] = {"viewer", NULL};

	err[0] = '\0';
	assert_int_equal(policy_state_create(dup, 3, NULL, NULL, NULL, err, &ps), -EINVAL);
	assert_non_null(strstr(err, "viewer"));
	assert_ptr_equal(ps, (policy_state *)0x1); /* out untouched on failure */
	assert_int_equal(policy_state_create(empty, 2, NULL, NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(withnull, 2, NULL, NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(ROLES, 0, NULL, NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(ROLES, POLICY_STATE_RANKS_MAX + 1, NULL, NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(NULL, 5, NULL, NULL, NULL, err, &ps), -EINVAL);
	err[0] = '\0';
	assert_int_equal(policy_state_create(ROLES, 5, "public.", NULL, NULL, err, &ps), -EINVAL);
	assert_non_null(strstr(err, "public."));
	assert_int_equal(policy_state_create(ROLES, 5, ".org_roles", NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(ROLES, 5, "a.b.c", NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(ROLES, 5, "", NULL, NULL, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(ROLES, 5, "org_roles", "public.org_roles", NULL, err, &ps), -EINVAL);
	policy_state_columns cols = {.role = ""};
	assert_int_equal(policy_state_create(ROLES, 5, NULL, NULL, &cols, err, &ps), -EINVAL);
	assert_int_equal(policy_state_create(ROLES, 5, NULL, NULL, NULL, NULL, &ps), 0); /* err optional */
	assert_ptr_not_equal(ps, (policy_state *)0x1);
	assert_string_equal(policy_state_error(ps), "");
	policy_state_destroy(ps);
	policy_state_destroy(NULL);
}

static void test_role_rank(void **state)
{
	policy_state *ps = *state;
	assert_int_equal(policy_state_nranks(ps), 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(policy_state_role_rank(ps, ROLES[i], strlen(ROLES[i])), i + 1);
	assert_int_equal(policy_state_role_rank(ps, "superuser", 9), 0);
	assert_int_equal(policy_state_role_rank(ps, "Owner", 5), 0); /* case matters, as in SQL */
	assert_int_equal(policy_state_role_rank(ps, "owner ", 6), 0);
	assert_int_equal(policy_state_role_rank(ps, "own", 3), 0);
	assert_int_equal(policy_state_role_rank(ps, "", 0), 0);
	assert_int_equal(policy_state_role_rank(ps, NULL, 0), 0);
}

static void test_uuid(void **state)
{
	policy_state_uuid a, b, c = {{0}};
	assert_int_equal(policy_state_uuid_parse("0123abcd-ef01-4567-89ab-cdef01234567", 36, &a), 0);
	assert_int_equal(policy_state_uuid_parse("0123ABCD-EF01-4567-89AB-CDEF01234567", 36, &b), 0);
	assert_memory_equal(a.b, b.b, 16);
	const uint8_t want[16] = {0x01, 0x23, 0xab, 0xcd, 0xef, 0x01, 0x45, 0x67,
	                          0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67};
	assert_memory_equal(a.b, want, 16);
	char text[POLICY_STATE_UUID_TEXT];
	policy_state_uuid_format(&b, text);
	assert_string_equal(text, "0123abcd-ef01-4567-89ab-cdef01234567");

	const char *bad[] = {
		"0123abcd-ef01-4567-89ab-cdef0123456",   /* 35 */
		"0123abcd-ef01-4567-89ab-cdef012345678", /* 37 */
		"0123abcg-ef01-4567-89ab-cdef01234567",  /* g */
		"0123abcd-ef01-4567-89ab-cdef0123456 ",  /* space */
		"0123abcdef01-4567-89ab-cdef01234567-",  /* hyphen moved */
		"0123abcd+ef01-4567-89ab-cdef01234567",
		"{123abcd-ef01-4567-89ab-cdef01234567",
		"0123abcd-ef01-4567-89ab-cdef0123456\xc3",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(policy_state_uuid_parse(bad[i], strlen(bad[i]), &c), -EINVAL);
		const uint8_t zero[16] = {0};
		assert_memory_equal(c.b, zero, 16); /* out written only on success */
	}
	/* an embedded NUL within the 36 bytes */
	assert_int_equal(policy_state_uuid_parse("0123abcd-ef01-4567-89ab-cdef0123\0" "4567", 36, &c), -EINVAL);
	assert_int_equal(policy_state_uuid_parse(NULL, 36, &c), -EINVAL);

	/* Every byte value at every position, against a plain reference decoder. */
	char text2[37] = "0123abcd-ef01-4567-89ab-cdef01234567";
	for (int pos = 0; pos < 36; pos++) {
		for (int ch = 0; ch < 256; ch++) {
			char t[37];
			memcpy(t, text2, 37);
			t[pos] = (char)ch;
			bool hyphen = pos == 8 || pos == 13 || pos == 18 || pos == 23;
			bool hex = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
			bool valid = hyphen ? ch == '-' : hex;
			policy_state_uuid got;
			int rc = policy_state_uuid_parse(t, 36, &got);
			if (rc != (valid ? 0 : -EINVAL))
				fail_msg("position %d byte 0x%02x: rc %d", pos, ch, rc);
			if (!valid)
				continue;
			uint8_t ref[16];
			for (int i = 0, k = 0; i < 16; i++) {
				int nib[2];
				for (int h = 0; h < 2; h++, k++) {
					if (t[k] == '-')
						k++;
					int x = (unsigned char)t[k];
					nib[h] = x <= '9' ? x - '0' : (x | 0x20) - 'a' + 10;
				}
				ref[i] = (uint8_t)(nib[0] << 4 | nib[1]);
			}
			assert_memory_equal(got.b, ref, 16);
		}
	}
}

/* ---- membership ------------------------------------------------------------------------- */

static void test_membership_lifecycle(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);

	assert_int_equal(rank(ps, O1, U1), 0);
	m_insert(ps, O1, U1, "admin");
	assert_int_equal(rank(ps, O1, U1), ADMIN);
	assert_int_equal(rank(ps, O2, U1), 0);  /* other org */
	assert_int_equal(rank(ps, O1, U2), 0);  /* other user */
	m_insert(ps, O1, U2, "viewer");
	assert_int_equal(rank(ps, O1, U2), VIEWER);
	assert_int_equal(rec.n, 2);
	assert_event(&rec, 0, O1, U1, 0, ADMIN);
	assert_event(&rec, 1, O1, U2, 0, VIEWER);

	/* Demotion: the old rank holds up to the change, the new one from it on. */
	row n, o;
	change_value *nt = mrow(&n, O1, U1, "viewer"), *ot = mrow(&o, O1, U1, "admin");
	assert_int_equal(rank(ps, O1, U1), ADMIN);
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, nt, ot), 0);
	assert_int_equal(rank(ps, O1, U1), VIEWER);
	assert_int_equal(rec.n, 3);
	assert_event(&rec, 2, O1, U1, ADMIN, VIEWER);

	/* Promotion, upper-case uuid text in the lookup. */
	m_update(ps, O1, U2, "viewer", O1, U2, "owner");
	assert_int_equal(rank(ps, O1, "AAAAAAAA-0000-4000-8000-000000000002"), OWNER);
	assert_event(&rec, 3, O1, U2, VIEWER, OWNER);

	/* An update that leaves the role alone reports nothing. */
	m_update(ps, O1, U2, "owner", O1, U2, "owner");
	assert_int_equal(rec.n, 4);
	assert_int_equal(rank(ps, O1, U2), OWNER);

	m_delete(ps, O1, U1, "viewer");
	assert_int_equal(rank(ps, O1, U1), 0);
	assert_event(&rec, 4, O1, U1, VIEWER, 0);
	m_delete(ps, O1, U2, "owner");
	assert_int_equal(rank(ps, O1, U2), 0);
	assert_event(&rec, 5, O1, U2, OWNER, 0);
	assert_true(rec.state_current);

	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.members, 0);
	assert_int_equal(st.member_keys, 0);
	assert_int_equal(st.member_rows, 0);
	assert_int_equal(st.orgs, 0);
	assert_int_equal(st.missing_rows, 0);

	/* Non-uuid lookups fail closed. */
	m_insert(ps, O1, U1, "owner");
	assert_int_equal(policy_state_rank(ps, "x", 1, U1, 36), 0);
	assert_int_equal(policy_state_rank(ps, NULL, 0, U1, 36), 0);
	assert_int_equal(policy_state_rank(ps, O1, 36, U1, 35), 0);
}

static void test_update_moves_key(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);

	m_insert(ps, O1, U1, "admin");
	/* The org of the row changes: gone from O1, admin in O2, in one change. */
	m_update(ps, O1, U1, "admin", O2, U1, "admin");
	assert_int_equal(rank(ps, O1, U1), 0);
	assert_int_equal(rank(ps, O2, U1), ADMIN);
	assert_int_equal(rec.n, 3);
	assert_event(&rec, 1, O1, U1, ADMIN, 0);
	assert_event(&rec, 2, O2, U1, 0, ADMIN);
	/* The user changes, and the role with it. */
	m_update(ps, O2, U1, "admin", O2, U2, "analyst");
	assert_int_equal(rank(ps, O2, U1), 0);
	assert_int_equal(rank(ps, O2, U2), ANALYST);
	assert_event(&rec, 3, O2, U1, ADMIN, 0);
	assert_event(&rec, 4, O2, U2, 0, ANALYST);
	assert_true(rec.state_current);

	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows, 1);
	assert_int_equal(st.orgs, 1);
	policy_state_uuid o1 = U(O1), o2 = U(O2);
	assert_int_equal(policy_state_member_count(ps, &o1, 0), 0);
	assert_int_equal(policy_state_member_count(ps, &o2, 0), 1);
	assert_int_equal(policy_state_member_count(ps, &o2, ANALYST), 1);
}

static void test_update_without_full_old_row(void **state)
{
	policy_state *ps = *state;
	row n, o;
	m_insert(ps, O1, U1, "admin");
	/* No old tuple (the key did not change, REPLICA IDENTITY DEFAULT): the key's row is replaced. */
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, mrow(&n, O1, U1, "viewer"), NULL), 0);
	assert_int_equal(rank(ps, O1, U1), VIEWER);
	/* A key-only old tuple (role absent) that moves the row to another user. */
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, mrow(&n, O1, U2, "member"), mrow(&o, O1, U1, ABSENT)), 0);
	assert_int_equal(rank(ps, O1, U1), 0);
	assert_int_equal(rank(ps, O1, U2), MEMBER);
	/* An old tuple without the org (an identity index on user_id alone): the org is the new row's. */
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, mrow(&n, O1, U2, "admin"), mrow(&o, ABSENT, U2, ABSENT)), 0);
	assert_int_equal(rank(ps, O1, U2), ADMIN);
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, mrow(&n, O1, U2, "member"), mrow(&o, O1, ABSENT, ABSENT)), 0);
	assert_int_equal(rank(ps, O1, U2), MEMBER);
	/* An unchanged (TOASTed) role in the new tuple comes from the old one. */
	mrow(&n, O1, U2, "x");
	n.v[2] = (change_value){.kind = VALUE_UNCHANGED};
	assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, n.v, mrow(&o, O1, U2, "member")), 0);
	assert_int_equal(rank(ps, O1, U2), MEMBER);
	/* A key-only delete removes the key's row whatever its role. */
	assert_int_equal(apply(ps, CHANGE_DELETE, &roles_rel, NULL, mrow(&o, O1, U2, ABSENT)), 0);
	assert_int_equal(rank(ps, O1, U2), 0);

	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows, 0);
	assert_int_equal(st.missing_rows, 0);
}

static int count_rows_cb(void *arg, int table, const char *const *values)
{
	(void)values;
	if (table == POLICY_STATE_MEMBERSHIP)
		++*(int *)arg;
	return 0;
}

/* org_roles has one row per (org, user) (its primary key), and so has the mirror: an insert of a
 * key it holds — a transaction replayed after a reconnect, or a change older than the snapshot
 * the mirror was loaded from — replaces that row instead of adding a second one, so that the one
 * DELETE of the key removes the membership (issue 6, item 1). */
static void test_keyed_rows(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);

	m_insert(ps, O1, U1, "viewer");
	m_insert(ps, O1, U1, "viewer"); /* the same insert again (replayed) */
	assert_int_equal(rank(ps, O1, U1), VIEWER);
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows, 1);
	assert_int_equal(st.member_keys, 1);
	assert_int_equal(st.replaced_members, 1);
	m_delete(ps, O1, U1, "viewer");
	assert_int_equal(rank(ps, O1, U1), 0); /* one delete removes the membership */
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows, 0);
	assert_int_equal(st.members, 0);

	/* a replayed insert of an older role replaces the newer one: the last change wins, as the
	 * table's row would be after the same statements */
	m_insert(ps, O1, U1, "admin");
	m_insert(ps, O1, U1, "member");
	assert_int_equal(rank(ps, O1, U1), MEMBER);
	m_insert(ps, O1, U1, "owner");
	assert_int_equal(rank(ps, O1, U1), OWNER);
	/* a delete removes the key whatever role its old tuple names */
	m_delete(ps, O1, U1, "analyst");
	assert_int_equal(rank(ps, O1, U1), 0);
	/* a delete of a key the mirror does not hold changes nothing and is counted */
	m_delete(ps, O1, U1, "owner");
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.missing_rows, 1);
	assert_int_equal(st.member_rows, 0);
	/* an update of a key the mirror does not hold sets the new row (and is counted) */
	m_update(ps, O1, U2, "viewer", O1, U2, "analyst");
	assert_int_equal(rank(ps, O1, U2), ANALYST);
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.missing_rows, 2);
	assert_int_equal(st.member_rows, 1);
	/* the dump holds one row per key, and reloads to the same state */
	m_insert(ps, O1, U2, "admin");
	int rows = 0;
	assert_int_equal(policy_state_dump(ps, count_rows_cb, &rows), 0);
	assert_int_equal(rows, 1);

	/* one callback per change of a key's rank; a replaced row of the same role reports nothing */
	int want[][2] = {{0, VIEWER}, {VIEWER, 0}, {0, ADMIN}, {ADMIN, MEMBER}, {MEMBER, OWNER}, {OWNER, 0}};
	assert_int_equal(rec.n, 8);
	for (size_t i = 0; i < 6; i++)
		assert_event(&rec, i, O1, U1, want[i][0], want[i][1]);
	assert_event(&rec, 6, O1, U2, 0, ANALYST);
	assert_event(&rec, 7, O1, U2, ANALYST, ADMIN);
	assert_true(rec.state_current);
}

/* Several change callbacks, in the order added; removal; at most POLICY_STATE_CALLBACKS_MAX. */
static void test_callbacks(void **state)
{
	policy_state *ps = *state;
	recorder a = {.ps = ps, .state_current = true}, b = {.ps = ps, .state_current = true};
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &a), 0);
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &b), 0);
	assert_int_equal(policy_state_add_change_cb(ps, NULL, &b), -EINVAL);
	m_insert(ps, O1, U1, "admin");
	assert_int_equal(a.n, 1);
	assert_int_equal(b.n, 1);
	assert_event(&b, 0, O1, U1, 0, ADMIN);
	policy_state_remove_change_cb(ps, record_cb, &a);
	policy_state_remove_change_cb(ps, record_cb, &a); /* not there any more: nothing */
	m_delete(ps, O1, U1, "admin");
	assert_int_equal(a.n, 1);
	assert_int_equal(b.n, 2);
	assert_event(&b, 1, O1, U1, ADMIN, 0);
	recorder more[POLICY_STATE_CALLBACKS_MAX];
	for (int i = 0; i < POLICY_STATE_CALLBACKS_MAX - 1; i++)
		assert_int_equal(policy_state_add_change_cb(ps, record_cb, &more[i]), 0);
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &more[POLICY_STATE_CALLBACKS_MAX - 1]), -ENOSPC);
	for (int i = 0; i < POLICY_STATE_CALLBACKS_MAX - 1; i++)
		policy_state_remove_change_cb(ps, record_cb, &more[i]);
	policy_state_remove_change_cb(ps, record_cb, &b);
	assert_true(a.state_current && b.state_current);
}

static void test_unknown_role(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);

	m_insert(ps, O1, U1, "superuser");
	assert_int_equal(rank(ps, O1, U1), 0);
	m_insert(ps, O1, U2, NULL);
	assert_int_equal(rank(ps, O1, U2), 0);
	assert_int_equal(rec.n, 0); /* not members: nothing to report */
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_keys, 2);
	assert_int_equal(st.members, 0);
	policy_state_uuid o1 = U(O1);
	assert_int_equal(policy_state_members_uuid(ps, &o1, 0, NULL, NULL), 0);

	/* one row per key: an insert of the key replaces the unknown-role row */
	m_insert(ps, O1, U1, "viewer");
	assert_int_equal(rank(ps, O1, U1), VIEWER);
	m_update(ps, O1, U1, "viewer", O1, U1, "superuser");
	assert_int_equal(rank(ps, O1, U1), 0);
	m_update(ps, O1, U1, "superuser", O1, U1, "admin");
	assert_int_equal(rank(ps, O1, U1), ADMIN);
	assert_int_equal(rec.n, 3);
	assert_event(&rec, 0, O1, U1, 0, VIEWER);
	assert_event(&rec, 1, O1, U1, VIEWER, 0);
	assert_event(&rec, 2, O1, U1, 0, ADMIN);
	/* a NULL org or user matches nothing, as in SQL */
	m_insert(ps, NULL, U3, "owner");
	m_insert(ps, O1, NULL, "owner");
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows, 2);
	m_update(ps, NULL, U3, "owner", O2, U3, "owner");
	assert_int_equal(rank(ps, O2, U3), OWNER);
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.missing_rows, 0);
	assert_int_equal(st.replaced_members, 1);
	assert_int_equal(st.member_keys, 3);
}

/* ---- rules ------------------------------------------------------------------------------- */

static void test_rules(void **state)
{
	policy_state *ps = *state;
	assert_int_equal(srank(ps, C1), 0);
	r_insert(ps, R1, C1, "admin");
	assert_int_equal(srank(ps, C1), ADMIN);
	assert_int_equal(srank(ps, C2), 0);
	assert_int_equal(srank(ps, "CCCCCCCC-0000-4000-8000-000000000001"), ADMIN);

	/* min_role changes */
	r_update(ps, R1, C1, "admin", R1, C1, "analyst");
	assert_int_equal(srank(ps, C1), ANALYST);
	/* the rule moves from C1 to C2 */
	r_update(ps, R1, C1, "analyst", R1, C2, "analyst");
	assert_int_equal(srank(ps, C1), 0);
	assert_int_equal(srank(ps, C2), ANALYST);
	/* a second rule on C2: max */
	r_insert(ps, R2, C2, "owner");
	assert_int_equal(srank(ps, C2), OWNER);
	r_delete(ps, R2, C2, "owner");
	assert_int_equal(srank(ps, C2), ANALYST);
	/* an unknown min_role ranks 0: the contact is visible to every member */
	r_update(ps, R1, C2, "analyst", R1, C2, "nobody");
	assert_int_equal(srank(ps, C2), 0);
	r_delete(ps, R1, C2, "nobody");
	assert_int_equal(srank(ps, C2), 0);

	/* a rule without a contact applies to nothing until it gets one */
	r_insert(ps, R3, NULL, "owner");
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.rules, 1);
	assert_int_equal(st.subjects, 0);
	r_update(ps, R3, NULL, "owner", R3, C3, "owner");
	assert_int_equal(srank(ps, C3), OWNER);

	/* the rule's id changes (a new row id for the same rule) */
	r_update(ps, R3, C3, "owner", R2, C3, "member");
	assert_int_equal(srank(ps, C3), MEMBER);
	r_delete(ps, R2, C3, "member");
	assert_int_equal(srank(ps, C3), 0);
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.rules, 0);
	assert_int_equal(st.subjects, 0);
	assert_int_equal(st.missing_rows, 0);

	/* subject lookups: NULL is "no contact" (0); text that is not a uuid fails closed */
	assert_int_equal(srank(ps, NULL), 0);
	assert_int_equal(srank(ps, "not-a-uuid"), POLICY_STATE_RANK_UNREADABLE);
	assert_true(POLICY_STATE_RANK_UNREADABLE > OWNER);
}

static void test_rules_by_id(void **state)
{
	policy_state *ps = *state;
	row n, o;
	r_insert(ps, R1, C1, "admin");
	/* Without an old tuple the rule is found by its id: the move still leaves C1. */
	assert_int_equal(apply(ps, CHANGE_UPDATE, &rules_rel, rrow(&n, R1, C2, "owner"), NULL), 0);
	assert_int_equal(srank(ps, C1), 0);
	assert_int_equal(srank(ps, C2), OWNER);
	/* A key-only old tuple and a delete that names only the id. */
	assert_int_equal(apply(ps, CHANGE_UPDATE, &rules_rel, rrow(&n, R1, C3, "viewer"), rrow(&o, R1, ABSENT, ABSENT)),
	                 0);
	assert_int_equal(srank(ps, C2), 0);
	assert_int_equal(srank(ps, C3), VIEWER);
	assert_int_equal(apply(ps, CHANGE_DELETE, &rules_rel, NULL, rrow(&o, R1, ABSENT, ABSENT)), 0);
	assert_int_equal(srank(ps, C3), 0);

	/* An insert of an id already held replaces that rule. */
	r_insert(ps, R1, C1, "admin");
	r_insert(ps, R1, C2, "viewer");
	assert_int_equal(srank(ps, C1), 0);
	assert_int_equal(srank(ps, C2), VIEWER);
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.replaced_rules, 1);
	assert_int_equal(st.rules, 1);
	/* A delete of an unknown id is counted, nothing else. */
	r_delete(ps, R3, C2, "owner");
	assert_int_equal(srank(ps, C2), VIEWER);
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.missing_rows, 1);
}

/* ---- truncate, clear, load ------------------------------------------------------------------ */

static void test_truncate(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	m_insert(ps, O1, U1, "admin");
	m_insert(ps, O1, U2, "viewer");
	m_insert(ps, O2, U1, "nobody");
	r_insert(ps, R1, C1, "owner");
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);

	assert_int_equal(apply(ps, CHANGE_TRUNCATE, &roles_rel, NULL, NULL), 0);
	assert_int_equal(rank(ps, O1, U1), 0);
	assert_int_equal(rank(ps, O1, U2), 0);
	assert_int_equal(srank(ps, C1), OWNER); /* the other table is untouched */
	assert_int_equal(rec.n, 2);             /* the rank-0 row was no member */
	for (size_t i = 0; i < rec.n; i++)
		assert_int_equal(rec.ev[i].new_rank, 0);
	assert_true(rec.state_current);
	assert_true((rec.ev[0].old_rank == ADMIN && rec.ev[1].old_rank == VIEWER) ||
	            (rec.ev[0].old_rank == VIEWER && rec.ev[1].old_rank == ADMIN));
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows, 0);
	assert_int_equal(st.member_keys, 0);
	assert_int_equal(st.orgs, 0);
	assert_int_equal(st.rules, 1);

	assert_int_equal(apply(ps, CHANGE_TRUNCATE, &rules_rel, NULL, NULL), 0);
	assert_int_equal(srank(ps, C1), 0);
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.rules, 0);
	assert_int_equal(st.subjects, 0);

	/* the mirror works as before after a truncate */
	m_insert(ps, O1, U1, "member");
	assert_int_equal(rank(ps, O1, U1), MEMBER);
	r_insert(ps, R1, C1, "admin");
	assert_int_equal(srank(ps, C1), ADMIN);
}

static void test_load_and_clear(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);

	const char *m1[] = {O1, U1, "owner"};
	const char *m2[] = {O1, U2, "analyst"};
	const char *m3[] = {O2, U1, NULL};
	const char *r1[] = {R1, C1, "admin"};
	const char *r2[] = {R2, NULL, "admin"};
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_MEMBERSHIP, m1), 0);
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_MEMBERSHIP, m2), 0);
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_MEMBERSHIP, m3), 0);
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_RULES, r1), 0);
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_RULES, r2), 0);
	assert_int_equal(rank(ps, O1, U1), OWNER);
	assert_int_equal(rank(ps, O1, U2), ANALYST);
	assert_int_equal(rank(ps, O2, U1), 0);
	assert_int_equal(srank(ps, C1), ADMIN);
	assert_int_equal(rec.n, 2);

	size_t fp = policy_state_footprint(ps);
	const char *bad_uuid[] = {O1, "nope", "owner"};
	const char *null_id[] = {NULL, C2, "owner"};
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_MEMBERSHIP, bad_uuid), -EINVAL);
	assert_non_null(strstr(policy_state_error(ps), "user_id"));
	assert_non_null(strstr(policy_state_error(ps), "nope"));
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_RULES, null_id), -EINVAL);
	assert_non_null(strstr(policy_state_error(ps), "\"id\""));
	assert_int_equal(policy_state_load_row(ps, 7, m1), -EINVAL);
	assert_non_null(strstr(policy_state_error(ps), "7"));
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_RULES, NULL), -EINVAL);
	assert_int_equal(policy_state_footprint(ps), fp);

	/* clear reports every member as removed, with the state already empty */
	policy_state_clear(ps);
	assert_int_equal(rank(ps, O1, U1), 0);
	assert_int_equal(srank(ps, C1), 0);
	assert_int_equal(rec.n, 4);
	assert_int_equal(rec.ev[2].new_rank, 0);
	assert_int_equal(rec.ev[3].new_rank, 0);
	assert_int_equal(rec.ev[2].old_rank + rec.ev[3].old_rank, OWNER + ANALYST);
	assert_true(rec.state_current);
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows + st.member_keys + st.orgs + st.rules + st.subjects, 0);

	/* reload */
	assert_int_equal(policy_state_load_row(ps, POLICY_STATE_MEMBERSHIP, m2), 0);
	assert_int_equal(rank(ps, O1, U2), ANALYST);
	assert_int_equal(rank(ps, O1, U1), 0);
}

/* ---- malformed input ------------------------------------------------------------------------- */

/* Everything observable about the state, to show that a refused change left it alone. */
typedef struct snapshot {
	policy_state_stats st;
	size_t footprint;
	int ranks[4];
} snapshot;

static snapshot snap(const policy_state *ps)
{
	snapshot s;
	memset(&s, 0, sizeof(s));
	policy_state_get_stats(ps, &s.st);
	s.footprint = policy_state_footprint(ps);
	s.ranks[0] = rank(ps, O1, U1);
	s.ranks[1] = rank(ps, O1, U2);
	s.ranks[2] = srank(ps, C1);
	s.ranks[3] = srank(ps, C2);
	return s;
}

static void assert_refused(policy_state *ps, const snapshot *before, int rc, const char *needle1, const char *needle2)
{
	assert_int_equal(rc, -EINVAL);
	const char *msg = policy_state_error(ps);
	assert_non_null(msg);
	if (strstr(msg, needle1) == NULL || (needle2 != NULL && strstr(msg, needle2) == NULL))
		fail_msg("message \"%s\" lacks \"%s\"/\"%s\"", msg, needle1, needle2 ? needle2 : "");
	snapshot after = snap(ps);
	assert_memory_equal(&after, before, sizeof(after));
}

static void test_malformed(void **state)
{
	policy_state *ps = *state;
	recorder rec = {.ps = ps, .state_current = true};
	m_insert(ps, O1, U1, "admin");
	r_insert(ps, R1, C1, "analyst");
	assert_int_equal(policy_state_add_change_cb(ps, record_cb, &rec), 0);
	snapshot before = snap(ps);
	row n, o;

	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &roles_rel, mrow(&n, O1, "zzz", "owner"), NULL),
	               "user_id", "zzz");
	assert_non_null(strstr(policy_state_error(ps), "public.org_roles"));
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &roles_rel, mrow(&n, "11111111-1111-4111-8111-11111111111g", U2, "owner"), NULL),
	               "org_id", NULL);
	/* a control character in the value is not copied into the message */
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &roles_rel, mrow(&n, O1, "a\nb", "owner"), NULL), "a?b", NULL);
	/* a bound column the tuple does not carry */
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &roles_rel, mrow(&n, O1, U2, ABSENT), NULL), "role",
	               "missing");
	/* the old row of an update is bad: the new row is not applied either */
	assert_refused(ps, &before,
	               apply(ps, CHANGE_UPDATE, &roles_rel, mrow(&n, O1, U2, "owner"), mrow(&o, "bad", U1, "admin")),
	               "old row", "org_id");
	assert_refused(ps, &before, apply(ps, CHANGE_DELETE, &roles_rel, NULL, NULL), "old tuple", NULL);
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &roles_rel, NULL, NULL), "new tuple", NULL);
	assert_refused(ps, &before, apply(ps, CHANGE_DELETE, &roles_rel, NULL, mrow(&o, O1, ABSENT, "admin")), "user_id",
	               "missing");

	/* rules */
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &rules_rel, rrow(&n, NULL, C2, "owner"), NULL), "\"id\"",
	               "NULL");
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &rules_rel, rrow(&n, R2, "C2", "owner"), NULL), "contact_id",
	               NULL);
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &rules_rel, rrow(&n, R2, C2, ABSENT), NULL), "min_role",
	               NULL);
	assert_refused(ps, &before,
	               apply(ps, CHANGE_UPDATE, &rules_rel, rrow(&n, R1, C2, "owner"), rrow(&o, "R1", C1, "analyst")),
	               "old row", "\"id\"");
	assert_refused(ps, &before, apply(ps, CHANGE_DELETE, &rules_rel, NULL, rrow(&o, ABSENT, C1, "analyst")), "id",
	               "missing");

	/* a relation without the role column */
	rel_column two[] = {{.name = "org_id", .type_oid = 2950}, {.name = "user_id", .type_oid = 2950}};
	relation narrow = {.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 2, .cols = two,
	                   .replident = 'f', .version = 9};
	change_value vals[2] = {{.kind = VALUE_TEXT, .len = 36, .data = O1}, {.kind = VALUE_TEXT, .len = 36, .data = U2}};
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &narrow, vals, NULL), "\"role\"", "not in the relation");
	/* and it stays refused (the failure is not cached as a binding) */
	assert_refused(ps, &before, apply(ps, CHANGE_INSERT, &narrow, vals, NULL), "\"role\"", NULL);
	/* the full relation works again afterwards */
	assert_int_equal(rec.n, 0);
	m_insert(ps, O1, U2, "member");
	assert_int_equal(rank(ps, O1, U2), MEMBER);
}

static void test_unrelated_ignored(void **state)
{
	policy_state *ps = *state;
	m_insert(ps, O1, U1, "admin");
	snapshot before = snap(ps);
	row n, o;
	/* an events row with the same column names, even malformed, is none of our business */
	memset(&n, 0, sizeof(n));
	for (int i = 0; i < events_rel.ncols; i++)
		n.v[i] = (change_value){.kind = VALUE_TEXT, .len = 3, .data = "bad"};
	assert_int_equal(apply(ps, CHANGE_INSERT, &events_rel, n.v, NULL), 0);
	assert_int_equal(apply(ps, CHANGE_DELETE, &events_rel, NULL, n.v), 0);
	assert_int_equal(apply(ps, CHANGE_TRUNCATE, &events_rel, NULL, NULL), 0);
	/* same table name in another schema, and a near-miss name */
	relation other = roles_rel;
	other.schema = "audit";
	assert_int_equal(apply(ps, CHANGE_INSERT, &other, mrow(&n, O1, U2, "owner"), NULL), 0);
	assert_int_equal(apply(ps, CHANGE_TRUNCATE, &other, NULL, NULL), 0);
	relation near = roles_rel;
	near.name = "org_roles_archive";
	assert_int_equal(apply(ps, CHANGE_DELETE, &near, NULL, mrow(&o, O1, U1, "admin")), 0);
	/* messages carry no relation */
	change msg = {.action = CHANGE_MESSAGE, .prefix = "walcast", .content = "x", .content_len = 1};
	assert_int_equal(policy_state_apply(ps, &msg), 0);
	snapshot after = snap(ps);
	assert_memory_equal(&after, &before, sizeof(after));
	assert_int_equal(rank(ps, O1, U1), ADMIN);
	assert_int_equal(policy_state_apply(ps, NULL), -EINVAL);
}

/* ALTER TABLE: the relation cache replaces the relation (new version, columns reordered). */
static void test_rebind_on_new_version(void **state)
{
	policy_state *ps = *state;
	relcache *rc = relcache_create();
	assert_non_null(rc);
	const relation *v1 = NULL, *v2 = NULL, *v3 = NULL, *v4 = NULL;
	assert_int_equal(relcache_put(rc, &roles_rel, &v1), 0);
	row n;
	assert_int_equal(apply(ps, CHANGE_INSERT, v1, mrow(&n, O1, U1, "admin"), NULL), 0);
	assert_int_equal(rank(ps, O1, U1), ADMIN);

	rel_column reordered[] = {
		{.name = "role", .type_oid = 25, .typmod = -1},
		{.name = "created_at", .type_oid = 1184, .typmod = -1},
		{.name = "user_id", .type_oid = 2950, .typmod = -1, .key = true},
		{.name = "org_id", .type_oid = 2950, .typmod = -1, .key = true},
	};
	relation d2 = roles_rel;
	d2.cols = reordered;
	assert_int_equal(relcache_put(rc, &d2, &v2), 0);
	assert_int_equal(v2->version, 2);
	change_value t2[4] = {
		{.kind = VALUE_TEXT, .len = 5, .data = "owner"},
		{.kind = VALUE_TEXT, .len = 10, .data = "2026-11-22"},
		{.kind = VALUE_TEXT, .len = 36, .data = U2},
		{.kind = VALUE_TEXT, .len = 36, .data = O1},
	};
	assert_int_equal(apply(ps, CHANGE_INSERT, v2, t2, NULL), 0);
	assert_int_equal(rank(ps, O1, U2), OWNER);
	assert_int_equal(rank(ps, O1, U1), ADMIN);

	/* a column dropped: refused with a message; added back (at the end): works again */
	rel_column dropped[] = {
		{.name = "created_at", .type_oid = 1184, .typmod = -1},
		{.name = "user_id", .type_oid = 2950, .typmod = -1, .key = true},
		{.name = "org_id", .type_oid = 2950, .typmod = -1, .key = true},
	};
	relation d3 = roles_rel;
	d3.cols = dropped;
	d3.ncols = 3;
	assert_int_equal(relcache_put(rc, &d3, &v3), 0);
	change_value t3[3] = {t2[1], {.kind = VALUE_TEXT, .len = 36, .data = U3}, t2[3]};
	assert_int_equal(apply(ps, CHANGE_INSERT, v3, t3, NULL), -EINVAL);
	assert_non_null(strstr(policy_state_error(ps), "\"role\""));
	assert_non_null(strstr(policy_state_error(ps), "version 3"));
	assert_int_equal(rank(ps, O1, U3), 0);

	rel_column readded[] = {dropped[0], dropped[1], dropped[2], {.name = "role", .type_oid = 25, .typmod = -1}};
	relation d4 = roles_rel;
	d4.cols = readded;
	assert_int_equal(relcache_put(rc, &d4, &v4), 0);
	change_value t4[4] = {t3[0], t3[1], t3[2], {.kind = VALUE_TEXT, .len = 6, .data = "viewer"}};
	assert_int_equal(apply(ps, CHANGE_INSERT, v4, t4, NULL), 0);
	assert_int_equal(rank(ps, O1, U3), VIEWER);
	relcache_destroy(rc);

	/* A relation changed in place with a new version (no cache) also rebinds. */
	rel_column cols[4];
	memcpy(cols, roles_cols, sizeof(cols));
	relation inplace = roles_rel;
	inplace.cols = cols;
	assert_int_equal(apply(ps, CHANGE_INSERT, &inplace, mrow(&n, O2, U1, "member"), NULL), 0);
	assert_int_equal(rank(ps, O2, U1), MEMBER);
	rel_column tmp = cols[0];
	cols[0] = cols[1];
	cols[1] = tmp; /* user_id, org_id, role, created_at */
	inplace.version = 2;
	change_value t5[4] = {
		{.kind = VALUE_TEXT, .len = 36, .data = U2},
		{.kind = VALUE_TEXT, .len = 36, .data = O2},
		{.kind = VALUE_TEXT, .len = 5, .data = "admin"},
		{.kind = VALUE_TEXT, .len = 3, .data = "now"},
	};
	assert_int_equal(apply(ps, CHANGE_INSERT, &inplace, t5, NULL), 0);
	assert_int_equal(rank(ps, O2, U2), ADMIN);
	assert_int_equal(rank(ps, U2, O2), 0);
}

static void test_custom_names(void **state)
{
	const char *const levels[] = {"low", "high"};
	policy_state_columns cols = {.org = "tenant", .user = "member", .role = "level", .rule_id = "rid",
	                             .subject = "target", .min_role = "needs"};
	policy_state *ps = NULL;
	assert_int_equal(policy_state_create(levels, 2, "acl.memberships", "acl.rules", &cols, NULL, &ps), 0);
	rel_column mc[] = {{.name = "member"}, {.name = "level"}, {.name = "tenant"}};
	relation mrel = {.oid = 1, .schema = "acl", .name = "memberships", .ncols = 3, .cols = mc, .version = 1};
	change_value mv[3] = {
		{.kind = VALUE_TEXT, .len = 36, .data = U1},
		{.kind = VALUE_TEXT, .len = 4, .data = "high"},
		{.kind = VALUE_TEXT, .len = 36, .data = O1},
	};
	assert_int_equal(apply(ps, CHANGE_INSERT, &mrel, mv, NULL), 0);
	assert_int_equal(rank(ps, O1, U1), 2);
	rel_column rc_[] = {{.name = "rid"}, {.name = "target"}, {.name = "needs"}};
	relation rrel = {.oid = 2, .schema = "acl", .name = "rules", .ncols = 3, .cols = rc_, .version = 1};
	change_value rv[3] = {
		{.kind = VALUE_TEXT, .len = 36, .data = R1},
		{.kind = VALUE_TEXT, .len = 36, .data = C1},
		{.kind = VALUE_TEXT, .len = 3, .data = "low"},
	};
	assert_int_equal(apply(ps, CHANGE_INSERT, &rrel, rv, NULL), 0);
	assert_int_equal(srank(ps, C1), 1);
	/* public.org_roles is now just another table */
	row n;
	assert_int_equal(apply(ps, CHANGE_INSERT, &roles_rel, mrow(&n, O1, U2, "owner"), NULL), 0);
	assert_int_equal(rank(ps, O1, U2), 0);
	policy_state_destroy(ps);
	(void)state;
}

/* ---- enumeration ---------------------------------------------------------------------------- */

typedef struct collected {
	policy_state_uuid users[64];
	int ranks[64];
	int n;
	int stop_after; /* 0 = never */
} collected;

static int collect_cb(void *arg, const policy_state_uuid *user, int r)
{
	collected *c = arg;
	if (c->n < 64) {
		c->users[c->n] = *user;
		c->ranks[c->n] = r;
	}
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after;
}

static bool collected_has(const collected *c, const char *user, int r)
{
	policy_state_uuid u = U(user);
	for (int i = 0; i < c->n && i < 64; i++)
		if (memcmp(c->users[i].b, u.b, 16) == 0)
			return c->ranks[i] == r;
	return false;
}

static void test_members(void **state)
{
	policy_state *ps = *state;
	m_insert(ps, O1, U1, "viewer");
	m_insert(ps, O1, U2, "owner");
	m_insert(ps, O1, U3, "admin");
	m_insert(ps, O1, "aaaaaaaa-0000-4000-8000-000000000004", "admin");
	m_insert(ps, O1, "aaaaaaaa-0000-4000-8000-000000000005", "ghost");
	m_insert(ps, O2, U1, "owner");

	collected c = {0};
	assert_int_equal(policy_state_members(ps, O1, 36, 0, collect_cb, &c), 4);
	assert_int_equal(c.n, 4);
	for (int i = 1; i < c.n; i++)
		assert_true(c.ranks[i - 1] >= c.ranks[i]); /* grouped, highest first */
	assert_true(collected_has(&c, U2, OWNER));
	assert_true(collected_has(&c, U3, ADMIN));
	assert_true(collected_has(&c, "aaaaaaaa-0000-4000-8000-000000000004", ADMIN));
	assert_true(collected_has(&c, U1, VIEWER));
	assert_false(collected_has(&c, "aaaaaaaa-0000-4000-8000-000000000005", 0));

	memset(&c, 0, sizeof(c));
	assert_int_equal(policy_state_members(ps, O1, 36, ADMIN, collect_cb, &c), 3);
	assert_false(collected_has(&c, U1, VIEWER));
	memset(&c, 0, sizeof(c));
	c.stop_after = 2;
	assert_int_equal(policy_state_members(ps, O1, 36, 1, collect_cb, &c), 2);
	assert_int_equal(c.ranks[0], OWNER);
	memset(&c, 0, sizeof(c));
	assert_int_equal(policy_state_members(ps, O2, 36, 1, collect_cb, &c), 1);
	assert_true(collected_has(&c, U1, OWNER));
	assert_int_equal(policy_state_members(ps, "33333333-3333-4333-8333-333333333333", 36, 1, collect_cb, &c), 0);
	assert_int_equal(policy_state_members(ps, "nope", 4, 1, collect_cb, &c), -EINVAL);
	assert_int_equal(policy_state_members(ps, O1, 36, OWNER + 1, collect_cb, &c), 0);

	policy_state_uuid o1 = U(O1);
	assert_int_equal(policy_state_member_count(ps, &o1, 0), 4);
	assert_int_equal(policy_state_member_count(ps, &o1, ADMIN), 2);
	assert_int_equal(policy_state_member_count(ps, &o1, MEMBER), 0);
	assert_int_equal(policy_state_member_count(ps, &o1, OWNER + 1), 0);
	assert_int_equal(policy_state_member_count(ps, &o1, -1), 0);

	/* after a demotion and a removal the groups follow */
	m_update(ps, O1, U2, "owner", O1, U2, "member");
	m_delete(ps, O1, U3, "admin");
	memset(&c, 0, sizeof(c));
	assert_int_equal(policy_state_members(ps, O1, 36, 0, collect_cb, &c), 3);
	assert_true(collected_has(&c, U2, MEMBER));
	assert_false(collected_has(&c, U3, ADMIN));
	assert_int_equal(policy_state_member_count(ps, &o1, OWNER), 0);
	assert_int_equal(policy_state_member_count(ps, &o1, MEMBER), 1);
}

/* ---- randomized comparison with a naive model of the SQL functions ------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

#define M_ORGS 3
#define M_USERS 5
#define M_CONTACTS 4
#define M_RULE_IDS 8
#define M_MAX_ROWS 64
static const char *const M_ROLES[] = {"viewer", "member", "analyst", "admin", "owner", "ghost", NULL};
#define M_NROLES 7

typedef struct model_row {
	int org, user, role; /* role: index into M_ROLES */
} model_row;

static int model_role_rank(int role)
{
	return (role < 5) ? role + 1 : 0;
}

static int model_rank(const model_row *rows, int n, int org, int user)
{
	int best = 0;
	for (int i = 0; i < n; i++)
		if (rows[i].org == org && rows[i].user == user && model_role_rank(rows[i].role) > best)
			best = model_role_rank(rows[i].role);
	return best;
}

static void uuid_text(char out[37], unsigned kind, unsigned n)
{
	snprintf(out, 37, "%08x-0000-4000-8000-%012x", kind, n);
}

static change_value *model_tuple(row *t, char bufs[3][37], const model_row *r)
{
	uuid_text(bufs[0], 0x0a000000, (unsigned)r->org);
	uuid_text(bufs[1], 0x0b000000, (unsigned)r->user);
	return mrow(t, bufs[0], bufs[1], M_ROLES[r->role]);
}

typedef struct model_events {
	int seen[M_ORGS][M_USERS][2]; /* count, then last new rank */
	int old_seen[M_ORGS][M_USERS];
	bool bad;
} model_events;

static void model_cb(void *arg, const policy_state_uuid *org, const policy_state_uuid *user, int old_rank,
                     int new_rank)
{
	model_events *me = arg;
	unsigned o = org->b[15], u = user->b[15];
	if (o >= M_ORGS || u >= M_USERS || old_rank == new_rank) {
		me->bad = true;
		return;
	}
	me->seen[o][u][0]++;
	me->seen[o][u][1] = new_rank;
	me->old_seen[o][u] = old_rank;
}

/* Collected policy_state_user_orgs results. */
typedef struct org_list {
	policy_state_uuid orgs[64];
	int ranks[64];
	int n;
} org_list;

static int org_list_cb(void *arg, const policy_state_uuid *org, int r)
{
	org_list *l = arg;
	if (l->n < 64) {
		l->orgs[l->n] = *org;
		l->ranks[l->n] = r;
		l->n++;
	}
	return 0;
}

static int stop_after_one_cb(void *arg, const policy_state_uuid *org, int r)
{
	(void)org, (void)r;
	++*(int *)arg;
	return 1;
}

static void test_user_orgs(void **state)
{
	policy_state *ps = *state;
	const char *o1 = "0a000000-0000-0000-0000-000000000001", *o2 = "0a000000-0000-0000-0000-000000000002";
	const char *o3 = "0a000000-0000-0000-0000-000000000003";
	const char *u1 = "0b000000-0000-0000-0000-000000000001", *u2 = "0b000000-0000-0000-0000-000000000002";
	policy_state_uuid uu1 = U(u1), uu2 = U(u2);
	org_list l = {0};
	assert_int_equal(policy_state_user_orgs(ps, &uu1, org_list_cb, &l), 0);
	m_insert(ps, o1, u1, "viewer");
	m_insert(ps, o2, u1, "admin");
	m_insert(ps, o3, u1, "nobody"); /* rank 0: held, but not listed */
	m_insert(ps, o1, u2, "owner");
	assert_int_equal(policy_state_user_orgs(ps, &uu1, org_list_cb, &l), 2);
	assert_int_equal(l.n, 2);
	for (int i = 0; i < 2; i++) {
		policy_state_uuid w1 = U(o1);
		bool first = memcmp(l.orgs[i].b, w1.b, 16) == 0;
		assert_int_equal(l.ranks[i], first ? VIEWER : ADMIN);
	}
	int calls = 0;
	assert_int_equal(policy_state_user_orgs(ps, &uu1, stop_after_one_cb, &calls), 1);
	assert_int_equal(calls, 1);
	assert_int_equal(policy_state_user_orgs(ps, &uu1, NULL, NULL), 2);
	/* promotion, removal, the slab moving entries around */
	m_update(ps, o1, u1, "viewer", o1, u1, "owner");
	m_delete(ps, o2, u1, "admin");
	memset(&l, 0, sizeof(l));
	assert_int_equal(policy_state_user_orgs(ps, &uu1, org_list_cb, &l), 1);
	assert_int_equal(l.ranks[0], OWNER);
	m_delete(ps, o1, u2, "owner");
	assert_int_equal(policy_state_user_orgs(ps, &uu2, NULL, NULL), 0);
	m_update(ps, o3, u1, "nobody", o3, u1, "member");
	assert_int_equal(policy_state_user_orgs(ps, &uu1, NULL, NULL), 2);
	policy_state_clear(ps);
	assert_int_equal(policy_state_user_orgs(ps, &uu1, NULL, NULL), 0);
	m_insert(ps, o2, u1, "analyst");
	memset(&l, 0, sizeof(l));
	assert_int_equal(policy_state_user_orgs(ps, &uu1, org_list_cb, &l), 1);
	assert_int_equal(l.ranks[0], ANALYST);
}

static void test_randomized_membership(void **state)
{
	policy_state *ps = *state;
	model_row rows[M_MAX_ROWS];
	int n = 0;
	uint64_t seed = 0x9E3779B97F4A7C15ULL;
	model_events me;
	assert_int_equal(policy_state_add_change_cb(ps, model_cb, &me), 0);

	for (int step = 0; step < 20000; step++) {
		int before[M_ORGS][M_USERS];
		for (int o = 0; o < M_ORGS; o++)
			for (int u = 0; u < M_USERS; u++)
				before[o][u] = model_rank(rows, n, o, u);
		memset(&me, 0, sizeof(me));

		row nt, ot;
		char nb[3][37], ob[3][37];
		unsigned op = (unsigned)(rng_next(&seed) % 100);
		model_row r = {(int)(rng_next(&seed) % M_ORGS), (int)(rng_next(&seed) % M_USERS),
		               (int)(rng_next(&seed) % M_NROLES)};
		int held = -1; /* the row with r's key (org_roles' primary key: at most one) */
		for (int j = 0; j < n; j++)
			if (rows[j].org == r.org && rows[j].user == r.user)
				held = j;
		if (op < 40 && (n < M_MAX_ROWS || held >= 0)) {
			/* insert; of a key already held (a replayed insert): replaces that row */
			assert_int_equal(apply(ps, CHANGE_INSERT, &roles_rel, model_tuple(&nt, nb, &r), NULL), 0);
			if (held >= 0)
				rows[held] = r;
			else
				rows[n++] = r;
		} else if (op < 65 && n > 0) { /* delete a held row, full old tuple */
			int i = (int)(rng_next(&seed) % (uint64_t)n);
			assert_int_equal(apply(ps, CHANGE_DELETE, &roles_rel, NULL, model_tuple(&ot, ob, &rows[i])), 0);
			rows[i] = rows[--n];
		} else if (op < 90 && n > 0) { /* update a held row to any key not held by another */
			int i = (int)(rng_next(&seed) % (uint64_t)n);
			if (held >= 0 && held != i)
				continue; /* the table's primary key refuses it */
			assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, model_tuple(&nt, nb, &r),
			                       model_tuple(&ot, ob, &rows[i])),
			                 0);
			rows[i] = r;
		} else if (op < 97 && n > 0) { /* key-only old tuple (REPLICA IDENTITY DEFAULT) */
			int i = (int)(rng_next(&seed) % (uint64_t)n);
			if (held >= 0 && held != i)
				continue;
			model_tuple(&ot, ob, &rows[i]);
			set_cell(&ot, &roles_rel, "role", ABSENT);
			assert_int_equal(apply(ps, CHANGE_UPDATE, &roles_rel, model_tuple(&nt, nb, &r), ot.v), 0);
			rows[i] = r;
		} else if (op < 98) {
			assert_int_equal(apply(ps, CHANGE_TRUNCATE, &roles_rel, NULL, NULL), 0);
			n = 0;
		} else {
			continue;
		}

		policy_state_stats st;
		policy_state_get_stats(ps, &st);
		assert_int_equal(st.member_rows, (size_t)n);
		assert_int_equal(st.missing_rows, 0);
		assert_false(me.bad);
		size_t ranked = 0;
		for (int o = 0; o < M_ORGS; o++) {
			char ot_[37];
			uuid_text(ot_, 0x0a000000, (unsigned)o);
			policy_state_uuid ou = U(ot_);
			size_t per_rank[6] = {0};
			for (int u = 0; u < M_USERS; u++) {
				char ut[37];
				uuid_text(ut, 0x0b000000, (unsigned)u);
				int want = model_rank(rows, n, o, u);
				if (rank(ps, ot_, ut) != want)
					fail_msg("step %d: rank(%d,%d) = %d, model %d", step, o, u, rank(ps, ot_, ut), want);
				if (want != before[o][u]) {
					assert_int_equal(me.seen[o][u][0], 1);
					assert_int_equal(me.seen[o][u][1], want);
					assert_int_equal(me.old_seen[o][u], before[o][u]);
				} else {
					assert_int_equal(me.seen[o][u][0], 0);
				}
				if (want > 0) {
					per_rank[want]++;
					ranked++;
				}
			}
			for (int k = 1; k <= 5; k++)
				assert_int_equal(policy_state_member_count(ps, &ou, k), per_rank[k]);
			collected c = {0};
			int calls = policy_state_members(ps, ot_, 36, 1, collect_cb, &c);
			assert_int_equal(calls, (int)(per_rank[1] + per_rank[2] + per_rank[3] + per_rank[4] + per_rank[5]));
			for (int i = 0; i < c.n; i++) {
				unsigned u = c.users[i].b[15];
				assert_true(u < M_USERS);
				assert_int_equal(c.ranks[i], model_rank(rows, n, o, (int)u));
				if (i > 0)
					assert_true(c.ranks[i - 1] >= c.ranks[i]);
			}
		}
		assert_int_equal(st.members, ranked);
		/* per user: exactly the orgs with rank >= 1, with that rank */
		for (int u = 0; u < M_USERS; u++) {
			char ut[37];
			uuid_text(ut, 0x0b000000, (unsigned)u);
			policy_state_uuid uu = U(ut);
			org_list ol = {0};
			int calls = policy_state_user_orgs(ps, &uu, org_list_cb, &ol);
			assert_int_equal(calls, ol.n);
			int want_n = 0;
			for (int o = 0; o < M_ORGS; o++)
				want_n += model_rank(rows, n, o, u) > 0;
			assert_int_equal(ol.n, want_n);
			for (int i = 0; i < ol.n; i++) {
				unsigned o = ol.orgs[i].b[15];
				assert_true(o < M_ORGS);
				assert_int_equal(ol.ranks[i], model_rank(rows, n, (int)o, u));
				for (int j = 0; j < i; j++)
					assert_memory_not_equal(ol.orgs[j].b, ol.orgs[i].b, 16);
			}
		}
	}
	policy_state_remove_change_cb(ps, model_cb, &me);
}

static void test_randomized_rules(void **state)
{
	policy_state *ps = *state;
	/* rule id -> (contact or -1 for NULL, role index); present flag */
	struct {
		bool present;
		int contact, role;
	} rules[M_RULE_IDS] = {{0}};
	uint64_t seed = 0xD1B54A32D192ED03ULL;
	for (int step = 0; step < 20000; step++) {
		int id = (int)(rng_next(&seed) % M_RULE_IDS);
		int contact = (int)(rng_next(&seed) % (M_CONTACTS + 1)) - 1;
		int role = (int)(rng_next(&seed) % M_NROLES);
		char idt[37], ct[37], oct[37];
		uuid_text(idt, 0x0e000000, (unsigned)id);
		uuid_text(ct, 0x0c000000, (unsigned)contact);
		row nt, ot;
		if (!rules[id].present) {
			assert_int_equal(apply(ps, CHANGE_INSERT, &rules_rel, rrow(&nt, idt, contact < 0 ? NULL : ct, M_ROLES[role]), NULL),
			                 0);
			rules[id].present = true;
		} else {
			uuid_text(oct, 0x0c000000, (unsigned)rules[id].contact);
			rrow(&ot, idt, rules[id].contact < 0 ? NULL : oct, M_ROLES[rules[id].role]);
			if (rng_next(&seed) % 3 == 0) {
				assert_int_equal(apply(ps, CHANGE_DELETE, &rules_rel, NULL, ot.v), 0);
				rules[id].present = false;
			} else {
				bool no_old = rng_next(&seed) % 2 == 0;
				assert_int_equal(apply(ps, CHANGE_UPDATE, &rules_rel,
				                       rrow(&nt, idt, contact < 0 ? NULL : ct, M_ROLES[role]), no_old ? NULL : ot.v),
				                 0);
			}
		}
		if (rules[id].present) {
			rules[id].contact = contact;
			rules[id].role = role;
		}
		for (int c = 0; c < M_CONTACTS; c++) {
			int want = 0;
			for (int r = 0; r < M_RULE_IDS; r++)
				if (rules[r].present && rules[r].contact == c && model_role_rank(rules[r].role) > want)
					want = model_role_rank(rules[r].role);
			char t[37];
			uuid_text(t, 0x0c000000, (unsigned)c);
			if (srank(ps, t) != want)
				fail_msg("step %d: subject %d rank %d, model %d", step, c, srank(ps, t), want);
		}
	}
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.missing_rows, 0);
	assert_int_equal(st.replaced_rules, 0);
}

/* ---- scale: 100k members across 100 orgs --------------------------------------------------- */

#define SCALE_MEMBERS 100000
#define SCALE_ORGS 100

typedef struct scale_rec {
	int8_t *rank;  /* per member index: the rank the callbacks say */
	size_t calls;
	bool bad;
} scale_rec;

static void scale_cb(void *arg, const policy_state_uuid *org, const policy_state_uuid *user, int old_rank,
                     int new_rank)
{
	scale_rec *s = arg;
	unsigned i = (unsigned)user->b[12] << 24 | (unsigned)user->b[13] << 16 | (unsigned)user->b[14] << 8 | user->b[15];
	unsigned o = org->b[15];
	s->calls++;
	if (i >= SCALE_MEMBERS || o != i % SCALE_ORGS || s->rank[i] != old_rank || old_rank == new_rank) {
		s->bad = true;
		return;
	}
	s->rank[i] = (int8_t)new_rank;
}

typedef struct scale_seen {
	uint8_t *seen;
	int org;
	int last_rank;
	const int8_t *want;
	bool bad;
} scale_seen;

static int scale_member_cb(void *arg, const policy_state_uuid *user, int r)
{
	scale_seen *s = arg;
	unsigned i = (unsigned)user->b[12] << 24 | (unsigned)user->b[13] << 16 | (unsigned)user->b[14] << 8 | user->b[15];
	if (i >= SCALE_MEMBERS || (int)(i % SCALE_ORGS) != s->org || s->seen[i] || s->want[i] != r || r > s->last_rank)
		s->bad = true;
	else
		s->seen[i] = 1;
	s->last_rank = r;
	return 0;
}

static int scale_role(unsigned i) { return (int)(i * 7 % 6); } /* 0..5: index into M_ROLES, 5 = ghost */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_scale(void **state)
{
	policy_state *ps = *state;
	char (*users)[37] = malloc(SCALE_MEMBERS * sizeof(*users));
	char (*orgs)[37] = malloc(SCALE_ORGS * sizeof(*orgs));
	int8_t *want = calloc(SCALE_MEMBERS, 1);
	scale_rec rec = {.rank = calloc(SCALE_MEMBERS, 1)};
	uint8_t *seen = malloc(SCALE_MEMBERS);
	assert_non_null(users);
	assert_non_null(orgs);
	assert_non_null(want);
	assert_non_null(rec.rank);
	assert_non_null(seen);
	for (unsigned o = 0; o < SCALE_ORGS; o++)
		uuid_text(orgs[o], 0x0a000000, o);
	for (unsigned i = 0; i < SCALE_MEMBERS; i++)
		uuid_text(users[i], 0x0b000000, i);
	assert_int_equal(policy_state_add_change_cb(ps, scale_cb, &rec), 0);

	for (unsigned i = 0; i < SCALE_MEMBERS; i++) {
		int role = scale_role(i);
		m_insert(ps, orgs[i % SCALE_ORGS], users[i], M_ROLES[role]);
		want[i] = (int8_t)model_role_rank(role);
	}
	assert_false(rec.bad);
	size_t ranked = 0;
	for (unsigned i = 0; i < SCALE_MEMBERS; i++)
		ranked += want[i] > 0;
	assert_int_equal(rec.calls, ranked);
	assert_memory_equal(rec.rank, want, SCALE_MEMBERS);

	size_t fp = policy_state_footprint(ps);
	printf("policy_state: %d members in %d orgs: footprint %zu bytes (%.1f per row)\n", SCALE_MEMBERS, SCALE_ORGS, fp,
	       (double)fp / SCALE_MEMBERS);
	assert_true(fp < (size_t)SCALE_MEMBERS * 256);

	/* Changes, spread over every org: a tenth of the members demoted to viewer, a tenth
	 * removed. */
	for (unsigned i = 0; i < SCALE_MEMBERS; i++) {
		unsigned o = i % SCALE_ORGS;
		const char *role = M_ROLES[scale_role(i)];
		if ((i / SCALE_ORGS) % 10 == 0) {
			m_update(ps, orgs[o], users[i], role, orgs[o], users[i], "viewer");
			want[i] = VIEWER;
		} else if ((i / SCALE_ORGS) % 10 == 1) {
			m_delete(ps, orgs[o], users[i], role);
			want[i] = 0;
		}
	}
	assert_false(rec.bad);
	assert_memory_equal(rec.rank, want, SCALE_MEMBERS);

	/* lookups: each member in its org, and in a wrong org */
	for (unsigned i = 0; i < SCALE_MEMBERS; i++) {
		if (rank(ps, orgs[i % SCALE_ORGS], users[i]) != want[i])
			fail_msg("member %u: rank %d, want %d", i, rank(ps, orgs[i % SCALE_ORGS], users[i]), want[i]);
		assert_int_equal(rank(ps, orgs[(i + 1) % SCALE_ORGS], users[i]), 0);
	}
	/* enumeration per org: every member exactly once, with its rank, grouped */
	memset(seen, 0, SCALE_MEMBERS);
	size_t total = 0;
	for (int o = 0; o < SCALE_ORGS; o++) {
		scale_seen s = {.seen = seen, .org = o, .last_rank = 1000, .want = want};
		int calls = policy_state_members(ps, orgs[o], 36, 1, scale_member_cb, &s);
		assert_false(s.bad);
		assert_true(calls > 0);
		total += (size_t)calls;
		policy_state_uuid ou = U(orgs[o]);
		assert_int_equal(policy_state_member_count(ps, &ou, 0), (size_t)calls);
	}
	ranked = 0;
	for (unsigned i = 0; i < SCALE_MEMBERS; i++) {
		ranked += want[i] > 0;
		assert_int_equal(seen[i], want[i] > 0);
	}
	assert_int_equal(total, ranked);

	/* lookup rate (text keys, as a change carries them): members, misses in between */
	uint32_t *probe = malloc(1000000 * sizeof(*probe));
	assert_non_null(probe);
	uint64_t seed = 42;
	for (size_t k = 0; k < 1000000; k++)
		probe[k] = (uint32_t)(rng_next(&seed) % SCALE_MEMBERS);
	long sum = 0;
	double t0 = now_s();
	int rounds = 3;
	for (int round = 0; round < rounds; round++)
		for (size_t k = 0; k < 1000000; k++) {
			uint32_t i = probe[k];
			sum += policy_state_rank(ps, orgs[(i + (k & 7 ? 0 : 1)) % SCALE_ORGS], 36, users[i], 36);
		}
	double dt = now_s() - t0;
	double rate = rounds * 1e6 / dt;
	/* pre-parsed keys */
	policy_state_uuid *ou = malloc(SCALE_ORGS * sizeof(*ou)), *uu = malloc(SCALE_MEMBERS * sizeof(*uu));
	assert_non_null(ou);
	assert_non_null(uu);
	for (unsigned o = 0; o < SCALE_ORGS; o++)
		ou[o] = U(orgs[o]);
	for (unsigned i = 0; i < SCALE_MEMBERS; i++)
		uu[i] = U(users[i]);
	t0 = now_s();
	for (int round = 0; round < rounds; round++)
		for (size_t k = 0; k < 1000000; k++) {
			uint32_t i = probe[k];
			sum += policy_state_rank_uuid(ps, &ou[(i + (k & 7 ? 0 : 1)) % SCALE_ORGS], &uu[i]);
		}
	double rate_bin = rounds * 1e6 / (now_s() - t0);
	/* a hot working set: 1000 (org, user) pairs, as a few subscribers per change would ask */
	t0 = now_s();
	for (int round = 0; round < rounds; round++)
		for (size_t k = 0; k < 1000000; k++) {
			uint32_t i = probe[k & 1023] % 1000;
			sum += policy_state_rank(ps, orgs[i % SCALE_ORGS], 36, users[i], 36);
		}
	double rate_hot = rounds * 1e6 / (now_s() - t0);
	printf("policy_state_rank: %.1fM lookups/s (text, random over %d members), %.1fM/s (parsed keys), "
	       "%.1fM/s (text, 1000 hot pairs) [checksum %ld]\n",
	       rate / 1e6, SCALE_MEMBERS, rate_bin / 1e6, rate_hot / 1e6, sum);
	/* printed, not asserted: a wall-clock floor failed on a loaded machine (the rate is
	 * bench/policy_bench's to measure, against a reference in the same run) */

	/* remove everything: each member reported once more, down to 0 */
	for (unsigned i = 0; i < SCALE_MEMBERS; i++) {
		unsigned o = i % SCALE_ORGS;
		if ((i / SCALE_ORGS) % 10 == 1)
			continue;
		m_delete(ps, orgs[o], users[i], (i / SCALE_ORGS) % 10 == 0 ? "viewer" : M_ROLES[scale_role(i)]);
		want[i] = 0;
	}
	assert_false(rec.bad);
	assert_memory_equal(rec.rank, want, SCALE_MEMBERS);
	policy_state_stats st;
	policy_state_get_stats(ps, &st);
	assert_int_equal(st.member_rows + st.member_keys + st.orgs + st.members, 0);
	assert_int_equal(st.missing_rows, 0);
	/* memory does not grow past the high-water mark when the rows come back */
	size_t fp_empty = policy_state_footprint(ps);
	for (unsigned i = 0; i < SCALE_MEMBERS; i++)
		m_insert(ps, orgs[i % SCALE_ORGS], users[i], "member");
	assert_true(policy_state_footprint(ps) <= fp_empty + (size_t)SCALE_ORGS * 64 + 4096);
	policy_state_remove_change_cb(ps, scale_cb, &rec);

	free(ou);
	free(uu);
	free(probe);
	free(seen);
	free(rec.rank);
	free(want);
	free(orgs);
	free(users);
}

/* Many rules and subjects, with the rate of subject lookups. */
static void test_scale_rules(void **state)
{
	policy_state *ps = *state;
	enum { N = 50000 };
	char (*ids)[37] = malloc(N * sizeof(*ids)), (*contacts)[37] = malloc(N * sizeof(*contacts));
	assert_non_null(ids);
	assert_non_null(contacts);
	for (unsigned i = 0; i < N; i++) {
		uuid_text(ids[i], 0x0e000000, i);
		uuid_text(contacts[i], 0x0c000000, i);
		r_insert(ps, ids[i], contacts[i / 2], M_ROLES[i % 5]); /* two rules per even contact */
	}
	for (unsigned c = 0; c < N; c++) {
		int want = c < N / 2 ? (int)((2 * c + 1) % 5 > (2 * c) % 5 ? (2 * c + 1) % 5 : (2 * c) % 5) + 1 : 0;
		assert_int_equal(srank(ps, contacts[c]), want);
	}
	for (unsigned i = 0; i < N; i += 2)
		r_delete(ps, ids[i], contacts[i / 2], M_ROLES[i % 5]);
	for (unsigned c = 0; c < N / 2; c++)
		assert_int_equal(srank(ps, contacts[c]), (int)((2 * c + 1) % 5) + 1);
	double t0 = now_s();
	long sum = 0;
	for (size_t k = 0; k < 1000000; k++)
		sum += srank(ps, contacts[k % N]);
	printf("policy_state_subject_rank: %.1fM lookups/s over %d rules [checksum %ld]\n", 1.0 / (now_s() - t0),
	       N / 2, sum);
	free(ids);
	free(contacts);
}

/* ---- checkpoint: dump and reload ---- */

static int dump_stop(void *arg, int table, const char *const *v)
{
	return 7;
}


typedef struct dump_lines {
	char lines[512][128];
	int n;
} dump_lines;

static int dump_collect(void *arg, int table, const char *const *v)
{
	dump_lines *d = arg;
	assert_true(d->n < 512);
	snprintf(d->lines[d->n++], 128, "%d %s %s %s", table, v[0], v[1] ? v[1] : "NULL", v[2]);
	return 0;
}

static int dump_load(void *arg, int table, const char *const *v)
{
	return policy_state_load_row(arg, table, v);
}

static int line_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static policy_state *new_state(void)
{
	policy_state *ps = NULL;
	assert_int_equal(policy_state_create(ROLES, 5, "public.org_roles", "privacy_rules", NULL, NULL, &ps), 0);
	return ps;
}

static void test_dump_reload(void **state)
{
	policy_state *a = new_state(), *b = new_state();
	char org[64], user[64], id[64], subj[64];
	for (int i = 0; i < 60; i++) {
		snprintf(org, sizeof(org), "00000000-0000-4000-8000-%012d", i % 4);
		snprintf(user, sizeof(user), "11111111-0000-4000-8000-%012d", i % 17);
		const char *role = (const char *[]){"viewer", "member", "analyst", "admin", "owner", "bogus"}[i % 6];
		const char *m[3] = {org, user, role};
		assert_int_equal(policy_state_load_row(a, POLICY_STATE_MEMBERSHIP, m), 0); /* duplicates too */
		snprintf(id, sizeof(id), "22222222-0000-4000-8000-%012d", i % 9);
		snprintf(subj, sizeof(subj), "33333333-0000-4000-8000-%012d", i % 5);
		const char *r[3] = {id, i % 7 == 0 ? NULL : subj, role};
		assert_int_equal(policy_state_load_row(a, POLICY_STATE_RULES, r), 0);
	}
	assert_int_equal(policy_state_dump(a, dump_load, b), 0);
	for (int o = 0; o < 4; o++)
		for (int u = 0; u < 17; u++) {
			snprintf(org, sizeof(org), "00000000-0000-4000-8000-%012d", o);
			snprintf(user, sizeof(user), "11111111-0000-4000-8000-%012d", u);
			assert_int_equal(policy_state_rank(a, org, 36, user, 36), policy_state_rank(b, org, 36, user, 36));
		}
	for (int k = 0; k < 5; k++) {
		snprintf(subj, sizeof(subj), "33333333-0000-4000-8000-%012d", k);
		assert_int_equal(policy_state_subject_rank(a, subj, 36), policy_state_subject_rank(b, subj, 36));
	}
	/* The reloaded state dumps the same rows (as a multiset). */
	static dump_lines da, db;
	da.n = db.n = 0;
	assert_int_equal(policy_state_dump(a, dump_collect, &da), 0);
	assert_int_equal(policy_state_dump(b, dump_collect, &db), 0);
	assert_int_equal(da.n, 60 + 9);
	assert_int_equal(da.n, db.n);
	qsort(da.lines, (size_t)da.n, 128, line_cmp);
	qsort(db.lines, (size_t)db.n, 128, line_cmp);
	for (int i = 0; i < da.n; i++)
		assert_string_equal(da.lines[i], db.lines[i]);
	/* A callback's non-zero result stops the dump and is returned. */
	assert_int_equal(policy_state_dump(a, dump_stop, NULL), 7);
	policy_state_destroy(a);
	policy_state_destroy(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_dump_reload),
		cmocka_unit_test_setup_teardown(test_role_rank, setup, teardown),
		cmocka_unit_test(test_uuid),
		cmocka_unit_test_setup_teardown(test_membership_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_moves_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_without_full_old_row, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keyed_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_callbacks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_role, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rules_by_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_and_clear, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unrelated_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebind_on_new_version, setup, teardown),
		cmocka_unit_test(test_custom_names),
		cmocka_unit_test_setup_teardown(test_members, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_orgs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_randomized_membership, setup, teardown),
		cmocka_unit_test_setup_teardown(test_randomized_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scale_rules, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_privacy_txn — unit tests for the privacy stage's transactional path (src/policy/privacy.h), judged
 * per transaction as DESIGN.md defines "equivalent to RLS": new row versions with the policy
 * state as of the commit, old ones with the state just before the transaction, whatever the
 * order inside it (an event and its handler's removal, both orders; a privacy rule and the
 * event it hides; an org deleted with its roster first; a roster truncated and re-inserted);
 * an UPDATE's old row only to those who saw it (a roster seat handed over); a transaction cut
 * off, or failing at its commit, leaves no trace in either state; a replayed membership insert
 * then one delete removes access; non-transactional messages judged at once; a transaction
 * larger than the buffer's memory spills and is judged all the same.
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

#include "buf.h"
#include "change.h"
#include "policy.h"
#include "policy_state.h"
#include "privacy.h"
#include "privacy_fixture.h"
#include "txnbuf.h"

static const char POLICY[] = POLICY_SOURCES
	"[table public.contacts]\n"
	"columns = id, org_id, phone\n"
	"org = org_id\n"
	"read = viewer and privacy(id)\n"
	"mask phone = last4 unless member\n" POLICY_EVENTS;

static rel_column contacts_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "phone", .type_oid = TEXT_T, .typmod = -1},
};
static relation contacts_rel = {.oid = 16420, .schema = "public", .name = "contacts", .ncols = 3,
                                .cols = contacts_cols, .replident = 'f', .version = 1, .id = 3};

/* ---- the fixture ----------------------------------------------------------------------------- */

typedef struct fx {
	policy *pol;
	privacy *pv;
	const char *viewer; /* uid the judging callback views as; NULL = bypass */
	buf out;            /* what the viewer got: "action table key [old]" per line */
	change_txn txn;
	uint64_t lsn;
} fx;

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	char err[POLICY_ERROR_MAX];
	if (f == NULL || policy_load_string(POLICY, "test.ini", &f->pol, err) != 0) {
		fprintf(stderr, "policy: %s\n", err);
		return -1;
	}
	if (privacy_create(f->pol, NULL, &f->pv, err) != 0) {
		fprintf(stderr, "privacy: %s\n", err);
		return -1;
	}
	buf_init(&f->out);
	f->txn = (change_txn){.xid = 700, .commit_lsn = 0x3000000, .end_lsn = 0x3000010};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	privacy_destroy(f->pv);
	policy_destroy(f->pol);
	buf_fini(&f->out);
	free(f);
	return 0;
}

/* The viewer's line for a visible change: "insert events <id>" (org_roles: "<org>:<user>"),
 * with " old=<key>" when the view carries an old row. */
static void key_of(buf *b, const change *c, const change_value *t)
{
	if (c->rel == &roles_rel)
		assert_int_equal(buf_printf(b, "%.4s:%.2s", t[0].data + 32, t[1].data + 34), 0);
	else
		assert_int_equal(buf_printf(b, "%.2s", t[0].data + 34), 0);
}

static int view_cb(void *arg, const change *c)
{
	fx *f = arg;
	privacy_viewer v = {f->viewer, f->viewer == NULL};
	change out;
	int rc = privacy_view_as(f->pv, c, &v, &out);
	if (rc <= 0)
		return rc;
	assert_int_equal(buf_printf(&f->out, "%s %s", change_action_name(out.action), out.rel ? out.rel->name : "-"), 0);
	const change_value *row = out.action == CHANGE_DELETE ? out.old_tuple : out.new_tuple;
	if (row != NULL) {
		assert_int_equal(buf_putc(&f->out, ' '), 0);
		key_of(&f->out, &out, row);
	}
	if (out.action == CHANGE_UPDATE && out.old_tuple != NULL) {
		assert_int_equal(buf_printf(&f->out, " old="), 0);
		key_of(&f->out, &out, out.old_tuple);
	}
	assert_int_equal(buf_putc(&f->out, ';'), 0);
	return 0;
}

static void begin(fx *f)
{
	assert_int_equal(privacy_begin(f->pv, &f->txn), 0);
}

static void put(fx *f, change_action a, relation *rel, change_value *n, change_value *o)
{
	change c = {.action = a, .lsn = ++f->lsn, .txn = &f->txn, .rel = rel, .new_tuple = n, .old_tuple = o};
	assert_int_equal(privacy_change(f->pv, &c, view_cb, f), 0);
}

/* Commits, judging the transaction for viewer; returns what the viewer got (valid until the
 * next call). The states move for every viewer; so a scenario replays its transaction per
 * viewer from the same starting state (see run). */
static const char *commit_as(fx *f, const char *viewer)
{
	f->viewer = viewer;
	buf_clear(&f->out);
	int rc = privacy_commit(f->pv, &f->txn, view_cb, f);
	if (rc < 0)
		fail_msg("privacy_commit: %s", privacy_error(f->pv));
	return f->out.data ? f->out.data : "";
}

static void load(fx *f, int table, const char *a, const char *b, const char *c)
{
	const char *v[3] = {a, b, c};
	assert_int_equal(privacy_load_row(f->pv, table, v), 0);
}

static int rank_in(fx *f, privacy_when w, const char *org, const char *user)
{
	return policy_state_rank(privacy_state_at(f->pv, w), org, 36, user, 36);
}

/* A scenario: a starting state (loaded), then one transaction; run once per viewer (each run
 * starts from the same state) and return what that viewer got. */
typedef void (*scenario_fn)(fx *f);

static const char *run(fx *f, void (*start)(fx *f), scenario_fn txn, const char *viewer)
{
	privacy_clear(f->pv);
	start(f);
	begin(f);
	txn(f);
	return commit_as(f, viewer);
}

/* ---- item 1: a cut-off transaction leaves no trace; a replayed insert is idempotent -------------- */

static void start_o1(fx *f)
{
	load(f, POLICY_STATE_MEMBERSHIP, O1, UA, "member");
	load(f, POLICY_STATE_MEMBERSHIP, O1, UD, "admin");
}

static void test_cutoff_leaves_no_trace(void **state)
{
	fx *f = *state;
	tup n;
	privacy_clear(f->pv);
	start_o1(f);
	/* U joins in a transaction that is cut off mid-stream */
	begin(f);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, NULL), NULL);
	privacy_abort(f->pv);
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 0);
	assert_int_equal(rank_in(f, PRIVACY_AFTER, O1, UX), 0);
	/* the server sends it again, completely */
	begin(f);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, NULL), NULL);
	assert_string_equal(commit_as(f, UX), "insert org_roles 0001:0f;insert events 01;");
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 1);
	assert_int_equal(rank_in(f, PRIVACY_AFTER, O1, UX), 1);
	/* a begin without the previous commit: the open transaction was cut off */
	begin(f);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UX, "viewer"));
	begin(f);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E2, O1, NULL, NULL), NULL);
	assert_string_equal(commit_as(f, UX), "insert events 02;");
	/* removed: one delete, and the next event of the org does not reach U */
	begin(f);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UX, "viewer"));
	assert_string_equal(commit_as(f, UX), "delete org_roles 0001:0f;"); /* U saw their row before */
	begin(f);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E2, O1, NULL, NULL), NULL);
	assert_string_equal(commit_as(f, UX), "");
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 0);
}

/* tail --as on an existing slot: the state is today's, the stream replays an older insert of a
 * membership the state already holds; one delete must still remove it. */
static void test_replayed_insert_then_delete(void **state)
{
	fx *f = *state;
	tup n;
	privacy_clear(f->pv);
	start_o1(f);
	load(f, POLICY_STATE_MEMBERSHIP, O1, UX, "viewer");
	begin(f);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL); /* older than the state */
	(void)commit_as(f, UX);
	begin(f);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UX, "viewer"));
	(void)commit_as(f, UX);
	begin(f);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E2, O1, NULL, NULL), NULL);
	assert_string_equal(commit_as(f, UX), "");
	policy_state_stats st;
	policy_state_get_stats(privacy_state(f->pv), &st);
	assert_int_equal(st.member_rows, 2);
}

/* ---- item 2: judged per transaction ------------------------------------------------------------ */

static void start_handler(fx *f)
{
	start_o1(f);
	load(f, POLICY_STATE_MEMBERSHIP, O1, UH, "viewer");
}

static void event_then_removal(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, UH), NULL);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UH, "viewer"));
}

static void removal_then_event(fx *f)
{
	tup n;
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UH, "viewer"));
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, UH), NULL);
}

static void test_handler_removed_in_same_transaction(void **state)
{
	fx *f = *state;
	scenario_fn orders[] = {event_then_removal, removal_then_event};
	for (int i = 0; i < 2; i++) {
		/* the removed handler: only their own removal (they saw that row before) */
		assert_string_equal(run(f, start_handler, orders[i], UH), "delete org_roles 0001:01;");
		/* a member who stays sees both */
		const char *want = i == 0 ? "insert events 01;delete org_roles 0001:01;"
		                          : "delete org_roles 0001:01;insert events 01;";
		assert_string_equal(run(f, start_handler, orders[i], UA), want);
	}
}

static void start_contact(fx *f)
{
	start_o1(f);
}

static void event_then_rule(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, C1, NULL), NULL);
	put(f, CHANGE_INSERT, &rules_rel, T4(&n, R1, O1, C1, "admin"), NULL);
}

static void rule_then_event(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &rules_rel, T4(&n, R1, O1, C1, "admin"), NULL);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, C1, NULL), NULL);
}

static void test_rule_in_same_transaction(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_contact, event_then_rule, UA), "");
	assert_string_equal(run(f, start_contact, rule_then_event, UA), "");
	assert_string_equal(run(f, start_contact, event_then_rule, UD), "insert events 01;insert privacy_rules 01;");
}

static void start_doomed(fx *f)
{
	start_o1(f);
}

/* DELETE FROM orgs: the org_roles rows cascade first, then events and contacts. */
static void org_deleted(fx *f)
{
	tup n;
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UA, "member"));
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UD, "admin"));
	put(f, CHANGE_DELETE, &contacts_rel, NULL, T3(&n, C1, O1, "+15550001234"));
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E1, O1, NULL, NULL));
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E2, O1, C1, UA));
}

static void test_org_deleted(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_doomed, org_deleted, UA),
	                    "delete org_roles 0001:0a;delete org_roles 0001:0d;delete contacts 01;delete events 01;"
	                    "delete events 02;");
	assert_string_equal(run(f, start_doomed, org_deleted, UX), "");
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UA), 0);
	assert_int_equal(rank_in(f, PRIVACY_AFTER, O1, UA), 0);
}

/* TRUNCATE org_roles, then the roster inserted again with X last. */
static void roster_reinserted(fx *f)
{
	tup n;
	change c = {.action = CHANGE_TRUNCATE, .lsn = ++f->lsn, .txn = &f->txn, .rel = &roles_rel};
	assert_int_equal(privacy_change(f->pv, &c, view_cb, f), 0);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UA, "member"), NULL);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UD, "admin"), NULL);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
}

static void start_roster(fx *f)
{
	start_o1(f);
	load(f, POLICY_STATE_MEMBERSHIP, O1, UX, "viewer");
}

static void test_roster_reinserted(void **state)
{
	fx *f = *state;
	/* judged against the committed roster: X sees every re-inserted row; the truncate itself
	 * reaches bypass viewers only */
	assert_string_equal(run(f, start_roster, roster_reinserted, UX),
	                    "insert org_roles 0001:0a;insert org_roles 0001:0d;insert org_roles 0001:0f;");
	assert_string_equal(run(f, start_roster, roster_reinserted, NULL),
	                    "truncate org_roles;insert org_roles 0001:0a;insert org_roles 0001:0d;insert org_roles 0001:0f;");
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 1);
}

/* ---- item 3: an UPDATE's old row only to those who saw it ------------------------------------------ */

static void start_seat(fx *f)
{
	start_o1(f);
	load(f, POLICY_STATE_MEMBERSHIP, O1, UC, "member");
}

static void seat_handed_over(fx *f)
{
	tup n, o;
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UB, "member"), T3(&o, O1, UC, "member"));
}

static void test_update_old_row(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_seat, seat_handed_over, UB), "update org_roles 0001:0b;");
	assert_string_equal(run(f, start_seat, seat_handed_over, UD), "update org_roles 0001:0b old=0001:0c;");
	assert_string_equal(run(f, start_seat, seat_handed_over, UC), "");
	/* the same through the one-shot path */
	privacy_clear(f->pv);
	start_seat(f);
	tup n, o;
	change c = {.action = CHANGE_UPDATE, .lsn = 1, .txn = &f->txn, .rel = &roles_rel,
	            .new_tuple = T3(&n, O1, UB, "member"), .old_tuple = T3(&o, O1, UC, "member")};
	privacy_viewer v = {UB, false};
	change out;
	assert_int_equal(privacy_step(f->pv, &c, &v, &out), 1);
	assert_null(out.old_tuple);
}

/* An event moved to another org in the transaction that makes the viewer a member of the new
 * org only: the new row, never the old one (the viewer was no member of the old org before). */
static void event_moved(fx *f)
{
	tup n, o;
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O2, UX, "viewer"), NULL);
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E1, O2, NULL, NULL), T4(&o, E1, O1, NULL, NULL));
}

static void test_update_old_row_other_org(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_o1, event_moved, UX), "insert org_roles 0002:0f;update events 01;");
}

/* ---- row versions created inside the transaction (issue 6, the lead's decision) ------------------- */

/* An old row version that an earlier change of the same transaction created (a row inserted and
 * then deleted or updated, a row updated twice) is judged with the state as of the commit, the
 * state that judged its creation: whoever received the INSERT also receives the DELETE, whoever
 * did not receives neither. Old versions that existed before the transaction keep BEFORE. */

#define E3 "0d000000-0000-4000-8000-000000000003"

static void start_ruled(fx *f)
{
	start_handler(f); /* UA member, UD admin, UH viewer */
	load(f, POLICY_STATE_RULES, R1, C1, "admin");
}

/* UX joins O1; an event inserted and deleted. */
static void join_insert_delete(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, NULL), NULL);
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E1, O1, NULL, NULL));
}

/* The same, the membership last. */
static void insert_delete_join(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, NULL), NULL);
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E1, O1, NULL, NULL));
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
}

/* UH removed; an event they handle inserted and deleted around it. */
static void insert_removal_delete(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E1, O1, NULL, UH), NULL);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UH, "viewer"));
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E1, O1, NULL, UH));
}

static void test_created_then_deleted(void **state)
{
	fx *f = *state;
	/* the new member gets the insert and the delete, whatever the order */
	assert_string_equal(run(f, start_handler, join_insert_delete, UX),
	                    "insert org_roles 0001:0f;insert events 01;delete events 01;");
	assert_string_equal(run(f, start_handler, insert_delete_join, UX),
	                    "insert events 01;delete events 01;insert org_roles 0001:0f;");
	/* the removed handler gets neither (only the delete of their own roster row, which they
	 * saw before the transaction) */
	assert_string_equal(run(f, start_handler, insert_removal_delete, UH), "delete org_roles 0001:01;");
	/* a member who stays gets both */
	assert_string_equal(run(f, start_handler, insert_removal_delete, UA),
	                    "insert events 01;delete org_roles 0001:01;delete events 01;");
}

/* A row that existed before: deleted (BEFORE), inserted again and deleted again (AFTER). */
static void delete_reinsert_delete(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UH, "viewer"));
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E2, O1, NULL, UH));
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E2, O1, NULL, UH), NULL);
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E2, O1, NULL, UH));
}

static void test_existing_row_deleted_and_recreated(void **state)
{
	fx *f = *state;
	/* UX (new): not the pre-existing row, but the re-created one and its delete */
	assert_string_equal(run(f, start_handler, delete_reinsert_delete, UX),
	                    "insert org_roles 0001:0f;insert events 02;delete events 02;");
	/* UH (removed): the pre-existing row's delete only */
	assert_string_equal(run(f, start_handler, delete_reinsert_delete, UH),
	                    "delete org_roles 0001:01;delete events 02;");
}

/* Updated twice with a demotion of UD (admin -> member) in between; the contact is admin-only.
 * The first update's new version (handled by UA) is hidden from UD as of the commit, so UD
 * never receives it, and must not receive it as the old row of the second update either. */
static void update_demote_update(fx *f)
{
	tup n, o;
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E1, O1, C1, UA), T4(&o, E1, O1, C1, NULL));
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UD, "member"), T3(&o, O1, UD, "admin"));
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E1, O1, C1, UD), T4(&o, E1, O1, C1, UA));
}

/* UD demoted, then an event about the admin-only contact handed to UD. */
static void demote_then_update(fx *f)
{
	tup n, o;
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UD, "member"), T3(&o, O1, UD, "admin"));
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E1, O1, C1, UD), T4(&o, E1, O1, C1, NULL));
}

/* Updated twice with a promotion of UA (member -> admin) in between: UA receives the first
 * update (without its old row, which UA could not see before) and the second with its old row,
 * the version the first update delivered. */
static void update_promote_update(fx *f)
{
	tup n, o;
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E1, O1, C1, UD), T4(&o, E1, O1, C1, NULL));
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UA, "admin"), T3(&o, O1, UA, "member"));
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E1, O1, C1, NULL), T4(&o, E1, O1, C1, UD));
}

static void test_updated_twice(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_ruled, update_demote_update, UD),
	                    "update org_roles 0001:0d old=0001:0d;update events 01;");
	assert_string_equal(run(f, start_ruled, update_promote_update, UA),
	                    "update events 01;update org_roles 0001:0a old=0001:0a;update events 01 old=01;");
	assert_string_equal(run(f, start_ruled, update_demote_update, UA),
	                    "update events 01;update org_roles 0001:0d old=0001:0d;");
	/* an old row that existed before the transaction keeps BEFORE (UD was admin then) */
	assert_string_equal(run(f, start_ruled, demote_then_update, UD),
	                    "update org_roles 0001:0d old=0001:0d;update events 01 old=01;");
}

/* Inserted, updated and deleted around a promotion (equivalence case 100010). */
static void insert_promote_update_delete(fx *f)
{
	tup n, o;
	put(f, CHANGE_INSERT, &events_rel, T4(&n, E3, O1, C1, NULL), NULL);
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UA, "owner"), T3(&o, O1, UA, "member"));
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E3, O1, C1, UH), T4(&o, E3, O1, C1, NULL));
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E3, O1, C1, UH));
}

static void test_inserted_updated_deleted(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_ruled, insert_promote_update_delete, UA),
	                    "insert events 03;update org_roles 0001:0a old=0001:0a;update events 03 old=03;"
	                    "delete events 03;");
}

/* A key changed by an UPDATE: the version under the new key was created in the transaction. */
static void join_rekey_delete(fx *f)
{
	tup n, o;
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_UPDATE, &events_rel, T4(&n, E3, O1, NULL, NULL), T4(&o, E2, O1, NULL, NULL));
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E3, O1, NULL, NULL));
}

/* A membership added then promoted, another added then removed (equivalence case 100004). */
static void join_promote(fx *f)
{
	tup n, o;
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_UPDATE, &roles_rel, T3(&n, O1, UX, "admin"), T3(&o, O1, UX, "viewer"));
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UB, "member"), NULL);
	put(f, CHANGE_DELETE, &roles_rel, NULL, T3(&n, O1, UB, "member"));
}

static void test_rekeyed_and_roster(void **state)
{
	fx *f = *state;
	/* the pre-existing E2 was not UX's to see; the version rekeyed to E3 and its delete are */
	assert_string_equal(run(f, start_handler, join_rekey_delete, UX),
	                    "insert org_roles 0001:0f;update events 03;delete events 03;");
	assert_string_equal(run(f, start_handler, join_promote, UX),
	                    "insert org_roles 0001:0f;update org_roles 0001:0f old=0001:0f;insert org_roles 0001:0b;"
	                    "delete org_roles 0001:0b;");
	/* UB never was a member at a commit: neither their row nor its delete */
	assert_string_equal(run(f, start_handler, join_promote, UB), "");
	assert_string_equal(run(f, start_handler, join_promote, UA),
	                    "insert org_roles 0001:0f;update org_roles 0001:0f old=0001:0f;insert org_roles 0001:0b;"
	                    "delete org_roles 0001:0b;");
}

/* The same key in another table is another row; a transaction without policy changes keeps the
 * one state it has. */
static void contact_id_reused(fx *f)
{
	tup n;
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_INSERT, &contacts_rel, T3(&n, E2, O1, "+15550001234"), NULL);
	put(f, CHANGE_DELETE, &events_rel, NULL, T4(&n, E2, O1, NULL, NULL));
}

static void test_other_table_same_key(void **state)
{
	fx *f = *state;
	assert_string_equal(run(f, start_handler, contact_id_reused, UX), "insert org_roles 0001:0f;insert contacts 02;");
}

/* ---- failures and limits ---------------------------------------------------------------------------- */

static void test_failed_commit_leaves_no_trace(void **state)
{
	fx *f = *state;
	tup n;
	privacy_clear(f->pv);
	start_o1(f);
	begin(f);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, "not-a-uuid", "viewer"), NULL);
	f->viewer = UX;
	buf_clear(&f->out);
	assert_int_equal(privacy_commit(f->pv, &f->txn, view_cb, f), -EINVAL);
	assert_non_null(strstr(privacy_error(f->pv), "not a uuid"));
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 0);
	assert_int_equal(rank_in(f, PRIVACY_AFTER, O1, UX), 0);
	assert_int_equal(rank_in(f, PRIVACY_AFTER, O1, UA), 2);
	/* the next transaction commits normally */
	begin(f);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	assert_int_equal(privacy_commit(f->pv, &f->txn, view_cb, f), 0);
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 1);
	/* a commit or change without a transaction is refused */
	assert_int_equal(privacy_commit(f->pv, &f->txn, view_cb, f), -EINVAL);
	change c = {.action = CHANGE_INSERT, .lsn = 9, .txn = &f->txn, .rel = &events_rel, .new_tuple = T4(&n, E1, O1, NULL, NULL)};
	assert_int_equal(privacy_change(f->pv, &c, view_cb, f), -EINVAL);
}

static int stop_cb(void *arg, const change *c)
{
	(void)arg, (void)c;
	return -ECANCELED;
}

static void test_stopped_commit_leaves_no_trace(void **state)
{
	fx *f = *state;
	tup n;
	privacy_clear(f->pv);
	start_o1(f);
	begin(f);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	assert_int_equal(privacy_commit(f->pv, &f->txn, stop_cb, f), -ECANCELED);
	assert_int_equal(rank_in(f, PRIVACY_BEFORE, O1, UX), 0);
	assert_int_equal(rank_in(f, PRIVACY_AFTER, O1, UX), 0);
}

static void test_message_at_once(void **state)
{
	fx *f = *state;
	change m = {.action = CHANGE_MESSAGE, .lsn = 5, .prefix = "walcast", .content = "x", .content_len = 1};
	f->viewer = NULL;
	buf_clear(&f->out);
	assert_int_equal(privacy_change(f->pv, &m, view_cb, f), 0);
	assert_string_equal(f->out.data, "message -;");
	f->viewer = UA;
	buf_clear(&f->out);
	assert_int_equal(privacy_change(f->pv, &m, view_cb, f), 0);
	assert_int_equal(f->out.len, 0);
}

/* A transaction far larger than the buffer's memory spills and is judged completely. */
static void test_spilled_transaction(void **state)
{
	fx *f = *state;
	tup n;
	char ids[3000][37];
	privacy_clear(f->pv);
	start_o1(f);
	assert_int_equal(privacy_set_txn_buffer(f->pv, 4096, NULL), 0);
	begin(f);
	assert_int_equal(privacy_set_txn_buffer(f->pv, 4096, NULL), -EBUSY);
	put(f, CHANGE_INSERT, &roles_rel, T3(&n, O1, UX, "viewer"), NULL);
	for (int i = 0; i < 3000; i++) {
		snprintf(ids[i], sizeof(ids[i]), "0d000000-0000-4000-8000-%012d", i);
		put(f, CHANGE_INSERT, &events_rel, T4(&n, ids[i], O1, NULL, NULL), NULL);
	}
	const char *got = commit_as(f, UX);
	size_t lines = 0;
	for (const char *p = got; *p; p++)
		lines += *p == ';';
	assert_int_equal(lines, 3001);
	txnbuf_stats st;
	privacy_get_txn_stats(f->pv, &st);
	assert_true(st.spills >= 1);
	assert_int_equal(st.max_changes, 3001);
	assert_int_equal(privacy_set_txn_buffer(f->pv, 100, NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cutoff_leaves_no_trace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replayed_insert_then_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handler_removed_in_same_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rule_in_same_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_org_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roster_reinserted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_old_row, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_old_row_other_org, setup, teardown),
		cmocka_unit_test_setup_teardown(test_created_then_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_existing_row_deleted_and_recreated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_updated_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inserted_updated_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rekeyed_and_roster, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_table_same_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_commit_leaves_no_trace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stopped_commit_leaves_no_trace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spilled_transaction, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

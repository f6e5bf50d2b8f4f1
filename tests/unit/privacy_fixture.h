/* privacy_fixture — the policy, relations and identifiers the privacy stage's unit tests
 * (test_privacy_txn, test_privacy_journal) build their transactions from: memberships and
 * privacy rules as policy sources, events readable by their handler or through privacy(); and
 * the helpers that build a tuple of text cells. Include after cmocka.h, change.h and policy.h. */
#ifndef WALCAST_TEST_PRIVACY_FIXTURE_H
#define WALCAST_TEST_PRIVACY_FIXTURE_H

#include <string.h>

#include "policy_fixture.h"

#define POLICY_SOURCES                                                                         \
	ROLES PRIVACY                                                                              \
	"[table public.org_roles]\n"                                                               \
	"columns = org_id, user_id, role\n"                                                        \
	"org = org_id\n"                                                                           \
	"read = viewer\n"                                                                          \
	"[table public.privacy_rules]\n"                                                           \
	"columns = id, org_id, contact_id, min_role\n"                                             \
	"org = org_id\n"                                                                           \
	"read = admin\n"
#define POLICY_EVENTS                                                                          \
	"[table public.events]\n"                                                                  \
	"columns = id, org_id, contact_id, user_id\n"                                              \
	"org = org_id\n"                                                                           \
	"read = viewer and (user_id = uid or privacy(contact_id))\n"

#define UUID_T 2950
#define TEXT_T 25

/* Not const: the transaction buffer takes references (relation_ref counts in the relation). */
static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "role", .type_oid = TEXT_T, .typmod = -1},
};
static relation roles_rel = {.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 3, .cols = roles_cols,
                             .replident = 'f', .version = 1, .id = 1};
static rel_column rules_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "contact_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "min_role", .type_oid = TEXT_T, .typmod = -1},
};
static relation rules_rel = {.oid = 16410, .schema = "public", .name = "privacy_rules", .ncols = 4,
                             .cols = rules_cols, .replident = 'f', .version = 1, .id = 2};
static rel_column events_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "contact_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "user_id", .type_oid = UUID_T, .typmod = -1},
};
static relation events_rel = {.oid = 16430, .schema = "public", .name = "events", .ncols = 4, .cols = events_cols,
                              .replident = 'f', .version = 1, .id = 4};

#define O1 "0a000000-0000-4000-8000-000000000001"
#define O2 "0a000000-0000-4000-8000-000000000002"
#define UA "0b000000-0000-4000-8000-00000000000a" /* a member who stays */
#define UB "0b000000-0000-4000-8000-00000000000b"
#define UC "0b000000-0000-4000-8000-00000000000c"
#define UD "0b000000-0000-4000-8000-00000000000d"
#define UH "0b000000-0000-4000-8000-000000000001" /* a handler */
#define UX "0b000000-0000-4000-8000-00000000000f"
#define C1 "0c000000-0000-4000-8000-000000000001"
#define C2 "0c000000-0000-4000-8000-000000000002"
#define R1 "0e000000-0000-4000-8000-000000000001"
#define R2 "0e000000-0000-4000-8000-000000000002"
#define R3 "0e000000-0000-4000-8000-000000000003"
#define E1 "0d000000-0000-4000-8000-000000000001"
#define E2 "0d000000-0000-4000-8000-000000000002"

static void cell(change_value *v, const char *s)
{
	*v = s == NULL ? (change_value){VALUE_NULL, 0, NULL} : (change_value){VALUE_TEXT, (uint32_t)strlen(s), s};
}

typedef struct tup {
	change_value v[4];
} tup;

static change_value *T3(tup *t, const char *a, const char *b, const char *c)
{
	cell(&t->v[0], a), cell(&t->v[1], b), cell(&t->v[2], c);
	return t->v;
}

static change_value *T4(tup *t, const char *a, const char *b, const char *c, const char *d)
{
	cell(&t->v[0], a), cell(&t->v[1], b), cell(&t->v[2], c), cell(&t->v[3], d);
	return t->v;
}

#endif

/*
 * test_privacy — unit tests for the per-viewer transform of the policy stage (src/policy/privacy.c,
 * privacy_view): values the WAL does not repeat (unchanged TOAST) under masks and encryption,
 * an encrypted column whose context column the WAL row does not carry, and the rate-limited
 * log line about values that cannot be decrypted. The oracle is what the masking view would
 * show (docs/policies.md): NULL where the rule denies a column, never a marker in its place.
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
#include <unistd.h>

#include "buf.h"
#include "change.h"
#include "keyring.h"
#include "policy.h"
#include "privacy.h"

static const char POLICY[] =
	"[roles]\n"
	"ranks = viewer, member, analyst, admin, owner\n"
	"bypass = service_role\n"
	"[membership]\n"
	"table = public.org_roles\n"
	"org = org_id\n"
	"user = user_id\n"
	"role = role\n"
	"[table public.notes]\n"
	"columns = id, org_id, user_id, phone, secret, body\n"
	"org = org_id\n"
	"read = viewer\n"
	"mask phone = last4 unless member\n"
	"mask secret = null unless analyst\n"
	"encrypted body = analyst or user_id = uid\n"
	"encrypted_context body = id\n";

#define UUID_T 2950
#define TEXT_T 25
#define BYTEA_T 17

enum { N_ID, N_ORG, N_USER, N_PHONE, N_SECRET, N_BODY, N_NCOLS };
static rel_column notes_cols[] = {
	{.name = "id", .type_oid = UUID_T, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "user_id", .type_oid = UUID_T, .typmod = -1},
	{.name = "phone", .type_oid = TEXT_T, .typmod = -1},
	{.name = "secret", .type_oid = TEXT_T, .typmod = -1},
	{.name = "body", .type_oid = BYTEA_T, .typmod = -1},
};
static const relation notes_rel = {.oid = 16500, .schema = "public", .name = "notes", .ncols = N_NCOLS,
                                   .cols = notes_cols, .replident = 'f', .version = 1};

#define ORG "0a000000-0000-4000-8000-000000000001"
#define USER "0b000000-0000-4000-8000-000000000001"
#define ROW_ID "0d000000-0000-4000-8000-000000000001"
#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

enum { RANK_VIEWER = 1, RANK_MEMBER = 2, RANK_ANALYST = 3 };

typedef struct fixture {
	policy *pol;
	keyring *keys;
	privacy *pv;
	buf body; /* "\x..." of "hello" encrypted with context ROW_ID */
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
	setenv("WALCAST_TEST_PRIVACY_KEYS", "7:" KEY_HEX ":primary", 1);
	if (keyring_load_env("WALCAST_TEST_PRIVACY_KEYS", &f->keys, kerr) != 0) {
		fprintf(stderr, "keys: %s\n", kerr);
		return -1;
	}
	if (privacy_create(f->pol, f->keys, &f->pv, err) != 0) {
		fprintf(stderr, "privacy: %s\n", err);
		return -1;
	}
	buf_init(&f->body);
	if (keyring_encrypt_hex(f->keys, 0, "hello", 5, ROW_ID, strlen(ROW_ID), &f->body) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	buf_fini(&f->body);
	privacy_destroy(f->pv);
	keyring_destroy(f->keys);
	policy_destroy(f->pol);
	free(f);
	return 0;
}

static change_value text(const char *s)
{
	return (change_value){VALUE_TEXT, (uint32_t)strlen(s), s};
}

static const change_value UNCHANGED = {VALUE_UNCHANGED, 0, NULL};
static const change_value ABSENT = {VALUE_ABSENT, 0, NULL};

/* A full row of notes; the caller overrides columns. */
static void row_fill(fixture *f, change_value *t)
{
	t[N_ID] = text(ROW_ID);
	t[N_ORG] = text(ORG);
	t[N_USER] = (change_value){VALUE_NULL, 0, NULL};
	t[N_PHONE] = text("+15550001234");
	t[N_SECRET] = text("the secret");
	t[N_BODY] = (change_value){VALUE_TEXT, (uint32_t)f->body.len, f->body.data};
}

typedef struct seen {
	int rc;
	change out;
} seen;

/* The change as a viewer of rank `rank` (uid `uid` or NULL) sees it, through privacy_view. */
static int view_cb(void *arg, const change *c)
{
	(void)c;
	(void)arg;
	return 0;
}

static seen view(fixture *f, change_action a, change_value *newt, change_value *oldt, int rank,
                 const char *uid)
{
	change c = {.action = a, .rel = &notes_rel, .lsn = 0x16B3748, .new_tuple = newt, .old_tuple = oldt};
	seen s = {0};
	/* privacy_judge resets the arena and applies the (non-policy) change: nothing to apply. */
	assert_int_equal(privacy_judge(f->pv, &c, view_cb, NULL), 0);
	const policy_bound *b = NULL;
	assert_int_equal(privacy_bind(f->pv, &notes_rel, &b), 0);
	assert_non_null(b);
	policy_viewer v;
	privacy_viewer_init(f->pv, &v, a == CHANGE_DELETE ? PRIVACY_BEFORE : PRIVACY_AFTER, rank, uid, uid ? strlen(uid) : 0, false);
	s.rc = privacy_view(f->pv, &c, b, &v, NULL, &s.out);
	return s;
}

static const change_value *col(const seen *s, int i)
{
	return s->out.action == CHANGE_DELETE ? &s->out.old_tuple[i] : &s->out.new_tuple[i];
}

static const char *err_of(const seen *s, int i)
{
	return s->out.row_errors ? s->out.row_errors[i] : NULL;
}

/* A masked-to-null column the viewer may not read, arriving as unchanged TOAST: the view shows
 * NULL, so the viewer gets NULL, not "unchanged" (which would say a value exists and whether it
 * changed). */
static void test_unchanged_denied_null_mask(void **state)
{
	fixture *f = *state;
	change_value t[N_NCOLS];
	row_fill(f, t);
	t[N_SECRET] = UNCHANGED;
	seen s = view(f, CHANGE_UPDATE, t, NULL, RANK_VIEWER, USER);
	assert_int_equal(s.rc, 1);
	assert_int_equal(col(&s, N_SECRET)->kind, VALUE_NULL);
	/* an analyst may read it: it stays "unchanged" (the change lists it as such) */
	s = view(f, CHANGE_UPDATE, t, NULL, RANK_ANALYST, USER);
	assert_int_equal(s.rc, 1);
	assert_int_equal(col(&s, N_SECRET)->kind, VALUE_UNCHANGED);
}

/* An encrypted column the viewer may not read, arriving as unchanged TOAST: NULL without a
 * marker, like any denied encrypted value. A reader keeps "unchanged". */
static void test_unchanged_denied_encrypted(void **state)
{
	fixture *f = *state;
	change_value t[N_NCOLS];
	row_fill(f, t);
	t[N_BODY] = UNCHANGED;
	seen s = view(f, CHANGE_UPDATE, t, NULL, RANK_MEMBER, USER);
	assert_int_equal(s.rc, 1);
	assert_int_equal(col(&s, N_BODY)->kind, VALUE_NULL);
	assert_null(err_of(&s, N_BODY));
	s = view(f, CHANGE_UPDATE, t, NULL, RANK_ANALYST, USER);
	assert_int_equal(s.rc, 1);
	assert_int_equal(col(&s, N_BODY)->kind, VALUE_UNCHANGED);
	assert_null(err_of(&s, N_BODY));
}

/* A last4-masked column arriving unchanged: the marker stands for the viewer's own (masked)
 * previous value, so it stays "unchanged" for everyone who sees the row. */
static void test_unchanged_mask_last4(void **state)
{
	fixture *f = *state;
	change_value t[N_NCOLS];
	row_fill(f, t);
	t[N_PHONE] = UNCHANGED;
	seen s = view(f, CHANGE_UPDATE, t, NULL, RANK_VIEWER, USER);
	assert_int_equal(s.rc, 1);
	assert_int_equal(col(&s, N_PHONE)->kind, VALUE_UNCHANGED);
}

/* Sanity: the body decrypts with its context for a reader, and is masked for a viewer. */
static void test_decrypts_with_context(void **state)
{
	fixture *f = *state;
	change_value t[N_NCOLS];
	row_fill(f, t);
	seen s = view(f, CHANGE_INSERT, t, NULL, RANK_ANALYST, USER);
	assert_int_equal(s.rc, 1);
	assert_int_equal(col(&s, N_BODY)->kind, VALUE_TEXT);
	assert_string_equal(col(&s, N_BODY)->data, "hello");
	assert_string_equal(col(&s, N_PHONE)->data, "+15550001234");
	s = view(f, CHANGE_INSERT, t, NULL, RANK_VIEWER, USER);
	assert_int_equal(col(&s, N_PHONE)->kind, VALUE_TEXT);
	assert_string_equal(col(&s, N_PHONE)->data, "********1234");
	assert_int_equal(col(&s, N_SECRET)->kind, VALUE_NULL);
}

/* The context column is missing from the WAL row (absent or unchanged): the value is not
 * decrypted with an empty context; the reader gets NULL and the marker "missing_context". */
static void test_missing_context(void **state)
{
	fixture *f = *state;
	change_value t[N_NCOLS];
	/* A value encrypted with an empty context: decrypting it with "" would succeed. */
	buf empty_ctx;
	buf_init(&empty_ctx);
	assert_int_equal(keyring_encrypt_hex(f->keys, 0, "leak", 4, NULL, 0, &empty_ctx), 0);
	const change_value missing[] = {ABSENT, UNCHANGED};
	for (size_t k = 0; k < 2; k++) {
		row_fill(f, t);
		t[N_ID] = missing[k];
		t[N_BODY] = (change_value){VALUE_TEXT, (uint32_t)empty_ctx.len, empty_ctx.data};
		seen s = view(f, CHANGE_UPDATE, t, NULL, RANK_ANALYST, USER);
		assert_int_equal(s.rc, 1);
		assert_int_equal(col(&s, N_BODY)->kind, VALUE_NULL);
		assert_non_null(err_of(&s, N_BODY));
		assert_string_equal(err_of(&s, N_BODY), "missing_context");
		/* a viewer who may not read the body: NULL, no marker */
		s = view(f, CHANGE_UPDATE, t, NULL, RANK_MEMBER, USER);
		assert_int_equal(s.rc, 1);
		assert_int_equal(col(&s, N_BODY)->kind, VALUE_NULL);
		assert_null(err_of(&s, N_BODY));
	}
	buf_fini(&empty_ctx);
}

/* Runs fn with stderr captured into a buffer (NUL-terminated, caller frees). */
static char *capture_stderr(void (*fn)(fixture *), fixture *f)
{
	fflush(stderr);
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	fn(f);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	long n = ftell(tmp);
	assert_true(n >= 0);
	char *s = calloc(1, (size_t)n + 1);
	assert_non_null(s);
	rewind(tmp);
	assert_int_equal(fread(s, 1, (size_t)n, tmp), (size_t)n);
	fclose(tmp);
	return s;
}

static int count_of(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void undecryptable_burst(fixture *f)
{
	change_value t[N_NCOLS];
	/* Five values under a key this keyring lacks (id 9), then one under key 7 with the
	 * wrong context: two log lines, one per key id. */
	buf other;
	buf_init(&other);
	char hex[] = "\\x010009000102030405060708090a0b000102030405060708090a0b0c0d0e0f";
	for (int i = 0; i < 5; i++) {
		row_fill(f, t);
		t[N_BODY] = text(hex);
		seen s = view(f, CHANGE_INSERT, t, NULL, RANK_ANALYST, USER);
		assert_int_equal(s.rc, 1);
		assert_string_equal(err_of(&s, N_BODY), "unknown_key");
	}
	assert_int_equal(keyring_encrypt_hex(f->keys, 0, "moved", 5, "another row", 11, &other), 0);
	row_fill(f, t);
	t[N_BODY] = (change_value){VALUE_TEXT, (uint32_t)other.len, other.data};
	seen s = view(f, CHANGE_INSERT, t, NULL, RANK_ANALYST, USER);
	assert_string_equal(err_of(&s, N_BODY), "invalid_ciphertext");
	buf_fini(&other);
}

/* docs/encryption.md: an undecryptable value is logged with its table, column, key id and LSN,
 * at most one line per key id per interval, never the value. */
static void test_undecryptable_logged(void **state)
{
	fixture *f = *state;
	char *log = capture_stderr(undecryptable_burst, f);
	assert_int_equal(count_of(log, "privacy.undecryptable"), 2);
	assert_int_equal(count_of(log, "key_id=9"), 1);
	assert_int_equal(count_of(log, "key_id=7"), 1);
	assert_int_equal(count_of(log, "table=public.notes"), 2);
	assert_int_equal(count_of(log, "column=body"), 2);
	assert_int_equal(count_of(log, "lsn=0/16B3748"), 2);
	assert_int_equal(count_of(log, "unknown_key"), 1);
	assert_int_equal(count_of(log, "invalid_ciphertext"), 1);
	assert_int_equal(count_of(log, "\\x01"), 0); /* never the value */
	assert_int_equal(count_of(log, "0102030405"), 0);
	free(log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_unchanged_denied_null_mask, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unchanged_denied_encrypted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unchanged_mask_last4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_decrypts_with_context, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_context, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undecryptable_logged, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

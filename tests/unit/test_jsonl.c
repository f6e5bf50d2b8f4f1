/*
 * test_jsonl — unit tests for the jsonl sink (plugins/sinks/jsonl.h) driven through its sink_ops
 * by a small harness that plays the pipeline's part: a real privacy stage and audience judge
 * synthesized transactions (memberships, rows of two orgs, messages) and offer the deliveries to
 * the sink, begin / deliver... / commit. Checked: the file holds exactly the audience payloads
 * (one line each, what change_json_write gives for the view, with types when asked), the
 * checkpoint FILE.pos (offset, LSN) and position() move only after a sync, batching by time
 * (a real loop timer) and by bytes, recovery (a FILE longer than its checkpoint is cut back),
 * transactions offered again are skipped, a clean stop trims an incomplete transaction, 0600
 * modes, filters, roles and bad configuration.
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
#include <sys/stat.h>
#include <unistd.h>

#include "audience.h"
#include "buf.h"
#include "change.h"
#include "jsonl.h"
#include "loop.h"
#include "lsn.h"
#include "policy.h"
#include "policy_fixture.h"
#include "privacy.h"

static const char POLICY[] = ROLES PRIVACY
	"[table public.org_roles]\n"
	"columns = org_id, user_id, role\n"
	"org = org_id\n"
	"read = viewer\n"
	"[table public.privacy_rules]\n"
	"columns = id, org_id, contact_id, min_role\n"
	"org = org_id\n"
	"read = admin\n"
	"[table public.items]\n"
	"columns = id, org_id, note\n"
	"org = org_id\n"
	"read = viewer\n"
	"mask note = null unless admin\n";

static rel_column roles_cols[] = {
	{.name = "org_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "user_id", .type_oid = 2950, .typmod = -1, .key = true},
	{.name = "role", .type_oid = 25, .typmod = -1},
};
static relation roles_rel = {.oid = 16400, .schema = "public", .name = "org_roles", .ncols = 3,
                             .cols = roles_cols, .replident = 'f', .version = 1, .id = 1};
static rel_column items_cols[] = {
	{.name = "id", .type_oid = 23, .typmod = -1, .key = true},
	{.name = "org_id", .type_oid = 2950, .typmod = -1},
	{.name = "note", .type_oid = 25, .typmod = -1},
};
static relation items_rel = {.oid = 16410, .schema = "public", .name = "items", .ncols = 3,
                             .cols = items_cols, .replident = 'f', .version = 1, .id = 2};

#define ORG_A "0a000000-0000-4000-8000-000000000001"
#define ORG_B "0a000000-0000-4000-8000-000000000002"
#define USER_U "0b000000-0000-4000-8000-000000000001"

/* ---- the harness: the pipeline's part ----------------------------------------------------------- */

typedef struct harness {
	policy *pol;
	privacy *pv;
	audience *aud;
	loop *loop;
	sink_env env;
	int progress;
	char dir[256];
	char path[320];
	char pos[330];
	void *sink;
	uint32_t xid;
} harness;

static int h_subscribe(void *env_arg, void *sub_arg, const char *uid, bool bypass, bool wildcard,
                       audience_sub **out)
{
	harness *h = env_arg;
	assert_false(wildcard);
	return audience_subscribe(h->aud, sub_arg, uid, bypass, out);
}

static void h_unsubscribe(void *env_arg, audience_sub *s)
{
	harness *h = env_arg;
	audience_unsubscribe(h->aud, s);
}

static void h_progress(void *env_arg)
{
	((harness *)env_arg)->progress++;
}

static harness *h_new(bool with_policy)
{
	harness *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	char err[POLICY_ERROR_MAX > PRIVACY_ERROR_MAX ? POLICY_ERROR_MAX : PRIVACY_ERROR_MAX];
	assert_int_equal(policy_load_string(POLICY, "test.ini", &h->pol, err), 0);
	assert_int_equal(privacy_create(h->pol, NULL, &h->pv, err), 0);
	assert_int_equal(audience_create(h->pv, 0, &h->aud), 0);
	h->loop = loop_create();
	assert_non_null(h->loop);
	const char *tmp = getenv("TMPDIR");
	snprintf(h->dir, sizeof(h->dir), "%s/test_jsonl.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	assert_non_null(mkdtemp(h->dir));
	snprintf(h->path, sizeof(h->path), "%s/out.jsonl", h->dir);
	snprintf(h->pos, sizeof(h->pos), "%s.pos", h->path);
	h->env = (sink_env){.name = "audit", .loop = NULL, .pol = with_policy ? h->pol : NULL,
	                    .subscribe = h_subscribe, .unsubscribe = h_unsubscribe, .progress = h_progress,
	                    .env_arg = h};
	h->xid = 700;
	return h;
}

static void h_free(harness *h)
{
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	audience_destroy(h->aud);
	privacy_destroy(h->pv);
	policy_destroy(h->pol);
	loop_destroy(h->loop);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
	assert_int_equal(system(cmd), 0);
	free(h);
}

static int h_create(harness *h, const jsonl_conf *c, char err[SINK_ERROR_MAX])
{
	err[0] = '\0';
	return jsonl_sink_ops.create(&h->env, c, &h->sink, err);
}

static void h_open(harness *h, const jsonl_conf *c)
{
	char err[SINK_ERROR_MAX];
	int rc = h_create(h, c, err);
	if (rc != 0)
		fail_msg("create: %d %s", rc, err);
}

static int deliver_cb(void *arg, const audience_delivery *d)
{
	harness *h = arg;
	for (size_t i = 0; i < d->nsubs; i++) {
		int rc = jsonl_sink_ops.deliver(h->sink, d->subs[i], d);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* A change of a test transaction: an insert of a row of rel, or a message (rel NULL). */
typedef struct tchange {
	const relation *rel;
	const char *v[3];
} tchange;

/* Offers one transaction committed at commit_lsn (ends at commit_lsn + 8) to audience and sink.
 * commit: false leaves it open (begin and deliveries only: a stop in the middle). */
static void h_txn(harness *h, uint64_t commit_lsn, const tchange *cs, size_t n, bool commit)
{
	change_txn t = {.xid = h->xid++, .commit_lsn = commit_lsn, .end_lsn = 0,
	                .commit_time = INT64_C(1780000000000000)};
	change_value vals[8][3];
	assert_int_equal(audience_begin(h->aud, &t), 0);
	assert_int_equal(jsonl_sink_ops.begin(h->sink, &t), 0);
	for (size_t i = 0; i < n; i++) {
		for (int k = 0; k < 3; k++)
			vals[i][k] = cs[i].v[k] ? (change_value){VALUE_TEXT, (uint32_t)strlen(cs[i].v[k]), cs[i].v[k]}
			                        : (change_value){VALUE_NULL, 0, NULL};
		change c = {.action = CHANGE_INSERT, .lsn = commit_lsn - 100 + i, .txn = &t, .rel = cs[i].rel,
		            .new_tuple = vals[i]};
		assert_int_equal(audience_change(h->aud, &c, deliver_cb, h), 0);
	}
	if (!commit) {
		audience_abort(h->aud);
		return;
	}
	t.end_lsn = commit_lsn + 8;
	assert_true(audience_commit(h->aud, &t, deliver_cb, h) >= 0);
	assert_int_equal(jsonl_sink_ops.commit(h->sink, &t), 0);
}

static void h_item(harness *h, uint64_t commit_lsn, const char *id, const char *org, const char *note)
{
	tchange c = {&items_rel, {id, org, note}};
	h_txn(h, commit_lsn, &c, 1, true);
}

static change message_change(uint64_t lsn, const char *content)
{
	return (change){.action = CHANGE_MESSAGE, .lsn = lsn, .transactional = false, .prefix = "test",
	                .content = content, .content_len = strlen(content)};
}

/* A non-transactional message (delivered at once, complete on its own). */
static void h_message(harness *h, uint64_t lsn, const char *content)
{
	change c = message_change(lsn, content);
	assert_true(audience_change(h->aud, &c, deliver_cb, h) >= 0);
}

static void expected_message(buf *out, uint64_t lsn, const char *content)
{
	change c = message_change(lsn, content);
	assert_int_equal(change_json_write(out, &c, 0), 0);
	assert_int_equal(buf_putc(out, '\n'), 0);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	buf b;
	buf_init(&b);
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		assert_int_equal(buf_append(&b, chunk, n), 0);
	fclose(f);
	if (len != NULL)
		*len = b.len;
	if (b.data == NULL)
		return strdup("");
	return b.data;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* FILE.pos's offset and LSN. */
static void pos_read(const harness *h, int64_t *offset, uint64_t *lsn)
{
	FILE *f = fopen(h->pos, "r");
	assert_non_null(f);
	long long off = -1;
	char text[64] = "";
	assert_int_equal(fscanf(f, "walcast-tail-position 1\noffset=%lld\nlsn=%63s\n", &off, text), 2);
	fclose(f);
	*offset = off;
	assert_int_equal(lsn_parse(text, strlen(text), lsn), 0);
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* The line change_json_write gives for an unmasked insert of items (the bypass view). */
static void expected_item(buf *out, uint32_t xid, uint64_t commit_lsn, const char *id, const char *org,
                          const char *note, unsigned flags)
{
	change_txn t = {.xid = xid, .commit_lsn = commit_lsn, .end_lsn = commit_lsn + 8,
	                .commit_time = INT64_C(1780000000000000)};
	change_value v[3] = {{VALUE_TEXT, (uint32_t)strlen(id), id}, {VALUE_TEXT, (uint32_t)strlen(org), org},
	                     note ? (change_value){VALUE_TEXT, (uint32_t)strlen(note), note}
	                          : (change_value){VALUE_NULL, 0, NULL}};
	change c = {.action = CHANGE_INSERT, .lsn = commit_lsn - 100, .txn = &t, .rel = &items_rel, .new_tuple = v};
	assert_int_equal(change_json_write(out, &c, flags), 0);
	assert_int_equal(buf_putc(out, '\n'), 0);
}

/* ---- tests ------------------------------------------------------------------------------------ */

/* Everyone (bypass): every row, exactly the payload, one line each; durable only after a sync;
 * FILE.pos records the end of the last transaction; 0600 modes. */
static void test_bypass_lines_and_checkpoint(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	c.flush_bytes = INT64_C(1) << 30;
	h->env.loop = h->loop; /* batched: nothing durable until the timer or a flush */
	h_open(h, &c);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0);
	int64_t off;
	uint64_t lsn;
	pos_read(h, &off, &lsn); /* created with an initial checkpoint */
	assert_int_equal(off, 0);
	assert_int_equal(lsn, 0);

	h_item(h, 0x1000, "1", ORG_A, "alpha");
	h_item(h, 0x2000, "2", ORG_B, "beta \"quoted\"\nline");
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0);
	assert_true(jsonl_sink_ops.pending_bytes(h->sink) > 0);
	assert_int_equal(h->progress, 0);
	assert_int_equal(jsonl_sink_ops.flush(h->sink), 0);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x2008);
	assert_int_equal(jsonl_sink_ops.pending_bytes(h->sink), 0);
	assert_int_equal(h->progress, 1);

	buf want;
	buf_init(&want);
	expected_item(&want, 700, 0x1000, "1", ORG_A, "alpha", 0);
	expected_item(&want, 701, 0x2000, "2", ORG_B, "beta \"quoted\"\nline", 0);
	size_t len;
	char *got = slurp(h->path, &len);
	assert_int_equal(len, want.len);
	assert_memory_equal(got, want.data, len);
	pos_read(h, &off, &lsn);
	assert_int_equal(off, (int64_t)len);
	assert_int_equal(lsn, 0x2008);

	struct stat st;
	assert_int_equal(stat(h->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(h->pos, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(got);
	buf_fini(&want);
	h_free(h);
}

static void stop_cb(loop *l, int id, void *arg)
{
	loop_stop(l);
}

/* Batching by time: a complete transaction becomes durable within flush_interval by itself (the
 * sink's loop timer), and progress() says so. By bytes: past flush_bytes, at the commit. */
static void test_batching(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	c.flush_interval_ms = 30;
	c.flush_bytes = INT64_C(1) << 30;
	h->env.loop = h->loop;
	h_open(h, &c);
	h_item(h, 0x1000, "1", ORG_A, "alpha");
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0);
	int64_t off;
	uint64_t lsn;
	pos_read(h, &off, &lsn);
	assert_int_equal(lsn, 0);
	int64_t t0 = loop_now_ms();
	assert_true(loop_timer_add(h->loop, 500, stop_cb, NULL) > 0);
	while (h->progress == 0 && loop_now_ms() - t0 < 500) {
		assert_true(loop_timer_add(h->loop, 5, stop_cb, NULL) > 0);
		assert_int_equal(loop_run(h->loop), 0);
	}
	assert_int_equal(h->progress, 1);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x1008);
	pos_read(h, &off, &lsn);
	assert_int_equal(lsn, 0x1008);
	assert_int_equal(off, (int64_t)file_size(h->path));
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;

	/* flush_bytes: one line is enough */
	c.flush_interval_ms = 60000;
	c.flush_bytes = 1;
	h_open(h, &c);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x1008);
	h_item(h, 0x2000, "2", ORG_A, "beta");
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x2008);
	pos_read(h, &off, &lsn);
	assert_int_equal(lsn, 0x2008);
	h_free(h);
}

/* kill -9 after lines were written past the checkpoint: the next create cuts FILE back to the
 * checkpoint's offset and reports its LSN; the transactions offered again are written once. */
static void test_crash_recovery_and_skip(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	h_open(h, &c); /* no loop: every commit is synced at once */
	h_item(h, 0x1000, "1", ORG_A, "one");
	h_item(h, 0x2000, "2", ORG_A, "two");
	int64_t off;
	uint64_t lsn;
	pos_read(h, &off, &lsn);
	assert_int_equal(lsn, 0x2008);
	size_t good_len;
	char *good = slurp(h->path, &good_len);
	assert_int_equal(off, (int64_t)good_len);
	/* The crash: lines of a third transaction reached FILE but not FILE.pos. Simulated by
	 * appending them behind the sink's back and dropping the instance without its clean stop. */
	FILE *f = fopen(h->path, "a");
	assert_non_null(f);
	fputs("{\"lsn\":\"0/3000\",\"half\":true}\n{\"partial", f);
	fclose(f);
	assert_true(file_size(h->path) > (off_t)good_len);
	jsonl_sink_ops.destroy(h->sink); /* FILE already longer: destroy trims to FILE.pos too */
	h->sink = NULL;
	f = fopen(h->path, "a");
	fputs("{\"garbage\":1}\n", f);
	fclose(f);

	h_open(h, &c);
	assert_int_equal(file_size(h->path), (off_t)good_len);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x2008);
	/* The pipeline resumes at the lowest position of all sinks: 0x2000 comes again. */
	h->xid = 701;
	h_item(h, 0x2000, "2", ORG_A, "two");
	h_item(h, 0x3000, "3", ORG_A, "three");
	/* a non-transactional message at or before the position is skipped as well; a later one is
	 * written */
	h_message(h, 0x1500, "old");
	h_message(h, 0x3100, "new");
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x3100);
	size_t len;
	char *got = slurp(h->path, &len);
	buf want;
	buf_init(&want);
	expected_item(&want, 700, 0x1000, "1", ORG_A, "one", 0);
	expected_item(&want, 701, 0x2000, "2", ORG_A, "two", 0);
	expected_item(&want, 702, 0x3000, "3", ORG_A, "three", 0);
	expected_message(&want, 0x3100, "new");
	assert_int_equal(len, want.len);
	assert_memory_equal(got, want.data, len);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x3100);
	free(got);
	free(good);
	buf_fini(&want);
	h_free(h);
}

/* A FILE shorter than its checkpoint was changed by something else: refused. A FILE.pos that is
 * not a position: refused. */
static void test_recovery_refusals(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	h_open(h, &c);
	h_item(h, 0x1000, "1", ORG_A, "one");
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	assert_int_equal(truncate(h->path, 10), 0);
	char err[SINK_ERROR_MAX];
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	assert_non_null(strstr(err, "shorter"));
	assert_null(h->sink);
	FILE *f = fopen(h->pos, "w");
	fputs("something else\n", f);
	fclose(f);
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	assert_non_null(strstr(err, "not a walcast position"));
	h_free(h);
}

/* A clean stop in the middle of a transaction (its lines partly written) leaves FILE ending at
 * FILE.pos's offset; abort() cuts the transaction's lines, also once written to FILE. */
static void test_trim_and_abort(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	h_open(h, &c);
	h_item(h, 0x1000, "1", ORG_A, "one");
	off_t one = file_size(h->path);
	/* abort: lines still buffered */
	tchange two[2] = {{&items_rel, {"2", ORG_A, "two"}}, {&items_rel, {"3", ORG_A, "three"}}};
	change_txn t = {.xid = 900, .commit_lsn = 0x2000};
	assert_int_equal(jsonl_sink_ops.begin(h->sink, &t), 0);
	assert_int_equal(audience_begin(h->aud, &t), 0);
	for (int i = 0; i < 2; i++) {
		change_value v[3] = {{VALUE_TEXT, 1, two[i].v[0]}, {VALUE_TEXT, 36, two[i].v[1]},
		                     {VALUE_TEXT, (uint32_t)strlen(two[i].v[2]), two[i].v[2]}};
		change ch = {.action = CHANGE_INSERT, .lsn = 0x1f00, .txn = &t, .rel = &items_rel, .new_tuple = v};
		assert_int_equal(audience_change(h->aud, &ch, deliver_cb, h), 0);
	}
	t.end_lsn = 0x2008;
	assert_true(audience_commit(h->aud, &t, deliver_cb, h) >= 0);
	assert_true(jsonl_sink_ops.pending_bytes(h->sink) > 0);
	jsonl_sink_ops.abort(h->sink);
	assert_int_equal(jsonl_sink_ops.pending_bytes(h->sink), 0);
	assert_int_equal(jsonl_sink_ops.flush(h->sink), 0);
	assert_int_equal(file_size(h->path), one);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x1008);
	/* offered again after the abort: written (not skipped) */
	h_txn(h, 0x2000, two, 2, true);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x2008);
	off_t three = file_size(h->path);
	/* a stop in the middle of the next one: destroy trims */
	h_txn(h, 0x3000, two, 1, false);
	jsonl_sink_ops.begin(h->sink, &(change_txn){.xid = 1, .commit_lsn = 0x3000});
	change_value v[3] = {{VALUE_TEXT, 1, "9"}, {VALUE_TEXT, 36, ORG_A}, {VALUE_NULL, 0, NULL}};
	change_txn t3 = {.xid = 1, .commit_lsn = 0x3000, .end_lsn = 0x3008};
	change ch = {.action = CHANGE_INSERT, .lsn = 0x2f00, .txn = &t3, .rel = &items_rel, .new_tuple = v};
	assert_int_equal(audience_publish(h->aud, &ch, deliver_cb, h), 1);
	assert_true(jsonl_sink_ops.pending_bytes(h->sink) > 0);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	assert_int_equal(file_size(h->path), three);
	int64_t off;
	uint64_t lsn;
	pos_read(h, &off, &lsn);
	assert_int_equal(off, (int64_t)three);
	assert_int_equal(lsn, 0x2008);
	h_free(h);
}

/* One user (as): only the rows of their orgs, masked as their rank says; the membership comes
 * from a transaction through the policy stage, as the pipeline feeds it. */
static void test_as_user(void **state)
{
	harness *h = h_new(true);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	c.as = (char *)"0B000000-0000-4000-8000-000000000001"; /* any uuid spelling */
	h_open(h, &c);
	tchange member = {&roles_rel, {ORG_A, USER_U, "member"}};
	h_txn(h, 0x1000, &member, 1, true);
	h_item(h, 0x2000, "1", ORG_A, "secret note");
	h_item(h, 0x3000, "2", ORG_B, "other org");
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x3008);
	char *got = slurp(h->path, NULL);
	assert_int_equal(count_lines(got), 2); /* the membership row and item 1 */
	assert_non_null(strstr(got, "\"table\":\"org_roles\""));
	assert_non_null(strstr(got, "\"id\":1,"));
	assert_null(strstr(got, "secret note")); /* masked below admin */
	assert_null(strstr(got, "other org"));
	assert_null(strstr(got, ORG_B));
	free(got);
	h_free(h);
}

/* role: a bypass role sees everything, a role [roles] does not name sees nothing; as or role
 * without a policy stage is refused. */
static void test_roles(void **state)
{
	harness *h = h_new(true);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	c.as = (char *)USER_U;
	c.role = (char *)"service_role";
	h_open(h, &c);
	h_item(h, 0x1000, "1", ORG_A, "secret note");
	char *got = slurp(h->path, NULL);
	assert_non_null(strstr(got, "secret note"));
	free(got);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	assert_int_equal(unlink(h->path), 0);
	assert_int_equal(unlink(h->pos), 0);

	c.role = (char *)"anon";
	h_open(h, &c);
	tchange member = {&roles_rel, {ORG_A, USER_U, "owner"}};
	h_txn(h, 0x2000, &member, 1, true);
	h_item(h, 0x3000, "2", ORG_A, "x");
	assert_int_equal(file_size(h->path), 0);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x3008); /* nothing to write still moves */
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;

	h->env.pol = NULL;
	char err[SINK_ERROR_MAX];
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	assert_non_null(strstr(err, "needs a policy"));
	h_free(h);
}

/* with_types: byte for byte what change_json_write(CHANGE_JSON_TYPES) gives; filters. */
static void test_types_and_filters(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	jsonl_conf_defaults(&c, h->path);
	c.with_types = true;
	c.tables = (char *)" public.items , nothing";  /* blanks around items are not part of a name */
	c.actions = (char *)"insert, delete";
	h_open(h, &c);
	tchange both[2] = {{&roles_rel, {ORG_A, USER_U, "member"}}, {&items_rel, {"1", ORG_A, "a"}}};
	h->xid = 700;
	h_txn(h, 0x1000, both, 2, true);
	/* a relation whose schema contains what looks like a key */
	buf want;
	buf_init(&want);
	change_txn t = {.xid = 700, .commit_lsn = 0x1000, .end_lsn = 0x1008,
	                .commit_time = INT64_C(1780000000000000)};
	change_value v[3] = {{VALUE_TEXT, 1, "1"}, {VALUE_TEXT, 36, ORG_A}, {VALUE_TEXT, 1, "a"}};
	change ch = {.action = CHANGE_INSERT, .lsn = 0x1000 - 100 + 1, .txn = &t, .rel = &items_rel, .new_tuple = v};
	assert_int_equal(change_json_write(&want, &ch, CHANGE_JSON_TYPES), 0);
	assert_int_equal(buf_putc(&want, '\n'), 0);
	size_t len;
	char *got = slurp(h->path, &len);
	assert_int_equal(len, want.len);
	assert_memory_equal(got, want.data, len);
	free(got);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;

	/* a table name with quotes and the key's spelling in it: the columns still land after it */
	static rel_column odd_cols[] = {{.name = "a\"b", .type_oid = 25, .typmod = -1, .key = true}};
	static relation odd = {.oid = 1, .schema = "s,\"table\":\"x", .name = "t\\\"", .ncols = 1,
	                       .cols = odd_cols, .replident = 'd', .version = 1, .id = 9};
	assert_int_equal(unlink(h->path), 0);
	assert_int_equal(unlink(h->pos), 0);
	c.tables = (char *)"";
	c.actions = (char *)"";
	h_open(h, &c);
	change_value ov[1] = {{VALUE_TEXT, 1, "z"}};
	change_txn t2 = {.xid = 5, .commit_lsn = 0x5000, .end_lsn = 0x5008};
	change oc = {.action = CHANGE_INSERT, .lsn = 0x4f00, .txn = &t2, .rel = &odd, .new_tuple = ov};
	assert_int_equal(jsonl_sink_ops.begin(h->sink, &t2), 0);
	assert_int_equal(audience_publish(h->aud, &oc, deliver_cb, h), 1);
	assert_int_equal(jsonl_sink_ops.commit(h->sink, &t2), 0);
	buf_clear(&want);
	assert_int_equal(change_json_write(&want, &oc, CHANGE_JSON_TYPES), 0);
	assert_int_equal(buf_putc(&want, '\n'), 0);
	got = slurp(h->path, &len);
	assert_int_equal(len, want.len);
	assert_memory_equal(got, want.data, len);
	free(got);
	buf_fini(&want);
	h_free(h);
}

static void end_cb(void *arg, int why)
{
	int *ends = arg;
	assert_int_equal(why, JSONL_END_LIMIT);
	(*ends)++;
}

/* The front ends' limits (tail -n, --until-lsn): a transaction the line limit cuts is not kept
 * (cut at stop, position before it); after a limit nothing more is taken; end_cb once. */
static void test_limits(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	int ends = 0;
	jsonl_conf_defaults(&c, h->path);
	c.max_changes = 3;
	c.end_cb = end_cb;
	c.end_arg = &ends;
	h_open(h, &c);
	tchange two[2] = {{&items_rel, {"1", ORG_A, "a"}}, {&items_rel, {"2", ORG_A, "b"}}};
	h_txn(h, 0x1000, two, 2, true);
	off_t after_one = file_size(h->path);
	assert_int_equal(ends, 0);
	h_txn(h, 0x2000, two, 2, true); /* line 3 taken, line 4 ends the run: not kept */
	assert_int_equal(ends, 1);
	h_txn(h, 0x3000, two, 1, true); /* ignored */
	assert_int_equal(ends, 1);
	assert_int_equal(jsonl_sink_ops.flush(h->sink), 0);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x1008);
	/* the cut transaction's line is never made durable: nothing pending (pipeline_finish) */
	assert_int_equal(jsonl_sink_ops.pending_bytes(h->sink), 0);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	assert_int_equal(file_size(h->path), after_one);

	/* exactly N lines (this run's) ending with a commit: that transaction is kept */
	ends = 0;
	c.max_changes = 2;
	h_open(h, &c);
	h_txn(h, 0x2000, two, 2, true);
	assert_int_equal(ends, 1);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x2008);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	char *got = slurp(h->path, NULL);
	assert_int_equal(count_lines(got), 4);
	free(got);

	/* until_lsn: the first transaction ending at or past it is the last */
	ends = 0;
	c.max_changes = 0;
	c.until_lsn = 0x3004;
	h_open(h, &c);
	h_txn(h, 0x3000, two, 1, true);
	assert_int_equal(ends, 1);
	h_txn(h, 0x4000, two, 1, true);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x3008);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	got = slurp(h->path, NULL);
	assert_int_equal(count_lines(got), 5);
	free(got);
	h_free(h);
}

/* A front end's state_note: FILE.pos carries "state=1" from the first checkpoint after it
 * turned true (even with nothing new to write), and a restart still reads the position. */
static void test_state_note(void **state)
{
	harness *h = h_new(false);
	jsonl_conf c;
	bool note = false;
	jsonl_conf_defaults(&c, h->path);
	c.state_note = &note;
	h_open(h, &c);
	h_item(h, 0x1000, "1", ORG_A, "a");
	assert_int_equal(jsonl_sink_ops.flush(h->sink), 0);
	char *pos = slurp(h->pos, NULL);
	assert_null(strstr(pos, "state=1"));
	free(pos);
	note = true;
	assert_int_equal(jsonl_sink_ops.flush(h->sink), 0); /* nothing new, but the note is due */
	pos = slurp(h->pos, NULL);
	assert_non_null(strstr(pos, "\nstate=1\n"));
	free(pos);
	jsonl_sink_ops.destroy(h->sink);
	h->sink = NULL;
	h_open(h, &c);
	assert_int_equal(jsonl_sink_ops.position(h->sink), 0x1008);
	h_free(h);
}

/* Bad configuration: a clear error, nothing created. */
static void test_bad_config(void **state)
{
	harness *h = h_new(true);
	jsonl_conf c;
	char err[SINK_ERROR_MAX];
	jsonl_conf_defaults(&c, "");
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	assert_non_null(strstr(err, "path"));
	jsonl_conf_defaults(&c, h->path);
	c.actions = (char *)"insert,,delete";
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	c.actions = (char *)"upsert";
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	assert_non_null(strstr(err, "upsert"));
	c.actions = (char *)"";
	c.tables = (char *)"a..b";
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	c.tables = (char *)"public.my items";
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	c.tables = (char *)"";
	c.as = (char *)"not-a-uuid";
	assert_int_equal(h_create(h, &c, err), -EINVAL);
	assert_non_null(strstr(err, "uuid"));
	jsonl_conf_defaults(&c, "/nonexistent-dir/x.jsonl");
	assert_true(h_create(h, &c, err) < 0);
	assert_non_null(strstr(err, "nonexistent"));
	assert_null(h->sink);
	/* the key table covers the conf struct */
	assert_true(jsonl_sink_ops.nkeys >= 6);
	assert_int_equal(jsonl_sink_ops.conf_size, sizeof(jsonl_conf));
	assert_string_equal(jsonl_sink_ops.keys[0].name, "path");
	assert_int_equal(jsonl_sink_ops.kind, SINK_DURABLE);
	h_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bypass_lines_and_checkpoint),
		cmocka_unit_test(test_batching),
		cmocka_unit_test(test_crash_recovery_and_skip),
		cmocka_unit_test(test_recovery_refusals),
		cmocka_unit_test(test_trim_and_abort),
		cmocka_unit_test(test_as_user),
		cmocka_unit_test(test_roles),
		cmocka_unit_test(test_types_and_filters),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_state_note),
		cmocka_unit_test(test_bad_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

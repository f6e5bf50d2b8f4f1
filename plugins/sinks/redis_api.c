/*
 * redis_api — the stats API over the redis sink's aggregates (redis_api.h, docs/api.md).
 *
 * A request: LWS_CALLBACK_HTTP parses the path and the query, verifies the bearer token, judges
 * the caller against the org, audits, and then answers from the cache (stats_cache.h) or sends
 * its Redis reads (HGETALL per day or hour, ZREVRANGE for the contacts) pipelined on the sink's
 * connection. Each reply is turned into JSON as it comes; when the last one is in, the body is
 * rendered and the connection asked for a writable callback, which writes the response. A
 * response ready inside LWS_CALLBACK_HTTP (a cache hit, a refusal) is written there at once: a
 * cached days or hours answer straight from the cache's bytes, copied only when it does not go
 * out in that one write (HTTP/2's HEADERS frame first, a body over one write). The
 * request lives in its own allocation: when the client goes away first, the connection's pointer
 * to it is cleared and the last reply frees it.
 *
 * The cache. Visibility is judged per request, before the cache is asked: the caller's token,
 * membership and rank as of now. What is cached may then be shown to everyone who passed:
 * days and hours as the rendered response (an org's totals are the same for every member), the
 * contacts as the day's whole list, unfiltered, which each request filters with its own rank and
 * the privacy rules as of now, then cuts at its limit. Entries are keyed by the org, the path
 * and the resolved query (the actual days or hours), dropped when the redis sink's round that
 * changed the org is accepted (redis_api_round_accepted) and when the Redis connection is not the
 * one they were read on. Nothing is served from memory while Redis is not connected.
 *
 * Tokens: a token this API accepted lately is remembered by its bytes (token_check), so its
 * signature is not checked again while its exp is ahead and the keys and rules are the same.
 */
#include "redis_api.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog.h"
#include "buf.h"
#include "hash.h"
#include "http.h"
#include "log.h"
#include "policy.h"
#include "policy_state.h"
#include "redis_agg.h"
#include "stats_cache.h"
#include "token.h"

#define API_MOUNT "/api/v1/stats"
#define API_MAX_DAYS 366
#define API_MAX_HOURS 48
#define API_MAX_LIMIT 100
#define API_CONTACTS_ROLE "analyst" /* the lowest rank that sees per-contact figures */
#define API_CHUNK 65536 /* one write holds most responses (48 hours: ~27 KB) */
#define API_CACHE_BYTES ((size_t)32 << 20) /* the response cache's bound */
#define API_TOKEN_SLOTS 256 /* tokens verified lately, remembered (a power of two) */

/* A token verified lately, remembered by its bytes with what it said. */
typedef struct api_token {
	char *text; /* NULL: an empty slot */
	size_t len;
	token_claims claims;
} api_token;

struct redis_api {
	sink_env env;
	const redis_link *link;
	const char *prefix;
	struct lws_protocols proto;
	token_auth auth; /* [auth]'s keys and rules, followed across reloads */
	/* the tokens verified with these keys and rules (a reload forgets them) */
	api_token tokens[API_TOKEN_SLOTS];
	const token_keys *tokens_keys;
	token_rules tokens_rules;
	char *tokens_audience;
	uint64_t token_seed;
	stats_cache *cache;
	uint64_t cache_conn; /* redis_link_epoch() of the connection(s) the cache was read on */
	sink_metrics metrics;
	unsigned char chunk[LWS_PRE + API_CHUNK];
};

typedef enum api_kind { API_DAYS, API_HOURS, API_CONTACTS } api_kind;

typedef struct api_req {
	redis_api *a;
	struct lws *wsi;      /* NULL once the client went away */
	api_kind kind;
	size_t outstanding;   /* Redis replies still expected */
	bool failed;          /* a reply was missing or an error */
	buf out;              /* the response body, written as the replies come (in order) */
	const char *kept;     /* or the cache's bytes (days, hours), written at once (write_response) */
	size_t kept_len;
	size_t nitems;        /* periods or contacts written */
	long long tot[5];     /* days: calls, sms, missed, call_duration_s, calls_timed */
	bool responded;       /* out holds the whole response */
	bool oom;             /* out of memory while writing it: answered 500 */
	bool bypass;
	int rank;             /* the caller's rank in the org (bypass: every rank) */
	int limit;
	bool in_http;         /* inside LWS_CALLBACK_HTTP: the response is written on return */
	uint64_t stamp;       /* stats_cache_stamp() when the reads were sent */
	buf list;             /* contacts: the day's whole list, as the cache keeps it */
	char org[POLICY_UUID_TEXT_LEN + 1];
	char key[STATS_CACHE_KEY_MAX];
	size_t keylen;
	http_response res;    /* set once responded; its body is out's bytes */
} api_req;

/* ---- tokens (the same [auth] rules as the realtime sink) ------------------------------------ */

static void tokens_forget(redis_api *a)
{
	for (size_t i = 0; i < API_TOKEN_SLOTS; i++) {
		free(a->tokens[i].text);
		a->tokens[i] = (api_token){0};
	}
	free(a->tokens_audience);
	a->tokens_audience = NULL;
}

static void keys_refresh(redis_api *a)
{
	char terr[TOKEN_ERROR_MAX];
	if (a->env.cfg != NULL && token_auth_refresh(&a->auth, a->env.cfg, terr) < 0)
		log_error("stats.keys", "sink=%s: the token keys could not be rebuilt (%s): the previous ones stay",
		          a->env.name, terr);
	/* the tokens remembered were verified with other keys or rules: forget them */
	const token_rules *r = &a->auth.rules;
	const char *aud = r->audience != NULL ? r->audience : "";
	if (a->tokens_keys != a->auth.keys || a->tokens_rules.require_exp != r->require_exp ||
	    a->tokens_rules.leeway_s != r->leeway_s || a->tokens_audience == NULL || strcmp(a->tokens_audience, aud) != 0) {
		tokens_forget(a);
		a->tokens_keys = a->auth.keys;
		a->tokens_rules = *r;
		a->tokens_audience = strdup(aud); /* NULL (out of memory): forgotten again next time */
	}
}

/* token_verify, remembering the tokens it accepted: a token seen lately with the same keys and
 * rules is taken without checking its signature again while its exp (rounded down) is ahead;
 * anything else is verified in full. Same results as token_verify. */
static int token_check(redis_api *a, const char *token, int64_t now, token_claims *out, char err[TOKEN_ERROR_MAX])
{
	size_t len = strlen(token);
	api_token *t = &a->tokens[hash_bytes(a->token_seed, token, len) & (API_TOKEN_SLOTS - 1)];
	const token_claims *c = &t->claims;
	if (t->text != NULL && t->len == len && memcmp(t->text, token, len) == 0 &&
	    (c->exp != 0 ? (double)now < (double)c->exp + a->auth.rules.leeway_s : !a->auth.rules.require_exp)) {
		*out = *c;
		return 0;
	}
	token_claims cl;
	int rc = token_verify(a->auth.keys, &a->auth.rules, token, now, &cl, err);
	if (rc < 0)
		return rc;
	char *copy = a->tokens_audience != NULL ? malloc(len) : NULL;
	if (copy != NULL) {
		memcpy(copy, token, len);
		free(t->text);
		*t = (api_token){.text = copy, .len = len, .claims = cl};
	}
	*out = cl;
	return 0;
}

/* ---- responses ------------------------------------------------------------------------------ */

static void req_free(api_req *r)
{
	buf_fini(&r->out);
	buf_fini(&r->list);
	free(r);
}

/* r->out (or r->kept) is the whole response: sends it with status (a writable callback writes
 * it). */
static void respond(api_req *r, unsigned status)
{
	if (r->oom) {
		status = 500;
		r->kept = NULL;
		buf_clear(&r->out);
		r->oom = buf_puts(&r->out, "{\"error\":\"out of memory\"}") < 0;
	}
	r->res = (http_response){.status = status, .content_type = "application/json",
	                         .body = r->kept != NULL ? r->kept : r->out.data,
	                         .len = r->kept != NULL ? r->kept_len : r->out.len};
	r->responded = true;
	if (r->wsi != NULL && !r->in_http)
		lws_callback_on_writable(r->wsi);
}

static void respond_error(api_req *r, unsigned status, const char *error)
{
	r->kept = NULL;
	buf_clear(&r->out);
	if (buf_puts(&r->out, "{\"error\":") < 0 || buf_json_string(&r->out, error, strlen(error)) < 0 ||
	    buf_putc(&r->out, '}') < 0)
		r->oom = true;
	respond(r, status);
}

/* ---- Redis replies -------------------------------------------------------------------------- */

static long long reply_int(const redisReply *v)
{
	if (v->type == REDIS_REPLY_INTEGER)
		return v->integer;
	return v->type == REDIS_REPLY_STRING ? strtoll(v->str, NULL, 10) : 0;
}

/* Appends the figures, avg_call_duration_s and the rest of a period object. */
static int figures_put(buf *b, const long long f[5])
{
	int rc = buf_printf(b, "\"calls\":%lld,\"sms\":%lld,\"missed\":%lld,\"call_duration_s\":%lld,\"calls_timed\":%lld,",
	                    f[0], f[1], f[2], f[3], f[4]);
	if (rc == 0)
		rc = f[4] > 0 ? buf_printf(b, "\"avg_call_duration_s\":%.17g", (double)f[3] / (double)f[4])
		              : buf_puts(b, "\"avg_call_duration_s\":null");
	return rc;
}

/* A period hash (HGETALL) as one object of the array: {"day": label, figures...}. */
static int period_put(api_req *r, const char *label, const redisReply *rep)
{
	static const char *const names[5] = {"calls", "sms", "missed", "call_duration_s", "calls_timed"};
	long long f[5] = {0}, other = 0;
	buf *b = &r->out;
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		const char *k = rep->element[i]->str;
		for (int j = 0; k != NULL && j < 5; j++)
			if (strcmp(k, names[j]) == 0)
				f[j] = reply_int(rep->element[i + 1]);
		if (k != NULL && strcmp(k, "other") == 0)
			other = reply_int(rep->element[i + 1]);
	}
	for (int j = 0; j < 5; j++)
		r->tot[j] += f[j];
	int rc = buf_printf(b, "%s{\"%s\":\"%s\",", r->nitems++ ? "," : "", r->kind == API_DAYS ? "day" : "hour", label);
	if (rc == 0)
		rc = figures_put(b, f);
	if (rc == 0)
		rc = buf_printf(b, ",\"other\":%lld,\"by_kind_direction_status\":{", other);
	bool first = true;
	for (size_t i = 0; rc == 0 && i + 1 < rep->elements; i += 2) {
		const redisReply *k = rep->element[i];
		if (k->str == NULL || memchr(k->str, ':', k->len) == NULL)
			continue;
		if ((!first && (rc = buf_putc(b, ',')) < 0) || (rc = buf_json_string(b, k->str, k->len)) < 0)
			break;
		first = false;
		rc = buf_printf(b, ":%lld", reply_int(rep->element[i + 1]));
	}
	return rc == 0 ? buf_puts(b, "}}") : rc;
}

/* A day's contact list as the cache keeps it: per contact, most events first, its id's length
 * (uint16_t), the id, and its events (long long), unaligned. */
static int list_put(buf *list, const redisReply *rep)
{
	int rc = 0;
	for (size_t i = 0; rc == 0 && i + 1 < rep->elements; i += 2) {
		const redisReply *c = rep->element[i];
		if (c->str == NULL || c->len > UINT16_MAX)
			continue;
		uint16_t n = (uint16_t)c->len;
		long long events = reply_int(rep->element[i + 1]);
		if ((rc = buf_append(list, &n, sizeof(n))) == 0 && (rc = buf_append(list, c->str, n)) == 0)
			rc = buf_append(list, &events, sizeof(events));
	}
	return rc;
}

/* The top contacts of list (list_put) the caller may see now, at most r->limit. */
static int contacts_put(api_req *r, const char *list, size_t len)
{
	const policy_state *ps = r->a->env.state != NULL ? r->a->env.state(r->a->env.env_arg) : NULL;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i + sizeof(uint16_t) <= len && r->nitems < (size_t)r->limit;) {
		uint16_t n;
		long long events;
		memcpy(&n, list + i, sizeof(n));
		const char *id = list + i + sizeof(n);
		memcpy(&events, id + n, sizeof(events));
		i += sizeof(n) + n + sizeof(events);
		/* privacy(contact_id): the contact's rule rank must not exceed the caller's rank */
		if (!r->bypass && (ps == NULL || policy_state_subject_rank(ps, id, n) > r->rank))
			continue;
		rc = buf_puts(&r->out, r->nitems++ ? ",{\"contact\":" : "{\"contact\":");
		if (rc == 0)
			rc = buf_json_string(&r->out, id, n);
		if (rc == 0)
			rc = buf_printf(&r->out, ",\"events\":%lld}", events);
	}
	return rc;
}

/* The rest of the body once every period or contact is in: 0 or -ENOMEM. */
static int body_end(api_req *r)
{
	int rc = buf_putc(&r->out, ']');
	if (rc == 0 && r->kind == API_DAYS) {
		/* totals over the range */
		rc = buf_puts(&r->out, ",\"total\":{");
		if (rc == 0)
			rc = figures_put(&r->out, r->tot);
		if (rc == 0)
			rc = buf_putc(&r->out, '}');
	}
	return rc == 0 ? buf_putc(&r->out, '}') : rc;
}

/* The answer of every read is in: the response, and what the cache keeps of it. */
static void finish(api_req *r)
{
	if (r->failed) {
		respond_error(r, 503, "the aggregates store (Redis) did not answer: try again");
		return;
	}
	bool contacts = r->kind == API_CONTACTS;
	if ((contacts && contacts_put(r, r->list.data, r->list.len) < 0) || body_end(r) < 0)
		r->oom = true;
	if (!r->oom) {
		const buf *keep = contacts ? &r->list : &r->out;
		if (stats_cache_put(r->a->cache, r->org, r->key, r->keylen, r->stamp, keep->data, keep->len) < 0)
			log_warn("stats.cache", "sink=%s org=%s: out of memory: the response is not cached", r->a->env.name,
			         r->org);
	}
	respond(r, 200);
}

typedef struct api_cmd {
	api_req *r;
	char label[24]; /* the period ("2026-12-02", "2026-12-02T07:00:00Z"); "" for the contacts */
} api_cmd;

static void reply_cb(redis_conn *c, void *reply, void *privdata)
{
	(void)c;
	api_cmd *cmd = privdata;
	api_req *r = cmd->r;
	const redisReply *rep = reply;
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
		r->failed = true;
	else if (!r->failed && !r->responded &&
	         (r->kind == API_CONTACTS ? list_put(&r->list, rep) : period_put(r, cmd->label, rep)) < 0)
		r->oom = true;
	free(cmd);
	if (--r->outstanding > 0)
		return;
	if (r->wsi == NULL) {
		req_free(r); /* the client went away, or the response was written already */
		return;
	}
	if (!r->responded)
		finish(r);
}

/* Sends one command whose reply is written as the period label (or the contacts: ""). */
static int send_cmd(api_req *r, const char *label, const char *name, const char *key, int extra, const char *const *more)
{
	const char *argv[6] = {name, key};
	for (int i = 0; i < extra; i++)
		argv[2 + i] = more[i];
	size_t lens[6];
	for (int i = 0; i < 2 + extra; i++)
		lens[i] = strlen(argv[i]);
	api_cmd *cmd = malloc(sizeof(*cmd));
	if (cmd == NULL)
		return -ENOMEM;
	cmd->r = r;
	snprintf(cmd->label, sizeof(cmd->label), "%s", label);
	int rc = redis_link_command(r->a->link, 0, reply_cb, cmd, 2 + extra, argv, lens);
	if (rc == 0)
		r->outstanding++;
	else
		free(cmd);
	return rc;
}

/* ---- requests ------------------------------------------------------------------------------- */

/* "YYYY-MM-DD" as a UTC day start; -1 when malformed or before 1970. (The aggregates' own
 * timestamp parser: strptime and timegm cost more than the rest of a cached answer.) */
static time_t parse_day(const char *s)
{
	char ts[sizeof("YYYY-MM-DD 00:00:00+00")];
	int64_t us;
	if (strlen(s) != 10)
		return -1;
	memcpy(ts, s, 10);
	memcpy(ts + 10, " 00:00:00+00", sizeof(" 00:00:00+00"));
	if (redis_agg_parse_timestamptz(ts, sizeof(ts) - 1, &us) < 0 || us < 0)
		return -1;
	return (time_t)(us / 1000000);
}

static bool int_arg(struct lws *wsi, const char *name, int def, int lo, int hi, int *out)
{
	char v[32];
	const char *s = lws_get_urlarg_by_name(wsi, name, v, sizeof(v));
	if (s == NULL) {
		*out = def;
		return true;
	}
	char *end;
	long n = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || n < lo || n > hi)
		return false;
	*out = (int)n;
	return true;
}

static bool day_arg(struct lws *wsi, const char *name, time_t def, time_t *out)
{
	char v[32];
	const char *s = lws_get_urlarg_by_name(wsi, name, v, sizeof(v));
	*out = s == NULL ? def : parse_day(s);
	return *out >= 0;
}

/* Who the bearer token stands for: 0 with *bypass or uid filled, or the HTTP status and error. */
static unsigned caller(redis_api *a, struct lws *wsi, bool *bypass, char uid[POLICY_UUID_TEXT_LEN + 1],
                       char err[TOKEN_ERROR_MAX + 64])
{
	static const char bearer[] = "Bearer ";
	char hdr[TOKEN_MAX_LEN + sizeof(bearer) + 1];
	int n = lws_hdr_copy(wsi, hdr, (int)sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION);
	if (n <= 0 || strncasecmp(hdr, bearer, sizeof(bearer) - 1) != 0) {
		snprintf(err, TOKEN_ERROR_MAX + 64, "no bearer token: send Authorization: Bearer <JWT>");
		return 401;
	}
	keys_refresh(a);
	if (a->auth.keys == NULL) {
		snprintf(err, TOKEN_ERROR_MAX + 64, "no key is configured to verify tokens (auth.jwt_secret, auth.jwks_file)");
		return 401;
	}
	token_claims cl;
	char terr[TOKEN_ERROR_MAX];
	if (token_check(a, hdr + sizeof(bearer) - 1, (int64_t)time(NULL), &cl, terr) < 0) {
		snprintf(err, TOKEN_ERROR_MAX + 64, "invalid token: %s", terr);
		return 401;
	}
	const policy *pol = a->env.pol;
	policy_role_access kind = pol == NULL ? POLICY_ROLE_BYPASS : policy_role_kind(pol, cl.role, strlen(cl.role));
	*bypass = kind == POLICY_ROLE_BYPASS;
	uid[0] = '\0';
	if (kind == POLICY_ROLE_MEMBER && cl.sub[0] != '\0' && policy_uuid_canonical(cl.sub, strlen(cl.sub), uid) < 0) {
		snprintf(err, TOKEN_ERROR_MAX + 64, "the token's sub is not a user id (uuid)");
		return 401;
	}
	if (!*bypass && uid[0] == '\0') {
		snprintf(err, TOKEN_ERROR_MAX + 64, "the token's role \"%s\" may not read statistics", cl.role);
		return 403;
	}
	return 0;
}

static void audit(redis_api *a, const char *org, const char *uid, const char *path, unsigned status)
{
	if (a->env.audit == NULL || org == NULL)
		return;
	buf d;
	buf_init(&d);
	bool ok = buf_puts(&d, "{\"path\":") == 0 && buf_json_string(&d, path, strlen(path)) == 0 &&
	          buf_printf(&d, ",\"status\":%u}", status) == 0;
	auditlog_record_counted(a->env.audit, org, uid != NULL && uid[0] ? uid : NULL, AUDITLOG_STATS_READ, NULL, NULL,
	                        ok ? d.data : NULL);
	buf_fini(&d);
}

/* What a request reads: the periods (days or hours) from first, n of them, or a day's contacts. */
typedef struct api_plan {
	time_t first;
	int n;
	int step; /* 86400 or 3600 */
} api_plan;

/* Parses the path's rest (what follows /orgs/ORG/) and the query into *pl, r's kind and limit,
 * and r's cache key. 0, or the status refusing it with *error. */
static unsigned plan(api_req *r, struct lws *wsi, const char *what, api_plan *pl, const char **error)
{
	time_t now = time(NULL), today = now - now % 86400;
	if (strcmp(what, "days") == 0) {
		time_t from, to;
		if (!day_arg(wsi, "to=", today, &to) || !day_arg(wsi, "from=", to, &from)) {
			*error = "from and to are days: YYYY-MM-DD";
			return 400;
		}
		if (from > to || (to - from) / 86400 >= API_MAX_DAYS) {
			*error = "from must not be after to, and the range at most 366 days";
			return 400;
		}
		r->kind = API_DAYS;
		*pl = (api_plan){.first = from, .n = (int)((to - from) / 86400) + 1, .step = 86400};
	} else if (strcmp(what, "hours") == 0) {
		int hours;
		if (!int_arg(wsi, "hours=", API_MAX_HOURS, 1, API_MAX_HOURS, &hours)) {
			*error = "hours is 1 to 48";
			return 400;
		}
		r->kind = API_HOURS;
		time_t last = now - now % 3600;
		*pl = (api_plan){.first = last - (time_t)(hours - 1) * 3600, .n = hours, .step = 3600};
	} else if (strcmp(what, "contacts") == 0) {
		time_t day;
		if (!day_arg(wsi, "day=", today, &day) || !int_arg(wsi, "limit=", 10, 1, API_MAX_LIMIT, &r->limit)) {
			*error = "day is YYYY-MM-DD, limit 1 to 100";
			return 400;
		}
		const policy_state *ps = r->a->env.state != NULL ? r->a->env.state(r->a->env.env_arg) : NULL;
		int need = ps != NULL ? policy_state_role_rank(ps, API_CONTACTS_ROLE, strlen(API_CONTACTS_ROLE)) : 0;
		if (!r->bypass && (need == 0 || r->rank < need)) {
			*error = "per-contact figures are for analysts and above";
			return 403;
		}
		r->kind = API_CONTACTS;
		*pl = (api_plan){.first = day, .n = 1, .step = 86400};
	} else {
		*error = "not found: the paths are days, hours and contacts";
		return 404;
	}
	/* the key: the org, the path and the resolved query (not the limit: the list is whole) */
	int n = snprintf(r->key, sizeof(r->key), "%s/%s/%lld/%d", r->org, what, (long long)pl->first, pl->n);
	r->keylen = n > 0 && (size_t)n < sizeof(r->key) ? (size_t)n : 0;
	return 0;
}

/* Starts r->out with the body's opening, up to its array: 0 or -ENOMEM. */
static int body_start(api_req *r)
{
	static const char *const names[] = {"days", "hours", "contacts"};
	return buf_printf(&r->out, "{\"org\":\"%s\",\"%s\":[", r->org, names[r->kind]);
}

/* The cache's answer to r, when it has one: true with r->out (contacts) or r->kept the response. */
static bool from_cache(api_req *r)
{
	size_t len;
	const char *v = r->keylen > 0 ? stats_cache_get(r->a->cache, r->key, r->keylen, &len) : NULL;
	if (v == NULL)
		return false;
	if (r->kind == API_CONTACTS) {
		if (body_start(r) < 0 || contacts_put(r, v, len) < 0 || body_end(r) < 0)
			r->oom = true;
	} else {
		/* the cache's bytes as they are: written before anything can drop them, or copied */
		r->kept = v;
		r->kept_len = len;
	}
	return true;
}

/* Sends the Redis reads of r's plan. 0, or the status refusing it with *error. */
static unsigned send_reads(api_req *r, const api_plan *pl, const char **error)
{
	redis_api *a = r->a;
	char key[256];
	int rc = body_start(r);
	r->stamp = stats_cache_stamp(a->cache);
	if (rc == 0 && r->kind == API_CONTACTS) {
		struct tm tm;
		gmtime_r(&pl->first, &tm);
		char k[16];
		strftime(k, sizeof(k), "%Y%m%d", &tm);
		snprintf(key, sizeof(key), "%s:{%s}:day:%s:contacts", a->prefix, r->org, k);
		/* every member: hidden contacts are left out before the limit is applied */
		static const char *const more[] = {"0", "-1", "WITHSCORES"};
		rc = send_cmd(r, "", "ZREVRANGE", key, 3, more);
	}
	for (int i = 0; r->kind != API_CONTACTS && i < pl->n && rc == 0; i++) {
		time_t t = pl->first + (time_t)i * pl->step;
		struct tm tm;
		gmtime_r(&t, &tm);
		char label[32], k[16];
		bool days = r->kind == API_DAYS;
		strftime(label, sizeof(label), days ? "%Y-%m-%d" : "%Y-%m-%dT%H:00:00Z", &tm);
		strftime(k, sizeof(k), days ? "%Y%m%d" : "%Y%m%d%H", &tm);
		snprintf(key, sizeof(key), "%s:{%s}:%s:%s", a->prefix, r->org, days ? "day" : "hour", k);
		rc = send_cmd(r, label, "HGETALL", key, 0, NULL);
	}
	if (rc == -ENOTCONN) {
		*error = "the aggregates store (Redis) is not connected: try again";
		return 503;
	}
	return rc < 0 ? 500 : 0;
}

/* Answers r for the path's rest: from the cache, or by sending the reads. 0, or the status
 * refusing it with *error. */
static unsigned serve(api_req *r, struct lws *wsi, const char *what, const char **error)
{
	redis_api *a = r->a;
	if (!redis_link_ready(a->link)) {
		*error = "the aggregates store (Redis) is not connected: try again";
		return 503;
	}
	/* entries read on an earlier connection may predate what Redis lost or was given since */
	uint64_t conn = redis_link_epoch(a->link);
	if (conn != a->cache_conn) {
		stats_cache_clear(a->cache);
		a->cache_conn = conn;
	}
	api_plan pl;
	unsigned status = plan(r, wsi, what, &pl, error);
	if (status != 0)
		return status;
	if (from_cache(r)) {
		respond(r, 200);
		return 0;
	}
	return send_reads(r, &pl, error);
}

static int on_request(redis_api *a, struct lws *wsi, api_req **pr)
{
	char path[512] = "";
	if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0)
		path[0] = '\0';
	api_req *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -1;
	r->a = a;
	r->wsi = wsi;
	r->in_http = true;
	buf_init(&r->out);
	buf_init(&r->list);
	*pr = r;
	const char *error = NULL;
	unsigned status = 0;
	char uid[POLICY_UUID_TEXT_LEN + 1] = "";
	char err[TOKEN_ERROR_MAX + 64];
	bool have_org = false;
	/* /api/v1/stats/orgs/ORG/WHAT */
	const char *rest = strncmp(path, API_MOUNT "/orgs/", sizeof(API_MOUNT "/orgs/") - 1) == 0
	                       ? path + sizeof(API_MOUNT "/orgs/") - 1
	                       : NULL;
	const char *slash = rest != NULL ? strchr(rest, '/') : NULL;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
		status = 405, error = "only GET";
	} else if (slash == NULL) {
		status = 404, error = "not found: GET " API_MOUNT "/orgs/ORG/{days,hours,contacts}";
	} else if (policy_uuid_canonical(rest, (size_t)(slash - rest), r->org) < 0) {
		status = 404, error = "not found: the org is not a uuid";
	} else if ((have_org = true, status = caller(a, wsi, &r->bypass, uid, err)) != 0) {
		error = err;
	} else {
		const policy_state *ps = a->env.state != NULL ? a->env.state(a->env.env_arg) : NULL;
		r->rank = r->bypass ? 1 << 20 : ps != NULL ? policy_state_rank(ps, r->org, strlen(r->org), uid, strlen(uid)) : 0;
		if (r->rank <= 0) {
			/* not a member: the same answer as an org that does not exist */
			status = 404, error = "not found: no such org for this user";
		} else {
			status = serve(r, wsi, slash + 1, &error);
			if (status == 500 && error == NULL)
				error = "out of memory";
		}
	}
	audit(a, have_org ? r->org : NULL, uid, path, status != 0 ? status : 200);
	if (status != 0) {
		log_info("stats.refused", "sink=%s path=%s: %u %s", a->env.name, path, status, error);
		if (r->outstanding > 0)
			r->failed = true; /* the replies of what was sent are dropped */
		respond_error(r, status, error);
		return 0;
	}
	return 0;
}

/* Writes (the next part of) *pr's response. */
static int write_response(redis_api *a, struct lws *wsi, api_req **pr)
{
	api_req *r = *pr;
	int rc = http_response_write(wsi, &r->res, a->chunk, sizeof(a->chunk));
	if (rc < 0)
		return -1; /* closed: CLOSED_HTTP frees r */
	if (rc == 0) {
		if (r->kept != NULL) {
			/* the rest of the cache's bytes, which may be dropped before the next write */
			if (buf_append(&r->out, r->kept, r->kept_len) < 0)
				return -1;
			r->kept = NULL;
			r->res.body = r->out.data;
		}
		lws_callback_on_writable(wsi);
		return 0;
	}
	/* written: detached first, since completing the transaction may drop the session
	 * (DROP_PROTOCOL) from inside; replies still due (a refusal after a partial send) free it */
	*pr = NULL;
	r->wsi = NULL;
	if (r->outstanding == 0)
		req_free(r);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int api_lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	const struct lws_protocols *proto = lws_get_protocol(wsi);
	redis_api *a = proto != NULL ? proto->user : NULL;
	api_req **pr = user;
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		if (a == NULL || pr == NULL || on_request(a, wsi, pr) < 0)
			return -1;
		(*pr)->in_http = false;
		/* a response ready now (a cache hit, a refusal) is written now */
		return (*pr)->responded ? write_response(a, wsi, pr) : 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (a == NULL || pr == NULL || *pr == NULL || !(*pr)->responded)
			return 0;
		return write_response(a, wsi, pr);
	case LWS_CALLBACK_HTTP_BODY:
		return 0;
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
	case LWS_CALLBACK_CLOSED_HTTP:
		if (pr != NULL && *pr != NULL) {
			api_req *r = *pr;
			*pr = NULL;
			r->wsi = NULL;
			if (r->outstanding == 0)
				req_free(r);
		}
		break;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static int read_stat(const redis_api *a, int which, double *v)
{
	stats_cache_stats st = stats_cache_get_stats(a->cache);
	const uint64_t vals[] = {st.hits, st.misses, st.refused_stale, st.evicted, st.invalidated, st.bytes};
	*v = (double)vals[which];
	return 0;
}
static int read_hits(void *arg, double *v) { return read_stat(arg, 0, v); }
static int read_misses(void *arg, double *v) { return read_stat(arg, 1, v); }
static int read_stale(void *arg, double *v) { return read_stat(arg, 2, v); }
static int read_evicted(void *arg, double *v) { return read_stat(arg, 3, v); }
static int read_invalidated(void *arg, double *v) { return read_stat(arg, 4, v); }
static int read_bytes(void *arg, double *v) { return read_stat(arg, 5, v); }

static int metrics_setup(redis_api *a)
{
	static const struct {
		metrics_kind kind;
		const char *name, *help;
		metrics_read_cb cb;
	} fams[] = {
		{METRICS_COUNTER, "walcast_stats_api_cache_hits_total", "Stats API requests answered from memory.", read_hits},
		{METRICS_COUNTER, "walcast_stats_api_cache_misses_total",
		 "Stats API requests that read Redis (nothing in memory for them).", read_misses},
		{METRICS_COUNTER, "walcast_stats_api_cache_stale_total",
		 "Stats API answers not kept: a round changed the org while they were read.", read_stale},
		{METRICS_COUNTER, "walcast_stats_api_cache_evictions_total",
		 "Stats API cache entries dropped for room (least recently used first).", read_evicted},
		{METRICS_COUNTER, "walcast_stats_api_cache_invalidations_total",
		 "Stats API cache entries dropped because a round changed their org.", read_invalidated},
		{METRICS_GAUGE, "walcast_stats_api_cache_bytes", "Memory the stats API cache holds, in bytes.", read_bytes},
	};
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < sizeof(fams) / sizeof(fams[0]); i++) {
		metrics_desc d = {.kind = fams[i].kind, .name = fams[i].name, .help = fams[i].help};
		rc = sink_metrics_add(&a->metrics, &a->env, "stats.metrics", &d, NULL, NULL, fams[i].cb, a);
	}
	return rc;
}

int redis_api_create(const sink_env *env, const redis_link *link, const char *prefix, redis_api **out,
                     char err[SINK_ERROR_MAX])
{
	redis_api *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->env = *env;
	a->link = link;
	a->prefix = prefix;
	a->token_seed = (uint64_t)(uintptr_t)a * 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL);
	if (stats_cache_create(API_CACHE_BYTES, &a->cache) < 0) {
		free(a);
		return -ENOMEM;
	}
	a->proto = (struct lws_protocols){
		.name = "walcast-stats", .callback = api_lws_cb, .per_session_data_size = sizeof(api_req *), .user = a,
		.tx_packet_size = API_CHUNK, /* a response in one send (lws' default: 4 KiB pieces) */
	};
	int rc = http_add_protocol(env->http, &a->proto, API_MOUNT, false);
	if (rc < 0) {
		snprintf(err, SINK_ERROR_MAX, "cannot add the stats API (%s) to the HTTP listener: %s", API_MOUNT,
		         strerror(-rc));
		stats_cache_destroy(a->cache);
		free(a);
		return rc;
	}
	if (metrics_setup(a) < 0)
		log_warn("stats.metrics", "sink=%s: the stats API's cache metrics could not be registered", env->name);
	keys_refresh(a);
	*out = a;
	return 0;
}

void redis_api_destroy(redis_api *a)
{
	if (a == NULL)
		return;
	sink_metrics_remove(&a->metrics, &a->env);
	stats_cache_destroy(a->cache);
	tokens_forget(a);
	token_auth_fini(&a->auth);
	free(a);
}

void redis_api_round_accepted(redis_api *a, const char *org)
{
	if (a != NULL)
		stats_cache_invalidate(a->cache, org);
}

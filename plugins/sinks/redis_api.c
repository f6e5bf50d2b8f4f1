/*
 * redis_api — the stats API over the redis sink's aggregates (redis_api.h, docs/api.md).
 *
 * A request: LWS_CALLBACK_HTTP parses the path and the query, verifies the bearer token, judges
 * the caller against the org, audits, and sends its Redis reads (HGETALL per day or hour,
 * ZREVRANGE for the contacts) pipelined on the sink's connection. Each reply is turned into JSON
 * as it comes; when the last one is in, the body is rendered and the connection asked for a
 * writable callback, which writes the response. The request lives in its own allocation: when
 * the client goes away first, the connection's pointer to it is cleared and the last reply frees
 * it.
 */
#include "redis_api.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog.h"
#include "http.h"
#include "log.h"
#include "policy.h"
#include "policy_state.h"
#include "token.h"

#define API_MOUNT "/api/v1/stats"
#define API_MAX_DAYS 366
#define API_MAX_HOURS 48
#define API_MAX_LIMIT 100
#define API_CONTACTS_ROLE "analyst" /* the lowest rank that sees per-contact figures */
#define API_CHUNK 16384

struct redis_api {
	sink_env env;
	redis_conn *conn;
	const char *prefix;
	struct lws_protocols proto;
	token_keys *keys;
	token_rules rules;
	char *secret;
	unsigned char chunk[LWS_PRE + API_CHUNK];
};

typedef enum api_kind { API_DAYS, API_HOURS, API_CONTACTS } api_kind;

typedef struct api_req {
	redis_api *a;
	struct lws *wsi;      /* NULL once the client went away */
	api_kind kind;
	size_t outstanding;   /* Redis replies still expected */
	bool failed;          /* a reply was missing or an error */
	json_t *items;        /* the figures, one per period or contact */
	bool bypass;
	int rank;             /* the caller's rank in the org (bypass: every rank) */
	int limit;
	char org[POLICY_UUID_TEXT_LEN + 1];
	char *body;           /* the response, once rendered */
	size_t len, sent;
	unsigned status;
} api_req;

/* ---- tokens (the same [auth] rules as the realtime sink) ------------------------------------ */

static void keys_refresh(redis_api *a)
{
	const config *cfg = a->env.cfg;
	if (cfg == NULL)
		return;
	a->rules = (token_rules){cfg->jwt_audience, cfg->jwt_require_exp, (double)cfg->jwt_leeway_ms / 1000.0};
	const char *secret = cfg->jwt_secret ? cfg->jwt_secret : "";
	if (a->secret != NULL && strcmp(a->secret, secret) == 0)
		return;
	token_keys *k = NULL;
	char terr[TOKEN_ERROR_MAX];
	char *copy = strdup(secret);
	bool any = secret[0] || (cfg->jwks_file && cfg->jwks_file[0]);
	if (copy == NULL || (any && token_keys_load(secret, cfg->jwks_file, &k, terr) < 0)) {
		log_error("stats.keys", "sink=%s: the token keys could not be rebuilt (%s): the previous ones stay",
		          a->env.name, copy == NULL ? "out of memory" : terr);
		free(copy);
		return;
	}
	token_keys_destroy(a->keys);
	a->keys = k;
	free(a->secret);
	a->secret = copy;
}

/* ---- responses ------------------------------------------------------------------------------ */

static void req_free(api_req *r)
{
	json_decref(r->items);
	free(r->body);
	free(r);
}

/* Renders obj (stolen) as the response with status and asks for a writable callback. */
static int respond(api_req *r, unsigned status, json_t *obj)
{
	r->status = status;
	r->body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
	if (r->body == NULL) {
		r->status = 500;
		r->body = strdup("{\"error\":\"out of memory\"}");
		if (r->body == NULL)
			return -ENOMEM;
	}
	r->len = strlen(r->body);
	if (r->wsi != NULL)
		lws_callback_on_writable(r->wsi);
	return 0;
}

static int respond_error(api_req *r, unsigned status, const char *error)
{
	return respond(r, status, json_pack("{s:s}", "error", error));
}

static int on_writable(redis_api *a, struct lws *wsi, api_req *r)
{
	if (r->sent == 0) {
		unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
		if (lws_add_http_common_headers(wsi, r->status, "application/json", (lws_filepos_t)r->len, &p, end) ||
		    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, (const unsigned char *)"no-store", 8,
		                                 &p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
	}
	size_t left = r->len - r->sent;
	size_t n = left < API_CHUNK ? left : API_CHUNK;
	bool last = n == left;
	memcpy(a->chunk + LWS_PRE, r->body + r->sent, n);
	if (lws_write(wsi, a->chunk + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
		return -1;
	r->sent += n;
	if (!last) {
		lws_callback_on_writable(wsi);
		return 0;
	}
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- Redis replies -------------------------------------------------------------------------- */

static json_int_t reply_int(const redisReply *v)
{
	if (v->type == REDIS_REPLY_INTEGER)
		return (json_int_t)v->integer;
	return v->type == REDIS_REPLY_STRING ? (json_int_t)strtoll(v->str, NULL, 10) : 0;
}

/* A period hash (HGETALL) as the API's figures. */
static void period_fill(json_t *o, const redisReply *rep)
{
	json_t *by = json_object();
	json_int_t calls = 0, sms = 0, other = 0, missed = 0, dur = 0, timed = 0;
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		const char *f = rep->element[i]->str;
		json_int_t v = reply_int(rep->element[i + 1]);
		if (f == NULL)
			continue;
		if (strcmp(f, "calls") == 0)
			calls = v;
		else if (strcmp(f, "sms") == 0)
			sms = v;
		else if (strcmp(f, "other") == 0)
			other = v;
		else if (strcmp(f, "missed") == 0)
			missed = v;
		else if (strcmp(f, "call_duration_s") == 0)
			dur = v;
		else if (strcmp(f, "calls_timed") == 0)
			timed = v;
		else if (strchr(f, ':') != NULL && by != NULL)
			json_object_set_new(by, f, json_integer(v));
	}
	json_object_set_new(o, "calls", json_integer(calls));
	json_object_set_new(o, "sms", json_integer(sms));
	json_object_set_new(o, "other", json_integer(other));
	json_object_set_new(o, "missed", json_integer(missed));
	json_object_set_new(o, "call_duration_s", json_integer(dur));
	json_object_set_new(o, "calls_timed", json_integer(timed));
	json_object_set_new(o, "avg_call_duration_s", timed > 0 ? json_real((double)dur / (double)timed) : json_null());
	json_object_set_new(o, "by_kind_direction_status", by != NULL ? by : json_object());
}

/* The top contacts (ZREVRANGE WITHSCORES) the caller may see, at most r->limit. */
static void contacts_fill(api_req *r, const redisReply *rep)
{
	const policy_state *ps = r->a->env.state != NULL ? r->a->env.state(r->a->env.env_arg) : NULL;
	for (size_t i = 0; i + 1 < rep->elements && json_array_size(r->items) < (size_t)r->limit; i += 2) {
		const char *c = rep->element[i]->str;
		if (c == NULL)
			continue;
		/* privacy(contact_id): the contact's rule rank must not exceed the caller's rank */
		if (!r->bypass && (ps == NULL || policy_state_subject_rank(ps, c, strlen(c)) > r->rank))
			continue;
		json_array_append_new(r->items, json_pack("{s:s,s:I}", "contact", c, "events", reply_int(rep->element[i + 1])));
	}
}

static void finish(api_req *r)
{
	if (r->failed) {
		(void)respond_error(r, 503, "the aggregates store (Redis) did not answer: try again");
		return;
	}
	const char *what = r->kind == API_DAYS ? "days" : r->kind == API_HOURS ? "hours" : "contacts";
	json_t *o = json_pack("{s:s,s:O}", "org", r->org, what, r->items);
	if (o != NULL && r->kind == API_DAYS) {
		/* totals over the range */
		json_int_t calls = 0, sms = 0, missed = 0, dur = 0, timed = 0;
		size_t i;
		json_t *d;
		json_array_foreach(r->items, i, d) {
			calls += json_integer_value(json_object_get(d, "calls"));
			sms += json_integer_value(json_object_get(d, "sms"));
			missed += json_integer_value(json_object_get(d, "missed"));
			dur += json_integer_value(json_object_get(d, "call_duration_s"));
			timed += json_integer_value(json_object_get(d, "calls_timed"));
		}
		json_object_set_new(o, "total", json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "calls", calls, "sms", sms, "missed",
		                                          missed, "call_duration_s", dur, "calls_timed", timed,
		                                          "avg_call_duration_s",
		                                          timed > 0 ? json_real((double)dur / (double)timed) : json_null()));
	}
	(void)respond(r, 200, o);
}

typedef struct api_cmd {
	api_req *r;
	json_t *slot; /* the period object this reply fills; NULL for the contacts */
} api_cmd;

static void reply_cb(redis_conn *c, void *reply, void *privdata)
{
	(void)c;
	api_cmd *cmd = privdata;
	api_req *r = cmd->r;
	const redisReply *rep = reply;
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
		r->failed = true;
	else if (cmd->slot == NULL)
		contacts_fill(r, rep);
	else
		period_fill(cmd->slot, rep);
	free(cmd);
	if (--r->outstanding > 0)
		return;
	if (r->wsi == NULL) {
		req_free(r); /* the client went away, or the response was written already */
		return;
	}
	if (r->body == NULL)
		finish(r);
}

/* Sends one command whose reply fills slot (an object of r->items, or NULL for contacts). */
static int send_cmd(api_req *r, json_t *slot, const char *name, const char *key, int extra, const char *const *more)
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
	*cmd = (api_cmd){r, slot};
	int rc = redis_conn_command(r->a->conn, reply_cb, cmd, 2 + extra, argv, lens);
	if (rc == 0)
		r->outstanding++;
	else
		free(cmd);
	return rc;
}

/* ---- requests ------------------------------------------------------------------------------- */

/* "YYYY-MM-DD" as a UTC day start; -1 when malformed. */
static time_t parse_day(const char *s)
{
	struct tm tm = {0};
	char *end = strptime(s, "%Y-%m-%d", &tm);
	if (end == NULL || *end != '\0' || strlen(s) != 10)
		return -1;
	return timegm(&tm);
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
	if (a->keys == NULL) {
		snprintf(err, TOKEN_ERROR_MAX + 64, "no key is configured to verify tokens (auth.jwt_secret, auth.jwks_file)");
		return 401;
	}
	token_claims cl;
	char terr[TOKEN_ERROR_MAX];
	if (token_verify(a->keys, &a->rules, hdr + sizeof(bearer) - 1, (int64_t)time(NULL), &cl, terr) < 0) {
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
	json_t *d = json_pack("{s:s,s:i}", "path", path, "status", (int)status);
	char *detail = d != NULL ? json_dumps(d, JSON_COMPACT) : NULL;
	json_decref(d);
	auditlog_record(a->env.audit, org, uid != NULL && uid[0] ? uid : NULL, "stats.read", NULL, NULL, detail);
	free(detail);
}

/* Sends the Redis reads of r for the path's rest (what follows /orgs/ORG/). 0, or the status
 * refusing it with *error. */
static unsigned plan(api_req *r, struct lws *wsi, const char *what, const char **error)
{
	redis_api *a = r->a;
	char key[256];
	time_t now = time(NULL), today = now - now % 86400;
	int rc = 0;
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
		for (time_t t = from; t <= to && rc == 0; t += 86400) {
			struct tm tm;
			gmtime_r(&t, &tm);
			char day[16], k[16];
			strftime(day, sizeof(day), "%Y-%m-%d", &tm);
			strftime(k, sizeof(k), "%Y%m%d", &tm);
			json_t *slot = json_pack("{s:s}", "day", day);
			if (slot == NULL || json_array_append_new(r->items, slot) < 0)
				return 500;
			snprintf(key, sizeof(key), "%s:{%s}:day:%s", a->prefix, r->org, k);
			rc = send_cmd(r, slot, "HGETALL", key, 0, NULL);
		}
	} else if (strcmp(what, "hours") == 0) {
		int hours;
		if (!int_arg(wsi, "hours=", API_MAX_HOURS, 1, API_MAX_HOURS, &hours)) {
			*error = "hours is 1 to 48";
			return 400;
		}
		r->kind = API_HOURS;
		time_t last = now - now % 3600;
		for (time_t t = last - (time_t)(hours - 1) * 3600; t <= last && rc == 0; t += 3600) {
			struct tm tm;
			gmtime_r(&t, &tm);
			char hour[32], k[16];
			strftime(hour, sizeof(hour), "%Y-%m-%dT%H:00:00Z", &tm);
			strftime(k, sizeof(k), "%Y%m%d%H", &tm);
			json_t *slot = json_pack("{s:s}", "hour", hour);
			if (slot == NULL || json_array_append_new(r->items, slot) < 0)
				return 500;
			snprintf(key, sizeof(key), "%s:{%s}:hour:%s", a->prefix, r->org, k);
			rc = send_cmd(r, slot, "HGETALL", key, 0, NULL);
		}
	} else if (strcmp(what, "contacts") == 0) {
		time_t day;
		if (!day_arg(wsi, "day=", today, &day) || !int_arg(wsi, "limit=", 10, 1, API_MAX_LIMIT, &r->limit)) {
			*error = "day is YYYY-MM-DD, limit 1 to 100";
			return 400;
		}
		const policy_state *ps = a->env.state != NULL ? a->env.state(a->env.env_arg) : NULL;
		int need = ps != NULL ? policy_state_role_rank(ps, API_CONTACTS_ROLE, strlen(API_CONTACTS_ROLE)) : 0;
		if (!r->bypass && (need == 0 || r->rank < need)) {
			*error = "per-contact figures are for analysts and above";
			return 403;
		}
		r->kind = API_CONTACTS;
		struct tm tm;
		gmtime_r(&day, &tm);
		char k[16];
		strftime(k, sizeof(k), "%Y%m%d", &tm);
		snprintf(key, sizeof(key), "%s:{%s}:day:%s:contacts", a->prefix, r->org, k);
		/* every member: hidden contacts are left out before the limit is applied */
		static const char *const more[] = {"0", "-1", "WITHSCORES"};
		rc = send_cmd(r, NULL, "ZREVRANGE", key, 3, more);
	} else {
		*error = "not found: the paths are days, hours and contacts";
		return 404;
	}
	if (rc == -ENOTCONN) {
		*error = "the aggregates store (Redis) is not connected: try again";
		return 503;
	}
	return rc < 0 ? 500 : 0;
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
	r->items = json_array();
	*pr = r;
	if (r->items == NULL)
		return -1;
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
			status = plan(r, wsi, slash + 1, &error);
			if (status == 500 && error == NULL)
				error = "out of memory";
		}
	}
	audit(a, have_org ? r->org : NULL, uid, path, status != 0 ? status : 200);
	if (status != 0) {
		log_info("stats.refused", "sink=%s path=%s: %u %s", a->env.name, path, status, error);
		if (r->outstanding > 0)
			r->failed = true; /* the replies of what was sent are dropped */
		return respond_error(r, status, error) < 0 ? -1 : 0;
	}
	return 0;
}

static int api_lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	const struct lws_protocols *proto = lws_get_protocol(wsi);
	redis_api *a = proto != NULL ? proto->user : NULL;
	api_req **pr = user;
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		if (a == NULL || pr == NULL)
			return -1;
		return on_request(a, wsi, pr);
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (a == NULL || pr == NULL || *pr == NULL || (*pr)->body == NULL)
			return 0;
		{
			api_req *r = *pr;
			if (r->sent + API_CHUNK < r->len)
				return on_writable(a, wsi, r);
			/* the last write: detached first, since completing the transaction may drop the
			 * session (DROP_PROTOCOL) from inside; replies still due (a refusal after a partial
			 * send) free it */
			*pr = NULL;
			r->wsi = NULL;
			int rc = on_writable(a, wsi, r);
			if (r->outstanding == 0)
				req_free(r);
			return rc;
		}
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

int redis_api_create(const sink_env *env, redis_conn *conn, const char *prefix, redis_api **out,
                     char err[SINK_ERROR_MAX])
{
	redis_api *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->env = *env;
	a->conn = conn;
	a->prefix = prefix;
	a->proto = (struct lws_protocols){
		.name = "walcast-stats", .callback = api_lws_cb, .per_session_data_size = sizeof(api_req *), .user = a,
	};
	int rc = http_add_protocol(env->http, &a->proto, API_MOUNT, false);
	if (rc < 0) {
		snprintf(err, SINK_ERROR_MAX, "cannot add the stats API (%s) to the HTTP listener: %s", API_MOUNT,
		         strerror(-rc));
		free(a);
		return rc;
	}
	keys_refresh(a);
	*out = a;
	return 0;
}

void redis_api_destroy(redis_api *a)
{
	if (a == NULL)
		return;
	token_keys_destroy(a->keys);
	free(a->secret);
	free(a);
}

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
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog.h"
#include "buf.h"
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
	token_auth auth; /* [auth]'s keys and rules, followed across reloads */
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
	size_t nitems;        /* periods or contacts written */
	long long tot[5];     /* days: calls, sms, missed, call_duration_s, calls_timed */
	bool responded;       /* out holds the whole response */
	bool oom;             /* out of memory while writing it: answered 500 */
	bool bypass;
	int rank;             /* the caller's rank in the org (bypass: every rank) */
	int limit;
	char org[POLICY_UUID_TEXT_LEN + 1];
	size_t sent;
	unsigned status;
} api_req;

/* ---- tokens (the same [auth] rules as the realtime sink) ------------------------------------ */

static void keys_refresh(redis_api *a)
{
	char terr[TOKEN_ERROR_MAX];
	if (a->env.cfg != NULL && token_auth_refresh(&a->auth, a->env.cfg, terr) < 0)
		log_error("stats.keys", "sink=%s: the token keys could not be rebuilt (%s): the previous ones stay",
		          a->env.name, terr);
}

/* ---- responses ------------------------------------------------------------------------------ */

static void req_free(api_req *r)
{
	buf_fini(&r->out);
	free(r);
}

/* r->out is the whole response: sends it with status (a writable callback writes it). */
static void respond(api_req *r, unsigned status)
{
	if (r->oom) {
		status = 500;
		buf_clear(&r->out);
		r->oom = buf_puts(&r->out, "{\"error\":\"out of memory\"}") < 0;
	}
	r->status = status;
	r->responded = true;
	if (r->wsi != NULL)
		lws_callback_on_writable(r->wsi);
}

static void respond_error(api_req *r, unsigned status, const char *error)
{
	buf_clear(&r->out);
	if (buf_puts(&r->out, "{\"error\":") < 0 || buf_json_string(&r->out, error, strlen(error)) < 0 ||
	    buf_putc(&r->out, '}') < 0)
		r->oom = true;
	respond(r, status);
}

static int on_writable(redis_api *a, struct lws *wsi, api_req *r)
{
	if (r->sent == 0) {
		unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr) - 1;
		if (lws_add_http_common_headers(wsi, r->status, "application/json", (lws_filepos_t)r->out.len, &p, end) ||
		    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, (const unsigned char *)"no-store", 8,
		                                 &p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
	}
	size_t left = r->out.len - r->sent;
	size_t n = left < API_CHUNK ? left : API_CHUNK;
	bool last = n == left;
	memcpy(a->chunk + LWS_PRE, r->out.data + r->sent, n);
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

/* The top contacts (ZREVRANGE WITHSCORES) the caller may see, at most r->limit. */
static int contacts_put(api_req *r, const redisReply *rep)
{
	const policy_state *ps = r->a->env.state != NULL ? r->a->env.state(r->a->env.env_arg) : NULL;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i + 1 < rep->elements && r->nitems < (size_t)r->limit; i += 2) {
		const redisReply *c = rep->element[i];
		if (c->str == NULL)
			continue;
		/* privacy(contact_id): the contact's rule rank must not exceed the caller's rank */
		if (!r->bypass && (ps == NULL || policy_state_subject_rank(ps, c->str, c->len) > r->rank))
			continue;
		rc = buf_puts(&r->out, r->nitems++ ? ",{\"contact\":" : "{\"contact\":");
		if (rc == 0)
			rc = buf_json_string(&r->out, c->str, c->len);
		if (rc == 0)
			rc = buf_printf(&r->out, ",\"events\":%lld}", reply_int(rep->element[i + 1]));
	}
	return rc;
}

static void finish(api_req *r)
{
	if (r->failed) {
		respond_error(r, 503, "the aggregates store (Redis) did not answer: try again");
		return;
	}
	int rc = buf_putc(&r->out, ']');
	if (rc == 0 && r->kind == API_DAYS) {
		/* totals over the range */
		rc = buf_puts(&r->out, ",\"total\":{");
		if (rc == 0)
			rc = figures_put(&r->out, r->tot);
		if (rc == 0)
			rc = buf_putc(&r->out, '}');
	}
	if (rc == 0)
		rc = buf_putc(&r->out, '}');
	if (rc < 0)
		r->oom = true;
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
	         (r->kind == API_CONTACTS ? contacts_put(r, rep) : period_put(r, cmd->label, rep)) < 0)
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
	if (a->auth.keys == NULL) {
		snprintf(err, TOKEN_ERROR_MAX + 64, "no key is configured to verify tokens (auth.jwt_secret, auth.jwks_file)");
		return 401;
	}
	token_claims cl;
	char terr[TOKEN_ERROR_MAX];
	if (token_verify(a->auth.keys, &a->auth.rules, hdr + sizeof(bearer) - 1, (int64_t)time(NULL), &cl, terr) < 0) {
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
	auditlog_record(a->env.audit, org, uid != NULL && uid[0] ? uid : NULL, "stats.read", NULL, NULL,
	                ok ? d.data : NULL);
	buf_fini(&d);
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
		if (buf_printf(&r->out, "{\"org\":\"%s\",\"days\":[", r->org) < 0)
			return 500;
		for (time_t t = from; t <= to && rc == 0; t += 86400) {
			struct tm tm;
			gmtime_r(&t, &tm);
			char day[16], k[16];
			strftime(day, sizeof(day), "%Y-%m-%d", &tm);
			strftime(k, sizeof(k), "%Y%m%d", &tm);
			snprintf(key, sizeof(key), "%s:{%s}:day:%s", a->prefix, r->org, k);
			rc = send_cmd(r, day, "HGETALL", key, 0, NULL);
		}
	} else if (strcmp(what, "hours") == 0) {
		int hours;
		if (!int_arg(wsi, "hours=", API_MAX_HOURS, 1, API_MAX_HOURS, &hours)) {
			*error = "hours is 1 to 48";
			return 400;
		}
		r->kind = API_HOURS;
		if (buf_printf(&r->out, "{\"org\":\"%s\",\"hours\":[", r->org) < 0)
			return 500;
		time_t last = now - now % 3600;
		for (time_t t = last - (time_t)(hours - 1) * 3600; t <= last && rc == 0; t += 3600) {
			struct tm tm;
			gmtime_r(&t, &tm);
			char hour[32], k[16];
			strftime(hour, sizeof(hour), "%Y-%m-%dT%H:00:00Z", &tm);
			strftime(k, sizeof(k), "%Y%m%d%H", &tm);
			snprintf(key, sizeof(key), "%s:{%s}:hour:%s", a->prefix, r->org, k);
			rc = send_cmd(r, hour, "HGETALL", key, 0, NULL);
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
		if (buf_printf(&r->out, "{\"org\":\"%s\",\"contacts\":[", r->org) < 0)
			return 500;
		struct tm tm;
		gmtime_r(&day, &tm);
		char k[16];
		strftime(k, sizeof(k), "%Y%m%d", &tm);
		snprintf(key, sizeof(key), "%s:{%s}:day:%s:contacts", a->prefix, r->org, k);
		/* every member: hidden contacts are left out before the limit is applied */
		static const char *const more[] = {"0", "-1", "WITHSCORES"};
		rc = send_cmd(r, "", "ZREVRANGE", key, 3, more);
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
	buf_init(&r->out);
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
		respond_error(r, status, error);
		return 0;
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
		if (a == NULL || pr == NULL || *pr == NULL || !(*pr)->responded)
			return 0;
		{
			api_req *r = *pr;
			if (r->sent + API_CHUNK < r->out.len)
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
	token_auth_fini(&a->auth);
	free(a);
}

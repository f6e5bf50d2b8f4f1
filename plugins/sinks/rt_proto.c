/*
 * rt_proto — the Supabase Realtime (Phoenix channels) wire format: client frames parsed with
 * jansson, server frames written around payloads that may be shared (rt_proto.h).
 */
#include "rt_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int rt_vsn_parse(const char *text, rt_vsn *out)
{
	if (text == NULL || text[0] == '\0' || strcmp(text, "1.0.0") == 0) {
		*out = RT_VSN_1;
		return 0;
	}
	if (strcmp(text, "2.0.0") == 0) {
		*out = RT_VSN_2;
		return 0;
	}
	return -EINVAL;
}

void rt_msg_fini(rt_msg *m)
{
	if (m == NULL)
		return;
	json_decref(m->join_ref);
	json_decref(m->ref);
	free(m->topic);
	free(m->event);
	json_decref(m->payload);
	memset(m, 0, sizeof(*m));
}

/* A ref as kept: NULL for null, else a new reference (strings and numbers only). */
static int ref_take(json_t *v, json_t **out, const char *what, char err[RT_PROTO_ERROR_MAX])
{
	if (v == NULL || json_is_null(v)) {
		*out = NULL;
		return 0;
	}
	if (!json_is_string(v) && !json_is_integer(v)) {
		snprintf(err, RT_PROTO_ERROR_MAX, "%s must be a string or null", what);
		return -EINVAL;
	}
	*out = json_incref(v);
	return 0;
}

int rt_msg_parse(rt_vsn vsn, const char *data, size_t len, rt_msg *out, char err[RT_PROTO_ERROR_MAX])
{
	json_error_t jerr;
	rt_msg m = {0};
	int rc = -EINVAL;
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		snprintf(err, RT_PROTO_ERROR_MAX, "malformed message: not JSON (%s)", jerr.text);
		return -EINVAL;
	}
	json_t *jr, *r, *topic, *event, *payload;
	if (vsn == RT_VSN_2) {
		if (!json_is_array(root) || json_array_size(root) != 5) {
			snprintf(err, RT_PROTO_ERROR_MAX,
			         "malformed message: vsn 2.0.0 expects [join_ref, ref, topic, event, payload]");
			goto cleanup;
		}
		jr = json_array_get(root, 0);
		r = json_array_get(root, 1);
		topic = json_array_get(root, 2);
		event = json_array_get(root, 3);
		payload = json_array_get(root, 4);
	} else {
		if (!json_is_object(root)) {
			snprintf(err, RT_PROTO_ERROR_MAX,
			         "malformed message: vsn 1.0.0 expects {topic, event, payload, ref, join_ref}");
			goto cleanup;
		}
		jr = json_object_get(root, "join_ref");
		r = json_object_get(root, "ref");
		topic = json_object_get(root, "topic");
		event = json_object_get(root, "event");
		payload = json_object_get(root, "payload");
	}
	if (!json_is_string(topic) || !json_is_string(event)) {
		snprintf(err, RT_PROTO_ERROR_MAX, "malformed message: topic and event must be strings");
		goto cleanup;
	}
	if (json_string_length(topic) > RT_TOPIC_MAX || json_string_length(event) > RT_TOPIC_MAX ||
	    strlen(json_string_value(topic)) != json_string_length(topic) ||
	    strlen(json_string_value(event)) != json_string_length(event)) {
		snprintf(err, RT_PROTO_ERROR_MAX, "malformed message: topic or event too long or with a NUL");
		goto cleanup;
	}
	if (payload != NULL && !json_is_null(payload) && !json_is_object(payload)) {
		snprintf(err, RT_PROTO_ERROR_MAX, "malformed message: payload must be an object");
		goto cleanup;
	}
	if ((rc = ref_take(jr, &m.join_ref, "join_ref", err)) < 0 ||
	    (rc = ref_take(r, &m.ref, "ref", err)) < 0)
		goto cleanup;
	rc = -ENOMEM;
	m.topic = strdup(json_string_value(topic));
	m.event = strdup(json_string_value(event));
	m.payload = json_is_object(payload) ? json_incref(payload) : json_object();
	if (m.topic == NULL || m.event == NULL || m.payload == NULL)
		goto cleanup;
	*out = m;
	memset(&m, 0, sizeof(m));
	rc = 0;
cleanup:
	rt_msg_fini(&m);
	json_decref(root);
	return rc;
}

/* A ref of a binary frame: NULL when empty, else a JSON string; -EINVAL for a NUL or bad UTF-8. */
static int bin_ref(const unsigned char *p, size_t n, json_t **out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	if (memchr(p, '\0', n) != NULL)
		return -EINVAL;
	*out = json_stringn((const char *)p, n);
	return *out == NULL ? -EINVAL : 0;
}

int rt_msg_parse_binary(const unsigned char *data, size_t len, rt_msg *out, char err[RT_PROTO_ERROR_MAX])
{
	rt_msg m = {0};
	if (len < 7 || data[0] != 3) {
		snprintf(err, RT_PROTO_ERROR_MAX, "binary frames are only broadcast pushes, which walcast does not serve");
		return -EINVAL;
	}
	size_t jl = data[1], rl = data[2], tl = data[3], el = data[4], ml = data[5];
	if (7 + jl + rl + tl + el + ml > len || tl == 0) {
		snprintf(err, RT_PROTO_ERROR_MAX, "malformed message: truncated binary broadcast push");
		return -EINVAL;
	}
	const unsigned char *p = data + 7;
	int rc = -EINVAL;
	json_t *topic = json_stringn((const char *)p + jl + rl, tl);
	bool topic_ok = topic != NULL && memchr(p + jl + rl, '\0', tl) == NULL;
	json_decref(topic);
	if (bin_ref(p, jl, &m.join_ref) < 0 || bin_ref(p + jl, rl, &m.ref) < 0 || !topic_ok) {
		snprintf(err, RT_PROTO_ERROR_MAX, "malformed message: a ref or the topic is not UTF-8");
		goto cleanup;
	}
	rc = -ENOMEM;
	if ((m.topic = strndup((const char *)p + jl + rl, tl)) == NULL || (m.event = strdup("broadcast")) == NULL ||
	    (m.payload = json_object()) == NULL)
		goto cleanup;
	*out = m;
	return 0;
cleanup:
	rt_msg_fini(&m);
	return rc;
}

/* ---- phx_join ------------------------------------------------------------------------------ */

void rt_join_fini(rt_join *j)
{
	if (j == NULL)
		return;
	for (size_t i = 0; i < j->n; i++) {
		json_decref(j->bindings[i].params);
		free(j->bindings[i].select);
	}
	free(j->bindings);
	json_decref(j->payload);
	free(j->strings);
	memset(j, 0, sizeof(*j));
}

/* Copies s (NULL stays NULL) to *at, advancing it; returns the copy. */
static const char *strings_put(char **at, const char *s)
{
	if (s == NULL)
		return NULL;
	size_t n = strlen(s) + 1;
	char *copy = memcpy(*at, s, n);
	*at += n;
	return copy;
}

static size_t strings_size(const char *s)
{
	return s != NULL ? strlen(s) + 1 : 0;
}

int rt_join_compact(rt_join *j)
{
	if (j->payload == NULL)
		return 0;
	size_t size = 0;
	for (size_t i = 0; i < j->n; i++) {
		const rt_binding *b = &j->bindings[i];
		size += strings_size(b->event) + strings_size(b->schema) + strings_size(b->table) +
		        strings_size(b->filter);
		for (size_t k = 0; k < b->nselect; k++)
			size += strings_size(b->select[k]);
	}
	char *strings = size > 0 ? malloc(size) : NULL;
	if (size > 0 && strings == NULL)
		return -ENOMEM;
	char *at = strings;
	for (size_t i = 0; i < j->n; i++) {
		rt_binding *b = &j->bindings[i];
		b->event = strings_put(&at, b->event);
		b->schema = strings_put(&at, b->schema);
		b->table = strings_put(&at, b->table);
		b->filter = strings_put(&at, b->filter);
		for (size_t k = 0; k < b->nselect; k++)
			b->select[k] = strings_put(&at, b->select[k]);
		json_decref(b->params);
		b->params = NULL;
	}
	json_decref(j->payload);
	j->payload = NULL;
	j->access_token = NULL;
	j->strings = strings;
	return 0;
}

/* A string member of o, NULL when absent or null; -EINVAL when present and not a string. */
static int opt_string(const json_t *o, const char *key, const char **out)
{
	json_t *v = json_object_get(o, key);
	if (v == NULL || json_is_null(v)) {
		*out = NULL;
		return 0;
	}
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return -EINVAL;
	*out = json_string_value(v);
	return 0;
}

static int binding_read(json_t *e, size_t i, rt_binding *b, char reason[RT_PROTO_ERROR_MAX])
{
	if (!json_is_object(e)) {
		snprintf(reason, RT_PROTO_ERROR_MAX, "postgres_changes[%zu] is not an object", i);
		return -EINVAL;
	}
	b->params = json_incref(e);
	if (opt_string(e, "event", &b->event) < 0 || opt_string(e, "schema", &b->schema) < 0 ||
	    opt_string(e, "table", &b->table) < 0 || opt_string(e, "filter", &b->filter) < 0) {
		snprintf(reason, RT_PROTO_ERROR_MAX,
		         "postgres_changes[%zu]: event, schema, table and filter must be strings", i);
		return -EINVAL;
	}
	const char *ev = b->event;
	if (ev == NULL || strcmp(ev, "*") == 0)
		b->events = RT_EV_INSERT | RT_EV_UPDATE | RT_EV_DELETE;
	else if (strcasecmp(ev, "INSERT") == 0)
		b->events = RT_EV_INSERT;
	else if (strcasecmp(ev, "UPDATE") == 0)
		b->events = RT_EV_UPDATE;
	else if (strcasecmp(ev, "DELETE") == 0)
		b->events = RT_EV_DELETE;
	else {
		snprintf(reason, RT_PROTO_ERROR_MAX,
		         "postgres_changes[%zu]: event must be one of *, INSERT, UPDATE, DELETE", i);
		return -EINVAL;
	}
	json_t *sel = json_object_get(e, "select");
	if (sel != NULL && !json_is_null(sel)) {
		if (!json_is_array(sel) || json_array_size(sel) == 0 || json_array_size(sel) > 1600) {
			snprintf(reason, RT_PROTO_ERROR_MAX,
			         "postgres_changes[%zu]: select must be a non-empty list of column names", i);
			return -EINVAL;
		}
		b->nselect = json_array_size(sel);
		b->select = calloc(b->nselect, sizeof(*b->select));
		if (b->select == NULL)
			return -ENOMEM;
		for (size_t k = 0; k < b->nselect; k++) {
			json_t *c = json_array_get(sel, k);
			if (!json_is_string(c) || json_string_length(c) == 0 ||
			    strlen(json_string_value(c)) != json_string_length(c)) {
				snprintf(reason, RT_PROTO_ERROR_MAX,
				         "postgres_changes[%zu]: select must be a list of column names", i);
				return -EINVAL;
			}
			b->select[k] = json_string_value(c);
		}
	}
	return 0;
}

int rt_join_parse(json_t *payload, rt_join *out, char reason[RT_PROTO_ERROR_MAX])
{
	rt_join j = {0};
	int rc = -EINVAL;
	if (!json_is_object(payload)) {
		snprintf(reason, RT_PROTO_ERROR_MAX, "join payload must be an object");
		return -EINVAL;
	}
	j.payload = json_incref(payload);
	json_t *tok = json_object_get(payload, "access_token");
	if (tok != NULL && !json_is_null(tok)) {
		if (!json_is_string(tok)) {
			snprintf(reason, RT_PROTO_ERROR_MAX, "access_token must be a string");
			goto cleanup;
		}
		j.access_token = json_string_value(tok);
	}
	json_t *config = json_object_get(payload, "config");
	if (config != NULL && !json_is_null(config) && !json_is_object(config)) {
		snprintf(reason, RT_PROTO_ERROR_MAX, "config must be an object");
		goto cleanup;
	}
	json_t *presence = json_object_get(config, "presence");
	j.presence = json_is_true(json_object_get(presence, "enabled"));
	j.is_private = json_is_true(json_object_get(config, "private"));
	json_t *pc = json_object_get(config, "postgres_changes");
	if (pc != NULL && !json_is_null(pc)) {
		if (!json_is_array(pc)) {
			snprintf(reason, RT_PROTO_ERROR_MAX, "config.postgres_changes must be a list");
			goto cleanup;
		}
		size_t n = json_array_size(pc);
		if (n > RT_JOIN_MAX_BINDINGS) {
			snprintf(reason, RT_PROTO_ERROR_MAX,
			         "too many postgres_changes bindings: %zu (at most %d per channel)", n,
			         RT_JOIN_MAX_BINDINGS);
			goto cleanup;
		}
		if (n > 0 && (j.bindings = calloc(n, sizeof(*j.bindings))) == NULL) {
			rc = -ENOMEM;
			goto cleanup;
		}
		for (size_t i = 0; i < n; i++) {
			j.n = i + 1;
			if ((rc = binding_read(json_array_get(pc, i), i, &j.bindings[i], reason)) < 0)
				goto cleanup;
		}
	}
	*out = j;
	return 0;
cleanup:
	rt_join_fini(&j);
	return rc;
}

static int json_append(buf *out, const json_t *v)
{
	if (v == NULL)
		return buf_append(out, "null", 4);
	char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (text == NULL)
		return -ENOMEM;
	int rc = buf_puts(out, text);
	free(text);
	return rc;
}

int rt_join_response(buf *out, const rt_join *j, const int64_t *ids)
{
	int rc = buf_puts(out, "{\"postgres_changes\":[");
	for (size_t i = 0; rc == 0 && i < j->n; i++) {
		json_t *e = json_deep_copy(j->bindings[i].params);
		if (e == NULL || json_object_set_new(e, "id", json_integer(ids[i])) < 0) {
			json_decref(e);
			return -ENOMEM;
		}
		if (i > 0)
			rc = buf_putc(out, ',');
		if (rc == 0)
			rc = json_append(out, e);
		json_decref(e);
	}
	return rc == 0 ? buf_puts(out, "]}") : rc;
}

/* ---- server frames ------------------------------------------------------------------------- */

int rt_frame_open(buf *out, const rt_head *h)
{
	int rc;
	if (h->vsn == RT_VSN_2) {
		rc = buf_putc(out, '[');
		if (rc == 0)
			rc = json_append(out, h->join_ref);
		if (rc == 0)
			rc = buf_putc(out, ',');
		if (rc == 0)
			rc = json_append(out, h->ref);
		if (rc == 0)
			rc = buf_putc(out, ',');
		if (rc == 0)
			rc = buf_json_string(out, h->topic, strlen(h->topic));
		if (rc == 0)
			rc = buf_putc(out, ',');
		if (rc == 0)
			rc = buf_json_string(out, h->event, strlen(h->event));
		return rc == 0 ? buf_putc(out, ',') : rc;
	}
	rc = buf_puts(out, "{\"topic\":");
	if (rc == 0)
		rc = buf_json_string(out, h->topic, strlen(h->topic));
	if (rc == 0)
		rc = buf_puts(out, ",\"event\":");
	if (rc == 0)
		rc = buf_json_string(out, h->event, strlen(h->event));
	return rc == 0 ? buf_puts(out, ",\"payload\":") : rc;
}

int rt_frame_close(buf *out, const rt_head *h)
{
	if (h->vsn == RT_VSN_2)
		return buf_putc(out, ']');
	int rc = buf_puts(out, ",\"ref\":");
	if (rc == 0)
		rc = json_append(out, h->ref);
	if (rc == 0)
		rc = buf_puts(out, ",\"join_ref\":");
	if (rc == 0)
		rc = json_append(out, h->join_ref);
	return rc == 0 ? buf_putc(out, '}') : rc;
}

int rt_frame_write(buf *out, const rt_head *h, const char *payload, size_t payload_len)
{
	int rc = rt_frame_open(out, h);
	if (rc == 0)
		rc = buf_append(out, payload, payload_len);
	return rc == 0 ? rt_frame_close(out, h) : rc;
}

int rt_reply_write(buf *out, rt_vsn vsn, const rt_msg *m, const char *status, const char *response)
{
	rt_head h = {vsn, m->join_ref, m->ref, m->topic, "phx_reply"};
	int rc = rt_frame_open(out, &h);
	if (rc == 0)
		rc = buf_puts(out, "{\"status\":");
	if (rc == 0)
		rc = buf_json_string(out, status, strlen(status));
	if (rc == 0)
		rc = buf_puts(out, ",\"response\":");
	if (rc == 0)
		rc = buf_puts(out, response != NULL ? response : "{}");
	if (rc == 0)
		rc = buf_putc(out, '}');
	return rc == 0 ? rt_frame_close(out, &h) : rc;
}

int rt_reply_error(buf *out, rt_vsn vsn, const rt_msg *m, const char *reason)
{
	buf r;
	buf_init(&r);
	int rc = buf_puts(&r, "{\"reason\":");
	if (rc == 0)
		rc = buf_json_string(&r, reason, strlen(reason));
	if (rc == 0)
		rc = buf_putc(&r, '}');
	if (rc == 0)
		rc = rt_reply_write(out, vsn, m, "error", r.data);
	buf_fini(&r);
	return rc;
}

int rt_system_write(buf *out, rt_vsn vsn, const char *topic, const char *extension,
                    const char *status, const char *message, const char *channel)
{
	rt_head h = {vsn, NULL, NULL, topic, "system"};
	int rc = rt_frame_open(out, &h);
	if (rc == 0)
		rc = buf_puts(out, "{\"extension\":");
	if (rc == 0)
		rc = buf_json_string(out, extension, strlen(extension));
	if (rc == 0)
		rc = buf_puts(out, ",\"status\":");
	if (rc == 0)
		rc = buf_json_string(out, status, strlen(status));
	if (rc == 0)
		rc = buf_puts(out, ",\"message\":");
	if (rc == 0)
		rc = buf_json_string(out, message, strlen(message));
	if (rc == 0 && channel != NULL) {
		rc = buf_puts(out, ",\"channel\":");
		if (rc == 0)
			rc = buf_json_string(out, channel, strlen(channel));
	}
	if (rc == 0)
		rc = buf_putc(out, '}');
	return rc == 0 ? rt_frame_close(out, &h) : rc;
}

int rt_reply_stateless(buf *out, rt_vsn vsn, const rt_msg *m)
{
	if (strcmp(m->topic, "phoenix") == 0 && strcmp(m->event, "heartbeat") == 0) {
		int rc = rt_reply_write(out, vsn, m, "ok", NULL);
		return rc < 0 ? rc : 1;
	}
	return 0;
}

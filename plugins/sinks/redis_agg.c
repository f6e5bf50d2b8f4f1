/*
 * redis_agg — the aggregates as merged deltas, and the Lua script that applies them (see
 * redis_agg.h and docs/aggregates.md for the key layout).
 *
 * Layout of a batch: per org (an index by uuid text) a dense array of keys (named by their
 * suffix after "PREFIX:{ORG}:", indexed) and a dense array of fields (indexed by key and name);
 * each key chains its fields in insertion order. Nothing is freed until the batch is cleared.
 */
#include "redis_agg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hex.h"
#include "uuid.h"

/* KEYS[1]: the org's watermark; ARGV[1], ARGV[2]: commit LSNs (16 hex digits) of the first and
 * last transaction of the org in the batch. Then per key KEYS[k] (k >= 2): ARGV type, n, extra
 * and n (field, delta) pairs. Types: h (hash counters), x (hash counters expiring at extra, Unix
 * seconds), z (sorted-set counters), t (reference-counted event times of a contact; extra: the
 * index in KEYS of the contact's hash, where last_event_us is kept). A counter that reaches 0 is
 * removed, so an emptied key disappears. The watermark is checked first and set last, and
 * every key's type is checked before the first write (Redis does not undo the writes of a
 * script that fails half-way): the script runs atomically, so the deltas and the watermark land
 * together or not at all. */
const char REDIS_AGG_SCRIPT[] =
	"local wm = redis.call('GET', KEYS[1])\n"
	"if wm and wm >= ARGV[2] then return 0 end\n"
	"if wm and wm >= ARGV[1] then\n"
	"  return redis.error_reply('WALCAST_STRADDLE watermark ' .. wm .. ' inside batch ' .. ARGV[1] .. '..' .. ARGV[2])\n"
	"end\n"
	"local a = 3\n"
	"for k = 2, #KEYS do\n"
	"  local want = ARGV[a] == 'z' and 'zset' or 'hash'\n"
	"  local have = redis.call('TYPE', KEYS[k]).ok\n"
	"  if have ~= 'none' and have ~= want then\n"
	"    return redis.error_reply('WALCAST_WRONGTYPE ' .. KEYS[k] .. ' is a ' .. have .. ', not a ' .. want)\n"
	"  end\n"
	"  a = a + 3 + 2 * tonumber(ARGV[a + 1])\n"
	"end\n"
	"a = 3\n"
	"for k = 2, #KEYS do\n"
	"  local key, t, n, x = KEYS[k], ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]\n"
	"  a = a + 3\n"
	"  if t == 'z' then\n"
	"    for i = 1, n do\n"
	"      local f, d = ARGV[a], ARGV[a + 1]\n"
	"      a = a + 2\n"
	"      if tonumber(redis.call('ZINCRBY', key, d, f)) == 0 then redis.call('ZREM', key, f) end\n"
	"    end\n"
	"  elseif t == 't' then\n"
	"    local ck = KEYS[tonumber(x)]\n"
	"    local last = redis.call('HGET', ck, 'last_event_us')\n"
	"    local lastn = last and tonumber(last) or -1\n"
	"    local lost, best, bestn = false, last, lastn\n"
	"    for i = 1, n do\n"
	"      local f, d = ARGV[a], ARGV[a + 1]\n"
	"      a = a + 2\n"
	"      if redis.call('HINCRBY', key, f, d) == 0 then\n"
	"        redis.call('HDEL', key, f)\n"
	"        if tonumber(f) == lastn then lost = true end\n"
	"      elseif tonumber(d) > 0 and tonumber(f) > bestn then\n"
	"        best, bestn = f, tonumber(f)\n"
	"      end\n"
	"    end\n"
	"    if redis.call('HLEN', key) == 0 then\n"
	"      redis.call('HDEL', ck, 'last_event_us')\n"
	"    else\n"
	"      if lost then\n"
	"        best, bestn = nil, -1\n"
	"        for _, f in ipairs(redis.call('HKEYS', key)) do\n"
	"          if tonumber(f) > bestn then best, bestn = f, tonumber(f) end\n"
	"        end\n"
	"      end\n"
	"      if best and best ~= last then redis.call('HSET', ck, 'last_event_us', best) end\n"
	"    end\n"
	"  else\n"
	"    for i = 1, n do\n"
	"      local f, d = ARGV[a], ARGV[a + 1]\n"
	"      a = a + 2\n"
	"      if redis.call('HINCRBY', key, f, d) == 0 then redis.call('HDEL', key, f) end\n"
	"    end\n"
	"    if t == 'x' and redis.call('EXISTS', key) == 1 then redis.call('EXPIREAT', key, x) end\n"
	"  end\n"
	"end\n"
	"redis.call('SET', KEYS[1], ARGV[2])\n"
	"return 1\n";

/* A name kept inline when short (every key suffix and almost every field: uuids, times,
 * "kind:direction:status"), so comparing it on a lookup reads memory next to the entry. */
#define NAME_INLINE 56
typedef struct agg_name {
	char *heap;             /* NULL: inl holds it */
	char inl[NAME_INLINE];
} agg_name;

static inline const char *name_str(const agg_name *n)
{
	return n->heap != NULL ? n->heap : n->inl;
}

static int name_set(agg_name *n, const char *s, size_t len)
{
	if (len < NAME_INLINE) {
		memcpy(n->inl, s, len + 1);
		n->heap = NULL;
		return 0;
	}
	n->heap = strdup(s);
	return n->heap != NULL ? 0 : -ENOMEM;
}

typedef struct agg_key {
	agg_name name;    /* suffix after "PREFIX:{ORG}:" */
	char type;        /* 'h', 'x', 'z', 't' */
	int64_t extra;    /* x: expiry (Unix seconds); t: index of the contact hash among the keys */
	uint32_t first;   /* first field (UINT32_MAX: none) */
	uint32_t last;
} agg_key;

typedef struct agg_field {
	agg_name name;
	uint32_t key;
	uint32_t next;
	int64_t delta;
} agg_field;

struct redis_agg_org {
	char id[UUID_TEXT];
	uint64_t first_lsn, last_lsn;
	agg_key *keys;
	size_t nkeys, capk;
	hash_index kix;
	agg_field *fields;
	size_t nfields, capf;
	hash_index fix;
};

#define NONE UINT32_MAX
#define ENTRY_BYTES 96 /* bookkeeping per key or field, for pending_bytes */

/* FNV-1a, seeded; the index takes 32 bits. *len (when not NULL): strlen(s). */
static uint32_t hash_text(uint64_t seed, uint32_t salt, const char *s, size_t *len)
{
	uint64_t h = 14695981039346656037ULL ^ seed ^ ((uint64_t)salt * 0x9E3779B97F4A7C15ULL);
	const char *p = s;
	for (; *p; p++) {
		h ^= (unsigned char)*p;
		h *= 1099511628211ULL;
	}
	if (len != NULL)
		*len = (size_t)(p - s);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (uint32_t)h;
}

/* ---- parsing -------------------------------------------------------------------------- */

int redis_agg_cols_find(const relation *rel, redis_agg_cols *out, char err[REDIS_AGG_ERROR_MAX])
{
	static const char *const names[] = {"org_id", "contact_id", "kind", "direction", "status", "started_at",
	                                    "duration_s"};
	int pos[7];
	for (size_t n = 0; n < 7; n++) {
		pos[n] = -1;
		for (int i = 0; i < rel->ncols; i++)
			if (strcmp(rel->cols[i].name, names[n]) == 0)
				pos[n] = i;
		if (pos[n] < 0) {
			snprintf(err, REDIS_AGG_ERROR_MAX, "table %s.%s has no column %s", rel->schema, rel->name, names[n]);
			return -EINVAL;
		}
	}
	*out = (redis_agg_cols){.rel_id = rel->id, .version = rel->version, .org = pos[0], .contact = pos[1],
	                        .kind = pos[2], .direction = pos[3], .status = pos[4], .started_at = pos[5],
	                        .duration = pos[6]};
	return 0;
}

static int digits(const char *s, size_t len, size_t *i, size_t n, int *out)
{
	int v = 0;
	for (size_t k = 0; k < n; k++, (*i)++) {
		if (*i >= len || s[*i] < '0' || s[*i] > '9')
			return -EINVAL;
		v = v * 10 + (s[*i] - '0');
	}
	*out = v;
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int redis_agg_parse_timestamptz(const char *s, size_t len, int64_t *out)
{
	size_t i = 0;
	int y, mo, d, h, mi, se;
	if (digits(s, len, &i, 4, &y) < 0 || i >= len || s[i++] != '-' || digits(s, len, &i, 2, &mo) < 0 ||
	    i >= len || s[i++] != '-' || digits(s, len, &i, 2, &d) < 0 || i >= len || s[i++] != ' ' ||
	    digits(s, len, &i, 2, &h) < 0 || i >= len || s[i++] != ':' || digits(s, len, &i, 2, &mi) < 0 ||
	    i >= len || s[i++] != ':' || digits(s, len, &i, 2, &se) < 0)
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return -EINVAL;
	int64_t us = 0;
	if (i < len && s[i] == '.') {
		i++;
		int n = 0;
		while (i < len && s[i] >= '0' && s[i] <= '9') {
			if (n < 6) {
				us = us * 10 + (s[i] - '0');
				n++;
			}
			i++;
		}
		if (n == 0)
			return -EINVAL;
		for (; n < 6; n++)
			us *= 10;
	}
	if (i >= len || (s[i] != '+' && s[i] != '-'))
		return -EINVAL;
	int sign = s[i++] == '-' ? -1 : 1;
	int oh, om = 0, os = 0;
	if (digits(s, len, &i, 2, &oh) < 0)
		return -EINVAL;
	if (i < len && s[i] == ':') {
		i++;
		if (digits(s, len, &i, 2, &om) < 0)
			return -EINVAL;
		if (i < len && s[i] == ':') {
			i++;
			if (digits(s, len, &i, 2, &os) < 0)
				return -EINVAL;
		}
	}
	if (i != len)
		return -EINVAL; /* " BC" and anything else */
	int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
	secs -= sign * (oh * 3600 + om * 60 + os);
	*out = secs * 1000000 + us;
	return 0;
}

static int uuid_value(const change_value *v, char out[UUID_TEXT])
{
	uint8_t b[UUID_BYTES];
	if (v->kind != VALUE_TEXT || uuid_parse(v->data, v->len, b) < 0)
		return -EINVAL;
	uuid_format(b, out);
	return 0;
}

int redis_agg_event_parse(const redis_agg_cols *cols, const change_value *tuple, redis_agg_event *out,
                          char err[REDIS_AGG_ERROR_MAX])
{
	redis_agg_event ev = {0};
	const char *bad = NULL;
	if (uuid_value(&tuple[cols->org], ev.org) < 0)
		bad = "org_id";
	else if (tuple[cols->contact].kind == VALUE_NULL)
		ev.contact[0] = '\0';
	else if (uuid_value(&tuple[cols->contact], ev.contact) < 0)
		bad = "contact_id";
	if (bad == NULL) {
		const change_value *k = &tuple[cols->kind], *dir = &tuple[cols->direction], *st = &tuple[cols->status];
		const change_value *at = &tuple[cols->started_at], *dur = &tuple[cols->duration];
		if (k->kind != VALUE_TEXT)
			bad = "kind";
		else if (dir->kind != VALUE_TEXT)
			bad = "direction";
		else if (st->kind != VALUE_TEXT)
			bad = "status";
		else if (at->kind != VALUE_TEXT || redis_agg_parse_timestamptz(at->data, at->len, &ev.started_us) < 0)
			bad = "started_at";
		else if (dur->kind == VALUE_TEXT) {
			char *end;
			errno = 0;
			long long v = strtoll(dur->data, &end, 10);
			if (errno != 0 || *end != '\0' || end == dur->data)
				bad = "duration_s";
			ev.has_duration = true;
			ev.duration_s = v;
		} else if (dur->kind != VALUE_NULL) {
			bad = "duration_s";
		}
		ev.kind = k->data;
		ev.direction = dir->data;
		ev.status = st->data;
	}
	if (bad != NULL) {
		snprintf(err, REDIS_AGG_ERROR_MAX, "events.%s: %s", bad,
		         "absent from the WAL (replica identity?), NULL or not parseable");
		return -EINVAL;
	}
	*out = ev;
	return 0;
}

/* ---- the batch ------------------------------------------------------------------------ */

int redis_agg_batch_init(redis_agg_batch *b)
{
	*b = (redis_agg_batch){0};
	b->seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)b;
	return hash_index_init(&b->index);
}

static void org_free(redis_agg_org *o)
{
	if (o == NULL)
		return;
	for (size_t i = 0; i < o->nkeys; i++)
		free(o->keys[i].name.heap);
	for (size_t i = 0; i < o->nfields; i++)
		free(o->fields[i].name.heap);
	free(o->keys);
	free(o->fields);
	hash_index_fini(&o->kix);
	hash_index_fini(&o->fix);
	free(o);
}

void redis_agg_batch_clear(redis_agg_batch *b)
{
	for (size_t i = 0; i < b->norgs; i++)
		org_free(b->orgs[i]);
	b->norgs = 0;
	b->bytes = 0;
	b->end_lsn = 0;
	b->first_commit_us = 0;
	if (b->index.slots != NULL)
		hash_index_clear(&b->index);
}

void redis_agg_batch_fini(redis_agg_batch *b)
{
	redis_agg_batch_clear(b);
	free(b->orgs);
	hash_index_fini(&b->index);
	*b = (redis_agg_batch){0};
}

void redis_agg_batch_move(redis_agg_batch *dst, redis_agg_batch *src)
{
	redis_agg_batch tmp = *dst;
	*dst = *src;
	*src = tmp;
	redis_agg_batch_clear(src);
}

static redis_agg_org *org_find(const redis_agg_batch *b, const char *id)
{
	if (b->index.slots == NULL)
		return NULL;
	uint32_t h = hash_text(b->seed, 0, id, NULL);
	hash_probe p = hash_index_probe(&b->index, h);
	for (uint32_t i; hash_probe_next(&b->index, &p, &i);)
		if (strcmp(b->orgs[i]->id, id) == 0)
			return b->orgs[i];
	return NULL;
}

static int org_get(redis_agg_batch *b, const char *id, redis_agg_org **out)
{
	redis_agg_org *o = org_find(b, id);
	if (o != NULL) {
		*out = o;
		return 0;
	}
	if (b->norgs == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 8;
		redis_agg_org **n = realloc(b->orgs, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		b->orgs = n;
		b->cap = cap;
	}
	if (hash_index_reserve(&b->index, 1) < 0)
		return -ENOMEM;
	o = calloc(1, sizeof(*o));
	if (o == NULL)
		return -ENOMEM;
	if (hash_index_init(&o->kix) < 0 || hash_index_init(&o->fix) < 0) {
		org_free(o);
		return -ENOMEM;
	}
	snprintf(o->id, sizeof(o->id), "%s", id);
	hash_index_insert(&b->index, hash_text(b->seed, 0, id, NULL), (uint32_t)b->norgs);
	b->orgs[b->norgs++] = o;
	b->bytes += sizeof(*o) + ENTRY_BYTES;
	*out = o;
	return 0;
}

static int key_get(redis_agg_batch *b, redis_agg_org *o, const char *name, char type, int64_t extra, uint32_t *out)
{
	size_t len;
	uint32_t h = hash_text(b->seed, 1, name, &len);
	hash_probe p = hash_index_probe(&o->kix, h);
	for (uint32_t i; hash_probe_next(&o->kix, &p, &i);)
		if (strcmp(name_str(&o->keys[i].name), name) == 0) {
			*out = i;
			return 0;
		}
	if (o->nkeys == o->capk) {
		size_t cap = o->capk ? o->capk * 2 : 16;
		agg_key *n = realloc(o->keys, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		o->keys = n;
		o->capk = cap;
	}
	if (hash_index_reserve(&o->kix, 1) < 0)
		return -ENOMEM;
	agg_key *k = &o->keys[o->nkeys];
	*k = (agg_key){.type = type, .extra = extra, .first = NONE, .last = NONE};
	if (name_set(&k->name, name, len) < 0)
		return -ENOMEM;
	hash_index_insert(&o->kix, h, (uint32_t)o->nkeys);
	b->bytes += sizeof(*k) + (k->name.heap ? len : 0) + ENTRY_BYTES;
	*out = (uint32_t)o->nkeys++;
	return 0;
}

static int field_add(redis_agg_batch *b, redis_agg_org *o, uint32_t key, const char *name, int64_t delta)
{
	size_t len;
	uint32_t h = hash_text(b->seed, key + 2, name, &len);
	hash_probe p = hash_index_probe(&o->fix, h);
	for (uint32_t i; hash_probe_next(&o->fix, &p, &i);) {
		agg_field *f = &o->fields[i];
		if (f->key == key && strcmp(name_str(&f->name), name) == 0) {
			f->delta += delta;
			return 0;
		}
	}
	if (o->nfields == o->capf) {
		size_t cap = o->capf ? o->capf * 2 : 32;
		agg_field *n = realloc(o->fields, cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		o->fields = n;
		o->capf = cap;
	}
	if (hash_index_reserve(&o->fix, 1) < 0)
		return -ENOMEM;
	uint32_t id = (uint32_t)o->nfields;
	agg_field *f = &o->fields[id];
	*f = (agg_field){.key = key, .next = NONE, .delta = delta};
	if (name_set(&f->name, name, len) < 0)
		return -ENOMEM;
	o->nfields++;
	hash_index_insert(&o->fix, h, id);
	agg_key *k = &o->keys[key];
	if (k->last == NONE)
		k->first = id;
	else
		o->fields[k->last].next = id;
	k->last = id;
	b->bytes += sizeof(*f) + (f->name.heap ? len : 0) + ENTRY_BYTES / 2;
	return 0;
}

static bool status_missed(const redis_agg_conf *conf, const char *status)
{
	size_t n = strlen(status);
	for (const char *s = conf->missed_statuses; s != NULL && *s;) {
		while (*s == ' ' || *s == ',')
			s++;
		const char *e = s;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > s && t[-1] == ' ')
			t--;
		if ((size_t)(t - s) == n && n > 0 && strncmp(s, status, n) == 0)
			return true;
		s = e;
	}
	return false;
}

/* The counters of the per-day and per-hour hashes; kds: "kind:direction:status". */
static int period_fields(redis_agg_batch *b, redis_agg_org *o, uint32_t key, const redis_agg_conf *conf,
                         const redis_agg_event *ev, const char *kind_field, bool call, const char *kds, int sign)
{
	int rc = field_add(b, o, key, kind_field, sign);
	if (rc == 0)
		rc = field_add(b, o, key, kds, sign);
	if (rc == 0 && call && status_missed(conf, ev->status))
		rc = field_add(b, o, key, "missed", sign);
	if (rc == 0 && call && ev->has_duration) {
		rc = field_add(b, o, key, "call_duration_s", sign * ev->duration_s);
		if (rc == 0)
			rc = field_add(b, o, key, "calls_timed", sign);
	}
	return rc;
}

/* Writes v (>= 0) as exactly width decimal digits at p; returns the end. */
static char *put_digits(char *p, int64_t v, int width)
{
	for (int i = width - 1; i >= 0; i--, v /= 10)
		p[i] = (char)('0' + v % 10);
	return p + width;
}

/* Writes v in decimal at p (no NUL); returns the end. */
static char *put_int(char *p, int64_t v)
{
	char tmp[24];
	int n = 0;
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	if (v < 0)
		*p++ = '-';
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

/* Civil date of a day count since 1970-01-01 (Howard Hinnant's civil_from_days). */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

int redis_agg_add(redis_agg_batch *b, const redis_agg_conf *conf, const redis_agg_event *ev, int sign,
                  uint64_t commit_lsn, int64_t now_s)
{
	redis_agg_org *o;
	int rc = org_get(b, ev->org, &o);
	if (rc < 0)
		return rc;
	if (o->first_lsn == 0 || commit_lsn < o->first_lsn)
		o->first_lsn = commit_lsn;
	if (commit_lsn > o->last_lsn)
		o->last_lsn = commit_lsn;

	/* key names are built by hand: this runs for every row of the stream */
	int64_t secs = ev->started_us >= 0 ? ev->started_us / 1000000 : -((-ev->started_us + 999999) / 1000000);
	int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
	int64_t y;
	int mo, d;
	civil_from_days(days, &y, &mo, &d);
	if (y < 0 || y > 9999)
		return -EINVAL;
	char day[9];
	put_digits(put_digits(put_digits(day, y, 4), mo, 2), d, 2)[0] = '\0';
	int hh = (int)((secs - days * 86400) / 3600);

	bool call = strcmp(ev->kind, "call") == 0;
	const char *kind_field = call ? "calls" : strcmp(ev->kind, "sms") == 0 ? "sms" : "other";
	char kds[REDIS_AGG_FIELD_MAX];
	size_t lk = strlen(ev->kind), ld = strlen(ev->direction), ls = strlen(ev->status);
	if (lk + ld + ls + 2 < sizeof(kds))
		stpcpy(stpcpy(stpcpy(stpcpy(stpcpy(kds, ev->kind), ":"), ev->direction), ":"), ev->status);
	else
		snprintf(kds, sizeof(kds), "%s:%s:%s", ev->kind, ev->direction, ev->status);

	char name[128];
	uint32_t key;
	stpcpy(stpcpy(name, "day:"), day);
	if ((rc = key_get(b, o, name, 'h', 0, &key)) < 0 ||
	    (rc = period_fields(b, o, key, conf, ev, kind_field, call, kds, sign)) < 0)
		return rc;

	int64_t hour = days * 86400 + hh * 3600;
	if (conf->hour_window_h > 0 && hour + conf->hour_window_h * 3600 > now_s) {
		put_digits(stpcpy(stpcpy(name, "hour:"), day), hh, 2)[0] = '\0';
		int64_t expire = hour + (conf->hour_window_h + 1) * 3600;
		if ((rc = key_get(b, o, name, 'x', expire, &key)) < 0 ||
		    (rc = period_fields(b, o, key, conf, ev, kind_field, call, kds, sign)) < 0)
			return rc;
	}

	if (ev->contact[0] == '\0')
		return 0;
	stpcpy(stpcpy(stpcpy(name, "day:"), day), ":contacts");
	if ((rc = key_get(b, o, name, 'z', 0, &key)) < 0 || (rc = field_add(b, o, key, ev->contact, sign)) < 0)
		return rc;

	char *end = stpcpy(stpcpy(name, "contact:"), ev->contact);
	uint32_t ckey;
	if ((rc = key_get(b, o, name, 'h', 0, &ckey)) < 0 || (rc = field_add(b, o, ckey, "events", sign)) < 0)
		return rc;
	rc = field_add(b, o, ckey, kind_field, sign);
	if (rc == 0 && call && ev->has_duration)
		rc = field_add(b, o, ckey, "call_duration_s", sign * ev->duration_s);
	if (rc < 0)
		return rc;
	stpcpy(end, ":times");
	char us[24];
	put_int(us, ev->started_us)[0] = '\0';
	if ((rc = key_get(b, o, name, 't', ckey, &key)) < 0 || (rc = field_add(b, o, key, us, sign)) < 0)
		return rc;
	return 0;
}

const char *redis_agg_org_id(const redis_agg_batch *b, size_t i, uint64_t *first_lsn, uint64_t *last_lsn)
{
	const redis_agg_org *o = b->orgs[i];
	if (first_lsn != NULL)
		*first_lsn = o->first_lsn;
	if (last_lsn != NULL)
		*last_lsn = o->last_lsn;
	return o->id;
}

int64_t redis_agg_delta(const redis_agg_batch *b, const char *key, const char *field)
{
	/* key: PREFIX:{ORG}:SUFFIX */
	const char *open = strchr(key, '{'), *close = open ? strchr(open, '}') : NULL;
	if (close == NULL || close[1] != ':')
		return 0;
	char org[UUID_TEXT];
	snprintf(org, sizeof(org), "%.*s", (int)(close - open - 1), open + 1);
	const redis_agg_org *o = org_find(b, org);
	if (o == NULL)
		return 0;
	for (size_t i = 0; i < o->nfields; i++) {
		const agg_field *f = &o->fields[i];
		if (strcmp(name_str(&f->name), field) == 0 && strcmp(name_str(&o->keys[f->key].name), close + 2) == 0)
			return f->delta;
	}
	return 0;
}

void redis_agg_wm_key(const redis_agg_conf *conf, const char *org, char *out, size_t n)
{
	snprintf(out, n, "%s:{%s}:wm", conf->prefix, org);
}

void redis_agg_lsn_text(uint64_t lsn, char out[17])
{
	snprintf(out, 17, "%016" PRIX64, lsn);
}

int redis_agg_lsn_parse(const char *s, size_t len, uint64_t *out)
{
	if (len != 16)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < 16; i++) {
		int d = hex_digit(s[i]);
		if (d < 0)
			return -EINVAL;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return 0;
}

/* ---- encoding ------------------------------------------------------------------------- */

int redis_agg_org_command(const redis_agg_batch *b, size_t i, const redis_agg_conf *conf, const char *sha,
                          buf *out, int *argc, const char ***argv, size_t **argvlen)
{
	const redis_agg_org *o = b->orgs[i];
	/* EVALSHA sha numkeys wm keys... first last (type n extra (f d)*)* */
	size_t nargs = 3 + 1 + o->nkeys + 2 + 3 * o->nkeys + 2 * o->nfields;
	size_t *offs = calloc(nargs, sizeof(*offs));
	const char **av = calloc(nargs, sizeof(*av));
	size_t *al = calloc(nargs, sizeof(*al));
	int rc = offs && av && al ? 0 : -ENOMEM;
	size_t n = 0;
	buf_clear(out);
#define ARG(...)                                                   \
	do {                                                           \
		if (rc == 0) {                                             \
			offs[n] = out->len;                                    \
			rc = buf_printf(out, __VA_ARGS__);                     \
			if (rc == 0) {                                         \
				al[n] = out->len - offs[n];                        \
				rc = buf_putc(out, '\0');                          \
			}                                                      \
			n++;                                                   \
		}                                                          \
	} while (0)
	/* the per-field arguments without printf: a round carries every field of the org */
#define ARGTEXT(str)                                               \
	do {                                                           \
		if (rc == 0) {                                             \
			const char *s_ = (str);                                \
			size_t l_ = strlen(s_);                                \
			offs[n] = out->len;                                    \
			al[n] = l_;                                            \
			rc = buf_append(out, s_, l_ + 1);                      \
			n++;                                                   \
		}                                                          \
	} while (0)
#define ARGINT(v)                                                  \
	do {                                                           \
		char t_[24];                                               \
		*put_int(t_, (v)) = '\0';                                  \
		ARGTEXT(t_);                                               \
	} while (0)
	ARG("EVALSHA");
	ARG("%s", sha);
	ARG("%zu", 1 + o->nkeys);
	ARG("%s:{%s}:wm", conf->prefix, o->id);
	for (size_t k = 0; k < o->nkeys; k++)
		ARG("%s:{%s}:%s", conf->prefix, o->id, name_str(&o->keys[k].name));
	char lsn[17];
	redis_agg_lsn_text(o->first_lsn, lsn);
	ARG("%s", lsn);
	redis_agg_lsn_text(o->last_lsn, lsn);
	ARG("%s", lsn);
	for (size_t k = 0; k < o->nkeys; k++) {
		const agg_key *key = &o->keys[k];
		size_t nonzero = 0;
		for (uint32_t f = key->first; f != NONE; f = o->fields[f].next)
			nonzero += o->fields[f].delta != 0;
		char type[2] = {key->type, '\0'};
		ARGTEXT(type);
		ARGINT((int64_t)nonzero);
		/* t: the contact hash's position in KEYS (1-based; KEYS[1] is the watermark) */
		ARGINT(key->type == 't' ? key->extra + 2 : key->extra);
		for (uint32_t f = key->first; f != NONE; f = o->fields[f].next) {
			if (o->fields[f].delta == 0)
				continue;
			ARGTEXT(name_str(&o->fields[f].name));
			ARGINT(o->fields[f].delta);
		}
	}
#undef ARG
#undef ARGTEXT
#undef ARGINT
	if (rc == 0) {
		for (size_t k = 0; k < n; k++)
			av[k] = out->data + offs[k];
		*argc = (int)n;
		*argv = av;
		*argvlen = al;
		av = NULL;
		al = NULL;
	}
	free(offs);
	free(av);
	free(al);
	return rc;
}

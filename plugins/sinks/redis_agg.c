/*
 * redis_agg — the aggregates as merged deltas, and the Lua script that applies them (see
 * redis_agg.h and docs/aggregates.md for the key layout).
 *
 * Layout of a batch. The (kind, direction, status) combinations are interned once per batch
 * ("classes"). Per org (an index by uuid text): its periods (a day or an hour, indexed by their
 * number), its contacts (indexed by uuid text) and one array of cells, indexed by (tag, owner,
 * id): per period and class the events, call durations and timed calls; per day and contact the
 * events (the :contacts sorted set); per contact and `started_at` the events (the :times hash).
 * A row is a handful of lookups on integers and one on its contact's uuid, whatever the number
 * of counters it moves; the key and field names (calls, missed, "call:inbound:missed", ...) are
 * only written when a batch is encoded. Each owner chains its cells in insertion order. Nothing
 * is freed until the batch is cleared.
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
 * together or not at all. A batch the watermark already covers (a repeat) writes the watermark
 * again anyway: the repeat is then a write on its connection, so a WAIT after it also waits for
 * the replicas to hold the first try, whose reply was lost (else a repeat on a new connection
 * would be acknowledged without waiting, and a failover could still lose the first try). */
const char REDIS_AGG_SCRIPT[] =
	"local wm = redis.call('GET', KEYS[1])\n"
	"if wm and wm >= ARGV[2] then redis.call('SET', KEYS[1], wm) return 0 end\n"
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


/* A (kind, direction, status) combination: the field "kind:direction:status" of the period
 * hashes, interned once per batch so that a row costs one lookup for all its period counters. */
struct redis_agg_class {
	char *kds;        /* "kind:direction:status" (cut at REDIS_AGG_FIELD_MAX - 1 bytes) */
	size_t lk, ld, ls;
	uint8_t kind;     /* KIND_CALL, KIND_SMS, KIND_OTHER */
	bool call;        /* kind == KIND_CALL */
	bool missed;      /* a call whose status is one of missed_statuses */
};

/* The hash fields counting events of a kind ("calls" for kind "call", "sms", "other"). */
enum { KIND_CALL, KIND_SMS, KIND_OTHER };
static const char *const kind_names[] = {"calls", "sms", "other"};

/* Cells: the merged counters below a period or a contact, one index per org over all of them. */
enum { CELL_CLASS, CELL_DAY_CONTACT, CELL_TIME };

typedef struct agg_cell {
	int64_t id;       /* CELL_CLASS: class; CELL_DAY_CONTACT: contact; CELL_TIME: started_at (µs) */
	uint32_t owner;   /* the period (CELL_CLASS, CELL_DAY_CONTACT) or the contact (CELL_TIME) */
	uint32_t next;    /* the owner's next cell of the same tag, in insertion order */
	uint8_t tag;
	int64_t n;        /* events */
	int64_t dur;      /* CELL_CLASS: the sum of duration_s over calls that have one */
	int64_t timed;    /* CELL_CLASS: calls that have a duration_s */
} agg_cell;

/* A cell chain: first and last cell (NONE: empty). */
typedef struct agg_chain {
	uint32_t first, last;
} agg_chain;

/* PREFIX:{ORG}:day:YYYYMMDD (+ :contacts) or PREFIX:{ORG}:hour:YYYYMMDDHH. */
typedef struct agg_period {
	int64_t num;      /* days or hours since 1970-01-01 */
	int64_t expire;   /* hour: the key's EXPIREAT (Unix seconds) */
	bool hour;
	agg_chain classes;  /* CELL_CLASS */
	agg_chain contacts; /* day: CELL_DAY_CONTACT (the :contacts sorted set) */
} agg_period;

/* PREFIX:{ORG}:contact:CONTACT (+ :times). */
typedef struct agg_contact {
	char id[UUID_TEXT];
	int64_t events, kinds[3], dur; /* kinds: by KIND_ */
	agg_chain times;  /* CELL_TIME */
} agg_contact;

struct redis_agg_org {
	char id[UUID_TEXT];
	uint64_t first_lsn, last_lsn;
	agg_period *periods;
	size_t nperiods, capp;
	hash_index pix;
	agg_contact *contacts;
	size_t ncontacts, capc;
	hash_index cix;
	agg_cell *cells;
	size_t ncells, capcells;
	hash_index cellix;
};

#define NONE UINT32_MAX
#define ENTRY_BYTES 32 /* index slots and allocator slack per entry, for pending_bytes */

/* Makes room for one more element in *arr (of *cap, n used). 0 or -ENOMEM. */
static int grow(void *arr, size_t *cap, size_t n, size_t size, size_t first)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? *cap * 2 : first;
	void *p = realloc(*(void **)arr, c * size);
	if (p == NULL)
		return -ENOMEM;
	*(void **)arr = p;
	*cap = c;
	return 0;
}

/* A 32-bit hash of two integers, seeded. */
static uint32_t hash_pair(uint64_t seed, uint64_t x, uint64_t y)
{
	return (uint32_t)hash_final(hash_final(seed ^ x) ^ y);
}

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
	int rc = hash_index_init(&b->index);
	if (rc == 0 && (rc = hash_index_init(&b->class_index)) < 0)
		hash_index_fini(&b->index);
	return rc;
}

static void org_free(redis_agg_org *o)
{
	if (o == NULL)
		return;
	free(o->periods);
	free(o->contacts);
	free(o->cells);
	hash_index_fini(&o->pix);
	hash_index_fini(&o->cix);
	hash_index_fini(&o->cellix);
	free(o);
}

/* Frees *arr and its index when a round used less than a quarter of them (after a backlog). */
static void org_shrink(void *arr, size_t *cap, size_t used, hash_index *ix)
{
	if (used >= *cap / 4 || *cap <= 256)
		return;
	free(*(void **)arr);
	*(void **)arr = NULL;
	*cap = 0;
	hash_index_fini(ix);
}

/* Empties o for reuse by the next batch: its arrays and indexes stay allocated (no allocation
 * and no page faults while they refill) unless this batch used little of them. 0 or -ENOMEM. */
static int org_reset(redis_agg_org *o)
{
	org_shrink(&o->periods, &o->capp, o->nperiods, &o->pix);
	org_shrink(&o->contacts, &o->capc, o->ncontacts, &o->cix);
	org_shrink(&o->cells, &o->capcells, o->ncells, &o->cellix);
	o->nperiods = o->ncontacts = o->ncells = 0;
	o->first_lsn = o->last_lsn = 0;
	hash_index *ix[] = {&o->pix, &o->cix, &o->cellix};
	for (size_t i = 0; i < 3; i++) {
		if (ix[i]->slots != NULL)
			hash_index_clear(ix[i]);
		else if (hash_index_init(ix[i]) < 0)
			return -ENOMEM;
	}
	return 0;
}

void redis_agg_batch_clear(redis_agg_batch *b)
{
	/* the orgs stay allocated, emptied, for the next batch (orgs[norgs..nalloc)) */
	size_t keep = 0;
	for (size_t i = 0; i < b->nalloc; i++) {
		if (i < b->norgs && org_reset(b->orgs[i]) < 0) {
			org_free(b->orgs[i]);
			continue;
		}
		b->orgs[keep++] = b->orgs[i];
	}
	b->nalloc = keep;
	for (size_t i = 0; i < b->nclasses; i++)
		free(b->classes[i].kds);
	b->norgs = 0;
	b->nclasses = 0;
	b->last_org = NULL;
	b->bytes = 0;
	b->end_lsn = 0;
	b->first_commit_us = 0;
	if (b->index.slots != NULL)
		hash_index_clear(&b->index);
	if (b->class_index.slots != NULL)
		hash_index_clear(&b->class_index);
}

void redis_agg_batch_fini(redis_agg_batch *b)
{
	redis_agg_batch_clear(b);
	for (size_t i = 0; i < b->nalloc; i++)
		org_free(b->orgs[i]);
	free(b->orgs);
	free(b->classes);
	hash_index_fini(&b->index);
	hash_index_fini(&b->class_index);
	*b = (redis_agg_batch){0};
}

void redis_agg_batch_move(redis_agg_batch *dst, redis_agg_batch *src)
{
	redis_agg_batch tmp = *dst;
	*dst = *src;
	*src = tmp;
	redis_agg_batch_clear(src);
}

static uint32_t org_hash(const redis_agg_batch *b, const char *id)
{
	return (uint32_t)hash_bytes(b->seed, id, UUID_TEXT_LEN);
}

static redis_agg_org *org_find(const redis_agg_batch *b, const char *id)
{
	if (b->index.slots == NULL)
		return NULL;
	hash_probe p = hash_index_probe(&b->index, org_hash(b, id));
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
	if (hash_index_reserve(&b->index, 1) < 0)
		return -ENOMEM;
	if (b->norgs < b->nalloc) {
		o = b->orgs[b->norgs]; /* emptied by a clear */
	} else {
		if (grow(&b->orgs, &b->cap, b->nalloc, sizeof(*b->orgs), 8) < 0 || (o = calloc(1, sizeof(*o))) == NULL)
			return -ENOMEM;
		if (hash_index_init(&o->pix) < 0 || hash_index_init(&o->cix) < 0 || hash_index_init(&o->cellix) < 0) {
			org_free(o);
			return -ENOMEM;
		}
		b->orgs[b->nalloc++] = o;
	}
	snprintf(o->id, sizeof(o->id), "%s", id);
	hash_index_insert(&b->index, org_hash(b, id), (uint32_t)b->norgs);
	b->norgs++;
	b->bytes += sizeof(*o) + ENTRY_BYTES;
	*out = o;
	return 0;
}

static bool status_missed(const redis_agg_conf *conf, const char *status, size_t n)
{
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

static uint32_t class_hash(const redis_agg_batch *b, const char *k, size_t lk, const char *d, size_t ld,
                           const char *s, size_t ls)
{
	uint64_t h = hash_bytes(b->seed, k, lk);
	h = hash_bytes(h, d, ld);
	return (uint32_t)hash_bytes(h, s, ls);
}

/* The class of ev's (kind, direction, status), interned on first sight. 0 or -ENOMEM. */
static int class_get(redis_agg_batch *b, const redis_agg_conf *conf, const redis_agg_event *ev, uint32_t *out)
{
	size_t lk = strlen(ev->kind), ld = strlen(ev->direction), ls = strlen(ev->status);
	uint32_t h = class_hash(b, ev->kind, lk, ev->direction, ld, ev->status, ls);
	hash_probe p = hash_index_probe(&b->class_index, h);
	for (uint32_t i; hash_probe_next(&b->class_index, &p, &i);) {
		const redis_agg_class *c = &b->classes[i];
		if (c->lk == lk && c->ld == ld && c->ls == ls && memcmp(c->kds, ev->kind, lk) == 0 &&
		    memcmp(c->kds + lk + 1, ev->direction, ld) == 0 && memcmp(c->kds + lk + ld + 2, ev->status, ls) == 0) {
			*out = i;
			return 0;
		}
	}
	if (grow(&b->classes, &b->capclasses, b->nclasses, sizeof(*b->classes), 16) < 0 ||
	    hash_index_reserve(&b->class_index, 1) < 0)
		return -ENOMEM;
	redis_agg_class *c = &b->classes[b->nclasses];
	*c = (redis_agg_class){.lk = lk, .ld = ld, .ls = ls};
	/* the full text is kept for comparing; the field name is cut where REDIS_AGG_FIELD_MAX says */
	c->kds = malloc(lk + ld + ls + 3);
	if (c->kds == NULL)
		return -ENOMEM;
	stpcpy(stpcpy(stpcpy(stpcpy(stpcpy(c->kds, ev->kind), ":"), ev->direction), ":"), ev->status);
	c->call = strcmp(ev->kind, "call") == 0;
	c->kind = c->call ? KIND_CALL : strcmp(ev->kind, "sms") == 0 ? KIND_SMS : KIND_OTHER;
	c->missed = c->call && status_missed(conf, ev->status, ls);
	hash_index_insert(&b->class_index, h, (uint32_t)b->nclasses);
	b->bytes += sizeof(*c) + lk + ld + ls + 3 + ENTRY_BYTES;
	*out = (uint32_t)b->nclasses++;
	return 0;
}

/* The period (day or hour num) of o, created empty on first use. 0 or -ENOMEM. */
static int period_get(redis_agg_batch *b, redis_agg_org *o, bool hour, int64_t num, int64_t expire, uint32_t *out)
{
	uint32_t h = hash_pair(b->seed, hour, (uint64_t)num);
	hash_probe p = hash_index_probe(&o->pix, h);
	for (uint32_t i; hash_probe_next(&o->pix, &p, &i);)
		if (o->periods[i].num == num && o->periods[i].hour == hour) {
			*out = i;
			return 0;
		}
	if (grow(&o->periods, &o->capp, o->nperiods, sizeof(*o->periods), 16) < 0 || hash_index_reserve(&o->pix, 1) < 0)
		return -ENOMEM;
	o->periods[o->nperiods] = (agg_period){.num = num, .expire = expire, .hour = hour, .classes = {NONE, NONE},
	                                       .contacts = {NONE, NONE}};
	hash_index_insert(&o->pix, h, (uint32_t)o->nperiods);
	b->bytes += sizeof(agg_period) + ENTRY_BYTES;
	*out = (uint32_t)o->nperiods++;
	return 0;
}

/* The contact id (uuid text) of o, created with zero totals on first use. 0 or -ENOMEM. */
static int contact_get(redis_agg_batch *b, redis_agg_org *o, const char *id, uint32_t *out)
{
	uint32_t h = (uint32_t)hash_bytes(b->seed, id, UUID_TEXT_LEN);
	hash_probe p = hash_index_probe(&o->cix, h);
	for (uint32_t i; hash_probe_next(&o->cix, &p, &i);)
		if (memcmp(o->contacts[i].id, id, UUID_TEXT_LEN) == 0) {
			*out = i;
			return 0;
		}
	if (grow(&o->contacts, &o->capc, o->ncontacts, sizeof(*o->contacts), 16) < 0 ||
	    hash_index_reserve(&o->cix, 1) < 0)
		return -ENOMEM;
	agg_contact *c = &o->contacts[o->ncontacts];
	*c = (agg_contact){.times = {NONE, NONE}};
	snprintf(c->id, sizeof(c->id), "%s", id);
	hash_index_insert(&o->cix, h, (uint32_t)o->ncontacts);
	b->bytes += sizeof(agg_contact) + ENTRY_BYTES;
	*out = (uint32_t)o->ncontacts++;
	return 0;
}

/* The cell (tag, owner, id) of o, appended to chain (the owner's) when new. Returns it, or NULL
 * (out of memory). chain must not live in o->cells. */
static agg_cell *cell_get(redis_agg_batch *b, redis_agg_org *o, uint8_t tag, uint32_t owner, int64_t id,
                          agg_chain *chain)
{
	uint32_t h = hash_pair(b->seed, (uint64_t)tag << 32 | owner, (uint64_t)id);
	hash_probe p = hash_index_probe(&o->cellix, h);
	for (uint32_t i; hash_probe_next(&o->cellix, &p, &i);) {
		agg_cell *c = &o->cells[i];
		if (c->id == id && c->owner == owner && c->tag == tag)
			return c;
	}
	if (grow(&o->cells, &o->capcells, o->ncells, sizeof(*o->cells), 64) < 0 || hash_index_reserve(&o->cellix, 1) < 0)
		return NULL;
	uint32_t n = (uint32_t)o->ncells++;
	o->cells[n] = (agg_cell){.id = id, .owner = owner, .next = NONE, .tag = tag};
	hash_index_insert(&o->cellix, h, n);
	if (chain->last == NONE)
		chain->first = n;
	else
		o->cells[chain->last].next = n;
	chain->last = n;
	b->bytes += sizeof(agg_cell) + ENTRY_BYTES / 2;
	return &o->cells[n];
}

/* Adds a row of class cls times sign to the counters of period per. 0 or -ENOMEM. */
static int period_add(redis_agg_batch *b, redis_agg_org *o, uint32_t per, uint32_t cls, const redis_agg_event *ev,
                      int sign)
{
	agg_cell *c = cell_get(b, o, CELL_CLASS, per, cls, &o->periods[per].classes);
	if (c == NULL)
		return -ENOMEM;
	c->n += sign;
	if (b->classes[cls].call && ev->has_duration) {
		c->dur += sign * ev->duration_s;
		c->timed += sign;
	}
	return 0;
}

/* Floor division for a positive divisor. */
static int64_t floor_div(int64_t a, int64_t d)
{
	return a >= 0 ? a / d : -((-a + d - 1) / d);
}

int redis_agg_add(redis_agg_batch *b, const redis_agg_conf *conf, const redis_agg_event *ev, int sign,
                  uint64_t commit_lsn, int64_t now_s)
{
	/* days 0000-01-01 .. 9999-12-31: a key holds a 4-digit year */
	int64_t secs = floor_div(ev->started_us, 1000000);
	int64_t days = floor_div(secs, 86400);
	if (days < INT64_C(-719528) || days > INT64_C(2932896))
		return -EINVAL;
	redis_agg_org *o = b->last_org;
	int rc = 0;
	if (o == NULL || strcmp(o->id, ev->org) != 0) {
		if ((rc = org_get(b, ev->org, &o)) < 0)
			return rc;
		b->last_org = o;
	}
	if (o->first_lsn == 0 || commit_lsn < o->first_lsn)
		o->first_lsn = commit_lsn;
	if (commit_lsn > o->last_lsn)
		o->last_lsn = commit_lsn;

	uint32_t cls, day, per;
	if ((rc = class_get(b, conf, ev, &cls)) < 0 || (rc = period_get(b, o, false, days, 0, &day)) < 0 ||
	    (rc = period_add(b, o, day, cls, ev, sign)) < 0)
		return rc;
	int64_t hours = floor_div(secs, 3600);
	if (conf->hour_window_h > 0 && hours * 3600 + conf->hour_window_h * 3600 > now_s) {
		int64_t expire = hours * 3600 + (conf->hour_window_h + 1) * 3600;
		if ((rc = period_get(b, o, true, hours, expire, &per)) < 0 || (rc = period_add(b, o, per, cls, ev, sign)) < 0)
			return rc;
	}
	if (ev->contact[0] == '\0')
		return 0;
	uint32_t ct;
	if ((rc = contact_get(b, o, ev->contact, &ct)) < 0)
		return rc;
	agg_cell *c = cell_get(b, o, CELL_DAY_CONTACT, day, ct, &o->periods[day].contacts);
	if (c == NULL)
		return -ENOMEM;
	c->n += sign;
	agg_contact *k = &o->contacts[ct];
	if ((c = cell_get(b, o, CELL_TIME, ct, ev->started_us, &k->times)) == NULL)
		return -ENOMEM;
	c->n += sign;
	const redis_agg_class *cl = &b->classes[cls];
	k->events += sign;
	k->kinds[cl->kind] += sign;
	if (cl->call && ev->has_duration)
		k->dur += sign * ev->duration_s;
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
	/* key: PREFIX:{ORG}:SUFFIX; read back from the org's command, which holds every nonzero delta */
	const char *open = strchr(key, '{'), *close = open ? strchr(open, '}') : NULL;
	if (close == NULL || close[1] != ':')
		return 0;
	char org[UUID_TEXT];
	snprintf(org, sizeof(org), "%.*s", (int)(close - open - 1), open + 1);
	size_t i = 0;
	while (i < b->norgs && strcmp(b->orgs[i]->id, org) != 0)
		i++;
	buf out;
	buf_init(&out);
	int argc;
	const char **argv;
	size_t *argvlen;
	redis_agg_conf conf = {.prefix = ""};
	char pfx[64];
	snprintf(pfx, sizeof(pfx), "%.*s", (int)(open - key - 1 > 0 ? open - key - 1 : 0), key);
	conf.prefix = pfx;
	int64_t delta = 0;
	if (i < b->norgs && redis_agg_org_command(b, i, &conf, "-", &out, &argc, &argv, &argvlen) == 0) {
		int nk = atoi(argv[2]);
		int a = 3 + nk + 2;
		for (int k = 1; k < nk; k++) {
			int n = atoi(argv[a + 1]);
			a += 3;
			for (int f = 0; f < n; f++, a += 2)
				if (strcmp(argv[3 + k], key) == 0 && strcmp(argv[a], field) == 0)
					delta += strtoll(argv[a + 1], NULL, 10);
		}
		free(argv);
		free(argvlen);
	}
	buf_fini(&out);
	return delta;
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

/* The arguments of a command as they are written into a buf: offsets, since the buf may move. */
typedef struct emitter {
	buf *out;
	size_t *offs, *lens;
	size_t n, max;
	int rc;
} emitter;

/* Appends the argument a (la bytes) followed by b (lb bytes). */
static void emit2(emitter *e, const char *a, size_t la, const char *b, size_t lb)
{
	if (e->rc != 0)
		return;
	if (e->n == e->max) {
		e->rc = -EOVERFLOW;
		return;
	}
	e->offs[e->n] = e->out->len;
	e->lens[e->n++] = la + lb;
	if ((e->rc = buf_append(e->out, a, la)) == 0 && (e->rc = buf_append(e->out, b, lb)) == 0)
		e->rc = buf_putc(e->out, '\0');
}

static void emit(emitter *e, const char *s, size_t len)
{
	emit2(e, s, len, "", 0);
}

static void emit_int(emitter *e, int64_t v)
{
	char t[24];
	emit(e, t, (size_t)(put_int(t, v) - t));
}

/* A hash field and its delta, when the delta is not 0. */
static void emit_pair(emitter *e, const char *field, int64_t v)
{
	if (v == 0)
		return;
	emit(e, field, strlen(field));
	emit_int(e, v);
}

/* A key's group header: type, number of (field, delta) pairs, extra. */
static void emit_head(emitter *e, const char *type, size_t n, int64_t extra)
{
	emit(e, type, 1);
	emit_int(e, (int64_t)n);
	emit_int(e, extra);
}

/* "day:YYYYMMDD" or "hour:YYYYMMDDHH" of p into out; returns its length. */
static size_t period_name(const agg_period *p, char out[32])
{
	int64_t days = p->hour ? floor_div(p->num, 24) : p->num;
	int64_t y;
	int m, d;
	civil_from_days(days, &y, &m, &d);
	char *e = put_digits(put_digits(put_digits(stpcpy(out, p->hour ? "hour:" : "day:"), y, 4), m, 2), d, 2);
	if (p->hour)
		e = put_digits(e, p->num - days * 24, 2);
	*e = '\0';
	return (size_t)(e - out);
}

/* The counters of a day or hour hash, from its class cells. */
static void period_args(emitter *e, const redis_agg_batch *b, const redis_agg_org *o, const agg_period *p)
{
	int64_t kinds[3] = {0}, missed = 0, dur = 0, timed = 0;
	size_t n = 0;
	for (uint32_t i = p->classes.first; i != NONE; i = o->cells[i].next) {
		const agg_cell *c = &o->cells[i];
		const redis_agg_class *cl = &b->classes[c->id];
		kinds[cl->kind] += c->n;
		missed += cl->missed ? c->n : 0;
		dur += c->dur;
		timed += c->timed;
		n += c->n != 0;
	}
	n += (kinds[0] != 0) + (kinds[1] != 0) + (kinds[2] != 0) + (missed != 0) + (dur != 0) + (timed != 0);
	emit_head(e, p->hour ? "x" : "h", n, p->hour ? p->expire : 0);
	for (uint32_t i = p->classes.first; i != NONE; i = o->cells[i].next) {
		const agg_cell *c = &o->cells[i];
		if (c->n == 0)
			continue;
		const redis_agg_class *cl = &b->classes[c->id];
		size_t len = cl->lk + cl->ld + cl->ls + 2;
		emit(e, cl->kds, len < REDIS_AGG_FIELD_MAX ? len : REDIS_AGG_FIELD_MAX - 1);
		emit_int(e, c->n);
	}
	for (int k = 0; k < 3; k++)
		emit_pair(e, kind_names[k], kinds[k]);
	emit_pair(e, "missed", missed);
	emit_pair(e, "call_duration_s", dur);
	emit_pair(e, "calls_timed", timed);
}

/* A chain of counting cells (a day's contacts, a contact's times) as a group of type type. */
static void chain_args(emitter *e, const redis_agg_org *o, const agg_chain *ch, const char *type, int64_t extra)
{
	size_t n = 0;
	for (uint32_t i = ch->first; i != NONE; i = o->cells[i].next)
		n += o->cells[i].n != 0;
	emit_head(e, type, n, extra);
	for (uint32_t i = ch->first; i != NONE; i = o->cells[i].next) {
		const agg_cell *c = &o->cells[i];
		if (c->n == 0)
			continue;
		if (c->tag == CELL_DAY_CONTACT)
			emit(e, o->contacts[c->id].id, UUID_TEXT_LEN);
		else
			emit_int(e, c->id);
		emit_int(e, c->n);
	}
}

int redis_agg_org_command(const redis_agg_batch *b, size_t i, const redis_agg_conf *conf, const char *sha,
                          buf *out, int *argc, const char ***argv, size_t **argvlen)
{
	const redis_agg_org *o = b->orgs[i];
	/* EVALSHA sha numkeys wm keys... first last (type n extra (f d)*)* */
	size_t nkeys = 1;
	for (size_t p = 0; p < o->nperiods; p++)
		nkeys += 1 + (o->periods[p].contacts.first != NONE);
	for (size_t c = 0; c < o->ncontacts; c++)
		nkeys += 1 + (o->contacts[c].times.first != NONE);
	size_t max = 3 + nkeys + 2 + 3 * nkeys + 2 * (o->ncells + 6 * o->nperiods + 5 * o->ncontacts);
	size_t lp = strlen(conf->prefix) + UUID_TEXT_LEN + 4;
	char *kp = malloc(lp + 1); /* "PREFIX:{ORG}:" */
	emitter e = {.out = out, .offs = calloc(max, sizeof(size_t)), .lens = calloc(max, sizeof(size_t)), .max = max};
	const char **av = calloc(max, sizeof(*av));
	e.rc = kp && e.offs && e.lens && av ? 0 : -ENOMEM;
	buf_clear(out);
	if (e.rc == 0)
		snprintf(kp, lp + 1, "%s:{%s}:", conf->prefix, o->id);
	emit(&e, "EVALSHA", 7);
	emit(&e, sha, strlen(sha));
	emit_int(&e, (int64_t)nkeys);
	emit2(&e, kp, lp, "wm", 2);
	char name[64];
	for (size_t p = 0; p < o->nperiods; p++) {
		size_t n = period_name(&o->periods[p], name);
		emit2(&e, kp, lp, name, n);
		if (o->periods[p].contacts.first != NONE)
			emit2(&e, kp, lp, name, (size_t)(stpcpy(name + n, ":contacts") - name));
	}
	for (size_t c = 0; c < o->ncontacts; c++) {
		size_t n = (size_t)(stpcpy(stpcpy(name, "contact:"), o->contacts[c].id) - name);
		emit2(&e, kp, lp, name, n);
		if (o->contacts[c].times.first != NONE)
			emit2(&e, kp, lp, name, (size_t)(stpcpy(name + n, ":times") - name));
	}
	char lsn[17];
	redis_agg_lsn_text(o->first_lsn, lsn);
	emit(&e, lsn, 16);
	redis_agg_lsn_text(o->last_lsn, lsn);
	emit(&e, lsn, 16);
	int64_t k = 2; /* the position in KEYS (1-based; KEYS[1] is the watermark) of the next key */
	for (size_t p = 0; p < o->nperiods; p++, k++) {
		period_args(&e, b, o, &o->periods[p]);
		if (o->periods[p].contacts.first != NONE) {
			chain_args(&e, o, &o->periods[p].contacts, "z", 0);
			k++;
		}
	}
	for (size_t c = 0; c < o->ncontacts; c++, k++) {
		const agg_contact *ct = &o->contacts[c];
		size_t n = (ct->events != 0) + (ct->kinds[0] != 0) + (ct->kinds[1] != 0) + (ct->kinds[2] != 0) + (ct->dur != 0);
		emit_head(&e, "h", n, 0);
		emit_pair(&e, "events", ct->events);
		for (int j = 0; j < 3; j++)
			emit_pair(&e, kind_names[j], ct->kinds[j]);
		emit_pair(&e, "call_duration_s", ct->dur);
		if (ct->times.first != NONE) {
			chain_args(&e, o, &ct->times, "t", k); /* t: the contact hash's position in KEYS */
			k++;
		}
	}
	int rc = e.rc;
	if (rc == 0) {
		for (size_t a = 0; a < e.n; a++)
			av[a] = out->data + e.offs[a];
		*argc = (int)e.n;
		*argv = av;
		*argvlen = e.lens;
		av = NULL;
		e.lens = NULL;
	}
	free(kp);
	free(e.offs);
	free(e.lens);
	free(av);
	return rc;
}

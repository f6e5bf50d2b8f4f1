/*
 * txnbuf — one transaction's changes held until its commit (contract: txnbuf.h).
 *
 * Each change is encoded as one self-delimiting record:
 *
 *   u32 length of the whole record, u8 action, u8 flags, u16 zero, u64 lsn, u64 relation pointer
 *   [ncols varint]                       when it has a tuple or error markers
 *   [ncols values]  new tuple            flags & F_NEW
 *   [ncols values]  old tuple            flags & F_OLD
 *   [ncols strings] error markers        flags & F_ERRORS
 *   [string prefix, string content]      flags & F_MSG
 *
 * A value is varint(len << 2 | kind), followed for VALUE_TEXT by len bytes and a NUL (so that a
 * replayed value points straight into the buffer, NUL-terminated as change.h promises); the other
 * kinds are that one byte. A string is varint(0) for NULL, else varint(len + 1), the bytes and a
 * NUL. Numbers are in host byte order: the file never leaves this process, and the relation
 * pointer is only meaningful inside it anyway (the relation is held by relation_ref until reset).
 *
 * Records go to one memory buffer (at most mem_limit bytes). When the next record does not fit,
 * the whole buffer is appended to the spill file (an unlinked temporary file) and emptied; a
 * record larger than mem_limit goes to the file directly. So the file holds the oldest records
 * and memory the newest, and replay reads the file in chunks, then walks memory. The spill
 * file stays open, truncated at reset, until the buffer is destroyed.
 *
 * The relations of the held changes are referenced once each (a small list of distinct
 * relations; a transaction rarely touches more than a few), not once per change.
 */
#include "txnbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define HEADER_LEN 24
#define CHUNK_MAX ((size_t)64 * 1024) /* spill read-back chunk (smaller when mem_limit is) */
#define MEM_START ((size_t)4096)       /* first size of the memory buffer */

enum {
	F_TXN = 1 << 0,           /* the change had a transaction (txn != NULL) */
	F_TRANSACTIONAL = 1 << 1, /* c->transactional */
	F_CASCADE = 1 << 2,
	F_RESTART = 1 << 3,
	F_NEW = 1 << 4,
	F_OLD = 1 << 5,
	F_ERRORS = 1 << 6,
	F_MSG = 1 << 7, /* prefix and content follow */
};

struct txnbuf {
	size_t mem_limit;
	char *spill_dir;
	uint8_t *mem; /* the newest records */
	size_t mem_len;
	size_t mem_cap;
	size_t mem_max_rec; /* the largest record in memory */
	int fd; /* spill file, -1 = none yet */
	uint64_t spill_len; /* bytes of records in it (anything past them is garbage to ignore) */
	bool spilled; /* this transaction has written to the file */
	size_t count;
	const relation **rels; /* distinct relations referenced, one reference each */
	size_t nrels;
	size_t rels_cap;
	size_t last_rel; /* index in rels of the last relation appended (a cheap first guess) */
	/* replay */
	uint8_t *rbuf; /* spill read-back, as large as the largest spilled record (allocated at
	                * append, so that replay does not allocate) */
	size_t rbuf_cap;
	change_value *vals; /* 2 * vals_ncols: the new and the old tuple */
	const char **errs;  /* vals_ncols */
	size_t vals_ncols;
	/* stats */
	uint64_t spills;
	uint64_t max_changes;
};

/* ---- encoding --------------------------------------------------------------------------------- */

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *varint_put(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static size_t str_len(const char *s, size_t len)
{
	return s == NULL ? 1 : varint_len((uint64_t)len + 1) + len + 1;
}

static uint8_t *str_put(uint8_t *p, const char *s, size_t len)
{
	if (s == NULL)
		return varint_put(p, 0);
	p = varint_put(p, (uint64_t)len + 1);
	if (len > 0)
		memcpy(p, s, len);
	p += len;
	*p++ = 0;
	return p;
}

static size_t value_len(const change_value *v)
{
	if (v->kind != VALUE_TEXT)
		return 1;
	return varint_len((uint64_t)v->len << 2 | VALUE_TEXT) + v->len + 1;
}

static uint8_t *value_put(uint8_t *p, const change_value *v)
{
	if (v->kind != VALUE_TEXT)
		return varint_put(p, v->kind);
	p = varint_put(p, (uint64_t)v->len << 2 | VALUE_TEXT);
	if (v->len > 0)
		memcpy(p, v->data, v->len);
	p += v->len;
	*p++ = 0;
	return p;
}

/* The encoded size of c and its flags and column count, or -EINVAL for a change that cannot
 * be held (a tuple without its relation, an unknown value kind, a record past 4 GiB). */
static int record_size(const change *c, size_t *size, uint8_t *flags, size_t *ncols)
{
	uint8_t f = 0;
	if (c->txn != NULL)
		f |= F_TXN;
	if (c->transactional)
		f |= F_TRANSACTIONAL;
	if (c->cascade)
		f |= F_CASCADE;
	if (c->restart_identity)
		f |= F_RESTART;
	if (c->new_tuple != NULL)
		f |= F_NEW;
	if (c->old_tuple != NULL)
		f |= F_OLD;
	if (c->row_errors != NULL)
		f |= F_ERRORS;
	if (c->prefix != NULL || c->content != NULL)
		f |= F_MSG;
	size_t n = HEADER_LEN, nc = 0;
	if (f & (F_NEW | F_OLD | F_ERRORS)) {
		if (c->rel == NULL || c->rel->ncols < 0)
			return -EINVAL;
		nc = (size_t)c->rel->ncols;
		n += varint_len(nc);
	}
	const change_value *tuples[2] = {c->new_tuple, c->old_tuple};
	for (int t = 0; t < 2; t++) {
		if (tuples[t] == NULL)
			continue;
		for (size_t i = 0; i < nc; i++) {
			if (tuples[t][i].kind > VALUE_UNCHANGED)
				return -EINVAL;
			n += value_len(&tuples[t][i]);
		}
	}
	if (c->row_errors != NULL)
		for (size_t i = 0; i < nc; i++)
			n += str_len(c->row_errors[i], c->row_errors[i] ? strlen(c->row_errors[i]) : 0);
	if (f & F_MSG)
		n += str_len(c->prefix, c->prefix ? strlen(c->prefix) : 0) + str_len(c->content, c->content_len);
	if (n > UINT32_MAX)
		return -EINVAL;
	*size = n;
	*flags = f;
	*ncols = nc;
	return 0;
}

static void record_put(uint8_t *p, const change *c, size_t size, uint8_t flags, size_t ncols)
{
	uint32_t len = (uint32_t)size;
	uint64_t lsn = c->lsn, rel = (uint64_t)(uintptr_t)c->rel;
	uint16_t zero = 0;
	memcpy(p, &len, 4);
	p[4] = (uint8_t)c->action;
	p[5] = flags;
	memcpy(p + 6, &zero, 2);
	memcpy(p + 8, &lsn, 8);
	memcpy(p + 16, &rel, 8);
	p += HEADER_LEN;
	if (flags & (F_NEW | F_OLD | F_ERRORS))
		p = varint_put(p, ncols);
	if (c->new_tuple != NULL)
		for (size_t i = 0; i < ncols; i++)
			p = value_put(p, &c->new_tuple[i]);
	if (c->old_tuple != NULL)
		for (size_t i = 0; i < ncols; i++)
			p = value_put(p, &c->old_tuple[i]);
	if (c->row_errors != NULL)
		for (size_t i = 0; i < ncols; i++)
			p = str_put(p, c->row_errors[i], c->row_errors[i] ? strlen(c->row_errors[i]) : 0);
	if (flags & F_MSG) {
		p = str_put(p, c->prefix, c->prefix ? strlen(c->prefix) : 0);
		p = str_put(p, c->content, c->content_len);
	}
}

/* ---- decoding --------------------------------------------------------------------------------- */

typedef struct reader {
	const uint8_t *p;
	const uint8_t *end;
	bool bad;
} reader;

static uint64_t varint_get(reader *r)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (r->p >= r->end)
			break;
		uint8_t b = *r->p++;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	r->bad = true;
	return 0;
}

/* Returns the string (NUL-terminated in the record) or NULL; *len its length. */
static const char *str_get(reader *r, size_t *len)
{
	uint64_t n = varint_get(r);
	*len = 0;
	if (n == 0 || r->bad)
		return NULL;
	if (n > (uint64_t)(r->end - r->p)) {
		r->bad = true;
		return NULL;
	}
	const char *s = (const char *)r->p;
	*len = (size_t)n - 1;
	r->p += n;
	return s;
}

static void value_get(reader *r, change_value *v)
{
	uint64_t h = varint_get(r);
	uint32_t kind = (uint32_t)(h & 3);
	if (kind != VALUE_TEXT) {
		*v = (change_value){.kind = kind};
		return;
	}
	uint64_t len = h >> 2;
	if (r->bad || len >= (uint64_t)(r->end - r->p)) {
		r->bad = true;
		return;
	}
	*v = (change_value){.kind = VALUE_TEXT, .len = (uint32_t)len, .data = (const char *)r->p};
	r->p += len + 1;
}

/* Decodes the record at p (len bytes, len read from its header) into *c, pointing into it and
 * into tb's scratch arrays. 0 or -EIO when the record is inconsistent. */
static int record_get(txnbuf *tb, const uint8_t *p, size_t len, const change_txn *txn, change *c)
{
	uint64_t lsn, rel;
	memcpy(&lsn, p + 8, 8);
	memcpy(&rel, p + 16, 8);
	uint8_t flags = p[5];
	*c = (change){
		.action = (change_action)p[4],
		.lsn = lsn,
		.txn = (flags & F_TXN) ? txn : NULL,
		.rel = (const relation *)(uintptr_t)rel,
		.transactional = (flags & F_TRANSACTIONAL) != 0,
		.cascade = (flags & F_CASCADE) != 0,
		.restart_identity = (flags & F_RESTART) != 0,
	};
	reader r = {.p = p + HEADER_LEN, .end = p + len};
	if (flags & (F_NEW | F_OLD | F_ERRORS)) {
		uint64_t nc = varint_get(&r);
		if (r.bad || nc > tb->vals_ncols)
			return -EIO;
		if (flags & F_NEW) {
			c->new_tuple = tb->vals;
			for (size_t i = 0; i < nc; i++)
				value_get(&r, &c->new_tuple[i]);
		}
		if (flags & F_OLD) {
			c->old_tuple = tb->vals + tb->vals_ncols;
			for (size_t i = 0; i < nc; i++)
				value_get(&r, &c->old_tuple[i]);
		}
		if (flags & F_ERRORS) {
			size_t l;
			for (size_t i = 0; i < nc; i++)
				tb->errs[i] = str_get(&r, &l);
			c->row_errors = tb->errs;
		}
	}
	if (flags & F_MSG) {
		size_t l;
		c->prefix = str_get(&r, &l);
		c->content = str_get(&r, &c->content_len);
	}
	return r.bad || r.p != r.end ? -EIO : 0;
}

/* ---- the spill file --------------------------------------------------------------------------- */

static int spill_open(txnbuf *tb)
{
	const char *dir = tb->spill_dir;
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0) {
		tb->fd = fd;
		return 0;
	}
	/* Filesystems without O_TMPFILE: a named file, unlinked at once. */
	char path[4096];
	int n = snprintf(path, sizeof(path), "%s/walcast-txn-XXXXXX", dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		log_error("txnbuf.spill_failed", "dir=%s: path too long", dir);
		return -EIO;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		log_error("txnbuf.spill_failed", "dir=%s: cannot create a temporary file: %s", dir, strerror(errno));
		return -EIO;
	}
	unlink(path);
	tb->fd = fd;
	return 0;
}

/* Writes all of data at off. 0 or -errno. */
static int write_all(int fd, const uint8_t *data, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, data, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		data += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Appends the parts (a, then b) to the spill file, creating it when needed; all or nothing.
 * 0 or -EIO. */
static int spill_write(txnbuf *tb, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	if (tb->fd < 0 && spill_open(tb) < 0)
		return -EIO;
	int rc = write_all(tb->fd, a, alen, tb->spill_len);
	if (rc == 0)
		rc = write_all(tb->fd, b, blen, tb->spill_len + alen);
	if (rc < 0) {
		log_error("txnbuf.spill_failed", "dir=%s: cannot write %zu bytes at offset %llu: %s", tb->spill_dir,
		          alen + blen, (unsigned long long)tb->spill_len, strerror(-rc));
		/* Only bytes past spill_len were written, and those are never read: the records held
		 * are intact. Give the space back if possible. */
		if (ftruncate(tb->fd, (off_t)tb->spill_len) < 0)
			log_warn("txnbuf.spill_truncate_failed", "dir=%s: %s", tb->spill_dir, strerror(errno));
		return -EIO;
	}
	if (!tb->spilled) {
		tb->spilled = true;
		tb->spills++;
	}
	tb->spill_len += alen + blen;
	return 0;
}

/* ---- the buffer ------------------------------------------------------------------------------- */

int txnbuf_create(size_t mem_limit, const char *spill_dir, txnbuf **out)
{
	if (mem_limit < 4096)
		return -EINVAL;
	txnbuf *tb = calloc(1, sizeof(*tb));
	if (tb == NULL)
		return -ENOMEM;
	tb->fd = -1;
	tb->mem_limit = mem_limit;
	if (spill_dir == NULL || spill_dir[0] == '\0') {
		spill_dir = getenv("TMPDIR");
		if (spill_dir == NULL || spill_dir[0] == '\0')
			spill_dir = "/tmp";
	}
	tb->spill_dir = strdup(spill_dir);
	if (tb->spill_dir == NULL) {
		free(tb);
		return -ENOMEM;
	}
	*out = tb;
	return 0;
}

static void rels_release(txnbuf *tb)
{
	for (size_t i = 0; i < tb->nrels; i++)
		relation_unref(tb->rels[i]);
	tb->nrels = 0;
	tb->last_rel = 0;
}

void txnbuf_destroy(txnbuf *tb)
{
	if (tb == NULL)
		return;
	rels_release(tb);
	if (tb->fd >= 0)
		close(tb->fd);
	free(tb->rels);
	free(tb->mem);
	free(tb->rbuf);
	free(tb->vals);
	free(tb->errs);
	free(tb->spill_dir);
	free(tb);
}

/* Index of rel in tb->rels, or -1. */
static long rels_find(const txnbuf *tb, const relation *rel)
{
	if (tb->last_rel < tb->nrels && tb->rels[tb->last_rel] == rel)
		return (long)tb->last_rel;
	for (size_t i = tb->nrels; i-- > 0;)
		if (tb->rels[i] == rel)
			return (long)i;
	return -1;
}

/* Makes room for everything append may need after the record is stored, so that nothing fails
 * then: a slot for a new relation, and replay's scratch arrays for ncols columns. */
static int reserve(txnbuf *tb, const relation *rel, size_t ncols)
{
	if (rel != NULL && tb->nrels == tb->rels_cap && rels_find(tb, rel) < 0) {
		size_t cap = tb->rels_cap ? tb->rels_cap * 2 : 8;
		const relation **r = realloc(tb->rels, cap * sizeof(*r));
		if (r == NULL)
			return -ENOMEM;
		tb->rels = r;
		tb->rels_cap = cap;
	}
	if (ncols > tb->vals_ncols) {
		change_value *v = calloc(2 * ncols, sizeof(*v));
		const char **e = calloc(ncols, sizeof(*e));
		if (v == NULL || e == NULL) {
			free(v);
			free(e);
			return -ENOMEM;
		}
		free(tb->vals);
		free(tb->errs);
		tb->vals = v;
		tb->errs = e;
		tb->vals_ncols = ncols;
	}
	return 0;
}

/* Grows the memory buffer to hold need bytes (need <= mem_limit). 0 or -ENOMEM. */
static int mem_reserve(txnbuf *tb, size_t need)
{
	if (need <= tb->mem_cap)
		return 0;
	size_t cap = tb->mem_cap ? tb->mem_cap : (MEM_START < tb->mem_limit ? MEM_START : tb->mem_limit);
	while (cap < need)
		cap = cap > tb->mem_limit / 2 ? tb->mem_limit : cap * 2;
	uint8_t *m = realloc(tb->mem, cap);
	if (m == NULL)
		return -ENOMEM;
	tb->mem = m;
	tb->mem_cap = cap;
	return 0;
}

/* The spill read-back buffer: a chunk, or more to hold a record of rec bytes whole. Allocated
 * before anything is spilled, so that replay never allocates. 0 or -ENOMEM. */
static int rbuf_reserve(txnbuf *tb, size_t rec)
{
	size_t chunk = tb->mem_limit < CHUNK_MAX ? tb->mem_limit : CHUNK_MAX;
	size_t need = rec > chunk ? rec : chunk;
	if (need <= tb->rbuf_cap)
		return 0;
	uint8_t *b = realloc(tb->rbuf, need);
	if (b == NULL)
		return -ENOMEM;
	tb->rbuf = b;
	tb->rbuf_cap = need;
	return 0;
}

int txnbuf_append(txnbuf *tb, const change *c)
{
	size_t size, ncols;
	uint8_t flags;
	int rc = record_size(c, &size, &flags, &ncols);
	if (rc < 0)
		return rc;
	if ((rc = reserve(tb, c->rel, ncols)) < 0)
		return rc;
	if (tb->mem_len + size <= tb->mem_limit) {
		if ((rc = mem_reserve(tb, tb->mem_len + size)) < 0)
			return rc;
		record_put(tb->mem + tb->mem_len, c, size, flags, ncols);
		tb->mem_len += size;
		if (size > tb->mem_max_rec)
			tb->mem_max_rec = size;
	} else if (size <= tb->mem_limit) {
		/* Memory is full: it moves to the file, and the record starts it again. */
		if ((rc = mem_reserve(tb, size)) < 0 || (rc = rbuf_reserve(tb, tb->mem_max_rec)) < 0)
			return rc;
		if ((rc = spill_write(tb, tb->mem, tb->mem_len, NULL, 0)) < 0)
			return rc;
		record_put(tb->mem, c, size, flags, ncols);
		tb->mem_len = size;
		tb->mem_max_rec = size;
	} else {
		/* Larger than memory may hold: straight to the file, after what memory holds. */
		size_t need = size > tb->mem_max_rec ? size : tb->mem_max_rec;
		if ((rc = rbuf_reserve(tb, need)) < 0)
			return rc;
		uint8_t *tmp = malloc(size);
		if (tmp == NULL)
			return -ENOMEM;
		record_put(tmp, c, size, flags, ncols);
		rc = spill_write(tb, tb->mem, tb->mem_len, tmp, size);
		free(tmp);
		if (rc < 0)
			return rc;
		tb->mem_len = 0;
		tb->mem_max_rec = 0;
	}
	if (c->rel != NULL) {
		long i = rels_find(tb, c->rel);
		if (i < 0) {
			i = (long)tb->nrels;
			tb->rels[tb->nrels++] = relation_ref(c->rel);
		}
		tb->last_rel = (size_t)i;
	}
	tb->count++;
	if (tb->count > tb->max_changes)
		tb->max_changes = tb->count;
	return 0;
}

/* Replays the records in data[0..len), all complete. 0, cb's value, or -EIO. */
static int replay_span(txnbuf *tb, const uint8_t *data, size_t len, const change_txn *txn,
                       int (*cb)(void *arg, const change *c), void *arg)
{
	size_t off = 0;
	while (off < len) {
		uint32_t rlen;
		if (len - off < HEADER_LEN)
			return -EIO;
		memcpy(&rlen, data + off, 4);
		if (rlen < HEADER_LEN || rlen > len - off)
			return -EIO;
		change c;
		if (record_get(tb, data + off, rlen, txn, &c) < 0)
			return -EIO;
		int rc = cb(arg, &c);
		if (rc != 0)
			return rc;
		off += rlen;
	}
	return 0;
}

/* Reads the spill file back in chunks of rbuf (which holds the largest record) and replays
 * it. 0, cb's value, or -EIO. */
static int replay_file(txnbuf *tb, const change_txn *txn, int (*cb)(void *arg, const change *c), void *arg)
{
	uint64_t off = 0; /* file offset of rbuf[0] */
	size_t have = 0;  /* bytes in rbuf */
	while (off < tb->spill_len) {
		/* Fill the buffer as far as the records go. */
		uint64_t left = tb->spill_len - off - have;
		size_t want = tb->rbuf_cap - have;
		if (want > left)
			want = (size_t)left;
		while (want > 0) {
			ssize_t n = pread(tb->fd, tb->rbuf + have, want, (off_t)(off + have));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				log_error("txnbuf.spill_read_failed", "dir=%s: cannot read at offset %llu: %s", tb->spill_dir,
				          (unsigned long long)(off + have), n < 0 ? strerror(errno) : "unexpected end of file");
				return -EIO;
			}
			have += (size_t)n;
			want -= (size_t)n;
		}
		/* Replay the complete records; the partial one moves to the front. */
		size_t done = 0;
		while (have - done >= HEADER_LEN) {
			uint32_t rlen;
			memcpy(&rlen, tb->rbuf + done, 4);
			if (rlen < HEADER_LEN || rlen > tb->spill_len - off - done || rlen > tb->rbuf_cap)
				return -EIO;
			if (rlen > have - done)
				break;
			int rc = replay_span(tb, tb->rbuf + done, rlen, txn, cb, arg);
			if (rc != 0)
				return rc;
			done += rlen;
		}
		if (done == 0)
			return -EIO; /* the buffer is full or holds the rest of the file: a torn record */
		memmove(tb->rbuf, tb->rbuf + done, have - done);
		off += done;
		have -= done;
	}
	return 0;
}

int txnbuf_replay(txnbuf *tb, const change_txn *txn, int (*cb)(void *arg, const change *c), void *arg)
{
	if (tb->spill_len > 0) {
		int rc = replay_file(tb, txn, cb, arg);
		if (rc != 0)
			return rc;
	}
	return replay_span(tb, tb->mem, tb->mem_len, txn, cb, arg);
}

void txnbuf_reset(txnbuf *tb)
{
	rels_release(tb);
	tb->mem_len = 0;
	tb->mem_max_rec = 0;
	tb->count = 0;
	tb->spilled = false;
	if (tb->fd >= 0 && tb->spill_len > 0 && ftruncate(tb->fd, 0) < 0) {
		/* A new file next time rather than a file that does not shrink. */
		close(tb->fd);
		tb->fd = -1;
	}
	tb->spill_len = 0;
	size_t chunk = tb->mem_limit < CHUNK_MAX ? tb->mem_limit : CHUNK_MAX;
	if (tb->rbuf_cap > chunk) {
		free(tb->rbuf);
		tb->rbuf = NULL;
		tb->rbuf_cap = 0;
	}
}

size_t txnbuf_count(const txnbuf *tb)
{
	return tb->count;
}

void txnbuf_get_stats(const txnbuf *tb, txnbuf_stats *out)
{
	*out = (txnbuf_stats){
		.mem_bytes = tb->mem_len,
		.spill_bytes = tb->spill_len,
		.spills = tb->spills,
		.max_changes = tb->max_changes,
	};
}

/*
 * checkpoint — the policy-state checkpoint kept in a local state directory (checkpoint.h).
 *
 * Files in the directory (0700; files 0600):
 *
 *   base        the whole state as of base_lsn; replaced atomically (base.tmp, fsync, rename,
 *               directory fsync) by compaction only
 *   log         append-only: one record per transaction that changed policy rows, with its
 *               commit end LSN; made durable by sync (fdatasync)
 *   positions   text: the "state known at" LSN, the log's synced length and the named
 *               positions; replaced atomically, at a sync, when a position changed
 *   lock        flock()ed while a store is open: one process per directory
 *
 * Both binary files are an 8-byte magic followed by records framed as
 *
 *   u32 payload length | u32 CRC-32C of the payload | payload
 *
 * (little endian). A payload is: u8 type | u64 lsn | u32 nrows | rows; a row is u8 table |
 * u8 deleted | three values, each u32 length (0xffffffff: SQL NULL) and that many bytes and a
 * NUL. Types: BASE_HEAD (lsn = base_lsn, nrows = rows that follow), BASE_ROWS, BASE_END
 * (nrows = total, so a base cut short is refused), TXN (one transaction of the log).
 *
 * Crash safety. A log record whose frame or checksum does not hold ends the log: at open the
 * file is cut there (log_warn checkpoint.log_cut) and the records before it stay. Records
 * appended after a crash-and-resume with an LSN at or below one already logged replace the
 * logged ones from that LSN on (the server sends those transactions again). Compaction writes
 * the new base first, then rewrites the log without the records it folded; a crash between the
 * two leaves a log whose first records are at or below base_lsn, and load skips them. Leftover
 * *.tmp files are removed at open.
 *
 * What a sync writes: the buffered appends and one fdatasync of the log when there are any;
 * the positions file only when a named position changed since the last sync (or the log was
 * rewound). A sync with neither writes nothing at all: the state's "known at" LSN then lives
 * in memory only, which is safe because every policy change is an append that a sync makes
 * durable before the LSN is confirmed; the pipeline records its confirmed LSN as a named
 * position, and that carries the known-at LSN to disk.
 *
 * At the end, the glue the pipeline uses: checkpoint_batch (a commit's journal rows, appended
 * once), the privacy stage as load target and dump source, and checkpoint_compact_at.
 */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "lsn.h"
#include "policy_state.h"
#include "privacy.h"

#define BASE_MAGIC "WCCKBAS1"
#define LOG_MAGIC "WCCKLOG1"
#define MAGIC_LEN 8
#define FRAME_LEN 8
#define PAYLOAD_HEAD 13            /* type, lsn, nrows */
#define RECORD_MAX ((uint32_t)1 << 30)
#define BASE_CHUNK (64 * 1024)     /* bytes of rows per BASE_ROWS record */
#define NULL_LEN UINT32_MAX

enum {
	REC_BASE_HEAD = 1,
	REC_BASE_ROWS = 2,
	REC_BASE_END = 3,
	REC_TXN = 4,
};

typedef struct log_entry {
	uint64_t lsn;
	uint64_t offset; /* of the frame, in the log file (or past its end: in pending) */
} log_entry;

typedef struct dir_store {
	checkpoint_store st;
	char *dir;
	int dir_fd;
	int lock_fd;
	int log_fd;
	uint64_t log_len;      /* bytes in the log file */
	uint64_t log_synced;   /* log_len at the last fdatasync */
	buf pending;           /* appended records not yet written */
	log_entry *entries;    /* every record of the log (file, then pending), in order */
	size_t nentries, entries_cap;
	bool has_base;
	uint64_t base_lsn;
	uint64_t known_at;     /* newest LSN the stored state is known at (memory) */
	checkpoint_positions pos;
	bool positions_dirty;  /* the positions file is behind (a position, known_at, log_synced) */
	uint32_t crc_table[256];
} dir_store;

/* ---- encoding -------------------------------------------------------------------------- */

static void crc_init(uint32_t table[256])
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1; /* CRC-32C (Castagnoli) */
		table[i] = c;
	}
}

static uint32_t crc32c(const uint32_t table[256], const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++)
		c = table[(c ^ b[i]) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Starts a record in b: room for the frame and the payload head. Returns its offset in b. */
static int record_begin(buf *b, int type, uint64_t lsn, size_t *start)
{
	uint8_t head[FRAME_LEN + PAYLOAD_HEAD] = {0};
	head[FRAME_LEN] = (uint8_t)type;
	put64(head + FRAME_LEN + 1, lsn);
	*start = b->len;
	return buf_append(b, head, sizeof(head));
}

/* Fills in the frame of the record of payload length len started at start, with nrows rows. */
static int record_seal(dir_store *s, buf *b, size_t start, size_t len, uint32_t nrows)
{
	uint8_t *r = (uint8_t *)b->data + start;
	if (len > RECORD_MAX)
		return -EFBIG;
	put32(r + FRAME_LEN + 9, nrows);
	put32(r, (uint32_t)len);
	put32(r + 4, crc32c(s->crc_table, r + FRAME_LEN, len));
	return 0;
}

/* Seals the record started at start, which runs to the end of b. */
static int record_end(dir_store *s, buf *b, size_t start, uint32_t nrows)
{
	return record_seal(s, b, start, b->len - start - FRAME_LEN, nrows);
}

static int row_encode(buf *b, const checkpoint_row *row)
{
	uint8_t h[2] = {(uint8_t)row->table, (uint8_t)(row->deleted != 0)};
	int rc = buf_append(b, h, 2);
	for (int k = 0; k < 3 && rc == 0; k++) {
		const char *v = row->values != NULL ? row->values[k] : NULL;
		uint8_t l[4];
		size_t n = v != NULL ? strlen(v) : 0;
		if (n >= NULL_LEN)
			return -EFBIG;
		put32(l, v != NULL ? (uint32_t)n : NULL_LEN);
		rc = buf_append(b, l, 4);
		if (rc == 0 && v != NULL)
			rc = buf_append(b, v, n + 1);
	}
	return rc;
}

/* One decoded record (pointers into the payload buffer). */
typedef struct record {
	int type;
	uint64_t lsn;
	uint32_t nrows;
	const uint8_t *rows;
	size_t rows_len;
} record;

static int record_parse(const uint8_t *p, size_t len, record *out)
{
	if (len < PAYLOAD_HEAD)
		return -EINVAL;
	*out = (record){.type = p[0], .lsn = get64(p + 1), .nrows = get32(p + 9), .rows = p + PAYLOAD_HEAD,
	                .rows_len = len - PAYLOAD_HEAD};
	return 0;
}

/* Calls cb for each row of r (deleted rows only when with_deleted). 0, -EINVAL (malformed) or
 * cb's non-zero result. */
static int record_rows(const record *r, checkpoint_row_cb cb, void *arg)
{
	size_t off = 0;
	for (uint32_t i = 0; i < r->nrows; i++) {
		const char *v[3];
		if (r->rows_len - off < 2)
			return -EINVAL;
		int table = r->rows[off], deleted = r->rows[off + 1];
		off += 2;
		for (int k = 0; k < 3; k++) {
			if (r->rows_len - off < 4)
				return -EINVAL;
			uint32_t n = get32(r->rows + off);
			off += 4;
			if (n == NULL_LEN) {
				v[k] = NULL;
				continue;
			}
			if (r->rows_len - off < (size_t)n + 1 || r->rows[off + n] != '\0' ||
			    memchr(r->rows + off, '\0', n) != NULL)
				return -EINVAL;
			v[k] = (const char *)r->rows + off;
			off += (size_t)n + 1;
		}
		checkpoint_row row = {.table = table, .values = v, .deleted = deleted};
		int rc = cb(arg, &row);
		if (rc != 0)
			return rc;
	}
	return off == r->rows_len ? 0 : -EINVAL;
}

/* Reads the record at the current position of f into b. 1 and *out, 0 at a clean end of file,
 * -EBADMSG for a torn or corrupt record (*why says which), -EIO for a read error. */
static int record_read(dir_store *s, FILE *f, buf *b, record *out, const char **why)
{
	uint8_t frame[FRAME_LEN];
	size_t got = fread(frame, 1, FRAME_LEN, f);
	if (got == 0 && !ferror(f))
		return 0;
	if (got < FRAME_LEN) {
		*why = ferror(f) ? "read error" : "a frame cut short";
		return ferror(f) ? -EIO : -EBADMSG;
	}
	uint32_t len = get32(frame), crc = get32(frame + 4);
	if (len < PAYLOAD_HEAD || len > RECORD_MAX) {
		*why = "an impossible record length";
		return -EBADMSG;
	}
	buf_clear(b);
	if (buf_reserve(b, len) < 0) {
		*why = "out of memory";
		return -ENOMEM;
	}
	got = fread(b->data, 1, len, f);
	if (got < len) {
		*why = ferror(f) ? "read error" : "a record cut short";
		return ferror(f) ? -EIO : -EBADMSG;
	}
	b->len = len;
	if (crc32c(s->crc_table, b->data, len) != crc) {
		*why = "a checksum mismatch";
		return -EBADMSG;
	}
	(void)record_parse((const uint8_t *)b->data, len, out);
	return 1;
}

/* ---- files ----------------------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = pwrite(fd, c, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w, n -= (size_t)w, off += (uint64_t)w;
	}
	return 0;
}

static int dir_fsync(dir_store *s)
{
	return fsync(s->dir_fd) == 0 ? 0 : -errno;
}

/* Writes data to name.tmp, fsyncs it, renames it over name and fsyncs the directory. */
static int file_replace(dir_store *s, const char *name, const void *data, size_t len)
{
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	int fd = openat(s->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int rc = write_all(fd, data, len, 0);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && renameat(s->dir_fd, tmp, s->dir_fd, name) != 0)
		rc = -errno;
	if (rc == 0)
		rc = dir_fsync(s);
	if (rc < 0)
		(void)unlinkat(s->dir_fd, tmp, 0);
	return rc;
}

static FILE *open_read(dir_store *s, const char *name)
{
	int fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	FILE *f = fdopen(fd, "rb");
	if (f == NULL)
		close(fd);
	return f;
}

static void error_set(char err[CHECKPOINT_ERROR_MAX], const dir_store *s, const char *fmt, int rc)
{
	snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: %s: %s", s->dir, fmt, strerror(-rc));
}

/* ---- positions --------------------------------------------------------------------------- */

static int positions_write(dir_store *s)
{
	buf b;
	char t[LSN_TEXT_MAX];
	buf_init(&b);
	int rc = buf_printf(&b, "walcast-checkpoint-positions 1\nknown_at=%s\nlog_synced=%" PRIu64 "\n",
	                    lsn_format(s->known_at, t), s->log_synced);
	for (size_t i = 0; i < s->pos.n && rc == 0; i++)
		rc = buf_printf(&b, "position %s=%s\n", s->pos.pos[i].name, lsn_format(s->pos.pos[i].lsn, t));
	if (rc == 0)
		rc = file_replace(s, "positions", b.data, b.len);
	buf_fini(&b);
	if (rc == 0)
		s->positions_dirty = false;
	return rc;
}

/* Reads the positions file (missing: nothing recorded). Sets *synced to its log_synced. */
static int positions_read(dir_store *s, uint64_t *known_at, uint64_t *synced, char err[CHECKPOINT_ERROR_MAX])
{
	*known_at = 0, *synced = 0;
	FILE *f = open_read(s, "positions");
	if (f == NULL)
		return errno == ENOENT ? 0 : (error_set(err, s, "cannot open positions", -errno), -EIO);
	char line[256];
	int rc = 0, n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *eq = strchr(line, '=');
		line[strcspn(line, "\n")] = '\0';
		if (n++ == 0) {
			if (strcmp(line, "walcast-checkpoint-positions 1") != 0)
				rc = -EINVAL;
		} else if (eq == NULL) {
			rc = -EINVAL;
		} else if (strncmp(line, "known_at=", 9) == 0) {
			rc = lsn_parse(eq + 1, strlen(eq + 1), known_at);
		} else if (strncmp(line, "log_synced=", 11) == 0) {
			char *end;
			errno = 0;
			*synced = strtoull(eq + 1, &end, 10);
			rc = errno != 0 || *end != '\0' ? -EINVAL : 0;
		} else if (strncmp(line, "position ", 9) == 0) {
			uint64_t lsn;
			rc = lsn_parse(eq + 1, strlen(eq + 1), &lsn);
			if (rc == 0)
				rc = checkpoint_positions_add(&s->pos, line + 9, (size_t)(eq - line - 9), lsn);
		} else {
			rc = -EINVAL;
		}
		if (rc < 0)
			break;
	}
	fclose(f);
	if (rc < 0 || n == 0) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: positions: line %d is not readable", s->dir,
		         n);
		return -EINVAL;
	}
	return 0;
}

/* ---- base -------------------------------------------------------------------------------- */

/* Reads base's header (no base file: *present false). */
static int base_head(dir_store *s, FILE *f, buf *b, uint64_t *lsn, uint32_t *nrows, char err[CHECKPOINT_ERROR_MAX])
{
	char magic[MAGIC_LEN];
	record r;
	const char *why = "not a walcast base file";
	int rc = -EBADMSG;
	if (fread(magic, 1, MAGIC_LEN, f) == MAGIC_LEN && memcmp(magic, BASE_MAGIC, MAGIC_LEN) == 0) {
		rc = record_read(s, f, b, &r, &why);
		if (rc == 1 && r.type != REC_BASE_HEAD) {
			why = "no header record";
			rc = -EBADMSG;
		}
	}
	if (rc != 1) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: base is unreadable (%s)", s->dir,
		         rc == 0 ? "empty" : why);
		return -EIO;
	}
	*lsn = r.lsn, *nrows = r.nrows;
	return 0;
}

typedef struct count_ctx {
	checkpoint_row_cb cb;
	void *arg;
	uint64_t n;
} count_ctx;

static int count_cb(void *arg, const checkpoint_row *row)
{
	count_ctx *c = arg;
	c->n++;
	return c->cb != NULL ? c->cb(c->arg, row) : 0;
}

/* Streams every row of base to cb (NULL: only checks it). A base that is cut short or corrupt
 * is an error: it was written atomically, so that is damage, not a crash. */
static int base_rows(dir_store *s, checkpoint_row_cb cb, void *arg, uint64_t *lsn, char err[CHECKPOINT_ERROR_MAX])
{
	buf b;
	buf_init(&b);
	FILE *f = open_read(s, "base");
	int rc;
	uint32_t declared = 0;
	if (f == NULL) {
		error_set(err, s, "cannot open base", -errno);
		return -EIO;
	}
	rc = base_head(s, f, &b, lsn, &declared, err);
	count_ctx cc = {cb, arg, 0};
	while (rc == 0) {
		record r;
		const char *why = "";
		int got = record_read(s, f, &b, &r, &why);
		if (got == 1 && r.type == REC_BASE_ROWS) {
			rc = record_rows(&r, count_cb, &cc);
			if (rc == -EINVAL)
				snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: base has a malformed row", s->dir);
			else if (rc != 0)
				snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: loading a base row failed", s->dir);
			continue;
		}
		if (got == 1 && r.type == REC_BASE_END && r.nrows == declared && cc.n == declared)
			break;
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: base is damaged (%s)", s->dir,
		         got == 1 ? "row count mismatch" : got == 0 ? "no end record" : why);
		rc = -EIO;
	}
	fclose(f);
	buf_fini(&b);
	return rc < 0 ? rc : rc != 0 ? -EIO : 0;
}

/* ---- log --------------------------------------------------------------------------------- */

static int entries_push(dir_store *s, uint64_t lsn, uint64_t offset)
{
	if (s->nentries == s->entries_cap) {
		size_t cap = s->entries_cap ? 2 * s->entries_cap : 64;
		log_entry *e = realloc(s->entries, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		s->entries = e, s->entries_cap = cap;
	}
	s->entries[s->nentries++] = (log_entry){lsn, offset};
	return 0;
}

/* Opens the log and indexes its records; a torn or corrupt tail is cut off (and *cut set to
 * where). */
static int log_open(dir_store *s, uint64_t *cut, char err[CHECKPOINT_ERROR_MAX])
{
	*cut = UINT64_MAX;
	s->log_fd = openat(s->dir_fd, "log", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->log_fd < 0) {
		error_set(err, s, "cannot open log", -errno);
		return -EIO;
	}
	int dfd = dup(s->log_fd);
	FILE *f = dfd >= 0 ? fdopen(dfd, "rb") : NULL;
	if (f == NULL) {
		if (dfd >= 0)
			close(dfd);
		return -ENOMEM;
	}
	buf b;
	buf_init(&b);
	char magic[MAGIC_LEN];
	size_t got = fread(magic, 1, MAGIC_LEN, f);
	uint64_t good = MAGIC_LEN;
	int rc = 0;
	const char *why = NULL;
	if (got < MAGIC_LEN || memcmp(magic, LOG_MAGIC, MAGIC_LEN) != 0) {
		struct stat st;
		if (fstat(s->log_fd, &st) == 0 && st.st_size > 0 && got == MAGIC_LEN) {
			snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: log is not a walcast log", s->dir);
			rc = -EIO;
			goto cleanup;
		}
		/* new, or cut inside its magic by a crash at creation */
		if (ftruncate(s->log_fd, 0) != 0 || write_all(s->log_fd, LOG_MAGIC, MAGIC_LEN, 0) != 0 ||
		    fdatasync(s->log_fd) != 0) {
			error_set(err, s, "cannot initialize log", -errno);
			rc = -EIO;
			goto cleanup;
		}
		goto done;
	}
	for (;;) {
		record r;
		int n = record_read(s, f, &b, &r, &why);
		if (n == 0)
			break;
		if (n == 1 && r.type != REC_TXN) {
			why = "a record of an unknown type";
			n = -EBADMSG;
		}
		if (n == 1 && s->nentries > 0 && r.lsn <= s->entries[s->nentries - 1].lsn) {
			why = "LSNs out of order";
			n = -EBADMSG;
		}
		if (n == -EBADMSG) {
			*cut = good;
			break;
		}
		if (n < 0) {
			error_set(err, s, "cannot read log", n);
			rc = -EIO;
			goto cleanup;
		}
		rc = entries_push(s, r.lsn, good);
		if (rc < 0)
			goto cleanup;
		good += FRAME_LEN + b.len;
	}
	if (*cut != UINT64_MAX) {
		struct stat st;
		long long size = fstat(s->log_fd, &st) == 0 ? (long long)st.st_size : -1;
		char t[LSN_TEXT_MAX];
		log_warn("checkpoint.log_cut",
		         "dir=%s offset=%" PRIu64 " size=%lld after_lsn=%s: the log ends in %s; cut there (records "
		         "before it kept)",
		         s->dir, good, size, lsn_format(s->nentries ? s->entries[s->nentries - 1].lsn : 0, t), why);
		if (ftruncate(s->log_fd, (off_t)good) != 0 || fdatasync(s->log_fd) != 0) {
			error_set(err, s, "cannot cut the log", -errno);
			rc = -EIO;
			goto cleanup;
		}
	}
done:
	s->log_len = good;
	s->log_synced = good;
cleanup:
	fclose(f);
	buf_fini(&b);
	return rc;
}

/* Writes the pending records to the log file (not synced). */
static int pending_write(dir_store *s)
{
	if (s->pending.len == 0)
		return 0;
	int rc = write_all(s->log_fd, s->pending.data, s->pending.len, s->log_len);
	if (rc < 0)
		return rc;
	s->log_len += s->pending.len;
	buf_clear(&s->pending);
	return 0;
}

/* Drops the records from index i on (file and pending): a replay after a resume. */
static int log_rewind(dir_store *s, size_t i)
{
	uint64_t off = s->entries[i].offset;
	if (off >= s->log_len) {
		s->pending.len = (size_t)(off - s->log_len);
	} else {
		buf_clear(&s->pending);
		if (ftruncate(s->log_fd, (off_t)off) != 0)
			return -errno;
		s->log_len = off;
		if (s->log_synced > off) {
			s->log_synced = off;
			s->positions_dirty = true;
		}
	}
	s->nentries = i;
	return 0;
}

/* ---- ops --------------------------------------------------------------------------------- */

static uint64_t known_at(const dir_store *s)
{
	uint64_t k = s->known_at;
	if (s->has_base && s->base_lsn > k)
		k = s->base_lsn;
	if (s->nentries > 0 && s->entries[s->nentries - 1].lsn > k)
		k = s->entries[s->nentries - 1].lsn;
	return k;
}

static int dir_load(void *impl, uint64_t at, checkpoint_row_cb row_cb, void *arg, uint64_t *state_lsn,
                    char err[CHECKPOINT_ERROR_MAX])
{
	dir_store *s = impl;
	uint64_t base_lsn = 0;
	int rc = pending_write(s);
	if (rc < 0) {
		error_set(err, s, "cannot write log", rc);
		return -EIO;
	}
	uint64_t k = known_at(s);
	if (!s->has_base && s->nentries == 0 && k == 0) {
		*state_lsn = 0;
		return 0;
	}
	if (s->has_base && at < s->base_lsn) {
		char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
		snprintf(err, CHECKPOINT_ERROR_MAX,
		         "state directory %s: the state is kept from %s on, not as of %s (compacted past it)", s->dir,
		         lsn_format(s->base_lsn, b), lsn_format(at, a));
		return -ESTALE;
	}
	if (s->has_base && (rc = base_rows(s, row_cb, arg, &base_lsn, err)) < 0)
		return rc;
	FILE *f = open_read(s, "log");
	if (f == NULL) {
		error_set(err, s, "cannot open log", -errno);
		return -EIO;
	}
	buf b;
	buf_init(&b);
	for (size_t i = 0; i < s->nentries && rc == 0; i++) {
		const log_entry *e = &s->entries[i];
		if (e->lsn <= base_lsn && s->has_base)
			continue; /* folded into the base by a compaction whose log rewrite did not happen */
		if (e->lsn > at)
			break;
		record r;
		const char *why = "";
		if (fseeko(f, (off_t)e->offset, SEEK_SET) != 0 || record_read(s, f, &b, &r, &why) != 1) {
			snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: log record at %" PRIu64 " unreadable (%s)",
			         s->dir, e->offset, why);
			rc = -EIO;
			break;
		}
		rc = record_rows(&r, row_cb, arg);
		if (rc != 0) {
			snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: log record at %" PRIu64 ": %s", s->dir,
			         e->offset, rc == -EINVAL ? "malformed row" : "loading a row failed");
			rc = rc < 0 ? rc : -EIO;
		}
	}
	fclose(f);
	buf_fini(&b);
	if (rc == 0)
		*state_lsn = at < k ? at : k;
	return rc;
}

static int dir_append(void *impl, uint64_t lsn, const checkpoint_row *rows, size_t nrows,
                      char err[CHECKPOINT_ERROR_MAX])
{
	dir_store *s = impl;
	char t[LSN_TEXT_MAX];
	if (nrows == 0)
		return 0;
	if (nrows > UINT32_MAX || lsn == 0 || (s->has_base && lsn <= s->base_lsn)) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: append at %s: %s", s->dir, lsn_format(lsn, t),
		         lsn == 0 || nrows > UINT32_MAX ? "invalid" : "at or before the base");
		return -EINVAL;
	}
	if (s->nentries > 0 && lsn <= s->entries[s->nentries - 1].lsn) {
		size_t i = s->nentries;
		while (i > 0 && s->entries[i - 1].lsn >= lsn)
			i--;
		/* the stream restarted before lsn: what the store knew past it is being redone */
		if (s->known_at >= lsn) {
			s->known_at = lsn - 1;
			s->positions_dirty = true;
		}
		int rc = log_rewind(s, i);
		if (rc < 0) {
			error_set(err, s, "cannot rewind log", rc);
			return -EIO;
		}
	}
	size_t start, keep = s->pending.len;
	int rc = record_begin(&s->pending, REC_TXN, lsn, &start);
	for (size_t i = 0; i < nrows && rc == 0; i++)
		rc = row_encode(&s->pending, &rows[i]);
	if (rc == 0)
		rc = record_end(s, &s->pending, start, (uint32_t)nrows);
	if (rc == 0)
		rc = entries_push(s, lsn, s->log_len + start);
	if (rc < 0) {
		s->pending.len = keep;
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: append at %s: %s", s->dir, lsn_format(lsn, t),
		         strerror(-rc));
	}
	return rc;
}

static int dir_sync(void *impl, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX])
{
	dir_store *s = impl;
	int rc = 0;
	if (s->pending.len > 0 || s->log_synced != s->log_len) {
		rc = pending_write(s);
		if (rc == 0 && fdatasync(s->log_fd) != 0)
			rc = -errno;
		if (rc < 0) {
			error_set(err, s, "cannot write log", rc);
			return -EIO;
		}
		s->log_synced = s->log_len;
	}
	if (lsn > s->known_at)
		s->known_at = lsn;
	if (s->positions_dirty && (rc = positions_write(s)) < 0) {
		error_set(err, s, "cannot write positions", rc);
		return -EIO;
	}
	return 0;
}

typedef struct base_writer {
	dir_store *s;
	buf b;
	size_t start;  /* of the open BASE_ROWS record */
	uint32_t rows; /* in it */
	uint64_t total;
	int rc;
} base_writer;

static int base_row_cb(void *arg, const checkpoint_row *row)
{
	base_writer *w = arg;
	if (row->deleted)
		return 0; /* a dump has no deletes; ignore rather than store one */
	if (w->rows == 0 && (w->rc = record_begin(&w->b, REC_BASE_ROWS, 0, &w->start)) < 0)
		return w->rc;
	if ((w->rc = row_encode(&w->b, row)) < 0)
		return w->rc;
	w->rows++, w->total++;
	if (w->b.len - w->start >= BASE_CHUNK) {
		if ((w->rc = record_end(w->s, &w->b, w->start, w->rows)) < 0)
			return w->rc;
		w->rows = 0;
	}
	return 0;
}

static int dir_compact(void *impl, uint64_t upto, int (*dump_cb)(void *arg, checkpoint_row_cb row_cb, void *row_arg),
                       void *arg, char err[CHECKPOINT_ERROR_MAX])
{
	dir_store *s = impl;
	base_writer w = {.s = s};
	buf lb;
	size_t start;
	int rc;
	buf_init(&w.b);
	buf_init(&lb);
	if (s->has_base && upto < s->base_lsn) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: compaction before the base", s->dir);
		rc = -EINVAL;
		goto cleanup;
	}
	if ((rc = dir_sync(s, 0, err)) < 0)
		goto cleanup;
	/* 1. the new base */
	if ((rc = buf_append(&w.b, BASE_MAGIC, MAGIC_LEN)) < 0 ||
	    (rc = record_begin(&w.b, REC_BASE_HEAD, upto, &start)) < 0)
		goto nomem;
	size_t head = start;
	rc = dump_cb(arg, base_row_cb, &w);
	if (rc != 0) {
		if (w.rc < 0)
			goto nomem;
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: compaction: the state dump failed", s->dir);
		rc = rc < 0 ? rc : -EIO;
		goto cleanup;
	}
	if (w.total > UINT32_MAX) {
		rc = -EFBIG;
		goto nomem;
	}
	if ((w.rows > 0 && (rc = record_end(s, &w.b, w.start, w.rows)) < 0) ||
	    (rc = record_seal(s, &w.b, head, PAYLOAD_HEAD, (uint32_t)w.total)) < 0 ||
	    (rc = record_begin(&w.b, REC_BASE_END, upto, &start)) < 0 ||
	    (rc = record_end(s, &w.b, start, (uint32_t)w.total)) < 0)
		goto nomem;
	if ((rc = file_replace(s, "base", w.b.data, w.b.len)) < 0) {
		error_set(err, s, "cannot write base", rc);
		goto cleanup;
	}
	s->has_base = true;
	s->base_lsn = upto;
	/* 2. the log without what the base holds */
	buf_fini(&w.b);
	size_t first = 0;
	while (first < s->nentries && s->entries[first].lsn <= upto)
		first++;
	if ((rc = buf_append(&lb, LOG_MAGIC, MAGIC_LEN)) < 0)
		goto nomem;
	if (first < s->nentries) {
		uint64_t from = s->entries[first].offset, n = s->log_len - from;
		if ((rc = buf_reserve(&lb, (size_t)n)) < 0)
			goto nomem;
		ssize_t got = pread(s->log_fd, lb.data + lb.len, (size_t)n, (off_t)from);
		if (got != (ssize_t)n) {
			rc = got < 0 ? -errno : -EIO;
			error_set(err, s, "cannot read log", rc);
			goto cleanup;
		}
		lb.len += (size_t)n;
	}
	if ((rc = file_replace(s, "log", lb.data, lb.len)) < 0) {
		error_set(err, s, "cannot rewrite log", rc);
		goto cleanup;
	}
	int fd = openat(s->dir_fd, "log", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		error_set(err, s, "cannot reopen log", rc);
		goto cleanup;
	}
	close(s->log_fd);
	s->log_fd = fd;
	uint64_t shift = first < s->nentries ? s->entries[first].offset - MAGIC_LEN : s->log_len - MAGIC_LEN;
	if (first > 0)
		memmove(s->entries, s->entries + first, (s->nentries - first) * sizeof(*s->entries));
	s->nentries -= first;
	for (size_t i = 0; i < s->nentries; i++)
		s->entries[i].offset -= shift;
	s->log_len = lb.len;
	s->log_synced = lb.len;
	s->positions_dirty = true;
	if ((rc = positions_write(s)) < 0)
		error_set(err, s, "cannot write positions", rc);
	goto cleanup;
nomem:
	snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: compaction: %s", s->dir, strerror(-rc));
cleanup:
	buf_fini(&w.b);
	buf_fini(&lb);
	return rc;
}

static uint64_t dir_log_bytes(void *impl)
{
	const dir_store *s = impl;
	return s->log_len + s->pending.len - MAGIC_LEN;
}

/* ---- named positions ------------------------------------------------------------------------ */

uint64_t checkpoint_positions_get(const checkpoint_positions *ps, const char *name)
{
	for (size_t i = 0; i < ps->n; i++)
		if (strcmp(ps->pos[i].name, name) == 0)
			return ps->pos[i].lsn;
	return 0;
}

int checkpoint_positions_add(checkpoint_positions *ps, const char *name, size_t len, uint64_t lsn)
{
	if (len == 0 || len >= CHECKPOINT_POSITION_NAME_MAX || memchr(name, '=', len) != NULL ||
	    memchr(name, '\n', len) != NULL || memchr(name, '\0', len) != NULL)
		return -EINVAL;
	if (ps->n == CHECKPOINT_POSITIONS_MAX)
		return -ENOSPC;
	checkpoint_position *p = &ps->pos[ps->n++];
	memcpy(p->name, name, len);
	p->name[len] = '\0';
	p->lsn = lsn;
	p->dirty = false;
	return 0;
}

int checkpoint_positions_put(checkpoint_positions *ps, const char *name, uint64_t lsn)
{
	for (size_t i = 0; i < ps->n; i++) {
		checkpoint_position *p = &ps->pos[i];
		if (strcmp(p->name, name) == 0) {
			if (p->lsn == lsn)
				return 0;
			p->lsn = lsn;
			p->dirty = true;
			return 1;
		}
	}
	int rc = checkpoint_positions_add(ps, name, strlen(name), lsn);
	if (rc < 0)
		return rc;
	ps->pos[ps->n - 1].dirty = true;
	return 1;
}

static int dir_position_get(void *impl, const char *name, uint64_t *lsn)
{
	*lsn = checkpoint_positions_get(&((const dir_store *)impl)->pos, name);
	return 0;
}

static int dir_position_put(void *impl, const char *name, uint64_t lsn)
{
	dir_store *s = impl;
	int rc = checkpoint_positions_put(&s->pos, name, lsn);
	if (rc > 0)
		s->positions_dirty = true;
	return rc < 0 ? rc : 0;
}

static void dir_destroy(void *impl)
{
	dir_store *s = impl;
	if (s->log_fd >= 0)
		close(s->log_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	buf_fini(&s->pending);
	free(s->entries);
	free(s->dir);
	free(s);
}

static const checkpoint_store_ops dir_ops = {
	.load = dir_load,
	.append = dir_append,
	.sync = dir_sync,
	.compact = dir_compact,
	.log_bytes = dir_log_bytes,
	.position_get = dir_position_get,
	.position_put = dir_position_put,
	.destroy = dir_destroy,
};

/* mkdir -p with mode 0700 for what it creates. */
static int mkdirs(const char *dir)
{
	char p[4096];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char c = p[i];
		p[i] = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return -errno;
		p[i] = c;
	}
	return 0;
}

int checkpoint_dir_create(const char *dir, checkpoint_store **out, char err[CHECKPOINT_ERROR_MAX])
{
	int rc = -ENOMEM;
	dir_store *s = calloc(1, sizeof(*s));
	if (s == NULL || (s->dir = strdup(dir)) == NULL) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "state directory %s: out of memory", dir);
		free(s);
		return -ENOMEM;
	}
	s->st = (checkpoint_store){.ops = &dir_ops, .impl = s};
	s->dir_fd = s->lock_fd = s->log_fd = -1;
	buf_init(&s->pending);
	crc_init(s->crc_table);
	struct stat st;
	if ((rc = mkdirs(dir)) < 0 || (s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = rc < 0 ? rc : -errno;
		error_set(err, s, "cannot create or open it", rc);
		goto fail;
	}
	/* The lock first: a standby of `walcast run` tries it every poll, and says nothing else */
	s->lock_fd = openat(s->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		rc = -errno;
		error_set(err, s, rc == -EWOULDBLOCK ? "in use by another process" : "cannot lock it", rc);
		rc = rc == -EWOULDBLOCK ? -EBUSY : rc;
		goto fail;
	}
	if (fstat(s->dir_fd, &st) == 0 && (st.st_mode & 077) != 0)
		log_warn("checkpoint.dir_mode", "dir=%s mode=%03o: the state directory holds the roster; it should be "
		         "0700 (chmod 700 %s)", dir, (unsigned)(st.st_mode & 0777), dir);
	(void)unlinkat(s->dir_fd, "base.tmp", 0);
	(void)unlinkat(s->dir_fd, "log.tmp", 0);
	(void)unlinkat(s->dir_fd, "positions.tmp", 0);
	uint64_t persisted = 0, synced = 0, cut = 0;
	if ((rc = positions_read(s, &persisted, &synced, err)) < 0)
		goto fail;
	if (faccessat(s->dir_fd, "base", F_OK, 0) == 0) {
		buf b;
		uint32_t n;
		buf_init(&b);
		FILE *f = open_read(s, "base");
		rc = f != NULL ? base_head(s, f, &b, &s->base_lsn, &n, err) : (error_set(err, s, "cannot open base", -errno), -EIO);
		if (f != NULL)
			fclose(f);
		buf_fini(&b);
		if (rc < 0)
			goto fail;
		s->has_base = true;
	}
	if ((rc = log_open(s, &cut, err)) < 0)
		goto fail;
	/* The persisted known-at LSN holds unless the log lost records that were synced when it was
	 * written: then the state is known only as far as the records that survive. */
	if (cut == UINT64_MAX || cut >= synced) {
		s->known_at = persisted;
	} else {
		char t[LSN_TEXT_MAX];
		log_error("checkpoint.log_damaged", "dir=%s offset=%" PRIu64 " synced=%" PRIu64 " known_at=%s: records "
		          "that were made durable are gone; the state is known only up to the last intact record",
		          dir, cut, synced, lsn_format(persisted, t));
		s->positions_dirty = true;
	}
	if (cut != UINT64_MAX)
		s->positions_dirty = true; /* the recorded log_synced may lie past the cut */
	*out = &s->st;
	return 0;
fail:
	dir_destroy(s);
	return rc;
}

void checkpoint_store_destroy(checkpoint_store *st)
{
	if (st != NULL)
		st->ops->destroy(st->impl);
}

/* ---- glue -------------------------------------------------------------------------------- */

struct checkpoint_batch {
	checkpoint_row *rows;
	const char **vals; /* 3 per row, pointing into text */
	size_t n, cap;
	buf text;          /* the values, NUL-terminated; offsets until append fixes pointers */
	size_t *offs;      /* 3 per row: offset in text, or SIZE_MAX for NULL */
	bool failed;
};

int checkpoint_batch_create(checkpoint_batch **out)
{
	checkpoint_batch *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	buf_init(&b->text);
	*out = b;
	return 0;
}

void checkpoint_batch_destroy(checkpoint_batch *b)
{
	if (b == NULL)
		return;
	free(b->rows);
	free(b->vals);
	free(b->offs);
	buf_fini(&b->text);
	free(b);
}

void checkpoint_batch_journal_cb(void *batch, int table, const char *const *values, bool deleted)
{
	checkpoint_batch *b = batch;
	if (b->failed)
		return;
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 16;
		checkpoint_row *r = realloc(b->rows, cap * sizeof(*r));
		if (r != NULL)
			b->rows = r;
		size_t *o = r != NULL ? realloc(b->offs, 3 * cap * sizeof(*o)) : NULL;
		if (o != NULL)
			b->offs = o;
		const char **v = o != NULL ? realloc(b->vals, 3 * cap * sizeof(*v)) : NULL;
		if (v == NULL) {
			b->failed = true;
			return;
		}
		b->vals = v;
		b->cap = cap;
	}
	for (int k = 0; k < 3; k++) {
		b->offs[3 * b->n + k] = values[k] != NULL ? b->text.len : SIZE_MAX;
		if (values[k] != NULL && buf_append(&b->text, values[k], strlen(values[k]) + 1) < 0) {
			b->failed = true;
			return;
		}
	}
	b->rows[b->n] = (checkpoint_row){.table = table, .deleted = deleted};
	b->n++;
}

size_t checkpoint_batch_count(const checkpoint_batch *b)
{
	return b->n;
}

void checkpoint_batch_clear(checkpoint_batch *b)
{
	b->n = 0;
	b->failed = false;
	buf_clear(&b->text);
}

int checkpoint_batch_append(checkpoint_batch *b, checkpoint_store *st, uint64_t lsn, char err[CHECKPOINT_ERROR_MAX])
{
	int rc = 0;
	if (b->failed) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint: out of memory collecting a transaction's policy rows");
		rc = -ENOMEM;
	} else if (b->n > 0) {
		for (size_t i = 0; i < b->n; i++) {
			for (int k = 0; k < 3; k++) {
				size_t o = b->offs[3 * i + k];
				b->vals[3 * i + k] = o == SIZE_MAX ? NULL : b->text.data + o;
			}
			b->rows[i].values = &b->vals[3 * i];
		}
		rc = st->ops->append(st->impl, lsn, b->rows, b->n, err);
	}
	checkpoint_batch_clear(b);
	return rc;
}

int checkpoint_privacy_row_cb(void *privacy_stage, const checkpoint_row *row)
{
	privacy *pv = privacy_stage;
	return row->deleted ? privacy_remove_row(pv, row->table, row->values)
	                    : privacy_load_row(pv, row->table, row->values);
}

typedef struct dump_adapter {
	checkpoint_row_cb row_cb;
	void *row_arg;
} dump_adapter;

static int dump_adapter_cb(void *arg, int table, const char *const *values)
{
	dump_adapter *d = arg;
	checkpoint_row row = {.table = table, .values = values, .deleted = 0};
	return d->row_cb(d->row_arg, &row);
}

int checkpoint_privacy_dump_cb(void *privacy_stage, checkpoint_row_cb row_cb, void *row_arg)
{
	dump_adapter d = {row_cb, row_arg};
	return policy_state_dump(privacy_state(privacy_stage), dump_adapter_cb, &d);
}

int checkpoint_compact_at(checkpoint_store *st, const struct policy *pol, uint64_t upto,
                          char err[CHECKPOINT_ERROR_MAX])
{
	privacy *scratch = NULL;
	char perr[PRIVACY_ERROR_MAX];
	uint64_t state_lsn = 0;
	int rc = privacy_create(pol, NULL, &scratch, perr);
	if (rc < 0) {
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint: compaction: %s", perr);
		return rc;
	}
	rc = st->ops->load(st->impl, upto, checkpoint_privacy_row_cb, scratch, &state_lsn, err);
	if (rc == 0 && state_lsn != upto) {
		char a[LSN_TEXT_MAX], b[LSN_TEXT_MAX];
		snprintf(err, CHECKPOINT_ERROR_MAX, "checkpoint: compaction up to %s: the state is known only up to %s",
		         lsn_format(upto, a), lsn_format(state_lsn, b));
		rc = -ESTALE;
	}
	if (rc == 0)
		rc = st->ops->compact(st->impl, upto, checkpoint_privacy_dump_cb, scratch, err);
	privacy_destroy(scratch);
	return rc;
}

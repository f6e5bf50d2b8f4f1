/*
 * config — walcast's configuration: one table of keys (section, name, type, bounds, default,
 * reloadable), filled in this order, later winning: defaults, the file (`key = value` under
 * `[section]`, parsed by libinih), WALCAST_<SECTION>_<KEY> environment variables, command-line
 * overrides (`--set section.key=value` and the short flags). A bad value is refused with where it
 * came from (file and line, or variable, or flag) and why.
 *
 * Sections of plugins. A section named [KIND.NAME] (today KIND is "sink": [sink.feed],
 * [sink.backend]) belongs to an instance of a plugin whose keys the core does not know (they are
 * in the plugin's own config_key table, sink_ops.keys). The core keeps such a section raw — its
 * name, its `type`, and every key = value with where it came from — and the layer that knows
 * the plugins applies the plugin's table to it with config_section_apply(), which parses and
 * refuses values exactly as the main table does ("file:line: sink.feed.path: why"). The
 * environment reaches these keys too: WALCAST_SINK_<NAME>_<KEY>, NAME upper-cased with '-' as
 * '_' (docs/configuration.md).
 *
 * Reload (SIGHUP). config_reload() builds a new configuration the way the running one was built
 * (same file path, the environment, the same overrides), compares the two key by key, and
 * refuses the new one when a key that is not reloadable changed, naming those keys; the caller
 * keeps the running configuration then.
 */
#ifndef WALCAST_CONFIG_H
#define WALCAST_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct config {
	/* [postgres] */
	char *conninfo;            /* libpq conninfo; empty = PG* environment variables */
	/* [replication] */
	char *slot;
	char *plugin;              /* pgoutput | wal2json */
	char *publication;         /* pgoutput only */
	bool create_slot;          /* create the slot (and publication) when missing */
	bool temporary_slot;
	int64_t status_interval_ms;
	int64_t heartbeat_interval_ms; /* 0 = off */
	int64_t reconnect_min_ms;
	int64_t reconnect_max_ms;
	int64_t standby_poll_ms;   /* walcast run: a standby's slot poll; 0 = no standby */
	/* [edge] */
	bool edge_enabled;         /* walcast run is an edge (docs/edges.md) */
	char *edge_stream_url;     /* the Redis of the change stream an edge reads */
	char *edge_stream_key;
	int64_t edge_read_count;   /* entries per XRANGE / XREAD */
	bool edge_replay_from_stream; /* start in the stream's window (docs/edges.md, "Step 4: resume on any edge") */
	/* [keys] */
	char *keys_file;           /* field-encryption keyring; empty = WALCAST_KEYS */
	/* [auth] */
	char *jwt_secret;          /* HS256 secret for subscriber tokens */
	char *jwks_file;           /* JWKS of RS256/ES256 public keys; empty = none */
	char *jwt_audience;        /* a present aud must include it; empty = not checked */
	bool jwt_require_exp;
	int64_t jwt_leeway_ms;     /* clock skew allowed on exp and nbf */
	/* [redis] */
	char *redis_url;
	/* [log] */
	char *log_level;            /* debug | info | warn | error */
	char *log_format;           /* text | json */
	/* [privacy] */
	int64_t privacy_txn_memory; /* bytes of one transaction held in memory; the rest spills */
	char *privacy_spill_dir;    /* where spill files go; empty = $TMPDIR, else /tmp */
	/* [pipeline] */
	int64_t pipeline_max_pending;      /* durable sinks' pending bytes that pause the stream */
	int64_t pipeline_drain_timeout_ms; /* SIGTERM: longest wait for durable sinks to flush */
	char *pipeline_state_dir;          /* the checkpoint store's directory (walcast run) */
	char *pipeline_checkpoint_store;   /* dir | postgres */
	char *pipeline_checkpoint_conninfo; /* postgres store; empty = postgres.conninfo */
	char *pipeline_checkpoint_schema;  /* postgres store: its schema */

	/* [http] */
	char *http_listen;          /* HOST:PORT of /healthz, /readyz, /metrics */
	char *http_tls_cert;        /* PEM chain; with http_tls_key: HTTPS */
	char *http_tls_key;
	char *http_static_dir;      /* files served at their path (the demo page); empty: none */
	int64_t http_slot_status_interval_ms; /* pg_replication_slots poll for /metrics; 0 = off */
	/* [audit] */
	bool audit_enabled;                 /* write audit_log / sync_health rows (walcast run) */
	char *audit_conninfo;               /* empty = postgres.conninfo (never a replication link) */
	int64_t audit_flush_interval_ms;    /* longest a record waits for its batch */
	int64_t audit_batch_size;           /* records per INSERT */
	int64_t audit_queue_max;            /* records held at most; past it they are dropped */
	int64_t audit_drain_timeout_ms;     /* shutdown: longest wait to write what is queued */
	int64_t audit_sync_health_interval_ms; /* one sync_health row per org this often; 0 = off */
	int64_t audit_lagging_after_ms;     /* sync_health status 'lagging' above this lag */
	/* Not a key: the [KIND.NAME] sections, the file path and the overrides this configuration
	 * was built from (for config_reload). Owned; NULL until one of them exists. */
	struct config_extra *extra;
} config;

typedef enum config_type {
	CONFIG_STRING,
	CONFIG_BOOL,
	CONFIG_INT,
	CONFIG_DURATION, /* milliseconds; "250ms", "10s", "5m", "1h"; a bare number is seconds */
	CONFIG_SIZE,     /* bytes; "4096", "512kB", "16MB", "1GB" (powers of 1024) */
	CONFIG_ENUM,     /* a string, one of the values listed at the start of the key's help,
	                  * separated by '|' and ended by ':' ("text|json: how records look");
	                  * stored as char * */
} config_type;

typedef struct config_key {
	const char *section;
	const char *name;
	config_type type;
	size_t offset;
	const char *default_value;
	int64_t min;
	int64_t max;
	bool reloadable;
	const char *help;
} config_key;

#define CONFIG_ERROR_MAX 512

/* Fills c with the defaults. 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int config_init(config *c);

/* Frees the strings c owns. Safe on a zeroed config. */
void config_fini(config *c);

/* Applies the file at path and remembers path for config_reload. [KIND.NAME] sections are kept
 * raw (config_section_next); everything else must be a key of the table. On error returns -EINVAL (bad content: err says "path:line: why")
 * or -errno (cannot read: err says so); c may be partly updated then, so callers load into a
 * scratch config and swap on success. */
__attribute__((warn_unused_result)) int config_load_file(config *c, const char *path, char err[CONFIG_ERROR_MAX]);

/* Applies every WALCAST_<SECTION>_<KEY> variable that is set. -EINVAL with err naming the
 * variable on a bad value, or on an unknown key under a section of the table. Variables
 * WALCAST_SINK_<NAME>_<KEY> set key on the [sink.NAME] section whose name, upper-cased with '-'
 * as '_', matches (the longest such name wins); WALCAST_SINK_<NAME>_TYPE creates [sink.name]
 * (lower-cased) when no section matches; any other WALCAST_SINK_ variable is refused. Their
 * keys are checked by config_section_apply. */
__attribute__((warn_unused_result)) int config_load_env(config *c, char err[CONFIG_ERROR_MAX]);

/* Sets one key from text ("replication", "slot", "walcast"). -ENOENT for an unknown key,
 * -EINVAL for a bad value (err says why), -ENOMEM. */
__attribute__((warn_unused_result)) int config_set(config *c, const char *section, const char *name,
                                                   const char *value, char err[CONFIG_ERROR_MAX]);

/* The key table, for --help and docs. */
const config_key *config_keys(size_t *count);

/* Applies one command-line override "section.key=value" (`--set`; the section of a plugin
 * instance is "sink.NAME": "sink.audit.path=/x") and remembers it, so that config_reload applies
 * it again. A key of the main table is checked at once (-EINVAL with err "--set: section.key:
 * why"; -ENOENT for an unknown key, err "--set: unknown key ..."); a plugin section's key is kept raw and checked by
 * config_section_apply (a `type` given here creates the section). -ENOMEM. */
__attribute__((warn_unused_result)) int config_set_override(config *c, const char *assignment,
                                                            char err[CONFIG_ERROR_MAX]);

/* The same as config_set_override for one key given by a short flag (-S NAME is
 * "replication", "slot", NAME): applied and remembered; err carries the reason only (the
 * caller names its flag). */
__attribute__((warn_unused_result)) int config_override(config *c, const char *section, const char *name,
                                                        const char *value, char err[CONFIG_ERROR_MAX]);

/* ---- Sections of plugin instances: [KIND.NAME] ---- */

typedef struct config_section config_section; /* one [KIND.NAME] section, read-only */

/* A plugin type's key table (sink_ops.keys, .nkeys, .conf_size): the offsets of keys point into
 * a struct of conf_size bytes; each key's section field is ignored. */
typedef struct config_table {
	const config_key *keys;
	size_t nkeys;
	size_t conf_size;
} config_table;

/* Iterates the sections of one kind in file order: prev NULL gives the first, then the one after
 * prev; NULL at the end. Borrowed from c: valid until c is changed or freed. */
const config_section *config_section_next(const config *c, const char *kind, const config_section *prev);

/* The section [kind.name], or NULL. */
const config_section *config_section_find(const config *c, const char *kind, const char *name);

/* The instance name ("feed" for [sink.feed]). Borrowed. */
const char *config_section_name(const config_section *s);

/* The value of the section's `type` key ("jsonl"), or NULL when it has none. Borrowed. Resolving
 * it is the caller's business (sink_ops_find); config_section_error says what went wrong. */
const char *config_section_type(const config_section *s);

/* Formats err as "WHERE: [KIND.NAME]: " + fmt, WHERE being where the section's `type` was set
 * (file:line, environment variable, --set) or, without a type, where the section starts. For
 * "unknown sink type 'x' (known: jsonl nng)" and "has no type". Returns -EINVAL. */
__attribute__((format(printf, 3, 4))) int config_section_error(const config_section *s, char err[CONFIG_ERROR_MAX],
                                                               const char *fmt, ...);

/* Fills conf (t->conf_size bytes, zeroed first) with t's defaults, then with the section's
 * values (every key but `type`), parsing and bounding each as the main table does. 0, or
 * -EINVAL with err "file:line: unknown key 'x' in section [sink.feed] (type jsonl)" or
 * "file:line: sink.feed.path: why" (environment variable or --set instead of file:line when the
 * value came from there), or -ENOMEM. On error nothing is left allocated in conf. The strings
 * in conf are owned by conf: free them with config_section_free. */
__attribute__((warn_unused_result)) int config_section_apply(const config_section *s, const config_table *t,
                                                             void *conf, char err[CONFIG_ERROR_MAX]);

/* Frees the strings config_section_apply put into conf and zeroes them. Safe twice. */
void config_section_free(const config_table *t, void *conf);

/* ---- Reload ---- */

/* Finds the key table of plugin type `type` of kind `kind` ("sink", "jsonl"): 0 and *out, or
 * -ENOENT for a type that does not exist (err: its reason, e.g. "unknown sink type 'x' (known:
 * jsonl nng)"; may be left empty). Must not block. */
typedef int (*config_type_lookup_fn)(void *arg, const char *kind, const char *type, config_table *out,
                                     char err[CONFIG_ERROR_MAX]);

/* Checks every [KIND.NAME] section of c: known kind, a type that lookup knows, every key known
 * and valid (config_section_apply into a scratch struct). 0, or -EINVAL with err
 * "file:line: reason" for the first problem, or -ENOMEM. lookup NULL: only the types' presence
 * is checked. Used at start and by config_reload. */
__attribute__((warn_unused_result)) int config_check_sections(const config *c, config_type_lookup_fn lookup,
                                                              void *arg, char err[CONFIG_ERROR_MAX]);

/* Loads the configuration again the way running was built — the same file (config_load_file's
 * path), the environment as it is now, the same overrides in the same order — into *out, then
 * compares it with running:
 *   0       *out is the new configuration (caller owns it): take it in with config_reload_commit;
 *           changed (may be NULL) lists the keys whose value changed, "log.level
 *           sink.feed.fsync" (names only, never values; empty: nothing changed).
 *   -EINVAL the new file (or environment) is bad: err "file:line: reason" as at start;
 *   -EPERM  a key that is not reloadable changed: err "reload refused: changed keys need a
 *           restart: replication.slot, sink.audit (added)" (a section added, removed or of
 *           another type needs a restart; so does any change when lookup is NULL);
 *   -ENOENT running was not loaded from a file (nothing to reload); -ENOMEM, or -errno when
 *           the file cannot be read (err says so).
 * On every error *out is untouched and running stays valid: keep it. A changed key of a plugin
 * section is reloadable when its key table says so; lookup (as for config_check_sections)
 * resolves the tables. Blocks on reading the file only. The caller logs the outcome as
 * docs/operations.md lists it: log_info("config.reloaded", "file=PATH: changed: %s", changed)
 * or log_error("config.reload_refused", "%s", err). */
__attribute__((warn_unused_result)) int config_reload(const config *running, config_type_lookup_fn lookup,
                                                      void *arg, config *out, char changed[CONFIG_ERROR_MAX],
                                                      char err[CONFIG_ERROR_MAX]);

/* Takes a configuration config_reload returned into the running one, in place: the values of
 * the reloadable keys and the sections move from fresh into running, then fresh is freed. A
 * string of a key that is not reloadable stays where it was (its value is the same: reload
 * refuses otherwise), so a module that borrowed cfg->slot keeps a valid pointer; a string of a
 * reloadable key (log.level, auth.jwt_audience) and any config_section pointer taken before
 * are invalid afterwards. Never fails. */
void config_reload_commit(config *running, config *fresh);

#endif

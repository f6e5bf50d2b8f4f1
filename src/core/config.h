/*
 * config — walcast's configuration: one table of keys (section, name, type, bounds, default,
 * reloadable), filled in this order, later winning: defaults, the file (`key = value` under
 * `[section]`, parsed by libinih), WALCAST_<SECTION>_<KEY> environment variables, command-line
 * flags. A bad value is refused with where it came from (file and line, or variable) and why.
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
	char *log_level;
	/* [privacy] */
	int64_t privacy_txn_memory; /* bytes of one transaction held in memory; the rest spills */
	char *privacy_spill_dir;    /* where spill files go; empty = $TMPDIR, else /tmp */
	/* [pipeline] */
	int64_t pipeline_max_pending;      /* durable sinks' pending bytes that pause the stream */
	int64_t pipeline_drain_timeout_ms; /* SIGTERM: longest wait for durable sinks to flush */
	char *pipeline_state_dir;          /* the checkpoint store's directory (walcast run) */
} config;

typedef enum config_type {
	CONFIG_STRING,
	CONFIG_BOOL,
	CONFIG_INT,
	CONFIG_DURATION, /* milliseconds; "250ms", "10s", "5m", "1h"; a bare number is seconds */
	CONFIG_SIZE,     /* bytes; "4096", "512kB", "16MB", "1GB" (powers of 1024) */
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

/* Applies the file at path. On error returns -EINVAL (bad content: err says "path:line: why")
 * or -errno (cannot read: err says so); c may be partly updated then, so callers load into a
 * scratch config and swap on success. */
__attribute__((warn_unused_result)) int config_load_file(config *c, const char *path, char err[CONFIG_ERROR_MAX]);

/* Applies every WALCAST_<SECTION>_<KEY> variable that is set. -EINVAL with err naming the
 * variable on a bad value. */
__attribute__((warn_unused_result)) int config_load_env(config *c, char err[CONFIG_ERROR_MAX]);

/* Sets one key from text ("replication", "slot", "walcast"). -ENOENT for an unknown key,
 * -EINVAL for a bad value (err says why), -ENOMEM. */
__attribute__((warn_unused_result)) int config_set(config *c, const char *section, const char *name,
                                                   const char *value, char err[CONFIG_ERROR_MAX]);

/* The key table, for --help and docs. */
const config_key *config_keys(size_t *count);

#endif

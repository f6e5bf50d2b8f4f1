/*
 * run — `walcast run -c FILE`: the daemon. One pipeline (src/pipeline/pipeline.h) from the
 * replication slot to the sinks configured in [sink.NAME] sections, the policy-state checkpoint
 * in pipeline.state_dir, SIGHUP to reload what can change live, SIGTERM/SIGINT to drain and
 * exit. See docs/operations.md, "walcast run".
 */
#ifndef WALCAST_RUN_H
#define WALCAST_RUN_H

#include <stdbool.h>
#include <stddef.h>

/* One `--set section.key=value` (or a flag that sets a key): applied after the file and the
 * environment, at start and at every reload. */
typedef struct run_setting {
	const char *section;
	const char *key;
	const char *value;
} run_setting;

typedef struct run_options {
	const char *config_path;   /* required */
	const char *policy_path;   /* the policy file */
	const run_setting *settings;
	size_t nsettings;
	bool verbose;
	bool create_publication;   /* create a missing publication for the policy's tables */
} run_options;

/* Runs the daemon until SIGTERM/SIGINT (drained: 0) or a permanent failure (1); a bad
 * configuration is refused before anything connects (2). Blocks. */
int run_main(const run_options *o);

#endif

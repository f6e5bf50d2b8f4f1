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

#include "config.h"

typedef struct run_options {
	const char *policy_path;   /* the policy file */
} run_options;

/* Runs the daemon with cfg (loaded by main from the file, the environment and the flags;
 * borrowed, and updated in place by a SIGHUP reload) until SIGTERM/SIGINT (drained: 0) or a
 * permanent failure (1); a bad configuration (a sink section, the policy, the keys) is refused
 * before anything connects (2). Blocks. */
int run_main(config *cfg, const run_options *o);

/* Holds (true) or releases (false) SIGTERM, SIGINT and SIGHUP in the calling thread: main holds
 * them from its first line, so that one sent while `run` starts stays pending instead of killing
 * the process; run_main releases them once its handlers are installed (the pending one is then
 * handled: a stop before streaming exits 0), and main for every other verb. */
void run_signals_hold(bool hold);

#endif

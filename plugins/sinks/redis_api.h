/*
 * redis_api — the stats API (docs/api.md): the aggregates the redis sink keeps, served as JSON
 * on the daemon's HTTP listener under /api/v1/stats, behind the same JWT rules as the feeds.
 *
 *   GET /api/v1/stats/orgs/ORG/days?from=YYYY-MM-DD&to=YYYY-MM-DD   per-day figures
 *   GET /api/v1/stats/orgs/ORG/hours?hours=N                         per-hour sparklines (N <= 48)
 *   GET /api/v1/stats/orgs/ORG/contacts?day=YYYY-MM-DD&limit=N       top contacts of a day
 *
 * Tokens are verified with the token module and [auth] (a token accepted lately is remembered
 * until its exp); a bypass role sees every org, a member role sees the orgs where its `sub` is a
 * member; top contacts need the analyst rank, and leave out every contact whose privacy rule
 * ranks above the caller (policy_state_subject_rank, as privacy(contact_id) does). The Redis
 * reads go through the sink's connection (or cluster router), asynchronously: the response is deferred
 * (lws_callback_on_writable) until every reply is in. Every request naming an org is audited
 * (action "stats.read"). Answers are kept in memory until a round of the sink changes their org
 * (redis_api_round_accepted; docs/api.md, "Caching").
 *
 * Loop thread only; nothing blocks.
 */
#ifndef WALCAST_REDIS_API_H
#define WALCAST_REDIS_API_H

#include "redis_cluster.h"
#include "sink.h"

typedef struct redis_api redis_api;

/* Adds the API's protocol (mount /api/v1/stats) to env->http (not started yet). link and prefix
 * are borrowed and must outlive the API; env is copied. 0 and *out (redis_api_destroy), -EINVAL
 * with err when the listener refuses the mount, -ENOMEM. Does not block. */
__attribute__((warn_unused_result)) int redis_api_create(const sink_env *env, const redis_link *link, const char *prefix,
                                                         redis_api **out, char err[SINK_ERROR_MAX]);

/* The redis sink's round that changed org's aggregates was accepted by Redis: the answers kept
 * in memory for org are dropped, and reads of org in flight are not kept (stats_cache.h). The sink
 * calls it on the loop thread as it accepts the round. Safe on NULL. Does not block. */
void redis_api_round_accepted(redis_api *a, const char *org);

/* Frees the API. Call after the listener is destroyed (no request can arrive) and after conn's
 * pending replies were delivered (redis_conn_destroy, redis_cluster_destroy). Safe on NULL. */
void redis_api_destroy(redis_api *a);

#endif

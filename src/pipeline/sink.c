/* sink — the registry of sink types (plugins/sinks/): one line per sink, like the decoders; and
 * what every sink shares (its own metric families). */
#include "sink.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/* The registration lines: one per sink in plugins/sinks/ (extern const sink_ops NAME_sink_ops;
 * above, &NAME_sink_ops in the list). NULL ends the list. */
extern const sink_ops jsonl_sink_ops;
extern const sink_ops nng_sink_ops;
extern const sink_ops realtime_sink_ops;
extern const sink_ops redis_sink_ops;
extern const sink_ops redis_stream_sink_ops;

static const sink_ops *const registry[] = {
	&jsonl_sink_ops,
	&nng_sink_ops,
	&realtime_sink_ops,
	&redis_sink_ops,
	&redis_stream_sink_ops,
	NULL,
};

const sink_ops *sink_ops_find(const char *name)
{
	for (size_t i = 0; registry[i] != NULL; i++)
		if (strcmp(registry[i]->name, name) == 0)
			return registry[i];
	return NULL;
}

const char *sink_names(char *out, size_t n)
{
	size_t used = 0;
	if (n > 0)
		out[0] = '\0';
	for (size_t i = 0; registry[i] != NULL && used < n; i++) {
		int w = snprintf(out + used, n - used, "%s%s", i ? " " : "", registry[i]->name);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	return out;
}

int sink_metrics_add(sink_metrics *m, const sink_env *env, const char *log_id, const metrics_desc *desc,
                     metrics_counter **counter, metrics_histogram **hist, metrics_read_cb cb, void *arg)
{
	static const char *const labels[] = {"sink", NULL};
	const char *values[] = {env->name, NULL};
	char err[METRICS_ERROR_MAX] = "";
	if (counter != NULL)
		*counter = NULL;
	if (hist != NULL)
		*hist = NULL;
	if (env->metrics == NULL)
		return 0;
	if (m->n == SINK_METRICS_MAX)
		return -ENOSPC;
	metrics_desc d = *desc;
	d.labels = labels;
	metrics_family *f;
	int rc = metrics_family_register(env->metrics, &d, &f, err);
	if (rc == -EINVAL) {
		log_warn(log_id, "sink=%s: %s (metric left out for this instance)", env->name, err);
		return 0;
	}
	if (rc < 0)
		return rc;
	if (cb != NULL)
		rc = metrics_callback_register(f, values, cb, arg, err);
	else if (d.kind == METRICS_HISTOGRAM)
		rc = metrics_histogram_register(f, values, hist, err);
	else
		rc = metrics_counter_register(f, values, counter, err);
	if (rc < 0) {
		metrics_family_remove(env->metrics, f);
		return rc;
	}
	m->fams[m->n++] = f;
	return 0;
}

void sink_metrics_remove(sink_metrics *m, const sink_env *env)
{
	for (size_t i = 0; env->metrics != NULL && i < m->n; i++)
		metrics_family_remove(env->metrics, m->fams[i]);
	m->n = 0;
}

/* sink — the registry of sink types (plugins/sinks/): one line per sink, like the decoders. */
#include "sink.h"

#include <stdio.h>
#include <string.h>

/* The registration lines: one per sink in plugins/sinks/ (extern const sink_ops NAME_sink_ops;
 * above, &NAME_sink_ops in the list). NULL ends the list. */
extern const sink_ops jsonl_sink_ops;
extern const sink_ops nng_sink_ops;
extern const sink_ops realtime_sink_ops;
extern const sink_ops redis_sink_ops;

static const sink_ops *const registry[] = {
	&jsonl_sink_ops,
	&nng_sink_ops,
	&realtime_sink_ops,
	&redis_sink_ops,
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

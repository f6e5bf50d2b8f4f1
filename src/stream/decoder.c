/* decoder — the registry of output-plugin decoders and the thin wrapper the source calls. */
#include "decoder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

extern const decoder_ops pgoutput_decoder_ops;
extern const decoder_ops wal2json_decoder_ops;

/* The registration lines: one per plugin in plugins/. */
static const decoder_ops *const registry[] = {
	&pgoutput_decoder_ops,
	&wal2json_decoder_ops,
};

struct decoder {
	const decoder_ops *ops;
	void *impl;
};

const decoder_ops *decoder_ops_find(const char *name)
{
	for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]); i++)
		if (strcmp(registry[i]->name, name) == 0)
			return registry[i];
	return NULL;
}

const char *decoder_names(char *out, size_t n)
{
	size_t used = 0;
	if (n > 0)
		out[0] = '\0';
	for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]) && used < n; i++) {
		int w = snprintf(out + used, n - used, "%s%s", i ? " " : "", registry[i]->name);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	return out;
}

int decoder_create(const decoder_ops *ops, const decoder_params *p, decoder **out)
{
	decoder *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return -ENOMEM;
	d->ops = ops;
	int rc = ops->create(p, &d->impl);
	if (rc < 0) {
		free(d);
		return rc;
	}
	*out = d;
	return 0;
}

void decoder_destroy(decoder *d)
{
	if (d == NULL)
		return;
	d->ops->destroy(d->impl);
	free(d);
}

const char *decoder_name(const decoder *d)
{
	return d->ops->name;
}

const char *decoder_start_options(decoder *d)
{
	return d->ops->start_options(d->impl);
}

int decoder_decode(decoder *d, uint64_t wal_start, const uint8_t *data, size_t len,
                   char err[DECODER_ERROR_MAX])
{
	err[0] = '\0';
	return d->ops->decode(d->impl, wal_start, data, len, err);
}

void decoder_reset(decoder *d)
{
	d->ops->reset(d->impl);
}

void decoder_notice_cb(void *arg, const char *message)
{
	decoder *d = arg;
	if (d != NULL && d->ops->notice != NULL && d->ops->notice(d->impl, message))
		return;
	log_pg_notice("replication", message);
}

int decoder_emit_change(const decoder_sink *sink, change *c)
{
	change_fill_unchanged(c);
	return sink->change_cb(sink->arg, c);
}

/*
 * rt_filter — Supabase Realtime postgres_changes filters (see rt_filter.h). Skeleton: the
 * contract compiles; parsing and matching land in the next commits.
 */
#include "rt_filter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct rt_filter {
	int ncond;
};

int rt_filter_parse(const char *text, rt_filter **out, char err[RT_FILTER_ERROR_MAX])
{
	if (text != NULL && text[0] != '\0') {
		snprintf(err, RT_FILTER_ERROR_MAX, "filters are not implemented yet");
		return -EINVAL;
	}
	rt_filter *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	*out = f;
	return 0;
}

void rt_filter_free(rt_filter *f)
{
	free(f);
}

int rt_filter_check(rt_filter *f, const relation *rel, char err[RT_FILTER_ERROR_MAX])
{
	return 0;
}

bool rt_filter_match(rt_filter *f, const relation *rel, const change_value *tuple)
{
	return f->ncond == 0;
}

int rt_filter_count(const rt_filter *f)
{
	return f->ncond;
}

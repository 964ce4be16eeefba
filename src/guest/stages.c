/* stages.c - boot stage timestamps and their "name=usec,..." text form.
 *
 * Trust: the text comes from capsem-init on the agent's command line (same binary, same guest),
 * but it is parsed strictly anyway: bounded names and counts, strict numbers. Runs in capsem-init
 * (PID 1) and in the capsem-agent main process.
 */
#include "stages.h"

#include <time.h>

#include "macro.h"
#include "parse.h"

uint64_t stages_now_usec(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int stage_name_ok(const char *name, size_t len)
{
	if (len == 0 || len >= PROTO_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

int stages_add(struct stages *st, const char *name, uint64_t usec)
{
	size_t len = strlen(name);
	if (!stage_name_ok(name, len))
		return -EINVAL;
	if (st->n >= PROTO_MAX_STAGES)
		return -ENOSPC;
	memcpy(st->s[st->n].name, name, len + 1);
	st->s[st->n].usec = usec;
	st->n++;
	return 0;
}

int stages_mark(struct stages *st, const char *name)
{
	return stages_add(st, name, stages_now_usec());
}

int stages_format(const struct stages *st, char *out, size_t size)
{
	size_t off = 0;
	if (size == 0)
		return -ENOBUFS;
	out[0] = 0;
	for (uint32_t i = 0; i < st->n; i++) {
		int k = snprintf(out + off, size - off, "%s%s=%llu", i ? "," : "", st->s[i].name,
				 (unsigned long long)st->s[i].usec);
		if (k < 0 || (size_t)k >= size - off) {
			out[0] = 0;
			return -ENOBUFS;
		}
		off += (size_t)k;
	}
	return 0;
}

int stages_parse(const char *s, struct stages *ret)
{
	struct stages st = { 0 };
	const char *p = s;

	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		char name[PROTO_NAME_MAX], num[24];
		uint64_t usec;

		if (!eq)
			return -EINVAL;
		size_t nlen = (size_t)(eq - p), vlen = len - nlen - 1;
		if (!stage_name_ok(p, nlen) || vlen == 0 || vlen >= sizeof(num))
			return -EINVAL;
		memcpy(name, p, nlen);
		name[nlen] = 0;
		memcpy(num, eq + 1, vlen);
		num[vlen] = 0;
		if (parse_u64(num, &usec) < 0)
			return -EINVAL;
		int r = stages_add(&st, name, usec);
		if (r < 0)
			return r;
		if (!end)
			break;
		p = end + 1;
		if (!*p)
			return -EINVAL; /* trailing comma */
	}
	*ret = st;
	return 0;
}

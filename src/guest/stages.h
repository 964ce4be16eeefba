/* stages.h - boot stage timestamps, taken by capsem-init and handed to capsem-agent.
 *
 * A stage is a name and the guest's CLOCK_BOOTTIME in microseconds (time since the kernel
 * started) at the end of that stage. capsem-init passes its list to the agent as one argument
 * in the text form "name=usec,name=usec,..." (see stages_format); the agent appends its own
 * stages and sends the whole list in PROTO_HELLO.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct stages {
	uint32_t n;
	struct proto_stage s[PROTO_MAX_STAGES];
};

/* CLOCK_BOOTTIME in microseconds. */
uint64_t stages_now_usec(void);
/* Append a stage. Names are 1..PROTO_NAME_MAX-1 characters of [a-z0-9_.-]. 0, -EINVAL (bad
 * name) or -ENOSPC (list full). */
int stages_add(struct stages *st, const char *name, uint64_t usec);
/* stages_add(st, name, stages_now_usec()). */
int stages_mark(struct stages *st, const char *name);
/* Write the text form into out (NUL-terminated). 0 or -ENOBUFS. */
int stages_format(const struct stages *st, char *out, size_t size);
/* Parse the text form ("" is an empty list). 0 or -EINVAL / -ENOSPC; *ret untouched on error. */
int stages_parse(const char *s, struct stages *ret);

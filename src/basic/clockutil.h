/* clockutil.h - one reading of a clock in milliseconds or nanoseconds (CLOCK_MONOTONIC for
 * durations and deadlines, CLOCK_REALTIME for timestamps). Pure libc; any thread. */
#pragma once

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t clock_ms(clockid_t id)
{
	return clock_ns(id) / 1000000u;
}

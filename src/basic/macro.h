/* macro.h - cleanup attributes and small helpers used everywhere.
 *
 * Ownership in Capsem is expressed with GCC's cleanup attribute: a variable declared
 * _cleanup_free_ is freed when it leaves scope, and TAKE_PTR()/TAKE_FD() hand it on. Every
 * destructor used with these macros accepts NULL (or -1). Libc only; guest code uses it too.
 */
#pragma once

#include <stddef.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_result_ __attribute__((warn_unused_result))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#undef MIN
#undef MAX
/* The struct that holds member ptr (a pointer to its field named member). */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Hand ownership of a pointer or fd to someone else: returns the value, leaves NULL / -1. */
#define TAKE_PTR(p)                      \
	({                               \
		__typeof__(p) _tp = (p); \
		(p) = NULL;              \
		_tp;                     \
	})
#define TAKE_FD(fd)             \
	({                      \
		int _tf = (fd); \
		(fd) = -1;      \
		_tf;            \
	})

static inline void freep(void *p)
{
	free(*(void **)p);
}

/* close() that keeps errno and ignores -1. Returns -1 for "fd = safe_close(fd)". */
static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

static inline void closep(int *fd)
{
	safe_close(*fd);
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

/* Wipe memory the compiler may not elide (secrets before free). */
static inline void explicit_wipe(void *p, size_t n)
{
	if (p && n)
		explicit_bzero(p, n);
}

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func) \
	static inline void func##p(type *p)     \
	{                                       \
		if (*p)                         \
			func(*p);               \
	}

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)

/* Return -errno of the last failed libc call, never 0 (a failing call that forgot errno). */
static inline int negative_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

static inline const char *strempty(const char *s)
{
	return s ? s : "";
}

static inline int streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* S without its leading PREFIX, or NULL when S does not start with it. */
static inline const char *startswith(const char *s, const char *prefix)
{
	size_t n = strlen(prefix);
	return strncmp(s, prefix, n) == 0 ? s + n : NULL;
}

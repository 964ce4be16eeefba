/* run.h - run build tools (make, tar, dpkg-query, busybox) by argv with posix_spawn, never
 * through a shell; log their output, report progress, capture small outputs. */
#pragma once

#include <stddef.h>

/* Run argv (argv[0] looked up in PATH) in directory cwd (NULL: ours) with environment envp
 * (NULL: ours), stdin from /dev/null, stdout and stderr appended to log_fd. While it runs, every progress_s seconds (0: never) print
 * "<what>: still building, N s, last: <last line of the log>" on stderr; log_fd must be open for
 * reading too for that. Returns the exit status (0..255, 128+N after signal N) or -errno when it
 * could not be started (-ENOENT: no such program). */
int run_logged(char *const *argv, const char *cwd, char *const *envp, int log_fd, const char *what,
	       unsigned progress_s);

/* A copy of our environment without the variables named in drop (NULL-terminated): for a child
 * that must not see e.g. a parent make's MAKEFLAGS. NULL when out of memory; strv_free() it. */
char **run_env_without(const char *const *drop);

/* Run argv with stdout captured into a malloc'ed NUL-terminated *ret_out (at most max bytes,
 * else -EFBIG and the child is killed) and stderr discarded. Returns the exit status or -errno;
 * *ret_out is set only when the return value is >= 0. */
int run_capture(char *const *argv, size_t max, char **ret_out);
/* The same in directory cwd (NULL: ours) with stderr to err_fd (-1: discarded). */
int run_capture_at(char *const *argv, const char *cwd, int err_fd, size_t max, char **ret_out);

/* The last line of the file open at fd (read with pread; at most n-1 bytes, control characters
 * replaced by '?') into buf; "" when there is none. */
void run_last_line(int fd, char *buf, size_t n);

/* Print the last nlines lines of the file at path to stderr, each indented by two spaces. */
void run_print_tail(const char *path, unsigned nlines);

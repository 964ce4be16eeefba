/* cliutil.h - pure helpers of the capsem command: argument parsing and table formatting.
 * No I/O beyond getenv(); unit-tested in tests/unit/cli. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* -e/--env: "KEY=VALUE" is taken as is, "KEY" copies the host's value. Appends to *env.
 * 0, -EINVAL (empty key, or KEY unset on the host) or -ENOMEM. */
int cli_parse_env(const char *arg, char ***env);

/* --mount HOST:GUEST[:ro]: both paths absolute (HOST may be relative: it is made absolute
 * against cwd, which may be NULL to refuse relative paths). Returns a new JSON object
 * {"host","guest","ro"} in *ret, or -EINVAL. */
int cli_parse_mount(const char *arg, const char *cwd, json_t **ret);

/* A size for --memory / --disk: parse_size() syntax, a whole number of MiB within
 * [min_mib, max_mib]. 0 or -EINVAL / -ERANGE. */

/* A VM name as docs/API.md allows: [a-z0-9][a-z0-9_.-]{0,62}. */
int cli_valid_name(const char *s);

/* One side of `capsem cp`: "REF:/abs/path" is a VM path (returns 1 with *ret_ref and *ret_path
 * malloc'ed), anything else a local path (returns 0, nothing set). -EINVAL for "REF:relative"
 * with a valid REF, -ENOMEM. */
int cli_parse_cp_path(const char *arg, char **ret_ref, char **ret_path);
/* The final path for a copy to dst_dir_or_file: when dst ends in '/', dst + basename(src),
 * else dst. malloc'ed or NULL. -EINVAL-style errors: returns NULL when src has no base name. */
char *cli_cp_target(const char *dst, const char *src);

/* 512 -> "512M", 1024 -> "1G", 1536 -> "1.5G", 0 -> "-". Always NUL-terminates. */
void cli_format_mib(uint64_t mib, char *out, size_t n);
/* "2026-11-22T06:00:00Z" (fractions of a second allowed) -> seconds since the epoch. 0 or
 * -EINVAL. */
int cli_parse_time(const char *s, time_t *ret);
/* 42 -> "42s", 150 -> "2m", 7200 -> "2h", 200000 -> "2d"; negative -> "0s". */
void cli_format_age(int64_t secs, char *out, size_t n);

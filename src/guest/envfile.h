/* envfile.h - /etc/environment as pam_env reads it: "KEY=VALUE" lines. Pure (no I/O); used by
 * the agent (every exec gets the file's variables) and capsem-doctor (which checks that). */
#pragma once

#include <stddef.h>

#define ENVFILE_PATH "/etc/environment"
#define ENVFILE_MAX (64 * 1024) /* bytes read of the file */
#define ENVFILE_MAX_ENTRIES 256

/* Parse text (len bytes, not NUL-terminated) into a NULL-terminated strv of "KEY=VALUE".
 * Blank lines and '#' comments are skipped, a leading "export " is dropped, one pair of
 * matching quotes around the value is removed; a line whose key is not [A-Za-z_][A-Za-z0-9_]*
 * or that has no '=' is skipped. A later line for the same key replaces an earlier one. At
 * most ENVFILE_MAX_ENTRIES entries (more: -E2BIG). 0, -ENOMEM or -E2BIG. */
int envfile_parse(const char *text, size_t len, char ***ret);

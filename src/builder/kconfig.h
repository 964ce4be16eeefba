/* kconfig.h - check a kernel config fragment against the final .config of a build.
 *
 * Kconfig silently drops a requested option whose dependencies are not met, so after
 * merge_config.sh + olddefconfig every line of the fragment is checked against the result:
 *   - "CONFIG_X=n" holds when X is absent from .config, "# CONFIG_X is not set" or "=n";
 *   - any other "CONFIG_X=value" holds only when .config has exactly "CONFIG_X=value";
 *   - blank lines and lines starting with '#' are ignored; when an option is listed twice the
 *     last line wins (as in merge_config.sh);
 *   - any other line is reported as malformed.
 * Pure: works on two NUL-terminated texts; caller's thread.
 */
#pragma once

#include <stddef.h>

/* Returns the number of fragment lines that do not hold (0 = all good) or -ENOMEM. When
 * ret_bad is not NULL it gets a NULL-terminated string vector (strv_free()) with one message
 * per failing line, e.g. "CONFIG_SLUB=y (final .config: is not set)", or NULL when none. */
int kconfig_check(const char *fragment, const char *config, char ***ret_bad);

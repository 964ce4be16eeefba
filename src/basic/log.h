/* log.h - leveled logging to stderr.
 *
 * Libraries log at debug level only; binaries pick the threshold and the program name.
 * Every function returns the negative errno it was given so "return log_error_errno(r, ...)"
 * reads naturally in main().
 */
#pragma once

#include "macro.h"

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Set the program name shown before each line and the maximum level printed. */
void log_setup(const char *progname, enum log_level max);
/* Raise the level to debug when $CAPSEM_DEBUG is set to a non-empty value. */
void log_setup_from_env(void);
enum log_level log_get_max(void);

/* Print one line: "progname: message" (plus ": strerror(-err)" when err < 0). Returns err. */
int log_full(enum log_level lvl, int err, const char *fmt, ...) _printf_(3, 4);

#define log_error(...) log_full(LOG_LVL_ERROR, 0, __VA_ARGS__)
#define log_warn(...) log_full(LOG_LVL_WARN, 0, __VA_ARGS__)
#define log_info(...) log_full(LOG_LVL_INFO, 0, __VA_ARGS__)
#define log_debug(...) log_full(LOG_LVL_DEBUG, 0, __VA_ARGS__)
/* These evaluate to e itself (what log_full returns), so that the static analyzer, which does not
 * follow variadic calls, sees that "return log_error_errno(r, ...)" returns r. */
#define log_error_errno(e, ...) log_errno_(LOG_LVL_ERROR, (e), __VA_ARGS__)
#define log_warn_errno(e, ...) log_errno_(LOG_LVL_WARN, (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_errno_(LOG_LVL_DEBUG, (e), __VA_ARGS__)
#define log_errno_(lvl, e, ...)                             \
	({                                                  \
		int _log_e = (e);                           \
		(void)log_full((lvl), _log_e, __VA_ARGS__); \
		_log_e;                                     \
	})

static inline int log_oom(void)
{
	return log_error_errno(-ENOMEM, "out of memory");
}

/* log.c - leveled logging to stderr. Any thread; one write(2) per line so lines never interleave. */
#include "log.h"

#include <stdarg.h>

static const char *log_progname = "capsem";
static enum log_level log_max = LOG_LVL_INFO;

void log_setup(const char *progname, enum log_level max)
{
	if (progname)
		log_progname = progname;
	log_max = max;
}

void log_setup_from_env(void)
{
	const char *e = getenv("CAPSEM_DEBUG");
	if (e && *e)
		log_max = LOG_LVL_DEBUG;
}

enum log_level log_get_max(void)
{
	return log_max;
}

int log_full(enum log_level lvl, int err, const char *fmt, ...)
{
	char line[2048];
	int n, m;
	va_list ap;

	if (lvl > log_max)
		return err;
	n = snprintf(line, sizeof(line), "%s: %s", log_progname,
		     lvl == LOG_LVL_WARN    ? "warning: "
		     : lvl == LOG_LVL_DEBUG ? "debug: "
					    : "");
	if (n < 0)
		return err;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0)
		return err;
	n = (int)strnlen(line, sizeof(line) - 2);
	if (err < 0)
		n += snprintf(line + n, sizeof(line) - (size_t)n, ": %s", strerror(-err));
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, (size_t)n);
	return err;
}

/* serial.h - the guest's serial console as a capped log file plus an in-memory tail.
 *
 * The console is guest-controlled output: the file stops growing at its cap (a final marker line
 * says so), and the last SERIAL_TAIL bytes are always kept in memory for error messages.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SERIAL_TAIL 8192u

struct serial_log {
	int fd;
	uint64_t written;
	uint64_t cap;
	int truncated;
	char tail[SERIAL_TAIL];
	size_t tail_len; /* ring fill */
	size_t tail_pos; /* next write position */
};

/* Create/truncate the log file (0600). 0 or -errno. */
int serial_log_open(struct serial_log *s, const char *path, uint64_t cap);
void serial_log_write(struct serial_log *s, const void *p, size_t n);
/* The last max_lines lines of the tail, printable characters only, NUL-terminated (malloc'ed). */
char *serial_log_tail(const struct serial_log *s, unsigned max_lines);
void serial_log_close(struct serial_log *s);

/* serial.c - capped serial console log for capsem-vm. Input is guest-controlled bytes; nothing is
 * interpreted, and what is shown to users is filtered to printable text. Main thread. */
#include "serial.h"

#include <fcntl.h>

#include "fdutil.h"
#include "macro.h"

int serial_log_open(struct serial_log *s, const char *path, uint64_t cap)
{
	*s = (struct serial_log){ .cap = cap };
	s->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	return s->fd < 0 ? negative_errno() : 0;
}

void serial_log_write(struct serial_log *s, const void *p, size_t n)
{
	const char *c = p;
	for (size_t i = 0; i < n; i++) {
		s->tail[s->tail_pos] = c[i];
		s->tail_pos = (s->tail_pos + 1) % SERIAL_TAIL;
		if (s->tail_len < SERIAL_TAIL)
			s->tail_len++;
	}
	if (s->fd < 0 || s->truncated)
		return;
	size_t k = n;
	if (s->written + k > s->cap)
		k = (size_t)(s->cap - s->written);
	if (k > 0 && fd_write_all(s->fd, c, k) == 0)
		s->written += k;
	if (k < n) {
		static const char mark[] = "\n[capsem: serial log truncated at its size cap]\n";
		(void)fd_write_all(s->fd, mark, sizeof(mark) - 1);
		s->truncated = 1;
	}
}

char *serial_log_tail(const struct serial_log *s, unsigned max_lines)
{
	char *out = malloc(SERIAL_TAIL + 1);
	size_t n = 0, start;
	if (!out)
		return NULL;
	start = (s->tail_pos + SERIAL_TAIL - s->tail_len) % SERIAL_TAIL;
	for (size_t i = 0; i < s->tail_len; i++) {
		unsigned char ch = (unsigned char)s->tail[(start + i) % SERIAL_TAIL];
		if (ch == '\n' || ch == '\t' || (ch >= 0x20 && ch < 0x7f))
			out[n++] = (char)ch;
	}
	while (n > 0 && out[n - 1] == '\n')
		n--;
	out[n] = 0;
	/* keep the last max_lines lines */
	unsigned lines = 0;
	for (size_t i = n; i > 0; i--) {
		if (out[i - 1] == '\n' && ++lines == max_lines) {
			memmove(out, out + i, n - i + 1);
			break;
		}
	}
	return out;
}

void serial_log_close(struct serial_log *s)
{
	s->fd = safe_close(s->fd);
}

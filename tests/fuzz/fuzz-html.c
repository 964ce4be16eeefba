/* fuzz-html.c - the gateway's HTML-to-text converter (src/gateway/html.c) on arbitrary bytes
 * (fetched pages are hostile): it must never fail but for memory, must keep its output bound
 * (at most 2n + 64 bytes, NUL-terminated) and must give the same text twice. (NUL and invalid
 * UTF-8 may pass through: the tool result makes them U+FFFD.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "html.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *a = NULL, *b = NULL;
	size_t na = 0, nb = 0;
	if (html_to_text((const char *)data, size, &a, &na) < 0)
		return 0;
	if (na > 2 * size + 64 || a[na] != 0)
		__builtin_trap();
	if (html_to_text((const char *)data, size, &b, &nb) == 0 &&
	    (nb != na || memcmp(a, b, na) != 0))
		__builtin_trap();
	free(a);
	free(b);
	return 0;
}

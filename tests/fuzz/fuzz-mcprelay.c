/* fuzz-mcprelay.c - capsem-mcp-relay's line scanner (mcppure.c) on arbitrary bytes: lines from
 * the agent and from the host gateway.
 *
 * Checks: the scan never reads outside (data, size); a request or response has an id text of
 * 1..MCPPURE_ID_MAX bytes, NUL-terminated, and a key ('s' or 'n' first) that fits; the error
 * line built for that id scans back as a response with the same text and key (so the relay's
 * own answers are valid JSON-RPC the agent can match); the request table takes the id and gives
 * it back exactly once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcppure.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mcppure_msg m, back;
	char line[MCPPURE_ID_MAX + 256];
	/* a private copy: the scanner must not rely on a terminator after size bytes */
	char *p = malloc(size ? size : 1);
	if (!p)
		return 0;
	memcpy(p, data, size);
	enum mcppure_kind k = mcppure_scan(p, size, &m);
	if (k == MCPPURE_REQUEST || k == MCPPURE_RESPONSE) {
		const struct mcppure_id *id = &m.id;
		if (id->text_len == 0 || id->text_len > MCPPURE_ID_MAX ||
		    strlen(id->text) != id->text_len || id->key_len == 0 ||
		    id->key_len > MCPPURE_ID_MAX + 1 || (id->key[0] != 's' && id->key[0] != 'n'))
			abort();
		ssize_t n =
			mcppure_error_line(id->text, id->text_len, -32603, "x", line, sizeof(line));
		if (n <= 0 || line[n - 1] != '\n')
			abort();
		if (mcppure_scan(line, (size_t)n - 1, &back) != MCPPURE_RESPONSE ||
		    back.id.text_len != id->text_len ||
		    memcmp(back.id.text, id->text, id->text_len) != 0 ||
		    back.id.key_len != id->key_len ||
		    memcmp(back.id.key, id->key, id->key_len) != 0)
			abort();
		struct mcppure_pending t = { 0 };
		if (mcppure_pending_add(&t, id) == 0) {
			if (!mcppure_pending_remove(&t, &back.id) || mcppure_pending_remove(&t, id))
				abort();
		}
		mcppure_pending_done(&t);
	} else if (m.id.text_len != 0 || m.id.key_len != 0) {
		abort();
	}
	/* the preamble with the bytes as a process name: always one line, bounded */
	char name[MCPPURE_COMM_MAX];
	size_t nl = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
	memcpy(name, data, nl);
	name[nl] = 0;
	ssize_t n = mcppure_preamble(42, name, line, sizeof(line));
	if (n <= 0 || line[n - 1] != '\n' || memchr(line, '\n', (size_t)n - 1))
		abort();
	free(p);
	return 0;
}

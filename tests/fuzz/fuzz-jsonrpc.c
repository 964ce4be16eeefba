/* fuzz-jsonrpc.c - the JSON-RPC / MCP message library (src/mcp/jsonrpc.c) on arbitrary bytes
 * (MCP clients, guests and upstream MCP servers are hostile): the bytes as one message (parse,
 * classify, the error reply, serialisation of the reply), then as a stream through the newline
 * reader with a small cap, in uneven pieces, each line parsed. Accepted messages must be
 * well-formed; replies must be single lines; the reader must never hold more than its cap. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonrpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const void *p, size_t n)
{
	struct jsonrpc_msg m;
	int r = jsonrpc_parse(p, n, &m);
	if (r == 0) {
		if (m.kind == JSONRPC_INVALID || !json_is_object(m.root))
			__builtin_trap();
		if ((m.kind == JSONRPC_REQUEST || m.kind == JSONRPC_NOTIFICATION) && !m.method)
			__builtin_trap();
		if (m.kind == JSONRPC_REQUEST && !jsonrpc_id_valid(m.id))
			__builtin_trap();
		if (m.kind == JSONRPC_RESPONSE && !m.result)
			__builtin_trap();
		if (jsonrpc_error_for(&m))
			__builtin_trap();
	} else {
		if (r != -EBADMSG || m.kind != JSONRPC_INVALID || !m.error_message ||
		    (m.error_code != JSONRPC_PARSE_ERROR &&
		     m.error_code != JSONRPC_INVALID_REQUEST))
			__builtin_trap();
		json_t *e = jsonrpc_error_for(&m);
		if (e) {
			char *t = NULL;
			size_t tn = 0;
			if (jsonrpc_dump(e, &t, &tn) == 0) {
				if (tn == 0 || t[tn - 1] != '\n' || memchr(t, '\n', tn - 1))
					__builtin_trap();
				struct jsonrpc_msg back;
				if (jsonrpc_parse(t, tn - 1, &back) != 0 ||
				    back.kind != JSONRPC_ERROR)
					__builtin_trap();
				jsonrpc_msg_done(&back);
				free(t);
			}
			json_decref(e);
		}
	}
	jsonrpc_msg_done(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size);

	struct jsonrpc_reader rd;
	size_t used = 0, step = size ? (size_t)data[0] % 7 + 1 : 1;
	jsonrpc_reader_init(&rd, 256);
	while (used < size) {
		size_t piece = size - used < step ? size - used : step;
		size_t k = jsonrpc_reader_feed(&rd, data + used, piece);
		if (k > piece || rd.line.alloc > 257)
			__builtin_trap();
		used += k;
		const char *line;
		size_t len;
		int st = jsonrpc_reader_line(&rd, &line, &len);
		if (st == JSONRPC_LINE_OK) {
			if (len == 0 || len > 256 || memchr(line, '\n', len))
				__builtin_trap();
			one(line, len);
		} else if (st == JSONRPC_LINE_NONE && k != piece) {
			__builtin_trap();
		}
		step = step % 13 + 1;
	}
	if (jsonrpc_reader_finish(&rd) == JSONRPC_LINE_OK) {
		const char *line;
		size_t len;
		if (jsonrpc_reader_line(&rd, &line, &len) != JSONRPC_LINE_OK || len > 256)
			__builtin_trap();
		one(line, len);
	}
	jsonrpc_reader_done(&rd);
	return 0;
}

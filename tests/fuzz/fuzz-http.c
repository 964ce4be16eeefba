/* fuzz-http.c - capsemd's HTTP request parser on arbitrary bytes (API clients are hostile):
 * the head, then the rest as a chunked body, query lookups on the target and the JSON depth
 * check. Accepted requests must respect every cap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request r = { 0 };
	ssize_t k = http_parse_head(data, size, &r);
	if (k > 0) {
		if ((size_t)k > size || r.n_headers > HTTP_MAX_HEADERS || r.path[0] != '/' ||
		    (r.chunked && r.has_length))
			__builtin_trap();
		for (size_t i = 0; i < r.n_headers; i++)
			if (!r.headers[i].name[0])
				__builtin_trap();
		char *v = NULL;
		if (http_query_get(r.query, "path", &v) == 0) {
			if (memchr(v, 0, strlen(v)))
				__builtin_trap();
			free(v);
		}
		struct http_chunked st = { 0 };
		struct buf body;
		size_t used = 0;
		buf_init(&body, 4096);
		if (http_chunked_feed(&st, data + k, size - (size_t)k, &body, &used) >= 0 &&
		    (used > size - (size_t)k || buf_len(&body) > 4096))
			__builtin_trap();
		buf_done(&body, 0);
		http_request_done(&r);
	} else if (k < 0) {
		(void)http_error_status((int)k);
	}
	(void)http_json_depth_check(data, size, HTTP_MAX_JSON_DEPTH);
	return 0;
}

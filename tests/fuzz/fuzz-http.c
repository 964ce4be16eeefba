/* fuzz-http.c - the HTTP/1.1 parser (src/shared/http.c) on arbitrary bytes (API clients,
 * guests and upstream servers are hostile): a request head, then the rest as a chunked body,
 * query lookups on the target and the JSON depth check; the same bytes as a response head, its
 * framing and a chunked scan. Accepted messages must respect every cap; an accepted request has
 * each header a reader could take first-wins or last-wins at most once, and Host if HTTP/1.1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_msg r = { 0 };
	ssize_t k = http_parse_head(data, size, &r);
	if (k > 0) {
		if ((size_t)k > size || r.n_headers > HTTP_MAX_HEADERS || r.path[0] != '/' ||
		    (r.chunked && r.has_length))
			__builtin_trap();
		static const char *const once[] = {
			"Host",	   "Content-Length", "Transfer-Encoding", "Connection",
			"Upgrade", "Authorization",  "x-api-key",	  "x-goog-api-key"
		};
		for (size_t i = 0; i < r.n_headers; i++)
			if (!r.headers[i].name[0])
				__builtin_trap();
		for (size_t j = 0; j < sizeof(once) / sizeof(once[0]); j++) {
			int seen = 0;
			for (size_t i = 0; i < r.n_headers; i++)
				seen += strcasecmp(r.headers[i].name, once[j]) == 0;
			if (seen > 1)
				__builtin_trap();
		}
		if (r.minor == 1 && !http_header_get(&r, "Host"))
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
		http_msg_done(&r);
	} else if (k < 0) {
		(void)http_error_status((int)k);
	}
	(void)http_json_depth_check(data, size, HTTP_MAX_JSON_DEPTH);

	struct http_msg m = { 0 };
	k = http_parse_response_head(data, size, &m);
	if (k > 0) {
		if ((size_t)k > size || m.n_headers > HTTP_MAX_HEADERS || m.status < 100 ||
		    m.status > 999 || !m.reason || m.path)
			__builtin_trap();
		enum http_body f = http_body_framing(&m, "GET");
		if (f == HTTP_BODY_CHUNKED) {
			struct http_chunked st = { 0 };
			size_t used = 0;
			if (http_chunked_scan(&st, data + k, size - (size_t)k, 1024, NULL, NULL,
					      &used) >= 0 &&
			    (used > size - (size_t)k || st.total > 1024))
				__builtin_trap();
		}
		http_msg_done(&m);
	}
	return 0;
}

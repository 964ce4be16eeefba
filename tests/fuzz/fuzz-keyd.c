/* fuzz-keyd.c - the key broker's reading of a stream from capsem-vm (which a guest may have
 * compromised): frames (keyd_frame_parse) and what each sends upstream (keyd_frame_output: a
 * head with its placeholders swapped, data as it is).
 *
 * Input: byte 0 picks the stream's host (a provider's domain that has a key, or another host);
 * the rest is the stream. Checked: a frame never claims more than the input holds or more than
 * KEYD_FRAME_MAX; a data frame goes out byte for byte; a head goes out unchanged for another
 * host; for the provider's host the key appears at most where the placeholder was (never more
 * often than the placeholder's occurrences), and nothing is written for a malformed stream
 * after the frame that broke it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "credentials.h"
#include "keyd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY "sk-ant-REALKEY-0123456789abcdef"
#define PH "sk-ant-capsem-placeholder"

static size_t count(const uint8_t *p, size_t n, const char *s)
{
	size_t k = 0, sl = strlen(s);
	for (size_t i = 0; i + sl <= n; i++)
		if (memcmp(p + i, s, sl) == 0)
			k++;
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cred_store *s;
	if (!s) {
		char *env[] = { (char *)"ANTHROPIC_API_KEY=" KEY, NULL };
		if (cred_load(NULL, env, &s, NULL, 0) < 0)
			__builtin_trap();
	}
	if (size < 1)
		return 0;
	const char *host = data[0] & 1 ? "api.anthropic.com" : "upstream.test";
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	while (n > 0) {
		enum keyd_frame t;
		size_t len;
		ssize_t k = keyd_frame_parse(p, n, &t, &len);
		if (k == 0 || k == -EBADMSG)
			break;
		if (k < 0 || (size_t)k != KEYD_HDR + len || (size_t)k > n || len > KEYD_FRAME_MAX ||
		    (t != KEYD_HEAD && t != KEYD_DATA))
			__builtin_trap();
		struct buf out = BUF_INIT(2 * KEYD_FRAME_MAX);
		int r = keyd_frame_output(s, host, t, p + KEYD_HDR, len, &out);
		if (r == 0) {
			const uint8_t *o = buf_head(&out);
			size_t ol = buf_len(&out);
			bool same = ol == len && (len == 0 || memcmp(o, p + KEYD_HDR, len) == 0);
			if ((t == KEYD_DATA || !(data[0] & 1)) && !same)
				__builtin_trap();
			if (count(o, ol, KEY) >
			    count(p + KEYD_HDR, len, KEY) + count(p + KEYD_HDR, len, PH))
				__builtin_trap();
		}
		buf_done(&out, 1);
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

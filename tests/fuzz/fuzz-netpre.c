/* fuzz-netpre.c - the vsock 5002 net-proxy preamble decoder (what the host runs on the first bytes
 * of every guest connection) on arbitrary bytes.
 *
 * The input is decoded whole, then fed the way a socket delivers it (growing prefixes): a prefix
 * of a decodable input must only ever ask for more (-EAGAIN) or fail the same way, never succeed
 * early. A success must re-encode to exactly the bytes consumed.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_net_preamble p, q;
	uint8_t w[PROTO_NET_PREAMBLE_MAX];
	ssize_t k = proto_net_preamble_decode(data, size, &p);

	if (k > 0) {
		if ((size_t)k > size || (size_t)k > PROTO_NET_PREAMBLE_MAX)
			__builtin_trap();
		for (size_t i = 0; i < (size_t)k; i++)
			if (proto_net_preamble_decode(data, i, &q) != -EAGAIN)
				__builtin_trap();
		ssize_t e = proto_net_preamble_encode(&p, w, sizeof(w));
		if (e != k || memcmp(w, data, (size_t)k) != 0)
			__builtin_trap();
		if (p.comm[sizeof(p.comm) - 1] != 0 || strlen(p.comm) > PROTO_NET_COMM_MAX)
			__builtin_trap();
	} else if (k != -EAGAIN && k != -EBADMSG && k != -EPROTO) {
		__builtin_trap();
	}
	return 0;
}

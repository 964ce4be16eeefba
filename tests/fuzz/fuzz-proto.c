/* fuzz-proto.c - every decoder of src/proto on arbitrary bytes.
 *
 * The first byte picks the decoder; the rest is a byte stream cut into frames with
 * proto_frame_parse, exactly as the host and the agent read their sockets. Any successful exec
 * or boot config decode is re-encoded and decoded again, and must round-trip. (The vsock 5002
 * preamble has its own target, fuzz-netpre.)
 */
#include <stdint.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_one(uint16_t type, const uint8_t *p, size_t n)
{
	struct proto_hello h;
	struct proto_boot_config bc;
	struct proto_exit e;
	struct proto_error er;
	struct proto_exec *x = NULL;
	uint32_t v;
	uint16_t r, c;

	switch (type % 8) {
	case 0:
		(void)proto_hello_decode(p, n, &h);
		break;
	case 1:
		if (proto_boot_config_decode(p, n, &bc) == 0) {
			/* whatever decodes, encodes again and decodes to the same values */
			struct proto_boot_config bc2;
			struct buf b;
			uint16_t t;
			const uint8_t *pl;
			uint32_t len;
			buf_init(&b, 2 * PROTO_MAX_PAYLOAD);
			if (proto_boot_config_encode(&bc, &b) != 0 ||
			    proto_frame_parse(buf_head(&b), buf_len(&b), &t, &pl, &len) <= 0 ||
			    proto_boot_config_decode(pl, len, &bc2) != 0)
				__builtin_trap();
			if (bc2.envc != bc.envc || strcmp(bc2.hostname, bc.hostname) != 0 ||
			    !bc2.ca_pem != !bc.ca_pem ||
			    (bc.ca_pem && strcmp(bc.ca_pem, bc2.ca_pem) != 0))
				__builtin_trap();
			for (uint32_t i = 0; i < bc.envc; i++)
				if (strcmp(bc.envp[i], bc2.envp[i]) != 0)
					__builtin_trap();
			proto_boot_config_done(&bc2);
			proto_boot_config_done(&bc);
			buf_done(&b, 0);
		}
		break;
	case 2:
		if (proto_exec_decode(p, n, &x) == 0) {
			struct buf b;
			struct proto_exec *y = NULL;
			uint16_t t;
			const uint8_t *pl;
			uint32_t len;
			buf_init(&b, 2 * PROTO_MAX_PAYLOAD);
			if (proto_exec_encode(x, &b) == 0 &&
			    proto_frame_parse(buf_head(&b), buf_len(&b), &t, &pl, &len) > 0) {
				if (proto_exec_decode(pl, len, &y) != 0 || len != n ||
				    memcmp(pl, p, n) != 0)
					__builtin_trap();
				proto_exec_free(y);
			}
			buf_done(&b, 0);
			proto_exec_free(x);
		}
		break;
	case 3:
		if (proto_exit_decode(p, n, &e) == 0)
			(void)proto_exit_status(&e);
		break;
	case 4:
		(void)proto_error_decode(p, n, &er);
		break;
	case 5:
		(void)proto_u32_decode(p, n, &v);
		break;
	default:
		(void)proto_winsize_decode(p, n, &r, &c);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	data++;
	size--;
	/* raw payload for the selected decoder */
	decode_one(sel, data, size);
	/* and as a framed stream */
	while (size > 0) {
		uint16_t type;
		const uint8_t *pl;
		uint32_t len;
		ssize_t k = proto_frame_parse(data, size, &type, &pl, &len);
		if (k <= 0)
			break;
		decode_one(type, pl, len);
		data += k;
		size -= (size_t)k;
	}
	return 0;
}

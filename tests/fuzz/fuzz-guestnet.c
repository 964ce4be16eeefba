/* fuzz-guestnet.c - the guest egress proxies' parsers on arbitrary bytes: /proc/net/tcp text
 * (procnet_find_inode), fd links (procnet_socket_inode), comm sanitizing, and the SERVFAIL
 * builder on DNS queries from guest processes (dnsmap_servfail).
 *
 * The first byte picks the parser. A SERVFAIL answer must be a response to the query: same ID,
 * QR set, RCODE 2, and never longer than the header plus the query's question.
 */
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "dnsmap.h"
#include "procnet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t addr[16] = { 192, 0, 0, 8 };
	uint8_t out[DNS_HDR_SIZE + 300];
	char comm[17];
	uint64_t ino;
	ssize_t k;

	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	data++;
	size--;
	switch (sel % 4) {
	case 0:
		(void)procnet_find_inode((const char *)data, size, AF_INET, addr, 40000, &ino);
		(void)procnet_find_inode((const char *)data, size, AF_INET6, addr, 53, &ino);
		break;
	case 1:
		(void)procnet_socket_inode((const char *)data, size, &ino);
		break;
	case 2:
		procnet_comm_sanitize((const char *)data, size, comm, sizeof(comm));
		if (strlen(comm) >= sizeof(comm))
			__builtin_trap();
		for (size_t i = 0; comm[i]; i++)
			if (comm[i] < 0x20 || comm[i] > 0x7e)
				__builtin_trap();
		break;
	default:
		k = dnsmap_servfail(data, size, out, sizeof(out));
		if (k > 0) {
			if ((size_t)k < DNS_HDR_SIZE || (size_t)k > size || out[0] != data[0] ||
			    out[1] != data[1] || !(out[2] & 0x80) || (out[3] & 0x0f) != 2)
				__builtin_trap();
		}
		break;
	}
	return 0;
}

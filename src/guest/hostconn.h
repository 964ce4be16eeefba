/* hostconn.h - where a guest process connects to a host port: the channel mux's local socket
 * (<HOSTCONN_DIR>/<port>, made by capsem-chan when the VM's host channel is a virtio-serial
 * port) when it exists, else vsock to the host (CID 2). */
#pragma once

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>

#define HOSTCONN_DIR "/run/capsem/chan"
/* the agent's exec socket when the channel is serial: capsem-chan connects here for port 5001 */
#define HOSTCONN_EXEC_LISTEN HOSTCONN_DIR "/listen-5001"

union hostconn_addr {
	struct sockaddr sa;
	struct sockaddr_un un;
	struct sockaddr_vm vm;
};

/* The address for host port; *ret_len its length; the family is ret->sa.sa_family. */
void hostconn_addr(uint32_t port, union hostconn_addr *ret, socklen_t *ret_len);

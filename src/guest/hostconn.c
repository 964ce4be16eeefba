/* hostconn.c - the address of a host port for guest processes (hostconn.h). Libc only; any
 * thread. */
#include "hostconn.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "proto.h"

void hostconn_addr(uint32_t port, union hostconn_addr *ret, socklen_t *ret_len)
{
	struct stat st;
	memset(ret, 0, sizeof(*ret));
	ret->un.sun_family = AF_UNIX;
	snprintf(ret->un.sun_path, sizeof(ret->un.sun_path), HOSTCONN_DIR "/%u", port);
	if (stat(ret->un.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		*ret_len = sizeof(ret->un);
		return;
	}
	memset(ret, 0, sizeof(*ret));
	ret->vm.svm_family = AF_VSOCK;
	ret->vm.svm_cid = PROTO_HOST_CID;
	ret->vm.svm_port = port;
	*ret_len = sizeof(ret->vm);
}

/* wsrelay.h - the guest's relay between the workspace's 9p mount and its virtio-serial port.
 *
 * The kernel's 9p fd transport reads and writes its file with kernel_read/kernel_write, which a
 * virtio-serial port does not support (it has no read_iter/write_iter: "kernel write not
 * supported"), so capsem-init mounts one end of a socket pair and a child of init copies bytes
 * between the other end and the port "capsem.ws", whose host end is capsem-vm's 9p server
 * (src/vm/vmws.c). Bytes in flight in the relay are guest memory: a suspend saves them with the
 * rest of the guest.
 */
#pragma once

#include <sys/types.h>

/* Fork the relay between port_fd and sock_fd (both taken over: closed here in the parent). The
 * child's pid, or -errno. */
pid_t wsrelay_spawn(int port_fd, int sock_fd);

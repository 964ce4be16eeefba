/* vmseccomp.h - capsem-vm's seccomp allow-list (vmseccomp.c). */
#pragma once

#include "scfilter.h"

/* Install capsem-vm's filter on every thread of the calling process (needs no_new_privs):
 * listed syscalls allowed, the kill list killing (SIGSYS), the rest ENOSYS (SCF_ENFORCE) or
 * logged and allowed (SCF_LOG). 0 or -errno (scf_install). Also used by
 * tests/helpers/proxy-front --seccomp, to measure the filter's cost on the proxy. */
int vm_seccomp_install(enum scf_mode mode);

/* The same for the workspace's 9p server (capsem-vm --ws9p-serve, ws9pd.c): a much shorter list
 * (files below its root, its sockets, memory; no socket(), connect() or exec), the same kill
 * list. */
int vm_seccomp_install_ws9p(enum scf_mode mode);

/* The same for the key broker (capsem-vm --keyd, keydmain.c): its control socket, TCP
 * connections out and name resolution, reading files, threads, memory; no exec, no process
 * control. */
int vm_seccomp_install_keyd(enum scf_mode mode);

/* The calling thread's own narrower filter: the channel mux's thread (vmchan.c): its sockets,
 * memory, futex; no open, exec or clone. Stacked on capsem-vm's. */
int vm_seccomp_install_chan_thread(enum scf_mode mode);

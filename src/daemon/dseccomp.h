/* dseccomp.h - the seccomp allow-lists of capsemd and of the tools it runs: mkfs.ext4, tar
 * (dseccomp.c). */
#pragma once

#include "scfilter.h"

/* Install capsemd's filter on every thread (needs no_new_privs): its allow-list, a superset of
 * every filter beneath it since all it starts inherits it; scf_kill_escape kills (chroot
 * excepted: virtiofsd's sandbox under Landlock; and userfaultfd, which virtiofsd probes, is
 * refused); the rest ENOSYS (SCF_ENFORCE) or logged
 * (SCF_LOG). with_mounts: mount, umount2 and pivot_root are allowed instead of killed (root
 * without Landlock, where virtiofsd builds its namespace sandbox). 0 or -errno (scf_install). */
int dseccomp_install(enum scf_mode mode, int with_mounts);

/* mkfs.ext4's filter, built for scf_load in the child between fork and exec: execve, files and
 * memory; scf_kill_escape kills; the rest ENOSYS or logged. 0 or -errno (scf_build). */
int dseccomp_mkfs_build(enum scf_mode mode, struct scf_prog *ret);

/* tar's: mkfs's list and what unpacking writes (directories, links, owners, modes, times,
 * xattrs, device nodes); no process, no socket. 0 or -errno (scf_build). */
int dseccomp_tar_build(enum scf_mode mode, struct scf_prog *ret);

/* Whether capsemd's filter (with_mounts as above), or mkfs's, lets syscall nr through: for the
 * unit tests. 1 or 0. */
int dseccomp_allows(int nr, int with_mounts);
/* Whether capsemd's filter kills syscall nr. 1 or 0. */
int dseccomp_kills(int nr, int with_mounts);
int dseccomp_mkfs_allows(int nr);
int dseccomp_tar_allows(int nr);

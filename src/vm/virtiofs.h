/* virtiofs.h - the workspace's file server: Debian's virtiofsd (QEMU 7.2's C virtiofsd,
 * /usr/lib/qemu/virtiofsd) serving one host directory to the guest over vhost-user-fs.
 */
#pragma once

#include <sys/types.h>

#define VIRTIOFS_SOCKET "virtiofs.sock" /* in the VM directory; QEMU connects to it */
#define VIRTIOFS_LOG "virtiofsd.log"
#define VIRTIOFS_TAG "capsemws" /* the mount tag the guest mounts on /root/workspace */
#define VIRTIOFS_DEFAULT_BIN "/usr/lib/qemu/virtiofsd"
#define VIRTIOFS_MIN_NOFILE 262144	      /* open files virtiofsd should be able to reach */
#define VIRTIOFS_GUEST_PATH "/root/workspace" /* where the guest mounts the workspace */
#define VIRTIOFS_TAG_9P "9p"	     /* capsem.workspace=9p: it is the 9p share on that path */
#define VIRTIOFS_TAG_SERIAL "serial" /* capsem.workspace=serial: 9p on the port "capsem.ws" */

/* The virtiofsd to run: $CAPSEM_VIRTIOFSD, else VIRTIOFS_DEFAULT_BIN, else "virtiofsd" in
 * PATH. 0 with *ret (malloc'ed), -ENOENT, -ENOMEM. */
int virtiofs_find(char **ret);

/* The argv for serving source (an absolute, real directory) on the listening socket that the
 * child gets as fd 3, sandboxed with chroot (chroot_sandbox, under Landlock:
 * confinfo_virtiofsd_chroot()) or with its namespaces. Owned strv, or NULL (ENOMEM). */
char **virtiofs_argv(const char *binary, const char *source, int chroot_sandbox);

/* Start argv (virtiofs_argv, argv[0] absolute) with listen_fd as fd 3 and its output to log_fd
 * (confine_spawn); as root only. With chroot_sandbox: in an empty network namespace and a
 * Landlock ruleset that holds source (read-write), the system and /proc (read) and argv[0];
 * else virtiofsd builds its own namespace sandbox (mount, PID and network namespaces,
 * pivot_root into source). Either way no_new_privs and its own seccomp filter. 0 with the pid
 * and a pidfd, or -errno. */
int virtiofs_spawn(char *const *argv, const char *source, int chroot_sandbox, int listen_fd,
		   int log_fd, pid_t *ret_pid, int *ret_pidfd);

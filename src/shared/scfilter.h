/* scfilter.h - a seccomp-BPF allow-list built from syscall numbers (raw <linux/filter.h>).
 *
 * The filter checks the architecture (x86-64 only; anything else, x32 included, is killed),
 * kills the process on the syscalls of `kill`, allows those of `allow`, and gives every other
 * syscall the default action: an error (ENOSYS, so libc falls back as on an older kernel) when
 * enforcing, or "log and allow" (SECCOMP_RET_LOG: the kernel's audit log names it) while an
 * allow-list is being measured. A filter is inherited by every child and kept across exec.
 */
#pragma once

#include <stddef.h>

enum scf_mode {
	SCF_ENFORCE, /* not listed: ENOSYS */
	SCF_LOG,     /* not listed: allowed and logged (measurement only) */
};

/* Install the filter on every thread of the process (SECCOMP_FILTER_FLAG_TSYNC). Needs
 * PR_SET_NO_NEW_PRIVS already set. 0, -E2BIG (lists too long for one program), -ESRCH (a
 * thread could not be synchronised) or -errno. */
int scf_install(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		enum scf_mode mode);

/* The same for the calling thread only (and the threads and processes it creates later): a
 * narrower list for one thread, stacked on the process's filter. */
int scf_install_thread(const int *allow, size_t n_allow, const int *kill, size_t n_kill,
		       enum scf_mode mode);

/* A filter built ahead of time, to be loaded in a child between fork and exec (a threaded
 * parent's child may only make async-signal-safe calls: scf_load is one syscall). */
struct scf_prog {
	void *insns; /* struct sock_filter[len], owned */
	unsigned short len;
};
#define SCF_PROG_INIT                   \
	{                               \
		.insns = NULL, .len = 0 \
	}

/* Build the program of scf_install into *ret (scf_prog_free it). 0, -E2BIG or -ENOMEM; on
 * failure *ret is untouched. */
int scf_build(const int *allow, size_t n_allow, const int *kill, size_t n_kill, enum scf_mode mode,
	      struct scf_prog *ret);

/* Load a built filter on the calling thread (tsync 0: a child about to exec, single-threaded)
 * or on every thread of the process (tsync 1). Needs PR_SET_NO_NEW_PRIVS. Async-signal-safe.
 * 0, -ESRCH (a thread could not be synchronised) or -errno. A program with no instructions
 * (never built: the layer is off) loads nothing and returns 0. */
int scf_load(const struct scf_prog *p, int tsync);

/* Free the program (NULL-safe, idempotent). */
void scf_prog_free(struct scf_prog *p);

/* The kill list every host filter of Capsem's starts from (capsemd's, mkfs's,
 * capsem-gateway's, capsem-vm's and its helpers' and threads'): the syscalls that are the usual
 * first steps of an escape or of a hold on the host (ptrace, process_vm_*, bpf,
 * perf_event_open, userfaultfd, kexec, modules, keys, reboot, swap, accounting, quotas,
 * clock setting, port I/O, open_by_handle_at, mount and the new mount API, pivot_root, chroot,
 * setns, vhangup, host and domain names). n_ret gets its length. Static storage. */
const int *scf_kill_escape(size_t *n_ret);

/* Whether the kernel offers seccomp filters that can kill a process (SECCOMP_RET_KILL_PROCESS):
 * 1 or 0. */
int scf_available(void);

/* The x86-64 name of syscall nr ("openat"), or NULL when unknown. */
const char *scf_syscall_name(long nr);

/* The number of an x86-64 syscall name, or -1. */
long scf_syscall_nr(const char *name);

/* Describe the death of process pid by SIGSYS: "killed by seccomp (SIGSYS): syscall ptrace"
 * when the kernel's audit record of it can be read in /dev/kmsg (needs root or
 * kernel.dmesg_restrict=0, and no auditd taking the records), else "killed by seccomp
 * (SIGSYS)". The record is printed by the kernel's audit thread a moment after the kill: this
 * waits for it on /dev/kmsg for at most half a second. Writes a NUL-terminated line into buf. */
void scf_describe_sigsys(int pid, char *buf, size_t len);

/* How process pid ended, from its wait status, for a log line after its name: "exited with
 * status N", "was killed by signal N", or "was killed by seccomp (SIGSYS)..." as above. */
void scf_describe_exit(int pid, int status, char *buf, size_t len);

/* The syscall whose seccomp kill (SIGSYS) ended process pid, from the kernel's audit record in
 * /dev/kmsg (the last of that pid; with comm non-NULL only a record of a process of that name,
 * comm="capsemd"), waiting at most wait_ms for it to be printed. The syscall's number (>= 0),
 * -ENOENT when no such record is there, or -errno when /dev/kmsg cannot be read (-EACCES/-EPERM:
 * kernel.dmesg_restrict). */
long scf_sigsys_find(int pid, const char *comm, unsigned wait_ms);

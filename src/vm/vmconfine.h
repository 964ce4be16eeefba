/* vmconfine.h - capsem-vm's host confinement (vmconfine.c): QEMU's cgroup, capsem-vm's own
 * no_new_privs + Landlock + seccomp, the MCP servers' launcher. Main thread only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct vm;
struct vm_opts;

/* Whether the layers added by the confinement work are on (CAPSEM_CONFINE is not "0"; off is
 * for benchmarks only). */
int vm_confine_enabled(void);

/* QEMU's cgroup memory limit for these options, in MiB: guest RAM + the TCG translation cache
 * (none under KVM) + a measured margin. */
uint64_t vm_cgroup_mem_mib(const struct vm_opts *o);

/* Make QEMU's cgroup in vm->cg (before vm_confine_self); a missing layer is one warning line. */
void vm_cgroup_setup(struct vm *vm);

/* Confine capsem-vm itself: no_new_privs, Landlock, then the seccomp allow-list on every
 * thread. Call before any thread exists (Landlock applies to the calling thread and what it
 * creates later). A layer the host lacks is one warning line. 0, or -errno when a layer that
 * exists could not be applied (the VM must not start then). */
int vm_confine_self(struct vm *vm);

/* The argv prefix the MCP gateway puts before each stdio server's command (owned strv), or
 * NULL (confinement off, or out of memory: the servers then run unconfined by capsem-vm's
 * launcher but inside its domain). */
char **vm_mcp_prefix(struct vm *vm);

/* capsem-vm --mcp-exec CAPSEM_HOME TMPDIR -- COMMAND ARGS: the MCP server launcher. Applies
 * no_new_privs and the server's Landlock ruleset, then execs; returns an exit status only on
 * failure. */
int vm_mcp_exec(int argc, char **argv);

/* How QEMU (vm->qemu_pid) ended, from its wait status: "status N", "signal N", "killed by
 * seccomp (SIGSYS): syscall NAME", or its cgroup's OOM kill. */
void vm_describe_death(struct vm *vm, int status, char *buf, size_t len);

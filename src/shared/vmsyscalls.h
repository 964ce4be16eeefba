/* vmsyscalls.h - capsem-vm's syscall allow-list, shared with capsemd's filter (vmsyscalls.c). */
#pragma once

#include <stddef.h>

/* The syscalls capsem-vm and what it runs (QEMU, the MCP servers: Python, Node) make, most
 * frequent first (the filter scans linearly). */
extern const int vm_syscalls[];
extern const size_t vm_syscalls_n;

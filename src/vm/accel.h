/* accel.h - choose the accelerator: KVM only where it can really run a guest. */
#pragma once

enum vm_accel { VM_ACCEL_AUTO, VM_ACCEL_KVM, VM_ACCEL_TCG };

/* Parse "auto" | "kvm" | "tcg". 0 or -EINVAL. */
int accel_parse(const char *s, enum vm_accel *ret);
const char *accel_name(enum vm_accel a);
/* 1 when a /proc/cpuinfo text has a "flags" line with vmx or svm, else 0. Pure. */
int accel_cpuinfo_has_virt(const char *cpuinfo);
/* Resolve a request to KVM or TCG. KVM is usable only when /dev/kvm opens read-write AND the CPU
 * exposes vmx/svm (a paravirtual nested /dev/kvm without them cannot run a normal guest).
 * For AUTO, *ret_why explains a TCG fallback (static string); an explicit KVM request that cannot
 * be met returns -ENODEV with *ret_why set. */
int accel_resolve(enum vm_accel want, enum vm_accel *ret, const char **ret_why);

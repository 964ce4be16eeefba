/* cfprobe.h - a test hook for the host confinement (tests/e2e/test_confinement.py).
 *
 * When $CAPSEM_CONFINE_PROBE is set, cfprobe_run() tries each probe it lists from inside the
 * caller's confinement and writes one line per probe to stderr:
 *   "confine-probe WHO KIND:ARG: ok" or "... : EACCES" (the errno's name) or "... : signal N".
 * Probes, ';'-separated: open:PATH (read), create:DIR (make a file in DIR), exec:PATH,
 * connect:IPV4:PORT (TCP), ptrace:PID (attach); in an argument, "{child=NAME}" stands for the
 * pid of the caller's child with NAME among its arguments (the key broker: "{child=--keyd}").
 * Each runs in a forked child, so one that the seccomp filter kills reports "signal 31" instead
 * of ending the caller; "=KIND:ARG" runs it in the caller itself (where the filter lets no
 * process be made: mkfs.ext4's, tar's). Two always run in the caller: status: (its NoNewPrivs
 * and Seccomp fields) and die:SYSCALL (makes that syscall with zero arguments: a killing one
 * ends the caller by SIGSYS, the reporting path's test). Unset:
 * nothing. With $CAPSEM_PROBE_ONLY set, only the process whose WHO it names probes.
 * Production code calls it at the point its confinement is complete; it is for tests only.
 */
#pragma once

void cfprobe_run(const char *who);

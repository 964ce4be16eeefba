/* wgconfine.h - capsem-gateway's confinement (wgconfine.c). */
#pragma once

/* Confine the gateway once it listens, holds the UI in memory and has written its token: no new
 * privileges, a Landlock ruleset (the system read-only, /proc for /proc/net/tcp, run_dir
 * read-write: capsemd's socket, the files it removes at exit; no TCP bind or connect, no signals
 * or abstract sockets out of its domain) and its seccomp allow-list on every thread (sockets,
 * the event loop, memory; execve kills). Call before the loop runs. A layer the host lacks is one
 * warning line; CAPSEM_CONFINE=0 turns them off (benchmarks), CAPSEM_SECCOMP=log makes the
 * filter log instead of refusing. 0 or -errno (a layer that exists could not be applied). */
int wg_confine(const char *run_dir);

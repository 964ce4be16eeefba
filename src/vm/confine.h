/* confine.h - namespaces for the processes capsem-vm starts, called in the child between fork
 * and exec (async-signal-safe). */
#pragma once

#include <sys/types.h>

/* A new user namespace where the caller is root, mapped to uid and gid outside (one id each;
 * setgroups denied, as an unprivileged user namespace requires). 0 or -1 (errno). */
int confine_userns(uid_t uid, gid_t gid);

/* A new, empty network namespace (only a loopback that is down). As a normal user (uid != 0)
 * it needs a user namespace first: one is made as confine_userns() does. 0 or -1 (errno). */
int confine_netns(uid_t uid, gid_t gid);

/* userns.h - root of a user namespace of its own, for a normal user building a root file system
 * (userns.c; docs/ARCHITECTURE.md, "Images").
 *
 * A Debian tree holds files of many owners (root, the shadow group, _apt ...). A normal user
 * cannot make them, but can be root of a new user namespace in which its own uid is 0 and its
 * subordinate ids (/etc/subuid, /etc/subgid, written there by useradd; mapped by the setuid
 * helpers newuidmap and newgidmap of the uidmap package) are 1..65535: mmdebstrap, tar, chroot
 * and mksquashfs then run as for root, and what they write is the user's own (owner 0 inside)
 * or a subordinate id's. mmdebstrap's own --mode=unshare does the same.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The ids a tree needs: 0 (the user) and 1..65535 (nobody is 65534). */
#define USERNS_IDS 65536u

/* Whether this user can have such a namespace: newuidmap and newgidmap in PATH, and a
 * subordinate range of at least USERNS_IDS - 1 ids for its uid and gid. 0, or -errno with why
 * saying what is missing and the command that adds it. */
int userns_check(char *why, size_t why_len);

/* Run fn(arg) in a forked child that is root (uid and gid 0, every capability) of a new user
 * namespace with the mapping above, a mount namespace of its own (private propagation) and
 * root's sbin directories in front of PATH, and wait for it. fn returns 0 or -errno; it must leave no file it made behind that the user
 * cannot remove outside the namespace (subordinate ids' files). The caller must be
 * single-threaded. 0; -EIO when fn failed (it logged why); or -errno when the namespace could
 * not be made, with why saying so. */
int userns_run(int (*fn)(void *), void *arg, char *why, size_t why_len);

/* The start of the first range of at least need ids for the user name (or its numeric id) in
 * text, /etc/subuid's or /etc/subgid's format ("name:start:count" lines). 0 with *ret_start;
 * -ERANGE when its ranges are all too small; -ENOENT when it has none. */
int userns_parse_subid(const char *text, const char *name, uint32_t id, uint32_t need,
		       uint32_t *ret_start);

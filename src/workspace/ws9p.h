/* ws9p.h - a 9P2000.L file server for the workspace, with no transport of its own: bytes in,
 * bytes out. capsem-vm runs it on the guest's end of a virtio-serial port (the guest kernel
 * mounts it with trans=fd), so a VM with a live workspace share can be migrated, which QEMU 7.2
 * refuses for vhost-user-fs and for its own mounted 9p.
 *
 * Every host access resolves below the root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS) (wstree.c): a symlink or a swapped directory planted by the guest never
 * makes the server touch a file outside the root. A fid is a path relative to the root (renames
 * move the paths of the fids below them) plus, once opened, an fd. Files belong to the server's
 * own uid and gid, shown to the guest as root (0:0); chown is accepted and changes nothing;
 * set-user-ID and set-group-ID bits are never set on the host; device nodes cannot be made;
 * only regular files and directories can be opened (a FIFO would block the server).
 *
 * Suspend: the server's whole state is its fid table, the bytes of a request not yet complete
 * and the replies not yet handed out. ws9p_save() writes them (JSON) and ws9p_restore() reloads
 * them into a new server on the same or another root: each fid is found again by its path, an
 * open one reopened with its flags (without O_CREAT, O_EXCL, O_TRUNC); a fid whose file is gone
 * answers ESTALE from then on.
 *
 * Trust boundary: every input byte is the guest's (hostile): sizes, counts, strings and fids are
 * checked before use; a malformed message is answered with Rlerror(EPROTO) when its size and tag
 * can be read, and a size over msize ends the session (ws9p_input() returns -EPROTO). Errors
 * are Rlerror with the Linux errno; a fid the server does not know is EBADF. Single thread per
 * server; no global state.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WS9P_MSIZE_MAX (256u * 1024u + 24u) /* the largest msize the server agrees to */
#define WS9P_FIDS_MAX 65536u
#define WS9P_OUT_MAX (8u * 1024u * 1024u) /* replies held before ws9p_input() stops taking more */

struct ws9p;

/* A server on rootfd (a directory, O_PATH is enough; duplicated, the caller keeps its own). 0 or
 * -errno. */
int ws9p_new(int rootfd, struct ws9p **ret);
void ws9p_free(struct ws9p *s); /* closes every fd it holds; NULL is fine */

/* Take n transport bytes: every complete message is served at once and its reply appended to
 * the output. Returns how many bytes were taken (fewer than n only when the output holds more
 * than WS9P_OUT_MAX: drain it, then offer the rest again), or -EPROTO when the stream cannot go
 * on (a size field below 7 or over the negotiated msize; every later call too), or -ENOMEM when
 * a reply cannot be allocated: the caller drops the transport. */
ssize_t ws9p_input(struct ws9p *s, const uint8_t *p, size_t n);

/* The replies not yet handed out: a pointer to *ret_n bytes (NULL when none), valid until the
 * next call on s. ws9p_consume() drops the first n of them once written. */
const uint8_t *ws9p_output(const struct ws9p *s, size_t *ret_n);
void ws9p_consume(struct ws9p *s, size_t n);

/* Open fids now (for tests and the VM's info). */
size_t ws9p_fid_count(const struct ws9p *s);

/* Write the state (fids with paths and open flags; the incomplete request; the pending replies;
 * msize) to fd as JSON. Nothing else is needed: I/O is at each request's offset and Treaddir
 * seeks to the offset it is given. 0 or -errno. */
int ws9p_save(const struct ws9p *s, int fd);
/* Load a state saved by ws9p_save() into a server that has served nothing yet (else -EBUSY). 0,
 * or -EINVAL for a state that does not parse (nothing loaded), or -errno. A fid whose path cannot
 * be opened (or, unopened, found) any more is kept as stale (ESTALE to every request; Tclunk and
 * Tremove clunk it). */
int ws9p_restore(struct ws9p *s, int fd);

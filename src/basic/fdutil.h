/* fdutil.h - file descriptor helpers: full reads/writes that retry on EINTR, flags. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Write all n bytes (blocking fd). 0 or -errno. */
int fd_write_all(int fd, const void *p, size_t n);
/* Read exactly n bytes (blocking fd). 0, -EPIPE on early EOF, or -errno. */
int fd_read_exact(int fd, void *p, size_t n);
/* Read up to n bytes, retrying EINTR. Bytes read (0 = EOF) or -errno. */
ssize_t fd_read_some(int fd, void *p, size_t n);
/* The next '\n'-terminated line of fd (blocking or not), read into buf (cap bytes; *len bytes
 * are there between calls) until until_ms (CLOCK_MONOTONIC): its length k, the line being
 * buf[0..k) with buf[k] == '\n'; pass k to fd_line_consume() once it is used. -ETIMEDOUT (also
 * for a line longer than cap), -EPIPE at EOF, or -errno. */
ssize_t fd_read_line(int fd, char *buf, size_t cap, size_t *len, uint64_t until_ms);
void fd_line_consume(char *buf, size_t *len, size_t k);
int fd_set_nonblock(int fd, int on);
/* sendmsg(MSG_NOSIGNAL) of up to n bytes of p, with fd passed alongside (SCM_RIGHTS) when fd >= 0.
 * The bytes sent (all, on a SOCK_SEQPACKET socket), or -errno. */
ssize_t fd_send_with_fd(int sock, const void *p, size_t n, int fd);
/* recvmsg of at most n bytes into p, and an fd passed alongside in *ret_fd (O_CLOEXEC; -1 when
 * none came). The bytes read (0: end of stream), or -errno. */
ssize_t fd_recv_with_fd(int sock, void *p, size_t n, int *ret_fd);
/* Block the n signals of sigs (before any thread starts, so that only the descriptor sees them),
 * ignore SIGPIPE, and return a non-blocking CLOEXEC signalfd for them, or -errno. */
int signalfd_for(const int *sigs, size_t n);
int fd_set_cloexec(int fd, int on);
/* Read a whole small file (at most max bytes) into a NUL-terminated malloc'ed string; -EFBIG
 * when it is larger. */
int read_file_small(const char *path, size_t max, char **ret, size_t *ret_len);
/* The same from an open fd, read to its end. */
int read_fd_small(int fd, size_t max, char **ret, size_t *ret_len);
/* Open path read-only and check that it is a regular file: the fd (>= 0) with *st filled;
 * -ENOENT with nothing written to err; or another -errno with "path: reason" in err (-EISDIR for
 * a directory, -EINVAL for any other file that is not regular). */
int open_regular_file(const char *path, struct stat *st, char *err, size_t errlen);
/* Write a file atomically: temp file in the same directory, fsync, rename. 0 or -errno. */
int write_file_atomic(const char *path, const void *p, size_t n, unsigned mode);
/* mkdir -p with the given mode for each created component. */
int mkdir_p(const char *path, unsigned mode);
/* Copy the regular file in to out (both open, out empty) keeping its holes: only data extents
 * (SEEK_DATA/SEEK_HOLE) are copied, with copy_file_range (or read/write), then out is sized like
 * in. A reflink (FICLONE) is tried first. 0 or -errno. */
int copy_sparse(int in, int out);
/* Run the program argv[0] (a path) with argv, stdin/stdout/stderr on /dev/null, and wait for it.
 * Its exit status (>= 0; 128 + N when killed by signal N), or -errno when it could not start.
 * Blocking: a worker thread, never an event loop. */
int run_program_quiet(char *const *argv);
/* Remove a directory tree (no symlink following). 0 or -errno of the first failure. */
int rm_rf(const char *path);
/* The path of an executable program: name itself when it holds a '/', else the first match in
 * $PATH, then in the system directories a normal user's PATH often lacks (/usr/local/sbin,
 * /usr/sbin, /sbin: mkfs.ext4 lives there). 0 with *ret (malloc'ed), -ENOENT, or -ENOMEM. */
int find_program(const char *name, char **ret);

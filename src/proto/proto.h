/* proto.h - Capsem's host <-> guest wire format, version 1 (docs/PROTOCOL.md).
 *
 * Every message is a frame: u32 payload length (big-endian) | u16 type (big-endian) | payload.
 * Integers inside payloads are big-endian; a string is u32 length + bytes (no NUL terminator on
 * the wire; decoders reject embedded NULs). Every length and count is capped below, and a
 * decoder that meets a value past a cap fails with -EBADMSG (or -EMSGSIZE for the frame length)
 * before allocating anything. Pure code on (ptr, len): no I/O, libc only, shared by host and
 * guest. Hostile input: the host decodes what the guest sends and vice versa.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../basic/buf.h"

#define PROTO_VERSION 1

#define PROTO_HDR_SIZE 6u
#define PROTO_MAX_PAYLOAD (1024u * 1024u) /* any frame */
#define PROTO_MAX_DATA (64u * 1024u)	  /* one stdin/stdout/stderr chunk as sent */
#define PROTO_MAX_ARGS 4096u
#define PROTO_MAX_ENV 4096u
#define PROTO_MAX_STR (128u * 1024u) /* one argv/env/cwd string */
#define PROTO_MAX_STAGES 32u
#define PROTO_NAME_MAX 64u  /* stage names, versions, hostname (incl. NUL) */
#define PROTO_MSG_MAX 1024u /* error messages (incl. NUL) */

/* The line capsem-init writes on the serial console just before it ends the VM on the guest's
 * own request (halt, poweroff, reboot: docs/PROTOCOL.md "Stopping"), so that the host tells a
 * clean stop from a crash (QEMU exits with status 0 either way). Only root in the guest can
 * write the console, and root can power off anyway. */
#define PROTO_CONSOLE_POWEROFF "capsem-init: clean power-off"

/* vsock ports. The agent connects to the host's CONTROL port (a guest->host connection, which
 * arrives at <vmdir>/vsock_5000); the host connects to the guest's EXEC port for each exec. */
#define PROTO_PORT_CONTROL 5000u
#define PROTO_PORT_EXEC 5001u
#define PROTO_PORT_NET 5002u /* guest -> host: one connection per proxied TCP connection */
#define PROTO_PORT_DNS 5007u /* guest -> host: one persistent DNS connection */
#define PROTO_PORT_MCP 5003u /* guest -> host: one connection per capsem-mcp-relay process */
#define PROTO_HOST_CID 2u

/* BOOT_CONFIG caps: the Capsem CA certificate (PEM) and the environment added to every exec */
#define PROTO_BOOT_CA_MAX (16u * 1024u) /* bytes of PEM */
#define PROTO_BOOT_MAX_ENV 64u		/* entries */
#define PROTO_BOOT_ENV_MAX 4096u	/* bytes of one "KEY=VALUE" entry */

enum proto_type {
	/* control connection */
	PROTO_HELLO = 1,       /* guest -> host: struct proto_hello */
	PROTO_BOOT_CONFIG = 2, /* host -> guest: struct proto_boot_config */
	PROTO_SHUTDOWN = 3,    /* host -> guest: empty; the guest syncs and powers off */
	/* exec connection: host sends EXEC first, then STDIN/SIGNAL/WINSIZE in any order */
	PROTO_EXEC = 16,    /* host -> guest: struct proto_exec */
	PROTO_STDIN = 17,   /* host -> guest: bytes; an empty payload closes the child's stdin */
	PROTO_SIGNAL = 18,  /* host -> guest: u32 signal number, sent to the process group */
	PROTO_WINSIZE = 19, /* host -> guest: u16 rows, u16 cols (tty execs) */
	PROTO_STARTED = 20, /* guest -> host: u32 pid of the child */
	PROTO_STDOUT = 21,  /* guest -> host: bytes */
	PROTO_STDERR = 22,  /* guest -> host: bytes */
	PROTO_EXIT = 23,    /* guest -> host: struct proto_exit; the last frame of an exec */
	PROTO_ERROR = 24,   /* guest -> host: struct proto_error; the exec did not run */
};

/* ---- framing ---- */

/* Look at the front of (p, n). Returns 0 when no whole frame is there yet, the frame's total
 * size (> 0) when one is (type and payload are then set; payload points into p), -EMSGSIZE when
 * the length field is over PROTO_MAX_PAYLOAD. */
ssize_t proto_frame_parse(const uint8_t *p, size_t n, uint16_t *ret_type,
			  const uint8_t **ret_payload, uint32_t *ret_len);
/* Append one frame. 0, -EMSGSIZE (payload too long) or a buf error. */
int proto_frame_append(struct buf *out, uint16_t type, const void *payload, size_t len);

/* ---- messages ---- */

struct proto_stage {
	char name[PROTO_NAME_MAX];
	uint64_t usec; /* guest monotonic time at the end of the stage */
};

struct proto_hello {
	uint16_t version;
	char agent_version[PROTO_NAME_MAX];
	char kernel_release[PROTO_NAME_MAX];
	uint32_t n_stages;
	struct proto_stage stages[PROTO_MAX_STAGES];
};

#define PROTO_BOOT_SEED_LEN 32

struct proto_boot_config {
	uint64_t unix_time_ns; /* host wall clock, 0 = leave the guest clock alone */
	char hostname[PROTO_NAME_MAX];
	/* Extension (optional on the wire: a payload that ends after the hostname has none). */
	char *ca_pem;  /* Capsem CA certificate, PEM; NULL or "" = none */
	uint32_t envc; /* <= PROTO_BOOT_MAX_ENV */
	char **envp;   /* "KEY=VALUE" entries added to every exec's environment, NULL-terminated */
	/* Second extension (optional: after the env entries): random bytes from the host that the
	 * agent mixes into the kernel's RNG and reseeds it with, so that VMs restored from one
	 * saved state do not share their random numbers. */
	int has_seed;
	uint8_t seed[PROTO_BOOT_SEED_LEN];
};

enum {
	PROTO_EXEC_TTY = 1u << 0,   /* child runs on a pty; stdout carries the terminal output */
	PROTO_EXEC_SHELL = 1u << 1, /* argv[0] is a shell string run by /bin/sh -c */
};
#define PROTO_EXEC_FLAGS_ALL (PROTO_EXEC_TTY | PROTO_EXEC_SHELL)

struct proto_exec {
	uint32_t flags;
	uint32_t timeout_ms; /* 0 = no timeout */
	uint16_t rows, cols; /* initial window size for tty execs */
	char *cwd;	     /* NULL = the agent's default (/root) */
	uint32_t argc;	     /* >= 1 */
	char **argv;	     /* argc strings, NULL-terminated */
	uint32_t envc;
	char **envp; /* "KEY=VALUE" strings, NULL-terminated; added to the agent's environment */
};

enum proto_exit_kind {
	PROTO_EXIT_CODE = 0,	/* code = exit status */
	PROTO_EXIT_SIGNAL = 1,	/* code = signal number */
	PROTO_EXIT_TIMEOUT = 2, /* killed at timeout_ms; code = signal used */
};

/* EXIT flags (an optional trailing u32 on the wire: written only when not 0, so an EXIT without
 * flags stays readable by an older host; a decoder drops bits it does not know). */
enum {
	PROTO_EXIT_OOM = 1u << 0, /* the OOM killer killed a process of this exec */
};
#define PROTO_EXIT_FLAGS_ALL (PROTO_EXIT_OOM)

struct proto_exit {
	uint8_t kind;
	int32_t code;
	uint64_t wall_us;
	uint64_t utime_us;
	uint64_t stime_us;
	uint64_t maxrss_kb;
	uint32_t flags; /* PROTO_EXIT_* */
};

struct proto_error {
	int32_t code; /* a positive errno value */
	char message[PROTO_MSG_MAX];
};

/* Encoders append a whole frame to out. 0 or -EINVAL (a value past a cap) / buf error. */
int proto_hello_encode(const struct proto_hello *m, struct buf *out);
int proto_boot_config_encode(const struct proto_boot_config *m, struct buf *out);
int proto_exec_encode(const struct proto_exec *m, struct buf *out);
int proto_exit_encode(const struct proto_exit *m, struct buf *out);
int proto_error_encode(const struct proto_error *m, struct buf *out);
int proto_u32_encode(uint16_t type, uint32_t v, struct buf *out); /* SIGNAL, STARTED */
int proto_winsize_encode(uint16_t rows, uint16_t cols, struct buf *out);

/* Decoders read one payload (as returned by proto_frame_parse). 0 or -EBADMSG; *ret is
 * untouched on failure. proto_exec_decode returns one allocation owned by the caller, freed with
 * proto_exec_free (which accepts NULL). */
int proto_hello_decode(const uint8_t *p, size_t n, struct proto_hello *ret);
/* Fills *ret; ca_pem and envp point into one allocation owned by *ret (NULL when absent), freed
 * by proto_boot_config_done. */
int proto_boot_config_decode(const uint8_t *p, size_t n, struct proto_boot_config *ret);
/* Free what proto_boot_config_decode allocated and clear those fields; accepts NULL. */
void proto_boot_config_done(struct proto_boot_config *m);
int proto_exec_decode(const uint8_t *p, size_t n, struct proto_exec **ret);
void proto_exec_free(struct proto_exec *m);
int proto_exit_decode(const uint8_t *p, size_t n, struct proto_exit *ret);
int proto_error_decode(const uint8_t *p, size_t n, struct proto_error *ret);
int proto_u32_decode(const uint8_t *p, size_t n, uint32_t *ret);
int proto_winsize_decode(const uint8_t *p, size_t n, uint16_t *ret_rows, uint16_t *ret_cols);

/* The exit status a shell would report: code, 128+signal, or 124 for a timeout. */
int proto_exit_status(const struct proto_exit *m);

/* ---- vsock 5002: the net-proxy preamble (docs/PROTOCOL.md §7) ----
 *
 * Not a frame: the first bytes the guest's net-proxy writes on each connection to host port
 * PROTO_PORT_NET, followed directly by the proxied TCP stream. Layout (big-endian):
 *   "CSNP" | u8 version (1) | u16 body length | body
 *   body v1: u8 family (4|6) | u16 port | 16 bytes address | u32 pid | u8 comm length | comm
 */
#define PROTO_NET_MAGIC "CSNP"
#define PROTO_NET_VERSION 1
#define PROTO_NET_HDR_SIZE 7u	   /* magic, version, body length */
#define PROTO_NET_BODY_FIXED 24u   /* v1 body without the comm bytes */
#define PROTO_NET_COMM_MAX 16u	   /* comm bytes (a Linux comm is at most 15) */
#define PROTO_NET_PREAMBLE_MAX 47u /* PROTO_NET_HDR_SIZE + PROTO_NET_BODY_FIXED + COMM_MAX */

struct proto_net_preamble {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order; the first 4 bytes for AF_INET (the rest zero) */
	uint16_t port;	  /* host order, non-zero */
	uint32_t pid;	  /* 0 = unknown */
	char comm[PROTO_NET_COMM_MAX + 1]; /* NUL-terminated, may be empty; bytes 0x20..0x7e */
};

/* Decode a preamble from the front of (p, n). > 0: bytes consumed (the proxied stream starts
 * right after); -EAGAIN: a valid prefix, more bytes needed; -EBADMSG: not a preamble (bad magic,
 * length, family, port, address padding or comm byte); -EPROTO: another version. *ret is filled
 * only on success. Close the connection on any error other than -EAGAIN. */
ssize_t proto_net_preamble_decode(const void *p, size_t n, struct proto_net_preamble *ret);
/* Encode into out (at most PROTO_NET_PREAMBLE_MAX bytes). Bytes written, -EINVAL (a field the
 * decoder would refuse: family, port 0, address padding, comm too long or not printable) or
 * -ENOBUFS (cap too small). */
ssize_t proto_net_preamble_encode(const struct proto_net_preamble *pre, void *out, size_t cap);

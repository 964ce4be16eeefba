/* keyd.h - the key broker: the one process of a VM that holds the provider keys
 * (docs/ARCHITECTURE.md, "The key broker"; docs/PROTOCOL.md §13).
 *
 * capsem-vm's proxy terminates the guest's TLS and parses its HTTP: the most exposed code on the
 * host. The user's API keys must not be in that process, so that a bug there gives the guest
 * none. The broker is started by capsem-vm before it reads any guest byte (`capsem-vm --keyd`,
 * confined by keyd_process_main in src/vm/keydmain.c); it loads the keys, and capsem-vm wipes
 * them from its own environment. From then on the proxy sends every request to a provider's own
 * API domain (when that provider has a key, over TLS) through the broker: the broker makes the
 * upstream TLS connection itself, verifies the server for the name, swaps the placeholders in
 * each request head it is handed (cred_rewrite_head) and encrypts; the proxy reads the
 * decrypted response as it would from any upstream. The broker never sees a virtqueue, guest
 * memory or the guest's TLS: only heads the proxy has parsed, re-serialised and decided, in
 * length-prefixed frames.
 *
 * Control socket (SOCK_SEQPACKET; the broker's fd 3), one message per packet:
 *   "hello"                  -> "keys MASK" (decimal, bit 1 << enum cred_provider: has a key)
 *                               or "error WHY" (the credentials or policy could not be loaded)
 *   "connect PORT HOST"      with a stream socket passed alongside (SCM_RIGHTS): no answer on
 *                               the control socket; the stream carries the connection:
 * Stream (SOCK_STREAM, one per upstream connection; always TLS to HOST:PORT, or the policy's
 * [[upstream.override]] address for it, verified for HOST):
 *   broker -> proxy: "ok\n" once connected and verified, or "error WHY\n" and the end of the
 *                    stream; after "ok", the upstream's plaintext as it comes, and the end of the
 *                    stream when the upstream ends.
 *   proxy -> broker: frames: one type byte, a 4-byte big-endian length, the payload
 *                    (<= KEYD_FRAME_MAX): KEYD_HEAD, a request head (placeholders swapped here);
 *                    KEYD_DATA, bytes relayed as they are (bodies, an upgraded connection).
 *                    The end of the stream ends the upstream connection.
 * A frame the broker does not accept ends the stream.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct cred_store;

#define KEYD_HDR 5u		     /* type byte + 32-bit length */
#define KEYD_FRAME_MAX (96u * 1024u) /* payload: a whole request head fits (HTTP_MAX_HEAD) */
#define KEYD_MAX_CONNS 512	     /* streams at once (the proxy's pool holds at most 256) */
#define KEYD_CONNECT_MS 15000	     /* name resolution + TCP + TLS */

enum keyd_frame { KEYD_HEAD = 'H', KEYD_DATA = 'D' };

/* ---- the proxy's side ---- */

/* Ask the broker which providers have a key: 0 with *ret_mask, or -errno with one line in err
 * (the broker's own error, or that it did not answer within timeout_ms). */
int keyd_hello(int ctl, int timeout_ms, unsigned *ret_mask, char *err, size_t errlen);
/* A new stream for a TLS connection to host:port: 0 with our end in *ret_fd (O_CLOEXEC,
 * blocking), or -errno (-EPIPE: the broker is gone). */
int keyd_connect(int ctl, const char *host, uint16_t port, int *ret_fd);
/* The header of a frame of type t with n payload bytes (n <= KEYD_FRAME_MAX). */
void keyd_frame_header(uint8_t hdr[KEYD_HDR], enum keyd_frame t, size_t n);

/* ---- the broker's side (pure parts: fuzzed, tests/fuzz/fuzz-keyd.c) ---- */

/* The frame at the front of p[0, n): its whole size (header + payload) with *ret_type and
 * *ret_len, 0 when incomplete, or -EBADMSG (unknown type, or longer than KEYD_FRAME_MAX). */
ssize_t keyd_frame_parse(const uint8_t *p, size_t n, enum keyd_frame *ret_type, size_t *ret_len);
/* What goes upstream for one frame bound for host: a head with its placeholders swapped
 * (cred_rewrite_head), data as it is; appended to out (which the caller wipes). 0 or -errno. */
int keyd_frame_output(const struct cred_store *s, const char *host, enum keyd_frame t,
		      const uint8_t *payload, size_t n, struct buf *out);

/* Serve the control socket ctl until it ends: load the credentials ($CAPSEM_HOME/credentials in
 * home, then the environment, which is wiped after) and the policy (corp and user files: the
 * [upstream] overrides and extra CA, reloaded when they change), answer hello, and run each
 * stream on a thread of its own. The caller has confined the process. Returns the exit status. */
int keyd_serve(int ctl, const char *home, const char *corp_policy);

/* side.h - one stream socket of the egress proxy, plain or TLS over memory BIOs (internal to
 * src/egress: the proxy's guest connections and its upstream connections are each one side).
 *
 * A side owns a libuv stream handle, a bounded plaintext input buffer and its count of queued
 * write bytes. What runs between the socket and the plaintext is a small filter chosen per side
 * (struct side_cf, as curl's connection filters): "plain" passes bytes through, "tls" runs an
 * OpenSSL SSL object over two memory BIOs on the same loop (no thread, no blocking). The owner
 * hears about the side through struct side_ops. Loop thread only.
 */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"

#define IN_CAP (128u * 1024u)	   /* plaintext input per side (>= HTTP_MAX_HEAD) */
#define READ_CHUNK (64u * 1024u)   /* one socket read */
#define HIGH_WATER (1024u * 1024u) /* queued bytes at which the source stops reading */
#define LOW_WATER (256u * 1024u)   /* and resumes */

struct side;
struct side_cf;

/* The owner's callbacks. */
struct side_ops {
	void (*data)(struct side *s);	   /* new plaintext in s->in, or s->eof became true */
	void (*drain)(struct side *s);	   /* s->wq fell below LOW_WATER */
	void (*handshake)(struct side *s); /* TLS handshake finished */
	void (*error)(struct side *s, const char *why);
	void (*closed)(struct side *s); /* the handle is closed: the owner may free */
};

struct side {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_pipe_t pipe;
		uv_tcp_t tcp;
	} h;
	const struct side_ops *ops;
	const struct side_cf *cf; /* plain or TLS */
	void *owner;
	SSL *ssl;
	BIO *net_in, *net_out; /* ciphertext from / to the socket; owned by ssl */
	struct buf in;	       /* plaintext received, not yet consumed */
	size_t wq;	       /* bytes handed to uv_write and not yet written */
	bool open;	       /* handle initialised and not closing */
	bool handshaking;
	bool reading;
	bool want_read; /* owner's wish; reading happens when also possible */
	bool eof;	/* no more plaintext will come */
	bool shut;	/* our write side is shut down */
	bool close_after_shut;
	bool corked; /* TLS output waits in net_out for uncork() */
};

/* Initialise s around a handle already set up in s->h (uv_pipe_init/uv_tcp_init): plain
 * filter, empty input, open. The owner frees nothing before ops->closed. */
void side_init_common(struct side *s, const struct side_ops *ops, void *owner);
/* Turn s into a TLS side (server: accept; client: connect); bytes already in s->in (a sniffed
 * ClientHello) are handed to TLS first. 0 or -ENOMEM. */
int side_start_tls(struct side *s, SSL_CTX *ctx, bool server);
/* Queue plaintext n bytes to the peer (TLS: encrypted; corked while side_cork() holds).
 * 0, -EPIPE after close or shutdown, -EIO or -ENOMEM. */
int side_write(struct side *s, const void *p, size_t n);
/* Move what the filter holds into s->in (TLS: run the handshake, decrypt); with notify, tell the
 * owner (ops->data) when bytes or EOF came. */
void side_pull(struct side *s, bool notify);
/* The owner wants bytes (reading happens when also the buffer has room). */
void side_want_read(struct side *s, bool want);
/* The owner consumed n bytes from the head of s->in. */
void side_consume(struct side *s, size_t n);
/* Close now (queued bytes may be lost); ops->closed follows from the loop. */
void side_close(struct side *s);
/* No more bytes from us: TLS close_notify, then a FIN once queued writes are out. With
 * then_close the handle closes after that (queued bytes are not lost, as uv_close would). */
void side_shutdown(struct side *s, bool then_close);
/* Corking: between side_cork() and the matching side_uncork(), TLS records gather in each side
 * and go out in one write at the outermost side_uncork() (nests). */
void side_cork(void);
void side_uncork(void);
/* Plaintext bytes consumed by owners so far (a progress marker for a pump loop). */
uint64_t side_consumed_total(void);

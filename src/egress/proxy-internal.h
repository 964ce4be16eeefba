/* proxy-internal.h - what the egress proxy's files share (not part of proxy.h).
 *
 * proxy.c runs the guest connections (preamble, sniffing, HTTP request by request, tunnels),
 * upstream.c the upstream connections and their per-VM idle pool, side.c (side.h) the stream
 * sockets both are made of. Loop thread only.
 */
#pragma once

#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "ai.h"
#include "aiws.h"
#include "buf.h"
#include "http.h"
#include "list.h"
#include "policy.h"
#include "proxy.h"
#include "side.h"

/* bytes held for an upstream still connecting: a writer stops at HIGH_WATER and writes at most
 * one input buffer (or one request head) past it */
#define PENDING_CAP (HIGH_WATER + 2 * IN_CAP)
#define SNIFF_MS 300		 /* wait for a client's first bytes before relaying */
#define CONNECT_TIMEOUT_MS 15000 /* upstream name resolution + TCP + TLS */
#define POOL_IDLE_MS 30000	 /* an idle upstream connection lives this long */
#define POOL_PER_KEY 16		 /* idle connections per (tls, name, port) */
#define POOL_MAX 256		 /* idle connections in all */
#define MAX_CONNS 1024		 /* guest connections at once */
#define PATH_LOG_MAX 1024	 /* path recorded in events */
#define AI_ACCEPT_ENCODING "identity"

struct up;

enum cstate {
	C_PREAMBLE,
	C_SNIFF,
	C_TLS,	  /* guest-side TLS handshake */
	C_HEAD,	  /* waiting for a request head */
	C_REQ,	  /* a request in flight */
	C_TUNNEL, /* bytes both ways */
	C_CLOSING,
};

struct req {
	uint64_t id;
	uint64_t t0_ms, t0_ns;
	uint64_t t_first_ns; /* the response's first byte from upstream (0: none yet) */
	char *method;
	char *path; /* with the query, capped for events */
	bool keep_alive;
	bool upgrade;
	enum http_body framing;
	uint64_t left;
	struct http_chunked ch;
	bool body_done;
	struct ai_call *ai;
	struct ai_ws *aiws; /* an upgrade to a model API's WebSocket: its reader, until the 101 */
	bool resp_head;
	int status;
	enum http_body rframing;
	uint64_t rleft;
	struct http_chunked rch;
	bool resp_done;
	bool resp_keep_alive;
	uint64_t bytes_up, bytes_down;
	char rule[POLICY_MAX_NAME + 1]; /* copied: the policy may be reloaded meanwhile */
	const char *layer;		/* static */
	/* a safe, bodiless request sent on a reused upstream connection, kept (placeholders only:
	 * still wiped when dropped) until the response starts: when that connection turns out to
	 * have been closed by the server meanwhile, the request is sent once more on a new one */
	char *replay;
	size_t replay_len;
};

struct conn {
	struct proxy *p;
	struct list_link link; /* on p->conns */
	struct side c;	       /* the guest */
	struct up *up;
	enum cstate st;
	struct proto_net_preamble pre;
	char ip[INET6_ADDRSTRLEN];
	char *host;
	uint16_t port;
	bool tls;	   /* guest side is TLS */
	bool first_req;	   /* no request seen yet on this connection */
	bool tunnel_tls;   /* the tunnel's upstream is TLS */
	bool up_eof_sent;  /* tunnel: upstream's EOF passed to the guest */
	bool c_eof_sent;   /* tunnel: guest's EOF passed upstream */
	bool timer_active; /* sniff timer */
	bool up_idle;	   /* up finished a request cleanly and may serve another */
	uv_timer_t timer;
	int handles; /* open libuv handles; freed at 0 */
	bool dead;
	struct req r;
	uint64_t t0_ms, t0_ns;
	uint64_t tun_up, tun_down;
	struct ai_ws *aiws; /* the tunnel is a model API's WebSocket: model calls read from it */
	uint64_t ws_net_id; /* its upgrade request's net event */
	char conn_rule[POLICY_MAX_NAME + 1];
	const char *conn_layer;
	bool provisional; /* allowed only if each HTTP request is allowed: no byte relay */
	char *error;
};

struct up {
	struct proxy *p;
	struct list_link pool_link; /* on p->pool while idle */
	struct side s;
	struct conn *conn; /* attached, or NULL when idle or orphaned */
	char *host;
	uint16_t port;
	bool tls;
	bool keyed;	  /* through the key broker (keyd.h): a stream, writes framed */
	bool status_wait; /* keyed: the broker's "ok" has not come yet */
	bool ready;
	bool failed;
	const char *fail_why; /* static: a failure reported from the timer (up_start's) */
	bool in_pool;
	bool gai_pending;
	bool dead;
	bool handle_init;
	unsigned served;    /* requests written to it */
	struct buf pending; /* written before ready */
	uv_getaddrinfo_t gai;
	uv_connect_t creq;
	uv_timer_t timer;
	bool timer_init;
	uint64_t idle_since;
	int handles;
};

struct proxy {
	struct proxy_config cfg;
	SSL_CTX *server_ctx;
	SSL_CTX *client_ctx;
	char *client_ctx_ca;	/* the extra CA file client_ctx was made with */
	struct list_link conns; /* every guest connection */
	struct list_link pool;	/* idle upstreams, most recently released first */
	size_t n_pool;
	uint64_t next_id;
	struct proxy_stats stats;
	bool closing;
	int refs; /* the proxy itself + every live conn and up */
};

/* ---- proxy.c ---- */

/* CLOCK_MONOTONIC in ns. */
uint64_t proxy_mono_ns(void);
/* Drops one reference (the proxy's own, a connection's or an upstream's); frees at 0. */
void proxy_unref(struct proxy *p);
/* The policy in force now (the host may reload it between two calls). */
const struct policy *proxy_cur_policy(struct proxy *p);
/* The client SSL_CTX for the current policy's extra CA (rebuilt when it changes; owned by p). */
SSL_CTX *proxy_client_ctx(struct proxy *p);
/* c's upstream is connected (and its TLS handshake done): send what waits. */
void proxy_conn_up_ready(struct conn *c);
/* c's upstream failed before or while serving c's request: 502, a replay or a close. */
void proxy_conn_up_failed(struct conn *c, const char *why);
/* Move bytes on c as far as they go now (both directions, corked). */
void proxy_conn_pump(struct conn *c);
/* Close c and everything it holds now (queued bytes to the guest are dropped); why is
 * recorded, NULL for none. */
void proxy_conn_close(struct conn *c, const char *why);

/* ---- upstream.c ---- */

/* An upstream for (tls, c->host, c->port) attached to c: an idle pooled one (when pooled),
 * else a new one, connecting. NULL when none could be started. */
struct up *upstream_get(struct conn *c, bool tls, bool pooled);
/* Return a finished upstream to the pool (or close it when the pool is full). */
void upstream_release(struct up *u);
/* Close an upstream for good (detached, out of the pool). NULL is fine. */
void upstream_close(struct up *u);
/* Queue n bytes to u (held in u->pending until it is connected). 0 or -errno. */
int upstream_write(struct up *u, const void *data, size_t n);
/* The same for a request head (the key broker swaps its placeholders: a frame of its own). */
int upstream_write_head(struct up *u, const void *head, size_t n);
/* Bytes queued to u and not yet written. */
size_t upstream_backlog(const struct up *u);
/* Close every idle upstream in p's pool. */
void upstream_pool_flush(struct proxy *p);

/* proxy.h - the egress proxy: every TCP connection a guest opens, decided by policy, inspected
 * (TLS terminated with the installation's CA, HTTP/1.1 parsed per request), relayed upstream
 * and recorded. Runs on one libuv loop (capsem-vm's); see proxy.c for the design.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "proto.h"

struct tls_ca;
struct policy;
struct fakeip;
struct pricing;
struct ai_event;

/* One finished guest connection or HTTP request (a connection carrying several requests gives
 * one event per request; a blocked connection one event with decision "block"). Strings are
 * borrowed for the duration of the callback; NULL when unknown. */
struct proxy_net_event {
	uint64_t id;	      /* per proxy, increasing; model-call events name it */
	uint64_t ts_ms;	      /* start, ms since the epoch */
	uint64_t duration_ms; /* start to last byte */
	uint32_t pid;	      /* guest process that opened the connection (0 unknown) */
	const char *comm;
	const char *dst_ip; /* the address the guest connected to */
	uint16_t dst_port;
	const char *host;   /* the name the guest resolved (policy subject) */
	const char *kind;   /* "https", "http", "tls", "tcp" */
	const char *method; /* HTTP only */
	const char *path;   /* HTTP only, with the query, capped */
	int status;	    /* HTTP status sent to the guest, 0 none */
	uint64_t bytes_up;  /* guest -> upstream (plaintext) */
	uint64_t bytes_down;
	bool allowed;
	const char *rule; /* the deciding rule */
	const char *layer;
	const char *error; /* why the connection failed, NULL on success */
};

/* When a model call happened, from the proxy's view of its request. */
struct proxy_model_timing {
	uint64_t ts_ms;	      /* the request head arrived from the guest, ms since the epoch */
	uint64_t duration_ms; /* to the response's last byte */
	int64_t ttfb_ms;      /* to the response's first byte from upstream; -1 when none came */
};

struct proxy_hooks {
	void (*net)(void *userdata, const struct proxy_net_event *ev);
	/* a parsed model call (AI provider request/response), after its net event */
	void (*model)(void *userdata, uint64_t net_id, const struct proxy_model_timing *t,
		      const struct ai_event *ev);
};

struct proxy_config {
	uv_loop_t *loop;
	struct tls_ca *ca;
	/* the current policy (the host reloads it; the proxy asks per connection and request) */
	const struct policy *(*policy)(void *userdata);
	struct fakeip *fakeip; /* name <-> address map shared with the DNS server */
	/* the key broker's control socket (keyd.h), -1 for none; key_mask (its hello) says which
	 * providers have a key: TLS requests to those providers' own API domains go through it,
	 * which swaps their placeholders for the keys this process never holds */
	int keyd;
	unsigned key_mask;
	const struct pricing *pricing; /* may be NULL: costs unknown */
	struct proxy_hooks hooks;
	void *userdata; /* for policy() and the hooks */
};

struct proxy;

/* A proxy on cfg->loop. cfg is copied. NULL on allocation or TLS set-up failure. */
struct proxy *proxy_new(const struct proxy_config *cfg);
/* Take a connected stream socket (from the vsock backend: guest port 5002); its first bytes are
 * the preamble (docs/PROTOCOL.md). With pre != NULL the preamble is given instead (the bench
 * front end). The proxy owns fd from here on, even on failure. 0 or -errno. */
int proxy_accept(struct proxy *p, int fd, const struct proto_net_preamble *pre);
/* Close every connection and the upstream pool; the loop must run until the handles close.
 * Then free (proxy_free is safe right after; memory goes when the last handle closes). */
void proxy_free(struct proxy *p);

/* The policy changed (upstream overrides, extra CA): idle pooled connections, made under the
 * old settings, are closed. */
void proxy_policy_changed(struct proxy *p);

/* Counters for tests and `capsem info`. */
struct proxy_stats {
	uint64_t conns, conns_open, requests, blocked, upstream_connects, upstream_reused,
		upstream_retries, /* requests sent again after a reused connection closed */
		pool_idle;
};
void proxy_get_stats(const struct proxy *p, struct proxy_stats *ret);

/* egress.h - the host side of one VM's network: policy (reloaded when its files change), the
 * fake-IP DNS server (guest vsock port 5007), the MITM proxy (guest vsock port 5002), the
 * installation CA and the provider keys' placeholders (the keys themselves are the key
 * broker's, keyd.h). capsem-vm starts one per VM on its loop.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "proxy.h"

/* One answered DNS query. Strings borrowed for the callback. */
struct egress_dns_event {
	uint64_t ts_ms;
	const char *qname;
	uint16_t qtype;
	int rcode;	    /* 0 NOERROR, 3 NXDOMAIN, ... */
	const char *answer; /* the fake address given out, or NULL */
	bool allowed;
	const char *rule;
	const char *layer;
};

struct egress_hooks {
	struct proxy_hooks proxy;
	void (*dns)(void *userdata, const struct egress_dns_event *ev);
};

struct egress_config {
	uv_loop_t *loop;
	const char *capsem_home;  /* CA in <home>/ca, user policy <home>/user.toml, credentials */
	const char *corp_policy;  /* NULL = POLICY_CORP_PATH */
	const char *proxy_socket; /* Unix socket path the vsock backend delivers port 5002 to */
	const char *dns_socket;	  /* ... and port 5007 */
	int keyd_ctl; /* the key broker's control socket (keyd.h; the caller's), or -1: no keys */
	struct egress_hooks hooks;
	void *userdata;
};

struct egress;

/* Load the policy, the CA (created on first use) and credentials, and listen on both sockets.
 * 0 or -errno with a one-line reason in err. */
int egress_start(const struct egress_config *cfg, struct egress **ret, char *err, size_t errlen);
/* Stop listening and close every connection (the loop must run for the handles to close). */
void egress_stop(struct egress *e);

/* The CA certificate (PEM) the guest must trust. */
const char *egress_ca_pem(const struct egress *e);
/* Environment entries ("KEY=VALUE") every exec in the guest gets: the provider key placeholders
 * and the CA bundle variables. NULL-terminated, owned by e. */
char *const *egress_guest_env(const struct egress *e);

/* The parts, for the benchmark front end (bench/proxy-front.c). */
struct proxy *egress_proxy(const struct egress *e);
/* The policy in force (userdata: the struct egress), re-read within 500 ms of a change to its
 * files; the proxy, the DNS server and capsem-vm's MCP gateway all decide with it. */
const struct policy *egress_current_policy(void *userdata);
struct fakeip *egress_fakeip(const struct egress *e);

struct egress_stats {
	struct proxy_stats proxy;
	uint64_t dns_queries, dns_blocked, policy_reloads;
};
void egress_get_stats(const struct egress *e, struct egress_stats *ret);

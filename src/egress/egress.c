/* egress.c - one VM's network on the host: policy, fake-IP DNS, the proxy's listener.
 *
 * DNS (guest vsock port 5007, docs/PROTOCOL.md): the guest's capsem-dns-proxy keeps one stream
 * open and sends queries in RFC 1035 TCP framing (2-byte length, message). Each is answered at
 * once and locally: an allowed name gets an address from 198.18.0.0/15 that the fake-IP map
 * remembers for the proxy; a blocked name NXDOMAIN. No query is ever sent anywhere: there is no
 * DNS tunnel out of the guest because there is no upstream resolver at all (the proxy resolves a
 * name only when an allowed connection to it is made).
 *
 * Policy: loaded at start (a broken file fails the VM's start with its file:line); every
 * decision asks egress_current_policy(), which at most twice a second checks the files' identity
 * (policy_files_changed) and swaps in a freshly loaded policy; a broken edit keeps the old one
 * and is logged. Decisions copy what they keep, so an old policy is freed at once.
 *
 * Trust: DNS messages and proxy connections come from the guest (hostile); the parsers are
 * capped and fuzzed (dns.c, proxy.c). Thread: the VM's loop thread only.
 */
#include "egress.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clockutil.h"
#include "credentials.h"
#include "dns.h"
#include "keyd.h"
#include "fakeip.h"
#include "log.h"
#include "macro.h"
#include "policy.h"
#include "pricing.h"
#include "tls.h"
#include "unixlisten.h"

#define DNS_QUERY_MAX 4096u /* a query is at most this long (real ones are < 300 bytes) */
#define DNS_CONNS_MAX 8	    /* guest DNS streams at once */
#define RELOAD_CHECK_MS 500 /* policy file check interval */

struct dns_conn {
	uv_pipe_t h;
	struct egress *e;
	struct buf in;
	bool open;
};

struct egress {
	struct egress_config cfg;
	char *corp_path, *user_path;
	struct policy *policy;
	uint64_t policy_checked_ms;
	struct fakeip *fakeip;
	struct tls_ca *ca;
	unsigned key_mask; /* providers with a key (the broker's hello) */
	struct pricing *pricing;
	struct proxy *proxy;
	struct unix_listener proxy_listen, dns_listen;
	struct dns_conn *dns[DNS_CONNS_MAX];
	char **guest_env;
	struct egress_stats stats;
	bool stopping;
	int handles;
};

/* ---- policy ---- */

const struct policy *egress_current_policy(void *userdata)
{
	struct egress *e = userdata;
	uint64_t now = uv_now(e->cfg.loop);
	if (now - e->policy_checked_ms < RELOAD_CHECK_MS)
		return e->policy;
	e->policy_checked_ms = now;
	if (!policy_files_changed(e->policy))
		return e->policy;
	struct policy *np = NULL;
	char err[512];
	int r = policy_load(e->corp_path, e->user_path, &np, err, sizeof(err));
	if (r < 0) {
		log_warn("policy not reloaded, the previous one stays in force: %s", err);
		return e->policy;
	}
	policy_free(e->policy);
	e->policy = np;
	e->stats.policy_reloads++;
	if (e->proxy)
		proxy_policy_changed(e->proxy);
	log_info("policy reloaded");
	return e->policy;
}

/* ---- DNS ---- */

static void dns_conn_closed(uv_handle_t *h)
{
	struct dns_conn *d = h->data;
	struct egress *e = d->e;
	buf_done(&d->in, 0);
	free(d);
	e->handles--;
}

static void dns_conn_close(struct dns_conn *d)
{
	if (!d->open)
		return;
	d->open = false;
	for (size_t i = 0; i < DNS_CONNS_MAX; i++)
		if (d->e->dns[i] == d)
			d->e->dns[i] = NULL;
	uv_close((uv_handle_t *)&d->h, dns_conn_closed);
}

struct dns_wreq {
	uv_write_t req;
	uint8_t data[];
};

static void dns_written(uv_write_t *req, int status)
{
	free(container_of(req, struct dns_wreq, req));
}

/* Queue one framed answer (the guest's DNS proxy reads them as they come). */
static void dns_send(struct dns_conn *d, const uint8_t *p, size_t n)
{
	struct dns_wreq *w = malloc(sizeof(*w) + n);
	if (!w)
		return;
	memcpy(w->data, p, n);
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
	if (uv_write(&w->req, (uv_stream_t *)&d->h, &b, 1, dns_written) < 0)
		free(w);
}

struct dns_decision {
	struct egress *e;
	struct policy_decision d;
	bool decided;
};

static bool dns_decide(void *userdata, const struct dns_query *q)
{
	struct dns_decision *x = userdata;
	struct policy_request preq = { .host = q->name };
	policy_decide(egress_current_policy(x->e), &preq, &x->d);
	x->decided = true;
	return x->d.action == POLICY_ALLOW;
}

static void dns_answer(struct dns_conn *d, const uint8_t *q, size_t qn)
{
	struct egress *e = d->e;
	uint8_t out[2 + DNS_QUERY_MAX + DNS_ANSWER_MAX];
	struct dns_decision x = { .e = e };
	struct dns_answer_info info = { 0 };
	struct dns_query pq;
	bool parsed = false;
	e->stats.dns_queries++;
	ssize_t k = dns_respond(q, qn, dns_decide, &x, e->fakeip, out + 2, sizeof(out) - 2, &info,
				&pq, &parsed);
	if (k <= 0)
		return; /* not even a header: nothing to answer */
	dns_tcp_prefix((size_t)k, out);
	dns_send(d, out, (size_t)k + 2);
	bool allowed = x.decided && x.d.action == POLICY_ALLOW;
	if (x.decided && !allowed)
		e->stats.dns_blocked++;
	if (!e->cfg.hooks.dns || !parsed)
		return;
	char ip[INET_ADDRSTRLEN] = "";
	if (info.addr) {
		uint32_t a = htonl(info.addr);
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
	}
	struct egress_dns_event ev = {
		.ts_ms = clock_ms(CLOCK_REALTIME),
		.qname = pq.name,
		.qtype = pq.qtype,
		.rcode = info.rcode,
		.answer = info.addr ? ip : NULL,
		.allowed = allowed,
		.rule = x.decided ? x.d.rule : NULL,
		.layer = x.decided ? policy_layer_name(x.d.layer) : NULL,
	};
	e->cfg.hooks.dns(e->cfg.userdata, &ev);
}

static void dns_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct dns_conn *d = h->data;
	size_t room = MIN(buf_room(&d->in), (size_t)8192);
	uint8_t *p = room ? buf_reserve(&d->in, room) : NULL;
	*b = uv_buf_init((char *)p, p ? (unsigned)room : 0);
}

static void dns_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct dns_conn *d = s->data;
	if (n < 0) {
		buf_commit(&d->in, 0);
		dns_conn_close(d);
		return;
	}
	buf_commit(&d->in, (size_t)n);
	for (;;) {
		const uint8_t *msg;
		size_t len;
		ssize_t k = dns_tcp_frame(buf_head(&d->in), buf_len(&d->in), &msg, &len);
		if (k == 0)
			break;
		if (k < 0 || len > DNS_QUERY_MAX) {
			log_warn("the guest's DNS stream sent a bad frame: closing it");
			dns_conn_close(d);
			return;
		}
		dns_answer(d, msg, len);
		buf_consume(&d->in, (size_t)k);
	}
}

static void on_dns_accept(struct unix_listener *l, int fd)
{
	struct egress *e = l->userdata;
	size_t slot = DNS_CONNS_MAX;
	for (size_t i = 0; i < DNS_CONNS_MAX; i++)
		if (!e->dns[i]) {
			slot = i;
			break;
		}
	struct dns_conn *d = slot < DNS_CONNS_MAX ? calloc(1, sizeof(*d)) : NULL;
	if (!d || uv_pipe_init(e->cfg.loop, &d->h, 0) < 0) {
		free(d);
		close(fd);
		return;
	}
	d->e = e;
	d->h.data = d;
	d->open = true;
	buf_init(&d->in, 2 + DNS_QUERY_MAX);
	e->handles++;
	e->dns[slot] = d;
	if (uv_pipe_open(&d->h, fd) < 0 ||
	    uv_read_start((uv_stream_t *)&d->h, dns_alloc, dns_on_read) < 0) {
		close(fd);
		dns_conn_close(d);
	}
}

/* ---- proxy ---- */

/* The proxy's userdata is this egress (for egress_current_policy); its events go to the caller's hooks
 * with the caller's userdata. */
static void on_proxy_net(void *userdata, const struct proxy_net_event *ev)
{
	struct egress *e = userdata;
	if (e->cfg.hooks.proxy.net)
		e->cfg.hooks.proxy.net(e->cfg.userdata, ev);
}

static void on_proxy_model(void *userdata, uint64_t net_id, const struct proxy_model_timing *t,
			   const struct ai_event *ev)
{
	struct egress *e = userdata;
	if (e->cfg.hooks.proxy.model)
		e->cfg.hooks.proxy.model(e->cfg.userdata, net_id, t, ev);
}

static void on_proxy_accept(struct unix_listener *l, int fd)
{
	struct egress *e = l->userdata;
	int r = proxy_accept(e->proxy, fd, NULL);
	if (r < 0)
		log_debug("proxy: refused a guest connection: %s", strerror(-r));
}

static void listen_closed(struct unix_listener *l)
{
	struct egress *e = l->userdata;
	e->handles--;
}

/* Listen on path, accepting every waiting connection per readiness notice. */
static int listen_on(struct egress *e, const char *path, struct unix_listener *l,
		     unix_listener_accept_cb cb)
{
	(void)unlink(path);
	l->userdata = e;
	int r = unix_listener_open(l, e->cfg.loop, path, 64, 0, cb);
	if (r < 0)
		return r;
	e->handles++;
	return 0;
}

static int guest_env_build(struct egress *e)
{
	/* placeholders only for providers with a real key on the host: a placeholder without a
	 * key would make the CLIs prefer it over their own login (docs/POLICY.md) */
	return cred_guest_env(e->key_mask, 0, &e->guest_env);
}

int egress_start(const struct egress_config *cfg, struct egress **ret, char *err, size_t errlen)
{
	struct egress *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = *cfg;
	int r = -ENOMEM;
	e->corp_path = strdup(cfg->corp_policy ? cfg->corp_policy : POLICY_CORP_PATH);
	if (asprintf(&e->user_path, "%s/%s", cfg->capsem_home, POLICY_USER_FILE) < 0)
		e->user_path = NULL;
	if (!e->corp_path || !e->user_path)
		goto fail;

	r = policy_load(e->corp_path, e->user_path, &e->policy, err, errlen);
	if (r < 0)
		goto fail;
	e->policy_checked_ms = uv_now(cfg->loop);
	for (const char *const *w = policy_warnings(e->policy); *w; w++)
		log_warn("policy: %s", *w);

	char path[4096];
	snprintf(path, sizeof(path), "%s/ca", cfg->capsem_home);
	r = tls_ca_load_or_create(path, &e->ca);
	if (r < 0) {
		snprintf(err, errlen, "cannot load or create the CA in %s: %s%s", path,
			 strerror(-r),
			 r == -EPERM ? " (ca.pem must be readable by its owner only)" : "");
		goto fail;
	}
	if (cfg->keyd_ctl >= 0 &&
	    (r = keyd_hello(cfg->keyd_ctl, KEYD_CONNECT_MS, &e->key_mask, err, errlen)) < 0)
		goto fail;
	r = pricing_load_default(&e->pricing);
	if (r < 0) {
		snprintf(err, errlen, "cannot load the shipped pricing table: %s", strerror(-r));
		goto fail;
	}
	r = guest_env_build(e);
	if (r < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	e->fakeip = fakeip_new();
	struct proxy_config pc = {
		.loop = cfg->loop,
		.ca = e->ca,
		.policy = egress_current_policy,
		.fakeip = e->fakeip,
		.keyd = cfg->keyd_ctl,
		.key_mask = e->key_mask,
		.pricing = e->pricing,
		.hooks = { .net = on_proxy_net, .model = on_proxy_model },
		.userdata = e,
	};
	e->proxy = e->fakeip ? proxy_new(&pc) : NULL;
	if (!e->proxy) {
		r = -ENOMEM;
		snprintf(err, errlen, "cannot set up the proxy: %s", tls_error_string());
		goto fail;
	}
	r = listen_on(e, cfg->proxy_socket, &e->proxy_listen, on_proxy_accept);
	if (r >= 0)
		r = listen_on(e, cfg->dns_socket, &e->dns_listen, on_dns_accept);
	if (r < 0) {
		snprintf(err, errlen, "cannot listen on %s / %s: %s", cfg->proxy_socket,
			 cfg->dns_socket, strerror(-r));
		goto fail;
	}
	*ret = e;
	return 0;
fail:
	egress_stop(e);
	return r;
}

void egress_stop(struct egress *e)
{
	if (!e)
		return;
	e->stopping = true;
	if (e->proxy_listen.open) {
		unix_listener_close(&e->proxy_listen, listen_closed);
		(void)unlink(e->cfg.proxy_socket);
	}
	if (e->dns_listen.open) {
		unix_listener_close(&e->dns_listen, listen_closed);
		(void)unlink(e->cfg.dns_socket);
	}
	for (size_t i = 0; i < DNS_CONNS_MAX; i++)
		if (e->dns[i])
			dns_conn_close(e->dns[i]);
	proxy_free(e->proxy);
	/* the proxy keeps pointers to the CA, map and pricing until its handles
	 * close: those live as long as the process (capsem-vm exits after its loop ends) */
	policy_free(e->policy);
	e->policy = NULL;
}

const char *egress_ca_pem(const struct egress *e)
{
	return tls_ca_pem(e->ca);
}

char *const *egress_guest_env(const struct egress *e)
{
	return e->guest_env;
}

void egress_get_stats(const struct egress *e, struct egress_stats *ret)
{
	*ret = e->stats;
	proxy_get_stats(e->proxy, &ret->proxy);
}

struct proxy *egress_proxy(const struct egress *e)
{
	return e->proxy;
}

struct fakeip *egress_fakeip(const struct egress *e)
{
	return e->fakeip;
}

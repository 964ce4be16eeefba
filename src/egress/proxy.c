/* proxy.c - the egress proxy: one guest TCP connection at a time, decided, inspected, relayed.
 *
 * Where connections come from: the guest has no NIC; its netfilter redirects every outbound TCP
 * connection to capsem-net-proxy, which connects to host vsock port 5002 and sends a preamble
 * (original destination address and port, owning process). capsem-vm hands each such stream to
 * proxy_accept(). The destination address is a fake one from 198.18.0.0/15 that our DNS server
 * gave out for an allowed name (fakeip.c), so every connection has a name: policy is by name.
 *
 * Per connection:
 *   1. preamble -> name (fake-IP map; any other address is a direct-IP connection: blocked) ->
 *      connection-level policy (name, port). Blocked: closed at once, recorded.
 *   2. sniff the first bytes: a TLS ClientHello is terminated here with a leaf for the name
 *      (SNI, when sent, must be that name), an HTTP request line is parsed, anything else is
 *      relayed as bytes (never on ports 80 and 443: those carry HTTP, so that path rules cannot
 *      be evaded by bytes we would not parse; there the proxy waits for the client's first
 *      bytes however long they take). On other allowed ports a client that sends nothing for
 *      SNIFF_MS (a server-speaks-first protocol) is relayed as bytes.
 *   3. HTTP/1.1, one request at a time (pipelined requests wait in the buffer). A head the
 *      shared parser refuses (a second Host or credential header, no Host, smuggling, ...)
 *      gets a 400, recorded as "malformed-request". The target's path is normalised
 *      (policy_path_normalize: encoded unreserved characters decoded, hex upper-cased) and that
 *      one form is decided, recorded and forwarded: the upstream never reads a path the policy
 *      did not. Request-level policy (method, path); blocked -> 403 with a JSON body naming
 *      the rule. Allowed: the head is re-serialised (the normalised target;
 *      Accept-Encoding set to identity on AI provider requests so the side parser reads plain
 *      bytes), the body streamed, the response forwarded AS IT ARRIVES (head bytes unchanged,
 *      body bytes unchanged, chunk by chunk: SSE is never buffered) while a copy of the decoded
 *      body feeds the AI-traffic parser on the side.
 *      `Upgrade` (WebSocket) is decided like any request, before the upgrade; after a 101 the
 *      connection is relayed as bytes (on a model API's WebSocket, read on the side for its
 *      model calls, aiws.c, with permessage-deflate kept off).
 *   4. upstream: a host-wide (per capsem-vm) pool of idle keep-alive connections keyed by
 *      (TLS, name, port); new ones resolve the name on libuv's thread pool (or use the
 *      policy's upstream override), connect with a timeout and verify the server's certificate
 *      against the system store (plus the policy's extra CA) for the name.
 *      connect with a timeout and verify the server's certificate against the system store
 *      (plus the policy's extra CA) for the name (upstream.c).
 *
 * Flow control: every side has a bounded plaintext input buffer; a side stops reading when its
 * buffer is full or when the side its bytes go to has more than HIGH_WATER bytes queued, and
 * resumes when that queue drains below LOW_WATER. Memory per connection is bounded. The sides
 * (sockets, TLS over memory BIOs, write queues) are side.c.
 *
 * Trust: the guest is hostile (preamble, TLS, HTTP: all parsed by capped, fuzzed code); upstream
 * servers are hostile too (responses are parsed with the same parser). The real API keys are
 * never in this process: a request to a provider's own API domain (the provider having a key)
 * goes over TLS through the key broker (keyd.h, upstream.c), which swaps the guest's
 * placeholders in the head it is handed. Thread: the libuv loop thread only.
 */
#include "proxy-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ai.h"
#include "buf.h"
#include "clockutil.h"
#include "fakeip.h"
#include "http.h"
#include "log.h"
#include "list.h"
#include "macro.h"
#include "parse.h"
#include "policy.h"
#include "tls.h"

uint64_t proxy_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void proxy_unref(struct proxy *p)
{
	if (--p->refs > 0)
		return;
	SSL_CTX_free(p->server_ctx);
	SSL_CTX_free(p->client_ctx);
	free(p->client_ctx_ca);
	free(p);
}

const struct policy *proxy_cur_policy(struct proxy *p)
{
	return p->cfg.policy(p->cfg.userdata);
}

/* The client context for the current policy's extra CA (rebuilt when it changes). */
SSL_CTX *proxy_client_ctx(struct proxy *p)
{
	const char *ca = policy_upstream_ca_file(proxy_cur_policy(p));
	if (p->client_ctx &&
	    ((!ca && !p->client_ctx_ca) || (ca && p->client_ctx_ca && streq(ca, p->client_ctx_ca))))
		return p->client_ctx;
	SSL_CTX *ctx = tls_client_ctx_new(ca);
	if (!ctx)
		return p->client_ctx; /* keep the old one; the failure shows as a verify error */
	SSL_CTX_free(p->client_ctx);
	free(p->client_ctx_ca);
	p->client_ctx = ctx;
	p->client_ctx_ca = ca ? strdup(ca) : NULL;
	return ctx;
}

/* ---- events ---- */

static void emit_net(struct conn *c, const struct req *r, const char *kind, bool allowed,
		     const char *rule, const char *layer, const char *error)
{
	struct proxy *p = c->p;
	if (!p->cfg.hooks.net)
		return;
	uint64_t t0_ns = r ? r->t0_ns : c->t0_ns;
	struct proxy_net_event ev = {
		.id = r ? r->id : ++p->next_id,
		.ts_ms = r ? r->t0_ms : c->t0_ms,
		.duration_ms = (proxy_mono_ns() - t0_ns) / 1000000u,
		.pid = c->pre.pid,
		.comm = c->pre.comm[0] ? c->pre.comm : NULL,
		.dst_ip = c->ip,
		.dst_port = c->port,
		.host = c->host,
		.kind = kind,
		.method = r ? r->method : NULL,
		.path = r ? r->path : NULL,
		.status = r ? r->status : 0,
		.bytes_up = r ? r->bytes_up : c->tun_up,
		.bytes_down = r ? r->bytes_down : c->tun_down,
		.allowed = allowed,
		.rule = rule,
		.layer = layer,
		.error = error,
	};
	p->cfg.hooks.net(p->cfg.userdata, &ev);
}

/* ---- guest connections ---- */

static void req_drop_replay(struct req *r)
{
	if (r->replay) {
		explicit_bzero(r->replay, r->replay_len);
		free(r->replay);
	}
	r->replay = NULL;
	r->replay_len = 0;
}

static void conn_free_maybe(struct conn *c)
{
	if (!c->dead || c->handles > 0)
		return;
	struct proxy *p = c->p;
	req_drop_replay(&c->r);
	free(c->host);
	free(c->r.method);
	free(c->r.path);
	free(c->error);
	free(c);
	proxy_unref(p);
}

static void conn_side_closed(struct side *s)
{
	struct conn *c = s->owner;
	c->handles--;
	if (!c->dead) /* closed after conn_finish's shutdown: release the rest */
		proxy_conn_close(c, NULL);
	else
		conn_free_maybe(c);
}

static void conn_timer_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handles--;
	conn_free_maybe(c);
}

static void req_reset(struct req *r)
{
	req_drop_replay(r);
	free(r->method);
	free(r->path);
	ai_call_free(r->ai);
	ai_ws_free(r->aiws);
	*r = (struct req){ 0 };
}

static void conn_unlink(struct conn *c)
{
	struct proxy *p = c->p;
	list_del(&c->link);
	p->stats.conns_open--;
}

/* Let go of the upstream: back to the pool when it is between requests, else closed. */
static void conn_drop_up(struct conn *c)
{
	if (c->up && c->up_idle)
		upstream_release(c->up);
	else
		upstream_close(c->up);
	c->up = NULL;
	c->up_idle = false;
}

/* Close everything now (queued bytes to the guest are dropped). */
void proxy_conn_close(struct conn *c, const char *why)
{
	if (c->dead)
		return;
	if (why && !c->error)
		c->error = strdup(why);
	if (c->st == C_TUNNEL)
		emit_net(c, NULL, c->tunnel_tls ? "tls" : "tcp", true, c->conn_rule, c->conn_layer,
			 c->error);
	else if (c->st == C_REQ && c->r.method)
		emit_net(c, &c->r, c->tls ? "https" : "http", true, c->r.rule, c->r.layer,
			 c->error ? c->error : "connection closed before the response ended");
	/* the call still open on a model API's WebSocket, after the tunnel's net event */
	ai_ws_free(c->aiws);
	c->aiws = NULL;
	c->dead = true;
	c->st = C_CLOSING;
	conn_unlink(c);
	req_reset(&c->r);
	conn_drop_up(c);
	uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
	side_close(&c->c);
	conn_free_maybe(c);
}

/* Close after the bytes queued to the guest are out. */
static void conn_finish(struct conn *c)
{
	if (c->dead)
		return;
	conn_drop_up(c);
	c->st = C_CLOSING;
	side_want_read(&c->c, false);
	side_shutdown(&c->c, true);
}

static void conn_on_error(struct side *s, const char *why)
{
	proxy_conn_close(s->owner, why);
}

static void conn_on_data(struct side *s)
{
	proxy_conn_pump(s->owner);
}

static void conn_on_drain(struct side *s)
{
	proxy_conn_pump(s->owner);
}

static void conn_on_handshake(struct side *s);

static const struct side_ops conn_ops = {
	.data = conn_on_data,
	.drain = conn_on_drain,
	.handshake = conn_on_handshake,
	.error = conn_on_error,
	.closed = conn_side_closed,
};

/* An error answer from the proxy itself, then the connection closes. */
static void conn_reply(struct conn *c, int status, const char *reason, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	size_t tl = text ? strlen(text) : 0;
	char head[256];
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
			  "Content-Length: %zu\r\nConnection: close\r\n"
			  "X-Capsem: proxy\r\n\r\n",
			  status, reason, tl + 1);
	(void)side_write(&c->c, head, (size_t)hl);
	if (text)
		(void)side_write(&c->c, text, tl);
	(void)side_write(&c->c, "\n", 1);
	free(text);
	c->r.status = status;
	conn_finish(c);
}

static void conn_block_request(struct conn *c, const char *rule, const char *layer)
{
	struct req *r = &c->r;
	c->p->stats.blocked++;
	r->status = 403;
	emit_net(c, r, c->tls ? "https" : "http", false, rule, layer, NULL);
	json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?}", "error",
				 "blocked by capsem policy", "rule", rule, "layer", layer, "host",
				 c->host, "method", r->method, "path", r->path);
	conn_reply(c, 403, "Forbidden", body);
}

static void conn_bad_gateway(struct conn *c, const char *why)
{
	json_t *body = json_pack("{s:s, s:s, s:s}", "error", "upstream failed", "host", c->host,
				 "detail", why);
	c->r.status = 502;
	emit_net(c, &c->r, c->tls ? "https" : "http", true, c->r.rule, c->r.layer, why);
	free(c->r.method);
	c->r.method = NULL; /* recorded: conn_close must not record it again */
	conn_reply(c, 502, "Bad Gateway", body);
}

void proxy_conn_up_failed(struct conn *c, const char *why)
{
	c->up = NULL;
	if (c->st == C_REQ && !c->r.resp_head && c->r.replay) {
		/* the server closed a kept-alive connection as we reused it: once more, fresh */
		char *head = c->r.replay;
		size_t n = c->r.replay_len;
		c->r.replay = NULL;
		c->r.replay_len = 0;
		c->up = upstream_get(c, c->tls, false);
		int e = c->up ? upstream_write_head(c->up, head, n) : -ENOMEM;
		explicit_bzero(head, n);
		free(head);
		if (e == 0) {
			c->up->served++;
			c->p->stats.upstream_retries++;
			return;
		}
		if (c->up) {
			upstream_close(c->up);
			c->up = NULL;
		}
	}
	if (c->st == C_REQ && !c->r.resp_head) {
		conn_bad_gateway(c, why);
		return;
	}
	proxy_conn_close(c, why);
}

void proxy_conn_up_ready(struct conn *c)
{
	proxy_conn_pump(c);
}

static bool has_token_prefix(const uint8_t *p, size_t n)
{
	/* an HTTP request line starts with a method token in capitals; a CR or LF here is not
	 * valid, but some servers skip it: treat it as HTTP too, so it gets parsed (and refused) */
	return n > 0 && ((p[0] >= 'A' && p[0] <= 'Z') || p[0] == '\r' || p[0] == '\n');
}

static void conn_start_tunnel(struct conn *c, bool tls)
{
	c->st = C_TUNNEL;
	c->tunnel_tls = tls;
	c->up = upstream_get(c, tls, false);
	if (!c->up) {
		proxy_conn_close(c, "cannot start the upstream connection");
		return;
	}
}

/* Serialise the request head for upstream with target (the normalised one) in its request line
 * (Accept-Encoding for AI; placeholders stay: the key broker swaps them on a keyed upstream). */
static int build_up_head(const struct http_msg *m, const char *target, bool ai, bool ai_ws,
			 struct buf *out)
{
	struct buf *h = out;
	char line[64];
	int r = 0;
	r |= buf_append(h, m->method, strlen(m->method));
	r |= buf_append(h, " ", 1);
	r |= buf_append(h, target, strlen(target));
	snprintf(line, sizeof(line), " HTTP/1.%d\r\n", m->minor);
	r |= buf_append(h, line, strlen(line));
	for (size_t i = 0; i < m->n_headers; i++) {
		const struct http_header *x = &m->headers[i];
		if (ai && strcasecmp(x->name, "Accept-Encoding") == 0)
			continue;
		/* no permessage-deflate on a model API's WebSocket: its messages are read (aiws.c) */
		if (ai_ws && strcasecmp(x->name, "Sec-WebSocket-Extensions") == 0)
			continue;
		r |= buf_append(h, x->name, strlen(x->name));
		r |= buf_append(h, ": ", 2);
		r |= buf_append(h, x->value, strlen(x->value));
		r |= buf_append(h, "\r\n", 2);
	}
	if (ai)
		r |= buf_append(h, "Accept-Encoding: " AI_ACCEPT_ENCODING "\r\n",
				sizeof("Accept-Encoding: " AI_ACCEPT_ENCODING "\r\n") - 1);
	r |= buf_append(h, "\r\n", 2);
	return r < 0 ? -E2BIG : 0;
}

/* Host header (optional in HTTP/1.0) must name the connection's host, with its port or none. */
static bool host_header_ok(const char *h, const char *host, uint16_t port)
{
	if (!h)
		return true;
	size_t n = strlen(h);
	const char *colon = memrchr(h, ':', n);
	if (colon && !memchr(h, ']', n)) {
		uint32_t pt;
		if (parse_u32(colon + 1, &pt) < 0 || pt != port)
			return false;
		n = (size_t)(colon - h);
	}
	if (n > 0 && h[n - 1] == '.')
		n--;
	return n == strlen(host) && strncasecmp(h, host, n) == 0;
}

/* A model call read from a model API's WebSocket (aiws.c): recorded like an HTTP one, linked to
 * the upgrade request's net event. */
static void conn_ws_model(void *userdata, const struct ai_event *ev, const struct ai_ws_times *t)
{
	struct conn *c = userdata;
	struct proxy *p = c->p;
	uint64_t now = proxy_mono_ns(), took = (now - t->start_ns) / 1000000u;
	struct proxy_model_timing mt = {
		.ts_ms = clock_ms(CLOCK_REALTIME) - took,
		.duration_ms = took,
		.ttfb_ms = t->first_ns ? (int64_t)((t->first_ns - t->start_ns) / 1000000u) : -1,
	};
	if (p->cfg.hooks.model)
		p->cfg.hooks.model(p->cfg.userdata, c->ws_net_id, &mt, ev);
}

/* A complete request head is at the front of c->c.in: decide, then send it upstream. */
static void conn_start_request(struct conn *c)
{
	struct proxy *p = c->p;
	struct http_msg m = { 0 };
	ssize_t k = http_parse_head(buf_head(&c->c.in), buf_len(&c->c.in), &m);
	if (k == 0) {
		if (c->c.eof) {
			if (buf_len(&c->c.in) > 0)
				proxy_conn_close(c, "guest closed inside a request head");
			else
				conn_finish(c);
		}
		return;
	}
	struct req *r = &c->r;
	req_reset(r);
	r->id = ++p->next_id;
	r->t0_ms = clock_ms(CLOCK_REALTIME);
	r->t0_ns = proxy_mono_ns();
	if (k < 0) {
		int st = http_error_status((int)k);
		r->method = strdup("?"); /* NULL on ENOMEM: the event then has no method */
		json_t *body =
			json_pack("{s:s, s:s}", "error", "malformed HTTP request", "host", c->host);
		emit_net(c, r, c->tls ? "https" : "http", false, "malformed-request", "proxy",
			 "malformed HTTP request");
		conn_reply(c, st, st == 431 ? "Request Header Fields Too Large" : "Bad Request",
			   body);
		return;
	}
	p->stats.requests++;
	c->first_req = false;
	/* the one form of the target that is decided, recorded and sent upstream */
	size_t tlen = strlen(m.target);
	_cleanup_free_ char *target = malloc(tlen + 1);
	_cleanup_free_ char *path = NULL;
	if (target && policy_path_normalize(m.target, target, tlen + 1) >= 0)
		path = strndup(target, strcspn(target, "?"));
	if (!path) {
		http_msg_done(&m);
		proxy_conn_close(c, "out of memory");
		return;
	}
	r->method = strdup(m.method);
	r->path = strndup(target, PATH_LOG_MAX);
	if (!r->method || !r->path) {
		http_msg_done(&m);
		proxy_conn_close(c, "out of memory");
		return;
	}
	r->keep_alive = m.keep_alive;
	r->upgrade = m.upgrade != NULL;
	r->framing = http_body_framing(&m, NULL);
	r->left = m.content_length;
	r->body_done = r->framing == HTTP_BODY_NONE;

	struct policy_request q = {
		.host = c->host, .port = c->port, .method = m.method, .path = target
	};
	struct policy_decision d;
	if (!host_header_ok(http_header_get(&m, "Host"), c->host, c->port)) {
		/* the name decided at the DNS and connection levels is the only name this connection
		 * may speak to: a different Host (domain fronting through a shared front end) is
		 * refused */
		side_consume(&c->c, (size_t)k);
		http_msg_done(&m);
		conn_block_request(c, "host-mismatch", "proxy");
		return;
	}
	policy_decide(proxy_cur_policy(p), &q, &d);
	snprintf(r->rule, sizeof(r->rule), "%s", d.rule);
	r->layer = policy_layer_name(d.layer);
	if (d.action != POLICY_ALLOW) {
		side_consume(&c->c, (size_t)k);
		http_msg_done(&m);
		conn_block_request(c, d.rule, policy_layer_name(d.layer));
		return;
	}

	enum ai_provider prov = ai_provider_for(c->host, path);
	if (prov != AI_NONE && r->upgrade)
		r->aiws = ai_ws_new(prov, target, p->cfg.pricing, conn_ws_model, c);
	else if (prov != AI_NONE)
		r->ai = ai_call_new(prov, m.method, target);

	_cleanup_buf_ struct buf head = BUF_INIT(HTTP_MAX_HEAD + 4096);
	int e = build_up_head(&m, target, r->ai != NULL, r->aiws != NULL, &head);
	http_msg_done(&m);
	side_consume(&c->c, (size_t)k);
	if (e < 0) {
		proxy_conn_close(c, "cannot rewrite the request head");
		return;
	}
	c->st = C_REQ;
	c->up_idle = false;
	if (!c->up) {
		c->up = upstream_get(c, c->tls, true);
		if (!c->up) {
			conn_bad_gateway(c, "cannot start the upstream connection");
			return;
		}
	}
	bool safe =
		streq(r->method, "GET") || streq(r->method, "HEAD") || streq(r->method, "OPTIONS");
	if (safe && r->body_done && !r->upgrade && c->up->served > 0) {
		r->replay = malloc(buf_len(&head));
		if (r->replay) {
			memcpy(r->replay, buf_head(&head), buf_len(&head));
			r->replay_len = buf_len(&head);
		}
	}
	c->up->served++;
	e = upstream_write_head(c->up, buf_head(&head), buf_len(&head));
	if (e < 0) {
		proxy_conn_close(c, "upstream write failed");
		return;
	}
}

static int ai_req_span(void *userdata, const uint8_t *p, size_t n)
{
	ai_call_request_body(userdata, p, n);
	return 0;
}

static int ai_resp_span(void *userdata, const uint8_t *p, size_t n)
{
	ai_call_response_body(userdata, p, n);
	return 0;
}

/* Forward request body bytes from the guest. */
static void conn_pump_req_body(struct conn *c)
{
	struct req *r = &c->r;
	while (!r->body_done && buf_len(&c->c.in) > 0 && upstream_backlog(c->up) < HIGH_WATER) {
		const uint8_t *p = buf_head(&c->c.in);
		size_t n = buf_len(&c->c.in), used = n;
		if (r->framing == HTTP_BODY_LENGTH) {
			used = (size_t)MIN((uint64_t)n, r->left);
			if (r->ai)
				ai_call_request_body(r->ai, p, used);
			r->left -= used;
			r->body_done = r->left == 0;
		} else {
			int k = http_chunked_scan(&r->ch, p, n, UINT64_MAX,
						  r->ai ? ai_req_span : NULL, r->ai, &used);
			if (k < 0) {
				proxy_conn_close(c, "malformed chunked request body");
				return;
			}
			r->body_done = k == 1;
		}
		if (upstream_write(c->up, p, used) < 0) {
			proxy_conn_close(c, "upstream write failed");
			return;
		}
		r->bytes_up += used;
		side_consume(&c->c, used);
	}
	if (!r->body_done && c->c.eof && buf_len(&c->c.in) == 0)
		proxy_conn_close(c, "guest closed inside a request body");
}

static void conn_request_done(struct conn *c)
{
	struct proxy *p = c->p;
	struct req *r = &c->r;
	emit_net(c, r, c->tls ? "https" : "http", true, r->rule, r->layer, NULL);
	if (r->ai) {
		struct ai_event ev;
		uint64_t now = proxy_mono_ns();
		struct proxy_model_timing t = {
			.ts_ms = r->t0_ms,
			.duration_ms = (now - r->t0_ns) / 1000000u,
			.ttfb_ms = r->t_first_ns ? (int64_t)((r->t_first_ns - r->t0_ns) / 1000000u)
						 : -1,
		};
		if (ai_call_finish(r->ai, p->cfg.pricing, &ev) == 0 && p->cfg.hooks.model)
			p->cfg.hooks.model(p->cfg.userdata, r->id, &t, &ev);
	}
	bool reuse = r->keep_alive && r->resp_keep_alive && r->body_done &&
		     r->rframing != HTTP_BODY_UNTIL_CLOSE;
	free(r->method);
	r->method = NULL; /* recorded */
	if (!reuse) {
		conn_finish(c);
		return;
	}
	/* the upstream stays with this guest connection while it lives (most clients send their
	 * next request on the same connection); it goes back to the pool when the guest closes */
	c->up_idle = c->up != NULL;
	c->st = C_HEAD;
}

/* Forward the response: head, then body bytes as they arrive. */
static void conn_pump_response(struct conn *c)
{
	struct req *r = &c->r;
	struct up *u = c->up;
	if (!r->t_first_ns && buf_len(&u->s.in) > 0)
		r->t_first_ns = proxy_mono_ns();
	while (!r->resp_head && buf_len(&u->s.in) > 0) {
		struct http_msg m = { 0 };
		ssize_t k = http_parse_response_head(buf_head(&u->s.in), buf_len(&u->s.in), &m);
		if (k == 0) {
			if (u->s.eof) {
				upstream_close(u);
				proxy_conn_up_failed(c, "upstream closed inside the response head");
			}
			return;
		}
		if (k < 0) {
			upstream_close(u);
			c->up = NULL;
			conn_bad_gateway(c, "malformed response from upstream");
			return;
		}
		if (side_write(&c->c, buf_head(&u->s.in), (size_t)k) < 0) {
			http_msg_done(&m);
			proxy_conn_close(c, "guest write failed");
			return;
		}
		r->bytes_down += (uint64_t)k;
		side_consume(&u->s, (size_t)k);
		if (m.status >= 100 && m.status < 200 && m.status != 101) {
			http_msg_done(&m); /* interim (100 Continue, 103): the real head follows */
			continue;
		}
		r->status = m.status;
		if (m.status == 101) {
			http_msg_done(&m);
			if (!r->upgrade) {
				proxy_conn_close(c, "upstream switched protocols unasked");
				return;
			}
			emit_net(c, r, c->tls ? "https" : "http", true, r->rule, r->layer, NULL);
			free(r->method);
			r->method = NULL;
			c->st = C_TUNNEL;
			c->tunnel_tls = c->tls;
			c->aiws = r->aiws;
			c->ws_net_id = r->id;
			r->aiws = NULL;
			memcpy(c->conn_rule, r->rule, sizeof(c->conn_rule));
			c->conn_layer = r->layer;
			c->t0_ms = clock_ms(CLOCK_REALTIME);
			c->t0_ns = proxy_mono_ns();
			return;
		}
		r->resp_head = true;
		req_drop_replay(r);
		r->resp_keep_alive = m.keep_alive;
		r->rframing = http_body_framing(&m, r->method);
		r->rleft = m.content_length;
		r->resp_done = r->rframing == HTTP_BODY_NONE;
		if (r->ai)
			ai_call_response_start(r->ai, m.status,
					       http_header_get(&m, "Content-Type"));
		http_msg_done(&m);
	}
	if (!r->resp_head && u->s.eof && buf_len(&u->s.in) == 0) {
		upstream_close(u);
		proxy_conn_up_failed(c, "upstream closed without a response");
		return;
	}
	if (!r->resp_head)
		return;
	while (!r->resp_done && buf_len(&u->s.in) > 0 && c->c.wq < HIGH_WATER) {
		const uint8_t *p = buf_head(&u->s.in);
		size_t n = buf_len(&u->s.in), used = n;
		if (r->rframing == HTTP_BODY_LENGTH) {
			used = (size_t)MIN((uint64_t)n, r->rleft);
			if (r->ai)
				ai_call_response_body(r->ai, p, used);
			r->rleft -= used;
			r->resp_done = r->rleft == 0;
		} else if (r->rframing == HTTP_BODY_CHUNKED) {
			int k = http_chunked_scan(&r->rch, p, n, UINT64_MAX,
						  r->ai ? ai_resp_span : NULL, r->ai, &used);
			if (k < 0) {
				proxy_conn_close(c, "malformed chunked response");
				return;
			}
			r->resp_done = k == 1;
		} else if (r->ai) {
			ai_call_response_body(r->ai, p, used);
		}
		if (side_write(&c->c, p, used) < 0) {
			proxy_conn_close(c, "guest write failed");
			return;
		}
		r->bytes_down += used;
		side_consume(&u->s, used);
	}
	if (!r->resp_done && u->s.eof && buf_len(&u->s.in) == 0) {
		if (r->rframing != HTTP_BODY_UNTIL_CLOSE) {
			proxy_conn_close(c, "upstream closed inside the response body");
			return;
		}
		r->resp_done = true;
	}
	if (r->resp_done) {
		if (!r->body_done) { /* answered early (e.g. 413): this connection is done */
			r->keep_alive = false;
			r->body_done = true;
		}
		conn_request_done(c);
	}
}

/* Tunnel: bytes both ways, half-closes passed on. */
static void conn_pump_tunnel(struct conn *c)
{
	struct up *u = c->up;
	if (!u)
		return;
	if (buf_len(&c->c.in) > 0 && upstream_backlog(u) < HIGH_WATER) {
		size_t n = buf_len(&c->c.in);
		ai_ws_from_guest(c->aiws, buf_head(&c->c.in), n);
		if (upstream_write(u, buf_head(&c->c.in), n) < 0) {
			proxy_conn_close(c, "upstream write failed");
			return;
		}
		c->tun_up += n;
		side_consume(&c->c, n);
	}
	if (u->ready && buf_len(&u->s.in) > 0 && c->c.wq < HIGH_WATER) {
		size_t n = buf_len(&u->s.in);
		ai_ws_from_upstream(c->aiws, buf_head(&u->s.in), n);
		if (side_write(&c->c, buf_head(&u->s.in), n) < 0) {
			proxy_conn_close(c, "guest write failed");
			return;
		}
		c->tun_down += n;
		side_consume(&u->s, n);
	}
	if (c->c.eof && buf_len(&c->c.in) == 0 && !c->c_eof_sent && u->ready) {
		c->c_eof_sent = true;
		side_shutdown(&u->s, false);
	}
	if (u->ready && u->s.eof && buf_len(&u->s.in) == 0 && !c->up_eof_sent) {
		c->up_eof_sent = true;
		side_shutdown(&c->c, false);
	}
	if (c->c_eof_sent && c->up_eof_sent) {
		emit_net(c, NULL, c->tunnel_tls ? "tls" : "tcp", true, c->conn_rule, c->conn_layer,
			 NULL);
		c->st = C_CLOSING;
		conn_finish(c);
	}
}

static void conn_sniff_decide(struct conn *c)
{
	const uint8_t *p = buf_head(&c->c.in);
	size_t n = buf_len(&c->c.in);
	if (c->timer_active) {
		uv_timer_stop(&c->timer);
		c->timer_active = false;
	}
	if (n > 0 && p[0] == 0x16) { /* a TLS handshake record */
		c->tls = true;
		c->st = C_TLS;
		if (side_start_tls(&c->c, c->p->server_ctx, true) < 0 ||
		    tls_server_use_leaf(c->c.ssl, c->p->cfg.ca, c->host) < 0) {
			proxy_conn_close(c, "TLS set-up failed");
			return;
		}
		side_pull(&c->c, true);
		return;
	}
	if (has_token_prefix(p, n)) {
		c->st = C_HEAD;
		return;
	}
	if (n == 0) { /* the guest closed without a byte */
		proxy_conn_close(c, "the guest closed before sending anything");
		return;
	}
	if (c->port == 80 || c->port == 443 || c->provisional) {
		c->p->stats.blocked++;
		emit_net(c, NULL, "tcp", false,
			 c->provisional ? c->conn_rule : "http-ports-carry-http",
			 c->provisional ? c->conn_layer : "proxy",
			 c->provisional
				 ? "the rule allows only some HTTP requests; these bytes are "
				   "not HTTP"
				 : "bytes that are not HTTP on an HTTP port");
		proxy_conn_close(c, NULL);
		return;
	}
	conn_start_tunnel(c, false);
}

static void conn_on_sniff_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;
	c->timer_active = false;
	if (c->st == C_SNIFF) {
		conn_sniff_decide(c);
		if (!c->dead)
			proxy_conn_pump(c);
	}
}

static void conn_on_handshake(struct side *s)
{
	struct conn *c = s->owner;
	const char *sni = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
	/* An address as server name (RFC 6066 forbids it; clients of https://IP/ URLs send one
	 * anyway) names no host and so cannot front another name: treated as absent. */
	unsigned char ipbuf[16];
	if (sni && (inet_pton(AF_INET, sni, ipbuf) == 1 || inet_pton(AF_INET6, sni, ipbuf) == 1))
		sni = NULL;
	if (sni && strcasecmp(sni, c->host) != 0) {
		c->p->stats.blocked++;
		emit_net(c, NULL, "https", false, "sni-mismatch", "proxy",
			 "TLS server name differs from the name the guest resolved");
		proxy_conn_close(c, NULL);
		return;
	}
	c->st = C_HEAD;
}

static void conn_after_preamble(struct conn *c)
{
	struct proxy *p = c->p;
	if (c->pre.family == AF_INET) {
		uint32_t a;
		memcpy(&a, c->pre.addr, 4);
		inet_ntop(AF_INET, c->pre.addr, c->ip, sizeof(c->ip));
		const char *name =
			fakeip_in_range(ntohl(a)) ? fakeip_lookup(p->cfg.fakeip, ntohl(a)) : NULL;
		if (name)
			c->host = strdup(name);
	} else {
		inet_ntop(AF_INET6, c->pre.addr, c->ip, sizeof(c->ip));
	}
	c->port = c->pre.port;
	if (!c->host) {
		p->stats.blocked++;
		emit_net(c, NULL, "tcp", false, "direct-ip", "proxy",
			 "the address was not given out by Capsem's DNS");
		proxy_conn_close(c, NULL);
		return;
	}
	struct policy_request q = { .host = c->host, .port = c->port };
	struct policy_decision d;
	policy_decide(proxy_cur_policy(p), &q, &d);
	snprintf(c->conn_rule, sizeof(c->conn_rule), "%s", d.rule);
	c->conn_layer = policy_layer_name(d.layer);
	c->provisional = d.provisional;
	if (d.action != POLICY_ALLOW) {
		p->stats.blocked++;
		emit_net(c, NULL, "tcp", false, d.rule, policy_layer_name(d.layer), NULL);
		proxy_conn_close(c, NULL);
		return;
	}
	c->st = C_SNIFF;
	if (buf_len(&c->c.in) > 0) {
		conn_sniff_decide(c);
		return;
	}
	/* Only where a server-speaks-first protocol may be relayed does silence decide anything:
	 * on the HTTP ports (and under rules with method/path conditions) only HTTP or TLS may
	 * pass, and both start with the client, so we wait for the first bytes however long a
	 * slow guest (TCG, a loaded host) takes to send them. */
	if (c->port == 80 || c->port == 443 || c->provisional)
		return;
	c->timer_active = true;
	uv_timer_start(&c->timer, conn_on_sniff_timeout, SNIFF_MS, 0);
}

static void conn_pump_once(struct conn *c);

void proxy_conn_pump(struct conn *c)
{
	side_cork();
	conn_pump_once(c);
	side_uncork();
}

static void conn_pump_once(struct conn *c)
{
	for (int guard = 0; guard < 1024 && !c->dead; guard++) {
		enum cstate before = c->st;
		uint64_t progress = side_consumed_total();
		switch (c->st) {
		case C_PREAMBLE: {
			ssize_t k = proto_net_preamble_decode(buf_head(&c->c.in), buf_len(&c->c.in),
							      &c->pre);
			if (k == -EAGAIN) {
				if (c->c.eof)
					proxy_conn_close(c, "guest closed inside the preamble");
				return;
			}
			if (k < 0) {
				proxy_conn_close(c, "bad preamble");
				return;
			}
			side_consume(&c->c, (size_t)k);
			conn_after_preamble(c);
			break;
		}
		case C_SNIFF:
			if (buf_len(&c->c.in) > 0 || c->c.eof)
				conn_sniff_decide(c);
			break;
		case C_TLS:
			if (c->c.eof)
				proxy_conn_close(c, "guest closed during the TLS handshake");
			return;
		case C_HEAD:
			if (c->up && (c->up->s.eof || buf_len(&c->up->s.in) > 0)) {
				/* the idle upstream closed or spoke out of turn: not reusable */
				c->up_idle = false;
				conn_drop_up(c);
			}
			if (buf_len(&c->c.in) == 0) {
				if (c->c.eof)
					conn_finish(c);
				return;
			}
			if (c->first_req && !has_token_prefix(buf_head(&c->c.in), 1) &&
			    c->port != 443 && c->port != 80 && c->tls && !c->provisional) {
				/* TLS that does not carry HTTP, on a port that may carry anything */
				conn_start_tunnel(c, true);
				break;
			}
			conn_start_request(c);
			break;
		case C_REQ:
			if (!c->up)
				return;
			conn_pump_req_body(c);
			if (!c->dead && c->st == C_REQ && c->up && c->up->ready)
				conn_pump_response(c);
			break;
		case C_TUNNEL:
			conn_pump_tunnel(c);
			break;
		case C_CLOSING:
			return;
		}
		if (c->dead || (c->st == before && side_consumed_total() == progress))
			break;
	}
	if (c->dead)
		return;
	/* read from the guest only when its bytes can go somewhere */
	bool want = true;
	if (c->st == C_CLOSING)
		want = false;
	else if ((c->st == C_REQ && !c->r.body_done) || c->st == C_TUNNEL)
		want = !c->up || upstream_backlog(c->up) < HIGH_WATER;
	side_want_read(&c->c, want);
	if (c->up && c->up->handle_init)
		side_want_read(&c->up->s, c->c.wq < HIGH_WATER);
}

/* ---- public ---- */

struct proxy *proxy_new(const struct proxy_config *cfg)
{
	struct proxy *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->cfg = *cfg;
	p->refs = 1;
	list_init(&p->conns);
	list_init(&p->pool);
	p->server_ctx = tls_server_ctx_new();
	if (!p->server_ctx) {
		free(p);
		return NULL;
	}
	return p;
}

int proxy_accept(struct proxy *p, int fd, const struct proto_net_preamble *pre)
{
	if (p->closing || p->stats.conns_open >= MAX_CONNS) {
		close(fd);
		return p->closing ? -ESHUTDOWN : -EMFILE;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->p = p;
	list_init(&c->link);
	c->first_req = true;
	c->t0_ms = clock_ms(CLOCK_REALTIME);
	c->t0_ns = proxy_mono_ns();
	int r = uv_pipe_init(p->cfg.loop, &c->c.h.pipe, 0);
	if (r < 0) {
		free(c);
		close(fd);
		return r;
	}
	r = uv_pipe_open(&c->c.h.pipe, fd);
	side_init_common(&c->c, &conn_ops, c);
	p->refs++;
	c->handles = 1;
	(void)uv_timer_init(p->cfg.loop, &c->timer);
	c->timer.data = c;
	c->handles++;
	list_add_head(&p->conns, &c->link);
	p->stats.conns++;
	p->stats.conns_open++;
	if (r < 0) {
		close(fd);
		proxy_conn_close(c, "cannot watch the connection");
		return r;
	}
	if (pre) {
		c->pre = *pre;
		conn_after_preamble(c);
	}
	if (!c->dead)
		side_want_read(&c->c, true);
	return 0;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	p->closing = true;
	while (!list_empty(&p->conns))
		proxy_conn_close(list_entry(p->conns.next, struct conn, link),
				 "capsem-vm is stopping");
	upstream_pool_flush(p);
	proxy_unref(p);
}

void proxy_policy_changed(struct proxy *p)
{
	upstream_pool_flush(p);
}

void proxy_get_stats(const struct proxy *p, struct proxy_stats *ret)
{
	*ret = p->stats;
	ret->pool_idle = p->n_pool;
}

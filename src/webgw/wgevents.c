/* wgevents.c - capsem-gateway's /events subscribers and the followers that feed them
 * (wgevents.h).
 *
 * While at least one browser is subscribed, one status follower long-polls capsemd's
 * GET /status?wait=25&rev=N (answered when the registry's revision passes N) and broadcasts
 * each new status; for every running VM in it a ledger follower long-polls
 * GET /vms/{id}/events?since=ID&wait=25 and broadcasts new rows. Nothing polls on a timer:
 * capsemd holds each request until something changes (a failed request is retried after 2 s,
 * e.g. while capsemd restarts). Followers stop when the last subscriber leaves or their VM
 * stops running.
 *
 * Trust boundary: subscribers passed the token check; they only receive. Thread: the
 * gateway's loop only.
 */
#include "wgevents.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "apiclient.h"
#include "jsonutil.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "wgup.h"
#include "wgws.h"
#include "ws.h"

#define WAIT_S 25
#define RETRY_MS 2000
#define MAX_SUBSCRIBERS 64
#define MAX_FOLLOWERS 64

struct sub {
	struct list_link link;
	struct wgevents *e;
	struct wgws *ws;
};

struct follower {
	struct list_link link;
	struct wgevents *e;
	char id[64];
	int64_t since; /* -1: not known yet */
	struct wgup *up;
	int seen; /* still running in the latest status */
	uv_timer_t *retry;
};

struct wgevents {
	uv_loop_t *loop;
	const char *sock;
	struct list_link subs, followers;
	unsigned n_subs, n_followers;
	struct wgup *status_up;
	json_int_t rev;
	char *last_status; /* the latest status message, sent to each new subscriber */
	uv_timer_t retry;
};

static void status_next(struct wgevents *e);
static void follower_next(struct follower *f);

static void broadcast(struct wgevents *e, const char *s)
{
	struct list_link *l, *tmp;
	list_for_each_safe(l, tmp, &e->subs)
	{
		struct sub *sb = list_entry(l, struct sub, link);
		(void)wgws_send(sb->ws, WS_OP_TEXT, s, strlen(s)); /* may drop a slow one */
	}
}

static void handle_free(uv_handle_t *h)
{
	free(h);
}

static void follower_free(struct follower *f)
{
	list_del(&f->link);
	f->e->n_followers--;
	wgup_cancel(f->up);
	if (f->retry)
		uv_close((uv_handle_t *)f->retry, handle_free);
	free(f);
}

static void on_follower_retry(uv_timer_t *t)
{
	follower_next(t->data);
}

static void on_events(void *ud, int err, int status, const char *ctype, struct buf *body,
		      uv_pipe_t *stream)
{
	struct follower *f = ud;
	f->up = NULL;
	json_error_t je;
	_cleanup_json_ json_t *j =
		err == 0 && status == 200
			? json_loadb((const char *)buf_head(body), buf_len(body), 0, &je)
			: NULL;
	if (!json_is_array(j)) {
		if (f->retry)
			uv_timer_start(f->retry, on_follower_retry, RETRY_MS, 0);
		return;
	}
	size_t n = json_array_size(j);
	if (n) {
		json_int_t last =
			json_integer_value(json_object_get(json_array_get(j, n - 1), "id"));
		int first = f->since < 0;
		f->since = last;
		if (!first) { /* the first answer only says where the ledger is */
			_cleanup_json_ json_t *m = json_pack("{s:s, s:s, s:O}", "type", "ledger",
							     "vm", f->id, "events", j);
			_cleanup_free_ char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
			if (s)
				broadcast(f->e, s);
		}
	} else if (f->since < 0) {
		f->since = 0;
	}
	follower_next(f);
}

static void follower_next(struct follower *f)
{
	if (f->e->n_subs == 0)
		return;
	char q[128];
	if (f->since < 0)
		snprintf(q, sizeof(q), "/events?limit=1");
	else
		snprintf(q, sizeof(q), "/events?since=%lld&limit=500&wait=%d", (long long)f->since,
			 WAIT_S);
	_cleanup_free_ char *path = api_vm_path(f->id, q);
	struct wgup_req rq = { .method = "GET",
			       .target = path,
			       .timeout_ms = (WAIT_S + 10) * 1000,
			       .max_response = 16u << 20 };
	if (!path || wgup_start(f->e->loop, f->e->sock, &rq, on_events, f, &f->up) < 0) {
		if (f->retry)
			uv_timer_start(f->retry, on_follower_retry, RETRY_MS, 0);
	}
}

/* Start followers for running VMs, drop those of VMs that no longer run. */
static void sync_followers(struct wgevents *e, json_t *vms)
{
	struct list_link *l, *tmp;
	list_for_each (l, &e->followers)
		list_entry(l, struct follower, link)->seen = 0;
	size_t i;
	json_t *vm;
	json_array_foreach(vms, i, vm)
	{
		const char *id = json_string_value(json_object_get(vm, "id"));
		const char *st = json_string_value(json_object_get(vm, "state"));
		if (!id || !st || strcmp(st, "running") != 0 || strlen(id) >= 64)
			continue;
		struct follower *f = NULL;
		list_for_each (l, &e->followers) {
			struct follower *x = list_entry(l, struct follower, link);
			if (strcmp(x->id, id) == 0)
				f = x;
		}
		if (!f) {
			if (e->n_followers >= MAX_FOLLOWERS)
				continue;
			f = calloc(1, sizeof(*f));
			if (!f)
				continue;
			f->e = e;
			f->since = -1;
			snprintf(f->id, sizeof(f->id), "%s", id);
			f->retry = calloc(1, sizeof(*f->retry));
			if (f->retry && uv_timer_init(e->loop, f->retry) == 0) {
				f->retry->data = f;
			} else {
				free(f->retry);
				f->retry = NULL;
			}
			list_add_tail(&e->followers, &f->link);
			e->n_followers++;
			follower_next(f);
		}
		f->seen = 1;
	}
	list_for_each_safe(l, tmp, &e->followers)
	{
		struct follower *f = list_entry(l, struct follower, link);
		if (!f->seen)
			follower_free(f);
	}
}

static void on_retry(uv_timer_t *t)
{
	status_next(t->data);
}

static void on_status(void *ud, int err, int status, const char *ctype, struct buf *body,
		      uv_pipe_t *stream)
{
	struct wgevents *e = ud;
	e->status_up = NULL;
	json_error_t je;
	_cleanup_json_ json_t *j =
		err == 0 && status == 200
			? json_loadb((const char *)buf_head(body), buf_len(body), 0, &je)
			: NULL;
	if (!json_is_object(j)) {
		if (e->rev != -1) { /* tell the browsers once that capsemd is away */
			e->rev = -1;
			broadcast(e, "{\"type\":\"status\",\"payload\":null,\"daemon\":"
				     "\"unavailable\"}");
		}
		uv_timer_start(&e->retry, on_retry, RETRY_MS, 0);
		return;
	}
	json_int_t rev = json_integer_value(json_object_get(j, "rev"));
	if (rev != e->rev) {
		e->rev = rev;
		_cleanup_json_ json_t *m = json_pack("{s:s, s:O}", "type", "status", "payload", j);
		char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
		if (s) {
			free(e->last_status);
			e->last_status = s;
			broadcast(e, s);
		}
		sync_followers(e, json_object_get(j, "vms"));
	}
	status_next(e);
}

static void status_next(struct wgevents *e)
{
	if (e->n_subs == 0 || e->status_up)
		return;
	char target[96];
	if (e->rev > 0)
		snprintf(target, sizeof(target), "/status?rev=%lld&wait=%d", (long long)e->rev,
			 WAIT_S);
	else
		snprintf(target, sizeof(target), "/status");
	struct wgup_req rq = { .method = "GET",
			       .target = target,
			       .timeout_ms = (WAIT_S + 10) * 1000,
			       .max_response = 16u << 20 };
	if (wgup_start(e->loop, e->sock, &rq, on_status, e, &e->status_up) < 0)
		uv_timer_start(&e->retry, on_retry, RETRY_MS, 0);
}

static void on_sub_close(void *ud)
{
	struct sub *sb = ud;
	struct wgevents *e = sb->e;
	list_del(&sb->link);
	e->n_subs--;
	free(sb);
	if (e->n_subs == 0) { /* nobody listens: stop following */
		wgup_cancel(e->status_up);
		e->status_up = NULL;
		uv_timer_stop(&e->retry);
		e->rev = 0;
		while (!list_empty(&e->followers))
			follower_free(list_entry(e->followers.next, struct follower, link));
	}
}

static const struct wgws_ops sub_ops = { .on_close = on_sub_close };

void wgevents_attach(struct wgevents *e, struct httpd_conn *c, const struct http_msg *req)
{
	if (e->n_subs >= MAX_SUBSCRIBERS) {
		httpd_reply_error(c, 503, "busy", "too many /events subscribers");
		return;
	}
	struct sub *sb = calloc(1, sizeof(*sb));
	if (!sb) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	sb->e = e;
	if (wgws_accept(c, req, &sub_ops, sb, &sb->ws) < 0) {
		free(sb);
		return;
	}
	list_add_tail(&e->subs, &sb->link);
	e->n_subs++;
	if (e->last_status && e->rev > 0)
		(void)wgws_send(sb->ws, WS_OP_TEXT, e->last_status, strlen(e->last_status));
	status_next(e);
}

int wgevents_new(uv_loop_t *loop, const char *capsemd_sock, struct wgevents **ret)
{
	struct wgevents *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->loop = loop;
	e->sock = capsemd_sock;
	list_init(&e->subs);
	list_init(&e->followers);
	uv_timer_init(loop, &e->retry);
	e->retry.data = e;
	uv_unref((uv_handle_t *)&e->retry);
	*ret = e;
	return 0;
}

/* vmledger.c - egress events to session-ledger rows (docs/LEDGER.md), in capsem-vm.
 *
 * Every proxy connection or request becomes a net row and a policy row (boundary "conn" for a
 * connection-level decision, "http" for a request), every DNS answer a dns row and a policy row
 * (boundary "dns"), every parsed AI call a model_call row joined to its net row by request_id.
 * The ledger queues and never blocks: this runs on capsem-vm's loop thread, in the proxy's and
 * the DNS server's callbacks. Nothing here sees a real API key (the proxy reports what the guest
 * sent: placeholders).
 *
 * Exec sessions are followed on the bytes the vsock back end relays (its audit tap, exectrack.c):
 * the row is queued when the EXEC frame passes toward the guest, before the guest can fork the
 * command, so it survives whatever happens to the host process that asked for the exec (capsemd,
 * capsem run --direct); it is completed (same exec_id) when EXIT/ERROR passes or the connection
 * ends. capsem-vm is the ledger's only writer for execs too.
 */
#include "vmledger.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "ai.h"
#include "exectrack.h"
#include "ledger.h"
#include "macro.h"

static void on_net(void *userdata, const struct proxy_net_event *ev)
{
	struct ledger *l = userdata;
	if (!l)
		return;
	char id[24], subject[600];
	snprintf(id, sizeof(id), "%" PRIu64, ev->id);
	struct ledger_net n = LEDGER_NET_INIT;
	n.ts = (int64_t)ev->ts_ms;
	n.duration_ms = (int64_t)ev->duration_ms;
	n.request_id = id;
	n.pid = ev->pid ? (int64_t)ev->pid : -1;
	n.comm = ev->comm;
	n.dst_ip = ev->dst_ip;
	n.dst_port = ev->dst_port;
	n.host = ev->host;
	n.scheme = ev->kind;
	n.method = ev->method;
	n.path = ev->path;
	n.status = ev->status ? ev->status : -1;
	n.bytes_up = (int64_t)ev->bytes_up;
	n.bytes_down = (int64_t)ev->bytes_down;
	n.decision = ev->allowed ? "allow" : "block";
	n.rule = ev->rule;
	n.error = ev->error;
	(void)ledger_net(l, &n);

	if (ev->method)
		snprintf(subject, sizeof(subject), "%s %s:%u%s", ev->method,
			 ev->host ? ev->host : ev->dst_ip, ev->dst_port, ev->path ? ev->path : "");
	else
		snprintf(subject, sizeof(subject), "%s:%u", ev->host ? ev->host : ev->dst_ip,
			 ev->dst_port);
	struct ledger_policy p = LEDGER_POLICY_INIT;
	p.ts = n.ts;
	p.boundary = ev->method ? "http" : "conn";
	p.subject = subject;
	p.action = n.decision;
	p.rule = ev->rule;
	p.layer = ev->layer;
	p.request_id = id;
	(void)ledger_policy(l, &p);
}

static void on_dns(void *userdata, const struct egress_dns_event *ev)
{
	struct ledger *l = userdata;
	if (!l)
		return;
	char qtype[16];
	switch (ev->qtype) {
	case 1:
		snprintf(qtype, sizeof(qtype), "A");
		break;
	case 28:
		snprintf(qtype, sizeof(qtype), "AAAA");
		break;
	case 65:
		snprintf(qtype, sizeof(qtype), "HTTPS");
		break;
	default:
		snprintf(qtype, sizeof(qtype), "TYPE%u", ev->qtype);
	}
	struct ledger_dns d = LEDGER_DNS_INIT;
	d.ts = (int64_t)ev->ts_ms;
	d.qname = ev->qname[0] ? ev->qname : ".";
	d.qtype = qtype;
	d.rcode = ev->rcode;
	d.answer = ev->answer;
	d.decision = ev->rule ? (ev->allowed ? "allow" : "block") : NULL;
	d.rule = ev->rule;
	(void)ledger_dns(l, &d);
	if (!ev->rule)
		return;
	struct ledger_policy p = LEDGER_POLICY_INIT;
	p.ts = d.ts;
	p.boundary = "dns";
	p.subject = d.qname;
	p.action = d.decision;
	p.rule = ev->rule;
	p.layer = ev->layer;
	(void)ledger_policy(l, &p);
}

static void on_model(void *userdata, uint64_t net_id, const struct proxy_model_timing *t,
		     const struct ai_event *ev)
{
	struct ledger *l = userdata;
	if (!l)
		return;
	char id[24];
	snprintf(id, sizeof(id), "%" PRIu64, net_id);
	char *names[AI_MAX_TOOL_NAMES + 1];
	for (unsigned i = 0; i < ev->n_tool_names && i < AI_MAX_TOOL_NAMES; i++)
		names[i] = (char *)ev->tool_names[i];
	names[MIN(ev->n_tool_names, (unsigned)AI_MAX_TOOL_NAMES)] = NULL;
	struct ledger_model_call m = LEDGER_MODEL_CALL_INIT;
	m.ts = (int64_t)t->ts_ms;
	m.duration_ms = (int64_t)t->duration_ms;
	m.ttfb_ms = t->ttfb_ms;
	m.request_id = id;
	m.provider = ev->provider_name;
	m.model = ev->model[0] ? ev->model : NULL;
	if (ev->has_usage) {
		m.input_tokens = (int64_t)ev->input_tokens;
		m.output_tokens = (int64_t)ev->output_tokens;
		m.cache_read_tokens = (int64_t)ev->cached_input_tokens;
		m.cache_write_tokens = (int64_t)ev->cache_write_tokens;
	}
	m.tool_calls = ev->tool_calls;
	m.tool_names = ev->n_tool_names ? names : NULL;
	m.stop_reason = ev->stop_reason[0] ? ev->stop_reason : NULL;
	m.streamed = ev->streamed;
	m.cost_usd = ev->cost_known ? ev->cost_usd : -1;
	(void)ledger_model_call(l, &m);
}

struct egress_hooks vm_ledger_hooks(void)
{
	return (struct egress_hooks){
		.proxy = { .net = on_net, .model = on_model },
		.dns = on_dns,
	};
}

/* ---- exec sessions, through the vsock back end's tap ---- */

struct exec_tap {
	struct ledger *l;
	struct exectrack *t;
	char exec_id[13];
	const char *via; /* static */
};

static void exec_tap_start(void *userdata, const struct exectrack_info *t)
{
	struct exec_tap *x = userdata;
	struct ledger_exec ev = LEDGER_EXEC_INIT;
	ev.ts = t->ts_start;
	ev.exec_id = x->exec_id;
	ev.via = x->via;
	ev.argv = t->exec->argv;
	ev.shell = !!(t->exec->flags & PROTO_EXEC_SHELL);
	ev.tty = !!(t->exec->flags & PROTO_EXEC_TTY);
	ev.cwd = t->exec->cwd;
	(void)ledger_exec(x->l, &ev);
}

static void exec_tap_end(void *userdata, const struct exectrack_info *t)
{
	struct exec_tap *x = userdata;
	struct ledger_exec ev = LEDGER_EXEC_INIT;
	ev.ts = t->ts_start;
	ev.ts_end = t->ts_end;
	ev.exec_id = x->exec_id;
	if (t->started)
		ev.pid = t->pid;
	if (t->got_exit) {
		if (t->exit.kind == PROTO_EXIT_CODE) {
			ev.exit_code = t->exit.code;
		} else {
			ev.signal = t->exit.code;
			ev.timed_out = t->exit.kind == PROTO_EXIT_TIMEOUT;
		}
		ev.oom_killed = (t->exit.flags & PROTO_EXIT_OOM) != 0;
		ev.duration_ms = (int64_t)(t->exit.wall_us / 1000);
		ev.cpu_user_ms = (int64_t)(t->exit.utime_us / 1000);
		ev.cpu_sys_ms = (int64_t)(t->exit.stime_us / 1000);
		ev.maxrss_kb = (int64_t)t->exit.maxrss_kb;
	} else if (t->ts_end >= t->ts_start) {
		ev.duration_ms = t->ts_end - t->ts_start;
	}
	ev.stdin_bytes = (int64_t)t->stdin_bytes;
	ev.stdout_bytes = (int64_t)t->stdout_bytes;
	ev.stderr_bytes = (int64_t)t->stderr_bytes;
	ev.error = t->error;
	(void)ledger_exec(x->l, &ev);
}

void *vm_exec_tap_open(void *userdata, uint32_t port, const char *tag)
{
	static const char *const vias[] = { "cli", "api", "mcp", "file" };
	static const struct exectrack_ops ops = { .on_start = exec_tap_start,
						  .on_end = exec_tap_end };
	struct ledger *l = userdata;
	uint8_t rnd[6];
	if (!l || port != PROTO_PORT_EXEC)
		return NULL;
	struct exec_tap *x = calloc(1, sizeof(*x));
	if (!x || exectrack_new(&ops, x, &x->t) < 0 || getrandom(rnd, sizeof(rnd), 0) != 6) {
		/* the exec still runs: say so in the ledger rather than lose it silently */
		if (x)
			exectrack_close(x->t, NULL);
		free(x);
		struct ledger_exec lost = LEDGER_EXEC_INIT;
		lost.error = "this exec was not followed: out of memory";
		(void)ledger_exec(l, &lost);
		return NULL;
	}
	x->l = l;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(x->exec_id + 2 * i, 3, "%02x", rnd[i]);
	for (size_t i = 0; i < ELEMENTSOF(vias); i++)
		if (streq(tag, vias[i]))
			x->via = vias[i];
	return x;
}

void vm_exec_tap_data(void *tap, bool to_guest, const uint8_t *p, size_t n)
{
	struct exec_tap *x = tap;
	exectrack_feed(x->t, to_guest, p, n);
}

void vm_exec_tap_close(void *tap, const char *why)
{
	struct exec_tap *x = tap;
	exectrack_close(x->t, why);
	free(x);
}

/* vmledger.c - egress events to session-ledger rows (docs/LEDGER.md), in capsem-vm.
 *
 * Every proxy connection or request becomes a net row and a policy row (boundary "conn" for a
 * connection-level decision, "http" for a request), every DNS answer a dns row and a policy row
 * (boundary "dns"), every parsed AI call a model_call row joined to its net row by request_id.
 * The ledger queues and never blocks: this runs on capsem-vm's loop thread, in the proxy's and
 * the DNS server's callbacks. Nothing here sees a real API key (the proxy reports what the guest
 * sent: placeholders).
 */
#include "vmledger.h"

#include <inttypes.h>
#include <stdio.h>

#include "ai.h"
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

static void on_model(void *userdata, uint64_t net_id, const struct ai_event *ev)
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
	m.ts = ledger_now_ms();
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

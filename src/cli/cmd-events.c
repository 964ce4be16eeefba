/* cmd-events.c - "capsem events": what happened in a VM, from its session ledger
 * (docs/LEDGER.md) through capsemd (GET /vms/{ref}/events, /sessions/{id}/events, /sessions).
 *
 * A table (id, local time, kind, a one-line summary from ledger_event_summary) or, with --json,
 * the daemon's JSON (an array; JSON lines with --follow). --follow long-polls the daemon for
 * events with a larger id (wait=FOLLOW_WAIT_S: the daemon answers as soon as the VM commits new
 * rows), on the session it started with; between answers the CLI is blocked reading its socket.
 * VM may be a VM the daemon knows, a session id, or a deleted VM's id or name (the daemon looks
 * in $CAPSEM_HOME/sessions).
 *
 * Trust boundary: arguments are the user's; answers are the daemon's JSON, read defensively;
 * guest-supplied text in events is printed on one line with control characters replaced.
 * Main thread of the CLI.
 */
#include <getopt.h>
#include <stdio.h>
#include <time.h>

#include "clilib.h"
#include "commands.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "query.h"

#define FOLLOW_WAIT_S 30 /* the long-poll's wait=, at most the daemon's 60 */

static const char usage[] =
	"Usage: capsem events VM [OPTIONS]\n"
	"       capsem events --sessions [--json]\n"
	"\n"
	"Show what happened in a VM: commands run (exec), connections and HTTP requests (net),\n"
	"DNS answers (dns), AI model calls (model), MCP tool calls (tool), policy decisions\n"
	"(policy) and changes to the workspace's files (fs), from the VM's session ledger. VM may "
	"also be a session id (<vm-id>-<boot>)\n"
	"or the id or name of a deleted VM.\n"
	"\n"
	"Options:\n"
	"  -k, --kind KIND      only these kinds (repeat or separate by commas): exec, net,\n"
	"                       dns, model, tool, policy, fs, dropped\n"
	"  -n, --limit N        at most N events: the last N, or the first N after --since\n"
	"                       (default 100, at most 10000)\n"
	"      --since ID       events after event id ID\n"
	"      --session ID     a given session of the VM (default: its current boot)\n"
	"  -f, --follow         keep printing new events as they are recorded until interrupted\n"
	"      --json           JSON: the events as an array (one object per line with -f)\n"
	"      --sessions       list the recorded sessions instead\n";

enum { ARG_SINCE = 256, ARG_SESSION, ARG_SESSIONS, ARG_JSON };

static const char *str_or(const json_t *o, const char *k, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s && *s ? s : dflt;
}

/* "11-22 08:11:35.123" in local time, from ms since the epoch. */
static void format_ts(json_t *v, char *out, size_t n)
{
	if (!json_is_integer(v)) {
		snprintf(out, n, "-");
		return;
	}
	json_int_t ms = json_integer_value(v);
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char s[32];
	if (!localtime_r(&t, &tm) || strftime(s, sizeof(s), "%m-%d %H:%M:%S", &tm) == 0) {
		snprintf(out, n, "-");
		return;
	}
	snprintf(out, n, "%s.%03d", s, (int)(ms % 1000));
}

static void print_events(json_t *arr, int json, int follow, int *header)
{
	size_t i;
	json_t *e;
	if (json && !follow) {
		cli_print_json(arr);
		return;
	}
	if (!json && !*header) {
		printf("%-7s %-18s %-10s %s\n", "ID", "TIME", "KIND", "DETAILS");
		*header = 1;
	}
	json_array_foreach(arr, i, e)
	{
		if (json) {
			char *s = json_dumps(e, JSON_COMPACT);
			if (s)
				printf("%s\n", s);
			free(s);
			continue;
		}
		char ts[40], sum[1024];
		format_ts(json_object_get(e, "ts"), ts, sizeof(ts));
		ledger_event_summary(e, sum, sizeof(sum));
		printf("%-7lld %-18s %-10s %s\n",
		       (long long)json_integer_value(json_object_get(e, "id")), ts,
		       str_or(e, "kind", "?"), sum);
	}
	fflush(stdout);
}

static int list_sessions(int json)
{
	struct api_response res;
	size_t i;
	json_t *s;
	if (cli_api("GET", "/sessions", NULL, &res) < 0)
		return 1;
	if (json) {
		cli_print_json(res.json);
		api_response_done(&res);
		return 0;
	}
	printf("%-24s %-16s %-18s %-18s %s\n", "SESSION", "NAME", "STARTED", "ENDED", "SIZE");
	json_array_foreach(res.json, i, s)
	{
		char started[40], ended[40];
		format_ts(json_object_get(s, "started"), started, sizeof(started));
		if (json_is_integer(json_object_get(s, "ended")))
			format_ts(json_object_get(s, "ended"), ended, sizeof(ended));
		else
			snprintf(ended, sizeof(ended), "%s",
				 json_object_get(s, "error") ? "?" : "(running)");
		printf("%-24s %-16s %-18s %-18s %lld KiB\n", str_or(s, "session", "?"),
		       str_or(s, "vm_name", "-"), started, ended,
		       (long long)json_integer_value(json_object_get(s, "size")) / 1024);
	}
	api_response_done(&res);
	return 0;
}

/* Append k=v to a query string being built. */
static int add_param(char **q, const char *k, const char *v)
{
	char *n = NULL;
	if (asprintf(&n, "%s%s%s=%s", *q ? *q : "", *q ? "&" : "?", k, v) < 0)
		return -ENOMEM;
	free(*q);
	*q = n;
	return 0;
}

/* The URL path for one request. session (may be NULL) pins a session; wait_s > 0 asks for a
 * long-poll. */
static char *events_path(const char *ref, const char *session, const char *kinds, unsigned limit,
			 int64_t since, unsigned wait_s)
{
	_cleanup_free_ char *q = NULL;
	char num[32];
	int r = 0;
	if (kinds)
		r |= add_param(&q, "kind", kinds);
	if (limit) {
		snprintf(num, sizeof(num), "%u", limit);
		r |= add_param(&q, "limit", num);
	}
	if (since >= 0) {
		snprintf(num, sizeof(num), "%lld", (long long)since);
		r |= add_param(&q, "since", num);
	}
	if (wait_s) {
		snprintf(num, sizeof(num), "%u", wait_s);
		r |= add_param(&q, "wait", num);
	}
	if (r < 0)
		return NULL;
	char *p = NULL;
	if (session)
		return asprintf(&p, "/sessions/%s/events%s", session, q ? q : "") < 0 ? NULL : p;
	_cleanup_free_ char *suffix = NULL;
	if (asprintf(&suffix, "/events%s", q ? q : "") < 0)
		return NULL;
	return api_vm_path(ref, suffix);
}

/* The session a VM the daemon knows is on now, or NULL (unknown VM, never booted: the daemon's
 * own lookup among the sessions applies). Quiet: a 404 is not an error here. */
static char *current_session(const char *ref)
{
	_cleanup_free_ char *vp = api_vm_path(ref, "");
	struct api_conn c;
	struct api_response res;
	char *s = NULL;
	if (!vp || cli_api_open(&c) < 0)
		return NULL;
	int r = api_json(&c, "GET", vp, NULL, &res);
	api_conn_close(&c);
	if (r < 0)
		return NULL;
	const char *v = json_string_value(json_object_get(res.json, "session"));
	if (res.head.status == 200 && v && ledger_session_id_valid(v))
		s = strdup(v);
	api_response_done(&res);
	return s;
}

int cmd_events(int argc, char **argv)
{
	static const struct option opts[] = { { "kind", required_argument, NULL, 'k' },
					      { "limit", required_argument, NULL, 'n' },
					      { "since", required_argument, NULL, ARG_SINCE },
					      { "session", required_argument, NULL, ARG_SESSION },
					      { "follow", no_argument, NULL, 'f' },
					      { "json", no_argument, NULL, ARG_JSON },
					      { "sessions", no_argument, NULL, ARG_SESSIONS },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	_cleanup_free_ char *kinds = NULL, *session = NULL;
	int json = 0, follow = 0, sessions = 0, c;
	unsigned limit = 0;
	int64_t since = -1;
	uint64_t x;
	optind = 1;
	while ((c = getopt_long(argc, argv, "k:n:fh", opts, NULL)) >= 0) {
		switch (c) {
		case 'k': {
			unsigned mask;
			if (ledger_kinds_parse(optarg, &mask) < 0 || !*optarg)
				return log_error("--kind: expected exec, net, dns, model, tool, "
						 "policy or dropped"),
				       CLI_EXIT_USAGE;
			char *n = NULL;
			if (asprintf(&n, "%s%s%s", kinds ? kinds : "", kinds ? "," : "", optarg) <
			    0)
				return log_oom(), 1;
			free(kinds);
			kinds = n;
			break;
		}
		case 'n':
			if (parse_u64(optarg, &x) < 0 || x < 1 || x > LEDGER_QUERY_MAX)
				return log_error("--limit: expected 1..%u", LEDGER_QUERY_MAX),
				       CLI_EXIT_USAGE;
			limit = (unsigned)x;
			break;
		case ARG_SINCE:
			if (parse_u64(optarg, &x) < 0 || x > INT64_MAX)
				return log_error("--since: expected an event id"), CLI_EXIT_USAGE;
			since = (int64_t)x;
			break;
		case ARG_SESSION:
			if (!ledger_session_id_valid(optarg))
				return log_error("--session: expected <vm-id>-<boot>"),
				       CLI_EXIT_USAGE;
			free(session);
			session = strdup(optarg);
			if (!session)
				return log_oom(), 1;
			break;
		case 'f':
			follow = 1;
			break;
		case ARG_JSON:
			json = 1;
			break;
		case ARG_SESSIONS:
			sessions = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	int n = argc - optind;
	if (sessions) {
		if (n > 0 || follow || kinds || limit || since >= 0 || session)
			return log_error("events: --sessions takes only --json"), CLI_EXIT_USAGE;
		return list_sessions(json);
	}
	if (n != 1)
		return log_error("events: %s (see 'capsem events --help')",
				 n ? "one VM at a time" : "no VM given"),
		       CLI_EXIT_USAGE;
	const char *ref = argv[optind];

	/* --follow stays on the session it started with, even if the VM restarts or is deleted */
	if (follow && !session)
		session = current_session(ref);

	int header = 0;
	for (;;) {
		/* following: the daemon holds an empty answer until rows arrive or the wait ends */
		_cleanup_free_ char *path =
			events_path(ref, session, kinds, limit, since, follow ? FOLLOW_WAIT_S : 0);
		struct api_response res;
		if (!path)
			return log_oom(), 1;
		if (cli_api("GET", path, NULL, &res) < 0)
			return 1;
		if (!json_is_array(res.json)) {
			api_response_done(&res);
			return log_error("capsemd answered with something that is not a list"), 1;
		}
		print_events(res.json, json, follow, &header);
		size_t cnt = json_array_size(res.json);
		if (cnt)
			since = json_integer_value(
				json_object_get(json_array_get(res.json, cnt - 1), "id"));
		else if (since < 0)
			since = 0;
		api_response_done(&res);
		if (!follow)
			return 0;
	}
}

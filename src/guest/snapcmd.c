/* snapcmd.c - capsem-snapshots: list, take, compare and revert snapshots of /root/workspace from
 * inside the guest (a person at `capsem shell`, or an agent without MCP).
 *
 * It is an MCP client of the host's gateway, through capsem-mcp-relay: initialize, then one
 * tools/call of capsem__snapshots_<op>. So the call is the same one an agent's MCP tool makes:
 * the host decides it by the tool policy and records it in the ledger; nothing here is trusted
 * or needed beyond the relay. The answer's text is printed as it is (the gateway renders text,
 * or JSON with --json); a tool error goes to stderr with status 1.
 *
 * Trust boundary: none new (arguments go to the host, which checks them). Single thread.
 */
#include "snapcmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor-int.h"
#include "macro.h"
#include "mcppure.h"

#define SC_REQ_MAX (64u << 10)
#define SC_OUT_MAX (2u << 20)
#define SC_TIMEOUT_MS 300000u /* a first snapshot of a big workspace takes a while under TCG */

static const char usage[] =
	"Usage: capsem-snapshots COMMAND [ARGS] [--json]\n"
	"\n"
	"Snapshots of the workspace (/root/workspace), kept by the host: automatic ones every\n"
	"few minutes while it changes, and named ones.\n"
	"\n"
	"Commands:\n"
	"  list                      the snapshots, newest first\n"
	"  create NAME               take a snapshot now\n"
	"  changes [SNAP]            files added, modified, deleted since SNAP (default newest)\n"
	"  revert PATH... [--from SNAP]\n"
	"                            put paths back as in SNAP (default newest); a path SNAP\n"
	"                            does not have is deleted\n"
	"  history PATH              the versions of PATH across the snapshots\n"
	"  delete NAME               delete a snapshot\n"
	"  compact                   free space no snapshot uses\n"
	"\n"
	"Options:\n"
	"      --json                JSON output\n"
	"      --offset N, --limit N a page of a long list (default the first 100)\n";

/* Append s as a JSON string (quoted, escaped). */
static void put_json_str(char *b, size_t cap, size_t *len, const char *s)
{
	size_t n = *len;
	if (n + 1 < cap)
		b[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && n + 7 < cap; p++) {
		if (*p == '"' || *p == '\\') {
			b[n++] = '\\';
			b[n++] = (char)*p;
		} else if (*p < 0x20) {
			n += (size_t)snprintf(b + n, cap - n, "\\u%04x", *p);
		} else {
			b[n++] = (char)*p;
		}
	}
	if (n + 1 < cap)
		b[n++] = '"';
	b[n] = 0;
	*len = n;
}

static void put_raw(char *b, size_t cap, size_t *len, const char *s)
{
	size_t k = strlen(s);
	if (*len + k < cap) {
		memcpy(b + *len, s, k + 1);
		*len += k;
	}
}

int snapcmd_main(int argc, char **argv)
{
	enum { O_JSON = 256, O_FROM, O_OFFSET, O_LIMIT };
	static const struct option opts[] = { { "json", no_argument, NULL, O_JSON },
					      { "from", required_argument, NULL, O_FROM },
					      { "offset", required_argument, NULL, O_OFFSET },
					      { "limit", required_argument, NULL, O_LIMIT },
					      { "help", no_argument, NULL, 'h' },
					      { 0 } };
	const char *from = NULL, *offset = NULL, *limit = NULL;
	int json = 0, c;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) >= 0) {
		switch (c) {
		case O_JSON:
			json = 1;
			break;
		case O_FROM:
			from = optarg;
			break;
		case O_OFFSET:
			offset = optarg;
			break;
		case O_LIMIT:
			limit = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	/* options may also follow the command's arguments (revert a b --from x) */
	char *args[256];
	int na = 0;
	for (int i = optind; i < argc; i++) {
		if (streq(argv[i], "--json")) {
			json = 1;
		} else if (streq(argv[i], "--from") && i + 1 < argc) {
			from = argv[++i];
		} else if (streq(argv[i], "--offset") && i + 1 < argc) {
			offset = argv[++i];
		} else if (streq(argv[i], "--limit") && i + 1 < argc) {
			limit = argv[++i];
		} else if (na < (int)ELEMENTSOF(args)) {
			args[na++] = argv[i];
		} else {
			fprintf(stderr, "capsem-snapshots: too many arguments\n");
			return 2;
		}
	}
	for (const char *num[] = { offset, limit }, **q = num; q < num + 2; q++)
		if (*q && (strspn(*q, "0123456789") != strlen(*q) || !**q || strlen(*q) > 9)) {
			fprintf(stderr, "capsem-snapshots: --offset and --limit take a number\n");
			return 2;
		}
	if (na == 0) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = args[0];
	static const struct {
		const char *cmd, *tool, *arg; /* arg: the name of the one argument, if any */
		int min, max;
	} ops[] = {
		{ "list", "snapshots_list", NULL, 0, 0 },
		{ "create", "snapshots_create", "name", 1, 1 },
		{ "changes", "snapshots_changes", "snapshot", 0, 1 },
		{ "diff", "snapshots_changes", "snapshot", 0, 1 },
		{ "revert", "snapshots_revert", NULL, 1, 255 },
		{ "history", "snapshots_history", "path", 1, 1 },
		{ "delete", "snapshots_delete", "name", 1, 1 },
		{ "rm", "snapshots_delete", "name", 1, 1 },
		{ "compact", "snapshots_compact", NULL, 0, 0 },
	};
	size_t k = 0;
	while (k < ELEMENTSOF(ops) && !streq(ops[k].cmd, cmd))
		k++;
	if (k == ELEMENTSOF(ops)) {
		fprintf(stderr, "capsem-snapshots: unknown command '%s'\n%s", cmd, usage);
		return 2;
	}
	if (na - 1 < ops[k].min || na - 1 > ops[k].max) {
		fprintf(stderr, "capsem-snapshots %s: wrong number of arguments\n%s", cmd, usage);
		return 2;
	}
	_cleanup_free_ char *req = malloc(SC_REQ_MAX);
	_cleanup_free_ char *out = malloc(SC_OUT_MAX);
	_cleanup_free_ char *text = malloc(SC_OUT_MAX);
	if (!req || !out || !text) {
		fprintf(stderr, "capsem-snapshots: out of memory\n");
		return 1;
	}
	size_t len = 0;
	put_raw(req, SC_REQ_MAX, &len,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{"
		"\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":"
		"\"capsem-snapshots\",\"version\":\"1\"}}}\n"
		"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n"
		"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":"
		"\"capsem__");
	put_raw(req, SC_REQ_MAX, &len, ops[k].tool);
	put_raw(req, SC_REQ_MAX, &len, "\",\"arguments\":{\"format\":");
	put_raw(req, SC_REQ_MAX, &len, json ? "\"json\"" : "\"text\"");
	if (ops[k].arg && na > 1) {
		put_raw(req, SC_REQ_MAX, &len, ",\"");
		put_raw(req, SC_REQ_MAX, &len, ops[k].arg);
		put_raw(req, SC_REQ_MAX, &len, "\":");
		put_json_str(req, SC_REQ_MAX, &len, args[1]);
	}
	if (streq(ops[k].tool, "snapshots_revert")) {
		put_raw(req, SC_REQ_MAX, &len, ",\"paths\":[");
		for (int i = 1; i < na; i++) {
			if (i > 1)
				put_raw(req, SC_REQ_MAX, &len, ",");
			put_json_str(req, SC_REQ_MAX, &len, args[i]);
		}
		put_raw(req, SC_REQ_MAX, &len, "]");
		if (from) {
			put_raw(req, SC_REQ_MAX, &len, ",\"from\":");
			put_json_str(req, SC_REQ_MAX, &len, from);
		}
	}
	if (offset) {
		put_raw(req, SC_REQ_MAX, &len, ",\"offset\":");
		put_raw(req, SC_REQ_MAX, &len, offset);
	}
	if (limit) {
		put_raw(req, SC_REQ_MAX, &len, ",\"limit\":");
		put_raw(req, SC_REQ_MAX, &len, limit);
	}
	put_raw(req, SC_REQ_MAX, &len, "}}}\n");
	if (len + 1 >= SC_REQ_MAX) {
		fprintf(stderr, "capsem-snapshots: arguments too long\n");
		return 2;
	}
	char *relay[] = { "capsem-mcp-relay", NULL };
	int r = doctor_run(relay, req, SC_TIMEOUT_MS, out, SC_OUT_MAX);
	/* the answer to id 2 is one line of the relay's output */
	for (char *line = out; line && *line;) {
		char *nl = strchr(line, '\n');
		size_t n = nl ? (size_t)(nl - line) : strlen(line);
		bool is_error = false;
		struct mcppure_msg m;
		if (mcppure_scan(line, n, &m) == MCPPURE_RESPONSE && streq(m.id.text, "2")) {
			ssize_t t = mcppure_result_text(line, n, text, SC_OUT_MAX, &is_error);
			if (t < 0) {
				fprintf(stderr, "capsem-snapshots: %.*s\n", (int)MIN(n, 2000u),
					line);
				return 1;
			}
			FILE *f = is_error ? stderr : stdout;
			fprintf(f, "%s%s%s", is_error ? "capsem-snapshots: " : "", text,
				t > 0 && text[t - 1] == '\n' ? "" : "\n");
			return is_error ? 1 : 0;
		}
		line = nl ? nl + 1 : NULL;
	}
	fprintf(stderr, "capsem-snapshots: no answer from the host's MCP gateway%s%s\n",
		r == -ETIMEDOUT ? " (timed out)" : "", *out ? ": " : "");
	if (*out)
		fprintf(stderr, "%.2000s\n", out);
	return 1;
}

/* cmd-snapshot.c - capsem snapshot: workspace snapshots of a VM (create, list, diff, revert,
 * history, rm, compact), each one request to capsemd (docs/API.md "Snapshots"), which keeps
 * them host-side in <vmdir>/snapshots.
 *
 * Trust boundary: arguments are the user's (checked here for one clear line; capsemd checks
 * again); answers are the daemon's JSON, read defensively (a missing field prints as "-" or 0).
 * Paths and names shown come from the guest's workspace: printed as data, one per line. Main
 * thread of the CLI.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "apiclient.h"
#include "clilib.h"
#include "commands.h"
#include "jsonutil.h"
#include "log.h"
#include "macro.h"

static const char usage[] =
	"Usage: capsem snapshot COMMAND VM [ARGS] [--json]\n"
	"\n"
	"Snapshots of a VM's workspace (/root/workspace in the guest: the folder given with\n"
	"--workspace, or the VM's own). capsemd keeps them on the host, outside the workspace,\n"
	"content-addressed (each file's bytes stored once), and takes automatic ones of\n"
	"running VMs every $CAPSEM_SNAPSHOT_INTERVAL_S seconds of the daemon (default 300;\n"
	"skipped when nothing changed; the last 12 are kept). They work on stopped VMs too.\n"
	"\n"
	"Commands:\n"
	"  create VM [NAME]           take a snapshot now (named, or automatic without NAME);\n"
	"                             NAME is [A-Za-z0-9][A-Za-z0-9._-]{0,63}, not auto-*\n"
	"  list VM                    the snapshots, newest first\n"
	"  diff VM [SNAP]             files added, modified (M) and deleted since SNAP\n"
	"                             (default: the newest snapshot)\n"
	"  revert VM PATH... [--from SNAP]\n"
	"                             put PATHs (files or directory trees; '.' = everything)\n"
	"                             back as they were in SNAP (default: the newest); a path\n"
	"                             the snapshot does not have is deleted. Each file is\n"
	"                             replaced whole (written aside, then renamed)\n"
	"  history VM PATH            the versions of PATH across snapshots\n"
	"  rm VM NAME                 delete a snapshot (its data goes at the next compact)\n"
	"  compact VM                 delete stored data no snapshot needs any more\n"
	"\n"
	"PATH is relative to the workspace or absolute under /root/workspace.\n"
	"\n"
	"Options:\n"
	"      --from SNAP   (revert) the snapshot to restore from\n"
	"      --json        print the daemon's JSON answer\n"
	"  -h, --help        this text\n";

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s && *s ? s : "-";
}

static uint64_t jnum(json_t *o, const char *k)
{
	json_int_t v = json_integer_value(json_object_get(o, k));
	return v > 0 ? (uint64_t)v : 0;
}

static void fmt_bytes(uint64_t n, char *out, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%" PRIu64 " B", n);
	else
		snprintf(out, len, "%.1f %s", v, units[u]);
}

/* One request; the JSON answer in *ret (caller frees with api_response_done). */
static int call(const char *method, const char *ref, const char *suffix, json_t *body,
		struct api_response *ret)
{
	_cleanup_free_ char *path = api_vm_path(ref, suffix);
	if (!path)
		return log_oom();
	return cli_api(method, path, body, ret);
}

static int do_create(const char *vm, const char *name, int json)
{
	_cleanup_json_ json_t *body = name ? json_pack("{s:s}", "name", name) : json_object();
	struct api_response res;
	if (!body)
		return log_oom(), 1;
	if (call("POST", vm, "/snapshots", body, &res) < 0)
		return 1;
	json_t *j = res.json;
	if (json) {
		cli_print_json(j);
	} else if (!json_is_true(json_object_get(j, "created"))) {
		printf("nothing changed since snapshot %s: no new snapshot\n", jstr(j, "newest"));
	} else {
		json_t *s = json_object_get(j, "snapshot");
		char size[32], stored[32];
		fmt_bytes(jnum(s, "bytes"), size, sizeof(size));
		fmt_bytes(jnum(j, "new_object_bytes"), stored, sizeof(stored));
		printf("snapshot %s: %" PRIu64 " files (%s), %" PRIu64 " read, %s newly stored, "
		       "%.0f ms\n",
		       jstr(s, "name"), jnum(s, "files"), size, jnum(j, "hashed_files"), stored,
		       json_number_value(json_object_get(j, "elapsed_ms")));
	}
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(j, "unstable"), i, v)
		log_warn("%s was being written during the snapshot: its content is not in it",
			 json_string_value(v));
	json_array_foreach(json_object_get(j, "unreadable"), i, v) log_warn(
		"%s could not be read: its content is not in the snapshot", json_string_value(v));
	api_response_done(&res);
	return 0;
}

static int do_list(const char *vm, int json)
{
	struct api_response res;
	if (call("GET", vm, "/snapshots", NULL, &res) < 0)
		return 1;
	json_t *arr = json_object_get(res.json, "snapshots");
	if (json) {
		cli_print_json(res.json);
	} else if (json_array_size(arr) == 0) {
		printf("no snapshots\n");
	} else {
		size_t i;
		json_t *s;
		printf("%-24s  %-5s  %-20s  %8s  %10s\n", "NAME", "KIND", "TIME", "FILES", "SIZE");
		json_array_foreach(arr, i, s)
		{
			char size[32];
			fmt_bytes(jnum(s, "bytes"), size, sizeof(size));
			printf("%-24s  %-5s  %-20s  %8" PRIu64 "  %10s\n", jstr(s, "name"),
			       json_is_true(json_object_get(s, "auto")) ? "auto" : "named",
			       jstr(s, "time"), jnum(s, "files"), size);
		}
	}
	api_response_done(&res);
	return 0;
}

static int do_diff(const char *vm, const char *snap, int json)
{
	_cleanup_free_ char *esc = snap ? api_escape(snap) : NULL, *suffix = NULL;
	struct api_response res;
	if ((snap && !esc) ||
	    asprintf(&suffix, "/snapshots/changes%s%s", snap ? "?snap=" : "", snap ? esc : "") < 0)
		return log_oom(), 1;
	if (call("GET", vm, suffix, NULL, &res) < 0)
		return 1;
	json_t *j = res.json;
	if (json) {
		cli_print_json(j);
	} else {
		static const char *const kinds[] = { "added", "modified", "deleted" };
		static const char marks[] = { 'A', 'M', 'D' };
		for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
			size_t i;
			json_t *c;
			json_array_foreach(json_object_get(j, kinds[k]), i, c)
				printf("%c  %s%s\n", marks[k], jstr(c, "path"),
				       streq(jstr(c, "type"), "dir") ? "/" : "");
		}
		json_t *n = json_object_get(j, "counts");
		fprintf(stderr,
			"since %s: %" PRIu64 " added, %" PRIu64 " modified, %" PRIu64
			" deleted%s\n",
			jstr(j, "snapshot"), jnum(n, "added"), jnum(n, "modified"),
			jnum(n, "deleted"),
			json_is_true(json_object_get(j, "truncated")) ? " (list truncated)" : "");
	}
	api_response_done(&res);
	return 0;
}

static int do_revert(const char *vm, char **paths, int n, const char *from, int json)
{
	_cleanup_json_ json_t *body = json_object(), *arr = json_array();
	struct api_response res;
	if (!body || !arr)
		return log_oom(), 1;
	for (int i = 0; i < n; i++)
		json_array_append_new(arr, json_string(paths[i]));
	json_object_set(body, "paths", arr);
	if (from)
		json_object_set_new(body, "from", json_string(from));
	if (call("POST", vm, "/snapshots/revert", body, &res) < 0)
		return 1;
	json_t *j = res.json, *v;
	size_t i;
	size_t errors = json_array_size(json_object_get(j, "errors"));
	if (json) {
		cli_print_json(j);
	} else {
		json_array_foreach(json_object_get(j, "written"), i, v)
			printf("restored %s\n", json_string_value(v));
		json_array_foreach(json_object_get(j, "deleted"), i, v)
			printf("deleted  %s\n", json_string_value(v));
		fprintf(stderr, "from %s: %zu restored, %zu deleted, %" PRIu64 " already right\n",
			jstr(j, "snapshot"), json_array_size(json_object_get(j, "written")),
			json_array_size(json_object_get(j, "deleted")), jnum(j, "unchanged"));
	}
	json_array_foreach(json_object_get(j, "errors"), i, v)
		log_error("%s: %s", jstr(v, "path"), jstr(v, "error"));
	api_response_done(&res);
	return errors ? 1 : 0;
}

static int do_history(const char *vm, const char *path, int json)
{
	_cleanup_free_ char *esc = api_escape(path), *suffix = NULL;
	struct api_response res;
	if (!esc || asprintf(&suffix, "/snapshots/history?path=%s", esc) < 0)
		return log_oom(), 1;
	if (call("GET", vm, suffix, NULL, &res) < 0)
		return 1;
	json_t *j = res.json;
	if (json) {
		cli_print_json(j);
	} else {
		size_t i;
		json_t *v;
		printf("%-24s  %-20s  %-8s  %10s  %-12s  %s\n", "SNAPSHOT", "TIME", "TYPE", "SIZE",
		       "SHA256", "");
		json_array_foreach(json_object_get(j, "versions"), i, v)
		{
			int present = json_is_true(json_object_get(v, "present"));
			char size[32] = "-", sha[16] = "-";
			if (json_object_get(v, "size"))
				snprintf(size, sizeof(size), "%" PRIu64, jnum(v, "size"));
			if (json_object_get(v, "sha256"))
				snprintf(sha, sizeof(sha), "%.12s", jstr(v, "sha256"));
			printf("%-24s  %-20s  %-8s  %10s  %-12s  %s\n", jstr(v, "snapshot"),
			       jstr(v, "time"), present ? jstr(v, "type") : "absent", size, sha,
			       json_is_true(json_object_get(v, "changed")) ? "changed" : "");
		}
	}
	api_response_done(&res);
	return 0;
}

static int do_rm(const char *vm, const char *name, int json)
{
	_cleanup_free_ char *esc = api_escape(name), *suffix = NULL;
	struct api_response res;
	if (!esc || asprintf(&suffix, "/snapshots/%s", esc) < 0)
		return log_oom(), 1;
	if (call("DELETE", vm, suffix, NULL, &res) < 0)
		return 1;
	if (json)
		cli_print_json(res.json);
	else
		printf("deleted snapshot %s\n", name);
	api_response_done(&res);
	return 0;
}

static int do_compact(const char *vm, int json)
{
	struct api_response res;
	if (call("POST", vm, "/snapshots/compact", NULL, &res) < 0)
		return 1;
	if (json) {
		cli_print_json(res.json);
	} else {
		char freed[32];
		fmt_bytes(jnum(res.json, "freed_bytes"), freed, sizeof(freed));
		printf("freed %s (%" PRIu64 " objects removed, %" PRIu64 " kept)\n", freed,
		       jnum(res.json, "removed_objects"), jnum(res.json, "kept_objects"));
	}
	api_response_done(&res);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' },
					      { "from", required_argument, NULL, 'f' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *from = NULL;
	int c, json = 0;
	if (argc < 2 || streq(argv[1], "-h") || streq(argv[1], "--help") ||
	    streq(argv[1], "help")) {
		fputs(usage, stdout);
		return argc < 2 ? CLI_EXIT_USAGE : 0;
	}
	const char *sub = argv[1];
	argc--;
	argv++;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'f':
			from = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	int n = argc - optind;
	char **args = argv + optind;
	struct {
		const char *name;
		int min, max; /* positional arguments after the subcommand, VM included */
		const char *synopsis;
	} const subs[] = {
		{ "create", 1, 2, "create VM [NAME]" },
		{ "list", 1, 1, "list VM" },
		{ "ls", 1, 1, "list VM" },
		{ "diff", 1, 2, "diff VM [SNAP]" },
		{ "revert", 2, -1, "revert VM PATH... [--from SNAP]" },
		{ "history", 2, 2, "history VM PATH" },
		{ "rm", 2, 2, "rm VM NAME" },
		{ "delete", 2, 2, "rm VM NAME" },
		{ "compact", 1, 1, "compact VM" },
	};
	size_t k;
	for (k = 0; k < ELEMENTSOF(subs); k++)
		if (streq(sub, subs[k].name))
			break;
	if (k == ELEMENTSOF(subs))
		return log_error("snapshot: unknown command '%s' (see 'capsem snapshot --help')",
				 sub),
		       CLI_EXIT_USAGE;
	if (n < subs[k].min || (subs[k].max >= 0 && n > subs[k].max))
		return log_error("usage: capsem snapshot %s", subs[k].synopsis), CLI_EXIT_USAGE;
	if (from && !streq(sub, "revert"))
		return log_error("snapshot %s: --from is only for revert", sub), CLI_EXIT_USAGE;
	const char *vm = args[0];
	if (streq(sub, "create"))
		return do_create(vm, n > 1 ? args[1] : NULL, json);
	if (streq(sub, "list") || streq(sub, "ls"))
		return do_list(vm, json);
	if (streq(sub, "diff"))
		return do_diff(vm, n > 1 ? args[1] : NULL, json);
	if (streq(sub, "revert"))
		return do_revert(vm, args + 1, n - 1, from, json);
	if (streq(sub, "history"))
		return do_history(vm, args[1], json);
	if (streq(sub, "rm") || streq(sub, "delete"))
		return do_rm(vm, args[1], json);
	return do_compact(vm, json);
}

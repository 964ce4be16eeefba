/* cmd-vm.c - the VM lifecycle commands: create, list, info, stop, start, restart, delete, purge,
 * persist and logs, each one or a few requests to capsemd (docs/API.md).
 *
 * Trust boundary: arguments are the user's (validated here so mistakes get one clear line);
 * answers are the daemon's JSON, read defensively (a missing field prints as "-", never
 * crashes). Main thread of the CLI.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "clilib.h"
#include "commands.h"
#include "cliutil.h"
#include "vmlimits.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"
#include "strv.h"

/* Parse options that are only --json / -h (plus extra short options in more), positional args
 * left at argv[optind..]. Returns 0, 1 for --help (printed), or CLI_EXIT_USAGE. */
static int simple_opts(int argc, char **argv, const char *usage, int *json, int *all)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' },
					      { "all", no_argument, NULL, 'a' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, all ? "ah" : "h", opts, NULL)) >= 0) {
		switch (c) {
		case 'j':
			if (!json)
				return log_error("%s: --json is not an option here", argv[0]),
				       CLI_EXIT_USAGE;
			*json = 1;
			break;
		case 'a':
			if (!all)
				return log_error("%s: --all is not an option here", argv[0]),
				       CLI_EXIT_USAGE;
			*all = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			return 1;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	return 0;
}

static int need_args(int argc, char **argv, int min, int max, const char *what)
{
	int n = argc - optind;
	if (n < min)
		return log_error("%s: no %s given (see 'capsem %s --help')", argv[0], what,
				 argv[0]),
		       -EINVAL;
	if (max >= 0 && n > max)
		return log_error("%s: too many arguments (see 'capsem %s --help')", argv[0],
				 argv[0]),
		       -EINVAL;
	return 0;
}

static const char *jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s && *s ? s : "-";
}

/* ---- create ---- */

static const char create_usage[] =
	"Usage: capsem create [OPTIONS]\n"
	"\n"
	"Create and boot a VM; prints its id. A VM with a name is persistent (its disk survives\n"
	"stop/start); an unnamed one is ephemeral and deleted when it stops.\n"
	"\n"
	"Options:\n"
	"  -n, --name NAME          name ([a-z0-9][a-z0-9_.-]*, up to 63 characters)\n"
	"      --cpus N             virtual CPUs (1..64)\n"
	"      --memory SIZE        RAM, e.g. 512M or 2G\n"
	"      --disk SIZE          size of the guest's /root disk, e.g. 4G\n"
	"  -e, --env KEY=VALUE      environment for every command (repeatable)\n"
	"      --mount HOST:GUEST[:ro]  share a host directory (repeatable)\n"
	"      --workspace DIR      share DIR as the workspace, /root/workspace in the guest\n"
	"                           (where commands start); default: the VM's own directory\n"
	"                           under $CAPSEM_HOME\n"
	"      --image NAME         image (default $CAPSEM_IMAGE, else debian when\n"
	"                           installed, else minimal)\n"
	"      --suspendable        a VM that 'capsem suspend' can save (the default without\n"
	"                           --mount; an unnamed VM once persisted): its host channel\n"
	"                           and its workspace go over virtio-serial ports, and its\n"
	"                           first boot\n"
	"                           is restored from a saved boot of its kind\n"
	"      --no-suspendable     the workspace over virtio-fs and the host channel over\n"
	"                           vsock instead: faster file I/O, but no suspend\n"
	"      --json               print the whole VM object\n"
	"  -h, --help               this text\n";

int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = { { "name", required_argument, NULL, 'n' },
					      { "cpus", required_argument, NULL, 'C' },
					      { "memory", required_argument, NULL, 'M' },
					      { "disk", required_argument, NULL, 'D' },
					      { "env", required_argument, NULL, 'e' },
					      { "mount", required_argument, NULL, 'm' },
					      { "workspace", required_argument, NULL, 'W' },
					      { "image", required_argument, NULL, 'I' },
					      { "suspendable", no_argument, NULL, 'S' },
					      { "no-suspendable", no_argument, NULL, 'N' },
					      { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	_cleanup_strv_free_ char **env = NULL;
	/* NOLINTNEXTLINE(clang-analyzer-unix.StdCLibraryFunctions): glibc's getcwd(NULL, 0) allocates */
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	json_t *body = json_object(), *mounts = json_array();
	/* $CAPSEM_IMAGE pins the default (else capsemd picks: debian when installed) */
	if (getenv("CAPSEM_IMAGE") && *getenv("CAPSEM_IMAGE"))
		json_object_set_new(body, "image", json_string(getenv("CAPSEM_IMAGE")));
	uint64_t mib;
	uint32_t u;
	int c, json = 0, st = CLI_EXIT_USAGE;

	optind = 1;
	while ((c = getopt_long(argc, argv, "n:e:h", opts, NULL)) >= 0) {
		switch (c) {
		case 'n':
			if (!cli_valid_name(optarg)) {
				log_error("--name: '%s' is not a valid name (lowercase letters, "
					  "digits, '_', '.', '-'; starting with a letter or digit; "
					  "up to 63 characters)",
					  optarg);
				goto out;
			}
			json_object_set_new(body, "name", json_string(optarg));
			break;
		case 'C':
			if (vm_parse_cpus(optarg, &u) < 0) {
				log_error(VM_CPUS_USAGE ", got '%s'", optarg);
				goto out;
			}
			json_object_set_new(body, "cpus", json_integer(u));
			break;
		case 'M':
			if (vm_parse_memory_mib(optarg, &mib) < 0) {
				log_error(VM_MEMORY_USAGE ", got '%s'", optarg);
				goto out;
			}
			json_object_set_new(body, "memory", json_integer((json_int_t)mib));
			break;
		case 'D': {
			char s[32];
			if (parse_size_mib(optarg, VM_DISK_MIN_MIB, VM_DISK_MAX_MIB, &mib) < 0) {
				log_error("--disk: expected a size from " VM_DISK_RANGE_TEXT
					  " in whole MiB "
					  "(e.g. 4G), got '%s'",
					  optarg);
				goto out;
			}
			snprintf(s, sizeof(s), "%" PRIu64 "M", mib);
			json_object_set_new(body, "disk", json_string(s));
			break;
		}
		case 'e':
			if (cli_parse_env(optarg, &env) < 0) {
				log_error("--env: expected KEY=VALUE or a KEY set on the host, got "
					  "'%s'",
					  optarg);
				goto out;
			}
			break;
		case 'm': {
			json_t *m = NULL;
			if (cli_parse_mount(optarg, cwd, &m) < 0) {
				log_error(
					"--mount: expected HOST:GUEST[:ro] with an absolute guest "
					"path, got '%s'",
					optarg);
				goto out;
			}
			json_array_append_new(mounts, m);
			break;
		}
		case 'I':
			if (!*optarg || strchr(optarg, '/') || optarg[0] == '.') {
				log_error("--image: not an image name: '%s'", optarg);
				goto out;
			}
			json_object_set_new(body, "image", json_string(optarg));
			break;
		case 'W': {
			char *ws = NULL;
			if (cli_workspace_path(optarg, &ws) < 0)
				goto out;
			json_object_set_new(body, "workspace", json_string(ws));
			free(ws);
			break;
		}
		case 'S':
		case 'N':
			json_object_set_new(body, "suspendable", json_boolean(c == 'S'));
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs(create_usage, stdout);
			st = 0;
			goto out;
		default:
			goto out;
		}
	}
	if (optind < argc) {
		log_error("create: unexpected argument '%s' (use -n NAME for a name)",
			  argv[optind]);
		goto out;
	}
	if (env) {
		json_t *a = json_array();
		for (char **p = env; *p; p++)
			json_array_append_new(a, json_string(*p));
		json_object_set_new(body, "env", a);
	}
	if (json_array_size(mounts))
		json_object_set(body, "mounts", mounts);

	struct api_response res;
	st = 1;
	if (cli_api("POST", "/vms", body, &res) < 0)
		goto out;
	cli_warn_if_emulated(res.json);
	if (json)
		cli_print_json(res.json);
	else
		printf("%s\n", jstr(res.json, "id"));
	api_response_done(&res);
	st = 0;
out:
	json_decref(body);
	json_decref(mounts);
	return st;
}

/* ---- list ---- */

static const char list_usage[] = "Usage: capsem list [OPTIONS]   (alias: ls)\n"
				 "\n"
				 "List VMs, newest first: running ones, and stopped ones with -a.\n"
				 "\n"
				 "Options:\n"
				 "  -a, --all   include stopped VMs\n"
				 "      --json  print the VM objects as JSON\n"
				 "  -h, --help  this text\n";

int cmd_list(int argc, char **argv)
{
	int json = 0, all = 0;
	int r = simple_opts(argc, argv, list_usage, &json, &all);
	if (r)
		return r == 1 ? 0 : r;
	if (need_args(argc, argv, 0, 0, "") < 0)
		return CLI_EXIT_USAGE;

	struct api_response res;
	if (cli_api("GET", "/vms", NULL, &res) < 0)
		return 1;
	if (!json_is_array(res.json)) {
		api_response_done(&res);
		return log_error("capsemd answered GET /vms with something other than a list"), 1;
	}
	json_t *shown = json_array();
	size_t i;
	json_t *vm;
	json_array_foreach(res.json, i, vm)
	{
		const char *state = jstr(vm, "state");
		if (all || !streq(state, "stopped"))
			json_array_append(shown, vm);
	}
	if (json) {
		cli_print_json(shown);
	} else {
		time_t now = time(NULL);
		printf("%-12s  %-20s  %-8s  %4s  %6s  %s\n", "ID", "NAME", "STATE", "CPUS",
		       "MEMORY", "AGE");
		json_array_foreach(shown, i, vm)
		{
			char mem[32], age[32] = "-";
			time_t t;
			cli_format_mib(
				(uint64_t)json_integer_value(json_object_get(vm, "memory_mib")),
				mem, sizeof(mem));
			if (cli_parse_time(jstr(vm, "created"), &t) == 0)
				cli_format_age((int64_t)(now - t), age, sizeof(age));
			printf("%-12s  %-20s  %-8s  %4" JSON_INTEGER_FORMAT "  %6s  %s\n",
			       jstr(vm, "id"), jstr(vm, "name"), jstr(vm, "state"),
			       json_integer_value(json_object_get(vm, "cpus")), mem, age);
		}
	}
	json_decref(shown);
	api_response_done(&res);
	return 0;
}

/* ---- info ---- */

static const char info_usage[] = "Usage: capsem info VM [--json]\n"
				 "\n"
				 "Show one VM (a name, an id or a unique id prefix).\n";

int cmd_info(int argc, char **argv)
{
	int json = 0;
	int r = simple_opts(argc, argv, info_usage, &json, NULL);
	if (r)
		return r == 1 ? 0 : r;
	if (need_args(argc, argv, 1, 1, "VM") < 0)
		return CLI_EXIT_USAGE;
	_cleanup_free_ char *path = api_vm_path(argv[optind], "");
	struct api_response res;
	if (!path || cli_api("GET", path, NULL, &res) < 0)
		return 1;
	if (json) {
		cli_print_json(res.json);
	} else {
		json_t *vm = res.json, *v;
		char mem[32], disk[32];
		cli_format_mib((uint64_t)json_integer_value(json_object_get(vm, "memory_mib")), mem,
			       sizeof(mem));
		cli_format_mib((uint64_t)json_integer_value(json_object_get(vm, "disk_mib")), disk,
			       sizeof(disk));
		printf("ID:          %s\n", jstr(vm, "id"));
		printf("Name:        %s\n", jstr(vm, "name"));
		printf("Persistent:  %s\n",
		       json_is_true(json_object_get(vm, "persistent")) ? "yes" : "no");
		printf("State:       %s\n", jstr(vm, "state"));
		if (json_is_string(json_object_get(vm, "error")))
			printf("Error:       %s\n", jstr(vm, "error"));
		printf("CPUs:        %" JSON_INTEGER_FORMAT "\n",
		       json_integer_value(json_object_get(vm, "cpus")));
		printf("Memory:      %s\n", mem);
		printf("Disk:        %s\n", disk);
		printf("Image:       %s\n", jstr(vm, "image"));
		printf("Created:     %s\n", jstr(vm, "created"));
		printf("Started:     %s\n", jstr(vm, "started"));
		if ((v = json_object_get(vm, "boot_ms")) && json_is_number(v))
			printf("Boot:        %.0f ms\n", json_number_value(v));
		if ((v = json_object_get(vm, "pid")) && json_is_integer(v))
			printf("PID:         %" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
		if ((v = json_object_get(vm, "host_memory")) && json_is_object(v)) {
			json_t *q = json_object_get(v, "qemu_rss_mib");
			printf("Host memory: %" JSON_INTEGER_FORMAT " MiB resident",
			       json_integer_value(json_object_get(v, "rss_mib")));
			if (json_is_integer(q))
				printf(" (QEMU %" JSON_INTEGER_FORMAT
				       " MiB, supervisor %" JSON_INTEGER_FORMAT " MiB)",
				       json_integer_value(q),
				       json_integer_value(
					       json_object_get(v, "supervisor_rss_mib")));
			printf("\n");
		}
		printf("Directory:   %s\n", jstr(vm, "vmdir"));
		printf("Suspend:     %s\n", json_is_true(json_object_get(vm, "can_suspend"))
						    ? "yes"
						    : jstr(vm, "suspend_blocker"));
		if (json_is_string(json_object_get(vm, "workspace"))) {
			const char *wt =
				json_string_value(json_object_get(vm, "workspace_transport"));
			printf("Workspace:   %s -> /root/workspace%s\n", jstr(vm, "workspace"),
			       json_is_true(json_object_get(vm, "workspace_shared"))
				       ? " (your folder)"
				       : " (the VM's own, deleted with it)");
			if (wt)
				printf("Shared over: %s\n",
				       streq(wt, "virtiofs") ? "virtio-fs (virtiofsd)"
				       : streq(wt, "9p")
					       ? "9p (QEMU's)"
					       : "9p over a virtio-serial port (capsem-vm's)");
			if (json_is_false(json_object_get(vm, "workspace_audit")))
				puts("Audit:       off (no file rows, no automatic snapshots)");
		}
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(vm, "env"), i, x)
			printf("Env:         %s\n", strempty(json_string_value(x)));
		json_array_foreach(json_object_get(vm, "mounts"), i, x)
			printf("Mount:       %s -> %s%s\n", jstr(x, "host"), jstr(x, "guest"),
			       json_is_true(json_object_get(x, "ro")) ? " (read-only)" : "");
	}
	api_response_done(&res);
	return 0;
}

/* ---- stop / start / restart / delete ---- */

static int vm_action(int argc, char **argv, const char *usage, const char *method,
		     const char *suffix, int many)
{
	int r = simple_opts(argc, argv, usage, NULL, NULL);
	if (r)
		return r == 1 ? 0 : r;
	if (need_args(argc, argv, 1, many ? -1 : 1, "VM") < 0)
		return CLI_EXIT_USAGE;
	int st = 0;
	for (int i = optind; i < argc; i++) {
		_cleanup_free_ char *path = api_vm_path(argv[i], suffix);
		struct api_response res;
		if (!path || cli_api(method, path, NULL, &res) < 0) {
			st = 1;
			continue;
		}
		const char *id = json_string_value(json_object_get(res.json, "deleted"));
		if (!id)
			id = json_string_value(json_object_get(res.json, "id"));
		printf("%s\n", id ? id : argv[i]);
		api_response_done(&res);
	}
	return st;
}

int cmd_stop(int argc, char **argv)
{
	return vm_action(argc, argv,
			 "Usage: capsem stop VM\n\nStop a VM (an ephemeral VM is deleted).\n",
			 "POST", "/stop", 0);
}

int cmd_start(int argc, char **argv)
{
	return vm_action(argc, argv, "Usage: capsem start VM\n\nBoot a stopped VM again.\n", "POST",
			 "/start", 0);
}

int cmd_suspend(int argc, char **argv)
{
	return vm_action(
		argc, argv,
		"Usage: capsem suspend VM\n\nSave a running VM (memory and devices) to its "
		"directory and free its CPU\nand RAM; 'capsem resume' brings it back with "
		"every process. Open shells and\nexecs end; the guest's network "
		"connections are reset. A VM created with --no-suspendable or\n--mount "
		"cannot be suspended ('capsem info' says why not).\n",
		"POST", "/suspend", 0);
}

int cmd_resume(int argc, char **argv)
{
	return vm_action(
		argc, argv,
		"Usage: capsem resume VM\n\nBring a suspended VM back: its processes run on "
		"from where they were, the\nguest clock is set again. ('capsem stop' on a "
		"suspended VM discards the saved\nstate instead.)\n",
		"POST", "/resume", 0);
}

int cmd_restart(int argc, char **argv)
{
	return vm_action(argc, argv, "Usage: capsem restart VM\n\nStop a VM and boot it again.\n",
			 "POST", "/restart", 0);
}

int cmd_delete(int argc, char **argv)
{
	return vm_action(argc, argv,
			 "Usage: capsem delete VM...   (alias: rm)\n\nStop VMs and delete them "
			 "with their disks.\n",
			 "DELETE", "", 1);
}

/* ---- purge ---- */

int cmd_purge(int argc, char **argv)
{
	static const struct option opts[] = { { "force", no_argument, NULL, 'f' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	int c, force = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "fh", opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			force = 1;
			break;
		case 'h':
			printf("Usage: capsem purge [-f]\n"
			       "\n"
			       "Delete every ephemeral VM and every stopped or crashed VM.\n"
			       "Asks for confirmation on a terminal unless -f is given.\n");
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (need_args(argc, argv, 0, 0, "") < 0)
		return CLI_EXIT_USAGE;
	if (!force && isatty(STDIN_FILENO)) {
		char ans[16] = "";
		fprintf(stderr,
			"Delete every ephemeral VM and every stopped or crashed VM? [y/N] ");
		if (!fgets(ans, sizeof(ans), stdin) || (ans[0] != 'y' && ans[0] != 'Y'))
			return fprintf(stderr, "capsem: nothing deleted\n"), 1;
	}
	struct api_response res;
	if (cli_api("POST", "/purge", NULL, &res) < 0)
		return 1;
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(res.json, "deleted"), i, x)
		printf("%s\n", strempty(json_string_value(x)));
	api_response_done(&res);
	return 0;
}

/* ---- persist ---- */

int cmd_persist(int argc, char **argv)
{
	int r = simple_opts(argc, argv,
			    "Usage: capsem persist VM NAME\n\nName an ephemeral VM: it becomes "
			    "persistent and keeps its disk across stop/start.\n",
			    NULL, NULL);
	if (r)
		return r == 1 ? 0 : r;
	if (need_args(argc, argv, 2, 2, "VM and NAME") < 0)
		return CLI_EXIT_USAGE;
	if (!cli_valid_name(argv[optind + 1]))
		return log_error("persist: '%s' is not a valid name", argv[optind + 1]),
		       CLI_EXIT_USAGE;
	_cleanup_free_ char *path = api_vm_path(argv[optind], "/persist");
	json_t *body = json_pack("{s:s}", "name", argv[optind + 1]);
	struct api_response res;
	r = path && body ? cli_api("POST", path, body, &res) : -ENOMEM;
	json_decref(body);
	if (r < 0)
		return 1;
	printf("%s\n", jstr(res.json, "id"));
	api_response_done(&res);
	return 0;
}

/* ---- logs ---- */

int cmd_logs(int argc, char **argv)
{
	static const struct option opts[] = { { "source", required_argument, NULL, 's' },
					      { "tail", required_argument, NULL, 'n' },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	const char *source = "serial";
	uint32_t tail = 0;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:n:h", opts, NULL)) >= 0) {
		switch (c) {
		case 's':
			if (!streq(optarg, "serial") && !streq(optarg, "agent") &&
			    !streq(optarg, "vm") && !streq(optarg, "qemu"))
				return log_error("--source: expected serial, agent, vm or qemu"),
				       CLI_EXIT_USAGE;
			source = optarg;
			break;
		case 'n':
			if (parse_u32(optarg, &tail) < 0 || tail == 0)
				return log_error("--tail: expected a number of lines > 0"),
				       CLI_EXIT_USAGE;
			break;
		case 'h':
			printf("Usage: capsem logs VM [--source serial|agent|vm|qemu] [--tail N]\n"
			       "\n"
			       "Print a VM's log: the guest's serial console (default), the guest\n"
			       "init's and agent's lines of it, capsem-vm's own log, or QEMU's.\n");
			return 0;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (need_args(argc, argv, 1, 1, "VM") < 0)
		return CLI_EXIT_USAGE;
	_cleanup_free_ char *suffix = NULL, *path = NULL;
	if (tail ? asprintf(&suffix, "/logs?source=%s&tail=%u", source, tail) < 0
		 : asprintf(&suffix, "/logs?source=%s", source) < 0)
		return log_oom(), 1;
	path = api_vm_path(argv[optind], suffix);
	if (!path)
		return log_oom(), 1;
	/* the log is streamed to stdout as it arrives */
	struct api_req rq = {
		.method = "GET", .path = path, .body_fd = -1, .out_fd = STDOUT_FILENO
	};
	struct api_response res;
	if (cli_api_req(&rq, &res) < 0)
		return 1;
	api_response_done(&res);
	return 0;
}

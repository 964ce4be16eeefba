/* cmd-run.c - "capsem run": boot an ephemeral VM, run one command in it, pass its output and exit
 * status through, and leave nothing behind.
 *
 * Two paths. Through capsemd (docs/API.md): POST /vms, an exec upgrade, DELETE at the end (also
 * after Ctrl-C). Direct (--direct): the VM is supervised by a capsem-vm child
 * (src/shared/vmproc.c); once it reports ready, this process connects straight to the guest
 * agent through the VM's hybrid-vsock socket. Either way relay.c relays the exec session
 * (docs/PROTOCOL.md §4); frames come from the guest: hostile, capped. Main thread, one poll loop.
 */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>

#include "clilib.h"
#include "commands.h"
#include "cliutil.h"
#include "fdutil.h"
#include "home.h"
#include "ledger.h"
#include "log.h"
#include "manifest.h"
#include "macro.h"
#include "parse.h"
#include "proto.h"
#include "relay.h"
#include "strv.h"
#include "unixsock.h"
#include "vmlimits.h"
#include "vmproc.h"

/* The default of `capsem run` until capsemd is finished: 0 = direct, 1 = through capsemd. */
#define RUN_DEFAULT_DAEMON 1

struct run_opts {
	uint64_t timeout_ms;
	char **env;
	const char *cpus;
	const char *memory;
	const char *workdir;
	const char *image;
	const char *kernel;
	const char *initrd;
	const char *accel;
	const char *boot_timeout;
	int interactive;
	int shell;
	int verbose;
	int direct;	    /* 1 = --direct (or implied), -1 = --daemon, 0 = the default */
	json_t *mounts;	    /* --mount: [{"host","guest","ro"}] (owned) */
	char *workspace;    /* --workspace, real path (owned) */
	int no_suspendable; /* --no-suspendable: vsock and virtio-fs, a cold boot */
	char **argv;
};

static void run_help(void)
{
	printf("Usage: capsem run [OPTIONS] [--] COMMAND [ARGS...]\n"
	       "       capsem run [OPTIONS] -c 'SHELL COMMAND'\n"
	       "\n"
	       "Boot a new ephemeral microVM, run COMMAND in it as root, and delete the VM.\n"
	       "stdout and stderr stay separate, output is binary-safe, and capsem exits with the\n"
	       "command's exit status (128+N when it was killed by signal N).\n"
	       "\n"
	       "Options:\n"
	       "  -c, --shell          run the single argument with /bin/sh -c\n"
	       "  -e, --env KEY=VALUE  set an environment variable (repeatable; KEY alone copies\n"
	       "                       the host's value)\n"
	       "  -w, --workdir DIR    working directory in the guest (default the workspace,\n"
	       "                       /root/workspace; /root without one)\n"
	       "  -m, --mount HOST:GUEST[:ro]  share host directory HOST at GUEST in the guest\n"
	       "                       (repeatable, up to 8; read-only with :ro)\n"
	       "      --workspace DIR  share DIR as the workspace, /root/workspace in the guest\n"
	       "                       (the command starts there); default: the VM's own\n"
	       "                       directory, deleted with it (--direct: none)\n"
	       "      --no-suspendable  the host channel over vsock and the workspace over\n"
	       "                       virtio-fs, booted cold (by default the VM is restored\n"
	       "                       from a saved boot of its kind, with both over\n"
	       "                       virtio-serial ports: a faster start, slower file I/O)\n"
	       "  -i, --interactive    forward stdin even when it is a terminal (it is forwarded\n"
	       "                       automatically when it is a pipe or a file)\n"
	       "      --timeout SECS   kill the command and all it started after SECS seconds;\n"
	       "                       capsem then exits with 124\n"
	       "      --cpus N         virtual CPUs (default 1)\n"
	       "      --memory SIZE    guest RAM, e.g. 512M or 2G (default 512M)\n"
	       "      --image NAME     image in $CAPSEM_HOME/images, else the package's\n"
	       "                       (default $CAPSEM_IMAGE, else debian when installed,\n"
	       "                       else minimal)\n"
	       "      --kernel FILE    boot this kernel instead of the image's\n"
	       "      --initrd FILE    boot this initramfs instead of the image's\n"
	       "      --accel MODE     auto (default), kvm or tcg\n"
	       "      --boot-timeout SECS  give up if the VM is not ready in time (default 60)\n"
	       "  -v, --verbose        report boot timing on stderr\n"
	       "      --direct         run the VM from this process instead of through capsemd\n"
	       "                       (implied by --kernel/--initrd/--accel/--boot-timeout,\n"
	       "                       and the default when CAPSEM_NO_DAEMON=1)\n"
	       "      --daemon         run the VM through capsemd (started on demand)\n"
	       "  -h, --help           this text\n"
	       "\n"
	       "Exit status: the command's; 124 on timeout; 125 when capsem itself failed.\n"
	       "Ctrl-C is forwarded to the command; a second Ctrl-C stops the VM at once.\n");
}

static int parse_run_args(int argc, char **argv, struct run_opts *o)
{
	enum {
		ARG_TIMEOUT = 256,
		ARG_CPUS,
		ARG_MEM,
		ARG_IMAGE,
		ARG_KERNEL,
		ARG_INITRD,
		ARG_ACCEL,
		ARG_BOOT,
		ARG_DIRECT,
		ARG_DAEMON,
		ARG_WORKSPACE,
		ARG_NO_SUSP
	};
	static const struct option opts[] = { { "shell", no_argument, NULL, 'c' },
					      { "env", required_argument, NULL, 'e' },
					      { "workdir", required_argument, NULL, 'w' },
					      { "mount", required_argument, NULL, 'm' },
					      { "workspace", required_argument, NULL,
						ARG_WORKSPACE },
					      { "interactive", no_argument, NULL, 'i' },
					      { "timeout", required_argument, NULL, ARG_TIMEOUT },
					      { "cpus", required_argument, NULL, ARG_CPUS },
					      { "memory", required_argument, NULL, ARG_MEM },
					      { "image", required_argument, NULL, ARG_IMAGE },
					      { "kernel", required_argument, NULL, ARG_KERNEL },
					      { "initrd", required_argument, NULL, ARG_INITRD },
					      { "accel", required_argument, NULL, ARG_ACCEL },
					      { "boot-timeout", required_argument, NULL, ARG_BOOT },
					      { "verbose", no_argument, NULL, 'v' },
					      { "direct", no_argument, NULL, ARG_DIRECT },
					      { "daemon", no_argument, NULL, ARG_DAEMON },
					      { "no-suspendable", no_argument, NULL, ARG_NO_SUSP },
					      { "help", no_argument, NULL, 'h' },
					      {} };
	uint64_t v;
	uint32_t u;
	int c, implied_direct = 0;

	*o = (struct run_opts){ .image = cli_default_image(), .mounts = json_array() };
	if (!o->mounts)
		return log_oom();
	optind = 1;
	while ((c = getopt_long(argc, argv, "+ce:w:m:ivh", opts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			o->shell = 1;
			break;
		case 'e': {
			int r = cli_parse_env(optarg, &o->env);
			if (r == -ENOMEM)
				return log_oom();
			if (r < 0 && strchr(optarg, '=') == NULL && *optarg)
				return log_error("--env %s: not set on the host", optarg), -EINVAL;
			if (r < 0)
				return log_error("--env: expected KEY=VALUE, got '%s'", optarg),
				       -EINVAL;
			break;
		}
		case 'w':
			if (optarg[0] != '/')
				return log_error("--workdir: expected an absolute guest path"),
				       -EINVAL;
			o->workdir = optarg;
			break;
		case 'i':
			o->interactive = 1;
			break;
		case 'm': {
			/* NOLINTNEXTLINE(clang-analyzer-unix.StdCLibraryFunctions): glibc's getcwd(NULL, 0) allocates */
			_cleanup_free_ char *cwd = getcwd(NULL, 0);
			json_t *m = NULL;
			if (cli_parse_mount(optarg, cwd, &m) < 0)
				return log_error(
					       "--mount: expected HOST:GUEST[:ro] with an absolute "
					       "guest path, got '%s'",
					       optarg),
				       -EINVAL;
			json_array_append_new(o->mounts, m);
			break;
		}
		case ARG_NO_SUSP:
			o->no_suspendable = 1;
			break;
		case ARG_WORKSPACE:
			free(o->workspace);
			o->workspace = NULL;
			if (cli_workspace_path(optarg, &o->workspace) < 0)
				return -EINVAL;
			break;
		case ARG_TIMEOUT:
			if (parse_seconds_ms(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
				return log_error("--timeout: expected seconds > 0 (e.g. 2 or 0.5), "
						 "got '%s'",
						 optarg),
				       -EINVAL;
			o->timeout_ms = v;
			break;
		case ARG_CPUS:
			if (vm_parse_cpus(optarg, &u) < 0)
				return log_error(VM_CPUS_USAGE ", got '%s'", optarg), -EINVAL;
			o->cpus = optarg;
			break;
		case ARG_MEM:
			if (vm_parse_memory_mib(optarg, &v) < 0)
				return log_error(VM_MEMORY_USAGE ", got '%s'", optarg), -EINVAL;
			o->memory = optarg;
			break;
		case ARG_IMAGE:
			if (!*optarg || strchr(optarg, '/') || optarg[0] == '.')
				return log_error("--image: not an image name: '%s'", optarg),
				       -EINVAL;
			o->image = optarg;
			break;
		case ARG_KERNEL:
			o->kernel = optarg;
			implied_direct = 1;
			break;
		case ARG_INITRD:
			o->initrd = optarg;
			implied_direct = 1;
			break;
		case ARG_ACCEL:
			if (!streq(optarg, "auto") && !streq(optarg, "kvm") &&
			    !streq(optarg, "tcg"))
				return log_error("--accel: expected auto, kvm or tcg"), -EINVAL;
			o->accel = optarg;
			implied_direct = 1;
			break;
		case ARG_BOOT:
			if (parse_seconds_ms(optarg, &v) < 0 || v == 0)
				return log_error("--boot-timeout: expected seconds > 0"), -EINVAL;
			o->boot_timeout = optarg;
			implied_direct = 1;
			break;
		case ARG_DIRECT:
			o->direct = 1;
			break;
		case ARG_DAEMON:
			o->direct = -1;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			run_help();
			return 1;
		default:
			return -EINVAL;
		}
	}
	if (optind < argc && streq(argv[optind], "--"))
		optind++;
	if (optind >= argc)
		return log_error("run: no command given (see 'capsem run --help')"), -EINVAL;
	if (o->shell && argc - optind != 1)
		return log_error("run -c: expects exactly one shell command string"), -EINVAL;
	o->argv = argv + optind;
	if (implied_direct && o->direct < 0)
		return log_error(
			       "run: --kernel, --initrd, --accel and --boot-timeout need --direct"),
		       -EINVAL;
	if (implied_direct)
		o->direct = 1;
	if (o->direct == 0) {
		const char *nd = getenv("CAPSEM_NO_DAEMON");
		if (nd && streq(nd, "1"))
			o->direct = 1;
		else if (nd && streq(nd, "0"))
			o->direct = -1;
		else
			o->direct = RUN_DEFAULT_DAEMON ? -1 : 1;
	}
	return 0;
}

/* ---- VM start ---- */

static int make_vmdir(char **ret)
{
	uint8_t rnd[6];
	char *p = NULL;
	_cleanup_free_ char *home = cli_capsem_home();
	if (!home)
		return -ENOMEM;
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return -EIO;
	if (asprintf(&p, "%s/vms/run-%02x%02x%02x%02x%02x%02x", home, rnd[0], rnd[1], rnd[2],
		     rnd[3], rnd[4], rnd[5]) < 0)
		return -ENOMEM;
	int r = mkdir_p(home, 0700);
	if (r < 0) {
		free(p);
		return r;
	}
	*ret = p;
	return 0;
}

static int build_vm_args(const struct run_opts *o, const char *vmdir, char ***ret)
{
	_cleanup_strv_free_ char **a = NULL;
	_cleanup_free_ char *imgdir = NULL, *kernel = NULL, *initrd = NULL, *rootfs = NULL;
	int r = 0;

	if (!o->kernel || !o->initrd) {
		_cleanup_free_ char *err = NULL;
		struct manifest *m = NULL;
		imgdir = cli_image_dir(o->image);
		if (!imgdir)
			return -ENOMEM;
		if (access(imgdir, F_OK) < 0) {
			log_error("image '%s' not found in %s (build it with 'make image' or "
				  "'capsem-builder image')",
				  o->image, imgdir);
			return -ENOENT;
		}
		/* every asset is checked against the image's manifest before it boots */
		r = manifest_verify(imgdir, &err);
		if (r < 0) {
			log_error("image '%s' failed verification: %s", o->image,
				  err ? err : strerror(-r));
			return r;
		}
		r = manifest_load(imgdir, &m);
		if (r < 0)
			return log_error_errno(r, "image '%s': cannot read its manifest", o->image);
		kernel = strdup(m->kernel.path);
		initrd = strdup(m->initrd.path);
		if (m->rootfs.file)
			rootfs = strdup(m->rootfs.path);
		int oom = m->rootfs.file && !rootfs;
		manifest_free(m);
		if (!kernel || !initrd || oom)
			return -ENOMEM;
	}
	r |= strv_push(&a, "--vmdir");
	r |= strv_push(&a, vmdir);
	r |= strv_push(&a, "--rm");
	r |= strv_push(&a, "--kernel");
	r |= strv_push(&a, o->kernel ? o->kernel : kernel);
	r |= strv_push(&a, "--initrd");
	r |= strv_push(&a, o->initrd ? o->initrd : initrd);
	if (rootfs) {
		/* the image's root file system (its manifest has a rootfs asset) */
		r |= strv_push(&a, "--rootfs");
		r |= strv_push(&a, rootfs);
	}
	if (o->cpus) {
		r |= strv_push(&a, "--cpus");
		r |= strv_push(&a, o->cpus);
	}
	if (o->memory) {
		r |= strv_push(&a, "--memory");
		r |= strv_push(&a, o->memory);
	}
	if (o->accel) {
		r |= strv_push(&a, "--accel");
		r |= strv_push(&a, o->accel);
	}
	if (o->boot_timeout) {
		r |= strv_push(&a, "--boot-timeout");
		r |= strv_push(&a, o->boot_timeout);
	}
	if (o->workspace) {
		r |= strv_push(&a, "--workspace");
		r |= strv_push(&a, o->workspace);
	}
	size_t i;
	json_t *m;
	json_array_foreach(o->mounts, i, m)
	{
		r |= strv_push(&a, "--mount");
		r |= strv_pushf(&a, "%s:%s%s", json_string_value(json_object_get(m, "host")),
				json_string_value(json_object_get(m, "guest")),
				json_is_true(json_object_get(m, "ro")) ? ":ro" : "");
	}
	if (r < 0)
		return -ENOMEM;
	*ret = TAKE_PTR(a);
	return 0;
}

static int wait_ready(struct vmproc *vp, int sigfd, const struct run_opts *o)
{
	for (;;) {
		json_t *ev = NULL;
		int r = vmproc_read_event(vp, -1, sigfd, &ev);
		if (r == -EINTR)
			return log_error("interrupted while the VM was booting"), -EINTR;
		if (r == 0)
			return log_error("the VM supervisor exited before the VM was ready"),
			       -EPIPE;
		if (r < 0)
			return log_error_errno(r, "reading VM events");
		const char *e = json_string_value(json_object_get(ev, "event"));
		if (e && streq(e, "ready")) {
			if (o->verbose)
				log_info("VM ready in %.0f ms (%s, kernel %s)",
					 json_real_value(json_object_get(ev, "boot_ms")),
					 json_string_value(json_object_get(ev, "accel")),
					 json_string_value(json_object_get(ev, "kernel_release")));
			vp->ready = ev;
			return 0;
		}
		if (e && streq(e, "error")) {
			const char *tail = json_string_value(json_object_get(ev, "serial_tail"));
			log_error("%s", json_string_value(json_object_get(ev, "message")));
			if (tail && *tail)
				fprintf(stderr, "--- last serial console lines ---\n%s\n---\n",
					tail);
			json_decref(ev);
			return -EIO;
		}
		json_decref(ev);
	}
}

/* ---- through capsemd ---- */

static void delete_vm(const char *id)
{
	_cleanup_free_ char *path = api_vm_path(id, "");
	struct api_conn c;
	struct api_response res;
	if (!path || api_connect(&c) < 0) {
		log_warn("could not delete VM %s (capsemd is gone)", id);
		return;
	}
	int r = api_json(&c, "DELETE", path, NULL, &res);
	api_conn_close(&c);
	if (r < 0) {
		log_warn_errno(r, "could not delete VM %s", id);
		return;
	}
	/* 404: the VM is already gone (an ephemeral VM is deleted when it stops) */
	if (res.head.status / 100 != 2 && res.head.status != 404)
		log_warn("could not delete VM %s: %s", id, api_response_error(&res));
	api_response_done(&res);
}

/* POST /vms, interruptible: a first Ctrl-C waits for the VM to come up and then deletes it, a
 * second one gives up at once. Returns 0 with *ret_id, 130 when interrupted (after cleaning
 * up), or CLI_EXIT_FAILURE (logged). */
static int create_ephemeral(const struct run_opts *o, int sigfd, char **ret_id)
{
	json_t *body = json_pack("{s:s}", "image", o->image);
	_cleanup_free_ char *text = NULL;
	struct api_conn c;
	struct api_response res;
	uint64_t mib;
	int r, interrupted = 0;

	if (!body)
		return log_oom(), CLI_EXIT_FAILURE;
	uint32_t cpus;
	if (o->cpus && parse_u32(o->cpus, &cpus) == 0)
		json_object_set_new(body, "cpus", json_integer(cpus));
	if (o->memory && vm_parse_memory_mib(o->memory, &mib) == 0)
		json_object_set_new(body, "memory", json_integer((json_int_t)mib));
	else if (o->memory)
		json_object_set_new(body, "memory", json_string(o->memory));
	if (o->env) {
		json_t *a = json_array();
		for (char **p = o->env; *p; p++)
			json_array_append_new(a, json_string(*p));
		json_object_set_new(body, "env", a);
	}
	if (json_array_size(o->mounts))
		json_object_set(body, "mounts", o->mounts);
	if (o->workspace)
		json_object_set_new(body, "workspace", json_string(o->workspace));
	if (o->no_suspendable)
		json_object_set_new(body, "suspendable", json_false());
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return log_oom(), CLI_EXIT_FAILURE;
	if (cli_api_open(&c) < 0)
		return CLI_EXIT_FAILURE;
	struct api_req rq = { .method = "POST",
			      .path = "/vms",
			      .content_type = "application/json",
			      .body = text,
			      .body_len = strlen(text),
			      .body_fd = -1,
			      .out_fd = -1 };
	r = api_send_request(&c, &rq);
	c.intr_fd = sigfd;
	while (r == 0) {
		r = api_read_response(&c, &rq, &res);
		if (r != -EINTR)
			break;
		struct signalfd_siginfo si;
		if (read(sigfd, &si, sizeof(si)) != sizeof(si)) {
			r = 0;
			continue;
		}
		r = 0;
		if (++interrupted >= 2) {
			api_conn_close(&c);
			log_error("interrupted twice: leaving the VM to capsemd");
			return 130;
		}
		log_error("interrupted while the VM was booting; it is deleted once up "
			  "(Ctrl-C again to stop waiting)");
	}
	api_conn_close(&c);
	if (r < 0)
		return log_error_errno(r, "creating the VM through capsemd"), CLI_EXIT_FAILURE;
	if (res.head.status / 100 != 2) {
		log_error("%s", api_response_error(&res));
		api_response_done(&res);
		return interrupted ? 130 : CLI_EXIT_FAILURE;
	}
	const char *id = json_string_value(json_object_get(res.json, "id"));
	if (!id) {
		api_response_done(&res);
		return log_error("capsemd did not return the new VM's id"), CLI_EXIT_FAILURE;
	}
	if (interrupted) {
		delete_vm(id);
		api_response_done(&res);
		return 130;
	}
	if (o->verbose)
		log_info("VM %s ready in %.0f ms", id,
			 json_number_value(json_object_get(res.json, "boot_ms")));
	cli_warn_if_emulated(res.json);
	*ret_id = strdup(id);
	api_response_done(&res);
	return *ret_id ? 0 : (log_oom(), CLI_EXIT_FAILURE);
}

static int run_daemon(struct run_opts *o)
{
	_cleanup_free_ char *id = NULL;
	int sigfd = cli_exec_signals(0);
	if (sigfd < 0)
		return log_error_errno(sigfd, "signalfd"), CLI_EXIT_FAILURE;
	int st = create_ephemeral(o, sigfd, &id);
	if (st == 0) {
		struct cli_exec e = { .argv = o->argv,
				      .shell = o->shell,
				      .env = o->env,
				      .cwd = o->workdir,
				      .interactive = o->interactive,
				      .timeout_ms = o->timeout_ms };
		st = cli_exec_run(id, &e, sigfd);
		delete_vm(id);
	}
	safe_close(sigfd);
	return st;
}

/* ---- directly: capsem-vm as our child ---- */

/* --ledger <home>/sessions/<id>-1.db, the run's id being the hex of its run-<hex> directory
 * (docs/LEDGER.md). 1 when added, 0 when the directory has no run id, -errno. */
static int add_ledger_arg(const char *vmdir, char ***args)
{
	const char *base = strrchr(vmdir, '/');
	_cleanup_free_ char *home = cli_capsem_home();
	base = base ? base + 1 : vmdir;
	if (strncmp(base, "run-", 4) != 0)
		return 0;
	if (!home)
		return -ENOMEM;
	int r = strv_push(args, "--ledger");
	r |= strv_pushf(args, "%s/sessions/%s-1.db", home, base + 4);
	r |= strv_push(args, "--guest-env"); /* the run's id, as the daemon gives a VM's */
	r |= strv_pushf(args, "CAPSEM_VM_ID=%s", base + 4);
	return r < 0 ? -ENOMEM : 1;
}

/* The image's name for the session row, to capsem-vm (the ledger's only writer; it records the
 * exec itself from the bytes it relays to the guest). */
static void record_direct_image(struct vmproc *vp, const struct run_opts *o)
{
	char *line = NULL;
	size_t n;
	json_t *session = json_pack("{s:s, s:s}", "kind", "session", "image", o->image);
	if (session && ledger_event_line(session, LEDGER_LINE_MAX, &line, &n) == 0)
		(void)fd_write_all(vp->ipc_fd, line, n);
	json_decref(session);
	free(line);
}

static int run_direct(struct run_opts *o)
{
	_cleanup_free_ char *vm_bin = NULL, *vmdir = NULL, *vsock = NULL;
	_cleanup_strv_free_ char **vm_args = NULL;
	struct vmproc *vp = NULL;
	struct relay rl = { .sock = -1, .sigfd = -1, .ipc = -1, .in_fd = -1 };
	int sock = -1, sigfd = -1, r, status = CLI_EXIT_FAILURE, relaying = 0;

	vm_bin = find_helper_binary("capsem-vm", "CAPSEM_VM_BIN", "vm");
	if (!vm_bin) {
		log_error("cannot find the capsem-vm binary (set CAPSEM_VM_BIN)");
		goto out;
	}
	if (make_vmdir(&vmdir) < 0 || build_vm_args(o, vmdir, &vm_args) < 0)
		goto out;
	int ledger = add_ledger_arg(vmdir, &vm_args);
	if (ledger < 0) {
		log_oom();
		goto out;
	}

	/* signals arrive through a signalfd from here on; children get them unblocked */
	sigfd = cli_exec_signals(0);
	if (sigfd < 0) {
		log_error_errno(sigfd, "signalfd");
		goto out;
	}
	r = vmproc_spawn(vm_bin, vm_args, &vp);
	if (r < 0) {
		log_error_errno(r, "cannot start %s", vm_bin);
		goto out;
	}
	r = wait_ready(vp, sigfd, o);
	if (r < 0) {
		if (r == -EINTR)
			status = 130;
		goto out;
	}
	vsock = strdup(json_string_value(json_object_get(vp->ready, "vsock")));
	sock = vsock ? hvsock_connect(vsock, PROTO_PORT_EXEC, "cli", 30000) : -ENOMEM;
	if (sock < 0) {
		log_error_errno(sock, "cannot connect to the guest agent");
		goto out;
	}
	relay_init(&rl, sock, sigfd);
	relaying = 1;
	rl.ipc = vp->ipc_fd;

	struct proto_exec ex = {
		.flags = o->shell ? PROTO_EXEC_SHELL : 0,
		.timeout_ms = (uint32_t)o->timeout_ms,
		.cwd = (char *)o->workdir,
		.argc = (uint32_t)strv_length(o->argv),
		.argv = o->argv,
		.envc = (uint32_t)strv_length(o->env),
		.envp = o->env,
	};
	r = proto_exec_encode(&ex, &rl.out);
	if (r < 0) {
		log_error("the command line or environment is too large for one exec (limits: %u "
			  "arguments, %u variables, %u KiB each, 1 MiB in all)",
			  PROTO_MAX_ARGS, PROTO_MAX_ENV, PROTO_MAX_STR / 1024);
		goto out;
	}
	if (o->interactive || !isatty(STDIN_FILENO))
		rl.in_fd = STDIN_FILENO;
	else
		relay_send_frame(&rl, PROTO_STDIN, NULL, 0); /* a terminal needs -i */

	if (ledger > 0)
		record_direct_image(vp, o);
	r = relay_run(&rl, o->timeout_ms);
	if (r == -EINTR || r == 0)
		status = relay_exit_status(&rl, r, o->timeout_ms);
out:
	safe_close(sock);
	if (vp) {
		int st = vmproc_stop(vp, 20000);
		if (st != 0 && status == 0)
			log_warn("the VM supervisor exited with status %d", st);
		vmproc_free(vp);
	}
	safe_close(sigfd);
	if (relaying)
		relay_done(&rl);
	return status;
}

/* A machine where `capsem setup` never ran (no $CAPSEM_HOME/setup.json): run anyway when the
 * image is there (the package's 'minimal' one is), with one line about setup on a terminal;
 * when the image is missing, say what to do instead of failing in the daemon. Setup is never
 * started from here: it asks questions, builds for many minutes and may need root. */
static int first_run_check(const struct run_opts *o)
{
	_cleanup_free_ char *home = cli_capsem_home(), *rec = NULL, *dir = NULL, *m = NULL;
	if (!home || asprintf(&rec, "%s/" CLI_SETUP_RECORD, home) < 0)
		return -ENOMEM;
	int set_up = access(rec, F_OK) == 0;
	if (o->kernel && o->initrd)
		return 0;
	dir = cli_image_dir(o->image);
	if (!dir || asprintf(&m, "%s/manifest.json", dir) < 0)
		return log_oom();
	if (access(m, F_OK) < 0) {
		if (set_up)
			log_error(
				"image '%s' not found in %s or %s: 'capsem image list' shows the "
				"installed ones; 'capsem setup --force' installs the default ones",
				o->image, dir, capsem_system_images_dir());
		else
			log_error("image '%s' not found in %s or %s: run 'capsem setup' first (it "
				  "checks this host and installs the images), or 'make image' in a "
				  "source tree",
				  o->image, dir, capsem_system_images_dir());
		return -ENOENT;
	}
	if (!set_up && isatty(STDERR_FILENO))
		log_info("first run: 'capsem setup' checks this host, stores provider keys and "
			 "installs the full 'debian' image (using '%s' meanwhile)",
			 o->image);
	return 0;
}

int cmd_run(int argc, char **argv)
{
	struct run_opts o;
	int r = parse_run_args(argc, argv, &o);
	if (r != 0) {
		strv_free(o.env);
		json_decref(o.mounts);
		free(o.workspace);
		return r > 0 ? 0 : CLI_EXIT_USAGE;
	}
	int st = first_run_check(&o) < 0 ? CLI_EXIT_FAILURE
		 : o.direct > 0		 ? run_direct(&o)
					 : run_daemon(&o);
	strv_free(o.env);
	json_decref(o.mounts);
	free(o.workspace);
	return st;
}

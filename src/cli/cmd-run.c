/* cmd-run.c - "capsem run": boot an ephemeral VM, run one command in it, pass its output and exit
 * status through, and leave nothing behind.
 *
 * The VM is supervised by a capsem-vm child (src/shared/vmproc.c); once it reports ready, this
 * process connects straight to the guest agent through the VM's hybrid-vsock socket and relays
 * the exec session (docs/PROTOCOL.md): stdin -> STDIN frames, STDOUT/STDERR frames -> our fds,
 * signals -> SIGNAL frames, EXIT -> our exit status. Frames come from the guest: hostile, capped.
 * One thread, one poll(2) loop; the socket is non-blocking with a bounded send buffer, so a
 * saturated stdin never blocks the relay of stdout (no deadlock with commands like cat).
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

#include "cli.h"
#include "fdutil.h"
#include "log.h"
#include "manifest.h"
#include "macro.h"
#include "parse.h"
#include "proto.h"
#include "strv.h"
#include "unixsock.h"
#include "vmproc.h"

#define SEND_CAP (1u << 20)
#define RECV_CAP (PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD)

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
	       "  -w, --workdir DIR    working directory in the guest (default /root)\n"
	       "  -i, --interactive    forward stdin even when it is a terminal (it is forwarded\n"
	       "                       automatically when it is a pipe or a file)\n"
	       "      --timeout SECS   kill the command's process group after SECS seconds;\n"
	       "                       capsem then exits with 124\n"
	       "      --cpus N         virtual CPUs (default 1)\n"
	       "      --memory SIZE    guest RAM, e.g. 512M or 2G (default 512M)\n"
	       "      --image NAME     image under $CAPSEM_HOME/images (default minimal)\n"
	       "      --kernel FILE    boot this kernel instead of the image's\n"
	       "      --initrd FILE    boot this initramfs instead of the image's\n"
	       "      --accel MODE     auto (default), kvm or tcg\n"
	       "      --boot-timeout SECS  give up if the VM is not ready in time (default 60)\n"
	       "  -v, --verbose        report boot timing on stderr\n"
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
		ARG_BOOT
	};
	static const struct option opts[] = { { "shell", no_argument, NULL, 'c' },
					      { "env", required_argument, NULL, 'e' },
					      { "workdir", required_argument, NULL, 'w' },
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
					      { "help", no_argument, NULL, 'h' },
					      {} };
	uint64_t v;
	uint32_t u;
	int c;

	*o = (struct run_opts){ .image = "minimal" };
	optind = 1;
	while ((c = getopt_long(argc, argv, "+ce:w:ivh", opts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			o->shell = 1;
			break;
		case 'e': {
			const char *eq = strchr(optarg, '=');
			if (eq == optarg || !*optarg)
				return log_error("--env: expected KEY=VALUE, got '%s'", optarg),
				       -EINVAL;
			if (eq) {
				if (strv_push(&o->env, optarg) < 0)
					return log_oom();
			} else {
				const char *hv = getenv(optarg);
				if (!hv)
					return log_error("--env %s: not set on the host", optarg),
					       -EINVAL;
				if (strv_pushf(&o->env, "%s=%s", optarg, hv) < 0)
					return log_oom();
			}
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
		case ARG_TIMEOUT:
			if (parse_seconds_ms(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
				return log_error("--timeout: expected seconds > 0 (e.g. 2 or 0.5), "
						 "got '%s'",
						 optarg),
				       -EINVAL;
			o->timeout_ms = v;
			break;
		case ARG_CPUS:
			if (parse_u32(optarg, &u) < 0 || u < 1 || u > 64)
				return log_error("--cpus: expected 1..64, got '%s'", optarg),
				       -EINVAL;
			o->cpus = optarg;
			break;
		case ARG_MEM:
			if (parse_size(optarg, &v) < 0 || v < (64u << 20) || v > (1ull << 40))
				return log_error(
					       "--memory: expected a size from 64M to 1T, got '%s'",
					       optarg),
				       -EINVAL;
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
			break;
		case ARG_INITRD:
			o->initrd = optarg;
			break;
		case ARG_ACCEL:
			if (!streq(optarg, "auto") && !streq(optarg, "kvm") &&
			    !streq(optarg, "tcg"))
				return log_error("--accel: expected auto, kvm or tcg"), -EINVAL;
			o->accel = optarg;
			break;
		case ARG_BOOT:
			if (parse_seconds_ms(optarg, &v) < 0 || v == 0)
				return log_error("--boot-timeout: expected seconds > 0"), -EINVAL;
			o->boot_timeout = optarg;
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
	return 0;
}

/* ---- the exec session relay ---- */

struct relay {
	int sock;
	int sigfd;
	int ipc;
	int in_fd; /* -1 when stdin is not forwarded or is done */
	struct buf out;
	struct buf in;
	int stdout_broken;
	int interrupts;
	int got_exit;
	struct proto_exit exit;
	char *error;
};

static int send_frame(struct relay *r, uint16_t type, const void *p, size_t n)
{
	return proto_frame_append(&r->out, type, p, n);
}

static void write_out(struct relay *r, int fd, const uint8_t *p, size_t n)
{
	if (fd == STDOUT_FILENO && r->stdout_broken)
		return;
	if (fd_write_all(fd, p, n) < 0 && fd == STDOUT_FILENO)
		r->stdout_broken = 1; /* keep draining so the guest is never stuck */
}

/* Handle the complete frames in r->in. 0, or -EBADMSG for a protocol violation. */
static int relay_frames(struct relay *r)
{
	uint16_t type;
	const uint8_t *pl;
	uint32_t len;
	ssize_t k;
	while ((k = proto_frame_parse(buf_head(&r->in), buf_len(&r->in), &type, &pl, &len)) > 0) {
		switch (type) {
		case PROTO_STARTED:
			break;
		case PROTO_STDOUT:
			write_out(r, STDOUT_FILENO, pl, len);
			break;
		case PROTO_STDERR:
			write_out(r, STDERR_FILENO, pl, len);
			break;
		case PROTO_EXIT:
			if (proto_exit_decode(pl, len, &r->exit) < 0)
				return -EBADMSG;
			r->got_exit = 1;
			break;
		case PROTO_ERROR: {
			struct proto_error e;
			if (proto_error_decode(pl, len, &e) < 0)
				return -EBADMSG;
			free(r->error);
			if (asprintf(&r->error, "the guest agent refused the command: %s",
				     e.message) < 0)
				r->error = NULL;
			break;
		}
		default:
			return -EBADMSG;
		}
		buf_consume(&r->in, (size_t)k);
	}
	return k < 0 ? -EBADMSG : 0;
}

static int relay_run(struct relay *r, uint64_t timeout_ms)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* the guest enforces the timeout; this is only a backstop if the guest stops answering */
	int64_t backstop_ms = timeout_ms ? (int64_t)timeout_ms + 30000 : -1;

	while (!r->got_exit && !r->error) {
		struct pollfd pf[4] = {
			{ .fd = r->sock, .events = POLLIN | (buf_len(&r->out) ? POLLOUT : 0) },
			{ .fd = r->sigfd, .events = POLLIN },
			{ .fd = r->ipc, .events = POLLIN },
			{ .fd = buf_room(&r->out) >= PROTO_MAX_DATA + PROTO_HDR_SIZE ? r->in_fd
										     : -1,
			  .events = POLLIN },
		};
		int wait = -1;
		if (backstop_ms >= 0) {
			struct timespec t;
			clock_gettime(CLOCK_MONOTONIC, &t);
			int64_t el =
				(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
			if (el >= backstop_ms)
				return log_error("the guest did not report the command's end after "
						 "its timeout"),
				       -ETIMEDOUT;
			wait = (int)(backstop_ms - el);
		}
		int n = poll(pf, 4, wait);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return log_error_errno(negative_errno(), "poll");

		if (pf[1].revents) {
			struct signalfd_siginfo si;
			if (read(r->sigfd, &si, sizeof(si)) == sizeof(si)) {
				if (++r->interrupts >= 2)
					return log_error("interrupted twice: stopping the VM"),
					       -EINTR;
				proto_u32_encode(PROTO_SIGNAL, si.ssi_signo, &r->out);
			}
		}
		if (pf[2].revents) {
			/* the supervisor only speaks now if the VM died */
			return log_error("the VM stopped while the command was running (QEMU "
					 "exited or "
					 "crashed; see the VM's serial log)"),
			       -EPIPE;
		}
		if (pf[3].revents) {
			uint8_t tmp[PROTO_MAX_DATA];
			ssize_t k = fd_read_some(r->in_fd, tmp, sizeof(tmp));
			if (k <= 0) {
				send_frame(r, PROTO_STDIN, NULL, 0);
				r->in_fd = -1;
			} else {
				send_frame(r, PROTO_STDIN, tmp, (size_t)k);
			}
		}
		if (pf[0].revents & POLLOUT && buf_len(&r->out)) {
			ssize_t k = write(r->sock, buf_head(&r->out), buf_len(&r->out));
			if (k > 0)
				buf_consume(&r->out, (size_t)k);
			else if (k < 0 && errno != EAGAIN && errno != EINTR && errno != EPIPE)
				return log_error_errno(negative_errno(), "sending to the guest");
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			uint8_t *dst = buf_reserve(&r->in, 65536);
			if (!dst)
				return log_error("the guest sent an oversized frame"), -EBADMSG;
			ssize_t k = read(r->sock, dst, 65536);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (k <= 0) {
				if (relay_frames(r) < 0)
					return log_error("protocol error from the guest agent"),
					       -EBADMSG;
				if (!r->got_exit && !r->error)
					return log_error("the connection to the guest agent was "
							 "lost"),
					       -EPIPE;
				break;
			}
			buf_commit(&r->in, (size_t)k);
			if (relay_frames(r) < 0)
				return log_error("protocol error from the guest agent"), -EBADMSG;
		}
	}
	if (r->error)
		return log_error("%s", r->error), -EPROTO;
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
	_cleanup_free_ char *imgdir = NULL, *kernel = NULL, *initrd = NULL;
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
		manifest_free(m);
		if (!kernel || !initrd)
			return -ENOMEM;
	}
	r |= strv_push(&a, "--vmdir");
	r |= strv_push(&a, vmdir);
	r |= strv_push(&a, "--rm");
	r |= strv_push(&a, "--kernel");
	r |= strv_push(&a, o->kernel ? o->kernel : kernel);
	r |= strv_push(&a, "--initrd");
	r |= strv_push(&a, o->initrd ? o->initrd : initrd);
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

int cmd_run(int argc, char **argv)
{
	struct run_opts o;
	_cleanup_free_ char *vm_bin = NULL, *vmdir = NULL, *vsock = NULL;
	_cleanup_strv_free_ char **vm_args = NULL;
	struct vmproc *vp = NULL;
	struct relay rl = { .sock = -1, .sigfd = -1, .ipc = -1, .in_fd = -1 };
	int r, status = CLI_EXIT_FAILURE;

	r = parse_run_args(argc, argv, &o);
	if (r != 0) {
		strv_free(o.env);
		return r > 0 ? 0 : CLI_EXIT_USAGE;
	}
	vm_bin = find_helper_binary("capsem-vm", "CAPSEM_VM_BIN", "vm");
	if (!vm_bin) {
		log_error("cannot find the capsem-vm binary (set CAPSEM_VM_BIN)");
		goto out;
	}
	if (make_vmdir(&vmdir) < 0 || build_vm_args(&o, vmdir, &vm_args) < 0)
		goto out;

	/* signals arrive through a signalfd from here on; children get them unblocked */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	rl.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	struct sigaction sa = { .sa_handler = SIG_IGN };
	sigaction(SIGPIPE, &sa, NULL);

	r = vmproc_spawn(vm_bin, vm_args, &vp);
	if (r < 0) {
		log_error_errno(r, "cannot start %s", vm_bin);
		goto out;
	}
	r = wait_ready(vp, rl.sigfd, &o);
	if (r < 0) {
		if (r == -EINTR)
			status = 130;
		goto out;
	}
	vsock = strdup(json_string_value(json_object_get(vp->ready, "vsock")));
	rl.sock = vsock ? hvsock_connect(vsock, PROTO_PORT_EXEC, 30000) : -ENOMEM;
	if (rl.sock < 0) {
		log_error_errno(rl.sock, "cannot connect to the guest agent");
		goto out;
	}
	fd_set_nonblock(rl.sock, 1);
	rl.ipc = vp->ipc_fd;
	buf_init(&rl.out, SEND_CAP);
	buf_init(&rl.in, RECV_CAP);

	struct proto_exec ex = {
		.flags = o.shell ? PROTO_EXEC_SHELL : 0,
		.timeout_ms = (uint32_t)o.timeout_ms,
		.cwd = (char *)o.workdir,
		.argc = (uint32_t)strv_length(o.argv),
		.argv = o.argv,
		.envc = (uint32_t)strv_length(o.env),
		.envp = o.env,
	};
	r = proto_exec_encode(&ex, &rl.out);
	if (r < 0) {
		log_error("the command line or environment is too large for one exec (limits: %u "
			  "arguments, %u variables, %u KiB each, 1 MiB in all)",
			  PROTO_MAX_ARGS, PROTO_MAX_ENV, PROTO_MAX_STR / 1024);
		goto out;
	}
	if (o.interactive || !isatty(STDIN_FILENO))
		rl.in_fd = STDIN_FILENO;
	else
		send_frame(&rl, PROTO_STDIN, NULL, 0); /* a terminal is not forwarded without -i */

	r = relay_run(&rl, o.timeout_ms);
	if (r == -EINTR)
		status = 130;
	else if (r == 0) {
		status = proto_exit_status(&rl.exit);
		if (rl.exit.kind == PROTO_EXIT_TIMEOUT)
			log_error("command timed out after %.3g s; its process group was killed",
				  o.timeout_ms / 1000.0);
	}
out:
	safe_close(rl.sock);
	if (vp) {
		int st = vmproc_stop(vp, 20000);
		if (st != 0 && status == 0)
			log_warn("the VM supervisor exited with status %d", st);
		vmproc_free(vp);
	}
	safe_close(rl.sigfd);
	buf_done(&rl.out, 0);
	buf_done(&rl.in, 0);
	free(rl.error);
	strv_free(o.env);
	return status;
}

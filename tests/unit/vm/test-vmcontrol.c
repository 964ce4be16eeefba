/* test-vmcontrol.c - capsem-vm's side toward its parent and the daemon (src/vm/vmcontrol.c,
 * with src/vm/watch.c) on a real libuv loop and real sockets, vm_stop() stubbed: the --control
 * socket (0600, a path in the VM directory shortened to its base name), the state line a new
 * client gets first (booting, then ready; the first error wins over ready), events to every
 * client and to the parent fd, stop commands from a client and from the parent, clients dropped
 * for a line that is not JSON or is too long, the client limit, the parent's EOF, supervisor.pid,
 * and close (clients see EOF, the socket file goes); the ledger's commit notices as "ledger"
 * events to the control clients only, at once and then coalesced. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "capsem-vm.h"
#include "fdutil.h"
#include "ledger.h"
#include "unixsock.h"

static char stopped[64];
static int n_stops;

/* the stub: capsem-vm.c's vm_stop */
void vm_stop(struct vm *vm, const char *why)
{
	snprintf(stopped, sizeof(stopped), "%s", why);
	n_stops++;
}

/* the stub: vmsuspend.c's vm_suspend (a command reaches it) */
static int n_suspends;
void vm_suspend(struct vm *vm)
{
	(void)vm;
	n_suspends++;
}

/* Run the loop until fd has a whole line (returned, without the newline) or is closed (NULL). */
static char *read_line(uv_loop_t *loop, int fd)
{
	static char buf[8192];
	size_t n = 0;
	for (int i = 0; i < 2000; i++) {
		(void)uv_run(loop, UV_RUN_NOWAIT);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 5) <= 0)
			continue;
		ssize_t k = read(fd, buf + n, 1);
		if (k == 0 || (k < 0 && errno == ECONNRESET)) /* closed (unread bytes: a reset) */
			return NULL;
		assert_true(k == 1);
		if (buf[n] == '\n') {
			buf[n] = 0;
			return buf;
		}
		assert_true(++n < sizeof(buf));
	}
	fail_msg("no line on fd %d", fd);
	return NULL;
}

static void spin(uv_loop_t *loop)
{
	for (int i = 0; i < 20; i++)
		(void)uv_run(loop, UV_RUN_NOWAIT);
}

static void test_control(void **state)
{
	char dir[] = "/tmp/capsem-vmctl-XXXXXX", cwd[PATH_MAX], abs[PATH_MAX + 16];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chdir(dir), 0);
	char *real = realpath(dir, NULL);
	assert_non_null(real);
	snprintf(abs, sizeof(abs), "%s/ctl.sock", real);

	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	int ipc[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ipc), 0);
	struct vm vm = { .loop = &loop, .state = VM_BOOTING, .vmdir_abs = real };
	vm.o.vmdir = dir;
	vm.o.ipc_fd = ipc[0];
	vm.o.control = abs;
	vm.o.control_fd = -1;
	vm.w_ipc = watch_new(&vm, dup(ipc[0]), UV_READABLE, 4096, vm_on_ipc);
	assert_non_null(vm.w_ipc);

	assert_int_equal(vm_control_open(&vm), 0);
	assert_string_equal(vm.control_path, "ctl.sock"); /* fits sun_path whatever the dir */
	struct stat st;
	assert_int_equal(stat("ctl.sock", &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* a new client first gets the state: booting */
	int c1 = unix_connect("ctl.sock", 0);
	assert_true(c1 >= 0);
	assert_string_equal(read_line(&loop, c1), "{\"event\":\"booting\"}");

	/* events go to the parent and every client; ready becomes the state line */
	vm_emit(&vm, json_pack("{s:s, s:i}", "event", "ready", "n", 1));
	assert_string_equal(read_line(&loop, ipc[1]), "{\"event\":\"ready\",\"n\":1}");
	assert_string_equal(read_line(&loop, c1), "{\"event\":\"ready\",\"n\":1}");
	int c2 = unix_connect("ctl.sock", 0);
	assert_string_equal(read_line(&loop, c2), "{\"event\":\"ready\",\"n\":1}");

	/* the first error wins over a later ready */
	vm_emit(&vm, json_pack("{s:s, s:s}", "event", "error", "message", "boom"));
	vm_emit(&vm, json_pack("{s:s, s:i}", "event", "ready", "n", 2));
	int c3 = unix_connect("ctl.sock", 0);
	assert_string_equal(read_line(&loop, c3), "{\"event\":\"error\",\"message\":\"boom\"}");
	for (int i = 0; i < 2; i++) {
		assert_non_null(read_line(&loop, c1));
		assert_non_null(read_line(&loop, c2));
		assert_non_null(read_line(&loop, ipc[1]));
	}

	/* a client's stop command (a ledger event without a ledger is ignored) */
	const char *cmds = "{\"cmd\":\"ledger\",\"event\":{}}\n{\"cmd\":\"suspend\"}\n"
			   "{\"cmd\":\"stop\"}\n";
	assert_int_equal(write(c1, cmds, strlen(cmds)), (ssize_t)strlen(cmds));
	for (int i = 0; i < 200 && n_stops == 0; i++)
		spin(&loop);
	assert_int_equal(n_stops, 1);
	assert_int_equal(n_suspends, 1); /* a suspend is not a stop */
	assert_string_equal(stopped, "requested");

	/* a line that is not JSON, or one that is too long: that client is dropped */
	assert_int_equal(write(c2, "nope\n", 5), 5);
	assert_null(read_line(&loop, c2));
	char big[CONTROL_LINE_MAX + 16];
	memset(big, 'x', sizeof(big));
	assert_int_equal(write(c3, big, sizeof(big)), (ssize_t)sizeof(big));
	assert_null(read_line(&loop, c3));
	assert_int_equal(n_stops, 1); /* a client going away never stops the VM */

	/* the client limit: c1 and CONTROL_MAX_CLIENTS - 1 more, then one is refused */
	int more[CONTROL_MAX_CLIENTS];
	for (int i = 0; i < CONTROL_MAX_CLIENTS - 1; i++) {
		more[i] = unix_connect("ctl.sock", 0);
		assert_non_null(read_line(&loop, more[i]));
	}
	int extra = unix_connect("ctl.sock", 0);
	assert_null(read_line(&loop, extra));
	close(extra);

	/* supervisor.pid */
	assert_int_equal(vm_pid_file_write(&vm), 0);
	char pid[32] = { 0 };
	int pf = open("supervisor.pid", O_RDONLY | O_CLOEXEC);
	assert_true(pf >= 0);
	assert_true(read(pf, pid, sizeof(pid) - 1) > 0);
	close(pf);
	char want[32];
	snprintf(want, sizeof(want), "%d\n", (int)getpid());
	assert_string_equal(pid, want);
	unlink("supervisor.pid");

	/* the parent: a stop command, then EOF */
	assert_int_equal(write(ipc[1], "{\"cmd\":\"stop\"}\n", 15), 15);
	for (int i = 0; i < 200 && n_stops == 1; i++)
		spin(&loop);
	assert_int_equal(n_stops, 2);
	assert_string_equal(stopped, "requested");
	close(ipc[1]);
	for (int i = 0; i < 200 && n_stops == 2; i++)
		spin(&loop);
	assert_int_equal(n_stops, 3);
	assert_string_equal(stopped, "parent closed");
	assert_null(vm.w_ipc);

	/* close: every client sees EOF, the socket file goes */
	vm_control_close(&vm);
	assert_null(read_line(&loop, c1));
	for (int i = 0; i < CONTROL_MAX_CLIENTS - 1; i++) {
		assert_null(read_line(&loop, more[i]));
		close(more[i]);
	}
	assert_int_equal(stat("ctl.sock", &st), -1);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	close(c1);
	close(c2);
	close(c3);
	close(ipc[0]);
	free(vm.state_line);
	free(real);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* --control-fd: a socket our parent listens on is adopted; anything else is refused. */
static void test_control_fd(void **state)
{
	char dir[] = "/tmp/capsem-vmctl-XXXXXX", cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chdir(dir), 0);
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct vm vm = { .loop = &loop, .state = VM_BOOTING, .vmdir_abs = dir };
	vm.o.ipc_fd = -1;
	vm.o.control = "ctl.sock";

	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	vm.o.control_fd = sp[0];
	assert_true(vm_control_open(&vm) < 0);
	assert_null(vm.control_path);
	assert_int_equal(vm.o.control_fd, -1);
	close(sp[1]);

	vm.o.control_fd = unix_listen("ctl.sock", 4);
	assert_true(vm.o.control_fd >= 0);
	assert_int_equal(vm_control_open(&vm), 0);
	int c = unix_connect("ctl.sock", 0);
	assert_string_equal(read_line(&loop, c), "{\"event\":\"booting\"}");
	vm_control_close(&vm);
	assert_null(read_line(&loop, c));
	close(c);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rmdir(dir), 0);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void add_dns(struct ledger *l)
{
	struct ledger_dns d = LEDGER_DNS_INIT;
	d.qname = "x.example";
	assert_int_equal(ledger_dns(l, &d), 0);
}

/* Commits of a real ledger become {"event":"ledger","last_id":N} lines for the control clients
 * (not the parent): the first at once, a burst coalesced into at most one per LEDGER_EVENT_MS,
 * and the last one sent when the ledger closes. */
static void test_ledger_events(void **state)
{
	char dir[] = "/tmp/capsem-vmctl-XXXXXX", cwd[PATH_MAX], db[PATH_MAX + 16];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chdir(dir), 0);
	snprintf(db, sizeof(db), "%s/s/0123456789ab-1.db", dir);
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	int ipc[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ipc), 0);
	struct vm vm = { .loop = &loop, .state = VM_READY, .vmdir_abs = dir };
	vm.o.ipc_fd = ipc[0];
	vm.o.control = "ctl.sock";
	vm.o.control_fd = -1;
	assert_int_equal(vm_control_open(&vm), 0);
	assert_int_equal(ledger_open(db, &vm.ledger), 0);
	assert_int_equal(vm_ledger_events_start(&vm), 0);
	int c = unix_connect("ctl.sock", 0);
	assert_true(c >= 0);
	assert_string_equal(read_line(&loop, c), "{\"event\":\"booting\"}");

	/* one commit: its event comes at once (well within the batch window and a loop turn) */
	uint64_t t0 = now_ms();
	add_dns(vm.ledger);
	assert_string_equal(read_line(&loop, c), "{\"event\":\"ledger\",\"last_id\":1}");
	assert_true(now_ms() - t0 < 2000);

	/* a burst of commits right after: one event when the LEDGER_EVENT_MS spell ends, with
	 * the last id */
	for (int i = 0; i < 5; i++) {
		add_dns(vm.ledger);
		ledger_flush(vm.ledger);
	}
	assert_string_equal(read_line(&loop, c), "{\"event\":\"ledger\",\"last_id\":6}");

	/* close: the last commits' event goes out before the handles close */
	add_dns(vm.ledger);
	ledger_close(vm.ledger);
	vm.ledger = NULL;
	vm_ledger_events_stop(&vm);
	assert_string_equal(read_line(&loop, c), "{\"event\":\"ledger\",\"last_id\":7}");

	/* the parent got none of them */
	struct pollfd p = { .fd = ipc[1], .events = POLLIN };
	assert_int_equal(poll(&p, 1, 0), 0);

	vm_control_close(&vm);
	assert_null(read_line(&loop, c));
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	close(c);
	close(ipc[0]);
	close(ipc[1]);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rm_rf(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_control),
		cmocka_unit_test(test_control_fd),
		cmocka_unit_test(test_ledger_events),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

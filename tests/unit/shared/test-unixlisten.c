/* test-unixlisten.c - the shared Unix-socket listener (src/shared/unixlisten.c) on a real libuv
 * loop: connections handed over non-blocking and CLOEXEC, every waiting one per notice or one
 * per notice (max_per_wake), an inherited listening socket adopted and a non-listening one
 * refused, close (callback, socket file left to the owner), and a path too long for sun_path. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "unixlisten.h"
#include "unixsock.h"

struct owner {
	int fds[8];
	size_t n;
	int closed;
};

static void on_accept(struct unix_listener *l, int fd)
{
	struct owner *o = l->userdata;
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_true(o->n < 8);
	o->fds[o->n++] = fd;
}

static void on_close(struct unix_listener *l)
{
	struct owner *o = l->userdata;
	o->closed++;
}

static void sock_path(char *buf, size_t cap, char *dir)
{
	assert_non_null(mkdtemp(dir));
	snprintf(buf, cap, "%s/l.sock", dir);
}

static void run(unsigned max_per_wake)
{
	char dir[] = "/tmp/capsem-ul-XXXXXX", path[64];
	sock_path(path, sizeof(path), dir);
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct owner o = { 0 };
	struct unix_listener l = { .userdata = &o };
	assert_int_equal(unix_listener_open(&l, &loop, path, 8, max_per_wake, on_accept), 0);
	assert_true(l.open);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	int c[3];
	for (int i = 0; i < 3; i++)
		assert_true((c[i] = unix_connect(path, 0)) >= 0);
	(void)uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(o.n, max_per_wake ? max_per_wake : 3);
	while (o.n < 3)
		(void)uv_run(&loop, UV_RUN_NOWAIT);
	assert_int_equal(o.n, 3);
	/* the accepted fds are the clients' peers */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(write(c[i], "x", 1), 1);
		char b;
		assert_int_equal(read(o.fds[i], &b, 1), 1);
	}
	unix_listener_close(&l, on_close);
	assert_false(l.open);
	unix_listener_close(&l, on_close); /* again: nothing */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(o.closed, 1);
	assert_int_equal(stat(path, &st), 0); /* the owner unlinks */
	assert_true(unix_connect(path, 0) < 0);
	for (int i = 0; i < 3; i++) {
		close(c[i]);
		close(o.fds[i]);
	}
	assert_int_equal(uv_loop_close(&loop), 0);
	unlink(path);
	rmdir(dir);
}

static void test_accept_all(void **state)
{
	run(0);
}

static void test_one_per_wake(void **state)
{
	run(1);
}

static void test_adopt(void **state)
{
	char dir[] = "/tmp/capsem-ul-XXXXXX", path[64];
	sock_path(path, sizeof(path), dir);
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct owner o = { 0 };
	struct unix_listener l = { .userdata = &o };

	/* not a listening socket: refused and closed */
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
	assert_int_equal(unix_listener_adopt(&l, &loop, sp[0], 0, on_accept), -ENOTSOCK);
	assert_int_equal(fcntl(sp[0], F_GETFD), -1); /* closed */
	close(sp[1]);
	assert_false(l.open);
	unix_listener_close(&l, on_close); /* not open: nothing */

	/* a listening one (blocking, no CLOEXEC, as a parent may pass it) */
	int fd = unix_listen(path, 4);
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, 0), 0);
	assert_int_equal(fcntl(fd, F_SETFD, 0), 0);
	assert_int_equal(unix_listener_adopt(&l, &loop, fd, 0, on_accept), 0);
	assert_true(l.userdata == &o);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	int c = unix_connect(path, 0);
	assert_true(c >= 0);
	while (o.n < 1)
		(void)uv_run(&loop, UV_RUN_NOWAIT);
	unix_listener_close(&l, NULL);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(o.closed, 0);
	close(c);
	close(o.fds[0]);
	assert_int_equal(uv_loop_close(&loop), 0);
	unlink(path);
	rmdir(dir);
}

static void test_path_too_long(void **state)
{
	char path[200];
	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = 0;
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct unix_listener l = { 0 };
	assert_int_equal(unix_listener_open(&l, &loop, path, 4, 0, on_accept), -ENAMETOOLONG);
	assert_false(l.open);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_all),
		cmocka_unit_test(test_one_per_wake),
		cmocka_unit_test(test_adopt),
		cmocka_unit_test(test_path_too_long),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

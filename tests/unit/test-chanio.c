/* test-chanio.c - the host's end of the channel mux on descriptors (src/chan/chanio.c) against a
 * guest played by the test on a socketpair: a guest that breaks the protocol gets its streams
 * reset and is waited for (no new stream meanwhile, nothing it sends is taken) until its end
 * starts over with a HELLO carrying a nonce, which is answered; then streams work again. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "chanio.h"
#include "chanmux.h"

static int local[2] = { -1, -1 }; /* the host process a guest stream reaches */
static uint32_t opened_port;

static int open_local(void *userdata, uint32_t port, const char *tag)
{
	(void)userdata;
	(void)tag;
	opened_port = port;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, local), 0);
	return local[0];
}

/* Let the host take what the guest wrote and send what it has. */
static void host_turn(struct chanio *c, int hfd)
{
	assert_int_equal(chanio_ready(c, hfd, POLLIN | POLLOUT), 0);
}

/* What the host sent, read from the guest's end (nonblocking: what is there). */
static size_t guest_read(int gfd, uint8_t *p, size_t cap)
{
	size_t n = 0;
	for (;;) {
		ssize_t k = recv(gfd, p + n, cap - n, MSG_DONTWAIT);
		if (k <= 0)
			return n;
		n += (size_t)k;
	}
}

static void frame(int gfd, uint8_t type, uint32_t id, uint32_t value, const char *tag)
{
	struct buf b = BUF_INIT(256);
	struct chanmux_frame f = { .type = type, .id = id, .value = value };
	snprintf(f.tag, sizeof(f.tag), "%s", tag ? tag : "");
	assert_int_equal(chanmux_frame_append(&b, &f), 0);
	assert_int_equal(write(gfd, buf_head(&b), buf_len(&b)), (ssize_t)buf_len(&b));
	buf_done(&b, 0);
}

static void test_a_broken_guest_is_waited_for(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	int hfd = sv[0], gfd = sv[1];
	struct chanio_ops ops = { .open_local = open_local };
	struct chanio *c = NULL;
	assert_int_equal(chanio_new(CHANMUX_SIDE_HOST, hfd, &ops, &c), 0);
	static uint8_t rx[1 << 16];
	host_turn(c, hfd);
	size_t n = guest_read(gfd, rx, sizeof(rx));
	assert_int_equal(n, CHANMUX_HDR + 4); /* the host's plain HELLO */
	assert_false(chanio_syncing(c));

	/* an old-style session: the guest's plain HELLO, then a malformed frame (type 99) */
	frame(gfd, CHANMUX_HELLO, 0, CHANMUX_VERSION, NULL);
	static const uint8_t junk[CHANMUX_HDR] = { 99, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	assert_int_equal(write(gfd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	host_turn(c, hfd);
	assert_true(chanio_syncing(c));
	/* meanwhile no stream opens toward the guest, and what it sends is not taken */
	int p[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p), 0);
	assert_int_equal(chanio_connect(c, p[0], 5001, "exec", true), -EAGAIN);
	close(p[1]);
	frame(gfd, CHANMUX_OPEN, CHANMUX_GUEST_BIT | 1, 5000, "");
	host_turn(c, hfd);
	assert_int_equal(opened_port, 0);
	assert_int_equal(chanio_count(c), 0);

	/* the guest's end starts over: HELLO with a nonce, answered with it */
	uint8_t hello[CHANMUX_HELLO_MAX];
	size_t hn = chanmux_hello_bytes(0xabcdef01, hello);
	assert_int_equal(write(gfd, hello, hn), (ssize_t)hn);
	host_turn(c, hfd);
	assert_false(chanio_syncing(c));
	n = guest_read(gfd, rx, sizeof(rx));
	size_t skip = 0;
	assert_int_equal(chanmux_sync(rx, n, 0xabcdef01, &skip), 1);
	assert_int_equal(skip + CHANMUX_HELLO_MAX, n);

	/* streams again: the guest opens one to port 5000, the host connects it and accepts */
	frame(gfd, CHANMUX_OPEN, CHANMUX_GUEST_BIT | 2, 5000, "");
	host_turn(c, hfd);
	assert_int_equal(opened_port, 5000);
	assert_int_equal(chanio_count(c), 1);
	assert_int_equal(chanio_ready(c, local[0], POLLOUT), 0);
	n = guest_read(gfd, rx, sizeof(rx));
	struct chanmux_frame f;
	assert_int_equal(chanmux_frame_parse(rx, n, &f), (ssize_t)CHANMUX_HDR);
	assert_int_equal(f.type, CHANMUX_ACCEPT);
	assert_int_equal(f.id, CHANMUX_GUEST_BIT | 2);

	/* the guest's end starts over again in the middle: the stream is reset */
	hn = chanmux_hello_bytes(7, hello);
	assert_int_equal(write(gfd, hello, hn), (ssize_t)hn);
	host_turn(c, hfd);
	assert_int_equal(chanio_count(c), 0);
	char eof;
	assert_int_equal(read(local[1], &eof, 1), 0); /* the local end saw it close */
	n = guest_read(gfd, rx, sizeof(rx));
	assert_int_equal(chanmux_sync(rx, n, 7, &skip), 1);

	close(local[1]);
	chanio_free(c);
	close(gfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_broken_guest_is_waited_for),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test-chanmux.c - the channel mux (src/proto/chanmux.c): a host and a guest mux wired back to
 * back in memory; streams both ways, flow control by credit, half close, refusal, the peer's
 * misuse of a stream resetting that stream only, and a guest's end that starts over. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "chanmux.h"
#include "macro.h"

struct side {
	struct chanmux *m;
	struct buf out; /* frames to the other side */
	struct chanmux_ev ev[64];
	size_t n_ev;
	uint8_t rx[1 << 20];
	size_t n_rx;
};

static struct side host, guest;

/* Deliver what from sent to to (all whole frames), recording to's events. */
static void pump(struct side *from, struct side *to)
{
	while (buf_len(&from->out)) {
		struct chanmux_frame f;
		ssize_t k = chanmux_frame_parse(buf_head(&from->out), buf_len(&from->out), &f);
		assert_true(k > 0);
		struct chanmux_ev ev;
		assert_int_equal(chanmux_input(to->m, &f, &to->out, &ev), 0);
		if (ev.type == CHANMUX_EV_DATA) {
			assert_true(to->n_rx + ev.len <= sizeof(to->rx));
			memcpy(to->rx + to->n_rx, ev.data, ev.len);
			to->n_rx += ev.len;
		}
		if (ev.type != CHANMUX_EV_NONE && to->n_ev < ELEMENTSOF(to->ev))
			to->ev[to->n_ev++] = ev;
		buf_consume(&from->out, (size_t)k);
	}
}

static void both(void)
{
	for (int i = 0; i < 4; i++) {
		pump(&host, &guest);
		pump(&guest, &host);
	}
}

static int setup(void **state)
{
	(void)state;
	memset(&host, 0, sizeof(host));
	memset(&guest, 0, sizeof(guest));
	buf_init(&host.out, 16u << 20);
	buf_init(&guest.out, 16u << 20);
	assert_int_equal(chanmux_new(CHANMUX_SIDE_HOST, &host.out, &host.m), 0);
	assert_int_equal(chanmux_new(CHANMUX_SIDE_GUEST, &guest.out, &guest.m), 0);
	both(); /* HELLOs */
	assert_int_equal(host.n_ev + guest.n_ev, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	chanmux_free(host.m);
	chanmux_free(guest.m);
	buf_done(&host.out, 0);
	buf_done(&guest.out, 0);
	return 0;
}

static void test_stream_both_ways(void **state)
{
	(void)state;
	uint32_t id;
	assert_int_equal(chanmux_open(host.m, 5001, "cli", &host.out, &id), 0);
	assert_int_equal(id & CHANMUX_GUEST_BIT, 0);
	assert_int_equal(chanmux_room(host.m, id), 0); /* not before ACCEPT */
	pump(&host, &guest);
	assert_int_equal(guest.n_ev, 1);
	assert_int_equal(guest.ev[0].type, CHANMUX_EV_OPEN);
	assert_int_equal(guest.ev[0].port, 5001);
	assert_string_equal(guest.ev[0].tag, "cli");
	assert_int_equal(chanmux_accept(guest.m, id, &guest.out), 0);
	assert_int_equal(chanmux_send(guest.m, id, "hello", 5, &guest.out), 5);
	pump(&guest, &host);
	assert_int_equal(host.ev[0].type, CHANMUX_EV_ACCEPTED);
	assert_int_equal(host.ev[1].type, CHANMUX_EV_DATA);
	assert_memory_equal(host.rx, "hello", 5);
	assert_int_equal(chanmux_room(host.m, id), CHANMUX_WINDOW);
	/* half close one way; the other goes on */
	assert_int_equal(chanmux_shutdown(host.m, id, &host.out), 0);
	assert_int_equal(chanmux_send(host.m, id, "x", 1, &host.out), -EPIPE);
	pump(&host, &guest);
	assert_int_equal(guest.ev[1].type, CHANMUX_EV_EOF);
	assert_int_equal(chanmux_send(guest.m, id, " world", 6, &guest.out), 6);
	assert_int_equal(chanmux_close(guest.m, id, 0, &guest.out), 0);
	pump(&guest, &host);
	assert_memory_equal(host.rx, "hello world", 11);
	assert_int_equal(host.ev[host.n_ev - 1].type, CHANMUX_EV_CLOSED);
	assert_int_equal(chanmux_count(host.m) + chanmux_count(guest.m), 0);
}

/* The window: a sender stops at CHANMUX_WINDOW bytes until the reader's consumption comes back
 * as credit; 1 MiB crosses intact. */
static void test_flow_control(void **state)
{
	(void)state;
	static uint8_t big[1 << 20];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 31 + 7);
	uint32_t id;
	assert_int_equal(chanmux_open(guest.m, 5002, "", &guest.out, &id), 0);
	assert_int_equal(id & CHANMUX_GUEST_BIT, CHANMUX_GUEST_BIT);
	pump(&guest, &host);
	assert_int_equal(chanmux_accept(host.m, id, &host.out), 0);
	pump(&host, &guest);
	size_t sent = 0;
	int rounds = 0;
	while (sent < sizeof(big)) {
		ssize_t k = chanmux_send(guest.m, id, big + sent, sizeof(big) - sent, &guest.out);
		assert_true(k >= 0);
		assert_true((size_t)k <= CHANMUX_WINDOW);
		sent += (size_t)k;
		size_t before = host.n_rx;
		pump(&guest, &host);
		/* the host's reader takes it all; its credit goes back */
		assert_int_equal(chanmux_consumed(host.m, id, host.n_rx - before, &host.out), 0);
		pump(&host, &guest);
		rounds++;
		assert_true(rounds < 100);
	}
	assert_int_equal(host.n_rx, sizeof(big));
	assert_memory_equal(host.rx, big, sizeof(big));
	assert_true(rounds >= 4); /* it did wait for credit */
	assert_int_equal(chanmux_consumed(host.m, id, 1, &host.out), -EINVAL); /* no more came */
}

/* Misuse resets the stream, not the mux: over-sending, data after SHUTW, an id of our half. */
static void test_misuse_resets(void **state)
{
	(void)state;
	uint32_t id;
	assert_int_equal(chanmux_open(host.m, 5001, "", &host.out, &id), 0);
	pump(&host, &guest);
	assert_int_equal(chanmux_accept(guest.m, id, &guest.out), 0);
	pump(&guest, &host);
	/* a forged DATA past the window from the guest */
	static uint8_t junk[CHANMUX_MAX_DATA];
	struct chanmux_frame f = {
		.type = CHANMUX_DATA, .id = id, .data = junk, .len = CHANMUX_MAX_DATA
	};
	struct buf forged = BUF_INIT(16u << 20);
	for (int i = 0; i < 5; i++)
		assert_int_equal(chanmux_frame_append(&forged, &f), 0);
	struct chanmux_ev ev;
	struct buf reply = BUF_INIT(1 << 16);
	const uint8_t *p = buf_head(&forged);
	for (int i = 0; i < 5; i++) {
		struct chanmux_frame g;
		ssize_t k = chanmux_frame_parse(p, buf_len(&forged), &g);
		assert_true(k > 0);
		assert_int_equal(chanmux_input(host.m, &g, &reply, &ev), 0);
		p += k;
		if (i < 4)
			assert_int_equal(ev.type, CHANMUX_EV_DATA);
	}
	assert_int_equal(ev.type, CHANMUX_EV_CLOSED); /* the fifth was over the window */
	assert_int_equal(ev.flags, CHANMUX_CLOSE_RESET);
	assert_true(buf_len(&reply) > 0); /* a CLOSE went back */
	/* the guest opening an id of the host's half */
	struct chanmux_frame o = { .type = CHANMUX_OPEN, .id = 77, .value = 5000 };
	buf_consume(&reply, buf_len(&reply));
	assert_int_equal(chanmux_input(host.m, &o, &reply, &ev), 0);
	assert_int_equal(ev.type, CHANMUX_EV_NONE);
	assert_true(buf_len(&reply) > 0);
	/* a second HELLO breaks the mux itself */
	struct chanmux_frame h = { .type = CHANMUX_HELLO, .value = CHANMUX_VERSION };
	assert_int_equal(chanmux_input(host.m, &h, &reply, &ev), -EPROTO);
	buf_done(&forged, 0);
	buf_done(&reply, 0);
	/* refused opens free their id on both sides */
	assert_int_equal(chanmux_open(host.m, 9999, "", &host.out, &id), 0);
	pump(&host, &guest);
	assert_int_equal(chanmux_refuse(guest.m, id, ECONNREFUSED, &guest.out), 0);
	host.n_ev = 0;
	pump(&guest, &host);
	assert_int_equal(host.ev[0].type, CHANMUX_EV_REFUSED);
	assert_int_equal(host.ev[0].value, ECONNREFUSED);
	assert_null(NULL);
}

/* A save: the host pauses, the guest answers and falls silent; frames that crossed are dropped;
 * a HELLO (a new host after the restore) starts a new session with no stream left. A HELLO
 * before a pause, a PAUSE from the guest or a PAUSED never asked for breaks the mux. */
static void test_pause_and_new_session(void **state)
{
	(void)state;
	uint32_t a, b;
	struct chanmux_ev ev;
	assert_int_equal(chanmux_open(host.m, 5001, "", &host.out, &a), 0);
	both();
	assert_int_equal(chanmux_accept(guest.m, a, &guest.out), 0);
	assert_int_equal(chanmux_open(guest.m, 5002, "", &guest.out, &b), 0);
	both();
	host.n_ev = guest.n_ev = 0;
	/* crossing the PAUSE: the guest's data, in flight when the host paused */
	assert_int_equal(chanmux_send(guest.m, a, "late", 4, &guest.out), 4);
	assert_int_equal(chanmux_pause(host.m, &host.out), 0);
	assert_true(chanmux_is_paused(host.m));
	assert_int_equal(chanmux_room(host.m, a), 0);
	assert_int_equal(chanmux_send(host.m, a, "x", 1, &host.out), 0); /* nothing goes out */
	pump(&guest, &host);
	assert_int_equal(host.n_ev, 0); /* the late data is dropped */
	pump(&host, &guest);
	assert_int_equal(guest.ev[0].type, CHANMUX_EV_PAUSE);
	assert_int_equal(chanmux_paused(guest.m, &guest.out), 0);
	size_t before = buf_len(&guest.out);
	assert_int_equal(chanmux_close(guest.m, b, 1, &guest.out), 0);
	assert_int_equal(chanmux_consumed(guest.m, a, 0, &guest.out), 0);
	assert_int_equal(buf_len(&guest.out), before); /* silent after PAUSED */
	pump(&guest, &host);
	assert_int_equal(host.ev[0].type, CHANMUX_EV_PAUSED);

	/* the restored guest meets a new host */
	struct side h2 = { 0 };
	buf_init(&h2.out, 1 << 16);
	assert_int_equal(chanmux_new(CHANMUX_SIDE_HOST, &h2.out, &h2.m), 0);
	guest.n_ev = 0;
	pump(&h2, &guest);
	assert_int_equal(guest.ev[0].type, CHANMUX_EV_RESET);
	assert_int_equal(chanmux_count(guest.m), 0);
	assert_false(chanmux_is_paused(guest.m));
	pump(&guest, &h2); /* the guest's HELLO */
	assert_int_equal(chanmux_open(guest.m, 5000, "", &guest.out, &b), 0);
	pump(&guest, &h2);
	assert_int_equal(h2.ev[0].type, CHANMUX_EV_OPEN);
	assert_int_equal(h2.ev[0].port, 5000);

	/* a second HELLO now (not paused) breaks the mux; so does a PAUSE toward the host */
	struct chanmux_frame hello = { .type = CHANMUX_HELLO, .value = CHANMUX_VERSION };
	struct chanmux_frame pause = { .type = CHANMUX_PAUSE };
	struct chanmux_frame paused = { .type = CHANMUX_PAUSED };
	assert_int_equal(chanmux_input(guest.m, &hello, &guest.out, &ev), -EPROTO);
	assert_int_equal(chanmux_input(h2.m, &pause, &h2.out, &ev), -EPROTO);
	assert_int_equal(chanmux_input(h2.m, &paused, &h2.out, &ev), -EPROTO); /* not asked */
	assert_int_equal(chanmux_input(h2.m, &hello, &h2.out, &ev), -EPROTO);
	assert_int_equal(chanmux_pause(guest.m, &guest.out), -EINVAL);
	assert_int_equal(chanmux_paused(h2.m, &h2.out), -EINVAL);
	chanmux_free(h2.m);
	buf_done(&h2.out, 0);
}

/* capsem-chan restarts in the middle of a session: the new one's HELLO carries a nonce; the
 * host forgets every stream and answers it; the guest skips the old session's bytes (from the
 * middle of a frame) up to that answer; streams work again. */
static void test_guest_starts_over(void **state)
{
	(void)state;
	uint32_t a, b;
	assert_int_equal(chanmux_open(host.m, 5001, "exec", &host.out, &a), 0);
	assert_int_equal(chanmux_open(guest.m, 5000, "", &guest.out, &b), 0);
	both();
	assert_int_equal(chanmux_accept(guest.m, a, &guest.out), 0);
	assert_int_equal(chanmux_accept(host.m, b, &host.out), 0);
	both();
	assert_int_equal(chanmux_count(host.m), 2);
	/* the old guest dies: what the host sends now reaches nobody whole */
	static uint8_t junk[100000];
	memset(junk, 0x01, sizeof(junk)); /* HELLO's type byte, everywhere */
	assert_true(chanmux_send(host.m, a, junk, 5000, &host.out) == 5000);
	struct buf wire = BUF_INIT(1 << 20);
	assert_int_equal(buf_append(&wire, buf_head(&host.out) + 5, buf_len(&host.out) - 5), 0);
	buf_consume(&host.out, buf_len(&host.out));

	struct side g2 = { 0 };
	const uint32_t nonce = 0x5eed1234;
	buf_init(&g2.out, 1 << 20);
	assert_int_equal(chanmux_new_nonce(CHANMUX_SIDE_HOST, 7, &g2.out, &g2.m), -EINVAL);
	assert_int_equal(chanmux_new_nonce(CHANMUX_SIDE_GUEST, nonce, &g2.out, &g2.m), 0);
	host.n_ev = 0;
	pump(&g2, &host); /* its HELLO: the host starts over */
	assert_int_equal(host.n_ev, 1);
	assert_int_equal(host.ev[0].type, CHANMUX_EV_RESET);
	assert_int_equal(chanmux_count(host.m), 0);
	/* on the wire to the new guest: the old session's tail, then the answer */
	assert_int_equal(buf_append(&wire, buf_head(&host.out), buf_len(&host.out)), 0);
	buf_consume(&host.out, buf_len(&host.out));
	size_t skip = 0;
	assert_int_equal(chanmux_sync(buf_head(&wire), buf_len(&wire), nonce + 1, &skip), 0);
	assert_int_equal(chanmux_sync(buf_head(&wire), buf_len(&wire), nonce, &skip), 1);
	assert_int_equal(buf_len(&wire) - skip, CHANMUX_HELLO_MAX);
	/* found a piece at a time too: what is dropped never holds the start of the HELLO */
	size_t off = 0;
	for (size_t n = 1; n <= buf_len(&wire); n += 7) {
		size_t s2 = 0;
		if (chanmux_sync(buf_head(&wire) + off, n - off, nonce, &s2)) {
			assert_int_equal(off + s2, skip);
			break;
		}
		off += s2;
		assert_true(off <= skip);
	}
	struct chanmux_frame f;
	struct chanmux_ev ev;
	assert_int_equal(chanmux_frame_parse(buf_head(&wire) + skip, CHANMUX_HELLO_MAX, &f),
			 CHANMUX_HELLO_MAX);
	assert_int_equal(f.nonce, nonce);
	assert_int_equal(chanmux_input(g2.m, &f, &g2.out, &ev), 0);
	buf_done(&wire, 0);
	/* a new session: the guest opens, the host accepts; its DATA fits one port write */
	uint32_t c;
	assert_int_equal(chanmux_open(g2.m, 5002, "", &g2.out, &c), 0);
	pump(&g2, &host);
	assert_int_equal(host.ev[1].type, CHANMUX_EV_OPEN);
	assert_int_equal(chanmux_accept(host.m, c, &host.out), 0);
	pump(&host, &g2);
	assert_int_equal(chanmux_send(g2.m, c, junk, sizeof(junk), &g2.out), (ssize_t)sizeof(junk));
	for (size_t o = 0; o < buf_len(&g2.out);) {
		ssize_t k = chanmux_frame_parse(buf_head(&g2.out) + o, buf_len(&g2.out) - o, &f);
		assert_true(k > 0 && (size_t)k <= CHANMUX_PORT_WRITE);
		o += (size_t)k;
	}
	host.n_rx = 0;
	pump(&g2, &host);
	assert_int_equal(host.n_rx, sizeof(junk));
	/* the old guest's plain HELLO now, or a HELLO to the guest: the mux is broken */
	struct chanmux_frame hello = { .type = CHANMUX_HELLO, .value = CHANMUX_VERSION };
	assert_int_equal(chanmux_input(host.m, &hello, &host.out, &ev), -EPROTO);
	hello.nonce = 9;
	assert_int_equal(chanmux_input(g2.m, &hello, &g2.out, &ev), -EPROTO);
	chanmux_free(g2.m);
	buf_done(&g2.out, 0);
}

/* A host that opened streams before the guest's first HELLO (with a nonce) drops them: the
 * guest skipped them. A HELLO's nonce is never 0. */
static void test_host_streams_before_hello(void **state)
{
	(void)state;
	struct side h = { 0 }, g = { 0 };
	buf_init(&h.out, 1 << 16);
	buf_init(&g.out, 1 << 16);
	assert_int_equal(chanmux_new(CHANMUX_SIDE_HOST, &h.out, &h.m), 0);
	uint32_t id;
	assert_int_equal(chanmux_open(h.m, 5001, "", &h.out, &id), 0);
	assert_int_equal(chanmux_new_nonce(CHANMUX_SIDE_GUEST, 42, &g.out, &g.m), 0);
	pump(&g, &h);
	assert_int_equal(h.ev[0].type, CHANMUX_EV_RESET);
	assert_int_equal(chanmux_count(h.m), 0);
	/* the answer carries the nonce and follows the skipped frames */
	size_t skip = 0;
	assert_int_equal(chanmux_sync(buf_head(&h.out), buf_len(&h.out), 42, &skip), 1);
	assert_true(skip > 0);
	uint8_t bad[CHANMUX_HELLO_MAX];
	assert_int_equal(chanmux_hello_bytes(42, bad), CHANMUX_HELLO_MAX);
	bad[CHANMUX_HDR + 7] = 0; /* nonce 0 */
	struct chanmux_frame f;
	assert_int_equal(chanmux_frame_parse(bad, sizeof(bad), &f), -EBADMSG);
	chanmux_free(h.m);
	chanmux_free(g.m);
	buf_done(&h.out, 0);
	buf_done(&g.out, 0);
}

static void test_frames(void **state)
{
	(void)state;
	uint8_t bad[CHANMUX_HDR] = { 11, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	struct chanmux_frame f;
	assert_int_equal(chanmux_frame_parse(bad, sizeof(bad), &f), -EBADMSG); /* type 11 */
	bad[0] = CHANMUX_DATA;
	bad[8] = 1; /* 16 MiB */
	assert_int_equal(chanmux_frame_parse(bad, sizeof(bad), &f), -EBADMSG);
	bad[8] = 0;
	bad[11] = 3;
	assert_int_equal(chanmux_frame_parse(bad, sizeof(bad), &f), 0); /* wants 3 more bytes */
	struct buf b = BUF_INIT(1024);
	struct chanmux_frame o = { .type = CHANMUX_OPEN, .id = 5, .value = 5003 };
	memcpy(o.tag, "bad tag!", 9);
	assert_int_equal(chanmux_frame_append(&b, &o), -EINVAL);
	memcpy(o.tag, "mcp-relay", 10);
	assert_int_equal(chanmux_frame_append(&b, &o), 0);
	assert_int_equal(chanmux_frame_parse(buf_head(&b), buf_len(&b), &f), (ssize_t)buf_len(&b));
	assert_string_equal(f.tag, "mcp-relay");
	assert_int_equal(f.value, 5003);
	buf_done(&b, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stream_both_ways, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flow_control, setup, teardown),
		cmocka_unit_test_setup_teardown(test_misuse_resets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_and_new_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_starts_over, setup, teardown),
		cmocka_unit_test(test_host_streams_before_hello),
		cmocka_unit_test(test_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test-proto.c - the wire format: round trips, caps, and hostile payloads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/socket.h>

#include "macro.h"
#include "proto.h"

/* Parse the single frame in b, check its type, return payload. */
static const uint8_t *one_frame(struct buf *b, uint16_t want, uint32_t *len)
{
	uint16_t type;
	const uint8_t *pl;
	ssize_t k = proto_frame_parse(buf_head(b), buf_len(b), &type, &pl, len);
	assert_int_equal(k, (ssize_t)buf_len(b));
	assert_int_equal(type, want);
	return pl;
}

static void test_frame_partial(void **state)
{
	struct buf b;
	uint16_t t;
	const uint8_t *pl;
	uint32_t len;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_frame_append(&b, PROTO_STDOUT, "hello", 5), 0);
	for (size_t i = 0; i < buf_len(&b); i++)
		assert_int_equal(proto_frame_parse(buf_head(&b), i, &t, &pl, &len), 0);
	assert_int_equal(proto_frame_parse(buf_head(&b), buf_len(&b), &t, &pl, &len), 11);
	assert_int_equal(len, 5);
	assert_memory_equal(pl, "hello", 5);
	buf_done(&b, 0);
}

static void test_frame_too_big(void **state)
{
	uint8_t h[6] = { 0x00, 0x10, 0x00, 0x01, 0, 21 }; /* 1 MiB + 1 */
	uint16_t t;
	const uint8_t *pl;
	uint32_t len;
	assert_int_equal(proto_frame_parse(h, sizeof(h), &t, &pl, &len), -EMSGSIZE);
	uint8_t ok[6] = { 0x00, 0x10, 0x00, 0x00, 0, 21 }; /* exactly the cap: wait for more */
	assert_int_equal(proto_frame_parse(ok, sizeof(ok), &t, &pl, &len), 0);
	struct buf b;
	buf_init(&b, 4 << 20);
	static uint8_t big[PROTO_MAX_PAYLOAD + 1];
	assert_int_equal(proto_frame_append(&b, PROTO_STDOUT, big, sizeof(big)), -EMSGSIZE);
	buf_done(&b, 0);
}

static void test_exec_roundtrip(void **state)
{
	char *argv[] = { "sh", "-c", "echo hi", NULL };
	char *envp[] = { "A=1", "B=x=y", NULL };
	struct proto_exec e = { .flags = PROTO_EXEC_TTY,
				.timeout_ms = 2000,
				.rows = 24,
				.cols = 80,
				.cwd = "/tmp",
				.argc = 3,
				.argv = argv,
				.envc = 2,
				.envp = envp };
	struct proto_exec *d = NULL;
	struct buf b;
	uint32_t len;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exec_encode(&e, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_EXEC, &len);
	assert_int_equal(proto_exec_decode(pl, len, &d), 0);
	assert_int_equal(d->flags, PROTO_EXEC_TTY);
	assert_int_equal(d->timeout_ms, 2000);
	assert_int_equal(d->rows, 24);
	assert_int_equal(d->cols, 80);
	assert_string_equal(d->cwd, "/tmp");
	assert_int_equal(d->argc, 3);
	assert_string_equal(d->argv[2], "echo hi");
	assert_null(d->argv[3]);
	assert_int_equal(d->envc, 2);
	assert_string_equal(d->envp[1], "B=x=y");
	assert_null(d->envp[2]);
	/* every truncation fails cleanly */
	for (uint32_t i = 0; i < len; i++) {
		struct proto_exec *x = (struct proto_exec *)0x1;
		assert_int_equal(proto_exec_decode(pl, i, &x), -EBADMSG);
		assert_ptr_equal(x, (struct proto_exec *)0x1);
	}
	proto_exec_free(d);
	buf_done(&b, 0);
}

static void test_exec_rejects(void **state)
{
	char *argv[] = { "x", NULL };
	char *bad_env[] = { "NOEQUALS", NULL };
	struct proto_exec e = { .argc = 0, .argv = argv };
	struct buf b;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exec_encode(&e, &b), -EINVAL); /* argc 0 */
	e.argc = 1;
	e.flags = 1u << 7;
	assert_int_equal(proto_exec_encode(&e, &b), -EINVAL); /* unknown flag */
	e.flags = 0;
	e.envc = 1;
	e.envp = bad_env;
	assert_int_equal(proto_exec_encode(&e, &b), -EINVAL);
	assert_int_equal(buf_len(&b), 0);

	/* hand-made payloads: huge argc, embedded NUL, unknown flags */
	struct proto_exec *d = NULL;
	uint8_t huge_argc[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff };
	assert_int_equal(proto_exec_decode(huge_argc, sizeof(huge_argc), &d), -EBADMSG);
	uint8_t nul[] = { 0, 0, 0, 0, 0, 0, 0, 0,   0, 0,   0, 0, 0, 0,
			  0, 0, 1, 0, 0, 0, 3, 'a', 0, 'b', 0, 0, 0, 0 };
	assert_int_equal(proto_exec_decode(nul, sizeof(nul), &d), -EBADMSG);
	uint8_t okay[] = { 0, 0, 0, 0, 0, 0, 0, 0,   0,	  0,   0, 0, 0, 0,
			   0, 0, 1, 0, 0, 0, 3, 'a', 'c', 'b', 0, 0, 0, 0 };
	assert_int_equal(proto_exec_decode(okay, sizeof(okay), &d), 0);
	assert_string_equal(d->argv[0], "acb");
	proto_exec_free(d);
	okay[3] = 0x80;
	assert_int_equal(proto_exec_decode(okay, sizeof(okay), &d), -EBADMSG);
	buf_done(&b, 0);
}

static void test_hello_roundtrip(void **state)
{
	struct proto_hello h = { .version = PROTO_VERSION, .n_stages = 2 };
	struct proto_hello d;
	struct buf b;
	uint32_t len;
	snprintf(h.agent_version, sizeof(h.agent_version), "0.1.0");
	snprintf(h.kernel_release, sizeof(h.kernel_release), "6.1.0-capsem");
	snprintf(h.stages[0].name, sizeof(h.stages[0].name), "mounts");
	h.stages[0].usec = 812345;
	snprintf(h.stages[1].name, sizeof(h.stages[1].name), "agent_ready");
	h.stages[1].usec = 900000;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_hello_encode(&h, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_HELLO, &len);
	assert_int_equal(proto_hello_decode(pl, len, &d), 0);
	assert_int_equal(d.version, 1);
	assert_string_equal(d.kernel_release, "6.1.0-capsem");
	assert_int_equal(d.n_stages, 2);
	assert_string_equal(d.stages[1].name, "agent_ready");
	assert_int_equal(d.stages[0].usec, 812345);
	/* trailing garbage is rejected */
	uint8_t more[4096];
	memcpy(more, pl, len);
	more[len] = 0;
	assert_int_equal(proto_hello_decode(more, len + 1, &d), -EBADMSG);
	/* too many stages */
	h.n_stages = PROTO_MAX_STAGES + 1;
	assert_int_equal(proto_hello_encode(&h, &b), -EINVAL);
	buf_done(&b, 0);
}

static void test_exit_status(void **state)
{
	struct proto_exit e = { .kind = PROTO_EXIT_SIGNAL, .code = 9, .wall_us = 5 }, d;
	struct buf b;
	uint32_t len;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exit_encode(&e, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_EXIT, &len);
	assert_int_equal(proto_exit_decode(pl, len, &d), 0);
	assert_int_equal(proto_exit_status(&d), 137);
	d.kind = PROTO_EXIT_CODE;
	d.code = 7;
	assert_int_equal(proto_exit_status(&d), 7);
	d.kind = PROTO_EXIT_TIMEOUT;
	assert_int_equal(proto_exit_status(&d), 124);
	/* a signal number out of range is hostile */
	uint8_t bad[33] = { 1, 0, 0, 0, 99 };
	assert_int_equal(proto_exit_decode(bad, sizeof(bad), &d), -EBADMSG);
	buf_done(&b, 0);
}

static void test_exit_flags(void **state)
{
	struct proto_exit e = { .kind = PROTO_EXIT_SIGNAL, .code = 9, .maxrss_kb = 4096 }, d;
	struct buf b;
	uint32_t len;
	uint8_t p[64];

	/* without flags the payload is the original 37 bytes (an older host reads it) */
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_exit_encode(&e, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_EXIT, &len);
	assert_int_equal(len, 37);
	memset(&d, 0xff, sizeof(d));
	assert_int_equal(proto_exit_decode(pl, len, &d), 0);
	assert_int_equal(d.flags, 0);
	assert_int_equal(d.maxrss_kb, 4096);
	buf_consume(&b, buf_len(&b));

	/* the OOM flag: a trailing u32 */
	e.flags = PROTO_EXIT_OOM;
	assert_int_equal(proto_exit_encode(&e, &b), 0);
	pl = one_frame(&b, PROTO_EXIT, &len);
	assert_int_equal(len, 41);
	assert_memory_equal(pl + 37, "\0\0\0\1", 4);
	assert_int_equal(proto_exit_decode(pl, len, &d), 0);
	assert_int_equal(d.flags, PROTO_EXIT_OOM);
	assert_int_equal(proto_exit_status(&d), 137);
	memcpy(p, pl, len);
	buf_consume(&b, buf_len(&b));

	/* bits a newer guest may send are dropped, not refused */
	p[37] = 0x80;
	p[40] = 0x03;
	assert_int_equal(proto_exit_decode(p, 41, &d), 0);
	assert_int_equal(d.flags, PROTO_EXIT_OOM);
	/* a partial or longer extension is not an EXIT */
	d.flags = 77;
	for (size_t n = 38; n <= 40; n++)
		assert_int_equal(proto_exit_decode(p, n, &d), -EBADMSG);
	p[41] = 0;
	assert_int_equal(proto_exit_decode(p, 42, &d), -EBADMSG);
	assert_int_equal(d.flags, 77);
	/* the encoder writes only the flags it knows */
	e.flags = 1u << 7;
	assert_int_equal(proto_exit_encode(&e, &b), -EINVAL);
	assert_int_equal(buf_len(&b), 0);
	buf_done(&b, 0);
}

static void test_small_messages(void **state)
{
	struct buf b;
	uint32_t len, v;
	uint16_t r, c;
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_u32_encode(PROTO_SIGNAL, 15, &b), 0);
	const uint8_t *pl = one_frame(&b, PROTO_SIGNAL, &len);
	assert_int_equal(proto_u32_decode(pl, len, &v), 0);
	assert_int_equal(v, 15);
	assert_int_equal(proto_u32_decode(pl, len - 1, &v), -EBADMSG);
	buf_consume(&b, buf_len(&b));
	assert_int_equal(proto_winsize_encode(50, 132, &b), 0);
	pl = one_frame(&b, PROTO_WINSIZE, &len);
	assert_int_equal(proto_winsize_decode(pl, len, &r, &c), 0);
	assert_int_equal(r, 50);
	assert_int_equal(c, 132);
	buf_consume(&b, buf_len(&b));
	struct proto_error e = { .code = 2 }, de;
	snprintf(e.message, sizeof(e.message), "no such file");
	assert_int_equal(proto_error_encode(&e, &b), 0);
	pl = one_frame(&b, PROTO_ERROR, &len);
	assert_int_equal(proto_error_decode(pl, len, &de), 0);
	assert_string_equal(de.message, "no such file");
	buf_consume(&b, buf_len(&b));
	struct proto_boot_config bc = { .unix_time_ns = 123 }, dbc;
	snprintf(bc.hostname, sizeof(bc.hostname), "capsem");
	assert_int_equal(proto_boot_config_encode(&bc, &b), 0);
	pl = one_frame(&b, PROTO_BOOT_CONFIG, &len);
	assert_int_equal(proto_boot_config_decode(pl, len, &dbc), 0);
	assert_string_equal(dbc.hostname, "capsem");
	assert_null(dbc.ca_pem);
	assert_null(dbc.envp);
	assert_int_equal(dbc.envc, 0);
	proto_boot_config_done(&dbc);
	buf_done(&b, 0);
}

/* ---- BOOT_CONFIG extension: CA certificate and exec environment ---- */

static const char test_pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

static void test_boot_config_extension(void **state)
{
	char *env[] = { "ANTHROPIC_API_KEY=capsem-placeholder", "A==b", NULL };
	struct proto_boot_config bc = { .unix_time_ns = 7,
					.ca_pem = (char *)test_pem,
					.envc = 2,
					.envp = env },
				 d;
	const uint8_t *pl;
	uint32_t len;
	struct buf b;

	snprintf(bc.hostname, sizeof(bc.hostname), "vm1");
	buf_init(&b, 1 << 20);
	assert_int_equal(proto_boot_config_encode(&bc, &b), 0);
	pl = one_frame(&b, PROTO_BOOT_CONFIG, &len);
	assert_int_equal(proto_boot_config_decode(pl, len, &d), 0);
	assert_int_equal(d.unix_time_ns, 7);
	assert_string_equal(d.hostname, "vm1");
	assert_string_equal(d.ca_pem, test_pem);
	assert_int_equal(d.envc, 2);
	assert_string_equal(d.envp[0], env[0]);
	assert_string_equal(d.envp[1], env[1]);
	assert_null(d.envp[2]);
	proto_boot_config_done(&d);
	assert_null(d.envp);
	assert_null(d.ca_pem);
	proto_boot_config_done(NULL);

	/* a CA alone, then environment alone */
	for (int which = 0; which < 2; which++) {
		struct proto_boot_config one = { 0 };
		if (which == 0)
			one.ca_pem = (char *)test_pem;
		else {
			one.envc = 1;
			one.envp = env;
		}
		buf_consume(&b, buf_len(&b));
		assert_int_equal(proto_boot_config_encode(&one, &b), 0);
		pl = one_frame(&b, PROTO_BOOT_CONFIG, &len);
		assert_int_equal(proto_boot_config_decode(pl, len, &d), 0);
		if (which == 0) {
			assert_string_equal(d.ca_pem, test_pem);
			assert_int_equal(d.envc, 0);
		} else {
			assert_null(d.ca_pem);
			assert_int_equal(d.envc, 1);
			assert_string_equal(d.envp[0], env[0]);
		}
		proto_boot_config_done(&d);
	}

	/* the seed: alone, and after the environment; any other trailing length is refused */
	for (int with_env = 0; with_env < 2; with_env++) {
		struct proto_boot_config sd = { .has_seed = 1 };
		for (int i = 0; i < PROTO_BOOT_SEED_LEN; i++)
			sd.seed[i] = (uint8_t)(i * 7 + 1);
		if (with_env) {
			sd.envc = 1;
			sd.envp = env;
		}
		buf_consume(&b, buf_len(&b));
		assert_int_equal(proto_boot_config_encode(&sd, &b), 0);
		pl = one_frame(&b, PROTO_BOOT_CONFIG, &len);
		assert_int_equal(proto_boot_config_decode(pl, len, &d), 0);
		assert_true(d.has_seed);
		assert_memory_equal(d.seed, sd.seed, PROTO_BOOT_SEED_LEN);
		assert_int_equal(d.envc, (uint32_t)with_env);
		proto_boot_config_done(&d);
		assert_int_equal(proto_boot_config_decode(pl, len - 1, &d), -EBADMSG);
	}

	/* nothing in the extension: the original form, byte for byte */
	struct proto_boot_config empty = { .unix_time_ns = 1, .ca_pem = "" };
	snprintf(empty.hostname, sizeof(empty.hostname), "h");
	buf_consume(&b, buf_len(&b));
	assert_int_equal(proto_boot_config_encode(&empty, &b), 0);
	pl = one_frame(&b, PROTO_BOOT_CONFIG, &len);
	static const uint8_t old_form[] = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 'h' };
	assert_int_equal(len, sizeof(old_form));
	assert_memory_equal(pl, old_form, sizeof(old_form));
	buf_done(&b, 0);
}

static void test_boot_config_rejects(void **state)
{
	char big[PROTO_BOOT_ENV_MAX + 2];
	char *bad_env[][2] = { { "NOEQUALS", NULL }, { "=x", NULL }, { "", NULL }, { big, NULL } };
	struct proto_boot_config bc = { 0 }, d = { .unix_time_ns = 99 };
	struct buf b;

	memset(big, 'A', sizeof(big) - 1);
	big[1] = '=';
	big[sizeof(big) - 1] = 0;
	buf_init(&b, 1 << 20);
	for (size_t i = 0; i < ELEMENTSOF(bad_env); i++) {
		bc.envc = 1;
		bc.envp = bad_env[i];
		assert_int_equal(proto_boot_config_encode(&bc, &b), -EINVAL);
	}
	bc.envc = PROTO_BOOT_MAX_ENV + 1;
	assert_int_equal(proto_boot_config_encode(&bc, &b), -EINVAL);
	char *pem = malloc(PROTO_BOOT_CA_MAX + 2);
	assert_non_null(pem);
	memset(pem, 'x', PROTO_BOOT_CA_MAX + 1);
	pem[PROTO_BOOT_CA_MAX + 1] = 0;
	bc = (struct proto_boot_config){ .ca_pem = pem };
	assert_int_equal(proto_boot_config_encode(&bc, &b), -EINVAL);
	pem[PROTO_BOOT_CA_MAX] = 0; /* exactly at the cap */
	assert_int_equal(proto_boot_config_encode(&bc, &b), 0);
	free(pem);
	buf_done(&b, 0);

	/* hand-made payloads: u64 time, str hostname, then the extension */
	static const uint8_t base[] = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	uint8_t p[64];
	memcpy(p, base, sizeof(base));
	/* a truncated extension: only part of the CA length */
	memcpy(p + 12, "\0\0", 2);
	assert_int_equal(proto_boot_config_decode(p, 14, &d), -EBADMSG);
	/* CA "", no envc */
	memcpy(p + 12, "\0\0\0\0", 4);
	assert_int_equal(proto_boot_config_decode(p, 16, &d), -EBADMSG);
	/* CA "", envc 0: valid and empty */
	memcpy(p + 16, "\0\0\0\0", 4);
	assert_int_equal(proto_boot_config_decode(p, 20, &d), 0);
	assert_null(d.envp);
	/* trailing junk after the extension */
	p[20] = 1;
	d.unix_time_ns = 99;
	assert_int_equal(proto_boot_config_decode(p, 21, &d), -EBADMSG);
	assert_int_equal(d.unix_time_ns, 99); /* untouched */
	/* envc 1 with an entry without '=' */
	memcpy(p + 16, "\0\0\0\1\0\0\0\2ab", 10);
	assert_int_equal(proto_boot_config_decode(p, 26, &d), -EBADMSG);
	memcpy(p + 24, "a=", 2);
	assert_int_equal(proto_boot_config_decode(p, 26, &d), 0);
	assert_string_equal(d.envp[0], "a=");
	proto_boot_config_done(&d);
	/* envc past the cap */
	memcpy(p + 16, "\0\0\0\x41", 4);
	assert_int_equal(proto_boot_config_decode(p, 26, &d), -EBADMSG);
	/* a NUL inside the CA */
	memcpy(p + 12, "\0\0\0\2a\0\0\0\0\0", 10);
	assert_int_equal(proto_boot_config_decode(p, 22, &d), -EBADMSG);
}

/* ---- vsock 5002 preamble ---- */

static void test_net_preamble_roundtrip(void **state)
{
	struct proto_net_preamble v4 = { .family = AF_INET,
					 .addr = { 1, 2, 3, 4 },
					 .port = 443,
					 .pid = 4242 },
				  v6 = { .family = AF_INET6, .port = 8443 }, d;
	uint8_t w[PROTO_NET_PREAMBLE_MAX + 8];
	ssize_t k;

	snprintf(v4.comm, sizeof(v4.comm), "curl");
	k = proto_net_preamble_encode(&v4, w, sizeof(w));
	assert_int_equal(k, PROTO_NET_HDR_SIZE + PROTO_NET_BODY_FIXED + 4);
	static const uint8_t want[] = { 'C', 'S', 'N', 'P', 1,	  0,	28, 4,	 0x01, 0xbb, 1,	 2,
					3,   4,	  0,   0,   0,	  0,	0,  0,	 0,    0,    0,	 0,
					0,   0,	  0,   0,   0x10, 0x92, 4,  'c', 'u',  'r',  'l' };
	assert_int_equal(k, sizeof(want));
	assert_memory_equal(w, want, sizeof(want));
	/* every strict prefix wants more; the whole decodes, the stream after it is untouched */
	for (ssize_t i = 0; i < k; i++)
		assert_int_equal(proto_net_preamble_decode(w, (size_t)i, &d), -EAGAIN);
	w[k] = 0x16; /* a TLS ClientHello follows */
	assert_int_equal(proto_net_preamble_decode(w, (size_t)k + 1, &d), k);
	assert_int_equal(d.family, AF_INET);
	assert_memory_equal(d.addr, v4.addr, 16);
	assert_int_equal(d.port, 443);
	assert_int_equal(d.pid, 4242);
	assert_string_equal(d.comm, "curl");

	for (int i = 0; i < 16; i++)
		v6.addr[i] = (uint8_t)(0x20 + i);
	snprintf(v6.comm, sizeof(v6.comm), "0123456789abcdef"); /* 16: the cap */
	k = proto_net_preamble_encode(&v6, w, sizeof(w));
	assert_int_equal(k, PROTO_NET_PREAMBLE_MAX);
	assert_int_equal(proto_net_preamble_decode(w, (size_t)k, &d), k);
	assert_int_equal(d.family, AF_INET6);
	assert_memory_equal(d.addr, v6.addr, 16);
	assert_string_equal(d.comm, "0123456789abcdef");
	assert_int_equal(d.pid, 0);
	assert_int_equal(proto_net_preamble_encode(&v6, w, (size_t)k - 1), -ENOBUFS);

	/* no comm at all */
	v4.comm[0] = 0;
	v4.pid = 0;
	k = proto_net_preamble_encode(&v4, w, sizeof(w));
	assert_int_equal(k, PROTO_NET_HDR_SIZE + PROTO_NET_BODY_FIXED);
	assert_int_equal(proto_net_preamble_decode(w, (size_t)k, &d), k);
	assert_string_equal(d.comm, "");
}

static void test_net_preamble_rejects(void **state)
{
	struct proto_net_preamble ok = { .family = AF_INET, .addr = { 10, 0, 0, 1 }, .port = 80 },
				  b, d = { .port = 7 };
	uint8_t w[PROTO_NET_PREAMBLE_MAX], x[PROTO_NET_PREAMBLE_MAX];
	ssize_t k;

	/* encoder refusals */
	b = ok;
	b.family = AF_UNIX;
	assert_int_equal(proto_net_preamble_encode(&b, w, sizeof(w)), -EINVAL);
	b = ok;
	b.port = 0;
	assert_int_equal(proto_net_preamble_encode(&b, w, sizeof(w)), -EINVAL);
	b = ok;
	b.addr[4] = 1; /* IPv4 with padding */
	assert_int_equal(proto_net_preamble_encode(&b, w, sizeof(w)), -EINVAL);
	b = ok;
	memcpy(b.comm, "a\tb", 4);
	assert_int_equal(proto_net_preamble_encode(&b, w, sizeof(w)), -EINVAL);
	b = ok;
	memset(b.comm, 'c', sizeof(b.comm)); /* no NUL: 17 bytes */
	assert_int_equal(proto_net_preamble_encode(&b, w, sizeof(w)), -EINVAL);

	/* decoder refusals, each a one-byte change of a good preamble */
	snprintf(ok.comm, sizeof(ok.comm), "sh");
	k = proto_net_preamble_encode(&ok, w, sizeof(w));
	assert_true(k > 0);
	struct {
		size_t off;
		uint8_t val;
		ssize_t want;
	} cases[] = {
		{ 0, 'X', -EBADMSG },	/* magic */
		{ 3, 'Q', -EBADMSG },	/* magic, last byte */
		{ 4, 2, -EPROTO },	/* another version */
		{ 4, 0, -EBADMSG },	/* version 0 */
		{ 6, 23, -EBADMSG },	/* body shorter than the fixed part */
		{ 6, 41, -EBADMSG },	/* body longer than fixed + 16 */
		{ 7, 5, -EBADMSG },	/* family */
		{ 9, 0, -EBADMSG },	/* port 0 */
		{ 15, 1, -EBADMSG },	/* IPv4 padding */
		{ 30, 3, -EBADMSG },	/* comm length */
		{ 31, 0x7f, -EBADMSG }, /* comm byte */
		{ 32, 0, -EBADMSG },	/* NUL in comm */
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		memcpy(x, w, (size_t)k);
		x[cases[i].off] = cases[i].val;
		assert_int_equal(proto_net_preamble_decode(x, (size_t)k, &d), cases[i].want);
		assert_int_equal(d.port, 7); /* untouched */
	}
	/* a body length that disagrees with the comm length: waits for the body, then refuses */
	memcpy(x, w, (size_t)k);
	x[6] = 27;
	x[k] = 'x';
	assert_int_equal(proto_net_preamble_decode(x, (size_t)k, &d), -EAGAIN);
	assert_int_equal(proto_net_preamble_decode(x, (size_t)k + 1, &d), -EBADMSG);
	/* a bad magic is refused from its first byte, without waiting for more */
	assert_int_equal(proto_net_preamble_decode("G", 1, &d), -EBADMSG);
	assert_int_equal(proto_net_preamble_decode("GET / HTTP/1.1\r\n", 16, &d), -EBADMSG);
	assert_int_equal(proto_net_preamble_decode("CS", 2, &d), -EAGAIN);
	assert_int_equal(proto_net_preamble_decode("", 0, &d), -EAGAIN);
	/* a bad version is refused before the body arrives */
	assert_int_equal(proto_net_preamble_decode("CSNP\x02", 5, &d), -EPROTO);
	assert_int_equal(proto_net_preamble_decode("CSNP\x01\xff\xff", 7, &d), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_partial),
		cmocka_unit_test(test_frame_too_big),
		cmocka_unit_test(test_exec_roundtrip),
		cmocka_unit_test(test_exec_rejects),
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_exit_status),
		cmocka_unit_test(test_exit_flags),
		cmocka_unit_test(test_small_messages),
		cmocka_unit_test(test_boot_config_extension),
		cmocka_unit_test(test_boot_config_rejects),
		cmocka_unit_test(test_net_preamble_roundtrip),
		cmocka_unit_test(test_net_preamble_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

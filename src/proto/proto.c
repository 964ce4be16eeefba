/* proto.c - encode and decode Capsem's host <-> guest frames (docs/PROTOCOL.md).
 *
 * Trust boundary: the host runs these decoders on bytes from the guest and the guest on bytes
 * from the host, so every decoder treats its input as hostile: a reader cursor (struct rd) checks
 * each field against the bytes left and against the caps in proto.h, and a decoder either fills
 * its whole result or leaves it untouched. Pure functions; any thread.
 */
#include "proto.h"

#include <sys/socket.h>

#include "macro.h"

/* ---- a bounds-checked cursor over one payload ---- */

struct rd {
	const uint8_t *p;
	size_t n;
	int bad;
};

static const uint8_t *rd_take(struct rd *r, size_t k)
{
	if (r->bad || k > r->n) {
		r->bad = 1;
		return NULL;
	}
	const uint8_t *q = r->p;
	r->p += k;
	r->n -= k;
	return q;
}

static uint64_t rd_be(struct rd *r, size_t k)
{
	const uint8_t *q = rd_take(r, k);
	uint64_t v = 0;
	if (!q)
		return 0;
	for (size_t i = 0; i < k; i++)
		v = v << 8 | q[i];
	return v;
}

static uint8_t rd_u8(struct rd *r)
{
	return (uint8_t)rd_be(r, 1);
}
static uint16_t rd_u16(struct rd *r)
{
	return (uint16_t)rd_be(r, 2);
}
static uint32_t rd_u32(struct rd *r)
{
	return (uint32_t)rd_be(r, 4);
}
static uint64_t rd_u64(struct rd *r)
{
	return rd_be(r, 8);
}

/* A string of at most max bytes with no NUL inside; returns its bytes (not terminated). */
static const char *rd_str(struct rd *r, size_t max, uint32_t *ret_len)
{
	uint32_t len = rd_u32(r);
	if (r->bad || len > max) {
		r->bad = 1;
		return NULL;
	}
	const char *s = (const char *)rd_take(r, len);
	if (s && memchr(s, 0, len)) {
		r->bad = 1;
		return NULL;
	}
	*ret_len = len;
	return s;
}

/* Copy a string into a fixed array of size cap (string must be < cap bytes). */
static void rd_str_fixed(struct rd *r, char *dst, size_t cap)
{
	uint32_t len = 0;
	const char *s = rd_str(r, cap - 1, &len);
	if (!s) {
		dst[0] = 0;
		return;
	}
	memcpy(dst, s, len);
	dst[len] = 0;
}

static int rd_end(const struct rd *r)
{
	return r->bad || r->n != 0 ? -EBADMSG : 0;
}

/* ---- a writer that builds one payload in a small stack or heap area ---- */

struct wr {
	struct buf b;
	int bad;
};

static void wr_init(struct wr *w)
{
	buf_init(&w->b, PROTO_MAX_PAYLOAD);
	w->bad = 0;
}

static void wr_be(struct wr *w, uint64_t v, size_t k)
{
	uint8_t t[8];
	for (size_t i = 0; i < k; i++)
		t[k - 1 - i] = (uint8_t)(v >> (8 * i));
	if (!w->bad && buf_append(&w->b, t, k) < 0)
		w->bad = 1;
}

static void wr_str(struct wr *w, const char *s, size_t max)
{
	size_t len = s ? strlen(s) : 0;
	if (len > max) {
		w->bad = 1;
		return;
	}
	wr_be(w, len, 4);
	if (!w->bad && buf_append(&w->b, s, len) < 0)
		w->bad = 1;
}

static void wr_bytes(struct wr *w, const void *p, size_t n)
{
	if (!w->bad && buf_append(&w->b, p, n) < 0)
		w->bad = 1;
}

static int wr_finish(struct wr *w, uint16_t type, struct buf *out)
{
	int r = w->bad ? -EINVAL : proto_frame_append(out, type, buf_head(&w->b), buf_len(&w->b));
	buf_done(&w->b, 0);
	return r;
}

/* ---- framing ---- */

ssize_t proto_frame_parse(const uint8_t *p, size_t n, uint16_t *ret_type,
			  const uint8_t **ret_payload, uint32_t *ret_len)
{
	if (n < PROTO_HDR_SIZE)
		return 0;
	uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (n - PROTO_HDR_SIZE < len)
		return 0;
	*ret_type = (uint16_t)(p[4] << 8 | p[5]);
	*ret_payload = p + PROTO_HDR_SIZE;
	*ret_len = len;
	return (ssize_t)(PROTO_HDR_SIZE + len);
}

int proto_frame_append(struct buf *out, uint16_t type, const void *payload, size_t len)
{
	uint8_t h[PROTO_HDR_SIZE];
	if (len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (buf_room(out) < PROTO_HDR_SIZE + len)
		return -ENOBUFS;
	h[0] = (uint8_t)(len >> 24);
	h[1] = (uint8_t)(len >> 16);
	h[2] = (uint8_t)(len >> 8);
	h[3] = (uint8_t)len;
	h[4] = (uint8_t)(type >> 8);
	h[5] = (uint8_t)type;
	int r = buf_append(out, h, sizeof(h));
	if (r == 0)
		r = buf_append(out, payload, len);
	return r;
}

/* ---- hello ---- */

int proto_hello_encode(const struct proto_hello *m, struct buf *out)
{
	struct wr w;
	if (m->n_stages > PROTO_MAX_STAGES)
		return -EINVAL;
	wr_init(&w);
	wr_be(&w, m->version, 2);
	wr_str(&w, m->agent_version, PROTO_NAME_MAX - 1);
	wr_str(&w, m->kernel_release, PROTO_NAME_MAX - 1);
	wr_be(&w, m->n_stages, 4);
	for (uint32_t i = 0; i < m->n_stages; i++) {
		wr_str(&w, m->stages[i].name, PROTO_NAME_MAX - 1);
		wr_be(&w, m->stages[i].usec, 8);
	}
	return wr_finish(&w, PROTO_HELLO, out);
}

int proto_hello_decode(const uint8_t *p, size_t n, struct proto_hello *ret)
{
	struct rd r = { p, n, 0 };
	struct proto_hello *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->version = rd_u16(&r);
	rd_str_fixed(&r, m->agent_version, sizeof(m->agent_version));
	rd_str_fixed(&r, m->kernel_release, sizeof(m->kernel_release));
	m->n_stages = rd_u32(&r);
	if (m->n_stages > PROTO_MAX_STAGES)
		r.bad = 1;
	for (uint32_t i = 0; i < m->n_stages && !r.bad; i++) {
		rd_str_fixed(&r, m->stages[i].name, sizeof(m->stages[i].name));
		m->stages[i].usec = rd_u64(&r);
	}
	int k = rd_end(&r);
	if (k == 0)
		*ret = *m;
	free(m);
	return k;
}

/* ---- boot config ---- */

static int boot_env_ok(const char *s, size_t len)
{
	return len > 0 && len <= PROTO_BOOT_ENV_MAX && s[0] != '=' && memchr(s, '=', len) &&
	       !memchr(s, 0, len);
}

int proto_boot_config_encode(const struct proto_boot_config *m, struct buf *out)
{
	struct wr w;
	size_t ca_len = m->ca_pem ? strlen(m->ca_pem) : 0;
	if (ca_len > PROTO_BOOT_CA_MAX || m->envc > PROTO_BOOT_MAX_ENV || (m->envc && !m->envp))
		return -EINVAL;
	for (uint32_t i = 0; i < m->envc; i++)
		if (!m->envp[i] || !boot_env_ok(m->envp[i], strlen(m->envp[i])))
			return -EINVAL;
	wr_init(&w);
	wr_be(&w, m->unix_time_ns, 8);
	wr_str(&w, m->hostname, PROTO_NAME_MAX - 1);
	/* the extension only when there is something in it: the payload stays the original form
	 * (and readable by older guests) otherwise */
	if (ca_len > 0 || m->envc > 0 || m->has_seed) {
		wr_str(&w, m->ca_pem, PROTO_BOOT_CA_MAX);
		wr_be(&w, m->envc, 4);
		for (uint32_t i = 0; i < m->envc; i++)
			wr_str(&w, m->envp[i], PROTO_BOOT_ENV_MAX);
		if (m->has_seed)
			wr_bytes(&w, m->seed, PROTO_BOOT_SEED_LEN);
	}
	return wr_finish(&w, PROTO_BOOT_CONFIG, out);
}

/* Two passes like proto_exec_decode: validate and size, then fill one allocation laid out as
 * [envp pointers][CA string][env strings], owned through envp. */
int proto_boot_config_decode(const uint8_t *p, size_t n, struct proto_boot_config *ret)
{
	struct rd r = { p, n, 0 };
	struct proto_boot_config m = { 0 };
	const char *ca;
	uint32_t ca_len = 0, len;
	size_t strbytes = 0;

	m.unix_time_ns = rd_u64(&r);
	rd_str_fixed(&r, m.hostname, sizeof(m.hostname));
	if (!r.bad && r.n == 0) {
		*ret = m; /* the original form: no extension */
		return 0;
	}
	ca = rd_str(&r, PROTO_BOOT_CA_MAX, &ca_len);
	m.envc = rd_u32(&r);
	if (r.bad || m.envc > PROTO_BOOT_MAX_ENV)
		return -EBADMSG;
	struct rd env = r;
	for (uint32_t i = 0; i < m.envc; i++) {
		const char *s = rd_str(&r, PROTO_BOOT_ENV_MAX, &len);
		if (!s || !boot_env_ok(s, len))
			return -EBADMSG;
		strbytes += len + 1;
	}
	if (r.n == PROTO_BOOT_SEED_LEN) { /* the second extension */
		memcpy(m.seed, rd_take(&r, PROTO_BOOT_SEED_LEN), PROTO_BOOT_SEED_LEN);
		m.has_seed = 1;
	}
	if (rd_end(&r) < 0)
		return -EBADMSG;
	if (ca_len == 0 && m.envc == 0) {
		*ret = m;
		return 0;
	}

	size_t ptrs = (size_t)(m.envc + 1) * sizeof(char *);
	char **block = malloc(ptrs + (ca_len ? ca_len + 1 : 0) + strbytes);
	if (!block)
		return -ENOMEM;
	char *s = (char *)(block + m.envc + 1);
	if (ca_len) {
		memcpy(s, ca, ca_len);
		s[ca_len] = 0;
		m.ca_pem = s;
		s += ca_len + 1;
	}
	/* second pass over the validated entries: these reads cannot fail */
	for (uint32_t i = 0; i < m.envc; i++) {
		const char *c = rd_str(&env, PROTO_BOOT_ENV_MAX, &len);
		memcpy(s, c, len);
		s[len] = 0;
		block[i] = s;
		s += len + 1;
	}
	block[m.envc] = NULL;
	m.envp = block;
	*ret = m;
	return 0;
}

void proto_boot_config_done(struct proto_boot_config *m)
{
	if (!m)
		return;
	/* envp is the start of the one allocation; a CA alone still has a (one-entry) envp */
	free(m->envp);
	m->envp = NULL;
	m->envc = 0;
	m->ca_pem = NULL;
}

/* ---- exec ---- */

int proto_exec_encode(const struct proto_exec *m, struct buf *out)
{
	struct wr w;
	if (m->argc < 1 || m->argc > PROTO_MAX_ARGS || m->envc > PROTO_MAX_ENV ||
	    (m->flags & ~PROTO_EXEC_FLAGS_ALL))
		return -EINVAL;
	wr_init(&w);
	wr_be(&w, m->flags, 4);
	wr_be(&w, m->timeout_ms, 4);
	wr_be(&w, m->rows, 2);
	wr_be(&w, m->cols, 2);
	wr_be(&w, m->cwd ? 1 : 0, 1);
	if (m->cwd)
		wr_str(&w, m->cwd, PROTO_MAX_STR);
	wr_be(&w, m->argc, 4);
	for (uint32_t i = 0; i < m->argc; i++)
		wr_str(&w, m->argv[i], PROTO_MAX_STR);
	wr_be(&w, m->envc, 4);
	for (uint32_t i = 0; i < m->envc; i++) {
		if (!m->envp[i] || !strchr(m->envp[i], '='))
			w.bad = 1;
		wr_str(&w, m->envp[i], PROTO_MAX_STR);
	}
	return wr_finish(&w, PROTO_EXEC, out);
}

/* Two passes: the first validates and sizes, the second fills one allocation laid out as
 * [struct][argv pointers][envp pointers][strings]. */
int proto_exec_decode(const uint8_t *p, size_t n, struct proto_exec **ret)
{
	struct rd r = { p, n, 0 };
	struct proto_exec h = { 0 };
	uint32_t len;
	size_t strbytes = 0;
	uint8_t has_cwd;

	h.flags = rd_u32(&r);
	h.timeout_ms = rd_u32(&r);
	h.rows = rd_u16(&r);
	h.cols = rd_u16(&r);
	has_cwd = rd_u8(&r);
	if (has_cwd > 1 || (h.flags & ~PROTO_EXEC_FLAGS_ALL))
		return -EBADMSG;
	if (has_cwd) {
		if (!rd_str(&r, PROTO_MAX_STR, &len) || len == 0)
			return -EBADMSG;
		strbytes += len + 1;
	}
	h.argc = rd_u32(&r);
	if (r.bad || h.argc < 1 || h.argc > PROTO_MAX_ARGS)
		return -EBADMSG;
	for (uint32_t i = 0; i < h.argc; i++) {
		if (!rd_str(&r, PROTO_MAX_STR, &len))
			return -EBADMSG;
		strbytes += len + 1;
	}
	h.envc = rd_u32(&r);
	if (r.bad || h.envc > PROTO_MAX_ENV)
		return -EBADMSG;
	for (uint32_t i = 0; i < h.envc; i++) {
		const char *s = rd_str(&r, PROTO_MAX_STR, &len);
		if (!s || len == 0 || s[0] == '=' || !memchr(s, '=', len))
			return -EBADMSG;
		strbytes += len + 1;
	}
	if (rd_end(&r) < 0)
		return -EBADMSG;

	size_t ptrs = (size_t)(h.argc + 1 + h.envc + 1) * sizeof(char *);
	struct proto_exec *m = malloc(sizeof(*m) + ptrs + strbytes);
	if (!m)
		return -ENOMEM;
	*m = h;
	m->argv = (char **)(m + 1);
	m->envp = m->argv + h.argc + 1;
	char *s = (char *)(m->envp + h.envc + 1);

	/* second pass: the input was validated above, so these reads cannot fail */
	r = (struct rd){ p, n, 0 };
	rd_take(&r, 4 + 4 + 2 + 2 + 1);
	m->cwd = NULL;
	if (has_cwd) {
		const char *c = rd_str(&r, PROTO_MAX_STR, &len);
		memcpy(s, c, len);
		s[len] = 0;
		m->cwd = s;
		s += len + 1;
	}
	rd_u32(&r);
	for (uint32_t i = 0; i < h.argc; i++) {
		const char *c = rd_str(&r, PROTO_MAX_STR, &len);
		memcpy(s, c, len);
		s[len] = 0;
		m->argv[i] = s;
		s += len + 1;
	}
	m->argv[h.argc] = NULL;
	rd_u32(&r);
	for (uint32_t i = 0; i < h.envc; i++) {
		const char *c = rd_str(&r, PROTO_MAX_STR, &len);
		memcpy(s, c, len);
		s[len] = 0;
		m->envp[i] = s;
		s += len + 1;
	}
	m->envp[h.envc] = NULL;
	*ret = m;
	return 0;
}

void proto_exec_free(struct proto_exec *m)
{
	free(m);
}

/* ---- exit, error, small messages ---- */

int proto_exit_encode(const struct proto_exit *m, struct buf *out)
{
	struct wr w;
	if (m->kind > PROTO_EXIT_TIMEOUT || (m->flags & ~(uint32_t)PROTO_EXIT_FLAGS_ALL))
		return -EINVAL;
	wr_init(&w);
	wr_be(&w, m->kind, 1);
	wr_be(&w, (uint32_t)m->code, 4);
	wr_be(&w, m->wall_us, 8);
	wr_be(&w, m->utime_us, 8);
	wr_be(&w, m->stime_us, 8);
	wr_be(&w, m->maxrss_kb, 8);
	if (m->flags) /* the extension: only when there is something to say */
		wr_be(&w, m->flags, 4);
	return wr_finish(&w, PROTO_EXIT, out);
}

int proto_exit_decode(const uint8_t *p, size_t n, struct proto_exit *ret)
{
	struct rd r = { p, n, 0 };
	struct proto_exit m;
	m.kind = rd_u8(&r);
	m.code = (int32_t)rd_u32(&r);
	m.wall_us = rd_u64(&r);
	m.utime_us = rd_u64(&r);
	m.stime_us = rd_u64(&r);
	m.maxrss_kb = rd_u64(&r);
	m.flags = 0;
	if (!r.bad && r.n > 0) /* the extension; bits from a newer guest are dropped */
		m.flags = rd_u32(&r) & (uint32_t)PROTO_EXIT_FLAGS_ALL;
	if (rd_end(&r) < 0 || m.kind > PROTO_EXIT_TIMEOUT)
		return -EBADMSG;
	if (m.kind == PROTO_EXIT_CODE ? (m.code < 0 || m.code > 255) : (m.code < 1 || m.code > 64))
		return -EBADMSG;
	*ret = m;
	return 0;
}

int proto_exit_status(const struct proto_exit *m)
{
	switch (m->kind) {
	case PROTO_EXIT_CODE:
		return m->code;
	case PROTO_EXIT_SIGNAL:
		return 128 + m->code;
	default:
		return 124;
	}
}

int proto_error_encode(const struct proto_error *m, struct buf *out)
{
	struct wr w;
	wr_init(&w);
	wr_be(&w, (uint32_t)m->code, 4);
	wr_str(&w, m->message, PROTO_MSG_MAX - 1);
	return wr_finish(&w, PROTO_ERROR, out);
}

int proto_error_decode(const uint8_t *p, size_t n, struct proto_error *ret)
{
	struct rd r = { p, n, 0 };
	struct proto_error *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->code = (int32_t)rd_u32(&r);
	rd_str_fixed(&r, m->message, sizeof(m->message));
	int k = rd_end(&r);
	if (k == 0)
		*ret = *m;
	free(m);
	return k;
}

int proto_u32_encode(uint16_t type, uint32_t v, struct buf *out)
{
	uint8_t t[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	return proto_frame_append(out, type, t, sizeof(t));
}

int proto_u32_decode(const uint8_t *p, size_t n, uint32_t *ret)
{
	struct rd r = { p, n, 0 };
	uint32_t v = rd_u32(&r);
	if (rd_end(&r) < 0)
		return -EBADMSG;
	*ret = v;
	return 0;
}

int proto_winsize_encode(uint16_t rows, uint16_t cols, struct buf *out)
{
	uint8_t t[4] = { (uint8_t)(rows >> 8), (uint8_t)rows, (uint8_t)(cols >> 8), (uint8_t)cols };
	return proto_frame_append(out, PROTO_WINSIZE, t, sizeof(t));
}

int proto_winsize_decode(const uint8_t *p, size_t n, uint16_t *ret_rows, uint16_t *ret_cols)
{
	struct rd r = { p, n, 0 };
	uint16_t rows = rd_u16(&r), cols = rd_u16(&r);
	if (rd_end(&r) < 0)
		return -EBADMSG;
	*ret_rows = rows;
	*ret_cols = cols;
	return 0;
}

/* ---- vsock 5002: net-proxy preamble ---- */

static int comm_byte_ok(uint8_t c)
{
	return c >= 0x20 && c <= 0x7e;
}

ssize_t proto_net_preamble_decode(const void *p, size_t n, struct proto_net_preamble *ret)
{
	const uint8_t *b = p;
	struct proto_net_preamble m = { 0 };
	size_t magic = MIN(n, sizeof(PROTO_NET_MAGIC) - 1);

	/* refuse a bad prefix as soon as it shows, so a confused peer is not waited for */
	if (memcmp(b, PROTO_NET_MAGIC, magic) != 0)
		return -EBADMSG;
	if (n < 5)
		return -EAGAIN;
	if (b[4] != PROTO_NET_VERSION)
		return b[4] == 0 ? -EBADMSG : -EPROTO;
	if (n < PROTO_NET_HDR_SIZE)
		return -EAGAIN;
	size_t body = (size_t)b[5] << 8 | b[6];
	if (body < PROTO_NET_BODY_FIXED || body > PROTO_NET_BODY_FIXED + PROTO_NET_COMM_MAX)
		return -EBADMSG;
	if (n - PROTO_NET_HDR_SIZE < body)
		return -EAGAIN;

	struct rd r = { b + PROTO_NET_HDR_SIZE, body, 0 };
	uint8_t fam = rd_u8(&r);
	m.port = rd_u16(&r);
	memcpy(m.addr, rd_take(&r, 16), 16);
	m.pid = rd_u32(&r);
	uint8_t clen = rd_u8(&r);
	if (fam == 4)
		m.family = AF_INET;
	else if (fam == 6)
		m.family = AF_INET6;
	else
		return -EBADMSG;
	if (m.port == 0 || clen != body - PROTO_NET_BODY_FIXED)
		return -EBADMSG;
	if (m.family == AF_INET)
		for (size_t i = 4; i < 16; i++)
			if (m.addr[i])
				return -EBADMSG;
	const uint8_t *c = rd_take(&r, clen);
	for (size_t i = 0; i < clen; i++)
		if (!comm_byte_ok(c[i]))
			return -EBADMSG;
	if (rd_end(&r) < 0)
		return -EBADMSG;
	memcpy(m.comm, c, clen);
	m.comm[clen] = 0;
	*ret = m;
	return (ssize_t)(PROTO_NET_HDR_SIZE + body);
}

ssize_t proto_net_preamble_encode(const struct proto_net_preamble *pre, void *out, size_t cap)
{
	uint8_t *o = out;
	size_t clen = strnlen(pre->comm, sizeof(pre->comm));
	uint8_t fam;

	if (pre->family == AF_INET)
		fam = 4;
	else if (pre->family == AF_INET6)
		fam = 6;
	else
		return -EINVAL;
	if (pre->port == 0 || clen > PROTO_NET_COMM_MAX)
		return -EINVAL;
	if (fam == 4)
		for (size_t i = 4; i < 16; i++)
			if (pre->addr[i])
				return -EINVAL;
	for (size_t i = 0; i < clen; i++)
		if (!comm_byte_ok((uint8_t)pre->comm[i]))
			return -EINVAL;
	size_t body = PROTO_NET_BODY_FIXED + clen, total = PROTO_NET_HDR_SIZE + body;
	if (cap < total)
		return -ENOBUFS;
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result): the 4-byte wire magic, no NUL */
	memcpy(o, PROTO_NET_MAGIC, 4);
	o[4] = PROTO_NET_VERSION;
	o[5] = (uint8_t)(body >> 8);
	o[6] = (uint8_t)body;
	o[7] = fam;
	o[8] = (uint8_t)(pre->port >> 8);
	o[9] = (uint8_t)pre->port;
	memcpy(o + 10, pre->addr, 16);
	o[26] = (uint8_t)(pre->pid >> 24);
	o[27] = (uint8_t)(pre->pid >> 16);
	o[28] = (uint8_t)(pre->pid >> 8);
	o[29] = (uint8_t)pre->pid;
	o[30] = (uint8_t)clen;
	memcpy(o + 31, pre->comm, clen);
	return (ssize_t)total;
}

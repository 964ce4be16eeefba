/* chanmux.c - the channel mux's frames and per-stream state (chanmux.h).
 *
 * Streams live in a pool allocated once (CHANMUX_MAX_STREAMS entries) and a hash of ids, so an
 * input frame never allocates. Flow control per stream and direction: the receiver lets the
 * sender have CHANMUX_WINDOW bytes in flight; what the receiver's reader consumed goes back as
 * CREDIT, batched by half a window. Ids are handed out in increasing order and not reused until
 * the 31-bit space wraps, so a CLOSE still in flight for an old stream can never hit a new one.
 * Trust boundary: the peer's frames (guest or host) are hostile: every length, type and id is
 * checked, and a misused stream is reset. Pure; the caller's thread.
 */
#include "chanmux.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096u
#define NONE 0xffffu

enum { ST_OPENING_OUT = 1, ST_OPENING_IN, ST_OPEN };

struct stream {
	uint32_t id;
	uint8_t state, we_shut, peer_shut;
	uint16_t next;	   /* hash chain or free list */
	uint32_t tx_room;  /* bytes we may still send */
	uint32_t rx_allow; /* bytes the peer may still send */
	uint32_t rx_done;  /* bytes consumed here, not yet credited */
};

struct chanmux {
	enum chanmux_side side;
	int hello_seen;
	uint32_t nonce;	   /* (guest) our HELLO's: the host's answer carries it (0: none) */
	uint32_t max_data; /* DATA payload we send: the guest's frames fit one port write */
	int quiet;	   /* we sent PAUSE / PAUSED: emit nothing more (see chanmux.h) */
	int peer_paused;   /* (host) PAUSED arrived */
	uint32_t next_id;
	uint16_t free_head;
	size_t count;
	uint16_t bucket[NBUCKETS];
	struct stream s[CHANMUX_MAX_STREAMS];
};

_Static_assert(CHANMUX_MAX_STREAMS < NONE, "stream index must fit u16");

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int tag_valid(const char *t, size_t n)
{
	if (n > CHANMUX_TAG_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* ---- frames ---- */

ssize_t chanmux_frame_parse(const uint8_t *p, size_t n, struct chanmux_frame *ret)
{
	if (n < CHANMUX_HDR)
		return 0;
	uint32_t len = get32(p + 8);
	if (p[1] > CHANMUX_CLOSE_RESET || p[2] || p[3] || len > CHANMUX_MAX_DATA)
		return -EBADMSG;
	if (n - CHANMUX_HDR < len)
		return 0;
	struct chanmux_frame f = { .type = p[0], .flags = p[1], .id = get32(p + 4) };
	const uint8_t *pl = p + CHANMUX_HDR;
	switch (f.type) {
	case CHANMUX_HELLO: /* the version, then a nonce (not 0) when the guest started over */
		if (len != 4 && len != 8)
			return -EBADMSG;
		f.value = get32(pl);
		f.nonce = len == 8 ? get32(pl + 4) : 0;
		if (len == 8 && !f.nonce)
			return -EBADMSG;
		break;
	case CHANMUX_REFUSE:
	case CHANMUX_CREDIT:
		if (len != 4)
			return -EBADMSG;
		f.value = get32(pl);
		break;
	case CHANMUX_OPEN:
		if (len < 4 || !tag_valid((const char *)pl + 4, len - 4))
			return -EBADMSG;
		f.value = get32(pl);
		memcpy(f.tag, pl + 4, len - 4);
		f.tag[len - 4] = 0;
		break;
	case CHANMUX_DATA:
		f.data = pl;
		f.len = len;
		break;
	case CHANMUX_ACCEPT:
	case CHANMUX_SHUTW:
	case CHANMUX_CLOSE:
	case CHANMUX_PAUSE:
	case CHANMUX_PAUSED:
		if (len != 0)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	if (f.flags && f.type != CHANMUX_CLOSE)
		return -EBADMSG;
	*ret = f;
	return (ssize_t)(CHANMUX_HDR + len);
}

int chanmux_frame_append(struct buf *out, const struct chanmux_frame *f)
{
	uint8_t h[CHANMUX_HDR + 4 + CHANMUX_TAG_MAX];
	size_t extra = 0, tl = 0;
	const void *pl = NULL;
	switch (f->type) {
	case CHANMUX_HELLO:
		extra = f->nonce ? 8 : 4;
		break;
	case CHANMUX_REFUSE:
	case CHANMUX_CREDIT:
		extra = 4;
		break;
	case CHANMUX_OPEN:
		tl = strlen(f->tag);
		if (!tag_valid(f->tag, tl))
			return -EINVAL;
		extra = 4 + tl;
		break;
	case CHANMUX_DATA:
		if (f->len > CHANMUX_MAX_DATA)
			return -EMSGSIZE;
		pl = f->data;
		break;
	default:
		break;
	}
	uint32_t len = f->type == CHANMUX_DATA ? f->len : (uint32_t)extra;
	h[0] = f->type;
	h[1] = f->type == CHANMUX_CLOSE ? f->flags : 0;
	h[2] = h[3] = 0;
	put32(h + 4, f->id);
	put32(h + 8, len);
	if (extra >= 4)
		put32(h + CHANMUX_HDR, f->value);
	if (f->type == CHANMUX_HELLO && f->nonce)
		put32(h + CHANMUX_HDR + 4, f->nonce);
	if (tl)
		memcpy(h + CHANMUX_HDR + 4, f->tag, tl);
	int r = buf_append(out, h, CHANMUX_HDR + extra);
	if (r == 0 && pl && f->len)
		r = buf_append(out, pl, f->len);
	return r;
}

static int emit(struct buf *out, uint8_t type, uint32_t id, uint32_t value, uint8_t flags)
{
	struct chanmux_frame f = { .type = type, .id = id, .value = value, .flags = flags };
	return chanmux_frame_append(out, &f);
}

static int emit_hello(struct buf *out, uint32_t nonce)
{
	struct chanmux_frame f = { .type = CHANMUX_HELLO,
				   .value = CHANMUX_VERSION,
				   .nonce = nonce };
	return chanmux_frame_append(out, &f);
}

size_t chanmux_hello_bytes(uint32_t nonce, uint8_t *p)
{
	struct buf b = BUF_INIT(CHANMUX_HELLO_MAX);
	size_t n = 0;
	if (emit_hello(&b, nonce) == 0 && buf_len(&b) <= CHANMUX_HELLO_MAX) {
		n = buf_len(&b);
		memcpy(p, buf_head(&b), n);
	}
	buf_done(&b, 0);
	return n;
}

int chanmux_sync(const uint8_t *p, size_t n, uint32_t nonce, size_t *ret_skip)
{
	/* the HELLO we look for, whole; without a nonce, any HELLO with one: its first 16
	 * bytes */
	uint8_t want[CHANMUX_HELLO_MAX];
	size_t wn = chanmux_hello_bytes(nonce ? nonce : 1, want);
	size_t cmp = nonce ? wn : wn - 4;
	for (size_t i = 0; i + wn <= n; i++)
		if (memcmp(p + i, want, cmp) == 0) {
			*ret_skip = i;
			return 1;
		}
	/* not here: all but a tail that may begin it */
	*ret_skip = n >= wn ? n - (wn - 1) : 0;
	return 0;
}

/* A frame of a stream: nothing once the session is paused (its streams are doomed). */
static int emit_s(const struct chanmux *m, struct buf *out, uint8_t type, uint32_t id,
		  uint32_t value, uint8_t flags)
{
	return m->quiet ? 0 : emit(out, type, id, value, flags);
}

/* ---- streams ---- */

static uint16_t *chain(struct chanmux *m, uint32_t id)
{
	return &m->bucket[(id ^ (id >> 12) ^ (id >> 24)) & (NBUCKETS - 1)];
}

static struct stream *find(const struct chanmux *m, uint32_t id)
{
	uint16_t i = ((struct chanmux *)m)->bucket[(id ^ (id >> 12) ^ (id >> 24)) & (NBUCKETS - 1)];
	while (i != NONE && m->s[i].id != id)
		i = m->s[i].next;
	return i == NONE ? NULL : (struct stream *)&m->s[i];
}

static struct stream *add(struct chanmux *m, uint32_t id, uint8_t state)
{
	if (m->free_head == NONE)
		return NULL;
	uint16_t i = m->free_head;
	struct stream *s = &m->s[i];
	m->free_head = s->next;
	uint16_t *c = chain(m, id);
	*s = (struct stream){
		.id = id, .state = state, .next = *c, .rx_allow = CHANMUX_WINDOW, .tx_room = 0
	};
	*c = i;
	m->count++;
	return s;
}

static void drop(struct chanmux *m, struct stream *s)
{
	uint16_t idx = (uint16_t)(s - m->s);
	for (uint16_t *p = chain(m, s->id); *p != NONE; p = &m->s[*p].next)
		if (*p == idx) {
			*p = s->next;
			break;
		}
	s->state = 0;
	s->next = m->free_head;
	m->free_head = idx;
	m->count--;
}

/* Every stream forgotten, a fresh session (ids count on: a late frame of an old stream finds no
 * stream, as after a CLOSE). */
static void reset_all(struct chanmux *m)
{
	for (size_t i = 0; i < NBUCKETS; i++)
		m->bucket[i] = NONE;
	for (uint16_t i = 0; i < CHANMUX_MAX_STREAMS; i++) {
		m->s[i].state = 0;
		m->s[i].next = (unsigned)i + 1 < CHANMUX_MAX_STREAMS ? (uint16_t)(i + 1) : NONE;
	}
	m->free_head = 0;
	m->count = 0;
	m->quiet = m->peer_paused = 0;
}

int chanmux_new(enum chanmux_side side, struct buf *out, struct chanmux **ret)
{
	return chanmux_new_nonce(side, 0, out, ret);
}

int chanmux_new_nonce(enum chanmux_side side, uint32_t nonce, struct buf *out, struct chanmux **ret)
{
	if (nonce && side != CHANMUX_SIDE_GUEST)
		return -EINVAL;
	struct chanmux *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->side = side;
	m->nonce = nonce;
	m->max_data = side == CHANMUX_SIDE_GUEST ? CHANMUX_GUEST_MAX_DATA : CHANMUX_MAX_DATA;
	m->next_id = 1;
	reset_all(m);
	int r = emit_hello(out, nonce);
	if (r < 0) {
		free(m);
		return r;
	}
	*ret = m;
	return 0;
}

void chanmux_free(struct chanmux *m)
{
	free(m);
}

size_t chanmux_count(const struct chanmux *m)
{
	return m->count;
}

/* PAUSE (the host) or PAUSED (the guest): the last frame of this side's session. */
static int end_session(struct chanmux *m, enum chanmux_side side, uint8_t type, struct buf *out)
{
	if (m->side != side)
		return -EINVAL;
	if (m->quiet)
		return 0;
	int r = emit(out, type, 0, 0, 0);
	if (r == 0)
		m->quiet = 1;
	return r;
}

int chanmux_pause(struct chanmux *m, struct buf *out)
{
	return end_session(m, CHANMUX_SIDE_HOST, CHANMUX_PAUSE, out);
}

int chanmux_paused(struct chanmux *m, struct buf *out)
{
	return end_session(m, CHANMUX_SIDE_GUEST, CHANMUX_PAUSED, out);
}

int chanmux_is_paused(const struct chanmux *m)
{
	return m->quiet;
}

/* ids this side opens */
static uint32_t own_bit(const struct chanmux *m)
{
	return m->side == CHANMUX_SIDE_GUEST ? CHANMUX_GUEST_BIT : 0;
}

int chanmux_open(struct chanmux *m, uint32_t port, const char *tag, struct buf *out,
		 uint32_t *ret_id)
{
	if (!tag_valid(tag, strlen(tag)))
		return -EINVAL;
	if (m->count >= CHANMUX_MAX_STREAMS)
		return -ENOSPC;
	uint32_t id;
	do { /* the next id of our half not in use (0 is HELLO's) */
		id = (m->next_id++ & ~CHANMUX_GUEST_BIT) | own_bit(m);
	} while ((id & ~CHANMUX_GUEST_BIT) == 0 || find(m, id));
	struct chanmux_frame f = { .type = CHANMUX_OPEN, .id = id, .value = port };
	memcpy(f.tag, tag, strlen(tag) + 1);
	int r = m->quiet ? 0 : chanmux_frame_append(out, &f);
	if (r < 0)
		return r;
	if (!add(m, id, ST_OPENING_OUT))
		return -ENOSPC;
	*ret_id = id;
	return 0;
}

int chanmux_accept(struct chanmux *m, uint32_t id, struct buf *out)
{
	struct stream *s = find(m, id);
	if (!s || s->state != ST_OPENING_IN)
		return -ENOENT;
	int r = emit_s(m, out, CHANMUX_ACCEPT, id, 0, 0);
	if (r == 0) {
		s->state = ST_OPEN;
		s->tx_room = CHANMUX_WINDOW;
	}
	return r;
}

int chanmux_refuse(struct chanmux *m, uint32_t id, uint32_t err, struct buf *out)
{
	struct stream *s = find(m, id);
	if (!s || s->state != ST_OPENING_IN)
		return -ENOENT;
	int r = emit_s(m, out, CHANMUX_REFUSE, id, err, 0);
	drop(m, s);
	return r;
}

size_t chanmux_room(const struct chanmux *m, uint32_t id)
{
	const struct stream *s = find(m, id);
	return s && s->state == ST_OPEN && !s->we_shut && !m->quiet ? s->tx_room : 0;
}

ssize_t chanmux_send(struct chanmux *m, uint32_t id, const void *p, size_t n, struct buf *out)
{
	struct stream *s = find(m, id);
	if (!s || s->state != ST_OPEN)
		return -ENOENT;
	if (s->we_shut)
		return -EPIPE;
	size_t take = m->quiet ? 0 : n < s->tx_room ? n : s->tx_room, done = 0;
	while (done < take) {
		size_t k = take - done < m->max_data ? take - done : m->max_data;
		struct chanmux_frame f = { .type = CHANMUX_DATA,
					   .id = id,
					   .data = (const uint8_t *)p + done,
					   .len = (uint32_t)k };
		int r = chanmux_frame_append(out, &f);
		if (r < 0)
			return done ? (ssize_t)done : r;
		done += k;
		s->tx_room -= (uint32_t)k;
	}
	return (ssize_t)done;
}

int chanmux_consumed(struct chanmux *m, uint32_t id, size_t n, struct buf *out)
{
	struct stream *s = find(m, id);
	if (!s || s->state != ST_OPEN)
		return -ENOENT;
	if (n > CHANMUX_WINDOW - s->rx_allow - s->rx_done)
		return -EINVAL; /* more than arrived */
	s->rx_done += (uint32_t)n;
	if (s->rx_done < CHANMUX_WINDOW / 2 || s->peer_shut)
		return 0;
	int r = emit_s(m, out, CHANMUX_CREDIT, id, s->rx_done, 0);
	if (r == 0) {
		s->rx_allow += s->rx_done;
		s->rx_done = 0;
	}
	return r;
}

int chanmux_shutdown(struct chanmux *m, uint32_t id, struct buf *out)
{
	struct stream *s = find(m, id);
	if (!s || s->state != ST_OPEN)
		return -ENOENT;
	if (s->we_shut)
		return 0;
	int r = emit_s(m, out, CHANMUX_SHUTW, id, 0, 0);
	if (r == 0)
		s->we_shut = 1;
	return r;
}

int chanmux_close(struct chanmux *m, uint32_t id, int reset, struct buf *out)
{
	struct stream *s = find(m, id);
	if (!s)
		return -ENOENT;
	int r = emit_s(m, out, CHANMUX_CLOSE, id, 0, reset ? CHANMUX_CLOSE_RESET : 0);
	drop(m, s);
	return r;
}

/* The peer misused stream id: reset it here and there. */
static int reset(struct chanmux *m, uint32_t id, struct buf *out, struct chanmux_ev *ev)
{
	struct stream *s = find(m, id);
	if (s)
		drop(m, s);
	*ev = (struct chanmux_ev){ .type = s ? CHANMUX_EV_CLOSED : CHANMUX_EV_NONE,
				   .id = id,
				   .flags = CHANMUX_CLOSE_RESET };
	return emit_s(m, out, CHANMUX_CLOSE, id, 0, CHANMUX_CLOSE_RESET);
}

int chanmux_input(struct chanmux *m, const struct chanmux_frame *f, struct buf *out,
		  struct chanmux_ev *ret)
{
	struct chanmux_ev ev = { .type = CHANMUX_EV_NONE, .id = f->id };
	if (f->type == CHANMUX_HELLO && (f->id != 0 || f->value != CHANMUX_VERSION))
		return -EPROTO;
	if (!m->hello_seen) {
		/* the guest waits for the answer to its own HELLO (the caller skipped what came
		 * before it: chanmux_sync) */
		if (f->type != CHANMUX_HELLO || (m->nonce && f->nonce != m->nonce))
			return -EPROTO;
		m->hello_seen = 1;
		*ret = ev;
		if (m->side != CHANMUX_SIDE_HOST || !f->nonce)
			return 0;
		/* (host) a guest that said who it is gets its answer: the session starts there,
		 * so streams we opened before it were skipped by the guest: gone */
		if (m->count) {
			reset_all(m);
			*ret = (struct chanmux_ev){ .type = CHANMUX_EV_RESET };
		}
		return emit_hello(out, f->nonce);
	}
	if (f->type == CHANMUX_HELLO && m->side == CHANMUX_SIDE_HOST && f->nonce) {
		/* the guest's end started over (capsem-chan restarted): every stream of the old
		 * session is gone; answer it */
		reset_all(m);
		*ret = (struct chanmux_ev){ .type = CHANMUX_EV_RESET };
		return emit_hello(out, f->nonce);
	}
	if (f->type == CHANMUX_HELLO) {
		/* a new session after ours paused (the guest's side only) */
		if (m->side != CHANMUX_SIDE_GUEST || !m->quiet)
			return -EPROTO;
		reset_all(m);
		*ret = (struct chanmux_ev){ .type = CHANMUX_EV_RESET };
		return emit_hello(out, 0);
	}
	if (f->type == CHANMUX_PAUSE || f->type == CHANMUX_PAUSED) {
		/* PAUSE only from the host, PAUSED only in answer to ours; id 0 */
		int ok = f->id == 0 &&
			 (f->type == CHANMUX_PAUSE
				  ? m->side == CHANMUX_SIDE_GUEST
				  : m->side == CHANMUX_SIDE_HOST && m->quiet && !m->peer_paused);
		if (!ok)
			return -EPROTO;
		if (f->type == CHANMUX_PAUSED)
			m->peer_paused = 1;
		*ret = (struct chanmux_ev){ .type = f->type == CHANMUX_PAUSE ? CHANMUX_EV_PAUSE
									     : CHANMUX_EV_PAUSED };
		return 0;
	}
	if (m->quiet) { /* what crossed our PAUSE / PAUSED: its streams are doomed */
		*ret = ev;
		return 0;
	}
	struct stream *s = find(m, f->id);
	int r = 0;
	/* ids the peer opens are of its half; ours are of ours */
	int peer_half = (f->id & CHANMUX_GUEST_BIT) != own_bit(m);
	switch (f->type) {
	case CHANMUX_OPEN:
		if (!peer_half || (f->id & ~CHANMUX_GUEST_BIT) == 0 || s ||
		    m->count >= CHANMUX_MAX_STREAMS) {
			r = s || !peer_half ? reset(m, f->id, out, &ev)
					    : emit_s(m, out, CHANMUX_REFUSE, f->id, ENOSPC, 0);
			break;
		}
		if (!add(m, f->id, ST_OPENING_IN)) {
			r = emit_s(m, out, CHANMUX_REFUSE, f->id, ENOSPC, 0);
			break;
		}
		ev = (struct chanmux_ev){
			.type = CHANMUX_EV_OPEN, .id = f->id, .port = f->value, .tag = f->tag
		};
		break;
	case CHANMUX_ACCEPT:
	case CHANMUX_REFUSE:
		if (!s || s->state != ST_OPENING_OUT) {
			r = reset(m, f->id, out, &ev);
			break;
		}
		if (f->type == CHANMUX_REFUSE) {
			drop(m, s);
			ev = (struct chanmux_ev){ .type = CHANMUX_EV_REFUSED,
						  .id = f->id,
						  .value = f->value };
			break;
		}
		s->state = ST_OPEN;
		s->tx_room = CHANMUX_WINDOW;
		ev.type = CHANMUX_EV_ACCEPTED;
		break;
	case CHANMUX_DATA:
		if (!s || s->state != ST_OPEN || s->peer_shut || f->len > s->rx_allow) {
			/* (for an id we closed already, its data in flight: reset answers it) */
			r = reset(m, f->id, out, &ev);
			break;
		}
		s->rx_allow -= f->len;
		ev = (struct chanmux_ev){
			.type = CHANMUX_EV_DATA, .id = f->id, .data = f->data, .len = f->len
		};
		break;
	case CHANMUX_CREDIT:
		if (!s || s->state != ST_OPEN || (uint64_t)s->tx_room + f->value > CHANMUX_WINDOW) {
			r = reset(m, f->id, out, &ev);
			break;
		}
		s->tx_room += f->value;
		ev.type = CHANMUX_EV_WRITABLE;
		break;
	case CHANMUX_SHUTW:
		if (!s || s->state != ST_OPEN || s->peer_shut) {
			r = reset(m, f->id, out, &ev);
			break;
		}
		s->peer_shut = 1;
		ev.type = CHANMUX_EV_EOF;
		break;
	case CHANMUX_CLOSE:
		/* never answered: a CLOSE for a stream we forgot crossed ours */
		if (s) {
			drop(m, s);
			ev.type = CHANMUX_EV_CLOSED;
			ev.flags = f->flags;
		}
		break;
	default:
		return -EPROTO;
	}
	if (r < 0)
		return r;
	*ret = ev;
	return 0;
}

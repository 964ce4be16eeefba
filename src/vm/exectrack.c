/* exectrack.c - follow one exec session's frames for the session ledger (see exectrack.h).
 *
 * Trust boundary: both directions are untrusted here: the host side is any process that can
 * reach the VM's hybrid vsock socket, the guest side is the guest. Each direction is followed
 * with a 6-byte header assembler and a payload countdown; only the payloads the ledger needs
 * are kept (the first frame toward the guest, which must be EXEC, at most PROTO_MAX_PAYLOAD;
 * STARTED, EXIT and ERROR from the guest, at most SMALL_MAX), and they are decoded with the
 * fuzzed proto.h decoders. Anything that cannot be followed stops the tracking and is reported
 * as the session's error: the guest and the agent decide what the bytes do, not this module.
 *
 * Thread: capsem-vm's loop (or a test).
 */
#include "exectrack.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "macro.h"

#define SMALL_MAX (8u + PROTO_MSG_MAX) /* the largest guest frame kept: ERROR */

struct dir {
	uint8_t hdr[PROTO_HDR_SIZE];
	size_t hdr_n;
	uint16_t type;
	uint32_t len, left;
	bool keep; /* the payload of this frame is collected in payload */
	size_t frames;
	struct buf payload;
};

struct exectrack {
	struct exectrack_ops ops;
	void *userdata;
	struct dir d[2]; /* [1]: toward the guest, [0]: from it */
	struct proto_exec *exec;
	struct exectrack_info info;
	bool start_reported, end_reported, broken;
	char error[PROTO_MSG_MAX + 64];
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int exectrack_new(const struct exectrack_ops *ops, void *userdata, struct exectrack **ret)
{
	struct exectrack *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->ops = *ops;
	t->userdata = userdata;
	buf_init(&t->d[1].payload, PROTO_MAX_PAYLOAD);
	buf_init(&t->d[0].payload, SMALL_MAX);
	*ret = t;
	return 0;
}

static void report_end(struct exectrack *t, const char *error)
{
	if (t->end_reported || !t->start_reported)
		return;
	t->end_reported = true;
	t->info.ts_end = now_ms();
	if (!t->info.got_exit) {
		if (!t->error[0])
			snprintf(t->error, sizeof(t->error), "%s",
				 error ? error
				       : "the exec connection closed before the command's exit "
					 "status was seen");
		t->info.error = t->error;
	}
	t->ops.on_end(t->userdata, &t->info);
}

static void stop_following(struct exectrack *t, const char *why)
{
	t->broken = true;
	buf_done(&t->d[0].payload, 0);
	buf_done(&t->d[1].payload, 0);
	if (!t->error[0])
		snprintf(t->error, sizeof(t->error), "%s", why);
	report_end(t, why);
}

/* A whole kept frame. */
static void on_frame(struct exectrack *t, bool to_guest, uint16_t type, const uint8_t *p, size_t n)
{
	if (to_guest) {
		/* the first frame toward the guest: EXEC */
		if (proto_exec_decode(p, n, &t->exec) < 0) {
			stop_following(t,
				       "the exec frames could not be followed (a malformed EXEC)");
			return;
		}
		t->info.exec = t->exec;
		t->info.ts_start = now_ms();
		t->start_reported = true;
		t->ops.on_start(t->userdata, &t->info);
		return;
	}
	if (type == PROTO_STARTED) {
		if (proto_u32_decode(p, n, &t->info.pid) == 0)
			t->info.started = true;
	} else if (type == PROTO_EXIT) {
		if (proto_exit_decode(p, n, &t->info.exit) == 0) {
			t->info.got_exit = true;
			report_end(t, NULL);
		} else {
			report_end(t, "the guest agent sent a malformed EXIT frame");
		}
	} else if (type == PROTO_ERROR) {
		struct proto_error e;
		if (proto_error_decode(p, n, &e) == 0)
			snprintf(t->error, sizeof(t->error),
				 "the guest agent refused the command: %s", e.message);
		report_end(t, "the guest agent refused the command");
	}
}

/* Which frames' payloads are kept. */
static bool keep_frame(const struct exectrack *t, bool to_guest, const struct dir *d)
{
	if (to_guest)
		return d->frames == 0;
	return (d->type == PROTO_STARTED || d->type == PROTO_EXIT || d->type == PROTO_ERROR) &&
	       d->len <= SMALL_MAX;
}

void exectrack_feed(struct exectrack *t, bool to_guest, const uint8_t *p, size_t n)
{
	struct dir *d = &t->d[to_guest];
	while (n > 0 && !t->broken) {
		if (d->hdr_n < PROTO_HDR_SIZE) {
			size_t k = MIN(n, PROTO_HDR_SIZE - d->hdr_n);
			memcpy(d->hdr + d->hdr_n, p, k);
			d->hdr_n += k;
			p += k;
			n -= k;
			if (d->hdr_n < PROTO_HDR_SIZE)
				return;
			d->len = (uint32_t)d->hdr[0] << 24 | (uint32_t)d->hdr[1] << 16 |
				 (uint32_t)d->hdr[2] << 8 | d->hdr[3];
			d->type = (uint16_t)(d->hdr[4] << 8 | d->hdr[5]);
			if (d->len > PROTO_MAX_PAYLOAD) {
				stop_following(t, "the exec frames could not be followed (a frame "
						  "over the protocol's cap)");
				return;
			}
			if (to_guest && d->frames == 0 && d->type != PROTO_EXEC) {
				stop_following(t,
					       "the exec frames could not be followed (the first "
					       "frame is not EXEC)");
				return;
			}
			d->left = d->len;
			d->keep = keep_frame(t, to_guest, d);
			buf_consume(&d->payload, buf_len(&d->payload));
			if (d->type == PROTO_STDOUT && !to_guest)
				t->info.stdout_bytes += d->len;
			else if (d->type == PROTO_STDERR && !to_guest)
				t->info.stderr_bytes += d->len;
			else if (d->type == PROTO_STDIN && to_guest)
				t->info.stdin_bytes += d->len;
		}
		size_t k = MIN(n, (size_t)d->left);
		if (d->keep && k && buf_append(&d->payload, p, k) < 0) {
			stop_following(t, "the exec frames could not be followed (out of memory)");
			return;
		}
		p += k;
		n -= k;
		d->left -= (uint32_t)k;
		if (d->left == 0) {
			d->hdr_n = 0;
			d->frames++;
			if (d->keep) {
				on_frame(t, to_guest, d->type, buf_head(&d->payload),
					 buf_len(&d->payload));
				buf_consume(&d->payload, buf_len(&d->payload));
				if (to_guest) /* only the first frame is kept this way */
					buf_done(&d->payload, 0);
			}
		}
	}
}

void exectrack_close(struct exectrack *t, const char *why)
{
	if (!t)
		return;
	report_end(t, why);
	proto_exec_free(t->exec);
	buf_done(&t->d[0].payload, 0);
	buf_done(&t->d[1].payload, 0);
	free(t);
}

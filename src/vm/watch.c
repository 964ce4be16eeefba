/* watch.c - capsem-vm's watched file descriptors: an fd, a uv_poll on capsem-vm's loop, an
 * optional bounded input buffer, and the owner's callback.
 *
 * Used for the connections QEMU and the guest agent make (serial console, QMP, the agent's
 * control channel), QEMU's pidfd, the parent's --ipc-fd and the --control clients. Closing a
 * watch stops it at once and frees it (and closes the fd) from the loop.
 *
 * Trust boundary: none of its own; watch_fill() only bounds what is read (the buffer's cap):
 * the owners parse it. Thread: the libuv loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "capsem-vm.h"
#include "fdutil.h"
#include "macro.h"

static void watch_on_close(uv_handle_t *h)
{
	struct watch *w = h->data;
	safe_close(w->fd);
	buf_done(&w->in, 0);
	free(w);
}

void watch_close(struct watch **wp)
{
	struct watch *w = *wp;
	if (!w)
		return;
	*wp = NULL;
	uv_poll_stop(&w->h);
	uv_close((uv_handle_t *)&w->h, watch_on_close);
}

static void watch_dispatch(uv_poll_t *h, int status, int events)
{
	struct watch *w = h->data;
	w->cb(w, status < 0 ? UV_DISCONNECT | UV_READABLE : events);
}

struct watch *watch_new(struct vm *vm, int fd, int events, size_t in_cap,
			void (*cb)(struct watch *, int))
{
	struct watch *w = calloc(1, sizeof(*w));
	if (!w) {
		safe_close(fd);
		return NULL;
	}
	w->fd = fd;
	w->vm = vm;
	w->cb = cb;
	buf_init(&w->in, in_cap);
	if (uv_poll_init(vm->loop, &w->h, fd) < 0) {
		safe_close(fd);
		free(w);
		return NULL;
	}
	w->h.data = w;
	uv_poll_start(&w->h, events, watch_dispatch);
	return w;
}

/* Read what is available into w->in. 1 = data, 0 = EOF, -errno on error (-EAGAIN = nothing). */
int watch_fill(struct watch *w)
{
	size_t want = MIN(buf_room(&w->in), (size_t)16384);
	uint8_t *p = want ? buf_reserve(&w->in, want) : NULL;
	if (!p)
		return -ENOBUFS;
	ssize_t k = read(w->fd, p, want);
	if (k < 0)
		return errno == EAGAIN || errno == EINTR ? -EAGAIN : negative_errno();
	buf_commit(&w->in, (size_t)k);
	return k > 0;
}

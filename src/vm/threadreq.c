/* threadreq.c - see threadreq.h. */
#include "threadreq.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "macro.h"

int treq_init(struct threadreq *q)
{
	q->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->cmd_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	q->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	atomic_store(&q->cmd, 0);
	if (q->stop_fd >= 0 && q->cmd_fd >= 0 && q->done_fd >= 0)
		return 0;
	int r = negative_errno();
	treq_done(q);
	return r;
}

void treq_done(struct threadreq *q)
{
	q->stop_fd = safe_close(q->stop_fd);
	q->cmd_fd = safe_close(q->cmd_fd);
	q->done_fd = safe_close(q->done_fd);
}

int treq_take(struct threadreq *q)
{
	uint64_t v;
	(void)!read(q->cmd_fd, &v, sizeof(v));
	return atomic_exchange(&q->cmd, 0);
}

void treq_answer(struct threadreq *q, uint64_t v)
{
	(void)!write(q->done_fd, &v, sizeof(v));
}

int treq_call(struct threadreq *q, int cmd, int timeout_ms, uint64_t *ret_answer)
{
	uint64_t v = 1;
	while (read(q->done_fd, &v, sizeof(v)) > 0) /* a stale answer */
		;
	atomic_store(&q->cmd, cmd);
	v = 1;
	if (write(q->cmd_fd, &v, sizeof(v)) < 0)
		return negative_errno();
	struct pollfd p = { .fd = q->done_fd, .events = POLLIN };
	int k = poll(&p, 1, timeout_ms);
	if (k == 0)
		return -ETIMEDOUT;
	if (k < 0 || read(q->done_fd, ret_answer, sizeof(*ret_answer)) != sizeof(*ret_answer))
		return -EIO;
	return 0;
}

void treq_stop(struct threadreq *q)
{
	uint64_t one = 1;
	(void)!write(q->stop_fd, &one, sizeof(one));
}

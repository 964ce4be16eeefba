/* test-virtq.c - guest memory translation and split virtqueue walks over fake, hostile memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fakevq.h"
#include "guestmem.h"
#include "macro.h"
#include "virtq.h"

#define MEMSZ (256u * 1024)
#define GPA 0x100000ull

struct fx {
	uint8_t *buf;
	struct fakemem m;
	struct fakeq q;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->buf = aligned_alloc(4096, MEMSZ);
	memset(f->buf, 0, MEMSZ);
	fm_init(&f->m, f->buf, MEMSZ, GPA);
	fq_init(&f->q, &f->m, 8);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	free(f->buf);
	free(f);
	return 0;
}

/* ---- guestmem ---- */

static void test_guestmem_bounds(void **state)
{
	uint8_t a[100], b[50];
	struct guestmem gm;
	void *p;
	guestmem_init(&gm);
	assert_int_equal(guestmem_add(&gm, 1000, 0x5000, sizeof(a), a), 0);
	assert_int_equal(guestmem_add(&gm, 1100, 0x9000, sizeof(b), b), 0); /* adjacent in gpa */
	assert_int_equal(guestmem_add(&gm, 0, 0, 0, a), -EINVAL);
	assert_int_equal(guestmem_add(&gm, UINT64_MAX - 10, 0, 100, a), -EINVAL); /* wraps */

	assert_int_equal(guestmem_gpa(&gm, 1000, 100, &p), 0);
	assert_ptr_equal(p, a);
	assert_int_equal(guestmem_gpa(&gm, 1099, 1, &p), 0);
	assert_ptr_equal(p, a + 99);
	assert_int_equal(guestmem_gpa(&gm, 1000, 101, &p), -EFAULT); /* straddles: one-region API */
	assert_int_equal(guestmem_gpa(&gm, 999, 1, &p), -EFAULT);
	assert_int_equal(guestmem_gpa(&gm, 1150, 0, &p), -EFAULT);
	assert_int_equal(guestmem_gpa(&gm, 1100, UINT64_MAX, &p), -EFAULT);
	assert_int_equal(guestmem_gpa(&gm, UINT64_MAX, 2, &p), -EFAULT);
	assert_int_equal(guestmem_uva(&gm, 0x9000 + 49, 1, &p), 0);
	assert_ptr_equal(p, b + 49);
	assert_int_equal(guestmem_uva(&gm, 0x9000 + 49, 2, &p), -EFAULT);

	/* the iov form follows adjacent regions */
	struct iovec iov[4];
	size_t n = 0;
	assert_int_equal(guestmem_gpa_iov(&gm, 1090, 20, iov, 4, &n), 0);
	assert_int_equal(n, 2);
	assert_ptr_equal(iov[0].iov_base, a + 90);
	assert_int_equal(iov[0].iov_len, 10);
	assert_ptr_equal(iov[1].iov_base, b);
	assert_int_equal(iov[1].iov_len, 10);
	/* ...but not past the end of backed memory, nor wrapping, nor beyond max segments */
	n = 0;
	assert_int_equal(guestmem_gpa_iov(&gm, 1090, 61, iov, 4, &n), -EFAULT);
	assert_int_equal(n, 0);
	assert_int_equal(guestmem_gpa_iov(&gm, UINT64_MAX - 1, 4, iov, 4, &n), -EFAULT);
	assert_int_equal(guestmem_gpa_iov(&gm, 1090, 20, iov, 1, &n), -ENOBUFS);
	assert_int_equal(n, 0);
	guestmem_clear(&gm);
	assert_int_equal(gm.n, 0);
}

static void test_guestmem_fd(void **state)
{
	struct guestmem gm;
	void *p;
	int fd = memfd_create("t", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 8192), 0);
	guestmem_init(&gm);
	/* larger than the file: refused (would SIGBUS later) */
	assert_int_equal(guestmem_add_fd(&gm, 0, 0x1000, 8192, fd, 4096), -EINVAL);
	assert_int_equal(guestmem_add_fd(&gm, 0, 0x1000, 4096, fd, UINT64_MAX - 10), -EINVAL);
	assert_int_equal(guestmem_add_fd(&gm, 0, 0x1000, 4096, fd, 4096), 0);
	assert_int_equal(pwrite(fd, "xy", 2, 4096), 2);
	assert_int_equal(guestmem_gpa(&gm, 0, 2, &p), 0);
	assert_memory_equal(p, "xy", 2);
	guestmem_clear(&gm);
	close(fd);
}

/* ---- virtq ---- */

static void test_chain_ok(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	uint64_t g1 = fm_alloc(&f->m, 44, 8), g2 = fm_alloc(&f->m, 100, 8);
	uint64_t g3 = fm_alloc(&f->m, 200, 8);
	fq_set_desc(q, 3, g1, 44, VRING_DESC_F_NEXT, 5);
	fq_set_desc(q, 5, g2, 100, VRING_DESC_F_NEXT, 0);
	fq_set_desc(q, 0, g3, 200, VRING_DESC_F_WRITE, 0);
	fq_publish(q, 3);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	assert_int_equal(ch.head, 3);
	assert_int_equal(ch.n_out, 2);
	assert_int_equal(ch.n_in, 1);
	assert_int_equal(ch.out_len, 144);
	assert_int_equal(ch.in_len, 200);
	assert_ptr_equal(ch.iov[0].iov_base, fm_ptr(&f->m, g1));
	assert_ptr_equal(ch.iov[2].iov_base, fm_ptr(&f->m, g3));
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 0); /* empty */

	vq_push(&q->vq, 3, 17);
	uint16_t id;
	uint32_t len;
	assert_int_equal(fq_take_used(q, &id, &len), 1);
	assert_int_equal(id, 3);
	assert_int_equal(len, 17);
	assert_true(vq_take_signal(&q->vq));
	assert_false(vq_take_signal(&q->vq)); /* nothing new */
	/* the driver asks for no interrupts */
	fq_set_avail_flags(q, VRING_AVAIL_F_NO_INTERRUPT);
	fq_publish(q, 0);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	vq_push(&q->vq, ch.head, 0);
	assert_false(vq_take_signal(&q->vq));

	/* unpop gives the same chain again */
	fq_publish(q, 5);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	vq_unpop(&q->vq);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	assert_int_equal(ch.head, 5);
	assert_false(q->vq.broken);
}

static void test_chain_loop(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	uint64_t g = fm_alloc(&f->m, 16, 8);
	fq_set_desc(q, 1, g, 16, VRING_DESC_F_NEXT, 2);
	fq_set_desc(q, 2, g, 16, VRING_DESC_F_NEXT, 1); /* 1 -> 2 -> 1 ... */
	fq_publish(q, 1);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);
	assert_true(q->vq.broken);
	/* a broken queue is not processed again */
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 0);
}

static void test_chain_self_loop(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	fq_set_desc(q, 4, fm_alloc(&f->m, 8, 8), 0, VRING_DESC_F_NEXT,
		    4); /* zero-length, to itself */
	fq_publish(q, 4);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);
}

static void test_chain_longer_than_ring(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	uint64_t g = fm_alloc(&f->m, 8, 8);
	/* exactly num descriptors: fine */
	for (uint16_t i = 0; i < 8; i++)
		fq_set_desc(q, i, g, 8, i < 7 ? VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	fq_publish(q, 0);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	assert_int_equal(ch.n_out, 8);
	/* the last one points back: num+1 descriptors, a loop */
	fq_set_desc(q, 7, g, 8, VRING_DESC_F_NEXT, 0);
	fq_publish(q, 0);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);
}

static void test_bad_indices(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	uint64_t g = fm_alloc(&f->m, 8, 8);

	fq_publish(q, 8); /* head == num */
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);

	teardown(state); /* a fresh queue */
	setup(state);
	f = *state;
	q = &f->q;
	fq_set_desc(q, 0, g, 8, VRING_DESC_F_NEXT, 200); /* next out of range */
	fq_publish(q, 0);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);
}

static void test_avail_jump(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	fq_set_desc(q, 0, fm_alloc(&f->m, 8, 8), 8, 0, 0);
	fq_set_avail_idx(q, 8); /* exactly a full ring: legal */
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	fq_set_avail_idx(q, 1 + 9); /* now 9 ahead of last_avail (1): impossible */
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);
	assert_true(q->vq.broken);
}

static void test_avail_wraps(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	fq_set_desc(q, 0, fm_alloc(&f->m, 8, 8), 8, 0, 0);
	/* a ring that has been running for a long time: indices wrap at 65536 */
	q->vq.last_avail = 65534;
	q->avail_idx = 65534;
	for (int i = 0; i < 4; i++)
		fq_publish(q, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 1);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), 0);
	assert_int_equal(q->vq.last_avail, 2);
}

static void test_desc_outside(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	const uint64_t bad[][2] = {
		{ 0, 16 },		  /* below RAM */
		{ GPA + MEMSZ, 1 },	  /* just past the end */
		{ GPA + MEMSZ - 8, 16 },  /* straddles the end */
		{ UINT64_MAX - 7, 16 },	  /* addr + len wraps */
		{ GPA + 16, UINT32_MAX }, /* len past the end */
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct fx *g;
		setup((void **)&g);
		q = &g->q;
		fq_set_desc(q, 0, bad[i][0], (uint32_t)bad[i][1], 0, 0);
		fq_publish(q, 0);
		assert_int_equal(vq_pop(&q->vq, &g->m.gm, &ch), -EIO);
		teardown((void **)&g);
	}
	(void)f;
}

static void test_desc_straddles_regions(void **state)
{
	/* two regions, not adjacent in gpa: a buffer crossing the gap is refused; two adjacent
	 * regions: the buffer is split into two segments */
	uint8_t *a = aligned_alloc(4096, 65536), *b = aligned_alloc(4096, 4096);
	struct fakemem m;
	struct fakeq q;
	struct vq_chain ch;
	memset(a, 0, 65536);
	fm_init(&m, a, 65536, 0x10000);
	fq_init(&q, &m, 4);
	assert_int_equal(guestmem_add(&m.gm, 0x10000 + 65536, 0x1000000, 4096, b), 0);
	fq_set_desc(&q, 0, 0x10000 + 65536 - 10, 20, VRING_DESC_F_WRITE, 0);
	fq_publish(&q, 0);
	assert_int_equal(vq_pop(&q.vq, &m.gm, &ch), 1);
	assert_int_equal(ch.n_in, 2);
	assert_int_equal(ch.iov[0].iov_len, 10);
	assert_ptr_equal(ch.iov[1].iov_base, b);
	assert_int_equal(ch.in_len, 20);
	/* past the second region */
	fq_set_desc(&q, 1, 0x10000 + 65536 + 4090, 20, 0, 0);
	fq_publish(&q, 1);
	assert_int_equal(vq_pop(&q.vq, &m.gm, &ch), -EIO);
	free(a);
	free(b);
}

static void test_indirect_and_order(void **state)
{
	struct fx *f = *state;
	struct fakeq *q = &f->q;
	struct vq_chain ch;
	uint64_t g = fm_alloc(&f->m, 64, 16);
	fq_set_desc(q, 0, g, 64, VRING_DESC_F_INDIRECT, 0);
	fq_publish(q, 0);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);

	teardown(state); /* a fresh queue */
	setup(state);
	f = *state;
	q = &f->q;
	g = fm_alloc(&f->m, 64, 16);
	fq_set_desc(q, 0, g, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	fq_set_desc(q, 1, g + 8, 8, 0, 0); /* readable after writable */
	fq_publish(q, 0);
	assert_int_equal(vq_pop(&q->vq, &f->m.gm, &ch), -EIO);
}

static void test_too_many_segments(void **state)
{
	uint8_t *mem = aligned_alloc(4096, 1 << 20);
	struct fakemem m;
	struct fakeq q;
	struct vq_chain ch;
	memset(mem, 0, 1 << 20);
	fm_init(&m, mem, 1 << 20, 0);
	fq_init(&q, &m, 256);
	uint64_t g = fm_alloc(&m, 8, 8);
	for (uint16_t i = 0; i < 200; i++)
		fq_set_desc(&q, i, g, 8, i < 199 ? VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	fq_publish(&q, 0);
	assert_int_equal(vq_pop(&q.vq, &m.gm, &ch), -EIO); /* > VQ_MAX_IOV segments */
	free(mem);
}

static void test_map_checks(void **state)
{
	struct fx *f = *state;
	struct vq vq;
	vq_init(&vq);
	assert_int_equal(vq_map(&vq, &f->m.gm), -EINVAL); /* nothing set */
	vq = f->q.vq;
	vq.desc_uva += 8; /* misaligned */
	assert_int_equal(vq_map(&vq, &f->m.gm), -EINVAL);
	assert_false(vq_ready(&vq));
	vq = f->q.vq;
	vq.used_uva = (uintptr_t)f->buf + MEMSZ - 16; /* ring does not fit */
	assert_int_equal(vq_map(&vq, &f->m.gm), -EFAULT);
	vq = f->q.vq;
	vq.avail_uva = 0;
	assert_int_equal(vq_map(&vq, &f->m.gm), -EFAULT);
	/* used idx is read from the ring at setup, never later */
	vq = f->q.vq;
	vq.need_used_idx = true;
	uint16_t v = htole16(77);
	memcpy((uint8_t *)fm_ptr(&f->m, f->q.used) + 2, &v, 2);
	assert_int_equal(vq_map(&vq, &f->m.gm), 0);
	assert_int_equal(vq.used_idx, 77);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_guestmem_bounds),
		cmocka_unit_test(test_guestmem_fd),
		cmocka_unit_test_setup_teardown(test_chain_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_self_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_longer_than_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_indices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_avail_jump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_avail_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_desc_outside, setup, teardown),
		cmocka_unit_test(test_desc_straddles_regions),
		cmocka_unit_test_setup_teardown(test_indirect_and_order, setup, teardown),
		cmocka_unit_test(test_too_many_segments),
		cmocka_unit_test_setup_teardown(test_map_checks, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

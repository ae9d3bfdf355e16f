/* Descriptor chains (engine/vq.c vq_walk) on a hand-built split ring in
 * memfd guest memory: direct and indirect chains, loops, bad indices, bad
 * indirect tables, unmapped and wrapping buffers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "gmem.h"

static struct tring r;

static void setup(void)
{
	tring_init(&r, 256, NULL);
}

static void teardown(void)
{
	tring_fini(&r);
}

TestSuite(walk, .init = setup, .fini = teardown);

#define F_NEXT  VRING_DESC_F_NEXT
#define F_WRITE VRING_DESC_F_WRITE
#define F_IND   VRING_DESC_F_INDIRECT

static struct vq_chain *chain(void)
{
	return r.chain;
}

Test(walk, simple_chain)
{
	uint64_t h = tring_alloc(&r, 16, 16), d = tring_alloc(&r, 4096, 512),
		 s = tring_alloc(&r, 1, 1);
	struct seg segs[] = { { h, 16, false }, { d, 4096, true }, { s, 1, true } };
	uint16_t head = tring_chain(&r, segs, 3);
	struct vq_chain *c = chain();

	cr_assert_eq(vq_walk(r.vq, head, c), 0);
	cr_assert_eq(c->head, head);
	cr_assert(!c->fault);
	cr_assert_eq(c->nout, 1);
	cr_assert_eq(c->nin, 2);
	cr_assert_eq(c->out_len, 16);
	cr_assert_eq(c->in_len, 4097);
	cr_assert_eq(c->iov[0].iov_base, mem_gpa_to_host(r.g.t, h, 16));
	cr_assert_eq(c->iov[0].iov_len, 16);
	cr_assert_eq(c->iov[1].iov_base, mem_gpa_to_host(r.g.t, d, 1));
	cr_assert_eq(c->iov[1].iov_len, 4096);
	cr_assert_eq(c->iov[2].iov_base, mem_gpa_to_host(r.g.t, s, 1));
	cr_assert_eq(c->last_w_addr, s);
	cr_assert_eq(c->last_w_len, 1);
}

Test(walk, single_descriptor_and_zero_length)
{
	uint64_t b = tring_alloc(&r, 64, 8);
	struct vq_chain *c = chain();

	tring_set_desc(&r, 7, b, 64, 0, 0);
	cr_assert_eq(vq_walk(r.vq, 7, c), 0);
	cr_assert_eq(c->nout, 1);
	cr_assert_eq(c->nin, 0);
	/* zero-length descriptors add nothing, wherever they point */
	tring_set_desc(&r, 7, GAP_GPA, 0, F_NEXT, 8);
	tring_set_desc(&r, 8, b, 64, F_WRITE, 0);
	cr_assert_eq(vq_walk(r.vq, 7, c), 0);
	cr_assert(!c->fault);
	cr_assert_eq(c->nout, 0);
	cr_assert_eq(c->nin, 1);
	cr_assert_eq(c->in_len, 64);
}

Test(walk, walk_resets_previous_state)
{
	uint64_t b = tring_alloc(&r, 64, 8);
	struct vq_chain *c = chain();

	tring_set_desc(&r, 0, GAP_GPA, 16, 0, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(c->fault);
	tring_set_desc(&r, 1, b, 64, F_WRITE, 0);
	cr_assert_eq(vq_walk(r.vq, 1, c), 0);
	cr_assert(!c->fault);
	cr_assert_eq(c->nout, 0);
	cr_assert_eq(c->nin, 1);
	cr_assert_eq(c->out_len, 0);
}

Test(walk, buffer_straddling_regions)
{
	struct vq_chain *c = chain();

	tring_set_desc(&r, 0, R2_GPA - 100, 300, 0, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(!c->fault);
	cr_assert_eq(c->nout, 2);
	cr_assert_eq(c->out_len, 300);
	cr_assert_eq(c->iov[0].iov_len, 100);
	cr_assert_eq(c->iov[1].iov_len, 200);
	cr_assert_eq(c->iov[1].iov_base, (void *)r.g.t->regions[2].host);
}

Test(walk, loop_is_ebadmsg)
{
	uint64_t b = tring_alloc(&r, 16, 8);

	tring_set_desc(&r, 0, b, 16, F_NEXT, 1);
	tring_set_desc(&r, 1, b, 16, F_NEXT, 2);
	tring_set_desc(&r, 2, b, 16, F_NEXT, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* a descriptor pointing to itself */
	tring_set_desc(&r, 5, b, 16, F_NEXT, 5);
	cr_assert_eq(vq_walk(r.vq, 5, chain()), -EBADMSG);
	/* a loop of writable descriptors too */
	tring_set_desc(&r, 6, b, 16, F_NEXT | F_WRITE, 6);
	cr_assert_eq(vq_walk(r.vq, 6, chain()), -EBADMSG);
}

Test(walk, chain_of_exactly_num_descriptors)
{
	struct tring *t = &r;
	uint64_t b = tring_alloc(t, 16, 8);

	/* re-init with a small ring */
	t->vq->num = 8;
	t->num = 8;
	for (unsigned i = 0; i < 8; i++)
		tring_set_desc(t, i, b, 16, i < 7 ? F_NEXT : 0, (i + 1) % 8);
	cr_assert_eq(vq_walk(t->vq, 0, chain()), 0);
	cr_assert_eq(chain()->nout, 8);
	cr_assert_eq(chain()->out_len, 128);
	/* the same, starting in the middle and wrapping through index 0 */
	for (unsigned i = 0; i < 8; i++)
		tring_set_desc(t, i, b, 16, i != 2 ? F_NEXT : 0, (i + 1) % 8);
	cr_assert_eq(vq_walk(t->vq, 3, chain()), 0);
	cr_assert_eq(chain()->nout, 8);
	/* a ninth link can only be a loop */
	tring_set_desc(t, 2, b, 16, F_NEXT, 3);
	cr_assert_eq(vq_walk(t->vq, 3, chain()), -EBADMSG);
}

Test(walk, next_out_of_range)
{
	uint64_t b = tring_alloc(&r, 16, 8);

	tring_set_desc(&r, 0, b, 16, F_NEXT, 256);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	tring_set_desc(&r, 0, b, 16, F_NEXT, 0xffff);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	tring_set_desc(&r, 0, b, 16, F_NEXT, 255);
	tring_set_desc(&r, 255, b, 16, 0, 0xffff);     /* next ignored without NEXT */
	cr_assert_eq(vq_walk(r.vq, 0, chain()), 0);
}

Test(walk, head_out_of_range)
{
	cr_assert_eq(vq_walk(r.vq, 256, chain()), -EBADMSG);
	cr_assert_eq(vq_walk(r.vq, 0xffff, chain()), -EBADMSG);
	cr_assert_eq(vq_walk(r.vq, 255, chain()), 0);   /* zero descriptor: empty chain */
}

/* An indirect table of n descriptors at gpa (16-byte aligned). */
static struct vring_desc *itable(uint64_t *gpa, unsigned n)
{
	*gpa = tring_alloc(&r, n * sizeof(struct vring_desc), 16);
	return tring_ptr(&r, *gpa, n * sizeof(struct vring_desc));
}

static void idesc(struct vring_desc *t, unsigned i, uint64_t addr, uint32_t len,
		  uint16_t flags, uint16_t next)
{
	t[i] = (struct vring_desc){ addr, len, flags, next };
}

Test(walk, indirect_valid)
{
	uint64_t tg, h = tring_alloc(&r, 16, 16), d = tring_alloc(&r, 1024, 512),
		 s = tring_alloc(&r, 1, 1);
	struct vring_desc *t = itable(&tg, 4);
	struct vq_chain *c = chain();

	idesc(t, 0, h, 16, F_NEXT, 2);          /* out of order on purpose */
	idesc(t, 2, d, 1024, F_NEXT | F_WRITE, 3);
	idesc(t, 3, s, 1, F_WRITE, 0);
	idesc(t, 1, GAP_GPA, 999, 0, 0);         /* not part of the chain */
	tring_set_desc(&r, 9, tg, 4 * 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 9, c), 0);
	cr_assert(!c->fault);
	cr_assert_eq(c->head, 9);
	cr_assert_eq(c->nout, 1);
	cr_assert_eq(c->nin, 2);
	cr_assert_eq(c->out_len, 16);
	cr_assert_eq(c->in_len, 1025);
	cr_assert_eq(c->last_w_addr, s);
}

Test(walk, direct_then_indirect)
{
	uint64_t tg, h = tring_alloc(&r, 16, 16), s = tring_alloc(&r, 1, 1);
	struct vring_desc *t = itable(&tg, 1);
	struct vq_chain *c = chain();

	idesc(t, 0, s, 1, F_WRITE, 0);
	tring_set_desc(&r, 0, h, 16, F_NEXT, 1);
	tring_set_desc(&r, 1, tg, 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert_eq(c->nout, 1);
	cr_assert_eq(c->nin, 1);
}

Test(walk, indirect_bad_length)
{
	uint64_t tg;
	struct vring_desc *t = itable(&tg, 4);

	idesc(t, 0, tg, 16, 0, 0);
	tring_set_desc(&r, 0, tg, 0, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	tring_set_desc(&r, 0, tg, 20, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	tring_set_desc(&r, 0, tg, 15, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* more than VQ_MAX_SIZE entries (though in memory) */
	tring_set_desc(&r, 0, R1_GPA + 0x10000, (VQ_MAX_SIZE + 1) * 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	tring_set_desc(&r, 0, tg, 0xfffffff0, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	tring_set_desc(&r, 0, tg, 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), 0);
}

Test(walk, indirect_of_max_size)
{
	uint64_t tg, b = tring_alloc(&r, 16, 16);
	struct vring_desc *t = itable(&tg, VQ_MAX_SIZE);

	for (unsigned i = 0; i < VQ_MAX_SIZE; i++)
		idesc(t, i, b, 0, i + 1 < VQ_MAX_SIZE ? F_NEXT : 0, i + 1);
	tring_set_desc(&r, 0, tg, VQ_MAX_SIZE * 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), 0);
}

Test(walk, indirect_nested)
{
	uint64_t t1g, t2g, b = tring_alloc(&r, 16, 16);
	struct vring_desc *t1 = itable(&t1g, 2), *t2 = itable(&t2g, 1);

	idesc(t2, 0, b, 16, 0, 0);
	idesc(t1, 0, b, 16, F_NEXT, 1);
	idesc(t1, 1, t2g, 16, F_IND, 0);
	tring_set_desc(&r, 0, t1g, 32, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* an indirect table pointing at itself */
	idesc(t1, 0, t1g, 32, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
}

Test(walk, indirect_with_next)
{
	uint64_t tg, b = tring_alloc(&r, 16, 16);
	struct vring_desc *t = itable(&tg, 1);

	idesc(t, 0, b, 16, 0, 0);
	tring_set_desc(&r, 0, tg, 16, F_IND | F_NEXT, 1);
	tring_set_desc(&r, 1, b, 16, F_WRITE, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
}

Test(walk, indirect_outside_memory)
{
	tring_set_desc(&r, 0, GAP_GPA, 64, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* straddling two regions (contiguous in GPA): must be in one */
	tring_set_desc(&r, 0, R2_GPA - 32, 64, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* wrapping */
	tring_set_desc(&r, 0, UINT64_MAX - 31, 64, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* misaligned */
	tring_set_desc(&r, 0, R1_GPA + 0x20001, 64, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
}

Test(walk, indirect_loop_and_range)
{
	uint64_t tg, b = tring_alloc(&r, 16, 16);
	struct vring_desc *t = itable(&tg, 3);

	idesc(t, 0, b, 16, F_NEXT, 1);
	idesc(t, 1, b, 16, F_NEXT, 2);
	idesc(t, 2, b, 16, F_NEXT, 0);
	tring_set_desc(&r, 0, tg, 48, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	/* next past the end of the table (though inside the main table) */
	idesc(t, 2, b, 16, F_NEXT, 3);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), -EBADMSG);
	idesc(t, 2, b, 16, 0, 3);
	cr_assert_eq(vq_walk(r.vq, 0, chain()), 0);
	cr_assert_eq(chain()->nout, 3);
}

Test(walk, buffer_outside_memory_faults)
{
	uint64_t h = tring_alloc(&r, 16, 16), s = tring_alloc(&r, 1, 1);
	struct seg segs[] = { { h, 16, false }, { GAP_GPA, 512, true }, { s, 1, true } };
	uint16_t head = tring_chain(&r, segs, 3);
	struct vq_chain *c = chain();

	cr_assert_eq(vq_walk(r.vq, head, c), 0);
	cr_assert(c->fault);
	/* the status descriptor is still known */
	cr_assert_eq(c->last_w_addr, s);
	cr_assert_eq(c->last_w_len, 1);

	struct seg segs2[] = { { R3_GPA + R3_SIZE - 8, 16, false }, { s, 1, true } };
	head = tring_chain(&r, segs2, 2);
	cr_assert_eq(vq_walk(r.vq, head, c), 0);
	cr_assert(c->fault);
}

Test(walk, readable_after_writable_faults)
{
	uint64_t h = tring_alloc(&r, 16, 16), d = tring_alloc(&r, 512, 512),
		 s = tring_alloc(&r, 1, 1);
	struct seg segs[] = { { h, 16, false }, { d, 512, true }, { d, 512, false },
			      { s, 1, true } };
	uint16_t head = tring_chain(&r, segs, 4);
	struct vq_chain *c = chain();

	cr_assert_eq(vq_walk(r.vq, head, c), 0);
	cr_assert(c->fault);
	cr_assert_eq(c->last_w_addr, s);
}

Test(walk, length_wraps_address_space)
{
	uint64_t s = tring_alloc(&r, 1, 1);
	struct vq_chain *c = chain();

	/* addr + len wraps around 2^64 onto guest address 0 (mapped) */
	tring_set_desc(&r, 0, UINT64_MAX - 15, 32, F_NEXT, 1);
	tring_set_desc(&r, 1, s, 1, F_WRITE, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(c->fault);
	/* a huge length from a mapped start runs into the gap */
	tring_set_desc(&r, 0, R1_GPA, 0xffffffff, F_NEXT, 1);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(c->fault);
	/* many large descriptors: totals are 64-bit, nothing wraps */
	tring_set_desc(&r, 0, R1_GPA, (uint32_t)R1_SIZE, F_NEXT, 1);
	tring_set_desc(&r, 1, R1_GPA, (uint32_t)R1_SIZE, F_NEXT, 2);
	tring_set_desc(&r, 2, R2_GPA, (uint32_t)R2_SIZE, F_WRITE | F_NEXT, 3);
	tring_set_desc(&r, 3, R2_GPA, (uint32_t)R2_SIZE, F_WRITE, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(!c->fault);
	cr_assert_eq(c->out_len, 2 * R1_SIZE);
	cr_assert_eq(c->in_len, 2 * R2_SIZE);
}

Test(walk, too_many_iovecs_faults)
{
	uint64_t tg, b = tring_alloc(&r, 16, 16);
	struct vring_desc *t = itable(&tg, VQ_MAX_IOV + 1);
	struct vq_chain *c = chain();

	for (unsigned i = 0; i <= VQ_MAX_IOV; i++)
		idesc(t, i, b, 1, i + 1 < VQ_MAX_IOV ? F_NEXT : 0, i + 1);
	tring_set_desc(&r, 0, tg, VQ_MAX_IOV * 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);      /* exactly VQ_MAX_IOV: fine */
	cr_assert(!c->fault);
	cr_assert_eq(c->nout, VQ_MAX_IOV);
	t[VQ_MAX_IOV - 1].flags = F_NEXT;
	tring_set_desc(&r, 0, tg, (VQ_MAX_IOV + 1) * 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(c->fault);
	cr_assert_leq(c->nout + c->nin, VQ_MAX_IOV);
	/* straddling buffers count twice */
	for (unsigned i = 0; i < VQ_MAX_IOV / 2 + 1; i++)
		idesc(t, i, R2_GPA - 1, 2, i < VQ_MAX_IOV / 2 ? F_NEXT : 0, i + 1);
	tring_set_desc(&r, 0, tg, (VQ_MAX_IOV / 2 + 1) * 16, F_IND, 0);
	cr_assert_eq(vq_walk(r.vq, 0, c), 0);
	cr_assert(c->fault);
}

Test(walk, map_rings_checks)
{
	char err[256];
	struct vq *vq = &r.blk->vqs[1];

	vq->mem = r.g.t;
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EINVAL);     /* no size */
	vq->num = 256;
	vq->desc_uva = gmem_uva(&r.g, TR_DESC_GPA);
	vq->avail_uva = gmem_uva(&r.g, TR_AVAIL_GPA);
	vq->used_uva = gmem_uva(&r.g, TR_USED_GPA);
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), 0);
	/* guest-physical addresses are not user addresses */
	vq->desc_uva = TR_DESC_GPA;
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EFAULT);
	/* a desc table running off the end of its region */
	vq->desc_uva = gmem_uva(&r.g, R2_GPA + R2_SIZE - 0x800);
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EFAULT);
	vq->desc_uva = gmem_uva(&r.g, TR_DESC_GPA + 8);
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EINVAL);  /* misaligned */
	vq->desc_uva = gmem_uva(&r.g, TR_DESC_GPA);
	vq->used_uva = gmem_uva(&r.g, TR_USED_GPA + 2);
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EINVAL);
	vq->mem = NULL;
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EINVAL);
}

/* ---- dirty log ------------------------------------------------------------- */

static unsigned log_count(const uint8_t *bits, size_t len)
{
	unsigned n = 0;
	for (size_t i = 0; i < len; i++)
		n += (unsigned)__builtin_popcount(bits[i]);
	return n;
}

static bool log_has(const uint8_t *bits, uint64_t page)
{
	return bits[page / 8] & (1u << (page % 8));
}

Test(dirty_log, marks_exactly_the_pages_of_a_range)
{
	uint8_t bits[16] = { 0 };
	struct vq_log log = { bits, sizeof(bits) };

	vq_log_mark(&log, 0, 1);                        /* page 0 */
	vq_log_mark(&log, 3 * 4096 + 4095, 2);          /* pages 3 and 4 */
	vq_log_mark(&log, 7 * 4096, 10 * 4096);         /* pages 7..16: crosses two bytes */
	cr_expect_eq(log_count(bits, sizeof(bits)), 1 + 2 + 10);
	cr_expect(log_has(bits, 0) && log_has(bits, 3) && log_has(bits, 4));
	for (uint64_t p = 7; p <= 16; p++)
		cr_expect(log_has(bits, p), "page %lu", (unsigned long)p);
	cr_expect(!log_has(bits, 5) && !log_has(bits, 6) && !log_has(bits, 17));
	vq_log_mark(&log, 7 * 4096, 10 * 4096);         /* idempotent */
	cr_expect_eq(log_count(bits, sizeof(bits)), 13);
}

Test(dirty_log, pages_beyond_the_log_are_not_marked)
{
	uint8_t bits[3] = { 0 };        /* 24 pages, then a guard byte */
	struct vq_log log = { bits, 2 };

	vq_log_mark(&log, 14 * 4096, 100 * 4096);       /* pages 14..113: 14, 15 fit */
	cr_expect_eq(log_count(bits, 2), 2);
	cr_expect_eq(bits[2], 0, "wrote past the log");
	vq_log_mark(&log, UINT64_MAX - 10, 100);        /* wraps: nothing in range, no hang */
	vq_log_mark(&log, 1ull << 40, 4096);
	cr_expect_eq(bits[2], 0);
	cr_expect_eq(log_count(bits, 2), 2);
}

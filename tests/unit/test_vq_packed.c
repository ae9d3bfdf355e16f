/* The packed ring (engine/vq_packed.c) on a hand-built packed ring in memfd
 * guest memory, driven by a small driver written here from the spec (virtio
 * 1.2 §2.8): chains, indirect tables, wrap-around with the counters
 * flipping, used descriptors and event suppression, every hostile case
 * that must break the ring, the dirty log, SET/GET_VRING_BASE's encoding and
 * the inflight region across a simulated restart. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "gmem.h"
#include "virtio_blk.h"

#define F_NEXT  VRING_DESC_F_NEXT
#define F_WRITE VRING_DESC_F_WRITE
#define F_IND   VRING_DESC_F_INDIRECT
#define F_AVAIL VRING_PACKED_DESC_F_AVAIL
#define F_USED  VRING_PACKED_DESC_F_USED

static struct tring r;

/* The driver's side. */
static struct {
	struct vring_packed_desc *ring;
	struct vring_packed_event *drv, *dev;   /* driver's and device's event areas */
	unsigned num;
	uint16_t next_avail, next_used;
	bool avail_wrap, used_wrap;
	uint16_t ndesc[VQ_MAX_SIZE];            /* per buffer id */
} D;

static void start(unsigned num, bool ram)
{
	char err[256];
	struct vdev_params p;

	vdev_params_init(&p);
	p.backing = ram ? BE_RAM : BE_NULL;
	p.size = 1 << 20;
	/* the fixture maps a split ring (a power of two) first */
	tring_init(&r, 16, &p);
	vblk_queue_release(r.blk, r.vq);
	r.vq->num = r.num = num;
	r.vq->packed = true;
	cr_assert_eq(vblk_queue_prepare(r.blk, r.vq, err, sizeof(err)), 0, "%s", err);
	vq_engine_start(r.vq);
	r.vq->notify_on = true;
	vq_set_notify(r.vq, false);
	memset(&D, 0, sizeof(D));
	D.num = num;
	D.ring = tring_ptr(&r, TR_DESC_GPA, vring_packed_desc_size(num));
	D.drv = tring_ptr(&r, TR_AVAIL_GPA, 4);
	D.dev = tring_ptr(&r, TR_USED_GPA, 4);
	D.avail_wrap = D.used_wrap = true;
}

static void setup(void)
{
	start(16, true);
}

static void teardown(void)
{
	tring_fini(&r);
}

TestSuite(packed, .init = setup, .fini = teardown);

static uint16_t avail_flags(bool wrap)
{
	return wrap ? F_AVAIL : F_USED;
}

/* Make a chain of n buffers available under buffer id (the first
 * descriptor's flags last, as the spec asks); extra flags on descriptor i
 * from xflags (may be NULL).  Returns its first position. */
static uint16_t put_chain(const struct seg *segs, unsigned n, uint16_t id, const uint16_t *xflags)
{
	uint16_t first = D.next_avail, first_flags = 0;

	for (unsigned i = 0; i < n; i++) {
		struct vring_packed_desc *d = &D.ring[D.next_avail];
		uint16_t f = (segs[i].write ? F_WRITE : 0) | (i + 1 < n ? F_NEXT : 0) |
			     avail_flags(D.avail_wrap) | (xflags ? xflags[i] : 0);
		d->addr = segs[i].gpa;
		d->len = segs[i].len;
		d->id = id;
		if (i == 0)
			first_flags = f;
		else
			__atomic_store_n(&d->flags, f, __ATOMIC_RELEASE);
		if (++D.next_avail == D.num) {
			D.next_avail = 0;
			D.avail_wrap = !D.avail_wrap;
		}
	}
	D.ndesc[id] = n;
	__atomic_store_n(&D.ring[first].flags, first_flags, __ATOMIC_RELEASE);
	return first;
}

/* The next used descriptor, if any: its id and len. */
static bool get_used(uint16_t *id, uint32_t *len)
{
	struct vring_packed_desc *d = &D.ring[D.next_used];
	uint16_t f = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);

	if (!!(f & F_USED) != D.used_wrap || !!(f & F_AVAIL) != D.used_wrap)
		return false;
	*id = d->id;
	*len = d->len;
	cr_assert_lt(*id, D.num);
	cr_assert_gt(D.ndesc[*id], 0, "used id %u was not in flight", *id);
	D.next_used += D.ndesc[*id];
	D.ndesc[*id] = 0;
	if (D.next_used >= D.num) {
		D.next_used -= D.num;
		D.used_wrap = !D.used_wrap;
	}
	return true;
}

/* A virtio-blk request: header, data, status. */
struct req {
	uint64_t hdr, data, st;
	struct seg segs[3];
};

static void make_req(struct req *q, uint32_t type, uint64_t sector, uint32_t len)
{
	struct vblk_req_hdr *h;

	q->hdr = tring_alloc(&r, 16, 16);
	q->data = tring_alloc(&r, len, 512);
	q->st = tring_alloc(&r, 1, 1);
	h = tring_ptr(&r, q->hdr, 16);
	h->type = type;
	h->sector = sector;
	*(uint8_t *)tring_ptr(&r, q->st, 1) = 0xee;
	q->segs[0] = (struct seg){ q->hdr, 16, false };
	q->segs[1] = (struct seg){ q->data, len, type == VIRTIO_BLK_T_IN };
	q->segs[2] = (struct seg){ q->st, 1, true };
}

static uint8_t status_of(const struct req *q)
{
	return *(uint8_t *)tring_ptr(&r, q->st, 1);
}

static int poll(void)
{
	return vblk_poll(r.vq, &r.ctx, VQ_MAX_SIZE);
}

Test(packed, one_request_used_in_place)
{
	struct req q;
	uint16_t id;
	uint32_t len;

	make_req(&q, VIRTIO_BLK_T_IN, 0, 4096);
	cr_assert_eq(put_chain(q.segs, 3, 5, NULL), 0);
	cr_assert_eq(poll(), 1);
	cr_assert_eq(status_of(&q), VIRTIO_BLK_S_OK);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(id, 5);
	cr_assert_eq(len, 4097);
	/* written at the chain's first slot, with the device's wrap counter */
	cr_assert_eq(D.ring[0].flags & (F_AVAIL | F_USED | F_WRITE), F_AVAIL | F_USED | F_WRITE);
	cr_assert_eq(r.vq->last_avail, 3);
	cr_assert_eq(r.vq->used_idx, 3);
	cr_assert(!get_used(&id, &len));
	cr_assert_eq(poll(), 0);
	cr_assert_eq(r.broken_calls, 0);
}

Test(packed, walk_direct_chain)
{
	struct req q;
	uint16_t heads[VQ_BATCH];
	char why[128] = "";
	struct vq_chain *c = r.chain;

	make_req(&q, VIRTIO_BLK_T_IN, 0, 1024);
	put_chain(q.segs, 3, 9, NULL);
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 1);
	cr_assert_eq(heads[0], 9);
	cr_assert_eq(vq_walk(r.vq, 9, c), 0);
	cr_assert(!c->fault);
	cr_assert_eq(c->head, 9);
	cr_assert_eq(c->nout, 1);
	cr_assert_eq(c->nin, 2);
	cr_assert_eq(c->out_len, 16);
	cr_assert_eq(c->in_len, 1025);
	cr_assert_eq(c->iov[1].iov_base, mem_gpa_to_host(r.g.t, q.data, 1));
	cr_assert_eq(c->last_w_addr, q.st);
	/* nothing was taken: listing again gives the same */
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 1);
	cr_assert_eq(r.vq->last_avail, 0);
}

Test(packed, indirect_table)
{
	struct req q;
	uint64_t tg = tring_alloc(&r, 3 * 16, 16);
	struct vring_packed_desc *t = tring_ptr(&r, tg, 3 * 16);
	struct seg one = { tg, 3 * 16, false };
	uint16_t ind = F_IND, id;
	uint32_t len;

	make_req(&q, VIRTIO_BLK_T_IN, 8, 512);
	for (unsigned i = 0; i < 3; i++) {
		t[i].addr = q.segs[i].gpa;
		t[i].len = q.segs[i].len;
		/* NEXT and the id are ignored inside a table */
		t[i].flags = (q.segs[i].write ? F_WRITE : 0) | (i < 2 ? F_NEXT : 0);
		t[i].id = 0xdead;
	}
	put_chain(&one, 1, 2, &ind);
	cr_assert_eq(vq_avail_heads(r.vq, (uint16_t[VQ_BATCH]){ 0 }, VQ_BATCH, (char[64]){ 0 }, 64), 1);
	cr_assert_eq(vq_walk(r.vq, 2, r.chain), 0);
	cr_assert_eq(r.chain->nout, 1);
	cr_assert_eq(r.chain->nin, 2);
	cr_assert_eq(poll(), 1);
	cr_assert_eq(status_of(&q), VIRTIO_BLK_S_OK);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(id, 2);
	cr_assert_eq(len, 513);
	cr_assert_eq(r.vq->last_avail, 1);
}

/* Chains of 3 on a ring of 8 for several laps: positions and both wrap
 * counters flip where the ring ends, mid-chain included. */
static void laps(unsigned num)
{
	teardown();
	start(num, true);
	for (unsigned round = 0; round < 40; round++) {
		struct req q[2];
		uint16_t id;
		uint32_t len;
		unsigned n = round % 3 == 2 ? 2 : 1;

		r.heap = TR_HEAP_GPA;
		for (unsigned i = 0; i < n; i++) {
			make_req(&q[i], i ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, round, 512);
			put_chain(q[i].segs, 3, (uint16_t)((round + i) % num), NULL);
		}
		cr_assert_eq(poll(), (int)n, "round %u", round);
		for (unsigned i = 0; i < n; i++) {
			cr_assert(get_used(&id, &len), "round %u: no used descriptor", round);
			cr_assert_eq(id, (round + i) % num);
			cr_assert_eq(status_of(&q[i]), VIRTIO_BLK_S_OK);
		}
		cr_assert_eq(r.vq->last_avail, D.next_avail);
		cr_assert_eq(r.vq->avail_wrap, D.avail_wrap);
		cr_assert_eq(r.vq->used_idx, D.next_used);
		cr_assert_eq(r.vq->used_wrap, D.used_wrap);
	}
	cr_assert_eq(r.broken_calls, 0);
}

Test(packed, wraps_around_many_laps)
{
	laps(8);
}

/* A packed ring need not be a power of two long. */
Test(packed, wraps_around_a_ring_of_10)
{
	laps(10);
}

/* vq_avail_heads stops at a hostile entry and says why. */
static void expect_refused(const char *what, unsigned served)
{
	uint16_t heads[VQ_BATCH];
	char why[160] = "";

	cr_expect_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), (int)served, "%s", what);
	cr_expect_neq(why[0], 0, "%s: no reason given", what);
}

Test(packed, id_out_of_range_breaks)
{
	struct req q;

	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	put_chain(q.segs, 3, 16, NULL);
	expect_refused("id 16 of 16", 0);
	cr_assert_eq(poll(), -1);
	cr_assert_eq(r.broken_calls, 1);
	cr_assert_eq(status_of(&q), 0xee, "a refused chain was served");
}

Test(packed, id_in_flight_or_twice_breaks)
{
	struct req q[3];
	uint16_t heads[VQ_BATCH];
	char why[160] = "";

	for (unsigned i = 0; i < 3; i++)
		make_req(&q[i], VIRTIO_BLK_T_IN, 0, 512);
	put_chain(q[0].segs, 3, 4, NULL);
	put_chain(q[1].segs, 3, 4, NULL);       /* the same id twice in a batch */
	expect_refused("id twice in one batch", 1);
	/* taken and not completed: in flight */
	cr_assert_eq(vq_avail_heads(r.vq, heads, 1, why, sizeof(why)), 1);
	vq_take(r.vq, heads[0]);
	expect_refused("id 4 in flight", 0);
	vq_push_used(r.vq, 4, 1);
	vq_flush_used(r.vq);
	/* completed: the same id is fine again */
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 1, "%s", why);
}

Test(packed, chain_longer_than_ring_breaks)
{
	uint64_t b = tring_alloc(&r, 16, 16);

	/* 16 descriptors that all say NEXT: the chain never ends in the ring */
	for (unsigned i = 0; i < 16; i++) {
		D.ring[i] = (struct vring_packed_desc){ b, 16, 1, F_NEXT | F_AVAIL };
	}
	expect_refused("a chain that fills the ring and goes on", 0);
	/* exactly the ring: fine */
	D.ring[15].flags = F_AVAIL;
	cr_assert_eq(vq_avail_heads(r.vq, (uint16_t[VQ_BATCH]){ 0 }, VQ_BATCH,
				    (char[64]){ 0 }, 64), 1);
}

Test(packed, more_in_flight_than_the_ring_breaks)
{
	struct req q;
	uint16_t heads[VQ_BATCH];
	char why[160] = "";
	int n;

	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	/* 5 chains of 3: the ring holds 16 descriptors, the sixth would
	 * overlap the first while in flight */
	for (unsigned i = 0; i < 5; i++)
		put_chain(q.segs, 3, (uint16_t)i, NULL);
	n = vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why));
	cr_assert_eq(n, 5, "%s", why);
	for (int i = 0; i < n; i++)
		vq_take(r.vq, heads[i]);
	/* one descriptor free; a hostile driver makes 3 available over it */
	put_chain(q.segs, 3, 7, NULL);
	expect_refused("a chain over descriptors still in flight", 0);
}

Test(packed, wrap_bits_disagree_breaks)
{
	struct req q;
	uint16_t bad[3] = { 0, F_USED, 0 };     /* second descriptor: AVAIL==USED */

	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	put_chain(q.segs, 3, 1, bad);
	expect_refused("a chain's descriptor not available", 0);
	/* a first descriptor with the old wrap counter is simply not there */
	teardown();
	setup();
	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	D.avail_wrap = false;
	put_chain(q.segs, 3, 1, NULL);
	cr_assert_eq(vq_avail_heads(r.vq, (uint16_t[VQ_BATCH]){ 0 }, VQ_BATCH,
				    (char[64]){ 0 }, 64), 0);
	cr_assert_eq(poll(), 0);
	cr_assert_eq(r.broken_calls, 0);
}

/* The chain at slot 0: one indirect descriptor for the table at tg. */
static int walk_indirect(uint64_t tg, uint32_t tlen)
{
	uint16_t heads[VQ_BATCH];
	char why[128] = "";

	D.ring[0] = (struct vring_packed_desc){ tg, tlen, 3, F_IND | F_AVAIL };
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 1, "%s", why);
	return vq_walk(r.vq, 3, r.chain);
}

Test(packed, bad_indirect_tables)
{
	uint64_t tg = tring_alloc(&r, 64, 16), inner = tring_alloc(&r, 16, 16);
	struct vring_packed_desc *t = tring_ptr(&r, tg, 64);

	t[0] = (struct vring_packed_desc){ inner, 16, 0, F_IND };
	cr_assert_eq(walk_indirect(tg, 16), -EBADMSG, "indirect in indirect");
	t[0] = (struct vring_packed_desc){ inner, 16, 0, 0 };
	cr_assert_eq(walk_indirect(tg, 0), -EBADMSG, "zero-length table");
	cr_assert_eq(walk_indirect(tg, 20), -EBADMSG, "not whole descriptors");
	cr_assert_eq(walk_indirect(GAP_GPA, 16), -EBADMSG, "outside memory");
	cr_assert_eq(walk_indirect(R1_GPA + 0x20001, 16), -EBADMSG, "misaligned");
	cr_assert_eq(walk_indirect(tg, (VQ_MAX_SIZE + 1) * 16), -EBADMSG, "too long");
	cr_assert_eq(walk_indirect(tg, 16), 0, "the good one");
	cr_assert_eq(r.chain->nout, 1);
}

Test(packed, indirect_in_a_chain_breaks)
{
	uint64_t tg = tring_alloc(&r, 16, 16), b = tring_alloc(&r, 16, 16);
	struct seg segs[2] = { { b, 16, false }, { tg, 16, false } };
	uint16_t xf[2] = { 0, F_IND };

	((struct vring_packed_desc *)tring_ptr(&r, tg, 16))[0] =
		(struct vring_packed_desc){ b, 16, 0, F_WRITE };
	put_chain(segs, 2, 0, xf);
	cr_assert_eq(vq_avail_heads(r.vq, (uint16_t[VQ_BATCH]){ 0 }, VQ_BATCH,
				    (char[64]){ 0 }, 64), 1);
	cr_assert_eq(vq_walk(r.vq, 0, r.chain), -EBADMSG);
	cr_assert_eq(poll(), -1);
	cr_assert_eq(r.broken_calls, 1);
}

Test(packed, chain_rewritten_after_listing_breaks)
{
	struct req q;

	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	put_chain(q.segs, 3, 6, NULL);
	cr_assert_eq(vq_avail_heads(r.vq, (uint16_t[VQ_BATCH]){ 0 }, VQ_BATCH,
				    (char[64]){ 0 }, 64), 1);
	D.ring[1].flags &= ~F_NEXT;     /* the chain is now 2 long */
	cr_assert_eq(vq_walk(r.vq, 6, r.chain), -EBADMSG);
	cr_assert_eq(vq_walk(r.vq, 7, r.chain), -EBADMSG, "never listed");
	cr_assert_eq(vq_walk(r.vq, 16, r.chain), -EBADMSG, "out of range");
}

Test(packed, bad_buffer_fails_only_the_request)
{
	struct req q;
	uint16_t id;
	uint32_t len;

	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	q.segs[1].gpa = GAP_GPA;
	put_chain(q.segs, 3, 0, NULL);
	cr_assert_eq(poll(), 1);
	cr_assert_eq(status_of(&q), VIRTIO_BLK_S_IOERR);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(len, 1);
	cr_assert_eq(r.broken_calls, 0);
}

/* ---- notifications ---------------------------------------------------------- */

static unsigned calls(void)
{
	uint64_t v = 0;
	return read(r.vq->call_fd, &v, sizeof(v)) == sizeof(v) ? (unsigned)v : 0;
}

static void one_request(uint16_t id)
{
	struct req q;

	make_req(&q, VIRTIO_BLK_T_OUT, 0, 512);
	put_chain(q.segs, 3, id, NULL);
	cr_assert_eq(poll(), 1);
	cr_assert(get_used(&id, &(uint32_t){ 0 }));
}

Test(packed, driver_event_suppression)
{
	r.vq->call_fd = eventfd(0, EFD_NONBLOCK);
	cr_assert_geq(r.vq->call_fd, 0);
	D.drv->flags = VRING_PACKED_EVENT_F_ENABLE;
	one_request(0);
	cr_assert_eq(calls(), 1);
	D.drv->flags = VRING_PACKED_EVENT_F_DISABLE;
	one_request(1);
	cr_assert_eq(calls(), 0);
	/* DESC without EVENT_IDX negotiated: taken as ENABLE */
	D.drv->flags = VRING_PACKED_EVENT_F_DESC;
	one_request(2);
	cr_assert_eq(calls(), 1);
	/* with EVENT_IDX: only when the used position crosses off_wrap */
	r.vq->event_idx = true;
	D.drv->off_wrap = (uint16_t)(r.vq->used_idx + 6) | (r.vq->used_wrap ? 0x8000 : 0);
	one_request(3);                 /* used 9 -> 12: event at 15 not reached */
	cr_assert_eq(calls(), 0);
	one_request(4);                 /* 12 -> 15 */
	cr_assert_eq(calls(), 0);
	one_request(5);                 /* 15 -> 2 (wraps): crosses 15 */
	cr_assert_eq(calls(), 1);
	/* an event in the next lap is not reached yet */
	D.drv->off_wrap = 1 | (r.vq->used_wrap ? 0 : 0x8000);
	one_request(6);
	cr_assert_eq(calls(), 0);
}

Test(packed, device_event_suppression)
{
	struct req q;

	D.dev->flags = 0xffff;
	cr_assert(!vq_set_notify(r.vq, true));
	cr_assert_eq(D.dev->flags, VRING_PACKED_EVENT_F_ENABLE);
	vq_set_notify(r.vq, false);
	cr_assert_eq(D.dev->flags, VRING_PACKED_EVENT_F_DISABLE);
	make_req(&q, VIRTIO_BLK_T_IN, 0, 512);
	put_chain(q.segs, 3, 0, NULL);
	cr_assert(vq_set_notify(r.vq, true), "work arrived: do not sleep");
}

/* ---- dirty log ------------------------------------------------------------------ */

Test(packed, dirty_log_marks_the_descriptor_ring)
{
	static uint8_t bits[(R3_GPA + R3_SIZE) / 4096 / 8];
	struct vq_log log = { bits, sizeof(bits) };
	struct req q;
	uint64_t page = TR_DESC_GPA / 4096;

	r.vq->log = &log;
	make_req(&q, VIRTIO_BLK_T_IN, 0, 4096);
	put_chain(q.segs, 3, 0, NULL);
	cr_assert_eq(poll(), 1);
	cr_assert(bits[page / 8] & (1u << page % 8), "the used descriptor's page");
	page = q.data / 4096;
	cr_assert(bits[page / 8] & (1u << page % 8), "the data page");
	memset(bits, 0, sizeof(bits));
	vq_set_notify(r.vq, true);
	page = TR_USED_GPA / 4096;
	cr_assert(bits[page / 8] & (1u << page % 8), "the device event area's page");
	r.vq->log = NULL;
}

/* ---- SET/GET_VRING_BASE ------------------------------------------------------------ */

Test(packed, vring_base_encoding)
{
	struct vq *vq = &r.blk->vqs[1];
	char err[256];

	vq->packed = true;
	cr_assert_eq(vq_set_base(vq, 5 | 0x8000 | (3u << 16) | (1u << 31)), 0);
	cr_assert_eq(vq->last_avail, 5);
	cr_assert(vq->avail_wrap);
	cr_assert_eq(vq->used_idx, 3);
	cr_assert(vq->used_wrap);
	cr_assert_eq(vq_get_base(vq), 5 | 0x8000 | (3u << 16) | (1u << 31));
	/* only the avail half: nothing in flight */
	cr_assert_eq(vq_set_base(vq, 7), 0);
	cr_assert_eq(vq_get_base(vq), 7 | (7u << 16));
	/* positions beyond the ring are refused when it starts */
	vq->num = 16;
	vq->mem = r.g.t;
	vq->desc_uva = gmem_uva(&r.g, TR_DESC_GPA);
	vq->avail_uva = gmem_uva(&r.g, TR_AVAIL_GPA);
	vq->used_uva = gmem_uva(&r.g, TR_USED_GPA);
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), 0, "%s", err);
	vq_set_base(vq, 16 | 0x8000);
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EINVAL);
	/* used ahead of avail */
	vq_set_base(vq, 2 | 0x8000 | (3u << 16) | (1u << 31));
	cr_assert_eq(vq_prepare(vq, err, sizeof(err)), -EINVAL);
	vq_release(vq);
	/* split: 16 bits */
	vq->packed = false;
	cr_assert_eq(vq_set_base(vq, 0x10000), -EINVAL);
	cr_assert_eq(vq_set_base(vq, 0xffff), 0);
	cr_assert_eq(vq_get_base(vq), 0xffff);
}

/* ---- inflight region across a restart ------------------------------------------------- */

static struct vq_inflight_packed *infl;

static void restart_with(struct vq_inflight_packed *region)
{
	char err[256];

	/* what a new back-end does: prepare and recover the ring from the
	 * region, positions from SET_VRING_BASE (stale after a crash) */
	vq_release(r.vq);
	r.vq->last_avail = 0;
	r.vq->avail_wrap = true;
	r.vq->used_idx = 0;
	r.vq->used_wrap = true;
	r.vq->pinfl = region;
	cr_assert_eq(vblk_queue_prepare(r.blk, r.vq, err, sizeof(err)), 0, "%s", err);
	vq_inflight_recover(r.vq);
	vq_engine_start(r.vq);
}

Test(packed, inflight_resubmits_what_was_in_flight)
{
	struct req q[4];
	uint16_t heads[VQ_BATCH];
	char why[128] = "";
	uint16_t id;
	uint32_t len;

	infl = calloc(1, vq_inflight_packed_size(16));
	restart_with(infl);
	cr_assert_eq(infl->version, 1);
	cr_assert_eq(r.vq->nresubmit, 0);
	for (unsigned i = 0; i < 4; i++) {
		make_req(&q[i], VIRTIO_BLK_T_IN, i, 512);
		put_chain(q[i].segs, 3, (uint16_t)(10 + i), NULL);
	}
	/* the device takes all four, completes the 2nd and the 4th */
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 4);
	for (unsigned i = 0; i < 4; i++)
		vq_take(r.vq, heads[i]);
	vq_push_used(r.vq, 11, 1);
	vq_push_used(r.vq, 13, 1);
	vq_flush_used(r.vq);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(id, 11);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(id, 13);
	/* the used descriptors overwrote the first two chains' slots:
	 * the 1st and 3rd can only come back from the region */
	cr_assert_eq(D.ring[0].id, 11);
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 2);
	cr_assert_eq(r.vq->resubmit[0], 10, "oldest first");
	cr_assert_eq(r.vq->resubmit[1], 12);
	cr_assert_eq(r.vq->last_avail, 12);
	cr_assert_eq(r.vq->used_idx, 6);
	cr_assert_eq(poll(), 2);
	cr_assert_eq(status_of(&q[0]), VIRTIO_BLK_S_OK);
	cr_assert_eq(status_of(&q[2]), VIRTIO_BLK_S_OK);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(id, 10);
	cr_assert_eq(len, 513);
	cr_assert(get_used(&id, &len));
	cr_assert_eq(id, 12);
	/* and the ring goes on */
	one_request(3);
	cr_assert_eq(r.broken_calls, 0);
	r.vq->pinfl = NULL;
	free(infl);
}

Test(packed, inflight_batch_cut_short)
{
	struct req q[2];
	uint16_t heads[VQ_BATCH];
	char why[128] = "";
	uint16_t id;
	uint32_t len;

	infl = calloc(1, vq_inflight_packed_size(16));
	restart_with(infl);
	for (unsigned i = 0; i < 2; i++) {
		make_req(&q[i], VIRTIO_BLK_T_IN, i, 512);
		put_chain(q[i].segs, 3, (uint16_t)i, NULL);
	}
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 2);
	vq_take(r.vq, 0);
	vq_take(r.vq, 1);
	/* Crash in the middle of a flush: the batch is recorded, the second
	 * used descriptor's flags written, not the first's. */
	vq_push_used(r.vq, 1, 1);
	vq_push_used(r.vq, 0, 1);
	infl->used_idx = r.vq->used_idx;
	infl->used_wrap_counter = r.vq->used_wrap;
	D.ring[3].flags = F_AVAIL | F_USED;
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 2, "not published: both in flight");
	cr_assert(!(D.ring[3].flags & F_USED), "a half-published slot must not look used");
	cr_assert(!get_used(&id, &len));
	cr_assert_eq(poll(), 2);
	cr_assert(get_used(&id, &len));
	cr_assert(get_used(&id, &len));
	cr_assert(!get_used(&id, &len));

	/* Crash after the whole batch was published, before it was retired:
	 * it is done, not resubmitted. */
	make_req(&q[0], VIRTIO_BLK_T_IN, 0, 512);
	put_chain(q[0].segs, 3, 4, NULL);
	cr_assert_eq(vq_avail_heads(r.vq, heads, VQ_BATCH, why, sizeof(why)), 1);
	vq_take(r.vq, 4);
	vq_push_used(r.vq, 4, 1);
	infl->used_idx = r.vq->used_idx;
	infl->used_wrap_counter = r.vq->used_wrap;
	D.ring[6].flags = F_AVAIL | F_USED;     /* published */
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 0);
	cr_assert_eq(r.vq->used_idx, 9);
	cr_assert_eq(r.vq->last_avail, 9);
	r.vq->pinfl = NULL;
	free(infl);
}

Test(packed, inflight_region_that_does_not_hold_together)
{
	infl = calloc(1, vq_inflight_packed_size(16));
	restart_with(infl);
	/* two heads claiming the same entries */
	infl->desc[0] = (struct vq_inflight_packed_desc){ .inflight = 1, .num = 2, .next = 1,
							  .id = 0, .counter = 1 };
	infl->desc[5] = (struct vq_inflight_packed_desc){ .inflight = 1, .num = 2, .next = 1,
							  .id = 1, .counter = 2 };
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 0);
	/* ids out of range, lengths beyond the ring */
	infl->desc[0] = (struct vq_inflight_packed_desc){ .inflight = 1, .num = 1, .id = 99 };
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 0);
	infl->desc[0] = (struct vq_inflight_packed_desc){ .inflight = 1, .num = 17, .id = 1 };
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 0);
	infl->used_idx = 300;
	restart_with(infl);
	cr_assert_eq(r.vq->nresubmit, 0);
	cr_assert_eq(infl->version, 1);
	one_request(0);
	r.vq->pinfl = NULL;
	free(infl);
}

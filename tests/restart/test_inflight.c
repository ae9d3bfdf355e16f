/* Inflight replay is exact: after a crash, the requests that were in flight
 * run again, oldest first, and a request that completed before the crash —
 * even one whose completion was published just before it — is not repeated.
 * The rings and the inflight region are built by hand in memfd memory, as a
 * restarted vhostd finds them in the front-end's memory. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "gmem.h"

#define QSIZE   16
#define GPA     R1_GPA              /* guest-physical base, != user address */

/* guest memory layout (offsets from GPA): the rings where tring_init puts
 * them, then the requests */
#define DESC_OFF   (TR_DESC_GPA - GPA)
#define AVAIL_OFF  (TR_AVAIL_GPA - GPA)
#define USED_OFF   (TR_USED_GPA - GPA)
#define STATUS_OFF 0x7000           /* 1 byte per head */
#define HDR_OFF    0x10000          /* 16 bytes per head */
#define DATA_OFF   0x11000          /* 512 bytes per head */

_Static_assert(USED_OFF + 4 + 8 * QSIZE + 2 <= STATUS_OFF, "used ring overlaps the status bytes");

static struct tring r;              /* memory, vblk, queue 0, backend (ram) */
static uint8_t *g;                  /* our view of guest memory, from GPA */
static struct vq *vq;
static struct vq_inflight *infl;

static void setup(void)
{
	struct vdev_params p;

	vdev_params_init(&p);
	p.size = 1 << 20;
	tring_init(&r, QSIZE, &p);
	g = tring_ptr(&r, GPA, R1_SIZE);
	vq = r.vq;
	infl = calloc(1, vq_inflight_size(QSIZE));
	vq->infl = infl;
}

static void teardown(void)
{
	tring_fini(&r);
	free(infl);
}

/* Head h: a write of 512 bytes of `fill` to sector h. */
static void make_write(uint16_t h, uint8_t fill)
{
	struct vring_desc *desc = (struct vring_desc *)(g + DESC_OFF);
	struct vblk_req_hdr *hdr = (struct vblk_req_hdr *)(g + HDR_OFF + 16 * h);
	/* one indirect table per head, after the data area */
	struct vring_desc *t = (struct vring_desc *)(g + 0x20000 + 64 * h);
	hdr->type = VIRTIO_BLK_T_OUT;
	hdr->sector = h;
	memset(g + DATA_OFF + 512 * h, fill, 512);
	t[0] = (struct vring_desc){ GPA + HDR_OFF + 16 * h, 16, VRING_DESC_F_NEXT, 1 };
	t[1] = (struct vring_desc){ GPA + DATA_OFF + 512 * h, 512, VRING_DESC_F_NEXT, 2 };
	t[2] = (struct vring_desc){ GPA + STATUS_OFF + h, 1, VRING_DESC_F_WRITE, 0 };
	desc[h] = (struct vring_desc){ GPA + 0x20000 + 64 * h, 48, VRING_DESC_F_INDIRECT, 0 };
	g[STATUS_OFF + h] = 0xff;
}

static uint8_t backend_byte(uint16_t sector)
{
	uint8_t buf[512];
	struct iovec iov = { buf, sizeof(buf) };
	struct be_io io = { .op = BE_OP_READ, .offset = sector * 512ull, .len = 512,
			    .iov = &iov, .iovcnt = 1 };
	unsigned nsqe;

	cr_assert(r.blk->be->ops->submit(r.blk->be, &io, &r.ctx, &nsqe) == 0);
	return buf[0];
}

Test(inflight, replay_is_exact_out_of_order, .init = setup, .fini = teardown)
{
	struct vring_avail *avail = (struct vring_avail *)(g + AVAIL_OFF);
	struct vring_used *used = (struct vring_used *)(g + USED_OFF);
	/* Before the crash the driver made heads 0..7 available (avail idx 8).
	 * Completed, published and retired: 0, 2.  Completed and published
	 * but the crash came before the batch was retired: 5, 6 (their
	 * inflight marks are still set).  In flight, fetched in the order
	 * 4, 1, 7, 3 (counters 13, 11, 17, 12 -> order 1, 3, 4, 7). */
	static const uint16_t order[] = { 0, 2, 5, 6 };
	for (uint16_t h = 0; h < 8; h++) {
		make_write(h, 0xa0 + h);
		avail->ring[h] = h;
	}
	avail->idx = 8;
	for (unsigned i = 0; i < 4; i++) {
		used->ring[i].id = order[i];
		used->ring[i].len = 1;
	}
	used->idx = 4;

	infl->version = 1;
	infl->desc_num = QSIZE;
	infl->used_idx = 2;                     /* 5 and 6 not retired */
	infl->desc[6].next = 5;
	infl->last_batch_head = 6;              /* newest first */
	infl->desc[5].inflight = infl->desc[6].inflight = 1;
	infl->desc[5].counter = 14;
	infl->desc[6].counter = 15;
	infl->desc[4] = (struct vq_inflight_desc){ .inflight = 1, .counter = 13 };
	infl->desc[1] = (struct vq_inflight_desc){ .inflight = 1, .counter = 11 };
	infl->desc[7] = (struct vq_inflight_desc){ .inflight = 1, .counter = 17 };
	infl->desc[3] = (struct vq_inflight_desc){ .inflight = 1, .counter = 12 };

	/* What the completed ones wrote is on the "disk"; mark it so that a
	 * repetition would show. */
	vq->last_avail = 4;     /* what QEMU sends back: its used index */
	cr_assert_eq(vq_inflight_recover(vq), 4);
	cr_assert_eq(vq->last_avail, 8, "last_avail %u", vq->last_avail);
	cr_assert_eq(infl->used_idx, 4);
	cr_assert_eq(infl->desc[5].inflight, 0);
	cr_assert_eq(infl->desc[6].inflight, 0);

	/* Engine view: ring attached */
	vq->desc = (struct vring_desc *)(g + DESC_OFF);
	vq->avail = avail;
	vq->used = used;
	vq->used_idx = vq->signalled_used = used->idx;
	cr_assert_eq(vblk_poll(vq, &r.ctx, VQ_BATCH), 4);

	cr_assert_eq(used->idx, 8);
	static const uint16_t want[] = { 1, 3, 4, 7 };
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(used->ring[4 + i].id, want[i], "used[%u] = %u, want %u", 4 + i,
			     used->ring[4 + i].id, want[i]);
		cr_assert_eq(g[STATUS_OFF + want[i]], VIRTIO_BLK_S_OK);
		cr_assert_eq(backend_byte(want[i]), 0xa0 + want[i]);
	}
	/* completed before the crash: not run again */
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(backend_byte(order[i]), 0, "head %u repeated", order[i]);
		cr_assert_eq(g[STATUS_OFF + order[i]], 0xff);
	}
	/* nothing else pending, everything retired */
	cr_assert_eq(vblk_poll(vq, &r.ctx, VQ_BATCH), 0);
	cr_assert_eq(infl->used_idx, 8);
	for (unsigned h = 0; h < QSIZE; h++)
		cr_assert_eq(infl->desc[h].inflight, 0, "head %u still marked", h);

	/* New requests after the replay are tracked and retired again. */
	make_write(9, 0xb9);
	avail->ring[8] = 9;
	avail->idx = 9;
	cr_assert_eq(vblk_poll(vq, &r.ctx, VQ_BATCH), 1);
	cr_assert_eq(used->ring[8].id, 9);
	cr_assert_eq(infl->desc[9].inflight, 0);
	cr_assert_eq(infl->used_idx, 9);
	cr_assert(infl->desc[9].counter > 17);
}

Test(inflight, fresh_region_is_initialised, .init = setup, .fini = teardown)
{
	struct vring_used *used = (struct vring_used *)(g + USED_OFF);

	used->idx = 5;
	vq->last_avail = 5;
	memset(infl, 0x5a, vq_inflight_size(QSIZE));   /* garbage, wrong version */
	cr_assert_eq(vq_inflight_recover(vq), 0);
	cr_assert_eq(infl->version, 1);
	cr_assert_eq(infl->desc_num, QSIZE);
	cr_assert_eq(infl->used_idx, 5);
	cr_assert_eq(vq->last_avail, 5);
	for (unsigned h = 0; h < QSIZE; h++)
		cr_assert_eq(infl->desc[h].inflight, 0);
}

Test(inflight, hostile_region_is_bounded, .init = setup, .fini = teardown)
{
	struct vring_used *used = (struct vring_used *)(g + USED_OFF);

	/* A region whose batch list loops and points out of the queue, and
	 * whose used index is far off: recovery terminates and stays in
	 * bounds; marks that are not exactly 1 are ignored. */
	infl->version = 1;
	infl->desc_num = QSIZE;
	used->idx = 40000;
	infl->used_idx = 3;
	infl->last_batch_head = 2;
	infl->desc[2].next = 2;
	infl->desc[2].inflight = 1;
	infl->desc[9].inflight = 7;
	infl->desc[11].next = 0xffff;
	cr_assert_eq(vq_inflight_recover(vq), 0);
	cr_assert_eq(infl->used_idx, 40000);
}

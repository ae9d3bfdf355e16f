/* Fuzz target "vq": the split- and packed-ring descriptor walkers and the
 * virtio-blk request parser (engine/vq.c and engine/vq_packed.c: listing,
 * walking, used elements, notifications, inflight recovery; engine/blk.c)
 * on a ram backend, single threaded as an engine thread runs them.
 *
 * Guest memory: two memfd regions, contiguous in guest-physical space
 * (0x10000..0x30000) but not in user addresses or file offsets; nothing is
 * mapped above 0x30000.  The rings live at fixed places in the first region:
 *   desc 0x10000, avail 0x11000, used 0x11400, inflight region 0x11c00.
 * A packed ring (ctl bit 3) has its descriptor ring at desc, the driver's
 * event area at avail, the device's at used, and its inflight region at
 * 0x11c00 too.
 * Input:
 *   [0] flags: bits 0-2 log2(queue size), 3 EVENT_IDX, 4 read-only device,
 *       5 write cache, 6 inflight tracking, 7 recover
 *       the inflight region before polling
 *   [1..2] last_avail  [3..4] used->idx  (little endian); packed: the
 *       SET_VRING_BASE value, [1..2] avail position and wrap counter,
 *       [3..4] used position and wrap counter
 *   [5] bits 0-1: vq_poll calls - 1; bit 2: toggle notifications after;
 *       bit 3: packed ring
 *   [6..] guest memory from 0x10000 on (the rest stays zero)
 * Checks: sanitizers, and that every poll publishes what it completed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blk.h"
#include "fuzz.h"
#include "log.h"
#include "mem.h"
#include "vq.h"

#define GPA0      0x10000ull
#define RSIZE     0x10000ull
#define DESC_GPA  0x10000ull
#define AVAIL_GPA 0x11000ull
#define USED_GPA  0x11400ull
#define INFL_GPA  0x11c00ull
#define DEV_SIZE  (64 * 1024)

static struct {
	bool ready;
	int fd[2];
	uint8_t *map[2];                /* our view of each region */
	size_t len[2];
	struct mem_region_desc d[2];
	struct mem_table *mt;
	struct vdev_params params;      /* the device's, flags aside */
	struct vblk *blk;
	struct be_ctx ctx;
	int broken;
} F;

static void on_broken(struct vblk *b, struct vq *vq, const char *why)
{
	F.broken++;
}

static void init(void)
{
	const char *lvl = getenv("VHOSTD_FUZZ_LOG");
	char err[256];

	log_set_level(lvl ? log_parse_level(lvl) : -1);
	F.d[0] = (struct mem_region_desc){ GPA0, RSIZE, 0x7f0000010000ull, 0x1000 };
	F.d[1] = (struct mem_region_desc){ GPA0 + RSIZE, RSIZE, 0x7f1000000000ull, 0x3000 };
	for (unsigned i = 0; i < 2; i++) {
		F.len[i] = F.d[i].mmap_offset + RSIZE;
		F.fd[i] = memfd_create("fuzz-guest", MFD_CLOEXEC);
		if (F.fd[i] < 0 || ftruncate(F.fd[i], F.len[i]) < 0)
			abort();
		F.map[i] = mmap(NULL, F.len[i], PROT_READ | PROT_WRITE, MAP_SHARED, F.fd[i], 0);
		if (F.map[i] == MAP_FAILED)
			abort();
	}
	if (mem_table_map(F.d, F.fd, 2, &F.mt, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz-vq: %s\n", err);
		abort();
	}
	vdev_params_init(&F.params);
	F.params.size = DEV_SIZE;
	snprintf(F.params.serial, sizeof(F.params.serial), "FUZZSERIAL");
	F.ready = true;
}

/* Our pointer to guest memory at gpa (both regions are contiguous). */
static uint8_t *g2h(uint64_t gpa)
{
	unsigned i = gpa >= GPA0 + RSIZE;
	return F.map[i] + F.d[i].mmap_offset + (gpa - F.d[i].guest_phys_addr);
}

static uint64_t g2u(uint64_t gpa)
{
	unsigned i = gpa >= GPA0 + RSIZE;
	return F.d[i].userspace_addr + (gpa - F.d[i].guest_phys_addr);
}

/* Polls of a packed ring: each publishes what it completed. */
static int run_packed(struct vq *vq, uint8_t ctl)
{
	vq->notify_on = true;
	vq_set_notify(vq, false);
	for (unsigned i = 0; i <= (ctl & 3u); i++) {
		uint16_t before = vq->last_avail;
		int n = vblk_poll(vq, &F.ctx, VQ_MAX_SIZE);

		if (n > VQ_BATCH)
			abort();
		if (vq->last_avail >= vq->num || vq->used_idx >= vq->num)
			abort();
		if (n == 0 && vq->last_avail != before && vq->resubmitted == 0)
			abort();
		/* everything completed (ram completes at once) is published */
		if (vq->signalled_used != vq->used_idx || vq->signalled_wrap != vq->used_wrap) {
			fprintf(stderr, "fuzz-vq: packed used %u/%d, published %u/%d\n",
				vq->used_idx, vq->used_wrap, vq->signalled_used, vq->signalled_wrap);
			abort();
		}
		if (vq->inflight)
			abort();
		if (n <= 0)
			break;
	}
	if (ctl & 4) {
		vq_set_notify(vq, true);
		vq_set_notify(vq, false);
	}
	vblk_destroy(F.blk);
	F.blk = NULL;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vq *vq;
	struct vring_used *used;
	uint8_t flags, ctl;
	uint16_t last_avail, used_idx;
	size_t img, n0;
	char err[256];

	if (!F.ready)
		init();
	if (size < 6)
		return 0;
	flags = data[0];
	last_avail = data[1] | data[2] << 8;
	used_idx = data[3] | data[4] << 8;
	ctl = data[5];
	data += 6;
	size -= 6;

	/* guest memory: the input, then zeros */
	img = size < 2 * RSIZE ? size : 2 * RSIZE;
	n0 = img < RSIZE ? img : RSIZE;
	memcpy(g2h(GPA0), data, n0);
	memset(g2h(GPA0) + n0, 0, RSIZE - n0);
	memcpy(g2h(GPA0 + RSIZE), data + n0, img - n0);
	memset(g2h(GPA0 + RSIZE) + (img - n0), 0, RSIZE - (img - n0));

	F.params.readonly = flags & 0x10;
	if (vblk_create("fuzz", &F.params, &F.blk, err, sizeof(err)) < 0)
		abort();
	F.blk->wce = flags & 0x20;
	F.blk->ring_broken = on_broken;
	F.blk->owner = &F;
	F.broken = 0;

	vq = &F.blk->vqs[0];
	vq->num = 1u << (flags & 7);
	vq->mem = F.mt;
	vq->desc_uva = g2u(DESC_GPA);
	vq->avail_uva = g2u(AVAIL_GPA);
	vq->used_uva = g2u(USED_GPA);
	vq->event_idx = flags & 0x08;
	if (ctl & 8) {
		/* packed: the base as SET_VRING_BASE gives it; one that does
		 * not fit the ring is refused when it starts */
		vq->packed = true;
		vq_set_base(vq, last_avail | (uint32_t)used_idx << 16);
		if (vblk_queue_prepare(F.blk, vq, err, sizeof(err)) < 0) {
			vblk_destroy(F.blk);
			F.blk = NULL;
			return 0;
		}
		if (flags & 0x40) {
			vq->pinfl = (struct vq_inflight_packed *)g2h(INFL_GPA);
			if (flags & 0x80)
				vq_inflight_recover(vq);
		}
		vq_engine_start(vq);
		return run_packed(vq, ctl);
	}
	if (vblk_queue_prepare(F.blk, vq, err, sizeof(err)) < 0)
		abort();
	used = vq->used;
	WRITE_ONCE(used->idx, used_idx);
	/* what the engine does when it takes the queue */
	vq->last_avail = last_avail;
	vq->used_idx = vq->signalled_used = used_idx;
	if (flags & 0x40) {
		vq->infl = (struct vq_inflight *)g2h(INFL_GPA);
		if (flags & 0x80)
			vq_inflight_recover(vq);
	}
	vq->notify_on = true;
	vq_set_notify(vq, false);

	for (unsigned i = 0; i <= (ctl & 3u); i++) {
		uint16_t before = vq->last_avail;
		int n = vblk_poll(vq, &F.ctx, VQ_MAX_SIZE);

		if (n > VQ_BATCH)
			abort();
		if (n >= 0 && (uint16_t)(vq->last_avail - before) > (unsigned)n)
			abort();
		/* everything completed (ram completes at once) is published */
		if (READ_ONCE(used->idx) != vq->used_idx) {
			fprintf(stderr, "fuzz-vq: used->idx %u, device's %u\n",
				READ_ONCE(used->idx), vq->used_idx);
			abort();
		}
		if (vq->inflight)
			abort();
		if (n <= 0)
			break;
	}
	if (ctl & 4) {
		vq_set_notify(vq, true);
		vq_set_notify(vq, false);
	}
	vblk_destroy(F.blk);
	F.blk = NULL;
	return 0;
}

/* virtio-blk requests end to end on one queue: vq_poll -> vq_walk ->
 * vblk_handle -> ram backend -> used ring and notifications (engine/vq.c,
 * engine/blk.c, engine/be_ram.c), driven through a hand-built split ring in
 * memfd guest memory, without engine threads. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "gmem.h"

#define NUM      128
#define DEV_SIZE (1024 * 1024ull)
#define SECTORS  (DEV_SIZE / 512)
#define SERIAL   "vhostd-serial-01"

static struct tring r;

static void setup_rw(void)
{
	struct vdev_params p;

	vdev_params_init(&p);
	p.size = DEV_SIZE;
	snprintf(p.serial, sizeof(p.serial), "%s", SERIAL);
	tring_init(&r, NUM, &p);
}

static void setup_ro(void)
{
	struct vdev_params p;

	vdev_params_init(&p);
	p.size = DEV_SIZE;
	p.readonly = true;
	tring_init(&r, NUM, &p);
}

static void teardown(void)
{
	tring_fini(&r);
}

TestSuite(blk, .init = setup_rw, .fini = teardown);
TestSuite(blk_ro, .init = setup_ro, .fini = teardown);

/* ---- helpers ---------------------------------------------------------------- */

static uint8_t *status_of(uint64_t gpa)
{
	return tring_ptr(&r, gpa, 1);
}

/* Header in its own descriptor, data segments, a 1-byte status; published.
 * *st is the status gpa (preset to 0xee). */
static uint16_t req(uint32_t type, uint64_t sector, const struct seg *data, unsigned n,
		    uint64_t *st)
{
	struct seg segs[VQ_MAX_IOV];
	uint64_t h = tring_alloc(&r, 16, 16);
	struct vblk_req_hdr *hdr = tring_ptr(&r, h, 16);
	uint16_t head;

	cr_assert_lt(n + 2, VQ_MAX_IOV);
	hdr->type = type;
	hdr->ioprio = 0;
	hdr->sector = sector;
	*st = tring_alloc(&r, 1, 1);
	*status_of(*st) = 0xee;
	segs[0] = (struct seg){ h, 16, false };
	for (unsigned i = 0; i < n; i++)
		segs[i + 1] = data[i];
	segs[n + 1] = (struct seg){ *st, 1, true };
	head = tring_chain(&r, segs, n + 2);
	tring_publish(&r, head);
	return head;
}

/* One request with one data buffer; polls and returns the status. */
static uint8_t run1(uint32_t type, uint64_t sector, uint64_t buf, uint32_t len, bool write,
		    uint32_t *used_len)
{
	struct seg d = { buf, len, write };
	uint64_t st;
	uint16_t head = req(type, sector, &d, len ? 1 : 0, &st);
	uint16_t before = r.used->idx;

	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq((uint16_t)(r.used->idx - before), 1);
	cr_assert_eq(tring_used_elem(&r, before).id, head);
	if (used_len)
		*used_len = tring_used_elem(&r, before).len;
	return *status_of(st);
}

static void fill(uint64_t gpa, uint64_t len, uint8_t seed)
{
	uint8_t *p = tring_ptr(&r, gpa, len);
	for (uint64_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

static bool check(const uint8_t *p, uint64_t len, uint8_t seed)
{
	for (uint64_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)(seed + i * 7 + (i >> 9)))
			return false;
	return true;
}

static bool all_zero(const uint8_t *p, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* Read `len` bytes at sector into a fresh buffer; asserts OK. */
static uint8_t *read_back(uint64_t sector, uint32_t len)
{
	uint64_t b = tring_alloc(&r, len, 512);
	uint32_t ul;

	memset(tring_ptr(&r, b, len), 0xcc, len);
	cr_assert_eq(run1(VIRTIO_BLK_T_IN, sector, b, len, true, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(ul, len + 1);
	return tring_ptr(&r, b, len);
}

static uint64_t stat(_Atomic uint64_t *s)
{
	return atomic_load(s);
}

/* ---- data ------------------------------------------------------------------- */

Test(blk, write_then_read)
{
	uint64_t b = tring_alloc(&r, 4096, 512);
	uint32_t ul;

	fill(b, 4096, 1);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, 8, b, 4096, false, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(ul, 1);
	cr_assert(check(read_back(8, 4096), 4096, 1));
	/* a sub-range, and what was never written reads as zero */
	cr_assert(check(read_back(8, 512), 512, 1));
	cr_assert(all_zero(read_back(0, 4096), 4096));
	cr_assert(all_zero(read_back(16, 512), 512));
	cr_assert_eq(stat(&r.blk->stats[0].writes), 1);
	cr_assert_eq(stat(&r.blk->stats[0].reads), 4);
	cr_assert_eq(stat(&r.blk->stats[0].bytes_written), 4096);
	cr_assert_eq(stat(&r.blk->stats[0].bytes_read), 4096 + 512 + 4096 + 512);
	cr_assert_eq(stat(&r.blk->stats[0].errors), 0);
}

Test(blk, last_and_first_sector)
{
	uint64_t b = tring_alloc(&r, 512, 512);

	fill(b, 512, 9);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, SECTORS - 1, b, 512, false, NULL), VIRTIO_BLK_S_OK);
	cr_assert(check(read_back(SECTORS - 1, 512), 512, 9));
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, 0, b, 512, false, NULL), VIRTIO_BLK_S_OK);
	cr_assert(check(read_back(0, 512), 512, 9));
}

Test(blk, header_and_data_in_one_descriptor)
{
	uint64_t buf = tring_alloc(&r, 16 + 1024, 16), st = tring_alloc(&r, 1, 1);
	struct vblk_req_hdr *hdr = tring_ptr(&r, buf, 16);
	struct seg segs[] = { { buf, 16 + 1024, false }, { st, 1, true } };
	uint16_t head;

	hdr->type = VIRTIO_BLK_T_OUT;
	hdr->sector = 3;
	fill(buf + 16, 1024, 42);
	*status_of(st) = 0xee;
	head = tring_chain(&r, segs, 2);
	tring_publish(&r, head);
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_OK);
	cr_assert_eq(tring_used_elem(&r, 0).len, 1);

	/* read back with data and status in ONE writable descriptor */
	uint64_t h2 = tring_alloc(&r, 16, 16), in = tring_alloc(&r, 1025, 512);
	struct vblk_req_hdr *hdr2 = tring_ptr(&r, h2, 16);
	struct seg segs2[] = { { h2, 16, false }, { in, 1025, true } };
	hdr2->type = VIRTIO_BLK_T_IN;
	hdr2->sector = 3;
	head = tring_chain(&r, segs2, 2);
	tring_publish(&r, head);
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(tring_used_elem(&r, 1).len, 1025);
	cr_assert(check(tring_ptr(&r, in, 1024), 1024, 42));
	cr_assert_eq(*(uint8_t *)tring_ptr(&r, in + 1024, 1), VIRTIO_BLK_S_OK);
}

Test(blk, header_split_and_straddling)
{
	/* the header in two descriptors, the second straddling R1/R2 */
	uint64_t h1 = tring_alloc(&r, 8, 8), h2 = R2_GPA - 4, d = tring_alloc(&r, 512, 512);
	uint64_t st = tring_alloc(&r, 1, 1);
	struct vblk_req_hdr hdr = { VIRTIO_BLK_T_OUT, 0, 5 };
	struct seg segs[] = { { h1, 8, false }, { h2, 8, false }, { d, 512, false },
			      { st, 1, true } };

	memcpy(tring_ptr(&r, h1, 8), &hdr, 8);
	memcpy(tring_ptr(&r, h2, 4), (uint8_t *)&hdr + 8, 4);
	memcpy(tring_ptr(&r, R2_GPA, 4), (uint8_t *)&hdr + 12, 4);
	fill(d, 512, 77);
	tring_publish(&r, tring_chain(&r, segs, 4));
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_OK);
	cr_assert(check(read_back(5, 512), 512, 77));
}

Test(blk, data_over_many_segments)
{
	enum { NSEG = 100 };
	struct seg segs[NSEG];
	uint8_t *expect = malloc(NSEG * 512 + 1024);
	uint64_t total = 0, st;
	unsigned n = 0;

	/* scattered 512-byte segments in R1 and R2, one straddling them, and
	 * one of 1024 bytes */
	for (unsigned i = 0; i < NSEG - 2; i++) {
		uint64_t gpa = (i & 1) ? R2_GPA + 0x10000 + i * 0x1000 : tring_alloc(&r, 512, 512);
		segs[n++] = (struct seg){ gpa, 512, false };
	}
	segs[n++] = (struct seg){ R2_GPA - 256, 512, false };
	segs[n++] = (struct seg){ tring_alloc(&r, 1024, 512), 1024, false };
	for (unsigned i = 0; i < n; i++) {
		for (uint32_t j = 0; j < segs[i].len; j++) {
			uint8_t v = (uint8_t)(i * 31 + j);
			*(uint8_t *)tring_ptr(&r, segs[i].gpa + j, 1) = v;
			expect[total + j] = v;
		}
		total += segs[i].len;
	}
	req(VIRTIO_BLK_T_OUT, 100, segs, n, &st);
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_OK);
	cr_assert_eq(stat(&r.blk->stats[0].bytes_written), total);

	/* back in one buffer */
	cr_assert_eq(memcmp(read_back(100, total), expect, total), 0);

	/* back in segments of another shape, across the region boundary */
	struct seg in[3] = {
		{ tring_alloc(&r, 1536, 512), 1536, true },
		{ R2_GPA - 1024, 2048, true },
		{ R2_GPA + 0x80000, (uint32_t)total - 3584, true },
	};
	req(VIRTIO_BLK_T_IN, 100, in, 3, &st);
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_OK);
	cr_assert_eq(memcmp(tring_ptr(&r, in[0].gpa, 1536), expect, 1536), 0);
	cr_assert_eq(memcmp(tring_ptr(&r, R2_GPA - 1024, 1024), expect + 1536, 1024), 0);
	cr_assert_eq(memcmp(tring_ptr(&r, R2_GPA, 1024), expect + 2560, 1024), 0);
	cr_assert_eq(memcmp(tring_ptr(&r, in[2].gpa, total - 3584), expect + 3584,
			    total - 3584), 0);
	cr_assert_eq(tring_used_elem(&r, r.used->idx - 1).len, total + 1);
	free(expect);
}

Test(blk, too_many_segments_is_ioerr)
{
	enum { NSEG = VQ_MAX_IOV };     /* + header + status > VQ_MAX_IOV */
	uint64_t b = tring_alloc(&r, 512, 512), st;
	uint16_t head;

	/* needs an indirect table: more than NUM descriptors */
	uint64_t tg = tring_alloc(&r, (NSEG + 2) * 16, 16), h = tring_alloc(&r, 16, 16);
	struct vring_desc *t = tring_ptr(&r, tg, (NSEG + 2) * 16);
	struct vblk_req_hdr *hdr = tring_ptr(&r, h, 16);

	hdr->type = VIRTIO_BLK_T_OUT;
	st = tring_alloc(&r, 1, 1);
	t[0] = (struct vring_desc){ h, 16, VRING_DESC_F_NEXT, 1 };
	for (unsigned i = 0; i < NSEG; i++)
		t[i + 1] = (struct vring_desc){ b, 512, VRING_DESC_F_NEXT, i + 2 };
	t[NSEG + 1] = (struct vring_desc){ st, 1, VRING_DESC_F_WRITE, 0 };
	head = 0;
	tring_set_desc(&r, head, tg, (NSEG + 2) * 16, VRING_DESC_F_INDIRECT, 0);
	tring_publish(&r, head);
	*status_of(st) = 0xee;
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(r.broken_calls, 0);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(tring_used_elem(&r, 0).len, 1);
	cr_assert_eq(stat(&r.blk->stats[0].writes), 0);
}

Test(blk, out_of_range_is_ioerr)
{
	uint64_t b = tring_alloc(&r, 1024, 512);
	uint32_t ul;

	fill(b, 1024, 3);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, SECTORS, b, 512, false, &ul), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(ul, 1);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, SECTORS - 1, b, 1024, false, NULL), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run1(VIRTIO_BLK_T_IN, SECTORS - 1, b, 1024, true, &ul), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(ul, 1, "a failed read reports only the status byte");
	/* sector * 512 wrapping around 2^64 */
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, (UINT64_MAX / 512) + 1, b, 512, false, NULL),
		     VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run1(VIRTIO_BLK_T_IN, UINT64_MAX, b, 512, true, NULL), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run1(VIRTIO_BLK_T_IN, 1ull << 55, b, 512, true, NULL), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(stat(&r.blk->stats[0].errors), 6);
	/* the last sector is fine, and nothing of the above was written */
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, SECTORS - 1, b, 512, false, NULL), VIRTIO_BLK_S_OK);
	cr_assert(all_zero(read_back(SECTORS - 2, 512), 512));
	/* zero-length I/O at the very end is in range */
	cr_assert_eq(run1(VIRTIO_BLK_T_IN, SECTORS, 0, 0, true, NULL), VIRTIO_BLK_S_OK);
}

Test(blk, len_not_multiple_of_512_is_ioerr)
{
	uint64_t b = tring_alloc(&r, 1024, 512);

	fill(b, 1024, 5);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, 0, b, 513, false, NULL), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, 0, b, 511, false, NULL), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run1(VIRTIO_BLK_T_IN, 0, b, 100, true, NULL), VIRTIO_BLK_S_IOERR);
	cr_assert(all_zero(read_back(0, 1024), 1024));
}

Test(blk, unknown_type_is_unsupp)
{
	uint64_t b = tring_alloc(&r, 512, 512);
	uint32_t ul;

	cr_assert_eq(run1(99, 0, b, 512, true, &ul), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(ul, 1);
	cr_assert_eq(run1(2, 0, b, 512, false, NULL), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(run1(0xffffffff, 0, 0, 0, false, NULL), VIRTIO_BLK_S_UNSUPP);
	cr_assert_eq(run1(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(ul, 1);
	cr_assert_eq(stat(&r.blk->stats[0].flushes), 1);
	cr_assert_eq(stat(&r.blk->stats[0].errors), 3);
}

Test(blk, short_header_is_ioerr)
{
	uint64_t h = tring_alloc(&r, 16, 16), st = tring_alloc(&r, 1, 1);
	struct seg segs[] = { { h, 12, false }, { st, 1, true } };

	*status_of(st) = 0xee;
	tring_publish(&r, tring_chain(&r, segs, 2));
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(tring_used_elem(&r, 0).len, 1);
}

Test(blk, get_id)
{
	uint64_t b = tring_alloc(&r, 64, 8);
	uint8_t *p = tring_ptr(&r, b, 64);
	uint32_t ul;
	char want[20] = SERIAL;

	memset(p, 0xaa, 64);
	cr_assert_eq(run1(VIRTIO_BLK_T_GET_ID, 0, b, 20, true, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(ul, 21);
	cr_assert_eq(memcmp(p, want, 20), 0, "serial zero-padded to 20 bytes");
	/* a short buffer gets a prefix */
	memset(p, 0xaa, 64);
	cr_assert_eq(run1(VIRTIO_BLK_T_GET_ID, 0, b, 8, true, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(ul, 9);
	cr_assert_eq(memcmp(p, SERIAL, 8), 0);
	cr_assert_eq(p[8], 0xaa);
	/* a long one gets 20 bytes */
	memset(p, 0xaa, 64);
	cr_assert_eq(run1(VIRTIO_BLK_T_GET_ID, 0, b, 40, true, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(ul, 21);
	cr_assert_eq(memcmp(p, want, 20), 0);
	cr_assert_eq(p[20], 0xaa);
	/* a 20-byte serial has no terminator */
	memcpy(r.blk->params.serial, "ABCDEFGHIJKLMNOPQRST", 21);
	cr_assert_eq(run1(VIRTIO_BLK_T_GET_ID, 0, b, 20, true, &ul), VIRTIO_BLK_S_OK);
	cr_assert_eq(memcmp(p, "ABCDEFGHIJKLMNOPQRST", 20), 0);
	/* no serial: 20 zero bytes */
	r.blk->params.serial[0] = '\0';
	cr_assert_eq(run1(VIRTIO_BLK_T_GET_ID, 0, b, 20, true, &ul), VIRTIO_BLK_S_OK);
	cr_assert(all_zero(p, 20));
	cr_assert_eq(stat(&r.blk->stats[0].get_ids), 5);
}

/* ---- discard / write zeroes ------------------------------------------------- */

static uint8_t run_segs(uint32_t type, const struct vblk_discard_seg *ds, unsigned n)
{
	uint64_t b = tring_alloc(&r, n * sizeof(*ds) + 1, 16);

	if (n)
		memcpy(tring_ptr(&r, b, n * sizeof(*ds)), ds, n * sizeof(*ds));
	return run1(type, 0, b, n * sizeof(*ds), false, NULL);
}

static void write_pattern(uint64_t sector, uint32_t len, uint8_t seed)
{
	uint64_t b = tring_alloc(&r, len, 512);
	fill(b, len, seed);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, sector, b, len, false, NULL), VIRTIO_BLK_S_OK);
}

Test(blk, discard_zeroes_ram)
{
	struct vblk_discard_seg ds[2] = { { 2, 3, 0 }, { 40, 16, 0 } };
	uint8_t *p, *q;

	write_pattern(0, 64 * 512, 11);
	q = read_back(0, 64 * 512);
	cr_assert(check(q, 64 * 512, 11));
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds, 2), VIRTIO_BLK_S_OK);
	p = read_back(0, 64 * 512);
	cr_assert_eq(memcmp(p, q, 2 * 512), 0);
	cr_assert(all_zero(p + 2 * 512, 3 * 512));
	cr_assert_eq(memcmp(p + 5 * 512, q + 5 * 512, 35 * 512), 0);
	cr_assert(all_zero(p + 40 * 512, 16 * 512));
	cr_assert_eq(memcmp(p + 56 * 512, q + 56 * 512, 8 * 512), 0);
	cr_assert_eq(stat(&r.blk->stats[0].discards), 1);
}

Test(blk, discard_with_flags_is_unsupp)
{
	struct vblk_discard_seg ds = { 0, 8, 1 };       /* UNMAP is not a discard flag */

	write_pattern(0, 4096, 12);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, &ds, 1), VIRTIO_BLK_S_UNSUPP);
	ds.flags = 0x80000000;
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, &ds, 1), VIRTIO_BLK_S_UNSUPP);
	cr_assert(check(read_back(0, 4096), 4096, 12));
}

Test(blk, write_zeroes_unmap)
{
	/* 3..18: unaligned at both ends, covering a whole page in between */
	struct vblk_discard_seg ds = { 3, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP };
	uint8_t *p, *q;

	write_pattern(0, 24 * 512, 13);
	q = read_back(0, 24 * 512);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_WRITE_ZEROES, &ds, 1), VIRTIO_BLK_S_OK);
	p = read_back(0, 24 * 512);
	cr_assert_eq(memcmp(p, q, 3 * 512), 0);
	cr_assert(all_zero(p + 3 * 512, 16 * 512));
	cr_assert_eq(memcmp(p + 19 * 512, q + 19 * 512, 5 * 512), 0);
	cr_assert_eq(stat(&r.blk->stats[0].write_zeroes), 1);

	/* page-aligned whole pages, and without UNMAP */
	write_pattern(64, 64 * 512, 14);
	q = read_back(64, 64 * 512);
	ds = (struct vblk_discard_seg){ 72, 32, 0 };
	cr_assert_eq(run_segs(VIRTIO_BLK_T_WRITE_ZEROES, &ds, 1), VIRTIO_BLK_S_OK);
	p = read_back(64, 64 * 512);
	cr_assert_eq(memcmp(p, q, 8 * 512), 0);
	cr_assert(all_zero(p + 8 * 512, 32 * 512));
	cr_assert_eq(memcmp(p + 40 * 512, q + 40 * 512, 24 * 512), 0);
	/* the last sectors of the device */
	write_pattern(SECTORS - 8, 8 * 512, 15);
	ds = (struct vblk_discard_seg){ SECTORS - 8, 8, 1 };
	cr_assert_eq(run_segs(VIRTIO_BLK_T_WRITE_ZEROES, &ds, 1), VIRTIO_BLK_S_OK);
	cr_assert(all_zero(read_back(SECTORS - 8, 8 * 512), 8 * 512));
}

Test(blk, write_zeroes_bad_flag_is_unsupp)
{
	struct vblk_discard_seg ds = { 0, 8, 2 };

	write_pattern(0, 4096, 16);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_WRITE_ZEROES, &ds, 1), VIRTIO_BLK_S_UNSUPP);
	cr_assert(check(read_back(0, 4096), 4096, 16));
}

Test(blk, discard_segment_rules)
{
	struct vblk_discard_seg ds[VBLK_MAX_DISCARD_SEG + 1];

	for (unsigned i = 0; i <= VBLK_MAX_DISCARD_SEG; i++)
		ds[i] = (struct vblk_discard_seg){ i * 8, 8, 0 };
	write_pattern(0, 4096, 17);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds, VBLK_MAX_DISCARD_SEG + 1),
		     VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds, 0), VIRTIO_BLK_S_IOERR);
	/* a payload that is not a whole number of segments */
	uint64_t b = tring_alloc(&r, 24, 16);
	memcpy(tring_ptr(&r, b, 16), ds, 16);
	cr_assert_eq(run1(VIRTIO_BLK_T_DISCARD, 0, b, 24, false, NULL), VIRTIO_BLK_S_IOERR);
	/* the second segment out of range: nothing at all is discarded */
	ds[1] = (struct vblk_discard_seg){ SECTORS - 4, 8, 0 };
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds, 2), VIRTIO_BLK_S_IOERR);
	ds[1] = (struct vblk_discard_seg){ UINT64_MAX / 512 + 1, 1, 0 };
	cr_assert_eq(run_segs(VIRTIO_BLK_T_WRITE_ZEROES, ds, 2), VIRTIO_BLK_S_IOERR);
	ds[1] = (struct vblk_discard_seg){ 0, VBLK_MAX_DISCARD_SECTORS + 1, 0 };
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds, 2), VIRTIO_BLK_S_IOERR);
	cr_assert(check(read_back(0, 4096), 4096, 17));
	/* all sixteen: fine */
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds + 2, VBLK_MAX_DISCARD_SEG - 1),
		     VIRTIO_BLK_S_OK);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, ds, 1), VIRTIO_BLK_S_OK);
	cr_assert(all_zero(read_back(0, 4096), 4096));
}

/* ---- read-only ------------------------------------------------------------- */

Test(blk_ro, writes_refused_reads_work)
{
	uint64_t b = tring_alloc(&r, 4096, 512);
	struct vblk_discard_seg ds = { 0, 8, 0 };
	uint32_t ul;

	fill(b, 4096, 20);
	cr_assert_eq(run1(VIRTIO_BLK_T_OUT, 0, b, 4096, false, &ul), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(ul, 1);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_DISCARD, &ds, 1), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(run_segs(VIRTIO_BLK_T_WRITE_ZEROES, &ds, 1), VIRTIO_BLK_S_IOERR);
	cr_assert(all_zero(read_back(0, 4096), 4096));
	cr_assert_eq(run1(VIRTIO_BLK_T_FLUSH, 0, 0, 0, false, NULL), VIRTIO_BLK_S_OK);
	cr_assert_eq(stat(&r.blk->stats[0].writes), 0);
	cr_assert_eq(stat(&r.blk->stats[0].errors), 3);
}

/* ---- broken requests ---------------------------------------------------------- */

Test(blk, missing_status_descriptor)
{
	uint64_t h = tring_alloc(&r, 16, 16), d = tring_alloc(&r, 512, 512);
	struct vblk_req_hdr *hdr = tring_ptr(&r, h, 16);
	struct seg only_hdr[] = { { h, 16, false } };
	struct seg no_in[] = { { h, 16, false }, { d, 512, false } };
	struct seg empty_in[] = { { h, 16, false }, { d, 0, true } };

	hdr->type = VIRTIO_BLK_T_IN;
	tring_publish(&r, tring_chain(&r, only_hdr, 1));
	tring_publish(&r, tring_chain(&r, no_in, 2));
	tring_publish(&r, tring_chain(&r, empty_in, 2));
	cr_assert_eq(tring_poll(&r), 3);
	cr_assert_eq(r.used->idx, 3);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(tring_used_elem(&r, i).len, 0, "used len of request %u", i);
	cr_assert_eq(r.broken_calls, 0);
	cr_assert_eq(stat(&r.blk->stats[0].errors), 3);
	cr_assert_eq(stat(&r.blk->stats[0].reads), 0);
}

Test(blk, unmapped_data_is_ioerr)
{
	uint64_t st;
	struct seg d = { GAP_GPA + 0x100, 512, true };
	uint16_t head = req(VIRTIO_BLK_T_IN, 0, &d, 1, &st);

	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(tring_used_elem(&r, 0).id, head);
	cr_assert_eq(tring_used_elem(&r, 0).len, 1);
	/* status byte itself unmapped: nothing to write, used len 0 */
	struct seg segs[] = { { tring_alloc(&r, 16, 16), 16, false }, { GAP_GPA, 1, true } };
	tring_publish(&r, tring_chain(&r, segs, 2));
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(tring_used_elem(&r, 1).len, 0);
	/* readable after writable: IOERR in the last writable byte */
	uint64_t h = tring_alloc(&r, 16, 16), b = tring_alloc(&r, 512, 512);
	st = tring_alloc(&r, 1, 1);
	struct seg bad[] = { { h, 16, false }, { b, 512, true }, { b, 512, false },
			     { st, 1, true } };
	*status_of(st) = 0xee;
	tring_publish(&r, tring_chain(&r, bad, 4));
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_IOERR);
	cr_assert_eq(tring_used_elem(&r, 2).len, 1);
	cr_assert_eq(r.broken_calls, 0);
}

/* A writable descriptor whose range wraps around the end of the address
 * space is unusable; its "last byte" (addr + len - 1, wrapped) is not a
 * buffer of this request and must not be written. */
Test(blk, wrapping_status_descriptor_not_written)
{
	uint64_t h = tring_alloc(&r, 16, 16);
	struct vblk_req_hdr *hdr = tring_ptr(&r, h, 16);
	uint8_t *low = tring_ptr(&r, 15, 1);    /* guest address 15 (R0) */
	struct seg segs[] = { { h, 16, false }, { UINT64_MAX - 15, 32, true } };

	hdr->type = VIRTIO_BLK_T_IN;
	*low = 0x5a;
	tring_publish(&r, tring_chain(&r, segs, 2));
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(*low, 0x5a, "IOERR was written to guest address 15 (wrapped status)");
	cr_assert_eq(tring_used_elem(&r, 0).len, 0);
}

/* ---- ring-level checks ------------------------------------------------------ */

static uint16_t flush_req(uint64_t *st)
{
	return req(VIRTIO_BLK_T_FLUSH, 0, NULL, 0, st);
}

static uint64_t eventfd_value(int fd)
{
	uint64_t v = 0;
	if (read(fd, &v, sizeof(v)) != sizeof(v)) {
		cr_assert_eq(errno, EAGAIN);
		return 0;
	}
	return v;
}

Test(blk, avail_idx_jump_breaks_ring)
{
	uint64_t st;
	uint16_t head = flush_req(&st);

	r.vq->err_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	for (unsigned i = 0; i < NUM; i++)
		r.avail->ring[i] = head;
	/* exactly num ahead is legal */
	r.avail->idx = NUM;
	int n, total = 0;
	while ((n = tring_poll(&r)) > 0) {
		cr_assert_leq(n, VQ_BATCH);
		total += n;
	}
	cr_assert_eq(n, 0);
	cr_assert_eq(total, NUM);
	cr_assert_eq(r.broken_calls, 0);
	cr_assert_eq(r.used->idx, NUM);
	/* num + 1 ahead is not */
	r.avail->idx = NUM + NUM + 1;
	cr_assert_eq(tring_poll(&r), -1);
	cr_assert_eq(r.broken_calls, 1);
	cr_assert(strstr(r.broken_why, "ahead"), "why: %s", r.broken_why);
	cr_assert(atomic_load(&r.vq->broken));
	cr_assert_eq(eventfd_value(r.vq->err_fd), 1);
	/* a broken ring is left alone */
	cr_assert_eq(tring_poll(&r), 0);
	cr_assert_eq(r.broken_calls, 1);
	cr_assert_eq(r.used->idx, NUM);
	/* going backwards is as bad as jumping */
	atomic_store(&r.vq->broken, false);
	r.avail->idx = NUM - 1;
	cr_assert_eq(tring_poll(&r), -1);
	cr_assert_eq(r.broken_calls, 2);
}

Test(blk, bad_chain_breaks_ring_after_flushing_earlier)
{
	uint64_t st1, st2;
	uint16_t h1 = flush_req(&st1);
	uint16_t h2 = flush_req(&st2);
	uint64_t b = tring_alloc(&r, 16, 16);

	tring_set_desc(&r, 60, b, 16, VRING_DESC_F_NEXT, 61);
	tring_set_desc(&r, 61, b, 16, VRING_DESC_F_NEXT, 60);
	tring_publish(&r, 60);
	tring_publish(&r, h1);
	cr_assert_eq(tring_poll(&r), -1);
	cr_assert_eq(r.broken_calls, 1);
	cr_assert(strstr(r.broken_why, "head 60"), "why: %s", r.broken_why);
	/* the two before were completed and published */
	cr_assert_eq(r.used->idx, 2);
	cr_assert_eq(tring_used_elem(&r, 0).id, h1);
	cr_assert_eq(tring_used_elem(&r, 1).id, h2);
	cr_assert_eq(r.vq->last_avail, 2);
	/* a head out of range breaks it too */
	atomic_store(&r.vq->broken, false);
	r.avail->ring[2] = NUM;
	cr_assert_eq(tring_poll(&r), -1);
	cr_assert_eq(r.broken_calls, 2);
}

Test(blk, used_ring_values)
{
	uint64_t b1 = tring_alloc(&r, 512, 512), b2 = tring_alloc(&r, 20, 8), st;
	struct seg d1 = { b1, 512, true }, d2 = { b1, 512, false }, d3 = { b2, 20, true };
	uint16_t h1 = req(VIRTIO_BLK_T_IN, 0, &d1, 1, &st);
	uint16_t h2 = req(VIRTIO_BLK_T_OUT, 0, &d2, 1, &st);
	uint16_t h3 = req(VIRTIO_BLK_T_GET_ID, 0, &d3, 1, &st);

	r.used->flags = 0;
	cr_assert_eq(tring_poll(&r), 3);
	cr_assert_eq(r.used->idx, 3);
	cr_assert_eq(r.vq->used_idx, 3);
	cr_assert_eq(r.vq->last_avail, 3);
	cr_assert_eq(tring_used_elem(&r, 0).id, h1);
	cr_assert_eq(tring_used_elem(&r, 0).len, 513);
	cr_assert_eq(tring_used_elem(&r, 1).id, h2);
	cr_assert_eq(tring_used_elem(&r, 1).len, 1);
	cr_assert_eq(tring_used_elem(&r, 2).id, h3);
	cr_assert_eq(tring_used_elem(&r, 2).len, 21);
	/* nothing more to do */
	cr_assert_eq(tring_poll(&r), 0);
	cr_assert_eq(r.used->idx, 3);
}

Test(blk, indexes_wrap_at_65536)
{
	uint64_t st[6];
	uint16_t heads[6];

	r.vq->last_avail = 65533;
	r.vq->used_idx = r.vq->signalled_used = 65533;
	r.used->idx = 65533;
	r.avail_idx = 65533;
	r.avail->idx = 65533;
	for (unsigned i = 0; i < 6; i++)
		heads[i] = flush_req(&st[i]);
	cr_assert_eq(r.avail->idx, 3);
	cr_assert_eq(tring_poll(&r), 6);
	cr_assert_eq(r.used->idx, 3);
	cr_assert_eq(r.vq->last_avail, 3);
	for (unsigned i = 0; i < 6; i++) {
		uint16_t u = (uint16_t)(65533 + i);
		cr_assert_eq(r.used->ring[u % NUM].id, heads[i]);
		cr_assert_eq(*status_of(st[i]), VIRTIO_BLK_S_OK);
	}
}

Test(blk, batch_limit)
{
	uint64_t st;
	uint16_t head = flush_req(&st);

	for (unsigned i = 1; i < 40; i++)
		tring_publish(&r, head);
	cr_assert_eq(tring_poll(&r), VQ_BATCH);
	cr_assert_eq(r.used->idx, VQ_BATCH, "a batch is published at its end");
	cr_assert_eq(tring_poll(&r), 40 - VQ_BATCH);
	cr_assert_eq(tring_poll(&r), 0);
	cr_assert_eq(r.used->idx, 40);
}

/* ---- notifications -------------------------------------------------------------- */

static uint16_t *used_event(void)
{
	return &r.avail->ring[NUM];
}

static uint16_t *avail_event(void)
{
	return (uint16_t *)&r.used->ring[NUM];
}

static void complete(unsigned n)
{
	uint64_t st;
	for (unsigned i = 0; i < n; i++)
		flush_req(&st);
	cr_assert_eq(tring_poll(&r), (int)n);
}

Test(blk, event_idx_call_only_when_used_event_crossed)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	r.vq->call_fd = fd;
	r.vq->event_idx = true;
	r.avail->flags = VRING_AVAIL_F_NO_INTERRUPT;    /* ignored with EVENT_IDX */

	*used_event() = 0;
	complete(1);                                    /* used 0 -> 1 crosses 0 */
	cr_assert_eq(eventfd_value(fd), 1);
	*used_event() = 3;
	complete(1);                                    /* 1 -> 2 */
	cr_assert_eq(eventfd_value(fd), 0);
	complete(1);                                    /* 2 -> 3: entry 3 not used yet */
	cr_assert_eq(eventfd_value(fd), 0);
	complete(2);                                    /* 3 -> 5 crosses 3 */
	cr_assert_eq(eventfd_value(fd), 1);
	complete(3);                                    /* 5 -> 8, event 3 is behind */
	cr_assert_eq(eventfd_value(fd), 0);
	*used_event() = 8;
	complete(1);                                    /* 8 -> 9 */
	cr_assert_eq(eventfd_value(fd), 1);
	/* across the 16-bit wrap */
	r.vq->last_avail = r.avail_idx = 65534;
	r.avail->idx = 65534;
	r.vq->used_idx = r.vq->signalled_used = r.used->idx = 65534;
	*used_event() = 65535;
	complete(1);                                    /* 65534 -> 65535 */
	cr_assert_eq(eventfd_value(fd), 0);
	complete(2);                                    /* 65535 -> 1 crosses 65535 */
	cr_assert_eq(eventfd_value(fd), 1);
	/* no call fd: nothing to signal, nothing breaks */
	r.vq->call_fd = -1;
	complete(1);
	r.vq->call_fd = fd;
}

Test(blk, no_interrupt_flag_without_event_idx)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	r.vq->call_fd = fd;
	r.vq->event_idx = false;
	*used_event() = 1000;           /* meaningless without EVENT_IDX */
	r.avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
	complete(1);
	cr_assert_eq(eventfd_value(fd), 0);
	complete(3);
	cr_assert_eq(eventfd_value(fd), 0);
	r.avail->flags = 0;
	complete(1);
	cr_assert_eq(eventfd_value(fd), 1);
	complete(5);
	cr_assert_eq(eventfd_value(fd), 1, "one call per published batch");
	/* nothing completed: no call */
	cr_assert_eq(tring_poll(&r), 0);
	cr_assert_eq(eventfd_value(fd), 0);
}

Test(blk, set_notify)
{
	uint64_t st;

	/* without EVENT_IDX: the NO_NOTIFY flag */
	r.vq->event_idx = false;
	r.vq->notify_on = true;
	cr_assert_eq(vq_set_notify(r.vq, false), false);
	cr_assert(r.used->flags & VRING_USED_F_NO_NOTIFY);
	cr_assert_eq(vq_set_notify(r.vq, true), false);
	cr_assert_eq(r.used->flags & VRING_USED_F_NO_NOTIFY, 0);
	/* work arrived meanwhile: do not sleep */
	vq_set_notify(r.vq, false);
	flush_req(&st);
	cr_assert_eq(vq_set_notify(r.vq, true), true);
	cr_assert_eq(tring_poll(&r), 1);
	cr_assert_eq(vq_set_notify(r.vq, true), false);

	/* with EVENT_IDX: avail_event follows last_avail when enabling */
	r.vq->event_idx = true;
	*avail_event() = 0xbeef;
	cr_assert_eq(vq_set_notify(r.vq, false), false);
	cr_assert_eq(*avail_event(), 0xbeef, "left behind while polling");
	cr_assert_eq(vq_set_notify(r.vq, true), false);
	cr_assert_eq(*avail_event(), r.vq->last_avail);
	flush_req(&st);
	cr_assert_eq(vq_set_notify(r.vq, true), true);
}

/* ---- inflight resubmission ------------------------------------------------------ */

/* A restarted queue resubmits what the inflight region says was in flight.
 * When one of those chains turns out to be broken, the requests completed
 * before it in the same batch must still be published, as vq_poll does for
 * new requests (flush, then mark broken). */
Test(blk, resubmit_publishes_before_breaking)
{
	struct vq_inflight *infl = calloc(1, vq_inflight_size(NUM));
	uint64_t st, b = tring_alloc(&r, 16, 16);
	uint16_t good = flush_req(&st);

	tring_set_desc(&r, 100, b, 16, VRING_DESC_F_NEXT, 101);
	tring_set_desc(&r, 101, b, 16, VRING_DESC_F_NEXT, 100);      /* a loop */
	infl->version = 1;
	infl->desc_num = NUM;
	infl->desc[good].inflight = 1;
	infl->desc[good].counter = 1;
	infl->desc[100].inflight = 1;
	infl->desc[100].counter = 2;
	r.vq->infl = infl;
	cr_assert_eq(vq_inflight_recover(r.vq), 2);
	cr_assert_eq(r.vq->last_avail, 2);

	cr_assert_eq(tring_poll(&r), -1);
	cr_assert_eq(r.broken_calls, 1);
	cr_assert_eq(*status_of(st), VIRTIO_BLK_S_OK, "the first one ran");
	cr_assert_eq(r.vq->used_idx, 1);
	cr_assert_eq(r.used->idx, 1,
		     "its completion was pushed but never published (used->idx %u)", r.used->idx);
	r.vq->infl = NULL;
	free(infl);
}

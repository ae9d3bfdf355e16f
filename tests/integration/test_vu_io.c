/* Integration suite `io`: virtio-blk requests from a well-behaved
 * front-end: every descriptor layout, sizes, flush, GET_ID, discard and
 * write-zeroes, read-only and 4 KiB devices, status and used lengths, the
 * per-device counters.  The fixture: vu_fixture.h. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vu_fixture.h"

/* ---- requests -------------------------------------------------------------- */

Test(io, read_unwritten_is_zero_and_rw_sizes)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 256);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t *b = malloc(MiB);
	static const size_t sizes[] = { 512, 1024, 4096, 8192, 65536, 131072 };

	fx_read_ok(vq, 20000, b, 65536, NULL);
	fx_check_zero(b, 65536, "fresh ram device");
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		fx_rw_verify(vq, 1000 + i * 300, sizes[i], 100 + i, NULL);
	/* first and last sector */
	fx_rw_verify(vq, 0, 512, 120, NULL);
	fx_rw_verify(vq, A_SIZE / 512 - 1, 512, 121, NULL);
	fx_rw_verify(vq, A_SIZE / 512 - 8, 4096, 122, NULL);
	check_golden(vq);
	free(b);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, large_requests)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 1024);
	struct ffe_vq *vq = &fe->vq[0];
	uint32_t seg = 1024 * 1024, segs;
	struct ffe_layout lay = { FFE_L_NATURAL, 0, false };

	if ((fe->features & FFE_BIT(FFE_F_BLK_SIZE_MAX)) && fe->cfg.size_max < seg)
		seg = fe->cfg.size_max & ~511u;
	lay.seg = seg;
	segs = (1024 * 1024 + seg - 1) / seg;
	cr_log_info("1 MiB request as %u segment(s) of %u bytes (seg_max %u)", segs, seg, fe->cfg.seg_max);
	if (segs <= fe->cfg.seg_max)
		fx_rw_verify(vq, 30000, 1024 * 1024, 130, &lay);
	/* seg_max segments of 4 KiB, direct and indirect */
	{
		uint32_t n = fe->cfg.seg_max < 256 ? fe->cfg.seg_max : 256;

		lay.seg = 4096;
		fx_rw_verify(vq, 40000, (size_t)n * 4096, 131, &lay);
		lay.indirect = true;
		fx_rw_verify(vq, 42000, (size_t)n * 4096, 132, &lay);
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, every_layout)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 256);
	uint32_t seg_max = fe->cfg.seg_max;
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 0, false },
		{ FFE_L_NATURAL, 0, true },
		{ FFE_L_NATURAL, 512, false },          /* many data segments */
		{ FFE_L_NATURAL, 512, true },
		{ FFE_L_NATURAL, 1536, false },         /* segments not a multiple of 1024 */
		{ FFE_L_MERGED, 0, false },             /* header+data / data+status together */
		{ FFE_L_MERGED, 0, true },
		{ FFE_L_CHOPPED, 8, false },            /* header split in two */
		{ FFE_L_CHOPPED, 3, true },             /* 3-byte descriptors everywhere */
		{ FFE_L_CHOPPED, 1, true },             /* 1-byte descriptors */
		{ FFE_L_CHOPPED, 1000, false },         /* descriptors straddle sectors */
		{ FFE_L_CHOPPED, 4097, true },
	};

	for (unsigned i = 0; i < sizeof(lays) / sizeof(lays[0]); i++) {
		/* keep the descriptor count within seg_max + 2 (and the ring) */
		size_t len = 32768;
		unsigned per = lays[i].kind == FFE_L_CHOPPED ? lays[i].seg :
			       lays[i].kind == FFE_L_NATURAL && lays[i].seg ? lays[i].seg : 0;

		while (per && len > 512 && (len + 17 + per - 1) / per > seg_max)
			len /= 2;
		if (per && (len + 17 + per - 1) / per > seg_max + 2) {
			cr_log_info("layout %s skipped: needs more than seg_max %u descriptors",
				    fx_layout_name(&lays[i]), seg_max);
			continue;
		}
		fx_rw_verify(&fe->vq[i % 2], 500 + i * 100, len, 200 + i, &lays[i]);
	}
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* one request in arbitrary explicit cuts */
static int run_cuts(struct ffe_vq *vq, uint32_t type, uint64_t sector, const void *out,
		    size_t out_len, void *in, size_t in_len, const uint32_t *rc, unsigned nrc,
		    const uint32_t *wc, unsigned nwc, bool indirect)
{
	struct ffe_blk_io io;
	int r = ffe_blk_prep(&io, type, sector, out, out_len, in_len, NULL);

	cr_assert_eq(r, 0);
	io.req.rd_cuts = rc;
	io.req.n_rd_cuts = nrc;
	io.req.wr_cuts = wc;
	io.req.n_wr_cuts = nwc;
	io.req.indirect = indirect;
	r = ffe_run(vq, &io.req);
	if (r == 0) {
		r = ffe_blk_status(&io);
		if (in_len)
			memcpy(in, ffe_blk_in(&io), in_len);
	}
	ffe_blk_io_release(vq, &io);
	return r;
}

Test(io, odd_cuts)
{
	/* Framing must not matter (VIRTIO_F_VERSION_1 implies ANY_LAYOUT). */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t w[4096], r[4096];
	static const uint32_t hdr_1byte[] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	static const uint32_t hdr_12_4[] = { 12, 4 };           /* sector split */
	static const uint32_t hdr_20[] = { 20, 4092 };          /* header + 4 data bytes */
	static const uint32_t data_then_status_split[] = { 4095, 2 }; /* last data byte + status */
	int s;

	ffe_pattern(w, sizeof(w), 300);
	s = run_cuts(vq, FFE_BLK_T_OUT, 700, w, 4096, NULL, 0, hdr_1byte, 16, NULL, 0, true);
	cr_expect_eq(s, 0, "OUT with the header in 16 one-byte descriptors: status %d", s);
	s = run_cuts(vq, FFE_BLK_T_IN, 700, NULL, 0, r, 4096, hdr_12_4, 2, data_then_status_split, 2, false);
	cr_expect_eq(s, 0, "IN with header 12+4 and status sharing a descriptor: status %d", s);
	fx_check_pattern(r, 4096, 300, "odd cuts read-back");

	ffe_pattern(w, sizeof(w), 301);
	s = run_cuts(vq, FFE_BLK_T_OUT, 708, w, 4096, NULL, 0, hdr_20, 2, NULL, 0, false);
	cr_expect_eq(s, 0, "OUT with header+4 data bytes in one descriptor: status %d", s);
	memset(r, 0, sizeof(r));
	fx_read_ok(vq, 708, r, 4096, NULL);
	fx_check_pattern(r, 4096, 301, "OUT header+4 bytes");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, flush_and_get_id)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	char id[FFE_BLK_ID_BYTES], want[FFE_BLK_ID_BYTES] = { 0 };
	int s;

	s = ffe_blk_flush(&fe->vq[0]);
	cr_expect_eq(s, FFE_BLK_S_OK, "FLUSH: status %d", s);
	memset(id, 0x55, sizeof(id));
	s = ffe_blk_get_id(&fe->vq[0], id);
	cr_expect_eq(s, FFE_BLK_S_OK, "GET_ID: status %d", s);
	memcpy(want, A_SERIAL, strlen(A_SERIAL));
	cr_expect(memcmp(id, want, sizeof(want)) == 0, "GET_ID returned \"%.20s\", serial is \"%s\" "
		  "(zero padded to 20 bytes)", id, A_SERIAL);
	/* GET_ID into a 3-descriptor chain of odd sizes */
	{
		static const uint32_t wc[] = { 7, 7, 7 };

		memset(id, 0x55, sizeof(id));
		s = run_cuts(&fe->vq[0], FFE_BLK_T_GET_ID, 0, NULL, 0, id, 20, NULL, 0, wc, 3, true);
		cr_expect_eq(s, 0, "GET_ID in 7-byte pieces: %d", s);
		cr_expect(memcmp(id, want, sizeof(want)) == 0, "GET_ID in pieces: \"%.20s\"", id);
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);

	fe = fx_ready(DEV_B, NULL, 0, 1, 128);
	memset(id, 0x55, sizeof(id));
	s = ffe_blk_get_id(&fe->vq[0], id);
	cr_expect_eq(s, FFE_BLK_S_OK, "GET_ID B: status %d", s);
	cr_expect(memcmp(id, B_SERIAL, 20) == 0, "GET_ID of B returned \"%.20s\", want \"%s\"", id, B_SERIAL);
	fx_close_wait(DEV_B, fe, VDEV_LISTENING);
}

Test(io, used_len_exact)
{
	/* virtio 2.7.8.2: len SHOULD be the bytes written into the buffer */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	uint8_t b[8192];
	char id[20];
	uint32_t ul = 0;
	int s;

	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_IN, 0, NULL, 0, b, 8192, NULL, &ul);
	cr_assert_eq(s, 0);
	cr_expect_eq(ul, 8193u, "IN 8192: used len %u, expected 8193 (data + status)", ul);
	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_OUT, 0, b, 8192, NULL, 0, NULL, &ul);
	cr_assert_eq(s, 0);
	cr_expect_eq(ul, 1u, "OUT: used len %u, expected 1 (status)", ul);
	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_GET_ID, 0, NULL, 0, id, 20, NULL, &ul);
	cr_assert_eq(s, 0);
	cr_expect_eq(ul, 21u, "GET_ID: used len %u, expected 21", ul);
	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_FLUSH, 0, NULL, 0, NULL, 0, NULL, &ul);
	cr_expect_eq(ul, 1u, "FLUSH: used len %u, expected 1", ul);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, discard_then_read_zeros)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t *w = malloc(65536), *r = malloc(65536);
	int s;

	cr_assert(fe->features & FFE_BIT(FFE_F_BLK_DISCARD), "DISCARD not negotiated");
	ffe_pattern(w, 65536, 400);
	fx_write_ok(vq, 10000, w, 65536, NULL);
	s = ffe_blk_discard(vq, 10000 + 16, 32);
	cr_expect_eq(s, FFE_BLK_S_OK, "DISCARD 32 sectors: status %d", s);
	fx_read_ok(vq, 10000, r, 65536, NULL);
	cr_expect(memcmp(r, w, 8192) == 0, "DISCARD changed the bytes before its range");
	fx_check_zero(r + 8192, 16384, "discarded range on the ram backend");
	cr_expect(memcmp(r + 24576, w + 24576, 65536 - 24576) == 0,
		  "DISCARD changed the bytes after its range");
	free(w);
	free(r);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* the pattern after an offset: compare against the same seed's tail */
Test(io, write_zeroes_with_and_without_unmap)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t *w = malloc(65536), *r = malloc(65536), *ref = malloc(65536);
	int s;

	cr_assert(fe->features & FFE_BIT(FFE_F_BLK_WRITE_ZEROES), "WRITE_ZEROES not negotiated");
	for (int unmap = 0; unmap <= 1; unmap++) {
		uint64_t base = 12000 + unmap * 200;

		ffe_pattern(w, 65536, 500 + unmap);
		fx_write_ok(vq, base, w, 65536, NULL);
		s = ffe_blk_write_zeroes(vq, base + 8, 24, unmap);
		cr_expect_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES unmap=%d: status %d", unmap, s);
		fx_read_ok(vq, base, r, 65536, NULL);
		memcpy(ref, w, 65536);
		memset(ref + 4096, 0, 24 * 512);
		if (memcmp(r, ref, 65536) != 0) {
			size_t i = 0;

			while (r[i] == ref[i])
				i++;
			cr_expect_fail("WRITE_ZEROES unmap=%d of bytes 4096..16383: wrong content at "
				       "byte %zu (%#x, expected %#x)", unmap, i, r[i], ref[i]);
		}
	}
	free(w);
	free(r);
	free(ref);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, discard_write_zeroes_bad_flags_and_ranges)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint64_t cap = fe->cfg.capacity;
	struct ffe_blk_dwz_seg sg;
	int s;

	/* virtio 1.2 5.2.6.2: UNSUPP for a discard with the unmap flag, and for
	 * write zeroes with an unknown flag */
	sg = (struct ffe_blk_dwz_seg){ .sector = 100, .num_sectors = 8, .flags = FFE_BLK_WZ_UNMAP };
	s = ffe_blk_req(vq, FFE_BLK_T_DISCARD, 0, &sg, sizeof(sg), NULL, 0, NULL, NULL);
	cr_expect_eq(s, FFE_BLK_S_UNSUPP, "DISCARD with the unmap flag: status %d, expected UNSUPP", s);
	sg = (struct ffe_blk_dwz_seg){ .sector = 100, .num_sectors = 8, .flags = 0x2 };
	s = ffe_blk_req(vq, FFE_BLK_T_WRITE_ZEROES, 0, &sg, sizeof(sg), NULL, 0, NULL, NULL);
	cr_expect_eq(s, FFE_BLK_S_UNSUPP, "WRITE_ZEROES with unknown flag 0x2: status %d, expected UNSUPP", s);

	/* out of range */
	s = ffe_blk_discard(vq, cap - 4, 8);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "DISCARD crossing the end: status %d", s);
	s = ffe_blk_write_zeroes(vq, cap, 1, false);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "WRITE_ZEROES at capacity: status %d", s);
	s = ffe_blk_write_zeroes(vq, UINT64_MAX - 2, 8, false);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "WRITE_ZEROES with sector+count wrapping: status %d", s);
	if (fe->cfg.max_discard_sectors < 0xffff0000u) {
		s = ffe_blk_discard(vq, SCRATCH_SECTOR, fe->cfg.max_discard_sectors + 8);
		cr_expect_neq(s, FFE_BLK_S_OK, "DISCARD larger than max_discard_sectors %u: status OK",
			      fe->cfg.max_discard_sectors);
	}
	/* a payload that is not a whole segment */
	s = ffe_blk_req(vq, FFE_BLK_T_WRITE_ZEROES, 0, &sg, 10, NULL, 0, NULL, NULL);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "WRITE_ZEROES with a 10-byte payload: status %d", s);
	/* more segments than max_discard_seg */
	{
		uint32_t n = fe->cfg.max_discard_seg + 1;
		struct ffe_blk_dwz_seg *v = calloc(n, sizeof(*v));

		for (uint32_t i = 0; i < n; i++)
			v[i] = (struct ffe_blk_dwz_seg){ .sector = 30000 + i * 16, .num_sectors = 8 };
		s = ffe_blk_req(vq, FFE_BLK_T_DISCARD, 0, v, n * sizeof(*v), NULL, 0, NULL, NULL);
		cr_expect_neq(s, FFE_BLK_S_OK, "DISCARD with %u segments (max_discard_seg %u): status OK",
			      n, fe->cfg.max_discard_seg);
		free(v);
	}
	check_golden(vq);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, unknown_type_and_out_of_range)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint64_t cap = fe->cfg.capacity;
	uint8_t b[4096], last[512];
	int s;

	/* (5 and bit 31 are left out: legacy FLUSH_OUT and BARRIER) */
	static const uint32_t types[] = { 2, 3, 7, 10 /* GET_LIFETIME */, 14 /* SECURE_ERASE */,
					   15, 0x77, 0xffffffffu };
	for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		s = ffe_blk_req(vq, types[i], 0, NULL, 0, b, 512, NULL, NULL);
		cr_expect_eq(s, FFE_BLK_S_UNSUPP, "request type %#x: status %d, expected UNSUPP (2)", types[i], s);
	}
	fx_read_ok(vq, cap - 1, last, 512, NULL);
	s = ffe_blk_read(vq, cap, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN at sector == capacity: status %d", s);
	s = ffe_blk_read(vq, cap - 1, b, 1024, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN crossing the end: status %d", s);
	memset(b, 0x77, sizeof(b));
	s = ffe_blk_write(vq, cap - 1, b, 4096, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT crossing the end: status %d", s);
	s = ffe_blk_write(vq, UINT64_MAX, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT at sector 2^64-1: status %d", s);
	s = ffe_blk_write(vq, 1ull << 55, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT at sector 2^55 (offset overflows 64 bits): status %d", s);
	s = ffe_blk_read(vq, (UINT64_MAX >> 9) + 1, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN whose byte offset wraps to 0: status %d", s);
	/* the last sector was not touched by the failed write */
	fx_read_ok(vq, cap - 1, b, 512, NULL);
	cr_expect(memcmp(b, last, 512) == 0, "failed OUT crossing the end modified the last sector");
	/* lengths that are not a multiple of 512 */
	s = ffe_blk_read(vq, 0, b, 100, NULL);
	cr_expect_neq(s, FFE_BLK_S_OK, "IN of 100 bytes: status OK");
	s = ffe_blk_write(vq, SCRATCH_SECTOR, b, 700, NULL);
	cr_expect_neq(s, FFE_BLK_S_OK, "OUT of 700 bytes: status OK");
	/* data on an OUT too short to be a header */
	{
		static const uint8_t shorthdr[8] = { 1 };
		struct ffe_req r = { .rd = shorthdr, .rd_len = 8, .wr = b, .wr_len = 1 };

		b[0] = 0xee;
		s = ffe_run(vq, &r);
		cr_expect_eq(s, 0, "8-byte header: no completion (%s)", fe->err);
		cr_expect(b[0] == FFE_BLK_S_IOERR || b[0] == FFE_BLK_S_UNSUPP,
			  "request with an 8-byte header: status %d, expected IOERR", b[0]);
	}
	check_golden(vq);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(io, readonly_device)
{
	struct vdev_params p;
	unsigned d;
	struct ffe *fe;
	uint8_t b[4096];
	int s;

	fx_params(&p, 4 * MiB, 1, "ro");
	p.readonly = true;
	d = fx_add("vbro", &p);
	fe = fx_ready(d, NULL, 0, 1, 128);
	cr_expect(fe->features & FFE_BIT(FFE_F_BLK_RO), "RO not negotiated");
	memset(b, 0x33, sizeof(b));
	s = ffe_blk_write(&fe->vq[0], 8, b, 4096, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT on a read-only device: status %d, expected IOERR", s);
	s = ffe_blk_write_zeroes(&fe->vq[0], 8, 8, false);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "WRITE_ZEROES on read-only: %d", s);
	s = ffe_blk_discard(&fe->vq[0], 8, 8);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "DISCARD on read-only: %d", s);
	fx_read_ok(&fe->vq[0], 8, b, 4096, NULL);
	fx_check_zero(b, 4096, "read-only device after refused writes");
	fx_close_wait(d, fe, VDEV_LISTENING);
}

Test(io, block_size_4096_and_null_backend)
{
	struct vdev_params p;
	unsigned d4k, dnull;
	struct ffe *fe;
	uint8_t b[8192];
	int s;

	fx_params(&p, 16 * MiB, 1, "bs4k");
	p.block_size = 4096;
	d4k = fx_add("vb4k", &p);
	fe = fx_ready(d4k, NULL, 0, 1, 128);
	fx_rw_verify(&fe->vq[0], 8, 8192, 600, NULL);
	fx_rw_verify(&fe->vq[0], 16 * MiB / 512 - 8, 4096, 601, NULL);
	fx_close_wait(d4k, fe, VDEV_LISTENING);

	fx_params(&p, 64 * MiB, 2, "null");
	p.backing = BE_NULL;
	dnull = fx_add("vbnull", &p);
	fe = fx_ready(dnull, NULL, 0, 2, 128);
	memset(b, 1, sizeof(b));
	s = ffe_blk_write(&fe->vq[1], 0, b, sizeof(b), NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "null backend OUT: %d", s);
	s = ffe_blk_read(&fe->vq[0], 0, b, sizeof(b), NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "null backend IN: %d", s);
	s = ffe_blk_flush(&fe->vq[0]);
	cr_expect_eq(s, FFE_BLK_S_OK, "null backend FLUSH: %d", s);
	s = ffe_blk_read(&fe->vq[0], 64 * MiB / 512, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "null backend IN past the end: %d", s);
	fx_close_wait(dnull, fe, VDEV_LISTENING);
}

Test(io, stats_counters)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 128);
	struct vdev_stats s0, s1;
	struct ffe_deadline dl;
	uint8_t b[8192];
	char id[20];

	vdev_get_stats(fx.dev[DEV_A], &s0);
	memset(b, 9, sizeof(b));
	for (int i = 0; i < 3; i++)
		fx_write_ok(&fe->vq[i % 2], 100 + i * 8, b, 4096, NULL);
	for (int i = 0; i < 2; i++)
		fx_read_ok(&fe->vq[0], 100, b, 8192, NULL);
	cr_assert_eq(ffe_blk_flush(&fe->vq[1]), 0);
	cr_assert_eq(ffe_blk_discard(&fe->vq[0], 200, 8), 0);
	cr_assert_eq(ffe_blk_write_zeroes(&fe->vq[0], 300, 8, false), 0);
	cr_assert_eq(ffe_blk_get_id(&fe->vq[0], id), 0);

	ffe_deadline_start(&dl, 1000);
	do {
		vdev_get_stats(fx.dev[DEV_A], &s1);
	} while (s1.reads - s0.reads < 2 && ffe_deadline_left(&dl) && !usleep(5000));
#define D(f) (s1.f - s0.f)
	cr_expect_eq(D(writes), 3u, "writes moved by %" PRIu64 ", expected 3", D(writes));
	cr_expect_eq(D(reads), 2u, "reads moved by %" PRIu64 ", expected 2", D(reads));
	cr_expect_eq(D(bytes_written), 12288u, "bytes_written moved by %" PRIu64, D(bytes_written));
	cr_expect_eq(D(bytes_read), 16384u, "bytes_read moved by %" PRIu64, D(bytes_read));
	cr_expect_eq(D(flushes), 1u, "flushes moved by %" PRIu64, D(flushes));
	cr_expect_eq(D(discards), 1u, "discards moved by %" PRIu64, D(discards));
	cr_expect_eq(D(write_zeroes), 1u, "write_zeroes moved by %" PRIu64, D(write_zeroes));
	cr_expect_eq(D(get_ids), 1u, "get_ids moved by %" PRIu64, D(get_ids));
	cr_expect_eq(D(errors), 0u, "errors moved by %" PRIu64 " without a failed request", D(errors));
	cr_expect_eq(s1.inflight, 0u, "inflight %" PRIu64 " when idle", s1.inflight);

	/* failures count as errors */
	cr_assert_eq(ffe_blk_req(&fe->vq[0], 0x77, 0, NULL, 0, NULL, 0, NULL, NULL), FFE_BLK_S_UNSUPP);
	cr_assert_eq(ffe_blk_read(&fe->vq[0], fe->cfg.capacity, b, 512, NULL), FFE_BLK_S_IOERR);
	ffe_deadline_start(&dl, 1000);
	do {
		vdev_get_stats(fx.dev[DEV_A], &s1);
	} while (s1.errors - s0.errors < 2 && ffe_deadline_left(&dl) && !usleep(5000));
	cr_expect_eq(D(errors), 2u, "errors moved by %" PRIu64 " after UNSUPP + IOERR", D(errors));
#undef D
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	/* B untouched */
	vdev_get_stats(fx.dev[DEV_B], &s1);
	cr_expect_eq(s1.reads + s1.writes, 0u, "B's counters moved (%" PRIu64 " reads, %" PRIu64 " writes)",
		     s1.reads, s1.writes);
}

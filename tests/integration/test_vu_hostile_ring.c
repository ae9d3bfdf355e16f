/* Integration suite `badring`: a hostile front-end's rings: descriptor
 * loops, indices and addresses out of range, malformed indirect tables,
 * wrong direction and framing, lengths that wrap, avail index jumps, an
 * inflight region whose contents lie, and fds truncated after the back-end
 * mapped them.  Each test ends with healthy().  The fixture: vu_fixture.h. */
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

/* ---- hostile descriptors ------------------------------------------------------ */

struct hr {
	struct ffe *fe;
	struct ffe_vq *vq;
	struct ffe_buf hdr, data, st, tbl;
	uint64_t hole_gpa;              /* between region 0 and 1 */
};

static void hr_open(struct hr *h, uint32_t type, uint64_t sector)
{
	struct ffe_opts o;
	struct ffe_blk_hdr bh = { .type = type, .sector = sector };

	ffe_opts_init(&o);
	o.nregions = 2;
	h->fe = fx_ready(DEV_A, &o, 0, 2, 128);
	h->vq = &h->fe->vq[1];
	cr_assert_eq(ffe_alloc(h->fe, 16, 16, 0, &h->hdr), 0);
	cr_assert_eq(ffe_alloc(h->fe, 4096, 512, 1, &h->data), 0);
	cr_assert_eq(ffe_alloc(h->fe, 1, 1, 0, &h->st), 0);
	cr_assert_eq(ffe_alloc(h->fe, 16 * 1024, 16, 1, &h->tbl), 0);
	memcpy(h->hdr.hva, &bh, 16);
	memset(h->data.hva, 0x5a, 4096);
	*(uint8_t *)h->st.hva = 0xee;
	h->hole_gpa = h->fe->r[0].gpa + h->fe->r[0].size + 64 * 1024;
	cr_assert_null(ffe_gpa_to_hva(h->fe, h->hole_gpa, 1));
}

static void hr_fire(struct hr *h, uint16_t head)
{
	ffe_vq_publish(h->vq, head);
	ffe_vq_kick_raw(h->vq);
}

/* Wait until the used idx moves (0) or the back-end hangs up (-EPIPE), at
 * most ms (-ETIMEDOUT). */
static int wait_used_or_hangup(struct ffe *fe, struct ffe_vq *vq, int ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, ms);
	for (;;) {
		struct pollfd p = { .fd = fe->sock, .events = POLLRDHUP };

		if (ffe_vq_used_idx(vq) != 0)
			return 0;
		if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			/* one more look: a completion may precede the hang-up */
			usleep(20000);
			return ffe_vq_used_idx(vq) != 0 ? 0 : -EPIPE;
		}
		if (!ffe_deadline_left(&dl))
			return -ETIMEDOUT;
		usleep(1000);
	}
}

static void hr_finish(struct hr *h, bool ok_allowed, const char *what)
{
	int r = wait_used_or_hangup(h->fe, h->vq, HOSTILE_WAIT_MS);
	uint8_t st = *(uint8_t *)h->st.hva;
	int p;

	if (r == 0) {
		struct ffe_used_elem e = ffe_vq_used_elem(h->vq, 0);

		cr_log_info("%s: completed, id %u len %u status %#x", what, e.id, e.len, st);
		if (!ok_allowed)
			cr_expect_neq(st, FFE_BLK_S_OK, "%s: the malformed request completed with status OK "
				      "(used id %u len %u)", what, e.id, e.len);
		cr_expect_leq(ffe_vq_used_idx(h->vq), 1, "%s: one malformed request produced %u used "
			      "entries", what, ffe_vq_used_idx(h->vq));
	} else {
		cr_log_info("%s: no completion (status byte %#x)", what, st);
	}
	p = ffe_probe(h->fe);
	cr_expect_neq(p, -ETIMEDOUT, "%s: control connection stopped answering", what);
	if (p == 1) {
		/* the connection lives: its other queue must still work */
		fx_rw_verify(&h->fe->vq[0], 9000, 8192, 3000, NULL);
	} else {
		cr_log_info("%s: connection dropped", what);
	}
	ffe_close(h->fe);
	healthy();
}

/* a valid OUT chain hdr -> data -> status in table t at indices a, b, c */
static void chain3(struct ffe_desc *t, struct hr *h, unsigned a, unsigned b, unsigned c)
{
	t[a] = (struct ffe_desc){ h->hdr.gpa, 16, FFE_DESC_F_NEXT, (uint16_t)b };
	t[b] = (struct ffe_desc){ h->data.gpa, 4096, FFE_DESC_F_NEXT, (uint16_t)c };
	t[c] = (struct ffe_desc){ h->st.gpa, 1, FFE_DESC_F_WRITE, 0 };
}

Test(badring, loop_in_ring)
{
	struct hr h;

	hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
	chain3(h.vq->desc, &h, 0, 1, 2);
	h.vq->desc[2].flags |= FFE_DESC_F_NEXT;
	h.vq->desc[2].next = 0;
	hr_fire(&h, 0);
	hr_finish(&h, false, "descriptor chain looping 0->1->2->0");
}

Test(badring, self_loop)
{
	struct hr h;

	hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
	chain3(h.vq->desc, &h, 5, 6, 7);
	h.vq->desc[6].next = 6;
	hr_fire(&h, 5);
	hr_finish(&h, false, "descriptor whose next is itself");
}

Test(badring, next_out_of_range)
{
	static const uint16_t nx[] = { 128, 4000, 0xffff };

	for (int i = 0; i < 3; i++) {
		struct hr h;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		chain3(h.vq->desc, &h, 0, 1, 2);
		h.vq->desc[1].next = nx[i];
		hr_fire(&h, 0);
		hr_finish(&h, false, "next index beyond the queue size");
	}
}

Test(badring, head_out_of_range)
{
	static const uint16_t heads[] = { 128, 0xffff };

	for (int i = 0; i < 2; i++) {
		struct hr h;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		chain3(h.vq->desc, &h, 0, 1, 2);
		hr_fire(&h, heads[i]);
		hr_finish(&h, false, "avail ring entry beyond the queue size");
	}
}

Test(badring, addresses_outside_memory)
{
	static const char *what[] = {
		"data at an unmapped gpa", "data in the hole between regions",
		"data running off the end of region 0", "data addr+len wrapping 2^64",
		"data len 0xffffffff", "header at an unmapped gpa", "status in the hole",
	};

	for (int v = 0; v < 7; v++) {
		struct hr h;
		struct ffe_desc *d;

		hr_open(&h, v == 0 || v == 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT, GOLD_SECTOR);
		d = h.vq->desc;
		chain3(d, &h, 0, 1, 2);
		if (v == 0 || v == 2)
			d[1].flags |= FFE_DESC_F_WRITE;
		switch (v) {
		case 0: d[1].addr = 0xdead00000000ull; break;
		case 1: d[1].addr = h.hole_gpa; break;
		case 2: d[1].addr = h.fe->r[0].gpa + h.fe->r[0].size - 2048; break;
		case 3: d[1].addr = 0xfffffffffffff000ull; d[1].len = 0x2000; break;
		case 4: d[1].len = 0xffffffffu; break;
		case 5: d[0].addr = 0xdead00000000ull; break;
		case 6: d[2].addr = h.hole_gpa; break;
		}
		hr_fire(&h, 0);
		hr_finish(&h, false, what[v]);
	}
}

Test(badring, indirect_table_malformed)
{
	static const char *what[] = {
		"indirect table length 17 (not a multiple of 16)", "indirect table length 0",
		"indirect table at an unmapped gpa", "nested indirect descriptor",
		"loop inside an indirect table", "next beyond an indirect table's end",
		"indirect table running off its region", "indirect table 2^32-16 bytes long",
	};

	for (int v = 0; v < 8; v++) {
		struct hr h;
		struct ffe_desc *t;
		uint32_t len = 48;
		uint64_t addr;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		t = h.tbl.hva;
		addr = h.tbl.gpa;
		chain3(t, &h, 0, 1, 2);
		switch (v) {
		case 0: len = 17; break;
		case 1: len = 0; break;
		case 2: addr = 0xdead00000000ull; break;
		case 3: t[1] = (struct ffe_desc){ h.tbl.gpa + 1024, 48, FFE_DESC_F_INDIRECT | FFE_DESC_F_NEXT, 2 };
			chain3((struct ffe_desc *)((uint8_t *)h.tbl.hva + 1024), &h, 0, 1, 2);
			break;
		case 4: t[2].flags |= FFE_DESC_F_NEXT; t[2].next = 0; break;
		case 5: t[1].next = 3; break;
		case 6: {
			/* put a valid 3-entry table in the last 48 bytes of region 1 and
			 * claim 4 KiB */
			uint8_t *end = h.fe->r[1].hva + h.fe->r[1].size - 48;

			chain3((struct ffe_desc *)end, &h, 0, 1, 2);
			addr = h.fe->r[1].gpa + h.fe->r[1].size - 48;
			len = 4096;
			break;
		}
		case 7: len = 0xfffffff0u; break;
		}
		h.vq->desc[3] = (struct ffe_desc){ addr, len, FFE_DESC_F_INDIRECT, 0 };
		hr_fire(&h, 3);
		hr_finish(&h, v == 6 ? true : false, what[v]);
	}
}

Test(badring, indirect_plus_next_and_direct_after_indirect)
{
	struct hr h;

	/* INDIRECT and NEXT both set on a ring descriptor (driver MUST NOT) */
	hr_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR);
	chain3(h.tbl.hva, &h, 0, 1, 2);
	h.vq->desc[0] = (struct ffe_desc){ h.tbl.gpa, 48, FFE_DESC_F_INDIRECT | FFE_DESC_F_NEXT, 1 };
	h.vq->desc[1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	hr_fire(&h, 0);
	hr_finish(&h, true, "ring descriptor with INDIRECT and NEXT");
}

Test(badring, chain_longer_than_queue)
{
	/* an indirect table of 300 entries on a 128-entry queue (driver MUST NOT) */
	struct hr h;
	struct ffe_desc *t;
	struct ffe_buf big;
	const unsigned n = 300;

	hr_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR);
	cr_assert_eq(ffe_alloc(h.fe, (n - 2) * 512, 512, 1, &big), 0);
	t = h.tbl.hva;
	t[0] = (struct ffe_desc){ h.hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
	for (unsigned i = 1; i < n - 1; i++)
		t[i] = (struct ffe_desc){ big.gpa + (i - 1) * 512, 512, FFE_DESC_F_NEXT, (uint16_t)(i + 1) };
	t[n - 1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	h.vq->desc[0] = (struct ffe_desc){ h.tbl.gpa, n * 16, FFE_DESC_F_INDIRECT, 0 };
	hr_fire(&h, 0);
	hr_finish(&h, true, "indirect chain of 300 descriptors on a 128 queue");
}

Test(badring, direction_and_framing_violations)
{
	static const char *what[] = {
		"header in a device-writable descriptor", "readable descriptor after a writable one",
		"no writable descriptor for the status", "status descriptor of length 0",
		"IN request whose data descriptor is device-readable",
	};

	for (int v = 0; v < 5; v++) {
		struct hr h;
		struct ffe_desc *d;

		hr_open(&h, v == 4 ? FFE_BLK_T_IN : FFE_BLK_T_OUT, v == 1 || v == 2 ? SCRATCH_SECTOR : GOLD_SECTOR);
		d = h.vq->desc;
		chain3(d, &h, 0, 1, 2);
		switch (v) {
		case 0: d[0].flags |= FFE_DESC_F_WRITE; break;
		case 1: /* hdr(R) status(W) data(R) */
			d[0].next = 2;
			d[2] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 1 };
			d[1].flags &= (uint16_t)~FFE_DESC_F_NEXT;
			break;
		case 2: d[1].flags &= (uint16_t)~FFE_DESC_F_NEXT; break;
		case 3: d[2].len = 0; break;
		case 4: break;  /* IN with a read-only data buffer */
		}
		hr_fire(&h, 0);
		if (v == 4) {
			/* whatever it answers, it must not write a device-readable buffer */
			uint8_t *p = h.data.hva;

			usleep(200000);
			for (int k = 0; k < 4096; k++)
				if (p[k] != 0x5a) {
					cr_expect_fail("%s: the device wrote into a device-readable "
						       "buffer (byte %d = %#x)", what[v], k, p[k]);
					break;
				}
		}
		hr_finish(&h, v == 1 || v == 2 || v == 4, what[v]);
	}
}

Test(badring, avail_idx_jumps)
{
	static const uint16_t jump[] = { 128 + 10, 1000, 0x8000, 0xfffb };

	for (int i = 0; i < 4; i++) {
		struct hr h;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		chain3(h.vq->desc, &h, 0, 1, 2);
		for (unsigned k = 0; k < h.vq->num; k++)
			((uint16_t *)h.vq->avail)[2 + k] = 0;
		ffe_vq_set_avail_idx(h.vq, jump[i]);
		ffe_vq_kick_raw(h.vq);
		hr_finish(&h, false, "avail idx more than a queue size ahead");
	}
}

Test(badring, valid_request_before_a_bad_one_completes)
{
	/* a good request, then a looping one, in one kick: the good one
	 * completes correctly whatever happens to the bad one */
	struct hr h;
	struct ffe_blk_io io;
	uint8_t w[4096];

	hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
	ffe_pattern(w, sizeof(w), 3100);
	cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, SCRATCH_SECTOR + 64, w, sizeof(w), 0, NULL), 0);
	cr_assert_eq(ffe_submit(h.vq, &io.req), 0);
	/* the good one took descriptors from the top of the free stack (0..2) */
	chain3(h.vq->desc, &h, 100, 101, 102);
	h.vq->desc[102].flags |= FFE_DESC_F_NEXT;
	h.vq->desc[102].next = 100;
	hr_fire(&h, 100);
	cr_assert_eq(ffe_wait(h.vq, &io.req, 3000), 0, "the valid request before a looping one "
		     "never completed: %s", h.fe->err);
	cr_expect_eq(ffe_blk_status(&io), 0);
	ffe_blk_io_release(h.vq, &io);
	usleep(HOSTILE_WAIT_MS * 1000);
	cr_expect_neq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "looping request completed OK");
	{
		uint8_t r[4096];
		int p = ffe_probe(h.fe);

		if (p == 1) {
			fx_read_ok(&h.fe->vq[0], SCRATCH_SECTOR + 64, r, 4096, NULL);
			fx_check_pattern(r, 4096, 3100, "valid request issued before a bad one");
		}
	}
	ffe_close(h.fe);
	healthy();
}

/* A region of the right size whose contents lie; the rings then start on it. */
Test(badring, inflight_region_contents_lie)
{
	static const char *what[] = {
		"every head marked in flight over an empty descriptor table",
		"heads marked in flight with duplicate and maximal counters",
		"last_batch_head 0xffff and used_idx 1000 behind used->idx",
		"a batch list that loops (next pointing back) with a huge batch",
		"inflight bytes 2..255 (not 1)",
		"version 7 and desc_num 5 (a region for something else)",
		"marks on heads whose descriptors loop",
	};
	const size_t per = ffe_inflight_queue_size(128);

	for (unsigned v = 0; v < sizeof(what) / sizeof(what[0]); v++) {
		struct ffe_opts o;
		struct ffe *fe;
		struct ffe_inflight_queue *iq;
		uint8_t *map;
		int fd, r;

		ffe_opts_init(&o);
		fe = fx_open(DEV_A, &o);
		/* negotiate with INFLIGHT_SHMFD, then set a region of our own */
		fe->opts.inflight = true;
		cr_assert_eq(ffe_negotiate(fe, 0), 0, "%s", fe->err);
		cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
		fd = memfd_of(2 * per);
		map = mmap(NULL, 2 * per, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_assert_neq(map, MAP_FAILED);
		iq = (struct ffe_inflight_queue *)(map + per);       /* queue 1 */
		iq->version = 1;
		iq->desc_num = 128;
		for (unsigned h = 0; h < 128; h++) {
			iq->desc[h].inflight = 1;
			iq->desc[h].counter = 1000 - h;
			iq->desc[h].next = (uint16_t)((h + 1) % 128);
		}
		switch (v) {
		case 0: break;
		case 1: for (unsigned h = 0; h < 128; h++)
				iq->desc[h].counter = h % 3 ? UINT64_MAX : 5;
			break;
		case 2: iq->last_batch_head = 0xffff; iq->used_idx = (uint16_t)-1000; break;
		case 3: iq->last_batch_head = 3; iq->desc[3].next = 3; iq->used_idx = 0x8000; break;
		case 4: for (unsigned h = 0; h < 128; h++)
				iq->desc[h].inflight = (uint8_t)(2 + h % 254);
			break;
		case 5: iq->version = 7; iq->desc_num = 5; break;
		case 6: break;
		}
		fe->inflight_fd = fd;
		fe->inflight_map = map;
		fe->inflight_size = 2 * per;
		fe->inflight_nq = 2;
		fe->inflight_qs = 128;
		r = ffe_set_inflight_fd(fe);
		cr_log_info("%s: SET_INFLIGHT_FD %d", what[v], r);
		if (r == 0) {
			/* queue 0 normal; queue 1's rings: descriptor table empty, or
			 * (case 6) every descriptor chaining to the next in a loop */
			r = ffe_vq_start(fe, 0, 128);
			cr_assert_eq(r, 0, "%s: start q0: %s", what[v], fe->err);
			if (v == 6) {
				/* the table is allocated by ffe_vq_start: start, then
				 * loop it, then restart the ring on the same region */
				r = ffe_vq_start(fe, 1, 128);
				if (r == 0) {
					uint32_t base;

					ffe_vq_stop(fe, 1, &base);
					for (unsigned h = 0; h < 128; h++)
						*ffe_vq_desc(&fe->vq[1], h) = (struct ffe_desc){
							fe->r[0].gpa, 16, FFE_DESC_F_NEXT, (uint16_t)((h + 1) % 128) };
					for (unsigned h = 0; h < 128; h++)
						iq->desc[h].inflight = 1;
					iq->version = 1;
					iq->desc_num = 128;
					r = ffe_vq_resume_at(fe, 1, 0);
				}
			} else {
				r = ffe_vq_start(fe, 1, 128);
			}
			cr_log_info("%s: start q1 %d; used idx %u, bogus completions %u", what[v], r,
				    ffe_vq_used_idx(&fe->vq[1]), fe->vq[1].bogus_used);
			usleep(100000);
			if (ffe_probe(fe) == 1)
				fx_rw_verify(&fe->vq[0], 7400, 4096, 7400 + v, NULL);
			else
				cr_log_info("%s: connection dropped", what[v]);
		}
		ffe_close(fe);          /* also unmaps and closes the region */
		healthy();
	}
}

/* The fd behind a region shrinks after the back-end checked and mapped it:
 * touching the lost pages raises SIGBUS in the back-end. */
static void truncate_after_set(bool inflight)
{
	struct ffe_opts o;
	struct ffe *fe;
	int fd;

	ffe_opts_init(&o);
	o.inflight = inflight;
	if (inflight) {
		const size_t per = ffe_inflight_queue_size(128);
		uint8_t *map;

		/* our own (unsealed) region instead of the back-end's sealed one */
		fe = fx_open(DEV_A, &o);
		cr_assert_eq(ffe_negotiate(fe, 0), 0, "%s", fe->err);
		cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
		fd = memfd_of(2 * per);
		map = mmap(NULL, 2 * per, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_assert_neq(map, MAP_FAILED);
		fe->inflight_fd = fd;
		fe->inflight_map = map;
		fe->inflight_size = 2 * per;
		fe->inflight_nq = 2;
		fe->inflight_qs = 128;
		cr_assert_eq(ffe_set_inflight_fd(fe), 0, "%s", fe->err);
		cr_assert_eq(ffe_vq_start(fe, 0, 128), 0, "%s", fe->err);
		fx_rw_verify(&fe->vq[0], 7600, 4096, 7600, NULL);
		/* shrink it, then start a ring (the back-end reads the region) */
		munmap(map, 2 * per);
		fe->inflight_map = NULL;
		cr_assert_eq(ftruncate(fd, 0), 0);
		cr_log_info("inflight fd truncated to 0 after SET_INFLIGHT_FD; starting q1");
		ffe_vq_start(fe, 1, 128);
		usleep(200000);
	} else {
		fe = fx_ready(DEV_A, &o, 0, 2, 128);
		fx_rw_verify(&fe->vq[1], 7610, 4096, 7610, NULL);
		/* shrink guest memory under the back-end, then kick: it reads the
		 * avail ring (we no longer touch that memory ourselves) */
		cr_assert_eq(ftruncate(fe->r[0].fd, 0), 0);
		cr_log_info("guest memory fd truncated to 0 after SET_MEM_TABLE; kicking q1");
		ffe_vq_kick_raw(&fe->vq[1]);
		usleep(200000);
	}
	cr_log_info("back-end alive after touching a truncated %s", inflight ? "inflight region" :
		    "memory region");
	ffe_close(fe);
	healthy();
}

Test(badring, inflight_fd_truncated_after_set) { truncate_after_set(true); }
Test(badring, mem_table_fd_truncated_after_set) { truncate_after_set(false); }

/* ---- hostile front-end: more descriptor cases (issue 6) --------------------- */

Test(badring, wrong_write_flags)
{
	static const char *what[] = {
		"OUT whose data descriptor is device-writable",
		"IN whose status descriptor is device-readable",
		"IN with every descriptor device-readable",
		"IN with every descriptor device-writable (header too)",
		"WRITE flag on the descriptor that refers to an indirect table",
		"undefined flag bits 0xfff8 on every descriptor",
	};

	for (int v = 0; v < 6; v++) {
		bool in = v >= 1 && v <= 3;
		struct hr h;
		struct ffe_desc *d;

		hr_open(&h, in ? FFE_BLK_T_IN : FFE_BLK_T_OUT, v >= 4 ? SCRATCH_SECTOR : GOLD_SECTOR);
		d = h.vq->desc;
		chain3(d, &h, 0, 1, 2);
		if (in)
			d[1].flags |= FFE_DESC_F_WRITE;
		switch (v) {
		case 0: d[1].flags |= FFE_DESC_F_WRITE; break;
		case 1: d[2].flags &= (uint16_t)~FFE_DESC_F_WRITE; break;
		case 2: d[1].flags &= (uint16_t)~FFE_DESC_F_WRITE;
			d[2].flags &= (uint16_t)~FFE_DESC_F_WRITE;
			break;
		case 3: d[0].flags |= FFE_DESC_F_WRITE; break;
		case 4: chain3(h.tbl.hva, &h, 0, 1, 2);
			d[3] = (struct ffe_desc){ h.tbl.gpa, 48, FFE_DESC_F_INDIRECT | FFE_DESC_F_WRITE, 0 };
			break;
		case 5: for (int k = 0; k < 3; k++)
				d[k].flags |= 0xfff8;
			break;
		}
		hr_fire(&h, v == 4 ? 3 : 0);
		if (v == 4) {
			/* virtio 1.2 2.7.5.3.2: the device MUST ignore the write-only
			 * flag of a descriptor that refers to an indirect table */
			cr_expect_eq(wait_used_or_hangup(h.fe, h.vq, 2000), 0, "%s: no completion", what[v]);
			cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "%s: status %#x; the flag must be "
				     "ignored", what[v], *(uint8_t *)h.st.hva);
		} else {
			usleep(100000);
		}
		/* device-readable buffers are never written; OUT data never read
		 * from a writable buffer (golden data of A checked by healthy) */
		if (v == 1 || v == 2)
			cr_expect_eq(*(uint8_t *)h.st.hva, 0xee, "%s: the device wrote %#x into a "
				     "device-readable status byte", what[v], *(uint8_t *)h.st.hva);
		if (v == 2 || v == 0) {
			uint8_t *p = h.data.hva;

			for (int k = 0; k < 4096; k++)
				if (p[k] != 0x5a) {
					cr_expect_fail("%s: data buffer byte %d became %#x", what[v], k, p[k]);
					break;
				}
		}
		hr_finish(&h, v == 0 || v >= 4, what[v]);
	}
}

Test(badring, short_header)
{
	static const char *what[] = {
		"8-byte header, then the status", "15-byte header, then the status",
		"0-byte header, then the status", "no header: only a status descriptor",
		"header spanning two descriptors (8 + 8) and no status byte",
		"header whose second half is device-writable",
		"header spanning two descriptors (8 + 8) with data and status (valid)",
	};

	for (int v = 0; v < 7; v++) {
		struct hr h;
		struct ffe_desc *d;
		uint16_t head = 0;

		hr_open(&h, FFE_BLK_T_OUT, v == 6 ? SCRATCH_SECTOR + 8 : GOLD_SECTOR);
		d = h.vq->desc;
		switch (v) {
		case 0: case 1: case 2:
			d[0] = (struct ffe_desc){ h.hdr.gpa, v == 0 ? 8u : v == 1 ? 15u : 0u, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		case 3:
			d[0] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		case 4:
			d[0] = (struct ffe_desc){ h.hdr.gpa, 8, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.hdr.gpa + 8, 8, 0, 0 };
			break;
		case 5:
			d[0] = (struct ffe_desc){ h.hdr.gpa, 8, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.hdr.gpa + 8, 8, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 2 };
			d[2] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		case 6:
			d[0] = (struct ffe_desc){ h.hdr.gpa, 8, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.hdr.gpa + 8, 8, FFE_DESC_F_NEXT, 2 };
			d[2] = (struct ffe_desc){ h.data.gpa, 4096, FFE_DESC_F_NEXT, 3 };
			d[3] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		}
		hr_fire(&h, head);
		if (v == 6) {
			uint8_t r[4096];

			cr_expect_eq(wait_used_or_hangup(h.fe, h.vq, 2000), 0, "%s: no completion", what[v]);
			cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "%s: status %#x", what[v],
				     *(uint8_t *)h.st.hva);
			fx_read_ok(&h.fe->vq[0], SCRATCH_SECTOR + 8, r, sizeof(r), NULL);
			for (int k = 0; k < 4096; k++)
				if (r[k] != 0x5a) {
					cr_expect_fail("%s: byte %d on disk is %#x", what[v], k, r[k]);
					break;
				}
		}
		if (v == 4)
			cr_expect_eq(*(uint8_t *)h.st.hva, 0xee, "%s: status byte (not in the chain) "
				     "written", what[v]);
		hr_finish(&h, v == 6, what[v]);
	}
}

Test(badring, indirect_chain_beyond_any_limit)
{
	/* chains longer than the queue, through indirect tables */
	static const char *what[] = {
		"indirect table of 1025 chained entries (beyond the 1024 maximum)",
		"indirect table of 4096 chained entries",
		"indirect table of 200 entries whose last links back to the first",
		"indirect chain of 129 descriptors (queue size + 1) with 127 data segments",
	};

	for (int v = 0; v < 4; v++) {
		struct hr h;
		struct ffe_buf big;
		struct ffe_desc *t;
		unsigned n = v == 0 ? 1025 : v == 1 ? 4096 : v == 2 ? 200 : 129;

		hr_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR + 64);
		cr_assert_eq(ffe_alloc(h.fe, 4096 * 16, 16, 1, &big), 0);
		t = big.hva;
		for (unsigned i = 0; i < n; i++)
			t[i] = (struct ffe_desc){ h.data.gpa, 512, FFE_DESC_F_NEXT, (uint16_t)(i + 1) };
		t[0] = (struct ffe_desc){ h.hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
		if (v == 2)
			t[n - 1].next = 0;
		else
			t[n - 1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
		h.vq->desc[0] = (struct ffe_desc){ big.gpa, n * 16, FFE_DESC_F_INDIRECT, 0 };
		hr_fire(&h, 0);
		hr_finish(&h, v == 3, what[v]);
	}
}

Test(badring, length_wraparound)
{
	/* lengths that only fit when added in 32 bits, addresses that wrap */
	static const char *what[] = {
		"OUT data of 64 descriptors x 64 MiB + 512 (2^32 + 512 bytes)",
		"IN data of 64 descriptors x 64 MiB + 512 (2^32 + 512 bytes)",
		"data descriptor at 2^64 - 512 of 1024 bytes",
		"header descriptor of 0xffffffff bytes",
		"status descriptor at 2^64 - 1",
	};

	for (int v = 0; v < 5; v++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 128);    /* one 64 MiB region */
		struct ffe_vq *vq = &fe->vq[1];
		struct ffe_blk_hdr bh = { .type = v == 1 ? FFE_BLK_T_IN : FFE_BLK_T_OUT,
					  .sector = GOLD_SECTOR };
		struct ffe_buf hdr, st, small, tbl;
		struct ffe_desc *t;
		unsigned n = 0;
		uint16_t w = v == 1 ? FFE_DESC_F_WRITE : 0;
		int r;

		cr_assert_eq(ffe_alloc(fe, 16, 16, 0, &hdr), 0);
		cr_assert_eq(ffe_alloc(fe, 1, 1, 0, &st), 0);
		cr_assert_eq(ffe_alloc(fe, 512, 512, 0, &small), 0);
		cr_assert_eq(ffe_alloc(fe, 80 * 16, 16, 0, &tbl), 0);
		memcpy(hdr.hva, &bh, sizeof(bh));
		memset(small.hva, 0x77, 512);
		*(uint8_t *)st.hva = 0xee;
		t = tbl.hva;
		t[n++] = (struct ffe_desc){ hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
		switch (v) {
		case 0: case 1:
			for (int k = 0; k < 64; k++, n++)
				t[n] = (struct ffe_desc){ fe->r[0].gpa, (uint32_t)fe->r[0].size,
							  (uint16_t)(FFE_DESC_F_NEXT | w), (uint16_t)(n + 1) };
			t[n] = (struct ffe_desc){ small.gpa, 512, (uint16_t)(FFE_DESC_F_NEXT | w),
						  (uint16_t)(n + 1) };
			n++;
			cr_assert_eq(fe->r[0].size, 64 * MiB);
			break;
		case 2:
			t[n] = (struct ffe_desc){ 0ull - 512, 1024, FFE_DESC_F_NEXT, (uint16_t)(n + 1) };
			n++;
			break;
		case 3:
			t[0].len = 0xffffffffu;
			break;
		}
		t[n] = (struct ffe_desc){ v == 4 ? ~0ull : st.gpa, 1, FFE_DESC_F_WRITE, 0 };
		n++;
		*ffe_vq_desc(vq, 0) = (struct ffe_desc){ tbl.gpa, n * 16, FFE_DESC_F_INDIRECT, 0 };
		ffe_vq_publish(vq, 0);
		ffe_vq_kick_raw(vq);
		r = wait_used_or_hangup(fe, vq, HOSTILE_WAIT_MS);
		cr_log_info("%s: %s, status %#x", what[v], r == 0 ? "completed" :
			    r == -EPIPE ? "connection dropped" : "no completion", *(uint8_t *)st.hva);
		cr_expect_neq(*(uint8_t *)st.hva, FFE_BLK_S_OK, "%s: completed with status OK", what[v]);
		if (r == 0)
			cr_expect_leq(ffe_vq_used_elem(vq, 0).len, 1u, "%s: used len %u", what[v],
				      ffe_vq_used_elem(vq, 0).len);
		for (int k = 0; v == 1 && k < 512; k++)
			if (((uint8_t *)small.hva)[k] != 0x77) {
				cr_expect_fail("%s: the device read data into a request it should refuse",
					       what[v]);
				break;
			}
		finish(fe, r == -EPIPE ? O_DROPPED : O_ACK0, what[v]);
	}
}

Test(badring, ring_addr_outside_memory_then_kick)
{
	static const char *what[] = {
		"unstarted ring: desc table at an unmapped uva, then KICK and ENABLE",
		"running ring: avail ring moved off the end of memory, then a request and a kick",
		"running ring: used ring misaligned by 2",
		"running ring: memory table replaced by one that no longer holds the rings",
		"running ring: desc, avail and used at the same address",
	};

	for (int v = 0; v < 5; v++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, v == 0 ? 1 : 2, 128);
		struct ffe_vq *vq = &fe->vq[1];
		enum outcome o = O_ACK0;
		uint64_t one = 1;

		if (v == 0) {
			/* program vring 1 by hand with a bad desc address */
			struct ffe_buf a, u;
			uint32_t st[2] = { 1, 128 };
			struct ffe_vring_addr ad = { .index = 1, .desc = 0x1000 };
			int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
			uint64_t kv = 1;

			cr_assert_eq(ffe_alloc(fe, 4096, 4096, 0, &a), 0);
			cr_assert_eq(ffe_alloc(fe, 4096, 4096, 0, &u), 0);
			ad.avail = ffe_hva_to_uva(fe, a.hva);
			ad.used = ffe_hva_to_uva(fe, u.hva);
			xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);
			st[1] = 0;
			xmit(fe, FFE_SET_VRING_BASE, 0, 8, st, 8, NULL, 0, NULL);
			o = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(ad), &ad, sizeof(ad), NULL, 0, NULL);
			cr_log_info("%s: SET_VRING_ADDR %s", what[v], oname(o));
			if (o != O_DROPPED) {
				o = xmit(fe, FFE_SET_VRING_CALL, 0, 8, &kv, 8, &call, 1, NULL);
				o = xmit(fe, FFE_SET_VRING_KICK, 0, 8, &kv, 8, &kick, 1, NULL);
				cr_log_info("%s: SET_VRING_KICK %s", what[v], oname(o));
			}
			for (int k = 0; k < 3 && o != O_DROPPED; k++) {
				cr_expect_eq(write(kick, &one, 8), 8);
				usleep(20000);
			}
			if (o != O_DROPPED) {
				st[1] = 1;
				o = xmit(fe, FFE_SET_VRING_ENABLE, 0, 8, st, 8, NULL, 0, NULL);
				cr_log_info("%s: SET_VRING_ENABLE %s", what[v], oname(o));
				cr_expect_eq(write(kick, &one, 8), 8);
				usleep(50000);
			}
			close(kick);
			close(call);
		} else if (v == 3) {
			/* same memory, different user addresses: the rings' uvas
			 * fall outside the new table */
			uint8_t buf[8 + sizeof(struct ffe_mem_region)];
			int fd;
			struct ffe_mem_region mr;

			ffe_mem_table_payload(fe, buf, &fd);
			memcpy(&mr, buf + 8, sizeof(mr));
			mr.uva += 1ull << 40;
			memcpy(buf + 8, &mr, sizeof(mr));
			o = xmit(fe, FFE_SET_MEM_TABLE, 0, sizeof(buf), buf, sizeof(buf), &fd, 1, NULL);
		} else {
			struct ffe_vring_addr ad = { .index = 1, .desc = vq->desc_uva, .used = vq->used_uva,
						     .avail = vq->avail_uva };
			uint64_t end = fe->r[0].uva + fe->r[0].size;

			if (v == 1)
				ad.avail = end - 6;
			else if (v == 2)
				ad.used += 2;
			else
				ad.avail = ad.used = ad.desc;
			o = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(ad), &ad, sizeof(ad), NULL, 0, NULL);
		}
		cr_log_info("%s: %s", what[v], oname(o));
		if (v == 1 || v == 2 || v == 3)
			EXPECT_REFUSED(o, "%s: backend %s", what[v], oname(o));
		else
			cr_expect_neq(o, O_HANG, "%s: backend %s", what[v], oname(o));
		if (v > 0 && o != O_DROPPED) {
			/* a request into the (old) ring, and a kick */
			struct ffe_blk_io io;

			cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, SCRATCH_SECTOR, fe->r[0].hva, 4096,
						  0, NULL), 0);
			if (ffe_submit(vq, &io.req) == 0)
				ffe_vq_kick_raw(vq);
			usleep(200000);
			ffe_blk_io_release(vq, &io);
		}
		finish(fe, o, what[v]);
	}
}

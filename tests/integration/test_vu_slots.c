/* Integration suite `slots`: memory slots (CONFIGURE_MEM_SLOTS) on a live
 * core, the way QEMU uses them for memory hot-plug: the memory given region
 * by region with ADD_MEM_REG only (no SET_MEM_TABLE), regions added and
 * removed while every queue does verified I/O, buffers placed in the new
 * regions, requests posted across a removal, a request into a removed
 * region; then hostile input (overlaps, unknown regions, regions past their
 * file, wrong fd counts and sizes, more regions than GET_MAX_MEM_SLOTS) with
 * and without REPLY_ACK.  The fixture: vu_fixture.h. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vu_fixture.h"

#define SLOT_SIZE       (2 * MiB)
#define HOTPLUG_ADDS    34      /* regions added one by one: 35 in the table */

/* Device A with nregions regions given by ADD_MEM_REG, nq queues running. */
static struct ffe *slots_fe(unsigned nregions, unsigned nq)
{
	struct ffe_opts o;
	struct ffe *fe;

	ffe_opts_init(&o);
	o.nregions = nregions;
	o.translate = true;
	o.extra_protocol_features = FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS);
	fe = fx_ready(DEV_A, &o, 0, nq, 128);
	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS),
		  "CONFIGURE_MEM_SLOTS not offered (protocol features 0x%" PRIx64 ")",
		  fe->dev_protocol_features);
	cr_assert(fe->use_reply_ack && (fe->protocol_features & FFE_BIT(FFE_PF_REPLY_ACK)));
	return fe;
}

/* A new region of size bytes, added (asserts the ack). */
static unsigned add_region(struct ffe *fe, uint64_t size)
{
	int i = ffe_region_new(fe, 0, size);
	int r;

	cr_assert_geq(i, 0, "cannot make region: %s", strerror(-i));
	r = ffe_add_mem_reg(fe, (unsigned)i);
	cr_assert_eq(r, 0, "ADD_MEM_REG of region %d (gpa 0x%" PRIx64 "): %d (%s)", i,
		     fe->r[i].gpa, r, fe->err);
	return (unsigned)i;
}

static void rem_region(struct ffe *fe, unsigned i, bool with_fd)
{
	int r = ffe_rem_mem_reg(fe, i, with_fd);

	cr_assert_eq(r, 0, "REM_MEM_REG of region %u (gpa 0x%" PRIx64 "): %d (%s)", i,
		     fe->r[i].gpa, r, fe->err);
}

/* One request on an idle vq whose data buffer is at gpa (our pointer hva,
 * maybe in memory the back-end no longer has); header and status in the
 * queue's scratch.  Returns the status byte, or -1 when none was written. */
static int raw_data_io(struct ffe_vq *vq, uint32_t type, uint64_t sector, uint64_t gpa,
		       uint32_t len)
{
	struct ffe_buf h, st;
	struct ffe_blk_hdr hdr = { .type = type, .sector = sector };
	uint16_t u = ffe_vq_used_idx(vq);
	int r;

	cr_assert_eq(vq->ninflight, 0u);
	cr_assert_eq(ffe_vq_alloc(vq, 16, 16, &h), 0);
	cr_assert_eq(ffe_vq_alloc(vq, 1, 1, &st), 0);
	memcpy(h.hva, &hdr, sizeof(hdr));
	*(volatile uint8_t *)st.hva = 0xee;
	*ffe_vq_desc(vq, 0) = (struct ffe_desc){ h.gpa, 16, FFE_DESC_F_NEXT, 1 };
	*ffe_vq_desc(vq, 1) = (struct ffe_desc){ gpa, len,
		(uint16_t)(FFE_DESC_F_NEXT | (type == FFE_BLK_T_IN ? FFE_DESC_F_WRITE : 0)), 2 };
	*ffe_vq_desc(vq, 2) = (struct ffe_desc){ st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	ffe_vq_publish(vq, 0);
	ffe_vq_kick_raw(vq);
	r = ffe_vq_wait_used_change(vq, u, 5000);
	cr_assert_eq(r, 0, "q%u: a request with its data at gpa 0x%" PRIx64 " never completed",
		     vq->index, gpa);
	vq->last_used = ffe_vq_used_idx(vq);
	r = *(volatile uint8_t *)st.hva;
	return r == 0xee ? -1 : r;
}

/* Write+read+verify on every queue, buffers wherever the queue takes them. */
static void io_all(struct ffe *fe, unsigned nq, uint64_t seed)
{
	for (unsigned q = 0; q < nq; q++)
		fx_rw_verify(&fe->vq[q], 20000 + q * 64, 16384, seed + q, NULL);
}

/* Write+read+verify on vq with every buffer in region k. */
static void io_in_region(struct ffe *fe, unsigned q, unsigned k, uint64_t seed)
{
	struct ffe_vq *vq = &fe->vq[q];

	cr_assert_eq(ffe_vq_scratch_region(vq, (int)k, 256 * 1024), 0);
	fx_rw_verify(vq, 24000 + q * 64, 16384, seed, NULL);
	ffe_vq_scratch_region(vq, -1, 0);
}

Test(slots, memory_by_add_mem_reg_only)
{
	struct ffe *fe = slots_fe(3, A_QUEUES);
	uint64_t n = 0;

	cr_expect_eq(ffe_get_max_mem_slots(fe, &n), 0, "%s", fe->err);
	cr_log_info("GET_MAX_MEM_SLOTS: %" PRIu64, n);
	cr_expect_geq(n, 32u, "GET_MAX_MEM_SLOTS %" PRIu64 ": Kata needs more than 8", n);
	cr_expect_leq(n, 509u, "GET_MAX_MEM_SLOTS %" PRIu64 " is more than QEMU can use", n);
	/* the three regions (given by ADD_MEM_REG alone) carry rings and buffers */
	io_all(fe, A_QUEUES, 0x5100);
	for (unsigned k = 0; k < 3; k++)
		io_in_region(fe, k % A_QUEUES, k, 0x5110 + k);
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

/* ---- hot-plug under running I/O ---------------------------------------------- */

struct hp {
	struct ffe_vq *vq;
	pthread_t th;
	int want;                       /* region to take buffers from (-1: any), atomic */
	atomic_bool stop;
	unsigned done_in[FFE_MAX_REGIONS];      /* atomic */
	unsigned done;                          /* atomic */
	int64_t worst_ms;               /* longest write+read cycle */
	char err[256];
};

static void *hp_worker(void *arg)
{
	struct hp *t = arg;
	uint8_t w[8192], r[8192];
	int cur = -1;

	while (!t->stop && !t->err[0]) {
		int want = __atomic_load_n(&t->want, __ATOMIC_ACQUIRE);
		uint64_t seed = 0x40000 + t->vq->index * 100000ull + t->done;
		uint64_t sector = 12000 + t->vq->index * 512 + (t->done % 32) * 16;
		int s;

		int64_t c0 = ffe_now_ms();

		if (want != cur) {
			s = ffe_vq_scratch_region(t->vq, want, 256 * 1024);
			if (s < 0) {
				snprintf(t->err, sizeof(t->err), "q%u: scratch in region %d: %s",
					 t->vq->index, want, strerror(-s));
				break;
			}
			cur = want;
		}
		ffe_pattern(w, sizeof(w), seed);
		s = ffe_blk_write(t->vq, sector, w, sizeof(w), NULL);
		if (s == 0)
			s = ffe_blk_read(t->vq, sector, r, sizeof(r), NULL);
		if (s != 0)
			snprintf(t->err, sizeof(t->err), "q%u, buffers in region %d: status %d (%.150s)",
				 t->vq->index, cur, s, s < 0 ? t->vq->fe->err : "");
		else if (!ffe_pattern_ok(r, sizeof(r), seed))
			snprintf(t->err, sizeof(t->err), "q%u, buffers in region %d: read-back differs "
				 "at sector %" PRIu64, t->vq->index, cur, sector);
		if (cur >= 0)
			__atomic_fetch_add(&t->done_in[cur], 1, __ATOMIC_RELAXED);
		if (ffe_now_ms() - c0 > t->worst_ms)
			t->worst_ms = ffe_now_ms() - c0;
		__atomic_fetch_add(&t->done, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Move every thread to region k and wait until each did 3 cycles there.
 * False (the reason in why) if one failed or did not get there in 5 s. */
static bool hp_move(struct hp *t, unsigned n, int k, char *why, size_t whylen)
{
	unsigned base[A_QUEUES];
	struct ffe_deadline dl;

	for (unsigned q = 0; q < n; q++) {
		base[q] = k >= 0 ? __atomic_load_n(&t[q].done_in[k], __ATOMIC_RELAXED) :
				   __atomic_load_n(&t[q].done, __ATOMIC_RELAXED);
		__atomic_store_n(&t[q].want, k, __ATOMIC_RELEASE);
	}
	ffe_deadline_start(&dl, 30000);
	for (unsigned q = 0; q < n; q++) {
		while (!t[q].err[0] &&
		       (k >= 0 ? __atomic_load_n(&t[q].done_in[k], __ATOMIC_RELAXED) :
				 __atomic_load_n(&t[q].done, __ATOMIC_RELAXED)) < base[q] + 3 &&
		       ffe_deadline_left(&dl))
			usleep(200);
		if (t[q].err[0]) {
			snprintf(why, whylen, "%s", t[q].err);
			return false;
		}
		if ((k >= 0 ? __atomic_load_n(&t[q].done_in[k], __ATOMIC_RELAXED) :
			      __atomic_load_n(&t[q].done, __ATOMIC_RELAXED)) < base[q] + 3) {
			snprintf(why, whylen, "q%u did no I/O with buffers in region %d within 30 s", q, k);
			return false;
		}
	}
	return true;
}

/* Threads drive every queue while regions come and go; on any failure the
 * threads are stopped before the test fails (they use fe's memory).  Waits
 * are 30 s here: twice, under a parallel build (load 16 on 2 cpus), an
 * ADD_MEM_REG went unanswered for 5 s, with no engine-detach warning from
 * the core (it warns after 10 s): starvation, as far as could be seen. */
Test(slots, add_and_remove_under_running_io)
{
	struct ffe *fe = slots_fe(1, A_QUEUES);
	struct hp t[A_QUEUES];
	unsigned added[HOTPLUG_ADDS], nadd = 0, nrem = 0;
	bool removed[FFE_MAX_REGIONS] = { false };
	int64_t t0 = ffe_now_ms();
	char why[400] = "";
	int64_t worst_add = 0;
	int r;

	fe->timeout_ms = 30000;
	memset(t, 0, sizeof(t));
	for (unsigned q = 0; q < A_QUEUES; q++) {
		t[q].vq = &fe->vq[q];
		t[q].want = -1;
		pthread_create(&t[q].th, NULL, hp_worker, &t[q]);
	}
	/* one by one up to 35 regions, every queue following into the new one */
	for (; nadd < HOTPLUG_ADDS; nadd++) {
		r = ffe_region_new(fe, 0, SLOT_SIZE);
		if (r < 0) {
			snprintf(why, sizeof(why), "cannot make region: %s", strerror(-r));
			goto out;
		}
		added[nadd] = (unsigned)r;
		{
			int64_t a0 = ffe_now_ms();

			r = ffe_add_mem_reg(fe, added[nadd]);
			if (ffe_now_ms() - a0 > worst_add)
				worst_add = ffe_now_ms() - a0;
		}
		if (r != 0) {
			snprintf(why, sizeof(why), "ADD_MEM_REG of region %u: %d (%s)", added[nadd], r,
				 fe->err);
			goto out;
		}
		if (!hp_move(t, A_QUEUES, (int)added[nadd], why, sizeof(why)))
			goto out;
	}
	cr_log_info("%u regions added under I/O in %" PRId64 " ms, the longest ADD_MEM_REG "
		    "round trip %" PRId64 " ms", nadd, ffe_now_ms() - t0, worst_add);
	/* remove every third one while the queues work in the others */
	for (unsigned k = 0; k < HOTPLUG_ADDS; k += 3) {
		/* a neighbour that stays (k + 1 is never removed, k - 1 neither) */
		unsigned keep = added[k + 1 < HOTPLUG_ADDS ? k + 1 : k - 1];

		if (!hp_move(t, A_QUEUES, (int)keep, why, sizeof(why)))
			goto out;
		r = ffe_rem_mem_reg(fe, added[k], k % 2);       /* with and without the fd */
		if (r != 0) {
			snprintf(why, sizeof(why), "REM_MEM_REG of region %u: %d (%s)", added[k], r,
				 fe->err);
			goto out;
		}
		removed[added[k]] = true;
		nrem++;
		if (!hp_move(t, A_QUEUES, (int)keep, why, sizeof(why)))
			goto out;
	}
	/* the survivors all still serve, after the removals */
	for (unsigned k = 0; k < HOTPLUG_ADDS; k++)
		if (!removed[added[k]] && !hp_move(t, A_QUEUES, (int)added[k], why, sizeof(why)))
			goto out;
	hp_move(t, A_QUEUES, -1, why, sizeof(why));
out:
	for (unsigned q = 0; q < A_QUEUES; q++) {
		t[q].stop = true;
		pthread_join(t[q].th, NULL);
		cr_expect(!t[q].err[0], "%s", t[q].err);
		cr_log_info("q%u: %u write+read cycles, the longest %" PRId64 " ms", q, t[q].done,
			    t[q].worst_ms);
	}
	cr_assert(!why[0], "after %u regions added and %u removed: %s", nadd, nrem, why);
	cr_log_info("%u added, %u removed, %" PRId64 " ms", HOTPLUG_ADDS, nrem, ffe_now_ms() - t0);
	/* a request into a removed region fails, and only it */
	{
		unsigned gone = added[0];
		int s = raw_data_io(&fe->vq[1], FFE_BLK_T_OUT, 30000, fe->r[gone].gpa + 4096, 4096);

		cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT from removed region %u: status %d", gone, s);
	}
	io_all(fe, A_QUEUES, 0x5200);
	check_golden(&fe->vq[2]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(slots, requests_posted_across_removal_of_another_region)
{
	enum { NQ = 2, PER = 16, LEN = 4096 };
	struct ffe *fe = slots_fe(1, NQ);
	struct ffe_blk_io *io = calloc(NQ * PER, sizeof(*io));
	unsigned r1 = add_region(fe, SLOT_SIZE), r2 = add_region(fe, SLOT_SIZE);

	/* r2 carries data too before it goes */
	io_in_region(fe, 0, r2, 0x5300);
	for (unsigned q = 0; q < NQ; q++)
		cr_assert_eq(ffe_vq_scratch_region(&fe->vq[q], (int)r1, MiB), 0);
	for (unsigned q = 0; q < NQ; q++) {
		for (unsigned i = 0; i < PER; i++) {
			struct ffe_blk_io *b = &io[q * PER + i];
			uint8_t w[LEN];

			ffe_pattern(w, LEN, 0x5400 + q * PER + i);
			cr_assert_eq(ffe_blk_prep(b, FFE_BLK_T_OUT, 14000 + (q * PER + i) * 8, w, LEN, 0,
						  NULL), 0);
			cr_assert_eq(ffe_submit(&fe->vq[q], &b->req), 0);
		}
	}
	/* posted (not kicked) while r2 goes away */
	rem_region(fe, r2, false);
	for (unsigned q = 0; q < NQ; q++)
		ffe_kick(&fe->vq[q]);
	for (unsigned q = 0; q < NQ; q++) {
		for (unsigned i = 0; i < PER; i++) {
			struct ffe_blk_io *b = &io[q * PER + i];
			int r = ffe_wait(&fe->vq[q], &b->req, 5000);

			cr_assert_eq(r, 0, "q%u request %u posted across REM_MEM_REG: no completion", q, i);
			cr_expect_eq(ffe_blk_status(b), FFE_BLK_S_OK, "q%u request %u: status %d", q, i,
				     ffe_blk_status(b));
			ffe_blk_io_release(&fe->vq[q], b);
		}
	}
	free(io);
	for (unsigned q = 0; q < NQ; q++)
		ffe_vq_scratch_region(&fe->vq[q], -1, 0);
	for (unsigned k = 0; k < NQ * PER; k++)
		fx_read_check(&fe->vq[k % NQ], 14000 + k * 8, LEN, 0x5400 + k, NULL,
			      "data of a request posted across REM_MEM_REG of another region");
	io_in_region(fe, 1, r1, 0x5310);
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(slots, request_into_a_removed_region_fails_alone)
{
	struct ffe *fe = slots_fe(1, 2);
	struct ffe_vq *vq = &fe->vq[0];
	unsigned r1 = add_region(fe, SLOT_SIZE);
	uint8_t *data = fe->r[r1].hva + MiB;
	uint64_t gpa = fe->r[r1].gpa + MiB;
	int s;

	fx_write_pattern(vq, 9000, 8192, 0x5500, NULL);
	/* the helper works while the region is there */
	ffe_pattern(data, 8192, 0x5501);
	s = raw_data_io(vq, FFE_BLK_T_OUT, 9000, gpa, 8192);
	cr_assert_eq(s, FFE_BLK_S_OK, "OUT from region %u while present: status %d", r1, s);
	fx_read_check(&fe->vq[1], 9000, 8192, 0x5501, NULL, "written from the added region");

	rem_region(fe, r1, false);
	ffe_pattern(data, 8192, 0x5502);
	s = raw_data_io(vq, FFE_BLK_T_OUT, 9000, gpa, 8192);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT from a removed region: status %d", s);
	memset(data, 0x5a, 8192);
	s = raw_data_io(vq, FFE_BLK_T_IN, 9000, gpa, 8192);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN into a removed region: status %d", s);
	for (unsigned i = 0; i < 8192; i++)
		if (data[i] != 0x5a) {
			cr_expect_fail("IN into a removed region changed its byte %u", i);
			break;
		}
	/* the failed write changed nothing; the same ring goes on */
	fx_read_check(vq, 9000, 8192, 0x5501, NULL, "sectors a failed OUT (removed region) aimed at");
	fx_rw_verify(vq, 9100, 16384, 0x5503, NULL);
	fx_rw_verify(&fe->vq[1], 9200, 16384, 0x5504, NULL);

	/* the same region added again serves again */
	cr_assert_eq(ffe_add_mem_reg(fe, r1), 0, "ADD_MEM_REG of a removed region again: %s", fe->err);
	memset(data, 0, 8192);
	s = raw_data_io(vq, FFE_BLK_T_IN, 9000, gpa, 8192);
	cr_expect_eq(s, FFE_BLK_S_OK, "IN into the region added again: status %d", s);
	fx_check_pattern(data, 8192, 0x5501, "read into the region added again");
	check_golden(vq);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

/* ---- hostile input ------------------------------------------------------------- */

enum hcase {
	H_GPA_OVERLAP, H_UVA_OVERLAP, H_DUPLICATE, H_REM_UNKNOWN, H_REM_WRONG_SIZE,
	H_PAST_FD, H_OFFSET_PAST_FD, H_ZERO_SIZE, H_GPA_WRAPS, H_UVA_WRAPS,
	H_ADD_NO_FD, H_ADD_TWO_FDS, H_REM_TWO_FDS, H_NCASES
};

static const char *const hname[] = {
	"ADD overlapping an existing region in guest addresses",
	"ADD overlapping an existing region in user addresses",
	"ADD of a region already in the table",
	"REM of a region never added",
	"REM of a region with the wrong size",
	"ADD of a region longer than its file",
	"ADD of a region whose offset is past the end of its file",
	"ADD of an empty region",
	"ADD of a region whose guest addresses wrap around",
	"ADD of a region whose user addresses wrap around",
	"ADD without an fd",
	"ADD with two fds",
	"REM with two fds",
};

/* Send hostile case c against fe, whose region r1 is in the table. */
static enum outcome send_case(struct ffe *fe, unsigned r1, enum hcase c, uint32_t flags)
{
	struct ffe_mem_reg mr;
	uint32_t req = FFE_ADD_MEM_REG;
	int fds[2], nfds = 1, own = -1;
	enum outcome o;

	ffe_mem_reg_of(fe, r1, &mr);
	fds[0] = fds[1] = fe->r[r1].fd;
	switch (c) {
	case H_GPA_OVERLAP:
		own = fds[0] = memfd_of(4 * MiB);
		mr.region = (struct ffe_mem_region){ fe->r[r1].gpa + MiB, 2 * MiB, 0x3f0000000000ull, 0 };
		break;
	case H_UVA_OVERLAP:
		own = fds[0] = memfd_of(4 * MiB);
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, 2 * MiB, fe->r[r1].uva + 65536, 0 };
		break;
	case H_DUPLICATE:
		break;
	case H_REM_UNKNOWN:
		req = FFE_REM_MEM_REG;
		nfds = 0;
		mr.region.gpa = 0x7800000000ull;
		mr.region.uva = 0x3e0000000000ull;
		break;
	case H_REM_WRONG_SIZE:
		req = FFE_REM_MEM_REG;
		nfds = 0;
		mr.region.size /= 2;
		break;
	case H_PAST_FD:
		own = fds[0] = memfd_of(MiB);
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, 2 * MiB, 0x3f0000000000ull, 0 };
		break;
	case H_OFFSET_PAST_FD:
		own = fds[0] = memfd_of(MiB);
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, MiB, 0x3f0000000000ull, 2 * MiB };
		break;
	case H_ZERO_SIZE:
		own = fds[0] = memfd_of(MiB);
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, 0, 0x3f0000000000ull, 0 };
		break;
	case H_GPA_WRAPS:
		own = fds[0] = memfd_of(MiB);
		mr.region = (struct ffe_mem_region){ UINT64_MAX - 65535, MiB, 0x3f0000000000ull, 0 };
		break;
	case H_UVA_WRAPS:
		own = fds[0] = memfd_of(MiB);
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, MiB, UINT64_MAX - 65535, 0 };
		break;
	case H_ADD_NO_FD:
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, MiB, 0x3f0000000000ull, 0 };
		nfds = 0;
		break;
	case H_ADD_TWO_FDS:
		own = fds[0] = memfd_of(MiB);
		mr.region = (struct ffe_mem_region){ 0x7000000000ull, MiB, 0x3f0000000000ull, 0 };
		nfds = 2;
		break;
	case H_REM_TWO_FDS:
		req = FFE_REM_MEM_REG;
		nfds = 2;
		break;
	default:
		cr_assert_fail("case %d", c);
	}
	o = xmit(fe, req, flags, sizeof(mr), &mr, sizeof(mr), fds, (unsigned)nfds, NULL);
	if (own >= 0)
		close(own);
	return o;
}

Test(slots, hostile_with_reply_ack_is_refused_and_the_table_kept)
{
	struct ffe *fe = slots_fe(1, 2);
	unsigned r1 = add_region(fe, SLOT_SIZE);

	io_in_region(fe, 1, r1, 0x5600);
	for (enum hcase c = 0; c < H_NCASES; c++) {
		enum outcome o = send_case(fe, r1, c, 0);

		cr_log_info("%s: the back-end %s", hname[c], oname(o));
		cr_assert_eq(o, O_NACK, "%s: the back-end %s (REPLY_ACK asked: a non-zero ack, "
			     "the connection kept)", hname[c], oname(o));
		/* the previous table serves: the old regions, the added one */
		fx_rw_verify(&fe->vq[0], 21000 + c * 32, 8192, 0x5610 + c, NULL);
		io_in_region(fe, 1, r1, 0x5640 + c);
	}
	/* the back-end's table still is {initial, r1}: r1 can go, a
	 * region at the refused addresses can come */
	rem_region(fe, r1, false);
	{
		int k = ffe_region_new(fe, 0x7000000000ull, SLOT_SIZE);

		cr_assert_geq(k, 0);
		cr_assert_eq(ffe_add_mem_reg(fe, (unsigned)k), 0, "ADD after the hostile ones: %s",
			     fe->err);
		io_in_region(fe, 1, (unsigned)k, 0x5680);
	}
	check_golden(&fe->vq[0]);
	cr_expect_eq(ffe_probe(fe), 1, "the connection stopped answering");
	/* refused and told: a clean disconnect afterwards is no error of A */
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	{
		char err[VDEV_ERR_MAX];

		vdev_last_error(fx.dev[DEV_A], err, sizeof(err));
		cr_expect_str_empty(err, "A's last error after refused requests (each acked non-zero) "
				    "and a clean disconnect: '%s'", err);
	}
	healthy();
}

Test(slots, hostile_without_reply_ack_drops_only_that_connection)
{
	static const enum hcase cases[] = { H_GPA_OVERLAP, H_UVA_OVERLAP, H_REM_UNKNOWN,
					    H_PAST_FD, H_ADD_NO_FD, H_ADD_TWO_FDS };
	struct bystander b;

	bystander_start(&b);
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ffe *fe = slots_fe(1, 1);
		unsigned r1 = add_region(fe, SLOT_SIZE);
		enum outcome o;

		fe->use_reply_ack = false;
		o = send_case(fe, r1, cases[i], FFE_FLAG_VERSION);
		cr_log_info("%s without REPLY_ACK: the back-end %s", hname[cases[i]], oname(o));
		cr_expect_eq(o, O_DROPPED, "%s without REPLY_ACK: the back-end %s", hname[cases[i]],
			     oname(o));
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	}
	{
		/* B worked while A was attacked (bounded: this machine stalls) */
		struct ffe_deadline dl;

		ffe_deadline_start(&dl, 3000);
		while (__atomic_load_n(&b.done, __ATOMIC_RELAXED) < 5 && !b.err[0] &&
		       ffe_deadline_left(&dl))
			usleep(1000);
	}
	bystander_stop(&b, "hostile ADD/REM_MEM_REG without REPLY_ACK on A");
	healthy();
}

Test(slots, wrong_payload_sizes_are_refused)
{
	static const struct { uint32_t req, size; } c[] = {
		{ FFE_ADD_MEM_REG, 32 }, { FFE_ADD_MEM_REG, 48 }, { FFE_ADD_MEM_REG, 8 },
		{ FFE_ADD_MEM_REG, 0 }, { FFE_REM_MEM_REG, 32 }, { FFE_REM_MEM_REG, 0 },
		{ FFE_SET_STATUS, 4 }, { FFE_SET_STATUS, 0 },
	};

	for (unsigned i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct ffe *fe = slots_fe(1, 1);
		uint8_t buf[64] = { 0 };
		int fd = memfd_of(MiB);
		struct ffe_mem_reg mr = { 0, { 0x7000000000ull, MiB, 0x3f0000000000ull, 0 } };
		enum outcome o;
		char what[96];

		memcpy(buf, &mr, sizeof(mr));
		o = xmit(fe, c[i].req, 0, c[i].size, buf, c[i].size, &fd,
			 c[i].req == FFE_ADD_MEM_REG ? 1 : 0, NULL);
		close(fd);
		snprintf(what, sizeof(what), "%s with a payload of %u bytes", ffe_req_name(c[i].req),
			 c[i].size);
		cr_log_info("%s: the back-end %s", what, oname(o));
		EXPECT_REFUSED(o, "%s: the back-end %s", what, oname(o));
		if (o == O_NACK)
			fx_rw_verify(&fe->vq[0], 22000 + i * 32, 8192, 0x5700 + i, NULL);
		ffe_close(fe);
		cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000));
	}
	healthy();
}

Test(slots, more_regions_than_max_mem_slots_are_refused, .timeout = 180)
{
	struct ffe *fe = slots_fe(1, 1);
	struct ffe_vq *vq = &fe->vq[0];
	uint64_t max = 0, n;
	const uint64_t sz = 65536, gbase = 0x2000000000ull, ubase = 0x300000000000ull;
	size_t flen;
	uint8_t *map;
	int fd, r, s;
	int64_t t0;

	cr_assert_eq(ffe_get_max_mem_slots(fe, &max), 0, "%s", fe->err);
	cr_assert(max >= 32 && max <= 4096, "GET_MAX_MEM_SLOTS %" PRIu64, max);
	/* one file for all of them, one slice each; the first region is ours */
	flen = (size_t)(max + 1) * sz;
	fd = memfd_of(flen);
	map = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(map != MAP_FAILED);
	t0 = ffe_now_ms();
	for (n = 0; n < max - 1; n++) {
		struct ffe_mem_reg mr = { 0, { gbase + n * sz, sz, ubase + n * sz, n * sz } };

		r = ffe_call(fe, FFE_ADD_MEM_REG, &mr, sizeof(mr), &fd, 1);
		cr_assert_eq(r, 0, "ADD_MEM_REG of region %" PRIu64 " of %" PRIu64 ": %d (%s)",
			     n + 2, max, r, fe->err);
	}
	cr_log_info("%" PRIu64 " regions in %" PRId64 " ms", max, ffe_now_ms() - t0);
	{
		struct ffe_mem_reg mr = { 0, { gbase + n * sz, sz, ubase + n * sz, n * sz } };
		enum outcome o = xmit(fe, FFE_ADD_MEM_REG, 0, sizeof(mr), &mr, sizeof(mr), &fd, 1, NULL);

		cr_assert_eq(o, O_NACK, "region %" PRIu64 " past GET_MAX_MEM_SLOTS %" PRIu64
			     ": the back-end %s", n + 2, max, oname(o));
	}
	/* the full table serves: the last region in, the refused one not */
	ffe_pattern(map + (n - 1) * sz, 8192, 0x5800);
	s = raw_data_io(vq, FFE_BLK_T_OUT, 23000, gbase + (n - 1) * sz, 8192);
	cr_expect_eq(s, FFE_BLK_S_OK, "OUT from the last region of a full table: status %d", s);
	fx_read_check(vq, 23000, 8192, 0x5800, NULL, "written from the last region of a full table");
	s = raw_data_io(vq, FFE_BLK_T_OUT, 23100, gbase + n * sz, 8192);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT from the refused region: status %d", s);
	/* a slot freed takes it */
	{
		struct ffe_mem_reg rm = { 0, { gbase, sz, ubase, 0 } };
		struct ffe_mem_reg mr = { 0, { gbase + n * sz, sz, ubase + n * sz, n * sz } };

		cr_assert_eq(ffe_call(fe, FFE_REM_MEM_REG, &rm, sizeof(rm), NULL, 0), 0, "%s", fe->err);
		cr_assert_eq(ffe_call(fe, FFE_ADD_MEM_REG, &mr, sizeof(mr), &fd, 1), 0, "%s", fe->err);
	}
	ffe_pattern(map + n * sz, 8192, 0x5801);
	s = raw_data_io(vq, FFE_BLK_T_OUT, 23100, gbase + n * sz, 8192);
	cr_expect_eq(s, FFE_BLK_S_OK, "OUT from the region added in the freed slot: status %d", s);
	fx_read_check(vq, 23100, 8192, 0x5801, NULL, "written from the region in the freed slot");
	s = raw_data_io(vq, FFE_BLK_T_OUT, 23200, gbase + 4096, 4096);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT from the removed first slice: status %d", s);
	munmap(map, flen);
	close(fd);
	check_golden(vq);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

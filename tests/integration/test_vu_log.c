/* Integration suite `log`: the dirty log of live migration (issue 13), from
 * the front-end side and written to the vhost-user spec, not to the
 * back-end's code: LOG_SHMFD's SET_LOG_BASE (always answered), SET_LOG_FD,
 * VHOST_F_LOG_ALL toggled by SET_FEATURES and VRING_F_LOG by SET_VRING_ADDR
 * while the rings run, as QEMU does at migration start and end.  The log is
 * walked against the buffers the test gave: every page the device wrote
 * (read data, GET_ID strings, status bytes, used ring) marked by the time the
 * completion is seen, no page it only read marked.  Then the log replaced by
 * a bigger one under I/O (memory hot-add), a log smaller than the memory,
 * and the SET_LOG_BASE messages that must be refused by dropping only that
 * connection.  The fixture: vu_fixture.h; the log helpers: fakefe.h. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vu_fixture.h"

#define QD              32
#define DATA_SECTOR     24576                   /* 12 MiB into A: what the reads read */
#define DATA_LEN        (4 * MiB)
#define DATA_SEED       0x1065ull
#define OUT_SECTOR      36864                   /* 18 MiB: the batches' writes */
#define LOOP_SECTOR     49152                   /* 24 MiB: the I/O threads */
#define MAX_SEGS        (FFE_MAX_DESCS + 1)

/* ---- front-ends ------------------------------------------------------------- */

static void need_log(struct ffe *fe)
{
	cr_assert(fe->dev_features & FFE_BIT(FFE_F_LOG_ALL),
		  "VHOST_F_LOG_ALL (bit 26) not offered: features 0x%" PRIx64, fe->dev_features);
	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_LOG_SHMFD),
		  "LOG_SHMFD (protocol bit 1) not offered: protocol features 0x%" PRIx64,
		  fe->dev_protocol_features);
}

static void log_opts(struct ffe_opts *o, unsigned nregions, uint64_t extra_pf)
{
	ffe_opts_init(o);
	/* gpa, uva and file offsets all differ: a log indexed by anything but
	 * the guest-physical page shows */
	o->mem_size = 256 * MiB;
	o->nregions = nregions;
	o->translate = true;
	o->scratch_per_queue = 16 * MiB;
	o->extra_protocol_features = FFE_BIT(FFE_PF_LOG_SHMFD) | extra_pf;
}

/* Device A with LOG_SHMFD negotiated and nq queues running. */
static struct ffe *log_fe(unsigned nregions, bool event_idx, unsigned nq, unsigned qsize,
			  uint64_t extra_pf)
{
	struct ffe_opts o;
	struct ffe *fe;

	log_opts(&o, nregions, extra_pf);
	fe = fx_ready(DEV_A, &o, ffe_default_features(event_idx), nq, qsize);
	need_log(fe);
	return fe;
}

static void set_base(struct ffe *fe, struct ffe_log *l)
{
	int r = ffe_set_log_base(fe, l);

	cr_assert_eq(r, 0, "SET_LOG_BASE of a good log: %d (%s)", r, fe->err);
}

static void log_on(struct ffe *fe, unsigned nq)
{
	int r = ffe_log_start(fe, nq);

	cr_assert_eq(r, 0, "logging on (SET_FEATURES LOG_ALL, SET_VRING_ADDR F_LOG) with the "
		     "rings running: %d (%s)", r, fe->err);
}

/* Mappings of log gen in /proc/self/maps (gen 0: of any fakefe log). */
static unsigned log_maps(unsigned gen)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512], want[48];
	unsigned n = 0;

	cr_assert_not_null(f);
	if (gen)
		snprintf(want, sizeof(want), "fakefe-log-%u ", gen);
	else
		snprintf(want, sizeof(want), "fakefe-log-");
	while (fgets(line, sizeof(line), f))
		if (strstr(line, want))
			n++;
	fclose(f);
	return n;
}

/* Wait (bounded) until log gen is mapped `want` times in this process. */
static bool wait_maps(unsigned gen, unsigned want, int ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, ms);
	while (log_maps(gen) != want)
		if (!ffe_deadline_left(&dl))
			return false;
		else
			usleep(10000);
	return true;
}

static void expect_guard_clean(const struct ffe_log *l, const char *what)
{
	int64_t b = ffe_log_guard_dirty(l);

	cr_expect_eq(b, -1, "%s: byte %" PRId64 " of the log's file was written, outside the "
		     "bitmap [%" PRIu64 ", %" PRIu64 ")", what, b, l->offset, l->offset + l->size);
}

/* The first marked page, for messages. */
static uint64_t first_mark(const struct ffe_log *l)
{
	return ffe_log_next(l, 0);
}

/* ---- the data the reads read ------------------------------------------------- */

static uint8_t *data_image;

/* DATA_LEN bytes of one pattern at DATA_SECTOR, written through vq. */
static void write_data(struct ffe_vq *vq)
{
	data_image = malloc(DATA_LEN);
	ffe_pattern(data_image, DATA_LEN, DATA_SEED);
	for (size_t off = 0; off < DATA_LEN; off += 256 * 1024)
		fx_write_ok(vq, DATA_SECTOR + off / 512, data_image + off, 256 * 1024, NULL);
}

/* ---- page sets ----------------------------------------------------------------- */

struct pset {
	uint8_t *b;
	uint64_t n;             /* pages 0..n-1 */
};

static void pset_init(struct pset *s, uint64_t npages)
{
	s->n = npages;
	s->b = calloc((npages + 7) / 8, 1);
}

static void pset_add(struct pset *s, uint64_t gpa, uint64_t len)
{
	if (!len)
		return;
	for (uint64_t k = ffe_page_first(gpa); k <= ffe_page_last(gpa, len) && k < s->n; k++)
		s->b[k / 8] |= (uint8_t)(1u << (k % 8));
}

static bool pset_has(const struct pset *s, uint64_t k)
{
	return k < s->n && (s->b[k / 8] >> (k % 8)) & 1;
}

/* ---- batches: QD32 on every queue, walked against the log -------------------- */

struct lreq {
	struct ffe_blk_io io;
	unsigned q, i;
	uint32_t type;
	uint64_t sector;
	size_t len;
	char what[128];
	int nseg;
	struct ffe_seg seg[MAX_SEGS];
};

static const struct ffe_layout lays[] = {
	{ FFE_L_NATURAL, 0, false },
	{ FFE_L_NATURAL, 512, true },           /* many data descriptors */
	{ FFE_L_NATURAL, 1536, true },          /* descriptors not on sector bounds */
	{ FFE_L_MERGED, 0, false },             /* header+data, data+status together */
	{ FFE_L_CHOPPED, 1000, true },          /* every descriptor 1000 bytes */
	{ FFE_L_CHOPPED, 4097, true },          /* just over a page each */
	{ FFE_L_NATURAL, 0, true },
	{ FFE_L_NATURAL, 4096, false },
};
static const size_t in_lens[] = { 512, 1024, 3584, 4096, 4608, 8192, 12800, 65536 };
static const size_t out_lens[] = { 4096, 8192, 16384 };
static const struct { uint32_t align, skew; } places[] = {
	{ 0, 0 }, { 4096, 0 },
	{ 4096, 4088 },         /* a 16-byte header half on each of two pages */
	{ 4096, 3000 },         /* data straddling a page */
	{ 512, 100 },
	{ 4096, 4095 },         /* one byte before a page boundary */
};

/* Prepare request n (a mix of types, sizes, layouts and placements) as
 * request i of queue q. */
static void mix(struct ffe *fe, struct lreq *r, unsigned q, unsigned i, unsigned n)
{
	const struct ffe_layout *lay = &lays[(n / 3 + q) % (sizeof(lays) / sizeof(lays[0]))];
	unsigned pl = (n * 5 + q) % (sizeof(places) / sizeof(places[0]));
	uint32_t seg_max = fe->cfg.seg_max ? fe->cfg.seg_max : 1;
	const void *out = NULL;
	size_t out_len = 0, in_len;
	uint8_t *w = NULL;
	int ret;

	memset(r, 0, sizeof(*r));
	r->q = q;
	r->i = i;
	switch (n % 8) {
	case 3:
		/* a write: its data is only read by the device, on pages of its own */
		r->type = FFE_BLK_T_OUT;
		r->len = out_lens[n % 3];
		r->sector = OUT_SECTOR + (q * QD + i) * 32;
		w = malloc(r->len);
		ffe_pattern(w, r->len, 0x7000 + n);
		out = w;
		out_len = r->len;
		in_len = 0;
		lay = &lays[0];
		pl = 1;
		break;
	case 6:
		r->type = FFE_BLK_T_GET_ID;
		r->len = FFE_BLK_ID_BYTES;
		in_len = FFE_BLK_ID_BYTES;
		lay = &lays[(n / 8) % 2 ? 0 : 3];
		break;
	default:
		r->type = FFE_BLK_T_IN;
		r->len = in_lens[(n * 3 + q) % (sizeof(in_lens) / sizeof(in_lens[0]))];
		r->sector = DATA_SECTOR + (n * 131 + q * 17) % (DATA_LEN / 512 - 128);
		in_len = r->len;
		break;
	}
	ret = ffe_blk_prep(&r->io, r->type, r->sector, out, out_len, in_len, lay);
	cr_assert_eq(ret, 0);
	if (r->io.req.n_rd_cuts + r->io.req.n_wr_cuts > seg_max) {
		/* more descriptors than the device takes: the natural layout */
		ffe_blk_io_release(NULL, &r->io);
		lay = &lays[0];
		cr_assert_eq(ffe_blk_prep(&r->io, r->type, r->sector, out, out_len, in_len, lay), 0);
	}
	if (r->io.req.n_rd_cuts + r->io.req.n_wr_cuts > 6 && places[pl].align >= 4096)
		pl = 0;         /* a page per descriptor would exhaust the scratch memory */
	r->io.req.buf_align = places[pl].align;
	r->io.req.buf_skew = places[pl].skew;
	snprintf(r->what, sizeof(r->what), "q%u #%u %s %zu bytes, %s, buffers aligned %u + %u",
		 q, i, r->type == FFE_BLK_T_IN ? "IN" : r->type == FFE_BLK_T_OUT ? "OUT" : "GET_ID",
		 r->len, fx_layout_name(lay), places[pl].align, places[pl].skew);
	free(w);
}

static void check_done(struct lreq *r)
{
	char want[FFE_BLK_ID_BYTES] = { 0 };
	int s = ffe_blk_status(&r->io);

	cr_expect_eq(s, FFE_BLK_S_OK, "%s: status %d", r->what, s);
	if (s != FFE_BLK_S_OK)
		return;
	if (r->type == FFE_BLK_T_IN)
		cr_expect(memcmp(ffe_blk_in(&r->io), data_image + (r->sector - DATA_SECTOR) * 512,
				 r->len) == 0, "%s: wrong data read", r->what);
	if (r->type == FFE_BLK_T_GET_ID) {
		memcpy(want, A_SERIAL, strlen(A_SERIAL));
		cr_expect(memcmp(ffe_blk_in(&r->io), want, sizeof(want)) == 0,
			  "%s: GET_ID returned \"%.20s\"", r->what, (char *)ffe_blk_in(&r->io));
	}
}

static const char *kind_name(uint8_t k)
{
	return k == FFE_SEG_WR ? "device-writable" : k == FFE_SEG_RD ? "device-readable" :
	       "indirect table";
}

/* The pages the device must have marked for r: its writable buffers, its
 * used element and used->idx.  false (and a failed expectation) if one
 * is not marked. */
static bool expect_marked(struct ffe *fe, const struct ffe_log *l, struct lreq *r,
			  const char *when)
{
	struct ffe_vq *vq = &fe->vq[r->q];
	uint64_t elem = vq->used_gpa + 4 + 8ull * (r->io.req.used_idx % vq->num);

	for (int k = 0; k < r->nseg; k++) {
		const struct ffe_seg *s = &r->seg[k];

		if (s->kind != FFE_SEG_WR || ffe_log_all_set(l, s->gpa, s->len))
			continue;
		cr_expect_fail("%s: %s: page(s) of its %s buffer %d at gpa 0x%" PRIx64 " (%u "
			       "bytes, pages 0x%" PRIx64 "..0x%" PRIx64 ") not marked", when, r->what,
			       kind_name(s->kind), k, s->gpa, s->len, ffe_page_first(s->gpa),
			       ffe_page_last(s->gpa, s->len));
		return false;
	}
	if (!ffe_log_all_set(l, elem, 8) || !ffe_log_all_set(l, vq->used_gpa + 2, 2)) {
		cr_expect_fail("%s: %s: its used element (gpa 0x%" PRIx64 ", slot %u) or used->idx "
			       "(gpa 0x%" PRIx64 ") not marked", when, r->what, elem,
			       r->io.req.used_idx % vq->num, vq->used_gpa + 2);
		return false;
	}
	return true;
}

/* The avail_event the device last wrote (EVENT_IDX), and its gpa. */
static uint16_t avail_event(struct ffe_vq *vq, uint64_t *gpa)
{
	uint16_t *p = (uint16_t *)(vq->used + 4 + 8 * vq->num);

	*gpa = vq->used_gpa + 4 + 8ull * vq->num;
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

struct batch_opts {
	unsigned nq;            /* queues 0..nq-1 */
	unsigned first_n;       /* request mix counter */
	bool exclusive;         /* no other I/O meanwhile: every mark must be explained */
};

/* QD32 on each queue at once; then the log against the buffers: every
 * page the device wrote marked (each checked as soon as its completion is
 * seen, then all again), no page it only read marked (unless it also
 * wrote there), and (exclusive) no mark elsewhere but in the used rings. */
static void batch(struct ffe *fe, struct ffe_log *l, const struct batch_opts *bo)
{
	struct lreq *rq = calloc((size_t)bo->nq * QD, sizeof(*rq));
	struct pset wr, rd, ring;
	uint16_t av0[FFE_MAX_QUEUES];
	bool event_idx = fe->features & FFE_BIT(FFE_F_RING_EVENT_IDX);
	unsigned missing = 0, wrongly = 0, stray = 0;
	uint64_t page;

	cr_assert_not_null(rq);
	pset_init(&wr, l->size * 8);
	pset_init(&rd, l->size * 8);
	pset_init(&ring, l->size * 8);
	for (unsigned q = 0; q < bo->nq; q++) {
		uint64_t g, n;

		av0[q] = avail_event(&fe->vq[q], &g);
		ffe_vq_used_area(&fe->vq[q], &g, &n);
		pset_add(&ring, g, n);
		/* what the device reads of the ring */
		pset_add(&rd, fe->vq[q].desc_gpa, 16ull * fe->vq[q].num);
		pset_add(&rd, fe->vq[q].avail_gpa, 6 + 2ull * fe->vq[q].num);
	}
	if (bo->exclusive)
		ffe_log_clear(l);

	for (unsigned q = 0; q < bo->nq; q++) {
		for (unsigned i = 0; i < QD; i++) {
			struct lreq *r = &rq[q * QD + i];
			int ret;

			mix(fe, r, q, i, bo->first_n + q * QD + i);
			ret = ffe_submit(&fe->vq[q], &r->io.req);
			cr_assert_eq(ret, 0, "%s: submit: %s", r->what, strerror(-ret));
			r->nseg = ffe_req_segs(&fe->vq[q], &r->io.req, r->seg, MAX_SEGS);
			cr_assert_gt(r->nseg, 0, "%s: its descriptors", r->what);
		}
		cr_assert_eq(ffe_kick(&fe->vq[q]), 0);
	}
	/* (a test that used->idx is not visible before the marks is not
	 * practical; the marks must be there by the time a completion is seen) */
	for (unsigned q = 0; q < bo->nq; q++) {
		for (unsigned i = 0; i < QD; i++) {
			struct lreq *r = &rq[q * QD + i];
			int ret = ffe_wait(&fe->vq[q], &r->io.req, -1);

			cr_assert_eq(ret, 0, "%s: lost (%s)", r->what, fe->err);
			if (!expect_marked(fe, l, r, "at completion"))
				missing++;
			check_done(r);
		}
	}
	for (unsigned k = 0; k < bo->nq * QD; k++) {
		struct lreq *r = &rq[k];

		for (int s = 0; s < r->nseg; s++)
			pset_add(r->seg[s].kind == FFE_SEG_WR ? &wr : &rd, r->seg[s].gpa, r->seg[s].len);
	}
	/* pages the device only read */
	for (uint64_t k = 0; k < rd.n && wrongly < 5; k++) {
		if (!pset_has(&rd, k) || pset_has(&wr, k) || pset_has(&ring, k) || !ffe_log_page(l, k))
			continue;
		wrongly++;
		for (unsigned j = 0; j < bo->nq * QD; j++) {
			const struct lreq *r = &rq[j];

			for (int s = 0; s < r->nseg; s++)
				if (r->seg[s].kind != FFE_SEG_WR && ffe_page_first(r->seg[s].gpa) <= k &&
				    k <= ffe_page_last(r->seg[s].gpa, r->seg[s].len)) {
					cr_expect_fail("page 0x%" PRIx64 " is marked, yet the device only "
						       "read it (%s buffer %d of %s; no writable buffer "
						       "there)", k, kind_name(r->seg[s].kind), s, r->what);
					j = bo->nq * QD;
					break;
				}
		}
	}
	if (bo->exclusive) {
		for (page = ffe_log_next(l, 0); page != UINT64_MAX && stray < 5;
		     page = ffe_log_next(l, page + 1)) {
			if (pset_has(&wr, page) || pset_has(&ring, page))
				continue;
			stray++;
			cr_expect_fail("page 0x%" PRIx64 " (gpa 0x%" PRIx64 ") is marked: no buffer "
				       "the device wrote lies there, and no used ring", page,
				       page * FFE_LOG_PAGE);
		}
	}
	/* EVENT_IDX: a changed avail_event is a device write too (it may come
	 * late, when the device goes idle: give it a moment) */
	if (event_idx) {
		usleep(20000);
		for (unsigned q = 0; q < bo->nq; q++) {
			uint64_t g;
			uint16_t v = avail_event(&fe->vq[q], &g);

			if (v == av0[q])
				continue;
			if (!ffe_log_all_set(l, g, 2))
				usleep(50000);
			cr_expect(ffe_log_all_set(l, g, 2), "q%u: avail_event went from %u to %u, its "
				  "page 0x%" PRIx64 " (gpa 0x%" PRIx64 ") is not marked", q, av0[q], v,
				  ffe_page_first(g), g);
		}
	}
	expect_guard_clean(l, "after a batch");
	cr_log_info("batch from #%u on %u queues: %" PRIu64 " pages marked, %u missing at "
		    "completion, %u read-only marked, %u stray", bo->first_n, bo->nq,
		    ffe_log_count(l), missing, wrongly, stray);
	for (unsigned k = 0; k < bo->nq * QD; k++)
		ffe_blk_io_release(&fe->vq[rq[k].q], &rq[k].io);
	free(rq);
	free(wr.b);
	free(rd.b);
	free(ring.b);
}

static void reads_walked(bool event_idx, unsigned qsize)
{
	struct ffe *fe = log_fe(4, event_idx, A_QUEUES, qsize, 0);
	struct batch_opts bo = { .nq = A_QUEUES, .exclusive = true };

	write_data(&fe->vq[0]);
	set_base(fe, NULL);
	log_on(fe, A_QUEUES);
	cr_log_info("log of %" PRIu64 " bytes for 4 regions up to gpa 0x%" PRIx64, fe->log->size,
		    fe->r[3].gpa + fe->r[3].size);
	for (unsigned b = 0; b < 6; b++) {
		bo.first_n = b * A_QUEUES * QD;
		batch(fe, fe->log, &bo);
	}
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(log, reads_mark_what_the_device_wrote)
{
	/* 1024 entries: the used ring spans three pages */
	reads_walked(false, 1024);
}

Test(log, reads_mark_what_the_device_wrote_event_idx)
{
	/* 512 entries: element 511 straddles two pages, avail_event on the second */
	reads_walked(true, 512);
}

/* The marks of one request at a time, looked at the instant its used->idx
 * moves (the front-end spinning on it), the log cleared before each: the
 * device marks before it publishes, so nothing may be missing even then.
 * With an inflight region, as QEMU sets one up on every start. */
Test(log, marked_when_the_index_moves)
{
	struct ffe_opts o;
	struct ffe *fe;
	struct ffe_vq *vq;
	struct lreq *r = malloc(sizeof(*r));
	unsigned n = 0, miss_ring = 0, miss_data = 0;
	int64_t t0 = ffe_now_ms();
	char first[256] = "";

	log_opts(&o, 1, 0);
	o.inflight = true;
	fe = fx_ready(DEV_A, &o, 0, 1, 128);
	need_log(fe);
	vq = &fe->vq[0];
	write_data(vq);
	set_base(fe, NULL);
	log_on(fe, 1);
	/* the window is short: many tries (about 0.1 ms each), at most 5 s */
	for (; n < 20000 && ffe_now_ms() - t0 < 5000; n++) {
		uint16_t u = ffe_vq_used_idx(vq);
		uint64_t elem = vq->used_gpa + 4 + 8ull * (u % vq->num);
		bool data_ok = true;

		memset(r, 0, offsetof(struct lreq, seg));
		r->type = FFE_BLK_T_IN;
		r->sector = DATA_SECTOR + (n % 64) * 8;
		r->len = 4096;
		cr_assert_eq(ffe_blk_prep(&r->io, FFE_BLK_T_IN, r->sector, NULL, 0, 4096, NULL), 0);
		ffe_log_clear(fe->log);
		cr_assert_eq(ffe_submit(vq, &r->io.req), 0);
		r->nseg = ffe_req_segs(vq, &r->io.req, r->seg, MAX_SEGS);
		ffe_vq_kick_raw(vq);
		while (ffe_vq_used_idx(vq) == u)
			if (ffe_now_ms() - t0 > 20000)
				cr_assert_fail("request %u never completed", n);
		/* at once: the index is what makes the completion visible */
		for (int k = 0; k < r->nseg; k++)
			if (r->seg[k].kind == FFE_SEG_WR && !ffe_log_all_set(fe->log, r->seg[k].gpa,
									   r->seg[k].len))
				data_ok = false;
		if (!ffe_log_all_set(fe->log, elem, 8) || !ffe_log_all_set(fe->log, vq->used_gpa + 2, 2)) {
			if (!miss_ring++)
				snprintf(first, sizeof(first), "request %u: used->idx moved to %u while "
					 "the page of its used element (gpa 0x%" PRIx64 ") or of used->idx "
					 "was not marked yet", n, (uint16_t)(u + 1), elem);
		}
		if (!data_ok)
			miss_data++;
		cr_assert_eq(ffe_wait(vq, &r->io.req, -1), 0);
		cr_assert_eq(ffe_blk_status(&r->io), FFE_BLK_S_OK);
		ffe_blk_io_release(vq, &r->io);
	}
	cr_log_info("%u requests: used ring unmarked at the index move %u times, buffers %u times",
		    n, miss_ring, miss_data);
	cr_expect_eq(miss_data, 0u, "%u of %u requests: a writable buffer not marked when "
		     "used->idx moved", miss_data, n);
	cr_expect_eq(miss_ring, 0u, "%u of %u requests: the used ring not marked when used->idx "
		     "moved; first: %s", miss_ring, n, first);
	free(r);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- logging switched under continuous I/O ------------------------------------- */

/* What the I/O threads may rely on: while `on`, every completion they see
 * has its pages marked in `log`; gen moves at each change. */
struct logstate {
	struct ffe_log *log;
	unsigned gen;
	bool on;
};

static void state_set(struct logstate *st, struct ffe_log *l, bool on)
{
	__atomic_store_n(&st->log, l, __ATOMIC_RELEASE);
	__atomic_store_n(&st->on, on, __ATOMIC_RELEASE);
	__atomic_add_fetch(&st->gen, 1, __ATOMIC_ACQ_REL);
}

struct lworker {
	struct ffe *fe;
	struct ffe_vq *vq;
	struct logstate *st;
	pthread_t th;
	atomic_bool stop;
	unsigned cycles;        /* atomic */
	unsigned checked;       /* completions whose marks were checked */
	char err[512];
};

/* One request through w's queue, its marks checked at completion if the
 * log was on all along.  0, or -1 with w->err set. */
static int lw_one(struct lworker *w, struct lreq *r, uint32_t type, uint64_t sector,
		  const uint8_t *out, size_t len)
{
	struct ffe_log *l;
	unsigned g0, g1;
	bool on0, on1;
	int ret;

	memset(r, 0, offsetof(struct lreq, seg));
	r->q = w->vq->index;
	r->type = type;
	r->sector = sector;
	r->len = len;
	snprintf(r->what, sizeof(r->what), "q%u %s sector %" PRIu64 " (cycle %u)", r->q,
		 type == FFE_BLK_T_IN ? "IN" : "OUT", sector, w->cycles);
	if (ffe_blk_prep(&r->io, type, sector, out, out ? len : 0, out ? 0 : len, NULL) < 0)
		return snprintf(w->err, sizeof(w->err), "%s: prep", r->what), -1;
	g0 = __atomic_load_n(&w->st->gen, __ATOMIC_ACQUIRE);
	on0 = __atomic_load_n(&w->st->on, __ATOMIC_ACQUIRE);
	l = __atomic_load_n(&w->st->log, __ATOMIC_ACQUIRE);
	ret = ffe_submit(w->vq, &r->io.req);
	if (ret == 0) {
		r->nseg = ffe_req_segs(w->vq, &r->io.req, r->seg, MAX_SEGS);
		ret = ffe_kick(w->vq);
	}
	if (ret == 0)
		ret = ffe_wait(w->vq, &r->io.req, -1);
	if (ret < 0) {
		snprintf(w->err, sizeof(w->err), "%s: %s (%.200s)", r->what, strerror(-ret),
			 w->fe->err);
		ffe_blk_io_release(w->vq, &r->io);
		return -1;
	}
	on1 = __atomic_load_n(&w->st->on, __ATOMIC_ACQUIRE);
	g1 = __atomic_load_n(&w->st->gen, __ATOMIC_ACQUIRE);
	if (ffe_blk_status(&r->io) != FFE_BLK_S_OK)
		snprintf(w->err, sizeof(w->err), "%s: status %d", r->what, ffe_blk_status(&r->io));
	else if (on0 && on1 && g0 == g1 && l) {
		uint64_t elem = w->vq->used_gpa + 4 + 8ull * (r->io.req.used_idx % w->vq->num);

		for (int k = 0; k < r->nseg && !w->err[0]; k++)
			if (r->seg[k].kind == FFE_SEG_WR && !ffe_log_all_set(l, r->seg[k].gpa, r->seg[k].len))
				snprintf(w->err, sizeof(w->err), "%s: completed while logging was on, "
					 "its writable buffer at gpa 0x%" PRIx64 " (%u bytes) not "
					 "marked in log %u", r->what, r->seg[k].gpa, r->seg[k].len,
					 l->gen);
		if (!w->err[0] && (!ffe_log_all_set(l, elem, 8) ||
				   !ffe_log_all_set(l, w->vq->used_gpa + 2, 2)))
			snprintf(w->err, sizeof(w->err), "%s: completed while logging was on, its "
				 "used element (gpa 0x%" PRIx64 ") or used->idx not marked in log %u",
				 r->what, elem, l->gen);
		w->checked++;
	}
	return w->err[0] ? -1 : 0;
}

static void *lw_main(void *arg)
{
	struct lworker *w = arg;
	struct lreq *r = malloc(sizeof(*r));
	uint8_t *buf = malloc(16384);

	while (!atomic_load(&w->stop) && !w->err[0]) {
		unsigned c = w->cycles;
		size_t len = 4096 * (1 + c % 4);
		uint64_t sector = LOOP_SECTOR + w->vq->index * 1024 + (c % 16) * 32;
		uint64_t seed = 0x10900 + w->vq->index * 100000 + c;

		ffe_pattern(buf, len, seed);
		if (lw_one(w, r, FFE_BLK_T_OUT, sector, buf, len) < 0)
			break;
		ffe_blk_io_release(w->vq, &r->io);
		if (lw_one(w, r, FFE_BLK_T_IN, sector, NULL, len) < 0)
			break;
		if (!ffe_pattern_ok(ffe_blk_in(&r->io), len, seed))
			snprintf(w->err, sizeof(w->err), "q%u: read-back of sector %" PRIu64
				 " differs (cycle %u)", w->vq->index, sector, c);
		ffe_blk_io_release(w->vq, &r->io);
		__atomic_store_n(&w->cycles, c + 1, __ATOMIC_RELEASE);
	}
	free(buf);
	free(r);
	return NULL;
}

static void lw_start(struct lworker *w, struct ffe *fe, unsigned q, struct logstate *st)
{
	memset(w, 0, sizeof(*w));
	w->fe = fe;
	w->vq = &fe->vq[q];
	w->st = st;
	cr_assert_eq(pthread_create(&w->th, NULL, lw_main, w), 0);
}

/* Wait until every worker did n more cycles (or one failed). */
static void lw_wait(struct lworker *w, unsigned nw, unsigned n, const char *phase)
{
	unsigned start[FFE_MAX_QUEUES];
	struct ffe_deadline dl;

	for (unsigned i = 0; i < nw; i++)
		start[i] = __atomic_load_n(&w[i].cycles, __ATOMIC_ACQUIRE);
	ffe_deadline_start(&dl, 20000);
	for (unsigned i = 0; i < nw; i++) {
		while (__atomic_load_n(&w[i].cycles, __ATOMIC_ACQUIRE) - start[i] < n && !w[i].err[0]) {
			if (!ffe_deadline_left(&dl)) {
				cr_expect_fail("%s: q%u did %u write+read cycles in 20 s, not %u", phase,
					       w[i].vq->index, w[i].cycles - start[i], n);
				return;
			}
			usleep(2000);
		}
	}
}

static void lw_stop(struct lworker *w, unsigned nw)
{
	for (unsigned i = 0; i < nw; i++)
		atomic_store(&w[i].stop, true);
	for (unsigned i = 0; i < nw; i++) {
		pthread_join(w[i].th, NULL);
		cr_expect(!w[i].err[0], "%s", w[i].err);
		cr_expect_eq(w[i].vq->bogus_used, 0u, "q%u: %u used elements matching no request",
			     w[i].vq->index, w[i].vq->bogus_used);
		cr_log_info("q%u: %u write+read cycles, %u completions checked against the log",
			    w[i].vq->index, w[i].cycles, w[i].checked);
	}
}

/* Logging off with a log base set, on, off, on again, with every queue
 * doing verified I/O all along.  qemu_order: LOG_ALL and VRING_F_LOG
 * switched together as QEMU does; else VRING_F_LOG set from the start and
 * LOG_ALL alone switched. */
static void toggled(bool qemu_order)
{
	struct ffe *fe = log_fe(2, false, A_QUEUES, 128, 0);
	struct lworker w[A_QUEUES];
	struct logstate st = { 0 };
	uint64_t n;

	if (!qemu_order)
		for (unsigned q = 0; q < A_QUEUES; q++)
			cr_assert_eq(ffe_vq_set_log(fe, q, true), 0, "q%u SET_VRING_ADDR with "
				     "VRING_F_LOG: %s", q, fe->err);
	set_base(fe, NULL);
	for (unsigned q = 0; q < A_QUEUES; q++)
		lw_start(&w[q], fe, q, &st);

	lw_wait(w, A_QUEUES, 10, "before LOG_ALL");
	n = ffe_log_count(fe->log);
	cr_expect_eq(n, 0u, "a log base set, LOG_ALL not negotiated%s: %" PRIu64 " pages marked "
		     "(first 0x%" PRIx64 ")", qemu_order ? "" : " (VRING_F_LOG set)", n,
		     first_mark(fe->log));

	for (int round = 0; round < 2; round++) {
		if (qemu_order)
			log_on(fe, A_QUEUES);
		else
			cr_assert_eq(ffe_set_log_all(fe, true), 0, "SET_FEATURES with LOG_ALL: %s",
				     fe->err);
		state_set(&st, fe->log, true);
		lw_wait(w, A_QUEUES, 20, "logging on");
		cr_expect_gt(ffe_log_count(fe->log), 0u, "LOG_ALL set, I/O done: nothing marked");

		state_set(&st, fe->log, false);
		if (qemu_order)
			cr_assert_eq(ffe_log_stop(fe, A_QUEUES), 0, "logging off: %s", fe->err);
		else
			cr_assert_eq(ffe_set_log_all(fe, false), 0, "SET_FEATURES without LOG_ALL: %s",
				     fe->err);
		/* what was in flight at the switch may still be logged */
		lw_wait(w, A_QUEUES, 2, "logging switched off");
		ffe_log_clear(fe->log);
		lw_wait(w, A_QUEUES, 10, "logging off");
		n = ffe_log_count(fe->log);
		cr_expect_eq(n, 0u, "LOG_ALL cleared%s (round %d): %" PRIu64 " pages marked since "
			     "(first 0x%" PRIx64 ")", qemu_order ? " and VRING_F_LOG" : "", round, n,
			     first_mark(fe->log));
	}
	lw_stop(w, A_QUEUES);
	for (unsigned q = 0; q < A_QUEUES; q++)
		cr_expect_gt(w[q].checked, 0u, "q%u: no completion was checked while logging was on", q);
	expect_guard_clean(fe->log, "after switching");
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(log, log_all_switched_under_io_qemu_order)
{
	toggled(true);
}

Test(log, log_all_alone_switches_logging)
{
	toggled(false);
}

Test(log, log_all_before_any_log_base)
{
	/* LOG_ALL in the first SET_FEATURES and VRING_F_LOG on every ring from
	 * their start, no log yet: I/O runs unlogged; the log base given
	 * later, with the rings running, is used from its reply on */
	struct ffe_opts o;
	struct ffe *fe;
	int r;

	log_opts(&o, 2, 0);
	fe = fx_open(DEV_A, &o);
	for (unsigned q = 0; q < A_QUEUES; q++)
		fe->vq[q].log_ring = true;
	r = ffe_setup(fe, ffe_default_features(false) | FFE_BIT(FFE_F_LOG_ALL), A_QUEUES, 128);
	cr_assert_eq(r, 0, "set-up with LOG_ALL and VRING_F_LOG from the start: %d (%s)", r, fe->err);
	need_log(fe);
	cr_assert(fe->features & FFE_BIT(FFE_F_LOG_ALL));
	for (unsigned q = 0; q < A_QUEUES; q++)
		fx_rw_verify(&fe->vq[q], 9000 + q * 64, 16384, 0x1130 + q, NULL);
	set_base(fe, NULL);
	for (unsigned q = 0; q < A_QUEUES; q++) {
		struct lreq *rq = malloc(sizeof(*rq));

		ffe_log_clear(fe->log);
		memset(rq, 0, offsetof(struct lreq, seg));
		rq->q = q;
		snprintf(rq->what, sizeof(rq->what), "q%u IN 16 KiB after the log base", q);
		cr_assert_eq(ffe_blk_prep(&rq->io, FFE_BLK_T_IN, 9000 + q * 64, NULL, 0, 16384, NULL), 0);
		cr_assert_eq(ffe_submit(&fe->vq[q], &rq->io.req), 0);
		rq->nseg = ffe_req_segs(&fe->vq[q], &rq->io.req, rq->seg, MAX_SEGS);
		cr_assert_eq(ffe_kick(&fe->vq[q]), 0);
		cr_assert_eq(ffe_wait(&fe->vq[q], &rq->io.req, -1), 0, "%s", fe->err);
		cr_expect_eq(ffe_blk_status(&rq->io), FFE_BLK_S_OK);
		expect_marked(fe, fe->log, rq, "LOG_ALL negotiated first, log base later");
		ffe_blk_io_release(&fe->vq[q], &rq->io);
		free(rq);
	}
	expect_guard_clean(fe->log, "after the reads");
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- a new log while the rings run (memory hot-add) ----------------------------- */

Test(log, replaced_by_a_bigger_log_under_io)
{
	struct ffe *fe = log_fe(2, false, A_QUEUES, 128, FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS));
	struct lworker w[A_QUEUES - 1];
	struct logstate st = { 0 };
	struct ffe_log *l1, *l2;
	struct batch_opts bo = { .nq = 1, .first_n = 0 };
	uint64_t n;
	int k, r;

	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS));
	write_data(&fe->vq[0]);
	set_base(fe, NULL);
	l1 = fe->log;
	log_on(fe, A_QUEUES);
	state_set(&st, l1, true);
	for (unsigned q = 1; q < A_QUEUES; q++)
		lw_start(&w[q - 1], fe, q, &st);
	lw_wait(w, A_QUEUES - 1, 5, "the first log");

	/* a pc-dimm plugged: a region beyond what the first log covers */
	k = ffe_region_new(fe, 0, 16 * MiB);
	cr_assert_geq(k, 0);
	r = ffe_add_mem_reg(fe, (unsigned)k);
	cr_assert_eq(r, 0, "ADD_MEM_REG while logging: %d (%s)", r, fe->err);
	cr_assert_geq(ffe_page_first(fe->r[k].gpa), l1->size * 8);

	/* QEMU: a bigger log, SET_LOG_BASE, wait for the reply, drop the old
	 * log; this one's bitmap starts a page into its file */
	l2 = ffe_log_new(ffe_log_size_for(fe), 4096, 0);
	cr_assert_not_null(l2);
	state_set(&st, l1, false);
	r = ffe_set_log_base(fe, l2);
	cr_assert_eq(r, 0, "SET_LOG_BASE of a bigger log while the rings run: %d (%s)", r, fe->err);
	cr_assert_eq(fe->log_old, l1);
	state_set(&st, l2, true);
	ffe_log_clear(l1);
	lw_wait(w, A_QUEUES - 1, 10, "the new log");
	n = ffe_log_count(l1);
	cr_expect_eq(n, 0u, "the old log got %" PRIu64 " marks after the reply to the SET_LOG_BASE "
		     "that replaced it (first page 0x%" PRIx64 ")", n, first_mark(l1));
	cr_expect_gt(ffe_log_count(l2), 0u, "nothing marked in the new log");
	/* the back-end lets go of the old log (ours is the only mapping left) */
	cr_expect(wait_maps(l1->gen, 1, 2000), "the replaced log is still mapped %u times 2 s "
		  "after the reply (1 is ours)", log_maps(l1->gen) - 1);

	/* buffers in the new region, marked in the new log only */
	cr_assert_eq(ffe_vq_scratch_region(&fe->vq[0], k, 8 * MiB), 0);
	ffe_log_clear(l1);
	batch(fe, l2, &bo);
	ffe_vq_scratch_region(&fe->vq[0], -1, 0);
	n = ffe_log_count(l1);
	cr_expect_eq(n, 0u, "the old log got %" PRIu64 " marks (first page 0x%" PRIx64 ")", n,
		     first_mark(l1));

	lw_stop(w, A_QUEUES - 1);
	expect_guard_clean(l1, "the old log");
	expect_guard_clean(l2, "the new log (bitmap at offset 4096)");
	check_golden(&fe->vq[1]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	cr_expect(wait_maps(0, 0, 2000), "a log is still mapped %u times after the front-end "
		  "went away", log_maps(0));
}

/* ---- a log smaller than the memory --------------------------------------------- */

/* An IN of len bytes at sector into guest memory at data_gpa (idle vq, our
 * own descriptors 0..2; header and status from the queue's scratch). */
static void raw_read(struct ffe *fe, struct ffe_vq *vq, uint64_t sector, uint64_t data_gpa,
		     uint32_t len, uint64_t *status_gpa)
{
	struct ffe_buf h, st;
	struct ffe_blk_hdr hdr = { .type = FFE_BLK_T_IN, .sector = sector };
	uint16_t u = ffe_vq_used_idx(vq);
	uint8_t *data = ffe_gpa_to_hva(fe, data_gpa, len);

	cr_assert_not_null(data);
	cr_assert_eq(vq->ninflight, 0u);
	memset(data, 0x5c, len);
	cr_assert_eq(ffe_vq_alloc(vq, 16, 16, &h), 0);
	cr_assert_eq(ffe_vq_alloc(vq, 1, 1, &st), 0);
	memcpy(h.hva, &hdr, sizeof(hdr));
	*(volatile uint8_t *)st.hva = 0xee;
	*ffe_vq_desc(vq, 0) = (struct ffe_desc){ h.gpa, 16, FFE_DESC_F_NEXT, 1 };
	*ffe_vq_desc(vq, 1) = (struct ffe_desc){ data_gpa, len, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 2 };
	*ffe_vq_desc(vq, 2) = (struct ffe_desc){ st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	ffe_vq_publish(vq, 0);
	ffe_vq_kick_raw(vq);
	cr_assert_eq(ffe_vq_wait_used_change(vq, u, 5000), 0, "a read into gpa 0x%" PRIx64
		     " never completed", data_gpa);
	vq->last_used = ffe_vq_used_idx(vq);
	cr_assert_eq(*(volatile uint8_t *)st.hva, FFE_BLK_S_OK);
	cr_expect(memcmp(data, data_image + (sector - DATA_SECTOR) * 512, len) == 0,
		  "read into gpa 0x%" PRIx64 ": wrong data", data_gpa);
	*status_gpa = st.gpa;
}

Test(log, log_smaller_than_the_memory)
{
	/* QEMU's usual layout: one region at gpa 0, 64 MiB; logs covering 32
	 * MiB (at an offset in their file) and 32 KiB */
	static const struct { uint64_t size, offset; } logs[] = { { 1024, 8192 }, { 1, 0 } };
	struct ffe_opts o;
	struct ffe *fe;

	ffe_opts_init(&o);
	o.extra_protocol_features = FFE_BIT(FFE_PF_LOG_SHMFD);
	fe = fx_ready(DEV_A, &o, 0, 1, 128);
	need_log(fe);
	write_data(&fe->vq[0]);
	for (unsigned i = 0; i < 2; i++) {
		struct ffe_log *l = ffe_log_new(logs[i].size, logs[i].offset, 0);
		uint64_t covered = logs[i].size * 8 * FFE_LOG_PAGE, st, ug, ul;

		cr_assert_not_null(l);
		set_base(fe, l);
		if (i == 0)
			log_on(fe, 1);
		ffe_log_clear(l);
		/* wholly beyond the log, straddling its end, and (first log) inside */
		raw_read(fe, &fe->vq[0], DATA_SECTOR, 48 * MiB, 8192, &st);
		raw_read(fe, &fe->vq[0], DATA_SECTOR + 16, covered - 4096, 8192, &st);
		if (i == 0) {
			raw_read(fe, &fe->vq[0], DATA_SECTOR + 32, 24 * MiB + 512, 4096, &st);
			cr_expect(ffe_log_all_set(l, 24 * MiB + 512, 4096),
				  "a read into gpa 24 MiB (inside the log) not marked");
			cr_expect(ffe_log_all_set(l, st, 1), "the status byte at gpa 0x%" PRIx64
				  " not marked", st);
			ffe_vq_used_area(&fe->vq[0], &ug, &ul);
			cr_expect(ffe_log_all_set(l, ug + 2, 2), "used->idx not marked");
		}
		cr_expect(ffe_log_page(l, ffe_page_first(covered - 4096)),
			  "log %u: the last page it covers (read straddling its end) not marked", i);
		expect_guard_clean(l, i ? "a 1-byte log" : "a log of half the memory");
		/* and the device still works */
		fx_rw_verify(&fe->vq[0], 20000, 16384, 0x10b0 + i, NULL);
		expect_guard_clean(l, "after more I/O");
	}
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(log, failed_request_marks_its_status)
{
	/* a read whose data buffer is in no region: the device fails it, and
	 * the status byte it writes is a write like any other */
	struct ffe *fe = log_fe(1, false, 1, 64, 0);
	struct ffe_vq *vq = &fe->vq[0];
	struct ffe_buf h, st;
	struct ffe_blk_hdr hdr = { .type = FFE_BLK_T_IN, .sector = 0 };
	uint16_t u = ffe_vq_used_idx(vq);
	uint64_t hole = fe->r[0].gpa + fe->r[0].size + 16 * MiB;
	uint8_t s;

	cr_assert_null(ffe_gpa_to_hva(fe, hole, 4096));
	set_base(fe, NULL);
	log_on(fe, 1);
	cr_assert_eq(ffe_vq_alloc(vq, 16, 4096, &h), 0);
	cr_assert_eq(ffe_vq_alloc(vq, 1, 4096, &st), 0);
	memcpy(h.hva, &hdr, sizeof(hdr));
	*(volatile uint8_t *)st.hva = 0xee;
	*ffe_vq_desc(vq, 0) = (struct ffe_desc){ h.gpa, 16, FFE_DESC_F_NEXT, 1 };
	*ffe_vq_desc(vq, 1) = (struct ffe_desc){ hole, 4096, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 2 };
	*ffe_vq_desc(vq, 2) = (struct ffe_desc){ st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	ffe_log_clear(fe->log);
	ffe_vq_publish(vq, 0);
	ffe_vq_kick_raw(vq);
	cr_assert_eq(ffe_vq_wait_used_change(vq, u, 5000), 0, "a read into a hole never completed");
	s = *(volatile uint8_t *)st.hva;
	vq->last_used = ffe_vq_used_idx(vq);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "a read into a hole: status %#x", s);
	cr_expect(ffe_log_all_set(fe->log, st.gpa, 1), "the status byte of a failed request "
		  "(gpa 0x%" PRIx64 ") not marked", st.gpa);
	cr_expect(ffe_log_none_set(fe->log, h.gpa, 16), "the header's page is marked");
	fx_rw_verify(vq, 9000, 4096, 0x1120, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- messages ------------------------------------------------------------------ */

/* The next message from the back-end, within 3 s. */
static int next_msg(struct ffe *fe, struct ffe_msg *m)
{
	int r = ffe_recv_raw(fe, m, 3000);

	if (r == 0)
		ffe_msg_close_fds(m);
	return r;
}

Test(log, set_log_base_reply_without_need_reply)
{
	struct ffe *fe = log_fe(1, false, 1, 64, 0);
	struct ffe_msg *m = malloc(sizeof(*m));

	for (int need = 0; need <= 1; need++) {
		struct ffe_log *l = ffe_log_new(ffe_log_size_for(fe), 0, 0);
		struct ffe_log_base lb = { l->size, 0 };
		uint64_t v = ~0ull;
		int r;

		r = ffe_send_raw(fe, FFE_SET_LOG_BASE,
				 FFE_FLAG_VERSION | (need ? FFE_FLAG_NEED_REPLY : 0), sizeof(lb), &lb,
				 sizeof(lb), &l->fd, 1);
		cr_assert_eq(r, 0);
		r = next_msg(fe, m);
		cr_assert_eq(r, 0, "SET_LOG_BASE %s NEED_REPLY: no reply (%s)", need ? "with" : "without",
			     strerror(-r));
		cr_expect_eq(m->hdr.request, (uint32_t)FFE_SET_LOG_BASE, "reply to request %u",
			     m->hdr.request);
		cr_expect_eq(m->hdr.flags & 0x7, FFE_FLAG_VERSION | FFE_FLAG_REPLY,
			     "reply flags %#x", m->hdr.flags);
		cr_expect_eq(m->hdr.size, 8u, "reply payload of %u bytes, a u64 expected", m->hdr.size);
		cr_expect_eq(m->nfds, 0u);
		memcpy(&v, m->payload, 8);
		cr_expect_eq(v, 0u, "SET_LOG_BASE %s NEED_REPLY answered %#" PRIx64,
			     need ? "with" : "without", v);
		/* exactly one reply: the next message answers GET_FEATURES */
		cr_assert_eq(ffe_send_raw(fe, FFE_GET_FEATURES, FFE_FLAG_VERSION, 0, NULL, 0, NULL, 0), 0);
		cr_assert_eq(next_msg(fe, m), 0);
		cr_expect_eq(m->hdr.request, (uint32_t)FFE_GET_FEATURES, "after SET_LOG_BASE %s "
			     "NEED_REPLY: a second reply (request %u) came", need ? "with" : "without",
			     m->hdr.request);
		ffe_log_free(l);
	}
	/* that log is in use: a read is marked */
	set_base(fe, NULL);
	log_on(fe, 1);
	fx_rw_verify(&fe->vq[0], 9000, 4096, 0x10d0, NULL);
	cr_expect_gt(ffe_log_count(fe->log), 0u, "nothing marked after a read");
	free(m);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(log, set_log_fd_accepted)
{
	int base = count_fds();
	struct ffe *fe = log_fe(1, false, 1, 64, 0);
	struct ffe_msg *m = malloc(sizeof(*m));
	int efd = eventfd(0, EFD_CLOEXEC), r;

	cr_assert(fe->use_reply_ack);
	r = ffe_set_log_fd(fe);
	cr_expect_eq(r, 0, "SET_LOG_FD with REPLY_ACK: %d (%s)", r, fe->err);
	/* without NEED_REPLY: no reply, the connection goes on */
	cr_assert_eq(ffe_send_raw(fe, FFE_SET_LOG_FD, FFE_FLAG_VERSION, 0, NULL, 0, &efd, 1), 0);
	close(efd);
	cr_assert_eq(ffe_send_raw(fe, FFE_GET_FEATURES, FFE_FLAG_VERSION, 0, NULL, 0, NULL, 0), 0);
	r = next_msg(fe, m);
	cr_expect_eq(r, 0, "after SET_LOG_FD: %s", strerror(-r));
	cr_expect(r != 0 || m->hdr.request == FFE_GET_FEATURES, "SET_LOG_FD without NEED_REPLY "
		  "was answered (request %u)", m->hdr.request);
	set_base(fe, NULL);
	log_on(fe, 1);
	r = ffe_set_log_fd(fe);
	cr_expect_eq(r, 0, "SET_LOG_FD while logging: %d (%s)", r, fe->err);
	fx_rw_verify(&fe->vq[0], 9000, 4096, 0x10e0, NULL);
	cr_expect_gt(ffe_log_count(fe->log), 0u, "nothing marked after a read");
	free(m);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	/* the eventfds and the log's memfd were let go with the connection */
	expect_fds_back_to(base, "a connection with a log and log fds closed");
	cr_expect(wait_maps(0, 0, 2000), "a log is still mapped %u times after the front-end "
		  "went away", log_maps(0));
}

Test(log, log_goes_with_the_connection)
{
	struct ffe *fe = log_fe(1, false, 1, 64, 0);
	struct ffe_log *l;

	set_base(fe, NULL);
	log_on(fe, 1);
	fx_rw_verify(&fe->vq[0], 9000, 4096, 0x10f0, NULL);
	cr_expect_gt(ffe_log_count(fe->log), 0u, "nothing marked after a read");
	l = fe->log;            /* keep it past the connection */
	fe->log = NULL;
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	ffe_log_clear(l);
	cr_expect(wait_maps(l->gen, 1, 2000), "the log is still mapped by the back-end after "
		  "the front-end went away");
	/* a new front-end with the same memory layout, no log */
	fe = log_fe(1, false, 1, 64, 0);
	fx_rw_verify(&fe->vq[0], 9000, 4096, 0x10f1, NULL);
	cr_expect_eq(ffe_log_count(l), 0u, "the previous connection's log got marks");
	ffe_log_free(l);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- refused ------------------------------------------------------------------- */

struct bad_base {
	const char *what;
	uint64_t size, offset;
	uint32_t plen;          /* payload size (16) */
	unsigned nfds;          /* log fds sent (0..2) */
	bool eventfd;           /* an eventfd instead */
	bool no_shmfd;          /* LOG_SHMFD not negotiated */
};

Test(log, bad_set_log_base_drops_only_that_connection)
{
	static const struct bad_base v[] = {
		{ "no fd", 4096, 0, 16, 0, false, false },
		{ "two fds", 4096, 0, 16, 2, false, false },
		{ "size 0", 0, 0, 16, 1, false, false },
		{ "offset + size wrapping", 8192, UINT64_MAX - 4095, 16, 1, false, false },
		{ "size 2^64-1", UINT64_MAX, 0, 16, 1, false, false },
		{ "range past the end of the fd", 64 * 1024, 0, 16, 1, false, false },
		{ "offset past the end of the fd", 4096, 1 * MiB, 16, 1, false, false },
		{ "range running a byte past the end", 8193, 0, 16, 1, false, false },
		{ "an eventfd (nothing to map)", 4096, 0, 16, 1, true, false },
		{ "payload of 8 bytes", 4096, 0, 8, 1, false, false },
		{ "payload of 24 bytes", 4096, 0, 24, 1, false, false },
		{ "LOG_SHMFD not negotiated", 4096, 0, 16, 1, false, true },
	};
	struct bystander b;

	bystander_start(&b);
	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct ffe_opts o;
		struct ffe *fe;
		/* the file: 8 KiB (a log of 4096 or 8192 bytes fits it) */
		struct ffe_log *l = ffe_log_new(8192, 0, 8192), *l2 = ffe_log_new(8192, 0, 8192);
		uint8_t payload[24] = { 0 };
		int fds[2], efd = eventfd(0, EFD_CLOEXEC);
		enum outcome out;

		cr_assert(l && l2 && efd >= 0);
		memcpy(payload, &v[i].size, 8);
		memcpy(payload + 8, &v[i].offset, 8);
		fds[0] = v[i].eventfd ? efd : l->fd;
		fds[1] = l2->fd;
		log_opts(&o, 1, 0);
		if (v[i].no_shmfd)
			o.extra_protocol_features = 0;
		fe = fx_ready(DEV_A, &o, 0, 1, 64);
		if (!v[i].no_shmfd)
			need_log(fe);
		fx_rw_verify(&fe->vq[0], 9000, 4096, 0x1100 + i, NULL);
		/* as QEMU sends it: no NEED_REPLY (a reply 0 would be acceptance) */
		out = xmit(fe, FFE_SET_LOG_BASE, FFE_FLAG_VERSION, v[i].plen, payload, v[i].plen,
			   fds, v[i].nfds, NULL);
		cr_log_info("SET_LOG_BASE with %s: %s", v[i].what, oname(out));
		cr_expect_eq(out, O_DROPPED, "SET_LOG_BASE with %s: the back-end %s, expected it to "
			     "drop the connection", v[i].what, oname(out));
		fx_close(fe);
		ffe_log_free(l);
		ffe_log_free(l2);
		close(efd);
		cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000), "A is '%s' 3 s after the "
			  "SET_LOG_BASE with %s", vdev_state_name(vdev_get_state(fx.dev[DEV_A])),
			  v[i].what);
	}
	bystander_stop(&b, "bad SET_LOG_BASE messages on device A");
	cr_expect(wait_maps(0, 0, 2000), "a log is still mapped %u times after the refused "
		  "SET_LOG_BASE messages", log_maps(0));
	healthy();
}

Test(log, pages_per_request)
{
	/* What one request adds to a migration's dirty set: its data pages,
	 * the page of its status byte, the used ring (the figure the README's
	 * convergence paragraph quotes). */
	struct ffe *fe = log_fe(1, false, 1, 256, 0);
	uint8_t *buf = NULL;
	unsigned sizes[] = { 4096, 65536 };

	set_base(fe, NULL);
	log_on(fe, 1);
	cr_assert_eq(posix_memalign((void **)&buf, 4096, 65536), 0);
	for (unsigned i = 0; i < 2; i++) {
		uint64_t n;

		fx_read_ok(&fe->vq[0], 2048, buf, sizes[i], NULL);      /* warm */
		ffe_log_clear(fe->log);
		fx_read_ok(&fe->vq[0], 4096 + i * 128, buf, sizes[i], NULL);
		n = ffe_log_count(fe->log);
		cr_log_info("one %u KiB read (ring of 256): %" PRIu64 " pages marked", sizes[i] / 1024, n);
		/* data pages + status page + used ring (one page for 256 entries,
		 * two when it straddles) */
		cr_expect(n >= sizes[i] / 4096 + 2 && n <= sizes[i] / 4096 + 4,
			  "%u bytes read: %" PRIu64 " pages marked", sizes[i], n);
	}
	free(buf);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

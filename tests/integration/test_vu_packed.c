/* Integration suites `packed` and `packedring`: issue 14, packed virtqueues
 * (VIRTIO_F_RING_PACKED, virtio 1.2 section 2.8) from the driver side,
 * written from the spec rather than from the device's code.
 *
 * `packed`: the bit is offered (and not with packed=0), verified I/O on
 * packed rings (QD32 on 4 queues wrapping many times, every layout,
 * indirect tables, mixed sizes, the other request types), the used
 * descriptors' id/len/WRITE, a stop and resume at a base carrying the wrap
 * counter across a reconnect, and the event suppression structures (no call
 * with DISABLE, a call at the named descriptor in DESC mode).
 *
 * `packedring`: hostile packed layouts (wrong wrap bits, buffer ids out of
 * range or reused, a descriptor made available out of order, chains longer
 * than the queue, indirect in indirect, addresses outside memory, rings
 * outside memory).  Each must fail the request or drop the connection,
 * never the daemon: healthy() after each, and a packed front-end after it.
 * The fixture: vu_fixture.h. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vu_fixture.h"

#define PK_BIT FFE_BIT(FFE_F_RING_PACKED)

static struct ffe *pk_ready(unsigned dev, bool event_idx, unsigned nq, unsigned qsize)
{
	struct ffe_opts o;
	struct ffe *fe;

	ffe_opts_init(&o);
	o.packed = true;
	fe = fx_ready(dev, &o, ffe_default_features(event_idx), nq, qsize);
	cr_assert(fe->features & PK_BIT, "RING_PACKED not negotiated");
	for (unsigned q = 0; q < nq; q++)
		cr_assert(fe->vq[q].packed, "q%u is not a packed queue", q);
	return fe;
}

/* Every request of fe completed on an id we made available. */
static void expect_no_bogus(struct ffe *fe, unsigned nq, const char *what)
{
	for (unsigned q = 0; q < nq; q++)
		cr_expect_eq(fe->vq[q].bogus_used, 0u, "%s: q%u saw %u used descriptors naming a "
			     "buffer id not in flight", what, q, fe->vq[q].bogus_used);
}

/* A packed front-end on A still does verified I/O on every queue, and the
 * golden range is intact (after hostile tests, besides healthy()). */
static void packed_healthy(void)
{
	struct ffe *fe;

	cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000), "A not listening");
	fe = pk_ready(DEV_A, true, A_QUEUES, 64);
	for (unsigned q = 0; q < A_QUEUES; q++)
		fx_rw_verify(&fe->vq[q], 8192 + q * 64, 16384, 0x9acc + q, NULL);
	check_golden(&fe->vq[0]);
	expect_no_bogus(fe, A_QUEUES, "packed front-end after the test");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- offered, negotiated ------------------------------------------------- */

Test(packed, offered_by_default_and_negotiated)
{
	struct ffe *fe = fx_negotiated(DEV_A);

	cr_expect(fe->dev_features & PK_BIT, "GET_FEATURES %#llx lacks VIRTIO_F_RING_PACKED (34); "
		  "packed=1 is the default", (unsigned long long)fe->dev_features);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);

	fe = pk_ready(DEV_A, false, 1, 128);
	fx_rw_verify(&fe->vq[0], 100, 4096, 0x1001, NULL);
	check_golden(&fe->vq[0]);
	expect_no_bogus(fe, 1, "first packed request");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	fe = pk_ready(DEV_B, true, B_QUEUES, 256);
	fx_rw_verify(&fe->vq[1], 100, 8192, 0x1002, NULL);
	fx_close_wait(DEV_B, fe, VDEV_LISTENING);
}

Test(packed, packed_0_not_offered)
{
	struct vdev_params p;
	struct ffe_opts o;
	struct ffe *fe;
	unsigned d;
	int r;

	fx_params(&p, 4 * MiB, 1, "split-only");
	p.packed = false;
	d = fx_add("vbsplit", &p);
	fe = fx_negotiated(d);
	cr_expect(!(fe->dev_features & PK_BIT), "packed=0: GET_FEATURES %#llx offers RING_PACKED",
		  (unsigned long long)fe->dev_features);
	fx_close_wait(d, fe, VDEV_LISTENING);

	ffe_opts_init(&o);
	o.packed = true;
	fe = fx_open(d, &o);
	r = ffe_negotiate(fe, 0);
	cr_expect_eq(r, -ENOTSUP, "packed=0: negotiating packed gave %d (%s)", r, fe->err);
	ffe_close(fe);
	/* SET_FEATURES with bit 34 anyway: refused (nack or drop), never served */
	fe = fx_negotiated(d);
	{
		uint64_t f = fe->features | PK_BIT;
		enum outcome oc = xmit(fe, FFE_SET_FEATURES, 0, 8, &f, 8, NULL, 0, NULL);

		cr_expect(oc == O_NACK || oc == O_DROPPED, "packed=0: SET_FEATURES with RING_PACKED: "
			  "the back-end %s", oname(oc));
	}
	ffe_close(fe);
	/* and split still works there */
	fe = fx_ready(d, NULL, 0, 1, 64);
	fx_rw_verify(&fe->vq[0], 8, 4096, 0x1003, NULL);
	fx_close_wait(d, fe, VDEV_LISTENING);
}

/* ---- verified I/O ------------------------------------------------------------ */

#define QD 32

/* One queue's driver: QD slots, each owning 64 sectors (32 KiB) of the
 * device; a slot alternates a write of a new pattern and a read that
 * verifies it, so its requests are ordered by themselves while the
 * slots' requests overlap freely (QD32, any completion order).  Layouts
 * and sizes vary per request.  A request that finds no room in the ring
 * (-ENOSPC) waits for the oldest one first. */
struct pjob {
	struct ffe_vq *vq;
	uint64_t base;
	unsigned total;
	uint64_t seed;
	unsigned done, writes_checked;
	unsigned out_of_order;  /* used descriptors not where their chain began */
	char err[256];
};

struct pslot {
	struct ffe_blk_io io;
	bool busy, is_read;
	size_t len;
	uint64_t seed, sector;
	unsigned seq;
};

static const struct ffe_layout pk_lays[] = {
	{ FFE_L_NATURAL, 0, false },
	{ FFE_L_NATURAL, 0, true },
	{ FFE_L_MERGED, 0, false },
	{ FFE_L_NATURAL, 4096, false },
	{ FFE_L_NATURAL, 1024, true },
	{ FFE_L_CHOPPED, 1000, true },
	{ FFE_L_NATURAL, 2048, false },
	{ FFE_L_MERGED, 0, true },
};

static bool pslot_finish(struct pjob *j, struct pslot *s)
{
	int st;

	if (ffe_wait(j->vq, &s->io.req, -1) < 0) {
		snprintf(j->err, sizeof(j->err), "q%u request %u (%s %zu bytes at %" PRIu64 "): %.150s",
			 j->vq->index, s->seq, s->is_read ? "read" : "write", s->len, s->sector,
			 j->vq->fe->err);
		return false;
	}
	st = ffe_blk_status(&s->io);
	if ((s->io.req.used_idx & 0x7fff) != s->io.req.ring_descs[0])
		j->out_of_order++;
	if (st != 0)
		snprintf(j->err, sizeof(j->err), "q%u request %u: status %d", j->vq->index, s->seq, st);
	else if (!(s->io.req.used_flags & FFE_DESC_F_WRITE))
		snprintf(j->err, sizeof(j->err), "q%u request %u: used descriptor flags %#x without "
			 "WRITE though the device wrote %u bytes (2.8.4: WRITE says data was written, "
			 "len is reserved without it)", j->vq->index, s->seq, s->io.req.used_flags,
			 s->io.req.used_len);
	else if (s->io.req.used_len != (s->is_read ? s->len + 1 : 1))
		snprintf(j->err, sizeof(j->err), "q%u request %u: used len %u, expected %zu",
			 j->vq->index, s->seq, s->io.req.used_len, s->is_read ? s->len + 1 : 1);
	else if (s->is_read && !ffe_pattern_ok(ffe_blk_in(&s->io), s->len, s->seed))
		snprintf(j->err, sizeof(j->err), "q%u request %u: read-back of sector %" PRIu64
			 " (%zu bytes) differs", j->vq->index, s->seq, s->sector, s->len);
	else if (s->is_read)
		j->writes_checked++;
	ffe_blk_io_release(j->vq, &s->io);
	s->busy = false;
	j->done++;
	return !j->err[0];
}

static void *pjob_run(void *arg)
{
	struct pjob *j = arg;
	struct pslot *sl = calloc(QD, sizeof(*sl));
	uint8_t *buf = malloc(32768);
	unsigned oldest = 0;

	for (unsigned i = 0; i < j->total && !j->err[0]; i++) {
		unsigned k = i % QD;
		struct pslot *s = &sl[k];
		const struct ffe_layout *lay = &pk_lays[(i / QD + k) % 8];
		int r;

		/* The queue's scratch memory (buffers, indirect tables) is a
		 * bump allocator that starts over only when nothing is in
		 * flight: let the queue drain now and then, or a slow back-end
		 * (ThreadSanitizer) that never lets it empty runs it out. */
		if (i && i % (4 * QD) == 0)
			for (unsigned t = 0; t < QD && !j->err[0]; t++)
				if (sl[t].busy && !pslot_finish(j, &sl[t]))
					break;
		if (j->err[0])
			break;
		if (s->busy && !pslot_finish(j, s))
			break;
		if (!s->is_read && s->seq) {
			/* read back what the slot wrote last */
			s->is_read = true;
		} else {
			s->is_read = false;
			s->len = 512u << ((i * 7 + k) % 7);             /* 512 .. 32 KiB */
			s->seed = j->seed + i;
			s->sector = j->base + k * 64;
			ffe_pattern(buf, s->len, s->seed);
		}
		r = ffe_blk_prep(&s->io, s->is_read ? FFE_BLK_T_IN : FFE_BLK_T_OUT, s->sector,
				 s->is_read ? NULL : buf, s->is_read ? 0 : s->len, s->is_read ? s->len : 0,
				 lay);
		if (r < 0) {
			snprintf(j->err, sizeof(j->err), "prep: %d", r);
			break;
		}
		s->seq = i + 1;
		while ((r = ffe_submit(j->vq, &s->io.req)) == -ENOSPC) {
			/* ring full: kick, and finish the oldest slot in flight */
			ffe_kick(j->vq);
			for (unsigned t = 0; t < QD; t++) {
				oldest = (oldest + 1) % QD;
				if (sl[oldest].busy && oldest != k)
					break;
			}
			if (!sl[oldest].busy || !pslot_finish(j, &sl[oldest]))
				break;
		}
		if (r < 0) {
			if (!j->err[0])
				snprintf(j->err, sizeof(j->err), "q%u submit %u: %d", j->vq->index, i, r);
			ffe_blk_io_release(j->vq, &s->io);
			break;
		}
		s->busy = true;
		if (i % 4 == 3)
			ffe_kick(j->vq);
	}
	ffe_kick(j->vq);
	for (unsigned k = 0; k < QD; k++)
		if (sl[k].busy) {
			if (!j->err[0])
				pslot_finish(j, &sl[k]);
			else
				ffe_blk_io_release(j->vq, &sl[k].io);
		}
	free(sl);
	free(buf);
	return NULL;
}

static unsigned qd32_run(struct ffe *fe, unsigned nq, unsigned total, uint64_t seed)
{
	unsigned ooo = 0;

	struct pjob j[FFE_MAX_QUEUES];
	pthread_t th[FFE_MAX_QUEUES];

	for (unsigned q = 0; q < nq; q++) {
		memset(&j[q], 0, sizeof(j[q]));
		j[q].vq = &fe->vq[q];
		j[q].base = 20000 + q * QD * 64;
		j[q].total = total;
		j[q].seed = seed + q * 100000;
		pthread_create(&th[q], NULL, pjob_run, &j[q]);
	}
	for (unsigned q = 0; q < nq; q++) {
		pthread_join(th[q], NULL);
		cr_expect(!j[q].err[0], "%s", j[q].err);
		cr_expect_eq(j[q].done, total, "q%u: %u of %u requests done", q, j[q].done, total);
		cr_log_info("q%u: %u requests (%u read-backs verified, %u completed out of order), "
			    "ring of %u descriptors used %" PRIu64 " times round (%" PRIu64 " kicks, "
			    "%" PRIu64 " calls)", q, j[q].done, j[q].writes_checked, j[q].out_of_order,
			    fe->vq[q].num, fe->vq[q].pk_avail / fe->vq[q].num, fe->vq[q].kicks,
			    fe->vq[q].calls);
		ooo += j[q].out_of_order;
	}
	return ooo;
}

Test(packed, qd32_four_queues_wrapping_many_times)
{
	struct ffe *fe = pk_ready(DEV_A, false, A_QUEUES, 128);

	qd32_run(fe, A_QUEUES, 1500, 0x51000);
	for (unsigned q = 0; q < A_QUEUES; q++)
		cr_expect_geq(fe->vq[q].pk_avail / fe->vq[q].num, 20u,
			      "q%u wrapped only %" PRIu64 " times", q, fe->vq[q].pk_avail / fe->vq[q].num);
	expect_no_bogus(fe, A_QUEUES, "QD32 on 4 queues");
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, qd32_event_idx_small_rings)
{
	/* 64-entry rings (a QD32 of multi-descriptor chains fills them), DESC
	 * mode for calls and kicks */
	struct ffe *fe = pk_ready(DEV_A, true, 2, 64);

	cr_assert(fe->features & FFE_BIT(FFE_F_RING_EVENT_IDX));
	qd32_run(fe, 2, 1200, 0x52000);
	expect_no_bogus(fe, 2, "QD32 with EVENT_IDX");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, qd32_on_a_file_out_of_order_completions)
{
	/* io_uring on a file completes requests out of order: used
	 * descriptors then land where other chains began, and both sides skip
	 * by the length of the chain each one names */
	char path[] = "/var/tmp/vhostd-packed-XXXXXX";
	struct vdev_params p;
	struct ffe_opts o;
	struct ffe *fe;
	unsigned d, ooo;
	int fd;

	need_uring();
	fd = mkstemp(path);
	cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, 64 * MiB), 0);
	close(fd);
	fx_params(&p, 0, 2, "packed-file");
	p.backing = BE_FILE;
	snprintf(p.path, sizeof(p.path), "%s", path);
	d = fx_add("vbpfile", &p);
	ffe_opts_init(&o);
	o.packed = true;
	fe = fx_ready(d, &o, ffe_default_features(true), 2, 128);
	cr_assert(fe->vq[0].packed);
	ooo = qd32_run(fe, 2, 1500, 0x53000);
	cr_log_info("file backing: %u of 3000 requests completed out of ring order", ooo);
	expect_no_bogus(fe, 2, "QD32 on a file");
	fx_close_wait(d, fe, VDEV_LISTENING);
	unlink(path);
}

Test(packed, every_layout_and_large_requests)
{
	struct ffe *fe = pk_ready(DEV_A, false, 2, 256);
	uint32_t seg_max = fe->cfg.seg_max;
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 0, false }, { FFE_L_NATURAL, 0, true },
		{ FFE_L_NATURAL, 512, false }, { FFE_L_NATURAL, 512, true },
		{ FFE_L_NATURAL, 1536, false }, { FFE_L_MERGED, 0, false },
		{ FFE_L_MERGED, 0, true }, { FFE_L_CHOPPED, 8, false },
		{ FFE_L_CHOPPED, 3, true }, { FFE_L_CHOPPED, 1, true },
		{ FFE_L_CHOPPED, 1000, false }, { FFE_L_CHOPPED, 4097, true },
	};

	for (unsigned i = 0; i < sizeof(lays) / sizeof(lays[0]); i++) {
		size_t len = 32768;
		unsigned per = lays[i].kind == FFE_L_CHOPPED ? lays[i].seg :
			       lays[i].kind == FFE_L_NATURAL && lays[i].seg ? lays[i].seg : 0;

		while (per && len > 512 && (len + 17 + per - 1) / per > seg_max)
			len /= 2;
		if (per && (len + 17 + per - 1) / per > seg_max + 2)
			continue;
		fx_rw_verify(&fe->vq[i % 2], 500 + i * 100, len, 0x2000 + i, &lays[i]);
	}
	/* seg_max segments of 4 KiB, in the ring (it has room) and indirect */
	{
		uint32_t n = seg_max < 200 ? seg_max : 200;
		struct ffe_layout lay = { FFE_L_NATURAL, 4096, false };

		fx_rw_verify(&fe->vq[0], 40000, (size_t)n * 4096, 0x2100, &lay);
		lay.indirect = true;
		fx_rw_verify(&fe->vq[1], 42000, (size_t)n * 4096, 0x2101, &lay);
	}
	check_golden(&fe->vq[0]);
	expect_no_bogus(fe, 2, "every layout");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, used_descriptor_id_len_and_write_flag)
{
	struct ffe *fe = pk_ready(DEV_A, false, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	struct ffe_blk_io io;
	uint8_t b[8192];
	static const struct { uint32_t type; size_t out, in; uint32_t len; const char *what; } rq[] = {
		{ FFE_BLK_T_IN, 0, 8192, 8193, "IN 8192" },
		{ FFE_BLK_T_OUT, 8192, 0, 1, "OUT 8192" },
		{ FFE_BLK_T_GET_ID, 0, 20, 21, "GET_ID" },
		{ FFE_BLK_T_FLUSH, 0, 0, 1, "FLUSH" },
	};

	memset(b, 0x3c, sizeof(b));
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(ffe_blk_prep(&io, rq[i].type, 3000, rq[i].out ? b : NULL, rq[i].out,
					  rq[i].in, NULL), 0);
		cr_assert_eq(ffe_run(vq, &io.req), 0, "%s: %s", rq[i].what, fe->err);
		cr_expect_eq(ffe_blk_status(&io), 0, "%s: status %d", rq[i].what, ffe_blk_status(&io));
		cr_expect(io.req.used_flags & FFE_DESC_F_WRITE, "%s: used descriptor flags %#x lack WRITE "
			  "(the device wrote the status byte at least)", rq[i].what, io.req.used_flags);
		cr_expect_eq(io.req.used_len, rq[i].len, "%s: used len %u, expected %u", rq[i].what,
			     io.req.used_len, rq[i].len);
		/* the used descriptor went where the buffer's first descriptor was
		 * (in order, nothing else in flight) */
		cr_expect_eq(io.req.used_idx & 0x7fff, io.req.ring_descs[0],
			     "%s: used descriptor at offset %u, the buffer started at %u", rq[i].what,
			     io.req.used_idx & 0x7fff, io.req.ring_descs[0]);
		ffe_blk_io_release(vq, &io);
	}
	expect_no_bogus(fe, 1, "single requests");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, chain_id_in_last_descriptor_only)
{
	/* 2.8.6: "Buffer ID is included in the last descriptor in the list";
	 * the others here carry other ids (Linux writes the id everywhere, so
	 * a device reading the first one works with Linux but not with the spec) */
	struct ffe *fe = pk_ready(DEV_A, false, 1, 64);
	struct ffe_vq *vq = &fe->vq[0];
	struct ffe_layout lay = { FFE_L_NATURAL, 1024, false };

	vq->pk_id_last_only = true;
	for (unsigned i = 0; i < 40; i++)       /* ~7 descriptors each: wraps 4 times */
		fx_rw_verify(vq, 600 + (i % 8) * 16, 4096, 0x3000 + i, &lay);
	expect_no_bogus(fe, 1, "ids in the last descriptor only");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, flush_discard_write_zeroes_get_id)
{
	struct ffe *fe = pk_ready(DEV_A, true, 2, 128);
	struct ffe_vq *vq = &fe->vq[1];
	uint8_t *w = malloc(65536), *r = malloc(65536), *ref = malloc(65536);
	char id[FFE_BLK_ID_BYTES], want[FFE_BLK_ID_BYTES] = { 0 };
	int s;

	s = ffe_blk_flush(vq);
	cr_expect_eq(s, FFE_BLK_S_OK, "FLUSH: status %d", s);
	memset(id, 0x55, sizeof(id));
	s = ffe_blk_get_id(vq, id);
	cr_expect_eq(s, FFE_BLK_S_OK, "GET_ID: status %d", s);
	memcpy(want, A_SERIAL, strlen(A_SERIAL));
	cr_expect(memcmp(id, want, sizeof(want)) == 0, "GET_ID: \"%.20s\"", id);

	ffe_pattern(w, 65536, 0x4000);
	fx_write_ok(vq, 10000, w, 65536, NULL);
	s = ffe_blk_discard(vq, 10000 + 16, 32);
	cr_expect_eq(s, FFE_BLK_S_OK, "DISCARD: status %d", s);
	fx_read_ok(vq, 10000, r, 65536, NULL);
	memcpy(ref, w, 65536);
	memset(ref + 8192, 0, 16384);
	cr_expect(memcmp(r, ref, 65536) == 0, "DISCARD of sectors 16..47 of 128: wrong content");

	ffe_pattern(w, 65536, 0x4001);
	fx_write_ok(vq, 12000, w, 65536, NULL);
	s = ffe_blk_write_zeroes(vq, 12000 + 8, 24, true);
	cr_expect_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES: status %d", s);
	fx_read_ok(vq, 12000, r, 65536, NULL);
	memcpy(ref, w, 65536);
	memset(ref + 4096, 0, 24 * 512);
	cr_expect(memcmp(r, ref, 65536) == 0, "WRITE_ZEROES of sectors 8..31: wrong content");
	s = ffe_blk_req(vq, 0x77, 0, NULL, 0, r, 512, NULL, NULL);
	cr_expect_eq(s, FFE_BLK_S_UNSUPP, "unknown type: status %d", s);
	s = ffe_blk_read(vq, fe->cfg.capacity, r, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN at capacity: status %d", s);
	expect_no_bogus(fe, 2, "flush/discard/write zeroes/get id");
	free(w);
	free(r);
	free(ref);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, split_and_packed_front_ends_in_turn)
{
	/* the device's ring kind follows each connection's features */
	uint8_t b[8192];

	for (int round = 0; round < 3; round++) {
		struct ffe *fe = pk_ready(DEV_A, round & 1, 2, 64);

		fx_write_pattern(&fe->vq[round % 2], 7000 + round * 16, 8192, 0x5000 + round, NULL);
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
		fe = fx_ready(DEV_A, NULL, 0, 2, 64);
		fx_read_ok(&fe->vq[1], 7000 + round * 16, b, 8192, NULL);
		fx_check_pattern(b, 8192, 0x5000 + round, "written on packed, read on split");
		fx_rw_verify(&fe->vq[0], 7400 + round * 16, 4096, 0x5100 + round, NULL);
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	}
}

Test(packed, queue_size_not_a_power_of_two)
{
	/* 2.8: "The Queue Size value does not have to be a power of 2 unless
	 * enforced by the transport"; vhost-user enforces nothing. */
	struct ffe_opts o;
	struct ffe *fe;
	int r;

	ffe_opts_init(&o);
	o.packed = true;
	fe = fx_open(DEV_A, &o);
	cr_assert_eq(ffe_negotiate(fe, 0), 0, "%s", fe->err);
	cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
	r = ffe_vq_start(fe, 0, 100);
	cr_expect_eq(r, 0, "a packed queue of 100 entries refused: %d (%s)", r, fe->err);
	if (r == 0) {
		struct ffe_layout lay = { FFE_L_NATURAL, 4096, false };

		for (unsigned i = 0; i < 60; i++)       /* 4 descriptors each: 4 laps */
			fx_rw_verify(&fe->vq[0], 900 + (i % 5) * 16, 8192, 0x5200 + i, &lay);
		expect_no_bogus(fe, 1, "100-entry ring");
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- stop and resume ---------------------------------------------------------- */

Test(packed, get_set_vring_base_with_wrap_across_reconnect)
{
	struct ffe *fe = pk_ready(DEV_A, true, 2, 16);
	struct ffe_vq *vq = &fe->vq[1];
	uint32_t base = 0;
	uint16_t want;
	uint8_t b[4096];
	int r;

	/* 3 descriptors per request: 14 requests = 42 descriptors, two laps
	 * and 10: offset 10, wrap counter 1 */
	for (int i = 0; i < 7; i++)
		fx_rw_verify(vq, 6100 + (i % 4) * 8, 2048, 0x6000 + i, NULL);  /* 14 requests */
	want = ffe_vq_pk_avail_pos(vq);
	cr_log_info("after 14 requests (42 descriptors) on 16 entries: offset %u wrap %u",
		    want & 0x7fff, want >> 15);
	cr_assert_eq(want, FFE_PACKED_BASE(10, 1), "fakefe's own count is off: %#x", want);
	for (int i = 0; i < 3; i++)
		fx_rw_verify(vq, 6200 + i * 8, 2048, 0x6100 + i, NULL);       /* 18 more: 60 */
	want = ffe_vq_pk_avail_pos(vq);
	cr_assert_eq(want, FFE_PACKED_BASE(12, 0));
	r = ffe_vq_stop(fe, 1, &base);
	cr_assert_eq(r, 0, "GET_VRING_BASE: %s", fe->err);
	cr_expect_eq(base & 0xffff, want, "GET_VRING_BASE returned %#x (offset %u wrap %u); the "
		     "next available descriptor is offset 12 with wrap counter 0 (%#x)", base,
		     base & 0x7fff, (base >> 15) & 1, want);
	r = ffe_vq_stop(fe, 0, &base);
	cr_assert_eq(r, 0);
	cr_expect_eq(base & 0xffff, FFE_PACKED_BASE(0, 1), "GET_VRING_BASE of an unused packed queue "
		     "returned %#x, expected offset 0 wrap 1 (0x8000)", base);

	/* a request made available while stopped waits ... */
	{
		struct ffe_blk_io io;
		uint8_t w[4096];

		ffe_pattern(w, sizeof(w), 0x6200);
		cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, 6300, w, sizeof(w), 0, NULL), 0);
		cr_assert_eq(ffe_submit(vq, &io.req), 0);
		ffe_vq_kick_raw(vq);
		usleep(200000);
		ffe_poll_used(vq);
		cr_expect(!io.req.done, "a request on a packed ring stopped by GET_VRING_BASE was processed");

		/* ... across a new connection, resumed at the base from GET_VRING_BASE */
		cr_assert_eq(ffe_reconnect(fe), 0);
		cr_assert_eq(ffe_negotiate(fe, ffe_default_features(true)), 0, "%s", fe->err);
		cr_assert(fe->features & PK_BIT);
		cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
		cr_assert_eq(ffe_vq_resume(fe, 1), 0, "%s", fe->err);
		ffe_vq_kick_raw(vq);
		cr_expect_eq(ffe_wait(vq, &io.req, 3000), 0, "the request made available while the ring "
			     "was stopped was not processed after SET_VRING_BASE %#x", vq->stop_base);
		cr_expect_eq(ffe_blk_status(&io), 0);
		ffe_blk_io_release(vq, &io);
	}
	/* go on over more laps; data from before the reconnect is there */
	for (int i = 0; i < 12; i++)
		fx_rw_verify(vq, 6400 + (i % 4) * 8, 2048, 0x6300 + i, NULL);
	fx_read_ok(vq, 6100 + 2 * 8, b, 2048, NULL);
	fx_check_pattern(b, 2048, 0x6006, "data written before the reconnect");
	fx_read_ok(vq, 6300, b, 4096, NULL);
	fx_check_pattern(b, 4096, 0x6200, "request made available while stopped");
	r = ffe_vq_stop(fe, 1, &base);
	cr_assert_eq(r, 0, "%s", fe->err);
	cr_expect_eq(base & 0xffff, ffe_vq_pk_avail_pos(vq), "GET_VRING_BASE after resuming: %#x, "
		     "expected %#x", base, ffe_vq_pk_avail_pos(vq));
	expect_no_bogus(fe, 2, "stop and resume");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packed, start_at_a_base_with_wrap_counter_0)
{
	/* SET_VRING_BASE offset 13, wrap 0 on a fresh (zeroed) ring: the zero
	 * descriptors there look used at wrap 0 and must not be taken as
	 * available; requests from 13 on are */
	struct ffe_opts o;
	struct ffe *fe;
	uint32_t base = 0;

	ffe_opts_init(&o);
	o.packed = true;
	fe = fx_ready(DEV_A, &o, ffe_default_features(true), 0, 0);
	cr_assert_eq(ffe_vq_start_at(fe, 0, 16, FFE_PACKED_BASE(13, 0)), 0, "%s", fe->err);
	for (int i = 0; i < 9; i++)     /* 18 requests, 54 descriptors */
		fx_rw_verify(&fe->vq[0], 1200 + i * 8, 4096, 0x6500 + i, NULL);
	cr_assert_eq(ffe_vq_stop(fe, 0, &base), 0, "%s", fe->err);
	cr_expect_eq(base & 0xffff, ffe_vq_pk_avail_pos(&fe->vq[0]), "GET_VRING_BASE %#x, expected %#x",
		     base, ffe_vq_pk_avail_pos(&fe->vq[0]));
	expect_no_bogus(fe, 1, "start at offset 13 wrap 0");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- event suppression ---------------------------------------------------------- */

/* Submit one request (indirect: exactly one ring descriptor) and poll for
 * its completion without touching the call eventfd. */
static void one_polled(struct ffe_vq *vq, uint64_t sector, uint64_t seed)
{
	struct ffe_layout lay = { FFE_L_NATURAL, 0, true };
	struct ffe_deadline dl;
	struct ffe_blk_io io;
	uint8_t w[4096];

	ffe_pattern(w, sizeof(w), seed);
	cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, sector, w, sizeof(w), 0, &lay), 0);
	cr_assert_eq(ffe_submit(vq, &io.req), 0);
	cr_assert_eq(io.req.nring, 1u);
	ffe_kick(vq);
	ffe_deadline_start(&dl, 3000);
	while (!io.req.done && ffe_deadline_left(&dl)) {
		ffe_poll_used(vq);
		if (!io.req.done)
			usleep(200);
	}
	cr_assert(io.req.done, "request not completed (polling)");
	cr_assert_eq(ffe_blk_status(&io), 0);
	ffe_blk_io_release(vq, &io);
}

/* Calls that arrive within ms. */
static uint64_t calls_within(struct ffe_vq *vq, int ms)
{
	struct pollfd p = { .fd = vq->callfd, .events = POLLIN };

	poll(&p, 1, ms);
	return ffe_vq_take_calls(vq);
}

Test(packedevent, disable_means_no_call)
{
	struct ffe *fe = pk_ready(DEV_A, false, 2, 64);
	struct ffe_vq *vq = &fe->vq[1];
	uint64_t n = 0;

	ffe_vq_set_call_event(vq, FFE_RING_EVENT_DISABLE, 0);
	calls_within(vq, 20);
	for (int i = 0; i < 100; i++)          /* over a lap */
		one_polled(vq, 3000 + (i % 8) * 8, 0x7000 + i);
	n = calls_within(vq, 100);
	cr_expect_eq(n, 0u, "Driver Area flags DISABLE: the device sent %" PRIu64 " call(s) for 100 "
		     "used buffers", n);

	/* ENABLE: every completion is followed by a call */
	ffe_vq_set_call_event(vq, FFE_RING_EVENT_ENABLE, 0);
	vq->strict_calls = true;
	for (int i = 0; i < 40; i++)
		fx_rw_verify(vq, 3100 + (i % 8) * 8, 4096, 0x7100 + i, NULL);
	vq->strict_calls = false;
	expect_no_bogus(fe, 2, "event flags");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packedevent, desc_mode_calls_at_the_named_descriptor)
{
	/* queue of 16 started at offset 13 wrap 1; the call is asked for at
	 * offset 1 with wrap counter 0: the 5th used descriptor (13, 14, 15,
	 * then 0 and 1 of the next lap) */
	struct ffe_opts o;
	struct ffe *fe;
	struct ffe_vq *vq;

	ffe_opts_init(&o);
	o.packed = true;
	fe = fx_ready(DEV_A, &o, ffe_default_features(true), 0, 0);
	cr_assert(fe->features & FFE_BIT(FFE_F_RING_EVENT_IDX), "EVENT_IDX not negotiated");
	cr_assert_eq(ffe_vq_start_at(fe, 0, 16, FFE_PACKED_BASE(13, 1)), 0, "%s", fe->err);
	vq = &fe->vq[0];
	ffe_vq_set_call_event(vq, FFE_RING_EVENT_DESC, FFE_PACKED_BASE(1, 0));
	calls_within(vq, 20);
	for (int i = 1; i <= 8; i++) {
		uint16_t at = ffe_vq_pk_avail_pos(vq);
		uint64_t n;

		one_polled(vq, 3300 + i * 8, 0x7200 + i);
		n = calls_within(vq, i == 5 ? 1000 : 50);
		if (i == 5)
			cr_expect_geq(n, 1u, "DESC mode at offset 1 wrap 0: no call when the used "
				      "descriptor at offset %u wrap %u (the %dth) was written", at & 0x7fff,
				      at >> 15, i);
		else
			cr_expect_eq(n, 0u, "DESC mode at offset 1 wrap 0: %" PRIu64 " call(s) after the "
				     "used descriptor at offset %u wrap %u (the %dth)", n, at & 0x7fff,
				     at >> 15, i);
	}
	/* the same offset one lap later (wrap 1 now is 2 laps old: 16 on) */
	ffe_vq_set_call_event(vq, FFE_RING_EVENT_DESC, FFE_PACKED_BASE(4, 1));
	for (int i = 9; i <= 24; i++) {
		uint16_t at = ffe_vq_pk_avail_pos(vq);
		uint64_t n;
		bool want = at == FFE_PACKED_BASE(4, 1);

		one_polled(vq, 3300 + (i % 8) * 8, 0x7200 + i);
		n = calls_within(vq, want ? 1000 : 30);
		if (want)
			cr_expect_geq(n, 1u, "DESC mode at offset 4 wrap 1: no call for it");
		else
			cr_expect_eq(n, 0u, "DESC mode at offset 4 wrap 1: %" PRIu64 " call(s) after the used "
				     "descriptor at offset %u wrap %u", n, at & 0x7fff, at >> 15);
	}
	/* what the device asks of us is a valid mode */
	{
		struct ffe_event_suppress ev = ffe_vq_dev_event(vq);

		cr_expect_neq(ev.flags & 3, 3, "Device Area flags %#x: the reserved value 3", ev.flags);
		cr_log_info("Device Area: flags %#x off_wrap %#x", ev.flags, ev.off_wrap);
	}
	expect_no_bogus(fe, 1, "DESC mode");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(packedevent, automatic_event_idx_under_interrupt_mode)
{
	/* fakefe's own DESC-mode calls and the device's kick suppression,
	 * strict: completions seen only after a call */
	struct ffe *fe = pk_ready(DEV_A, true, 2, 32);
	struct ffe_vq *vq = &fe->vq[0];
	struct ffe_blk_io io[8];
	uint8_t buf[4096];

	vq->strict_calls = true;
	for (unsigned i = 0; i < 240; i += 8) {
		for (unsigned k = 0; k < 8; k++) {
			ffe_pattern(buf, sizeof(buf), i + k);
			cr_assert_eq(ffe_blk_prep(&io[k], FFE_BLK_T_OUT, 2000 + k * 8, buf, sizeof(buf), 0,
						  NULL), 0);
			cr_assert_eq(ffe_submit(vq, &io[k].req), 0);
			if (k % 2 == 0)
				ffe_kick(vq);
		}
		ffe_kick(vq);
		for (unsigned k = 0; k < 8; k++) {
			cr_assert_eq(ffe_wait(vq, &io[k].req, 3000), 0, "request %u: %s (kicks %" PRIu64
				     ", calls %" PRIu64 ")", i + k, fe->err, vq->kicks, vq->calls);
			cr_assert_eq(ffe_blk_status(&io[k]), 0);
			ffe_blk_io_release(vq, &io[k]);
		}
	}
	cr_log_info("240 requests: %" PRIu64 " kicks, %" PRIu64 " calls", vq->kicks, vq->calls);
	expect_no_bogus(fe, 1, "strict calls");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- hostile packed layouts ------------------------------------------------------ */

struct hp {
	struct ffe *fe;
	struct ffe_vq *vq;
	struct ffe_buf hdr, data, st, tbl;
	uint64_t hole_gpa;
};

static void hp_open(struct hp *h, uint32_t type, uint64_t sector, bool inflight)
{
	struct ffe_opts o;
	struct ffe_blk_hdr bh = { .type = type, .sector = sector };

	ffe_opts_init(&o);
	o.nregions = 2;
	o.packed = true;
	o.inflight = inflight;
	h->fe = fx_ready(DEV_A, &o, 0, 2, 128);
	h->vq = &h->fe->vq[1];
	cr_assert(h->vq->packed);
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

/* Descriptors hdr -> data -> status into table t at a, a+1, a+2 (ring
 * flags f on each when t is the ring, id on the last). */
static void pchain3(struct ffe_pdesc *t, struct hp *h, unsigned a, uint16_t f, uint16_t id)
{
	t[a] = (struct ffe_pdesc){ h->hdr.gpa, 16, id, (uint16_t)(f | FFE_DESC_F_NEXT) };
	t[a + 1] = (struct ffe_pdesc){ h->data.gpa, 4096, id, (uint16_t)(f | FFE_DESC_F_NEXT) };
	t[a + 2] = (struct ffe_pdesc){ h->st.gpa, 1, id, (uint16_t)(f | FFE_DESC_F_WRITE) };
}

/* Ring flags making a descriptor available at wrap 1 (a fresh ring). */
#define AV1 FFE_PDESC_F_AVAIL

/* Write a chain of n descriptors at ring offset 0 with its first flags
 * stored last, then kick. */
static void hp_fire_ring(struct hp *h, const struct ffe_pdesc *d, unsigned n)
{
	for (unsigned i = n; i-- > 0;) {
		struct ffe_pdesc *r = ffe_vq_pdesc(h->vq, i);

		r->addr = d[i].addr;
		r->len = d[i].len;
		r->id = d[i].id;
		ffe_vq_pdesc_set_flags(h->vq, i, d[i].flags);
	}
	ffe_vq_pk_advance(h->vq, n);
	ffe_vq_kick_raw(h->vq);
}

/* Until the descriptor at offset 0 is used (0), the back-end hangs up
 * (-EPIPE), or ms pass (-ETIMEDOUT). */
static int hp_wait(struct hp *h, int ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, ms);
	for (;;) {
		struct pollfd p = { .fd = h->fe->sock, .events = POLLRDHUP };

		if (ffe_vq_pk_is_used(h->vq, 0, true, NULL))
			return 0;
		if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			usleep(20000);
			return ffe_vq_pk_is_used(h->vq, 0, true, NULL) ? 0 : -EPIPE;
		}
		if (!ffe_deadline_left(&dl))
			return -ETIMEDOUT;
		usleep(1000);
	}
}

/* The verdict: the request failed (or never completed) unless ok_allowed;
 * the connection answers or is gone; the other queue works if it lives;
 * both devices healthy, and a packed front-end too. */
static void hp_finish(struct hp *h, bool ok_allowed, const char *what)
{
	int r = hp_wait(h, HOSTILE_WAIT_MS);
	uint8_t st = *(uint8_t *)h->st.hva;
	int p;

	if (r == 0) {
		struct ffe_pdesc *d = ffe_vq_pdesc(h->vq, 0);

		cr_log_info("%s: completed, id %u len %u flags %#x status %#x", what, d->id, d->len,
			    d->flags, st);
		if (!ok_allowed)
			cr_expect_neq(st, FFE_BLK_S_OK, "%s: the malformed request completed with status "
				      "OK (used id %u len %u)", what, d->id, d->len);
	} else {
		cr_log_info("%s: no completion (%s), status byte %#x", what,
			    r == -EPIPE ? "connection dropped" : "connection kept", st);
		if (!ok_allowed)
			cr_expect(st == 0xee || st != FFE_BLK_S_OK, "%s: status OK written without a "
				  "used descriptor", what);
	}
	p = ffe_probe(h->fe);
	cr_expect_neq(p, -ETIMEDOUT, "%s: control connection stopped answering", what);
	if (p == 1)
		fx_rw_verify(&h->fe->vq[0], 9000, 8192, 0x8000, NULL);
	ffe_close(h->fe);
	healthy();
	packed_healthy();
}

Test(packedring, wrong_wrap_bits_are_not_available)
{
	/* 2.8.21: the device MUST NOT use a descriptor unless it observes
	 * AVAIL changed; on a fresh ring (wrap 1) only AVAIL=1 USED=0 is
	 * available.  Afterwards a correct request at the same place works. */
	static const struct { uint16_t f; const char *what; } bad[] = {
		{ FFE_PDESC_F_USED, "AVAIL=0 USED=1 (available for wrap 0, not 1)" },
		{ FFE_PDESC_F_AVAIL | FFE_PDESC_F_USED, "AVAIL=1 USED=1 (looks used)" },
		{ 0, "AVAIL=0 USED=0 (the zeroed ring)" },
	};

	for (unsigned v = 0; v < 3; v++) {
		struct hp h;
		struct ffe_pdesc d[3];
		int r;

		struct ffe_pdesc before;
		struct pollfd pf;
		bool touched;

		hp_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR, false);
		pchain3(d, &h, 0, bad[v].f, 0);
		hp_fire_ring(&h, d, 3);
		/* AVAIL=USED=1 already looks used: what tells is whether the
		 * device wrote the descriptor (id, len, flags) or the status */
		before = *ffe_vq_pdesc(h.vq, 0);
		usleep(HOSTILE_WAIT_MS * 1000);
		touched = memcmp(ffe_vq_pdesc(h.vq, 0), &before, sizeof(before)) != 0;
		cr_expect(!touched, "%s: the device wrote descriptor 0 (now flags %#x id %u len %u)",
			  bad[v].what, ffe_vq_pdesc(h.vq, 0)->flags, ffe_vq_pdesc(h.vq, 0)->id,
			  ffe_vq_pdesc(h.vq, 0)->len);
		cr_expect_eq(*(uint8_t *)h.st.hva, 0xee, "%s: status byte written (%#x)", bad[v].what,
			     *(uint8_t *)h.st.hva);
		pf = (struct pollfd){ .fd = h.fe->sock, .events = POLLRDHUP };
		r = poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR)) ? -EPIPE
											   : -ETIMEDOUT;
		cr_expect_eq(r, -ETIMEDOUT, "%s: the back-end dropped the connection for descriptors "
			     "that are simply not available", bad[v].what);
		if (r == -ETIMEDOUT) {
			/* still serving: the same chain made available properly,
			 * to a scratch sector */
			struct ffe_blk_hdr bh = { .type = FFE_BLK_T_OUT, .sector = SCRATCH_SECTOR };

			memcpy(h.hdr.hva, &bh, 16);
			pchain3(d, &h, 0, AV1, 0);
			h.vq->pk_avail = 0;
			hp_fire_ring(&h, d, 3);
			cr_expect_eq(hp_wait(&h, 3000), 0, "%s: a valid request at the same offset "
				     "afterwards was not processed", bad[v].what);
			cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK);
			cr_expect_eq(ffe_vq_pdesc(h.vq, 0)->id, 0);
		}
		ffe_close(h.fe);
		healthy();
	}
	packed_healthy();
}

Test(packedring, wrong_wrap_bits_inside_a_chain)
{
	/* the first descriptor available, the next ones not (2.8.6: flags
	 * must be right in every descriptor of the list) */
	for (unsigned v = 0; v < 2; v++) {
		struct hp h;
		struct ffe_pdesc d[3];

		hp_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR, false);
		pchain3(d, &h, 0, AV1, 0);
		d[v + 1].flags = (uint16_t)((d[v + 1].flags & ~AV1) | FFE_PDESC_F_USED);
		hp_fire_ring(&h, d, 3);
		hp_finish(&h, true, v ? "status descriptor not available" : "data descriptor not available");
	}
}

Test(packedring, buffer_id_out_of_range)
{
	static const uint16_t ids[] = { 128, 0x7fff, 0xffff };

	for (unsigned v = 0; v < 3; v++) {
		struct hp h;
		struct ffe_pdesc d[3];
		char what[96];

		hp_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR, false);
		pchain3(d, &h, 0, AV1, ids[v]);
		hp_fire_ring(&h, d, 3);
		snprintf(what, sizeof(what), "buffer id %#x on a queue of 128", ids[v]);
		hp_finish(&h, false, what);
	}
}

Test(packedring, buffer_id_reused_while_in_flight)
{
	/* two buffers with id 5 made available together (with inflight
	 * tracking, which keys packed entries by id), then one with id 6 */
	struct hp h;
	struct ffe_pdesc d[9];
	struct ffe_buf st2, st3;

	hp_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR, true);
	cr_assert_eq(ffe_alloc(h.fe, 1, 1, 0, &st2), 0);
	cr_assert_eq(ffe_alloc(h.fe, 1, 1, 0, &st3), 0);
	*(uint8_t *)st2.hva = 0xee;
	*(uint8_t *)st3.hva = 0xee;
	pchain3(d, &h, 0, AV1, 5);
	pchain3(d, &h, 3, AV1, 5);
	pchain3(d, &h, 6, AV1, 6);
	d[5].addr = st2.gpa;
	d[8].addr = st3.gpa;
	hp_fire_ring(&h, d, 9);
	usleep(HOSTILE_WAIT_MS * 1000);
	cr_log_info("id 5 twice: statuses %#x %#x, then id 6: %#x; used at 0: %d, at 3: %d, at 6: %d",
		    *(uint8_t *)h.st.hva, *(uint8_t *)st2.hva, *(uint8_t *)st3.hva,
		    ffe_vq_pk_is_used(h.vq, 0, true, NULL), ffe_vq_pk_is_used(h.vq, 3, true, NULL),
		    ffe_vq_pk_is_used(h.vq, 6, true, NULL));
	hp_finish(&h, true, "buffer id 5 made available twice");
}

Test(packedring, descriptor_available_out_of_order)
{
	/* a valid chain at offsets 3..5 while 0..2 are still zero: the device
	 * polls offset 0 and must not take it; once 0..2 are made available,
	 * both are processed, in ring order */
	struct hp h;
	struct ffe_pdesc d[6];
	struct ffe_buf st2;

	hp_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR, false);
	cr_assert_eq(ffe_alloc(h.fe, 1, 1, 0, &st2), 0);
	*(uint8_t *)st2.hva = 0xee;
	pchain3(d, &h, 0, AV1, 1);
	pchain3(d, &h, 3, AV1, 2);
	d[5].addr = st2.gpa;
	for (unsigned i = 6; i-- > 3;) {
		struct ffe_pdesc *r = ffe_vq_pdesc(h.vq, i);

		*r = (struct ffe_pdesc){ d[i].addr, d[i].len, d[i].id, 0 };
		ffe_vq_pdesc_set_flags(h.vq, i, d[i].flags);
	}
	ffe_vq_kick_raw(h.vq);
	usleep(300000);
	cr_expect_eq(*(uint8_t *)st2.hva, 0xee, "a chain at offset 3 was processed while offset 0 "
		     "was never made available (status %#x)", *(uint8_t *)st2.hva);
	cr_expect(!ffe_vq_pk_is_used(h.vq, 0, true, NULL) && !ffe_vq_pk_is_used(h.vq, 3, true, NULL),
		  "used descriptors written for a chain made available out of order");
	hp_fire_ring(&h, d, 3);
	cr_expect_eq(hp_wait(&h, 3000), 0, "offset 0 made available: not processed");
	usleep(100000);
	cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK);
	cr_expect_eq(*(uint8_t *)st2.hva, FFE_BLK_S_OK, "the chain at offset 3 was not processed "
		     "after offset 0 was");
	cr_expect(ffe_vq_pk_is_used(h.vq, 3, true, NULL), "no used descriptor at offset 3 (the "
		  "second buffer's slot in order)");
	hp_finish(&h, true, "descriptors made available out of order");
}

Test(packedring, chain_longer_than_the_queue)
{
	/* every ring descriptor chained with NEXT and available (wrap 1): the
	 * chain would go on past the ring's end, where wrap 1 no longer
	 * counts; and the same in an indirect table of 300 on a 128 queue */
	struct hp h;
	struct ffe_pdesc *d = calloc(128, sizeof(*d));
	struct ffe_buf big;

	hp_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR, false);
	cr_assert_eq(ffe_alloc(h.fe, 126 * 512, 512, 1, &big), 0);
	d[0] = (struct ffe_pdesc){ h.hdr.gpa, 16, 0, AV1 | FFE_DESC_F_NEXT };
	for (unsigned i = 1; i < 128; i++)
		d[i] = (struct ffe_pdesc){ big.gpa + (i - 1) % 126 * 512, 512, 0, AV1 | FFE_DESC_F_NEXT };
	hp_fire_ring(&h, d, 128);
	hp_finish(&h, false, "128 ring descriptors all with NEXT on a 128 queue");
	free(d);

	{
		const unsigned n = 300;
		struct ffe_pdesc *t;
		struct ffe_pdesc ring;

		hp_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR, false);
		cr_assert_eq(ffe_alloc(h.fe, (n - 2) * 512, 512, 1, &big), 0);
		t = h.tbl.hva;
		t[0] = (struct ffe_pdesc){ h.hdr.gpa, 16, 0, 0 };
		for (unsigned i = 1; i < n - 1; i++)
			t[i] = (struct ffe_pdesc){ big.gpa + (i - 1) * 512, 512, 0, 0 };
		t[n - 1] = (struct ffe_pdesc){ h.st.gpa, 1, 0, FFE_DESC_F_WRITE };
		ring = (struct ffe_pdesc){ h.tbl.gpa, n * 16, 0, AV1 | FFE_DESC_F_INDIRECT };
		hp_fire_ring(&h, &ring, 1);
		hp_finish(&h, true, "indirect table of 300 descriptors on a 128 queue");
	}
}

Test(packedring, indirect_malformed)
{
	static const char *what[] = {
		"indirect in indirect", "INDIRECT and NEXT on a ring descriptor (chain after it)",
		"indirect table length 17", "indirect table length 0",
		"indirect table at an unmapped gpa", "indirect table running off its region",
		"indirect table 2^32-16 bytes long", "indirect descriptor in a NEXT chain",
	};

	for (int v = 0; v < 8; v++) {
		struct hp h;
		struct ffe_pdesc *t, ring[4];
		unsigned nring = 1;

		/* case 1 may be served as the table alone (NEXT ignored): not
		 * onto the golden range */
		hp_open(&h, FFE_BLK_T_OUT, v == 1 ? SCRATCH_SECTOR : GOLD_SECTOR, false);
		t = h.tbl.hva;
		pchain3(t, &h, 0, 0, 0);
		/* in a table only WRITE is valid */
		t[0].flags = 0;
		t[1].flags = 0;
		t[2].flags = FFE_DESC_F_WRITE;
		ring[0] = (struct ffe_pdesc){ h.tbl.gpa, 48, 0, AV1 | FFE_DESC_F_INDIRECT };
		switch (v) {
		case 0: {
			/* entry 1 of the table is itself a table holding the data */
			struct ffe_pdesc *inner = (struct ffe_pdesc *)((uint8_t *)h.tbl.hva + 1024);

			inner[0] = (struct ffe_pdesc){ h.data.gpa, 4096, 0, 0 };
			t[1] = (struct ffe_pdesc){ h.tbl.gpa + 1024, 16, 0, FFE_DESC_F_INDIRECT };
			break;
		}
		case 1:
			ring[0].flags |= FFE_DESC_F_NEXT;
			ring[1] = (struct ffe_pdesc){ h.st.gpa, 1, 0, AV1 | FFE_DESC_F_WRITE };
			nring = 2;
			break;
		case 2: ring[0].len = 17; break;
		case 3: ring[0].len = 0; break;
		case 4: ring[0].addr = 0xdead00000000ull; break;
		case 5: {
			uint8_t *end = h.fe->r[1].hva + h.fe->r[1].size - 48;

			memcpy(end, t, 48);
			ring[0].addr = h.fe->r[1].gpa + h.fe->r[1].size - 48;
			ring[0].len = 4096;
			break;
		}
		case 6: ring[0].len = 0xfffffff0u; break;
		case 7:
			/* header in the ring, then an indirect descriptor for the
			 * rest (a driver MUST NOT put INDIRECT in a NEXT list) */
			ring[0] = (struct ffe_pdesc){ h.hdr.gpa, 16, 0, AV1 | FFE_DESC_F_NEXT };
			ring[1] = (struct ffe_pdesc){ h.tbl.gpa + 16, 32, 0, AV1 | FFE_DESC_F_INDIRECT };
			nring = 2;
			break;
		}
		hp_fire_ring(&h, ring, nring);
		/* the whole table is in memory in case 5: it may be served */
		hp_finish(&h, v == 1 || v == 5, what[v]);
	}
}

Test(packedring, addresses_outside_memory)
{
	static const char *what[] = {
		"data at an unmapped gpa", "data in the hole between regions",
		"data running off the end of region 0", "data addr+len wrapping 2^64",
		"data len 0xffffffff", "header at an unmapped gpa", "status in the hole",
	};

	for (int v = 0; v < 7; v++) {
		struct hp h;
		struct ffe_pdesc d[3];

		hp_open(&h, v == 0 || v == 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT, GOLD_SECTOR, false);
		pchain3(d, &h, 0, AV1, 0);
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
		hp_fire_ring(&h, d, 3);
		hp_finish(&h, false, what[v]);
	}
}

Test(packedring, rings_outside_memory)
{
	static const char *what[] = {
		"descriptor ring at an unmapped uva", "driver area off the end of memory",
		"device area misaligned by 2 and off the end", "descriptor ring straddling the end of region 0",
	};

	for (int v = 0; v < 4; v++) {
		struct ffe_opts o;
		struct ffe *fe;
		struct ffe_vq *vq;
		struct ffe_vring_addr ad;
		uint64_t end;
		enum outcome oc;

		ffe_opts_init(&o);
		o.packed = true;
		fe = fx_ready(DEV_A, &o, 0, 2, 128);
		vq = &fe->vq[1];
		end = fe->r[0].uva + fe->r[0].size;
		ad = (struct ffe_vring_addr){ .index = 1, .desc = vq->desc_uva, .used = vq->used_uva,
					      .avail = vq->avail_uva };
		switch (v) {
		case 0: ad.desc = 0x1000; break;
		case 1: ad.avail = end - 2; break;
		case 2: ad.used = end - 2; break;
		case 3: ad.desc = end - 16 * 64; break;
		}
		oc = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(ad), &ad, sizeof(ad), NULL, 0, NULL);
		cr_log_info("%s: %s", what[v], oname(oc));
		EXPECT_REFUSED(oc, "%s: the back-end %s", what[v], oname(oc));
		if (oc != O_DROPPED) {
			struct ffe_blk_io io;

			cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, SCRATCH_SECTOR, fe->r[0].hva, 4096, 0,
						  NULL), 0);
			if (ffe_submit(vq, &io.req) == 0)
				ffe_vq_kick_raw(vq);
			usleep(200000);
			ffe_blk_io_release(vq, &io);
		}
		finish(fe, oc, what[v]);
	}
	packed_healthy();
}

/* ---- the dirty log on packed rings ------------------------------------------------ */

/* With VHOST_F_LOG_ALL the device marks every page it writes.  On a packed
 * ring it writes used descriptors INTO the descriptor ring (and the Device
 * Area), not into a used ring at SET_VRING_ADDR's log address (QEMU gives
 * the Device Area's gpa there): a device that logs "the used ring" by that
 * address misses the descriptor ring's pages, and after a migration the
 * destination guest never sees those completions. */
static struct ffe *packed_log_fe(unsigned nq, unsigned qsize, bool inflight)
{
	struct ffe_opts o;
	struct ffe *fe;
	int r;

	ffe_opts_init(&o);
	o.mem_size = 256 * MiB;
	o.nregions = 2;
	o.translate = true;
	o.scratch_per_queue = 16 * MiB;
	o.extra_protocol_features = FFE_BIT(FFE_PF_LOG_SHMFD);
	o.packed = true;
	o.inflight = inflight;
	fe = fx_ready(DEV_A, &o, ffe_default_features(true), nq, qsize);
	cr_assert(fe->vq[0].packed);
	cr_assert(fe->dev_features & FFE_BIT(FFE_F_LOG_ALL), "LOG_ALL not offered");
	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_LOG_SHMFD), "LOG_SHMFD not offered");
	r = ffe_set_log_base(fe, NULL);
	cr_assert_eq(r, 0, "SET_LOG_BASE: %d (%s)", r, fe->err);
	r = ffe_log_start(fe, nq);
	cr_assert_eq(r, 0, "logging on: %d (%s)", r, fe->err);
	return fe;
}

/* gpa of the descriptor a request's used descriptor was written in */
static uint64_t used_desc_gpa(const struct ffe_vq *vq, const struct ffe_req *r)
{
	return vq->desc_gpa + 16ull * (r->used_idx & 0x7fff);
}

Test(packed, dirty_log_marks_used_descriptors_and_buffers)
{
	struct ffe *fe = packed_log_fe(2, 64, false);
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 0, false }, { FFE_L_NATURAL, 1024, true }, { FFE_L_MERGED, 0, false },
		{ FFE_L_CHOPPED, 1000, false },
	};
	struct ffe_blk_io *io = calloc(2 * 16, sizeof(*io));
	struct ffe_seg (*seg)[FFE_MAX_DESCS + 1] = calloc(2 * 16, sizeof(*seg));
	int *nseg = calloc(2 * 16, sizeof(int));
	unsigned miss_ring = 0, miss_data = 0, stray = 0, n = 0;
	uint8_t w[8192];

	ffe_pattern(w, sizeof(w), 0xd1);
	fx_write_ok(&fe->vq[0], 24576, w, sizeof(w), NULL);
	for (unsigned b = 0; b < 12; b++) {          /* 12 batches of 16 on each queue: laps */
		ffe_log_clear(fe->log);
		for (unsigned q = 0; q < 2; q++) {
			for (unsigned k = 0; k < 16; k++) {
				unsigned i = q * 16 + k;

				cr_assert_eq(ffe_blk_prep(&io[i], FFE_BLK_T_IN, 24576, NULL, 0,
							  512u << (k % 5), &lays[(k + b) % 4]), 0);
				cr_assert_eq(ffe_submit(&fe->vq[q], &io[i].req), 0, "%s", fe->err);
				nseg[i] = ffe_req_segs(&fe->vq[q], &io[i].req, seg[i], FFE_MAX_DESCS + 1);
				cr_assert_gt(nseg[i], 0);
			}
			ffe_kick(&fe->vq[q]);
		}
		for (unsigned q = 0; q < 2; q++) {
			struct ffe_vq *vq = &fe->vq[q];

			for (unsigned k = 0; k < 16; k++) {
				unsigned i = q * 16 + k;
				uint64_t ug;

				cr_assert_eq(ffe_wait(vq, &io[i].req, -1), 0, "%s", fe->err);
				cr_assert_eq(ffe_blk_status(&io[i]), 0);
				ug = used_desc_gpa(vq, &io[i].req);
				if (!ffe_log_all_set(fe->log, ug, 16) && miss_ring++ < 3)
					cr_expect_fail("batch %u q%u request %u: its used descriptor at ring "
						       "offset %u (gpa 0x%" PRIx64 ", page 0x%" PRIx64 ") is "
						       "not marked in the dirty log", b, q, k,
						       io[i].req.used_idx & 0x7fff, ug, ffe_page_first(ug));
				for (int s = 0; s < nseg[i]; s++)
					if (seg[i][s].kind == FFE_SEG_WR &&
					    !ffe_log_all_set(fe->log, seg[i][s].gpa, seg[i][s].len) &&
					    miss_data++ < 3)
						cr_expect_fail("batch %u q%u request %u: writable buffer %d "
							       "(gpa 0x%" PRIx64 ", %u bytes) not marked", b, q,
							       k, s, seg[i][s].gpa, seg[i][s].len);
				n++;
			}
		}
		/* every marked page is one the device wrote: a writable buffer,
		 * a descriptor ring or a Device Area */
		for (uint64_t pg = ffe_log_next(fe->log, 0); pg != UINT64_MAX;
		     pg = ffe_log_next(fe->log, pg + 1)) {
			bool known = false;

			for (unsigned q = 0; q < 2 && !known; q++) {
				struct ffe_vq *vq = &fe->vq[q];

				known = (pg >= ffe_page_first(vq->desc_gpa) &&
					 pg <= ffe_page_last(vq->desc_gpa, 16ull * vq->num)) ||
					pg == ffe_page_first(vq->used_gpa);
			}
			for (unsigned i = 0; i < 32 && !known; i++)
				for (int s = 0; s < nseg[i] && !known; s++)
					known = seg[i][s].kind == FFE_SEG_WR &&
						pg >= ffe_page_first(seg[i][s].gpa) &&
						pg <= ffe_page_last(seg[i][s].gpa, seg[i][s].len);
			if (!known && stray++ < 3)
				cr_expect_fail("batch %u: page 0x%" PRIx64 " marked: no buffer the device "
					       "wrote, no ring of ours lies there", b, pg);
		}
		for (unsigned i = 0; i < 32; i++)
			ffe_blk_io_release(&fe->vq[i / 16], &io[i]);
	}
	cr_log_info("%u requests on packed rings under LOG_ALL: %u used descriptors and %u "
		    "buffers found unmarked, %u stray pages", n, miss_ring, miss_data, stray);
	cr_expect_eq(miss_ring, 0u, "%u of %u used descriptors written into the descriptor ring "
		     "without marking its page", miss_ring, n);
	cr_expect_eq(miss_data, 0u, "%u writable buffers not marked", miss_data);
	expect_no_bogus(fe, 2, "dirty log");
	free(io);
	free(seg);
	free(nseg);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* How long (us, up to 100 ms) until [gpa, gpa+len) is all marked. */
static uint64_t late_mark(const struct ffe_log *l, uint64_t gpa, uint64_t len)
{
	int64_t t0 = ffe_now_ms();
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	while (!ffe_log_all_set(l, gpa, len) && ffe_now_ms() - t0 < 100)
		;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (uint64_t)((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000);
}

Test(packed, dirty_log_buffers_marked_before_the_used_flags)
{
	/* one request at a time, the log cleared before each; the instant the
	 * used descriptor's flags show it used, the buffer's pages must be
	 * marked already, and the ring page at once after (with an inflight
	 * region, as QEMU has) */
	struct ffe *fe = packed_log_fe(1, 128, true);
	struct ffe_vq *vq = &fe->vq[0];
	unsigned n = 0, miss_ring = 0, late_ring = 0, miss_data = 0;
	int64_t t0 = ffe_now_ms();
	char first[256] = "";

	for (; n < 5000 && ffe_now_ms() - t0 < 5000; n++) {
		struct ffe_blk_io io;
		struct ffe_seg seg[4];
		uint64_t c = vq->pk_avail;
		unsigned off = (unsigned)(c % vq->num);
		bool w = !((c / vq->num) & 1), data_ok = true;
		int ns;

		cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_IN, 24576 + (n % 64) * 8, NULL, 0, 4096, NULL), 0);
		ffe_log_clear(fe->log);
		cr_assert_eq(ffe_submit(vq, &io.req), 0);
		ns = ffe_req_segs(vq, &io.req, seg, 4);
		ffe_vq_kick_raw(vq);
		while (!ffe_vq_pk_is_used(vq, off, w, NULL))
			if (ffe_now_ms() - t0 > 20000)
				cr_assert_fail("request %u never completed", n);
		for (int s = 0; s < ns; s++)
			if (seg[s].kind == FFE_SEG_WR && !ffe_log_all_set(fe->log, seg[s].gpa, seg[s].len)) {
				if (data_ok && !miss_data)
					snprintf(first, sizeof(first), "request %u: writable buffer %d "
						 "(gpa 0x%" PRIx64 ", %u bytes) unmarked as the used "
						 "descriptor at offset %u showed; marked %" PRIu64 " us later",
						 n, s, seg[s].gpa, seg[s].len, off,
						 late_mark(fe->log, seg[s].gpa, seg[s].len));
				data_ok = false;
			}
		/* the ring page may be marked right after the flags (a write is
		 * recorded after it is made, as vhost does for used->idx), but it
		 * must be */
		if (!ffe_log_all_set(fe->log, vq->desc_gpa + 16ull * off, 16)) {
			late_ring++;
			if (late_mark(fe->log, vq->desc_gpa + 16ull * off, 16) >= 100000)
				miss_ring++;
		}
		if (!data_ok)
			miss_data++;
		cr_assert_eq(ffe_wait(vq, &io.req, -1), 0);
		ffe_blk_io_release(vq, &io);
	}
	cr_log_info("%u requests: descriptor ring page unmarked as the used flags showed %u "
		    "times (never marked %u), buffers %u times", n, late_ring, miss_ring, miss_data);
	cr_expect_eq(miss_ring, 0u, "%u of %u: a used descriptor's ring page never marked",
		     miss_ring, n);
	cr_expect_eq(miss_data, 0u, "%u of %u: a completion visible before its buffer's pages "
		     "were marked; first: %s", miss_data, n, first);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- reserved bits the device ignores ----------------------------------------------- */

Test(packedring, reserved_bits_in_indirect_descriptors_are_ignored)
{
	/* 2.8.7: in a descriptor with INDIRECT, WRITE is reserved and ignored
	 * by the device; in a table, WRITE is the only valid flag, the others
	 * are reserved and ignored, and so is the buffer id.  A request using
	 * them (correct otherwise) must be served like any other. */
	static const char *what[] = { "INDIRECT|WRITE on the ring descriptor",
				      "NEXT and ids set in the table's entries" };

	for (unsigned v = 0; v < 2; v++) {
		struct hp h;
		struct ffe_pdesc *t, ring;
		uint8_t *b = malloc(4096);
		int r;

		hp_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR + v * 8, false);
		ffe_pattern(h.data.hva, 4096, 0xa000 + v);
		t = h.tbl.hva;
		t[0] = (struct ffe_pdesc){ h.hdr.gpa, 16, 0, 0 };
		t[1] = (struct ffe_pdesc){ h.data.gpa, 4096, 0, 0 };
		t[2] = (struct ffe_pdesc){ h.st.gpa, 1, 0, FFE_DESC_F_WRITE };
		ring = (struct ffe_pdesc){ h.tbl.gpa, 48, 7, AV1 | FFE_DESC_F_INDIRECT };
		if (v == 0) {
			ring.flags |= FFE_DESC_F_WRITE;
		} else {
			t[0].flags |= FFE_DESC_F_NEXT;
			t[1].flags |= FFE_DESC_F_NEXT;
			t[0].id = 0x1234;
			t[1].id = 99;
			t[2].id = 0xffff;
		}
		hp_fire_ring(&h, &ring, 1);
		r = hp_wait(&h, 3000);
		cr_expect_eq(r, 0, "%s: not served (%s)", what[v], r == -EPIPE ? "connection dropped" :
			     "no completion");
		if (r == 0) {
			cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "%s: status %#x", what[v],
				     *(uint8_t *)h.st.hva);
			cr_expect_eq(ffe_vq_pdesc(h.vq, 0)->id, 7, "%s: used id %u, the ring "
				     "descriptor's is 7", what[v], ffe_vq_pdesc(h.vq, 0)->id);
			fx_read_ok(&h.fe->vq[0], SCRATCH_SECTOR + v * 8, b, 4096, NULL);
			fx_check_pattern(b, 4096, 0xa000 + v, what[v]);
		}
		free(b);
		ffe_close(h.fe);
	}
	healthy();
	packed_healthy();
}

Test(packedring, vring_base_beyond_the_ring)
{
	/* a stopped packed ring restarted with SET_VRING_BASE naming an offset
	 * past the ring's end (bits 0-14 >= num), either wrap bit, or with
	 * the high half set: the base or the start (ADDR, KICK, ENABLE) is
	 * refused, or the connection dropped; a ring that runs from there
	 * must not take the request made available at offset 0 */
	static const uint32_t bases[] = { 128, 0x8000 | 128, 0x7fff, 0xffff, 0xffff8000u };

	for (unsigned v = 0; v < sizeof(bases) / sizeof(bases[0]); v++) {
		struct ffe_opts o;
		struct ffe *fe;
		struct ffe_vq *vq;
		struct ffe_vring_state st = { 1, bases[v] };
		enum outcome oc[4];
		uint64_t kv = 1;
		char what[96];
		bool refused;

		ffe_opts_init(&o);
		o.packed = true;
		fe = fx_ready(DEV_A, &o, 0, 2, 128);
		vq = &fe->vq[1];
		cr_assert_eq(ffe_vq_stop(fe, 1, NULL), 0, "%s", fe->err);
		snprintf(what, sizeof(what), "SET_VRING_BASE %#x on a 128-entry packed ring", bases[v]);
		oc[0] = xmit(fe, FFE_SET_VRING_BASE, 0, 8, &st, 8, NULL, 0, NULL);
		oc[1] = oc[2] = oc[3] = O_DROPPED;
		if (oc[0] != O_DROPPED) {
			struct ffe_vring_addr a = { .index = 1, .desc = vq->desc_uva,
						    .used = vq->used_uva, .avail = vq->avail_uva };

			oc[1] = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(a), &a, sizeof(a), NULL, 0, NULL);
			if (oc[1] != O_DROPPED)
				oc[2] = xmit(fe, FFE_SET_VRING_KICK, 0, 8, &kv, 8, &vq->kickfd, 1, NULL);
			if (oc[2] != O_DROPPED)
				oc[3] = xmit(fe, FFE_SET_VRING_ENABLE, 0, 8,
					     &(struct ffe_vring_state){ 1, 1 }, 8, NULL, 0, NULL);
		}
		refused = false;
		for (int k = 0; k < 4; k++)
			refused |= oc[k] == O_NACK || oc[k] == O_DROPPED;
		cr_log_info("%s: base %s, addr %s, kick %s, enable %s", what, oname(oc[0]),
			    oname(oc[1]), oname(oc[2]), oname(oc[3]));
		if (!refused) {
			/* it runs: from where?  A request at offset 0 must not be taken
			 * from a ring told to start past its end */
			struct ffe_blk_io io;

			cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, SCRATCH_SECTOR, fe->r[0].hva, 4096,
						  0, NULL), 0);
			vq->pk_avail = 0;
			if (ffe_submit(vq, &io.req) == 0)
				ffe_vq_kick_raw(vq);
			usleep(200000);
			cr_log_info("%s: accepted; a request at offset 0 then %s", what,
				    ffe_vq_pk_is_used(vq, 0, true, NULL) ? "completed" : "waits");
			ffe_blk_io_release(vq, &io);
		}
		cr_expect(refused || bases[v] == 0xffff8000u, "%s: base, ring address, kick and enable "
			  "all accepted", what);
		finish(fe, oc[3] == O_DROPPED ? O_DROPPED : O_ACK0, what);
	}
	packed_healthy();
}

Test(packed, close_with_requests_in_flight)
{
	/* 4 queues with QD32 each in flight, then the connection goes: the
	 * device must not touch anything of it afterwards, and serve anew */
	for (int round = 0; round < 3; round++) {
		struct ffe *fe = pk_ready(DEV_A, round & 1, A_QUEUES, 64);
		static struct ffe_blk_io io[A_QUEUES][16];
		uint8_t w[4096];

		for (unsigned q = 0; q < A_QUEUES; q++) {
			for (unsigned k = 0; k < 16; k++) {
				ffe_pattern(w, sizeof(w), round * 100 + k);
				cr_assert_eq(ffe_blk_prep(&io[q][k], k % 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT,
							  SCRATCH_SECTOR + (q * 16 + k) * 8, k % 2 ? NULL : w,
							  k % 2 ? 0 : 4096, k % 2 ? 4096 : 0, NULL), 0);
				cr_assert_eq(ffe_submit(&fe->vq[q], &io[q][k].req), 0);
			}
			ffe_kick(&fe->vq[q]);
		}
		if (round == 2)
			usleep(1000);
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
		for (unsigned q = 0; q < A_QUEUES; q++)
			for (unsigned k = 0; k < 16; k++)
				ffe_blk_io_release(NULL, &io[q][k]);
	}
	healthy();
	packed_healthy();
}

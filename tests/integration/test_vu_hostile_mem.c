/* Integration suite `badmsg`, part 2: hostile memory tables (regions
 * beyond their fd, overflowing or overlapping, lying counts, missing or
 * stray fds) and hostile inflight regions (bad shapes, lying sizes,
 * GET_INFLIGHT_FD while the rings run).  Each test ends with healthy().
 * The fixture and message helpers: vu_fixture.h. */
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

/* ---- hostile memory tables ---------------------------------------------------- */

static enum outcome send_table(struct ffe *fe, uint32_t nregions_field, const struct ffe_mem_region *r,
			       unsigned nr, const int *fds, unsigned nfds, uint32_t size_override)
{
	uint8_t buf[8 + 16 * sizeof(struct ffe_mem_region)];
	uint32_t size = 8 + nr * sizeof(*r);

	memset(buf, 0, sizeof(buf));
	memcpy(buf, &nregions_field, 4);
	memcpy(buf + 8, r, nr * sizeof(*r));
	if (size_override)
		size = size_override;
	return xmit(fe, FFE_SET_MEM_TABLE, 0, size, buf, size, fds, nfds, NULL);
}

/* If a dubious table was accepted, use it: rings in the real memory, a
 * request whose data lies at data_gpa.  Must fail safely, not crash. */
static void use_table(struct ffe *fe, uint64_t data_gpa, bool ok_allowed, const char *what)
{
	struct ffe_vq *vq;
	struct ffe_buf h, st;
	struct ffe_blk_hdr hdr = { .type = FFE_BLK_T_IN, .sector = 0 };
	int r = ffe_vq_start(fe, 0, 64);

	if (r != 0) {
		cr_log_info("%s: ring start after it refused (%d)", what, r);
		return;
	}
	vq = &fe->vq[0];
	cr_assert_eq(ffe_alloc(fe, 16, 16, 0, &h), 0);
	cr_assert_eq(ffe_alloc(fe, 1, 1, 0, &st), 0);
	memcpy(h.hva, &hdr, 16);
	*(uint8_t *)st.hva = 0xee;
	*ffe_vq_desc(vq, 0) = (struct ffe_desc){ h.gpa, 16, FFE_DESC_F_NEXT, 1 };
	*ffe_vq_desc(vq, 1) = (struct ffe_desc){ data_gpa, 4096, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 2 };
	*ffe_vq_desc(vq, 2) = (struct ffe_desc){ st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	ffe_vq_publish(vq, 0);
	ffe_vq_kick_raw(vq);
	if (ffe_vq_wait_used_change(vq, 0, HOSTILE_WAIT_MS) == 0 && !ok_allowed)
		cr_expect_neq(*(uint8_t *)st.hva, FFE_BLK_S_OK,
			      "%s: a read into memory beyond the region's file completed OK", what);
}

Test(badmsg, mem_table_region_beyond_fd)
{
	/* the region claims more bytes than the file has: mapping it "works",
	 * touching it would SIGBUS the daemon */
	static const struct { uint64_t size, off; const char *what; } v[] = {
		{ 1024 * MiB, 0, "region of 1 GiB on a 64 MiB memfd" },
		{ 64 * MiB, 1024 * MiB, "mmap_offset 1 GiB past the end of a 64 MiB memfd" },
		{ 64 * MiB, 32 * MiB, "region running 32 MiB past the end of its memfd" },
	};

	for (unsigned i = 0; i < 3; i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		struct ffe_mem_region r = { .gpa = 0, .size = v[i].size,
					    .uva = fe->r[0].uva, .mmap_offset = v[i].off };
		enum outcome o = send_table(fe, 1, &r, 1, &fe->r[0].fd, 1, 0);

		cr_log_info("%s: %s", v[i].what, oname(o));
		cr_expect(o == O_NACK || o == O_DROPPED || o == O_ACK0, "%s: backend %s", v[i].what, oname(o));
		if (o == O_ACK0)
			use_table(fe, v[i].off ? 16 * MiB : 512 * MiB, false, v[i].what);
		finish(fe, o, v[i].what);
	}
}

Test(badmsg, mem_table_overflowing_fields)
{
	static const struct { uint64_t gpa, size, uva, off; const char *what; } v[] = {
		{ 0, 64 * MiB, 0, UINT64_MAX - 4095, "mmap_offset near 2^64" },
		{ UINT64_MAX - 4095, 64 * MiB, 0, 0, "gpa + size wrapping" },
		{ 0, 64 * MiB, UINT64_MAX - 4095, 0, "uva + size wrapping" },
		{ 0, 0, 0, 0, "region of size 0" },
		{ 0, UINT64_MAX, 0, 0, "region of size 2^64-1" },
		{ 0, 64 * MiB, 0, 4095, "unaligned mmap_offset" },
	};

	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		struct ffe_mem_region r = { v[i].gpa, v[i].size, v[i].uva ? v[i].uva : fe->r[0].uva, v[i].off };
		enum outcome o = send_table(fe, 1, &r, 1, &fe->r[0].fd, 1, 0);

		cr_log_info("%s: %s", v[i].what, oname(o));
		if (i < 5)
			EXPECT_REFUSED(o, "SET_MEM_TABLE with %s: backend %s", v[i].what, oname(o));
		else
			cr_expect_neq(o, O_HANG);
		finish(fe, o, v[i].what);
	}
}

Test(badmsg, mem_table_overlapping_regions)
{
	struct ffe *fe = fx_negotiated(DEV_A);
	struct ffe_mem_region r[2] = {
		{ 0, 32 * MiB, fe->r[0].uva, 0 },
		{ 16 * MiB, 32 * MiB, fe->r[0].uva + 64 * MiB, 0 },
	};
	int fds[2] = { fe->r[0].fd, fe->r[0].fd };
	enum outcome o = send_table(fe, 2, r, 2, fds, 2, 0);

	cr_log_info("overlapping gpa regions: %s", oname(o));
	cr_expect_neq(o, O_HANG);
	if (o == O_ACK0)
		use_table(fe, 20 * MiB, true, "overlapping regions");
	finish(fe, o, "overlapping regions");
}

Test(badmsg, mem_table_lying_count_and_missing_fds)
{
	struct {
		uint32_t nfield;
		unsigned nr, nfds;
		uint32_t size;
		const char *what;
	} v[] = {
		{ 8, 1, 1, 0, "nregions 8 with one region in the payload" },
		{ 2, 1, 1, 0, "nregions 2 with one region in the payload" },
		{ 9, 9, 9, 0, "9 regions (more than 8)" },
		{ 0xffffffffu, 8, 8, 0, "nregions 0xffffffff" },
		{ 2, 2, 1, 0, "2 regions, 1 fd" },
		{ 1, 1, 0, 0, "1 region, no fd" },
		{ 3, 3, 2, 0, "3 regions, 2 fds" },
		{ 1, 1, 1, 8 + 32 + 8, "size field larger than the regions" },
		{ 0, 0, 0, 0, "0 regions" },
	};

	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		struct ffe_mem_region r[10];
		int fds[10];
		enum outcome o;

		for (unsigned k = 0; k < 10; k++) {
			r[k] = (struct ffe_mem_region){ k * 4 * MiB, 4 * MiB, fe->r[0].uva + k * 4 * MiB, k * 4 * MiB };
			fds[k] = fe->r[0].fd;
		}
		o = send_table(fe, v[i].nfield, r, v[i].nr, fds, v[i].nfds, v[i].size);
		cr_log_info("%s: %s", v[i].what, oname(o));
		if (i < 7)
			EXPECT_REFUSED(o, "SET_MEM_TABLE with %s: backend %s", v[i].what, oname(o));
		else
			cr_expect_neq(o, O_HANG, "%s: %s", v[i].what, oname(o));
		finish(fe, o, v[i].what);
	}
}

Test(badmsg, mem_table_fd_not_mappable)
{
	struct ffe *fe = fx_negotiated(DEV_A);
	int efd = eventfd(0, EFD_CLOEXEC);
	struct ffe_mem_region r = { 0, 64 * MiB, fe->r[0].uva, 0 };
	enum outcome o = send_table(fe, 1, &r, 1, &efd, 1, 0);

	close(efd);
	EXPECT_REFUSED(o, "SET_MEM_TABLE with an eventfd as the region fd: backend %s", oname(o));
	finish(fe, o, "unmappable fd");
}

Test(badmsg, stray_fds_and_unoffered_features)
{
	struct ffe *fe = fx_negotiated(DEV_A);
	int efd[4];
	uint64_t f = fe->features | (1ull << 60);
	enum outcome o;

	for (int i = 0; i < 4; i++)
		efd[i] = eventfd(0, EFD_CLOEXEC);
	o = xmit(fe, FFE_GET_FEATURES, FFE_FLAG_VERSION, 0, NULL, 0, efd, 4, NULL);
	cr_log_info("GET_FEATURES carrying 4 fds: %s", oname(o));
	cr_expect(o == O_REPLY || o == O_DROPPED, "GET_FEATURES with fds: %s", oname(o));
	if (o != O_DROPPED) {
		o = xmit(fe, FFE_SET_FEATURES, 0, 8, &f, 8, NULL, 0, NULL);
		cr_log_info("SET_FEATURES with unoffered bit 60: %s", oname(o));
		cr_expect_neq(o, O_HANG);
	}
	for (int i = 0; i < 4; i++)
		close(efd[i]);
	finish(fe, o, "stray fds / unoffered features");
}

Test(badmsg, inflight_bad_shape)
{
	/* GET_INFLIGHT_FD for no queue, more queues than any device has, queue
	 * sizes beyond 1024, and payloads of the wrong size: refused, no fd */
	static const struct { uint16_t nq, qs; uint32_t size; const char *what; } v[] = {
		{ 0, 128, 24, "0 queues" },
		{ 65, 128, 24, "65 queues" },
		{ 0xffff, 128, 24, "65535 queues" },
		{ 4, 0, 24, "queue size 0" },
		{ 4, 1025, 24, "queue size 1025" },
		{ 4, 32768, 24, "queue size 32768" },
		{ 0xffff, 0xffff, 24, "65535 queues of 65535" },
		{ 4, 128, 8, "an 8-byte payload" },
		{ 4, 128, 19, "a 19-byte payload" },
		{ 4, 128, 0, "no payload" },
		{ 4, 128, 64, "a 64-byte payload" },
	};

	for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		for (int nr = 0; nr < 2; nr++) {
			uint8_t p[64] = { 0 };
			struct ffe_inflight_msg in = { .num_queues = v[i].nq, .queue_size = v[i].qs };
			struct ffe *fe = fx_negotiated(DEV_A);
			uint64_t msize;
			enum outcome o;
			char what[96];
			int fd;

			memcpy(p, &in, sizeof(in));
			o = get_inflight_raw(fe, v[i].size, p, nr, &fd, &msize);
			snprintf(what, sizeof(what), "GET_INFLIGHT_FD with %s%s", v[i].what,
				 nr ? " (NEED_REPLY)" : "");
			cr_log_info("%s: %s", what, oname(o));
			EXPECT_REFUSED(o, "%s: backend %s (mmap_size %" PRIu64 ")", what, oname(o), msize);
			if (fd >= 0)
				close(fd);
			finish(fe, o, what);
		}
	}
}

/* SET_INFLIGHT_FD by hand */
static enum outcome set_inflight_raw(struct ffe *fe, uint64_t msize, uint64_t moff, uint16_t nq,
				     uint16_t qs, const int *fds, unsigned nfds)
{
	struct ffe_inflight_msg in = { .mmap_size = msize, .mmap_offset = moff, .num_queues = nq,
				       .queue_size = qs };

	return xmit(fe, FFE_SET_INFLIGHT_FD, 0, sizeof(in), &in, sizeof(in), fds, nfds, NULL);
}

Test(badmsg, inflight_region_lies)
{
	/* SET_INFLIGHT_FD whose region does not fit its fd or its own shape */
	const size_t need = 2 * ffe_inflight_queue_size(128);
	enum { TINY, HUGE_SIZE, HUGE_OFF, WRAP, SHORT, BAD_SHAPE, NO_FD, TWO_FDS, EVENTFD,
	       UNALIGNED_OFF, DIRECTORY, READ_ONLY, PAST_END, NCASES };
	static const char *what[] = {
		"a 100-byte memfd for 2 queues of 128", "mmap_size 2^62", "mmap_offset 2^64-4096",
		"mmap_offset + mmap_size wrapping 2^64", "mmap_size smaller than 2 queues of 128",
		"65535 queues of 0", "no fd", "two fds", "an eventfd", "mmap_offset 100",
		"a directory fd", "a read-only fd", "mmap_offset 4096 on a file of exactly mmap_size",
	};

	for (unsigned c = 0; c < NCASES; c++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 128);
		int fds[2] = { -1, -1 }, nfds = 1;
		uint64_t msize = need, moff = 0;
		uint16_t nq = 2, qs = 128;
		enum outcome o;

		switch (c) {
		case TINY: fds[0] = memfd_of(100); break;
		case HUGE_SIZE: fds[0] = memfd_of(need); msize = 1ull << 62; break;
		case HUGE_OFF: fds[0] = memfd_of(need); moff = UINT64_MAX - 4095; break;
		case WRAP: fds[0] = memfd_of(need); moff = 1ull << 63; msize = (1ull << 63) + 4096; break;
		case SHORT: fds[0] = memfd_of(need); msize = need - 64; break;
		case BAD_SHAPE: fds[0] = memfd_of(need); nq = 0xffff; qs = 0; break;
		case NO_FD: nfds = 0; break;
		case TWO_FDS: fds[0] = memfd_of(need); fds[1] = memfd_of(need); nfds = 2; break;
		case EVENTFD: fds[0] = eventfd(0, EFD_CLOEXEC); break;
		case UNALIGNED_OFF: fds[0] = memfd_of(need + 4096); moff = 100; break;
		case DIRECTORY: fds[0] = open(fx.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); break;
		case READ_ONLY: {
			int w = memfd_of(need);
			char p[64];

			snprintf(p, sizeof(p), "/proc/self/fd/%d", w);
			fds[0] = open(p, O_RDONLY | O_CLOEXEC);
			close(w);
			break;
		}
		case PAST_END: fds[0] = memfd_of(need); moff = 4096; break;
		}
		o = set_inflight_raw(fe, msize, moff, nq, qs, fds, (unsigned)nfds);
		for (int k = 0; k < 2; k++)
			if (fds[k] >= 0)
				close(fds[k]);
		cr_log_info("SET_INFLIGHT_FD with %s: %s", what[c], oname(o));
		EXPECT_REFUSED(o, "SET_INFLIGHT_FD with %s: backend %s", what[c], oname(o));
		if (o == O_NACK) {
			/* the connection goes on with its rings untouched */
			fx_rw_verify(&fe->vq[1], 7300, 4096, 7300 + c, NULL);
		}
		finish(fe, o, what[c]);
	}
}

struct pusher {
	struct ffe_vq *vq;
	atomic_bool stop;
	unsigned done;
	char err[256];
};

/* batches of 32 writes per kick: keeps the engine inside its ring loop */
static void *pusher_worker(void *arg)
{
	struct pusher *p = arg;
	static uint8_t buf[4][4096];
	struct ffe_blk_io *io = calloc(32, sizeof(*io));

	while (!p->stop && !p->err[0]) {
		unsigned n = 0;

		for (unsigned k = 0; k < 32; k++, n++)
			if (ffe_blk_prep(&io[k], FFE_BLK_T_OUT,
					 SCRATCH_SECTOR + 256 + p->vq->index * 256 + k * 8,
					 buf[p->vq->index % 4], 4096, 0, NULL) < 0 ||
			    ffe_submit(p->vq, &io[k].req) < 0) {
				snprintf(p->err, sizeof(p->err), "q%u: submit failed", p->vq->index);
				break;
			}
		ffe_kick(p->vq);
		for (unsigned k = 0; k < n; k++) {
			if (!p->err[0] && ffe_wait(p->vq, &io[k].req, 3000) < 0)
				snprintf(p->err, sizeof(p->err), "q%u: %.200s", p->vq->index, p->vq->fe->err);
			else if (!p->err[0] && ffe_blk_status(&io[k]) != 0)
				snprintf(p->err, sizeof(p->err), "q%u: status %d", p->vq->index,
					 ffe_blk_status(&io[k]));
			ffe_blk_io_release(p->vq, &io[k]);
		}
		p->done += n;
	}
	free(io);
	return NULL;
}

Test(badmsg, get_inflight_fd_while_rings_run)
{
	/* A front-end asks for a new region while its rings run and track
	 * requests in the old one (QEMU asks only before it starts the rings):
	 * the back-end must stop using the old region before it lets go of it.
	 * Each SET_INFLIGHT_FD restarts the rings on a region, each
	 * GET_INFLIGHT_FD after it replaces that region under them. */
	struct ffe_opts o;
	struct ffe *fe;
	struct pusher p[A_QUEUES];
	pthread_t th[A_QUEUES];
	int64_t deadline, slowest = 0, t_end;
	const char *slow_what = "";
	int i;

	ffe_opts_init(&o);
	o.inflight = true;
	fe = fx_ready(DEV_A, &o, 0, A_QUEUES, 128);
	for (unsigned q = 0; q < A_QUEUES; q++) {
		p[q] = (struct pusher){ .vq = &fe->vq[q] };
		pthread_create(&th[q], NULL, pusher_worker, &p[q]);
	}
	/* 1500 replacements reproduced a crash in every run when the back-end
	 * unmapped the region under its running rings; at most 1.5 s */
	deadline = ffe_now_ms() + 1500;
	for (i = 0; i < 1500 && ffe_now_ms() < deadline; i++) {
		int64_t t1 = ffe_now_ms(), t2, t3;
		int r = ffe_set_inflight_fd(fe);

		t2 = ffe_now_ms();
		cr_expect_eq(r, 0, "SET_INFLIGHT_FD #%d under I/O: %d (%s)", i, r, fe->err);
		if (r == 0)
			r = ffe_get_inflight_fd(fe, A_QUEUES, 128);
		t3 = ffe_now_ms();
		if (t2 - t1 > slowest || t3 - t2 > slowest) {
			slowest = t2 - t1 > t3 - t2 ? t2 - t1 : t3 - t2;
			slow_what = t2 - t1 > t3 - t2 ? "SET_INFLIGHT_FD" : "GET_INFLIGHT_FD";
		}
		if (r != 0) {
			cr_expect_fail("GET_INFLIGHT_FD #%d under I/O: %d (%s)", i, r, fe->err);
			break;
		}
	}
	t_end = ffe_now_ms();
	for (unsigned q = 0; q < A_QUEUES; q++) {
		p[q].stop = true;
		pthread_join(th[q], NULL);
		cr_expect(!p[q].err[0], "%s", p[q].err);
		cr_log_info("q%u: %u writes while the region was replaced %d times", q, p[q].done, i);
	}
	cr_log_info("slowest call: %s, %" PRId64 " ms; the writers stopped %" PRId64 " ms after "
		    "the last call", slow_what, slowest, ffe_now_ms() - t_end);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

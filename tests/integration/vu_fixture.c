/* The fixture of the integration program (test_vu_*.c): devices A and B in
 * one core, A's golden range, healthy(), the suites' set-ups, and the
 * helpers that several files share (hostile messages and their outcome,
 * I/O and bystander threads, fd counts).  See vu_fixture.h. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vu_fixture.h"

/* ---- fixture ------------------------------------------------------------- */

void check_golden(struct ffe_vq *vq)
{
	uint8_t *r = malloc(GOLD_LEN);

	fx_read_ok(vq, GOLD_SECTOR, r, GOLD_LEN, NULL);
	fx_check_pattern(r, GOLD_LEN, GOLD_SEED, "golden range of device A (written before the test)");
	free(r);
}

static void write_golden(void)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	uint8_t *w = malloc(GOLD_LEN);

	ffe_pattern(w, GOLD_LEN, GOLD_SEED);
	fx_write_ok(&fe->vq[0], GOLD_SECTOR, w, GOLD_LEN, NULL);
	free(w);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* A and B still serve correct I/O to new front-ends; A's golden data intact. */
void healthy(void)
{
	static uint64_t round;

	for (unsigned dev = DEV_A; dev <= DEV_B; dev++) {
		struct ffe *fe;

		cr_assert(fx_wait_state(dev, VDEV_LISTENING, 3000),
			  "%s still '%s' 3 s after the previous front-end went away", fx.name[dev],
			  vdev_state_name(vdev_get_state(fx.dev[dev])));
		fe = fx_ready(dev, NULL, 0, fx.queues[dev], 128);
		for (unsigned q = 0; q < fx.queues[dev]; q++)
			fx_rw_verify(&fe->vq[q], 8192 + q * 64, 16384, 0x4ea1 + q + 16 * round, NULL);
		if (dev == DEV_A)
			check_golden(&fe->vq[0]);
		fx_close_wait(dev, fe, VDEV_LISTENING);
	}
	round++;
}

static void setup_opts(enum core_poll_mode mode, unsigned idle_us)
{
	struct core_opts o = { .nthreads = 2, .poll_mode = mode, .idle_us = idle_us };
	struct vdev_params p;

	fx_begin("/tmp/vhostd-int");
	fx_core_up(&o);
	fx_params(&p, A_SIZE, A_QUEUES, A_SERIAL);
	fx_add("vbA", &p);
	fx_params(&p, B_SIZE, B_QUEUES, B_SERIAL);
	fx_add("vbB", &p);
	write_golden();
}

void setup(void) { setup_opts(CORE_POLL_ADAPTIVE, 0); }
void setup_irq(void) { setup_opts(CORE_POLL_INTERRUPT, 0); }
void setup_busy(void) { setup_opts(CORE_POLL_ALWAYS, 0); }
/* adaptive, falling asleep after 20 us idle: many poll->sleep transitions */
void setup_napper(void) { setup_opts(CORE_POLL_ADAPTIVE, 20); }

/* ASan builds: whatever the core allocated is gone after core_destroy */
void teardown(void)
{
	fx_stop();
	fx_rm_dir(fx.dir);
	fx_leak_check();
}

/* Every suite of the program, in one place: test_vu_*.c hold their tests. */
TestSuite(nego, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(io, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(queues, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(notify, .init = setup_irq, .fini = teardown, .timeout = 60);
TestSuite(busy, .init = setup_busy, .fini = teardown, .timeout = 60);
TestSuite(wakeup, .init = setup_napper, .fini = teardown, .timeout = 120);
TestSuite(conn, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(mem, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(badmsg, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(badring, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(slots, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(resize, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(status, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(log, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(packed, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(packedevent, .init = setup_irq, .fini = teardown, .timeout = 60);
TestSuite(packedring, .init = setup, .fini = teardown, .timeout = 180);

/* ---- shared by several files ------------------------------------------------ */

const char *oname(enum outcome o)
{
	static const char *const n[] = { "acked it with 0 (accepted)", "nacked it", "replied",
					 "dropped the connection", "neither replied nor dropped within 3 s",
					 "sent an unexpected message" };
	return n[o];
}

static bool has_reply(uint32_t req)
{
	return req == FFE_GET_FEATURES || req == FFE_GET_PROTOCOL_FEATURES ||
	       req == FFE_GET_VRING_BASE || req == FFE_GET_QUEUE_NUM || req == FFE_GET_CONFIG ||
	       req == FFE_GET_INFLIGHT_FD || req == FFE_GET_MAX_MEM_SLOTS || req == FFE_GET_STATUS;
}

/* Send one message (NEED_REPLY set unless flags given) and classify what
 * came back within 3 s. */
enum outcome xmit(struct ffe *fe, uint32_t req, uint32_t flags, uint32_t size,
		  const void *payload, size_t plen, const int *fds, unsigned nfds,
		  struct ffe_msg *reply)
{
	struct ffe_msg *m = reply ? reply : malloc(sizeof(*m));
	enum outcome o;
	uint64_t v;
	int r;

	if (!flags)
		flags = FFE_FLAG_VERSION | FFE_FLAG_NEED_REPLY;
	r = ffe_send_raw(fe, req, flags, size, payload, plen, fds, nfds);
	if (r == -EPIPE || r == -ECONNRESET) {
		o = O_DROPPED;
		goto out;
	}
	if (r < 0) {
		/* the peer stopped reading (send timed out) */
		o = ffe_wait_closed(fe, 100) ? O_DROPPED : O_HANG;
		goto out;
	}
	r = ffe_recv_raw(fe, m, 3000);
	if (r == -ECONNRESET) {
		o = O_DROPPED;
	} else if (r == -ETIMEDOUT) {
		o = O_HANG;
	} else if (r < 0) {
		o = O_ODD;
	} else {
		ffe_msg_close_fds(m);
		if (m->hdr.request != req || !(m->hdr.flags & FFE_FLAG_REPLY))
			o = O_ODD;
		else if (has_reply(req))
			o = O_REPLY;
		else if (m->hdr.size != 8)
			o = O_ODD;
		else {
			memcpy(&v, m->payload, 8);
			o = v ? O_NACK : O_ACK0;
		}
	}
out:
	if (!reply)
		free(m);
	return o;
}

/* After a hostile message: the connection either went away or still
 * answers; then close it and check both devices on new connections. */
void finish(struct ffe *fe, enum outcome o, const char *what)
{
	if (o != O_DROPPED && o != O_HANG) {
		int p = ffe_probe(fe);

		cr_expect_neq(p, -ETIMEDOUT, "%s: the connection stopped answering (GET_FEATURES) "
			      "without being closed", what);
	}
	ffe_close(fe);
	healthy();
}

void *ioloop_worker(void *arg)
{
	struct ioloop *l = arg;
	uint8_t w[8192], r[8192];

	while (!l->stop && !l->err[0]) {
		uint64_t seed = l->seed + l->done;
		uint64_t sector = l->base + (l->done % 16) * 16;
		int s;

		ffe_pattern(w, sizeof(w), seed);
		s = ffe_blk_write(l->vq, sector, w, sizeof(w), NULL);
		if (s == 0)
			s = ffe_blk_read(l->vq, sector, r, sizeof(r), NULL);
		if (s != 0)
			snprintf(l->err, sizeof(l->err), "q%u: status %d (%.200s)", l->vq->index, s,
				 s < 0 ? l->vq->fe->err : "");
		else if (!ffe_pattern_ok(r, sizeof(r), seed))
			snprintf(l->err, sizeof(l->err), "q%u: read-back differs at sector %" PRIu64,
				 l->vq->index, sector);
		__atomic_fetch_add(&l->done, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* What the back-end did with a GET_INFLIGHT_FD: O_REPLY (region received: its
 * fd in *fd, its size in *size), O_NACK, O_DROPPED, O_HANG or O_ODD. */
enum outcome get_inflight_raw(struct ffe *fe, uint32_t size, const void *payload,
			      bool need_reply, int *fd, uint64_t *msize)
{
	struct ffe_msg *m = malloc(sizeof(*m));
	enum outcome o;
	int r;

	*fd = -1;
	*msize = 0;
	r = ffe_send_raw(fe, FFE_GET_INFLIGHT_FD,
			 FFE_FLAG_VERSION | (need_reply ? FFE_FLAG_NEED_REPLY : 0), size, payload,
			 size, NULL, 0);
	if (r < 0) {
		o = r == -EPIPE || r == -ECONNRESET || ffe_wait_closed(fe, 100) ? O_DROPPED : O_HANG;
		goto out;
	}
	r = ffe_recv_raw(fe, m, 3000);
	if (r == -ECONNRESET)
		o = O_DROPPED;
	else if (r == -ETIMEDOUT)
		o = O_HANG;
	else if (r < 0 || m->hdr.request != FFE_GET_INFLIGHT_FD || !(m->hdr.flags & FFE_FLAG_REPLY))
		o = O_ODD;
	else if (m->hdr.size >= 20 && m->nfds == 1) {
		memcpy(msize, m->payload, 8);
		*fd = m->fds[0];
		m->nfds = 0;
		o = O_REPLY;
	} else if (m->hdr.size == 8 && m->nfds == 0) {
		uint64_t v;

		memcpy(&v, m->payload, 8);
		o = v ? O_NACK : O_ODD;
	} else {
		o = O_ODD;
	}
	if (r == 0)
		ffe_msg_close_fds(m);
out:
	free(m);
	return o;
}

int memfd_of(size_t size)
{
	int fd = memfd_create("hostile-inflight", MFD_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	return fd;
}

static void *bystander_worker(void *arg)
{
	struct bystander *b = arg;
	uint8_t w[4096], r[4096];

	while (!b->stop && !b->err[0]) {
		uint64_t seed = 90000 + b->done;
		uint64_t sector = 1000 + (b->done % 32) * 8;
		int64_t t0 = ffe_now_ms();
		int s;

		ffe_pattern(w, sizeof(w), seed);
		s = ffe_blk_write(&b->fe->vq[0], sector, w, sizeof(w), NULL);
		if (s == 0)
			s = ffe_blk_read(&b->fe->vq[0], sector, r, sizeof(r), NULL);
		if (s != 0)
			snprintf(b->err, sizeof(b->err), "device B: status %d (%.200s)", s,
				 s < 0 ? b->fe->err : "");
		else if (!ffe_pattern_ok(r, sizeof(r), seed))
			snprintf(b->err, sizeof(b->err), "device B: read-back differs at sector %" PRIu64,
				 sector);
		if (ffe_now_ms() - t0 > b->worst_ms)
			b->worst_ms = ffe_now_ms() - t0;
		__atomic_fetch_add(&b->done, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Device B serves I/O in a thread while A is attacked. */
void bystander_start(struct bystander *b)
{
	memset(b, 0, sizeof(*b));
	b->fe = fx_ready(DEV_B, NULL, 0, 1, 64);
	pthread_create(&b->th, NULL, bystander_worker, b);
}

void bystander_stop(struct bystander *b, const char *during)
{
	b->stop = true;
	pthread_join(b->th, NULL);
	cr_expect(!b->err[0], "during %s: %s", during, b->err);
	cr_expect_gt(b->done, 0u, "device B completed nothing during %s", during);
	/* a request of B that does not complete within 5 s is an error above;
	 * the worst latency is only reported (this machine sometimes stalls
	 * for seconds as a whole) */
	cr_log_info("device B: %u write+read cycles during %s, worst %" PRId64 " ms", b->done,
		    during, b->worst_ms);
	fx_close_wait(DEV_B, b->fe, VDEV_LISTENING);
}

int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

void expect_fds_back_to(int base, const char *after)
{
	struct ffe_deadline dl;
	int now;

	ffe_deadline_start(&dl, 2000);
	while ((now = count_fds()) > base && ffe_deadline_left(&dl))
		usleep(10000);
	cr_expect_eq(now, base, "%d fds open after %s, %d before", now, after, base);
}

/* ---- runner ------------------------------------------------------------------ */

/* One test at a time.  Several of these tests run a core with two engine
 * threads busy under four writer threads; two of them side by side (criterion
 * runs one per cpu by default) put a dozen spinning threads on the 2-vCPU test
 * machines, where other threads then went without cpu for 2-36 s (the
 * back-end's control thread among them).  Costs 2-3 s of the suite's 16. */
unsigned crmain_jobs = 1;

/* Integration suites `queues`, `notify`, `busy` and `wakeup`: several
 * queues and devices at once, queue sizes, index wrap, GET_VRING_BASE with
 * and without I/O; calls and kicks with the core in interrupt mode, in
 * always-poll mode, and falling asleep while requests arrive (lost
 * wake-ups).  The fixture: vu_fixture.h. */
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

/* ---- queues ---------------------------------------------------------------- */

struct qjob {
	struct ffe_vq *vq;
	uint64_t base;
	unsigned rounds, depth;
	uint64_t seed;
	char err[256];
};

static void *qworker(void *arg)
{
	struct qjob *j = arg;
	struct ffe_blk_io *io = calloc(j->depth, sizeof(*io));
	uint8_t *buf = malloc(16384);

	for (unsigned r = 0; r < j->rounds && !j->err[0]; r++) {
		for (int pass = 0; pass < 2 && !j->err[0]; pass++) {
			unsigned n = 0;

			for (unsigned k = 0; k < j->depth; k++) {
				size_t len = 4096 * (1 + (k + r) % 4);
				uint64_t sector = j->base + k * 32;
				uint64_t seed = j->seed + r * 1000 + k;
				struct ffe_layout lay = { (k % 3) ? FFE_L_NATURAL : FFE_L_MERGED,
							  (k % 2) ? 1024 : 0, (k % 4) == 1 };

				if (pass == 0)
					ffe_pattern(buf, len, seed);
				if (ffe_blk_prep(&io[k], pass ? FFE_BLK_T_IN : FFE_BLK_T_OUT, sector,
						 pass ? NULL : buf, pass ? 0 : len, pass ? len : 0, &lay) < 0 ||
				    ffe_submit(j->vq, &io[k].req) < 0) {
					snprintf(j->err, sizeof(j->err), "q%u: submit failed", j->vq->index);
					break;
				}
				n++;
			}
			ffe_kick(j->vq);
			for (unsigned k = 0; k < n; k++) {
				size_t len = 4096 * (1 + (k + r) % 4);

				if (!j->err[0] && ffe_wait(j->vq, &io[k].req, -1) < 0)
					snprintf(j->err, sizeof(j->err), "q%u round %u: %.200s", j->vq->index, r,
						 j->vq->fe->err);
				else if (!j->err[0] && ffe_blk_status(&io[k]) != 0)
					snprintf(j->err, sizeof(j->err), "q%u round %u req %u: status %d",
						 j->vq->index, r, k, ffe_blk_status(&io[k]));
				else if (!j->err[0] && pass &&
					 !ffe_pattern_ok(ffe_blk_in(&io[k]), len, j->seed + r * 1000 + k))
					snprintf(j->err, sizeof(j->err),
						 "q%u round %u req %u: read-back differs (sector %" PRIu64 ")",
						 j->vq->index, r, k, j->base + k * 32);
				ffe_blk_io_release(j->vq, &io[k]);
			}
		}
	}
	free(io);
	free(buf);
	return NULL;
}

Test(queues, concurrent_queues_two_devices)
{
	struct ffe *fa = fx_ready(DEV_A, NULL, ffe_default_features(true), A_QUEUES, 128);
	struct ffe *fb = fx_ready(DEV_B, NULL, 0, B_QUEUES, 64);
	struct qjob jobs[A_QUEUES + B_QUEUES];
	pthread_t th[A_QUEUES + B_QUEUES];
	unsigned n = 0;

	for (unsigned q = 0; q < A_QUEUES; q++, n++)
		jobs[n] = (struct qjob){ .vq = &fa->vq[q], .base = 20000 + q * 2048, .rounds = 40,
					 .depth = 16, .seed = 1000000 * (n + 1) };
	for (unsigned q = 0; q < B_QUEUES; q++, n++)
		jobs[n] = (struct qjob){ .vq = &fb->vq[q], .base = 1000 + q * 2048, .rounds = 40,
					 .depth = 8, .seed = 1000000 * (n + 1) };
	for (unsigned i = 0; i < n; i++)
		pthread_create(&th[i], NULL, qworker, &jobs[i]);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < n; i++)
		cr_expect(!jobs[i].err[0], "%s %s", i < A_QUEUES ? "A" : "B", jobs[i].err);
	check_golden(&fa->vq[0]);
	fx_close_wait(DEV_A, fa, VDEV_LISTENING);
	fx_close_wait(DEV_B, fb, VDEV_LISTENING);
}

Test(queues, deep_queue_one_kick)
{
	/* 120 requests published, one kick: the device must drain them all
	 * (more than one batch of 32) */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 1024);
	struct qjob j = { .vq = &fe->vq[0], .base = 5000, .rounds = 3, .depth = 60, .seed = 77 };

	qworker(&j);
	cr_expect(!j.err[0], "%s", j.err);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(queues, queue_sizes)
{
	static const unsigned sizes[] = { 1, 2, 8, 1024 };
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 0, 0);

	for (unsigned i = 0; i < 4; i++) {
		int r = ffe_vq_start(fe, i, sizes[i]);
		struct ffe_layout ind = { FFE_L_NATURAL, 0, true };

		cr_assert_eq(r, 0, "queue %u with %u entries: %s", i, sizes[i], fe->err);
		/* a size-1 ring only fits an indirect request */
		for (int k = 0; k < 3; k++)
			fx_rw_verify(&fe->vq[i], 600 + i * 40 + k * 8, 4096, 700 + i * 10 + k,
				  sizes[i] < 4 ? &ind : NULL);
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(queues, only_last_queue_started)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 0, 0);

	cr_assert_eq(ffe_vq_start(fe, A_QUEUES - 1, 64), 0, "%s", fe->err);
	fx_rw_verify(&fe->vq[A_QUEUES - 1], 900, 8192, 800, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(queues, get_vring_base_and_restart)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 64);
	uint32_t base = 0;
	int r;

	for (int i = 0; i < 37; i++)
		fx_rw_verify(&fe->vq[1], 1000 + (i % 4) * 8, 4096, 900 + i, NULL);    /* 74 requests */
	r = ffe_vq_stop(fe, 1, &base);
	cr_assert_eq(r, 0, "GET_VRING_BASE: %s", fe->err);
	cr_expect_eq(base, 74u, "GET_VRING_BASE after 74 requests returned %u", base);
	r = ffe_vq_stop(fe, 0, &base);
	cr_assert_eq(r, 0);
	cr_expect_eq(base, 0u, "GET_VRING_BASE of an unused queue returned %u", base);
	/* a stopped ring is not processed: a request published now waits */
	{
		struct ffe_blk_io io;
		uint8_t w[4096];

		ffe_pattern(w, sizeof(w), 989);
		cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, 1090, w, sizeof(w), 0, NULL), 0);
		cr_assert_eq(ffe_submit(&fe->vq[1], &io.req), 0);
		ffe_vq_kick_raw(&fe->vq[1]);    /* the back-end closed its kick fd copy, or ignores it */
		usleep(200000);
		ffe_poll_used(&fe->vq[1]);
		cr_expect(!io.req.done, "a request on a ring stopped by GET_VRING_BASE was processed");
		/* QEMU's stop/cont: program the same ring again from its index;
		 * the waiting request is picked up */
		r = ffe_vq_resume(fe, 1);
		cr_assert_eq(r, 0, "restart q1: %s", fe->err);
		ffe_kick(&fe->vq[1]);
		cr_expect_eq(ffe_wait(&fe->vq[1], &io.req, 3000), 0,
			     "request published while the ring was stopped not processed after restart");
		cr_expect_eq(ffe_blk_status(&io), 0);
		ffe_blk_io_release(&fe->vq[1], &io);
	}
	fx_rw_verify(&fe->vq[1], 1100, 4096, 990, NULL);
	cr_expect_eq(ffe_vq_used_idx(&fe->vq[1]), 77, "used idx %u after restart", ffe_vq_used_idx(&fe->vq[1]));
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(queues, index_wraps_at_65536)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(true), 0, 0);
	uint32_t base = 0;

	cr_assert_eq(ffe_vq_start_at(fe, 0, 16, 65530), 0, "%s", fe->err);
	for (int i = 0; i < 6; i++)
		fx_rw_verify(&fe->vq[0], 1200 + i * 8, 4096, 1000 + i, NULL);     /* 12 requests */
	cr_assert_eq(ffe_vq_stop(fe, 0, &base), 0, "%s", fe->err);
	cr_expect_eq(base, 6u, "GET_VRING_BASE after wrapping: %u, expected 6", base);
	cr_expect_eq(ffe_vq_used_idx(&fe->vq[0]), 6, "used idx %u", ffe_vq_used_idx(&fe->vq[0]));
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- notifications (core in interrupt mode: it sleeps on kicks) ------------ */

static void strict_run(bool event_idx, unsigned n, unsigned batch)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(event_idx), 2, 64);
	struct ffe_vq *vq = &fe->vq[1];
	struct ffe_blk_io *io = calloc(batch, sizeof(*io));
	uint8_t buf[4096];

	cr_assert_eq(!!(fe->features & FFE_BIT(FFE_F_RING_EVENT_IDX)), event_idx);
	vq->strict_calls = true;        /* completions are seen only after a call */
	for (unsigned i = 0; i < n; i += batch) {
		for (unsigned k = 0; k < batch; k++) {
			ffe_pattern(buf, sizeof(buf), i + k);
			cr_assert_eq(ffe_blk_prep(&io[k], FFE_BLK_T_OUT, 2000 + k * 8, buf,
						  sizeof(buf), 0, NULL), 0);
			cr_assert_eq(ffe_submit(vq, &io[k].req), 0);
			if (k % 2 == 0)
				ffe_kick(vq);   /* kick some, publish others behind them */
		}
		ffe_kick(vq);
		for (unsigned k = 0; k < batch; k++) {
			int r = ffe_wait(vq, &io[k].req, 3000);

			cr_assert_eq(r, 0, "event_idx=%d request %u: %s (kicks %" PRIu64 ", calls %" PRIu64
				     ", avail_event %u)", event_idx, i + k, fe->err, vq->kicks, vq->calls,
				     ((uint16_t *)(vq->used + 4 + 8 * vq->num))[0]);
			cr_assert_eq(ffe_blk_status(&io[k]), 0);
			ffe_blk_io_release(vq, &io[k]);
		}
	}
	cr_log_info("event_idx=%d: %u requests, %" PRIu64 " kicks, %" PRIu64 " calls", event_idx, n,
		    vq->kicks, vq->calls);
	free(io);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(notify, calls_without_event_idx) { strict_run(false, 200, 1); }
Test(notify, calls_with_event_idx) { strict_run(true, 200, 1); }
Test(notify, batches_without_event_idx) { strict_run(false, 320, 16); }
Test(notify, batches_with_event_idx) { strict_run(true, 320, 16); }

Test(notify, no_interrupt_flag_polling)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(false), 0, 0);
	struct ffe_vq *vq = &fe->vq[0];

	vq->no_interrupt = true;
	cr_assert_eq(ffe_vq_start(fe, 0, 64), 0);
	for (int i = 0; i < 20; i++)
		fx_rw_verify(vq, 3000 + i * 8, 4096, 1100 + i, NULL);
	cr_log_info("NO_INTERRUPT set: %" PRIu64 " calls for 40 requests", vq->calls);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(notify, multiqueue_interrupt_mode)
{
	struct ffe *fa = fx_ready(DEV_A, NULL, ffe_default_features(true), A_QUEUES, 128);
	struct qjob jobs[A_QUEUES];
	pthread_t th[A_QUEUES];

	for (unsigned q = 0; q < A_QUEUES; q++) {
		jobs[q] = (struct qjob){ .vq = &fa->vq[q], .base = 20000 + q * 2048, .rounds = 20,
					 .depth = 8, .seed = 5000000 * (q + 1) };
		fa->vq[q].strict_calls = (q % 2) == 0;
		pthread_create(&th[q], NULL, qworker, &jobs[q]);
	}
	for (unsigned q = 0; q < A_QUEUES; q++)
		pthread_join(th[q], NULL);
	for (unsigned q = 0; q < A_QUEUES; q++)
		cr_expect(!jobs[q].err[0], "%s", jobs[q].err);
	fx_close_wait(DEV_A, fa, VDEV_LISTENING);
}

Test(busy, io_in_always_poll_mode)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(true), A_QUEUES, 128);

	for (unsigned q = 0; q < A_QUEUES; q++)
		fx_rw_verify(&fe->vq[q], 14000 + q * 64, 16384, 1200 + q, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

/* ---- control path under load ------------------------------------------------ */

struct stopper {
	struct ffe_vq *vq;
	atomic_bool stop;
	unsigned submitted, completed;
	char err[256];
};

/* submit batches of 8 OUTs until told to stop; a request that does not
 * complete within 1 s after the stop is abandoned (the ring was stopped) */
static void *batch_worker(void *arg)
{
	struct stopper *s = arg;
	struct ffe_blk_io io[8];
	uint8_t buf[4096];

	memset(buf, 0x42, sizeof(buf));
	while (!s->stop) {
		unsigned n = 0;

		for (unsigned k = 0; k < 8; k++) {
			if (ffe_blk_prep(&io[k], FFE_BLK_T_OUT, SCRATCH_SECTOR + k * 8, buf, sizeof(buf), 0, NULL) < 0)
				break;
			if (ffe_submit(s->vq, &io[k].req) < 0) {
				ffe_blk_io_release(s->vq, &io[k]);
				break;
			}
			n++;
			s->submitted++;
		}
		ffe_kick(s->vq);
		for (unsigned k = 0; k < n; k++) {
			struct ffe_deadline dl;
			int r;

			/* once stopped, the ring will not complete the rest */
			ffe_deadline_start(&dl, 3000);
			while ((r = ffe_wait(s->vq, &io[k].req, 50)) != 0 && ffe_deadline_left(&dl) &&
			       !s->stop)
				;
			if (r == 0)
				s->completed++;
			else if (!s->stop && !s->err[0])
				snprintf(s->err, sizeof(s->err), "request not completed within 3 s while running");
			ffe_blk_io_release(s->vq, &io[k]);
		}
	}
	return NULL;
}

Test(queues, get_vring_base_under_io)
{
	/* GET_VRING_BASE while the queue is busy: when the reply comes the
	 * ring is stopped (used idx frozen) and every request the device took
	 * (base) has completed (used idx == base): nothing in flight is lost. */
	for (int round = 0; round < 5; round++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(round % 2), 2, 128);
		struct stopper s = { .vq = &fe->vq[1] };
		pthread_t th;
		uint32_t base = 0;
		uint16_t u1, u2;
		int64_t t0;
		int r;

		pthread_create(&th, NULL, batch_worker, &s);
		usleep(20000 + round * 10000);
		t0 = ffe_now_ms();
		r = ffe_vq_stop(fe, 1, &base);
		t0 = ffe_now_ms() - t0;
		u1 = ffe_vq_used_idx(&fe->vq[1]);
		s.stop = true;
		usleep(200000);
		u2 = ffe_vq_used_idx(&fe->vq[1]);
		pthread_join(th, NULL);
		cr_assert_eq(r, 0, "GET_VRING_BASE under I/O: %s", fe->err);
		cr_expect(!s.err[0], "%s", s.err);
		cr_log_info("round %d: submitted %u, base %u, used %u, GET_VRING_BASE took %" PRId64 " ms",
			    round, s.submitted, base, u1, t0);
		cr_expect_eq(u1, u2, "used idx moved from %u to %u after GET_VRING_BASE replied", u1, u2);
		cr_expect_eq((uint16_t)base, u1, "GET_VRING_BASE returned %u but only %u requests were "
			     "completed: requests taken before the stop were lost", base, u1);
		/* the connection goes on with queue 0 */
		fx_rw_verify(&fe->vq[0], 9100, 4096, 3200 + round, NULL);
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	}
	healthy();
}

/* ---- lost wake-ups: the engine going to sleep while requests arrive --------- */

struct napjob {
	struct ffe_vq *vq;
	unsigned n;
	unsigned seed;
	int64_t worst_ms;
	char err[256];
};

static void *nap_worker(void *arg)
{
	struct napjob *j = arg;
	uint8_t buf[4096];
	unsigned x = j->seed;

	memset(buf, 7, sizeof(buf));
	for (unsigned i = 0; i < j->n && !j->err[0]; i++) {
		struct ffe_blk_io io;
		int64_t t0 = ffe_now_ms(), dt;
		int r;

		/* each queue its own sectors: the queues' requests run at
		 * once on different engine threads */
		if (ffe_blk_prep(&io, i % 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT,
				 27000 + j->vq->index * 64 + (i % 8) * 8,
				 i % 2 ? NULL : buf, i % 2 ? 0 : sizeof(buf), i % 2 ? sizeof(buf) : 0,
				 NULL) < 0)
			break;
		r = ffe_submit(j->vq, &io.req);
		if (r == 0)
			r = ffe_kick(j->vq);
		if (r == 0)
			r = ffe_wait(j->vq, &io.req, 3000);
		dt = ffe_now_ms() - t0;
		if (dt > j->worst_ms)
			j->worst_ms = dt;
		if (r != 0)
			snprintf(j->err, sizeof(j->err), "q%u request %u not completed within 3 s (kicks %"
				 PRIu64 ", avail %u, used %u, used flags %#x)", j->vq->index, i,
				 j->vq->kicks, j->vq->avail_idx, ffe_vq_used_idx(j->vq),
				 *(uint16_t *)j->vq->used);
		else if (ffe_blk_status(&io) != 0)
			snprintf(j->err, sizeof(j->err), "q%u request %u: status %d", j->vq->index, i,
				 ffe_blk_status(&io));
		ffe_blk_io_release(j->vq, &io);
		/* pause around the engine's idle threshold so it keeps falling
		 * asleep just as requests arrive */
		x = x * 1103515245 + 12345;
		usleep((x >> 16) % 80);
	}
	return NULL;
}

static void nap_run(bool event_idx, unsigned nq)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(event_idx), nq, 64);
	struct napjob j[A_QUEUES];
	pthread_t th[A_QUEUES];

	for (unsigned q = 0; q < nq; q++) {
		j[q] = (struct napjob){ .vq = &fe->vq[q], .n = 1500, .seed = 17 + q };
		pthread_create(&th[q], NULL, nap_worker, &j[q]);
	}
	for (unsigned q = 0; q < nq; q++) {
		pthread_join(th[q], NULL);
		cr_expect(!j[q].err[0], "event_idx=%d: %s", event_idx, j[q].err);
		cr_log_info("event_idx=%d q%u: worst latency %" PRId64 " ms, %" PRIu64 " kicks for %u requests",
			    event_idx, q, j[q].worst_ms, fe->vq[q].kicks, j[q].n);
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(wakeup, one_queue_no_event_idx) { nap_run(false, 1); }
Test(wakeup, one_queue_event_idx) { nap_run(true, 1); }
Test(wakeup, four_queues_no_event_idx) { nap_run(false, A_QUEUES); }
Test(wakeup, four_queues_event_idx) { nap_run(true, A_QUEUES); }

/* Integration suite `conn`: connection life: states, reconnects that keep
 * data and rings, a second front-end, forced destroy with a front-end
 * connected or requests in flight, devices created and destroyed under I/O,
 * resize, no fd leak over many connections.  The fixture: vu_fixture.h. */
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

/* ---- connections ----------------------------------------------------------- */

Test(conn, states_and_reconnect_keeps_data)
{
	struct ffe *fe;
	uint8_t b[8192];

	cr_expect_eq(vdev_get_state(fx.dev[DEV_A]), VDEV_LISTENING);
	fe = fx_ready(DEV_A, NULL, 0, 1, 128);
	cr_expect(fx_wait_state(DEV_A, VDEV_CONNECTED, 1000), "state '%s' with a front-end set up",
		  vdev_state_name(vdev_get_state(fx.dev[DEV_A])));
	ffe_pattern(b, sizeof(b), 1300);
	fx_write_ok(&fe->vq[0], 5000, b, sizeof(b), NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);

	/* new front-end, different memory layout */
	{
		struct ffe_opts o;

		ffe_opts_init(&o);
		o.nregions = 3;
		fe = fx_ready(DEV_A, &o, 0, 2, 128);
	}
	memset(b, 0, sizeof(b));
	fx_read_ok(&fe->vq[1], 5000, b, sizeof(b), NULL);
	fx_check_pattern(b, sizeof(b), 1300, "data written by the previous connection");
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(conn, fast_reconnect_loop)
{
	/* QEMU reconnecting: close and connect again at once, many times */
	for (int i = 0; i < 25; i++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1 + i % A_QUEUES, 64);

		fx_rw_verify(&fe->vq[i % A_QUEUES], 6000 + (i % 8) * 8, 4096, 1400 + i, NULL);
		ffe_close(fe);
	}
	cr_expect(fx_wait_state(DEV_A, VDEV_LISTENING, 3000));
	healthy();
}

Test(conn, resume_rings_on_new_connection)
{
	/* stop the rings, reconnect, SET_VRING_BASE to where we were, go on */
	struct ffe *fe = fx_ready(DEV_A, NULL, ffe_default_features(true), 2, 64);
	uint32_t base = 0;

	for (int i = 0; i < 10; i++)
		fx_rw_verify(&fe->vq[0], 6100 + i * 8, 4096, 1500 + i, NULL);
	cr_assert_eq(ffe_vq_stop(fe, 0, &base), 0, "%s", fe->err);
	cr_expect_eq(base, 20u);
	cr_assert_eq(ffe_reconnect(fe), 0);
	cr_assert_eq(ffe_negotiate(fe, ffe_default_features(true)), 0, "%s", fe->err);
	cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
	cr_assert_eq(ffe_vq_resume(fe, 0), 0, "%s", fe->err);
	for (int i = 0; i < 10; i++)
		fx_rw_verify(&fe->vq[0], 6200 + i * 8, 4096, 1600 + i, NULL);
	cr_expect_eq(ffe_vq_used_idx(&fe->vq[0]), 40, "used idx %u after resuming at 20 + 20 requests",
		     ffe_vq_used_idx(&fe->vq[0]));
	uint8_t b[4096];
	fx_read_ok(&fe->vq[0], 6100, b, 4096, NULL);
	fx_check_pattern(b, 4096, 1500, "data from before the reconnect");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(conn, second_front_end_does_not_disturb_first)
{
	/* A second front-end is served alongside (a hand-over's
	 * destination), but may not touch the queues while the first runs
	 * them: its queue request drops it, and the first never notices. */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 64);
	struct ffe *fe2 = ffe_open(fx.sock[DEV_A], NULL);

	cr_assert_not_null(fe2);
	fx_rw_verify(&fe->vq[0], 6300, 4096, 1700, NULL);
	cr_assert_eq(ffe_negotiate(fe2, 0), 0, "second front-end negotiates: %s", fe2->err);
	cr_assert_eq(ffe_set_mem_table(fe2), 0, "second front-end maps memory: %s", fe2->err);
	fx_rw_verify(&fe->vq[1], 6310, 4096, 1701, NULL);
	(void)ffe_vq_start(fe2, 0, 64);
	cr_expect_eq(ffe_wait_closed(fe2, 3000), 1,
		     "a queue request of the second front-end while the first runs: not dropped");
	ffe_close(fe2);
	fx_rw_verify(&fe->vq[0], 6320, 4096, 1702, NULL);
	fx_rw_verify(&fe->vq[1], 6330, 4096, 1703, NULL);
	cr_expect_eq(vdev_get_state(fx.dev[DEV_A]), VDEV_CONNECTED);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(conn, hand_over_to_a_second_front_end)
{
	/* A migration on one host: the destination connects to the same
	 * socket while the source runs, takes the queues once the source
	 * stopped them, and keeps the device when the source leaves. */
	struct ffe *src = fx_ready(DEV_A, NULL, ffe_default_features(true), 2, 64);
	struct ffe *dst, *third;
	uint32_t base;
	uint8_t b[4096];

	for (int i = 0; i < 8; i++)
		fx_rw_verify(&src->vq[i % 2], 7000 + i * 8, 4096, 1900 + i, NULL);
	dst = ffe_open(fx.sock[DEV_A], NULL);
	cr_assert_not_null(dst);
	cr_assert_eq(ffe_negotiate(dst, ffe_default_features(true)), 0, "%s", dst->err);
	cr_assert_eq(ffe_set_mem_table(dst), 0, "%s", dst->err);
	cr_assert_eq(ffe_get_config(dst, 0, b, 8), 0, "%s", dst->err);
	cr_expect_eq(*(uint64_t *)b, A_SIZE / 512, "capacity read by the second front-end");
	/* QEMU sends the call and error notifiers when it sets the device up,
	 * long before it starts it: kept for later, not a take-over */
	for (unsigned q = 0; q < 2; q++) {
		int e = eventfd(0, EFD_CLOEXEC);
		uint64_t v = q;

		cr_assert_eq(ffe_call(dst, FFE_SET_VRING_CALL, &v, sizeof(v), &e, 1), 0, "%s", dst->err);
		cr_assert_eq(ffe_call(dst, FFE_SET_VRING_ERR, &v, sizeof(v), &e, 1), 0, "%s", dst->err);
		close(e);
	}
	cr_assert_eq(ffe_probe(dst), 1, "second front-end dropped for its call/err notifiers");
	fx_rw_verify(&src->vq[0], 7100, 4096, 1950, NULL);      /* the source still runs */

	/* a third one waits in the socket meanwhile */
	third = ffe_open(fx.sock[DEV_A], NULL);
	cr_assert_not_null(third);

	for (unsigned q = 0; q < 2; q++)
		cr_assert_eq(ffe_vq_stop(src, q, &base), 0, "%s", src->err);
	for (unsigned q = 0; q < 2; q++)
		cr_assert_eq(ffe_vq_start(dst, q, 64), 0, "%s", dst->err);
	for (int i = 0; i < 8; i++) {
		fx_read_ok(&dst->vq[i % 2], 7000 + i * 8, b, sizeof(b), NULL);
		fx_check_pattern(b, sizeof(b), 1900 + i, "data the source wrote, read by the destination");
	}
	fx_read_ok(&dst->vq[1], 7100, b, sizeof(b), NULL);
	fx_check_pattern(b, sizeof(b), 1950, "the source's last write");

	/* the source quits: the destination's queues are left alone */
	ffe_close(src);
	for (int i = 0; i < 16; i++)
		fx_rw_verify(&dst->vq[i % 2], 7200 + i * 8, 4096, 2000 + i, NULL);
	cr_expect_eq(vdev_get_state(fx.dev[DEV_A]), VDEV_CONNECTED);

	/* the waiting third one is served once a place is free: it may
	 * negotiate, not run queues, while the destination runs them */
	cr_expect_eq(ffe_negotiate(third, 0), 0, "third front-end served after the source left: %s",
		     third->err);
	ffe_close(third);
	check_golden(&dst->vq[0]);
	fx_close_wait(DEV_A, dst, VDEV_LISTENING);
	healthy();
}

Test(conn, busy_while_connected_and_forced_destroy)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
	struct vdev_params p;
	char err[VDEV_ERR_MAX];
	struct stat st;
	int r;

	/* only the size may change under a connected front-end */
	fx_params(&p, A_SIZE, A_QUEUES - 1, A_SERIAL);
	r = vdev_set_params(fx.dev[DEV_A], &p, err, sizeof(err));
	cr_expect_eq(r, -EBUSY, "queues changed while connected: %d", r);
	cr_expect(strstr(err, "connected"), "reason: %s", err);
	r = vdev_destroy(fx.dev[DEV_A], false);
	cr_expect_eq(r, -EBUSY, "vdev_destroy(force=false) while connected: %d", r);
	fx_rw_verify(&fe->vq[0], 6400, 4096, 1800, NULL);

	r = vdev_destroy(fx.dev[DEV_A], true);
	cr_expect_eq(r, 0, "vdev_destroy(force=true): %d", r);
	fx.dev[DEV_A] = NULL;
	cr_expect_eq(ffe_wait_closed(fe, 3000), 1, "front-end connection still open after forced destroy");
	cr_expect(stat(fx.sock[DEV_A], &st) < 0 && errno == ENOENT, "socket file left behind");
	ffe_close(fe);
	/* B unaffected */
	fe = fx_ready(DEV_B, NULL, 0, B_QUEUES, 64);
	fx_rw_verify(&fe->vq[1], 100, 4096, 1801, NULL);
	fx_close_wait(DEV_B, fe, VDEV_LISTENING);
}

Test(conn, no_fd_leak)
{
	/* fds the back-end receives (memory, eventfds, stray ones) are closed
	 * when replaced and when the front-end goes away */
	struct ffe *fe;
	int base, now = 0, efd[3];
	struct ffe_deadline dl;
	uint64_t f = 0;

	healthy();
	base = 0;
	{
		DIR *d = opendir("/proc/self/fd");
		while (readdir(d))
			base++;
		closedir(d);
	}
	for (int round = 0; round < 3; round++) {
		fe = fx_ready(DEV_A, NULL, 0, 2, 64);
		for (int k = 0; k < 3; k++)
			efd[k] = eventfd(0, EFD_CLOEXEC);
		/* stray fds on messages that take none (dropping is fine too) */
		f = fe->features;
		if (ffe_call(fe, FFE_SET_FEATURES, &f, 8, efd, 3) < 0 || ffe_probe(fe) != 1) {
			ffe_close(fe);
			cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000));
			fe = fx_ready(DEV_A, NULL, 0, 2, 64);
		}
		/* table and call fds replaced */
		cr_expect_eq(ffe_set_mem_table(fe), 0, "SET_MEM_TABLE again: %s", fe->err);
		cr_expect_eq(ffe_call(fe, FFE_SET_VRING_CALL, &(uint64_t){ 1 }, 8, &efd[0], 1), 0);
		for (int k = 0; k < 3; k++)
			close(efd[k]);
		if (ffe_probe(fe) == 1)
			fx_rw_verify(&fe->vq[0], 6500, 4096, 1900 + round, NULL);
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	}
	ffe_deadline_start(&dl, 2000);
	do {
		DIR *d = opendir("/proc/self/fd");

		now = 0;
		while (readdir(d))
			now++;
		closedir(d);
	} while (now > base && ffe_deadline_left(&dl) && !usleep(10000));
	cr_expect_eq(now, base, "%d fds open after 3 connections came and went, %d before", now, base);
}

Test(conn, close_with_requests_in_flight)
{
	/* the front-end vanishes with the rings full: the back-end must stop
	 * touching guest memory before it lets go of it */
	for (int round = 0; round < 10; round++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, A_QUEUES, 256);
		struct ffe_blk_io *io = calloc(64, sizeof(*io));
		struct ffe_layout ind = { FFE_L_NATURAL, 4096, true };
		static uint8_t big[65536];

		for (unsigned q = 0; q < A_QUEUES; q++) {
			for (unsigned k = 0; k < 16; k++) {
				struct ffe_blk_io *x = &io[q * 16 + k];

				cr_assert_eq(ffe_blk_prep(x, k % 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT,
							  20000 + q * 4096 + k * 256, big,
							  k % 2 ? 0 : 65536,
							  k % 2 ? 65536 : 0, &ind), 0);
				ffe_submit(&fe->vq[q], &x->req);
			}
			ffe_kick(&fe->vq[q]);
		}
		ffe_close(fe);          /* memory unmapped on our side at once */
		for (unsigned k = 0; k < 64; k++) {
			free(io[k].rd);
			free(io[k].wr);
		}
		free(io);
	}
	cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000));
	healthy();
}

Test(conn, create_destroy_devices_while_io)
{
	/* the control path adds and removes devices while A's rings run */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 64);
	struct ioloop l = { .vq = &fe->vq[1], .base = 26000, .seed = 777 };
	pthread_t th;

	pthread_create(&th, NULL, ioloop_worker, &l);
	for (int i = 0; i < 15; i++) {
		struct vdev_params p;
		char name[32], sock[200], err[VDEV_ERR_MAX];
		struct vdev *d;
		int r;

		fx_params(&p, 4 * MiB, 1 + i % 3, "tmp");
		snprintf(name, sizeof(name), "vbtmp%d", i);
		snprintf(sock, sizeof(sock), "%s/%s.sock", fx.dir, name);
		r = vdev_create(fx.core, name, sock, &p, &d, err, sizeof(err));
		cr_assert_eq(r, 0, "vdev_create %s: %s", name, err);
		if (i % 3 == 0) {
			struct ffe *ft = ffe_open(sock, NULL);

			cr_assert_not_null(ft);
			cr_assert_eq(ffe_setup(ft, 0, 1, 32), 0, "%s", ft->err);
			fx_rw_verify(&ft->vq[0], 0, 4096, 4000 + i, NULL);
			ffe_close(ft);
		}
		r = vdev_destroy(d, true);
		cr_expect_eq(r, 0, "vdev_destroy %s: %d", name, r);
	}
	l.stop = true;
	pthread_join(th, NULL);
	cr_expect(!l.err[0], "%s", l.err);
	cr_log_info("%u cycles on A while 15 devices came and went", l.done);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(conn, set_params_resize_keeps_data)
{
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	struct ffe *fe;
	uint8_t b[GOLD_LEN];
	int r;

	fx_params(&p, A_SIZE * 2, A_QUEUES, A_SERIAL);
	r = vdev_set_params(fx.dev[DEV_A], &p, err, sizeof(err));
	cr_assert_eq(r, 0, "vdev_set_params (grow to 64 MiB) while idle: %d %s", r, err);
	fe = fx_ready(DEV_A, NULL, 0, 1, 64);
	cr_expect_eq(fe->cfg.capacity, A_SIZE * 2 / 512, "capacity %" PRIu64 " after growing",
		     fe->cfg.capacity);
	check_golden(&fe->vq[0]);
	fx_read_ok(&fe->vq[0], A_SIZE / 512, b, 4096, NULL);
	fx_check_zero(b, 4096, "grown part of a ram device");
	fx_rw_verify(&fe->vq[0], A_SIZE * 2 / 512 - 8, 4096, 4100, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(conn, connect_disconnect_100_while_other_serves)
{
	/* 100 front-ends come and go on A, some with requests in flight, while
	 * B serves I/O.  A connection that closes before the back-end accepted
	 * it can make the next one arrive while the back-end still holds the
	 * old one: that one is refused (one front-end per device) and, like
	 * QEMU's reconnect, we try again. */
	struct bystander b;
	unsigned refused = 0;
	int base;

	healthy();
	base = count_fds();
	bystander_start(&b);
	for (int i = 0; i < 100; i++) {
		struct ffe *fe = NULL;
		int r = 0;

		for (int attempt = 0; attempt < 20; attempt++) {
			fe = fx_open(DEV_A, NULL);
			switch (i % 5) {
			case 0:
				break;                          /* connect, close */
			case 1: {
				uint8_t half[6] = { FFE_SET_FEATURES, 0, 0, 0, 1, 0 };

				r = send(fe->sock, half, sizeof(half), MSG_NOSIGNAL) == 6 ? 0 : -errno;
				break;                          /* half a header */
			}
			case 2:
				r = ffe_negotiate(fe, 0);
				break;
			case 3:
				r = ffe_setup(fe, 0, 1, 64);
				break;
			case 4:
				r = ffe_setup(fe, 0, A_QUEUES, 64);
				break;
			}
			if (r != -ECONNRESET && r != -EPIPE)
				break;
			refused++;
			ffe_close(fe);
			fe = NULL;
			cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000));
			usleep(2000);
		}
		cr_assert_not_null(fe, "cycle %d: refused 20 times", i);
		cr_assert_eq(r, 0, "cycle %d: %s (%s)", i, strerror(-r), fe->err);
		if (i % 5 == 3) {
			fx_rw_verify(&fe->vq[0], 7900 + (i % 8) * 8, 4096, 7900 + i, NULL);
		} else if (i % 5 == 4) {
			/* requests in flight on every queue when the socket closes */
			static struct ffe_blk_io io[A_QUEUES][8];
			struct ffe_layout ind = { FFE_L_NATURAL, 4096, true };
			static uint8_t big[32768];

			for (unsigned q = 0; q < A_QUEUES; q++) {
				for (unsigned k = 0; k < 8; k++) {
					ffe_blk_prep(&io[q][k], k % 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT,
						     SCRATCH_SECTOR + 128 + q * 512 + k * 64, big,
						     k % 2 ? 0 : sizeof(big), k % 2 ? sizeof(big) : 0, &ind);
					ffe_submit(&fe->vq[q], &io[q][k].req);
				}
				ffe_kick(&fe->vq[q]);
			}
			ffe_close(fe);
			fe = NULL;
			for (unsigned q = 0; q < A_QUEUES; q++)
				for (unsigned k = 0; k < 8; k++)
					ffe_blk_io_release(NULL, &io[q][k]);
		}
		if (fe)
			ffe_close(fe);
		cr_assert(fx_wait_state(DEV_A, VDEV_LISTENING, 3000), "cycle %d: A still '%s' 3 s after "
			  "its front-end left", i, vdev_state_name(vdev_get_state(fx.dev[DEV_A])));
	}
	cr_log_info("%u connections refused because the previous one was still held", refused);
	bystander_stop(&b, "100 connections coming and going on A");
	expect_fds_back_to(base, "100 connections came and went");
	healthy();
}

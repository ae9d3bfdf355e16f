/* Integration suites `resize` and `status`: online resize of a device
 * whose front-end is connected (vdev_set_params with only the size
 * changed), on the ram and null backends (file and block devices: in
 * tests/backend): the backend resized under running rings, GET_CONFIG's
 * capacity, CONFIG_CHANGE_MSG on the back-end channel, I/O past the old
 * and the new end, shrinks over an empty tail and over data (allow_shrink),
 * other changes refused with EBUSY; and SET/GET_STATUS through a live core.
 * The fixture: vu_fixture.h. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vu_fixture.h"

#define SECT 512ull

/* A front-end on dev with nq queues; channel: BACKEND_REQ negotiated and
 * the back-end channel given (ffe_setup does it). */
static struct ffe *live_fe(unsigned dev, unsigned nq, bool channel)
{
	struct ffe_opts o;
	struct ffe *fe;

	ffe_opts_init(&o);
	o.extra_protocol_features = FFE_BIT(FFE_PF_STATUS) |
				    (channel ? FFE_BIT(FFE_PF_BACKEND_REQ) : 0);
	fe = fx_ready(dev, &o, 0, nq, 128);
	if (channel) {
		cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_BACKEND_REQ),
			  "BACKEND_REQ not offered (protocol features 0x%" PRIx64 ")",
			  fe->dev_protocol_features);
		cr_assert_geq(fe->backend_fd, 0);
	}
	return fe;
}

/* vdev_set_params with the parameters in force but size (and allow_shrink). */
static int set_size(unsigned dev, uint64_t size, bool allow_shrink, char *err)
{
	struct vdev_params p;

	vdev_get_params(fx.dev[dev], &p);
	p.size = size;
	p.allow_shrink = allow_shrink;
	err[0] = '\0';
	return vdev_set_params(fx.dev[dev], &p, err, VDEV_ERR_MAX);
}

static void resize_ok(unsigned dev, uint64_t size, bool allow_shrink)
{
	char err[VDEV_ERR_MAX];
	int r = set_size(dev, size, allow_shrink, err);

	cr_assert_eq(r, 0, "resize of %s to %" PRIu64 " bytes%s while connected: %s (%s)",
		     fx.name[dev], size, allow_shrink ? " (allow_shrink)" : "", strerror(-r), err);
}

static uint64_t capacity(struct ffe *fe)
{
	struct ffe_blk_config c;

	cr_assert_eq(ffe_get_config(fe, 0, &c, sizeof(c)), 0, "GET_CONFIG: %s", fe->err);
	return c.capacity;
}

/* One CONFIG_CHANGE_MSG arrives on the back-end channel within 3 s. */
static void expect_config_change(struct ffe *fe, const char *after)
{
	struct ffe_msg *m = malloc(sizeof(*m));
	int r = ffe_backend_recv(fe, m, 3000);

	cr_assert_eq(r, 0, "no message on the back-end channel within 3 s after %s: %s", after,
		     strerror(-r));
	cr_expect_eq(m->hdr.request, FFE_BACKEND_CONFIG_CHANGE_MSG, "after %s: back-end request %u, "
		     "expected CONFIG_CHANGE_MSG (%u)", after, m->hdr.request,
		     FFE_BACKEND_CONFIG_CHANGE_MSG);
	cr_expect_eq(m->hdr.flags, FFE_FLAG_VERSION, "after %s: CONFIG_CHANGE_MSG flags 0x%x", after,
		     m->hdr.flags);
	cr_expect_eq(m->hdr.size, 0u, "after %s: CONFIG_CHANGE_MSG size %u", after, m->hdr.size);
	cr_expect_eq(m->nfds, 0u, "after %s: CONFIG_CHANGE_MSG with %u fds", after, m->nfds);
	ffe_msg_close_fds(m);
	free(m);
}

static void expect_no_config_change(struct ffe *fe, const char *after)
{
	struct ffe_msg *m = malloc(sizeof(*m));
	int r = ffe_backend_recv(fe, m, 300);

	cr_expect_eq(r, -ETIMEDOUT, "after %s: back-end channel gave %s (request %u)", after,
		     r ? strerror(-r) : "a message", r ? 0 : m->hdr.request);
	if (r == 0)
		ffe_msg_close_fds(m);
	free(m);
}

/* Status of one request of len bytes at sector (OUT of a pattern or IN). */
static int io_status(struct ffe_vq *vq, uint32_t type, uint64_t sector, size_t len)
{
	uint8_t *b = malloc(len);
	int s;

	ffe_pattern(b, len, sector);
	s = ffe_blk_req(vq, type, sector, type == FFE_BLK_T_OUT ? b : NULL,
			type == FFE_BLK_T_OUT ? len : 0, type == FFE_BLK_T_IN ? b : NULL,
			type == FFE_BLK_T_IN ? len : 0, NULL, NULL);
	free(b);
	return s;
}

static void expect_ioerr_at(struct ffe_vq *vq, uint64_t sector, size_t len, const char *what)
{
	int s = io_status(vq, FFE_BLK_T_OUT, sector, len);

	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT at sector %" PRIu64 " (%s): status %d", sector, what, s);
	s = io_status(vq, FFE_BLK_T_IN, sector, len);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN at sector %" PRIu64 " (%s): status %d", sector, what, s);
}

static unsigned loops_done(struct ioloop *l, unsigned n)
{
	unsigned d = 0;

	for (unsigned i = 0; i < n; i++)
		d += __atomic_load_n(&l[i].done, __ATOMIC_RELAXED);
	return d;
}

/* ---- ram --------------------------------------------------------------------- */

Test(resize, ram_grow_under_io_is_announced)
{
	const uint64_t new_size = 64 * MiB, old_end = A_SIZE / SECT, new_end = new_size / SECT;
	struct ffe *fe = live_fe(DEV_A, A_QUEUES, true);
	struct ioloop l[A_QUEUES - 1];
	struct ffe_deadline dl;
	struct vdev_params p;
	unsigned before;

	cr_assert_eq(capacity(fe), old_end);
	expect_ioerr_at(&fe->vq[0], old_end, 4096, "past the end before the resize");
	memset(l, 0, sizeof(l));
	for (unsigned i = 0; i < A_QUEUES - 1; i++) {
		l[i].vq = &fe->vq[i + 1];
		l[i].base = 30000 + i * 512;
		l[i].seed = 0x7000 + i * 100000;
	}
	{
		pthread_t th[A_QUEUES - 1];

		for (unsigned i = 0; i < A_QUEUES - 1; i++)
			pthread_create(&th[i], NULL, ioloop_worker, &l[i]);
		usleep(20000);
		resize_ok(DEV_A, new_size, false);
		before = loops_done(l, A_QUEUES - 1);
		expect_config_change(fe, "a grow");
		cr_expect_eq(capacity(fe), new_end, "capacity after growing to %" PRIu64 " bytes",
			     new_size);
		/* the rings kept running: the loops go on without a reconnect */
		ffe_deadline_start(&dl, 5000);
		while (loops_done(l, A_QUEUES - 1) < before + 10 && ffe_deadline_left(&dl))
			usleep(1000);
		for (unsigned i = 0; i < A_QUEUES - 1; i++) {
			l[i].stop = true;
			pthread_join(th[i], NULL);
			cr_expect(!l[i].err[0], "I/O across the resize: %s", l[i].err);
		}
		cr_expect_geq(loops_done(l, A_QUEUES - 1), before + 10,
			      "the queues did no I/O after the resize");
	}
	/* past the old end, across it, the new tail zero, the new end enforced */
	fx_read_check(&fe->vq[0], old_end + 2048, 65536, 0, NULL, "the grown tail (never written)");
	fx_rw_verify(&fe->vq[0], old_end + 100, 65536, 0x7100, NULL);
	fx_rw_verify(&fe->vq[0], old_end - 8, 8192, 0x7101, NULL);
	fx_rw_verify(&fe->vq[1], new_end - 16, 8192, 0x7102, NULL);
	expect_ioerr_at(&fe->vq[0], new_end, 4096, "past the new end");
	expect_ioerr_at(&fe->vq[0], new_end - 4, 4096, "across the new end");
	vdev_get_params(fx.dev[DEV_A], &p);
	cr_expect_eq(p.size, new_size);
	cr_expect_eq(vdev_get_state(fx.dev[DEV_A]), VDEV_CONNECTED);
	check_golden(&fe->vq[2]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(resize, ram_shrink_over_an_empty_tail_and_over_data)
{
	struct ffe *fe = live_fe(DEV_A, 2, true);
	char err[VDEV_ERR_MAX];
	const uint64_t data_sector = 20 * MiB / SECT;
	int r;

	/* the tail 24..32 MiB was never written: accepted */
	resize_ok(DEV_A, 24 * MiB, false);
	expect_config_change(fe, "a shrink over an empty tail");
	cr_expect_eq(capacity(fe), 24 * MiB / SECT);
	fx_rw_verify(&fe->vq[0], 24 * MiB / SECT - 16, 8192, 0x7200, NULL);
	expect_ioerr_at(&fe->vq[1], 24 * MiB / SECT, 4096, "past the shrunk end");

	/* data at 20 MiB: refused, and nothing changed */
	fx_write_pattern(&fe->vq[0], data_sector, 65536, 0x7201, NULL);
	r = set_size(DEV_A, 16 * MiB, false, err);
	cr_log_info("shrink over data: %s", err);
	cr_expect_eq(r, -EBUSY, "shrink over data without allow_shrink: %d (%s)", r, err);
	cr_expect(strstr(err, "allow_shrink") != NULL, "the reason does not say how: '%s'", err);
	expect_no_config_change(fe, "a refused shrink");
	cr_expect_eq(capacity(fe), 24 * MiB / SECT, "capacity after a refused shrink");
	fx_read_check(&fe->vq[1], data_sector, 65536, 0x7201, NULL, "data a refused shrink would cut");
	{
		struct vdev_params p;

		vdev_get_params(fx.dev[DEV_A], &p);
		cr_expect_eq(p.size, 24 * MiB, "size after a refused shrink");
	}

	/* the deliberate choice */
	resize_ok(DEV_A, 16 * MiB, true);
	expect_config_change(fe, "a shrink with allow_shrink");
	cr_expect_eq(capacity(fe), 16 * MiB / SECT);
	expect_ioerr_at(&fe->vq[0], data_sector, 4096, "where the cut data was");
	/* grown again, the cut range reads as zeros: the data is gone */
	resize_ok(DEV_A, 24 * MiB, false);
	expect_config_change(fe, "a grow after the shrink");
	fx_read_check(&fe->vq[1], data_sector, 65536, 0, NULL,
		      "range cut by a shrink, then grown again");
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(resize, other_changes_are_refused_while_connected)
{
	struct ffe *fe = live_fe(DEV_A, 2, true);
	struct vdev_params p0, p;
	char err[VDEV_ERR_MAX];
	int r;

	vdev_get_params(fx.dev[DEV_A], &p0);
	for (unsigned c = 0; c < 6; c++) {
		static const char *const what[] = { "queues", "serial", "readonly", "block_size",
						    "backing", "size and serial together" };

		p = p0;
		switch (c) {
		case 0: p.queues = 2; break;
		case 1: snprintf(p.serial, sizeof(p.serial), "other-serial"); break;
		case 2: p.readonly = true; break;
		case 3: p.block_size = 4096; break;
		case 4: p.backing = BE_NULL; break;
		case 5: p.size = 48 * MiB; snprintf(p.serial, sizeof(p.serial), "other"); break;
		}
		err[0] = '\0';
		r = vdev_set_params(fx.dev[DEV_A], &p, err, sizeof(err));
		cr_log_info("%s changed while connected: %d (%s)", what[c], r, err);
		cr_expect_eq(r, -EBUSY, "%s changed while connected: %d (%s)", what[c], r, err);
		cr_expect(err[0], "%s refused without a reason", what[c]);
		vdev_get_params(fx.dev[DEV_A], &p);
		cr_expect(p.size == p0.size && p.queues == p0.queues && p.readonly == p0.readonly &&
			  p.block_size == p0.block_size && p.backing == p0.backing &&
			  strcmp(p.serial, p0.serial) == 0, "%s: the parameters changed anyway", what[c]);
	}
	expect_no_config_change(fe, "refused changes");
	cr_expect_eq(capacity(fe), A_SIZE / SECT);
	{
		char id[FFE_BLK_ID_BYTES + 1] = "";

		cr_expect_eq(ffe_blk_get_id(&fe->vq[0], id), 0);
		cr_expect(strncmp(id, A_SERIAL, FFE_BLK_ID_BYTES) == 0, "serial now '%.20s'", id);
	}
	fx_rw_verify(&fe->vq[1], 6000, 16384, 0x7300, NULL);
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(resize, without_a_back_end_channel_the_next_config_read_sees_it)
{
	struct ffe *fe = live_fe(DEV_A, 1, false);

	cr_assert_lt(fe->backend_fd, 0);
	resize_ok(DEV_A, 48 * MiB, false);
	cr_expect_eq(capacity(fe), 48 * MiB / SECT);
	fx_rw_verify(&fe->vq[0], 40 * MiB / SECT, 65536, 0x7400, NULL);
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

/* ---- null ---------------------------------------------------------------------- */

Test(resize, null_grow_and_shrink)
{
	struct vdev_params p;
	struct ffe *fe;
	unsigned n;
	uint8_t buf[8192];
	int s;

	fx_params(&p, 16 * MiB, 2, "vhostd-int-null");
	p.backing = BE_NULL;
	n = fx_add("vbN", &p);
	fe = live_fe(n, 2, true);
	cr_assert_eq(capacity(fe), 16 * MiB / SECT);
	expect_ioerr_at(&fe->vq[0], 24 * MiB / SECT, 4096, "past the end of a null device");

	resize_ok(n, 32 * MiB, false);
	expect_config_change(fe, "a grow of a null device");
	cr_expect_eq(capacity(fe), 32 * MiB / SECT);
	ffe_pattern(buf, sizeof(buf), 0x7500);
	s = ffe_blk_write(&fe->vq[1], 24 * MiB / SECT, buf, sizeof(buf), NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "OUT past the old end of a grown null device: %d", s);
	s = ffe_blk_read(&fe->vq[1], 24 * MiB / SECT, buf, sizeof(buf), NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "IN past the old end of a grown null device: %d", s);
	expect_ioerr_at(&fe->vq[0], 32 * MiB / SECT, 4096, "past the new end of a null device");

	/* a null device holds no data: any shrink is an empty tail */
	resize_ok(n, 8 * MiB, false);
	expect_config_change(fe, "a shrink of a null device");
	cr_expect_eq(capacity(fe), 8 * MiB / SECT);
	expect_ioerr_at(&fe->vq[1], 12 * MiB / SECT, 4096, "past the shrunk end of a null device");
	s = io_status(&fe->vq[0], FFE_BLK_T_OUT, 4 * MiB / SECT, 4096);
	cr_expect_eq(s, FFE_BLK_S_OK, "OUT inside a shrunk null device: %d", s);
	fx_close_wait(n, fe, VDEV_LISTENING);
	healthy();
}

/* ---- status -------------------------------------------------------------------- */

Test(status, set_and_get_through_a_live_core)
{
	struct ffe *fe = live_fe(DEV_A, 2, false);
	const uint8_t steps[] = {
		FFE_STATUS_ACKNOWLEDGE,
		FFE_STATUS_ACKNOWLEDGE | FFE_STATUS_DRIVER,
		FFE_STATUS_ACKNOWLEDGE | FFE_STATUS_DRIVER | FFE_STATUS_FEATURES_OK,
		FFE_STATUS_ACKNOWLEDGE | FFE_STATUS_DRIVER | FFE_STATUS_FEATURES_OK |
			FFE_STATUS_DRIVER_OK,
	};
	uint8_t st = 0xff;
	uint32_t base = 0;
	int r;

	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_STATUS), "STATUS not offered (0x%" PRIx64 ")",
		  fe->dev_protocol_features);
	cr_assert_eq(ffe_get_status(fe, &st), 0, "%s", fe->err);
	cr_expect_eq(st, 0, "status of a new connection: 0x%02x", st);
	for (unsigned i = 0; i < sizeof(steps); i++) {
		cr_assert_eq(ffe_set_status(fe, steps[i]), 0, "SET_STATUS 0x%02x: %s", steps[i], fe->err);
		cr_assert_eq(ffe_get_status(fe, &st), 0, "%s", fe->err);
		cr_expect_eq(st, steps[i], "GET_STATUS after SET_STATUS 0x%02x: 0x%02x", steps[i], st);
	}
	fx_rw_verify(&fe->vq[0], 7000, 16384, 0x7600, NULL);
	/* not a status byte: refused, the status kept */
	r = ffe_set_u64(fe, FFE_SET_STATUS, 0x104);
	cr_expect_gt(r, 0, "SET_STATUS 0x104: %d", r);
	cr_assert_eq(ffe_get_status(fe, &st), 0, "%s", fe->err);
	cr_expect_eq(st, steps[3], "GET_STATUS after a refused SET_STATUS: 0x%02x", st);

	/* QEMU's stop: SET_STATUS 0, then GET_VRING_BASE must still be right */
	fx_write_pattern(&fe->vq[1], 7100, 8192, 0x7601, NULL);
	cr_assert_eq(ffe_set_status(fe, 0), 0, "%s", fe->err);
	cr_assert_eq(ffe_get_status(fe, &st), 0, "%s", fe->err);
	cr_expect_eq(st, 0, "GET_STATUS after SET_STATUS 0: 0x%02x", st);
	cr_assert_eq(ffe_vq_stop(fe, 1, &base), 0, "%s", fe->err);
	cr_expect_eq(base, fe->vq[1].avail_idx, "GET_VRING_BASE after SET_STATUS 0: %u, expected %u",
		     base, fe->vq[1].avail_idx);
	cr_assert_eq(ffe_vq_resume(fe, 1), 0, "%s", fe->err);
	cr_assert_eq(ffe_set_status(fe, steps[3]), 0, "%s", fe->err);
	fx_read_check(&fe->vq[1], 7100, 8192, 0x7601, NULL, "after a stop and resume");
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);

	/* a new connection starts from 0 again */
	fe = live_fe(DEV_A, 1, false);
	cr_assert_eq(ffe_get_status(fe, &st), 0, "%s", fe->err);
	cr_expect_eq(st, 0, "status of the next connection: 0x%02x", st);
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

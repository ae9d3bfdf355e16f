/* Integration suite `nego`: feature and protocol-feature negotiation, the
 * config space, REPLY_ACK / NEED_REPLY, the messages QEMU adds, and the
 * inflight region a well-behaved front-end asks for.  The fixture (devices
 * A and B in one core): vu_fixture.h. */
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

/* ---- negotiation and config space --------------------------------------------- */

Test(nego, features_offered)
{
	struct ffe *fe = fx_open(DEV_A, NULL);
	uint64_t f = 0;
	int r = ffe_get_u64(fe, FFE_GET_FEATURES, &f);

	cr_assert_eq(r, 0, "GET_FEATURES: %s (%s)", strerror(-r), fe->err);
	cr_log_info("features offered: %#" PRIx64, f);
	static const struct { int bit; const char *name; } must[] = {
		{ FFE_F_VERSION_1, "VERSION_1" },
		{ FFE_F_PROTOCOL_FEATURES, "PROTOCOL_FEATURES" },
		{ FFE_F_RING_INDIRECT_DESC, "INDIRECT_DESC" },
		{ FFE_F_RING_EVENT_IDX, "EVENT_IDX" },
		{ FFE_F_BLK_SEG_MAX, "BLK_F_SEG_MAX" },
		{ FFE_F_BLK_BLK_SIZE, "BLK_F_BLK_SIZE" },
		{ FFE_F_BLK_FLUSH, "BLK_F_FLUSH" },
		{ FFE_F_BLK_MQ, "BLK_F_MQ" },
		{ FFE_F_BLK_DISCARD, "BLK_F_DISCARD" },
		{ FFE_F_BLK_WRITE_ZEROES, "BLK_F_WRITE_ZEROES" },
	};
	for (unsigned i = 0; i < sizeof(must) / sizeof(must[0]); i++)
		cr_expect(f & FFE_BIT(must[i].bit), "feature %s (bit %d) not offered (%#" PRIx64 ")",
			  must[i].name, must[i].bit, f);
	cr_expect(!(f & FFE_BIT(FFE_F_BLK_RO)), "read-write device offers BLK_F_RO");
	ffe_close(fe);
}

Test(nego, protocol_features_and_queue_num)
{
	struct ffe *fe = fx_negotiated(DEV_A);

	cr_log_info("protocol features offered: %#" PRIx64, fe->dev_protocol_features);
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_MQ), "PROTOCOL_F_MQ not offered");
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_REPLY_ACK), "PROTOCOL_F_REPLY_ACK not offered");
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_CONFIG), "PROTOCOL_F_CONFIG not offered");
	cr_expect_eq(fe->queue_num, A_QUEUES, "GET_QUEUE_NUM = %u, device has %u queues",
		     fe->queue_num, A_QUEUES);
	ffe_close(fe);

	fe = fx_negotiated(DEV_B);
	cr_expect_eq(fe->queue_num, B_QUEUES, "GET_QUEUE_NUM of B = %u", fe->queue_num);
	ffe_close(fe);
}

static void check_config(unsigned dev, uint64_t size, unsigned bs, unsigned queues, bool ro)
{
	struct ffe *fe = fx_negotiated(dev);
	struct ffe_blk_config *c = &fe->cfg;
	uint64_t f = fe->dev_features;

	cr_assert_eq(fe->cfg_len, sizeof(*c), "GET_CONFIG did not return %zu bytes", sizeof(*c));
	cr_log_info("%s config: capacity %" PRIu64 " size_max %u seg_max %u blk_size %u "
		    "pbe %u min_io %u opt_io %u writeback %u num_queues %u max_discard %u/%u "
		    "align %u max_wz %u/%u wz_unmap %u", fx.name[dev], c->capacity, c->size_max,
		    c->seg_max, c->blk_size, c->physical_block_exp, c->min_io_size, c->opt_io_size,
		    c->writeback, c->num_queues, c->max_discard_sectors, c->max_discard_seg,
		    c->discard_sector_alignment, c->max_write_zeroes_sectors,
		    c->max_write_zeroes_seg, c->write_zeroes_may_unmap);
	cr_expect_eq(c->capacity, size / 512, "capacity %" PRIu64 ", expected %" PRIu64,
		     c->capacity, size / 512);
	cr_expect_eq(c->blk_size, bs, "blk_size %u, expected %u", c->blk_size, bs);
	cr_expect_eq(c->num_queues, queues, "num_queues %u, expected %u", c->num_queues, queues);
	cr_expect_gt(c->seg_max, 0u, "seg_max is 0");
	if (f & FFE_BIT(FFE_F_BLK_SIZE_MAX))
		cr_expect_geq(c->size_max, 4096u, "size_max %u < 4096", c->size_max);
	cr_expect_leq(c->writeback, 1u, "writeback = %u", c->writeback);
	if (f & FFE_BIT(FFE_F_BLK_TOPOLOGY))
		cr_expect_lt(c->physical_block_exp, 16u, "physical_block_exp %u", c->physical_block_exp);
	if (f & FFE_BIT(FFE_F_BLK_DISCARD)) {
		cr_expect_gt(c->max_discard_sectors, 0u, "DISCARD offered, max_discard_sectors 0");
		cr_expect_gt(c->max_discard_seg, 0u, "DISCARD offered, max_discard_seg 0");
	}
	if (f & FFE_BIT(FFE_F_BLK_WRITE_ZEROES)) {
		cr_expect_gt(c->max_write_zeroes_sectors, 0u, "WRITE_ZEROES offered, max sectors 0");
		cr_expect_gt(c->max_write_zeroes_seg, 0u, "WRITE_ZEROES offered, max seg 0");
	}
	cr_expect_eq(!!(f & FFE_BIT(FFE_F_BLK_RO)), ro, "BLK_F_RO offered=%d, readonly=%d",
		     !!(f & FFE_BIT(FFE_F_BLK_RO)), ro);
	if (ro)
		cr_expect(!(f & FFE_BIT(FFE_F_BLK_WRITE_ZEROES)) && !(f & FFE_BIT(FFE_F_BLK_DISCARD)),
			  "read-only device offers DISCARD/WRITE_ZEROES (%#" PRIx64 ")", f);

	/* a partial read at an offset returns the same bytes */
	{
		uint32_t part[2] = { 0, 0 };
		int r = ffe_get_config(fe, 8, part, 8);

		cr_expect_eq(r, 0, "GET_CONFIG offset 8 len 8: %s (%s)", strerror(-r), fe->err);
		cr_expect(part[0] == c->size_max && part[1] == c->seg_max,
			  "GET_CONFIG(8, 8) = %u %u, full read says %u %u", part[0], part[1],
			  c->size_max, c->seg_max);
	}
	ffe_close(fe);
}

Test(nego, config_space)
{
	check_config(DEV_A, A_SIZE, 512, A_QUEUES, false);
	check_config(DEV_B, B_SIZE, 512, B_QUEUES, false);
}

Test(nego, config_block_size_4096_and_readonly)
{
	struct vdev_params p;
	unsigned d4k, dro;

	fx_params(&p, 16 * MiB, 3, "bs4k");
	p.block_size = 4096;
	d4k = fx_add("vb4k", &p);
	fx_params(&p, 4 * MiB, 1, "ro");
	p.readonly = true;
	dro = fx_add("vbro", &p);
	check_config(d4k, 16 * MiB, 4096, 3, false);
	check_config(dro, 4 * MiB, 512, 1, true);
}

Test(nego, legacy_no_protocol_features)
{
	/* A front-end that does not ack PROTOCOL_FEATURES: rings start enabled
	 * without SET_VRING_ENABLE, and nothing needs REPLY_ACK. */
	uint64_t want = FFE_BIT(FFE_F_VERSION_1) | FFE_BIT(FFE_F_BLK_FLUSH) |
			FFE_BIT(FFE_F_BLK_BLK_SIZE) | FFE_BIT(FFE_F_BLK_SEG_MAX);
	struct ffe *fe = fx_ready(DEV_A, NULL, want, 1, 64);

	cr_expect_eq(fe->features, want, "acked %#" PRIx64, fe->features);
	fx_rw_verify(&fe->vq[0], 100, 8192, 11, NULL);
	check_golden(&fe->vq[0]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(nego, reply_ack_on_every_message)
{
	/* ffe_call sets NEED_REPLY on every message without a reply once
	 * REPLY_ACK is negotiated and fails on a nonzero ack: the whole set-up
	 * (SET_OWNER, SET_FEATURES, SET_MEM_TABLE, SET_VRING_*) must ack 0. */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, A_QUEUES, 256);

	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_REPLY_ACK));
	cr_expect_eq(ffe_vq_enable(fe, 0, true), 0, "SET_VRING_ENABLE 1 again: %s", fe->err);
	fx_rw_verify(&fe->vq[3], 200, 4096, 12, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(nego, need_reply_on_get_gives_one_reply)
{
	/* NEED_REPLY on a request that has its own reply: exactly that reply,
	 * no extra ack behind it. */
	struct ffe *fe = fx_negotiated(DEV_A);
	struct ffe_msg *m = malloc(sizeof(*m));
	int r;

	r = ffe_send_raw(fe, FFE_GET_FEATURES, FFE_FLAG_VERSION | FFE_FLAG_NEED_REPLY, 0, NULL, 0, NULL, 0);
	cr_assert_eq(r, 0);
	r = ffe_recv_raw(fe, m, 3000);
	cr_assert_eq(r, 0, "no reply to GET_FEATURES+NEED_REPLY: %s", strerror(-r));
	cr_expect(m->hdr.request == FFE_GET_FEATURES && m->hdr.size == 8,
		  "reply: request %u size %u", m->hdr.request, m->hdr.size);
	r = ffe_send_raw(fe, FFE_GET_PROTOCOL_FEATURES, FFE_FLAG_VERSION, 0, NULL, 0, NULL, 0);
	cr_assert_eq(r, 0);
	r = ffe_recv_raw(fe, m, 3000);
	cr_assert_eq(r, 0, "no reply to GET_PROTOCOL_FEATURES: %s", strerror(-r));
	cr_expect_eq(m->hdr.request, FFE_GET_PROTOCOL_FEATURES,
		     "expected the GET_PROTOCOL_FEATURES reply, got request %u (flags %#x size %u): "
		     "an extra ack was sent for GET_FEATURES", m->hdr.request, m->hdr.flags, m->hdr.size);
	free(m);
	ffe_close(fe);
}

Test(nego, qemu_extra_messages)
{
	/* Messages QEMU sends to vhost-user-blk back-ends that a back-end must
	 * take in stride: SET_VRING_ERR with an eventfd, SET_VRING_ENABLE 0/1,
	 * SET_VRING_CALL replaced while running. */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 128);
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), r;
	uint64_t v = 1;

	r = ffe_call(fe, FFE_SET_VRING_ERR, &v, 8, &efd, 1);
	cr_expect_eq(r, 0, "SET_VRING_ERR q1 with an eventfd: %d (%s)", r, fe->err);
	close(efd);
	fx_rw_verify(&fe->vq[1], 300, 4096, 13, NULL);

	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	v = 0;
	r = ffe_call(fe, FFE_SET_VRING_CALL, &v, 8, &efd, 1);
	cr_expect_eq(r, 0, "SET_VRING_CALL q0 replaced: %d (%s)", r, fe->err);
	close(fe->vq[0].callfd);
	fe->vq[0].callfd = efd;
	fx_rw_verify(&fe->vq[0], 310, 4096, 14, NULL);

	cr_expect_eq(ffe_vq_enable(fe, 1, false), 0, "SET_VRING_ENABLE q1 0: %s", fe->err);
	cr_expect_eq(ffe_vq_enable(fe, 1, true), 0, "SET_VRING_ENABLE q1 1: %s", fe->err);
	fx_rw_verify(&fe->vq[1], 320, 4096, 15, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ---- inflight tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) ------------- */

Test(nego, inflight_fd_offered_and_sized)
{
	static const uint16_t shapes[][2] = { { 1, 1 }, { 1, 1024 }, { 4, 128 }, { 3, 256 },
					      { 64, 1024 }, { 2, 100 } };
	struct ffe_opts o;
	struct ffe *fe;

	/* offered, and set up as QEMU does: GET_INFLIGHT_FD, SET_INFLIGHT_FD */
	ffe_opts_init(&o);
	o.inflight = true;
	fe = fx_ready(DEV_A, &o, 0, A_QUEUES, 128);
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_INFLIGHT_SHMFD),
		  "protocol features %#" PRIx64 " lack INFLIGHT_SHMFD", fe->dev_protocol_features);
	cr_expect_eq(fe->inflight_size, A_QUEUES * ffe_inflight_queue_size(128),
		     "region of %" PRIu64 " bytes for 4 queues of 128 (%zu expected)",
		     fe->inflight_size, A_QUEUES * ffe_inflight_queue_size(128));
	/* the back-end tracks requests in it: after I/O every queue's region
	 * has seen the requests (counters) and retired them (no marks,
	 * used_idx == used->idx) */
	for (unsigned q = 0; q < A_QUEUES; q++) {
		struct ffe_inflight_queue *iq = ffe_inflight_q(fe, q);
		unsigned marks = 0, counted = 0;

		fx_rw_verify(&fe->vq[q], 7000 + q * 64, 8192, 7100 + q, NULL);
		cr_assert_not_null(iq);
		cr_expect_eq(iq->version, 1);
		cr_expect_eq(iq->desc_num, 128);
		for (unsigned h = 0; h < 128; h++) {
			marks += iq->desc[h].inflight != 0;
			counted += iq->desc[h].counter != 0;
		}
		cr_expect_eq(marks, 0u, "q%u: %u heads still marked in flight after their "
			     "completion", q, marks);
		cr_expect_gt(counted, 0u, "q%u: no request was ever recorded in the inflight region", q);
		cr_expect_eq(iq->used_idx, ffe_vq_used_idx(&fe->vq[q]), "q%u: region used_idx %u, "
			     "ring used idx %u", q, iq->used_idx, ffe_vq_used_idx(&fe->vq[q]));
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);

	/* sizes: num_queues x the queue's size aligned to 64 */
	for (unsigned i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		struct ffe_inflight_msg in = { .num_queues = shapes[i][0], .queue_size = shapes[i][1] };
		uint64_t msize, want = shapes[i][0] * ffe_inflight_queue_size(shapes[i][1]);
		struct stat st = { 0 };
		enum outcome oc;
		int fd;

		fe = fx_negotiated(DEV_A);
		oc = get_inflight_raw(fe, sizeof(in), &in, false, &fd, &msize);
		cr_expect_eq(oc, O_REPLY, "GET_INFLIGHT_FD for %u queues of %u: %s", shapes[i][0],
			     shapes[i][1], oname(oc));
		if (oc == O_REPLY) {
			cr_expect_eq(msize, want, "GET_INFLIGHT_FD %ux%u: mmap_size %" PRIu64 ", expected %"
				     PRIu64, shapes[i][0], shapes[i][1], msize, want);
			cr_expect(fstat(fd, &st) == 0 && (uint64_t)st.st_size >= msize,
				  "GET_INFLIGHT_FD %ux%u: fd of %lld bytes for mmap_size %" PRIu64,
				  shapes[i][0], shapes[i][1], (long long)st.st_size, msize);
			close(fd);
		}
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	}
}

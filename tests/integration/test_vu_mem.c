/* Integration suite `mem`: memory tables of several regions (one fd each
 * or shared), buffers across contiguous regions, a table replaced while the
 * rings run and under I/O.  The fixture: vu_fixture.h. */
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

/* ---- memory tables ---------------------------------------------------------- */

static void multi_region_io(unsigned nregions, bool fd_per_region)
{
	struct ffe_opts o;
	struct ffe *fe;
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 4096, false }, { FFE_L_NATURAL, 512, true },
		{ FFE_L_MERGED, 0, false }, { FFE_L_CHOPPED, 3000, true },
	};

	ffe_opts_init(&o);
	o.nregions = nregions;
	o.fd_per_region = fd_per_region;
	fe = fx_ready(DEV_A, &o, 0, A_QUEUES, 128);
	for (unsigned q = 0; q < A_QUEUES; q++)
		for (unsigned l = 0; l < 4; l++)
			fx_rw_verify(&fe->vq[q], 7000 + q * 512 + l * 64, 32768, 2000 + q * 10 + l, &lays[l]);
	check_golden(&fe->vq[1]);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

Test(mem, two_regions) { multi_region_io(2, false); }
Test(mem, three_regions_fd_each) { multi_region_io(3, true); }
Test(mem, eight_regions) { multi_region_io(8, false); }

Test(mem, buffer_straddles_contiguous_regions)
{
	/* Two regions back to back in guest-physical space but in different
	 * files (so not contiguous for the back-end): a buffer crossing the
	 * boundary must be split correctly, or refused with IOERR. */
	struct ffe_opts o;
	struct ffe *fe;
	struct ffe_vq *vq;
	struct ffe_buf h, st;
	uint8_t *lo, *hi, ref[4096];
	uint64_t gpa;
	struct ffe_blk_hdr hdr;
	int s;

	ffe_opts_init(&o);
	o.nregions = 2;
	o.fd_per_region = true;
	o.contiguous_gpa = true;
	fe = fx_open(DEV_A, &o);
	/* keep the rings away from the bytes around the boundary */
	cr_assert_eq(ffe_alloc(fe, 65536, 4096, 1, &h), 0);
	cr_assert_eq(ffe_setup(fe, 0, 2, 64), 0, "%s", fe->err);
	vq = &fe->vq[1];
	cr_assert_eq(fe->r[0].gpa + fe->r[0].size, fe->r[1].gpa);
	gpa = fe->r[1].gpa - 2048;
	lo = fe->r[0].hva + fe->r[0].size - 2048;
	hi = fe->r[1].hva;
	cr_assert_eq(ffe_alloc(fe, 16, 16, 1, &h), 0);
	cr_assert_eq(ffe_alloc(fe, 1, 1, 1, &st), 0);

	for (int dir = 0; dir < 2; dir++) {       /* 0: OUT from the straddling buffer, 1: IN into it */
		uint16_t u = ffe_vq_used_idx(vq);

		hdr = (struct ffe_blk_hdr){ .type = dir ? FFE_BLK_T_IN : FFE_BLK_T_OUT, .sector = 7900 };
		memcpy(h.hva, &hdr, 16);
		*(uint8_t *)st.hva = 0xee;
		if (dir == 0) {
			ffe_pattern(ref, 4096, 2100);
			memcpy(lo, ref, 2048);
			memcpy(hi, ref + 2048, 2048);
		} else {
			memset(lo, 0, 2048);
			memset(hi, 0, 2048);
		}
		*ffe_vq_desc(vq, 0) = (struct ffe_desc){ h.gpa, 16, FFE_DESC_F_NEXT, 1 };
		*ffe_vq_desc(vq, 1) = (struct ffe_desc){ gpa, 4096,
			(uint16_t)(FFE_DESC_F_NEXT | (dir ? FFE_DESC_F_WRITE : 0)), 2 };
		*ffe_vq_desc(vq, 2) = (struct ffe_desc){ st.gpa, 1, FFE_DESC_F_WRITE, 0 };
		ffe_vq_publish(vq, 0);
		ffe_vq_kick_raw(vq);
		cr_assert_eq(ffe_vq_wait_used_change(vq, u, 3000), 0,
			     "straddling %s: no completion", dir ? "IN" : "OUT");
		vq->last_used = ffe_vq_used_idx(vq);
		s = *(uint8_t *)st.hva;
		cr_log_info("buffer straddling two regions (%s): status %d", dir ? "IN" : "OUT", s);
		cr_expect(s == FFE_BLK_S_OK || s == FFE_BLK_S_IOERR, "straddling %s: status %d",
			  dir ? "IN" : "OUT", s);
		if (s != FFE_BLK_S_OK)
			break;
		if (dir == 0) {
			uint8_t b[4096];

			fx_read_ok(&fe->vq[0], 7900, b, 4096, NULL);
			fx_check_pattern(b, 4096, 2100, "data written from a buffer straddling two regions");
		} else {
			cr_expect(memcmp(lo, ref, 2048) == 0 && memcmp(hi, ref + 2048, 2048) == 0,
				  "data read into a buffer straddling two regions is wrong");
		}
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

Test(mem, mem_table_replaced_while_running)
{
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, A_QUEUES, 64);

	for (unsigned q = 0; q < A_QUEUES; q++)
		fx_rw_verify(&fe->vq[q], 8000 + q * 64, 8192, 2200 + q, NULL);
	for (int i = 0; i < 3; i++) {
		int r = ffe_set_mem_table(fe);

		cr_assert_eq(r, 0, "SET_MEM_TABLE #%d while rings run: %d (%s)", i + 2, r, fe->err);
		for (unsigned q = 0; q < A_QUEUES; q++)
			fx_rw_verify(&fe->vq[q], 8300 + q * 64, 8192, 2300 + q + i * 10, NULL);
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
}

/* ==== hostile front-end suite ================================================
 *
 * Issue 6 asks that for each of these cases the daemon survives, other
 * devices keep serving, and the misbehaving connection gets an error or is
 * dropped.  Every hostile test ends with healthy() (A and B serve verified
 * I/O on new connections, A's golden data is intact); the ones marked (B)
 * also keep device B busy during the attack and bound its latency.
 *
 *   descriptor loops ............ badring/loop_in_ring, badring/self_loop,
 *                                 badring/indirect_table_malformed (loop in a table),
 *                                 badring/indirect_chain_beyond_any_limit (200-entry loop)
 *   chains longer than the queue  badring/chain_longer_than_queue,
 *                                 badring/indirect_chain_beyond_any_limit
 *   addresses outside or
 *   straddling regions .......... badring/addresses_outside_memory (unmapped, in the
 *                                 hole, running off region 0), badring/indirect_table_malformed
 *                                 (table running off its region); the valid straddle:
 *                                 mem/buffer_straddles_contiguous_regions
 *   length wrap-around .......... badring/length_wraparound, badring/addresses_outside_memory
 *                                 (addr+len past 2^64, len 2^32-1), badmsg/mem_table_overflowing_fields
 *   write-only/read-only flags
 *   on the wrong descriptors .... badring/wrong_write_flags, badring/direction_and_framing_violations
 *   short headers ............... badring/short_header (virtio-blk header), badmsg/truncated_messages
 *                                 (vhost-user header)
 *   avail index jumping past
 *   the queue size .............. badring/avail_idx_jumps, badring/head_out_of_range
 *   ring addresses outside memory badring/ring_addr_outside_memory_then_kick,
 *                                 badmsg/ring_setup_out_of_order_and_bad_addresses
 *   a region larger than its fd . badmsg/mem_table_region_beyond_fd,
 *                                 badring/mem_table_fd_truncated_after_set (shrunk after the check),
 *                                 badmsg/inflight_region_lies, badring/inflight_fd_truncated_after_set
 *   lying region counts ......... badmsg/mem_table_lying_count_and_missing_fds,
 *                                 badmsg/mem_table_overlapping_regions
 *   oversized payload sizes ..... badmsg/payload_larger_than_allowed, badmsg/size_field_huge,
 *                                 badmsg/get_config_size_over_256, badmsg/get_config_out_of_range
 *   unknown requests ............ badmsg/unknown_and_unnegotiated_requests
 *   bad queue sizes and indices . badmsg/vring_num_invalid, badmsg/vring_index_out_of_range,
 *                                 badmsg/vring_index_beyond_queue_num, badring/next_out_of_range,
 *                                 badmsg/inflight_bad_shape
 *   disconnect mid-I/O .......... conn/close_with_requests_in_flight,
 *                                 conn/connect_disconnect_100_while_other_serves (B);
 *                                 the back-end dying mid-I/O: test_inflight_crash.c
 *   inflight region that lies ... badmsg/inflight_region_lies (tiny fd, huge sizes, wrong fds),
 *                                 badring/inflight_region_contents_lie,
 *                                 badmsg/get_inflight_fd_while_rings_run
 *   messages split byte by byte . badmsg/messages_split_byte_by_byte (B)
 *   floods ...................... badmsg/flood_of_10k_messages (B),
 *                                 badmsg/slow_reader_does_not_block_other_devices
 *   100 connect/disconnect cycles conn/connect_disconnect_100_while_other_serves (B)
 *   and besides: badmsg/size_field_disagrees_with_request, badmsg/bad_version_flags,
 *   badmsg/kick_and_call_without_fd, badmsg/stray_fds_and_unoffered_features,
 *   badmsg/mem_table_fd_not_mappable, badring/indirect_plus_next_and_direct_after_indirect,
 *   badring/valid_request_before_a_bad_one_completes.
 */

Test(mem, mem_table_swaps_under_io)
{
	/* SET_MEM_TABLE while every queue is busy: the back-end quiesces,
	 * swaps, resumes; no request fails or reads the wrong memory */
	struct ffe_opts o;
	struct ffe *fe;
	struct ioloop l[A_QUEUES];
	pthread_t th[A_QUEUES];

	ffe_opts_init(&o);
	o.nregions = 3;
	fe = fx_ready(DEV_A, &o, 0, A_QUEUES, 64);
	for (unsigned q = 0; q < A_QUEUES; q++) {
		l[q] = (struct ioloop){ .vq = &fe->vq[q], .base = 24000 + q * 512, .seed = 10000000ull * (q + 1) };
		pthread_create(&th[q], NULL, ioloop_worker, &l[q]);
	}
	for (int i = 0; i < 20; i++) {
		int r = ffe_set_mem_table(fe);

		cr_expect_eq(r, 0, "SET_MEM_TABLE #%d under I/O: %d (%s)", i, r, fe->err);
		usleep(5000);
	}
	for (unsigned q = 0; q < A_QUEUES; q++) {
		l[q].stop = true;
		pthread_join(th[q], NULL);
		cr_expect(!l[q].err[0], "%s", l[q].err);
		cr_log_info("q%u: %u write+read cycles during 20 table swaps", q, l[q].done);
	}
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	healthy();
}

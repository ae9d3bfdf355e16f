/* Integration suite `badmsg`, part 1: a hostile front-end's messages:
 * sizes that lie, unknown requests, bad indices, versions and flags,
 * truncated and byte-by-byte messages, a slow reader, a flood of 10k
 * messages.  Each test ends with healthy(): A and B still serve.  The
 * memory-table and inflight cases: test_vu_hostile_mem.c.  The fixture and
 * the helpers that send and classify a message: vu_fixture.h. */
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

/* ---- hostile messages -------------------------------------------------------- */

struct mcase {
	const char *what;
	uint32_t req;
	uint32_t size;
	uint8_t payload[64];
	uint32_t plen;
	bool must_refuse;
};

static void run_mcases(const struct mcase *c, unsigned n, bool with_rings)
{
	for (unsigned i = 0; i < n; i++) {
		struct ffe *fe = with_rings ? fx_ready(DEV_A, NULL, 0, 2, 64) : fx_negotiated(DEV_A);
		enum outcome o = xmit(fe, c[i].req, 0, c[i].size, c[i].payload, c[i].plen, NULL, 0, NULL);

		cr_log_info("%s: backend %s", c[i].what, oname(o));
		if (c[i].must_refuse)
			EXPECT_REFUSED(o, "%s: backend %s; expected a nonzero REPLY_ACK or a dropped "
				       "connection", c[i].what, oname(o));
		else
			cr_expect_neq(o, O_HANG, "%s: backend %s", c[i].what, oname(o));
		finish(fe, o, c[i].what);
	}
}

#define U32LE(x) (uint8_t)(x), (uint8_t)((x) >> 8), (uint8_t)((x) >> 16), (uint8_t)((x) >> 24)

Test(badmsg, size_field_disagrees_with_request)
{
	static const struct mcase c[] = {
		{ "SET_FEATURES with a 4-byte payload", FFE_SET_FEATURES, 4, { 0 }, 4, true },
		{ "SET_FEATURES with no payload", FFE_SET_FEATURES, 0, { 0 }, 0, true },
		{ "SET_PROTOCOL_FEATURES with a 2-byte payload", FFE_SET_PROTOCOL_FEATURES, 2, { 0 }, 2, true },
		{ "SET_VRING_NUM with a 4-byte payload", FFE_SET_VRING_NUM, 4, { 0 }, 4, true },
		{ "SET_VRING_BASE with a 2-byte payload", FFE_SET_VRING_BASE, 2, { 0 }, 2, true },
		{ "SET_VRING_ADDR with a 16-byte payload", FFE_SET_VRING_ADDR, 16, { 0 }, 16, true },
		{ "SET_VRING_KICK with a 4-byte payload", FFE_SET_VRING_KICK, 4, { 0 }, 4, true },
		{ "SET_VRING_ENABLE with a 4-byte payload", FFE_SET_VRING_ENABLE, 4, { 0 }, 4, true },
		{ "SET_MEM_TABLE with a 4-byte payload", FFE_SET_MEM_TABLE, 4, { 1 }, 4, true },
		{ "GET_VRING_BASE with no payload", FFE_GET_VRING_BASE, 0, { 0 }, 0, false },
		{ "GET_CONFIG with a 4-byte payload", FFE_GET_CONFIG, 4, { 0 }, 4, false },
		{ "GET_FEATURES with a 40-byte payload", FFE_GET_FEATURES, 40, { 0 }, 40, false },
	};
	run_mcases(c, sizeof(c) / sizeof(c[0]), false);
}

Test(badmsg, size_field_huge)
{
	static const uint32_t sizes[] = { 0xffffffffu, 0x80000000u, 16u << 20 };

	for (unsigned i = 0; i < 3; i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		uint64_t f = fe->features;
		enum outcome o = xmit(fe, FFE_SET_FEATURES, 0, sizes[i], &f, 8, NULL, 0, NULL);

		cr_log_info("SET_FEATURES announcing %#x payload bytes: %s", sizes[i], oname(o));
		EXPECT_REFUSED(o, "message announcing a %#x-byte payload (8 sent): backend %s; it must "
			       "refuse the size at once, not wait for the payload", sizes[i], oname(o));
		finish(fe, o, "huge size field");
	}
}

Test(badmsg, payload_larger_than_allowed)
{
	static const uint32_t sizes[] = { 4097, 8192, 65536, 1u << 20 };

	for (unsigned i = 0; i < 4; i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		uint8_t *p = calloc(1, sizes[i]);
		enum outcome o;

		o = xmit(fe, i % 2 ? FFE_SET_MEM_TABLE : FFE_SET_VRING_ADDR, 0, sizes[i], p, sizes[i],
			 NULL, 0, NULL);
		cr_log_info("payload of %u bytes: %s", sizes[i], oname(o));
		EXPECT_REFUSED(o, "message with a %u-byte payload: backend %s", sizes[i], oname(o));
		free(p);
		finish(fe, o, "oversized payload");
	}
}

Test(badmsg, unknown_and_unnegotiated_requests)
{
	static const struct mcase c[] = {
		{ "request 0", 0, 0, { 0 }, 0, true },
		{ "request 41", 41, 8, { 0 }, 8, true },
		{ "request 9999", 9999, 8, { 0 }, 8, true },
		{ "request 0xffffffff", 0xffffffffu, 0, { 0 }, 0, true },
		{ "SET_LOG_BASE without LOG_SHMFD", FFE_SET_LOG_BASE, 16, { 0 }, 16, true },
		{ "IOTLB_MSG", FFE_IOTLB_MSG, 32, { 0 }, 32, true },
		{ "VRING_KICK (inband, not negotiated)", 35, 8, { 0 }, 8, true },
		{ "ADD_MEM_REG without CONFIGURE_MEM_SLOTS", FFE_ADD_MEM_REG, 40, { 0 }, 40, true },
		{ "REM_MEM_REG without CONFIGURE_MEM_SLOTS", FFE_REM_MEM_REG, 40, { 0 }, 40, true },
		{ "SET_BACKEND_REQ_FD without an fd", FFE_SET_BACKEND_REQ_FD, 0, { 0 }, 0, true },
		{ "RESET_OWNER", FFE_RESET_OWNER, 0, { 0 }, 0, false },
		{ "SET_CONFIG at offset 1000", FFE_SET_CONFIG, 16, { U32LE(1000), U32LE(4), 0 }, 16, true },
	};
	run_mcases(c, sizeof(c) / sizeof(c[0]), true);
}

Test(badmsg, vring_index_out_of_range)
{
	static const uint32_t idx[] = { 16, 17, 255, 256, 0x10000, 0xffffffffu };

	for (unsigned i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
		uint32_t st[2] = { idx[i], 64 };
		struct ffe_vring_addr a = { .index = idx[i] };
		static const uint32_t reqs[] = { FFE_SET_VRING_NUM, FFE_SET_VRING_BASE,
						 FFE_SET_VRING_ENABLE, FFE_SET_VRING_ADDR,
						 FFE_GET_VRING_BASE };

		for (unsigned k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
			struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
			bool isaddr = reqs[k] == FFE_SET_VRING_ADDR;
			char what[96];
			enum outcome o;

			a.desc = a.used = a.avail = fe->vq[0].desc_uva;
			o = xmit(fe, reqs[k], 0, isaddr ? sizeof(a) : 8, isaddr ? (void *)&a : (void *)st,
				 isaddr ? sizeof(a) : 8, NULL, 0, NULL);
			snprintf(what, sizeof(what), "%s for vring %#x", ffe_req_name(reqs[k]), idx[i]);
			cr_log_info("%s: %s", what, oname(o));
			if (reqs[k] == FFE_GET_VRING_BASE)
				cr_expect(o == O_DROPPED || o == O_REPLY, "%s: backend %s", what, oname(o));
			else
				EXPECT_REFUSED(o, "%s: backend %s", what, oname(o));
			finish(fe, o, what);
		}
	}
	/* fd-carrying ones: index lives in bits 0-7 */
	for (unsigned v = 0; v < 3; v++) {
		static const uint64_t vals[] = { 16, 0xff, 0x10 | (1ull << 32) };
		static const uint32_t reqs[] = { FFE_SET_VRING_KICK, FFE_SET_VRING_CALL, FFE_SET_VRING_ERR };

		for (unsigned k = 0; k < 3; k++) {
			struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
			int efd = eventfd(0, EFD_CLOEXEC);
			char what[96];
			enum outcome o = xmit(fe, reqs[k], 0, 8, &vals[v], 8, &efd, 1, NULL);

			close(efd);
			snprintf(what, sizeof(what), "%s with u64 %#" PRIx64, ffe_req_name(reqs[k]), vals[v]);
			cr_log_info("%s: %s", what, oname(o));
			EXPECT_REFUSED(o, "%s: backend %s", what, oname(o));
			finish(fe, o, what);
		}
	}
}

Test(badmsg, vring_index_beyond_queue_num)
{
	/* device A has 4 queues: vring 4 does not exist */
	struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
	uint32_t st[2] = { A_QUEUES, 64 };
	enum outcome o = xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);

	EXPECT_REFUSED(o, "SET_VRING_NUM for vring %u of a %u-queue device: backend %s", A_QUEUES,
		       A_QUEUES, oname(o));
	finish(fe, o, "vring beyond GET_QUEUE_NUM");
}

Test(badmsg, vring_num_invalid)
{
	static const uint32_t bad[] = { 0, 3, 100, 1023, 1025, 2048, 32768, 65535, 0x10000, 0xffffffffu };
	static const uint32_t good[] = { 1, 2, 1024 };

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
		uint32_t st[2] = { 1, bad[i] };
		enum outcome o = xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);
		char what[64];

		snprintf(what, sizeof(what), "SET_VRING_NUM %u", bad[i]);
		cr_log_info("%s: %s", what, oname(o));
		EXPECT_REFUSED(o, "%s: backend %s", what, oname(o));
		finish(fe, o, what);
	}
	for (unsigned i = 0; i < 3; i++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
		uint32_t st[2] = { 1, good[i] };
		enum outcome o = xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);

		cr_expect_eq(o, O_ACK0, "SET_VRING_NUM %u (valid): backend %s", good[i], oname(o));
		ffe_close(fe);
	}
	healthy();
}

Test(badmsg, bad_version_flags)
{
	static const uint32_t flags[] = { 0x0 | FFE_FLAG_NEED_REPLY, 0x2 | FFE_FLAG_NEED_REPLY,
					  0x3 | FFE_FLAG_NEED_REPLY };

	for (unsigned i = 0; i < 3; i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		uint64_t f = fe->features;
		enum outcome o = xmit(fe, FFE_SET_FEATURES, flags[i], 8, &f, 8, NULL, 0, NULL);

		cr_log_info("flags %#x: %s", flags[i], oname(o));
		EXPECT_REFUSED(o, "SET_FEATURES with flags %#x (version %u): backend %s", flags[i],
			       flags[i] & 3, oname(o));
		finish(fe, o, "bad version");
	}
}

Test(badmsg, truncated_messages)
{
	struct ffe *fe = fx_negotiated(DEV_A);
	uint8_t hdr[12] = { U32LE(FFE_SET_FEATURES), U32LE(FFE_FLAG_VERSION), U32LE(8) };

	/* 5 bytes of a header, then gone */
	cr_assert_eq(send(fe->sock, hdr, 5, MSG_NOSIGNAL), 5);
	ffe_close(fe);
	healthy();
	/* header and half the payload, then gone */
	fe = fx_negotiated(DEV_A);
	cr_assert_eq(send(fe->sock, hdr, 12, MSG_NOSIGNAL), 12);
	cr_assert_eq(send(fe->sock, hdr, 4, MSG_NOSIGNAL), 4);
	ffe_close(fe);
	healthy();
	/* half a header, then silence while B is used: must not block B */
	fe = fx_negotiated(DEV_A);
	cr_assert_eq(send(fe->sock, hdr, 6, MSG_NOSIGNAL), 6);
	{
		struct ffe *fb = fx_ready(DEV_B, NULL, 0, 1, 64);

		fx_rw_verify(&fb->vq[0], 300, 4096, 2400, NULL);
		fx_close_wait(DEV_B, fb, VDEV_LISTENING);
	}
	ffe_close(fe);
	healthy();
}

Test(badmsg, slow_reader_does_not_block_other_devices)
{
	/* flood GET_FEATURES without reading a single reply: the replies fill
	 * the socket; the back-end must not stall its control thread on it */
	struct ffe *fe = fx_negotiated(DEV_A);
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	int sent = 0;

	setsockopt(fe->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < 60000; i++) {
		if (ffe_send_raw(fe, FFE_GET_FEATURES, FFE_FLAG_VERSION, 0, NULL, 0, NULL, 0) < 0)
			break;
		sent++;
	}
	cr_log_info("sent %d GET_FEATURES without reading", sent);
	{
		/* every step of B within 2 s (of time the machine ran us) */
		int64_t t0 = ffe_now_ms();
		struct ffe_opts o;
		struct ffe *fb;

		ffe_opts_init(&o);
		o.timeout_ms = 2000;
		fb = fx_ready(DEV_B, &o, 0, 1, 64);
		fx_rw_verify(&fb->vq[0], 400, 4096, 2500, NULL);
		cr_log_info("device B served in %" PRId64 " ms while A's front-end did not read",
			    ffe_now_ms() - t0);
		fx_close_wait(DEV_B, fb, VDEV_LISTENING);
	}
	ffe_close(fe);
	healthy();
}

Test(badmsg, kick_and_call_without_fd)
{
	static const uint32_t reqs[] = { FFE_SET_VRING_KICK, FFE_SET_VRING_CALL };

	for (unsigned k = 0; k < 2; k++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
		uint64_t v = 0;         /* vring 0, NOFD flag clear, no fd attached */
		enum outcome o = xmit(fe, reqs[k], 0, 8, &v, 8, NULL, 0, NULL);

		cr_log_info("%s without fd: %s", ffe_req_name(reqs[k]), oname(o));
		EXPECT_REFUSED(o, "%s without an fd and without the NOFD flag: backend %s",
			       ffe_req_name(reqs[k]), oname(o));
		finish(fe, o, "kick/call without fd");
	}
	/* two fds where one is expected */
	{
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 1, 64);
		int fds[2] = { eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC) };
		uint64_t v = 0;
		enum outcome o = xmit(fe, FFE_SET_VRING_CALL, 0, 8, &v, 8, fds, 2, NULL);

		close(fds[0]);
		close(fds[1]);
		cr_expect_neq(o, O_HANG);
		finish(fe, o, "call with two fds");
	}
}

Test(badmsg, get_config_out_of_range)
{
	static const uint32_t cases[][2] = { { 0, 0 }, { 0, 300 }, { 1000, 16 }, { 60, 64 },
					     { 0xfffffff0u, 32 }, { 250, 16 } };

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ffe *fe = fx_negotiated(DEV_A);
		struct ffe_msg *m = malloc(sizeof(*m));
		uint32_t p[3 + 80] = { cases[i][0], cases[i][1], 0 };
		uint32_t plen = 12 + (cases[i][1] <= 256 ? cases[i][1] : 256);
		enum outcome o = xmit(fe, FFE_GET_CONFIG, FFE_FLAG_VERSION, plen, p, plen, NULL, 0, m);
		char what[64];

		snprintf(what, sizeof(what), "GET_CONFIG offset %u size %u", cases[i][0], cases[i][1]);
		cr_log_info("%s: %s (reply size %u)", what, oname(o), o == O_REPLY ? m->hdr.size : 0);
		cr_expect(o == O_DROPPED || o == O_REPLY, "%s: backend %s", what, oname(o));
		if (o == O_REPLY && cases[i][1] != 0) {
			uint32_t rsz;

			memcpy(&rsz, m->payload + 4, 4);
			cr_expect(m->hdr.size <= 12 + 256, "%s: reply of %u bytes", what, m->hdr.size);
			if (cases[i][0] + (uint64_t)cases[i][1] > 256)
				cr_expect(m->hdr.size == 12 || rsz == 0 || m->hdr.size == 0,
					  "%s: reply carries %u bytes of 'config' beyond any config space",
					  what, m->hdr.size - 12);
		}
		free(m);
		finish(fe, o, what);
	}
}

Test(badmsg, ring_setup_out_of_order_and_bad_addresses)
{
	/* rings programmed before any memory table */
	{
		struct ffe *fe = fx_negotiated(DEV_A);
		uint32_t st[2] = { 0, 64 };
		struct ffe_vring_addr a = { .index = 0, .desc = 0x100000, .used = 0x200000, .avail = 0x300000 };
		int efd = eventfd(0, EFD_CLOEXEC);
		uint64_t v = 0, one = 1;
		enum outcome o;

		xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);
		o = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(a), &a, sizeof(a), NULL, 0, NULL);
		cr_log_info("SET_VRING_ADDR before SET_MEM_TABLE: %s", oname(o));
		if (o != O_DROPPED) {
			o = xmit(fe, FFE_SET_VRING_KICK, 0, 8, &v, 8, &efd, 1, NULL);
			cr_log_info("SET_VRING_KICK before SET_MEM_TABLE: %s", oname(o));
			if (write(efd, &one, 8) != 8)
				cr_log_info("warning: kick write failed");
			usleep(100000);
		}
		close(efd);
		cr_expect_neq(o, O_HANG);
		finish(fe, o, "rings before memory");
	}
	/* ring addresses that are not in any region, or run off its end */
	for (int variant = 0; variant < 4; variant++) {
		struct ffe *fe = fx_ready(DEV_A, NULL, 0, 2, 64);
		struct ffe_vq *vq = &fe->vq[1];
		struct ffe_vring_addr a = { .index = 1, .desc = vq->desc_uva, .used = vq->used_uva,
					    .avail = vq->avail_uva };
		uint64_t end = fe->r[0].uva + fe->r[0].size;
		const char *what[] = { "desc table at an unmapped uva", "used ring running off the region",
				       "avail ring at uva ~0", "desc table straddling the region end" };
		enum outcome o;

		if (variant == 0)
			a.desc = 0x1000;
		else if (variant == 1)
			a.used = end - 8;
		else if (variant == 2)
			a.avail = UINT64_MAX - 3;
		else
			a.desc = end - 16 * 8;
		o = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(a), &a, sizeof(a), NULL, 0, NULL);
		cr_log_info("%s: %s", what[variant], oname(o));
		if (o == O_ACK0) {
			/* accepted: it must then fail safely when the ring is used */
			struct ffe_blk_io io;

			ffe_blk_prep(&io, FFE_BLK_T_IN, 0, NULL, 0, 4096, NULL);
			ffe_submit(vq, &io.req);
			ffe_vq_kick_raw(vq);
			usleep(200000);
			ffe_blk_io_release(vq, &io);
			cr_log_info("%s: accepted; kicked it", what[variant]);
		} else {
			cr_expect_neq(o, O_HANG, "%s: %s", what[variant], oname(o));
		}
		finish(fe, o, what[variant]);
	}
}

/* ---- hostile front-end: more message cases (issue 6) -------------------------- */

Test(badmsg, get_config_size_over_256)
{
	static const uint32_t sizes[] = { 257, 300, 1024, 4084, 4096, 65536, 0xffffffffu };

	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (int lie = 0; lie < 2; lie++) {
			/* lie = 0: the header's size matches (12 + size, as far as
			 * 4096 bytes go); lie = 1: 16 bytes of config, but the
			 * inner size field says sizes[i] */
			static uint8_t p[12 + 4096];
			uint32_t body = lie ? 16 : (sizes[i] <= 4084 ? sizes[i] : 4084);
			uint32_t hsize = lie ? 12 + 16 : 12 + sizes[i];
			struct ffe *fe = fx_negotiated(DEV_A);
			struct ffe_msg *m = malloc(sizeof(*m));
			enum outcome o;
			char what[96];

			memset(p, 0, sizeof(p));
			memcpy(p + 4, &sizes[i], 4);
			o = xmit(fe, FFE_GET_CONFIG, 0, hsize, p, 12 + body, NULL, 0, m);
			snprintf(what, sizeof(what), "GET_CONFIG of %u bytes%s", sizes[i],
				 lie ? " in a 28-byte message" : "");
			cr_log_info("%s: %s (reply size %u)", what, oname(o), o == O_REPLY ? m->hdr.size : 0);
			cr_expect(o == O_DROPPED || o == O_REPLY || o == O_NACK, "%s: backend %s", what,
				  oname(o));
			if (o == O_REPLY) {
				uint32_t rsz = 0;

				if (m->hdr.size >= 8)
					memcpy(&rsz, m->payload + 4, 4);
				cr_expect(m->hdr.size <= 12 || (m->hdr.size == 8 && m->payload[0]),
					  "%s: reply of %u bytes (config size %u); expected an error "
					  "(empty reply) or the connection dropped", what, m->hdr.size, rsz);
			}
			free(m);
			finish(fe, o, what);
		}
	}
}

Test(badmsg, messages_split_byte_by_byte)
{
	/* every message in 1-byte (then 5-byte, 7-byte) pieces, fds riding on
	 * the first: the back-end reassembles them and serves normally */
	static const unsigned chunks[] = { 1, 5, 7 };
	struct bystander b;

	bystander_start(&b);
	for (unsigned i = 0; i < 3; i++) {
		struct ffe_opts o;
		struct ffe *fe;
		uint8_t cfg[60];
		int r;

		ffe_opts_init(&o);
		o.nregions = 1 + i;     /* 1 to 3 fds on SET_MEM_TABLE */
		fe = fx_open(DEV_A, &o);
		fe->send_chunk = chunks[i];
		fe->send_gap_us = 30;
		r = ffe_setup(fe, 0, 2, 64);
		cr_assert_eq(r, 0, "set-up with messages in %u-byte pieces: %s (%s)", chunks[i],
			     strerror(-r), fe->err);
		cr_expect_eq(ffe_get_config(fe, 0, cfg, sizeof(cfg)), 0, "%s", fe->err);
		for (unsigned q = 0; q < 2; q++)
			fx_rw_verify(&fe->vq[q], 7700 + q * 64, 8192, 7700 + i * 10 + q, NULL);
		fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	}
	bystander_stop(&b, "set-ups sent byte by byte");
	healthy();
}

struct flood {
	struct ffe *fe;
	unsigned n;
	unsigned sent;
	atomic_uint got;                /* replies read so far */
	atomic_bool quit;               /* the reader gave up */
	char err[256];
};

/* Replies the writer lets pile up: the back-end may drop a front-end that
 * does not read its replies (slow_reader_does_not_block_other_devices), and
 * a unix socket holds only ~200 small messages. */
#define FLOOD_WINDOW 64

static uint32_t flood_req(unsigned i)
{
	static const uint32_t mix[] = { FFE_GET_FEATURES, FFE_GET_QUEUE_NUM, FFE_SET_VRING_ENABLE,
					FFE_GET_CONFIG };
	/* every 20th replaces q1's call fd: a ring stop and start each */
	return i % 20 == 19 ? FFE_SET_VRING_CALL : mix[i % 4];
}

static void *flood_writer(void *arg)
{
	struct flood *f = arg;

	for (unsigned i = 0; i < f->n; i++) {
		uint32_t req = flood_req(i), flags = FFE_FLAG_VERSION;
		uint8_t p[12 + 60] = { 0 };
		uint32_t size = 0;
		int fd = -1, r;

		while (i - f->got >= FLOOD_WINDOW && !f->quit)
			usleep(50);
		if (f->quit)
			break;
		switch (req) {
		case FFE_SET_VRING_ENABLE: {
			uint32_t st[2] = { 1, 1 };

			memcpy(p, st, 8);
			size = 8;
			flags |= FFE_FLAG_NEED_REPLY;
			break;
		}
		case FFE_GET_CONFIG: {
			uint32_t c[3] = { 0, 60, 0 };

			memcpy(p, c, 12);
			size = 12 + 60;
			break;
		}
		case FFE_SET_VRING_CALL: {
			uint64_t v = 1;

			memcpy(p, &v, 8);
			size = 8;
			flags |= FFE_FLAG_NEED_REPLY;
			fd = eventfd(0, EFD_CLOEXEC);
			break;
		}
		}
		r = ffe_send_raw(f->fe, req, flags, size, p, size, fd >= 0 ? &fd : NULL, fd >= 0);
		if (fd >= 0)
			close(fd);
		if (r < 0) {
			snprintf(f->err, sizeof(f->err), "message %u (%s) not sent: %s", i,
				 ffe_req_name(req), strerror(-r));
			break;
		}
		f->sent++;
	}
	return NULL;
}

Test(badmsg, flood_of_10k_messages)
{
	/* 10,000 messages pipelined (up to 64 replies outstanding; an eventfd on
	 * every 20th): every one is answered, in order; A's other queue and
	 * device B keep serving; no fd is left behind */
	struct bystander b;
	struct flood f;
	struct ioloop l;
	pthread_t wt, lt;
	struct ffe_msg *m = malloc(sizeof(*m));
	struct ffe *fe;
	unsigned got = 0, bad = 0;
	int base, r = 0;
	int64_t t0;

	healthy();
	base = count_fds();
	bystander_start(&b);
	fe = fx_ready(DEV_A, NULL, 0, 2, 64);
	l = (struct ioloop){ .vq = &fe->vq[0], .base = 26000, .seed = 7800 };
	pthread_create(&lt, NULL, ioloop_worker, &l);
	f = (struct flood){ .fe = fe, .n = 10000 };
	t0 = ffe_now_ms();
	pthread_create(&wt, NULL, flood_writer, &f);
	while (got < f.n) {
		uint32_t want = flood_req(got);

		r = ffe_recv_raw(fe, m, 5000);
		if (r < 0)
			break;
		ffe_msg_close_fds(m);
		if (m->hdr.request != want || !(m->hdr.flags & FFE_FLAG_REPLY)) {
			if (bad++ < 3)
				cr_expect_fail("reply %u is %s (flags %#x), expected %s", got,
					       ffe_req_name(m->hdr.request), m->hdr.flags, ffe_req_name(want));
		} else if ((want == FFE_SET_VRING_ENABLE || want == FFE_SET_VRING_CALL) &&
			   (m->hdr.size != 8 || m->payload[0] != 0)) {
			if (bad++ < 3)
				cr_expect_fail("reply %u (%s): ack of %u bytes, value %u", got,
					       ffe_req_name(want), m->hdr.size, m->payload[0]);
		}
		f.got = ++got;
	}
	f.quit = true;
	pthread_join(wt, NULL);
	l.stop = true;
	pthread_join(lt, NULL);
	cr_log_info("flood: %u sent, %u replies in %" PRId64 " ms; %u I/O cycles on q0 meanwhile",
		    f.sent, got, ffe_now_ms() - t0, l.done);
	cr_expect(!f.err[0], "%s", f.err);
	cr_expect_eq(got, f.n, "%u of %u messages answered (last receive: %s)", got, f.n,
		     r < 0 ? strerror(-r) : "ok");
	cr_expect_eq(bad, 0u, "%u replies out of order or failed", bad);
	cr_expect(!l.err[0], "A's queue 0 during the flood: %s", l.err);
	free(m);
	fx_rw_verify(&fe->vq[1], 7800, 4096, 7801, NULL);
	fx_close_wait(DEV_A, fe, VDEV_LISTENING);
	bystander_stop(&b, "a flood of 10k messages on A");
	expect_fds_back_to(base, "a flood of 10k messages with 500 eventfds");
	healthy();
}

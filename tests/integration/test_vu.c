/* Integration tests: the vhostd core started in-process through vdev.h and
 * driven over its vhost-user sockets by the fake front-end (fakefe.c).
 *
 * Every test gets its own core with two devices: A (under test) and B (a
 * bystander in the same core), plus a temporary directory.  Criterion runs
 * each test in its own process, so a crash of the core fails exactly that
 * test; every wait has a timeout, so a hang fails it too.  Hostile tests end
 * with healthy(): A and B must serve correct I/O on NEW connections, and data
 * written before the attack (the "golden" range of A) must be intact.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../coretest.h"
#include "../crmain.h"

#define MiB             (1024ull * 1024)
#define A_SIZE          (32 * MiB)
#define A_QUEUES        4
#define A_SERIAL        "vhostd-int-A"
#define B_SIZE          (8 * MiB)
#define B_QUEUES        2
#define B_SERIAL        "ABCDEFGHIJ0123456789"  /* exactly 20 bytes */
#define GOLD_SECTOR     4096                    /* 2 MiB into A */
#define GOLD_LEN        (64 * 1024)
#define GOLD_SEED       0x601dull
#define SCRATCH_SECTOR  16384                   /* 8 MiB into A: hostile writes may land here */
#define HOSTILE_WAIT_MS 500

enum { DEV_A = 0, DEV_B = 1 };

static struct {
	struct core *core;
	struct vdev *dev[8];
	char sock[8][160];
	char name[8][32];
	unsigned queues[8];
	unsigned ndev;
	char dir[64];
} fx;

/* ---- fixture ------------------------------------------------------------- */

static void params(struct vdev_params *p, uint64_t size, unsigned queues, const char *serial)
{
	vdev_params_init(p);
	p->size = size;
	p->queues = (uint16_t)queues;
	snprintf(p->serial, sizeof(p->serial), "%s", serial);
}

static unsigned add_dev(const char *name, const struct vdev_params *p)
{
	char err[VDEV_ERR_MAX] = "";
	unsigned i = fx.ndev;
	int r;

	cr_assert_lt(i, 8u);
	snprintf(fx.sock[i], sizeof(fx.sock[i]), "%s/%s.sock", fx.dir, name);
	snprintf(fx.name[i], sizeof(fx.name[i]), "%s", name);
	r = vdev_create(fx.core, name, fx.sock[i], p, &fx.dev[i], err, sizeof(err));
	cr_assert_eq(r, 0, "vdev_create(%s): %s: %s", name, strerror(-r), err);
	fx.queues[i] = p->queues;
	fx.ndev++;
	return i;
}

static struct ffe *open_fe(unsigned dev, const struct ffe_opts *o)
{
	struct ffe *fe = ffe_open(fx.sock[dev], o);

	cr_assert_not_null(fe, "connect to %s: %s", fx.sock[dev], strerror(errno));
	return fe;
}

/* connect, negotiate, memory table, start nq queues */
static struct ffe *ready(unsigned dev, const struct ffe_opts *o, uint64_t feat,
			 unsigned nq, unsigned qsize)
{
	struct ffe *fe = open_fe(dev, o);
	int r = ffe_setup(fe, feat, nq, qsize);

	cr_assert_eq(r, 0, "set-up of a well-behaved front-end on %s failed: %s (%s)",
		     fx.name[dev], strerror(-r), fe->err);
	return fe;
}

static struct ffe *negotiated(unsigned dev)
{
	struct ffe *fe = open_fe(dev, NULL);
	int r = ffe_negotiate(fe, 0);

	cr_assert_eq(r, 0, "negotiation with %s failed: %s (%s)", fx.name[dev],
		     strerror(-r), fe->err);
	return fe;
}

static bool wait_state(unsigned dev, enum vdev_state st, int ms)
{
	return vdev_wait_state(fx.dev[dev], st, ms);
}

static const char *lay_str(const struct ffe_layout *l)
{
	static char buf[64];

	if (!l)
		return "natural";
	snprintf(buf, sizeof(buf), "%s seg=%u%s",
		 l->kind == FFE_L_NATURAL ? "natural" : l->kind == FFE_L_MERGED ? "merged" : "chopped",
		 l->seg, l->indirect ? " indirect" : "");
	return buf;
}

static void write_ok(struct ffe_vq *vq, uint64_t sector, const void *buf, size_t len,
		     const struct ffe_layout *lay)
{
	int s = ffe_blk_write(vq, sector, buf, len, lay);

	cr_assert_eq(s, FFE_BLK_S_OK, "q%u OUT sector %" PRIu64 " len %zu (%s): status %d %s",
		     vq->index, sector, len, lay_str(lay), s, s < 0 ? vq->fe->err : "");
}

static void read_ok(struct ffe_vq *vq, uint64_t sector, void *buf, size_t len,
		    const struct ffe_layout *lay)
{
	int s = ffe_blk_read(vq, sector, buf, len, lay);

	cr_assert_eq(s, FFE_BLK_S_OK, "q%u IN sector %" PRIu64 " len %zu (%s): status %d %s",
		     vq->index, sector, len, lay_str(lay), s, s < 0 ? vq->fe->err : "");
}

static size_t first_diff(const uint8_t *buf, size_t len, uint64_t seed)
{
	uint8_t *ref = malloc(len);
	size_t i;

	ffe_pattern(ref, len, seed);
	for (i = 0; i < len && buf[i] == ref[i]; i++)
		;
	free(ref);
	return i;
}

static void check_pattern(const uint8_t *buf, size_t len, uint64_t seed, const char *what)
{
	if (!ffe_pattern_ok(buf, len, seed)) {
		size_t d = first_diff(buf, len, seed);

		cr_assert_fail("%s: data differs from what was written at byte %zu of %zu "
			       "(got %02x %02x %02x %02x)", what, d, len, buf[d],
			       d + 1 < len ? buf[d + 1] : 0, d + 2 < len ? buf[d + 2] : 0,
			       d + 3 < len ? buf[d + 3] : 0);
	}
}

static void check_zero(const uint8_t *buf, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			cr_assert_fail("%s: byte %zu is %#x, expected 0", what, i, buf[i]);
}

static void rw_verify(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
		      const struct ffe_layout *lay)
{
	uint8_t *w = malloc(len), *r = malloc(len);
	char what[160];

	ffe_pattern(w, len, seed);
	write_ok(vq, sector, w, len, lay);
	memset(r, 0, len);
	read_ok(vq, sector, r, len, lay);
	snprintf(what, sizeof(what), "q%u sector %" PRIu64 " len %zu (%s)", vq->index, sector,
		 len, lay_str(lay));
	check_pattern(r, len, seed, what);
	free(w);
	free(r);
}

static void check_golden(struct ffe_vq *vq)
{
	uint8_t *r = malloc(GOLD_LEN);

	read_ok(vq, GOLD_SECTOR, r, GOLD_LEN, NULL);
	check_pattern(r, GOLD_LEN, GOLD_SEED, "golden range of device A (written before the test)");
	free(r);
}

static void close_and_wait(unsigned dev, struct ffe *fe)
{
	ffe_close(fe);
	cr_assert(wait_state(dev, VDEV_LISTENING, 3000),
		  "%s still '%s' 3 s after its front-end closed the socket", fx.name[dev],
		  vdev_state_name(vdev_get_state(fx.dev[dev])));
}

static void write_golden(void)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	uint8_t *w = malloc(GOLD_LEN);

	ffe_pattern(w, GOLD_LEN, GOLD_SEED);
	write_ok(&fe->vq[0], GOLD_SECTOR, w, GOLD_LEN, NULL);
	free(w);
	close_and_wait(DEV_A, fe);
}

/* A and B still serve correct I/O to new front-ends; A's golden data intact. */
static void healthy(void)
{
	static uint64_t round;

	for (unsigned dev = DEV_A; dev <= DEV_B; dev++) {
		struct ffe *fe;

		cr_assert(wait_state(dev, VDEV_LISTENING, 3000),
			  "%s still '%s' 3 s after the previous front-end went away", fx.name[dev],
			  vdev_state_name(vdev_get_state(fx.dev[dev])));
		fe = ready(dev, NULL, 0, fx.queues[dev], 128);
		for (unsigned q = 0; q < fx.queues[dev]; q++)
			rw_verify(&fe->vq[q], 8192 + q * 64, 16384, 0x4ea1 + q + 16 * round, NULL);
		if (dev == DEV_A)
			check_golden(&fe->vq[0]);
		close_and_wait(dev, fe);
	}
	round++;
}

static void setup_opts(enum core_poll_mode mode, unsigned idle_us)
{
	struct core_opts o = { .nthreads = 2, .poll_mode = mode, .idle_us = idle_us };
	struct vdev_params p;
	int r;

	/* as vhostd's main does: a front-end that vanished must not kill us */
	signal(SIGPIPE, SIG_IGN);
	memset(&fx, 0, sizeof(fx));
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/vhostd-int-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));
	r = core_create(&o, &fx.core);
	cr_assert_eq(r, 0, "core_create: %s", strerror(-r));
	params(&p, A_SIZE, A_QUEUES, A_SERIAL);
	add_dev("vbA", &p);
	params(&p, B_SIZE, B_QUEUES, B_SERIAL);
	add_dev("vbB", &p);
	write_golden();
}

static void setup(void) { setup_opts(CORE_POLL_ADAPTIVE, 0); }
static void setup_irq(void) { setup_opts(CORE_POLL_INTERRUPT, 0); }
static void setup_busy(void) { setup_opts(CORE_POLL_ALWAYS, 0); }
/* adaptive, falling asleep after 20 us idle: many poll->sleep transitions */
static void setup_napper(void) { setup_opts(CORE_POLL_ADAPTIVE, 20); }

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define LEAK_CHECK() 0
#endif

static void teardown(void)
{
	DIR *d;

	for (unsigned i = fx.ndev; i-- > 0;)
		if (fx.dev[i])
			vdev_destroy(fx.dev[i], true);
	if (fx.core)
		core_destroy(fx.core);
	fx.core = NULL;
	d = opendir(fx.dir);
	if (d) {
		struct dirent *e;

		while ((e = readdir(d))) {
			char p[400];

			if (e->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", fx.dir, e->d_name);
			unlink(p);
		}
		closedir(d);
		rmdir(fx.dir);
	}
	/* ASan builds: whatever the core allocated is gone after core_destroy
	 * (criterion's workers _exit, so LeakSanitizer would not look) */
	cr_expect_eq(LEAK_CHECK(), 0, "LeakSanitizer found leaks (see stderr)");
}

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

/* ---- negotiation and config space --------------------------------------------- */

Test(nego, features_offered)
{
	struct ffe *fe = open_fe(DEV_A, NULL);
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
	struct ffe *fe = negotiated(DEV_A);

	cr_log_info("protocol features offered: %#" PRIx64, fe->dev_protocol_features);
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_MQ), "PROTOCOL_F_MQ not offered");
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_REPLY_ACK), "PROTOCOL_F_REPLY_ACK not offered");
	cr_expect(fe->dev_protocol_features & FFE_BIT(FFE_PF_CONFIG), "PROTOCOL_F_CONFIG not offered");
	cr_expect_eq(fe->queue_num, A_QUEUES, "GET_QUEUE_NUM = %u, device has %u queues",
		     fe->queue_num, A_QUEUES);
	ffe_close(fe);

	fe = negotiated(DEV_B);
	cr_expect_eq(fe->queue_num, B_QUEUES, "GET_QUEUE_NUM of B = %u", fe->queue_num);
	ffe_close(fe);
}

static void check_config(unsigned dev, uint64_t size, unsigned bs, unsigned queues, bool ro)
{
	struct ffe *fe = negotiated(dev);
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

	params(&p, 16 * MiB, 3, "bs4k");
	p.block_size = 4096;
	d4k = add_dev("vb4k", &p);
	params(&p, 4 * MiB, 1, "ro");
	p.readonly = true;
	dro = add_dev("vbro", &p);
	check_config(d4k, 16 * MiB, 4096, 3, false);
	check_config(dro, 4 * MiB, 512, 1, true);
}

Test(nego, legacy_no_protocol_features)
{
	/* A front-end that does not ack PROTOCOL_FEATURES: rings start enabled
	 * without SET_VRING_ENABLE, and nothing needs REPLY_ACK. */
	uint64_t want = FFE_BIT(FFE_F_VERSION_1) | FFE_BIT(FFE_F_BLK_FLUSH) |
			FFE_BIT(FFE_F_BLK_BLK_SIZE) | FFE_BIT(FFE_F_BLK_SEG_MAX);
	struct ffe *fe = ready(DEV_A, NULL, want, 1, 64);

	cr_expect_eq(fe->features, want, "acked %#" PRIx64, fe->features);
	rw_verify(&fe->vq[0], 100, 8192, 11, NULL);
	check_golden(&fe->vq[0]);
	close_and_wait(DEV_A, fe);
}

Test(nego, reply_ack_on_every_message)
{
	/* ffe_call sets NEED_REPLY on every message without a reply once
	 * REPLY_ACK is negotiated and fails on a nonzero ack: the whole set-up
	 * (SET_OWNER, SET_FEATURES, SET_MEM_TABLE, SET_VRING_*) must ack 0. */
	struct ffe *fe = ready(DEV_A, NULL, 0, A_QUEUES, 256);

	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_REPLY_ACK));
	cr_expect_eq(ffe_vq_enable(fe, 0, true), 0, "SET_VRING_ENABLE 1 again: %s", fe->err);
	rw_verify(&fe->vq[3], 200, 4096, 12, NULL);
	close_and_wait(DEV_A, fe);
}

Test(nego, need_reply_on_get_gives_one_reply)
{
	/* NEED_REPLY on a request that has its own reply: exactly that reply,
	 * no extra ack behind it. */
	struct ffe *fe = negotiated(DEV_A);
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
	struct ffe *fe = ready(DEV_A, NULL, 0, 2, 128);
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), r;
	uint64_t v = 1;

	r = ffe_call(fe, FFE_SET_VRING_ERR, &v, 8, &efd, 1);
	cr_expect_eq(r, 0, "SET_VRING_ERR q1 with an eventfd: %d (%s)", r, fe->err);
	close(efd);
	rw_verify(&fe->vq[1], 300, 4096, 13, NULL);

	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	v = 0;
	r = ffe_call(fe, FFE_SET_VRING_CALL, &v, 8, &efd, 1);
	cr_expect_eq(r, 0, "SET_VRING_CALL q0 replaced: %d (%s)", r, fe->err);
	close(fe->vq[0].callfd);
	fe->vq[0].callfd = efd;
	rw_verify(&fe->vq[0], 310, 4096, 14, NULL);

	cr_expect_eq(ffe_vq_enable(fe, 1, false), 0, "SET_VRING_ENABLE q1 0: %s", fe->err);
	cr_expect_eq(ffe_vq_enable(fe, 1, true), 0, "SET_VRING_ENABLE q1 1: %s", fe->err);
	rw_verify(&fe->vq[1], 320, 4096, 15, NULL);
	close_and_wait(DEV_A, fe);
}

/* ---- requests -------------------------------------------------------------- */

Test(io, read_unwritten_is_zero_and_rw_sizes)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 256);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t *b = malloc(MiB);
	static const size_t sizes[] = { 512, 1024, 4096, 8192, 65536, 131072 };

	read_ok(vq, 20000, b, 65536, NULL);
	check_zero(b, 65536, "fresh ram device");
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		rw_verify(vq, 1000 + i * 300, sizes[i], 100 + i, NULL);
	/* first and last sector */
	rw_verify(vq, 0, 512, 120, NULL);
	rw_verify(vq, A_SIZE / 512 - 1, 512, 121, NULL);
	rw_verify(vq, A_SIZE / 512 - 8, 4096, 122, NULL);
	check_golden(vq);
	free(b);
	close_and_wait(DEV_A, fe);
}

Test(io, large_requests)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 1024);
	struct ffe_vq *vq = &fe->vq[0];
	uint32_t seg = 1024 * 1024, segs;
	struct ffe_layout lay = { FFE_L_NATURAL, 0, false };

	if ((fe->features & FFE_BIT(FFE_F_BLK_SIZE_MAX)) && fe->cfg.size_max < seg)
		seg = fe->cfg.size_max & ~511u;
	lay.seg = seg;
	segs = (1024 * 1024 + seg - 1) / seg;
	cr_log_info("1 MiB request as %u segment(s) of %u bytes (seg_max %u)", segs, seg, fe->cfg.seg_max);
	if (segs <= fe->cfg.seg_max)
		rw_verify(vq, 30000, 1024 * 1024, 130, &lay);
	/* seg_max segments of 4 KiB, direct and indirect */
	{
		uint32_t n = fe->cfg.seg_max < 256 ? fe->cfg.seg_max : 256;

		lay.seg = 4096;
		rw_verify(vq, 40000, (size_t)n * 4096, 131, &lay);
		lay.indirect = true;
		rw_verify(vq, 42000, (size_t)n * 4096, 132, &lay);
	}
	close_and_wait(DEV_A, fe);
}

Test(io, every_layout)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 2, 256);
	uint32_t seg_max = fe->cfg.seg_max;
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 0, false },
		{ FFE_L_NATURAL, 0, true },
		{ FFE_L_NATURAL, 512, false },          /* many data segments */
		{ FFE_L_NATURAL, 512, true },
		{ FFE_L_NATURAL, 1536, false },         /* segments not a multiple of 1024 */
		{ FFE_L_MERGED, 0, false },             /* header+data / data+status together */
		{ FFE_L_MERGED, 0, true },
		{ FFE_L_CHOPPED, 8, false },            /* header split in two */
		{ FFE_L_CHOPPED, 3, true },             /* 3-byte descriptors everywhere */
		{ FFE_L_CHOPPED, 1, true },             /* 1-byte descriptors */
		{ FFE_L_CHOPPED, 1000, false },         /* descriptors straddle sectors */
		{ FFE_L_CHOPPED, 4097, true },
	};

	for (unsigned i = 0; i < sizeof(lays) / sizeof(lays[0]); i++) {
		/* keep the descriptor count within seg_max + 2 (and the ring) */
		size_t len = 32768;
		unsigned per = lays[i].kind == FFE_L_CHOPPED ? lays[i].seg :
			       lays[i].kind == FFE_L_NATURAL && lays[i].seg ? lays[i].seg : 0;

		while (per && len > 512 && (len + 17 + per - 1) / per > seg_max)
			len /= 2;
		if (per && (len + 17 + per - 1) / per > seg_max + 2) {
			cr_log_info("layout %s skipped: needs more than seg_max %u descriptors",
				    lay_str(&lays[i]), seg_max);
			continue;
		}
		rw_verify(&fe->vq[i % 2], 500 + i * 100, len, 200 + i, &lays[i]);
	}
	check_golden(&fe->vq[0]);
	close_and_wait(DEV_A, fe);
}

/* one request in arbitrary explicit cuts */
static int run_cuts(struct ffe_vq *vq, uint32_t type, uint64_t sector, const void *out,
		    size_t out_len, void *in, size_t in_len, const uint32_t *rc, unsigned nrc,
		    const uint32_t *wc, unsigned nwc, bool indirect)
{
	struct ffe_blk_io io;
	int r = ffe_blk_prep(&io, type, sector, out, out_len, in_len, NULL);

	cr_assert_eq(r, 0);
	io.req.rd_cuts = rc;
	io.req.n_rd_cuts = nrc;
	io.req.wr_cuts = wc;
	io.req.n_wr_cuts = nwc;
	io.req.indirect = indirect;
	r = ffe_run(vq, &io.req);
	if (r == 0) {
		r = ffe_blk_status(&io);
		if (in_len)
			memcpy(in, ffe_blk_in(&io), in_len);
	}
	ffe_blk_io_release(vq, &io);
	return r;
}

Test(io, odd_cuts)
{
	/* Framing must not matter (VIRTIO_F_VERSION_1 implies ANY_LAYOUT). */
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t w[4096], r[4096];
	static const uint32_t hdr_1byte[] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	static const uint32_t hdr_12_4[] = { 12, 4 };           /* sector split */
	static const uint32_t hdr_20[] = { 20, 4092 };          /* header + 4 data bytes */
	static const uint32_t data_then_status_split[] = { 4095, 2 }; /* last data byte + status */
	int s;

	ffe_pattern(w, sizeof(w), 300);
	s = run_cuts(vq, FFE_BLK_T_OUT, 700, w, 4096, NULL, 0, hdr_1byte, 16, NULL, 0, true);
	cr_expect_eq(s, 0, "OUT with the header in 16 one-byte descriptors: status %d", s);
	s = run_cuts(vq, FFE_BLK_T_IN, 700, NULL, 0, r, 4096, hdr_12_4, 2, data_then_status_split, 2, false);
	cr_expect_eq(s, 0, "IN with header 12+4 and status sharing a descriptor: status %d", s);
	check_pattern(r, 4096, 300, "odd cuts read-back");

	ffe_pattern(w, sizeof(w), 301);
	s = run_cuts(vq, FFE_BLK_T_OUT, 708, w, 4096, NULL, 0, hdr_20, 2, NULL, 0, false);
	cr_expect_eq(s, 0, "OUT with header+4 data bytes in one descriptor: status %d", s);
	memset(r, 0, sizeof(r));
	read_ok(vq, 708, r, 4096, NULL);
	check_pattern(r, 4096, 301, "OUT header+4 bytes");
	close_and_wait(DEV_A, fe);
}

Test(io, flush_and_get_id)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	char id[FFE_BLK_ID_BYTES], want[FFE_BLK_ID_BYTES] = { 0 };
	int s;

	s = ffe_blk_flush(&fe->vq[0]);
	cr_expect_eq(s, FFE_BLK_S_OK, "FLUSH: status %d", s);
	memset(id, 0x55, sizeof(id));
	s = ffe_blk_get_id(&fe->vq[0], id);
	cr_expect_eq(s, FFE_BLK_S_OK, "GET_ID: status %d", s);
	memcpy(want, A_SERIAL, strlen(A_SERIAL));
	cr_expect(memcmp(id, want, sizeof(want)) == 0, "GET_ID returned \"%.20s\", serial is \"%s\" "
		  "(zero padded to 20 bytes)", id, A_SERIAL);
	/* GET_ID into a 3-descriptor chain of odd sizes */
	{
		static const uint32_t wc[] = { 7, 7, 7 };

		memset(id, 0x55, sizeof(id));
		s = run_cuts(&fe->vq[0], FFE_BLK_T_GET_ID, 0, NULL, 0, id, 20, NULL, 0, wc, 3, true);
		cr_expect_eq(s, 0, "GET_ID in 7-byte pieces: %d", s);
		cr_expect(memcmp(id, want, sizeof(want)) == 0, "GET_ID in pieces: \"%.20s\"", id);
	}
	close_and_wait(DEV_A, fe);

	fe = ready(DEV_B, NULL, 0, 1, 128);
	memset(id, 0x55, sizeof(id));
	s = ffe_blk_get_id(&fe->vq[0], id);
	cr_expect_eq(s, FFE_BLK_S_OK, "GET_ID B: status %d", s);
	cr_expect(memcmp(id, B_SERIAL, 20) == 0, "GET_ID of B returned \"%.20s\", want \"%s\"", id, B_SERIAL);
	close_and_wait(DEV_B, fe);
}

Test(io, used_len_exact)
{
	/* virtio 2.7.8.2: len SHOULD be the bytes written into the buffer */
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	uint8_t b[8192];
	char id[20];
	uint32_t ul = 0;
	int s;

	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_IN, 0, NULL, 0, b, 8192, NULL, &ul);
	cr_assert_eq(s, 0);
	cr_expect_eq(ul, 8193u, "IN 8192: used len %u, expected 8193 (data + status)", ul);
	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_OUT, 0, b, 8192, NULL, 0, NULL, &ul);
	cr_assert_eq(s, 0);
	cr_expect_eq(ul, 1u, "OUT: used len %u, expected 1 (status)", ul);
	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_GET_ID, 0, NULL, 0, id, 20, NULL, &ul);
	cr_assert_eq(s, 0);
	cr_expect_eq(ul, 21u, "GET_ID: used len %u, expected 21", ul);
	s = ffe_blk_req(&fe->vq[0], FFE_BLK_T_FLUSH, 0, NULL, 0, NULL, 0, NULL, &ul);
	cr_expect_eq(ul, 1u, "FLUSH: used len %u, expected 1", ul);
	close_and_wait(DEV_A, fe);
}

Test(io, discard_then_read_zeros)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t *w = malloc(65536), *r = malloc(65536);
	int s;

	cr_assert(fe->features & FFE_BIT(FFE_F_BLK_DISCARD), "DISCARD not negotiated");
	ffe_pattern(w, 65536, 400);
	write_ok(vq, 10000, w, 65536, NULL);
	s = ffe_blk_discard(vq, 10000 + 16, 32);
	cr_expect_eq(s, FFE_BLK_S_OK, "DISCARD 32 sectors: status %d", s);
	read_ok(vq, 10000, r, 65536, NULL);
	cr_expect(memcmp(r, w, 8192) == 0, "DISCARD changed the bytes before its range");
	check_zero(r + 8192, 16384, "discarded range on the ram backend");
	cr_expect(memcmp(r + 24576, w + 24576, 65536 - 24576) == 0,
		  "DISCARD changed the bytes after its range");
	free(w);
	free(r);
	close_and_wait(DEV_A, fe);
}

/* the pattern after an offset: compare against the same seed's tail */
Test(io, write_zeroes_with_and_without_unmap)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint8_t *w = malloc(65536), *r = malloc(65536), *ref = malloc(65536);
	int s;

	cr_assert(fe->features & FFE_BIT(FFE_F_BLK_WRITE_ZEROES), "WRITE_ZEROES not negotiated");
	for (int unmap = 0; unmap <= 1; unmap++) {
		uint64_t base = 12000 + unmap * 200;

		ffe_pattern(w, 65536, 500 + unmap);
		write_ok(vq, base, w, 65536, NULL);
		s = ffe_blk_write_zeroes(vq, base + 8, 24, unmap);
		cr_expect_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES unmap=%d: status %d", unmap, s);
		read_ok(vq, base, r, 65536, NULL);
		memcpy(ref, w, 65536);
		memset(ref + 4096, 0, 24 * 512);
		if (memcmp(r, ref, 65536) != 0) {
			size_t i = 0;

			while (r[i] == ref[i])
				i++;
			cr_expect_fail("WRITE_ZEROES unmap=%d of bytes 4096..16383: wrong content at "
				       "byte %zu (%#x, expected %#x)", unmap, i, r[i], ref[i]);
		}
	}
	free(w);
	free(r);
	free(ref);
	close_and_wait(DEV_A, fe);
}

Test(io, discard_write_zeroes_bad_flags_and_ranges)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint64_t cap = fe->cfg.capacity;
	struct ffe_blk_dwz_seg sg;
	int s;

	/* virtio 1.2 5.2.6.2: UNSUPP for a discard with the unmap flag, and for
	 * write zeroes with an unknown flag */
	sg = (struct ffe_blk_dwz_seg){ .sector = 100, .num_sectors = 8, .flags = FFE_BLK_WZ_UNMAP };
	s = ffe_blk_req(vq, FFE_BLK_T_DISCARD, 0, &sg, sizeof(sg), NULL, 0, NULL, NULL);
	cr_expect_eq(s, FFE_BLK_S_UNSUPP, "DISCARD with the unmap flag: status %d, expected UNSUPP", s);
	sg = (struct ffe_blk_dwz_seg){ .sector = 100, .num_sectors = 8, .flags = 0x2 };
	s = ffe_blk_req(vq, FFE_BLK_T_WRITE_ZEROES, 0, &sg, sizeof(sg), NULL, 0, NULL, NULL);
	cr_expect_eq(s, FFE_BLK_S_UNSUPP, "WRITE_ZEROES with unknown flag 0x2: status %d, expected UNSUPP", s);

	/* out of range */
	s = ffe_blk_discard(vq, cap - 4, 8);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "DISCARD crossing the end: status %d", s);
	s = ffe_blk_write_zeroes(vq, cap, 1, false);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "WRITE_ZEROES at capacity: status %d", s);
	s = ffe_blk_write_zeroes(vq, UINT64_MAX - 2, 8, false);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "WRITE_ZEROES with sector+count wrapping: status %d", s);
	if (fe->cfg.max_discard_sectors < 0xffff0000u) {
		s = ffe_blk_discard(vq, SCRATCH_SECTOR, fe->cfg.max_discard_sectors + 8);
		cr_expect_neq(s, FFE_BLK_S_OK, "DISCARD larger than max_discard_sectors %u: status OK",
			      fe->cfg.max_discard_sectors);
	}
	/* a payload that is not a whole segment */
	s = ffe_blk_req(vq, FFE_BLK_T_WRITE_ZEROES, 0, &sg, 10, NULL, 0, NULL, NULL);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "WRITE_ZEROES with a 10-byte payload: status %d", s);
	/* more segments than max_discard_seg */
	{
		uint32_t n = fe->cfg.max_discard_seg + 1;
		struct ffe_blk_dwz_seg *v = calloc(n, sizeof(*v));

		for (uint32_t i = 0; i < n; i++)
			v[i] = (struct ffe_blk_dwz_seg){ .sector = 30000 + i * 16, .num_sectors = 8 };
		s = ffe_blk_req(vq, FFE_BLK_T_DISCARD, 0, v, n * sizeof(*v), NULL, 0, NULL, NULL);
		cr_expect_neq(s, FFE_BLK_S_OK, "DISCARD with %u segments (max_discard_seg %u): status OK",
			      n, fe->cfg.max_discard_seg);
		free(v);
	}
	check_golden(vq);
	close_and_wait(DEV_A, fe);
}

Test(io, unknown_type_and_out_of_range)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 128);
	struct ffe_vq *vq = &fe->vq[0];
	uint64_t cap = fe->cfg.capacity;
	uint8_t b[4096], last[512];
	int s;

	/* (5 and bit 31 are left out: legacy FLUSH_OUT and BARRIER) */
	static const uint32_t types[] = { 2, 3, 7, 10 /* GET_LIFETIME */, 14 /* SECURE_ERASE */,
					   15, 0x77, 0xffffffffu };
	for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		s = ffe_blk_req(vq, types[i], 0, NULL, 0, b, 512, NULL, NULL);
		cr_expect_eq(s, FFE_BLK_S_UNSUPP, "request type %#x: status %d, expected UNSUPP (2)", types[i], s);
	}
	read_ok(vq, cap - 1, last, 512, NULL);
	s = ffe_blk_read(vq, cap, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN at sector == capacity: status %d", s);
	s = ffe_blk_read(vq, cap - 1, b, 1024, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN crossing the end: status %d", s);
	memset(b, 0x77, sizeof(b));
	s = ffe_blk_write(vq, cap - 1, b, 4096, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT crossing the end: status %d", s);
	s = ffe_blk_write(vq, UINT64_MAX, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT at sector 2^64-1: status %d", s);
	s = ffe_blk_write(vq, 1ull << 55, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT at sector 2^55 (offset overflows 64 bits): status %d", s);
	s = ffe_blk_read(vq, (UINT64_MAX >> 9) + 1, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN whose byte offset wraps to 0: status %d", s);
	/* the last sector was not touched by the failed write */
	read_ok(vq, cap - 1, b, 512, NULL);
	cr_expect(memcmp(b, last, 512) == 0, "failed OUT crossing the end modified the last sector");
	/* lengths that are not a multiple of 512 */
	s = ffe_blk_read(vq, 0, b, 100, NULL);
	cr_expect_neq(s, FFE_BLK_S_OK, "IN of 100 bytes: status OK");
	s = ffe_blk_write(vq, SCRATCH_SECTOR, b, 700, NULL);
	cr_expect_neq(s, FFE_BLK_S_OK, "OUT of 700 bytes: status OK");
	/* data on an OUT too short to be a header */
	{
		static const uint8_t shorthdr[8] = { 1 };
		struct ffe_req r = { .rd = shorthdr, .rd_len = 8, .wr = b, .wr_len = 1 };

		b[0] = 0xee;
		s = ffe_run(vq, &r);
		cr_expect_eq(s, 0, "8-byte header: no completion (%s)", fe->err);
		cr_expect(b[0] == FFE_BLK_S_IOERR || b[0] == FFE_BLK_S_UNSUPP,
			  "request with an 8-byte header: status %d, expected IOERR", b[0]);
	}
	check_golden(vq);
	close_and_wait(DEV_A, fe);
}

Test(io, readonly_device)
{
	struct vdev_params p;
	unsigned d;
	struct ffe *fe;
	uint8_t b[4096];
	int s;

	params(&p, 4 * MiB, 1, "ro");
	p.readonly = true;
	d = add_dev("vbro", &p);
	fe = ready(d, NULL, 0, 1, 128);
	cr_expect(fe->features & FFE_BIT(FFE_F_BLK_RO), "RO not negotiated");
	memset(b, 0x33, sizeof(b));
	s = ffe_blk_write(&fe->vq[0], 8, b, 4096, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT on a read-only device: status %d, expected IOERR", s);
	s = ffe_blk_write_zeroes(&fe->vq[0], 8, 8, false);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "WRITE_ZEROES on read-only: %d", s);
	s = ffe_blk_discard(&fe->vq[0], 8, 8);
	cr_expect(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_UNSUPP, "DISCARD on read-only: %d", s);
	read_ok(&fe->vq[0], 8, b, 4096, NULL);
	check_zero(b, 4096, "read-only device after refused writes");
	close_and_wait(d, fe);
}

Test(io, block_size_4096_and_null_backend)
{
	struct vdev_params p;
	unsigned d4k, dnull;
	struct ffe *fe;
	uint8_t b[8192];
	int s;

	params(&p, 16 * MiB, 1, "bs4k");
	p.block_size = 4096;
	d4k = add_dev("vb4k", &p);
	fe = ready(d4k, NULL, 0, 1, 128);
	rw_verify(&fe->vq[0], 8, 8192, 600, NULL);
	rw_verify(&fe->vq[0], 16 * MiB / 512 - 8, 4096, 601, NULL);
	close_and_wait(d4k, fe);

	params(&p, 64 * MiB, 2, "null");
	p.backing = BE_NULL;
	dnull = add_dev("vbnull", &p);
	fe = ready(dnull, NULL, 0, 2, 128);
	memset(b, 1, sizeof(b));
	s = ffe_blk_write(&fe->vq[1], 0, b, sizeof(b), NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "null backend OUT: %d", s);
	s = ffe_blk_read(&fe->vq[0], 0, b, sizeof(b), NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "null backend IN: %d", s);
	s = ffe_blk_flush(&fe->vq[0]);
	cr_expect_eq(s, FFE_BLK_S_OK, "null backend FLUSH: %d", s);
	s = ffe_blk_read(&fe->vq[0], 64 * MiB / 512, b, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "null backend IN past the end: %d", s);
	close_and_wait(dnull, fe);
}

Test(io, stats_counters)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 2, 128);
	struct vdev_stats s0, s1;
	struct ffe_deadline dl;
	uint8_t b[8192];
	char id[20];

	vdev_get_stats(fx.dev[DEV_A], &s0);
	memset(b, 9, sizeof(b));
	for (int i = 0; i < 3; i++)
		write_ok(&fe->vq[i % 2], 100 + i * 8, b, 4096, NULL);
	for (int i = 0; i < 2; i++)
		read_ok(&fe->vq[0], 100, b, 8192, NULL);
	cr_assert_eq(ffe_blk_flush(&fe->vq[1]), 0);
	cr_assert_eq(ffe_blk_discard(&fe->vq[0], 200, 8), 0);
	cr_assert_eq(ffe_blk_write_zeroes(&fe->vq[0], 300, 8, false), 0);
	cr_assert_eq(ffe_blk_get_id(&fe->vq[0], id), 0);

	ffe_deadline_start(&dl, 1000);
	do {
		vdev_get_stats(fx.dev[DEV_A], &s1);
	} while (s1.reads - s0.reads < 2 && ffe_deadline_left(&dl) && !usleep(5000));
#define D(f) (s1.f - s0.f)
	cr_expect_eq(D(writes), 3u, "writes moved by %" PRIu64 ", expected 3", D(writes));
	cr_expect_eq(D(reads), 2u, "reads moved by %" PRIu64 ", expected 2", D(reads));
	cr_expect_eq(D(bytes_written), 12288u, "bytes_written moved by %" PRIu64, D(bytes_written));
	cr_expect_eq(D(bytes_read), 16384u, "bytes_read moved by %" PRIu64, D(bytes_read));
	cr_expect_eq(D(flushes), 1u, "flushes moved by %" PRIu64, D(flushes));
	cr_expect_eq(D(discards), 1u, "discards moved by %" PRIu64, D(discards));
	cr_expect_eq(D(write_zeroes), 1u, "write_zeroes moved by %" PRIu64, D(write_zeroes));
	cr_expect_eq(D(get_ids), 1u, "get_ids moved by %" PRIu64, D(get_ids));
	cr_expect_eq(D(errors), 0u, "errors moved by %" PRIu64 " without a failed request", D(errors));
	cr_expect_eq(s1.inflight, 0u, "inflight %" PRIu64 " when idle", s1.inflight);

	/* failures count as errors */
	cr_assert_eq(ffe_blk_req(&fe->vq[0], 0x77, 0, NULL, 0, NULL, 0, NULL, NULL), FFE_BLK_S_UNSUPP);
	cr_assert_eq(ffe_blk_read(&fe->vq[0], fe->cfg.capacity, b, 512, NULL), FFE_BLK_S_IOERR);
	ffe_deadline_start(&dl, 1000);
	do {
		vdev_get_stats(fx.dev[DEV_A], &s1);
	} while (s1.errors - s0.errors < 2 && ffe_deadline_left(&dl) && !usleep(5000));
	cr_expect_eq(D(errors), 2u, "errors moved by %" PRIu64 " after UNSUPP + IOERR", D(errors));
#undef D
	close_and_wait(DEV_A, fe);
	/* B untouched */
	vdev_get_stats(fx.dev[DEV_B], &s1);
	cr_expect_eq(s1.reads + s1.writes, 0u, "B's counters moved (%" PRIu64 " reads, %" PRIu64 " writes)",
		     s1.reads, s1.writes);
}

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
	struct ffe *fa = ready(DEV_A, NULL, ffe_default_features(true), A_QUEUES, 128);
	struct ffe *fb = ready(DEV_B, NULL, 0, B_QUEUES, 64);
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
	close_and_wait(DEV_A, fa);
	close_and_wait(DEV_B, fb);
}

Test(queues, deep_queue_one_kick)
{
	/* 120 requests published, one kick: the device must drain them all
	 * (more than one batch of 32) */
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 1024);
	struct qjob j = { .vq = &fe->vq[0], .base = 5000, .rounds = 3, .depth = 60, .seed = 77 };

	qworker(&j);
	cr_expect(!j.err[0], "%s", j.err);
	close_and_wait(DEV_A, fe);
}

Test(queues, queue_sizes)
{
	static const unsigned sizes[] = { 1, 2, 8, 1024 };
	struct ffe *fe = ready(DEV_A, NULL, 0, 0, 0);

	for (unsigned i = 0; i < 4; i++) {
		int r = ffe_vq_start(fe, i, sizes[i]);
		struct ffe_layout ind = { FFE_L_NATURAL, 0, true };

		cr_assert_eq(r, 0, "queue %u with %u entries: %s", i, sizes[i], fe->err);
		/* a size-1 ring only fits an indirect request */
		for (int k = 0; k < 3; k++)
			rw_verify(&fe->vq[i], 600 + i * 40 + k * 8, 4096, 700 + i * 10 + k,
				  sizes[i] < 4 ? &ind : NULL);
	}
	close_and_wait(DEV_A, fe);
}

Test(queues, only_last_queue_started)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 0, 0);

	cr_assert_eq(ffe_vq_start(fe, A_QUEUES - 1, 64), 0, "%s", fe->err);
	rw_verify(&fe->vq[A_QUEUES - 1], 900, 8192, 800, NULL);
	close_and_wait(DEV_A, fe);
}

Test(queues, get_vring_base_and_restart)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 2, 64);
	uint32_t base = 0;
	int r;

	for (int i = 0; i < 37; i++)
		rw_verify(&fe->vq[1], 1000 + (i % 4) * 8, 4096, 900 + i, NULL);    /* 74 requests */
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
	rw_verify(&fe->vq[1], 1100, 4096, 990, NULL);
	cr_expect_eq(ffe_vq_used_idx(&fe->vq[1]), 77, "used idx %u after restart", ffe_vq_used_idx(&fe->vq[1]));
	close_and_wait(DEV_A, fe);
}

Test(queues, index_wraps_at_65536)
{
	struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(true), 0, 0);
	uint32_t base = 0;

	cr_assert_eq(ffe_vq_start_at(fe, 0, 16, 65530), 0, "%s", fe->err);
	for (int i = 0; i < 6; i++)
		rw_verify(&fe->vq[0], 1200 + i * 8, 4096, 1000 + i, NULL);     /* 12 requests */
	cr_assert_eq(ffe_vq_stop(fe, 0, &base), 0, "%s", fe->err);
	cr_expect_eq(base, 6u, "GET_VRING_BASE after wrapping: %u, expected 6", base);
	cr_expect_eq(ffe_vq_used_idx(&fe->vq[0]), 6, "used idx %u", ffe_vq_used_idx(&fe->vq[0]));
	close_and_wait(DEV_A, fe);
}

/* ---- notifications (core in interrupt mode: it sleeps on kicks) ------------ */

static void strict_run(bool event_idx, unsigned n, unsigned batch)
{
	struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(event_idx), 2, 64);
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
	close_and_wait(DEV_A, fe);
}

Test(notify, calls_without_event_idx) { strict_run(false, 200, 1); }
Test(notify, calls_with_event_idx) { strict_run(true, 200, 1); }
Test(notify, batches_without_event_idx) { strict_run(false, 320, 16); }
Test(notify, batches_with_event_idx) { strict_run(true, 320, 16); }

Test(notify, no_interrupt_flag_polling)
{
	struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(false), 0, 0);
	struct ffe_vq *vq = &fe->vq[0];

	vq->no_interrupt = true;
	cr_assert_eq(ffe_vq_start(fe, 0, 64), 0);
	for (int i = 0; i < 20; i++)
		rw_verify(vq, 3000 + i * 8, 4096, 1100 + i, NULL);
	cr_log_info("NO_INTERRUPT set: %" PRIu64 " calls for 40 requests", vq->calls);
	close_and_wait(DEV_A, fe);
}

Test(notify, multiqueue_interrupt_mode)
{
	struct ffe *fa = ready(DEV_A, NULL, ffe_default_features(true), A_QUEUES, 128);
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
	close_and_wait(DEV_A, fa);
}

Test(busy, io_in_always_poll_mode)
{
	struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(true), A_QUEUES, 128);

	for (unsigned q = 0; q < A_QUEUES; q++)
		rw_verify(&fe->vq[q], 14000 + q * 64, 16384, 1200 + q, NULL);
	close_and_wait(DEV_A, fe);
	healthy();
}

/* ---- connections ----------------------------------------------------------- */

Test(conn, states_and_reconnect_keeps_data)
{
	struct ffe *fe;
	uint8_t b[8192];

	cr_expect_eq(vdev_get_state(fx.dev[DEV_A]), VDEV_LISTENING);
	fe = ready(DEV_A, NULL, 0, 1, 128);
	cr_expect(wait_state(DEV_A, VDEV_CONNECTED, 1000), "state '%s' with a front-end set up",
		  vdev_state_name(vdev_get_state(fx.dev[DEV_A])));
	ffe_pattern(b, sizeof(b), 1300);
	write_ok(&fe->vq[0], 5000, b, sizeof(b), NULL);
	close_and_wait(DEV_A, fe);

	/* new front-end, different memory layout */
	{
		struct ffe_opts o;

		ffe_opts_init(&o);
		o.nregions = 3;
		fe = ready(DEV_A, &o, 0, 2, 128);
	}
	memset(b, 0, sizeof(b));
	read_ok(&fe->vq[1], 5000, b, sizeof(b), NULL);
	check_pattern(b, sizeof(b), 1300, "data written by the previous connection");
	check_golden(&fe->vq[0]);
	close_and_wait(DEV_A, fe);
}

Test(conn, fast_reconnect_loop)
{
	/* QEMU reconnecting: close and connect again at once, many times */
	for (int i = 0; i < 25; i++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, 1 + i % A_QUEUES, 64);

		rw_verify(&fe->vq[i % A_QUEUES], 6000 + (i % 8) * 8, 4096, 1400 + i, NULL);
		ffe_close(fe);
	}
	cr_expect(wait_state(DEV_A, VDEV_LISTENING, 3000));
	healthy();
}

Test(conn, resume_rings_on_new_connection)
{
	/* stop the rings, reconnect, SET_VRING_BASE to where we were, go on */
	struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(true), 2, 64);
	uint32_t base = 0;

	for (int i = 0; i < 10; i++)
		rw_verify(&fe->vq[0], 6100 + i * 8, 4096, 1500 + i, NULL);
	cr_assert_eq(ffe_vq_stop(fe, 0, &base), 0, "%s", fe->err);
	cr_expect_eq(base, 20u);
	cr_assert_eq(ffe_reconnect(fe), 0);
	cr_assert_eq(ffe_negotiate(fe, ffe_default_features(true)), 0, "%s", fe->err);
	cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
	cr_assert_eq(ffe_vq_resume(fe, 0), 0, "%s", fe->err);
	for (int i = 0; i < 10; i++)
		rw_verify(&fe->vq[0], 6200 + i * 8, 4096, 1600 + i, NULL);
	cr_expect_eq(ffe_vq_used_idx(&fe->vq[0]), 40, "used idx %u after resuming at 20 + 20 requests",
		     ffe_vq_used_idx(&fe->vq[0]));
	uint8_t b[4096];
	read_ok(&fe->vq[0], 6100, b, 4096, NULL);
	check_pattern(b, 4096, 1500, "data from before the reconnect");
	close_and_wait(DEV_A, fe);
}

Test(conn, second_front_end_does_not_disturb_first)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 2, 64);
	struct ffe *fe2 = ffe_open(fx.sock[DEV_A], NULL);

	rw_verify(&fe->vq[0], 6300, 4096, 1700, NULL);
	if (fe2) {
		/* it may be refused, closed, or left waiting; not served alongside */
		int p = ffe_probe(fe2);

		cr_log_info("second front-end while one is connected: probe=%d", p);
		ffe_close(fe2);
	}
	rw_verify(&fe->vq[1], 6310, 4096, 1701, NULL);
	cr_expect_eq(vdev_get_state(fx.dev[DEV_A]), VDEV_CONNECTED);
	close_and_wait(DEV_A, fe);
	healthy();
}

Test(conn, busy_while_connected_and_forced_destroy)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
	struct vdev_params p;
	char err[VDEV_ERR_MAX];
	struct stat st;
	int r;

	params(&p, A_SIZE * 2, A_QUEUES, A_SERIAL);
	r = vdev_set_params(fx.dev[DEV_A], &p, err, sizeof(err));
	cr_expect_eq(r, -EBUSY, "vdev_set_params while connected: %d", r);
	r = vdev_destroy(fx.dev[DEV_A], false);
	cr_expect_eq(r, -EBUSY, "vdev_destroy(force=false) while connected: %d", r);
	rw_verify(&fe->vq[0], 6400, 4096, 1800, NULL);

	r = vdev_destroy(fx.dev[DEV_A], true);
	cr_expect_eq(r, 0, "vdev_destroy(force=true): %d", r);
	fx.dev[DEV_A] = NULL;
	cr_expect_eq(ffe_wait_closed(fe, 3000), 1, "front-end connection still open after forced destroy");
	cr_expect(stat(fx.sock[DEV_A], &st) < 0 && errno == ENOENT, "socket file left behind");
	ffe_close(fe);
	/* B unaffected */
	fe = ready(DEV_B, NULL, 0, B_QUEUES, 64);
	rw_verify(&fe->vq[1], 100, 4096, 1801, NULL);
	close_and_wait(DEV_B, fe);
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
		fe = ready(DEV_A, NULL, 0, 2, 64);
		for (int k = 0; k < 3; k++)
			efd[k] = eventfd(0, EFD_CLOEXEC);
		/* stray fds on messages that take none (dropping is fine too) */
		f = fe->features;
		if (ffe_call(fe, FFE_SET_FEATURES, &f, 8, efd, 3) < 0 || ffe_probe(fe) != 1) {
			ffe_close(fe);
			cr_assert(wait_state(DEV_A, VDEV_LISTENING, 3000));
			fe = ready(DEV_A, NULL, 0, 2, 64);
		}
		/* table and call fds replaced */
		cr_expect_eq(ffe_set_mem_table(fe), 0, "SET_MEM_TABLE again: %s", fe->err);
		cr_expect_eq(ffe_call(fe, FFE_SET_VRING_CALL, &(uint64_t){ 1 }, 8, &efd[0], 1), 0);
		for (int k = 0; k < 3; k++)
			close(efd[k]);
		if (ffe_probe(fe) == 1)
			rw_verify(&fe->vq[0], 6500, 4096, 1900 + round, NULL);
		close_and_wait(DEV_A, fe);
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
	fe = ready(DEV_A, &o, 0, A_QUEUES, 128);
	for (unsigned q = 0; q < A_QUEUES; q++)
		for (unsigned l = 0; l < 4; l++)
			rw_verify(&fe->vq[q], 7000 + q * 512 + l * 64, 32768, 2000 + q * 10 + l, &lays[l]);
	check_golden(&fe->vq[1]);
	close_and_wait(DEV_A, fe);
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
	fe = open_fe(DEV_A, &o);
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

			read_ok(&fe->vq[0], 7900, b, 4096, NULL);
			check_pattern(b, 4096, 2100, "data written from a buffer straddling two regions");
		} else {
			cr_expect(memcmp(lo, ref, 2048) == 0 && memcmp(hi, ref + 2048, 2048) == 0,
				  "data read into a buffer straddling two regions is wrong");
		}
	}
	close_and_wait(DEV_A, fe);
	healthy();
}

Test(mem, mem_table_replaced_while_running)
{
	struct ffe *fe = ready(DEV_A, NULL, 0, A_QUEUES, 64);

	for (unsigned q = 0; q < A_QUEUES; q++)
		rw_verify(&fe->vq[q], 8000 + q * 64, 8192, 2200 + q, NULL);
	for (int i = 0; i < 3; i++) {
		int r = ffe_set_mem_table(fe);

		cr_assert_eq(r, 0, "SET_MEM_TABLE #%d while rings run: %d (%s)", i + 2, r, fe->err);
		for (unsigned q = 0; q < A_QUEUES; q++)
			rw_verify(&fe->vq[q], 8300 + q * 64, 8192, 2300 + q + i * 10, NULL);
	}
	close_and_wait(DEV_A, fe);
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

/* ---- hostile messages -------------------------------------------------------- */

enum outcome { O_ACK0, O_NACK, O_REPLY, O_DROPPED, O_HANG, O_ODD };

static const char *oname(enum outcome o)
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
static enum outcome xmit(struct ffe *fe, uint32_t req, uint32_t flags, uint32_t size,
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
static void finish(struct ffe *fe, enum outcome o, const char *what)
{
	if (o != O_DROPPED && o != O_HANG) {
		int p = ffe_probe(fe);

		cr_expect_neq(p, -ETIMEDOUT, "%s: the connection stopped answering (GET_FEATURES) "
			      "without being closed", what);
	}
	ffe_close(fe);
	healthy();
}

#define EXPECT_REFUSED(o, ...) \
	cr_expect((o) == O_NACK || (o) == O_DROPPED, __VA_ARGS__)

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
		struct ffe *fe = with_rings ? ready(DEV_A, NULL, 0, 2, 64) : negotiated(DEV_A);
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
		struct ffe *fe = negotiated(DEV_A);
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
		struct ffe *fe = negotiated(DEV_A);
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
			struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
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
			struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
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
	struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
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
		struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
		uint32_t st[2] = { 1, bad[i] };
		enum outcome o = xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);
		char what[64];

		snprintf(what, sizeof(what), "SET_VRING_NUM %u", bad[i]);
		cr_log_info("%s: %s", what, oname(o));
		EXPECT_REFUSED(o, "%s: backend %s", what, oname(o));
		finish(fe, o, what);
	}
	for (unsigned i = 0; i < 3; i++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
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
		struct ffe *fe = negotiated(DEV_A);
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
	struct ffe *fe = negotiated(DEV_A);
	uint8_t hdr[12] = { U32LE(FFE_SET_FEATURES), U32LE(FFE_FLAG_VERSION), U32LE(8) };

	/* 5 bytes of a header, then gone */
	cr_assert_eq(send(fe->sock, hdr, 5, MSG_NOSIGNAL), 5);
	ffe_close(fe);
	healthy();
	/* header and half the payload, then gone */
	fe = negotiated(DEV_A);
	cr_assert_eq(send(fe->sock, hdr, 12, MSG_NOSIGNAL), 12);
	cr_assert_eq(send(fe->sock, hdr, 4, MSG_NOSIGNAL), 4);
	ffe_close(fe);
	healthy();
	/* half a header, then silence while B is used: must not block B */
	fe = negotiated(DEV_A);
	cr_assert_eq(send(fe->sock, hdr, 6, MSG_NOSIGNAL), 6);
	{
		struct ffe *fb = ready(DEV_B, NULL, 0, 1, 64);

		rw_verify(&fb->vq[0], 300, 4096, 2400, NULL);
		close_and_wait(DEV_B, fb);
	}
	ffe_close(fe);
	healthy();
}

Test(badmsg, slow_reader_does_not_block_other_devices)
{
	/* flood GET_FEATURES without reading a single reply: the replies fill
	 * the socket; the back-end must not stall its control thread on it */
	struct ffe *fe = negotiated(DEV_A);
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
		fb = ready(DEV_B, &o, 0, 1, 64);
		rw_verify(&fb->vq[0], 400, 4096, 2500, NULL);
		cr_log_info("device B served in %" PRId64 " ms while A's front-end did not read",
			    ffe_now_ms() - t0);
		close_and_wait(DEV_B, fb);
	}
	ffe_close(fe);
	healthy();
}

Test(badmsg, kick_and_call_without_fd)
{
	static const uint32_t reqs[] = { FFE_SET_VRING_KICK, FFE_SET_VRING_CALL };

	for (unsigned k = 0; k < 2; k++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
		uint64_t v = 0;         /* vring 0, NOFD flag clear, no fd attached */
		enum outcome o = xmit(fe, reqs[k], 0, 8, &v, 8, NULL, 0, NULL);

		cr_log_info("%s without fd: %s", ffe_req_name(reqs[k]), oname(o));
		EXPECT_REFUSED(o, "%s without an fd and without the NOFD flag: backend %s",
			       ffe_req_name(reqs[k]), oname(o));
		finish(fe, o, "kick/call without fd");
	}
	/* two fds where one is expected */
	{
		struct ffe *fe = ready(DEV_A, NULL, 0, 1, 64);
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
		struct ffe *fe = negotiated(DEV_A);
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
		struct ffe *fe = negotiated(DEV_A);
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
				cr_log_warn("kick write failed");
			usleep(100000);
		}
		close(efd);
		cr_expect_neq(o, O_HANG);
		finish(fe, o, "rings before memory");
	}
	/* ring addresses that are not in any region, or run off its end */
	for (int variant = 0; variant < 4; variant++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, 2, 64);
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
		struct ffe *fe = negotiated(DEV_A);
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
		struct ffe *fe = negotiated(DEV_A);
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
	struct ffe *fe = negotiated(DEV_A);
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
		struct ffe *fe = negotiated(DEV_A);
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
	struct ffe *fe = negotiated(DEV_A);
	int efd = eventfd(0, EFD_CLOEXEC);
	struct ffe_mem_region r = { 0, 64 * MiB, fe->r[0].uva, 0 };
	enum outcome o = send_table(fe, 1, &r, 1, &efd, 1, 0);

	close(efd);
	EXPECT_REFUSED(o, "SET_MEM_TABLE with an eventfd as the region fd: backend %s", oname(o));
	finish(fe, o, "unmappable fd");
}

Test(badmsg, stray_fds_and_unoffered_features)
{
	struct ffe *fe = negotiated(DEV_A);
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

/* ---- hostile descriptors ------------------------------------------------------ */

struct hr {
	struct ffe *fe;
	struct ffe_vq *vq;
	struct ffe_buf hdr, data, st, tbl;
	uint64_t hole_gpa;              /* between region 0 and 1 */
};

static void hr_open(struct hr *h, uint32_t type, uint64_t sector)
{
	struct ffe_opts o;
	struct ffe_blk_hdr bh = { .type = type, .sector = sector };

	ffe_opts_init(&o);
	o.nregions = 2;
	h->fe = ready(DEV_A, &o, 0, 2, 128);
	h->vq = &h->fe->vq[1];
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

static void hr_fire(struct hr *h, uint16_t head)
{
	ffe_vq_publish(h->vq, head);
	ffe_vq_kick_raw(h->vq);
}

/* Wait until the used idx moves (0) or the back-end hangs up (-EPIPE), at
 * most ms (-ETIMEDOUT). */
static int wait_used_or_hangup(struct ffe *fe, struct ffe_vq *vq, int ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, ms);
	for (;;) {
		struct pollfd p = { .fd = fe->sock, .events = POLLRDHUP };

		if (ffe_vq_used_idx(vq) != 0)
			return 0;
		if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			/* one more look: a completion may precede the hang-up */
			usleep(20000);
			return ffe_vq_used_idx(vq) != 0 ? 0 : -EPIPE;
		}
		if (!ffe_deadline_left(&dl))
			return -ETIMEDOUT;
		usleep(1000);
	}
}

static void hr_finish(struct hr *h, bool ok_allowed, const char *what)
{
	int r = wait_used_or_hangup(h->fe, h->vq, HOSTILE_WAIT_MS);
	uint8_t st = *(uint8_t *)h->st.hva;
	int p;

	if (r == 0) {
		struct ffe_used_elem e = ffe_vq_used_elem(h->vq, 0);

		cr_log_info("%s: completed, id %u len %u status %#x", what, e.id, e.len, st);
		if (!ok_allowed)
			cr_expect_neq(st, FFE_BLK_S_OK, "%s: the malformed request completed with status OK "
				      "(used id %u len %u)", what, e.id, e.len);
		cr_expect_leq(ffe_vq_used_idx(h->vq), 1, "%s: one malformed request produced %u used "
			      "entries", what, ffe_vq_used_idx(h->vq));
	} else {
		cr_log_info("%s: no completion (status byte %#x)", what, st);
	}
	p = ffe_probe(h->fe);
	cr_expect_neq(p, -ETIMEDOUT, "%s: control connection stopped answering", what);
	if (p == 1) {
		/* the connection lives: its other queue must still work */
		rw_verify(&h->fe->vq[0], 9000, 8192, 3000, NULL);
	} else {
		cr_log_info("%s: connection dropped", what);
	}
	ffe_close(h->fe);
	healthy();
}

/* a valid OUT chain hdr -> data -> status in table t at indices a, b, c */
static void chain3(struct ffe_desc *t, struct hr *h, unsigned a, unsigned b, unsigned c)
{
	t[a] = (struct ffe_desc){ h->hdr.gpa, 16, FFE_DESC_F_NEXT, (uint16_t)b };
	t[b] = (struct ffe_desc){ h->data.gpa, 4096, FFE_DESC_F_NEXT, (uint16_t)c };
	t[c] = (struct ffe_desc){ h->st.gpa, 1, FFE_DESC_F_WRITE, 0 };
}

Test(badring, loop_in_ring)
{
	struct hr h;

	hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
	chain3(h.vq->desc, &h, 0, 1, 2);
	h.vq->desc[2].flags |= FFE_DESC_F_NEXT;
	h.vq->desc[2].next = 0;
	hr_fire(&h, 0);
	hr_finish(&h, false, "descriptor chain looping 0->1->2->0");
}

Test(badring, self_loop)
{
	struct hr h;

	hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
	chain3(h.vq->desc, &h, 5, 6, 7);
	h.vq->desc[6].next = 6;
	hr_fire(&h, 5);
	hr_finish(&h, false, "descriptor whose next is itself");
}

Test(badring, next_out_of_range)
{
	static const uint16_t nx[] = { 128, 4000, 0xffff };

	for (int i = 0; i < 3; i++) {
		struct hr h;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		chain3(h.vq->desc, &h, 0, 1, 2);
		h.vq->desc[1].next = nx[i];
		hr_fire(&h, 0);
		hr_finish(&h, false, "next index beyond the queue size");
	}
}

Test(badring, head_out_of_range)
{
	static const uint16_t heads[] = { 128, 0xffff };

	for (int i = 0; i < 2; i++) {
		struct hr h;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		chain3(h.vq->desc, &h, 0, 1, 2);
		hr_fire(&h, heads[i]);
		hr_finish(&h, false, "avail ring entry beyond the queue size");
	}
}

Test(badring, addresses_outside_memory)
{
	static const char *what[] = {
		"data at an unmapped gpa", "data in the hole between regions",
		"data running off the end of region 0", "data addr+len wrapping 2^64",
		"data len 0xffffffff", "header at an unmapped gpa", "status in the hole",
	};

	for (int v = 0; v < 7; v++) {
		struct hr h;
		struct ffe_desc *d;

		hr_open(&h, v == 0 || v == 2 ? FFE_BLK_T_IN : FFE_BLK_T_OUT, GOLD_SECTOR);
		d = h.vq->desc;
		chain3(d, &h, 0, 1, 2);
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
		hr_fire(&h, 0);
		hr_finish(&h, false, what[v]);
	}
}

Test(badring, indirect_table_malformed)
{
	static const char *what[] = {
		"indirect table length 17 (not a multiple of 16)", "indirect table length 0",
		"indirect table at an unmapped gpa", "nested indirect descriptor",
		"loop inside an indirect table", "next beyond an indirect table's end",
		"indirect table running off its region", "indirect table 2^32-16 bytes long",
	};

	for (int v = 0; v < 8; v++) {
		struct hr h;
		struct ffe_desc *t;
		uint32_t len = 48;
		uint64_t addr;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		t = h.tbl.hva;
		addr = h.tbl.gpa;
		chain3(t, &h, 0, 1, 2);
		switch (v) {
		case 0: len = 17; break;
		case 1: len = 0; break;
		case 2: addr = 0xdead00000000ull; break;
		case 3: t[1] = (struct ffe_desc){ h.tbl.gpa + 1024, 48, FFE_DESC_F_INDIRECT | FFE_DESC_F_NEXT, 2 };
			chain3((struct ffe_desc *)((uint8_t *)h.tbl.hva + 1024), &h, 0, 1, 2);
			break;
		case 4: t[2].flags |= FFE_DESC_F_NEXT; t[2].next = 0; break;
		case 5: t[1].next = 3; break;
		case 6: {
			/* put a valid 3-entry table in the last 48 bytes of region 1 and
			 * claim 4 KiB */
			uint8_t *end = h.fe->r[1].hva + h.fe->r[1].size - 48;

			chain3((struct ffe_desc *)end, &h, 0, 1, 2);
			addr = h.fe->r[1].gpa + h.fe->r[1].size - 48;
			len = 4096;
			break;
		}
		case 7: len = 0xfffffff0u; break;
		}
		h.vq->desc[3] = (struct ffe_desc){ addr, len, FFE_DESC_F_INDIRECT, 0 };
		hr_fire(&h, 3);
		hr_finish(&h, v == 6 ? true : false, what[v]);
	}
}

Test(badring, indirect_plus_next_and_direct_after_indirect)
{
	struct hr h;

	/* INDIRECT and NEXT both set on a ring descriptor (driver MUST NOT) */
	hr_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR);
	chain3(h.tbl.hva, &h, 0, 1, 2);
	h.vq->desc[0] = (struct ffe_desc){ h.tbl.gpa, 48, FFE_DESC_F_INDIRECT | FFE_DESC_F_NEXT, 1 };
	h.vq->desc[1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	hr_fire(&h, 0);
	hr_finish(&h, true, "ring descriptor with INDIRECT and NEXT");
}

Test(badring, chain_longer_than_queue)
{
	/* an indirect table of 300 entries on a 128-entry queue (driver MUST NOT) */
	struct hr h;
	struct ffe_desc *t;
	struct ffe_buf big;
	const unsigned n = 300;

	hr_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR);
	cr_assert_eq(ffe_alloc(h.fe, (n - 2) * 512, 512, 1, &big), 0);
	t = h.tbl.hva;
	t[0] = (struct ffe_desc){ h.hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
	for (unsigned i = 1; i < n - 1; i++)
		t[i] = (struct ffe_desc){ big.gpa + (i - 1) * 512, 512, FFE_DESC_F_NEXT, (uint16_t)(i + 1) };
	t[n - 1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	h.vq->desc[0] = (struct ffe_desc){ h.tbl.gpa, n * 16, FFE_DESC_F_INDIRECT, 0 };
	hr_fire(&h, 0);
	hr_finish(&h, true, "indirect chain of 300 descriptors on a 128 queue");
}

Test(badring, direction_and_framing_violations)
{
	static const char *what[] = {
		"header in a device-writable descriptor", "readable descriptor after a writable one",
		"no writable descriptor for the status", "status descriptor of length 0",
		"IN request whose data descriptor is device-readable",
	};

	for (int v = 0; v < 5; v++) {
		struct hr h;
		struct ffe_desc *d;

		hr_open(&h, v == 4 ? FFE_BLK_T_IN : FFE_BLK_T_OUT, v == 1 || v == 2 ? SCRATCH_SECTOR : GOLD_SECTOR);
		d = h.vq->desc;
		chain3(d, &h, 0, 1, 2);
		switch (v) {
		case 0: d[0].flags |= FFE_DESC_F_WRITE; break;
		case 1: /* hdr(R) status(W) data(R) */
			d[0].next = 2;
			d[2] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 1 };
			d[1].flags &= (uint16_t)~FFE_DESC_F_NEXT;
			break;
		case 2: d[1].flags &= (uint16_t)~FFE_DESC_F_NEXT; break;
		case 3: d[2].len = 0; break;
		case 4: break;  /* IN with a read-only data buffer */
		}
		hr_fire(&h, 0);
		if (v == 4) {
			/* whatever it answers, it must not write a device-readable buffer */
			uint8_t *p = h.data.hva;

			usleep(200000);
			for (int k = 0; k < 4096; k++)
				if (p[k] != 0x5a) {
					cr_expect_fail("%s: the device wrote into a device-readable "
						       "buffer (byte %d = %#x)", what[v], k, p[k]);
					break;
				}
		}
		hr_finish(&h, v == 1 || v == 2 || v == 4, what[v]);
	}
}

Test(badring, avail_idx_jumps)
{
	static const uint16_t jump[] = { 128 + 10, 1000, 0x8000, 0xfffb };

	for (int i = 0; i < 4; i++) {
		struct hr h;

		hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
		chain3(h.vq->desc, &h, 0, 1, 2);
		for (unsigned k = 0; k < h.vq->num; k++)
			((uint16_t *)h.vq->avail)[2 + k] = 0;
		ffe_vq_set_avail_idx(h.vq, jump[i]);
		ffe_vq_kick_raw(h.vq);
		hr_finish(&h, false, "avail idx more than a queue size ahead");
	}
}

Test(badring, valid_request_before_a_bad_one_completes)
{
	/* a good request, then a looping one, in one kick: the good one
	 * completes correctly whatever happens to the bad one */
	struct hr h;
	struct ffe_blk_io io;
	uint8_t w[4096];

	hr_open(&h, FFE_BLK_T_OUT, GOLD_SECTOR);
	ffe_pattern(w, sizeof(w), 3100);
	cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, SCRATCH_SECTOR + 64, w, sizeof(w), 0, NULL), 0);
	cr_assert_eq(ffe_submit(h.vq, &io.req), 0);
	/* the good one took descriptors from the top of the free stack (0..2) */
	chain3(h.vq->desc, &h, 100, 101, 102);
	h.vq->desc[102].flags |= FFE_DESC_F_NEXT;
	h.vq->desc[102].next = 100;
	hr_fire(&h, 100);
	cr_assert_eq(ffe_wait(h.vq, &io.req, 3000), 0, "the valid request before a looping one "
		     "never completed: %s", h.fe->err);
	cr_expect_eq(ffe_blk_status(&io), 0);
	ffe_blk_io_release(h.vq, &io);
	usleep(HOSTILE_WAIT_MS * 1000);
	cr_expect_neq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "looping request completed OK");
	{
		uint8_t r[4096];
		int p = ffe_probe(h.fe);

		if (p == 1) {
			read_ok(&h.fe->vq[0], SCRATCH_SECTOR + 64, r, 4096, NULL);
			check_pattern(r, 4096, 3100, "valid request issued before a bad one");
		}
	}
	ffe_close(h.fe);
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
		struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(round % 2), 2, 128);
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
		rw_verify(&fe->vq[0], 9100, 4096, 3200 + round, NULL);
		close_and_wait(DEV_A, fe);
	}
	healthy();
}

Test(conn, close_with_requests_in_flight)
{
	/* the front-end vanishes with the rings full: the back-end must stop
	 * touching guest memory before it lets go of it */
	for (int round = 0; round < 10; round++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, A_QUEUES, 256);
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
	cr_assert(wait_state(DEV_A, VDEV_LISTENING, 3000));
	healthy();
}

struct ioloop {
	struct ffe_vq *vq;
	atomic_bool stop;
	uint64_t base, seed;
	unsigned done;
	char err[256];
};

static void *ioloop_worker(void *arg)
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
		l->done++;
	}
	return NULL;
}

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
	fe = ready(DEV_A, &o, 0, A_QUEUES, 64);
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
	close_and_wait(DEV_A, fe);
	healthy();
}

Test(conn, create_destroy_devices_while_io)
{
	/* the control path adds and removes devices while A's rings run */
	struct ffe *fe = ready(DEV_A, NULL, 0, 2, 64);
	struct ioloop l = { .vq = &fe->vq[1], .base = 26000, .seed = 777 };
	pthread_t th;

	pthread_create(&th, NULL, ioloop_worker, &l);
	for (int i = 0; i < 15; i++) {
		struct vdev_params p;
		char name[32], sock[200], err[VDEV_ERR_MAX];
		struct vdev *d;
		int r;

		params(&p, 4 * MiB, 1 + i % 3, "tmp");
		snprintf(name, sizeof(name), "vbtmp%d", i);
		snprintf(sock, sizeof(sock), "%s/%s.sock", fx.dir, name);
		r = vdev_create(fx.core, name, sock, &p, &d, err, sizeof(err));
		cr_assert_eq(r, 0, "vdev_create %s: %s", name, err);
		if (i % 3 == 0) {
			struct ffe *ft = ffe_open(sock, NULL);

			cr_assert_not_null(ft);
			cr_assert_eq(ffe_setup(ft, 0, 1, 32), 0, "%s", ft->err);
			rw_verify(&ft->vq[0], 0, 4096, 4000 + i, NULL);
			ffe_close(ft);
		}
		r = vdev_destroy(d, true);
		cr_expect_eq(r, 0, "vdev_destroy %s: %d", name, r);
	}
	l.stop = true;
	pthread_join(th, NULL);
	cr_expect(!l.err[0], "%s", l.err);
	cr_log_info("%u cycles on A while 15 devices came and went", l.done);
	close_and_wait(DEV_A, fe);
	healthy();
}

Test(conn, set_params_resize_keeps_data)
{
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	struct ffe *fe;
	uint8_t b[GOLD_LEN];
	int r;

	params(&p, A_SIZE * 2, A_QUEUES, A_SERIAL);
	r = vdev_set_params(fx.dev[DEV_A], &p, err, sizeof(err));
	cr_assert_eq(r, 0, "vdev_set_params (grow to 64 MiB) while idle: %d %s", r, err);
	fe = ready(DEV_A, NULL, 0, 1, 64);
	cr_expect_eq(fe->cfg.capacity, A_SIZE * 2 / 512, "capacity %" PRIu64 " after growing",
		     fe->cfg.capacity);
	check_golden(&fe->vq[0]);
	read_ok(&fe->vq[0], A_SIZE / 512, b, 4096, NULL);
	check_zero(b, 4096, "grown part of a ram device");
	rw_verify(&fe->vq[0], A_SIZE * 2 / 512 - 8, 4096, 4100, NULL);
	close_and_wait(DEV_A, fe);
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
	struct ffe *fe = ready(DEV_A, NULL, ffe_default_features(event_idx), nq, 64);
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
	close_and_wait(DEV_A, fe);
}

Test(wakeup, one_queue_no_event_idx) { nap_run(false, 1); }
Test(wakeup, one_queue_event_idx) { nap_run(true, 1); }
Test(wakeup, four_queues_no_event_idx) { nap_run(false, A_QUEUES); }
Test(wakeup, four_queues_event_idx) { nap_run(true, A_QUEUES); }

/* ---- inflight tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) ------------- */

/* What the back-end did with a GET_INFLIGHT_FD: O_REPLY (region received: its
 * fd in *fd, its size in *size), O_NACK, O_DROPPED, O_HANG or O_ODD. */
static enum outcome get_inflight_raw(struct ffe *fe, uint32_t size, const void *payload,
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

Test(nego, inflight_fd_offered_and_sized)
{
	static const uint16_t shapes[][2] = { { 1, 1 }, { 1, 1024 }, { 4, 128 }, { 3, 256 },
					      { 64, 1024 }, { 2, 100 } };
	struct ffe_opts o;
	struct ffe *fe;

	/* offered, and set up as QEMU does: GET_INFLIGHT_FD, SET_INFLIGHT_FD */
	ffe_opts_init(&o);
	o.inflight = true;
	fe = ready(DEV_A, &o, 0, A_QUEUES, 128);
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

		rw_verify(&fe->vq[q], 7000 + q * 64, 8192, 7100 + q, NULL);
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
	close_and_wait(DEV_A, fe);

	/* sizes: num_queues x the queue's size aligned to 64 */
	for (unsigned i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		struct ffe_inflight_msg in = { .num_queues = shapes[i][0], .queue_size = shapes[i][1] };
		uint64_t msize, want = shapes[i][0] * ffe_inflight_queue_size(shapes[i][1]);
		struct stat st = { 0 };
		enum outcome oc;
		int fd;

		fe = negotiated(DEV_A);
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
		close_and_wait(DEV_A, fe);
	}
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
			struct ffe *fe = negotiated(DEV_A);
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

static int memfd_of(size_t size)
{
	int fd = memfd_create("hostile-inflight", MFD_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	return fd;
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
		struct ffe *fe = ready(DEV_A, NULL, 0, 2, 128);
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
			rw_verify(&fe->vq[1], 7300, 4096, 7300 + c, NULL);
		}
		finish(fe, o, what[c]);
	}
}

/* A region of the right size whose contents lie; the rings then start on it. */
Test(badring, inflight_region_contents_lie)
{
	static const char *what[] = {
		"every head marked in flight over an empty descriptor table",
		"heads marked in flight with duplicate and maximal counters",
		"last_batch_head 0xffff and used_idx 1000 behind used->idx",
		"a batch list that loops (next pointing back) with a huge batch",
		"inflight bytes 2..255 (not 1)",
		"version 7 and desc_num 5 (a region for something else)",
		"marks on heads whose descriptors loop",
	};
	const size_t per = ffe_inflight_queue_size(128);

	for (unsigned v = 0; v < sizeof(what) / sizeof(what[0]); v++) {
		struct ffe_opts o;
		struct ffe *fe;
		struct ffe_inflight_queue *iq;
		uint8_t *map;
		int fd, r;

		ffe_opts_init(&o);
		fe = open_fe(DEV_A, &o);
		/* negotiate with INFLIGHT_SHMFD, then set a region of our own */
		fe->opts.inflight = true;
		cr_assert_eq(ffe_negotiate(fe, 0), 0, "%s", fe->err);
		cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
		fd = memfd_of(2 * per);
		map = mmap(NULL, 2 * per, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_assert_neq(map, MAP_FAILED);
		iq = (struct ffe_inflight_queue *)(map + per);       /* queue 1 */
		iq->version = 1;
		iq->desc_num = 128;
		for (unsigned h = 0; h < 128; h++) {
			iq->desc[h].inflight = 1;
			iq->desc[h].counter = 1000 - h;
			iq->desc[h].next = (uint16_t)((h + 1) % 128);
		}
		switch (v) {
		case 0: break;
		case 1: for (unsigned h = 0; h < 128; h++)
				iq->desc[h].counter = h % 3 ? UINT64_MAX : 5;
			break;
		case 2: iq->last_batch_head = 0xffff; iq->used_idx = (uint16_t)-1000; break;
		case 3: iq->last_batch_head = 3; iq->desc[3].next = 3; iq->used_idx = 0x8000; break;
		case 4: for (unsigned h = 0; h < 128; h++)
				iq->desc[h].inflight = (uint8_t)(2 + h % 254);
			break;
		case 5: iq->version = 7; iq->desc_num = 5; break;
		case 6: break;
		}
		fe->inflight_fd = fd;
		fe->inflight_map = map;
		fe->inflight_size = 2 * per;
		fe->inflight_nq = 2;
		fe->inflight_qs = 128;
		r = ffe_set_inflight_fd(fe);
		cr_log_info("%s: SET_INFLIGHT_FD %d", what[v], r);
		if (r == 0) {
			/* queue 0 normal; queue 1's rings: descriptor table empty, or
			 * (case 6) every descriptor chaining to the next in a loop */
			r = ffe_vq_start(fe, 0, 128);
			cr_assert_eq(r, 0, "%s: start q0: %s", what[v], fe->err);
			if (v == 6) {
				/* the table is allocated by ffe_vq_start: start, then
				 * loop it, then restart the ring on the same region */
				r = ffe_vq_start(fe, 1, 128);
				if (r == 0) {
					uint32_t base;

					ffe_vq_stop(fe, 1, &base);
					for (unsigned h = 0; h < 128; h++)
						*ffe_vq_desc(&fe->vq[1], h) = (struct ffe_desc){
							fe->r[0].gpa, 16, FFE_DESC_F_NEXT, (uint16_t)((h + 1) % 128) };
					for (unsigned h = 0; h < 128; h++)
						iq->desc[h].inflight = 1;
					iq->version = 1;
					iq->desc_num = 128;
					r = ffe_vq_resume_at(fe, 1, 0);
				}
			} else {
				r = ffe_vq_start(fe, 1, 128);
			}
			cr_log_info("%s: start q1 %d; used idx %u, bogus completions %u", what[v], r,
				    ffe_vq_used_idx(&fe->vq[1]), fe->vq[1].bogus_used);
			usleep(100000);
			if (ffe_probe(fe) == 1)
				rw_verify(&fe->vq[0], 7400, 4096, 7400 + v, NULL);
			else
				cr_log_info("%s: connection dropped", what[v]);
		}
		ffe_close(fe);          /* also unmaps and closes the region */
		healthy();
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
	fe = ready(DEV_A, &o, 0, A_QUEUES, 128);
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
	close_and_wait(DEV_A, fe);
	healthy();
}

/* The fd behind a region shrinks after the back-end checked and mapped it:
 * touching the lost pages raises SIGBUS in the back-end. */
static void truncate_after_set(bool inflight)
{
	struct ffe_opts o;
	struct ffe *fe;
	int fd;

	ffe_opts_init(&o);
	o.inflight = inflight;
	if (inflight) {
		const size_t per = ffe_inflight_queue_size(128);
		uint8_t *map;

		/* our own (unsealed) region instead of the back-end's sealed one */
		fe = open_fe(DEV_A, &o);
		cr_assert_eq(ffe_negotiate(fe, 0), 0, "%s", fe->err);
		cr_assert_eq(ffe_set_mem_table(fe), 0, "%s", fe->err);
		fd = memfd_of(2 * per);
		map = mmap(NULL, 2 * per, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_assert_neq(map, MAP_FAILED);
		fe->inflight_fd = fd;
		fe->inflight_map = map;
		fe->inflight_size = 2 * per;
		fe->inflight_nq = 2;
		fe->inflight_qs = 128;
		cr_assert_eq(ffe_set_inflight_fd(fe), 0, "%s", fe->err);
		cr_assert_eq(ffe_vq_start(fe, 0, 128), 0, "%s", fe->err);
		rw_verify(&fe->vq[0], 7600, 4096, 7600, NULL);
		/* shrink it, then start a ring (the back-end reads the region) */
		munmap(map, 2 * per);
		fe->inflight_map = NULL;
		cr_assert_eq(ftruncate(fd, 0), 0);
		cr_log_info("inflight fd truncated to 0 after SET_INFLIGHT_FD; starting q1");
		ffe_vq_start(fe, 1, 128);
		usleep(200000);
	} else {
		fe = ready(DEV_A, &o, 0, 2, 128);
		rw_verify(&fe->vq[1], 7610, 4096, 7610, NULL);
		/* shrink guest memory under the back-end, then kick: it reads the
		 * avail ring (we no longer touch that memory ourselves) */
		cr_assert_eq(ftruncate(fe->r[0].fd, 0), 0);
		cr_log_info("guest memory fd truncated to 0 after SET_MEM_TABLE; kicking q1");
		ffe_vq_kick_raw(&fe->vq[1]);
		usleep(200000);
	}
	cr_log_info("back-end alive after touching a truncated %s", inflight ? "inflight region" :
		    "memory region");
	ffe_close(fe);
	healthy();
}

Test(badring, inflight_fd_truncated_after_set) { truncate_after_set(true); }
Test(badring, mem_table_fd_truncated_after_set) { truncate_after_set(false); }

/* ---- hostile front-end: more descriptor cases (issue 6) --------------------- */

Test(badring, wrong_write_flags)
{
	static const char *what[] = {
		"OUT whose data descriptor is device-writable",
		"IN whose status descriptor is device-readable",
		"IN with every descriptor device-readable",
		"IN with every descriptor device-writable (header too)",
		"WRITE flag on the descriptor that refers to an indirect table",
		"undefined flag bits 0xfff8 on every descriptor",
	};

	for (int v = 0; v < 6; v++) {
		bool in = v >= 1 && v <= 3;
		struct hr h;
		struct ffe_desc *d;

		hr_open(&h, in ? FFE_BLK_T_IN : FFE_BLK_T_OUT, v >= 4 ? SCRATCH_SECTOR : GOLD_SECTOR);
		d = h.vq->desc;
		chain3(d, &h, 0, 1, 2);
		if (in)
			d[1].flags |= FFE_DESC_F_WRITE;
		switch (v) {
		case 0: d[1].flags |= FFE_DESC_F_WRITE; break;
		case 1: d[2].flags &= (uint16_t)~FFE_DESC_F_WRITE; break;
		case 2: d[1].flags &= (uint16_t)~FFE_DESC_F_WRITE;
			d[2].flags &= (uint16_t)~FFE_DESC_F_WRITE;
			break;
		case 3: d[0].flags |= FFE_DESC_F_WRITE; break;
		case 4: chain3(h.tbl.hva, &h, 0, 1, 2);
			d[3] = (struct ffe_desc){ h.tbl.gpa, 48, FFE_DESC_F_INDIRECT | FFE_DESC_F_WRITE, 0 };
			break;
		case 5: for (int k = 0; k < 3; k++)
				d[k].flags |= 0xfff8;
			break;
		}
		hr_fire(&h, v == 4 ? 3 : 0);
		if (v == 4) {
			/* virtio 1.2 2.7.5.3.2: the device MUST ignore the write-only
			 * flag of a descriptor that refers to an indirect table */
			cr_expect_eq(wait_used_or_hangup(h.fe, h.vq, 2000), 0, "%s: no completion", what[v]);
			cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "%s: status %#x; the flag must be "
				     "ignored", what[v], *(uint8_t *)h.st.hva);
		} else {
			usleep(100000);
		}
		/* device-readable buffers are never written; OUT data never read
		 * from a writable buffer (golden data of A checked by healthy) */
		if (v == 1 || v == 2)
			cr_expect_eq(*(uint8_t *)h.st.hva, 0xee, "%s: the device wrote %#x into a "
				     "device-readable status byte", what[v], *(uint8_t *)h.st.hva);
		if (v == 2 || v == 0) {
			uint8_t *p = h.data.hva;

			for (int k = 0; k < 4096; k++)
				if (p[k] != 0x5a) {
					cr_expect_fail("%s: data buffer byte %d became %#x", what[v], k, p[k]);
					break;
				}
		}
		hr_finish(&h, v == 0 || v >= 4, what[v]);
	}
}

Test(badring, short_header)
{
	static const char *what[] = {
		"8-byte header, then the status", "15-byte header, then the status",
		"0-byte header, then the status", "no header: only a status descriptor",
		"header spanning two descriptors (8 + 8) and no status byte",
		"header whose second half is device-writable",
		"header spanning two descriptors (8 + 8) with data and status (valid)",
	};

	for (int v = 0; v < 7; v++) {
		struct hr h;
		struct ffe_desc *d;
		uint16_t head = 0;

		hr_open(&h, FFE_BLK_T_OUT, v == 6 ? SCRATCH_SECTOR + 8 : GOLD_SECTOR);
		d = h.vq->desc;
		switch (v) {
		case 0: case 1: case 2:
			d[0] = (struct ffe_desc){ h.hdr.gpa, v == 0 ? 8u : v == 1 ? 15u : 0u, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		case 3:
			d[0] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		case 4:
			d[0] = (struct ffe_desc){ h.hdr.gpa, 8, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.hdr.gpa + 8, 8, 0, 0 };
			break;
		case 5:
			d[0] = (struct ffe_desc){ h.hdr.gpa, 8, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.hdr.gpa + 8, 8, FFE_DESC_F_WRITE | FFE_DESC_F_NEXT, 2 };
			d[2] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		case 6:
			d[0] = (struct ffe_desc){ h.hdr.gpa, 8, FFE_DESC_F_NEXT, 1 };
			d[1] = (struct ffe_desc){ h.hdr.gpa + 8, 8, FFE_DESC_F_NEXT, 2 };
			d[2] = (struct ffe_desc){ h.data.gpa, 4096, FFE_DESC_F_NEXT, 3 };
			d[3] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
			break;
		}
		hr_fire(&h, head);
		if (v == 6) {
			uint8_t r[4096];

			cr_expect_eq(wait_used_or_hangup(h.fe, h.vq, 2000), 0, "%s: no completion", what[v]);
			cr_expect_eq(*(uint8_t *)h.st.hva, FFE_BLK_S_OK, "%s: status %#x", what[v],
				     *(uint8_t *)h.st.hva);
			read_ok(&h.fe->vq[0], SCRATCH_SECTOR + 8, r, sizeof(r), NULL);
			for (int k = 0; k < 4096; k++)
				if (r[k] != 0x5a) {
					cr_expect_fail("%s: byte %d on disk is %#x", what[v], k, r[k]);
					break;
				}
		}
		if (v == 4)
			cr_expect_eq(*(uint8_t *)h.st.hva, 0xee, "%s: status byte (not in the chain) "
				     "written", what[v]);
		hr_finish(&h, v == 6, what[v]);
	}
}

Test(badring, indirect_chain_beyond_any_limit)
{
	/* chains longer than the queue, through indirect tables */
	static const char *what[] = {
		"indirect table of 1025 chained entries (beyond the 1024 maximum)",
		"indirect table of 4096 chained entries",
		"indirect table of 200 entries whose last links back to the first",
		"indirect chain of 129 descriptors (queue size + 1) with 127 data segments",
	};

	for (int v = 0; v < 4; v++) {
		struct hr h;
		struct ffe_buf big;
		struct ffe_desc *t;
		unsigned n = v == 0 ? 1025 : v == 1 ? 4096 : v == 2 ? 200 : 129;

		hr_open(&h, FFE_BLK_T_OUT, SCRATCH_SECTOR + 64);
		cr_assert_eq(ffe_alloc(h.fe, 4096 * 16, 16, 1, &big), 0);
		t = big.hva;
		for (unsigned i = 0; i < n; i++)
			t[i] = (struct ffe_desc){ h.data.gpa, 512, FFE_DESC_F_NEXT, (uint16_t)(i + 1) };
		t[0] = (struct ffe_desc){ h.hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
		if (v == 2)
			t[n - 1].next = 0;
		else
			t[n - 1] = (struct ffe_desc){ h.st.gpa, 1, FFE_DESC_F_WRITE, 0 };
		h.vq->desc[0] = (struct ffe_desc){ big.gpa, n * 16, FFE_DESC_F_INDIRECT, 0 };
		hr_fire(&h, 0);
		hr_finish(&h, v == 3, what[v]);
	}
}

Test(badring, length_wraparound)
{
	/* lengths that only fit when added in 32 bits, addresses that wrap */
	static const char *what[] = {
		"OUT data of 64 descriptors x 64 MiB + 512 (2^32 + 512 bytes)",
		"IN data of 64 descriptors x 64 MiB + 512 (2^32 + 512 bytes)",
		"data descriptor at 2^64 - 512 of 1024 bytes",
		"header descriptor of 0xffffffff bytes",
		"status descriptor at 2^64 - 1",
	};

	for (int v = 0; v < 5; v++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, 2, 128);    /* one 64 MiB region */
		struct ffe_vq *vq = &fe->vq[1];
		struct ffe_blk_hdr bh = { .type = v == 1 ? FFE_BLK_T_IN : FFE_BLK_T_OUT,
					  .sector = GOLD_SECTOR };
		struct ffe_buf hdr, st, small, tbl;
		struct ffe_desc *t;
		unsigned n = 0;
		uint16_t w = v == 1 ? FFE_DESC_F_WRITE : 0;
		int r;

		cr_assert_eq(ffe_alloc(fe, 16, 16, 0, &hdr), 0);
		cr_assert_eq(ffe_alloc(fe, 1, 1, 0, &st), 0);
		cr_assert_eq(ffe_alloc(fe, 512, 512, 0, &small), 0);
		cr_assert_eq(ffe_alloc(fe, 80 * 16, 16, 0, &tbl), 0);
		memcpy(hdr.hva, &bh, sizeof(bh));
		memset(small.hva, 0x77, 512);
		*(uint8_t *)st.hva = 0xee;
		t = tbl.hva;
		t[n++] = (struct ffe_desc){ hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
		switch (v) {
		case 0: case 1:
			for (int k = 0; k < 64; k++, n++)
				t[n] = (struct ffe_desc){ fe->r[0].gpa, (uint32_t)fe->r[0].size,
							  (uint16_t)(FFE_DESC_F_NEXT | w), (uint16_t)(n + 1) };
			t[n] = (struct ffe_desc){ small.gpa, 512, (uint16_t)(FFE_DESC_F_NEXT | w),
						  (uint16_t)(n + 1) };
			n++;
			cr_assert_eq(fe->r[0].size, 64 * MiB);
			break;
		case 2:
			t[n] = (struct ffe_desc){ 0ull - 512, 1024, FFE_DESC_F_NEXT, (uint16_t)(n + 1) };
			n++;
			break;
		case 3:
			t[0].len = 0xffffffffu;
			break;
		}
		t[n] = (struct ffe_desc){ v == 4 ? ~0ull : st.gpa, 1, FFE_DESC_F_WRITE, 0 };
		n++;
		*ffe_vq_desc(vq, 0) = (struct ffe_desc){ tbl.gpa, n * 16, FFE_DESC_F_INDIRECT, 0 };
		ffe_vq_publish(vq, 0);
		ffe_vq_kick_raw(vq);
		r = wait_used_or_hangup(fe, vq, HOSTILE_WAIT_MS);
		cr_log_info("%s: %s, status %#x", what[v], r == 0 ? "completed" :
			    r == -EPIPE ? "connection dropped" : "no completion", *(uint8_t *)st.hva);
		cr_expect_neq(*(uint8_t *)st.hva, FFE_BLK_S_OK, "%s: completed with status OK", what[v]);
		if (r == 0)
			cr_expect_leq(ffe_vq_used_elem(vq, 0).len, 1u, "%s: used len %u", what[v],
				      ffe_vq_used_elem(vq, 0).len);
		for (int k = 0; v == 1 && k < 512; k++)
			if (((uint8_t *)small.hva)[k] != 0x77) {
				cr_expect_fail("%s: the device read data into a request it should refuse",
					       what[v]);
				break;
			}
		finish(fe, r == -EPIPE ? O_DROPPED : O_ACK0, what[v]);
	}
}

Test(badring, ring_addr_outside_memory_then_kick)
{
	static const char *what[] = {
		"unstarted ring: desc table at an unmapped uva, then KICK and ENABLE",
		"running ring: avail ring moved off the end of memory, then a request and a kick",
		"running ring: used ring misaligned by 2",
		"running ring: memory table replaced by one that no longer holds the rings",
		"running ring: desc, avail and used at the same address",
	};

	for (int v = 0; v < 5; v++) {
		struct ffe *fe = ready(DEV_A, NULL, 0, v == 0 ? 1 : 2, 128);
		struct ffe_vq *vq = &fe->vq[1];
		enum outcome o = O_ACK0;
		uint64_t one = 1;

		if (v == 0) {
			/* program vring 1 by hand with a bad desc address */
			struct ffe_buf a, u;
			uint32_t st[2] = { 1, 128 };
			struct ffe_vring_addr ad = { .index = 1, .desc = 0x1000 };
			int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
			uint64_t kv = 1;

			cr_assert_eq(ffe_alloc(fe, 4096, 4096, 0, &a), 0);
			cr_assert_eq(ffe_alloc(fe, 4096, 4096, 0, &u), 0);
			ad.avail = ffe_hva_to_uva(fe, a.hva);
			ad.used = ffe_hva_to_uva(fe, u.hva);
			xmit(fe, FFE_SET_VRING_NUM, 0, 8, st, 8, NULL, 0, NULL);
			st[1] = 0;
			xmit(fe, FFE_SET_VRING_BASE, 0, 8, st, 8, NULL, 0, NULL);
			o = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(ad), &ad, sizeof(ad), NULL, 0, NULL);
			cr_log_info("%s: SET_VRING_ADDR %s", what[v], oname(o));
			if (o != O_DROPPED) {
				o = xmit(fe, FFE_SET_VRING_CALL, 0, 8, &kv, 8, &call, 1, NULL);
				o = xmit(fe, FFE_SET_VRING_KICK, 0, 8, &kv, 8, &kick, 1, NULL);
				cr_log_info("%s: SET_VRING_KICK %s", what[v], oname(o));
			}
			for (int k = 0; k < 3 && o != O_DROPPED; k++) {
				cr_expect_eq(write(kick, &one, 8), 8);
				usleep(20000);
			}
			if (o != O_DROPPED) {
				st[1] = 1;
				o = xmit(fe, FFE_SET_VRING_ENABLE, 0, 8, st, 8, NULL, 0, NULL);
				cr_log_info("%s: SET_VRING_ENABLE %s", what[v], oname(o));
				cr_expect_eq(write(kick, &one, 8), 8);
				usleep(50000);
			}
			close(kick);
			close(call);
		} else if (v == 3) {
			/* same memory, different user addresses: the rings' uvas
			 * fall outside the new table */
			uint8_t buf[8 + sizeof(struct ffe_mem_region)];
			int fd;
			struct ffe_mem_region mr;

			ffe_mem_table_payload(fe, buf, &fd);
			memcpy(&mr, buf + 8, sizeof(mr));
			mr.uva += 1ull << 40;
			memcpy(buf + 8, &mr, sizeof(mr));
			o = xmit(fe, FFE_SET_MEM_TABLE, 0, sizeof(buf), buf, sizeof(buf), &fd, 1, NULL);
		} else {
			struct ffe_vring_addr ad = { .index = 1, .desc = vq->desc_uva, .used = vq->used_uva,
						     .avail = vq->avail_uva };
			uint64_t end = fe->r[0].uva + fe->r[0].size;

			if (v == 1)
				ad.avail = end - 6;
			else if (v == 2)
				ad.used += 2;
			else
				ad.avail = ad.used = ad.desc;
			o = xmit(fe, FFE_SET_VRING_ADDR, 0, sizeof(ad), &ad, sizeof(ad), NULL, 0, NULL);
		}
		cr_log_info("%s: %s", what[v], oname(o));
		if (v == 1 || v == 2 || v == 3)
			EXPECT_REFUSED(o, "%s: backend %s", what[v], oname(o));
		else
			cr_expect_neq(o, O_HANG, "%s: backend %s", what[v], oname(o));
		if (v > 0 && o != O_DROPPED) {
			/* a request into the (old) ring, and a kick */
			struct ffe_blk_io io;

			cr_assert_eq(ffe_blk_prep(&io, FFE_BLK_T_OUT, SCRATCH_SECTOR, fe->r[0].hva, 4096,
						  0, NULL), 0);
			if (ffe_submit(vq, &io.req) == 0)
				ffe_vq_kick_raw(vq);
			usleep(200000);
			ffe_blk_io_release(vq, &io);
		}
		finish(fe, o, what[v]);
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
			struct ffe *fe = negotiated(DEV_A);
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

struct bystander {
	struct ffe *fe;
	pthread_t th;
	atomic_bool stop;
	unsigned done;
	int64_t worst_ms;
	char err[256];
};

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
		b->done++;
	}
	return NULL;
}

/* Device B serves I/O in a thread while A is attacked. */
static void bystander_start(struct bystander *b)
{
	memset(b, 0, sizeof(*b));
	b->fe = ready(DEV_B, NULL, 0, 1, 64);
	pthread_create(&b->th, NULL, bystander_worker, b);
}

static void bystander_stop(struct bystander *b, const char *during)
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
	close_and_wait(DEV_B, b->fe);
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
		fe = open_fe(DEV_A, &o);
		fe->send_chunk = chunks[i];
		fe->send_gap_us = 30;
		r = ffe_setup(fe, 0, 2, 64);
		cr_assert_eq(r, 0, "set-up with messages in %u-byte pieces: %s (%s)", chunks[i],
			     strerror(-r), fe->err);
		cr_expect_eq(ffe_get_config(fe, 0, cfg, sizeof(cfg)), 0, "%s", fe->err);
		for (unsigned q = 0; q < 2; q++)
			rw_verify(&fe->vq[q], 7700 + q * 64, 8192, 7700 + i * 10 + q, NULL);
		close_and_wait(DEV_A, fe);
	}
	bystander_stop(&b, "set-ups sent byte by byte");
	healthy();
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void expect_fds_back_to(int base, const char *after)
{
	struct ffe_deadline dl;
	int now;

	ffe_deadline_start(&dl, 2000);
	while ((now = count_fds()) > base && ffe_deadline_left(&dl))
		usleep(10000);
	cr_expect_eq(now, base, "%d fds open after %s, %d before", now, after, base);
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
	fe = ready(DEV_A, NULL, 0, 2, 64);
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
	rw_verify(&fe->vq[1], 7800, 4096, 7801, NULL);
	close_and_wait(DEV_A, fe);
	bystander_stop(&b, "a flood of 10k messages on A");
	expect_fds_back_to(base, "a flood of 10k messages with 500 eventfds");
	healthy();
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
			fe = open_fe(DEV_A, NULL);
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
			cr_assert(wait_state(DEV_A, VDEV_LISTENING, 3000));
			usleep(2000);
		}
		cr_assert_not_null(fe, "cycle %d: refused 20 times", i);
		cr_assert_eq(r, 0, "cycle %d: %s (%s)", i, strerror(-r), fe->err);
		if (i % 5 == 3) {
			rw_verify(&fe->vq[0], 7900 + (i % 8) * 8, 4096, 7900 + i, NULL);
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
		cr_assert(wait_state(DEV_A, VDEV_LISTENING, 3000), "cycle %d: A still '%s' 3 s after "
			  "its front-end left", i, vdev_state_name(vdev_get_state(fx.dev[DEV_A])));
	}
	cr_log_info("%u connections refused because the previous one was still held", refused);
	bystander_stop(&b, "100 connections coming and going on A");
	expect_fds_back_to(base, "100 connections came and went");
	healthy();
}

/* One test at a time.  Several of these tests run a core with two engine
 * threads busy under four writer threads; two of them side by side (criterion
 * runs one per cpu by default) put a dozen spinning threads on the 2-vCPU test
 * machines, where other threads then went without cpu for 2-36 s (the
 * back-end's control thread among them).  Costs 2-3 s of the suite's 16. */
unsigned crmain_jobs = 1;

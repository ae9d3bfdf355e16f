/* Integration suite `rbd` (meson test rbd-fakefe): the Ceph RBD backend
 * (issue 12) driven through its vhost-user socket by the fake front-end,
 * the core in-process, against a throwaway one-node cluster
 * (contrib/ceph-test-cluster.sh) that the first test of a run starts and
 * crmain_cleanup() stops by its pids.  Images are made with the rbd CLI.
 *
 * Verified I/O at QD32 on four queues, flush, discard and write-zeroes
 * reading back zeros, the size taken from the image, grown at create and
 * by a live resize, `rbd resize` from outside announced to the front-end,
 * a snapshot served read-only, the exclusive lock refusing a second
 * writer, refused configs (no pool, no image, no monitor) leaving nothing
 * behind within a bounded time, and an OSD outage under rbd_timeout: the
 * requests fail with IOERR, a ram bystander keeps serving, the device
 * serves again when the OSD is back.  Skipped (exit 77) without the ceph
 * packages or when the cluster cannot start.  Tests run one at a time. */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coretest.h"
#include "crmain.h"

#define MiB             (1024ull * 1024)
#define SECT            512ull
#define NQ              4
#define QD              32
#define QSIZE           128

unsigned crmain_jobs = 1;       /* one cluster, one test at a time */

static char cdir[128], conf[192];

/* ---- shell and cluster --------------------------------------------------- */

/* Run a shell command; its output (stdout and stderr) in out if given.
 * Returns the exit status (or -1). */
__attribute__((format(printf, 3, 4)))
static int sh(char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (out && outlen) {
		n = fread(out, 1, outlen - 1, f);
		out[n] = '\0';
	} else {
		char sink[512];
		while (fread(sink, 1, sizeof(sink), f) > 0)
			;
	}
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *script(void)
{
	const char *s = getenv("CEPH_TEST_CLUSTER");
	return s ? s : "contrib/ceph-test-cluster.sh";
}

static void paths(void)
{
	snprintf(cdir, sizeof(cdir), "/tmp/vhostd-rbd-%s", crmain_run_id());
	snprintf(conf, sizeof(conf), "%s/ceph.conf", cdir);
}

/* The run's cluster: started by the first test that needs it (under a
 * lock, the result remembered next to it), reused by the others. */
static void need_cluster(void)
{
	char lockp[192], failp[192], out[4096] = "";
	struct stat st;
	int fd, r;

	paths();
	if (sh(NULL, 0, "command -v ceph-mon && command -v ceph-osd && command -v rbd") != 0)
		cr_skip_test("ceph-mon, ceph-osd or rbd not installed (apt-get install ceph-mon "
			     "ceph-osd ceph-common)");
	snprintf(lockp, sizeof(lockp), "%s.lock", cdir);
	snprintf(failp, sizeof(failp), "%s.failed", cdir);
	fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	flock(fd, LOCK_EX);
	if (stat(failp, &st) == 0) {
		close(fd);
		cr_skip_test("the test cluster could not start (see the first test's log)");
	}
	if (stat(conf, &st) != 0) {
		r = sh(out, sizeof(out), "nice %s start %s", script(), cdir);
		if (r != 0) {
			close(open(failp, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
			close(fd);
			cr_log_info("ceph-test-cluster.sh start: exit %d:\n%s", r, out);
			cr_skip_test("the test cluster could not start (exit %d)", r);
		}
		cr_log_info("%s", out);
	}
	close(fd);
}

void crmain_cleanup(void)
{
	char lockp[192], failp[192];
	struct stat st;

	paths();
	if (stat(cdir, &st) == 0)
		sh(NULL, 0, "%s stop %s --purge", script(), cdir);
	snprintf(lockp, sizeof(lockp), "%s.lock", cdir);
	snprintf(failp, sizeof(failp), "%s.failed", cdir);
	unlink(lockp);
	unlink(failp);
}

/* rbd CLI on the cluster; asserts success. */
__attribute__((format(printf, 1, 2)))
static void rbd(const char *fmt, ...)
{
	char args[512], out[2048];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	r = sh(out, sizeof(out), "timeout 60 rbd -c %s %s", conf, args);
	cr_assert_eq(r, 0, "rbd %s: exit %d: %s", args, r, out);
}

/* The image's size in bytes, from `rbd info`. */
static uint64_t image_size(const char *img)
{
	char out[4096], *p;

	cr_assert_eq(sh(out, sizeof(out), "timeout 60 rbd -c %s info --format json rbd/%s", conf,
			img), 0, "rbd info %s: %s", img, out);
	p = strstr(out, "\"size\":");
	cr_assert_not_null(p, "%s", out);
	return strtoull(p + 7, NULL, 10);
}

/* A fresh image of size bytes named after the test. */
static const char *new_image(const char *name, uint64_t size)
{
	static char img[64];

	snprintf(img, sizeof(img), "%s", name);
	sh(NULL, 0, "timeout 60 rbd -c %s rm rbd/%s", conf, img);
	rbd("create --size %" PRIu64 "K rbd/%s", size / 1024, img);
	return img;
}

/* ---- fixture ------------------------------------------------------------- */

static void setup(void)
{
	struct core_opts o = { .nthreads = 2 };

	fx_begin("/tmp/vhostd-rbdt");
	need_cluster();
	fx_core_up(&o);
}

static void teardown(void)
{
	fx_stop();
	if (fx.dir[0])
		fx_rm_dir(fx.dir);
	fx_leak_check();
}

TestSuite(rbd_io, .init = setup, .fini = teardown, .timeout = 240);
TestSuite(rbd_size, .init = setup, .fini = teardown, .timeout = 240);
TestSuite(rbd_snap, .init = setup, .fini = teardown, .timeout = 240);
TestSuite(rbd_lock, .init = setup, .fini = teardown, .timeout = 240);
TestSuite(rbd_refused, .init = setup, .fini = teardown, .timeout = 240);
TestSuite(rbd_outage, .init = setup, .fini = teardown, .timeout = 300);

static void rbd_params(struct vdev_params *p, const char *img)
{
	vdev_params_init(p);
	p->backing = BE_RBD;
	p->queues = NQ;
	snprintf(p->rbd.pool, sizeof(p->rbd.pool), "rbd");
	snprintf(p->rbd.image, sizeof(p->rbd.image), "%s", img);
	snprintf(p->rbd.conf, sizeof(p->rbd.conf), "%s", conf);
	snprintf(p->serial, sizeof(p->serial), "rbd-test");
}

static unsigned add_rbd(const char *name, const char *img, uint64_t size)
{
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	unsigned i;
	int r;

	rbd_params(&p, img);
	p.size = size;
	r = fx_try_add(name, &p, err, sizeof(err), &i);
	cr_assert_eq(r, 0, "rbd device on %s: %s (%s)", img, strerror(-r), err);
	return i;
}

static struct ffe *live_fe(unsigned dev, unsigned nq)
{
	struct ffe_opts o;
	struct ffe *fe;

	ffe_opts_init(&o);
	o.extra_protocol_features = FFE_BIT(FFE_PF_BACKEND_REQ);
	o.timeout_ms = 30000;
	o.mem_size = 128 * MiB;
	o.scratch_per_queue = 16 * MiB;
	fe = fx_keep(fx_ready(dev, &o, 0, nq, QSIZE));
	cr_assert_geq(fe->backend_fd, 0, "no back-end channel");
	return fe;
}

static uint64_t capacity(struct ffe *fe)
{
	struct ffe_blk_config c;

	cr_assert_eq(ffe_get_config(fe, 0, &c, sizeof(c)), 0, "GET_CONFIG: %s", fe->err);
	return c.capacity;
}

/* One CONFIG_CHANGE_MSG on the back-end channel within ms. */
static void expect_config_change(struct ffe *fe, int ms, const char *after)
{
	struct ffe_msg *m = malloc(sizeof(*m));
	int r = ffe_backend_recv(fe, m, ms);

	cr_assert_eq(r, 0, "no message on the back-end channel within %d ms after %s: %s", ms,
		     after, strerror(-r));
	cr_expect_eq(m->hdr.request, FFE_BACKEND_CONFIG_CHANGE_MSG, "after %s: request %u",
		     after, m->hdr.request);
	ffe_msg_close_fds(m);
	free(m);
}

static void stats(unsigned dev, struct vdev_stats *st)
{
	vdev_get_stats(fx.dev[dev], st);
}

/* The number after "key " in the backend's stats lines. */
static uint64_t detail(const struct vdev_stats *st, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "%s ", key);
	p = strstr(st->detail, k);
	cr_assert_not_null(p, "no %s in stats: %s", key, st->detail);
	return strtoull(p + strlen(k), NULL, 10);
}

static int64_t now_ms(void)
{
	return ffe_now_ms();
}

/* ---- QD32 on every queue --------------------------------------------------- */

struct qjob {
	struct ffe_vq *vq;
	unsigned q, rounds;
	size_t bs;
	uint64_t base;                  /* first sector */
	uint64_t seed;
	bool write;
	unsigned done;
	char err[320];
};

/* rounds of QD requests (writes of a pattern, or reads checking it), each
 * round submitted at once, kicked, and waited for. */
static void *qd_worker(void *arg)
{
	struct qjob *j = arg;
	struct ffe_blk_io *io = calloc(QD, sizeof(*io));
	uint8_t *buf = malloc(j->bs);
	const struct ffe_layout lay = { FFE_L_NATURAL, 4096, true };

	for (unsigned r = 0; r < j->rounds && !j->err[0]; r++) {
		for (unsigned k = 0; k < QD; k++) {
			uint64_t blk = ((uint64_t)j->q * j->rounds + r) * QD + k;
			uint64_t sector = j->base + blk * (j->bs / SECT);

			if (j->write)
				ffe_pattern(buf, j->bs, j->seed + blk);
			int rc = ffe_blk_prep(&io[k], j->write ? FFE_BLK_T_OUT : FFE_BLK_T_IN,
					      sector, j->write ? buf : NULL, j->write ? j->bs : 0,
					      j->write ? 0 : j->bs, &lay);

			if (rc == 0)
				rc = ffe_submit(j->vq, &io[k].req);
			if (rc < 0) {
				snprintf(j->err, sizeof(j->err), "q%u: submit %u: %s (%s)", j->q, k,
					 strerror(-rc), j->vq->fe->err);
				for (unsigned x = k + 1; x < QD; x++)
					memset(&io[x], 0, sizeof(io[x]));
				break;
			}
		}
		ffe_kick(j->vq);
		for (unsigned k = 0; k < QD; k++) {
			uint64_t blk = ((uint64_t)j->q * j->rounds + r) * QD + k;

			if (j->err[0]) {
				ffe_blk_io_release(j->vq, &io[k]);
				continue;
			}
			if (ffe_wait(j->vq, &io[k].req, 30000) < 0)
				snprintf(j->err, sizeof(j->err), "q%u: %s", j->q, j->vq->fe->err);
			else if (ffe_blk_status(&io[k]) != FFE_BLK_S_OK)
				snprintf(j->err, sizeof(j->err), "q%u block %" PRIu64 ": status %d",
					 j->q, blk, ffe_blk_status(&io[k]));
			else if (!j->write && !ffe_pattern_ok(ffe_blk_in(&io[k]), j->bs,
							      j->seed + blk))
				snprintf(j->err, sizeof(j->err), "q%u block %" PRIu64 ": data "
					 "differs from what was written", j->q, blk);
			else
				j->done++;
			ffe_blk_io_release(j->vq, &io[k]);
		}
	}
	free(io);
	free(buf);
	return NULL;
}

/* QD32 on each of NQ queues at once; returns requests per second. */
static double qd_run(struct ffe *fe, uint64_t base, unsigned rounds, size_t bs, uint64_t seed,
		     bool write)
{
	struct qjob j[NQ];
	pthread_t th[NQ];
	int64_t t0 = now_ms(), t;
	unsigned total = 0;

	memset(j, 0, sizeof(j));
	for (unsigned q = 0; q < NQ; q++) {
		j[q] = (struct qjob){ .vq = &fe->vq[q], .q = q, .rounds = rounds, .bs = bs, .base = base,
				      .seed = seed, .write = write };
		pthread_create(&th[q], NULL, qd_worker, &j[q]);
	}
	for (unsigned q = 0; q < NQ; q++) {
		pthread_join(th[q], NULL);
		cr_expect_eq(j[q].err[0], '\0', "%s", j[q].err);
		total += j[q].done;
	}
	t = now_ms() - t0;
	cr_assert_eq(total, NQ * rounds * QD, "%u of %u requests done", total, NQ * rounds * QD);
	return t > 0 ? total * 1000.0 / t : 0;
}

/* ---- data ------------------------------------------------------------------ */

Test(rbd_io, verified_qd32_on_four_queues)
{
	const char *img = new_image("t-io", 256 * MiB);
	unsigned a = add_rbd("rbdA", img, 0);
	struct ffe *fe = live_fe(a, NQ);
	struct vdev_stats st;
	double w, r, w64, r64;

	w = qd_run(fe, 0, 16, 4096, 0x4b, true);
	r = qd_run(fe, 0, 16, 4096, 0x4b, false);
	cr_assert_eq(ffe_blk_flush(&fe->vq[0]), FFE_BLK_S_OK, "FLUSH");
	/* 64 KiB: several descriptors per request, straight from guest memory */
	w64 = qd_run(fe, 64 * MiB / SECT, 4, 65536, 0x64, true);
	r64 = qd_run(fe, 64 * MiB / SECT, 4, 65536, 0x64, false);
	/* on stderr: the figures belong in the log of every run */
	fprintf(stderr, "rbd-fakefe: QD32 x %u queues: 4K write %.0f IOPS, 4K read %.0f IOPS, "
		"64K write %.0f IOPS (%.1f MiB/s), 64K read %.0f IOPS (%.1f MiB/s)\n",
		NQ, w, r, w64, w64 / 16, r64, r64 / 16);
	stats(a, &st);
	cr_expect_eq(st.errors, 0, "errors %" PRIu64, st.errors);
	cr_expect_eq(st.flushes, 1);
	cr_expect_eq(st.inflight, 0);
	cr_expect_eq(detail(&st, "rbd_timeouts"), 0);
	cr_expect_not_null(strstr(st.detail, "rbd_image rbd/t-io\n"), "%s", st.detail);
	cr_expect_not_null(strstr(st.detail, "rbd_lock exclusive\n"), "%s", st.detail);

	/* what the guest wrote is in the image: rbd export of block 5 of q0 */
	{
		char out[256];
		uint8_t *b = malloc(4096);
		char path[256];
		FILE *f;

		snprintf(path, sizeof(path), "%s/export", fx.dir);
		cr_assert_eq(sh(out, sizeof(out), "timeout 60 rbd -c %s export rbd/%s %s",
				conf, img, path), 0, "%s", out);
		f = fopen(path, "rb");
		cr_assert_not_null(f);
		fseek(f, 5 * 4096, SEEK_SET);
		cr_assert_eq(fread(b, 1, 4096, f), 4096u);
		fclose(f);
		unlink(path);
		cr_expect(ffe_pattern_ok(b, 4096, 0x4b + 5), "rbd export shows other data");
		free(b);
	}
}

Test(rbd_io, discard_and_write_zeroes_read_zeros)
{
	const char *img = new_image("t-zero", 64 * MiB);
	unsigned a = add_rbd("rbdA", img, 0);
	struct ffe *fe = live_fe(a, 1);
	struct ffe_vq *vq = &fe->vq[0];
	const struct ffe_layout big = { FFE_L_NATURAL, 1 << 20, true };
	struct vdev_stats st;

	cr_assert(fe->features & FFE_BIT(FFE_F_BLK_DISCARD), "DISCARD not offered");
	cr_assert(fe->features & FFE_BIT(FFE_F_BLK_WRITE_ZEROES), "WRITE_ZEROES not offered");
	/* a partial object, a whole 4 MiB object, and across two objects */
	fx_write_pattern(vq, 8, 64 * 1024, 1, NULL);
	fx_write_pattern(vq, 8192, 4 * MiB, 2, &big);
	fx_write_pattern(vq, 20000, 1 * MiB, 3, &big);
	cr_assert_eq(ffe_blk_discard(vq, 16, 64), FFE_BLK_S_OK);
	cr_assert_eq(ffe_blk_discard(vq, 8192, 8192), FFE_BLK_S_OK);
	cr_assert_eq(ffe_blk_write_zeroes(vq, 20000, 1024, false), FFE_BLK_S_OK);
	fx_read_check(vq, 16, 64 * 512, 0, NULL, "discarded part of an object");
	fx_read_check(vq, 8192, 4 * MiB, 0, &big, "discarded object");
	fx_read_check(vq, 20000, 512 * 1024, 0, &big, "write-zeroes across objects");
	/* around them, the data */
	{
		uint8_t *b = malloc(8 * 512);
		cr_assert_eq(ffe_blk_read(vq, 8, b, 8 * 512, NULL), FFE_BLK_S_OK);
		cr_expect(ffe_pattern_ok(b, 8 * 512, 1), "data before the discard");
		free(b);
	}
	/* several segments in one request: one completion */
	{
		struct { uint64_t sector; uint32_t num, flags; } seg[3] = {
			{ 30000, 8, 0 }, { 31000, 8, 0 }, { 40000, 2048, 0 },
		};
		fx_write_pattern(vq, 30000, 8 * 512, 4, NULL);
		fx_write_pattern(vq, 31000, 8 * 512, 5, NULL);
		cr_assert_eq(ffe_blk_req(vq, FFE_BLK_T_WRITE_ZEROES, 0, seg, sizeof(seg), NULL, 0,
					 NULL, NULL), FFE_BLK_S_OK);
		fx_read_check(vq, 30000, 8 * 512, 0, NULL, "first segment");
		fx_read_check(vq, 31000, 8 * 512, 0, NULL, "second segment");
	}
	stats(a, &st);
	cr_expect_eq(st.errors, 0);
	cr_expect_eq(st.discards, 2);
	cr_expect_eq(st.write_zeroes, 2);
}

/* ---- size ---------------------------------------------------------------- */

Test(rbd_size, from_the_image_and_grown_at_create)
{
	const char *img = new_image("t-size", 48 * MiB);
	struct vdev_params p;
	char err[VDEV_ERR_MAX];
	unsigned a = add_rbd("rbdA", img, 0);
	struct ffe *fe = live_fe(a, 1);

	cr_assert_eq(capacity(fe), 48 * MiB / SECT);
	vdev_get_params(fx.dev[a], &p);
	cr_assert_eq(p.size, 48 * MiB);
	fx_close_wait(a, fe, VDEV_LISTENING);
	fx_drop(a);

	/* a larger size grows the image */
	a = add_rbd("rbdB", img, 80 * MiB);
	cr_assert_eq(image_size(img), 80 * MiB);
	fx_drop(a);
	/* a smaller one is refused unless allow_shrink */
	rbd_params(&p, img);
	p.size = 16 * MiB;
	err[0] = '\0';
	cr_assert_eq(fx_try_add("rbdC", &p, err, sizeof(err), NULL), -EINVAL);
	cr_assert_not_null(strstr(err, "allow_shrink"), "%s", err);
	cr_assert_eq(image_size(img), 80 * MiB, "a refused shrink changed the image");
	p.allow_shrink = true;
	a = add_rbd("rbdD", img, 0);    /* (with no size: whatever it is) */
	fx_drop(a);
	cr_assert_eq(fx_try_add("rbdE", &p, err, sizeof(err), &a), 0, "%s", err);
	cr_assert_eq(image_size(img), 16 * MiB);
}

Test(rbd_size, live_grow_resizes_the_image)
{
	const char *img = new_image("t-grow", 32 * MiB);
	unsigned a = add_rbd("rbdA", img, 0);
	struct ffe *fe = live_fe(a, NQ);
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	int r;

	fx_write_pattern(&fe->vq[0], 100, 4096, 9, NULL);
	vdev_get_params(fx.dev[a], &p);
	p.size = 96 * MiB;
	r = vdev_set_params(fx.dev[a], &p, err, sizeof(err));
	cr_assert_eq(r, 0, "grow: %s (%s)", strerror(-r), err);
	expect_config_change(fe, 5000, "a grow");
	cr_assert_eq(capacity(fe), 96 * MiB / SECT);
	cr_assert_eq(image_size(img), 96 * MiB);
	fx_rw_verify(&fe->vq[1], 96 * MiB / SECT - 8, 4096, 10, NULL);
	fx_read_check(&fe->vq[2], 100, 4096, 9, NULL, "data before the grow");
	/* a shrink over data is refused without allow_shrink */
	fx_write_pattern(&fe->vq[0], 80 * MiB / SECT, 4096, 11, NULL);
	p.size = 64 * MiB;
	r = vdev_set_params(fx.dev[a], &p, err, sizeof(err));
	cr_assert_eq(r, -EBUSY, "shrink over data: %d (%s)", r, err);
	cr_assert_eq(image_size(img), 96 * MiB);
}

Test(rbd_size, outside_resize_is_announced)
{
	const char *img = new_image("t-outside", 32 * MiB);
	unsigned a = add_rbd("rbdA", img, 0);
	struct ffe *fe = live_fe(a, NQ);
	struct vdev_params p;
	int64_t t0;

	cr_assert_eq(capacity(fe), 32 * MiB / SECT);
	fx_write_pattern(&fe->vq[0], 64, 4096, 21, NULL);
	t0 = now_ms();
	rbd("resize --size 128M rbd/%s", img);
	expect_config_change(fe, 10000, "rbd resize --size 128M");
	cr_log_info("rbd resize announced %" PRId64 " ms after the command started",
		    now_ms() - t0);
	cr_assert_eq(capacity(fe), 128 * MiB / SECT);
	vdev_get_params(fx.dev[a], &p);
	cr_assert_eq(p.size, 128 * MiB);
	fx_rw_verify(&fe->vq[1], 128 * MiB / SECT - 16, 8192, 22, NULL);
	fx_read_check(&fe->vq[3], 64, 4096, 21, NULL, "data before the resize");
	/* a shrink from outside is followed too (the data past it is gone) */
	rbd("resize --size 64M --allow-shrink rbd/%s", img);
	expect_config_change(fe, 10000, "rbd resize --size 64M --allow-shrink");
	cr_assert_eq(capacity(fe), 64 * MiB / SECT);
	cr_assert_eq(ffe_blk_req(&fe->vq[0], FFE_BLK_T_IN, 64 * MiB / SECT, NULL, 0,
				 (uint8_t[4096]){ 0 }, 4096, NULL, NULL), FFE_BLK_S_IOERR,
		     "a read past the new end");
}

/* ---- snapshot -------------------------------------------------------------- */

Test(rbd_snap, snapshot_is_read_only)
{
	const char *img = new_image("t-snap", 16 * MiB);
	unsigned a = add_rbd("rbdA", img, 0), s;
	struct ffe *fe = live_fe(a, 1), *sfe;
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	struct vdev_stats st;

	fx_write_pattern(&fe->vq[0], 0, 64 * 1024, 31, NULL);
	rbd("snap create rbd/%s@s1", img);
	fx_write_pattern(&fe->vq[0], 0, 64 * 1024, 32, NULL);   /* the head moves on */

	rbd_params(&p, img);
	snprintf(p.rbd.snap, sizeof(p.rbd.snap), "s1");
	cr_assert_eq(fx_try_add("snap", &p, err, sizeof(err), &s), 0, "%s", err);
	sfe = live_fe(s, 1);
	cr_assert(sfe->dev_features & FFE_BIT(FFE_F_BLK_RO), "RO not offered for a snapshot");
	fx_read_check(&sfe->vq[0], 0, 64 * 1024, 31, NULL, "the snapshot");
	cr_assert_eq(ffe_blk_write(&sfe->vq[0], 0, (uint8_t[4096]){ 1 }, 4096, NULL),
		     FFE_BLK_S_IOERR, "a write to a snapshot");
	cr_assert_eq(ffe_blk_write_zeroes(&sfe->vq[0], 0, 8, false), FFE_BLK_S_IOERR);
	fx_read_check(&sfe->vq[0], 0, 64 * 1024, 31, NULL, "the snapshot after the refused write");
	fx_read_check(&fe->vq[0], 0, 64 * 1024, 32, NULL, "the head");
	stats(s, &st);
	cr_expect_not_null(strstr(st.detail, "rbd_image rbd/t-snap@s1\nrbd_lock none\n"), "%s",
			   st.detail);
	/* a size for a snapshot other than its own is refused */
	p.size = 32 * MiB;
	p.readonly = true;
	cr_assert_eq(fx_try_add("snap2", &p, err, sizeof(err), NULL), -EINVAL);
	cr_assert_not_null(strstr(err, "read-only"), "%s", err);
}

/* ---- exclusive lock ------------------------------------------------------------ */

Test(rbd_lock, second_writer_refused)
{
	const char *img = new_image("t-lock", 16 * MiB);
	unsigned a = add_rbd("rbdA", img, 0), b;
	struct ffe *fe = live_fe(a, 1);
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "", out[2048];
	int r;

	/* the lock is ours while we serve, nobody else's */
	cr_assert_eq(sh(out, sizeof(out), "timeout 60 rbd -c %s lock ls rbd/%s", conf, img), 0);
	cr_assert_not_null(strstr(out, "auto "), "rbd lock ls: %s", out);
	/* another client (here a second device, its own Ceph client) */
	rbd_params(&p, img);
	r = fx_try_add("rbdB", &p, err, sizeof(err), NULL);
	cr_assert_eq(r, -EBUSY, "second writer: %d (%s)", r, err);
	cr_assert_not_null(strstr(err, "exclusive lock"), "%s", err);
	cr_assert_not_null(strstr(err, "rbd_shared=1"), "%s", err);
	/* an external writer (rbd bench) cannot write while we hold it */
	r = sh(out, sizeof(out), "timeout 30 rbd -c %s bench --io-type write --io-size 4K "
	       "--io-total 4K rbd/%s", conf, img);
	cr_expect_neq(r, 0, "rbd bench wrote while the lock was held: %s", out);
	fx_rw_verify(&fe->vq[0], 0, 4096, 41, NULL);
	/* a reader is fine, and so is a writer that says it shares */
	p.readonly = true;
	cr_assert_eq(fx_try_add("rbdR", &p, err, sizeof(err), &b), 0, "reader: %s", err);
	fx_drop(b);
	/* once A is gone the image is free */
	fx_close_wait(a, fe, VDEV_LISTENING);
	fx_drop(a);
	p.readonly = false;
	cr_assert_eq(fx_try_add("rbdC", &p, err, sizeof(err), &b), 0, "after A: %s", err);
}

Test(rbd_lock, shared_writers)
{
	const char *img = new_image("t-shared", 16 * MiB);
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	unsigned a, b;
	struct ffe *fa, *fb;
	struct vdev_stats st;

	rbd_params(&p, img);
	p.rbd.shared = true;
	cr_assert_eq(fx_try_add("rbdA", &p, err, sizeof(err), &a), 0, "%s", err);
	cr_assert_eq(fx_try_add("rbdB", &p, err, sizeof(err), &b), 0, "%s", err);
	fa = live_fe(a, 1);
	fb = live_fe(b, 1);
	fx_write_pattern(&fa->vq[0], 0, 4096, 51, NULL);
	fx_read_check(&fb->vq[0], 0, 4096, 51, NULL, "B reads what A wrote");
	fx_write_pattern(&fb->vq[0], 8, 4096, 52, NULL);
	fx_read_check(&fa->vq[0], 8, 4096, 52, NULL, "A reads what B wrote");
	stats(a, &st);
	cr_expect_not_null(strstr(st.detail, "rbd_lock shared\n"), "%s", st.detail);
}

/* ---- refused configurations --------------------------------------------------- */

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Refused within max_ms with why in the reason; no socket, no device, and
 * (bounded wait) the fds and threads it took given back. */
static void refused(struct vdev_params *p, const char *why, int max_ms, int fds, int threads)
{
	char err[VDEV_ERR_MAX] = "", sock[256];
	unsigned before = fx.ndev;
	int64_t t0 = now_ms(), t;
	int r;

	r = fx_try_add("refused", p, err, sizeof(err), NULL);
	t = now_ms() - t0;
	cr_assert_lt(r, 0, "accepted (expected: %s)", why);
	cr_expect_not_null(strstr(err, why), "reason '%s' lacks '%s'", err, why);
	cr_expect_leq(t, max_ms, "refused after %" PRId64 " ms (%s)", t, err);
	cr_log_info("refused in %" PRId64 " ms: %s", t, err);
	cr_expect_eq(fx.ndev, before);
	snprintf(sock, sizeof(sock), "%s/refused.sock", fx.dir);
	cr_expect_neq(access(sock, F_OK), 0, "the socket of a refused device exists");
	for (int i = 0; i < 100; i++) {
		if (count_dir("/proc/self/fd") <= fds && count_dir("/proc/self/task") <= threads)
			break;
		usleep(50000);
	}
	cr_expect_leq(count_dir("/proc/self/fd"), fds, "fds left behind by a refused config");
	cr_expect_leq(count_dir("/proc/self/task"), threads,
		      "threads left behind by a refused config");
}

Test(rbd_refused, bad_configs_leave_nothing_behind)
{
	const char *img = new_image("t-refused", 16 * MiB);
	struct vdev_params p;
	char deadconf[256];
	FILE *f;
	int fds, threads;

	/* a first refusal warms up what libraries keep for the process */
	rbd_params(&p, "no-such-image");
	refused(&p, "no such image", 20000, 1000, 1000);
	fds = count_dir("/proc/self/fd");
	threads = count_dir("/proc/self/task");

	rbd_params(&p, "no-such-image");
	refused(&p, "cannot open rbd image rbd/no-such-image: no such image", 20000, fds, threads);
	rbd_params(&p, img);
	snprintf(p.rbd.pool, sizeof(p.rbd.pool), "nopool");
	refused(&p, "cannot use pool nopool: no such pool", 20000, fds, threads);
	rbd_params(&p, img);
	snprintf(p.rbd.snap, sizeof(p.rbd.snap), "nosnap");
	refused(&p, "no such image or snapshot", 20000, fds, threads);
	rbd_params(&p, img);
	snprintf(p.rbd.conf, sizeof(p.rbd.conf), "%s/none.conf", fx.dir);
	refused(&p, "cannot read ceph_conf", 5000, fds, threads);

	/* a monitor nobody answers at: refused in the bounded time */
	snprintf(deadconf, sizeof(deadconf), "%s/dead.conf", fx.dir);
	f = fopen(deadconf, "w");
	cr_assert_not_null(f);
	fprintf(f, "[global]\nmon host = v2:127.0.0.1:9\nauth client required = none\n"
		"auth cluster required = none\nauth service required = none\n");
	fclose(f);
	rbd_params(&p, img);
	snprintf(p.rbd.conf, sizeof(p.rbd.conf), "%s", deadconf);
	refused(&p, "no monitor answered within 15 s", 22000, fds, threads);
	unlink(deadconf);

	/* and the image is usable right after */
	rbd_params(&p, img);
	fx_add("ok", &p);
}

/* ---- cluster outage ------------------------------------------------------------ */

struct bystander {
	struct ffe_vq *vq;
	atomic_bool stop;
	unsigned done, failed;
	int64_t worst_ms;
};

static void *bystander_main(void *arg)
{
	struct bystander *b = arg;
	uint8_t buf[4096];

	while (!atomic_load(&b->stop)) {
		int64_t t0 = now_ms(), t;
		int s = ffe_blk_write(b->vq, b->done % 1024 * 8, buf, sizeof(buf), NULL);

		t = now_ms() - t0;
		if (t > b->worst_ms)
			b->worst_ms = t;
		if (s == FFE_BLK_S_OK)
			b->done++;
		else
			b->failed++;
		usleep(2000);
	}
	return NULL;
}

Test(rbd_outage, osd_down_times_out_then_recovers)
{
	const char *img = new_image("t-outage", 16 * MiB);
	struct vdev_params p, rp;
	char err[VDEV_ERR_MAX] = "", out[4096];
	unsigned a, ram;
	struct ffe *fe, *rfe;
	struct bystander by = { 0 };
	pthread_t th;
	struct vdev_stats st;
	int64_t t0, t;
	int s, r;

	rbd_params(&p, img);
	p.rbd.timeout = 5;
	cr_assert_eq(fx_try_add("rbdA", &p, err, sizeof(err), &a), 0, "%s", err);
	fx_params(&rp, 16 * MiB, 1, "ram");
	ram = fx_add("ram", &rp);
	fe = live_fe(a, 2);
	rfe = live_fe(ram, 1);
	fx_write_pattern(&fe->vq[0], 0, 4096, 61, NULL);
	by.vq = &rfe->vq[0];
	pthread_create(&th, NULL, bystander_main, &by);

	r = sh(out, sizeof(out), "%s stop-osd %s", script(), cdir);
	cr_assert_eq(r, 0, "stop-osd: %s", out);
	t0 = now_ms();
	s = ffe_blk_write(&fe->vq[0], 8, (uint8_t[4096]){ 7 }, 4096, NULL);
	t = now_ms() - t0;
	cr_expect_eq(s, FFE_BLK_S_IOERR, "a write with the OSD down: status %d", s);
	cr_expect(t >= 4000 && t <= 20000, "the write failed after %" PRId64 " ms (timeout 5 s)",
		  t);
	fprintf(stderr, "rbd-fakefe: OSD down: a write failed after %" PRId64 " ms (rbd_timeout=5)\n",
		t);
	stats(a, &st);
	cr_expect_geq(detail(&st, "rbd_timeouts"), 1, "%s", st.detail);
	cr_expect_geq(st.errors, 1);

	r = sh(out, sizeof(out), "%s start-osd %s", script(), cdir);
	cr_assert_eq(r, 0, "start-osd: %s", out);
	atomic_store(&by.stop, true);
	pthread_join(th, NULL);
	cr_expect_gt(by.done, 0, "the ram bystander served nothing");
	cr_expect_eq(by.failed, 0, "the ram bystander saw %u failures", by.failed);
	cr_expect_lt(by.worst_ms, 1000, "a bystander write took %" PRId64 " ms", by.worst_ms);

	/* the device serves again (the first requests may still meet a
	 * cluster settling: retry for a while) */
	t0 = now_ms();
	do {
		s = ffe_blk_write(&fe->vq[1], 16, (uint8_t[4096]){ 8 }, 4096, NULL);
		if (s != FFE_BLK_S_OK)
			usleep(500000);
	} while (s != FFE_BLK_S_OK && now_ms() - t0 < 60000);
	cr_assert_eq(s, FFE_BLK_S_OK, "no write succeeded within 60 s of the OSD's return");
	fprintf(stderr, "rbd-fakefe: served again %" PRId64 " ms after start-osd returned\n",
		now_ms() - t0);
	fx_rw_verify(&fe->vq[0], 32, 4096, 62, NULL);
	fx_read_check(&fe->vq[1], 0, 4096, 61, NULL, "data written before the outage");
	(void)ram;
}

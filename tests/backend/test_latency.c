/* The latency figures of vdev_get_stats (issue 15) against storage of a
 * known speed: percentiles per request kind from the core's fixed
 * histogram, checked against the delay the storage adds.
 *
 * The backing file lives on a FUSE filesystem served by this very process
 * (libfuse low-level API, one loop thread; the same arrangement as
 * test_hung.c): its read handler answers after exactly READ_DELAY_MS, its
 * fsync handler after FLUSH_DELAY_MS, its write handler at once.  The file
 * backend (io_uring) reads and writes it straight (direct_io: no page
 * cache, every request reaches the handlers), and a virtio-blk FLUSH is an
 * fsync of it.  Requests go one at a time (QD1: the loop thread sleeping
 * in a handler makes no other request wait), so every read takes the delay
 * plus the path's own microseconds, and its figures must say so:
 *   D*15/16 <= p50, p99 <= (D + 10 ms)*17/16
 * (the histogram's 1/16 either way, 10 ms of scheduling slack), max >= the
 * same lower bound, and writes and flushes counted in their own kinds with
 * their own figures.
 *
 * Needs io_uring, root and /dev/fuse (the test skips without them); exit 77
 * when it skipped.  ~3 s. */
#define FUSE_USE_VERSION 35

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <glob.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coretest.h"
#include "crmain.h"

#define KiB             1024ull
#define SECT            512ull
#define MS              1000000ull      /* ns */
#define DISK_SIZE       (1024 * KiB)
#define DISK_INO        2
#define DEV_NAME        "vblat"
#define READ_DELAY_MS   20
#define FLUSH_DELAY_MS  40
#define SLACK_MS        10
#define N_READS         100
#define N_WRITES        20
#define N_FLUSHES       10

/* ---- the FUSE filesystem: one file, "disk", with slow reads and fsyncs ---------- */

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
	uint8_t disk[DISK_SIZE];        /* the file's content (under fs_lock) */
	struct fuse_session *se;
	pthread_t loop;
	bool looping;
	bool mounted;
	unsigned reads, writes, fsyncs; /* handled (under fs_lock) */
} fs;

static void delay_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void disk_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		st->st_size = DISK_SIZE;
		st->st_blocks = DISK_SIZE / SECT;
	}
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { .ino = DISK_INO, .attr_timeout = 3600,
				      .entry_timeout = 3600 };

	if (parent != FUSE_ROOT_ID || strcmp(name, "disk") != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	disk_attr(DISK_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	disk_attr(ino, &st);
	fuse_reply_attr(req, &st, 3600);
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	/* no page cache: every read and write reaches the handlers */
	fi->direct_io = 1;
	/* no FLUSH on close (see test_hung.c: a killed process would wait
	 * for its own answer) */
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

/* Reads: the storage's latency, then the data. */
static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	static uint8_t buf[DISK_SIZE];
	size_t n = 0;

	(void)ino;
	(void)fi;
	delay_ms(READ_DELAY_MS);
	pthread_mutex_lock(&fs_lock);
	if (off >= 0 && (uint64_t)off < DISK_SIZE) {
		n = size < DISK_SIZE - off ? size : DISK_SIZE - off;
		memcpy(buf, fs.disk + off, n);
	}
	fs.reads++;
	pthread_mutex_unlock(&fs_lock);
	fuse_reply_buf(req, (const char *)buf, n);
}

/* Writes: at once. */
static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if (off < 0 || (uint64_t)off > DISK_SIZE || size > DISK_SIZE - (uint64_t)off) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	pthread_mutex_lock(&fs_lock);
	memcpy(fs.disk + off, data, size);
	fs.writes++;
	pthread_mutex_unlock(&fs_lock);
	fuse_reply_write(req, size);
}

/* fsync (a virtio-blk FLUSH): the storage's latency. */
static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	(void)fi;
	delay_ms(FLUSH_DELAY_MS);
	pthread_mutex_lock(&fs_lock);
	fs.fsyncs++;
	pthread_mutex_unlock(&fs_lock);
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.lookup = fs_lookup,
	.getattr = fs_getattr,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.fsync = fs_fsync,
};

static void *fs_loop(void *arg)
{
	(void)arg;
	fuse_session_loop(fs.se);
	return NULL;
}

static void fs_mount(const char *mnt)
{
	char prog[] = "test_latency";
	char *argv[] = { prog, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, argv);

	ffe_pattern(fs.disk, DISK_SIZE, 0x1a7);
	fs.se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), NULL);
	fuse_opt_free_args(&args);
	cr_assert_not_null(fs.se, "fuse_session_new failed (libfuse said why on stderr)");
	if (fuse_session_mount(fs.se, mnt) != 0)
		cr_skip_test("cannot mount a FUSE filesystem on %s here", mnt);
	fs.mounted = true;
	cr_assert_eq(pthread_create(&fs.loop, NULL, fs_loop, NULL), 0);
	fs.looping = true;
}

/* As test_hung.c: umount(2) ends the connection and so the loop. */
static void fs_unmount(const char *mnt)
{
	if (fs.mounted && umount2(mnt, 0) != 0) {
		fprintf(stderr, "test_latency: umount %s: %s; aborting the FUSE connection\n", mnt,
			strerror(errno));
		umount2(mnt, MNT_FORCE);
		umount2(mnt, MNT_DETACH);
	}
	if (fs.looping)
		pthread_join(fs.loop, NULL);
	if (fs.se) {
		fuse_session_unmount(fs.se);
		fuse_session_destroy(fs.se);
	}
	fs.se = NULL;
	fs.looping = fs.mounted = false;
}

static unsigned handled(const unsigned *counter)
{
	unsigned n;

	pthread_mutex_lock(&fs_lock);
	n = *counter;
	pthread_mutex_unlock(&fs_lock);
	return n;
}

/* ---- fixture ----------------------------------------------------------------- */

static char mnt[160], disk[180];

static void setup(void)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "/tmp/vhostd-lat-%s", crmain_run_id());
	fx_begin(prefix);
	snprintf(mnt, sizeof(mnt), "%s/mnt", fx.dir);
	snprintf(disk, sizeof(disk), "%s/disk", mnt);
	cr_assert_eq(mkdir(mnt, 0700), 0, "mkdir %s: %s", mnt, strerror(errno));
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void teardown(void)
{
	fx_stop();
	fs_unmount(mnt);
	rmdir(mnt);
	fx_rm_dir(fx.dir);
	fx_leak_check();
}

TestSuite(latency, .init = setup, .fini = teardown, .timeout = 60);

/* ---- the test ------------------------------------------------------------- */

static void log_lat(const struct vdev_stats *st, enum vdev_op op, const char *kind)
{
	const struct vdev_latency *l = &st->lat[op];

	cr_log_info("%-6s count %" PRIu64 "  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms",
		    kind, l->count, l->p50_ns / 1e6, l->p99_ns / 1e6, l->p999_ns / 1e6,
		    l->max_ns / 1e6);
}

/* A percentile of requests that took delay_ms plus the path's own time:
 * within the histogram's 1/16 of [delay, delay + SLACK_MS]. */
static void expect_delay(uint64_t ns, unsigned delay_ms, const char *what)
{
	uint64_t lo = (uint64_t)delay_ms * MS * 15 / 16;
	uint64_t hi = (uint64_t)(delay_ms + SLACK_MS) * MS * 17 / 16;

	cr_expect(ns >= lo && ns <= hi, "%s is %.3f ms; the storage answers after %u ms, so "
		  "expected %.3f..%.3f ms", what, ns / 1e6, delay_ms, lo / 1e6, hi / 1e6);
}

/* The ordering every histogram's figures keep. */
static void expect_ordered(const struct vdev_latency *l, const char *kind)
{
	cr_expect(l->p50_ns <= l->p99_ns && l->p99_ns <= l->p999_ns,
		  "%s: percentiles out of order: p50 %" PRIu64 " p99 %" PRIu64 " p99.9 %" PRIu64,
		  kind, l->p50_ns, l->p99_ns, l->p999_ns);
	cr_expect(l->p999_ns <= l->max_ns + l->max_ns / 16, "%s: p99.9 %" PRIu64 " ns above the "
		  "max %" PRIu64 " ns (beyond the histogram's 1/16)", kind, l->p999_ns, l->max_ns);
}

Test(latency, percentiles_match_a_storage_of_known_delay)
{
	struct core_opts o = { .nthreads = 1, .poll_mode = CORE_POLL_ADAPTIVE };
	struct vdev_params p;
	struct vdev_stats st0, st;
	struct ffe *fe;
	uint8_t buf[4096];
	char id[FFE_BLK_ID_BYTES];
	uint64_t rng = 0x1a7e4c7;
	int64_t seen[N_READS];          /* each read as the front-end saw it */
	int s;

	if (geteuid() != 0)
		cr_skip_test("not root: mounting a FUSE filesystem needs root");
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		cr_skip_test("no usable /dev/fuse: %s", strerror(errno));
	need_uring();
	fs_mount(mnt);

	fx_core_up(&o);
	vdev_params_init(&p);
	p.backing = BE_FILE;
	snprintf(p.path, sizeof(p.path), "%s", disk);
	p.size = 0;
	p.queues = 1;
	fx_add(DEV_NAME, &p);
	fe = fx_keep(fx_ready(0, NULL, 0, 1, 128));
	cr_assert_eq(fe->cfg.capacity, DISK_SIZE / SECT, "capacity %" PRIu64, fe->cfg.capacity);

	/* nothing counted before the first request */
	vdev_get_stats(fx.dev[0], &st0);
	for (unsigned k = 0; k < VDEV_NOPS; k++)
		cr_expect_eq(st0.lat[k].count, 0, "%s: %" PRIu64 " requests counted before any",
			     vdev_op_name((enum vdev_op)k), st0.lat[k].count);

	for (unsigned i = 0; i < N_READS; i++) {
		uint64_t off;

		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		off = (rng >> 33) % (DISK_SIZE / sizeof(buf)) * sizeof(buf);
		seen[i] = mono_ns();
		s = ffe_blk_read(&fe->vq[0], off / SECT, buf, sizeof(buf), NULL);
		seen[i] = mono_ns() - seen[i];
		cr_assert_eq(s, FFE_BLK_S_OK, "read %u: status %d %s", i, s, s < 0 ? fe->err : "");
	}
	qsort(seen, N_READS, sizeof(seen[0]), cmp_i64);
	for (unsigned i = 0; i < N_WRITES; i++) {
		ffe_pattern(buf, sizeof(buf), 77 + i);
		s = ffe_blk_write(&fe->vq[0], (uint64_t)i * 8, buf, sizeof(buf), NULL);
		cr_assert_eq(s, FFE_BLK_S_OK, "write %u: status %d %s", i, s, s < 0 ? fe->err : "");
	}
	for (unsigned i = 0; i < N_FLUSHES; i++) {
		s = ffe_blk_flush(&fe->vq[0]);
		cr_assert_eq(s, FFE_BLK_S_OK, "flush %u: status %d %s", i, s, s < 0 ? fe->err : "");
	}
	s = ffe_blk_get_id(&fe->vq[0], id);
	cr_assert_eq(s, FFE_BLK_S_OK, "GET_ID: status %d", s);

	cr_log_info("the storage handled %u reads, %u writes, %u fsyncs", handled(&fs.reads),
		    handled(&fs.writes), handled(&fs.fsyncs));
	cr_assert_geq(handled(&fs.reads), N_READS, "reads did not all reach the storage: the "
		      "delay was not applied to every one");
	cr_assert_geq(handled(&fs.fsyncs), N_FLUSHES, "flushes did not all reach the storage");

	vdev_get_stats(fx.dev[0], &st);
	log_lat(&st, VDEV_OP_READ, vdev_op_name(VDEV_OP_READ));
	log_lat(&st, VDEV_OP_WRITE, vdev_op_name(VDEV_OP_WRITE));
	log_lat(&st, VDEV_OP_FLUSH, vdev_op_name(VDEV_OP_FLUSH));
	log_lat(&st, VDEV_OP_OTHER, vdev_op_name(VDEV_OP_OTHER));

	/* reads: every one took READ_DELAY_MS; the core times a part of what
	 * the front-end saw (ring to used ring), so its figures are not above
	 * the front-end's (beyond the histogram's 1/16) */
	cr_log_info("reads as the front-end saw them: p50 %.3f ms  p99 %.3f ms  max %.3f ms",
		    seen[N_READS / 2] / 1e6, seen[N_READS * 99 / 100] / 1e6,
		    seen[N_READS - 1] / 1e6);
	cr_expect_leq(st.lat[VDEV_OP_READ].p50_ns, (uint64_t)seen[N_READS / 2] * 17 / 16,
		      "read p50 %.3f ms above the front-end's own %.3f ms",
		      st.lat[VDEV_OP_READ].p50_ns / 1e6, seen[N_READS / 2] / 1e6);
	cr_expect_leq(st.lat[VDEV_OP_READ].max_ns, (uint64_t)seen[N_READS - 1] * 17 / 16,
		      "read max %.3f ms above the front-end's own %.3f ms",
		      st.lat[VDEV_OP_READ].max_ns / 1e6, seen[N_READS - 1] / 1e6);
	cr_expect_eq(st.lat[VDEV_OP_READ].count, N_READS, "reads counted: %" PRIu64,
		     st.lat[VDEV_OP_READ].count);
	expect_delay(st.lat[VDEV_OP_READ].p50_ns, READ_DELAY_MS, "read p50");
	expect_delay(st.lat[VDEV_OP_READ].p99_ns, READ_DELAY_MS, "read p99");
	cr_expect_geq(st.lat[VDEV_OP_READ].max_ns, (uint64_t)READ_DELAY_MS * MS * 15 / 16,
		      "read max %.3f ms, below the storage's %u ms",
		      st.lat[VDEV_OP_READ].max_ns / 1e6, READ_DELAY_MS);
	expect_ordered(&st.lat[VDEV_OP_READ], "read");

	/* writes: their own kind, fast (counted with reads, their p50 would be
	 * the reads' delay) */
	cr_expect_eq(st.lat[VDEV_OP_WRITE].count, N_WRITES, "writes counted: %" PRIu64,
		     st.lat[VDEV_OP_WRITE].count);
	cr_expect_lt(st.lat[VDEV_OP_WRITE].p50_ns, (uint64_t)READ_DELAY_MS * MS * 15 / 16,
		     "write p50 %.3f ms: the storage answers writes at once",
		     st.lat[VDEV_OP_WRITE].p50_ns / 1e6);
	cr_expect_gt(st.lat[VDEV_OP_WRITE].max_ns, 0);
	expect_ordered(&st.lat[VDEV_OP_WRITE], "write");

	/* flushes: their own kind, FLUSH_DELAY_MS each */
	cr_expect_eq(st.lat[VDEV_OP_FLUSH].count, N_FLUSHES, "flushes counted: %" PRIu64,
		     st.lat[VDEV_OP_FLUSH].count);
	expect_delay(st.lat[VDEV_OP_FLUSH].p50_ns, FLUSH_DELAY_MS, "flush p50");
	expect_delay(st.lat[VDEV_OP_FLUSH].p99_ns, FLUSH_DELAY_MS, "flush p99");
	cr_expect_geq(st.lat[VDEV_OP_FLUSH].max_ns, (uint64_t)FLUSH_DELAY_MS * MS * 15 / 16,
		      "flush max %.3f ms, below the storage's %u ms",
		      st.lat[VDEV_OP_FLUSH].max_ns / 1e6, FLUSH_DELAY_MS);
	expect_ordered(&st.lat[VDEV_OP_FLUSH], "flush");

	/* GET_ID: other */
	cr_expect_eq(st.lat[VDEV_OP_OTHER].count, 1, "other requests counted: %" PRIu64
		     " (one GET_ID)", st.lat[VDEV_OP_OTHER].count);

	/* the counters agree; nothing was throttled */
	cr_expect_eq(st.reads, N_READS);
	cr_expect_eq(st.writes, N_WRITES);
	cr_expect_eq(st.flushes, N_FLUSHES);
	cr_expect_eq(st.throttled_ns, 0, "no limit set, yet throttled_ns is %" PRIu64,
		     st.throttled_ns);
}

/* ---- runner: safety net ------------------------------------------------------- */

/* A test killed by its timeout leaves its mount (served by nobody now) and
 * its directory behind. */
void crmain_cleanup(void)
{
	char pat[128], path[200];
	glob_t g;

	snprintf(pat, sizeof(pat), "/tmp/vhostd-lat-%s-*", crmain_run_id());
	if (glob(pat, GLOB_ONLYDIR, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		snprintf(path, sizeof(path), "%s/mnt", g.gl_pathv[i]);
		umount2(path, MNT_DETACH);
		rmdir(path);
		snprintf(path, sizeof(path), "%s/%s.sock", g.gl_pathv[i], DEV_NAME);
		unlink(path);
		rmdir(g.gl_pathv[i]);
	}
	globfree(&g);
}

/* Backend tests: real storage behind the devices — regular files (on ext4
 * under /var/tmp, and on tmpfs) and block devices (loop devices) through the
 * io_uring file backend, driven over vhost-user by the fake front-end
 * (tests/lib/fakefe.c) with the core started in-process (vdev.h).
 *
 * Every test gets its own core and a temporary directory; loop devices,
 * tmpfs mounts and files are released in the fixture teardown, and once more
 * after the last test (crmain_cleanup) for tests that crashed or timed out.
 * Data is always verified: through the front-end and on the host
 * (pread/pwrite on the file or device), in both directions.
 *
 * Needs io_uring (all tests skip without it) and root for loop devices and
 * tmpfs mounts (those tests skip).  When every test skipped, exit 77.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <liburing.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "coretest.h"
#include "crmain.h"

#define MiB             (1024ull * 1024)
#define KiB             1024ull
#define SECT            512ull
#define MAXLOOP         4
#define TMPFS_MAGIC_    0x01021994

/* The core, devices, front-ends and directory: fx (coretest.h); here what
 * this program adds to them. */
static struct {
	char shm[128];                  /* /dev/shm/vhostd-be-RUN-XXXXXX ("" if unused) */
	char loop[MAXLOOP][32];         /* /dev/loopN ("" once released) */
	char loopfile[MAXLOOP][200];
	unsigned nloop;
	char mnt[200];                  /* tmpfs mount point */
	bool mounted;
} bx;

/* ---- small host helpers ---------------------------------------------------- */

/* Run a shell command; its stdout (first line, newline stripped) in out.
 * Returns the exit status, or -1. */
__attribute__((format(printf, 3, 4)))
static int sh(char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[1024], line[512] = "";
	va_list ap;
	FILE *f;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (fgets(line, sizeof(line), f))
		line[strcspn(line, "\n")] = '\0';
	while (fgetc(f) != EOF)
		;
	st = pclose(f);
	if (out)
		snprintf(out, outlen, "%s", line);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void need_root(const char *what)
{
	if (geteuid() != 0)
		cr_skip_test("not root: %s: needs root", what);
}

static void need_loop(void)
{
	need_root("loop devices (losetup)");
	if (access("/dev/loop-control", F_OK) != 0)
		cr_skip_test("no /dev/loop-control: the kernel has no loop driver");
	if (sh(NULL, 0, "losetup --version >/dev/null 2>&1") != 0)
		cr_skip_test("losetup (util-linux) is not installed");
}

static void mkfile(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)size), 0, "truncate %s: %s", path, strerror(errno));
	close(fd);
}

static struct stat stat_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return st;
}

static void host_write(const char *path, uint64_t off, size_t len, uint64_t seed, bool sync)
{
	uint8_t *b = malloc(len);
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	ffe_pattern(b, len, seed);
	cr_assert_eq(pwrite(fd, b, len, (off_t)off), (ssize_t)len, "pwrite %s: %s", path,
		     strerror(errno));
	if (sync)
		fsync(fd);
	close(fd);
	free(b);
}

/* pread on the host and compare with the pattern (seed) or zeros (seed 0) */
static void host_check(const char *path, uint64_t off, size_t len, uint64_t seed,
		       const char *what)
{
	uint8_t *b = malloc(len);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char w[300];

	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, b, len, (off_t)off), (ssize_t)len, "pread %s at %" PRIu64 ": %s",
		     path, off, strerror(errno));
	close(fd);
	snprintf(w, sizeof(w), "%s (host pread of %s at %" PRIu64 ")", what, path, off);
	if (seed)
		fx_check_pattern(b, len, seed, w);
	else
		fx_check_zero(b, len, w);
	free(b);
}

/* Pages of [off, off+len) of path that are in the host page cache. */
static unsigned cached_pages(const char *path, uint64_t off, size_t len)
{
	long pg = sysconf(_SC_PAGESIZE);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *vec;
	unsigned n = 0, np = (unsigned)((len + pg - 1) / pg);
	void *m;

	cr_assert_geq(fd, 0);
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
	cr_assert_neq(m, MAP_FAILED, "mmap %s: %s", path, strerror(errno));
	vec = calloc(np, 1);
	cr_assert_eq(mincore(m, len, vec), 0, "mincore: %s", strerror(errno));
	for (unsigned i = 0; i < np; i++)
		n += vec[i] & 1;
	free(vec);
	munmap(m, len);
	close(fd);
	return n;
}

static off_t seek_of(const char *path, uint64_t off, int whence)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t r;

	cr_assert_geq(fd, 0);
	r = lseek(fd, (off_t)off, whence);
	close(fd);
	return r;
}

/* ---- fixture ------------------------------------------------------------- */

static void setup(void)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "/var/tmp/vhostd-be-%s", crmain_run_id());
	fx_begin(prefix);
	memset(&bx, 0, sizeof(bx));
}

static bool loop_is_ours(unsigned i)
{
	char p[128], bf[256] = "";
	FILE *f;

	if (!bx.loop[i][0])
		return false;
	snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file", bx.loop[i] + 5);
	f = fopen(p, "r");
	if (!f)
		return false;
	if (!fgets(bf, sizeof(bf), f))
		bf[0] = '\0';
	fclose(f);
	return strncmp(bf, bx.loopfile[i], strlen(bx.loopfile[i])) == 0;
}

static void teardown(void)
{
	fx_stop();
	for (unsigned i = 0; i < bx.nloop; i++)
		if (loop_is_ours(i))
			sh(NULL, 0, "losetup -d %s 2>/dev/null", bx.loop[i]);
	if (bx.mounted && sh(NULL, 0, "umount %s 2>/dev/null", bx.mnt) != 0)
		sh(NULL, 0, "umount -l %s 2>/dev/null", bx.mnt);
	if (fx.dir[0])
		sh(NULL, 0, "rm -rf '%s'", fx.dir);
	if (bx.shm[0])
		sh(NULL, 0, "rm -rf '%s'", bx.shm);
	fx_leak_check();
}

static void core_up(unsigned nthreads, unsigned uring_entries)
{
	struct core_opts o = { .nthreads = nthreads, .poll_mode = CORE_POLL_ADAPTIVE,
			       .uring_entries = uring_entries };

	need_uring();
	fx_core_up(&o);
}

static void file_params(struct vdev_params *p, const char *path, uint64_t size,
			unsigned block_size, unsigned queues)
{
	vdev_params_init(p);
	p->backing = BE_FILE;
	snprintf(p->path, sizeof(p->path), "%s", path);
	p->size = size;
	p->block_size = block_size;
	p->queues = (uint16_t)queues;
}

/* A set-up front-end on dev, closed by the teardown unless fx_close'd. */
static struct ffe *fe_ready(unsigned dev, unsigned nq, unsigned qsize, const struct ffe_opts *o)
{
	return fx_keep(fx_ready(dev, o, 0, nq, qsize));
}

static void flush_ok(struct ffe_vq *vq)
{
	int s = ffe_blk_flush(vq);

	cr_assert_eq(s, FFE_BLK_S_OK, "FLUSH: status %d %s", s, s < 0 ? vq->fe->err : "");
}

static int dwz(struct ffe_vq *vq, uint32_t type, const struct ffe_blk_dwz_seg *segs, unsigned n)
{
	return ffe_blk_req(vq, type, 0, segs, n * sizeof(*segs), NULL, 0, NULL, NULL);
}

static struct vdev_stats stats_of(unsigned dev)
{
	struct vdev_stats st;

	vdev_get_stats(fx.dev[dev], &st);
	return st;
}

/* A request built by hand with a 4 KiB aligned data buffer, so that the
 * backend may take it with O_DIRECT (fakefe's own buffers are 64-byte
 * aligned).  Uses descriptors 0..2 of an idle queue. */
struct raw {
	struct ffe_buf hdr, data, st;
};

static void raw_init(struct ffe *fe, struct raw *rw, size_t maxlen)
{
	cr_assert_eq(ffe_alloc(fe, 16, 16, 0, &rw->hdr), 0);
	cr_assert_eq(ffe_alloc(fe, maxlen, 4096, 0, &rw->data), 0, "no %zu bytes of guest memory",
		     maxlen);
	cr_assert_eq(ffe_alloc(fe, 1, 1, 0, &rw->st), 0);
}

static int raw_req(struct ffe_vq *vq, struct raw *rw, uint32_t type, uint64_t sector,
		   size_t len, uint32_t *used_len)
{
	struct ffe_blk_hdr h = { .type = type, .sector = sector };
	uint16_t before = ffe_vq_used_idx(vq);
	struct ffe_used_elem e;
	int r;

	cr_assert_eq(vq->ninflight, 0, "raw request on a busy queue");
	cr_assert_leq(len, rw->data.len);
	memcpy(rw->hdr.hva, &h, sizeof(h));
	*(volatile uint8_t *)rw->st.hva = 0xee;
	vq->desc[0] = (struct ffe_desc){ rw->hdr.gpa, 16, FFE_DESC_F_NEXT, 1 };
	vq->desc[1] = (struct ffe_desc){ rw->data.gpa, (uint32_t)len,
		(uint16_t)(FFE_DESC_F_NEXT | (type == FFE_BLK_T_IN ? FFE_DESC_F_WRITE : 0)), 2 };
	vq->desc[2] = (struct ffe_desc){ rw->st.gpa, 1, FFE_DESC_F_WRITE, 0 };
	ffe_vq_publish(vq, 0);
	ffe_vq_kick_raw(vq);
	vq->kicked_idx = vq->avail_idx;
	r = ffe_vq_wait_used_change(vq, before, FFE_TIMEOUT_MS);
	if (r < 0)
		return r;
	e = ffe_vq_used_elem(vq, before);
	vq->last_used = (uint16_t)(before + 1);
	cr_assert_eq(e.id, 0, "raw request: used id %u, posted head 0", e.id);
	if (used_len)
		*used_len = e.len;
	return *(volatile uint8_t *)rw->st.hva;
}

static void raw_write_pat(struct ffe_vq *vq, struct raw *rw, uint64_t sector, size_t len,
			  uint64_t seed)
{
	int s;

	ffe_pattern(rw->data.hva, len, seed);
	s = raw_req(vq, rw, FFE_BLK_T_OUT, sector, len, NULL);
	cr_assert_eq(s, FFE_BLK_S_OK, "aligned OUT sector %" PRIu64 " len %zu: status %d",
		     sector, len, s);
}

static void raw_read_check(struct ffe_vq *vq, struct raw *rw, uint64_t sector, size_t len,
			   uint64_t seed, const char *what)
{
	uint32_t ul = 0;
	int s;

	memset(rw->data.hva, 0x5c, len);
	s = raw_req(vq, rw, FFE_BLK_T_IN, sector, len, &ul);
	cr_assert_eq(s, FFE_BLK_S_OK, "%s: aligned IN sector %" PRIu64 " len %zu: status %d",
		     what, sector, len, s);
	cr_expect_eq(ul, len + 1, "%s: used len %u for an IN of %zu bytes", what, ul, len);
	fx_check_pattern(rw->data.hva, len, seed, what);
}

/* ---- loop devices and tmpfs -------------------------------------------------- */

static unsigned loop_attach(const char *file, unsigned sector_size)
{
	char out[64] = "", ss[32] = "";
	unsigned i = bx.nloop;
	int r;

	cr_assert_lt(i, MAXLOOP);
	if (sector_size)
		snprintf(ss, sizeof(ss), "--sector-size %u", sector_size);
	r = sh(out, sizeof(out), "losetup -f --show %s '%s' 2>&1", ss, file);
	if (r != 0 || strncmp(out, "/dev/loop", 9) != 0)
		cr_skip_test("cannot attach a loop device (losetup -f --show %s %s: %s)", ss, file,
			     out);
	snprintf(bx.loop[i], sizeof(bx.loop[i]), "%s", out);
	snprintf(bx.loopfile[i], sizeof(bx.loopfile[i]), "%s", file);
	bx.nloop++;
	cr_log_info("attached %s to %s%s%s", bx.loop[i], file, ss[0] ? " " : "", ss);
	return i;
}

static unsigned loop_new(const char *name, uint64_t size, unsigned sector_size)
{
	char file[200];

	need_loop();
	snprintf(file, sizeof(file), "%s/%s", fx.dir, name);
	mkfile(file, size);
	return loop_attach(file, sector_size);
}

static void mount_tmpfs(const char *opts)
{
	char out[256] = "";
	int r;

	need_root("mounting a tmpfs");
	snprintf(bx.mnt, sizeof(bx.mnt), "%s/mnt", fx.dir);
	cr_assert_eq(mkdir(bx.mnt, 0700), 0);
	r = sh(out, sizeof(out), "mount -t tmpfs -o %s vhostd-be-test '%s' 2>&1", opts, bx.mnt);
	if (r != 0)
		cr_skip_test("cannot mount a tmpfs (%s): %s", opts, out);
	bx.mounted = true;
}

/* Compare buf with bytes [off, off+len) of the pattern of seed. */
static void check_slice(const uint8_t *buf, size_t len, uint64_t seed, uint64_t off,
			const char *what)
{
	uint8_t *ref = malloc(off + len);

	ffe_pattern(ref, off + len, seed);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != ref[off + i]) {
			unsigned want = ref[off + i];

			free(ref);
			cr_assert_fail("%s: byte %zu differs (got %#x, expected %#x)", what, i,
				       buf[i], want);
		}
	free(ref);
}

/* ---- batches: many requests in flight at once ------------------------------- */

#define BATCH_MAX 256

struct batch {
	struct ffe_vq *vq;
	unsigned n;
	uint16_t start;                 /* used idx before the batch */
	struct ffe_blk_io io[BATCH_MAX];
	uint32_t type[BATCH_MAX];
	uint64_t sector[BATCH_MAX];
	size_t len[BATCH_MAX];
	uint64_t seed[BATCH_MAX];       /* IN: expected pattern (0: zeros, 1: don't check) */
	uint64_t seed_off[BATCH_MAX];   /* IN: offset of the data in its pattern */
};

static const struct ffe_layout lay_indirect = { FFE_L_NATURAL, 4096, true };

static struct batch *batch_new(struct ffe_vq *vq)
{
	struct batch *b = calloc(1, sizeof(*b));

	cr_assert_not_null(b);
	b->vq = vq;
	return b;
}

static void batch_add(struct batch *b, uint32_t type, uint64_t sector, const void *out,
		      size_t out_len, size_t in_len, uint64_t seed, uint64_t seed_off)
{
	unsigned i = b->n;
	int r;

	cr_assert_lt(i, BATCH_MAX);
	r = ffe_blk_prep(&b->io[i], type, sector, out, out_len, in_len, &lay_indirect);
	cr_assert_eq(r, 0, "prep: %s", strerror(-r));
	b->type[i] = type;
	b->sector[i] = sector;
	b->len[i] = type == FFE_BLK_T_OUT ? out_len : in_len;
	b->seed[i] = seed;
	b->seed_off[i] = seed_off;
	b->n++;
}

static void batch_add_write(struct batch *b, uint64_t sector, size_t len, uint64_t seed)
{
	uint8_t *w = malloc(len);

	ffe_pattern(w, len, seed);
	batch_add(b, FFE_BLK_T_OUT, sector, w, len, 0, 0, 0);
	free(w);
}

/* Publish every request of the batch (no kick yet). */
static void batch_post(struct batch *b)
{
	ffe_poll_used(b->vq);
	cr_assert_eq(b->vq->ninflight, 0, "q%u not idle before a batch", b->vq->index);
	b->start = ffe_vq_used_idx(b->vq);
	cr_assert_eq(b->start, b->vq->last_used);
	for (unsigned i = 0; i < b->n; i++) {
		int r = ffe_submit(b->vq, &b->io[i].req);

		cr_assert_eq(r, 0, "q%u: posting request %u of %u: %s", b->vq->index, i, b->n,
			     strerror(-r));
	}
}

/* Kick every batch's queue, then wait for all their requests. */
static void batches_run(struct batch **bs, unsigned nb, int timeout_ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, timeout_ms);
	for (unsigned k = 0; k < nb; k++)
		ffe_kick(bs[k]->vq);
	for (;;) {
		unsigned missing = 0;

		for (unsigned k = 0; k < nb; k++) {
			ffe_poll_used(bs[k]->vq);
			for (unsigned i = 0; i < bs[k]->n; i++)
				missing += !__atomic_load_n(&bs[k]->io[i].req.done, __ATOMIC_ACQUIRE);
		}
		if (!missing)
			return;
		if (!ffe_deadline_left(&dl)) {
			for (unsigned k = 0; k < nb; k++)
				cr_log_error("q%u: avail %u used %u (batch from %u, %u requests)",
					     bs[k]->vq->index, bs[k]->vq->avail_idx,
					     ffe_vq_used_idx(bs[k]->vq), bs[k]->start, bs[k]->n);
			cr_assert_fail("%u requests of the batches never completed within %d ms",
				       missing, timeout_ms);
		}
		usleep(200);
	}
}

/* Every posted head is in the used ring exactly once, no other id is, the
 * used index moved by exactly n, and each request's status and data are
 * right.  Returns the number of inversions (completion order vs post order). */
static unsigned batch_check(struct batch *b, const char *what)
{
	struct ffe_vq *vq = b->vq;
	uint16_t used = ffe_vq_used_idx(vq);
	int pos_of[FFE_MAX_QSIZE];
	unsigned seen[FFE_MAX_QSIZE] = { 0 };
	unsigned inv = 0, last_pos = 0;

	cr_assert_eq((uint16_t)(used - b->start), b->n, "%s: q%u used idx moved by %u for %u "
		     "requests", what, vq->index, (uint16_t)(used - b->start), b->n);
	cr_assert_eq(vq->bogus_used, 0, "%s: q%u: %u used entries matched no request in "
		     "flight (duplicate or invented ids)", what, vq->index, vq->bogus_used);
	for (unsigned i = 0; i < FFE_MAX_QSIZE; i++)
		pos_of[i] = -1;
	for (unsigned i = 0; i < b->n; i++)
		pos_of[b->io[i].req.head] = (int)i;
	for (unsigned k = 0; k < b->n; k++) {
		struct ffe_used_elem e = ffe_vq_used_elem(vq, (uint16_t)(b->start + k));

		cr_assert(e.id < vq->num && pos_of[e.id] >= 0, "%s: q%u used entry %u has id %u, "
			  "which is no posted head", what, vq->index, k, e.id);
		cr_assert_eq(seen[e.id], 0, "%s: q%u head %u completed twice", what, vq->index, e.id);
		seen[e.id]++;
		if (k && (unsigned)pos_of[e.id] < last_pos)
			inv++;
		last_pos = (unsigned)pos_of[e.id];
	}
	for (unsigned i = 0; i < b->n; i++) {
		struct ffe_blk_io *io = &b->io[i];
		int s = ffe_blk_status(io);
		char w[200];

		cr_assert(io->req.done, "%s: request %u not done", what, i);
		cr_assert_eq(s, FFE_BLK_S_OK, "%s: q%u request %u (type %u sector %" PRIu64
			     " len %zu): status %d", what, vq->index, i, b->type[i], b->sector[i],
			     b->len[i], s);
		if (b->type[i] == FFE_BLK_T_IN) {
			cr_assert_eq(io->req.used_len, b->len[i] + 1, "%s: IN of %zu bytes has used "
				     "len %u", what, b->len[i], io->req.used_len);
			snprintf(w, sizeof(w), "%s: q%u IN sector %" PRIu64 " len %zu", what,
				 vq->index, b->sector[i], b->len[i]);
			if (b->seed[i] == 0)
				fx_check_zero(ffe_blk_in(io), b->len[i], w);
			else if (b->seed[i] != 1)
				check_slice(ffe_blk_in(io), b->len[i], b->seed[i], b->seed_off[i], w);
		} else if (b->type[i] != FFE_BLK_T_GET_ID) {
			cr_expect_eq(io->req.used_len, 1, "%s: type %u request has used len %u",
				     what, b->type[i], io->req.used_len);
		}
	}
	return inv;
}

static void batch_free(struct batch *b)
{
	for (unsigned i = 0; i < b->n; i++)
		ffe_blk_io_release(b->vq, &b->io[i]);
	free(b);
}

/* A directory on a tmpfs that needs no root: /dev/shm. */
static void shm_dir(void)
{
	struct statfs sfs;

	if (statfs("/dev/shm", &sfs) != 0 || sfs.f_type != TMPFS_MAGIC_)
		cr_skip_test("/dev/shm is not a tmpfs here");
	snprintf(bx.shm, sizeof(bx.shm), "/dev/shm/vhostd-be-%s-XXXXXX", crmain_run_id());
	if (!mkdtemp(bx.shm)) {
		bx.shm[0] = '\0';
		cr_skip_test("cannot make a directory in /dev/shm: %s", strerror(errno));
	}
}

/* ---- files: creation, size, request types ----------------------------------- */

TestSuite(file, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(loop, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(pressure, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(fault, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(hotplug, .init = setup, .fini = teardown, .timeout = 60);

Test(file, nonexistent_file_is_created_sparse)
{
	struct vdev_params p, got;
	char path[200];
	struct stat st;
	struct ffe *fe;
	unsigned d;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/new.img", fx.dir);
	file_params(&p, path, 64 * MiB, 512, 1);
	d = fx_add("vbnew", &p);
	st = stat_of(path);
	cr_expect(S_ISREG(st.st_mode));
	cr_expect_eq(st.st_size, (off_t)(64 * MiB), "created file has size %jd, asked 64 MiB",
		     (intmax_t)st.st_size);
	cr_expect_leq(st.st_blocks, 8, "created file is not sparse: %jd blocks allocated",
		      (intmax_t)st.st_blocks);
	vdev_get_params(fx.dev[d], &got);
	cr_expect_eq(got.size, 64 * MiB, "params size %" PRIu64, got.size);
	fe = fe_ready(d, 1, 128, NULL);
	cr_expect_eq(fe->cfg.capacity, 64 * MiB / SECT, "capacity %" PRIu64, fe->cfg.capacity);
	fx_read_check(&fe->vq[0], 12345, 8192, 0, NULL, "never written area of a new file");
	fx_write_pattern(&fe->vq[0], 64 * MiB / SECT - 8, 4096, 901, NULL);
	host_check(path, 64 * MiB - 4096, 4096, 901, "last 4 KiB written by the front-end");
	st = stat_of(path);
	cr_expect_eq(st.st_size, (off_t)(64 * MiB), "I/O changed the file size to %jd",
		     (intmax_t)st.st_size);
	cr_expect_leq(st.st_blocks, 64, "file after one 4 KiB write has %jd blocks",
		      (intmax_t)st.st_blocks);
}

Test(file, size_omitted_uses_the_file_size)
{
	struct vdev_params p, got;
	char path[200], other[200], err[VDEV_ERR_MAX];
	uint64_t fsize = 10 * MiB + 100;
	uint8_t *all, last[512];
	struct ffe *fe;
	unsigned d;
	int r, s;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/sized.img", fx.dir);
	mkfile(path, fsize);
	host_write(path, 0, 10 * MiB, 77, false);       /* host -> front-end */
	file_params(&p, path, 0, 512, 1);
	d = fx_add("vbsz", &p);
	vdev_get_params(fx.dev[d], &got);
	cr_expect_eq(got.size, 10 * MiB, "size of a %" PRIu64 "-byte file: %" PRIu64
		     " (expected it rounded down to the block size)", fsize, got.size);
	fe = fe_ready(d, 1, 128, NULL);
	cr_expect_eq(fe->cfg.capacity, 10 * MiB / SECT, "capacity %" PRIu64, fe->cfg.capacity);

	all = malloc(10 * MiB);
	for (unsigned i = 0; i < 10; i++)
		fx_read_ok(&fe->vq[0], i * MiB / SECT, all + i * MiB, MiB, NULL);
	fx_check_pattern(all, 10 * MiB, 77, "file written on the host, read by the front-end");
	free(all);
	fx_read_ok(&fe->vq[0], 10 * MiB / SECT - 1, last, 512, NULL);
	check_slice(last, 512, 77, 10 * MiB - 512, "last sector");
	s = ffe_blk_read(&fe->vq[0], 10 * MiB / SECT, last, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN one sector past the end: status %d", s);
	{
		uint8_t two[1024];

		s = ffe_blk_read(&fe->vq[0], 10 * MiB / SECT - 1, two, sizeof(two), NULL);
		cr_expect_eq(s, FFE_BLK_S_IOERR, "IN across the end: status %d", s);
	}

	/* what cannot give a size */
	snprintf(other, sizeof(other), "%s/empty.img", fx.dir);
	mkfile(other, 0);
	file_params(&p, other, 0, 512, 1);
	r = fx_try_add("vbempty", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EINVAL, "empty file without size: %d (%s)", r, err);
	cr_expect_neq(err[0], '\0', "no reason given for refusing an empty file");
	snprintf(other, sizeof(other), "%s/missing.img", fx.dir);
	file_params(&p, other, 0, 512, 1);
	r = fx_try_add("vbmiss", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EINVAL, "missing file without size: %d (%s)", r, err);
	cr_expect_neq(err[0], '\0');
	cr_expect_neq(access(other, F_OK), 0, "a missing file without size was created");
	file_params(&p, fx.dir, 0, 512, 1);
	r = fx_try_add("vbdir", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EINVAL, "directory as backing: %d (%s)", r, err);
	file_params(&p, "relative.img", 1 * MiB, 512, 1);
	r = fx_try_add("vbrel", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EINVAL, "relative path: %d (%s)", r, err);
	cr_log_info("refusals: %s", err);
}

static size_t lay_max_len(const struct ffe_layout *l)
{
	if (l->seg && l->seg < 512)
		return 8192;
	if (l->seg && l->seg < 1000)
		return 32768;
	return 65536;
}

Test(file, every_request_type_multi_segment)
{
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 0, false },
		{ FFE_L_NATURAL, 512, false },
		{ FFE_L_NATURAL, 4096, true },
		{ FFE_L_CHOPPED, 100, false },
		{ FFE_L_MERGED, 0, false },
		{ FFE_L_CHOPPED, 4096, true },
		{ FFE_L_NATURAL, 1000, true },
	};
	const unsigned nl = sizeof(lays) / sizeof(lays[0]);
	struct vdev_params p;
	struct vdev_stats st;
	char path[200], id[FFE_BLK_ID_BYTES];
	struct ffe *fe;
	unsigned d;
	int s;

	core_up(2, 0);
	snprintf(path, sizeof(path), "%s/types.img", fx.dir);
	file_params(&p, path, 32 * MiB, 512, 2);
	snprintf(p.serial, sizeof(p.serial), "be-serial-01");
	d = fx_add("vbtypes", &p);
	fe = fe_ready(d, 2, 256, NULL);
	cr_expect(fe->dev_features & FFE_BIT(FFE_F_BLK_FLUSH), "FLUSH not offered");
	cr_expect(fe->dev_features & FFE_BIT(FFE_F_BLK_DISCARD), "DISCARD not offered on a file");
	cr_expect(fe->dev_features & FFE_BIT(FFE_F_BLK_WRITE_ZEROES),
		  "WRITE_ZEROES not offered on a file");
	cr_expect_eq(fe->cfg.blk_size, 512u, "blk_size %u", fe->cfg.blk_size);

	for (unsigned k = 0; k < nl; k++) {
		uint64_t sector = 2048 + k * 256;
		/* at most ~100 descriptors for both layouts: within seg_max */
		size_t l1 = lay_max_len(&lays[k]), l2 = lay_max_len(&lays[(k + 1) % nl]);
		size_t len = l1 < l2 ? l1 : l2;
		char w[120];

		fx_write_pattern(&fe->vq[k % 2], sector, len, 100 + k, &lays[k]);
		snprintf(w, sizeof(w), "written with layout %s", fx_layout_name(&lays[k]));
		fx_read_check(&fe->vq[(k + 1) % 2], sector, len, 100 + k, &lays[(k + 1) % nl], w);
		host_check(path, sector * SECT, len, 100 + k, w);
	}
	flush_ok(&fe->vq[0]);
	flush_ok(&fe->vq[1]);
	memset(id, 0x7f, sizeof(id));
	s = ffe_blk_get_id(&fe->vq[1], id);
	cr_assert_eq(s, FFE_BLK_S_OK, "GET_ID: status %d", s);
	cr_expect(memcmp(id, "be-serial-01", 12) == 0, "GET_ID returned '%.20s'", id);
	for (unsigned i = 12; i < FFE_BLK_ID_BYTES; i++)
		cr_expect_eq(id[i], 0, "GET_ID byte %u after the serial is %#x", i, id[i]);
	s = ffe_blk_req(&fe->vq[0], 99, 0, NULL, 0, NULL, 0, NULL, NULL);
	cr_expect_eq(s, FFE_BLK_S_UNSUPP, "request type 99: status %d", s);

	st = stats_of(d);
	cr_log_info("stats: reads %" PRIu64 " writes %" PRIu64 " flushes %" PRIu64 " get_ids %"
		    PRIu64 " errors %" PRIu64 " detail %s", st.reads, st.writes, st.flushes,
		    st.get_ids, st.errors, st.detail);
	cr_expect_eq(st.writes, nl);
	cr_expect_eq(st.reads, nl);
	cr_expect_eq(st.flushes, 2);
	cr_expect_eq(st.get_ids, 1);
	cr_expect_eq(st.errors, 1, "errors %" PRIu64 " (one unsupported request)", st.errors);
	cr_expect_eq(st.inflight, 0);
	cr_expect(strncmp(st.detail, "io_mode ", 8) == 0, "detail '%s'", st.detail);
}

Test(file, discard_punches_a_hole)
{
	struct vdev_params p;
	struct vdev_stats st;
	char path[200];
	struct stat s0, s1;
	struct ffe *fe;
	unsigned d;
	int s;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/discard.img", fx.dir);
	file_params(&p, path, 32 * MiB, 512, 1);
	d = fx_add("vbdisc", &p);
	fe = fe_ready(d, 1, 128, NULL);
	for (unsigned i = 0; i < 4; i++)
		fx_write_pattern(&fe->vq[0], (4 + i) * MiB / SECT, MiB, 200 + i, NULL);
	flush_ok(&fe->vq[0]);
	s0 = stat_of(path);
	cr_assert_eq(seek_of(path, 4 * MiB, SEEK_DATA), (off_t)(4 * MiB));
	cr_assert_geq(seek_of(path, 4 * MiB, SEEK_HOLE), (off_t)(8 * MiB));

	s = ffe_blk_discard(&fe->vq[0], 5 * MiB / SECT, MiB / SECT);
	cr_assert_eq(s, FFE_BLK_S_OK, "DISCARD 1 MiB at 5 MiB: status %d", s);
	s1 = stat_of(path);
	cr_expect_eq(seek_of(path, 5 * MiB, SEEK_HOLE), (off_t)(5 * MiB),
		     "no hole at the discarded range (SEEK_HOLE from 5 MiB = %jd)",
		     (intmax_t)seek_of(path, 5 * MiB, SEEK_HOLE));
	cr_expect_eq(seek_of(path, 5 * MiB, SEEK_DATA), (off_t)(6 * MiB),
		     "SEEK_DATA from 5 MiB = %jd", (intmax_t)seek_of(path, 5 * MiB, SEEK_DATA));
	cr_expect_leq(s1.st_blocks, s0.st_blocks - (blkcnt_t)(MiB / 512),
		      "st_blocks %jd -> %jd: the discard freed less than 1 MiB",
		      (intmax_t)s0.st_blocks, (intmax_t)s1.st_blocks);
	cr_expect_eq(s1.st_size, s0.st_size, "DISCARD changed the file size");
	fx_read_check(&fe->vq[0], 4 * MiB / SECT, MiB, 200, NULL, "before the discarded range");
	fx_read_check(&fe->vq[0], 5 * MiB / SECT, MiB, 0, NULL, "discarded range");
	fx_read_check(&fe->vq[0], 6 * MiB / SECT, MiB, 202, NULL, "after the discarded range");
	host_check(path, 5 * MiB, MiB, 0, "discarded range");

	/* three segments in one request, one of them over never-written space */
	{
		struct ffe_blk_dwz_seg seg[3] = {
			{ 6 * MiB / SECT, 256 * KiB / SECT, 0 },
			{ 7 * MiB / SECT, 256 * KiB / SECT, 0 },
			{ 16 * MiB / SECT, 64 * KiB / SECT, 0 },
		};
		uint8_t *r = malloc(768 * KiB);

		s = dwz(&fe->vq[0], FFE_BLK_T_DISCARD, seg, 3);
		cr_assert_eq(s, FFE_BLK_S_OK, "DISCARD of 3 segments: status %d", s);
		cr_expect_eq(seek_of(path, 6 * MiB, SEEK_HOLE), (off_t)(6 * MiB));
		cr_expect_eq(seek_of(path, 7 * MiB, SEEK_HOLE), (off_t)(7 * MiB));
		fx_read_check(&fe->vq[0], 6 * MiB / SECT, 256 * KiB, 0, NULL, "segment 1");
		fx_read_check(&fe->vq[0], 7 * MiB / SECT, 256 * KiB, 0, NULL, "segment 2");
		fx_read_ok(&fe->vq[0], (6 * MiB + 256 * KiB) / SECT, r, 768 * KiB, NULL);
		check_slice(r, 768 * KiB, 202, 256 * KiB, "between segments 1 and 2");
		free(r);
	}
	/* a segment past the end fails the request, nothing is punched */
	{
		struct ffe_blk_dwz_seg seg[2] = {
			{ 4 * MiB / SECT, 8, 0 },
			{ 32 * MiB / SECT - 8, 16, 0 },
		};

		s = dwz(&fe->vq[0], FFE_BLK_T_DISCARD, seg, 2);
		cr_expect_eq(s, FFE_BLK_S_IOERR, "DISCARD with a segment past the end: %d", s);
		fx_read_check(&fe->vq[0], 4 * MiB / SECT, 4096, 200, NULL,
			   "first segment of a refused DISCARD");
	}
	st = stats_of(d);
	cr_expect_eq(st.discards, 2, "discards %" PRIu64, st.discards);
}

Test(file, write_zeroes_with_and_without_unmap)
{
	struct vdev_params p;
	struct vdev_stats st;
	char path[200];
	struct stat s0, s1, s2;
	struct ffe *fe;
	unsigned d;
	int s;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/wz.img", fx.dir);
	file_params(&p, path, 32 * MiB, 512, 1);
	d = fx_add("vbwz", &p);
	fe = fe_ready(d, 1, 128, NULL);
	cr_assert_eq(fe->cfg.write_zeroes_may_unmap, 1);
	for (unsigned i = 0; i < 4; i++)
		fx_write_pattern(&fe->vq[0], (12 + i) * MiB / SECT, MiB, 300 + i, NULL);
	flush_ok(&fe->vq[0]);
	s0 = stat_of(path);

	s = ffe_blk_write_zeroes(&fe->vq[0], 12 * MiB / SECT, MiB / SECT, false);
	cr_assert_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES (no unmap) 1 MiB at 12 MiB: status %d", s);
	fx_read_check(&fe->vq[0], 12 * MiB / SECT, MiB, 0, NULL, "WRITE_ZEROES without UNMAP");
	host_check(path, 12 * MiB, MiB, 0, "WRITE_ZEROES without UNMAP");
	s1 = stat_of(path);
	cr_expect_geq(s1.st_blocks, s0.st_blocks - 256, "WRITE_ZEROES without UNMAP deallocated "
		      "blocks: st_blocks %jd -> %jd", (intmax_t)s0.st_blocks, (intmax_t)s1.st_blocks);

	s = ffe_blk_write_zeroes(&fe->vq[0], 13 * MiB / SECT, MiB / SECT, true);
	cr_assert_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES (unmap) 1 MiB at 13 MiB: status %d", s);
	fx_read_check(&fe->vq[0], 13 * MiB / SECT, MiB, 0, NULL, "WRITE_ZEROES with UNMAP");
	host_check(path, 13 * MiB, MiB, 0, "WRITE_ZEROES with UNMAP");
	s2 = stat_of(path);
	cr_expect_eq(seek_of(path, 13 * MiB, SEEK_HOLE), (off_t)(13 * MiB),
		     "WRITE_ZEROES with UNMAP left no hole (SEEK_HOLE from 13 MiB = %jd)",
		     (intmax_t)seek_of(path, 13 * MiB, SEEK_HOLE));
	cr_expect_leq(s2.st_blocks, s1.st_blocks - (blkcnt_t)(MiB / 512),
		      "WRITE_ZEROES with UNMAP: st_blocks %jd -> %jd", (intmax_t)s1.st_blocks,
		      (intmax_t)s2.st_blocks);
	fx_read_check(&fe->vq[0], 11 * MiB / SECT, MiB, 0, NULL, "never written before the range");
	fx_read_check(&fe->vq[0], 14 * MiB / SECT, MiB, 302, NULL, "after the zeroed ranges");

	/* two segments, one of each kind, in one request; unaligned sub-page ranges */
	{
		struct ffe_blk_dwz_seg seg[2] = {
			{ 15 * MiB / SECT + 1, 3, 0 },
			{ 15 * MiB / SECT + 9, 7, FFE_BLK_WZ_UNMAP },
		};
		uint8_t *r = malloc(16 * SECT);

		s = dwz(&fe->vq[0], FFE_BLK_T_WRITE_ZEROES, seg, 2);
		cr_assert_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES of 2 sub-page segments: status %d", s);
		fx_read_ok(&fe->vq[0], 15 * MiB / SECT, r, 16 * SECT, NULL);
		check_slice(r, SECT, 303, 0, "sector 0 before the first zeroed segment");
		fx_check_zero(r + SECT, 3 * SECT, "first sub-page segment");
		check_slice(r + 4 * SECT, 5 * SECT, 303, 4 * SECT, "sectors between the segments");
		fx_check_zero(r + 9 * SECT, 7 * SECT, "second sub-page segment (UNMAP)");
		free(r);
	}
	st = stats_of(d);
	cr_expect_eq(st.write_zeroes, 3, "write_zeroes %" PRIu64, st.write_zeroes);
	cr_expect_eq(st.errors, 0);
}

Test(file, second_device_on_the_same_file_is_busy)
{
	struct vdev_params p;
	char path[200], alias[200], err[VDEV_ERR_MAX];
	unsigned a;
	int r;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/shared.img", fx.dir);
	mkfile(path, 16 * MiB);
	file_params(&p, path, 0, 512, 1);
	a = fx_add("vbfirst", &p);

	r = fx_try_add("vbsecond", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EBUSY, "second device on %s: %d (%s)", path, r, err);
	cr_expect_neq(err[0], '\0', "no reason for EBUSY");
	cr_log_info("second device on the same file: %s", err);

	snprintf(alias, sizeof(alias), "%s/symlink.img", fx.dir);
	cr_assert_eq(symlink(path, alias), 0);
	file_params(&p, alias, 0, 512, 1);
	r = fx_try_add("vbsym", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EBUSY, "device on a symlink to a used file: %d (%s)", r, err);

	snprintf(alias, sizeof(alias), "%s/hardlink.img", fx.dir);
	cr_assert_eq(link(path, alias), 0);
	file_params(&p, alias, 8 * MiB, 512, 1);
	r = fx_try_add("vbhard", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EBUSY, "device on a hard link to a used file: %d (%s)", r, err);
	cr_expect_eq(stat_of(path).st_size, (off_t)(16 * MiB), "the refused device changed "
		     "the file size");

	/* once the first device is gone, the file is free */
	fx_drop(a);
	file_params(&p, path, 0, 512, 1);
	r = fx_try_add("vbsecond", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, 0, "device on a released file: %d (%s)", r, err);
}

Test(file, direct_io_and_page_cache_coherence)
{
	static const struct ffe_layout chopped = { FFE_L_CHOPPED, 100, false };
	struct vdev_params p;
	struct vdev_stats st;
	char path[200], path2[200];
	struct ffe *fe;
	struct raw rw;
	unsigned d, d2, c;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/direct.img", fx.dir);
	mkfile(path, 16 * MiB);
	file_params(&p, path, 0, 4096, 1);
	d = fx_add("vbdirect", &p);
	st = stats_of(d);
	cr_log_info("4 KiB block file device: %s", st.detail);
	cr_assert(strstr(st.detail, "io_mode direct") != NULL, "a 4K-block device on an ext4 "
		  "file reports '%s', expected io_mode direct", st.detail);
	snprintf(path2, sizeof(path2), "%s/direct512.img", fx.dir);
	file_params(&p, path2, 4 * MiB, 512, 1);
	d2 = fx_add("vbdirect512", &p);
	st = stats_of(d2);
	cr_expect(strstr(st.detail, "io_mode direct") != NULL, "a 512-byte block device on an "
		  "ext4 file reports '%s'", st.detail);

	fe = fe_ready(d, 1, 128, NULL);
	cr_expect_eq(fe->cfg.blk_size, 4096u);
	raw_init(fe, &rw, 256 * KiB);

	/* an aligned write goes around the page cache */
	raw_write_pat(&fe->vq[0], &rw, MiB / SECT, 256 * KiB, 31);
	c = cached_pages(path, MiB, 256 * KiB);
	cr_expect_eq(c, 0, "after an aligned write on a direct device %u of 64 pages are in "
		     "the host page cache: the write was not O_DIRECT", c);
	host_check(path, MiB, 256 * KiB, 31, "aligned write");
	raw_read_check(&fe->vq[0], &rw, MiB / SECT, 256 * KiB, 31, "aligned read back");

	/* host page cache (dirty, not synced) -> direct read */
	host_write(path, 2 * MiB, 64 * KiB, 32, false);
	raw_read_check(&fe->vq[0], &rw, 2 * MiB / SECT, 64 * KiB, 32,
		       "direct read of data the host wrote to the page cache");

	/* unaligned buffers (buffered path) -> direct read */
	fx_write_pattern(&fe->vq[0], 3 * MiB / SECT, 8192, 33, &chopped);
	raw_read_check(&fe->vq[0], &rw, 3 * MiB / SECT, 8192, 33,
		       "direct read after a write through unaligned buffers");
	/* direct write -> buffered read must not see stale cached pages */
	fx_read_check(&fe->vq[0], 3 * MiB / SECT, 8192, 33, &chopped, "buffered read (warms cache)");
	raw_write_pat(&fe->vq[0], &rw, 3 * MiB / SECT, 8192, 34);
	fx_read_check(&fe->vq[0], 3 * MiB / SECT, 8192, 34, &chopped,
		   "buffered read after a direct write over cached pages");
	host_check(path, 3 * MiB, 8192, 34, "direct write over cached pages");
	flush_ok(&fe->vq[0]);
}

Test(file, tmpfs_backing)
{
	struct vdev_params p;
	struct vdev_stats st;
	char path[200], probe[200];
	struct ffe *fe;
	struct raw rw;
	bool direct_ok;
	unsigned d;
	int fd, s;

	need_uring();
	shm_dir();
	snprintf(probe, sizeof(probe), "%s/probe", bx.shm);
	fd = open(probe, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	direct_ok = fd >= 0;
	cr_log_info("O_DIRECT open on tmpfs: %s", direct_ok ? "works" : strerror(errno));
	if (fd >= 0)
		close(fd);

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/tmpfs.img", bx.shm);
	file_params(&p, path, 16 * MiB, 512, 1);
	d = fx_add("vbtmpfs", &p);
	st = stats_of(d);
	cr_log_info("file on tmpfs: %s", st.detail);
	cr_expect(strstr(st.detail, direct_ok ? "io_mode direct" : "io_mode buffered") != NULL,
		  "O_DIRECT on tmpfs %s, but the device reports '%s'",
		  direct_ok ? "works" : "fails", st.detail);
	cr_expect_leq(stat_of(path).st_blocks, 8, "created file on tmpfs is not sparse");

	fe = fe_ready(d, 1, 128, NULL);
	raw_init(fe, &rw, 64 * KiB);
	fx_write_pattern(&fe->vq[0], 0, 64 * KiB, 41, NULL);
	fx_read_check(&fe->vq[0], 0, 64 * KiB, 41, NULL, "tmpfs");
	raw_write_pat(&fe->vq[0], &rw, MiB / SECT, 64 * KiB, 42);
	raw_read_check(&fe->vq[0], &rw, MiB / SECT, 64 * KiB, 42, "tmpfs aligned");
	host_check(path, 0, 64 * KiB, 41, "tmpfs");
	host_check(path, MiB, 64 * KiB, 42, "tmpfs aligned");
	flush_ok(&fe->vq[0]);

	/* tmpfs has no FALLOC_FL_ZERO_RANGE: WRITE_ZEROES runs on a worker */
	for (unsigned i = 0; i < 3; i++)
		fx_write_pattern(&fe->vq[0], (4 + i) * MiB / SECT, MiB, 43 + i, NULL);
	s = ffe_blk_write_zeroes(&fe->vq[0], 4 * MiB / SECT, MiB / SECT, false);
	cr_assert_eq(s, FFE_BLK_S_OK, "tmpfs WRITE_ZEROES without UNMAP: status %d", s);
	fx_read_check(&fe->vq[0], 4 * MiB / SECT, MiB, 0, NULL, "tmpfs WRITE_ZEROES without UNMAP");
	host_check(path, 4 * MiB, MiB, 0, "tmpfs WRITE_ZEROES without UNMAP");
	s = ffe_blk_write_zeroes(&fe->vq[0], 5 * MiB / SECT, MiB / SECT, true);
	cr_assert_eq(s, FFE_BLK_S_OK, "tmpfs WRITE_ZEROES with UNMAP: status %d", s);
	fx_read_check(&fe->vq[0], 5 * MiB / SECT, MiB, 0, NULL, "tmpfs WRITE_ZEROES with UNMAP");
	cr_expect_eq(seek_of(path, 5 * MiB, SEEK_HOLE), (off_t)(5 * MiB),
		     "tmpfs WRITE_ZEROES with UNMAP left no hole");
	s = ffe_blk_discard(&fe->vq[0], 6 * MiB / SECT, MiB / SECT);
	cr_assert_eq(s, FFE_BLK_S_OK, "tmpfs DISCARD: status %d", s);
	cr_expect_eq(seek_of(path, 6 * MiB, SEEK_HOLE), (off_t)(6 * MiB), "tmpfs DISCARD left no hole");
	fx_read_check(&fe->vq[0], 6 * MiB / SECT, MiB, 0, NULL, "tmpfs discarded range");
	fx_read_check(&fe->vq[0], 0, 64 * KiB, 41, NULL, "tmpfs data outside the zeroed ranges");
	st = stats_of(d);
	cr_expect_eq(st.errors, 0);
}

Test(file, data_survives_destroy_and_recreate)
{
	struct vdev_params p, got;
	char path[200];
	struct ffe *fe;
	unsigned d;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/persist.img", fx.dir);
	file_params(&p, path, 16 * MiB, 512, 1);
	d = fx_add("vbpersist", &p);
	fe = fe_ready(d, 1, 128, NULL);
	fx_write_pattern(&fe->vq[0], 100, 256 * KiB, 51, NULL);
	fx_write_pattern(&fe->vq[0], 16 * MiB / SECT - 8, 4096, 52, NULL);
	flush_ok(&fe->vq[0]);
	fx_close_wait(d, fe, VDEV_LISTENING);
	fx_drop(d);

	host_check(path, 100 * SECT, 256 * KiB, 51, "written through vhost-user");
	host_check(path, 16 * MiB - 4096, 4096, 52, "written through vhost-user");
	host_write(path, 8 * MiB, 64 * KiB, 53, true);

	file_params(&p, path, 0, 512, 1);
	d = fx_add("vbpersist", &p);
	vdev_get_params(fx.dev[d], &got);
	cr_expect_eq(got.size, 16 * MiB, "re-created device has size %" PRIu64, got.size);
	fe = fe_ready(d, 1, 128, NULL);
	fx_read_check(&fe->vq[0], 100, 256 * KiB, 51, NULL, "after destroy + create");
	fx_read_check(&fe->vq[0], 16 * MiB / SECT - 8, 4096, 52, NULL, "after destroy + create");
	fx_read_check(&fe->vq[0], 8 * MiB / SECT, 64 * KiB, 53, NULL, "written by the host meanwhile");
}

Test(file, readonly_file)
{
	struct vdev_params p;
	char path[200], err[VDEV_ERR_MAX];
	struct ffe *fe;
	unsigned d;
	int s, r;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/ro.img", fx.dir);
	mkfile(path, 8 * MiB);
	host_write(path, 0, MiB, 61, false);
	file_params(&p, path, 0, 512, 1);
	p.readonly = true;
	d = fx_add("vbro", &p);
	fe = fe_ready(d, 1, 128, NULL);
	cr_expect(fe->dev_features & FFE_BIT(FFE_F_BLK_RO), "read-only file device without BLK_F_RO");
	cr_expect(!(fe->dev_features & FFE_BIT(FFE_F_BLK_DISCARD)), "read-only offers DISCARD");
	fx_read_check(&fe->vq[0], 0, MiB, 61, NULL, "read-only file");
	s = ffe_blk_write(&fe->vq[0], 0, (uint8_t[512]){ 1 }, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT on a read-only device: status %d", s);
	host_check(path, 0, MiB, 61, "read-only file after a refused write");

	file_params(&p, path, 16 * MiB, 512, 1);
	p.readonly = true;
	r = fx_try_add("vbro2", &p, err, sizeof(err), NULL);
	cr_expect_neq(r, 0, "read-only device larger than its file was created");
}

Test(file, set_params_on_an_idle_file_device)
{
	struct vdev_params p, got;
	char path[200], err[VDEV_ERR_MAX] = "", id[FFE_BLK_ID_BYTES];
	struct ffe *fe;
	unsigned d;
	int r;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/setp.img", fx.dir);
	mkfile(path, 16 * MiB);
	file_params(&p, path, 0, 512, 1);
	d = fx_add("vbsetp", &p);

	/* what the manager passes for a controller configured without size:
	 * size 0 = "the file's size", with only the serial changed */
	snprintf(p.serial, sizeof(p.serial), "serial-two");
	r = vdev_set_params(fx.dev[d], &p, err, sizeof(err));
	cr_expect_eq(r, 0, "vdev_set_params(serial changed, size 0 = file's size) on an idle "
		     "file device: %s (%s)", strerror(-r), err);

	/* grow it */
	file_params(&p, path, 32 * MiB, 512, 1);
	snprintf(p.serial, sizeof(p.serial), "serial-two");
	r = vdev_set_params(fx.dev[d], &p, err, sizeof(err));
	cr_expect_eq(r, 0, "vdev_set_params(size 16 MiB -> 32 MiB) on an idle file device: "
		     "%s (%s)", strerror(-r), err);
	vdev_get_params(fx.dev[d], &got);
	if (r == 0) {
		cr_expect_eq(got.size, 32 * MiB, "size after growing: %" PRIu64, got.size);
		cr_expect_geq(stat_of(path).st_size, (off_t)(32 * MiB), "file not grown");
	}
	cr_log_info("after set_params: size %" PRIu64 " serial '%s'", got.size, got.serial);

	/* the device still works, with whatever parameters are in force */
	fe = fe_ready(d, 1, 128, NULL);
	cr_expect_eq(fe->cfg.capacity, got.size / SECT);
	fx_write_pattern(&fe->vq[0], 0, 4096, 71, NULL);
	fx_read_check(&fe->vq[0], 0, 4096, 71, NULL, "after set_params");
	cr_assert_eq(ffe_blk_get_id(&fe->vq[0], id), FFE_BLK_S_OK);
	cr_expect(strncmp(id, got.serial, FFE_BLK_ID_BYTES) == 0, "GET_ID '%.20s', params '%s'",
		  id, got.serial);
}

/* ---- loop devices ------------------------------------------------------------- */

static const char *loopdev(unsigned l)
{
	return bx.loop[l];
}

static unsigned loop_dev(const char *name, unsigned l, uint64_t size, unsigned bs, unsigned q)
{
	struct vdev_params p;

	file_params(&p, loopdev(l), size, bs, q);
	return fx_add(name, &p);
}

static unsigned sysfs_uint(unsigned l, const char *attr)
{
	char out[64] = "";

	sh(out, sizeof(out), "cat /sys/block/%s/%s 2>/dev/null", loopdev(l) + 5, attr);
	return (unsigned)strtoul(out, NULL, 10);
}

Test(loop, io_on_a_loop_device)
{
	struct vdev_params got;
	struct vdev_stats st;
	struct ffe *fe;
	struct raw rw;
	unsigned l, d;

	core_up(1, 0);
	l = loop_new("l512.img", 32 * MiB, 0);
	d = loop_dev("vbloop", l, 0, 512, 1);
	vdev_get_params(fx.dev[d], &got);
	cr_expect_eq(got.size, 32 * MiB, "size of a 32 MiB loop device: %" PRIu64, got.size);
	st = stats_of(d);
	cr_log_info("%s: %s", loopdev(l), st.detail);
	cr_expect(strstr(st.detail, "io_mode direct") != NULL, "512-byte loop device: '%s'",
		  st.detail);
	fe = fe_ready(d, 1, 128, NULL);
	cr_expect_eq(fe->cfg.capacity, 32 * MiB / SECT);
	cr_expect_eq(fe->cfg.blk_size, 512u, "blk_size %u", fe->cfg.blk_size);
	raw_init(fe, &rw, 128 * KiB);

	fx_write_pattern(&fe->vq[0], 100, 64 * KiB, 81, NULL);
	fx_read_check(&fe->vq[0], 100, 64 * KiB, 81, NULL, "loop device");
	host_check(loopdev(l), 100 * SECT, 64 * KiB, 81, "loop device");
	raw_write_pat(&fe->vq[0], &rw, MiB / SECT, 128 * KiB, 82);
	raw_read_check(&fe->vq[0], &rw, MiB / SECT, 128 * KiB, 82, "loop device aligned");
	host_check(loopdev(l), MiB, 128 * KiB, 82, "loop device aligned");
	flush_ok(&fe->vq[0]);
	/* host -> front-end */
	host_write(loopdev(l), 4 * MiB, 64 * KiB, 83, true);
	fx_read_check(&fe->vq[0], 4 * MiB / SECT, 64 * KiB, 83, NULL, "written on the host");
	raw_read_check(&fe->vq[0], &rw, 4 * MiB / SECT, 64 * KiB, 83, "written on the host");
	fx_read_check(&fe->vq[0], 32 * MiB / SECT - 8, 4096, 0, NULL, "end of the device");
}

Test(loop, sector_size_4096_is_advertised)
{
	struct vdev_stats st;
	struct ffe *fea, *feb;
	struct raw rw;
	uint8_t sec[512], *r;
	unsigned la, lb, da, db;
	int s;

	core_up(1, 0);
	la = loop_new("l4k-a.img", 32 * MiB, 4096);
	if (sysfs_uint(la, "queue/logical_block_size") != 4096)
		cr_skip_test("losetup --sector-size 4096 did not give a 4096-byte logical block");
	lb = loop_new("l4k-b.img", 32 * MiB, 4096);

	/* block_size 512 on a 4K device: advertised 4096, buffered I/O */
	da = loop_dev("vb4ka", la, 0, 512, 1);
	st = stats_of(da);
	cr_log_info("%s (4K) with block_size 512: %s", loopdev(la), st.detail);
	cr_expect(strstr(st.detail, "io_mode buffered") != NULL, "block_size 512 on a 4K device "
		  "cannot always be O_DIRECT, but reports '%s'", st.detail);
	fea = fe_ready(da, 1, 128, NULL);
	cr_expect_eq(fea->cfg.blk_size, 4096u, "blk_size %u on a 4K loop device", fea->cfg.blk_size);
	cr_expect_geq(fea->cfg.discard_sector_alignment, 8u);
	fx_write_pattern(&fea->vq[0], 8, 64 * KiB, 91, NULL);
	fx_read_check(&fea->vq[0], 8, 64 * KiB, 91, NULL, "4K device, block_size 512");
	host_check(loopdev(la), 8 * SECT, 64 * KiB, 91, "4K device, block_size 512");
	/* a single 512-byte sector inside a 4K block */
	ffe_pattern(sec, sizeof(sec), 92);
	fx_write_ok(&fea->vq[0], 8 + 3, sec, 512, NULL);
	r = malloc(4096);
	fx_read_ok(&fea->vq[0], 8, r, 4096, NULL);
	check_slice(r, 3 * SECT, 91, 0, "sectors before a 512-byte write on a 4K device");
	fx_check_pattern(r + 3 * SECT, SECT, 92, "512-byte write on a 4K device");
	check_slice(r + 4 * SECT, 4 * SECT, 91, 4 * SECT, "sectors after a 512-byte write");
	free(r);

	/* block_size 4096 on a 4K device: O_DIRECT */
	db = loop_dev("vb4kb", lb, 0, 4096, 1);
	st = stats_of(db);
	cr_log_info("%s (4K) with block_size 4096: %s", loopdev(lb), st.detail);
	cr_expect(strstr(st.detail, "io_mode direct") != NULL, "block_size 4096 on a 4K device: "
		  "'%s'", st.detail);
	feb = fe_ready(db, 1, 128, NULL);
	cr_expect_eq(feb->cfg.blk_size, 4096u, "blk_size %u", feb->cfg.blk_size);
	raw_init(feb, &rw, 64 * KiB);
	raw_write_pat(&feb->vq[0], &rw, MiB / SECT, 64 * KiB, 93);
	raw_read_check(&feb->vq[0], &rw, MiB / SECT, 64 * KiB, 93, "4K device direct");
	host_check(loopdev(lb), MiB, 64 * KiB, 93, "4K device direct");
	/* a misaligned 512-byte request on the direct 4K device still works */
	ffe_pattern(sec, sizeof(sec), 94);
	s = ffe_blk_write(&feb->vq[0], MiB / SECT + 1, sec, 512, NULL);
	cr_expect_eq(s, FFE_BLK_S_OK, "512-byte OUT on a 4K O_DIRECT device: status %d", s);
	if (s == FFE_BLK_S_OK) {
		r = malloc(4096);
		fx_read_ok(&feb->vq[0], MiB / SECT, r, 4096, NULL);
		check_slice(r, SECT, 93, 0, "sector before a 512-byte write (direct 4K device)");
		fx_check_pattern(r + SECT, SECT, 94, "512-byte write on a direct 4K device");
		check_slice(r + 2 * SECT, 6 * SECT, 93, 2 * SECT, "sectors after it");
		free(r);
	}
}

/* The config space reflects the device: blk_size, topology, discard limits. */
static void check_geometry(unsigned l, unsigned block_size)
{
	unsigned lbs = sysfs_uint(l, "queue/logical_block_size");
	unsigned pbs = sysfs_uint(l, "queue/physical_block_size");
	unsigned gran = sysfs_uint(l, "queue/discard_granularity");
	char out[64] = "";
	uint64_t dmax;
	unsigned d, bs;
	struct ffe *fe;
	struct ffe_blk_config *c;
	char name[32];

	sh(out, sizeof(out), "cat /sys/block/%s/queue/discard_max_bytes", loopdev(l) + 5);
	dmax = strtoull(out, NULL, 10);
	snprintf(name, sizeof(name), "vbgeo%u", l);
	d = loop_dev(name, l, 0, block_size, 1);
	fe = fe_ready(d, 1, 64, NULL);
	c = &fe->cfg;
	bs = block_size > lbs ? block_size : lbs;
	cr_log_info("%s: logical %u physical %u discard granularity %u max %" PRIu64 " bytes; "
		    "config blk_size %u pbe %u discard align %u max %u sectors", loopdev(l), lbs,
		    pbs, gran, dmax, c->blk_size, c->physical_block_exp,
		    c->discard_sector_alignment, c->max_discard_sectors);
	cr_expect_eq(c->blk_size, bs, "%s block_size %u: blk_size %u, expected %u", loopdev(l),
		     block_size, c->blk_size, bs);
	cr_expect_eq((uint64_t)c->blk_size << c->physical_block_exp,
		     (uint64_t)(pbs > bs ? pbs : bs), "%s: physical block %u advertised as "
		     "%u << %u", loopdev(l), pbs, c->blk_size, c->physical_block_exp);
	if (fe->dev_features & FFE_BIT(FFE_F_BLK_DISCARD)) {
		cr_expect_geq((uint64_t)c->discard_sector_alignment * 512, gran,
			      "%s: discard granularity %u bytes, advertised discard_sector_"
			      "alignment %u sectors (%u bytes)", loopdev(l), gran,
			      c->discard_sector_alignment, c->discard_sector_alignment * 512);
		if (dmax)
			cr_expect_leq((uint64_t)c->max_discard_sectors * 512, dmax,
				      "%s: max_discard_sectors %u above the device's %" PRIu64
				      " bytes", loopdev(l), c->max_discard_sectors, dmax);
	}
	fx_close(fe);
}

Test(loop, config_reflects_device_geometry)
{
	unsigned l512, l4k;

	core_up(1, 0);
	l512 = loop_new("geo512.img", 16 * MiB, 0);
	l4k = loop_new("geo4k.img", 16 * MiB, 4096);
	check_geometry(l512, 512);
	check_geometry(l4k, 512);
}

Test(loop, size_larger_than_the_device_is_refused)
{
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	struct ffe *fe;
	unsigned l, d = 0;
	int r;

	core_up(1, 0);
	l = loop_new("small.img", 16 * MiB, 0);
	file_params(&p, loopdev(l), 32 * MiB, 512, 1);
	r = fx_try_add("vbbig", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EINVAL, "size 32 MiB on a 16 MiB device: %d (%s)", r, err);
	cr_expect(strstr(err, "larger") != NULL || strstr(err, "size") != NULL,
		  "reason does not say why: '%s'", err);
	cr_log_info("refused: %s", err);
	/* nothing is left holding the device: a smaller size works */
	file_params(&p, loopdev(l), 8 * MiB, 512, 1);
	r = fx_try_add("vbsmall", &p, err, sizeof(err), &d);
	cr_assert_eq(r, 0, "size 8 MiB on a 16 MiB device after a refusal: %d (%s)", r, err);
	fe = fe_ready(d, 1, 64, NULL);
	cr_expect_eq(fe->cfg.capacity, 8 * MiB / SECT);
	fx_write_pattern(&fe->vq[0], 8 * MiB / SECT - 8, 4096, 95, NULL);
	cr_expect_eq(ffe_blk_read(&fe->vq[0], 8 * MiB / SECT, (uint8_t[512]){ 0 }, 512, NULL),
		     FFE_BLK_S_IOERR, "IN past the configured size of a larger device");
}

Test(loop, device_in_use_is_busy)
{
	struct vdev_params p;
	char err[VDEV_ERR_MAX] = "";
	unsigned l, l2;
	int r, fd;

	core_up(1, 0);
	l = loop_new("busy.img", 16 * MiB, 0);
	loop_dev("vbbusy", l, 0, 512, 1);
	file_params(&p, loopdev(l), 0, 512, 1);
	r = fx_try_add("vbbusy2", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EBUSY, "second device on %s: %d (%s)", loopdev(l), r, err);
	cr_expect_neq(err[0], '\0');
	cr_log_info("second device on a loop device: %s", err);

	/* held exclusively by somebody else (as a mount would) */
	l2 = loop_new("held.img", 16 * MiB, 0);
	fd = open(loopdev(l2), O_RDONLY | O_EXCL | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s O_EXCL: %s", loopdev(l2), strerror(errno));
	file_params(&p, loopdev(l2), 0, 512, 1);
	r = fx_try_add("vbheld", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, -EBUSY, "device held O_EXCL elsewhere: %d (%s)", r, err);
	close(fd);
	r = fx_try_add("vbheld", &p, err, sizeof(err), NULL);
	cr_expect_eq(r, 0, "after the holder let go: %d (%s)", r, err);
}

Test(loop, discard_and_write_zeroes)
{
	struct vdev_stats st;
	struct ffe *fe;
	uint8_t *r;
	unsigned l, d;
	bool zeros = true;
	int s;

	core_up(1, 0);
	l = loop_new("ldisc.img", 32 * MiB, 0);
	d = loop_dev("vbldisc", l, 0, 512, 1);
	fe = fe_ready(d, 1, 128, NULL);
	cr_log_info("%s: discard_max_bytes %u granularity %u; config max_discard %u align %u",
		    loopdev(l), sysfs_uint(l, "queue/discard_max_bytes"),
		    sysfs_uint(l, "queue/discard_granularity"), fe->cfg.max_discard_sectors,
		    fe->cfg.discard_sector_alignment);
	cr_assert(fe->dev_features & FFE_BIT(FFE_F_BLK_DISCARD), "DISCARD not offered on a loop "
		  "device with discard_max_bytes %u", sysfs_uint(l, "queue/discard_max_bytes"));
	for (unsigned i = 0; i < 4; i++)
		fx_write_pattern(&fe->vq[0], (4 + i) * MiB / SECT, MiB, 110 + i, NULL);
	flush_ok(&fe->vq[0]);

	s = ffe_blk_discard(&fe->vq[0], 5 * MiB / SECT, MiB / SECT);
	cr_assert_eq(s, FFE_BLK_S_OK, "DISCARD (BLKDISCARD on a worker) 1 MiB: status %d", s);
	r = malloc(MiB);
	fx_read_ok(&fe->vq[0], 5 * MiB / SECT, r, MiB, NULL);
	for (size_t i = 0; i < MiB && zeros; i++)
		zeros = r[i] == 0;
	free(r);
	cr_log_info("discarded range of %s reads back %s", loopdev(l), zeros ? "zeros" : "old data");
	fx_read_check(&fe->vq[0], 4 * MiB / SECT, MiB, 110, NULL, "before the discarded range");
	fx_read_check(&fe->vq[0], 6 * MiB / SECT, MiB, 112, NULL, "after the discarded range");
	{
		struct ffe_blk_dwz_seg seg[3] = {
			{ 6 * MiB / SECT, 128, 0 }, { 6 * MiB / SECT + 1024, 256, 0 },
			{ 20 * MiB / SECT, 2048, 0 },
		};

		s = dwz(&fe->vq[0], FFE_BLK_T_DISCARD, seg, 3);
		cr_expect_eq(s, FFE_BLK_S_OK, "DISCARD of 3 segments on a loop device: status %d", s);
		r = malloc(448 * KiB);
		fx_read_ok(&fe->vq[0], 6 * MiB / SECT + 128, r, 448 * KiB, NULL);
		check_slice(r, 448 * KiB, 112, 64 * KiB, "between two discarded segments");
		free(r);
	}

	s = ffe_blk_write_zeroes(&fe->vq[0], 4 * MiB / SECT, MiB / SECT, false);
	cr_expect_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES (no unmap) on a loop device: status %d", s);
	if (s == FFE_BLK_S_OK)
		fx_read_check(&fe->vq[0], 4 * MiB / SECT, MiB, 0, NULL, "loop WRITE_ZEROES no unmap");
	s = ffe_blk_write_zeroes(&fe->vq[0], 7 * MiB / SECT, MiB / SECT, true);
	cr_expect_eq(s, FFE_BLK_S_OK, "WRITE_ZEROES (unmap) on a loop device: status %d", s);
	if (s == FFE_BLK_S_OK)
		fx_read_check(&fe->vq[0], 7 * MiB / SECT, MiB, 0, NULL, "loop WRITE_ZEROES unmap");
	host_check(loopdev(l), 4 * MiB, MiB, 0, "loop WRITE_ZEROES no unmap");
	host_check(loopdev(l), 7 * MiB, MiB, 0, "loop WRITE_ZEROES unmap");
	st = stats_of(d);
	cr_expect_eq(st.discards, 2);
	cr_expect_eq(st.errors, 0, "errors %" PRIu64, st.errors);
}

/* ---- pressure: far more requests in flight than the io_uring has entries ---- */

#define SLOT_SECTORS 32                 /* 16 KiB per write slot */

Test(pressure, sq_full_every_request_completes_once)
{
	enum { NQ = 4, PER = 128 };
	struct vdev_params p;
	struct vdev_stats st;
	struct ffe_opts o;
	struct batch *b[NQ];
	char path[200];
	struct ffe *fe;
	uint8_t *all;
	unsigned d;
	int64_t t0;

	core_up(1, 16);                 /* the smallest ring: SQ 16, CQ 64 */
	snprintf(path, sizeof(path), "%s/pressure.img", fx.dir);
	file_params(&p, path, 64 * MiB, 512, NQ);
	d = fx_add("vbpress", &p);
	ffe_opts_init(&o);
	o.mem_size = 128 * MiB;
	o.scratch_per_queue = 8 * MiB;
	fe = fe_ready(d, NQ, 256, &o);

	/* round 1: 4 x 128 writes of 4..16 KiB posted at once */
	t0 = ffe_now_ms();
	for (unsigned q = 0; q < NQ; q++) {
		b[q] = batch_new(&fe->vq[q]);
		for (unsigned i = 0; i < PER; i++) {
			unsigned slot = q * PER + i;

			batch_add_write(b[q], (uint64_t)slot * SLOT_SECTORS, 4096 * (1 + i % 4),
					1000 + slot);
		}
		batch_post(b[q]);
	}
	batches_run(b, NQ, 30000);
	for (unsigned q = 0; q < NQ; q++) {
		batch_check(b[q], "pressure writes");
		batch_free(b[q]);
	}
	cr_log_info("512 writes with a 16-entry ring: %" PRId64 " ms", ffe_now_ms() - t0);

	/* round 2: read every slot back, all at once */
	for (unsigned q = 0; q < NQ; q++) {
		b[q] = batch_new(&fe->vq[q]);
		for (unsigned i = 0; i < PER; i++) {
			unsigned slot = q * PER + i;

			batch_add(b[q], FFE_BLK_T_IN, (uint64_t)slot * SLOT_SECTORS, NULL, 0,
				  4096 * (1 + i % 4), 1000 + slot, 0);
		}
		batch_post(b[q]);
	}
	batches_run(b, NQ, 30000);
	for (unsigned q = 0; q < NQ; q++) {
		batch_check(b[q], "pressure reads");
		batch_free(b[q]);
	}

	/* round 3: FLUSH, 16-segment DISCARDs (16 SQEs each: a whole SQ),
	 * 4-segment WRITE_ZEROES and GET_ID, all at once */
	for (unsigned q = 0; q < NQ; q++) {
		b[q] = batch_new(&fe->vq[q]);
		for (unsigned i = 0; i < PER; i++) {
			unsigned n = q * (PER / 4) + i / 4;
			struct ffe_blk_dwz_seg seg[16];

			switch (i % 4) {
			case 0:
				batch_add(b[q], FFE_BLK_T_FLUSH, 0, NULL, 0, 0, 0, 0);
				break;
			case 1:
				for (unsigned k = 0; k < 16; k++)
					seg[k] = (struct ffe_blk_dwz_seg){
						40 * MiB / SECT + ((uint64_t)n * 16 + k) * 16, 8, 0 };
				batch_add(b[q], FFE_BLK_T_DISCARD, 0, seg, sizeof(seg), 0, 0, 0);
				break;
			case 2:
				for (unsigned k = 0; k < 4; k++)
					seg[k] = (struct ffe_blk_dwz_seg){
						56 * MiB / SECT + ((uint64_t)n * 4 + k) * 8, 8,
						k % 2 ? FFE_BLK_WZ_UNMAP : 0 };
				batch_add(b[q], FFE_BLK_T_WRITE_ZEROES, 0, seg, 4 * sizeof(seg[0]), 0,
					  0, 0);
				break;
			case 3:
				batch_add(b[q], FFE_BLK_T_GET_ID, 0, NULL, 0, FFE_BLK_ID_BYTES, 1, 0);
				break;
			}
		}
		batch_post(b[q]);
	}
	batches_run(b, NQ, 30000);
	for (unsigned q = 0; q < NQ; q++) {
		batch_check(b[q], "pressure flush/discard/write-zeroes/get-id");
		batch_free(b[q]);
	}

	/* every slot is in the file on the host */
	all = malloc(NQ * PER * SLOT_SECTORS * SECT);
	{
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		size_t len = NQ * PER * SLOT_SECTORS * SECT;

		cr_assert_eq(pread(fd, all, len, 0), (ssize_t)len);
		close(fd);
	}
	for (unsigned slot = 0; slot < NQ * PER; slot++) {
		char w[64];

		snprintf(w, sizeof(w), "host pread of slot %u", slot);
		fx_check_pattern(all + (size_t)slot * SLOT_SECTORS * SECT, 4096 * (1 + slot % PER % 4),
			      1000 + slot, w);
	}
	free(all);
	fx_read_check(&fe->vq[0], 56 * MiB / SECT, 64 * KiB, 0, NULL, "written-zeroes area");

	st = stats_of(d);
	cr_log_info("stats: reads %" PRIu64 " writes %" PRIu64 " flushes %" PRIu64 " discards %"
		    PRIu64 " write_zeroes %" PRIu64 " get_ids %" PRIu64 " errors %" PRIu64
		    " inflight %" PRIu64, st.reads, st.writes, st.flushes, st.discards,
		    st.write_zeroes, st.get_ids, st.errors, st.inflight);
	cr_expect_eq(st.writes, NQ * PER);
	cr_expect_eq(st.reads, NQ * PER + 1);
	cr_expect_eq(st.flushes, NQ * PER / 4);
	cr_expect_eq(st.discards, NQ * PER / 4);
	cr_expect_eq(st.write_zeroes, NQ * PER / 4);
	cr_expect_eq(st.get_ids, NQ * PER / 4);
	cr_expect_eq(st.errors, 0);
	cr_expect_eq(st.inflight, 0);
}

Test(pressure, out_of_order_completions_match_posted_heads)
{
	enum { N = 200, AREA = 4 * MiB };
	struct vdev_params p;
	struct ffe_opts o;
	char path[200];
	struct ffe *fe;
	uint8_t *buf;
	unsigned d, total = 0, round;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/ooo.img", fx.dir);
	file_params(&p, path, 64 * MiB, 512, 1);
	d = fx_add("vbooo", &p);
	ffe_opts_init(&o);
	o.mem_size = 128 * MiB;
	o.scratch_per_queue = 64 * MiB;
	fe = fe_ready(d, 1, 256, &o);
	buf = malloc(AREA);
	ffe_pattern(buf, AREA, 500);
	for (unsigned i = 0; i < AREA / MiB; i++)
		fx_write_ok(&fe->vq[0], i * MiB / SECT, buf + i * MiB, MiB, NULL);
	free(buf);

	for (round = 0; round < 6 && (round < 2 || total == 0); round++) {
		struct batch *b = batch_new(&fe->vq[0]);
		unsigned inv;

		for (unsigned i = 0; i < N; i++) {
			unsigned slot = i / 10;
			struct ffe_blk_dwz_seg seg;

			switch (i % 10) {
			case 0:
				batch_add(b, FFE_BLK_T_FLUSH, 0, NULL, 0, 0, 0, 0);
				break;
			case 1:
				batch_add_write(b, (32 * MiB + slot * 256 * KiB) / SECT, 256 * KiB,
						5000 + round * 100 + slot);
				break;
			case 2:
				seg = (struct ffe_blk_dwz_seg){ (48 * MiB + slot * 64 * KiB) / SECT,
								128, 0 };
				batch_add(b, FFE_BLK_T_WRITE_ZEROES, 0, &seg, sizeof(seg), 0, 0, 0);
				break;
			case 3:
				seg = (struct ffe_blk_dwz_seg){ (52 * MiB + slot * 64 * KiB) / SECT,
								128, 0 };
				batch_add(b, FFE_BLK_T_DISCARD, 0, &seg, sizeof(seg), 0, 0, 0);
				break;
			default: {
				uint64_t off = (uint64_t)((i * 37 + round * 11) % 1000) * 4096;

				batch_add(b, FFE_BLK_T_IN, off / SECT, NULL, 0, 4096 * (1 + i % 4),
					  500, off);
				break;
			}
			}
		}
		batch_post(b);
		batches_run(&b, 1, 30000);
		inv = batch_check(b, "mixed batch");
		cr_log_info("round %u: %u of %u completions out of posting order", round, inv, N);
		total += inv;
		batch_free(b);
	}
	for (unsigned slot = 0; slot < N / 10; slot++)
		host_check(path, 32 * MiB + slot * 256 * KiB, 256 * KiB,
			   5000 + (round - 1) * 100 + slot, "write of the last mixed round");
	cr_expect_gt(total, 0, "in %u rounds of %u mixed requests no completion ever came out "
		     "of order: this test did not exercise what it should", round, N);
}

Test(pressure, worker_jobs_complete_once)
{
	enum { NQ = 2, PER = 128 };
	struct vdev_params p;
	struct vdev_stats st;
	struct batch *b[NQ];
	char path[200];
	struct ffe *fe;
	unsigned d;

	core_up(1, 16);
	shm_dir();
	/* tmpfs has no FALLOC_FL_ZERO_RANGE: every WRITE_ZEROES is a worker job */
	snprintf(path, sizeof(path), "%s/jobs.img", bx.shm);
	file_params(&p, path, 32 * MiB, 512, NQ);
	d = fx_add("vbjobs", &p);
	fe = fe_ready(d, NQ, 256, NULL);
	for (unsigned q = 0; q < NQ; q++)
		for (unsigned i = 0; i < PER; i += 2)
			fx_write_pattern(&fe->vq[q], 16 * MiB / SECT + (uint64_t)(q * PER + i) * 8, 4096,
				  1, NULL);
	for (unsigned q = 0; q < NQ; q++) {
		b[q] = batch_new(&fe->vq[q]);
		for (unsigned i = 0; i < PER; i++) {
			unsigned slot = q * PER + i;

			if (i % 2 == 0) {
				struct ffe_blk_dwz_seg seg = {
					16 * MiB / SECT + (uint64_t)slot * 8, 8,
					i % 4 ? FFE_BLK_WZ_UNMAP : 0 };

				batch_add(b[q], FFE_BLK_T_WRITE_ZEROES, 0, &seg, sizeof(seg), 0, 0, 0);
			} else {
				batch_add_write(b[q], (uint64_t)slot * SLOT_SECTORS, 4096, 3000 + slot);
			}
		}
		batch_post(b[q]);
	}
	batches_run(b, NQ, 5000);
	for (unsigned q = 0; q < NQ; q++) {
		batch_check(b[q], "worker jobs mixed with writes");
		batch_free(b[q]);
	}
	for (unsigned slot = 0; slot < NQ * PER; slot += 2)
		host_check(path, 16 * MiB + (uint64_t)slot * 4096, 4096, 0, "WRITE_ZEROES job");
	for (unsigned slot = 1; slot < NQ * PER; slot += 2)
		host_check(path, (uint64_t)slot * SLOT_SECTORS * SECT, 4096, 3000 + slot,
			   "write among worker jobs");
	st = stats_of(d);
	cr_expect_eq(st.write_zeroes, NQ * PER / 2);
	cr_expect_eq(st.errors, 0);
	cr_expect_eq(st.inflight, 0);
}

/* ---- fault injection: a filesystem that fills up --------------------------- */

Test(fault, full_filesystem_gives_ioerr_and_keeps_serving)
{
	enum { CHUNK = 64 * KiB, NCHUNK = 32 };
	struct vdev_params p;
	struct vdev_stats st0, st;
	char path[260];
	struct ffe *fe;
	int first_fail = -1, nfail = 0;
	unsigned d;
	int s;

	core_up(1, 0);
	mount_tmpfs("size=1M,mode=0700");
	snprintf(path, sizeof(path), "%s/full.img", bx.mnt);
	file_params(&p, path, 64 * MiB, 512, 1);
	d = fx_add("vbfull", &p);
	fe = fe_ready(d, 1, 128, NULL);
	st0 = stats_of(d);
	cr_log_info("64 MiB device on a 1 MiB tmpfs: %s", st0.detail);

	for (unsigned i = 0; i < NCHUNK; i++) {
		uint8_t *w = malloc(CHUNK);

		ffe_pattern(w, CHUNK, 600 + i);
		s = ffe_blk_write(&fe->vq[0], (uint64_t)i * CHUNK / SECT, w, CHUNK, NULL);
		free(w);
		cr_assert(s == FFE_BLK_S_OK || s == FFE_BLK_S_IOERR, "write %u of 64 KiB onto a "
			  "full tmpfs: status %d %s (expected OK or IOERR, no hang)", i, s,
			  s < 0 ? fe->err : "");
		if (s == FFE_BLK_S_IOERR) {
			nfail++;
			if (first_fail < 0)
				first_fail = (int)i;
		}
	}
	cr_log_info("first failing write: %d of %d; %d failed", first_fail, NCHUNK, nfail);
	cr_assert_geq(first_fail, 0, "%d writes of 64 KiB onto a 1 MiB tmpfs all succeeded",
		      NCHUNK);
	cr_assert_geq(first_fail, 4, "write %d failed although the tmpfs had room", first_fail);
	cr_expect_eq(vdev_get_state(fx.dev[d]), VDEV_CONNECTED, "state after ENOSPC: %s",
		     vdev_state_name(vdev_get_state(fx.dev[d])));
	st = stats_of(d);
	cr_expect_geq(st.errors, st0.errors + nfail, "stats.errors %" PRIu64 " -> %" PRIu64
		      " after %d failed writes", st0.errors, st.errors, nfail);

	/* the device keeps serving: reads of what fitted, flush */
	for (int i = 0; i < first_fail; i++)
		fx_read_check(&fe->vq[0], (uint64_t)i * CHUNK / SECT, CHUNK, 600 + i, NULL,
			   "data written before the filesystem filled up");
	/* freeing space (DISCARD punches tmpfs holes) lets writes succeed again */
	s = ffe_blk_discard(&fe->vq[0], 0, (uint32_t)(first_fail * CHUNK / SECT));
	cr_expect_eq(s, FFE_BLK_S_OK, "DISCARD on the full tmpfs: status %d", s);
	if (s == FFE_BLK_S_OK) {
		fx_write_pattern(&fe->vq[0], (uint64_t)first_fail * CHUNK / SECT, CHUNK, 700, NULL);
		fx_read_check(&fe->vq[0], (uint64_t)first_fail * CHUNK / SECT, CHUNK, 700, NULL,
			   "write after space was freed");
	}
}

Test(fault, file_truncated_underneath)
{
	struct vdev_params p;
	struct vdev_stats st0, st;
	char path[200];
	struct ffe *fe;
	uint8_t *r = malloc(64 * KiB);
	unsigned d;
	int s;

	core_up(1, 0);
	snprintf(path, sizeof(path), "%s/trunc.img", fx.dir);
	mkfile(path, 16 * MiB);
	file_params(&p, path, 0, 512, 1);
	d = fx_add("vbtrunc", &p);
	fe = fe_ready(d, 1, 128, NULL);
	fx_write_pattern(&fe->vq[0], 12 * MiB / SECT, 64 * KiB, 911, NULL);
	fx_write_pattern(&fe->vq[0], 0, 64 * KiB, 912, NULL);
	flush_ok(&fe->vq[0]);
	st0 = stats_of(d);
	cr_assert_eq(truncate(path, 8 * MiB), 0);

	/* past the new end of file: an error or zeros, never OK with stale
	 * bytes, never a hang */
	memset(r, 0x5c, 64 * KiB);
	s = ffe_blk_read(&fe->vq[0], 12 * MiB / SECT, r, 64 * KiB, NULL);
	cr_assert(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_OK, "IN past the end of a truncated "
		  "file: status %d %s", s, s < 0 ? fe->err : "");
	if (s == FFE_BLK_S_OK)
		fx_check_zero(r, 64 * KiB, "IN past the end of a truncated file, status OK");
	memset(r, 0x5c, 64 * KiB);
	s = ffe_blk_read(&fe->vq[0], 8 * MiB / SECT - 8, r, 8192, NULL);
	cr_assert(s == FFE_BLK_S_IOERR || s == FFE_BLK_S_OK, "IN across the end of a truncated "
		  "file: status %d", s);
	if (s == FFE_BLK_S_OK)
		fx_check_zero(r, 8192, "IN across the end of a truncated file, status OK");
	cr_log_info("reads past the end of a truncated file: status %d", s);
	st = stats_of(d);
	if (s == FFE_BLK_S_IOERR)
		cr_expect_geq(st.errors, st0.errors + 2);
	fx_read_check(&fe->vq[0], 0, 64 * KiB, 912, NULL, "start of a truncated file");
	free(r);
}

/* ---- hot-unplug -------------------------------------------------------------- */

Test(hotplug, loop_device_removed_under_a_connected_front_end)
{
	struct vdev_params p;
	struct vdev_stats st0, st;
	char err[VDEV_ERR_MAX], out[256] = "", ev[128];
	struct ffe *fea, *feb;
	unsigned l, a, b;
	int64_t t0;
	int s, r;

	core_up(2, 0);
	l = loop_new("hp.img", 32 * MiB, 0);
	a = loop_dev("vbhpA", l, 0, 512, 1);
	vdev_params_init(&p);
	p.size = 8 * MiB;
	p.queues = 1;
	b = fx_add("vbhpB", &p);
	{
		struct ffe_opts o;

		ffe_opts_init(&o);
		o.extra_protocol_features = FFE_BIT(FFE_PF_STATUS);
		fea = fe_ready(a, 1, 128, &o);
	}
	feb = fe_ready(b, 1, 128, NULL);
	cr_assert(fea->protocol_features & FFE_BIT(FFE_PF_STATUS));
	cr_assert_eq(ffe_set_status(fea, FFE_STATUS_ACKNOWLEDGE | FFE_STATUS_DRIVER |
				     FFE_STATUS_FEATURES_OK | FFE_STATUS_DRIVER_OK), 0, "%s", fea->err);
	fx_write_pattern(&fea->vq[0], 0, 64 * KiB, 801, NULL);
	fx_read_check(&fea->vq[0], 0, 64 * KiB, 801, NULL, "A before unplug");
	fx_write_pattern(&feb->vq[0], 0, 64 * KiB, 802, NULL);
	cr_assert_eq(vdev_get_state(fx.dev[a]), VDEV_CONNECTED);
	st0 = stats_of(a);

	r = sh(out, sizeof(out), "losetup -d %s 2>&1", loopdev(l));
	cr_assert_eq(r, 0, "losetup -d %s: %s", loopdev(l), out);
	snprintf(ev, sizeof(ev), "/sys/block/%s/uevent", loopdev(l) + 5);
	r = sh(out, sizeof(out), "echo remove > %s 2>&1", ev);
	cr_assert_eq(r, 0, "echo remove > %s: %s", ev, out);
	t0 = ffe_now_ms();
	cr_assert(fx_wait_state(a, VDEV_ERROR, 2000), "%s is still '%s' 2 s after the remove event "
		  "of its backing %s", fx.name[a], vdev_state_name(vdev_get_state(fx.dev[a])),
		  loopdev(l));
	cr_log_info("state error %" PRId64 " ms after the remove event", ffe_now_ms() - t0);
	vdev_last_error(fx.dev[a], err, sizeof(err));
	cr_log_info("error: %s", err);
	cr_expect(strstr(err, loopdev(l)) != NULL, "error sentence does not name %s: '%s'",
		  loopdev(l), err);

	/* new requests fail at once, no hang */
	{
		uint8_t r512[512], w512[512];

		memset(w512, 0x11, sizeof(w512));
		s = ffe_blk_read(&fea->vq[0], 0, r512, sizeof(r512), NULL);
		cr_expect_eq(s, FFE_BLK_S_IOERR, "IN on an unplugged backing: status %d %s", s,
			     s < 0 ? fea->err : "");
		s = ffe_blk_write(&fea->vq[0], 8, w512, sizeof(w512), NULL);
		cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT on an unplugged backing: status %d %s", s,
			     s < 0 ? fea->err : "");
		s = ffe_blk_flush(&fea->vq[0]);
		cr_expect_eq(s, FFE_BLK_S_IOERR, "FLUSH on an unplugged backing: status %d %s", s,
			     s < 0 ? fea->err : "");
	}
	st = stats_of(a);
	cr_expect_geq(st.errors, st0.errors + 3, "errors %" PRIu64 " -> %" PRIu64, st0.errors,
		      st.errors);
	{
		/* the driver is told to reset the device (virtio DEVICE_NEEDS_RESET) */
		uint8_t vs = 0;

		cr_expect_eq(ffe_get_status(fea, &vs), 0, "%s", fea->err);
		cr_expect_eq(vs, FFE_STATUS_ACKNOWLEDGE | FFE_STATUS_DRIVER | FFE_STATUS_FEATURES_OK |
			     FFE_STATUS_DRIVER_OK | FFE_STATUS_NEEDS_RESET,
			     "GET_STATUS with the backing gone: 0x%02x", vs);
	}

	/* the other device is untouched */
	cr_expect_eq(vdev_get_state(fx.dev[b]), VDEV_CONNECTED);
	fx_read_check(&feb->vq[0], 0, 64 * KiB, 802, NULL, "B after A's backing went away");
	fx_write_pattern(&feb->vq[0], 256, 64 * KiB, 803, NULL);
	fx_read_check(&feb->vq[0], 256, 64 * KiB, 803, NULL, "B after A's backing went away");

	/* A stays in error without its front-end; destroying it lets the loop go */
	fx_close_wait(a, fea, VDEV_ERROR);
	fx_drop(a);
	t0 = ffe_now_ms();
	while (loop_is_ours(l) && ffe_now_ms() - t0 < 3000)
		usleep(10000);
	cr_expect(!loop_is_ours(l), "%s still attached to its file 3 s after vdev_destroy: "
		  "the backend kept it open", loopdev(l));
	if (!loop_is_ours(l))
		bx.loop[l][0] = '\0';
	fx_read_check(&feb->vq[0], 256, 64 * KiB, 803, NULL, "B after A was destroyed");
}

/* ---- online resize (a front-end connected) ------------------------------------ */

/* A front-end with the back-end channel (BACKEND_REQ), kept for the teardown. */
static struct ffe *fe_live(unsigned dev, unsigned nq)
{
	struct ffe_opts o;
	struct ffe *fe;

	ffe_opts_init(&o);
	o.extra_protocol_features = FFE_BIT(FFE_PF_BACKEND_REQ);
	fe = fe_ready(dev, nq, 128, &o);
	cr_assert_geq(fe->backend_fd, 0, "no back-end channel (protocol features 0x%" PRIx64 ")",
		      fe->dev_protocol_features);
	return fe;
}

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

/* A CONFIG_CHANGE_MSG within ms (1), or nothing (0). */
static int config_change(struct ffe *fe, int ms, const char *after)
{
	struct ffe_msg *m = malloc(sizeof(*m));
	int r = ffe_backend_recv(fe, m, ms);

	if (r == 0) {
		cr_expect(m->hdr.request == FFE_BACKEND_CONFIG_CHANGE_MSG &&
			  m->hdr.flags == FFE_FLAG_VERSION && m->hdr.size == 0,
			  "after %s: back-end request %u flags 0x%x size %u, expected "
			  "CONFIG_CHANGE_MSG", after, m->hdr.request, m->hdr.flags, m->hdr.size);
		ffe_msg_close_fds(m);
	} else {
		cr_expect_eq(r, -ETIMEDOUT, "after %s: back-end channel: %s", after, strerror(-r));
	}
	free(m);
	return r == 0;
}

static void expect_ioerr_at(struct ffe_vq *vq, uint64_t sector, const char *what)
{
	uint8_t b[4096];
	int s;

	ffe_pattern(b, sizeof(b), sector);
	s = ffe_blk_write(vq, sector, b, sizeof(b), NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "OUT at sector %" PRIu64 " (%s): status %d", sector, what, s);
	s = ffe_blk_read(vq, sector, b, sizeof(b), NULL);
	cr_expect_eq(s, FFE_BLK_S_IOERR, "IN at sector %" PRIu64 " (%s): status %d", sector, what, s);
}

Test(file, resize_while_connected)
{
	char path[200], err[VDEV_ERR_MAX];
	struct vdev_params p;
	struct ffe *fe;
	unsigned d;
	int r;

	core_up(2, 0);
	snprintf(path, sizeof(path), "%s/resize.img", fx.dir);
	mkfile(path, 16 * MiB);
	file_params(&p, path, 16 * MiB, 512, 2);
	d = fx_add("vbrsz", &p);
	fe = fe_live(d, 2);
	cr_assert_eq(capacity(fe), 16 * MiB / SECT);
	fx_write_pattern(&fe->vq[0], MiB / SECT, 64 * KiB, 1101, NULL);

	/* grow: the file follows, the guest is told, the new range works */
	resize_ok(d, 32 * MiB, false);
	cr_expect(config_change(fe, 3000, "a grow"), "no CONFIG_CHANGE_MSG after a grow");
	cr_expect_eq(capacity(fe), 32 * MiB / SECT);
	cr_expect_geq(stat_of(path).st_size, (off_t)(32 * MiB), "the file did not grow");
	fx_write_pattern(&fe->vq[1], 24 * MiB / SECT, 64 * KiB, 1102, NULL);   /* right after: same rings */
	fx_read_check(&fe->vq[0], 24 * MiB / SECT, 64 * KiB, 1102, NULL, "past the old end");
	flush_ok(&fe->vq[1]);
	host_check(path, 24 * MiB, 64 * KiB, 1102, "written past the old end");
	fx_rw_verify(&fe->vq[1], 16 * MiB / SECT - 8, 8192, 1103, NULL);       /* across the old end */
	expect_ioerr_at(&fe->vq[0], 32 * MiB / SECT, "past the new end");

	/* shrink over a hole: accepted */
	resize_ok(d, 28 * MiB, false);
	cr_expect(config_change(fe, 3000, "a shrink over a hole"), "no CONFIG_CHANGE_MSG");
	cr_expect_eq(capacity(fe), 28 * MiB / SECT);
	expect_ioerr_at(&fe->vq[1], 28 * MiB / SECT, "past the shrunk end");

	/* shrink over data (24 MiB): refused, then chosen */
	r = set_size(d, 20 * MiB, false, err);
	cr_log_info("shrink over data: %s", err);
	cr_expect_eq(r, -EBUSY, "shrink of a file over data: %d (%s)", r, err);
	cr_expect(strstr(err, "allow_shrink") != NULL, "the reason does not say how: '%s'", err);
	cr_expect(!config_change(fe, 300, "a refused shrink"), "CONFIG_CHANGE_MSG after a refused shrink");
	cr_expect_eq(capacity(fe), 28 * MiB / SECT);
	fx_read_check(&fe->vq[0], 24 * MiB / SECT, 64 * KiB, 1102, NULL, "after a refused shrink");
	resize_ok(d, 20 * MiB, true);
	cr_expect(config_change(fe, 3000, "a shrink with allow_shrink"), "no CONFIG_CHANGE_MSG");
	cr_expect_eq(capacity(fe), 20 * MiB / SECT);
	expect_ioerr_at(&fe->vq[0], 24 * MiB / SECT, "where the cut data was");
	fx_read_check(&fe->vq[1], MiB / SECT, 64 * KiB, 1101, NULL, "data below every new end");

	/* anything else: EBUSY */
	vdev_get_params(fx.dev[d], &p);
	p.queues = 1;
	r = vdev_set_params(fx.dev[d], &p, err, sizeof(err));
	cr_expect_eq(r, -EBUSY, "queues changed while connected: %d (%s)", r, err);
	fx_rw_verify(&fe->vq[1], 4 * MiB / SECT, 16 * KiB, 1104, NULL);
	cr_expect_eq(vdev_get_state(fx.dev[d]), VDEV_CONNECTED);
}

/* Grow the loop device's file and tell the loop driver (LOOP_SET_CAPACITY):
 * the kernel then sends a change event for the disk. */
static void loop_grow(unsigned l, uint64_t size)
{
	char out[256] = "";
	int r;

	r = truncate(bx.loopfile[l], (off_t)size);
	cr_assert_eq(r, 0, "truncate %s: %s", bx.loopfile[l], strerror(errno));
	r = sh(out, sizeof(out), "losetup -c %s 2>&1", loopdev(l));
	cr_assert_eq(r, 0, "losetup -c %s: %s", loopdev(l), out);
	cr_assert_eq((uint64_t)sysfs_uint(l, "size"), size / SECT, "%s did not grow", loopdev(l));
}

Test(loop, resize_while_connected)
{
	char err[VDEV_ERR_MAX];
	struct vdev_params p;
	struct ffe *fe;
	unsigned l, d;
	int64_t t0;
	int r;

	core_up(2, 0);
	l = loop_new("resize.img", 16 * MiB, 0);
	d = loop_dev("vbrszl", l, 0, 512, 2);           /* no size: the device's, followed */
	fe = fe_live(d, 2);
	cr_assert_eq(capacity(fe), 16 * MiB / SECT);
	fx_write_pattern(&fe->vq[0], MiB / SECT, 64 * KiB, 1201, NULL);

	/* a size the device does not have: refused, nothing changes (and the
	 * controller still follows its device) */
	r = set_size(d, 32 * MiB, false, err);
	cr_log_info("grow past the block device: %d (%s)", r, err);
	cr_expect_lt(r, 0, "growing a controller past its block device (16 MiB) to 32 MiB: accepted");
	cr_expect(!config_change(fe, 300, "a refused grow"), "CONFIG_CHANGE_MSG after a refused grow");
	cr_expect_eq(capacity(fe), 16 * MiB / SECT);

	/* the device grows underneath: the udev change event is followed */
	t0 = ffe_now_ms();
	loop_grow(l, 32 * MiB);
	cr_expect(config_change(fe, 5000, "the loop device grew"),
		  "no CONFIG_CHANGE_MSG within 5 s of %s growing to 32 MiB", loopdev(l));
	cr_log_info("grown device announced %" PRId64 " ms after losetup -c", ffe_now_ms() - t0);
	cr_expect_eq(capacity(fe), 32 * MiB / SECT, "capacity after the loop device grew");
	vdev_get_params(fx.dev[d], &p);
	cr_expect_eq(p.size, 32 * MiB);
	fx_write_pattern(&fe->vq[1], 24 * MiB / SECT, 64 * KiB, 1202, NULL);
	fx_read_check(&fe->vq[0], 24 * MiB / SECT, 64 * KiB, 1202, NULL, "past the old end");
	flush_ok(&fe->vq[1]);
	host_check(loopdev(l), 24 * MiB, 64 * KiB, 1202, "written past the old end");
	expect_ioerr_at(&fe->vq[0], 32 * MiB / SECT, "past the new end");

	/* a block device cannot tell where its data is: any shrink needs the choice */
	r = set_size(d, 24 * MiB, false, err);
	cr_log_info("shrink of a block device: %s", err);
	cr_expect_eq(r, -EBUSY, "shrink of a block device without allow_shrink: %d (%s)", r, err);
	cr_expect(strstr(err, "allow_shrink") != NULL, "the reason does not say how: '%s'", err);
	cr_expect(!config_change(fe, 300, "a refused shrink"), "CONFIG_CHANGE_MSG after a refused shrink");
	resize_ok(d, 24 * MiB, true);
	cr_expect(config_change(fe, 3000, "a shrink with allow_shrink"), "no CONFIG_CHANGE_MSG");
	cr_expect_eq(capacity(fe), 24 * MiB / SECT);
	expect_ioerr_at(&fe->vq[1], 28 * MiB / SECT, "past the shrunk end");
	fx_read_check(&fe->vq[0], MiB / SECT, 64 * KiB, 1201, NULL, "data below every new end");

	/* set by hand now: the device growing again is not followed... */
	loop_grow(l, 48 * MiB);
	cr_expect(!config_change(fe, 1000, "a grow of a device whose size was set by hand"),
		  "a controller sized by hand followed its device");
	cr_expect_eq(capacity(fe), 24 * MiB / SECT);
	/* ...but the device's room can be taken by hand */
	resize_ok(d, 40 * MiB, false);
	cr_expect(config_change(fe, 3000, "a grow by hand"), "no CONFIG_CHANGE_MSG");
	cr_expect_eq(capacity(fe), 40 * MiB / SECT);
	fx_rw_verify(&fe->vq[1], 36 * MiB / SECT, 64 * KiB, 1203, NULL);
	host_check(loopdev(l), 36 * MiB, 64 * KiB, 1203, "written near the new end");
	cr_expect_eq(vdev_get_state(fx.dev[d]), VDEV_CONNECTED);
}

Test(loop, grown_without_a_front_end_is_followed)
{
	struct vdev_params p;
	struct ffe *fe;
	struct ffe_deadline dl;
	unsigned l, d;

	core_up(1, 0);
	l = loop_new("grow-idle.img", 16 * MiB, 0);
	d = loop_dev("vbgrowi", l, 0, 512, 1);
	fe = fe_ready(d, 1, 128, NULL);
	fx_write_pattern(&fe->vq[0], 8 * MiB / SECT, 64 * KiB, 1301, NULL);
	fx_close_wait(d, fe, VDEV_LISTENING);

	loop_grow(l, 32 * MiB);
	ffe_deadline_start(&dl, 5000);
	do
		vdev_get_params(fx.dev[d], &p);
	while (p.size != 32 * MiB && ffe_deadline_left(&dl) && usleep(10000) == 0);
	cr_expect_eq(p.size, 32 * MiB, "size 5 s after %s grew to 32 MiB with no front-end: %" PRIu64,
		     loopdev(l), p.size);
	fe = fe_ready(d, 1, 128, NULL);
	cr_expect_eq(fe->cfg.capacity, 32 * MiB / SECT, "capacity seen by the next front-end");
	fx_rw_verify(&fe->vq[0], 24 * MiB / SECT, 64 * KiB, 1302, NULL);
	fx_read_check(&fe->vq[0], 8 * MiB / SECT, 64 * KiB, 1301, NULL, "data before the grow");
	host_check(loopdev(l), 24 * MiB, 64 * KiB, 1302, "written past the old end");
}

/* Memory hot-plug with requests really in flight on the io_uring: a region
 * that holds none of their buffers goes away meanwhile; they complete and
 * their data is on the disk. */
Test(file, requests_in_flight_across_rem_mem_reg)
{
	enum { NQ = 2, PER = 32, LEN = 64 * 1024 };
	char path[200];
	struct vdev_params p;
	struct ffe_opts o;
	struct ffe_blk_io *io = calloc(NQ * PER, sizeof(*io));
	uint8_t *w = malloc(LEN);
	struct ffe *fe;
	int r1, r2;
	unsigned d;

	core_up(2, 0);
	snprintf(path, sizeof(path), "%s/slots.img", fx.dir);
	mkfile(path, 64 * MiB);
	file_params(&p, path, 64 * MiB, 512, NQ);
	d = fx_add("vbslot", &p);
	ffe_opts_init(&o);
	o.translate = true;
	o.extra_protocol_features = FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS);
	fe = fe_ready(d, NQ, 128, &o);
	cr_assert(fe->protocol_features & FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS));
	r1 = ffe_region_new(fe, 0, 8 * MiB);
	r2 = ffe_region_new(fe, 0, 2 * MiB);
	cr_assert(r1 >= 0 && r2 >= 0);
	cr_assert_eq(ffe_add_mem_reg(fe, (unsigned)r1), 0, "%s", fe->err);
	cr_assert_eq(ffe_add_mem_reg(fe, (unsigned)r2), 0, "%s", fe->err);
	for (unsigned q = 0; q < NQ; q++)
		cr_assert_eq(ffe_vq_scratch_region(&fe->vq[q], r1, 4 * MiB), 0);
	for (unsigned k = 0; k < NQ * PER; k++) {
		ffe_pattern(w, LEN, 1400 + k);
		cr_assert_eq(ffe_blk_prep(&io[k], FFE_BLK_T_OUT, (uint64_t)k * (LEN / SECT), w, LEN, 0,
					  NULL), 0);
		cr_assert_eq(ffe_submit(&fe->vq[k % NQ], &io[k].req), 0);
	}
	for (unsigned q = 0; q < NQ; q++)
		ffe_kick(&fe->vq[q]);
	/* at once: most of them are on the io_uring now */
	cr_assert_eq(ffe_rem_mem_reg(fe, (unsigned)r2, true), 0, "%s", fe->err);
	for (unsigned k = 0; k < NQ * PER; k++) {
		cr_assert_eq(ffe_wait(&fe->vq[k % NQ], &io[k].req, 10000), 0,
			     "write %u in flight across REM_MEM_REG did not complete", k);
		cr_expect_eq(ffe_blk_status(&io[k]), FFE_BLK_S_OK, "write %u: status %d", k,
			     ffe_blk_status(&io[k]));
		ffe_blk_io_release(&fe->vq[k % NQ], &io[k]);
	}
	free(io);
	free(w);
	for (unsigned q = 0; q < NQ; q++)
		ffe_vq_scratch_region(&fe->vq[q], -1, 0);
	flush_ok(&fe->vq[0]);
	for (unsigned k = 0; k < NQ * PER; k += 7)
		host_check(path, (uint64_t)k * LEN, LEN, 1400 + k, "written across REM_MEM_REG");
	fx_rw_verify(&fe->vq[1], 60 * MiB / SECT, 64 * KiB, 1499, NULL);
}

/* ---- runner: safety net and exit status ---------------------------------------- */

/* loop devices, mounts and udev events: one test at a time */
unsigned crmain_jobs = 1;
/* Release what a crashed or timed-out test of this run left behind. */
void crmain_cleanup(void)
{
	char pre[128], shm[128], line[512];
	glob_t g;
	FILE *f;

	snprintf(pre, sizeof(pre), "/var/tmp/vhostd-be-%s-", crmain_run_id());
	snprintf(shm, sizeof(shm), "/dev/shm/vhostd-be-%s-", crmain_run_id());
	if (glob("/sys/block/loop*/loop/backing_file", 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			char name[64];

			f = fopen(g.gl_pathv[i], "r");
			if (!f)
				continue;
			if (fgets(line, sizeof(line), f) && strncmp(line, pre, strlen(pre)) == 0 &&
			    sscanf(g.gl_pathv[i], "/sys/block/%63[^/]", name) == 1)
				sh(NULL, 0, "losetup -d /dev/%s 2>/dev/null", name);
			fclose(f);
		}
		globfree(&g);
	}
	f = fopen("/proc/mounts", "r");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char dev[256], mnt[256];

			if (sscanf(line, "%255s %255s", dev, mnt) == 2 &&
			    strncmp(mnt, pre, strlen(pre)) == 0)
				sh(NULL, 0, "umount -l '%s' 2>/dev/null", mnt);
		}
		fclose(f);
	}
	sh(NULL, 0, "rm -rf %s* %s* 2>/dev/null", pre, shm);
}

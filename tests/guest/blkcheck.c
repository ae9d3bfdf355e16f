/* blkcheck: data-integrity checker for a block device, run inside the test
 * guest (statically linked) and, for persistence checks, on the host.
 *
 *   blkcheck fullcheck DEV [SEED]
 *       O_DIRECT write of a deterministic pattern over the whole device,
 *       fsync, then O_DIRECT read-back and compare.
 *   blkcheck randverify DEV THREADS DURATION [SEED]
 *       THREADS threads doing random O_DIRECT writes/reads of 1..16 blocks
 *       (block = max(4 KiB, logical block size)).  The device is cut into
 *       stripes of 16 blocks; stripe s belongs to thread s % THREADS, which
 *       keeps a shadow generation per block, verifies reads against it at
 *       random, read-back-verifies some writes immediately, and verifies
 *       every block it wrote at the end.  DURATION: `10`/`10s` (seconds) or
 *       `5000ops` (total operations over all threads).  It also reports the
 *       latency of every read, write and fdatasync the guest issued during
 *       the run (final pass included): max_lat_ms (and when that I/O
 *       started, max_lat_at_s, seconds from the start) and p99_lat_ms, so a
 *       test that restarts the back-end under the guest can say how long the
 *       guest's I/O paused.
 *       Environment (all optional):
 *         BLKCHECK_PROGRESS=SEC  a `BLKCHECK progress` line every SEC
 *           seconds while it runs: counts so far, failures so far and the
 *           longest I/O of that interval (a pause of the device shows there)
 *         BLKCHECK_STOP=PATH     end the run (final pass included) as soon
 *           as PATH exists: a workload that runs until it is told to stop
 *           (DURATION is then the limit)
 *         BLKCHECK_KEEP_GOING=1  a failed check or I/O does not end the
 *           run: every failure is counted (errors=N in the progress and
 *           final lines) and the first 200 are described; the block in
 *           question is not checked again until it is written again
 *       With BLKCHECK_PHYS_ABOVE=ADDR in the environment (root: it reads
 *       /proc/self/pagemap), each thread looks up the guest-physical pages
 *       of its I/O buffers at the end and the OK line adds
 *       bufpages_above=N/M (N of its M buffer pages lie at or above ADDR,
 *       e.g. in hot-added memory) and buf_phys=LOWEST-HIGHEST.
 *   blkcheck writepattern DEV SEED
 *   blkcheck verifypattern DEV SEED
 *       The two halves of fullcheck, for checks across a restart/on the host.
 *
 * Every 512-byte sector written carries: magic, seed, absolute sector
 * number, generation, and a pseudo-random fill derived from those, so a
 * misplaced, stale, torn or corrupted sector is detected and described.
 *
 * Output: `BLKCHECK <mode> OK ...` and exit 0, or `BLKCHECK FAIL <reason>`
 * (with offsets) and exit 1.  Usage errors exit 2.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECTOR          512u
#define PAT_MAGIC       0x31305441504856ULL     /* "VHPAT01\0" little endian */
#define DEFAULT_SEED    0x5eedULL
#define CHUNK           (1u << 20)              /* fullcheck I/O size */
#define STRIPE_BLOCKS   16u                     /* randverify ownership unit */
#define MAX_REPORTS     8
#define MAX_REPORTS_KG  200                     /* BLKCHECK_KEEP_GOING */

/* Latency histogram, in microseconds: values below 2^LAT_SUB_BITS+1 have a
 * bucket each, larger ones 2^LAT_SUB_BITS buckets per power of two (<= 6.25%
 * relative error), up to 2^40 us (12 days). */
#define LAT_SUB_BITS    4u
#define LAT_SUB         (1u << LAT_SUB_BITS)
#define LAT_MAX_MSB     40u
#define LAT_BUCKETS     (2u * LAT_SUB + (LAT_MAX_MSB - LAT_SUB_BITS) * LAT_SUB)

struct sector_hdr {
	uint64_t magic;
	uint64_t seed;
	uint64_t sector;
	uint64_t gen;
};

static const char *g_dev;
static atomic_int g_failed;
static atomic_int g_reports;
static int g_max_reports = MAX_REPORTS;
static pthread_mutex_t g_out_lock = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g_out_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&g_out_lock);
}

/* First failure prints the FAIL line; later ones are details (capped). */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	atomic_store(&g_failed, 1);
	if (atomic_fetch_add(&g_reports, 1) < g_max_reports)
		out("BLKCHECK FAIL %s\n", buf);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static void fill_sector(uint8_t *p, uint64_t seed, uint64_t sector, uint64_t gen)
{
	struct sector_hdr h = { PAT_MAGIC, seed, sector, gen };
	uint64_t s = mix64(seed ^ mix64(sector ^ mix64(gen + 0x9e3779b97f4a7c15ULL)));
	uint64_t w;

	memcpy(p, &h, sizeof(h));
	for (size_t off = sizeof(h); off < SECTOR; off += 8) {
		/* xorshift64 */
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		w = s;
		memcpy(p + off, &w, 8);
	}
}

static void fill_range(uint8_t *buf, size_t len, uint64_t seed,
		       uint64_t first_sector, const uint32_t *gens,
		       unsigned sectors_per_gen)
{
	for (size_t i = 0; i < len / SECTOR; i++) {
		uint64_t gen = gens ? gens[i / sectors_per_gen] : 0;
		fill_sector(buf + i * SECTOR, seed, first_sector + i, gen);
	}
}

/* Compare one sector against its expected content; describe a mismatch. */
static bool check_sector(const uint8_t *got, uint8_t *scratch, uint64_t seed,
			 uint64_t sector, uint64_t gen, const char *what)
{
	struct sector_hdr h;
	size_t first_diff = 0;

	fill_sector(scratch, seed, sector, gen);
	if (memcmp(got, scratch, SECTOR) == 0)
		return true;
	while (first_diff < SECTOR && got[first_diff] == scratch[first_diff])
		first_diff++;
	memcpy(&h, got, sizeof(h));
	if (h.magic != PAT_MAGIC) {
		bool zero = true;
		for (size_t i = 0; i < SECTOR && zero; i++)
			zero = got[i] == 0;
		fail("%s: %s offset=%" PRIu64 " (sector %" PRIu64 ") expected seed=%#" PRIx64
		     " gen=%" PRIu64 ", found %s (first bytes %02x%02x%02x%02x%02x%02x%02x%02x)",
		     what, g_dev, sector * SECTOR, sector, seed, gen,
		     zero ? "all zeroes" : "no pattern header",
		     got[0], got[1], got[2], got[3], got[4], got[5], got[6], got[7]);
	} else if (h.seed != seed || h.sector != sector || h.gen != gen) {
		fail("%s: %s offset=%" PRIu64 " (sector %" PRIu64 ") expected seed=%#" PRIx64
		     " sector=%" PRIu64 " gen=%" PRIu64 ", found seed=%#" PRIx64
		     " sector=%" PRIu64 " gen=%" PRIu64 "%s",
		     what, g_dev, sector * SECTOR, sector, seed, sector, gen,
		     h.seed, h.sector, h.gen,
		     h.sector != sector ? " (misplaced data)" :
		     h.seed == seed && h.gen < gen ? " (stale data)" : "");
	} else {
		fail("%s: %s offset=%" PRIu64 " (sector %" PRIu64 ") header ok but payload "
		     "differs at byte %zu (corrupted/torn sector)",
		     what, g_dev, sector * SECTOR, sector, first_diff);
	}
	return false;
}

static int open_dev(const char *path, int flags, bool *direct)
{
	int fd = open(path, flags | O_DIRECT | O_CLOEXEC);

	*direct = true;
	if (fd < 0 && errno == EINVAL) {
		/* e.g. a regular file on tmpfs (host-side verify) */
		fd = open(path, flags | O_CLOEXEC);
		*direct = false;
	}
	if (fd < 0)
		fail("open %s: %s", path, strerror(errno));
	return fd;
}

static int dev_geometry(int fd, uint64_t *size, unsigned *lbs)
{
	struct stat st;
	int ssz = 512;

	if (fstat(fd, &st) < 0) {
		fail("fstat %s: %s", g_dev, strerror(errno));
		return -1;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0) {
			fail("BLKGETSIZE64 %s: %s", g_dev, strerror(errno));
			return -1;
		}
		if (ioctl(fd, BLKSSZGET, &ssz) < 0)
			ssz = 512;
	} else {
		*size = (uint64_t)st.st_size;
	}
	*lbs = ssz > 0 ? (unsigned)ssz : 512;
	if (*size == 0 || *size % SECTOR) {
		fail("%s: unusable size %" PRIu64 " bytes", g_dev, *size);
		return -1;
	}
	return 0;
}

static int pio(bool wr, int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? pwrite(fd, (char *)buf + done, len - done, (off_t)(off + done))
			       : pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fail("%s %s offset=%" PRIu64 " len=%zu: %s", wr ? "write" : "read",
			     g_dev, off + done, len - done,
			     n < 0 ? strerror(errno) : "unexpected end of device");
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

static int parse_u64(const char *s, uint64_t *v);

static void *xalloc(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, 65536, len) != 0) {
		fail("out of memory (%zu bytes)", len);
		return NULL;
	}
	memset(p, 0, len);
	return p;
}

static double mib_s(uint64_t bytes, double secs)
{
	return secs > 0 ? (double)bytes / (1024.0 * 1024.0) / secs : 0.0;
}

/* ---- sequential pattern --------------------------------------------- */

static int seq_write(int fd, uint64_t size, uint64_t seed, double *secs)
{
	uint8_t *buf = xalloc(CHUNK);
	double t0 = now_s();
	int rc = 0;

	if (!buf)
		return -1;
	for (uint64_t off = 0; off < size && rc == 0; off += CHUNK) {
		size_t len = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		fill_range(buf, len, seed, off / SECTOR, NULL, 1);
		rc = pio(true, fd, buf, len, off);
	}
	if (rc == 0 && fsync(fd) < 0) {
		fail("fsync %s: %s", g_dev, strerror(errno));
		rc = -1;
	}
	*secs = now_s() - t0;
	free(buf);
	return rc;
}

static int seq_verify(int fd, uint64_t size, uint64_t seed, double *secs)
{
	uint8_t *buf = xalloc(CHUNK), scratch[SECTOR];
	double t0 = now_s();
	int rc = 0;

	if (!buf)
		return -1;
	for (uint64_t off = 0; off < size && rc == 0; off += CHUNK) {
		size_t len = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		if (pio(false, fd, buf, len, off) < 0) {
			rc = -1;
			break;
		}
		for (size_t i = 0; i < len / SECTOR; i++)
			if (!check_sector(buf + i * SECTOR, scratch, seed,
					  off / SECTOR + i, 0, "verify"))
				rc = -1;
	}
	*secs = now_s() - t0;
	free(buf);
	return rc;
}

static int cmd_pattern(const char *mode, bool wr, bool rd, uint64_t seed)
{
	uint64_t size;
	unsigned lbs;
	bool direct;
	double tw = 0, tr = 0;
	int fd = open_dev(g_dev, wr ? O_RDWR : O_RDONLY, &direct);

	if (fd < 0)
		return 1;
	if (dev_geometry(fd, &size, &lbs) < 0 || size % lbs) {
		if (!atomic_load(&g_failed))
			fail("%s: size %" PRIu64 " not a multiple of block size %u",
			     g_dev, size, lbs);
		close(fd);
		return 1;
	}
	if (wr && seq_write(fd, size, seed, &tw) < 0)
		goto bad;
	if (rd && seq_verify(fd, size, seed, &tr) < 0)
		goto bad;
	close(fd);
	out("BLKCHECK %s OK dev=%s bytes=%" PRIu64 " seed=%#" PRIx64 "%s", mode, g_dev,
	    size, seed, direct ? "" : " (buffered)");
	if (wr)
		out(" write_s=%.2f write_MiB/s=%.1f", tw, mib_s(size, tw));
	if (rd)
		out(" read_s=%.2f read_MiB/s=%.1f", tr, mib_s(size, tr));
	out(" MiB/s=%.1f\n", mib_s(size * ((wr ? 1 : 0) + (rd ? 1 : 0)), tw + tr));
	return 0;
bad:
	close(fd);
	return 1;
}

/* ---- random multi-threaded verify ------------------------------------ */

struct rv_shared {
	int fd;
	uint64_t seed;
	unsigned nthreads;
	unsigned bsize;                 /* bytes per block */
	uint64_t nblocks;
	uint64_t nstripes;
	uint32_t *gen;                  /* shadow: generation per block, 0 = unwritten */
	double deadline;                /* 0: use op budget */
	atomic_long ops_left;
	atomic_int stop;
	atomic_int done;                /* the workers are joined */
	bool keep_going;                /* BLKCHECK_KEEP_GOING */
	atomic_ullong win_max_us;       /* longest I/O since the last progress line */
	uint64_t phys_above;            /* BLKCHECK_PHYS_ABOVE, 0: not asked */
	atomic_ulong pages, pages_above, pages_unknown;
	atomic_ullong phys_lo, phys_hi;
};

struct lat_hist {
	uint64_t count;
	uint64_t max_us;
	double max_at;                  /* start of the slowest I/O (now_s()) */
	uint64_t b[LAT_BUCKETS];
};

struct rv_thread {
	pthread_t th;
	struct rv_shared *sh;
	unsigned tid;
	uint64_t rng;
	/* written by this thread only; the progress reporter reads them
	 * (relaxed atomics, see bump()) */
	uint64_t writes, reads, verifies, flushes, bytes;
	struct lat_hist lat;
	int rc;
	unsigned errs;                  /* failures of this thread (keep-going) */
};

/* A counter with one writer (its thread) and a reader elsewhere. */
static inline void bump(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, *c + n, __ATOMIC_RELAXED);
}

static inline uint64_t peek(uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static unsigned lat_bucket(uint64_t us)
{
	unsigned msb, idx;

	if (us < 2 * LAT_SUB)
		return (unsigned)us;
	msb = 63u - (unsigned)__builtin_clzll(us);
	if (msb > LAT_MAX_MSB)
		return LAT_BUCKETS - 1;
	idx = 2 * LAT_SUB + (msb - LAT_SUB_BITS - 1) * LAT_SUB +
	      (unsigned)((us >> (msb - LAT_SUB_BITS)) & (LAT_SUB - 1));
	return idx < LAT_BUCKETS ? idx : LAT_BUCKETS - 1;
}

/* Largest value that falls in bucket idx. */
static uint64_t lat_bucket_top(unsigned idx)
{
	unsigned msb, sub;

	if (idx < 2 * LAT_SUB)
		return idx;
	msb = (idx - 2 * LAT_SUB) / LAT_SUB + LAT_SUB_BITS + 1;
	sub = (idx - 2 * LAT_SUB) % LAT_SUB;
	return ((uint64_t)(LAT_SUB + sub + 1) << (msb - LAT_SUB_BITS)) - 1;
}

static void lat_add(struct lat_hist *h, double t0, double t1)
{
	double d = t1 > t0 ? (t1 - t0) * 1e6 : 0.0;
	uint64_t us = d < 1e15 ? (uint64_t)d : (uint64_t)1e15;

	h->count++;
	h->b[lat_bucket(us)]++;
	if (us > h->max_us || h->count == 1) {
		h->max_us = us;
		h->max_at = t0;
	}
}

static void lat_merge(struct lat_hist *dst, const struct lat_hist *src)
{
	if (src->count && (src->max_us > dst->max_us || dst->count == 0)) {
		dst->max_us = src->max_us;
		dst->max_at = src->max_at;
	}
	dst->count += src->count;
	for (unsigned i = 0; i < LAT_BUCKETS; i++)
		dst->b[i] += src->b[i];
}

/* The pct-th percentile, in us: the top of the bucket holding it, capped by
 * the observed maximum. */
static uint64_t lat_pct(const struct lat_hist *h, double pct)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	rank = (uint64_t)((double)h->count * pct / 100.0 + 0.999999);
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < LAT_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t top = lat_bucket_top(i);
			return top < h->max_us ? top : h->max_us;
		}
	}
	return h->max_us;
}

/* One I/O's latency: the thread's histogram and the progress window. */
static void rv_lat(struct rv_thread *t, double t0, double t1)
{
	unsigned long long us, cur;

	lat_add(&t->lat, t0, t1);
	us = t1 > t0 ? (unsigned long long)((t1 - t0) * 1e6) : 0;
	cur = atomic_load_explicit(&t->sh->win_max_us, memory_order_relaxed);
	while (us > cur && !atomic_compare_exchange_weak(&t->sh->win_max_us, &cur, us))
		;
}

/* pio() on the randverify fd, timed into the thread's histogram. */
static int rv_pio(struct rv_thread *t, bool wr, void *buf, size_t len, uint64_t off)
{
	double t0 = now_s();
	int rc = pio(wr, t->sh->fd, buf, len, off);

	rv_lat(t, t0, now_s());
	return rc;
}

static uint64_t rnd(struct rv_thread *t)
{
	t->rng += 0x9e3779b97f4a7c15ULL;
	return mix64(t->rng);
}

static int rv_verify(struct rv_thread *t, uint8_t *buf, uint64_t blk,
		     unsigned n, const char *what)
{
	struct rv_shared *sh = t->sh;
	unsigned spb = sh->bsize / SECTOR;
	uint8_t scratch[SECTOR];
	bool any = false;
	int rc = 0;

	for (unsigned i = 0; i < n; i++)
		any |= sh->gen[blk + i] != 0;
	if (!any)
		return 0;
	if (rv_pio(t, false, buf, (size_t)n * sh->bsize, blk * sh->bsize) < 0) {
		t->errs++;
		return -1;
	}
	bump(&t->reads, 1);
	bump(&t->bytes, (uint64_t)n * sh->bsize);
	for (unsigned i = 0; i < n; i++) {
		uint32_t g = sh->gen[blk + i];
		if (!g)
			continue;
		for (unsigned s = 0; s < spb; s++) {
			uint64_t sector = (blk + i) * spb + s;
			if (!check_sector(buf + ((size_t)i * spb + s) * SECTOR, scratch,
					  sh->seed, sector, g, what)) {
				rc = -1;
				t->errs++;
				/* keep-going: reported once, unknown until rewritten */
				sh->gen[blk + i] = 0;
				break;
			}
		}
		if (rc && !sh->keep_going)
			break;
	}
	bump(&t->verifies, 1);
	return rc;
}

static unsigned rv_len(struct rv_thread *t, unsigned max)
{
	unsigned r = (unsigned)(rnd(t) % 100), n;

	if (r < 70)
		n = 1;
	else if (r < 90)
		n = 2 + (unsigned)(rnd(t) % 7);         /* 2..8 */
	else
		n = 9 + (unsigned)(rnd(t) % 8);         /* 9..16 */
	return n > max ? max : n;
}

static bool rv_more(struct rv_thread *t)
{
	struct rv_shared *sh = t->sh;

	if (atomic_load(&sh->stop) || (atomic_load(&g_failed) && !sh->keep_going))
		return false;
	if (sh->deadline > 0)
		return now_s() < sh->deadline;
	return atomic_fetch_sub(&sh->ops_left, 1) > 0;
}

/* Count the pages of BUF (LEN bytes, touched) by guest-physical address
 * through /proc/self/pagemap: bit 63 present, bits 0-54 the PFN (0 without
 * CAP_SYS_ADMIN: counted as unknown). */
static void rv_phys(struct rv_shared *sh, const void *buf, size_t len)
{
	long psz = sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)buf & ~((uintptr_t)psz - 1);
	int fd = open("/proc/self/pagemap", O_RDONLY);

	for (; a < (uintptr_t)buf + len; a += (uintptr_t)psz) {
		uint64_t e = 0, pfn, pa, lo, hi;

		atomic_fetch_add(&sh->pages, 1);
		if (fd < 0 || pread(fd, &e, sizeof(e), (off_t)(a / (uintptr_t)psz * 8)) != 8 ||
		    !(e >> 63) || !(pfn = e & ((1ULL << 55) - 1))) {
			atomic_fetch_add(&sh->pages_unknown, 1);
			continue;
		}
		pa = pfn * (uint64_t)psz;
		if (pa >= sh->phys_above)
			atomic_fetch_add(&sh->pages_above, 1);
		lo = atomic_load(&sh->phys_lo);
		while (pa < lo && !atomic_compare_exchange_weak(&sh->phys_lo, &lo, pa))
			;
		hi = atomic_load(&sh->phys_hi);
		while (pa > hi && !atomic_compare_exchange_weak(&sh->phys_hi, &hi, pa))
			;
	}
	if (fd >= 0)
		close(fd);
}

static void *rv_main(void *arg)
{
	struct rv_thread *t = arg;
	struct rv_shared *sh = t->sh;
	unsigned spb = sh->bsize / SECTOR;
	size_t maxlen = (size_t)STRIPE_BLOCKS * sh->bsize;
	uint64_t my_stripes = (sh->nstripes + sh->nthreads - 1 - t->tid) / sh->nthreads;
	uint32_t gens[STRIPE_BLOCKS];
	uint8_t *wbuf = xalloc(maxlen), *rbuf = xalloc(maxlen);

	t->rc = -1;
	if (!wbuf || !rbuf)
		goto out;
	if (my_stripes == 0) {
		t->rc = 0;
		goto out;
	}
	while (rv_more(t)) {
		uint64_t stripe = t->tid + sh->nthreads * (rnd(t) % my_stripes);
		uint64_t sblk = stripe * STRIPE_BLOCKS;
		unsigned sblocks = sh->nblocks - sblk < STRIPE_BLOCKS ?
				   (unsigned)(sh->nblocks - sblk) : STRIPE_BLOCKS;
		unsigned first = (unsigned)(rnd(t) % sblocks);
		unsigned n = rv_len(t, sblocks - first);
		uint64_t blk = sblk + first;
		unsigned op = (unsigned)(rnd(t) % 100);

		if (op < 60) {
			for (unsigned i = 0; i < n; i++)
				gens[i] = sh->gen[blk + i] + 1;
			fill_range(wbuf, (size_t)n * sh->bsize, sh->seed, blk * spb, gens, spb);
			if (rv_pio(t, true, wbuf, (size_t)n * sh->bsize, blk * sh->bsize) < 0) {
				t->errs++;
				if (!sh->keep_going)
					goto out;
				/* what the device holds there is unknown now */
				memset(&sh->gen[blk], 0, n * sizeof(gens[0]));
				continue;
			}
			memcpy(&sh->gen[blk], gens, n * sizeof(gens[0]));
			bump(&t->writes, 1);
			bump(&t->bytes, (uint64_t)n * sh->bsize);
			if (op < 15 && rv_verify(t, rbuf, blk, n, "read-after-write") < 0 &&
			    !sh->keep_going)
				goto out;
		} else if (op < 98) {
			if (rv_verify(t, rbuf, blk, n, "random read") < 0 && !sh->keep_going)
				goto out;
		} else {
			double t0 = now_s();
			int r = fdatasync(sh->fd);

			rv_lat(t, t0, now_s());
			if (r < 0) {
				fail("fdatasync %s: %s", g_dev, strerror(errno));
				t->errs++;
				if (!sh->keep_going)
					goto out;
				continue;
			}
			bump(&t->flushes, 1);
		}
	}
	if (atomic_load(&g_failed) && !sh->keep_going)
		goto out;
	/* final pass: every block this thread owns */
	for (uint64_t s = t->tid; s < sh->nstripes; s += sh->nthreads) {
		uint64_t sblk = s * STRIPE_BLOCKS;
		unsigned sblocks = sh->nblocks - sblk < STRIPE_BLOCKS ?
				   (unsigned)(sh->nblocks - sblk) : STRIPE_BLOCKS;
		if (rv_verify(t, rbuf, sblk, sblocks, "final verify") < 0 && !sh->keep_going)
			goto out;
	}
	t->rc = t->errs ? -1 : 0;
	if (sh->phys_above) {
		rv_phys(sh, wbuf, maxlen);
		rv_phys(sh, rbuf, maxlen);
	}
out:
	if (t->rc)
		atomic_store(&sh->stop, 1);
	free(wbuf);
	free(rbuf);
	return NULL;
}

/* BLKCHECK_PROGRESS / BLKCHECK_STOP: a thread that reports how the run
 * goes and ends it when the stop file appears. */
struct rv_reporter {
	pthread_t th;
	struct rv_shared *sh;
	struct rv_thread *th_all;
	unsigned nthreads;
	double interval;                /* 0: no progress lines */
	const char *stop_path;          /* NULL: none */
	double t0;
};

static void *rv_report_main(void *arg)
{
	struct rv_reporter *r = arg;
	struct rv_shared *sh = r->sh;
	double next = r->t0 + r->interval, last_t = r->t0;
	uint64_t last_ops = 0;
	bool stop_seen = false;
	struct timespec tick = { 0, 100 * 1000 * 1000 };

	while (!atomic_load(&sh->done)) {
		double now;

		nanosleep(&tick, NULL);
		now = now_s();
		if (r->stop_path && !stop_seen && access(r->stop_path, F_OK) == 0) {
			stop_seen = true;
			atomic_store(&sh->stop, 1);
			out("BLKCHECK stop requested t=%.1f (final pass over every block follows)\n",
			    now - r->t0);
		}
		if (r->interval > 0 && now >= next && !atomic_load(&sh->done)) {
			uint64_t w = 0, rd = 0, v = 0, f = 0, b = 0, ops;
			unsigned long long win;

			for (unsigned i = 0; i < r->nthreads; i++) {
				w += peek(&r->th_all[i].writes);
				rd += peek(&r->th_all[i].reads);
				v += peek(&r->th_all[i].verifies);
				f += peek(&r->th_all[i].flushes);
				b += peek(&r->th_all[i].bytes);
			}
			ops = w + rd;
			win = atomic_exchange(&sh->win_max_us, 0);
			out("BLKCHECK progress t=%.1f phase=%s writes=%" PRIu64 " reads=%" PRIu64
			    " verifies=%" PRIu64 " flushes=%" PRIu64 " MiB=%.1f errors=%d"
			    " IOPS=%.0f win_max_lat_ms=%.1f\n", now - r->t0,
			    atomic_load(&sh->stop) ? "final" : "run", w, rd, v, f,
			    (double)b / (1024.0 * 1024.0), atomic_load(&g_reports),
			    now > last_t ? (double)(ops - last_ops) / (now - last_t) : 0.0,
			    (double)win / 1e3);
			last_ops = ops;
			last_t = now;
			while (next <= now)
				next += r->interval;
		}
	}
	return NULL;
}

static int cmd_randverify(unsigned nthreads, const char *dur, uint64_t seed)
{
	struct rv_reporter rep = { .interval = 0 };
	bool reporting = false;
	struct rv_shared sh = { .seed = seed, .nthreads = nthreads };
	struct rv_thread *th;
	uint64_t size, writes = 0, reads = 0, verifies = 0, flushes = 0, bytes = 0;
	static struct lat_hist lat;     /* merged over the threads (~5 KiB) */
	unsigned lbs;
	bool direct;
	double t0, secs;
	char *end;
	unsigned long long v;
	int rc = 0;

	errno = 0;
	v = strtoull(dur, &end, 10);
	if (errno || end == dur || v == 0 ||
	    (*end && strcmp(end, "s") && strcmp(end, "ops"))) {
		fprintf(stderr, "blkcheck: bad duration '%s' (want N, Ns or Nops)\n", dur);
		return 2;
	}
	sh.fd = open_dev(g_dev, O_RDWR, &direct);
	if (sh.fd < 0)
		return 1;
	if (dev_geometry(sh.fd, &size, &lbs) < 0)
		goto bad;
	sh.bsize = lbs > 4096 ? lbs : 4096;
	sh.nblocks = size / sh.bsize;
	if (sh.nblocks == 0) {
		fail("%s: device smaller than one %u-byte block", g_dev, sh.bsize);
		goto bad;
	}
	sh.nstripes = (sh.nblocks + STRIPE_BLOCKS - 1) / STRIPE_BLOCKS;
	sh.gen = calloc(sh.nblocks, sizeof(*sh.gen));
	th = calloc(nthreads, sizeof(*th));
	if (!sh.gen || !th) {
		fail("out of memory");
		goto bad;
	}
	if (strcmp(end, "ops") == 0)
		atomic_store(&sh.ops_left, (long)v);
	if (getenv("BLKCHECK_PHYS_ABOVE") &&
	    parse_u64(getenv("BLKCHECK_PHYS_ABOVE"), &sh.phys_above) == 0 && sh.phys_above)
		atomic_store(&sh.phys_lo, UINT64_MAX);
	if (getenv("BLKCHECK_KEEP_GOING") && strcmp(getenv("BLKCHECK_KEEP_GOING"), "0")) {
		sh.keep_going = true;
		g_max_reports = MAX_REPORTS_KG;
	}
	if (getenv("BLKCHECK_PROGRESS"))
		rep.interval = strtod(getenv("BLKCHECK_PROGRESS"), NULL);
	if (getenv("BLKCHECK_STOP") && *getenv("BLKCHECK_STOP"))
		rep.stop_path = getenv("BLKCHECK_STOP");
	t0 = now_s();
	if (strcmp(end, "ops") != 0)
		sh.deadline = t0 + (double)v;
	for (unsigned i = 0; i < nthreads; i++) {
		th[i].sh = &sh;
		th[i].tid = i;
		th[i].rng = mix64(seed * 1000003u + i + 1);
		if (pthread_create(&th[i].th, NULL, rv_main, &th[i]) != 0) {
			fail("pthread_create failed");
			atomic_store(&sh.stop, 1);
			nthreads = i;
			rc = 1;
			break;
		}
	}
	if (rep.interval > 0 || rep.stop_path) {
		rep.sh = &sh;
		rep.th_all = th;
		rep.nthreads = nthreads;
		rep.t0 = t0;
		reporting = pthread_create(&rep.th, NULL, rv_report_main, &rep) == 0;
		if (!reporting)
			out("BLKCHECK randverify: no progress thread (pthread_create failed)\n");
	}
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(th[i].th, NULL);
		if (th[i].rc)
			rc = 1;
		writes += th[i].writes;
		reads += th[i].reads;
		verifies += th[i].verifies;
		flushes += th[i].flushes;
		bytes += th[i].bytes;
		lat_merge(&lat, &th[i].lat);
	}
	atomic_store(&sh.done, 1);
	if (reporting)
		pthread_join(rep.th, NULL);
	secs = now_s() - t0;
	if (rc == 0 && fsync(sh.fd) < 0) {
		fail("fsync %s: %s", g_dev, strerror(errno));
		rc = 1;
	}
	if (rc == 0 && atomic_load(&g_failed))
		rc = 1;
	if (rc == 0) {
		uint64_t written = 0;
		for (uint64_t b = 0; b < sh.nblocks; b++)
			written += sh.gen[b] != 0;
		out("BLKCHECK randverify OK dev=%s threads=%u block=%u writes=%" PRIu64
		    " reads=%" PRIu64 " verifies=%" PRIu64 " flushes=%" PRIu64
		    " blocks_touched=%" PRIu64 "/%" PRIu64 " secs=%.1f IOPS=%.0f MiB/s=%.1f"
		    " max_lat_ms=%.1f max_lat_at_s=%.1f p99_lat_ms=%.1f%s\n",
		    g_dev, nthreads, sh.bsize, writes, reads, verifies, flushes,
		    written, sh.nblocks, secs, secs > 0 ? (double)(writes + reads) / secs : 0.0,
		    mib_s(bytes, secs), (double)lat.max_us / 1e3,
		    lat.count ? lat.max_at - t0 : 0.0, (double)lat_pct(&lat, 99.0) / 1e3,
		    direct ? "" : " (buffered)");
		if (sh.phys_above)
			out("BLKCHECK randverify bufpages_above=%lu/%lu unknown=%lu"
			    " buf_phys=0x%llx-0x%llx above=0x%" PRIx64 "\n",
			    atomic_load(&sh.pages_above), atomic_load(&sh.pages),
			    atomic_load(&sh.pages_unknown),
			    atomic_load(&sh.phys_lo) == UINT64_MAX ? 0ULL : atomic_load(&sh.phys_lo),
			    atomic_load(&sh.phys_hi), sh.phys_above);
	} else if (lat.count) {
		/* how long the I/O stalled is worth knowing when it failed too */
		out("BLKCHECK randverify latency dev=%s errors=%d ios=%" PRIu64 " max_lat_ms=%.1f"
		    " max_lat_at_s=%.1f p99_lat_ms=%.1f\n", g_dev, atomic_load(&g_reports), lat.count,
		    (double)lat.max_us / 1e3, lat.max_at - t0,
		    (double)lat_pct(&lat, 99.0) / 1e3);
	}
	close(sh.fd);
	free(sh.gen);
	free(th);
	return rc;
bad:
	close(sh.fd);
	return 1;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || end == s || *end ? -1 : 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: blkcheck fullcheck DEV [SEED]\n"
		"       blkcheck randverify DEV THREADS SECONDS|Ns|Nops [SEED]\n"
		"       blkcheck writepattern DEV SEED\n"
		"       blkcheck verifypattern DEV SEED\n");
}

static int run(int argc, char **argv)
{
	uint64_t seed = DEFAULT_SEED, nthreads;
	const char *cmd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		usage();
		return 2;
	}
	cmd = argv[1];
	g_dev = argv[2];
	if (strcmp(cmd, "fullcheck") == 0) {
		if (argc > 4 || (argc == 4 && parse_u64(argv[3], &seed) < 0))
			goto bad_usage;
		return cmd_pattern("fullcheck", true, true, seed);
	}
	if (strcmp(cmd, "writepattern") == 0 || strcmp(cmd, "verifypattern") == 0) {
		bool wr = cmd[0] == 'w';
		if (argc != 4 || parse_u64(argv[3], &seed) < 0)
			goto bad_usage;
		return cmd_pattern(cmd, wr, !wr, seed);
	}
	if (strcmp(cmd, "randverify") == 0) {
		if (argc < 5 || argc > 6 || parse_u64(argv[3], &nthreads) < 0 ||
		    nthreads == 0 || nthreads > 256 ||
		    (argc == 6 && parse_u64(argv[5], &seed) < 0))
			goto bad_usage;
		return cmd_randverify((unsigned)nthreads, argv[4], seed);
	}
bad_usage:
	usage();
	return 2;
}

int main(int argc, char **argv)
{
	int rc = run(argc, argv);
	int n = atomic_load(&g_reports);

	if (n > g_max_reports)
		out("BLKCHECK FAIL (%d more failure reports suppressed)\n", n - g_max_reports);
	return rc;
}

/* vhost-bench: a benchmark front-end for vhost-user-blk back-ends (vhostd,
 * qemu-storage-daemon, SPDK, ...).  It plays QEMU's part: shares a memfd as
 * guest memory, sets up split virtqueues (or packed ones with --packed,
 * virtio 1.2 section 2.8) and drives virtio-blk requests
 * from that memory at a fixed queue depth, then reports IOPS, bandwidth,
 * latency percentiles and the CPU time of the target and of itself.
 *
 * One thread does everything (setup, data path, report); it can be pinned.
 * Trust: the back-end is the thing under test, not a friend — every used
 * element it returns is checked against the slots in flight, and a wrong
 * one stops the run with an error rather than corrupting the statistics.
 *
 * Data path design (the client must never be the bottleneck):
 *  - each request slot owns three descriptors (header, data, status) built
 *    once; a slot is recycled as soon as its completion is seen, only its
 *    header (sector, and type for mixed workloads) is rewritten;
 *  - packed rings: the three descriptors of a request are written into
 *    the ring where it stands (buffer id = slot); a batch is published by
 *    one release barrier and the flags of its first descriptor, and a
 *    completion is one used descriptor, after which the client skips
 *    three;
 *  - new requests are published in batches: ring entries, one release
 *    barrier, one avail->idx store, one full barrier, one look at the
 *    back-end's suppression state, and at most one kick per batch;
 *  - one timestamp (rdtsc) per loop pass, shared by every completion seen
 *    and every request published in that pass; a log-linear histogram
 *    (no allocation, ~3% resolution) gives the percentiles. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_RDTSC 1
#endif

/* The virtio and vhost-user definitions (virtio 1.2, vhost-user spec) are
 * tests/lib/vu_wire.h, shared with the other test front-ends. */
#include "vu_wire.h"

#ifndef FFE_F_LOG_ALL
#define FFE_F_LOG_ALL 26        /* VHOST_F_LOG_ALL */
#endif

/* --- barriers (they pair with the back-end's) ------------------------------ */

#define READ_ONCE(x)     (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

/* After reading used->idx: used elements and status bytes it publishes
 * must not be read before it (acquire). */
static inline void rmb(void) { atomic_thread_fence(memory_order_acquire); }
/* Before storing avail->idx: headers, descriptors and ring entries must be
 * visible before the index that publishes them (release). */
static inline void wmb(void) { atomic_thread_fence(memory_order_release); }
/* Between a store the other side polls (avail->idx, used_event) and a load
 * of what it publishes in return (used->flags/avail_event, used->idx): a
 * store-load order needs a full fence, or each side can miss the other's
 * update and both wait forever. */
static inline void mb(void) { atomic_thread_fence(memory_order_seq_cst); }

static inline bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

/* --- time ----------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cputime_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ticks(void)
{
#ifdef HAVE_RDTSC
	return __rdtsc();
#else
	return mono_ns();
#endif
}

static double ticks_per_ns = 1.0;

/* A (ticks, ns) pair read close together: retried until the clock reads
 * around the tick read are less than 2 us apart, so a preemption in between
 * cannot skew the rate (this machine may be busy with other work). */
static void clock_pair(uint64_t *t, uint64_t *ns)
{
	for (int i = 0;; i++) {
		uint64_t a = mono_ns(), tt = ticks(), b = mono_ns();
		if (b - a < 2000 || i == 1000) {
			*t = tt;
			*ns = a + (b - a) / 2;
			return;
		}
	}
}

static void calibrate_ticks(void)
{
#ifdef HAVE_RDTSC
	uint64_t t0, n0, t1, n1;
	clock_pair(&t0, &n0);
	do
		clock_pair(&t1, &n1);
	while (n1 - n0 < 20000000);
	ticks_per_ns = (double)(t1 - t0) / (double)(n1 - n0);
#endif
}

static uint64_t ns_to_ticks(double ns)
{
	return (uint64_t)(ns * ticks_per_ns);
}

/* --- latency histogram ----------------------------------------------------- */

/* Values (ticks) below 64 have a bucket each; above, 32 buckets per power of
 * two: at most ~3% error, 1920 buckets for the whole uint64 range. */
#define HIST_SUB     32
#define HIST_BUCKETS (59 * HIST_SUB + HIST_SUB)

struct hist {
	uint64_t n, sum, min, max;
	uint64_t b[HIST_BUCKETS];
};

static inline unsigned hist_index(uint64_t v)
{
	unsigned e;
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	e = 63 - (unsigned)__builtin_clzll(v) - 5;
	return e * HIST_SUB + (unsigned)(v >> e);
}

static inline void hist_add(struct hist *h, uint64_t v)
{
	h->b[hist_index(v)]++;
	h->n++;
	h->sum += v;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
}

static void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

/* The value at fraction p (0..1): middle of its bucket, within [min, max]. */
static uint64_t hist_pct(const struct hist *h, double p)
{
	uint64_t want = (uint64_t)(p * (double)h->n + 0.999999), cum = 0;

	if (!h->n)
		return 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		uint64_t lo, hi, v;
		cum += h->b[i];
		if (cum < want)
			continue;
		if (i < 2 * HIST_SUB) {
			lo = hi = i;
		} else {
			unsigned e = i / HIST_SUB - 1;
			uint64_t m = i - e * HIST_SUB;
			lo = m << e;
			hi = ((m + 1) << e) - 1;
		}
		v = lo + (hi - lo) / 2;
		if (v < h->min)
			v = h->min;
		if (v > h->max)
			v = h->max;
		return v;
	}
	return h->max;
}

/* --- state ------------------------------------------------------------------ */

enum pattern { P_RANDREAD, P_RANDWRITE, P_READ, P_WRITE, P_RANDRW };
static const char *const pattern_names[] = { "randread", "randwrite", "read", "write", "randrw" };

#define MAX_DEVS   32
#define MAX_QUEUES 16
#define GPA_BASE   0x40000000ull        /* where guest memory starts */
#define SLOT_HDR   64                   /* header + status, one cache line */
#define PAGE       4096ul

struct slot {
	uint64_t ts;            /* ticks when published */
	bool busy;
	bool write;             /* how its descriptors are set up now */
};

struct bdev;

/* One virtqueue of one device; everything the hot loop touches. */
struct bq {
	/* set up once, then only read */
	struct ffe_desc *desc;
	struct ffe_vring_avail *avail;
	struct ffe_vring_used *used;
	/* --packed: the descriptor ring (same memory as desc), the Driver
	 * Area (ours) and the Device Area (the back-end's) */
	bool packed;
	struct ffe_pdesc *pdesc;
	struct ffe_event_suppress *drv_ev, *dev_ev;
	uint16_t num, mask;
	bool event_idx;
	unsigned nslots;
	struct slot *slots;
	uint16_t *free;         /* stack of free slot numbers */
	uint8_t *hdrs;          /* SLOT_HDR bytes per slot (host address) */
	uint64_t hdrs_gpa, data_gpa;
	int kick_fd, call_fd;
	uint8_t *base;          /* host address of GPA_BASE */
	struct bdev *dev;
	unsigned index;
	/* written by the client for every request: a line of their own, so
	 * that --selftest-cpu's fake device reading the fields above does not
	 * pay for them (a real back-end never sees this memory) */
	uint16_t avail_idx __attribute__((aligned(64)));  /* next free avail entry */
	uint16_t last_used;     /* next used entry to look at */
	unsigned nfree, inflight;
	unsigned want;          /* irq mode: completions the armed call waits for */
	uint64_t ios, errors, kicks, wakeups;
	/* packed rings (--packed): next available / next used offset and
	 * their wrap counters, and descriptors made available in all */
	uint16_t pk_avail_off, pk_used_off;
	bool pk_avail_wrap, pk_used_wrap;
	uint64_t pk_avail_cnt;
	/* the fake device's own state */
	uint16_t fd_last_avail __attribute__((aligned(64)));
	uint16_t fd_used;
	uint16_t fd_off;        /* packed: next offset to look at, its wrap */
	bool fd_wrap;
};

struct bdev {
	const char *path;
	int sock;
	uint64_t features, pfeatures;
	uint64_t capacity;      /* bytes */
	int memfd;
	uint8_t *mem;
	size_t mem_len;
	uint8_t *log;           /* --dirty-log: the bitmap shared with the back-end */
	size_t log_len;
	unsigned nq;
	struct bq q[MAX_QUEUES];
};

struct opts {
	const char *sockets[MAX_DEVS];
	unsigned nsockets;
	enum pattern pattern;
	unsigned rwmix;         /* % reads for randrw */
	uint32_t bs;
	unsigned iodepth;
	unsigned queues;
	double time_s, ramp_s;
	bool irq;
	unsigned coalesce;      /* irq mode: completions per call (EVENT_IDX) */
	unsigned qsize;
	long pid;
	int cpu;
	bool json;
	uint64_t size;          /* 0 = device capacity */
	bool no_event_idx;
	bool packed;            /* negotiate VIRTIO_F_RING_PACKED: packed rings */
	bool fresh_desc;        /* split: write a request's descriptors at each
				 * submission, as a guest driver does */
	bool dirty_log;         /* log every write, synced like a migration */
	bool fill;
	bool selftest;
	int selftest_cpu;       /* fake device on its own thread and cpu; -1 inline */
	double idle_s;
	unsigned probes;
	unsigned probe_gap_ms;
	unsigned connect_timeout_s;
};

struct bench {
	struct opts o;
	struct bdev devs[MAX_DEVS];
	unsigned ndev;
	struct bq *qs[MAX_DEVS * MAX_QUEUES];
	unsigned nq;
	uint64_t nblocks;       /* bs-sized blocks in the addressed range */
	uint64_t seq_next;      /* sequential cursor (blocks) */
	uint64_t fill_left;     /* blocks still to write in the fill pass */
	uint64_t rng;
	int epfd;               /* irq mode: the call eventfds */
	bool measuring, stopping, filling;
	struct hist hist;
	uint64_t dev_ticks;     /* --selftest: time spent in the fake device */
	/* --dirty-log: a thread clears the log every LOG_SYNC_MS, as QEMU's
	 * migration does, and counts the pages it found dirty */
	pthread_t log_thread;
	atomic_bool log_stop;
	atomic_uint_fast64_t log_syncs, log_pages, log_ios_at_start;
};

#define LOG_SYNC_MS 10

static struct bench B;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	fputs("vhost-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void on_alarm(int sig)
{
	static const char msg[] = "vhost-bench: watchdog: the back-end stopped completing requests\n";
	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

/* wyrand: one multiply per number. */
static inline uint64_t rnd(uint64_t *s)
{
	unsigned __int128 t;
	*s += 0xa0761d6478bd642full;
	t = (unsigned __int128)*s * (*s ^ 0xe7037ed1a0b428dbull);
	return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* Uniform in [0, n) without a division. */
static inline uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rnd(s) * n) >> 64);
}

/* --- vhost-user messages --------------------------------------------------- */

static void vu_send(struct bdev *d, uint32_t req, bool need_reply, const void *payload,
		    uint32_t size, const int *fds, unsigned nfds)
{
	struct ffe_hdr h = { req, FFE_FLAG_VERSION | (need_reply ? FFE_FLAG_NEED_REPLY : 0), size };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, size } };
	union ffe_fd_ctl u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
	ssize_t n;

	ffe_attach_fds(&mh, &u, fds, nfds);
	do
		n = sendmsg(d->sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)(sizeof(h) + size))
		die("%s: sending %s: %s", d->path, ffe_req_name(req),
		    n < 0 ? strerror(errno) : "short write");
}

static void read_full(struct bdev *d, void *buf, size_t len, uint32_t req)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = recv(d->sock, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("%s: waiting for the reply to %s: %s", d->path, ffe_req_name(req),
			    n < 0 ? strerror(errno) : "connection closed by the back-end");
		p += n;
		len -= (size_t)n;
	}
}

/* Receive the reply to req into payload (at most max bytes); its size. */
static uint32_t vu_recv(struct bdev *d, uint32_t req, void *payload, uint32_t max)
{
	struct ffe_hdr h;
	uint8_t sink[256];

	read_full(d, &h, sizeof(h), req);
	if (h.request != req || !(h.flags & FFE_FLAG_REPLY) || (h.flags & 3) != FFE_FLAG_VERSION)
		die("%s: expected a reply to %s, got request %u flags 0x%x", d->path,
		    ffe_req_name(req), h.request, h.flags);
	if (h.size > max) {
		if (h.size > sizeof(sink))
			die("%s: reply to %s has %u bytes", d->path, ffe_req_name(req), h.size);
		read_full(d, sink, h.size, req);
		memcpy(payload, sink, max);
		return max;
	}
	read_full(d, payload, h.size, req);
	return h.size;
}

static uint64_t vu_get_u64(struct bdev *d, uint32_t req)
{
	uint64_t v = 0;
	vu_send(d, req, false, NULL, 0, NULL, 0);
	if (vu_recv(d, req, &v, sizeof(v)) != sizeof(v))
		die("%s: short reply to %s", d->path, ffe_req_name(req));
	return v;
}

/* A request without a reply of its own: with REPLY_ACK we wait for the
 * back-end's verdict, so a refusal is reported where it happened. */
static void vu_set(struct bdev *d, uint32_t req, const void *payload, uint32_t size,
		   const int *fds, unsigned nfds)
{
	bool ack = d->pfeatures & FFE_BIT(FFE_PF_REPLY_ACK);
	uint64_t v = 0;

	vu_send(d, req, ack, payload, size, fds, nfds);
	if (!ack)
		return;
	if (vu_recv(d, req, &v, sizeof(v)) != sizeof(v))
		die("%s: short REPLY_ACK to %s", d->path, ffe_req_name(req));
	if (v)
		die("%s: the back-end refused %s", d->path, ffe_req_name(req));
}

static void vu_set_state(struct bdev *d, uint32_t req, uint32_t index, uint32_t num)
{
	struct ffe_vring_state s = { index, num };
	vu_set(d, req, &s, sizeof(s), NULL, 0);
}

static void vu_set_fd(struct bdev *d, uint32_t req, uint32_t index, int fd)
{
	uint64_t v = index;
	vu_set(d, req, &v, sizeof(v), &fd, 1);
}

/* --- setup ------------------------------------------------------------------ */

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static int connect_socket(const char *path, unsigned timeout_s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline = mono_ns() + (uint64_t)timeout_s * 1000000000ull;

	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die("socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		if ((errno != ENOENT && errno != ECONNREFUSED) || mono_ns() > deadline)
			die("connect %s: %s", path, strerror(errno));
		usleep(20000);
	}
}

/* Guest memory of one device: for each queue its three rings (a page each
 * at least, so the client's and the back-end's lines never share), the
 * slot headers and the data buffers (page aligned: O_DIRECT back-ends can
 * use them as they are). */
static void layout_and_map(struct bench *b, struct bdev *d, unsigned num, unsigned nslots)
{
	size_t off = 0, bs = align_up(b->o.bs, PAGE);
	size_t offs[MAX_QUEUES][5];

	for (unsigned i = 0; i < d->nq; i++) {
		offs[i][0] = off;
		off = align_up(off + sizeof(struct ffe_desc) * num, PAGE);
		offs[i][1] = off;
		off = align_up(off + 6 + 2 * num, PAGE);
		offs[i][2] = off;
		off = align_up(off + 6 + 8 * num, PAGE);
		offs[i][3] = off;
		off = align_up(off + (size_t)SLOT_HDR * nslots, PAGE);
		offs[i][4] = off;
		off += bs * nslots;
	}
	d->mem_len = align_up(off, 2u << 20);
	d->memfd = memfd_create("vhost-bench", MFD_CLOEXEC);
	if (d->memfd < 0 || ftruncate(d->memfd, (off_t)d->mem_len) < 0)
		die("guest memory of %zu bytes: %s", d->mem_len, strerror(errno));
	d->mem = mmap(NULL, d->mem_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		      d->memfd, 0);
	if (d->mem == MAP_FAILED)
		die("mmap guest memory: %s", strerror(errno));
	memset(d->mem, 0, d->mem_len);  /* fault every page in now, not during the run */

	for (unsigned i = 0; i < d->nq; i++) {
		struct bq *q = &d->q[i];
		q->dev = d;
		q->index = i;
		q->base = d->mem;
		q->num = (uint16_t)num;
		q->mask = (uint16_t)(num - 1);
		q->desc = (struct ffe_desc *)(d->mem + offs[i][0]);
		q->avail = (struct ffe_vring_avail *)(d->mem + offs[i][1]);
		q->used = (struct ffe_vring_used *)(d->mem + offs[i][2]);
		q->packed = b->o.packed;
		q->pdesc = (struct ffe_pdesc *)(d->mem + offs[i][0]);
		q->drv_ev = (struct ffe_event_suppress *)(d->mem + offs[i][1]);
		q->dev_ev = (struct ffe_event_suppress *)(d->mem + offs[i][2]);
		q->pk_avail_off = q->pk_used_off = q->fd_off = 0;
		q->pk_avail_wrap = q->pk_used_wrap = q->fd_wrap = true;
		q->pk_avail_cnt = 0;
		q->hdrs = d->mem + offs[i][3];
		q->hdrs_gpa = GPA_BASE + offs[i][3];
		q->data_gpa = GPA_BASE + offs[i][4];
		q->nslots = nslots;
		q->slots = calloc(nslots, sizeof(*q->slots));
		q->free = calloc(nslots, sizeof(*q->free));
		if (!q->slots || !q->free)
			die("out of memory");
		/* Slot s: descriptors 3s (header), 3s+1 (data), 3s+2 (status);
		 * a packed ring gets them written at each submission. */
		for (unsigned s = 0; s < nslots; s++) {
			struct ffe_desc *dd = &q->desc[3 * s];
			struct ffe_blk_hdr *h = (struct ffe_blk_hdr *)(q->hdrs + (size_t)SLOT_HDR * s);
			h->type = FFE_BLK_T_IN;
			q->free[q->nfree++] = (uint16_t)(nslots - 1 - s);
			if (q->packed)
				continue;
			dd[0] = (struct ffe_desc){ q->hdrs_gpa + (uint64_t)SLOT_HDR * s,
						     sizeof(struct ffe_blk_hdr), FFE_DESC_F_NEXT,
						     (uint16_t)(3 * s + 1) };
			dd[1] = (struct ffe_desc){ q->data_gpa + (uint64_t)bs * s, b->o.bs,
						     FFE_DESC_F_NEXT | FFE_DESC_F_WRITE,
						     (uint16_t)(3 * s + 2) };
			dd[2] = (struct ffe_desc){ q->hdrs_gpa + (uint64_t)SLOT_HDR * s +
						     sizeof(struct ffe_blk_hdr), 1,
						     FFE_DESC_F_WRITE, 0 };
		}
		q->kick_fd = eventfd(0, EFD_CLOEXEC);
		q->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (q->kick_fd < 0 || q->call_fd < 0)
			die("eventfd: %s", strerror(errno));
	}
}

/* The front-end's own address of guest memory (ring addresses are given
 * in this space, buffer addresses in guest-physical space). */
static uint64_t uva(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

/* Notifications from the device: none in poll mode (the client looks at
 * the used ring itself), armed per wait in irq mode. */
static void calls_off(struct bq *q)
{
	if (q->packed)
		WRITE_ONCE(q->drv_ev->flags, FFE_RING_EVENT_DISABLE);
	else if (q->event_idx)
		/* Far behind: crossed once per 64K completions at most. */
		WRITE_ONCE(q->avail->ring[q->num], (uint16_t)(q->last_used + 0x8000));
	else
		WRITE_ONCE(q->avail->flags, FFE_AVAIL_F_NO_INTERRUPT);
}

static void dev_setup(struct bench *b, struct bdev *d, const char *path, unsigned num,
		      unsigned nslots)
{
	uint64_t f, want;
	struct {
		struct ffe_config_hdr h;
		uint8_t data[24];       /* capacity .. blk_size of virtio_blk_config */
	} cfg = { { 0, sizeof(cfg.data), 0 }, { 0 } };
	struct {
		struct ffe_mem_table_hdr h;
		struct ffe_mem_region regions[1];
	} mt;

	d->path = path;
	d->nq = b->o.queues;
	d->sock = connect_socket(path, b->o.connect_timeout_s);

	f = vu_get_u64(d, FFE_GET_FEATURES);
	d->features = f;
	if (!(f & FFE_BIT(FFE_F_VERSION_1)))
		die("%s: the back-end does not offer VIRTIO_F_VERSION_1", path);
	if (f & FFE_BIT(FFE_F_PROTOCOL_FEATURES)) {
		uint64_t pf = vu_get_u64(d, FFE_GET_PROTOCOL_FEATURES);
		if (b->o.dirty_log && !(pf & FFE_BIT(FFE_PF_LOG_SHMFD)))
			die("%s: --dirty-log: the back-end does not offer LOG_SHMFD", path);
		pf &= FFE_BIT(FFE_PF_MQ) | FFE_BIT(FFE_PF_REPLY_ACK) | FFE_BIT(FFE_PF_CONFIG) |
		      (b->o.dirty_log ? FFE_BIT(FFE_PF_LOG_SHMFD) : 0);
		d->pfeatures = 0;       /* no REPLY_ACK for this one yet */
		vu_set(d, FFE_SET_PROTOCOL_FEATURES, &pf, sizeof(pf), NULL, 0);
		d->pfeatures = pf;
	}
	if (d->pfeatures & FFE_BIT(FFE_PF_MQ)) {
		uint64_t n = vu_get_u64(d, FFE_GET_QUEUE_NUM);
		if (n < d->nq)
			die("%s: %u queues asked, the back-end has %" PRIu64, path, d->nq, n);
	} else if (d->nq > 1) {
		die("%s: the back-end has no multiqueue support", path);
	}
	vu_set(d, FFE_SET_OWNER, NULL, 0, NULL, 0);

	if (d->pfeatures & FFE_BIT(FFE_PF_CONFIG)) {
		vu_send(d, FFE_GET_CONFIG, false, &cfg, sizeof(cfg), NULL, 0);
		if (vu_recv(d, FFE_GET_CONFIG, &cfg, sizeof(cfg)) == sizeof(cfg)) {
			uint64_t sectors;
			memcpy(&sectors, cfg.data, sizeof(sectors));
			d->capacity = sectors * 512;
		}
	}
	if (!d->capacity && !b->o.size)
		die("%s: the back-end does not tell its size (no CONFIG); give --size", path);
	if (b->o.size && (!d->capacity || b->o.size < d->capacity))
		d->capacity = b->o.size;

	want = FFE_BIT(FFE_F_VERSION_1) |
	       (f & (FFE_BIT(FFE_F_PROTOCOL_FEATURES) | FFE_BIT(FFE_F_BLK_FLUSH) | FFE_BIT(FFE_F_BLK_BLK_SIZE) |
		     FFE_BIT(FFE_F_BLK_SEG_MAX) | FFE_BIT(FFE_F_BLK_SIZE_MAX)));
	if (!b->o.no_event_idx)
		want |= f & FFE_BIT(FFE_F_RING_EVENT_IDX);
	if (b->o.packed) {
		if (!(f & FFE_BIT(FFE_F_RING_PACKED)))
			die("%s: --packed: the back-end does not offer VIRTIO_F_RING_PACKED", path);
		want |= FFE_BIT(FFE_F_RING_PACKED);
	}
	if (d->nq > 1) {
		if (!(f & FFE_BIT(FFE_F_BLK_MQ)))
			die("%s: the device does not offer VIRTIO_BLK_F_MQ", path);
		want |= FFE_BIT(FFE_F_BLK_MQ);
	}
	if (b->o.dirty_log) {
		if (!(f & FFE_BIT(FFE_F_LOG_ALL)) || !(d->pfeatures & FFE_BIT(FFE_PF_LOG_SHMFD)))
			die("%s: --dirty-log: the back-end does not offer LOG_ALL with LOG_SHMFD", path);
		want |= FFE_BIT(FFE_F_LOG_ALL);
	}
	d->features = want;
	vu_set(d, FFE_SET_FEATURES, &want, sizeof(want), NULL, 0);

	layout_and_map(b, d, num, nslots);
	mt.h.nregions = 1;
	mt.h.padding = 0;
	mt.regions[0] = (struct ffe_mem_region){ GPA_BASE, d->mem_len, uva(d->mem), 0 };
	vu_set(d, FFE_SET_MEM_TABLE, &mt, sizeof(mt), &d->memfd, 1);
	if (b->o.dirty_log) {
		/* One bit per 4 KiB page of guest-physical memory. */
		uint64_t lb[2] = { align_up((GPA_BASE + d->mem_len) / PAGE / 8, 8), 0 };
		uint64_t r;
		int fd = memfd_create("vhost-bench-log", MFD_CLOEXEC);

		if (fd < 0 || ftruncate(fd, (off_t)lb[0]) < 0)
			die("dirty log: %s", strerror(errno));
		d->log_len = lb[0];
		d->log = mmap(NULL, d->log_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (d->log == MAP_FAILED)
			die("dirty log: mmap: %s", strerror(errno));
		vu_send(d, FFE_SET_LOG_BASE, false, lb, sizeof(lb), &fd, 1);
		r = 0;
		vu_recv(d, FFE_SET_LOG_BASE, &r, sizeof(r));    /* dies without one */
		close(fd);
	}

	for (unsigned i = 0; i < d->nq; i++) {
		struct bq *q = &d->q[i];
		/* packed: descriptor ring, Device Area (used), Driver Area (avail) */
		struct ffe_vring_addr a = { i, 0, uva(q->desc), uva(q->used), uva(q->avail), 0 };

		if (b->o.dirty_log) {
			a.flags = 1;    /* VHOST_VRING_F_LOG: the used ring too */
			a.log = GPA_BASE + (uint64_t)((uint8_t *)q->used - d->mem);
		}

		q->event_idx = want & FFE_BIT(FFE_F_RING_EVENT_IDX);
		calls_off(q);
		vu_set_state(d, FFE_SET_VRING_NUM, i, num);
		/* packed: offset 0 with wrap counter 1 */
		vu_set_state(d, FFE_SET_VRING_BASE, i, q->packed ? FFE_PACKED_BASE(0, 1) : 0);
		vu_set(d, FFE_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
		vu_set_fd(d, FFE_SET_VRING_CALL, i, q->call_fd);
		vu_set_fd(d, FFE_SET_VRING_KICK, i, q->kick_fd);
		if (want & FFE_BIT(FFE_F_PROTOCOL_FEATURES))
			vu_set_state(d, FFE_SET_VRING_ENABLE, i, 1);
		b->qs[b->nq++] = q;
	}
}

/* Stop the rings (GET_VRING_BASE answers once the back-end let go of them)
 * and hang up. */
static void dev_teardown(struct bdev *d)
{
	for (unsigned i = 0; i < d->nq; i++) {
		struct ffe_vring_state s = { i, 0 };
		vu_send(d, FFE_GET_VRING_BASE, false, &s, sizeof(s), NULL, 0);
		vu_recv(d, FFE_GET_VRING_BASE, &s, sizeof(s));
	}
	close(d->sock);
}

/* --selftest: a device in this process that completes every request at once
 * (walks the chain, writes the status, pushes the used element). */
static void selftest_setup(struct bench *b, unsigned num, unsigned nslots)
{
	struct bdev *d = &b->devs[0];

	d->path = "selftest";
	d->nq = b->o.queues;
	d->capacity = b->o.size ? b->o.size : 1ull << 30;
	layout_and_map(b, d, num, nslots);
	for (unsigned i = 0; i < d->nq; i++) {
		struct bq *q = &d->q[i];
		q->event_idx = false;
		calls_off(q);
		if (q->packed)
			WRITE_ONCE(q->dev_ev->flags, FFE_RING_EVENT_DISABLE);
		else
			WRITE_ONCE(q->used->flags, FFE_USED_F_NO_NOTIFY);
		b->qs[b->nq++] = q;
	}
	b->ndev = 1;
}

/* Is the packed descriptor at off available / used for wrap counter w? */
static inline bool pk_avail_at(const struct bq *q, uint16_t off, bool w)
{
	uint16_t f = READ_ONCE(q->pdesc[off].flags);
	return !!(f & FFE_PDESC_F_AVAIL) == w && !!(f & FFE_PDESC_F_USED) != w;
}

static inline bool pk_used_at(const struct bq *q, uint16_t off, bool w)
{
	uint16_t f = READ_ONCE(q->pdesc[off].flags);
	return !!(f & FFE_PDESC_F_AVAIL) == w && !!(f & FFE_PDESC_F_USED) == w;
}

/* off and wrap counter moved on by n descriptors */
static inline void pk_step(const struct bq *q, uint16_t *off, bool *w, unsigned n)
{
	unsigned o = *off + n;
	while (o >= q->num) {
		o -= q->num;
		*w = !*w;
	}
	*off = (uint16_t)o;
}

/* The packed fake device: in order, so each used descriptor goes where its
 * chain began; the id is the chain's last descriptor's. */
static bool fake_device_packed(struct bq *q)
{
	bool work = false;

	while (pk_avail_at(q, q->fd_off, q->fd_wrap)) {
		uint16_t off = q->fd_off, first = off;
		bool w = q->fd_wrap;
		const struct ffe_pdesc *dd;
		uint32_t len = 0;
		unsigned n = 1;

		rmb();
		for (;;) {
			dd = &q->pdesc[off];
			if (dd->flags & FFE_DESC_F_WRITE)
				len += dd->len;
			if (!(dd->flags & FFE_DESC_F_NEXT))
				break;
			pk_step(q, &off, &w, 1);
			n++;
		}
		q->base[dd->addr - GPA_BASE] = 0;
		q->pdesc[first].id = dd->id;
		q->pdesc[first].len = len;
		wmb();
		WRITE_ONCE(q->pdesc[first].flags, (uint16_t)(FFE_DESC_F_WRITE |
			   (q->fd_wrap ? FFE_PDESC_F_AVAIL | FFE_PDESC_F_USED : 0)));
		pk_step(q, &q->fd_off, &q->fd_wrap, n);
		work = true;
	}
	return work;
}

static bool fake_device(struct bq *q)
{
	if (q->packed)
		return fake_device_packed(q);
	uint16_t idx = READ_ONCE(q->avail->idx);

	if (idx == q->fd_last_avail)
		return false;
	rmb();
	while (q->fd_last_avail != idx) {
		uint16_t head = q->avail->ring[q->fd_last_avail++ & q->mask];
		const struct ffe_desc *dd = &q->desc[head];
		uint32_t len = 0;
		struct ffe_used_elem *e;

		while (dd->flags & FFE_DESC_F_NEXT) {
			if (dd->flags & FFE_DESC_F_WRITE)
				len += dd->len;
			dd = &q->desc[dd->next];
		}
		q->base[dd->addr - GPA_BASE] = 0;
		e = &q->used->ring[q->fd_used++ & q->mask];
		e->id = head;
		e->len = len + 1;
	}
	wmb();
	WRITE_ONCE(q->used->idx, q->fd_used);
	return true;
}

static atomic_bool fake_stop;

/* --selftest-cpu: the fake device busy-polls on its own cpu, so the rings'
 * cache lines travel between cores as they do with a real back-end.  Like an
 * adaptive back-end it sleeps on the kick eventfds after 200 us without
 * work (which a running benchmark never leaves it), so --idle measures the
 * wake-up floor of this machine: what any sleeping back-end pays at least. */
static void *fake_device_thread(void *arg)
{
	struct bench *b = arg;
	uint64_t idle_from = 0, idle_ticks = ns_to_ticks(200000);
	unsigned spins = 0;
	int epfd = epoll_create1(EPOLL_CLOEXEC);

	if (b->o.selftest_cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(b->o.selftest_cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	for (unsigned i = 0; i < b->nq; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = b->qs[i] };
		epoll_ctl(epfd, EPOLL_CTL_ADD, b->qs[i]->kick_fd, &ev);
	}
	while (!atomic_load_explicit(&fake_stop, memory_order_relaxed)) {
		bool work = false, pending = false;
		uint64_t now;

		for (unsigned i = 0; i < b->nq; i++)
			work |= fake_device(b->qs[i]);
		if (work) {
			idle_from = 0;
			continue;
		}
		if (++spins < 256)
			continue;
		spins = 0;
		now = ticks();
		if (!idle_from)
			idle_from = now;
		if (now - idle_from < idle_ticks)
			continue;
		/* Ask for kicks, look once more, sleep. */
		for (unsigned i = 0; i < b->nq; i++) {
			if (b->qs[i]->packed)
				WRITE_ONCE(b->qs[i]->dev_ev->flags, FFE_RING_EVENT_ENABLE);
			else
				WRITE_ONCE(b->qs[i]->used->flags, 0);
		}
		mb();
		for (unsigned i = 0; i < b->nq; i++) {
			struct bq *q = b->qs[i];
			if (q->packed ? pk_avail_at(q, q->fd_off, q->fd_wrap)
				      : READ_ONCE(q->avail->idx) != q->fd_last_avail)
				pending = true;
		}
		if (!pending) {
			struct epoll_event evs[MAX_QUEUES];
			int n = epoll_wait(epfd, evs, MAX_QUEUES, 100);
			for (int i = 0; i < n; i++) {
				uint64_t v;
				(void)!read(((struct bq *)evs[i].data.ptr)->kick_fd, &v, sizeof(v));
			}
		}
		for (unsigned i = 0; i < b->nq; i++) {
			if (b->qs[i]->packed)
				WRITE_ONCE(b->qs[i]->dev_ev->flags, FFE_RING_EVENT_DISABLE);
			else
				WRITE_ONCE(b->qs[i]->used->flags, FFE_USED_F_NO_NOTIFY);
		}
		idle_from = 0;
	}
	close(epfd);
	return NULL;
}

/* --- data path --------------------------------------------------------------- */

/* The device's avail_event: the u16 after the used ring's num entries. */
static inline uint16_t *avail_event(struct bq *q)
{
	return (uint16_t *)(void *)&q->used->ring[q->num];
}

static inline struct ffe_blk_hdr *slot_hdr(struct bq *q, unsigned s)
{
	return (struct ffe_blk_hdr *)(q->hdrs + (size_t)SLOT_HDR * s);
}

static inline uint8_t *slot_status(struct bq *q, unsigned s)
{
	return q->hdrs + (size_t)SLOT_HDR * s + sizeof(struct ffe_blk_hdr);
}

/* A completion of slot s seen. */
static inline void slot_done(struct bench *b, struct bq *q, unsigned s, uint64_t now)
{
	struct slot *sl = &q->slots[s];

	sl->busy = false;
	if (*slot_status(q, s) != 0)
		q->errors++;
	if (b->measuring) {
		hist_add(&b->hist, now - sl->ts);
		q->ios++;
	}
	q->free[q->nfree++] = (uint16_t)s;
}

/* Packed: used descriptors from the next used offset on; each one stands
 * for a three-descriptor chain (every request's). */
static inline unsigned reap_packed(struct bench *b, struct bq *q, uint64_t now)
{
	unsigned n = 0;

	while (n < q->inflight && pk_used_at(q, q->pk_used_off, q->pk_used_wrap)) {
		uint16_t id;

		rmb();
		id = READ_ONCE(q->pdesc[q->pk_used_off].id);
		if (id >= q->nslots || !q->slots[id].busy)
			die("%s q%u: used descriptor at %u names buffer id %u, not a request in flight",
			    q->dev->path, q->index, q->pk_used_off, id);
		slot_done(b, q, id, now);
		pk_step(q, &q->pk_used_off, &q->pk_used_wrap, 3);
		n++;
	}
	q->inflight -= n;
	return n;
}

/* Collect completions; returns how many. */
static inline unsigned reap(struct bench *b, struct bq *q, uint64_t now)
{
	if (q->packed)
		return reap_packed(b, q, now);
	uint16_t idx = READ_ONCE(q->used->idx), n;

	if (idx == q->last_used)
		return 0;
	rmb();
	n = (uint16_t)(idx - q->last_used);
	if (n > q->inflight)
		die("%s q%u: used index moved by %u with %u requests in flight",
		    q->dev->path, q->index, n, q->inflight);
	for (unsigned i = 0; i < n; i++) {
		uint32_t id = READ_ONCE(q->used->ring[q->last_used++ & q->mask].id);
		unsigned s = id / 3;

		if (id % 3 || s >= q->nslots || !q->slots[s].busy)
			die("%s q%u: used element names descriptor %u, not a request in flight",
			    q->dev->path, q->index, id);
		slot_done(b, q, s, now);
	}
	q->inflight -= n;
	return n;
}

/* Where the next request goes and whether it writes. */
static inline uint64_t next_block(struct bench *b, bool *write)
{
	uint64_t blk;

	if (b->filling) {
		*write = true;
		b->fill_left--;
		return b->seq_next++;
	}
	switch (b->o.pattern) {
	case P_RANDREAD:
		*write = false;
		return rnd_below(&b->rng, b->nblocks);
	case P_RANDWRITE:
		*write = true;
		return rnd_below(&b->rng, b->nblocks);
	case P_RANDRW:
		*write = rnd_below(&b->rng, 100) >= b->o.rwmix;
		return rnd_below(&b->rng, b->nblocks);
	case P_READ:
	case P_WRITE:
		*write = b->o.pattern == P_WRITE;
		blk = b->seq_next++;
		if (b->seq_next >= b->nblocks)
			b->seq_next = 0;
		return blk;
	}
	return 0;
}

/* Was descriptor (off, wrap) of the Device Area's event made available
 * among the descriptors old..new-1 (counts since the ring began)? */
static bool pk_event_crossed(const struct bq *q, uint16_t off_wrap, uint64_t old, uint64_t new)
{
	uint64_t period = 2ull * q->num, base = new - new % period;
	int64_t e = (int64_t)base + (off_wrap & 0x7fff) + ((off_wrap & 0x8000) ? 0 : q->num);

	if (e >= (int64_t)new)
		e -= (int64_t)period;
	return e >= (int64_t)old && e < (int64_t)new;
}

/* Packed: each request's three descriptors where the ring stands; the
 * batch's first flags stored last, after one release barrier. */
static inline void submit_packed(struct bench *b, struct bq *q, uint64_t now)
{
	uint32_t sectors_per_block = b->o.bs / 512;
	size_t bs = align_up(b->o.bs, PAGE);
	uint64_t old = q->pk_avail_cnt;
	uint16_t first = q->pk_avail_off, first_flags = 0;
	unsigned n = 0;
	struct ffe_event_suppress ev;
	bool kick;

	while (q->nfree && (!b->filling || b->fill_left)) {
		unsigned s = q->free[--q->nfree];
		struct slot *sl = &q->slots[s];
		struct ffe_blk_hdr *h = slot_hdr(q, s);
		uint64_t hgpa = q->hdrs_gpa + (uint64_t)SLOT_HDR * s;
		bool w = false;
		uint64_t blk = next_block(b, &w);

		h->type = w ? FFE_BLK_T_OUT : FFE_BLK_T_IN;
		sl->write = w;
		h->sector = blk * sectors_per_block;
		*slot_status(q, s) = 0xff;
		sl->busy = true;
		sl->ts = now;
		for (unsigned k = 0; k < 3; k++) {
			struct ffe_pdesc *d = &q->pdesc[q->pk_avail_off];
			uint16_t f = q->pk_avail_wrap ? FFE_PDESC_F_AVAIL : FFE_PDESC_F_USED;

			if (k == 0) {
				d->addr = hgpa;
				d->len = sizeof(struct ffe_blk_hdr);
				f |= FFE_DESC_F_NEXT;
			} else if (k == 1) {
				d->addr = q->data_gpa + (uint64_t)bs * s;
				d->len = b->o.bs;
				f |= FFE_DESC_F_NEXT | (w ? 0 : FFE_DESC_F_WRITE);
			} else {
				d->addr = hgpa + sizeof(struct ffe_blk_hdr);
				d->len = 1;
				f |= FFE_DESC_F_WRITE;
			}
			d->id = (uint16_t)s;
			if (n == 0 && k == 0)
				first_flags = f;
			else
				d->flags = f;
			pk_step(q, &q->pk_avail_off, &q->pk_avail_wrap, 1);
		}
		n++;
	}
	if (!n)
		return;
	q->inflight += n;
	q->pk_avail_cnt += 3 * n;
	wmb();
	WRITE_ONCE(q->pdesc[first].flags, first_flags);
	mb();
	ev.flags = READ_ONCE(q->dev_ev->flags);
	ev.off_wrap = READ_ONCE(q->dev_ev->off_wrap);
	if ((ev.flags & 3) == FFE_RING_EVENT_DISABLE)
		kick = false;
	else if ((ev.flags & 3) == FFE_RING_EVENT_DESC && q->event_idx)
		kick = pk_event_crossed(q, ev.off_wrap, old, q->pk_avail_cnt);
	else
		kick = true;
	if (kick) {
		uint64_t one = 1;
		if (write(q->kick_fd, &one, sizeof(one)) != sizeof(one))
			die("kick: %s", strerror(errno));
		q->kicks++;
	}
}

/* Publish new requests in every free slot (as many as the fill allows). */
static inline void submit(struct bench *b, struct bq *q, uint64_t now)
{
	uint16_t old = q->avail_idx;
	uint32_t sectors_per_block = b->o.bs / 512;
	bool kick;

	if (!q->nfree || b->stopping)
		return;
	if (q->packed) {
		submit_packed(b, q, now);
		return;
	}
	while (q->nfree && (!b->filling || b->fill_left)) {
		unsigned s = q->free[--q->nfree];
		struct slot *sl = &q->slots[s];
		struct ffe_blk_hdr *h = slot_hdr(q, s);
		bool w = false;
		uint64_t blk = next_block(b, &w);

		if (b->o.fresh_desc) {
			struct ffe_desc *dd = &q->desc[3 * s];
			uint64_t hgpa = q->hdrs_gpa + (uint64_t)SLOT_HDR * s;

			sl->write = w;
			h->type = w ? FFE_BLK_T_OUT : FFE_BLK_T_IN;
			dd[0] = (struct ffe_desc){ hgpa, sizeof(struct ffe_blk_hdr), FFE_DESC_F_NEXT,
						   (uint16_t)(3 * s + 1) };
			dd[1] = (struct ffe_desc){ q->data_gpa + (uint64_t)align_up(b->o.bs, PAGE) * s,
						   b->o.bs, FFE_DESC_F_NEXT | (w ? 0 : FFE_DESC_F_WRITE),
						   (uint16_t)(3 * s + 2) };
			dd[2] = (struct ffe_desc){ hgpa + sizeof(struct ffe_blk_hdr), 1,
						   FFE_DESC_F_WRITE, 0 };
		} else if (w != sl->write) {
			sl->write = w;
			h->type = w ? FFE_BLK_T_OUT : FFE_BLK_T_IN;
			q->desc[3 * s + 1].flags = FFE_DESC_F_NEXT | (w ? 0 : FFE_DESC_F_WRITE);
		}
		h->sector = blk * sectors_per_block;
		*slot_status(q, s) = 0xff;
		sl->busy = true;
		sl->ts = now;
		q->avail->ring[q->avail_idx++ & q->mask] = (uint16_t)(3 * s);
	}
	q->inflight += (uint16_t)(q->avail_idx - old);
	wmb();
	WRITE_ONCE(q->avail->idx, q->avail_idx);
	mb();
	if (q->event_idx)
		kick = need_event(READ_ONCE(*avail_event(q)), q->avail_idx, old);
	else
		kick = !(READ_ONCE(q->used->flags) & FFE_USED_F_NO_NOTIFY);
	if (kick) {
		uint64_t one = 1;
		if (write(q->kick_fd, &one, sizeof(one)) != sizeof(one))
			die("kick: %s", strerror(errno));
		q->kicks++;
	}
}

static unsigned total_inflight(const struct bench *b)
{
	unsigned n = 0;
	for (unsigned i = 0; i < b->nq; i++)
		n += b->qs[i]->inflight;
	return n;
}

/* irq mode: ask for a call, look once more, sleep on the call eventfd(s). */
static void wait_for_call(struct bench *b)
{
	bool ready = false;
	uint64_t v;

	if (!total_inflight(b))
		return;
	for (unsigned i = 0; i < b->nq; i++) {
		struct bq *q = b->qs[i];
		if (!q->inflight)
			continue;
		q->want = 1;
		if (q->packed) {
			uint16_t off = q->pk_used_off;
			bool wr = q->pk_used_wrap;

			if (q->event_idx) {
				/* a call when the want-th next used descriptor is
				 * written (3 ring descriptors per request) */
				q->want = b->o.coalesce < q->inflight ? b->o.coalesce : q->inflight;
				pk_step(q, &off, &wr, 3 * (q->want - 1));
				WRITE_ONCE(q->drv_ev->off_wrap, FFE_PACKED_BASE(off, wr));
				WRITE_ONCE(q->drv_ev->flags, FFE_RING_EVENT_DESC);
			} else {
				WRITE_ONCE(q->drv_ev->flags, FFE_RING_EVENT_ENABLE);
			}
		} else if (q->event_idx) {
			/* a call once `want` more are used: interrupt coalescing */
			q->want = b->o.coalesce < q->inflight ? b->o.coalesce : q->inflight;
			WRITE_ONCE(q->avail->ring[q->num], (uint16_t)(q->last_used + q->want - 1));
		} else
			WRITE_ONCE(q->avail->flags, 0);
	}
	mb();
	for (unsigned i = 0; i < b->nq; i++) {
		struct bq *q = b->qs[i];
		if (!q->inflight)
			continue;
		if (q->packed) {
			uint16_t off = q->pk_used_off;
			bool wr = q->pk_used_wrap;

			pk_step(q, &off, &wr, 3 * (q->want - 1));
			if (pk_used_at(q, off, wr))
				ready = true;
		} else if ((uint16_t)(READ_ONCE(q->used->idx) - q->last_used) >= q->want)
			ready = true;
	}
	if (!ready) {
		/* The back-end may have made the eventfd non-blocking (the open
		 * file is shared with it), so sleep in epoll, then drain. */
		struct epoll_event evs[MAX_DEVS * MAX_QUEUES];
		int n = epoll_wait(b->epfd, evs, MAX_DEVS * MAX_QUEUES, -1);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++) {
			struct bq *q = evs[i].data.ptr;
			(void)!read(q->call_fd, &v, sizeof(v));
			q->wakeups++;
		}
	}
	for (unsigned i = 0; i < b->nq; i++)
		if (b->qs[i]->packed)
			WRITE_ONCE(b->qs[i]->drv_ev->flags, FFE_RING_EVENT_DISABLE);
		else if (!b->qs[i]->event_idx)
			WRITE_ONCE(b->qs[i]->avail->flags, FFE_AVAIL_F_NO_INTERRUPT);
	/* with EVENT_IDX used_event stays where it was: already crossed, it
	 * asks for nothing more until the next wait re-arms it */
}

struct window {
	uint64_t mono0, mono1, tick0, tick1;
	uint64_t cpu0, cpu1;            /* client (this thread) cpu ns */
	uint64_t tcpu0, tcpu1;          /* target cpu ns */
	bool tcpu_ok;
};

/* CPU time (ns) the target process used so far: the sum of its threads'
 * run time from /proc/PID/task/TID/schedstat (ns resolution), or, where
 * that is missing, utime+stime from /proc/PID/stat (clock ticks). */
static bool target_cpu(long pid, uint64_t *out)
{
	char path[96], buf[1024], *p;
	unsigned long long ut, st, sum = 0;
	struct dirent *de;
	ssize_t n;
	DIR *dir;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	dir = opendir(path);
	if (dir) {
		bool ok = true;
		unsigned count = 0;
		while (ok && (de = readdir(dir))) {
			unsigned long long v;
			FILE *f;
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%ld/task/%.20s/schedstat", pid, de->d_name);
			f = fopen(path, "re");
			if (!f)
				continue;       /* the thread just exited */
			if (fscanf(f, "%llu", &v) == 1) {
				sum += v;
				count++;
			} else {
				ok = false;
			}
			fclose(f);
		}
		closedir(dir);
		if (ok && count) {
			*out = sum;
			return true;
		}
	}

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');  /* the command name may contain anything */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return false;
	*out = (ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK));
	return true;
}

static void window_start(struct bench *b, struct window *w)
{
	w->tcpu_ok = b->o.pid > 0 && target_cpu(b->o.pid, &w->tcpu0);
	w->cpu0 = cputime_ns(CLOCK_THREAD_CPUTIME_ID);
	clock_pair(&w->tick0, &w->mono0);
}

static void window_end(struct bench *b, struct window *w)
{
	clock_pair(&w->tick1, &w->mono1);
	w->cpu1 = cputime_ns(CLOCK_THREAD_CPUTIME_ID);
	if (w->tcpu_ok)
		w->tcpu_ok = target_cpu(b->o.pid, &w->tcpu1);
#ifdef HAVE_RDTSC
	/* The whole window calibrates the tick rate better than the start. */
	if (w->mono1 - w->mono0 > 100000000)
		ticks_per_ns = (double)(w->tick1 - w->tick0) / (double)(w->mono1 - w->mono0);
#endif
}

static double window_target_pct(const struct window *w)
{
	double secs = (double)(w->mono1 - w->mono0) / 1e9;
	return w->tcpu_ok ? (double)(w->tcpu1 - w->tcpu0) / 1e9 / secs * 100.0 : -1.0;
}

static double window_client_pct(const struct window *w)
{
	return (double)(w->cpu1 - w->cpu0) / (double)(w->mono1 - w->mono0) * 100.0;
}

/* Run until deadline (ticks), then stop submitting and drain. */
/* --dirty-log: what a migration does with the log, every LOG_SYNC_MS:
 * take the bits (clearing them) and count the pages to send. */
static void *log_sync_main(void *arg)
{
	struct bench *b = arg;
	struct timespec ts = { 0, LOG_SYNC_MS * 1000000L };

	while (!atomic_load(&b->log_stop)) {
		uint64_t pages = 0;

		nanosleep(&ts, NULL);
		for (unsigned i = 0; i < b->ndev; i++) {
			uint64_t *w = (uint64_t *)(void *)b->devs[i].log;

			for (size_t k = 0; w && k < b->devs[i].log_len / 8; k++)
				if (READ_ONCE(w[k]))
					pages += (uint64_t)__builtin_popcountll(
						__atomic_exchange_n(&w[k], 0, __ATOMIC_ACQ_REL));
		}
		atomic_fetch_add(&b->log_pages, pages);
		atomic_fetch_add(&b->log_syncs, 1);
	}
	return NULL;
}

static void log_sync(struct bench *b, bool on)
{
	if (!b->o.dirty_log)
		return;
	if (on) {
		atomic_store(&b->log_stop, false);
		atomic_store(&b->log_pages, 0);
		atomic_store(&b->log_syncs, 0);
		if (pthread_create(&b->log_thread, NULL, log_sync_main, b))
			die("dirty log thread: %s", strerror(errno));
	} else {
		atomic_store(&b->log_stop, true);
		pthread_join(b->log_thread, NULL);
	}
}

static void run(struct bench *b, uint64_t measure_from, uint64_t deadline, struct window *w)
{
	bool irq = b->o.irq;

	b->stopping = false;
	for (;;) {
		uint64_t now = ticks();
		unsigned done = 0;

		for (unsigned i = 0; i < b->nq; i++) {
			struct bq *q = b->qs[i];
			done += reap(b, q, now);
			submit(b, q, now);
		}
		if (b->o.selftest && b->o.selftest_cpu < 0) {
			uint64_t t0 = ticks();
			for (unsigned i = 0; i < b->nq; i++)
				fake_device(b->qs[i]);
			if (b->measuring)
				b->dev_ticks += ticks() - t0;
		}
		if (!b->measuring && !b->stopping && measure_from && now >= measure_from) {
			hist_reset(&b->hist);
			for (unsigned i = 0; i < b->nq; i++)
				b->qs[i]->ios = b->qs[i]->kicks = b->qs[i]->wakeups = 0;
			b->dev_ticks = 0;
			b->measuring = true;
			log_sync(b, true);
			if (w)
				window_start(b, w);
		}
		if (!b->stopping && (now >= deadline || (b->filling && !b->fill_left))) {
			if (b->measuring && w)
				window_end(b, w);
			if (b->measuring)
				log_sync(b, false);
			b->measuring = false;
			b->stopping = true;
		}
		if (b->stopping && total_inflight(b) == 0)
			break;
		/* with coalescing, sleep until a batch is there, not only when
		 * the last pass found nothing (completions trickling in from a
		 * busy device would keep the client spinning) */
		if (irq && (!done || b->o.coalesce > 1))
			wait_for_call(b);
	}
}

/* Idle test: stay connected and silent, then time single requests that
 * each follow an idle gap (the back-end had every reason to sleep). */
static void run_idle(struct bench *b, struct window *w)
{
	struct timespec gap = { b->o.probe_gap_ms / 1000, (long)(b->o.probe_gap_ms % 1000) * 1000000 };
	struct timespec idle = { (time_t)b->o.idle_s,
				 (long)((b->o.idle_s - (double)(time_t)b->o.idle_s) * 1e9) };

	window_start(b, w);
	while (nanosleep(&idle, &idle) < 0 && errno == EINTR)
		;
	window_end(b, w);

	hist_reset(&b->hist);
	b->measuring = true;
	for (unsigned p = 0; p < b->o.probes; p++) {
		struct bq *q = b->qs[p % b->nq];
		uint64_t now;

		nanosleep(&gap, NULL);
		now = ticks();
		submit(b, q, now);      /* iodepth is 1 in this mode */
		while (q->inflight) {
			if (b->o.irq)
				wait_for_call(b);
			reap(b, q, ticks());
		}
	}
	b->measuring = false;
}

/* --- report -------------------------------------------------------------------- */

static double t2us(uint64_t t)
{
	return (double)t / ticks_per_ns / 1000.0;
}

static void report(struct bench *b, const struct window *w, bool idle_test)
{
	uint64_t ios = 0, errors = 0, kicks = 0, wakeups = 0;
	double secs = (double)(w->mono1 - w->mono0) / 1e9;
	double iops, mibs, tpct = window_target_pct(w), cpct = window_client_pct(w);
	const struct hist *h = &b->hist;
	char sockets[4096] = "";
	size_t off = 0;

	for (unsigned i = 0; i < b->nq; i++) {
		ios += b->qs[i]->ios;
		errors += b->qs[i]->errors;
		kicks += b->qs[i]->kicks;
		wakeups += b->qs[i]->wakeups;
	}
	for (unsigned i = 0; i < b->ndev && off < sizeof(sockets) - 1; i++)
		off += (size_t)snprintf(sockets + off, sizeof(sockets) - off, "%s%s",
					i ? "," : "", b->devs[i].path);
	if (!b->o.json && b->ndev > 2)
		snprintf(sockets, sizeof(sockets), "%s (+%u more)", b->devs[0].path, b->ndev - 1);
	iops = idle_test ? 0 : (double)ios / secs;
	mibs = iops * b->o.bs / 1048576.0;

	if (b->o.json) {
		printf("{\"sockets\":\"%s\",\"pattern\":\"%s\",\"bs\":%u,\"iodepth\":%u,"
		       "\"queues\":%u,\"mode\":\"%s\",\"coalesce\":%u,\"event_idx\":%s,"
		       "\"ring\":\"%s\",",
		       sockets, idle_test ? "idle" : pattern_names[b->o.pattern], b->o.bs,
		       b->o.iodepth, b->o.queues, b->o.irq ? "irq" : "poll", b->o.coalesce,
		       b->nq && b->qs[0]->event_idx ? "true" : "false",
		       b->o.packed ? "packed" : b->o.fresh_desc ? "split-fresh" : "split");
		if (idle_test)
			printf("\"idle_s\":%.3f,\"idle_target_cpu_pct\":%.3f,\"probes\":%" PRIu64 ","
			       "\"probe_gap_ms\":%u,",
			       secs, tpct, h->n, b->o.probe_gap_ms);
		else
			printf("\"time_s\":%.3f,\"ios\":%" PRIu64 ",\"iops\":%.0f,\"mib_s\":%.1f,"
			       "\"kicks_per_io\":%.4f,\"wakeups_per_io\":%.4f,",
			       secs, ios, iops, mibs, ios ? (double)kicks / ios : 0.0,
			       ios ? (double)wakeups / ios : 0.0);
		printf("\"lat_us\":{\"avg\":%.3f,\"min\":%.3f,\"p50\":%.3f,\"p99\":%.3f,"
		       "\"p99_9\":%.3f,\"max\":%.3f},",
		       h->n ? t2us(h->sum / h->n) : 0.0, h->n ? t2us(h->min) : 0.0,
		       t2us(hist_pct(h, 0.5)), t2us(hist_pct(h, 0.99)), t2us(hist_pct(h, 0.999)),
		       t2us(h->max));
		if (b->o.selftest)
			printf("\"ns_per_io\":%.2f,\"client_ns_per_io\":%.2f,",
			       ios ? secs * 1e9 / (double)ios : 0.0,
			       ios ? (secs * 1e9 - (double)b->dev_ticks / ticks_per_ns) / (double)ios : 0.0);
		if (!idle_test) {
			printf("\"dev_iops\":[");
			for (unsigned d = 0; d < b->ndev; d++) {
				uint64_t n = 0;
				for (unsigned i = 0; i < b->devs[d].nq; i++)
					n += b->devs[d].q[i].ios;
				printf("%s%.0f", d ? "," : "", (double)n / secs);
			}
			printf("],");
		}
		printf("\"errors\":%" PRIu64 ",\"target_cpu_pct\":%.1f,\"client_cpu_pct\":%.1f}\n",
		       errors, tpct, idle_test ? 0.0 : cpct);
		return;
	}
	if (idle_test) {
		printf("%s: idle %.1fs with %u device(s) connected: target cpu %.2f%% of a core\n",
		       sockets, secs, b->ndev, tpct);
		printf("  first request after %u ms idle (%" PRIu64 " probes, %s, %u B read):\n"
		       "  lat us: avg %.1f  min %.1f  p50 %.1f  p99 %.1f  max %.1f\n",
		       b->o.probe_gap_ms, h->n, b->o.irq ? "irq" : "poll", b->o.bs,
		       h->n ? t2us(h->sum / h->n) : 0.0, h->n ? t2us(h->min) : 0.0,
		       t2us(hist_pct(h, 0.5)), t2us(hist_pct(h, 0.99)), t2us(h->max));
		if (errors)
			printf("  errors: %" PRIu64 "\n", errors);
		return;
	}
	printf("%s: %s bs=%u iodepth=%u queues=%u mode=%s%s%s, %.1fs\n", sockets,
	       pattern_names[b->o.pattern], b->o.bs, b->o.iodepth, b->o.queues,
	       b->o.irq ? "irq" : "poll", b->nq && b->qs[0]->event_idx ? " event_idx" : "",
	       b->o.packed ? " packed" : b->o.fresh_desc ? " fresh-desc" : "", secs);
	printf("  iops %.0f  %.1f MiB/s  (%" PRIu64 " I/Os, %" PRIu64 " errors)\n",
	       iops, mibs, ios, errors);
	printf("  lat us: avg %.2f  min %.2f  p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
	       h->n ? t2us(h->sum / h->n) : 0.0, h->n ? t2us(h->min) : 0.0,
	       t2us(hist_pct(h, 0.5)), t2us(hist_pct(h, 0.99)), t2us(hist_pct(h, 0.999)),
	       t2us(h->max));
	printf("  kicks/io %.4f  wakeups/io %.4f\n", ios ? (double)kicks / ios : 0.0,
	       ios ? (double)wakeups / ios : 0.0);
	if (b->o.selftest && b->o.selftest_cpu >= 0)
		printf("  selftest: %.2f ns per request with the fake device polling on cpu %d\n",
		       ios ? secs * 1e9 / (double)ios : 0.0, b->o.selftest_cpu);
	else if (b->o.selftest)
		printf("  selftest: %.2f ns per request (client + fake device), %.2f ns client only\n",
		       ios ? secs * 1e9 / (double)ios : 0.0,
		       ios ? (secs * 1e9 - (double)b->dev_ticks / ticks_per_ns) / (double)ios : 0.0);
	if (b->o.dirty_log && atomic_load(&b->log_syncs)) {
		uint64_t syncs = atomic_load(&b->log_syncs), pages = atomic_load(&b->log_pages);
		printf("  dirty log: %" PRIu64 " syncs (every %d ms), %.1f pages dirty per sync, "
		       "%.0f pages/s\n", syncs, LOG_SYNC_MS, (double)pages / (double)syncs,
		       (double)pages / (double)syncs * 1000.0 / LOG_SYNC_MS);
	}
	if (tpct >= 0)
		printf("  cpu: target %.1f%%  client %.1f%% (of one core)\n", tpct, cpct);
	else
		printf("  cpu: client %.1f%% (of one core)\n", cpct);
}

/* --- options -------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"usage: vhost-bench --socket PATH [--socket PATH2 ...] [options]\n"
"       vhost-bench --selftest [options]\n"
"  --pattern P      randread (default) | randwrite | read | write | randrw\n"
"  --rwmix PCT      reads in %% for randrw (default 50)\n"
"  --bs BYTES       request size, multiple of 512 (default 4096; K/M suffixes)\n"
"  --iodepth N      requests in flight per queue (default 1)\n"
"  --queues N       virtqueues per device (default 1)\n"
"  --time SEC       measured duration (default 10)\n"
"  --ramp SEC       unmeasured warm-up before it (default 1)\n"
"  --mode M         poll: busy-poll the used rings (default)\n"
"                   irq: sleep on the call eventfd between completions\n"
"  --coalesce N     irq mode with EVENT_IDX: ask for a call once N more requests\n"
"                   completed (or all in flight), not at each one (default 1)\n"
"  --qsize N        ring size, power of two (default: 256, or larger for deep queues)\n"
"  --size BYTES     address only the first BYTES of the device\n"
"  --pid PID        report this process's CPU use (the target) over the run\n"
"                   (sum of its threads' /proc/PID/task/TID/schedstat)\n"
"  --cpu N          pin this client to CPU N\n"
"  --no-event-idx   do not negotiate VIRTIO_RING_F_EVENT_IDX\n"
"  --packed         negotiate VIRTIO_F_RING_PACKED: packed virtqueues (the\n"
"                   back-end must offer it); without it, split ones\n"
"  --fresh-desc     split rings: write a request's three descriptors at each\n"
"                   submission, as a guest driver does (default: built once\n"
"                   per slot, only the avail entry written per request)\n"
"  --dirty-log      share a dirty log and log every write (LOG_ALL), a thread\n"
"                   clearing it every 10 ms as a migration would; reports the\n"
"                   pages found dirty\n"
"  --fill           first write the whole addressed range once (sequentially);\n"
"                   with --time 0 do only that\n"
"  --idle SEC       idle test: stay connected and silent for SEC (target CPU is\n"
"                   measured), then time --probes single requests, each after\n"
"                   --probe-gap MS of silence (defaults 20 and 200)\n"
"  --selftest       no back-end: an in-process fake device completes every\n"
"                   request at once; reports the client's ns per request\n"
"  --selftest-cpu N the same, the fake device polling on its own thread on\n"
"                   cpu N (cache lines cross cores as with a real back-end)\n"
"  --json           one JSON object on stdout instead of text\n"
"Exit status: 0 ok, 1 failure, 2 usage, 3 some requests failed.\n");
}

static uint64_t parse_size(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		goto bad;
	switch (*end) {
	case '\0': return v;
	case 'k': case 'K': v <<= 10; break;
	case 'm': case 'M': v <<= 20; break;
	case 'g': case 'G': v <<= 30; break;
	default: goto bad;
	}
	if (end[1] && !(end[1] == 'i' && end[2] == 'B' && !end[3]) && !(end[1] == 'B' && !end[2]))
		goto bad;
	return v;
bad:
	fprintf(stderr, "vhost-bench: bad value for %s: '%s'\n", opt, s);
	exit(2);
}

static double parse_secs(const char *opt, const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || v < 0 || v > 86400) {
		fprintf(stderr, "vhost-bench: bad value for %s: '%s'\n", opt, s);
		exit(2);
	}
	return v;
}

static void parse_opts(struct opts *o, int argc, char **argv)
{
	enum { O_SOCKET = 256, O_PATTERN, O_RWMIX, O_BS, O_IODEPTH, O_QUEUES, O_TIME, O_RAMP,
	       O_MODE, O_QSIZE, O_PID, O_CPU, O_JSON, O_SIZE, O_NOEVIDX, O_DIRTYLOG, O_FILL, O_SELFTEST,
	       O_IDLE, O_PROBES, O_GAP, O_HELP, O_SELFTEST_CPU, O_COALESCE, O_PACKED,
	       O_FRESH_DESC };
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "pattern", required_argument, NULL, O_PATTERN },
		{ "rwmix", required_argument, NULL, O_RWMIX },
		{ "bs", required_argument, NULL, O_BS },
		{ "iodepth", required_argument, NULL, O_IODEPTH },
		{ "queues", required_argument, NULL, O_QUEUES },
		{ "time", required_argument, NULL, O_TIME },
		{ "ramp", required_argument, NULL, O_RAMP },
		{ "mode", required_argument, NULL, O_MODE },
		{ "coalesce", required_argument, NULL, O_COALESCE },
		{ "qsize", required_argument, NULL, O_QSIZE },
		{ "pid", required_argument, NULL, O_PID },
		{ "cpu", required_argument, NULL, O_CPU },
		{ "json", no_argument, NULL, O_JSON },
		{ "size", required_argument, NULL, O_SIZE },
		{ "no-event-idx", no_argument, NULL, O_NOEVIDX },
		{ "packed", no_argument, NULL, O_PACKED },
		{ "fresh-desc", no_argument, NULL, O_FRESH_DESC },
		{ "dirty-log", no_argument, NULL, O_DIRTYLOG },
		{ "fill", no_argument, NULL, O_FILL },
		{ "selftest", no_argument, NULL, O_SELFTEST },
		{ "selftest-cpu", required_argument, NULL, O_SELFTEST_CPU },
		{ "idle", required_argument, NULL, O_IDLE },
		{ "probes", required_argument, NULL, O_PROBES },
		{ "probe-gap", required_argument, NULL, O_GAP },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct opts){ .pattern = P_RANDREAD, .rwmix = 50, .bs = 4096, .iodepth = 1,
			    .queues = 1, .time_s = 10, .ramp_s = 1, .pid = -1, .cpu = -1,
			    .probes = 20, .probe_gap_ms = 200, .connect_timeout_s = 5, .coalesce = 1,
			    .selftest_cpu = -1 };
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_SOCKET:
			if (o->nsockets == MAX_DEVS) {
				fprintf(stderr, "vhost-bench: at most %d sockets\n", MAX_DEVS);
				exit(2);
			}
			o->sockets[o->nsockets++] = optarg;
			break;
		case O_PATTERN: {
			unsigned i;
			for (i = 0; i < sizeof(pattern_names) / sizeof(pattern_names[0]); i++)
				if (strcmp(optarg, pattern_names[i]) == 0)
					break;
			if (i == sizeof(pattern_names) / sizeof(pattern_names[0])) {
				fprintf(stderr, "vhost-bench: unknown pattern '%s'\n", optarg);
				exit(2);
			}
			o->pattern = (enum pattern)i;
			break;
		}
		case O_RWMIX: o->rwmix = (unsigned)parse_size("--rwmix", optarg); break;
		case O_BS: o->bs = (uint32_t)parse_size("--bs", optarg); break;
		case O_IODEPTH: o->iodepth = (unsigned)parse_size("--iodepth", optarg); break;
		case O_QUEUES: o->queues = (unsigned)parse_size("--queues", optarg); break;
		case O_TIME: o->time_s = parse_secs("--time", optarg); break;
		case O_RAMP: o->ramp_s = parse_secs("--ramp", optarg); break;
		case O_MODE:
			if (strcmp(optarg, "poll") == 0)
				o->irq = false;
			else if (strcmp(optarg, "irq") == 0)
				o->irq = true;
			else {
				fprintf(stderr, "vhost-bench: --mode poll|irq\n");
				exit(2);
			}
			break;
		case O_COALESCE: o->coalesce = (unsigned)parse_size("--coalesce", optarg); break;
		case O_QSIZE: o->qsize = (unsigned)parse_size("--qsize", optarg); break;
		case O_PID: o->pid = (long)parse_size("--pid", optarg); break;
		case O_CPU: o->cpu = (int)parse_size("--cpu", optarg); break;
		case O_JSON: o->json = true; break;
		case O_SIZE: o->size = parse_size("--size", optarg); break;
		case O_NOEVIDX: o->no_event_idx = true; break;
		case O_PACKED: o->packed = true; break;
		case O_FRESH_DESC: o->fresh_desc = true; break;
		case O_DIRTYLOG: o->dirty_log = true; break;
		case O_FILL: o->fill = true; break;
		case O_SELFTEST: o->selftest = true; break;
		case O_SELFTEST_CPU:
			o->selftest = true;
			o->selftest_cpu = (int)parse_size("--selftest-cpu", optarg);
			break;
		case O_IDLE: o->idle_s = parse_secs("--idle", optarg); break;
		case O_PROBES: o->probes = (unsigned)parse_size("--probes", optarg); break;
		case O_GAP: o->probe_gap_ms = (unsigned)parse_size("--probe-gap", optarg); break;
		case O_HELP: usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc || (!o->nsockets && !o->selftest) || (o->nsockets && o->selftest)) {
		usage(stderr);
		exit(2);
	}
	if (o->bs < 512 || o->bs % 512 || o->bs > (16u << 20) || !o->iodepth || !o->coalesce ||
	    !o->queues || o->queues > MAX_QUEUES || o->rwmix > 100 ||
	    (o->qsize && (o->qsize & (o->qsize - 1) || o->qsize > 32768)) ||
	    (!o->idle_s && !o->fill && o->time_s <= 0)) {
		fprintf(stderr, "vhost-bench: bad combination of values (see --help)\n");
		exit(2);
	}
	if (o->idle_s)
		o->iodepth = 1;
	if (o->selftest && o->irq) {
		fprintf(stderr, "vhost-bench: --selftest measures the polling client only\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	struct bench *b = &B;
	struct window w = { 0 };
	unsigned num, nslots, errors = 0;
	pthread_t fake_th;
	uint64_t t0;

	parse_opts(&b->o, argc, argv);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	if (b->o.cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(b->o.cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			die("cannot pin to cpu %d: %s", b->o.cpu, strerror(errno));
	}
	calibrate_ticks();
	b->rng = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32);
	hist_reset(&b->hist);

	/* Three descriptors per request: the ring must hold iodepth chains. */
	nslots = b->o.iodepth;
	num = b->o.qsize ? b->o.qsize : 256;
	while (num < 3 * nslots && !b->o.qsize)
		num *= 2;
	if (3 * nslots > num || num > 32768)
		die("--iodepth %u needs a ring of at least %u descriptors", nslots, 3 * nslots);

	if (b->o.selftest) {
		selftest_setup(b, num, nslots);
	} else {
		for (unsigned i = 0; i < b->o.nsockets; i++)
			dev_setup(b, &b->devs[i], b->o.sockets[i], num, nslots);
		b->ndev = b->o.nsockets;
	}
	b->nblocks = UINT64_MAX;
	for (unsigned i = 0; i < b->ndev; i++)
		if (b->devs[i].capacity / b->o.bs < b->nblocks)
			b->nblocks = b->devs[i].capacity / b->o.bs;
	if (b->nblocks == 0)
		die("the device is smaller than one %u-byte request", b->o.bs);
	if (b->o.irq) {
		b->epfd = epoll_create1(EPOLL_CLOEXEC);
		for (unsigned i = 0; i < b->nq; i++) {
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = b->qs[i] };
			if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->qs[i]->call_fd, &ev) < 0)
				die("epoll_ctl: %s", strerror(errno));
		}
	}

	if (b->o.fill) {
		uint64_t f0 = mono_ns();
		alarm(600);
		b->filling = true;
		b->fill_left = b->nblocks;
		b->seq_next = 0;
		run(b, 0, UINT64_MAX, NULL);
		b->filling = false;
		b->seq_next = 0;
		if (!b->o.json)
			printf("filled %" PRIu64 " bytes in %.2fs\n", b->nblocks * b->o.bs,
			       (double)(mono_ns() - f0) / 1e9);
		if (b->o.time_s <= 0 && !b->o.idle_s)
			goto done;
	}

	if (b->o.selftest && b->o.selftest_cpu >= 0) {
		if (pthread_create(&fake_th, NULL, fake_device_thread, b))
			die("cannot start the fake device thread");
	}
	if (b->o.idle_s) {
		alarm((unsigned)(b->o.idle_s + 60 + (double)b->o.probes * b->o.probe_gap_ms / 1000));
		run_idle(b, &w);
	} else {
		alarm((unsigned)(b->o.ramp_s + b->o.time_s + 60));
		t0 = ticks();
		run(b, t0 + ns_to_ticks(b->o.ramp_s * 1e9) + 1,
		    t0 + ns_to_ticks((b->o.ramp_s + b->o.time_s) * 1e9) + 1, &w);
	}
	if (b->o.selftest && b->o.selftest_cpu >= 0) {
		atomic_store(&fake_stop, true);
		pthread_join(fake_th, NULL);
	}
	alarm(0);

	report(b, &w, b->o.idle_s > 0);
done:
	for (unsigned i = 0; i < b->nq; i++)
		errors += b->qs[i]->errors != 0;
	fflush(stdout);
	if (!b->o.selftest)
		for (unsigned i = 0; i < b->ndev; i++)
			dev_teardown(&b->devs[i]);
	return errors ? 3 : 0;
}

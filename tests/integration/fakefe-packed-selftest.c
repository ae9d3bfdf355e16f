/* fakefe-packed-selftest: fakefe's packed-ring driver against a minimal
 * packed device of its own, so that a failure of the packed suites against
 * vhostd points at vhostd, not at the test library.
 *
 * The device here is a second, independent reading of virtio 1.2 section
 * 2.8, kept small: one vhost-user connection without protocol features,
 * a 16 MiB RAM disk, one thread per started queue that polls its
 * descriptor ring.  It takes up to four available buffers at a time and
 * completes them in REVERSE order (used descriptors in completion order,
 * each chain skipped by its own length), reads the buffer id from the
 * chain's last descriptor, follows indirect tables, sets WRITE and the
 * written length in used descriptors, honours the Driver Area (ENABLE,
 * DISABLE, DESC with wrap counter) for calls, and answers GET_VRING_BASE
 * with offset | wrap << 15.
 *
 * Exit 0 when every check passed, 1 otherwise. */
#include "fakefe.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
	fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* ---- the device ---------------------------------------------------------- */

#define DISK_BYTES (16u << 20)
#define NQ 2

struct dregion { uint64_t gpa, size, uva; uint8_t *p; size_t maplen; uint8_t *map; };

struct dq {
	unsigned num;
	uint64_t desc_uva, drv_uva, dev_uva;
	struct ffe_pdesc *ring;
	struct ffe_event_suppress *drv, *dev;
	uint16_t base;
	int kick, call;
	uint16_t off, used_off;
	bool wrap, used_wrap;
	uint64_t used_cnt, signalled;   /* used descriptors written (counts) */
	pthread_t th;
	atomic_bool run;
	bool started;
};

static struct {
	int sock;
	uint64_t features;
	struct dregion r[8];
	unsigned nr;
	struct dq q[NQ];
	uint8_t *disk;
} D;

static void *gpa(uint64_t a, uint64_t len)
{
	for (unsigned i = 0; i < D.nr; i++)
		if (a >= D.r[i].gpa && a - D.r[i].gpa <= D.r[i].size && len <= D.r[i].size - (a - D.r[i].gpa))
			return D.r[i].p + (a - D.r[i].gpa);
	return NULL;
}

static void *uva(uint64_t a, uint64_t len)
{
	for (unsigned i = 0; i < D.nr; i++)
		if (a >= D.r[i].uva && a - D.r[i].uva <= D.r[i].size && len <= D.r[i].size - (a - D.r[i].uva))
			return D.r[i].p + (a - D.r[i].uva);
	return NULL;
}

struct seg { uint8_t *p; uint32_t len; bool w; };

/* One buffer: its segments (ring chain or indirect table), id, ring length. */
struct buf { struct seg s[FFE_MAX_DESCS + 2]; unsigned n, ring_len; uint16_t id; };

static bool take(struct dq *q, struct buf *b)
{
	uint16_t off = q->off;
	bool w = q->wrap;

	b->n = 0;
	b->ring_len = 0;
	for (;;) {
		struct ffe_pdesc *d = &q->ring[off];
		uint16_t f = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);

		if (!!(f & FFE_PDESC_F_AVAIL) != w || !!(f & FFE_PDESC_F_USED) == w)
			return false;   /* (a chain's tail is made available first) */
		b->ring_len++;
		if (f & FFE_DESC_F_INDIRECT) {
			struct ffe_pdesc *t = gpa(d->addr, d->len);

			for (unsigned k = 0; t && k < d->len / 16 && b->n < FFE_MAX_DESCS; k++)
				b->s[b->n++] = (struct seg){ gpa(t[k].addr, t[k].len), t[k].len,
							     !!(t[k].flags & FFE_DESC_F_WRITE) };
		} else {
			b->s[b->n++] = (struct seg){ gpa(d->addr, d->len), d->len,
						     !!(f & FFE_DESC_F_WRITE) };
		}
		b->id = d->id;          /* the last descriptor's counts */
		if (++off == q->num) {
			off = 0;
			w = !w;
		}
		if (!(f & FFE_DESC_F_NEXT) || b->ring_len > q->num)
			break;
	}
	q->off = off;
	q->wrap = w;
	return true;
}

/* Gather/scatter the streams and run the virtio-blk request; bytes written. */
static uint32_t serve(struct buf *b)
{
	uint8_t rd[65536 + 64], *wr;
	size_t nrd = 0, nwr = 0, cap = 0;
	struct ffe_blk_hdr h;
	uint8_t st = FFE_BLK_S_OK;
	size_t dlen;

	for (unsigned i = 0; i < b->n; i++) {
		if (!b->s[i].p)
			return 0;
		if (b->s[i].w)
			cap += b->s[i].len;
		else if (nrd + b->s[i].len <= sizeof(rd)) {
			memcpy(rd + nrd, b->s[i].p, b->s[i].len);
			nrd += b->s[i].len;
		}
	}
	if (nrd < sizeof(h) || cap < 1)
		return 0;
	wr = calloc(1, cap);
	memcpy(&h, rd, sizeof(h));
	dlen = h.type == FFE_BLK_T_OUT ? nrd - sizeof(h) : cap - 1;
	if (h.type == FFE_BLK_T_IN || h.type == FFE_BLK_T_OUT) {
		if (dlen % 512 || h.sector > DISK_BYTES / 512 || dlen > DISK_BYTES - h.sector * 512)
			st = FFE_BLK_S_IOERR;
		else if (h.type == FFE_BLK_T_IN)
			memcpy(wr, D.disk + h.sector * 512, dlen);
		else
			memcpy(D.disk + h.sector * 512, rd + sizeof(h), dlen);
	} else if (h.type != FFE_BLK_T_FLUSH) {
		st = FFE_BLK_S_UNSUPP;
	}
	nwr = h.type == FFE_BLK_T_IN && st == FFE_BLK_S_OK ? dlen : 0;
	wr[cap - 1] = st;
	for (unsigned i = 0, o = 0; i < b->n; i++)
		if (b->s[i].w) {
			memcpy(b->s[i].p, wr + o, b->s[i].len);
			o += b->s[i].len;
		}
	free(wr);
	return (uint32_t)nwr + 1;
}

static void put_used(struct dq *q, struct buf *b, uint32_t len)
{
	struct ffe_pdesc *d = &q->ring[q->used_off];

	d->id = b->id;
	d->len = len;
	__atomic_store_n(&d->flags, (uint16_t)(FFE_DESC_F_WRITE | (q->used_wrap ?
			 FFE_PDESC_F_AVAIL | FFE_PDESC_F_USED : 0)), __ATOMIC_RELEASE);
	q->used_off = (uint16_t)(q->used_off + b->ring_len);
	if (q->used_off >= q->num) {
		q->used_off = (uint16_t)(q->used_off - q->num);
		q->used_wrap = !q->used_wrap;
	}
	q->used_cnt += b->ring_len;
}

/* A call if the Driver Area asks for one for the used descriptors written
 * since the last look (counts old..new-1, each used descriptor's position). */
static void maybe_call(struct dq *q, const uint64_t *pos, unsigned n)
{
	uint16_t f, ow;
	bool call = false;
	uint64_t one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	f = __atomic_load_n(&q->drv->flags, __ATOMIC_ACQUIRE) & 3;
	ow = __atomic_load_n(&q->drv->off_wrap, __ATOMIC_ACQUIRE);
	if (f == FFE_RING_EVENT_ENABLE)
		call = n > 0;
	else if (f == FFE_RING_EVENT_DESC)
		for (unsigned i = 0; i < n; i++) {
			uint64_t c = pos[i];
			uint16_t at = FFE_PACKED_BASE(c % q->num, !((c / q->num) & 1));

			if (at == ow)
				call = true;
		}
	if (call)
		(void)!write(q->call, &one, 8);
}

static void *dq_run(void *arg)
{
	struct dq *q = arg;

	while (atomic_load(&q->run)) {
		struct buf *b = malloc(4 * sizeof(*b));
		uint64_t pos[4];
		uint32_t len[4];
		unsigned n = 0;

		while (n < 4 && take(q, &b[n])) {
			len[n] = serve(&b[n]);
			n++;
		}
		/* complete in reverse order */
		for (unsigned i = n; i-- > 0;) {
			pos[n - 1 - i] = q->used_cnt;
			put_used(q, &b[i], len[i]);
		}
		maybe_call(q, pos, n);
		free(b);
		if (!n)
			usleep(50);
	}
	return NULL;
}

static int drecv(struct ffe_hdr *h, uint8_t *p, int *fds, unsigned *nfds)
{
	union { char b[CMSG_SPACE(sizeof(int) * 8)]; struct cmsghdr a; } cm;
	struct iovec iov = { h, sizeof(*h) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	struct cmsghdr *c;

	*nfds = 0;
	if (recvmsg(D.sock, &mh, MSG_WAITALL) != sizeof(*h))
		return -1;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_type == SCM_RIGHTS) {
			*nfds = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(fds, CMSG_DATA(c), *nfds * sizeof(int));
		}
	if (h->size && recv(D.sock, p, h->size, MSG_WAITALL) != (ssize_t)h->size)
		return -1;
	return 0;
}

static void dreply(uint32_t req, const void *p, uint32_t len)
{
	struct ffe_hdr h = { req, FFE_FLAG_VERSION | FFE_FLAG_REPLY, len };

	(void)!send(D.sock, &h, sizeof(h), MSG_NOSIGNAL);
	(void)!send(D.sock, p, len, MSG_NOSIGNAL);
}

static void dq_stop(struct dq *q)
{
	if (!q->started)
		return;
	atomic_store(&q->run, false);
	pthread_join(q->th, NULL);
	q->started = false;
}

static void *device_main(void *arg)
{
	int lsock = *(int *)arg;
	uint8_t p[4096];

	for (;;) {
		struct ffe_hdr h;
		int fds[8];
		unsigned nfds;

		D.sock = accept(lsock, NULL, NULL);
		if (D.sock < 0)
			return NULL;
		while (drecv(&h, p, fds, &nfds) == 0) {
			struct ffe_vring_state st;
			uint64_t v;

			memcpy(&st, p, sizeof(st));
			switch (h.request) {
			case FFE_GET_FEATURES:
				v = FFE_BIT(FFE_F_VERSION_1) | FFE_BIT(FFE_F_RING_INDIRECT_DESC) |
				    FFE_BIT(FFE_F_RING_EVENT_IDX) | FFE_BIT(FFE_F_RING_PACKED) |
				    FFE_BIT(FFE_F_BLK_FLUSH);
				dreply(h.request, &v, 8);
				break;
			case FFE_SET_FEATURES:
				memcpy(&D.features, p, 8);
				break;
			case FFE_SET_MEM_TABLE: {
				struct ffe_mem_table_hdr mt;

				memcpy(&mt, p, sizeof(mt));
				for (unsigned i = 0; i < D.nr; i++)
					munmap(D.r[i].map, D.r[i].maplen);
				D.nr = 0;
				for (unsigned i = 0; i < mt.nregions && i < nfds; i++) {
					struct ffe_mem_region r;

					memcpy(&r, p + sizeof(mt) + i * sizeof(r), sizeof(r));
					D.r[i] = (struct dregion){ r.gpa, r.size, r.uva, NULL,
								   r.size + r.mmap_offset, NULL };
					D.r[i].map = mmap(NULL, D.r[i].maplen, PROT_READ | PROT_WRITE,
							  MAP_SHARED, fds[i], 0);
					D.r[i].p = D.r[i].map + r.mmap_offset;
					close(fds[i]);
				}
				D.nr = mt.nregions;
				break;
			}
			case FFE_SET_VRING_NUM: D.q[st.index].num = st.num; break;
			case FFE_SET_VRING_BASE: D.q[st.index].base = (uint16_t)st.num; break;
			case FFE_SET_VRING_ADDR: {
				struct ffe_vring_addr a;
				struct dq *q;

				memcpy(&a, p, sizeof(a));
				q = &D.q[a.index];
				q->ring = uva(a.desc, 16ull * q->num);
				q->drv = uva(a.avail, 4);
				q->dev = uva(a.used, 4);
				break;
			}
			case FFE_SET_VRING_CALL:
				D.q[p[0]].call = nfds ? fds[0] : -1;
				break;
			case FFE_SET_VRING_KICK: {
				/* no PROTOCOL_FEATURES: the ring starts with its kick fd */
				struct dq *q = &D.q[p[0]];

				q->kick = nfds ? fds[0] : -1;
				dq_stop(q);
				q->off = q->used_off = q->base & 0x7fff;
				q->wrap = q->used_wrap = q->base >> 15;
				q->used_cnt = q->off + (q->wrap ? 0 : q->num);
				atomic_store(&q->run, true);
				q->started = true;
				pthread_create(&q->th, NULL, dq_run, q);
				break;
			}
			case FFE_GET_VRING_BASE: {
				struct dq *q = &D.q[st.index];

				dq_stop(q);
				st.num = FFE_PACKED_BASE(q->off, q->wrap);
				dreply(h.request, &st, sizeof(st));
				break;
			}
			default:
				break;
			}
		}
		for (unsigned i = 0; i < NQ; i++)
			dq_stop(&D.q[i]);
		close(D.sock);
	}
}

/* ---- the checks ----------------------------------------------------------- */

static struct ffe *connect_fe(const char *path, bool event_idx, unsigned num)
{
	struct ffe_opts o;
	struct ffe *fe;
	int r;

	ffe_opts_init(&o);
	o.packed = true;
	o.nregions = 2;
	fe = ffe_open(path, &o);
	if (!fe)
		exit(1);
	r = ffe_setup(fe, ffe_default_features(event_idx), NQ, num);
	CHECK(r == 0, "setup: %d %s", r, fe->err);
	CHECK(fe->vq[0].packed && fe->vq[1].packed, "queues not packed");
	return fe;
}

static void rw(struct ffe_vq *vq, uint64_t sector, size_t len, uint64_t seed,
	       const struct ffe_layout *lay)
{
	uint8_t *w = malloc(len), *r = malloc(len);
	int s;

	ffe_pattern(w, len, seed);
	s = ffe_blk_write(vq, sector, w, len, lay);
	CHECK(s == 0, "write %" PRIu64 ": %d %s", sector, s, vq->fe->err);
	s = ffe_blk_read(vq, sector, r, len, lay);
	CHECK(s == 0, "read %" PRIu64 ": %d %s", sector, s, vq->fe->err);
	CHECK(ffe_pattern_ok(r, len, seed), "read-back of %" PRIu64 " differs", sector);
	free(w);
	free(r);
}

/* QD n of mixed layouts, completed out of order by the device. */
static void deep(struct ffe_vq *vq, unsigned rounds, unsigned n)
{
	static const struct ffe_layout lays[] = {
		{ FFE_L_NATURAL, 0, false }, { FFE_L_NATURAL, 1024, true }, { FFE_L_MERGED, 0, false },
		{ FFE_L_NATURAL, 2048, false }, { FFE_L_CHOPPED, 1000, true },
	};
	struct ffe_blk_io *io = calloc(n, sizeof(*io));
	uint8_t *buf = malloc(16384);

	for (unsigned r = 0; r < rounds; r++)
		for (int pass = 0; pass < 2; pass++) {
			unsigned m = 0;

			for (unsigned k = 0; k < n; k++) {
				size_t len = 512u << ((k + r) % 6);
				uint64_t seed = r * 1000 + k;

				if (!pass)
					ffe_pattern(buf, len, seed);
				ffe_blk_prep(&io[k], pass ? FFE_BLK_T_IN : FFE_BLK_T_OUT, 2000 + k * 32,
					     pass ? NULL : buf, pass ? 0 : len, pass ? len : 0, &lays[(k + r) % 5]);
				if (ffe_submit(vq, &io[k].req) != 0) {
					ffe_blk_io_release(vq, &io[k]);
					break;
				}
				m++;
			}
			ffe_kick(vq);
			CHECK(m >= n / 2, "only %u of %u submitted", m, n);
			for (unsigned k = 0; k < m; k++) {
				int w = ffe_wait(vq, &io[k].req, 2000);

				CHECK(w == 0 && ffe_blk_status(&io[k]) == 0, "round %u req %u: %d %s", r, k, w,
				      vq->fe->err);
				CHECK(io[k].req.used_flags & FFE_DESC_F_WRITE, "no WRITE in used flags");
				if (pass && w == 0)
					CHECK(ffe_pattern_ok(ffe_blk_in(&io[k]), 512u << ((k + r) % 6),
							     r * 1000 + k), "round %u req %u differs", r, k);
				ffe_blk_io_release(vq, &io[k]);
			}
		}
	free(io);
	free(buf);
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
	/* Nothing of vhostd runs here: the stand-in device serves its queues
	 * on two threads over one unlocked disk image (overlapping requests
	 * are the driver's business), which ThreadSanitizer reports. */
	puts("fakefe-packed-selftest: skipped under ThreadSanitizer (a test-only device, no vhostd code)");
	return 77;
#endif
	char path[108];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int lsock;
	pthread_t dt;
	struct ffe *fe;
	uint32_t base;

	D.disk = calloc(1, DISK_BYTES);
	snprintf(path, sizeof(path), "/tmp/fakefe-packed-%d.sock", (int)getpid());
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	lsock = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(lsock, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsock, 4) < 0) {
		perror("bind");
		return 1;
	}
	pthread_create(&dt, NULL, device_main, &lsock);

	/* every layout, ids in the last descriptor only on q1, laps of a
	 * 32-entry ring */
	fe = connect_fe(path, false, 32);
	fe->vq[1].pk_id_last_only = true;
	for (unsigned i = 0; i < 40; i++) {
		struct ffe_layout lay = { (enum ffe_layout_kind)(i % 3), i % 3 == 1 ? 0 : 1024, i % 4 == 1 };

		rw(&fe->vq[i % 2], 100 + i * 16, 4096 << (i % 3), i, &lay);
	}
	CHECK(fe->vq[0].pk_avail / 32 >= 3, "q0 did only %" PRIu64 " laps", fe->vq[0].pk_avail / 32);
	deep(&fe->vq[0], 30, 16);
	deep(&fe->vq[1], 30, 9);
	CHECK(fe->vq[0].bogus_used == 0 && fe->vq[1].bogus_used == 0, "bogus used");

	/* stop: the base carries offset and wrap counter; resume there */
	CHECK(ffe_vq_stop(fe, 0, &base) == 0, "stop");
	CHECK((uint16_t)base == ffe_vq_pk_avail_pos(&fe->vq[0]), "base %#x, driver at %#x", base,
	      ffe_vq_pk_avail_pos(&fe->vq[0]));
	CHECK(ffe_reconnect(fe) == 0, "reconnect");
	CHECK(ffe_negotiate(fe, ffe_default_features(false)) == 0, "negotiate");
	CHECK(ffe_set_mem_table(fe) == 0, "mem table");
	CHECK(ffe_vq_resume(fe, 0) == 0, "resume");
	rw(&fe->vq[0], 100, 4096, 999, NULL);
	ffe_close(fe);

	/* calls: DISABLE none, DESC exactly at the named descriptor */
	fe = connect_fe(path, true, 16);
	{
		struct ffe_vq *vq = &fe->vq[1];
		struct ffe_layout ind = { FFE_L_NATURAL, 0, true };

		rw(vq, 300, 4096, 5, &ind);     /* automatic DESC mode */
		ffe_vq_take_calls(vq);
		ffe_vq_set_call_event(vq, FFE_RING_EVENT_DISABLE, 0);
		for (int i = 0; i < 20; i++) {
			struct ffe_blk_io io;

			ffe_blk_prep(&io, FFE_BLK_T_IN, 300, NULL, 0, 4096, &ind);
			ffe_submit(vq, &io.req);
			ffe_kick(vq);
			while (!io.req.done)
				ffe_poll_used(vq);
			ffe_blk_io_release(vq, &io);
		}
		usleep(20000);
		CHECK(ffe_vq_take_calls(vq) == 0, "calls with DISABLE");
		{
			uint64_t c = vq->pk_avail + 3;  /* the 4th request's descriptor */

			ffe_vq_set_call_event(vq, FFE_RING_EVENT_DESC,
					      FFE_PACKED_BASE(c % vq->num, !((c / vq->num) & 1)));
		}
		for (int i = 0; i < 6; i++) {
			struct ffe_blk_io io;
			uint64_t n;

			ffe_blk_prep(&io, FFE_BLK_T_IN, 300, NULL, 0, 4096, &ind);
			ffe_submit(vq, &io.req);
			ffe_kick(vq);
			while (!io.req.done)
				ffe_poll_used(vq);
			ffe_blk_io_release(vq, &io);
			usleep(20000);
			n = ffe_vq_take_calls(vq);
			CHECK(n == (i == 3 ? 1u : 0u), "DESC: %" PRIu64 " calls after request %d", n, i);
		}
	}
	ffe_close(fe);

	unlink(path);
	if (failures)
		fprintf(stderr, "fakefe-packed-selftest: %d failure(s)\n", failures);
	else
		printf("fakefe-packed-selftest: PASS\n");
	return failures ? 1 : 0;
}

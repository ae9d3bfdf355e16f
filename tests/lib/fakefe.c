/* fakefe: the front-end side of vhost-user and the driver side of split
 * virtqueues, for tests.  See fakefe.h for the object model.
 *
 * Runs on the test's threads.  Trusts nothing the back-end sends: reply
 * headers, sizes and used ring contents are checked before use.
 */
#include "fakefe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define MiB (1024ull * 1024)
#define PAD_BYTES (2 * MiB)     /* file bytes before region 0 when translating */

static void ffe_seterr(struct ffe *fe, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ffe_seterr(struct ffe *fe, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fe->err, sizeof(fe->err), fmt, ap);
	va_end(ap);
}

int64_t ffe_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Regions may be added by one thread while others allocate buffers. */
static inline unsigned ffe_nregions(const struct ffe *fe)
{
	return __atomic_load_n(&fe->nregions, __ATOMIC_ACQUIRE);
}

void ffe_deadline_start(struct ffe_deadline *d, int ms)
{
	d->last = ffe_now_ms();
	d->end = d->last + (ms > 0 ? ms : 0);
	d->slice = 0;
}

int ffe_deadline_left(struct ffe_deadline *d)
{
	int64_t now = ffe_now_ms(), late = now - d->last - d->slice, left;

	if (late > FFE_STALL_MS)
		d->end += late;
	d->last = now;
	left = d->end - now;
	d->slice = left <= 0 ? 0 : left < FFE_SLICE_MS ? (int)left : FFE_SLICE_MS;
	return d->slice;
}

static void sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* ---- memory --------------------------------------------------------------- */

void ffe_opts_init(struct ffe_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->mem_size = 64 * MiB;
	o->nregions = 1;
	o->scratch_per_queue = 4 * MiB;
	o->timeout_ms = FFE_TIMEOUT_MS;
}

static int new_memfd(size_t size)
{
	int fd = memfd_create("fakefe-guest", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

static int setup_memory(struct ffe *fe)
{
	const struct ffe_opts *o = &fe->opts;
	unsigned n = o->nregions;
	bool translate = o->translate || n > 1;
	uint64_t rsz = (o->mem_size / n) & ~0xffffull;
	unsigned i;

	fe->nregions = n;
	for (i = 0; i < FFE_MAX_REGIONS; i++)
		fe->memfd[i] = -1;

	if (!translate) {
		/* QEMU's usual single region: gpa 0, uva = its own address. */
		int fd = new_memfd(o->mem_size);

		if (fd < 0)
			return fd;
		fe->memfd[0] = fd;
		fe->map_size[0] = o->mem_size;
		fe->map[0] = mmap(NULL, o->mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (fe->map[0] == MAP_FAILED) {
			fe->map[0] = NULL;
			return -errno;
		}
		fe->nmaps = 1;
		fe->r[0] = (struct ffe_region){
			.gpa = 0, .size = o->mem_size,
			.uva = (uint64_t)(uintptr_t)fe->map[0], .mmap_offset = 0,
			.fd = fd, .hva = fe->map[0],
		};
		return 0;
	}

	/* Translated layout: gpa regions with holes between them, uvas in
	 * descending order (so nothing can assume uva order == gpa order), and
	 * every region starting PAD_BYTES or more into its file. */
	for (i = 0; i < n; i++) {
		unsigned m = o->fd_per_region ? i : 0;
		uint64_t off = o->fd_per_region ? PAD_BYTES : PAD_BYTES + i * rsz;

		if (o->fd_per_region || i == 0) {
			size_t fsz = o->fd_per_region ? PAD_BYTES + rsz : PAD_BYTES + n * rsz;
			int fd = new_memfd(fsz);

			if (fd < 0)
				return fd;
			fe->memfd[m] = fd;
			fe->map_size[m] = fsz;
			fe->map[m] = mmap(NULL, fsz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (fe->map[m] == MAP_FAILED) {
				fe->map[m] = NULL;
				return -errno;
			}
			fe->nmaps = m + 1;
		}
		fe->r[i] = (struct ffe_region){
			.gpa = o->contiguous_gpa ? 0x40000000ull + i * rsz
						 : 0x40000000ull * (2 * i + 1),
			.size = rsz,
			.uva = 0x600000000000ull - (uint64_t)i * 0x100000000ull,
			.mmap_offset = off,
			.fd = fe->memfd[m],
			.hva = fe->map[m] + off,
		};
	}
	return 0;
}

int ffe_alloc(struct ffe *fe, size_t len, size_t align, int region,
	      struct ffe_buf *out)
{
	static unsigned rr;
	unsigned tries, i;
	int ret = -ENOMEM;

	if (align == 0)
		align = 8;
	pthread_mutex_lock(&fe->alloc_lock);
	for (tries = 0; tries < ffe_nregions(fe); tries++) {
		struct ffe_region *r;
		uint64_t cur;

		if (region >= 0) {
			if ((unsigned)region >= ffe_nregions(fe) || tries > 0)
				break;
			i = (unsigned)region;
		} else {
			i = (rr++) % ffe_nregions(fe);
			if (fe->r[i].gone)
				continue;
		}
		r = &fe->r[i];
		cur = (r->next_free + align - 1) & ~(uint64_t)(align - 1);
		if (cur + len > r->size)
			continue;
		r->next_free = cur + len;
		out->gpa = r->gpa + cur;
		out->hva = r->hva + cur;
		out->len = len;
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&fe->alloc_lock);
	return ret;
}

void *ffe_gpa_to_hva(struct ffe *fe, uint64_t gpa, size_t len)
{
	unsigned i;

	for (i = 0; i < ffe_nregions(fe); i++) {
		struct ffe_region *r = &fe->r[i];

		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

static struct ffe_region *region_of_hva(struct ffe *fe, const void *hva)
{
	const uint8_t *p = hva;
	unsigned i;

	for (i = 0; i < ffe_nregions(fe); i++)
		if (p >= fe->r[i].hva && p < fe->r[i].hva + fe->r[i].size)
			return &fe->r[i];
	return NULL;
}

uint64_t ffe_hva_to_gpa(struct ffe *fe, const void *hva)
{
	struct ffe_region *r = region_of_hva(fe, hva);

	return r ? r->gpa + (uint64_t)((const uint8_t *)hva - r->hva) : UINT64_MAX;
}

uint64_t ffe_hva_to_uva(struct ffe *fe, const void *hva)
{
	struct ffe_region *r = region_of_hva(fe, hva);

	return r ? r->uva + (uint64_t)((const uint8_t *)hva - r->hva) : UINT64_MAX;
}

/* ---- connection ------------------------------------------------------------ */

static int do_connect(struct ffe *fe)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ffe_deadline dl;
	struct timeval tv = { .tv_sec = fe->timeout_ms / 1000,
			      .tv_usec = (fe->timeout_ms % 1000) * 1000 };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fe->path);
	ffe_deadline_start(&dl, fe->timeout_ms);
	for (;;) {
		int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (s < 0)
			return -errno;
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			/* a peer that stops reading must not block us forever */
			setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			fe->sock = s;
			return 0;
		}
		int e = errno;

		close(s);
		if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || !ffe_deadline_left(&dl)) {
			ffe_seterr(fe, "connect %s: %s", fe->path, strerror(e));
			return -e;
		}
		sleep_us(10000);
	}
}

struct ffe *ffe_open(const char *path, const struct ffe_opts *opts)
{
	struct ffe *fe = calloc(1, sizeof(*fe));
	unsigned i;
	int ret;

	if (!fe)
		return NULL;
	if (opts)
		fe->opts = *opts;
	else
		ffe_opts_init(&fe->opts);
	if (fe->opts.mem_size == 0)
		fe->opts.mem_size = 64 * MiB;
	if (fe->opts.nregions == 0)
		fe->opts.nregions = 1;
	if (fe->opts.nregions > FFE_MEM_TABLE_MAX)
		fe->opts.nregions = FFE_MEM_TABLE_MAX;
	if (fe->opts.scratch_per_queue == 0)
		fe->opts.scratch_per_queue = 4 * MiB;
	fe->timeout_ms = fe->opts.timeout_ms > 0 ? fe->opts.timeout_ms : FFE_TIMEOUT_MS;
	fe->sock = -1;
	fe->inflight_fd = -1;
	fe->backend_fd = -1;
	pthread_mutex_init(&fe->alloc_lock, NULL);
	for (i = 0; i < FFE_MAX_QUEUES; i++) {
		fe->vq[i].fe = fe;
		fe->vq[i].index = i;
		fe->vq[i].kickfd = fe->vq[i].callfd = -1;
	}
	snprintf(fe->path, sizeof(fe->path), "%s", path);

	ret = setup_memory(fe);
	if (ret < 0) {
		fprintf(stderr, "fakefe: guest memory: %s\n", strerror(-ret));
		goto fail;
	}
	ret = do_connect(fe);
	if (ret < 0) {
		fprintf(stderr, "fakefe: %s\n", fe->err);
		goto fail;
	}
	return fe;
fail:
	ffe_close(fe);
	errno = -ret;
	return NULL;
}

static void vq_close_fds(struct ffe_vq *vq)
{
	if (vq->kickfd >= 0)
		close(vq->kickfd);
	if (vq->callfd >= 0)
		close(vq->callfd);
	vq->kickfd = vq->callfd = -1;
	vq->started = false;
}

void ffe_disconnect(struct ffe *fe)
{
	unsigned i;

	if (fe->sock >= 0)
		close(fe->sock);
	fe->sock = -1;
	if (fe->backend_fd >= 0)
		close(fe->backend_fd);
	fe->backend_fd = -1;
	for (i = 0; i < FFE_MAX_QUEUES; i++)
		vq_close_fds(&fe->vq[i]);
}

int ffe_reconnect(struct ffe *fe)
{
	ffe_disconnect(fe);
	fe->features = fe->protocol_features = 0;
	fe->has_protocol_features = false;
	fe->use_reply_ack = false;
	return do_connect(fe);
}

void ffe_close(struct ffe *fe)
{
	unsigned i;

	if (!fe)
		return;
	ffe_disconnect(fe);
	ffe_inflight_drop(fe);
	ffe_log_free(fe->log);
	ffe_log_free(fe->log_old);
	for (i = 0; i < FFE_MAX_REGIONS; i++) {
		if (fe->map[i])
			munmap(fe->map[i], fe->map_size[i]);
		if (fe->memfd[i] >= 0)
			close(fe->memfd[i]);
	}
	pthread_mutex_destroy(&fe->alloc_lock);
	free(fe);
}

/* ---- messages -------------------------------------------------------------- */

/* One message in pieces of fe->send_chunk bytes, fe->send_gap_us apart (so
 * that the back-end reads them one by one); fds ride on the first piece. */
static int send_chunked(struct ffe *fe, const struct ffe_hdr *hdr, const void *payload,
			size_t payload_len, const int *fds, unsigned nfds)
{
	size_t total = sizeof(*hdr) + payload_len, off = 0;
	uint8_t *buf = malloc(total);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, hdr, sizeof(*hdr));
	if (payload_len)
		memcpy(buf + sizeof(*hdr), payload, payload_len);
	while (off < total) {
		union ffe_fd_ctl cm;
		size_t n = total - off < fe->send_chunk ? total - off : fe->send_chunk;
		struct iovec iov = { .iov_base = buf + off, .iov_len = n };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t r;

		if (off == 0)
			ffe_attach_fds(&mh, &cm, fds, nfds);
		r = sendmsg(fe->sock, &mh, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			ffe_seterr(fe, "send %s (byte %zu of %zu): %s", ffe_req_name(hdr->request),
				   off, total, strerror(errno));
			ret = errno == EAGAIN ? -ETIMEDOUT : -errno;
			break;
		}
		off += (size_t)r;
		if (fe->send_gap_us && off < total)
			sleep_us(fe->send_gap_us);
	}
	free(buf);
	return ret;
}

int ffe_send_raw(struct ffe *fe, uint32_t request, uint32_t flags,
		 uint32_t size, const void *payload, size_t payload_len,
		 const int *fds, unsigned nfds)
{
	struct ffe_hdr hdr = { .request = request, .flags = flags, .size = size };
	union ffe_fd_ctl cm;
	struct iovec iov[2] = {
		{ .iov_base = &hdr, .iov_len = sizeof(hdr) },
		{ .iov_base = (void *)payload, .iov_len = payload_len },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = payload_len ? 2 : 1 };
	size_t total = sizeof(hdr) + payload_len, sent = 0;

	if (fe->sock < 0)
		return -ENOTCONN;
	if (nfds > FFE_MAX_FDS)
		return -EINVAL;
	if (fe->send_chunk)
		return send_chunked(fe, &hdr, payload, payload_len, fds, nfds);
	ffe_attach_fds(&mh, &cm, fds, nfds);
	while (sent < total) {
		ssize_t n = sendmsg(fe->sock, &mh, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ffe_seterr(fe, "send %s: %s", ffe_req_name(request), strerror(errno));
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		sent += (size_t)n;
		/* fds go with the first byte only; advance the iovecs */
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
		while (n > 0 && mh.msg_iovlen > 0) {
			if ((size_t)n >= mh.msg_iov[0].iov_len) {
				n -= (ssize_t)mh.msg_iov[0].iov_len;
				mh.msg_iov++;
				mh.msg_iovlen--;
			} else {
				mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + n;
				mh.msg_iov[0].iov_len -= (size_t)n;
				n = 0;
			}
		}
	}
	return 0;
}

/* Read exactly len bytes (or drain them if buf is NULL) before the deadline,
 * collecting fds into m. */
static int recv_exact(int fd, void *buf, size_t len, struct ffe_msg *m,
		      struct ffe_deadline *dl)
{
	char drain[4096];
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		union {
			char b[CMSG_SPACE(sizeof(int) * FFE_MAX_FDS)];
			struct cmsghdr align;
		} cm;
		struct iovec iov;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cm.b, .msg_controllen = sizeof(cm.b) };
		struct cmsghdr *c;
		ssize_t n;
		int left = ffe_deadline_left(dl);
		int pr = poll(&p, 1, left);

		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0) {
			if (!left)
				return -ETIMEDOUT;
			continue;
		}
		if (buf) {
			iov.iov_base = (char *)buf + got;
			iov.iov_len = len - got;
		} else {
			iov.iov_base = drain;
			iov.iov_len = len - got < sizeof(drain) ? len - got : sizeof(drain);
		}
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == ECONNRESET ? -ECONNRESET : -errno;
		}
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				size_t nf = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				int *f = (int *)CMSG_DATA(c);

				for (size_t k = 0; k < nf; k++) {
					if (m && m->nfds < FFE_MAX_FDS)
						m->fds[m->nfds++] = f[k];
					else
						close(f[k]);
				}
			}
		}
		if (n == 0)
			return -ECONNRESET;
		got += (size_t)n;
	}
	return 0;
}

static int recv_msg_on(int fd, struct ffe_msg *m, struct ffe_deadline *deadline)
{
	size_t want;
	int ret;

	m->nfds = 0;
	m->got = 0;
	if (fd < 0)
		return -ENOTCONN;
	ret = recv_exact(fd, &m->hdr, sizeof(m->hdr), m, deadline);
	if (ret < 0)
		return ret;
	want = m->hdr.size < FFE_MSG_MAX ? m->hdr.size : FFE_MSG_MAX;
	ret = recv_exact(fd, m->payload, want, m, deadline);
	if (ret < 0)
		return ret;
	m->got = want;
	if (m->hdr.size > want) {
		ret = recv_exact(fd, NULL, m->hdr.size - want, m, deadline);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int recv_msg(struct ffe *fe, struct ffe_msg *m, struct ffe_deadline *deadline)
{
	return recv_msg_on(fe->sock, m, deadline);
}

int ffe_recv_raw(struct ffe *fe, struct ffe_msg *m, int timeout_ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, timeout_ms < 0 ? fe->timeout_ms : timeout_ms);
	return recv_msg(fe, m, &dl);
}

void ffe_msg_close_fds(struct ffe_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	m->nfds = 0;
}

static bool acks(struct ffe *fe)
{
	return fe->use_reply_ack && (fe->protocol_features & FFE_BIT(FFE_PF_REPLY_ACK));
}

static int recv_reply(struct ffe *fe, uint32_t request, struct ffe_msg *m)
{
	int ret = ffe_recv_raw(fe, m, -1);

	if (ret < 0) {
		ffe_seterr(fe, "%s: no reply: %s", ffe_req_name(request), strerror(-ret));
		return ret;
	}
	ffe_msg_close_fds(m);
	if (m->hdr.request != request || !(m->hdr.flags & FFE_FLAG_REPLY) ||
	    (m->hdr.flags & 0x3) != FFE_FLAG_VERSION) {
		ffe_seterr(fe, "%s: bad reply header request=%u flags=%#x size=%u",
			   ffe_req_name(request), m->hdr.request, m->hdr.flags, m->hdr.size);
		return -EPROTO;
	}
	return 0;
}

int ffe_call(struct ffe *fe, uint32_t request, const void *payload,
	     uint32_t size, const int *fds, unsigned nfds)
{
	bool ack = acks(fe);
	struct ffe_msg *m;
	uint64_t v;
	int ret;

	ret = ffe_send_raw(fe, request, FFE_FLAG_VERSION | (ack ? FFE_FLAG_NEED_REPLY : 0),
			   size, payload, size, fds, nfds);
	if (ret < 0 || !ack)
		return ret;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	ret = recv_reply(fe, request, m);
	if (ret == 0) {
		if (m->hdr.size != 8) {
			ffe_seterr(fe, "%s: ack of size %u", ffe_req_name(request), m->hdr.size);
			ret = -EPROTO;
		} else {
			memcpy(&v, m->payload, 8);
			if (v)
				ffe_seterr(fe, "%s: back-end replied %#llx", ffe_req_name(request),
					   (unsigned long long)v);
			ret = v ? (v > 0x7fffffff ? 0x7fffffff : (int)v) : 0;
		}
	}
	free(m);
	return ret;
}

int ffe_call_reply(struct ffe *fe, uint32_t request, const void *payload,
		   uint32_t size, void *reply, uint32_t reply_len)
{
	struct ffe_msg *m;
	int ret;

	ret = ffe_send_raw(fe, request, FFE_FLAG_VERSION, size, payload, size, NULL, 0);
	if (ret < 0)
		return ret;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	ret = recv_reply(fe, request, m);
	if (ret == 0) {
		uint32_t n = m->hdr.size < reply_len ? m->hdr.size : reply_len;

		memcpy(reply, m->payload, n);
		ret = (int)(m->hdr.size > FFE_MSG_MAX ? FFE_MSG_MAX : m->hdr.size);
	}
	free(m);
	return ret;
}

int ffe_get_u64(struct ffe *fe, uint32_t request, uint64_t *val)
{
	int ret = ffe_call_reply(fe, request, NULL, 0, val, sizeof(*val));

	if (ret >= 0 && ret != 8) {
		ffe_seterr(fe, "%s: reply size %d", ffe_req_name(request), ret);
		return -EPROTO;
	}
	return ret < 0 ? ret : 0;
}

int ffe_set_u64(struct ffe *fe, uint32_t request, uint64_t val)
{
	return ffe_call(fe, request, &val, sizeof(val), NULL, 0);
}

int ffe_probe(struct ffe *fe)
{
	struct ffe_deadline dl;
	struct ffe_msg *m;
	int ret;

	ret = ffe_send_raw(fe, FFE_GET_FEATURES, FFE_FLAG_VERSION, 0, NULL, 0, NULL, 0);
	if (ret == -EPIPE || ret == -ECONNRESET || ret == -ENOTCONN)
		return 0;
	if (ret < 0)
		return ret;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	ffe_deadline_start(&dl, fe->timeout_ms);
	for (;;) {
		ret = recv_msg(fe, m, &dl);
		if (ret == -ECONNRESET) {
			ret = 0;
			break;
		}
		if (ret < 0)
			break;
		ffe_msg_close_fds(m);
		/* earlier replies (acks of hostile messages) may be queued first */
		if (m->hdr.request == FFE_GET_FEATURES && (m->hdr.flags & FFE_FLAG_REPLY)) {
			ret = 1;
			break;
		}
	}
	free(m);
	return ret;
}

int ffe_wait_closed(struct ffe *fe, int timeout_ms)
{
	struct ffe_deadline dl;
	char buf[4096];

	if (fe->sock < 0)
		return 1;
	ffe_deadline_start(&dl, timeout_ms);
	for (;;) {
		struct pollfd p = { .fd = fe->sock, .events = POLLIN };
		int left = ffe_deadline_left(&dl);
		int pr = poll(&p, 1, left);
		ssize_t n;

		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0 || (pr == 0 && !left))
			return 0;
		if (pr == 0)
			continue;
		n = recv(fe->sock, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return 1;
	}
}

/* ---- negotiation ------------------------------------------------------------ */

uint64_t ffe_default_features(bool event_idx)
{
	uint64_t f = FFE_BIT(FFE_F_VERSION_1) | FFE_BIT(FFE_F_RING_INDIRECT_DESC) |
		     FFE_BIT(FFE_F_PROTOCOL_FEATURES) |
		     FFE_BIT(FFE_F_BLK_SIZE_MAX) | FFE_BIT(FFE_F_BLK_SEG_MAX) |
		     FFE_BIT(FFE_F_BLK_GEOMETRY) | FFE_BIT(FFE_F_BLK_RO) |
		     FFE_BIT(FFE_F_BLK_BLK_SIZE) | FFE_BIT(FFE_F_BLK_FLUSH) |
		     FFE_BIT(FFE_F_BLK_TOPOLOGY) | FFE_BIT(FFE_F_BLK_CONFIG_WCE) |
		     FFE_BIT(FFE_F_BLK_MQ) | FFE_BIT(FFE_F_BLK_DISCARD) |
		     FFE_BIT(FFE_F_BLK_WRITE_ZEROES);

	if (event_idx)
		f |= FFE_BIT(FFE_F_RING_EVENT_IDX);
	return f;
}

int ffe_get_config(struct ffe *fe, uint32_t offset, void *buf, uint32_t len)
{
	struct { struct ffe_config_hdr h; uint8_t data[256]; } c;
	const uint32_t hl = sizeof(c.h);
	int ret;

	if (len > sizeof(c.data))
		return -EINVAL;
	memset(&c, 0, sizeof(c));
	c.h.offset = offset;
	c.h.size = len;
	ret = ffe_call_reply(fe, FFE_GET_CONFIG, &c, hl + len, &c, sizeof(c));
	if (ret < 0)
		return ret;
	if ((uint32_t)ret != hl + len || c.h.size != len) {
		ffe_seterr(fe, "GET_CONFIG: reply size %d, config size %u (asked %u)", ret,
			   c.h.size, len);
		return -EIO;
	}
	memcpy(buf, c.data, len);
	return 0;
}

int ffe_negotiate(struct ffe *fe, uint64_t want)
{
	int ret;

	if (!want)
		want = ffe_default_features(false);
	if (fe->opts.packed)
		want |= FFE_BIT(FFE_F_RING_PACKED);
	fe->want_features = want;
	ret = ffe_get_u64(fe, FFE_GET_FEATURES, &fe->dev_features);
	if (ret < 0)
		return ret;
	if (fe->opts.packed && !(fe->dev_features & FFE_BIT(FFE_F_RING_PACKED))) {
		ffe_seterr(fe, "back-end does not offer VIRTIO_F_RING_PACKED (features %#llx)",
			   (unsigned long long)fe->dev_features);
		return -ENOTSUP;
	}
	fe->queue_num = 1;
	if ((fe->dev_features & want) & FFE_BIT(FFE_F_PROTOCOL_FEATURES)) {
		uint64_t pf;

		ret = ffe_get_u64(fe, FFE_GET_PROTOCOL_FEATURES, &fe->dev_protocol_features);
		if (ret < 0)
			return ret;
		pf = fe->dev_protocol_features &
		     (FFE_BIT(FFE_PF_MQ) | FFE_BIT(FFE_PF_REPLY_ACK) | FFE_BIT(FFE_PF_CONFIG) |
		      (fe->opts.inflight ? FFE_BIT(FFE_PF_INFLIGHT_SHMFD) : 0) |
		      fe->opts.extra_protocol_features);
		ret = ffe_set_u64(fe, FFE_SET_PROTOCOL_FEATURES, pf);
		if (ret != 0)
			return ret < 0 ? ret : -EIO;
		fe->protocol_features = pf;
		fe->has_protocol_features = true;
		fe->use_reply_ack = true;
		if (pf & FFE_BIT(FFE_PF_MQ)) {
			uint64_t q;

			ret = ffe_get_u64(fe, FFE_GET_QUEUE_NUM, &q);
			if (ret < 0)
				return ret;
			fe->queue_num = (unsigned)q;
		}
	}
	ret = ffe_call(fe, FFE_SET_OWNER, NULL, 0, NULL, 0);
	if (ret != 0)
		return ret < 0 ? ret : -EIO;
	if (fe->protocol_features & FFE_BIT(FFE_PF_CONFIG)) {
		ret = ffe_get_config(fe, 0, &fe->cfg, sizeof(fe->cfg));
		if (ret < 0)
			return ret;
		fe->cfg_len = sizeof(fe->cfg);
	}
	fe->features = want & fe->dev_features;
	ret = ffe_set_u64(fe, FFE_SET_FEATURES, fe->features);
	if (ret != 0)
		return ret < 0 ? ret : -EIO;
	return 0;
}

size_t ffe_mem_table_payload(struct ffe *fe, void *buf, int *fds)
{
	uint8_t *p = buf;
	uint32_t n = ffe_nregions(fe);
	struct ffe_mem_table_hdr h = { .nregions = n };

	memcpy(p, &h, sizeof(h));
	for (unsigned i = 0; i < n; i++) {
		struct ffe_mem_region mr = {
			.gpa = fe->r[i].gpa, .size = fe->r[i].size,
			.uva = fe->r[i].uva, .mmap_offset = fe->r[i].mmap_offset,
		};

		memcpy(p + sizeof(h) + i * sizeof(mr), &mr, sizeof(mr));
		fds[i] = fe->r[i].fd;
	}
	return sizeof(h) + n * sizeof(struct ffe_mem_region);
}

int ffe_set_mem_table(struct ffe *fe)
{
	uint8_t buf[sizeof(struct ffe_mem_table_hdr) +
		    FFE_MAX_REGIONS * sizeof(struct ffe_mem_region)];

	if (ffe_nregions(fe) > FFE_MEM_TABLE_MAX) {
		ffe_seterr(fe, "SET_MEM_TABLE: %u regions, at most %u fit", ffe_nregions(fe),
			   FFE_MEM_TABLE_MAX);
		return -E2BIG;
	}
	int fds[FFE_MAX_REGIONS];
	size_t len = ffe_mem_table_payload(fe, buf, fds);

	return ffe_call(fe, FFE_SET_MEM_TABLE, buf, (uint32_t)len, fds, ffe_nregions(fe));
}

/* ---- queues ---------------------------------------------------------------- */

static int vq_send_state(struct ffe *fe, uint32_t req, unsigned i, uint32_t num)
{
	struct ffe_vring_state st = { i, num };

	return ffe_call(fe, req, &st, sizeof(st), NULL, 0);
}

static int vq_send_fd(struct ffe *fe, uint32_t req, unsigned i, int fd)
{
	uint64_t v = i | (fd < 0 ? FFE_VRING_NOFD : 0);

	return ffe_call(fe, req, &v, sizeof(v), fd < 0 ? NULL : &fd, fd < 0 ? 0 : 1);
}

static int vq_program(struct ffe *fe, struct ffe_vq *vq, uint16_t base)
{
	struct ffe_vring_addr a = {
		.index = vq->index, .flags = vq->log_ring ? FFE_VRING_F_LOG : 0,
		.desc = vq->desc_uva, .used = vq->used_uva, .avail = vq->avail_uva,
		.log = vq->log_ring ? vq->used_gpa : 0,
	};
	int ret;

	vq->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	vq->callfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (vq->kickfd < 0 || vq->callfd < 0)
		return -errno;
#define STEP(x, what) do { ret = (x); if (ret != 0) { \
		ffe_seterr(fe, "q%u %s: %s", vq->index, what, ret < 0 ? strerror(-ret) : "refused"); \
		return ret < 0 ? ret : -EIO; } } while (0)
	STEP(vq_send_state(fe, FFE_SET_VRING_NUM, vq->index, vq->num), "SET_VRING_NUM");
	STEP(vq_send_state(fe, FFE_SET_VRING_BASE, vq->index, base), "SET_VRING_BASE");
	vq->pk_start_base = base;
	STEP(ffe_call(fe, FFE_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), "SET_VRING_ADDR");
	STEP(vq_send_fd(fe, FFE_SET_VRING_KICK, vq->index, vq->kickfd), "SET_VRING_KICK");
	STEP(vq_send_fd(fe, FFE_SET_VRING_CALL, vq->index, vq->callfd), "SET_VRING_CALL");
	if (fe->has_protocol_features)
		STEP(vq_send_state(fe, FFE_SET_VRING_ENABLE, vq->index, 1), "SET_VRING_ENABLE");
#undef STEP
	vq->started = true;
	return 0;
}

/* The queue's scratch memory, one piece per region (the first start). */
static int vq_scratch_init(struct ffe *fe, struct ffe_vq *vq)
{
	unsigned n = ffe_nregions(fe);

	if (vq->scratch[0].size)
		return 0;
	for (unsigned k = 0; k < n; k++) {
		uint64_t per = fe->opts.scratch_per_queue / n, sz = per;
		struct ffe_buf s;

		while (sz >= 65536 && ffe_alloc(fe, sz, 4096, (int)k, &s) < 0)
			sz /= 2;
		if (sz < 65536)
			return -ENOMEM;
		vq->scratch[k].off = (uint64_t)((uint8_t *)s.hva - fe->r[k].hva);
		vq->scratch[k].size = sz;
		vq->scratch[k].cur = 0;
	}
	return 0;
}

static void pk_set_drv_event(struct ffe_vq *vq);

/* A packed queue: the descriptor ring (16 * num bytes, zeroed), the Driver
 * Area and the Device Area (4 bytes each), in three regions like the split
 * rings; counters from base (offset | wrap << 15). */
static int pk_start_at(struct ffe *fe, unsigned i, unsigned num, uint16_t base)
{
	unsigned n = ffe_nregions(fe), off = base & 0x7fff;
	bool wrap = base >> 15;
	struct ffe_buf d, a, u;
	struct ffe_vq *vq;
	int ret;

	if (i >= FFE_MAX_QUEUES || num == 0 || num > FFE_MAX_QSIZE || off >= num)
		return -EINVAL;
	vq = &fe->vq[i];
	vq_close_fds(vq);
	if ((ret = ffe_alloc(fe, 16 * num, 4096, (int)(i % n), &d)) < 0 ||
	    (ret = ffe_alloc(fe, 4, 64, (int)((i + 1) % n), &a)) < 0 ||
	    (ret = ffe_alloc(fe, 4, 64, (int)((i + 2) % n), &u)) < 0)
		return ret;
	memset(d.hva, 0, d.len);
	memset(a.hva, 0, a.len);
	memset(u.hva, 0, u.len);
	vq->packed = true;
	vq->num = num;
	vq->pdesc = d.hva;
	vq->desc = d.hva;       /* "has rings" for the shared code */
	vq->avail = NULL;
	vq->used = NULL;
	vq->drv_event = a.hva;
	vq->dev_event = u.hva;
	vq->desc_gpa = d.gpa;
	vq->avail_gpa = a.gpa;
	vq->used_gpa = u.gpa;
	vq->desc_uva = ffe_hva_to_uva(fe, d.hva);
	vq->avail_uva = ffe_hva_to_uva(fe, a.hva);
	vq->used_uva = ffe_hva_to_uva(fe, u.hva);
	vq->pk_avail = vq->pk_used = vq->pk_kicked = off + (wrap ? 0 : num);
	vq->pk_free = num;
	vq->pk_call_mode = -1;
	vq->have_base = false;
	vq->avail_idx = vq->last_used = vq->kicked_idx = 0;
	vq->nfree = num;
	for (unsigned k = 0; k < num; k++)
		vq->free_stack[k] = (uint16_t)(num - 1 - k);
	memset(vq->inflight, 0, sizeof(vq->inflight));
	vq->ninflight = 0;
	vq->bogus_used = 0;
	pk_set_drv_event(vq);
	ret = vq_scratch_init(fe, vq);
	if (ret < 0)
		return ret;
	return vq_program(fe, vq, base);
}

int ffe_vq_start(struct ffe *fe, unsigned i, unsigned num)
{
	/* a fresh packed ring: offset 0, both wrap counters 1 (2.8.1), as
	 * QEMU sends it after a reset */
	if (fe->features & FFE_BIT(FFE_F_RING_PACKED))
		return ffe_vq_start_at(fe, i, num, FFE_PACKED_BASE(0, 1));
	return ffe_vq_start_at(fe, i, num, 0);
}

int ffe_vq_start_at(struct ffe *fe, unsigned i, unsigned num, uint16_t base)
{
	struct ffe_vq *vq;
	struct ffe_buf d, a, u;
	unsigned n = ffe_nregions(fe), k;
	int ret;

	if (fe->features & FFE_BIT(FFE_F_RING_PACKED))
		return pk_start_at(fe, i, num, base);
	if (i >= FFE_MAX_QUEUES || num == 0 || num > FFE_MAX_QSIZE || (num & (num - 1)))
		return -EINVAL;
	vq = &fe->vq[i];
	vq_close_fds(vq);
	vq->packed = false;
	vq->pdesc = NULL;
	vq->drv_event = vq->dev_event = NULL;
	if ((ret = ffe_alloc(fe, 16 * num, 4096, (int)(i % n), &d)) < 0 ||
	    (ret = ffe_alloc(fe, 6 + 2 * num, 64, (int)((i + 1) % n), &a)) < 0 ||
	    (ret = ffe_alloc(fe, 6 + 8 * num, 4096, (int)((i + 2) % n), &u)) < 0)
		return ret;
	memset(d.hva, 0, d.len);
	memset(a.hva, 0, a.len);
	memset(u.hva, 0, u.len);
	vq->num = num;
	vq->desc = d.hva;
	vq->avail = a.hva;
	vq->used = u.hva;
	vq->desc_gpa = d.gpa;
	vq->avail_gpa = a.gpa;
	vq->used_gpa = u.gpa;
	vq->desc_uva = ffe_hva_to_uva(fe, d.hva);
	vq->avail_uva = ffe_hva_to_uva(fe, a.hva);
	vq->used_uva = ffe_hva_to_uva(fe, u.hva);
	vq->avail_idx = vq->last_used = vq->kicked_idx = base;
	vq->have_base = false;
	((uint16_t *)a.hva)[1] = base;
	((uint16_t *)u.hva)[1] = base;
	vq->nfree = num;
	for (k = 0; k < num; k++)
		vq->free_stack[k] = (uint16_t)(num - 1 - k);
	memset(vq->inflight, 0, sizeof(vq->inflight));
	vq->ninflight = 0;
	vq->bogus_used = 0;
	if (vq->no_interrupt)
		vq->avail[0] = FFE_AVAIL_F_NO_INTERRUPT;
	ret = vq_scratch_init(fe, vq);
	if (ret < 0)
		return ret;
	return vq_program(fe, vq, base);
}

int ffe_vq_resume(struct ffe *fe, unsigned i)
{
	struct ffe_vq *vq;

	if (i >= FFE_MAX_QUEUES || !fe->vq[i].desc)
		return -EINVAL;
	vq = &fe->vq[i];
	if (vq->packed)
		return ffe_vq_resume_at(fe, i, vq->have_base ? vq->stop_base : ffe_vq_pk_avail_pos(vq));
	return ffe_vq_resume_at(fe, i, vq->have_base ? vq->stop_base : vq->avail_idx);
}

int ffe_vq_resume_at(struct ffe *fe, unsigned i, uint16_t base)
{
	struct ffe_vq *vq;

	if (i >= FFE_MAX_QUEUES || !fe->vq[i].desc)
		return -EINVAL;
	vq = &fe->vq[i];
	vq_close_fds(vq);
	vq->have_base = false;
	return vq_program(fe, vq, base);
}

/* ---- inflight tracking ------------------------------------------------------ */

void ffe_inflight_drop(struct ffe *fe)
{
	if (fe->inflight_map)
		munmap(fe->inflight_map, fe->inflight_size);
	if (fe->inflight_fd >= 0)
		close(fe->inflight_fd);
	fe->inflight_map = NULL;
	fe->inflight_fd = -1;
	fe->inflight_size = fe->inflight_offset = 0;
	fe->inflight_nq = fe->inflight_qs = 0;
}

int ffe_get_inflight_fd(struct ffe *fe, uint16_t num_queues, uint16_t queue_size)
{
	struct ffe_inflight_msg in = { .num_queues = num_queues, .queue_size = queue_size };
	struct ffe_msg *m;
	struct stat st = { 0 };
	void *p;
	int ret, fd;

	ret = ffe_send_raw(fe, FFE_GET_INFLIGHT_FD, FFE_FLAG_VERSION, sizeof(in), &in,
			   sizeof(in), NULL, 0);
	if (ret < 0)
		return ret;
	m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	ret = ffe_recv_raw(fe, m, -1);
	if (ret < 0) {
		ffe_seterr(fe, "GET_INFLIGHT_FD: no reply: %s", strerror(-ret));
		goto out;
	}
	if (m->hdr.request != FFE_GET_INFLIGHT_FD || !(m->hdr.flags & FFE_FLAG_REPLY) ||
	    m->hdr.size < 20 || m->hdr.size > sizeof(in) || m->nfds != 1) {
		ffe_seterr(fe, "GET_INFLIGHT_FD: reply request %u flags %#x size %u with %u fds",
			   m->hdr.request, m->hdr.flags, m->hdr.size, m->nfds);
		ret = -EPROTO;
		goto out;
	}
	memset(&in, 0, sizeof(in));
	memcpy(&in, m->payload, m->hdr.size);
	fd = m->fds[0];
	if (in.mmap_size == 0 || in.mmap_size > (1ull << 32) || in.mmap_offset > (1ull << 32) ||
	    fstat(fd, &st) < 0 || (uint64_t)st.st_size < in.mmap_offset + in.mmap_size) {
		ffe_seterr(fe, "GET_INFLIGHT_FD: region of %llu bytes at %llu in a file of %lld",
			   (unsigned long long)in.mmap_size, (unsigned long long)in.mmap_offset,
			   (long long)st.st_size);
		ret = -EPROTO;
		goto out;
	}
	p = mmap(NULL, in.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)in.mmap_offset);
	if (p == MAP_FAILED) {
		ret = -errno;
		ffe_seterr(fe, "GET_INFLIGHT_FD: mmap: %s", strerror(errno));
		goto out;
	}
	ffe_inflight_drop(fe);
	fe->inflight_fd = fd;
	m->nfds = 0;            /* keep it */
	fe->inflight_map = p;
	fe->inflight_size = in.mmap_size;
	fe->inflight_offset = in.mmap_offset;
	fe->inflight_nq = num_queues;
	fe->inflight_qs = queue_size;
	ret = 0;
out:
	ffe_msg_close_fds(m);
	free(m);
	return ret;
}

int ffe_set_inflight_fd(struct ffe *fe)
{
	struct ffe_inflight_msg in = {
		.mmap_size = fe->inflight_size, .mmap_offset = fe->inflight_offset,
		.num_queues = fe->inflight_nq, .queue_size = fe->inflight_qs,
	};

	if (fe->inflight_fd < 0)
		return -EINVAL;
	return ffe_call(fe, FFE_SET_INFLIGHT_FD, &in, sizeof(in), &fe->inflight_fd, 1);
}

struct ffe_inflight_queue *ffe_inflight_q(struct ffe *fe, unsigned q)
{
	size_t per = ffe_inflight_queue_size(fe->inflight_qs);

	if (!fe->inflight_map || q >= fe->inflight_nq || (q + 1) * per > fe->inflight_size)
		return NULL;
	return (struct ffe_inflight_queue *)((uint8_t *)fe->inflight_map + q * per);
}

int ffe_resume_after_crash(struct ffe *fe, unsigned nq)
{
	bool was[FFE_MAX_QUEUES];
	int ret;

	/* every queue that has rings (ffe_disconnect already cleared started) */
	for (unsigned i = 0; i < nq && i < FFE_MAX_QUEUES; i++)
		was[i] = fe->vq[i].desc != NULL;
	ret = ffe_reconnect(fe);
	if (ret < 0)
		return ret;
	ret = ffe_negotiate(fe, fe->want_features);
	if (ret != 0)
		return ret < 0 ? ret : -EIO;
	if (fe->inflight_fd >= 0) {
		ret = ffe_set_inflight_fd(fe);
		if (ret != 0) {
			ffe_seterr(fe, "SET_INFLIGHT_FD: %s", ret < 0 ? strerror(-ret) : "refused");
			return ret < 0 ? ret : -EIO;
		}
	}
	ret = ffe_set_mem_table(fe);
	if (ret != 0) {
		ffe_seterr(fe, "SET_MEM_TABLE: %s", ret < 0 ? strerror(-ret) : "refused");
		return ret < 0 ? ret : -EIO;
	}
	for (unsigned i = 0; i < nq && i < FFE_MAX_QUEUES; i++) {
		if (!was[i])
			continue;
		ret = ffe_vq_resume_at(fe, i, fe->vq[i].packed ? fe->vq[i].pk_start_base
							       : ffe_vq_used_idx(&fe->vq[i]));
		if (ret < 0)
			return ret;
	}
	return 0;
}

int ffe_vq_stop(struct ffe *fe, unsigned i, uint32_t *base)
{
	struct ffe_vring_state st = { i, 0 }, rep = { 0, 0 };
	int ret;

	ret = ffe_call_reply(fe, FFE_GET_VRING_BASE, &st, sizeof(st), &rep, sizeof(rep));
	if (ret < 0)
		return ret;
	if (ret != sizeof(rep) || rep.index != i) {
		ffe_seterr(fe, "GET_VRING_BASE: reply size %d index %u", ret, rep.index);
		return -EPROTO;
	}
	if (base)
		*base = rep.num;
	if (i < FFE_MAX_QUEUES) {
		fe->vq[i].started = false;
		fe->vq[i].have_base = true;
		fe->vq[i].stop_base = (uint16_t)rep.num;
	}
	return 0;
}

int ffe_vq_enable(struct ffe *fe, unsigned i, bool on)
{
	return vq_send_state(fe, FFE_SET_VRING_ENABLE, i, on ? 1 : 0);
}

int ffe_setup(struct ffe *fe, uint64_t want, unsigned nq, unsigned num)
{
	int ret = ffe_negotiate(fe, want);

	if (ret < 0)
		return ret;
	if (fe->protocol_features & FFE_BIT(FFE_PF_BACKEND_REQ)) {
		ret = ffe_set_backend_req_fd(fe);
		if (ret != 0)
			return ret < 0 ? ret : -EIO;
	}
	if (fe->opts.inflight) {
		if (!(fe->protocol_features & FFE_BIT(FFE_PF_INFLIGHT_SHMFD))) {
			ffe_seterr(fe, "back-end does not offer INFLIGHT_SHMFD");
			return -ENOTSUP;
		}
		/* QEMU: GET_INFLIGHT_FD once, SET_INFLIGHT_FD on every start */
		if (fe->inflight_fd < 0) {
			ret = ffe_get_inflight_fd(fe, (uint16_t)nq, (uint16_t)num);
			if (ret < 0)
				return ret;
		}
		ret = ffe_set_inflight_fd(fe);
		if (ret != 0)
			return ret < 0 ? ret : -EIO;
	}
	if (fe->protocol_features & FFE_BIT(FFE_PF_CONFIGURE_MEM_SLOTS)) {
		for (unsigned i = 0; i < ffe_nregions(fe); i++) {
			ret = ffe_add_mem_reg(fe, i);
			if (ret != 0) {
				ffe_seterr(fe, "ADD_MEM_REG of region %u: %s", i,
					   ret < 0 ? strerror(-ret) : "refused");
				return ret < 0 ? ret : -EIO;
			}
		}
	} else {
		ret = ffe_set_mem_table(fe);
		if (ret != 0) {
			ffe_seterr(fe, "SET_MEM_TABLE: %s", ret < 0 ? strerror(-ret) : "refused");
			return ret < 0 ? ret : -EIO;
		}
	}
	for (unsigned i = 0; i < nq; i++) {
		ret = ffe_vq_start(fe, i, num);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- ring driver ------------------------------------------------------------ */

/* Ring field accessors.  The back-end runs concurrently: stores it must see
 * in order are release stores, loads of its indices are acquire loads. */
static inline uint16_t *avail_flags(struct ffe_vq *vq) { return &vq->avail[0]; }
static inline uint16_t *avail_idx_p(struct ffe_vq *vq) { return &vq->avail[1]; }
static inline uint16_t *avail_ring(struct ffe_vq *vq) { return &vq->avail[2]; }
static inline uint16_t *used_event_p(struct ffe_vq *vq) { return &vq->avail[2 + vq->num]; }
static inline uint16_t *used_flags_p(struct ffe_vq *vq) { return (uint16_t *)vq->used; }
static inline uint16_t *used_idx_p(struct ffe_vq *vq) { return (uint16_t *)(vq->used + 2); }
static inline struct ffe_used_elem *used_ring(struct ffe_vq *vq)
{
	return (struct ffe_used_elem *)(vq->used + 4);
}
static inline uint16_t *avail_event_p(struct ffe_vq *vq)
{
	return (uint16_t *)(vq->used + 4 + 8 * vq->num);
}

static bool has_event_idx(struct ffe_vq *vq)
{
	return vq->fe->features & FFE_BIT(FFE_F_RING_EVENT_IDX);
}

int ffe_vq_alloc(struct ffe_vq *vq, size_t len, size_t align, struct ffe_buf *out)
{
	struct ffe *fe = vq->fe;
	/* regions may be added by another thread meanwhile (ffe_region_new) */
	unsigned n = __atomic_load_n(&fe->nregions, __ATOMIC_ACQUIRE);

	if (align == 0)
		align = 8;
	if (vq->scratch_only)
		n = 1;
	for (unsigned t = 0; t < n; t++) {
		unsigned k = vq->scratch_only ? vq->scratch_only - 1 : (vq->scratch_rr++) % n;
		uint64_t cur;

		if (!vq->scratch_only && __atomic_load_n(&fe->r[k].gone, __ATOMIC_ACQUIRE))
			continue;
		cur = (vq->scratch[k].cur + align - 1) & ~(uint64_t)(align - 1);

		if (cur + len > vq->scratch[k].size)
			continue;
		vq->scratch[k].cur = cur + len;
		out->gpa = fe->r[k].gpa + vq->scratch[k].off + cur;
		out->hva = fe->r[k].hva + vq->scratch[k].off + cur;
		out->len = len;
		return 0;
	}
	return -ENOMEM;
}

struct piece {
	uint32_t len;
	bool write;
	const uint8_t *src;
};

static unsigned cut_stream(struct piece *pc, unsigned max, const uint8_t *src,
			   size_t len, const uint32_t *cuts, unsigned ncuts, bool write)
{
	size_t off = 0;
	unsigned n = 0, c = 0;

	while (off < len) {
		size_t l = len - off;

		if (c < ncuts && cuts[c] && cuts[c] < l)
			l = cuts[c];
		c++;
		if (n >= max)
			return max + 1;
		pc[n].len = (uint32_t)l;
		pc[n].write = write;
		pc[n].src = src ? src + off : NULL;
		n++;
		off += l;
	}
	return n;
}

/* ---- packed queues ---------------------------------------------------------- */

/* Ring offset and wrap counter of descriptor count c (see pk_avail). */
static inline unsigned pk_off(const struct ffe_vq *vq, uint64_t c) { return (unsigned)(c % vq->num); }
static inline bool pk_wrap(const struct ffe_vq *vq, uint64_t c) { return !((c / vq->num) & 1); }
static inline uint16_t pk_pos(const struct ffe_vq *vq, uint64_t c)
{
	return FFE_PACKED_BASE(pk_off(vq, c), pk_wrap(vq, c));
}

uint16_t ffe_vq_pk_avail_pos(const struct ffe_vq *vq) { return pk_pos(vq, vq->pk_avail); }
uint16_t ffe_vq_pk_used_pos(const struct ffe_vq *vq) { return pk_pos(vq, vq->pk_used); }

struct ffe_pdesc *ffe_vq_pdesc(struct ffe_vq *vq, unsigned i)
{
	return &vq->pdesc[i % vq->num];
}

void ffe_vq_pdesc_set_flags(struct ffe_vq *vq, unsigned i, uint16_t flags)
{
	/* addr, len and id of the descriptor (and of the rest of its chain)
	 * visible before the flags that make it available */
	__atomic_store_n(&vq->pdesc[i % vq->num].flags, flags, __ATOMIC_RELEASE);
}

void ffe_vq_pk_advance(struct ffe_vq *vq, unsigned n)
{
	vq->pk_avail += n;
	vq->pk_free = n > vq->pk_free ? 0 : vq->pk_free - n;
}

bool ffe_vq_pk_is_used(struct ffe_vq *vq, unsigned i, bool w, uint16_t *flags)
{
	uint16_t f = __atomic_load_n(&vq->pdesc[i % vq->num].flags, __ATOMIC_ACQUIRE);

	if (flags)
		*flags = f;
	return !!(f & FFE_PDESC_F_AVAIL) == w && !!(f & FFE_PDESC_F_USED) == w;
}

void ffe_vq_set_call_event(struct ffe_vq *vq, int mode, uint16_t off_wrap)
{
	vq->pk_call_mode = mode;
	__atomic_store_n(&vq->drv_event->off_wrap, off_wrap, __ATOMIC_RELAXED);
	__atomic_store_n(&vq->drv_event->flags, (uint16_t)mode, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

struct ffe_event_suppress ffe_vq_dev_event(struct ffe_vq *vq)
{
	struct ffe_event_suppress e;

	e.off_wrap = __atomic_load_n(&vq->dev_event->off_wrap, __ATOMIC_ACQUIRE);
	e.flags = __atomic_load_n(&vq->dev_event->flags, __ATOMIC_ACQUIRE);
	return e;
}

/* The Driver Area in automatic mode: no calls with no_interrupt, a call
 * when the used descriptor we look at next is written (EVENT_IDX), else a
 * call for every used buffer. */
static void pk_set_drv_event(struct ffe_vq *vq)
{
	uint16_t mode;

	if (vq->pk_call_mode >= 0)
		return;
	if (vq->no_interrupt)
		mode = FFE_RING_EVENT_DISABLE;
	else if (has_event_idx(vq))
		mode = FFE_RING_EVENT_DESC;
	else
		mode = FFE_RING_EVENT_ENABLE;
	if (mode == FFE_RING_EVENT_DESC)
		__atomic_store_n(&vq->drv_event->off_wrap, pk_pos(vq, vq->pk_used), __ATOMIC_RELAXED);
	__atomic_store_n(&vq->drv_event->flags, mode, __ATOMIC_RELEASE);
}

static int pk_submit(struct ffe_vq *vq, struct ffe_req *r, struct piece *pc, unsigned n)
{
	unsigned need = r->indirect ? 1 : n, k;
	uint64_t first = vq->pk_avail;
	uint16_t id, first_flags = 0;
	struct ffe_pdesc *table = NULL;
	uint64_t table_gpa = 0;
	int ret;

	if (need > vq->pk_free || vq->nfree == 0)
		return -ENOSPC;
	if (r->indirect) {
		struct ffe_buf t;

		ret = ffe_vq_alloc(vq, 16 * n, 16, &t);
		if (ret < 0)
			return ret;
		table = t.hva;
		table_gpa = t.gpa;
	}
	r->done = false;
	r->used_len = 0;
	r->used_flags = 0;
	r->nwseg = 0;
	r->nring = 0;
	r->pk_nseg = 0;
	if (r->indirect)
		r->pk_seg[r->pk_nseg++] = (typeof(r->pk_seg[0])){ table_gpa, 16 * n, FFE_SEG_TABLE };
	id = vq->free_stack[vq->nfree - 1];
	for (k = 0; k < n; k++) {
		struct ffe_buf b;

		ret = ffe_vq_alloc(vq, (size_t)pc[k].len + r->buf_skew,
				   r->buf_align ? r->buf_align : 64, &b);
		if (ret < 0)
			return ret;     /* nothing in the ring changed yet */
		b.gpa += r->buf_skew;
		b.hva = (uint8_t *)b.hva + r->buf_skew;
		memcpy(b.hva, pc[k].src, pc[k].len);
		if (pc[k].write) {
			r->wseg[r->nwseg].hva = b.hva;
			r->wseg[r->nwseg].len = pc[k].len;
			r->nwseg++;
		}
		r->pk_seg[r->pk_nseg++] = (typeof(r->pk_seg[0])){ b.gpa, pc[k].len,
								  pc[k].write ? FFE_SEG_WR : FFE_SEG_RD };
		if (r->indirect) {
			/* only WRITE is valid in a table; the id is reserved */
			table[k] = (struct ffe_pdesc){ .addr = b.gpa, .len = pc[k].len, .id = 0,
						       .flags = pc[k].write ? FFE_DESC_F_WRITE : 0 };
		} else {
			uint64_t c = first + k;
			uint16_t f = (pc[k].write ? FFE_DESC_F_WRITE : 0) |
				     (k + 1 < n ? FFE_DESC_F_NEXT : 0) | ffe_pk_avail_bits(pk_wrap(vq, c));
			struct ffe_pdesc *d = &vq->pdesc[pk_off(vq, c)];

			d->addr = b.gpa;
			d->len = pc[k].len;
			/* the spec puts the id in the last descriptor */
			d->id = vq->pk_id_last_only && k + 1 < n ? (uint16_t)((id + 1 + k) % vq->num) : id;
			r->ring_descs[r->nring++] = (uint16_t)pk_off(vq, c);
			if (k == 0)
				first_flags = f;
			else
				__atomic_store_n(&d->flags, f, __ATOMIC_RELAXED);
		}
	}
	if (r->indirect) {
		struct ffe_pdesc *d = &vq->pdesc[pk_off(vq, first)];

		d->addr = table_gpa;
		d->len = 16 * n;
		d->id = id;
		first_flags = FFE_DESC_F_INDIRECT | ffe_pk_avail_bits(pk_wrap(vq, first));
		r->ring_descs[r->nring++] = (uint16_t)pk_off(vq, first);
	}
	vq->nfree--;
	r->head = id;
	vq->inflight[id] = r;
	vq->ninflight++;
	vq->pk_chain[id] = (uint16_t)need;
	vq->pk_avail += need;
	vq->pk_free -= need;
	pk_set_drv_event(vq);
	/* the whole chain before its first descriptor's flags (release) */
	__atomic_store_n(&vq->pdesc[pk_off(vq, first)].flags, first_flags, __ATOMIC_RELEASE);
	return 0;
}

/* Was descriptor count e (taken near `new`) made available in [old, new)? */
static bool pk_event_crossed(const struct ffe_vq *vq, uint16_t off_wrap, uint64_t old, uint64_t new)
{
	uint64_t period = 2ull * vq->num, base = new - new % period;
	int64_t e = (int64_t)base + (off_wrap & 0x7fff) + ((off_wrap & 0x8000) ? 0 : vq->num);

	if (e >= (int64_t)new)
		e -= (int64_t)period;
	return e >= (int64_t)old && e < (int64_t)new;
}

static int pk_kick(struct ffe_vq *vq)
{
	uint64_t old = vq->pk_kicked, new = vq->pk_avail;
	struct ffe_event_suppress ev;
	bool need;

	/* our flags stores before the device's suppression state (full fence) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	vq->pk_kicked = new;
	ev = ffe_vq_dev_event(vq);
	if (vq->always_kick)
		need = true;
	else if ((ev.flags & 3) == FFE_RING_EVENT_DISABLE)
		need = false;
	else if ((ev.flags & 3) == FFE_RING_EVENT_DESC && has_event_idx(vq))
		need = pk_event_crossed(vq, ev.off_wrap, old, new);
	else
		need = true;    /* ENABLE, reserved values, DESC without EVENT_IDX */
	return need ? ffe_vq_kick_raw(vq) : 0;
}

static void complete(struct ffe_vq *vq, struct ffe_used_elem e, uint16_t idx);

static int pk_poll_used(struct ffe_vq *vq)
{
	int count = 0;

	for (;;) {
		uint64_t c = vq->pk_used;
		struct ffe_pdesc *d = &vq->pdesc[pk_off(vq, c)];
		struct ffe_used_elem e;
		uint16_t flags, pos = pk_pos(vq, c);
		struct ffe_req *r;
		unsigned skip;

		/* nothing in flight: a zeroed ring at wrap 0 looks used */
		if (!vq->ninflight)
			break;
		if (!ffe_vq_pk_is_used(vq, pk_off(vq, c), pk_wrap(vq, c), &flags)) {
			if (vq->pk_call_mode >= 0 || !has_event_idx(vq) || vq->no_interrupt)
				break;
			/* ask for a call at this one, then look again */
			pk_set_drv_event(vq);
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			if (!ffe_vq_pk_is_used(vq, pk_off(vq, c), pk_wrap(vq, c), &flags))
				break;
		}
		e.id = d->id;
		e.len = d->len;
		if (e.id >= vq->num || !(r = vq->inflight[e.id])) {
			/* an id we have not made available: how far to skip is
			 * unknown; one descriptor (the back-end is broken) */
			vq->bogus_used++;
			vq->pk_used++;
			continue;
		}
		skip = vq->pk_chain[e.id];
		r->used_flags = flags;
		complete(vq, e, pos);
		vq->pk_used += skip;
		vq->pk_free += skip;
		count++;
	}
	return count;
}

static int pk_req_segs(struct ffe_vq *vq, const struct ffe_req *r, struct ffe_seg *out,
		       unsigned max)
{
	(void)vq;
	if (r->pk_nseg > max)
		return -E2BIG;
	for (unsigned k = 0; k < r->pk_nseg; k++)
		out[k] = (struct ffe_seg){ r->pk_seg[k].gpa, r->pk_seg[k].len, r->pk_seg[k].kind };
	return (int)r->pk_nseg;
}

uint64_t ffe_vq_take_calls(struct ffe_vq *vq)
{
	uint64_t v, before = vq->calls;

	if (vq->callfd >= 0 && read(vq->callfd, &v, 8) == 8)
		vq->calls += v;
	return vq->calls - before;
}

int ffe_submit(struct ffe_vq *vq, struct ffe_req *r)
{
	struct piece pc[FFE_MAX_DESCS];
	struct ffe_desc *table;
	unsigned n, nr, nw, k;
	uint16_t head, prev = 0;
	int ret;

	if (!vq->desc)
		return -EINVAL;
	if (vq->ninflight == 0)
		for (k = 0; k < FFE_MAX_REGIONS; k++)
			vq->scratch[k].cur = 0;
	nr = cut_stream(pc, FFE_MAX_DESCS, r->rd, r->rd_len, r->rd_cuts, r->n_rd_cuts, false);
	if (nr > FFE_MAX_DESCS)
		return -E2BIG;
	nw = cut_stream(pc + nr, FFE_MAX_DESCS - nr, r->wr, r->wr_len, r->wr_cuts,
			r->n_wr_cuts, true);
	if (nw > FFE_MAX_DESCS - nr)
		return -E2BIG;
	n = nr + nw;
	if (n == 0)
		return -EINVAL;
	if (vq->packed)
		return pk_submit(vq, r, pc, n);
	if ((r->indirect ? 1 : n) > vq->nfree)
		return -ENOSPC;

	r->done = false;
	r->used_len = 0;
	r->nwseg = 0;
	r->nring = 0;
	table = vq->desc;
	if (r->indirect) {
		struct ffe_buf t;

		ret = ffe_vq_alloc(vq, 16 * n, 16, &t);
		if (ret < 0)
			return ret;
		table = t.hva;
		head = vq->free_stack[--vq->nfree];
		r->ring_descs[r->nring++] = head;
		vq->desc[head] = (struct ffe_desc){ .addr = t.gpa, .len = 16 * n,
						    .flags = FFE_DESC_F_INDIRECT };
	}
	for (k = 0; k < n; k++) {
		struct ffe_buf b;
		uint16_t idx;

		ret = ffe_vq_alloc(vq, (size_t)pc[k].len + r->buf_skew,
				   r->buf_align ? r->buf_align : 64, &b);
		if (ret < 0)
			goto undo;
		b.gpa += r->buf_skew;
		b.hva = (uint8_t *)b.hva + r->buf_skew;
		/* writable pieces start with the caller's canary bytes */
		memcpy(b.hva, pc[k].src, pc[k].len);
		if (pc[k].write) {
			r->wseg[r->nwseg].hva = b.hva;
			r->wseg[r->nwseg].len = pc[k].len;
			r->nwseg++;
		}
		if (r->indirect) {
			idx = (uint16_t)k;
		} else {
			idx = vq->free_stack[--vq->nfree];
			r->ring_descs[r->nring++] = idx;
		}
		table[idx] = (struct ffe_desc){ .addr = b.gpa, .len = pc[k].len,
						.flags = pc[k].write ? FFE_DESC_F_WRITE : 0 };
		if (k > 0) {
			table[prev].flags |= FFE_DESC_F_NEXT;
			table[prev].next = idx;
		}
		prev = idx;
	}
	head = r->ring_descs[0];
	r->head = head;
	vq->inflight[head] = r;
	vq->ninflight++;
	ffe_vq_publish(vq, head);
	return 0;
undo:
	while (r->nring)
		vq->free_stack[vq->nfree++] = r->ring_descs[--r->nring];
	return ret;
}

void ffe_vq_publish(struct ffe_vq *vq, uint16_t head)
{
	if (has_event_idx(vq))
		__atomic_store_n(used_event_p(vq), vq->last_used, __ATOMIC_RELAXED);
	if (vq->no_interrupt)
		__atomic_store_n(avail_flags(vq), FFE_AVAIL_F_NO_INTERRUPT, __ATOMIC_RELAXED);
	avail_ring(vq)[vq->avail_idx % vq->num] = head;
	/* descriptors and ring slot visible before the index that publishes them */
	vq->avail_idx++;
	__atomic_store_n(avail_idx_p(vq), vq->avail_idx, __ATOMIC_RELEASE);
}

void ffe_vq_set_avail_idx(struct ffe_vq *vq, uint16_t idx)
{
	vq->avail_idx = idx;
	__atomic_store_n(avail_idx_p(vq), idx, __ATOMIC_RELEASE);
}

struct ffe_desc *ffe_vq_desc(struct ffe_vq *vq, unsigned i)
{
	return &vq->desc[i % vq->num];
}

uint16_t ffe_vq_used_idx(struct ffe_vq *vq)
{
	if (vq->packed) {
		/* walk the used descriptors from our next one; a chain's used
		 * descriptor covers its length (ids of requests in flight) */
		uint64_t c = vq->pk_used, end = c + vq->num;

		while (c < end && ffe_vq_pk_is_used(vq, pk_off(vq, c), pk_wrap(vq, c), NULL)) {
			uint16_t id = vq->pdesc[pk_off(vq, c)].id;

			c += id < vq->num && vq->inflight[id] ? vq->pk_chain[id] : 1;
		}
		return pk_pos(vq, c);
	}
	return __atomic_load_n(used_idx_p(vq), __ATOMIC_ACQUIRE);
}

struct ffe_used_elem ffe_vq_used_elem(struct ffe_vq *vq, uint16_t idx)
{
	struct ffe_used_elem e;

	memcpy(&e, &used_ring(vq)[idx % vq->num], sizeof(e));
	return e;
}

int ffe_vq_kick_raw(struct ffe_vq *vq)
{
	uint64_t one = 1;

	if (vq->kickfd < 0)
		return -EBADF;
	vq->kicks++;
	return write(vq->kickfd, &one, 8) == 8 ? 0 : -errno;
}

int ffe_kick(struct ffe_vq *vq)
{
	uint16_t old = vq->kicked_idx, new = vq->avail_idx;
	bool need;

	if (vq->packed)
		return pk_kick(vq);
	/* the avail idx store must be visible before we read the device's
	 * suppression state, or we could miss a kick it needs (full fence) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	vq->kicked_idx = new;
	if (vq->always_kick)
		need = true;
	else if (has_event_idx(vq)) {
		uint16_t ev = __atomic_load_n(avail_event_p(vq), __ATOMIC_RELAXED);

		need = (uint16_t)(new - ev - 1) < (uint16_t)(new - old);
	} else
		need = !(__atomic_load_n(used_flags_p(vq), __ATOMIC_RELAXED) & FFE_USED_F_NO_NOTIFY);
	return need ? ffe_vq_kick_raw(vq) : 0;
}

static void complete(struct ffe_vq *vq, struct ffe_used_elem e, uint16_t idx)
{
	struct ffe_req *r;

	if (e.id >= vq->num || !(r = vq->inflight[e.id])) {
		vq->bogus_used++;
		return;
	}
	vq->inflight[e.id] = NULL;
	vq->ninflight--;
	vq->completed++;
	for (unsigned k = 0, off = 0; k < r->nwseg; k++) {
		memcpy((uint8_t *)r->wr + off, r->wseg[k].hva, r->wseg[k].len);
		off += r->wseg[k].len;
	}
	if (vq->packed) {
		vq->free_stack[vq->nfree++] = (uint16_t)e.id;     /* the buffer id */
		r->nring = 0;
	}
	while (r->nring)
		vq->free_stack[vq->nfree++] = r->ring_descs[--r->nring];
	r->used_len = e.len;
	r->used_idx = idx;
	__atomic_store_n(&r->done, true, __ATOMIC_RELEASE);
}

int ffe_poll_used(struct ffe_vq *vq)
{
	int count = 0;

	if (vq->packed)
		return pk_poll_used(vq);
	if (!vq->used)
		return 0;
	for (;;) {
		uint16_t idx = ffe_vq_used_idx(vq);

		if (idx == vq->last_used)
			break;
		if ((uint16_t)(idx - vq->last_used) > vq->num) {
			/* a used idx more than a ring ahead: nonsense */
			vq->bogus_used++;
			vq->last_used = idx;
			break;
		}
		while (vq->last_used != idx) {
			complete(vq, ffe_vq_used_elem(vq, vq->last_used), vq->last_used);
			vq->last_used++;
			count++;
		}
		if (!has_event_idx(vq))
			continue;
		/* ask for a call at the next completion, then look again: the
		 * device may have used more before it saw the new used_event */
		__atomic_store_n(used_event_p(vq), vq->last_used, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	}
	return count;
}

static bool drain_call(struct ffe_vq *vq)
{
	uint64_t v;

	if (vq->callfd >= 0 && read(vq->callfd, &v, 8) == 8) {
		vq->calls += v;
		return true;
	}
	return false;
}

int ffe_wait(struct ffe_vq *vq, struct ffe_req *r, int timeout_ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, timeout_ms < 0 ? vq->fe->timeout_ms : timeout_ms);
	for (;;) {
		struct pollfd p = { .fd = vq->callfd, .events = POLLIN };
		int rem;

		if (!vq->strict_calls)
			ffe_poll_used(vq);
		if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
			return 0;
		rem = ffe_deadline_left(&dl);
		if (rem == 0) {
			ffe_seterr(vq->fe, "q%u: request head %u not completed (avail %u, used %u, %s)",
				   vq->index, r->head, vq->avail_idx, ffe_vq_used_idx(vq),
				   vq->strict_calls ? "no call signal" : "polling");
			return -ETIMEDOUT;
		}
		if (vq->callfd < 0) {
			sleep_us(200);
			continue;
		}
		if (poll(&p, 1, vq->strict_calls ? rem : 1) > 0 && drain_call(vq))
			ffe_poll_used(vq);
	}
}

int ffe_vq_wait_used_change(struct ffe_vq *vq, uint16_t idx, int timeout_ms)
{
	struct ffe_deadline dl;

	ffe_deadline_start(&dl, timeout_ms);
	while (ffe_vq_used_idx(vq) == idx) {
		if (!ffe_deadline_left(&dl))
			return -ETIMEDOUT;
		drain_call(vq);
		sleep_us(500);
	}
	return 0;
}

int ffe_run(struct ffe_vq *vq, struct ffe_req *r)
{
	int ret = ffe_submit(vq, r);

	if (ret < 0)
		return ret;
	ret = ffe_kick(vq);
	if (ret < 0)
		return ret;
	return ffe_wait(vq, r, -1);
}

/* ---- virtio-blk ------------------------------------------------------------- */

static unsigned make_cuts(uint32_t *cuts, unsigned max, const uint32_t *lead,
			  unsigned nlead, size_t body, uint32_t seg, const uint32_t *tail,
			  unsigned ntail)
{
	unsigned n = 0;

	for (unsigned i = 0; i < nlead && n < max; i++)
		cuts[n++] = lead[i];
	while (body > 0 && n < max) {
		uint32_t l = seg && seg < body ? seg : (uint32_t)body;

		cuts[n++] = l;
		body -= l;
	}
	for (unsigned i = 0; i < ntail && n < max; i++)
		cuts[n++] = tail[i];
	return body ? max + 1 : n;
}

int ffe_blk_prep(struct ffe_blk_io *io, uint32_t type, uint64_t sector,
		 const void *out, size_t out_len, size_t in_len,
		 const struct ffe_layout *lay)
{
	static const struct ffe_layout natural = { FFE_L_NATURAL, 0, false };
	struct ffe_blk_hdr h = { .type = type, .ioprio = 0, .sector = sector };
	size_t rd_len = sizeof(h) + out_len, wr_len = in_len + 1;
	unsigned nrc = 0, nwc = 0;

	memset(&io->req, 0, sizeof(io->req));
	io->rd = malloc(rd_len);
	io->wr = malloc(wr_len);
	io->in_len = in_len;
	if (!io->rd || !io->wr) {
		free(io->rd);
		free(io->wr);
		io->rd = io->wr = NULL;
		return -ENOMEM;
	}
	if (!lay)
		lay = &natural;
	memcpy(io->rd, &h, sizeof(h));
	if (out_len)
		memcpy(io->rd + sizeof(h), out, out_len);
	memset(io->wr, 0xa5, in_len);
	io->wr[in_len] = 0xee;          /* status canary: "never written" */

	switch (lay->kind) {
	case FFE_L_NATURAL: {
		uint32_t hl = sizeof(h), one = 1;

		nrc = make_cuts(io->rd_cuts, FFE_MAX_DESCS, &hl, 1, out_len, lay->seg, NULL, 0);
		nwc = make_cuts(io->wr_cuts, FFE_MAX_DESCS, NULL, 0, in_len, lay->seg, &one, 1);
		break;
	}
	case FFE_L_MERGED:
		break;
	case FFE_L_CHOPPED:
		nrc = make_cuts(io->rd_cuts, FFE_MAX_DESCS, NULL, 0, rd_len,
				lay->seg ? lay->seg : 1, NULL, 0);
		nwc = make_cuts(io->wr_cuts, FFE_MAX_DESCS, NULL, 0, wr_len,
				lay->seg ? lay->seg : 1, NULL, 0);
		break;
	}
	if (nrc > FFE_MAX_DESCS || nwc > FFE_MAX_DESCS) {
		free(io->rd);
		free(io->wr);
		io->rd = io->wr = NULL;
		return -E2BIG;
	}
	io->req.rd = io->rd;
	io->req.rd_len = rd_len;
	io->req.wr = io->wr;
	io->req.wr_len = wr_len;
	io->req.rd_cuts = io->rd_cuts;
	io->req.n_rd_cuts = nrc;
	io->req.wr_cuts = io->wr_cuts;
	io->req.n_wr_cuts = nwc;
	io->req.indirect = lay->indirect;
	return 0;
}

int ffe_blk_status(const struct ffe_blk_io *io)
{
	return io->wr[io->in_len];
}

void ffe_blk_io_release(struct ffe_vq *vq, struct ffe_blk_io *io)
{
	struct ffe_req *r = &io->req;

	if (vq && vq->desc && !r->done && r->head < vq->num && vq->inflight[r->head] == r) {
		/* never leave a pointer to freed memory in the queue */
		vq->inflight[r->head] = NULL;
		vq->ninflight--;
	}
	free(io->rd);
	free(io->wr);
	io->rd = io->wr = NULL;
}

int ffe_blk_req(struct ffe_vq *vq, uint32_t type, uint64_t sector,
		const void *out, size_t out_len, void *in, size_t in_len,
		const struct ffe_layout *lay, uint32_t *used_len)
{
	struct ffe_blk_io *io = malloc(sizeof(*io));
	int ret;

	if (!io)
		return -ENOMEM;
	ret = ffe_blk_prep(io, type, sector, out, out_len, in_len, lay);
	if (ret < 0)
		goto out;
	ret = ffe_run(vq, &io->req);
	if (ret < 0)
		goto out;
	if (in_len)
		memcpy(in, io->wr, in_len);
	if (used_len)
		*used_len = io->req.used_len;
	ret = ffe_blk_status(io);
out:
	ffe_blk_io_release(vq, io);
	free(io);
	return ret;
}

int ffe_blk_read(struct ffe_vq *vq, uint64_t sector, void *buf, size_t len,
		 const struct ffe_layout *lay)
{
	return ffe_blk_req(vq, FFE_BLK_T_IN, sector, NULL, 0, buf, len, lay, NULL);
}

int ffe_blk_write(struct ffe_vq *vq, uint64_t sector, const void *buf,
		  size_t len, const struct ffe_layout *lay)
{
	return ffe_blk_req(vq, FFE_BLK_T_OUT, sector, buf, len, NULL, 0, lay, NULL);
}

int ffe_blk_flush(struct ffe_vq *vq)
{
	return ffe_blk_req(vq, FFE_BLK_T_FLUSH, 0, NULL, 0, NULL, 0, NULL, NULL);
}

int ffe_blk_get_id(struct ffe_vq *vq, char id[FFE_BLK_ID_BYTES])
{
	return ffe_blk_req(vq, FFE_BLK_T_GET_ID, 0, NULL, 0, id, FFE_BLK_ID_BYTES, NULL, NULL);
}

int ffe_blk_discard(struct ffe_vq *vq, uint64_t sector, uint32_t nsect)
{
	struct ffe_blk_dwz_seg s = { .sector = sector, .num_sectors = nsect, .flags = 0 };

	return ffe_blk_req(vq, FFE_BLK_T_DISCARD, 0, &s, sizeof(s), NULL, 0, NULL, NULL);
}

int ffe_blk_write_zeroes(struct ffe_vq *vq, uint64_t sector, uint32_t nsect, bool unmap)
{
	struct ffe_blk_dwz_seg s = { .sector = sector, .num_sectors = nsect,
				     .flags = unmap ? FFE_BLK_WZ_UNMAP : 0 };

	return ffe_blk_req(vq, FFE_BLK_T_WRITE_ZEROES, 0, &s, sizeof(s), NULL, 0, NULL, NULL);
}

/* ---- patterns ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

void ffe_pattern(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = mix64(seed * 0x100000001b3ull + i / 8);
		size_t n = len - i < 8 ? len - i : 8;

		memcpy(p + i, &v, n);
	}
}

bool ffe_pattern_ok(const void *buf, size_t len, uint64_t seed)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = mix64(seed * 0x100000001b3ull + i / 8);
		size_t n = len - i < 8 ? len - i : 8;

		if (memcmp(p + i, &v, n))
			return false;
	}
	return true;
}

/* ---- memory slots, status, the back-end channel ------------------------------ */

#define SLOT_PAD (64 * 1024)    /* file bytes before a hot-added region */

int ffe_region_new(struct ffe *fe, uint64_t gpa, uint64_t size)
{
	unsigned i = ffe_nregions(fe), m = fe->nmaps;
	struct ffe_region *r;
	uint8_t *p;
	int fd;

	if (i >= FFE_MAX_REGIONS || m >= FFE_MAX_REGIONS) {
		ffe_seterr(fe, "no room for region %u", i);
		return -ENOSPC;
	}
	if (size == 0 || (size & 0xffff))
		return -EINVAL;
	fd = new_memfd(SLOT_PAD + size);
	if (fd < 0)
		return fd;
	p = mmap(NULL, SLOT_PAD + size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		int e = -errno;

		close(fd);
		return e;
	}
	fe->memfd[m] = fd;
	fe->map[m] = p;
	fe->map_size[m] = SLOT_PAD + size;
	fe->nmaps = m + 1;
	r = &fe->r[i];
	*r = (struct ffe_region){
		/* the initial regions sit below 16 GiB (gpa) and at
		 * 0x5f8000000000..0x600000000000 (uva) */
		.gpa = gpa ? gpa : 0x1000000000ull + (uint64_t)i * 0x40000000ull,
		.size = size,
		.uva = 0x400000000000ull + (uint64_t)i * 0x100000000ull,
		.mmap_offset = SLOT_PAD,
		.fd = fd,
		.hva = p + SLOT_PAD,
	};
	__atomic_store_n(&fe->nregions, i + 1, __ATOMIC_RELEASE);
	return (int)i;
}

void ffe_mem_reg_of(struct ffe *fe, unsigned i, struct ffe_mem_reg *out)
{
	memset(out, 0, sizeof(*out));
	out->region = (struct ffe_mem_region){
		.gpa = fe->r[i].gpa, .size = fe->r[i].size,
		.uva = fe->r[i].uva, .mmap_offset = fe->r[i].mmap_offset,
	};
}

int ffe_add_mem_reg(struct ffe *fe, unsigned i)
{
	struct ffe_mem_reg mr;
	int ret;

	if (i >= ffe_nregions(fe))
		return -EINVAL;
	ffe_mem_reg_of(fe, i, &mr);
	ret = ffe_call(fe, FFE_ADD_MEM_REG, &mr, sizeof(mr), &fe->r[i].fd, 1);
	if (ret == 0)
		__atomic_store_n(&fe->r[i].gone, false, __ATOMIC_RELEASE);
	return ret;
}

int ffe_rem_mem_reg(struct ffe *fe, unsigned i, bool with_fd)
{
	struct ffe_mem_reg mr;
	int ret;

	if (i >= ffe_nregions(fe))
		return -EINVAL;
	ffe_mem_reg_of(fe, i, &mr);
	/* no buffer of a new request may land there from now on */
	__atomic_store_n(&fe->r[i].gone, true, __ATOMIC_RELEASE);
	ret = ffe_call(fe, FFE_REM_MEM_REG, &mr, sizeof(mr), with_fd ? &fe->r[i].fd : NULL,
		       with_fd ? 1 : 0);
	if (ret > 0)
		__atomic_store_n(&fe->r[i].gone, false, __ATOMIC_RELEASE);          /* refused: still there */
	return ret;
}

int ffe_get_max_mem_slots(struct ffe *fe, uint64_t *n)
{
	return ffe_get_u64(fe, FFE_GET_MAX_MEM_SLOTS, n);
}

int ffe_set_backend_req_fd(struct ffe *fe)
{
	int sv[2], ret;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ret = ffe_call(fe, FFE_SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1);
	close(sv[1]);
	if (ret != 0) {
		close(sv[0]);
		return ret;
	}
	if (fe->backend_fd >= 0)
		close(fe->backend_fd);
	fe->backend_fd = sv[0];
	return 0;
}

int ffe_backend_recv(struct ffe *fe, struct ffe_msg *m, int timeout_ms)
{
	struct ffe_deadline dl;
	int ret;

	ffe_deadline_start(&dl, timeout_ms < 0 ? fe->timeout_ms : timeout_ms);
	ret = recv_msg_on(fe->backend_fd, m, &dl);
	if (ret < 0) {
		ffe_seterr(fe, "back-end channel: %s", strerror(-ret));
		return ret;
	}
	if (m->hdr.flags & FFE_FLAG_NEED_REPLY) {
		struct { struct ffe_hdr h; uint64_t v; } __attribute__((packed)) a = {
			{ m->hdr.request, FFE_FLAG_VERSION | FFE_FLAG_REPLY, 8 }, 0 };

		if (send(fe->backend_fd, &a, sizeof(a), MSG_NOSIGNAL) != (ssize_t)sizeof(a))
			ffe_seterr(fe, "back-end channel: cannot ack request %u", m->hdr.request);
	}
	return 0;
}

int ffe_set_status(struct ffe *fe, uint8_t status)
{
	return ffe_set_u64(fe, FFE_SET_STATUS, status);
}

int ffe_get_status(struct ffe *fe, uint8_t *status)
{
	uint64_t v = 0;
	int ret = ffe_get_u64(fe, FFE_GET_STATUS, &v);

	if (ret == 0 && v > 0xff) {
		ffe_seterr(fe, "GET_STATUS: 0x%llx is not a status byte", (unsigned long long)v);
		return -EPROTO;
	}
	if (ret == 0)
		*status = (uint8_t)v;
	return ret;
}

int ffe_vq_scratch_region(struct ffe_vq *vq, int k, size_t len)
{
	struct ffe *fe = vq->fe;
	struct ffe_buf s;
	int ret;

	if (k < 0) {
		vq->scratch_only = 0;
		return 0;
	}
	if ((unsigned)k >= ffe_nregions(fe) || vq->ninflight)
		return -EINVAL;
	if (vq->scratch[k].size < len) {
		ret = ffe_alloc(fe, len, 4096, k, &s);
		if (ret < 0)
			return ret;
		vq->scratch[k].off = (uint64_t)((uint8_t *)s.hva - fe->r[k].hva);
		vq->scratch[k].size = len;
	}
	vq->scratch[k].cur = 0;
	vq->scratch_only = (unsigned)k + 1;
	return 0;
}

/* ---- the dirty log ------------------------------------------------------------ */

uint64_t ffe_log_size_for(struct ffe *fe)
{
	uint64_t end = 0, pages;

	for (unsigned i = 0; i < ffe_nregions(fe); i++)
		if (fe->r[i].gpa + fe->r[i].size > end)
			end = fe->r[i].gpa + fe->r[i].size;
	pages = (end + FFE_LOG_PAGE - 1) / FFE_LOG_PAGE;
	/* whole 64-page chunks of one u64 each, as QEMU sizes it */
	return (pages + 63) / 64 * 8;
}

struct ffe_log *ffe_log_new(uint64_t size, uint64_t offset, uint64_t file_size)
{
	static unsigned gen;
	struct ffe_log *l = calloc(1, sizeof(*l));
	char name[32];
	int e;

	if (!l)
		return NULL;
	l->fd = -1;
	if (!file_size)
		file_size = offset + size + 4096;
	l->gen = __atomic_add_fetch(&gen, 1, __ATOMIC_RELAXED);
	l->size = size;
	l->offset = offset;
	l->file_size = file_size;
	snprintf(name, sizeof(name), "fakefe-log-%u", l->gen);
	l->fd = memfd_create(name, MFD_CLOEXEC);
	if (l->fd < 0)
		goto fail;
	if (ftruncate(l->fd, (off_t)file_size) < 0)
		goto fail;
	l->file = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
	if (l->file == MAP_FAILED) {
		l->file = NULL;
		goto fail;
	}
	return l;
fail:
	e = errno;
	ffe_log_free(l);
	errno = e;
	return NULL;
}

void ffe_log_free(struct ffe_log *l)
{
	if (!l)
		return;
	if (l->file)
		munmap(l->file, l->file_size);
	if (l->fd >= 0)
		close(l->fd);
	free(l);
}

/* The bitmap's byte of page k, NULL beyond the log (or the file). */
static uint8_t *log_byte(const struct ffe_log *l, uint64_t page)
{
	uint64_t b = page / 8;

	if (b >= l->size || l->offset + b >= l->file_size)
		return NULL;
	return l->file + l->offset + b;
}

bool ffe_log_page(const struct ffe_log *l, uint64_t page)
{
	uint8_t *p = log_byte(l, page);

	/* the back-end sets bits with atomic ORs while we look */
	return p && (__atomic_load_n(p, __ATOMIC_ACQUIRE) >> (page % 8)) & 1;
}

bool ffe_log_all_set(const struct ffe_log *l, uint64_t gpa, uint64_t len)
{
	if (!len)
		return false;
	for (uint64_t k = ffe_page_first(gpa); k <= ffe_page_last(gpa, len); k++)
		if (!ffe_log_page(l, k))
			return false;
	return true;
}

bool ffe_log_none_set(const struct ffe_log *l, uint64_t gpa, uint64_t len)
{
	if (!len)
		return true;
	for (uint64_t k = ffe_page_first(gpa); k <= ffe_page_last(gpa, len); k++)
		if (ffe_log_page(l, k))
			return false;
	return true;
}

uint64_t ffe_log_next(const struct ffe_log *l, uint64_t from)
{
	uint64_t end = l->size < l->file_size - l->offset ? l->size : l->file_size - l->offset;

	for (uint64_t b = from / 8; b < end; b++) {
		uint8_t v = __atomic_load_n(l->file + l->offset + b, __ATOMIC_ACQUIRE);

		if (b == from / 8)
			v &= (uint8_t)(0xff << (from % 8));
		if (v)
			return b * 8 + (uint64_t)__builtin_ctz(v);
	}
	return UINT64_MAX;
}

uint64_t ffe_log_count(const struct ffe_log *l)
{
	uint64_t n = 0;

	for (uint64_t k = ffe_log_next(l, 0); k != UINT64_MAX; k = ffe_log_next(l, k + 1))
		n++;
	return n;
}

void ffe_log_clear(struct ffe_log *l)
{
	uint64_t end = l->size < l->file_size - l->offset ? l->size : l->file_size - l->offset;

	for (uint64_t b = 0; b < end; b++)
		__atomic_store_n(l->file + l->offset + b, 0, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int64_t ffe_log_guard_dirty(const struct ffe_log *l)
{
	for (uint64_t b = 0; b < l->file_size; b++) {
		if (b >= l->offset && b - l->offset < l->size)
			continue;
		if (__atomic_load_n(l->file + b, __ATOMIC_RELAXED))
			return (int64_t)b;
	}
	return -1;
}

int ffe_set_log_base(struct ffe *fe, struct ffe_log *l)
{
	struct ffe_log_base lb;
	struct ffe_msg *m;
	bool mine = !l;
	uint64_t v;
	int ret;

	if (!l) {
		l = ffe_log_new(ffe_log_size_for(fe), 0, 0);
		if (!l)
			return -errno;
	}
	lb = (struct ffe_log_base){ .mmap_size = l->size, .mmap_offset = l->offset };
	m = malloc(sizeof(*m));
	if (!m) {
		ret = -ENOMEM;
		goto out;
	}
	/* QEMU (vhost_user_set_log_base) asks for no reply and waits for one */
	ret = ffe_send_raw(fe, FFE_SET_LOG_BASE, FFE_FLAG_VERSION, sizeof(lb), &lb, sizeof(lb),
			   &l->fd, 1);
	if (ret == 0)
		ret = recv_reply(fe, FFE_SET_LOG_BASE, m);
	if (ret == 0 && m->hdr.size != 8) {
		ffe_seterr(fe, "SET_LOG_BASE: reply of size %u, expected a u64", m->hdr.size);
		ret = -EPROTO;
	}
	if (ret == 0) {
		memcpy(&v, m->payload, 8);
		if (v) {
			ffe_seterr(fe, "SET_LOG_BASE: back-end replied %#llx", (unsigned long long)v);
			ret = v > 0x7fffffff ? 0x7fffffff : (int)v;
		}
	}
	free(m);
	if (ret == 0) {
		ffe_log_free(fe->log_old);
		fe->log_old = fe->log;
		fe->log = l;
		return 0;
	}
out:
	if (mine)
		ffe_log_free(l);
	return ret;
}

int ffe_set_log_fd(struct ffe *fe)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), ret;

	if (efd < 0)
		return -errno;
	ret = ffe_call(fe, FFE_SET_LOG_FD, NULL, 0, &efd, 1);
	close(efd);
	return ret;
}

int ffe_set_log_all(struct ffe *fe, bool on)
{
	/* fe->features is left alone: request threads read it (EVENT_IDX)
	 * while the test toggles LOG_ALL under I/O. */
	uint64_t f = on ? fe->features | FFE_BIT(FFE_F_LOG_ALL)
			: fe->features & ~FFE_BIT(FFE_F_LOG_ALL);

	return ffe_set_u64(fe, FFE_SET_FEATURES, f);
}

int ffe_vq_set_log(struct ffe *fe, unsigned i, bool on)
{
	struct ffe_vq *vq;
	struct ffe_vring_addr a;
	int ret;

	if (i >= FFE_MAX_QUEUES || !fe->vq[i].desc)
		return -EINVAL;
	vq = &fe->vq[i];
	a = (struct ffe_vring_addr){
		.index = i, .flags = on ? FFE_VRING_F_LOG : 0,
		.desc = vq->desc_uva, .used = vq->used_uva, .avail = vq->avail_uva,
		.log = on ? vq->used_gpa : 0,
	};
	ret = ffe_call(fe, FFE_SET_VRING_ADDR, &a, sizeof(a), NULL, 0);
	if (ret == 0)
		vq->log_ring = on;
	return ret;
}

static int log_switch(struct ffe *fe, unsigned nq, bool on)
{
	int ret;

	if (on && !fe->log) {
		ffe_seterr(fe, "logging asked for without a log base");
		return -EINVAL;
	}
	/* QEMU's vhost_dev_set_log: features first, then every ring */
	ret = ffe_set_log_all(fe, on);
	if (ret != 0) {
		ffe_seterr(fe, "SET_FEATURES with LOG_ALL %s: %s", on ? "set" : "cleared",
			   ret < 0 ? strerror(-ret) : "refused");
		return ret;
	}
	for (unsigned i = 0; i < nq && i < FFE_MAX_QUEUES; i++) {
		if (!fe->vq[i].started)
			continue;
		ret = ffe_vq_set_log(fe, i, on);
		if (ret != 0) {
			ffe_seterr(fe, "q%u SET_VRING_ADDR with log %s: %s", i, on ? "on" : "off",
				   ret < 0 ? strerror(-ret) : "refused");
			return ret;
		}
	}
	return 0;
}

int ffe_log_start(struct ffe *fe, unsigned nq)
{
	return log_switch(fe, nq, true);
}

int ffe_log_stop(struct ffe *fe, unsigned nq)
{
	return log_switch(fe, nq, false);
}

int ffe_req_segs(struct ffe_vq *vq, const struct ffe_req *r, struct ffe_seg *out,
		 unsigned max)
{
	const struct ffe_desc *t = vq->desc;
	unsigned n = 0, count = r->nring;

	if (vq->packed)
		return pk_req_segs(vq, r, out, max);
	if (!r->nring)
		return 0;
	if (r->indirect) {
		const struct ffe_desc *h = &vq->desc[r->ring_descs[0]];

		if (max < 1)
			return -E2BIG;
		out[n++] = (struct ffe_seg){ h->addr, h->len, FFE_SEG_TABLE };
		t = ffe_gpa_to_hva(vq->fe, h->addr, h->len);
		if (!t)
			return -EFAULT;
		count = h->len / sizeof(*t);
	}
	for (unsigned k = 0; k < count; k++) {
		const struct ffe_desc *d = r->indirect ? &t[k] : &t[r->ring_descs[k]];

		if (n >= max)
			return -E2BIG;
		out[n++] = (struct ffe_seg){ d->addr, d->len,
					     (d->flags & FFE_DESC_F_WRITE) ? FFE_SEG_WR : FFE_SEG_RD };
	}
	return (int)n;
}

void ffe_vq_used_area(struct ffe_vq *vq, uint64_t *gpa, uint64_t *len)
{
	if (vq->packed) {
		/* the device writes used descriptors into the ring */
		*gpa = vq->desc_gpa;
		*len = 16ull * vq->num;
		return;
	}
	*gpa = vq->used_gpa;
	*len = 4 + 8ull * vq->num + (has_event_idx(vq) ? 2 : 0);
}

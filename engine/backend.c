/* Backend selection, the engine thread's backend context (its io_uring)
 * and iovec helpers; see backend.h. */
#include "backend.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int be_open(const struct vdev_params *p, struct backend **out, char *err, size_t errlen)
{
	switch (p->backing) {
	case BE_RAM:
		return be_ram_ops.open(p, out, err, errlen);
	case BE_NULL:
		return be_null_ops.open(p, out, err, errlen);
	case BE_FILE:
		return be_file_ops.open(p, out, err, errlen);
	case BE_RBD:
		return be_rbd_ops.open(p, out, err, errlen);
	default:
		snprintf(err, errlen, "backing '%s' is not supported", p->path);
		return -EINVAL;
	}
}

int be_holds_data(struct backend *be, uint64_t off, uint64_t len)
{
	if (len == 0)
		return 0;
	return be->ops->holds_data ? be->ops->holds_data(be, off, len) : 1;
}

int be_ctx_init(struct be_ctx *ctx, unsigned entries, int *why)
{
	struct io_uring_params up = { 0 };
	struct io_uring *ring;
	int rc;

	ctx->ring = NULL;
	ctx->ring_fd = -1;
	ring = calloc(1, sizeof(*ring));
	if (!ring)
		return -ENOMEM;
	/* A larger completion queue than submission queue: requests stay in
	 * flight far longer than they sit in the SQ. */
	up.flags = IORING_SETUP_CQSIZE;
	up.cq_entries = entries * 4;
	rc = io_uring_queue_init_params(entries, ring, &up);
	if (rc < 0) {
		free(ring);
		*why = -rc;
		return BE_CTX_NO_URING;
	}
	ctx->ring_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->ring_fd < 0 || io_uring_register_eventfd(ring, ctx->ring_fd) < 0) {
		rc = -errno;
		io_uring_queue_exit(ring);
		free(ring);
		if (ctx->ring_fd >= 0)
			close(ctx->ring_fd);
		ctx->ring_fd = -1;
		return rc;
	}
	io_uring_cq_eventfd_toggle(ring, false);
	ctx->ring = ring;
	return 0;
}

void be_ctx_fini(struct be_ctx *ctx)
{
	if (ctx->ring) {
		io_uring_queue_exit(ctx->ring);
		free(ctx->ring);
		ctx->ring = NULL;
	}
	if (ctx->ring_fd >= 0)
		close(ctx->ring_fd);
	ctx->ring_fd = -1;
}

uint64_t be_ctx_now(struct be_ctx *ctx)
{
	if (!ctx->now_ns) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ctx->now_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	}
	return ctx->now_ns;
}

bool be_ctx_ready(struct be_ctx *ctx)
{
	return ctx->ring && io_uring_cq_ready(ctx->ring);
}

void be_ctx_arm(struct be_ctx *ctx, bool on)
{
	if (ctx->ring)
		io_uring_cq_eventfd_toggle(ctx->ring, on);
}

unsigned be_ctx_room(struct be_ctx *ctx)
{
	unsigned cq, used;

	if (!ctx->ring)
		return UINT32_MAX;
	cq = *ctx->ring->cq.kring_entries;
	used = ctx->inflight + io_uring_sq_ready(ctx->ring);
	if (used + BE_MAX_SQE_PER_REQ > cq)
		return 0;
	return (cq - used) / BE_MAX_SQE_PER_REQ;
}

/* SQEs handed to the kernel at most at a time within one engine pass.  One
 * io_uring_enter for a whole batch of 32 means the device sees none of them
 * until the kernel has prepared all 32 (filesystem, block layer, then one
 * notification at the end): on a virtio disk that idles the device for
 * tens of microseconds per batch, and at depth the batches fall into
 * lockstep (32 out, 32 back, 32 out).  Chunks of a few let the device start
 * on the first requests while the next are prepared, for one more syscall
 * and device notification per chunk.  Measured (docs/benchmarks.md, "File
 * I/O at depth"): 4 KiB randread QD32 +11%, QD8 +4%; one SQE at a time was
 * no better than four. */
#define BE_SUBMIT_CHUNK 4

void be_ctx_make_room(struct be_ctx *ctx)
{
	if (ctx->ring && (io_uring_sq_ready(ctx->ring) >= BE_SUBMIT_CHUNK ||
			  io_uring_sq_space_left(ctx->ring) < BE_MAX_SQE_PER_REQ))
		io_uring_submit(ctx->ring);
}

bool be_ctx_flush(struct be_ctx *ctx)
{
	if (!ctx->ring)
		return false;
	if (io_uring_sq_ready(ctx->ring))
		io_uring_submit(ctx->ring);
	return true;
}

unsigned be_ctx_reap(struct be_ctx *ctx, void (*done)(void *arg, void *cookie, int res),
		     void *arg)
{
	struct io_uring_cqe *cqe;
	unsigned n = 0;

	if (!ctx->ring)
		return 0;
	/* One completion at a time, consumed before it is acted on: a fault
	 * while reporting it must not make us see it twice. */
	while (io_uring_peek_cqe(ctx->ring, &cqe) == 0) {
		void *cookie = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(ctx->ring, cqe);
		ctx->inflight--;
		n++;
		if (cookie)
			done(arg, cookie, res);
	}
	return n;
}

size_t iov_size(const struct iovec *iov, unsigned cnt)
{
	size_t n = 0;
	for (unsigned i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

/* Copy len bytes between buf and iov, starting skip bytes into iov. */
static size_t iov_copy(const struct iovec *iov, unsigned cnt, size_t skip, char *buf,
		       size_t len, bool to_iov)
{
	size_t done = 0;

	for (unsigned i = 0; i < cnt && done < len; i++) {
		size_t l = iov[i].iov_len;
		char *p;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		p = (char *)iov[i].iov_base + skip;
		l -= skip;
		if (l > len - done)
			l = len - done;
		if (to_iov)
			memcpy(p, buf + done, l);
		else
			memcpy(buf + done, p, l);
		done += l;
		skip = 0;
	}
	return done;
}

size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf, size_t len)
{
	return iov_copy(iov, cnt, skip, buf, len, false);
}

size_t iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf, size_t len)
{
	return iov_copy(iov, cnt, skip, (char *)buf, len, true);
}

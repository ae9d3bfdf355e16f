/* virtio-blk requests: parse the header from the readable part of a chain,
 * check type, range and sizes, start it on the backend, and write the
 * status when it completes (at once for ram/null, later for io_uring).
 * Runs on engine threads; no allocation, no lock. */
#include "blk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define SECTOR 512u

#define STAT_ADD(field, n) atomic_store_explicit(&(field),                        \
		atomic_load_explicit(&(field), memory_order_relaxed) + (n),           \
		memory_order_relaxed)

static void on_ring_broken(struct vq *vq, const char *why)
{
	struct vblk *b = vq->dev;

	if (b->ring_broken)
		b->ring_broken(b, vq, why);
}

int vblk_create_on(const char *name, const struct vdev_params *p, struct backend *be,
		   struct vblk **out, char *err, size_t errlen)
{
	struct vblk *b;

	if (posix_memalign((void **)&b, 64, sizeof(*b))) {
		be_close(be);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memset(b, 0, sizeof(*b));
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->params = *p;
	b->wce = true;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		vq_init(&b->vqs[i], i, b, b->name, on_ring_broken);
	b->be = be;
	b->params.size = be->size;
	*out = b;
	return 0;
}

int vblk_create(const char *name, const struct vdev_params *p, struct vblk **out,
		char *err, size_t errlen)
{
	struct backend *be;
	int rc = be_open(p, &be, err, errlen);

	if (rc < 0)
		return rc;
	return vblk_create_on(name, p, be, out, err, errlen);
}

void vblk_destroy(struct vblk *b)
{
	if (!b)
		return;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		vblk_queue_release(b, &b->vqs[i]);
		free(atomic_load(&b->hist[i]));
	}
	be_close(b->be);
	free(b);
}

int vblk_queue_prepare(struct vblk *b, struct vq *vq, char *err, size_t errlen)
{
	int rc = vq_prepare(vq, err, errlen);

	if (rc < 0)
		return rc;
	if (!atomic_load(&b->hist[vq->index])) {
		struct qos_hist *h = calloc(VBLK_NOPS, sizeof(*h));
		if (!h) {
			snprintf(err, errlen, "queue %u: out of memory", vq->index);
			return -ENOMEM;
		}
		atomic_store_explicit(&b->hist[vq->index], h, memory_order_release);
	}
	if (!b->reqs[vq->index]) {
		struct vblk_req *reqs = calloc(vq->num, sizeof(*reqs));
		if (!reqs) {
			snprintf(err, errlen, "queue %u: out of memory", vq->index);
			return -ENOMEM;
		}
		for (unsigned i = 0; i < vq->num; i++)
			reqs[i].vq = vq;
		b->reqs[vq->index] = reqs;
	}
	return 0;
}

void vblk_queue_release(struct vblk *b, struct vq *vq)
{
	free(b->reqs[vq->index]);
	b->reqs[vq->index] = NULL;
	vq_release(vq);
}

void vblk_queue_reset(struct vblk *b, struct vq *vq)
{
	vblk_queue_release(b, vq);
	vq_reset(vq);
}

static bool in_range(const struct vblk *b, uint64_t sector, uint64_t len)
{
	uint64_t size = b->be->size;
	return sector <= size / SECTOR && len <= size - sector * SECTOR;
}

/* Drop `skip` bytes from the front of an iovec array (in place). */
static struct iovec *iov_skip(struct iovec *iov, unsigned *cnt, size_t skip)
{
	while (*cnt && skip >= iov->iov_len) {
		skip -= iov->iov_len;
		iov++;
		(*cnt)--;
	}
	if (*cnt && skip) {
		iov->iov_base = (char *)iov->iov_base + skip;
		iov->iov_len -= skip;
	}
	return iov;
}

/* Drop the last byte (the status) from a writable iovec array. */
static void iov_drop_last_byte(struct iovec *iov, unsigned *cnt)
{
	while (*cnt && iov[*cnt - 1].iov_len == 0)
		(*cnt)--;
	if (*cnt && --iov[*cnt - 1].iov_len == 0)
		(*cnt)--;
}

static enum vblk_op op_of(uint8_t type)
{
	switch (type) {
	case VIRTIO_BLK_T_IN: return VBLK_OP_READ;
	case VIRTIO_BLK_T_OUT: return VBLK_OP_WRITE;
	case VIRTIO_BLK_T_FLUSH: return VBLK_OP_FLUSH;
	default: return VBLK_OP_OTHER;
	}
}

/* Write the status, push the used element, count it, free the slot. */
static void finish(struct vblk_req *req, struct be_ctx *ctx)
{
	struct vq *vq = req->vq;
	struct vblk *b = vq->dev;
	struct vblk_stats *st = &b->stats[vq->index];
	uint32_t written = req->written;
	uint64_t now = be_ctx_now(ctx);

	qos_hist_add_owned(&atomic_load_explicit(&b->hist[vq->index], memory_order_relaxed)
				   [op_of(req->type)],
			   now > req->start_ns ? now - req->start_ns : 0);

	if (req->result != VIRTIO_BLK_S_OK) {
		written = 1;
		STAT_ADD(st->errors, 1);
	} else {
		switch (req->type) {
		case VIRTIO_BLK_T_IN:
			STAT_ADD(st->reads, 1);
			STAT_ADD(st->bytes_read, req->written - 1);
			break;
		case VIRTIO_BLK_T_OUT:
			STAT_ADD(st->writes, 1);
			STAT_ADD(st->bytes_written, req->expect);
			break;
		case VIRTIO_BLK_T_FLUSH:
			STAT_ADD(st->flushes, 1);
			break;
		case VIRTIO_BLK_T_GET_ID:
			STAT_ADD(st->get_ids, 1);
			break;
		case VIRTIO_BLK_T_DISCARD:
			STAT_ADD(st->discards, 1);
			break;
		case VIRTIO_BLK_T_WRITE_ZEROES:
			STAT_ADD(st->write_zeroes, 1);
			break;
		}
	}
	*req->status = req->result;
	if (vq->log)
		vq_log_chain(vq, &req->chain, req->status);
	vq_push_used(vq, req->chain.head, written);
}

bool vblk_complete(struct be_ctx *ctx, void *cookie, int res)
{
	struct vblk_req *req = cookie;
	struct vq *vq = req->vq;

	if (res < 0 || (req->expect && (uint64_t)res != req->expect)) {
		if (req->result == VIRTIO_BLK_S_OK)
			vlog_rl(LOG_ERR, "[%s q%u] backend I/O failed: %s", vq->devname,
				vq->index, res < 0 ? strerror(-res) : "short transfer");
		req->result = VIRTIO_BLK_S_IOERR;
	}
	if (--req->pending)
		return false;
	req->busy = false;
	vq->inflight--;
	STAT_ADD(((struct vblk *)vq->dev)->stats[vq->index].inflight, -1);
	if (vq->dead)
		return true;    /* nowhere to report it: the memory is gone */
	finish(req, ctx);
	return true;
}

/* Hand io to the backend; the request finishes now unless it was queued. */
static void submit(struct vblk *b, struct vblk_req *req, struct be_io *io, struct be_ctx *ctx)
{
	unsigned nsqe = 0;
	int rc;

	if (atomic_load_explicit(&b->be->failed, memory_order_relaxed)) {
		req->result = VIRTIO_BLK_S_IOERR;
		finish(req, ctx);
		return;
	}
	io->cookie = req;
	io->job = &req->job;
	rc = b->be->ops->submit(b->be, io, ctx, &nsqe);
	if (rc == -EAGAIN && be_ctx_flush(ctx)) {
		/* The submission queue was full: the kernel emptied it. */
		rc = b->be->ops->submit(b->be, io, ctx, &nsqe);
	}
	if (rc == BE_QUEUED) {
		struct vq *vq = req->vq;
		req->busy = true;
		req->pending = nsqe;
		vq->inflight++;
		STAT_ADD(b->stats[vq->index].inflight, 1);
		return;
	}
	if (rc < 0)
		req->result = VIRTIO_BLK_S_IOERR;
	finish(req, ctx);
}

static uint8_t parse_ranges(struct vblk *b, struct vblk_req *req, struct iovec *iov,
			    unsigned cnt, uint64_t len, bool zeroes)
{
	struct vblk_discard_seg segs[VBLK_MAX_DISCARD_SEG];
	unsigned nseg;

	if (vblk_readonly(b))
		return VIRTIO_BLK_S_IOERR;
	if (zeroes ? !b->be->can_write_zeroes : !b->be->can_discard)
		return VIRTIO_BLK_S_UNSUPP;
	if (len == 0 || len % sizeof(struct vblk_discard_seg))
		return VIRTIO_BLK_S_IOERR;
	nseg = len / sizeof(struct vblk_discard_seg);
	if (nseg > VBLK_MAX_DISCARD_SEG)
		return VIRTIO_BLK_S_IOERR;

	/* Check every segment before touching any data. */
	iov_to_buf(iov, cnt, 0, segs, len);
	for (unsigned i = 0; i < nseg; i++) {
		uint32_t flags = segs[i].flags;
		if (zeroes ? (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) : flags)
			return VIRTIO_BLK_S_UNSUPP;
		if (segs[i].num_sectors > VBLK_MAX_DISCARD_SECTORS ||
		    !in_range(b, segs[i].sector, (uint64_t)segs[i].num_sectors * SECTOR))
			return VIRTIO_BLK_S_IOERR;
		req->ranges[i].offset = segs[i].sector * SECTOR;
		req->ranges[i].len = (uint64_t)segs[i].num_sectors * SECTOR;
		req->ranges[i].unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
	}
	req->pending = nseg;
	return VIRTIO_BLK_S_OK;
}

/* A chain that broke a rule about buffers (unmapped address, too many
 * segments, readable after writable): report IOERR in the last byte of the
 * last writable descriptor if that byte is addressable. */
static void fail_faulted(struct vblk *b, struct vq *vq, struct vq_chain *c)
{
	uint32_t written = 0;

	if (c->last_w_len && c->last_w_addr + c->last_w_len - 1 >= c->last_w_addr) {
		uint8_t *st = mem_gpa_to_host(vq->mem, c->last_w_addr + c->last_w_len - 1, 1);
		if (st) {
			*st = VIRTIO_BLK_S_IOERR;
			written = 1;
			vq_log_gpa(vq, c->last_w_addr + c->last_w_len - 1, 1);
		}
	}
	vlog_rl(LOG_WARNING, "[%s q%u] request at head %u has unusable buffers",
		b->name, vq->index, c->head);
	STAT_ADD(b->stats[vq->index].errors, 1);
	vq_push_used(vq, c->head, written);
}

/* Start the request whose chain was walked into req->chain: it completes
 * now (its used element is pushed, not flushed) or when the backend's
 * completions arrive through vblk_complete(). */
static void handle(struct vblk *b, struct vq *vq, struct vblk_req *req, struct be_ctx *ctx)
{
	struct vq_chain *c = &req->chain;
	struct vblk_req_hdr hdr;
	struct iovec *din, *dout, *last;
	unsigned nin, nout;
	uint64_t len;

	if (c->fault || c->nin == 0) {
		fail_faulted(b, vq, c);
		return;
	}
	last = &c->iov[c->nout + c->nin - 1];
	req->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	req->result = VIRTIO_BLK_S_OK;
	req->written = 1;
	req->expect = 0;
	req->type = 0xff;
	if (c->out_len < sizeof(hdr)) {
		req->result = VIRTIO_BLK_S_IOERR;
		finish(req, ctx);
		return;
	}
	if (c->iov[0].iov_len >= sizeof(hdr))
		memcpy(&hdr, c->iov[0].iov_base, sizeof(hdr));  /* the usual layout */
	else
		iov_to_buf(c->iov, c->nout, 0, &hdr, sizeof(hdr));
	req->type = hdr.type <= 0xff ? hdr.type : 0xff;

	nout = c->nout;
	dout = iov_skip(c->iov, &nout, sizeof(hdr));
	nin = c->nin;
	din = &c->iov[c->nout];
	iov_drop_last_byte(din, &nin);

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool out = hdr.type == VIRTIO_BLK_T_OUT;
		struct be_io io = {
			.op = out ? BE_OP_WRITE : BE_OP_READ,
			.fua = out && !b->wce,
			.offset = hdr.sector * SECTOR,
			.iov = out ? dout : din,
			.iovcnt = out ? nout : nin,
		};
		len = out ? c->out_len - sizeof(hdr) : c->in_len - 1;
		if ((out && vblk_readonly(b)) || len % SECTOR || !in_range(b, hdr.sector, len)) {
			req->result = VIRTIO_BLK_S_IOERR;
			break;
		}
		io.len = len;
		req->expect = len;
		if (!out)
			req->written = len + 1;
		if (len == 0)
			break;
		submit(b, req, &io, ctx);
		return;
	}
	case VIRTIO_BLK_T_FLUSH: {
		struct be_io io = { .op = BE_OP_FLUSH };
		submit(b, req, &io, ctx);
		return;
	}
	case VIRTIO_BLK_T_GET_ID: {
		char id[VIRTIO_BLK_ID_BYTES] = { 0 };
		const char *serial = b->params.serial[0] ? b->params.serial : b->be->serial;
		size_t n = c->in_len - 1;
		memcpy(id, serial, strnlen(serial, sizeof(id)));
		if (n > sizeof(id))
			n = sizeof(id);
		req->written += iov_from_buf(din, nin, 0, id, n);
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		bool zeroes = hdr.type == VIRTIO_BLK_T_WRITE_ZEROES;
		struct be_io io = {
			.op = zeroes ? BE_OP_WRITE_ZEROES : BE_OP_DISCARD,
			.ranges = req->ranges,
		};
		req->result = parse_ranges(b, req, dout, nout, c->out_len - sizeof(hdr), zeroes);
		if (req->result != VIRTIO_BLK_S_OK)
			break;
		io.nranges = req->pending;
		submit(b, req, &io, ctx);
		return;
	}
	default:
		req->result = VIRTIO_BLK_S_UNSUPP;
		break;
	}
	finish(req, ctx);
}

/* Run again the requests that were in flight when the previous back-end
 * died, oldest first, before anything new from the avail ring. */
static int resubmit(struct vblk *b, struct vq *vq, struct be_ctx *ctx, unsigned room)
{
	struct vblk_req *reqs = b->reqs[vq->index];
	uint16_t heads[VQ_BATCH];
	unsigned nh = vq_resubmit_heads(vq, heads, room < VQ_BATCH ? room : VQ_BATCH);
	int n = 0;

	for (; (unsigned)n < nh; n++) {
		struct vblk_req *req = &reqs[heads[n]];

		if (req->busy)
			break;
		if (vq_walk(vq, heads[n], &req->chain) < 0) {
			vq_flush_used(vq);      /* what did complete is published */
			vq_mark_broken(vq, "bad descriptor chain in an inflight request");
			return -1;
		}
		be_ctx_make_room(ctx);
		vq_resubmit_take(vq);
		req->start_ns = be_ctx_now(ctx);
		handle(b, vq, req, ctx);
	}
	vq_flush_used(vq);
	return n;
}

/* What a limit counts of the request whose chain is in req: its kind and
 * data bytes, read from the header without trusting it (handle() checks
 * it; a bad one is counted as "other" and fails there). */
static enum qos_kind qos_peek(const struct vblk_req *req, uint64_t *bytes)
{
	const struct vq_chain *c = &req->chain;
	uint32_t type;

	*bytes = 0;
	if (c->fault || c->nout == 0 || c->iov[0].iov_len < sizeof(struct vblk_req_hdr))
		return QOS_OTHER;
	type = READ_ONCE(((const struct vblk_req_hdr *)c->iov[0].iov_base)->type);
	if (type == VIRTIO_BLK_T_IN && c->in_len) {
		*bytes = c->in_len - 1;
		return QOS_READ;
	}
	if (type == VIRTIO_BLK_T_OUT && c->out_len >= sizeof(struct vblk_req_hdr)) {
		*bytes = c->out_len - sizeof(struct vblk_req_hdr);
		return QOS_WRITE;
	}
	return QOS_OTHER;
}

/* May the request in req start now, as far as the device's limits and its
 * group's go?  If not, its queue is held until the tokens are there. */
static bool admit(struct vblk *b, struct vq *vq, struct vblk_req *req, uint64_t now)
{
	struct qos *g = atomic_load_explicit(&b->group, memory_order_acquire);
	uint64_t bytes, wait = 0;
	enum qos_kind kind;

	if (!qos_active(&b->qos) && !qos_active(g))
		return true;
	kind = qos_peek(req, &bytes);
	if ((qos_active(&b->qos) && !qos_check(&b->qos, kind, bytes, now, &wait)) ||
	    (qos_active(g) && !qos_check(g, kind, bytes, now, &wait))) {
		vq->throttled_until = now + wait;
		if (!vq->throttled_since)
			vq->throttled_since = now;
		return false;
	}
	if (qos_active(&b->qos))
		qos_charge(&b->qos, kind, bytes);
	if (qos_active(g))
		qos_charge(g, kind, bytes);
	return true;
}

int vblk_poll(struct vq *vq, struct be_ctx *ctx, unsigned room)
{
	struct vblk *b = vq->dev;
	struct vblk_req *reqs = b->reqs[vq->index];
	uint16_t heads[VQ_BATCH];
	char why[64] = "";
	int ok, n = 0;
	uint64_t now;
	bool limited;

	if (!vq_accepting(vq))
		return 0;
	if (vq->throttled_until) {
		if (be_ctx_now(ctx) < vq->throttled_until)
			return 0;       /* held by a limit: the ring keeps them */
		vq->throttled_until = 0;
	}
	if (vq->resubmitted < vq->nresubmit)
		return resubmit(b, vq, ctx, room);

	/* Three passes over the batch so that its cache misses overlap: the
	 * heads (the ring layer prefetches their descriptors), the chains
	 * (prefetching the request headers), then the requests.  A bad entry
	 * ends the batch before it; what came before is still served. */
	ok = vq_avail_heads(vq, heads, room < VQ_BATCH ? room : VQ_BATCH, why, sizeof(why));
	if (ok < 0)
		return -1;
	if (ok == 0 && !why[0])
		return 0;
	for (int i = 0; i < ok; i++) {
		struct vblk_req *req = &reqs[heads[i]];
		if (req->busy) {
			snprintf(why, sizeof(why), "head %u made available twice", heads[i]);
			ok = i;
			break;
		}
		if (vq_walk(vq, heads[i], &req->chain) < 0) {
			snprintf(why, sizeof(why), "bad descriptor chain at head %u", heads[i]);
			ok = i;
			break;
		}
		if (req->chain.nout)
			__builtin_prefetch(req->chain.iov[0].iov_base);
	}
	now = be_ctx_now(ctx);
	limited = qos_active(&b->qos) || qos_active(atomic_load_explicit(&b->group,
									 memory_order_acquire));
	for (; n < ok; n++) {
		uint16_t head = heads[n];
		struct vblk_req *req = &reqs[head];

		if (req->busy) {        /* the same head twice in this batch */
			snprintf(why, sizeof(why), "head %u made available twice", head);
			break;
		}
		if (limited && !admit(b, vq, req, now)) {
			why[0] = '\0';         /* what follows a held one waits too */
			break;
		}
		if (vq->throttled_since) {
			STAT_ADD(b->stats[vq->index].throttled_ns, now - vq->throttled_since);
			vq->throttled_since = 0;
		}
		req->start_ns = now;
		be_ctx_make_room(ctx);
		vq_take(vq, head);
		handle(b, vq, req, ctx);
	}
	vq_flush_used(vq);
	if (why[0]) {
		vq_mark_broken(vq, why);
		return -1;
	}
	return n;
}

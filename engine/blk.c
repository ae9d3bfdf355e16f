/* virtio-blk requests: parse the header from the readable part of a chain,
 * check type, range and sizes, run it on the backend, write the status.
 * Runs on engine threads; no allocation, no lock. */
#include "blk.h"

#include <errno.h>
#include <string.h>

#include "log.h"

#define SECTOR 512u

#define STAT_ADD(field, n) atomic_store_explicit(&(field),                        \
		atomic_load_explicit(&(field), memory_order_relaxed) + (n),           \
		memory_order_relaxed)

const char *vblk_name(const struct vblk *b)
{
	return b->name;
}

void vblk_ring_broken(struct vblk *b, struct vq *vq, const char *why)
{
	if (b->ring_broken)
		b->ring_broken(b, vq, why);
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

static int do_io(struct vblk *b, struct be_io *io)
{
	int rc = b->be->ops->submit(b->be, io);
	if (rc == 0 && io->op == BE_OP_WRITE && !b->wce && b->be->has_cache) {
		struct be_io fl = { .op = BE_OP_FLUSH };
		rc = b->be->ops->submit(b->be, &fl);
	}
	return rc;
}

static uint8_t do_discard(struct vblk *b, struct vq *vq, struct iovec *iov,
			  unsigned cnt, uint64_t len, bool zeroes)
{
	unsigned nseg;

	if (b->params.readonly)
		return VIRTIO_BLK_S_IOERR;
	if (zeroes ? !b->be->can_write_zeroes : !b->be->can_discard)
		return VIRTIO_BLK_S_UNSUPP;
	if (len == 0 || len % sizeof(struct vblk_discard_seg))
		return VIRTIO_BLK_S_IOERR;
	nseg = len / sizeof(struct vblk_discard_seg);
	if (nseg > VBLK_MAX_DISCARD_SEG)
		return VIRTIO_BLK_S_IOERR;

	/* Check every segment before touching any data. */
	struct vblk_discard_seg segs[VBLK_MAX_DISCARD_SEG];
	iov_to_buf(iov, cnt, 0, segs, len);
	for (unsigned i = 0; i < nseg; i++) {
		uint32_t flags = segs[i].flags;
		if (zeroes ? (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) : flags)
			return VIRTIO_BLK_S_UNSUPP;
		if (segs[i].num_sectors > VBLK_MAX_DISCARD_SECTORS ||
		    !in_range(b, segs[i].sector, (uint64_t)segs[i].num_sectors * SECTOR))
			return VIRTIO_BLK_S_IOERR;
	}
	for (unsigned i = 0; i < nseg; i++) {
		struct be_io io = {
			.op = zeroes ? BE_OP_WRITE_ZEROES : BE_OP_DISCARD,
			.unmap = segs[i].flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
			.offset = segs[i].sector * SECTOR,
			.len = (uint64_t)segs[i].num_sectors * SECTOR,
		};
		if (io.len && do_io(b, &io) < 0)
			return VIRTIO_BLK_S_IOERR;
	}
	if (zeroes)
		STAT_ADD(vq->stats.write_zeroes, 1);
	else
		STAT_ADD(vq->stats.discards, 1);
	return VIRTIO_BLK_S_OK;
}

/* A chain that broke a rule about buffers (unmapped address, too many
 * segments, readable after writable): report IOERR in the last byte of the
 * last writable descriptor if that byte is addressable. */
static void fail_faulted(struct vblk *b, struct vq *vq, struct vq_chain *c)
{
	uint32_t written = 0;

	if (c->last_w_len) {
		uint8_t *st = mem_gpa_to_host(vq->mem, c->last_w_addr + c->last_w_len - 1, 1);
		if (st) {
			*st = VIRTIO_BLK_S_IOERR;
			written = 1;
		}
	}
	vlog_rl(LOG_WARNING, "[%s q%u] request at head %u has unusable buffers",
		b->name, vq->index, c->head);
	STAT_ADD(vq->stats.errors, 1);
	vq_push_used(vq, c->head, written);
}

void vblk_handle(struct vblk *b, struct vq *vq, struct vq_chain *c)
{
	struct vblk_req_hdr hdr;
	struct iovec *din, *dout;
	unsigned nin, nout;
	uint8_t *status, st = VIRTIO_BLK_S_OK;
	uint32_t written = 1;
	uint64_t len;
	struct iovec *last;

	if (c->fault || c->nin == 0) {
		fail_faulted(b, vq, c);
		return;
	}
	last = &c->iov[c->nout + c->nin - 1];
	status = (uint8_t *)last->iov_base + last->iov_len - 1;
	if (c->out_len < sizeof(hdr)) {
		st = VIRTIO_BLK_S_IOERR;
		goto done;
	}
	iov_to_buf(c->iov, c->nout, 0, &hdr, sizeof(hdr));

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
			.offset = hdr.sector * SECTOR,
			.iov = out ? dout : din,
			.iovcnt = out ? nout : nin,
		};
		len = out ? c->out_len - sizeof(hdr) : c->in_len - 1;
		io.len = len;
		if (out && b->params.readonly) {
			st = VIRTIO_BLK_S_IOERR;
			break;
		}
		if (len % SECTOR || !in_range(b, hdr.sector, len)) {
			st = VIRTIO_BLK_S_IOERR;
			break;
		}
		if (len && do_io(b, &io) < 0) {
			st = VIRTIO_BLK_S_IOERR;
			break;
		}
		if (out) {
			STAT_ADD(vq->stats.writes, 1);
			STAT_ADD(vq->stats.bytes_written, len);
		} else {
			written += len;
			STAT_ADD(vq->stats.reads, 1);
			STAT_ADD(vq->stats.bytes_read, len);
		}
		break;
	}
	case VIRTIO_BLK_T_FLUSH: {
		struct be_io io = { .op = BE_OP_FLUSH };
		if (b->be->ops->submit(b->be, &io) < 0)
			st = VIRTIO_BLK_S_IOERR;
		STAT_ADD(vq->stats.flushes, 1);
		break;
	}
	case VIRTIO_BLK_T_GET_ID: {
		char id[VIRTIO_BLK_ID_BYTES] = { 0 };
		size_t n = c->in_len - 1;
		memcpy(id, b->params.serial, strnlen(b->params.serial, sizeof(id)));
		if (n > sizeof(id))
			n = sizeof(id);
		written += iov_from_buf(din, nin, 0, id, n);
		STAT_ADD(vq->stats.get_ids, 1);
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		st = do_discard(b, vq, dout, nout, c->out_len - sizeof(hdr),
				hdr.type == VIRTIO_BLK_T_WRITE_ZEROES);
		break;
	default:
		st = VIRTIO_BLK_S_UNSUPP;
		break;
	}
done:
	if (st != VIRTIO_BLK_S_OK)
		STAT_ADD(vq->stats.errors, 1);
	*status = st;
	vq_push_used(vq, c->head, written);
}

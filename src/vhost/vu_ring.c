/* vhost-user rings: starting a ring on an engine thread, stopping it (also
 * without holding the control thread: the detach is posted and finished
 * when the engine rings detach_fd), and the vring handlers.  Control
 * thread.  See vu_int.h. */
#include "vu_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "fault.h"
#include "log.h"

/* --- ring start/stop ------------------------------------------------------ */

bool vu_ring_can_run(const struct vu_conn *c, const struct vq *vq)
{
	return vq->started && vq->enabled && c->mem && vq->num;
}

int vu_ring_start(struct vu_conn *c, struct vq *vq)
{
	uint32_t base;
	int rc;

	if (vq->attached || !vu_ring_can_run(c, vq))
		return 0;
	vq->mem = c->mem;
	vq->event_idx = c->features & BIT(VIRTIO_RING_F_EVENT_IDX);
	vq->packed = c->features & BIT(VIRTIO_F_RING_PACKED);
	vq->log = vu_log_for_rings(c);
	rc = vblk_queue_prepare(c->blk, vq, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	vq->infl = NULL;
	vq->pinfl = NULL;
	if (c->inflight_map && vq->index < c->inflight_nq) {
		/* Each queue's part of the region has its ring kind's layout. */
		size_t stride = vq->packed ? vq_inflight_packed_size(vq->num) :
					     vq_inflight_size(vq->num);

		if (c->inflight_qs == vq->num && (vq->index + 1) * stride <= c->inflight_len) {
			struct fault_scope fs;
			uint8_t *part = (uint8_t *)c->inflight_map + vq->index * stride;
			unsigned n = 0;

			if (vq->packed)
				vq->pinfl = (struct vq_inflight_packed *)part;
			else
				vq->infl = (struct vq_inflight *)part;
			/* Both the region and the ring are the front-end's
			 * files: they may have been truncated under us. */
			if (FAULT_TRY(&fs))
				n = vq_inflight_recover(vq);
			else
				rc = -EFAULT;
			fault_end(&fs);
			if (rc < 0) {
				vq->infl = NULL;
				vq->pinfl = NULL;
				snprintf(c->err, sizeof(c->err),
					 "queue %u: inflight region or ring vanished (truncated by the front-end)",
					 vq->index);
				return rc;
			}
			if (n)
				vlog(LOG_INFO, "[%s q%u] resubmitting %u requests that were in flight",
				     vu_name(c), vq->index, n);
		} else {
			vlog(LOG_WARNING, "[%s q%u] inflight region (%zu bytes) is not for %s queues of "
			     "%u (it is for %u): not tracked", vu_name(c), vq->index, c->inflight_len,
			     vq->packed ? "packed" : "split", vq->num, c->inflight_qs);
		}
	}
	atomic_store(&vq->broken, false);
	base = vq_get_base(vq); /* once attached, the engine thread moves it */
	rc = eng_attach(c->eng, vq, c->thread_hint + vq->index);
	if (rc < 0) {
		snprintf(c->err, sizeof(c->err), "queue %u: engine refused it", vq->index);
		return rc;
	}
	if ((vq->infl || vq->pinfl) && !(c->infl_started & BIT(vq->index))) {
		/* The connection's first start with a region.  If the region
		 * outlived the back-end that wrote it (killed, or its
		 * connection dropped), that back-end's last completions may
		 * be in the used ring without the interrupt that announces
		 * them, and a guest waiting for it would wait for ever: call
		 * once.  An extra interrupt costs the guest one look at its
		 * ring. */
		c->infl_started |= BIT(vq->index);
		if (vq->infl_kept && vq->call_fd >= 0) {
			uint64_t one = 1;
			(void)!write(vq->call_fd, &one, sizeof(one));
		}
	}
	vlog(LOG_DEBUG, "[%s q%u] started: %s, size %u, base %#x%s%s", vu_name(c), vq->index,
	     vq->packed ? "packed" : "split", vq->num, base, vq->event_idx ? ", event_idx" : "",
	     vq->log ? ", dirty log" : "");
	return rc;
}

void vu_ring_stop(struct vu_conn *c, struct vq *vq)
{
	if (!vq->attached)
		return;
	eng_detach(c->eng, vq);
	vlog(LOG_DEBUG, "[%s q%u] stopped at %#x", vu_name(c), vq->index, vq_get_base(vq));
}

/* --- stopping rings without waiting ---------------------------------------- */

uint64_t vu_attached_mask(const struct vu_conn *c)
{
	uint64_t m = 0;

	if (!vu_owns_rings(c))
		return 0;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		if (c->blk->vqs[i].attached)
			m |= BIT(i);
	return m;
}

/* Post a detach for every ring of mask that runs; returns at once. */
void vu_detach_start(struct vu_conn *c, uint64_t mask)
{
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vq *vq = &c->blk->vqs[i];

		if (!(mask & BIT(i)) || !vq->attached)
			continue;
		if (eng_detach_start(c->eng, vq, c->detach_fd) < 0)
			eng_detach(c->eng, vq);         /* no memory: the old way */
	}
}

/* Whether every posted detach is over (completing those that are). */
bool vu_detaches_done(struct vu_conn *c)
{
	bool all = true;

	if (!vu_owns_rings(c))
		return true;    /* it never ran one */
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vq *vq = &c->blk->vqs[i];

		if (!vq->detach_cmd)
			continue;
		if (eng_detach_done(vq))
			vlog(LOG_DEBUG, "[%s q%u] stopped at %#x", vu_name(c), vq->index,
			     vq_get_base(vq));
		else
			all = false;
	}
	return all;
}

/* Run fn with every running ring stopped, then restart them. */
int vu_with_rings_stopped(struct vu_conn *c, int (*fn)(struct vu_conn *, void *),
			      void *arg)
{
	bool was[VDEV_MAX_QUEUES];
	int rc, rc2 = 0;

	if (!vu_owns_rings(c))
		return fn(c, arg);      /* the rings are another front-end's */
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		was[i] = c->blk->vqs[i].attached;
		vu_ring_stop(c, &c->blk->vqs[i]);
	}
	rc = fn(c, arg);
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
		if (was[i] && rc2 == 0)
			rc2 = vu_ring_start(c, &c->blk->vqs[i]);
	return rc ? rc : rc2;
}

static void vq_close_fds(struct vq *vq)
{
	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	if (vq->call_fd >= 0)
		close(vq->call_fd);
	if (vq->err_fd >= 0)
		close(vq->err_fd);
	vq->kick_fd = vq->call_fd = vq->err_fd = -1;
}

static void reset_queues(struct vu_conn *c)
{
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vq *vq = &c->blk->vqs[i];
		vu_ring_stop(c, vq);
		vq_close_fds(vq);
		vblk_queue_reset(c->blk, vq);
	}
}

void vu_reset_device(struct vu_conn *c)
{
	if (vu_owns_rings(c)) {
		reset_queues(c);
		c->blk->fe_owner = NULL;
	}
	c->features = 0;
	c->features_set = false;
}

/* Close what *slot holds (if anything) and keep fd (-1: nothing) there. */
static void put_fd(int *slot, int fd)
{
	if (*slot >= 0)
		close(*slot);
	*slot = fd;
}

/* A device serves one front-end's queues at a time.  A second front-end
 * may connect (the destination of a migration on this host) and do all
 * that does not touch the queues; its first queue request takes them over,
 * which is only allowed once the first front-end has stopped every ring
 * (QEMU stops the source's rings before the destination starts its own).
 * Taking over starts from unconfigured queues: nothing of the other
 * front-end's (fds, addresses, memory) survives.  0, or -EBUSY while the
 * other front-end still runs a ring. */
int vu_claim_rings(struct vu_conn *c)
{
	struct vu_conn *other = c->blk->fe_owner;

	if (other == c)
		return 0;
	if (other) {
		for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
			const struct vq *vq = &c->blk->vqs[i];
			if (vq->attached || vq->started || vq->detach_cmd) {
				snprintf(c->err, sizeof(c->err),
					 "queue %u still runs for the other front-end: a second front-end "
					 "takes the queues over only once the first stopped them", i);
				return -EBUSY;
			}
		}
		c->blk->fe_owner = other;
		reset_queues(other);
		vlog(LOG_INFO, "[%s] queues handed over to the new front-end", vu_name(c));
	}
	c->blk->fe_owner = c;
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vq *vq = &c->blk->vqs[i];

		if (c->held_call[i] >= 0)
			put_fd(&vq->call_fd, c->held_call[i]);
		if (c->held_err[i] >= 0)
			put_fd(&vq->err_fd, c->held_err[i]);
		c->held_call[i] = c->held_err[i] = -1;
	}
	/* Without PROTOCOL_FEATURES rings are enabled as soon as they start. */
	if (c->features_set && !(c->features & BIT(VU_F_PROTOCOL_FEATURES)))
		for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++)
			c->blk->vqs[i].enabled = true;
	return 0;
}


/* --- vring handlers ------------------------------------------------------- */

int h_set_vring_num(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];
	uint32_t num = m->payload.state.num;
	/* A packed ring may have any size (virtio 1.2 §2.8); a split one is
	 * checked again when it starts, in case the features change. */
	bool any = c->features & BIT(VIRTIO_F_RING_PACKED);

	if (num == 0 || num > VQ_MAX_SIZE || (!any && (num & (num - 1)))) {
		snprintf(c->err, sizeof(c->err),
			 "queue %u: size %u is not a power of two up to %d",
			 vq->index, num, VQ_MAX_SIZE);
		return -EINVAL;
	}
	if (vq->attached) {
		snprintf(c->err, sizeof(c->err), "queue %u: size changed while running", vq->index);
		return -EBUSY;
	}
	if (vq->num != num)
		vblk_queue_release(c->blk, vq); /* slots are sized by num */
	vq->num = num;
	return VU_OK;
}

/* VU_Q_RING: the ring is stopped meanwhile. */
int h_set_vring_addr(struct vu_conn *c, struct vu_msg *m)
{
	const struct vu_vring_addr *a = &m->payload.addr;
	struct vq *vq = &c->blk->vqs[a->index];

	vq->desc_uva = a->desc_user_addr;
	vq->used_uva = a->used_user_addr;
	vq->avail_uva = a->avail_user_addr;
	vq->log_used = a->flags & VU_VRING_F_LOG;
	vq->log_used_gpa = a->log_guest_addr;
	return VU_OK;
}

int h_set_vring_base(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];
	bool packed = c->features & BIT(VIRTIO_F_RING_PACKED);

	if (!packed && m->payload.state.num > 0xffff) {
		snprintf(c->err, sizeof(c->err), "queue %u: base %u out of range",
			 vq->index, m->payload.state.num);
		return -EINVAL;
	}
	if (vq->attached) {
		snprintf(c->err, sizeof(c->err), "queue %u: base changed while running", vq->index);
		return -EBUSY;
	}
	/* Packed: avail and used positions with their wrap counters, as QEMU
	 * sends them (a position beyond the ring is refused at start). */
	vq->packed = packed;
	vq_set_base(vq, m->payload.state.num);
	return VU_OK;
}

int h_get_vring_base(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];

	vu_ring_stop(c, vq);
	vq->started = false;
	if (vq->kick_fd >= 0)
		close(vq->kick_fd);
	vq->kick_fd = -1;
	vq->kick_nofd = false;
	m->payload.state.num = vq_get_base(vq);
	m->hdr.size = sizeof(m->payload.state);
	return VU_REPLY;
}

/* Take the fd of a SET_VRING_KICK/CALL/ERR message (or none with NOFD). */
static int take_vring_fd(struct vu_msg *m)
{
	int fd;
	if (m->payload.u64 & VU_VRING_NOFD_MASK)
		return -1;
	fd = m->fds[0];
	m->fds[0] = -1;
	return fd;
}

/* SET_VRING_CALL/ERR of a front-end that does not own the queues: kept
 * for when it takes them (vu_claim_rings). */
void vu_hold_vring_fd(struct vu_conn *c, struct vu_msg *m)
{
	unsigned i = m->payload.u64 & VU_VRING_IDX_MASK;
	int *slot = m->hdr.request == VU_SET_VRING_CALL ? &c->held_call[i] : &c->held_err[i];

	put_fd(slot, take_vring_fd(m));
}

void vu_drop_held_fds(struct vu_conn *c)
{
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		put_fd(&c->held_call[i], -1);
		put_fd(&c->held_err[i], -1);
	}
}

int h_set_vring_kick(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.u64 & VU_VRING_IDX_MASK];

	vu_ring_stop(c, vq);
	put_fd(&vq->kick_fd, take_vring_fd(m));
	vq->kick_nofd = vq->kick_fd < 0;
	vq->started = true;
	return vu_ring_start(c, vq);
}

static int replace_fd(struct vu_conn *c, struct vq *vq, int *slot, struct vu_msg *m)
{
	bool was = vq->attached;

	vu_ring_stop(c, vq);
	put_fd(slot, take_vring_fd(m));
	return was ? vu_ring_start(c, vq) : 0;
}

int h_set_vring_call(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.u64 & VU_VRING_IDX_MASK];
	return replace_fd(c, vq, &vq->call_fd, m);
}

int h_set_vring_err(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.u64 & VU_VRING_IDX_MASK];
	return replace_fd(c, vq, &vq->err_fd, m);
}

int h_set_vring_enable(struct vu_conn *c, struct vu_msg *m)
{
	struct vq *vq = &c->blk->vqs[m->payload.state.index];

	if (m->payload.state.num > 1) {
		snprintf(c->err, sizeof(c->err), "queue %u: enable value %u", vq->index,
			 m->payload.state.num);
		return -EINVAL;
	}
	vq->enabled = m->payload.state.num;
	if (!vq->enabled) {
		vu_ring_stop(c, vq);
		return VU_OK;
	}
	return vu_ring_start(c, vq);
}


/* Split virtqueue, device side: descriptor walking, used ring, notification
 * suppression; and the ring layer's entry points, which hand a packed ring
 * to vq_packed.c (one branch per call: per batch for the ring's indices,
 * per request for the walk and the used element).  Runs on the engine thread that owns the vq (vq_map_rings on
 * the control thread while the vq is stopped).
 * Trust: the guest may rewrite any ring field at any moment; each value is
 * read once, then checked, then used.  A bad index, loop or indirect table
 * breaks the ring (the connection is dropped); a bad buffer address fails
 * just that request. */
#include "vq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "vq_int.h"

void vq_init(struct vq *vq, unsigned index, void *dev, const char *devname,
	     void (*on_broken)(struct vq *vq, const char *why))
{
	memset(vq, 0, sizeof(*vq));
	vq->index = index;
	vq->dev = dev;
	vq->devname = devname;
	vq->on_broken = on_broken;
	vq->kick_fd = vq->call_fd = vq->err_fd = -1;
	vq->avail_wrap = vq->used_wrap = true;  /* a packed ring's counters start at 1 */
}

void vq_reset(struct vq *vq)
{
	vq_release(vq);
	vq_init(vq, vq->index, vq->dev, vq->devname, vq->on_broken);
}

int vq_prepare(struct vq *vq, char *err, size_t errlen)
{
	if (!vq->mem || vq->num == 0) {
		snprintf(err, errlen, "queue %u started without %s", vq->index,
			 vq->mem ? "a size" : "a memory table");
		return -EINVAL;
	}
	if (vq->packed)
		return vq_packed_prepare(vq, err, errlen);
	if (vq->num & (vq->num - 1)) {
		snprintf(err, errlen, "queue %u: a split ring of %u entries (not a power of two)",
			 vq->index, vq->num);
		return -EINVAL;
	}
	vq->desc = mem_uva_to_host(vq->mem, vq->desc_uva, vring_desc_size(vq->num));
	vq->avail = mem_uva_to_host(vq->mem, vq->avail_uva, vring_avail_size(vq->num));
	vq->used = mem_uva_to_host(vq->mem, vq->used_uva, vring_used_size(vq->num));
	if (!vq->desc || !vq->avail || !vq->used) {
		snprintf(err, errlen, "queue %u: ring addresses are outside guest memory",
			 vq->index);
		return -EFAULT;
	}
	/* Natural alignment keeps the 16/32-bit ring fields untorn. */
	if (((uintptr_t)vq->desc & 15) || ((uintptr_t)vq->avail & 1) ||
	    ((uintptr_t)vq->used & 3)) {
		snprintf(err, errlen, "queue %u: ring addresses are misaligned", vq->index);
		return -EINVAL;
	}
	return 0;
}

void vq_release(struct vq *vq)
{
	free(vq->resubmit);
	vq->resubmit = NULL;
	vq->nresubmit = vq->resubmitted = 0;
	vq_packed_release(vq);
}

static int cmp_counter(const void *a, const void *b, void *arg)
{
	const struct vq_inflight *infl = arg;
	uint64_t x = infl->desc[*(const uint16_t *)a].counter;
	uint64_t y = infl->desc[*(const uint16_t *)b].counter;
	return x < y ? -1 : x > y;
}

unsigned vq_inflight_recover(struct vq *vq)
{
	struct vq_inflight *infl = vq->infl;
	uint16_t used;
	uint64_t max = 0;
	unsigned n = 0;

	if (vq->packed)
		return vq->pinfl ? vq_packed_recover(vq) : 0;
	used = READ_ONCE(vq->used->idx);

	/* The region is shared with the front-end: every value in it is
	 * checked like ring contents. */
	vq->infl_kept = false;
	if (READ_ONCE(infl->version) != 1 || READ_ONCE(infl->desc_num) != vq->num) {
		memset(infl, 0, vq_inflight_size(vq->num));
		infl->version = 1;
		infl->desc_num = vq->num;
		infl->used_idx = used;
		vq->infl_counter = 1;
		return 0;
	}
	/* Written by a back-end before (ours: GET_INFLIGHT_FD hands out
	 * regions with only version and desc_num set)? */
	vq->infl_kept = READ_ONCE(infl->used_idx) != 0;
	if (READ_ONCE(infl->used_idx) != used) {
		/* Crashed after publishing used->idx but before retiring the
		 * batch: those requests are complete, not in flight. */
		uint16_t cnt = used - READ_ONCE(infl->used_idx);
		uint16_t head = READ_ONCE(infl->last_batch_head);
		for (unsigned i = 0; i < cnt && i < vq->num && head < vq->num; i++) {
			WRITE_ONCE(infl->desc[head].inflight, 0);
			head = READ_ONCE(infl->desc[head].next);
		}
		infl->used_idx = used;
	}
	if (!vq->resubmit)
		vq->resubmit = calloc(vq->num, sizeof(*vq->resubmit));
	if (!vq->resubmit)
		return 0;
	for (unsigned h = 0; h < vq->num; h++) {
		if (READ_ONCE(infl->desc[h].counter))
			vq->infl_kept = true;
		if (READ_ONCE(infl->desc[h].inflight) != 1)
			continue;
		vq->resubmit[n++] = h;
		if (infl->desc[h].counter > max)
			max = infl->desc[h].counter;
	}
	qsort_r(vq->resubmit, n, sizeof(*vq->resubmit), cmp_counter, infl);
	vq->nresubmit = n;
	vq->resubmitted = 0;
	vq->infl_counter = max + 1;
	/* Every request fetched was either completed (counted in used->idx)
	 * or is in flight: that gives where the avail ring was. */
	vq->last_avail = used + n;
	return n;
}

void vq_engine_start(struct vq *vq)
{
	if (vq->packed) {
		vq_packed_engine_start(vq);
		return;
	}
	vq->used_idx = READ_ONCE(vq->used->idx);
	vq->signalled_used = vq->used_idx;
}

void vq_mark_broken(struct vq *vq, const char *why)
{
	if (atomic_exchange(&vq->broken, true))
		return;
	vlog(LOG_ERR, "[%s q%u] broken ring: %s; dropping the connection",
	     vq->devname, vq->index, why);
	if (vq->err_fd >= 0) {
		uint64_t one = 1;
		(void)!write(vq->err_fd, &one, sizeof(one));
	}
	if (vq->on_broken)
		vq->on_broken(vq, why);
}

void vq_chain_add(struct vq *vq, struct vq_chain *c, uint64_t addr, uint32_t len, bool w)
{
	unsigned used = c->nout + c->nin;
	int n;

	if (w) {
		c->last_w_addr = addr;
		c->last_w_len = len;
	} else if (c->nin) {
		/* readable after writable: not a layout the spec allows */
		c->fault = true;
		return;
	}
	if (c->fault)
		return;
	/* The common case inline: the buffer lies in one region.  (An empty
	 * buffer adds no iovec.) */
	{
		void *p = len ? mem_gpa_to_host(vq->mem, addr, len) : NULL;
		if (p && used < VQ_MAX_IOV) {
			c->iov[used].iov_base = p;
			c->iov[used].iov_len = len;
			n = 1;
			goto added;
		}
	}
	n = mem_gpa_to_iov(vq->mem, addr, len, &c->iov[used], VQ_MAX_IOV - used);
	if (n < 0) {
		c->fault = true;
		return;
	}
added:
	if (w) {
		c->nin += n;
		c->in_len += len;
	} else {
		c->nout += n;
		c->out_len += len;
	}
}

int vq_walk(struct vq *vq, uint16_t head, struct vq_chain *c)
{
	const struct vring_desc *table = vq->desc;
	unsigned limit = vq->num, count = 0;
	uint16_t idx = head;
	bool indirect = false;

	if (vq->packed)
		return vq_packed_walk(vq, head, c);
	vq_chain_reset(c, head);
	if (head >= vq->num)
		return -EBADMSG;
	for (;;) {
		struct vring_desc d;

		if (idx >= limit || ++count > limit)
			return -EBADMSG;        /* out of the table, or a loop */
		d.addr = READ_ONCE(table[idx].addr);
		d.len = READ_ONCE(table[idx].len);
		d.flags = READ_ONCE(table[idx].flags);
		d.next = READ_ONCE(table[idx].next);

		if (d.flags & VRING_DESC_F_INDIRECT) {
			/* One level only, a whole number of descriptors, the
			 * table in one region, and nothing chained after it. */
			if (indirect || (d.flags & VRING_DESC_F_NEXT) ||
			    d.len == 0 || d.len % sizeof(struct vring_desc) ||
			    d.len / sizeof(struct vring_desc) > VQ_MAX_SIZE)
				return -EBADMSG;
			table = mem_gpa_to_host(vq->mem, d.addr, d.len);
			if (!table)
				return -EBADMSG;
			if ((uintptr_t)table & 7)
				return -EBADMSG;
			indirect = true;
			limit = d.len / sizeof(struct vring_desc);
			count = 0;
			idx = 0;
			continue;
		}
		vq_chain_add(vq, c, d.addr, d.len, d.flags & VRING_DESC_F_WRITE);
		if (!(d.flags & VRING_DESC_F_NEXT))
			return 0;
		idx = d.next;
	}
}

void vq_push_used(struct vq *vq, uint16_t head, uint32_t len)
{
	struct vring_used_elem *e;

	if (vq->packed) {
		vq_packed_push_used(vq, head, len);
		return;
	}
	e = &vq->used->ring[vq->used_idx & (vq->num - 1)];
	WRITE_ONCE(e->id, head);
	WRITE_ONCE(e->len, len);
	vq->used_idx++;
	if (vq->infl) {
		/* Newest first: the batch is the first (used_idx - the
		 * region's used_idx) entries of this list. */
		WRITE_ONCE(vq->infl->desc[head].next, vq->infl->last_batch_head);
		WRITE_ONCE(vq->infl->last_batch_head, head);
	}
}

/* After used->idx went out: the batch is no longer in flight. */
static void inflight_retire(struct vq *vq, uint16_t old, uint16_t new_idx)
{
	struct vq_inflight *infl = vq->infl;
	uint16_t head = infl->last_batch_head;

	ring_wmb();     /* used->idx before clearing the inflight marks */
	for (uint16_t i = 0; i != (uint16_t)(new_idx - old) && head < vq->num; i++) {
		WRITE_ONCE(infl->desc[head].inflight, 0);
		head = infl->desc[head].next;
	}
	ring_wmb();     /* marks cleared before the batch is declared retired */
	WRITE_ONCE(infl->used_idx, new_idx);
}

/* The used ring is written by the device: with VHOST_VRING_F_LOG its pages
 * go in the dirty log after each write (elements, index, avail_event), and
 * the elements' before the index that makes them visible. */
static void log_used(struct vq *vq)
{
	if (vq->log && vq->log_used)
		vq_log_mark(vq->log, vq->log_used_gpa, vring_used_size(vq->num));
}

void vq_log_chain(struct vq *vq, const struct vq_chain *c, const void *status)
{
	uint64_t gpa;

	if (!vq->log)
		return;
	ring_wmb();     /* the writes before the bits that record them */
	for (unsigned i = c->nout; i < c->nout + c->nin; i++)
		if (c->iov[i].iov_len && mem_host_to_gpa(vq->mem, c->iov[i].iov_base, &gpa))
			vq_log_mark(vq->log, gpa, c->iov[i].iov_len);
	if (status && mem_host_to_gpa(vq->mem, status, &gpa))
		vq_log_mark(vq->log, gpa, 1);
}

void vq_flush_used(struct vq *vq)
{
	uint16_t old = vq->signalled_used, new_idx = vq->used_idx;
	bool notify;

	if (vq->packed) {
		vq_packed_flush_used(vq);
		return;
	}
	if (old == new_idx || vq->dead)
		return;
	vq->signalled_used = new_idx;
	ring_wmb();     /* used elements and guest data before the index */
	if (vq->log) {
		/* The elements are marked before the index shows them, the
		 * index once it is written (again below). */
		log_used(vq);
		ring_wmb();
	}
	ring_guest_release(vq->dev);
	WRITE_ONCE(vq->used->idx, new_idx);
	if (vq->infl)
		inflight_retire(vq, old, new_idx);
	ring_mb();      /* publish the index before reading used_event/flags */
	log_used(vq);

	if (vq->event_idx) {
		uint16_t event = READ_ONCE(vq->avail->ring[vq->num]);
		notify = vring_need_event(event, new_idx, old);
	} else {
		notify = !(READ_ONCE(vq->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
	}
	if (notify && vq->call_fd >= 0) {
		uint64_t one = 1;
		(void)!write(vq->call_fd, &one, sizeof(one));
	}
}

bool vq_set_notify(struct vq *vq, bool on)
{
	if (vq->packed)
		return vq_packed_set_notify(vq, on);
	if (vq->dead)
		return false;
	if (on == vq->notify_on && !on)
		return false;
	vq->notify_on = on;
	if (vq->event_idx) {
		/* The driver kicks when avail->idx passes avail_event.  While
		 * polling we leave it behind, so at most one kick arrives per
		 * 64K requests. */
		if (on)
			WRITE_ONCE(*(uint16_t *)&vq->used->ring[vq->num], vq->last_avail);
	} else {
		uint16_t f = READ_ONCE(vq->used->flags);
		f = on ? (f & ~VRING_USED_F_NO_NOTIFY) : (f | VRING_USED_F_NO_NOTIFY);
		WRITE_ONCE(vq->used->flags, f);
	}
	if (vq->log) {
		ring_wmb();
		log_used(vq);
	}
	if (!on)
		return false;
	ring_mb();      /* the request for kicks before re-reading avail->idx */
	return READ_ONCE(vq->avail->idx) != vq->last_avail;
}

unsigned vq_resubmit_heads(struct vq *vq, uint16_t *heads, unsigned max)
{
	unsigned n = 0;

	while (vq->resubmitted + n < vq->nresubmit && n < max) {
		heads[n] = vq->resubmit[vq->resubmitted + n];
		n++;
	}
	return n;
}

int vq_avail_heads(struct vq *vq, uint16_t *heads, unsigned max, char *why, size_t whylen)
{
	uint16_t avail_idx, pending;

	if (vq->packed)
		return vq_packed_avail_heads(vq, heads, max, why, whylen);
	avail_idx = READ_ONCE(vq->avail->idx);
	pending = avail_idx - vq->last_avail;
	if (pending == 0)
		return 0;
	if (pending > vq->num) {
		char msg[96];
		snprintf(msg, sizeof(msg), "avail index %u is %u ahead of %u (queue size %u)",
			 avail_idx, pending, vq->last_avail, vq->num);
		vq_mark_broken(vq, msg);
		return -1;
	}
	ring_rmb();     /* ring entries after the index that published them */
	ring_guest_acquire(vq->dev);
	if (pending > max)
		pending = max;
	for (unsigned i = 0; i < pending; i++) {
		uint16_t head = READ_ONCE(vq->avail->ring[(uint16_t)(vq->last_avail + i) &
							  (vq->num - 1)]);
		if (head >= vq->num) {
			snprintf(why, whylen, "head index %u out of range", head);
			return i;
		}
		heads[i] = head;
		__builtin_prefetch(&vq->desc[head]);
	}
	return pending;
}

uint32_t vq_get_base(const struct vq *vq)
{
	if (!vq->packed)
		return vq->last_avail;
	return (uint32_t)vq->last_avail | (uint32_t)vq->avail_wrap << 15 |
	       (uint32_t)vq->used_idx << 16 | (uint32_t)vq->used_wrap << 31;
}

int vq_set_base(struct vq *vq, uint32_t base)
{
	if (!vq->packed) {
		if (base > 0xffff)
			return -EINVAL;
		vq->last_avail = (uint16_t)base;
		return 0;
	}
	vq->last_avail = base & 0x7fff;
	vq->avail_wrap = base >> 15 & 1;
	if (base >> 16 == 0) {
		/* Only the avail half: a stopped ring has nothing in flight,
		 * so the used position is the same. */
		vq->used_idx = vq->last_avail;
		vq->used_wrap = vq->avail_wrap;
	} else {
		vq->used_idx = base >> 16 & 0x7fff;
		vq->used_wrap = base >> 31;
	}
	return 0;
}

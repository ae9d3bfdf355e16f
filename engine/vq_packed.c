/* Packed virtqueue, device side (virtio 1.2 §2.8): the ring layer's API of
 * vq.h for a ring negotiated with VIRTIO_F_RING_PACKED.  Runs on the engine
 * thread that owns the vq (vq_packed_prepare and vq_packed_recover on the
 * control thread while the vq is stopped).
 * Trust: the descriptor ring, both event areas and the inflight region are
 * shared with the guest or the front-end; every value is read once, then
 * checked, then used.  A descriptor that breaks the ring's structure (bad
 * buffer id, an id already in flight, a chain longer than the free part of
 * the ring, a descriptor of a chain not made available, a bad indirect
 * table) breaks the ring; a bad buffer address fails just that request.
 *
 * Positions.  last_avail/avail_wrap is the next descriptor to read, and
 * used_idx/used_wrap the next slot to write a used descriptor in; a chain of
 * n descriptors moves each by n.  Between the used position the driver has
 * seen (signalled_used) and last_avail lie at most num descriptors: that
 * bounds a chain's length and what a driver can have in flight.
 *
 * Used descriptors are kept aside as requests complete (vq_push_used) and
 * written as a batch in vq_flush_used: every one but the first, then the
 * first's id and len, then its flags, so the driver (which reads from the
 * first on) sees the batch whole.
 *
 * Inflight region (vhost-user "Inflight I/O tracking", the spec's
 * QueueRegionPacked layout, used in a simpler way than the spec's free
 * list; only vhostd reads it):
 *  - the entries are a pool; which are free is kept here (pk->pool, rebuilt
 *    on recovery from what is in flight), not in free_head/old_free_head;
 *  - taking a chain copies its ring descriptors into free entries linked by
 *    next (head: num, last, counter), then sets the head's inflight to 1;
 *  - before a batch of used descriptors is published, the heads of the
 *    batch get inflight 2 and used_idx/used_wrap_counter the position after
 *    it; once it is published the heads get 0 and old_used_idx/
 *    old_used_wrap_counter catch up (the batch is retired);
 *  - recovery: a batch not retired was published if the slot at
 *    old_used_idx shows a used descriptor of old_used_wrap_counter (its
 *    flags are written last); then its heads are done, otherwise they are
 *    in flight again and the slots it may have written are made to look
 *    unused (a partly published batch must not show the driver a stale used
 *    descriptor).  The heads in flight are resubmitted in counter order,
 *    walking their copies; the next descriptor to read follows from the
 *    used position and the number of descriptors in flight. */
#include "vq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "vq_int.h"

#define NO_ENTRY 0xffffu

/* What the device knows of one buffer id (a request slot). */
struct pk_buf {
	uint16_t pos;           /* ring position of the chain's first descriptor */
	uint16_t ndesc;         /* ring descriptors of the chain */
	uint16_t entry;         /* inflight region: its head entry, or NO_ENTRY */
	bool busy;              /* taken and not used yet */
	bool from_infl;         /* resubmitted: walk the inflight copies */
	uint32_t seen;          /* the listing pass that last listed it */
};

/* A used descriptor not written yet (vq_flush_used writes the batch). */
struct pk_pend {
	uint32_t len;
	uint16_t pos;
	uint16_t id;
	uint16_t flags;
	uint16_t entry;         /* its head entry in the inflight region */
	uint16_t ndesc;
};

struct vq_packed {
	unsigned num;
	uint32_t pass;          /* vq_avail_heads calls (never 0) */
	unsigned npend;
	unsigned nfree;         /* free inflight entries in pool[0..nfree) */
	struct pk_buf *buf;     /* [num] */
	struct pk_pend *pend;   /* [num] */
	uint16_t *pool;         /* [num] */
	uint16_t *enext;        /* [num]: next entry of a chain (our copy of it) */
};

static inline void advance(const struct vq *vq, uint16_t *pos, bool *wrap, unsigned n)
{
	unsigned p = *pos + n;

	if (p >= vq->num) {
		p -= vq->num;
		*wrap = !*wrap;
	}
	*pos = (uint16_t)p;
}

/* Descriptors from position (a, aw) forward to (b, bw). */
static inline unsigned distance(const struct vq *vq, uint16_t a, bool aw, uint16_t b, bool bw)
{
	return (unsigned)b + (aw != bw ? vq->num : 0) - a;
}

static void pk_reset(struct vq *vq)
{
	struct vq_packed *pk = vq->pk;

	memset(pk->buf, 0, sizeof(*pk->buf) * pk->num);
	for (unsigned i = 0; i < pk->num; i++) {
		pk->buf[i].entry = NO_ENTRY;
		pk->pool[i] = (uint16_t)(pk->num - 1 - i);
		pk->enext[i] = NO_ENTRY;
	}
	pk->nfree = pk->num;
	pk->npend = 0;
	pk->pass = 0;
}

int vq_packed_prepare(struct vq *vq, char *err, size_t errlen)
{
	if (!vq->pk) {
		unsigned n = vq->num;
		struct vq_packed *pk = calloc(1, sizeof(*pk) + n * (sizeof(struct pk_buf) +
					      sizeof(struct pk_pend) + 2 * sizeof(uint16_t)));
		if (!pk) {
			snprintf(err, errlen, "queue %u: out of memory", vq->index);
			return -ENOMEM;
		}
		pk->num = n;
		pk->buf = (struct pk_buf *)(pk + 1);
		pk->pend = (struct pk_pend *)(pk->buf + n);
		pk->pool = (uint16_t *)(pk->pend + n);
		pk->enext = pk->pool + n;
		vq->pk = pk;
	}
	if (vq->last_avail >= vq->num || vq->used_idx >= vq->num ||
	    distance(vq, vq->used_idx, vq->used_wrap, vq->last_avail, vq->avail_wrap) > vq->num) {
		snprintf(err, errlen, "queue %u: ring base avail %u/%d used %u/%d impossible for size %u",
			 vq->index, vq->last_avail, vq->avail_wrap, vq->used_idx, vq->used_wrap,
			 vq->num);
		return -EINVAL;
	}
	vq->pdesc = mem_uva_to_host(vq->mem, vq->desc_uva, vring_packed_desc_size(vq->num));
	vq->drv_event = mem_uva_to_host(vq->mem, vq->avail_uva, sizeof(*vq->drv_event));
	vq->dev_event = mem_uva_to_host(vq->mem, vq->used_uva, sizeof(*vq->dev_event));
	if (!vq->pdesc || !vq->drv_event || !vq->dev_event) {
		snprintf(err, errlen, "queue %u: ring addresses are outside guest memory", vq->index);
		return -EFAULT;
	}
	if (((uintptr_t)vq->pdesc & 15) || ((uintptr_t)vq->drv_event & 3) ||
	    ((uintptr_t)vq->dev_event & 3)) {
		snprintf(err, errlen, "queue %u: ring addresses are misaligned", vq->index);
		return -EINVAL;
	}
	/* The dirty log is by guest address: the device writes the
	 * descriptor ring and its event area. */
	if (!mem_host_to_gpa(vq->mem, vq->pdesc, &vq->pdesc_gpa) ||
	    !mem_host_to_gpa(vq->mem, vq->dev_event, &vq->dev_event_gpa)) {
		snprintf(err, errlen, "queue %u: ring addresses are outside guest memory", vq->index);
		return -EFAULT;
	}
	pk_reset(vq);
	return 0;
}

void vq_packed_release(struct vq *vq)
{
	free(vq->pk);
	vq->pk = NULL;
}

void vq_packed_engine_start(struct vq *vq)
{
	vq->signalled_used = vq->used_idx;
	vq->signalled_wrap = vq->used_wrap;
}

/* ---- available chains ------------------------------------------------------ */

int vq_packed_avail_heads(struct vq *vq, uint16_t *heads, unsigned max, char *why, size_t whylen)
{
	struct vq_packed *pk = vq->pk;
	const struct vring_packed_desc *ring = vq->pdesc;
	uint16_t pos = vq->last_avail;
	bool wrap = vq->avail_wrap;
	/* what the driver cannot have reused: from the used position it saw */
	unsigned held = distance(vq, vq->signalled_used, vq->signalled_wrap, pos, wrap);
	unsigned n = 0;

	if (++pk->pass == 0) {
		for (unsigned i = 0; i < pk->num; i++)
			pk->buf[i].seen = 0;
		pk->pass = 1;
	}
	while (n < max) {
		uint16_t flags = READ_ONCE(ring[pos].flags), p = pos, id;
		bool w = wrap;
		unsigned k = 1;
		struct pk_buf *b;

		if (!vring_packed_avail(flags, wrap))
			break;
		ring_rmb();     /* the chain after the flags that published it */
		if (n == 0)
			ring_guest_acquire(vq->dev);
		/* Find the end of the chain: its last descriptor has the id. */
		while (flags & VRING_DESC_F_NEXT) {
			if (held + k >= vq->num) {
				snprintf(why, whylen, "chain at %u is longer than the %u free descriptors",
					 pos, vq->num - held);
				return n;
			}
			advance(vq, &p, &w, 1);
			flags = READ_ONCE(ring[p].flags);
			if (!vring_packed_avail(flags, w)) {
				snprintf(why, whylen, "descriptor %u of the chain at %u is not available "
					 "(flags 0x%x, wrap %d)", p, pos, flags, w);
				return n;
			}
			k++;
		}
		if (held + k > vq->num) {
			snprintf(why, whylen, "descriptor at %u made available with %u in flight "
				 "(queue size %u)", pos, held, vq->num);
			return n;
		}
		id = READ_ONCE(ring[p].id);
		if (id >= vq->num) {
			snprintf(why, whylen, "buffer id %u out of range", id);
			return n;
		}
		b = &pk->buf[id];
		if (b->busy || b->seen == pk->pass) {
			snprintf(why, whylen, "buffer id %u made available while in flight", id);
			return n;
		}
		b->seen = pk->pass;
		b->pos = pos;
		b->ndesc = (uint16_t)k;
		b->from_infl = false;
		heads[n++] = id;
		held += k;
		advance(vq, &p, &w, 1);
		pos = p;
		wrap = w;
	}
	return n;
}

/* Copy the chain of b (buffer id) into free inflight entries and mark it in
 * flight there. */
static void infl_record(struct vq *vq, struct pk_buf *b, uint16_t id)
{
	struct vq_packed *pk = vq->pk;
	struct vq_inflight_packed *infl = vq->pinfl;
	uint16_t pos = b->pos, head = NO_ENTRY, prev = NO_ENTRY;
	bool w = false;

	if (pk->nfree < b->ndesc) {
		/* Cannot happen while the ring's bound holds; do not track. */
		vlog_rl(LOG_ERR, "[%s q%u] no inflight entry left for buffer %u", vq->devname,
			vq->index, id);
		b->entry = NO_ENTRY;
		return;
	}
	for (unsigned i = 0; i < b->ndesc; i++) {
		const struct vring_packed_desc *d = &vq->pdesc[pos];
		uint16_t e = pk->pool[--pk->nfree];
		struct vq_inflight_packed_desc *s = &infl->desc[e];

		WRITE_ONCE(s->addr, READ_ONCE(d->addr));
		WRITE_ONCE(s->len, READ_ONCE(d->len));
		WRITE_ONCE(s->flags, READ_ONCE(d->flags));
		WRITE_ONCE(s->id, id);
		WRITE_ONCE(s->next, NO_ENTRY);
		pk->enext[e] = NO_ENTRY;
		if (prev == NO_ENTRY) {
			head = e;
		} else {
			WRITE_ONCE(infl->desc[prev].next, e);
			pk->enext[prev] = e;
		}
		prev = e;
		advance(vq, &pos, &w, 1);
	}
	WRITE_ONCE(infl->desc[head].num, b->ndesc);
	WRITE_ONCE(infl->desc[head].last, prev);
	WRITE_ONCE(infl->desc[head].counter, vq->infl_counter++);
	ring_wmb();     /* the copies and the order stamp before the mark */
	WRITE_ONCE(infl->desc[head].inflight, 1);
	b->entry = head;
}

void vq_packed_take(struct vq *vq, uint16_t id)
{
	struct pk_buf *b = &vq->pk->buf[id];

	b->busy = true;
	if (vq->pinfl)
		infl_record(vq, b, id);
	advance(vq, &vq->last_avail, &vq->avail_wrap, b->ndesc);
}

/* ---- walking a chain --------------------------------------------------------- */

/* One descriptor of a chain (alone: the chain has no other). */
static int walk_one(struct vq *vq, struct vq_chain *c, uint64_t addr, uint32_t len,
		    uint16_t flags, bool alone)
{
	const struct vring_packed_desc *t;
	unsigned n;

	if (!(flags & VRING_DESC_F_INDIRECT)) {
		vq_chain_add(vq, c, addr, len, flags & VRING_DESC_F_WRITE);
		return 0;
	}
	/* An indirect table is a chain of its own: not with others, a
	 * whole number of descriptors, in one region, none indirect. */
	if (!alone || len == 0 || len % sizeof(*t) || len / sizeof(*t) > VQ_MAX_SIZE)
		return -EBADMSG;
	t = mem_gpa_to_host(vq->mem, addr, len);
	if (!t || ((uintptr_t)t & 7))
		return -EBADMSG;
	n = len / sizeof(*t);
	for (unsigned i = 0; i < n; i++) {
		uint64_t a = READ_ONCE(t[i].addr);
		uint32_t l = READ_ONCE(t[i].len);
		uint16_t f = READ_ONCE(t[i].flags);

		if (f & VRING_DESC_F_INDIRECT)
			return -EBADMSG;
		/* NEXT is not used in a table: its entries are consecutive. */
		vq_chain_add(vq, c, a, l, f & VRING_DESC_F_WRITE);
	}
	return 0;
}

/* A resubmitted chain, from its copies in the inflight region. */
static int walk_copies(struct vq *vq, struct pk_buf *b, struct vq_chain *c)
{
	const struct vq_inflight_packed_desc *d = vq->pinfl->desc;
	uint16_t e = b->entry;

	for (unsigned i = 0; i < b->ndesc; i++) {
		uint16_t flags;
		int rc;

		if (e >= vq->num)
			return -EBADMSG;
		flags = READ_ONCE(d[e].flags);
		if (!!(flags & VRING_DESC_F_NEXT) != (i + 1 < b->ndesc))
			return -EBADMSG;
		rc = walk_one(vq, c, READ_ONCE(d[e].addr), READ_ONCE(d[e].len), flags,
			      b->ndesc == 1);
		if (rc < 0)
			return rc;
		e = vq->pk->enext[e];
	}
	return 0;
}

int vq_packed_walk(struct vq *vq, uint16_t id, struct vq_chain *c)
{
	struct pk_buf *b;
	uint16_t pos;
	bool w = false;

	vq_chain_reset(c, id);
	if (id >= vq->num)
		return -EBADMSG;
	b = &vq->pk->buf[id];
	if (b->ndesc == 0)
		return -EBADMSG;        /* never listed */
	if (b->from_infl)
		return vq->pinfl ? walk_copies(vq, b, c) : -EBADMSG;
	pos = b->pos;
	for (unsigned i = 0; i < b->ndesc; i++) {
		const struct vring_packed_desc *d = &vq->pdesc[pos];
		uint16_t flags = READ_ONCE(d->flags);
		int rc;

		/* The chain was measured when it was listed; a driver that
		 * rewrote it since broke the rules. */
		if (!!(flags & VRING_DESC_F_NEXT) != (i + 1 < b->ndesc))
			return -EBADMSG;
		rc = walk_one(vq, c, READ_ONCE(d->addr), READ_ONCE(d->len), flags, b->ndesc == 1);
		if (rc < 0)
			return rc;
		advance(vq, &pos, &w, 1);
	}
	return 0;
}

/* ---- used descriptors ------------------------------------------------------------ */

void vq_packed_push_used(struct vq *vq, uint16_t id, uint32_t len)
{
	struct vq_packed *pk = vq->pk;
	struct pk_buf *b = &pk->buf[id];
	struct pk_pend *p;

	if (!b->busy || pk->npend >= pk->num)
		return;         /* not ours to complete (cannot happen) */
	p = &pk->pend[pk->npend++];
	p->id = id;
	p->len = len;
	p->pos = vq->used_idx;
	p->flags = (len ? VRING_DESC_F_WRITE : 0) |
		   (vq->used_wrap ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0);
	p->entry = b->entry;
	p->ndesc = b->ndesc;
	if (vq->pinfl && b->entry != NO_ENTRY)
		WRITE_ONCE(vq->pinfl->desc[b->entry].inflight, 2);
	b->busy = false;
	b->from_infl = false;
	b->entry = NO_ENTRY;
	advance(vq, &vq->used_idx, &vq->used_wrap, b->ndesc);
}

/* The published batch is no longer in flight: free its entries. */
static void infl_retire(struct vq *vq)
{
	struct vq_packed *pk = vq->pk;
	struct vq_inflight_packed *infl = vq->pinfl;

	ring_wmb();     /* the flags before clearing the marks */
	for (unsigned i = 0; i < pk->npend; i++) {
		uint16_t e = pk->pend[i].entry;

		if (e == NO_ENTRY)
			continue;
		WRITE_ONCE(infl->desc[e].inflight, 0);
		for (unsigned k = 0; k < pk->pend[i].ndesc && e != NO_ENTRY; k++) {
			uint16_t next = pk->enext[e];
			pk->pool[pk->nfree++] = e;
			e = next;
		}
	}
	ring_wmb();     /* marks cleared before the batch is declared retired */
	WRITE_ONCE(infl->old_used_idx, vq->used_idx);
	WRITE_ONCE(infl->old_used_wrap_counter, vq->used_wrap);
}

/* Whether the driver's event suppression asks for an interrupt now that
 * the used position moved from (old, oldw) to (new, neww). */
static bool want_interrupt(struct vq *vq, uint16_t old, bool oldw)
{
	uint16_t flags = READ_ONCE(vq->drv_event->flags) & 3;
	uint16_t ev, off;
	int new_l, old_l, ev_l;

	if (flags == VRING_PACKED_EVENT_F_DISABLE)
		return false;
	if (flags != VRING_PACKED_EVENT_F_DESC || !vq->event_idx)
		return true;
	/* On one line: the current lap from 0, the previous one negative. */
	ev = READ_ONCE(vq->drv_event->off_wrap);
	off = ev & ~VRING_PACKED_EVENT_WRAP;
	new_l = vq->used_idx;
	old_l = (int)old - (oldw != vq->used_wrap ? (int)vq->num : 0);
	ev_l = (int)off - (!!(ev & VRING_PACKED_EVENT_WRAP) != vq->used_wrap ? (int)vq->num : 0);
	return ev_l >= old_l && ev_l < new_l;
}

void vq_packed_flush_used(struct vq *vq)
{
	struct vq_packed *pk = vq->pk;
	uint16_t old = vq->signalled_used;
	bool oldw = vq->signalled_wrap;

	if (pk->npend == 0 || vq->dead)
		return;
	if (vq->pinfl) {
		WRITE_ONCE(vq->pinfl->used_idx, vq->used_idx);
		WRITE_ONCE(vq->pinfl->used_wrap_counter, vq->used_wrap);
	}
	ring_wmb();     /* guest data (and the batch's record) before the ring */
	ring_guest_release(vq->dev);
	/* The whole batch at once, not each descriptor as its request
	 * completes: a polling driver reads the first slot's flags in a loop,
	 * and every write to its cache line would take the line away from it
	 * (a packed ring shares each line between both sides). */
	for (unsigned i = pk->npend - 1; i > 0; i--) {
		struct vring_packed_desc *d = &vq->pdesc[pk->pend[i].pos];

		WRITE_ONCE(d->id, pk->pend[i].id);
		WRITE_ONCE(d->len, pk->pend[i].len);
		WRITE_ONCE(d->flags, pk->pend[i].flags);
	}
	WRITE_ONCE(vq->pdesc[pk->pend[0].pos].id, pk->pend[0].id);
	WRITE_ONCE(vq->pdesc[pk->pend[0].pos].len, pk->pend[0].len);
	ring_wmb();     /* the rest of the batch before its first, where the driver looks */
	WRITE_ONCE(vq->pdesc[pk->pend[0].pos].flags, pk->pend[0].flags);
	if (vq->log) {
		ring_wmb();     /* the writes before the bits that record them */
		for (unsigned i = 0; i < pk->npend; i++)
			vq_log_mark(vq->log, vq->pdesc_gpa + pk->pend[i].pos *
				    sizeof(struct vring_packed_desc), sizeof(struct vring_packed_desc));
	}
	if (vq->pinfl)
		infl_retire(vq);
	pk->npend = 0;
	vq->signalled_used = vq->used_idx;
	vq->signalled_wrap = vq->used_wrap;
	ring_mb();      /* publish the flags before reading the driver's event area */
	if (want_interrupt(vq, old, oldw) && vq->call_fd >= 0) {
		uint64_t one = 1;
		(void)!write(vq->call_fd, &one, sizeof(one));
	}
}

bool vq_packed_set_notify(struct vq *vq, bool on)
{
	if (vq->dead)
		return false;
	if (on == vq->notify_on && !on)
		return false;
	vq->notify_on = on;
	/* ENABLE rather than DESC even with EVENT_IDX: a kick for every
	 * batch while we sleep is what we want, none while we poll. */
	WRITE_ONCE(vq->dev_event->flags, on ? VRING_PACKED_EVENT_F_ENABLE :
					      VRING_PACKED_EVENT_F_DISABLE);
	if (vq->log) {
		ring_wmb();
		vq_log_mark(vq->log, vq->dev_event_gpa, sizeof(*vq->dev_event));
	}
	if (!on)
		return false;
	ring_mb();      /* the request for kicks before looking at the ring again */
	return vring_packed_avail(READ_ONCE(vq->pdesc[vq->last_avail].flags), vq->avail_wrap);
}

/* ---- restart ---------------------------------------------------------------------- */

static void infl_init(struct vq *vq)
{
	struct vq_inflight_packed *infl = vq->pinfl;

	memset(infl, 0, vq_inflight_packed_size(vq->num));
	infl->desc_num = vq->num;
	infl->used_idx = infl->old_used_idx = vq->used_idx;
	infl->used_wrap_counter = infl->old_used_wrap_counter = vq->used_wrap;
	for (unsigned i = 0; i < vq->num; i++)
		infl->desc[i].next = NO_ENTRY;
	ring_wmb();
	infl->version = 1;
	vq->infl_counter = 1;
}

static int cmp_counter(const void *a, const void *b, void *arg)
{
	const struct vq_inflight_packed *infl = arg;
	uint64_t x = infl->desc[*(const uint16_t *)a].counter;
	uint64_t y = infl->desc[*(const uint16_t *)b].counter;

	return x < y ? -1 : x > y;
}

/* Rebuild what is in flight from the region; false if it does not hold
 * together (then nothing is resubmitted). */
static bool infl_collect(struct vq *vq, uint16_t *heads, unsigned *nheads, unsigned *ndesc)
{
	struct vq_inflight_packed *infl = vq->pinfl;
	struct vq_packed *pk = vq->pk;
	uint8_t *claimed = calloc(vq->num, 1);
	unsigned nh = 0, total = 0;
	uint64_t max = 0;

	if (!claimed)
		return false;
	for (unsigned h = 0; h < vq->num; h++) {
		struct vq_inflight_packed_desc *d = &infl->desc[h];
		uint16_t num, id, e;

		if (READ_ONCE(d->inflight) != 1)
			continue;
		num = READ_ONCE(d->num);
		id = READ_ONCE(d->id);
		if (num == 0 || num > vq->num || id >= vq->num || pk->buf[id].busy)
			goto bad;
		/* Its entries, each in one chain only. */
		e = h;
		for (unsigned k = 0; k < num; k++) {
			uint16_t next;

			if (e >= vq->num || claimed[e])
				goto bad;
			claimed[e] = 1;
			next = READ_ONCE(infl->desc[e].next);
			pk->enext[e] = k + 1 < num ? next : NO_ENTRY;
			e = next;
		}
		pk->buf[id] = (struct pk_buf){ .ndesc = num, .entry = (uint16_t)h, .busy = true,
					       .from_infl = true };
		heads[nh++] = (uint16_t)h;
		total += num;
		if (d->counter > max)
			max = d->counter;
	}
	if (total > vq->num)
		goto bad;
	pk->nfree = 0;
	for (unsigned e = vq->num; e-- > 0; )
		if (!claimed[e])
			pk->pool[pk->nfree++] = (uint16_t)e;
	free(claimed);
	*nheads = nh;
	*ndesc = total;
	vq->infl_counter = max + 1;
	return true;
bad:
	free(claimed);
	pk_reset(vq);
	return false;
}

unsigned vq_packed_recover(struct vq *vq)
{
	struct vq_inflight_packed *infl = vq->pinfl;
	uint16_t used, oused, *heads;
	bool usedw, ousedw, published;
	unsigned nh = 0, total = 0;

	vq->infl_kept = false;
	if (READ_ONCE(infl->version) != 1 || READ_ONCE(infl->desc_num) != vq->num) {
		infl_init(vq);
		return 0;
	}
	vq->infl_kept = true;
	used = READ_ONCE(infl->used_idx);
	usedw = READ_ONCE(infl->used_wrap_counter) & 1;
	oused = READ_ONCE(infl->old_used_idx);
	ousedw = READ_ONCE(infl->old_used_wrap_counter) & 1;
	if (used >= vq->num || oused >= vq->num)
		goto fresh;
	/* A batch was being published when the last back-end stopped: did
	 * its first used descriptor (written last) reach the ring? */
	published = (used != oused || usedw != ousedw) &&
		    !!(READ_ONCE(vq->pdesc[oused].flags) & VRING_PACKED_DESC_F_USED) == ousedw;
	for (unsigned h = 0; h < vq->num; h++) {
		uint8_t m = READ_ONCE(infl->desc[h].inflight);
		if (m == 2)
			WRITE_ONCE(infl->desc[h].inflight, published ? 0 : 1);
		else if (m != 1 && m != 0)
			WRITE_ONCE(infl->desc[h].inflight, 0);
	}
	if (published) {
		oused = used;
		ousedw = usedw;
	}
	WRITE_ONCE(infl->used_idx, oused);
	WRITE_ONCE(infl->used_wrap_counter, ousedw);
	WRITE_ONCE(infl->old_used_idx, oused);
	WRITE_ONCE(infl->old_used_wrap_counter, ousedw);
	vq->used_idx = vq->signalled_used = oused;
	vq->used_wrap = vq->signalled_wrap = ousedw;

	if (!vq->resubmit)
		vq->resubmit = calloc(vq->num, sizeof(*vq->resubmit));
	heads = calloc(vq->num, sizeof(*heads));
	if (!vq->resubmit || !heads) {
		free(heads);
		goto fresh;
	}
	if (!infl_collect(vq, heads, &nh, &total)) {
		vlog(LOG_WARNING, "[%s q%u] inflight region does not hold together: nothing resubmitted",
		     vq->devname, vq->index);
		free(heads);
		goto fresh;
	}
	qsort_r(heads, nh, sizeof(*heads), cmp_counter, infl);
	for (unsigned i = 0; i < nh; i++)
		vq->resubmit[i] = READ_ONCE(infl->desc[heads[i]].id);
	free(heads);
	vq->nresubmit = nh;
	vq->resubmitted = 0;
	/* Every descriptor fetched was used (before the used position) or
	 * is in flight: that gives where the driver's descriptors resume. */
	vq->last_avail = vq->used_idx;
	vq->avail_wrap = vq->used_wrap;
	advance(vq, &vq->last_avail, &vq->avail_wrap, total);
	/* A batch cut short may have left used flags after the used position:
	 * those slots (ours until they are used) must not look used. */
	{
		uint16_t p = vq->used_idx;
		bool w = vq->used_wrap;
		for (unsigned i = 0; i < total; i++) {
			uint16_t f = READ_ONCE(vq->pdesc[p].flags);
			f &= ~(VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED);
			f |= w ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
			WRITE_ONCE(vq->pdesc[p].flags, f);
			advance(vq, &p, &w, 1);
		}
	}
	return nh;
fresh:
	pk_reset(vq);
	infl_init(vq);
	vq->nresubmit = vq->resubmitted = 0;
	return 0;
}

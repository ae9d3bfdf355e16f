/* A virtqueue, device side: the ring layer, for split rings (vq.c) and
 * packed ones (vq_packed.c, VIRTIO_F_RING_PACKED) behind one API.  It hands
 * out the heads the driver made available (for a packed ring: the chains'
 * buffer ids, which play the head's part: a request's slot) and walks their
 * descriptor chains into iovecs;
 * it takes back used elements and publishes them.  It knows nothing of the
 * requests the chains carry (that is the device model's business, blk.h)
 * nor of how their I/O is done (backend.h).
 * Ownership: the control thread configures a vq while it is stopped
 * (fields under "config"); once attached to an engine thread only that
 * thread touches the ring and the "engine" fields, until a detach command
 * has been acknowledged — which waits for the requests in flight to
 * complete.  Nothing read from the ring is trusted. */
#ifndef VHOSTD_VQ_H
#define VHOSTD_VQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "mem.h"
#include "ring.h"

#define VQ_MAX_SIZE     1024
#define VQ_BATCH        32
/* Data segments a request may have (virtio-blk seg_max) and the iovecs a
 * request can use in all (header, status, region splits). */
#define VQ_SEG_MAX      126
#define VQ_MAX_IOV      (VQ_SEG_MAX + 2 + MEM_MAX_REGIONS)

struct eng_thread;
struct vq_packed;

/* The dirty log of a migration (vhost-user "Migration"): one bit per 4 KiB
 * page of guest-physical memory, set for every page the device writes.
 * Shared with the front-end, which clears bits as it copies pages, so bits
 * are set with an atomic OR, after the write they record.  Built and
 * replaced by the control thread while the queues that use it are stopped. */
#define VQ_LOG_PAGE     4096u

struct vq_log {
	uint8_t *bits;
	uint64_t len;           /* bytes of bitmap: pages beyond len*8 are not logged */
};

/* Mark the pages of [gpa, gpa+len) (len > 0) dirty. */
static inline void vq_log_mark(const struct vq_log *log, uint64_t gpa, uint64_t len)
{
	uint64_t first = gpa / VQ_LOG_PAGE, last = (gpa + len - 1) / VQ_LOG_PAGE;

	if (gpa + len - 1 < gpa)
		last = UINT64_MAX / VQ_LOG_PAGE;
	for (uint64_t pg = first; pg <= last; ) {
		uint64_t byte = pg / 8;
		unsigned bit = pg % 8, n = 8 - bit;
		uint8_t mask;

		if (byte >= log->len)
			return;
		if (last - pg + 1 < n)
			n = last - pg + 1;
		mask = (uint8_t)(((1u << n) - 1) << bit);
		if ((__atomic_load_n(&log->bits[byte], __ATOMIC_RELAXED) & mask) != mask)
			__atomic_fetch_or(&log->bits[byte], mask, __ATOMIC_RELAXED);
		pg += n;
	}
}

/* A descriptor chain, walked and translated. */
struct vq_chain {
	uint16_t head;
	bool fault;             /* an address did not translate or a rule was broken */
	unsigned nout, nin;     /* iov[0..nout) readable, iov[nout..nout+nin) writable */
	uint64_t out_len, in_len;
	/* last writable descriptor (to report a status even after a fault) */
	uint64_t last_w_addr;
	uint32_t last_w_len;
	struct iovec iov[VQ_MAX_IOV];
};

struct vq {
	/* config (control thread, while stopped) */
	unsigned index;
	uint16_t num;                   /* 0 = not set */
	uint64_t desc_uva, avail_uva, used_uva;
	int kick_fd, call_fd, err_fd;   /* -1 = none */
	bool kick_nofd;                 /* polling driver: never sleep on this vq */
	bool event_idx;
	bool packed;                    /* VIRTIO_F_RING_PACKED: the packed layout */
	bool started;                   /* SET_VRING_KICK seen, no GET_VRING_BASE since */
	bool enabled;                   /* SET_VRING_ENABLE */
	bool attached;                  /* running on an engine thread */
	void *detach_cmd;               /* the engine's asynchronous detach, if one runs */
	void *dev;                      /* the device model's object (opaque here) */
	const char *devname;            /* for log lines */
	/* Called on the engine thread when the ring breaks. */
	void (*on_broken)(struct vq *vq, const char *why);
	const struct mem_table *mem;
	struct vq_inflight *infl;       /* inflight region, NULL if not tracked */
	struct vq_inflight_packed *pinfl; /* the same, for a packed ring */
	const struct vq_log *log;       /* dirty log while migrating, NULL = none */
	bool log_used;                  /* ... which also covers the used ring at */
	uint64_t log_used_gpa;          /* this guest address (VHOST_VRING_F_LOG) */
	uint16_t *resubmit;             /* heads to run again after a restart */
	unsigned nresubmit, resubmitted;
	uint64_t infl_counter;
	bool infl_kept;         /* the region held a back-end's state at start */

	/* ring pointers: translated at attach; desc_uva, avail_uva and
	 * used_uva are a packed ring's descriptor ring, driver and device
	 * event suppression areas */
	union {
		struct {
			struct vring_desc *desc;
			struct vring_avail *avail;
			struct vring_used *used;
		};
		struct {
			struct vring_packed_desc *pdesc;
			const struct vring_packed_event *drv_event;
			struct vring_packed_event *dev_event;
		};
	};
	struct vq_packed *pk;           /* a packed ring's own state (vq_packed.c) */
	uint64_t pdesc_gpa, dev_event_gpa; /* where a packed ring's writes are logged */

	/* engine (while attached); last_avail is also set by SET_VRING_BASE.
	 * Packed ring: last_avail and used_idx are positions in the ring
	 * (< num) with their wrap counters, and used_idx is set by
	 * SET_VRING_BASE too (kept while the ring is stopped). */
	uint16_t last_avail;
	uint16_t used_idx;
	uint16_t signalled_used;        /* used->idx as we last published it */
	bool avail_wrap, used_wrap, signalled_wrap;
	bool notify_on;                 /* guest kicks currently wanted */
	bool draining;                  /* being detached: take no new request */
	unsigned inflight;
	_Atomic bool broken;
	bool dead;                      /* its guest memory vanished: never touch it */
	uint64_t throttled_until;       /* a limit holds its requests until then (ns), 0 = none */
	uint64_t throttled_since;       /* when the current hold began */
	struct eng_thread *thread;
};

/* A stopped, unconfigured queue of device dev (whose name it logs and whose
 * on_broken it calls). */
void vq_init(struct vq *vq, unsigned index, void *dev, const char *devname,
	     void (*on_broken)(struct vq *vq, const char *why));
/* Back to the state vq_init left (control thread, after detach). */
void vq_reset(struct vq *vq);
/* Translate ring addresses against vq->mem (control thread, before
 * attach).  0 or -errno with a reason. */
int vq_prepare(struct vq *vq, char *err, size_t errlen);
/* Free what vq_prepare and vq_inflight_recover allocated (control thread,
 * after detach). */
void vq_release(struct vq *vq);
/* With vq->infl set and rings mapped: retire a batch a crash cut short,
 * and queue the requests that were in flight for resubmission (in the
 * order they were fetched); last_avail follows from them.  Control thread,
 * before attach.  Returns how many requests will be resubmitted. */
unsigned vq_inflight_recover(struct vq *vq);

/* Engine side. */
/* The engine thread takes the ring: its own indices start from the ring's. */
void vq_engine_start(struct vq *vq);
/* Whether the ring may hand out requests (not broken, not being drained). */
static inline bool vq_accepting(struct vq *vq)
{
	return !vq->draining && !atomic_load_explicit(&vq->broken, memory_order_relaxed);
}
/* Heads to run again after a restart (vq_inflight_recover), oldest first:
 * up to max of them into heads, without taking them.  Returns how many. */
unsigned vq_resubmit_heads(struct vq *vq, uint16_t *heads, unsigned max);
/* A resubmitted head was taken (in vq_resubmit_heads order). */
static inline void vq_resubmit_take(struct vq *vq)
{
	vq->resubmitted++;
}
/* The heads the driver made available, up to max, without taking them.
 * Returns how many are valid; a bad entry ends the list and its reason is
 * left in why (the caller serves what came before, then breaks the ring).
 * Returns -1 (ring broken) if the avail index itself is impossible. */
int vq_avail_heads(struct vq *vq, uint16_t *heads, unsigned max, char *why, size_t whylen);
/* Take the next available head (the one vq_avail_heads listed first that
 * was not taken yet): it is the device's until vq_push_used. */
void vq_packed_take(struct vq *vq, uint16_t id);
static inline void vq_take(struct vq *vq, uint16_t head)
{
	if (vq->packed) {
		vq_packed_take(vq, head);
		return;
	}
	if (vq->infl) {
		WRITE_ONCE(vq->infl->desc[head].counter, vq->infl_counter++);
		ring_wmb();     /* the order stamp before the mark */
		WRITE_ONCE(vq->infl->desc[head].inflight, 1);
	}
	vq->last_avail++;
}

/* Ask the guest for kicks (true) or tell it not to bother (false); enabling
 * returns true if work arrived meanwhile (so do not sleep). */
bool vq_set_notify(struct vq *vq, bool on);
/* Walk and translate the chain at head into c. 0, or -EBADMSG if the ring
 * itself is broken (bad index, loop, bad indirect table). */
int vq_walk(struct vq *vq, uint16_t head, struct vq_chain *c);
/* Queue a used element (published by vq_flush_used). */
void vq_push_used(struct vq *vq, uint16_t head, uint32_t len);
/* Publish used elements and interrupt the guest if it wants one. */
void vq_flush_used(struct vq *vq);
/* With a dirty log: mark the pages of the writable buffers of c (as the
 * device model left them) and of the status byte at host pointer status
 * (may be NULL). */
void vq_log_chain(struct vq *vq, const struct vq_chain *c, const void *status);
/* Mark the guest page that holds gpa..gpa+len (a status byte reported by
 * guest address). */
static inline void vq_log_gpa(struct vq *vq, uint64_t gpa, uint64_t len)
{
	if (vq->log) {
		ring_wmb();     /* the write before the bit that records it */
		vq_log_mark(vq->log, gpa, len);
	}
}
/* Mark the ring broken: stop using it, signal err_fd, tell the device. */
void vq_mark_broken(struct vq *vq, const char *why);

/* The ring's position as SET/GET_VRING_BASE carry it.  Split: the next
 * avail index.  Packed (as QEMU encodes it): bits 0-14 the next available
 * descriptor, 15 the driver's wrap counter, 16-30 the next used position,
 * 31 the device's wrap counter. */
uint32_t vq_get_base(const struct vq *vq);
/* -EINVAL if base is impossible for the ring's kind (the queue size is
 * checked when it starts). */
int vq_set_base(struct vq *vq, uint32_t base);

#endif

/* virtio-blk device model: a device's queues and its requests.  It takes
 * descriptor chains from the ring layer (vq.h), parses each into a request,
 * checks it, starts it on the backend (backend.h) and writes its status when
 * it completes (at once for ram/null, later for asynchronous backends).
 * Engine threads run the requests; the control thread builds the device and
 * prepares its queues.  Trust: request headers, sectors, lengths and segment
 * lists come from the guest and are checked here; a bad one becomes a status
 * byte. */
#ifndef VHOSTD_BLK_H
#define VHOSTD_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "params.h"
#include "qos.h"
#include "virtio_blk.h"
#include "vq.h"

/* Limits we advertise in the config space and enforce. */
#define VBLK_MAX_DISCARD_SEG      16
#define VBLK_MAX_DISCARD_SECTORS  (1u << 22)    /* 2 GiB per segment */
#define VBLK_SIZE_MAX             (1u << 20)    /* bytes per data segment */

/* Per-queue counters: written by the engine thread only, read by anyone. */
struct vblk_stats {
	_Atomic uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	_Atomic uint64_t bytes_read, bytes_written, errors;
	_Atomic uint64_t inflight;
	_Atomic uint64_t throttled_ns;  /* time requests waited for a limit */
} __attribute__((aligned(64)));

/* Kinds of the latency histograms (as enum vdev_op). */
enum vblk_op { VBLK_OP_READ, VBLK_OP_WRITE, VBLK_OP_FLUSH, VBLK_OP_OTHER, VBLK_NOPS };

/* One virtio-blk request, in the slot of its head descriptor. */
struct vblk_req {
	struct vq *vq;
	bool busy;              /* waiting for backend completions */
	uint8_t type;           /* virtio-blk request type (for stats) */
	uint8_t result;         /* status so far */
	uint16_t pending;       /* backend completions still to come */
	uint8_t *status;
	uint32_t written;       /* used length on success */
	uint64_t expect;        /* bytes each READ/WRITE completion must carry */
	uint64_t start_ns;      /* taken off the ring (latency) */
	struct be_range ranges[BE_MAX_SQE_PER_REQ];
	struct be_job job;
	struct vq_chain chain;
};

struct vblk {
	char name[VDEV_NAME_MAX + 1];
	struct vdev_params params;      /* control thread; stable while running */
	struct backend *be;
	bool wce;                       /* write cache on (writeback) */
	struct vq vqs[VDEV_MAX_QUEUES];
	struct vblk_req *reqs[VDEV_MAX_QUEUES]; /* a queue's slots while it runs */
	struct vblk_stats stats[VDEV_MAX_QUEUES];
	struct qos qos;                 /* its own limits */
	struct qos *_Atomic group;      /* its throttle group's, NULL = none */
	/* latency, per queue (written by its engine thread only) and kind;
	 * allocated when the queue first runs, kept until the device goes */
	struct qos_hist *_Atomic hist[VDEV_MAX_QUEUES];
	/* Called on the engine thread when a ring breaks. */
	void (*ring_broken)(struct vblk *b, struct vq *vq, const char *why);
	void *owner;
	/* The front-end connection whose queues these are (vhost layer; a
	 * second front-end takes them over in a hand-over), NULL = none. */
	void *fe_owner;
};

/* Whether the guest may not write: set so, or the backing takes no writes. */
static inline bool vblk_readonly(const struct vblk *b)
{
	return b->params.readonly || (b->be && b->be->read_only);
}

/* The one constructor: a device named name with parameters p, its queues
 * initialised and stopped, its backend opened (p->size 0 with a file
 * backing: the file's size, which b->params.size then holds), the write
 * cache on.  -errno and a reason in err. */
int vblk_create(const char *name, const struct vdev_params *p, struct vblk **out,
		char *err, size_t errlen);
/* The same with a backend opened for p already (be_open: a Ceph image may
 * take seconds to open, which the caller does on its own thread); b owns
 * be from then on, also when this fails. */
int vblk_create_on(const char *name, const struct vdev_params *p, struct backend *be,
		   struct vblk **out, char *err, size_t errlen);
/* Close the backend, release the queues, free.  No queue may run. */
void vblk_destroy(struct vblk *b);

/* Control thread, queue stopped: map the rings and allocate the request
 * slots (before attach), release them (after detach), or reset the queue to
 * its unconfigured state.  0 or -errno and a reason. */
int vblk_queue_prepare(struct vblk *b, struct vq *vq, char *err, size_t errlen);
void vblk_queue_release(struct vblk *b, struct vq *vq);
void vblk_queue_reset(struct vblk *b, struct vq *vq);

/* Engine side.  Start up to `room` requests of vq (at most VQ_BATCH):
 * requests left in flight by a previous back-end first, then new ones.
 * Returns how many, or -1 if the ring broke. */
int vblk_poll(struct vq *vq, struct be_ctx *ctx, unsigned room);
/* One backend completion for a request (the cookie of its be_io; res:
 * bytes or 0 on success, -errno), on the engine thread of ctx.  Returns
 * true when this finished the request (used element pushed, not yet
 * flushed). */
bool vblk_complete(struct be_ctx *ctx, void *cookie, int res);
/* The queue a completion cookie belongs to (for fault attribution). */
static inline struct vq *vblk_cookie_vq(void *cookie)
{
	return ((struct vblk_req *)cookie)->vq;
}

/* The virtio feature bits this device offers (without vhost-user's own)
 * and its configuration space (blkcfg.c).  Control thread. */
uint64_t blkcfg_features(const struct vblk *b);
void blkcfg_build(const struct vblk *b, struct virtio_blk_config *cfg);

#endif

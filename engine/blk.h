/* virtio-blk device model: request parsing and execution against a
 * backend (engine threads), and the device state shared with the control
 * thread.  Trust: request headers, sectors, lengths and segment lists come
 * from the guest and are checked here; a bad one becomes a status byte. */
#ifndef VHOSTD_BLK_H
#define VHOSTD_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "params.h"
#include "vq.h"

/* virtio-blk request types and status values (virtio 1.2 §5.2.6). */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

/* Limits we advertise in the config space and enforce. */
#define VBLK_MAX_DISCARD_SEG      16
#define VBLK_MAX_DISCARD_SECTORS  (1u << 22)    /* 2 GiB per segment */
#define VBLK_SIZE_MAX             (1u << 20)    /* bytes per data segment */

struct vblk_req_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

struct vblk_discard_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

struct vblk {
	char name[VDEV_NAME_MAX + 1];
	struct vdev_params params;      /* control thread; stable while running */
	struct backend *be;
	bool wce;                       /* write cache on (writeback) */
	struct vq vqs[VDEV_MAX_QUEUES];
	/* Called on the engine thread when a ring breaks. */
	void (*ring_broken)(struct vblk *b, struct vq *vq, const char *why);
	void *owner;
};

const char *vblk_name(const struct vblk *b);
void vblk_ring_broken(struct vblk *b, struct vq *vq, const char *why);
/* Start the request whose chain was walked into req->chain: it completes
 * now (its used element is pushed, not flushed) or when the backend's
 * completions arrive through vblk_complete(). */
void vblk_handle(struct vblk *b, struct vq *vq, struct vq_req *req, struct be_ctx *ctx);
/* One backend completion for req (res: bytes or 0 on success, -errno).
 * Returns true when this finished the request (used element pushed). */
bool vblk_complete(struct vq_req *req, int res);

#endif

/* Split virtqueue layout (virtio 1.2 §2.7) and the accessors and barriers
 * used on it.  Everything in these structures lives in guest memory: the
 * guest may change any field at any time, so every value is read once
 * (READ_ONCE) into a local before it is checked and used.
 * Little-endian host assumed (x86_64, aarch64): virtio 1.x rings are LE. */
#ifndef VHOSTD_RING_H
#define VHOSTD_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define VRING_DESC_F_NEXT       1
#define VRING_DESC_F_WRITE      2
#define VRING_DESC_F_INDIRECT   4

#define VRING_USED_F_NO_NOTIFY  1
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];        /* then used_event (EVENT_IDX) */
};

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
};

struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];  /* then avail_event (EVENT_IDX) */
};

static inline size_t vring_desc_size(unsigned num)
{
	return sizeof(struct vring_desc) * num;
}

static inline size_t vring_avail_size(unsigned num)
{
	return sizeof(struct vring_avail) + sizeof(uint16_t) * num + sizeof(uint16_t);
}

static inline size_t vring_used_size(unsigned num)
{
	return sizeof(struct vring_used) + sizeof(struct vring_used_elem) * num +
	       sizeof(uint16_t);
}

/* The inflight region of one split queue (vhost-user "Inflight I/O
 * tracking"): shared memory the front-end keeps across a back-end crash, so
 * that a restarted back-end can resubmit exactly what was in flight. */
struct vq_inflight_desc {
	uint8_t inflight;               /* 1 while the request is ours */
	uint8_t padding[5];
	uint16_t next;                  /* links the last batch of used heads */
	uint64_t counter;               /* fetch order */
};

struct vq_inflight {
	uint64_t features;
	uint16_t version;
	uint16_t desc_num;
	uint16_t last_batch_head;
	uint16_t used_idx;              /* used->idx once the batch was retired */
	struct vq_inflight_desc desc[];
};

static inline size_t vq_inflight_size(unsigned queue_size)
{
	size_t n = sizeof(struct vq_inflight) + sizeof(struct vq_inflight_desc) * queue_size;
	return (n + 63) & ~(size_t)63;
}

/* Packed virtqueue layout (virtio 1.2 §2.8): one ring of descriptors that
 * the driver makes available and the device overwrites with used ones, and
 * two event suppression structures (the driver's, read by the device: when
 * to interrupt; the device's, written by it: when to kick).  A descriptor
 * is available when its AVAIL bit equals the driver's wrap counter at its
 * position and its USED bit does not; used when both equal the device's. */
#define VRING_PACKED_DESC_F_AVAIL       (1u << 7)
#define VRING_PACKED_DESC_F_USED        (1u << 15)

#define VRING_PACKED_EVENT_F_ENABLE     0
#define VRING_PACKED_EVENT_F_DISABLE    1
#define VRING_PACKED_EVENT_F_DESC       2       /* with EVENT_IDX: at off_wrap */
#define VRING_PACKED_EVENT_WRAP         (1u << 15)

struct vring_packed_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t id;            /* buffer id: in the last descriptor of a chain */
	uint16_t flags;
};

struct vring_packed_event {
	uint16_t off_wrap;      /* bits 0-14 ring offset, bit 15 wrap counter */
	uint16_t flags;
};

static inline size_t vring_packed_desc_size(unsigned num)
{
	return sizeof(struct vring_packed_desc) * num;
}

/* Flags of descriptor slot whose position has wrap counter `wrap`: made
 * available by the driver (AVAIL == wrap, USED != wrap)? */
static inline int vring_packed_avail(uint16_t flags, int wrap)
{
	return !!(flags & VRING_PACKED_DESC_F_AVAIL) == wrap &&
	       !!(flags & VRING_PACKED_DESC_F_USED) != wrap;
}

/* The inflight region of one packed queue (vhost-user "Inflight I/O
 * tracking", QueueRegionPacked): the layout is the spec's, so its size is
 * what any back-end expects; how vhostd uses the fields is described in
 * vq_packed.c.  Every entry holds a copy of one descriptor of a chain in
 * flight (a descriptor of the ring is overwritten by used descriptors
 * before its own chain completes, so a restart cannot read it there). */
struct vq_inflight_packed_desc {
	uint8_t inflight;               /* head of a chain: 1 in flight, 2 completed
					 * in the batch being published */
	uint8_t padding;
	uint16_t next;                  /* next entry of the chain */
	uint16_t last;                  /* head: the chain's last entry */
	uint16_t num;                   /* head: descriptors in the chain */
	uint64_t counter;               /* head: fetch order */
	uint16_t id;                    /* the chain's buffer id */
	uint16_t flags;
	uint32_t len;
	uint64_t addr;
};

struct vq_inflight_packed {
	uint64_t features;
	uint16_t version;
	uint16_t desc_num;
	uint16_t free_head;             /* unused by vhostd (0) */
	uint16_t old_free_head;         /* unused by vhostd (0) */
	uint16_t used_idx;              /* used position after the batch being published */
	uint16_t old_used_idx;          /* used position of the last batch retired */
	uint8_t used_wrap_counter;
	uint8_t old_used_wrap_counter;
	uint8_t padding[7];
	struct vq_inflight_packed_desc desc[];
};

_Static_assert(sizeof(struct vq_inflight_packed_desc) == 32, "DescStatePacked");
_Static_assert(sizeof(struct vq_inflight_packed) == 32, "QueueRegionPacked");

static inline size_t vq_inflight_packed_size(unsigned queue_size)
{
	size_t n = sizeof(struct vq_inflight_packed) +
		   sizeof(struct vq_inflight_packed_desc) * queue_size;
	return (n + 63) & ~(size_t)63;
}

/* A single untorn read/write of a guest-shared field. */
#define READ_ONCE(x)      (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v)  (*(volatile __typeof__(x) *)&(x) = (v))

/* Barriers.  The guest runs on other CPUs and only ever communicates through
 * memory; these pair with the guest driver's virtio_*mb().
 *  - rmb after reading avail->idx: the ring entries and descriptors it
 *    publishes must not be read before the index (acquire).
 *  - wmb before writing used->idx: the used elements and the data written
 *    into guest buffers must be visible before the index (release).
 *  - mb between publishing used->idx (or avail_event) and reading the
 *    driver's used_event/flags (or re-reading avail->idx): a store followed
 *    by a load needs a full fence, or both sides can miss each other's
 *    update and sleep forever. */
static inline void ring_rmb(void) { atomic_thread_fence(memory_order_acquire); }
static inline void ring_wmb(void) { atomic_thread_fence(memory_order_release); }
static inline void ring_mb(void)  { atomic_thread_fence(memory_order_seq_cst); }

/* ThreadSanitizer sees none of the ordering above: it does not model
 * fences, and the guest (in the tests: a front-end thread of this process,
 * with its own mapping of the memory) is outside what it watches.  So it
 * cannot know that a request the guest makes available can depend on a
 * completion the device published earlier, possibly on another queue and
 * engine thread: the guest's acquire of used->idx and release of avail->idx
 * carry that order.  These name it for TSan, on one sync object per device
 * (`key`): a release where the device publishes completions, an acquire
 * where it takes new requests.  No code in other builds. */
#if defined(__SANITIZE_THREAD__)
#define RING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_TSAN 1
#endif
#endif
#ifdef RING_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define ring_guest_acquire(key) __tsan_acquire((void *)(key))
#define ring_guest_release(key) __tsan_release((void *)(key))
#else
#define ring_guest_acquire(key) ((void)(key))
#define ring_guest_release(key) ((void)(key))
#endif

/* virtio's vring_need_event(): has new_idx crossed event since old? */
static inline int vring_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

#endif

/* vu_wire.h: the vhost-user and virtio(-blk) wire, as the TEST front-ends
 * see it (fakefe, fakefe-smoke, vhost-bench): request codes, header flags,
 * protocol-feature and feature bits, ring layouts, virtio-blk request types
 * and status, and the structs a front-end builds.
 *
 * One copy for all of them, and on purpose not the daemon's own definitions
 * (src/vhost/vu.h, engine/): written again from the vhost-user and virtio
 * specifications, so that a wrong constant in the daemon shows up as a test
 * failure instead of being agreed with.  Header only: vhost-bench links
 * nothing else.  Little-endian host assumed (as the daemon does). */
#ifndef VHOSTD_TESTS_VU_WIRE_H
#define VHOSTD_TESTS_VU_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* ---- vhost-user messages ------------------------------------------------ */

enum ffe_req_code {
	FFE_GET_FEATURES = 1,
	FFE_SET_FEATURES = 2,
	FFE_SET_OWNER = 3,
	FFE_RESET_OWNER = 4,
	FFE_SET_MEM_TABLE = 5,
	FFE_SET_LOG_BASE = 6,
	FFE_SET_LOG_FD = 7,
	FFE_SET_VRING_NUM = 8,
	FFE_SET_VRING_ADDR = 9,
	FFE_SET_VRING_BASE = 10,
	FFE_GET_VRING_BASE = 11,
	FFE_SET_VRING_KICK = 12,
	FFE_SET_VRING_CALL = 13,
	FFE_SET_VRING_ERR = 14,
	FFE_GET_PROTOCOL_FEATURES = 15,
	FFE_SET_PROTOCOL_FEATURES = 16,
	FFE_GET_QUEUE_NUM = 17,
	FFE_SET_VRING_ENABLE = 18,
	FFE_SEND_RARP = 19,
	FFE_NET_SET_MTU = 20,
	FFE_SET_BACKEND_REQ_FD = 21,
	FFE_IOTLB_MSG = 22,
	FFE_SET_VRING_ENDIAN = 23,
	FFE_GET_CONFIG = 24,
	FFE_SET_CONFIG = 25,
	FFE_GET_INFLIGHT_FD = 31,
	FFE_SET_INFLIGHT_FD = 32,
	FFE_RESET_DEVICE = 34,
	FFE_GET_MAX_MEM_SLOTS = 36,
	FFE_ADD_MEM_REG = 37,
	FFE_REM_MEM_REG = 38,
	FFE_SET_STATUS = 39,
	FFE_GET_STATUS = 40,
};

#define FFE_FLAG_VERSION        0x1u
#define FFE_FLAG_REPLY          0x4u
#define FFE_FLAG_NEED_REPLY     0x8u

#define FFE_VRING_IDX_MASK      0xffu
#define FFE_VRING_NOFD          (1u << 8)

/* protocol features */
#define FFE_PF_MQ               0
#define FFE_PF_LOG_SHMFD        1
#define FFE_PF_REPLY_ACK        3
#define FFE_PF_BACKEND_REQ      5
#define FFE_PF_CONFIG           9
#define FFE_PF_INFLIGHT_SHMFD   12
#define FFE_PF_RESET_DEVICE     13
#define FFE_PF_CONFIGURE_MEM_SLOTS 15
#define FFE_PF_STATUS           16

/* virtio / virtio-blk feature bits */
#define FFE_F_BLK_SIZE_MAX      1
#define FFE_F_BLK_SEG_MAX       2
#define FFE_F_BLK_GEOMETRY      4
#define FFE_F_BLK_RO            5
#define FFE_F_BLK_BLK_SIZE      6
#define FFE_F_BLK_FLUSH         9
#define FFE_F_BLK_TOPOLOGY      10
#define FFE_F_BLK_CONFIG_WCE    11
#define FFE_F_BLK_MQ            12
#define FFE_F_BLK_DISCARD       13
#define FFE_F_BLK_WRITE_ZEROES  14
#define FFE_F_LOG_ALL           26      /* VHOST_F_LOG_ALL: log every write */
#define FFE_F_RING_INDIRECT_DESC 28
#define FFE_F_RING_EVENT_IDX    29
#define FFE_F_PROTOCOL_FEATURES 30
#define FFE_F_VERSION_1         32
#define FFE_F_RING_PACKED       34      /* packed virtqueues (virtio 1.2, 2.8) */

#define FFE_BIT(b)              (1ull << (b))

struct ffe_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));

/* SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE payload */
struct ffe_vring_state {
	uint32_t index;
	uint32_t num;
};

/* SET_MEM_TABLE payload: this header, then nregions regions (at most
 * FFE_MEM_TABLE_MAX), one fd each; ADD/REM_MEM_REG: 8 bytes, then one. */
#define FFE_MEM_TABLE_MAX       8

struct ffe_mem_table_hdr {
	uint32_t nregions;
	uint32_t padding;
};

struct ffe_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t uva;
	uint64_t mmap_offset;
};

/* ADD_MEM_REG / REM_MEM_REG payload ("single memory region description"):
 * 8 bytes of padding, then one region; ADD carries exactly one fd. */
struct ffe_mem_reg {
	uint64_t padding;
	struct ffe_mem_region region;
};

/* Requests the back-end sends on its channel (SET_BACKEND_REQ_FD). */
#define FFE_BACKEND_CONFIG_CHANGE_MSG 2

/* virtio device status bits (virtio 1.2, 2.1) for SET/GET_STATUS */
#define FFE_STATUS_ACKNOWLEDGE  1
#define FFE_STATUS_DRIVER       2
#define FFE_STATUS_DRIVER_OK    4
#define FFE_STATUS_FEATURES_OK  8
#define FFE_STATUS_NEEDS_RESET  64
#define FFE_STATUS_FAILED       128

/* SET_VRING_ADDR flags: VHOST_VRING_F_LOG, log the used ring's writes at
 * ffe_vring_addr.log (the used ring's guest-physical address) */
#define FFE_VRING_F_LOG         0x1u

struct ffe_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc;
	uint64_t used;
	uint64_t avail;
	uint64_t log;
};

/* SET_LOG_BASE payload (with LOG_SHMFD: one fd, the bitmap is the bytes
 * [mmap_offset, mmap_offset + mmap_size) of it).  The dirty log: bit k (byte
 * k / 8, bit k % 8) stands for guest-physical page k of FFE_LOG_PAGE bytes. */
struct ffe_log_base {
	uint64_t mmap_size;
	uint64_t mmap_offset;
};

#define FFE_LOG_PAGE            4096u

/* GET/SET_CONFIG payload: this header, then size bytes of config space */
struct ffe_config_hdr {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
};

/* struct virtio_blk_config, virtio 1.2 up to write_zeroes_may_unmap */
struct ffe_blk_config {
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp;
	uint8_t alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback;
	uint8_t unused0;
	uint16_t num_queues;
	uint32_t max_discard_sectors;
	uint32_t max_discard_seg;
	uint32_t discard_sector_alignment;
	uint32_t max_write_zeroes_sectors;
	uint32_t max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap;
	uint8_t unused1[3];
} __attribute__((packed));

/* ---- virtio ring / virtio-blk ------------------------------------------- */

#define FFE_DESC_F_NEXT         1
#define FFE_DESC_F_WRITE        2
#define FFE_DESC_F_INDIRECT     4
#define FFE_AVAIL_F_NO_INTERRUPT 1
#define FFE_USED_F_NO_NOTIFY    1

struct ffe_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct ffe_used_elem {
	uint32_t id;
	uint32_t len;
};

struct ffe_vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];        /* num entries, then used_event */
};

struct ffe_vring_used {
	uint16_t flags;
	uint16_t idx;
	struct ffe_used_elem ring[];    /* num entries, then avail_event */
};

/* Packed virtqueues (virtio 1.2, 2.8): one ring of these descriptors (16
 * bytes, zero-initialized), read and written by both sides.  The driver
 * marks a descriptor available with AVAIL = its wrap counter and USED = the
 * inverse; the device marks it used with both = its wrap counter.  Both
 * counters start at 1 and flip each time the ring's end is passed.  Buffer
 * ID: in the last descriptor of a chain (reserved in an indirect table,
 * whose only valid flag is WRITE).  In a used descriptor WRITE says the
 * device wrote data, and len is then the bytes written (reserved without
 * WRITE). */
#define FFE_PDESC_F_AVAIL       (1u << 7)
#define FFE_PDESC_F_USED        (1u << 15)

struct ffe_pdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t id;
	uint16_t flags;
};

/* The Driver Area (written by the driver: used buffer notifications, i.e.
 * calls) and the Device Area (written by the device: available buffer
 * notifications, i.e. kicks) of a packed queue: struct
 * pvirtq_event_suppress.  off_wrap: bits 0-14 a ring offset, bit 15 a wrap
 * counter, meaningful in DESC mode (only with EVENT_IDX negotiated). */
struct ffe_event_suppress {
	uint16_t off_wrap;
	uint16_t flags;         /* bits 0-1: FFE_RING_EVENT_*, the rest reserved */
};

#define FFE_RING_EVENT_ENABLE   0x0
#define FFE_RING_EVENT_DISABLE  0x1
#define FFE_RING_EVENT_DESC     0x2

/* vhost-user: on a packed queue SET_VRING_ADDR's desc/avail/used are the
 * descriptor ring / driver area / device area, and SET_VRING_BASE /
 * GET_VRING_BASE's num carries the next available descriptor's offset in
 * bits 0-14 and the driver's wrap counter there in bit 15. */
#define FFE_PACKED_BASE(off, wrap) ((uint16_t)(((off) & 0x7fffu) | ((wrap) ? 0x8000u : 0)))

/* Inflight tracking region of one split queue (vhost-user "Inflight I/O
 * tracking"); the back-end writes it, the front-end only keeps it. */
struct ffe_inflight_desc {
	uint8_t inflight;
	uint8_t padding[5];
	uint16_t next;
	uint64_t counter;
};

struct ffe_inflight_queue {
	uint64_t features;
	uint16_t version;
	uint16_t desc_num;
	uint16_t last_batch_head;
	uint16_t used_idx;
	struct ffe_inflight_desc desc[];
};

/* GET/SET_INFLIGHT_FD payload */
struct ffe_inflight_msg {
	uint64_t mmap_size;
	uint64_t mmap_offset;
	uint16_t num_queues;
	uint16_t queue_size;
	uint8_t pad[4];
};

/* Bytes per queue in the region: the header and queue_size entries, padded
 * to 64 bytes (QEMU and libvhost-user compute the same). */
static inline size_t ffe_inflight_queue_size(unsigned queue_size)
{
	size_t n = sizeof(struct ffe_inflight_queue) +
		   sizeof(struct ffe_inflight_desc) * queue_size;
	return (n + 63) & ~(size_t)63;
}

#define FFE_BLK_T_IN            0
#define FFE_BLK_T_OUT           1
#define FFE_BLK_T_FLUSH         4
#define FFE_BLK_T_GET_ID        8
#define FFE_BLK_T_DISCARD       11
#define FFE_BLK_T_WRITE_ZEROES  13

#define FFE_BLK_S_OK            0
#define FFE_BLK_S_IOERR         1
#define FFE_BLK_S_UNSUPP        2

#define FFE_BLK_ID_BYTES        20
#define FFE_BLK_WZ_UNMAP        1u

struct ffe_blk_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

struct ffe_blk_dwz_seg {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

/* ---- sizes on the wire ---------------------------------------------------- */

_Static_assert(sizeof(struct ffe_hdr) == 12, "vhost-user header");
_Static_assert(sizeof(struct ffe_vring_state) == 8, "vhost_vring_state");
_Static_assert(sizeof(struct ffe_vring_addr) == 40, "vhost_vring_addr");
_Static_assert(sizeof(struct ffe_mem_table_hdr) == 8, "memory table header");
_Static_assert(sizeof(struct ffe_mem_region) == 32, "memory region");
_Static_assert(sizeof(struct ffe_mem_reg) == 40, "single memory region description");
_Static_assert(sizeof(struct ffe_log_base) == 16, "vhost_user_log");
_Static_assert(sizeof(struct ffe_config_hdr) == 12, "device config header");
_Static_assert(sizeof(struct ffe_blk_config) == 60, "virtio_blk_config layout");
_Static_assert(offsetof(struct ffe_blk_config, blk_size) == 20, "virtio_blk_config.blk_size");
_Static_assert(offsetof(struct ffe_blk_config, num_queues) == 34, "virtio_blk_config.num_queues");
_Static_assert(offsetof(struct ffe_blk_config, max_discard_sectors) == 36,
	       "virtio_blk_config.max_discard_sectors");
_Static_assert(sizeof(struct ffe_inflight_msg) == 24, "vhost_user_inflight");
_Static_assert(sizeof(struct ffe_inflight_desc) == 16, "inflight descriptor");
_Static_assert(sizeof(struct ffe_inflight_queue) == 16, "inflight queue header");
_Static_assert(sizeof(struct ffe_desc) == 16, "vring_desc");
_Static_assert(sizeof(struct ffe_used_elem) == 8, "vring_used_elem");
_Static_assert(sizeof(struct ffe_pdesc) == 16, "pvirtq_desc");
_Static_assert(offsetof(struct ffe_pdesc, id) == 12, "pvirtq_desc.id");
_Static_assert(offsetof(struct ffe_pdesc, flags) == 14, "pvirtq_desc.flags");
_Static_assert(sizeof(struct ffe_event_suppress) == 4, "pvirtq_event_suppress");
_Static_assert(sizeof(struct ffe_vring_avail) == 4, "vring_avail header");
_Static_assert(sizeof(struct ffe_vring_used) == 4, "vring_used header");
_Static_assert(sizeof(struct ffe_blk_hdr) == 16, "virtio_blk_outhdr");
_Static_assert(sizeof(struct ffe_blk_dwz_seg) == 16, "virtio_blk_discard_write_zeroes");

/* ---- fds ------------------------------------------------------------------- */

/* A message's fds travel as one SCM_RIGHTS control message with its first
 * byte.  At most FFE_MSG_FDS_MAX (more than any request carries: the
 * memory table's 8). */
#define FFE_MSG_FDS_MAX         16

union ffe_fd_ctl {
	char buf[CMSG_SPACE(sizeof(int) * FFE_MSG_FDS_MAX)];
	struct cmsghdr align;
};

/* Attach fds[0..nfds) to mh, in ctl (nothing when nfds is 0). */
static inline void ffe_attach_fds(struct msghdr *mh, union ffe_fd_ctl *ctl, const int *fds,
				  unsigned nfds)
{
	struct cmsghdr *c;

	if (!nfds)
		return;
	memset(ctl, 0, sizeof(*ctl));
	mh->msg_control = ctl->buf;
	mh->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
	c = CMSG_FIRSTHDR(mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
}

/* The request's name, "UNKNOWN" for a code not listed. */
static inline const char *ffe_req_name(uint32_t request)
{
	static const char *const names[] = {
		[FFE_GET_FEATURES] = "GET_FEATURES",
		[FFE_SET_FEATURES] = "SET_FEATURES",
		[FFE_SET_OWNER] = "SET_OWNER",
		[FFE_RESET_OWNER] = "RESET_OWNER",
		[FFE_SET_MEM_TABLE] = "SET_MEM_TABLE",
		[FFE_SET_LOG_BASE] = "SET_LOG_BASE",
		[FFE_SET_LOG_FD] = "SET_LOG_FD",
		[FFE_SET_VRING_NUM] = "SET_VRING_NUM",
		[FFE_SET_VRING_ADDR] = "SET_VRING_ADDR",
		[FFE_SET_VRING_BASE] = "SET_VRING_BASE",
		[FFE_GET_VRING_BASE] = "GET_VRING_BASE",
		[FFE_SET_VRING_KICK] = "SET_VRING_KICK",
		[FFE_SET_VRING_CALL] = "SET_VRING_CALL",
		[FFE_SET_VRING_ERR] = "SET_VRING_ERR",
		[FFE_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
		[FFE_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
		[FFE_GET_QUEUE_NUM] = "GET_QUEUE_NUM",
		[FFE_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
		[FFE_GET_CONFIG] = "GET_CONFIG",
		[FFE_SET_CONFIG] = "SET_CONFIG",
		[FFE_GET_INFLIGHT_FD] = "GET_INFLIGHT_FD",
		[FFE_SET_INFLIGHT_FD] = "SET_INFLIGHT_FD",
		[FFE_RESET_DEVICE] = "RESET_DEVICE",
		[FFE_GET_MAX_MEM_SLOTS] = "GET_MAX_MEM_SLOTS",
		[FFE_ADD_MEM_REG] = "ADD_MEM_REG",
		[FFE_REM_MEM_REG] = "REM_MEM_REG",
		[FFE_SET_STATUS] = "SET_STATUS",
		[FFE_GET_STATUS] = "GET_STATUS",
	};

	if (request < sizeof(names) / sizeof(names[0]) && names[request])
		return names[request];
	return "UNKNOWN";
}

#endif

/* vhost-user, back-end side: wire format, one connection's state, and the
 * dispatcher.  Security model: the front-end is not trusted.  Every field of
 * every message — request code, flags, size, vring index, region table, fd
 * count — is checked by the dispatcher or the handler before it is used; a
 * message that breaks the protocol drops the connection, never the daemon.
 * Runs on the core's control thread. */
#ifndef VHOSTD_VU_H
#define VHOSTD_VU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blk.h"
#include "mem.h"

enum vu_request {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SEND_RARP = 19,
	VU_NET_SET_MTU = 20,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_IOTLB_MSG = 22,
	VU_SET_VRING_ENDIAN = 23,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_CREATE_CRYPTO_SESSION = 26,
	VU_CLOSE_CRYPTO_SESSION = 27,
	VU_POSTCOPY_ADVISE = 28,
	VU_POSTCOPY_LISTEN = 29,
	VU_POSTCOPY_END = 30,
	VU_GET_INFLIGHT_FD = 31,
	VU_SET_INFLIGHT_FD = 32,
	VU_GPU_SET_SOCKET = 33,
	VU_RESET_DEVICE = 34,
	VU_VRING_KICK = 35,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_ADD_MEM_REG = 37,
	VU_REM_MEM_REG = 38,
	VU_SET_STATUS = 39,
	VU_GET_STATUS = 40,
	VU_REQUEST_MAX
};

#define VU_VERSION              0x1
#define VU_FLAG_VERSION_MASK    0x3
#define VU_FLAG_REPLY           (1u << 2)
#define VU_FLAG_NEED_REPLY      (1u << 3)

#define VU_F_PROTOCOL_FEATURES  30      /* virtio feature bit */
#define VU_F_LOG_ALL            26      /* VHOST_F_LOG_ALL: log every write */
#define VU_VRING_F_LOG          1u      /* SET_VRING_ADDR flags: log the used ring */

#define VU_PROTOCOL_F_MQ            0
#define VU_PROTOCOL_F_LOG_SHMFD     1
#define VU_PROTOCOL_F_RARP          2
#define VU_PROTOCOL_F_REPLY_ACK     3
#define VU_PROTOCOL_F_MTU           4
#define VU_PROTOCOL_F_BACKEND_REQ   5
#define VU_PROTOCOL_F_CONFIG        9
#define VU_PROTOCOL_F_INFLIGHT_SHMFD 12
#define VU_PROTOCOL_F_RESET_DEVICE  13
#define VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15
#define VU_PROTOCOL_F_STATUS        16

/* Requests the back-end sends on the back-end channel (SET_BACKEND_REQ_FD). */
#define VU_BACKEND_CONFIG_CHANGE_MSG 2

/* virtio device status bits (virtio 1.2 §2.1) we look at. */
#define VU_STATUS_DRIVER_OK     4
#define VU_STATUS_NEEDS_RESET   64

#define VU_VRING_IDX_MASK       0xffu
#define VU_VRING_NOFD_MASK      (1u << 8)

#define VU_MAX_FDS              8
#define VU_MAX_PAYLOAD          4096    /* larger than any request we accept */
#define VU_CONFIG_SPACE_MAX     256

struct vu_hdr {
	uint32_t request;
	uint32_t flags;
	uint32_t size;
} __attribute__((packed));

struct vu_vring_state {
	uint32_t index;
	uint32_t num;
};

struct vu_vring_addr {
	uint32_t index;
	uint32_t flags;
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
};

struct vu_memory {
	uint32_t nregions;
	uint32_t padding;
	struct mem_region_desc regions[MEM_MAX_REGIONS];
};

/* ADD_MEM_REG / REM_MEM_REG: "single memory region description". */
struct vu_mem_reg {
	uint64_t padding;
	struct mem_region_desc region;
};

struct vu_inflight {
	uint64_t mmap_size;
	uint64_t mmap_offset;
	uint16_t num_queues;
	uint16_t queue_size;
};

struct vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t region[VU_CONFIG_SPACE_MAX];
};

struct vu_msg {
	struct vu_hdr hdr;
	union {
		uint64_t u64;
		struct vu_vring_state state;
		struct vu_vring_addr addr;
		struct vu_memory memory;
		struct vu_mem_reg mem_reg;
		struct vu_config config;
		struct vu_inflight inflight;
		uint8_t bytes[VU_MAX_PAYLOAD];
	} payload;
	int fds[VU_MAX_FDS];
	unsigned nfds;
};

/* Wire layouts (vhost-user.rst "Message types"): sizes as on the wire. */
_Static_assert(sizeof(struct vu_hdr) == 12, "vhost-user header");
_Static_assert(sizeof(struct vu_vring_state) == 8, "vring state");
_Static_assert(sizeof(struct vu_vring_addr) == 40, "vring address");
_Static_assert(sizeof(struct mem_region_desc) == 32, "memory region description");
_Static_assert(offsetof(struct vu_memory, regions) == 8, "memory regions description");
_Static_assert(sizeof(struct vu_mem_reg) == 40, "single memory region description");
_Static_assert(offsetof(struct vu_inflight, num_queues) == 16 &&
	       offsetof(struct vu_inflight, queue_size) == 18, "inflight description");
_Static_assert(offsetof(struct vu_config, region) == 12, "device config space");

/* An inflight region (GET/SET_INFLIGHT_FD), mapped. */
struct vu_inflight_set {
	void *map;
	size_t len;
	int fd;
	uint16_t nq, qs;
};

/* A dirty log the front-end shared (SET_LOG_BASE), mapped. */
struct vu_dirty_log {
	struct vq_log log;              /* what the rings mark */
	void *map;
	size_t maplen;
};

struct engine;

/* One front-end connection, bound to one device. */
struct vu_conn {
	int fd;
	struct vblk *blk;
	struct engine *eng;
	unsigned thread_hint;           /* engine placement of queue 0 */
	uint64_t features;              /* negotiated virtio features */
	uint64_t protocol_features;
	bool features_set;
	bool owner;
	struct mem_table *mem;
	/* inflight tracking region (GET/SET_INFLIGHT_FD) */
	int inflight_fd;
	void *inflight_map;
	uint64_t infl_started;          /* queues started with an inflight
					 * region on this connection */
	size_t inflight_len;
	uint16_t inflight_nq, inflight_qs;
	int reply_fd;                   /* fd to send with the next reply */
	int backend_fd;                 /* back-end channel (SET_BACKEND_REQ_FD), -1 = none */
	struct vu_dirty_log *log;       /* migration's dirty log, NULL = none */
	int log_fd;                     /* SET_LOG_FD's eventfd, -1 = none */
	uint64_t staged_features;       /* SET_FEATURES, applied with the rings stopped */
	/* SET_VRING_CALL/ERR from a front-end that does not own the queues
	 * yet (QEMU sends them when it sets the device up, long before a
	 * migration's destination starts): installed when it takes them. */
	int held_call[VDEV_MAX_QUEUES], held_err[VDEV_MAX_QUEUES];
	/* Stopping rings without holding the control thread: the engine
	 * signals detach_fd (-1: stop synchronously) when a ring let go. */
	int detach_fd;
	bool parked;                    /* rx waits for rings to stop (vu_resume) */
	bool closing;                   /* going away once its rings stopped */
	uint64_t restart_mask;          /* rings to start again after the parked message */
	uint8_t status;                 /* virtio device status (SET_STATUS) */
	/* prepared by a handler, applied by its commit with the rings stopped */
	struct mem_table *staged_mem;
	struct vu_inflight_set staged_infl;
	struct vu_dirty_log *staged_log;
	/* receive state: a message may arrive in pieces */
	struct vu_msg rx;
	size_t rx_len;                  /* bytes of header+payload so far */
	char err[VDEV_ERR_MAX];         /* why the connection failed */
};

/* Wire helpers (vu_msg.c). */
const char *vu_request_name(uint32_t req);
void vu_msg_close_fds(struct vu_msg *m);
/* Read what the socket has: 1 when conn->rx holds a whole message, 0 when
 * more is needed (EAGAIN), -errno when the connection must close (EOF,
 * oversized message, too many fds). */
int vu_recv(struct vu_conn *c);
/* Send m's header and payload with nfds fds (m->fds are the received ones
 * and are not sent); 0 or -errno. */
int vu_send(int fd, const struct vu_msg *m, const int *fds, unsigned nfds);

/* Protocol (vu_dev.c). */
void vu_conn_init(struct vu_conn *c, int fd, struct vblk *blk, struct engine *eng,
		  unsigned thread_hint);
/* Handle the message in c->rx (whose fds it consumes).  0 to go on,
 * -errno to drop the connection (reason in c->err).  A message that must
 * wait for rings to stop (GET_VRING_BASE, a new memory table...) while
 * c->detach_fd is set is parked instead: c->parked, m kept whole, nothing
 * more may be read from the socket until vu_resume() has run it. */
int vu_dispatch(struct vu_conn *c, struct vu_msg *m);
/* detach_fd fired: 1 while rings are still stopping, 0 once the parked
 * message (if any) has run (or, closing, nothing is left to wait for),
 * -errno to drop the connection. */
int vu_resume(struct vu_conn *c);
/* The front-end is going: stop every ring without waiting (c->closing).
 * True when nothing is left running, so vu_conn_teardown() will not wait;
 * else call again when detach_fd fires. */
bool vu_conn_close_start(struct vu_conn *c);
/* Stop every ring, release memory and fds; the device keeps its data. */
void vu_conn_teardown(struct vu_conn *c);
/* Run fn(arg) with every running ring of c stopped (requests in flight
 * drained), then restart them: for changes the engine must not see half
 * done (a backend resize).  fn's result, or a ring's restart failure. */
int vu_conn_quiesce(struct vu_conn *c, int (*fn)(void *arg), void *arg);
/* Tell the front-end the device's config space changed (a resize), over the
 * back-end channel.  False (and nothing sent) if the front-end gave none or
 * did not negotiate it; the front-end then sees the change at its next
 * GET_CONFIG. */
bool vu_config_changed(struct vu_conn *c);

#endif

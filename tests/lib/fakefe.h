/* fakefe: a small vhost-user FRONT-END (the role QEMU plays) for tests.
 *
 * It owns: one UNIX socket connection to a vhost-user-blk back-end, the
 * "guest" memory (memfd, optionally split into several regions whose
 * guest-physical and front-end user addresses differ), and the driver side of
 * the virtqueues living in that memory: split ones, or packed ones (virtio
 * 1.2, 2.8) when VIRTIO_F_RING_PACKED is negotiated (opts.packed asks for
 * it).  The request API (ffe_submit, ffe_blk_read, ...) is the same for both.  Everything waits with a timeout
 * (FFE_TIMEOUT_MS by default): a test never hangs on a broken back-end.
 *
 * Threads: one struct ffe is driven by one thread for the socket; each
 * struct ffe_vq may then be driven by its own thread (ring ops on different
 * queues are independent).  ffe_alloc() is thread-safe.
 *
 * Trust: nothing the back-end writes is trusted (used ids, lengths, reply
 * sizes are checked), since hostile tests make back-ends misbehave too.
 * Functions return 0 / a positive value, or -errno; the last error sentence
 * is kept in fe->err for test messages.
 */
#ifndef FAKEFE_H
#define FAKEFE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "vu_wire.h"          /* the protocol constants and structs */

#define FFE_TIMEOUT_MS          5000
#define FFE_MAX_REGIONS         64      /* the first 8 (opts.nregions), then hot-added */
#define FFE_MAX_QUEUES          16
#define FFE_MAX_QSIZE           1024
#define FFE_MAX_DESCS           512     /* per request (direct or indirect) */
#define FFE_MAX_FDS             FFE_MSG_FDS_MAX
#define FFE_MSG_MAX             (64 * 1024)

/* ---- deadlines ---------------------------------------------------------- */

/* A deadline that does not count time the process could not run.  On the
 * 2-vCPU test VMs a thread can get no cpu for seconds while other threads
 * spin (2-36 s measured, other processes starved alike), and the back-end
 * under test is starved with it: a wait that timed out then would report the
 * machine's stall as the back-end's fault.  Waits sleep in slices of at most
 * FFE_SLICE_MS; a slice that ends over FFE_STALL_MS later than asked gives
 * the difference back.  A back-end that hangs still times out: the waiting
 * thread keeps running then, in time. */
#define FFE_SLICE_MS            100
#define FFE_STALL_MS            250

struct ffe_deadline {
	int64_t end;            /* CLOCK_MONOTONIC ms, moved on by stalls */
	int64_t last;           /* when the last slice was handed out */
	int slice;              /* its length */
};

void ffe_deadline_start(struct ffe_deadline *d, int ms);
/* The next slice to sleep (1..FFE_SLICE_MS ms), or 0 when the time is up. */
int ffe_deadline_left(struct ffe_deadline *d);
int64_t ffe_now_ms(void);

/* ---- objects ------------------------------------------------------------ */

struct ffe_region {
	uint64_t gpa, size, uva, mmap_offset;
	int fd;                 /* fd sent for it (may be shared) */
	uint8_t *hva;           /* our mapping of its first byte */
	uint64_t next_free;     /* bump allocator cursor, bytes from start */
	bool gone;              /* removed by REM_MEM_REG: no buffers from it
				 * unless a queue is pinned there */
};

struct ffe_buf {
	uint64_t gpa;
	void *hva;
	size_t len;
};

struct ffe_vq;
struct ffe_log;

/* One request: the device-readable byte stream (virtio-blk header, then OUT
 * data) and the device-writable one (IN data, then status).  The layout
 * says how those streams are cut into descriptors. */
struct ffe_req {
	const void *rd;
	size_t rd_len;
	void *wr;               /* filled on completion */
	size_t wr_len;
	/* descriptor sizes for each stream; the last one takes the rest.
	 * NULL/0: one descriptor per stream. */
	const uint32_t *rd_cuts;
	unsigned n_rd_cuts;
	const uint32_t *wr_cuts;
	unsigned n_wr_cuts;
	bool indirect;
	/* where each descriptor's buffer lies in the queue's scratch: aligned
	 * to buf_align (0: 64), then buf_skew bytes further (to make buffers
	 * straddle pages) */
	uint32_t buf_align;
	uint32_t buf_skew;

	/* filled by the library */
	uint16_t head;                  /* split: head descriptor; packed: buffer id */
	bool done;
	uint32_t used_len;
	uint16_t used_idx;              /* used ring index it completed at
					 * (packed: FFE_PACKED_BASE of the used
					 * descriptor's offset and wrap) */
	uint16_t used_flags;            /* packed: the used descriptor's flags */
	unsigned nring;                 /* ring descriptors taken (packed: their
					 * ring offsets, in order) */
	uint16_t ring_descs[FFE_MAX_DESCS];
	unsigned nwseg;                 /* writable pieces to copy back */
	struct { void *hva; uint32_t len; } wseg[FFE_MAX_DESCS];
	/* packed: the buffers as submitted (ffe_req_segs), since the device
	 * writes used descriptors over any descriptor of the ring in flight */
	unsigned pk_nseg;
	struct { uint64_t gpa; uint32_t len; uint8_t kind; } pk_seg[FFE_MAX_DESCS + 1];
};

struct ffe_vq {
	struct ffe *fe;
	unsigned index;
	unsigned num;
	bool started;
	int kickfd, callfd;
	struct ffe_desc *desc;
	uint16_t *avail;        /* flags, idx, ring[num], used_event */
	uint8_t *used;          /* flags, idx, elems[num], avail_event */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint64_t desc_uva, avail_uva, used_uva;

	uint16_t avail_idx;     /* next avail index we publish */
	uint16_t last_used;     /* next used index we consume */
	uint16_t kicked_idx;    /* avail idx at the last kick decision */
	bool have_base;         /* stop_base holds GET_VRING_BASE's answer */
	uint16_t stop_base;
	uint16_t free_stack[FFE_MAX_QSIZE];
	unsigned nfree;
	struct ffe_req *inflight[FFE_MAX_QSIZE];
	unsigned ninflight;

	/* completions not matching an in-flight head (hostile back-end) */
	unsigned bogus_used;
	uint64_t completed;     /* completions matched to an in-flight request */
	uint64_t calls;         /* call eventfd signals seen */
	uint64_t kicks;         /* kicks sent */

	/* options */
	bool strict_calls;      /* see completions only after a call signal */
	bool always_kick;       /* ignore NO_NOTIFY / avail_event */
	bool no_interrupt;      /* set VRING_AVAIL_F_NO_INTERRUPT */
	bool log_ring;          /* SET_VRING_ADDR with VRING_F_LOG, log = used gpa */

	/* ---- packed queues (packed true; desc above then points at the same
	 * ring as pdesc, avail/used are NULL, and the avail and used
	 * addresses name the Driver Area and the Device Area) ---- */
	bool packed;
	struct ffe_pdesc *pdesc;                /* the descriptor ring */
	struct ffe_event_suppress *drv_event;   /* Driver Area: we write it */
	struct ffe_event_suppress *dev_event;   /* Device Area: the device does */
	/* descriptors made available / consumed as used since the ring began,
	 * counting from the start base: offset = count % num, wrap counter =
	 * 1 ^ ((count / num) & 1) */
	uint64_t pk_avail, pk_used, pk_kicked;
	unsigned pk_free;                       /* ring descriptors not in flight */
	uint16_t pk_chain[FFE_MAX_QSIZE];       /* ring descriptors of buffer id */
	/* Driver Area policy: -1 automatic (DISABLE with no_interrupt, DESC at
	 * the next used offset with EVENT_IDX, else ENABLE); else the test owns
	 * the Driver Area (ffe_vq_set_call_event) */
	int pk_call_mode;
	/* buffer id only in the last descriptor of a chain (the others carry
	 * another id), as the spec places it; default: in every descriptor,
	 * as Linux and QEMU do */
	bool pk_id_last_only;
	uint16_t pk_start_base;                 /* SET_VRING_BASE of the last start */

	/* per-queue scratch memory, one piece per region, reset when idle */
	struct { uint64_t off, size, cur; } scratch[FFE_MAX_REGIONS];
	unsigned scratch_rr;
	unsigned scratch_only;  /* 0, or 1 + the only region buffers come from */
};

struct ffe_opts {
	size_t mem_size;        /* guest memory; default 64 MiB */
	unsigned nregions;      /* 1..8 (FFE_MEM_TABLE_MAX), default 1 */
	bool translate;         /* gpa != uva, nonzero mmap_offset (forced if nregions > 1) */
	bool fd_per_region;     /* one memfd per region instead of one shared file */
	bool contiguous_gpa;    /* regions back to back in gpa (but not in the file) */
	size_t scratch_per_queue; /* default 4 MiB */
	int timeout_ms;         /* default FFE_TIMEOUT_MS */
	/* negotiate INFLIGHT_SHMFD; ffe_setup then gets an inflight region
	 * for its queues and sets it, as QEMU does on every start */
	bool inflight;
	/* negotiate VIRTIO_F_RING_PACKED (added to the wanted features; a
	 * back-end that does not offer it fails ffe_negotiate with -ENOTSUP):
	 * every queue is then a packed one */
	bool packed;
	/* protocol features negotiated besides MQ, REPLY_ACK, CONFIG (and
	 * INFLIGHT_SHMFD above) when the back-end offers them, e.g.
	 * CONFIGURE_MEM_SLOTS, BACKEND_REQ, STATUS */
	uint64_t extra_protocol_features;
};

struct ffe {
	int sock;
	char path[108];
	struct ffe_opts opts;
	int timeout_ms;

	int memfd[FFE_MAX_REGIONS];
	uint8_t *map[FFE_MAX_REGIONS];
	size_t map_size[FFE_MAX_REGIONS];
	unsigned nmaps;
	struct ffe_region r[FFE_MAX_REGIONS];
	unsigned nregions;
	pthread_mutex_t alloc_lock;

	uint64_t dev_features;          /* offered by GET_FEATURES */
	uint64_t features;              /* acked by SET_FEATURES */
	uint64_t dev_protocol_features;
	uint64_t protocol_features;
	uint64_t want_features;         /* asked of ffe_negotiate (reused on resume) */
	bool has_protocol_features;
	bool use_reply_ack;             /* set NEED_REPLY on messages without reply */
	unsigned queue_num;             /* GET_QUEUE_NUM (or 1) */
	struct ffe_blk_config cfg;
	uint32_t cfg_len;               /* bytes returned by GET_CONFIG */

	/* inflight region from GET_INFLIGHT_FD, kept across reconnections
	 * (like QEMU's struct vhost_inflight) */
	int inflight_fd;                /* -1: none */
	void *inflight_map;
	uint64_t inflight_size, inflight_offset;
	uint16_t inflight_nq, inflight_qs;

	/* sending: cut every message into pieces of send_chunk bytes (0: whole),
	 * send_gap_us apart, fds with the first piece */
	unsigned send_chunk;
	unsigned send_gap_us;

	/* our end of the back-end channel (SET_BACKEND_REQ_FD), -1: none */
	int backend_fd;

	/* the dirty log given by the last accepted SET_LOG_BASE, and the one
	 * before it (kept so a test can see that it gets no more bits) */
	struct ffe_log *log, *log_old;

	struct ffe_vq vq[FFE_MAX_QUEUES];
	char err[256];
};

/* A received message (reply or anything the back-end sent). */
struct ffe_msg {
	struct ffe_hdr hdr;
	uint8_t payload[FFE_MSG_MAX];
	size_t got;             /* payload bytes actually read */
	int fds[FFE_MAX_FDS];
	unsigned nfds;
};

/* ---- connection and memory ---------------------------------------------- */

void ffe_opts_init(struct ffe_opts *o);
/* Allocate memory (per opts; NULL = defaults) and connect to path, retrying
 * ECONNREFUSED/ENOENT until the timeout.  NULL on failure (errno set; a
 * sentence on stderr). */
struct ffe *ffe_open(const char *path, const struct ffe_opts *opts);
/* Close the socket, the eventfds and the memory. */
void ffe_close(struct ffe *fe);
/* Close the socket (and eventfds) only; memory and rings stay. */
void ffe_disconnect(struct ffe *fe);
/* Connect again after ffe_disconnect. */
int ffe_reconnect(struct ffe *fe);

/* Guest memory allocator: region -1 = round robin.  Thread-safe. */
int ffe_alloc(struct ffe *fe, size_t len, size_t align, int region,
	      struct ffe_buf *out);
/* Our pointer for a guest-physical range, NULL if not inside one region. */
void *ffe_gpa_to_hva(struct ffe *fe, uint64_t gpa, size_t len);
uint64_t ffe_hva_to_gpa(struct ffe *fe, const void *hva);
uint64_t ffe_hva_to_uva(struct ffe *fe, const void *hva);

/* ---- messages ----------------------------------------------------------- */

/* Send one message as given (any header fields, any bytes, any fds). */
int ffe_send_raw(struct ffe *fe, uint32_t request, uint32_t flags,
		 uint32_t size, const void *payload, size_t payload_len,
		 const int *fds, unsigned nfds);
/* Read one message with a timeout.  -ETIMEDOUT, -ECONNRESET (peer closed),
 * -EPROTO (short/odd), else 0.  Payload beyond FFE_MSG_MAX is drained. */
int ffe_recv_raw(struct ffe *fe, struct ffe_msg *m, int timeout_ms);
/* Release fds received in m. */
void ffe_msg_close_fds(struct ffe_msg *m);

/* Send a message, honouring REPLY_ACK when fe->use_reply_ack: returns 0,
 * the positive ack value (back-end refused), or -errno. */
int ffe_call(struct ffe *fe, uint32_t request, const void *payload,
	     uint32_t size, const int *fds, unsigned nfds);
/* Send a request that has a reply, check the reply header (same request,
 * REPLY flag) and copy up to reply_len bytes.  Returns payload size or -errno. */
int ffe_call_reply(struct ffe *fe, uint32_t request, const void *payload,
		   uint32_t size, void *reply, uint32_t reply_len);

int ffe_get_u64(struct ffe *fe, uint32_t request, uint64_t *val);
int ffe_set_u64(struct ffe *fe, uint32_t request, uint64_t val);

/* Does the connection answer?  Sends GET_FEATURES: 1 = replied,
 * 0 = connection closed by the peer, -ETIMEDOUT = hung. */
int ffe_probe(struct ffe *fe);
/* Drain: wait up to timeout for the peer to close; 1 closed, 0 still open. */
int ffe_wait_closed(struct ffe *fe, int timeout_ms);

/* Negotiate: GET_FEATURES, GET/SET_PROTOCOL_FEATURES (MQ, REPLY_ACK, CONFIG
 * among those offered; only if want has PROTOCOL_FEATURES), GET_QUEUE_NUM, SET_OWNER, GET_CONFIG, SET_FEATURES
 * (want & offered; want 0 = a sensible default).  0 or -errno. */
int ffe_negotiate(struct ffe *fe, uint64_t want_features);
/* Default wanted features: VERSION_1, INDIRECT, PROTOCOL_FEATURES and the
 * virtio-blk ones; event_idx adds EVENT_IDX. */
uint64_t ffe_default_features(bool event_idx);
int ffe_set_mem_table(struct ffe *fe);
/* Fill a SET_MEM_TABLE payload for the current regions (for raw variants). */
size_t ffe_mem_table_payload(struct ffe *fe, void *buf, int *fds);
int ffe_get_config(struct ffe *fe, uint32_t offset, void *buf, uint32_t len);

/* Set up queue i (fresh rings, base 0) and start it: NUM, BASE, ADDR,
 * CALL, KICK, ENABLE.  num must be a power of two <= 1024 (packed: any
 * size 1..1024).  The queue is packed if RING_PACKED was negotiated; a
 * fresh one starts at offset 0 with wrap counter 1 (base 0x8000), and a
 * packed base given to ffe_vq_start_at is FFE_PACKED_BASE(offset, wrap). */
int ffe_vq_start(struct ffe *fe, unsigned i, unsigned num);
/* Same, with every index (avail, used, SET_VRING_BASE) starting at base. */
int ffe_vq_start_at(struct ffe *fe, unsigned i, unsigned num, uint16_t base);
/* Restart queue i (after ffe_vq_stop and/or ffe_reconnect) keeping ring
 * memory and indices: SET_VRING_BASE = what GET_VRING_BASE returned, else
 * our avail idx. */
int ffe_vq_resume(struct ffe *fe, unsigned i);
/* Same, with SET_VRING_BASE = base. */
int ffe_vq_resume_at(struct ffe *fe, unsigned i, uint16_t base);
/* GET_VRING_BASE: the back-end stops the ring and returns its index. */
int ffe_vq_stop(struct ffe *fe, unsigned i, uint32_t *base);
int ffe_vq_enable(struct ffe *fe, unsigned i, bool on);
/* Convenience: negotiate + (BACKEND_REQ negotiated: SET_BACKEND_REQ_FD)
 * + (opts.inflight: GET_INFLIGHT_FD + SET_INFLIGHT_FD) + memory (SET_MEM_TABLE,
 * or with CONFIGURE_MEM_SLOTS negotiated one ADD_MEM_REG per region, as QEMU
 * does) + start nq queues of size num. */
int ffe_setup(struct ffe *fe, uint64_t want_features, unsigned nq, unsigned num);

/* ---- memory slots (CONFIGURE_MEM_SLOTS), status, the back-end channel ---- */

/* A new region of size bytes (a multiple of 64 KiB) in a memfd of its own,
 * at guest address gpa (0: the next free GiB above 64 GiB), starting 64 KiB
 * into its file, at a user address no other region has.  Only ours: send it
 * with ffe_add_mem_reg.  Its index, or -errno.  Not thread-safe with other
 * calls that add regions; readers of fe->r on other threads see it whole. */
int ffe_region_new(struct ffe *fe, uint64_t gpa, uint64_t size);
/* The ADD/REM_MEM_REG payload for region i. */
void ffe_mem_reg_of(struct ffe *fe, unsigned i, struct ffe_mem_reg *out);
/* ADD_MEM_REG of region i with its fd; REM_MEM_REG of it (with_fd: its fd
 * along, as the spec allows).  0, the ack value (refused), or -errno.  A
 * region removed (acked, or sent without REPLY_ACK) gives no more buffers
 * (ffe_alloc, ffe_vq_alloc) until added again. */
int ffe_add_mem_reg(struct ffe *fe, unsigned i);
int ffe_rem_mem_reg(struct ffe *fe, unsigned i, bool with_fd);
int ffe_get_max_mem_slots(struct ffe *fe, uint64_t *n);
/* SET_BACKEND_REQ_FD with one end of a new socketpair; the other end is
 * kept in fe->backend_fd (closed on disconnect).  0, ack value or -errno. */
int ffe_set_backend_req_fd(struct ffe *fe);
/* Wait for one request of the back-end on its channel: 0 (in *m; acked with
 * 0 if it asked for a reply), -ETIMEDOUT, -ECONNRESET, -ENOTCONN. */
int ffe_backend_recv(struct ffe *fe, struct ffe_msg *m, int timeout_ms);
int ffe_set_status(struct ffe *fe, uint8_t status);
int ffe_get_status(struct ffe *fe, uint8_t *status);
/* Buffers of vq's requests from region k only (len bytes of it are taken
 * for this queue the first time); k < 0: every region again.  Call it from
 * the thread driving vq, with no request of vq in flight. */
int ffe_vq_scratch_region(struct ffe_vq *vq, int k, size_t len);

/* ---- inflight tracking and back-end restarts ------------------------------ */

/* GET_INFLIGHT_FD for num_queues queues of queue_size: keeps the fd and maps
 * it (replacing a previous region).  0, -errno (-ECONNRESET: the back-end
 * dropped us), -EPROTO (odd reply: no fd, sizes that do not fit). */
int ffe_get_inflight_fd(struct ffe *fe, uint16_t num_queues, uint16_t queue_size);
/* SET_INFLIGHT_FD with the kept region: 0, ack value, or -errno. */
int ffe_set_inflight_fd(struct ffe *fe);
/* The kept region of queue q (NULL if none or q outside it). */
struct ffe_inflight_queue *ffe_inflight_q(struct ffe *fe, unsigned q);
/* Forget the region (unmap, close). */
void ffe_inflight_drop(struct ffe *fe);

/* Carry on after the back-end died, as QEMU does with reconnect=1: there is
 * no GET_VRING_BASE to ask, so every started split queue below nq restarts
 * with base = the used index it finds in the ring, and every packed one
 * with the base of its last start (QEMU keeps no packed position in guest
 * memory to go by: virtio_queue_packed_restore_last_avail_idx does
 * nothing, so the back-end must find its place from the inflight region).  Reconnects (waiting for the
 * new back-end up to the timeout), negotiates the same features, sends
 * SET_INFLIGHT_FD with the kept region (if any), SET_MEM_TABLE, and
 * programs the rings again without touching them: requests in flight stay
 * posted and complete later.  No kick is sent (QEMU sends none either).
 * 0 or -errno. */
int ffe_resume_after_crash(struct ffe *fe, unsigned nq);

/* ---- the dirty log (LOG_SHMFD, VHOST_F_LOG_ALL) ---------------------------- */

/* A log bitmap in a memfd of its own ("fakefe-log-GEN" in /proc/self/maps):
 * the bytes [offset, offset + size) of a file of file_size bytes, all of
 * which we map; the bytes outside the range stay zero unless the back-end
 * writes where it must not. */
struct ffe_log {
	int fd;
	uint8_t *file;          /* our mapping of the whole file */
	uint64_t file_size;
	uint64_t size, offset;  /* what SET_LOG_BASE says */
	unsigned gen;
};

/* Bytes of log covering every region's guest-physical range, rounded up to
 * 8 as QEMU does (vhost_get_log_size: 64-page chunks). */
uint64_t ffe_log_size_for(struct ffe *fe);
/* A log of size bytes at offset in a file of file_size bytes (0: offset +
 * size + one page of guard).  NULL on failure (errno set). */
struct ffe_log *ffe_log_new(uint64_t size, uint64_t offset, uint64_t file_size);
void ffe_log_free(struct ffe_log *l);
/* The bitmap (its first byte) and page k's bit (false beyond the log). */
static inline uint8_t *ffe_log_bits(const struct ffe_log *l) { return l->file + l->offset; }
bool ffe_log_page(const struct ffe_log *l, uint64_t page);
/* Is every page of [gpa, gpa+len) marked / is none?  (len 0: false / true) */
bool ffe_log_all_set(const struct ffe_log *l, uint64_t gpa, uint64_t len);
bool ffe_log_none_set(const struct ffe_log *l, uint64_t gpa, uint64_t len);
/* The first marked page >= from, or UINT64_MAX. */
uint64_t ffe_log_next(const struct ffe_log *l, uint64_t from);
uint64_t ffe_log_count(const struct ffe_log *l);
/* Zero the bitmap (atomically per byte: the back-end may be writing). */
void ffe_log_clear(struct ffe_log *l);
/* The first byte of the file outside the bitmap that is not zero, or -1. */
int64_t ffe_log_guard_dirty(const struct ffe_log *l);

/* SET_LOG_BASE with l (NULL: a new log of ffe_log_size_for bytes), sent as
 * QEMU does (no NEED_REPLY) with its fd; reads the reply, which the
 * back-end always sends: 0 (accepted: l becomes fe->log, the previous one
 * fe->log_old), the positive value it replied (refused), -EPROTO (a reply
 * that is not SET_LOG_BASE's u64), or -errno (-ECONNRESET: dropped).  On
 * failure l stays the caller's. */
int ffe_set_log_base(struct ffe *fe, struct ffe_log *l);
/* SET_LOG_FD with a new eventfd (ours closed after sending). */
int ffe_set_log_fd(struct ffe *fe);
/* SET_FEATURES with VHOST_F_LOG_ALL set or cleared (the other features as
 * negotiated).  0, ack value or -errno. */
int ffe_set_log_all(struct ffe *fe, bool on);
/* SET_VRING_ADDR of queue i again (rings may run), with or without
 * VRING_F_LOG and the used ring's gpa as log_guest_addr; kept for later
 * (re)starts of the queue. */
int ffe_vq_set_log(struct ffe *fe, unsigned i, bool on);
/* What QEMU does when migration starts / ends with every queue running:
 * SET_FEATURES with LOG_ALL, then SET_VRING_ADDR with VRING_F_LOG for the
 * started queues below nq (and the reverse).  Needs a log base set. */
int ffe_log_start(struct ffe *fe, unsigned nq);
int ffe_log_stop(struct ffe *fe, unsigned nq);

/* One buffer of a request as its descriptors give it. */
enum ffe_seg_kind { FFE_SEG_RD, FFE_SEG_WR, FFE_SEG_TABLE };

struct ffe_seg {
	uint64_t gpa;
	uint32_t len;
	uint8_t kind;
};

/* The buffers of r (the indirect table too), read back from the
 * descriptors: call it after ffe_submit, before the request completes (or
 * at least before the next submit); on a packed ring, as recorded at
 * submission (the device may already have written used descriptors over
 * the chain).  Count, or -E2BIG if more than max. */
int ffe_req_segs(struct ffe_vq *vq, const struct ffe_req *r, struct ffe_seg *out,
		 unsigned max);
/* The device-written part of the used ring: flags, idx, the elements and,
 * with EVENT_IDX, avail_event. */
void ffe_vq_used_area(struct ffe_vq *vq, uint64_t *gpa, uint64_t *len);
/* Guest page numbers of [gpa, gpa+len) (len > 0). */
static inline uint64_t ffe_page_first(uint64_t gpa) { return gpa / FFE_LOG_PAGE; }
static inline uint64_t ffe_page_last(uint64_t gpa, uint64_t len)
{
	return (gpa + len - 1) / FFE_LOG_PAGE;
}

/* ---- ring driver -------------------------------------------------------- */

/* Build the request into the ring and publish it (no kick). */
int ffe_submit(struct ffe_vq *vq, struct ffe_req *r);
/* Kick unless the device asked not to be (NO_NOTIFY / avail_event). */
int ffe_kick(struct ffe_vq *vq);
/* Collect completions; returns how many were consumed. */
int ffe_poll_used(struct ffe_vq *vq);
/* Wait until r completes; 0 or -ETIMEDOUT. */
int ffe_wait(struct ffe_vq *vq, struct ffe_req *r, int timeout_ms);
/* submit + kick + wait */
int ffe_run(struct ffe_vq *vq, struct ffe_req *r);

/* ---- packed queues: state and raw access for hostile tests ---------------- */

/* The driver's next available position and the next used one it expects,
 * as FFE_PACKED_BASE values (offset | wrap << 15). */
uint16_t ffe_vq_pk_avail_pos(const struct ffe_vq *vq);
uint16_t ffe_vq_pk_used_pos(const struct ffe_vq *vq);
/* Flags bits marking a descriptor available for wrap counter w. */
static inline uint16_t ffe_pk_avail_bits(bool w)
{
	return w ? FFE_PDESC_F_AVAIL : FFE_PDESC_F_USED;
}
/* Descriptor at ring offset i (mod num). */
struct ffe_pdesc *ffe_vq_pdesc(struct ffe_vq *vq, unsigned i);
/* Store flags of descriptor i with release order (what makes it visible). */
void ffe_vq_pdesc_set_flags(struct ffe_vq *vq, unsigned i, uint16_t flags);
/* The driver's avail position moved on by n (after raw descriptors were
 * written there): the ring space is taken for good. */
void ffe_vq_pk_advance(struct ffe_vq *vq, unsigned n);
/* Is the descriptor at ring offset i used for wrap counter w?  (its flags
 * in *flags if not NULL) */
bool ffe_vq_pk_is_used(struct ffe_vq *vq, unsigned i, bool w, uint16_t *flags);
/* The Driver Area, owned by the test from now on (pk_call_mode = mode):
 * FFE_RING_EVENT_* and, for DESC, the position (FFE_PACKED_BASE). */
void ffe_vq_set_call_event(struct ffe_vq *vq, int mode, uint16_t off_wrap);
/* The Device Area as the device last wrote it. */
struct ffe_event_suppress ffe_vq_dev_event(struct ffe_vq *vq);
/* Take pending call signals (counted in vq->calls): how many came. */
uint64_t ffe_vq_take_calls(struct ffe_vq *vq);

/* raw ring access for hostile tests (split queues) */
struct ffe_desc *ffe_vq_desc(struct ffe_vq *vq, unsigned i);
void ffe_vq_publish(struct ffe_vq *vq, uint16_t head);     /* ring[idx]=head; idx++ */
void ffe_vq_set_avail_idx(struct ffe_vq *vq, uint16_t idx);
/* Split: the used ring's idx.  Packed: FFE_PACKED_BASE of the end of the
 * run of used descriptors from the driver's next used position (where the
 * device writes its next used descriptor). */
uint16_t ffe_vq_used_idx(struct ffe_vq *vq);
struct ffe_used_elem ffe_vq_used_elem(struct ffe_vq *vq, uint16_t idx);
int ffe_vq_kick_raw(struct ffe_vq *vq);
/* Wait until used idx != idx (packed: ffe_vq_used_idx); 0, or -ETIMEDOUT. */
int ffe_vq_wait_used_change(struct ffe_vq *vq, uint16_t idx, int timeout_ms);
/* Scratch memory of this queue (reset automatically when idle). */
int ffe_vq_alloc(struct ffe_vq *vq, size_t len, size_t align, struct ffe_buf *out);

/* ---- virtio-blk helpers ------------------------------------------------- */

enum ffe_layout_kind {
	FFE_L_NATURAL = 0,      /* header | data (split every seg bytes) | status */
	FFE_L_MERGED,           /* one readable + one writable descriptor */
	FFE_L_CHOPPED,          /* every descriptor `seg` bytes (header split too) */
};

struct ffe_layout {
	enum ffe_layout_kind kind;
	uint32_t seg;           /* NATURAL: max data bytes per desc (0: one); CHOPPED: desc size */
	bool indirect;
};

/* A prepared virtio-blk request (for several in flight at once). */
struct ffe_blk_io {
	struct ffe_req req;
	uint8_t *rd, *wr;               /* streams (owned) */
	size_t in_len;
	uint32_t rd_cuts[FFE_MAX_DESCS], wr_cuts[FFE_MAX_DESCS];
};

/* Prepare (not submit) a request; io->req then goes to ffe_submit. */
int ffe_blk_prep(struct ffe_blk_io *io, uint32_t type, uint64_t sector,
		 const void *out, size_t out_len, size_t in_len,
		 const struct ffe_layout *lay);
/* After completion: the status byte, and the IN data (in_len bytes). */
int ffe_blk_status(const struct ffe_blk_io *io);
static inline void *ffe_blk_in(const struct ffe_blk_io *io) { return io->wr; }
/* Free the streams; if the request is still in flight (timed out) the
 * queue forgets it first. */
void ffe_blk_io_release(struct ffe_vq *vq, struct ffe_blk_io *io);

/* Any request: type, sector, out data (OUT/DISCARD/WZ payload) or in buffer.
 * Returns the status byte (>= 0) or -errno; *used_len if non-NULL. */
int ffe_blk_req(struct ffe_vq *vq, uint32_t type, uint64_t sector,
		const void *out, size_t out_len, void *in, size_t in_len,
		const struct ffe_layout *lay, uint32_t *used_len);
int ffe_blk_read(struct ffe_vq *vq, uint64_t sector, void *buf, size_t len,
		 const struct ffe_layout *lay);
int ffe_blk_write(struct ffe_vq *vq, uint64_t sector, const void *buf,
		  size_t len, const struct ffe_layout *lay);
int ffe_blk_flush(struct ffe_vq *vq);
int ffe_blk_get_id(struct ffe_vq *vq, char id[FFE_BLK_ID_BYTES]);
int ffe_blk_discard(struct ffe_vq *vq, uint64_t sector, uint32_t nsect);
int ffe_blk_write_zeroes(struct ffe_vq *vq, uint64_t sector, uint32_t nsect,
			 bool unmap);

/* Fill buf with a pattern derived from (seed, byte offset); check it. */
void ffe_pattern(void *buf, size_t len, uint64_t seed);
bool ffe_pattern_ok(const void *buf, size_t len, uint64_t seed);

#endif

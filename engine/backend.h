/* Backends: where a device's blocks live, behind one ops table.
 * Called from engine threads (submit) and the control thread (open, close,
 * resize — only while no queue of the device runs).  A backend trusts its
 * caller: offsets and lengths were range-checked by the request parser. */
#ifndef VHOSTD_BACKEND_H
#define VHOSTD_BACKEND_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "params.h"

enum be_op {
	BE_OP_READ,
	BE_OP_WRITE,
	BE_OP_FLUSH,
	BE_OP_DISCARD,
	BE_OP_WRITE_ZEROES,
};

struct be_range {
	uint64_t offset, len;   /* bytes */
	bool unmap;             /* WRITE_ZEROES: may deallocate */
};

/* Work a backend hands to a worker thread because it has no io_uring form
 * (e.g. BLKDISCARD).  Storage comes with the request: nothing is allocated. */
struct be_job {
	struct be_job *next;
	int (*fn)(struct be_job *job);  /* runs on the worker; 0 or -errno */
	int fd;
	const struct be_range *ranges;
	unsigned nranges;
	void *cookie;
	struct be_ctx *ctx;
	int res;                        /* set by the worker */
	/* for backends completing on their own threads (rbd) */
	struct backend *be;
	uint64_t len;                   /* res on success: the request's bytes */
	bool is_read;                   /* a completion must carry len bytes */
	_Atomic unsigned parts;         /* pieces still running */
	_Atomic int part_err;           /* first failure of a piece, 0 */
};

struct be_io {
	enum be_op op;
	bool fua;               /* WRITE: durable on completion (write-through) */
	uint64_t offset;        /* READ/WRITE: bytes */
	uint64_t len;           /* READ/WRITE: sum of iov lengths */
	struct iovec *iov;      /* READ/WRITE: guest buffers */
	unsigned iovcnt;
	const struct be_range *ranges;  /* DISCARD/WRITE_ZEROES */
	unsigned nranges;
	struct be_job *job;     /* storage for offloaded work */
	void *cookie;           /* handed back with each completion */
};

struct io_uring;

/* Per engine thread context for asynchronous backends: the thread's
 * io_uring (only backends touch it) and its worker pool.  The engine drives
 * it through the be_ctx_* functions below and never sees an SQE or a CQE:
 * the user_data of a backend's SQE is the cookie of its be_io (NULL for an
 * SQE whose completion reports nothing), handed back by be_ctx_reap. */
struct be_ctx {
	struct io_uring *ring;          /* NULL: no io_uring on this thread */
	int ring_fd;                    /* eventfd signalled on completions, -1 = none */
	unsigned inflight;              /* completions still to come */
	uint64_t now_ns;                /* this pass's clock (be_ctx_now), 0 = not read */
	/* Run job on a worker thread; its result comes back to this engine
	 * thread as one completion for job->cookie. */
	void (*offload)(struct be_ctx *ctx, struct be_job *job);
	/* Any thread (a worker, a library's callback thread): job is finished,
	 * job->res set; it comes back to this engine thread as one completion
	 * for job->cookie (which counts one off ctx->inflight).  The engine
	 * thread is woken if it sleeps.  Takes a short lock, never blocks. */
	void (*post)(struct be_ctx *ctx, struct be_job *job);
};

/* Set up ctx with an io_uring of `entries` submission entries (and four
 * times as many completion entries).  0; BE_CTX_NO_URING when the kernel
 * offers no io_uring (ctx->ring stays NULL, *why is the errno; file backends
 * are unavailable); or -errno. */
#define BE_CTX_NO_URING 1
int be_ctx_init(struct be_ctx *ctx, unsigned entries, int *why);
void be_ctx_fini(struct be_ctx *ctx);
/* The monotonic clock in ns, read at most once per pass of the engine
 * loop (which clears now_ns), and only when some request needs it. */
uint64_t be_ctx_now(struct be_ctx *ctx);
/* Completions waiting to be reaped. */
bool be_ctx_ready(struct be_ctx *ctx);
/* Let completions signal ctx->ring_fd (before sleeping) or not. */
void be_ctx_arm(struct be_ctx *ctx, bool on);
/* Requests ctx can take now without overflowing its completion queue
 * (UINT32_MAX without io_uring: synchronous backends need no room). */
unsigned be_ctx_room(struct be_ctx *ctx);
/* Before a request: keep room in the submission queue for the biggest one,
 * so that a backend never finds it full halfway, and hand the kernel what
 * the requests before it queued once there are a few (the device starts on
 * them while the next ones are prepared). */
void be_ctx_make_room(struct be_ctx *ctx);
/* Hand queued submissions to the kernel.  False if there is no ring. */
bool be_ctx_flush(struct be_ctx *ctx);
/* Reap every completion: done(arg, cookie, res) for each one that has a
 * cookie.  Returns how many completions were consumed. */
unsigned be_ctx_reap(struct be_ctx *ctx, void (*done)(void *arg, void *cookie, int res),
		     void *arg);

struct backend;

/* Results of submit, besides -errno (done, failed) and 0 (done, ok). */
#define BE_QUEUED 1     /* completion will come through the engine */

struct be_ops {
	const char *name;
	/* Required.  Open for p; p->size may be 0 = "the file's size", the
	 * backend sets be->size.  -errno and err on failure. */
	int (*open)(const struct vdev_params *p, struct backend **out,
		    char *err, size_t errlen);
	/* Required.  Release everything; no I/O is in flight. */
	void (*close)(struct backend *be);
	/* Optional.  Change the size keeping the data that still fits. */
	int (*resize)(struct backend *be, uint64_t size);
	/* Optional.  Whether [off, off+len) holds data (1) or reads as zeros
	 * (0), or -errno; without it any range counts as holding data.  Asked
	 * before a shrink would cut that range off. */
	int (*holds_data)(struct backend *be, uint64_t off, uint64_t len);
	/* Required.  Start io: 0 (done), -errno (failed), BE_QUEUED (one
	 * completion per SQE it queued will follow; *nsqe says how many), or
	 * -EAGAIN with nothing queued (no room: retry later). */
	int (*submit)(struct backend *be, const struct be_io *io, struct be_ctx *ctx,
		      unsigned *nsqe);
	/* Optional.  The size the backing has now, without waiting for
	 * anything (what the backend last learnt); asked when event_fd rang.
	 * 0 or -errno. */
	int (*refresh)(struct backend *be, uint64_t *size);
	/* Optional.  Text for the `stats` file (e.g. "io_mode direct"). */
	void (*describe)(struct backend *be, char *buf, size_t len);
};

struct backend {
	const struct be_ops *ops;
	uint64_t size;
	uint32_t logical_block;         /* device geometry hints (0 = unknown) */
	uint32_t physical_block;
	uint32_t discard_granularity;
	uint64_t discard_max;           /* bytes, 0 = no limit known */
	bool rotational;
	bool can_discard;       /* advertise DISCARD */
	bool can_write_zeroes;  /* advertise WRITE_ZEROES */
	bool has_cache;         /* FLUSH means something */
	bool read_only;         /* the backing takes no writes (an rbd snapshot),
				 * whatever params.readonly says */
	char serial[VDEV_SERIAL_MAX + 1];       /* device's own, if any */
	dev_t rdev;                     /* block device number, 0 if none */
	/* An eventfd the backend rings from any thread when the backing
	 * changed by itself (an rbd image resized elsewhere): the control
	 * thread then calls refresh.  -1: none (its open must set it). */
	int event_fd;
	_Atomic bool failed;            /* device gone: fail every request */
};

/* Most SQEs one request may need (discard/write-zeroes segments). */
#define BE_MAX_SQE_PER_REQ 16

extern const struct be_ops be_ram_ops;
extern const struct be_ops be_null_ops;
extern const struct be_ops be_file_ops;
extern const struct be_ops be_rbd_ops;         /* without librbd: refuses to open */

/* Open the backend p->backing names. */
int be_open(const struct vdev_params *p, struct backend **out, char *err, size_t errlen);
/* Whether [off, off+len) of be holds data: 1, 0, or -errno. */
int be_holds_data(struct backend *be, uint64_t off, uint64_t len);
static inline void be_close(struct backend *be)
{
	if (be)
		be->ops->close(be);
}

/* iovec helpers shared by backends and the request parser. */
size_t iov_size(const struct iovec *iov, unsigned cnt);
/* Copy between a flat buffer and iov (starting `skip` bytes in); returns
 * bytes copied. */
size_t iov_to_buf(const struct iovec *iov, unsigned cnt, size_t skip, void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, unsigned cnt, size_t skip, const void *buf, size_t len);

#endif

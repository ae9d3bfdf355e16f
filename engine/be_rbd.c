/* The Ceph RBD backend: an image read and written through librbd's
 * asynchronous API straight from and into guest memory (rbd_aio_readv and
 * rbd_aio_writev take the guest's iovecs).  librbd completes requests on
 * its own threads; the callback only records the result and hands the
 * request back to its engine thread through be_ctx.post (no thread hop of
 * ours, no lock beyond that list's).
 *
 * Threads: open, close, resize, holds_data on the control thread (open and
 * close run in a helper thread the caller waits for at most
 * RBD_CALL_TIMEOUT_S: an unreachable cluster must not hold the caller, and
 * what a late helper opened it closes itself); submit on engine threads;
 * the completion and the image watch callbacks on librbd's threads.
 *
 * Trust: the caller checked offsets and lengths; the cluster's answers
 * (sizes, return values) are taken as they come, a short read is an
 * error.  The image's size may change under us ('rbd resize' elsewhere):
 * the watch callback reads it and rings be.event_fd; the core then asks
 * refresh() and follows with the device (a live resize). */
#include "backend.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "log.h"

/* How long a caller waits for an open or a close before giving up on the
 * cluster; the monitors get less, so that their own timeout says why. */
#define RBD_CALL_TIMEOUT_S      20
#define RBD_MOUNT_TIMEOUT_S     "15"

enum rbd_lock_state {
	RBD_LOCK_NONE,          /* read-only, or the image has no exclusive-lock feature */
	RBD_LOCK_SHARED,        /* rbd_shared=1: librbd passes the lock around */
	RBD_LOCK_OWNER,         /* we hold the exclusive lock */
	RBD_LOCK_LOST,          /* a write found it taken from us (blocklisted) */
};

struct rbd_backend {
	struct backend be;
	struct vdev_rbd cfg;
	bool readonly;
	uint32_t block_size;
	uint64_t want_size;             /* open: the size asked for, 0 = the image's */
	bool allow_shrink;              /* open: want_size may shrink the image */
	rados_t cluster;
	rados_ioctx_t io;
	rbd_image_t image;
	bool have_cluster, have_io, have_image;
	uint64_t watch;
	bool watching;
	bool has_lock_feature;
	_Atomic uint64_t image_size;    /* last size read from the image */
	_Atomic int lock;               /* enum rbd_lock_state */
	_Atomic uint64_t timeouts;      /* requests that failed with ETIMEDOUT */
	_Atomic uint64_t errors;        /* requests that failed otherwise */
	char spec[4 * (VDEV_RBD_NAME_MAX + 1)];     /* pool/[ns/]image[@snap] */
};

#define to_rbd(b) ((struct rbd_backend *)(b))

static const char *lock_name(int s)
{
	switch (s) {
	case RBD_LOCK_SHARED: return "shared";
	case RBD_LOCK_OWNER: return "exclusive";
	case RBD_LOCK_LOST: return "lost";
	default: return "none";
	}
}

/* --- bounded calls ---------------------------------------------------------- */

/* One open or close run by a helper thread.  The caller waits for it at
 * most RBD_CALL_TIMEOUT_S; past that it leaves (abandoned) and the helper,
 * once librbd answers, undoes what it did and frees everything. */
struct rbd_call {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done, abandoned;
	int (*fn)(struct rbd_call *c);
	void (*undo)(struct rbd_call *c);       /* abandoned: after fn */
	struct rbd_backend *rb;         /* everything fn uses (the caller's memory
					 * may be gone when an abandoned fn ends) */
	int rc;
	char err[VDEV_ERR_MAX];
};

/* The reason of a failure, in c (truncated to one sentence's room). */
__attribute__((format(printf, 2, 3)))
static void say(struct rbd_call *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

static void call_free(struct rbd_call *c)
{
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}

static void *call_main(void *arg)
{
	struct rbd_call *c = arg;
	bool abandoned;
	int rc = c->fn(c);

	pthread_mutex_lock(&c->lock);
	c->rc = rc;
	c->done = true;
	abandoned = c->abandoned;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (abandoned) {
		if (c->undo)
			c->undo(c);
		call_free(c);
	}
	return NULL;
}

/* Run c->fn in a helper thread and wait for it: its result (and reason in
 * err), or -ETIMEDOUT with *late set: c now belongs to the helper.  c is
 * freed either way. */
static int call_bounded(struct rbd_call *c, char *err, size_t errlen, bool *late)
{
	pthread_condattr_t ca;
	pthread_attr_t attr;
	struct timespec ts;
	pthread_t tid;
	int rc;

	*late = false;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = -pthread_create(&tid, &attr, call_main, c);
	pthread_attr_destroy(&attr);
	if (rc < 0) {
		/* no thread: run it here, unbounded */
		rc = c->fn(c);
		if (rc < 0 && err)
			snprintf(err, errlen, "%s", c->err);
		call_free(c);
		return rc;
	}
	pthread_setname_np(tid, "vhostd-rbd");
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += RBD_CALL_TIMEOUT_S;
	pthread_mutex_lock(&c->lock);
	while (!c->done && pthread_cond_timedwait(&c->cond, &c->lock, &ts) != ETIMEDOUT)
		;
	if (!c->done) {
		c->abandoned = true;
		*late = true;
		pthread_mutex_unlock(&c->lock);
		return -ETIMEDOUT;
	}
	pthread_mutex_unlock(&c->lock);
	rc = c->rc;
	if (rc < 0 && err)
		snprintf(err, errlen, "%s", c->err);
	call_free(c);
	return rc;
}

/* --- open and close ---------------------------------------------------------- */

static void rbd_teardown(struct rbd_backend *rb)
{
	if (rb->watching)
		rbd_update_unwatch(rb->image, rb->watch);
	if (rb->have_image)
		rbd_close(rb->image);   /* releases the exclusive lock */
	if (rb->have_io)
		rados_ioctx_destroy(rb->io);
	if (rb->have_cluster)
		rados_shutdown(rb->cluster);
	rb->watching = rb->have_image = rb->have_io = rb->have_cluster = false;
}

static void rbd_free(struct rbd_backend *rb)
{
	if (rb->be.event_fd >= 0)
		close(rb->be.event_fd);
	free(rb);
}

/* librbd thread: the image's header changed (size, snapshots, lock...).
 * Only a new size concerns us: read it here, where blocking on the
 * cluster holds no thread of ours, and tell the core. */
static void watch_cb(void *arg)
{
	struct rbd_backend *rb = arg;
	uint64_t size, one = 1;

	if (rbd_get_size(rb->image, &size) < 0)
		return;
	if (atomic_exchange(&rb->image_size, size) == size)
		return;
	vlog(LOG_INFO, "rbd %s: the image is now %" PRIu64 " bytes", rb->spec, size);
	(void)!write(rb->be.event_fd, &one, sizeof(one));
}

static int set_conf(struct rbd_call *c, const char *key, const char *val)
{
	int rc = rados_conf_set(c->rb->cluster, key, val);

	if (rc < 0)
		say(c, "cannot set Ceph option %s=%s: %s", key, val,
			 strerror(-rc));
	return rc;
}

/* The exclusive lock: taken explicitly, so that librbd hands it to nobody
 * else while we run (another writer's requests fail instead of silently
 * interleaving with ours). */
static int take_lock(struct rbd_call *c)
{
	struct rbd_backend *rb = c->rb;
	uint64_t features = 0;
	rbd_lock_mode_t mode;
	char *owners[4];
	size_t nowners = 4;
	int rc;

	rc = rbd_get_features(rb->image, &features);
	if (rc < 0) {
		say(c, "cannot read the features of rbd image %s: %s",
			 rb->spec, strerror(-rc));
		return rc;
	}
	rb->has_lock_feature = features & RBD_FEATURE_EXCLUSIVE_LOCK;
	if (rb->cfg.shared) {
		atomic_store(&rb->lock, rb->has_lock_feature ? RBD_LOCK_SHARED : RBD_LOCK_NONE);
		return 0;
	}
	if (!rb->has_lock_feature) {
		vlog(LOG_WARNING, "rbd %s: the image has no exclusive-lock feature: nothing "
		     "keeps another client from writing to it at the same time", rb->spec);
		return 0;
	}
	rc = rbd_lock_acquire(rb->image, RBD_LOCK_MODE_EXCLUSIVE);
	if (rc == 0) {
		atomic_store(&rb->lock, RBD_LOCK_OWNER);
		return 0;
	}
	if (rbd_lock_get_owners(rb->image, &mode, owners, &nowners) == 0 && nowners > 0) {
		say(c, "rbd image %s is in use: another client (%s) "
			 "holds its exclusive lock; set rbd_shared=1 only if the guest's use of "
			 "the disk is made for several writers", rb->spec, owners[0]);
		rbd_lock_get_owners_cleanup(owners, nowners);
	} else {
		say(c, "cannot take the exclusive lock of rbd image "
			 "%s: %s (another client may be using it; rbd_shared=1 allows that)",
			 rb->spec, strerror(-rc));
	}
	return rc == -EROFS || rc == -EBUSY ? -EBUSY : rc;
}

/* The device's size from the image's and the size asked for: none = the
 * image's; larger = grow the image; smaller = shrink it, only if the user
 * allowed that (allow_shrink). */
static int settle_size(struct rbd_call *c)
{
	struct rbd_backend *rb = c->rb;
	uint64_t size, want = rb->want_size;
	int rc;

	rc = rbd_get_size(rb->image, &size);
	if (rc < 0) {
		say(c, "cannot read the size of rbd image %s: %s",
			 rb->spec, strerror(-rc));
		return rc;
	}
	if (want && want != size) {
		if (rb->be.read_only || rb->readonly) {
			say(c, "rbd image %s is %" PRIu64 " bytes, not %" PRIu64 ", and "
			    "read-only: leave size out", rb->spec, size, want);
			return -EINVAL;
		}
		if (want < size && !rb->allow_shrink) {
			say(c, "rbd image %s is %" PRIu64 " bytes: a size of %" PRIu64 " would "
			    "shrink it; leave size out, or set allow_shrink=1 to cut it",
			    rb->spec, size, want);
			return -EINVAL;
		}
		rc = rbd_resize(rb->image, want);
		if (rc < 0) {
			say(c, "cannot resize rbd image %s to %" PRIu64 " bytes: %s", rb->spec,
			    want, strerror(-rc));
			return rc;
		}
		vlog(LOG_INFO, "rbd %s: resized from %" PRIu64 " to %" PRIu64 " bytes",
		     rb->spec, size, want);
		size = want;
	}
	atomic_store(&rb->image_size, size);
	rb->be.size = size - size % rb->block_size;
	if (rb->be.size == 0) {
		say(c, "rbd image %s (%" PRIu64 " bytes) is smaller "
			 "than one block", rb->spec, size);
		return -EINVAL;
	}
	return 0;
}

static int do_open(struct rbd_call *c)
{
	struct rbd_backend *rb = c->rb;
	const struct vdev_rbd *r = &rb->cfg;
	char who[VDEV_RBD_ID_MAX + 8], tmo[16];
	int rc;

	snprintf(who, sizeof(who), "client.%s", r->id);
	rc = rados_create2(&rb->cluster, "ceph", who, 0);
	if (rc < 0) {
		say(c, "cannot create a Ceph client: %s", strerror(-rc));
		return rc;
	}
	rb->have_cluster = true;
	rc = rados_conf_read_file(rb->cluster, r->conf);
	if (rc < 0) {
		say(c, "cannot read ceph_conf %s: %s", r->conf,
			 strerror(-rc));
		goto fail;
	}
	/* Bounded waits: the monitors at connection time and for their
	 * commands; OSD requests as the user said (0 = wait, as QEMU does).
	 * No client cache: a write is durable when it completes, which is
	 * what a guest that turned the write cache off (FUA) counts on; a
	 * partial discard zeroes, so a discarded range reads back zeros. */
	snprintf(tmo, sizeof(tmo), "%" PRIu32, r->timeout);
	if ((rc = set_conf(c, "client_mount_timeout", RBD_MOUNT_TIMEOUT_S)) < 0 ||
	    (rc = set_conf(c, "rados_mon_op_timeout", RBD_MOUNT_TIMEOUT_S)) < 0 ||
	    (rc = set_conf(c, "rados_osd_op_timeout", tmo)) < 0 ||
	    (rc = set_conf(c, "rbd_cache", "false")) < 0 ||
	    (rc = set_conf(c, "rbd_skip_partial_discard", "false")) < 0)
		goto fail;
	rc = rados_connect(rb->cluster);
	if (rc < 0) {
		say(c, "cannot connect to the Ceph cluster of %s as "
			 "%s: %s", r->conf, who, rc == -ETIMEDOUT ?
			 "no monitor answered within " RBD_MOUNT_TIMEOUT_S " s" : strerror(-rc));
		goto fail;
	}
	rc = rados_ioctx_create(rb->cluster, r->pool, &rb->io);
	if (rc < 0) {
		say(c, "cannot use pool %s: %s", r->pool,
			 rc == -ENOENT ? "no such pool" : strerror(-rc));
		goto fail;
	}
	rb->have_io = true;
	if (r->ns[0])
		rados_ioctx_set_namespace(rb->io, r->ns);
	rc = rbd_open(rb->io, r->image, &rb->image, r->snap[0] ? r->snap : NULL);
	if (rc < 0) {
		say(c, "cannot open rbd image %s: %s", rb->spec,
			 rc == -ENOENT ? (r->snap[0] ? "no such image or snapshot" :
					  "no such image") : strerror(-rc));
		goto fail;
	}
	rb->have_image = true;
	if (!rb->be.read_only && !rb->readonly && (rc = take_lock(c)) < 0)
		goto fail;
	if ((rc = settle_size(c)) < 0)
		goto fail;
	/* Follow the image's size from now on (a snapshot's never changes). */
	if (!r->snap[0]) {
		rc = rbd_update_watch(rb->image, &rb->watch, watch_cb, rb);
		if (rc < 0)
			vlog(LOG_WARNING, "rbd %s: cannot watch the image (%s): a resize from "
			     "outside goes unnoticed", rb->spec, strerror(-rc));
		else
			rb->watching = true;
	}
	return 0;
fail:
	rbd_teardown(rb);
	return rc;
}

/* Abandoned open: what it opened is nobody's. */
static void undo_open(struct rbd_call *c)
{
	if (c->rc == 0) {
		vlog(LOG_WARNING, "rbd %s: the cluster answered after the configuration "
		     "gave up on it; closing the image again", c->rb->spec);
		rbd_teardown(c->rb);
	}
	rbd_free(c->rb);
}

static int rbd_open_be(const struct vdev_params *p, struct backend **out, char *err,
		       size_t errlen)
{
	struct rbd_backend *rb = calloc(1, sizeof(*rb));
	struct rbd_call *c = calloc(1, sizeof(*c));
	const struct vdev_rbd *r = &p->rbd;
	bool late;
	int rc;

	if (!rb || !c) {
		free(rb);
		free(c);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rb->be.ops = &be_rbd_ops;
	rb->be.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (rb->be.event_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create an eventfd: %s", strerror(-rc));
		free(rb);
		free(c);
		return rc;
	}
	rb->cfg = *r;
	rb->readonly = p->readonly;
	rb->block_size = p->block_size;
	rb->want_size = p->size;
	rb->allow_shrink = p->allow_shrink;
	rb->be.read_only = r->snap[0] != '\0';
	rb->be.has_cache = true;        /* FLUSH goes to rbd_aio_flush */
	rb->be.can_discard = !rb->be.read_only;
	rb->be.can_write_zeroes = !rb->be.read_only;
	rb->be.logical_block = 512;
	snprintf(rb->spec, sizeof(rb->spec), "%s/%s%s%s%s%s", r->pool, r->ns, r->ns[0] ? "/" : "",
		 r->image, r->snap[0] ? "@" : "", r->snap);
	atomic_store(&rb->lock, RBD_LOCK_NONE);

	c->fn = do_open;
	c->undo = undo_open;
	c->rb = rb;
	rc = call_bounded(c, err, errlen, &late);
	if (late) {
		/* the helper owns rb now */
		snprintf(err, errlen, "the Ceph cluster of %s did not answer within %d s "
			 "(opening rbd image %s)", r->conf, RBD_CALL_TIMEOUT_S, rb->spec);
		return rc;
	}
	if (rc < 0) {
		rbd_free(rb);
		return rc;
	}
	vlog(LOG_INFO, "rbd %s: opened as client.%s, %" PRIu64 " bytes%s, lock %s, "
	     "request timeout %s", rb->spec, r->id, rb->be.size,
	     rb->be.read_only ? " (snapshot, read-only)" : rb->readonly ? " (read-only)" : "",
	     lock_name(atomic_load(&rb->lock)), r->timeout ? "set" : "none (wait)");
	*out = &rb->be;
	return 0;
}

static int do_close(struct rbd_call *c)
{
	rbd_teardown(c->rb);
	return 0;
}

static void undo_close(struct rbd_call *c)
{
	rbd_free(c->rb);
}

static void rbd_close_be(struct backend *be)
{
	struct rbd_backend *rb = to_rbd(be);
	struct rbd_call *c = calloc(1, sizeof(*c));
	char spec[sizeof(rb->spec)];
	bool late;

	if (!c) {
		rbd_teardown(rb);
		rbd_free(rb);
		return;
	}
	memcpy(spec, rb->spec, sizeof(spec));
	c->fn = do_close;
	c->undo = undo_close;
	c->rb = rb;
	/* The error is the caller's err, but nobody waits for one here. */
	call_bounded(c, NULL, 0, &late);
	if (late) {
		/* The cluster is away: the helper finishes the close (and
		 * frees rb) when it comes back. */
		vlog(LOG_WARNING, "rbd %s: closing takes more than %d s (the cluster does "
		     "not answer); it goes on in the background", spec, RBD_CALL_TIMEOUT_S);
		return;
	}
	rbd_free(rb);
}

/* --- control operations ------------------------------------------------------ */

static int rbd_resize_be(struct backend *be, uint64_t size)
{
	struct rbd_backend *rb = to_rbd(be);
	uint64_t now = atomic_load(&rb->image_size);
	int rc;

	/* The size the image already has (a resize from outside being
	 * followed: the whole blocks of it) needs no call to the cluster. */
	if (size != now - now % rb->block_size) {
		if (be->read_only || rb->readonly)
			return -EROFS;
		rc = rbd_resize(rb->image, size);
		if (rc < 0) {
			vlog(LOG_ERR, "rbd %s: cannot resize to %" PRIu64 " bytes: %s", rb->spec,
			     size, strerror(-rc));
			return rc;
		}
		atomic_store(&rb->image_size, size);
	}
	be->size = size;
	return 0;
}

static int rbd_refresh_be(struct backend *be, uint64_t *size)
{
	struct rbd_backend *rb = to_rbd(be);
	uint64_t s = atomic_load(&rb->image_size);

	*size = s - s % rb->block_size;
	return 0;
}

struct extent_probe {
	bool found;
};

static int extent_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct extent_probe *e = arg;

	if (exists) {
		e->found = true;
		return -ECANCELED;      /* one is enough */
	}
	return 0;
}

/* Allocated objects in the range (whole objects: a cheap upper bound). */
static int rbd_holds_data_be(struct backend *be, uint64_t off, uint64_t len)
{
	struct rbd_backend *rb = to_rbd(be);
	struct extent_probe e = { false };
	int rc;

	rc = rbd_diff_iterate2(rb->image, NULL, off, len, 1, 1, extent_cb, &e);
	if (rc < 0 && rc != -ECANCELED)
		return rc;
	return e.found;
}

static void rbd_describe_be(struct backend *be, char *buf, size_t len)
{
	struct rbd_backend *rb = to_rbd(be);

	snprintf(buf, len, "io_mode librbd\nrbd_image %s\nrbd_lock %s\nrbd_timeouts %" PRIu64
		 "\nrbd_errors %" PRIu64 "\n", rb->spec, lock_name(atomic_load(&rb->lock)),
		 atomic_load(&rb->timeouts), atomic_load(&rb->errors));
}

/* --- the data path ------------------------------------------------------------ */

/* The last piece of job finished (any thread): its result goes back to
 * the engine thread that submitted it. */
static void job_finish(struct be_job *job)
{
	int err = atomic_load_explicit(&job->part_err, memory_order_acquire);

	job->res = err ? err : (int)job->len;
	job->ctx->post(job->ctx, job);
}

/* librbd thread: one piece of a request finished. */
static void aio_done(rbd_completion_t c, void *arg)
{
	struct be_job *job = arg;
	struct rbd_backend *rb = to_rbd(job->be);
	ssize_t r = rbd_aio_get_return_value(c);

	rbd_aio_release(c);
	if (r >= 0 && job->is_read && (uint64_t)r != job->len)
		r = -EIO;       /* a short read */
	if (r < 0) {
		int none = 0;

		if (r == -ETIMEDOUT)
			atomic_fetch_add_explicit(&rb->timeouts, 1, memory_order_relaxed);
		else
			atomic_fetch_add_explicit(&rb->errors, 1, memory_order_relaxed);
		/* ESHUTDOWN: this client was blocklisted (another one broke
		 * our lock, taking us for dead) */
		if (r == -ESHUTDOWN && atomic_load(&rb->lock) == RBD_LOCK_OWNER)
			atomic_store(&rb->lock, RBD_LOCK_LOST);
		atomic_compare_exchange_strong(&job->part_err, &none, (int)r);
	}
	/* acq_rel: the last one sees every piece's error */
	if (atomic_fetch_sub_explicit(&job->parts, 1, memory_order_acq_rel) == 1)
		job_finish(job);
}

/* Start one piece of io (range i for discard/write-zeroes). */
static int start_piece(struct rbd_backend *rb, const struct be_io *io, unsigned i,
		       struct be_job *job)
{
	rbd_completion_t c;
	int rc;

	rc = rbd_aio_create_completion(job, aio_done, &c);
	if (rc < 0)
		return rc;
	switch (io->op) {
	case BE_OP_READ:
		rc = rbd_aio_readv(rb->image, io->iov, (int)io->iovcnt, io->offset, c);
		break;
	case BE_OP_WRITE:
		rc = rbd_aio_writev(rb->image, io->iov, (int)io->iovcnt, io->offset, c);
		break;
	case BE_OP_FLUSH:
		rc = rbd_aio_flush(rb->image, c);
		break;
	case BE_OP_DISCARD:
		rc = rbd_aio_discard(rb->image, io->ranges[i].offset, io->ranges[i].len, c);
		break;
	case BE_OP_WRITE_ZEROES:
		rc = rbd_aio_write_zeroes(rb->image, io->ranges[i].offset, io->ranges[i].len,
					  c, 0, 0);
		break;
	default:
		rc = -EOPNOTSUPP;
		break;
	}
	if (rc < 0)
		rbd_aio_release(c);
	return rc;
}

/* Engine thread.  One completion per request whatever its number of
 * pieces: job->parts counts them, plus one held while we submit, so that
 * pieces finishing at once cannot post the job before its last piece was
 * started. */
static int rbd_submit_be(struct backend *be, const struct be_io *io, struct be_ctx *ctx,
			 unsigned *nsqe)
{
	struct rbd_backend *rb = to_rbd(be);
	struct be_job *job = io->job;
	unsigned n = io->op == BE_OP_DISCARD || io->op == BE_OP_WRITE_ZEROES ? io->nranges : 1;
	unsigned started = 0;
	int rc = 0;

	job->ctx = ctx;
	job->cookie = io->cookie;
	job->be = be;
	job->fn = NULL;
	job->is_read = io->op == BE_OP_READ;
	job->len = io->op == BE_OP_READ || io->op == BE_OP_WRITE ? io->len : 0;
	atomic_store_explicit(&job->part_err, 0, memory_order_relaxed);
	atomic_store_explicit(&job->parts, n + 1, memory_order_relaxed);
	for (; started < n; started++) {
		rc = start_piece(rb, io, started, job);
		if (rc < 0)
			break;
	}
	if (started == 0) {
		vlog_rl(LOG_ERR, "rbd %s: cannot start a request: %s", rb->spec, strerror(-rc));
		return rc;      /* nothing queued */
	}
	if (rc < 0) {
		int none = 0;
		atomic_compare_exchange_strong(&job->part_err, &none, rc);
	}
	ctx->inflight++;
	*nsqe = 1;
	/* Drop the pieces never started and our own hold. */
	if (atomic_fetch_sub_explicit(&job->parts, n - started + 1, memory_order_acq_rel) ==
	    n - started + 1)
		job_finish(job);
	return BE_QUEUED;
}

const struct be_ops be_rbd_ops = {
	.name = "rbd",
	.open = rbd_open_be,
	.close = rbd_close_be,
	.resize = rbd_resize_be,
	.refresh = rbd_refresh_be,
	.holds_data = rbd_holds_data_be,
	.submit = rbd_submit_be,
	.describe = rbd_describe_be,
};

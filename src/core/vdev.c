/* Devices: create (socket bound, backend opened), settings (reopen, resize
 * under a connected guest, allow_shrink), destroy and the getters of
 * vdev.h, each carried out on the control thread (core_call).  See
 * core_int.h. */
#include "core_int.h"

#include <errno.h>
#include <libudev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "blk.h"
#include "engine.h"
#include "fault.h"
#include "log.h"
#include "vu.h"

/* --- helpers ------------------------------------------------------------- */

void set_error(struct vdev *d, const char *msg)
{
	size_t n = strnlen(msg, sizeof(d->last_error) - 1);

	pthread_mutex_lock(&d->err_lock);
	memcpy(d->last_error, msg, n);
	d->last_error[n] = '\0';
	pthread_mutex_unlock(&d->err_lock);
}

_Static_assert((int)VBLK_NOPS == (int)VDEV_NOPS && (int)VBLK_OP_READ == (int)VDEV_OP_READ &&
	       (int)VBLK_OP_WRITE == (int)VDEV_OP_WRITE && (int)VBLK_OP_FLUSH == (int)VDEV_OP_FLUSH,
	       "the engine's request kinds are the API's");

const char *vdev_op_name(enum vdev_op op)
{
	static const char *const names[VDEV_NOPS] = { "read", "write", "flush", "other" };
	return (unsigned)op < VDEV_NOPS ? names[op] : "?";
}

const char *vdev_state_name(enum vdev_state s)
{
	switch (s) {
	case VDEV_LISTENING: return "listening";
	case VDEV_CONNECTED: return "connected";
	case VDEV_ERROR: return "error";
	}
	return "?";
}


/* --- devices ------------------------------------------------------------------ */

static int listen_on(struct vdev *d, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is longer than %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path);   /* a stale socket of ours */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail_errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0 ||
	    stat(path, &st) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		goto fail_errno;
	}
	d->listen_fd = fd;
	d->sock_dev = st.st_dev;
	d->sock_ino = st.st_ino;
	snprintf(d->sock_path, sizeof(d->sock_path), "%s", path);
	return 0;
fail_errno:
	snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
	return -errno;
}

/* Remove our socket file, and only ours (same inode as the one we bound). */
static void unlink_socket(struct vdev *d)
{
	struct stat st;
	if (d->keep_socket)
		return;
	if (stat(d->sock_path, &st) == 0 && st.st_dev == d->sock_dev &&
	    st.st_ino == d->sock_ino)
		unlink(d->sock_path);
}

void dev_free(struct vdev *d)
{
	conn_close_now(d);
	if (d->listen_fd >= 0) {
		epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, d->listen_fd, NULL);
		close(d->listen_fd);
		unlink_socket(d);
	}
	if (d->broken_fd >= 0) {
		epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, d->broken_fd, NULL);
		close(d->broken_fd);
	}
	if (d->detach_fd >= 0) {
		epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, d->detach_fd, NULL);
		close(d->detach_fd);
	}
	backend_watch(d, false);
	vblk_destroy(d->blk);
	pthread_mutex_destroy(&d->err_lock);
	free(d);
}

struct create_args {
	const char *name, *path;
	const struct vdev_params *p;
	struct backend *be;             /* opened by the caller; NULL once taken */
	struct vdev *out;
	char *err;
	size_t errlen;
};

static int do_create(struct core *core, void *arg)
{
	struct create_args *a = arg;
	struct epoll_event ev = { .events = EPOLLIN };
	struct vgroup *g;
	struct vdev *d;
	int rc;

	rc = core_group_find(core, a->p->group, &g, a->err, a->errlen);
	if (rc < 0)
		return rc;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->core = core;
	d->listen_fd = d->broken_fd = d->detach_fd = d->next_fd = -1;
	pthread_mutex_init(&d->err_lock, NULL);
	d->ev_listen = (struct ev_src){ EV_LISTEN, d, NULL };
	d->ev_broken = (struct ev_src){ EV_BROKEN, d, NULL };
	d->ev_detach = (struct ev_src){ EV_DETACH, d, NULL };
	d->ev_backend = (struct ev_src){ EV_BACKEND, d, NULL };

	if (a->be)
		rc = vblk_create_on(a->name, a->p, a->be, &d->blk, a->err, a->errlen);
	else
		rc = vblk_create(a->name, a->p, &d->blk, a->err, a->errlen);
	a->be = NULL;
	if (rc < 0)
		goto fail;
	d->size_auto = a->p->size == 0;
	qos_set(&d->blk->qos, &a->p->limits, core_now_ns());
	atomic_store(&d->blk->group, g ? &g->qos : NULL);
	d->blk->owner = d;
	d->blk->ring_broken = on_ring_broken;
	d->broken_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->broken_fd < 0) {
		rc = -errno;
		goto fail;
	}
	ev.data.ptr = &d->ev_broken;
	if (epoll_ctl(core->epfd, EPOLL_CTL_ADD, d->broken_fd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	d->detach_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ev.data.ptr = &d->ev_detach;
	if (d->detach_fd < 0 || epoll_ctl(core->epfd, EPOLL_CTL_ADD, d->detach_fd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	backend_watch(d, true);
	rc = listen_on(d, a->path, a->err, a->errlen);
	if (rc < 0)
		goto fail;
	ev.data.ptr = &d->ev_listen;
	if (epoll_ctl(core->epfd, EPOLL_CTL_ADD, d->listen_fd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	d->seq = core->next_seq++;
	atomic_store(&d->state, VDEV_LISTENING);
	d->next = core->devs;
	core->devs = d;
	a->out = d;
	vlog(LOG_INFO, "[%s] listening on %s (%s, %llu bytes, block %u, %u queue%s%s)",
	     d->blk->name, d->sock_path, be_kind_name(a->p->backing),
	     (unsigned long long)d->blk->params.size, a->p->block_size, a->p->queues,
	     a->p->queues > 1 ? "s" : "", a->p->readonly ? ", read-only" : "");
	return 0;
fail:
	if (a->err[0] == '\0')
		snprintf(a->err, a->errlen, "cannot create device: %s", strerror(-rc));
	dev_free(d);
	return rc;
}

int vdev_create(struct core *core, const char *name, const char *sock_path,
		const struct vdev_params *p, struct vdev **out, char *err, size_t errlen)
{
	struct create_args a = { name, sock_path, p, NULL, NULL, err, errlen };
	int rc;

	err[0] = '\0';
	if (!name[0] || strlen(name) > VDEV_NAME_MAX) {
		snprintf(err, errlen, "device name must be 1 to %d bytes", VDEV_NAME_MAX);
		return -EINVAL;
	}
	rc = vdev_params_check(p, err, errlen);
	if (rc < 0)
		return rc;
	/* A Ceph image is opened here, not on the control thread: that may
	 * wait seconds for the cluster, and every other device's front-end
	 * messages would wait with it.  Files and block devices open on the
	 * control thread (libudev, which the control thread also uses, is
	 * not safe from two threads at once). */
	if (p->backing == BE_RBD) {
		rc = be_open(p, &a.be, err, errlen);
		if (rc < 0)
			return rc;
	}
	rc = core_call(core, do_create, &a);
	be_close(a.be);         /* not taken: refused before the device existed */
	if (rc == 0)
		*out = a.out;
	return rc;
}

struct set_args {
	struct vdev *d;
	const struct vdev_params *p;
	char *err;
	size_t errlen;
};

/* Swap the backend for one opened with p.  The old one goes first: it may
 * hold the backing exclusively (a file claim, O_EXCL on a block device)
 * that the new one needs.  If the new one cannot be opened the old settings
 * are opened again; if even that fails the device stays in error. */
static int reopen_backend(struct vdev *d, const struct vdev_params *p, char *err, size_t errlen)
{
	struct vdev_params old = d->blk->params;
	struct backend *be;
	char err2[VDEV_ERR_MAX];
	int rc;

	backend_watch(d, false);
	be_close(d->blk->be);
	d->blk->be = NULL;
	rc = be_open(p, &be, err, errlen);
	if (rc == 0) {
		d->blk->be = be;
		backend_watch(d, true);
		return 0;
	}
	if (old.backing == BE_FILE || old.backing == BE_RBD)
		old.size = 0;   /* whatever the file (image) has now */
	if (be_open(&old, &be, err2, sizeof(err2)) == 0) {
		d->blk->be = be;
		backend_watch(d, true);
		return rc;
	}
	/* Keep a backend so the data path never sees none: a failed one. */
	old.backing = BE_NULL;
	old.size = d->blk->params.size;
	if (be_open(&old, &be, err2, sizeof(err2)) == 0) {
		atomic_store(&be->failed, true);
		d->blk->be = be;
	}
	atomic_store(&d->state, VDEV_ERROR);
	set_error(d, err);
	return rc;
}

static bool same_limits(const struct vdev_limits *a, const struct vdev_limits *b)
{
	return a->iops == b->iops && a->bps == b->bps && a->read_bps == b->read_bps &&
	       a->write_bps == b->write_bps && a->iops_burst == b->iops_burst &&
	       a->bps_burst == b->bps_burst;
}

/* Limits and group: applied at once, connected or not. */
static void apply_limits(struct vdev *d, const struct vdev_params *p, struct vgroup *g)
{
	if (!same_limits(&p->limits, &d->blk->params.limits))
		qos_set(&d->blk->qos, &p->limits, core_now_ns());
	atomic_store_explicit(&d->blk->group, g ? &g->qos : NULL, memory_order_release);
}

/* Everything but the size, allow_shrink, the limits and the group (what
 * may change under a connected front-end) is equal. */
static bool same_but_size(const struct vdev_params *a, const struct vdev_params *b)
{
	return a->block_size == b->block_size && vdev_same_backing(a, b) &&
	       a->readonly == b->readonly && a->packed == b->packed &&
	       a->queues == b->queues && strcmp(a->serial, b->serial) == 0;
}

/* A shrink to size must not cut data the guest wrote unless the user
 * allowed it (allow_shrink=1). */
static int check_shrink(struct vdev *d, const struct vdev_params *p, uint64_t size,
			char *err, size_t errlen)
{
	struct backend *be = d->blk->be;
	int used;

	if (!be || size >= be->size || p->allow_shrink)
		return 0;
	used = be_holds_data(be, size, be->size - size);
	if (used == 0)
		return 0;
	if (used < 0)
		snprintf(err, errlen, "cannot tell whether the data past %llu bytes is in use (%s); "
			 "set allow_shrink=1 to shrink anyway", (unsigned long long)size,
			 strerror(-used));
	else if (!be->ops->holds_data || (be->rdev && be->ops == &be_file_ops))
		snprintf(err, errlen, "a %s backing cannot tell whether its blocks between %llu "
			 "and %llu bytes hold data; set allow_shrink=1 to shrink anyway",
			 be->rdev ? "block device" : be->ops->name, (unsigned long long)size,
			 (unsigned long long)be->size);
	else
		snprintf(err, errlen, "the disk holds data between %llu and %llu bytes that the "
			 "shrink would cut off; set allow_shrink=1 to shrink anyway",
			 (unsigned long long)size, (unsigned long long)be->size);
	return -EBUSY;
}

struct resize_args {
	struct vdev *d;
	const struct vdev_params *p;    /* NULL: the backing itself changed */
	uint64_t size;
	char *err;
	size_t errlen;
	int rc;
};

/* With every ring stopped: the engine writes the data a shrink looks at,
 * reads the size for its range checks, and a ram backend's memory may
 * move. */
static int resize_quiesced(void *arg)
{
	struct resize_args *r = arg;
	struct backend *be = r->d->blk->be;

	if (r->p) {
		r->rc = check_shrink(r->d, r->p, r->size, r->err, r->errlen);
		if (r->rc < 0)
			return 0;
	}
	r->rc = be->ops->resize(be, r->size);
	if (r->rc < 0)
		snprintf(r->err, r->errlen, "cannot resize to %llu bytes: %s",
			 (unsigned long long)r->size, strerror(-r->rc));
	r->d->blk->params.size = be->size;
	return 0;
}

/* Change the size under a running guest and tell it.  p: the settings
 * asked for (whether a shrink may cut data), NULL when the backing itself
 * changed size. */
int live_resize(struct vdev *d, const struct vdev_params *p, uint64_t size,
		char *err, size_t errlen)
{
	struct backend *be = d->blk->be;
	struct resize_args r = { d, p, size, err, errlen, 0 };
	uint64_t old = be->size;
	struct vu_conn *c;
	bool told;
	int rc;

	if (!be->ops->resize) {
		snprintf(err, errlen, "a %s backing cannot change size", be->ops->name);
		return -EINVAL;
	}
	c = conn_rings(d);
	if (c->parked || c->closing) {
		snprintf(err, errlen, "the front-end is stopping the device's queues; "
			 "try again once it has");
		return -EBUSY;
	}
	rc = vu_conn_quiesce(c, resize_quiesced, &r);
	if (r.rc < 0)
		return r.rc;
	told = vu_config_changed(d->conn);
	if (d->peer && vu_config_changed(d->peer))
		told = true;
	vlog(LOG_INFO, "[%s] resized from %llu to %llu bytes under a connected front-end%s",
	     d->blk->name, (unsigned long long)old, (unsigned long long)be->size,
	     told ? "; the guest was told" :
	     "; no back-end channel: the guest sees it at its next config read");
	if (rc < 0)     /* a ring would not restart: the connection drops */
		snprintf(err, errlen, "resized, but %s", c->err);
	return rc;
}

static int do_set_params(struct core *core, void *arg)
{
	struct set_args *a = arg;
	struct vdev *d = a->d;
	const struct vdev_params *old = &d->blk->params, *p = a->p;
	bool same_backing = vdev_same_backing(p, old);
	/* a size set by hand stops following the backing's, once applied */
	bool by_hand = p->size && p->size != d->blk->be->size;
	struct vgroup *g;
	int rc;

	rc = core_group_find(core, p->group, &g, a->err, a->errlen);
	if (rc < 0)
		return rc;

	settle(d);
	if (d->conn) {
		uint64_t size = p->size ? p->size : old->size;

		if (!same_but_size(p, old)) {
			snprintf(a->err, a->errlen, "a front-end is connected: only size, allow_shrink, "
				 "the limits and the group can change until it disconnects");
			return -EBUSY;
		}
		rc = 0;
		if (size != d->blk->be->size)   /* the shrink check runs with the rings stopped */
			rc = live_resize(d, p, size, a->err, a->errlen);
		if (rc < 0)
			return rc;
		apply_limits(d, p, g);
		/* Only what may change: the engine threads read the rest of
		 * params (readonly, serial) while the rings run.  The size was
		 * set with the rings stopped. */
		d->blk->params.allow_shrink = p->allow_shrink;
		d->blk->params.limits = p->limits;
		memcpy(d->blk->params.group, p->group, sizeof(p->group));
		if (by_hand)
			d->size_auto = false;
		return 0;
	}
	if (p->size && same_backing) {
		rc = check_shrink(d, p, p->size, a->err, a->errlen);
		if (rc < 0)
			return rc;
	}
	if (!d->blk->be || !same_backing ||
	    (p->readonly != old->readonly && (p->backing == BE_FILE || p->backing == BE_RBD)) ||
	    (p->size && p->size != d->blk->be->size && !d->blk->be->ops->resize)) {
		rc = reopen_backend(d, p, a->err, a->errlen);
		if (rc < 0)
			return rc;
	} else if (p->size && p->size != d->blk->be->size) {
		rc = d->blk->be->ops->resize(d->blk->be, p->size);
		if (rc < 0) {
			snprintf(a->err, a->errlen, "cannot resize to %llu bytes: %s",
				 (unsigned long long)p->size, strerror(-rc));
			return rc;
		}
	}
	apply_limits(d, p, g);
	d->blk->params = *p;
	d->blk->params.size = d->blk->be->size;
	if (by_hand)
		d->size_auto = false;
	if (atomic_load(&d->state) == VDEV_ERROR && !backend_failed(d))
		atomic_store(&d->state, VDEV_LISTENING);
	return 0;
}

int vdev_set_params(struct vdev *d, const struct vdev_params *p, char *err, size_t errlen)
{
	struct set_args a = { d, p, err, errlen };
	int rc;

	err[0] = '\0';
	rc = vdev_params_check(p, err, errlen);
	if (rc < 0)
		return rc;
	return core_call(d->core, do_set_params, &a);
}

struct destroy_args {
	struct vdev *d;
	bool force;
	bool keep_socket;
};

static int do_destroy(struct core *core, void *arg)
{
	struct destroy_args *a = arg;
	struct vdev **pp;

	settle(a->d);
	if (a->d->conn && !a->force)
		return -EBUSY;
	for (pp = &core->devs; *pp; pp = &(*pp)->next) {
		if (*pp == a->d) {
			*pp = a->d->next;
			break;
		}
	}
	vlog(LOG_INFO, "[%s] %s", a->d->blk->name, a->keep_socket ? "stopped" : "removed");
	a->d->keep_socket = a->keep_socket;
	dev_free(a->d);
	return 0;
}

int vdev_destroy(struct vdev *d, bool force)
{
	struct destroy_args a = { d, force, false };
	return core_call(d->core, do_destroy, &a);
}

void vdev_stop(struct vdev *d)
{
	struct destroy_args a = { d, true, true };
	core_call(d->core, do_destroy, &a);
}

enum vdev_state vdev_get_state(struct vdev *d)
{
	return atomic_load(&d->state);
}

void vdev_get_stats(struct vdev *d, struct vdev_stats *st)
{
#define LOAD(f) atomic_load_explicit(&s->f, memory_order_relaxed)
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
		struct vblk_stats *s = &d->blk->stats[i];
		st->reads += LOAD(reads);
		st->writes += LOAD(writes);
		st->flushes += LOAD(flushes);
		st->discards += LOAD(discards);
		st->write_zeroes += LOAD(write_zeroes);
		st->get_ids += LOAD(get_ids);
		st->bytes_read += LOAD(bytes_read);
		st->bytes_written += LOAD(bytes_written);
		st->errors += LOAD(errors);
		st->inflight += LOAD(inflight);
		st->throttled_ns += LOAD(throttled_ns);
	}
#undef LOAD
	for (unsigned op = 0; op < VDEV_NOPS; op++) {
		struct vdev_latency *l = &st->lat[op];
		struct qos_hist *sum = calloc(1, sizeof(*sum));

		if (!sum)
			continue;
		for (unsigned i = 0; i < VDEV_MAX_QUEUES; i++) {
			struct qos_hist *h = atomic_load_explicit(&d->blk->hist[i],
								  memory_order_acquire);
			if (h)
				qos_hist_sum(sum, &h[op]);
		}
		qos_hist_read(sum, &l->count, &l->p50_ns, &l->p99_ns, &l->p999_ns, &l->max_ns);
		free(sum);
	}
	if (d->blk->be && d->blk->be->ops->describe)
		d->blk->be->ops->describe(d->blk->be, st->detail, sizeof(st->detail));
	else
		snprintf(st->detail, sizeof(st->detail), "io_mode memory\n");
}

struct params_args {
	struct vdev *d;
	struct vdev_params *p;
};

static int do_get_params(struct core *core, void *arg)
{
	struct params_args *a = arg;
	*a->p = a->d->blk->params;
	return 0;
}

void vdev_get_params(struct vdev *d, struct vdev_params *p)
{
	struct params_args a = { d, p };
	core_call(d->core, do_get_params, &a);
}

void vdev_last_error(struct vdev *d, char *buf, size_t len)
{
	pthread_mutex_lock(&d->err_lock);
	snprintf(buf, len, "%s", d->last_error);
	pthread_mutex_unlock(&d->err_lock);
}


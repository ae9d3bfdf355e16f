/* The core: one control thread running an epoll loop over every device's
 * listening socket, its front-end connection and its "ring broke" eventfd,
 * plus the engine threads.  The public vdev_* calls (any thread) are carried
 * out on the control thread through a call mailbox and waited for, so device
 * and connection state has a single owner and needs no lock. */
#include "vdev.h"

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

enum ev_kind { EV_WAKE, EV_LISTEN, EV_CONN, EV_BROKEN, EV_UDEV };

struct ev_src {
	enum ev_kind kind;
	struct vdev *dev;
};

struct vdev {
	struct core *core;
	struct vblk *blk;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t sock_dev;
	ino_t sock_ino;
	bool keep_socket;               /* daemon shutdown: leave the file */
	bool size_auto;                 /* size follows the backing's (none was set) */
	int listen_fd;
	int broken_fd;                  /* engine -> control: a ring broke */
	struct vu_conn *conn;           /* NULL when no front-end */
	unsigned seq;
	atomic_int state;
	pthread_mutex_t err_lock;
	char last_error[VDEV_ERR_MAX];
	struct ev_src ev_listen, ev_conn, ev_broken;
	struct vdev *next;
};

struct core_call {
	int (*fn)(struct core *core, void *arg);
	void *arg;
	int result;
	bool done;
	struct core_call *next;
};

struct core {
	struct engine *eng;
	pthread_t tid;
	int epfd;
	int wake_fd;
	struct ev_src ev_wake, ev_udev;
	struct udev *udev;
	struct udev_monitor *mon;       /* block devices going away */
	bool stop;
	pthread_mutex_t lock;           /* the call mailbox */
	pthread_cond_t cond;
	struct core_call *calls;
	struct vdev *devs;
	unsigned next_seq;
};

/* --- helpers ------------------------------------------------------------- */

static void set_error(struct vdev *d, const char *msg)
{
	size_t n = strnlen(msg, sizeof(d->last_error) - 1);

	pthread_mutex_lock(&d->err_lock);
	memcpy(d->last_error, msg, n);
	d->last_error[n] = '\0';
	pthread_mutex_unlock(&d->err_lock);
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

/* Run fn on the control thread and wait for it. */
static int core_call(struct core *core, int (*fn)(struct core *, void *), void *arg)
{
	struct core_call c = { .fn = fn, .arg = arg };
	uint64_t one = 1;

	if (pthread_equal(pthread_self(), core->tid))
		return fn(core, arg);
	pthread_mutex_lock(&core->lock);
	c.next = core->calls;
	core->calls = &c;
	pthread_mutex_unlock(&core->lock);
	(void)!write(core->wake_fd, &one, sizeof(one));
	pthread_mutex_lock(&core->lock);
	while (!c.done)
		pthread_cond_wait(&core->cond, &core->lock);
	pthread_mutex_unlock(&core->lock);
	return c.result;
}

static void run_calls(struct core *core)
{
	struct core_call *c, *next, *rev = NULL;
	uint64_t v;

	(void)!read(core->wake_fd, &v, sizeof(v));
	pthread_mutex_lock(&core->lock);
	c = core->calls;
	core->calls = NULL;
	pthread_mutex_unlock(&core->lock);
	for (; c; c = next) {           /* oldest first */
		next = c->next;
		c->next = rev;
		rev = c;
	}
	for (c = rev; c; c = next) {
		next = c->next;
		c->result = c->fn(core, c->arg);
		pthread_mutex_lock(&core->lock);
		c->done = true;
		pthread_cond_broadcast(&core->cond);
		pthread_mutex_unlock(&core->lock);
	}
}

/* --- connections ------------------------------------------------------------ */

static bool backend_failed(struct vdev *d)
{
	return d->blk->be && atomic_load(&d->blk->be->failed);
}

static void conn_close(struct vdev *d, const char *why)
{
	struct vu_conn *c = d->conn;

	if (!c)
		return;
	if (why && why[0]) {
		vlog(LOG_WARNING, "[%s] front-end disconnected: %s", d->blk->name, why);
		set_error(d, why);
	} else {
		vlog(LOG_INFO, "[%s] front-end disconnected", d->blk->name);
	}
	epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	vu_conn_teardown(c);
	close(c->fd);
	free(c);
	d->conn = NULL;
	d->blk->wce = true;
	atomic_store(&d->state, backend_failed(d) ? VDEV_ERROR : VDEV_LISTENING);
}

static bool conn_hung_up(struct vu_conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLRDHUP };
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void conn_accept(struct vdev *d)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &d->ev_conn };
	struct vu_conn *c;
	int fd;

	fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			vlog(LOG_WARNING, "[%s] accept: %s", d->blk->name, strerror(errno));
		return;
	}
	if (d->conn && conn_hung_up(d->conn)) {
		/* The old front-end is gone and its EOF not yet processed
		 * (QEMU reconnecting at once): retire it first. */
		conn_close(d, NULL);
	}
	if (d->conn) {
		/* One front-end per device, like a disk in one VM. */
		vlog(LOG_WARNING, "[%s] refused a second front-end connection", d->blk->name);
		close(fd);
		return;
	}
	c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	vu_conn_init(c, fd, d->blk, d->core->eng, d->seq);
	if (epoll_ctl(d->core->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		free(c);
		close(fd);
		return;
	}
	d->conn = c;
	atomic_store(&d->state, backend_failed(d) ? VDEV_ERROR : VDEV_CONNECTED);
	vlog(LOG_INFO, "[%s] front-end connected", d->blk->name);
}

static void conn_readable(struct vdev *d)
{
	struct vu_conn *c = d->conn;
	int rc;

	while (c && (rc = vu_recv(c)) != 0) {
		if (rc < 0) {
			conn_close(d, rc == -ECONNRESET && !c->err[0] ? NULL :
				   c->err[0] ? c->err : strerror(-rc));
			return;
		}
		rc = vu_dispatch(c, &c->rx);
		c->rx_len = 0;
		c->rx.nfds = 0;
		if (rc < 0) {
			conn_close(d, c->err[0] ? c->err : strerror(-rc));
			return;
		}
	}
}

/* Engine thread: a ring of d broke.  The control thread drops the
 * connection; the vq itself is already skipped by the engine. */
static void on_ring_broken(struct vblk *b, struct vq *vq, const char *why)
{
	struct vdev *d = b->owner;
	uint64_t one = 1;
	char msg[VDEV_ERR_MAX];

	snprintf(msg, sizeof(msg), "queue %u: %s", vq->index, why);
	set_error(d, msg);
	(void)!write(d->broken_fd, &one, sizeof(one));
}

static int live_resize(struct vdev *d, uint64_t size, char *err, size_t errlen);

/* The backing block device of d now has `bytes`: a device whose size
 * follows its backing's takes the new size, and a running guest is told. */
static void backing_resized(struct vdev *d, uint64_t bytes)
{
	char err[VDEV_ERR_MAX] = "";
	uint64_t old = d->blk->be->size;
	int rc;

	if (!d->size_auto || bytes == old)
		return;
	if (d->conn) {
		rc = live_resize(d, bytes, err, sizeof(err));
	} else {
		rc = d->blk->be->ops->resize ? d->blk->be->ops->resize(d->blk->be, bytes) : -EINVAL;
		if (rc < 0)
			snprintf(err, sizeof(err), "%s", strerror(-rc));
		d->blk->params.size = d->blk->be->size;
	}
	if (rc < 0) {
		char msg[VDEV_ERR_MAX + 64];
		snprintf(msg, sizeof(msg), "backing device resized to %llu bytes, not followed: %s",
			 (unsigned long long)bytes, err);
		set_error(d, msg);
		vlog(LOG_WARNING, "[%s] %s", d->blk->name, msg);
		return;
	}
	vlog(LOG_INFO, "[%s] backing device resized: %llu -> %llu bytes", d->blk->name,
	     (unsigned long long)old, (unsigned long long)d->blk->be->size);
}

/* A block device changed: if it is the backing of a device and it is gone
 * (removed, or its medium went away), fail that device's I/O from now on;
 * if it changed size, follow it. */
static void udev_event(struct core *core)
{
	struct udev_device *ud = udev_monitor_receive_device(core->mon);
	const char *action, *size;
	dev_t devnum;
	bool gone;

	if (!ud)
		return;
	action = udev_device_get_action(ud);
	devnum = udev_device_get_devnum(ud);
	size = udev_device_get_sysattr_value(ud, "size");
	gone = action && (strcmp(action, "remove") == 0 ||
			  (strcmp(action, "change") == 0 && size && strcmp(size, "0") == 0));
	if (gone && devnum) {
		for (struct vdev *d = core->devs; d; d = d->next) {
			char msg[VDEV_ERR_MAX + 4096];
			if (!d->blk->be || d->blk->be->rdev != devnum || backend_failed(d))
				continue;
			atomic_store(&d->blk->be->failed, true);
			atomic_store(&d->state, VDEV_ERROR);
			snprintf(msg, sizeof(msg),
				 "backing device %s (%u:%u) disappeared; I/O fails until it is reconfigured",
				 d->blk->params.path, major(devnum), minor(devnum));
			set_error(d, msg);
			vlog(LOG_ERR, "[%s] %s", d->blk->name, msg);
		}
	} else if (action && strcmp(action, "change") == 0 && size && devnum) {
		char *end;
		unsigned long long sectors = strtoull(size, &end, 10);

		if (*end == '\0' && sectors > 0 && sectors < (UINT64_MAX >> 9))
			for (struct vdev *d = core->devs; d; d = d->next)
				if (d->blk->be && d->blk->be->rdev == devnum && !backend_failed(d))
					backing_resized(d, sectors << 9);
	}
	udev_device_unref(ud);
}

static void *core_main(void *arg)
{
	struct core *core = arg;
	struct epoll_event evs[32];

	while (!core->stop) {
		int n = epoll_wait(core->epfd, evs, 32, -1);
		for (int i = 0; i < n; i++) {
			struct ev_src *s = evs[i].data.ptr;
			switch (s->kind) {
			case EV_WAKE:
				run_calls(core);
				break;
			case EV_LISTEN:
				conn_accept(s->dev);
				break;
			case EV_CONN:
				if (s->dev->conn)
					conn_readable(s->dev);
				break;
			case EV_UDEV:
				udev_event(core);
				break;
			case EV_BROKEN: {
				uint64_t v;
				char msg[VDEV_ERR_MAX];
				(void)!read(s->dev->broken_fd, &v, sizeof(v));
				vdev_last_error(s->dev, msg, sizeof(msg));
				conn_close(s->dev, msg);
				break;
			}
			}
			/* A call may have freed a device another event of this
			 * batch points at: start over with a fresh batch. */
			if (s->kind == EV_WAKE)
				break;
		}
	}
	return NULL;
}

/* --- core ------------------------------------------------------------------ */

int core_create(const struct core_opts *opts, struct core **out)
{
	struct core *core = calloc(1, sizeof(*core));
	struct epoll_event ev = { .events = EPOLLIN };
	int rc;

	if (!core)
		return -ENOMEM;
	pthread_mutex_init(&core->lock, NULL);
	pthread_cond_init(&core->cond, NULL);
	core->ev_wake.kind = EV_WAKE;
	core->epfd = epoll_create1(EPOLL_CLOEXEC);
	core->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ev.data.ptr = &core->ev_wake;
	if (core->epfd < 0 || core->wake_fd < 0 ||
	    epoll_ctl(core->epfd, EPOLL_CTL_ADD, core->wake_fd, &ev) < 0) {
		rc = -errno;
		goto fail;
	}
	fault_init();
	rc = eng_create(opts, &core->eng);
	if (rc < 0)
		goto fail;
	/* Kernel uevents need no udev daemon (containers, minimal hosts);
	 * with one, its processed events carry the device properties. */
	core->udev = udev_new();
	if (core->udev) {
		bool udevd = access("/run/udev/control", F_OK) == 0;
		core->mon = udev_monitor_new_from_netlink(core->udev, udevd ? "udev" : "kernel");
		if (core->mon &&
		    udev_monitor_filter_add_match_subsystem_devtype(core->mon, "block", NULL) == 0 &&
		    udev_monitor_enable_receiving(core->mon) == 0) {
			core->ev_udev.kind = EV_UDEV;
			ev.data.ptr = &core->ev_udev;
			epoll_ctl(core->epfd, EPOLL_CTL_ADD, udev_monitor_get_fd(core->mon), &ev);
		} else {
			vlog(LOG_WARNING, "no udev monitor: removal of backing devices goes unnoticed");
		}
	}
	rc = -pthread_create(&core->tid, NULL, core_main, core);
	if (rc < 0)
		goto fail_eng;
	pthread_setname_np(core->tid, "vhostd-ctl");
	*out = core;
	return 0;
fail_eng:
	eng_destroy(core->eng);
fail:
	if (core->epfd >= 0)
		close(core->epfd);
	if (core->wake_fd >= 0)
		close(core->wake_fd);
	free(core);
	return rc;
}

static void dev_free(struct vdev *d);

static int do_stop(struct core *core, void *arg)
{
	while (core->devs) {
		struct vdev *d = core->devs;
		core->devs = d->next;
		dev_free(d);
	}
	core->stop = true;
	return 0;
}

void core_destroy(struct core *core)
{
	if (!core)
		return;
	core_call(core, do_stop, NULL);
	pthread_join(core->tid, NULL);
	eng_destroy(core->eng);
	if (core->mon)
		udev_monitor_unref(core->mon);
	if (core->udev)
		udev_unref(core->udev);
	close(core->epfd);
	close(core->wake_fd);
	free(core);
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

static void dev_free(struct vdev *d)
{
	conn_close(d, NULL);
	if (d->listen_fd >= 0) {
		epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, d->listen_fd, NULL);
		close(d->listen_fd);
		unlink_socket(d);
	}
	if (d->broken_fd >= 0) {
		epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, d->broken_fd, NULL);
		close(d->broken_fd);
	}
	vblk_destroy(d->blk);
	pthread_mutex_destroy(&d->err_lock);
	free(d);
}

struct create_args {
	const char *name, *path;
	const struct vdev_params *p;
	struct vdev *out;
	char *err;
	size_t errlen;
};

static int do_create(struct core *core, void *arg)
{
	struct create_args *a = arg;
	struct epoll_event ev = { .events = EPOLLIN };
	struct vdev *d;
	int rc;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->core = core;
	d->listen_fd = d->broken_fd = -1;
	pthread_mutex_init(&d->err_lock, NULL);
	d->ev_listen = (struct ev_src){ EV_LISTEN, d };
	d->ev_conn = (struct ev_src){ EV_CONN, d };
	d->ev_broken = (struct ev_src){ EV_BROKEN, d };

	rc = vblk_create(a->name, a->p, &d->blk, a->err, a->errlen);
	if (rc < 0)
		goto fail;
	d->size_auto = a->p->size == 0;
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
	struct create_args a = { name, sock_path, p, NULL, err, errlen };
	int rc;

	err[0] = '\0';
	if (!name[0] || strlen(name) > VDEV_NAME_MAX) {
		snprintf(err, errlen, "device name must be 1 to %d bytes", VDEV_NAME_MAX);
		return -EINVAL;
	}
	rc = vdev_params_check(p, err, errlen);
	if (rc < 0)
		return rc;
	rc = core_call(core, do_create, &a);
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

	be_close(d->blk->be);
	d->blk->be = NULL;
	rc = be_open(p, &be, err, errlen);
	if (rc == 0) {
		d->blk->be = be;
		return 0;
	}
	if (old.backing == BE_FILE)
		old.size = 0;   /* whatever the file has now */
	if (be_open(&old, &be, err2, sizeof(err2)) == 0) {
		d->blk->be = be;
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

/* Everything but the size (and whether a shrink may cut data) is equal. */
static bool same_but_size(const struct vdev_params *a, const struct vdev_params *b)
{
	return a->block_size == b->block_size && a->backing == b->backing &&
	       strcmp(a->path, b->path) == 0 && a->readonly == b->readonly &&
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
	else
		snprintf(err, errlen, "the disk holds data between %llu and %llu bytes that the "
			 "shrink would cut off; set allow_shrink=1 to shrink anyway",
			 (unsigned long long)size, (unsigned long long)be->size);
	return -EBUSY;
}

struct resize_args {
	struct vdev *d;
	uint64_t size;
	int rc;
};

/* With every ring stopped: the engine reads the size for its range checks
 * and a ram backend's memory may move. */
static int resize_quiesced(void *arg)
{
	struct resize_args *r = arg;
	struct backend *be = r->d->blk->be;

	r->rc = be->ops->resize(be, r->size);
	r->d->blk->params.size = be->size;
	return 0;
}

/* Change the size under a running guest and tell it. */
static int live_resize(struct vdev *d, uint64_t size, char *err, size_t errlen)
{
	struct backend *be = d->blk->be;
	struct resize_args r = { d, size, 0 };
	uint64_t old = be->size;
	int rc;

	if (!be->ops->resize) {
		snprintf(err, errlen, "a %s backing cannot change size", be->ops->name);
		return -EINVAL;
	}
	rc = vu_conn_quiesce(d->conn, resize_quiesced, &r);
	if (r.rc < 0) {
		snprintf(err, errlen, "cannot resize to %llu bytes: %s", (unsigned long long)size,
			 strerror(-r.rc));
		return r.rc;
	}
	vlog(LOG_INFO, "[%s] resized from %llu to %llu bytes under a connected front-end%s",
	     d->blk->name, (unsigned long long)old, (unsigned long long)be->size,
	     vu_config_changed(d->conn) ? "; the guest was told" :
	     "; no back-end channel: the guest sees it at its next config read");
	if (rc < 0)     /* a ring would not restart: the connection drops */
		snprintf(err, errlen, "resized, but %s", d->conn->err);
	return rc;
}

static int do_set_params(struct core *core, void *arg)
{
	struct set_args *a = arg;
	struct vdev *d = a->d;
	const struct vdev_params *old = &d->blk->params, *p = a->p;
	bool same_backing = p->backing == old->backing && strcmp(p->path, old->path) == 0;
	/* a size set by hand stops following the backing's, once applied */
	bool by_hand = p->size && p->size != d->blk->be->size;
	int rc;

	if (d->conn) {
		uint64_t size = p->size ? p->size : old->size;

		if (!same_but_size(p, old)) {
			snprintf(a->err, a->errlen, "a front-end is connected: only size "
				 "can change until it disconnects");
			return -EBUSY;
		}
		rc = check_shrink(d, p, size, a->err, a->errlen);
		if (rc == 0 && size != d->blk->be->size)
			rc = live_resize(d, size, a->err, a->errlen);
		if (rc < 0)
			return rc;
		d->blk->params = *p;
		d->blk->params.size = d->blk->be->size;
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
	    (p->readonly != old->readonly && p->backing == BE_FILE) ||
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
	}
#undef LOAD
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

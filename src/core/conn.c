/* A device's front-end connection, on the control thread: accept (one
 * front-end per device; one more may wait while the last one's rings
 * stop), read and dispatch, park a message until its rings stopped,
 * close without waiting for the engine, and the block-device events that
 * concern a connected device.  See core_int.h. */
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

/* --- connections ------------------------------------------------------------ */

bool backend_failed(struct vdev *d)
{
	return d->blk->be && atomic_load(&d->blk->be->failed);
}

static void conn_adopt(struct vdev *d, int fd);

/* The epoll identity of c (a slot of d->ev_fe). */
static struct ev_src *conn_ev(struct vdev *d, struct vu_conn *c)
{
	return d->ev_fe[0].conn == c ? &d->ev_fe[0] : &d->ev_fe[1];
}

struct vu_conn *conn_rings(struct vdev *d)
{
	if (d->peer && d->blk->fe_owner == d->peer)
		return d->peer;
	return d->conn;
}

static void set_connected_state(struct vdev *d)
{
	atomic_store(&d->state, backend_failed(d) ? VDEV_ERROR :
		     d->conn ? VDEV_CONNECTED : VDEV_LISTENING);
}

/* The connection is over: its rings are stopped (or wait is true: stop
 * them now, whatever it takes). */
static void conn_free(struct vdev *d, struct vu_conn *c)
{
	vu_conn_teardown(c);            /* waits for rings still stopping */
	/* Only now: the front-end takes the hang-up as the end of the
	 * device's work and stops looking at the rings.  Completions that
	 * were still to come must be in the used rings, their interrupts
	 * sent, before it does. */
	if (c->fd >= 0)
		close(c->fd);
	if (c == d->conn) {
		/* The second front-end (a hand-over's destination) is the
		 * device's front-end now. */
		d->conn = d->peer;
		d->peer = NULL;
	} else {
		d->peer = NULL;
	}
	conn_ev(d, c)->conn = NULL;
	free(c);
	if (!d->conn)
		d->blk->wce = true;
	set_connected_state(d);
	if (d->next_fd >= 0 && !d->peer) {      /* a front-end waited for this one to go */
		int fd = d->next_fd;
		d->next_fd = -1;
		conn_adopt(d, fd);
	}
}

/* Drop front-end c.  Its rings stop in the engine without holding this
 * thread (a backend that hangs must not stall the other devices): the
 * connection is freed once the last one let go (EV_DETACH), and the device
 * listens again then. */
void conn_close(struct vdev *d, struct vu_conn *c, const char *why)
{
	if (!c)
		return;
	if (!c->closing) {
		if (why && why[0]) {
			vlog(LOG_WARNING, "[%s] front-end disconnected: %s", d->blk->name, why);
			set_error(d, why);
		} else {
			vlog(LOG_INFO, "[%s] front-end disconnected", d->blk->name);
		}
		if (!c->parked)         /* a parked one is out of the epoll set */
			epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		/* The socket stays open (unread) until the rings drained:
		 * conn_free closes it. */
		if (!vu_conn_close_start(c))
			return;         /* EV_DETACH finishes it */
	} else if (vu_resume(c) > 0) {
		return;
	}
	conn_free(d, c);
}

/* dev_free: no waiting on EV_DETACH any more. */
void conn_close_now(struct vdev *d)
{
	if (d->next_fd >= 0)
		close(d->next_fd);
	d->next_fd = -1;
	while (d->conn) {
		struct vu_conn *c = d->peer ? d->peer : d->conn;

		conn_close(d, c, NULL);
		if (c == d->conn || c == d->peer)
			conn_free(d, c);
	}
}

/* A user call on d (set params, destroy): a front-end that left is gone,
 * even if its rings are still stopping (usually a matter of microseconds;
 * with storage that hangs, this waits for it, as it always did). */
void settle(struct vdev *d)
{
	if (d->peer && d->peer->closing)
		conn_free(d, d->peer);
	if (d->conn && d->conn->closing)
		conn_free(d, d->conn);
}

/* A parked message ran: read the socket again. */
static void conn_unpark(struct vdev *d, struct vu_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = conn_ev(d, c) };

	c->rx_len = 0;
	c->rx.nfds = 0;
	if (epoll_ctl(d->core->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		conn_close(d, c, "cannot watch the connection again");
}

/* EV_DETACH for c, or a periodic look while something waits: a ring let
 * go.  c may be gone after it. */
static void conn_detached_one(struct vdev *d, struct vu_conn *c)
{
	int rc;

	if (c->closing) {
		conn_close(d, c, NULL);
		return;
	}
	if (!c->parked)
		return;
	rc = vu_resume(c);
	if (rc > 0)
		return;
	if (rc < 0) {
		c->parked = false;
		vu_msg_close_fds(&c->rx);
		conn_close(d, c, c->err[0] ? c->err : strerror(-rc));
		return;
	}
	if (c->parked)          /* parked again (cannot happen: all stopped) */
		return;
	conn_unpark(d, c);
	if (c == d->conn || c == d->peer)
		conn_readable(d, c);
}

void conn_detached(struct vdev *d)
{
	struct vu_conn *peer = d->peer;

	if (d->conn)
		conn_detached_one(d, d->conn);
	/* the peer may have become d->conn meanwhile (the first one went) */
	if (peer && (peer == d->peer || peer == d->conn))
		conn_detached_one(d, peer);
}

static bool conn_hung_up(struct vu_conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLRDHUP };
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Serve the front-end on fd: as the device's front-end, or as the second
 * one while the first is connected (a hand-over, see vu_claim_rings). */
static void conn_adopt(struct vdev *d, int fd)
{
	struct ev_src *slot = d->ev_fe[0].conn ? &d->ev_fe[1] : &d->ev_fe[0];
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = slot };
	struct vu_conn *c = malloc(sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	vu_conn_init(c, fd, d->blk, d->core->eng, d->seq);
	c->detach_fd = d->detach_fd;
	*slot = (struct ev_src){ EV_CONN, d, c };
	if (epoll_ctl(d->core->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		slot->conn = NULL;
		free(c);
		close(fd);
		return;
	}
	if (d->conn) {
		d->peer = c;
		vlog(LOG_INFO, "[%s] second front-end connected (a hand-over: it takes the queues "
		     "once the first one stopped them)", d->blk->name);
	} else {
		d->conn = c;
		vlog(LOG_INFO, "[%s] front-end connected", d->blk->name);
	}
	set_connected_state(d);
}

void conn_accept(struct vdev *d)
{
	int fd;

	fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			vlog(LOG_WARNING, "[%s] accept: %s", d->blk->name, strerror(errno));
		return;
	}
	/* A front-end that is gone but whose EOF was not processed yet (QEMU
	 * reconnecting at once): retire it first. */
	if (d->peer && !d->peer->closing && conn_hung_up(d->peer))
		conn_close(d, d->peer, NULL);
	if (d->conn && !d->conn->closing && conn_hung_up(d->conn))
		conn_close(d, d->conn, NULL);
	if (d->conn && !d->peer && !d->conn->closing) {
		conn_adopt(d, fd);      /* the second front-end */
		return;
	}
	if (d->conn && d->next_fd < 0) {
		/* A front-end is closing (its rings are still stopping), or
		 * two are connected: the new one waits (its messages stay in
		 * the socket) and is served once one of them has gone. */
		d->next_fd = fd;
		return;
	}
	if (d->conn) {
		vlog(LOG_WARNING, "[%s] refused a third front-end connection", d->blk->name);
		close(fd);
		return;
	}
	conn_adopt(d, fd);
}

void conn_readable(struct vdev *d, struct vu_conn *c)
{
	int rc;

	while (!c->closing && (rc = vu_recv(c)) != 0) {
		if (rc < 0) {
			conn_close(d, c, rc == -ECONNRESET && !c->err[0] ? NULL :
				   c->err[0] ? c->err : strerror(-rc));
			return;
		}
		rc = vu_dispatch(c, &c->rx);
		if (rc == 0 && c->parked) {
			/* Until its rings stopped: nothing more is read (level-
			 * triggered epoll would report the socket again). */
			epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, c->fd, NULL);
			return;
		}
		c->rx_len = 0;
		c->rx.nfds = 0;
		if (rc < 0) {
			conn_close(d, c, c->err[0] ? c->err : strerror(-rc));
			return;
		}
	}
}

/* Engine thread: a ring of d broke.  The control thread drops the
 * connection; the vq itself is already skipped by the engine. */
void on_ring_broken(struct vblk *b, struct vq *vq, const char *why)
{
	struct vdev *d = b->owner;
	uint64_t one = 1;
	char msg[VDEV_ERR_MAX];

	snprintf(msg, sizeof(msg), "queue %u: %s", vq->index, why);
	set_error(d, msg);
	(void)!write(d->broken_fd, &one, sizeof(one));
}


/* The backing of d now has `bytes`: a device whose size follows its
 * backing's (always: an rbd device is its image) takes the new size, and a
 * running guest is told. */
static void backing_resized(struct vdev *d, uint64_t bytes, bool always)
{
	char err[VDEV_ERR_MAX] = "";
	uint64_t old = d->blk->be->size;
	int rc;

	if ((!d->size_auto && !always) || bytes == old || bytes == 0)
		return;
	if (d->conn) {
		rc = live_resize(d, NULL, bytes, err, sizeof(err));
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
void udev_event(struct core *core)
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
					backing_resized(d, sectors << 9, false);
	}
	udev_device_unref(ud);
}


void backend_watch(struct vdev *d, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &d->ev_backend };
	struct backend *be = d->blk ? d->blk->be : NULL;

	if (!be || be->event_fd < 0)
		return;
	if (on) {
		if (epoll_ctl(d->core->epfd, EPOLL_CTL_ADD, be->event_fd, &ev) < 0)
			vlog(LOG_WARNING, "[%s] cannot watch the backend's events: %s",
			     d->blk->name, strerror(errno));
	} else {
		epoll_ctl(d->core->epfd, EPOLL_CTL_DEL, be->event_fd, NULL);
	}
}

void backend_event(struct vdev *d)
{
	struct backend *be = d->blk->be;
	uint64_t v, size;

	if (!be || be->event_fd < 0)
		return;
	(void)!read(be->event_fd, &v, sizeof(v));
	if (!be->ops->refresh || be->ops->refresh(be, &size) < 0 || backend_failed(d))
		return;
	backing_resized(d, size, true);
}

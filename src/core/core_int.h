/* Private to the core (src/core): the control thread's objects and what
 * its files share.  core.c: the control thread (epoll loop, call mailbox,
 * udev); conn.c: a device's front-end connection (accept, read, park,
 * close); vdev.c: devices (create, settings, resize, destroy, getters).
 * Everything here runs on the control thread unless it says otherwise. */
#ifndef VHOSTD_CORE_INT_H
#define VHOSTD_CORE_INT_H

#include <libudev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "blk.h"
#include "vdev.h"
#include "vu.h"

enum ev_kind { EV_WAKE, EV_LISTEN, EV_CONN, EV_BROKEN, EV_DETACH, EV_UDEV };

struct ev_src {
	enum ev_kind kind;
	struct vdev *dev;
	struct vu_conn *conn;           /* EV_CONN: which front-end */
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
	int detach_fd;                  /* engine -> control: a ring let go */
	int next_fd;                    /* a front-end waiting for the closing one */
	struct vu_conn *conn;           /* NULL when no front-end */
	struct vu_conn *peer;           /* a second one: a hand-over (migration) */
	unsigned seq;
	atomic_int state;
	pthread_mutex_t err_lock;
	char last_error[VDEV_ERR_MAX];
	struct ev_src ev_listen, ev_broken, ev_detach;
	/* EV_CONN, one per front-end connection (.conn NULL: slot free); they
	 * live with the device, so an event of a batch that names a
	 * connection freed earlier in the batch finds .conn NULL. */
	struct ev_src ev_fe[2];
	struct vdev *next;
};

struct core_call {
	int (*fn)(struct core *core, void *arg);
	void *arg;
	int result;
	bool done;
	struct core_call *next;
};

/* A throttle group: limits shared by the devices that name it.  Freed with
 * the core only (an engine thread may still be reading one a device just
 * left). */
struct vgroup {
	char name[VDEV_NAME_MAX + 1];
	struct vdev_limits limits;
	struct qos qos;
	struct vgroup *next;
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
	struct vgroup *groups, *retired;
};


/* vdev.c */
void set_error(struct vdev *d, const char *msg);        /* any thread */
int live_resize(struct vdev *d, const struct vdev_params *p, uint64_t size,
		char *err, size_t errlen);
void dev_free(struct vdev *d);

/* core.c */
int core_call(struct core *core, int (*fn)(struct core *, void *), void *arg);
uint64_t core_now_ns(void);
/* The group named name (or NULL); an empty name is no group (*out NULL). */
int core_group_find(struct core *core, const char *name, struct vgroup **out,
		    char *err, size_t errlen);

/* conn.c */
bool backend_failed(struct vdev *d);
void conn_accept(struct vdev *d);
void conn_readable(struct vdev *d, struct vu_conn *c);
void conn_close(struct vdev *d, struct vu_conn *c, const char *why);
/* The front-end whose queues the device runs (or the first one). */
struct vu_conn *conn_rings(struct vdev *d);
void conn_close_now(struct vdev *d);
void conn_detached(struct vdev *d);
void settle(struct vdev *d);
void on_ring_broken(struct vblk *b, struct vq *vq, const char *why);  /* engine thread */
void udev_event(struct core *core);

#endif

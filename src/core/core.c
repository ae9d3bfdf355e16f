/* The core: one control thread running an epoll loop over every device's
 * listening socket, its front-end connection and its eventfds ("a ring
 * broke", "a ring let go"), the udev monitor, plus the engine threads.  The
 * public vdev_* calls (any thread) are carried out on the control thread
 * through a call mailbox and waited for, so device and connection state has
 * a single owner and needs no lock.  See core_int.h. */
#include "core_int.h"

#include <ctype.h>
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
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "engine.h"
#include "fault.h"
#include "log.h"
#include "vu.h"

/* Run fn on the control thread and wait for it. */
int core_call(struct core *core, int (*fn)(struct core *, void *), void *arg)
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


static void *core_main(void *arg)
{
	struct core *core = arg;
	struct epoll_event evs[32];

	while (!core->stop) {
		int timeout = -1, n;

		/* Rings stopping: look every second, to warn about a backend
		 * that does not complete (eng_detach_done). */
		for (struct vdev *d = core->devs; d; d = d->next)
			for (struct vu_conn *c = d->conn; c; c = c == d->conn ? d->peer : NULL)
				if (c->parked || c->closing)
					timeout = 1000;
		n = epoll_wait(core->epfd, evs, 32, timeout);
		if (n == 0) {
			for (struct vdev *d = core->devs, *next; d; d = next) {
				next = d->next;
				conn_detached(d);
			}
			continue;
		}
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
				if (s->conn)
					conn_readable(s->dev, s->conn);
				break;
			case EV_UDEV:
				udev_event(core);
				break;
			case EV_BROKEN: {
				uint64_t v;
				char msg[VDEV_ERR_MAX];
				(void)!read(s->dev->broken_fd, &v, sizeof(v));
				vdev_last_error(s->dev, msg, sizeof(msg));
				if (s->dev->conn)
					conn_close(s->dev, conn_rings(s->dev), msg);
				break;
			}
			case EV_DETACH: {
				uint64_t v;
				(void)!read(s->dev->detach_fd, &v, sizeof(v));
				conn_detached(s->dev);
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

void dev_free(struct vdev *d);

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

uint64_t core_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --- throttle groups -------------------------------------------------------- */

static bool group_name_ok(const char *n)
{
	size_t len = strnlen(n, VDEV_NAME_MAX + 1);

	if (len == 0 || len > VDEV_NAME_MAX || n[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)n[i]) && !strchr("._-", n[i]))
			return false;
	return true;
}

int core_group_find(struct core *core, const char *name, struct vgroup **out,
		    char *err, size_t errlen)
{
	*out = NULL;
	if (!name[0])
		return 0;
	for (struct vgroup *g = core->groups; g; g = g->next)
		if (strcmp(g->name, name) == 0) {
			*out = g;
			return 0;
		}
	snprintf(err, errlen, "no throttle group '%s'", name);
	return -EINVAL;
}

struct group_args {
	const char *name;
	const struct vdev_limits *l;
	char *err;
	size_t errlen;
};

static int do_group_set(struct core *core, void *arg)
{
	struct group_args *a = arg;
	struct vgroup *g;

	if (core_group_find(core, a->name, &g, a->err, a->errlen) < 0 || !g) {
		g = calloc(1, sizeof(*g));
		if (!g)
			return -ENOMEM;
		snprintf(g->name, sizeof(g->name), "%s", a->name);
		g->next = core->groups;
		core->groups = g;
		a->err[0] = '\0';
	}
	g->limits = *a->l;
	qos_set(&g->qos, a->l, core_now_ns());
	return 0;
}

int core_group_set(struct core *core, const char *name, const struct vdev_limits *l,
		   char *err, size_t errlen)
{
	struct group_args a = { name, l, err, errlen };

	err[0] = '\0';
	if (!group_name_ok(name)) {
		snprintf(err, errlen, "'%.64s' is not a group name: 1 to %d of A-Z a-z 0-9 . _ -, "
			 "not starting with '.'", name, VDEV_NAME_MAX);
		return -EINVAL;
	}
	return core_call(core, do_group_set, &a);
}

static int do_group_remove(struct core *core, void *arg)
{
	struct group_args *a = arg;
	struct vgroup **pp;

	for (struct vdev *d = core->devs; d; d = d->next)
		if (strcmp(d->blk->params.group, a->name) == 0) {
			snprintf(a->err, a->errlen, "throttle group '%s' is used by %s",
				 a->name, d->blk->name);
			return -EBUSY;
		}
	for (pp = &core->groups; *pp; pp = &(*pp)->next) {
		struct vgroup *g = *pp;
		if (strcmp(g->name, a->name) == 0) {
			*pp = g->next;
			g->next = core->retired;
			core->retired = g;
			return 0;
		}
	}
	snprintf(a->err, a->errlen, "no throttle group '%s'", a->name);
	return -ENOENT;
}

int core_group_remove(struct core *core, const char *name, char *err, size_t errlen)
{
	struct group_args a = { name, NULL, err, errlen };

	err[0] = '\0';
	return core_call(core, do_group_remove, &a);
}

static void free_groups(struct vgroup *g)
{
	while (g) {
		struct vgroup *next = g->next;
		free(g);
		g = next;
	}
}

void core_destroy(struct core *core)
{
	if (!core)
		return;
	core_call(core, do_stop, NULL);
	pthread_join(core->tid, NULL);
	eng_destroy(core->eng);
	free_groups(core->groups);
	free_groups(core->retired);
	if (core->mon)
		udev_monitor_unref(core->mon);
	if (core->udev)
		udev_unref(core->udev);
	close(core->epfd);
	close(core->wake_fd);
	free(core);
}


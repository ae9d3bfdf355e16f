/* ctrl: the operations on one controller — its snapshot (mgr_ctrl_info) and
 * the change of its settings (mgr_ctrl_set), which brings it live; see
 * mgr.h.  Runs on FUSE worker threads; op_lock serialises the operations on
 * one controller. */
#include "mgr_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cfgparse.h"
#include "log.h"

const char *mgr_ctl_dir(struct mgr *m)
{
	return m->st.ctldir;
}

void mgr_get_info(struct mgr *m, struct mgr_info *out)
{
	out->store = m->st.dir;
	out->sockdir = m->st.sockdir;
	out->devdir = m->st.devdir;
	out->ctldir = m->st.ctldir;
	out->state_path = m->st.state_path;
	out->engine_info = m->engine_info;
	out->max_ctrls = m->max_ctrls;
}

_Static_assert((int)CTRL_NOPS == (int)VDEV_NOPS && CTRL_OP_READ == (int)VDEV_OP_READ &&
	       CTRL_OP_WRITE == (int)VDEV_OP_WRITE && CTRL_OP_FLUSH == (int)VDEV_OP_FLUSH,
	       "enum ctrl_op mirrors the core's enum vdev_op");

const char *ctrl_op_name(enum ctrl_op op)
{
	static const char *const names[CTRL_NOPS] = { "read", "write", "flush", "other" };

	return (unsigned)op < CTRL_NOPS ? names[op] : "?";
}

const char *ctrl_state_name(enum ctrl_state s)
{
	switch (s) {
	case CTRL_UNCONFIGURED: return "unconfigured";
	case CTRL_LISTENING: return "listening";
	case CTRL_CONNECTED: return "connected";
	default: return "error";
	}
}

/* Complete enough to go live: the size is known, given or the file's (the
 * image's). */
bool mgr_complete(const struct vdev_params *p, bool have_size)
{
	return have_size || p->backing == BE_FILE || p->backing == BE_RBD;
}

/* The parameters to hand the core: a file or rbd backing without a size of
 * its own keeps the size the core found (0 only when the backing changes,
 * meaning "the new file's (image's) size"). */
static void core_params(struct ctrl *c, const struct vdev_params *p, bool have_size,
			struct vdev_params *out)
{
	*out = *p;
	if (!have_size && (p->backing == BE_FILE || p->backing == BE_RBD) && c->vdev &&
	    vdev_same_backing(&c->params, p)) {
		struct vdev_params cur;
		vdev_get_params(c->vdev, &cur);
		out->size = cur.size;
	}
}

/* Bring a configured controller live: socket listening, node in devices/.
 * op_lock held.  On success *out is the new device; on failure nothing is
 * left behind and nothing foreign was touched. */
int mgr_go_live(struct mgr *m, struct ctrl *c, const struct vdev_params *p,
		struct vdev **out, char *err, size_t errlen)
{
	char sock[PATH_MAX];
	bool need_node;
	struct vdev *d = NULL;
	int r;

	r = store_check(&m->st, c->name, c->minor, c->restored, &need_node, err, errlen);
	if (r < 0)
		return r;
	store_sock_path(&m->st, c->name, sock, sizeof(sock));
	err[0] = '\0';
	r = vdev_create(m->core, c->name, sock, p, &d, err, errlen);
	if (r < 0) {
		if (!err[0])
			snprintf(err, errlen, "cannot create the device: %s", strerror(-r));
		return r;
	}
	if (need_node) {
		r = store_node_make(&m->st, c->name, c->minor, err, errlen);
		if (r < 0) {
			vdev_destroy(d, true);
			return r;
		}
	}
	*out = d;
	return 0;
}

/* op_lock held. */
static enum ctrl_state state_of(struct ctrl *c)
{
	if (!c->vdev)
		return mgr_complete(&c->params, c->have_size) ? CTRL_ERROR
							       : CTRL_UNCONFIGURED;
	switch (vdev_get_state(c->vdev)) {
	case VDEV_LISTENING: return CTRL_LISTENING;
	case VDEV_CONNECTED: return CTRL_CONNECTED;
	default: return CTRL_ERROR;
	}
}

int mgr_ctrl_info(struct mgr *m, struct ctrl *c, struct ctrl_info *out)
{
	struct vdev_stats st;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		pthread_mutex_unlock(&c->op_lock);
		return -ENOENT;
	}
	memcpy(out->name, c->name, sizeof(out->name));
	out->minor = c->minor;
	out->state = state_of(c);
	pthread_mutex_lock(&m->lock);
	out->params = c->params;
	out->have_size = c->have_size;
	out->mtime = c->mtime;
	snprintf(out->error, sizeof(out->error), "%s", c->err);
	pthread_mutex_unlock(&m->lock);
	store_sock_path(&m->st, c->name, out->socket, sizeof(out->socket));
	store_node_path(&m->st, c->name, out->device, sizeof(out->device));
	out->live = c->vdev != NULL;
	if (c->vdev) {
		struct vdev_params cur;

		vdev_get_params(c->vdev, &cur);
		out->live_size = cur.size;
		memset(&st, 0, sizeof(st));
		vdev_get_stats(c->vdev, &st);
		out->stats.reads = st.reads;
		out->stats.writes = st.writes;
		out->stats.flushes = st.flushes;
		out->stats.discards = st.discards;
		out->stats.write_zeroes = st.write_zeroes;
		out->stats.get_ids = st.get_ids;
		out->stats.bytes_read = st.bytes_read;
		out->stats.bytes_written = st.bytes_written;
		out->stats.errors = st.errors;
		out->stats.inflight = st.inflight;
		for (int i = 0; i < CTRL_NOPS; i++) {
			out->stats.lat[i].count = st.lat[i].count;
			out->stats.lat[i].p50_ns = st.lat[i].p50_ns;
			out->stats.lat[i].p99_ns = st.lat[i].p99_ns;
			out->stats.lat[i].p999_ns = st.lat[i].p999_ns;
			out->stats.lat[i].max_ns = st.lat[i].max_ns;
		}
		out->stats.throttled_ns = st.throttled_ns;
		st.detail[sizeof(st.detail) - 1] = '\0';
		memcpy(out->stats.detail, st.detail, sizeof(out->stats.detail));
		if (!out->error[0])
			vdev_last_error(c->vdev, out->error, sizeof(out->error));
	}
	pthread_mutex_unlock(&c->op_lock);
	return 0;
}

static bool params_equal(const struct vdev_params *a, const struct vdev_params *b)
{
	return a->size == b->size && a->block_size == b->block_size &&
	       a->backing == b->backing && a->readonly == b->readonly &&
	       a->queues == b->queues && strcmp(a->serial, b->serial) == 0 &&
	       a->allow_shrink == b->allow_shrink && vdev_same_backing(a, b) &&
	       a->packed == b->packed &&
	       a->limits.iops == b->limits.iops && a->limits.bps == b->limits.bps &&
	       a->limits.read_bps == b->limits.read_bps &&
	       a->limits.write_bps == b->limits.write_bps &&
	       a->limits.iops_burst == b->limits.iops_burst &&
	       a->limits.bps_burst == b->limits.bps_burst &&
	       strcmp(a->group, b->group) == 0;
}

static void refuse(struct mgr *m, struct ctrl *c, const char *what, const char *why)
{
	pthread_mutex_lock(&m->lock);
	mgr_join(c->err, sizeof(c->err), what, why);
	pthread_mutex_unlock(&m->lock);
	vlog(LOG_WARNING, "[%s] %s%s", c->name, what, why);
}

int mgr_ctrl_refused(struct mgr *m, struct ctrl *c, const char *why)
{
	bool removed;

	pthread_mutex_lock(&m->lock);
	removed = c->removed;
	pthread_mutex_unlock(&m->lock);
	if (removed)
		return -ENOENT;
	refuse(m, c, "", why);
	return 0;
}

int mgr_ctrl_set(struct mgr *m, struct ctrl *c, const struct vdev_params *np,
		 unsigned set, const char *what_)
{
	char why[VDEV_ERR_MAX] = "", what[64];
	struct vdev_params p;
	struct vdev *d = NULL;
	bool have, changed = true, glock = false;
	int r;

	snprintf(what, sizeof(what), "%srefused: ", what_ ? what_ : "");
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		pthread_mutex_unlock(&c->op_lock);
		return -ENOENT;
	}
	pthread_mutex_lock(&m->lock);
	p = c->params;
	have = c->have_size;
	pthread_mutex_unlock(&m->lock);

	/* The state file must take back whatever is accepted here. */
	r = cfg_check_values(np, set, why, sizeof(why));
	if (r < 0)
		goto refused;
	cfg_apply(&p, np, set);
	have = have || (set & CFG_BIT(CFG_SIZE));
	/* An rbd snapshot can only be read: readonly follows, and saying
	 * otherwise in the same write is refused rather than ignored. */
	if (p.backing == BE_RBD && p.rbd.snap[0] && !p.readonly) {
		if (set & CFG_BIT(CFG_READONLY)) {
			snprintf(why, sizeof(why), "rbd snapshot %s is read-only: readonly=0 cannot apply",
				 p.rbd.snap);
			r = -EINVAL;
			goto refused;
		}
		p.readonly = true;
	}

	/* Joining a group: it must exist, and it stays until this change is
	 * committed (mgr_group_destroy takes group_lock too). */
	if ((set & CFG_BIT(CFG_GROUP)) && p.group[0]) {
		bool found;

		pthread_mutex_lock(&m->group_lock);
		glock = true;
		pthread_mutex_lock(&m->lock);
		found = mgr_group_find_locked(m, p.group) != NULL;
		pthread_mutex_unlock(&m->lock);
		if (!found) {
			snprintf(why, sizeof(why), "no throttle group %s (mkdir "
				 "ctl/.groups/%s first)", p.group, p.group);
			r = -EINVAL;
			goto refused;
		}
	}

	if (!mgr_complete(&p, have)) {
		/* Still unconfigured: check the other settings with a stand-in
		 * size that every valid block size divides. */
		struct vdev_params t = p;
		t.size = 1u << 20;
		r = vdev_params_check(&t, why, sizeof(why));
		if (r < 0)
			goto refused;
	} else {
		struct vdev_params cp;

		core_params(c, &p, have, &cp);
		r = vdev_params_check(&cp, why, sizeof(why));
		if (r < 0)
			goto refused;
		if (!c->vdev) {
			r = mgr_go_live(m, c, &cp, &d, why, sizeof(why));
			if (r < 0)
				goto refused;
			vlog(LOG_INFO, "[%s] live, node devices/%s is %d:%u", c->name,
			     c->name, MGR_DEV_MAJOR, c->minor);
		} else if (params_equal(&p, &c->params)) {
			changed = false;
		} else {
			why[0] = '\0';
			r = vdev_set_params(c->vdev, &cp, why, sizeof(why));
			if (r == -EBUSY && !why[0])
				snprintf(why, sizeof(why), "the settings cannot change while "
					 "a front-end is connected");
			else if (r < 0 && !why[0])
				snprintf(why, sizeof(why), "%s", strerror(-r));
			if (r < 0)
				goto refused;
		}
	}

	/* An rbd device is as large as its image: a size written resized the
	 * image (or was refused), and the image's size is what the state file
	 * must not pin (`rbd resize` from outside is followed). */
	if (p.backing == BE_RBD) {
		p.size = 0;
		have = false;
	}
	pthread_mutex_lock(&m->lock);
	c->params = p;
	c->have_size = have;
	if (d)
		c->vdev = d;
	c->err[0] = '\0';
	if (changed) {
		c->mtime = time(NULL);
		m->gen++;
	}
	pthread_mutex_unlock(&m->lock);
	if (glock)
		pthread_mutex_unlock(&m->group_lock);
	pthread_mutex_unlock(&c->op_lock);
	if (changed && mgr_save(m, why, sizeof(why)) < 0) {
		pthread_mutex_lock(&m->lock);
		mgr_join(c->err, sizeof(c->err), "the change was applied but ", why);
		pthread_mutex_unlock(&m->lock);
	}
	return 0;
refused:
	if (r >= 0)
		r = -EINVAL;
	refuse(m, c, what, why);
	if (glock)
		pthread_mutex_unlock(&m->group_lock);
	pthread_mutex_unlock(&c->op_lock);
	return r;
}

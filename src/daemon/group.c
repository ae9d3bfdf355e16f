/* group: throttle groups (ctl/.groups/NAME) — the daemon's record of each
 * group's limits, kept in step with the core's (core_group_set) and with the
 * controllers that name a group; see mgr.h.  Runs on FUSE worker threads
 * and on main at restore.  Trusts its callers' pointers; limits arrive typed
 * and are checked again by cfgparse's rules (the state file must take them
 * back). */
#include "mgr_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfgparse.h"
#include "log.h"

/* mgr->lock held. */
struct mgr_group *mgr_group_find_locked(struct mgr *m, const char *name)
{
	for (struct mgr_group *g = m->groups; g; g = g->next)
		if (strcmp(g->name, name) == 0)
			return g;
	return NULL;
}

/* Controllers whose committed group is name; the first few names in buf.
 * mgr->lock held. */
static unsigned users_locked(struct mgr *m, const char *name, char *buf, size_t len)
{
	unsigned n = 0;
	size_t off = 0;

	if (len)
		buf[0] = '\0';
	for (struct ctrl *c = m->head; c; c = c->next) {
		if (strcmp(c->params.group, name) != 0)
			continue;
		if (n < 3 && off < len) {
			int w = snprintf(buf + off, len - off, "%s%s", n ? ", " : "", c->name);
			off += w > 0 ? (size_t)w : 0;
		} else if (n == 3 && off < len) {
			snprintf(buf + off, len - off, ", ...");
			off = len;
		}
		n++;
	}
	return n;
}

/* Hand the limits to the core (absent before mgr_restore gave us one). */
static int core_set(struct mgr *m, const char *name, const struct vdev_limits *l,
		    char *why, size_t len)
{
	int r;

	if (!m->core)
		return 0;
	why[0] = '\0';
	r = core_group_set(m->core, name, l, why, len);
	if (r < 0 && !why[0])
		snprintf(why, len, "%s", strerror(-r));
	return r;
}

static void append_locked(struct mgr *m, struct mgr_group *g)
{
	struct mgr_group **pp = &m->groups;

	while (*pp)
		pp = &(*pp)->next;
	g->next = NULL;
	*pp = g;
	m->ngroups++;
}

static void save_or_note(struct mgr *m, const char *name)
{
	char err[VDEV_ERR_MAX];

	if (mgr_save(m, err, sizeof(err)) == 0)
		return;
	pthread_mutex_lock(&m->lock);
	struct mgr_group *g = mgr_group_find_locked(m, name);
	if (g)
		mgr_join(g->err, sizeof(g->err), "the change was applied but ", err);
	pthread_mutex_unlock(&m->lock);
}

int mgr_group_create(struct mgr *m, const char *name)
{
	char why[VDEV_ERR_MAX];
	struct vdev_limits none = { 0 };
	struct mgr_group *g;
	int r;

	if (!cfg_group_name_valid(name)) {
		vlog(LOG_WARNING, "mkdir .groups/%.*s refused: throttle group names are "
		     "1-%d characters of A-Z a-z 0-9 . _ - not starting with '.'",
		     VDEV_NAME_MAX, name, VDEV_NAME_MAX);
		return -EINVAL;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	snprintf(g->name, sizeof(g->name), "%s", name);
	pthread_mutex_lock(&m->group_lock);
	pthread_mutex_lock(&m->lock);
	r = mgr_group_find_locked(m, name) ? -EEXIST : 0;
	pthread_mutex_unlock(&m->lock);
	if (r == 0) {
		r = core_set(m, name, &none, why, sizeof(why));
		if (r < 0)
			vlog(LOG_WARNING, "mkdir .groups/%s refused: %s", name, why);
	}
	if (r < 0) {
		pthread_mutex_unlock(&m->group_lock);
		free(g);
		return r;
	}
	pthread_mutex_lock(&m->lock);
	g->mtime = m->mtime = time(NULL);
	append_locked(m, g);
	m->gen++;
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->group_lock);
	vlog(LOG_INFO, "throttle group %s created", name);
	save_or_note(m, name);
	return 0;
}

int mgr_group_destroy(struct mgr *m, const char *name)
{
	char why[VDEV_ERR_MAX], users[160], err[VDEV_ERR_MAX];
	struct mgr_group *g, **pp;
	unsigned n;
	int r = 0;

	pthread_mutex_lock(&m->group_lock);
	pthread_mutex_lock(&m->lock);
	g = mgr_group_find_locked(m, name);
	if (!g) {
		pthread_mutex_unlock(&m->lock);
		pthread_mutex_unlock(&m->group_lock);
		return -ENOENT;
	}
	n = users_locked(m, name, users, sizeof(users));
	if (n) {
		snprintf(g->err, sizeof(g->err), "rmdir refused: %s %s %s in this group; "
			 "write an empty group to %s first", n == 1 ? "controller" :
			 "controllers", users, n == 1 ? "is" : "are", n == 1 ? "it" : "them");
		vlog(LOG_WARNING, "throttle group %s: %s", name, g->err);
		pthread_mutex_unlock(&m->lock);
		pthread_mutex_unlock(&m->group_lock);
		return -EBUSY;
	}
	pthread_mutex_unlock(&m->lock);
	/* A group the core never had (its restore failed, or there are no
	 * groups in this build) is only ours to forget. */
	if (m->core) {
		why[0] = '\0';
		r = core_group_remove(m->core, name, why, sizeof(why));
		if (r == -ENOENT)
			r = 0;
		if (r < 0 && !why[0])
			snprintf(why, sizeof(why), "%s", strerror(-r));
	}
	pthread_mutex_lock(&m->lock);
	if (r < 0) {
		mgr_join(g->err, sizeof(g->err), "rmdir refused: ", why);
		vlog(LOG_WARNING, "throttle group %s: %s", name, g->err);
	} else {
		for (pp = &m->groups; *pp != g; pp = &(*pp)->next)
			;
		*pp = g->next;
		m->ngroups--;
		m->mtime = time(NULL);
		m->gen++;
	}
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->group_lock);
	if (r < 0)
		return r;
	free(g);
	vlog(LOG_INFO, "throttle group %s removed", name);
	if (mgr_save(m, err, sizeof(err)) < 0)
		vlog(LOG_ERR, "throttle group %s removed, but %s", name, err);
	return 0;
}

int mgr_group_refused(struct mgr *m, const char *name, const char *why)
{
	struct mgr_group *g;

	pthread_mutex_lock(&m->lock);
	g = mgr_group_find_locked(m, name);
	if (g)
		snprintf(g->err, sizeof(g->err), "%s", why);
	pthread_mutex_unlock(&m->lock);
	if (!g)
		return -ENOENT;
	vlog(LOG_WARNING, "throttle group %s: %s", name, why);
	return 0;
}

int mgr_group_set(struct mgr *m, const char *name, const struct vdev_limits *l,
		  unsigned set, const char *what_)
{
	char why[VDEV_ERR_MAX] = "", what[64];
	struct vdev_params cur, np;
	struct mgr_group *g;
	bool changed;
	int r;

	snprintf(what, sizeof(what), "%srefused: ", what_ ? what_ : "");
	pthread_mutex_lock(&m->group_lock);
	pthread_mutex_lock(&m->lock);
	g = mgr_group_find_locked(m, name);
	if (g) {
		vdev_params_init(&cur);
		cur.limits = g->limits;
	}
	pthread_mutex_unlock(&m->lock);
	if (!g) {
		pthread_mutex_unlock(&m->group_lock);
		return -ENOENT;
	}
	vdev_params_init(&np);
	np.limits = *l;
	if (set & ~CFG_LIMIT_KEYS) {
		snprintf(why, sizeof(why), "%s is not a setting of a throttle group",
			 cfg_key_name(__builtin_ctz(set & ~CFG_LIMIT_KEYS)));
		r = -EINVAL;
		goto refused;
	}
	/* The state file must take back whatever is accepted here. */
	r = cfg_check_values(&np, set, why, sizeof(why));
	if (r < 0)
		goto refused;
	{
		struct vdev_limits old = cur.limits;

		cfg_apply(&cur, &np, set);
		changed = memcmp(&old, &cur.limits, sizeof(old)) != 0;
	}
	if (changed) {
		r = core_set(m, name, &cur.limits, why, sizeof(why));
		if (r < 0)
			goto refused;
	}
	pthread_mutex_lock(&m->lock);
	g->limits = cur.limits;
	g->err[0] = '\0';
	if (changed) {
		g->mtime = time(NULL);
		m->gen++;
	}
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->group_lock);
	if (changed) {
		vlog(LOG_INFO, "throttle group %s: iops %llu bps %llu read_bps %llu "
		     "write_bps %llu (bursts %llu requests, %llu bytes)", name,
		     (unsigned long long)cur.limits.iops, (unsigned long long)cur.limits.bps,
		     (unsigned long long)cur.limits.read_bps,
		     (unsigned long long)cur.limits.write_bps,
		     (unsigned long long)cur.limits.iops_burst,
		     (unsigned long long)cur.limits.bps_burst);
		save_or_note(m, name);
	}
	return 0;
refused:
	if (r >= 0)
		r = -EINVAL;
	pthread_mutex_lock(&m->lock);
	mgr_join(g->err, sizeof(g->err), what, why);
	vlog(LOG_WARNING, "throttle group %s: %s", name, g->err);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->group_lock);
	return r;
}

int mgr_group_info(struct mgr *m, const char *name, struct group_info *out)
{
	struct mgr_group *g;
	char users[8];

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&m->lock);
	g = mgr_group_find_locked(m, name);
	if (g) {
		memcpy(out->name, g->name, sizeof(out->name));
		out->limits = g->limits;
		out->users = users_locked(m, name, users, sizeof(users));
		memcpy(out->error, g->err, sizeof(out->error));
		out->mtime = g->mtime;
	}
	pthread_mutex_unlock(&m->lock);
	return g ? 0 : -ENOENT;
}

int mgr_group_list(struct mgr *m, char ***names, size_t *n)
{
	char **v;
	size_t i = 0;

	pthread_mutex_lock(&m->lock);
	v = calloc(m->ngroups + 1, sizeof(*v));
	if (!v)
		goto nomem;
	for (struct mgr_group *g = m->groups; g; g = g->next) {
		v[i] = strdup(g->name);
		if (!v[i])
			goto nomem;
		i++;
	}
	pthread_mutex_unlock(&m->lock);
	*names = v;
	*n = i;
	return 0;
nomem:
	pthread_mutex_unlock(&m->lock);
	mgr_list_free(v, i);
	return -ENOMEM;
}

unsigned mgr_group_count(struct mgr *m)
{
	unsigned n;

	pthread_mutex_lock(&m->lock);
	n = m->ngroups;
	pthread_mutex_unlock(&m->lock);
	return n;
}

/* A group from the state file, before any controller goes live (one that
 * names it needs it in the core).  A group the core refuses stays recorded,
 * with the reason in its error, so that the state file keeps it. */
void mgr_group_restore(struct mgr *m, const char *name, const struct vdev_limits *l)
{
	char why[VDEV_ERR_MAX];
	struct mgr_group *g = calloc(1, sizeof(*g));
	int r;

	if (!g) {
		vlog(LOG_ERR, "throttle group %s: out of memory at restore", name);
		return;
	}
	snprintf(g->name, sizeof(g->name), "%s", name);
	g->limits = *l;
	g->mtime = time(NULL);
	r = core_set(m, name, l, why, sizeof(why));
	if (r < 0) {
		mgr_join(g->err, sizeof(g->err), "restore failed: ", why);
		vlog(LOG_ERR, "throttle group %s cannot be restored: %s", name, why);
	} else {
		vlog(LOG_INFO, "throttle group %s restored", name);
	}
	pthread_mutex_lock(&m->lock);
	append_locked(m, g);
	pthread_mutex_unlock(&m->lock);
}

void mgr_groups_free(struct mgr *m)
{
	struct mgr_group *g, *next;

	for (g = m->groups; g; g = next) {
		next = g->next;
		free(g);
	}
	m->groups = NULL;
	m->ngroups = 0;
}

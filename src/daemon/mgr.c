/* mgr: controller registry: names, minors, mkdir/rmdir, create, restore and
 * destroy of the manager; see mgr.h.
 * Runs on FUSE worker threads (concurrently) and on main at start/stop.
 * Trusts: its callers' pointers.  Checks: user text (through cfgparse) and
 * every file found in sockets/ and devices/ before reusing it. */
#include "mgr_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "cfgparse.h"
#include "log.h"
#include "state.h"

/* dst = a + b, truncated to len. */
void mgr_join(char *dst, size_t len, const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);

	if (na > len - 1)
		na = len - 1;
	if (nb > len - 1 - na)
		nb = len - 1 - na;

	memmove(dst, a, na);
	memmove(dst + na, b, nb);
	dst[na + nb] = '\0';
}

/* ---- registry (mgr->lock held) ------------------------------------------ */

static unsigned name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % MGR_HASH;
}

struct ctrl *mgr_find_locked(struct mgr *m, const char *name)
{
	for (struct ctrl *c = m->hash[name_hash(name)]; c; c = c->hnext)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

bool mgr_minor_used(struct mgr *m, unsigned minor)
{
	return m->minors[minor / 64] & (1ull << (minor % 64));
}

/* A node in devices/ of this name and minor is a controller's own. */
static bool ours_locked(void *arg, const char *name, unsigned minor)
{
	struct ctrl *c = mgr_find_locked(arg, name);

	return c && c->minor == minor;
}

/* The lowest minor neither a controller's nor a foreign node's. */
static int alloc_minor_locked(struct mgr *m, unsigned *out)
{
	size_t nf;
	unsigned *foreign = store_foreign_minors(&m->st, ours_locked, m, &nf);
	int r = -ENOSPC;

	for (unsigned i = 0; i < m->max_ctrls && i < MGR_MINOR_LIMIT; i++) {
		bool taken = mgr_minor_used(m, i);
		for (size_t j = 0; j < nf && !taken; j++)
			taken = foreign[j] == i;
		if (!taken) {
			*out = i;
			r = 0;
			break;
		}
	}
	free(foreign);
	return r;
}

static void minor_set(struct mgr *m, unsigned minor, bool on)
{
	if (on)
		m->minors[minor / 64] |= 1ull << (minor % 64);
	else
		m->minors[minor / 64] &= ~(1ull << (minor % 64));
}

static void insert_locked(struct mgr *m, struct ctrl *c)
{
	unsigned h = name_hash(c->name);

	c->hnext = m->hash[h];
	m->hash[h] = c;
	c->prev = m->tail;
	c->next = NULL;
	if (m->tail)
		m->tail->next = c;
	else
		m->head = c;
	m->tail = c;
	m->count++;
	minor_set(m, c->minor, true);
}

static void remove_locked(struct mgr *m, struct ctrl *c)
{
	struct ctrl **pp = &m->hash[name_hash(c->name)];

	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	if (c->prev)
		c->prev->next = c->next;
	else
		m->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		m->tail = c->prev;
	m->count--;
	minor_set(m, c->minor, false);
}

static struct ctrl *ctrl_new(const char *name, unsigned minor)
{
	struct ctrl *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->minor = minor;
	c->refs = 1;                    /* the registry's reference */
	pthread_mutex_init(&c->op_lock, NULL);
	vdev_params_init(&c->params);
	c->mtime = time(NULL);
	return c;
}

static void ctrl_free(struct ctrl *c)
{
	pthread_mutex_destroy(&c->op_lock);
	free(c);
}

struct ctrl *mgr_get(struct mgr *m, const char *name)
{
	struct ctrl *c;

	pthread_mutex_lock(&m->lock);
	c = mgr_find_locked(m, name);
	if (c)
		c->refs++;
	pthread_mutex_unlock(&m->lock);
	return c;
}

void mgr_put(struct mgr *m, struct ctrl *c)
{
	bool last;

	pthread_mutex_lock(&m->lock);
	last = --c->refs == 0;
	pthread_mutex_unlock(&m->lock);
	if (last)
		ctrl_free(c);
}

int mgr_list(struct mgr *m, char ***names, size_t *n)
{
	char **v;
	size_t i = 0;

	pthread_mutex_lock(&m->lock);
	v = calloc(m->count + 1, sizeof(*v));
	if (!v)
		goto nomem;
	for (struct ctrl *c = m->head; c; c = c->next) {
		v[i] = strdup(c->name);
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

void mgr_list_free(char **names, size_t n)
{
	if (!names)
		return;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int mgr_refs(struct mgr *m, struct ctrl ***out, size_t *n)
{
	struct ctrl **v;
	size_t i = 0;

	pthread_mutex_lock(&m->lock);
	v = calloc(m->count + 1, sizeof(*v));
	if (v) {
		for (struct ctrl *c = m->head; c; c = c->next) {
			c->refs++;
			v[i++] = c;
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (!v)
		return -ENOMEM;
	*out = v;
	*n = i;
	return 0;
}

void mgr_refs_put(struct mgr *m, struct ctrl **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mgr_put(m, v[i]);
	free(v);
}

unsigned mgr_count(struct mgr *m)
{
	unsigned n;

	pthread_mutex_lock(&m->lock);
	n = m->count;
	pthread_mutex_unlock(&m->lock);
	return n;
}

time_t mgr_mtime(struct mgr *m)
{
	time_t t;

	pthread_mutex_lock(&m->lock);
	t = m->mtime;
	pthread_mutex_unlock(&m->lock);
	return t;
}

time_t mgr_ctrl_mtime(struct mgr *m, struct ctrl *c)
{
	time_t t;

	pthread_mutex_lock(&m->lock);
	t = c->mtime;
	pthread_mutex_unlock(&m->lock);
	return t;
}

int mgr_create(const struct mgr_opts *o, struct mgr **out, char *err, size_t errlen)
{
	struct mgr *m;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->group_lock, NULL);
	pthread_mutex_init(&m->save_lock, NULL);
	m->max_ctrls = o->max_ctrls ? o->max_ctrls : MGR_DEFAULT_MAX_CTRLS;
	if (m->max_ctrls > MGR_MINOR_LIMIT)
		m->max_ctrls = MGR_MINOR_LIMIT;
	m->mtime = time(NULL);
	m->minors = calloc(MGR_MINOR_LIMIT / 64, sizeof(uint64_t));
	m->engine_info = strdup(o->engine_info ? o->engine_info : "");
	if (!m->minors || !m->engine_info) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	r = store_open(&m->st, o->store, o->state_path, o->node_ops, err, errlen);
	if (r < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	free(m->minors);
	free(m->engine_info);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->group_lock);
	pthread_mutex_destroy(&m->save_lock);
	free(m);
	return r;
}

int mgr_restore(struct mgr *m, struct core *core, unsigned *nctrl,
		unsigned *nfailed, char *err, size_t errlen)
{
	char store[PATH_MAX];
	struct state_ctrl *sc;
	struct state_group *sg;
	size_t n, ng;
	int r;

	m->core = core;
	*nctrl = *nfailed = 0;
	r = state_load(m->st.state_path, &sc, &n, &sg, &ng, store, sizeof(store),
		       err, errlen);
	if (r < 0)
		return r;
	/* A state file describes one store: bringing its controllers up in
	 * another one would be a surprise (two stores, one default state). */
	if (store[0] && strcmp(store, m->st.real) != 0) {
		free(sc);
		free(sg);
		snprintf(err, errlen, "state file %s belongs to store %s, not %s: give "
			 "this store its own --state (or edit the file's store line to "
			 "move its controllers)", m->st.state_path, store, m->st.real);
		return -EEXIST;
	}
	/* Every throttle group before any controller: a controller that names
	 * one goes live in it. */
	for (size_t i = 0; i < ng; i++)
		mgr_group_restore(m, sg[i].name, &sg[i].limits);
	free(sg);
	for (size_t i = 0; i < n; i++) {
		struct ctrl *c = ctrl_new(sc[i].name, sc[i].minor);
		char why[VDEV_ERR_MAX];
		struct vdev *d = NULL;

		if (!c) {
			free(sc);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		c->params = sc[i].params;
		c->have_size = sc[i].have_size;
		c->restored = true;
		pthread_mutex_lock(&m->lock);
		insert_locked(m, c);
		pthread_mutex_unlock(&m->lock);
		if (!mgr_complete(&c->params, c->have_size)) {
			vlog(LOG_INFO, "[%s] restored unconfigured (minor %u)", c->name, c->minor);
			continue;
		}
		(*nctrl)++;
		why[0] = '\0';
		pthread_mutex_lock(&c->op_lock);
		r = vdev_params_check(&c->params, why, sizeof(why));
		if (r == 0 && c->params.group[0]) {
			pthread_mutex_lock(&m->lock);
			if (!mgr_group_find_locked(m, c->params.group)) {
				snprintf(why, sizeof(why), "no throttle group %s (mkdir "
					 "ctl/.groups/%s first)", c->params.group,
					 c->params.group);
				r = -EINVAL;
			}
			pthread_mutex_unlock(&m->lock);
		}
		if (r == 0)
			r = mgr_go_live(m, c, &c->params, &d, why, sizeof(why));
		pthread_mutex_lock(&m->lock);
		if (r == 0)
			c->vdev = d;
		else
			mgr_join(c->err, sizeof(c->err), "restore failed: ", why);
		pthread_mutex_unlock(&m->lock);
		pthread_mutex_unlock(&c->op_lock);
		if (r < 0) {
			(*nfailed)++;
			vlog(LOG_ERR, "[%s] cannot restore: %s", c->name, why);
		} else {
			vlog(LOG_INFO, "[%s] restored, minor %u", c->name, c->minor);
		}
	}
	free(sc);
	return 0;
}

void mgr_destroy(struct mgr *m)
{
	struct ctrl *c, *next;

	if (!m)
		return;
	for (c = m->head; c; c = next) {
		next = c->next;
		if (c->vdev)
			vdev_stop(c->vdev);     /* the socket file stays for the restart */
		ctrl_free(c);
	}
	mgr_groups_free(m);
	store_close(&m->st);
	free(m->minors);
	free(m->engine_info);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->group_lock);
	pthread_mutex_destroy(&m->save_lock);
	free(m);
}

/* ---- mkdir / rmdir ------------------------------------------------------- */

int mgr_ctrl_create(struct mgr *m, const char *name)
{
	char err[VDEV_ERR_MAX];
	struct ctrl *c;
	unsigned minor;
	int r;

	if (!cfg_name_valid(name)) {
		char shown[VDEV_NAME_MAX + 8];
		size_t i;

		for (i = 0; name[i] && i < VDEV_NAME_MAX + 4; i++)
			shown[i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
		shown[i] = '\0';
		vlog(LOG_WARNING, "mkdir '%s%s' refused: controller names are 1-%d "
		     "characters of A-Z a-z 0-9 . _ - not starting with '.'", shown,
		     name[i] ? "..." : "", VDEV_NAME_MAX);
		return -EINVAL;
	}
	if (!store_name_fits(&m->st, name)) {
		vlog(LOG_WARNING, "mkdir %s refused: the socket path would exceed %zu "
		     "bytes", name, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	pthread_mutex_lock(&m->lock);
	if (mgr_find_locked(m, name)) {
		pthread_mutex_unlock(&m->lock);
		return -EEXIST;
	}
	r = alloc_minor_locked(m, &minor);
	if (r < 0) {
		pthread_mutex_unlock(&m->lock);
		vlog(LOG_WARNING, "mkdir %s refused: no free minor (limit %u "
		     "controllers)", name, m->max_ctrls);
		return r;
	}
	c = ctrl_new(name, minor);
	if (!c) {
		pthread_mutex_unlock(&m->lock);
		return -ENOMEM;
	}
	insert_locked(m, c);
	m->mtime = c->mtime;
	m->gen++;
	pthread_mutex_unlock(&m->lock);
	vlog(LOG_INFO, "[%s] created, minor %u", name, minor);
	if (mgr_save(m, err, sizeof(err)) < 0) {
		pthread_mutex_lock(&m->lock);
		mgr_join(c->err, sizeof(c->err), "created, but ", err);
		pthread_mutex_unlock(&m->lock);
	}
	return 0;
}

int mgr_ctrl_destroy(struct mgr *m, const char *name)
{
	char err[VDEV_ERR_MAX];
	struct ctrl *c = mgr_get(m, name);
	bool was_live;
	int r;

	if (!c)
		return -ENOENT;
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		r = -ENOENT;
		goto out;
	}
	was_live = c->vdev != NULL;
	if (c->vdev) {
		r = vdev_destroy(c->vdev, false);       /* also unlinks the socket */
		if (r < 0) {
			pthread_mutex_lock(&m->lock);
			if (r == -EBUSY)
				snprintf(c->err, sizeof(c->err), "rmdir refused: a front-end "
					 "is connected to sockets/%s; stop the VM first",
					 c->name);
			else
				snprintf(c->err, sizeof(c->err), "rmdir refused: %s",
					 strerror(-r));
			vlog(LOG_WARNING, "[%s] %s", c->name, c->err);
			pthread_mutex_unlock(&m->lock);
			goto out;
		}
	}
	/* Also for a controller that could not go live after a restart: its
	 * node from before may still be there.  Only a node that is ours. */
	store_node_remove(&m->st, c->name, c->minor, was_live);
	pthread_mutex_lock(&m->lock);
	c->vdev = NULL;
	c->removed = true;
	remove_locked(m, c);
	c->refs--;                      /* the registry's reference */
	m->mtime = time(NULL);
	m->gen++;
	pthread_mutex_unlock(&m->lock);
	vlog(LOG_INFO, "[%s] rmdir done, minor %u freed", c->name, c->minor);
	r = 0;
out:
	pthread_mutex_unlock(&c->op_lock);
	mgr_put(m, c);
	if (r == 0 && mgr_save(m, err, sizeof(err)) < 0)
		vlog(LOG_ERR, "[%s] removed, but %s", name, err);
	return r;
}

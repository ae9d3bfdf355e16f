/* mgr: controller registry, minors, store sync and state file; see mgr.h.
 * Runs on FUSE worker threads (concurrently) and on main at start/stop.
 * Trusts: its callers' pointers.  Checks: user text (through cfgparse) and
 * every file found in sockets/ and devices/ before reusing it. */
#include "mgr.h"

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

#define MGR_HASH        1024
#define SUN_PATH_MAX    (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

struct ctrl {
	struct ctrl *hnext;             /* hash chain; mgr->lock */
	struct ctrl *prev, *next;       /* creation order; mgr->lock */
	char name[VDEV_NAME_MAX + 1];
	unsigned minor;
	unsigned refs;                  /* mgr->lock */
	pthread_mutex_t op_lock;

	/* Written with op_lock and mgr->lock held, read under either. */
	bool removed;
	bool have_size;                 /* size given by the user (a file backing
					 * without it takes the file's size) */
	struct vdev_params params;      /* accepted settings */
	struct vdev *vdev;              /* NULL unless live */
	time_t mtime;

	/* From the state file: a dead socket at its path is ours, left by a
	 * crash, and may be replaced.  op_lock. */
	bool restored;
	char err[VDEV_ERR_MAX];         /* our last refusal; mgr->lock */
};

/* Directories are kept well below PATH_MAX so "DIR/NAME" always fits. */
#define MGR_DIR_MAX     (PATH_MAX - 256)

struct mgr {
	pthread_mutex_t lock;
	char store[MGR_DIR_MAX];
	char sockdir[MGR_DIR_MAX], devdir[MGR_DIR_MAX], ctldir[MGR_DIR_MAX];
	char state_path[PATH_MAX];
	char store_real[PATH_MAX];      /* canonical store path, for the state file */
	int store_lock_fd, state_lock_fd;
	struct core *core;
	unsigned max_ctrls;
	char *engine_info;

	/* mgr->lock */
	struct ctrl *hash[MGR_HASH];
	struct ctrl *head, *tail;
	unsigned count;
	uint64_t *minors;               /* bitmap of MGR_MINOR_LIMIT bits */
	time_t mtime;
	uint64_t gen;                   /* bumped on every accepted change */

	/* Saves are serialised and coalesced: a writer that finds its change
	 * already covered by a newer save returns at once. */
	pthread_mutex_t save_lock;
	uint64_t saved_gen;             /* save_lock */
	int save_err;                   /* save_lock */
};

static const struct {
	const char *name;
	bool writable;
} attrs[MGR_NATTRS] = {
	[MGR_A_CONFIG] = { "config", true },
	[MGR_A_SIZE] = { "size", true },
	[MGR_A_BLOCK_SIZE] = { "block_size", true },
	[MGR_A_BACKING] = { "backing", true },
	[MGR_A_READONLY] = { "readonly", true },
	[MGR_A_QUEUES] = { "queues", true },
	[MGR_A_SERIAL] = { "serial", true },
	[MGR_A_STATE] = { "state", false },
	[MGR_A_SOCKET] = { "socket", false },
	[MGR_A_DEVICE] = { "device", false },
	[MGR_A_STATS] = { "stats", false },
	[MGR_A_ERROR] = { "error", false },
};

static const char *const gattrs[MGR_NGATTRS] = {
	[MGR_G_VERSION] = ".version",
	[MGR_G_INFO] = ".info",
	[MGR_G_STATUS] = ".status",
};

const char *mgr_attr_name(enum mgr_attr a)
{
	return (unsigned)a < MGR_NATTRS ? attrs[a].name : "?";
}

bool mgr_attr_writable(enum mgr_attr a)
{
	return (unsigned)a < MGR_NATTRS && attrs[a].writable;
}

int mgr_attr_lookup(const char *name)
{
	for (int a = 0; a < MGR_NATTRS; a++)
		if (strcmp(attrs[a].name, name) == 0)
			return a;
	return -1;
}

const char *mgr_gattr_name(enum mgr_gattr g)
{
	return (unsigned)g < MGR_NGATTRS ? gattrs[g] : "?";
}

int mgr_gattr_lookup(const char *name)
{
	for (int g = 0; g < MGR_NGATTRS; g++)
		if (strcmp(gattrs[g], name) == 0)
			return g;
	return -1;
}

const char *mgr_ctl_dir(struct mgr *m)
{
	return m->ctldir;
}

/* dst = a + b, truncated to len. */
static void join(char *dst, size_t len, const char *a, const char *b)
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

static struct ctrl *find_locked(struct mgr *m, const char *name)
{
	for (struct ctrl *c = m->hash[name_hash(name)]; c; c = c->hnext)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static bool minor_used(struct mgr *m, unsigned minor)
{
	return m->minors[minor / 64] & (1ull << (minor % 64));
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
	c = find_locked(m, name);
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

/* ---- state file ---------------------------------------------------------- */

/* Make the state file cover every change accepted so far.  Synchronous: when
 * it returns 0 the change is durable. */
static int mgr_save(struct mgr *m, char *err, size_t errlen)
{
	struct state_ctrl *snap = NULL;
	uint64_t want, gen;
	size_t n = 0;
	int r;

	pthread_mutex_lock(&m->lock);
	want = m->gen;
	pthread_mutex_unlock(&m->lock);

	pthread_mutex_lock(&m->save_lock);
	if (m->saved_gen >= want) {
		r = m->save_err;        /* a newer save covered us */
		if (r < 0)
			snprintf(err, errlen, "the state file could not be written");
		goto out;
	}
	pthread_mutex_lock(&m->lock);
	snap = calloc(m->count + 1, sizeof(*snap));
	if (snap) {
		for (struct ctrl *c = m->head; c; c = c->next, n++) {
			memcpy(snap[n].name, c->name, sizeof(c->name));
			snap[n].minor = c->minor;
			snap[n].have_size = c->have_size;
			snap[n].params = c->params;
		}
	}
	gen = m->gen;
	pthread_mutex_unlock(&m->lock);
	if (!snap) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory writing the state file");
		goto out;
	}
	r = state_save(m->state_path, m->store_real, snap, n, err, errlen);
	m->save_err = r;
	m->saved_gen = gen;
	if (r < 0)
		vlog(LOG_ERR, "state file not written: %s", err);
out:
	pthread_mutex_unlock(&m->save_lock);
	free(snap);
	return r;
}

/* ---- store sync ---------------------------------------------------------- */

static bool node_is_ours(const struct stat *st, unsigned minor)
{
	return S_ISBLK(st->st_mode) && major(st->st_rdev) == MGR_DEV_MAJOR &&
	       minor(st->st_rdev) == minor;
}

/* Is a process accepting connections on this socket?  A dead socket (left
 * by a crash) refuses them. */
static bool socket_in_use(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	r = r == 0 || errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return r;
}

/* Minors of major-241 nodes in devices/ that are not ours: Kata finds a
 * controller by the major:minor of the node it is given, so a new minor must
 * not repeat one of them.  mgr->lock held.  Returns a malloc'd array. */
static unsigned *foreign_minors_locked(struct mgr *m, size_t *n)
{
	unsigned *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	*n = 0;
	d = opendir(m->devdir);
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		struct ctrl *c;
		struct stat st;

		if (de->d_type != DT_BLK && de->d_type != DT_UNKNOWN)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISBLK(st.st_mode) || major(st.st_rdev) != MGR_DEV_MAJOR)
			continue;
		c = find_locked(m, de->d_name);
		if (c && c->minor == minor(st.st_rdev))
			continue;
		if (cnt == cap) {
			unsigned *nv = realloc(v, (cap ? cap * 2 : 16) * sizeof(*v));
			if (!nv)
				break;
			v = nv;
			cap = cap ? cap * 2 : 16;
		}
		v[cnt++] = minor(st.st_rdev);
	}
	closedir(d);
	*n = cnt;
	return v;
}

static int alloc_minor_locked(struct mgr *m, unsigned *out)
{
	size_t nf;
	unsigned *foreign = foreign_minors_locked(m, &nf);
	int r = -ENOSPC;

	for (unsigned i = 0; i < m->max_ctrls && i < MGR_MINOR_LIMIT; i++) {
		bool taken = minor_used(m, i);
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

static void sock_path(struct mgr *m, const struct ctrl *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", m->sockdir, c->name);
}

static void node_path(struct mgr *m, const struct ctrl *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", m->devdir, c->name);
}

/* Complete enough to go live: the size is known, given or the file's. */
static bool complete(const struct vdev_params *p, bool have_size)
{
	return have_size || p->backing == BE_FILE;
}

/* The parameters to hand the core: a file backing without a size of its own
 * keeps the size the core found (0 only when the file changes, meaning "the
 * new file's size"). */
static void core_params(struct ctrl *c, const struct vdev_params *p, bool have_size,
			struct vdev_params *out)
{
	*out = *p;
	if (!have_size && p->backing == BE_FILE && c->vdev &&
	    c->params.backing == BE_FILE && strcmp(c->params.path, p->path) == 0) {
		struct vdev_params cur;
		vdev_get_params(c->vdev, &cur);
		out->size = cur.size;
	}
}

/* Bring a configured controller live: socket listening, node in devices/.
 * op_lock held.  On success *out is the new device; on failure nothing is
 * left behind and nothing foreign was touched. */
static int go_live(struct mgr *m, struct ctrl *c, const struct vdev_params *p,
		   struct vdev **out, char *err, size_t errlen)
{
	char sock[PATH_MAX], node[PATH_MAX];
	bool need_node = true;
	struct vdev *d = NULL;
	struct stat st;
	int r;

	sock_path(m, c, sock, sizeof(sock));
	node_path(m, c, node, sizeof(node));
	if (lstat(node, &st) == 0) {
		if (!node_is_ours(&st, c->minor)) {
			snprintf(err, errlen, "devices/%s already exists and is not "
				 "vhostd's block node %d:%u, so it is left untouched",
				 c->name, MGR_DEV_MAJOR, c->minor);
			return -EEXIST;
		}
		need_node = false;      /* ours, from before a restart */
	} else if (errno != ENOENT) {
		r = -errno;
		snprintf(err, errlen, "cannot inspect devices/%s: %s", c->name, strerror(-r));
		return r;
	}
	if (lstat(sock, &st) == 0) {
		if (!c->restored || !S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "sockets/%s already exists and was not "
				 "created by vhostd, so it is left untouched", c->name);
			return -EEXIST;
		}
		if (socket_in_use(sock)) {
			snprintf(err, errlen, "sockets/%s is served by another process, "
				 "so it is left untouched", c->name);
			return -EADDRINUSE;
		}
		/* A dead socket of ours (crash): vdev_create replaces it. */
	} else if (errno != ENOENT) {
		r = -errno;
		snprintf(err, errlen, "cannot inspect sockets/%s: %s", c->name, strerror(-r));
		return r;
	}

	err[0] = '\0';
	r = vdev_create(m->core, c->name, sock, p, &d, err, errlen);
	if (r < 0) {
		if (!err[0])
			snprintf(err, errlen, "cannot create the device: %s", strerror(-r));
		return r;
	}
	if (need_node && mknod(node, S_IFBLK | 0660, makedev(MGR_DEV_MAJOR, c->minor)) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create devices/%s: %s", c->name, strerror(-r));
		vdev_destroy(d, true);
		return r;
	}
	*out = d;
	return 0;
}

static void unlink_node_if_ours(struct mgr *m, struct ctrl *c, bool was_live)
{
	char node[PATH_MAX];
	struct stat st;

	node_path(m, c, node, sizeof(node));
	if (lstat(node, &st) < 0)
		return;
	if (!node_is_ours(&st, c->minor)) {
		if (was_live)
			vlog(LOG_WARNING, "[%s] devices/%s is not our node %d:%u any more; "
			     "left untouched", c->name, c->name, MGR_DEV_MAJOR,
			     c->minor);
		return;
	}
	if (unlink(node) < 0)
		vlog(LOG_WARNING, "[%s] cannot remove %s: %m", c->name, node);
}

/* ---- create / restore / destroy ----------------------------------------- */

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return -errno;
			*p = c;
			if (c == '\0')
				break;
		}
	}
	return 0;
}

/* flock a lock file; on contention name the holder's pid. */
static int take_lock(const char *path, const char *what, int *fdp,
		     char *err, size_t errlen)
{
	char pid[32] = "";
	int fd, r;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open lock file %s: %s", path, strerror(-r));
		return r;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		if (r == -EWOULDBLOCK) {
			ssize_t k = pread(fd, pid, sizeof(pid) - 1, 0);
			pid[k > 0 ? k : 0] = '\0';
			pid[strcspn(pid, "\n")] = '\0';
			snprintf(err, errlen, "%s is already served by another vhostd "
				 "(%s%s%slock file %s)", what, pid[0] ? "pid " : "", pid,
				 pid[0] ? ", " : "", path);
		} else {
			snprintf(err, errlen, "cannot lock %s: %s", path, strerror(-r));
		}
		close(fd);
		return r;
	}
	snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0)
		(void)!pwrite(fd, pid, strlen(pid), 0);
	*fdp = fd;
	return 0;
}

int mgr_create(const struct mgr_opts *o, struct mgr **out, char *err, size_t errlen)
{
	char path[PATH_MAX], what[PATH_MAX + 16];
	struct mgr *m;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->store_lock_fd = m->state_lock_fd = -1;
	pthread_mutex_init(&m->lock, NULL);
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
	if (o->store[0] != '/' || strlen(o->store) + 32 >= MGR_DIR_MAX ||
	    strlen(o->state_path) + 8 >= PATH_MAX) {
		r = -EINVAL;
		snprintf(err, errlen, "store and state paths must be absolute and "
			 "reasonably short");
		goto fail;
	}
	snprintf(m->store, sizeof(m->store), "%s", o->store);
	snprintf(m->sockdir, sizeof(m->sockdir), "%s/block/sockets", o->store);
	snprintf(m->devdir, sizeof(m->devdir), "%s/block/devices", o->store);
	snprintf(m->ctldir, sizeof(m->ctldir), "%s/block/ctl", o->store);
	snprintf(m->state_path, sizeof(m->state_path), "%s", o->state_path);
	if (strlen(m->sockdir) + 2 > SUN_PATH_MAX) {
		r = -ENAMETOOLONG;
		snprintf(err, errlen, "store path %s is too long for UNIX socket paths "
			 "(%zu bytes at most)", o->store, SUN_PATH_MAX);
		goto fail;
	}

	const char *dirs[] = { m->sockdir, m->devdir, m->ctldir };
	for (size_t i = 0; i < 3; i++) {
		r = mkdir_p(dirs[i], 0755);
		/* ctl may be a dead FUSE mount (ENOTCONN); the fs layer deals with it. */
		if (r < 0 && r != -ENOTCONN) {
			snprintf(err, errlen, "cannot create %s: %s", dirs[i], strerror(-r));
			goto fail;
		}
	}
	if (!realpath(o->store, m->store_real)) {
		r = -errno;
		snprintf(err, errlen, "cannot resolve %s: %s", o->store, strerror(-r));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/block/.vhostd.lock", o->store);
	snprintf(what, sizeof(what), "store %s", o->store);
	r = take_lock(path, what, &m->store_lock_fd, err, errlen);
	if (r < 0)
		goto fail;

	snprintf(path, sizeof(path), "%s", o->state_path);
	{
		char *slash = strrchr(path, '/');
		if (slash && slash != path) {
			*slash = '\0';
			r = mkdir_p(path, 0755);
			if (r < 0) {
				snprintf(err, errlen, "cannot create %s: %s", path, strerror(-r));
				goto fail;
			}
		}
	}
	snprintf(path, sizeof(path), "%s.lock", o->state_path);
	snprintf(what, sizeof(what), "state file %s", o->state_path);
	r = take_lock(path, what, &m->state_lock_fd, err, errlen);
	if (r < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	if (m->store_lock_fd >= 0)
		close(m->store_lock_fd);
	free(m->minors);
	free(m->engine_info);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->save_lock);
	free(m);
	return r;
}

int mgr_restore(struct mgr *m, struct core *core, unsigned *nctrl,
		unsigned *nfailed, char *err, size_t errlen)
{
	char store[PATH_MAX];
	struct state_ctrl *sc;
	size_t n;
	int r;

	m->core = core;
	*nctrl = *nfailed = 0;
	r = state_load(m->state_path, &sc, &n, store, sizeof(store), err, errlen);
	if (r < 0)
		return r;
	/* A state file describes one store: bringing its controllers up in
	 * another one would be a surprise (two stores, one default state). */
	if (store[0] && strcmp(store, m->store_real) != 0) {
		free(sc);
		snprintf(err, errlen, "state file %s belongs to store %s, not %s: give "
			 "this store its own --state (or edit the file's store line to "
			 "move its controllers)", m->state_path, store, m->store_real);
		return -EEXIST;
	}
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
		if (!complete(&c->params, c->have_size)) {
			vlog(LOG_INFO, "[%s] restored unconfigured (minor %u)", c->name, c->minor);
			continue;
		}
		(*nctrl)++;
		why[0] = '\0';
		pthread_mutex_lock(&c->op_lock);
		r = vdev_params_check(&c->params, why, sizeof(why));
		if (r == 0)
			r = go_live(m, c, &c->params, &d, why, sizeof(why));
		pthread_mutex_lock(&m->lock);
		if (r == 0)
			c->vdev = d;
		else
			join(c->err, sizeof(c->err), "restore failed: ", why);
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
	if (m->store_lock_fd >= 0)
		close(m->store_lock_fd);
	if (m->state_lock_fd >= 0)
		close(m->state_lock_fd);
	free(m->minors);
	free(m->engine_info);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->save_lock);
	free(m);
}

/* ---- mkdir / rmdir ------------------------------------------------------- */

int mgr_mkdir(struct mgr *m, const char *name)
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
	if (strlen(m->sockdir) + 1 + strlen(name) > SUN_PATH_MAX) {
		vlog(LOG_WARNING, "mkdir %s refused: the socket path would exceed %zu "
		     "bytes", name, SUN_PATH_MAX);
		return -ENAMETOOLONG;
	}
	pthread_mutex_lock(&m->lock);
	if (find_locked(m, name)) {
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
		join(c->err, sizeof(c->err), "created, but ", err);
		pthread_mutex_unlock(&m->lock);
	}
	return 0;
}

int mgr_rmdir(struct mgr *m, const char *name)
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
	unlink_node_if_ours(m, c, was_live);
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

/* ---- attribute reads ----------------------------------------------------- */

/* Close a memstream opened on (*buf, len): its content becomes *out. */
static int finish(FILE *f, char **buf, char **out)
{
	if (fclose(f) != 0) {
		free(*buf);
		return -ENOMEM;
	}
	*out = *buf;
	return 0;
}

static const char *state_name(struct ctrl *c)
{
	if (!c->vdev)
		return complete(&c->params, c->have_size) ? "error" : "unconfigured";
	switch (vdev_get_state(c->vdev)) {
	case VDEV_LISTENING: return "listening";
	case VDEV_CONNECTED: return "connected";
	default: return "error";
	}
}

int mgr_ctrl_read(struct mgr *m, struct ctrl *c, enum mgr_attr a,
		  char **out, size_t *len)
{
	char val[2 * sizeof(c->params.path)];
	struct vdev_params p;
	struct vdev_stats st;
	char *buf = NULL;
	bool have;
	FILE *f;

	f = open_memstream(&buf, len);
	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		pthread_mutex_unlock(&c->op_lock);
		fclose(f);
		free(buf);
		return -ENOENT;
	}
	pthread_mutex_lock(&m->lock);
	p = c->params;
	have = c->have_size;
	pthread_mutex_unlock(&m->lock);
	if (c->vdev && !have) {
		/* A file backing without a size: show the size in force. */
		struct vdev_params cur;
		vdev_get_params(c->vdev, &cur);
		p.size = cur.size;
		have = true;
	}

	switch (a) {
	case MGR_A_CONFIG:
		cfg_format_config(&p, have, val, sizeof(val));
		fputs(val, f);
		break;
	case MGR_A_SIZE:
	case MGR_A_BLOCK_SIZE:
	case MGR_A_BACKING:
	case MGR_A_READONLY:
	case MGR_A_QUEUES:
	case MGR_A_SERIAL:
		cfg_format_value(a - MGR_A_SIZE, &p, have, val, sizeof(val));
		if (a != MGR_A_SIZE || have)
			fprintf(f, "%s\n", val);
		break;
	case MGR_A_STATE:
		fprintf(f, "%s\n", state_name(c));
		break;
	case MGR_A_SOCKET:
		sock_path(m, c, val, sizeof(val));
		fprintf(f, "%s\n", val);
		break;
	case MGR_A_DEVICE:
		node_path(m, c, val, sizeof(val));
		fprintf(f, "%d:%u %s\n", MGR_DEV_MAJOR, c->minor, val);
		break;
	case MGR_A_STATS:
		memset(&st, 0, sizeof(st));
		if (c->vdev)
			vdev_get_stats(c->vdev, &st);
		fprintf(f, "reads %" PRIu64 "\nwrites %" PRIu64 "\nflushes %" PRIu64
			"\ndiscards %" PRIu64 "\nwrite_zeroes %" PRIu64
			"\nget_ids %" PRIu64 "\nbytes %" PRIu64 "\nbytes_read %" PRIu64
			"\nbytes_written %" PRIu64 "\nerrors %" PRIu64
			"\nin-flight %" PRIu64 "\n",
			st.reads, st.writes, st.flushes, st.discards, st.write_zeroes,
			st.get_ids, st.bytes_read + st.bytes_written, st.bytes_read,
			st.bytes_written, st.errors, st.inflight);
		/* Backend lines ("io_mode direct"...), already "key value\n". */
		st.detail[sizeof(st.detail) - 1] = '\0';
		fputs(st.detail, f);
		break;
	case MGR_A_ERROR:
		pthread_mutex_lock(&m->lock);
		snprintf(val, sizeof(val), "%s", c->err);
		pthread_mutex_unlock(&m->lock);
		if (!val[0] && c->vdev)
			vdev_last_error(c->vdev, val, VDEV_ERR_MAX);
		if (val[0])
			fprintf(f, "%s\n", val);
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&c->op_lock);
	return finish(f, &buf, out);
}

int mgr_global_read(struct mgr *m, enum mgr_gattr g, char **out, size_t *len)
{
	struct ctrl **v = NULL;
	char *buf = NULL;
	size_t n = 0;
	FILE *f;

	f = open_memstream(&buf, len);
	if (!f)
		return -ENOMEM;
	if (g == MGR_G_VERSION) {
		fprintf(f, "vhostd %s\n", VHOSTD_VERSION);
		return finish(f, &buf, out);
	}

	/* Take references, then look at each controller under its own lock. */
	pthread_mutex_lock(&m->lock);
	v = calloc(m->count + 1, sizeof(*v));
	if (v) {
		for (struct ctrl *c = m->head; c; c = c->next) {
			c->refs++;
			v[n++] = c;
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (!v) {
		fclose(f);
		free(buf);
		return -ENOMEM;
	}

	unsigned live = 0, connected = 0, failed = 0, unconf = 0;
	if (g == MGR_G_STATUS)
		fprintf(f, "%-20s %-12s %7s %14s %s\n", "NAME", "STATE", "MINOR",
			"SIZE", "BACKING");
	for (size_t i = 0; i < n; i++) {
		struct ctrl *c = v[i];
		const char *s;
		char back[sizeof(c->params.path)];

		pthread_mutex_lock(&c->op_lock);
		s = c->removed ? NULL : state_name(c);
		if (s && g == MGR_G_STATUS) {
			struct vdev_params cur = c->params;
			if (c->vdev)
				vdev_get_params(c->vdev, &cur);
			else if (!c->have_size)
				cur.size = 0;
			cfg_format_value(CFG_BACKING, &cur, true, back, sizeof(back));
			fprintf(f, "%-20s %-12s %7u %14" PRIu64 " %s\n", c->name, s,
				c->minor, cur.size, back);
		}
		pthread_mutex_unlock(&c->op_lock);
		if (!s)
			continue;
		if (strcmp(s, "listening") == 0)
			live++;
		else if (strcmp(s, "connected") == 0)
			live++, connected++;
		else if (strcmp(s, "error") == 0)
			failed++;
		else
			unconf++;
	}
	if (g == MGR_G_INFO)
		fprintf(f, "version %s\nstore %s\nsockets %s\ndevices %s\nstate_file %s\n"
			"%smax_controllers %u\ncontrollers %zu\nlive %u\nconnected %u\n"
			"unconfigured %u\nerror %u\n", VHOSTD_VERSION, m->store,
			m->sockdir, m->devdir, m->state_path, m->engine_info,
			m->max_ctrls, n, live, connected, unconf, failed);
	for (size_t i = 0; i < n; i++)
		mgr_put(m, v[i]);
	free(v);
	return finish(f, &buf, out);
}

/* ---- attribute writes ---------------------------------------------------- */

static bool params_equal(const struct vdev_params *a, const struct vdev_params *b)
{
	return a->size == b->size && a->block_size == b->block_size &&
	       a->backing == b->backing && a->readonly == b->readonly &&
	       a->queues == b->queues && strcmp(a->serial, b->serial) == 0 &&
	       (a->backing != BE_FILE || strcmp(a->path, b->path) == 0);
}

static void refuse(struct mgr *m, struct ctrl *c, const char *what, const char *why)
{
	pthread_mutex_lock(&m->lock);
	join(c->err, sizeof(c->err), what, why);
	pthread_mutex_unlock(&m->lock);
	vlog(LOG_WARNING, "[%s] %s%s", c->name, what, why);
}

void mgr_ctrl_refused(struct mgr *m, struct ctrl *c, const char *why)
{
	refuse(m, c, "", why);
}

int mgr_ctrl_write(struct mgr *m, struct ctrl *c, enum mgr_attr a,
		   const char *buf, size_t len)
{
	char why[VDEV_ERR_MAX] = "", what[48];
	struct vdev_params p;
	struct vdev *d = NULL;
	unsigned set = 0;
	bool have, changed = true;
	int r;

	snprintf(what, sizeof(what), "write to %s refused: ", mgr_attr_name(a));
	if (!mgr_attr_writable(a)) {
		refuse(m, c, what, "the file is read-only");
		return -EACCES;
	}
	pthread_mutex_lock(&c->op_lock);
	if (c->removed) {
		pthread_mutex_unlock(&c->op_lock);
		return -ENOENT;
	}
	pthread_mutex_lock(&m->lock);
	p = c->params;
	have = c->have_size;
	pthread_mutex_unlock(&m->lock);

	if (a == MGR_A_CONFIG)
		r = cfg_parse_config_text(buf, len, &p, &set, why, sizeof(why));
	else
		r = cfg_parse_key_text(a - MGR_A_SIZE, buf, len, &p, &set, why, sizeof(why));
	if (r < 0)
		goto refused;
	have = have || (set & CFG_BIT(CFG_SIZE));

	if (!complete(&p, have)) {
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
			r = go_live(m, c, &cp, &d, why, sizeof(why));
			if (r < 0)
				goto refused;
			vlog(LOG_INFO, "[%s] live, node devices/%s is %d:%u", c->name,
			     c->name, MGR_DEV_MAJOR, c->minor);
		} else if (params_equal(&p, &c->params)) {
			changed = false;
		} else {
			why[0] = '\0';
			r = vdev_set_params(c->vdev, &cp, why, sizeof(why));
			if (r == -EBUSY)
				snprintf(why, sizeof(why), "the settings cannot change while "
					 "a front-end is connected");
			else if (r < 0 && !why[0])
				snprintf(why, sizeof(why), "%s", strerror(-r));
			if (r < 0)
				goto refused;
		}
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
	pthread_mutex_unlock(&c->op_lock);
	if (changed && mgr_save(m, why, sizeof(why)) < 0) {
		pthread_mutex_lock(&m->lock);
		join(c->err, sizeof(c->err), "the change was applied but ", why);
		pthread_mutex_unlock(&m->lock);
	}
	return 0;
refused:
	if (r >= 0)
		r = -EINVAL;
	refuse(m, c, what, why);
	pthread_mutex_unlock(&c->op_lock);
	return r;
}

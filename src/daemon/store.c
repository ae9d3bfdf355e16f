/* store: the store on disk kept in sync with the registry — sockets/ and
 * devices/ files, minor allocation around foreign nodes, the lock files.
 * Checks every file it finds before reusing it; removes only its own. */
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

bool mgr_node_is_ours(const struct stat *st, unsigned minor)
{
	return S_ISBLK(st->st_mode) && major(st->st_rdev) == MGR_DEV_MAJOR &&
	       minor(st->st_rdev) == minor;
}

/* Is a process accepting connections on this socket?  A dead socket (left
 * by a crash) refuses them. */
bool mgr_socket_in_use(const char *path)
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

static int real_mknod(void *arg, const char *path, mode_t mode, dev_t dev)
{
	return mknod(path, mode, dev);
}

static int real_unlink(void *arg, const char *path)
{
	return unlink(path);
}

static int real_lstat(void *arg, const char *path, struct stat *st)
{
	return lstat(path, st);
}

/* The options' hooks, the real syscalls where there is none. */
void mgr_node_ops_init(struct mgr_node_ops *dst, const struct mgr_node_ops *o)
{
	static const struct mgr_node_ops none;

	if (!o)
		o = &none;
	dst->mknod = o->mknod ? o->mknod : real_mknod;
	dst->unlink = o->unlink ? o->unlink : real_unlink;
	dst->lstat = o->lstat ? o->lstat : real_lstat;
	dst->arg = o->arg;
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
		char path[PATH_MAX];
		struct ctrl *c;
		struct stat st;

		/* Every entry goes through the lstat hook (a test's nodes are
		 * regular files that its hook reports as block nodes). */
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    de->d_type == DT_DIR || de->d_type == DT_SOCK)
			continue;
		snprintf(path, sizeof(path), "%s/%s", m->devdir, de->d_name);
		if (m->nodes.lstat(m->nodes.arg, path, &st) < 0 ||
		    !S_ISBLK(st.st_mode) || major(st.st_rdev) != MGR_DEV_MAJOR)
			continue;
		c = mgr_find_locked(m, de->d_name);
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

int mgr_alloc_minor_locked(struct mgr *m, unsigned *out)
{
	size_t nf;
	unsigned *foreign = foreign_minors_locked(m, &nf);
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

void mgr_sock_path(struct mgr *m, const struct ctrl *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", m->sockdir, c->name);
}

void mgr_node_path(struct mgr *m, const struct ctrl *c, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", m->devdir, c->name);
}

/* Complete enough to go live: the size is known, given or the file's. */
bool mgr_complete(const struct vdev_params *p, bool have_size)
{
	return have_size || p->backing == BE_FILE;
}

/* The parameters to hand the core: a file backing without a size of its own
 * keeps the size the core found (0 only when the file changes, meaning "the
 * new file's size"). */
void mgr_core_params(struct ctrl *c, const struct vdev_params *p, bool have_size,
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
int mgr_go_live(struct mgr *m, struct ctrl *c, const struct vdev_params *p,
		   struct vdev **out, char *err, size_t errlen)
{
	char sock[PATH_MAX], node[PATH_MAX];
	bool need_node = true;
	struct vdev *d = NULL;
	struct stat st;
	int r;

	mgr_sock_path(m, c, sock, sizeof(sock));
	mgr_node_path(m, c, node, sizeof(node));
	if (m->nodes.lstat(m->nodes.arg, node, &st) == 0) {
		if (!mgr_node_is_ours(&st, c->minor)) {
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
		if (mgr_socket_in_use(sock)) {
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
	if (need_node && m->nodes.mknod(m->nodes.arg, node, S_IFBLK | 0660,
					makedev(MGR_DEV_MAJOR, c->minor)) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create devices/%s: %s", c->name, strerror(-r));
		vdev_destroy(d, true);
		return r;
	}
	*out = d;
	return 0;
}

void mgr_unlink_node_if_ours(struct mgr *m, struct ctrl *c, bool was_live)
{
	char node[PATH_MAX];
	struct stat st;

	mgr_node_path(m, c, node, sizeof(node));
	if (m->nodes.lstat(m->nodes.arg, node, &st) < 0)
		return;
	if (!mgr_node_is_ours(&st, c->minor)) {
		if (was_live)
			vlog(LOG_WARNING, "[%s] devices/%s is not our node %d:%u any more; "
			     "left untouched", c->name, c->name, MGR_DEV_MAJOR,
			     c->minor);
		return;
	}
	if (m->nodes.unlink(m->nodes.arg, node) < 0)
		vlog(LOG_WARNING, "[%s] cannot remove %s: %m", c->name, node);
}

int mgr_mkdir_p(const char *path, mode_t mode)
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
int mgr_take_lock(const char *path, const char *what, int *fdp,
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

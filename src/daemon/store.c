/* store: the store on disk; see store.h.  Checks every file it finds before
 * reusing it; removes only its own.  Trusts its callers for names (checked
 * by the registry) and pointers. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define SUN_PATH_MAX    (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

static bool node_is_ours(const struct stat *st, unsigned minor)
{
	return S_ISBLK(st->st_mode) && major(st->st_rdev) == STORE_DEV_MAJOR &&
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
static void node_ops_init(struct store_node_ops *dst, const struct store_node_ops *o)
{
	static const struct store_node_ops none;

	if (!o)
		o = &none;
	dst->mknod = o->mknod ? o->mknod : real_mknod;
	dst->unlink = o->unlink ? o->unlink : real_unlink;
	dst->lstat = o->lstat ? o->lstat : real_lstat;
	dst->arg = o->arg;
}

unsigned *store_foreign_minors(struct store *s,
			       bool (*ours)(void *arg, const char *name, unsigned minor),
			       void *arg, size_t *n)
{
	unsigned *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	*n = 0;
	d = opendir(s->devdir);
	if (!d)
		return NULL;
	while ((de = readdir(d))) {
		char path[PATH_MAX];
		struct stat st;

		/* Every entry goes through the lstat hook (a test's nodes are
		 * regular files that its hook reports as block nodes). */
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    de->d_type == DT_DIR || de->d_type == DT_SOCK)
			continue;
		snprintf(path, sizeof(path), "%s/%s", s->devdir, de->d_name);
		if (s->nodes.lstat(s->nodes.arg, path, &st) < 0 ||
		    !S_ISBLK(st.st_mode) || major(st.st_rdev) != STORE_DEV_MAJOR)
			continue;
		if (ours(arg, de->d_name, minor(st.st_rdev)))
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

bool store_name_fits(const struct store *s, const char *name)
{
	return strlen(s->sockdir) + 1 + strlen(name) <= SUN_PATH_MAX;
}

void store_sock_path(const struct store *s, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", s->sockdir, name);
}

void store_node_path(const struct store *s, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", s->devdir, name);
}

int store_check(struct store *s, const char *name, unsigned minor, bool restored,
		bool *need_node, char *err, size_t errlen)
{
	char sock[PATH_MAX], node[PATH_MAX];
	struct stat st;
	int r;

	*need_node = true;
	store_sock_path(s, name, sock, sizeof(sock));
	store_node_path(s, name, node, sizeof(node));
	if (s->nodes.lstat(s->nodes.arg, node, &st) == 0) {
		if (!node_is_ours(&st, minor)) {
			snprintf(err, errlen, "devices/%s already exists and is not "
				 "vhostd's block node %d:%u, so it is left untouched",
				 name, STORE_DEV_MAJOR, minor);
			return -EEXIST;
		}
		*need_node = false;     /* ours, from before a restart */
	} else if (errno != ENOENT) {
		r = -errno;
		snprintf(err, errlen, "cannot inspect devices/%s: %s", name, strerror(-r));
		return r;
	}
	if (lstat(sock, &st) == 0) {
		if (!restored || !S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "sockets/%s already exists and was not "
				 "created by vhostd, so it is left untouched", name);
			return -EEXIST;
		}
		if (socket_in_use(sock)) {
			snprintf(err, errlen, "sockets/%s is served by another process, "
				 "so it is left untouched", name);
			return -EADDRINUSE;
		}
		/* A dead socket of ours (crash): vdev_create replaces it. */
	} else if (errno != ENOENT) {
		r = -errno;
		snprintf(err, errlen, "cannot inspect sockets/%s: %s", name, strerror(-r));
		return r;
	}
	return 0;
}

int store_node_make(struct store *s, const char *name, unsigned minor,
		    char *err, size_t errlen)
{
	char node[PATH_MAX];
	int r;

	store_node_path(s, name, node, sizeof(node));
	if (s->nodes.mknod(s->nodes.arg, node, S_IFBLK | 0660,
			   makedev(STORE_DEV_MAJOR, minor)) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create devices/%s: %s", name, strerror(-r));
		return r;
	}
	return 0;
}

void store_node_remove(struct store *s, const char *name, unsigned minor, bool warn)
{
	char node[PATH_MAX];
	struct stat st;

	store_node_path(s, name, node, sizeof(node));
	if (s->nodes.lstat(s->nodes.arg, node, &st) < 0)
		return;
	if (!node_is_ours(&st, minor)) {
		if (warn)
			vlog(LOG_WARNING, "[%s] devices/%s is not our node %d:%u any more; "
			     "left untouched", name, name, STORE_DEV_MAJOR, minor);
		return;
	}
	if (s->nodes.unlink(s->nodes.arg, node) < 0)
		vlog(LOG_WARNING, "[%s] cannot remove %s: %m", name, node);
}

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

int store_open(struct store *s, const char *dir, const char *state_path,
	       const struct store_node_ops *ops, char *err, size_t errlen)
{
	char path[PATH_MAX], what[PATH_MAX + 16];
	int r;

	memset(s, 0, sizeof(*s));
	s->store_lock_fd = s->state_lock_fd = -1;
	node_ops_init(&s->nodes, ops);
	if (dir[0] != '/' || strlen(dir) + 32 >= STORE_DIR_MAX ||
	    strlen(state_path) + 8 >= PATH_MAX) {
		snprintf(err, errlen, "store and state paths must be absolute and "
			 "reasonably short");
		return -EINVAL;
	}
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->sockdir, sizeof(s->sockdir), "%s/block/sockets", dir);
	snprintf(s->devdir, sizeof(s->devdir), "%s/block/devices", dir);
	snprintf(s->ctldir, sizeof(s->ctldir), "%s/block/ctl", dir);
	snprintf(s->state_path, sizeof(s->state_path), "%s", state_path);
	if (strlen(s->sockdir) + 2 > SUN_PATH_MAX) {
		snprintf(err, errlen, "store path %s is too long for UNIX socket paths "
			 "(%zu bytes at most)", dir, SUN_PATH_MAX);
		return -ENAMETOOLONG;
	}

	const char *dirs[] = { s->sockdir, s->devdir, s->ctldir };
	for (size_t i = 0; i < 3; i++) {
		r = mkdir_p(dirs[i], 0755);
		/* ctl may be a dead FUSE mount (ENOTCONN); the fs layer deals with it. */
		if (r < 0 && r != -ENOTCONN) {
			snprintf(err, errlen, "cannot create %s: %s", dirs[i], strerror(-r));
			return r;
		}
	}
	if (!realpath(dir, s->real)) {
		r = -errno;
		snprintf(err, errlen, "cannot resolve %s: %s", dir, strerror(-r));
		return r;
	}
	snprintf(path, sizeof(path), "%s/block/.vhostd.lock", dir);
	snprintf(what, sizeof(what), "store %s", dir);
	r = take_lock(path, what, &s->store_lock_fd, err, errlen);
	if (r < 0)
		return r;

	snprintf(path, sizeof(path), "%s", state_path);
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
	snprintf(path, sizeof(path), "%s.lock", state_path);
	snprintf(what, sizeof(what), "state file %s", state_path);
	r = take_lock(path, what, &s->state_lock_fd, err, errlen);
	if (r < 0)
		goto fail;
	return 0;
fail:
	store_close(s);
	return r;
}

void store_close(struct store *s)
{
	if (s->store_lock_fd >= 0)
		close(s->store_lock_fd);
	if (s->state_lock_fd >= 0)
		close(s->state_lock_fd);
	s->store_lock_fd = s->state_lock_fd = -1;
}

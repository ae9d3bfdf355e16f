/* cfs: the control filesystem; see cfs.h.  Each operation maps a path to
 * "root", a top-level file, a controller or one of its files, the groups
 * directory, a throttle group or one of its files, and calls the
 * daemon's controller API (mgr.h) or the file tables (attrs.h).  Runs on libfuse worker threads; holds no lock of its own except
 * the one of an open file's read buffer. */
#define FUSE_USE_VERSION 35

#include "cfs.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "attrs.h"
#include "log.h"
#include "mgr.h"

/* st_size of every file: contents are generated, so report a page like sysfs
 * and serve them with direct_io so readers see the real length. */
#define CFS_FILE_SIZE 4096

struct cfs {
	struct mgr *mgr;
	struct fuse *fuse;
	char *mountpoint;
	void (*on_ready)(void *arg);
	void *arg;
};

/* An open file: the controller it belongs to (counted reference) and the
 * content generated at the last read at offset 0. */
struct cfs_file {
	struct ctrl *ctrl;              /* NULL for a top-level or group file */
	bool is_group;                  /* a file of the throttle group `group` */
	char group[VDEV_NAME_MAX + 1];
	int attr;                       /* index in cfs_attrs, cfs_gattrs or
					 * cfs_gr_attrs */
	pthread_mutex_t lock;
	char *buf;
	size_t len;
};

enum node_kind {
	N_NONE, N_ROOT, N_GFILE, N_CTRL, N_ATTR, N_DEEP,
	N_GROUPS,                       /* /.groups */
	N_GROUP,                        /* /.groups/NAME */
	N_GRFILE,                       /* /.groups/NAME/FILE */
};

struct node {
	enum node_kind kind;
	char name[VDEV_NAME_MAX + 2];   /* controller or group name, truncated
					 * if longer */
	bool name_too_long;
	int attr;
};

static struct cfs *cfs_self(void)
{
	return fuse_get_context()->private_data;
}

/* Copy the first component of p into n->name; the rest after its slash
 * (NULL if it was the last). */
static const char *take_name(const char *p, struct node *n)
{
	const char *slash = strchr(p, '/');
	size_t len = slash ? (size_t)(slash - p) : strlen(p);

	n->name_too_long = len >= sizeof(n->name);
	if (n->name_too_long)
		len = sizeof(n->name) - 1;
	memcpy(n->name, p, len);
	n->name[len] = '\0';
	return slash ? slash + 1 : NULL;
}

/* "/.groups", "/.groups/NAME", "/.groups/NAME/FILE" (and deeper); p is
 * what follows "/.groups/". */
static void parse_groups_path(const char *p, struct node *n)
{
	if (*p == '\0') {
		n->kind = N_GROUPS;
		return;
	}
	p = take_name(p, n);
	if (!p) {
		n->kind = N_GROUP;
		return;
	}
	if (strchr(p, '/')) {
		n->kind = N_DEEP;
		return;
	}
	n->attr = cfs_gr_attr_lookup(p);
	n->kind = N_GRFILE;
}

/* Split "/", "/.version", "/NAME", "/NAME/FILE", the groups' paths (and
 * deeper). */
static void parse_path(const char *path, struct node *n)
{
	const char *p = path + 1, *slash;
	size_t len;

	memset(n, 0, sizeof(*n));
	n->attr = -1;
	if (path[0] != '/' || path[1] == '\0') {
		n->kind = N_ROOT;
		return;
	}
	len = strlen(CFS_GROUPS_DIR);
	if (strncmp(p, CFS_GROUPS_DIR, len) == 0 && (p[len] == '\0' || p[len] == '/')) {
		parse_groups_path(p[len] ? p + len + 1 : p + len, n);
		return;
	}
	slash = strchr(p, '/');
	len = slash ? (size_t)(slash - p) : strlen(p);
	n->name_too_long = len >= sizeof(n->name);
	if (n->name_too_long)
		len = sizeof(n->name) - 1;
	memcpy(n->name, p, len);
	n->name[len] = '\0';
	if (!slash) {
		n->attr = cfs_gattr_lookup(n->name);
		n->kind = n->attr >= 0 ? N_GFILE : N_CTRL;
		return;
	}
	p = slash + 1;
	if (strchr(p, '/')) {
		n->kind = N_DEEP;
		return;
	}
	n->attr = cfs_attr_lookup(p);
	n->kind = N_ATTR;
}

/* The controller of a node, referenced; NULL if there is none. */
static struct ctrl *node_ctrl(struct cfs *fs, const struct node *n)
{
	if (n->name_too_long || (n->kind != N_CTRL && n->kind != N_ATTR))
		return NULL;
	return mgr_get(fs->mgr, n->name);
}

/* The group of a node exists (its snapshot in gi if given). */
static bool node_group(struct cfs *fs, const struct node *n, struct group_info *gi)
{
	struct group_info tmp;

	if (n->name_too_long || (n->kind != N_GROUP && n->kind != N_GRFILE))
		return false;
	return mgr_group_info(fs->mgr, n->name, gi ? gi : &tmp) == 0;
}

static void fill_stat(struct stat *st, mode_t mode, nlink_t nlink, time_t t)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = mode;
	st->st_nlink = nlink;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_blksize = CFS_FILE_SIZE;
	if (S_ISREG(mode)) {
		st->st_size = CFS_FILE_SIZE;
		st->st_blocks = CFS_FILE_SIZE / 512;
	}
	st->st_atime = st->st_mtime = st->st_ctime = t;
}

static int cfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct cfs *fs = cfs_self();
	struct ctrl *c;
	struct node n;

	parse_path(path, &n);
	switch (n.kind) {
	case N_ROOT:
		/* the controllers' directories and .groups */
		fill_stat(st, S_IFDIR | 0755, 3 + mgr_count(fs->mgr), mgr_mtime(fs->mgr));
		return 0;
	case N_GFILE:
		fill_stat(st, S_IFREG | 0444, 1, mgr_mtime(fs->mgr));
		return 0;
	case N_GROUPS:
		fill_stat(st, S_IFDIR | 0755, 2 + mgr_group_count(fs->mgr), mgr_mtime(fs->mgr));
		return 0;
	case N_GROUP:
	case N_GRFILE: {
		struct group_info gi;

		if (n.kind == N_GRFILE && n.attr < 0)
			return -ENOENT;
		if (!node_group(fs, &n, &gi))
			return -ENOENT;
		if (n.kind == N_GROUP)
			fill_stat(st, S_IFDIR | 0755, 2, gi.mtime);
		else
			fill_stat(st, S_IFREG | cfs_gr_attrs[n.attr].mode, 1, gi.mtime);
		return 0;
	}
	case N_CTRL:
	case N_ATTR:
		if (n.kind == N_ATTR && n.attr < 0)
			return -ENOENT;
		c = node_ctrl(fs, &n);
		if (!c)
			return -ENOENT;
		if (n.kind == N_CTRL)
			fill_stat(st, S_IFDIR | 0755, 2, mgr_ctrl_mtime(fs->mgr, c));
		else
			fill_stat(st, S_IFREG | cfs_attrs[n.attr].mode,
				  1, mgr_ctrl_mtime(fs->mgr, c));
		mgr_put(fs->mgr, c);
		return 0;
	default:
		return -ENOENT;
	}
}

static int cfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		       off_t off, struct fuse_file_info *fi,
		       enum fuse_readdir_flags flags)
{
	struct cfs *fs = cfs_self();
	struct ctrl *c;
	struct node n;
	char **names;
	size_t cnt;
	int r;

	parse_path(path, &n);
	if (n.kind == N_ROOT) {
		r = mgr_list(fs->mgr, &names, &cnt);
		if (r < 0)
			return r;
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t g = 0; g < cfs_ngattrs; g++)
			filler(buf, cfs_gattrs[g].name, NULL, 0, 0);
		filler(buf, CFS_GROUPS_DIR, NULL, 0, 0);
		for (size_t i = 0; i < cnt; i++)
			filler(buf, names[i], NULL, 0, 0);
		mgr_list_free(names, cnt);
		return 0;
	}
	if (n.kind == N_GROUPS) {
		r = mgr_group_list(fs->mgr, &names, &cnt);
		if (r < 0)
			return r;
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t i = 0; i < cnt; i++)
			filler(buf, names[i], NULL, 0, 0);
		mgr_list_free(names, cnt);
		return 0;
	}
	if (n.kind == N_GROUP) {
		if (!node_group(fs, &n, NULL))
			return -ENOENT;
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t a = 0; a < cfs_ngr_attrs; a++)
			filler(buf, cfs_gr_attrs[a].name, NULL, 0, 0);
		return 0;
	}
	if (n.kind == N_GRFILE)
		return n.attr >= 0 && node_group(fs, &n, NULL) ? -ENOTDIR : -ENOENT;
	if (n.kind == N_CTRL) {
		c = node_ctrl(fs, &n);
		if (!c)
			return -ENOENT;
		mgr_put(fs->mgr, c);
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t a = 0; a < cfs_nattrs; a++)
			filler(buf, cfs_attrs[a].name, NULL, 0, 0);
		return 0;
	}
	return n.kind == N_GFILE || n.kind == N_ATTR ? -ENOTDIR : -ENOENT;
}

static int cfs_open(const char *path, struct fuse_file_info *fi)
{
	struct cfs *fs = cfs_self();
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct cfs_file *f;
	struct ctrl *c = NULL;
	struct node n;

	parse_path(path, &n);
	switch (n.kind) {
	case N_ROOT:
	case N_CTRL:
	case N_GROUPS:
	case N_GROUP:
		return -EISDIR;
	case N_GFILE:
		if (wr)
			return -EACCES;
		break;
	case N_GRFILE:
		if (n.attr < 0 || !node_group(fs, &n, NULL))
			return -ENOENT;
		if (wr && !cfs_gr_attr_writable(n.attr)) {
			cfs_gr_attr_refuse_readonly(fs->mgr, n.name, n.attr);
			return -EACCES;
		}
		break;
	case N_ATTR:
		if (n.attr < 0)
			return -ENOENT;
		c = node_ctrl(fs, &n);
		if (!c)
			return -ENOENT;
		if (wr && !cfs_attr_writable(n.attr)) {
			cfs_attr_refuse_readonly(fs->mgr, c, n.attr);
			mgr_put(fs->mgr, c);
			return -EACCES;
		}
		break;
	default:
		return -ENOENT;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		if (c)
			mgr_put(fs->mgr, c);
		return -ENOMEM;
	}
	f->ctrl = c;
	f->attr = n.attr;
	if (n.kind == N_GRFILE) {
		f->is_group = true;
		memcpy(f->group, n.name, sizeof(f->group));
	}
	pthread_mutex_init(&f->lock, NULL);
	fi->fh = (uintptr_t)f;
	fi->direct_io = 1;              /* generated content: no page cache */
	return 0;
}

static int cfs_release(const char *path, struct fuse_file_info *fi)
{
	struct cfs *fs = cfs_self();
	struct cfs_file *f = (struct cfs_file *)(uintptr_t)fi->fh;

	if (f->ctrl)
		mgr_put(fs->mgr, f->ctrl);
	pthread_mutex_destroy(&f->lock);
	free(f->buf);
	free(f);
	return 0;
}

static int cfs_read(const char *path, char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct cfs *fs = cfs_self();
	struct cfs_file *f = (struct cfs_file *)(uintptr_t)fi->fh;
	size_t n = 0;
	int r = 0;

	pthread_mutex_lock(&f->lock);
	/* Offset 0 is a new look at the file; later offsets continue the
	 * same snapshot so a reader never sees two halves of different states. */
	if (off == 0 || !f->buf) {
		char *nb;
		size_t nl;

		if (f->is_group)
			r = cfs_gr_attr_read(fs->mgr, f->group, f->attr, &nb, &nl);
		else if (f->ctrl)
			r = cfs_attr_read(fs->mgr, f->ctrl, f->attr, &nb, &nl);
		else
			r = cfs_gattr_read(fs->mgr, f->attr, &nb, &nl);
		if (r < 0)
			goto out;
		free(f->buf);
		f->buf = nb;
		f->len = nl;
	}
	if ((size_t)off < f->len) {
		n = f->len - off < size ? f->len - off : size;
		memcpy(buf, f->buf + off, n);
	}
out:
	pthread_mutex_unlock(&f->lock);
	return r < 0 ? r : (int)n;
}

static int cfs_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct cfs *fs = cfs_self();
	struct cfs_file *f = (struct cfs_file *)(uintptr_t)fi->fh;
	int r;

	/* Each write(2) is one complete value, applied at once (configfs
	 * semantics): `echo` writes once, and the error must reach its caller. */
	if (f->is_group)
		r = cfs_gr_attr_write(fs->mgr, f->group, f->attr, buf, size);
	else if (f->ctrl)
		r = cfs_attr_write(fs->mgr, f->ctrl, f->attr, buf, size);
	else
		return -EACCES;
	return r < 0 ? r : (int)size;
}

static int cfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct cfs *fs = cfs_self();
	struct ctrl *c;
	struct node n;
	int r = 0;

	/* O_TRUNC of a writable file is part of `echo x > file`: accepted. */
	parse_path(path, &n);
	switch (n.kind) {
	case N_ROOT:
	case N_CTRL:
	case N_GROUPS:
	case N_GROUP:
		return -EISDIR;
	case N_GFILE:
		return -EACCES;
	case N_GRFILE:
		if (n.attr < 0 || !node_group(fs, &n, NULL))
			return -ENOENT;
		if (!cfs_gr_attr_writable(n.attr)) {
			cfs_gr_attr_refuse_readonly(fs->mgr, n.name, n.attr);
			return -EACCES;
		}
		return 0;
	case N_ATTR:
		if (n.attr < 0)
			return -ENOENT;
		c = node_ctrl(fs, &n);
		if (!c)
			return -ENOENT;
		if (!cfs_attr_writable(n.attr)) {
			cfs_attr_refuse_readonly(fs->mgr, c, n.attr);
			r = -EACCES;
		}
		mgr_put(fs->mgr, c);
		return r;
	default:
		return -ENOENT;
	}
}

static int cfs_mkdir(const char *path, mode_t mode)
{
	struct cfs *fs = cfs_self();
	struct ctrl *c;
	struct node n;

	parse_path(path, &n);
	switch (n.kind) {
	case N_CTRL:
		if (n.name_too_long)
			return -EINVAL;
		return mgr_ctrl_create(fs->mgr, n.name);
	case N_GFILE:
	case N_ROOT:
	case N_GROUPS:
		return -EEXIST;
	case N_GROUP:
		if (n.name_too_long)
			return -EINVAL;
		return mgr_group_create(fs->mgr, n.name);
	case N_GRFILE:
		/* Groups hold files only. */
		if (!node_group(fs, &n, NULL))
			return -ENOENT;
		return n.attr >= 0 ? -EEXIST : -EPERM;
	case N_ATTR:
		/* Controllers hold files only. */
		c = node_ctrl(fs, &n);
		if (!c)
			return -ENOENT;
		mgr_put(fs->mgr, c);
		return n.attr >= 0 ? -EEXIST : -EPERM;
	default:
		return -ENOENT;
	}
}

static int cfs_rmdir(const char *path)
{
	struct cfs *fs = cfs_self();
	struct node n;

	parse_path(path, &n);
	switch (n.kind) {
	case N_CTRL:
		if (n.name_too_long)
			return -ENOENT;
		return mgr_ctrl_destroy(fs->mgr, n.name);
	case N_ROOT:
		return -EBUSY;
	case N_GROUPS:
		return -EPERM;          /* a fixed part of the fs */
	case N_GROUP:
		if (n.name_too_long)
			return -ENOENT;
		return mgr_group_destroy(fs->mgr, n.name);
	case N_GFILE:
		return -ENOTDIR;
	case N_ATTR:
		return n.attr >= 0 ? -ENOTDIR : -ENOENT;
	case N_GRFILE:
		return n.attr >= 0 && node_group(fs, &n, NULL) ? -ENOTDIR : -ENOENT;
	default:
		return -ENOENT;
	}
}

static int cfs_unlink(const char *path)
{
	struct node n;

	parse_path(path, &n);
	switch (n.kind) {
	case N_GFILE:
	case N_ATTR:
	case N_GRFILE:
		return -EPERM;          /* the files of the fs are fixed */
	case N_ROOT:
	case N_CTRL:
	case N_GROUPS:
	case N_GROUP:
		return -EISDIR;
	default:
		return -ENOENT;
	}
}

static int cfs_eperm_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return -EPERM;
}

static int cfs_eperm_mknod(const char *path, mode_t mode, dev_t dev)
{
	return -EPERM;
}

static int cfs_eperm_rename(const char *from, const char *to, unsigned int flags)
{
	return -EPERM;
}

static int cfs_eperm_link(const char *from, const char *to)
{
	return -EPERM;
}

static int cfs_eperm_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return -EPERM;
}

static int cfs_eperm_chown(const char *path, uid_t uid, gid_t gid,
			   struct fuse_file_info *fi)
{
	return -EPERM;
}

/* `touch` of a writable file is harmless; times are ours to keep. */
static int cfs_utimens(const char *path, const struct timespec tv[2],
		       struct fuse_file_info *fi)
{
	struct stat st;
	int r = cfs_getattr(path, &st, fi);

	if (r < 0)
		return r;
	return S_ISREG(st.st_mode) && !(st.st_mode & 0200) ? -EACCES : 0;
}

static void *cfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct cfs *fs = fuse_get_context()->private_data;

	cfg->direct_io = 1;
	cfg->kernel_cache = 0;
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	cfg->negative_timeout = 0;
	cfg->use_ino = 0;
	if (fs->on_ready)
		fs->on_ready(fs->arg);
	return fs;
}

static const struct fuse_operations cfs_ops = {
	.init = cfs_init,
	.getattr = cfs_getattr,
	.readdir = cfs_readdir,
	.open = cfs_open,
	.release = cfs_release,
	.read = cfs_read,
	.write = cfs_write,
	.truncate = cfs_truncate,
	.mkdir = cfs_mkdir,
	.rmdir = cfs_rmdir,
	.unlink = cfs_unlink,
	.create = cfs_eperm_create,
	.mknod = cfs_eperm_mknod,
	.rename = cfs_eperm_rename,
	.link = cfs_eperm_link,
	.symlink = cfs_eperm_link,
	.chmod = cfs_eperm_chmod,
	.chown = cfs_eperm_chown,
	.utimens = cfs_utimens,
};

/* A crashed vhostd leaves its mount behind, answering ENOTCONN: detach it
 * (lazily: a process may still have it as its cwd).  statfs, unlike stat,
 * is never answered from the kernel's cache, so it sees a dead mount at
 * once.  Several dead mounts may be stacked there. */
static int prepare_mountpoint(const char *mp, char *err, size_t errlen)
{
	struct statfs sfs;
	struct stat st;
	int r;

	for (int i = 0; i < 16 && statfs(mp, &sfs) < 0 && errno == ENOTCONN; i++) {
		vlog(LOG_WARNING, "%s is a dead mount left by a previous vhostd; "
		     "detaching it", mp);
		if (umount2(mp, MNT_DETACH) < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot detach the dead mount at %s: %s",
				 mp, strerror(-r));
			return r;
		}
	}
	if (stat(mp, &st) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot use %s: %s", mp, strerror(-r));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", mp);
		return -ENOTDIR;
	}
	return 0;
}

int cfs_mount(const struct cfs_opts *o, struct cfs **out, char *err, size_t errlen)
{
	char *argv[] = {
		"vhostd", "-o",
		/* allow_other + default_permissions: anyone may look, only root
		 * (the owner of these 0644/0755 entries) may change. */
		"fsname=vhostd,subtype=vhostd,allow_other,default_permissions",
		NULL,
	};
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct cfs *fs;
	int r;

	r = prepare_mountpoint(o->mountpoint, err, errlen);
	if (r < 0)
		return r;
	fs = calloc(1, sizeof(*fs));
	if (!fs || !(fs->mountpoint = strdup(o->mountpoint))) {
		free(fs);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	fs->mgr = o->mgr;
	fs->on_ready = o->on_ready;
	fs->arg = o->arg;
	fs->fuse = fuse_new(&args, &cfs_ops, sizeof(cfs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->fuse) {
		snprintf(err, errlen, "cannot set up the FUSE filesystem");
		r = -EIO;
		goto fail;
	}
	if (fuse_mount(fs->fuse, fs->mountpoint) != 0) {
		snprintf(err, errlen, "cannot mount the control filesystem at %s "
			 "(is /dev/fuse available and are we root?)", fs->mountpoint);
		r = -EIO;
		fuse_destroy(fs->fuse);
		goto fail;
	}
	*out = fs;
	return 0;
fail:
	free(fs->mountpoint);
	free(fs);
	return r;
}

int cfs_run(struct cfs *fs)
{
	struct fuse_session *se = fuse_get_session(fs->fuse);
	struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 10 };
	sigset_t set;
	int r;

	if (fuse_set_signal_handlers(se) != 0)
		return -EIO;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	r = fuse_loop_mt(fs->fuse, &cfg);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	fuse_remove_signal_handlers(se);
	return r < 0 ? r : 0;
}

void cfs_destroy(struct cfs *fs)
{
	if (!fs)
		return;
	fuse_unmount(fs->fuse);
	fuse_destroy(fs->fuse);
	free(fs->mountpoint);
	free(fs);
}
